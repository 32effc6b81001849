//! The stop sequence, and the end of the service.
//!
//! A stop request (TERM or INT from outside) runs, in order: the drain delay (the command
//! keeps serving while load balancers deregister it), the `--pre-stop` hook, the stop signal
//! plus SIGCONT to every generation, graceful-run closing its own copies of the listening
//! sockets (so late connects are refused instead of queueing where nobody accepts), and
//! SIGKILL at the end of the budget (drain delay + stop timeout). A second TERM or INT skips
//! straight to SIGKILL.
//!
//! Once no generation is left, processes the command left behind outside its process group
//! (orphans re-parented to graceful-run) get the same treatment, then the `--post-stop` hook
//! runs, and the service is done.

use std::time::Instant;

use nix::unistd::Pid;

use super::generation::State;
use super::{End, Phase, Supervisor, format_duration};
use crate::exit::ChildExit;
use crate::log::Subject;
use crate::signal::{Mapping, Signal};
use crate::spawn::{self, Plan};
use crate::{debug, info, process, warn};

/// Orphans re-parented to graceful-run, outside any generation's process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Leftovers {
    /// Not looked for yet (generations are still ending).
    Unchecked,
    /// Sent the stop signal; SIGKILL at `kill_at`.
    Stopping {
        kill_at: Instant,
    },
    Killed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopStep {
    Draining { until: Instant },
    PreStop,
    Signalled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HookKind {
    PreStop,
    PostStop,
}

impl HookKind {
    pub(super) fn flag(self) -> &'static str {
        match self {
            HookKind::PreStop => "--pre-stop",
            HookKind::PostStop => "--post-stop",
        }
    }
}

pub(super) struct Hook {
    pub(super) kind: HookKind,
    pub(super) pid: Pid,
    pub(super) deadline: Instant,
    pub(super) killed: bool,
}

