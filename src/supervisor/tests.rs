//! Scripted tests of the core: one per transition and per defect it once had. Each drives
//! [`Core`] through the executor's own dispatch loop ([`driver::dispatch`]) with a scripted
//! world on a fake clock, and checks the actions.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::core::driver::{self, Answers, World};
use super::core::*;
use crate::exit::{ChildExit, NOT_READY, Outcome};
use crate::policy::{Policy, Ready, RestartPolicy};
use crate::signal::{Signal, SignalMap};

pub(super) fn settings() -> Settings {
    Settings {
        policy: Policy {
            restart_signal: Some(Signal::HUP),
            signal_map: SignalMap::default(),
            stop_signal: None,
            stop_timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            hook_timeout: Duration::from_secs(10),
            ready: Ready::Notify,
            ready_timeout: Duration::from_secs(60),
            restart_policy: RestartPolicy::Never,
            restart_delay: Duration::from_millis(100),
            max_restarts: None,
            max_surge: 1,
            drain_timeout: Duration::from_secs(30),
            watchdog: None,
        },
        pre_stop: false,
        post_stop: false,
        workers: 1,
        max_unavailable: 0,
        steering: false,
        health: None,
        max_memory: None,
        max_lifetime: None,
        watch: None,
        delivery: Delivery::Mixed,
        reaper: true,
        job_control: false,
        stream_listeners: true,
        stream_names: vec!["tcp://127.0.0.1:8080 (fd 3)".into()],
        main_pid: 1000,
        log_level: crate::log::Level::Debug,
    }
}

pub(super) fn exited(code: i32) -> i32 {
    code << 8
}

pub(super) fn killed(signal: i32) -> i32 {
    signal
}

const OUTSIDE: Origin = Origin::Process {
    pid: 4242,
    pgid: Some(4242),
};

/// A world whose answers are scripted: spawns get the next pid of `pids` (or fail with
/// `fail_next`), groups are alive when listed in `alive_groups`, and so on.
struct Script {
    now: Instant,
    armed: Option<Instant>,
    /// Pids for the next spawns; when empty, 100, 200, 300, ... by generation and worker.
    pids: VecDeque<i32>,
    fail_next: Option<i32>,
    alive_groups: BTreeSet<i32>,
    /// Answers to the next leftover checks; none left: no leftovers.
    leftovers: VecDeque<bool>,
    hook_pids: VecDeque<i32>,
    /// What the next looks find missing; none left: nothing missing.
    probes: VecDeque<Vec<String>>,
    /// Why looks could not see, one per look (none: they all could).
    blinds: VecDeque<Option<crate::accepting::Blind>>,
    descends: bool,
    /// Looks that find nothing missing say it was through an accepted connection.
    accepted: bool,
    /// What the next looks at a draining worker find; none left: quiet.
    observations: VecDeque<Activity>,
    /// How the next health checks start; none left: a probe.
    checks: VecDeque<CheckStart>,
    /// Every spawn: (worker, generation, slot, pid, reset_nonblocking).
    spawned: Vec<(WorkerId, GenId, u32, i32, bool)>,
    /// Every spawn's member, by pid.
    members: Vec<(i32, Option<u32>)>,
    outcome: Option<Outcome>,
    all: Vec<Action>,
    /// The actions of the current dispatch.
    last: Vec<Action>,
}

impl World for Script {
    fn now(&mut self) -> Instant {
        self.now
    }

    fn perform(&mut self, action: Action, answers: &mut Answers) {
        self.all.push(action.clone());
        self.last.push(action.clone());
        match action {
            Action::ArmTimer(at) => {
                assert!(
                    at.is_none_or(|at| at > self.now),
                    "armed in the past: {at:?}"
                );
                self.armed = at;
            }
            Action::Ask { ticket, question } => {
                let answer = match question {
                    Question::Spawn {
                        worker,
                        generation,
                        slot,
                        reset_nonblocking,
                        member,
                        ..
                    } => match self.fail_next.take() {
                        Some(code) => Answer::Spawned(Err(code)),
                        None => {
                            let pid = self
                                .pids
                                .pop_front()
                                .unwrap_or(generation as i32 * 100 + slot as i32);
                            self.spawned
                                .push((worker, generation, slot, pid, reset_nonblocking));
                            self.members.push((pid, member));
                            Answer::Spawned(Ok(Spawned {
                                pid,
                                random: 0,
                                executable: "server".into(),
                                notify_failed: None,
                                shared: false,
                            }))
                        }
                    },
                    Question::RunHook { .. } => {
                        Answer::HookStarted(Some(self.hook_pids.pop_front().unwrap_or(900)))
                    }
                    Question::CheckGroup { pgid, .. } => Answer::Group {
                        alive: self.alive_groups.contains(&pgid),
                    },
                    Question::CheckLeftovers => Answer::Leftovers {
                        found: self.leftovers.pop_front().unwrap_or(false),
                    },
                    Question::Probe { .. } => Answer::Probed {
                        missing: self.probes.pop_front().unwrap_or_default(),
                        blind: self.blinds.pop_front().flatten(),
                        itself: None,
                        accepted: self.accepted,
                    },
                    Question::Descends { .. } => Answer::Descends(self.descends),
                    Question::Observe { .. } => {
                        Answer::Observed(self.observations.pop_front().unwrap_or_default())
                    }
                    Question::StartCheck { .. } => {
                        Answer::CheckStarted(self.checks.pop_front().unwrap_or(CheckStart::Probe))
                    }
                    Question::StartBuild => Answer::BuildStarted(Some(950)),
                };
                answers.push(Event::Answer { ticket, answer });
            }
            _ => {}
        }
    }
}

/// A core driven through the dispatch loop on a fake clock.
struct Run {
    core: Core,
    w: Script,
}

impl Run {
    fn new(settings: Settings) -> Run {
        Run {
            core: Core::new(settings),
            w: Script {
                now: Instant::now(),
                armed: None,
                pids: VecDeque::new(),
                fail_next: None,
                alive_groups: BTreeSet::new(),
                leftovers: VecDeque::new(),
                hook_pids: VecDeque::new(),
                probes: VecDeque::new(),
                blinds: VecDeque::new(),
                descends: false,
                accepted: false,
                observations: VecDeque::new(),
                checks: VecDeque::new(),
                spawned: Vec::new(),
                members: Vec::new(),
                outcome: None,
                all: Vec::new(),
                last: Vec::new(),
            },
        }
    }

    /// Feeds one event and every answer it leads to; returns every action on the way.
    fn step(&mut self, event: Event) -> Vec<Action> {
        self.w.last.clear();
        if let Some(outcome) = driver::dispatch(&mut self.core, &mut self.w, event) {
            self.w.outcome = Some(outcome);
            self.w.all.push(Action::Exit(outcome));
            self.w.last.push(Action::Exit(outcome));
        }
        std::mem::take(&mut self.w.last)
    }

    /// Starts generation 1 (one worker: `pid`).
    fn started(settings: Settings, pid: i32) -> Run {
        let mut run = Run::new(settings);
        run.w.pids.push_back(pid);
        let actions = run.step(Event::Start);
        assert_eq!(spawns(&actions), [(1, true)], "{actions:?}");
        run
    }

    fn worker(&self, pid: i32) -> WorkerId {
        self.w
            .spawned
            .iter()
            .rev()
            .find(|s| s.3 == pid)
            .map(|s| s.0)
            .expect("a spawned pid")
    }

