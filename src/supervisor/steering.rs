//! The executor's side of steering (issue 16): the reuseport groups of the TCP listeners, the
//! fds each worker gets from them, where new connections go, and the looks at a worker that
//! drains. The core decides which member a worker gets ([`core::Question::Spawn`]), where
//! connections go ([`core::Action::Steer`]) and when a drained worker is signalled; this module
//! only carries that out and reports what it sees ([`core::Activity`]). The kernel's side is
//! in `listen/steer.rs`, the observation in `observe.rs`.
//!
//! Without steering (`--handover shared`, a kernel or sandbox that refuses the program, UDP
//! and unix listeners, `,reuseport`, and once a stranger was found in a group) every worker
//! gets the listener graceful-run bound, as before; the looks at a stopping worker still see
//! its connections.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use nix::unistd::Pid;

use super::core::{self, WorkerId};
use crate::accepting::{self, Scope};
use crate::listen::steer::{Group, Steering as Route};
use crate::listen::{Bound, Listeners};
use crate::log::Subject;
use crate::observe::{self, Observer, SynSnapshot};
use crate::{debug, warn};

/// What a draining worker is watched with.
struct Watched {
    observer: Observer,
    /// The handshakes in flight when it was steered away from.
    snapshot: Vec<SynSnapshot>,
}

pub(super) struct Steering {
    /// Per listener, in fd order: its group when it is steered.
    groups: Vec<Option<Group>>,
    /// The TCP listeners' addresses: a connection of theirs has one of these local ports.
    addresses: Vec<SocketAddr>,
    /// The handshakes in flight at the last change of where connections go.
    snapshot: Vec<SynSnapshot>,
    watched: HashMap<WorkerId, Watched>,
    /// Listeners graceful-run did not create, found in a group (what they are): from then on
    /// every worker gets the shared socket (see [`Steering::look_for_strangers`]).
    strangers: Option<String>,
    /// `strangers` is still to be told to the core ([`Steering::take_strangers`]).
    strangers_untold: bool,
    /// Why the TCP listeners without a group are not steered, for `ctl status`.
    off_because: &'static str,
    /// Where new connections go, as last steered.
    spread: Vec<usize>,
    /// The first stream listener (the one `--health-http` probes), by fd order.
    first_stream: Option<usize>,
}

impl Steering {
    /// Groups for the TCP listeners bound for steering (`enabled`: they were bound so, see
    /// [`Listeners::bind_with`]), except those with the user's `,reuseport`.
    pub fn new(listeners: &Listeners, enabled: bool) -> io::Result<Steering> {
        let mut groups = Vec::new();
        let mut addresses = Vec::new();
        let first_stream = listeners.iter().position(|l| l.is_stream());
        for listener in listeners.iter() {
            let group = match (&listener.bound, listener.fd()) {
                (Bound::Tcp(address), Some(fd)) => {
                    addresses.push(*address);
                    if enabled && !listener.spec.reuseport {
                        Some(Group::new(fd)?)
                    } else {
                        None
                    }
                }
                _ => None,
            };
            groups.push(group);
        }
        Ok(Steering {
            groups,
            addresses,
            snapshot: Vec::new(),
            watched: HashMap::new(),
            strangers: None,
            strangers_untold: false,
            off_because: "steering cannot be set up here (the log says why)",
            spread: Vec::new(),
            first_stream,
        })
    }

    /// Whether any listener is steered.
    pub fn enabled(&self) -> bool {
        self.groups.iter().any(Option::is_some)
    }

    /// The fds a worker gets, in order: `member` of each steered listener's group (made now
    /// when it is a new one; its O_NONBLOCK cleared, as no process holds a member the core
    /// gives out), the shared socket of the others; and whether it got the shared sockets
    /// instead of the member asked for (strangers are in a group: see
    /// [`Steering::look_for_strangers`]).
    pub fn fds(
        &mut self,
        listeners: &Listeners,
        member: Option<u32>,
    ) -> io::Result<(Vec<RawFd>, bool)> {
        let shared = listeners.raw_fds();
        let mut member = member;
        let mut instead = false;
        if member.is_some() && self.enabled() {
            // A handover's start: a stranger that joined since would take the index of the
            // member made next.
            self.look_for_strangers();
            if self.strangers.is_some() {
                member = None;
                instead = true;
            }
        }
        let mut fds = Vec::with_capacity(shared.len());
        for (i, fd) in shared.into_iter().enumerate() {
            match (self.groups.get_mut(i).and_then(Option::as_mut), member) {
                (Some(group), Some(member)) => {
                    let member = member as usize;
                    while group.len() <= member {
                        group.add()?;
                    }
                    group.reset_blocking(member)?;
                    fds.push(group.fd(member).as_raw_fd());
                }
                _ => fds.push(fd),
            }
        }
        Ok((fds, instead))
    }

