//! Issue 16 proven with real servers (tests/fixtures/servers, run as [`handover_servers`]
//! says): graceful-run restarts each 10 times under a load of new connections and, with its
//! default flags (`--handover steer`), no request fails, whatever the server does at its stop
//! signal.
//!
//! Two kinds of servers lose requests when every generation shares one socket:
//!
//! - **Servers that accept after their stop signal** (hypercorn, uvicorn, Starman): they keep
//!   calling `accept()` for a moment after TERM (QUIT for Starman), then close what they
//!   accepted without answering. With steering their listener gets no new connection once the
//!   replacement is ready, and their stop signal waits until its queue is empty, so there is
//!   nothing left for them to accept. The same test shows that `--handover shared` loses
//!   requests with them: restarts go on (at most [`SHARED_RESTARTS`]) until one request
//!   failed. uwsgi in its graceful mode (`gracefully_kill_them_all`) stops accepting at once
//!   and lost nothing either way (none in 20 shared restarts under bench/handover.py); its test
//!   proves the zero only.
//! - **Servers that exit on TERM mid-request** (Python's plain `http.server`, uwsgi with
//!   `--die-on-term`): a request in flight fails on every restart and every stop. With the
//!   default flags a 2 s request completes across a restart (the old generation drains,
//!   unsignalled, until its connection is idle) and across a stop (the stop signal waits
//!   for the busy connection); with `--handover shared` the same request fails at once, every
//!   time.
//!
//! The load is bounded: [`CLIENTS`] threads on loopback, each request on a new connection
//! (`Connection: close`), for as long as the restarts take.

use std::collections::BTreeSet;
use std::thread::JoinHandle;

use nix::libc;

use crate::handover_servers::{self, Server};
use crate::support::http::{self, Failure, Load, LoadReport, Reply, Target};
use crate::support::{DEADLINE, Gr, TempDir, code, killed_by};

/// Restarts under load with the default flags.
const RESTARTS: u64 = 10;
/// Load clients: enough that connections wait in the backlog at every restart, modest for a
/// 2-core machine running other tests beside.
const CLIENTS: usize = 6;
/// The most restarts a `--handover shared` run makes before it must have lost a request.
/// Measured with this load, 20 runs per server: the first loss came after 1 to 11 restarts,
/// a loss in 26 % of uvicorn's restarts, 29 % of hypercorn's, 44 % of Starman's. No loss in
/// 50 restarts has a chance below 1e-6; a run usually stops after 1 to 5.
const SHARED_RESTARTS: u64 = 50;

// ----- helpers --------------------------------------------------------------------------------

/// `(generation, message)` of graceful-run's line about a generation.
fn about(line: &str) -> Option<(u64, &str)> {
    let rest = line.strip_prefix("graceful-run: gen ")?;
    let (generation, rest) = rest.split_once(" (pid ")?;
    let (_, message) = rest.split_once("): ")?;
    Some((generation.parse().ok()?, message))
}

/// Waits for graceful-run's line about `generation` containing `needle`.
fn wait_gen(gr: &Gr, generation: u64, needle: &str) -> String {
    gr.stderr
        .wait_for(DEADLINE, |l| {
            about(l).is_some_and(|(g, m)| g == generation && m.contains(needle))
        })
        .unwrap_or_else(|| {
            panic!(
                "no line of gen {generation} with {needle:?}\n{}",
                gr.output()
            )
        })
}

/// Waits for generation `generation`'s main process to be gone (exited or killed).
fn wait_gone(gr: &Gr, generation: u64) {
    gr.stderr
        .wait_for(DEADLINE, |l| {
            about(l).is_some_and(|(g, m)| {
                g == generation && (m.starts_with("exited") || m.starts_with("killed"))
            })
        })
        .unwrap_or_else(|| panic!("gen {generation} never ended\n{}", gr.output()));
}

/// `server` under graceful-run with `extra` flags, its first generation ready.
fn start(server: &Server, extra: &[&str], env: &[(&str, &str)]) -> (Gr, Target) {
    let mut command = handover_servers::command(server, extra);
    command.envs(env.iter().copied());
    let gr = Gr::spawn(command);
    wait_gen(&gr, 1, "ready after");
    let target = Target::Tcp(gr.inet_addr(0));
    (gr, target)
}

/// One restart: HUP, the next generation takes over, the replaced one is gone.
fn restart(gr: &Gr, serving: u64) {
    gr.signal(libc::SIGHUP);
    wait_gen(gr, serving + 1, &format!("takes over from gen {serving}"));
    wait_gone(gr, serving);
}

fn own_lines_with(gr: &Gr, needle: &str) -> usize {
    gr.stderr
        .count(|l| l.starts_with("graceful-run: ") && l.contains(needle))
}

