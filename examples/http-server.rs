//! A small HTTP/1.1 server (with a UDP echo service on the side) that behaves the way a server
//! under graceful-run should: it serves the listening sockets it is handed, says when it is
//! ready, and on SIGTERM finishes what it started without failing a single request. It is
//! meant to be copied; it is also the fixture of graceful-run's integration tests and
//! benchmarks.
//!
//! ```text
//! cargo build --example http-server
//! graceful-run -l 8080 --ready notify -- target/debug/examples/http-server
//! curl http://127.0.0.1:8080/            # hello from pid 1234
//! kill -HUP <pid of graceful-run>        # a new generation takes over; no request fails
//! ```
//!
//! Standalone: `target/debug/examples/http-server --listen 127.0.0.1:8080`.
//!
//! Endpoints: `GET /` (`hello from pid N`), `GET /pid`, `GET /slow?ms=N` (answers after N ms,
//! 1000 by default), anything else is 404. Every response carries `X-Pid`. A datagram socket
//! answers each datagram with `pid N: <the datagram>`.
//!
//! Flags: `--listen ADDR` (repeatable; used only when no socket is inherited),
//! `--ready-delay MS` (simulates a slow start: accept and report readiness only after MS),
//! `--no-ready` (serve, but never send READY=1), `--sloppy-stop MS` (for tests: stop the way
//! hypercorn, uvicorn and Starman do, see below).
//!
//! # Sockets
//!
//! Sockets come from systemd's socket-activation protocol (`LISTEN_PID`, `LISTEN_FDS`,
//! `LISTEN_FDNAMES`, checked exactly as `sd_listen_fds(3)` checks them), else from
//! Server::Starter's `SERVER_STARTER_PORT`, else from `--listen`. What each fd is comes from
//! the kernel (`SO_TYPE`, `getsockname`), not from its name: stream sockets serve HTTP,
//! datagram sockets echo.
//!
//! # Shutdown, and why it works this way
//!
//! During a restart the old and the new generation hold the *same* listening sockets, and so
//! does graceful-run. The listening socket's open file description (its `O_NONBLOCK` flag
//! included) is therefore shared state that this process does not own:
//!
//! - It never sets `O_NONBLOCK` on a listener, and never calls `shutdown(2)` on one: the flag
//!   would change the other holders' socket under their feet, and `shutdown` would stop the
//!   socket for everybody, the new generation included. Stopping to accept means closing
//!   *our* fd, which leaves the socket listening for the others.
//! - Since the flag may be set or clear at any moment, the acceptor waits in `poll()` on the
//!   listener and on a shutdown pipe, then calls `accept4()`. Another process may take the
//!   connection first: then `accept4()` fails with EAGAIN (non-blocking socket) or blocks
//!   until the next connection (blocking socket). To stop an acceptor that sits in a blocking
//!   `accept4()`, shutdown sends its thread a signal whose handler is installed without
//!   `SA_RESTART`, so `accept4()` fails with EINTR. A signal sent just before the thread
//!   enters `accept4()` is lost, so it is sent again until the thread has exited.
//!
//! On SIGTERM or SIGINT the server stops accepting (the new generation is ready and takes
//! every new connection) and then lets each connection finish, as Go's
//! `http.Server.Shutdown` does:
//!
//! - A request being processed completes and is answered normally, with `Connection: close`.
//! - An idle keep-alive connection is closed, but not at once: a client that has just read a
//!   response may already have sent its next request (load generators and connection pools
//!   do so immediately), and closing the socket under that request would fail it. So an idle
//!   connection gets a short grace (200 ms); a request that arrives in it is served, with
//!   `Connection: close`.
//! - Every close is a "lingering" one: FIN first, then the server reads and discards what
//!   the client still sends until the client closes (at most 500 ms). Closing a TCP socket
//!   with unread input makes the kernel send RST, which can destroy a response the client
//!   has not read yet.
//!
//! When no connection is left the server exits 0. A second SIGTERM or SIGINT exits at once
//! with status 1. SIGHUP is ignored: restarts are graceful-run's job.
//!
//! `--sloppy-stop MS` makes it a server that accepts after its stop signal, for the tests of
//! graceful-run's steering (issue 16): after SIGTERM it keeps accepting for MS milliseconds
//! and closes every connection it accepts then without reading or answering, as hypercorn,
//! uvicorn and Starman do for a moment. With a listener shared by every generation, requests
//! queued there are lost; with a listener of its own that graceful-run steers new
//! connections away from before the stop signal, nothing is left to accept.

use std::env;
use std::fmt;
use std::io::{self, IoSliceMut, Write as _};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::thread::JoinHandleExt;
use std::process::{self, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, SockFlag, SockType, SockaddrLike, SockaddrStorage, UnixAddr,
    accept4, getsockname, getsockopt, recv, recvmsg, send, sendto, setsockopt, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};
use nix::unistd::{pipe2, write};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use signal_hook::low_level::signal_name;

const USAGE: &str = "usage: http-server [--listen ADDR]... [--ready-delay MS] [--no-ready] \
                     [--sloppy-stop MS] (or inherit sockets via LISTEN_FDS or \
                     SERVER_STARTER_PORT)";

