//! Issue 17's keep-alive gap: a drain under a load that reuses its connections back to back
//! (never idle, as wrk's) ends at a request boundary, long before `--drain-timeout`, with a
//! Node `http` server (tests/fixtures/servers/keepalive_node.js) at 1 and at 2 workers; and
//! with a server that answers with `Connection: close` after its stop signal, no request
//! fails. The client threads reuse their connections until told to stop, or for
//! [`LOAD_BOUND`] at most.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::libc;

use crate::handover_servers::fixtures_dir;
use crate::languages::prerequisite;
use crate::support::{Gr, graceful_run_bin};

/// Above any drain these tests wait for: a drain that ran it out would be the old behaviour.
const DRAIN_TIMEOUT: &str = "60s";
/// How long the tests wait for a drain to end: generous, and below [`DRAIN_TIMEOUT`].
const DRAIN_WAIT: Duration = Duration::from_secs(50);
/// The longest the load runs, whatever the test does.
const LOAD_BOUND: Duration = Duration::from_secs(240);

#[derive(Debug, Default)]
struct Report {
    ok: usize,
    /// Requests without a complete response: what went wrong.
    failed: Vec<String>,
    /// Connections closed by the server after a response with `Connection: close`.
    closed_by_server: usize,
    pids: BTreeSet<String>,
}

/// Clients that each keep one HTTP/1.1 connection and send `GET /` on it back to back,
/// opening a new one only when the server closed the last (`Connection: close`) or a request
/// failed on it.
struct Streams {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
    threads: Vec<JoinHandle<()>>,
}

/// One response read from `stream` (`buffer` keeps what was read beyond it): its body and
/// whether the server closes the connection after it.
fn response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(String, bool), String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(format!("status line {:?}", head.lines().next()));
            }
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("no content-length")?;
            let close = head.lines().any(|l| l == "connection: close");
            if buffer.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into();
                buffer.drain(..end + 4 + length);
                return Ok((body, close));
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("closed after {} bytes of response", buffer.len())),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

impl Streams {
    fn start(address: SocketAddr, clients: usize) -> Streams {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, report) = (stop.clone(), report.clone());
                std::thread::spawn(move || {
                    let end = Instant::now() + LOAD_BOUND;
                    let mut connection: Option<(TcpStream, Vec<u8>)> = None;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        let (stream, buffer) = match connection.as_mut() {
                            Some(c) => c,
                            None => match TcpStream::connect(address) {
                                Ok(stream) => {
                                    let _ = stream.set_nodelay(true);
                                    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
                                    connection.insert((stream, Vec::new()))
                                }
                                Err(e) => {
                                    let mut r = report.lock().expect("no panic holds it");
                                    r.failed.push(format!("connect: {e}"));
                                    drop(r);
                                    std::thread::sleep(Duration::from_millis(10));
                                    continue;
                                }
                            },
                        };
                        let outcome = stream
                            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
                            .map_err(|e| format!("write: {e}"))
                            .and_then(|()| response(stream, buffer));
                        let mut r = report.lock().expect("no panic holds it");
                        match outcome {
                            Ok((pid, close)) => {
                                r.ok += 1;
                                r.pids.insert(pid);
                                if close {
                                    r.closed_by_server += 1;
                                    connection = None;
                                }
                            }
                            Err(why) => {
                                r.failed.push(why);
                                connection = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Streams {
            stop,
            report,
            threads,
        }
    }

    fn ok(&self) -> usize {
        self.report.lock().expect("no panic holds it").ok
    }

    fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("client threads do not panic");
        }
        Arc::try_unwrap(self.report)
            .map(|m| m.into_inner().expect("no panic holds it"))
            .unwrap_or_default()
    }
}

fn node_present(test: &str) -> bool {
    prerequisite(
        test,
        &["node", "--version"],
        "Node.js (apt-get install nodejs)",
    )
}

/// graceful-run with `flags` over the fixture Node server in `mode` (`plain`, `graceful`),
/// on a free loopback port, its workers answering.
fn start(flags: &[&str], mode: &str) -> Gr {
    let mut command = Command::new(graceful_run_bin());
    command
        .current_dir(fixtures_dir())
        .args(["-l", "127.0.0.1:0", "--drain-timeout", DRAIN_TIMEOUT])
        .args(flags)
        .args(["--", "node", "keepalive_node.js", mode])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS");
    let gr = Gr::spawn(command);
    gr.wait_stderr("ready after");
    gr
}

fn lines_with(gr: &Gr, needles: &[&str]) -> usize {
    gr.stderr
        .count(|l| l.starts_with("graceful-run: ") && needles.iter().all(|n| l.contains(n)))
}

/// Waits for the load to make progress: `n` more answers.
fn progress(gr: &Gr, load: &Streams, n: usize) {
    let start = load.ok();
    gr.poll("the keep-alive load is answered", || {
        (load.ok() >= start + n).then_some(())
    });
}

/// The drains so far that ended on keep-alive streams (with a client that sends back to
/// back, all of them but one whose look found every connection idle, as a client thread
/// descheduled for half a second on a loaded machine leaves it); none ran --drain-timeout
/// out.
fn boundary_drains(gr: &Gr) -> usize {
    assert_eq!(
        lines_with(gr, &["still busy after --drain-timeout"]),
        0,
        "{}",
        gr.output()
    );
    lines_with(
        gr,
        &[
            "drained after",
            "keep-alive stream",
            "at a request boundary",
        ],
    )
}

/// SIGHUP, then until the replaced generation drained (before --drain-timeout: its line
/// says after how long and on what) and is gone.
fn restart_under_load(gr: &Gr, load: &Streams, generation: u64) {
    let subject = format!("gen {generation} ");
    let gone = || lines_with(gr, &[&subject, "by SIGTERM"]) + lines_with(gr, &[&subject, "exited"]);
    let before = gone();
    progress(gr, load, 200);
    gr.signal(libc::SIGHUP);
    gr.poll_until(
        DRAIN_WAIT,
        "the replaced generation drained, before --drain-timeout",
        || (lines_with(gr, &[&subject, "drained after"]) == 1).then_some(()),
    );
    gr.poll("the replaced generation is gone", || {
        (gone() > before).then_some(())
    });
}

/// A server that exits at once on TERM (Node's default): under a load that never idles, each
/// restart's drain ends at a request boundary, not at --drain-timeout. What the client's next
/// request meets then (a closed connection: HTTP/1.1's race, which only the server can avoid)
/// is not asserted here.
#[test]
#[cfg_attr(
    not(has_node),
    ignore = "Node.js not installed: apt-get install nodejs"
)]
fn a_restart_under_keep_alive_load_drains_at_a_request_boundary() {
    if !node_present("a_restart_under_keep_alive_load_drains_at_a_request_boundary") {
        return;
    }
    let mut gr = start(&[], "plain");
    let load = Streams::start(gr.inet_addr(0), 2);
    for generation in 1..=2 {
        restart_under_load(&gr, &load, generation);
    }
    progress(&gr, &load, 200);
    let report = load.stop();
    assert!(boundary_drains(&gr) >= 1, "{}", gr.output());
    assert!(report.pids.len() >= 3, "{report:?}\n{}", gr.output());
    gr.terminate_expecting_death_by(libc::SIGTERM);
}