/// The log says new connections were steered: each replaced generation drained before its
/// stop signal, and steering was never turned off.
fn assert_steered(gr: &Gr, generations: u64) {
    for generation in 1..generations {
        wait_gen(gr, generation, "new connections go to its replacement");
        wait_gen(gr, generation, "drained after");
    }
    for fallback in ["steering is off", "cannot be steered", "cannot steer"] {
        assert_eq!(own_lines_with(gr, fallback), 0, "{}", gr.output());
    }
}

fn stop(gr: &mut Gr, server: &Server) {
    gr.signal(libc::SIGTERM);
    let status = gr.wait_exit();
    match server.stops_with {
        Ok(expected) => assert_eq!(code(status), Some(expected), "{}", gr.output()),
        Err(signal) => assert_eq!(killed_by(status), Some(signal), "{}", gr.output()),
    }
}

fn summary(report: &LoadReport) -> String {
    format!(
        "{} ok, failed {:?}, {} pids answered",
        report.ok,
        report.failures,
        report.pids.len()
    )
}

// ----- zero failures with the default, losses with shared -------------------------------------

/// 10 restarts under load with the default flags: no failed request, every generation
/// answered, each replaced one drained before its stop signal.
fn steer_loses_nothing(name: &str) {
    let server = handover_servers::server(name);
    let (gr, target) = start(server, &[], &[]);
    restarts_lose_nothing(name, gr, target, server);
}

fn restarts_lose_nothing(name: &str, mut gr: Gr, target: Target, server: &Server) {
    let load = Load::start(target, CLIENTS);
    let mut answered = BTreeSet::new();
    for generation in 1..=RESTARTS {
        load.wait_successes(CLIENTS * 4);
        restart(&gr, generation);
        answered.extend(load.snapshot().pids.keys().copied());
    }
    load.wait_successes(CLIENTS * 4);
    let report = load.stop();
    eprintln!("{name}, steer, {RESTARTS} restarts: {}", summary(&report));
    assert_eq!(report.failed(), 0, "{}\n{}", summary(&report), gr.output());
    assert!(
        report.pids.len() > RESTARTS as usize,
        "fewer processes answered than generations ran: {}\n{}",
        summary(&report),
        gr.output()
    );
    assert_steered(&gr, RESTARTS + 1);
    stop(&mut gr, server);
}

/// The same server with `--handover shared` loses requests: restarts under the same load go
/// on until one failed, at most [`SHARED_RESTARTS`]. Returns the report.
fn shared_loses(name: &str) -> LoadReport {
    let server = handover_servers::server(name);
    let (mut gr, target) = start(server, &["--handover", "shared"], &[]);
    let load = Load::start(target, CLIENTS);
    let mut restarts = 0;
    while restarts < SHARED_RESTARTS && load.snapshot().failed() == 0 {
        load.wait_successes(CLIENTS * 4);
        restarts += 1;
        restart(&gr, restarts);
    }
    let report = load.stop();
    eprintln!("{name}, shared, {restarts} restarts: {}", summary(&report));
    assert!(
        report.failed() > 0,
        "{name} lost no request in {restarts} restarts with --handover shared: {}\n{}",
        summary(&report),
        gr.output()
    );
    assert_eq!(
        own_lines_with(&gr, "new connections go to its replacement"),
        0,
        "--handover shared steers nothing\n{}",
        gr.output()
    );
    stop(&mut gr, server);
    report
}

#[test]
#[cfg_attr(
    not(has_hypercorn),
    ignore = "hypercorn not installed: python3 -m pip install hypercorn"
)]
fn hypercorn_loses_nothing_with_steering_and_requests_with_a_shared_socket() {
    steer_loses_nothing("hypercorn");
    shared_loses("hypercorn");
}

#[test]
#[cfg_attr(
    not(has_uvicorn),
    ignore = "uvicorn not installed: python3 -m pip install uvicorn"
)]
fn uvicorn_loses_nothing_with_steering_and_requests_with_a_shared_socket() {
    steer_loses_nothing("uvicorn");
    shared_loses("uvicorn");
}

#[test]
#[cfg_attr(
    not(has_starman),
    ignore = "starman not installed: apt-get install starman"
)]
fn starman_loses_nothing_with_steering_and_requests_with_a_shared_socket() {
    steer_loses_nothing("starman");
    shared_loses("starman");
}

#[test]
#[cfg_attr(
    not(has_uwsgi),
    ignore = "uwsgi not installed: python3 -m pip install uwsgi"
)]
fn uwsgi_graceful_loses_nothing_with_steering() {
    steer_loses_nothing("uwsgi");
}

