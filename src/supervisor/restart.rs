//! Starting generations, readiness, zero-downtime restarts and crash restarts.
//!
//! A restart starts a new generation on the same sockets and waits until it is ready
//! (READY=1 on its own NOTIFY_SOCKET, or still running after `--ready DURATION`); only then
//! does the old generation get the stop signal. A generation that exits before it is ready,
//! or is not ready within `--ready-timeout`, is stopped and the old one keeps serving; the
//! next restart signal tries again. Restart requests that arrive during a handover are
//! coalesced into one that runs when it ends: two handovers never overlap.
//!
//! When the serving generation exits on its own, `--restart-policy` decides between
//! finishing (the default, as an init should) and a crash restart after an exponential
//! backoff. The sockets stay open meanwhile, so clients wait in the backlog.

use std::time::{Duration, Instant};

use super::generation::{Generation, State};
use super::{End, Phase, Supervisor, format_duration};
use crate::cli::{Ready, RestartPolicy};
use crate::log::Subject;
use crate::notify::{NotifySocket, monotonic_usec};
use crate::spawn::{self, Plan};
use crate::{error, info, warn};

/// Crash-restart delays double up to this.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// A generation that stayed up this long resets the backoff and the restart count.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Exponential backoff for crash restarts.
pub(super) struct Backoff {
    pub(super) first: Duration,
    pub(super) consecutive: u32,
}

impl Backoff {
    pub(super) fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.consecutive.min(16));
        self.consecutive += 1;
        self.first.saturating_mul(factor).min(BACKOFF_CAP)
    }
}

