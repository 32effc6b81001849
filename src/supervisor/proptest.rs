//! Property test of the core: random sequences of events from a simulated world of processes
//! (servers that obey or ignore TERM, children left in a group, orphans, hooks that hang,
//! spawns that fail, `--workers`), fed through the executor's own dispatch loop
//! ([`driver::dispatch`]), on a clock that may overshoot deadlines (tokio's `select!` picks any
//! ready branch, so an event can arrive after a deadline passed and before its timer fired),
//! with every kind of event: signals of every role (requests, forwarded ones, job control,
//! the command's own) under `--map-signal` and `--stop-signal`, `graceful-run ctl` requests,
//! notify messages, reaps of every status. Checked after every step:
//!
//! - each slot has at most one worker in its role and one incoming, and an incoming one only
//!   beside a serving one;
//! - workers alive never exceed the current count (`--workers`, `ctl scale`, SIGTTIN/SIGTTOU)
//!   plus `--max-surge`, or the number alive when the count last went down, while those drain
//!   (counting only processes the core can account for: not ones that survived SIGKILL, nor
//!   ones it cannot see);
//! - the core itself never takes the ready workers below the count − `--max-unavailable`
//!   once that many were ready (rollouts, scaling, ready and restart events; crashes and
//!   triggers may);
//! - every armed deadline is in the future;
//! - no main process is signalled after it was reaped, and no process group after a check
//!   said it was empty (the answer counts from the moment it was given, so a signal later in
//!   the same step counts too);
//! - O_NONBLOCK is never reset while any process that holds the listeners lives;
//! - graceful-run's supervisor hears READY=1 only while a worker runs, and RELOADING=1 never
//!   twice without an end in between;
//! - every `ctl` client gets exactly one last reply by the exit.
//!
//! And at the end, after a stop: the exit comes within drain delay + stop timeout + hook
//! timeout (+ [`KILL_GRACE`] per stage for processes that do not die of SIGKILL); every process
//! still alive was sent SIGKILL; the outcome is the last role holder's status with one worker,
//! and a code only when its last start failed (the spawn's own code, or 124 when it was never
//! ready).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::core::driver::{self, Answers, World};
use super::core::*;
use super::tests::{exited, killed, settings};
use crate::exit::{NOT_READY, Outcome};
use crate::policy::{Ready, RestartPolicy};
use crate::signal::{Mapping, Signal, SignalMap, SignalRule};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Leader(WorkerId),
    /// A child of a leader; without a process group of its own it is in graceful-run's.
    Child(WorkerId),
    /// A child of graceful-run outside every worker (re-parented to the subreaper).
    Orphan,
    /// Re-parented to another init (no subreaper): not graceful-run's to find or stop.
    Lost,
    Hook,
}

#[derive(Clone, Debug)]
struct Proc {
    pgid: i32,
    kind: Kind,
    alive: bool,
    /// Exits when it receives TERM/INT/QUIT (else ignores them).
    obeys: bool,
    /// Survives SIGKILL (uninterruptible sleep).
    unkillable: bool,
    got_kill: bool,
    signalled: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Signal(u8, u8),
    Timer,
    /// Moves the clock on without firing anything: the next event may come after deadlines.
    Advance(u16),
    Ready(u8),
    Status(u8),
    Crash(u8, u8),
    /// A job-control stop of a main process (Ctrl-Z).
    Stop(u8),
    Orphan,
    HookExit,
    Ctl(u8),
    /// `ctl scale` with a count, bad ones included.
    Scale(u8),
    /// A --health-http probe's end, a WATCHDOG=1, a file change.
    Checked(u8, bool),
    Ping(u8),
    Changed,
    /// Another program of the same user joins the steered listener's reuseport group.
    Stranger,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..12, 0u8..6).prop_map(|(s, o)| Op::Signal(s, o)),
        4 => Just(Op::Timer),
        2 => (1u16..3000).prop_map(Op::Advance),
        4 => (0u8..8).prop_map(Op::Ready),
        1 => (0u8..8).prop_map(Op::Status),
        2 => (0u8..8, 0u8..6).prop_map(|(g, s)| Op::Crash(g, s)),
        1 => (0u8..8).prop_map(Op::Stop),
        1 => Just(Op::Orphan),
        1 => Just(Op::HookExit),
        1 => (0u8..4).prop_map(Op::Ctl),
        1 => (0u8..7).prop_map(Op::Scale),
        1 => (0u8..8, any::<bool>()).prop_map(|(w, ok)| Op::Checked(w, ok)),
        1 => (0u8..8).prop_map(Op::Ping),
        1 => Just(Op::Changed),
        1 => Just(Op::Stranger),
    ]
}

