//! `graceful-run notify`: sd_notify from the command line. It sends to a path and to an
//! `@abstract` NOTIFY_SOCKET, marks the generation whose process tree runs it ready (the
//! sender is a helper process, not the generation's leader), fails in one line, and is only a
//! mode as the first argument: `graceful-run -- notify` runs a program named notify.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::Command;

use nix::libc;

use crate::support::{
    DEADLINE, Gr, KillOnDrop, TempDir, code, graceful_run_bin, run_to_end, sleep_marker,
};

fn notify(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new(graceful_run_bin());
    command.arg("notify").args(args).env_remove("NOTIFY_SOCKET");
    command.envs(env.iter().copied());
    run_to_end(command)
}

fn receive(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(DEADLINE))
        .expect("a read timeout can be set");
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a datagram arrives");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Runs `graceful-run notify` against `socket`, reading what it sends while it runs: it waits
/// until its message has been taken (BARRIER=1, whose descriptor `recv` closes). Returns its
/// output and the messages before the barrier.
fn notify_to(
    socket: &UnixDatagram,
    env: &[(&str, &str)],
    args: &[&str],
) -> (std::process::Output, Vec<String>) {
    let mut command = Command::new(graceful_run_bin());
    command
        .arg("notify")
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("graceful-run runs");
    let mut messages = Vec::new();
    loop {
        let message = receive(socket);
        if message == "BARRIER=1" {
            break;
        }
        messages.push(message);
    }
    let output = child.wait_with_output().expect("graceful-run notify ends");
    (output, messages)
}

fn assert_sent(output: &std::process::Output) {
    assert_eq!(
        code(output.status),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stderr.is_empty());
}

/// Each flag becomes its line, in a fixed order, sent to a NOTIFY_SOCKET that is a path.
#[test]
fn sends_to_a_path() {
    let dir = TempDir::new("notify-path");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("the temp dir is writable");
    let path = path.display().to_string();
    let (output, messages) = notify_to(
        &socket,
        &[("NOTIFY_SOCKET", &path)],
        &["--status", "warming up", "--ready", "--pid", "42", "X_Y=z"],
    );
    assert_sent(&output);
    assert_eq!(messages, ["READY=1\nSTATUS=warming up\nMAINPID=42\nX_Y=z"]);
    let output = notify(
        &[("NOTIFY_SOCKET", &path)],
        &["--reloading", "--stopping", "--no-block"],
    );
    assert_sent(&output);
    let message = receive(&socket);
    assert!(
        message.starts_with("RELOADING=1\nMONOTONIC_USEC=") && message.ends_with("\nSTOPPING=1"),
        "{message:?}"
    );
}

/// A leading `@` in NOTIFY_SOCKET names the abstract namespace.
#[test]
fn sends_to_an_abstract_address() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("gr-test-notify-cmd/{}", std::process::id());
    let address =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("the name fits");
    let socket = UnixDatagram::bind_addr(&address).expect("the abstract name is free");
    let (output, messages) = notify_to(
        &socket,
        &[("NOTIFY_SOCKET", &format!("@{name}"))],
        &["--ready"],
    );
    assert_sent(&output);
    assert_eq!(messages, ["READY=1"]);
}

/// Like systemd-notify, it waits until the receiver has taken the message, and says so when
/// nothing does: exit 1 after 5 s, with the message sent.
#[test]
fn waits_until_the_message_is_taken() {
    let dir = TempDir::new("notify-barrier");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("the temp dir is writable");
    let path = path.display().to_string();
    let started = std::time::Instant::now();
    let output = notify(&[("NOTIFY_SOCKET", &path)], &["--ready"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code(output.status), Some(1), "{stderr}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(5));
    assert!(
        stderr.contains("nothing took the message within 5s"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(receive(&socket), "READY=1");
}

/// Every failure is one line on stderr: 1 when there is nowhere to send or the send fails,
/// 125 for a bad flag or nothing to send.
#[test]
fn failures_are_one_line() {
    /// NOTIFY_SOCKET (None: unset), arguments, exit status, a word of the message.
    type Case<'a> = (Option<&'a str>, &'a [&'a str], i32, &'a str);
    let cases: [Case; 5] = [
        (None, &["--ready"], 1, "NOTIFY_SOCKET is not set"),
        (
            Some("/nonexistent/gr.sock"),
            &["--ready"],
            1,
            "/nonexistent/gr.sock",
        ),
        (Some("/x"), &["--redy"], 125, "--redy"),
        (Some("/x"), &[], 125, "nothing to send"),
        (Some("/x"), &["--pid", "abc"], 125, "abc"),
    ];
    for (socket, args, status, needle) in cases {
        let env: Vec<(&str, &str)> = socket.map(|s| ("NOTIFY_SOCKET", s)).into_iter().collect();
        let output = notify(&env, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(code(output.status), Some(status), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("graceful-run notify: "), "{stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: no {needle:?} in {stderr}"
        );
    }
}

/// Under `--ready notify`, a READY=1 sent by `graceful-run notify` (a child of the
/// generation's shell, not the generation's leader) marks that generation ready, at start and
/// across a restart: each generation's NOTIFY_SOCKET is its own.
#[test]
fn marks_the_generation_ready() {
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let bin_dir = graceful_run_bin()
        .parent()
        .expect("the binary is in a directory")
        .display()
        .to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let script =
        format!("graceful-run notify --ready --status up && echo sent; exec sleep {marker}");
    let mut command = Command::new(graceful_run_bin());
    command
        .args([
            "--ready",
            "notify",
            "--ready-timeout",
            "20s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("PATH", &path)
        .env_remove("NOTIFY_SOCKET");
    let mut gr = Gr::spawn(command);
    gr.wait_stderr("gen 1 (pid");
    gr.stderr
        .wait_for(DEADLINE, |l| {
            l.contains("gen 1 (") && l.contains("ready after")
        })
        .unwrap_or_else(|| panic!("gen 1 was never ready\n{}", gr.output()));
    // Gen 1's shell reports before the restart, which will stop it.
    gr.wait_stdout("sent");
    gr.signal(libc::SIGHUP);
    gr.stderr
        .wait_for(DEADLINE, |l| {
            l.contains("gen 2 (") && l.contains("takes over from gen 1")
        })
        .unwrap_or_else(|| panic!("gen 2 never took over\n{}", gr.output()));
    // Gen 2's report may lag behind the handover.
    gr.poll("both helpers report", || {
        (gr.stdout.count(|l| l == "sent") == 2).then_some(())
    });
    // `sleep` dies of the TERM, and graceful-run passes that death on.
    gr.terminate_expecting_death_by(libc::SIGTERM);
}

/// Only the first argument selects the mode: after `--`, `notify` is a command like any other.
#[test]
fn after_double_dash_notify_is_a_command() {
    let dir = TempDir::new("notify-command");
    let program = dir.join("notify");
    std::fs::write(
        &program,
        "#!/bin/sh\necho \"the notify program ran with $*\"\n",
    )
    .expect("the temp dir is writable");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
        .expect("the file is ours");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new(graceful_run_bin());
    command.args(["--", "notify", "--ready"]).env("PATH", path);
    let output = run_to_end(command);
    assert_eq!(code(output.status), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "the notify program ran with --ready\n"
    );
}