    /// READY=1 from the worker whose main process is `pid`.
    fn ready(&mut self, pid: i32) -> Vec<Action> {
        let worker = self.worker(pid);
        self.step(Event::Notify {
            worker,
            fields: vec![("READY".into(), "1".into())],
        })
    }

    /// Moves the clock to the armed deadline and fires it.
    fn fire(&mut self) -> Vec<Action> {
        let at = self.w.armed.expect("a deadline is armed");
        self.w.now = at;
        self.step(Event::Timer)
    }

    fn advance(&mut self, by: Duration) {
        self.w.now += by;
    }

    fn signal(&mut self, signal: Signal, origin: Origin) -> Vec<Action> {
        self.step(Event::Signal { signal, origin })
    }

    fn reaped(&mut self, pid: i32, status: i32) -> Vec<Action> {
        self.step(Event::Reaped { pid, status })
    }

    fn exit(&self) -> Option<Outcome> {
        self.w.outcome
    }

    fn spawned_pid(&self, generation: GenId, slot: u32) -> i32 {
        self.w
            .spawned
            .iter()
            .rev()
            .find(|s| s.1 == generation && s.2 == slot)
            .map(|s| s.3)
            .expect("spawned")
    }
}

/// A signal target by pid, as tests name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum To {
    Leader(i32),
    Group(i32),
    Hook(i32),
    Leftovers,
}

fn sent(actions: &[Action]) -> Vec<(To, Signal)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { target, signal } => Some((
                match *target {
                    Target::Leader { pid, .. } => To::Leader(pid),
                    Target::Group { pgid, .. } => To::Group(pgid),
                    Target::Hook { pid } => To::Hook(pid),
                    Target::Leftovers => To::Leftovers,
                },
                *signal,
            )),
            _ => None,
        })
        .collect()
}

/// Messages for graceful-run's own supervisor, but STATUS=.
fn upstream(actions: &[Action]) -> Vec<Upstream> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Upstream(Upstream::Status(_)) => None,
            Action::Upstream(message) => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn logs(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// (generation, reset_nonblocking) of every spawn asked for.
fn spawns(actions: &[Action]) -> Vec<(GenId, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Ask {
                question:
                    Question::Spawn {
                        generation,
                        reset_nonblocking,
                        ..
                    },
                ..
            } => Some((*generation, *reset_nonblocking)),
            _ => None,
        })
        .collect()
}

fn ready_up() -> Upstream {
    Upstream::Ready { main_pid: 1000 }
}

/// Gen 1 (pid 100) serving, gen 2 (pid 200) started by HUP.
fn restarting(settings: Settings) -> Run {
    let mut run = Run::started(settings, 100);
    run.ready(100);
    run.w.pids.push_back(200);
    let actions = run.signal(Signal::HUP, OUTSIDE);
    assert_eq!(spawns(&actions), [(2, false)]);
    run
}

#[test]
fn ready_announces_the_service_with_graceful_runs_pid() {
    let mut run = Run::started(settings(), 100);
    assert_eq!(upstream(&run.w.all), []);
    let actions = run.ready(100);
    assert_eq!(upstream(&actions), [ready_up()]);
    assert_eq!(
        run.w.armed, None,
        "an idle, serving graceful-run arms no timer"
    );
}

#[test]
fn handover_stops_the_old_main_process_once_the_new_one_is_ready() {
    let mut run = restarting(settings());
    assert!(upstream(&run.w.all).contains(&Upstream::Reloading));
    let actions = run.ready(200);
    assert_eq!(
        sent(&actions),
        [
            (To::Leader(100), Signal::TERM),
            (To::Leader(100), Signal::CONT)
        ]
    );
    assert_eq!(upstream(&actions), [Upstream::Reloaded]);
    let snapshot = run.core.snapshot();
    assert_eq!(snapshot.phase, Phase::Serving);
    assert_eq!(snapshot.workers[0].generation, 2);
    // The old one exits; its group is empty: released, nothing left to time.
    let old = run.worker(100);
    let actions = run.reaped(100, exited(0));
    assert!(actions.contains(&Action::Release { worker: old }));
    assert_eq!(run.w.armed, None);
}

/// Defect 1: O_NONBLOCK may only be reset when no process of the command is alive.
#[test]
fn nonblocking_is_reset_only_when_no_generation_is_alive() {
    let mut run = restarting(settings());
    assert_eq!(spawns(&run.w.all), [(1, true), (2, false)]);
    run.ready(200);
    // Gen 1 still stopping: a restart now must wait for it (the surge), and then must not
    // touch the flag while gen 2 serves.
    let actions = run.signal(Signal::HUP, OUTSIDE);
    assert_eq!(spawns(&actions), [], "gen 1 still takes the surge's place");
    let actions = run.reaped(100, exited(0));
    assert_eq!(spawns(&actions), [(3, false)]);
}

/// The property test's finding: a crashed master's worker still holds the listener, so the
/// next start must not clear O_NONBLOCK under it.
#[test]
fn nonblocking_is_kept_while_a_crashed_masters_worker_lives() {
    let mut s = settings();
    s.policy.restart_policy = RestartPolicy::Always;
    let mut run = Run::started(s, 100);
    run.ready(100);
    run.advance(Duration::from_secs(2));
    run.w.alive_groups.insert(100);
    let actions = run.reaped(100, killed(9));
    assert_eq!(spawns(&actions), [(2, false)], "{actions:?}");
    // Its worker then goes too; the next crash restart may reset.
    run.w.alive_groups.clear();
    run.reaped(101, exited(0));
    run.ready(200);
    run.advance(Duration::from_secs(2));
    let actions = run.reaped(200, killed(9));
    assert_eq!(spawns(&actions), [(3, true)]);
}

/// The property test's finding: a group is never signalled while a check of it is out (its
/// answer may be "empty", and the group id free for reuse), not even by a deadline handled
/// in the same step.
#[test]
fn a_group_is_not_killed_while_its_check_is_out() {
    let mut s = settings();
    s.policy.stop_timeout = Duration::from_secs(1);
    let mut run = Run::started(s, 100);
    run.ready(100);
    run.signal(Signal::TERM, OUTSIDE);
    // The master exits, its worker 101 is left in the group.
    run.w.alive_groups.insert(100);
    run.reaped(100, exited(0));
    // The worker exits just as the stop timeout passes: the group is empty then.
    run.w.alive_groups.clear();
    run.advance(Duration::from_secs(1));
    let actions = run.reaped(101, exited(0));
    let asked = actions
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Ask {
                    question: Question::CheckGroup { .. },
                    ..
                }
            )
        })
        .expect("the group is checked after the reap");
    assert!(
        !sent(&actions[asked..]).contains(&(To::Group(100), Signal::KILL)),
        "{actions:?}"
    );
    assert!(run.core.is_done());
}

/// Defect 4: the serving generation dies during a restart and the incoming one then misses
/// --ready-timeout: graceful-run must end (here: no restart policy), not hang.
#[test]
fn serving_dies_during_restart_then_incoming_never_ready() {
    let mut s = settings();
    s.policy.ready_timeout = Duration::from_secs(5);
    let mut run = restarting(s);
    run.reaped(100, exited(7));
    assert_eq!(run.core.snapshot().phase, Phase::Starting);
    // Not ready in time: stopped, and the service ends.
    let actions = run.fire();
    assert!(sent(&actions).contains(&(To::Leader(200), Signal::TERM)));
    run.reaped(200, killed(15));
    // The last serving generation was gen 1, but gen 2 took over the serving role and
    // never became ready.
    assert_eq!(run.exit(), Some(Outcome::Code(NOT_READY)));
    assert!(run.core.is_done());
}

