//! Signals: every catchable signal reaches the command once and in order, `--map-signal`
//! swaps and drops them, the stop signal and its SIGCONT, escalation to SIGKILL after
//! `--stop-timeout` or at a second TERM/INT, the whole process group (and what it leaves
//! behind) is stopped, and signals the command sends to graceful-run are not requests.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::libc;

use crate::support::{
    Gr, KillOnDrop, alive, code, graceful_run_bin, killed_by, probe, processes_with, sleep_marker,
    sleepers,
};

/// The `signal N` lines the probe printed so far, as numbers.
fn received(gr: &Gr) -> Vec<i32> {
    gr.stdout
        .snapshot()
        .iter()
        .filter_map(|line| line.strip_prefix("signal ")?.parse().ok())
        .collect()
}

/// Waits until the probe has printed at least `count` signal lines; returns all of them.
fn wait_received(gr: &Gr, count: usize) -> Vec<i32> {
    gr.poll(&format!("the probe got {count} signals"), || {
        Some(received(gr)).filter(|got| got.len() >= count)
    })
}

/// graceful-run with `flags`, running `probe signals --ignore-stop`, ready to receive.
fn start_signal_probe(flags: &[&str]) -> Gr {
    let probe = probe();
    let mut args = flags.to_vec();
    args.extend(["--", &probe, "signals", "--ignore-stop"]);
    let gr = Gr::start(&args);
    gr.wait_stdout("ready");
    gr
}

/// Sends `signal` to graceful-run and waits for the probe's next signal line; returns it.
fn send_and_receive(gr: &Gr, signal: i32) -> i32 {
    let before = received(gr).len();
    gr.signal(signal);
    wait_received(gr, before + 1)[before]
}

/// Ends a run whose probe ignores stop requests: TERM (a stop), then a second TERM kills.
fn force_stop(gr: &mut Gr) {
    gr.signal(libc::SIGTERM);
    gr.wait_stderr("SIGTERM received: stopping");
    gr.terminate_expecting_death_by(libc::SIGKILL);
}

/// The stop signal the probe receives when graceful-run gets `request` under `flags`.
fn stop_signal_delivered(flags: &[&str], request: i32) -> i32 {
    let mut gr = start_signal_probe(flags);
    gr.signal(request);
    let got = wait_received(&gr, 2);
    assert!(
        got.contains(&libc::SIGCONT),
        "SIGCONT follows the stop signal: {got:?}\n{}",
        gr.output()
    );
    let stop: Vec<i32> = got
        .iter()
        .copied()
        .filter(|s| *s != libc::SIGCONT)
        .collect();
    assert_eq!(stop.len(), 1, "one stop signal: {got:?}\n{}", gr.output());
    // The second request kills at once: nothing else is delivered.
    gr.terminate_expecting_death_by(libc::SIGKILL);
    assert_eq!(received(&gr).len(), 2, "{}", gr.output());
    stop[0]
}

/// A unique marker for the test's processes, and a guard that kills them if the test fails.
fn marked() -> (String, KillOnDrop) {
    let marker = sleep_marker();
    (marker.clone(), KillOnDrop(marker))
}

/// Processes still alive with `marker` on their command line, graceful-run excluded.
fn survivors(marker: &str, gr: &Gr) -> Vec<i32> {
    processes_with(marker)
        .into_iter()
        .filter(|pid| *pid != gr.pid())
        .collect()
}

/// Waits until `count` `sleep` processes with `marker` run.
fn wait_sleepers(marker: &str, count: usize, gr: &Gr) -> Vec<i32> {
    gr.poll(&format!("{count} sleep {marker} run"), || {
        Some(sleepers(marker)).filter(|found| found.len() >= count)
    })
}

/// Alive with no signal pending: a fatal signal sent to it, even if it has not run since,
/// would show in SigPnd/ShdPnd (as SIGKILL once the kernel decided the process dies).
fn untouched(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    alive(pid)
        && status
            .lines()
            .filter(|l| l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
            .all(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|mask| mask.trim_start_matches('0').is_empty())
            })
}

/// graceful-run with `args`, leading a process group of its own: a comparison of groups
/// cannot pass by inheriting the test's, and a signal wrongly sent to graceful-run's group
/// cannot reach the test runner.
fn start_group_leader(args: &[&str]) -> Gr {
    let mut command = Command::new(graceful_run_bin());
    command.args(args).process_group(0).stdin(Stdio::null());
    Gr::spawn(command)
}

