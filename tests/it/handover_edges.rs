//! The edges of steering (issue 16), with the real binary and the example server: `-l HOST:0`
//! across generations, one listener per generation as `ss -ltn` shows it, who else may bind
//! the address while graceful-run holds it, and a program of the same user that joins the
//! group.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command;

use graceful_run::sock_diag::{self, States};
use nix::libc;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt};
use nix::sys::socket::{socket, sockopt};

use crate::support::http::{self, Target};
use crate::support::{DEADLINE, Gr, TempDir, code, graceful_run_bin, http_server, run_to_end};

/// The example server under graceful-run on a free loopback port, `extra` flags first.
fn start(extra: &[&str]) -> Gr {
    let server = http_server();
    let mut args = vec!["-l", "127.0.0.1:0", "--ready", "notify"];
    args.extend(extra);
    args.extend(["--", &server]);
    let gr = Gr::start(&args);
    wait_own(&gr, "gen 1 (pid", "ready after");
    gr
}

/// Waits for graceful-run's own line with both needles.
fn wait_own(gr: &Gr, first: &str, second: &str) -> String {
    gr.stderr
        .wait_for(DEADLINE, |l| {
            l.starts_with("graceful-run: ") && l.contains(first) && l.contains(second)
        })
        .unwrap_or_else(|| panic!("no line with {first:?} and {second:?}\n{}", gr.output()))
}

/// HUP, and generation `next` takes over from the one before.
fn restart_to(gr: &Gr, next: u64) {
    gr.signal(libc::SIGHUP);
    wait_own(
        gr,
        &format!("gen {next} (pid"),
        &format!("takes over from gen {}", next - 1),
    );
}

/// The inode of the socket that `pid` has as fd `fd`.
fn socket_inode(pid: i32, fd: i32) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd/{fd}: {e}"));
    let text = link.to_string_lossy();
    text.strip_prefix("socket:[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inode| inode.parse().ok())
        .unwrap_or_else(|| panic!("fd {fd} of {pid} is not a socket: {text}"))
}

/// The listening sockets on `port` (IPv4), by inode, from sock_diag.
fn listeners_on(port: u16) -> Vec<u64> {
    sock_diag::dump(AddressFamily::Inet, States::LISTEN, &[port])
        .expect("sock_diag dumps")
        .into_iter()
        .filter(|s| s.local.port() == port)
        .map(|s| s.inode)
        .collect()
}