/// As `nobody` (uid 65534: no capability, no supplementary group), graceful-run and Starman
/// (which accepts after its stop signal) of the same user: steering, the drain's looks at
/// the old generation (sock_diag, /proc) and the zero need no privilege. Run by another user
/// than root, it runs as that user.
#[test]
#[cfg_attr(
    not(has_starman),
    ignore = "starman not installed: apt-get install starman"
)]
fn steering_needs_no_privilege() {
    let server = handover_servers::server("starman");
    let as_root = handover_servers::command(server, &[]);
    let mut command = std::process::Command::new("setpriv");
    if nix::unistd::geteuid().is_root() {
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    }
    command
        .arg(as_root.get_program())
        .args(as_root.get_args())
        .current_dir(handover_servers::fixtures_dir())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .stdin(std::process::Stdio::null());
    let gr = Gr::spawn(command);
    wait_gen(&gr, 1, "ready after");
    let status = std::fs::read_to_string(format!("/proc/{}/status", gr.pid()))
        .expect("graceful-run's status");
    assert!(
        !status.contains("\nUid:\t0\t") && status.contains("\nCapEff:\t0000000000000000\n"),
        "{status}"
    );
    let target = Target::Tcp(gr.inet_addr(0));
    restarts_lose_nothing("starman as nobody", gr, target, server);
}

// ----- servers that exit on TERM mid-request --------------------------------------------------

/// A request of 2 s in flight.
const SLOW_MS: u64 = 2000;

/// Sends `GET /slow?ms=2000&id=ID` from a thread and waits until the app started handling it
/// (the fixture app logs `start ID PID` to GR_FIXTURE_LOG); returns the request and the pid
/// that handles it.
fn slow_request(
    gr: &Gr,
    target: &Target,
    log: &std::path::Path,
    id: &str,
) -> (JoinHandle<Result<Reply, Failure>>, i32) {
    let path = format!("/slow?ms={SLOW_MS}&id={id}");
    let request_target = target.clone();
    let request = std::thread::spawn(move || http::get(&request_target, &path));
    let prefix = format!("start {id} ");
    let pid = gr.poll("the app started handling the slow request", || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<i32>().ok())
    });
    assert!(
        !request.is_finished(),
        "the slow request ended before anything happened to it\n{}",
        gr.output()
    );
    (request, pid)
}

fn joined(request: JoinHandle<Result<Reply, Failure>>) -> Result<Reply, Failure> {
    request.join().expect("the request thread does not panic")
}

/// A server that exits on TERM: with the default flags a 2 s request in flight completes on
/// the process that took it, across a restart (its generation drains, unsignalled, until the
/// request is answered) and across a stop (the stop signal waits for it).
fn slow_request_survives_restart_and_stop(name: &str) {
    let server = handover_servers::server(name);
    let dir = TempDir::new("handover-slow");
    let log = dir.join("requests.log");
    let log_text = log.display().to_string();
    // --verbose: the debug line "new connections go to member [1]" says when the steering
    // changed (the info lines about the takeover come just before it).
    let (mut gr, target) = start(server, &["--verbose"], &[("GR_FIXTURE_LOG", &log_text)]);

    let (request, pid) = slow_request(&gr, &target, &log, "restart");
    gr.signal(libc::SIGHUP);
    wait_gen(&gr, 2, "takes over from gen 1");
    wait_gen(&gr, 1, "new connections go to its replacement");
    gr.wait_stderr("new connections go to member [1]");
    // New requests are answered meanwhile, by the new generation.
    let fresh = http::get(&target, "/").unwrap_or_else(|f| panic!("{f:?}\n{}", gr.output()));
    assert_ne!(fresh.pid(), pid, "{}", gr.output());
    assert!(
        !request.is_finished(),
        "the slow request ended before the handover, so it proves nothing\n{}",
        gr.output()
    );
    let signalled = |g: u64| {
        gr.stderr
            .count(|l| about(l).is_some_and(|(n, m)| n == g && m.starts_with("sent SIGTERM")))
    };
    assert_eq!(
        signalled(1),
        0,
        "gen 1 is signalled while its request runs\n{}",
        gr.output()
    );
    let reply = joined(request).unwrap_or_else(|f| {
        panic!(
            "the request in flight across the restart failed: {f:?}\n{}",
            gr.output()
        )
    });
    assert_eq!(reply.pid(), pid, "{reply:?}");
    assert!(
        reply.body.contains(&format!("after {SLOW_MS} ms")),
        "{reply:?}"
    );
    wait_gen(&gr, 1, "drained after");
    wait_gone(&gr, 1);

    let (request, pid) = slow_request(&gr, &target, &log, "stop");
    gr.signal(libc::SIGTERM);
    let reply = joined(request).unwrap_or_else(|f| {
        panic!(
            "the request in flight across the stop failed: {f:?}\n{}",
            gr.output()
        )
    });
    assert_eq!(reply.pid(), pid, "{reply:?}");
    stop_status(&mut gr, server);
    let lines = gr.stderr.snapshot();
    let waited = lines
        .iter()
        .position(|l| l.contains("no busy connection left: sending the stop signal"));
    let signalled = lines
        .iter()
        .position(|l| about(l).is_some_and(|(g, m)| g == 2 && m.starts_with("sent SIGTERM")));
    assert!(
        waited.is_some() && waited < signalled,
        "the stop signal did not wait for the busy connection\n{}",
        gr.output()
    );
}

