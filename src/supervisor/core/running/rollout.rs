//! Restarts: a slot's worker ended (crash restarts and backoff, `--restart-policy`,
//! `--max-restarts`), a rollout failed, and `settle`, which after every event starts what is
//! due and the surge allows, moves the rollout on, keeps the steering up to date, and answers
//! whoever waits.

use std::time::Duration;

use super::*;

impl Running {
    // ----- restarts and rollouts -----------------------------------------------------------

    /// Slot `i`'s worker failed before it was ready (it could not start, exited, or was not
    /// ready in time): the rollout it belongs to fails; a slot with nothing else serving ends
    /// its run as a crash would.
    pub(super) fn worker_failed(
        mut self,
        cx: &mut Cx,
        i: usize,
        proc: Proc,
        failure: Failure,
        end: End,
        served: Option<Duration>,
    ) -> State {
        let subject = if proc.pid > 0 {
            proc.subject(cx.several())
        } else {
            Subject::NONE
        };
        self.rollout_failed(cx, proc.generation, failure, false, subject);
        // Clients waiting for a restart this worker carried (one started from nothing).
        self.answer_waiters(cx, proc.generation, Reply::Failed(Refusal::Failed(failure)));
        self.slot_ended(cx, i, end, served)
    }

    /// Slot `i` has no worker any more (its serving one exited, or its starting one failed):
    /// restart it, or end it, as the restart policy says. `served`: how long the worker had
    /// been ready (None: never).
    pub(super) fn slot_ended(
        mut self,
        cx: &mut Cx,
        i: usize,
        end: End,
        served: Option<Duration>,
    ) -> State {
        let slot = &mut self.slots[i];
        slot.end = Some(end);
        let success = end.success();
        let restart = match cx.s.policy.restart_policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Always => true,
        };
        if self.reloading && self.serving_count() == 0 {
            // A reload asked for while nothing serves ends only once something does.
            cx.upstream(Upstream::ReloadFailed {
                failure: end.failure(),
                ready: false,
            });
        }
        let slot = &mut self.slots[i];
        if !restart {
            slot.state = SlotState::Ended;
            return self.settle(cx);
        }
        if served.is_some_and(|s| s >= STABLE_AFTER) {
            slot.restarts.in_a_row = 0;
        }
        if let Some(max) = cx.s.policy.max_restarts
            && slot.restarts.in_a_row >= max
        {
            let restarts = if max == 1 { "restart" } else { "restarts" };
            log!(
                cx,
                Error,
                cx.slot_subject(i),
                "giving up after {max} {restarts} in a row"
            );
            self.slots[i].state = SlotState::Ended;
            return self.settle(cx);
        }
        let slot = &mut self.slots[i];
        slot.restarts.in_a_row += 1;
        cx.stats.restarts += 1;
        // A worker that served is replaced at once: a crash under load must not leave the
        // sockets unserved. Only workers that fail before serving back off.
        let delay = if served.is_some_and(|s| s >= min_served(cx)) {
            slot.restarts.failures = 0;
            Duration::ZERO
        } else {
            slot.restarts.failures += 1;
            let factor = 2u32.saturating_pow((slot.restarts.failures - 1).min(16));
            cx.s.policy
                .restart_delay
                .saturating_mul(factor)
                .min(BACKOFF_CAP)
        };
        let count = slot.restarts.in_a_row;
        if delay.is_zero() {
            log!(
                cx,
                Info,
                cx.slot_subject(i),
                "restarting now (restart {count} in a row)"
            );
            slot.state = SlotState::Vacant;
        } else {
            log!(
                cx,
                Info,
                cx.slot_subject(i),
                "restarting in {} (restart {count} in a row)",
                super::super::format_duration(delay)
            );
            slot.state = SlotState::Backoff {
                until: cx.now + delay,
            };
        }
        self.settle(cx)
    }

    /// A worker of generation `generation` failed before it was ready. If it was the current
    /// rollout's, the rollout ends: replacements of the target still starting are stopped,
    /// everything else serves on, and clients waiting for it hear why. `logged`: the failure's
    /// own line already said who keeps serving.
    pub(super) fn rollout_failed(
        &mut self,
        cx: &mut Cx,
        generation: GenId,
        failure: Failure,
        logged: bool,
        subject: Subject,
    ) {
        let Some(rollout) = self.rollout else { return };
        if generation != rollout.target {
            return;
        }
        self.rollout = None;
        cx.stats.last_failure = Some(failure);
        let mapping = cx.s.stop_mapping(Signal::TERM);
        let kill_at = super::super::later(cx.now, cx.s.policy.stop_timeout);
        for i in 0..self.slots.len() {
            if let SlotState::Serving {
                up,
                incoming: Some(incoming),
            } = self.slots[i].state
                && incoming.generation() == rollout.target
            {
                self.slots[i].state = SlotState::Serving { up, incoming: None };
                match incoming {
                    Incoming::Booting(boot) => {
                        self.retirees.retire(cx, boot.proc, mapping, kill_at, false)
                    }
                    Incoming::Launching(launch) => self.cancelled.push(launch),
                }
            }
        }
        let serving = self.any_serving().copied();
        if let Some(up) = serving
            && !logged
        {
            log!(
                cx,
                Error,
                subject,
                "restart failed; gen {} keeps serving",
                up.proc.generation
            );
        }
        if self.reloading {
            if serving.is_some() {
                self.reloading = false;
            }
            cx.upstream(Upstream::ReloadFailed {
                failure,
                ready: serving.is_some(),
            });
        }
        self.answer_waiters(cx, rollout.target, Reply::Failed(Refusal::Failed(failure)));
    }

    /// After every event: starts what is due and the surge allows, moves the rollout on, says
    /// when the service came up, and ends the service when every slot has ended.
    pub(super) fn settle(mut self, cx: &mut Cx) -> State {
        if self.retirees.checking() {
            // A group check is out: its answer, which comes before any other event, says
            // whether a process that holds the listeners is left (O_NONBLOCK), and whether a
            // place under the surge is free. Where connections go does not wait for it.
            self.steer(cx);
            return State::Running(self);
        }
        let n = self.slots.len();
        let cap = n + cx.s.policy.max_surge as usize;
        let mut alive = self.alive();
        // Slots waiting to start.
        for i in 0..n {
            let due = match self.slots[i].state {
                SlotState::Vacant => true,
                SlotState::Backoff { .. } | SlotState::Ended => self.rollout.is_some(),
                _ => false,
            };
            if due && alive < cap {
                let generation = self.generation_for_restart(cx);
                let reset = !self.any_process();
                let member = self.member_for_start();
                let launch = Launch::ask(cx, generation, i as u32, reset, member);
                self.slots[i].state = SlotState::Starting(Incoming::Launching(launch));
                alive += 1;
            }
        }
        // Replacements: the rollout's, and those a trigger asked for.
        let floor = n.saturating_sub(cx.s.max_unavailable as usize);
        let mut ready = self.serving_count();
        for i in 0..n {
            let SlotState::Serving { up, incoming: None } = self.slots[i].state else {
                continue;
            };
            let generation = match self.rollout {
                Some(rollout) if up.proc.generation < rollout.target => rollout.target,
                _ if up.watches.replacing.is_some() => self.generation_for_replacement(cx),
                _ => continue,
            };
            if alive < cap {
                let member = self.member_for_replacement();
                let launch = Launch::ask(cx, generation, i as u32, false, member);
                self.slots[i].state = SlotState::Serving {
                    up,
                    incoming: Some(Incoming::Launching(launch)),
                };
                alive += 1;
            } else if ready > floor && self.in_role() >= cap {
                // No room for one more even once the retiring ones are gone: retire an old
                // one first, as --max-unavailable allows; its slot starts once it is gone.
                // (When only retiring workers take the room, waiting for them costs a stop
                // timeout at most, and nothing stops serving.)
                log!(
                    cx,
                    Info,
                    up.proc.subject(cx.several()),
                    "stopping it before its replacement starts (--max-unavailable)"
                );
                let mapping = cx.s.stop_mapping(Signal::TERM);
                let kill_at = super::super::later(cx.now, cx.s.policy.stop_timeout);
                self.slots[i].state = SlotState::Vacant;
                super::triggers::stop_check(cx, &up);
                self.retirees.retire(cx, up.proc, mapping, kill_at, true);
                ready -= 1;
            }
        }
        self.steer(cx);
        if let Some(rollout) = self.rollout {
            let done = self.slots.iter().all(|s| {
                matches!(s.state, SlotState::Serving { up, incoming: None } if up.proc.generation >= rollout.target)
            });
            if done {
                self.rollout_done(cx, rollout);
            }
        }
        // The service came up.
        let serving = self.serving_count();
        let needed = n.saturating_sub(cx.s.max_unavailable as usize).max(1);
        if !self.up && serving >= needed {
            self.up = true;
            cx.upstream(Upstream::Ready {
                main_pid: cx.s.main_pid,
            });
            cx.upstream(Upstream::Status(self.status_line()));
        }
        self.say_health(cx);
        // A reload that failed while nothing served ends once something serves again.
        if self.reloading && self.rollout.is_none() && serving > 0 && self.up {
            self.reloading = false;
            cx.upstream(Upstream::Reloaded);
            cx.upstream(Upstream::Status(self.status_line()));
        }
        // A restart queued until something served, or until the last rollout ended.
        if self.queued && self.rollout.is_none() && serving > 0 && !self.any_starting() {
            self.queued = false;
            log!(cx, Info, Subject::NONE, "running the queued restart");
            cx.stats.restarts += 1;
            self.begin_rollout(cx);
            return self.settle(cx);
        }
        self.answer_steady(cx);
        if self.slots.iter().all(|s| s.state == SlotState::Ended) {
            return Ending::finished(cx, self);
        }
        State::Running(self)
    }

    /// `ctl restart --wait` clients whose restart is done without a rollout of its own (a
    /// crash restart started a newer generation from nothing): every slot serves a newer one.
    pub(super) fn answer_steady(&mut self, cx: &mut Cx) {
        if self.rollout.is_some() || self.waiters.is_empty() {
            return;
        }
        let oldest = self
            .slots
            .iter()
            .map(|s| match s.state {
                SlotState::Serving { up, incoming: None } => Some(up.proc.generation),
                _ => None,
            })
            .collect::<Option<Vec<GenId>>>()
            .and_then(|gens| gens.into_iter().min());
        let Some(oldest) = oldest else { return };
        self.answer_waiters(cx, oldest, Reply::Done);
    }

    /// Answers `reply` to the clients waiting for a restart that `generation` carries (they
    /// asked before it existed).
    fn answer_waiters(&mut self, cx: &mut Cx, generation: GenId, reply: Reply) {
        self.waiters.retain(|w| {
            let carried = generation > w.after;
            if carried {
                cx.reply(w.client, reply.clone(), true);
            }
            !carried
        });
    }

    /// The generation of a replacement a trigger asked for: with one worker it is a restart of
    /// the service (a new generation); with several, a new process of the same version.
    fn generation_for_replacement(&mut self, cx: &mut Cx) -> GenId {
        if self.slots.len() == 1 {
            self.generation = cx.new_generation();
        }
        self.generation
    }

    /// Tells the executor where new connections go, when that changed. Before any reply of
    /// the step: once `ctl restart --wait` returns, every new connection goes to the new
    /// generation.
    pub(super) fn steer(&mut self, cx: &mut Cx) {
        if self.members == 0 {
            return;
        }
        let target = self.steering_target();
        if target != self.spread {
            self.spread = target.clone();
            cx.push(Action::Steer { members: target });
        }
    }

    /// Strangers in a steered group ([`Event::Strangers`]): said once; workers started from
    /// now on get no member of their own but the shared socket, member 0, which the steering
    /// sends new connections to once they serve. Member 0 keeps its index whoever joins (a
    /// socket joins at the end, graceful-run never closes a member, and a stranger that leaves
    /// only moves a later stranger), so steering to it stays right; the members handed out
    /// before keep theirs too, and their workers drain as before.
    pub fn on_strangers(mut self, cx: &mut Cx, what: String) -> State {
        if self.strangers.is_none() && self.members > 0 {
            log!(
                cx,
                Warn,
                Subject::NONE,
                "{what}: steering is off, later generations share the listener"
            );
            self.strangers = Some(what);
            self.steer(cx);
        }
        self.settle(cx)
    }

    pub(super) fn rollout_done(&mut self, cx: &mut Cx, rollout: Rollout) {
        self.rollout = None;
        cx.stats.last_failure = None;
        if self.reloading && self.up {
            self.reloading = false;
            cx.upstream(Upstream::Reloaded);
            cx.upstream(Upstream::Status(self.status_line()));
        }
        self.answer_waiters(cx, rollout.target, Reply::Done);
    }
}

/// How long a worker must have been ready to count as having served: it is then restarted
/// at once. `--restart-delay`, at most 1 s (a long delay asked for failing starts must not
/// hold back the replacement of a server that ran for minutes).
fn min_served(cx: &Cx) -> Duration {
    cx.s.policy.restart_delay.min(MAX_MIN_SERVED)
}