    /// Looks, once per handover (at each spawn with a member and before each change of where
    /// connections go, never while idle), for listeners on a group's address that
    /// graceful-run did not create: a program of the same user that sets SO_REUSEPORT itself
    /// joins the group (nothing stops it, see `listen/steer.rs`), at the end of the kernel's
    /// array, so the member graceful-run makes next would not get the index it counts on and
    /// the stranger would take its connections. Found once, for good: the core is told
    /// ([`Steering::take_strangers`]) and gives later workers the shared socket. One
    /// sock_diag dump of the listening sockets on the port per address family.
    pub fn look_for_strangers(&mut self) {
        if self.strangers.is_some() {
            return;
        }
        for group in self.groups.iter().flatten() {
            match group.strangers() {
                Ok(strangers) if !strangers.is_empty() => {
                    let named: Vec<String> = strangers
                        .iter()
                        .map(|s| format!("{} (socket inode {}, uid {})", s.local, s.inode, s.uid))
                        .collect();
                    self.strangers = Some(format!(
                        "another program listens on {} in graceful-run's reuseport group (it set SO_REUSEPORT as the same user, and may take new connections): {}",
                        group.address(),
                        named.join(", ")
                    ));
                    self.strangers_untold = true;
                    return;
                }
                Ok(_) => {}
                Err(e) => debug!(
                    Subject::NONE,
                    "cannot list the listeners on {}: {e}",
                    group.address()
                ),
            }
        }
    }

    /// The strangers found, once: for [`core::Event::Strangers`].
    pub fn take_strangers(&mut self) -> Option<String> {
        if !self.strangers_untold {
            return None;
        }
        self.strangers_untold = false;
        self.strangers.clone()
    }

    /// How listener `i` is handed over, for `ctl status`: None when steered, else why every
    /// generation shares it.
    pub fn shared_because(&self, listeners: &Listeners, i: usize) -> Option<String> {
        let listener = listeners.iter().nth(i)?;
        match (&listener.bound, self.groups.get(i).and_then(Option::as_ref)) {
            (Bound::Tcp(_), Some(_)) => self.strangers.clone(),
            (Bound::Tcp(_), None) if listener.spec.reuseport => Some(
                ",reuseport: other programs may join its group, so new connections cannot be steered"
                    .to_string(),
            ),
            (Bound::Tcp(_), None) => Some(self.off_because.to_string()),
            (Bound::Udp(_), _) => Some("UDP: a flow must stay on one process".to_string()),
            _ => Some("a unix socket".to_string()),
        }
    }