fn stop_status(gr: &mut Gr, server: &Server) {
    let status = gr.wait_exit();
    match server.stops_with {
        Ok(expected) => assert_eq!(code(status), Some(expected), "{}", gr.output()),
        Err(signal) => assert_eq!(killed_by(status), Some(signal), "{}", gr.output()),
    }
}

/// The contrast: with `--handover shared` the old generation gets its stop signal as soon as
/// the new one is ready, and the request in flight fails, every time.
fn slow_request_fails_when_shared(name: &str) {
    let server = handover_servers::server(name);
    let dir = TempDir::new("handover-slow-shared");
    let log = dir.join("requests.log");
    let log_text = log.display().to_string();
    let (mut gr, target) = start(
        server,
        &["--handover", "shared"],
        &[("GR_FIXTURE_LOG", &log_text)],
    );
    let (request, _) = slow_request(&gr, &target, &log, "restart");
    gr.signal(libc::SIGHUP);
    wait_gen(&gr, 2, "takes over from gen 1");
    let outcome = joined(request);
    assert!(
        outcome.is_err(),
        "with a shared socket the request in flight survived: {outcome:?}\n{}",
        gr.output()
    );
    wait_gone(&gr, 1);
    gr.signal(libc::SIGTERM);
    stop_status(&mut gr, server);
}

#[test]
fn plain_http_server_completes_a_request_in_flight_across_restart_and_stop() {
    slow_request_survives_restart_and_stop("http.server");
    slow_request_fails_when_shared("http.server");
}

#[test]
#[cfg_attr(
    not(has_uwsgi),
    ignore = "uwsgi not installed: python3 -m pip install uwsgi"
)]
fn uwsgi_die_on_term_completes_a_request_in_flight_across_restart_and_stop() {
    slow_request_survives_restart_and_stop("uwsgi-die-on-term");
    slow_request_fails_when_shared("uwsgi-die-on-term");
}

#[test]
fn plain_http_server_loses_nothing_with_steering() {
    steer_loses_nothing("http.server");
}

#[test]
#[cfg_attr(
    not(has_uwsgi),
    ignore = "uwsgi not installed: python3 -m pip install uwsgi"
)]
fn uwsgi_die_on_term_loses_nothing_with_steering() {
    steer_loses_nothing("uwsgi-die-on-term");
}

/// A response sent in pieces (its head at once, then its body in 20 pieces 100 ms apart, as a
/// streamed or slowly computed response is) by a server that dies on TERM. Between the pieces
/// the connection has sent after it last received, which alone would read as an idle
/// keep-alive connection (found by figure 11: http.server writes its head and body apart, and
/// the GIL can pause a thread between them). A connection that sent data less than 500 ms ago
/// is busy (`recently-sent`), so the old generation is signalled only once the response is
/// complete, 2 s after the restart began.
#[test]
fn a_response_sent_in_pieces_survives_a_restart() {
    const PIECES: u64 = 20;
    const PIECE_MS: u64 = 100;
    let server = handover_servers::server("http.server");
    let dir = TempDir::new("handover-partial");
    let log = dir.join("requests.log");
    let log_text = log.display().to_string();
    let (mut gr, target) = start(server, &[], &[("GR_FIXTURE_LOG", &log_text)]);
    let request_target = target.clone();
    let request = std::thread::spawn(move || {
        http::get(
            &request_target,
            &format!("/partial?ms={PIECE_MS}&pieces={PIECES}&id=partial"),
        )
    });
    gr.poll("the app started the partial response", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("start partial ")
            .then_some(())
    });
    gr.signal(libc::SIGHUP);
    wait_gen(&gr, 2, "takes over from gen 1");
    let outcome = joined(request);
    assert!(
        outcome.is_ok(),
        "the response in flight across the restart failed: {outcome:?}\n{}",
        gr.output()
    );
    wait_gone(&gr, 1);
    gr.signal(libc::SIGTERM);
    stop_status(&mut gr, server);
}