/// sd_listen_fds(3)'s SD_LISTEN_FDS_START: passed sockets start at fd 3.
const LISTEN_FDS_START: RawFd = 3;
/// A keep-alive connection with no request for this long is closed; a client that stops
/// sending or reading mid-request is given up on after this long too.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Once shutdown begins, how long an idle keep-alive connection waits for a request that may
/// already be on its way.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);
/// How long a closing connection waits for the client to close its side (Go's net/http
/// waits as long, as `rstAvoidanceDelay`).
const LINGER: Duration = Duration::from_millis(500);
/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;
const READ_CHUNK: usize = 4096;
const MAX_DATAGRAM: usize = 65536;
const DEFAULT_SLOW_MS: u64 = 1000;
const MAX_SLOW_MS: u64 = 600_000;
/// Interrupts a worker thread's blocking system call at shutdown. SIGURG is ignored by
/// default and nobody sends it on purpose (Go's runtime uses it the same way).
const WAKE_SIGNAL: Signal = Signal::SIGURG;
/// How long shutdown waits for a worker thread to exit before signalling it again.
const WAKE_RETRY: Duration = Duration::from_millis(10);
/// Pause after accept4() fails for lack of fds or memory; the connection stays queued.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Writes one line to stderr, prefixed with the program name and pid.
///
/// The line goes out in a single write(2): several processes (graceful-run, both generations)
/// usually share one stderr, and a line written in pieces could be interleaved with theirs.
/// A failed write is ignored, since a closed stderr must not stop the server.
macro_rules! log {
    ($($arg:tt)*) => {{
        let line = format!("http-server[{}]: {}\n", process::id(), format_args!($($arg)*));
        let _ = io::stderr().write_all(line.as_bytes());
    }};
}

fn main() -> ExitCode {
    let args = env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned());
    let options = match Options::parse(args) {
        Ok(options) => options,
        Err(problem) => return usage_error(&problem),
    };
    // Inherited fds are adopted before this process opens any fd of its own, so that a wrong
    // fd number in the environment cannot point at one of ours.
    let sockets = match open_sockets(&options) {
        Ok(sockets) if sockets.is_empty() => {
            return usage_error("no socket to serve: none inherited and no --listen");
        }
        Ok(sockets) => sockets,
        Err(error) => {
            log!("{error}");
            return ExitCode::FAILURE;
        }
    };
    match serve(sockets, options) {
        Ok(code) => code,
        Err(error) => {
            log!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(problem: &str) -> ExitCode {
    log!("{problem}; {USAGE}");
    ExitCode::from(2)
}

/// Runs the server, and handles signals on this (the main) thread until it has stopped.
///
/// The server itself runs on a thread of its own so that this thread is always free to notice
/// a second SIGTERM, even while shutdown waits for connections to finish.
fn serve(sockets: Vec<Socket>, options: Options) -> Result<ExitCode, String> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|error| format!("cannot handle signals: {error}"))?;
    install_wake_signal_handler()
        .map_err(|error| format!("cannot handle {WAKE_SIGNAL}: {error}"))?;
    let server = Arc::new(Server::new().map_err(|error| format!("pipe2: {error}"))?);
    for socket in &sockets {
        log!("{socket}: {}", socket.service);
    }

    let signals_handle = signals.handle();
    let lifecycle = {
        let server = Arc::clone(&server);
        thread::Builder::new()
            .name("lifecycle".into())
            .spawn(move || {
                run_server(&server, sockets, &options);
                // Ends the signal loop below: everything is done.
                signals_handle.close();
            })
            .map_err(|error| format!("cannot start a thread: {error}"))?
    };

    for signal in signals.forever() {
        let name = signal_name(signal).unwrap_or("signal");
        if signal == SIGHUP {
            log!("{name} ignored: graceful-run restarts by starting a new generation");
        } else if !server.shutdown.has_begun() {
            log!(
                "stopping: {} open ({name})",
                plural(server.open_connections(), "connection")
            );
            notify("STOPPING=1\n");
            server.shutdown.begin();
        } else {
            log!("{name} again: exiting at once");
            return Ok(ExitCode::FAILURE);
        }
    }
    // The lifecycle thread has closed `signals` as its very last act, so it is done.
    let _ = lifecycle.join();
    log!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Everything from "sockets are open" to "no connection is left".
fn run_server(server: &Arc<Server>, sockets: Vec<Socket>, options: &Options) {
    if !options.ready_delay.is_zero() {
        log!(
            "waiting {} ms before accepting (--ready-delay)",
            options.ready_delay.as_millis()
        );
        if server.shutdown.wait(Some(options.ready_delay)) {
            return; // Stopped before serving anything: nothing to drain.
        }
    }

    let count = sockets.len();
    // --sloppy-stop: copies of the HTTP listeners, to accept from after the stop signal.
    let sloppy: Vec<OwnedFd> = if options.sloppy_stop.is_zero() {
        Vec::new()
    } else {
        sockets
            .iter()
            .filter(|s| matches!(s.service, Service::Http))
            .filter_map(|s| s.fd.try_clone().ok())
            .collect()
    };
    let mut workers = Vec::with_capacity(count);
    for socket in sockets {
        match Worker::start(socket, server) {
            Ok(worker) => workers.push(worker),
            Err(error) => {
                // Serving only some of the sockets would go unnoticed; failing makes
                // graceful-run keep the previous generation instead.
                log!("cannot start a thread: {error}");
                process::exit(1);
            }
        }
    }
    if options.send_ready {
        notify(&format!(
            "READY=1\nSTATUS=serving on {}\n",
            plural(count, "socket")
        ));
        log!("ready");
    } else {
        log!("ready (READY=1 not sent: --no-ready)");
    }

    server.shutdown.wait(None);
    for worker in workers {
        worker.stop();
    }
    if !sloppy.is_empty() {
        accept_and_drop(&sloppy, options.sloppy_stop);
    }
    server.wait_until_drained();
}

/// `--sloppy-stop`: accepts on `listeners` for `period`, closing each connection unanswered.
fn accept_and_drop(listeners: &[OwnedFd], period: Duration) {
    // Another holder may take the connection poll saw, and then a blocking accept4 would wait
    // for the next one past `period`: a receive timeout bounds it. (It is the socket's, so
    // the other holders' blocking accepts get it too; this server copes with EAGAIN.)
    for listener in listeners {
        let _ = setsockopt(
            listener,
            sockopt::ReceiveTimeout,
            &TimeVal::milliseconds(50),
        );
    }
    let end = Instant::now() + period;
    let mut dropped = 0;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds: Vec<PollFd> = listeners
            .iter()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let timeout = PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, timeout).unwrap_or(0) <= 0 {
            continue;
        }
        for listener in listeners {
            let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
            if let Ok(fd) = accept4(listener.as_raw_fd(), flags) {
                // SAFETY: accept4 returned a new fd that nothing else owns.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                dropped += 1;
            }
        }
    }
    log!("--sloppy-stop: closed {dropped} connections accepted after the stop signal");
}

