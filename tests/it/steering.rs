//! Steering's kernel facts and graceful-run's layer over them (`listen::steer`, `observe`,
//! `sock_diag`), with real sockets and real connections on loopback: where connections
//! queue, how evenly they spread, how the kernel renumbers a group, who may bind the address,
//! how real connections are classified, and where handshakes in flight end up.
//!
//! Every test here runs as the invoking user and, when that is root, once more as `nobody`
//! ([`the_same_facts_hold_for_nobody`]): steering must need no privilege.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use graceful_run::accepting::Scope;
use graceful_run::listen::steer::{Group, Steering, Support, supported};
use graceful_run::listen::{ListenSpec, Listeners};
use graceful_run::observe::{self, Activity, Busy, Idle, SynSnapshot};
use graceful_run::sock_diag::{self, States, TcpState};
use nix::libc;
use nix::sys::socket::{
    AddressFamily, Shutdown, SockFlag, SockType, SockaddrIn, accept4, bind, setsockopt, shutdown,
    socket, sockopt,
};
use nix::unistd::Pid;

use crate::support::{DEADLINE, Gr, code, graceful_run_bin, poll_until, probe, run_to_end};

// ----- helpers --------------------------------------------------------------------------------

/// A group founded on `spec` the way graceful-run founds it (an exclusive bind, then
/// SO_REUSEPORT before listen), and the listener that holds member 0.
fn group_on(spec: &str) -> (Listeners, Group) {
    let spec: ListenSpec = spec.parse().expect("a valid spec");
    let listeners = Listeners::bind_with(&[spec], true).expect("the address is free");
    let first = listeners
        .iter()
        .next()
        .and_then(|l| l.fd())
        .expect("one open listener");
    let group = Group::new(first).expect("a group can be founded on it");
    (listeners, group)
}

/// A group of `members` on a free loopback port.
fn loopback_group(members: usize) -> (Listeners, Group) {
    let (listeners, mut group) = group_on("127.0.0.1:0");
    for expected in 1..members {
        assert_eq!(group.add().expect("a member joins"), expected);
    }
    (listeners, group)
}

fn queues(group: &Group) -> Vec<u32> {
    (0..group.len())
        .map(|i| group.queue_len(i).expect("TCP_INFO on our own listener"))
        .collect()
}

/// Opens `n` connections to `address` and waits until the server side has queued all of them
/// (loopback completes the handshake asynchronously, just after connect returns).
fn connect_and_settle(group: &Group, n: usize) -> Vec<TcpStream> {
    let before: u32 = queues(group).iter().sum();
    let clients: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(group.address()).expect("the group listens"))
        .collect();
    poll_until("every connection is queued", || {
        queues(group).iter().sum::<u32>() == before + n as u32
    });
    clients
}

/// Accepts (and closes) everything queued on every member.
fn drain(group: &Group) {
    for (index, queued) in queues(group).into_iter().enumerate() {
        for _ in 0..queued {
            let fd = accept4(group.fd(index).as_raw_fd(), SockFlag::SOCK_CLOEXEC)
                .expect("a queued connection is there");
            // SAFETY: accept4 returned a new fd that nothing else owns.
            drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }
    assert_eq!(queues(group).iter().sum::<u32>(), 0);
}

/// A raw member of the group at `address`: SO_REUSEPORT, bound, listening. For the kernel
/// facts, independent of `Group`.
fn raw_member(address: SocketAddr) -> OwnedFd {
    let SocketAddr::V4(v4) = address else {
        panic!("IPv4 only")
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("a socket");
    setsockopt(&fd, sockopt::ReusePort, &true).expect("SO_REUSEPORT");
    bind(fd.as_raw_fd(), &SockaddrIn::from(v4)).expect("joins the group");
    // SAFETY: listen(2) on a socket fd we own.
    assert_eq!(unsafe { libc::listen(fd.as_raw_fd(), 128) }, 0);
    fd
}

/// `ret #index`, attached to the group of `fd` (raw, for the kernel facts).
fn attach_ret(fd: BorrowedFd<'_>, index: u32) {
    let program = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: index,
    }];
    let fprog = libc::sock_fprog {
        len: 1,
        filter: program.as_ptr().cast_mut(),
    };
    setsockopt(&fd, sockopt::AttachReusePortCbpf, &fprog).expect("SO_ATTACH_REUSEPORT_CBPF");
}

fn raw_queue(fd: BorrowedFd<'_>) -> u32 {
    sock_diag::tcp_info(fd).expect("TCP_INFO").unacked
}

fn raw_queues(fds: &[&OwnedFd]) -> Vec<u32> {
    fds.iter().map(|fd| raw_queue(fd.as_fd())).collect()
}

