//! What goes into the core and what comes out: its whole interface with the executor.
//!
//! Events in, actions out. A few actions are questions the core cannot answer itself (start a
//! process, is this process group empty, what does this generation wait on): each is an
//! [`Action::Ask`] with a [`Ticket`], and its answer comes back as [`Event::Answer`] with the
//! same ticket, before any other event (see [`super::driver`]). Whatever in the core waits for
//! an answer holds the ticket; an answer whose ticket nobody holds any more (the state moved
//! on) is dropped, whatever it says. That is the one way the core waits.

use std::fmt;
use std::time::{Duration, Instant};

use crate::exit::ChildExit;
use crate::log::{Level, Subject};
use crate::policy::{Policy, Ready};
use crate::signal::Signal;

/// A generation: one version of the command, started by one restart (or by a start from
/// nothing). Shown to users as "gen N" and given to the command as GRACEFUL_RUN_GENERATION.
pub type GenId = u64;

/// One process graceful-run started for the command: a worker of a generation. Unique over
/// the life of graceful-run; the executor keys what it holds for a worker (its
/// NOTIFY_SOCKET) by it.
pub type WorkerId = u64;

/// Pairs a question with its answer.
pub type Ticket = u64;

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
    /// The flags the core decides by, as parsed (`Config::policy`).
    pub policy: Policy,
    pub pre_stop: bool,
    pub post_stop: bool,
    /// How many copies of the command serve at once (`--workers`).
    pub workers: u32,
    /// How far the ready workers may fall below `workers` during a rollout
    /// (`--max-unavailable`).
    pub max_unavailable: u32,
    /// TCP listeners are steered (`--handover steer`, and the kernel allows it): each worker
    /// gets a member of their reuseport groups, and new connections go to the ready ones.
    pub steering: bool,
    /// `--health-cmd` or `--health-http`, and their timing.
    pub health: Option<HealthSettings>,
    /// `--max-memory`, in bytes (PSS summed over a worker's processes).
    pub max_memory: Option<u64>,
    /// `--max-lifetime`: the longest a worker serves; each draws 90 to 100% of it.
    pub max_lifetime: Option<Duration>,
    /// `--watch`: file changes restart the service; with `--build`, after the build succeeded.
    pub watch: Option<WatchSettings>,
    pub delivery: Delivery,
    /// PID 1 or a child subreaper: orphaned descendants are re-parented to graceful-run, so
    /// it reaps them and learns when a process group empties.
    pub reaper: bool,
    /// graceful-run was started in the foreground of a terminal and hands it to the command
    /// (job control: the command stopped by Ctrl-Z stops graceful-run too).
    pub job_control: bool,
    /// Stream listeners exist: `--ready accepting` has something to look for.
    pub stream_listeners: bool,
    /// Their names for the log (`tcp://127.0.0.1:8080 (fd 3)`): what a generation that is
    /// never ready was expected to wait on.
    pub stream_names: Vec<String>,
    /// graceful-run's own pid: the MAINPID its supervisor is told.
    pub main_pid: i32,
    /// The most detailed log level wanted (`-q`, `-v`).
    pub log_level: Level,
}

/// How a serving worker's health is checked (Docker's HEALTHCHECK names and defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// `--health-cmd` (a process, reaped like a hook), else `--health-http` (a probe the
    /// executor sends and times out itself).
    pub command: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchSettings {
    /// `--build`: a build runs before each restart.
    pub build: bool,
}

impl Settings {
    /// What the command receives as the stop signal, for a stop asked by `received`.
    pub(super) fn stop_mapping(&self, received: Signal) -> crate::signal::Mapping {
        match self.policy.stop_signal {
            Some(signal) => crate::signal::Mapping::To(signal),
            None => self.policy.signal_map.translate(received),
        }
    }

    pub(super) fn own_group(&self) -> bool {
        self.delivery != Delivery::NoGroup
    }

    pub(super) fn takes_notify(&self) -> bool {
        matches!(self.policy.ready, Ready::Notify | Ready::Auto)
    }

    /// Whether a signal decides something (so its sender must be told apart from the
    /// command's own processes with certainty) rather than being only forwarded.
    pub(super) fn decides(&self, signal: Signal) -> bool {
        matches!(signal, Signal::TERM | Signal::INT) || Some(signal) == self.policy.restart_signal
    }
}

/// Who sent a signal, as far as the executor could tell without deciding anything.
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
    },
}

/// The process on the other end of a `graceful-run ctl` connection (SO_PEERCRED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
}

/// A request from `graceful-run ctl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Restart, as the restart signal does; with `wait`, answer how it ended.
    Restart { wait: bool },
    /// Stop, as TERM does; with `wait`, answer when graceful-run exits.
    Stop { wait: bool },
    /// Run this many workers from now on (1 to [`MAX_WORKERS`]).
    Scale { workers: u32 },
}

