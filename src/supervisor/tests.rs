//! Scripted tests of the core: one per transition and per defect it once had. Each drives
//! [`Core`] with events and a fake clock, as the executor would, and checks the actions.

use std::time::{Duration, Instant};

use super::core::*;
use crate::cli::{Ready, RestartPolicy};
use crate::exit::{ChildExit, NOT_READY, Outcome};
use crate::signal::{Signal, SignalMap};

pub(super) fn settings() -> Settings {
    Settings {
        restart_signal: Some(Signal::HUP),
        signal_map: SignalMap::default(),
        stop_signal: None,
        stop_timeout: Duration::from_secs(10),
        drain_delay: Duration::ZERO,
        hook_timeout: Duration::from_secs(10),
        pre_stop: false,
        post_stop: false,
        ready: Ready::Notify,
        ready_timeout: Duration::from_secs(60),
        restart_policy: RestartPolicy::Never,
        restart_delay: Duration::from_millis(100),
        max_restarts: None,
        delivery: Delivery::Mixed,
        reaper: true,
        job_control: false,
        stream_listeners: true,
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
    descendant: false,
};

/// A core on a fake clock, keeping every action it returned.
struct Run {
    core: Core,
    now: Instant,
    armed: Option<Instant>,
    all: Vec<Action>,
}

impl Run {
    fn new(settings: Settings) -> Run {
        Run {
            core: Core::new(settings),
            now: Instant::now(),
            armed: None,
            all: Vec::new(),
        }
    }

    fn step(&mut self, event: Event) -> Vec<Action> {
        let actions = self.core.step(self.now, event);
        for action in &actions {
            if let Action::ArmTimer(at) = action {
                assert!(
                    at.is_none_or(|at| at > self.now),
                    "armed in the past: {action:?}"
                );
                self.armed = *at;
            }
        }
        self.all.extend(actions.iter().cloned());
        actions
    }

    /// Starts generation 1 as `pid`.
    fn started(settings: Settings, pid: i32) -> Run {
        let mut run = Run::new(settings);
        let actions = run.step(Event::Start);
        assert!(
            actions.contains(&Action::Spawn {
                generation: 1,
                reset_nonblocking: true
            }),
            "{actions:?}"
        );
        run.step(Event::Spawned {
            generation: 1,
            result: Ok(pid),
        });
        run
    }

    fn ready(&mut self, generation: GenId) -> Vec<Action> {
        self.step(Event::Notify {
            generation,
            fields: vec![("READY".into(), "1".into())],
        })
    }

    /// Moves the clock to the armed deadline and fires it.
    fn fire(&mut self) -> Vec<Action> {
        let at = self.armed.expect("a deadline is armed");
        self.now = at;
        self.step(Event::Timer)
    }

    fn signal(&mut self, signal: Signal, origin: Origin) -> Vec<Action> {
        self.step(Event::Signal { signal, origin })
    }

    fn reaped(&mut self, pid: i32, status: i32) -> Vec<Action> {
        self.step(Event::Reaped { pid, status })
    }

    /// Answers every question in `actions` as a world where nothing is left but `alive`
    /// groups, until the core asks nothing more; returns every action on the way.
    fn answer(&mut self, actions: Vec<Action>, alive_groups: &[i32]) -> Vec<Action> {
        let mut out = actions.clone();
        let mut pending = actions;
        while !pending.is_empty() {
            let mut next = Vec::new();
            for action in pending {
                let event = match action {
                    Action::CheckGroup { generation, pgid } => Some(Event::GroupChecked {
                        generation,
                        alive: alive_groups.contains(&pgid),
                    }),
                    Action::CheckLeftovers => Some(Event::LeftoversChecked { found: false }),
                    _ => None,
                };
                if let Some(event) = event {
                    next.extend(self.step(event));
                }
            }
            out.extend(next.iter().cloned());
            pending = next;
        }
        out
    }

    fn exit(&self) -> Option<Outcome> {
        self.all.iter().find_map(|a| match a {
            Action::Exit(outcome) => Some(*outcome),
            _ => None,
        })
    }
}

fn sent(actions: &[Action]) -> Vec<(Target, Signal)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { target, signal } => Some((*target, *signal)),
            _ => None,
        })
        .collect()
}

