//! `probe`: shows what a process started by graceful-run receives, and plays the child roles
//! the integration tests need.
//!
//! ```text
//! graceful-run -l 8080 -l unix:/tmp/app.sock -- target/debug/examples/probe report
//! ```
//!
//! prints one `key=value` line per fact: pid, process group, LISTEN_* variables, every open
//! fd (with FD_CLOEXEC, O_NONBLOCK, and for sockets family, type, local address, whether it
//! listens, and for TCP/UDP SO_REUSEPORT and, on IPv6, IPV6_V6ONLY), the blocked and ignored
//! signal sets as exec left them. Handy when a server says "no sockets passed".
//!
//! Other modes, for tests:
//! - `signals [--ignore-stop]`: print `signal N` for every signal received, one per line;
//!   TERM and INT end it unless `--ignore-stop`.
//! - `ignore-term`: ignore SIGTERM and wait forever.
//! - `orphans N`: leave N orphaned grandchildren that sleep briefly, then wait forever.
//! - `exit CODE` / `kill SIGNAL`: end with that status, or die by that signal.
//! - `nonblock-exit CODE`: set O_NONBLOCK on fd 3 (shared with every holder of the socket),
//!   then exit with CODE, as a crashing Go or tokio server leaves it.
//! - `nonblock-serve`: set O_NONBLOCK on fd 3 and keep running, as an event-loop server does,
//!   printing signals as `signals` does.
//! - `notify FIELDS...`: send one sd_notify datagram (fields joined by newlines) and wait.
//! - `hold`: start a worker (this program again, `hold-worker`, in the same process group)
//!   that accepts connections on fd 3 and holds them without ever reading, printing
//!   `accepted PEER` for each; the leader waits. A generation with connections in flight,
//!   for the tests of what graceful-run observes from outside.
//!
//! Every mode that keeps running writes `ready` on stdout once it is set up, so a test can
//! wait for it.

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::libc;
use nix::sys::socket::{
    AddressFamily, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("report");
    match mode {
        "report" => report(),
        "signals" => print_signals(args.iter().any(|a| a == "--ignore-stop")),
        "ignore-term" => ignore_term(),
        "orphans" => orphans(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(100)),
        "exit" => std::process::exit(args.get(1).and_then(|c| c.parse().ok()).unwrap_or(0)),
        "kill" => die_by(
            args.get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(libc::SIGTERM),
        ),
        "notify" => notify(&args[1..]),
        "hold" => hold(),
        "hold-worker" => hold_worker(),
        "nonblock-exit" => {
            set_nonblock_on_fd3();
            std::process::exit(args.get(1).and_then(|c| c.parse().ok()).unwrap_or(0))
        }
        "nonblock-serve" => {
            set_nonblock_on_fd3();
            print_signals(false)
        }
        other => {
            eprintln!("probe: unknown mode {other}");
            std::process::exit(2);
        }
    }
}

fn hold() {
    let exe = std::env::current_exe().expect("the running program has a path");
    // fd 3 is inherited: graceful-run passes it without FD_CLOEXEC.
    let mut worker = std::process::Command::new(exe)
        .arg("hold-worker")
        .spawn()
        .expect("the worker starts");
    let _ = worker.wait();
}