/// The most workers graceful-run runs (`--workers`, `ctl scale`, SIGTTIN).
pub const MAX_WORKERS: u32 = 1024;

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
    /// A datagram on worker `worker`'s NOTIFY_SOCKET, from one of its own processes.
    Notify {
        worker: WorkerId,
        fields: Vec<(String, String)>,
    },
    /// The timer armed by [`Action::ArmTimer`] went off. It says nothing more: the core
    /// handles whatever is due at the step's time, whichever event the step carries.
    Timer,
    /// The answer to the [`Action::Ask`] with this ticket.
    Answer {
        ticket: Ticket,
        answer: Answer,
    },
    /// A request from `graceful-run ctl` on connection `client` (client ids are the executor's).
    Control {
        client: u64,
        peer: Peer,
        command: Command,
    },
    /// The end of a `--health-http` probe of `worker` ([`CheckStart::Probe`]): the response's
    /// status (2xx and 3xx are healthy), or why there was none (including its timeout).
    Checked {
        worker: WorkerId,
        result: Result<u16, String>,
    },
    /// A sample of `worker`'s memory ([`Action::SampleMemory`]), in bytes.
    Memory {
        worker: WorkerId,
        bytes: u64,
    },
    /// A burst of changes under `--watch` paths (the first few, and how many more).
    Changed {
        paths: Vec<String>,
        more: usize,
    },
    /// Listeners graceful-run did not create are in a steered listener's reuseport group
    /// (another program of the same user that set `SO_REUSEPORT`; `what` names them): the
    /// group's indices are no longer graceful-run's alone, so later workers share the
    /// listener. Sent once, by the look at each spawn and before each steering change.
    Strangers {
        what: String,
    },
}

/// Whether a new worker gets a NOTIFY_SOCKET of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyNeed {
    /// `--ready notify`: without one it can never be ready, so failing to make one fails the
    /// start.
    Required,
    /// `--ready auto`: READY=1 is heard if it can be; readiness is also seen otherwise.
    Wanted,
    /// Nothing listens for READY=1.
    None,
}

/// A question for the executor; answered by [`Event::Answer`] with the same ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Question {
    /// Start a worker of `generation` with index `slot` on the sockets.
    /// `reset_nonblocking`: no process of the command is alive, so O_NONBLOCK may be cleared
    /// on the shared listeners (never while another process accepts on them: an event-loop
    /// server would block in accept). Answered with [`Answer::Spawned`].
    Spawn {
        worker: WorkerId,
        generation: GenId,
        slot: u32,
        reset_nonblocking: bool,
        notify: NotifyNeed,
        /// With steering: which member of every steered listener's group it gets (the number
        /// of members so far: a new one). No process holds a member given here, so its
        /// O_NONBLOCK is cleared.
        member: Option<u32>,
    },
    /// Run a hook. Answered with [`Answer::HookStarted`].
    RunHook {
        kind: HookKind,
        /// `--pre-stop`: the main pid of worker 0. `--post-stop`: how the command ended.
        main_pid: Option<i32>,
        exit: Option<ChildExit>,
    },
    /// Is any process left in this process group? Answered with [`Answer::Group`].
    CheckGroup { worker: WorkerId, pgid: i32 },
    /// Are children of graceful-run left outside the workers (orphans re-parented to it)?
    /// Answered with [`Answer::Leftovers`], after the reaps it found meanwhile.
    CheckLeftovers,
    /// Which stream listeners does no process of this worker wait on yet? Answered with
    /// [`Answer::Probed`].
    Probe {
        worker: WorkerId,
        pgid: i32,
        member: Option<u32>,
        /// Also look for a TCP listener of the command's own (it binds a port itself), for
        /// the diagnosis: asked once it has not waited for [`super::worker::PROBE_WARN_AFTER`].
        diagnose: bool,
    },
    /// How busy is this worker, steered away from (its member's queue, handshakes toward it,
    /// the connections its processes hold)? Answered with [`Answer::Observed`].
    Observe {
        worker: WorkerId,
        pgid: i32,
        member: Option<u32>,
    },
    /// Does this process descend from graceful-run? Answered with [`Answer::Descends`].
    Descends { pid: i32 },
    /// Start a health check of this worker. Answered with [`Answer::CheckStarted`].
    StartCheck {
        worker: WorkerId,
        pid: i32,
        slot: u32,
        member: Option<u32>,
    },
    /// Start `--build`. Answered with [`Answer::BuildStarted`].
    StartBuild,
}