// ---------------------------------------------------------------------------------------------
// Command line

struct Options {
    listen: Vec<String>,
    ready_delay: Duration,
    send_ready: bool,
    sloppy_stop: Duration,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut options = Options {
            listen: Vec::new(),
            ready_delay: Duration::ZERO,
            send_ready: true,
            sloppy_stop: Duration::ZERO,
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--listen" => {
                    let address = args.next().ok_or("--listen needs an address")?;
                    options.listen.push(address);
                }
                "--ready-delay" => {
                    let ms = args.next().ok_or("--ready-delay needs milliseconds")?;
                    let ms = ms
                        .parse()
                        .map_err(|_| format!("--ready-delay {ms:?}: not a number of ms"))?;
                    options.ready_delay = Duration::from_millis(ms);
                }
                "--no-ready" => options.send_ready = false,
                "--sloppy-stop" => {
                    let ms = args.next().ok_or("--sloppy-stop needs milliseconds")?;
                    let ms = ms
                        .parse()
                        .map_err(|_| format!("--sloppy-stop {ms:?}: not a number of ms"))?;
                    options.sloppy_stop = Duration::from_millis(ms);
                }
                _ => return Err(format!("unknown argument {arg:?}")),
            }
        }
        Ok(options)
    }
}

// ---------------------------------------------------------------------------------------------
// Sockets

/// A socket this process serves, and what it serves on it.
struct Socket {
    fd: OwnedFd,
    /// As the supervisor named it: LISTEN_FDNAMES entry, SERVER_STARTER_PORT key, or "listen".
    name: String,
    /// What the kernel says it is bound to, e.g. `tcp 127.0.0.1:8080`.
    address: String,
    service: Service,
}

enum Service {
    Http,
    Echo,
}

impl fmt::Display for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fd, address, name) = (self.fd.as_raw_fd(), &self.address, &self.name);
        write!(f, "fd {fd} ({address}, name {name:?})")
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Http => "serving HTTP",
            Service::Echo => "echoing datagrams",
        })
    }
}

impl Socket {
    /// Asks the kernel what `fd` is, since nothing else can be trusted to say so.
    fn describe(fd: OwnedFd, name: String) -> Result<Socket, String> {
        let raw = fd.as_raw_fd();
        let sock_type = getsockopt(&fd, sockopt::SockType)
            .map_err(|error| format!("fd {raw} is not a usable socket: {error}"))?;
        let local: SockaddrStorage =
            getsockname(raw).map_err(|error| format!("fd {raw}: getsockname: {error}"))?;
        let scheme = match (local.family(), sock_type) {
            (Some(AddressFamily::Inet | AddressFamily::Inet6), SockType::Stream) => "tcp",
            (Some(AddressFamily::Inet | AddressFamily::Inet6), SockType::Datagram) => "udp",
            (Some(AddressFamily::Unix), SockType::Stream) => "unix",
            (Some(AddressFamily::Unix), SockType::Datagram) => "unixgram",
            (family, _) => {
                return Err(format!(
                    "fd {raw}: unsupported {sock_type:?} socket ({family:?})"
                ));
            }
        };
        let address = format!("{scheme} {local}");
        let service = match sock_type {
            SockType::Stream if getsockopt(&fd, sockopt::AcceptConn) == Ok(true) => Service::Http,
            SockType::Stream => return Err(format!("fd {raw} ({address}) is not listening")),
            _ => Service::Echo,
        };
        Ok(Socket {
            fd,
            name,
            address,
            service,
        })
    }
}