/// Defect 4 with a restart policy: the command is started again.
#[test]
fn serving_dies_during_restart_then_incoming_crashes_restarts_with_policy() {
    let mut s = settings();
    s.policy.restart_policy = RestartPolicy::OnFailure;
    let mut run = restarting(s);
    run.reaped(100, exited(7));
    let actions = run.reaped(200, exited(3));
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.starts_with("restarting in")),
        "{actions:?}"
    );
    let actions = run.fire();
    assert_eq!(spawns(&actions), [(3, true)]);
}

/// Defect 10: a first generation that never becomes ready: exit 124, with a hint.
#[test]
fn first_generation_never_ready_exits_124() {
    let mut s = settings();
    s.policy.ready_timeout = Duration::from_secs(3);
    let mut run = Run::started(s, 100);
    let actions = run.fire();
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.contains("not ready after 3s") && l.contains("READY=1")),
        "{actions:?}"
    );
    assert!(sent(&actions).contains(&(To::Leader(100), Signal::TERM)));
    run.reaped(100, killed(15));
    assert_eq!(run.exit(), Some(Outcome::Code(NOT_READY)));
    assert!(
        !upstream(&run.w.all)
            .iter()
            .any(|m| matches!(m, Upstream::Ready { .. } | Upstream::Reloaded)),
        "nothing ever served"
    );
}

/// Defect 11: a restart during crash backoff tells systemd RELOADING=1, then READY=1.
#[test]
fn restart_during_backoff_is_a_reload_for_systemd() {
    let mut s = settings();
    s.policy.restart_policy = RestartPolicy::Always;
    s.policy.restart_delay = Duration::from_secs(1);
    let mut run = Run::started(s, 100);
    run.ready(100);
    // A crash right after becoming ready: backoff (it did not serve for --restart-delay).
    run.reaped(100, exited(1));
    assert_eq!(run.core.snapshot().phase, Phase::Backoff);
    run.w.pids.push_back(200);
    let actions = run.signal(Signal::HUP, OUTSIDE);
    assert_eq!(upstream(&actions), [Upstream::Reloading]);
    assert_eq!(spawns(&actions), [(2, true)]);
    let actions = run.ready(200);
    assert_eq!(upstream(&actions), [Upstream::Reloaded]);
}

/// Defect 11: a failed reload while the old generation serves ends the reload (READY=1, as
/// the old code still serves) and says so in STATUS.
#[test]
fn failed_reload_is_reported_in_status() {
    let mut run = restarting(settings());
    let actions = run.reaped(200, exited(3));
    let failure = Failure::Exited(ChildExit::Exited(3));
    assert_eq!(
        upstream(&actions),
        [Upstream::ReloadFailed {
            failure,
            ready: true
        }]
    );
    assert_eq!(
        failure.to_string(),
        "the new generation exited with status 3 before it was ready"
    );
    assert_eq!(failure.errno(), nix::libc::ECHILD);
}

/// Defect 16: READY=1 is never sent when nothing serves.
#[test]
fn no_ready_upstream_when_nothing_serves() {
    let mut s = settings();
    s.policy.restart_policy = RestartPolicy::Always;
    let mut run = Run::started(s, 100);
    run.reaped(100, exited(1)); // before it was ready
    run.w.pids.push_back(200);
    run.signal(Signal::HUP, OUTSIDE); // reload from backoff
    let actions = run.reaped(200, exited(1)); // fails again: nothing serves
    assert!(
        upstream(&actions)
            .iter()
            .all(|m| matches!(m, Upstream::ReloadFailed { ready: false, .. })),
        "{actions:?}"
    );
}

/// Defect 16: a queued restart does not survive a crash restart (one extra handover).
#[test]
fn queued_restart_is_dropped_by_a_crash_restart() {
    let mut s = settings();
    s.policy.restart_policy = RestartPolicy::Always;
    let mut run = Run::started(s, 100);
    run.signal(Signal::HUP, OUTSIDE); // queued: gen 1 is not ready
    assert!(run.core.snapshot().queued);
    run.reaped(100, exited(1));
    run.w.pids.push_back(200);
    let actions = run.fire();
    assert_eq!(spawns(&actions), [(2, true)]);
    let actions = run.ready(200);
    assert_eq!(spawns(&actions), [], "no handover for the stale request");
}

/// Defect 9: GNU timeout's TERM to its child then to its group is one request; a second
/// process's TERM, a later TERM, or a second Ctrl-C force.
#[test]
fn duplicate_term_from_the_same_process_is_one_request() {
    let mut s = settings();
    s.policy.stop_timeout = Duration::from_secs(30);
    let mut run = Run::started(s.clone(), 100);
    run.ready(100);
    run.signal(Signal::TERM, OUTSIDE);
    run.advance(Duration::from_millis(1));
    let actions = run.signal(Signal::TERM, OUTSIDE);
    assert_eq!(sent(&actions), [], "a duplicate must not force");

    // The same process, later: a new request.
    run.advance(DUPLICATE_WINDOW);
    let actions = run.signal(Signal::TERM, OUTSIDE);
    assert!(sent(&actions).contains(&(To::Group(100), Signal::KILL)));

    // Another process at once: a new request.
    let mut run = Run::started(s.clone(), 100);
    run.ready(100);
    run.signal(Signal::TERM, OUTSIDE);
    let other = Origin::Process {
        pid: 4343,
        pgid: None,
    };
    let actions = run.signal(Signal::TERM, other);
    assert!(sent(&actions).contains(&(To::Group(100), Signal::KILL)));

    // Two Ctrl-C presses (the kernel sends both).
    let mut run = Run::started(s, 100);
    run.ready(100);
    run.signal(Signal::INT, Origin::Kernel);
    let actions = run.signal(Signal::INT, Origin::Kernel);
    assert!(sent(&actions).contains(&(To::Group(100), Signal::KILL)));
}

/// Defect 8: a signal graceful-run sent itself (SIGPIPE from a closed stderr) is ignored
/// without a word: logging it would write to the closed stderr again.
#[test]
fn own_signals_are_ignored_silently() {
    let mut run = Run::started(settings(), 100);
    let actions = run.signal(Signal::PIPE, Origin::Myself);
    assert_eq!(actions, []);
}

/// Defect 6: orphans re-parented after the SIGKILL sweep get SIGKILL too, the stage has a
/// deadline, and a second TERM there really kills.
#[test]
fn leftovers_after_the_kill_sweep_are_killed_and_the_end_is_bounded() {
    let mut s = settings();
    s.policy.stop_timeout = Duration::from_secs(5);
    let mut run = Run::started(s, 100);
    run.ready(100);
    let t0 = run.w.now;
    run.signal(Signal::TERM, OUTSIDE);
    // Group empty, but an orphan outside the group was re-parented to us.
    run.w.leftovers.push_back(true);
    run.reaped(100, exited(0));
    assert!(sent(&run.w.all).contains(&(To::Leftovers, Signal::TERM)));
    let actions = run.fire(); // kill_at: SIGKILL sweep
    assert!(sent(&actions).contains(&(To::Leftovers, Signal::KILL)));
    assert!(run.w.armed.is_some(), "the killed stage has a deadline");
    // An orphan shows up after the sweep (its parent died of it): SIGKILL for it too.
    run.w.leftovers.push_back(true);
    let actions = run.reaped(555, killed(9));
    assert!(sent(&actions).contains(&(To::Leftovers, Signal::KILL)));
    // It never dies: graceful-run gives up within the bound.
    run.fire();
    assert_eq!(run.exit(), Some(Outcome::Child(ChildExit::Exited(0))));
    assert!(run.w.now <= t0 + Duration::from_secs(5) + KILL_GRACE);
}

