//! The example servers of docs/servers.md, one per language and server (Go net/http, Python's
//! standard library, uvicorn, gunicorn, Node.js, puma, Rust with tokio), each run under
//! graceful-run as its guide says: it serves; it survives 10 restarts under a load of new
//! connections with zero failed requests; a slow request in flight at TERM is answered; and
//! graceful-run then exits with the documented status (0).
//!
//! A toolchain that is not installed skips its test, loudly, except when
//! GRACEFUL_RUN_TEST_REQUIRE_LANGUAGES is set (as `.ci/run` does after installing them all):
//! then a missing toolchain fails. The decision is made in one place, [`prerequisite`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::libc;

use crate::support::http::{self, Load, Target};
use crate::support::{DEADLINE, Gr, code, example_file, graceful_run_bin, path_with_graceful_run};

/// Restarts under load, as issue 9 asks.
const RESTARTS: u64 = 10;
/// Load clients: modest, for a 2-core machine running other tests at the same time.
const CLIENTS: usize = 6;
/// How long the request in flight at TERM takes.
const SLOW_MS: u64 = 1500;

/// Set in CI: a missing toolchain fails its test instead of skipping it.
const REQUIRE: &str = "GRACEFUL_RUN_TEST_REQUIRE_LANGUAGES";

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Whether `command` runs and exits 0.
fn runs(command: &[&str]) -> bool {
    Command::new(command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the test `test` can run: `check` (a command) succeeds. If it does not, the test is
/// skipped with a line saying how to install `what`, or fails when [`REQUIRE`] is set.
pub(crate) fn prerequisite(test: &str, check: &[&str], what: &str) -> bool {
    if runs(check) {
        return true;
    }
    assert!(
        std::env::var_os(REQUIRE).is_none(),
        "{REQUIRE} is set but `{}` fails: install {what}",
        check.join(" ")
    );
    eprintln!("\n*** SKIPPED languages::{test}: {what} is not installed ***\n");
    false
}

/// Starts graceful-run on a free loopback port with `flags`, then `--` and `command`.
fn start(flags: &[&str], command: &[String]) -> Gr {
    let mut cmd = Command::new(graceful_run_bin());
    cmd.args(["-l", "127.0.0.1:0", "--stop-timeout", "20s"])
        .args(flags)
        .arg("--")
        .args(command)
        .env("PATH", path_with_graceful_run())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS");
    Gr::spawn(cmd)
}

/// Waits for graceful-run's line about generation `generation` that contains `needle`.
fn wait_gen(gr: &Gr, generation: u64, needle: &str) {
    let prefix = format!("graceful-run: gen {generation} (pid ");
    gr.stderr
        .wait_for(DEADLINE, |l| l.starts_with(&prefix) && l.contains(needle))
        .unwrap_or_else(|| {
            panic!(
                "no line of gen {generation} with {needle:?}\n{}",
                gr.output()
            )
        });
}

fn restarts_logged(gr: &Gr) -> usize {
    gr.stderr
        .count(|l| l.starts_with("graceful-run: ") && l.contains("SIGHUP received: restarting"))
}

/// The whole scenario of the module doc, for the server that `command` runs.
fn serves_restarts_and_stops(flags: &[&str], command: Vec<String>) {
    let mut gr = start(flags, &command);
    wait_gen(&gr, 1, "ready after");
    let address = gr.inet_addr(0);
    let target = Target::Tcp(address);

    // It serves.
    let reply = gr.poll("the server answers GET /", || http::get(&target, "/").ok());
    assert!(reply.body.starts_with("hello from pid "), "{reply:?}");

    // 10 restarts under load, not one failed request.
    let load = Load::start(target.clone(), CLIENTS);
    load.wait_successes(CLIENTS);
    for generation in 1..=RESTARTS {
        let seen = restarts_logged(&gr);
        gr.signal(libc::SIGHUP);
        gr.poll("graceful-run logs the SIGHUP", || {
            (restarts_logged(&gr) > seen).then_some(())
        });
        wait_gen(
            &gr,
            generation + 1,
            &format!("takes over from gen {generation}"),
        );
        // The new generation serves before the next restart.
        load.wait_successes(CLIENTS);
    }
    let report = load.stop();
    assert_eq!(
        report.failed(),
        0,
        "failed requests across {RESTARTS} restarts: {report:?}\n{}",
        gr.output()
    );
    assert!(
        report.pids.len() >= 2,
        "only {:?} answered across {RESTARTS} restarts\n{}",
        report.pids,
        gr.output()
    );

    // A slow request in flight at TERM is answered; then graceful-run exits 0.
    let slow = SlowRequest::send(address, &gr);
    gr.signal(libc::SIGTERM);
    let answer = slow.answer();
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer:?}\n{}",
        gr.output()
    );
    assert!(answer.contains("slow response from pid "), "{answer:?}");
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

/// A `GET /slow` that the server has read (so it is in flight) when `send` returns.
struct SlowRequest(TcpStream);

impl SlowRequest {
    fn send(address: SocketAddr, gr: &Gr) -> SlowRequest {
        let mut stream = TcpStream::connect(address).expect("the server listens");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("a read timeout can be set");
        let request =
            format!("GET /slow?ms={SLOW_MS} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .expect("the request is sent");
        let client = stream.local_addr().expect("a connected socket has one");
        gr.poll("the server has read the slow request", || {
            server_has_read(address, client).then_some(())
        });
        SlowRequest(stream)
    }

    fn answer(mut self) -> String {
        let mut raw = Vec::new();
        let _ = self.0.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw).into_owned()
    }
}

/// Whether the server side of the loopback connection `server` <- `client` exists and has
/// nothing left in its receive queue: a process accepted it and read the request. (A connection
/// still waiting in the accept queue keeps its bytes queued.)
fn server_has_read(server: SocketAddr, client: SocketAddr) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let port_of = |field: &str| {
        field
            .rsplit_once(':')
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
    };
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 4
            && port_of(fields[1]) == Some(server.port())
            && port_of(fields[2]) == Some(client.port())
            && fields[4]
                .split_once(':')
                .is_some_and(|(_, rx)| u64::from_str_radix(rx, 16) == Ok(0))
    })
}

