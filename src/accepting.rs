//! Readiness without cooperation: which of graceful-run's listeners a generation waits on.
//!
//! Most servers never send READY=1, but the kernel shows when a process starts waiting for
//! connections, in three ways that cover every server style met so far (issue 11):
//! - **epoll** (Node/libuv, Python asyncio, Go's netpoll, tokio, uvicorn): the listener is a
//!   target of one of the process's epoll sets. `/proc/PID/fdinfo/<epoll fd>` lists each
//!   target as `tfd: N events: HEX data: HEX pos:N ino:HEX sdev:HEX`; `ino` is the target
//!   file's inode, for a socket the number in `socket:[INODE]` and the `st_ino` that `fstat`
//!   of graceful-run's own listener fd gives. Matching by inode rather than fd number is what
//!   makes a server that `dup`s fd 3 (Go's `net.FileListener` does) count. Only targets
//!   registered for input (EPOLLIN) count: a server that paused accepting (an EPOLLONESHOT
//!   entry that fired, an entry modified to stop reading) is not waiting.
//! - **blocking accept** (a plain `sock.accept()`, pre-fork workers): a thread is in
//!   `accept`/`accept4` on an fd that is the listener. `/proc/PID/task/TID/syscall` gives the
//!   call's number and its arguments while the thread is blocked in it.
//! - **poll/select** (Python's `http.server` polls; gunicorn's sync workers select): a thread
//!   is in `poll`/`ppoll` with the listener in its pollfd array asking for POLLIN, or in
//!   `select`/`pselect6` with it in the read set. The arrays live in the process's memory and
//!   are read from the process's memory with `process_vm_readv` (root or the same user may).
//!
//! - **a connection it accepted** (`--handover shared` only): a process that holds a listener
//!   every generation shares and a connection accepted from it (see below).
//!
//! The processes looked at are those of the generation's process group, or without one
//! (`--no-process-group`) the leader and its descendants; every thread of each.
//!
//! This runs only while a generation starts, a few hundred times at most, so it is a plain
//! synchronous scan; it still reads as little as it can: never all of /proc, the group's
//! leader first, a process that holds none of the listeners and has no epoll set is dropped
//! after listing its fds, per-thread syscalls are read only for a process that holds a
//! listener, and the scan ends as soon as every listener has been found. Measured: about
//! 0.6 ms for a group of ten processes none of which waits yet (the common case while a
//! generation boots), 0.07 ms when the leader already waits (release build, loaded 2-core
//! machine; `one_check_on_ten_processes_is_cheap` in tests/it/accepting.rs prints it).
//!
//! Reading another process's syscall and memory takes ptrace access: root, or the same user
//! as an ancestor under Yama's `ptrace_scope` 1. Without it the poll/select and accept ways
//! are not seen (epoll still is, through fdinfo, which needs the same access: so in effect
//! graceful-run must be root or the command's user; root without CAP_DAC_READ_SEARCH and
//! CAP_SYS_PTRACE, as in the shipped systemd unit, reads a `--user` command's files as that
//! user, see `proc_owner.rs`, and then sees the epoll and accept ways). A process that is not dumpable (a
//! setuid or file-capability binary, or one that called `PR_SET_DUMPABLE 0`) hides its /proc
//! files even from its own user: a graceful-run that is not root cannot see it at all. [`look`]
//! says so as a [`Blind`] value, which tells why and what to use instead (READY=1, or a
//! `--ready` duration), rather than an error that only debug logging would show.
//!
//! # Off the supervisor's thread
//!
//! A look reads files and memory of processes that may belong to an untrusted `--user`, and
//! some of those reads can block for as long as that process wants. Reading another
//! process's memory faults its pages in: a poll array that sits in a page of a FUSE file
//! whose server never answers (any user may run one where /dev/fuse is open to all, or in a
//! user namespace of its own) blocks the read. (A page registered with userfaultfd does not:
//! a remote access fails at once with EIO, as tried on Linux 6.18.) `/proc/PID/mem`, as read
//! before issue 15, even waited uninterruptibly while holding the target's memory-map lock,
//! so that the target could not exit either; `process_vm_readv` waits killably, without that
//! lock. An epoll fdinfo takes the epoll's mutex, which the process holds while it adds a
//! file whose poll blocks (a FUSE file again).
//!
//! The supervisor's one thread must never wait on them: it handles every signal and
//! timeout. So [`look`] runs the look on a short-lived thread of its own and waits at most
//! [`LOOK_TIMEOUT`] for the answer. A look that takes longer is left to finish on its own
//! (it does when the process it waits on answers or ends, as it does at the latest when the
//! generation is stopped): the generation counts as not seen waiting this time, and until
//! that thread ends no other look starts (there is never more than one such thread), each
//! returning at once with [`Blind::Slow`]. Waiting for the answer with a timeout, rather than
//! receiving it as an event, keeps the core's protocol (a probe is answered before any other
//! event) and costs the supervisor at most LOOK_TIMEOUT once per stuck look. The thread is
//! created with every signal blocked, so that signals go to the supervisor's thread, and it
//! never forks; graceful-run's forks run only async-signal-safe code in the child (see
//! `spawn`), so another thread holding a lock at fork time is harmless. Cost: one thread
//! creation per look (tens of microseconds), only while a generation starts.
//!
//! # Seen accepting a connection
//!
//! With a listener that every generation shares (`--handover shared`, `,reuseport`, a kernel
//! that refuses steering), a pre-fork server's workers (Starman, gunicorn's sync workers) under
//! a saturating load are never caught waiting: the accept queue is never empty, so each
//! `accept` returns at once and the workers spend their time serving. A process of the
//! generation that holds the listener and a connection accepted from it has accepted, proof as
//! good as a wait: [`seen`] then counts the listener as seen. A connection is "accepted from"
//! the listener when its local address is the listener's (its port, and its address unless the
//! listener's is a wildcard): one the process made *to* that port has it as its peer address
//! instead. Found by joining the socket inodes the scan read in `/proc/PID/fd` anyway with a
//! sock_diag dump of the connections on the listener's port (as `observe` does for draining),
//! done only when a process that holds a shared listener not seen waited on holds a socket not
//! ruled out before, so a server that waits at once costs nothing more.
//!
//! Not counted: a connection that was already on the port at the generation's first look (an
//! fd passed over from the old generation, which accepted it before this one started: each
//! generation's first look records them), and any with a listener of the generation's own
//! (steered: it gets no connection before the generation is ready, so a connection on its
//! port came from elsewhere). What a `--user` server can fake this way it can fake anyway: it
//! may add the listener to an epoll set and never accept, or say READY=1. One that keeps
//! opening new sockets costs a dump per look (a few milliseconds, at most 20 looks a second),
//! only while it starts.
//!
//! Not seen: io_uring accepts (no syscall to look at while they wait) and servers that wait
//! through a listener received over a unix socket by another process outside the scope.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::libc;
use nix::unistd::Pid;

