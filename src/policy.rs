//! The values of the flags that choose a behaviour (`--ready`, `--restart-policy`,
//! `--kill-mode`, `--log-format`), apart from the clap layer that parses them: the supervisor's
//! core and the logger use them without depending on the command line.

use std::time::Duration;

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KillMode {
    /// Signals to the main process; SIGKILL to the whole process group
    Mixed,
    /// Every signal to the whole process group
    Group,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Handover {
    /// A listener per generation; new connections steered to the ready one, the old one drained
    Steer,
    /// One socket shared by every generation; the old one is signalled once the new one is ready
    Shared,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestartPolicy {
    /// Exit with the command's status
    Never,
    /// Restart after a non-zero exit or a death by signal
    OnFailure,
    /// Restart after any exit
    Always,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `graceful-run: gen 2 (pid 4242): message`
    Text,
    /// One JSON object per line
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// READY=1 if the generation sends it first, else as [`Ready::Accepting`].
    Auto,
    /// Its processes wait for connections on every stream listener.
    Accepting,
    /// READY=1 on the generation's own NOTIFY_SOCKET.
    Notify,
    /// Still running after this long.
    After(Duration),
}

/// The flags the supervisor decides by: its signals, timings and restart rules. Parsed once
/// into [`Config::policy`](crate::config::Config::policy) and handed to the core as they are
/// ([`Settings::policy`](crate::supervisor::core::Settings::policy)), so that a flag is read
/// from one place.
#[derive(Clone, Debug)]
pub struct Policy {
    /// `--restart-signal`; None: `none`.
    pub restart_signal: Option<crate::signal::Signal>,
    /// `--map-signal`.
    pub signal_map: crate::signal::SignalMap,
    /// `--stop-signal`; None: each stop request's own signal (TERM, INT, ...) goes through.
    pub stop_signal: Option<crate::signal::Signal>,
    pub stop_timeout: Duration,
    pub drain_delay: Duration,
    /// The longest a replaced worker drains before its stop signal, and a stop waits for
    /// busy connections (issue 16).
    pub drain_timeout: Duration,
    pub hook_timeout: Duration,
    pub ready: Ready,
    pub ready_timeout: Duration,
    pub restart_policy: RestartPolicy,
    pub restart_delay: Duration,
    pub max_restarts: Option<u32>,
    /// Workers allowed beyond `--workers` during a rolling restart.
    pub max_surge: u32,
    /// `--watchdog`: the longest silence between two `WATCHDOG=1`; at least 1ms.
    pub watchdog: Option<Duration>,
}