/// A tiny deterministic random source for the world's answers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The simulated world the core acts on.
struct Sim {
    settings: Settings,
    rng: Rng,
    now: Instant,
    armed: Option<Instant>,
    procs: BTreeMap<i32, Proc>,
    next_pid: i32,
    /// Groups the core was told are empty.
    empty_groups: BTreeSet<i32>,
    /// Main processes the core was told exited.
    reaped: BTreeSet<i32>,
    /// Worker -> (slot, main pid).
    workers: BTreeMap<WorkerId, (u32, i32)>,
    /// Worker -> its main process's raw status.
    statuses: BTreeMap<WorkerId, i32>,
    /// The last failed spawn's code, while no worker held a role after it.
    last_spawn_failure: Option<i32>,
    ctl_clients: u64,
    /// ctl client -> last replies received.
    last_replies: BTreeMap<u64, u32>,
    reloading: bool,
    /// Slot -> the worker that last held its role.
    holders: BTreeMap<u32, WorkerId>,
    /// Slot -> the last replacement seen starting beside its worker (it may take the role
    /// and lose it within one step, unseen).
    incoming: BTreeMap<u32, WorkerId>,
    ever_served: BTreeSet<WorkerId>,
    stop_since: Option<Instant>,
    trace: bool,
    /// With steering, the kernel's array: each member's last holder.
    members: Vec<Option<WorkerId>>,
    /// Where new connections go, as last told.
    spread: Option<Vec<u32>>,
    /// A stranger's index in the kernel's array (it joined at the end, after `members`);
    /// whether the executor found it (at a spawn or a steering change) and the core was told.
    stranger: Option<usize>,
    stranger_found: bool,
    stranger_untold: bool,
    core_knows_stranger: bool,
    /// Workers alive when the count last went down, less those gone since: they may exceed
    /// the new count + the surge while they drain.
    excess: usize,
    /// The count as last seen.
    slots: u32,
    /// More than one worker ran at some point (scaled up).
    several: bool,
}

impl World for Sim {
    fn now(&mut self) -> Instant {
        self.now
    }

    fn feeding(&mut self, event: &Event) {
        if self.trace {
            eprintln!("> {event:?}");
        }
        if matches!(event, Event::Strangers { .. }) {
            self.core_knows_stranger = true;
        }
        if let Event::Reaped { pid, status } = *event
            && crate::reaper::decode(status)
                .is_some_and(|s| matches!(s, crate::reaper::Status::Ended(_)))
        {
            self.reaped.insert(pid);
        }
    }

    fn stepped(&mut self, core: &Core) {
        self.check(core);
    }

    fn perform(&mut self, action: Action, answers: &mut Answers) {
        if self.trace {
            eprintln!("  {:?} {action:?}", self.now);
        }
        match action {
            Action::Ask { ticket, question } => {
                let answer = self.answer(question, answers);
                answers.push(Event::Answer { ticket, answer });
            }
            Action::Signal { target, signal } => {
                let pids: Vec<i32> = match target {
                    Target::Leader { pid, .. } => {
                        assert!(
                            !self.reaped.contains(&pid),
                            "signalled main process {pid}, already seen to exit"
                        );
                        vec![pid]
                    }
                    Target::Group { pgid, .. } | Target::Hook { pid: pgid } => {
                        assert!(
                            !self.empty_groups.contains(&pgid),
                            "signalled group {pgid}, already known empty"
                        );
                        self.procs
                            .iter()
                            .filter(|(_, p)| p.pgid == pgid)
                            .map(|(pid, _)| *pid)
                            .collect()
                    }
                    Target::Leftovers => self
                        .procs
                        .iter()
                        .filter(|(_, p)| p.kind == Kind::Orphan)
                        .map(|(pid, _)| *pid)
                        .collect(),
                };
                for pid in pids {
                    self.deliver(pid, signal, answers);
                }
            }
            Action::ArmTimer(at) => {
                if let Some(at) = at {
                    assert!(at > self.now, "armed a deadline that is not in the future");
                }
                self.armed = at;
            }
            Action::Upstream(message) => match message {
                Upstream::Reloading => {
                    assert!(!self.reloading, "RELOADING=1 twice without an end");
                    self.reloading = true;
                }
                Upstream::Reloaded | Upstream::ReloadFailed { ready: true, .. } => {
                    self.reloading = false;
                    self.assert_something_runs();
                }
                Upstream::Ready { .. } => self.assert_something_runs(),
                Upstream::Stopping => self.reloading = false,
                Upstream::ReloadFailed { ready: false, .. }
                | Upstream::Status(_)
                | Upstream::ExtendTimeout { .. } => {}
            },
            Action::Reply { client, last, .. } => {
                if last {
                    *self.last_replies.entry(client).or_default() += 1;
                    assert_eq!(self.last_replies[&client], 1, "two last replies");
                }
            }
            Action::SampleMemory { workers } => {
                for (worker, _) in workers {
                    let bytes = if self.rng.chance(50) {
                        1 << 30
                    } else {
                        1 << 20
                    };
                    answers.push(Event::Memory { worker, bytes });
                }
            }
            Action::Steer { members } => {
                // The executor looks for strangers before it steers.
                self.find_stranger();
                let mut members = members;
                if self.stranger_found {
                    // As the executor: a member not made is not steered to.
                    members.retain(|m| (*m as usize) < self.members.len());
                    if members.is_empty() {
                        members.push(0);
                    }
                }
                for m in &members {
                    assert!(
                        (*m as usize) < self.members.len(),
                        "steered to member {m} of {}",
                        self.members.len()
                    );
                    // graceful-run's members are all before the stranger in the array.
                    assert!(
                        self.stranger.is_none_or(|at| (*m as usize) < at),
                        "steered to member {m}, the stranger's index"
                    );
                }
                self.spread = Some(members);
            }
            Action::Exit(_) => unreachable!("the dispatch loop keeps the exit"),
            Action::Log { .. }
            | Action::GiveTerminal { .. }
            | Action::StopSelf
            | Action::Release { .. }
            | Action::CloseListeners => {}
        }
        // As the executor: the strangers found, told after the action's own answer.
        if std::mem::take(&mut self.stranger_untold) {
            answers.push(Event::Strangers {
                what: "another program listens on 127.0.0.1:8080".into(),
            });
        }
    }
}