/// How long the supervisor waits for one look (see the module docs): looks take well under
/// a millisecond unless a process holds something they need.
pub const LOOK_TIMEOUT: Duration = Duration::from_millis(200);

/// Set while a look thread runs; a look that finds it set returns [`Blind::Slow`] at once.
static LOOKING: AtomicBool = AtomicBool::new(false);

/// Why the processes of a generation could not be seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blind {
    /// Reading `/proc/PID/fd` of the generation's first process was refused: graceful-run is
    /// neither root nor its user, or the process is not dumpable (`not_dumpable`: a setuid or
    /// file-capability binary, or `PR_SET_DUMPABLE 0`), which hides its /proc files from its
    /// own user too.
    PermissionDenied { pid: i32, not_dumpable: bool },
    /// /proc is not mounted.
    NoProc,
    /// A look took longer than [`LOOK_TIMEOUT`] and is still running.
    Slow,
    /// Anything else /proc said.
    Other(String),
}

impl std::fmt::Display for Blind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blind::PermissionDenied {
                pid,
                not_dumpable: true,
            } => write!(
                f,
                "cannot see whether it waits for connections: /proc/{pid}/fd: permission \
                 denied (the process is not dumpable: a setuid or file-capability binary, or \
                 PR_SET_DUMPABLE 0, hides its /proc files from all but root)"
            ),
            Blind::PermissionDenied { pid, .. } => write!(
                f,
                "cannot see whether it waits for connections: /proc/{pid}/fd: permission \
                 denied (graceful-run is neither root nor the command's user)"
            ),
            Blind::NoProc => write!(
                f,
                "cannot see whether it waits for connections: /proc is not mounted"
            ),
            Blind::Slow => write!(
                f,
                "cannot see whether it waits for connections: a look at its processes in \
                 /proc took longer than {}ms (a busy machine, or one of them holds something the look \
                 needs)",
                LOOK_TIMEOUT.as_millis()
            ),
            Blind::Other(why) => {
                write!(f, "cannot see whether it waits for connections: {why}")
            }
        }
    }
}

impl Blind {
    /// The cause in a few words, for the readiness timeout's line.
    pub fn cause(&self) -> &'static str {
        match self {
            Blind::PermissionDenied {
                not_dumpable: true, ..
            } => "one is not dumpable",
            Blind::PermissionDenied { .. } => "one is another user's",
            Blind::NoProc => "/proc is not mounted",
            Blind::Slow => "a look at /proc took too long",
            Blind::Other(_) => "/proc could not be read",
        }
    }

    /// What to do about it, for the warning and the readiness-timeout message.
    pub fn advice(&self) -> &'static str {
        match self {
            Blind::Slow => "graceful-run keeps looking",
            _ => {
                "it can become ready only by sending READY=1 (use --ready notify) or by \
                 staying up for a --ready DURATION"
            }
        }
    }
}

