//! What a generation's connections are doing, seen from outside: which are busy (a request
//! in flight) and which are idle, so that graceful-run signals a generation only once it has
//! nothing in flight (issue 16, items 2 to 4), without any help from the server.
//!
//! # How
//!
//! 1. The generation's processes: its process group (the leader's descendants in it, and
//!    graceful-run's own children in it, where orphans land since graceful-run is a
//!    subreaper), as `accepting` finds them. [`processes_of`].
//! 2. The sockets they hold: every `socket:[INODE]` link in `/proc/PID/fd`. Root or the
//!    processes' own user may read them (ptrace read access); root without the capabilities
//!    for that reads them as their user (`proc_owner`). [`observe`].
//! 3. Those sockets' state: one `sock_diag` dump per address family of the TCP connections
//!    whose local port is a listener's port (filtered in the kernel), joined by inode. No
//!    privilege needed. A connection accepted from graceful-run's listener has that port as
//!    its local port; the command's own outgoing connections (a database) do not, and are
//!    left out.
//! 4. Each connection is classified by [`classify`], from its queues and `tcp_info`.
//!
//! # Busy or idle
//!
//! A connection is **busy** while
//! - it has unread bytes (`rqueue` > 0: a request the server has not read yet),
//! - or unacknowledged bytes (`wqueue` > 0: a response still being written or in flight),
//! - or it received data and sent nothing yet, or received data more recently than it sent
//!   (`tcpi_last_data_recv` < `tcpi_last_data_sent`, both "ms ago"): a request waits for
//!   its response,
//! - or it was just accepted and has received nothing yet, for a short grace: the client's
//!   request may be on its way,
//! - or it sent data less than [`RECENT_SEND`] (500 ms) ago (`tcpi_last_data_sent`): a response
//!   sent in pieces (streamed, or its head and body written apart) has sent after it last
//!   received between its pieces, exactly as an idle keep-alive connection has; only the
//!   time since its last piece tells them apart. A stream that pauses for longer than that
//!   between pieces is still seen idle in the pause: TCP says no more.
//!
//! It is **idle** when it sent after it last received, longer than that ago (an idle
//! keep-alive connection waiting for the next request), when it received nothing for longer than the grace (a client that
//! connected and never spoke, or a server-first protocol waiting for the client), or when the
//! server already closed its side.
//!
//! **The clock's limit.** The kernel keeps those two times in jiffies (4 ms at HZ=250, this
//! kernel), so a request and its response within one tick read equal, and so do a response
//! and the next request of a client that sends again at once. Equal times are classified
//! busy (`SameTick`) for the grace, then idle: an idle keep-alive connection whose last
//! exchange was quick would otherwise stay busy forever, and a slow request that arrived in
//! the same tick as the previous response (back-to-back keep-alive) is then seen as idle
//! after the grace. Byte counters do not help (they do not say which came last). A request on
//! a fresh connection (the common case, and every `Connection: close` client) is never
//! ambiguous: it has received and sent nothing.
//!
//! # Keep-alive streams
//!
//! A client that keeps reusing its connection (wrk, a load balancer's pool, an HTTP/1.1 client
//! under steady load) sends its next request the moment the previous response arrives: its
//! connection is busy at nearly every look and never goes idle by itself. Only the server can
//! end it gracefully (answering with `Connection: close`, or closing between requests), and
//! waiting for it only delays a drain until `--drain-timeout`, after which the stop signal
//! comes at an arbitrary moment. An [`Observer`] keeps each connection's byte counters
//! between its looks, and calls a connection a **keep-alive stream** once its client sent
//! data at two of its looks, each time since the one before (two requests at least, apart in
//! time, since the drain began). A stream is **at a request boundary** ([`at_boundary`]) when
//! the server has read everything the client sent and wrote after it:
//!
//! - nothing unread (`rqueue` 0), not more than [`BOUNDARY_NOTSENT`] written and not yet
//!   transmitted (more is a long response that the client reads slower than it is written),
//! - and either bytes unacknowledged (`wqueue` > 0): the server wrote after the client's last
//!   data, since any data segment of the client acknowledges all it received before it (on
//!   loopback at once; across a network an HTTP/1.1 client sends its next request only once
//!   the previous response arrived). This is the usual state of a busy keep-alive connection
//!   between a response and the next request: the client delays its ACK to send it with that
//!   request (sampled on loopback, wrk-like client: 24 looks in 30);
//! - or nothing unacknowledged, and it sent data in a later clock tick than it last received,
//!   or received a bare ACK (`tcpi_last_ack_recv`) in a later tick than its last data: the
//!   client acknowledged something the server sent after that data;
//! - and the server did not send since the previous look without the client sending too: a
//!   response written in pieces, or a long one, keeps the server sending on its own.
//!
//! With every remaining connection idle or such a stream at a boundary, the drain ends
//! (`Activity::streams` in the core): a server that is not graceful, stopped then, cuts no
//! response it had begun; the client's next request finds the connection closed (RFC 9112
//! §9.3.1 lets a client retry it; browsers and proxies do, wrk does not). What stays
//! ambiguous: a stream whose latest request's response is written in pieces, seen at the first
//! look after that request, between two pieces; and a protocol that multiplexes requests on
//! one connection (HTTP/2, gRPC) or a pipelining client, where the server may write one answer
//! while others are still being worked on: such a server must stop gracefully (a GOAWAY, as
//! Go's `http.Server.Shutdown` and gRPC's `GracefulStop` send).
//!
//! # Handshakes in flight
//!
//! A connection whose handshake has begun but not completed is a request socket in
//! `SYN_RECV`: it is in no accept queue yet, and sock_diag does not say which listener it will
//! be queued on (its inode is 0). The SYN already chose the member, so the handshakes in
//! flight when steering changes may still complete into the old member's queue.
//! [`SynSnapshot`] records them (every one toward the port, the conservative choice) at
//! steering time; the old member is drained once none of them is in flight any more and its
//! queue is empty. On loopback a handshake completes within microseconds; across a network
//! within a round trip, or a few seconds of SYN-ACK retransmission.
//!
//! # Cost
//!
//! One `readlink` per open fd of each process, and either a netlink dump filtered to the
//! listeners' ports or, with an [`Observer`] that has seen these connections before, one
//! lookup per connection. A dump walks the kernel's whole established-connection table
//! (262,144 buckets on this 24 GiB machine): about 2 ms whatever the port, where lookups
//! cost microseconds per connection. Called only while a generation drains or a stop
//! waits, with backoff.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::socket::AddressFamily;

