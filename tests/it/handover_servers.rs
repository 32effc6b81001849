//! The real servers of issue 16's handover tests (tests/fixtures/servers), each under
//! graceful-run the way its documentation says to run it under a supervisor: it takes its
//! socket from graceful-run, serves `GET /` and `GET /slow`, survives a restart, and stops
//! with its documented status. They are the servers that lose requests across restarts with
//! a shared socket (bench/handover.py measures how many); [`SERVERS`] is where a test finds
//! how to run each.

use std::process::Command;

use nix::libc;

use crate::support::http::{self, Target};
use crate::support::{DEADLINE, Gr, code, graceful_run_bin, killed_by};

/// How a fixture server runs under graceful-run.
pub struct Server {
    pub name: &'static str,
    /// graceful-run's flags for it.
    pub flags: &'static [&'static str],
    /// The command, run in tests/fixtures/servers.
    pub command: &'static [&'static str],
    /// How graceful-run exits after TERM: `Ok(code)` or `Err(signal)`.
    pub stops_with: Result<i32, i32>,
}

pub const SERVERS: &[Server] = &[
    // `--bind fd://N` is hypercorn's way to take an inherited socket; TERM is its graceful stop.
    Server {
        name: "hypercorn",
        flags: &[],
        command: &["hypercorn", "--bind", "fd://3", "app:asgi"],
        stops_with: Ok(0),
    },
    // uwsgi takes LISTEN_FDS itself (checking LISTEN_PID) and sends READY=1; `--protocol
    // http` makes that socket speak HTTP. Its TERM is a "brutal reload" and `--die-on-term` a
    // brutal stop; the hook is its documented graceful stop on TERM.
    Server {
        name: "uwsgi",
        flags: &[],
        command: &[
            "uwsgi",
            "--protocol",
            "http",
            "--wsgi-file",
            "app.py",
            "--master",
            "--processes",
            "2",
            // No line per request: under load they fill the stderr pipe the test shares
            // with graceful-run, whose lines are then dropped (it never blocks on stderr).
            "--disable-logging",
            "--hook-master-start",
            "unix_signal:15 gracefully_kill_them_all",
        ],
        stops_with: Ok(0),
    },
    // uwsgi's other common setup: `--die-on-term`, a brutal stop (its workers are killed at
    // once, mid-request); it exits 0.
    Server {
        name: "uwsgi-die-on-term",
        flags: &[],
        command: &[
            "uwsgi",
            "--protocol",
            "http",
            "--wsgi-file",
            "app.py",
            "--master",
            "--processes",
            "2",
            "--disable-logging",
            "--die-on-term",
        ],
        stops_with: Ok(0),
    },
    // Starman reads Server::Starter's SERVER_STARTER_PORT; QUIT is its graceful stop.
    Server {
        name: "starman",
        flags: &["--compat", "server-starter", "--map-signal", "TERM:QUIT"],
        command: &["starman", "--workers", "2", "app.psgi"],
        stops_with: Ok(0),
    },
    // uvicorn re-raises TERM after its shutdown (docs/servers.md).
    Server {
        name: "uvicorn",
        flags: &["--exit-code-map", "143:0"],
        command: &["uvicorn", "--fd", "3", "app:asgi"],
        stops_with: Ok(0),
    },
    // No signal handling: TERM kills it, and graceful-run dies of it like the command.
    Server {
        name: "http.server",
        flags: &[],
        command: &["python3", "plain_http_server.py"],
        stops_with: Err(libc::SIGTERM),
    },
];

pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/servers")
}

pub fn server(name: &str) -> &'static Server {
    SERVERS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no fixture server {name}"))
}

/// `server` under graceful-run on a free loopback port, with `extra` flags.
pub fn start(server: &Server, extra: &[&str]) -> Gr {
    Gr::spawn(command(server, extra))
}

/// The command line of [`start`], to add to.
pub fn command(server: &Server, extra: &[&str]) -> Command {
    let mut command = Command::new(graceful_run_bin());
    command
        .args(["-l", "127.0.0.1:0", "--stop-timeout", "20s"])
        .args(server.flags)
        .args(extra)
        .arg("--")
        .args(server.command)
        .current_dir(fixtures_dir())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS");
    command
}

fn wait_line(gr: &Gr, needle: &str) {
    gr.stderr
        .wait_for(DEADLINE, |l| {
            l.starts_with("graceful-run: ") && l.contains(needle)
        })
        .unwrap_or_else(|| panic!("no line with {needle:?}\n{}", gr.output()));
}

/// Serves, survives a restart, serves a slow request, stops with its documented status.
fn serves_and_restarts(name: &str) {
    let server = server(name);
    let mut gr = start(server, &[]);
    gr.stderr
        .wait_for(DEADLINE, |l| {
            l.contains("gen 1 (pid ") && l.contains("ready")
        })
        .unwrap_or_else(|| panic!("{name} never became ready\n{}", gr.output()));
    let target = Target::Tcp(gr.inet_addr(0));
    let reply = gr.poll("it answers GET /", || http::get(&target, "/").ok());
    assert!(
        reply.body.starts_with("hello from pid "),
        "{name}: {reply:?}"
    );

    gr.signal(libc::SIGHUP);
    wait_line(&gr, "takes over from gen 1");
    // Once the old generation is gone: until then a request may reach it as it stops and
    // be lost, which is what issue 16 is about, not what this test checks.
    gr.stderr
        .wait_for(DEADLINE, |l| {
            l.contains("gen 1 (pid ") && (l.contains("exited") || l.contains("killed"))
        })
        .unwrap_or_else(|| panic!("{name}: gen 1 never stopped\n{}", gr.output()));
    let reply = http::get(&target, "/slow?ms=300")
        .unwrap_or_else(|e| panic!("{name}: /slow failed: {e:?}\n{}", gr.output()));
    assert!(
        reply.body.starts_with("slow response from pid "),
        "{reply:?}"
    );

    gr.signal(libc::SIGTERM);
    let status = gr.wait_exit();
    match server.stops_with {
        Ok(expected) => assert_eq!(code(status), Some(expected), "{}", gr.output()),
        Err(signal) => assert_eq!(killed_by(status), Some(signal), "{}", gr.output()),
    }
}

#[test]
#[cfg_attr(
    not(has_hypercorn),
    ignore = "hypercorn not installed: python3 -m pip install hypercorn"
)]
fn hypercorn_serves_under_graceful_run() {
    serves_and_restarts("hypercorn");
}

#[test]
#[cfg_attr(
    not(has_uwsgi),
    ignore = "uwsgi not installed: python3 -m pip install uwsgi"
)]
fn uwsgi_serves_under_graceful_run() {
    serves_and_restarts("uwsgi");
}

#[test]
#[cfg_attr(
    not(has_starman),
    ignore = "starman not installed: apt-get install starman"
)]
fn starman_serves_under_graceful_run() {
    serves_and_restarts("starman");
}

#[test]
#[cfg_attr(
    not(has_uvicorn),
    ignore = "uvicorn not installed: python3 -m pip install uvicorn"
)]
fn uvicorn_serves_under_graceful_run() {
    serves_and_restarts("uvicorn");
}

#[test]
fn plain_http_server_serves_under_graceful_run() {
    serves_and_restarts("http.server");
}