/// A stream listener a look looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// Its inode, as /proc shows it.
    pub inode: u64,
    /// Its address when it is a TCP listener every generation shares: a connection accepted
    /// from it then counts too (see the module docs). None for a listener of the
    /// generation's own (steered) and for a unix socket.
    pub shared_tcp: Option<SocketAddr>,
}

/// What a look saw of the listeners it looked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Those some process waits on.
    pub waiting: Vec<u64>,
    /// Those no process waits on but from which one of them accepted a connection since
    /// the generation's first look (shared TCP listeners only).
    pub accepted: Vec<u64>,
}

impl Seen {
    /// Whether `inode` was seen either way.
    pub fn has(&self, inode: u64) -> bool {
        self.waiting.contains(&inode) || self.accepted.contains(&inode)
    }
}

/// [`seen`] on a thread of its own, waited for at most [`LOOK_TIMEOUT`] (see the module
/// docs): which of `wanted` some process of `scope` waits on or accepted from, or why it
/// cannot be seen.
pub fn look(scope: Scope, wanted: &[Wanted]) -> Result<Seen, Blind> {
    if LOOKING.swap(true, Ordering::AcqRel) {
        return Err(Blind::Slow);
    }
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let wanted = wanted.to_vec();
    let spawned = with_signals_blocked(|| {
        std::thread::Builder::new()
            .name("proc-look".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let found = seen(scope, &wanted);
                LOOKING.store(false, Ordering::Release);
                // The supervisor may have stopped waiting: nobody to tell, nothing to do.
                let _ = sender.send(found);
            })
    });
    if let Err(e) = spawned {
        LOOKING.store(false, Ordering::Release);
        return Err(Blind::Other(format!("cannot start a thread: {e}")));
    }
    match receiver.recv_timeout(LOOK_TIMEOUT) {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(blindness(scope, &e)),
        Err(_) => Err(Blind::Slow),
    }
}

/// What an error of [`waiting_on`] means.
fn blindness(scope: Scope, error: &io::Error) -> Blind {
    let pid = match scope {
        Scope::Group(pid) | Scope::Tree(pid) => pid.as_raw(),
    };
    match error.kind() {
        io::ErrorKind::PermissionDenied => Blind::PermissionDenied {
            pid,
            not_dumpable: not_dumpable(pid),
        },
        io::ErrorKind::NotFound if fs::metadata("/proc/self").is_err() => Blind::NoProc,
        _ => Blind::Other(error.to_string()),
    }
}

/// Whether `pid` is not dumpable: its /proc files (`fd`, `status`...) then belong to root
/// whatever its user (`status`, which says its user, stays readable).
fn not_dumpable(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(owner) = fs::metadata(format!("/proc/{pid}/fd")).map(|m| m.uid()) else {
        return false;
    };
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse::<u32>().ok());
    owner == 0 && effective.is_some_and(|uid| uid != 0)
}

/// Runs `f` (which creates a thread) with every signal blocked, so the new thread starts
/// with them blocked and signals keep going to the calling thread.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    let mut previous = SigSet::empty();
    let blocked = pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut previous),
    )
    .is_ok();
    let result = f();
    if blocked {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    }
    result
}

/// The inodes of the stream listeners graceful-run passes (from `fstat` of its own fds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listening {
    pub inodes: Vec<u64>,
}

/// Which processes belong to a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every process whose process group is this one (the generation's leader made it).
    Group(Pid),
    /// The process and its descendants (`--no-process-group`).
    Tree(Pid),
}

/// One target of an epoll set, from `/proc/PID/fdinfo/<epoll fd>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpollTarget {
    /// The fd number the target was added with (it may have been closed since).
    pub fd: i32,
    /// The events it is registered for (EPOLLIN = 1, ...).
    pub events: u32,
    /// The inode of the target file.
    pub inode: u64,
}

/// A system call a thread is in, from `/proc/PID/task/TID/syscall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syscall {
    pub number: i64,
    pub args: [u64; 6],
}

impl Listening {
    /// The inodes of those of `fds` that are stream sockets (TCP, unix stream, SCTP): a
    /// datagram socket is read, never accepted on, so nothing ever "waits" on it.
    pub fn of_stream_sockets<'a>(
        fds: impl IntoIterator<Item = BorrowedFd<'a>>,
    ) -> io::Result<Listening> {
        let mut inodes = Vec::new();
        for fd in fds {
            let kind = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::SockType)?;
            if kind == nix::sys::socket::SockType::Stream {
                inodes.push(listener_inode(fd)?);
            }
        }
        Ok(Listening { inodes })
    }
}

/// The one warning for a generation that has not begun waiting on `address` (passed as fd
/// `fd`) `after` it started: the usual cause is a command that binds the port itself instead
/// of taking the socket graceful-run passed, which then fails with "Address already in use",
/// or worse serves another socket while connections to this one wait.
pub fn not_waiting_warning(address: &str, fd: i32, after: std::time::Duration) -> String {
    format!(
        "not waiting for connections on {address} (fd {fd}) {}s after starting: does the \
         command take its socket from LISTEN_FDS (fd {fd}) rather than binding the port itself?",
        after.as_secs()
    )
}

