//! `graceful-run ctl` against a real running graceful-run, found by its pid alone: status of
//! a serving and of a restarting instance, `restart --wait` that succeeds, and that fails
//! (the new generation crashes, or is never ready) with the old one still serving, a refused
//! peer of another uid, a second client answered while a restart is waited for, and
//! `stop --wait`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::http::{self, Target};
use crate::support::{Gr, TempDir, code, graceful_run_bin, http_server};

fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The example server as generation 1, `later` (a shell command that may `exec "$0" FLAGS`)
/// in every later one.
fn serving(dir: &TempDir, later: &str, flags: &[&str]) -> Gr {
    let marker = dir.join("gen1").display().to_string();
    let script = format!(r#"if [ -e "$1" ]; then {later}; fi; : > "$1"; exec "$0""#);
    let server = http_server();
    let mut args: Vec<&str> = vec!["--ready", "notify", "-l", "127.0.0.1:0"];
    args.extend(flags);
    args.extend(["--", "sh", "-c", &script, &server, &marker]);
    let gr = Gr::start(&args);
    gr.wait_stderr("ready after");
    gr
}

#[test]
fn status_of_a_serving_and_of_a_restarting_instance() {
    let dir = TempDir::new("ctl-status");
    let mut gr = serving(&dir, r#"exec "$0" --ready-delay 3000"#, &[]);
    let output = gr.ctl(&["status"]);
    assert_eq!(code(output.status), Some(0), "{}", text(&output));
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        out.contains(&format!("graceful-run pid {}", gr.pid())),
        "{out}"
    );
    assert!(out.contains("gen 1") && out.contains("ready"), "{out}");
    assert!(out.contains("fd 3: tcp://127.0.0.1:"), "{out}");

    gr.signal(nix::libc::SIGHUP);
    gr.wait_stderr("gen 2 (pid");
    let output = gr.ctl(&["status", "--json"]);
    assert_eq!(code(output.status), Some(0), "{}", text(&output));
    let json = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(json.contains(r#""number":2"#), "{json}");
    assert!(json.contains(r#""state":"starting""#), "{json}");
    assert!(json.contains(r#""state":"ready""#), "{json}");
    gr.signal(nix::libc::SIGTERM);
    gr.wait_exit();
}

#[test]
fn restart_wait_returns_once_the_new_generation_took_over() {
    let dir = TempDir::new("ctl-restart");
    let mut gr = serving(&dir, r#"exec "$0" --ready-delay 500"#, &[]);
    let output = gr.ctl(&["restart", "--wait"]);
    assert_eq!(code(output.status), Some(0), "{}", text(&output));
    // It returned after the handover, not before: graceful-run logs the handover in the step
    // that answers. The test's own reader thread may not have read that line from the pipe yet
    // when the answer arrives (seen once spawning got faster), so give it the usual deadline.
    gr.wait_stderr("takes over from gen 1");
    assert!(
        gr.stderr
            .count(|l| l.contains("gen 2 (pid") && l.contains("takes over from gen 1"))
            == 1,
        "{}",
        gr.output()
    );
    // The old one may still take a connection or two before it acts on its TERM.
    let pid2 = gr.generation_pid(2);
    let target = Target::Tcp(gr.inet_addr(0));
    crate::support::poll_until("the new generation answers", || {
        http::get(&target, "/").expect("served").pid() == pid2
    });
    gr.signal(nix::libc::SIGTERM);
    gr.wait_exit();
}

#[test]
fn restart_wait_fails_when_the_new_generation_crashes_and_the_old_one_serves_on() {
    let dir = TempDir::new("ctl-crash");
    let mut gr = serving(&dir, "exit 3", &[]);
    let pid1 = gr.generation_pid(1);
    let output = gr.ctl(&["restart", "--wait"]);
    assert_eq!(code(output.status), Some(1), "{}", text(&output));
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        err.contains("exited with status 3 before it was ready"),
        "{err}"
    );
    let reply = http::get(&Target::Tcp(gr.inet_addr(0)), "/").expect("still served");
    assert_eq!(reply.pid(), pid1);
    gr.signal(nix::libc::SIGTERM);
    gr.wait_exit();
}

#[test]
fn restart_wait_fails_when_the_new_generation_is_never_ready() {
    let dir = TempDir::new("ctl-never");
    let mut gr = serving(&dir, r#"exec "$0" --no-ready"#, &["--ready-timeout", "1s"]);
    let pid1 = gr.generation_pid(1);
    let output = gr.ctl(&["restart", "--wait"]);
    assert_eq!(code(output.status), Some(1), "{}", text(&output));
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(err.contains("not ready in time"), "{err}");
    let reply = http::get(&Target::Tcp(gr.inet_addr(0)), "/").expect("still served");
    assert_eq!(reply.pid(), pid1);
    gr.signal(nix::libc::SIGTERM);
    gr.wait_exit();
}

/// Another uid may not talk to graceful-run: one clear line, exit 125, nothing done.
#[test]
fn a_peer_of_another_uid_is_refused() {
    let dir = TempDir::new("ctl-refused");
    let mut gr = serving(&dir, r#"exec "$0""#, &[]);
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(graceful_run_bin())
        .args(["ctl", "--pid", &gr.pid().to_string(), "restart"])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(code(output.status), Some(125), "{}", text(&output));
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        err.contains("only root and its own user may control it"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        gr.stderr.count(|l| l.contains("): started ")),
        1,
        "no restart happened\n{}",
        gr.output()
    );
    gr.signal(nix::libc::SIGTERM);
    gr.wait_exit();
}

/// While one client waits for a slow restart, another is answered at once.
#[test]
fn a_second_client_is_answered_while_a_restart_is_waited_for() {
    let dir = TempDir::new("ctl-second");
    let mut gr = serving(&dir, r#"exec "$0" --ready-delay 3000"#, &[]);
    let waiting = Command::new(graceful_run_bin())
        .args(["ctl", "--pid", &gr.pid().to_string(), "restart", "--wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("graceful-run ctl runs");
    gr.wait_stderr("gen 2 (pid");
    let asked = Instant::now();
    let output = gr.ctl(&["status"]);
    assert_eq!(code(output.status), Some(0), "{}", text(&output));
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "status waited for the restart"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("starting"));
    let first = waiting.wait_with_output().expect("the waiting client ends");
    assert_eq!(code(first.status), Some(0), "{}", text(&first));
    gr.signal(nix::libc::SIGTERM);
    gr.wait_exit();
}

#[test]
fn stop_wait_returns_once_graceful_run_is_done() {
    let dir = TempDir::new("ctl-stop");
    let mut gr = serving(&dir, r#"exec "$0""#, &[]);
    let output = gr.ctl(&["stop", "--wait"]);
    assert_eq!(code(output.status), Some(0), "{}", text(&output));
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}