use crate::accepting::{Scope, children, process_group, socket_inode};
use crate::sock_diag::{self, Socket, States, TcpState};

/// Why a connection is busy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Busy {
    /// Bytes received and not yet read by the server.
    Unread(u32),
    /// Bytes written by the server and not yet acknowledged by the client.
    Unsent(u32),
    /// Data received since the server last sent: a request waits for its response.
    AwaitingResponse,
    /// Accepted, nothing received yet, younger than the grace.
    JustAccepted,
    /// The last data each way moved in the same clock tick, less than the grace ago.
    SameTick,
    /// Sent data less than [`RECENT_SEND`] ago: a response may be on its way in pieces.
    RecentlySent,
    /// The kernel gave no tcp_info for it: counted busy, to be safe.
    Unknown,
}

/// Why a connection is idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Idle {
    /// The server sent after it last received: waiting for the client's next request.
    KeepAlive,
    /// Nothing received for longer than the grace.
    Silent,
    /// The server closed its side (FIN sent), nothing left to send.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Activity {
    Busy(Busy),
    Idle(Idle),
}

impl Activity {
    pub fn is_busy(self) -> bool {
        matches!(self, Activity::Busy(_))
    }

    /// A short name for logs and `ctl status`: `unread`, `unsent`, `awaiting-response`,
    /// `just-accepted`, `same-tick`, `recently-sent`, `unknown`, `keep-alive`, `silent`, `closed`.
    pub fn reason(self) -> &'static str {
        match self {
            Activity::Busy(Busy::Unread(_)) => "unread",
            Activity::Busy(Busy::Unsent(_)) => "unsent",
            Activity::Busy(Busy::AwaitingResponse) => "awaiting-response",
            Activity::Busy(Busy::JustAccepted) => "just-accepted",
            Activity::Busy(Busy::SameTick) => "same-tick",
            Activity::Busy(Busy::RecentlySent) => "recently-sent",
            Activity::Busy(Busy::Unknown) => "unknown",
            Activity::Idle(Idle::KeepAlive) => "keep-alive",
            Activity::Idle(Idle::Silent) => "silent",
            Activity::Idle(Idle::Closed) => "closed",
        }
    }
}

