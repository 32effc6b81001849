//! Job control in a terminal.
//!
//! When graceful-run starts in the foreground of a terminal, each generation's process group
//! takes the terminal, so the command can read it and Ctrl-C reaches it directly. When the
//! command is stopped (Ctrl-Z), graceful-run stops itself too (the core asks for it), so the
//! shell sees its job stop and takes the terminal back; the shell's SIGCONT on `fg` is
//! forwarded and the terminal handed back to the command. graceful-run never takes a terminal
//! it was not given: started in the background, it leaves the shell's terminal alone.

use std::os::fd::RawFd;

use nix::unistd::Pid;

use super::Executor;
use crate::process;

impl Executor<'_> {
    /// Stops graceful-run itself, so that the shell sees its job stop.
    pub(super) fn stop_self(&self) {
        if self.terminal.is_some() && !self.pid1 {
            let _ = nix::sys::signal::kill(
                Pid::from_raw(self.own_pid),
                nix::sys::signal::Signal::SIGSTOP,
            );
        }
    }

    /// The terminal for a new generation: only when the terminal's foreground is
    /// graceful-run or one of its generations (never stolen from a shell that put us in the
    /// background).
    pub(super) fn terminal_for_new_generation(&self) -> Option<RawFd> {
        let terminal = self.terminal?;
        let foreground = process::terminal_foreground()?;
        let ours =
            foreground == nix::unistd::getpgrp() || self.held.values().any(|h| h.pid == foreground);
        ours.then_some(terminal)
    }

    /// Hands the terminal to a generation's group, if graceful-run holds it (`fg`).
    pub(super) fn give_terminal(&self, pgid: Pid) {
        if self.terminal.is_some()
            && self.cfg.process_group
            && process::terminal_foreground() == Some(nix::unistd::getpgrp())
        {
            process::give_terminal(pgid);
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
