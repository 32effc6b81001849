//! Socket activation as the child sees it, and the sockets as clients see them.
//!
//! A probe child reports what it received (LISTEN_* variables, every open fd with its flags
//! and socket address, its signal mask and ignored signals); the example HTTP server proves
//! that every kind of listener graceful-run opens (TCP over IPv4 and IPv6, dual-stack, UDP,
//! unix path, abstract unix) really reaches the child. The unix socket file's lifecycle
//! (stale file replaced, live socket and foreign file refused, removal at exit only while it
//! is still ours, mode) is checked on the filesystem.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::libc;

use crate::support::http::{self, Target};
use crate::support::{Gr, TempDir, code, graceful_run_bin, http_server, probe};

// ---------------------------------------------------------------------------------------------
// Helpers

/// What `probe report` printed: `key=value` lines, with the fd lines split into fields.
struct Report {
    values: BTreeMap<String, String>,
    fds: BTreeMap<i32, BTreeMap<String, String>>,
}

impl Report {
    fn parse(lines: &[String]) -> Report {
        let mut values = BTreeMap::new();
        let mut fds = BTreeMap::new();
        for line in lines {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if let Some(fd) = key.strip_prefix("fd.") {
                let fields = value
                    .split_whitespace()
                    .filter_map(|field| field.split_once(':'))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                fds.insert(fd.parse().expect("fd numbers are numbers"), fields);
            } else {
                values.insert(key.to_string(), value.to_string());
            }
        }
        Report { values, fds }
    }

    fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("the probe reported no {key}: {:?}", self.values))
    }

    fn env(&self, name: &str) -> &str {
        self.get(&format!("env.{name}"))
    }

    fn pid(&self) -> i32 {
        self.get("pid").parse().expect("the probe prints its pid")
    }

    fn mask(&self, key: &str) -> u64 {
        u64::from_str_radix(self.get(key), 16).expect("masks are hex")
    }

    fn open_fds(&self) -> Vec<i32> {
        self.fds.keys().copied().collect()
    }

    /// One field (`cloexec`, `family`, `address`, ...) of the line of `fd`.
    fn fd(&self, fd: i32, field: &str) -> &str {
        self.fds
            .get(&fd)
            .and_then(|fields| fields.get(field))
            .unwrap_or_else(|| panic!("fd {fd} has no {field} field: {:?}", self.fds.get(&fd)))
    }
}

/// Waits for the probe's report, and for graceful-run to exit 0 after it.
fn finish_report(mut gr: Gr) -> (Gr, Report) {
    gr.wait_stdout("ready");
    let report = Report::parse(&gr.stdout.snapshot());
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
    (gr, report)
}

/// Runs `graceful-run ARGS -- probe report` and returns what the probe saw.
fn report_under(args: &[&str]) -> (Gr, Report) {
    finish_report(Gr::spawn(graceful_run(args, &[&probe(), "report"])))
}

/// `graceful-run ARGS -- COMMAND...`, not started yet.
fn graceful_run(args: &[&str], command: &[&str]) -> Command {
    let mut gr = Command::new(graceful_run_bin());
    gr.args(args).arg("--").args(command);
    gr
}

/// A name in the abstract unix namespace that no other test (or test run) uses.
fn abstract_name(tag: &str) -> String {
    format!("gr-it-sockets-{}-{tag}", std::process::id())
}

/// The address part of a printed listener (`tcp://127.0.0.1:1`, `unix:@x`) as `getsockname`
/// shows it (`127.0.0.1:1`, `@x`).
fn bare_address(printed: &str) -> &str {
    ["tcp://", "udp://", "unix:"]
        .iter()
        .find_map(|scheme| printed.strip_prefix(scheme))
        .unwrap_or_else(|| panic!("unexpected listener address {printed}"))
}

/// The signal mask bits (as /proc shows them: bit N-1 = signal N) of `signals`.
fn signal_bits(signals: &[i32]) -> u64 {
    signals.iter().map(|s| 1u64 << (s - 1)).sum()
}