#[test]
fn second_term_while_leftovers_stop_kills_them() {
    let mut run = Run::started(settings(), 100);
    run.ready(100);
    run.signal(Signal::TERM, OUTSIDE);
    run.w.leftovers.push_back(true);
    run.reaped(100, exited(0));
    let other = Origin::Process { pid: 5, pgid: None };
    let actions = run.signal(Signal::TERM, other);
    assert!(sent(&actions).contains(&(To::Leftovers, Signal::KILL)));
}

/// Defect 7: durations too large to add to a clock are "never", not a crash.
#[test]
fn huge_durations_do_not_overflow() {
    let mut s = settings();
    s.policy.stop_timeout = Duration::MAX;
    s.policy.drain_delay = Duration::MAX;
    s.policy.ready_timeout = Duration::MAX;
    s.policy.hook_timeout = Duration::MAX;
    s.policy.ready = Ready::After(Duration::MAX);
    s.policy.restart_delay = Duration::MAX;
    s.policy.restart_policy = RestartPolicy::Always;
    let mut run = Run::started(s, 100);
    run.signal(Signal::HUP, OUTSIDE);
    run.reaped(100, exited(1));
    run.signal(Signal::TERM, OUTSIDE);
    assert_eq!(run.exit(), Some(Outcome::Child(ChildExit::Exited(1))));
}

/// Defect 17: KillMode=mixed. The stop signal goes to the main process; SIGKILL at the
/// timeout to the group; workers left once the main process exits get the stop signal.
#[test]
fn mixed_kill_mode() {
    let mut run = Run::started(settings(), 100);
    run.ready(100);
    let actions = run.signal(usr1(), OUTSIDE);
    assert_eq!(sent(&actions), [(To::Leader(100), usr1())]);
    let actions = run.signal(Signal::TERM, OUTSIDE);
    assert_eq!(
        sent(&actions),
        [
            (To::Leader(100), Signal::TERM),
            (To::Leader(100), Signal::CONT)
        ]
    );
    // The master exits, a worker is left in the group: it gets TERM now, SIGKILL later.
    run.w.alive_groups.insert(100);
    let actions = run.reaped(100, exited(0));
    assert!(sent(&actions).contains(&(To::Group(100), Signal::TERM)));
    let actions = run.fire();
    assert!(sent(&actions).contains(&(To::Group(100), Signal::KILL)));

    // A master that ignores TERM: SIGKILL to the whole group at the timeout.
    let mut run = Run::started(settings(), 100);
    run.ready(100);
    run.signal(Signal::TERM, OUTSIDE);
    let actions = run.fire();
    assert_eq!(sent(&actions), [(To::Group(100), Signal::KILL)]);
}

/// The stop signal follows --map-signal, unless --stop-signal names one.
#[test]
fn the_stop_signal_follows_the_map_unless_given() {
    let quit = Signal::from_raw(nix::libc::SIGQUIT).expect("QUIT is a signal");
    let mut s = settings();
    s.policy.signal_map = SignalMap::new(vec![crate::signal::SignalRule {
        from: Signal::TERM,
        to: crate::signal::Mapping::To(quit),
    }]);
    let mut run = Run::started(s.clone(), 100);
    run.ready(100);
    let actions = run.signal(Signal::TERM, OUTSIDE);
    assert!(sent(&actions).contains(&(To::Leader(100), quit)));
    s.policy.stop_signal = Some(usr1());
    let mut run = Run::started(s, 100);
    run.ready(100);
    let actions = run.signal(Signal::TERM, OUTSIDE);
    assert!(sent(&actions).contains(&(To::Leader(100), usr1())));
}

#[test]
fn group_kill_mode_signals_the_group() {
    let mut s = settings();
    s.delivery = Delivery::Group;
    let mut run = Run::started(s, 100);
    run.ready(100);
    let actions = run.signal(usr1(), OUTSIDE);
    assert_eq!(sent(&actions), [(To::Group(100), usr1())]);
}

/// Part 3: a generation that served is replaced at once; failures before serving back off,
/// doubling; serving again resets the backoff.
#[test]
fn crash_restarts_are_immediate_after_serving_and_back_off_otherwise() {
    let mut s = settings();
    s.policy.restart_policy = RestartPolicy::Always;
    let mut run = Run::started(s, 100);
    run.ready(100);
    run.advance(Duration::from_millis(500));
    run.w.pids.extend([200, 300, 400]);
    let actions = run.reaped(100, killed(9));
    assert_eq!(
        spawns(&actions),
        [(2, true)],
        "served 500ms: restarted at once"
    );
    // Fails before ready, twice: 100ms, then 200ms.
    let actions = run.reaped(200, exited(1));
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.starts_with("restarting in 100ms"))
    );
    run.fire();
    let actions = run.reaped(300, exited(1));
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.starts_with("restarting in 200ms"))
    );
    run.fire();
    run.ready(400);
    run.advance(Duration::from_secs(1));
    let actions = run.reaped(400, exited(1));
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.starts_with("restarting now"))
    );
}

#[test]
fn max_restarts_gives_up_with_the_last_status() {
    let mut s = settings();
    s.policy.restart_policy = RestartPolicy::OnFailure;
    s.policy.max_restarts = Some(1);
    let mut run = Run::started(s, 100);
    run.reaped(100, exited(3));
    run.w.pids.push_back(200);
    run.fire();
    run.reaped(200, exited(4));
    assert_eq!(run.exit(), Some(Outcome::Child(ChildExit::Exited(4))));
}

#[test]
fn spawn_failure_exits_with_its_code() {
    let mut run = Run::new(settings());
    run.w.fail_next = Some(127);
    run.step(Event::Start);
    assert_eq!(run.exit(), Some(Outcome::Code(127)));
}

#[test]
fn drain_then_pre_stop_then_stop_signal_within_the_budget() {
    let mut s = settings();
    s.policy.drain_delay = Duration::from_secs(2);
    s.pre_stop = true;
    s.post_stop = true;
    let mut run = Run::started(s, 100);
    run.ready(100);
    let t0 = run.w.now;
    let actions = run.signal(Signal::TERM, OUTSIDE);
    assert_eq!(upstream(&actions), [Upstream::Stopping]);
    assert_eq!(sent(&actions), [], "serving through the drain");
    run.w.hook_pids.extend([900, 901]);
    let actions = run.fire();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Ask {
            question: Question::RunHook {
                kind: HookKind::PreStop,
                main_pid: Some(100),
                exit: None
            },
            ..
        }
    )));
    let actions = run.reaped(900, exited(0));
    assert!(sent(&actions).contains(&(To::Leader(100), Signal::TERM)));
    assert!(actions.contains(&Action::CloseListeners));
    let actions = run.reaped(100, exited(0));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Ask {
            question: Question::RunHook {
                kind: HookKind::PostStop,
                exit: Some(ChildExit::Exited(0)),
                ..
            },
            ..
        }
    )));
    run.reaped(901, exited(0));
    assert_eq!(run.exit(), Some(Outcome::Child(ChildExit::Exited(0))));
    assert!(run.w.now <= t0 + Duration::from_secs(12));
}