impl Supervisor<'_> {
    /// Starts the generation that serves (at startup, and after a crash restart delay).
    pub(super) fn start_serving(&mut self) {
        match self.spawn_generation() {
            Ok(id) => self.serving = Some(id),
            Err(code) => {
                let now = Instant::now();
                self.service_ended(End::SpawnFailed(code), now, true);
            }
        }
    }

    /// Spawns a new generation on the shared sockets; on failure logs why and returns the
    /// exit code it stands for.
    pub(super) fn spawn_generation(&mut self) -> Result<u64, i32> {
        let id = self.next_id;
        self.next_id += 1;
        let program = &self.cfg.command[0];
        let path = std::env::var_os("PATH");
        let executable = match spawn::look_up(program, path.as_deref()) {
            Ok(executable) => executable,
            Err(e) => {
                error!(Subject::NONE, "gen {id}: {e}");
                return Err(e.exit_code());
            }
        };
        if let Err(e) = self.listeners.reset_blocking() {
            warn!(Subject::NONE, "cannot reset O_NONBLOCK on the sockets: {e}");
        }
        let notify = match self.cfg.ready {
            // Auto and Accepting wait for READY=1 for now: the readiness probe of issue 11
            // replaces this.
            Ready::Notify | Ready::Auto | Ready::Accepting => match NotifySocket::bind(id) {
                Ok(socket) => Some(socket),
                Err(e) => {
                    error!(
                        Subject::NONE,
                        "gen {id}: cannot create its NOTIFY_SOCKET: {e}"
                    );
                    return Err(crate::exit::FAILURE);
                }
            },
            Ready::After(_) => None,
        };
        let env = self.env.for_generation(
            self.listeners,
            id,
            notify.as_ref().map(NotifySocket::address),
            &self.cfg.compat,
        );
        let fds = self.listeners.raw_fds();
        let terminal = self.terminal_for_new_generation();
        let plan = Plan {
            executable: &executable,
            argv: &self.cfg.command,
            env,
            listen_pid: self.cfg.listen_pid && !fds.is_empty(),
            fds: &fds,
            new_process_group: self.cfg.process_group,
            terminal,
            credentials: self.cfg.user.as_ref(),
            ignored_signals: &self.ignored_signals,
        };
        let pid = match spawn::spawn(&plan) {
            Ok(pid) => pid,
            Err(e) => {
                error!(Subject::NONE, "gen {id}: {}: {e}", executable.display());
                return Err(e.exit_code());
            }
        };
        let now = Instant::now();
        let ready_at = match self.cfg.ready {
            Ready::After(delay) => Some(now + delay),
            Ready::Notify | Ready::Auto | Ready::Accepting => None,
        };
        let generation = Generation {
            id,
            pid,
            started: now,
            own_group: self.cfg.process_group,
            state: State::Starting {
                ready_at,
                deadline: now + self.cfg.ready_timeout,
            },
            exit: None,
            notify,
            failed_readiness: false,
        };
        info!(generation.subject(), "started {}", executable.display());
        self.generations.push(generation);
        Ok(id)
    }

    pub(super) fn on_ready(&mut self, id: u64) {
        let Some(generation) = self.generation_mut(id) else {
            return;
        };
        let elapsed = generation.started.elapsed();
        generation.state = State::Ready;
        let subject = generation.subject();
        info!(subject, "ready after {}", format_duration(elapsed));
        if self.incoming == Some(id) {
            self.incoming = None;
            if let Some(old) = self.serving.replace(id) {
                let mapping = self.retire_mapping();
                let kill_at = Instant::now() + self.cfg.stop_timeout;
                info!(subject, "takes over from gen {old}");
                self.stop_generation(old, mapping, kill_at);
            }
            self.finish_handover();
        } else if self.serving == Some(id) {
            if !self.announced_ready {
                self.announced_ready = true;
                self.upstream_send(&format!("READY=1\nMAINPID={}", self.own_pid));
            }
            self.run_queued_restart();
        }
    }

    pub(super) fn readiness_timed_out(&mut self, id: u64) {
        let timeout = self.cfg.ready_timeout;
        let Some(generation) = self.generation_mut(id) else {
            return;
        };
        generation.failed_readiness = true;
        let subject = generation.subject();
        error!(
            subject,
            "not ready after {}; stopping it",
            format_duration(timeout)
        );
        let mapping = self.retire_mapping();
        let kill_at = Instant::now() + self.cfg.stop_timeout;
        self.stop_generation(id, mapping, kill_at);
        if self.incoming == Some(id) {
            self.incoming = None;
            if let Some(old) = self.serving {
                error!(subject, "restart failed; gen {old} keeps serving");
            }
            self.finish_handover();
        }
    }

    pub(super) fn request_restart(&mut self) {
        match self.phase {
            Phase::Backoff { .. } => {
                info!(
                    Subject::NONE,
                    "restart requested while the command is down: starting it now"
                );
                self.phase = Phase::Serving;
                self.start_serving();
            }
            Phase::Serving => {
                let serving_ready = self
                    .serving
                    .and_then(|id| self.generation(id))
                    .is_some_and(Generation::is_ready);
                if self.incoming.is_some() || !serving_ready {
                    if !self.restart_queued {
                        info!(
                            Subject::NONE,
                            "restart queued until the current generation is ready"
                        );
                    }
                    self.restart_queued = true;
                } else {
                    self.start_replacement();
                }
            }
            _ => info!(
                Subject::NONE,
                "ignoring the restart request: graceful-run is stopping"
            ),
        }
    }

    pub(super) fn start_replacement(&mut self) {
        self.upstream_send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        match self.spawn_generation() {
            Ok(id) => self.incoming = Some(id),
            Err(_) => {
                if let Some(old) = self.serving {
                    error!(Subject::NONE, "restart failed; gen {old} keeps serving");
                }
                self.finish_handover();
            }
        }
    }

    /// A handover ended (well or not): tell systemd, and run a restart that came meanwhile.
    pub(super) fn finish_handover(&mut self) {
        self.upstream_send("READY=1");
        self.run_queued_restart();
    }

    pub(super) fn run_queued_restart(&mut self) {
        let serving_ready = self
            .serving
            .and_then(|id| self.generation(id))
            .is_some_and(Generation::is_ready);
        if self.restart_queued
            && self.incoming.is_none()
            && self.phase == Phase::Serving
            && serving_ready
        {
            self.restart_queued = false;
            info!(Subject::NONE, "running the queued restart");
            self.start_replacement();
        }
    }

    /// No generation serves any more and no stop was requested: restart or finish.
    pub(super) fn service_ended(&mut self, end: End, started: Instant, failed: bool) {
        self.last_end = Some(end);
        let success = !failed && matches!(end, End::Exited(exit) if exit.success());
        let restart = match self.cfg.restart_policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Always => true,
        };
        if !restart {
            self.enter_finishing();
            return;
        }
        if started.elapsed() >= STABLE_AFTER {
            self.backoff.consecutive = 0;
        }
        if let Some(max) = self.cfg.max_restarts
            && self.backoff.consecutive >= max
        {
            let restarts = if max == 1 { "restart" } else { "restarts" };
            error!(Subject::NONE, "giving up after {max} {restarts} in a row");
            self.enter_finishing();
            return;
        }
        let delay = self.backoff.next_delay();
        info!(
            Subject::NONE,
            "restarting in {} (restart {} in a row)",
            format_duration(delay),
            self.backoff.consecutive
        );
        self.phase = Phase::Backoff {
            until: Instant::now() + delay,
        };
    }
}