/// Makes `command` start with exactly these ignored and blocked signals (every other signal
/// at its default), whatever the test process itself has.
fn with_signal_state(command: &mut Command, ignored: &[i32], blocked: &[i32]) {
    let (ignored, blocked) = (ignored.to_vec(), blocked.to_vec());
    // SAFETY: the closure only calls sigaction/sigprocmask, which are async-signal-safe, on
    // memory allocated before fork.
    unsafe {
        command.pre_exec(move || {
            for signal in 1..=31 {
                if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                    continue;
                }
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = if ignored.contains(&signal) {
                    libc::SIG_IGN
                } else {
                    libc::SIG_DFL
                };
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in &blocked {
                libc::sigaddset(&mut set, *signal);
            }
            if libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// `sh -c "trap '' SIGNALS; exec COMMAND..."`: COMMAND starts with SIGNALS ignored, as under
/// nohup or a shell's trap. The shell itself starts from a clean signal state.
fn with_trap(signals: &str, command: &[&str]) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("trap '' {signals}; exec \"$0\" \"$@\""))
        .args(command)
        .stdin(Stdio::null());
    with_signal_state(&mut sh, &[], &[]);
    sh
}

/// Runs `probe report` directly (without graceful-run) under `command`'s setup, to show what
/// a test's preparation alone gives a process.
fn direct_report(mut command: Command) -> Report {
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("the probe runs");
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(String::from)
        .collect();
    Report::parse(&lines)
}

/// Stops graceful-run with SIGTERM and expects the child to have ended cleanly (exit 0).
fn stop(gr: &mut Gr) {
    gr.terminate_expecting_exit(0);
}

/// Waits until the example HTTP server under `gr` says it serves; returns its pid.
fn wait_http_server(gr: &Gr) -> i32 {
    let pid = gr.generation_pid(1);
    gr.wait_stderr(&format!("http-server[{pid}]: ready"));
    pid
}

/// The pid that answered `GET /` at `target`.
fn http_pid(target: Target) -> i32 {
    http::get(&target, "/")
        .unwrap_or_else(|failure| panic!("GET / at {target:?} failed: {failure:?}"))
        .pid()
}

/// The X-Pid of a `GET /` sent over the abstract unix socket `name`.
fn http_pid_abstract(name: &str) -> i32 {
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("the name fits");
    let mut stream = UnixStream::connect_addr(&addr).expect("the abstract socket accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("a timeout can be set");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .expect("the request is sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("a complete response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case("x-pid")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no X-Pid header in {response:?}"))
}

/// The answer to one datagram sent to the UDP listener at `addr`.
fn udp_echo(addr: SocketAddr, payload: &str) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a local UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("a timeout can be set");
    socket
        .send_to(payload.as_bytes(), addr)
        .expect("the datagram is sent");
    let mut buffer = [0u8; 1024];
    let (len, from) = socket.recv_from(&mut buffer).expect("an echo arrives");
    assert_eq!(from, addr, "the echo comes from the listener");
    String::from_utf8_lossy(&buffer[..len]).into_owned()
}

/// Asserts graceful-run failed on its own (125) with exactly one stderr line, naming
/// `--listen` and `spec`, before starting any child.
fn assert_listen_failure(gr: &mut Gr, spec: &str) {
    assert_eq!(code(gr.wait_exit()), Some(125), "{}", gr.output());
    let lines: Vec<String> = gr
        .stderr
        .snapshot()
        .into_iter()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected\n{}", gr.output());
    assert!(
        lines[0].contains("--listen") && lines[0].contains(spec),
        "the error names --listen and {spec}\n{}",
        gr.output()
    );
    assert!(
        gr.stdout.snapshot().is_empty(),
        "no child ran\n{}",
        gr.output()
    );
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket())
}

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .expect("the path exists")
        .ino()
}

