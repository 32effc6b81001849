//! Steering: a listener per generation (or worker) for each TCP `-l`, all in one
//! `SO_REUSEPORT` group that graceful-run alone creates, and a classic BPF program that says
//! which of them gets each new connection (issue 16).
//!
//! # The kernel's side, as measured on Linux 6.18 (as root and as `nobody`, same results)
//!
//! - **A group and its indices.** Sockets of the same user bound to the same address and
//!   port with `SO_REUSEPORT` set when they `listen()` form one group; each has its own accept
//!   queue. The group is an array: a socket joins at the end (index = number of members). A
//!   member leaves when its *last* fd closes (or on `shutdown()`, below), and the kernel then
//!   moves the **last** member into its slot (`reuseport_detach_sock`): closing member 1 of
//!   4 makes member 3 index 1.
//! - **The program.** `SO_ATTACH_REUSEPORT_CBPF` on any member attaches a classic BPF program
//!   to the whole group (attaching again replaces it, atomically for new connections). It
//!   runs on each connection's SYN and returns an index; an index past the end falls back to
//!   the kernel's hash. No privilege is needed (Linux 4.6+ for TCP). The request socket
//!   created by the SYN stays tied to the member chosen, so the handshake's last ACK and
//!   any SYN retransmission land on the same queue: a connection never changes member once
//!   chosen, even if the program changes meanwhile.
//! - **Spreading.** `ret #k` sends every new connection to member k (20 of 20 in each test).
//!   To spread over several members the program draws `ld rand` (`SKF_AD_RANDOM`, a fresh
//!   random number per packet) modulo their number, then maps the draw to a member: 2000
//!   loopback connections over 4 members gave 515/507/479/499, over members 3 and 1
//!   976/1024 and none elsewhere (`a_spread_over_four_members_is_balanced`). The source port
//!   is no good: Linux gives `connect()` even ports first, so `sport % 4` put 199 and 201 of
//!   400 on members 0 and 2 and none on 1 and 3. The kernel's own hash (no program, or an
//!   index past the end) is balanced on loopback here too (504/511/481/504), but it spreads
//!   over every member, not a chosen few.
//! - **A probe.** The program can read the TCP header through `SKF_NET_OFF` (the packet's
//!   data starts after the TCP header when it runs): `ldxb 4*([net+0]&0xf); ldh
//!   [net+x+0]` is the source port of an IPv4 packet, `ldh [net+40]` of an IPv6 one. A
//!   connection graceful-run makes from a port it bound itself then reaches a chosen member
//!   while every other connection is spread: 1 probe went to member 2 while 10 clients went
//!   to member 0. That lets graceful-run reach one specific generation before any client
//!   does (an HTTP health check, or readiness seen as that listener's queue emptying).
//! - **Exclusivity.** Member 0 is bound *without* `SO_REUSEPORT` (a bind of the address by
//!   anybody else then fails with EADDRINUSE, as before steering existed, and so does
//!   graceful-run's own bind if the address is taken), and `SO_REUSEPORT` is set between
//!   `bind()` and `listen()`, so that it forms the group and later members can join. Then:
//!   a socket without `SO_REUSEPORT` cannot bind the address (a second graceful-run is
//!   refused: its member 0 binds without it), nor can a socket of another user with it. A
//!   program of the *same* user that sets `SO_REUSEPORT` can join the group: nothing stops
//!   that (clearing the option on the members after `listen()` does not, the bind bucket
//!   keeps allowing reuse). [`Group::strangers`] finds such a listener in `sock_diag`.
//! - **Leaving on purpose.** `shutdown(SHUT_RD)` on a listener takes it out of the group at
//!   once, whoever else holds an fd of it; their `accept()` then fails with EINVAL, and the
//!   connections still queued on it are reset. [`Group::close_last`] uses it, so that a
//!   leftover process that kept a retired member open cannot keep its index occupied and
//!   later make the kernel move members behind graceful-run's back.
//!
//! # graceful-run's side
//!
//! graceful-run keeps its own fd of every member open for the whole service, so a member
//! never leaves the group because a child closed its copy or exited: the indices change only
//! when graceful-run says so, and it only ever removes the *last* member
//! ([`Group::close_last`]), so no member ever moves. The indices are thus exactly positions
//! in [`Group`]'s list. Members are reused: a retired generation's member, once its
//! processes are gone, can be handed to the next generation; connections still queued on it
//! are accepted by the new holder.
//!
//! `-l HOST:0`: member 0's bind picks the port; every later member binds that port (the
//! group's address is read back from member 0 with `getsockname`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::libc;
use nix::sys::socket::{
    AddressFamily, Shutdown, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrLike,
    SockaddrStorage, bind, getsockname, getsockopt, setsockopt, shutdown, socket, sockopt,
};