fn hold_worker() {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 3 is the listener graceful-run passed (LISTEN_FDS); this process owns it
    // from here on and nothing else in it uses fd 3.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(3) };
    say("ready");
    let mut held = Vec::new();
    while let Ok((stream, peer)) = listener.accept() {
        say(&format!("accepted {peer}"));
        held.push(stream);
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn report() {
    // SAFETY: getpid/getppid/getpgrp/getsid have no preconditions.
    let (pid, ppid, pgid, sid) = unsafe {
        (
            libc::getpid(),
            libc::getppid(),
            libc::getpgrp(),
            libc::getsid(0),
        )
    };
    say(&format!("pid={pid}"));
    say(&format!("ppid={ppid}"));
    say(&format!("pgid={pgid}"));
    say(&format!("sid={sid}"));
    for key in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "LISTEN_PIDFDID",
        "LISTEN_FDS_FIRST_FD",
        "NOTIFY_SOCKET",
        "SERVER_STARTER_PORT",
        "SERVER_STARTER_GENERATION",
        "EINHORN_FD_COUNT",
        "EINHORN_FDS",
        "EINHORN_FD_0",
        "EINHORN_FD_1",
        "EINHORN_MASTER_PID",
        "HOME",
        "USER",
        "LOGNAME",
    ] {
        match std::env::var(key) {
            Ok(value) => say(&format!("env.{key}={value}")),
            Err(_) => say(&format!("env.{key}=<unset>")),
        }
    }
    let leaked: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("GRACEFUL_RUN_"))
        .map(|(k, _)| k)
        .collect();
    say(&format!("env.graceful_run_vars={}", leaked.join(",")));
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    say(&format!("uid={uid}"));
    say(&format!("gid={gid}"));
    let groups = nix::unistd::getgroups().unwrap_or_default();
    let groups: Vec<String> = groups.iter().map(|g| g.as_raw().to_string()).collect();
    say(&format!("groups={}", groups.join(",")));
    // Same format as SigIgn/SigBlk in /proc/PID/status: bit N-1 is signal N.
    say(&format!(
        "sigign={:016x}",
        IGNORED_AT_EXEC.load(std::sync::atomic::Ordering::Relaxed)
    ));
    say(&format!(
        "sigblk={:016x}",
        BLOCKED_AT_EXEC.load(std::sync::atomic::Ordering::Relaxed)
    ));
    // Snapshot the fd list first: reading the directory opens one more fd.
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    for fd in fds {
        // SAFETY: only queried with fcntl/getsockopt; closed fds (the directory's own) answer EBADF.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(fd_flags) = nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD) else {
            continue;
        };
        let status = nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFL).unwrap_or(0);
        let cloexec = fd_flags & libc::FD_CLOEXEC != 0;
        let nonblock = status & libc::O_NONBLOCK != 0;
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        say(&format!(
            "fd.{fd}=target:{target} cloexec:{cloexec} nonblock:{nonblock}{}",
            describe_socket(borrowed)
        ));
    }
    say("ready");
}

fn describe_socket(fd: BorrowedFd) -> String {
    let Ok(kind) = getsockopt(&fd, sockopt::SockType) else {
        return String::new();
    };
    let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    let Ok(address) = getsockname::<SockaddrStorage>(fd.as_raw_fd()) else {
        return format!(" socket:{kind:?}");
    };
    let (family, text) = match address.family() {
        Some(AddressFamily::Inet) => (
            "inet",
            address
                .as_sockaddr_in()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        ),
        Some(AddressFamily::Inet6) => (
            "inet6",
            address
                .as_sockaddr_in6()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        ),
        Some(AddressFamily::Unix) => {
            let unix = address.as_unix_addr();
            let text = match (
                unix.and_then(|u| u.path()),
                unix.and_then(|u| u.as_abstract()),
            ) {
                (Some(path), _) => path.display().to_string(),
                (None, Some(name)) => format!("@{}", String::from_utf8_lossy(name)),
                _ => String::new(),
            };
            ("unix", text)
        }
        other => ("other", format!("{other:?}")),
    };
    let mut line = format!(" socket:{kind:?} family:{family} address:{text} listening:{listening}");
    if matches!(family, "inet" | "inet6") {
        let reuseport = getsockopt(&fd, sockopt::ReusePort).unwrap_or(false);
        line.push_str(&format!(" reuseport:{reuseport}"));
    }
    if family == "inet6" {
        let v6only = getsockopt(&fd, sockopt::Ipv6V6Only).unwrap_or(false);
        line.push_str(&format!(" v6only:{v6only}"));
    }
    line
}

fn set_nonblock_on_fd3() {
    // SAFETY: fd 3 is only flagged with fcntl, never closed or owned.
    let fd = unsafe { BorrowedFd::borrow_raw(3) };
    let set = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).and_then(|flags| {
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))
    });
    if let Err(e) = set {
        eprintln!("probe: cannot set O_NONBLOCK on fd 3: {e}");
        std::process::exit(2);
    }
}

/// The ignored and blocked signal sets as exec(2) left them, captured by a constructor that
/// runs before Rust's runtime (which ignores SIGPIPE before `main`, hiding what we inherited).
static IGNORED_AT_EXEC: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static BLOCKED_AT_EXEC: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[used]
#[unsafe(link_section = ".init_array")]
static CAPTURE_AT_EXEC: extern "C" fn() = capture_signal_state;

