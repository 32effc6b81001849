//! The one place that calls wait(2) for any process.
//!
//! `waitpid(-1)` collects every child: the command's generations, hooks, and orphans that the
//! kernel re-parented to graceful-run (as PID 1, or as a child subreaper). Two reapers would
//! steal each other's statuses, so there is only this one, run by the supervisor whenever
//! SIGCHLD arrives. (`spawn` waits for a child that failed before exec, which nobody else
//! ever saw.)
//!
//! Statuses are returned raw and decoded by the supervisor's core: nix's decoding turns a
//! death by a real-time signal (34-64) into EINVAL after the kernel has already reaped the
//! child, which would lose that exit for good.
//!
//! Stopped children are reported too (WUNTRACED): when the command in the terminal's
//! foreground is stopped by Ctrl-Z, graceful-run stops itself so the shell sees the job stop.

use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;

/// Everything that changed since the last call, and whether any child is left.
pub struct Harvest {
    /// Each collected child with its raw wait status.
    pub events: Vec<(Pid, i32)>,
    pub children_left: bool,
}

pub fn reap() -> Harvest {
    let mut events = Vec::new();
    let children_left = loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`, a valid i32.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::WUNTRACED) };
        match pid {
            0 => break true,
            pid if pid > 0 => events.push((Pid::from_raw(pid), status)),
            _ => match Errno::last() {
                Errno::EINTR => {}
                Errno::ECHILD => break false,
                _ => break true,
            },
        }
    };
    Harvest {
        events,
        children_left,
    }
}