/// Index of the first stderr line containing `needle`.
fn stderr_index(gr: &Gr, needle: &str) -> usize {
    gr.stderr
        .snapshot()
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no stderr line containing {needle:?}\n{}", gr.output()))
}

/// Every catchable signal but CHLD, TERM and INT is forwarded exactly once, in order; INT
/// then stops (INT + CONT) and a TERM during the stop kills with SIGKILL.
#[test]
fn every_catchable_signal_is_forwarded_once_in_order() {
    let mut gr = start_signal_probe(&["--restart-signal", "none", "--stop-timeout", "60s"]);
    let not_forwarded = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGCHLD,
        libc::SIGTERM,
        libc::SIGINT,
    ];
    let forwarded: Vec<i32> = (1..=31).filter(|s| !not_forwarded.contains(s)).collect();
    for &signal in &forwarded {
        assert_eq!(
            send_and_receive(&gr, signal),
            signal,
            "signal {signal} arrived as another\n{}",
            gr.output()
        );
    }
    assert_eq!(received(&gr), forwarded, "{}", gr.output());

    gr.signal(libc::SIGINT);
    let after_stop = wait_received(&gr, forwarded.len() + 2);
    let mut stop = after_stop[forwarded.len()..].to_vec();
    stop.sort_unstable();
    assert_eq!(stop, [libc::SIGINT, libc::SIGCONT], "{}", gr.output());
    gr.wait_stderr("sent SIGINT");

    gr.terminate_expecting_death_by(libc::SIGKILL);
    assert_eq!(
        received(&gr),
        after_stop,
        "nothing after the stop\n{}",
        gr.output()
    );
}

/// `--map-signal USR1:USR2 --map-signal USR2:USR1 --map-signal WINCH:` swaps USR1 and
/// USR2 and drops WINCH, while other signals pass unchanged.
#[test]
fn map_signal_swaps_and_drops() {
    let mut gr = start_signal_probe(&[
        "--map-signal",
        "USR1:USR2",
        "--map-signal",
        "USR2:USR1",
        "--map-signal",
        "WINCH:",
    ]);
    assert_eq!(send_and_receive(&gr, libc::SIGUSR1), libc::SIGUSR2);
    assert_eq!(send_and_receive(&gr, libc::SIGUSR2), libc::SIGUSR1);
    gr.signal(libc::SIGWINCH);
    // URG is a marker: forwarded after WINCH, so WINCH would have arrived before it.
    assert_eq!(send_and_receive(&gr, libc::SIGURG), libc::SIGURG);
    assert_eq!(
        received(&gr),
        [libc::SIGUSR2, libc::SIGUSR1, libc::SIGURG],
        "{}",
        gr.output()
    );
    force_stop(&mut gr);
}

/// `--map-signal` accepts numbers and lowercase `sig` names: `10:sigusr2`, `sigurg:winch`.
#[test]
fn map_signal_accepts_numbers_and_lowercase_names() {
    let mut gr =
        start_signal_probe(&["--map-signal", "10:sigusr2", "--map-signal", "sigurg:winch"]);
    assert_eq!(send_and_receive(&gr, libc::SIGUSR1), libc::SIGUSR2);
    assert_eq!(send_and_receive(&gr, libc::SIGURG), libc::SIGWINCH);
    force_stop(&mut gr);
}

/// By default the command is stopped with the signal graceful-run received: INT gives INT.
#[test]
fn stop_signal_defaults_to_the_received_signal() {
    assert_eq!(stop_signal_delivered(&[], libc::SIGINT), libc::SIGINT);
}

/// `--map-signal TERM:QUIT` makes a TERM stop deliver QUIT.
#[test]
fn stop_signal_follows_map_signal() {
    assert_eq!(
        stop_signal_delivered(&["--map-signal", "TERM:QUIT"], libc::SIGTERM),
        libc::SIGQUIT
    );
}

/// `--stop-signal USR1` wins over the received signal and over `--map-signal`.
#[test]
fn stop_signal_flag_overrides_the_map() {
    assert_eq!(
        stop_signal_delivered(
            &["--stop-signal", "USR1", "--map-signal", "TERM:QUIT"],
            libc::SIGTERM
        ),
        libc::SIGUSR1
    );
}

