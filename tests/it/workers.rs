//! `--workers N` (issue 17) with real single-process servers: the Go, Python standard
//! library, uvicorn and Node.js examples of docs/servers.md at `-w 4`.
//!
//! For each of the four: 4 distinct pids answer, each with its own environment
//! (GRACEFUL_RUN_WORKER 0..3, GRACEFUL_RUN_GENERATION, LISTEN_PID its own pid, LISTEN_FDS);
//! 10 rolling restarts (`ctl restart --wait`) under a load of new connections fail no
//! request, while a sampler of `ctl status --json` and of the process tree never sees more
//! than N + surge workers alive nor fewer than N ready; the stop then exits 0.
//!
//! The rest, with the Python server: a broken new version stops after its first worker while
//! the old ones serve on, and `ctl restart --wait` exits 1 with the reason, which `ctl status`
//! shows; a killed worker is replaced alone; `ctl scale` and SIGTTIN/SIGTTOU change the count
//! and bad counts change nothing; a stop of N workers takes one budget, and the exit status
//! is the first non-zero one in worker index order; restarts asked for during a rollout are
//! coalesced into one more (generations never stack), and systemd hears one reload per
//! rollout, not one per worker.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::libc;

use crate::languages::{build_go, prerequisite, strings};
use crate::support::http::{self, Load, Target};
use crate::support::{
    DEADLINE, Gr, TempDir, alive, code, example_file, graceful_run_bin, path_with_graceful_run,
    processes,
};

const WORKERS: usize = 4;
/// `--max-surge`'s default.
const SURGE: usize = 1;
const RESTARTS: usize = 10;
/// Load clients: modest, for a 2-core machine running other tests at the same time.
const CLIENTS: usize = 6;

/// Starts graceful-run on a free loopback port with `flags` (a --stop-timeout of 20s unless
/// they give one), then `--` and `command`, with graceful-run in PATH for `graceful-run
/// notify`.
fn start(flags: &[&str], command: &[String]) -> Gr {
    let mut cmd = Command::new(graceful_run_bin());
    cmd.args(["-l", "127.0.0.1:0"]);
    if !flags.contains(&"--stop-timeout") {
        cmd.args(["--stop-timeout", "20s"]);
    }
    cmd.args(flags)
        .arg("--")
        .args(command)
        .env("PATH", path_with_graceful_run())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS");
    Gr::spawn(cmd)
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// One worker in `ctl status --json`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Worker {
    generation: u64,
    index: u32,
    pid: i32,
    state: String,
}

/// What `ctl status --json` says.
#[derive(Clone, Debug, Default)]
struct Status {
    workers: u32,
    last_failure: Option<String>,
    list: Vec<Worker>,
}

impl Status {
    fn ready(&self) -> Vec<&Worker> {
        self.list.iter().filter(|w| w.state == "ready").collect()
    }

    /// The ready workers' pids by index, when exactly `n` are listed, all ready, indexes
    /// 0..n.
    fn settled(&self, n: usize) -> Option<Vec<i32>> {
        let ready = self.ready();
        let indexes: BTreeSet<u32> = ready.iter().map(|w| w.index).collect();
        (self.workers as usize == n
            && self.list.len() == n
            && ready.len() == n
            && indexes == (0..n as u32).collect())
        .then(|| {
            let mut ready = ready;
            ready.sort_by_key(|w| w.index);
            ready.iter().map(|w| w.pid).collect()
        })
    }
}