impl Sim {
    fn new(settings: Settings, seed: u64) -> Sim {
        let settings_steering = settings.steering;
        Sim {
            settings,
            rng: Rng(seed | 1),
            now: Instant::now(),
            armed: None,
            procs: BTreeMap::new(),
            next_pid: 100,
            empty_groups: BTreeSet::new(),
            reaped: BTreeSet::new(),
            workers: BTreeMap::new(),
            statuses: BTreeMap::new(),
            last_spawn_failure: None,
            ctl_clients: 0,
            last_replies: BTreeMap::new(),
            reloading: false,
            holders: BTreeMap::new(),
            incoming: BTreeMap::new(),
            ever_served: BTreeSet::new(),
            stop_since: None,
            trace: false,
            members: if settings_steering {
                vec![None]
            } else {
                Vec::new()
            },
            spread: None,
            stranger: None,
            stranger_found: false,
            stranger_untold: false,
            core_knows_stranger: false,
            excess: 0,
            slots: 0,
            several: false,
        }
    }

    /// What the executor does at a spawn with a member and before steering: a stranger in the
    /// array is found (the core is told once, after the action, see `perform`).
    fn find_stranger(&mut self) -> bool {
        if self.stranger.is_some() && !self.stranger_found {
            self.stranger_found = true;
            self.stranger_untold = true;
        }
        self.stranger_found
    }

    fn check(&mut self, core: &Core) {
        let snapshot = core.snapshot();
        let s = &self.settings;
        let mut roles: BTreeMap<u32, usize> = BTreeMap::new();
        let mut incoming: BTreeMap<u32, usize> = BTreeMap::new();
        let mut serving_slots = BTreeSet::new();
        for w in &snapshot.workers {
            match w.role {
                Role::Starting | Role::Serving | Role::Draining => {
                    *roles.entry(w.slot).or_default() += 1;
                    // A new worker in the role: the last start did not fail.
                    if self.holders.insert(w.slot, w.id) != Some(w.id) {
                        self.last_spawn_failure = None;
                    }
                    if w.role == Role::Serving {
                        self.ever_served.insert(w.id);
                        serving_slots.insert(w.slot);
                    }
                    if w.role == Role::Draining {
                        serving_slots.insert(w.slot);
                    }
                }
                Role::Retiring => {}
                Role::Incoming => {
                    *incoming.entry(w.slot).or_default() += 1;
                    self.incoming.insert(w.slot, w.id);
                }
                Role::Stopping => {}
            }
        }
        assert!(
            roles.values().all(|n| *n <= 1),
            "two in a role: {snapshot:?}"
        );
        assert!(
            incoming.values().all(|n| *n <= 1),
            "two incoming: {snapshot:?}"
        );
        for slot in incoming.keys() {
            assert!(
                serving_slots.contains(slot),
                "incoming without a serving one: {snapshot:?}"
            );
        }
        let alive = self.alive_workers();
        if snapshot.slots < self.slots {
            self.excess = self.excess.max(alive);
        }
        self.excess = self.excess.min(alive);
        self.slots = snapshot.slots;
        self.several |= snapshot.slots > 1;
        let cap = ((snapshot.slots + s.policy.max_surge) as usize).max(self.excess);
        if snapshot.phase != Phase::Stopping && snapshot.phase != Phase::Done {
            assert!(
                alive <= cap,
                "{} workers alive, over {cap}: {snapshot:?}",
                self.alive_workers()
            );
        }
        if snapshot.phase == Phase::Stopping && self.stop_since.is_none() {
            self.stop_since = Some(self.now);
        }
        // New connections go to the serving workers' members, or with none serving, to the
        // starting ones'.
        if s.steering && !matches!(snapshot.phase, Phase::Stopping | Phase::Done) {
            // A worker without a member after strangers were found shares member 0's socket.
            let shared = self.core_knows_stranger.then_some(0);
            let members = |role: Role| {
                let mut members: Vec<u32> = snapshot
                    .workers
                    .iter()
                    .filter(|w| w.role == role)
                    .filter_map(|w| w.member.or(shared))
                    .collect();
                members.sort_unstable();
                members.dedup();
                members
            };
            let serving = members(Role::Serving);
            let spread = self.spread.clone().unwrap_or_default();
            if !serving.is_empty() {
                assert_eq!(
                    spread, serving,
                    "new connections go elsewhere: {snapshot:?}"
                );
            } else {
                // Workers still being started are not in the snapshot: the starting ones'
                // members are among those new connections go to.
                for member in members(Role::Starting) {
                    assert!(
                        spread.contains(&member),
                        "new connections go elsewhere than {member}: {spread:?} {snapshot:?}"
                    );
                }
            }
        }
    }

