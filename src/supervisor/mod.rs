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

pub mod core;
#[cfg(test)]
mod proptest;
mod terminal;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::RawFd;
use std::time::Instant;

use nix::unistd::Pid;

use self::core::{Action, Core, Delivery, Event, GenId, HookKind, Origin, Settings, Target};
use crate::cli::Ready;
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
}

/// What the executor holds for a generation the core knows.
struct Held {
    pid: Pid,
    notify: Option<NotifySocket>,
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
    proc_is_ours: bool,
    own_pid: i32,
    core: Core,
    held: BTreeMap<GenId, Held>,
    timer: Option<Instant>,
    /// `graceful-run ctl`'s socket; None when it could not be bound (the service runs on).
    control: Option<control::Server>,
    started: Instant,
    /// The inode and name of each stream listener, for `--ready accepting` and `auto`.
    stream_listeners: Vec<(u64, String)>,
    /// Holds the generations' NOTIFY_SOCKETs: made with the first one, removed when the
    /// supervisor is dropped. After `held`, so that the sockets go first.
    notify_dir: Option<crate::notify::NotifyDir>,
    /// No private directory could be made: generations get abstract sockets.
    notify_abstract: bool,
}

/// The core's view of the configuration.
pub fn settings(
    config: &Config,
    reaper: bool,
    job_control: bool,
    stream_listeners: bool,
) -> Settings {
    Settings {
        restart_signal: config.restart_signal,
        signal_map: config.signal_map.clone(),
        stop_signal: config.stop_signal,
        stop_timeout: config.stop_timeout,
        drain_delay: config.drain_delay,
        hook_timeout: config.hook_timeout,
        pre_stop: config.pre_stop.is_some(),
        post_stop: config.post_stop.is_some(),
        ready: config.ready,
        ready_timeout: config.ready_timeout,
        restart_policy: config.restart_policy,
        restart_delay: config.restart_delay,
        max_restarts: config.max_restarts,
        delivery: match (config.process_group, config.kill_mode) {
            (false, _) => Delivery::NoGroup,
            (true, crate::cli::KillMode::Mixed) => Delivery::Mixed,
            (true, crate::cli::KillMode::Group) => Delivery::Group,
        },
        reaper,
        job_control,
        stream_listeners,
        main_pid: std::process::id() as i32,
        log_level: config.log_level,
    }
}

impl<'a> Supervisor<'a> {
    pub fn new(setup: Setup<'a>) -> Supervisor<'a> {
        let job_control = setup.terminal.is_some() && !setup.pid1;
        let stream_listeners: Vec<(u64, String)> = setup
            .listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_stream())
            .filter_map(|(i, l)| {
                let inode = accepting::listener_inode(l.fd()?).ok()?;
                Some((inode, format!("{} (fd {})", l.bound, 3 + i)))
            })
            .collect();
        Supervisor {
            core: Core::new(settings(
                setup.config,
                setup.reaper,
                job_control,
                !stream_listeners.is_empty(),
            )),
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
            notify_dir: None,
            notify_abstract: false,
            stream_listeners,
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
        }
    }