/// A JSON value after `"key":` in `text`: a string without its quotes, or the bare token.
fn field(text: &str, key: &str) -> Option<String> {
    let start = text.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &text[start..];
    if let Some(string) = rest.strip_prefix('"') {
        let end = string.find('"')?;
        return Some(string[..end].to_string());
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// `ctl status --json`, or None when ctl failed (graceful-run just exited, say).
fn status(gr: &Gr) -> Option<Status> {
    let output = gr.ctl(&["status", "--json"]);
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, generations) = text.split_once("\"generations\":")?;
    let list = generations
        .split("{\"number\":")
        .skip(1)
        .map(|entry| {
            let entry = format!("\"number\":{}", entry.split('}').next().unwrap_or(""));
            let number = |key: &str| field(&entry, key).and_then(|v| v.parse::<i64>().ok());
            Worker {
                generation: number("number").unwrap_or(0) as u64,
                index: number("worker").unwrap_or(0) as u32,
                pid: number("pid").unwrap_or(0) as i32,
                state: field(&entry, "state").unwrap_or_default(),
            }
        })
        .collect();
    Some(Status {
        workers: field(head, "workers")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        last_failure: field(head, "last_failure").filter(|v| v != "null"),
        list,
    })
}

/// Waits until exactly `n` workers are listed, all ready; their pids by index.
fn wait_settled(gr: &Gr, n: usize) -> Vec<i32> {
    gr.poll(&format!("{n} workers are ready"), || status(gr)?.settled(n))
}

/// The environment `pid` was started with.
fn environ(pid: i32) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("a worker's environ reads");
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Checks 4 distinct pids answer, the ones `ctl status` lists, each with its environment.
fn four_answer_with_their_environment(gr: &Gr, pids: &[i32], generation: u64) {
    let target = Target::Tcp(gr.inet_addr(0));
    let mut answered = BTreeSet::new();
    gr.poll("every worker answers a request", || {
        let reply = http::get(&target, "/").ok()?;
        answered.insert(reply.pid());
        (answered.len() >= pids.len()).then_some(())
    });
    assert_eq!(
        answered,
        pids.iter().copied().collect(),
        "the pids that answered are not the workers listed\n{}",
        gr.output()
    );
    for (index, pid) in pids.iter().enumerate() {
        let env = environ(*pid);
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(
            get("GRACEFUL_RUN_WORKER"),
            Some(&*index.to_string()),
            "{env:?}"
        );
        assert_eq!(
            get("GRACEFUL_RUN_GENERATION"),
            Some(&*generation.to_string()),
            "{env:?}"
        );
        assert_eq!(get("LISTEN_PID"), Some(&*pid.to_string()), "{env:?}");
        assert_eq!(get("LISTEN_FDS"), Some("1"), "{env:?}");
    }
}

/// What a [`Sampler`] saw.
#[derive(Debug, Default)]
struct Seen {
    samples: usize,
    /// Most live children of graceful-run at once (the process tree).
    max_alive: usize,
    /// Most workers `ctl status` listed at once.
    max_listed: usize,
    /// Fewest ready workers `ctl status` listed.
    min_ready: usize,
}

/// Samples `ctl status --json` and graceful-run's live children until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(gr: &Gr) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen {
            min_ready: usize::MAX,
            ..Seen::default()
        }));
        let pid = gr.pid();
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let children = processes()
                    .iter()
                    .filter(|(_, ppid, state)| *ppid == pid && *state != 'Z')
                    .count();
                let output = Command::new(graceful_run_bin())
                    .args(["ctl", "--pid", &pid.to_string(), "status", "--json"])
                    .stdin(Stdio::null())
                    .output()
                    .expect("graceful-run ctl runs");
                let mut seen = seen2.lock().expect("no panics holding it");
                seen.max_alive = seen.max_alive.max(children);
                if output.status.success() {
                    // Parsed as `status` does, from the text already read.
                    let text = String::from_utf8_lossy(&output.stdout);
                    let listed = text.matches("{\"number\":").count();
                    let ready = text.matches("\"state\":\"ready\"").count();
                    seen.samples += 1;
                    seen.max_listed = seen.max_listed.max(listed);
                    seen.min_ready = seen.min_ready.min(ready);
                }
            }
        });
        Sampler { stop, seen, thread }
    }

    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler does not panic");
        Arc::try_unwrap(self.seen)
            .map(|m| m.into_inner().expect("no panics holding it"))
            .unwrap_or_default()
    }
}

/// Everything the four servers must do at `-w 4`: 4 pids with their environment, 10 rolling
/// restarts under load without a failed request within the bounds, then a stop with exit 0.
fn four_workers_roll_without_loss(flags: &[&str], command: Vec<String>) {
    rolls_within_bounds(flags, command, SURGE, 0, RESTARTS);
}