/// The sockets to serve: systemd's, else Server::Starter's, else bound from `--listen`.
fn open_sockets(options: &Options) -> Result<Vec<Socket>, String> {
    let mut inherited = systemd_fds();
    if inherited.is_empty() {
        inherited = server_starter_fds()?;
    }
    if inherited.is_empty() {
        return options.listen.iter().map(|address| bind(address)).collect();
    }
    if !options.listen.is_empty() {
        log!("--listen ignored: sockets were inherited");
    }
    adopt_all(&inherited)
}

/// The fds of systemd's socket-activation protocol, checked as sd_listen_fds(3) checks them:
/// the variables are meant for this process only if LISTEN_PID is its pid (otherwise they
/// were inherited from a parent that received them).
fn systemd_fds() -> Vec<(RawFd, String)> {
    if env::var_os("LISTEN_PID").is_none() && env::var_os("LISTEN_FDS").is_none() {
        return Vec::new();
    }
    let count = match listen_fds_count() {
        Ok(count) => count,
        Err(why) => {
            log!("ignoring LISTEN_FDS: {why}");
            return Vec::new();
        }
    };
    let fds = LISTEN_FDS_START..LISTEN_FDS_START + count;
    fds.zip(listen_fd_names(count)).collect()
}

fn listen_fds_count() -> Result<RawFd, String> {
    let pid = required_var("LISTEN_PID")?;
    let pid: u32 = pid
        .parse()
        .map_err(|_| format!("LISTEN_PID={pid:?} is not a pid"))?;
    if pid != process::id() {
        return Err(format!("LISTEN_PID={pid} is not this process"));
    }
    let count = required_var("LISTEN_FDS")?;
    count
        .parse::<RawFd>()
        .ok()
        .filter(|n| *n >= 0 && n.checked_add(LISTEN_FDS_START).is_some())
        .ok_or_else(|| format!("LISTEN_FDS={count:?} is not a number of fds"))
}

fn required_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|error| match error {
        env::VarError::NotPresent => format!("{name} is not set"),
        env::VarError::NotUnicode(_) => format!("{name} is not UTF-8"),
    })
}

/// LISTEN_FDNAMES, used for log lines only: the service of a socket depends on what it is.
fn listen_fd_names(count: RawFd) -> Vec<String> {
    let unknown = vec!["unknown".to_string(); usize::try_from(count).unwrap_or(0)];
    match env::var("LISTEN_FDNAMES") {
        Ok(names) if names.split(':').count() == unknown.len() => {
            names.split(':').map(String::from).collect()
        }
        Ok(names) => {
            log!(
                "ignoring LISTEN_FDNAMES={names:?}: it does not name {}",
                plural(count, "fd")
            );
            unknown
        }
        Err(_) => unknown,
    }
}

/// Server::Starter's `SERVER_STARTER_PORT`: `KEY=FD` pairs joined by `;`, each key being
/// the address the socket was opened for (`8080`, `127.0.0.1:8081`, `/tmp/a.sock`).
fn server_starter_fds() -> Result<Vec<(RawFd, String)>, String> {
    let Ok(value) = env::var("SERVER_STARTER_PORT") else {
        return Ok(Vec::new());
    };
    let invalid = |entry: &str| format!("SERVER_STARTER_PORT: {entry:?} is not KEY=FD");
    value
        .split(';')
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (key, fd) = entry.rsplit_once('=').ok_or_else(|| invalid(entry))?;
            let fd = fd
                .parse::<RawFd>()
                .ok()
                .filter(|fd| *fd >= 0)
                .ok_or_else(|| invalid(entry))?;
            Ok((fd, key.to_string()))
        })
        .collect()
}

fn adopt_all(fds: &[(RawFd, String)]) -> Result<Vec<Socket>, String> {
    let mut sockets = Vec::with_capacity(fds.len());
    for (i, (fd, name)) in fds.iter().enumerate() {
        // Owning one fd twice would close it twice.
        if fds[..i].iter().any(|(earlier, _)| earlier == fd) {
            return Err(format!("fd {fd} is passed twice"));
        }
        sockets.push(Socket::describe(adopt(*fd)?, name.clone())?);
    }
    Ok(sockets)
}

