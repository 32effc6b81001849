//! The supervisor: one task that owns every process graceful-run starts.
//!
//! It is split in two, as sans-IO protocol libraries are:
//! - [`core`]: every decision, as a pure state machine. It takes events (a signal, a reaped
//!   status, a notify message, the timer, the answer to a question it asked) and returns
//!   actions. Its module docs draw the states.
//! - this module, the executor: it owns the processes, the sockets, /proc, the reaper, the
//!   clock and the one timer, turns what happens into [`core::Event`]s and carries out the
//!   [`core::Action`]s, deciding nothing itself.
//!
//! A single loop waits on three sources, and nothing else ever wakes graceful-run:
//! - signals (including SIGCHLD, on which the one reaper collects every exited process),
//! - sd_notify messages on the generations' own NOTIFY_SOCKETs,
//! - one timer, armed at the earliest deadline the core has (readiness, stop timeout, drain,
//!   backoff, hook timeout, the look for a process waiting on its sockets while a generation
//!   starts) and disarmed when there is none. An idle graceful-run sleeps in epoll_wait with
//!   no timeout.
//!
//! Signals are looked at first, so that a forwarded one's `kill` waits for nothing else (see
//! `next_event`: no allocation, no other source polled, the core's deadlines looked at after
//! the `kill`); only a SIGCHLD goes behind a datagram already queued.

pub mod core;
#[cfg(test)]
mod proptest;
mod steering;
mod terminal;
#[cfg(test)]
mod tests;
mod triggers;

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use nix::unistd::Pid;

use self::core::driver::{self, Answers};
use self::core::{
    Action, Answer, Core, Delivery, Event, GenId, HookKind, NotifyNeed, Origin, Question, Settings,
    Spawned, Target, WorkerId,
};
use crate::config::Config;
use crate::exit::Outcome;
use crate::listen::Listeners;
use crate::log::{self, Subject};
use crate::notify::{Message, NotifySocket, Upstream, monotonic_usec};
use crate::signal::Signal;
use crate::signal::receive::{Received, SignalReceiver};
use crate::spawn::{self, Plan};
use crate::{accepting, control, debug, error, process, reaper, warn};

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
    /// The TCP listeners were bound to found steering groups (`Listeners::bind_with`).
    pub steering: bool,
    /// `--watch`, started.
    pub watch: Option<crate::watch::Watch>,
    /// COMMAND as found on PATH at startup: what the first generation runs.
    pub executable: std::path::PathBuf,
}

/// What the executor holds for a worker the core knows.
struct Held {
    generation: GenId,
    pid: Pid,
    notify: Option<NotifySocket>,
}

/// The core, and the executor that carries out its actions.
pub struct Supervisor<'a> {
    core: Core,
    io: Executor<'a>,
}

/// Everything of the supervisor but its decisions: processes, sockets, the timer, /proc.
struct Executor<'a> {
    cfg: &'a Config,
    listeners: &'a mut Listeners,
    env: crate::child_env::ChildEnv,
    signals: SignalReceiver,
    ignored_signals: Vec<Signal>,
    upstream: Option<Upstream>,
    terminal: Option<RawFd>,
    pid1: bool,
    proc_is_ours: bool,
    own_pid: i32,
    held: BTreeMap<WorkerId, Held>,
    /// The one timer, at the core's earliest deadline: made once and moved when the deadline
    /// moves (not made and registered again on every wakeup), dropped when there is none, so
    /// that it cannot wake the loop for nothing.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Signals taken back to back without the loop sleeping (see `next_event`).
    signal_streak: u32,
    /// PID 1 leads its session, so its process group is 1 for good (see `group_of`); known
    /// from the first signal PID 1 sends.
    init_leads_session: Option<bool>,
    /// `graceful-run ctl`'s socket; None when it could not be bound (the service runs on).
    control: Option<control::Server>,
    started: Instant,
    /// Holds the generations' NOTIFY_SOCKETs: made with the first one, removed when the
    /// supervisor is dropped. After `held`, so that the sockets go first.
    notify_dir: Option<crate::notify::NotifyDir>,
    /// No private directory could be made: generations get abstract sockets.
    notify_abstract: bool,
    /// `ctl status` requests to answer from the core's snapshot.
    status_asked: Vec<control::ClientId>,
    /// Children reaped and not yet reported to the core.
    reaped: std::collections::VecDeque<(Pid, i32)>,
    steering: steering::Steering,
    triggers: triggers::Triggers,
    /// COMMAND as found on PATH at startup, until the first spawn takes it; every later one
    /// looks it up afresh (a rebuilt binary is what a restart runs).
    found: Option<std::path::PathBuf>,
}