/// The answer to a [`Question`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// To [`Question::Spawn`]: the main process's pid, or the exit code the failure stands for
    /// (125, 126, 127).
    Spawned(Result<Spawned, i32>),
    /// To [`Question::RunHook`]: the hook's pid, or None when it could not start.
    HookStarted(Option<i32>),
    /// To [`Question::CheckGroup`].
    Group { alive: bool },
    /// To [`Question::CheckLeftovers`]: orphans exist and can be signalled.
    Leftovers { found: bool },
    /// To [`Question::Probe`]: the stream listeners no process of the worker waits on yet
    /// (empty: it waits on all of them); `blind`: why some of its processes could not be
    /// looked at (not dumpable, another user's, a look that took too long).
    Probed {
        missing: Vec<String>,
        blind: Option<crate::accepting::Blind>,
        /// Asked with `diagnose`: the address of a TCP listener its processes hold that
        /// graceful-run did not pass them.
        itself: Option<std::net::SocketAddr>,
        /// Nothing missing, and some listener was seen only through a connection a process
        /// accepted from it (a shared listener whose queue never empties: see `accepting`).
        accepted: bool,
    },
    /// To [`Question::Descends`].
    Descends(bool),
    /// To [`Question::Observe`].
    Observed(Activity),
    /// To [`Question::StartCheck`].
    CheckStarted(CheckStart),
    /// To [`Question::StartBuild`]: its pid, or None when it could not start.
    BuildStarted(Option<i32>),
}

/// How a health check began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckStart {
    /// `--health-cmd`: this process (its own group); exit status 0 is healthy. The core kills
    /// it at `--health-timeout`.
    Process(i32),
    /// `--health-http`: the probe runs; [`Event::Checked`] brings its end.
    Probe,
    /// It could not begin: unhealthy, for this reason.
    Failed(String),
}

/// What a worker being drained still has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Connections in its member's accept queue.
    pub queued: u32,
    /// Handshakes that were in flight when it was steered away, still not done.
    pub in_flight: u32,
    /// Connections its processes hold that are busy (a request unanswered, bytes unread or
    /// unsent, just accepted).
    pub busy: u32,
    /// Idle ones (keep-alive between requests).
    pub idle: u32,
    /// Its processes' connections could not be looked at (not dumpable, another user's).
    pub blind: bool,
}

impl Activity {
    /// Nothing left that its stop signal could cut.
    pub fn quiet(&self) -> bool {
        self.queued == 0 && self.in_flight == 0 && self.busy == 0
    }
}

/// A worker that started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spawned {
    pub pid: i32,
    /// A random number the core may use (the `--max-lifetime` jitter): the core draws none.
    pub random: u64,
    /// The file it runs, for the log.
    pub executable: String,
    /// [`NotifyNeed::Wanted`] and no NOTIFY_SOCKET could be made: why.
    pub notify_failed: Option<String>,
    /// A member was asked for, but it got the shared listeners (member 0's socket): strangers
    /// were found in a group (an [`Event::Strangers`] follows, if not sent before).
    pub shared: bool,
}

/// Where a signal goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A worker's main process (graceful-run's child, not reaped yet: its pid is ours).
    Leader { worker: WorkerId, pid: i32 },
    /// A worker's whole process group.
    Group { worker: WorkerId, pgid: i32 },
    /// A hook's process group.
    Hook { pid: i32 },
    /// Every child of graceful-run outside the workers (as PID 1: every process).
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

/// A message for graceful-run's own supervisor (sd_notify); the executor formats it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// The service came up: READY=1 with MAINPID (graceful-run's own pid, which never changes).
    Ready {
        main_pid: i32,
    },
    /// A restart began (systemd's Type=notify-reload wants MONOTONIC_USEC with it).
    Reloading,
    /// The restart's new generation took over (READY=1 with ERRNO=0, which clears an error a
    /// failed reload left).
    Reloaded,
    /// The restart failed. systemd has no message that fails a reload: READY=1 ends it
    /// whatever comes with it, so the failure is told in STATUS= and ERRNO=, which
    /// `systemctl status` shows. `ready`: a generation serves, so the reload ends here.
    ReloadFailed {
        failure: Failure,
        ready: bool,
    },
    Stopping,
    /// STATUS=: the service's or the command's own.
    Status(String),
    /// EXTEND_TIMEOUT_USEC=: a starting worker asked for more time.
    ExtendTimeout {
        usec: u64,
    },
}

/// Why a new generation (or worker) did not take over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    CannotStart,
    Exited(ChildExit),
    NotReady,
}

impl Failure {
    /// The errno-style code systemd shows as `Error:` in `systemctl status`.
    pub fn errno(self) -> i32 {
        match self {
            Failure::CannotStart => nix::libc::ENOEXEC,
            Failure::Exited(_) => nix::libc::ECHILD,
            Failure::NotReady => nix::libc::ETIMEDOUT,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::CannotStart => write!(f, "the new generation could not be started"),
            Failure::Exited(exit) => write!(f, "the new generation {exit} before it was ready"),
            Failure::NotReady => write!(f, "the new generation was not ready in time"),
        }
    }
}

