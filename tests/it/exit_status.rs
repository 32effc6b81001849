//! Exit statuses: the command's exit code passes through, a death by signal N is re-raised
//! (128+N as PID 1), `--exit-code-map` rewrites both, and a command that cannot run gives
//! 127 or 126 with one line saying why.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};

use nix::libc;

use crate::support::{
    Gr, TempDir, code, graceful_run_bin, killed_by, probe, run_to_end, sleep_marker,
};

/// Runs graceful-run with `args` to its end; returns its status and everything it printed.
fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let mut command = Command::new(graceful_run_bin());
    command.args(args);
    let output = run_to_end(command);
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Whether `dir` holds a core file (`core` or `core.PID`, as kernel.core_pattern writes).
fn has_core_file(dir: &TempDir) -> bool {
    std::fs::read_dir(dir.path())
        .expect("the temp dir is readable")
        .flatten()
        .any(|entry| entry.file_name().to_string_lossy().starts_with("core"))
}

/// Asserts that a command that cannot run ends graceful-run with `expected` and exactly one
/// stderr line naming it, and that nothing was started.
fn assert_cannot_run(command: &str, expected: i32) {
    let (status, stdout, stderr) = run(&["--", command, "arg"]);
    assert_eq!(code(status), Some(expected), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr}");
    assert!(
        lines[0].contains(command),
        "the line names {command}: {stderr}"
    );
    assert!(!stderr.contains("started"), "{stderr}");
    assert_eq!(stdout, "", "nothing ran");
}

/// Exit codes 0, 1, 2, 127 and 255 of the command are graceful-run's exit codes.
#[test]
fn exit_codes_pass_through() {
    let probe = probe();
    for expected in [0, 1, 2, 127, 255] {
        let (status, _, stderr) = run(&["--", &probe, "exit", &expected.to_string()]);
        assert_eq!(code(status), Some(expected), "{stderr}");
        assert!(
            stderr.contains(&format!("exited with status {expected}")),
            "{stderr}"
        );
    }
}

/// A command killed by TERM, HUP, QUIT, KILL, USR1 or USR2 makes graceful-run die by the
/// same signal, without a core dump of its own (even with core dumps enabled, for QUIT).
#[test]
fn signal_deaths_are_reraised_without_core_dumps() {
    let probe = probe();
    for signal in [
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGKILL,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        let dir = TempDir::new("exit-signal");
        let mut command = Command::new(graceful_run_bin());
        // The command dumps no core of its own (ulimit -c 0), so a core file can only be
        // graceful-run's.
        let script = format!("ulimit -c 0; exec \"$0\" kill {signal}");
        command
            .args([
                "--restart-signal",
                "none",
                "--",
                "sh",
                "-c",
                &script,
                &probe,
            ])
            .current_dir(dir.path());
        // SAFETY: setrlimit is async-signal-safe; raising the soft limit to the hard one.
        unsafe {
            command.pre_exec(|| {
                let mut limit: libc::rlimit = std::mem::zeroed();
                libc::getrlimit(libc::RLIMIT_CORE, &mut limit);
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_CORE, &limit);
                Ok(())
            })
        };
        let output = run_to_end(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(killed_by(output.status), Some(signal), "{stderr}");
        assert!(!output.status.core_dumped(), "signal {signal}: {stderr}");
        assert!(
            !has_core_file(&dir),
            "signal {signal} left a core: {stderr}"
        );
    }
}

/// As PID 1 of a pid namespace, where it cannot die by a signal, graceful-run exits 128+N.
#[test]
fn as_pid1_a_signal_death_exits_128_plus_n() {
    let probe = probe();
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(graceful_run_bin())
        .args(["--", &probe, "kill", &libc::SIGTERM.to_string()]);
    let output = run_to_end(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("(pid 2): killed by SIGTERM"),
        "the command is pid 2 of the namespace: {stderr}"
    );
    assert_eq!(code(output.status), Some(128 + libc::SIGTERM), "{stderr}");
}

/// `--exit-code-map 143:0` turns a command killed by the stop request's TERM into exit 0.
#[test]
fn exit_code_map_rewrites_a_signal_death() {
    let marker = sleep_marker();
    let mut gr = Gr::start(&["--exit-code-map", "143:0", "--", "sleep", &marker]);
    gr.wait_stderr("started");
    gr.signal(libc::SIGTERM);
    let status = gr.wait_exit();
    gr.wait_stderr("killed by SIGTERM");
    assert_eq!(code(status), Some(0), "{}", gr.output());
}

/// `--exit-code-map 3:4` turns exit code 3 into 4, and leaves other codes alone.
#[test]
fn exit_code_map_rewrites_an_exit_code() {
    let probe = probe();
    let (status, _, stderr) = run(&["--exit-code-map", "3:4", "--", &probe, "exit", "3"]);
    assert_eq!(code(status), Some(4), "{stderr}");
    let (status, _, stderr) = run(&["--exit-code-map", "3:4", "--", &probe, "exit", "5"]);
    assert_eq!(code(status), Some(5), "{stderr}");
}

/// A command not found on PATH gives 127 and one line naming it.
#[test]
fn missing_command_exits_127() {
    assert_cannot_run("graceful-run-test-no-such-command", 127);
}

/// A file without execute permission, and a directory, give 126 and one line naming them.
#[test]
fn non_executable_command_exits_126() {
    let dir = TempDir::new("exit-126");
    let script = dir.join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho ran\n").expect("the temp dir is writable");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644))
        .expect("chmod works in the temp dir");
    assert_cannot_run(&script.display().to_string(), 126);
    assert_cannot_run(&dir.path().display().to_string(), 126);
}

/// A command killed by a real-time signal (40, SIGRTMIN+6 with glibc) ends graceful-run like
/// any signal death: it is logged by name and re-raised. (nix's waitpid turned that status
/// into EINVAL after the kernel had reaped the child: graceful-run never exited.)
#[test]
fn realtime_signal_death_is_reraised() {
    let probe = probe();
    let (status, _, stderr) = run(&["--", &probe, "kill", "40"]);
    assert!(stderr.contains("killed by SIGRTMIN+6"), "{stderr}");
    assert_eq!(killed_by(status), Some(40), "{stderr}");
}

/// The same as PID 1 of a pid namespace: exit status 128+40.
#[test]
fn as_pid1_a_realtime_signal_death_exits_168() {
    let probe = probe();
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(graceful_run_bin())
        .args(["--", &probe, "kill", "40"]);
    let output = run_to_end(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("(pid 2): killed by SIGRTMIN+6"), "{stderr}");
    assert_eq!(code(output.status), Some(128 + 40), "{stderr}");
}