/// `restarts` rolling restarts of 4 workers under load with `--max-surge surge` and
/// `--max-unavailable unavailable`: no failed request, never more than 4 + surge alive, never
/// fewer than 4 - unavailable ready; then a stop with exit 0.
fn rolls_within_bounds(
    flags: &[&str],
    command: Vec<String>,
    surge: usize,
    unavailable: usize,
    restarts: usize,
) {
    let (surge_text, unavailable_text) = (surge.to_string(), unavailable.to_string());
    let mut all: Vec<&str> = vec![
        "-w",
        "4",
        "--max-surge",
        &surge_text,
        "--max-unavailable",
        &unavailable_text,
    ];
    all.extend(flags);
    let mut gr = start(&all, &command);
    let pids = wait_settled(&gr, WORKERS);
    four_answer_with_their_environment(&gr, &pids, 1);

    let target = Target::Tcp(gr.inet_addr(0));
    let load = Load::start(target, CLIENTS);
    load.wait_successes(CLIENTS);
    let sampler = Sampler::start(&gr);
    for restart in 1..=restarts {
        let output = gr.ctl(&["restart", "--wait"]);
        assert_eq!(
            code(output.status),
            Some(0),
            "restart {restart}: {}\n{}",
            stderr_of(&output),
            gr.output()
        );
        load.wait_successes(CLIENTS);
    }
    let seen = sampler.stop();
    eprintln!("rolling restarts: sampled {seen:?}");
    let report = load.stop();
    eprintln!(
        "{restarts} rolling restarts: {} requests, {} failed",
        report.ok,
        report.failed()
    );
    assert_eq!(
        report.failed(),
        0,
        "failed requests across {restarts} rolling restarts: {report:?}\n{}",
        gr.output()
    );
    assert!(seen.samples > 0, "no ctl status sample: {seen:?}");
    assert!(
        seen.max_alive <= WORKERS + surge && seen.max_listed <= WORKERS + surge,
        "over {WORKERS} + {surge} workers: {seen:?}\n{}",
        gr.output()
    );
    assert!(
        seen.min_ready >= WORKERS - unavailable,
        "fewer than {WORKERS} - {unavailable} ready during the rollouts: {seen:?}\n{}",
        gr.output()
    );
    // Every worker of the last generation serves with its environment.
    let pids = wait_settled(&gr, WORKERS);
    four_answer_with_their_environment(&gr, &pids, restarts as u64 + 1);
    for pid in &pids {
        assert!(
            report.pids.contains_key(pid) || alive(*pid),
            "pid {pid} is gone"
        );
    }

    gr.signal(libc::SIGTERM);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

fn python() -> Vec<String> {
    strings(&["python3", &example_file("python/server.py")])
}

#[test]
fn python_stdlib_four_workers() {
    four_workers_roll_without_loss(&["--ready", "notify"], python());
}

#[test]
#[cfg_attr(not(has_go), ignore = "Go not installed: apt-get install golang-go")]
fn go_four_workers() {
    if !prerequisite(
        "go_four_workers",
        &["go", "version"],
        "Go (apt-get install golang-go)",
    ) {
        return;
    }
    let binary = build_go();
    four_workers_roll_without_loss(&["--ready", "notify"], vec![binary.display().to_string()]);
}

#[test]
#[cfg_attr(
    not(has_uvicorn),
    ignore = "uvicorn not installed: python3 -m pip install uvicorn"
)]
fn uvicorn_four_workers() {
    let check = ["python3", "-c", "import uvicorn"];
    if !prerequisite(
        "uvicorn_four_workers",
        &check,
        "uvicorn (pip install uvicorn)",
    ) {
        return;
    }
    four_workers_roll_without_loss(
        &["--ready", "auto", "--exit-code-map", "143:0"],
        strings(&["python3", &example_file("python/uvicorn_server.py")]),
    );
}

#[test]
#[cfg_attr(
    not(has_node),
    ignore = "Node.js not installed: apt-get install nodejs"
)]
fn node_four_workers() {
    if !prerequisite(
        "node_four_workers",
        &["node", "--version"],
        "Node.js (apt-get install nodejs)",
    ) {
        return;
    }
    four_workers_roll_without_loss(
        &["--ready", "notify"],
        strings(&["node", &example_file("node/server.js")]),
    );
}

// ----- the rest, with the Python server ------------------------------------------------------

/// Without a surge, an old worker stops first (as puma's phased restart does): never more
/// than 4 alive, never fewer than 3 ready, still no failed request.
#[test]
fn rolls_without_surge_within_max_unavailable() {
    rolls_within_bounds(&["--ready", "notify"], python(), 0, 1, 3);
}

/// The Python server, through `sh` so that a later version can be made to fail: once `broken`
/// exists, a new worker exits 3 at once. (`exec` keeps the pid: LISTEN_PID stays right.)
fn python_breakable(dir: &TempDir, flags: &[&str]) -> (Gr, String) {
    let broken = dir.join("broken").display().to_string();
    let script = r#"if [ -e "$1" ]; then echo "broken version" >&2; exit 3; fi; exec python3 "$0""#;
    let command = strings(&[
        "sh",
        "-c",
        script,
        &example_file("python/server.py"),
        &broken,
    ]);
    let mut all = vec!["-w", "4", "--ready", "notify"];
    all.extend(flags);
    (start(&all, &command), broken)
}