/// A command stopped with SIGSTOP still acts on the stop signal at once, because SIGCONT
/// follows it: it exits by itself long before the 60 s stop timeout.
#[test]
fn stopped_child_is_continued_to_act_on_the_stop_signal() {
    let probe = probe();
    let mut gr = Gr::start(&["--stop-timeout", "60s", "--", &probe, "signals"]);
    gr.wait_stdout("ready");
    let child = gr.generation_pid(1);
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(child, libc::SIGSTOP) };
    crate::support::poll_until("the probe is stopped", || {
        std::fs::read_to_string(format!("/proc/{child}/stat"))
            .is_ok_and(|stat| stat[stat.rfind(')').unwrap_or(0) + 2..].starts_with('T'))
    });
    gr.signal(libc::SIGTERM);
    let status = gr.wait_exit();
    assert_eq!(
        code(status),
        Some(0),
        "the probe exits 0 on TERM\n{}",
        gr.output()
    );
    assert!(received(&gr).contains(&libc::SIGTERM), "{}", gr.output());
    assert_eq!(
        gr.stderr.count(|l| l.contains("sending SIGKILL")),
        0,
        "{}",
        gr.output()
    );
}

/// A command that ignores TERM is killed with SIGKILL once `--stop-timeout` has passed (not
/// before), and graceful-run then dies by SIGKILL too (137 in a shell).
#[test]
fn term_ignoring_child_is_killed_after_the_stop_timeout() {
    let probe = probe();
    let mut gr = Gr::start(&["--stop-timeout", "1s", "--", &probe, "ignore-term"]);
    gr.wait_stdout("ready");
    let asked = Instant::now();
    gr.signal(libc::SIGTERM);
    gr.wait_stderr("sent SIGTERM; SIGKILL in");
    let status = gr.wait_exit();
    let elapsed = asked.elapsed();
    assert_eq!(killed_by(status), Some(libc::SIGKILL), "{}", gr.output());
    assert!(
        elapsed >= Duration::from_millis(900),
        "killed after {elapsed:?}, before the 1s stop timeout\n{}",
        gr.output()
    );
    assert!(
        stderr_index(&gr, "sent SIGTERM") < stderr_index(&gr, "did not stop in time"),
        "{}",
        gr.output()
    );
    gr.wait_stderr("killed by SIGKILL");
}

/// A second TERM or INT during a stop kills the command at once, not after the 60 s timeout.
#[test]
fn second_stop_request_kills_at_once() {
    let probe = probe();
    for second in [libc::SIGINT, libc::SIGTERM] {
        let mut gr = Gr::start(&["--stop-timeout", "60s", "--", &probe, "ignore-term"]);
        gr.wait_stdout("ready");
        gr.signal(libc::SIGTERM);
        gr.wait_stderr("sent SIGTERM");
        gr.signal_from_another_process(second);
        let status = gr.wait_exit();
        assert_eq!(killed_by(status), Some(libc::SIGKILL), "{}", gr.output());
        gr.wait_stderr("killing everything now");
    }
}

/// TERM stops every process of a shell pipeline (the command's process group): no `sleep`
/// survives graceful-run.
#[test]
fn pipeline_is_stopped_as_a_whole() {
    let (marker, _cleanup) = marked();
    let script = format!("sleep {marker} | sleep {marker}");
    let mut gr = Gr::start(&["--", "sh", "-c", &script]);
    wait_sleepers(&marker, 2, &gr);
    gr.terminate_expecting_death_by(libc::SIGTERM);
    assert_eq!(
        survivors(&marker, &gr),
        Vec::<i32>::new(),
        "{}",
        gr.output()
    );
}

/// With `--no-process-group` only the shell gets TERM; the pipeline's `sleep`s, orphaned to
/// graceful-run, are then stopped as leftovers, so none survives either.
#[test]
fn pipeline_without_process_group_is_stopped_as_leftovers() {
    let (marker, _cleanup) = marked();
    let script = format!("sleep {marker} | sleep {marker}");
    let mut gr = Gr::start(&["--no-process-group", "--", "sh", "-c", &script]);
    let sleepers = wait_sleepers(&marker, 2, &gr);
    gr.signal(libc::SIGTERM);
    gr.wait_stderr("killed by SIGTERM");
    gr.wait_stderr("stopping processes left behind by the command");
    let status = gr.wait_exit();
    assert_eq!(killed_by(status), Some(libc::SIGTERM), "{}", gr.output());
    assert!(!sleepers.iter().any(|pid| alive(*pid)), "{}", gr.output());
    assert_eq!(
        survivors(&marker, &gr),
        Vec::<i32>::new(),
        "{}",
        gr.output()
    );
}

