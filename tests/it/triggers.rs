//! Restart triggers (issue 18), proven on a real Python http.server
//! (tests/fixtures/servers/trigger_server.py) under a load of new connections: a server that
//! turns unhealthy (`--health-cmd`, `--health-http`), a health command that hangs, a server
//! that stops sending WATCHDOG=1, a slow start that asks for more time with
//! EXTEND_TIMEOUT_USEC, a server that grows past `--max-memory`, and `--max-lifetime`. With
//! `-w 2`, a fat or a sick worker is replaced alone (each `--health-http` probe reaches the
//! worker it checks). Each replacement loses no request, is logged
//! with its reason and counted in `ctl status`; a trigger during a restart joins it; an
//! unhealthy generation whose replacement fails keeps serving.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::http::{Load, LoadReport, Target};
use crate::support::{Gr, KillOnDrop, TempDir, alive, graceful_run_bin, sleep_marker, sleepers};

/// Load clients: modest, for a 2-core machine running other tests at the same time.
const CLIENTS: usize = 4;

fn fixture() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/servers/trigger_server.py")
        .display()
        .to_string()
}

/// graceful-run with `flags`, serving the fixture from `dir` with the extra environment `env`;
/// returns once generation 1 is ready.
fn serve(dir: &TempDir, flags: &[&str], env: &[(&str, &str)]) -> Gr {
    let mut command = Command::new(graceful_run_bin());
    command
        .args(["--ready", "notify", "-l", "127.0.0.1:0"])
        .args(flags)
        .args(["--", "python3", &fixture()])
        .env("TRIGGER_DIR", dir.path())
        .envs(env.iter().copied());
    let gr = Gr::spawn(command);
    gr.wait_stderr("ready after");
    gr
}

fn target(gr: &Gr) -> Target {
    Target::Tcp(gr.inet_addr(0))
}

/// Creates `kind-PID` in `dir`: the fixture process `pid` turns sick, hangs or grows.
fn make(dir: &TempDir, kind: &str, pid: i32) {
    std::fs::write(dir.join(&format!("{kind}-{pid}")), "").expect("the temp dir is writable");
}