/// The core's answer to a `graceful-run ctl` [`Command`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Begun.
    Accepted,
    /// The restart's new generation took over; or graceful-run is about to exit.
    Done,
    /// The restart failed.
    Failed(Refusal),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// graceful-run is stopping: no restart now.
    Stopping,
    Failed(Failure),
    /// `ctl scale` with a count out of range.
    BadCount(u32),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Stopping => write!(f, "graceful-run is stopping"),
            Refusal::Failed(failure) => failure.fmt(f),
            Refusal::BadCount(n) => write!(
                f,
                "{n} workers: the count must be 1 to {MAX_WORKERS}; nothing changed"
            ),
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
    /// A question; its answer comes back as [`Event::Answer`] with this ticket.
    Ask {
        ticket: Ticket,
        question: Question,
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
    /// The worker is gone: its NOTIFY_SOCKET and anything else held for it can go.
    Release {
        worker: WorkerId,
    },
    /// Close graceful-run's copies of the listening sockets: late connections are refused
    /// instead of queueing where nobody accepts.
    CloseListeners,
    Upstream(Upstream),
    /// New connections go to these members of every steered listener's group, spread evenly.
    Steer {
        members: Vec<u32>,
    },
    /// Sample the memory of these workers (by process group) off the loop; each answers with
    /// [`Event::Memory`].
    SampleMemory {
        workers: Vec<(WorkerId, i32)>,
    },
    /// Wake up at this time (None: no deadline; an idle graceful-run sleeps).
    ArmTimer(Option<Instant>),
    /// Answer `graceful-run ctl` client `client`; `last`: nothing more will follow.
    Reply {
        client: u64,
        reply: Reply,
        last: bool,
    },
    Exit(crate::exit::Outcome),
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

/// What a worker is doing, for `ctl status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Starting, and nothing else serves in its slot.
    Starting,
    Serving,
    /// A replacement, starting while its slot's worker still serves.
    Incoming,
    /// Serving through the drain delay or the pre-stop hook of a stop.
    Draining,
    /// Replaced: new connections go elsewhere, and it finishes what it holds before its stop
    /// signal.
    Retiring,
    /// Told to stop.
    Stopping,
}

/// One worker, for `ctl status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerView {
    pub id: WorkerId,
    pub generation: GenId,
    pub slot: u32,
    pub pid: i32,
    pub role: Role,
    pub started: Instant,
    /// Since when it has this role (for Serving: since it became ready).
    pub since: Instant,
    pub exited: Option<ChildExit>,
    /// How it became ready, while it serves.
    pub ready_by: Option<&'static str>,
    /// Its member of the steered listeners' groups.
    pub member: Option<u32>,
    /// What it still had at the last look, while it drains.
    pub activity: Option<Activity>,
    /// Its health (`--health-*`): None before the first check counts.
    pub healthy: Option<bool>,
    /// Its memory at the last sample (`--max-memory`).
    pub memory: Option<u64>,
}

/// What runs now, for `ctl status` and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub phase: Phase,
    pub workers: Vec<WorkerView>,
    pub restarts: u64,
    pub last_exit: Option<ChildExit>,
    pub queued: bool,
    /// How a restart failed last, until a later one succeeds.
    pub last_failure: Option<Failure>,
    /// Replacements each trigger asked for so far.
    pub triggered: Triggered,
    /// How many workers run (slots).
    pub slots: u32,
}

/// Why a serving worker is replaced without a restart request (issue 18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Unhealthy,
    Watchdog,
    Memory,
    Lifetime,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Unhealthy => "unhealthy",
            Reason::Watchdog => "watchdog",
            Reason::Memory => "memory",
            Reason::Lifetime => "lifetime",
        })
    }
}

/// How many replacements each trigger asked for, and how many file changes restarted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Triggered {
    pub unhealthy: u64,
    pub watchdog: u64,
    pub memory: u64,
    pub lifetime: u64,
    pub changes: u64,
}

impl Triggered {
    pub fn count(&mut self, reason: Reason) {
        match reason {
            Reason::Unhealthy => self.unhealthy += 1,
            Reason::Watchdog => self.watchdog += 1,
            Reason::Memory => self.memory += 1,
            Reason::Lifetime => self.lifetime += 1,
        }
    }
}

impl Subject {
    /// A worker of a generation: "gen 3 (pid 42)", or "gen 3 worker 1 (pid 42)" when there are
    /// several.
    pub(super) fn worker(generation: GenId, slot: u32, pid: i32, several: bool) -> Subject {
        Subject {
            worker: several.then_some(slot),
            ..Subject::generation(generation, pid)
        }
    }
}
