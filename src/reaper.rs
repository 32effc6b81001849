//! The one place that calls wait(2) for any process.
//!
//! `waitpid(-1)` collects every child: the command's generations, hooks, and orphans that the
//! kernel re-parented to graceful-run (as PID 1, or as a child subreaper). Two reapers would
//! steal each other's statuses, so there is only this one, run by the supervisor whenever
//! SIGCHLD arrives. (`spawn` waits for a child that failed before exec, which nobody else
//! ever saw.)
//!
//! Stopped children are reported too (WUNTRACED): when the command in the terminal's
//! foreground is stopped by Ctrl-Z, graceful-run stops itself so the shell sees the job stop.
//!
//! Statuses are handed on raw, and the supervisor's core decodes them with [`decode`], a pure
//! function. wait(2) is called through libc, not through nix:
//! nix turns the status of a child killed by a real-time signal into EINVAL, *after* the
//! kernel has reaped it, so that death would be lost for good and its generation would look
//! alive forever.

use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;

use crate::exit::ChildExit;
use crate::signal::Signal;

/// What one raw wait status says, without the pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ended(ChildExit),
    Stopped(Signal),
}

/// Decodes a raw wait(2) status. `None` for what graceful-run does not act on: a continued
/// child, ptrace event stops, or a signal number outside 1-64.
pub fn decode(status: libc::c_int) -> Option<Status> {
    if libc::WIFEXITED(status) {
        return Some(Status::Ended(ChildExit::Exited(libc::WEXITSTATUS(status))));
    }
    if libc::WIFSIGNALED(status) {
        return Some(Status::Ended(ChildExit::Signaled {
            signal: Signal::from_kernel(libc::WTERMSIG(status))?,
            core_dumped: libc::WCOREDUMP(status),
        }));
    }
    // A ptrace event stop carries the event in bits 16-23; graceful-run traces nothing, but
    // such a status is not a job-control stop either way.
    if libc::WIFSTOPPED(status) && status >> 16 == 0 {
        return Some(Status::Stopped(Signal::from_kernel(libc::WSTOPSIG(
            status,
        ))?));
    }
    None
}

/// Everything that changed since the last call, and whether any child is left.
pub struct Harvest {
    /// Each collected child with its raw wait status.
    pub events: Vec<(Pid, libc::c_int)>,
    pub children_left: bool,
}

pub fn reap() -> Harvest {
    let mut events = Vec::new();
    let children_left = loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes one int to a live local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::WUNTRACED) };
        match Errno::result(pid) {
            Ok(0) => break true,
            Ok(pid) => events.push((Pid::from_raw(pid), status)),
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => break false,
            Err(_) => break true,
        }
    };
    Harvest {
        events,
        children_left,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn killed(signal: i32, core_dumped: bool) -> Option<Status> {
        Some(Status::Ended(ChildExit::Signaled {
            signal: Signal::from_raw(signal).expect("a valid signal"),
            core_dumped,
        }))
    }

    /// Raw statuses as the kernel builds them (wait(2), include/linux/wait.h): exit code in
    /// bits 8-15, terminating signal in bits 0-6, 0x80 for a core dump, 0x7f for a stop.
    #[test]
    fn raw_statuses() {
        assert_eq!(decode(0), Some(Status::Ended(ChildExit::Exited(0))));
        assert_eq!(decode(3 << 8), Some(Status::Ended(ChildExit::Exited(3))));
        assert_eq!(
            decode(255 << 8),
            Some(Status::Ended(ChildExit::Exited(255)))
        );
        assert_eq!(decode(15), killed(15, false));
        assert_eq!(decode(9), killed(9, false));
        // A real-time death: what nix's waitpid turns into EINVAL.
        assert_eq!(decode(40), killed(40, false));
        assert_eq!(decode(64), killed(64, false));
        assert_eq!(decode(0x80 | 11), killed(11, true));
        assert_eq!(decode(0x80 | 6), killed(6, true));
        assert_eq!(
            decode((libc::SIGTSTP << 8) | 0x7f),
            Some(Status::Stopped(
                Signal::from_raw(libc::SIGTSTP).expect("valid")
            ))
        );
        assert_eq!(
            decode((libc::SIGSTOP << 8) | 0x7f),
            Some(Status::Stopped(Signal::STOP))
        );
        // A ptrace event stop (PTRACE_EVENT_FORK = 1) and a continued child are not acted on.
        assert_eq!(decode((1 << 16) | (libc::SIGTRAP << 8) | 0x7f), None);
        assert_eq!(decode(0xffff), None);
        // glibc's reserved 32 is still reported as a death.
        assert!(matches!(
            decode(32),
            Some(Status::Ended(ChildExit::Signaled { signal, .. })) if signal.raw() == 32
        ));
    }
}
