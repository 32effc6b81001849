//! Property test of the core: random sequences of events from a simulated world of processes
//! (servers that obey or ignore TERM, workers left in a group, orphans, hooks that hang,
//! spawns that fail), with the invariants checked after every step:
//!
//! - at most one generation starts at a time, and never two in the serving role;
//! - every armed deadline is in the future;
//! - the core never signals a main process it saw exit, nor a group it was told is empty;
//! - a stop request reaches the exit within drain delay + stop timeout + hook timeout (+
//!   [`KILL_GRACE`] for processes that do not die of SIGKILL), and by then every process
//!   still alive was sent SIGKILL;
//! - graceful-run's outcome is the status of the last generation in the serving role;
//! - every generation that started was signalled or seen to exit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::core::*;
use super::tests::{exited, killed, settings};
use crate::cli::{Ready, RestartPolicy};
use crate::exit::{NOT_READY, Outcome};
use crate::signal::Signal;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Leader(GenId),
    /// A child of a leader; without a process group of its own it is in graceful-run's.
    Worker,
    /// A child of graceful-run outside every generation (re-parented to the subreaper).
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
    Advance(u16),
    Ready(u8),
    Crash(u8, u8),
    Orphan,
    HookExit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6, 0u8..4).prop_map(|(s, o)| Op::Signal(s, o)),
        4 => Just(Op::Timer),
        2 => (1u16..3000).prop_map(Op::Advance),
        4 => (0u8..4).prop_map(Op::Ready),
        2 => (0u8..4, 0u8..6).prop_map(|(g, s)| Op::Crash(g, s)),
        1 => Just(Op::Orphan),
        1 => Just(Op::HookExit),
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

struct World {
    core: Core,
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
    statuses: BTreeMap<GenId, i32>,
    pids: BTreeMap<GenId, i32>,
    last_role_holder: Option<GenId>,
    ever_served: BTreeSet<GenId>,
    stop_since: Option<Instant>,
    outcome: Option<Outcome>,
    exit_at: Option<Instant>,
    /// Worker pid -> its leader's pid.
    parents: BTreeMap<i32, i32>,
}

impl World {
    fn new(settings: Settings, seed: u64) -> World {
        World {
            core: Core::new(settings.clone()),
            settings,
            rng: Rng(seed | 1),
            now: Instant::now(),
            armed: None,
            procs: BTreeMap::new(),
            next_pid: 100,
            empty_groups: BTreeSet::new(),
            reaped: BTreeSet::new(),
            statuses: BTreeMap::new(),
            pids: BTreeMap::new(),
            last_role_holder: None,
            ever_served: BTreeSet::new(),
            stop_since: None,
            outcome: None,
            exit_at: None,
            parents: BTreeMap::new(),
        }
    }