use crate::sock_diag::{self, Socket, States, TcpState};

/// One member: graceful-run's own fd of it, and its inode (what /proc and sock_diag call it).
struct Member {
    fd: OwnedFd,
    inode: u64,
}

/// The listeners of one TCP `-l`, in the order of the kernel's group array.
pub struct Group {
    /// What every member binds: member 0's address, with the port its bind chose.
    address: SocketAddr,
    v6only: bool,
    /// Member 0's backlog as the kernel keeps it (clamped to `net.core.somaxconn`).
    backlog: i32,
    members: Vec<Member>,
}

/// Where the connections after a [`Group::steer`] go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Steering {
    /// New connections are spread evenly (at random) over these members; one member takes
    /// them all. Empty: the kernel's own choice (its hash over every member).
    pub spread: Vec<usize>,
    /// A connection from this local port (graceful-run's own probe) goes to this member.
    pub probe: Option<Probe>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub source_port: u16,
    pub member: usize,
}

impl Steering {
    /// Every new connection to `member`.
    pub fn to(member: usize) -> Steering {
        Steering {
            spread: vec![member],
            probe: None,
        }
    }

    /// Spread over `members`.
    pub fn over(members: &[usize]) -> Steering {
        Steering {
            spread: members.to_vec(),
            probe: None,
        }
    }

    /// And the connection from `source_port` to `member`.
    pub fn with_probe(mut self, source_port: u16, member: usize) -> Steering {
        self.probe = Some(Probe {
            source_port,
            member,
        });
        self
    }
}

impl Group {
    /// The group of the TCP listener `first`, which becomes member 0. graceful-run keeps a
    /// duplicate of the fd (the caller keeps its own).
    ///
    /// `first` must be listening with `SO_REUSEPORT` set, having been bound without it (see
    /// the module doc; `listen::Listeners::bind_with` does that): otherwise another socket
    /// of the same user could have joined before graceful-run, or no group exists.
    pub fn new(first: BorrowedFd<'_>) -> io::Result<Group> {
        let address = local_address(first)?;
        if !getsockopt(&first, sockopt::AcceptConn)? {
            return Err(io::Error::other("not a listening socket"));
        }
        if !getsockopt(&first, sockopt::ReusePort)? {
            return Err(io::Error::other("SO_REUSEPORT is not set"));
        }
        let v6only = match address {
            SocketAddr::V6(_) => getsockopt(&first, sockopt::Ipv6V6Only)?,
            SocketAddr::V4(_) => false,
        };
        // TCP_INFO on a listener: `sacked` is its backlog limit as the kernel applied it.
        let backlog = sock_diag::tcp_info(first)?.sacked.min(i32::MAX as u32) as i32;
        let fd = first.try_clone_to_owned()?;
        let inode = inode_of(fd.as_fd())?;
        Ok(Group {
            address,
            v6only,
            backlog,
            members: vec![Member { fd, inode }],
        })
    }

    /// The address every member listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where graceful-run's own probe connection should go: the group's address, or for a
    /// wildcard one a loopback address it covers (IPv4's for `0.0.0.0` and for a
    /// dual-stack `[::]`, whose program reads IPv4 packets as well). To probe member `i`:
    /// bind a socket of the target's family to port 0 (`tokio::net::TcpSocket::bind`), read
    /// its port, [`Group::steer`] with [`Steering::with_probe`]`(port, i)`, then connect.
    pub fn probe_target(&self) -> SocketAddr {
        let ip = match self.address.ip() {
            IpAddr::V6(v6) if v6.is_unspecified() && self.v6only => {
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            }
            ip if ip.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.address.port())
    }