pub(crate) fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// Builds examples/go into cargo's per-target temp dir (an incremental rebuild is quick);
/// GOPROXY=off proves it needs no module download.
pub(crate) fn build_go() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-example");
    let binary = out.join("server");
    let output = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(examples_dir().join("go"))
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", out.join("cache"))
        .output()
        .expect("go runs");
    assert!(
        output.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

// ----- one test per example ------------------------------------------------------------------

/// examples/go: net/http, listener from fd 3, READY=1 sent itself, Shutdown on TERM.
#[test]
#[cfg_attr(not(has_go), ignore = "Go not installed: apt-get install golang-go")]
fn go_net_http() {
    if !prerequisite(
        "go_net_http",
        &["go", "version"],
        "Go (apt-get install golang-go)",
    ) {
        return;
    }
    let binary = build_go();
    serves_restarts_and_stops(&["--ready", "notify"], vec![binary.display().to_string()]);
}

/// examples/python/server.py: the standard library, `socket.socket(fileno=3)`.
#[test]
fn python_stdlib() {
    serves_restarts_and_stops(
        &["--ready", "notify"],
        strings(&["python3", &example_file("python/server.py")]),
    );
}

/// examples/python/uvicorn_server.py: uvicorn on fd 3 (as `uvicorn --fd 3`), with the
/// shutdown order fixed. uvicorn sends no READY=1, and re-raises TERM after its graceful
/// shutdown (status 143), which the guide maps to 0.
#[test]
#[cfg_attr(
    not(has_uvicorn),
    ignore = "uvicorn not installed: python3 -m pip install uvicorn"
)]
fn python_uvicorn() {
    let check = ["python3", "-c", "import uvicorn"];
    if !prerequisite("python_uvicorn", &check, "uvicorn (pip install uvicorn)") {
        return;
    }
    serves_restarts_and_stops(
        &["--ready", "auto", "--exit-code-map", "143:0"],
        strings(&["python3", &example_file("python/uvicorn_server.py")]),
    );
}