    /// Runs the service until everything is over; returns how graceful-run should end.
    pub async fn run(mut self) -> Outcome {
        let mut queue = VecDeque::from([Event::Start]);
        let outcome = 'service: loop {
            while let Some(event) = queue.pop_front() {
                for action in self.core.step(Instant::now(), event) {
                    if let Some(outcome) = self.perform(action, &mut queue) {
                        break 'service outcome;
                    }
                }
            }
            let held = &self.held;
            let control = &mut self.control;
            let deadline = self.timer;
            let wake = tokio::select! {
                received = self.signals.next() => Wake::Signal(received),
                (generation, message) = std::future::poll_fn(|cx| poll_notify(held, cx)) => {
                    Wake::Notify(generation, message)
                }
                (client, request) = std::future::poll_fn(|cx| poll_control(control, cx)) => {
                    Wake::Control(client, request)
                }
                () = sleep_until(deadline), if deadline.is_some() => Wake::Timer,
            };
            match wake {
                Wake::Signal(received) => self.on_signal(received, &mut queue),
                Wake::Notify(generation, message) => {
                    if let Some(event) = self.on_notify(generation, message) {
                        queue.push_back(event);
                    }
                }
                Wake::Control(client, request) => {
                    if let Some(event) = self.on_control(client, request) {
                        queue.push_back(event);
                    }
                }
                Wake::Timer => queue.push_back(Event::Timer),
            }
        };
        self.reclaim_terminal();
        // The handlers stay installed until the process ends: a signal that arrives while
        // socket and pid files are removed is absorbed instead of killing graceful-run
        // half-way. (Dropping the receiver would also unregister every handler, one
        // copy-on-write update of signal-hook's registry each: a fifth of startup+exit work.)
        std::mem::forget(self.signals);
        outcome
    }

    fn on_signal(&mut self, received: Received, queue: &mut VecDeque<Event>) {
        let signal = received.signal;
        if signal == Signal::CHLD {
            self.reap(queue);
            return;
        }
        let origin = match received.sender {
            Some(pid) if pid == self.own_pid => Origin::Myself,
            _ if received.from_kernel => Origin::Kernel,
            Some(pid) => self.sender(pid, signal),
            None => Origin::Process {
                pid: 0,
                pgid: None,
                descendant: false,
            },
        };
        queue.push_back(Event::Signal { signal, origin });
    }

    /// What the core needs to tell the command's own signals from requests: the sender's
    /// group, and for the signals that decide something (TERM, INT, the restart signal) whether
    /// it descends from graceful-run, read from /proc. Other signals are only forwarded, and
    /// keep /proc out of their path.
    fn sender(&self, pid: i32, signal: Signal) -> Origin {
        let pgid = if self.cfg.process_group && pid > 0 {
            nix::unistd::getpgid(Some(Pid::from_raw(pid)))
                .ok()
                .map(Pid::as_raw)
        } else {
            None
        };
        let decides =
            matches!(signal, Signal::TERM | Signal::INT) || Some(signal) == self.cfg.restart_signal;
        let known = self
            .held
            .values()
            .any(|h| h.pid.as_raw() == pid || Some(h.pid.as_raw()) == pgid);
        let descendant = decides
            && !known
            && pid > 0
            && self.proc_is_ours
            && process::descends_from(pid, self.own_pid);
        Origin::Process {
            pid,
            pgid,
            descendant,
        }
    }

    /// Collects every exited child, as events for the core.
    fn reap(&mut self, queue: &mut VecDeque<Event>) -> bool {
        let harvest = reaper::reap();
        for (pid, status) in harvest.events {
            queue.push_back(Event::Reaped {
                pid: pid.as_raw(),
                status,
            });
        }
        harvest.children_left
    }

    /// A request from `graceful-run ctl`: a status is answered here from the core's snapshot
    /// (a read, no decision); a restart or a stop goes to the core.
    fn on_control(
        &mut self,
        client: control::ClientId,
        request: control::Request,
    ) -> Option<Event> {
        let command = match request {
            control::Request::Status { .. } => {
                let report = self.status_report();
                if let Some(server) = &mut self.control {
                    server.reply(client, &control::Reply::Status(report), true);
                }
                return None;
            }
            control::Request::Restart { wait } => core::Command::Restart { wait },
            control::Request::Stop { wait } => core::Command::Stop { wait },
        };
        Some(Event::Control {
            client: client.number(),
            pid: None,
            command,
        })
    }

    fn status_report(&self) -> control::StatusReport {
        let now = Instant::now();
        let snapshot = self.core.snapshot();
        let generations = snapshot
            .generations
            .iter()
            .map(|g| control::GenerationStatus {
                number: g.id,
                pid: g.pid,
                state: match g.role {
                    core::Role::Starting | core::Role::Incoming => {
                        control::GenerationState::Starting
                    }
                    core::Role::Serving | core::Role::Draining => control::GenerationState::Ready,
                    core::Role::Stopping => control::GenerationState::Stopping,
                },
                in_state_for: now.saturating_duration_since(g.since),
                ready_by: g.ready_by.map(str::to_string),
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
            })
            .collect();
        control::StatusReport {
            pid: self.own_pid as u32,
            uptime: now.saturating_duration_since(self.started),
            generations,
            listeners,
            restarts: snapshot.restarts,
            last_exit: snapshot.last_exit.map(|exit| exit.to_string()),
        }
    }

    /// A datagram from a generation's NOTIFY_SOCKET; the socket already refused senders of
    /// other uids.
    fn on_notify(&mut self, generation: GenId, message: Message) -> Option<Event> {
        let held = self.held.get(&generation)?;
        debug!(
            Subject::generation(generation, held.pid.as_raw()),
            "notify from {}: {:?}",
            message
                .sender_pid
                .map_or("an unknown pid".to_string(), |pid| format!("pid {pid}")),
            message.fields
        );
        Some(Event::Notify {
            generation,
            fields: message.fields,
        })
    }

    /// Carries out one action; answers the core's questions by queueing events. Returns the
    /// outcome when the action is the exit.
    fn perform(&mut self, action: Action, queue: &mut VecDeque<Event>) -> Option<Outcome> {
        match action {
            Action::Log {
                level,
                subject,
                text,
            } => log::write(level, subject, format_args!("{text}")),
            Action::Spawn {
                generation,
                reset_nonblocking,
            } => {
                let result = self.spawn_generation(generation, reset_nonblocking);
                queue.push_front(Event::Spawned { generation, result });
            }
            Action::Signal { target, signal } => self.send(target, signal),
            Action::GiveTerminal { pgid } => self.give_terminal(Pid::from_raw(pgid)),
            Action::StopSelf => self.stop_self(),
            Action::CheckGroup { generation, pgid } => {
                let alive = process::group_alive(Pid::from_raw(pgid));
                queue.push_front(Event::GroupChecked { generation, alive });
            }
            Action::CheckLeftovers => {
                // Reparenting sends no SIGCHLD: collect what exited meanwhile first.
                let mut reaped = VecDeque::new();
                let children_left = self.reap(&mut reaped);
                let can_find = self.pid1 || self.proc_is_ours;
                if children_left && !can_find {
                    warn!(
                        Subject::NONE,
                        "leaving behind processes that cannot be found (/proc is not this pid namespace's)"
                    );
                }
                let answer = Event::LeftoversChecked {
                    found: children_left && can_find,
                };
                queue.push_front(answer);
                for event in reaped.into_iter().rev() {
                    queue.push_front(event);
                }
            }
            Action::Probe { generation, pgid } => {
                let missing = self.probe(generation, Pid::from_raw(pgid));
                queue.push_front(Event::Probed {
                    generation,
                    missing,
                });
            }
            Action::RunHook {
                kind,
                main_pid,
                exit,
            } => {
                let pid = self.start_hook(kind, main_pid, exit);
                queue.push_front(Event::HookStarted { kind, pid });
            }
            Action::Release { generation } => {
                self.held.remove(&generation);
            }
            Action::CloseListeners => {
                if !self.listeners.is_closed() {
                    self.listeners.close();
                    debug!(
                        Subject::NONE,
                        "closed graceful-run's copies of the listening sockets"
                    );
                }
            }
            Action::Upstream(text) => self.upstream_send(&text),
            Action::ArmTimer(deadline) => self.timer = deadline,
            Action::Reply {
                client,
                answer,
                last,
            } => {
                if let Some(server) = &mut self.control {
                    let reply = match answer {
                        core::Answer::Accepted => control::Reply::Accepted,
                        core::Answer::Done => control::Reply::Done,
                        core::Answer::Failed(why) => control::Reply::Failed(why),
                    };
                    server.reply(control::ClientId::from_number(client), &reply, last);
                }
            }
            Action::Exit(outcome) => return Some(outcome),
        }
        None
    }

    /// Spawns generation `gen` on the shared sockets: its pid, or the exit code its failure
    /// stands for.
    fn spawn_generation(&mut self, generation: GenId, reset_nonblocking: bool) -> Result<i32, i32> {
        let program = &self.cfg.command[0];
        let path = std::env::var_os("PATH");
        let executable = spawn::look_up(program, path.as_deref()).map_err(|e| {
            error!(Subject::NONE, "gen {generation}: {e}");
            e.exit_code()
        })?;
        // Only when no generation is alive: an event-loop server sets O_NONBLOCK on the
        // shared listener, and clearing it under a sibling that still serves makes that
        // sibling block in accept(2) whenever another process won the connection.
        if reset_nonblocking && let Err(e) = self.listeners.reset_blocking() {
            warn!(Subject::NONE, "cannot reset O_NONBLOCK on the sockets: {e}");
        }
        let notify = match self.cfg.ready {
            Ready::Auto => match self.bind_notify(generation) {
                Ok(socket) => Some(socket),
                Err(e) => {
                    // Readiness is still seen when it waits on its sockets.
                    warn!(
                        Subject::NONE,
                        "gen {generation}: no NOTIFY_SOCKET ({e}): READY=1 cannot be heard"
                    );
                    None
                }
            },
            Ready::Notify => match self.bind_notify(generation) {
                Ok(socket) => Some(socket),
                Err(e) => {
                    error!(
                        Subject::NONE,
                        "gen {generation}: cannot create its NOTIFY_SOCKET: {e}"
                    );
                    return Err(crate::exit::FAILURE);
                }
            },
            Ready::After(_) | Ready::Accepting => None,
        };
        let env = self.env.for_generation(
            self.listeners,
            generation,
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
        let pid = spawn::spawn(&plan).map_err(|e| {
            error!(
                Subject::NONE,
                "gen {generation}: {}: {e}",
                executable.display()
            );
            e.exit_code()
        })?;
        crate::info!(
            Subject::generation(generation, pid.as_raw()),
            "started {}",
            executable.display()
        );
        self.held.insert(generation, Held { pid, notify });
        Ok(pid.as_raw())
    }

    /// A NOTIFY_SOCKET for `generation`, in the private directory made with the first one.
    /// Only root, graceful-run's own user and --user's may send to it.
    /// Falls back to an abstract socket for good when the directory cannot be made.
    fn bind_notify(&mut self, generation: GenId) -> std::io::Result<NotifySocket> {
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
            Some(dir) => dir.bind(generation, &allowed),
            None => NotifySocket::bind_abstract(generation, &allowed),
        }
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

    /// The stream listeners no process of the generation waits on yet (their names), from
    /// /proc: see `accepting`. The one look graceful-run takes without an event, and only
    /// while a generation starts (the core backs it off from 1 ms to 50 ms).
    fn probe(&self, generation: GenId, pgid: Pid) -> Vec<String> {
        let scope = if self.cfg.process_group {
            accepting::Scope::Group(pgid)
        } else {
            accepting::Scope::Tree(pgid)
        };
        let inodes: Vec<u64> = self.stream_listeners.iter().map(|(ino, _)| *ino).collect();
        let waited = match accepting::waiting_on(scope, &inodes) {
            Ok(waited) => waited,
            Err(e) => {
                debug!(
                    Subject::generation(generation, pgid.as_raw()),
                    "cannot see what it waits on: {e}"
                );
                Vec::new()
            }
        };
        self.stream_listeners
            .iter()
            .filter(|(ino, _)| !waited.contains(ino))
            .map(|(_, name)| name.clone())
            .collect()
    }

    fn upstream_send(&self, text: &str) {
        let Some(upstream) = &self.upstream else {
            return;
        };
        // MONOTONIC_USEC goes with RELOADING=1 (systemd's Type=notify-reload wants it): a
        // clock read, so the executor adds it.
        let text = if text.lines().any(|l| l == "RELOADING=1") {
            format!("{text}\nMONOTONIC_USEC={}", monotonic_usec())
        } else {
            text.to_string()
        };
        if let Err(e) = upstream.send(&text) {
            debug!(Subject::NONE, "cannot notify the supervisor: {}", e.desc());
        }
    }
}

/// What woke the loop.
enum Wake {
    Signal(Received),
    Notify(GenId, Message),
    Control(control::ClientId, control::Request),
    Timer,
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
    held: &BTreeMap<GenId, Held>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<(GenId, Message)> {
    for (generation, held) in held {
        if let Some(socket) = &held.notify
            && let std::task::Poll::Ready(message) = socket.poll_message(cx)
        {
            return std::task::Poll::Ready((*generation, message));
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
