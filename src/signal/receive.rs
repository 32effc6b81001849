//! Receiving signals as events, with who sent them.
//!
//! graceful-run handles every catchable signal (1-31 except KILL and STOP, and the real-time
//! signals SIGRTMIN..SIGRTMAX) itself: as PID 1 the kernel drops any signal without a handler,
//! elsewhere an unhandled real-time signal would kill graceful-run outright (its default
//! action) and leave its socket files behind; and every one of them is either acted on (TERM,
//! INT, the restart signal, CHLD) or forwarded to the command, as tini does. Handlers, not a blocked
//! mask with signalfd, so that nothing is blocked in the process the command is forked from.
//!
//! The sender's pid comes with each signal (`siginfo_t`), which lets the supervisor ignore a
//! TERM that the command itself sends to its parent (grace and endless in Go do that after a
//! restart) and tell a terminal's signals (sent by the kernel) from a user's.
//!
//! Two channels, one stream:
//! - signal-hook-tokio delivers all signals but three, each with its origin, through the
//!   self-pipe trick (a unix socket pair, in fact); the handler only records and writes a byte,
//!   as a signal handler must.
//! - The real-time signals, and ILL, FPE and SEGV, have a plain `sigaction` handler of our own
//!   ([`on_direct`]) that writes a record (signal, sender pid, from the kernel or not) to a
//!   datagram socket pair. ILL, FPE and SEGV because signal-hook refuses them: a handler that
//!   returns from a real fault re-runs the faulting instruction forever, so a real fault
//!   (`si_code > 0`, set by the kernel) restores the default action and returns, and the
//!   fault repeats and kills graceful-run with a core dump, as it should; one sent with
//!   kill(2) (`si_code <= 0`) is recorded. The real-time signals because signal-hook's
//!   registry copies itself whole at each registration: for 31 more signals that cost a
//!   millisecond of startup, 70% of it. One datagram is one record, received whole or not at
//!   all, which keeps [`SignalReceiver::next`] cancel-safe inside a `select!` (a byte stream
//!   read with `read_exact` would lose a half-read record when the other branch wins).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use futures_core::Stream;
use nix::libc;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Cause;
use signal_hook_tokio::SignalsInfo;

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
    ordinary: SignalsInfo<WithOrigin>,
    direct: tokio::net::UnixDatagram,
    /// Keeps the write end of the direct channel open for the handlers.
    _direct_writer: std::os::unix::net::UnixDatagram,
}

/// The write end of the direct channel, for [`on_direct`]; -1 until installed.
static DIRECT_FD: AtomicI32 = AtomicI32::new(-1);

/// A record on the direct channel: signal, sender pid (0: none), sent by the kernel (0 or 1).
const RECORD: usize = 12;

/// Signals that were ignored when graceful-run started (e.g. HUP under nohup). Read before
/// any handler is installed, so that children can inherit them ignored. SIGPIPE is left out:
/// Rust's runtime ignores it before `main`, so its original state is unknowable.
pub fn originally_ignored() -> Vec<Signal> {
    Signal::all()
        .filter(|s| s.is_catchable() && *s != Signal::PIPE)
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

impl SignalReceiver {
    /// Installs handlers for every catchable signal, real-time ones included. Must run inside
    /// the tokio runtime.
    pub fn install() -> io::Result<SignalReceiver> {
        let direct = |s: &Signal| s.is_fault() || s.is_realtime();
        let ordinary: Vec<i32> = Signal::all()
            .filter(|s| s.is_catchable() && !direct(s))
            .map(Signal::raw)
            .collect();
        let ordinary = SignalsInfo::<WithOrigin>::new(ordinary)?;

        let (reader, writer) = std::os::unix::net::UnixDatagram::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        DIRECT_FD.store(writer.as_raw_fd(), Ordering::Release);
        for signal in Signal::all().filter(direct) {
            // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler
            // is an `extern "C"` function with the SA_SIGINFO signature that only makes
            // async-signal-safe calls (see on_direct), and it reads the fd from an atomic
            // stored above, which stays open for the process's life (the receiver is never
            // dropped: see Supervisor::run).
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_direct as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal.raw(), &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(SignalReceiver {
            ordinary,
            direct: tokio::net::UnixDatagram::from_std(reader)?,
            _direct_writer: writer,
        })
    }

    /// The next signal. Never returns None: the handlers live as long as the process.
    ///
    /// Cancel-safe: both branches either take a whole signal or nothing (signal-hook's stream
    /// keeps undelivered signals pending; a datagram is received whole or stays queued).
    pub async fn next(&mut self) -> Received {
        loop {
            if let Some(received) = self.next_once().await {
                return received;
            }
        }
    }

    async fn next_once(&mut self) -> Option<Received> {
        let mut record = [0u8; RECORD];
        tokio::select! {
            origin = std::future::poll_fn(|cx| std::pin::Pin::new(&mut self.ordinary).poll_next(cx)) => {
                let origin = origin.expect("signal-hook's stream ends only when it is closed, and it never is");
                Some(Received {
                    signal: Signal::from_raw(origin.signal)
                        .expect("only signals Signal::from_raw accepts are registered"),
                    sender: origin.process.map(|p| p.pid),
                    from_kernel: origin.cause == Cause::Kernel,
                })
            }
            read = self.direct.recv(&mut record) => {
                // Only the handler writes here, always a whole record; anything else is skipped.
                if read.ok()? != record.len() {
                    return None;
                }
                let word = |i: usize| {
                    i32::from_ne_bytes([record[i], record[i + 1], record[i + 2], record[i + 3]])
                };
                let from_kernel = word(8) != 0;
                Some(Received {
                    signal: Signal::from_raw(word(0))?,
                    sender: (!from_kernel).then_some(word(4)),
                    from_kernel,
                })
            }
        }
    }
}

/// The handler of the direct channel (see the module docs). Async-signal-safe: it reads its
/// arguments and an atomic, and calls only sigaction (through signal(2)) and write(2).
extern "C" fn on_direct(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t for the handler's duration.
    let info = unsafe { &*info };
    let from_kernel = info.si_code > 0;
    if from_kernel && Signal::from_raw(signal).is_some_and(Signal::is_fault) {
        // A real fault in graceful-run: let it be fatal.
        // SAFETY: signal(2) with SIG_DFL is async-signal-safe (it is sigaction).
        unsafe { libc::signal(signal, libc::SIG_DFL) };
        return;
    }
    // SAFETY: si_pid is valid for si_code <= 0 (SI_USER, SI_QUEUE, SI_TKILL); not read otherwise.
    let pid = if from_kernel {
        0
    } else {
        unsafe { info.si_pid() }
    };
    let mut record = [0u8; RECORD];
    record[..4].copy_from_slice(&signal.to_ne_bytes());
    record[4..8].copy_from_slice(&pid.to_ne_bytes());
    record[8..].copy_from_slice(&i32::from(from_kernel).to_ne_bytes());
    let fd = DIRECT_FD.load(Ordering::Acquire);
    // SAFETY: write(2) is async-signal-safe; a full socket buffer drops the record (hundreds
    // are queued before that happens); fd -1 fails harmlessly with EBADF.
    unsafe { libc::write(fd, record.as_ptr().cast(), record.len()) };
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
}
