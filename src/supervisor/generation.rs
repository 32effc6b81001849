//! One generation of the command: a process (and by default its process group) started on
//! the shared sockets. Restarts create new generations; an old one is retired by the stop
//! sequence once its successor is ready.

use std::time::Instant;

use nix::unistd::Pid;

use crate::exit::ChildExit;
use crate::log::Subject;
use crate::notify::NotifySocket;
use crate::process;
use crate::signal::Signal;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not ready yet: ready at `ready_at` if still running (`--ready DURATION`) or on
    /// READY=1 (`--ready notify`); stopped if not ready by `deadline`.
    Starting {
        ready_at: Option<Instant>,
        deadline: Instant,
    },
    Ready,
    /// Sent the stop signal; SIGKILL at `kill_at` unless it is gone.
    Stopping {
        kill_at: Instant,
        killed: bool,
    },
}

pub struct Generation {
    pub id: u64,
    /// The leader's pid, which is also its process group id when it has a group.
    pub pid: Pid,
    pub started: Instant,
    pub own_group: bool,
    pub state: State,
    /// The leader's end, once reaped.
    pub exit: Option<ChildExit>,
    pub notify: Option<NotifySocket>,
    /// Stopped because it was not ready in time: counts as a failure whatever its status.
    pub failed_readiness: bool,
}

impl Generation {
    pub fn subject(&self) -> Subject {
        Subject::generation(self.id, self.pid.as_raw())
    }

    /// Signals the whole process group (or the leader alone without one). A group outlives
    /// its leader, so this still reaches processes left behind.
    pub fn signal(&self, signal: Signal) {
        let result = if self.own_group {
            crate::signal::send(Pid::from_raw(-self.pid.as_raw()), signal)
        } else if self.exit.is_none() {
            crate::signal::send(self.pid, signal)
        } else {
            return;
        };
        if let Err(errno) = result
            && errno != nix::errno::Errno::ESRCH
        {
            crate::warn!(self.subject(), "cannot send {signal}: {}", errno.desc());
        }
    }

    /// Whether any of its processes is left. Zombies count while graceful-run is the one to
    /// reap them (`reaper`: PID 1 or child subreaper). Otherwise orphans belong to another
    /// init, which reaps them when it likes and tells graceful-run nothing: once the group
    /// has been sent SIGKILL, what remains is that init's business.
    pub fn has_processes(&self, reaper: bool) -> bool {
        if self.exit.is_none() {
            return true;
        }
        if !self.own_group
            || (!reaper && matches!(self.state, State::Stopping { killed: true, .. }))
        {
            return false;
        }
        process::group_alive(self.pid)
    }

    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    pub fn is_starting(&self) -> bool {
        matches!(self.state, State::Starting { .. })
    }

    pub fn is_stopping(&self) -> bool {
        matches!(self.state, State::Stopping { .. })
    }

    /// The earliest moment this generation needs attention.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Starting { ready_at, deadline } => {
                Some(ready_at.map_or(deadline, |r| r.min(deadline)))
            }
            State::Ready => None,
            State::Stopping { kill_at, killed } => (!killed).then_some(kill_at),
        }
    }
}
