//! Starting a process: every fork, exec, fd and signal-mask hazard lives in this module.
//!
//! # Why not `std::process::Command`
//!
//! The socket-activation protocol needs `LISTEN_PID` to be the *child's* pid, which exists
//! only after fork. std builds the environment before fork and installs it after any
//! `pre_exec` closure, and `setenv` after fork allocates, which is not async-signal-safe. So
//! this module prepares everything that allocates (argv, envp with a fixed-width `LISTEN_PID=`
//! slot, the fd list) *before* fork, and the child runs only raw syscalls until `execve`.
//!
//! # What the child does between fork and exec, in order
//!
//! 1. `setpgid(0, 0)`: its own process group (the parent calls it too, so that neither order
//!    of scheduling leaves a window in which the group does not exist yet). With `--user`
//!    (credentials to switch to), `setsid()` instead: a session of its own, and so no
//!    controlling terminal. A command of another user must not share root's terminal: with
//!    it, TIOCSTI would push input that root's shell runs once graceful-run exits (`su -c`
//!    calls setsid for the same reason). setsid also makes it a process group leader, as
//!    setpgid would; the parent then makes no setpgid call of its own, which would make the
//!    child a group leader first and its setsid fail (it is not needed anyway: `spawn`
//!    returns only once the child has exec'd).
//! 2. `tcsetpgrp`: if graceful-run was the terminal's foreground group, the new group takes
//!    the terminal, so the command can read it and Ctrl-C reaches it. SIGTTOU is blocked at
//!    this point (see below), which is what lets a background process do this. Not for a
//!    `--user` command, which has no controlling terminal: graceful-run keeps the
//!    foreground, so Ctrl-C reaches graceful-run, which forwards it.
//! 3. fds: every listener is first moved above the target range (`F_DUPFD_CLOEXEC`), then
//!    `dup2`'d to 3, 4, ...; `dup2` clears `FD_CLOEXEC` on the copy, and because the source is
//!    always a different fd the "dup2(fd, fd) is a no-op that keeps CLOEXEC" trap cannot
//!    happen. Every other fd above the range is marked close-on-exec (`close_range`, or a raw
//!    `getdents64` walk of /proc/self/fd on kernels older than 5.11): nothing of
//!    graceful-run's, nor anything graceful-run inherited, reaches the command.
//! 4. Signal dispositions: default for every signal, except those that were ignored when
//!    graceful-run started (e.g. HUP under nohup), which stay ignored as they would without
//!    graceful-run. graceful-run installs no handler (it reads its signals from a signalfd),
//!    so this takes one `sigaction` for SIGPIPE (main.rs ignores it first thing, as Rust's
//!    runtime would), plus one per originally ignored signal.
//! 5. Supplementary groups, gid, uid (`--user`), after everything needing privilege.
//! 6. `PR_SET_PDEATHSIG(SIGKILL)`, then a check that the parent is still the one that forked
//!    (it may have died at any point since fork, before the prctl took effect). Only after
//!    step 5: the kernel clears the death signal whenever the credentials change, so one set
//!    earlier would be gone for a `--user` command, which would outlive a SIGKILLed
//!    graceful-run holding the sockets. The death signal fires when the *thread* that
//!    forked exits: graceful-run forks only from its one runtime thread, which lives as long
//!    as the process.
//! 7. The `LISTEN_PID` (and, with `--watchdog`, `WATCHDOG_PID`) digits are written into the
//!    slots prepared before fork.
//! 8. The signal mask is emptied and `execve` runs. A signal that arrived since fork was held
//!    pending and now acts with its default disposition, as it would on the exec'd program.
//!    (graceful-run blocks every catchable signal for its whole life, see `signal::receive`,
//!    and a mask survives both fork and exec: this one call is what gives the command an
//!    empty one.)
//!
//! The child is started with `clone(CLONE_VM | CLONE_VFORK)`, as glibc's posix_spawn does, not
//! a full `fork()`: see [`clone_vfork`] for why and for the hazards of sharing memory.
//!
//! The parent blocks every signal around the clone as well (all of them: the few glibc and
//! the kernel leave out of graceful-run's mask included), so that nothing can run in the child
//! before step 5.
//!
//! Failure before exec is reported through a close-on-exec pipe: the child writes which step
//! failed and the errno, then `_exit`s; the parent reads EOF when exec succeeded. The parent
//! reaps such a child itself, at once: it exists only inside `spawn`.
//!
//! Everything after the clone in the child is async-signal-safe: only raw libc syscalls, on
//! memory allocated before fork, with no locks and no allocation.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::libc::{self, c_char, c_int};
use nix::unistd::Pid;