fn raw_connect(address: SocketAddr, n: usize, fds: &[&OwnedFd]) -> Vec<TcpStream> {
    let before: u32 = raw_queues(fds).iter().sum();
    let clients = (0..n)
        .map(|_| TcpStream::connect(address).expect("listens"))
        .collect();
    poll_until("every connection is queued", || {
        raw_queues(fds).iter().sum::<u32>() == before + n as u32
    });
    clients
}

fn raw_drain(fd: BorrowedFd<'_>) {
    for _ in 0..raw_queue(fd) {
        let accepted = accept4(fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC).expect("queued");
        // SAFETY: accept4 returned a new fd that nothing else owns.
        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(accepted) });
    }
}

fn inode(fd: BorrowedFd<'_>) -> u64 {
    nix::sys::stat::fstat(fd).expect("fstat").st_ino
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// ----- steering -------------------------------------------------------------------------------

#[test]
fn steering_is_supported_here() {
    assert_eq!(supported(), Support::Yes);
}

/// `Steering::to(k)`: every new connection queues on member k, whichever it is.
#[test]
fn steered_connections_queue_on_the_chosen_member() {
    let (_listeners, group) = loopback_group(3);
    for member in [2, 0, 1] {
        group.steer(&Steering::to(member)).expect("attaches");
        let _clients = connect_and_settle(&group, 20);
        let mut expected = vec![0; 3];
        expected[member] = 20;
        assert_eq!(queues(&group), expected, "steered to {member}");
        // sock_diag sees the same queue on the same listener.
        let listeners = sock_diag::dump(
            AddressFamily::Inet,
            States::LISTEN,
            &[group.address().port()],
        )
        .expect("dumps");
        let seen = listeners
            .iter()
            .find(|s| s.inode == group.inode(member))
            .expect("the member is in the dump");
        assert_eq!(seen.rqueue, 20);
        drain(&group);
    }
    // An index past the end is refused before anything is attached.
    let error = group.steer(&Steering::to(3)).expect_err("no member 3");
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
}

/// New connections spread at random over the chosen members: 2000 over 4 members give each
/// 20 to 30 % (an even draw has a standard deviation of 1 %), and members left out get none.
#[test]
fn a_spread_over_four_members_is_balanced() {
    let (_listeners, group) = loopback_group(4);
    let total = 2000;
    let count = |steering: Steering| {
        group.steer(&steering).expect("attaches");
        let mut landed = vec![0u32; 4];
        for _ in 0..total / 250 {
            let _clients = connect_and_settle(&group, 250);
            for (sum, queued) in landed.iter_mut().zip(queues(&group)) {
                *sum += queued;
            }
            drain(&group);
        }
        landed
    };
    let all = count(Steering::over(&[0, 1, 2, 3]));
    eprintln!("2000 connections over 4 members: {all:?}");
    for share in &all {
        assert!(
            (400..=600).contains(share),
            "unbalanced spread over 4 members: {all:?}"
        );
    }
    let two = count(Steering::over(&[3, 1]));
    eprintln!("2000 connections over members 3 and 1: {two:?}");
    assert_eq!((two[0], two[2]), (0, 0), "{two:?}");
    assert!((800..=1200).contains(&two[1]), "{two:?}");
    // The kernel's own hash, for comparison (not asserted: it depends on the ports).
    let hashed = count(Steering::over(&[]));
    eprintln!("2000 connections, the kernel's hash: {hashed:?}");
    assert_eq!(hashed.iter().sum::<u32>(), total as u32);
}

/// One connection from a port graceful-run bound itself goes to the probe's member while
/// every other one is spread elsewhere: over IPv4, IPv6, and IPv4 clients of a dual-stack
/// `[::]` group (whose program sees IPv4 packets).
#[test]
fn a_probe_connection_reaches_its_member_while_clients_are_spread() {
    for (spec, client_ip) in [
        ("127.0.0.1:0", "127.0.0.1"),
        ("[::1]:0", "::1"),
        (":0", "127.0.0.1"),
        (":0", "::1"),
    ] {
        let (_listeners, mut group) = group_on(spec);
        let expected_target = match spec {
            "[::1]:0" => "::1",
            _ => "127.0.0.1",
        };
        assert_eq!(
            group.probe_target(),
            SocketAddr::new(
                expected_target.parse().expect("an address"),
                group.address().port()
            )
        );
        group.add().expect("member 1");
        group.add().expect("member 2");
        let target = SocketAddr::new(
            client_ip.parse().expect("an address"),
            group.address().port(),
        );
        // The probe's port: bound first, so that the program can name it.
        let probe = socket2_bound(target);
        let probe_port = local_port(&probe);
        group
            .steer(&Steering::over(&[0, 1]).with_probe(probe_port, 2))
            .expect("attaches");
        let clients: Vec<TcpStream> = (0..30)
            .map(|_| TcpStream::connect(target).expect("listens"))
            .collect();
        connect_fd(&probe, target);
        poll_until("31 connections are queued", || {
            queues(&group).iter().sum::<u32>() == 31
        });
        let landed = queues(&group);
        assert_eq!(landed[2], 1, "{spec} from {client_ip}: {landed:?}");
        assert!(landed[0] > 0 && landed[1] > 0, "{spec}: {landed:?}");
        drop(clients);
    }
}

/// A socket bound to an ephemeral port of `target`'s family, not connected yet.
fn socket2_bound(target: SocketAddr) -> OwnedFd {
    let (family, any): (AddressFamily, SocketAddr) = match target {
        SocketAddr::V4(_) => (AddressFamily::Inet, "127.0.0.1:0".parse().expect("valid")),
        SocketAddr::V6(_) => (AddressFamily::Inet6, "[::1]:0".parse().expect("valid")),
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("a socket");
    match any {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4)),
        SocketAddr::V6(v6) => bind(fd.as_raw_fd(), &nix::sys::socket::SockaddrIn6::from(v6)),
    }
    .expect("an ephemeral port");
    fd
}