/// The grace [`classify`] gives a connection that was just accepted, or whose last exchange
/// fell in one clock tick, before calling it idle.
pub const DEFAULT_GRACE: Duration = Duration::from_millis(500);

/// A connection that sent data less than this ago is busy (`recently-sent`): a response in
/// pieces has sent after it last received between them, as an idle keep-alive connection
/// has. Long enough for the pauses of a streamed response or of a head and body written
/// apart; what it costs is that a drain or a stop waits this long after the last response.
pub const RECENT_SEND: Duration = Duration::from_millis(500);

/// Busy or idle, from what sock_diag tells of one connection (see the module doc).
pub fn classify(socket: &Socket, grace: Duration) -> Activity {
    if socket.rqueue > 0 {
        return Activity::Busy(Busy::Unread(socket.rqueue));
    }
    if socket.wqueue > 0 {
        return Activity::Busy(Busy::Unsent(socket.wqueue));
    }
    if socket.state.closed_here() {
        return Activity::Idle(Idle::Closed);
    }
    let Some(info) = socket.info else {
        return Activity::Busy(Busy::Unknown);
    };
    let grace_ms = u32::try_from(grace.as_millis()).unwrap_or(u32::MAX);
    let received = info.bytes_received.unwrap_or(1);
    // Nothing is unacknowledged (wqueue is 0), so what was sent is what was acknowledged.
    let sent = info.bytes_acked.or(info.bytes_sent).unwrap_or(1);
    // For a connection that has received nothing, "last received" is its creation.
    if received == 0 {
        return if sent == 0 && info.last_data_recv_ms < grace_ms {
            Activity::Busy(Busy::JustAccepted)
        } else {
            Activity::Idle(Idle::Silent)
        };
    }
    if sent == 0 || info.last_data_recv_ms < info.last_data_sent_ms {
        return Activity::Busy(Busy::AwaitingResponse);
    }
    if info.last_data_recv_ms == info.last_data_sent_ms && info.last_data_recv_ms < grace_ms {
        return Activity::Busy(Busy::SameTick);
    }
    if u128::from(info.last_data_sent_ms) < RECENT_SEND.as_millis() {
        return Activity::Busy(Busy::RecentlySent);
    }
    Activity::Idle(Idle::KeepAlive)
}

/// The most bytes a stream at a request boundary may have written and not yet transmitted:
/// what Nagle's algorithm holds back (less than a segment, 64 KiB on loopback) while the
/// client delays its ACK of the rest. More is a response longer than the client reads.
pub const BOUNDARY_NOTSENT: u32 = 64 * 1024;

/// Whether the server has read everything this connection's client sent and wrote after it
/// (see "Keep-alive streams" in the module doc). Alone it does not tell a complete response
/// from the first piece of one: it is asked only of keep-alive streams, with their history.
pub fn at_boundary(socket: &Socket) -> bool {
    if socket.rqueue > 0 {
        return false;
    }
    if socket.state.closed_here() {
        return true;
    }
    let Some(info) = socket.info else {
        return false;
    };
    if info.notsent_bytes.unwrap_or(0) > BOUNDARY_NOTSENT {
        return false;
    }
    if socket.wqueue > 0 {
        return true;
    }
    info.last_data_sent_ms < info.last_data_recv_ms
        || (info.last_data_sent_ms == info.last_data_recv_ms
            && info.last_ack_recv_ms < info.last_data_recv_ms)
}

/// One connection held by an observed process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub socket: Socket,
    pub activity: Activity,
    /// A keep-alive stream at a request boundary (an [`Observer`]'s finding; [`observe`]
    /// alone has no history and never says so).
    pub stream: bool,
}

/// What an [`Observer`] remembers of one connection between its looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    /// Bytes received and bytes written by the server (acknowledged or not), at the last look.
    received: u64,
    written: u64,
    /// At how many looks its client had sent since the look before.
    sends: u32,
}

