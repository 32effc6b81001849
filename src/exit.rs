//! How graceful-run ends: every exit status is decided here.
//!
//! | status     | meaning                                                                  |
//! |------------|--------------------------------------------------------------------------|
//! | the child's| the command exited by itself or after a stop (then `--exit-code-map`)    |
//! | signal N   | the command was killed by signal N: graceful-run re-raises N on itself,  |
//! |            | core dumps off, as GNU timeout does, so its parent sees the same death   |
//! | 128+N      | the same, when graceful-run is PID 1 (the kernel never lets PID 1 die by |
//! |            | a signal it does not handle) or when `--exit-code-map` names 128+N       |
//! | 124        | the command never became ready within `--ready-timeout` (as GNU timeout's|
//! |            | 124 for "timed out"): nothing ever served                                |
//! | 125        | graceful-run itself failed: a bad flag or value, a socket it cannot bind |
//! | 126        | COMMAND was found but cannot be executed                                 |
//! | 127        | COMMAND was not found                                                    |
//!
//! 125/126/127 follow `env`, `nice`, `timeout` and `chroot`, so shell scripts can tell the
//! wrapper's failure from the command's.

use std::fmt;

use nix::libc;
use nix::sys::wait::WaitStatus;

use crate::signal::Signal;

/// The command never became ready within `--ready-timeout`.
pub const NOT_READY: i32 = 124;
pub const FAILURE: i32 = 125;
pub const CANNOT_RUN: i32 = 126;
pub const NOT_FOUND: i32 = 127;

/// How a process ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChildExit {
    Exited(i32),
    Signaled { signal: Signal, core_dumped: bool },
}

impl ChildExit {
    /// From nix's decoded status. nix cannot decode real-time signal deaths at all: the
    /// reaper decodes raw statuses itself (`reaper::decode`).
    pub fn from_wait(status: WaitStatus) -> Option<ChildExit> {
        match status {
            WaitStatus::Exited(_, code) => Some(ChildExit::Exited(code)),
            WaitStatus::Signaled(_, signal, core_dumped) => Some(ChildExit::Signaled {
                signal: Signal::from_raw(signal as i32)?,
                core_dumped,
            }),
            _ => None,
        }
    }

    /// The status a shell would show: the exit code, or 128+N for a death by signal N.
    pub fn code(self) -> i32 {
        match self {
            ChildExit::Exited(code) => code,
            ChildExit::Signaled { signal, .. } => 128 + signal.raw(),
        }
    }

    pub fn success(self) -> bool {
        self == ChildExit::Exited(0)
    }

    /// systemd's EXIT_CODE: `exited`, `killed` or `dumped`.
    pub fn kind(self) -> &'static str {
        match self {
            ChildExit::Exited(_) => "exited",
            ChildExit::Signaled {
                core_dumped: false, ..
            } => "killed",
            ChildExit::Signaled {
                core_dumped: true, ..
            } => "dumped",
        }
    }

    /// systemd's EXIT_STATUS: the code, or the signal name without SIG.
    pub fn status_text(self) -> String {
        match self {
            ChildExit::Exited(code) => code.to_string(),
            ChildExit::Signaled { signal, .. } => signal.short_name().to_string(),
        }
    }
}

impl fmt::Display for ChildExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildExit::Exited(code) => write!(f, "exited with status {code}"),
            ChildExit::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by {signal}")?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// What graceful-run ends with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// The command's own end, passed through.
    Child(ChildExit),
    /// graceful-run's own failure, or the command's exec failure: 125, 126 or 127.
    Code(i32),
}

/// `--exit-code-map FROM:TO` rules.
#[derive(Clone, Default, Debug)]
pub struct ExitCodeMap {
    rules: Vec<(i32, i32)>,
}

impl ExitCodeMap {
    pub fn new(rules: Vec<(i32, i32)>) -> ExitCodeMap {
        ExitCodeMap { rules }
    }

    fn lookup(&self, code: i32) -> Option<i32> {
        self.rules
            .iter()
            .rev()
            .find(|(from, _)| *from == code)
            .map(|(_, to)| *to)
    }
}

/// Parses one `FROM:TO` rule, both 0-255.
pub fn parse_exit_code_rule(text: &str) -> Result<(i32, i32), String> {
    let (from, to) = text.split_once(':').ok_or("expected FROM:TO, e.g. 143:0")?;
    let parse = |side: &str, value: &str| {
        value
            .trim()
            .parse::<u8>()
            .map(i32::from)
            .map_err(|_| format!("{side} '{value}' is not an exit status 0-255"))
    };
    Ok((parse("FROM", from)?, parse("TO", to)?))
}