/// How many sockets process `pid` has open.
fn socket_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter(|link| link.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// `ss -ltnH 'sport = :PORT'`, as a user would look: one line per listening socket.
fn ss_listeners(port: u16) -> Vec<String> {
    let output = run_to_end({
        let mut command = Command::new("ss");
        command.args(["-ltneH", &format!("sport = :{port}")]);
        command
    });
    assert!(output.status.success(), "ss: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `-l 127.0.0.1:0`: the first bind picks a port, and every generation listens on that port:
/// its fd 3 is a listener on it (a socket of its own), and it answers there.
#[test]
fn every_generation_listens_on_the_port_the_first_bind_chose() {
    let mut gr = start(&["--verbose"]);
    let address = gr.inet_addr(0);
    assert_ne!(address.port(), 0);
    let target = Target::Tcp(address);
    let mut inodes = Vec::new();
    for generation in 1..=3u64 {
        if generation > 1 {
            if generation > 2 {
                // Its member is free again once every process of it is gone.
                wait_own(
                    &gr,
                    &format!("gen {} (pid", generation - 2),
                    "all processes of this worker are gone",
                );
            }
            restart_to(&gr, generation);
            // Gen 1 and 3 on member 0, gen 2 on member 1; the steering follows the takeover.
            let steered = format!("new connections go to member [{}]", (generation - 1) % 2);
            let times = if generation == 3 { 2 } else { 1 };
            gr.poll("the steering changes", || {
                (gr.stderr.count(|l| l.contains(&steered)) == times).then_some(())
            });
        }
        let pid = gr.generation_pid(generation);
        let inode = socket_inode(pid, 3);
        assert!(
            listeners_on(address.port()).contains(&inode),
            "gen {generation}'s fd 3 is not a listener on port {}\n{}",
            address.port(),
            gr.output()
        );
        let reply = http::get(&target, "/").expect("it answers");
        assert_eq!(reply.pid(), pid, "{}", gr.output());
        inodes.push(inode);
    }
    assert_ne!(inodes[0], inodes[1], "gen 2 has a listener of its own");
    assert_eq!(inodes[0], inodes[2], "gen 3 reuses gen 1's, which is gone");
    gr.signal(libc::SIGTERM);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

/// During a handover `ss -ltn` shows one listening socket per generation, on the same
/// address: one is gen 1's (draining a slow request), the other gen 2's. Before the first
/// restart there is one. After the handover graceful-run keeps the replaced generation's
/// listener for the next restart; no connection goes there.
#[test]
fn ss_shows_one_listener_per_generation_during_a_handover() {
    let mut gr = start(&["--verbose"]);
    let address = gr.inet_addr(0);
    let port = address.port();
    let target = Target::Tcp(address);
    assert_eq!(ss_listeners(port).len(), 1, "{:?}", ss_listeners(port));

    let pid1 = gr.generation_pid(1);
    gr.wait_stderr(&format!("http-server[{pid1}]: ready"));
    let idle = socket_count(pid1);
    let slow_target = target.clone();
    let slow = std::thread::spawn(move || http::get(&slow_target, "/slow?ms=3000"));
    gr.poll("gen 1 accepted the slow request", || {
        (socket_count(pid1) > idle).then_some(())
    });
    restart_to(&gr, 2);
    gr.wait_stderr("new connections go to member [1]");
    let pid2 = gr.generation_pid(2);
    let lines = ss_listeners(port);
    assert!(!slow.is_finished(), "gen 1 is no longer draining");
    assert_eq!(lines.len(), 2, "ss during the handover: {lines:?}");
    let (inode1, inode2) = (socket_inode(pid1, 3), socket_inode(pid2, 3));
    assert_ne!(inode1, inode2);
    for inode in [inode1, inode2] {
        assert!(
            lines.iter().any(|l| l.contains(&format!(" ino:{inode} "))),
            "listener {inode} not in {lines:?}"
        );
        assert!(lines.iter().all(|l| l.contains(&format!("{address} "))));
    }
    let reply = slow
        .join()
        .expect("no panic")
        .expect("the slow request completes");
    assert_eq!(reply.pid(), pid1);
    wait_own(&gr, "gen 1 (pid", "exited");
    assert_eq!(ss_listeners(port).len(), 2, "the spare one is kept");
    assert_eq!(http::get(&target, "/").expect("answers").pid(), pid2);
    gr.signal(libc::SIGTERM);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

/// While graceful-run holds the address (two generations' listeners, after a restart), a
/// second graceful-run is refused with one line and exit 125, and so is any program that
/// binds without SO_REUSEPORT; as root, so is another user's graceful-run even with
/// `,reuseport`.
#[test]
fn a_second_graceful_run_and_plain_binds_are_refused() {
    let mut gr = start(&[]);
    let address = gr.inet_addr(0);
    restart_to(&gr, 2);
    let spec = address.to_string();
    let refused = |command: Command| {
        let output = run_to_end(command);
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert_eq!(code(output.status), Some(125), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("graceful-run: ")
                && stderr.contains(&spec)
                && stderr.contains("Address already in use"),
            "{stderr}"
        );
    };
    refused({
        let mut command = Command::new(graceful_run_bin());
        command.args(["-l", &spec, "--", "true"]);
        command
    });
    // std's bind sets SO_REUSEADDR, not SO_REUSEPORT.
    let plain = TcpListener::bind(address).expect_err("the address is taken");
    assert_eq!(plain.kind(), std::io::ErrorKind::AddrInUse);
    if nix::unistd::geteuid().is_root() {
        let with_reuseport = format!("{spec},reuseport");
        refused({
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(graceful_run_bin())
                .args(["-l", &with_reuseport, "--", "true"]);
            command
        });
    }
    gr.signal(libc::SIGTERM);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

/// A listener of the same user with SO_REUSEPORT, bound to graceful-run's address: it joins
/// the group (the documented limit), and graceful-run says so at the next steering change.
fn stranger(address: SocketAddr) -> std::os::fd::OwnedFd {
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
    bind(fd.as_raw_fd(), &SockaddrIn::from(v4)).expect("a same-user SO_REUSEPORT bind joins");
    // SAFETY: listen(2) on a socket fd we own.
    assert_eq!(unsafe { libc::listen(fd.as_raw_fd(), 128) }, 0);
    fd
}

#[test]
fn a_same_user_program_that_joins_the_group_is_warned_about() {
    let mut gr = start(&[]);
    let address = gr.inet_addr(0);
    let joined = stranger(address);
    restart_to(&gr, 2);
    let warning = wait_own(
        &gr,
        "another program listens on",
        "in graceful-run's reuseport group",
    );
    assert!(warning.contains(&address.to_string()), "{warning}");
    drop(joined);
    gr.signal(libc::SIGTERM);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

/// A stranger that joined the group takes the index graceful-run's next member would get (the
/// kernel appends members in the order they join): steering "to member 1" would send every
/// new connection to it (20 of 20, and none to gen 2, before the fix). graceful-run looks for
/// strangers at each handover's start: gen 2 gets the shared socket (member 0, whose index
/// no stranger can take), one warning names the stranger, new connections go to member 0
/// once gen 2 is ready, and `ctl status` says the listener is shared and why.
#[test]
fn a_stranger_in_the_group_does_not_take_the_new_generation_s_connections() {
    let mut gr = start(&["--verbose"]);
    let address = gr.inet_addr(0);
    let joined = stranger(address);
    restart_to(&gr, 2);
    let warning = wait_own(&gr, "another program listens on", "steering is off");
    assert!(
        warning.contains(&address.to_string()) && warning.contains("socket inode"),
        "{warning}"
    );
    gr.wait_stderr("new connections go to member [0]");
    wait_own(&gr, "gen 1 (pid", "all processes of this worker are gone");
    let pid2 = gr.generation_pid(2);
    let target = Target::Tcp(address);
    // The stranger never accepts: a request that reaches it times out, so only connect.
    let clients: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(address).expect("connects"))
        .collect();
    let reply = http::get(&target, "/");
    let stolen = sock_diag::tcp_info(std::os::fd::AsFd::as_fd(&joined))
        .expect("TCP_INFO of its own listener")
        .unacked;
    drop(clients);
    assert_eq!(stolen, 0, "the stranger got {stolen} of 21 new connections");
    assert_eq!(reply.map(|r| r.pid()), Ok(pid2), "{}", gr.output());
    let status = run_to_end({
        let mut command = Command::new(graceful_run_bin());
        command.args(["ctl", "--pid", &gr.pid().to_string(), "status", "--json"]);
        command
    });
    let json = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        json.contains(r#""handover":"shared","shared_because":"another program listens on"#),
        "{json}"
    );
    drop(joined);
    // Later handovers keep the shared socket: no second warning, gen 3 answers.
    restart_to(&gr, 3);
    wait_own(&gr, "gen 2 (pid", "all processes of this worker are gone");
    let reply = http::get(&target, "/").expect("gen 3 answers");
    assert_eq!(reply.pid(), gr.generation_pid(3), "{}", gr.output());
    assert_eq!(
        gr.stderr.count(|l| l.contains("steering is off")),
        1,
        "{}",
        gr.output()
    );
    gr.signal(libc::SIGTERM);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

/// The shipped systemd unit's case: graceful-run as root with only the capabilities it keeps
/// there (SETUID, SETGID, KILL, NET_BIND_SERVICE), the server as another user (`--user
/// nobody`). Root without CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE may not read that user's
/// /proc/PID/fd; graceful-run reads it as that user. The drain then sees the slow request
/// (4 s) in flight and waits for it, instead of taking a generation it cannot look at for one
/// with no connection at all. Needs root (it is the case of a root graceful-run).
#[test]
fn a_drain_sees_another_user_s_connections_with_the_unit_s_capabilities() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let server = http_server();
    let mut command = Command::new("setpriv");
    command
        .args([
            "--bounding-set",
            "-all,+setuid,+setgid,+kill,+net_bind_service",
        ])
        .arg(graceful_run_bin())
        .args(["-l", "127.0.0.1:0", "--ready", "notify", "--user", "nobody"])
        .args(["--", &server])
        .stdin(std::process::Stdio::null());
    let mut gr = Gr::spawn(command);
    wait_own(&gr, "gen 1 (pid", "ready after");
    let status = std::fs::read_to_string(format!("/proc/{}/status", gr.pid())).expect("status");
    assert!(status.contains("\nCapEff:\t00000000000004e0\n"), "{status}");
    let address = gr.inet_addr(0);
    let pid1 = gr.generation_pid(1);
    gr.wait_stderr(&format!("http-server[{pid1}]: ready"));
    let idle = socket_count(pid1);
    let target = Target::Tcp(address);
    let slow = std::thread::spawn(move || http::get(&target, "/slow?ms=4000"));
    gr.poll("gen 1 accepted the slow request", || {
        (socket_count(pid1) > idle).then_some(())
    });
    restart_to(&gr, 2);
    let drained = wait_own(&gr, "gen 1 (pid", "drained after");
    assert!(
        !drained.contains("could not be looked at"),
        "{drained}\n{}",
        gr.output()
    );
    let reply = slow
        .join()
        .expect("no panic")
        .unwrap_or_else(|f| panic!("the slow request failed: {f:?}\n{}", gr.output()));
    assert_eq!(reply.pid(), pid1);
    let took = drained
        .split("drained after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("");
    assert!(
        took.ends_with('s') && !took.ends_with("ms"),
        "gen 1 drained after {took}, before its 4 s request was answered\n{}",
        gr.output()
    );
    gr.signal(libc::SIGTERM);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

/// `-l ...,reuseport`: other programs may join that group on purpose, so its indices are not
/// graceful-run's alone; every generation shares the one socket, and both the log and
/// `ctl status` say why.
#[test]
fn a_user_reuseport_listener_is_shared_and_says_why() {
    let server = http_server();
    let mut gr = Gr::start(&[
        "-l",
        "127.0.0.1:0,reuseport",
        "--ready",
        "notify",
        "--",
        &server,
    ]);
    wait_own(&gr, "gen 1 (pid", "ready after");
    wait_own(&gr, "one socket for every generation", "with ,reuseport");
    let status = run_to_end({
        let mut command = Command::new(graceful_run_bin());
        command.args(["ctl", "--pid", &gr.pid().to_string(), "status"]);
        command
    });
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        text.contains("(name ") && text.contains(", shared: ,reuseport: other programs may join"),
        "{text}"
    );
    let address = gr.inet_addr(0);
    let inode1 = socket_inode(gr.generation_pid(1), 3);
    restart_to(&gr, 2);
    assert_eq!(
        socket_inode(gr.generation_pid(2), 3),
        inode1,
        "gen 2 got a listener of its own"
    );
    let reply = http::get(&Target::Tcp(address), "/").expect("it answers");
    assert!(reply.pid() > 0);
    gr.signal(libc::SIGTERM);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

/// The same unit's case for `--ready accepting`: root without CAP_DAC_READ_SEARCH and
/// CAP_SYS_PTRACE may not read a `--user nobody` server's /proc/PID/fd nor its epoll fdinfo;
/// graceful-run reads them as that user (`proc_owner`), and sees the server (asyncio, which
/// waits in epoll) wait on its listener. Before, the look was refused and the generation
/// could never become ready. Needs root.
#[test]
fn ready_accepting_sees_another_user_s_server_with_the_unit_s_capabilities() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = TempDir::new("unit-accepting");
    let script = dir.join("server.py");
    std::fs::write(
        &script,
        "import asyncio, socket\n\
         async def answer(r, w):\n    \
             w.write(b'HTTP/1.0 200 OK\\r\\n\\r\\nhi'); await w.drain(); w.close()\n\
         async def main():\n    \
             server = await asyncio.start_server(answer, sock=socket.socket(fileno=3))\n    \
             await server.serve_forever()\n\
         asyncio.run(main())\n",
    )
    .expect("the script is written");
    use std::os::unix::fs::PermissionsExt;
    for path in [dir.path(), script.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut command = Command::new("setpriv");
    command
        .args([
            "--bounding-set",
            "-all,+setuid,+setgid,+kill,+net_bind_service",
        ])
        .arg(graceful_run_bin())
        .args([
            "-l",
            "127.0.0.1:0",
            "--ready",
            "accepting",
            "--user",
            "nobody",
        ])
        .args(["--", "/usr/bin/python3"])
        .arg(&script)
        .stdin(std::process::Stdio::null());
    let mut gr = Gr::spawn(command);
    let ready = wait_own(&gr, "gen 1 (pid", "ready after");
    assert!(ready.contains("(accepting)"), "{ready}\n{}", gr.output());
    assert!(
        !gr.output().contains("permission denied"),
        "{}",
        gr.output()
    );
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

/// A generation that binds a port itself instead of taking graceful-run's: the warning at
/// 5 s and the readiness-timeout line name the listener it was expected to wait on and the
/// address it listens on itself (issue 16, item 6). Python's http.server on port 0 binds a
/// port of its own and never touches fd 3.
#[test]
fn a_server_that_listens_on_its_own_port_is_named_at_the_readiness_timeout() {
    let mut gr = Gr::start(&[
        "-l",
        "127.0.0.1:0",
        "--ready",
        "accepting",
        "--ready-timeout",
        "7s",
        "--",
        "python3",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "0",
    ]);
    let status = gr.wait_exit();
    assert_eq!(code(status), Some(124), "{}", gr.output());
    let expected = format!("not on tcp://{} (fd 3)", gr.inet_addr(0));
    let line = gr.wait_stderr("not ready after 7s");
    assert!(
        line.contains("it listens on 127.0.0.1:") && line.contains(&expected),
        "{line}\n{}",
        gr.output()
    );
    let warning = gr.wait_stderr("not waiting for connections on");
    assert!(warning.contains("itself"), "{warning}");
}