use crate::signal::Signal;

/// The user and groups a command runs as (`--user`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

/// Everything one spawn needs; built by the caller, consumed by [`spawn`].
pub struct Plan<'a> {
    /// The file to execute (already looked up on PATH).
    pub executable: &'a Path,
    /// argv, starting with argv[0] as the user wrote it.
    pub argv: &'a [OsString],
    /// The complete environment as `KEY=VALUE`, except LISTEN_PID.
    pub env: Vec<OsString>,
    /// Add `LISTEN_PID=<the child's pid>`.
    pub listen_pid: bool,
    /// Add `WATCHDOG_PID=<the child's pid>` (`--watchdog`): systemd names the main process
    /// the watchdog expects pings from, and sd_watchdog_enabled(3) ignores WATCHDOG_USEC when
    /// WATCHDOG_PID is another process's.
    pub watchdog_pid: bool,
    /// fds to place at 3, 4, ... in this order.
    pub fds: &'a [RawFd],
    pub new_process_group: bool,
    /// A terminal whose foreground process group the child takes.
    pub terminal: Option<RawFd>,
    pub credentials: Option<&'a Credentials>,
    /// Signals the child keeps ignored; every other one gets its default disposition.
    pub ignored_signals: &'a [Signal],
}

/// The step of the child's setup that failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum Stage {
    ProcessGroup = 1,
    DeathSignal,
    Fds,
    CloseOtherFds,
    Signals,
    Groups,
    Gid,
    Uid,
    Exec,
}

impl Stage {
    fn from_raw(raw: u32) -> Stage {
        match raw {
            1 => Stage::ProcessGroup,
            2 => Stage::DeathSignal,
            3 => Stage::Fds,
            4 => Stage::CloseOtherFds,
            5 => Stage::Signals,
            6 => Stage::Groups,
            7 => Stage::Gid,
            8 => Stage::Uid,
            _ => Stage::Exec,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Stage::ProcessGroup => "cannot create a process group",
            Stage::DeathSignal => "cannot set the parent-death signal",
            Stage::Fds => "cannot place the listening sockets at fd 3",
            Stage::CloseOtherFds => "cannot close inherited fds",
            Stage::Signals => "cannot reset signal dispositions",
            Stage::Groups => "cannot set supplementary groups",
            Stage::Gid => "cannot set the group id",
            Stage::Uid => "cannot set the user id",
            Stage::Exec => "cannot execute",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SpawnError {
    Fork(Errno),
    Child { stage: Stage, errno: Errno },
}

impl SpawnError {
    /// 127 when exec found nothing, 126 when it found something it cannot run, else 125.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::Child {
                stage: Stage::Exec,
                errno: Errno::ENOENT,
            } => crate::exit::NOT_FOUND,
            SpawnError::Child {
                stage: Stage::Exec, ..
            } => crate::exit::CANNOT_RUN,
            _ => crate::exit::FAILURE,
        }
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Fork(errno) => write!(f, "cannot fork: {}", errno.desc()),
            SpawnError::Child { stage, errno } => {
                write!(f, "{}: {}", stage.describe(), errno.desc())
            }
        }
    }
}

/// Why COMMAND cannot run: not found (as written), or found at a path but not executable.
#[derive(Debug, PartialEq, Eq)]
pub enum LookupError {
    NotFound(PathBuf),
    NotExecutable(PathBuf, String),
}

impl LookupError {
    pub fn exit_code(&self) -> i32 {
        match self {
            LookupError::NotFound(_) => crate::exit::NOT_FOUND,
            LookupError::NotExecutable(..) => crate::exit::CANNOT_RUN,
        }
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NotFound(program) => write!(f, "{}: command not found", program.display()),
            LookupError::NotExecutable(path, why) => {
                write!(f, "{}: cannot execute: {why}", path.display())
            }
        }
    }
}