/// A group member that ignores TERM and outlives the command gets the stop signal, then
/// SIGKILL after `--stop-timeout`; only then does graceful-run exit, with the command's 0.
#[test]
fn term_ignoring_leftover_is_killed_before_exit() {
    let (marker, _cleanup) = marked();
    // Ignored before the fork, so the background sleep ignores TERM from its first instant.
    let script = format!("trap '' TERM; sleep {marker} & exit 0");
    let mut gr = Gr::start(&["--stop-timeout", "1s", "--", "sh", "-c", &script]);
    gr.wait_stderr("processes are left in its process group");
    let status = gr.wait_exit();
    assert_eq!(code(status), Some(0), "{}", gr.output());
    assert!(
        stderr_index(&gr, "exited with status 0") < stderr_index(&gr, "did not stop in time"),
        "{}",
        gr.output()
    );
    assert_eq!(
        survivors(&marker, &gr),
        Vec::<i32>::new(),
        "{}",
        gr.output()
    );
}

/// A group member left behind by the command receives the stop signal (and SIGCONT) once,
/// not twice: many servers take a second TERM as "quit now".
#[test]
fn leftover_gets_the_stop_signal_once() {
    let probe = probe();
    let (marker, _cleanup) = marked();
    // The shell exits 0 on USR1, leaving the probe behind in the command's process group.
    // (The probe ignores the marker argument.)
    let script = "trap 'exit 0' USR1; \"$0\" signals --ignore-stop \"$1\" & wait";
    let mut gr = Gr::start(&[
        "--stop-timeout",
        "1s",
        "--",
        "sh",
        "-c",
        script,
        &probe,
        &marker,
    ]);
    gr.wait_stdout("ready");
    gr.signal(libc::SIGUSR1);
    gr.wait_stderr("processes are left in its process group");
    let status = gr.wait_exit();
    assert_eq!(code(status), Some(0), "{}", gr.output());
    assert_eq!(
        gr.stderr.count(|l| l.contains("sent SIGTERM")),
        1,
        "one stop signal for the leftover\n{}",
        gr.output()
    );
    // Signals pending together run their handlers in no set order, and two quick TERMs may
    // merge while pending: the probe's view is the weaker check.
    // USR1 went to the main process only (--kill-mode mixed): the probe never saw it.
    let mut got = received(&gr);
    got.sort_unstable();
    assert_eq!(got, [libc::SIGTERM, libc::SIGCONT], "{}", gr.output());
}

/// A group member that exits on TERM is stopped as soon as the command exits: graceful-run
/// exits with the command's 0 without waiting for the 60 s stop timeout or sending SIGKILL.
#[test]
fn leftover_that_exits_on_term_is_gone_promptly() {
    let (marker, _cleanup) = marked();
    let script = format!("sleep {marker} & exit 0");
    let mut gr = Gr::start(&["--stop-timeout", "60s", "--", "sh", "-c", &script]);
    let status = gr.wait_exit();
    assert_eq!(code(status), Some(0), "{}", gr.output());
    gr.wait_stderr("processes are left in its process group");
    assert_eq!(
        gr.stderr.count(|l| l.contains("sending SIGKILL")),
        0,
        "{}",
        gr.output()
    );
    assert_eq!(
        survivors(&marker, &gr),
        Vec::<i32>::new(),
        "{}",
        gr.output()
    );
}