/// The core's view of the configuration.
pub fn settings(
    config: &Config,
    reaper: bool,
    job_control: bool,
    stream_listeners: bool,
    steering: bool,
) -> Settings {
    Settings {
        policy: config.policy.clone(),
        pre_stop: config.pre_stop.is_some(),
        post_stop: config.post_stop.is_some(),
        workers: config.workers.count,
        // More may not be unavailable than there are.
        max_unavailable: config.max_unavailable.min(config.workers.count),
        steering,
        health: config.health.as_ref().map(|h| core::HealthSettings {
            command: matches!(h.check, crate::config::HealthCheck::Command(_)),
            interval: h.interval,
            timeout: h.timeout,
            retries: h.retries,
            start_period: h.start_period,
        }),
        max_memory: config.max_memory.map(|m| m.0),
        max_lifetime: config.max_lifetime.map(|m| m.0),
        watch: config.watch.as_ref().map(|w| core::WatchSettings {
            build: w.build.is_some(),
        }),
        delivery: match (config.process_group, config.kill_mode) {
            (false, _) => Delivery::NoGroup,
            (true, crate::policy::KillMode::Mixed) => Delivery::Mixed,
            (true, crate::policy::KillMode::Group) => Delivery::Group,
        },
        reaper,
        job_control,
        stream_listeners,
        stream_names: Vec::new(),
        main_pid: std::process::id() as i32,
        log_level: config.log_level,
    }
}

impl<'a> Supervisor<'a> {
    pub fn new(setup: Setup<'a>) -> Supervisor<'a> {
        let job_control = setup.terminal.is_some() && !setup.pid1;
        let steering = match steering::Steering::new(setup.listeners, setup.steering) {
            Ok(steering) => steering,
            Err(e) => {
                warn!(
                    Subject::NONE,
                    "steering is off, every generation shares the listeners: {e}"
                );
                steering::Steering::new(setup.listeners, false)
                    .expect("without steering no group is made, so nothing can fail")
            }
        };
        let stream_listeners = setup.listeners.iter().any(|l| l.is_stream());
        // --health-http probes the first stream listener.
        let probe = match &setup.config.health {
            Some(crate::config::Health {
                check: crate::config::HealthCheck::Http(path),
                timeout,
                ..
            }) => setup
                .listeners
                .iter()
                .find(|l| l.is_stream())
                .and_then(|l| crate::health::Target::of(&l.bound))
                .map(|target| (path.clone(), target, *timeout)),
            _ => None,
        };
        let triggers = triggers::Triggers::new(setup.watch, probe);
        let mut core_settings = settings(
            setup.config,
            setup.reaper,
            job_control,
            stream_listeners,
            steering.enabled(),
        );
        core_settings.stream_names = setup
            .listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_stream())
            .map(|(i, l)| format!("{} (fd {})", l.bound, 3 + i))
            .collect();
        let core = Core::new(core_settings);
        let io = Executor {
            cfg: setup.config,
            listeners: setup.listeners,
            env: setup.env,
            signals: setup.signals,
            ignored_signals: setup.ignored_signals,
            upstream: setup.upstream,
            terminal: setup.terminal,
            pid1: setup.pid1,
            proc_is_ours: setup.proc_is_ours,
            own_pid: std::process::id() as i32,
            held: BTreeMap::new(),
            timer: None,
            signal_streak: 0,
            init_leads_session: None,
            notify_dir: None,
            notify_abstract: false,
            status_asked: Vec::new(),
            reaped: std::collections::VecDeque::new(),
            steering,
            triggers,
            found: Some(setup.executable),
            control: match control::Server::bind() {
                Ok(server) => Some(server),
                Err(e) => {
                    warn!(
                        Subject::NONE,
                        "graceful-run ctl will not reach this instance: cannot bind its socket: {e}"
                    );
                    None
                }
            },
            started: Instant::now(),
        };
        Supervisor { core, io }
    }

    /// Runs the service until everything is over; returns how graceful-run should end.
    pub async fn run(mut self) -> Outcome {
        let mut event = Event::Start;
        let outcome = loop {
            if let Some(outcome) = driver::dispatch(&mut self.core, &mut self.io, event) {
                break outcome;
            }
            event = loop {
                if let Some(event) = self.io.next_event().await {
                    break event;
                }
                // Nothing for the core: a status request, answered from its snapshot.
                self.io.answer_status(&self.core.snapshot());
            };
        };
        self.io.reclaim_terminal();
        // The signals stay blocked and their signalfd open until the process ends: a signal
        // that arrives while socket and pid files are removed waits, unread, instead of
        // killing graceful-run half-way.
        std::mem::forget(self.io.signals);
        outcome
    }
}

