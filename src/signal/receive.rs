//! Receiving signals as events, with who sent them.
//!
//! graceful-run takes every catchable signal (1-31 except KILL and STOP, and the real-time
//! signals SIGRTMIN..SIGRTMAX) itself: as PID 1 the kernel drops any signal without a handler,
//! elsewhere an unhandled real-time signal would kill graceful-run outright (its default
//! action) and leave its socket files behind; and every one of them is either acted on (TERM,
//! INT, the restart signal, CHLD) or forwarded to the command, as tini does.
//!
//! How: every catchable signal is blocked (`sigprocmask`) before graceful-run has a second
//! thread, so every thread it ever starts inherits the blocked mask, and the signals are read
//! from a `signalfd` registered in the event loop, as catatonit does (tini and dumb-init take
//! them synchronously with `sigtimedwait`/`sigwait`, which a single event loop cannot). This is
//! the cheapest path the kernel offers: no handler, no signal frame, no self-pipe. Measured
//! against the previous signal-hook-tokio chain (handler → socket pair → reader): per
//! forwarded signal 3 system calls instead of 6 plus a signal frame, and at startup 2 system
//! calls instead of about 60 `sigaction`s (and as many again in each child before exec).
//!
//! The traps, and why they do not bite:
//! - A blocked signal is never discarded at send time, even with a `SIG_DFL` disposition in
//!   PID 1 (the kernel's `sig_ignored` says no for a blocked signal), so PID 1 still gets
//!   every signal.
//! - The mask survives fork and exec: spawn.rs empties the child's mask right before
//!   `execve` (one `sigprocmask`); its dispositions need no reset, because graceful-run
//!   installs no handler (only SIGPIPE, which main.rs ignores first thing as Rust's runtime
//!   would, is reset there).
//! - A real fault (ILL, FPE, SEGV, BUS raised by the kernel on a faulting instruction) is
//!   forced through a blocked mask by the kernel with its default action: graceful-run dies
//!   with a core dump, as it should. The same signals sent with kill(2) are queued and read
//!   here like any other.
//! - SIGCHLD inherited as ignored would make the kernel reap children by itself (and the
//!   reaper's `waitid` fail): its disposition is set to the default, which only queues it.
//!   (A command still inherits it ignored, see `originally_ignored`.)
//! - glibc keeps its two internal signals (32, 33) out of any mask it is given, so `setuid`
//!   across threads and thread cancellation still work.
//!
//! The sender's pid comes with each signal (`ssi_pid`), which lets the supervisor ignore a
//! TERM that the command itself sends to its parent (grace and endless in Go do that after a
//! restart) and tell a terminal's signals (sent by the kernel) from a user's.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::task::{Context, Poll};

use nix::libc;
use tokio::io::unix::AsyncFd;

use super::Signal;

/// One signal, as it arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub signal: Signal,
    /// The sending process, when a process sent it (kill, sigqueue, tkill).
    pub sender: Option<i32>,
    /// Sent by the kernel itself: a terminal's Ctrl-C, Ctrl-\, Ctrl-Z, resize or hangup.
    pub from_kernel: bool,
}

pub struct SignalReceiver {
    fd: AsyncFd<OwnedFd>,
    /// Read but not yet returned: one read takes up to [`BATCH`] records.
    queued: VecDeque<Received>,
    /// Where the records are read to: zeroed once, not on every read.
    buffer: [u8; RECORD * BATCH],
}

/// Records read with one `read(2)`: a burst (a terminal's Ctrl-C along with a CHLD) costs one
/// system call, and a short read tells that the queue is empty without a second one.
const BATCH: usize = 4;

/// The size of one `struct signalfd_siginfo` (fixed by the kernel's ABI).
const RECORD: usize = std::mem::size_of::<libc::signalfd_siginfo>();

/// Signals that were ignored when graceful-run started (e.g. HUP under nohup). Read before
/// any disposition is changed, so that children can inherit them ignored. SIGPIPE is left out:
/// main.rs ignores it first thing (as Rust's runtime would), and a command gets it at its
/// default.
///
/// From the `SigIgn` mask of /proc/self/status (3 system calls), or, without /proc (an early
/// PID 1), one `sigaction` read per signal (62).
pub fn originally_ignored() -> Vec<Signal> {
    let candidates = || Signal::all().filter(|s| s.is_catchable() && *s != Signal::PIPE);
    if let Some(mask) = ignored_mask_from_proc() {
        return candidates()
            .filter(|s| mask & (1u64 << (s.raw() - 1)) != 0)
            .collect();
    }
    candidates()
        .filter(|s| {
            // SAFETY: sigaction with a null new action only reads the current one into `old`.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(s.raw(), std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_IGN
            }
        })
        .collect()
}

/// The `SigIgn:` line of /proc/self/status: bit n-1 set when signal n is ignored.
///
/// Read into one buffer larger than the file (about 1.5 KiB): open, one or two `read`s,
/// close, where `read_to_string` asked the size first (0 for /proc) and read in growing
/// pieces, 12 system calls.
fn ignored_mask_from_proc() -> Option<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open("/proc/self/status").ok()?;
    let mut buffer = [0u8; 8192];
    let mut len = 0;
    while len < buffer.len() {
        match file.read(&mut buffer[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let status = std::str::from_utf8(&buffer[..len]).ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Every catchable signal, as a mask. glibc leaves out its internal 32 and 33 by itself.
fn catchable_mask() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset reads it; both only write the
    // local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in Signal::all().filter(|s| s.is_catchable()) {
            libc::sigaddset(&mut set, signal.raw());
        }
        set
    }
}