/// The inode of a listener graceful-run holds, as /proc shows it to other processes.
pub fn listener_inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(nix::sys::stat::fstat(fd)?.st_ino)
}

/// Which of `inodes` some process of `scope` waits on (in the order of `inodes`); `Err` when
/// /proc is not mounted or the leader's /proc files may not be read (not root and not its
/// user, or hidepid). A scope whose processes are all gone waits on nothing.
///
/// A group's processes are looked for where they can be without scanning all of /proc (one
/// stat read per process on the machine costs milliseconds on a busy host): the leader's
/// descendants, then the calling process's children in the group and their descendants.
/// graceful-run, a subreaper or PID 1, is where the group's orphans land.
pub fn waiting_on(scope: Scope, inodes: &[u64]) -> io::Result<Vec<u64>> {
    scan(scope, inodes, &mut Holders::new())
}

/// Listener inode -> the other socket inodes of the processes that hold it (read by the
/// scan anyway: the candidates for a connection accepted from it).
type Holders = HashMap<u64, HashSet<u64>>;

/// [`waiting_on`], and for the listeners no process waits on, where `wanted` says so, the
/// connections accepted from them (see the module docs).
pub fn seen(scope: Scope, wanted: &[Wanted]) -> io::Result<Seen> {
    let inodes: Vec<u64> = wanted.iter().map(|w| w.inode).collect();
    let mut holders = Holders::new();
    let waiting = scan(scope, &inodes, &mut holders)?;
    let shared: Vec<(u64, SocketAddr)> = wanted
        .iter()
        .filter_map(|w| Some((w.inode, w.shared_tcp?)))
        .collect();
    let accepted = if shared.is_empty() {
        Vec::new()
    } else {
        accepted_from(scope, &shared, &waiting, &holders)
    };
    Ok(Seen { waiting, accepted })
}

/// What is known of one starting generation's connections, from one look to the next.
struct Tracker {
    /// Its leader's pid, and start time when the first look could read it (a pid can be
    /// reused; not while it names a process group that has members, though, so a group
    /// whose leader exited, a daemonized server, keeps its tracker).
    leader: i32,
    started: Option<u64>,
    /// The connections on the shared listeners' ports at its first look: accepted before
    /// it started (by an older generation), whoever holds them later.
    before: HashSet<u64>,
    /// Socket inodes its processes hold that are not connections accepted from a listener
    /// it is looked at for: not dumped for again.
    others: HashSet<u64>,
    /// The listeners it was seen accepting from.
    proven: Vec<u64>,
}

/// One [`Tracker`] per generation that starts with shared listeners; only the look thread
/// (one at a time) takes the lock.
static TRACKERS: Mutex<Vec<Tracker>> = Mutex::new(Vec::new());
const MAX_TRACKERS: usize = 64;

/// Which of the `shared` listeners that are not in `waiting` a process of `scope` that holds
/// it accepted a connection from (see the module docs). Empty when that cannot be known.
fn accepted_from(
    scope: Scope,
    shared: &[(u64, SocketAddr)],
    waiting: &[u64],
    holders: &Holders,
) -> Vec<u64> {
    let leader = match scope {
        Scope::Group(pid) | Scope::Tree(pid) => pid.as_raw(),
    };
    let started = start_time(leader);
    let mut trackers = TRACKERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Those of other generations whose leader is gone (ready ones are removed below), and
    // one of an earlier process that had this pid.
    trackers.retain(|t| {
        if t.leader == leader {
            t.started.is_none() || started.is_none() || t.started == started
        } else {
            start_time(t.leader) == t.started
        }
    });
    let missing: Vec<(u64, SocketAddr)> = shared
        .iter()
        .filter(|(inode, _)| !waiting.contains(inode))
        .copied()
        .collect();
    let found = trackers.iter().position(|t| t.leader == leader);
    let Some(index) = found.filter(|_| !missing.is_empty()) else {
        if let Some(index) = found {
            trackers.swap_remove(index);
        } else if !missing.is_empty() {
            // Its first look: what is on the ports now was not accepted by it. One dump.
            let addresses: Vec<SocketAddr> = shared.iter().map(|(_, a)| *a).collect();
            if let Ok(now) = crate::observe::dump_connections(&addresses) {
                // A bound on what trackers of groups gone unnoticed (their leader gone at
                // their first look) can hold. One evicted while its generation still starts
                // only records a later set at its next look: it then counts less, not more.
                if trackers.len() >= MAX_TRACKERS {
                    trackers.remove(0);
                }
                trackers.push(Tracker {
                    leader,
                    started,
                    before: now.iter().map(|s| s.inode).filter(|&i| i != 0).collect(),
                    others: HashSet::new(),
                    proven: Vec::new(),
                });
            }
        }
        return Vec::new();
    };
    let tracker = &mut trackers[index];
    let candidates: HashSet<u64> = missing
        .iter()
        .filter(|(inode, _)| !tracker.proven.contains(inode))
        .filter_map(|(inode, _)| holders.get(inode))
        .flatten()
        .copied()
        .filter(|s| !tracker.others.contains(s) && !tracker.before.contains(s))
        .collect();
    if !candidates.is_empty() {
        let addresses: Vec<SocketAddr> = missing.iter().map(|(_, a)| *a).collect();
        let Ok(connections) = crate::observe::dump_held(&candidates, &addresses) else {
            return Vec::new();
        };
        for (inode, address) in &missing {
            let Some(held) = holders.get(inode) else {
                continue;
            };
            if !tracker.proven.contains(inode)
                && connections
                    .iter()
                    .any(|c| held.contains(&c.inode) && accepted_on(c.local, *address))
            {
                tracker.proven.push(*inode);
            }
        }
        // Each is either proof (kept in `proven`) or not: not dumped for again.
        tracker.others.extend(candidates);
    }
    let accepted: Vec<u64> = missing
        .iter()
        .map(|(inode, _)| *inode)
        .filter(|inode| tracker.proven.contains(inode))
        .collect();
    if accepted.len() == missing.len() {
        // Seen on every one: it is ready, nothing more to know of it.
        trackers.swap_remove(index);
    }
    accepted
}