impl Executor<'_> {
    /// Waits for the next thing that happens; None when it was nothing for the core (a status
    /// request answered here, a datagram for a worker already gone).
    async fn next_event(&mut self) -> Option<Event> {
        if let Some(event) = self.pending_reap() {
            return Some(event);
        }
        let wake = {
            let held = &self.held;
            let control = &mut self.control;
            let signals = &mut self.signals;
            let timer = &mut self.timer;
            let streak = &mut self.signal_streak;
            let mut triggers = std::pin::pin!(self.triggers.next(&mut self.steering));
            let mut polls = 0u32;
            std::future::poll_fn(move |cx| {
                polls += 1;
                // Signals first (a signal's latency to the command is what users see):
                // when one wakes the loop, nothing else is polled before its `kill`.
                // Unless signals were taken back to back STREAK times without the loop
                // ever sleeping: then the other sources get the first look once, so that a
                // flood of signals cannot starve them (deadlines are safe either way, the
                // core handles whatever is due at every step).
                let fair = *streak >= SIGNAL_STREAK;
                if !fair && let Poll::Ready(received) = signals.poll_next(cx) {
                    // A child's exit goes behind a datagram already queued: one of its own
                    // processes may have sent it before exiting (READY=1, then exit), and the
                    // core must learn them in that order. (Read from the readiness the
                    // reactor saw, with no system call: the datagram's came before the
                    // SIGCHLD's.)
                    if received.signal == Signal::CHLD
                        && let Poll::Ready((worker, message)) = poll_notify(held, cx)
                    {
                        signals.put_back(received);
                        return Poll::Ready(Wake::Notify(worker, message));
                    }
                    *streak = if polls == 1 { *streak + 1 } else { 0 };
                    return Poll::Ready(Wake::Signal(received));
                }
                *streak = 0;
                if let Poll::Ready((worker, message)) = poll_notify(held, cx) {
                    return Poll::Ready(Wake::Notify(worker, message));
                }
                if let Poll::Ready((client, request)) = poll_control(control, cx) {
                    return Poll::Ready(Wake::Control(client, request));
                }
                if let Poll::Ready(event) = triggers.as_mut().poll(cx) {
                    return Poll::Ready(Wake::Trigger(event));
                }
                if let Some(sleep) = timer
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Wake::Timer);
                }
                if fair && let Poll::Ready(received) = signals.poll_next(cx) {
                    return Poll::Ready(Wake::Signal(received));
                }
                Poll::Pending
            })
            .await
        };
        match wake {
            Wake::Signal(received) => self.on_signal(received),
            Wake::Notify(worker, message) => self.on_notify(worker, message),
            Wake::Control(client, request) => self.on_control(client, request),
            Wake::Timer => match self.queued_notify() {
                // Before the core judges a deadline: a datagram already queued came before it
                // (the reactor may not have looked at the socket yet). The timer stays armed
                // and fires again at once if the core still wants it.
                Some((worker, message)) => self.on_notify(worker, message),
                None => Some(Event::Timer),
            },
            Wake::Trigger(event) => Some(event),
        }
    }

    /// Sets the timer to the core's deadline (`None`: no timer).
    fn arm(&mut self, deadline: Option<Instant>) {
        match (deadline, &mut self.timer) {
            (None, timer) => *timer = None,
            (Some(deadline), Some(sleep)) => sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline)),
            (Some(deadline), timer) => {
                *timer = Some(Box::pin(tokio::time::sleep_until(
                    tokio::time::Instant::from_std(deadline),
                )));
            }
        }
    }

    /// A datagram already queued on any worker's NOTIFY_SOCKET.
    fn queued_notify(&self) -> Option<(WorkerId, Message)> {
        self.held.iter().find_map(|(worker, held)| {
            let message = held.notify.as_ref()?.try_message()?;
            Some((*worker, message))
        })
    }

    fn on_signal(&mut self, received: Received) -> Option<Event> {
        let signal = received.signal;
        if signal == Signal::CHLD {
            // Every exited child, reported as events owed before anything else.
            let harvest = reaper::reap();
            self.reaped.extend(harvest.events);
            return self.pending_reap();
        }
        let origin = match received.sender {
            Some(pid) if pid == self.own_pid => Origin::Myself,
            _ if received.from_kernel => Origin::Kernel,
            // The sender's group tells the command's own processes apart (the core asks for
            // more when it needs it).
            Some(pid) => Origin::Process {
                pid,
                pgid: if self.cfg.process_group && pid > 0 {
                    self.group_of(pid)
                } else {
                    None
                },
            },
            None => Origin::Process { pid: 0, pgid: None },
        };
        Some(Event::Signal { signal, origin })
    }

    /// The process group of a signal's sender, which tells the core whether a process of the
    /// command sent it (such a signal is never forwarded back to the group that sent it). It
    /// must be read before the signal is forwarded, so it is on the path of every forwarded
    /// signal: one `getpgid`, the only system call there besides the signalfd's `read` and
    /// the `kill`.
    ///
    /// Skipped only where the answer is known for certain without asking:
    /// - no sender pid (the kernel, a sender outside graceful-run's pid namespace, whose
    ///   `ssi_pid` is 0, or a code that carries no sender): the caller asks nothing;
    /// - PID 1 leading its own session (systemd, a container runtime's init, which all
    ///   `setsid`): PID 1 is never reused while the namespace lives (the namespace, and
    ///   graceful-run in it, end with it), and a session leader's group is its own pid for
    ///   the rest of its life (`setpgid` refuses to move a session leader, `setsid` refuses a
    ///   group leader), so once seen leading its session, PID 1's group is 1 for good.
    ///   One `getsid` the first time PID 1 sends a signal.
    ///
    /// Not skipped for graceful-run's own parent, tempting as it is (the parent sends most
    /// signals outside containers): a cached parent pid can be stale, the parent having died
    /// and its pid been reused by a process of the command, and no event tells so without a
    /// system call per signal (a pidfd's exit readiness can reach the loop after a signal the
    /// new owner of the pid sent, both in one signalfd read; `PR_SET_PDEATHSIG`'s signal is
    /// dequeued by number, not in order); and a parent in graceful-run's session may
    /// `setpgid` itself into a worker's group. `getppid` would cost what `getpgid` does.
    fn group_of(&mut self, pid: i32) -> Option<i32> {
        if pid == 1 {
            let leads = *self.init_leads_session.get_or_insert_with(|| {
                nix::unistd::getsid(Some(Pid::from_raw(1))) == Ok(Pid::from_raw(1))
            });
            if leads {
                return Some(1);
            }
        }
        nix::unistd::getpgid(Some(Pid::from_raw(pid)))
            .ok()
            .map(Pid::as_raw)
    }

    /// The next reap collected and not yet reported.
    fn pending_reap(&mut self) -> Option<Event> {
        let (pid, status) = self.reaped.pop_front()?;
        Some(Event::Reaped {
            pid: pid.as_raw(),
            status,
        })
    }

    /// A request from `graceful-run ctl`: a status is answered by the loop from the core's
    /// snapshot (a read, no decision); a restart or a stop goes to the core.
    fn on_control(
        &mut self,
        client: control::ClientId,
        request: control::Request,
    ) -> Option<Event> {
        let command = match request {
            control::Request::Status { .. } => {
                self.status_asked.push(client);
                return None;
            }
            control::Request::Restart { wait } => core::Command::Restart { wait },
            control::Request::Stop { wait } => core::Command::Stop { wait },
            control::Request::Scale { workers } => core::Command::Scale { workers },
        };
        let (pid, uid) = self
            .control
            .as_ref()
            .and_then(|server| server.peer(client))
            .unwrap_or((0, u32::MAX));
        Some(Event::Control {
            client: client.number(),
            peer: core::Peer { pid, uid },
            command,
        })
    }

    /// Answers the status requests that came in, from the core's snapshot.
    fn answer_status(&mut self, snapshot: &core::Snapshot) {
        if self.status_asked.is_empty() {
            return;
        }
        let report = self.status_report(snapshot);
        for client in std::mem::take(&mut self.status_asked) {
            if let Some(server) = &mut self.control {
                server.reply(client, &control::Reply::Status(report.clone()), true);
            }
        }
    }

    fn status_report(&self, snapshot: &core::Snapshot) -> control::StatusReport {
        let now = Instant::now();
        let several = snapshot.workers.iter().any(|w| w.slot > 0) || self.cfg.workers.count > 1;
        let generations = snapshot
            .workers
            .iter()
            .map(|w| control::GenerationStatus {
                number: w.generation,
                worker: several.then_some(w.slot),
                pid: w.pid,
                state: match w.role {
                    core::Role::Starting | core::Role::Incoming => {
                        control::GenerationState::Starting
                    }
                    core::Role::Serving | core::Role::Draining => control::GenerationState::Ready,
                    core::Role::Retiring => control::GenerationState::Draining,
                    core::Role::Stopping => control::GenerationState::Stopping,
                },
                in_state_for: now.saturating_duration_since(w.since),
                ready_by: w.ready_by.map(str::to_string),
                status: self
                    .held
                    .get(&w.id)
                    .and_then(|h| h.notify.as_ref())
                    .and_then(NotifySocket::last_status),
                memory: w.memory,
                healthy: w.healthy,
                queue: w.member.and_then(|m| self.steering.queue_len(m)),
                busy: w.activity.map(|a| a.busy),
                idle: w.activity.map(|a| a.idle),
            })
            .collect();
        let listeners = self
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| control::ListenerStatus {
                fd: 3 + i as i32,
                address: l.bound.to_string(),
                name: l.fd_name().to_string(),
                shared_because: match (&l.bound, self.cfg.handover) {
                    (crate::listen::Bound::Tcp(_), crate::cli::Handover::Shared) => {
                        Some("--handover shared".to_string())
                    }
                    _ => self.steering.shared_because(self.listeners, i),
                },
            })
            .collect();
        let t = snapshot.triggered;
        let triggered = [
            ("unhealthy", t.unhealthy),
            ("watchdog", t.watchdog),
            ("memory", t.memory),
            ("lifetime", t.lifetime),
            ("changes", t.changes),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
        control::StatusReport {
            pid: self.own_pid as u32,
            uptime: now.saturating_duration_since(self.started),
            generations,
            listeners,
            workers: several.then_some(snapshot.slots),
            restarts: snapshot.restarts,
            last_exit: snapshot.last_exit.map(|exit| exit.to_string()),
            last_failure: snapshot.last_failure.map(|f| f.to_string()),
            triggered,
        }
    }

    /// A datagram from a worker's NOTIFY_SOCKET; the socket already refused senders of other
    /// uids.
    fn on_notify(&mut self, worker: WorkerId, message: Message) -> Option<Event> {
        let held = self.held.get(&worker)?;
        debug!(
            Subject::generation(held.generation, held.pid.as_raw()),
            "notify from {}: {:?}",
            message
                .sender_pid
                .map_or("an unknown pid".to_string(), |pid| format!("pid {pid}")),
            message.fields
        );
        Some(Event::Notify {
            worker,
            fields: message.fields,
        })
    }

    /// Answers one of the core's questions; the answer (after any reaps it must come behind)
    /// goes into `answers`.
    fn answer(&mut self, ticket: core::Ticket, question: Question, answers: &mut Answers) {
        let answer = match question {
            Question::Spawn {
                worker,
                generation,
                slot,
                reset_nonblocking,
                notify,
                member,
            } => Answer::Spawned(self.spawn_worker(
                worker,
                generation,
                slot,
                reset_nonblocking,
                notify,
                member,
            )),
            Question::RunHook {
                kind,
                main_pid,
                exit,
            } => Answer::HookStarted(self.start_hook(kind, main_pid, exit)),
            Question::CheckGroup { pgid, .. } => Answer::Group {
                alive: process::group_alive(Pid::from_raw(pgid)),
            },
            Question::CheckLeftovers => {
                // Reparenting sends no SIGCHLD: collect what exited meanwhile first, and report
                // it before the answer.
                let harvest = reaper::reap();
                for (pid, status) in harvest.events {
                    answers.push(Event::Reaped {
                        pid: pid.as_raw(),
                        status,
                    });
                }
                let can_find = self.pid1 || self.proc_is_ours;
                if harvest.children_left && !can_find {
                    warn!(
                        Subject::NONE,
                        "leaving behind processes that cannot be found (/proc is not this pid namespace's)"
                    );
                }
                Answer::Leftovers {
                    found: harvest.children_left && can_find,
                }
            }
            Question::Probe {
                worker,
                pgid,
                member,
                diagnose,
            } => {
                let (missing, blind, accepted) = self.probe(Pid::from_raw(pgid), member);
                let _ = worker;
                let itself = (diagnose && !missing.is_empty())
                    .then(|| {
                        let scope = steering::scope(self.cfg.process_group, pgid);
                        let ours: Vec<u64> = self
                            .steering
                            .stream_inodes(self.listeners, member)
                            .into_iter()
                            .map(|(wanted, _)| wanted.inode)
                            .collect();
                        crate::observe::own_listener(scope, &ours)
                    })
                    .flatten();
                Answer::Probed {
                    missing,
                    blind,
                    itself,
                    accepted,
                }
            }
            Question::Observe {
                worker,
                pgid,
                member,
            } => {
                let scope = steering::scope(self.cfg.process_group, pgid);
                Answer::Observed(self.steering.observe(worker, scope, member))
            }
            Question::StartCheck {
                worker,
                pid,
                slot,
                member,
            } => Answer::CheckStarted(self.start_check(worker, pid, slot, member)),
            Question::StartBuild => Answer::BuildStarted(self.start_build()),
            Question::Descends { pid } => {
                Answer::Descends(self.proc_is_ours && process::descends_from(pid, self.own_pid))
            }
        };
        answers.push(Event::Answer { ticket, answer });
    }

    /// Spawns a worker on the sockets: its pid, or the exit code its failure stands for.
    fn spawn_worker(
        &mut self,
        worker: WorkerId,
        generation: GenId,
        slot: u32,
        reset_nonblocking: bool,
        notify: NotifyNeed,
        member: Option<u32>,
    ) -> Result<Spawned, i32> {
        let executable = match self.found.take() {
            Some(executable) => executable,
            None => {
                let program = &self.cfg.command[0];
                let path = std::env::var_os("PATH");
                spawn::look_up(program, path.as_deref()).map_err(|e| {
                    error!(Subject::NONE, "gen {generation}: {e}");
                    e.exit_code()
                })?
            }
        };
        // Only when no process of the command is alive: an event-loop server sets O_NONBLOCK
        // on the shared listener, and clearing it under a sibling that still serves makes that
        // sibling block in accept(2) whenever another process won the connection.
        if reset_nonblocking && let Err(e) = self.listeners.reset_blocking() {
            warn!(Subject::NONE, "cannot reset O_NONBLOCK on the sockets: {e}");
        }
        let mut notify_failed = None;
        let socket = match notify {
            NotifyNeed::None => None,
            NotifyNeed::Wanted => match self.bind_notify(worker) {
                Ok(socket) => Some(socket),
                Err(e) => {
                    notify_failed = Some(e.to_string());
                    None
                }
            },
            NotifyNeed::Required => match self.bind_notify(worker) {
                Ok(socket) => Some(socket),
                Err(e) => {
                    error!(
                        Subject::NONE,
                        "gen {generation}: cannot create its NOTIFY_SOCKET: {e}"
                    );
                    return Err(crate::exit::FAILURE);
                }
            },
        };
        let mut env = self.env.for_generation(
            self.listeners,
            generation,
            slot,
            socket.as_ref().map(NotifySocket::address),
            &self.cfg.compat,
        );
        // --watchdog, as systemd's WatchdogSec: the period here, the pid written by spawn.
        let watchdog = self.cfg.policy.watchdog.filter(|_| socket.is_some());
        if let Some(period) = watchdog {
            env.push(crate::spawn::env_entry(
                "WATCHDOG_USEC",
                period.as_micros().to_string(),
            ));
        }
        let (fds, shared) = self.steering.fds(self.listeners, member).map_err(|e| {
            error!(
                Subject::NONE,
                "gen {generation}: cannot open a listener of its own: {e}"
            );
            crate::exit::FAILURE
        })?;
        let terminal = self.terminal_for_new_generation();
        let plan = Plan {
            executable: &executable,
            argv: &self.cfg.command,
            env,
            listen_pid: self.cfg.listen_pid && !fds.is_empty(),
            watchdog_pid: watchdog.is_some(),
            fds: &fds,
            new_process_group: self.cfg.process_group,
            terminal,
            credentials: self.cfg.user.as_ref(),
            ignored_signals: &self.ignored_signals,
        };
        let pid = spawn::spawn(&plan).map_err(|e| {
            error!(
                Subject::NONE,
                "gen {generation}: {}: {e}",
                executable.display()
            );
            e.exit_code()
        })?;
        // Issue 15: only the worker's own processes may notify for it; and once one has
        // started, the directories killed instances left behind are swept.
        let mut socket = socket;
        if let Some(socket) = &mut socket {
            socket.accept_from(crate::notify::Members {
                leader: pid.as_raw(),
                tree: self.proc_is_ours,
            });
        }
        if let Some(dir) = &mut self.notify_dir {
            dir.sweep_once();
        }
        self.held.insert(
            worker,
            Held {
                generation,
                pid,
                notify: socket,
            },
        );
        Ok(Spawned {
            random: crate::random::number(),
            pid: pid.as_raw(),
            executable: executable.display().to_string(),
            notify_failed,
            shared,
        })
    }

    /// A NOTIFY_SOCKET for `worker`, in the private directory made with the first one.
    /// Only root, graceful-run's own user and --user's may send to it.
    /// Falls back to an abstract socket for good when the directory cannot be made.
    fn bind_notify(&mut self, worker: WorkerId) -> std::io::Result<NotifySocket> {
        let allowed: Vec<u32> = [0, nix::unistd::geteuid().as_raw()]
            .into_iter()
            .chain(self.cfg.user.as_ref().map(|u| u.uid))
            .collect();
        if self.notify_dir.is_none() && !self.notify_abstract {
            match crate::notify::NotifyDir::create(self.cfg.user.as_ref()) {
                Ok(dir) => self.notify_dir = Some(dir),
                Err(e) => {
                    crate::info!(
                        Subject::NONE,
                        "NOTIFY_SOCKET in the abstract namespace: no private directory ({e})"
                    );
                    self.notify_abstract = true;
                }
            }
        }
        match &self.notify_dir {
            Some(dir) => dir.bind(worker, &allowed),
            None => NotifySocket::bind_abstract(worker, &allowed),
        }
    }

    /// Starts a health check of a worker: `--health-cmd` as a process of its own group (its
    /// standard output is dropped: a check every few seconds would fill the log; its errors
    /// show), or a `--health-http` probe.
    fn start_check(
        &mut self,
        worker: WorkerId,
        pid: i32,
        slot: u32,
        member: Option<u32>,
    ) -> core::CheckStart {
        let Some(health) = &self.cfg.health else {
            return core::CheckStart::Failed("no health check is configured".into());
        };
        match &health.check {
            crate::config::HealthCheck::Http(_) => {
                self.triggers.probe(worker, member, &mut self.steering);
                core::CheckStart::Probe
            }
            crate::config::HealthCheck::Command(command) => {
                let script = format!("exec >/dev/null\n{command}");
                let extra = [
                    ("MAINPID", pid.to_string()),
                    ("GRACEFUL_RUN_WORKER", slot.to_string()),
                ];
                match self.run_shell(&script, &extra, true) {
                    Ok(pid) => core::CheckStart::Process(pid),
                    Err(e) => core::CheckStart::Failed(format!("cannot run --health-cmd: {e}")),
                }
            }
        }
    }

    /// Starts `--build`, its output shown as it comes.
    fn start_build(&mut self) -> Option<i32> {
        let command = self.cfg.watch.as_ref()?.build.clone()?;
        match self.run_shell(&command, &[], true) {
            Ok(pid) => Some(pid),
            Err(e) => {
                warn!(Subject::NONE, "cannot run --build: {e}");
                None
            }
        }
    }

    /// `sh -c script` in a process group of its own, as `--user` when given.
    fn run_shell(
        &self,
        script: &str,
        extra: &[(&str, String)],
        new_process_group: bool,
    ) -> Result<i32, spawn::SpawnError> {
        let argv = ["sh".into(), "-c".into(), script.into()];
        let plan = Plan {
            executable: std::path::Path::new("/bin/sh"),
            argv: &argv,
            env: self.env.for_hook(extra),
            listen_pid: false,
            watchdog_pid: false,
            fds: &[],
            new_process_group,
            terminal: None,
            credentials: self.cfg.user.as_ref(),
            ignored_signals: &self.ignored_signals,
        };
        spawn::spawn(&plan).map(|pid| pid.as_raw())
    }

    fn start_hook(
        &mut self,
        kind: HookKind,
        main_pid: Option<i32>,
        exit: Option<crate::exit::ChildExit>,
    ) -> Option<i32> {
        let command = match kind {
            HookKind::PreStop => self.cfg.pre_stop.as_deref(),
            HookKind::PostStop => self.cfg.post_stop.as_deref(),
        }?;
        let mut extra = Vec::new();
        if let Some(pid) = main_pid {
            extra.push(("MAINPID", pid.to_string()));
        }
        if let Some(exit) = exit {
            extra.push(("EXIT_CODE", exit.kind().to_string()));
            extra.push(("EXIT_STATUS", exit.status_text()));
        }
        let argv = ["sh".into(), "-c".into(), command.into()];
        let plan = Plan {
            executable: std::path::Path::new("/bin/sh"),
            argv: &argv,
            env: self.env.for_hook(&extra),
            listen_pid: false,
            watchdog_pid: false,
            fds: &[],
            new_process_group: true,
            terminal: None,
            credentials: self.cfg.user.as_ref(),
            ignored_signals: &self.ignored_signals,
        };
        match spawn::spawn(&plan) {
            Ok(pid) => Some(pid.as_raw()),
            Err(e) => {
                warn!(Subject::NONE, "cannot run the {} hook: {e}", kind.flag());
                None
            }
        }
    }

    fn send(&mut self, target: Target, signal: Signal) {
        let result = match target {
            Target::Leader { pid, .. } => crate::signal::send(Pid::from_raw(pid), signal),
            Target::Group { pgid, .. } | Target::Hook { pid: pgid } => {
                crate::signal::send(Pid::from_raw(-pgid), signal)
            }
            Target::Leftovers => {
                self.signal_leftovers(signal);
                Ok(())
            }
        };
        if let Err(errno) = result
            && errno != nix::errno::Errno::ESRCH
        {
            warn!(Subject::NONE, "cannot send {signal}: {}", errno.desc());
        }
    }

    /// Signals every child of graceful-run (as PID 1: every process of the namespace).
    fn signal_leftovers(&self, signal: Signal) {
        if self.pid1 {
            // kill(-1) from PID 1 reaches every process of the namespace except itself.
            let _ = crate::signal::send(Pid::from_raw(-1), signal);
            return;
        }
        for pid in process::children_of_self() {
            debug!(
                Subject::pid(pid.as_raw()),
                "sending {signal} to a leftover process"
            );
            let _ = crate::signal::send(pid, signal);
        }
    }

    /// The stream listeners no process of the worker waits on yet (their names), from /proc:
    /// see `accepting`; why its processes could not be seen, when they could not; and
    /// whether some listener was seen only through a connection accepted from it (a shared
    /// one). The one look graceful-run takes without an event, and only while a worker
    /// starts (the core backs it off from `core::worker::PROBE_FIRST` to `PROBE_MAX`). It
    /// runs off this thread, bounded (`accepting`).
    fn probe(
        &self,
        pgid: Pid,
        member: Option<u32>,
    ) -> (Vec<String>, Option<accepting::Blind>, bool) {
        let scope = steering::scope(self.cfg.process_group, pgid.as_raw());
        let stream_listeners = self.steering.stream_inodes(self.listeners, member);
        let wanted: Vec<accepting::Wanted> = stream_listeners.iter().map(|(w, _)| *w).collect();
        let (seen, blind) = match accepting::look(scope, &wanted) {
            Ok(seen) => (seen, None),
            Err(blind) => (accepting::Seen::default(), Some(blind)),
        };
        let missing: Vec<String> = stream_listeners
            .into_iter()
            .filter(|(w, _)| !seen.has(w.inode))
            .map(|(_, name)| name)
            .collect();
        let accepted = missing.is_empty() && !seen.accepted.is_empty();
        (missing, blind, accepted)
    }

    fn upstream_send(&self, message: &core::Upstream) {
        let Some(upstream) = &self.upstream else {
            return;
        };
        let text = match message {
            core::Upstream::Ready { main_pid } => format!("READY=1\nMAINPID={main_pid}"),
            // MONOTONIC_USEC goes with RELOADING=1 (systemd's Type=notify-reload wants it).
            core::Upstream::Reloading => {
                format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec())
            }
            core::Upstream::Reloaded => "READY=1\nERRNO=0".to_string(),
            core::Upstream::ReloadFailed { failure, ready } => format!(
                "{}STATUS=restart failed: {failure}\nERRNO={}",
                if *ready { "READY=1\n" } else { "" },
                failure.errno()
            ),
            core::Upstream::Stopping => "STOPPING=1".to_string(),
            core::Upstream::Status(status) => format!("STATUS={status}"),
            core::Upstream::ExtendTimeout { usec } => format!("EXTEND_TIMEOUT_USEC={usec}"),
        };
        if let Err(e) = upstream.send(&text) {
            debug!(Subject::NONE, "cannot notify the supervisor: {}", e.desc());
        }
    }
}