#[test]
fn a_broken_version_stops_after_its_first_worker() {
    let dir = TempDir::new("workers-broken");
    let (mut gr, broken) = python_breakable(&dir, &[]);
    let pids = wait_settled(&gr, WORKERS);
    std::fs::write(&broken, "").expect("the temp dir is writable");

    let output = gr.ctl(&["restart", "--wait"]);
    assert_eq!(code(output.status), Some(1), "{}", gr.output());
    let reason = stderr_of(&output);
    assert!(
        reason.contains("restart failed: the new generation exited with status 3"),
        "{reason}"
    );

    // Only the first new worker was started; the old ones are the ones serving.
    let started_gen2 = gr
        .stderr
        .count(|l| l.starts_with("graceful-run: gen 2 ") && l.contains("): started "));
    assert_eq!(started_gen2, 1, "{}", gr.output());
    let now = status(&gr).expect("ctl status answers");
    assert_eq!(now.settled(WORKERS), Some(pids.clone()), "{now:?}");
    let failure = now.last_failure.expect("ctl status shows the failure");
    assert!(failure.contains("exited with status 3"), "{failure}");
    let text = String::from_utf8_lossy(&gr.ctl(&["status"]).stdout).into_owned();
    assert!(
        text.contains("last restart failed: the new generation exited with status 3"),
        "{text}"
    );
    four_answer_with_their_environment(&gr, &pids, 1);

    gr.signal(libc::SIGTERM);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

#[test]
fn a_killed_worker_is_replaced_alone() {
    let dir = TempDir::new("workers-kill");
    // --restart-policy applies per worker.
    let (mut gr, broken) = python_breakable(&dir, &["--restart-policy", "on-failure"]);
    let pids = wait_settled(&gr, WORKERS);
    // SAFETY: kill(2) with integer arguments, to a worker of this test's graceful-run.
    assert_eq!(unsafe { libc::kill(pids[2], libc::SIGKILL) }, 0);
    let after = gr.poll("worker 2 is replaced", || {
        let now = status(&gr)?.settled(WORKERS)?;
        (now[2] != pids[2]).then_some(now)
    });
    assert_eq!(
        (after[0], after[1], after[3]),
        (pids[0], pids[1], pids[3]),
        "{}",
        gr.output()
    );
    assert_eq!(environ(after[2])["GRACEFUL_RUN_WORKER"], "2");
    four_answer_with_their_environment(&gr, &after, 1);

    // A replacement that fails backs off; scaling down meanwhile removes its slot (and once
    // made the core panic when the removed slot's worker exited later).
    std::fs::write(&broken, "").expect("the temp dir is writable");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(after[3], libc::SIGKILL) }, 0);
    gr.stderr
        .wait_for(DEADLINE, |l| {
            l.starts_with("graceful-run: worker 3: restarting in")
        })
        .unwrap_or_else(|| panic!("worker 3 does not back off\n{}", gr.output()));
    let output = gr.ctl(&["scale", "2"]);
    assert_eq!(code(output.status), Some(0), "{}", stderr_of(&output));
    std::fs::remove_file(&broken).expect("the marker is there");
    let two = wait_settled(&gr, 2);
    assert_eq!(two[..], after[..2], "{}", gr.output());
    gr.poll("the scaled-away worker 2 is gone", || {
        (!alive(after[2])).then_some(())
    });
    four_answer_with_their_environment(&gr, &two, 1);
    gr.signal(libc::SIGTERM);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

