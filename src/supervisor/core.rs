//! The supervisor's decisions, as a pure state machine.
//!
//! [`Core::step`] takes the time and one [`Event`] and returns the [`Action`]s to carry out.
//! It reads no clock, makes no syscall and spawns nothing: the executor (`supervisor/mod.rs`)
//! owns the processes, the sockets and the timer, and only translates between the world and
//! this module. A test drives every transition here in microseconds (`tests.rs`, `proptest.rs`).
//!
//! # The states
//!
//! The service is in exactly one [`State`]; each variant owns the generations it is about and
//! every deadline that applies to it, so "a generation is incoming while nothing serves" or
//! "a stop timer without a stop" cannot be written down:
//!
//! ```text
//!            start / timer                     READY=1, accepting, or --ready DURATION
//!  Backoff ─────────────────▶ Starting ──────────────────────────────────────▶ Serving ◀─┐
//!     ▲                          │  ▲    the serving one exits during a restart:   │     │ incoming
//!     │ exited, restart policy   │  └─────────────── the incoming one takes over ──┤     │ ready:
//!     └──────────────────────────┤                                                 │     │ handover
//!                                │ exited, no restart / a stop request             │ ────┘
//!                                ▼                                                 │
//!                              Ending ◀────────────────────────────────────────────┘
//!   Ending: [Draining ─▶ PreStop ─▶] Generations ─▶ Leftovers ─▶ [PostStop] ─▶ exit
//! ```
//!
//! - `Starting`: one generation starts and nothing serves (at startup, after a crash restart,
//!   or when the serving one died while its replacement was starting). Restart requests are
//!   queued until it is ready.
//! - `Serving`: one ready generation serves; during a restart one more is incoming, with its
//!   own readiness deadline. Two handovers never overlap: requests meanwhile are coalesced
//!   into one that runs when the current one ends, so the newest code wins.
//! - `Backoff`: the command exited and is restarted at `until`; the sockets stay open, so
//!   clients wait in the backlog instead of being refused. A generation that had served for
//!   `--restart-delay` is restarted at once (no wait); one that failed before serving waits
//!   `--restart-delay`, doubled per failure in a row up to [`BACKOFF_CAP`].
//! - `Ending`: a stop was requested (TERM/INT), or the command ended for good. Its stages run in
//!   order, and every stage has a deadline inside the stop budget, so a stop always reaches
//!   the exit within drain delay + stop timeout + post-stop hook timeout + [`KILL_GRACE`].
//!
//! `Init` waits for [`Event::Start`]; `Done` follows [`Action::Exit`] and takes no more events.
//!
//! Generations told to stop (replaced ones, failed replacements, and everything once the
//! service ends) are `retiring`: each owns its SIGKILL deadline, and leaves the list when its
//! main process has exited and its process group is empty. They live beside the state rather
//! than in it because every state can have some (an old generation still finishing its
//! requests while a crash restart backs off, say), and nothing about them depends on which.
//! Likewise `graceful-run ctl` clients waiting for a restart's end or for the exit.
//!
//! # Who gets signals
//!
//! As systemd's `KillMode=mixed` (and Docker, tini, Server::Starter): forwarded signals and the
//! stop signal go to each generation's main process, which passes them on to its workers as
//! it sees fit (a pre-fork master stops its workers gracefully; graceful-run signalling them
//! directly would cut their requests); at the stop timeout SIGKILL goes to the whole process
//! group; processes left in the group once the main process has exited get the stop signal,
//! then SIGKILL. `--kill-mode group` sends everything to the group instead, for commands that
//! do not pass signals on (a shell pipeline).
//!
//! # Pids that could be reused
//!
//! A main process is signalled by pid only until the core sees it reaped: until then the pid
//! is graceful-run's unreaped child and cannot name anyone else (no pidfd is needed for that).
//! A group is signalled after its leader was reaped only while the last check said it is not
//! empty (a group id is not reused while any member lives), and never after the check said it
//! is. Without a subreaper (`--no-subreaper`, not PID 1) members that die are reaped by
//! another init without a word to graceful-run, so the group is dropped right after its
//! SIGKILL instead of being watched; the window left is between a check and the signal that
//! follows it in the same step, and pids are handed out cyclically, so a reuse there needs
//! the whole pid space to wrap around in microseconds. (pidfd_send_signal's group flag needs
//! the leader alive, where plain killpg is already safe, so it would close nothing more.)
//!
//! # The protocol with the executor
//!
//! An [`Action::Spawn`] is answered by [`Event::Spawned`], an [`Action::RunHook`] by
//! [`Event::HookStarted`], a [`Action::CheckGroup`] by [`Event::GroupChecked`], an
//! [`Action::CheckLeftovers`] by [`Event::LeftoversChecked`] and an [`Action::Probe`] by
//! [`Event::Probed`], each before any other event. Answers that come after the state moved on
//! are ignored.

use std::time::{Duration, Instant};

use crate::cli::{Ready, RestartPolicy};
use crate::exit::{ChildExit, NOT_READY, Outcome};
use crate::log::{Level, Subject};
use crate::reaper::{self, Status};
use crate::signal::{Mapping, Signal, SignalMap};

/// Crash-restart delays double up to this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A generation ready for at most this long (or `--restart-delay` if shorter) counts as
/// having served: it is restarted at once when it exits.
pub const MAX_MIN_SERVED: Duration = Duration::from_secs(1);
/// A generation ready for this long resets the count of crash restarts in a row.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long processes sent SIGKILL may take to be reaped before graceful-run gives up on them
/// (a process in uninterruptible sleep dies only when its I/O ends).
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// A second TERM or INT from the same process within this window is the same request:
/// GNU `timeout` signals its child, then its whole process group, which includes us.
pub const DUPLICATE_WINDOW: Duration = Duration::from_millis(500);
/// `--ready accepting`: looks for a waiting process come every PROBE_FIRST for the first
/// PROBE_FAST_LOOKS (a server that waits soon after it starts is seen within about a
/// millisecond), then twice as far apart each time, up to PROBE_MAX (one that boots for
/// seconds costs about 20 looks a second, some 0.6% of a core).
pub const PROBE_FIRST: Duration = Duration::from_millis(1);
pub const PROBE_FAST_LOOKS: u32 = 10;
pub const PROBE_MAX: Duration = Duration::from_millis(50);
/// `--ready accepting`: a generation not seen waiting on its sockets by then is warned about.
pub const PROBE_WARN_AFTER: Duration = Duration::from_secs(5);

pub type GenId = u64;

/// Where forwarded signals and the stop signal go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The command leads a process group: signals to its main process, SIGKILL to the group.
    Mixed,
    /// The command leads a process group: every signal to the whole group.
    Group,
    /// The command stays in graceful-run's process group: signals to the main process only.
    NoGroup,
}

/// What the core needs to know of the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub restart_signal: Option<Signal>,
    pub signal_map: SignalMap,
    pub stop_signal: Option<Signal>,
    pub stop_timeout: Duration,
    pub drain_delay: Duration,
    pub hook_timeout: Duration,
    pub pre_stop: bool,
    pub post_stop: bool,
    pub ready: Ready,
    pub ready_timeout: Duration,
    pub restart_policy: RestartPolicy,
    pub restart_delay: Duration,
    pub max_restarts: Option<u32>,
    pub delivery: Delivery,
    /// PID 1 or a child subreaper: orphaned descendants are re-parented to graceful-run, so
    /// it reaps them and learns when a process group empties.
    pub reaper: bool,
    /// graceful-run was started in the foreground of a terminal and hands it to the command
    /// (job control: the command stopped by Ctrl-Z stops graceful-run too).
    pub job_control: bool,
    /// Stream listeners exist: `--ready accepting` has something to look for.
    pub stream_listeners: bool,
    /// graceful-run's own pid: the MAINPID its supervisor is told.
    pub main_pid: i32,
    /// The most detailed log level wanted (`-q`, `-v`).
    pub log_level: Level,
}

impl Settings {
    fn stop_mapping(&self, received: Signal) -> Mapping {
        match self.stop_signal {
            Some(signal) => Mapping::To(signal),
            None => self.signal_map.translate(received),
        }
    }

    fn own_group(&self) -> bool {
        self.delivery != Delivery::NoGroup
    }

    fn takes_notify(&self) -> bool {
        matches!(self.ready, Ready::Notify | Ready::Auto)
    }
}

/// Who sent a signal, as far as the executor could tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The kernel: a terminal's Ctrl-C, Ctrl-\, Ctrl-Z, resize or hangup.
    Kernel,
    /// graceful-run itself (SIGPIPE from a closed stderr, a raise).
    Myself,
    /// A process; `pid` 0 is a sender outside graceful-run's pid namespace.
    Process {
        pid: i32,
        /// Its process group, when it could be read.
        pgid: Option<i32>,
        /// A descendant of graceful-run (read from /proc, only for TERM, INT and the restart
        /// signal, which decide things; false when not looked up).
        descendant: bool,
    },
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// graceful-run is set up: start the command.
    Start,
    Signal {
        signal: Signal,
        origin: Origin,
    },
    /// wait(2) collected `pid` with this raw status (exited, killed, or stopped).
    Reaped {
        pid: i32,
        status: i32,
    },
    /// A datagram on generation `gen`'s NOTIFY_SOCKET (already checked for its sender's uid).
    Notify {
        generation: GenId,
        fields: Vec<(String, String)>,
    },
    /// The timer armed by [`Action::ArmTimer`] went off.
    Timer,
    /// The answer to [`Action::Spawn`]: the main process's pid, or the exit code the failure
    /// stands for (125, 126, 127).
    Spawned {
        generation: GenId,
        result: Result<i32, i32>,
    },
    /// The answer to [`Action::RunHook`]: the hook's pid, or None when it could not start.
    HookStarted {
        kind: HookKind,
        pid: Option<i32>,
    },
    /// The answer to [`Action::CheckGroup`].
    GroupChecked {
        generation: GenId,
        alive: bool,
    },
    /// The answer to [`Action::CheckLeftovers`]: children of graceful-run outside every
    /// generation (orphans re-parented to it) exist and can be signalled.
    LeftoversChecked {
        found: bool,
    },
    /// The answer to [`Action::Probe`]: the stream listeners no process of the generation
    /// waits on yet (empty: it waits on all of them).
    Probed {
        generation: GenId,
        missing: Vec<String>,
    },
    /// A request from `graceful-run ctl`, by the process `pid` (client ids are the executor's).
    Control {
        client: u64,
        pid: Option<i32>,
        command: Command,
    },
}