/// What the process exit should look like: an exit code, or a death by signal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ending {
    Exit(i32),
    Raise(Signal),
}

/// The one decision of how graceful-run ends.
pub fn decide(outcome: Outcome, map: &ExitCodeMap, is_pid1: bool) -> Ending {
    match outcome {
        Outcome::Code(code) => Ending::Exit(code),
        Outcome::Child(exit) => match (map.lookup(exit.code()), exit) {
            (Some(mapped), _) => Ending::Exit(mapped),
            (None, ChildExit::Exited(code)) => Ending::Exit(code),
            (None, ChildExit::Signaled { signal, .. }) if !is_pid1 => Ending::Raise(signal),
            (None, ChildExit::Signaled { signal, .. }) => Ending::Exit(128 + signal.raw()),
        },
    }
}

/// Ends the process. Nothing is cleaned up here: callers drop what they own first.
pub fn terminate(ending: Ending) -> ! {
    match ending {
        Ending::Exit(code) => std::process::exit(code),
        Ending::Raise(signal) => {
            raise_default(signal);
            // Still alive: the signal's default action does not kill (it cannot have been
            // the cause of a death, but be safe), or we are PID 1 in a namespace.
            std::process::exit(128 + signal.raw())
        }
    }
}

/// Dies by `signal` with its default action and no core dump. Raw numbers throughout: nix's
/// signal functions cannot name real-time signals, whose default action also kills.
fn raise_default(signal: Signal) {
    // A core dump of graceful-run would be noise: the command's own dump, if any, is what
    // matters, and it has already happened.
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    // SAFETY: restoring the default disposition installs no Rust code as a handler; the set
    // is a live local initialised by sigemptyset before use.
    unsafe {
        libc::signal(signal.raw(), libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal.raw());
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    // kill(2) to ourselves delivers an unblocked signal before it returns.
    let _ = crate::signal::send(nix::unistd::Pid::this(), signal);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn killed(signal: Signal) -> Outcome {
        Outcome::Child(ChildExit::Signaled {
            signal,
            core_dumped: false,
        })
    }

    #[test]
    fn exit_codes_pass_through() {
        let map = ExitCodeMap::default();
        for code in [0, 1, 2, 127, 255] {
            assert_eq!(
                decide(Outcome::Child(ChildExit::Exited(code)), &map, false),
                Ending::Exit(code)
            );
        }
    }

    #[test]
    fn signal_deaths_are_reraised_except_as_pid1() {
        let map = ExitCodeMap::default();
        assert_eq!(
            decide(killed(Signal::TERM), &map, false),
            Ending::Raise(Signal::TERM)
        );
        assert_eq!(decide(killed(Signal::TERM), &map, true), Ending::Exit(143));
    }

    #[test]
    fn realtime_deaths_are_reraised_and_coded() {
        let rt = Signal::from_raw(40).expect("40 is SIGRTMIN+6 with glibc");
        let map = ExitCodeMap::default();
        assert_eq!(decide(killed(rt), &map, false), Ending::Raise(rt));
        assert_eq!(decide(killed(rt), &map, true), Ending::Exit(168));
        let exit = ChildExit::Signaled {
            signal: rt,
            core_dumped: false,
        };
        assert_eq!(exit.status_text(), "RTMIN+6");
        assert_eq!(exit.to_string(), "killed by SIGRTMIN+6");
    }

    #[test]
    fn map_applies_to_codes_and_signal_deaths() {
        let map = ExitCodeMap::new(vec![(143, 0), (3, 4)]);
        assert_eq!(decide(killed(Signal::TERM), &map, false), Ending::Exit(0));
        assert_eq!(
            decide(Outcome::Child(ChildExit::Exited(143)), &map, false),
            Ending::Exit(0)
        );
        assert_eq!(
            decide(Outcome::Child(ChildExit::Exited(3)), &map, true),
            Ending::Exit(4)
        );
        assert_eq!(decide(Outcome::Code(127), &map, false), Ending::Exit(127));
    }

    #[test]
    fn rule_parsing() {
        assert_eq!(parse_exit_code_rule("143:0"), Ok((143, 0)));
        assert!(parse_exit_code_rule("143").is_err());
        assert!(parse_exit_code_rule("256:0").unwrap_err().contains("FROM"));
        assert!(parse_exit_code_rule("1:x").unwrap_err().contains("TO"));
    }
}