/// Proves `listener` still accepts: a client's bytes arrive through it. Connections that were
/// opened and closed before (graceful-run's liveness check) are skipped.
fn assert_still_serves(listener: &UnixListener, path: &Path) {
    let mut client = UnixStream::connect(path).expect("the socket still accepts");
    client.write_all(b"ping").expect("the client writes");
    drop(client);
    for _ in 0..8 {
        let (mut server_side, _) = listener.accept().expect("accept works");
        let mut received = Vec::new();
        server_side
            .read_to_end(&mut received)
            .expect("the connection reads");
        if received == b"ping" {
            return;
        }
    }
    panic!("the client's connection never reached the test's listener");
}

// ---------------------------------------------------------------------------------------------
// What the child receives

/// Five listeners of every kind arrive at fds 3-7 in order, with the printed addresses,
/// inheritable, blocking, named in LISTEN_FDNAMES, with LISTEN_PID the child's own pid and
/// no other fd.
#[test]
fn child_receives_every_listener_and_nothing_else() {
    let dir = TempDir::new("sockets-all");
    let name = abstract_name("all");
    let unix = format!("unix:{}", dir.join("a.sock").display());
    let abstract_spec = format!("@{name}");
    let (gr, report) = report_under(&[
        "-l",
        "127.0.0.1:0",
        "-l",
        "[::1]:0,name=v6",
        "-l",
        "udp://127.0.0.1:0",
        "-l",
        &abstract_spec,
        "-l",
        &unix,
    ]);

    assert_eq!(report.pid(), gr.generation_pid(1));
    assert_eq!(report.env("LISTEN_PID"), report.pid().to_string());
    assert_eq!(report.env("LISTEN_FDS"), "5");
    assert_eq!(
        report.env("LISTEN_FDNAMES"),
        "unknown:v6:unknown:unknown:unknown"
    );
    let expected = [
        (3, "Stream", "inet", "true"),
        (4, "Stream", "inet6", "true"),
        (5, "Datagram", "inet", "false"),
        (6, "Stream", "unix", "true"),
        (7, "Stream", "unix", "true"),
    ];
    for (index, (fd, kind, family, listening)) in expected.into_iter().enumerate() {
        let printed = gr.listen_addr(index);
        assert_eq!(report.fd(fd, "socket"), kind, "fd {fd}");
        assert_eq!(report.fd(fd, "family"), family, "fd {fd}");
        assert_eq!(report.fd(fd, "address"), bare_address(&printed), "fd {fd}");
        assert_eq!(report.fd(fd, "listening"), listening, "fd {fd}");
        assert_eq!(report.fd(fd, "cloexec"), "false", "fd {fd}");
        assert_eq!(report.fd(fd, "nonblock"), "false", "fd {fd}");
    }
    for index in [0, 1, 2] {
        assert_ne!(
            gr.inet_addr(index).port(),
            0,
            "port 0 is printed as the real port"
        );
    }
    assert_eq!(gr.listen_addr(3), format!("unix:@{name}"));
    assert_eq!(
        report.open_fds(),
        [0, 1, 2, 3, 4, 5, 6, 7],
        "{}",
        gr.output()
    );
}

