//! The kernel's table of TCP sockets, as `ss` reads it: a `NETLINK_SOCK_DIAG` dump
//! (`inet_diag`), and `TCP_INFO` of a socket graceful-run holds.
//!
//! Why this and not /proc/net/tcp: the dump gives `tcp_info` (when data last moved each way,
//! how many bytes), the socket's cookie, and it can be filtered in the kernel by local port
//! (the bytecode below), so that a host with a hundred thousand connections costs a dump of
//! the few on graceful-run's ports, not of all of them. It needs no privilege: any user may
//! dump the sockets of its network namespace (what `ss -tin` shows), and the port
//! comparisons used here are allowed to everyone (only `INET_DIAG_BC_MARK_COND` needs
//! CAP_NET_ADMIN).
//!
//! What each socket reports, as used by `listen::steer` and `observe`:
//! - a listener: `rqueue` is its accept queue (connections established, not yet accepted),
//!   `wqueue` its backlog limit; `inode` is the `st_ino` that `fstat` gives for any fd of it;
//! - an established socket: `rqueue` the bytes received and not yet read, `wqueue` the bytes
//!   written and not yet acknowledged by the peer (sent or not); `inode` is 0 once no process
//!   holds it (an orphan closing down);
//! - a handshake in flight (a request socket, `SynRecv`): its 4-tuple, `inode` 0, no
//!   `tcp_info`, and nothing that names the listener it will be queued on.
//!
//! Implemented with nix and libc over a plain netlink socket; no netlink crate: one request,
//! one reply format, a few hundred lines. Every message is checked to come from the kernel
//! (port id 0) and to answer our request (sequence number), and every length is checked
//! before it is read.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::libc;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recvfrom, sendto,
    socket,
};

/// The states of a TCP socket, numbered as the kernel numbers them (`include/net/tcp_states.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    /// A request socket (a handshake in flight) as the kernel keeps it; dumps report it as
    /// [`TcpState::SynRecv`].
    NewSynRecv = 12,
}

impl TcpState {
    fn from_raw(raw: u8) -> Option<TcpState> {
        use TcpState::*;
        Some(match raw {
            1 => Established,
            2 => SynSent,
            3 => SynRecv,
            4 => FinWait1,
            5 => FinWait2,
            6 => TimeWait,
            7 => Close,
            8 => CloseWait,
            9 => LastAck,
            10 => Listen,
            11 => Closing,
            12 => NewSynRecv,
            _ => return None,
        })
    }

    /// Whether this side has closed its half (sent its FIN): a connection in one of these
    /// states has nothing more to send.
    pub fn closed_here(self) -> bool {
        use TcpState::*;
        matches!(self, FinWait1 | FinWait2 | LastAck | Closing | TimeWait)
    }

    /// The bit of this state in a dump request's state mask.
    pub fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// Which sockets a dump asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct States(pub u32);

impl States {
    pub const LISTEN: States = States(1 << TcpState::Listen as u32);
    /// Handshakes in flight: request sockets are `NewSynRecv` inside the kernel; both bits,
    /// as `ss` sets them, so that every kernel version matches them.
    pub const SYN_RECV: States =
        States(1 << TcpState::SynRecv as u32 | 1 << TcpState::NewSynRecv as u32);
    /// Every state a connection held by a process can be in (all but LISTEN, SYN_RECV,
    /// TIME_WAIT and CLOSE, which no process holds).
    pub const CONNECTED: States = States(
        1 << TcpState::Established as u32
            | 1 << TcpState::FinWait1 as u32
            | 1 << TcpState::FinWait2 as u32
            | 1 << TcpState::CloseWait as u32
            | 1 << TcpState::LastAck as u32
            | 1 << TcpState::Closing as u32
            | 1 << TcpState::SynSent as u32,
    );
    pub const ALL: States = States(u32::MAX);

