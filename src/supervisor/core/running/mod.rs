//! The service while it runs: `--workers` slots, each with its worker, and the rollouts that
//! replace them.
//!
//! # Slots
//!
//! Slot `i` is worker index `i` (GRACEFUL_RUN_WORKER). Each is in one [`SlotState`]:
//!
//! ```text
//!                 ready                          a rollout: a replacement starts (incoming)
//!   Starting ─────────────▶ Serving ────────────────────────────────────────────┐
//!     ▲   │ exited/failed     │  ▲   the replacement is ready: it serves, the    │
//!     │   ▼                   │  └── old worker retires ◀───────────────────────┘
//!   Backoff/Vacant ◀──────────┘ exited (restart policy)          (or it fails: the old serves on)
//!     │                     ╲
//!     └─────▶ Ended           the serving worker exits during its replacement: the
//!        (no restart)         replacement takes the slot over once ready (Starting)
//! ```
//!
//! A worker that served and exits on its own is restarted at once (a crash under load must not
//! leave its share of the sockets unserved); one that fails before it served backs off,
//! `--restart-delay` doubled per failure in a row, up to [`BACKOFF_CAP`]. `--restart-policy`
//! and `--max-restarts` apply per slot; the service ends when every slot has ended.
//!
//! # Rollouts
//!
//! A restart (the restart signal, `graceful-run ctl restart`) makes a new generation the
//! rollout's target, and replaces every slot's worker with one of it, as Kubernetes rolls out
//! a Deployment: at most `--workers` + `--max-surge` workers alive at once (retiring ones
//! count until they are gone, so memory stays at the steady state plus the surge), and never
//! fewer than `--workers` − `--max-unavailable` ready. With the defaults and one worker this is
//! the classic handover: the new generation starts beside the old one, and once it is ready
//! the old one is told to stop. The first worker of the target that fails (cannot start,
//! exits, is not ready in time) ends the rollout: replacements still starting stop, workers
//! not replaced yet serve on, and so do the target's workers that are already ready (the old
//! version cannot be started again once it was replaced on disk, so stopping them would only
//! leave their slots empty). A restart asked for during a rollout is queued and runs when it
//! ends, toward the newest code: requests are coalesced, generations never stack, and every
//! step of a rollout makes progress even when restarts come faster than workers boot.
//!
//! graceful-run's own supervisor hears one reload per rollout (RELOADING=1, then READY=1), and
//! READY=1 once when the service first comes up, when `--workers` − `--max-unavailable`
//! workers serve.

use std::time::{Duration, Instant};

mod rollout;
mod triggers;

pub(super) use triggers::{Build, stop_check};

use super::ending::{Ending, Request};
use super::protocol::*;
use super::retire::Retirees;
use super::worker::{Boot, Booted, Incoming, Launch, Proc, Up};
use super::{Cx, End, State};
use crate::exit::ChildExit;
use crate::log::Subject;
use crate::policy::RestartPolicy;
use crate::reaper::Status;
use crate::signal::{Mapping, Signal};

/// Crash-restart delays double up to this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A worker ready for at most this long (or `--restart-delay` if shorter) counts as having
/// served: it is restarted at once when it exits.
pub const MAX_MIN_SERVED: Duration = Duration::from_secs(1);
/// A worker ready for this long resets its slot's count of crash restarts in a row.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotState {
    /// Nothing serves here; a worker starts.
    Starting(Incoming),
    /// Its worker serves; a replacement may be starting.
    Serving { up: Up, incoming: Option<Incoming> },
    /// Restarts at `until` (a crash backoff).
    Backoff { until: Instant },
    /// Starts as soon as the surge allows (its worker was retired first under
    /// `--max-unavailable`).
    Vacant,
    /// The command ended here for good (restart policy, `--max-restarts`).
    Ended,
}

/// Crash-restart bookkeeping of a slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Restarts {
    /// Crash restarts since a worker here was last ready for STABLE_AFTER (`--max-restarts`).
    pub in_a_row: u32,
    /// Workers in a row that failed before serving (the backoff's exponent).
    pub failures: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    pub state: SlotState,
    pub restarts: Restarts,
    /// How the last worker in its serving role ended: graceful-run's outcome.
    pub end: Option<End>,
}

/// A restart in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rollout {
    /// The generation every slot must run when it is done.
    pub target: GenId,
}