/// `graceful-run ctl --pid PID ARGS...`: its standard output.
fn ctl(gr: &Gr, args: &[&str]) -> String {
    let output: Output = gr.ctl(args);
    assert!(output.status.success(), "ctl {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until `ctl status` (text) contains `needle`; returns that text.
fn wait_status(gr: &Gr, needle: &str) -> String {
    gr.poll(&format!("ctl status shows {needle:?}"), || {
        let text = ctl(gr, &["status"]);
        text.contains(needle).then_some(text)
    })
}

/// Stops the load once it has made progress: not one request may have failed.
fn stop_load(load: Load, gr: &Gr) -> LoadReport {
    load.wait_successes(CLIENTS * 4);
    let report = load.stop();
    assert_eq!(
        report.failed(),
        0,
        "failed requests: {report:?}\n{}",
        gr.output()
    );
    report
}

fn count(gr: &Gr, needle: &str) -> usize {
    gr.stderr.count(|l| l.contains(needle))
}

/// Waits until `ctl status` counts one `kind` trigger: the lines with `needle` (one, or more
/// when the watch fired again while a slow replacement started: the same trigger) all name
/// `pid`; returns the status text.
fn wait_counted(gr: &Gr, kind: &str, needle: &str, pid: i32) -> String {
    let lines: Vec<String> = gr
        .stderr
        .snapshot()
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect();
    assert!(!lines.is_empty(), "no {needle:?}\n{}", gr.output());
    for line in &lines {
        assert!(line.contains(&format!("(pid {pid})")), "{line}");
    }
    wait_status(gr, &format!("replaced for: {kind} 1"))
}

fn stop(mut gr: Gr) {
    gr.signal(nix::libc::SIGTERM);
    gr.wait_exit();
}

/// A server turns unhealthy under `flags`: after --health-retries failed checks it is
/// replaced, new generation first, with no failed request; the state and the count show in
/// `ctl status`, as text and as JSON.
fn unhealthy_is_replaced(dir: &TempDir, flags: &[&str], failure: &str) {
    let mut all = vec!["--health-interval", "200ms", "--health-retries", "2"];
    all.extend(flags);
    let gr = serve(dir, &all, &[]);
    let pid1 = gr.generation_pid(1);
    wait_status(&gr, ", healthy");
    let load = Load::start(target(&gr), CLIENTS);
    load.wait_successes(CLIENTS);
    make(dir, "sick", pid1);
    gr.wait_stderr(&format!(
        "(pid {pid1}): warning: health check failed (1/2): {failure}"
    ));
    gr.wait_stderr(&format!(
        "(pid {pid1}): warning: unhealthy after 2 failed checks in a row: replacing it"
    ));
    gr.wait_stderr("gen 2 (pid");
    gr.wait_stderr("takes over from gen 1");
    gr.wait_stderr(&format!("gen 1 (pid {pid1}): killed by SIGTERM"));
    let pid2 = gr.generation_pid(2);
    let report = stop_load(load, &gr);
    assert!(report.pids.contains_key(&pid2), "{report:?}");
    let text = wait_counted(&gr, "unhealthy", "unhealthy after 2 failed checks", pid1);
    assert!(text.contains(&format!("(pid {pid2})")), "{text}");
    let json = ctl(&gr, &["status", "--json"]);
    assert!(json.contains(r#""triggered":{"unhealthy":1}"#), "{json}");
    assert_eq!(count(&gr, "): started "), 2, "{}", gr.output());
    stop(gr);
}

#[test]
fn unhealthy_by_health_cmd_is_replaced_under_load() {
    let dir = TempDir::new("trig-health-cmd");
    let check = format!("test ! -e {}/sick-$MAINPID", dir.path().display());
    unhealthy_is_replaced(&dir, &["--health-cmd", &check], "--health-cmd exited with");
}

#[test]
fn unhealthy_by_health_http_is_replaced_under_load() {
    let dir = TempDir::new("trig-health-http");
    unhealthy_is_replaced(&dir, &["--health-http", "/health"], "HTTP status 500");
}

/// A health command that never ends is killed at --health-timeout and counts as failed; none
/// of its processes is left behind.
#[test]
fn a_hanging_health_cmd_is_bounded_by_health_timeout() {
    let dir = TempDir::new("trig-health-hang");
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let check = format!("sleep {marker}");
    let gr = serve(
        &dir,
        &[
            "--health-cmd",
            &check,
            "--health-interval",
            "200ms",
            "--health-timeout",
            "300ms",
            "--health-retries",
            "2",
        ],
        &[],
    );
    let load = Load::start(target(&gr), CLIENTS);
    gr.wait_stderr("health check failed (1/2): no result within --health-timeout 300ms");
    gr.wait_stderr("unhealthy after 2 failed checks in a row: replacing it");
    gr.wait_stderr("takes over from gen 1");
    stop_load(load, &gr);
    stop(gr);
    crate::support::poll_until("no health command is left", || sleepers(&marker).is_empty());
}

/// An unhealthy generation whose replacement fails keeps serving, says so, and shows as
/// unhealthy in `ctl status`.
#[test]
fn an_unhealthy_generation_whose_replacement_fails_keeps_serving() {
    let dir = TempDir::new("trig-health-fail");
    let (systemd, notify_socket) = crate::support::fake_systemd("trig-health");
    let gr = serve(
        &dir,
        &[
            "--health-http",
            "/health",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
        ],
        &[
            ("TRIGGER_FAIL_AFTER", "1"),
            ("NOTIFY_SOCKET", notify_socket.as_str()),
        ],
    );
    let pid1 = gr.generation_pid(1);
    let load = Load::start(target(&gr), CLIENTS);
    load.wait_successes(CLIENTS);
    make(&dir, "sick", pid1);
    gr.wait_stderr("gen 2 (pid");
    let line = gr.wait_stderr("its replacement failed");
    assert!(
        line.contains(&format!("gen 1 (pid {pid1})")) && line.contains("it keeps serving"),
        "{line}"
    );
    let text = wait_status(&gr, "unhealthy");
    assert!(text.contains(&format!("(pid {pid1}): ready")), "{text}");
    let json = ctl(&gr, &["status", "--json"]);
    assert!(json.contains(r#""healthy":false"#), "{json}");
    // graceful-run's own supervisor hears it too, in STATUS=.
    let mut buf = [0u8; 4096];
    let told = format!("STATUS=gen 1 serving (pid {pid1}), unhealthy");
    loop {
        let n = systemd
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {told:?} upstream ({e})\n{}", gr.output()));
        if String::from_utf8_lossy(&buf[..n]).contains(&told) {
            break;
        }
    }
    let report = stop_load(load, &gr);
    assert_eq!(report.pids.keys().copied().collect::<Vec<_>>(), [pid1]);
    assert!(alive(pid1));
    stop(gr);
}

/// Each generation gets WATCHDOG_USEC and WATCHDOG_PID (its own pid); one that stops pinging
/// is replaced, the new one first, and the hung one is killed once the new one is ready.
#[test]
fn a_server_that_stops_pinging_the_watchdog_is_replaced_then_killed() {
    let dir = TempDir::new("trig-watchdog");
    let gr = serve(&dir, &["--watchdog", "1s"], &[]);
    let pid1 = gr.generation_pid(1);
    let env = std::fs::read_to_string(dir.join(&format!("env-{pid1}"))).expect("env written");
    assert!(env.contains("WATCHDOG_USEC=1000000\n"), "{env}");
    assert!(env.contains(&format!("WATCHDOG_PID={pid1}\n")), "{env}");
    let load = Load::start(target(&gr), CLIENTS);
    load.wait_successes(CLIENTS);
    make(&dir, "hang", pid1);
    gr.wait_stderr(&format!(
        "gen 1 (pid {pid1}): warning: no WATCHDOG=1 for 1s: hung; replacing it"
    ));
    gr.wait_stderr(&format!("gen 1 (pid {pid1}): killed by SIGKILL"));
    let lines = gr.stderr.snapshot();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}\n{}", gr.output()))
    };
    assert!(at("gen 2 (pid") < at("takes over from gen 1"));
    assert!(at("takes over from gen 1") < at("sending SIGKILL"));
    let pid2 = gr.generation_pid(2);
    let env = std::fs::read_to_string(dir.join(&format!("env-{pid2}"))).expect("env written");
    assert!(env.contains(&format!("WATCHDOG_PID={pid2}\n")), "{env}");
    let report = stop_load(load, &gr);
    assert!(report.pids.contains_key(&pid2), "{report:?}");
    wait_status(&gr, "replaced for: watchdog 1");
    stop(gr);
}

/// A starting generation that sends EXTEND_TIMEOUT_USEC gets that long past --ready-timeout,
/// and graceful-run's own supervisor, waiting for the start, is told too.
#[test]
fn extend_timeout_usec_extends_the_ready_timeout() {
    let dir = TempDir::new("trig-extend");
    let (systemd, notify_socket) = crate::support::fake_systemd("trig-extend");
    let gr = serve(
        &dir,
        &["--ready-timeout", "1s"],
        &[
            ("TRIGGER_EXTEND_USEC", "20000000"),
            ("TRIGGER_BOOT_MS", "2500"),
            ("NOTIFY_SOCKET", notify_socket.as_str()),
        ],
    );
    assert_eq!(count(&gr, "not ready"), 0, "{}", gr.output());
    let mut relayed = Vec::new();
    loop {
        let message = crate::support::next_state(&systemd, &gr);
        relayed.push(message.clone());
        if message.contains("READY=1") {
            break;
        }
    }
    assert!(
        relayed
            .iter()
            .any(|m| m.contains("EXTEND_TIMEOUT_USEC=20000000")),
        "{relayed:?}"
    );
    assert_eq!(count(&gr, "): started "), 1, "{}", gr.output());
    stop(gr);
}

/// A server that grows past --max-memory is replaced once: its replacement, which does not
/// grow, is left alone (three samples in a row over the limit are needed).
#[test]
fn a_server_that_grows_past_max_memory_is_replaced_once() {
    let dir = TempDir::new("trig-memory");
    let gr = serve(&dir, &["--max-memory", "48M"], &[]);
    let pid1 = gr.generation_pid(1);
    let load = Load::start(target(&gr), CLIENTS);
    load.wait_successes(CLIENTS);
    make(&dir, "fat", pid1);
    let line = gr.wait_stderr("over --max-memory 48.0 MiB in 3 samples in a row: replacing it");
    assert!(line.contains(&format!("gen 1 (pid {pid1})")), "{line}");
    gr.wait_stderr("takes over from gen 1");
    gr.wait_stderr(&format!("gen 1 (pid {pid1}): killed by SIGTERM"));
    let pid2 = gr.generation_pid(2);
    // Sampled since it is ready: its memory shows, and stays below the limit.
    let text = wait_status(&gr, " MiB");
    assert!(text.contains(&format!("(pid {pid2})")), "{text}");
    wait_counted(&gr, "memory", "over --max-memory", pid1);
    let report = stop_load(load, &gr);
    assert!(report.pids.contains_key(&pid2), "{report:?}");
    // Replaced once: no storm of replacements.
    assert_eq!(count(&gr, "): started "), 2, "{}", gr.output());
    stop(gr);
}

/// The pid of worker `worker` of generation 1, from its "ready after" line.
fn worker_pid(gr: &Gr, worker: u32) -> i32 {
    let prefix = format!("gen 1 worker {worker} (pid ");
    let line = gr
        .stderr
        .wait_for(crate::support::DEADLINE, |l| {
            l.contains(&prefix) && l.contains("ready after")
        })
        .unwrap_or_else(|| panic!("worker {worker} never ready\n{}", gr.output()));
    let rest = &line[line.find(&prefix).expect("found") + prefix.len()..];
    rest[..rest.find(')').expect("closed")]
        .parse()
        .expect("a pid")
}

/// With workers, a trigger replaces the worker it concerns: the fat worker goes, the other
/// one serves on untouched.
#[test]
fn with_workers_max_memory_replaces_only_the_fat_worker() {
    let dir = TempDir::new("trig-memory-workers");
    let gr = serve(&dir, &["-w", "2", "--max-memory", "48M"], &[]);
    let fat = worker_pid(&gr, 1);
    let lean = worker_pid(&gr, 0);
    let load = Load::start(target(&gr), CLIENTS);
    load.wait_successes(CLIENTS);
    make(&dir, "fat", fat);
    let line = gr.wait_stderr("over --max-memory");
    assert!(line.contains(&format!("(pid {fat})")), "{line}");
    gr.wait_stderr(&format!("(pid {fat}): killed by SIGTERM"));
    let report = stop_load(load, &gr);
    assert!(alive(lean), "the other worker was left alone");
    let text = wait_counted(&gr, "memory", "over --max-memory", fat);
    assert!(text.contains(&format!("(pid {lean})")), "{text}");
    assert!(!text.contains(&format!("(pid {fat})")), "{text}");
    assert!(report.pids.contains_key(&lean), "{report:?}");
    stop(gr);
}

/// Parses "1s 912ms", "950ms", "2s" into a Duration.
fn parse_logged(text: &str) -> Duration {
    text.split_whitespace()
        .map(|part| {
            if let Some(ms) = part.strip_suffix("ms") {
                Duration::from_millis(ms.parse().expect("milliseconds"))
            } else {
                let s = part.strip_suffix('s').expect("seconds");
                Duration::from_secs(s.parse().expect("seconds"))
            }
        })
        .sum()
}

/// --max-lifetime 2s: each generation is replaced after 90 to 100% of it (the jitter), under
/// load with no failed request.
#[test]
fn max_lifetime_replaces_each_generation_within_its_jitter() {
    let dir = TempDir::new("trig-lifetime");
    let gr = serve(&dir, &["--max-lifetime", "2s"], &[]);
    let load = Load::start(target(&gr), CLIENTS);
    gr.wait_stderr("takes over from gen 2");
    let report = stop_load(load, &gr);
    assert!(report.pids.len() >= 2, "{report:?}");
    let served: Vec<Duration> = gr
        .stderr
        .snapshot()
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find("served its --max-lifetime (")? + 27..];
            Some(parse_logged(&rest[..rest.find(')')?]))
        })
        .collect();
    assert!(served.len() >= 2, "{}", gr.output());
    for lifetime in &served {
        assert!(
            *lifetime >= Duration::from_millis(1800),
            "replaced before 90% of --max-lifetime: {served:?}\n{}",
            gr.output()
        );
    }
    wait_status(&gr, "replaced for: lifetime");
    stop(gr);
}

/// A trigger that fires while a restart is on its way joins it: one new generation, not two,
/// and the trigger is still counted.
#[test]
fn a_trigger_during_a_restart_joins_it() {
    let dir = TempDir::new("trig-coalesce");
    let gr = serve(
        &dir,
        &[
            "--health-http",
            "/health",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
        ],
        &[("TRIGGER_SLOW_AFTER", "1"), ("TRIGGER_BOOT_MS", "3000")],
    );
    let pid1 = gr.generation_pid(1);
    let load = Load::start(target(&gr), CLIENTS);
    load.wait_successes(CLIENTS);
    gr.signal(nix::libc::SIGHUP);
    gr.wait_stderr("gen 2 (pid");
    make(&dir, "sick", pid1);
    let line = gr.wait_stderr("its replacement is already on its way (unhealthy)");
    assert!(line.contains(&format!("(pid {pid1})")), "{line}");
    gr.wait_stderr("takes over from gen 1");
    stop_load(load, &gr);
    // Counted once, however often it failed again while the restart's generation started.
    wait_counted(&gr, "unhealthy", "unhealthy after 2 failed checks", pid1);
    assert_eq!(
        count(&gr, "its replacement is already on its way"),
        1,
        "{}",
        gr.output()
    );
    assert_eq!(count(&gr, "): started "), 2, "{}", gr.output());
    stop(gr);
}

/// Failed checks within --health-start-period do not count; a success ends it early, and the
/// failures after it count.
#[test]
fn failures_in_the_health_start_period_do_not_count() {
    let dir = TempDir::new("trig-start-period");
    let ok = dir.join("ok");
    let check = format!("test -e {}", ok.display());
    let gr = serve(
        &dir,
        &[
            "-v",
            "--health-cmd",
            &check,
            "--health-interval",
            "100ms",
            "--health-retries",
            "1",
            "--health-start-period",
            "1h",
        ],
        &[],
    );
    let pid1 = gr.generation_pid(1);
    gr.poll("three checks failed in the start period", || {
        (count(&gr, "health check failed in the start period") >= 3).then_some(())
    });
    assert_eq!(count(&gr, "unhealthy"), 0, "{}", gr.output());
    std::fs::write(&ok, "").expect("the temp dir is writable");
    wait_status(&gr, ", healthy");
    let load = Load::start(target(&gr), CLIENTS);
    load.wait_successes(CLIENTS);
    std::fs::remove_file(&ok).expect("it was made above");
    let line = gr.wait_stderr("unhealthy after 1 failed check: replacing it");
    assert!(line.contains(&format!("(pid {pid1})")), "{line}");
    gr.wait_stderr("takes over from gen 1");
    stop_load(load, &gr);
    stop(gr);
}

/// With workers, each --health-http probe reaches the worker it checks (steered by its source
/// port): the sick worker is replaced alone, while the other, healthy, serves on.
#[test]
fn with_workers_health_http_replaces_only_the_sick_worker() {
    let dir = TempDir::new("trig-health-workers");
    let gr = serve(
        &dir,
        &[
            "-w",
            "2",
            "--health-http",
            "/health",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
        ],
        &[],
    );
    let sick = worker_pid(&gr, 0);
    let well = worker_pid(&gr, 1);
    let load = Load::start(target(&gr), CLIENTS);
    load.wait_successes(CLIENTS);
    make(&dir, "sick", sick);
    let line = gr.wait_stderr("unhealthy after 2 failed checks in a row: replacing it");
    assert!(line.contains(&format!("(pid {sick})")), "{line}");
    gr.wait_stderr(&format!("(pid {sick}): killed by SIGTERM"));
    let report = stop_load(load, &gr);
    assert!(report.pids.contains_key(&well), "{report:?}");
    assert!(alive(well), "the healthy worker was left alone");
    let text = wait_counted(&gr, "unhealthy", "unhealthy after 2 failed checks", sick);
    assert!(text.contains(&format!("(pid {well})")), "{text}");
    assert_eq!(
        count(&gr, "health check failed"),
        count(&gr, &format!("(pid {sick}): warning: health check failed")),
        "only the sick worker failed its checks\n{}",
        gr.output()
    );
    stop(gr);
}