/// Finds `program` as execvp(3) would: a name with a `/` is used as is, anything else is
/// searched on `path` (PATH). A candidate that exists but cannot be executed is remembered
/// and the search goes on; it is the error only when nothing executable is found.
pub fn look_up(program: &OsStr, path: Option<&OsStr>) -> Result<PathBuf, LookupError> {
    let not_found = || LookupError::NotFound(PathBuf::from(program));
    if program.is_empty() {
        return Err(not_found());
    }
    if program.as_bytes().contains(&b'/') {
        let candidate = PathBuf::from(program);
        return check_executable(&candidate).map(|()| candidate);
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    let mut denied = None;
    for dir in path.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(program);
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(LookupError::NotFound(_)) => {}
            Err(error) => {
                denied.get_or_insert(error);
            }
        }
    }
    Err(denied.unwrap_or_else(not_found))
}

fn check_executable(candidate: &Path) -> Result<(), LookupError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(candidate) {
        Ok(meta) => meta,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Err(LookupError::NotFound(candidate.into()));
        }
        Err(e) => return Err(LookupError::NotExecutable(candidate.into(), e.to_string())),
    };
    if meta.is_dir() {
        return Err(LookupError::NotExecutable(
            candidate.into(),
            "is a directory".into(),
        ));
    }
    if meta.permissions().mode() & 0o111 == 0
        || nix::unistd::access(candidate, nix::unistd::AccessFlags::X_OK).is_err()
    {
        return Err(LookupError::NotExecutable(
            candidate.into(),
            "permission denied".into(),
        ));
    }
    Ok(())
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
const WATCHDOG_PID_PREFIX: &[u8] = b"WATCHDOG_PID=";
/// Room for the longer prefix, the ten digits of any pid and the NUL.
const LISTEN_PID_SLOT: usize = 32;

/// C strings and pointer arrays for execve, all allocated before fork.
struct ExecArrays {
    _storage: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// The heap slot `LISTEN_PID=` + digits; owned here, pointed to from `envp`.
    listen_pid_slot: Option<*mut u8>,
    /// The same for `WATCHDOG_PID=`.
    watchdog_pid_slot: Option<*mut u8>,
}

/// A heap slot `PREFIX` + room for the digits, pointed to from `envp`; freed by
/// [`free_slot`].
fn pid_slot(prefix: &[u8], envp: &mut Vec<*const c_char>) -> *mut u8 {
    let mut slot = Box::new([0u8; LISTEN_PID_SLOT]);
    slot[..prefix.len()].copy_from_slice(prefix);
    let raw = Box::into_raw(slot).cast::<u8>();
    envp.push(raw.cast_const().cast::<c_char>());
    raw
}

/// Frees a slot of [`pid_slot`].
///
/// # Safety
/// `raw` came from `pid_slot` and is freed only once.
unsafe fn free_slot(raw: *mut u8) {
    // SAFETY: `raw` came from Box::into_raw of a [u8; LISTEN_PID_SLOT] (the caller's promise).
    drop(unsafe { Box::from_raw(raw.cast::<[u8; LISTEN_PID_SLOT]>()) });
}

impl ExecArrays {
    fn new(plan: &Plan) -> Result<(CString, ExecArrays), Errno> {
        let to_c = |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| Errno::EINVAL);
        let executable = to_c(plan.executable.as_os_str())?;
        let mut storage = Vec::with_capacity(plan.argv.len() + plan.env.len());
        let mut argv = Vec::with_capacity(plan.argv.len() + 1);
        for arg in plan.argv {
            let c = to_c(arg)?;
            argv.push(c.as_ptr());
            storage.push(c);
        }
        argv.push(std::ptr::null());
        let mut envp = Vec::with_capacity(plan.env.len() + 3);
        for entry in &plan.env {
            let c = to_c(entry)?;
            envp.push(c.as_ptr());
            storage.push(c);
        }
        let listen_pid_slot = plan
            .listen_pid
            .then(|| pid_slot(LISTEN_PID_PREFIX, &mut envp));
        let watchdog_pid_slot = plan
            .watchdog_pid
            .then(|| pid_slot(WATCHDOG_PID_PREFIX, &mut envp));
        envp.push(std::ptr::null());
        Ok((
            executable,
            ExecArrays {
                _storage: storage,
                argv,
                envp,
                listen_pid_slot,
                watchdog_pid_slot,
            },
        ))
    }
}