    /// How many members the group has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Never true: member 0 lives as long as the group.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// A new member, bound to the group's address, listening; its index is returned (the
    /// old number of members: the kernel puts it at the end). That holds while only
    /// graceful-run adds members: a program of the same user that joined the group (see
    /// [`Group::strangers`]) took an index graceful-run does not know, so check for strangers
    /// after adding a member and before steering to it.
    pub fn add(&mut self) -> io::Result<usize> {
        let fd = member_socket(self.address, self.v6only, self.backlog)?;
        let inode = inode_of(fd.as_fd())?;
        self.members.push(Member { fd, inode });
        Ok(self.members.len() - 1)
    }

    /// graceful-run's fd of member `index`, to pass to a child (as fd 3, ...). Panics if there
    /// is no such member.
    pub fn fd(&self, index: usize) -> BorrowedFd<'_> {
        self.members[index].fd.as_fd()
    }

    /// Member `index`'s inode, as /proc/PID/fd (`socket:[INODE]`) and sock_diag show it.
    pub fn inode(&self, index: usize) -> u64 {
        self.members[index].inode
    }

    /// Every member's inode, by index.
    pub fn inodes(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.inode).collect()
    }

    /// Clears O_NONBLOCK on member `index` before it is passed to a child: the flag lives on
    /// the open file description, which graceful-run shares with every holder, and a
    /// previous holder (an event-loop server) may have set it.
    pub fn reset_blocking(&self, index: usize) -> io::Result<()> {
        let fd = &self.members[index].fd;
        let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
        if flags.contains(OFlag::O_NONBLOCK) {
            fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
        }
        Ok(())
    }

    /// Attaches the program for `steering` to the group, replacing the previous one. From
    /// the moment this returns, every new connection's SYN is placed by it; handshakes
    /// already begun stay with the member chosen for them (see [`SynSnapshot`]).
    ///
    /// [`SynSnapshot`]: crate::observe::SynSnapshot
    pub fn steer(&self, steering: &Steering) -> io::Result<()> {
        let members = self.members.len();
        let outside = steering
            .spread
            .iter()
            .copied()
            .chain(steering.probe.map(|p| p.member))
            .find(|&index| index >= members);
        if let Some(index) = outside {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no member {index} (the group has {members})"),
            ));
        }
        let program = program(self.address.is_ipv6(), steering);
        attach(self.members[0].fd.as_fd(), &program)
    }

    /// How many connections wait in member `index`'s accept queue (established, not yet
    /// accepted by its holder).
    pub fn queue_len(&self, index: usize) -> io::Result<u32> {
        Ok(sock_diag::tcp_info(self.members[index].fd.as_fd())?.unacked)
    }

    /// Removes the last member from the group and closes graceful-run's fd of it.
    ///
    /// It leaves the group at once, even if a leftover process still holds an fd of it
    /// (`shutdown`, see the module doc): that process's `accept()` then fails. Refused while
    /// connections wait in its queue (they would be reset: give the member to a holder that
    /// accepts them, or wait for it to drain), and for member 0, which lives as long as the
    /// group. Returns the index that was removed.
    pub fn close_last(&mut self) -> io::Result<usize> {
        let index = self.members.len() - 1;
        if index == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "member 0 lives as long as the group",
            ));
        }
        let queued = self.queue_len(index)?;
        if queued > 0 {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{queued} connections wait in member {index}'s queue"),
            ));
        }
        let member = self.members.pop().expect("index >= 1 exists");
        match shutdown(member.fd.as_raw_fd(), Shutdown::Read) {
            // ENOTCONN: it already stopped listening (a holder shut it down): out already.
            Ok(()) | Err(Errno::ENOTCONN) => Ok(index),
            Err(e) => {
                self.members.push(member);
                Err(e.into())
            }
        }
    }

    /// Listeners on the group's port that graceful-run did not create and that could take
    /// its connections: the same address, or one of the two is a wildcard (a more specific
    /// address wins over a wildcard one in the kernel's lookup). Another user cannot bind
    /// there; a program of graceful-run's user that sets `SO_REUSEPORT` can, and would then
    /// sit in the group and shift the indices.
    pub fn strangers(&self) -> io::Result<Vec<Socket>> {
        let ours = self.inodes();
        let mut found = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let listeners = match sock_diag::dump(family, States::LISTEN, &[self.address.port()]) {
                Ok(listeners) => listeners,
                // No IPv6 in this kernel or namespace: nobody listens there.
                Err(e) if family == AddressFamily::Inet6 && e.raw_os_error().is_some() => {
                    continue;
                }
                Err(e) => return Err(e),
            };
            found.extend(listeners.into_iter().filter(|socket| {
                socket.state == TcpState::Listen
                    && !ours.contains(&socket.inode)
                    && overlaps(socket.local.ip(), self.address.ip())
            }));
        }
        Ok(found)
    }
}