/// Whether a connection whose local address is `local` was accepted from a listener bound
/// to `listener`: the same port, and the same address unless the listener's is a wildcard.
fn accepted_on(local: SocketAddr, listener: SocketAddr) -> bool {
    local.port() == listener.port()
        && (listener.ip().is_unspecified()
            || local.ip().to_canonical() == listener.ip().to_canonical())
}

/// Which of `inodes` some process of `scope` waits on; `holders` gets, for each listener not
/// waited on yet, the other sockets of each process that holds it.
fn scan(scope: Scope, inodes: &[u64], holders: &mut Holders) -> io::Result<Vec<u64>> {
    let mut missing: Vec<u64> = inodes.to_vec();
    missing.sort_unstable();
    missing.dedup();
    let (leader, group) = match scope {
        Scope::Group(pgid) => (pgid.as_raw(), Some(pgid.as_raw())),
        Scope::Tree(pid) => (pid.as_raw(), None),
    };
    let mut seen = Vec::new();
    search_tree(leader, group, &mut seen, &mut missing, holders)?;
    if let Some(pgid) = group
        && !missing.is_empty()
    {
        for orphan in children(std::process::id() as i32) {
            if process_group(orphan) == Some(pgid) {
                search_tree(orphan, group, &mut seen, &mut missing, holders)?;
            }
        }
    }
    if !missing.is_empty() && fs::metadata("/proc/self/task").is_err() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "/proc is not mounted",
        ));
    }
    Ok(inodes
        .iter()
        .copied()
        .filter(|inode| !missing.contains(inode))
        .collect())
}

/// Checks `root` and its descendants (those in `group` when it is given) until nothing is
/// missing.
fn search_tree(
    root: i32,
    group: Option<i32>,
    seen: &mut Vec<i32>,
    missing: &mut Vec<u64>,
    holders: &mut Holders,
) -> io::Result<()> {
    let mut pending = vec![root];
    while let Some(pid) = pending.pop() {
        if missing.is_empty() {
            break;
        }
        if seen.contains(&pid) {
            continue;
        }
        seen.push(pid);
        // Outside the group (a child that made a group of its own, or a leader that died
        // and whose pid was reused): not looked at, but its children may still be in it.
        if group.is_none() || process_group(pid) == group {
            match check_process(pid, missing, holders) {
                Ok(()) => {}
                // Not allowed to look at the root: nothing can be known, say so. A
                // descendant that is not ours to read (a setuid helper) is passed over.
                Err(e) if pid == root => return Err(e),
                Err(_) => {}
            }
        }
        pending.extend(children(pid));
    }
    Ok(())
}

/// Removes from `missing` the inodes that `pid` waits on. A process that vanishes meanwhile
/// waits on nothing; only a refusal to read its /proc files is an error.
fn check_process(pid: i32, missing: &mut Vec<u64>, holders: &mut Holders) -> io::Result<()> {
    // Another user's process, read as that user when root lacks the capabilities
    // (`proc_owner`); only the first read (its fd list) can be refused, before `missing`
    // changes.
    crate::proc_owner::read(pid, || check_process_as_is(pid, missing, holders))
}