    /// Each stream listener a worker on `member` gets, with its name for the log: its inode,
    /// and its address when it is a TCP listener every generation shares (its accepted
    /// connections then count as accepting, see `accepting`).
    pub fn stream_inodes(
        &self,
        listeners: &Listeners,
        member: Option<u32>,
    ) -> Vec<(accepting::Wanted, String)> {
        listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_stream())
            .filter_map(|(i, l)| {
                let name = format!("{} (fd {})", l.bound, 3 + i);
                let wanted = match (self.groups.get(i).and_then(Option::as_ref), member) {
                    (Some(group), Some(member)) if (member as usize) < group.len() => {
                        accepting::Wanted {
                            inode: group.inode(member as usize),
                            shared_tcp: None,
                        }
                    }
                    _ => accepting::Wanted {
                        inode: accepting::listener_inode(l.fd()?).ok()?,
                        shared_tcp: match l.bound {
                            crate::listen::Bound::Tcp(address) => Some(address),
                            _ => None,
                        },
                    },
                };
                Some((wanted, name))
            })
            .collect()
    }

    /// New connections to `members` from now on, on every steered listener.
    pub fn steer(&mut self, members: &[u32]) {
        self.look_for_strangers();
        let members: Vec<usize> = members.iter().map(|m| *m as usize).collect();
        self.spread = members.clone();
        let mut snapshot = Vec::new();
        for group in self.groups.iter().flatten() {
            let mut route = Route::over(&members);
            if self.strangers.is_some() {
                // A member the core counted on that was not made (its worker got the shared
                // socket instead) is a stranger's index: those go to member 0 until the core,
                // told, steers there itself.
                route.spread.retain(|m| *m < group.len());
                if route.spread.is_empty() {
                    route.spread.push(0);
                }
            }
            if let Err(e) = group.steer(&route) {
                warn!(
                    Subject::NONE,
                    "cannot steer new connections on {}: {e}",
                    group.address()
                );
            }
            // Handshakes begun before the change still complete where their SYN went.
            match SynSnapshot::take(group.address()) {
                Ok(taken) => snapshot.push(taken),
                Err(e) => debug!(Subject::NONE, "cannot list handshakes in flight: {e}"),
            }
        }
        debug!(
            Subject::NONE,
            "new connections go to member{} {members:?}",
            if members.len() == 1 { "" } else { "s" }
        );
        self.snapshot = snapshot;
    }

    /// What a worker still has: its member's queue, the handshakes toward it, and its
    /// processes' connections.
    pub fn observe(
        &mut self,
        worker: WorkerId,
        scope: Scope,
        member: Option<u32>,
    ) -> core::Activity {
        let watched = self.watched.entry(worker).or_insert_with(|| Watched {
            observer: Observer::new(&self.addresses, observe::DEFAULT_GRACE),
            snapshot: self.snapshot.clone(),
        });
        let mut activity = core::Activity::default();
        if let Some(member) = member {
            for group in self.groups.iter().flatten() {
                if (member as usize) < group.len() {
                    activity.queued += group.queue_len(member as usize).unwrap_or(0);
                }
            }
            for snapshot in &watched.snapshot {
                activity.in_flight += snapshot.still_in_flight().unwrap_or(0) as u32;
            }
        }
        if !self.addresses.is_empty() {
            let pids = observe::processes_of(scope);
            match watched.observer.observe(&pids) {
                Ok(seen) => {
                    activity.busy = seen.busy() as u32;
                    activity.idle = seen.idle() as u32;
                }
                Err(e) => {
                    debug!(
                        Subject::NONE,
                        "cannot see worker {worker}'s connections: {e}"
                    );
                    activity.blind = true;
                }
            }
        }
        activity
    }

    /// A connection to `member` of the first stream listener's group, from a port bound here
    /// that the steering program sends there (see `listen/steer.rs`, "A probe"); being
    /// established (non-blocking). None when that listener is not steered: a probe then
    /// connects to its address. Call [`Steering::end_probe`] once it is established.
    pub fn probe_connect(&mut self, member: u32) -> io::Result<Option<std::net::TcpStream>> {
        let Some(group) = self
            .first_stream
            .and_then(|i| self.groups.get(i))
            .and_then(Option::as_ref)
        else {
            return Ok(None);
        };
        let target = group.probe_target();
        let unspecified: SocketAddr = match target {
            SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = probe_socket(unspecified)?;
        let port = socket.local_addr()?.port();
        group.steer(&Route::over(&self.spread).with_probe(port, member as usize))?;
        connect_nonblocking(&socket, target)?;
        Ok(Some(socket))
    }

    /// The probe's connection is established: the program goes back to the spread alone, so
    /// that the port, once free, cannot send a client's connection anywhere special.
    pub fn end_probe(&mut self) {
        let route = Route::over(&self.spread);
        if let Some(group) = self
            .first_stream
            .and_then(|i| self.groups.get(i))
            .and_then(Option::as_ref)
            && let Err(e) = group.steer(&route)
        {
            warn!(
                Subject::NONE,
                "cannot steer new connections on {}: {e}",
                group.address()
            );
        }
    }

    /// The accept queue of `member` summed over the steered listeners (None without steering).
    pub fn queue_len(&self, member: u32) -> Option<u32> {
        let groups: Vec<&Group> = self.groups.iter().flatten().collect();
        if groups.is_empty() {
            return None;
        }
        Some(
            groups
                .iter()
                .filter(|g| (member as usize) < g.len())
                .map(|g| g.queue_len(member as usize).unwrap_or(0))
                .sum(),
        )
    }

    /// The worker is gone: what was kept to watch it goes too.
    pub fn release(&mut self, worker: WorkerId) {
        self.watched.remove(&worker);
    }

    /// graceful-run's copies of every member: closed at the stop signal, as the listeners are.
    pub fn close(&mut self) {
        for group in &mut self.groups {
            *group = None;
        }
    }
}

/// A TCP socket bound to `address` (port 0: the kernel picks), non-blocking, close-on-exec.
fn probe_socket(address: SocketAddr) -> io::Result<std::net::TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, socket,
    };
    let family = match address {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match address {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
        SocketAddr::V6(v6) => bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?,
    }
    Ok(std::net::TcpStream::from(fd))
}

/// Begins connecting `socket` to `target`; EINPROGRESS is the expected answer.
fn connect_nonblocking(socket: &std::net::TcpStream, target: SocketAddr) -> io::Result<()> {
    use nix::sys::socket::{SockaddrIn, SockaddrIn6, connect};
    let result = match target {
        SocketAddr::V4(v4) => connect(socket.as_raw_fd(), &SockaddrIn::from(v4)),
        SocketAddr::V6(v6) => connect(socket.as_raw_fd(), &SockaddrIn6::from(v6)),
    };
    match result {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The scope of a worker's processes.
pub(super) fn scope(process_group: bool, pgid: i32) -> Scope {
    if process_group {
        Scope::Group(Pid::from_raw(pgid))
    } else {
        Scope::Tree(Pid::from_raw(pgid))
    }
}