/// Whether a listener on `theirs` takes connections meant for `ours` (same port).
fn overlaps(theirs: IpAddr, ours: IpAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (theirs, ours) = (canonical(theirs), canonical(ours));
    theirs == ours || theirs.is_unspecified() || ours.is_unspecified()
}

/// Whether steering works here, found once per process: some kernels (before 4.6), seccomp
/// filters and sandboxes (gVisor) refuse `SO_ATTACH_REUSEPORT_CBPF` or ignore it for TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    Yes,
    /// Why not, for the one log line that says graceful-run uses the shared socket instead.
    No(String),
}

/// Checks (once; later calls return the first answer) that a program of the shapes
/// [`Group::steer`] attaches is accepted and obeyed: a private group of two listeners on
/// 127.0.0.1, a program with a probe rule that sends every connection to member 1, and a
/// connection that must land there. Without a loopback interface the check stops at the
/// attach, which old kernels already refuse.
pub fn supported() -> Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(check_support).clone()
}

fn check_support() -> Support {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let first = match member_socket(loopback, false, 8) {
        Ok(fd) => fd,
        Err(e) => return Support::No(format!("cannot make a test listener on 127.0.0.1: {e}")),
    };
    let address = match local_address(first.as_fd()) {
        Ok(address) => address,
        Err(e) => return Support::No(format!("getsockname: {e}")),
    };
    let second = match member_socket(address, false, 8) {
        Ok(fd) => fd,
        Err(e) => return Support::No(format!("cannot make a second SO_REUSEPORT listener: {e}")),
    };
    // Every instruction kind `program` emits: the probe rule's header loads, the random draw
    // and the table (both entries name member 1).
    let steering = Steering::over(&[1, 1]).with_probe(1, 1);
    if let Err(e) = attach(first.as_fd(), &program(false, &steering)) {
        return Support::No(format!("SO_ATTACH_REUSEPORT_CBPF: {e}"));
    }
    match connect_nonblocking(address) {
        // The handshake completes within the connect on loopback; poll covers the rest.
        Ok(_client) => {
            let queued = |fd: &OwnedFd| sock_diag::tcp_info(fd.as_fd()).map(|i| i.unacked);
            match (queued(&first), queued(&second)) {
                (Ok(0), Ok(1)) => Support::Yes,
                (Ok(a), Ok(b)) => Support::No(format!(
                    "the kernel ignores the steering program for TCP (a test connection went \
                     to the wrong listener: {a} and {b} queued)"
                )),
                (Err(e), _) | (_, Err(e)) => Support::No(format!("TCP_INFO: {e}")),
            }
        }
        // No loopback to test with: the attach worked, which old kernels refuse.
        Err(_) => Support::Yes,
    }
}

