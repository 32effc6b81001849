//! The supervisor's decisions, as a pure state machine.
//!
//! [`Core::step`] takes the time and one [`Event`] and returns the [`Action`]s to carry out.
//! It reads no clock, makes no syscall and spawns nothing: the executor (`supervisor/mod.rs`)
//! owns the processes, the sockets and the timer, and only translates between the world and
//! this module, through the dispatch loop in [`driver`] that the property test runs too. Unit
//! tests drive every transition here in microseconds (`../tests.rs`, `../proptest.rs`).
//!
//! # The states
//!
//! The service is in one [`State`]; each state is a type of its own, in a module of its own,
//! whose handlers consume it and return the next state, so a transition cannot forget a field
//! and an impossible combination cannot be written down:
//!
//! ```text
//!   Init ──start──▶ Running ──stop request, or every slot ended──▶ Ending ──▶ Done
//! ```
//!
//! - `Running` (`running.rs`): `--workers` slots, each starting, serving, backing off after a
//!   crash, or ended; and the rollouts that replace their workers on a restart.
//! - `Ending` (`ending.rs`): the stop sequence, each stage with its deadline inside the stop
//!   budget.
//!
//! A worker's own way, from the spawn to ready, is typed the same way (`worker.rs`), and so is
//! its way out once it is told to stop (`retire.rs`). Every deadline lives in the variant it
//! belongs to. Whatever is due is handled at the end of every step, whatever the event: the
//! timer's own event says nothing more. A deadline can pass while another event is on its way
//! (the executor's `select!` picks any ready branch); the event is taken first, as what it
//! reports happened before the step: a reaped pid in particular is already free for reuse, so
//! nothing may signal it on the strength of a deadline before the core knows it exited. The
//! timer is then armed at the earliest deadline left, always in the future, or disarmed: an
//! idle graceful-run sleeps.
//!
//! # Who gets signals
//!
//! As systemd's `KillMode=mixed` (and Docker, tini, Server::Starter): forwarded signals and the
//! stop signal go to each worker's main process, which passes them on to its own children as
//! it sees fit (a pre-fork master stops its workers gracefully; graceful-run signalling them
//! directly would cut their requests); at the stop timeout SIGKILL goes to the whole process
//! group; processes left in the group once the main process has exited get the stop signal,
//! then SIGKILL. `--kill-mode group` sends everything to the group instead, for commands that
//! do not pass signals on (a shell pipeline). No pid or group id that could have been reused
//! is ever signalled: see `retire.rs`.
//!
//! Signals that processes of the command send to graceful-run are not requests (a grace-style
//! server TERMs its parent once it serves): they are ignored, except the restart signal, which
//! a server may send to ask for its own restart. A sender is the command's when its pid or
//! process group is a worker's, or, for the signals that decide something (TERM, INT, the
//! restart signal), when it descends from graceful-run ([`Question::Descends`]).
//!
//! # The protocol with the executor
//!
//! A question ([`Action::Ask`]) is answered by [`Event::Answer`] with its ticket, before any
//! other event. Whatever waits for an answer holds the ticket; an answer nobody holds the
//! ticket of any more is dropped.

#[macro_use]
mod macros {
    /// Logs through an action; lines above `Settings::log_level` are not even formatted (the
    /// forwarding path logs at debug level for every signal).
    macro_rules! log {
        ($cx:expr, $level:ident, $subject:expr, $($arg:tt)*) => {
            if $crate::log::Level::$level <= $cx.s.log_level {
                let subject = $subject;
                $cx.log($crate::log::Level::$level, subject, format!($($arg)*))
            }
        };
    }
}

pub mod driver;
mod ending;
mod protocol;
mod retire;
mod running;
mod triggers;
mod worker;

use std::time::{Duration, Instant};

pub use ending::DUPLICATE_WINDOW;
pub use protocol::*;
pub use retire::KILL_GRACE;
pub use running::{BACKOFF_CAP, MAX_MIN_SERVED, STABLE_AFTER};
pub use worker::{PROBE_FAST_LOOKS, PROBE_FIRST, PROBE_MAX, PROBE_WARN_AFTER, PROBE_WARN_LOOKS};