/// A `graceful-run ctl restart --wait` client: answered by the first rollout to a generation
/// newer than `after` that ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Waiter {
    pub client: u64,
    pub after: GenId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Running {
    pub slots: Vec<Slot>,
    pub retirees: Retirees,
    /// The newest generation: what workers started from now on run.
    pub generation: GenId,
    pub rollout: Option<Rollout>,
    /// A restart was asked for during a rollout (or before anything served): it runs once
    /// that ends.
    pub queued: bool,
    pub waiters: Vec<Waiter>,
    /// READY=1 was sent to graceful-run's supervisor.
    pub up: bool,
    /// RELOADING=1 was sent to graceful-run's supervisor, and no READY=1 after it yet.
    pub reloading: bool,
    /// Spawns asked for by a rollout that failed before they were answered: each is stopped
    /// as soon as it started.
    pub cancelled: Vec<Launch>,
    /// With steering: how many members each steered listener's group has (member 0 was bound
    /// at startup). Members are never closed while the service runs, so none ever moves in
    /// the kernel's array (see `listen/steer.rs`): a worker's member is an index that stays
    /// right, and goes back to the pool once every process of its worker is gone.
    pub members: u32,
    /// The members new connections go to, as last told to the executor.
    pub spread: Vec<u32>,
    /// Listeners of another program were found in a steered group (what they are): workers
    /// started from then on share the listener (member 0's socket, whose index no stranger
    /// can take), see `rollout.rs`, `on_strangers`.
    pub strangers: Option<String>,
    /// `--max-memory`: the next sample of the serving workers' memory.
    pub memory_at: Option<Instant>,
    /// `--watch --build`: the build, while one runs.
    pub build: Build,
    /// The serving workers' health (healthy, unhealthy) last told upstream in `STATUS=`.
    pub health_said: (usize, usize),
}

/// Where a worker is in the slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// The worker serving in slot `i`.
    Serving(usize),
    /// The worker starting in slot `i`, with nothing serving there.
    Starting(usize),
    /// The replacement starting beside slot `i`'s serving worker.
    Incoming(usize),
}

impl Running {
    /// The service's start: every slot starts a worker of generation 1.
    pub fn start(cx: &mut Cx) -> Running {
        let generation = cx.new_generation();
        let mut running = Running {
            slots: Vec::new(),
            retirees: Retirees::default(),
            generation,
            rollout: None,
            queued: false,
            waiters: Vec::new(),
            up: false,
            reloading: false,
            cancelled: Vec::new(),
            members: u32::from(cx.s.steering),
            spread: Vec::new(),
            strangers: None,
            memory_at: Running::first_memory_sample(cx),
            build: Build::Idle,
            health_said: (0, 0),
        };
        for slot in 0..cx.s.workers {
            let reset = !running.any_process();
            let member = running.member_for_start();
            let launch = Launch::ask(cx, generation, slot, reset, member);
            running.slots.push(Slot {
                state: SlotState::Starting(Incoming::Launching(launch)),
                restarts: Restarts::default(),
                end: None,
            });
        }
        running.steer(cx);
        running
    }

    // ----- facts ---------------------------------------------------------------------------

    /// Whether any process of the command may be alive (or is being started): O_NONBLOCK on
    /// the shared listeners must not be touched then.
    fn any_process(&self) -> bool {
        !self.retirees.is_empty()
            || !self.cancelled.is_empty()
            || self
                .slots
                .iter()
                .any(|s| matches!(s.state, SlotState::Starting(_) | SlotState::Serving { .. }))
    }

    /// The members any worker's processes may hold.
    fn members_in_use(&self) -> Vec<u32> {
        let mut used: Vec<u32> = self.retirees.members().collect();
        used.extend(self.cancelled.iter().filter_map(|l| l.member));
        for slot in &self.slots {
            match &slot.state {
                SlotState::Serving { up, incoming } => {
                    used.extend(up.proc.member);
                    used.extend(incoming.and_then(|i| i.member()));
                }
                SlotState::Starting(incoming) => used.extend(incoming.member()),
                _ => {}
            }
        }
        used
    }

    /// A member for a worker that starts with nothing serving in its slot: preferably one
    /// new connections already go to (clients queued there are served by it), else the
    /// lowest free one, else a new one. None without steering.
    fn member_for_start(&mut self) -> Option<u32> {
        if self.strangers.is_some() {
            return None;
        }
        let used = self.members_in_use();
        let free = |m: &u32| !used.contains(m);
        if let Some(m) = self.spread.iter().copied().find(free) {
            return Some(m);
        }
        self.member_for_replacement_among(&used)
    }

    /// A member for a replacement: the lowest free one, else a new one. None without
    /// steering.
    fn member_for_replacement(&mut self) -> Option<u32> {
        let used = self.members_in_use();
        self.member_for_replacement_among(&used)
    }

    fn member_for_replacement_among(&mut self, used: &[u32]) -> Option<u32> {
        if self.members == 0 || self.strangers.is_some() {
            return None;
        }
        match (0..self.members).find(|m| !used.contains(m)) {
            Some(m) => Some(m),
            None => {
                self.members += 1;
                Some(self.members - 1)
            }
        }
    }

