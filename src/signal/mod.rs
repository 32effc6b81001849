//! Signal names, parsing and the `--map-signal` translation table.
//!
//! Users write signals the way the tools they already know accept them: `TERM`, `SIGTERM`,
//! `sigterm` and `15` all mean the same signal, everywhere a flag takes a signal (as in
//! watchexec and dumb-init). Only the classic signals 1-31 are accepted: they are the ones a
//! supervisor receives and forwards; real-time signals have no names users would recognise.
//!
//! Numbers come from `libc`, never from a hand-written table, because they differ between
//! architectures (SIGUSR1 is 10 on x86 and arm, 16 on mips).

use std::fmt;
use std::str::FromStr;

use nix::libc;

/// One classic POSIX signal (1-31).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Signal(i32);

/// Canonical names first: `Display` uses the first name found for a number.
const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
    // Aliases accepted on input.
    ("IOT", libc::SIGABRT),
    ("CLD", libc::SIGCHLD),
    ("POLL", libc::SIGIO),
];

impl Signal {
    pub const HUP: Signal = Signal(libc::SIGHUP);
    pub const INT: Signal = Signal(libc::SIGINT);
    pub const TERM: Signal = Signal(libc::SIGTERM);
    pub const KILL: Signal = Signal(libc::SIGKILL);
    pub const CONT: Signal = Signal(libc::SIGCONT);
    pub const CHLD: Signal = Signal(libc::SIGCHLD);
    pub const STOP: Signal = Signal(libc::SIGSTOP);
    pub const PIPE: Signal = Signal(libc::SIGPIPE);

    /// The signal with this number, if it is one of 1-31.
    pub fn from_raw(number: i32) -> Option<Signal> {
        (1..=31).contains(&number).then_some(Signal(number))
    }

    pub fn raw(self) -> i32 {
        self.0
    }

    /// Every signal 1-31, in numeric order.
    pub fn all() -> impl Iterator<Item = Signal> {
        (1..=31).map(Signal)
    }

    /// KILL and STOP cannot be caught, blocked or ignored.
    pub fn is_catchable(self) -> bool {
        self != Signal::KILL && self != Signal::STOP
    }

    /// ILL, FPE and SEGV report a fault in the process that receives them; a handler that
    /// returns from a real one re-runs the faulting instruction forever.
    pub fn is_fault(self) -> bool {
        matches!(self.0, libc::SIGILL | libc::SIGFPE | libc::SIGSEGV)
    }

    /// The name without the `SIG` prefix, e.g. `TERM`.
    pub fn short_name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| *name)
            .unwrap_or("?")
    }

    pub fn as_nix(self) -> nix::sys::signal::Signal {
        // Every number in 1-31 is a signal nix knows on Linux (SIGSTKFLT and SIGPWR included).
        nix::sys::signal::Signal::try_from(self.0).expect("1-31 are all valid Linux signals")
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.short_name())
    }
}

impl FromStr for Signal {
    type Err = String;

    fn from_str(text: &str) -> Result<Signal, String> {
        let trimmed = text.trim();
        if let Ok(number) = trimmed.parse::<i32>() {
            return Signal::from_raw(number)
                .ok_or_else(|| format!("signal number {number} is outside 1-31"));
        }
        let upper = trimmed.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        NAMES
            .iter()
            .find(|(name, _)| *name == bare)
            .map(|(_, number)| Signal(*number))
            .ok_or_else(|| "not a signal name or number (e.g. TERM, SIGTERM, 15)".to_string())
    }
}

/// Sends `signal` with kill(2): a negative `target` is a process group, -1 every process we
/// may signal. Raw numbers, so that real-time signals go too.
pub fn send(target: nix::unistd::Pid, signal: Signal) -> nix::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let result = unsafe { libc::kill(target.as_raw(), signal.raw()) };
    nix::errno::Errno::result(result).map(drop)
}

/// What `--map-signal` does to one forwarded signal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mapping {
    To(Signal),
    Drop,
}

/// One `FROM:TO` or `FROM:` entry of `--map-signal`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SignalRule {
    pub from: Signal,
    pub to: Mapping,
}

impl FromStr for SignalRule {
    type Err = String;

    fn from_str(text: &str) -> Result<SignalRule, String> {
        let (from, to) = text
            .split_once(':')
            .ok_or("expected FROM:TO, or FROM: to drop the signal")?;
        let from: Signal = from.parse().map_err(|e| format!("FROM: {e}"))?;
        if !from.is_catchable() {
            return Err(format!("{from} cannot be caught, so it cannot be mapped"));
        }
        let to = if to.trim().is_empty() {
            Mapping::Drop
        } else {
            Mapping::To(to.parse().map_err(|e| format!("TO: {e}"))?)
        };
        Ok(SignalRule { from, to })
    }
}

/// The translation table applied to every signal graceful-run passes to its child.
#[derive(Clone, Default, Debug)]
pub struct SignalMap {
    rules: Vec<SignalRule>,
}

impl SignalMap {
    /// Later rules for the same signal win, so a flag given twice behaves like an override.
    pub fn new(rules: Vec<SignalRule>) -> SignalMap {
        SignalMap { rules }
    }

    pub fn translate(&self, signal: Signal) -> Mapping {
        self.rules
            .iter()
            .rev()
            .find(|rule| rule.from == signal)
            .map(|rule| rule.to)
            .unwrap_or(Mapping::To(signal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        for text in ["TERM", "SIGTERM", "sigterm", "term", "15", " SigTerm "] {
            assert_eq!(text.parse::<Signal>(), Ok(Signal::TERM), "{text}");
        }
        assert_eq!("IOT".parse::<Signal>(), Ok(Signal(libc::SIGABRT)));
    }

    #[test]
    fn rejects_unknown_and_out_of_range() {
        assert!("0".parse::<Signal>().is_err());
        assert!("32".parse::<Signal>().is_err());
        assert!("SIGFOO".parse::<Signal>().is_err());
        assert!("".parse::<Signal>().is_err());
    }

    #[test]
    fn names_round_trip() {
        for signal in Signal::all() {
            assert_eq!(signal.to_string().parse::<Signal>(), Ok(signal));
        }
    }

    #[test]
    fn map_swaps_drops_and_passes_through() {
        let map = SignalMap::new(vec![
            "USR1:USR2".parse().unwrap(),
            "USR2:USR1".parse().unwrap(),
            "WINCH:".parse().unwrap(),
        ]);
        assert_eq!(
            map.translate(Signal(libc::SIGUSR1)),
            Mapping::To(Signal(libc::SIGUSR2))
        );
        assert_eq!(
            map.translate(Signal(libc::SIGUSR2)),
            Mapping::To(Signal(libc::SIGUSR1))
        );
        assert_eq!(map.translate(Signal(libc::SIGWINCH)), Mapping::Drop);
        assert_eq!(map.translate(Signal::TERM), Mapping::To(Signal::TERM));
    }

    #[test]
    fn rule_errors_say_which_side_is_wrong() {
        assert!(
            "TERM"
                .parse::<SignalRule>()
                .unwrap_err()
                .contains("FROM:TO")
        );
        assert!(
            "FOO:TERM"
                .parse::<SignalRule>()
                .unwrap_err()
                .starts_with("FROM")
        );
        assert!(
            "TERM:FOO"
                .parse::<SignalRule>()
                .unwrap_err()
                .starts_with("TO")
        );
        assert!("KILL:TERM".parse::<SignalRule>().is_err());
    }
}
pub mod receive;