    pub fn union(self, other: States) -> States {
        States(self.0 | other.0)
    }
}

/// The fields of `struct tcp_info` that graceful-run reads. Fields a kernel is too old to
/// report are `None` (the struct has grown over the years; its length says what is there).
///
/// Times are "milliseconds ago", counted by the kernel in jiffies: they move in steps of
/// 1000/HZ ms (4 ms at HZ=250, Debian's default), so two events in the same step read equal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: u8,
    /// A listener: its accept queue length. A connection: segments sent and not yet
    /// acknowledged.
    pub unacked: u32,
    /// A listener: its backlog limit.
    pub sacked: u32,
    pub last_data_sent_ms: u32,
    pub last_data_recv_ms: u32,
    pub last_ack_recv_ms: u32,
    /// Bytes sent and acknowledged by the peer (Linux 4.1).
    pub bytes_acked: Option<u64>,
    /// Bytes received in order (Linux 4.1).
    pub bytes_received: Option<u64>,
    /// Bytes written by the process and not yet sent (Linux 4.6).
    pub notsent_bytes: Option<u32>,
    /// Bytes sent, retransmissions excepted (Linux 4.19).
    pub bytes_sent: Option<u64>,
}

/// Offsets in `struct tcp_info` (`include/uapi/linux/tcp.h`, checked against the C header
/// with offsetof; the tests check the values against real connections).
mod offset {
    pub const STATE: usize = 0;
    pub const UNACKED: usize = 24;
    pub const SACKED: usize = 28;
    pub const LAST_DATA_SENT: usize = 44;
    pub const LAST_DATA_RECV: usize = 52;
    pub const LAST_ACK_RECV: usize = 56;
    pub const BYTES_ACKED: usize = 120;
    pub const BYTES_RECEIVED: usize = 128;
    pub const NOTSENT_BYTES: usize = 144;
    pub const BYTES_SENT: usize = 200;
    /// Enough for every field above; the kernel copies at most what it knows.
    pub const BUFFER: usize = 256;
}

impl TcpInfo {
    /// Parses the first `bytes.len()` bytes of a `struct tcp_info`; `None` if even the
    /// oldest fields are missing.
    pub fn parse(bytes: &[u8]) -> Option<TcpInfo> {
        let u32_at = |at: usize| {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
        };
        let u64_at = |at: usize| {
            bytes
                .get(at..at + 8)
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
        };
        Some(TcpInfo {
            state: *bytes.get(offset::STATE)?,
            unacked: u32_at(offset::UNACKED)?,
            sacked: u32_at(offset::SACKED)?,
            last_data_sent_ms: u32_at(offset::LAST_DATA_SENT)?,
            last_data_recv_ms: u32_at(offset::LAST_DATA_RECV)?,
            last_ack_recv_ms: u32_at(offset::LAST_ACK_RECV)?,
            bytes_acked: u64_at(offset::BYTES_ACKED),
            bytes_received: u64_at(offset::BYTES_RECEIVED),
            notsent_bytes: u32_at(offset::NOTSENT_BYTES),
            bytes_sent: u64_at(offset::BYTES_SENT),
        })
    }
}

/// `getsockopt(TCP_INFO)` on a TCP socket graceful-run holds. On a listener, `unacked` is the
/// accept queue's length and `sacked` its limit.
pub fn tcp_info(fd: BorrowedFd<'_>) -> io::Result<TcpInfo> {
    let mut buffer = [0u8; offset::BUFFER];
    let mut length = buffer.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `length` bytes into `buffer`, which is that long and
    // lives across the call, and stores the length it wrote in `length`.
    let result = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buffer.as_mut_ptr().cast(),
            &mut length,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let written = (length as usize).min(buffer.len());
    TcpInfo::parse(&buffer[..written])
        .ok_or_else(|| io::Error::other(format!("TCP_INFO too short ({written} bytes)")))
}

/// One socket of a dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub state: TcpState,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// See the module doc: accept queue for a listener, unread bytes for a connection.
    pub rqueue: u32,
    /// Backlog limit for a listener, unacknowledged bytes for a connection.
    pub wqueue: u32,
    pub uid: u32,
    /// 0 for a request socket and for a connection no process holds.
    pub inode: u64,
    /// The kernel's unique id of the socket for its lifetime.
    pub cookie: u64,
    /// Absent for request sockets.
    pub info: Option<TcpInfo>,
}