/// Takes ownership of an inherited fd, and marks it close-on-exec as sd_listen_fds(3) does, so
/// that it cannot leak into a program this process might run.
fn adopt(fd: RawFd) -> Result<OwnedFd, String> {
    // SAFETY: fcntl(F_SETFD) touches only the fd table entry; on a number that is not an open
    // fd it fails with EBADF, which is how a missing fd is detected here.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(format!("fd {fd}: {}", io::Error::last_os_error()));
    }
    // SAFETY: the fd is open (fcntl succeeded), it was handed to this process to use, nothing
    // else in the process owns it, and `adopt_all` adopts each fd only once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(address: &str) -> Result<Socket, String> {
    let listener =
        TcpListener::bind(address).map_err(|error| format!("--listen {address}: {error}"))?;
    Socket::describe(OwnedFd::from(listener), "listen".to_string())
}

// ---------------------------------------------------------------------------------------------
// Server state shared by all threads

struct Server {
    shutdown: Shutdown,
    open_connections: Mutex<usize>,
    all_closed: Condvar,
}

impl Server {
    fn new() -> nix::Result<Server> {
        Ok(Server {
            shutdown: Shutdown::new()?,
            open_connections: Mutex::new(0),
            all_closed: Condvar::new(),
        })
    }

    fn open_connections(&self) -> usize {
        *self.lock_open_connections()
    }

    /// Counts a connection as open until the returned guard is dropped, however its thread
    /// ends (or fails to start).
    fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        *self.lock_open_connections() += 1;
        OpenConnection(Arc::clone(self))
    }

    fn wait_until_drained(&self) {
        let open = self.lock_open_connections();
        let _drained = self
            .all_closed
            .wait_while(open, |open| *open > 0)
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// The counter stays consistent even if a thread panicked while holding the lock (it only
    /// ever adds or subtracts one), so a poisoned lock is simply used.
    fn lock_open_connections(&self) -> std::sync::MutexGuard<'_, usize> {
        self.open_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

struct OpenConnection(Arc<Server>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let mut open = self.0.lock_open_connections();
        *open -= 1;
        if *open == 0 {
            self.0.all_closed.notify_all();
        }
    }
}

/// A one-way switch that any thread can wait for in poll(2), next to its socket: a pipe that
/// is written once and never read, so it stays readable for everybody from then on.
struct Shutdown {
    begun: AtomicBool,
    read_end: OwnedFd,
    write_end: OwnedFd,
}

impl Shutdown {
    fn new() -> nix::Result<Shutdown> {
        let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC)?;
        Ok(Shutdown {
            begun: AtomicBool::new(false),
            read_end,
            write_end,
        })
    }

    /// Called once, by the signal loop.
    fn begin(&self) {
        self.begun.store(true, Ordering::SeqCst);
        // One byte always fits in the empty pipe, so only EINTR can get in the way.
        while write(&self.write_end, b"!") == Err(Errno::EINTR) {}
    }

    fn has_begun(&self) -> bool {
        self.begun.load(Ordering::SeqCst)
    }

    /// Waits until shutdown begins (true) or `timeout` passes (false); `None` waits forever.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let mut fds = [PollFd::new(self.read_end.as_fd(), PollFlags::POLLIN)];
        // poll() on a pipe fails only if the kernel is out of memory; stopping is then the
        // safest course.
        poll_ready(&mut fds, timeout).unwrap_or(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Worker threads: one per socket

/// The thread that accepts connections on (or echoes datagrams of) one socket until shutdown.
struct Worker {
    label: String,
    thread: JoinHandle<()>,
    /// Disconnected when the thread ends.
    exited: mpsc::Receiver<()>,
}

impl Worker {
    fn start(socket: Socket, server: &Arc<Server>) -> io::Result<Worker> {
        let label = socket.to_string();
        let server = Arc::clone(server);
        let (exit_report, exited) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("fd {}", socket.fd.as_raw_fd()))
            .spawn(move || {
                match socket.service {
                    Service::Http => accept_connections(&socket, &server),
                    Service::Echo => echo_datagrams(&socket, &server.shutdown),
                }
                // Closes our copy of the socket only: graceful-run and the other generation
                // keep theirs, and the kernel goes on queueing connections for them.
                drop(socket);
                drop(exit_report);
            })?;
        Ok(Worker {
            label,
            thread,
            exited,
        })
    }

    /// Stops the thread once shutdown has begun. The shutdown pipe wakes it in poll(), but in a
    /// blocking accept4() only a signal reaches it, and a signal that arrives just before it
    /// enters accept4() is lost: so the signal is repeated until the thread has exited. (It
    /// is harmless anywhere else: every blocking call here goes on after EINTR.)
    fn stop(self) {
        // std hands out the id as an integer; libc's pthread_t is an integer on glibc but a
        // pointer on musl, so convert to whatever this libc uses.
        let pthread = self.thread.as_pthread_t() as libc::pthread_t;
        loop {
            // SAFETY: the thread has not been joined yet, so its pthread_t is valid even if it
            // has already exited. Only the no-op handler runs.
            unsafe { libc::pthread_kill(pthread, WAKE_SIGNAL as libc::c_int) };
            if self.exited.recv_timeout(WAKE_RETRY) != Err(RecvTimeoutError::Timeout) {
                break;
            }
        }
        if self.thread.join().is_err() {
            log!("{}: thread panicked", self.label);
        }
        log!("{}: closed", self.label);
    }
}

