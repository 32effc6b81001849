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

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::exit::ChildExit;
use crate::signal::Signal;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaped {
    Exited(Pid, ChildExit),
    Stopped(Pid, Signal),
}

/// Everything that changed since the last call, and whether any child is left.
pub struct Harvest {
    pub events: Vec<Reaped>,
    pub children_left: bool,
}

pub fn reap() -> Harvest {
    let mut events = Vec::new();
    let children_left = loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::StillAlive) => break true,
            Ok(status @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _))) => {
                if let Some(exit) = ChildExit::from_wait(status) {
                    events.push(Reaped::Exited(pid, exit));
                }
            }
            Ok(WaitStatus::Stopped(pid, signal)) => {
                if let Some(signal) = Signal::from_raw(signal as i32) {
                    events.push(Reaped::Stopped(pid, signal));
                }
            }
            Ok(_) => {}
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
