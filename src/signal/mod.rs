//! Signal names, parsing and the `--map-signal` translation table.
//!
//! Users write signals the way the tools they already know accept them: `TERM`, `SIGTERM`,
//! `sigterm` and `15` all mean the same signal, everywhere a flag takes a signal (as in
//! watchexec and dumb-init). The classic signals 1-31 and the real-time signals
//! SIGRTMIN..SIGRTMAX (34-64 with glibc) are accepted: a server may use a real-time signal for
//! its own purposes (as tini forwards them, so does graceful-run). Real-time signals are named
//! as kill(1), bash and systemd name them: `RTMIN`, `RTMIN+1` .. `RTMIN+15`, `RTMAX-14` ..
//! `RTMAX`, with or without `SIG`; `RTMIN+N` and `RTMAX-N` are accepted for any N in range.
//! 32 and 33 are not signals a program may use: glibc keeps them for its threads.
//!
//! Numbers come from `libc`, never from a hand-written table, because they differ between
//! architectures (SIGUSR1 is 10 on x86 and arm, 16 on mips) and C libraries (SIGRTMIN is 34
//! with glibc, 35 with musl).
//!
//! nix's `Signal` enum has no real-time signals, so every signal graceful-run sends goes
//! through [`send`] with the raw number.

use std::fmt;
use std::str::FromStr;

use nix::libc;
use nix::unistd::Pid;

/// One signal: a classic POSIX signal (1-31) or a real-time one (SIGRTMIN..=SIGRTMAX).
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

/// `RTMIN+N` and `RTMAX-N` for N up to 30 (glibc has 31 real-time signals), as `'static`
/// names so that [`Signal::short_name`] can stay allocation-free.
const RTMIN_NAMES: [&str; 31] = [
    "RTMIN", "RTMIN+1", "RTMIN+2", "RTMIN+3", "RTMIN+4", "RTMIN+5", "RTMIN+6", "RTMIN+7",
    "RTMIN+8", "RTMIN+9", "RTMIN+10", "RTMIN+11", "RTMIN+12", "RTMIN+13", "RTMIN+14", "RTMIN+15",
    "RTMIN+16", "RTMIN+17", "RTMIN+18", "RTMIN+19", "RTMIN+20", "RTMIN+21", "RTMIN+22", "RTMIN+23",
    "RTMIN+24", "RTMIN+25", "RTMIN+26", "RTMIN+27", "RTMIN+28", "RTMIN+29", "RTMIN+30",
];
const RTMAX_NAMES: [&str; 31] = [
    "RTMAX", "RTMAX-1", "RTMAX-2", "RTMAX-3", "RTMAX-4", "RTMAX-5", "RTMAX-6", "RTMAX-7",
    "RTMAX-8", "RTMAX-9", "RTMAX-10", "RTMAX-11", "RTMAX-12", "RTMAX-13", "RTMAX-14", "RTMAX-15",
    "RTMAX-16", "RTMAX-17", "RTMAX-18", "RTMAX-19", "RTMAX-20", "RTMAX-21", "RTMAX-22", "RTMAX-23",
    "RTMAX-24", "RTMAX-25", "RTMAX-26", "RTMAX-27", "RTMAX-28", "RTMAX-29", "RTMAX-30",
];

/// The real-time signal range of the C library graceful-run runs on.
fn rt_range() -> std::ops::RangeInclusive<i32> {
    libc::SIGRTMIN()..=libc::SIGRTMAX()
}

impl Signal {
    pub const HUP: Signal = Signal(libc::SIGHUP);
    pub const INT: Signal = Signal(libc::SIGINT);
    pub const TERM: Signal = Signal(libc::SIGTERM);
    pub const KILL: Signal = Signal(libc::SIGKILL);
    pub const CONT: Signal = Signal(libc::SIGCONT);
    pub const CHLD: Signal = Signal(libc::SIGCHLD);
    pub const STOP: Signal = Signal(libc::SIGSTOP);
    pub const PIPE: Signal = Signal(libc::SIGPIPE);
    pub const TTIN: Signal = Signal(libc::SIGTTIN);
    pub const TTOU: Signal = Signal(libc::SIGTTOU);

    /// The signal with this number, if it is one of 1-31 or SIGRTMIN..=SIGRTMAX.
    pub fn from_raw(number: i32) -> Option<Signal> {
        ((1..=31).contains(&number) || rt_range().contains(&number)).then_some(Signal(number))
    }

    /// Any signal number the kernel may report in a wait status (1-64), including 32 and 33,
    /// which no program should use but which `kill -32` can still deliver: a death by them
    /// must be reported, not lost.
    pub(crate) fn from_kernel(number: i32) -> Option<Signal> {
        (1..=64).contains(&number).then_some(Signal(number))
    }

    pub fn raw(self) -> i32 {
        self.0
    }

    /// Every signal 1-31 and SIGRTMIN..=SIGRTMAX, in numeric order.
    pub fn all() -> impl Iterator<Item = Signal> {
        (1..=31).chain(rt_range()).map(Signal)
    }