/// Makes WAKE_SIGNAL interrupt blocking system calls instead of being ignored.
fn install_wake_signal_handler() -> nix::Result<()> {
    extern "C" fn interrupt(_: libc::c_int) {}
    // No SA_RESTART: the whole point is that accept4() fails with EINTR instead of resuming.
    let action = SigAction::new(
        SigHandler::Handler(interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe, and nothing else in this
    // program handles WAKE_SIGNAL.
    unsafe { sigaction(WAKE_SIGNAL, &action) }.map(drop)
}

/// Waits until `socket` is readable (true) or shutdown begins (false).
fn wait_for_work(socket: &Socket, shutdown: &Shutdown) -> bool {
    let mut fds = [
        PollFd::new(socket.fd.as_fd(), PollFlags::POLLIN),
        PollFd::new(shutdown.read_end.as_fd(), PollFlags::POLLIN),
    ];
    match poll_ready(&mut fds, None) {
        Ok(_) => !is_ready(&fds[1]),
        Err(error) => {
            log!("{socket}: poll: {error}");
            false
        }
    }
}

fn accept_connections(listener: &Socket, server: &Arc<Server>) {
    while wait_for_work(listener, &server.shutdown) {
        // The listener's O_NONBLOCK is not ours (see the module doc): this may fail with
        // EAGAIN or block, whichever the flag says right now. SOCK_CLOEXEC is for the new fd.
        match accept4(listener.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => {
                // SAFETY: accept4 has just returned this fd, so nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                start_connection(fd, server);
            }
            // Another process took the connection, or a signal (the wake-up one included)
            // interrupted a blocking accept4: back to poll(), which also notices shutdown.
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNABORTED) => {}
            // Errors of a connection that died in the queue, to be retried (accept(2)).
            Err(
                Errno::ENETDOWN
                | Errno::EPROTO
                | Errno::ENOPROTOOPT
                | Errno::EHOSTDOWN
                | Errno::ENONET
                | Errno::EHOSTUNREACH
                | Errno::EOPNOTSUPP
                | Errno::ENETUNREACH,
            ) => {}
            // Retrying at once would spin while the connection waits in the queue.
            Err(error @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                log!("{listener}: accept4: {error}");
                thread::sleep(ACCEPT_BACKOFF);
            }
            Err(error) => {
                log!("{listener}: accept4: {error}; no longer accepting");
                return;
            }
        }
    }
}

fn start_connection(fd: OwnedFd, server: &Arc<Server>) {
    // Counted before its thread runs, so that shutdown cannot miss it.
    let open = server.connection_opened();
    let spawned = thread::Builder::new()
        .name("connection".into())
        .spawn(move || serve_connection(Connection::new(fd), &open.0.shutdown));
    if let Err(error) = spawned {
        // The closure, and with it the connection and its count, has been dropped.
        log!("cannot start a connection thread: {error}");
    }
}

fn echo_datagrams(socket: &Socket, shutdown: &Shutdown) {
    let prefix = format!("pid {}: ", process::id());
    let mut buffer = vec![0; MAX_DATAGRAM];
    while wait_for_work(socket, shutdown) {
        match receive_datagram(socket, &mut buffer) {
            Ok((len, Some(sender))) => {
                let reply = [prefix.as_bytes(), &buffer[..len]].concat();
                if let Err(error) = sendto(
                    socket.fd.as_raw_fd(),
                    &reply,
                    &sender,
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    log!("{socket}: sendto {sender}: {error}");
                }
            }
            Ok((_, None)) => {} // An unbound unix socket sent it: there is nowhere to answer.
            // Another process took the datagram, or a signal interrupted the call.
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(error) => log!("{socket}: recvmsg: {error}"),
        }
    }
}

/// Receives one datagram without blocking whatever the socket's O_NONBLOCK flag says
/// (MSG_DONTWAIT applies to this call only, the flag belongs to all holders of the socket).
fn receive_datagram(
    socket: &Socket,
    buffer: &mut [u8],
) -> nix::Result<(usize, Option<SockaddrStorage>)> {
    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg(
        socket.fd.as_raw_fd(),
        &mut iov,
        None,
        MsgFlags::MSG_DONTWAIT,
    )?;
    Ok((message.bytes, message.address))
}

// ---------------------------------------------------------------------------------------------
// HTTP connections

/// An accepted stream socket (TCP or unix), read and written with recv/send.
struct Connection(OwnedFd);

impl Connection {
    fn new(fd: OwnedFd) -> Connection {
        // Bounds every blocking recv and send: a client that stops sending mid-request or
        // stops reading its response cannot hold a thread (and shutdown) forever.
        let timeout = TimeVal::seconds(IDLE_TIMEOUT.as_secs() as i64);
        let set = setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)
            .and_then(|()| setsockopt(&fd, sockopt::SendTimeout, &timeout));
        if let Err(error) = set {
            log!("setting socket timeouts: {error}");
        }
        Connection(fd)
    }

    fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            match recv(self.0.as_raw_fd(), buffer, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                result => return result.map_err(io::Error::from),
            }
        }
    }

    fn send_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // MSG_NOSIGNAL: a client that went away is an error here, not a SIGPIPE.
            match send(self.0.as_raw_fd(), data, MsgFlags::MSG_NOSIGNAL) {
                Ok(sent) => data = &data[sent..],
                Err(Errno::EINTR) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Waits for the first byte of the next request; false means "close the connection": the
    /// client closed it, it stayed idle for IDLE_TIMEOUT, or shutdown began and no request
    /// arrived within SHUTDOWN_GRACE.
    fn wait_for_request(&self, shutdown: &Shutdown) -> bool {
        if !shutdown.has_begun() {
            let mut fds = [
                PollFd::new(self.0.as_fd(), PollFlags::POLLIN),
                PollFd::new(shutdown.read_end.as_fd(), PollFlags::POLLIN),
            ];
            match poll_ready(&mut fds, Some(IDLE_TIMEOUT)) {
                Ok(true) if is_ready(&fds[0]) => return true,
                Ok(true) => {} // Shutdown began while idle: on to the grace.
                Ok(false) | Err(_) => return false,
            }
        }
        // Not waiting for the shutdown pipe any more: it stays readable from now on.
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        poll_ready(&mut fds, Some(SHUTDOWN_GRACE)) == Ok(true)
    }

    /// Sends FIN, then reads and discards whatever the client still sends until it closes its
    /// side (or LINGER passes), and only then closes: closing with unread input would send
    /// RST, which can destroy the response before the client reads it.
    fn close_gracefully(self) {
        // This is an accepted connection, never a listener, so shutdown(2) is fine.
        let _ = socket::shutdown(self.0.as_raw_fd(), socket::Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        let mut scratch = [0; READ_CHUNK];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
            if poll_ready(&mut fds, Some(left)) != Ok(true) {
                return;
            }
            // 0 is the client's FIN; an error (RST, say) ends the wait as well.
            if !matches!(self.recv(&mut scratch), Ok(1..)) {
                return;
            }
        }
    }
}