/// Every TCP socket of `family` (AF_INET or AF_INET6) in this network namespace in one of
/// `states`, whose local port is one of `ports` (all ports when empty).
///
/// Blocking, but the kernel answers at once: it walks its socket tables, runs the port
/// filter on each socket, and copies out only those that match, so a dump costs a few
/// system calls when few sockets match, however many the host has.
///
/// An IPv6 socket bound to `[::]` without IPV6_V6ONLY also serves IPv4 clients; those
/// connections are IPv6 sockets with IPv4-mapped addresses, and are in the AF_INET6 dump.
pub fn dump(family: AddressFamily, states: States, ports: &[u16]) -> io::Result<Vec<Socket>> {
    let netlink = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let sequence = next_sequence();
    let request = request(family, states, ports, sequence);
    let kernel = NetlinkAddr::new(0, 0);
    let sent = retry(|| sendto(netlink.as_raw_fd(), &request, &kernel, MsgFlags::empty()))?;
    if sent != request.len() {
        return Err(io::Error::other("sock_diag: short send"));
    }
    receive(&netlink, sequence)
}

fn next_sequence() -> u32 {
    next_sequences(1)
}

/// The first of `count` consecutive sequence numbers no other request of this process uses.
fn next_sequences(count: u32) -> u32 {
    static SEQUENCE: AtomicU32 = AtomicU32::new(1);
    SEQUENCE.fetch_add(count, Ordering::Relaxed)
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_INFO: u16 = 2;
const NLMSG_HEADER: usize = 16;
const REQUEST_V2: usize = 56;
const DIAG_MSG: usize = 72;

/// A dump request: `nlmsghdr`, `inet_diag_req_v2`, and the port filter as bytecode.
fn request(family: AddressFamily, states: States, ports: &[u16], sequence: u32) -> Vec<u8> {
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    message(
        flags,
        sequence,
        family,
        states,
        &[0u8; 48],
        &port_filter(ports),
    )
}

/// One `SOCK_DIAG_BY_FAMILY` message: `nlmsghdr`, `inet_diag_req_v2` (asking for
/// `tcp_info`) with the socket id `id`, and `bytecode` as an attribute when not empty.
fn message(
    flags: u16,
    sequence: u32,
    family: AddressFamily,
    states: States,
    id: &[u8; 48],
    bytecode: &[u8],
) -> Vec<u8> {
    let attribute = if bytecode.is_empty() {
        0
    } else {
        4 + bytecode.len()
    };
    let length = NLMSG_HEADER + REQUEST_V2 + attribute;
    let mut message = Vec::with_capacity(length);
    message.extend_from_slice(&(length as u32).to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&flags.to_ne_bytes());
    message.extend_from_slice(&sequence.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext (tcp_info), pad, states, inet_diag_sockid.
    message.push(family as i32 as u8);
    message.push(libc::IPPROTO_TCP as u8);
    message.push(1 << (INET_DIAG_INFO - 1));
    message.push(0);
    message.extend_from_slice(&states.0.to_ne_bytes());
    message.extend_from_slice(id);
    if !bytecode.is_empty() {
        message.extend_from_slice(&(attribute as u16).to_ne_bytes());
        message.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        message.extend_from_slice(bytecode);
    }
    debug_assert_eq!(message.len(), length);
    message
}

/// `inet_diag_sockid` naming one connection: ports in network order, addresses as the
/// kernel stores them (network order; an IPv4 one in the first of four words), no
/// interface, and its cookie in two host-order halves.
fn socket_id(local: SocketAddr, peer: SocketAddr, cookie: u64) -> [u8; 48] {
    let mut id = [0u8; 48];
    id[0..2].copy_from_slice(&local.port().to_be_bytes());
    id[2..4].copy_from_slice(&peer.port().to_be_bytes());
    let mut address = |at: usize, ip: IpAddr| match ip {
        IpAddr::V4(v4) => id[at..at + 4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => id[at..at + 16].copy_from_slice(&v6.octets()),
    };
    address(4, local.ip());
    address(20, peer.ip());
    id[40..44].copy_from_slice(&(cookie as u32).to_ne_bytes());
    id[44..48].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
    id
}

/// The connections named by `(local, peer, cookie)`, each looked up by its 4-tuple in the
/// kernel's hash table (no walk over every socket, as a dump does): the ones still there
/// with the same cookie. Requests go in batches in one `sendto` each; the kernel answers
/// each with the socket or an error (ENOENT: gone; ESTALE: the 4-tuple now names another
/// socket, or a listener, which a lookup falls back to).
///
/// A dump of a port costs a walk over the whole established-connection table (262,144
/// buckets here: about 2 ms, whatever the port); a lookup costs microseconds per connection.
pub fn lookup(connections: &[(SocketAddr, SocketAddr, u64)]) -> io::Result<Vec<Socket>> {
    // Each answer is queued on our socket before `sendto` returns (the kernel serves the
    // requests in the sender's context): a batch must fit in its default receive buffer.
    const BATCH: usize = 32;
    let netlink = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let kernel = NetlinkAddr::new(0, 0);
    let mut found = Vec::new();
    for batch in connections.chunks(BATCH) {
        let first = next_sequences(batch.len() as u32);
        let mut requests = Vec::new();
        for (i, &(local, peer, cookie)) in batch.iter().enumerate() {
            let family = if local.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let id = socket_id(local, peer, cookie);
            let flags = libc::NLM_F_REQUEST as u16;
            let sequence = first.wrapping_add(i as u32);
            requests.extend(message(flags, sequence, family, States::ALL, &id, &[]));
        }
        let sent = retry(|| sendto(netlink.as_raw_fd(), &requests, &kernel, MsgFlags::empty()))?;
        if sent != requests.len() {
            return Err(io::Error::other("sock_diag: short send"));
        }
        let mut answers = 0;
        let mut buffer = vec![0u8; 16 * 1024];
        while answers < batch.len() {
            let (length, from) =
                retry(|| recvfrom::<NetlinkAddr>(netlink.as_raw_fd(), &mut buffer))?;
            if from.is_some_and(|from| from.pid() != 0) {
                continue;
            }
            for (kind, sequence, payload) in messages(&buffer[..length])? {
                if sequence.wrapping_sub(first) >= batch.len() as u32 {
                    continue;
                }
                answers += 1;
                if i32::from(kind) == libc::NLMSG_ERROR {
                    match error_of(payload) {
                        0 | libc::ENOENT | libc::ESTALE => {}
                        errno => return Err(io::Error::from_raw_os_error(errno)),
                    }
                } else if kind == SOCK_DIAG_BY_FAMILY
                    && let Some(socket) = parse_socket(payload)
                {
                    let wanted = batch[sequence.wrapping_sub(first) as usize];
                    if (socket.local, socket.peer, socket.cookie) == wanted {
                        found.push(socket);
                    }
                }
            }
        }
    }
    Ok(found)
}

/// The messages of one datagram: (type, sequence, payload).
fn messages(mut rest: &[u8]) -> io::Result<Vec<(u16, u32, &[u8])>> {
    let mut found = Vec::new();
    while rest.len() >= NLMSG_HEADER {
        let length = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if length < NLMSG_HEADER || length > rest.len() {
            return Err(io::Error::other("sock_diag: malformed reply"));
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let sequence = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
        found.push((kind, sequence, &rest[NLMSG_HEADER..length]));
        rest = &rest[align4(length).min(rest.len())..];
    }
    Ok(found)
}

/// The errno of an NLMSG_ERROR (or a failed NLMSG_DONE): its payload starts with `-errno`.
fn error_of(payload: &[u8]) -> i32 {
    payload
        .get(0..4)
        .map_or(0, |b| -i32::from_ne_bytes(b.try_into().expect("4 bytes")))
}

/// `inet_diag` bytecode accepting a socket whose local port is one of `ports`.
///
/// The kernel runs it as a chain of comparisons, each with a `yes` and a `no` jump in bytes;
/// landing exactly on the end accepts, jumping past it (by 4) rejects. Its audit
/// (`inet_diag_bc_audit`) walks the `yes` jumps in order and requires every `no` target to be
/// on that walk, so the program is linear, as `ss` builds its "or": per port, `sport >= P`
/// and `sport <= P` (equality has its own opcode only since Linux 4.16), then an always-taken
/// jump to the end (JMP takes its `no` branch; its `yes` of 4 keeps the audit's walk linear).
/// The last port needs no jump: success falls through to the end.
fn port_filter(ports: &[u16]) -> Vec<u8> {
    const S_GE: u8 = 2;
    const S_LE: u8 = 3;
    const JMP: u8 = 1;
    const BLOCK: usize = 20;
    const LAST_BLOCK: usize = 16;
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return Vec::new();
    }
    let total = BLOCK * (ports.len() - 1) + LAST_BLOCK;
    let mut code = Vec::with_capacity(total);
    let op = |code: &mut Vec<u8>, kind: u8, yes: usize, no: usize| {
        code.push(kind);
        code.push(yes as u8);
        code.extend_from_slice(&(no as u16).to_ne_bytes());
    };
    for (i, &port) in ports.iter().enumerate() {
        let start = code.len();
        let last = i + 1 == ports.len();
        // Where a failed comparison goes: the next port's block, or past the end (reject).
        let next = if last { total + 4 } else { start + BLOCK };
        op(&mut code, S_GE, 8, next - start);
        op(&mut code, 0, 0, usize::from(port));
        op(&mut code, S_LE, 8, next - (start + 8));
        op(&mut code, 0, 0, usize::from(port));
        if !last {
            op(&mut code, JMP, 4, total - (start + 16));
        }
    }
    debug_assert_eq!(code.len(), total);
    code
}

/// Reads the dump's replies up to NLMSG_DONE.
fn receive(netlink: &OwnedFd, sequence: u32) -> io::Result<Vec<Socket>> {
    let mut sockets = Vec::new();
    // Larger than the kernel's dump batches (NLMSG_GOODSIZE, one page up to 8 KiB, or 32 KiB
    // when the reader's buffer allows): a datagram never arrives truncated.
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let (length, from) = retry(|| recvfrom::<NetlinkAddr>(netlink.as_raw_fd(), &mut buffer))?;
        // Only the kernel's replies (port id 0): the kernel refuses other processes' messages
        // to a sock_diag socket unless they are root, and root needs no trick.
        if from.is_some_and(|from| from.pid() != 0) {
            continue;
        }
        for (kind, message_sequence, payload) in messages(&buffer[..length])? {
            if message_sequence != sequence {
                continue;
            }
            match i32::from(kind) {
                // A dump that failed midway says so in NLMSG_DONE's payload.
                libc::NLMSG_DONE => {
                    return match error_of(payload) {
                        errno if errno > 0 => Err(io::Error::from_raw_os_error(errno)),
                        _ => Ok(sockets),
                    };
                }
                libc::NLMSG_ERROR => match error_of(payload) {
                    0 => {}
                    errno => return Err(io::Error::from_raw_os_error(errno)),
                },
                _ if kind == SOCK_DIAG_BY_FAMILY => sockets.extend(parse_socket(payload)),
                _ => {}
            }
        }
    }
}

/// `call`, again when a signal handler interrupted it (a handler installed without
/// SA_RESTART, in graceful-run or a library).
fn retry<T>(mut call: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match call() {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other,
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One `inet_diag_msg` and its attributes.
fn parse_socket(payload: &[u8]) -> Option<Socket> {
    if payload.len() < DIAG_MSG {
        return None;
    }
    let u32_at = |at: usize| u32::from_ne_bytes(payload[at..at + 4].try_into().expect("4 bytes"));
    let family = payload[0];
    let state = TcpState::from_raw(payload[1])?;
    let sport = u16::from_be_bytes([payload[4], payload[5]]);
    let dport = u16::from_be_bytes([payload[6], payload[7]]);
    let address = |at: usize| -> Option<IpAddr> {
        match i32::from(family) {
            libc::AF_INET => {
                let b: [u8; 4] = payload[at..at + 4].try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            }
            libc::AF_INET6 => {
                let b: [u8; 16] = payload[at..at + 16].try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        }
    };
    let local = SocketAddr::new(address(8)?, sport);
    let peer = SocketAddr::new(address(24)?, dport);
    let cookie = u64::from(u32_at(44)) | u64::from(u32_at(48)) << 32;
    let mut info = None;
    let mut attributes = &payload[DIAG_MSG..];
    while attributes.len() >= 4 {
        let length = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]);
        if length < 4 || length > attributes.len() {
            break;
        }
        if kind == INET_DIAG_INFO {
            info = TcpInfo::parse(&attributes[4..length]);
        }
        attributes = &attributes[align4(length).min(attributes.len())..];
    }
    Some(Socket {
        state,
        local,
        peer,
        rqueue: u32_at(56),
        wqueue: u32_at(60),
        uid: u32_at(64),
        inode: u64::from(u32_at(68)),
        cookie,
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    fn inode(fd: BorrowedFd<'_>) -> u64 {
        nix::sys::stat::fstat(fd).expect("fstat").st_ino
    }

    #[test]
    fn port_filter_is_linear_and_ends_where_the_audit_wants() {
        assert!(port_filter(&[]).is_empty());
        let one = port_filter(&[8080]);
        assert_eq!(one.len(), 16);
        // S_GE 8080: yes 8, no past the end (16 + 4).
        assert_eq!(&one[0..4], &[2, 8, 20, 0]);
        assert_eq!(&one[6..8], &8080u16.to_ne_bytes());
        // S_LE 8080 at 8: yes 8 (the end: accept), no past the end.
        assert_eq!(&one[8..12], &[3, 8, 12, 0]);
        let two = port_filter(&[9000, 8080, 9000]);
        assert_eq!(two.len(), 36, "duplicates are merged");
        // First block: S_GE 8080 fails to the second block (20), JMP to the end (36 - 16).
        assert_eq!(&two[0..4], &[2, 8, 20, 0]);
        assert_eq!(&two[16..20], &[1, 4, 20, 0]);
    }

    /// A listener, a connection to it, its bytes: the dump shows them with the numbers
    /// that TCP_INFO and fstat give.
    #[test]
    fn a_dump_finds_a_listener_and_a_connection_with_their_counters() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("loopback");
        let port = listener.local_addr().expect("bound").port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connects");
        let _queued = TcpStream::connect(("127.0.0.1", port)).expect("connects");
        let (mut server, _) = listener.accept().expect("accepts");
        client.write_all(b"hello").expect("writes");
        // Wait until the server side has received the five bytes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while tcp_info(server.as_fd())
            .expect("TCP_INFO")
            .bytes_received
            .unwrap_or(0)
            < 5
        {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        let sockets = dump(
            AddressFamily::Inet,
            States::LISTEN.union(States::CONNECTED),
            &[port],
        )
        .expect("any user may dump");
        let listening = sockets
            .iter()
            .find(|s| s.state == TcpState::Listen)
            .expect("the listener is there");
        assert_eq!(listening.inode, inode(listener.as_fd()));
        assert_eq!(listening.rqueue, 1, "one connection waits to be accepted");
        let info = tcp_info(listener.as_fd()).expect("TCP_INFO on a listener");
        assert_eq!(info.unacked, 1, "TCP_INFO says the same");
        assert_eq!(info.state, TcpState::Listen as u8);

        let accepted = sockets
            .iter()
            .find(|s| s.inode == inode(server.as_fd()))
            .expect("the accepted connection is there");
        assert_eq!(accepted.state, TcpState::Established);
        assert_eq!(accepted.local.port(), port);
        assert_eq!(accepted.peer, client.local_addr().expect("bound"));
        assert_eq!(accepted.rqueue, 5, "five bytes unread");
        let info = accepted.info.expect("tcp_info comes with it");
        assert_eq!(info.bytes_received, Some(5));
        assert_eq!(info.bytes_acked, Some(0));
        // Only sockets on this port: the client's own end has another local port.
        assert!(sockets.iter().all(|s| s.local.port() == port));

        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).expect("reads");
        server.write_all(b"bye").expect("writes");
        let mut got = [0u8; 3];
        client.read_exact(&mut got).expect("reads");
        let info = tcp_info(server.as_fd()).expect("TCP_INFO");
        assert_eq!(info.bytes_sent, Some(3));
        let sockets = dump(AddressFamily::Inet, States::CONNECTED, &[port]).expect("dumps");
        let accepted = sockets
            .iter()
            .find(|s| s.inode == inode(server.as_fd()))
            .expect("still there");
        assert_eq!(accepted.rqueue, 0, "read");
    }

    /// A connection found in a dump is found again by its 4-tuple and cookie, IPv4 and
    /// IPv6; a wrong cookie or a closed connection is not (even though a lookup by 4-tuple
    /// alone would fall back to the listener).
    #[test]
    fn a_lookup_finds_a_connection_by_its_four_tuple_and_cookie() {
        for (family, host) in [
            (AddressFamily::Inet, "127.0.0.1"),
            (AddressFamily::Inet6, "::1"),
        ] {
            let listener = TcpListener::bind((host, 0)).expect("loopback");
            let port = listener.local_addr().expect("bound").port();
            let mut client = TcpStream::connect((host, port)).expect("connects");
            let (server, _) = listener.accept().expect("accepts");
            client.write_all(b"abc").expect("writes");
            let server_inode = inode(server.as_fd());
            let dumped = dump(family, States::CONNECTED, &[port])
                .expect("dumps")
                .into_iter()
                .find(|s| s.inode == server_inode)
                .expect("the server end is there");
            let key = (dumped.local, dumped.peer, dumped.cookie);
            let found = lookup(&[key]).expect("looks up");
            assert_eq!(found.len(), 1, "{host}");
            assert_eq!(found[0].inode, server_inode);
            assert_eq!(found[0].info.and_then(|i| i.bytes_received), Some(3));
            let stale = (dumped.local, dumped.peer, dumped.cookie ^ 1);
            assert!(lookup(&[stale]).expect("looks up").is_empty(), "{host}");
            // Many at once: batches, in order.
            let many = vec![key; 70];
            assert_eq!(lookup(&many).expect("looks up").len(), 70);
            drop(server);
            drop(client);
            // Both ends closed: the server end goes through FIN states, then is gone; a
            // lookup of its 4-tuple must not return the listener.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let left = lookup(&[key]).expect("looks up");
                if left.is_empty() {
                    break;
                }
                assert!(left.iter().all(|s| s.state != TcpState::Listen));
                assert!(std::time::Instant::now() < deadline, "{left:?}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }

    #[test]
    fn a_dump_of_several_ports_and_of_all() {
        let a = TcpListener::bind("127.0.0.1:0").expect("loopback");
        let b = TcpListener::bind("127.0.0.1:0").expect("loopback");
        let c = TcpListener::bind("127.0.0.1:0").expect("loopback");
        let port = |l: &TcpListener| l.local_addr().expect("bound").port();
        let found = |sockets: &[Socket], l: &TcpListener| {
            sockets.iter().any(|s| s.inode == inode(l.as_fd()))
        };
        let sockets =
            dump(AddressFamily::Inet, States::LISTEN, &[port(&a), port(&c)]).expect("dumps");
        assert!(found(&sockets, &a) && found(&sockets, &c) && !found(&sockets, &b));
        let all = dump(AddressFamily::Inet, States::LISTEN, &[]).expect("dumps");
        assert!(found(&all, &a) && found(&all, &b) && found(&all, &c));
    }
}