fn upstream(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Upstream(text) if !text.starts_with("STATUS=") => Some(text.clone()),
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

fn spawns(actions: &[Action]) -> Vec<(GenId, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn {
                generation,
                reset_nonblocking,
            } => Some((*generation, *reset_nonblocking)),
            _ => None,
        })
        .collect()
}

fn leader(generation: GenId, pid: i32) -> Target {
    Target::Leader { generation, pid }
}

fn group(generation: GenId, pgid: i32) -> Target {
    Target::Group { generation, pgid }
}

/// Gen 1 (pid 100) serving, gen 2 (pid 200) started by HUP.
fn restarting(settings: Settings) -> Run {
    let mut run = Run::started(settings, 100);
    run.ready(1);
    let actions = run.signal(Signal::HUP, OUTSIDE);
    assert_eq!(spawns(&actions), [(2, false)]);
    run.step(Event::Spawned {
        generation: 2,
        result: Ok(200),
    });
    run
}

#[test]
fn ready_announces_the_service_with_graceful_runs_pid() {
    let mut run = Run::started(settings(), 100);
    assert_eq!(upstream(&run.all), Vec::<String>::new());
    let actions = run.ready(1);
    assert_eq!(upstream(&actions), ["READY=1\nMAINPID=1000"]);
    assert_eq!(
        run.armed, None,
        "an idle, serving graceful-run arms no timer"
    );
}

#[test]
fn handover_stops_the_old_main_process_once_the_new_one_is_ready() {
    let mut run = restarting(settings());
    assert!(upstream(&run.all).contains(&"RELOADING=1".to_string()));
    let actions = run.ready(2);
    assert_eq!(
        sent(&actions),
        [
            (leader(1, 100), Signal::TERM),
            (leader(1, 100), Signal::CONT)
        ]
    );
    assert_eq!(upstream(&actions), ["READY=1\nERRNO=0"]);
    let snapshot = run.core.snapshot();
    assert_eq!(snapshot.phase, Phase::Serving);
    assert_eq!(snapshot.generations[0].id, 2);
    // The old one exits; its group is empty: released, nothing left to time.
    let actions = run.reaped(100, exited(0));
    let actions = run.answer(actions, &[]);
    assert!(actions.contains(&Action::Release { generation: 1 }));
    assert_eq!(run.armed, None);
}

/// Defect 1: O_NONBLOCK may only be reset when no generation is alive.
#[test]
fn nonblocking_is_reset_only_when_no_generation_is_alive() {
    let mut run = restarting(settings());
    assert_eq!(spawns(&run.all), [(1, true), (2, false)]);
    run.ready(2);
    // Gen 1 still stopping: a restart now must not touch the flag.
    let actions = run.signal(Signal::HUP, OUTSIDE);
    assert_eq!(spawns(&actions), [(3, false)]);
}

/// Defect 4: the serving generation dies during a restart and the incoming one then misses
/// --ready-timeout: graceful-run must end (here: no restart policy), not hang.
#[test]
fn serving_dies_during_restart_then_incoming_never_ready() {
    let mut s = settings();
    s.ready_timeout = Duration::from_secs(5);
    let mut run = restarting(s);
    let actions = run.reaped(100, exited(7));
    run.answer(actions, &[]);
    assert_eq!(run.core.snapshot().phase, Phase::Starting);
    // Not ready in time: stopped, and the service ends.
    let actions = run.fire();
    assert!(sent(&actions).contains(&(leader(2, 200), Signal::TERM)));
    let actions = run.reaped(200, killed(15));
    run.answer(actions, &[]);
    // The last serving generation was gen 1, but gen 2 took over the serving role and
    // never became ready.
    assert_eq!(run.exit(), Some(Outcome::Code(NOT_READY)));
    // Later HUPs are not queued forever: graceful-run is done.
    assert!(run.core.is_done());
}

/// Defect 4 with a restart policy: the command is started again.
#[test]
fn serving_dies_during_restart_then_incoming_crashes_restarts_with_policy() {
    let mut s = settings();
    s.restart_policy = RestartPolicy::OnFailure;
    let mut run = restarting(s);
    let actions = run.reaped(100, exited(7));
    run.answer(actions, &[]);
    let actions = run.reaped(200, exited(3));
    let actions = run.answer(actions, &[]);
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.starts_with("restarting in"))
    );
    let actions = run.fire();
    assert_eq!(spawns(&actions), [(3, true)]);
}