impl driver::World for Executor<'_> {
    fn now(&mut self) -> Instant {
        Instant::now()
    }

    fn perform(&mut self, action: Action, answers: &mut Answers) {
        match action {
            Action::Log {
                level,
                subject,
                text,
            } => log::write(level, subject, format_args!("{text}")),
            Action::Ask { ticket, question } => self.answer(ticket, question, answers),
            Action::Signal { target, signal } => self.send(target, signal),
            Action::GiveTerminal { pgid } => self.give_terminal(Pid::from_raw(pgid)),
            Action::StopSelf => self.stop_self(),
            Action::Release { worker } => {
                self.held.remove(&worker);
                self.steering.release(worker);
            }
            Action::Steer { members } => self.steering.steer(&members),
            Action::SampleMemory { workers } => self.triggers.sample_memory(workers),
            Action::CloseListeners => {
                if !self.listeners.is_closed() {
                    self.listeners.close();
                    self.steering.close();
                    debug!(
                        Subject::NONE,
                        "closed graceful-run's copies of the listening sockets"
                    );
                }
            }
            Action::Upstream(message) => self.upstream_send(&message),
            Action::ArmTimer(deadline) => self.arm(deadline),
            Action::Reply {
                client,
                reply,
                last,
            } => {
                if let Some(server) = &mut self.control {
                    let reply = match reply {
                        core::Reply::Accepted => control::Reply::Accepted,
                        core::Reply::Done => control::Reply::Done,
                        core::Reply::Failed(why) => control::Reply::Failed(why.to_string()),
                    };
                    server.reply(control::ClientId::from_number(client), &reply, last);
                }
            }
            // The dispatch loop keeps the exit.
            Action::Exit(_) => {}
        }
        // Found by the look at a spawn or a steering change: told after that one's answer.
        if let Some(what) = self.steering.take_strangers() {
            answers.push(Event::Strangers { what });
        }
    }
}

/// What woke the loop.
enum Wake {
    Signal(Received),
    Notify(WorkerId, Message),
    Control(control::ClientId, control::Request),
    Timer,
    Trigger(Event),
}

fn poll_control(
    control: &mut Option<control::Server>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<(control::ClientId, control::Request)> {
    match control {
        Some(server) => server.poll_request(cx),
        None => std::task::Poll::Pending,
    }
}

fn poll_notify(
    held: &BTreeMap<WorkerId, Held>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<(WorkerId, Message)> {
    for (generation, held) in held {
        if let Some(socket) = &held.notify
            && let std::task::Poll::Ready(message) = socket.poll_message(cx)
        {
            return std::task::Poll::Ready((*generation, message));
        }
    }
    std::task::Poll::Pending
}

/// Signals in a row, each already queued when the loop looked, before the other sources get
/// the first look once.
const SIGNAL_STREAK: u32 = 16;