extern "C" fn capture_signal_state() {
    let mut ignored = 0u64;
    for signal in 1..=31 {
        // SAFETY: querying (null new action) only writes into `old`.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                ignored |= 1 << (signal - 1);
            }
        }
    }
    let mut blocked = 0u64;
    // SAFETY: querying the mask (null new set) only writes into `current`.
    unsafe {
        let mut current: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut current);
        for signal in 1..=31 {
            if libc::sigismember(&current, signal) == 1 {
                blocked |= 1 << (signal - 1);
            }
        }
    }
    IGNORED_AT_EXEC.store(ignored, std::sync::atomic::Ordering::Relaxed);
    BLOCKED_AT_EXEC.store(blocked, std::sync::atomic::Ordering::Relaxed);
}

static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn record_signal(signal: libc::c_int) {
    let byte = signal as u8;
    let fd = SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; the pipe lives for the whole process.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
}

/// Prints every signal received, in order, one per line.
fn print_signals(ignore_stop: bool) {
    let (read, write) = nix::unistd::pipe().expect("a fresh process has fds to spare");
    SIGNAL_PIPE.store(write.as_raw_fd(), std::sync::atomic::Ordering::Relaxed);
    std::mem::forget(write);
    // Real-time signals too, so tests can check they are forwarded.
    for signal in (1..=31).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()) {
        if [libc::SIGKILL, libc::SIGSTOP].contains(&signal) {
            continue;
        }
        // SAFETY: the handler only calls write(2) on a pipe, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    say("ready");
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(&read, &mut byte) {
            Ok(1) => {
                let signal = i32::from(byte[0]);
                // CHLD from our own stdout pipe consumers is not expected; report everything.
                say(&format!("signal {signal}"));
                if !ignore_stop && (signal == libc::SIGTERM || signal == libc::SIGINT) {
                    std::process::exit(0);
                }
            }
            Ok(_) => std::process::exit(1),
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => std::process::exit(1),
        }
    }
}

fn ignore_term() {
    // SAFETY: SIG_IGN installs no code.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    say("ready");
    loop {
        // SAFETY: pause(2) has no preconditions.
        unsafe { libc::pause() };
    }
}

/// Forks `count` children that each fork a grandchild and exit at once: the grandchildren
/// become orphans, re-parented to the nearest subreaper or to PID 1, and exit shortly after.
fn orphans(count: usize) {
    for _ in 0..count {
        // SAFETY: the process is single-threaded here; the children only call fork, nanosleep
        // and _exit.
        unsafe {
            match libc::fork() {
                0 => {
                    if libc::fork() == 0 {
                        let pause = libc::timespec {
                            tv_sec: 0,
                            tv_nsec: 200_000_000,
                        };
                        libc::nanosleep(&pause, std::ptr::null_mut());
                        libc::_exit(0);
                    }
                    libc::_exit(0);
                }
                child if child > 0 => {
                    libc::waitpid(child, std::ptr::null_mut(), 0);
                }
                _ => {
                    eprintln!("probe: fork failed");
                    std::process::exit(1);
                }
            }
        }
    }
    say("ready");
    loop {
        // SAFETY: pause(2) has no preconditions.
        unsafe { libc::pause() };
    }
}

fn die_by(signal: i32) {
    // SAFETY: restoring the default action and raising it; no Rust code runs as a handler.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
    std::process::exit(1);
}

fn notify(fields: &[String]) {
    let address = std::env::var("NOTIFY_SOCKET").expect("notify mode needs NOTIFY_SOCKET");
    let socket =
        std::os::unix::net::UnixDatagram::unbound().expect("a fresh process can create a socket");
    let message = fields.join("\n");
    let sent = if let Some(name) = address.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("the name comes from graceful-run and fits");
        socket.send_to_addr(message.as_bytes(), &addr)
    } else {
        socket.send_to(message.as_bytes(), &address)
    };
    if let Err(e) = sent {
        eprintln!("probe: cannot notify {address}: {e}");
        std::process::exit(1);
    }
    say("ready");
    loop {
        // SAFETY: pause(2) has no preconditions.
        unsafe { libc::pause() };
    }
}