fn local_port(fd: &OwnedFd) -> u16 {
    let storage: nix::sys::socket::SockaddrStorage =
        nix::sys::socket::getsockname(fd.as_raw_fd()).expect("bound");
    storage
        .as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| storage.as_sockaddr_in6().map(|a| a.port()))
        .expect("an IP socket")
}

fn connect_fd(fd: &OwnedFd, target: SocketAddr) {
    match target {
        SocketAddr::V4(v4) => nix::sys::socket::connect(fd.as_raw_fd(), &SockaddrIn::from(v4)),
        SocketAddr::V6(v6) => {
            nix::sys::socket::connect(fd.as_raw_fd(), &nix::sys::socket::SockaddrIn6::from(v6))
        }
    }
    .expect("connects");
}

// ----- the group's indices --------------------------------------------------------------------

/// The kernel fact the design rests on (raw sockets, no graceful-run code): a member leaves
/// the group when its last fd closes, and the *last* member moves into its slot; a new
/// member joins at the end.
#[test]
fn the_kernel_moves_the_last_member_into_a_closed_slot() {
    let first = raw_member("127.0.0.1:0".parse().expect("valid"));
    let address = match nix::sys::socket::getsockname::<SockaddrIn>(first.as_raw_fd()) {
        Ok(a) => SocketAddr::from(std::net::SocketAddrV4::new(a.ip(), a.port())),
        Err(e) => panic!("getsockname: {e}"),
    };
    let members: Vec<OwnedFd> = (0..3).map(|_| raw_member(address)).collect();
    let [one, two, three] = <[OwnedFd; 3]>::try_from(members).expect("three");
    let all = [&first, &one, &two, &three];
    for (index, member) in all.iter().enumerate() {
        attach_ret(first.as_fd(), index as u32);
        let _c = raw_connect(address, 5, &all);
        assert_eq!(raw_queue(member.as_fd()), 5, "index {index}");
        raw_drain(member.as_fd());
    }
    // Close member 1, its only fd: member 3 becomes index 1.
    drop(one);
    let left = [&first, &two, &three];
    attach_ret(first.as_fd(), 1);
    let _c = raw_connect(address, 5, &left);
    assert_eq!(
        raw_queues(&left),
        vec![0, 0, 5],
        "index 1 is the old member 3"
    );
    raw_drain(three.as_fd());
    // Index 3 is past the end now: the kernel's hash picks among the three.
    attach_ret(first.as_fd(), 3);
    let _c = raw_connect(address, 30, &left);
    assert_eq!(raw_queues(&left).iter().sum::<u32>(), 30);
    for fd in left {
        raw_drain(fd.as_fd());
    }
    // A new member joins at the end: index 3.
    let newcomer = raw_member(address);
    let now = [&first, &two, &three, &newcomer];
    let _c = raw_connect(address, 5, &now);
    assert_eq!(raw_queues(&now), vec![0, 0, 0, 5]);
}