use crate::exit::{ChildExit, NOT_READY, Outcome};
use crate::log::{Level, Subject};
use crate::signal::Signal;
use ending::Ending;
use running::{Running, SlotState};
use worker::{Incoming, Proc};

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for [`Event::Start`].
    Init,
    Running(Running),
    Ending(Ending),
    /// After [`Action::Exit`]; takes no more events.
    Done,
}

/// How a slot's last worker in the serving role ended: what graceful-run exits with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Exited(ChildExit),
    SpawnFailed(i32),
    NotReady,
}

impl End {
    fn success(self) -> bool {
        matches!(self, End::Exited(exit) if exit.success())
    }

    fn failure(self) -> Failure {
        match self {
            End::Exited(exit) => Failure::Exited(exit),
            End::SpawnFailed(_) => Failure::CannotStart,
            End::NotReady => Failure::NotReady,
        }
    }

    fn outcome(self) -> Outcome {
        match self {
            End::Exited(exit) => Outcome::Child(exit),
            End::SpawnFailed(code) => Outcome::Code(code),
            End::NotReady => Outcome::Code(NOT_READY),
        }
    }
}

/// Counters that decide nothing, for `ctl status`.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    restarts: u64,
    /// More than one worker ran at some point (`ctl scale`, SIGTTIN): lines name the worker.
    several: bool,
    last_exit: Option<ChildExit>,
    last_failure: Option<Failure>,
    triggered: Triggered,
}

#[derive(Clone, Copy, Debug)]
struct Ids {
    ticket: Ticket,
    worker: WorkerId,
    generation: GenId,
}

/// A signal whose sender is being looked up ([`Question::Descends`]).
#[derive(Clone, Copy, Debug)]
struct Classifying {
    ticket: Ticket,
    signal: Signal,
    pid: i32,
    pgid: Option<i32>,
}

/// What every handler works with: the settings, the step's time, and where actions go.
pub(super) struct Cx<'a> {
    s: &'a Settings,
    now: Instant,
    out: &'a mut Vec<Action>,
    ids: &'a mut Ids,
    stats: &'a mut Stats,
}

impl Cx<'_> {
    fn log(&mut self, level: Level, subject: Subject, text: String) {
        self.out.push(Action::Log {
            level,
            subject,
            text,
        });
    }

    fn push(&mut self, action: Action) {
        self.out.push(action);
    }

    fn send(&mut self, target: Target, signal: Signal) {
        self.out.push(Action::Signal { target, signal });
    }

    fn upstream(&mut self, message: Upstream) {
        self.out.push(Action::Upstream(message));
    }

    fn reply(&mut self, client: u64, reply: Reply, last: bool) {
        self.out.push(Action::Reply {
            client,
            reply,
            last,
        });
    }

    /// Asks the executor a question; the answer comes back with the ticket returned.
    fn ask(&mut self, question: Question) -> Ticket {
        self.ids.ticket += 1;
        let ticket = self.ids.ticket;
        self.out.push(Action::Ask { ticket, question });
        ticket
    }

    fn new_worker(&mut self) -> WorkerId {
        self.ids.worker += 1;
        self.ids.worker
    }

    fn new_generation(&mut self) -> GenId {
        self.ids.generation += 1;
        self.ids.generation
    }

    fn newest_generation(&self) -> GenId {
        self.ids.generation
    }

    /// Whether log lines name the worker index (several workers).
    fn several(&self) -> bool {
        self.s.workers > 1 || self.stats.several
    }

    /// The subject of a line about slot `i` as a whole.
    fn slot_subject(&self, i: usize) -> Subject {
        if self.several() {
            Subject {
                worker: Some(i as u32),
                ..Subject::NONE
            }
        } else {
            Subject::NONE
        }
    }
}

/// Sends a forwarded or stop signal to a worker whose main process is not reaped: to it, or
/// to its whole group under `--kill-mode group`.
fn signal_live(cx: &mut Cx, proc: &Proc, signal: Signal) {
    let target = if cx.s.delivery == Delivery::Group {
        Target::Group {
            worker: proc.id,
            pgid: proc.pid,
        }
    } else {
        Target::Leader {
            worker: proc.id,
            pid: proc.pid,
        }
    };
    cx.send(target, signal);
}