impl Drop for ExecArrays {
    fn drop(&mut self) {
        for raw in [self.listen_pid_slot.take(), self.watchdog_pid_slot.take()]
            .into_iter()
            .flatten()
        {
            // SAFETY: `raw` came from pid_slot in `new` and is freed only here, once (take()).
            unsafe { free_slot(raw) };
        }
    }
}

/// Starts a process as `plan` describes; returns its pid once it has exec'd.
pub fn spawn(plan: &Plan) -> Result<Pid, SpawnError> {
    let (executable, arrays) = ExecArrays::new(plan).map_err(SpawnError::Fork)?;
    // Scratch copy of the fds, mutated by the child while it moves them.
    let mut fds: Vec<c_int> = plan.fds.to_vec();
    let groups: Vec<libc::gid_t> = plan
        .credentials
        .map(|c| c.groups.clone())
        .unwrap_or_default();
    let (report_read, report_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(SpawnError::Fork)?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };

    let all = nix::sys::signal::SigSet::all();
    let mut previous = nix::sys::signal::SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&all),
        Some(&mut previous),
    )
    .map_err(SpawnError::Fork)?;

    use std::os::fd::AsRawFd;
    let mut child = ChildSetup {
        executable: executable.as_ptr(),
        argv: arrays.argv.as_ptr(),
        envp: arrays.envp.as_ptr(),
        listen_pid_slot: arrays.listen_pid_slot,
        watchdog_pid_slot: arrays.watchdog_pid_slot,
        fds: &mut fds,
        new_process_group: plan.new_process_group,
        terminal: plan.terminal,
        credentials: plan.credentials.map(|c| (c.uid, c.gid)),
        groups: &groups,
        ignored: plan.ignored_signals,
        parent,
        report: report_write.as_raw_fd(),
    };
    let pid = match ChildStack::new() {
        // SAFETY: see `clone_vfork`: the stack is ours and unused, `child` lives in this
        // frame until clone returns, which CLONE_VFORK makes happen only after the child
        // exec'd or exited.
        Ok(stack) => unsafe { clone_vfork(&mut child, &stack) },
        Err(_) => -1,
    };
    let fork_error = Errno::last();
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&previous),
        None,
    );
    drop(report_write);
    if pid < 0 {
        return Err(SpawnError::Fork(fork_error));
    }
    let pid = Pid::from_raw(pid);
    if plan.new_process_group && plan.credentials.is_none() {
        // Also done in the child; whichever runs first creates the group. EACCES means the
        // child has already exec'd, ESRCH that it is gone: both are fine here.
        let _ = nix::unistd::setpgid(pid, pid);
    }
    match read_report(&report_read) {
        None => Ok(pid),
        Some((stage, errno)) => {
            // The child is exiting; it was never visible outside this function.
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(SpawnError::Child { stage, errno })
        }
    }
}

/// The child's stack for [`clone_vfork`]: an anonymous mapping with a guard page below it.
/// The child needs a few KiB (its largest local is the 4 KiB getdents64 buffer); only the
/// pages it touches become memory.
struct ChildStack {
    base: *mut libc::c_void,
}

impl ChildStack {
    const GUARD: usize = 4096;
    const SIZE: usize = 64 * 1024;

    fn new() -> Result<ChildStack, Errno> {
        // SAFETY: a new private anonymous mapping, checked; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::GUARD + Self::SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let stack = ChildStack { base };
        // SAFETY: the lowest page of the mapping just made: an overflow faults instead of
        // writing below the stack.
        if unsafe { libc::mprotect(base, Self::GUARD, libc::PROT_NONE) } != 0 {
            return Err(Errno::last());
        }
        Ok(stack)
    }

    /// The initial stack pointer (stacks grow down on every architecture Linux runs Rust on
    /// except none that graceful-run builds for), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: within (one past the end of) the mapping.
        unsafe { self.base.cast::<u8>().add(Self::GUARD + Self::SIZE).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unused once clone_vfork returned.
        unsafe { libc::munmap(self.base, Self::GUARD + Self::SIZE) };
    }
}