/// A member whose fd another process still holds (a child, a leftover) stays in the group
/// when graceful-run closes its own copy; `shutdown` takes it out whoever holds it, and the
/// holder's accept() then fails with EINVAL.
#[test]
fn a_member_held_elsewhere_stays_until_it_is_shut_down() {
    let first = raw_member("127.0.0.1:0".parse().expect("valid"));
    let address = match nix::sys::socket::getsockname::<SockaddrIn>(first.as_raw_fd()) {
        Ok(a) => SocketAddr::from(std::net::SocketAddrV4::new(a.ip(), a.port())),
        Err(e) => panic!("getsockname: {e}"),
    };
    let second = raw_member(address);
    let leftover = second.try_clone().expect("dup");
    drop(second);
    attach_ret(first.as_fd(), 1);
    let _c = raw_connect(address, 5, &[&first, &leftover]);
    assert_eq!(raw_queue(leftover.as_fd()), 5, "still member 1");
    raw_drain(leftover.as_fd());
    shutdown(leftover.as_raw_fd(), Shutdown::Read).expect("shutdown of a listener");
    // Out of the group: index 1 is past the end, the hash picks the only member.
    let _c = raw_connect(address, 5, &[&first]);
    assert_eq!(raw_queue(first.as_fd()), 5);
    let error = accept4(leftover.as_raw_fd(), SockFlag::SOCK_CLOEXEC).expect_err("shut down");
    assert_eq!(error, nix::errno::Errno::EINVAL);
}

/// `Group::close_last`: refused while connections wait on the member, then the last member
/// leaves (even with a leftover holding it) and the next `add` takes its index; the other
/// members never move.
#[test]
fn closing_the_last_member_keeps_every_other_index() {
    let (_listeners, mut group) = loopback_group(3);
    let inodes = group.inodes();
    let leftover = group.fd(2).try_clone_to_owned().expect("dup");
    group.steer(&Steering::to(2)).expect("attaches");
    let _c = connect_and_settle(&group, 3);
    let error = group.close_last().expect_err("3 connections wait");
    assert_eq!(error.kind(), ErrorKind::WouldBlock);
    drain(&group);
    assert_eq!(group.close_last().expect("closes"), 2);
    assert_eq!(group.len(), 2);
    assert_eq!(group.inodes(), inodes[..2].to_vec(), "no member moved");
    let error = accept4(leftover.as_raw_fd(), SockFlag::SOCK_CLOEXEC).expect_err("out");
    assert_eq!(error, nix::errno::Errno::EINVAL);
    for member in [0, 1] {
        group.steer(&Steering::to(member)).expect("attaches");
        let _c = connect_and_settle(&group, 4);
        let mut expected = vec![0; 2];
        expected[member] = 4;
        assert_eq!(queues(&group), expected);
        drain(&group);
    }
    assert_eq!(group.add().expect("joins"), 2);
    group.steer(&Steering::to(2)).expect("attaches");
    let _c = connect_and_settle(&group, 4);
    assert_eq!(queues(&group), vec![0, 0, 4]);
    drain(&group);
    // Member 0 is never closed.
    group.close_last().expect("closes 2");
    group.close_last().expect("closes 1");
    assert_eq!(
        group.close_last().expect_err("member 0").kind(),
        ErrorKind::InvalidInput
    );
}

/// `-l HOST:0`: every member binds the port that member 0's bind chose.
#[test]
fn every_member_binds_the_port_the_first_bind_chose() {
    let (listeners, mut group) = group_on("127.0.0.1:0");
    let port = group.address().port();
    assert_ne!(port, 0);
    assert_eq!(
        listeners.iter().next().map(|l| l.bound.to_string()),
        Some(format!("tcp://127.0.0.1:{port}"))
    );
    group.add().expect("joins");
    group.add().expect("joins");
    let dumped = sock_diag::dump(AddressFamily::Inet, States::LISTEN, &[port]).expect("dumps");
    let mut ours: Vec<u64> = dumped
        .iter()
        .filter(|s| s.local.port() == port)
        .map(|s| s.inode)
        .collect();
    ours.sort_unstable();
    let mut expected = group.inodes();
    expected.sort_unstable();
    assert_eq!(ours, expected);
}

// ----- who may bind the address ---------------------------------------------------------------