/// The stop's outcome is the serving generation's, even when it exits after the stop signal.
#[test]
fn outcome_is_the_serving_generations_status() {
    let mut run = Run::started(settings(), 100);
    run.ready(100);
    run.signal(Signal::TERM, OUTSIDE);
    run.reaped(100, killed(15));
    assert_eq!(
        run.exit(),
        Some(Outcome::Child(ChildExit::Signaled {
            signal: Signal::TERM,
            core_dumped: false
        }))
    );
}

#[test]
fn command_signals_are_not_requests_but_its_restart_signal_is() {
    let mut run = Run::started(settings(), 100);
    run.ready(100);
    let child = Origin::Process {
        pid: 101,
        pgid: Some(100),
    };
    let actions = run.signal(Signal::TERM, child);
    assert_eq!(sent(&actions), []);
    assert_eq!(run.core.snapshot().phase, Phase::Serving);
    let actions = run.signal(Signal::HUP, child);
    assert_eq!(spawns(&actions), [(2, false)]);
}

/// A TERM from a process outside every worker's group is a request unless it descends from
/// graceful-run (a daemonised child of the command): the core asks, and only for the
/// signals that decide something.
#[test]
fn a_descendant_outside_the_groups_is_the_commands() {
    let mut run = Run::started(settings(), 100);
    run.ready(100);
    let stray = Origin::Process {
        pid: 777,
        pgid: Some(777),
    };
    run.w.descends = true;
    let actions = run.signal(Signal::TERM, stray);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Ask {
            question: Question::Descends { pid: 777 },
            ..
        }
    )));
    assert_eq!(run.core.snapshot().phase, Phase::Serving);
    let actions = run.signal(usr1(), stray);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Ask { .. })),
        "forwarded signals do not ask"
    );
    run.w.descends = false;
    run.signal(Signal::TERM, stray);
    assert_eq!(run.core.snapshot().phase, Phase::Stopping);
}

/// A look that could not see (one that took too long on a loaded machine) is said once and
/// at once, and does not hide what later looks see: the usual mistake is still warned about.
#[test]
fn a_passing_blind_look_does_not_hide_the_not_waiting_warning() {
    let mut s = settings();
    s.policy.ready = Ready::Accepting;
    let mut run = Run::started(s, 100);
    let start = run.w.now;
    let mut lines = Vec::new();
    for look in 0.. {
        if run.w.now >= start + PROBE_WARN_AFTER + Duration::from_secs(1) {
            break;
        }
        run.w.probes.push_back(vec!["tcp://127.0.0.1:8080".into()]);
        run.w
            .blinds
            .push_back((look < 3).then_some(crate::accepting::Blind::Slow));
        lines.extend(logs(&run.fire()));
    }
    let said = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(said("took longer than"), 1, "{lines:#?}");
    assert_eq!(said("not waiting for connections on"), 1, "{lines:#?}");
    // Blind to the end: no guess that it binds its own port, and the timeout says why.
    let mut s = settings();
    s.policy.ready = Ready::Accepting;
    let mut run = Run::started(s.clone(), 100);
    let mut lines = Vec::new();
    while lines.len() < 10_000 {
        run.w.probes.push_back(vec!["tcp://127.0.0.1:8080".into()]);
        run.w
            .blinds
            .push_back(Some(crate::accepting::Blind::PermissionDenied {
                pid: 100,
                not_dumpable: true,
            }));
        let actions = run.fire();
        if actions.is_empty() {
            break;
        }
        lines.extend(logs(&actions));
        if lines.iter().any(|l| l.contains("not ready after")) {
            break;
        }
    }
    let said = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(said("permission denied"), 1, "{lines:#?}");
    assert_eq!(said("not waiting for connections on"), 0, "{lines:#?}");
    assert_eq!(
        said("could not be looked at (one is not dumpable)"),
        1,
        "{lines:#?}"
    );
}

#[test]
fn accepting_probes_back_off_and_warn_once() {
    let mut s = settings();
    s.policy.ready = Ready::Accepting;
    let mut run = Run::started(s, 100);
    let mut gaps = Vec::new();
    let mut warnings = 0;
    let start = run.w.now;
    while run.w.now < start + PROBE_WARN_AFTER + Duration::from_secs(1) {
        let before = run.w.now;
        run.w.probes.push_back(vec!["tcp://127.0.0.1:8080".into()]);
        let actions = run.fire();
        assert!(
            actions.iter().any(|a| matches!(
                a,
                Action::Ask {
                    question: Question::Probe { pgid: 100, .. },
                    ..
                }
            )),
            "{actions:?}"
        );
        gaps.push(run.w.now - before);
        warnings += logs(&actions)
            .iter()
            .filter(|l| l.contains("not waiting for connections on tcp://127.0.0.1:8080"))
            .count();
    }
    assert_eq!(warnings, 1);
    assert!(gaps.iter().all(|g| *g <= PROBE_MAX));
    assert!(gaps.len() < 150, "backs off: {} looks", gaps.len());
    let actions = run.fire();
    assert_eq!(upstream(&actions), [ready_up()]);
    assert_eq!(
        run.w.armed, None,
        "no look once ready: an idle graceful-run sleeps"
    );
}

/// A look that saw it accept a connection from a shared listener (no process caught waiting)
/// makes it ready, and the line and the status say how.
#[test]
fn a_look_that_saw_an_accepted_connection_says_so() {
    let mut s = settings();
    s.policy.ready = Ready::Accepting;
    let mut run = Run::started(s, 100);
    run.w.accepted = true;
    let actions = run.fire();
    assert_eq!(upstream(&actions), [ready_up()]);
    let lines = logs(&actions);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ready after")
                && l.contains("(accepting: it accepted a connection)")),
        "{lines:#?}"
    );
    assert_eq!(
        run.core.snapshot().workers[0].ready_by,
        Some("accepting: it accepted a connection")
    );
}

/// Slow looks (blind) that come in runs on a loaded machine: one look that could see, between
/// two runs, is not enough to warn that it does not wait; PROBE_WARN_LOOKS in a row are.
#[test]
fn not_waiting_is_said_after_looks_in_a_row_that_could_see() {
    let mut s = settings();
    s.policy.ready = Ready::Accepting;
    s.policy.ready_timeout = Duration::from_secs(60);
    let mut run = Run::started(s, 100);
    let start = run.w.now;
    let warned = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("not waiting for connections on"))
            .count()
    };
    let mut lines = Vec::new();
    // Past PROBE_WARN_AFTER, every other look slow; the last one slow.
    let mut look = 0;
    while run.w.now < start + PROBE_WARN_AFTER + Duration::from_secs(2) || look % 2 == 0 {
        run.w.probes.push_back(vec!["tcp://127.0.0.1:8080".into()]);
        run.w
            .blinds
            .push_back((look % 2 == 0).then_some(crate::accepting::Blind::Slow));
        lines.extend(logs(&run.fire()));
        look += 1;
    }
    assert_eq!(warned(&lines), 0, "{lines:#?}");
    for _ in 1..PROBE_WARN_LOOKS {
        run.w.probes.push_back(vec!["tcp://127.0.0.1:8080".into()]);
        lines.extend(logs(&run.fire()));
    }
    assert_eq!(warned(&lines), 0, "{lines:#?}");
    run.w.probes.push_back(vec!["tcp://127.0.0.1:8080".into()]);
    lines.extend(logs(&run.fire()));
    assert_eq!(warned(&lines), 1, "{lines:#?}");
}

#[test]
fn auto_takes_ready_1_before_any_probe_answer() {
    let mut s = settings();
    s.policy.ready = Ready::Auto;
    let mut run = Run::started(s, 100);
    let actions = run.ready(100);
    assert_eq!(upstream(&actions), [ready_up()]);
}