struct Request {
    method: String,
    target: String,
    keep_alive: bool,
    content_length: u64,
    expects_continue: bool,
}

struct Response {
    status: u16,
    reason: &'static str,
    body: String,
}

impl Response {
    fn new(status: u16, reason: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            reason,
            body: body.into(),
        }
    }

    fn ok(body: String) -> Response {
        Response::new(200, "OK", body)
    }

    fn not_found() -> Response {
        Response::new(404, "Not Found", "not found\n")
    }

    fn bad_request(why: &str) -> Response {
        Response::new(400, "Bad Request", format!("bad request: {why}\n"))
    }

    /// The whole response in one buffer, so it goes out in one send().
    fn encode(&self, keep_alive: bool, with_body: bool) -> Vec<u8> {
        let mut bytes = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             X-Pid: {}\r\nConnection: {}\r\n\r\n",
            self.status,
            self.reason,
            self.body.len(),
            process::id(),
            if keep_alive { "keep-alive" } else { "close" },
        )
        .into_bytes();
        if with_body {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

/// Serves requests on one connection until the client leaves or asks to close, something
/// fails, or shutdown closes it.
fn serve_connection(connection: Connection, shutdown: &Shutdown) {
    // Bytes received but not used yet: the start of a pipelined request, if any.
    let mut buffer = Vec::with_capacity(READ_CHUNK);
    loop {
        if buffer.is_empty() && !connection.wait_for_request(shutdown) {
            break;
        }
        let request = match read_request(&connection, &mut buffer) {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(rejection) => {
                let _ = connection.send_all(&rejection.encode(false, true));
                break;
            }
        };
        if discard_body(&connection, &mut buffer, &request).is_err() {
            break;
        }
        let response = respond(&request);
        // Decided after the handler ran: shutdown may have begun meanwhile (think /slow), and
        // then the client must learn not to send anything more on this connection.
        let keep_alive = request.keep_alive && !shutdown.has_begun();
        let sent = connection.send_all(&response.encode(keep_alive, request.method != "HEAD"));
        if sent.is_err() || !keep_alive {
            break;
        }
    }
    connection.close_gracefully();
}

/// Reads and parses the next request head. `Ok(None)`: the client closed the connection or
/// went silent before sending a whole head. `Err`: the response that rejects the request.
fn read_request(
    connection: &Connection,
    buffer: &mut Vec<u8>,
) -> Result<Option<Request>, Response> {
    let Some(head_len) = read_head(connection, buffer)? else {
        return Ok(None);
    };
    let request = parse_head(&buffer[..head_len]);
    buffer.drain(..head_len);
    request.map(Some)
}

/// Reads until `buffer` holds a whole request head, and returns its length.
fn read_head(connection: &Connection, buffer: &mut Vec<u8>) -> Result<Option<usize>, Response> {
    const END: &[u8] = b"\r\n\r\n";
    let too_large = || Response::new(431, "Request Header Fields Too Large", "head too large\n");
    let mut scanned = 0;
    loop {
        if let Some(at) = buffer[scanned..].windows(END.len()).position(|w| w == END) {
            let head_len = scanned + at + END.len();
            return if head_len <= MAX_HEAD {
                Ok(Some(head_len))
            } else {
                Err(too_large())
            };
        }
        if buffer.len() >= MAX_HEAD {
            return Err(too_large());
        }
        // The end may straddle what is here and what comes next.
        scanned = buffer.len().saturating_sub(END.len() - 1);
        let mut chunk = [0; READ_CHUNK];
        match connection.recv(&mut chunk) {
            Ok(0) | Err(_) => return Ok(None),
            Ok(len) => buffer.extend_from_slice(&chunk[..len]),
        }
    }
}

fn parse_head(head: &[u8]) -> Result<Request, Response> {
    let head = std::str::from_utf8(head).map_err(|_| Response::bad_request("not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::bad_request("malformed request line"));
    };
    if method.is_empty() || target.is_empty() {
        return Err(Response::bad_request("malformed request line"));
    }
    let keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => {
            return Err(Response::new(
                505,
                "HTTP Version Not Supported",
                "HTTP/1.x only\n",
            ));
        }
    };
    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        keep_alive,
        content_length: 0,
        expects_continue: false,
    };
    let mut content_length = None;
    for line in lines.take_while(|line| !line.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| Response::bad_request("malformed header"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(value)?;
            if content_length.is_some_and(|earlier| earlier != length) {
                return Err(Response::bad_request("conflicting Content-Length"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Response::new(
                411,
                "Length Required",
                "send Content-Length\n",
            ));
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    request.keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    request.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            request.expects_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    request.content_length = content_length.unwrap_or(0);
    Ok(request)
}

fn parse_content_length(value: &str) -> Result<u64, Response> {
    // Digits only: u64's parser would also take a sign.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Response::bad_request("invalid Content-Length"));
    }
    value
        .parse()
        .map_err(|_| Response::bad_request("invalid Content-Length"))
}

/// Reads the request body and throws it away, so that the next request starts where expected.
fn discard_body(
    connection: &Connection,
    buffer: &mut Vec<u8>,
    request: &Request,
) -> io::Result<()> {
    let mut remaining = request.content_length;
    if remaining > 0 && request.expects_continue {
        connection.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let buffered = remaining.min(buffer.len() as u64);
    buffer.drain(..buffered as usize); // At most buffer.len(), so the cast is lossless.
    remaining -= buffered;
    let mut scratch = [0; READ_CHUNK];
    while remaining > 0 {
        // Never read past the body: what follows is the next request.
        let want = remaining.min(scratch.len() as u64) as usize;
        match connection.recv(&mut scratch[..want])? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            len => remaining -= len as u64,
        }
    }
    Ok(())
}

fn respond(request: &Request) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::not_found();
    }
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    let pid = process::id();
    match path {
        "/" => Response::ok(format!("hello from pid {pid}\n")),
        "/pid" => Response::ok(format!("{pid}\n")),
        "/slow" => slow(query),
        _ => Response::not_found(),
    }
}

/// `/slow?ms=N`: a long request, to watch one survive a restart.
fn slow(query: &str) -> Response {
    let ms = match query.split('&').find_map(|pair| pair.strip_prefix("ms=")) {
        None => DEFAULT_SLOW_MS,
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms) => ms.min(MAX_SLOW_MS),
            Err(_) => return Response::bad_request("ms must be a number of milliseconds"),
        },
    };
    thread::sleep(Duration::from_millis(ms));
    Response::ok(format!(
        "slow response from pid {} after {ms} ms\n",
        process::id()
    ))
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Sends one sd_notify(3) message if the supervisor asked for them. A failure is only logged:
/// reporting readiness must not take a working server down.
fn notify(message: &str) {
    let Some(path) = env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send_notification(path.as_bytes(), message) {
        log!("NOTIFY_SOCKET={}: {error}", path.display());
    }
}