/// Member 0 is bound exclusively: a plain bind of the address is refused, and so is a second
/// graceful-run (the real binary). Another user's SO_REUSEPORT socket is refused too (as
/// root: graceful-run run as nobody with `,reuseport`). A program of the same user that sets
/// SO_REUSEPORT can join (the documented limit), and `strangers` finds it.
#[test]
fn the_first_member_is_exclusive() {
    let (_listeners, group) = loopback_group(2);
    let address = group.address();
    let plain = TcpListener::bind(address).expect_err("the address is taken");
    assert_eq!(plain.kind(), ErrorKind::AddrInUse);

    let spec = address.to_string();
    let second = run_to_end({
        let mut command = Command::new(graceful_run_bin());
        command.args(["-l", &spec, "--", "true"]);
        command
    });
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(code(second.status), Some(125), "{stderr}");
    assert!(stderr.contains("Address already in use"), "{stderr}");

    if is_root() {
        let with_reuseport = format!("{spec},reuseport");
        let other_user = run_to_end({
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(graceful_run_bin())
                .args(["-l", &with_reuseport, "--", "true"]);
            command
        });
        let stderr = String::from_utf8_lossy(&other_user.stderr);
        assert_eq!(code(other_user.status), Some(125), "{stderr}");
        assert!(stderr.contains("Address already in use"), "{stderr}");
    }

    // The same user with SO_REUSEPORT joins: graceful-run with `,reuseport` starts, and while
    // it runs it is a stranger in the group.
    assert!(group.strangers().expect("dumps").is_empty());
    let with_reuseport = format!("{spec},reuseport");
    let mut joined = Gr::start(&["-l", &with_reuseport, "--", &probe(), "signals"]);
    joined.wait_stdout("ready");
    let strangers = group.strangers().expect("dumps");
    assert_eq!(strangers.len(), 1, "{strangers:?}\n{}", joined.output());
    assert_eq!(strangers[0].local, address);
    joined.signal(libc::SIGTERM);
    joined.wait_exit();
    poll_until("the stranger is gone", || {
        group.strangers().expect("dumps").is_empty()
    });
}

/// `strangers`: listeners on the group's port that could take its connections (the same
/// address, or a wildcard), not those on another address or port.
#[test]
fn strangers_are_listeners_graceful_run_did_not_create() {
    let (_listeners, group) = loopback_group(2);
    let address = group.address();
    assert!(group.strangers().expect("dumps").is_empty(), "only ours");
    let same = raw_member(address);
    let wildcard = raw_member(SocketAddr::new([0, 0, 0, 0].into(), address.port()));
    let elsewhere = raw_member(SocketAddr::new([127, 0, 0, 2].into(), address.port()));
    let strangers = group.strangers().expect("dumps");
    let mut found: Vec<u64> = strangers.iter().map(|s| s.inode).collect();
    found.sort_unstable();
    let mut expected = vec![inode(same.as_fd()), inode(wildcard.as_fd())];
    expected.sort_unstable();
    assert_eq!(found, expected, "{strangers:?}");
    assert!(!found.contains(&inode(elsewhere.as_fd())));
}

// ----- observing connections ------------------------------------------------------------------

/// The activity `observe` reports for the connection whose server end is `server`, held by
/// this test process, on `listener`'s port.
fn activity_of(listener: SocketAddr, server: &TcpStream, grace: Duration) -> Option<Activity> {
    let own = [std::process::id() as i32];
    let observation = observe::observe(&own, &[listener], grace).expect("observes itself");
    let wanted = inode(server.as_fd());
    observation
        .connections
        .iter()
        .find(|c| c.socket.inode == wanted)
        .map(|c| c.activity)
}

