//! The `graceful-run ctl` command: connect, send one request, print what comes back, and
//! exit with a status a deploy script can branch on:
//!
//! - 0: done (status printed; restart or stop begun, or with `--wait` finished);
//! - 1: the operation failed (the new generation exited before it was ready, or was not
//!   ready in time; graceful-run ended during a restart);
//! - 2: `--timeout` passed first (the operation itself goes on);
//! - 125: a usage error, no graceful-run to talk to, or a refusal (by graceful-run, or by
//!   this client of a server or a pid file it does not trust).
//!
//! The client is a plain blocking program: a socket with read timeouts is all it needs. It
//! trusts only what it can check (see the module docs of `control`): the socket's listener
//! must be the pid asked about and run as root or as the client's user; a `--pid-file` must
//! be a regular file that only root or the client's user can have written. Replies are read
//! up to [`MAX_REPLY`] bytes a line: a server that sends more is not graceful-run.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use super::protocol::{Received, Request};

/// How long a request without `--timeout` may take: a status or the start of a restart is
/// answered at once by a graceful-run that works at all.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest reply line read: a status of many generations is a few kilobytes.
pub const MAX_REPLY: usize = 1 << 20;

/// The longest pid file read: a pid and a newline.
const MAX_PID_FILE: u64 = 64;

pub const FAILED: i32 = 1;
pub const TIMED_OUT: i32 = 2;
pub const UNUSABLE: i32 = 125;

#[derive(Parser, Debug)]
#[command(
    name = "graceful-run ctl",
    bin_name = "graceful-run ctl",
    disable_help_subcommand = true,
    about = "Ask a running graceful-run for its status, a restart or a stop",
    after_help = "Exit status: 0 done, 1 the operation failed, 2 timed out waiting (the \
                  operation goes on), 125 usage error, no graceful-run found, or refused.\n\
                  Without --pid or --pid-file: pid 1 (graceful-run as a container's init).\n\
                  To run a program named ctl under graceful-run: graceful-run -- ctl ..."
)]
struct Cli {
    /// The graceful-run to talk to, as a pid in this pid namespace
    #[arg(long, value_name = "PID", conflicts_with = "pid_file")]
    pid: Option<u32>,
    /// Read the pid from graceful-run's --pid-file
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Each generation (number, pid, state, since when, how it became ready), the
    /// listeners, restarts so far and the last exit
    Status {
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Start a restart: a new generation on the same sockets, the old one stopped once the
    /// new one is ready
    Restart(Wait),
    /// Stop the service gracefully
    Stop(Wait),
    /// Run N workers from now on (1 to 1024): new ones start as --max-surge allows, the
    /// highest ones beyond N are drained and stopped
    Scale {
        /// How many workers
        #[arg(value_name = "N", value_parser = parse_workers, allow_negative_numbers = true)]
        workers: u32,
    },
}

/// A worker count for `scale`: 1 to 1024.
fn parse_workers(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=crate::supervisor::core::MAX_WORKERS).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of workers from 1 to {}",
            crate::supervisor::core::MAX_WORKERS
        )),
    }
}

#[derive(Args, Debug)]
struct Wait {
    /// Return once it is over: for restart, 0 when the new generation took over and 1 with
    /// the reason when it failed; for stop, once graceful-run has exited
    #[arg(long)]
    wait: bool,
    /// Give up waiting after DURATION (exit 2); the operation itself goes on
    #[arg(long, value_name = "DURATION", requires = "wait", value_parser = crate::cli::parse_duration)]
    timeout: Option<Duration>,
}

/// Runs `graceful-run ctl`; `args` is the command line from `ctl` on (`args[0]` stands for
/// the program name and is not read). Returns the exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    run(args, &mut io::stdout().lock(), &mut io::stderr().lock())
}

/// [`main`] with its output streams given.
pub fn run(args: Vec<OsString>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let message = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let text = e.render().to_string();
                    let _ = write!(out, "{text}");
                    if !text.ends_with('\n') {
                        let _ = writeln!(out);
                    }
                    return 0;
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                | ErrorKind::MissingSubcommand => {
                    "no request given: status, restart, stop or scale (see graceful-run ctl --help)"
                        .to_string()
                }
                _ => one_line(&e.render().to_string()),
            };
            let _ = writeln!(err, "graceful-run ctl: {message}");
            return UNUSABLE;
        }
    };
    match execute(&cli, out) {
        Ok(code) => code,
        Err((code, message)) => {
            let _ = writeln!(err, "graceful-run ctl: {message}");
            code
        }
    }
}