/// Bytes received, and bytes the server wrote (acknowledged, plus in its queue).
fn counters(socket: &Socket) -> Option<(u64, u64)> {
    let info = socket.info?;
    Some((
        info.bytes_received?,
        info.bytes_acked?.saturating_add(u64::from(socket.wqueue)),
    ))
}

/// The connections a set of processes holds on graceful-run's listeners' ports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub connections: Vec<Connection>,
}

impl Observation {
    /// Busy connections, keep-alive streams at a request boundary excepted.
    pub fn busy(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| c.activity.is_busy() && !c.stream)
            .count()
    }

    /// Keep-alive streams at a request boundary (see the module doc) that would be busy
    /// otherwise.
    pub fn streams(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| c.activity.is_busy() && c.stream)
            .count()
    }

    pub fn idle(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| !c.activity.is_busy())
            .count()
    }

    /// How many connections per [`Activity::reason`], busy ones first.
    pub fn by_reason(&self) -> BTreeMap<(bool, &'static str), usize> {
        let mut counts = BTreeMap::new();
        for connection in &self.connections {
            let key = (!connection.activity.is_busy(), connection.activity.reason());
            *counts.entry(key).or_default() += 1;
        }
        counts
    }
}

/// The pids of `scope`'s processes (see the module doc); empty when they are all gone.
pub fn processes_of(scope: Scope) -> Vec<i32> {
    let (root, group) = match scope {
        Scope::Group(pgid) => (pgid.as_raw(), Some(pgid.as_raw())),
        Scope::Tree(pid) => (pid.as_raw(), None),
    };
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut pending = vec![root];
    if let Some(pgid) = group {
        pending.extend(
            children(std::process::id() as i32)
                .into_iter()
                .filter(|&child| process_group(child) == Some(pgid)),
        );
    }
    while let Some(pid) = pending.pop() {
        if !seen.insert(pid) {
            continue;
        }
        if group.is_none() || process_group(pid) == group {
            found.push(pid);
        }
        pending.extend(children(pid));
    }
    found
}

/// The socket inodes `pid` holds. A process that is gone holds none. Another user's are read
/// as that user when root lacks the capabilities to read them (`proc_owner`).
fn socket_inodes(pid: i32, into: &mut HashSet<u64>) -> io::Result<()> {
    crate::proc_owner::read(pid, || read_socket_inodes(pid, into))
}

fn read_socket_inodes(pid: i32, into: &mut HashSet<u64>) -> io::Result<()> {
    let entries = match fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(e),
        Err(_) => return Ok(()),
    };
    for entry in entries.flatten() {
        match fs::read_link(entry.path()) {
            Ok(target) => {
                if let Some(inode) = target.to_str().and_then(socket_inode) {
                    into.insert(inode);
                }
            }
            // Listed but not readable: ptrace read access refused. Skipping would report a
            // busy generation as having no connection at all.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(e),
            // Closed meanwhile, or the process is gone.
            Err(_) => {}
        }
    }
    Ok(())
}

/// A TCP listening socket that `scope`'s processes hold and graceful-run did not give them
/// (`ours`, the inodes of the listeners it passed): the command binds a port itself, where
/// it should take graceful-run's from LISTEN_FDS. For the diagnosis of a generation that is
/// never ready; looked for only then (a LISTEN dump per address family, cheap: the kernel
/// walks only its listening sockets).
pub fn own_listener(scope: Scope, ours: &[u64]) -> Option<SocketAddr> {
    let mut inodes = HashSet::new();
    for pid in processes_of(scope) {
        // One that may not be read is passed over: this is a hint, not a verdict.
        let _ = socket_inodes(pid, &mut inodes);
    }
    inodes.retain(|inode| !ours.contains(inode));
    if inodes.is_empty() {
        return None;
    }
    [AddressFamily::Inet, AddressFamily::Inet6]
        .into_iter()
        .filter_map(|family| sock_diag::dump(family, States::LISTEN, &[]).ok())
        .flatten()
        .find(|s| s.state == TcpState::Listen && inodes.contains(&s.inode))
        .map(|s| s.local)
}