/// Forwards `signal`, as `--map-signal` translates it, to the workers in a role (`procs`)
/// and to the retiring ones whose processes may still get it; `delivered`: the terminal
/// already sent it to the command's group.
fn forward(
    cx: &mut Cx,
    signal: Signal,
    delivered: bool,
    procs: &[Proc],
    retirees: &retire::Retirees,
) {
    if delivered {
        log!(
            cx,
            Debug,
            Subject::NONE,
            "{signal} from the terminal already reached the command"
        );
        return;
    }
    let to = match cx.s.policy.signal_map.translate(signal) {
        crate::signal::Mapping::Drop => {
            log!(cx, Debug, Subject::NONE, "dropped {signal} (--map-signal)");
            return;
        }
        crate::signal::Mapping::To(to) => to,
    };
    for proc in procs {
        log!(
            cx,
            Debug,
            proc.subject(cx.several()),
            "forwarding {signal} as {to}"
        );
        signal_live(cx, proc, to);
    }
    let any = retirees.forward(cx, signal, to) || !procs.is_empty();
    if !any {
        log!(
            cx,
            Debug,
            Subject::NONE,
            "no command is running to receive {signal}"
        );
    }
}

/// The supervisor's state and decisions. See the module docs.
pub struct Core {
    settings: Settings,
    state: State,
    ids: Ids,
    stats: Stats,
    classifying: Option<Classifying>,
    armed: Option<Instant>,
    out: Vec<Action>,
}

impl Core {
    pub fn new(settings: Settings) -> Core {
        Core {
            settings,
            state: State::Init,
            ids: Ids {
                ticket: 0,
                worker: 0,
                generation: 0,
            },
            stats: Stats::default(),
            classifying: None,
            armed: None,
            out: Vec::new(),
        }
    }

