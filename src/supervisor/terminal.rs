//! Job control in a terminal.
//!
//! When graceful-run starts in the foreground of a terminal, each generation's process group
//! takes the terminal, so the command can read it and Ctrl-C reaches it directly. When the
//! command is stopped (Ctrl-Z), graceful-run stops itself too, so the shell sees its job stop
//! and takes the terminal back; the shell's SIGCONT on `fg` is forwarded and the terminal
//! handed back to the command. graceful-run never takes a terminal it was not given: started
//! in the background, it leaves the shell's terminal alone.

use std::os::fd::RawFd;

use nix::unistd::Pid;

use super::Supervisor;
use crate::signal::Signal;
use crate::{info, process};

impl Supervisor<'_> {
    /// Job control: when the command in the terminal's foreground is stopped (Ctrl-Z), stop
    /// graceful-run too, so the shell sees its job stop and gets the terminal back. The
    /// shell's SIGCONT on `fg` is then forwarded, and the terminal handed back.
    pub(super) fn on_stopped(&mut self, pid: Pid, signal: Signal) {
        let Some(generation) = self.serving.and_then(|id| self.generation(id)) else {
            return;
        };
        if generation.pid != pid || self.terminal.is_none() || self.pid1 {
            return;
        }
        info!(
            generation.subject(),
            "stopped by {signal}; stopping graceful-run too"
        );
        let _ = nix::sys::signal::kill(
            Pid::from_raw(self.own_pid),
            nix::sys::signal::Signal::SIGSTOP,
        );
    }

    /// The terminal for a new generation: only when the terminal's foreground is
    /// graceful-run or one of its generations (never stolen from a shell that put us in the
    /// background).
    pub(super) fn terminal_for_new_generation(&self) -> Option<RawFd> {
        let terminal = self.terminal?;
        let foreground = process::terminal_foreground()?;
        let ours = foreground == nix::unistd::getpgrp()
            || self.generations.iter().any(|g| g.pid == foreground);
        ours.then_some(terminal)
    }

    pub(super) fn hand_terminal_to_serving(&self) {
        if self.terminal.is_none() || !self.cfg.process_group {
            return;
        }
        if process::terminal_foreground() == Some(nix::unistd::getpgrp())
            && let Some(generation) = self.serving.and_then(|id| self.generation(id))
        {
            process::give_terminal(generation.pid);
        }
    }

    /// Takes the terminal back from a finished command before exiting.
    pub(super) fn reclaim_terminal(&self) {
        if self.terminal.is_some()
            && let Some(foreground) = process::terminal_foreground()
            && foreground != nix::unistd::getpgrp()
            && !process::group_alive(foreground)
        {
            process::give_terminal(nix::unistd::getpgrp());
        }
    }
}