#[test]
fn scaling_with_ctl_and_signals_and_bad_counts() {
    let dir = TempDir::new("workers-scale");
    let (mut gr, _) = python_breakable(&dir, &[]);
    let four = wait_settled(&gr, WORKERS);

    // Bad counts: one line naming the value, exit 125, nothing changes.
    for bad in ["0", "-1", "abc", "1025", "2.5"] {
        let output = gr.ctl(&["scale", bad]);
        assert_eq!(code(output.status), Some(125), "scale {bad}");
        let err = stderr_of(&output);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("'{bad}'")), "{err}");
    }
    let now = status(&gr).expect("ctl status answers");
    assert_eq!(now.settled(WORKERS), Some(four.clone()), "{now:?}");

    // Up: the four stay, two more come.
    let output = gr.ctl(&["scale", "6"]);
    assert_eq!(code(output.status), Some(0), "{}", stderr_of(&output));
    let six = wait_settled(&gr, 6);
    assert_eq!(six[..4], four[..], "{}", gr.output());
    four_answer_with_their_environment(&gr, &six, 1);

    // Down: the highest go.
    let output = gr.ctl(&["scale", "2"]);
    assert_eq!(code(output.status), Some(0), "{}", stderr_of(&output));
    let two = wait_settled(&gr, 2);
    assert_eq!(two[..], four[..2], "{}", gr.output());
    gr.poll("the scaled-away workers are gone", || {
        six[2..].iter().all(|p| !alive(*p)).then_some(())
    });

    // SIGTTIN: one more; SIGTTOU: one fewer, never below one.
    gr.signal_from_another_process(libc::SIGTTIN);
    let three = wait_settled(&gr, 3);
    assert_eq!(three[..2], two[..], "{}", gr.output());
    // One at a time: two of the same signal pending at once are one (they do not queue).
    gr.signal_from_another_process(libc::SIGTTOU);
    assert_eq!(wait_settled(&gr, 2), two, "{}", gr.output());
    gr.signal_from_another_process(libc::SIGTTOU);
    let one = wait_settled(&gr, 1);
    assert_eq!(one[0], two[0], "{}", gr.output());
    gr.signal_from_another_process(libc::SIGTTOU);
    gr.stderr
        .wait_for(DEADLINE, |l| l.contains("SIGTTOU received: 1 workers"))
        .unwrap_or_else(|| panic!("the last SIGTTOU was not seen\n{}", gr.output()));
    assert_eq!(wait_settled(&gr, 1), one, "{}", gr.output());

    // Up and down in quick succession, without waiting: the last count wins.
    for n in ["4", "1", "3", "1", "5", "2"] {
        let output = gr.ctl(&["scale", n]);
        assert_eq!(code(output.status), Some(0), "{}", stderr_of(&output));
    }
    let two_again = wait_settled(&gr, 2);
    assert_eq!(two_again[0], one[0], "{}", gr.output());
    four_answer_with_their_environment(&gr, &two_again, 1);

    // A rollout still works at the new count, and scaling during one does no harm.
    let output = gr.ctl(&["scale", "3"]);
    assert_eq!(code(output.status), Some(0), "{}", stderr_of(&output));
    wait_settled(&gr, 3);
    gr.signal(libc::SIGHUP);
    let output = gr.ctl(&["scale", "1"]);
    assert_eq!(code(output.status), Some(0), "{}", stderr_of(&output));
    let output = gr.ctl(&["restart", "--wait"]);
    assert_eq!(code(output.status), Some(0), "{}", stderr_of(&output));
    let last = wait_settled(&gr, 1);
    four_answer_with_their_environment(
        &gr,
        &last,
        environ(last[0])["GRACEFUL_RUN_GENERATION"]
            .parse()
            .expect("a number"),
    );

    gr.signal(libc::SIGTERM);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

/// Four workers that ignore TERM: the stop kills all of them at the one --stop-timeout, not
/// one after another; the exit status is the first worker's death (SIGKILL), as with one.
#[test]
fn a_stop_of_four_workers_takes_one_budget() {
    let script = "trap '' TERM; graceful-run notify --ready; while :; do sleep 0.05; done";
    let command = strings(&["sh", "-c", script]);
    let mut gr = start(
        &["-w", "4", "--ready", "notify", "--stop-timeout", "2s"],
        &command,
    );
    wait_settled(&gr, WORKERS);
    let began = Instant::now();
    gr.signal(libc::SIGTERM);
    let status = gr.wait_exit_within(DEADLINE);
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(2) * 2,
        "the stop of 4 workers took {took:?}, not one 2s budget\n{}",
        gr.output()
    );
    assert_eq!(
        crate::support::killed_by(status),
        Some(libc::SIGKILL),
        "{}",
        gr.output()
    );
}

/// With N workers graceful-run exits with the first non-zero status in worker index order,
/// else 0.
#[test]
fn the_exit_status_is_the_first_failure_in_index_order() {
    // Worker i exits with `codes[i]` on TERM.
    let script = r#"code=$(echo "$1" | cut -d, -f$((GRACEFUL_RUN_WORKER + 1)))
trap 'exit $code' TERM
graceful-run notify --ready
while :; do sleep 0.05; done"#;
    for (codes, expected) in [("0,0,0,0", 0), ("0,5,3,0", 5), ("0,0,0,7", 7)] {
        let command = strings(&["sh", "-c", script, "sh", codes]);
        let mut gr = start(&["-w", "4", "--ready", "notify"], &command);
        wait_settled(&gr, WORKERS);
        gr.signal(libc::SIGTERM);
        assert_eq!(
            code(gr.wait_exit()),
            Some(expected),
            "{codes}\n{}",
            gr.output()
        );
    }
}