    /// READY=1 (of any kind) tells systemd the service serves: a worker's main process must
    /// at least be running (not the case in a crash backoff).
    fn assert_something_runs(&self) {
        assert!(
            self.procs
                .iter()
                .any(|(pid, p)| matches!(p.kind, Kind::Leader(_)) && !self.reaped.contains(pid)),
            "READY=1 while nothing serves"
        );
    }

    fn answer(&mut self, question: Question, answers: &mut Answers) -> Answer {
        match question {
            Question::Spawn {
                worker,
                slot,
                reset_nonblocking,
                member,
                ..
            } => {
                // The executor gives the shared socket instead of a member once it found a
                // stranger: a member made now would not get the index the core counts on.
                let shared = member.is_some() && self.find_stranger();
                let member = if shared { None } else { member };
                if let Some(m) = member {
                    // The kernel's array: a new member joins at the end, and no member is
                    // given out while a process of its last holder may still hold it.
                    let m = m as usize;
                    assert!(
                        m <= self.members.len(),
                        "member {m} of {}",
                        self.members.len()
                    );
                    if m == self.members.len() {
                        self.members.push(None);
                    }
                    if let Some(previous) = self.members[m]
                        && self.accountable()
                    {
                        let holders: Vec<i32> = self
                            .procs
                            .iter()
                            .filter(|(_, p)| {
                                p.alive
                                    && matches!(p.kind, Kind::Leader(w) | Kind::Child(w) if w == previous)
                                    && !(p.got_kill && p.unkillable)
                            })
                            .map(|(pid, _)| *pid)
                            .collect();
                        assert!(
                            holders.is_empty(),
                            "member {m} given out while {holders:?} of worker {previous} may hold it"
                        );
                    }
                    self.members[m] = Some(worker);
                }
                if reset_nonblocking {
                    // Nothing that may hold the listeners lives: no worker's process, in its
                    // own group or in graceful-run's.
                    // Processes that survived SIGKILL were given up on, and are no longer
                    // accounted for.
                    let holders: Vec<i32> = self
                        .procs
                        .iter()
                        .filter(|(_, p)| {
                            p.alive
                                && matches!(p.kind, Kind::Leader(_) | Kind::Child(_))
                                && !(p.got_kill && p.unkillable)
                        })
                        .map(|(pid, _)| *pid)
                        .collect();
                    assert!(
                        holders.is_empty(),
                        "O_NONBLOCK reset while {holders:?} may hold the listeners"
                    );
                }
                if self.rng.chance(8) {
                    self.last_spawn_failure = Some(127);
                    return Answer::Spawned(Err(127));
                }
                let pid = self.new_proc(None, Kind::Leader(worker));
                self.workers.insert(worker, (slot, pid));
                if self.rng.chance(40) {
                    // Without a group of its own, the command's processes are in
                    // graceful-run's group (pgid 1 here).
                    let pgid = if self.settings.delivery == Delivery::NoGroup {
                        1
                    } else {
                        pid
                    };
                    self.new_proc(Some(pgid), Kind::Child(worker));
                }
                Answer::Spawned(Ok(Spawned {
                    pid,
                    random: self.rng.next(),
                    executable: "server".into(),
                    notify_failed: None,
                    shared,
                }))
            }
            Question::CheckGroup { pgid, .. } => {
                let alive = self.procs.values().any(|p| p.pgid == pgid && p.alive);
                if !alive {
                    self.empty_groups.insert(pgid);
                }
                Answer::Group { alive }
            }
            Question::CheckLeftovers => {
                // Reaps of orphans that died meanwhile come first.
                let dead: Vec<i32> = self
                    .procs
                    .iter()
                    .filter(|(_, p)| p.kind == Kind::Orphan && !p.alive && !p.signalled)
                    .map(|(pid, _)| *pid)
                    .collect();
                for pid in dead {
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.signalled = true;
                    }
                    answers.push(Event::Reaped {
                        pid,
                        status: exited(0),
                    });
                }
                let found = self
                    .procs
                    .values()
                    .any(|p| p.kind == Kind::Orphan && p.alive);
                Answer::Leftovers { found }
            }
            Question::Probe { diagnose, .. } => {
                let missing = if self.rng.chance(30) {
                    vec![]
                } else {
                    vec!["tcp://127.0.0.1:1".into()]
                };
                Answer::Probed {
                    accepted: missing.is_empty() && self.rng.chance(50),
                    missing,
                    blind: self.rng.chance(10).then_some(
                        crate::accepting::Blind::PermissionDenied {
                            pid: 1,
                            not_dumpable: false,
                        },
                    ),
                    itself: (diagnose && self.rng.chance(50))
                        .then(|| "0.0.0.0:8000".parse().expect("an address")),
                }
            }
            Question::RunHook { .. } => Answer::HookStarted(if self.rng.chance(10) {
                None
            } else {
                Some(self.new_proc(None, Kind::Hook))
            }),
            Question::Descends { pid } => {
                Answer::Descends(self.procs.get(&pid).is_some_and(|p| p.kind != Kind::Lost))
            }
            Question::StartCheck { .. } => Answer::CheckStarted(match self.rng.next() % 3 {
                0 => CheckStart::Process(self.new_proc(None, Kind::Hook)),
                1 => CheckStart::Probe,
                _ => CheckStart::Failed("refused".into()),
            }),
            Question::StartBuild => Answer::BuildStarted(if self.rng.chance(10) {
                None
            } else {
                Some(self.new_proc(None, Kind::Hook))
            }),
            Question::Observe { .. } => {
                let quiet = self.rng.chance(40);
                let n = if quiet {
                    0
                } else {
                    1 + (self.rng.next() % 3) as u32
                };
                Answer::Observed(Activity {
                    queued: u32::from(self.rng.chance(20)) * n,
                    in_flight: 0,
                    busy: n,
                    idle: (self.rng.next() % 3) as u32,
                    blind: self.rng.chance(10),
                })
            }
        }
    }

    /// A process died: its children are re-parented, to graceful-run if it is a subreaper.
    fn died(&mut self, pid: i32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.alive = false;
        }
    }

    fn new_proc(&mut self, pgid: Option<i32>, kind: Kind) -> i32 {
        self.next_pid += 1;
        let pid = self.next_pid;
        let obeys = !self.rng.chance(20);
        let unkillable = matches!(kind, Kind::Orphan | Kind::Child(_)) && self.rng.chance(5);
        self.procs.insert(
            pid,
            Proc {
                pgid: pgid.unwrap_or(pid),
                kind,
                alive: true,
                obeys,
                unkillable,
                got_kill: false,
                signalled: false,
            },
        );
        pid
    }

    fn deliver(&mut self, pid: i32, signal: Signal, answers: &mut Answers) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        p.signalled = true;
        if signal == Signal::KILL {
            p.got_kill = true;
        }
        if !p.alive {
            return;
        }
        let quit = Signal::from_raw(nix::libc::SIGQUIT).expect("QUIT exists");
        let dies = match signal {
            s if s == Signal::KILL => !p.unkillable,
            s if s == Signal::TERM || s == Signal::INT || s == quit => p.obeys,
            _ => false,
        };
        if dies {
            let kind = p.kind;
            self.died(pid);
            let status = match (signal, kind) {
                (s, _) if s == Signal::KILL => killed(9),
                (_, Kind::Leader(_)) => exited(0),
                (s, _) => killed(s.raw()),
            };
            self.report_death(pid, status, answers);
        }
    }

    /// A dead process graceful-run can reap (its child, or any process when it is the
    /// subreaper) is reported.
    fn report_death(&mut self, pid: i32, status: i32, answers: &mut Answers) {
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        let kind = p.kind;
        // Children of a worker's main process: re-parented to graceful-run only with a
        // subreaper; without one, another init reaps them.
        if let Kind::Child(_) = kind
            && !self.settings.reaper
        {
            return;
        }
        if kind == Kind::Lost {
            return;
        }
        if let Kind::Leader(worker) = kind {
            self.statuses.insert(worker, status);
            // Its children are orphans now: re-parented to graceful-run as the subreaper.
            let reaper = self.settings.reaper;
            for c in self.procs.values_mut() {
                if c.kind == Kind::Child(worker) && c.pgid == 1 {
                    c.kind = if reaper { Kind::Orphan } else { Kind::Lost };
                }
            }
        }
        answers.push(Event::Reaped { pid, status });
    }

    /// Whether the core can account for every process of a worker: in a group of its own,
    /// and with graceful-run as their subreaper.
    fn accountable(&self) -> bool {
        self.settings.delivery != Delivery::NoGroup && self.settings.reaper
    }

    /// Workers (by id) with a live process the core can account for.
    fn alive_workers(&self) -> usize {
        if !self.accountable() {
            return 0;
        }
        let live: BTreeSet<WorkerId> = self
            .procs
            .values()
            .filter(|p| p.alive && !(p.got_kill && p.unkillable))
            .filter_map(|p| match p.kind {
                Kind::Leader(w) | Kind::Child(w) => Some(w),
                _ => None,
            })
            .collect();
        live.len()
    }
}