/// Defect 10: a first generation that never becomes ready: exit 124, with a hint.
#[test]
fn first_generation_never_ready_exits_124() {
    let mut s = settings();
    s.ready_timeout = Duration::from_secs(3);
    let mut run = Run::started(s, 100);
    let actions = run.fire();
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.contains("not ready after 3s") && l.contains("READY=1")),
        "{actions:?}"
    );
    assert!(sent(&actions).contains(&(leader(1, 100), Signal::TERM)));
    let actions = run.reaped(100, killed(15));
    run.answer(actions, &[]);
    assert_eq!(run.exit(), Some(Outcome::Code(NOT_READY)));
    assert!(
        !upstream(&run.all).iter().any(|m| m.starts_with("READY=1")),
        "nothing ever served"
    );
}

/// Defect 11: a restart during crash backoff tells systemd RELOADING=1, then READY=1.
#[test]
fn restart_during_backoff_is_a_reload_for_systemd() {
    let mut s = settings();
    s.restart_policy = RestartPolicy::Always;
    s.restart_delay = Duration::from_secs(1);
    let mut run = Run::started(s, 100);
    run.ready(1);
    // A crash right after becoming ready: backoff (it did not serve for --restart-delay).
    let actions = run.reaped(100, exited(1));
    run.answer(actions, &[]);
    assert_eq!(run.core.snapshot().phase, Phase::Backoff);
    let actions = run.signal(Signal::HUP, OUTSIDE);
    assert_eq!(upstream(&actions), ["RELOADING=1"]);
    assert_eq!(spawns(&actions), [(2, true)]);
    run.step(Event::Spawned {
        generation: 2,
        result: Ok(200),
    });
    let actions = run.ready(2);
    assert_eq!(upstream(&actions), ["READY=1\nERRNO=0"]);
}

/// Defect 11: a failed reload while the old generation serves ends the reload (READY=1, as
/// the old code still serves) and says so in STATUS.
#[test]
fn failed_reload_is_reported_in_status() {
    let mut run = restarting(settings());
    let actions = run.reaped(200, exited(3));
    let actions = run.answer(actions, &[]);
    let all: Vec<&String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Upstream(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0]
            .starts_with("READY=1\nSTATUS=restart failed: the new generation exited with status 3"),
        "{all:?}"
    );
    assert!(all[0].ends_with("\nERRNO=10"), "ECHILD: {all:?}");
}

/// Defect 16: READY=1 is never sent when nothing serves.
#[test]
fn no_ready_upstream_when_nothing_serves() {
    let mut s = settings();
    s.restart_policy = RestartPolicy::Always;
    let mut run = Run::started(s, 100);
    let actions = run.reaped(100, exited(1)); // before it was ready
    run.answer(actions, &[]);
    run.signal(Signal::HUP, OUTSIDE); // reload from backoff
    run.step(Event::Spawned {
        generation: 2,
        result: Ok(200),
    });
    let actions = run.reaped(200, exited(1)); // fails again: nothing serves
    let actions = run.answer(actions, &[]);
    assert!(
        !upstream(&actions).iter().any(|m| m.starts_with("READY=1")),
        "{actions:?}"
    );
}

/// Defect 16: a queued restart does not survive a crash restart (one extra handover).
#[test]
fn queued_restart_is_dropped_by_a_crash_restart() {
    let mut s = settings();
    s.restart_policy = RestartPolicy::Always;
    let mut run = Run::started(s, 100);
    run.signal(Signal::HUP, OUTSIDE); // queued: gen 1 is not ready
    assert!(run.core.snapshot().queued);
    let actions = run.reaped(100, exited(1));
    run.answer(actions, &[]);
    let actions = run.fire();
    assert_eq!(spawns(&actions), [(2, true)]);
    run.step(Event::Spawned {
        generation: 2,
        result: Ok(200),
    });
    let actions = run.ready(2);
    assert_eq!(spawns(&actions), [], "no handover for the stale request");
}