/// A TERM that the command itself sends to graceful-run is not a stop request: the service
/// keeps running until a TERM from outside.
#[test]
fn term_from_the_command_itself_is_ignored() {
    let (marker, _cleanup) = marked();
    let script = format!("kill -TERM $PPID; echo sent; exec sleep {marker}");
    let mut gr = Gr::start(&["--", "sh", "-c", &script]);
    gr.wait_stdout("sent");
    gr.wait_stderr("ignoring SIGTERM sent to graceful-run by a process of the command");
    let child = gr.generation_pid(1);
    assert!(gr.is_running(), "{}", gr.output());
    assert!(alive(child), "{}", gr.output());
    assert_eq!(
        gr.stderr.count(|l| l.contains("stopping")),
        0,
        "{}",
        gr.output()
    );

    gr.terminate_expecting_death_by(libc::SIGTERM);
    assert_eq!(
        gr.stderr
            .count(|l| l.contains("SIGTERM received: stopping")),
        1,
        "{}",
        gr.output()
    );
}

/// A signal that a process of the command's group sends to graceful-run is not forwarded
/// back to the group: the sender is not a worker's main process, so only its process group
/// tells (the executor reads it before the signal could be forwarded; no fast path skips
/// that read for such a sender). A USR2 from outside, sent after it, is forwarded as usual
/// and shows the USR1 was passed over, not late.
#[test]
fn signal_from_the_commands_group_is_not_echoed() {
    let (marker, _cleanup) = marked();
    // The main process traps both; a child of it (same group, another pid) sends USR1 to
    // graceful-run ($PPID, expanded by the main shell) and stays alive, so that its group
    // can still be read.
    let script = format!(
        "trap 'echo got USR1' USR1; trap 'echo got USR2' USR2; \
         sh -c \"kill -USR1 $PPID; echo sent; exec sleep {marker}\" & \
         while :; do wait; done"
    );
    let mut gr = Gr::start(&["--", "sh", "-c", &script]);
    gr.wait_stdout("sent");
    gr.wait_stderr("ignoring SIGUSR1 sent to graceful-run by a process of the command");
    gr.signal(libc::SIGUSR2);
    gr.wait_stdout("got USR2");
    assert_eq!(
        gr.stdout.count(|l| l.contains("got USR1")),
        0,
        "{}",
        gr.output()
    );
    gr.terminate_expecting_death_by(libc::SIGTERM);
}

/// The state letter of /proc/PID/stat (R, S, T, Z...), if the process is there.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// READY=1 sent just before the command exits is taken before the exit, even when both wait
/// for graceful-run at once: the loop takes signals first, but a queued datagram goes before
/// a SIGCHLD (its sender may have sent it before exiting). graceful-run is stopped while the
/// command notifies and exits, so both are there when it runs again.
#[test]
fn ready_sent_before_the_exit_is_taken_before_it() {
    let dir = crate::support::TempDir::new("ready-exit");
    let go = dir.join("go");
    let script = format!(
        "until [ -e '{}' ]; do sleep 0.01; done; exec '{}' notify --no-block READY=1",
        go.display(),
        graceful_run_bin().display()
    );
    let mut gr = Gr::start(&["--ready", "notify", "--", "sh", "-c", &script]);
    let command = gr.generation_pid(1);
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(gr.pid(), libc::SIGSTOP) };
    gr.poll("graceful-run is stopped", || {
        (proc_state(gr.pid()) == Some('T')).then_some(())
    });
    std::fs::write(&go, "").expect("the temp dir is writable");
    // Exited and not reaped: graceful-run, stopped, has not seen it yet.
    gr.poll("the command has exited", || {
        (proc_state(command) == Some('Z')).then_some(())
    });
    // SAFETY: as above.
    unsafe { libc::kill(gr.pid(), libc::SIGCONT) };
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
    let ready = stderr_index(&gr, "ready after");
    let exited = stderr_index(&gr, "exited with status 0");
    assert!(ready < exited, "{}", gr.output());
}