/// The core in its world, driven by ops.
struct Harness {
    core: Core,
    sim: Sim,
    outcome: Option<Outcome>,
    exit_at: Option<Instant>,
    /// How long the clock ran past armed deadlines during the stop.
    overshoot: Duration,
}

impl Harness {
    fn new(settings: Settings, seed: u64) -> Harness {
        Harness {
            core: Core::new(settings.clone()),
            sim: Sim::new(settings, seed),
            outcome: None,
            exit_at: None,
            overshoot: Duration::ZERO,
        }
    }

    fn feed(&mut self, event: Event) {
        if self.outcome.is_some() {
            return;
        }
        if let Some(outcome) = driver::dispatch(&mut self.core, &mut self.sim, event) {
            self.outcome = Some(outcome);
            self.exit_at = Some(self.sim.now);
        }
    }

    fn fire(&mut self) {
        if let Some(at) = self.sim.armed {
            self.sim.now = self.sim.now.max(at);
            self.feed(Event::Timer);
        }
    }

    fn live_leaders(&self) -> Vec<i32> {
        self.sim
            .procs
            .iter()
            .filter(|(_, p)| p.alive && matches!(p.kind, Kind::Leader(_)))
            .map(|(pid, _)| *pid)
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Signal(s, o) => {
                let signal = [
                    Signal::TERM,
                    Signal::INT,
                    Signal::HUP,
                    Signal::HUP,
                    usr1(),
                    Signal::CONT,
                    sig(nix::libc::SIGTSTP),
                    sig(nix::libc::SIGQUIT),
                    sig(nix::libc::SIGWINCH),
                    Signal::from_raw(nix::libc::SIGRTMIN() + 3).expect("RTMIN+3 exists"),
                    Signal::TTIN,
                    Signal::TTOU,
                ][s as usize];
                let leaders = self.live_leaders();
                let origin = match o {
                    0 => Origin::Kernel,
                    1 => Origin::Process {
                        pid: 7,
                        pgid: Some(7),
                    },
                    2 => Origin::Process {
                        pid: 8,
                        pgid: Some(8),
                    },
                    3 => Origin::Process { pid: 0, pgid: None },
                    // One of the command's own processes, by its group.
                    4 => match leaders.first() {
                        Some(&pid) => Origin::Process {
                            pid: pid + 1000,
                            pgid: Some(pid),
                        },
                        None => Origin::Kernel,
                    },
                    // A descendant outside every group (an orphan).
                    _ => {
                        let orphan = self
                            .sim
                            .procs
                            .iter()
                            .find(|(_, p)| p.alive && p.kind == Kind::Orphan)
                            .map(|(pid, _)| *pid);
                        match orphan {
                            Some(pid) => Origin::Process { pid, pgid: Some(1) },
                            None => Origin::Myself,
                        }
                    }
                };
                self.feed(Event::Signal { signal, origin });
            }
            Op::Timer => self.fire(),
            Op::Advance(ms) => {
                let to = self.sim.now + Duration::from_millis(ms as u64);
                // Time the clock spent past a deadline while stopping is the world's delay,
                // not the core's: it does not count against the stop's bound.
                if self.sim.stop_since.is_some()
                    && let Some(armed) = self.sim.armed
                    && armed < to
                {
                    self.overshoot += to - armed.max(self.sim.now);
                }
                self.sim.now = to;
            }
            Op::Ready(i) | Op::Status(i) => {
                let workers: Vec<WorkerId> = self.sim.workers.keys().copied().collect();
                if let Some(worker) = workers.iter().rev().nth(i as usize % workers.len().max(1)) {
                    let fields = match op {
                        Op::Ready(_) => vec![("READY".into(), "1".into())],
                        _ => vec![("STATUS".into(), "busy".into())],
                    };
                    self.feed(Event::Notify {
                        worker: *worker,
                        fields,
                    });
                }
            }
            Op::Crash(i, s) => {
                let alive: Vec<i32> = self
                    .sim
                    .procs
                    .iter()
                    .filter(|(_, p)| p.alive && matches!(p.kind, Kind::Leader(_) | Kind::Child(_)))
                    .map(|(pid, _)| *pid)
                    .collect();
                if let Some(pid) = alive.get(i as usize % alive.len().max(1)).copied() {
                    self.sim.died(pid);
                    let status = [
                        exited(0),
                        exited(1),
                        exited(3),
                        killed(9),
                        killed(15),
                        killed(40),
                    ][s as usize];
                    let mut answers = Answers::default();
                    self.sim.report_death(pid, status, &mut answers);
                    self.feed_all(answers);
                }
            }
            Op::Stop(i) => {
                let leaders = self.live_leaders();
                if let Some(pid) = leaders.get(i as usize % leaders.len().max(1)).copied() {
                    let stopped = 0x7f | (nix::libc::SIGTSTP << 8);
                    self.feed(Event::Reaped {
                        pid,
                        status: stopped,
                    });
                }
            }
            Op::Orphan => {
                // Orphans come from the command's processes, before the service ends.
                if self.sim.settings.reaper && self.sim.stop_since.is_none() {
                    self.sim.new_proc(Some(1), Kind::Orphan);
                }
            }
            Op::HookExit => {
                let hook = self
                    .sim
                    .procs
                    .iter()
                    .find(|(_, p)| p.kind == Kind::Hook && p.alive)
                    .map(|(pid, _)| *pid);
                if let Some(pid) = hook {
                    self.sim.died(pid);
                    self.feed(Event::Reaped {
                        pid,
                        status: exited(0),
                    });
                }
            }
            Op::Checked(i, ok) => {
                if let Some(worker) = self.some_worker(i) {
                    let result = if ok { Ok(200) } else { Err("refused".into()) };
                    self.feed(Event::Checked { worker, result });
                }
            }
            Op::Ping(i) => {
                if let Some(worker) = self.some_worker(i) {
                    self.feed(Event::Notify {
                        worker,
                        fields: vec![("WATCHDOG".into(), "1".into())],
                    });
                }
            }
            Op::Changed => self.feed(Event::Changed {
                paths: vec!["src/main.rs".into()],
                more: 0,
            }),
            Op::Stranger => {
                // It joins at the end of the kernel's array (once: one is enough to shift
                // every index after it).
                if self.sim.settings.steering && self.sim.stranger.is_none() {
                    self.sim.stranger = Some(self.sim.members.len());
                }
            }
            Op::Scale(k) => {
                self.sim.ctl_clients += 1;
                let client = self.sim.ctl_clients;
                let workers = [0, 1, 2, 3, 4, 1, MAX_WORKERS + 1][k as usize];
                let before = self.core.snapshot().slots;
                self.feed(Event::Control {
                    client,
                    peer: Peer { pid: 9, uid: 0 },
                    command: Command::Scale { workers },
                });
                let after = self.core.snapshot();
                if (workers == 0 || workers > MAX_WORKERS)
                    && !matches!(after.phase, Phase::Stopping | Phase::Done)
                {
                    assert_eq!(after.slots, before, "a bad count changed the count");
                }
            }
            Op::Ctl(kind) => {
                self.sim.ctl_clients += 1;
                let client = self.sim.ctl_clients;
                let command = match kind {
                    0 => Command::Restart { wait: false },
                    1 => Command::Restart { wait: true },
                    2 => Command::Stop { wait: false },
                    _ => Command::Stop { wait: true },
                };
                self.feed(Event::Control {
                    client,
                    peer: Peer { pid: 9, uid: 0 },
                    command,
                });
            }
        }
    }

    /// [`apply`](Self::apply), and checks that an op that neither kills a worker nor lets a
    /// trigger act leaves at least min(ready before in the slots kept, count −
    /// `--max-unavailable`) ready.
    fn apply_checked(&mut self, op: &Op) {
        let s = &self.sim.settings;
        let triggers = s.health.is_some()
            || s.policy.watchdog.is_some()
            || s.max_memory.is_some()
            || s.max_lifetime.is_some()
            || s.watch.is_some();
        let harmless = match *op {
            // The restart signal (twice), SIGTTIN, SIGTTOU; none is mapped to a stop here.
            Op::Signal(s, _) => matches!(s, 2 | 3 | 10 | 11),
            Op::Ctl(kind) => kind < 2,
            Op::Timer | Op::Advance(_) | Op::Ready(_) | Op::Status(_) | Op::Scale(_) => true,
            _ => false,
        };
        // The slots of the ready workers.
        let ready = |core: &Core| {
            let snapshot = core.snapshot();
            let serving: Vec<u32> = snapshot
                .workers
                .iter()
                .filter(|w| w.role == Role::Serving)
                .map(|w| w.slot)
                .collect();
            (snapshot.phase, snapshot.slots, serving)
        };
        let (_, _, before) = ready(&self.core);
        let max_unavailable = s.max_unavailable as usize;
        self.apply(op);
        if triggers || !harmless || self.outcome.is_some() {
            return;
        }
        let (phase, slots, after) = ready(&self.core);
        if matches!(phase, Phase::Stopping | Phase::Done) {
            return;
        }
        // A scale-down takes the highest slots, ready or not: only the ready ones it keeps
        // count.
        let kept = before.iter().filter(|slot| **slot < slots).count();
        let floor = kept.min((slots as usize).saturating_sub(max_unavailable));
        let after = after.len();
        assert!(
            after >= floor,
            "{op:?} left {after} ready of {slots}, under {floor}: {:?}",
            self.core.snapshot()
        );
    }

    fn some_worker(&self, i: u8) -> Option<WorkerId> {
        let workers: Vec<WorkerId> = self.sim.workers.keys().copied().collect();
        workers
            .iter()
            .rev()
            .nth(i as usize % workers.len().max(1))
            .copied()
    }

    /// Feeds events the world owes (reaps), each with the answers it leads to.
    fn feed_all(&mut self, answers: Answers) {
        for event in answers.into_events() {
            self.feed(event);
        }
    }

    /// Stops the service and runs it to its end; checks the end's invariants.
    fn finish(&mut self) {
        if self.outcome.is_none() {
            self.feed(Event::Signal {
                signal: Signal::TERM,
                origin: Origin::Process { pid: 9, pgid: None },
            });
        }
        let s = self.sim.settings.clone();
        let bound =
            s.policy.drain_delay + s.policy.stop_timeout + s.policy.hook_timeout + KILL_GRACE * 3;
        for _ in 0..10_000 {
            if self.outcome.is_some() {
                break;
            }
            assert!(
                self.sim.armed.is_some(),
                "stopping, but nothing will wake the core: {:?}",
                self.core.snapshot()
            );
            self.fire();
        }
        let outcome = self.outcome.expect("the stop reached the exit");
        let exit_at = self.exit_at.expect("exit time recorded");
        // No stopping seen between dispatches: it began and ended within one.
        let since = self.sim.stop_since.unwrap_or(exit_at);
        let took = (exit_at - since).saturating_sub(self.overshoot);
        assert!(took <= bound, "the stop took {took:?}, over {bound:?}");
        for (pid, p) in &self.sim.procs {
            assert!(
                !p.alive || p.got_kill || p.kind == Kind::Lost,
                "process {pid} ({:?}) is alive at the exit and was never sent SIGKILL",
                p.kind
            );
        }
        for client in 1..=self.sim.ctl_clients {
            assert_eq!(
                self.sim.last_replies.get(&client),
                Some(&1),
                "ctl client {client} has no last reply"
            );
        }
        // With several workers the outcome is checked by the example-based tests.
        if s.workers > 1 || self.sim.several {
            return;
        }
        let holder = self.sim.holders.get(&0).copied();
        match outcome {
            Outcome::Child(exit) => {
                let holder = holder.expect("a worker held the role");
                let status = self.sim.statuses.get(&holder).copied();
                assert_eq!(
                    status.and_then(crate::reaper::decode),
                    Some(crate::reaper::Status::Ended(exit)),
                    "the outcome is the last role holder's"
                );
            }
            Outcome::Code(NOT_READY) => {
                let holder = holder.expect("a worker held the role");
                let replacement = self.sim.incoming.get(&0).filter(|w| **w > holder);
                assert!(
                    !self.sim.ever_served.contains(&holder)
                        || replacement.is_some_and(|w| !self.sim.ever_served.contains(w)),
                    "exit 124 though gen {holder} served"
                );
            }
            Outcome::Code(0) => {
                // No worker in the role ever ended: it never started, or survived SIGKILL.
                if let Some(holder) = holder {
                    let (_, pid) = self.sim.workers[&holder];
                    assert!(
                        !self.sim.statuses.contains_key(&holder) && self.sim.procs[&pid].alive,
                        "exit 0 though gen {holder} ended"
                    );
                }
            }
            Outcome::Code(code) => {
                assert_eq!(
                    self.sim.last_spawn_failure,
                    Some(code),
                    "exit {code} though the last start did not fail so"
                );
            }
        }
    }
}