/// clap's first paragraph, on one line, without its `error: ` prefix.
fn one_line(rendered: &str) -> String {
    let joined: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = joined.join(" ");
    let text = joined.strip_prefix("error: ").unwrap_or(&joined);
    format!("{text} (see graceful-run ctl --help)")
}

type Failure = (i32, String);

fn execute(cli: &Cli, out: &mut dyn Write) -> Result<i32, Failure> {
    let pid = target_pid(cli)?;
    let (request, timeout) = match &cli.action {
        Action::Status { json } => (Request::Status { json: *json }, None),
        Action::Restart(w) => (Request::Restart { wait: w.wait }, w.timeout),
        Action::Stop(w) => (Request::Stop { wait: w.wait }, w.timeout),
        Action::Scale { workers } => (Request::Scale { workers: *workers }, None),
    };
    let waits = matches!(
        request,
        Request::Restart { wait: true } | Request::Stop { wait: true }
    );
    // Waiting without --timeout waits as long as graceful-run works on it (its own
    // --ready-timeout and stop timeout bound that).
    let deadline = match (timeout, waits) {
        (Some(timeout), _) => Instant::now().checked_add(timeout),
        (None, false) => Instant::now().checked_add(DEFAULT_TIMEOUT),
        (None, true) => None,
    };
    // Opened before anything is asked, so that the process waited for is the one asked,
    // whatever happens to the pid later.
    let exit_watch = ExitWatch::open(pid);
    let stream = connect(pid)?;
    // A refused client may find the connection closed before it could send: the refusal
    // is still there to be read, and says more than the write's EPIPE.
    let sent = (&stream).write_all(request.to_line().as_bytes());
    let mut reader = BufReader::new(&stream);
    let mut accepted = false;
    loop {
        let line = match read_line(&stream, &mut reader, deadline) {
            Ok(Some(line)) => line,
            Ok(None) => {
                if let Err(e) = sent {
                    return Err((
                        UNUSABLE,
                        format!("cannot send to graceful-run (pid {pid}): {e}"),
                    ));
                }
                // graceful-run closed the connection without its last word: it was killed
                // (or crashed). A stop ends with `done` when it completes.
                return match (request, accepted) {
                    (Request::Stop { .. }, true) => Err((
                        FAILED,
                        format!(
                            "graceful-run (pid {pid}) ended before it confirmed the stop (was it \
                             killed?)"
                        ),
                    )),
                    (Request::Restart { .. }, true) => Err((
                        FAILED,
                        format!("graceful-run (pid {pid}) ended before the restart finished"),
                    )),
                    _ => Err((
                        FAILED,
                        format!("graceful-run (pid {pid}) closed the connection without answering"),
                    )),
                };
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out(request, timeout));
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err((UNUSABLE, format!("graceful-run (pid {pid}): {e}")));
            }
            Err(e) => {
                let code = if sent.is_err() { UNUSABLE } else { FAILED };
                return Err((code, format!("reading from graceful-run (pid {pid}): {e}")));
            }
        };
        match Received::parse(&line) {
            Some(Received::Status(text)) => {
                let _ = writeln!(out, "{text}");
                return Ok(0);
            }
            Some(Received::Accepted) if waits => accepted = true,
            Some(Received::Accepted) => return Ok(0),
            Some(Received::Done) if matches!(request, Request::Stop { .. }) => {
                // About to exit: wait until it has.
                return match exit_watch.wait(deadline) {
                    Ok(()) => Ok(0),
                    Err(()) => Err(timed_out(request, timeout)),
                };
            }
            Some(Received::Done) => return Ok(0),
            Some(Received::Failed(why)) => {
                return Err((FAILED, format!("{} failed: {why}", verb(request))));
            }
            Some(Received::Refused(why)) => {
                return Err((
                    UNUSABLE,
                    format!("refused by graceful-run (pid {pid}): {why}"),
                ));
            }
            Some(Received::Error(why)) => {
                return Err((UNUSABLE, format!("graceful-run (pid {pid}) says: {why}")));
            }
            None => {
                return Err((
                    UNUSABLE,
                    format!(
                        "graceful-run (pid {pid}) sent an unknown reply '{}'",
                        line.escape_debug()
                    ),
                ));
            }
        }
    }
}