    /// Takes one event; returns what to do, in order.
    pub fn step(&mut self, now: Instant, event: Event) -> Vec<Action> {
        if self.state != State::Done {
            self.handle(now, event);
            self.expire(now);
            let deadline = self.deadline();
            if deadline != self.armed {
                self.armed = deadline;
                self.out.push(Action::ArmTimer(deadline));
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Whether graceful-run has decided to exit.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The earliest moment anything needs attention.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Init | State::Done => None,
            State::Running(running) => running.deadline(),
            State::Ending(ending) => ending.deadline(),
        }
    }

    /// Runs the state's handler `f` on the state taken out, and puts back what it returns.
    fn transition(&mut self, now: Instant, f: impl FnOnce(State, &mut Cx) -> State) {
        let state = std::mem::replace(&mut self.state, State::Done);
        let mut cx = Cx {
            s: &self.settings,
            now,
            out: &mut self.out,
            ids: &mut self.ids,
            stats: &mut self.stats,
        };
        self.state = f(state, &mut cx);
    }

    /// Handles whatever is due at `now`. Each round moves a deadline on or ends what owns it;
    /// the bound only guards against a bug turning into a hang.
    fn expire(&mut self, now: Instant) {
        for _ in 0..64 {
            match self.deadline() {
                Some(due) if due <= now => self.transition(now, |state, cx| match state {
                    State::Running(running) => running.expire(cx),
                    State::Ending(ending) => ending.expire(cx),
                    other => other,
                }),
                _ => return,
            }
        }
        debug_assert!(false, "deadlines still due after 64 rounds");
    }

    fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::Start => self.transition(now, |state, cx| match state {
                State::Init => State::Running(Running::start(cx)),
                other => other,
            }),
            Event::Signal { signal, origin } => self.on_signal(now, signal, origin),
            Event::Reaped { pid, status } => self.transition(now, |state, cx| match state {
                State::Running(running) => running.on_reaped(cx, pid, status),
                State::Ending(ending) => ending.on_reaped(cx, pid, status),
                other => other,
            }),
            Event::Notify { worker, fields } => self.transition(now, |state, cx| match state {
                State::Running(running) => running.on_notify(cx, worker, &fields),
                State::Ending(ending) => ending.on_notify(cx, worker, &fields),
                other => other,
            }),
            Event::Timer => {}
            Event::Answer { ticket, answer } => match answer {
                Answer::Descends(descends) => self.on_descends(now, ticket, descends),
                answer => self.transition(now, |state, cx| match state {
                    State::Running(running) => running.on_answer(cx, ticket, answer),
                    State::Ending(ending) => ending.on_answer(cx, ticket, answer),
                    other => other,
                }),
            },
            Event::Checked { worker, result } => self.transition(now, |state, cx| match state {
                State::Running(running) => running.on_checked(cx, worker, result),
                other => other,
            }),
            Event::Memory { worker, bytes } => self.transition(now, |state, cx| match state {
                State::Running(running) => running.on_memory(cx, worker, bytes),
                other => other,
            }),
            Event::Changed { paths, more } => self.transition(now, |state, cx| match state {
                State::Running(running) => running.on_changed(cx, &paths, more),
                other => other,
            }),
            Event::Strangers { what } => self.transition(now, |state, cx| match state {
                State::Running(running) => running.on_strangers(cx, what),
                other => other,
            }),
            Event::Control {
                client,
                peer,
                command,
            } => self.transition(now, |state, cx| match state {
                State::Running(running) => running.on_control(cx, client, peer, command),
                State::Ending(ending) => ending.on_control(cx, client, peer, command),
                State::Init | State::Done => {
                    cx.reply(client, Reply::Failed(Refusal::Stopping), true);
                    state
                }
            }),
        }
    }

    // ----- signals -------------------------------------------------------------------------

    /// Whether `pid` (or its group `pgid`) is one of the command's processes, as far as the
    /// state knows them.
    fn knows(&self, pid: i32, pgid: Option<i32>) -> bool {
        let own_group = self.settings.own_group();
        pid > 0
            && match &self.state {
                State::Running(running) => running.knows(pid, pgid, own_group),
                State::Ending(ending) => ending.knows(pid, pgid, own_group),
                State::Init | State::Done => false,
            }
    }

    fn on_signal(&mut self, now: Instant, signal: Signal, origin: Origin) {
        let sender = match origin {
            Origin::Myself => return,
            Origin::Kernel => None,
            Origin::Process { pid, pgid } => {
                if self.knows(pid, pgid) {
                    return self.commands_own(now, signal, pid);
                }
                if pid > 0 && self.settings.decides(signal) {
                    // Whether it descends from graceful-run decides whether it is a request.
                    self.ids.ticket += 1;
                    let ticket = self.ids.ticket;
                    self.out.push(Action::Ask {
                        ticket,
                        question: Question::Descends { pid },
                    });
                    self.classifying = Some(Classifying {
                        ticket,
                        signal,
                        pid,
                        pgid,
                    });
                    return;
                }
                Some(pid)
            }
        };
        self.external_signal(now, signal, origin, sender);
    }

    fn on_descends(&mut self, now: Instant, ticket: Ticket, descends: bool) {
        let Some(pending) = self.classifying.filter(|c| c.ticket == ticket) else {
            return;
        };
        self.classifying = None;
        if descends {
            self.commands_own(now, pending.signal, pending.pid);
        } else {
            let origin = Origin::Process {
                pid: pending.pid,
                pgid: pending.pgid,
            };
            self.external_signal(now, pending.signal, origin, Some(pending.pid));
        }
    }

    /// A signal one of the command's own processes sent to graceful-run.
    fn commands_own(&mut self, now: Instant, signal: Signal, pid: i32) {
        self.transition(now, |state, cx| match state {
            State::Running(running) if Some(signal) == cx.s.policy.restart_signal => {
                running.restart_from_command(cx, pid, signal)
            }
            state => {
                log!(
                    cx,
                    Info,
                    Subject::pid(pid),
                    "ignoring {signal} sent to graceful-run by a process of the command"
                );
                state
            }
        });
    }

    fn external_signal(
        &mut self,
        now: Instant,
        signal: Signal,
        origin: Origin,
        sender: Option<i32>,
    ) {
        self.transition(now, |state, cx| match state {
            State::Running(running) => running.on_signal(cx, signal, origin, sender),
            State::Ending(ending) => ending.on_signal(cx, signal, origin, sender),
            State::Init if matches!(signal, Signal::TERM | Signal::INT) => {
                cx.push(Action::Exit(Outcome::Code(0)));
                State::Done
            }
            other => other,
        });
    }

    // ----- status --------------------------------------------------------------------------

    /// What runs now, for `graceful-run ctl status` and for tests.
    pub fn snapshot(&self) -> Snapshot {
        let mut workers = Vec::new();
        let mut add = |proc: &Proc,
                       role: Role,
                       since: Instant,
                       ready_by: Option<&'static str>,
                       activity: Option<Activity>,
                       watches: Option<&triggers::Watches>| {
            workers.push(WorkerView {
                id: proc.id,
                generation: proc.generation,
                slot: proc.slot,
                pid: proc.pid,
                role,
                started: proc.started,
                since,
                exited: proc.exited,
                ready_by,
                member: proc.member,
                activity,
                healthy: watches.and_then(|w| w.health).and_then(|h| h.healthy),
                memory: watches.and_then(|w| w.memory),
            })
        };
        let mut queued = false;
        let phase = match &self.state {
            State::Init => Phase::Starting,
            State::Done => Phase::Done,
            State::Running(running) => {
                queued = running.queued;
                let mut serving = false;
                let mut starting = false;
                let mut incoming = false;
                for slot in &running.slots {
                    match &slot.state {
                        SlotState::Serving { up, incoming: inc } => {
                            serving = true;
                            add(
                                &up.proc,
                                Role::Serving,
                                up.since,
                                Some(up.by),
                                None,
                                Some(&up.watches),
                            );
                            if let Some(Incoming::Booting(boot)) = inc {
                                add(
                                    &boot.proc,
                                    Role::Incoming,
                                    boot.proc.started,
                                    None,
                                    None,
                                    None,
                                );
                            }
                            incoming |= inc.is_some();
                        }
                        SlotState::Starting(inc) => {
                            starting = true;
                            if let Incoming::Booting(boot) = inc {
                                add(
                                    &boot.proc,
                                    Role::Starting,
                                    boot.proc.started,
                                    None,
                                    None,
                                    None,
                                );
                            }
                        }
                        _ => {}
                    }
                }
                for r in running.retirees.iter() {
                    let (role, activity) = r.role();
                    add(&r.proc, role, r.since, None, activity, None);
                }
                if !serving && starting {
                    Phase::Starting
                } else if running.rollout.is_some() || incoming {
                    Phase::Restarting
                } else if serving {
                    Phase::Serving
                } else {
                    Phase::Backoff
                }
            }
            State::Ending(ending) => {
                for up in ending.serving() {
                    add(
                        &up.proc,
                        Role::Draining,
                        up.proc.started,
                        None,
                        None,
                        Some(&up.watches),
                    );
                }
                for r in ending.retirees.iter() {
                    let (role, activity) = r.role();
                    add(&r.proc, role, r.since, None, activity, None);
                }
                Phase::Stopping
            }
        };
        Snapshot {
            phase,
            workers,
            restarts: self.stats.restarts,
            last_exit: self.stats.last_exit,
            queued,
            last_failure: self.stats.last_failure,
            triggered: self.stats.triggered,
            slots: match &self.state {
                State::Running(running) => running.slots.len() as u32,
                State::Ending(ending) => ending.ends.len() as u32,
                State::Init | State::Done => self.settings.workers,
            },
        }
    }
}

/// `now + duration`, or a time so far ahead it never comes when that cannot be represented.
fn later(now: Instant, duration: Duration) -> Instant {
    // A century: Instant + Duration overflows only far beyond that on Linux.
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

pub fn format_duration(duration: Duration) -> String {
    // To the nearest millisecond: humantime would print nanoseconds, and a deadline computed
    // a few microseconds ago would read "4s 999ms".
    let millis = Duration::from_millis(((duration.as_micros() + 500) / 1000) as u64);
    if millis.is_zero() {
        return "under 1ms".to_string();
    }
    humantime::format_duration(millis).to_string()
}