/// The connections that `pids` hold whose local port is one of `listeners`' ports,
/// classified with `grace`. `Err` when /proc may not be read for them (graceful-run is
/// neither root nor their user, or hidepid) or sock_diag fails; a process that exits
/// meanwhile holds nothing.
pub fn observe(pids: &[i32], listeners: &[SocketAddr], grace: Duration) -> io::Result<Observation> {
    let mut inodes = HashSet::new();
    for &pid in pids {
        socket_inodes(pid, &mut inodes)?;
    }
    let connections = dump_held(&inodes, listeners)?
        .into_iter()
        .map(|socket| Connection {
            activity: classify(&socket, grace),
            socket,
            stream: false,
        })
        .collect();
    Ok(Observation { connections })
}

/// Observes one set of processes again and again (a generation while it drains), at the
/// cost of their connections rather than of the host's: the first observation, and any
/// that finds a socket inode not seen before, dumps the listeners' ports (a walk over the
/// kernel's whole connection table, about 2 ms here); the others look each known connection
/// up by its 4-tuple and cookie ([`sock_diag::lookup`], microseconds each).
///
/// A socket inode the dump did not show on the listeners' ports (a unix socket, an outgoing
/// connection) is remembered as not ours, so that it does not cause a dump every time.
///
/// It also keeps each connection's byte counters from one look to the next, to tell
/// keep-alive streams (see the module doc): its first look is the drain's first look.
pub struct Observer {
    listeners: Vec<SocketAddr>,
    grace: Duration,
    /// inode -> (local, peer, cookie) of each connection seen on the listeners' ports.
    known: HashMap<u64, (SocketAddr, SocketAddr, u64)>,
    /// Socket inodes that are not connections on the listeners' ports.
    others: HashSet<u64>,
    /// Per connection (by cookie): its counters at the last look.
    seen: HashMap<u64, Seen>,
    /// How many dumps and lookups this observer made (for its cost).
    pub dumps: u64,
    pub lookups: u64,
}

impl Observer {
    pub fn new(listeners: &[SocketAddr], grace: Duration) -> Observer {
        Observer {
            listeners: listeners.to_vec(),
            grace,
            known: HashMap::new(),
            others: HashSet::new(),
            seen: HashMap::new(),
            dumps: 0,
            lookups: 0,
        }
    }

    /// What [`observe`] gives for `pids`, cheaper when nothing new appeared.
    pub fn observe(&mut self, pids: &[i32]) -> io::Result<Observation> {
        let mut inodes = HashSet::new();
        for &pid in pids {
            socket_inodes(pid, &mut inodes)?;
        }
        let unknown = inodes
            .iter()
            .any(|inode| !self.known.contains_key(inode) && !self.others.contains(inode));
        let sockets = if unknown {
            self.dumps += 1;
            let sockets = dump_held(&inodes, &self.listeners)?;
            self.known = sockets
                .iter()
                .map(|s| (s.inode, (s.local, s.peer, s.cookie)))
                .collect();
            self.others = inodes
                .iter()
                .copied()
                .filter(|inode| !self.known.contains_key(inode))
                .collect();
            sockets
        } else {
            self.known.retain(|inode, _| inodes.contains(inode));
            self.others.retain(|inode| inodes.contains(inode));
            let keys: Vec<_> = self.known.values().copied().collect();
            if keys.is_empty() {
                Vec::new()
            } else {
                self.lookups += 1;
                let found = sock_diag::lookup(&keys)?;
                // A connection no longer in the table (reset, closed) stays held until its
                // fd closes, but is over: not ours any more.
                let alive: HashSet<u64> = found.iter().map(|s| s.inode).collect();
                let gone: Vec<u64> = self
                    .known
                    .keys()
                    .copied()
                    .filter(|inode| !alive.contains(inode))
                    .collect();
                for inode in gone {
                    self.known.remove(&inode);
                    self.others.insert(inode);
                }
                found
                    .into_iter()
                    .filter(|s| s.inode != 0 && inodes.contains(&s.inode))
                    .filter(|s| States::CONNECTED.0 & s.state.bit() != 0)
                    .collect()
            }
        };
        let mut seen = HashMap::with_capacity(sockets.len());
        let connections = sockets
            .into_iter()
            .map(|socket| {
                let activity = classify(&socket, self.grace);
                let mut stream = false;
                if let Some((received, written)) = counters(&socket) {
                    let now = match self.seen.get(&socket.cookie) {
                        Some(before) => {
                            let sent = received > before.received;
                            let alone = !sent && written > before.written;
                            let sends = before.sends + u32::from(sent);
                            stream = sends >= 2 && !alone && at_boundary(&socket);
                            Seen {
                                received,
                                written,
                                sends,
                            }
                        }
                        None => Seen {
                            received,
                            written,
                            sends: 0,
                        },
                    };
                    seen.insert(socket.cookie, now);
                }
                Connection {
                    activity,
                    socket,
                    stream,
                }
            })
            .collect();
        self.seen = seen;
        Ok(Observation { connections })
    }
}