impl Answers {
    fn into_events(self) -> Vec<Event> {
        let mut events = Vec::new();
        let mut answers = self;
        while let Some(event) = answers.pop() {
            events.push(event);
        }
        events
    }
}

fn sig(number: i32) -> Signal {
    Signal::from_raw(number).expect("a signal")
}

fn usr1() -> Signal {
    sig(nix::libc::SIGUSR1)
}

fn settings_strategy() -> impl Strategy<Value = Settings> {
    (
        (0u64..3, 1u64..5),
        prop_oneof![
            Just(Ready::Notify),
            Just(Ready::Auto),
            Just(Ready::Accepting),
            Just(Ready::After(Duration::from_millis(300)))
        ],
        prop_oneof![
            Just(RestartPolicy::Never),
            Just(RestartPolicy::OnFailure),
            Just(RestartPolicy::Always)
        ],
        prop_oneof![
            Just(Delivery::Mixed),
            Just(Delivery::Group),
            Just(Delivery::NoGroup)
        ],
        any::<(bool, bool, bool, bool)>(),
        proptest::option::of(0u32..4),
        (1u32..4, 0u32..3, 0u32..2),
        0u8..4,
        (any::<bool>(), 0u64..3),
        (0u8..3, any::<bool>(), any::<bool>(), any::<bool>(), 0u8..3),
    )
        .prop_map(
            |(
                (drain, stop),
                ready,
                policy,
                delivery,
                (pre, post, reaper, job_control),
                max,
                (workers, surge, unavailable),
                signals,
                (steering, drain_timeout),
                (health, watchdog, memory, lifetime, watch),
            )| {
                let mut s = settings();
                s.policy.drain_delay = Duration::from_secs(drain);
                s.policy.stop_timeout = Duration::from_secs(stop);
                s.policy.hook_timeout = Duration::from_secs(2);
                s.policy.ready = ready;
                s.policy.ready_timeout = Duration::from_secs(4);
                s.policy.restart_policy = policy;
                s.delivery = delivery;
                s.pre_stop = pre;
                s.post_stop = post;
                s.reaper = reaper;
                s.job_control = job_control;
                s.policy.max_restarts = max;
                s.health = (health > 0).then_some(HealthSettings {
                    command: health == 1,
                    interval: Duration::from_millis(700),
                    timeout: Duration::from_millis(500),
                    retries: 2,
                    start_period: Duration::from_secs(1),
                });
                s.policy.watchdog = watchdog.then_some(Duration::from_millis(900));
                s.max_memory = memory.then_some(100 << 20);
                s.max_lifetime = lifetime.then_some(Duration::from_millis(2500));
                s.watch = (watch > 0).then_some(WatchSettings { build: watch == 2 });
                s.workers = workers;
                s.steering = steering;
                s.policy.drain_timeout = Duration::from_secs(drain_timeout);
                s.policy.max_surge = surge;
                // No progress is possible with neither: the flags refuse it.
                s.max_unavailable = if surge == 0 {
                    unavailable.max(1)
                } else {
                    unavailable
                };
                match signals {
                    1 => s.policy.stop_signal = Some(sig(nix::libc::SIGQUIT)),
                    2 => {
                        s.policy.signal_map = SignalMap::new(vec![SignalRule {
                            from: Signal::TERM,
                            to: Mapping::To(sig(nix::libc::SIGQUIT)),
                        }])
                    }
                    3 => {
                        s.policy.signal_map = SignalMap::new(vec![
                            SignalRule {
                                from: usr1(),
                                to: Mapping::Drop,
                            },
                            SignalRule {
                                from: Signal::TERM,
                                to: Mapping::Drop,
                            },
                        ])
                    }
                    _ => {}
                }
                s
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 6000,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_for_any_sequence_of_events(
        settings in settings_strategy(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let mut harness = Harness::new(settings, seed);
        harness.feed(Event::Start);
        for op in &ops {
            if harness.outcome.is_some() {
                break;
            }
            harness.apply_checked(op);
        }
        harness.finish();
    }
}