/// Defect 9: GNU timeout's TERM to its child then to its group is one request; a second
/// process's TERM, a later TERM, or a second Ctrl-C force.
#[test]
fn duplicate_term_from_the_same_process_is_one_request() {
    let mut s = settings();
    s.stop_timeout = Duration::from_secs(30);
    let mut run = Run::started(s.clone(), 100);
    run.ready(1);
    run.signal(Signal::TERM, OUTSIDE);
    run.now += Duration::from_millis(1);
    let actions = run.signal(Signal::TERM, OUTSIDE);
    assert_eq!(sent(&actions), [], "a duplicate must not force");

    // The same process, later: a new request.
    run.now += DUPLICATE_WINDOW;
    let actions = run.signal(Signal::TERM, OUTSIDE);
    assert!(sent(&actions).contains(&(group(1, 100), Signal::KILL)));

    // Another process at once: a new request.
    let mut run = Run::started(s.clone(), 100);
    run.ready(1);
    run.signal(Signal::TERM, OUTSIDE);
    let other = Origin::Process {
        pid: 4343,
        pgid: None,
        descendant: false,
    };
    let actions = run.signal(Signal::TERM, other);
    assert!(sent(&actions).contains(&(group(1, 100), Signal::KILL)));

    // Two Ctrl-C presses (the kernel sends both).
    let mut run = Run::started(s, 100);
    run.ready(1);
    run.signal(Signal::INT, Origin::Kernel);
    let actions = run.signal(Signal::INT, Origin::Kernel);
    assert!(sent(&actions).contains(&(group(1, 100), Signal::KILL)));
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
    s.stop_timeout = Duration::from_secs(5);
    let mut run = Run::started(s, 100);
    run.ready(1);
    let t0 = run.now;
    run.signal(Signal::TERM, OUTSIDE);
    let actions = run.reaped(100, exited(0));
    // Group empty, but an orphan outside the group was re-parented to us.
    let mut pending = actions;
    let mut checks = 0;
    while !pending.is_empty() {
        let mut next = Vec::new();
        for a in pending {
            match a {
                Action::CheckGroup { generation, .. } => {
                    next.extend(run.step(Event::GroupChecked {
                        generation,
                        alive: false,
                    }))
                }
                Action::CheckLeftovers => {
                    checks += 1;
                    next.extend(run.step(Event::LeftoversChecked { found: checks == 1 }))
                }
                _ => {}
            }
        }
        pending = next;
    }
    assert!(sent(&run.all).contains(&(Target::Leftovers, Signal::TERM)));
    let actions = run.fire(); // kill_at: SIGKILL sweep
    assert!(sent(&actions).contains(&(Target::Leftovers, Signal::KILL)));
    assert!(run.armed.is_some(), "the killed stage has a deadline");
    // An orphan shows up after the sweep (its parent died of it): SIGKILL for it too.
    let actions = run.reaped(555, killed(9));
    assert!(actions.contains(&Action::CheckLeftovers));
    let actions = run.step(Event::LeftoversChecked { found: true });
    assert!(sent(&actions).contains(&(Target::Leftovers, Signal::KILL)));
    // It never dies: graceful-run gives up within the bound.
    run.fire();
    assert_eq!(run.exit(), Some(Outcome::Child(ChildExit::Exited(0))));
    assert!(run.now <= t0 + Duration::from_secs(5) + KILL_GRACE);
}

#[test]
fn second_term_while_leftovers_stop_kills_them() {
    let mut run = Run::started(settings(), 100);
    run.ready(1);
    run.signal(Signal::TERM, OUTSIDE);
    let actions = run.reaped(100, exited(0));
    for a in actions {
        if let Action::CheckGroup { generation, .. } = a {
            run.step(Event::GroupChecked {
                generation,
                alive: false,
            });
        }
    }
    run.step(Event::LeftoversChecked { found: true });
    let other = Origin::Process {
        pid: 5,
        pgid: None,
        descendant: false,
    };
    let actions = run.signal(Signal::TERM, other);
    assert!(sent(&actions).contains(&(Target::Leftovers, Signal::KILL)));
}

/// Defect 7: durations too large to add to a clock are "never", not a crash.
#[test]
fn huge_durations_do_not_overflow() {
    let mut s = settings();
    s.stop_timeout = Duration::MAX;
    s.drain_delay = Duration::MAX;
    s.ready_timeout = Duration::MAX;
    s.hook_timeout = Duration::MAX;
    s.ready = Ready::After(Duration::MAX);
    s.restart_delay = Duration::MAX;
    s.restart_policy = RestartPolicy::Always;
    let mut run = Run::started(s, 100);
    run.signal(Signal::HUP, OUTSIDE);
    let actions = run.reaped(100, exited(1));
    run.answer(actions, &[]);
    run.signal(Signal::TERM, OUTSIDE);
    assert_eq!(run.exit(), None);
}

