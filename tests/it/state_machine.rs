//! Regressions for the supervisor's transitions, each a defect the state machine rebuild
//! fixed, shown with the real binary: GNU `timeout`'s double TERM, a first generation that never becomes ready, a serving
//! generation that dies while its replacement never becomes ready, a reload during crash
//! backoff as systemd sees it, a pre-fork server whose workers must hear only from their
//! master, and crash restarts without a gap.

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::libc;

use crate::support::http::{Load, Target};
use crate::support::{
    DEADLINE, Gr, KillOnDrop, TempDir, code, graceful_run_bin, http_server, probe, sleep_marker,
    sleepers,
};

/// Defect 9: GNU timeout sends TERM to its child, then to its own process group (which holds
/// graceful-run): one request, not a second TERM that kills at once.
#[test]
fn gnu_timeouts_double_term_is_one_stop_request() {
    let script =
        "trap 'sleep 0.3; echo graceful; exit 0' TERM; while :; do sleep 0.05 & wait; done";
    for _ in 0..5 {
        let output = Command::new("timeout")
            .args(["--preserve-status", "0.5"])
            .arg(graceful_run_bin())
            .args(["--stop-timeout", "20s", "--", "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("GNU timeout runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{stderr}\n{stdout}");
        assert!(stdout.contains("graceful"), "{stderr}\n{stdout}");
        assert!(!stderr.contains("killing everything"), "{stderr}");
    }
}

/// A TERM from the same process well after the first is a second request, and forces.
#[test]
fn a_later_term_from_the_same_process_forces() {
    let mut gr = Gr::start(&["--stop-timeout", "60s", "--", &probe(), "ignore-term"]);
    gr.wait_stdout("ready");
    gr.signal(libc::SIGTERM);
    gr.wait_stderr("sent SIGTERM");
    // Past the window in which a repeat counts as the same request (500 ms).
    std::thread::sleep(Duration::from_millis(700));
    gr.signal(libc::SIGTERM);
    gr.wait_stderr("killing everything now");
    assert_eq!(
        crate::support::killed_by(gr.wait_exit()),
        Some(libc::SIGKILL),
        "{}",
        gr.output()
    );
}

/// Defect 10: a first generation that never becomes ready is stopped, and graceful-run exits
/// 124 (so `restart: on-failure` restarts the container) with a hint on how to be ready.
#[test]
fn first_generation_never_ready_exits_124() {
    let mut gr = Gr::start(&[
        "--ready",
        "notify",
        "--ready-timeout",
        "1s",
        "--",
        "sleep",
        "60",
    ]);
    let status = gr.wait_exit();
    assert_eq!(code(status), Some(124), "{}", gr.output());
    let line = gr.wait_stderr("not ready after 1s");
    assert!(line.contains("READY=1"), "{line}");
}

/// Defect 4: the serving generation dies during a restart and the new one then misses
/// --ready-timeout: graceful-run used to hang with nothing running. Now the service ends
/// (no restart policy) with 124: nothing was ready to serve.
#[test]
fn serving_dies_during_a_restart_whose_new_generation_never_gets_ready() {
    let dir = TempDir::new("sm-takeover");
    let marker = dir.join("gen1");
    let script = r#"if [ -e "$1" ]; then exec sleep 60; fi; : > "$1"; exec "$0""#;
    let mut gr = Gr::start(&[
        "--ready",
        "notify",
        "--ready-timeout",
        "2s",
        "-l",
        "127.0.0.1:0",
        "--",
        "sh",
        "-c",
        script,
        &http_server(),
        marker.to_str().expect("temp paths are UTF-8"),
    ]);
    gr.wait_stderr("ready after");
    let gen1 = gr.generation_pid(1);
    gr.signal(libc::SIGHUP);
    gr.wait_stderr("gen 2 (pid");
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(gen1, libc::SIGKILL) };
    gr.wait_stderr("takes over once ready");
    let status = gr.wait_exit();
    assert_eq!(code(status), Some(124), "{}", gr.output());
    gr.wait_stderr("not ready after 2s");
}

/// Defect 11: a restart signal while the command is in crash backoff starts it at once, and
/// systemd hears RELOADING=1 then READY=1, so `systemctl reload` completes.
#[test]
fn reload_during_crash_backoff_completes_for_systemd() {
    let (systemd, address) = crate::support::fake_systemd("backoff");
    let mut command = Command::new(graceful_run_bin());
    command
        .args([
            "--ready",
            "notify",
            "--restart-policy",
            "always",
            "--restart-delay",
            "30s",
            "-l",
            "127.0.0.1:0",
            "--",
        ])
        .arg(http_server())
        .env("NOTIFY_SOCKET", &address);
    let mut gr = Gr::spawn(command);
    assert!(crate::support::next_state(&systemd, &gr).starts_with("READY=1\nMAINPID="));
    // A crash right after becoming ready: it did not serve for --restart-delay, so it backs off.
    let gen1 = gr.generation_pid(1);
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(gen1, libc::SIGKILL) };
    gr.wait_stderr("restarting in 30s");
    gr.signal(libc::SIGHUP);
    assert!(crate::support::next_state(&systemd, &gr).starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert!(crate::support::next_state(&systemd, &gr).starts_with("READY=1\n"));
    gr.wait_stderr("gen 2 (pid");
    gr.signal(libc::SIGTERM);
    assert_eq!(crate::support::next_state(&systemd, &gr), "STOPPING=1");
    gr.wait_exit();
}

/// Defect 17: a pre-fork server's workers hear the stop signal from their master, never from
/// graceful-run (which would cut their requests): KillMode=mixed.
#[test]
fn workers_get_the_stop_signal_from_their_master_only() {
    // The master forwards TERM to its worker as USR2 (its own graceful stop), then waits. Its
    // trap is set before the worker starts: once the worker says "ready", TERM is handled.
    let master = r#"trap 'kill -USR2 $w; sleep 0.3; kill -KILL $w; exit 0' TERM; "$0" signals --ignore-stop & w=$!; wait $w; wait $w"#;
    let mut gr = Gr::start(&["--", "sh", "-c", master, &probe()]);
    gr.wait_stdout("ready");
    gr.terminate_expecting_exit(0);
    let got: Vec<String> = gr
        .stdout
        .snapshot()
        .into_iter()
        .filter(|l| l.starts_with("signal "))
        .collect();
    assert!(
        got.contains(&format!("signal {}", libc::SIGUSR2)),
        "{got:?}\n{}",
        gr.output()
    );
    assert!(
        !got.contains(&format!("signal {}", libc::SIGTERM)),
        "the worker got TERM from graceful-run: {got:?}\n{}",
        gr.output()
    );
}

/// `--kill-mode group` still sends every signal to the whole group, for a shell pipeline.
#[test]
fn group_kill_mode_reaches_every_process() {
    // The shell itself ignores USR1: it stays to wait for both probes, so the test sees the
    // group signal reach them and not the race between the shell dying of it and the stop of
    // what it leaves (both probes then get TERM, which is a different test).
    let script = r#"trap "" USR1; "$0" signals & "$0" signals & wait"#;
    let mut gr = Gr::start(&["--kill-mode", "group", "--", "sh", "-c", script, &probe()]);
    gr.stdout
        .wait_for(DEADLINE, |_| true)
        .expect("a probe started");
    gr.poll("both probes are ready", || {
        (gr.stdout.count(|l| l == "ready") == 2).then_some(())
    });
    gr.signal(libc::SIGUSR1);
    gr.poll("both probes got USR1", || {
        (gr.stdout
            .count(|l| *l == format!("signal {}", libc::SIGUSR1))
            == 2)
            .then_some(())
    });
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

/// Part 3 of the issue: a generation that served is restarted at once, not after a growing
/// backoff, so a server that crashes under load leaves no gap.
#[test]
fn crash_restarts_after_serving_are_immediate() {
    let mut gr = Gr::start(&[
        "--ready",
        "notify",
        "--restart-policy",
        "always",
        "-l",
        "127.0.0.1:0",
        "--",
        &http_server(),
    ]);
    gr.wait_stderr("ready after");
    let load = Load::start(Target::Tcp(gr.inet_addr(0)), 4);
    for generation in 1..=4u64 {
        let pid = gr.generation_pid(generation);
        load.wait_successes(10);
        std::thread::sleep(Duration::from_millis(300)); // it serves a while
        // SAFETY: kill(2) with integer arguments.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        gr.wait_stderr(&format!("gen {} (pid", generation + 1));
    }
    load.wait_successes(10);
    let report = load.stop();
    assert_eq!(
        gr.stderr.count(|l| l.contains("restarting in")),
        0,
        "{}",
        gr.output()
    );
    assert_eq!(
        gr.stderr.count(|l| l.contains("restarting now")),
        4,
        "{}",
        gr.output()
    );
    // Requests in flight on a killed server fail; none may be refused or time out.
    assert!(report.failed() <= 4 * 4, "{report:?}\n{}", gr.output());
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

/// Defect 6: a process re-parented to graceful-run only when the SIGKILL sweep killed its
/// parent (both outside the command's process group, both ignoring TERM) used to be left
/// alone, with graceful-run waiting for it forever. Now it gets SIGKILL too, and graceful-run
/// ends within the stop timeout.
#[test]
fn orphans_revealed_by_the_kill_sweep_are_killed_too() {
    let outer = sleep_marker();
    let inner = sleep_marker();
    let _cleanup = (KillOnDrop(outer.clone()), KillOnDrop(inner.clone()));
    let script = format!(
        r#"setsid sh -c 'trap "" TERM; (trap "" TERM; exec sleep {inner}) & exec sleep {outer}' & sleep 0.2; exit 0"#
    );
    let mut gr = Gr::start(&["--stop-timeout", "1s", "--", "sh", "-c", &script]);
    let status = gr.wait_exit();
    assert_eq!(code(status), Some(0), "{}", gr.output());
    gr.wait_stderr("processes left behind did not stop in time: sending SIGKILL");
    crate::support::poll_until("both sleeps are gone", || {
        sleepers(&outer).is_empty() && sleepers(&inner).is_empty()
    });
}