impl SignalReceiver {
    /// Blocks every catchable signal in the calling thread and opens the signalfd that reads
    /// them. Must run inside the tokio runtime, on the thread that runs it, before graceful-run
    /// starts any other thread (they inherit the mask; a thread without it would take a
    /// process signal with its default action).
    pub fn install() -> io::Result<SignalReceiver> {
        let mask = catchable_mask();
        // SAFETY: SIG_DFL installs no code; for SIGCHLD it only queues the signal (see the
        // module docs: an inherited SIG_IGN would make the kernel reap our children).
        if unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the mask is a valid initialised set; blocking changes no memory of ours.
        let result = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()) };
        if result != 0 {
            return Err(io::Error::from_raw_os_error(result));
        }
        // SAFETY: signalfd with -1 creates a new fd from a valid mask; the result is checked.
        let raw = unsafe { libc::signalfd(-1, &mask, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an OwnedFd's raw fd is open, refers to the same signalfd and is the same
        // number for as long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(SignalReceiver {
            fd,
            queued: VecDeque::with_capacity(BATCH),
            buffer: [0; RECORD * BATCH],
        })
    }

    /// The next signal, for the supervisor's loop; never ends: the signalfd lives as long as
    /// the process. Records read but not yet returned wait in `self.queued`. The waker goes
    /// into the fd's one reader slot (no waiter to link in and unlink on every wakeup, as the
    /// `readable()` future does), and a signal costs one `read(2)`, which also tells, by
    /// coming back short, that the queue is empty: no second read that fails with EAGAIN.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Received> {
        loop {
            if let Some(received) = self.queued.pop_front() {
                return Poll::Ready(received);
            }
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Pending => return Poll::Pending,
                // The fd stays registered for the process's life: a failure here is a bug
                // in the runtime; wait for the next readiness rather than spin.
                Poll::Ready(Err(_)) => return Poll::Pending,
            };
            let buffer = &mut self.buffer;
            // SAFETY: read(2) into our own buffer of the given length.
            let read = unsafe {
                libc::read(
                    guard.get_inner().as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if read < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                }
                continue;
            }
            let read = read as usize;
            if read < buffer.len() {
                // Short read: the queue was empty. tokio's readiness tick keeps a signal that
                // arrived since then from being lost (it re-arms on the next event).
                guard.clear_ready();
            }
            for record in buffer[..read].chunks_exact(RECORD) {
                // SAFETY: the kernel wrote whole `signalfd_siginfo` records, a plain C struct
                // of integers; read_unaligned copes with the byte buffer's alignment.
                let info: libc::signalfd_siginfo =
                    unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
                if let Some(received) = decode(&info) {
                    self.queued.push_back(received);
                }
            }
        }
    }

    /// Gives back a signal that [`SignalReceiver::poll_next`] just returned, to be returned
    /// first again (the loop takes something else before it).
    pub fn put_back(&mut self, received: Received) {
        self.queued.push_front(received);
    }
}

/// What a signalfd record says, in the terms the supervisor uses (the same as signal-hook's
/// `WithOrigin` gave, which the supervisor was written against).
fn decode(info: &libc::signalfd_siginfo) -> Option<Received> {
    let signal = Signal::from_raw(info.ssi_signo as i32)?;
    let code = info.ssi_code;
    let pid = info.ssi_pid as i32;
    if signal.is_realtime() || signal.is_fault() {
        // A positive si_code is the kernel's own (a real fault never gets here: it is forced
        // through the mask, see the module docs).
        let from_kernel = code > 0;
        return Some(Received {
            signal,
            sender: (!from_kernel).then_some(pid),
            from_kernel,
        });
    }
    let from_kernel = code == libc::SI_KERNEL;
    let sent = matches!(
        code,
        libc::SI_USER | libc::SI_TKILL | libc::SI_QUEUE | libc::SI_MESGQ
    );
    // CLD_EXITED..=CLD_CONTINUED (1..=6): the child whose state changed.
    let child = signal == Signal::CHLD && (1..=6).contains(&code);
    Some(Received {
        signal,
        sender: (sent || child).then_some(pid),
        from_kernel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_signals_are_read_without_changing_them() {
        // SIGURG's default action is to ignore it, so ignoring it for a moment disturbs no
        // other test in this process.
        let urg = Signal::from_raw(libc::SIGURG).expect("SIGURG is 1-31");
        // SAFETY: SIG_IGN and SIG_DFL install no code.
        unsafe { libc::signal(libc::SIGURG, libc::SIG_IGN) };
        let ignored = originally_ignored();
        // SAFETY: as above.
        let still_ignored = unsafe { libc::signal(libc::SIGURG, libc::SIG_DFL) } == libc::SIG_IGN;
        assert!(ignored.contains(&urg), "{ignored:?}");
        assert!(still_ignored, "reading the dispositions changed one");
        assert!(
            !ignored.contains(&Signal::PIPE),
            "SIGPIPE's original state is unknowable"
        );
    }

    #[test]
    fn the_proc_mask_agrees_with_sigaction() {
        let mask = ignored_mask_from_proc().expect("/proc/self/status has SigIgn");
        // SIGURG is left out: the test above flips it, maybe at the same time.
        for signal in Signal::all().filter(|s| s.is_catchable() && s.raw() != libc::SIGURG) {
            // SAFETY: sigaction with a null new action only reads the current one.
            let ignored = unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(signal.raw(), std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_IGN
            };
            assert_eq!(
                mask & (1u64 << (signal.raw() - 1)) != 0,
                ignored,
                "{}",
                signal.short_name()
            );
        }
    }
}
