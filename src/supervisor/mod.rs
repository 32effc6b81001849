//! The supervisor: one task that owns every process graceful-run starts.
//!
//! # Theory of operation
//!
//! A single loop waits on three sources, and nothing else ever wakes graceful-run:
//! - signals (including SIGCHLD, on which the one reaper collects every exited process),
//! - sd_notify messages on the sockets of generations that are starting,
//! - one timer, armed at the earliest pending deadline (readiness, stop timeout, drain,
//!   backoff, hook timeout) and disarmed when there is none. An idle graceful-run sleeps in
//!   epoll_wait with no timeout.
//!
//! The service is in one [`Phase`]. While it is `Serving`, one generation is `serving` and,
//! during a restart, one more is `incoming`; retired generations finish their stop sequence
//! alongside. A restart never overlaps another: requests that arrive meanwhile are coalesced
//! into one that runs when the current handover ends, so the newest code wins.
//!
//! ```text
//! Serving --(command exits, restart policy)--> Backoff --(delay)--> Serving
//!    |  \--(command exits, no restart)------------------------------> Finishing
//!    \--(TERM/INT)--> Stopping: drain -> pre-stop -> stop signal --(all gone)--> Finishing
//! Finishing: leftover processes get the stop signal, then SIGKILL --> PostStop --> Done
//! ```
//!
//! Signals sent by the command's own processes are not taken as requests from the outside
//! (Go's grace and endless TERM their parent after a restart); only the restart signal is
//! honoured from them, so a server can ask for its own replacement.

mod generation;

use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::cli::{Ready, RestartPolicy};
use crate::config::Config;
use crate::exit::{ChildExit, Outcome};
use crate::listen::Listeners;
use crate::log::Subject;
use crate::notify::{Message, NotifySocket, Upstream, monotonic_usec};
use crate::reaper::{self, Reaped};
use crate::signal::receive::{Received, SignalReceiver};
use crate::signal::{Mapping, Signal};
use crate::spawn::{self, Plan};
use crate::{debug, error, info, process, warn};

use generation::{Generation, State};

/// Crash-restart delays double up to this.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A generation that stayed up this long resets the backoff and the restart count.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Where the service as a whole is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A generation serves (or is starting to).
    Serving,
    /// The command exited and will be restarted at `until`.
    Backoff {
        until: Instant,
    },
    /// A stop was requested; everything must be gone by `budget_end` (drain + stop timeout).
    Stopping {
        step: StopStep,
        mapping: Mapping,
        budget_end: Instant,
        /// The command already got the signal from the terminal (`--no-process-group`).
        delivered: Option<Signal>,
    },
    /// No generation serves any more: waiting for every process left to end.
    Finishing(Leftovers),
    /// The `--post-stop` hook runs.
    PostStop,
    Done,
}

/// Orphans re-parented to graceful-run, outside any generation's process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leftovers {
    /// Not looked for yet (generations are still ending).
    Unchecked,
    /// Sent the stop signal; SIGKILL at `kill_at`.
    Stopping {
        kill_at: Instant,
    },
    Killed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopStep {
    Draining { until: Instant },
    PreStop,
    Signalled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HookKind {
    PreStop,
    PostStop,
}

impl HookKind {
    fn flag(self) -> &'static str {
        match self {
            HookKind::PreStop => "--pre-stop",
            HookKind::PostStop => "--post-stop",
        }
    }
}

struct Hook {
    kind: HookKind,
    pid: Pid,
    deadline: Instant,
    killed: bool,
}

/// How the last serving generation ended.
#[derive(Clone, Copy, Debug)]
enum End {
    Exited(ChildExit),
    /// It could not be started: 125, 126 or 127.
    SpawnFailed(i32),
}

/// Exponential backoff for crash restarts.
struct Backoff {
    first: Duration,
    consecutive: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.consecutive.min(16));
        self.consecutive += 1;
        self.first.saturating_mul(factor).min(BACKOFF_CAP)
    }
}

/// What the supervisor is given at start.
pub struct Setup<'a> {
    pub config: &'a Config,
    pub listeners: &'a mut Listeners,
    pub env: crate::child_env::ChildEnv,
    pub signals: SignalReceiver,
    pub ignored_signals: Vec<Signal>,
    pub upstream: Option<Upstream>,
    pub terminal: Option<RawFd>,
    pub pid1: bool,
    /// PID 1 or a child subreaper: orphaned descendants come back to graceful-run.
    pub reaper: bool,
    pub proc_is_ours: bool,
}