    /// A process died: its children are re-parented, to graceful-run if it is a subreaper.
    fn died(&mut self, pid: i32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.alive = false;
        }
        let children: Vec<i32> = self
            .parents
            .iter()
            .filter(|(_, parent)| **parent == pid)
            .map(|(child, _)| *child)
            .collect();
        for child in children {
            self.parents.remove(&child);
            let reaper = self.settings.reaper;
            if let Some(c) = self.procs.get_mut(&child)
                && c.pgid == 1
            {
                // Out of any generation's group: an orphan of graceful-run, or of another init.
                c.kind = if reaper { Kind::Orphan } else { Kind::Lost };
            }
        }
    }

    fn new_proc(&mut self, pgid: Option<i32>, kind: Kind) -> i32 {
        self.next_pid += 1;
        let pid = self.next_pid;
        let obeys = !self.rng.chance(20);
        let unkillable = kind == Kind::Orphan && self.rng.chance(10);
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

    /// Feeds one event and everything the answers lead to; checks the invariants.
    fn feed(&mut self, event: Event) {
        let mut queue = std::collections::VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            if self.outcome.is_some() {
                return;
            }
            if let Event::Reaped { pid, status } = event {
                if let Some(Proc {
                    kind: Kind::Leader(generation),
                    ..
                }) = self.procs.get(&pid)
                {
                    self.statuses.insert(*generation, status);
                }
                self.reaped.insert(pid);
            }
            let actions = self.core.step(self.now, event);
            self.check_snapshot();
            let mut answers = Vec::new();
            for action in actions {
                self.perform(action, &mut answers);
            }
            // Answers come before anything else, in order.
            for answer in answers.into_iter().rev() {
                queue.push_front(answer);
            }
        }
    }

    fn check_snapshot(&mut self) {
        let snapshot = self.core.snapshot();
        let in_role: Vec<&GenerationView> = snapshot
            .generations
            .iter()
            .filter(|g| matches!(g.role, Role::Starting | Role::Serving | Role::Draining))
            .collect();
        assert!(in_role.len() <= 1, "two in the serving role: {snapshot:?}");
        let incoming = snapshot
            .generations
            .iter()
            .filter(|g| g.role == Role::Incoming)
            .count();
        assert!(incoming <= 1, "two incoming: {snapshot:?}");
        if incoming == 1 {
            assert!(
                snapshot.generations.iter().any(|g| g.role == Role::Serving),
                "incoming without a serving one: {snapshot:?}"
            );
        }
        if let Some(g) = in_role.first() {
            self.last_role_holder = Some(g.id);
            if g.role == Role::Serving {
                self.ever_served.insert(g.id);
            }
        }
        if snapshot.phase == Phase::Stopping && self.stop_since.is_none() {
            self.stop_since = Some(self.now);
        }
    }

    fn perform(&mut self, action: Action, answers: &mut Vec<Event>) {
        match action {
            Action::Spawn { generation, .. } => {
                let result = if self.rng.chance(8) {
                    Err(127)
                } else {
                    let pid = self.new_proc(None, Kind::Leader(generation));
                    if self.rng.chance(40) {
                        // Without a group of its own, the command's processes are in
                        // graceful-run's group (pgid 1 here).
                        let pgid = if self.settings.delivery == Delivery::NoGroup {
                            1
                        } else {
                            pid
                        };
                        let worker = self.new_proc(Some(pgid), Kind::Worker);
                        self.parents.insert(worker, pid);
                    }
                    self.pids.insert(generation, pid);
                    Ok(pid)
                };
                answers.push(Event::Spawned { generation, result });
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
            Action::CheckGroup { generation, pgid } => {
                let alive = self.procs.values().any(|p| p.pgid == pgid && p.alive);
                if !alive {
                    self.empty_groups.insert(pgid);
                }
                answers.push(Event::GroupChecked { generation, alive });
            }
            Action::CheckLeftovers => {
                let found = self
                    .procs
                    .values()
                    .any(|p| p.kind == Kind::Orphan && p.alive);
                answers.push(Event::LeftoversChecked { found });
            }
            Action::Probe { generation, .. } => {
                let missing = if self.rng.chance(30) {
                    vec![]
                } else {
                    vec!["tcp://127.0.0.1:1".into()]
                };
                answers.push(Event::Probed {
                    generation,
                    missing,
                });
            }
            Action::RunHook { kind, .. } => {
                let pid = if self.rng.chance(10) {
                    None
                } else {
                    Some(self.new_proc(None, Kind::Hook))
                };
                answers.push(Event::HookStarted { kind, pid });
            }
            Action::ArmTimer(at) => {
                if let Some(at) = at {
                    assert!(at > self.now, "armed a deadline that is not in the future");
                }
                self.armed = at;
            }
            Action::Exit(outcome) => {
                self.outcome = Some(outcome);
                self.exit_at = Some(self.now);
            }
            Action::Log { .. }
            | Action::GiveTerminal { .. }
            | Action::StopSelf
            | Action::Release { .. }
            | Action::CloseListeners
            | Action::Upstream(_)
            | Action::Reply { .. } => {}
        }
    }

    fn deliver(&mut self, pid: i32, signal: Signal, answers: &mut Vec<Event>) {
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
        let dies = match signal {
            s if s == Signal::KILL => !p.unkillable,
            s if s == Signal::TERM || s == Signal::INT => p.obeys,
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
            answers.push(Event::Reaped { pid, status });
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Signal(s, o) => {
                let usr1 = Signal::from_raw(nix::libc::SIGUSR1).expect("USR1 exists");
                let signal = [
                    Signal::TERM,
                    Signal::INT,
                    Signal::HUP,
                    Signal::HUP,
                    usr1,
                    Signal::CONT,
                ][s as usize];
                let origin = match o {
                    0 => Origin::Kernel,
                    1 => Origin::Process {
                        pid: 7,
                        pgid: Some(7),
                        descendant: false,
                    },
                    2 => Origin::Process {
                        pid: 8,
                        pgid: Some(8),
                        descendant: false,
                    },
                    _ => Origin::Process {
                        pid: 0,
                        pgid: None,
                        descendant: false,
                    },
                };
                self.feed(Event::Signal { signal, origin });
            }
            Op::Timer => self.fire(),
            Op::Advance(ms) => {
                let to = self.now + Duration::from_millis(ms as u64);
                match self.armed {
                    Some(at) if at <= to => self.fire(),
                    _ => self.now = to,
                }
            }
            Op::Ready(i) => {
                let gens: Vec<GenId> = self.pids.keys().copied().collect();
                if let Some(generation) = gens.iter().rev().nth(i as usize % gens.len().max(1)) {
                    self.feed(Event::Notify {
                        generation: *generation,
                        fields: vec![("READY".into(), "1".into())],
                    });
                }
            }
            Op::Crash(i, s) => {
                let alive: Vec<i32> = self
                    .procs
                    .iter()
                    .filter(|(_, p)| p.alive && matches!(p.kind, Kind::Leader(_) | Kind::Worker))
                    .map(|(pid, _)| *pid)
                    .collect();
                if let Some(pid) = alive.get(i as usize % alive.len().max(1)).copied() {
                    self.died(pid);
                    let status = [
                        exited(0),
                        exited(1),
                        exited(3),
                        killed(9),
                        killed(15),
                        killed(40),
                    ][s as usize];
                    self.feed(Event::Reaped { pid, status });
                }
            }
            Op::Orphan => {
                // Orphans come from the command's processes, before the service ends.
                if self.settings.reaper && self.stop_since.is_none() {
                    self.new_proc(Some(1), Kind::Orphan);
                }
            }
            Op::HookExit => {
                let hook = self
                    .procs
                    .iter()
                    .find(|(_, p)| p.kind == Kind::Hook && p.alive)
                    .map(|(pid, _)| *pid);
                if let Some(pid) = hook {
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.alive = false;
                    }
                    self.feed(Event::Reaped {
                        pid,
                        status: exited(0),
                    });
                }
            }
        }
    }

    fn fire(&mut self) {
        if let Some(at) = self.armed {
            self.now = self.now.max(at);
            self.feed(Event::Timer);
        }
    }

    /// Stops the service and runs it to its end; checks the end's invariants.
    fn finish(&mut self) {
        if self.outcome.is_none() {
            self.feed(Event::Signal {
                signal: Signal::TERM,
                origin: Origin::Process {
                    pid: 9,
                    pgid: None,
                    descendant: false,
                },
            });
        }
        let settings = &self.settings;
        let bound =
            settings.drain_delay + settings.stop_timeout + settings.hook_timeout + KILL_GRACE * 2;
        for _ in 0..10_000 {
            if self.outcome.is_some() {
                break;
            }
            assert!(
                self.armed.is_some(),
                "stopping, but nothing will wake the core"
            );
            self.fire();
        }
        let outcome = self.outcome.expect("the stop reached the exit");
        let since = self.stop_since.expect("the core went through Stopping");
        let took = self.exit_at.expect("exit time recorded") - since;
        assert!(took <= bound, "the stop took {took:?}, over {bound:?}");
        for (pid, p) in &self.procs {
            assert!(
                !p.alive || p.got_kill || p.kind == Kind::Lost,
                "process {pid} ({:?}) is alive at the exit and was never sent SIGKILL",
                p.kind
            );
            if let Kind::Leader(_) = p.kind {
                assert!(p.signalled || !p.alive || self.reaped.contains(pid));
            }
        }
        match outcome {
            Outcome::Child(exit) => {
                let holder = self.last_role_holder.expect("a generation held the role");
                let status = self.statuses.get(&holder).copied();
                assert_eq!(
                    status.and_then(crate::reaper::decode),
                    Some(crate::reaper::Status::Ended(exit)),
                    "the outcome is the last serving generation's"
                );
            }
            Outcome::Code(NOT_READY) => {
                let holder = self.last_role_holder.expect("a generation held the role");
                assert!(!self.ever_served.contains(&holder));
            }
            Outcome::Code(_) => {}
        }
    }
}

fn settings_strategy() -> impl Strategy<Value = Settings> {
    (
        0u64..3,
        1u64..5,
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
        any::<(bool, bool, bool)>(),
        proptest::option::of(0u32..4),
    )
        .prop_map(
            |(drain, stop, ready, policy, delivery, (pre, post, reaper), max)| {
                let mut s = settings();
                s.drain_delay = Duration::from_secs(drain);
                s.stop_timeout = Duration::from_secs(stop);
                s.hook_timeout = Duration::from_secs(2);
                s.ready = ready;
                s.ready_timeout = Duration::from_secs(4);
                s.restart_policy = policy;
                s.delivery = delivery;
                s.pre_stop = pre;
                s.post_stop = post;
                s.reaper = reaper;
                s.max_restarts = max;
                s
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4000,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_for_any_sequence_of_events(
        settings in settings_strategy(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let mut world = World::new(settings, seed);
        world.feed(Event::Start);
        for op in &ops {
            if world.outcome.is_some() {
                break;
            }
            world.apply(op);
        }
        world.finish();
    }
}