/// `clone(CLONE_VM | CLONE_VFORK)`, what glibc's posix_spawn does: the child borrows
/// graceful-run's memory instead of copying its page tables, and every page graceful-run
/// writes afterwards is not a copy-on-write fault (a full fork() of graceful-run was most of
/// what its startup cost beyond tini's; see BENCHMARKS.md, figure 1). Returns the child's pid,
/// or -1 with errno set.
///
/// Hazards, all handled in [`ChildSetup::run`]:
/// - The child shares memory with the parent: it writes only what was prepared for it (the
///   `fds` scratch copy, the `LISTEN_PID=` slot) and its own stack, never allocates, never
///   takes a lock. Other threads of graceful-run keep running beside it, so no lock that one of
///   them might hold can be taken either (glibc's `setuid`/`setgid`/`setgroups` broadcast to
///   all threads under a lock: the child makes those as raw system calls, which change the
///   credentials of the calling process only).
/// - It also shares thread-local storage with the calling thread (errno among it); that thread
///   is suspended until the child execs or exits, and reads nothing the child wrote but the
///   report pipe.
/// - Every signal is blocked (by the caller) across the clone; no handler exists anyway.
///
/// # Safety
/// `stack` must be unused by anything else, and `child` must stay valid until this returns.
unsafe fn clone_vfork(child: &mut ChildSetup<'_>, stack: &ChildStack) -> c_int {
    extern "C" fn entry(arg: *mut libc::c_void) -> c_int {
        // SAFETY: `arg` is the `&mut ChildSetup` given to clone below; the parent is suspended
        // (CLONE_VFORK) and does not touch it until the child has exec'd or exited. The
        // bitwise copy is consumed by `run`, which never returns, so nothing is dropped twice.
        unsafe { std::ptr::read(arg.cast::<ChildSetup<'_>>()).run() }
    }
    // SAFETY: see the function's docs; SIGCHLD as the exit signal makes it an ordinary child
    // for waitid/waitpid.
    unsafe {
        libc::clone(
            entry,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (child as *mut ChildSetup<'_>).cast(),
        )
    }
}

/// EOF means exec succeeded; 8 bytes are the failed stage and errno.
fn read_report(pipe: &std::os::fd::OwnedFd) -> Option<(Stage, Errno)> {
    let mut buf = [0u8; 8];
    let mut filled = 0;
    while filled < buf.len() {
        match nix::unistd::read(pipe, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    (filled == buf.len()).then(|| {
        let stage = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        (Stage::from_raw(stage), Errno::from_raw(errno))
    })
}

/// What the child needs, as raw pointers and plain integers.
struct ChildSetup<'a> {
    executable: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    listen_pid_slot: Option<*mut u8>,
    watchdog_pid_slot: Option<*mut u8>,
    fds: &'a mut [c_int],
    new_process_group: bool,
    terminal: Option<RawFd>,
    credentials: Option<(u32, u32)>,
    groups: &'a [libc::gid_t],
    ignored: &'a [Signal],
    parent: libc::pid_t,
    report: c_int,
}

impl ChildSetup<'_> {
    /// The child's side of spawn. Only async-signal-safe syscalls from here on.
    ///
    /// # Safety
    /// Must run only in the child of [`clone_vfork`], with every signal blocked.
    unsafe fn run(mut self) -> ! {
        // SAFETY (for every libc call below): plain syscalls on integers and on memory that was
        // allocated before fork and is owned by this (copied) address space; none allocates,
        // locks or touches Rust's runtime.
        unsafe {
            // Another user's command: a session of its own, without graceful-run's
            // controlling terminal (see the module docs). setsid is a plain syscall.
            let own_session = self.credentials.is_some();
            if own_session {
                if libc::setsid() < 0 {
                    self.fail(Stage::ProcessGroup);
                }
            } else if self.new_process_group && libc::setpgid(0, 0) != 0 {
                self.fail(Stage::ProcessGroup);
            }
            if let Some(terminal) = self.terminal
                && !own_session
            {
                // Not fatal: the command still runs, without the terminal's foreground.
                libc::tcsetpgrp(terminal, libc::getpid());
            }
            self.place_fds();
            self.close_other_fds();
            self.reset_signals();
            if let Some((uid, gid)) = self.credentials {
                // Raw system calls, not glibc's wrappers: those signal every thread of the
                // parent, whose memory the child shares (see `clone_vfork`).
                if libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr()) != 0
                {
                    self.fail(Stage::Groups);
                }
                if libc::syscall(libc::SYS_setgid, gid) != 0 {
                    self.fail(Stage::Gid);
                }
                if libc::syscall(libc::SYS_setuid, uid) != 0 {
                    self.fail(Stage::Uid);
                }
            }
            // After the credential change, which clears the death signal (see the module
            // docs). prctl and getppid are plain syscalls, async-signal-safe.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                self.fail(Stage::DeathSignal);
            }
            if libc::getppid() != self.parent {
                // graceful-run died before the prctl took effect: nobody supervises us, and
                // the death signal will never come. (A re-parented child sees its subreaper
                // or init here, never the pid recorded before fork.)
                libc::_exit(crate::exit::FAILURE);
            }
            if let Some(slot) = self.listen_pid_slot {
                write_decimal(libc::getpid() as u32, slot.add(LISTEN_PID_PREFIX.len()));
            }
            // The same digits: systemd's WATCHDOG_PID is the main process, this one.
            if let Some(slot) = self.watchdog_pid_slot {
                write_decimal(libc::getpid() as u32, slot.add(WATCHDOG_PID_PREFIX.len()));
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execve(self.executable, self.argv, self.envp);
            self.fail(Stage::Exec)
        }
    }

    /// Listeners to 3, 4, ...; the report pipe out of their way.
    unsafe fn place_fds(&mut self) {
        let first_free = 3 + self.fds.len() as c_int;
        // SAFETY: fcntl/dup2 on fds this process holds; see `run`.
        unsafe {
            // Phase 1: nothing that must survive may sit inside 3..first_free.
            if self.report < first_free {
                let moved = libc::fcntl(self.report, libc::F_DUPFD_CLOEXEC, first_free);
                if moved < 0 {
                    self.fail(Stage::Fds);
                }
                self.report = moved;
            }
            for i in 0..self.fds.len() {
                if self.fds[i] < first_free {
                    let moved = libc::fcntl(self.fds[i], libc::F_DUPFD_CLOEXEC, first_free);
                    if moved < 0 {
                        self.fail(Stage::Fds);
                    }
                    self.fds[i] = moved;
                }
            }
            // Phase 2: every source is now >= first_free, so each dup2 really copies and
            // clears FD_CLOEXEC on its target.
            for i in 0..self.fds.len() {
                if libc::dup2(self.fds[i], 3 + i as c_int) < 0 {
                    self.fail(Stage::Fds);
                }
            }
        }
    }

    /// Marks every fd from 3+N up close-on-exec.
    unsafe fn close_other_fds(&mut self) {
        let first = 3 + self.fds.len() as libc::c_uint;
        // SAFETY: see `run`; the buffer is on the stack.
        unsafe {
            if libc::syscall(
                libc::SYS_close_range,
                first,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) == 0
            {
                return;
            }
            // Kernels before 5.11: walk /proc/self/fd with raw getdents64.
            let dir = libc::open(
                c"/proc/self/fd".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            if dir < 0 {
                self.fail(Stage::CloseOtherFds);
            }
            let mut buf = [0u64; 512];
            loop {
                let n = libc::syscall(
                    libc::SYS_getdents64,
                    dir,
                    buf.as_mut_ptr(),
                    std::mem::size_of_val(&buf),
                );
                if n <= 0 {
                    break;
                }
                let bytes = buf.as_ptr().cast::<u8>();
                let mut offset = 0usize;
                while offset < n as usize {
                    // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
                    let record = bytes.add(offset);
                    let reclen = u16::from_ne_bytes([*record.add(16), *record.add(17)]) as usize;
                    let fd = parse_fd(record.add(19));
                    if let Some(fd) = fd
                        && fd >= first as c_int
                        && fd != dir
                    {
                        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    }
                    offset += reclen;
                }
            }
            libc::close(dir);
        }
    }

    /// Dispositions, the command's way (step 4 of the module docs). graceful-run installs no
    /// handler (signals reach it through a signalfd, see `signal::receive`), and exec resets
    /// any handler anyway, so only what graceful-run changed to or from "ignored" is left:
    /// SIGPIPE, which main.rs ignores, back to the default; and the signals that were
    /// ignored when graceful-run started ignored again (SIGCHLD is the one graceful-run sets
    /// to its default, for its own reaping). Usually one call in all.
    unsafe fn reset_signals(&mut self) {
        let pipe = std::iter::once((Signal::PIPE, libc::SIG_DFL));
        let ignored = self.ignored.iter().map(|s| (*s, libc::SIG_IGN));
        for (signal, disposition) in pipe.chain(ignored) {
            // SAFETY: see `run`; sigaction with SIG_DFL/SIG_IGN installs no code.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = disposition;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal.raw(), &action, std::ptr::null_mut()) != 0 {
                    self.fail(Stage::Signals);
                }
            }
        }
    }

    /// Reports the failed stage and errno to the parent and exits.
    unsafe fn fail(&self, stage: Stage) -> ! {
        // SAFETY: errno location, write and _exit are async-signal-safe.
        unsafe {
            let errno = *libc::__errno_location();
            let mut message = [0u8; 8];
            message[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
            message[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(self.report, message.as_ptr().cast(), message.len());
            // The report says what failed; the status only has to say that something did.
            libc::_exit(crate::exit::FAILURE)
        }
    }
}

/// Writes `n` in decimal followed by a NUL; `out` has room for 11 bytes.
///
/// # Safety
/// `out` must point to at least 11 writable bytes.
unsafe fn write_decimal(mut n: u32, out: *mut u8) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: i + 1 <= 11 bytes, guaranteed by the caller.
        unsafe { *out.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: as above.
    unsafe { *out.add(len) = 0 };
}

/// Parses a NUL-terminated decimal fd name from a dirent.
///
/// # Safety
/// `name` must point to a NUL-terminated string.
unsafe fn parse_fd(name: *const u8) -> Option<c_int> {
    let mut value: c_int = 0;
    let mut i = 0;
    loop {
        // SAFETY: the kernel NUL-terminates d_name.
        let byte = unsafe { *name.add(i) };
        if byte == 0 {
            break;
        }
        if !byte.is_ascii_digit() || i > 9 {
            return None;
        }
        value = value * 10 + (byte - b'0') as c_int;
        i += 1;
    }
    (i > 0).then_some(value)
}

/// Builds `KEY=VALUE` entries.
pub fn env_entry(key: &str, value: impl AsRef<OsStr>) -> OsString {
    let mut entry = OsString::from(key);
    entry.push("=");
    entry.push(value);
    entry
}

/// The key of a `KEY=VALUE` entry.
pub fn env_key(entry: &OsStr) -> &[u8] {
    let bytes = entry.as_bytes();
    bytes.split(|b| *b == b'=').next().unwrap_or(bytes)
}

/// The process environment as `KEY=VALUE` entries.
pub fn current_env() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(key, value)| {
            let mut entry = key.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            OsString::from_vec(entry)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits() {
        let mut buf = [0xffu8; 11];
        for (n, text) in [
            (0u32, "0"),
            (7, "7"),
            (4194304, "4194304"),
            (u32::MAX, "4294967295"),
        ] {
            // SAFETY: buf has 11 bytes.
            unsafe { write_decimal(n, buf.as_mut_ptr()) };
            let end = buf.iter().position(|b| *b == 0).unwrap();
            assert_eq!(&buf[..end], text.as_bytes());
        }
    }

    #[test]
    fn fd_names() {
        // SAFETY: NUL-terminated literals.
        unsafe {
            assert_eq!(parse_fd(c"42".as_ptr().cast()), Some(42));
            assert_eq!(parse_fd(c".".as_ptr().cast()), None);
            assert_eq!(parse_fd(c"".as_ptr().cast()), None);
        }
    }

    #[test]
    fn look_up_follows_execvp() {
        assert_eq!(
            look_up(OsStr::new("sh"), Some(OsStr::new("/nonexistent:/bin"))),
            Ok(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            look_up(OsStr::new("no-such-command-x"), None),
            Err(LookupError::NotFound("no-such-command-x".into()))
        );
        assert!(matches!(
            look_up(OsStr::new("/etc"), None),
            Err(LookupError::NotExecutable(..))
        ));
        assert!(matches!(
            look_up(OsStr::new("/etc/passwd"), None),
            Err(LookupError::NotExecutable(..))
        ));
        assert_eq!(
            look_up(OsStr::new("/no/such/file"), None),
            Err(LookupError::NotFound("/no/such/file".into()))
        );
    }

    #[test]
    fn env_helpers() {
        let entry = env_entry("LISTEN_FDS", "2");
        assert_eq!(entry, OsString::from("LISTEN_FDS=2"));
        assert_eq!(env_key(&entry), b"LISTEN_FDS");
    }
}