/// Defect 17: KillMode=mixed. The stop signal goes to the main process; SIGKILL at the
/// timeout to the group; workers left once the main process exits get the stop signal.
#[test]
fn mixed_kill_mode() {
    let mut run = Run::started(settings(), 100);
    run.ready(1);
    let actions = run.signal(usr1(), OUTSIDE);
    assert_eq!(sent(&actions), [(leader(1, 100), usr1())]);
    let actions = run.signal(Signal::TERM, OUTSIDE);
    assert_eq!(
        sent(&actions),
        [
            (leader(1, 100), Signal::TERM),
            (leader(1, 100), Signal::CONT)
        ]
    );
    // The master exits, a worker is left in the group: it gets TERM now, SIGKILL later.
    let actions = run.reaped(100, exited(0));
    let actions = run.answer(actions, &[100]);
    assert!(sent(&actions).contains(&(group(1, 100), Signal::TERM)));
    let actions = run.fire();
    assert!(sent(&actions).contains(&(group(1, 100), Signal::KILL)));

    // A master that ignores TERM: SIGKILL to the whole group at the timeout.
    let mut run = Run::started(settings(), 100);
    run.ready(1);
    run.signal(Signal::TERM, OUTSIDE);
    let actions = run.fire();
    assert_eq!(sent(&actions), [(group(1, 100), Signal::KILL)]);
}

#[test]
fn group_kill_mode_signals_the_group() {
    let mut s = settings();
    s.delivery = Delivery::Group;
    let mut run = Run::started(s, 100);
    run.ready(1);
    let actions = run.signal(usr1(), OUTSIDE);
    assert_eq!(sent(&actions), [(group(1, 100), usr1())]);
}

/// Part 3: a generation that served is replaced at once; failures before serving back off,
/// doubling; serving again resets the backoff.
#[test]
fn crash_restarts_are_immediate_after_serving_and_back_off_otherwise() {
    let mut s = settings();
    s.restart_policy = RestartPolicy::Always;
    let mut run = Run::started(s, 100);
    run.ready(1);
    run.now += Duration::from_millis(500);
    let actions = run.reaped(100, killed(9));
    let actions = run.answer(actions, &[]);
    assert_eq!(
        spawns(&actions),
        [(2, true)],
        "served 500ms: restarted at once"
    );
    run.step(Event::Spawned {
        generation: 2,
        result: Ok(200),
    });
    // Fails before ready, twice: 100ms, then 200ms.
    let actions = run.reaped(200, exited(1));
    let actions = run.answer(actions, &[]);
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.starts_with("restarting in 100ms"))
    );
    run.fire();
    run.step(Event::Spawned {
        generation: 3,
        result: Ok(300),
    });
    let actions = run.reaped(300, exited(1));
    let actions = run.answer(actions, &[]);
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.starts_with("restarting in 200ms"))
    );
    run.fire();
    run.step(Event::Spawned {
        generation: 4,
        result: Ok(400),
    });
    run.ready(4);
    run.now += Duration::from_secs(1);
    let actions = run.reaped(400, exited(1));
    let actions = run.answer(actions, &[]);
    assert!(
        logs(&actions)
            .iter()
            .any(|l| l.starts_with("restarting now"))
    );
}

#[test]
fn max_restarts_gives_up_with_the_last_status() {
    let mut s = settings();
    s.restart_policy = RestartPolicy::OnFailure;
    s.max_restarts = Some(1);
    let mut run = Run::started(s, 100);
    let actions = run.reaped(100, exited(3));
    run.answer(actions, &[]);
    run.fire();
    run.step(Event::Spawned {
        generation: 2,
        result: Ok(200),
    });
    let actions = run.reaped(200, exited(4));
    run.answer(actions, &[]);
    assert_eq!(run.exit(), Some(Outcome::Child(ChildExit::Exited(4))));
}