/// An event that arrives with a deadline already due is taken first: it happened before the
/// step. A reap in particular: its pid is free once reaped, so the deadline's SIGKILL must not
/// go to it.
#[test]
fn an_event_comes_before_the_deadline_it_arrives_with() {
    let mut s = settings();
    s.policy.ready_timeout = Duration::from_secs(3);
    let mut run = restarting(s);
    run.advance(Duration::from_secs(4));
    let actions = run.reaped(200, exited(1));
    assert!(
        !sent(&actions).iter().any(|(to, _)| *to == To::Leader(200)),
        "{actions:?}"
    );
    assert_eq!(run.core.snapshot().workers[0].generation, 1);
}

// ----- workers --------------------------------------------------------------------------

fn workers(n: u32) -> Settings {
    let mut s = settings();
    s.workers = n;
    s
}

/// Starts `n` workers of generation 1 and makes them ready; their pids are 100 + slot.
fn serving_workers(s: Settings) -> Run {
    let n = s.workers;
    let mut run = Run::new(s);
    let actions = run.step(Event::Start);
    assert_eq!(spawns(&actions).len(), n as usize);
    for slot in 0..n {
        run.ready(100 + slot as i32);
    }
    assert!(upstream(&run.w.all).contains(&ready_up()));
    run
}

fn alive_workers(run: &Run) -> usize {
    run.core
        .snapshot()
        .workers
        .iter()
        .filter(|w| w.exited.is_none())
        .count()
}

#[test]
fn workers_roll_one_at_a_time_within_the_surge() {
    let mut run = serving_workers(workers(3));
    let actions = run.signal(Signal::HUP, OUTSIDE);
    assert_eq!(spawns(&actions), [(2, false)], "one surge worker at a time");
    for slot in 0..3u32 {
        let new = run.spawned_pid(2, slot);
        let old = 100 + slot as i32;
        let actions = run.ready(new);
        assert!(sent(&actions).contains(&(To::Leader(old), Signal::TERM)));
        assert!(alive_workers(&run) <= 4);
        // The next replacement starts only once the old one is gone.
        let actions = run.reaped(old, exited(0));
        if slot < 2 {
            assert_eq!(spawns(&actions), [(2, false)]);
        } else {
            assert_eq!(spawns(&actions), []);
            assert_eq!(upstream(&run.w.all).last(), Some(&Upstream::Reloaded));
        }
    }
    let snapshot = run.core.snapshot();
    assert!(snapshot.workers.iter().all(|w| w.generation == 2));
    assert_eq!(snapshot.workers.len(), 3);
}

#[test]
fn max_unavailable_without_surge_stops_first() {
    let mut s = workers(2);
    s.policy.max_surge = 0;
    s.max_unavailable = 1;
    let mut run = serving_workers(s);
    let actions = run.signal(Signal::HUP, OUTSIDE);
    assert_eq!(spawns(&actions), []);
    assert!(sent(&actions).contains(&(To::Leader(100), Signal::TERM)));
    let actions = run.reaped(100, exited(0));
    assert_eq!(spawns(&actions), [(2, false)]);
}

#[test]
fn a_broken_new_version_stops_after_its_first_worker() {
    let mut run = serving_workers(workers(3));
    run.signal(Signal::HUP, OUTSIDE);
    let first = run.spawned_pid(2, 0);
    let actions = run.reaped(first, exited(1));
    assert_eq!(
        spawns(&actions),
        [],
        "no further worker of a broken version"
    );
    assert!(
        upstream(&actions)
            .iter()
            .any(|m| matches!(m, Upstream::ReloadFailed { ready: true, .. }))
    );
    let snapshot = run.core.snapshot();
    let serving: Vec<_> = snapshot
        .workers
        .iter()
        .filter(|w| w.role == Role::Serving)
        .collect();
    assert_eq!(serving.len(), 3);
    assert!(serving.iter().all(|w| w.generation == 1));
}

#[test]
fn a_crashed_worker_is_replaced_alone() {
    let mut s = workers(3);
    s.policy.restart_policy = RestartPolicy::Always;
    let mut run = serving_workers(s);
    run.advance(Duration::from_secs(5));
    let actions = run.reaped(101, killed(9));
    assert_eq!(
        spawns(&actions),
        [(1, false)],
        "same generation, one worker"
    );
    assert!(sent(&actions).is_empty(), "the others are left alone");
    let snapshot = run.core.snapshot();
    assert_eq!(
        snapshot
            .workers
            .iter()
            .filter(|w| w.role == Role::Serving)
            .count(),
        2
    );
}

#[test]
fn the_exit_status_with_workers_is_the_first_failure_in_index_order() {
    let mut run = serving_workers(workers(3));
    run.reaped(102, exited(5));
    run.reaped(101, exited(0));
    run.reaped(100, exited(0));
    assert_eq!(run.exit(), Some(Outcome::Child(ChildExit::Exited(5))));
}

// ----- steering -------------------------------------------------------------------------

fn steering() -> Settings {
    let mut s = settings();
    s.steering = true;
    s
}

fn steers(actions: &[Action]) -> Vec<Vec<u32>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Steer { members } => Some(members.clone()),
            _ => None,
        })
        .collect()
}

fn busy(n: u32) -> Activity {
    Activity {
        busy: n,
        ..Activity::default()
    }
}

#[test]
fn steering_sends_new_connections_to_the_new_generation_then_drains_the_old() {
    let mut run = Run::started(steering(), 100);
    assert_eq!(
        steers(&run.w.all),
        [vec![0]],
        "the starting one gets the queue"
    );
    run.ready(100);
    run.w.pids.push_back(200);
    run.signal(Signal::HUP, OUTSIDE);
    assert_eq!(
        run.w.members.last(),
        Some(&(200, Some(1))),
        "a member of its own"
    );
    let actions = run.ready(200);
    assert_eq!(steers(&actions), [vec![1]]);
    assert!(
        sent(&actions).is_empty(),
        "the old one is not signalled yet"
    );
    assert_eq!(upstream(&actions), [Upstream::Reloaded]);
    // It still has busy connections at the first looks, then none.
    run.w.observations.extend([busy(2), busy(1)]);
    let actions = run.fire();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Ask {
            question: Question::Observe {
                pgid: 100,
                member: Some(0),
                ..
            },
            ..
        }
    )));
    assert!(sent(&actions).is_empty());
    let roles: Vec<Role> = run.core.snapshot().workers.iter().map(|w| w.role).collect();
    assert_eq!(roles, [Role::Serving, Role::Retiring]);
    run.fire();
    let actions = run.fire();
    assert_eq!(
        sent(&actions),
        [
            (To::Leader(100), Signal::TERM),
            (To::Leader(100), Signal::CONT)
        ]
    );
}

#[test]
fn a_drain_ends_at_the_drain_timeout() {
    let mut s = steering();
    s.policy.drain_timeout = Duration::from_secs(5);
    let mut run = Run::started(s, 100);
    run.ready(100);
    run.w.pids.push_back(200);
    run.signal(Signal::HUP, OUTSIDE);
    let t0 = run.w.now;
    run.ready(200);
    loop {
        run.w.observations.push_back(busy(1));
        let actions = run.fire();
        if sent(&actions).contains(&(To::Leader(100), Signal::TERM)) {
            break;
        }
    }
    assert_eq!(run.w.now, t0 + Duration::from_secs(5));
}

