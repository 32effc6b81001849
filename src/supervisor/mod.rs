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
mod restart;
mod stop;
mod terminal;

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::config::Config;
use crate::exit::{ChildExit, Outcome};
use crate::listen::Listeners;
use crate::log::Subject;
use crate::notify::{Message, Upstream};
use crate::reaper::{self, Reaped};
use crate::signal::receive::{Received, SignalReceiver};
use crate::signal::{Mapping, Signal};
use crate::{debug, error, info, process, warn};

use generation::{Generation, State};
use restart::Backoff;
use stop::{Hook, Leftovers, StopStep};

/// Where the service as a whole is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A generation serves (or is starting to).
    Serving,
    /// The command exited and will be restarted at `until`.
    Backoff {
        until: Instant,
    },
    /// A stop was requested; everything must be gone by `Supervisor::budget_end`.
    Stopping {
        step: StopStep,
        /// What the command receives as the stop signal.
        mapping: Mapping,
        /// The signal the command already got from the terminal (`--no-process-group`).
        delivered: Option<Signal>,
    },
    /// No generation serves any more: waiting for every process left to end.
    Finishing(Leftovers),
    /// The `--post-stop` hook runs.
    PostStop,
    Done,
}

/// How the last serving generation ended.
#[derive(Clone, Copy, Debug)]
enum End {
    Exited(ChildExit),
    /// It could not be started: 125, 126 or 127.
    SpawnFailed(i32),
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
    /// Holds the generations' notify sockets (`--ready notify`); created with the first one,
    /// removed when the supervisor is dropped. After `generations`, so dropped after them.
    notify_dir: Option<crate::notify::NotifyDir>,
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
            notify_dir: None,
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
        let outcome = match self.last_end {
            Some(End::Exited(exit)) => Outcome::Child(exit),
            Some(End::SpawnFailed(code)) => Outcome::Code(code),
            None => Outcome::Code(0),
        };
        // The handlers stay installed until the process ends: a signal that arrives while
        // socket and pid files are removed is absorbed instead of killing graceful-run
        // half-way. (Dropping the receiver would also unregister every handler, one
        // copy-on-write update of signal-hook's registry each: a fifth of startup+exit work.)
        std::mem::forget(self.signals);
        outcome
    }

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
        // Stopping or restarting on a request from the command itself would be wrong (Go's
        // grace TERMs its parent), so those signals get the thorough check, which reads the
        // sender's ancestry from /proc. Any other signal is only forwarded, and the cheap
        // check (a generation's process or process group) is enough to avoid echoing a
        // signal back to the group that sent it; it keeps /proc out of the forwarding path.
        let decides =
            matches!(signal, Signal::TERM | Signal::INT) || Some(signal) == self.cfg.restart_signal;
        if let Some(sender) = received.sender
            && self.is_ours(sender, decides)
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
                // Terminal first, as shells do on `fg`: a command continued before it owns
                // the terminal reads it from the background and is stopped again (SIGTTIN).
                self.hand_terminal_to_serving();
                self.forward(signal, delivered);
            }
            _ => self.forward(signal, delivered),
        }
    }

    fn on_notify(&mut self, id: u64, message: Message) {
        let Some(generation) = self.generation(id) else {
            return;
        };
        let subject = generation.subject();
        // Senders of other uids are filtered out by the socket (allowed uids given at bind).
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

    /// Whether `pid` belongs to the command: a generation or hook, a process in a
    /// generation's process group, or (`thorough`) any descendant of graceful-run. Pid 0 is
    /// a sender outside graceful-run's pid namespace (e.g. `docker stop`).
    fn is_ours(&self, pid: i32, thorough: bool) -> bool {
        if pid <= 0 {
            return false;
        }
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
        thorough && self.proc_is_ours && process::descends_from(pid, self.own_pid)
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
    if millis.is_zero() {
        return "under 1ms".to_string();
    }
    humantime::format_duration(millis).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_whole_milliseconds() {
        assert_eq!(format_duration(Duration::from_micros(9_999_700)), "10s");
        assert_eq!(format_duration(Duration::from_micros(1_500)), "2ms");
        assert_eq!(format_duration(Duration::from_micros(300)), "under 1ms");
        assert_eq!(format_duration(Duration::from_millis(1_250)), "1s 250ms");
    }
}
