//! The running service's side of the triggers (issue 18, see `core/triggers.rs`): a serving
//! worker's watch fired, so its slot gets a replacement the way a rollout replaces workers;
//! and `--watch`: file changes run `--build`, and a build that succeeds restarts the service.

use super::*;
use crate::supervisor::core::triggers::MEMORY_INTERVAL;

/// `--watch --build`: the build, while one runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(in crate::supervisor::core) enum Build {
    #[default]
    Idle,
    /// Asked the executor to start it; `again`: more changes came meanwhile.
    Asked {
        ticket: Ticket,
        again: bool,
    },
    Running {
        pid: i32,
        again: bool,
    },
}

impl Running {
    /// The first memory sample, when `--max-memory` asks for them.
    pub(super) fn first_memory_sample(cx: &Cx) -> Option<Instant> {
        cx.s.max_memory.map(|_| cx.now + MEMORY_INTERVAL)
    }

    /// The serving workers' watches' deadlines, and the next memory sample.
    pub(super) fn watch_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match &s.state {
                SlotState::Serving { up, .. } => up.watches.deadline(),
                _ => None,
            })
            .chain(self.memory_at)
            .min()
    }

    /// Whatever of the serving workers' watches is due, and the memory samples.
    pub(super) fn expire_watches(&mut self, cx: &mut Cx) {
        let now = cx.now;
        for i in 0..self.slots.len() {
            let SlotState::Serving { mut up, incoming } = self.slots[i].state else {
                continue;
            };
            if up.watches.kill_at.is_some_and(|at| at <= now) {
                self.kill_hung(cx, i);
                continue;
            }
            let reason = up.expire_watches(cx);
            self.slots[i].state = SlotState::Serving { up, incoming };
            if let Some(reason) = reason {
                self.trigger(cx, i, reason);
            }
        }
        if let Some(at) = self.memory_at
            && at <= now
        {
            self.memory_at = Some(now + MEMORY_INTERVAL);
            let workers: Vec<(WorkerId, i32)> = self
                .slots
                .iter()
                .filter_map(|s| match &s.state {
                    SlotState::Serving { up, .. } => Some((up.proc.id, up.proc.pid)),
                    _ => None,
                })
                .collect();
            if !workers.is_empty() {
                cx.push(Action::SampleMemory { workers });
            }
        }
    }

    /// Slot `i`'s serving worker gave a reason to be replaced: its slot gets a replacement
    /// (`settle` starts it as the surge allows), unless one is on its way already.
    ///
    /// Counted once per replacement it asks for: a watch that fires again while that
    /// replacement starts (a health check failing on, memory still over the limit) is the
    /// same trigger. One that a restart or a rollout already covers is counted and remembered
    /// too, so that a failure of that replacement says the worker keeps serving for this
    /// reason, and a hung worker is killed rather than drained.
    pub(super) fn trigger(&mut self, cx: &mut Cx, i: usize, reason: Reason) {
        let SlotState::Serving { up, incoming } = &mut self.slots[i].state else {
            return;
        };
        if up.watches.replacing.is_some() {
            return;
        }
        cx.stats.triggered.count(reason);
        up.watches.replacing = Some(reason);
        let covered = self.rollout.is_some_and(|r| up.proc.generation < r.target);
        if incoming.is_some() || covered {
            log!(
                cx,
                Info,
                up.proc.subject(cx.several()),
                "its replacement is already on its way ({reason})"
            );
        }
    }

    /// The watchdog found slot `i`'s worker hung a stop timeout ago and its replacement is
    /// not ready: it is killed now, and the replacement (or the next start) takes the slot.
    fn kill_hung(&mut self, cx: &mut Cx, i: usize) {
        let SlotState::Serving { up, incoming } = self.slots[i].state else {
            return;
        };
        log!(
            cx,
            Warn,
            up.proc.subject(cx.several()),
            "still hung and its replacement is not ready: killing it"
        );
        self.slots[i].state = match incoming {
            Some(incoming) => SlotState::Starting(incoming),
            None => SlotState::Vacant,
        };
        stop_check(cx, &up);
        self.retirees.kill(cx, up.proc, incoming.is_none());
    }

    /// A replacement asked for by a trigger (not a rollout) failed: the old worker serves on.
    pub(super) fn replacement_failed(&mut self, cx: &mut Cx, i: usize, failure: Failure) {
        let SlotState::Serving { up, .. } = &mut self.slots[i].state else {
            return;
        };
        if let Some(reason) = up.watches.replacing.take() {
            log!(
                cx,
                Error,
                up.proc.subject(cx.several()),
                "its replacement failed ({failure}); it keeps serving ({reason})"
            );
        }
    }

    /// The answer to a health check's start.
    pub(super) fn check_started(mut self, cx: &mut Cx, ticket: Ticket, start: CheckStart) -> State {
        let asked = |s: &Slot| match &s.state {
            SlotState::Serving { up, .. } => matches!(
                up.watches.health.map(|h| h.check),
                Some(crate::supervisor::core::triggers::Check::Asked(t)) if t == ticket
            ),
            _ => false,
        };
        if !self.slots.iter().any(asked) {
            // Its worker left the serving role meanwhile: the check is not wanted.
            if let CheckStart::Process(pid) = start {
                cx.send(Target::Hook { pid }, Signal::KILL);
            }
            return self.settle(cx);
        }
        for i in 0..self.slots.len() {
            if let SlotState::Serving { mut up, incoming } = self.slots[i].state
                && matches!(up.watches.health.map(|h| h.check), Some(crate::supervisor::core::triggers::Check::Asked(t)) if t == ticket)
            {
                let reason = up.check_started(cx, ticket, start);
                self.slots[i].state = SlotState::Serving { up, incoming };
                if let Some(reason) = reason {
                    self.trigger(cx, i, reason);
                }
                break;
            }
        }
        self.settle(cx)
    }

    /// A reaped pid that is a health check's or the build's: None when it is neither, else
    /// whether the service restarts now (a build that succeeded).
    pub(super) fn reaped_check_or_build(
        &mut self,
        cx: &mut Cx,
        pid: i32,
        exit: ChildExit,
    ) -> Option<bool> {
        if let Build::Running { pid: build, again } = self.build
            && build == pid
        {
            self.build = Build::Idle;
            return Some(self.build_ended(cx, exit, again));
        }
        for i in 0..self.slots.len() {
            if let SlotState::Serving { mut up, incoming } = self.slots[i].state
                && up.runs_check(pid)
            {
                let reason = up.check_exited(cx, exit);
                self.slots[i].state = SlotState::Serving { up, incoming };
                if let Some(reason) = reason {
                    self.trigger(cx, i, reason);
                }
                return Some(false);
            }
        }
        None
    }

    /// The end of a `--health-http` probe.
    pub fn on_checked(
        mut self,
        cx: &mut Cx,
        worker: WorkerId,
        result: Result<u16, String>,
    ) -> State {
        if let Some(Place::Serving(i)) = self.place_of(worker)
            && let SlotState::Serving { mut up, incoming } = self.slots[i].state
        {
            let reason = up.probe_ended(cx, result);
            self.slots[i].state = SlotState::Serving { up, incoming };
            if let Some(reason) = reason {
                self.trigger(cx, i, reason);
            }
        }
        self.settle(cx)
    }

    /// A memory sample of a worker.
    pub fn on_memory(mut self, cx: &mut Cx, worker: WorkerId, bytes: u64) -> State {
        if let Some(Place::Serving(i)) = self.place_of(worker)
            && let SlotState::Serving { mut up, incoming } = self.slots[i].state
        {
            let reason = up.memory_sampled(cx, bytes);
            self.slots[i].state = SlotState::Serving { up, incoming };
            if let Some(reason) = reason {
                self.trigger(cx, i, reason);
            }
        }
        self.settle(cx)
    }

    /// A burst of changes under `--watch`: a build (one at a time; changes during it make one
    /// more), or a restart at once without `--build`.
    pub fn on_changed(mut self, cx: &mut Cx, paths: &[String], more: usize) -> State {
        cx.stats.triggered.changes += 1;
        let shown = crate::text::escape_controls(&paths.join(", ")).into_owned();
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        log!(cx, Info, Subject::NONE, "changed: {shown}{more}");
        if !cx.s.watch.is_some_and(|w| w.build) {
            log!(cx, Info, Subject::NONE, "restarting");
            return self.request_restart(cx);
        }
        match &mut self.build {
            Build::Idle => self.start_build(cx),
            Build::Asked { again, .. } | Build::Running { again, .. } => {
                if !*again {
                    log!(
                        cx,
                        Info,
                        Subject::NONE,
                        "building again once the current build ends"
                    );
                }
                *again = true;
            }
        }
        State::Running(self)
    }

    fn start_build(&mut self, cx: &mut Cx) {
        log!(cx, Info, Subject::NONE, "building (--build)");
        self.build = Build::Asked {
            ticket: cx.ask(Question::StartBuild),
            again: false,
        };
    }

    pub(super) fn build_started(mut self, cx: &mut Cx, ticket: Ticket, pid: Option<i32>) -> State {
        let Build::Asked { ticket: t, again } = self.build else {
            return State::Running(self);
        };
        if t != ticket {
            return State::Running(self);
        }
        self.build = match pid {
            Some(pid) => Build::Running { pid, again },
            None => {
                log!(cx, Error, Subject::NONE, "--build could not be started");
                Build::Idle
            }
        };
        State::Running(self)
    }

    /// Whether the service restarts now.
    fn build_ended(&mut self, cx: &mut Cx, exit: ChildExit, again: bool) -> bool {
        if again {
            log!(
                cx,
                Info,
                Subject::NONE,
                "--build {exit}; files changed meanwhile"
            );
            self.start_build(cx);
            return false;
        }
        if exit.success() {
            log!(cx, Info, Subject::NONE, "--build succeeded: restarting");
            true
        } else {
            match self.any_serving() {
                Some(up) => log!(
                    cx,
                    Error,
                    Subject::NONE,
                    "--build {exit}; gen {} keeps serving",
                    up.proc.generation
                ),
                None => log!(cx, Error, Subject::NONE, "--build {exit}"),
            }
            false
        }
    }
}

/// A worker that leaves the serving role stops its `--health-cmd` process, if one runs.
pub(in crate::supervisor::core) fn stop_check(cx: &mut Cx, up: &Up) {
    if let Some(health) = up.watches.health
        && let crate::supervisor::core::triggers::Check::Process { pid, .. } = health.check
    {
        cx.send(Target::Hook { pid }, Signal::KILL);
    }
}
