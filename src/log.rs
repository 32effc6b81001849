//! graceful-run's own log lines on stderr; the command's stdout and stderr are never touched.
//!
//! Each line is written with a single write(2), so lines from graceful-run and from the
//! command interleave whole. Lines about a generation carry its number and pid. In JSON mode
//! every line is one object with a timestamp (text mode has none: Docker, journald and
//! Kubernetes add their own).
//!
//! graceful-run does not let its own logging stall the supervisor, whatever stderr is:
//! - a pipe or a socket (Docker, journald, `2>&1 | ...`) can fill up when its reader stalls;
//!   a blocked write would stop the supervisor from handling signals and enforcing stop
//!   timeouts. Lines are written with `RWF_NOWAIT` (per call: the file description's
//!   O_NONBLOCK, shared with the command, is left alone); a line that does not fit is dropped
//!   and counted, and the count is reported once lines get through again.
//! - a terminal: SIGTTOU is blocked around the write. When graceful-run has handed the
//!   terminal to the command and the terminal has TOSTOP set, a write from the background
//!   would otherwise raise SIGTTOU, whose handler returns, and the kernel would restart the
//!   write forever. With the signal blocked the kernel lets the write through.
//! - anything else (a file, /dev/null): a plain write. (A terminal whose output is suspended
//!   with Ctrl-S, or a file on a hung network mount, can still block it: nothing short of a
//!   logging thread avoids that, and a person at that terminal is there to press Ctrl-Q.)
//!
//! Once a write fails with EPIPE (the reader of a pipe or socket is gone for good), nothing is
//! written to stderr again. Each such write also raises SIGPIPE, which graceful-run receives
//! as an event and, with `-v`, logs: writing on would turn one broken pipe into a 100% CPU
//! loop of signals and log lines that starves TERM.

use std::fmt::{self, Write as _};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::libc;

use crate::policy::LogFormat;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

struct Logger {
    max: Level,
    format: LogFormat,
    stderr: Stderr,
}

/// What fd 2 is, which decides how to write to it without blocking the supervisor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stderr {
    /// A pipe or socket, whose reader may stall.
    Stream,
    Terminal,
    Other,
}

impl Stderr {
    fn detect() -> Stderr {
        let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
            return Stderr::Other;
        };
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFIFO | libc::S_IFSOCK => Stderr::Stream,
            _ if nix::unistd::isatty(std::io::stderr()).unwrap_or(false) => Stderr::Terminal,
            _ => Stderr::Other,
        }
    }
}

/// Lines dropped because stderr was full, not yet reported.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Set at the first EPIPE on stderr: from then on nothing is written (see the module docs).
static BROKEN: AtomicBool = AtomicBool::new(false);

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets the level and format once, after the flags are parsed. Lines logged before (flag
/// errors) use the defaults.
pub fn init(max: Level, format: LogFormat) {
    let _ = LOGGER.set(Logger {
        max,
        format,
        stderr: Stderr::detect(),
    });
}

fn logger() -> &'static Logger {
    LOGGER.get_or_init(|| Logger {
        max: Level::Info,
        format: LogFormat::Text,
        stderr: Stderr::detect(),
    })
}

pub fn enabled(level: Level) -> bool {
    level <= logger().max
}

/// What a line is about: a generation of the command, a hook, or graceful-run itself.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Subject {
    pub generation: Option<u64>,
    /// The worker's index, when the command runs as several workers (`--workers`).
    pub worker: Option<u32>,
    pub pid: Option<i32>,
}

impl Subject {
    pub const NONE: Subject = Subject {
        generation: None,
        worker: None,
        pid: None,
    };

    pub fn generation(generation: u64, pid: i32) -> Subject {
        Subject {
            generation: Some(generation),
            worker: None,
            pid: Some(pid),
        }
    }

    /// A generation whose pid is not known (yet), e.g. for its notify socket.
    pub fn generation_only(generation: u64) -> Subject {
        Subject {
            generation: Some(generation),
            worker: None,
            pid: None,
        }
    }

    pub fn pid(pid: i32) -> Subject {
        Subject {
            generation: None,
            worker: None,
            pid: Some(pid),
        }
    }
}

pub fn write(level: Level, subject: Subject, message: fmt::Arguments<'_>) {
    if !enabled(level) || BROKEN.load(Ordering::Relaxed) {
        return;
    }
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let lines = if dropped == 1 {
            "line was"
        } else {
            "lines were"
        };
        let note = format_args!("{dropped} log {lines} dropped: stderr was full");
        emit(&format_line(Level::Warn, Subject::NONE, note));
    }
    emit(&format_line(level, subject, message));
}

fn format_line(level: Level, subject: Subject, message: fmt::Arguments<'_>) -> String {
    match logger().format {
        LogFormat::Text => text_line(level, subject, message),
        LogFormat::Json => json_line(level, subject, message),
    }
}