/// A request from `graceful-run ctl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Restart, as the restart signal does; with `wait`, answer how it ended.
    Restart { wait: bool },
    /// Stop, as TERM does; with `wait`, answer when graceful-run exits.
    Stop { wait: bool },
}

/// The core's answer to a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Begun.
    Accepted,
    /// The restart's new generation took over; or graceful-run is about to exit.
    Done,
    /// The restart failed, and why.
    Failed(String),
}

/// A `ctl` client waiting for the end of what it asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    /// A generation newer than `after` must take over (or fail to).
    Restart {
        client: u64,
        after: GenId,
    },
    Exit {
        client: u64,
    },
}

/// Where a signal goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A generation's main process (graceful-run's child, not reaped yet: its pid is ours).
    Leader { generation: GenId, pid: i32 },
    /// A generation's whole process group.
    Group { generation: GenId, pgid: i32 },
    /// A hook's process group.
    Hook { pid: i32 },
    /// Every child of graceful-run outside the generations (as PID 1: every process).
    Leftovers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    PreStop,
    PostStop,
}

impl HookKind {
    pub fn flag(self) -> &'static str {
        match self {
            HookKind::PreStop => "--pre-stop",
            HookKind::PostStop => "--post-stop",
        }
    }
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Log {
        level: Level,
        subject: Subject,
        text: String,
    },
    /// Start generation `gen` on the shared sockets. `reset_nonblocking`: no generation is
    /// alive, so O_NONBLOCK may be cleared on the shared listeners (never while another
    /// generation accepts on them: an event-loop server would block in accept).
    Spawn {
        generation: GenId,
        reset_nonblocking: bool,
    },
    Signal {
        target: Target,
        signal: Signal,
    },
    /// Hand the terminal's foreground to this process group (job control on SIGCONT).
    GiveTerminal {
        pgid: i32,
    },
    /// Stop graceful-run itself with SIGSTOP (the command in the terminal was stopped).
    StopSelf,
    /// Is any process left in this generation's process group?
    CheckGroup {
        generation: GenId,
        pgid: i32,
    },
    /// Are children of graceful-run left outside the generations?
    CheckLeftovers,
    /// Which stream listeners does no process of this generation wait on yet?
    Probe {
        generation: GenId,
        pgid: i32,
    },
    RunHook {
        kind: HookKind,
        /// `--pre-stop`: the serving generation's main pid. `--post-stop`: how the command ended.
        main_pid: Option<i32>,
        exit: Option<ChildExit>,
    },
    /// The generation is gone: its NOTIFY_SOCKET and anything else held for it can go.
    Release {
        generation: GenId,
    },
    /// Close graceful-run's copies of the listening sockets: late connections are refused
    /// instead of queueing where nobody accepts.
    CloseListeners,
    /// A message for graceful-run's own supervisor (sd_notify), e.g. `READY=1`.
    Upstream(String),
    /// Wake up at this time (None: no deadline; an idle graceful-run sleeps).
    ArmTimer(Option<Instant>),
    /// Answer `graceful-run ctl` client `client`; `last`: nothing more will follow.
    Reply {
        client: u64,
        answer: Answer,
        last: bool,
    },
    Exit(Outcome),
}

/// Where the service is, for `ctl status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Serving,
    Restarting,
    Backoff,
    Stopping,
    Done,
}

/// What a generation is doing, for `ctl status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Starting, and nothing else serves.
    Starting,
    Serving,
    /// A replacement, starting while the serving one still serves.
    Incoming,
    /// Serving through the drain delay or the pre-stop hook of a stop.
    Draining,
    /// Told to stop.
    Stopping,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerationView {
    pub id: GenId,
    pub pid: i32,
    pub role: Role,
    pub started: Instant,
    /// Since when it has this role (for Serving: since it became ready).
    pub since: Instant,
    pub exited: Option<ChildExit>,
    /// How it became ready, while it serves.
    pub ready_by: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub phase: Phase,
    pub generations: Vec<GenerationView>,
    pub restarts: u64,
    pub last_exit: Option<ChildExit>,
    pub queued: bool,
}

/// A generation: one start of the command, with its main process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gen {
    id: GenId,
    pid: i32,
    started: Instant,
    /// Its main process was reaped.
    exited: Option<ChildExit>,
}

impl Gen {
    fn subject(&self) -> Subject {
        Subject::generation(self.id, self.pid)
    }
}

/// How a starting generation proves it is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readiness {
    /// READY=1 only (or `--ready accepting` with no stream listener: ready at once).
    Notify,
    /// Ready if still running at `at`.
    After { at: Instant },
    /// Look at its processes at `next`, then again after twice `interval`, up to PROBE_MAX;
    /// warn once at `warn_at` if it still does not wait on its sockets.
    Probing {
        next: Instant,
        interval: Duration,
        looks: u32,
        warned: bool,
    },
}

/// A generation that is not ready yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Starting {
    generation: Gen,
    /// Not ready by then: stopped, and counted as a failure.
    deadline: Instant,
    readiness: Readiness,
}

impl Starting {
    fn next_deadline(&self) -> Instant {
        match self.readiness {
            Readiness::Notify => self.deadline,
            Readiness::After { at } => at.min(self.deadline),
            // The warning comes with the answer to a look: no deadline of its own.
            Readiness::Probing { next, .. } => next.min(self.deadline),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for [`Event::Start`].
    Init,
    Starting {
        starting: Starting,
        /// A restart was requested meanwhile: run it once this one is ready.
        queued: bool,
    },
    Serving {
        generation: Gen,
        /// Since when it is ready.
        ready_since: Instant,
        /// How it became ready ("READY=1", "accepting", ...), for `ctl status`.
        ready_by: &'static str,
        incoming: Option<Starting>,
        queued: bool,
    },
    Backoff {
        until: Instant,
    },
    Ending(Ending),
    Done,
}

/// The end of the service: a stop request, or the command ended for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ending {
    /// Everything must be gone by then (drain delay + stop timeout from the request).
    budget_end: Instant,
    /// What the command receives as the stop signal.
    mapping: Mapping,
    /// The signal the command already received from the terminal (no process group of its
    /// own); not sent again.
    delivered: Option<Signal>,
    /// The request that started it, to tell a duplicate from a second request.
    request: Option<Request>,
    /// A second TERM or INT: SIGKILL everything, wait for nothing.
    forced: bool,
    stage: Stage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Request {
    signal: Signal,
    sender: Option<i32>,
    at: Instant,
    /// From `graceful-run ctl stop`, not a signal.
    ctl: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The serving generation keeps serving while load balancers stop sending traffic.
    Draining {
        serving: Gen,
        until: Instant,
    },
    /// `--pre-stop` runs; then the stop signal.
    PreStop {
        serving: Option<Gen>,
        hook: Hook,
    },
    /// Every generation is retiring; waiting for them to be gone.
    Generations,
    /// Waiting for the answer to [`Action::CheckLeftovers`].
    CheckingLeftovers,
    /// Orphans left behind got the stop signal; SIGKILL at `kill_at`.
    LeftoversStopping {
        kill_at: Instant,
    },
    /// Orphans left behind got SIGKILL; given up on at `give_up_at`.
    LeftoversKilled {
        give_up_at: Instant,
    },
    PostStop {
        hook: Hook,
    },
}

/// A hook process, or the wait for it to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    Launching,
    Running { pid: i32, kill_at: Instant },
    Killed { pid: i32, give_up_at: Instant },
}

/// A generation told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Retiring {
    generation: Gen,
    stage: Retire,
    /// Since when it is told to stop.
    since: Instant,
    /// It held the serving role when the service ended: its exit is graceful-run's outcome.
    serving: bool,
    /// Its whole process group got the stop signal (not only its main process).
    group_told: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retire {
    /// Sent the stop signal (or its leader already exited and its group got it); SIGKILL to
    /// the group at `kill_at`.
    Stopping { kill_at: Instant },
    /// Sent SIGKILL; given up on at `give_up_at` if its processes are still not reaped.
    Killed { give_up_at: Instant },
}

/// How the serving generation ended: what graceful-run exits with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Exited(ChildExit),
    SpawnFailed(i32),
    NotReady,
}

/// Why a generation failed before it took over: for the log, `ctl restart --wait` and
/// graceful-run's own supervisor (sd_notify STATUS= and ERRNO=).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    CannotStart,
    Exited(ChildExit),
    NotReady,
}

impl Failure {
    fn why(self) -> String {
        match self {
            Failure::CannotStart => "the new generation could not be started".into(),
            Failure::Exited(exit) => format!("the new generation {exit} before it was ready"),
            Failure::NotReady => "the new generation was not ready in time".into(),
        }
    }

    /// The errno-style code systemd shows as `Error:` in `systemctl status`.
    fn errno(self) -> i32 {
        match self {
            Failure::CannotStart => nix::libc::ENOEXEC,
            Failure::Exited(_) => nix::libc::ECHILD,
            Failure::NotReady => nix::libc::ETIMEDOUT,
        }
    }