#[test]
fn ctl_restart_wait_is_answered_after_the_steering_changed() {
    let mut run = Run::started(steering(), 100);
    run.ready(100);
    run.w.pids.push_back(200);
    run.step(Event::Control {
        client: 7,
        peer: Peer { pid: 9, uid: 0 },
        command: Command::Restart { wait: true },
    });
    let actions = run.ready(200);
    let steer = actions
        .iter()
        .position(|a| matches!(a, Action::Steer { .. }))
        .expect("steered");
    let done = actions
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Reply {
                    client: 7,
                    reply: Reply::Done,
                    ..
                }
            )
        })
        .expect("answered");
    assert!(steer < done, "{actions:?}");
}

#[test]
fn a_member_is_reused_only_once_its_holder_is_gone() {
    let mut run = Run::started(steering(), 100);
    run.ready(100);
    run.w.pids.extend([200, 300]);
    run.signal(Signal::HUP, OUTSIDE);
    run.ready(200);
    run.fire(); // quiet at the first look: TERM
    // Gen 1's master is gone but a worker of it still holds member 0.
    run.w.alive_groups.insert(100);
    run.reaped(100, exited(0));
    run.signal(Signal::HUP, OUTSIDE);
    run.w.alive_groups.clear();
    run.reaped(101, exited(0));
    assert_eq!(
        run.w.members.last(),
        Some(&(300, Some(0))),
        "member 0 is free again"
    );
}

#[test]
fn a_stop_waits_for_busy_connections_then_signals_within_half_the_stop_timeout() {
    let mut s = steering();
    s.policy.stop_timeout = Duration::from_secs(10);
    let mut run = Run::started(s, 100);
    run.ready(100);
    let t0 = run.w.now;
    run.w.observations.push_back(busy(1));
    let actions = run.signal(Signal::TERM, OUTSIDE);
    assert!(sent(&actions).is_empty(), "waits for its busy connection");
    // Quiet at the next look: the stop signal.
    let actions = run.fire();
    assert!(sent(&actions).contains(&(To::Leader(100), Signal::TERM)));
    assert!(run.w.now < t0 + Duration::from_secs(1));

    // Busy for ever: the stop signal at half the stop timeout.
    let mut run = Run::started(steering(), 100);
    run.ready(100);
    let t0 = run.w.now;
    run.w.observations.push_back(busy(1));
    run.signal(Signal::TERM, OUTSIDE);
    loop {
        run.w.observations.push_back(busy(1));
        let actions = run.fire();
        if sent(&actions).contains(&(To::Leader(100), Signal::TERM)) {
            break;
        }
    }
    assert_eq!(run.w.now, t0 + Duration::from_secs(5));
}

#[test]
fn workers_are_spread_over_and_each_drained_on_its_own() {
    let mut s = steering();
    s.workers = 3;
    let mut run = serving_workers(s);
    assert_eq!(steers(&run.w.all).last(), Some(&vec![0, 1, 2]));
    run.signal(Signal::HUP, OUTSIDE);
    let new = run.spawned_pid(2, 0);
    let actions = run.ready(new);
    assert_eq!(steers(&actions), [vec![1, 2, 3]]);
}

// ----- triggers -------------------------------------------------------------------------

fn with_health(command: bool) -> Settings {
    let mut s = settings();
    s.health = Some(HealthSettings {
        command,
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        retries: 3,
        start_period: Duration::ZERO,
    });
    s
}

fn checked(run: &mut Run, pid: i32, result: Result<u16, String>) -> Vec<Action> {
    let worker = run.worker(pid);
    run.step(Event::Checked { worker, result })
}

#[test]
fn an_unhealthy_worker_is_replaced_after_the_retries_new_one_first() {
    let mut run = Run::started(with_health(false), 100);
    run.ready(100);
    for n in 0..3 {
        let actions = run.fire(); // the check starts
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Ask {
                question: Question::StartCheck { pid: 100, .. },
                ..
            }
        )));
        run.w.pids.push_back(200);
        let actions = checked(&mut run, 100, Ok(500));
        if n < 2 {
            assert_eq!(spawns(&actions), [], "not before 3 failures");
        } else {
            assert_eq!(spawns(&actions), [(2, false)], "{actions:?}");
            assert!(
                sent(&actions).is_empty(),
                "the old one serves until replaced"
            );
        }
    }
    assert_eq!(run.core.snapshot().triggered.unhealthy, 1);
    assert_eq!(run.core.snapshot().workers[0].healthy, Some(false));
    let actions = run.ready(200);
    assert!(sent(&actions).contains(&(To::Leader(100), Signal::TERM)));
}

fn statuses(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Upstream(Upstream::Status(text)) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// The health state shows in sd_notify's STATUS= as it changes: healthy at the first check
/// that passes, unhealthy when the retries ran out, and nothing new while it stays the same.
#[test]
fn the_health_state_is_told_upstream_as_it_changes() {
    let mut run = Run::started(with_health(false), 100);
    run.ready(100);
    run.fire();
    let actions = checked(&mut run, 100, Ok(200));
    assert_eq!(statuses(&actions), ["gen 1 serving (pid 100), healthy"]);
    run.fire();
    let actions = checked(&mut run, 100, Ok(204));
    assert_eq!(
        statuses(&actions),
        Vec::<String>::new(),
        "no change, no STATUS="
    );
    let mut said = Vec::new();
    for _ in 0..3 {
        run.fire();
        run.w.pids.push_back(200);
        said.extend(statuses(&checked(&mut run, 100, Ok(500))));
    }
    assert_eq!(said, ["gen 1 serving (pid 100), unhealthy: replacing it"]);
    assert_eq!(run.core.snapshot().triggered.unhealthy, 1);
}

#[test]
fn health_failures_in_the_start_period_do_not_count() {
    let mut s = with_health(false);
    s.health = s.health.map(|h| HealthSettings {
        start_period: Duration::from_secs(60),
        ..h
    });
    let mut run = Run::started(s, 100);
    run.ready(100);
    for _ in 0..5 {
        run.fire();
        let actions = checked(&mut run, 100, Err("refused".into()));
        assert_eq!(spawns(&actions), []);
    }
    // One success ends the start period: failures count from then on.
    run.fire();
    checked(&mut run, 100, Ok(200));
    for _ in 0..2 {
        run.fire();
        checked(&mut run, 100, Err("refused".into()));
    }
    run.fire();
    let actions = checked(&mut run, 100, Err("refused".into()));
    assert_eq!(spawns(&actions), [(2, false)]);
}

#[test]
fn a_health_command_that_hangs_is_killed_at_the_timeout_and_fails() {
    let mut run = Run::started(with_health(true), 100);
    run.ready(100);
    run.w.checks.push_back(CheckStart::Process(700));
    run.fire(); // starts
    let actions = run.fire(); // its timeout
    assert_eq!(sent(&actions), [(To::Hook(700), Signal::KILL)]);
    let actions = run.reaped(700, killed(9));
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.contains("health check failed (1/3)")),
        "{actions:?}"
    );
}

#[test]
fn a_replacement_that_fails_leaves_the_unhealthy_worker_serving() {
    let mut s = with_health(false);
    s.health = s.health.map(|h| HealthSettings { retries: 1, ..h });
    let mut run = Run::started(s, 100);
    run.ready(100);
    run.fire();
    run.w.pids.push_back(200);
    checked(&mut run, 100, Ok(503));
    let actions = run.reaped(200, exited(1));
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.contains("its replacement failed")),
        "{actions:?}"
    );
    let snapshot = run.core.snapshot();
    assert_eq!(snapshot.workers[0].pid, 100);
    assert_eq!(snapshot.workers[0].role, Role::Serving);
}