/// `--no-process-group` keeps the command in graceful-run's process group.
#[test]
fn no_process_group_shares_graceful_runs_group() {
    let probe = probe();
    let mut gr = start_group_leader(&["--no-process-group", "--", &probe, "report"]);
    let pgid = gr.wait_stdout("pgid=");
    assert_eq!(pgid, format!("pgid={}", gr.pid()), "{}", gr.output());
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

/// `--no-process-group` forwards signals to the command alone: USR1 reaches the probe while
/// a background `sleep` of the same group (killed by a USR1) keeps running.
#[test]
fn no_process_group_signals_the_command_alone() {
    let probe = probe();
    let (marker, _cleanup) = marked();
    let script = format!("sleep {marker} & exec \"$0\" signals");
    let mut gr = start_group_leader(&["--no-process-group", "--", "sh", "-c", &script, &probe]);
    gr.wait_stdout("ready");
    let sleeper = wait_sleepers(&marker, 1, &gr)[0];
    assert_eq!(send_and_receive(&gr, libc::SIGUSR1), libc::SIGUSR1);
    assert!(
        untouched(sleeper),
        "the group's sleep got USR1\n{}",
        gr.output()
    );

    gr.terminate_expecting_exit(0);
    assert_eq!(
        survivors(&marker, &gr),
        Vec::<i32>::new(),
        "{}",
        gr.output()
    );
}

/// Real-time signals sent to graceful-run are forwarded like any other, by number and through
/// `--map-signal` with their kill(1) names; graceful-run survives them (without a handler the
/// first one killed it and left its socket file behind), and still stops cleanly.
#[test]
fn realtime_signals_are_forwarded() {
    let dir = crate::support::TempDir::new("rt-signals");
    let socket = dir.join("app.sock");
    let listen = format!("unix:{}", socket.display());
    let mut gr = start_signal_probe(&[
        "-l",
        &listen,
        "--map-signal",
        "RTMIN+7:SIGRTMAX-1",
        "--restart-signal",
        "none",
    ]);
    assert_eq!(send_and_receive(&gr, 40), 40, "{}", gr.output());
    assert_eq!(send_and_receive(&gr, libc::SIGRTMIN()), libc::SIGRTMIN());
    assert_eq!(send_and_receive(&gr, 41), 63, "{}", gr.output());
    assert_eq!(send_and_receive(&gr, 64), 64, "{}", gr.output());
    assert!(gr.is_running(), "{}", gr.output());
    assert!(socket.exists(), "{}", gr.output());
    force_stop(&mut gr);
    assert!(!socket.exists(), "the socket file is left behind");
}

/// A pipe whose read end is already closed, as stderr: every write to it fails with EPIPE and
/// raises SIGPIPE.
fn broken_pipe() -> std::os::fd::OwnedFd {
    let (read, write) = nix::unistd::pipe().expect("a test process has fds to spare");
    drop(read);
    write
}

/// With `-v` and stderr a broken pipe, the first failed log write used to raise SIGPIPE, which
/// was logged, which raised SIGPIPE again: 100% CPU and TERM never handled. Now graceful-run
/// stops logging at the first EPIPE and a TERM stops it promptly with the command's status.
#[test]
fn broken_stderr_with_verbose_logging_still_stops_on_term() {
    let probe = probe();
    let mut command = Command::new(graceful_run_bin());
    command.args(["-v", "--", &probe, "signals"]);
    let mut gr = Gr::spawn_with_stderr(command, broken_pipe());
    gr.wait_stdout("ready");
    // Ticks of CPU time graceful-run used (utime + stime), from /proc/PID/stat.
    let cpu = |pid: i32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        after
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|t| t.parse::<u64>().ok())
            .sum()
    };
    let before = cpu(gr.pid());
    gr.signal(libc::SIGUSR1);
    wait_received(&gr, 1);
    // Observation window: a signal/log loop would burn the whole of it (100 ticks a second).
    std::thread::sleep(Duration::from_millis(500));
    let used = cpu(gr.pid()) - before;
    assert!(used < 25, "graceful-run used {used} ticks in half a second");
    gr.signal(libc::SIGTERM);
    let status = gr.wait_exit_within(Duration::from_secs(10));
    assert_eq!(code(status), Some(0), "the probe exits 0 on TERM");
    assert_eq!(received(&gr).last(), Some(&libc::SIGTERM));
}

/// `--stop-signal` and `--restart-signal` take real-time signals by name.
#[test]
fn realtime_stop_and_restart_signals() {
    assert_eq!(
        stop_signal_delivered(&["--stop-signal", "SIGRTMIN+2"], libc::SIGTERM),
        libc::SIGRTMIN() + 2
    );
    let probe = probe();
    let mut gr = Gr::start(&[
        "--restart-signal",
        "RTMAX-3",
        "--ready",
        "100ms",
        "--",
        &probe,
        "signals",
    ]);
    gr.generation_pid(1);
    gr.wait_stderr("ready after");
    gr.signal(libc::SIGRTMAX() - 3);
    gr.wait_stderr("SIGRTMAX-3 received: restarting");
    gr.generation_pid(2);
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}