fn text_line(level: Level, subject: Subject, message: fmt::Arguments<'_>) -> String {
    let mut line = String::from("graceful-run: ");
    match (subject.generation, subject.worker) {
        (Some(generation), Some(worker)) => {
            let _ = write!(line, "gen {generation} worker {worker}");
        }
        (Some(generation), None) => {
            let _ = write!(line, "gen {generation}");
        }
        // A worker's slot between two processes (a crash backoff): its index alone.
        (None, Some(worker)) => {
            let _ = write!(line, "worker {worker}");
        }
        (None, None) => {}
    }
    let named = subject.generation.is_some() || subject.worker.is_some();
    match (named, subject.pid) {
        (true, Some(pid)) => {
            let _ = write!(line, " (pid {pid}): ");
        }
        (true, None) => line.push_str(": "),
        (false, Some(pid)) => {
            let _ = write!(line, "pid {pid}: ");
        }
        (false, None) => {}
    }
    if matches!(level, Level::Error | Level::Warn) {
        line.push_str(level.name());
        line.push_str(": ");
    }
    let start = line.len();
    let _ = line.write_fmt(message);
    // One line per message whatever it echoes (a command's path, a STATUS= from the command):
    // control characters would split it or drive the terminal.
    if line[start..].chars().any(char::is_control) {
        let escaped = crate::text::escape_controls(&line[start..]).to_string();
        line.truncate(start);
        line.push_str(&escaped);
    }
    line.push('\n');
    line
}

fn json_line(level: Level, subject: Subject, message: fmt::Arguments<'_>) -> String {
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    let mut line = format!("{{\"time\":\"{time}\",\"level\":\"{}\"", level.name());
    if let Some(generation) = subject.generation {
        let _ = write!(line, ",\"gen\":{generation}");
    }
    if let Some(worker) = subject.worker {
        let _ = write!(line, ",\"worker\":{worker}");
    }
    if let Some(pid) = subject.pid {
        let _ = write!(line, ",\"pid\":{pid}");
    }
    line.push_str(",\"msg\":\"");
    push_json_escaped(&mut line, &message.to_string());
    line.push_str("\"}\n");
    line
}

pub(crate) fn push_json_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Writes one line to stderr without ever blocking on a stalled reader.
fn emit(line: &str) {
    if BROKEN.load(Ordering::Relaxed) {
        return;
    }
    match logger().stderr {
        Stderr::Stream => {
            if !write_without_waiting(line.as_bytes()) {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        Stderr::Terminal => crate::process::with_ttou_blocked(|| write_all(line.as_bytes())),
        Stderr::Other => write_all(line.as_bytes()),
    }
}

/// false when the line was dropped because the pipe or socket is full.
fn write_without_waiting(line: &[u8]) -> bool {
    let mut rest = line;
    while !rest.is_empty() {
        let iov = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: one iovec over a live buffer; offset -1 writes at the current position, as
        // write(2) does, which is the only meaning a pipe or socket has.
        let written = unsafe { libc::pwritev2(libc::STDERR_FILENO, &iov, 1, -1, libc::RWF_NOWAIT) };
        match Errno::result(written) {
            Ok(n) => rest = &rest[n as usize..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if rest.len() == line.len() => return false,
            // Part of the line went out (a stream socket): finish it rather than garble the
            // next one. Or a kernel without RWF_NOWAIT for this kind of file: write as usual.
            Err(Errno::EAGAIN | Errno::EOPNOTSUPP | Errno::EINVAL) => {
                write_all(rest);
                return true;
            }
            Err(Errno::EPIPE) => {
                BROKEN.store(true, Ordering::Relaxed);
                return true;
            }
            // A closed stderr must not stop the service.
            Err(_) => return true,
        }
    }
    true
}

fn write_all(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(std::io::stderr(), bytes) {
            Ok(0) => break,
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => continue,
            Err(Errno::EPIPE) => {
                BROKEN.store(true, Ordering::Relaxed);
                break;
            }
            // A closed stderr must not stop the service.
            Err(_) => break,
        }
    }
}

#[macro_export]
macro_rules! error {
    ($subject:expr, $($arg:tt)*) => {
        $crate::log::write($crate::log::Level::Error, $subject, format_args!($($arg)*))
    };
}

#[macro_export]
macro_rules! warn {
    ($subject:expr, $($arg:tt)*) => {
        $crate::log::write($crate::log::Level::Warn, $subject, format_args!($($arg)*))
    };
}

#[macro_export]
macro_rules! info {
    ($subject:expr, $($arg:tt)*) => {
        $crate::log::write($crate::log::Level::Info, $subject, format_args!($($arg)*))
    };
}

#[macro_export]
macro_rules! debug {
    ($subject:expr, $($arg:tt)*) => {
        $crate::log::write($crate::log::Level::Debug, $subject, format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_name_generation_and_pid() {
        let line = text_line(
            Level::Info,
            Subject::generation(2, 42),
            format_args!("ready"),
        );
        assert_eq!(line, "graceful-run: gen 2 (pid 42): ready\n");
        let line = text_line(Level::Warn, Subject::NONE, format_args!("odd"));
        assert_eq!(line, "graceful-run: warning: odd\n");
    }

    #[test]
    fn json_lines_escape_and_carry_fields() {
        let line = json_line(
            Level::Error,
            Subject::generation(3, 7),
            format_args!("say \"hi\"\n"),
        );
        assert!(
            line.ends_with(
                "\"level\":\"error\",\"gen\":3,\"pid\":7,\"msg\":\"say \\\"hi\\\"\\n\"}\n"
            )
        );
        assert!(line.starts_with("{\"time\":\""));
    }
}