/// fds that graceful-run itself inherited (even at fd 3, where the sockets go) do not reach
/// the child: with a listener it sees just stdio and its socket at fd 3.
#[test]
fn fds_inherited_by_graceful_run_do_not_reach_the_child() {
    for listen in [&["-l", "127.0.0.1:0"][..], &[]] {
        let mut command = graceful_run(listen, &[&probe(), "report"]);
        let file = std::fs::File::open("/dev/zero").expect("/dev/zero opens");
        let source = file.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe; it clears FD_CLOEXEC on the copies, so
        // graceful-run starts with fds 3 and 9 open on /dev/zero.
        unsafe {
            command.pre_exec(move || {
                for target in [3, 9] {
                    if libc::dup2(source, target) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            })
        };
        let (gr, report) = finish_report(Gr::spawn(command));
        drop(file);
        if listen.is_empty() {
            assert_eq!(report.open_fds(), [0, 1, 2], "{}", gr.output());
        } else {
            assert_eq!(report.open_fds(), [0, 1, 2, 3], "{}", gr.output());
            assert_eq!(
                report.fd(3, "family"),
                "inet",
                "fd 3 is the socket, not /dev/zero"
            );
        }
    }
}

/// The child starts with an empty signal mask and nothing ignored: SIGPIPE at its default,
/// although graceful-run's Rust runtime ignores it.
#[test]
fn child_starts_with_default_signals_and_empty_mask() {
    let mut command = graceful_run(&["-l", "127.0.0.1:0"], &[&probe(), "report"]);
    with_signal_state(&mut command, &[], &[]);
    let (_gr, report) = finish_report(Gr::spawn(command));
    assert_eq!(report.mask("sigign"), 0, "no signal is ignored");
    assert_eq!(report.mask("sigblk"), 0, "no signal is blocked");
}

/// Signals ignored when graceful-run started (as under nohup or `trap ''`) stay ignored in
/// the child, and only those.
#[test]
fn signals_ignored_at_start_stay_ignored_in_the_child() {
    let ignored = signal_bits(&[libc::SIGHUP, libc::SIGUSR1]);
    let control = direct_report(with_trap("HUP USR1", &[&probe(), "report"]));
    assert_eq!(
        control.mask("sigign"),
        ignored,
        "the trap alone ignores HUP and USR1"
    );

    let gr_bin = graceful_run_bin().display().to_string();
    let command = with_trap(
        "HUP USR1",
        &[&gr_bin, "-l", "127.0.0.1:0", "--", &probe(), "report"],
    );
    let (gr, report) = finish_report(Gr::spawn(command));
    assert_eq!(report.mask("sigign"), ignored, "{}", gr.output());
    assert_eq!(report.mask("sigblk"), 0);
}

/// SIGPIPE is the exception, as documented: Rust's runtime ignores it in graceful-run, so its
/// original state is unknowable and the child always gets it at its default.
#[test]
fn sigpipe_is_default_even_when_ignored_at_start() {
    let control = direct_report(with_trap("PIPE", &[&probe(), "report"]));
    assert_eq!(control.mask("sigign"), signal_bits(&[libc::SIGPIPE]));

    let gr_bin = graceful_run_bin().display().to_string();
    let command = with_trap("PIPE", &[&gr_bin, "--", &probe(), "report"]);
    let (gr, report) = finish_report(Gr::spawn(command));
    assert_eq!(report.mask("sigign"), 0, "{}", gr.output());
}

/// A signal mask graceful-run inherited (SIGUSR2 blocked) is not passed on: the child's mask
/// is empty.
#[test]
fn signal_mask_inherited_by_graceful_run_is_not_passed_on() {
    let mut control = Command::new(probe());
    control.arg("report");
    with_signal_state(&mut control, &[], &[libc::SIGUSR2]);
    assert_eq!(
        direct_report(control).mask("sigblk"),
        signal_bits(&[libc::SIGUSR2]),
        "the setup alone blocks SIGUSR2"
    );

    let mut command = graceful_run(&["-l", "127.0.0.1:0"], &[&probe(), "report"]);
    with_signal_state(&mut command, &[], &[libc::SIGUSR2]);
    let (gr, report) = finish_report(Gr::spawn(command));
    assert_eq!(report.mask("sigblk"), 0, "{}", gr.output());
}

/// A generation that set O_NONBLOCK on its socket and crashed does not hand a non-blocking
/// socket to the next one: graceful-run clears the flag before each spawn.
#[test]
fn blocking_mode_is_reset_for_the_next_generation() {
    let dir = TempDir::new("sockets-nonblock");
    // The first generation leaves a marker and exits 3 with fd 3 non-blocking; the restarted
    // one reports. `exec` keeps the pid, so LISTEN_PID stays right.
    let script = "if [ -e \"$1/crashed\" ]; then exec \"$2\" report; fi; \
                  : > \"$1/crashed\"; exec \"$2\" nonblock-exit 3";
    let dir_arg = dir.path().display().to_string();
    let gr = Gr::spawn(graceful_run(
        &[
            "--restart-policy",
            "on-failure",
            "--restart-delay",
            "10ms",
            "-l",
            "127.0.0.1:0",
        ],
        &["sh", "-c", script, "sh", &dir_arg, &probe()],
    ));
    gr.wait_stderr("gen 1 (pid");
    gr.wait_stderr("exited with status 3");
    let second = gr.generation_pid(2);
    let (gr, report) = finish_report(gr);
    assert_eq!(report.pid(), second, "{}", gr.output());
    assert_eq!(report.fd(3, "family"), "inet");
    assert_eq!(report.fd(3, "nonblock"), "false", "{}", gr.output());
}

/// While a generation serves, O_NONBLOCK on the shared listener is its own (an event-loop
/// server set it, and blocks in accept(2) without it when a sibling wins a connection): a
/// restart must not clear it. The new generation sees the flag as the old one left it.
#[test]
fn blocking_mode_is_left_alone_while_a_generation_serves() {
    let line = nonblock_after_a_restart(&["--handover", "shared"]);
    assert!(line.contains("nonblock:true"), "{line}");
}

/// With steering each generation has a TCP listener of its own, so the O_NONBLOCK that the
/// old generation set is not the new one's: it gets a blocking socket, as systemd gives.
#[test]
fn with_steering_each_generation_gets_a_blocking_listener_of_its_own() {
    let line = nonblock_after_a_restart(&[]);
    assert!(line.contains("nonblock:false"), "{line}");
}

/// The second generation's report of its fd 3, after the first set O_NONBLOCK on its own.
fn nonblock_after_a_restart(args: &[&str]) -> String {
    let dir = TempDir::new("sockets-nonblock-serving");
    let script = "if [ -e \"$1/first\" ]; then exec \"$2\" report; fi; \
                  : > \"$1/first\"; exec \"$2\" nonblock-serve";
    let dir_arg = dir.path().display().to_string();
    let args: Vec<&str> = ["--ready", "200ms", "-l", "127.0.0.1:0"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    let mut gr = Gr::spawn(graceful_run(
        &args,
        &["sh", "-c", script, "sh", &dir_arg, &probe()],
    ));
    gr.wait_stdout("ready");
    gr.wait_stderr("ready after");
    gr.signal(libc::SIGHUP);
    let line = gr
        .stdout
        .wait_for(crate::support::DEADLINE, |l| l.starts_with("fd.3="))
        .unwrap_or_else(|| panic!("no report of fd 3\n{}", gr.output()));
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
    line
}

// ---------------------------------------------------------------------------------------------
// The environment

/// Socket-activation variables graceful-run itself inherited, all with stale values.
const STALE_ENV: [(&str, &str); 6] = [
    ("LISTEN_FDS", "9"),
    ("LISTEN_PID", "1"),
    ("LISTEN_FDNAMES", "stale"),
    ("LISTEN_PIDFDID", "77"),
    ("LISTEN_FDS_FIRST_FD", "7"),
    ("NOTIFY_SOCKET", "/nonexistent/graceful-run-test/notify"),
];

/// Runs `graceful-run ARGS -- probe report` with [`STALE_ENV`] in graceful-run's environment.
fn report_with_stale_env(args: &[&str]) -> Report {
    // A duration: with a notify-based --ready (the default) the generation has a
    // NOTIFY_SOCKET of its own.
    let args: Vec<&str> = ["--ready", "1s"].iter().chain(args).copied().collect();
    let mut command = graceful_run(&args, &[&probe(), "report"]);
    command.envs(STALE_ENV);
    finish_report(Gr::spawn(command)).1
}

/// Inherited LISTEN_*/NOTIFY_SOCKET values are replaced by fresh ones describing the child's
/// own sockets, or dropped.
#[test]
fn inherited_activation_variables_are_replaced() {
    let report = report_with_stale_env(&["-l", "127.0.0.1:0,name=web"]);
    assert_eq!(report.env("LISTEN_FDS"), "1");
    assert_eq!(report.env("LISTEN_PID"), report.pid().to_string());
    assert_eq!(report.env("LISTEN_FDNAMES"), "web");
    for unset in ["LISTEN_PIDFDID", "LISTEN_FDS_FIRST_FD", "NOTIFY_SOCKET"] {
        assert_eq!(report.env(unset), "<unset>", "{unset}");
    }
}

/// Without any listener the child sees none of the inherited activation variables.
#[test]
fn inherited_activation_variables_are_dropped_without_listeners() {
    let report = report_with_stale_env(&[]);
    for (name, _) in STALE_ENV {
        assert_eq!(report.env(name), "<unset>", "{name}");
    }
}

/// `--no-listen-pid` leaves LISTEN_PID unset (not even the inherited value) but still sets
/// LISTEN_FDS.
#[test]
fn no_listen_pid_leaves_listen_pid_unset() {
    let report = report_with_stale_env(&["--no-listen-pid", "-l", "127.0.0.1:0"]);
    assert_eq!(report.env("LISTEN_PID"), "<unset>");
    assert_eq!(report.env("LISTEN_FDS"), "1");
    assert_eq!(report.env("LISTEN_FDNAMES"), "unknown");
}

// ---------------------------------------------------------------------------------------------
// Reaching the child through its sockets

/// A TCP (IPv4 and IPv6), UDP, unix path and abstract unix listener each reach the example
/// server: HTTP answers and the UDP echo carry the child's pid.
#[test]
fn every_kind_of_listener_reaches_the_child() {
    let dir = TempDir::new("sockets-reach");
    let name = abstract_name("reach");
    let path = dir.join("http.sock");
    let unix = format!("unix:{}", path.display());
    let abstract_spec = format!("@{name}");
    let mut gr = Gr::spawn(graceful_run(
        &[
            "-l",
            "127.0.0.1:0",
            "-l",
            "[::1]:0",
            "-l",
            "udp://127.0.0.1:0",
            "-l",
            &unix,
            "-l",
            &abstract_spec,
        ],
        &[&http_server()],
    ));
    let pid = wait_http_server(&gr);
    assert_eq!(http_pid(Target::Tcp(gr.inet_addr(0))), pid, "IPv4");
    assert_eq!(http_pid(Target::Tcp(gr.inet_addr(1))), pid, "IPv6");
    assert_eq!(
        udp_echo(gr.inet_addr(2), "hello"),
        format!("pid {pid}: hello")
    );
    assert_eq!(http_pid(Target::Unix(path)), pid, "unix path");
    assert_eq!(http_pid_abstract(&name), pid, "abstract");
    stop(&mut gr);
}

/// A bare port (`0` or `:0`) is dual-stack: the same port answers on 127.0.0.1 and [::1].
#[test]
fn bare_port_is_dual_stack() {
    for spec in ["0", ":0"] {
        let mut gr = Gr::spawn(graceful_run(&["-l", spec], &[&http_server()]));
        let pid = wait_http_server(&gr);
        let port = gr.inet_addr(0).port();
        assert_ne!(port, 0);
        for ip in ["127.0.0.1", "::1"] {
            let addr = SocketAddr::new(ip.parse().expect("an IP"), port);
            assert_eq!(http_pid(Target::Tcp(addr)), pid, "-l {spec} on {addr}");
        }
        stop(&mut gr);
    }
}

/// With port 0 the printed address carries the real port: a client can connect to it.
#[test]
fn port_zero_prints_the_bound_port() {
    let mut gr = Gr::start(&["-l", "127.0.0.1:0", "--", &probe(), "signals"]);
    gr.wait_stdout("ready");
    let addr = gr.inet_addr(0);
    assert_ne!(addr.port(), 0);
    TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("connect to printed {addr}: {e}\n{}", gr.output()));
    stop(&mut gr);
}

/// `reuseport` sets SO_REUSEPORT (TCP and UDP) and only where asked; an explicit IPv6
/// address is IPv6-only while a bare port is dual-stack. (With steering, the default,
/// graceful-run sets SO_REUSEPORT on its TCP listeners for its own group: see
/// `steering.rs`.)
#[test]
fn reuseport_and_v6only_are_as_asked() {
    let (gr, report) = report_under(&[
        "--handover",
        "shared",
        "-l",
        "127.0.0.1:0,reuseport",
        "-l",
        "127.0.0.1:0",
        "-l",
        "udp://127.0.0.1:0,reuseport",
        "-l",
        "[::1]:0",
        "-l",
        ":0",
    ]);
    assert_eq!(report.fd(3, "reuseport"), "true");
    assert_eq!(report.fd(4, "reuseport"), "false");
    assert_eq!(report.fd(5, "reuseport"), "true");
    assert_eq!(report.fd(5, "socket"), "Datagram");
    assert_eq!(report.fd(6, "family"), "inet6");
    assert_eq!(report.fd(6, "v6only"), "true", "[::1] is IPv6-only");
    assert_eq!(report.fd(7, "family"), "inet6", "{}", gr.output());
    assert_eq!(report.fd(7, "v6only"), "false", "a bare port is dual-stack");
}

/// systemfd spellings keep systemfd's meaning: `tcp::0`, `http::0` and `https::0` bind
/// 127.0.0.1, and `udp::127.0.0.1:0` opens a UDP socket.
#[test]
fn systemfd_spellings_bind_localhost() {
    let (gr, report) = report_under(&[
        "-l",
        "tcp::0",
        "-l",
        "http::0",
        "-l",
        "https::0",
        "-l",
        "udp::127.0.0.1:0",
    ]);
    for (index, scheme, kind) in [
        (0, "tcp", "Stream"),
        (1, "tcp", "Stream"),
        (2, "tcp", "Stream"),
        (3, "udp", "Datagram"),
    ] {
        let fd = 3 + index as i32;
        let printed = gr.listen_addr(index);
        assert!(
            printed.starts_with(&format!("{scheme}://127.0.0.1:")),
            "{printed}"
        );
        assert_eq!(report.fd(fd, "address"), bare_address(&printed));
        assert_eq!(report.fd(fd, "socket"), kind);
        assert_eq!(report.fd(fd, "family"), "inet");
    }
}

// ---------------------------------------------------------------------------------------------
// The unix socket file

/// A stale socket file (nobody listens) is replaced, and the new socket serves the child.
#[test]
fn stale_socket_file_is_replaced() {
    let dir = TempDir::new("sockets-stale");
    let path = dir.join("app.sock");
    drop(UnixListener::bind(&path).expect("the test can bind"));
    assert!(is_socket(&path), "dropping a listener leaves its file");

    let mut gr = Gr::spawn(graceful_run(
        &["-l", &format!("unix:{}", path.display())],
        &[&http_server()],
    ));
    let pid = wait_http_server(&gr);
    // (Inode numbers are reused at once, so only serving proves the file was replaced.)
    assert_eq!(http_pid(Target::Unix(path.clone())), pid);
    stop(&mut gr);
}

/// A socket somebody listens on is not stolen: graceful-run exits 125 with one line naming
/// the spec, and the other listener keeps its file and keeps working.
#[test]
fn live_socket_is_not_replaced() {
    let dir = TempDir::new("sockets-live");
    let path = dir.join("app.sock");
    let listener = UnixListener::bind(&path).expect("the test can bind");
    let before = inode(&path);
    let spec = format!("unix:{}", path.display());

    let mut gr = Gr::start(&["-l", &spec, "--", &probe(), "report"]);
    assert_listen_failure(&mut gr, &spec);
    assert!(is_socket(&path));
    assert_eq!(inode(&path), before, "the file is untouched");
    assert_still_serves(&listener, &path);
}

/// A path that is not a socket is never replaced: exit 125, the file keeps its content.
#[test]
fn regular_file_is_not_replaced() {
    let dir = TempDir::new("sockets-file");
    let path = dir.join("app.sock");
    std::fs::write(&path, "precious").expect("the test can write");
    let spec = format!("unix:{}", path.display());

    let mut gr = Gr::start(&["-l", &spec, "--", &probe(), "report"]);
    assert_listen_failure(&mut gr, &spec);
    assert_eq!(
        std::fs::read_to_string(&path).expect("the file is still there"),
        "precious"
    );
}

/// The socket file graceful-run created is removed when it exits.
#[test]
fn socket_file_is_removed_at_exit() {
    let dir = TempDir::new("sockets-remove");
    let path = dir.join("app.sock");
    let (gr, report) = report_under(&["-l", &format!("unix:{}", path.display())]);
    assert_eq!(
        report.fd(3, "address"),
        path.display().to_string(),
        "{}",
        gr.output()
    );
    assert!(!path.exists(), "the socket file is gone after exit");
}

/// A socket path that someone else replaced while graceful-run ran is left alone at exit.
#[test]
fn replaced_socket_path_is_not_removed_at_exit() {
    let dir = TempDir::new("sockets-replaced");
    let path = dir.join("app.sock");
    let mut gr = Gr::start(&[
        "-l",
        &format!("unix:{}", path.display()),
        "--",
        &probe(),
        "signals",
    ]);
    gr.wait_stdout("ready");
    assert!(is_socket(&path), "graceful-run created the socket file");
    std::fs::remove_file(&path).expect("the test can remove it");
    std::fs::write(&path, "newer").expect("the test can write");

    stop(&mut gr);
    assert_eq!(
        std::fs::read_to_string(&path).expect("the newer file survives"),
        "newer"
    );
}

/// The socket file's mode is 0666 by default and `mode=` sets it.
#[test]
fn socket_file_mode_is_as_asked() {
    let dir = TempDir::new("sockets-mode");
    let default_path = dir.join("default.sock");
    let private_path = dir.join("private.sock");
    let mut gr = Gr::start(&[
        "-l",
        &format!("unix:{}", default_path.display()),
        "-l",
        &format!("unix:{},mode=0600", private_path.display()),
        "--",
        &probe(),
        "signals",
    ]);
    gr.wait_stdout("ready");
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("the socket file exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&default_path), 0o666);
    assert_eq!(mode(&private_path), 0o600);
    stop(&mut gr);
}

/// When a later listener cannot be opened, graceful-run exits 125 without starting the
/// command, and removes the socket file an earlier listener had created.
#[test]
fn failed_listener_undoes_earlier_ones() {
    let dir = TempDir::new("sockets-undo");
    let path = dir.join("ok.sock");
    let taken = TcpListener::bind("127.0.0.1:0").expect("the test can bind");
    let busy_spec = taken.local_addr().expect("a bound address").to_string();

    let mut gr = Gr::start(&[
        "-l",
        &format!("unix:{}", path.display()),
        "-l",
        &busy_spec,
        "--",
        &probe(),
        "report",
    ]);
    assert_listen_failure(&mut gr, &busy_spec);
    assert!(!gr.stderr.text().contains("started"), "{}", gr.output());
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "no socket file is left behind"
    );
}

/// A live socket whose backlog is full (a stalled server) is refused at once: the liveness
/// probe does not block. (A blocking connect waited for an accept that never came: startup
/// hung forever.)
#[test]
fn live_socket_with_a_full_backlog_is_refused_promptly() {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
    };
    let dir = TempDir::new("sockets-full");
    let path = dir.join("app.sock");
    let server = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("a socket");
    let addr = UnixAddr::new(&path).expect("a short path");
    bind(server.as_raw_fd(), &addr).expect("the temp dir is writable");
    listen(&server, Backlog::new(0).expect("0 is a valid backlog")).expect("listens");
    // Fill the backlog: non-blocking connects until the kernel says it is full.
    let mut clients = Vec::new();
    loop {
        let client = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )
        .expect("a socket");
        match connect(client.as_raw_fd(), &addr) {
            Ok(()) => clients.push(client),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(clients.len() < 1000, "the backlog never filled");
    }
    let before = inode(&path);
    let spec = format!("unix:{}", path.display());
    let mut gr = Gr::start(&["-l", &spec, "--", &probe(), "report"]);
    let status = gr.wait_exit_within(Duration::from_secs(10));
    assert_eq!(code(status), Some(125), "{}", gr.output());
    gr.wait_stderr("another process is listening on this socket");
    assert_eq!(inode(&path), before, "the file is untouched");
}