/// The connections among `inodes` on `listeners`' ports, by one dump per address family.
/// Also how `accepting` finds a connection a starting generation accepted.
pub(crate) fn dump_held(
    inodes: &HashSet<u64>,
    listeners: &[SocketAddr],
) -> io::Result<Vec<Socket>> {
    if inodes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(dump_connections(listeners)?
        .into_iter()
        .filter(|s| s.inode != 0 && inodes.contains(&s.inode))
        .collect())
}

/// Every connection on `listeners`' ports, whoever holds it: one dump per address family.
pub(crate) fn dump_connections(listeners: &[SocketAddr]) -> io::Result<Vec<Socket>> {
    let mut found = Vec::new();
    for (family, ports) in ports_by_family(listeners) {
        found.extend(sock_diag::dump(family, States::CONNECTED, &ports)?);
    }
    Ok(found)
}

/// The ports to dump per address family. An IPv6 listener also gets IPv4 clients as
/// IPv4-mapped IPv6 sockets, so its family is enough.
fn ports_by_family(listeners: &[SocketAddr]) -> Vec<(AddressFamily, Vec<u16>)> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for listener in listeners {
        match listener {
            SocketAddr::V4(_) => v4.push(listener.port()),
            SocketAddr::V6(_) => v6.push(listener.port()),
        }
    }
    let mut families = Vec::new();
    if !v4.is_empty() {
        families.push((AddressFamily::Inet, v4));
    }
    if !v6.is_empty() {
        families.push((AddressFamily::Inet6, v6));
    }
    families
}

/// The handshakes in flight toward a group at one moment (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SynSnapshot {
    /// (local, peer, cookie) of each request socket.
    handshakes: Vec<(SocketAddr, SocketAddr, u64)>,
}