fn check_process_as_is(pid: i32, missing: &mut Vec<u64>, holders: &mut Holders) -> io::Result<()> {
    let fds = match open_fds(pid, missing) {
        Ok(fds) => fds,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(e),
        Err(_) => return Ok(()),
    };
    for listener in fds.listeners.keys() {
        holders
            .entry(*listener)
            .or_default()
            .extend(fds.sockets.iter().copied());
    }
    for &epoll_fd in &fds.epolls {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{epoll_fd}")) else {
            continue;
        };
        for target in parse_epoll_fdinfo(&text) {
            if target.events & libc::EPOLLIN as u32 != 0 {
                missing.retain(|&inode| inode != target.inode);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
    }
    // Only a process holding a listener can be in a system call on it.
    if !fds.listeners.keys().any(|inode| missing.contains(inode)) {
        return Ok(());
    }
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Ok(());
    };
    for task in tasks.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("syscall")) else {
            continue;
        };
        let Some(call) = parse_syscall(&text) else {
            continue;
        };
        let waited = waited_fds(pid, call);
        for (inode, fds_of_inode) in &fds.listeners {
            if fds_of_inode.iter().any(|fd| waited.contains(fd)) {
                missing.retain(|m| m != inode);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
    }
    Ok(())
}

/// The fds of one process that matter: its epoll sets and the listeners it holds.
#[derive(Default)]
struct OpenFds {
    epolls: Vec<i32>,
    /// Listener inode -> the fd numbers it has in this process.
    listeners: HashMap<u64, Vec<i32>>,
    /// Its other sockets' inodes.
    sockets: Vec<u64>,
}

fn open_fds(pid: i32, wanted: &[u64]) -> io::Result<OpenFds> {
    let mut found = OpenFds::default();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let Some(target) = target.to_str() else {
            continue;
        };
        if target == "anon_inode:[eventpoll]" {
            found.epolls.push(fd);
        } else if let Some(inode) = socket_inode(target) {
            if wanted.contains(&inode) {
                found.listeners.entry(inode).or_default().push(fd);
            } else {
                found.sockets.push(inode);
            }
        }
    }
    Ok(found)
}

/// `socket:[12345]` -> 12345.
pub(crate) fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The fds that a thread in `call` waits to read from (empty for any other call).
fn waited_fds(pid: i32, call: Syscall) -> Vec<i32> {
    let [a0, a1, ..] = call.args;
    match Call::of(call.number) {
        Some(Call::Accept) => vec![a0 as i32],
        Some(Call::Poll) => {
            // poll(fds, nfds, ...) and ppoll(fds, nfds, ...): struct pollfd is 8 bytes.
            let count = a1.min(MAX_FDS);
            read_memory(pid, a0, count as usize * 8)
                .map(|bytes| polled_for_input(&bytes))
                .unwrap_or_default()
        }
        Some(Call::Select) => {
            // select(nfds, readfds, ...) and pselect6 alike: readfds is a bitmap of longs.
            let count = a0.min(MAX_FDS);
            if a1 == 0 || count == 0 {
                return Vec::new();
            }
            let words = count.div_ceil(64) as usize;
            read_memory(pid, a1, words * 8)
                .map(|bytes| selected_for_input(&bytes, count as usize))
                .unwrap_or_default()
        }
        None => Vec::new(),
    }
}

/// More fds than any sane poll set holds: a bound on what is read from another process.
const MAX_FDS: u64 = 65536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Accept,
    Poll,
    Select,
}

impl Call {
    fn of(number: i64) -> Option<Call> {
        let number = number as libc::c_long;
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        {
            if number == libc::SYS_poll {
                return Some(Call::Poll);
            }
            if number == libc::SYS_select {
                return Some(Call::Select);
            }
        }
        #[cfg(not(target_arch = "x86"))]
        if number == libc::SYS_accept {
            return Some(Call::Accept);
        }
        if number == libc::SYS_accept4 {
            Some(Call::Accept)
        } else if number == libc::SYS_ppoll {
            Some(Call::Poll)
        } else if number == libc::SYS_pselect6 {
            Some(Call::Select)
        } else {
            None
        }
    }
}

/// `length` bytes at `address` in process `pid`'s memory (see the module docs for why
/// `process_vm_readv` rather than /proc/PID/mem).
fn read_memory(pid: i32, address: u64, length: usize) -> Option<Vec<u8>> {
    let mut bytes = vec![0u8; length];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: address as usize,
        len: length,
    }];
    let read = nix::sys::uio::process_vm_readv(
        Pid::from_raw(pid),
        &mut [std::io::IoSliceMut::new(&mut bytes)],
        &remote,
    )
    .ok()?;
    (read == length).then_some(bytes)
}

/// The fds of a `struct pollfd` array that ask for input (POLLIN).
fn polled_for_input(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(8)
        .filter_map(|entry| {
            let fd = i32::from_ne_bytes(entry[0..4].try_into().ok()?);
            let events = i16::from_ne_bytes(entry[4..6].try_into().ok()?);
            (fd >= 0 && events & libc::POLLIN != 0).then_some(fd)
        })
        .collect()
}

/// The fds below `count` that are set in an `fd_set` (native-endian words of 64 bits).
fn selected_for_input(bytes: &[u8], count: usize) -> Vec<i32> {
    let mut fds = Vec::new();
    for (index, word) in bytes.chunks_exact(8).enumerate() {
        let word = u64::from_ne_bytes(word.try_into().expect("chunks_exact yields 8 bytes"));
        for bit in 0..64 {
            let fd = index * 64 + bit;
            if fd < count && word & (1 << bit) != 0 {
                fds.push(fd as i32);
            }
        }
    }
    fds
}

