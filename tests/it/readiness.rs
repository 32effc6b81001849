//! Readiness without cooperation (`--ready auto`, the default, and `accepting`), end to end:
//! graceful-run with its default flags in front of servers that never send READY=1. A server
//! that boots slowly is handed over to only once it waits on its socket, with no failed
//! request; a server that never touches fd 3 is warned about and never counted ready. (Each
//! waiting style, epoll, poll, select and blocking accept, is shown against real servers of
//! several languages in `accepting.rs`.)

use std::time::{Duration, Instant};

use nix::libc;

use crate::support::http::{Load, Target};
use crate::support::{Gr, code};

/// A Python HTTP/1.0 server on fd 3 that sleeps `argv[1]` seconds before it starts polling
/// the socket (as an application loading its code would), answers with its pid, and on TERM
/// finishes the request at hand and exits. It never sends READY=1.
const SLOW_SERVER: &str = r#"
import os, selectors, signal, socket, sys, time
time.sleep(float(sys.argv[1]))
listener = socket.socket(fileno=3)
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
selector = selectors.PollSelector()
selector.register(listener, selectors.EVENT_READ)
while not stop:
    if not selector.select(0.1):
        continue
    conn, _ = listener.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                break
            request += chunk
        conn.sendall(b"HTTP/1.0 200 OK\r\nX-Pid: %d\r\nContent-Length: 2\r\n\r\nok" % os.getpid())
"#;

/// A server that binds a port of its own and never looks at fd 3: the newcomer's mistake.
const OWN_PORT_SERVER: &str = r#"
import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
while True:
    time.sleep(1)
"#;

fn slow_server(gr_flags: &[&str], delay: &str) -> Gr {
    let mut args: Vec<&str> = gr_flags.to_vec();
    args.extend([
        "-l",
        "127.0.0.1:0",
        "--",
        "python3",
        "-c",
        SLOW_SERVER,
        delay,
    ]);
    Gr::start(&args)
}

/// With the default flags, a server that takes 2 s before it waits on its socket is ready
/// when it waits, not before: the old one serves meanwhile, and no request fails.
#[test]
fn default_readiness_waits_for_a_slow_server_and_loses_no_request() {
    let mut gr = slow_server(&[], "2");
    gr.wait_stderr("gen 1 (pid");
    let line = gr.wait_stderr("ready after");
    assert!(line.contains("(accepting)"), "{line}");
    let load = Load::start(Target::Tcp(gr.inet_addr(0)), 4);
    load.wait_successes(10);
    for next in 2..=3u64 {
        let asked = Instant::now();
        gr.signal(libc::SIGHUP);
        let line = gr
            .stderr
            .wait_for(crate::support::DEADLINE, |l| {
                l.contains(&format!("gen {next} (pid")) && l.contains("takes over")
            })
            .unwrap_or_else(|| panic!("gen {next} never took over\n{}", gr.output()));
        assert!(
            asked.elapsed() >= Duration::from_secs(2),
            "took over before it could serve: {line}"
        );
        load.wait_successes(10);
    }
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:?}\n{}", gr.output());
    gr.terminate_expecting_exit(0);
}

/// `--ready accepting` ignores READY=1 but still sees the server wait.
#[test]
fn accepting_mode_sees_a_polling_server() {
    let mut gr = slow_server(&["--ready", "accepting"], "0");
    let line = gr.wait_stderr("ready after");
    assert!(line.contains("(accepting)"), "{line}");
    gr.terminate_expecting_exit(0);
}

/// A command that binds its own port instead of taking fd 3 is never ready: graceful-run
/// says so once, naming the socket, then stops it at --ready-timeout (exit 124).
#[test]
fn a_server_that_ignores_its_socket_is_warned_about_and_never_ready() {
    let mut gr = Gr::start(&[
        "--ready-timeout",
        "7s",
        "-l",
        "127.0.0.1:0",
        "--",
        "python3",
        "-c",
        OWN_PORT_SERVER,
    ]);
    let warning = gr.wait_stderr("not waiting for connections on");
    assert!(warning.contains("tcp://127.0.0.1:"), "{warning}");
    assert!(warning.contains("LISTEN_FDS"), "{warning}");
    assert_eq!(code(gr.wait_exit()), Some(124), "{}", gr.output());
    assert_eq!(
        gr.stderr
            .count(|l| l.contains("not waiting for connections on")),
        1,
        "{}",
        gr.output()
    );
}