fn send_notification(path: &[u8], message: &str) -> Result<(), String> {
    let address = match path.split_first() {
        Some((b'@', name)) => UnixAddr::new_abstract(name),
        Some((b'/', _)) => UnixAddr::new(path),
        _ => return Err("neither an absolute path nor an @abstract name".to_string()),
    }
    .map_err(|error| error.to_string())?;
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|error| format!("socket: {error}"))?;
    sendto(
        fd.as_raw_fd(),
        message.as_bytes(),
        &address,
        MsgFlags::empty(),
    )
    .map_err(|error| format!("sendto: {error}"))?;
    Ok(())
}

/// poll(2), retrying EINTR with the time left. `Ok(false)` means `timeout` passed; `None`
/// waits forever.
fn poll_ready(fds: &mut [PollFd], timeout: Option<Duration>) -> nix::Result<bool> {
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    loop {
        let left = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(fds, left) {
            Ok(ready) => return Ok(ready > 0),
            Err(Errno::EINTR) => continue,
            Err(error) => return Err(error),
        }
    }
}

fn is_ready(fd: &PollFd) -> bool {
    fd.any().unwrap_or(false)
}

/// `1 socket`, `2 sockets`.
fn plural<T: std::fmt::Display + PartialEq + From<u8>>(count: T, noun: &str) -> String {
    if count == T::from(1) {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}