#[test]
fn spawn_failure_exits_with_its_code() {
    let mut run = Run::new(settings());
    run.step(Event::Start);
    let actions = run.step(Event::Spawned {
        generation: 1,
        result: Err(127),
    });
    run.answer(actions, &[]);
    assert_eq!(run.exit(), Some(Outcome::Code(127)));
}

#[test]
fn drain_then_pre_stop_then_stop_signal_within_the_budget() {
    let mut s = settings();
    s.drain_delay = Duration::from_secs(2);
    s.pre_stop = true;
    s.post_stop = true;
    let mut run = Run::started(s, 100);
    run.ready(1);
    let t0 = run.now;
    let actions = run.signal(Signal::TERM, OUTSIDE);
    assert_eq!(upstream(&actions), ["STOPPING=1"]);
    assert_eq!(sent(&actions), [], "serving through the drain");
    let actions = run.fire();
    assert!(actions.contains(&Action::RunHook {
        kind: HookKind::PreStop,
        main_pid: Some(100),
        exit: None
    }));
    run.step(Event::HookStarted {
        kind: HookKind::PreStop,
        pid: Some(900),
    });
    let actions = run.reaped(900, exited(0));
    assert!(sent(&actions).contains(&(leader(1, 100), Signal::TERM)));
    assert!(actions.contains(&Action::CloseListeners));
    let actions = run.reaped(100, exited(0));
    let actions = run.answer(actions, &[]);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::RunHook {
            kind: HookKind::PostStop,
            exit: Some(ChildExit::Exited(0)),
            ..
        }
    )));
    run.step(Event::HookStarted {
        kind: HookKind::PostStop,
        pid: Some(901),
    });
    run.reaped(901, exited(0));
    assert_eq!(run.exit(), Some(Outcome::Child(ChildExit::Exited(0))));
    assert!(run.now <= t0 + Duration::from_secs(12));
}

/// The stop's outcome is the serving generation's, even when it exits after the stop signal.
#[test]
fn outcome_is_the_serving_generations_status() {
    let mut run = Run::started(settings(), 100);
    run.ready(1);
    run.signal(Signal::TERM, OUTSIDE);
    let actions = run.reaped(100, killed(15));
    run.answer(actions, &[]);
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
    run.ready(1);
    let child = Origin::Process {
        pid: 101,
        pgid: Some(100),
        descendant: false,
    };
    let actions = run.signal(Signal::TERM, child);
    assert_eq!(sent(&actions), []);
    assert_eq!(run.core.snapshot().phase, Phase::Serving);
    let actions = run.signal(Signal::HUP, child);
    assert_eq!(spawns(&actions), [(2, false)]);
}

#[test]
fn accepting_probes_back_off_and_warn_once() {
    let mut s = settings();
    s.ready = Ready::Accepting;
    let mut run = Run::started(s, 100);
    let mut gaps = Vec::new();
    let mut warnings = 0;
    let start = run.now;
    while run.now < start + PROBE_WARN_AFTER + Duration::from_secs(1) {
        let before = run.now;
        let actions = run.fire();
        assert!(actions.contains(&Action::Probe {
            generation: 1,
            pgid: 100
        }));
        gaps.push(run.now - before);
        let actions = run.step(Event::Probed {
            generation: 1,
            missing: vec!["tcp://127.0.0.1:8080".into()],
        });
        warnings += logs(&actions)
            .iter()
            .filter(|l| l.contains("not waiting for connections on tcp://127.0.0.1:8080"))
            .count();
    }
    assert_eq!(warnings, 1);
    assert!(gaps.iter().all(|g| *g <= PROBE_MAX));
    assert!(gaps.len() < 150, "backs off: {} looks", gaps.len());
    run.fire();
    let actions = run.step(Event::Probed {
        generation: 1,
        missing: vec![],
    });
    assert_eq!(upstream(&actions), ["READY=1\nMAINPID=1000"]);
    assert_eq!(
        run.armed, None,
        "no look once ready: an idle graceful-run sleeps"
    );
}

#[test]
fn auto_takes_ready_1_before_any_probe_answer() {
    let mut s = settings();
    s.ready = Ready::Auto;
    let mut run = Run::started(s, 100);
    let actions = run.ready(1);
    assert_eq!(upstream(&actions), ["READY=1\nMAINPID=1000"]);
}

fn usr1() -> Signal {
    Signal::from_raw(nix::libc::SIGUSR1).expect("USR1 is a signal")
}