/// The targets listed in an epoll fd's fdinfo. Lines other than `tfd:` ones (the epoll's own
/// `pos`, `flags`, `mnt_id`, `ino`) are skipped, as are malformed ones.
pub fn parse_epoll_fdinfo(text: &str) -> Vec<EpollTarget> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("tfd:")?;
            let mut words = rest.split_whitespace();
            let fd = words.next()?.parse().ok()?;
            let mut events = None;
            let mut inode = None;
            while let Some(word) = words.next() {
                if word == "events:" {
                    events = u32::from_str_radix(words.next()?, 16).ok();
                } else if let Some(hex) = word.strip_prefix("ino:") {
                    inode = u64::from_str_radix(hex, 16).ok();
                }
            }
            Some(EpollTarget {
                fd,
                events: events?,
                inode: inode?,
            })
        })
        .collect()
}

/// `/proc/PID/task/TID/syscall`: `NR 0xARG1 ... 0xARG6 0xSP 0xPC` while the thread is blocked
/// in a call; `running`, or a negative number when it is not in one, give `None`.
pub fn parse_syscall(text: &str) -> Option<Syscall> {
    let mut words = text.split_whitespace();
    let number: i64 = words.next()?.parse().ok()?;
    if number < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for arg in &mut args {
        let word = words.next()?;
        *arg = u64::from_str_radix(word.strip_prefix("0x").unwrap_or(word), 16).ok()?;
    }
    Some(Syscall { number, args })
}

/// The process group of `pid`, from /proc/PID/stat.
pub(crate) fn process_group(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&stat, 2)
}

/// When `pid` started (clock ticks after boot), from /proc/PID/stat: with its pid, what
/// tells a process from a later one that got the same pid.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&stat, 19)
}

/// Field `index` after the command name of a stat line (0 = state, 1 = ppid, 2 = pgrp,
/// 19 = starttime).
fn stat_field<T: std::str::FromStr>(stat: &str, index: usize) -> Option<T> {
    // "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(index)?
        .parse()
        .ok()
}