enum Event {
    Signal(Received),
    Notify(u64, Message),
    Timer,
}

pub struct Supervisor<'a> {
    cfg: &'a Config,
    listeners: &'a mut Listeners,
    env: crate::child_env::ChildEnv,
    signals: SignalReceiver,
    ignored_signals: Vec<Signal>,
    upstream: Option<Upstream>,
    terminal: Option<RawFd>,
    pid1: bool,
    reaper: bool,
    proc_is_ours: bool,
    own_pid: i32,

    phase: Phase,
    generations: Vec<Generation>,
    next_id: u64,
    serving: Option<u64>,
    incoming: Option<u64>,
    restart_queued: bool,
    announced_ready: bool,
    backoff: Backoff,
    hook: Option<Hook>,
    last_end: Option<End>,
    children_left: bool,
    forced: bool,
    /// Set by a stop request: everything must be gone by then (drain + stop timeout).
    budget_end: Option<Instant>,
}

impl<'a> Supervisor<'a> {
    pub fn new(setup: Setup<'a>) -> Supervisor<'a> {
        Supervisor {
            cfg: setup.config,
            listeners: setup.listeners,
            env: setup.env,
            signals: setup.signals,
            ignored_signals: setup.ignored_signals,
            upstream: setup.upstream,
            terminal: setup.terminal,
            pid1: setup.pid1,
            reaper: setup.reaper,
            proc_is_ours: setup.proc_is_ours,
            own_pid: std::process::id() as i32,
            phase: Phase::Serving,
            generations: Vec::new(),
            next_id: 1,
            serving: None,
            incoming: None,
            restart_queued: false,
            announced_ready: false,
            backoff: Backoff {
                first: setup.config.restart_delay,
                consecutive: 0,
            },
            hook: None,
            last_end: None,
            children_left: false,
            forced: false,
            budget_end: None,
        }
    }

    /// Runs the service until everything is over; returns how graceful-run should end.
    pub async fn run(mut self) -> Outcome {
        self.start_serving();
        self.settle();
        while self.phase != Phase::Done {
            let deadline = self.next_deadline();
            let generations = &self.generations;
            let event = tokio::select! {
                received = self.signals.next() => Event::Signal(received),
                (id, message) = std::future::poll_fn(|cx| poll_notify(generations, cx)) => {
                    Event::Notify(id, message)
                }
                () = sleep_until(deadline), if deadline.is_some() => Event::Timer,
            };
            match event {
                Event::Signal(received) => self.on_signal(received),
                Event::Notify(id, message) => self.on_notify(id, message),
                Event::Timer => self.on_timer(),
            }
            self.settle();
        }
        self.reclaim_terminal();
        match self.last_end {
            Some(End::Exited(exit)) => Outcome::Child(exit),
            Some(End::SpawnFailed(code)) => Outcome::Code(code),
            None => Outcome::Code(0),
        }
    }

    // ----- events -------------------------------------------------------------------------

    fn on_signal(&mut self, received: Received) {
        let signal = received.signal;
        if signal == Signal::CHLD {
            self.reap();
            return;
        }
        if received.sender == Some(self.own_pid) {
            // Our own doing (SIGPIPE from a closed stderr, a raise): not a request.
            debug!(
                Subject::NONE,
                "ignoring {signal} sent by graceful-run itself"
            );
            return;
        }
        if let Some(sender) = received.sender
            && self.is_ours(sender)
        {
            if Some(signal) == self.cfg.restart_signal {
                info!(
                    Subject::pid(sender),
                    "restart requested by the command itself ({signal})"
                );
                self.request_restart();
            } else {
                info!(
                    Subject::pid(sender),
                    "ignoring {signal} sent to graceful-run by a process of the command"
                );
            }
            return;
        }
        // The terminal sends Ctrl-C, Ctrl-\, Ctrl-Z and resizes to its whole foreground
        // group; without a group of its own the command has already received them.
        let delivered = received.from_kernel && !self.cfg.process_group;
        match signal {
            // A hangup from the kernel (the terminal closed) is not a restart request.
            s if Some(s) == self.cfg.restart_signal
                && !(s == Signal::HUP && received.from_kernel) =>
            {
                info!(Subject::NONE, "{signal} received: restarting");
                self.request_restart();
            }
            Signal::TERM | Signal::INT => self.request_stop(signal, delivered.then_some(signal)),
            Signal::CONT => {
                self.forward(signal, delivered);
                self.hand_terminal_to_serving();
            }
            _ => self.forward(signal, delivered),
        }
    }

    fn on_notify(&mut self, id: u64, message: Message) {
        let Some(generation) = self.generation(id) else {
            return;
        };
        let subject = generation.subject();
        let allowed = [0, nix::unistd::geteuid().as_raw()]
            .into_iter()
            .chain(self.cfg.user.as_ref().map(|u| u.uid));
        if let Some(uid) = message.sender_uid
            && !allowed.clone().any(|a| a == uid)
        {
            warn!(subject, "ignoring a notify message from uid {uid}");
            return;
        }
        debug!(
            subject,
            "notify from pid {:?}: {:?}", message.sender_pid, message.fields
        );
        if let Some(status) = message.get("STATUS") {
            info!(subject, "status: {status}");
            if self.serving == Some(id) || self.incoming == Some(id) {
                self.upstream_send(&format!("STATUS={status}"));
            }
        }
        if message.is_set("READY") && generation.is_starting() {
            self.on_ready(id);
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        let due: Vec<(u64, State)> = self
            .generations
            .iter()
            .filter(|g| g.deadline().is_some_and(|d| d <= now))
            .map(|g| (g.id, g.state))
            .collect();
        for (id, state) in due {
            match state {
                State::Starting { ready_at, deadline } => {
                    if ready_at.is_some_and(|r| r <= now) {
                        if self.generation(id).is_some_and(|g| g.exit.is_none()) {
                            self.on_ready(id);
                        }
                    } else if deadline <= now {
                        self.readiness_timed_out(id);
                    }
                }
                State::Stopping { .. } => self.kill_generation(id, "it did not stop in time"),
                State::Ready => {}
            }
        }
        if let Some(hook) = &mut self.hook
            && !hook.killed
            && hook.deadline <= now
        {
            hook.killed = true;
            warn!(
                Subject::pid(hook.pid.as_raw()),
                "{} hook did not finish within {}; killing it",
                hook.kind.flag(),
                humantime::format_duration(self.cfg.hook_timeout)
            );
            let _ = nix::sys::signal::killpg(hook.pid, nix::sys::signal::Signal::SIGKILL);
        }
        match self.phase {
            Phase::Backoff { until } if until <= now => {
                self.phase = Phase::Serving;
                self.start_serving();
            }
            Phase::Stopping {
                step: StopStep::Draining { until },
                ..
            } if until <= now => self.after_drain(),
            Phase::Finishing(Leftovers::Stopping { kill_at }) if kill_at <= now => {
                warn!(
                    Subject::NONE,
                    "processes left behind did not stop in time: sending SIGKILL"
                );
                self.phase = Phase::Finishing(Leftovers::Killed);
                self.signal_leftovers(Mapping::To(Signal::KILL));
            }
            _ => {}
        }
    }

    /// Collects every exited child and acts on each.
    fn reap(&mut self) {
        let harvest = reaper::reap();
        self.children_left = harvest.children_left;
        for event in harvest.events {
            match event {
                Reaped::Exited(pid, exit) => {
                    if let Some(id) = self
                        .generations
                        .iter()
                        .find(|g| g.pid == pid && g.exit.is_none())
                        .map(|g| g.id)
                    {
                        self.on_leader_exit(id, exit);
                    } else if self.hook.as_ref().is_some_and(|h| h.pid == pid) {
                        self.on_hook_exit(exit);
                    } else {
                        debug!(Subject::pid(pid.as_raw()), "reaped orphan: {exit}");
                    }
                }
                Reaped::Stopped(pid, signal) => self.on_stopped(pid, signal),
            }
        }
    }

    fn on_leader_exit(&mut self, id: u64, exit: ChildExit) {
        let reaper = self.reaper;
        let Some(generation) = self.generation_mut(id) else {
            return;
        };
        generation.exit = Some(exit);
        generation.notify = None;
        let subject = generation.subject();
        let started = generation.started;
        let failed_readiness = generation.failed_readiness;
        let leftovers = generation.has_processes(reaper) && !generation.is_stopping();
        if leftovers {
            // Before the role's consequences (which may stop every generation): once.
            info!(
                subject,
                "processes are left in its process group; stopping them"
            );
            let mapping = self.retire_mapping();
            let kill_at = self.stop_deadline();
            self.stop_generation(id, mapping, kill_at);
        }

        if self.incoming == Some(id) {
            self.incoming = None;
            match self.serving {
                Some(old) => error!(
                    subject,
                    "{exit} before it was ready; gen {old} keeps serving"
                ),
                None => error!(subject, "{exit} before it was ready"),
            }
            self.finish_handover();
            if self.serving.is_none() && self.phase == Phase::Serving {
                self.service_ended(End::Exited(exit), started, true);
            }
        } else if self.serving == Some(id) {
            self.serving = None;
            self.last_end = Some(End::Exited(exit));
            info!(subject, "{exit}");
            if self.phase == Phase::Serving {
                match self.incoming {
                    Some(next) => warn!(
                        subject,
                        "exited during a restart; gen {next} takes over once ready"
                    ),
                    None => self.service_ended(End::Exited(exit), started, failed_readiness),
                }
            }
        } else {
            info!(subject, "{exit}");
        }
    }

    fn on_hook_exit(&mut self, exit: ChildExit) {
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
                if let Phase::Stopping {
                    step: StopStep::PreStop,
                    ..
                } = self.phase
                {
                    self.signal_stop();
                }
            }
            HookKind::PostStop => self.phase = Phase::Done,
        }
    }

