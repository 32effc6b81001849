//! graceful-run in a terminal: the command takes the terminal's foreground, reads from it,
//! Ctrl-C reaches it, and graceful-run then ends as the command did (130 in the shell).
//!
//! The terminal is a pseudo-terminal whose session is led by a non-interactive `sh`: without
//! job control that shell runs graceful-run in its own process group, which is the terminal's
//! foreground group (the session's only one), as an interactive shell's `fg` job would be.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::libc;

use crate::support::{Gr, KillOnDrop, graceful_run_bin, sleep_marker, sleepers};

/// Starts `script` with `sh -c` as the session leader of a new pseudo-terminal, the terminal
/// on its stdin (stdout and stderr stay captured by the harness). Returns the terminal's
/// master side, to type on.
pub(crate) fn in_terminal(script: &str) -> (Gr, std::fs::File) {
    let pty = nix::pty::openpty(None, None).expect("the system has pseudo-terminals");
    let slave: OwnedFd = pty.slave;
    let mut command = Command::new("sh");
    command.args(["-c", script]).stdin(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe syscalls on fds the child owns.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The child holds the only copy of the slave from here on (`Stdio` moved ours into the
    // command, which closes it once spawned).
    let gr = Gr::spawn(command);
    (gr, std::fs::File::from(pty.master))
}

/// The command run under a terminal reads a typed line, Ctrl-C stops it, and graceful-run
/// then exits 130 as a shell sees it (death by SIGINT, re-raised).
#[test]
fn command_reads_the_terminal_and_ctrl_c_exits_130() {
    let marker = sleep_marker();
    // graceful-run's parent is the shell: a failure that kills the shell would leave it.
    let _cleanup = KillOnDrop(marker.clone());
    let inner = format!("read line; echo got:$line; exec sleep {marker}");
    let script = format!(
        "'{}' -- sh -c '{inner}'; echo status:$?",
        graceful_run_bin().display()
    );
    let (mut session, mut terminal) = in_terminal(&script);

    terminal
        .write_all(b"hello\n")
        .expect("the terminal takes input");
    session.wait_stdout("got:hello");
    // The command exec'd sleep after echoing: wait for it before typing Ctrl-C.
    crate::support::poll_until("the command sleeps", || !sleepers(&marker).is_empty());
    terminal
        .write_all(b"\x03")
        .expect("the terminal takes Ctrl-C");
    assert_eq!(
        session.wait_stdout("status:"),
        "status:130",
        "{}",
        session.output()
    );
    session.wait_stderr("killed by SIGINT");
    session.wait_exit();
    assert_eq!(sleepers(&marker), Vec::<i32>::new(), "{}", session.output());
}

/// Job control in an interactive shell: Ctrl-Z stops the command *and* graceful-run, so the
/// shell reports the job stopped and gets its terminal back; `fg` resumes both and the
/// command reads the terminal again; Ctrl-C then ends it with 130.
#[test]
fn ctrl_z_stops_the_job_and_fg_resumes_it() {
    // An interactive bash on the terminal; its prompts and job messages go to the captured
    // stderr, the command's output to the captured stdout.
    let (mut shell, mut terminal) = in_terminal("exec bash --norc --noprofile -i");
    let mut typing = |text: &[u8]| terminal.write_all(text).expect("the terminal takes input");
    typing(
        format!(
            "'{}' -- cat; echo status:$?\n",
            graceful_run_bin().display()
        )
        .as_bytes(),
    );
    shell.wait_stderr("started");
    typing(b"hello\n");
    shell.wait_stdout("hello");

    typing(b"\x1a");
    shell.wait_stderr("stopped by SIGTSTP; stopping graceful-run too");
    shell.wait_stderr("Stopped");

    typing(b"fg\n");
    typing(b"again\n");
    shell.wait_stdout("again");

    typing(b"\x03");
    shell.wait_stderr("killed by SIGINT");
    // bash ran the rest of the list (`status:147`) when the job stopped; `fg`'s status is
    // the job's.
    typing(b"echo fg-status:$?\n");
    shell.wait_stdout("fg-status:130");
    typing(b"exit\n");
    shell.wait_exit();
}