fn wait_for_activity(
    listener: SocketAddr,
    server: &TcpStream,
    grace: Duration,
    expected: Activity,
) {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let seen = activity_of(listener, server, grace);
        if seen == Some(expected) {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "expected {expected:?}, the connection stays {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const LONG: Duration = Duration::from_secs(60);
/// Longer than a clock tick (4 ms at HZ=250, 10 ms at HZ=100): two events this far apart
/// never read as the same tick.
const TICKS_APART: Duration = Duration::from_millis(25);

/// Real connections, in every state issue 16 names, classified by `observe` as busy or
/// idle with the right reason.
#[test]
fn real_connections_are_classified_busy_or_idle() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("loopback");
    let address = listener.local_addr().expect("bound");
    let pair = || {
        let client = TcpStream::connect(address).expect("listens");
        let (server, _) = listener.accept().expect("accepts");
        (client, server)
    };

    // Just accepted, nothing received: busy for the grace, then idle.
    let (_client, fresh) = pair();
    wait_for_activity(address, &fresh, LONG, Activity::Busy(Busy::JustAccepted));
    wait_for_activity(
        address,
        &fresh,
        Duration::ZERO,
        Activity::Idle(Idle::Silent),
    );

    // A request the server has not read.
    let (mut client, mut server) = pair();
    client.write_all(REQUEST).expect("sends");
    let unread = Activity::Busy(Busy::Unread(REQUEST.len() as u32));
    wait_for_activity(address, &server, Duration::ZERO, unread);

    // Read, and not answered yet: busy whatever the grace.
    let mut buf = vec![0u8; REQUEST.len()];
    server.read_exact(&mut buf).expect("reads the request");
    let awaiting = Activity::Busy(Busy::AwaitingResponse);
    wait_for_activity(address, &server, Duration::ZERO, awaiting);

    // Answered in a later tick, and the client read it: an idle keep-alive connection.
    std::thread::sleep(TICKS_APART);
    server.write_all(RESPONSE).expect("answers");
    let mut got = vec![0u8; RESPONSE.len()];
    client.read_exact(&mut got).expect("reads the response");
    wait_for_activity(address, &server, LONG, Activity::Idle(Idle::KeepAlive));

    // The next request on the same connection, read, not answered: busy again.
    std::thread::sleep(TICKS_APART);
    client.write_all(REQUEST).expect("sends again");
    server.read_exact(&mut buf).expect("reads it");
    wait_for_activity(address, &server, Duration::ZERO, awaiting);

    // A response the client does not read: it stays in the server's send queue.
    server.set_nonblocking(true).expect("non-blocking");
    let chunk = vec![b'x'; 64 * 1024];
    let mut written = 0usize;
    loop {
        match server.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(written > 0);
    let seen = activity_of(address, &server, Duration::ZERO);
    assert!(
        matches!(seen, Some(Activity::Busy(Busy::Unsent(n))) if n > 0),
        "{seen:?}"
    );

    // A quick exchange (read and answered at once): busy for the grace if both fell in
    // one tick, idle once the grace is over.
    let (mut client, mut server) = pair();
    client.write_all(REQUEST).expect("sends");
    server.read_exact(&mut buf).expect("reads");
    server.write_all(RESPONSE).expect("answers");
    client.read_exact(&mut got).expect("reads");
    wait_for_activity(
        address,
        &server,
        Duration::ZERO,
        Activity::Idle(Idle::KeepAlive),
    );
    let quick = activity_of(address, &server, LONG);
    assert!(
        matches!(
            quick,
            Some(Activity::Busy(Busy::SameTick) | Activity::Idle(Idle::KeepAlive))
        ),
        "{quick:?}"
    );

    // The server closed its side after answering: idle.
    server.shutdown(std::net::Shutdown::Write).expect("FIN");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("EOF");
    wait_for_activity(address, &server, LONG, Activity::Idle(Idle::Closed));

    // Connections on other ports (this process's own client ends) are not counted.
    let own = [std::process::id() as i32];
    let observation = observe::observe(&own, &[address], LONG).expect("observes");
    assert!(
        observation
            .connections
            .iter()
            .all(|c| c.socket.local.port() == address.port()),
        "{observation:?}"
    );
}

/// A generation under graceful-run: the leader and a worker it started, in the generation's
/// process group; the worker accepted two connections and holds them. `processes_of` finds
/// both processes, `observe` both connections: one with an unread request, one just
/// accepted.
#[test]
fn a_generation_s_connections_are_found_through_its_process_group() {
    let mut gr = Gr::start(&["-l", "127.0.0.1:0", "--", &probe(), "hold"]);
    gr.wait_stdout("ready");
    let address = gr.inet_addr(0);
    let leader = gr.generation_pid(1);
    let mut with_request = TcpStream::connect(address).expect("listens");
    with_request.write_all(REQUEST).expect("sends");
    let _silent = TcpStream::connect(address).expect("listens");
    gr.poll("the worker accepted both", || {
        (gr.stdout.count(|l| l.starts_with("accepted ")) == 2).then_some(())
    });
    let pids = observe::processes_of(Scope::Group(Pid::from_raw(leader)));
    assert_eq!(pids.len(), 2, "leader and worker: {pids:?}");
    assert!(pids.contains(&leader));
    let observation = gr.poll("both connections are observed", || {
        let seen = observe::observe(&pids, &[address], LONG).expect("observes");
        (seen.connections.len() == 2 && seen.by_reason().get(&(false, "unread")) == Some(&1))
            .then_some(seen)
    });
    assert_eq!(observation.busy(), 2, "{observation:?}");
    let reasons: Vec<&str> = observation
        .connections
        .iter()
        .map(|c| c.activity.reason())
        .collect();
    assert!(reasons.contains(&"just-accepted"), "{reasons:?}");
    // Once the grace is over, the silent one is idle; the unread request stays busy.
    let later = observe::observe(&pids, &[address], Duration::ZERO).expect("observes");
    assert_eq!((later.busy(), later.idle()), (1, 1), "{later:?}");
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

/// An `Observer` dumps once, then looks the known connections up one by one, and dumps
/// again only when the generation holds a socket it has not seen; the answers are the same.
#[test]
fn an_observer_dumps_only_when_a_new_socket_appears() {
    let mut gr = Gr::start(&["-l", "127.0.0.1:0", "--", &probe(), "hold"]);
    gr.wait_stdout("ready");
    let address = gr.inet_addr(0);
    let leader = gr.generation_pid(1);
    let accepted = |n: usize| {
        gr.poll("the worker accepted them", || {
            (gr.stdout.count(|l| l.starts_with("accepted ")) == n).then_some(())
        })
    };
    let mut first = TcpStream::connect(address).expect("listens");
    first.write_all(REQUEST).expect("sends");
    let _second = TcpStream::connect(address).expect("listens");
    accepted(2);
    let pids = observe::processes_of(Scope::Group(Pid::from_raw(leader)));
    let mut observer = observe::Observer::new(&[address], LONG);
    let summary = |o: &observe::Observation| {
        let mut reasons: Vec<&str> = o.connections.iter().map(|c| c.activity.reason()).collect();
        reasons.sort_unstable();
        reasons
    };
    let dumped = gr.poll("the request is unread in the worker", || {
        let seen = observer.observe(&pids).expect("observes");
        (summary(&seen) == ["just-accepted", "unread"]).then_some(seen)
    });
    let dumps = observer.dumps;
    let looked_up = observer.observe(&pids).expect("observes");
    assert_eq!(observer.dumps, dumps, "nothing new: no dump");
    assert!(observer.lookups >= 1);
    assert_eq!(summary(&looked_up), summary(&dumped));
    assert_eq!(
        observe::observe(&pids, &[address], LONG)
            .map(|o| summary(&o))
            .expect("observes"),
        summary(&looked_up),
        "a one-shot dump agrees"
    );

    let _third = TcpStream::connect(address).expect("listens");
    accepted(3);
    let grown = observer.observe(&pids).expect("observes");
    assert_eq!(observer.dumps, dumps + 1, "a new socket: a dump");
    assert_eq!(grown.connections.len(), 3);
    // The client closes its end: the server end is in CLOSE_WAIT, its request still unread.
    drop(first);
    let closed = gr.poll("the first connection is in CLOSE_WAIT", || {
        let seen = observer.observe(&pids).expect("observes");
        seen.connections
            .iter()
            .any(|c| c.socket.state == TcpState::CloseWait)
            .then_some(seen)
    });
    assert_eq!(observer.dumps, dumps + 1, "no new socket: no dump");
    assert_eq!(closed.busy(), 3, "{closed:?}");
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

/// A keep-alive stream, step by step on one real connection held by this process: an
/// `Observer` calls it a stream once its client sent at two looks since the first, and does
/// not count it busy between a response and the next request; a request unread or being
/// answered, and a response the server writes on its own since the last look, are busy.
#[test]
fn an_observer_tells_a_keep_alive_stream_at_a_request_boundary() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("loopback");
    let address = listener.local_addr().expect("bound");
    let mut client = TcpStream::connect(address).expect("listens");
    let (mut server, _) = listener.accept().expect("accepts");
    let own = [std::process::id() as i32];
    let wanted = inode(server.as_fd());
    let mut observer = observe::Observer::new(&[address], LONG);
    let mut look = |what: &str, busy: usize, streams: usize| {
        let seen = observer.observe(&own).expect("observes itself");
        let mine = observe::Observation {
            connections: seen
                .connections
                .into_iter()
                .filter(|c| c.socket.inode == wanted)
                .collect(),
        };
        assert_eq!(
            (mine.busy(), mine.streams()),
            (busy, streams),
            "{what}: {mine:?}"
        );
    };
    let mut buffer = [0u8; 256];
    // A request, answered a few ticks later (so that the response is the later event in
    // the kernel's clock whatever the client's ACK does), and read by the client.
    let exchange = |server: &mut TcpStream, client: &mut TcpStream| {
        let mut buffer = [0u8; 256];
        client.write_all(REQUEST).expect("sends");
        std::thread::sleep(TICKS_APART);
        let n = server.read(&mut buffer).expect("reads");
        assert_eq!(n, REQUEST.len());
        server.write_all(RESPONSE).expect("answers");
        let mut got = [0u8; RESPONSE.len()];
        client.read_exact(&mut got).expect("reads the response");
    };
    exchange(&mut server, &mut client);
    look(
        "the drain's first look: a connection that just answered",
        1,
        0,
    );
    exchange(&mut server, &mut client);
    look("its client sent at one look since: not yet a stream", 1, 0);
    exchange(&mut server, &mut client);
    look(
        "sent at two looks: a stream, between a response and its next request",
        0,
        1,
    );

    std::thread::sleep(TICKS_APART);
    client.write_all(REQUEST).expect("sends");
    poll_until("the request is in the server's queue", || {
        sock_diag::dump(AddressFamily::Inet, States::CONNECTED, &[address.port()])
            .expect("dumps")
            .iter()
            .any(|s| s.inode == wanted && s.rqueue > 0)
    });
    look("the next request unread", 1, 0);
    let n = server.read(&mut buffer).expect("reads");
    assert_eq!(n, REQUEST.len());
    look("the request read, its response not written", 1, 0);
    std::thread::sleep(TICKS_APART);
    server
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok")
        .expect("answers in part");
    look(
        "the server wrote on its own since the last look: a piece",
        1,
        0,
    );
    std::thread::sleep(TICKS_APART);
    server.write_all(b"ok").expect("answers the rest");
    let mut got = [0u8; RESPONSE.len() + 2];
    client.read_exact(&mut got).expect("reads the response");
    look("another piece", 1, 0);
    look(
        "nothing since: between a response and the next request",
        0,
        1,
    );
}

// ----- handshakes in flight -------------------------------------------------------------------

/// A handshake begun before steering changes completes into the member its SYN chose, not
/// the one steering now names; `SynSnapshot` sees it in flight until then.
///
/// TCP_DEFER_ACCEPT holds a handshake in SYN_RECV on the server (no privilege needed): the
/// client's last ACK without data is dropped, and the handshake completes with its first
/// data.
#[test]
fn handshakes_in_flight_complete_on_the_member_their_syn_chose() {
    for spec in ["127.0.0.1:0", ":0", "[::1]:0"] {
        let (_listeners, mut group) = group_on(spec);
        group.add().expect("member 1");
        let target = group.probe_target();
        let seconds: libc::c_int = 30;
        // SAFETY: setsockopt with a pointer to an int that lives across the call, and its
        // size.
        let result = unsafe {
            libc::setsockopt(
                group.fd(0).as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&seconds as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(result, 0, "TCP_DEFER_ACCEPT");
        group.steer(&Steering::to(0)).expect("attaches");
        let mut in_flight = TcpStream::connect(target).expect("listens");
        let snapshot = SynSnapshot::take(group.address()).expect("dumps");
        assert_eq!(snapshot.len(), 1, "{spec}: {snapshot:?}");
        let family = match group.address() {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let dumped =
            sock_diag::dump(family, States::SYN_RECV, &[group.address().port()]).expect("dumps");
        assert_eq!(dumped.len(), 1);
        assert_eq!(dumped[0].state, TcpState::SynRecv);
        assert_eq!(dumped[0].inode, 0, "a request socket names no listener");
        assert_eq!(
            dumped[0].peer.port(),
            in_flight.local_addr().expect("bound").port(),
            "its 4-tuple is the client's"
        );

        group.steer(&Steering::to(1)).expect("attaches");
        let new = TcpStream::connect(target).expect("listens");
        poll_until("the new connection is queued", || {
            queues(&group) == vec![0, 1]
        });
        assert_eq!(snapshot.still_in_flight().expect("looks up"), 1, "{spec}");

        in_flight.write_all(b"x").expect("sends");
        poll_until("the handshake completes", || queues(&group) == vec![1, 1]);
        assert_eq!(snapshot.still_in_flight().expect("looks up"), 0, "{spec}");
        assert_eq!(
            SynSnapshot::take(group.address()).expect("dumps").len(),
            0,
            "nothing in flight any more"
        );
        drop(new);
    }
}

// ----- unprivileged ---------------------------------------------------------------------------

/// Set in the run as nobody, so that it does not start another.
const UNPRIVILEGED_RUN: &str = "GRACEFUL_RUN_TEST_STEERING_AS_NOBODY";

/// Every other test of this module, run again as `nobody` (uid 65534, no capability, no
/// supplementary group): steering, sock_diag and observation need no privilege. Run as
/// root only; run by another user, the tests above already are the unprivileged run.
#[test]
fn the_same_facts_hold_for_nobody() {
    if std::env::var_os(UNPRIVILEGED_RUN).is_some() || !is_root() {
        return;
    }
    let test_binary = std::env::current_exe().expect("the test binary has a path");
    let output = run_to_end({
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&test_binary)
            .args(["steering::", "--test-threads=2"])
            .env(UNPRIVILEGED_RUN, "1");
        command
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "as nobody:\n{stdout}\n{stderr}");
    let passed: usize = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("test result: ok. ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(passed >= 14, "only {passed} passed as nobody:\n{stdout}");
}