    /// Job control: when the command in the terminal's foreground is stopped (Ctrl-Z), stop
    /// graceful-run too, so the shell sees its job stop and gets the terminal back. The
    /// shell's SIGCONT on `fg` is then forwarded, and the terminal handed back.
    fn on_stopped(&mut self, pid: Pid, signal: Signal) {
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

    // ----- starting -----------------------------------------------------------------------

    /// Starts the generation that serves (at startup, and after a crash restart delay).
    fn start_serving(&mut self) {
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
    fn spawn_generation(&mut self) -> Result<u64, i32> {
        let id = self.next_id;
        self.next_id += 1;
        let program = &self.cfg.command[0];
        let path = std::env::var_os("PATH");
        let executable = match spawn::look_up(program, path.as_deref()) {
            Ok(executable) => executable,
            Err(e) => {
                error!(Subject::NONE, "gen {id}: {}", describe_lookup(program, &e));
                return Err(e.exit_code());
            }
        };
        if let Err(e) = self.listeners.reset_blocking() {
            warn!(Subject::NONE, "cannot reset O_NONBLOCK on the sockets: {e}");
        }
        let notify = match self.cfg.ready {
            Ready::Notify => match NotifySocket::bind(id) {
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
            Ready::Notify => None,
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

    fn on_ready(&mut self, id: u64) {
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

    fn readiness_timed_out(&mut self, id: u64) {
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

    // ----- restarts -----------------------------------------------------------------------

    fn request_restart(&mut self) {
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

    fn start_replacement(&mut self) {
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
    fn finish_handover(&mut self) {
        self.upstream_send("READY=1");
        self.run_queued_restart();
    }

    fn run_queued_restart(&mut self) {
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
    fn service_ended(&mut self, end: End, started: Instant, failed: bool) {
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
            error!(Subject::NONE, "giving up after {max} restarts in a row");
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

    // ----- stopping -----------------------------------------------------------------------

    /// TERM or INT from outside. `delivered` is set when the command already received it
    /// from the terminal.
    fn request_stop(&mut self, signal: Signal, delivered: Option<Signal>) {
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
            self.stop_generation(id, mapping, budget_end);
        }
        if matches!(self.phase, Phase::Backoff { .. }) || self.serving.is_none() {
            self.phase = Phase::Stopping {
                step: StopStep::Signalled,
                mapping,
                budget_end,
                delivered,
            };
            self.signal_stop();
            return;
        }
        if self.cfg.drain_delay.is_zero() {
            self.phase = Phase::Stopping {
                step: StopStep::PreStop,
                mapping,
                budget_end,
                delivered,
            };
            self.after_drain();
        } else {
            info!(
                Subject::NONE,
                "draining for {} before the stop signal",
                format_duration(self.cfg.drain_delay)
            );
            self.phase = Phase::Stopping {
                step: StopStep::Draining {
                    until: now + self.cfg.drain_delay,
                },
                mapping,
                budget_end,
                delivered,
            };
        }
    }

    fn after_drain(&mut self) {
        let Phase::Stopping {
            mapping,
            budget_end,
            delivered,
            ..
        } = self.phase
        else {
            return;
        };
        self.phase = Phase::Stopping {
            step: StopStep::PreStop,
            mapping,
            budget_end,
            delivered,
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
    fn signal_stop(&mut self) {
        let Phase::Stopping {
            mapping,
            budget_end,
            delivered,
            ..
        } = self.phase
        else {
            return;
        };
        self.phase = Phase::Stopping {
            step: StopStep::Signalled,
            mapping,
            budget_end,
            delivered,
        };
        let ids: Vec<u64> = self.generations.iter().map(|g| g.id).collect();
        for id in ids {
            let Some(generation) = self.generation_mut(id) else {
                continue;
            };
            match &mut generation.state {
                State::Stopping { kill_at, .. } => *kill_at = (*kill_at).min(budget_end),
                _ if delivered.is_some()
                    && mapping == delivered.map_or(Mapping::Drop, Mapping::To) =>
                {
                    info!(
                        generation.subject(),
                        "already received {} from the terminal",
                        delivered.map_or(Signal::TERM, |s| s)
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
    fn stop_generation(&mut self, id: u64, mapping: Mapping, kill_at: Instant) {
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

    fn kill_generation(&mut self, id: u64, why: &str) {
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
    fn force(&mut self) {
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
        match self.phase {
            Phase::Stopping {
                mapping,
                budget_end,
                delivered,
                ..
            } => {
                self.phase = Phase::Stopping {
                    step: StopStep::Signalled,
                    mapping,
                    budget_end,
                    delivered,
                };
                self.close_listeners();
            }
            Phase::Finishing(Leftovers::Stopping { .. }) => {
                self.phase = Phase::Finishing(Leftovers::Killed);
                self.signal_leftovers(Mapping::To(Signal::KILL));
            }
            _ => {}
        }
    }

    fn enter_finishing(&mut self) {
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

    /// Re-checks the conditions that end phases; runs after every event.
    fn settle(&mut self) {
        self.generations.retain(|g| {
            let keep = g.has_processes(self.reaper);
            if !keep {
                debug!(g.subject(), "all processes of this generation are gone");
            }
            keep
        });
        loop {
            let before = self.phase;
            match self.phase {
                // Nothing left to stop (the command may have exited during the drain): skip the
                // rest of the stop sequence. A running pre-stop hook is waited for.
                Phase::Stopping { .. } if self.generations.is_empty() && self.hook.is_none() => {
                    self.phase = Phase::Finishing(Leftovers::Unchecked);
                    self.close_listeners();
                }
                Phase::Finishing(leftovers) if self.generations.is_empty() => {
                    self.finish_leftovers(leftovers)
                }
                _ => {}
            }
            if self.phase == before {
                break;
            }
        }
    }

    /// Every generation is gone; orphans re-parented to graceful-run may remain (e.g. a
    /// daemon that left the command's process group). Stop them too, then finish.
    fn finish_leftovers(&mut self, leftovers: Leftovers) {
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
    fn signal_leftovers(&mut self, mapping: Mapping) {
        let Mapping::To(signal) = mapping else {
            return;
        };
        let hook = self.hook.as_ref().map(|h| h.pid);
        let send = |pid: Pid, signal: Signal| {
            let _ = nix::sys::signal::kill(pid, signal.as_nix());
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

    fn start_post_stop(&mut self) {
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

    fn start_hook(
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

    fn close_listeners(&mut self) {
        if !self.listeners.is_closed() {
            self.listeners.close();
            debug!(
                Subject::NONE,
                "closed graceful-run's copies of the listening sockets"
            );
        }
    }

    // ----- helpers ------------------------------------------------------------------------

    fn forward(&mut self, signal: Signal, delivered: bool) {
        if delivered {
            debug!(
                Subject::NONE,
                "{signal} from the terminal already reached the command"
            );
            return;
        }
        match self.cfg.signal_map.translate(signal) {
            Mapping::Drop => debug!(Subject::NONE, "dropped {signal} (--map-signal)"),
            Mapping::To(to) => {
                let mut any = false;
                for generation in self
                    .generations
                    .iter()
                    .filter(|g| g.has_processes(self.reaper))
                {
                    debug!(generation.subject(), "forwarding {signal} as {to}");
                    generation.signal(to);
                    any = true;
                }
                if !any {
                    debug!(Subject::NONE, "no command is running to receive {signal}");
                }
            }
        }
    }

    /// Whether `pid` belongs to the command: a generation, a hook, or their descendants.
    fn is_ours(&self, pid: i32) -> bool {
        let pid_t = Pid::from_raw(pid);
        if self.generations.iter().any(|g| g.pid == pid_t)
            || self.hook.as_ref().is_some_and(|h| h.pid == pid_t)
        {
            return true;
        }
        if self.cfg.process_group
            && let Ok(pgid) = nix::unistd::getpgid(Some(pid_t))
            && self.generations.iter().any(|g| g.pid == pgid)
        {
            return true;
        }
        self.proc_is_ours && process::descends_from(pid, self.own_pid)
    }

    /// The signal for retiring a generation that no TERM/INT asked to stop.
    fn retire_mapping(&self) -> Mapping {
        match self.phase {
            Phase::Stopping { mapping, .. } => mapping,
            _ => self.cfg.stop_mapping(Signal::TERM),
        }
    }

    /// When processes being stopped now must be gone: the stop budget during a stop,
    /// otherwise a full stop timeout from now.
    fn stop_deadline(&self) -> Instant {
        let now = Instant::now();
        match self.budget_end {
            _ if self.forced => now,
            Some(budget_end) => budget_end.max(now),
            None => now + self.cfg.stop_timeout,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Backoff { until } => Some(until),
            Phase::Stopping {
                step: StopStep::Draining { until },
                ..
            } => Some(until),
            Phase::Finishing(Leftovers::Stopping { kill_at }) => Some(kill_at),
            _ => None,
        };
        let hook = self.hook.as_ref().filter(|h| !h.killed).map(|h| h.deadline);
        self.generations
            .iter()
            .filter_map(Generation::deadline)
            .chain(phase)
            .chain(hook)
            .min()
    }

    fn generation(&self, id: u64) -> Option<&Generation> {
        self.generations.iter().find(|g| g.id == id)
    }

    fn generation_mut(&mut self, id: u64) -> Option<&mut Generation> {
        self.generations.iter_mut().find(|g| g.id == id)
    }

    fn upstream_send(&self, text: &str) {
        if let Some(upstream) = &self.upstream
            && let Err(e) = upstream.send(text)
        {
            debug!(Subject::NONE, "cannot notify the supervisor: {}", e.desc());
        }
    }

    /// The terminal for a new generation: only when the terminal's foreground is
    /// graceful-run or one of its generations (never stolen from a shell that put us in the
    /// background).
    fn terminal_for_new_generation(&self) -> Option<RawFd> {
        let terminal = self.terminal?;
        let foreground = process::terminal_foreground()?;
        let ours = foreground == nix::unistd::getpgrp()
            || self.generations.iter().any(|g| g.pid == foreground);
        ours.then_some(terminal)
    }

    fn hand_terminal_to_serving(&self) {
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
    fn reclaim_terminal(&self) {
        if self.terminal.is_some()
            && let Some(foreground) = process::terminal_foreground()
            && foreground != nix::unistd::getpgrp()
            && !process::group_alive(foreground)
        {
            process::give_terminal(nix::unistd::getpgrp());
        }
    }
}

fn poll_notify(
    generations: &[Generation],
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<(u64, Message)> {
    for generation in generations {
        if let Some(socket) = &generation.notify
            && let std::task::Poll::Ready(message) = socket.poll_message(cx)
        {
            return std::task::Poll::Ready((generation.id, message));
        }
    }
    std::task::Poll::Pending
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}

fn format_duration(duration: Duration) -> String {
    // To the nearest millisecond: humantime would print nanoseconds, and a deadline computed
    // a few microseconds ago would read "4s 999ms".
    let millis = Duration::from_millis(((duration.as_micros() + 500) / 1000) as u64);
    humantime::format_duration(millis).to_string()
}

fn describe_lookup(program: &OsStr, error: &spawn::LookupError) -> String {
    match error {
        spawn::LookupError::NotFound => format!("{}: command not found", program.to_string_lossy()),
        spawn::LookupError::NotExecutable(path, why) => {
            format!("{}: cannot execute: {why}", path.display())
        }
    }
}
