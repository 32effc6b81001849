//! The executor's side of steering (issue 16): the reuseport groups of the TCP listeners, the
//! fds each worker gets from them, where new connections go, and the looks at a worker that
//! drains. The core decides which member a worker gets ([`core::Question::Spawn`]), where
//! connections go ([`core::Action::Steer`]) and when a drained worker is signalled; this module
//! only carries that out and reports what it sees ([`core::Activity`]). The kernel's side is
//! in `listen/steer.rs`, the observation in `observe.rs`.
//!
//! Without steering (`--handover shared`, a kernel or sandbox that refuses the program, UDP
//! and unix listeners, `,reuseport`) every worker gets the listener graceful-run bound, as
//! before; the looks at a stopping worker still see its connections.

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
    /// A stranger in a group was reported (once).
    strangers_reported: bool,
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
            strangers_reported: false,
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
    /// gives out), the shared socket of the others.
    pub fn fds(&mut self, listeners: &Listeners, member: Option<u32>) -> io::Result<Vec<RawFd>> {
        let shared = listeners.raw_fds();
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
        Ok(fds)
    }

    /// The inode of each stream listener a worker on `member` gets, with its name for the log.
    pub fn stream_inodes(&self, listeners: &Listeners, member: Option<u32>) -> Vec<(u64, String)> {
        listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_stream())
            .filter_map(|(i, l)| {
                let name = format!("{} (fd {})", l.bound, 3 + i);
                let inode = match (self.groups.get(i).and_then(Option::as_ref), member) {
                    (Some(group), Some(member)) if (member as usize) < group.len() => {
                        group.inode(member as usize)
                    }
                    _ => accepting::listener_inode(l.fd()?).ok()?,
                };
                Some((inode, name))
            })
            .collect()
    }

    /// New connections to `members` from now on, on every steered listener.
    pub fn steer(&mut self, members: &[u32]) {
        let members: Vec<usize> = members.iter().map(|m| *m as usize).collect();
        let route = Route::over(&members);
        self.spread = members.clone();
        let mut snapshot = Vec::new();
        for group in self.groups.iter().flatten() {
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
            if !self.strangers_reported
                && let Ok(strangers) = group.strangers()
                && !strangers.is_empty()
            {
                self.strangers_reported = true;
                warn!(
                    Subject::NONE,
                    "another program listens on {} in graceful-run's reuseport group (it set SO_REUSEPORT as the same user): some new connections may reach it",
                    group.address()
                );
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