impl SynSnapshot {
    /// Every handshake in flight toward `address`'s port now: one dump of its address
    /// family (an IPv4 client of a dual-stack `[::]` listener is an IPv6 request socket
    /// with IPv4-mapped addresses). Take it right after [`Group::steer`]: those still go
    /// where the previous program sent them. About 2 ms (the dump walks the kernel's whole
    /// connection table).
    ///
    /// [`Group::steer`]: crate::listen::steer::Group::steer
    pub fn take(address: SocketAddr) -> io::Result<SynSnapshot> {
        let family = match address {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let handshakes = sock_diag::dump(family, States::SYN_RECV, &[address.port()])?
            .into_iter()
            .filter(|s| matches!(s.state, TcpState::SynRecv | TcpState::NewSynRecv))
            .map(|s| (s.local, s.peer, s.cookie))
            .collect();
        Ok(SynSnapshot { handshakes })
    }

    /// How many handshakes were in flight when the snapshot was taken.
    pub fn len(&self) -> usize {
        self.handshakes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handshakes.is_empty()
    }

    /// How many of the snapshot's handshakes are still in flight: 0 once each one completed
    /// (into the accept queue its SYN chose) or was given up. Each is looked up by its
    /// 4-tuple and cookie (microseconds): a completed handshake's connection is another
    /// socket, with another cookie.
    pub fn still_in_flight(&self) -> io::Result<usize> {
        if self.handshakes.is_empty() {
            return Ok(0);
        }
        Ok(sock_diag::lookup(&self.handshakes)?
            .iter()
            .filter(|s| matches!(s.state, TcpState::SynRecv | TcpState::NewSynRecv))
            .count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sock_diag::TcpInfo;

    fn connection(rqueue: u32, wqueue: u32, info: TcpInfo) -> Socket {
        Socket {
            state: TcpState::Established,
            local: "127.0.0.1:80".parse().expect("an address"),
            peer: "127.0.0.1:40000".parse().expect("an address"),
            rqueue,
            wqueue,
            uid: 0,
            inode: 1,
            cookie: 1,
            info: Some(info),
        }
    }

    fn info(received: u64, sent: u64, recv_ago: u32, sent_ago: u32) -> TcpInfo {
        TcpInfo {
            bytes_received: Some(received),
            bytes_acked: Some(sent),
            last_data_recv_ms: recv_ago,
            last_data_sent_ms: sent_ago,
            ..TcpInfo::default()
        }
    }

    const GRACE: Duration = Duration::from_millis(500);

    #[test]
    fn the_rules_of_the_module_doc() {
        let busy = |b| Activity::Busy(b);
        let idle = |i| Activity::Idle(i);
        let cases = [
            (connection(10, 0, info(10, 0, 5, 5)), busy(Busy::Unread(10))),
            (connection(0, 7, info(10, 0, 5, 5)), busy(Busy::Unsent(7))),
            // A request read, nothing sent yet.
            (
                connection(0, 0, info(10, 0, 3000, 3000)),
                busy(Busy::AwaitingResponse),
            ),
            // A second request, received after the first response.
            (
                connection(0, 0, info(20, 100, 40, 80)),
                busy(Busy::AwaitingResponse),
            ),
            // Answered, or between two pieces of a response: busy while it sent recently...
            (
                connection(0, 0, info(20, 100, 80, 40)),
                busy(Busy::RecentlySent),
            ),
            // ...then an idle keep-alive connection.
            (
                connection(0, 0, info(20, 100, 900, 600)),
                idle(Idle::KeepAlive),
            ),
            (connection(0, 0, info(20, 100, 8, 8)), busy(Busy::SameTick)),
            (
                connection(0, 0, info(20, 100, 800, 800)),
                idle(Idle::KeepAlive),
            ),
            (
                connection(0, 0, info(0, 0, 100, 100)),
                busy(Busy::JustAccepted),
            ),
            (connection(0, 0, info(0, 0, 600, 600)), idle(Idle::Silent)),
            // A server-first protocol (a banner sent), waiting for the client.
            (connection(0, 0, info(0, 30, 100, 50)), idle(Idle::Silent)),
        ];
        for (socket, expected) in cases {
            assert_eq!(classify(&socket, GRACE), expected, "{socket:?}");
        }
        let mut closing = connection(0, 0, info(10, 0, 5, 5));
        closing.state = TcpState::FinWait2;
        assert_eq!(classify(&closing, GRACE), idle(Idle::Closed));
        let mut no_info = connection(0, 0, info(0, 0, 0, 0));
        no_info.info = None;
        assert_eq!(classify(&no_info, GRACE), busy(Busy::Unknown));
    }

    #[test]
    fn request_boundaries_of_a_keep_alive_stream() {
        let with_ack = |mut i: TcpInfo, ack_ago| {
            i.last_ack_recv_ms = ack_ago;
            i
        };
        let cases = [
            // The next request unread.
            (connection(68, 0, info(680, 1710, 0, 0)), false),
            // Read and being answered: the request carried the ACK of the last response.
            (connection(0, 0, with_ack(info(748, 1710, 0, 0), 0)), false),
            (connection(0, 0, with_ack(info(748, 1710, 4, 8), 4)), false),
            // The response written, its ACK delayed by the client until its next request.
            (connection(0, 171, with_ack(info(748, 1710, 0, 0), 0)), true),
            // Acknowledged: sent in a later tick than it received...
            (connection(0, 0, with_ack(info(748, 1881, 8, 4), 4)), true),
            // ...or in the same tick, with a bare ACK in a later one.
            (connection(0, 0, with_ack(info(748, 1881, 44, 44), 4)), true),
            // More held back than Nagle would: a long response the client reads slowly.
            (
                connection(0, 300_000, {
                    let mut i = info(748, 1710, 0, 0);
                    i.notsent_bytes = Some(200_000);
                    i
                }),
                false,
            ),
        ];
        for (socket, expected) in cases {
            assert_eq!(at_boundary(&socket), expected, "{socket:?}");
        }
    }
}