    fn of(end: End) -> Failure {
        match end {
            End::Exited(exit) => Failure::Exited(exit),
            End::SpawnFailed(_) => Failure::CannotStart,
            End::NotReady => Failure::NotReady,
        }
    }
}

/// What a pending spawn is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// The generation that serves next (startup, crash restart).
    Serve,
    /// A replacement for the serving generation.
    Replace,
}

/// Restart bookkeeping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Restarts {
    /// Crash restarts since a generation was last ready for STABLE_AFTER (`--max-restarts`).
    in_a_row: u32,
    /// Generations in a row that failed before serving (the backoff's exponent).
    failures: u32,
    /// Every restart so far, crash or requested.
    total: u64,
}

/// The supervisor's state and decisions. See the module docs.
pub struct Core {
    settings: Settings,
    state: State,
    retiring: Vec<Retiring>,
    /// Between an [`Action::Spawn`] and its [`Event::Spawned`].
    launching: Option<(GenId, Purpose)>,
    next_id: GenId,
    restarts: Restarts,
    /// How the last generation in the serving role ended.
    last_end: Option<End>,
    /// A generation has been ready at least once (the service came up).
    came_up: bool,
    /// graceful-run's supervisor was told RELOADING=1 and waits for READY=1.
    reloading: bool,
    armed: Option<Instant>,
    /// `ctl` clients waiting for a restart's end or for the exit.
    waiters: Vec<Waiter>,
    actions: Vec<Action>,
}

/// Logs through an action; lines above `Settings::log_level` are not even formatted (the
/// forwarding path logs at debug level for every signal).
macro_rules! log {
    ($core:expr, $level:ident, $subject:expr, $($arg:tt)*) => {
        if Level::$level <= $core.settings.log_level {
            $core.log(Level::$level, $subject, format!($($arg)*))
        }
    };
}

impl Core {
    pub fn new(settings: Settings) -> Core {
        Core {
            settings,
            state: State::Init,
            retiring: Vec::new(),
            launching: None,
            next_id: 1,
            restarts: Restarts::default(),
            last_end: None,
            came_up: false,
            reloading: false,
            armed: None,
            waiters: Vec::new(),
            actions: Vec::new(),
        }
    }

    /// Takes one event; returns what to do, in order.
    pub fn step(&mut self, now: Instant, event: Event) -> Vec<Action> {
        if self.state != State::Done {
            self.handle(now, event);
            // Deadlines that are already due are handled now, so that the timer is only ever
            // armed in the future.
            // Bounded: each round moves a deadline on or ends the state that owns it; the bound
            // only guards against a bug turning into a hang.
            for _ in 0..64 {
                match self.deadline() {
                    Some(due) if due <= now && self.launching.is_none() => self.on_timer(now),
                    _ => break,
                }
            }
            let deadline = if self.state == State::Done {
                None
            } else {
                self.deadline()
            };
            if deadline != self.armed {
                self.armed = deadline;
                self.actions.push(Action::ArmTimer(deadline));
            }
        }
        std::mem::take(&mut self.actions)
    }

