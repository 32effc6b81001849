//! The end of the service: a stop was requested (TERM, INT, `graceful-run ctl stop`), or
//! every slot ended for good.
//!
//! Its stages run in order, and every stage has a deadline inside the stop budget, so a stop
//! always reaches the exit within drain delay + stop timeout + post-stop hook timeout
//! (+ [`KILL_GRACE`] per stage, only for processes that do not die of SIGKILL):
//!
//! ```text
//!   [Draining ─▶ PreStop ─▶] Observing ─▶ Workers ─▶ Leftovers ─▶ [PostStop] ─▶ exit
//! ```
//!
//! - `Draining`: the serving workers keep serving for `--drain-delay` while load balancers
//!   stop sending traffic.
//! - `PreStop`: `--pre-stop` runs (its time counts inside the stop timeout); they still serve.
//! - `Observing`: the stop signal waits until no serving worker has a busy connection, so
//!   that a server that exits on TERM at once still completes the requests it holds. It
//!   waits at most `--drain-timeout`, and never past half the stop timeout: a graceful server
//!   under constant load is never quiet, and must still have half its stop timeout after its
//!   stop signal to finish what it holds. Workers replaced before the stop and still draining
//!   get their stop signal by then too.
//! - `Workers`: every worker got the stop signal and graceful-run closed its copies of the
//!   listeners; waiting for them to be gone, SIGKILL at the budget's end.
//! - `Leftovers`: orphans re-parented to graceful-run get the stop signal, then SIGKILL.
//! - `PostStop`: `--post-stop` runs, with how the command ended.
//!
//! A second TERM or INT (not the same request repeated: GNU `timeout` signals its child and
//! then its whole group, within [`DUPLICATE_WINDOW`]) forces the end: SIGKILL to everything,
//! waiting for nothing.

use std::time::{Duration, Instant};

use super::protocol::*;
use super::retire::{KILL_GRACE, OBSERVE_FIRST, OBSERVE_MAX, Retirees};
use super::running::{Running, SlotState};
use super::worker::{Incoming, Launch, Look, Proc, Up};
use super::{Cx, End, State};
use crate::exit::ChildExit;
use crate::log::Subject;
use crate::reaper::Status;
use crate::signal::{Mapping, Signal};

/// A second TERM or INT from the same process within this window is the same request:
/// GNU `timeout` signals its child, then its whole process group, which includes us.
pub const DUPLICATE_WINDOW: Duration = Duration::from_millis(500);

/// What asked for the stop, to tell a duplicate from a second request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Request {
    pub signal: Signal,
    pub sender: Option<i32>,
    pub at: Instant,
    /// From `graceful-run ctl stop`, not a signal.
    pub ctl: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// The serving workers keep serving while load balancers stop sending traffic.
    Draining {
        serving: Vec<Up>,
        until: Instant,
    },
    /// `--pre-stop` runs; then the stop signal.
    PreStop {
        serving: Vec<Up>,
        hook: Hook,
    },
    /// Waiting (until `Ending::signal_by`) for the serving workers to have no busy
    /// connection; one watch each.
    Observing {
        serving: Vec<Up>,
        watches: Vec<Watch>,
    },
    /// Every worker is retiring; waiting for them to be gone.
    Workers,
    Leftovers(Leftovers),
    PostStop {
        hook: Hook,
    },
}

/// The looks at one serving worker while the stop waits for it to be quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Watch {
    pub worker: WorkerId,
    pub look: Look,
    pub interval: Duration,
    pub quiet: bool,
    pub last: Option<Activity>,
}

/// Orphans left behind by the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Leftovers {
    /// Whether there are any is being asked.
    Checking(Ticket),
    /// They got the stop signal; SIGKILL at `kill_at`. `check`: a new look, after a reap.
    Stopping {
        kill_at: Instant,
        check: Option<Ticket>,
    },
    /// They got SIGKILL; given up on at `give_up_at`.
    Killed {
        give_up_at: Instant,
        check: Option<Ticket>,
    },
}

/// A hook process, or the wait for it to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hook {
    Launching(Ticket),
    Running { pid: i32, kill_at: Instant },
    Killed { pid: i32, give_up_at: Instant },
}