/// Restarts asked for during a rollout are queued and coalesced: the rollout in progress
/// finishes, then one more rolls every worker to the newest generation. Generations never
/// stack: never more than N + surge workers alive, and no generation after that one.
#[test]
fn restarts_during_a_rollout_are_coalesced_into_one_more() {
    let dir = TempDir::new("workers-restarts-during");
    let slow = dir.join("slow").display().to_string();
    // While `slow` exists, a worker takes a second to boot, so a rollout of 3 lasts seconds.
    let script = r#"if [ -e "$1" ]; then sleep 1; fi; exec python3 "$0""#;
    let command = strings(&["sh", "-c", script, &example_file("python/server.py"), &slow]);
    let mut gr = start(&["-w", "3", "--ready", "notify"], &command);
    wait_settled(&gr, 3);
    std::fs::write(&slow, "").expect("the temp dir is writable");
    let sampler = Sampler::start(&gr);

    gr.signal(libc::SIGHUP);
    gr.wait_stderr("graceful-run: gen 2 ");
    // Three more while gen 2 is rolling out, each once the previous one was taken (the first
    // is queued, the others join it).
    for n in 2..=4 {
        gr.signal(libc::SIGHUP);
        gr.poll("graceful-run takes the restart signal", || {
            (gr.stderr
                .count(|l| l.contains("SIGHUP received: restarting"))
                >= n)
                .then_some(())
        });
    }
    assert_eq!(
        gr.stderr.count(|l| l.contains("restart queued until")),
        1,
        "{}",
        gr.output()
    );
    let pids = gr.poll("every worker runs gen 3", || {
        let now = status(&gr)?;
        let pids = now.settled(3)?;
        now.list.iter().all(|w| w.generation == 3).then_some(pids)
    });
    let seen = sampler.stop();
    gr.signal(libc::SIGTERM);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());

    assert_eq!(pids.len(), 3);
    assert!(
        seen.max_alive <= 3 + SURGE && seen.max_listed <= 3 + SURGE,
        "over 3 + {SURGE} workers: {seen:?}\n{}",
        gr.output()
    );
    // The queued restarts made one rollout, which began as gen 2's ended: a second one would
    // have started gen 4 in that same step, before the status above answered.
    assert_eq!(
        gr.stderr.count(|l| l.starts_with("graceful-run: gen 4 ")),
        0,
        "{}",
        gr.output()
    );
    // Gen 2 rolled out whole (3 workers) before gen 3 began, and gen 3 whole.
    for generation in [2, 3] {
        let started = gr.stderr.count(|l| {
            l.starts_with(&format!("graceful-run: gen {generation} ")) && l.contains("): started ")
        });
        assert_eq!(started, 3, "gen {generation}\n{}", gr.output());
    }
}

/// graceful-run's own supervisor hears the whole service, not each worker: READY=1 once the
/// workers serve, one RELOADING=1 then READY=1 per rollout, STOPPING=1 at the stop.
#[test]
fn a_rollout_is_one_reload_for_systemd() {
    let (systemd, address) = crate::support::fake_systemd("workers");
    let mut cmd = Command::new(graceful_run_bin());
    cmd.args(["-l", "127.0.0.1:0", "-w", "3", "--ready", "notify", "--"])
        .args(python())
        .env("PATH", path_with_graceful_run())
        .env("NOTIFY_SOCKET", &address)
        .env_remove("LISTEN_FDS");
    let mut gr = Gr::spawn(cmd);
    let next = |gr: &Gr| crate::support::next_state(&systemd, gr);
    assert!(
        next(&gr).starts_with("READY=1\nMAINPID="),
        "{}",
        gr.output()
    );
    wait_settled(&gr, 3);

    let output = gr.ctl(&["restart", "--wait"]);
    assert_eq!(code(output.status), Some(0), "{}", gr.output());
    assert!(
        next(&gr).starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{}",
        gr.output()
    );
    assert!(next(&gr).starts_with("READY=1"), "{}", gr.output());

    gr.signal(libc::SIGTERM);
    // Nothing per worker came between: the next state is the stop.
    assert_eq!(next(&gr), "STOPPING=1", "{}", gr.output());
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}