    /// What runs now, for `graceful-run ctl status` and for tests.
    pub fn snapshot(&self) -> Snapshot {
        let mut generations = Vec::new();
        let mut add = |g: Gen, role: Role, since: Instant, ready_by: Option<&'static str>| {
            generations.push(GenerationView {
                id: g.id,
                pid: g.pid,
                role,
                started: g.started,
                since,
                exited: g.exited,
                ready_by,
            })
        };
        for (g, role, since, ready_by) in self.in_role() {
            add(g, role, since, ready_by);
        }
        for r in &self.retiring {
            add(r.generation, Role::Stopping, r.since, None);
        }
        let phase = match self.state {
            State::Init => Phase::Starting,
            State::Starting { .. } => Phase::Starting,
            State::Serving { incoming: None, .. } => Phase::Serving,
            State::Serving { .. } => Phase::Restarting,
            State::Backoff { .. } => Phase::Backoff,
            State::Ending(_) => Phase::Stopping,
            State::Done => Phase::Done,
        };
        Snapshot {
            phase,
            generations,
            restarts: self.restarts.total,
            last_exit: match self.last_end {
                Some(End::Exited(exit)) => Some(exit),
                _ => None,
            },
            queued: matches!(
                self.state,
                State::Starting { queued: true, .. } | State::Serving { queued: true, .. }
            ),
        }
    }

    /// Whether graceful-run has decided to exit.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::Start => {
                if self.state == State::Init {
                    self.spawn(Purpose::Serve);
                }
            }
            Event::Signal { signal, origin } => self.on_signal(now, signal, origin),
            Event::Reaped { pid, status } => self.on_reaped(now, pid, status),
            Event::Notify { generation, fields } => self.on_notify(now, generation, &fields),
            Event::Timer => self.on_timer(now),
            Event::Spawned { generation, result } => self.on_spawned(now, generation, result),
            Event::HookStarted { kind, pid } => self.on_hook_started(now, kind, pid),
            Event::GroupChecked { generation, alive } => {
                self.on_group_checked(now, generation, alive)
            }
            Event::LeftoversChecked { found } => self.on_leftovers_checked(now, found),
            Event::Probed {
                generation,
                missing,
            } => self.on_probed(now, generation, missing),
            Event::Control {
                client,
                pid,
                command,
            } => self.on_control(now, client, pid, command),
        }
    }

    // ----- output helpers ------------------------------------------------------------------

    fn log(&mut self, level: Level, subject: Subject, text: String) {
        self.actions.push(Action::Log {
            level,
            subject,
            text,
        });
    }

    fn upstream(&mut self, text: impl Into<String>) {
        self.actions.push(Action::Upstream(text.into()));
    }

    fn send(&mut self, target: Target, signal: Signal) {
        self.actions.push(Action::Signal { target, signal });
    }

    /// Sends `signal` the way forwarded and stop signals go (see "Who gets signals").
    fn signal_gen(&mut self, generation: Gen, signal: Signal) {
        match (self.settings.delivery, generation.exited) {
            (Delivery::Group, _) | (Delivery::Mixed, Some(_)) => self.send(
                Target::Group {
                    generation: generation.id,
                    pgid: generation.pid,
                },
                signal,
            ),
            (_, None) => self.send(
                Target::Leader {
                    generation: generation.id,
                    pid: generation.pid,
                },
                signal,
            ),
            (Delivery::NoGroup, Some(_)) => {}
        }
    }

    /// SIGKILL to everything of a generation.
    fn kill_gen(&mut self, generation: Gen) {
        if self.settings.own_group() {
            self.send(
                Target::Group {
                    generation: generation.id,
                    pgid: generation.pid,
                },
                Signal::KILL,
            );
        } else if generation.exited.is_none() {
            self.send(
                Target::Leader {
                    generation: generation.id,
                    pid: generation.pid,
                },
                Signal::KILL,
            );
        }
    }

    // ----- generations ---------------------------------------------------------------------

    /// Every generation the core knows, with a process that may be alive.
    fn gens(&self) -> impl Iterator<Item = Gen> + '_ {
        self.in_role()
            .into_iter()
            .map(|(g, ..)| g)
            .chain(self.retiring.iter().map(|r| r.generation))
    }

    /// The generations the state holds (not retiring), each with its role, since when, and how
    /// it became ready.
    fn in_role(&self) -> Vec<(Gen, Role, Instant, Option<&'static str>)> {
        match self.state {
            State::Starting { starting, .. } => {
                let g = starting.generation;
                vec![(g, Role::Starting, g.started, None)]
            }
            State::Serving {
                generation,
                ready_since,
                ready_by,
                incoming,
                ..
            } => {
                let mut held = vec![(generation, Role::Serving, ready_since, Some(ready_by))];
                if let Some(s) = incoming {
                    held.push((s.generation, Role::Incoming, s.generation.started, None));
                }
                held
            }
            State::Ending(Ending {
                stage: Stage::Draining { serving, .. },
                ..
            })
            | State::Ending(Ending {
                stage:
                    Stage::PreStop {
                        serving: Some(serving),
                        ..
                    },
                ..
            }) => vec![(serving, Role::Draining, serving.started, None)],
            _ => Vec::new(),
        }
    }

    /// Whether a generation's main process may still accept on the shared sockets.
    fn any_alive(&self) -> bool {
        self.gens().any(|g| g.exited.is_none()) || self.launching.is_some()
    }

    fn spawn(&mut self, purpose: Purpose) {
        let generation = self.next_id;
        self.next_id += 1;
        let reset_nonblocking = !self.any_alive();
        self.launching = Some((generation, purpose));
        self.actions.push(Action::Spawn {
            generation,
            reset_nonblocking,
        });
    }

    fn new_starting(&self, now: Instant, generation: Gen) -> Starting {
        let readiness = match self.settings.ready {
            Ready::After(delay) => Readiness::After {
                at: now.checked_add(delay).unwrap_or(far_future(now)),
            },
            Ready::Notify => Readiness::Notify,
            Ready::Accepting | Ready::Auto if self.settings.stream_listeners => {
                Readiness::Probing {
                    next: now + PROBE_FIRST,
                    interval: PROBE_FIRST,
                    looks: 0,
                    warned: false,
                }
            }
            // Nothing to wait on: ready at once.
            Ready::Accepting | Ready::Auto => Readiness::After { at: now },
        };
        Starting {
            generation,
            deadline: now
                .checked_add(self.settings.ready_timeout)
                .unwrap_or(far_future(now)),
            readiness,
        }
    }

    fn on_spawned(&mut self, now: Instant, id: GenId, result: Result<i32, i32>) {
        let Some((launching, purpose)) = self.launching else {
            return;
        };
        if launching != id {
            return;
        }
        self.launching = None;
        match (result, purpose) {
            (Ok(pid), purpose) => {
                let generation = Gen {
                    id,
                    pid,
                    started: now,
                    exited: None,
                };
                let starting = self.new_starting(now, generation);
                match (purpose, self.state) {
                    (Purpose::Replace, State::Serving { .. }) => {
                        if let State::Serving { incoming, .. } = &mut self.state {
                            *incoming = Some(starting);
                        }
                    }
                    (Purpose::Serve, State::Init | State::Backoff { .. }) => {
                        self.state = State::Starting {
                            starting,
                            queued: false,
                        };
                    }
                    _ => {
                        // The state moved on (cannot happen while the protocol is kept): stop it.
                        self.retire(now, generation, self.retire_mapping(), false);
                    }
                }
            }
            (Err(_), Purpose::Replace) => {
                self.handover_failed(id, Failure::CannotStart, Subject::NONE, false);
            }
            (Err(code), Purpose::Serve) => {
                self.restart_failed(id, Failure::CannotStart);
                self.service_ended(now, End::SpawnFailed(code), None);
            }
        }
    }

    /// Moves a generation to `retiring` and sends it the stop signal, SIGKILL at a stop
    /// timeout from now (or at the stop budget's end during a stop).
    fn retire(&mut self, now: Instant, generation: Gen, mapping: Mapping, serving: bool) {
        let kill_at = self.kill_deadline(now);
        let ending_forced = matches!(self.state, State::Ending(e) if e.forced);
        if ending_forced || kill_at <= now {
            let why = if ending_forced {
                "forced stop"
            } else {
                "the stop budget is spent"
            };
            log!(
                self,
                Warn,
                generation.subject(),
                "{why}: sending SIGKILL to its process group"
            );
            self.kill_gen(generation);
            self.retiring.push(Retiring {
                since: now,
                generation,
                stage: Retire::Killed {
                    give_up_at: now + KILL_GRACE,
                },
                serving,
                group_told: true,
            });
            return;
        }
        let wait = format_duration(kill_at.saturating_duration_since(now));
        match mapping {
            Mapping::To(signal) => {
                self.signal_gen(generation, signal);
                if signal != Signal::KILL && signal != Signal::CONT {
                    // A stopped process acts on the stop signal only once continued.
                    self.signal_gen(generation, Signal::CONT);
                }
                log!(
                    self,
                    Info,
                    generation.subject(),
                    "sent {signal}; SIGKILL in {wait} if still running"
                );
            }
            Mapping::Drop => {
                log!(
                    self,
                    Info,
                    generation.subject(),
                    "the stop signal is dropped by --map-signal; SIGKILL in {wait}"
                );
            }
        }
        self.retiring.push(Retiring {
            since: now,
            generation,
            stage: Retire::Stopping { kill_at },
            serving,
            group_told: self.settings.delivery == Delivery::Group,
        });
    }

    /// When processes told to stop now must be gone.
    fn kill_deadline(&self, now: Instant) -> Instant {
        match self.state {
            State::Ending(ending) if ending.forced => now,
            State::Ending(ending) => ending.budget_end.max(now),
            _ => now
                .checked_add(self.settings.stop_timeout)
                .unwrap_or(far_future(now)),
        }
    }

    /// The signal for retiring a generation that no TERM/INT asked to stop.
    fn retire_mapping(&self) -> Mapping {
        match self.state {
            State::Ending(ending) => ending.mapping,
            _ => self.settings.stop_mapping(Signal::TERM),
        }
    }

    // ----- signals -------------------------------------------------------------------------

    fn is_ours(&self, pid: i32, pgid: Option<i32>, descendant: bool) -> bool {
        if pid <= 0 {
            return false;
        }
        if self.gens().any(|g| g.pid == pid) || self.hook_pid() == Some(pid) {
            return true;
        }
        if self.settings.own_group()
            && let Some(pgid) = pgid
            && self.gens().any(|g| g.pid == pgid)
        {
            return true;
        }
        descendant
    }

    fn on_signal(&mut self, now: Instant, signal: Signal, origin: Origin) {
        let sender = match origin {
            Origin::Myself => return,
            Origin::Kernel => None,
            Origin::Process {
                pid,
                pgid,
                descendant,
            } => {
                if self.is_ours(pid, pgid, descendant) {
                    if Some(signal) == self.settings.restart_signal {
                        log!(
                            self,
                            Info,
                            Subject::pid(pid),
                            "restart requested by the command itself ({signal})"
                        );
                        self.request_restart();
                    } else {
                        log!(
                            self,
                            Info,
                            Subject::pid(pid),
                            "ignoring {signal} sent to graceful-run by a process of the command"
                        );
                    }
                    return;
                }
                Some(pid)
            }
        };
        // The terminal sends Ctrl-C, Ctrl-\, Ctrl-Z and resizes to its whole foreground
        // group; without a group of its own the command has already received them.
        let delivered = origin == Origin::Kernel && !self.settings.own_group();
        match signal {
            // A hangup from the kernel (the terminal closed) is not a restart request.
            s if Some(s) == self.settings.restart_signal
                && !(s == Signal::HUP && origin == Origin::Kernel) =>
            {
                log!(self, Info, Subject::NONE, "{signal} received: restarting");
                self.request_restart();
            }
            Signal::TERM | Signal::INT => {
                let request = Request {
                    signal,
                    sender,
                    at: now,
                    ctl: false,
                };
                self.request_stop(now, request, delivered.then_some(signal));
            }
            Signal::CONT => {
                // Terminal first, as shells do on `fg`: a command continued before it owns the
                // terminal reads it from the background and is stopped again (SIGTTIN).
                if self.settings.job_control
                    && self.settings.own_group()
                    && let Some(generation) = self.serving_gen()
                {
                    self.actions.push(Action::GiveTerminal {
                        pgid: generation.pid,
                    });
                }
                self.forward(signal, delivered);
            }
            _ => self.forward(signal, delivered),
        }
    }

    fn forward(&mut self, signal: Signal, delivered: bool) {
        if delivered {
            log!(
                self,
                Debug,
                Subject::NONE,
                "{signal} from the terminal already reached the command"
            );
            return;
        }
        match self.settings.signal_map.translate(signal) {
            Mapping::Drop => log!(
                self,
                Debug,
                Subject::NONE,
                "dropped {signal} (--map-signal)"
            ),
            Mapping::To(to) => {
                let gens: Vec<Gen> = self.gens().collect();
                let mut any = false;
                for generation in gens {
                    if generation.exited.is_some() && self.settings.delivery != Delivery::Group {
                        continue;
                    }
                    log!(
                        self,
                        Debug,
                        generation.subject(),
                        "forwarding {signal} as {to}"
                    );
                    self.signal_gen(generation, to);
                    any = true;
                }
                if !any {
                    log!(
                        self,
                        Debug,
                        Subject::NONE,
                        "no command is running to receive {signal}"
                    );
                }
            }
        }
    }

    fn serving_gen(&self) -> Option<Gen> {
        match self.state {
            State::Starting { starting, .. } => Some(starting.generation),
            State::Serving { generation, .. } => Some(generation),
            State::Ending(Ending {
                stage: Stage::Draining { serving, .. },
                ..
            }) => Some(serving),
            _ => None,
        }
    }

    // ----- restarts ------------------------------------------------------------------------

    fn on_control(&mut self, now: Instant, client: u64, pid: Option<i32>, command: Command) {
        let who = match pid {
            Some(pid) => format!("graceful-run ctl (pid {pid})"),
            None => "graceful-run ctl".to_string(),
        };
        match command {
            Command::Restart { wait } => {
                if matches!(self.state, State::Ending(_) | State::Done) {
                    let answer = Answer::Failed("graceful-run is stopping".into());
                    self.reply(client, answer, true);
                    return;
                }
                log!(self, Info, Subject::NONE, "restart requested by {who}");
                self.reply(client, Answer::Accepted, !wait);
                if wait {
                    // Whatever generation starts from now on carries this request (a queued
                    // restart included): its handover is the answer.
                    self.waiters.push(Waiter::Restart {
                        client,
                        after: self.next_id - 1,
                    });
                }
                self.request_restart();
            }
            Command::Stop { wait } => {
                self.reply(client, Answer::Accepted, !wait);
                if wait {
                    self.waiters.push(Waiter::Exit { client });
                }
                log!(self, Info, Subject::NONE, "stop requested by {who}");
                let request = Request {
                    signal: Signal::TERM,
                    sender: None,
                    at: now,
                    ctl: true,
                };
                self.request_stop(now, request, None);
            }
        }
    }

    fn reply(&mut self, client: u64, answer: Answer, last: bool) {
        self.actions.push(Action::Reply {
            client,
            answer,
            last,
        });
    }

    /// Generation `id` took over (`Answer::Done`) or failed before it did: the restarts it
    /// carries end with that answer.
    fn answer_restarts(&mut self, id: GenId, answer: Answer) {
        let carried = |w: &Waiter| matches!(*w, Waiter::Restart { after, .. } if id > after);
        let clients: Vec<u64> = self
            .waiters
            .iter()
            .filter(|w| carried(w))
            .map(|w| match *w {
                Waiter::Restart { client, .. } | Waiter::Exit { client } => client,
            })
            .collect();
        self.waiters.retain(|w| !carried(w));
        for client in clients {
            self.reply(client, answer.clone(), true);
        }
    }

    fn restart_done(&mut self, id: GenId) {
        self.answer_restarts(id, Answer::Done);
    }

    fn restart_failed(&mut self, id: GenId, failure: Failure) {
        self.answer_restarts(id, Answer::Failed(failure.why()));
    }

    fn request_restart(&mut self) {
        match &mut self.state {
            State::Init | State::Done => {}
            State::Backoff { .. } => {
                log!(
                    self,
                    Info,
                    Subject::NONE,
                    "restart requested while the command is down: starting it now"
                );
                self.begin_reload();
                self.spawn(Purpose::Serve);
            }
            State::Starting { queued, .. } => {
                if !*queued {
                    *queued = true;
                    log!(
                        self,
                        Info,
                        Subject::NONE,
                        "restart queued until the current generation is ready"
                    );
                }
            }
            State::Serving {
                incoming: Some(_),
                queued,
                ..
            } => {
                if !*queued {
                    *queued = true;
                    log!(
                        self,
                        Info,
                        Subject::NONE,
                        "restart queued until the current restart ends"
                    );
                }
            }
            State::Serving { incoming: None, .. } => self.start_replacement(),
            State::Ending(_) => {
                log!(
                    self,
                    Info,
                    Subject::NONE,
                    "ignoring the restart request: graceful-run is stopping"
                )
            }
        }
    }

    fn begin_reload(&mut self) {
        if !self.reloading {
            self.reloading = true;
            self.actions.push(Action::Upstream(String::from(RELOADING)));
        }
    }

    /// A reload ended: tell graceful-run's supervisor, if it was told one began.
    /// A restart ended. systemd's Type=notify-reload waits for READY=1 after RELOADING=1 and
    /// has no message that fails a reload (READY=1 ends it, whatever comes with it); so a
    /// failure is told in STATUS= and ERRNO=, which `systemctl status` shows, and ERRNO=0 on the
    /// next success clears it. READY=1 is sent only while a generation serves: a failed reload
    /// with nothing serving (from a crash backoff) stays open until one is up again, or until
    /// systemd's own timeout fails it.
    fn end_reload(&mut self, failure: Option<Failure>) {
        let serving = matches!(self.state, State::Serving { .. });
        match failure {
            None if self.reloading => {
                self.reloading = false;
                self.upstream("READY=1\nERRNO=0");
                self.upstream(format!("STATUS={}", self.status_line()));
            }
            None => {}
            Some(failure) => {
                let status = format!(
                    "STATUS=restart failed: {}\nERRNO={}",
                    failure.why(),
                    failure.errno()
                );
                if self.reloading && serving {
                    self.reloading = false;
                    self.upstream(format!("READY=1\n{status}"));
                } else {
                    self.upstream(status);
                }
            }
        }
    }

    fn status_line(&self) -> String {
        match self.state {
            State::Serving { generation, .. } => {
                format!("gen {} serving (pid {})", generation.id, generation.pid)
            }
            _ => String::from("starting"),
        }
    }

    fn start_replacement(&mut self) {
        self.begin_reload();
        self.restarts.total += 1;
        self.spawn(Purpose::Replace);
    }

    /// A replacement failed; `subject` is it, `logged` when its failure line already said
    /// who keeps serving.
    fn handover_failed(&mut self, failed: GenId, failure: Failure, subject: Subject, logged: bool) {
        self.restart_failed(failed, failure);
        if let State::Serving { generation, .. } = self.state
            && !logged
        {
            log!(
                self,
                Error,
                subject,
                "restart failed; gen {} keeps serving",
                generation.id
            );
        }
        self.end_reload(Some(failure));
        self.run_queued();
    }

    fn run_queued(&mut self) {
        if let State::Serving {
            incoming: None,
            queued: queued @ true,
            ..
        } = &mut self.state
        {
            *queued = false;
            log!(self, Info, Subject::NONE, "running the queued restart");
            self.start_replacement();
        }
    }

    fn on_ready(&mut self, now: Instant, id: GenId, how: &'static str) {
        // The one starting (nothing else serves), or the incoming one (taking over from `old`).
        let (generation, queued, old) = match self.state {
            State::Starting { starting, queued } if starting.generation.id == id => {
                (starting.generation, queued, None)
            }
            State::Serving {
                generation: old,
                incoming: Some(incoming),
                queued,
                ..
            } if incoming.generation.id == id => (incoming.generation, queued, Some(old)),
            _ => return,
        };
        log!(
            self,
            Info,
            generation.subject(),
            "ready after {} ({how})",
            format_duration(now.saturating_duration_since(generation.started))
        );
        if let Some(old) = old {
            log!(
                self,
                Info,
                generation.subject(),
                "takes over from gen {}",
                old.id
            );
        }
        self.state = State::Serving {
            generation,
            ready_since: now,
            ready_by: how,
            incoming: None,
            queued,
        };
        match old {
            Some(old) => {
                let mapping = self.retire_mapping();
                self.retire(now, old, mapping, false);
            }
            None if !self.came_up => {
                self.came_up = true;
                self.upstream(format!("READY=1\nMAINPID={}", self.settings.main_pid));
                self.upstream(format!("STATUS={}", self.status_line()));
            }
            None => {}
        }
        self.end_reload(None);
        self.restart_done(id);
        self.run_queued();
    }

    fn on_notify(&mut self, now: Instant, id: GenId, fields: &[(String, String)]) {
        let Some(generation) = self.gens().find(|g| g.id == id) else {
            return;
        };
        let get = |key: &str| {
            fields
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        if let Some(status) = get("STATUS") {
            log!(self, Info, generation.subject(), "status: {status}");
            let current = matches!(self.state, State::Serving { generation: g, .. } | State::Starting { starting: Starting { generation: g, .. }, .. } if g.id == id)
                || matches!(self.state, State::Serving { incoming: Some(s), .. } if s.generation.id == id);
            if current {
                self.upstream(format!("STATUS={status}"));
            }
        }
        if get("READY").as_deref() == Some("1") {
            if self.settings.takes_notify() {
                self.on_ready(now, id, "READY=1");
            } else {
                log!(
                    self,
                    Debug,
                    generation.subject(),
                    "READY=1 ignored: --ready is not notify or auto"
                );
            }
        }
    }

    fn on_probed(&mut self, now: Instant, id: GenId, missing: Vec<String>) {
        let Some(starting) = self.starting_mut(id) else {
            return;
        };
        let Readiness::Probing {
            next,
            interval,
            looks,
            warned,
        } = &mut starting.readiness
        else {
            return;
        };
        if missing.is_empty() {
            self.on_ready(now, id, "accepting");
            return;
        }
        *looks += 1;
        if *looks >= PROBE_FAST_LOOKS {
            *interval = (*interval * 2).min(PROBE_MAX);
        }
        *next = now + *interval;
        let warn = !*warned && now >= starting.generation.started + PROBE_WARN_AFTER;
        if warn {
            *warned = true;
        }
        let subject = starting.generation.subject();
        if warn {
            let names = missing.join(", ");
            log!(
                self,
                Warn,
                subject,
                "not waiting for connections on {names} {} after it started: does the command take its socket from LISTEN_FDS instead of binding the port itself? (see --ready)",
                format_duration(PROBE_WARN_AFTER)
            );
        }
    }

    fn starting_mut(&mut self, id: GenId) -> Option<&mut Starting> {
        match &mut self.state {
            State::Starting { starting, .. } if starting.generation.id == id => Some(starting),
            State::Serving {
                incoming: Some(starting),
                ..
            } if starting.generation.id == id => Some(starting),
            _ => None,
        }
    }

    fn not_ready(&mut self, now: Instant, starting: Starting) {
        let generation = starting.generation;
        let waited = format_duration(self.settings.ready_timeout);
        let how = match self.settings.ready {
            Ready::Notify => "it must send READY=1 to $NOTIFY_SOCKET",
            Ready::Accepting => "it must wait for connections on the sockets passed as LISTEN_FDS",
            Ready::Auto => {
                "it must send READY=1 to $NOTIFY_SOCKET or wait for connections on the sockets passed as LISTEN_FDS"
            }
            Ready::After(_) => "it must keep running for the --ready duration",
        };
        log!(
            self,
            Error,
            generation.subject(),
            "not ready after {waited}; stopping it ({how}; see --ready)"
        );
        match self.state {
            State::Serving {
                incoming: Some(s), ..
            } if s.generation.id == generation.id => {
                if let State::Serving { incoming, .. } = &mut self.state {
                    *incoming = None;
                }
                let mapping = self.retire_mapping();
                self.retire(now, generation, mapping, false);
                self.handover_failed(
                    generation.id,
                    Failure::NotReady,
                    generation.subject(),
                    false,
                );
            }
            State::Starting { starting: s, .. } if s.generation.id == generation.id => {
                // Out of the serving role first, so that what follows does not stop it twice.
                self.state = State::Backoff { until: now };
                let mapping = self.retire_mapping();
                self.retire(now, generation, mapping, false);
                self.restart_failed(generation.id, Failure::NotReady);
                self.service_ended(now, End::NotReady, None);
            }
            _ => {}
        }
    }

    // ----- exits ---------------------------------------------------------------------------

    fn on_reaped(&mut self, now: Instant, pid: i32, status: i32) {
        match reaper::decode(status) {
            Some(Status::Stopped(signal)) => {
                if self.settings.job_control && self.serving_gen().is_some_and(|g| g.pid == pid) {
                    log!(
                        self,
                        Info,
                        Subject::pid(pid),
                        "stopped by {signal}; stopping graceful-run too"
                    );
                    self.actions.push(Action::StopSelf);
                }
                return;
            }
            None => return,
            Some(Status::Ended(exit)) => self.on_exit(now, pid, exit),
        }
        self.recheck();
    }

    /// After any reap: a process group may have emptied, an orphan may have gone.
    fn recheck(&mut self) {
        let checks: Vec<Gen> = self
            .retiring
            .iter()
            .filter(|r| r.generation.exited.is_some())
            .map(|r| r.generation)
            .collect();
        for generation in checks {
            self.actions.push(Action::CheckGroup {
                generation: generation.id,
                pgid: generation.pid,
            });
        }
        if let State::Ending(Ending {
            stage: Stage::LeftoversStopping { .. } | Stage::LeftoversKilled { .. },
            ..
        }) = self.state
        {
            self.actions.push(Action::CheckLeftovers);
        }
    }

    fn on_exit(&mut self, now: Instant, pid: i32, exit: ChildExit) {
        // A hook?
        if self.hook_pid() == Some(pid) {
            self.on_hook_exit(now, pid, exit);
            return;
        }
        // A retiring generation's main process.
        if let Some(r) = self
            .retiring
            .iter_mut()
            .find(|r| r.generation.pid == pid && r.generation.exited.is_none())
        {
            r.generation.exited = Some(exit);
            let (generation, serving) = (r.generation, r.serving);
            if serving {
                self.last_end = Some(End::Exited(exit));
            }
            log!(self, Info, generation.subject(), "{exit}");
            self.after_leader_exit(generation);
            return;
        }
        match self.state {
            State::Starting { starting, .. } if starting.generation.pid == pid => {
                let mut generation = starting.generation;
                generation.exited = Some(exit);
                if self.came_up {
                    log!(
                        self,
                        Warn,
                        generation.subject(),
                        "{exit} before it was ready"
                    );
                } else {
                    log!(self, Info, generation.subject(), "{exit}");
                }
                self.state = State::Backoff { until: now };
                self.leader_gone(now, generation);
                self.restart_failed(generation.id, Failure::Exited(exit));
                self.service_ended(now, End::Exited(exit), None);
            }
            State::Serving {
                incoming: Some(incoming),
                ..
            } if incoming.generation.pid == pid => {
                let mut generation = incoming.generation;
                generation.exited = Some(exit);
                if let State::Serving {
                    incoming,
                    generation: serving,
                    ..
                } = &mut self.state
                {
                    *incoming = None;
                    let serving = serving.id;
                    log!(
                        self,
                        Error,
                        generation.subject(),
                        "{exit} before it was ready; gen {serving} keeps serving"
                    );
                }
                self.leader_gone(now, generation);
                self.handover_failed(
                    generation.id,
                    Failure::Exited(exit),
                    generation.subject(),
                    true,
                );
            }
            State::Serving {
                generation,
                ready_since,
                incoming,
                queued,
                ..
            } if generation.pid == pid => {
                let mut generation = generation;
                generation.exited = Some(exit);
                self.last_end = Some(End::Exited(exit));
                match incoming {
                    Some(incoming) => {
                        log!(
                            self,
                            Warn,
                            generation.subject(),
                            "{exit} during a restart; gen {} takes over once ready",
                            incoming.generation.id
                        );
                        self.state = State::Starting {
                            starting: incoming,
                            queued,
                        };
                        self.leader_gone(now, generation);
                    }
                    None => {
                        log!(self, Info, generation.subject(), "{exit}");
                        self.state = State::Backoff { until: now };
                        self.leader_gone(now, generation);
                        let served = now.saturating_duration_since(ready_since);
                        self.service_ended(now, End::Exited(exit), Some(served));
                    }
                }
            }
            State::Ending(ending) => match ending.stage {
                Stage::Draining { serving, .. } if serving.pid == pid => {
                    let mut generation = serving;
                    generation.exited = Some(exit);
                    log!(self, Info, generation.subject(), "{exit} during the drain");
                    self.last_end = Some(End::Exited(exit));
                    self.set_stage(Stage::Generations);
                    self.leader_gone(now, generation);
                    self.signal_stop(now);
                }
                Stage::PreStop {
                    serving: Some(serving),
                    hook,
                } if serving.pid == pid => {
                    let mut generation = serving;
                    generation.exited = Some(exit);
                    log!(self, Info, generation.subject(), "{exit}");
                    self.last_end = Some(End::Exited(exit));
                    self.set_stage(Stage::PreStop {
                        serving: None,
                        hook,
                    });
                    self.leader_gone(now, generation);
                }
                _ => log!(self, Debug, Subject::pid(pid), "reaped orphan: {exit}"),
            },
            _ => log!(self, Debug, Subject::pid(pid), "reaped orphan: {exit}"),
        }
    }

    /// A generation's main process exited while it was in a role: what is left of it retires.
    fn leader_gone(&mut self, now: Instant, generation: Gen) {
        if !self.settings.own_group() {
            self.actions.push(Action::Release {
                generation: generation.id,
            });
            return;
        }
        // Its group may still hold workers: they are stopped like any retiring generation,
        // once the group check says they exist.
        let kill_at = self.kill_deadline(now);
        self.retiring.push(Retiring {
            since: now,
            generation,
            stage: Retire::Stopping { kill_at },
            serving: false,
            group_told: false,
        });
        self.actions.push(Action::CheckGroup {
            generation: generation.id,
            pgid: generation.pid,
        });
    }

    fn after_leader_exit(&mut self, generation: Gen) {
        if !self.settings.own_group() {
            self.drop_retiring(generation.id);
        } else {
            self.actions.push(Action::CheckGroup {
                generation: generation.id,
                pgid: generation.pid,
            });
        }
    }

    fn on_group_checked(&mut self, now: Instant, id: GenId, alive: bool) {
        let Some(index) = self.retiring.iter().position(|r| r.generation.id == id) else {
            return;
        };
        let r = self.retiring[index];
        if r.generation.exited.is_none() {
            return;
        }
        if !alive {
            log!(
                self,
                Debug,
                r.generation.subject(),
                "all processes of this generation are gone"
            );
            self.drop_retiring(id);
            return;
        }
        if let Retire::Stopping { kill_at } = r.stage
            && !r.group_told
        {
            // The main process is gone but processes are left in its group: they get the
            // stop signal now (they may never have had it: signals went to the main process).
            self.retiring[index].group_told = true;
            let mapping = self.retire_mapping();
            let wait = format_duration(kill_at.saturating_duration_since(now));
            log!(
                self,
                Info,
                r.generation.subject(),
                "processes are left in its process group; stopping them"
            );
            if let Mapping::To(signal) = mapping {
                log!(
                    self,
                    Info,
                    r.generation.subject(),
                    "sent {signal} to its process group; SIGKILL in {wait} if still running"
                );
                self.send(
                    Target::Group {
                        generation: id,
                        pgid: r.generation.pid,
                    },
                    signal,
                );
                if signal != Signal::KILL && signal != Signal::CONT {
                    self.send(
                        Target::Group {
                            generation: id,
                            pgid: r.generation.pid,
                        },
                        Signal::CONT,
                    );
                }
            }
        }
        if !self.settings.reaper && matches!(r.stage, Retire::Killed { .. }) {
            // Without a subreaper, the group's orphans belong to another init, which reaps
            // them without telling graceful-run: after SIGKILL they are that init's business.
            self.drop_retiring(id);
        }
    }

    fn drop_retiring(&mut self, id: GenId) {
        self.retiring.retain(|r| r.generation.id != id);
        self.actions.push(Action::Release { generation: id });
        self.settle();
    }

    /// The serving role is empty and no stop was requested: restart or end.
    /// `served`: how long the generation had been ready (None: never).
    fn service_ended(&mut self, now: Instant, end: End, served: Option<Duration>) {
        self.last_end = Some(end);
        let success = matches!(end, End::Exited(exit) if exit.success());
        let restart = match self.settings.restart_policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Always => true,
        };
        if self.reloading {
            self.end_reload(Some(Failure::of(end)));
        }
        if !restart {
            self.end_service(now);
            return;
        }
        if served.is_some_and(|s| s >= STABLE_AFTER) {
            self.restarts.in_a_row = 0;
        }
        if let Some(max) = self.settings.max_restarts
            && self.restarts.in_a_row >= max
        {
            let restarts = if max == 1 { "restart" } else { "restarts" };
            log!(
                self,
                Error,
                Subject::NONE,
                "giving up after {max} {restarts} in a row"
            );
            self.end_service(now);
            return;
        }
        self.restarts.in_a_row += 1;
        self.restarts.total += 1;
        // A generation that served is replaced at once: a crash under load must not leave the
        // sockets unserved. Only generations that fail before serving back off.
        let delay = if served.is_some_and(|s| s >= self.min_served()) {
            self.restarts.failures = 0;
            Duration::ZERO
        } else {
            self.restarts.failures += 1;
            let factor = 2u32.saturating_pow((self.restarts.failures - 1).min(16));
            self.settings
                .restart_delay
                .saturating_mul(factor)
                .min(BACKOFF_CAP)
        };
        let count = self.restarts.in_a_row;
        if delay.is_zero() {
            log!(
                self,
                Info,
                Subject::NONE,
                "restarting now (restart {count} in a row)"
            );
            self.state = State::Backoff { until: now };
            self.spawn(Purpose::Serve);
        } else {
            log!(
                self,
                Info,
                Subject::NONE,
                "restarting in {} (restart {count} in a row)",
                format_duration(delay)
            );
            self.state = State::Backoff { until: now + delay };
        }
    }

    /// How long a generation must have been ready to count as having served: it is then
    /// restarted at once. `--restart-delay`, at most 1 s (a long delay asked for failing
    /// starts must not hold back the replacement of a server that ran for minutes).
    fn min_served(&self) -> Duration {
        self.settings.restart_delay.min(MAX_MIN_SERVED)
    }

    /// The command ended for good without a stop request: stop what is left, then finish.
    fn end_service(&mut self, now: Instant) {
        let budget_end = now
            .checked_add(self.settings.stop_timeout)
            .unwrap_or(far_future(now));
        self.state = State::Ending(Ending {
            budget_end,
            mapping: self.settings.stop_mapping(Signal::TERM),
            delivered: None,
            request: None,
            forced: false,
            stage: Stage::Generations,
        });
        self.actions.push(Action::CloseListeners);
        self.settle();
    }

    // ----- stopping ------------------------------------------------------------------------

    fn request_stop(&mut self, now: Instant, request: Request, delivered: Option<Signal>) {
        let signal = request.signal;
        match self.state {
            State::Done => return,
            State::Init => {
                self.state = State::Done;
                self.actions.push(Action::Exit(Outcome::Code(0)));
                return;
            }
            State::Ending(ending) => {
                if request.ctl {
                    log!(self, Info, Subject::NONE, "already stopping");
                    return;
                }
                if let Some(first) = ending.request
                    && first.signal == signal
                    && first.sender.is_some()
                    && first.sender == request.sender
                    && now.saturating_duration_since(first.at) < DUPLICATE_WINDOW
                {
                    log!(
                        self,
                        Debug,
                        Subject::NONE,
                        "{signal} again from the same process: the same stop request"
                    );
                    return;
                }
                if ending.forced {
                    return;
                }
                log!(
                    self,
                    Warn,
                    Subject::NONE,
                    "{signal} while stopping: killing everything now"
                );
                self.force(now);
                return;
            }
            State::Starting { .. } | State::Serving { .. } | State::Backoff { .. } => {}
        }
        if !request.ctl {
            log!(self, Info, Subject::NONE, "{signal} received: stopping");
        }
        let pending: Vec<u64> = self
            .waiters
            .iter()
            .filter_map(|w| match *w {
                Waiter::Restart { client, .. } => Some(client),
                Waiter::Exit { .. } => None,
            })
            .collect();
        self.waiters.retain(|w| matches!(w, Waiter::Exit { .. }));
        for client in pending {
            self.reply(
                client,
                Answer::Failed("graceful-run is stopping".into()),
                true,
            );
        }
        self.upstream("STOPPING=1");
        self.reloading = false;
        let mapping = self.settings.stop_mapping(signal);
        let budget_end = now
            .checked_add(self.settings.drain_delay)
            .and_then(|t| t.checked_add(self.settings.stop_timeout))
            .unwrap_or(far_future(now));
        let previous = self.state;
        self.state = State::Ending(Ending {
            budget_end,
            mapping,
            delivered,
            request: Some(request),
            forced: false,
            stage: Stage::Generations,
        });
        // Retiring generations must be gone within the budget too.
        for r in &mut self.retiring {
            if let Retire::Stopping { kill_at } = &mut r.stage {
                *kill_at = (*kill_at).min(budget_end);
            }
        }
        match previous {
            State::Serving {
                generation,
                incoming,
                ..
            } => {
                if let Some(incoming) = incoming {
                    // A replacement that is still starting serves nobody: no drain for it.
                    self.retire(now, incoming.generation, mapping, false);
                }
                let until = now
                    .checked_add(self.settings.drain_delay)
                    .unwrap_or(far_future(now));
                self.set_stage(Stage::Draining {
                    serving: generation,
                    until,
                });
                if self.settings.drain_delay.is_zero() {
                    self.after_drain(now);
                } else {
                    log!(
                        self,
                        Info,
                        Subject::NONE,
                        "draining for {} before the stop signal",
                        format_duration(self.settings.drain_delay)
                    );
                }
            }
            State::Starting { starting, .. } => {
                self.stop_in_role(now, starting.generation);
                self.signal_stop(now);
            }
            _ => self.signal_stop(now),
        }
    }

    fn set_stage(&mut self, stage: Stage) {
        if let State::Ending(ending) = &mut self.state {
            ending.stage = stage;
        }
    }

    fn ending(&self) -> Option<Ending> {
        match self.state {
            State::Ending(ending) => Some(ending),
            _ => None,
        }
    }

    fn after_drain(&mut self, now: Instant) {
        let Some(ending) = self.ending() else { return };
        let Stage::Draining { serving, .. } = ending.stage else {
            return;
        };
        if self.settings.pre_stop {
            self.set_stage(Stage::PreStop {
                serving: Some(serving),
                hook: Hook::Launching,
            });
            self.actions.push(Action::RunHook {
                kind: HookKind::PreStop,
                main_pid: Some(serving.pid),
                exit: None,
            });
        } else {
            self.set_stage(Stage::Generations);
            self.stop_in_role(now, serving);
            self.signal_stop(now);
        }
    }

    /// The stop signal to a generation that had a role (serving, starting), unless the
    /// terminal already delivered it.
    fn stop_in_role(&mut self, now: Instant, generation: Gen) {
        let Some(ending) = self.ending() else { return };
        if ending
            .delivered
            .is_some_and(|signal| ending.mapping == Mapping::To(signal))
        {
            log!(
                self,
                Info,
                generation.subject(),
                "already received the stop signal from the terminal"
            );
            self.retiring.push(Retiring {
                since: now,
                generation,
                stage: Retire::Stopping {
                    kill_at: ending.budget_end.max(now),
                },
                serving: true,
                group_told: false,
            });
        } else {
            self.retire(now, generation, ending.mapping, true);
        }
    }

    /// Every generation has its stop signal: close the listeners and wait for them.
    fn signal_stop(&mut self, now: Instant) {
        if let Some(Ending {
            stage: Stage::PreStop { serving, .. },
            ..
        }) = self.ending()
        {
            self.set_stage(Stage::Generations);
            if let Some(serving) = serving {
                self.stop_in_role(now, serving);
            }
        }
        self.set_stage(Stage::Generations);
        self.actions.push(Action::CloseListeners);
        self.settle();
    }

    /// A second TERM or INT: SIGKILL everything, wait for nothing.
    fn force(&mut self, now: Instant) {
        let Some(ending) = self.ending() else { return };
        if let State::Ending(e) = &mut self.state {
            e.forced = true;
        }
        let mut roles: Vec<Gen> = Vec::new();
        match ending.stage {
            Stage::Draining { serving, .. } => roles.push(serving),
            Stage::PreStop { serving, hook } => {
                roles.extend(serving);
                if let Hook::Running { pid, .. } = hook {
                    self.send(Target::Hook { pid }, Signal::KILL);
                }
            }
            Stage::LeftoversStopping { .. } => {
                self.send(Target::Leftovers, Signal::KILL);
                self.set_stage(Stage::LeftoversKilled {
                    give_up_at: now + KILL_GRACE,
                });
            }
            Stage::PostStop {
                hook: Hook::Running { pid, .. },
            } => {
                self.send(Target::Hook { pid }, Signal::KILL);
                self.set_stage(Stage::PostStop {
                    hook: Hook::Killed {
                        pid,
                        give_up_at: now + KILL_GRACE,
                    },
                });
            }
            _ => {}
        }
        if matches!(ending.stage, Stage::Draining { .. } | Stage::PreStop { .. }) {
            self.set_stage(Stage::Generations);
            self.actions.push(Action::CloseListeners);
        }
        // The serving one joins the retiring ones, which all get SIGKILL now.
        for generation in roles {
            self.retiring.push(Retiring {
                since: now,
                generation,
                stage: Retire::Stopping { kill_at: now },
                serving: true,
                group_told: true,
            });
        }
        let to_kill: Vec<Gen> = self
            .retiring
            .iter()
            .filter(|r| matches!(r.stage, Retire::Stopping { .. }))
            .map(|r| r.generation)
            .collect();
        for generation in to_kill {
            log!(
                self,
                Warn,
                generation.subject(),
                "forced stop: sending SIGKILL to its process group"
            );
            self.kill_gen(generation);
        }
        for r in &mut self.retiring {
            if let Retire::Stopping { .. } = r.stage {
                r.stage = Retire::Killed {
                    give_up_at: now + KILL_GRACE,
                };
            }
        }
        if !self.settings.reaper {
            let gone: Vec<GenId> = self
                .retiring
                .iter()
                .filter(|r| r.generation.exited.is_some())
                .map(|r| r.generation.id)
                .collect();
            for id in gone {
                self.drop_retiring(id);
            }
        }
        self.settle();
    }

    /// Moves the end on when what it waits for is over.
    fn settle(&mut self) {
        let Some(ending) = self.ending() else { return };
        if ending.stage == Stage::Generations
            && self.retiring.is_empty()
            && self.launching.is_none()
        {
            self.set_stage(Stage::CheckingLeftovers);
            self.actions.push(Action::CheckLeftovers);
        }
    }

    fn on_leftovers_checked(&mut self, now: Instant, found: bool) {
        let Some(ending) = self.ending() else { return };
        match (ending.stage, found) {
            (
                Stage::CheckingLeftovers
                | Stage::LeftoversStopping { .. }
                | Stage::LeftoversKilled { .. },
                false,
            ) => self.start_post_stop(),
            (Stage::CheckingLeftovers, true) => {
                let kill_at = if ending.forced {
                    now
                } else {
                    ending.budget_end.max(now)
                };
                match ending.mapping {
                    Mapping::To(signal) if kill_at > now => {
                        log!(
                            self,
                            Info,
                            Subject::NONE,
                            "stopping processes left behind by the command"
                        );
                        self.send(Target::Leftovers, signal);
                        if signal != Signal::KILL && signal != Signal::CONT {
                            self.send(Target::Leftovers, Signal::CONT);
                        }
                        self.set_stage(Stage::LeftoversStopping { kill_at });
                    }
                    Mapping::Drop if kill_at > now => {
                        self.set_stage(Stage::LeftoversStopping { kill_at });
                    }
                    _ => self.kill_leftovers(now),
                }
            }
            (Stage::LeftoversKilled { .. }, true) => {
                // Orphans re-parented after the sweep (their parent died of it).
                self.send(Target::Leftovers, Signal::KILL);
            }
            _ => {}
        }
    }

    fn kill_leftovers(&mut self, now: Instant) {
        log!(
            self,
            Warn,
            Subject::NONE,
            "processes left behind did not stop in time: sending SIGKILL"
        );
        self.send(Target::Leftovers, Signal::KILL);
        self.set_stage(Stage::LeftoversKilled {
            give_up_at: now + KILL_GRACE,
        });
    }

    fn start_post_stop(&mut self) {
        if self.settings.post_stop {
            self.set_stage(Stage::PostStop {
                hook: Hook::Launching,
            });
            let exit = match self.last_end {
                Some(End::Exited(exit)) => Some(exit),
                _ => None,
            };
            self.actions.push(Action::RunHook {
                kind: HookKind::PostStop,
                main_pid: None,
                exit,
            });
        } else {
            self.exit();
        }
    }

    fn exit(&mut self) {
        for waiter in std::mem::take(&mut self.waiters) {
            let client = match waiter {
                Waiter::Restart { client, .. } | Waiter::Exit { client } => client,
            };
            self.reply(client, Answer::Done, true);
        }
        let outcome = match self.last_end {
            Some(End::Exited(exit)) => Outcome::Child(exit),
            Some(End::SpawnFailed(code)) => Outcome::Code(code),
            Some(End::NotReady) => Outcome::Code(NOT_READY),
            None => Outcome::Code(0),
        };
        self.state = State::Done;
        self.actions.push(Action::Exit(outcome));
    }

    // ----- hooks ---------------------------------------------------------------------------

    fn hook(&self) -> Option<Hook> {
        match self.ending()?.stage {
            Stage::PreStop { hook, .. } | Stage::PostStop { hook } => Some(hook),
            _ => None,
        }
    }

    fn hook_pid(&self) -> Option<i32> {
        match self.hook()? {
            Hook::Running { pid, .. } | Hook::Killed { pid, .. } => Some(pid),
            Hook::Launching => None,
        }
    }

    fn set_hook(&mut self, new: Hook) {
        if let State::Ending(Ending {
            stage: Stage::PreStop { hook, .. } | Stage::PostStop { hook },
            ..
        }) = &mut self.state
        {
            *hook = new;
        }
    }

    fn on_hook_started(&mut self, now: Instant, kind: HookKind, pid: Option<i32>) {
        let Some(ending) = self.ending() else { return };
        let expected = match ending.stage {
            Stage::PreStop {
                hook: Hook::Launching,
                ..
            } => HookKind::PreStop,
            Stage::PostStop {
                hook: Hook::Launching,
            } => HookKind::PostStop,
            _ => return,
        };
        if expected != kind {
            return;
        }
        let Some(pid) = pid else {
            // The executor logged why; carry on without it.
            return self.hook_done(now, kind);
        };
        log!(
            self,
            Info,
            Subject::pid(pid),
            "running the {} hook",
            kind.flag()
        );
        let timeout_end = now
            .checked_add(self.settings.hook_timeout)
            .unwrap_or(far_future(now));
        // The pre-stop hook's time counts against the stop budget.
        let kill_at = match kind {
            HookKind::PreStop => timeout_end.min(ending.budget_end),
            HookKind::PostStop => timeout_end,
        };
        if kill_at <= now {
            self.send(Target::Hook { pid }, Signal::KILL);
            self.set_hook(Hook::Killed {
                pid,
                give_up_at: now + KILL_GRACE,
            });
        } else {
            self.set_hook(Hook::Running { pid, kill_at });
        }
    }

    fn on_hook_exit(&mut self, now: Instant, pid: i32, exit: ChildExit) {
        let Some(ending) = self.ending() else { return };
        let kind = match ending.stage {
            Stage::PreStop { .. } => HookKind::PreStop,
            _ => HookKind::PostStop,
        };
        if exit.success() {
            log!(
                self,
                Info,
                Subject::pid(pid),
                "{} hook finished",
                kind.flag()
            );
        } else {
            log!(self, Warn, Subject::pid(pid), "{} hook {exit}", kind.flag());
        }
        self.hook_done(now, kind);
    }

    fn hook_done(&mut self, now: Instant, kind: HookKind) {
        match kind {
            HookKind::PreStop => self.signal_stop(now),
            HookKind::PostStop => self.exit(),
        }
    }

    // ----- the timer -----------------------------------------------------------------------

    /// The earliest moment anything needs attention.
    pub fn deadline(&self) -> Option<Instant> {
        let state = match self.state {
            State::Init | State::Done => None,
            State::Starting { starting, .. } => Some(starting.next_deadline()),
            State::Serving { incoming, .. } => incoming.map(|s| s.next_deadline()),
            State::Backoff { until } => (self.launching.is_none()).then_some(until),
            State::Ending(ending) => match ending.stage {
                Stage::Draining { until, .. } => Some(until),
                Stage::PreStop { hook, .. } | Stage::PostStop { hook } => match hook {
                    Hook::Launching => None,
                    Hook::Running { kill_at, .. } => Some(kill_at),
                    Hook::Killed { give_up_at, .. } => Some(give_up_at),
                },
                Stage::Generations | Stage::CheckingLeftovers => None,
                Stage::LeftoversStopping { kill_at } => Some(kill_at),
                Stage::LeftoversKilled { give_up_at } => Some(give_up_at),
            },
        };
        self.retiring
            .iter()
            .map(|r| match r.stage {
                Retire::Stopping { kill_at } => kill_at,
                Retire::Killed { give_up_at } => give_up_at,
            })
            .chain(state)
            .min()
    }

    fn on_timer(&mut self, now: Instant) {
        // Retiring generations first: their SIGKILL is the stop budget's promise.
        let due: Vec<Retiring> = self
            .retiring
            .iter()
            .filter(|r| match r.stage {
                Retire::Stopping { kill_at } => kill_at <= now,
                Retire::Killed { give_up_at } => give_up_at <= now,
            })
            .copied()
            .collect();
        for r in due {
            match r.stage {
                Retire::Stopping { .. } => {
                    log!(
                        self,
                        Warn,
                        r.generation.subject(),
                        "did not stop in time: sending SIGKILL to its process group"
                    );
                    self.kill_gen(r.generation);
                    if let Some(x) = self
                        .retiring
                        .iter_mut()
                        .find(|x| x.generation.id == r.generation.id)
                    {
                        x.stage = Retire::Killed {
                            give_up_at: now + KILL_GRACE,
                        };
                    }
                    if !self.settings.reaper && r.generation.exited.is_some() {
                        self.drop_retiring(r.generation.id);
                    }
                }
                Retire::Killed { .. } => {
                    log!(
                        self,
                        Warn,
                        r.generation.subject(),
                        "still not reaped {} after SIGKILL; giving up on it",
                        format_duration(KILL_GRACE)
                    );
                    self.drop_retiring(r.generation.id);
                }
            }
        }
        match self.state {
            State::Starting { starting, .. } => self.starting_timer(now, starting),
            State::Serving {
                incoming: Some(starting),
                ..
            } => self.starting_timer(now, starting),
            State::Backoff { until } if until <= now && self.launching.is_none() => {
                self.spawn(Purpose::Serve);
            }
            State::Ending(ending) => match ending.stage {
                Stage::Draining { until, .. } if until <= now => self.after_drain(now),
                Stage::PreStop { hook, .. } | Stage::PostStop { hook } => match hook {
                    Hook::Running { pid, kill_at } if kill_at <= now => {
                        let kind = self.hook_kind();
                        log!(
                            self,
                            Warn,
                            Subject::pid(pid),
                            "{} hook did not finish within {}; killing it",
                            kind.flag(),
                            format_duration(self.settings.hook_timeout)
                        );
                        self.send(Target::Hook { pid }, Signal::KILL);
                        self.set_hook(Hook::Killed {
                            pid,
                            give_up_at: now + KILL_GRACE,
                        });
                    }
                    Hook::Killed { give_up_at, .. } if give_up_at <= now => {
                        let kind = self.hook_kind();
                        self.hook_done(now, kind);
                    }
                    _ => {}
                },
                Stage::LeftoversStopping { kill_at } if kill_at <= now => self.kill_leftovers(now),
                Stage::LeftoversKilled { give_up_at } if give_up_at <= now => {
                    log!(
                        self,
                        Warn,
                        Subject::NONE,
                        "leaving behind processes that did not die of SIGKILL"
                    );
                    self.start_post_stop();
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn hook_kind(&self) -> HookKind {
        match self.ending().map(|e| e.stage) {
            Some(Stage::PreStop { .. }) => HookKind::PreStop,
            _ => HookKind::PostStop,
        }
    }

    fn starting_timer(&mut self, now: Instant, starting: Starting) {
        if starting.deadline <= now {
            self.not_ready(now, starting);
            return;
        }
        match starting.readiness {
            Readiness::After { at } if at <= now => {
                let how = match self.settings.ready {
                    Ready::After(_) => "still running after --ready",
                    _ => "no stream socket to wait on",
                };
                self.on_ready(now, starting.generation.id, how)
            }
            Readiness::Probing { next, .. } if next <= now => {
                if let Some(s) = self.starting_mut(starting.generation.id)
                    && let Readiness::Probing { next, .. } = &mut s.readiness
                {
                    // Until the answer: pushed back so the timer does not fire again meanwhile.
                    *next = now + PROBE_MAX;
                }
                self.actions.push(Action::Probe {
                    generation: starting.generation.id,
                    pgid: starting.generation.pid,
                });
            }
            _ => {}
        }
    }
}

const RELOADING: &str = "RELOADING=1";

/// A time so far ahead it never comes: for durations too large to add to `now`.
fn far_future(now: Instant) -> Instant {
    // A century: Instant + Duration overflows only far beyond that on Linux.
    now + Duration::from_secs(100 * 365 * 24 * 3600)
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