/// The children of every thread of `pid`.
pub(crate) fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a Node server (libuv) on Linux 6.x, listening on fd 3 (inode 0x61d2).
    const NODE_FDINFO: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\n\
        tfd:       10 events:       19 data:               0a  pos:0 ino:1062 sdev:f\n\
        tfd:        3 events:       19 data:                3  pos:0 ino:61d2 sdev:8\n\
        tfd:       12 events:        4 data:               0c  pos:0 ino:61d5 sdev:8\n";

    #[test]
    fn epoll_fdinfo_lists_targets_and_skips_its_own_inode() {
        let targets = parse_epoll_fdinfo(NODE_FDINFO);
        assert_eq!(
            targets,
            vec![
                EpollTarget {
                    fd: 10,
                    events: 0x19,
                    inode: 0x1062
                },
                EpollTarget {
                    fd: 3,
                    events: 0x19,
                    inode: 0x61d2
                },
                EpollTarget {
                    fd: 12,
                    events: 0x4,
                    inode: 0x61d5
                },
            ]
        );
    }

    #[test]
    fn malformed_epoll_lines_are_skipped() {
        let text = "tfd: x events: 1 ino:5\ntfd: 4 events: 1\ntfd: 5 events: 1 ino:zz\n\
                    tfd: 6 events: 1 data: 0 pos:0 ino:a sdev:0\n";
        assert_eq!(
            parse_epoll_fdinfo(text),
            vec![EpollTarget {
                fd: 6,
                events: 1,
                inode: 10
            }]
        );
        assert_eq!(parse_epoll_fdinfo(""), Vec::new());
    }

    #[test]
    fn syscall_lines_give_number_and_arguments() {
        // A thread blocked in accept4(3, NULL, NULL, SOCK_CLOEXEC).
        let text = "288 0x3 0x0 0x0 0x80000 0x0 0x0 0x7ffd5b8 0x7f12ab\n";
        assert_eq!(
            parse_syscall(text),
            Some(Syscall {
                number: 288,
                args: [3, 0, 0, 0x80000, 0, 0]
            })
        );
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffd5b8 0x7f12ab\n"), None);
        assert_eq!(parse_syscall("7 0x1 0x2\n"), None);
        assert_eq!(parse_syscall(""), None);
    }

    #[test]
    fn pollfd_arrays_give_the_fds_asked_for_input() {
        let mut bytes = Vec::new();
        for (fd, events) in [(3i32, libc::POLLIN), (4, libc::POLLOUT), (-1, libc::POLLIN)] {
            bytes.extend_from_slice(&fd.to_ne_bytes());
            bytes.extend_from_slice(&events.to_ne_bytes());
            bytes.extend_from_slice(&0i16.to_ne_bytes());
        }
        assert_eq!(polled_for_input(&bytes), vec![3]);
    }

    #[test]
    fn fd_sets_give_the_fds_below_nfds() {
        let mut words = [0u64; 2];
        words[0] |= 1 << 3 | 1 << 9;
        words[1] |= 1 << (70 - 64);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(selected_for_input(&bytes, 71), vec![3, 9, 70]);
        assert_eq!(selected_for_input(&bytes, 10), vec![3, 9]);
    }

    #[test]
    fn stat_fields_survive_parentheses_in_the_name() {
        let stat = "4242 (a (b) c) S 1 4240 4240 0 -1 4194560";
        assert_eq!(stat_field(stat, 1), Some(1));
        assert_eq!(stat_field(stat, 2), Some(4240));
    }

    #[test]
    fn the_warning_names_the_listener_and_the_likely_cause() {
        assert_eq!(
            not_waiting_warning("tcp://[::]:8080", 3, std::time::Duration::from_millis(5200)),
            "not waiting for connections on tcp://[::]:8080 (fd 3) 5s after starting: does the \
             command take its socket from LISTEN_FDS (fd 3) rather than binding the port itself?"
        );
    }

    #[test]
    fn only_stream_sockets_are_listened_for() {
        use std::os::fd::AsFd;
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback binds");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("loopback binds");
        let listening =
            Listening::of_stream_sockets([tcp.as_fd(), udp.as_fd()]).expect("getsockopt works");
        assert_eq!(listening.inodes, vec![listener_inode(tcp.as_fd()).unwrap()]);
    }

    #[test]
    fn a_connection_is_accepted_from_a_listener_on_its_local_address() {
        let on = |local: &str, listener: &str| {
            accepted_on(
                local.parse().expect("an address"),
                listener.parse().expect("an address"),
            )
        };
        assert!(on("127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(on("127.0.0.2:8080", "0.0.0.0:8080"));
        assert!(on("[::ffff:127.0.0.1]:8080", "[::]:8080"));
        assert!(on("[::ffff:127.0.0.1]:8080", "127.0.0.1:8080"));
        assert!(!on("127.0.0.2:8080", "127.0.0.1:8080"));
        assert!(!on("127.0.0.1:40000", "0.0.0.0:8080"));
    }

    /// The only test of this process that calls [`seen`]: its tracker is the process's.
    #[test]
    fn only_a_connection_accepted_since_the_first_look_counts() {
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::AsFd;
        let listener = TcpListener::bind("127.0.0.1:0").expect("loopback binds");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let inode = listener_inode(listener.as_fd()).expect("fstat works");
        let wanted = [Wanted {
            inode,
            shared_tcp: Some(address),
        }];
        let scope = Scope::Tree(Pid::from_raw(std::process::id() as i32));
        // Accepted before the first look: as by the old generation, then passed over.
        let _early_client = TcpStream::connect(address).expect("the listener takes it");
        let (_early, _) = listener.accept().expect("accept succeeds");
        assert_eq!(
            seen(scope, &wanted).expect("/proc is readable"),
            Seen::default()
        );
        assert_eq!(
            seen(scope, &wanted).expect("/proc is readable"),
            Seen::default()
        );
        // A connection this process makes to the port: the listener's port is its peer's.
        let _outgoing = TcpStream::connect(address).expect("the listener takes it");
        assert_eq!(
            seen(scope, &wanted).expect("/proc is readable"),
            Seen::default()
        );
        // Accepted since the first look (the outgoing connection's other end).
        let (_late, _) = listener.accept().expect("accept succeeds");
        let found = seen(scope, &wanted).expect("/proc is readable");
        assert_eq!(
            found,
            Seen {
                waiting: Vec::new(),
                accepted: vec![inode]
            }
        );
        assert!(found.has(inode));
        // Not for a listener of the generation's own (steered): no address to match.
        let own = [Wanted {
            inode,
            shared_tcp: None,
        }];
        assert_eq!(
            seen(scope, &own).expect("/proc is readable"),
            Seen::default()
        );
    }

    #[test]
    fn socket_links_give_inodes() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn this_process_waits_on_a_listener_it_blocks_in_accept_on() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback binds");
        let inode = listener_inode(std::os::fd::AsFd::as_fd(&listener)).expect("fstat works");
        let pid = Pid::from_raw(std::process::id() as i32);
        // Nobody waits yet (this test's threads may be in other calls, never accept on it).
        assert_eq!(
            waiting_on(Scope::Tree(pid), &[inode]).unwrap(),
            Vec::<u64>::new()
        );
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let accepting = std::thread::spawn(move || listener.accept().map(drop));
        let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while waiting_on(Scope::Tree(pid), &[inode]).unwrap() != vec![inode] {
            assert!(
                std::time::Instant::now() < end,
                "the accepting thread was never seen"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::net::TcpStream::connect(address).expect("the listener accepts");
        accepting
            .join()
            .expect("the thread does not panic")
            .expect("accept succeeds");
    }
}