/// A server that answers with `Connection: close` after its stop signal: the drain ends at a
/// request boundary, and no request fails over three restarts.
#[test]
#[cfg_attr(
    not(has_node),
    ignore = "Node.js not installed: apt-get install nodejs"
)]
fn a_graceful_server_loses_nothing_under_keep_alive_load() {
    if !node_present("a_graceful_server_loses_nothing_under_keep_alive_load") {
        return;
    }
    let mut gr = start(&[], "graceful");
    let load = Streams::start(gr.inet_addr(0), 3);
    for generation in 1..=3 {
        restart_under_load(&gr, &load, generation);
    }
    progress(&gr, &load, 200);
    let report = load.stop();
    assert!(boundary_drains(&gr) >= 1, "{}", gr.output());
    assert!(
        report.failed.is_empty(),
        "requests failed: {report:?}\n{}",
        gr.output()
    );
    assert!(report.pids.len() >= 4, "{report:?}\n{}", gr.output());
    assert!(report.closed_by_server >= 3, "{report:?}");
    gr.terminate_expecting_exit(0);
}

/// Two workers, rolled twice with `ctl restart --wait` under keep-alive load: every old
/// worker's drain ends before --drain-timeout, on keep-alive streams where it holds some, and
/// no request fails.
#[test]
#[cfg_attr(
    not(has_node),
    ignore = "Node.js not installed: apt-get install nodejs"
)]
fn a_two_worker_rollout_under_keep_alive_load_drains_at_request_boundaries() {
    if !node_present("a_two_worker_rollout_under_keep_alive_load_drains_at_request_boundaries") {
        return;
    }
    let mut gr = start(&["-w", "2"], "graceful");
    gr.poll("both workers answer", || {
        (lines_with(&gr, &["ready after"]) >= 2).then_some(())
    });
    let load = Streams::start(gr.inet_addr(0), 4);
    for rollout in 1..=2 {
        progress(&gr, &load, 200);
        let begun = Instant::now();
        let output = gr.ctl(&["restart", "--wait"]);
        assert!(
            output.status.success(),
            "rollout {rollout}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            gr.output()
        );
        gr.poll_until(DRAIN_WAIT, "both old workers drained", || {
            (lines_with(&gr, &["drained after"]) >= 2 * rollout).then_some(())
        });
        assert!(begun.elapsed() < DRAIN_WAIT, "{}", gr.output());
    }
    assert!(boundary_drains(&gr) >= 1, "{}", gr.output());
    progress(&gr, &load, 200);
    let report = load.stop();
    assert!(
        report.failed.is_empty(),
        "requests failed: {report:?}\n{}",
        gr.output()
    );
    gr.terminate_expecting_exit(0);
}