#[test]
fn a_worker_that_stops_pinging_the_watchdog_is_replaced_and_killed() {
    let mut s = settings();
    s.policy.watchdog = Some(Duration::from_secs(2));
    let mut run = Run::started(s, 100);
    run.ready(100);
    // Pings keep it alive.
    run.advance(Duration::from_secs(1));
    let worker = run.worker(100);
    run.step(Event::Notify {
        worker,
        fields: vec![("WATCHDOG".into(), "1".into())],
    });
    run.w.pids.push_back(200);
    let actions = run.fire();
    assert_eq!(spawns(&actions), [(2, false)], "{actions:?}");
    assert!(sent(&actions).is_empty());
    let actions = run.ready(200);
    assert_eq!(
        sent(&actions),
        [(To::Group(100), Signal::KILL)],
        "hung: no drain"
    );
    assert_eq!(run.core.snapshot().triggered.watchdog, 1);
}

/// Its pings come on its NOTIFY_SOCKET: under --watchdog every worker gets one, whatever
/// --ready says (with `--ready accepting` it would get none, and be found hung).
#[test]
fn under_the_watchdog_every_worker_gets_a_notify_socket() {
    for ready in [Ready::Accepting, Ready::Auto, Ready::Notify] {
        let mut s = settings();
        s.policy.ready = ready;
        s.policy.watchdog = Some(Duration::from_secs(2));
        let mut run = Run::new(s);
        run.w.pids.push_back(100);
        let actions = run.step(Event::Start);
        let needs: Vec<NotifyNeed> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Ask {
                    question: Question::Spawn { notify, .. },
                    ..
                } => Some(*notify),
                _ => None,
            })
            .collect();
        assert_eq!(needs, [NotifyNeed::Required], "{ready:?}");
    }
}

#[test]
fn a_hung_worker_is_killed_at_the_stop_timeout_if_its_replacement_is_not_ready() {
    let mut s = settings();
    s.policy.watchdog = Some(Duration::from_secs(2));
    s.policy.stop_timeout = Duration::from_secs(3);
    let mut run = Run::started(s, 100);
    run.ready(100);
    run.fire(); // hung: the replacement starts
    let actions = run.fire(); // a stop timeout later
    assert!(sent(&actions).contains(&(To::Group(100), Signal::KILL)));
    assert_eq!(run.core.snapshot().phase, Phase::Starting);
}

#[test]
fn memory_over_the_limit_three_samples_in_a_row_replaces_the_worker() {
    let mut s = settings();
    s.max_memory = Some(100 << 20);
    let mut run = Run::started(s, 100);
    run.ready(100);
    let worker = run.worker(100);
    let sample = |run: &mut Run, mib: u64| {
        run.fire();
        run.step(Event::Memory {
            worker,
            bytes: mib << 20,
        })
    };
    sample(&mut run, 150);
    sample(&mut run, 150);
    sample(&mut run, 50); // a spike, not a leak
    sample(&mut run, 150);
    sample(&mut run, 150);
    let actions = sample(&mut run, 150);
    assert_eq!(spawns(&actions), [(2, false)]);
    assert_eq!(run.core.snapshot().workers[0].memory, Some(150 << 20));
}

/// A watch that fires again while the replacement it asked for starts is the same trigger:
/// no second replacement, counted once.
#[test]
fn a_trigger_firing_again_while_its_replacement_starts_is_counted_once() {
    let mut s = settings();
    s.max_memory = Some(100 << 20);
    let mut run = Run::started(s, 100);
    run.ready(100);
    let worker = run.worker(100);
    run.w.pids.push_back(200);
    let mut spawned = Vec::new();
    for _ in 0..6 {
        run.fire();
        let actions = run.step(Event::Memory {
            worker,
            bytes: 150 << 20,
        });
        spawned.extend(spawns(&actions));
    }
    assert_eq!(spawned, [(2, false)]);
    assert_eq!(run.core.snapshot().triggered.memory, 1);
    run.ready(200);
    assert_eq!(run.core.snapshot().triggered.memory, 1);
}

#[test]
fn a_worker_is_replaced_after_its_lifetime() {
    let mut s = settings();
    s.max_lifetime = Some(Duration::from_secs(100));
    let mut run = Run::started(s, 100);
    let t0 = run.w.now;
    run.ready(100);
    let actions = run.fire();
    assert_eq!(spawns(&actions), [(2, false)]);
    // random 0: the whole lifetime.
    assert_eq!(run.w.now, t0 + Duration::from_secs(100));
}

#[test]
fn changes_build_then_restart_and_a_broken_build_keeps_the_old_code() {
    let mut s = settings();
    s.watch = Some(WatchSettings { build: true });
    let mut run = Run::started(s, 100);
    run.ready(100);
    let change = || Event::Changed {
        paths: vec!["main.go".into()],
        more: 0,
    };
    let actions = run.step(change());
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Ask {
            question: Question::StartBuild,
            ..
        }
    )));
    // More saves during the build: one more build after it, then the restart.
    run.step(change());
    run.step(change());
    let actions = run.reaped(950, exited(0));
    assert_eq!(spawns(&actions), [], "a newer build comes first");
    run.w.pids.push_back(200);
    let actions = run.reaped(950, exited(0));
    assert_eq!(spawns(&actions), [(2, false)]);
    run.ready(200);
    // A broken build: nothing restarts.
    run.step(change());
    let actions = run.reaped(950, exited(2));
    assert_eq!(spawns(&actions), []);
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.contains("gen 2 keeps serving"))
    );
}

#[test]
fn extend_timeout_usec_extends_the_readiness_deadline_and_is_relayed() {
    let mut s = settings();
    s.policy.ready_timeout = Duration::from_secs(2);
    let mut run = Run::started(s, 100);
    let worker = run.worker(100);
    let actions = run.step(Event::Notify {
        worker,
        fields: vec![("EXTEND_TIMEOUT_USEC".into(), "10000000".into())],
    });
    assert_eq!(
        upstream(&actions),
        [Upstream::ExtendTimeout { usec: 10_000_000 }]
    );
    run.advance(Duration::from_secs(5));
    let actions = run.ready(100);
    assert_eq!(upstream(&actions), [ready_up()], "still in time");
}

fn usr1() -> Signal {
    Signal::from_raw(nix::libc::SIGUSR1).expect("USR1 is a signal")
}

/// Whatever tells the outside world that the new generation took over comes after the
/// steering change of the same step: the log lines ("takes over", "new connections go to its
/// replacement") that a log watcher acts on, and READY=1 to systemd, on which `systemctl
/// reload` returns. The executor carries actions out in order, so anything before the Steer
/// action is seen while new connections still go to the old generation.
#[test]
fn the_takeover_is_announced_after_the_steering_changed() {
    let mut run = Run::started(steering(), 100);
    run.ready(100);
    run.w.pids.push_back(200);
    run.signal(Signal::HUP, OUTSIDE);
    let actions = run.ready(200);
    let steer = actions
        .iter()
        .position(|a| matches!(a, Action::Steer { .. }))
        .expect("steered");
    let announced: Vec<&Action> = actions[..steer]
        .iter()
        .filter(|a| match a {
            Action::Upstream(Upstream::Reloaded | Upstream::Ready { .. }) => true,
            Action::Log { text, .. } => {
                text.contains("takes over") || text.contains("go to its replacement")
            }
            _ => false,
        })
        .collect();
    assert!(
        announced.is_empty(),
        "before the Steer action: {announced:?}"
    );
}