    /// Where new connections should go now: the serving workers' members; with none serving,
    /// the starting ones' (clients wait in their queues until they accept); with none of
    /// those either, where they went before.
    fn steering_target(&self) -> Vec<u32> {
        let mut serving: Vec<u32> = self
            .slots
            .iter()
            .filter_map(|s| match &s.state {
                SlotState::Serving { up, .. } => self.listener_of(up.proc.member),
                _ => None,
            })
            .collect();
        if serving.is_empty() {
            serving = self
                .slots
                .iter()
                .filter_map(|s| match &s.state {
                    SlotState::Starting(incoming) => self.listener_of(incoming.member()),
                    _ => None,
                })
                .collect();
        }
        if serving.is_empty() {
            return self.spread.clone();
        }
        serving.sort_unstable();
        serving.dedup();
        serving
    }

    /// The member whose queue a worker accepts from: its own, or member 0 (the shared
    /// socket) for one started without a member after strangers were found.
    fn listener_of(&self, member: Option<u32>) -> Option<u32> {
        member.or((self.strangers.is_some() && self.members > 0).then_some(0))
    }

    /// Workers alive or being started, retiring ones included: the surge's measure.
    fn alive(&self) -> usize {
        self.retirees.len()
            + self.cancelled.len()
            + self
                .slots
                .iter()
                .map(|s| match s.state {
                    SlotState::Starting(_) => 1,
                    SlotState::Serving { incoming, .. } => 1 + usize::from(incoming.is_some()),
                    _ => 0,
                })
                .sum::<usize>()
    }

    /// Workers in the slots' roles (serving, starting, incoming): the surge's measure without
    /// the retiring ones, which go away by themselves.
    fn in_role(&self) -> usize {
        self.alive() - self.retirees.len() - self.cancelled.len()
    }