    /// SIGRTMIN..=SIGRTMAX.
    pub fn is_realtime(self) -> bool {
        // 1-31 first: no call into the C library for the classic signals (the forwarding
        // path asks this of every signal).
        self.0 > 31 && rt_range().contains(&self.0)
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

    /// The name without the `SIG` prefix, e.g. `TERM` or `RTMIN+3`; the bare number for the
    /// two signals glibc reserves (32, 33), which have no name.
    pub fn short_name(self) -> &'static str {
        if let Some((name, _)) = NAMES.iter().find(|(_, n)| *n == self.0) {
            return name;
        }
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        if (min..=max).contains(&self.0) {
            // kill -l's convention: the lower half counts up from RTMIN, the upper half down
            // from RTMAX.
            let (up, down) = ((self.0 - min) as usize, (max - self.0) as usize);
            let name = if up <= down {
                RTMIN_NAMES.get(up)
            } else {
                RTMAX_NAMES.get(down)
            };
            if let Some(name) = name {
                return name;
            }
        }
        match self.0 {
            32 => "32",
            33 => "33",
            _ => "?",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            32 | 33 => write!(f, "signal {}", self.0),
            _ => write!(f, "SIG{}", self.short_name()),
        }
    }
}

/// kill(2) with a raw signal number, so real-time signals can be sent too. A negative
/// `target` is a process group, as with kill(2).
pub fn send(target: Pid, signal: Signal) -> nix::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory.
    let result = unsafe { libc::kill(target.as_raw(), signal.raw()) };
    nix::errno::Errno::result(result).map(drop)
}

/// `RTMIN`, `RTMIN+N`, `RTMAX`, `RTMAX-N` (already upper-case, without `SIG`).
fn parse_realtime(bare: &str) -> Option<Result<Signal, String>> {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let (base, rest, sign) = if let Some(rest) = bare.strip_prefix("RTMIN") {
        (min, rest, 1)
    } else if let Some(rest) = bare.strip_prefix("RTMAX") {
        (max, rest, -1)
    } else {
        return None;
    };
    let offset = match rest.strip_prefix(if sign > 0 { '+' } else { '-' }) {
        None if rest.is_empty() => 0,
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse::<i32>().unwrap_or(i32::MAX)
        }
        _ => {
            return Some(Err(format!(
                "real-time signals are written RTMIN, RTMIN+N, RTMAX or RTMAX-N (N 0-{})",
                max - min
            )));
        }
    };
    if offset > max - min {
        return Some(Err(format!(
            "real-time signal offsets go from 0 to {} (SIGRTMIN is {min}, SIGRTMAX {max})",
            max - min
        )));
    }
    Some(Ok(Signal(base + sign * offset)))
}

impl FromStr for Signal {
    type Err = String;

    fn from_str(text: &str) -> Result<Signal, String> {
        let trimmed = text.trim();
        if let Ok(number) = trimmed.parse::<i32>() {
            return Signal::from_raw(number).ok_or_else(|| {
                format!(
                    "signal number {number} is outside 1-31 and {}-{}",
                    libc::SIGRTMIN(),
                    libc::SIGRTMAX()
                )
            });
        }
        let upper = trimmed.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Some(realtime) = parse_realtime(bare) {
            return realtime;
        }
        NAMES
            .iter()
            .find(|(name, _)| *name == bare)
            .map(|(_, number)| Signal(*number))
            .ok_or_else(|| {
                "not a signal name or number (e.g. TERM, SIGTERM, 15, RTMIN+3)".to_string()
            })
    }
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
    fn realtime_signals_have_kill_l_names() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        assert_eq!((min, max), (34, 64), "glibc's real-time range");
        for (text, number) in [
            ("RTMIN", 34),
            ("SIGRTMIN+3", 37),
            ("rtmin+3", 37),
            ("RTMIN+30", 64),
            ("SIGRTMAX", 64),
            ("RTMAX-1", 63),
            ("RTMAX-30", 34),
            ("40", 40),
            ("64", 64),
        ] {
            assert_eq!(text.parse::<Signal>(), Ok(Signal(number)), "{text}");
        }
        for text in [
            "RTMIN+31", "RTMAX-31", "RTMIN-1", "RTMAX+1", "RTMIN+", "RTMIN+x", "32", "33", "65",
        ] {
            assert!(text.parse::<Signal>().is_err(), "{text}");
        }
        assert_eq!(Signal(34).to_string(), "SIGRTMIN");
        assert_eq!(Signal(37).short_name(), "RTMIN+3");
        assert_eq!(Signal(40).to_string(), "SIGRTMIN+6");
        assert_eq!(Signal(49).short_name(), "RTMIN+15");
        assert_eq!(Signal(50).short_name(), "RTMAX-14");
        assert_eq!(Signal(63).to_string(), "SIGRTMAX-1");
        assert_eq!(Signal(64).short_name(), "RTMAX");
        assert!(Signal(40).is_catchable() && Signal(40).is_realtime() && !Signal(40).is_fault());
        assert_eq!(Signal::all().count(), 31 + 31);
        assert_eq!(Signal::from_raw(32), None);
        assert_eq!(
            Signal::from_kernel(32).map(|s| s.to_string()),
            Some("signal 32".into())
        );
        assert_eq!(
            "RTMIN+3:USR1".parse::<SignalRule>().map(|r| r.from),
            Ok(Signal(37))
        );
    }

    #[test]
    fn send_delivers_realtime_signals() {
        // An ignored real-time signal sent to ourselves: kill(2) succeeds and nothing happens,
        // which nix's Signal enum could not even express.
        let signal = Signal(libc::SIGRTMAX());
        // SAFETY: SIG_IGN installs no code.
        unsafe { libc::signal(signal.raw(), libc::SIG_IGN) };
        let me = Pid::this();
        assert_eq!(send(me, signal), Ok(()));
        assert_eq!(
            send(Pid::from_raw(i32::MAX), signal),
            Err(nix::errno::Errno::ESRCH)
        );
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