impl Hook {
    fn pid(self) -> Option<i32> {
        match self {
            Hook::Running { pid, .. } | Hook::Killed { pid, .. } => Some(pid),
            Hook::Launching(_) => None,
        }
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Hook::Launching(_) => None,
            Hook::Running { kill_at, .. } => Some(kill_at),
            Hook::Killed { give_up_at, .. } => Some(give_up_at),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ending {
    /// Everything must be gone by then (drain delay + stop timeout from the request).
    pub budget_end: Instant,
    /// Every worker gets its stop signal by then at the latest: `--drain-timeout` after the
    /// drain delay, and at most half the stop timeout after it.
    pub signal_by: Instant,
    /// What the command receives as the stop signal.
    pub mapping: Mapping,
    /// The signal the command already received from the terminal (no process group of its
    /// own); not sent again.
    pub delivered: Option<Signal>,
    pub request: Option<Request>,
    /// A second TERM or INT: SIGKILL everything, wait for nothing.
    pub forced: bool,
    pub stage: Stage,
    pub retirees: Retirees,
    /// Spawns asked for just before the end, not answered yet: stopped once started.
    pub launching: Vec<Launch>,
    /// How each slot's last worker in the serving role ended: the outcome.
    pub ends: Vec<Option<End>>,
    /// `graceful-run ctl stop --wait` clients, answered at the exit.
    pub waiters: Vec<u64>,
    /// A hook asked for before a forced stop, not started yet: killed once it is.
    pub abandoned_hook: Option<Ticket>,
}

impl Ending {
    /// A stop request while the service runs.
    pub fn requested(
        cx: &mut Cx,
        running: Running,
        request: Request,
        delivered: Option<Signal>,
        waiter: Option<u64>,
    ) -> State {
        let now = cx.now;
        let mapping = cx.s.stop_mapping(request.signal);
        let budget_end = super::later(
            super::later(now, cx.s.policy.drain_delay),
            cx.s.policy.stop_timeout,
        );
        let (mut ending, slots) = Ending::from_running(cx, running, budget_end, mapping);
        ending.delivered = delivered;
        ending.request = Some(request);
        ending.waiters.extend(waiter);
        // Those already retiring must be gone within the budget too.
        ending.retirees.cap(budget_end, ending.signal_by);
        let mut serving = Vec::new();
        let mut starting = Vec::new();
        for slot in slots {
            match slot {
                SlotState::Serving { up, incoming } => {
                    serving.push(up);
                    // A replacement that is still starting serves nobody: no drain for it.
                    match incoming {
                        Some(Incoming::Booting(boot)) => ending
                            .retirees
                            .retire(cx, boot.proc, mapping, budget_end, false),
                        Some(Incoming::Launching(launch)) => ending.launching.push(launch),
                        None => {}
                    }
                }
                SlotState::Starting(Incoming::Booting(boot)) => starting.push(boot.proc),
                SlotState::Starting(Incoming::Launching(launch)) => ending.launching.push(launch),
                SlotState::Backoff { .. } | SlotState::Vacant | SlotState::Ended => {}
            }
        }
        for proc in starting {
            ending.stop_in_role(cx, proc);
        }
        if serving.is_empty() {
            return ending.signal_stop(cx);
        }
        let until = super::later(now, cx.s.policy.drain_delay);
        ending.stage = Stage::Draining { serving, until };
        if cx.s.policy.drain_delay.is_zero() {
            return ending.after_drain(cx);
        }
        log!(
            cx,
            Info,
            Subject::NONE,
            "draining for {} before the stop signal",
            super::format_duration(cx.s.policy.drain_delay)
        );
        ending.settle(cx)
    }

    /// Every slot ended for good without a stop request: stop what is left, then finish.
    pub fn finished(cx: &mut Cx, running: Running) -> State {
        for waiter in &running.waiters {
            cx.reply(waiter.client, Reply::Failed(Refusal::Stopping), true);
        }
        let budget_end = super::later(cx.now, cx.s.policy.stop_timeout);
        let mapping = cx.s.stop_mapping(Signal::TERM);
        let (mut ending, _) = Ending::from_running(cx, running, budget_end, mapping);
        ending.retirees.cap(budget_end, ending.signal_by);
        cx.push(Action::CloseListeners);
        ending.settle(cx)
    }

    /// The end, holding what the service held; and the states its slots were in.
    fn from_running(
        cx: &mut Cx,
        running: Running,
        budget_end: Instant,
        mapping: Mapping,
    ) -> (Ending, Vec<SlotState>) {
        // A build is not wanted any more, nor the serving workers' health checks.
        if let super::running::Build::Running { pid, .. } = running.build {
            cx.send(Target::Hook { pid }, Signal::KILL);
        }
        for slot in &running.slots {
            if let SlotState::Serving { up, .. } = &slot.state {
                super::running::stop_check(cx, up);
            }
        }
        let after_drain = super::later(cx.now, cx.s.policy.drain_delay);
        let signal_by = super::later(
            after_drain,
            cx.s.policy.drain_timeout.min(cx.s.policy.stop_timeout / 2),
        );
        (
            Ending {
                budget_end,
                signal_by: signal_by.min(budget_end),
                mapping,
                delivered: None,
                request: None,
                forced: false,
                stage: Stage::Workers,
                retirees: running.retirees,
                launching: running.cancelled,
                ends: running.slots.iter().map(|s| s.end).collect(),
                waiters: Vec::new(),
                abandoned_hook: None,
            },
            running.slots.iter().map(|s| s.state).collect(),
        )
    }

    // ----- facts ---------------------------------------------------------------------------

    pub fn serving(&self) -> &[Up] {
        match &self.stage {
            Stage::Draining { serving, .. }
            | Stage::PreStop { serving, .. }
            | Stage::Observing { serving, .. } => serving,
            _ => &[],
        }
    }

    fn serving_mut(&mut self) -> Option<&mut Vec<Up>> {
        match &mut self.stage {
            Stage::Draining { serving, .. }
            | Stage::PreStop { serving, .. }
            | Stage::Observing { serving, .. } => Some(serving),
            _ => None,
        }
    }

    fn hook(&self) -> Option<Hook> {
        match self.stage {
            Stage::PreStop { hook, .. } | Stage::PostStop { hook } => Some(hook),
            _ => None,
        }
    }

    pub fn knows(&self, pid: i32, pgid: Option<i32>, own_group: bool) -> bool {
        self.serving()
            .iter()
            .any(|u| u.proc.pid == pid || (own_group && pgid == Some(u.proc.pid)))
            || self.retirees.knows(pid, pgid, own_group)
            || self.hook().and_then(Hook::pid) == Some(pid)
    }

    pub fn terminal_holder(&self) -> Option<Proc> {
        self.serving().first().map(|u| u.proc)
    }

    pub fn deadline(&self) -> Option<Instant> {
        let stage = match &self.stage {
            Stage::Draining { until, .. } => Some(*until),
            Stage::Observing { watches, .. } => watches
                .iter()
                .filter_map(|w| match w.look {
                    Look::At(at) if !w.quiet => Some(at),
                    _ => None,
                })
                .chain([self.signal_by])
                .min(),
            Stage::PreStop { hook, .. } | Stage::PostStop { hook } => hook.deadline(),
            Stage::Workers => None,
            Stage::Leftovers(Leftovers::Checking(_)) => None,
            Stage::Leftovers(Leftovers::Stopping { kill_at, .. }) => Some(*kill_at),
            Stage::Leftovers(Leftovers::Killed { give_up_at, .. }) => Some(*give_up_at),
        };
        stage.into_iter().chain(self.retirees.deadline()).min()
    }

    /// The outcome: the first slot (in index order) whose last worker did not succeed, else
    /// the first slot's; with one worker, simply how it ended.
    fn outcome(&self) -> crate::exit::Outcome {
        let ends = self.ends.iter().flatten();
        let end = ends
            .clone()
            .find(|end| !end.success())
            .or_else(|| ends.clone().next());
        match end {
            Some(end) => end.outcome(),
            None => crate::exit::Outcome::Code(0),
        }
    }

    fn exit_status(&self) -> Option<ChildExit> {
        match self.outcome() {
            crate::exit::Outcome::Child(exit) => Some(exit),
            crate::exit::Outcome::Code(_) => None,
        }
    }

    // ----- the stages ----------------------------------------------------------------------

    fn after_drain(mut self, cx: &mut Cx) -> State {
        let Stage::Draining { serving, .. } = &mut self.stage else {
            return State::Ending(self);
        };
        let serving = std::mem::take(serving);
        if cx.s.pre_stop {
            let ticket = cx.ask(Question::RunHook {
                kind: HookKind::PreStop,
                main_pid: serving.first().map(|u| u.proc.pid),
                exit: None,
            });
            self.stage = Stage::PreStop {
                serving,
                hook: Hook::Launching(ticket),
            };
            State::Ending(self)
        } else {
            self.observe(cx, serving)
        }
    }

    /// Waits for the serving workers to be quiet before their stop signal, while the budget
    /// allows (see the module docs).
    fn observe(mut self, cx: &mut Cx, serving: Vec<Up>) -> State {
        if serving.is_empty() || self.signal_by <= cx.now || self.forced {
            self.stage = Stage::Draining {
                serving,
                until: cx.now,
            };
            return self.signal_stop(cx);
        }
        let watches = serving
            .iter()
            .map(|up| Watch {
                worker: up.proc.id,
                look: Look::Asked(cx.ask(Question::Observe {
                    worker: up.proc.id,
                    pgid: up.proc.pid,
                    member: up.proc.member,
                })),
                interval: OBSERVE_FIRST,
                quiet: false,
                last: None,
            })
            .collect();
        self.stage = Stage::Observing { serving, watches };
        State::Ending(self)
    }

    /// The answer to a look at a serving worker while the stop waits for it.
    fn watched(mut self, cx: &mut Cx, ticket: Ticket, activity: Activity) -> State {
        let Stage::Observing { watches, .. } = &mut self.stage else {
            return State::Ending(self);
        };
        let Some(watch) = watches.iter_mut().find(|w| w.look == Look::Asked(ticket)) else {
            return State::Ending(self);
        };
        watch.last = Some(activity);
        if activity.quiet() {
            watch.quiet = true;
        } else {
            watch.interval = (watch.interval * 2).min(OBSERVE_MAX);
            watch.look = Look::At(cx.now + watch.interval);
        }
        if watches.iter().all(|w| w.quiet) {
            let streams: u32 = watches
                .iter()
                .filter_map(|w| w.last)
                .map(|a| a.streams)
                .sum();
            if streams == 0 {
                log!(
                    cx,
                    Info,
                    Subject::NONE,
                    "no busy connection left: sending the stop signal"
                );
            } else {
                log!(
                    cx,
                    Info,
                    Subject::NONE,
                    "no busy connection left: sending the stop signal (ended on {streams} \
                     keep-alive stream{} at a request boundary)",
                    if streams == 1 { "" } else { "s" }
                );
            }
            return self.signal_stop(cx);
        }
        State::Ending(self)
    }

    /// The stop signal to a worker that held its slot's role, unless the terminal already
    /// delivered it.
    fn stop_in_role(&mut self, cx: &mut Cx, proc: Proc) {
        let kill_at = self.budget_end.max(cx.now);
        if self
            .delivered
            .is_some_and(|signal| self.mapping == Mapping::To(signal))
        {
            self.retirees.already_told(cx, proc, kill_at);
        } else {
            let kill_at = if self.forced { cx.now } else { kill_at };
            self.retirees.retire(cx, proc, self.mapping, kill_at, true);
        }
    }

    /// Every worker gets its stop signal: close the listeners and wait for them.
    fn signal_stop(mut self, cx: &mut Cx) -> State {
        let serving = self.serving_mut().map(std::mem::take).unwrap_or_default();
        for up in serving {
            self.stop_in_role(cx, up.proc);
        }
        self.stage = Stage::Workers;
        cx.push(Action::CloseListeners);
        self.settle(cx)
    }

    /// Moves the end on when what it waits for is over.
    fn settle(mut self, cx: &mut Cx) -> State {
        if self.stage == Stage::Workers && self.retirees.is_empty() && self.launching.is_empty() {
            self.stage = Stage::Leftovers(Leftovers::Checking(cx.ask(Question::CheckLeftovers)));
        }
        State::Ending(self)
    }

    fn kill_leftovers(&mut self, cx: &mut Cx) {
        log!(
            cx,
            Warn,
            Subject::NONE,
            "processes left behind did not stop in time: sending SIGKILL"
        );
        cx.send(Target::Leftovers, Signal::KILL);
        self.stage = Stage::Leftovers(Leftovers::Killed {
            give_up_at: cx.now + KILL_GRACE,
            check: None,
        });
    }

    fn start_post_stop(mut self, cx: &mut Cx) -> State {
        if cx.s.post_stop {
            let ticket = cx.ask(Question::RunHook {
                kind: HookKind::PostStop,
                main_pid: None,
                exit: self.exit_status(),
            });
            self.stage = Stage::PostStop {
                hook: Hook::Launching(ticket),
            };
            State::Ending(self)
        } else {
            self.exit(cx)
        }
    }

    fn exit(self, cx: &mut Cx) -> State {
        for client in &self.waiters {
            cx.reply(*client, Reply::Done, true);
        }
        cx.push(Action::Exit(self.outcome()));
        State::Done
    }

    fn hook_done(mut self, cx: &mut Cx) -> State {
        match &mut self.stage {
            Stage::PreStop { serving, .. } => {
                let serving = std::mem::take(serving);
                self.observe(cx, serving)
            }
            _ => self.exit(cx),
        }
    }

    fn hook_kind(&self) -> HookKind {
        match self.stage {
            Stage::PreStop { .. } => HookKind::PreStop,
            _ => HookKind::PostStop,
        }
    }

    fn set_hook(&mut self, new: Hook) {
        if let Stage::PreStop { hook, .. } | Stage::PostStop { hook } = &mut self.stage {
            *hook = new;
        }
    }

    /// A second TERM or INT: SIGKILL everything, wait for nothing.
    fn force(mut self, cx: &mut Cx) -> State {
        self.forced = true;
        let now = cx.now;
        let serving = self.serving_mut().map(std::mem::take).unwrap_or_default();
        match self.stage {
            Stage::PreStop {
                hook: Hook::Running { pid, .. },
                ..
            } => cx.send(Target::Hook { pid }, Signal::KILL),
            Stage::PreStop {
                hook: Hook::Launching(ticket),
                ..
            } => self.abandoned_hook = Some(ticket),
            Stage::Leftovers(Leftovers::Stopping { .. }) => {
                cx.send(Target::Leftovers, Signal::KILL);
                self.stage = Stage::Leftovers(Leftovers::Killed {
                    give_up_at: now + KILL_GRACE,
                    check: None,
                });
            }
            Stage::PostStop {
                hook: Hook::Running { pid, .. },
            } => {
                cx.send(Target::Hook { pid }, Signal::KILL);
                self.stage = Stage::PostStop {
                    hook: Hook::Killed {
                        pid,
                        give_up_at: now + KILL_GRACE,
                    },
                };
            }
            _ => {}
        }
        if matches!(
            self.stage,
            Stage::Draining { .. } | Stage::PreStop { .. } | Stage::Observing { .. }
        ) {
            self.stage = Stage::Workers;
            cx.push(Action::CloseListeners);
        }
        // The serving ones join the retiring ones, which all get SIGKILL now.
        for up in serving {
            self.retirees.told(cx, up.proc, now, true);
        }
        self.retirees.force(cx);
        self.settle(cx)
    }

    // ----- events --------------------------------------------------------------------------

    pub fn on_signal(
        self,
        cx: &mut Cx,
        signal: Signal,
        origin: Origin,
        sender: Option<i32>,
    ) -> State {
        let delivered = origin == Origin::Kernel && !cx.s.own_group();
        match signal {
            s if Some(s) == cx.s.policy.restart_signal
                && !(s == Signal::HUP && origin == Origin::Kernel) =>
            {
                log!(
                    cx,
                    Info,
                    Subject::NONE,
                    "ignoring the restart request: graceful-run is stopping"
                );
                State::Ending(self)
            }
            Signal::TERM | Signal::INT => {
                if let Some(first) = self.request
                    && first.signal == signal
                    && first.sender.is_some()
                    && first.sender == sender
                    && cx.now.saturating_duration_since(first.at) < DUPLICATE_WINDOW
                {
                    log!(
                        cx,
                        Debug,
                        Subject::NONE,
                        "{signal} again from the same process: the same stop request"
                    );
                    return State::Ending(self);
                }
                if self.forced {
                    return State::Ending(self);
                }
                log!(
                    cx,
                    Warn,
                    Subject::NONE,
                    "{signal} while stopping: killing everything now"
                );
                self.force(cx)
            }
            Signal::CONT => {
                if cx.s.job_control
                    && cx.s.own_group()
                    && let Some(proc) = self.terminal_holder()
                {
                    cx.push(Action::GiveTerminal { pgid: proc.pid });
                }
                self.forward(cx, signal, delivered);
                State::Ending(self)
            }
            _ => {
                self.forward(cx, signal, delivered);
                State::Ending(self)
            }
        }
    }

    fn forward(&self, cx: &mut Cx, signal: Signal, delivered: bool) {
        let serving = self.serving().iter().map(|u| &u.proc);
        super::forward(cx, signal, delivered, serving, &self.retirees);
    }

    pub fn on_control(mut self, cx: &mut Cx, client: u64, peer: Peer, command: Command) -> State {
        match command {
            Command::Restart { .. } | Command::Scale { .. } => {
                cx.reply(client, Reply::Failed(Refusal::Stopping), true);
            }
            Command::Stop { wait } => {
                cx.reply(client, Reply::Accepted, !wait);
                if wait {
                    self.waiters.push(client);
                }
                log!(
                    cx,
                    Info,
                    Subject::NONE,
                    "stop requested by graceful-run ctl (pid {}, uid {}): already stopping",
                    peer.pid,
                    peer.uid
                );
            }
        }
        State::Ending(self)
    }

    pub fn on_notify(self, cx: &mut Cx, id: WorkerId, fields: &[(String, String)]) -> State {
        let proc = self
            .serving()
            .iter()
            .map(|u| u.proc)
            .chain(self.retirees.iter().map(|r| r.proc))
            .find(|p| p.id == id);
        if let Some(proc) = proc
            && let Some((_, status)) = fields.iter().rev().find(|(k, _)| k == "STATUS")
        {
            log!(cx, Debug, proc.subject(cx.several()), "status: {status}");
        }
        State::Ending(self)
    }

    pub fn on_reaped(self, cx: &mut Cx, pid: i32, status: i32) -> State {
        let exit = match crate::reaper::decode(status) {
            Some(Status::Stopped(signal)) => {
                if cx.s.job_control && self.terminal_holder().is_some_and(|p| p.pid == pid) {
                    log!(
                        cx,
                        Info,
                        Subject::pid(pid),
                        "stopped by {signal}; stopping graceful-run too"
                    );
                    cx.push(Action::StopSelf);
                }
                return State::Ending(self);
            }
            None => return State::Ending(self),
            Some(Status::Ended(exit)) => exit,
        };
        let state = self.on_exit(cx, pid, exit);
        let State::Ending(mut ending) = state else {
            return state;
        };
        // After any reap: a process group may have emptied, an orphan may have gone.
        ending.retirees.recheck(cx);
        if let Stage::Leftovers(
            Leftovers::Stopping { check, .. } | Leftovers::Killed { check, .. },
        ) = &mut ending.stage
        {
            *check = Some(cx.ask(Question::CheckLeftovers));
        }
        ending.settle(cx)
    }

    fn on_exit(mut self, cx: &mut Cx, pid: i32, exit: ChildExit) -> State {
        if let Some(hook) = self.hook()
            && hook.pid() == Some(pid)
        {
            let kind = self.hook_kind();
            if exit.success() {
                log!(cx, Info, Subject::pid(pid), "{} hook finished", kind.flag());
            } else {
                log!(cx, Warn, Subject::pid(pid), "{} hook {exit}", kind.flag());
            }
            return self.hook_done(cx);
        }
        if let Some((proc, outcome)) = self.retirees.exited(cx, pid, exit) {
            // Its slot may be gone (scaled down while it drained): no outcome of its own.
            if outcome && let Some(end) = self.ends.get_mut(proc.slot as usize) {
                *end = Some(End::Exited(exit));
                cx.stats.last_exit = Some(exit);
            }
            return State::Ending(self);
        }
        let draining = matches!(self.stage, Stage::Draining { .. });
        let position = self.serving().iter().position(|u| u.proc.pid == pid);
        let Some(index) = position else {
            log!(cx, Debug, Subject::pid(pid), "reaped orphan: {exit}");
            return State::Ending(self);
        };
        let Some(serving) = self.serving_mut() else {
            return State::Ending(self);
        };
        let mut proc = serving.remove(index).proc;
        let none_left = serving.is_empty();
        if let Stage::Observing { watches, .. } = &mut self.stage {
            watches.retain(|w| w.worker != proc.id);
        }
        let observing = matches!(self.stage, Stage::Observing { .. });
        proc.exited = Some(exit);
        self.ends[proc.slot as usize] = Some(End::Exited(exit));
        cx.stats.last_exit = Some(exit);
        if draining {
            log!(
                cx,
                Info,
                proc.subject(cx.several()),
                "{exit} during the drain"
            );
        } else {
            log!(cx, Info, proc.subject(cx.several()), "{exit}");
        }
        let kill_at = self.budget_end.max(cx.now);
        self.retirees.leader_gone(cx, proc, kill_at);
        if (draining || observing) && none_left {
            return self.signal_stop(cx);
        }
        if let Stage::Observing { watches, .. } = &self.stage
            && watches.iter().all(|w| w.quiet)
        {
            return self.signal_stop(cx);
        }
        State::Ending(self)
    }

    pub fn on_answer(mut self, cx: &mut Cx, ticket: Ticket, answer: Answer) -> State {
        match answer {
            Answer::Spawned(result) => {
                if let Some(index) = self.launching.iter().position(|l| l.ticket == ticket) {
                    let launch = self.launching.remove(index);
                    if let Ok(boot) = launch.started(cx, result) {
                        let kill_at = if self.forced {
                            cx.now
                        } else {
                            self.budget_end.max(cx.now)
                        };
                        self.retirees
                            .retire(cx, boot.proc, self.mapping, kill_at, false);
                    }
                }
                self.settle(cx)
            }
            Answer::HookStarted(pid) => {
                if self.abandoned_hook == Some(ticket) {
                    self.abandoned_hook = None;
                    if let Some(pid) = pid {
                        cx.send(Target::Hook { pid }, Signal::KILL);
                    }
                    return State::Ending(self);
                }
                if self.hook() != Some(Hook::Launching(ticket)) {
                    return State::Ending(self);
                }
                let kind = self.hook_kind();
                let Some(pid) = pid else {
                    // The executor logged why; carry on without it.
                    return self.hook_done(cx);
                };
                log!(
                    cx,
                    Info,
                    Subject::pid(pid),
                    "running the {} hook",
                    kind.flag()
                );
                let timeout_end = super::later(cx.now, cx.s.policy.hook_timeout);
                // The pre-stop hook's time counts against the stop budget.
                let kill_at = match kind {
                    HookKind::PreStop => timeout_end.min(self.budget_end),
                    HookKind::PostStop => timeout_end,
                };
                if kill_at <= cx.now || self.forced {
                    cx.send(Target::Hook { pid }, Signal::KILL);
                    self.set_hook(Hook::Killed {
                        pid,
                        give_up_at: cx.now + KILL_GRACE,
                    });
                } else {
                    self.set_hook(Hook::Running { pid, kill_at });
                }
                State::Ending(self)
            }
            Answer::Group { alive } => {
                self.retirees.group_checked(cx, ticket, alive, self.mapping);
                self.settle(cx)
            }
            Answer::Leftovers { found } => self.leftovers_checked(cx, ticket, found),
            Answer::Observed(activity) => {
                if self.retirees.observed(cx, ticket, activity) {
                    return self.settle(cx);
                }
                self.watched(cx, ticket, activity)
            }
            // Started just before the end: not wanted any more.
            Answer::CheckStarted(CheckStart::Process(pid)) | Answer::BuildStarted(Some(pid)) => {
                cx.send(Target::Hook { pid }, Signal::KILL);
                State::Ending(self)
            }
            Answer::CheckStarted(_)
            | Answer::BuildStarted(None)
            | Answer::Probed { .. }
            | Answer::Descends(_) => State::Ending(self),
        }
    }

    fn leftovers_checked(mut self, cx: &mut Cx, ticket: Ticket, found: bool) -> State {
        let Stage::Leftovers(leftovers) = self.stage else {
            return State::Ending(self);
        };
        let now = cx.now;
        match leftovers {
            Leftovers::Checking(t) if t == ticket => {
                if !found {
                    return self.start_post_stop(cx);
                }
                let kill_at = if self.forced {
                    now
                } else {
                    self.budget_end.max(now)
                };
                match self.mapping {
                    Mapping::To(signal) if kill_at > now => {
                        log!(
                            cx,
                            Info,
                            Subject::NONE,
                            "stopping processes left behind by the command"
                        );
                        cx.send(Target::Leftovers, signal);
                        if signal != Signal::KILL && signal != Signal::CONT {
                            cx.send(Target::Leftovers, Signal::CONT);
                        }
                        self.stage = Stage::Leftovers(Leftovers::Stopping {
                            kill_at,
                            check: None,
                        });
                    }
                    Mapping::Drop if kill_at > now => {
                        self.stage = Stage::Leftovers(Leftovers::Stopping {
                            kill_at,
                            check: None,
                        });
                    }
                    _ => self.kill_leftovers(cx),
                }
                State::Ending(self)
            }
            Leftovers::Stopping { check: Some(t), .. } if t == ticket => {
                if !found {
                    return self.start_post_stop(cx);
                }
                if let Stage::Leftovers(Leftovers::Stopping { check, .. }) = &mut self.stage {
                    *check = None;
                }
                State::Ending(self)
            }
            Leftovers::Killed { check: Some(t), .. } if t == ticket => {
                if !found {
                    return self.start_post_stop(cx);
                }
                // Orphans re-parented after the sweep (their parent died of it).
                cx.send(Target::Leftovers, Signal::KILL);
                if let Stage::Leftovers(Leftovers::Killed { check, .. }) = &mut self.stage {
                    *check = None;
                }
                State::Ending(self)
            }
            _ => State::Ending(self),
        }
    }

    /// Whatever is due at `cx.now`.
    pub fn expire(mut self, cx: &mut Cx) -> State {
        self.retirees.expire(cx);
        let now = cx.now;
        let signal_by = self.signal_by;
        if let Stage::Observing { serving, watches } = &mut self.stage {
            if signal_by <= now {
                let busy: u32 = watches
                    .iter()
                    .filter_map(|w| w.last)
                    .map(|a| a.busy + a.queued)
                    .sum();
                log!(
                    cx,
                    Warn,
                    Subject::NONE,
                    "still {busy} busy connection{} when the stop signal was due; sending it",
                    if busy == 1 { "" } else { "s" }
                );
                return self.signal_stop(cx);
            }
            for watch in watches.iter_mut() {
                if !watch.quiet
                    && matches!(watch.look, Look::At(at) if at <= now)
                    && let Some(up) = serving.iter().find(|u| u.proc.id == watch.worker)
                {
                    watch.look = Look::Asked(cx.ask(Question::Observe {
                        worker: up.proc.id,
                        pgid: up.proc.pid,
                        member: up.proc.member,
                    }));
                }
            }
        }
        match self.stage {
            Stage::Draining { until, .. } if until <= now => return self.after_drain(cx),
            Stage::PreStop { hook, .. } | Stage::PostStop { hook } => match hook {
                Hook::Running { pid, kill_at } if kill_at <= now => {
                    let kind = self.hook_kind();
                    log!(
                        cx,
                        Warn,
                        Subject::pid(pid),
                        "{} hook did not finish within {}; killing it",
                        kind.flag(),
                        super::format_duration(cx.s.policy.hook_timeout)
                    );
                    cx.send(Target::Hook { pid }, Signal::KILL);
                    self.set_hook(Hook::Killed {
                        pid,
                        give_up_at: now + KILL_GRACE,
                    });
                }
                Hook::Killed { give_up_at, .. } if give_up_at <= now => {
                    return self.hook_done(cx);
                }
                _ => {}
            },
            Stage::Leftovers(Leftovers::Stopping { kill_at, .. }) if kill_at <= now => {
                self.kill_leftovers(cx)
            }
            Stage::Leftovers(Leftovers::Killed { give_up_at, .. }) if give_up_at <= now => {
                log!(
                    cx,
                    Warn,
                    Subject::NONE,
                    "leaving behind processes that did not die of SIGKILL"
                );
                return self.start_post_stop(cx);
            }
            _ => {}
        }
        self.settle(cx)
    }
}