fn timed_out(request: Request, timeout: Option<Duration>) -> Failure {
    let what = match request {
        Request::Status { .. } => "the status",
        Request::Restart { .. } => "the restart (it goes on)",
        Request::Stop { .. } => "the stop (it goes on)",
        Request::Scale { .. } => "the scale request",
    };
    let after = timeout.unwrap_or(DEFAULT_TIMEOUT);
    (
        TIMED_OUT,
        format!(
            "timed out after {} waiting for {what}",
            humantime::format_duration(after)
        ),
    )
}

fn verb(request: Request) -> &'static str {
    match request {
        Request::Status { .. } => "status",
        Request::Restart { .. } => "restart",
        Request::Stop { .. } => "stop",
        Request::Scale { .. } => "scale",
    }
}

/// `--pid`, the pid in `--pid-file`, or 1.
fn target_pid(cli: &Cli) -> Result<u32, Failure> {
    if let Some(pid) = cli.pid {
        return Ok(pid);
    }
    let Some(path) = &cli.pid_file else {
        return Ok(1);
    };
    let text = read_trusted_pid_file(path)
        .map_err(|why| (UNUSABLE, format!("--pid-file '{}': {why}", path.display())))?;
    text.trim().parse().map_err(|_| {
        (
            UNUSABLE,
            format!(
                "--pid-file '{}' holds no pid: '{}'",
                path.display(),
                text.trim().escape_debug()
            ),
        )
    })
}

/// The text of a pid file that only root or the caller's user can have written: a regular
/// file (opened without following a symlink, and without blocking on a FIFO), owned by one
/// of them, writable by no one else. Anyone else could name any process in it.
fn read_trusted_pid_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => "is a symbolic link; not following it".to_string(),
            _ => e.to_string(),
        })?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_file() {
        return Err("is not a regular file".to_string());
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "belongs to uid {}, neither root nor you: not trusting the pid in it",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "can be written by others (mode {:04o}): not trusting the pid in it",
            meta.mode() & 0o7777
        ));
    }
    let mut text = String::new();
    file.take(MAX_PID_FILE)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

fn connect(pid: u32) -> Result<UnixStream, Failure> {
    let hint = if pid == 1 {
        " (pass --pid PID or --pid-file PATH when graceful-run is not pid 1)"
    } else {
        ""
    };
    let name = super::find_socket(pid).map_err(|e| {
        let why = match e {
            super::FindError::NoProcess => format!("no process with pid {pid}{hint}"),
            super::FindError::NotAllowed => match process_uid(pid) {
                Some(uid) if uid != nix::unistd::geteuid().as_raw() => format!(
                    "pid {pid} runs as uid {uid}, whose descriptors may not be looked at from \
                     here: run ctl as that user (only root and its own user may control it){hint}"
                ),
                _ => format!(
                    "cannot look at pid {pid}'s descriptors (permission denied): not a \
                     graceful-run that takes ctl requests from here{hint}"
                ),
            },
            super::FindError::NoSocket => {
                format!("pid {pid} is not a graceful-run that takes ctl requests{hint}")
            }
            super::FindError::Other(e) => format!("cannot look at pid {pid}'s sockets: {e}"),
        };
        (UNUSABLE, why)
    })?;
    let address = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| (UNUSABLE, format!("control socket name '{name}': {e}")))?;
    let stream = UnixStream::connect_addr(&address).map_err(|e| {
        let elsewhere = if other_network_namespace(pid) {
            ": it is in another network namespace; run ctl inside it (docker exec C \
             graceful-run ctl --pid 1, or nsenter --target PID --all)"
        } else {
            ""
        };
        (
            UNUSABLE,
            format!("cannot connect to the control socket of pid {pid} ({e}){elsewhere}"),
        )
    })?;
    verify_server(&stream, pid)?;
    Ok(stream)
}

/// The effective uid of `pid`, from /proc/PID/status (readable by all).
fn process_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The listener must be the process asked about, as seen from here (the kernel reports 0
/// for a process outside our pid namespace), running as root or as us: anyone in the
/// network namespace could otherwise answer in graceful-run's stead.
fn verify_server(stream: &UnixStream, pid: u32) -> Result<(), Failure> {
    let owner = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| {
            (
                UNUSABLE,
                format!(
                    "cannot read who holds the control socket of pid {pid} ({}): not talking to it",
                    e.desc()
                ),
            )
        })?;
    let me = nix::unistd::geteuid().as_raw();
    let why = if owner.pid() <= 0 {
        "a process outside this pid namespace".to_string()
    } else if owner.pid() as u32 != pid {
        format!("pid {}", owner.pid())
    } else if owner.uid() != 0 && owner.uid() != me {
        format!(
            "uid {}, neither root nor you (to control a graceful-run of another user, run ctl \
             as that user)",
            owner.uid()
        )
    } else {
        return Ok(());
    };
    Err((
        UNUSABLE,
        format!("the control socket of pid {pid} is held by {why}: not talking to it"),
    ))
}