/// examples/python/app.py under gunicorn, which reads LISTEN_FDS and sends READY=1.
#[test]
#[cfg_attr(
    not(has_gunicorn),
    ignore = "gunicorn not installed: python3 -m pip install gunicorn"
)]
fn python_gunicorn() {
    let check = ["python3", "-c", "import gunicorn"];
    if !prerequisite("python_gunicorn", &check, "gunicorn (pip install gunicorn)") {
        return;
    }
    let app_dir = example_file("python");
    let config = example_file("python/gunicorn.conf.py");
    serves_restarts_and_stops(
        &["--ready", "notify"],
        strings(&[
            "python3", "-m", "gunicorn", "--chdir", &app_dir, "-c", &config, "app:wsgi",
        ]),
    );
}

/// examples/node/server.js: `listen({fd: 3})`, READY=1 through `graceful-run notify`.
#[test]
#[cfg_attr(
    not(has_node),
    ignore = "Node.js not installed: apt-get install nodejs"
)]
fn node() {
    if !prerequisite(
        "node",
        &["node", "--version"],
        "Node.js (apt-get install nodejs)",
    ) {
        return;
    }
    serves_restarts_and_stops(
        &["--ready", "notify"],
        strings(&["node", &example_file("node/server.js")]),
    );
}

/// examples/ruby under puma, which takes LISTEN_FDS itself.
#[test]
#[cfg_attr(not(has_puma), ignore = "puma not installed: apt-get install puma")]
fn ruby_puma() {
    if !prerequisite(
        "ruby_puma",
        &["puma", "--version"],
        "puma (apt-get install puma)",
    ) {
        return;
    }
    serves_restarts_and_stops(
        &["--ready", "auto"],
        strings(&[
            "puma",
            "-C",
            &example_file("ruby/puma.rb"),
            &example_file("ruby/config.ru"),
        ]),
    );
}

/// examples/rust: tokio, built by cargo as the `tokio-server` example.
#[test]
fn rust_tokio() {
    serves_restarts_and_stops(
        &["--ready", "notify"],
        vec![
            crate::support::example("tokio-server")
                .display()
                .to_string(),
        ],
    );
}

#[test]
fn skipping_is_decided_in_one_place() {
    // A check that cannot succeed: skipped (false) locally, a failure when REQUIRE is set.
    let check = ["/nonexistent/graceful-run-test-tool"];
    if std::env::var_os(REQUIRE).is_none() {
        assert!(!prerequisite(
            "skipping_is_decided_in_one_place",
            &check,
            "nothing"
        ));
    } else {
        let result = std::panic::catch_unwind(|| prerequisite("x", &check, "nothing"));
        assert!(
            result.is_err(),
            "{REQUIRE} is set, yet a missing tool was skipped"
        );
    }
}

// ----- READY=1 to a plain path ---------------------------------------------------------------

/// The examples that send READY=1 themselves also reach a NOTIFY_SOCKET that is a filesystem
/// path (graceful-run's own is `@abstract` today; it is moving to paths). graceful-run gives
/// them fd 3 (`--ready 1s`, so it sets no NOTIFY_SOCKET of its own) and `env` sets the path.
#[test]
fn examples_notify_a_plain_path() {
    let mut servers: Vec<(&str, Vec<String>)> = vec![
        (
            "python",
            strings(&["python3", &example_file("python/server.py")]),
        ),
        (
            "rust",
            vec![
                crate::support::example("tokio-server")
                    .display()
                    .to_string(),
            ],
        ),
    ];
    if prerequisite("examples_notify_a_plain_path", &["go", "version"], "Go") {
        servers.push(("go", vec![build_go().display().to_string()]));
    }
    if prerequisite(
        "examples_notify_a_plain_path",
        &["node", "--version"],
        "Node.js",
    ) {
        servers.push(("node", strings(&["node", &example_file("node/server.js")])));
    }
    for (name, command) in servers {
        let dir = crate::support::TempDir::new("lang-notify-path");
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("the dir is writable");
        socket
            .set_read_timeout(Some(DEADLINE))
            .expect("a read timeout can be set");
        let mut with_env = strings(&["env", &format!("NOTIFY_SOCKET={}", path.display())]);
        with_env.extend(command);
        let mut gr = start(&["--ready", "1s"], &with_env);
        let mut buf = [0u8; 4096];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: no READY=1 ({e})\n{}", gr.output()));
        assert_eq!(&buf[..n], b"READY=1", "{name}\n{}", gr.output());
        gr.signal(libc::SIGTERM);
        assert_eq!(code(gr.wait_exit()), Some(0), "{name}\n{}", gr.output());
    }
}