impl Supervisor<'_> {
    pub(super) fn on_hook_exit(&mut self, exit: ChildExit) {
        let Some(hook) = self.hook.take() else {
            return;
        };
        let subject = Subject::pid(hook.pid.as_raw());
        if exit.success() {
            info!(subject, "{} hook finished", hook.kind.flag());
        } else {
            warn!(subject, "{} hook {exit}", hook.kind.flag());
        }
        match hook.kind {
            HookKind::PreStop => {
                if matches!(
                    self.phase,
                    Phase::Stopping {
                        step: StopStep::PreStop,
                        ..
                    }
                ) {
                    self.signal_stop();
                }
            }
            HookKind::PostStop => self.phase = Phase::Done,
        }
    }

    /// TERM or INT from outside. `delivered` is set when the command already received it
    /// from the terminal.
    pub(super) fn request_stop(&mut self, signal: Signal, delivered: Option<Signal>) {
        match self.phase {
            Phase::Stopping { .. } | Phase::Finishing(_) | Phase::PostStop => {
                warn!(
                    Subject::NONE,
                    "{signal} while stopping: killing everything now"
                );
                self.force();
                return;
            }
            Phase::Done => return,
            Phase::Serving | Phase::Backoff { .. } => {}
        }
        let now = Instant::now();
        info!(Subject::NONE, "{signal} received: stopping");
        self.upstream_send("STOPPING=1");
        self.restart_queued = false;
        let mapping = self.cfg.stop_mapping(signal);
        let budget_end = now + self.cfg.drain_delay + self.cfg.stop_timeout;
        self.budget_end = Some(budget_end);
        if let Some(id) = self.incoming.take() {
            // A replacement that is still starting serves nobody: no drain for it.
            self.stop_generation(id, mapping, budget_end);
        }
        let nothing_serves = matches!(self.phase, Phase::Backoff { .. }) || self.serving.is_none();
        self.phase = Phase::Stopping {
            step: StopStep::Draining {
                until: now + self.cfg.drain_delay,
            },
            mapping,
            delivered,
        };
        if nothing_serves {
            self.signal_stop();
        } else if self.cfg.drain_delay.is_zero() {
            self.after_drain();
        } else {
            info!(
                Subject::NONE,
                "draining for {} before the stop signal",
                format_duration(self.cfg.drain_delay)
            );
        }
    }

    /// Moves the stop sequence on to `step`. Returns the stop signal's mapping, the signal
    /// the terminal already delivered, and the budget's end; None when no stop runs.
    fn advance_stop(&mut self, step: StopStep) -> Option<(Mapping, Option<Signal>, Instant)> {
        let Phase::Stopping {
            mapping, delivered, ..
        } = self.phase
        else {
            return None;
        };
        self.phase = Phase::Stopping {
            step,
            mapping,
            delivered,
        };
        let budget_end = self
            .budget_end
            .expect("request_stop sets the budget before entering Phase::Stopping");
        Some((mapping, delivered, budget_end))
    }

    pub(super) fn after_drain(&mut self) {
        let Some((_, _, budget_end)) = self.advance_stop(StopStep::PreStop) else {
            return;
        };
        let Some(command) = self.cfg.pre_stop.clone() else {
            self.signal_stop();
            return;
        };
        let main_pid = self
            .serving
            .and_then(|id| self.generation(id))
            .map(|g| g.pid.as_raw().to_string())
            .unwrap_or_default();
        let deadline = (Instant::now() + self.cfg.hook_timeout).min(budget_end);
        if !self.start_hook(
            HookKind::PreStop,
            &command,
            &[("MAINPID", main_pid)],
            deadline,
        ) {
            self.signal_stop();
        }
    }

    /// Sends the stop signal to every generation and closes graceful-run's listener copies.
    pub(super) fn signal_stop(&mut self) {
        let Some((mapping, delivered, budget_end)) = self.advance_stop(StopStep::Signalled) else {
            return;
        };
        let ids: Vec<u64> = self.generations.iter().map(|g| g.id).collect();
        for id in ids {
            let Some(generation) = self.generation_mut(id) else {
                continue;
            };
            match &mut generation.state {
                State::Stopping { kill_at, .. } => *kill_at = (*kill_at).min(budget_end),
                _ if delivered.is_some_and(|signal| mapping == Mapping::To(signal)) => {
                    info!(
                        generation.subject(),
                        "already received the stop signal from the terminal"
                    );
                    generation.state = State::Stopping {
                        kill_at: budget_end,
                        killed: false,
                    };
                }
                _ => self.stop_generation(id, mapping, budget_end),
            }
        }
        self.close_listeners();
    }

    /// The stop sequence for one generation: stop signal, SIGCONT, SIGKILL at `kill_at`.
    pub(super) fn stop_generation(&mut self, id: u64, mapping: Mapping, kill_at: Instant) {
        let Some(generation) = self.generation_mut(id) else {
            return;
        };
        let subject = generation.subject();
        let wait = format_duration(kill_at.saturating_duration_since(Instant::now()));
        match mapping {
            Mapping::To(signal) => {
                generation.signal(signal);
                if signal != Signal::KILL && signal != Signal::CONT {
                    // A stopped process acts on the stop signal only once continued.
                    generation.signal(Signal::CONT);
                }
                info!(subject, "sent {signal}; SIGKILL in {wait} if still running");
            }
            Mapping::Drop => {
                info!(
                    subject,
                    "the stop signal is dropped by --map-signal; SIGKILL in {wait}"
                )
            }
        }
        generation.state = State::Stopping {
            kill_at,
            killed: false,
        };
    }

    pub(super) fn kill_generation(&mut self, id: u64, why: &str) {
        let Some(generation) = self.generation_mut(id) else {
            return;
        };
        if let State::Stopping { killed: true, .. } = generation.state {
            return;
        }
        warn!(
            generation.subject(),
            "{why}: sending SIGKILL to its process group"
        );
        generation.signal(Signal::KILL);
        generation.state = State::Stopping {
            kill_at: Instant::now(),
            killed: true,
        };
    }

    /// A second TERM or INT: no more waiting for anything.
    pub(super) fn force(&mut self) {
        self.forced = true;
        let ids: Vec<u64> = self.generations.iter().map(|g| g.id).collect();
        for id in ids {
            self.kill_generation(id, "forced stop");
        }
        if let Some(hook) = &mut self.hook
            && hook.kind == HookKind::PreStop
        {
            hook.killed = true;
            let _ = nix::sys::signal::killpg(hook.pid, nix::sys::signal::Signal::SIGKILL);
        }
        if self.advance_stop(StopStep::Signalled).is_some() {
            self.close_listeners();
        } else if let Phase::Finishing(Leftovers::Stopping { .. }) = self.phase {
            self.phase = Phase::Finishing(Leftovers::Killed);
            self.signal_leftovers(Mapping::To(Signal::KILL));
        }
    }

    pub(super) fn enter_finishing(&mut self) {
        self.phase = Phase::Finishing(Leftovers::Unchecked);
        self.close_listeners();
        let mapping = self.retire_mapping();
        let kill_at = self.stop_deadline();
        let ids: Vec<u64> = self
            .generations
            .iter()
            .filter(|g| g.has_processes(self.reaper) && !g.is_stopping())
            .map(|g| g.id)
            .collect();
        for id in ids {
            self.stop_generation(id, mapping, kill_at);
        }
    }

    /// Every generation is gone; orphans re-parented to graceful-run may remain (e.g. a
    /// daemon that left the command's process group). Stop them too, then finish.
    pub(super) fn finish_leftovers(&mut self, leftovers: Leftovers) {
        // Reparenting sends no SIGCHLD: look again now.
        self.reap();
        if !self.generations.is_empty() || self.hook.is_some() {
            return;
        }
        let can_find_them = self.pid1 || self.proc_is_ours;
        if !self.children_left || !can_find_them {
            if self.children_left {
                warn!(
                    Subject::NONE,
                    "leaving behind processes that cannot be found (/proc is not this pid namespace's)"
                );
            }
            self.start_post_stop();
            return;
        }
        if leftovers != Leftovers::Unchecked {
            return;
        }
        if self.forced {
            self.phase = Phase::Finishing(Leftovers::Killed);
            self.signal_leftovers(Mapping::To(Signal::KILL));
        } else {
            info!(
                Subject::NONE,
                "stopping processes left behind by the command"
            );
            let kill_at = self.stop_deadline();
            self.phase = Phase::Finishing(Leftovers::Stopping { kill_at });
            self.signal_leftovers(self.retire_mapping());
        }
    }

    /// Signals every child of graceful-run (as PID 1: every process of the namespace).
    pub(super) fn signal_leftovers(&mut self, mapping: Mapping) {
        let Mapping::To(signal) = mapping else {
            return;
        };
        let hook = self.hook.as_ref().map(|h| h.pid);
        let send = |pid: Pid, signal: Signal| {
            let _ = crate::signal::send(pid, signal);
        };
        if self.pid1 {
            // kill(-1) from PID 1 reaches every process of the namespace except itself.
            send(Pid::from_raw(-1), signal);
            if signal != Signal::KILL {
                send(Pid::from_raw(-1), Signal::CONT);
            }
            return;
        }
        for pid in process::children_of_self()
            .into_iter()
            .filter(|pid| Some(*pid) != hook)
        {
            debug!(
                Subject::pid(pid.as_raw()),
                "sending {signal} to a leftover process"
            );
            send(pid, signal);
            if signal != Signal::KILL {
                send(pid, Signal::CONT);
            }
        }
    }

    pub(super) fn start_post_stop(&mut self) {
        let Some(command) = self.cfg.post_stop.clone() else {
            self.phase = Phase::Done;
            return;
        };
        let mut extra = Vec::new();
        if let Some(End::Exited(exit)) = self.last_end {
            extra.push(("EXIT_CODE", exit.kind().to_string()));
            extra.push(("EXIT_STATUS", exit.status_text()));
        }
        let deadline = Instant::now() + self.cfg.hook_timeout;
        self.phase = Phase::PostStop;
        if !self.start_hook(HookKind::PostStop, &command, &extra, deadline) {
            self.phase = Phase::Done;
        }
    }

    pub(super) fn start_hook(
        &mut self,
        kind: HookKind,
        command: &str,
        extra: &[(&str, String)],
        deadline: Instant,
    ) -> bool {
        let argv = ["sh".into(), "-c".into(), command.into()];
        let plan = Plan {
            executable: std::path::Path::new("/bin/sh"),
            argv: &argv,
            env: self.env.for_hook(extra),
            listen_pid: false,
            fds: &[],
            new_process_group: true,
            terminal: None,
            credentials: self.cfg.user.as_ref(),
            ignored_signals: &self.ignored_signals,
        };
        match spawn::spawn(&plan) {
            Ok(pid) => {
                info!(
                    Subject::pid(pid.as_raw()),
                    "running the {} hook",
                    kind.flag()
                );
                self.hook = Some(Hook {
                    kind,
                    pid,
                    deadline,
                    killed: false,
                });
                true
            }
            Err(e) => {
                warn!(Subject::NONE, "cannot run the {} hook: {e}", kind.flag());
                false
            }
        }
    }

    pub(super) fn close_listeners(&mut self) {
        if !self.listeners.is_closed() {
            self.listeners.close();
            debug!(
                Subject::NONE,
                "closed graceful-run's copies of the listening sockets"
            );
        }
    }

    /// The signal for retiring a generation that no TERM/INT asked to stop.
    pub(super) fn retire_mapping(&self) -> Mapping {
        match self.phase {
            Phase::Stopping { mapping, .. } => mapping,
            _ => self.cfg.stop_mapping(Signal::TERM),
        }
    }

    /// When processes being stopped now must be gone: the stop budget during a stop,
    /// otherwise a full stop timeout from now.
    pub(super) fn stop_deadline(&self) -> Instant {
        let now = Instant::now();
        match self.budget_end {
            _ if self.forced => now,
            Some(budget_end) => budget_end.max(now),
            None => now + self.cfg.stop_timeout,
        }
    }
}