/// Whether `pid` lives in another network namespace than this process (abstract socket
/// names are per network namespace).
fn other_network_namespace(pid: u32) -> bool {
    let ours = nix::sys::stat::stat("/proc/self/ns/net");
    let theirs = nix::sys::stat::stat(format!("/proc/{pid}/ns/net").as_str());
    matches!((ours, theirs), (Ok(a), Ok(b)) if a.st_ino != b.st_ino || a.st_dev != b.st_dev)
}

/// The end of the graceful-run asked to stop, seen through a pidfd opened before the
/// request (so it is that process, whatever the pid names later); without pidfds (Linux
/// before 5.3) the connection's end is all there is.
struct ExitWatch(Option<std::os::fd::OwnedFd>);

impl ExitWatch {
    fn open(pid: u32) -> ExitWatch {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
        // SAFETY: a non-negative result is a descriptor that nothing else owns.
        ExitWatch((fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Waits until the process has exited (its pidfd reads ready), at most until `deadline`.
    fn wait(&self, deadline: Option<Instant>) -> Result<(), ()> {
        use std::os::fd::AsFd;
        let Some(fd) = &self.0 else {
            return Ok(());
        };
        loop {
            let timeout = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let millis = left.as_millis().min(i32::MAX as u128) as i32;
                    nix::poll::PollTimeout::try_from(millis).map_err(drop)?
                }
                None => nix::poll::PollTimeout::NONE,
            };
            let mut fds = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) => return Err(()),
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return Ok(()),
            }
        }
    }
}

/// The next reply line (without its newline); `None` at end of stream.
fn read_line(
    stream: &UnixStream,
    reader: &mut BufReader<&UnixStream>,
    deadline: Option<Instant>,
) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let timeout = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                Some(left)
            }
            None => None,
        };
        stream.set_read_timeout(timeout)?;
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(None);
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(end) if line.len() + end <= MAX_REPLY => {
                line.extend_from_slice(&available[..end]);
                reader.consume(end + 1);
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            Some(_) => line.resize(MAX_REPLY + 1, 0),
            None => {
                let n = available.len();
                line.extend_from_slice(available);
                reader.consume(n);
            }
        }
        if line.len() > MAX_REPLY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a reply longer than {MAX_REPLY} bytes: not graceful-run"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> (i32, String, String) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let args = std::iter::once("ctl")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        let code = run(args, &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    #[test]
    fn bad_usage_is_one_line_and_125() {
        for args in [
            &["restart", "--timeout", "5s"][..],
            &["--pid", "abc", "status"],
            &["restart", "--wait", "--timeout", "soon"],
            &["--pid", "1", "--pid-file", "/x", "status"],
            &["reboot"],
            &[],
        ] {
            let (code, out, err) = run_args(args);
            assert_eq!(code, UNUSABLE, "{args:?}: {err}");
            assert_eq!(out, "", "{args:?}");
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
            assert!(err.starts_with("graceful-run ctl: "), "{args:?}: {err}");
        }
        let (_, _, err) = run_args(&["restart", "--wait", "--timeout", "soon"]);
        assert!(err.contains("--timeout") && err.contains("soon"), "{err}");
        let (_, _, err) = run_args(&[]);
        assert_eq!(
            err,
            "graceful-run ctl: no request given: status, restart, stop or scale (see graceful-run ctl \
             --help)\n"
        );
    }

    #[test]
    fn help_goes_to_stdout_and_documents_ctl_as_a_program() {
        let (code, out, _) = run_args(&["--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("graceful-run -- ctl"), "{out}");
    }

    #[test]
    fn a_pid_file_without_a_pid_is_named() {
        let path = std::env::temp_dir().join(format!("gr-ctl-pidfile-{}", std::process::id()));
        std::fs::write(&path, "nonsense\n").expect("the temp dir is writable");
        let (code, _, err) = run_args(&["--pid-file", path.to_str().expect("utf-8"), "status"]);
        let _ = std::fs::remove_file(&path);
        assert_eq!(code, UNUSABLE);
        assert!(err.contains("holds no pid: 'nonsense'"), "{err}");
    }
}