/// A connection to `address` that is established within a second, or an error.
fn connect_nonblocking(address: SocketAddr) -> io::Result<OwnedFd> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let SocketAddr::V4(v4) = address else {
        return Err(io::Error::other("IPv4 only"));
    };
    match nix::sys::socket::connect(fd.as_raw_fd(), &SockaddrIn::from(v4)) {
        Ok(()) => return Ok(fd),
        Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
    if poll(&mut fds, PollTimeout::from(1000u16))? == 0 {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    match getsockopt(&fd, sockopt::SocketError)? {
        0 => Ok(fd),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// A listener that joins the group at `address`: `SO_REUSEADDR` (as member 0 has, so that
/// TIME_WAIT connections of a previous graceful-run do not block it) and `SO_REUSEPORT`.
fn member_socket(address: SocketAddr, v6only: bool, backlog: i32) -> io::Result<OwnedFd> {
    let family = match address {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    if family == AddressFamily::Inet6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &v6only)?;
    }
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    match address {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
        SocketAddr::V6(v6) => bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?,
    }
    // SAFETY: listen(2) on a socket fd we own; no memory is passed.
    Errno::result(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

fn local_address(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    let storage: SockaddrStorage = getsockname(fd.as_raw_fd())?;
    if let Some(v4) = storage.as_sockaddr_in() {
        return Ok(SocketAddr::from(*v4));
    }
    if let Some(v6) = storage.as_sockaddr_in6() {
        return Ok(SocketAddr::from(*v6));
    }
    Err(io::Error::other(format!(
        "not an IP socket (family {:?})",
        storage.family()
    )))
}

fn inode_of(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(nix::sys::stat::fstat(fd)?.st_ino)
}

/// Attaches `program` to the group `fd` belongs to.
fn attach(fd: BorrowedFd<'_>, program: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::Error::other("program too long"))?,
        // The kernel copies the program during the call; `program` outlives it.
        filter: program.as_ptr().cast_mut(),
    };
    setsockopt(&fd, sockopt::AttachReusePortCbpf, &fprog)?;
    Ok(())
}

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LDX_B_MSH: u16 = 0xb1;
const ALU_RSH_K: u16 = 0x74;
const ALU_MOD_K: u16 = 0x94;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
/// `SKF_NET_OFF`: loads relative to the network (IP) header.
const NET: u32 = libc::SKF_NET_OFF as u32;
/// `SKF_AD_OFF + SKF_AD_RANDOM`: a random 32-bit number.
const RANDOM: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32;
/// An index no group reaches: the kernel falls back to its hash.
const HASH: u32 = u32::MAX;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The classic BPF program for `steering`. `ipv6`: the group is an IPv6 socket, which may
/// also receive IPv4 packets (dual-stack `[::]`), so the probe rule reads the IP version
/// first; an IPv4 group sees only IPv4.
fn program(ipv6: bool, steering: &Steering) -> Vec<libc::sock_filter> {
    let mut code = Vec::new();
    if let Some(probe) = steering.probe {
        // A = the TCP source port.
        if ipv6 {
            code.extend([
                op(LD_B_ABS, 0, 0, NET),
                op(ALU_RSH_K, 0, 0, 4),
                // IPv6: the next instruction; IPv4: two further on.
                op(JMP_JEQ_K, 0, 2, 6),
                op(LD_H_ABS, 0, 0, NET + 40),
                op(JMP_JA, 0, 0, 2),
            ]);
        }
        code.extend([
            // X = the IPv4 header's length; A = the 16 bits after it.
            op(LDX_B_MSH, 0, 0, NET),
            op(LD_H_IND, 0, 0, NET),
            op(JMP_JEQ_K, 0, 1, u32::from(probe.source_port)),
            op(RET_K, 0, 0, probe.member as u32),
        ]);
    }
    match steering.spread.as_slice() {
        [] => code.push(op(RET_K, 0, 0, HASH)),
        [one] => code.push(op(RET_K, 0, 0, *one as u32)),
        many => {
            code.extend([
                op(LD_W_ABS, 0, 0, RANDOM),
                op(ALU_MOD_K, 0, 0, many.len() as u32),
            ]);
            let (last, rest) = many.split_last().expect("at least two");
            for (i, &member) in rest.iter().enumerate() {
                code.extend([
                    op(JMP_JEQ_K, 0, 1, i as u32),
                    op(RET_K, 0, 0, member as u32),
                ]);
            }
            code.push(op(RET_K, 0, 0, *last as u32));
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_member_is_one_instruction() {
        let code = program(false, &Steering::to(3));
        assert_eq!(code.len(), 1);
        assert_eq!((code[0].code, code[0].k), (RET_K, 3));
        assert_eq!(program(true, &Steering::over(&[]))[0].k, HASH);
    }

    #[test]
    fn a_spread_is_a_random_draw_and_a_table() {
        let code = program(false, &Steering::over(&[4, 1, 7]));
        let summary: Vec<(u16, u8, u8, u32)> =
            code.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        assert_eq!(
            summary,
            vec![
                (LD_W_ABS, 0, 0, RANDOM),
                (ALU_MOD_K, 0, 0, 3),
                (JMP_JEQ_K, 0, 1, 0),
                (RET_K, 0, 0, 4),
                (JMP_JEQ_K, 0, 1, 1),
                (RET_K, 0, 0, 1),
                (RET_K, 0, 0, 7),
            ]
        );
    }

    #[test]
    fn overlapping_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        assert!(overlaps(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(overlaps(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(overlaps(ip("10.0.0.1"), ip("::")));
        assert!(overlaps(ip("::ffff:127.0.0.1"), ip("127.0.0.1")));
        assert!(!overlaps(ip("127.0.0.2"), ip("127.0.0.1")));
    }
}