    fn serving_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, SlotState::Serving { .. }))
            .count()
    }

    fn any_serving(&self) -> Option<&Up> {
        self.slots.iter().find_map(|s| match &s.state {
            SlotState::Serving { up, .. } => Some(up),
            _ => None,
        })
    }

    fn any_starting(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s.state, SlotState::Starting(_)))
    }

    fn place_of(&self, id: WorkerId) -> Option<Place> {
        self.slots
            .iter()
            .enumerate()
            .find_map(|(i, s)| match &s.state {
                SlotState::Serving { up, .. } if up.proc.id == id => Some(Place::Serving(i)),
                SlotState::Serving {
                    incoming: Some(incoming),
                    ..
                } if incoming.id() == id => Some(Place::Incoming(i)),
                SlotState::Starting(incoming) if incoming.id() == id => Some(Place::Starting(i)),
                _ => None,
            })
    }

    fn place_of_pid(&self, pid: i32) -> Option<Place> {
        self.slots
            .iter()
            .enumerate()
            .find_map(|(i, s)| match &s.state {
                SlotState::Serving { up, .. } if up.proc.pid == pid => Some(Place::Serving(i)),
                SlotState::Serving {
                    incoming: Some(Incoming::Booting(b)),
                    ..
                } if b.proc.pid == pid => Some(Place::Incoming(i)),
                SlotState::Starting(Incoming::Booting(b)) if b.proc.pid == pid => {
                    Some(Place::Starting(i))
                }
                _ => None,
            })
    }

    /// Every worker's main process that holds a role (serving, starting, incoming).
    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.slots.iter().flat_map(|s| {
            let (a, b) = match &s.state {
                SlotState::Serving { up, incoming } => {
                    (Some(&up.proc), incoming.as_ref().and_then(Incoming::proc))
                }
                SlotState::Starting(incoming) => (incoming.proc(), None),
                _ => (None, None),
            };
            a.into_iter().chain(b)
        })
    }

    pub fn knows(&self, pid: i32, pgid: Option<i32>, own_group: bool) -> bool {
        self.procs()
            .any(|p| p.pid == pid || (own_group && pgid == Some(p.pid)))
            || self.retirees.knows(pid, pgid, own_group)
    }

    /// The worker the terminal's foreground belongs to (job control): slot 0's.
    pub fn terminal_holder(&self) -> Option<Proc> {
        self.slots.first().and_then(|s| match &s.state {
            SlotState::Serving { up, .. } => Some(up.proc),
            SlotState::Starting(Incoming::Booting(b)) => Some(b.proc),
            _ => None,
        })
    }

    pub fn deadline(&self) -> Option<Instant> {
        let slots = self.slots.iter().filter_map(|s| match &s.state {
            SlotState::Starting(incoming)
            | SlotState::Serving {
                incoming: Some(incoming),
                ..
            } => incoming.deadline(),
            SlotState::Backoff { until } => Some(*until),
            _ => None,
        });
        slots
            .chain(self.retirees.deadline())
            .chain(self.watch_deadline())
            .min()
    }

    /// The generation a worker started outside a rollout runs: the newest, unless nothing of
    /// the command runs, in which case the service starts afresh with a new one.
    fn generation_for_restart(&mut self, cx: &mut Cx) -> GenId {
        if let Some(rollout) = self.rollout {
            return rollout.target;
        }
        let anything = self
            .slots
            .iter()
            .any(|s| matches!(s.state, SlotState::Starting(_) | SlotState::Serving { .. }));
        if !anything {
            self.generation = cx.new_generation();
            // It runs the newest code: a restart queued until the last one was ready is done
            // by it.
            self.queued = false;
        }
        self.generation
    }

    fn status_line(&self) -> String {
        let serving: Vec<&Up> = self
            .slots
            .iter()
            .filter_map(|s| match &s.state {
                SlotState::Serving { up, .. } => Some(up),
                _ => None,
            })
            .collect();
        let mut line = match serving.as_slice() {
            [] => "starting".to_string(),
            [one] if self.slots.len() == 1 => {
                format!("gen {} serving (pid {})", one.proc.generation, one.proc.pid)
            }
            some => {
                let newest = some.iter().map(|u| u.proc.generation).max().unwrap_or(0);
                format!(
                    "gen {newest} serving ({} of {} workers ready)",
                    some.len(),
                    self.slots.len()
                )
            }
        };
        let (healthy, unhealthy) = self.health_counts();
        match (self.slots.len(), healthy, unhealthy) {
            (_, 0, 0) => {}
            (1, _, 0) => line.push_str(", healthy"),
            (1, _, _) => line.push_str(", unhealthy: replacing it"),
            (_, healthy, 0) => line.push_str(&format!(", {healthy} healthy")),
            (_, healthy, unhealthy) => {
                line.push_str(&format!(", {healthy} healthy, {unhealthy} unhealthy"));
            }
        }
        line
    }

    /// How many serving workers were found healthy, and unhealthy, by their last check that
    /// counted (`--health-*`).
    fn health_counts(&self) -> (usize, usize) {
        let mut counts = (0, 0);
        for slot in &self.slots {
            if let SlotState::Serving { up, .. } = &slot.state {
                match up.watches.health.and_then(|h| h.healthy) {
                    Some(true) => counts.0 += 1,
                    Some(false) => counts.1 += 1,
                    None => {}
                }
            }
        }
        counts
    }

    /// `STATUS=` upstream when the serving workers' health changed (issue 18: the health
    /// state shows in sd_notify's STATUS, as in `ctl status`).
    pub(super) fn say_health(&mut self, cx: &mut Cx) {
        let counts = self.health_counts();
        if self.up && counts != self.health_said {
            self.health_said = counts;
            cx.upstream(Upstream::Status(self.status_line()));
        }
    }

    // ----- events --------------------------------------------------------------------------

    pub fn on_reaped(self, cx: &mut Cx, pid: i32, status: i32) -> State {
        match crate::reaper::decode(status) {
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
                State::Running(self)
            }
            None => State::Running(self),
            Some(Status::Ended(exit)) => {
                let state = self.on_exit(cx, pid, exit);
                match state {
                    State::Running(mut running) => {
                        running.retirees.recheck(cx);
                        State::Running(running)
                    }
                    other => other,
                }
            }
        }
    }

    fn on_exit(mut self, cx: &mut Cx, pid: i32, exit: ChildExit) -> State {
        if let Some(restart) = self.reaped_check_or_build(cx, pid, exit) {
            if restart {
                return self.request_restart(cx);
            }
            return self.settle(cx);
        }
        if let Some((proc, outcome)) = self.retirees.exited(cx, pid, exit) {
            // A worker stopped to make room (--max-unavailable) is its slot's last in the
            // role until another takes it.
            // Its slot may be gone: `ctl scale` or SIGTTOU removed it while it drained.
            if let Some(slot) = self.slots.get_mut(proc.slot as usize)
                && outcome
                && matches!(slot.state, SlotState::Vacant | SlotState::Backoff { .. })
            {
                slot.end = Some(End::Exited(exit));
                cx.stats.last_exit = Some(exit);
            }
            return self.settle(cx);
        }
        let Some(place) = self.place_of_pid(pid) else {
            log!(cx, Debug, Subject::pid(pid), "reaped orphan: {exit}");
            return State::Running(self);
        };
        let several = cx.several();
        let kill_at = super::later(cx.now, cx.s.policy.stop_timeout);
        match place {
            Place::Starting(i) => {
                let SlotState::Starting(Incoming::Booting(boot)) = self.slots[i].state else {
                    return State::Running(self);
                };
                let mut proc = boot.proc;
                proc.exited = Some(exit);
                cx.stats.last_exit = Some(exit);
                if self.up {
                    log!(
                        cx,
                        Warn,
                        proc.subject(several),
                        "{exit} before it was ready"
                    );
                } else {
                    log!(cx, Info, proc.subject(several), "{exit}");
                }
                self.retirees.leader_gone(cx, proc, kill_at);
                self.worker_failed(cx, i, proc, Failure::Exited(exit), End::Exited(exit), None)
            }
            Place::Incoming(i) => {
                let SlotState::Serving {
                    up,
                    incoming: Some(Incoming::Booting(boot)),
                } = self.slots[i].state
                else {
                    return State::Running(self);
                };
                let mut proc = boot.proc;
                proc.exited = Some(exit);
                log!(
                    cx,
                    Error,
                    proc.subject(several),
                    "{exit} before it was ready; gen {} keeps serving",
                    up.proc.generation
                );
                self.slots[i].state = SlotState::Serving { up, incoming: None };
                self.retirees.leader_gone(cx, proc, kill_at);
                self.rollout_failed(
                    cx,
                    proc.generation,
                    Failure::Exited(exit),
                    true,
                    Subject::NONE,
                );
                self.replacement_failed(cx, i, Failure::Exited(exit));
                self.settle(cx)
            }
            Place::Serving(i) => {
                let SlotState::Serving { up, incoming } = self.slots[i].state else {
                    return State::Running(self);
                };
                triggers::stop_check(cx, &up);
                let mut proc = up.proc;
                proc.exited = Some(exit);
                self.slots[i].end = Some(End::Exited(exit));
                cx.stats.last_exit = Some(exit);
                match incoming {
                    Some(incoming) => {
                        log!(
                            cx,
                            Warn,
                            proc.subject(several),
                            "{exit} during a restart; gen {} takes over once ready",
                            incoming.generation()
                        );
                        self.slots[i].state = SlotState::Starting(incoming);
                        self.retirees.leader_gone(cx, proc, kill_at);
                        self.settle(cx)
                    }
                    None => {
                        log!(cx, Info, proc.subject(several), "{exit}");
                        self.retirees.leader_gone(cx, proc, kill_at);
                        let served = cx.now.saturating_duration_since(up.since);
                        self.slot_ended(cx, i, End::Exited(exit), Some(served))
                    }
                }
            }
        }
    }

    pub fn on_notify(mut self, cx: &mut Cx, id: WorkerId, fields: &[(String, String)]) -> State {
        let get = |key: &str| {
            fields
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let place = self.place_of(id);
        let proc = place
            .and_then(|_| self.procs().find(|p| p.id == id).copied())
            .or_else(|| {
                self.retirees
                    .iter()
                    .find(|r| r.proc.id == id)
                    .map(|r| r.proc)
            });
        let Some(proc) = proc else {
            return State::Running(self);
        };
        if let Some(status) = get("STATUS") {
            log!(cx, Debug, proc.subject(cx.several()), "status: {status}");
            if place.is_some() {
                cx.upstream(Upstream::Status(status.to_string()));
            }
        }
        if get("WATCHDOG") == Some("1")
            && let Some(Place::Serving(i)) = place
            && let SlotState::Serving { up, .. } = &mut self.slots[i].state
        {
            up.watchdog_ping(cx);
        }
        if let Some(usec) = get("EXTEND_TIMEOUT_USEC").and_then(|v| v.parse::<u64>().ok())
            && let Some(Place::Starting(i) | Place::Incoming(i)) = place
            && let Some(mut boot) = self.take_boot(i)
        {
            boot.extend(cx, usec);
            self.set_incoming(i, Incoming::Booting(boot));
            // graceful-run's own supervisor waits for the service's start or reload too.
            if !self.up || self.reloading {
                cx.upstream(Upstream::ExtendTimeout { usec });
            }
        }
        if get("READY") == Some("1")
            && let Some(Place::Starting(i) | Place::Incoming(i)) = place
            && let Some(boot) = self.take_boot(i)
        {
            let booted = boot.notified_ready(cx);
            return self.booted(cx, i, booted);
        }
        State::Running(self)
    }

    /// Takes slot `i`'s booting worker out, for a handler to put back what it becomes.
    fn take_boot(&mut self, i: usize) -> Option<Boot> {
        match self.slots[i].state {
            SlotState::Starting(Incoming::Booting(boot))
            | SlotState::Serving {
                incoming: Some(Incoming::Booting(boot)),
                ..
            } => Some(boot),
            _ => None,
        }
    }

    /// Puts what slot `i`'s booting worker became back, and acts on it.
    fn booted(mut self, cx: &mut Cx, i: usize, booted: Booted) -> State {
        let several = cx.several();
        match booted {
            Booted::Still(boot) => {
                self.set_incoming(i, Incoming::Booting(boot));
                State::Running(self)
            }
            Booted::Ready(new) => {
                match self.slots[i].state {
                    SlotState::Serving { up: old, .. } => {
                        self.slots[i].state = SlotState::Serving {
                            up: new,
                            incoming: None,
                        };
                        // New connections go to it before the line that says it took over.
                        self.steer(cx);
                        log!(
                            cx,
                            Info,
                            new.proc.subject(several),
                            "takes over from gen {}",
                            old.proc.generation
                        );
                        self.replace(cx, old);
                    }
                    _ => {
                        self.slots[i].state = SlotState::Serving {
                            up: new,
                            incoming: None,
                        };
                    }
                }
                self.settle(cx)
            }
            Booted::TimedOut(boot) => {
                boot.not_ready_line(cx);
                let mapping = cx.s.stop_mapping(Signal::TERM);
                let kill_at = super::later(cx.now, cx.s.policy.stop_timeout);
                match self.slots[i].state {
                    SlotState::Serving { up, .. } => {
                        self.slots[i].state = SlotState::Serving { up, incoming: None };
                        self.retirees.retire(cx, boot.proc, mapping, kill_at, false);
                        let subject = boot.proc.subject(several);
                        self.rollout_failed(
                            cx,
                            boot.proc.generation,
                            Failure::NotReady,
                            false,
                            subject,
                        );
                        self.replacement_failed(cx, i, Failure::NotReady);
                        self.settle(cx)
                    }
                    _ => {
                        self.slots[i].state = SlotState::Vacant;
                        self.retirees.retire(cx, boot.proc, mapping, kill_at, false);
                        self.worker_failed(cx, i, boot.proc, Failure::NotReady, End::NotReady, None)
                    }
                }
            }
        }
    }

    /// A worker that served and was replaced: with steering, new connections go elsewhere
    /// (`settle` steers) and it drains first; else it gets its stop signal now.
    fn replace(&mut self, cx: &mut Cx, old: Up) {
        triggers::stop_check(cx, &old);
        if old.watches.replacing == Some(Reason::Watchdog) {
            // Hung: draining it would wait for nothing.
            self.retirees.kill(cx, old.proc, false);
            return;
        }
        let mapping = cx.s.stop_mapping(Signal::TERM);
        if old.proc.member.is_some() {
            let until = super::later(cx.now, cx.s.policy.drain_timeout);
            self.retirees.drain(cx, old.proc, mapping, until);
        } else {
            let kill_at = super::later(cx.now, cx.s.policy.stop_timeout);
            self.retirees.retire(cx, old.proc, mapping, kill_at, false);
        }
    }

    /// Puts a starting worker back where it was: the slot's incoming, or its only worker.
    fn set_incoming(&mut self, i: usize, incoming: Incoming) {
        match &mut self.slots[i].state {
            SlotState::Serving { incoming: slot, .. } => *slot = Some(incoming),
            state => *state = SlotState::Starting(incoming),
        }
    }

    pub fn on_answer(mut self, cx: &mut Cx, ticket: Ticket, answer: Answer) -> State {
        match answer {
            Answer::Spawned(result) => {
                let found = self.slots.iter().position(|s| match s.state {
                    SlotState::Starting(Incoming::Launching(l))
                    | SlotState::Serving {
                        incoming: Some(Incoming::Launching(l)),
                        ..
                    } => l.ticket == ticket,
                    _ => false,
                });
                let Some(i) = found else {
                    if let Some(index) = self.cancelled.iter().position(|l| l.ticket == ticket) {
                        let launch = self.cancelled.remove(index);
                        if let Ok(boot) = launch.started(cx, result) {
                            let mapping = cx.s.stop_mapping(Signal::TERM);
                            let kill_at = super::later(cx.now, cx.s.policy.stop_timeout);
                            self.retirees.retire(cx, boot.proc, mapping, kill_at, false);
                        }
                        return self.settle(cx);
                    }
                    return State::Running(self);
                };
                let (SlotState::Starting(Incoming::Launching(launch))
                | SlotState::Serving {
                    incoming: Some(Incoming::Launching(launch)),
                    ..
                }) = self.slots[i].state
                else {
                    return State::Running(self);
                };
                let shared = matches!(&result, Ok(spawned) if spawned.shared);
                match launch.started(cx, result) {
                    Ok(boot) => {
                        self.set_incoming(i, Incoming::Booting(boot));
                        if shared {
                            // Not on the member the steering counted on (see `on_strangers`).
                            self.steer(cx);
                        }
                        // A `--ready` of zero, or nothing to wait on: ready at once.
                        let booted = boot.expire(cx);
                        self.booted(cx, i, booted)
                    }
                    Err(code) => match self.slots[i].state {
                        SlotState::Serving { up, .. } => {
                            self.slots[i].state = SlotState::Serving { up, incoming: None };
                            self.rollout_failed(
                                cx,
                                launch.generation,
                                Failure::CannotStart,
                                false,
                                Subject::NONE,
                            );
                            self.replacement_failed(cx, i, Failure::CannotStart);
                            self.settle(cx)
                        }
                        _ => {
                            self.slots[i].state = SlotState::Vacant;
                            let proc = Proc {
                                id: launch.id,
                                generation: launch.generation,
                                slot: launch.slot,
                                pid: 0,
                                started: cx.now,
                                exited: None,
                                member: launch.member,
                            };
                            self.worker_failed(
                                cx,
                                i,
                                proc,
                                Failure::CannotStart,
                                End::SpawnFailed(code),
                                None,
                            )
                        }
                    },
                }
            }
            Answer::Probed {
                missing,
                blind,
                itself,
                accepted,
            } => {
                let found = self.slots.iter().position(|s| match s.state {
                    SlotState::Starting(Incoming::Booting(b))
                    | SlotState::Serving {
                        incoming: Some(Incoming::Booting(b)),
                        ..
                    } => matches!(
                        b.readiness,
                        super::worker::Readiness::Probing(p) if p.look == super::worker::Look::Asked(ticket)
                    ),
                    _ => false,
                });
                match found.and_then(|i| self.take_boot(i).map(|b| (i, b))) {
                    Some((i, boot)) => {
                        let booted = boot.probed(cx, missing, blind, itself, accepted);
                        self.booted(cx, i, booted)
                    }
                    None => State::Running(self),
                }
            }
            Answer::Group { alive } => {
                let mapping = cx.s.stop_mapping(Signal::TERM);
                self.retirees.group_checked(cx, ticket, alive, mapping);
                self.settle(cx)
            }
            Answer::Observed(activity) => {
                self.retirees.observed(cx, ticket, activity);
                self.settle(cx)
            }
            Answer::CheckStarted(start) => self.check_started(cx, ticket, start),
            Answer::BuildStarted(pid) => self.build_started(cx, ticket, pid),
            Answer::HookStarted(_) | Answer::Leftovers { .. } | Answer::Descends(_) => {
                State::Running(self)
            }
        }
    }

    /// Whatever is due at `cx.now`.
    pub fn expire(mut self, cx: &mut Cx) -> State {
        self.retirees.expire(cx);
        self.expire_watches(cx);
        let now = cx.now;
        for slot in &mut self.slots {
            // Its backoff is over: it starts as soon as the surge allows.
            if let SlotState::Backoff { until } = slot.state
                && until <= now
            {
                slot.state = SlotState::Vacant;
            }
        }
        for i in 0..self.slots.len() {
            let due = match self.slots[i].state {
                SlotState::Starting(Incoming::Booting(b))
                | SlotState::Serving {
                    incoming: Some(Incoming::Booting(b)),
                    ..
                } => b.deadline() <= now,
                _ => false,
            };
            if due && let Some(boot) = self.take_boot(i) {
                let booted = boot.expire(cx);
                match self.booted(cx, i, booted) {
                    State::Running(running) => self = running,
                    other => return other,
                }
            }
        }
        self.settle(cx)
    }

    // ----- signals and requests ------------------------------------------------------------

    /// A signal from outside the command (the command's own were told apart already).
    pub fn on_signal(
        self,
        cx: &mut Cx,
        signal: Signal,
        origin: Origin,
        sender: Option<i32>,
    ) -> State {
        // The terminal sends Ctrl-C, Ctrl-\, Ctrl-Z and resizes to its whole foreground
        // group; without a group of its own the command has already received them.
        let delivered = origin == Origin::Kernel && !cx.s.own_group();
        match signal {
            // A hangup from the kernel (the terminal closed) is not a restart request.
            s if Some(s) == cx.s.policy.restart_signal
                && !(s == Signal::HUP && origin == Origin::Kernel) =>
            {
                log!(cx, Info, Subject::NONE, "{signal} received: restarting");
                self.request_restart(cx)
            }
            Signal::TERM | Signal::INT => {
                log!(cx, Info, Subject::NONE, "{signal} received: stopping");
                let request = Request {
                    signal,
                    sender,
                    at: cx.now,
                    ctl: false,
                };
                self.stop(cx, request, delivered.then_some(signal), None)
            }
            // One worker more or less, as gunicorn and unicorn do: with workers (else they are
            // forwarded, as before workers existed), from a process (the kernel sends these to
            // background jobs that touch the terminal), and unless --map-signal maps them.
            s if matches!(origin, Origin::Process { .. })
                && (s == Signal::TTIN || s == Signal::TTOU)
                && cx.several()
                && cx.s.policy.signal_map.translate(s) == Mapping::To(s) =>
            {
                let n = self.slots.len() as u32;
                let workers = if s == Signal::TTIN {
                    (n + 1).min(MAX_WORKERS)
                } else {
                    n.saturating_sub(1).max(1)
                };
                log!(
                    cx,
                    Info,
                    Subject::NONE,
                    "{signal} received: {workers} workers"
                );
                self.scale(cx, workers)
            }
            Signal::CONT => {
                // Terminal first, as shells do on `fg`: a command continued before it owns the
                // terminal reads it from the background and is stopped again (SIGTTIN).
                if cx.s.job_control
                    && cx.s.own_group()
                    && let Some(proc) = self.terminal_holder()
                {
                    cx.push(Action::GiveTerminal { pgid: proc.pid });
                }
                self.forward(cx, signal, delivered);
                State::Running(self)
            }
            _ => {
                self.forward(cx, signal, delivered);
                State::Running(self)
            }
        }
    }

    /// The restart signal, or `ctl restart`, from one of the command's own processes.
    pub fn restart_from_command(self, cx: &mut Cx, pid: i32, signal: Signal) -> State {
        log!(
            cx,
            Info,
            Subject::pid(pid),
            "restart requested by the command itself ({signal})"
        );
        self.request_restart(cx)
    }

    fn forward(&self, cx: &mut Cx, signal: Signal, delivered: bool) {
        let procs: Vec<Proc> = self.procs().copied().collect();
        super::forward(cx, signal, delivered, &procs, &self.retirees);
    }

    pub fn on_control(mut self, cx: &mut Cx, client: u64, peer: Peer, command: Command) -> State {
        let who = format!("graceful-run ctl (pid {}, uid {})", peer.pid, peer.uid);
        match command {
            Command::Restart { wait } => {
                log!(cx, Info, Subject::NONE, "restart requested by {who}");
                cx.reply(client, Reply::Accepted, !wait);
                if wait {
                    // Whatever rollout starts from now on carries this request (a queued one
                    // included): its end is the answer.
                    self.waiters.push(Waiter {
                        client,
                        after: cx.newest_generation(),
                    });
                }
                self.request_restart(cx)
            }
            Command::Scale { workers } => {
                if workers == 0 || workers > MAX_WORKERS {
                    cx.reply(client, Reply::Failed(Refusal::BadCount(workers)), true);
                    return State::Running(self);
                }
                cx.reply(client, Reply::Accepted, true);
                log!(
                    cx,
                    Info,
                    Subject::NONE,
                    "{workers} workers requested by {who}"
                );
                self.scale(cx, workers)
            }
            Command::Stop { wait } => {
                cx.reply(client, Reply::Accepted, !wait);
                log!(cx, Info, Subject::NONE, "stop requested by {who}");
                let request = Request {
                    signal: Signal::TERM,
                    sender: None,
                    at: cx.now,
                    ctl: true,
                };
                self.stop(cx, request, None, wait.then_some(client))
            }
        }
    }

    /// Runs `workers` workers from now on: new slots start as the surge allows; the highest
    /// slots beyond the count go, their workers drained and stopped as replaced ones are.
    pub(super) fn scale(mut self, cx: &mut Cx, workers: u32) -> State {
        let workers = workers.clamp(1, MAX_WORKERS) as usize;
        cx.stats.several |= workers > 1;
        while self.slots.len() < workers {
            self.slots.push(Slot {
                state: SlotState::Vacant,
                restarts: Restarts::default(),
                end: None,
            });
        }
        let mapping = cx.s.stop_mapping(Signal::TERM);
        let kill_at = super::later(cx.now, cx.s.policy.stop_timeout);
        while self.slots.len() > workers {
            let Some(slot) = self.slots.pop() else { break };
            let (up, incoming) = match slot.state {
                SlotState::Serving { up, incoming } => (Some(up), incoming),
                SlotState::Starting(incoming) => (None, Some(incoming)),
                _ => (None, None),
            };
            match incoming {
                Some(Incoming::Booting(boot)) => {
                    self.retirees.retire(cx, boot.proc, mapping, kill_at, false)
                }
                Some(Incoming::Launching(launch)) => self.cancelled.push(launch),
                None => {}
            }
            if let Some(up) = up {
                self.replace(cx, up);
            }
        }
        self.settle(cx)
    }

    fn request_restart(mut self, cx: &mut Cx) -> State {
        if self.rollout.is_some() {
            if !self.queued {
                self.queued = true;
                log!(
                    cx,
                    Info,
                    Subject::NONE,
                    "restart queued until the current restart ends"
                );
            }
            return State::Running(self);
        }
        if self.serving_count() == 0 {
            if self.any_starting() {
                if !self.queued {
                    self.queued = true;
                    log!(
                        cx,
                        Info,
                        Subject::NONE,
                        "restart queued until the current generation is ready"
                    );
                }
                return State::Running(self);
            }
            log!(
                cx,
                Info,
                Subject::NONE,
                "restart requested while the command is down: starting it now"
            );
        } else {
            cx.stats.restarts += 1;
        }
        self.begin_rollout(cx);
        self.settle(cx)
    }

    fn begin_rollout(&mut self, cx: &mut Cx) {
        self.generation = cx.new_generation();
        self.rollout = Some(Rollout {
            target: self.generation,
        });
        if !self.reloading {
            self.reloading = true;
            cx.upstream(Upstream::Reloading);
        }
    }

    /// The end of the service by a stop request.
    pub fn stop(
        self,
        cx: &mut Cx,
        request: Request,
        delivered: Option<Signal>,
        waiter: Option<u64>,
    ) -> State {
        for waiter in &self.waiters {
            cx.reply(waiter.client, Reply::Failed(Refusal::Stopping), true);
        }
        cx.upstream(Upstream::Stopping);
        Ending::requested(cx, self, request, delivered, waiter)
    }
}
