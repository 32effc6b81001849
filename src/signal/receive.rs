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
//! - ILL, FPE and SEGV are refused by signal-hook: a handler that returns from a real fault
//!   re-runs the faulting instruction forever. They are registered through signal-hook's
//!   registry with a handler that tells a real fault (`si_code > 0`, set by the kernel) from a
//!   signal sent with kill(2) (`si_code <= 0`). A real fault restores the default action and
//!   returns, so the fault repeats and kills graceful-run with a core dump, as it should; a
//!   sent one is written as an 8-byte record (signal, pid) to a datagram socket pair of its
//!   own. One datagram is one record, received whole or not at all, which keeps
//!   [`SignalReceiver::next`] cancel-safe inside a `select!` (a byte stream read with
//!   `read_exact` would lose a half-read record when the other branch wins).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

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
    faults: tokio::net::UnixDatagram,
    /// Keeps the write end of the faults socket open for the handlers.
    _fault_writer: std::os::unix::net::UnixDatagram,
}

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
        let ordinary: Vec<i32> = Signal::all()
            .filter(|s| s.is_catchable() && !s.is_fault())
            .map(Signal::raw)
            .collect();
        let ordinary = SignalsInfo::<WithOrigin>::new(ordinary)?;

        let (reader, writer) = std::os::unix::net::UnixDatagram::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let write_fd = writer.as_raw_fd();
        for signal in Signal::all().filter(|s| s.is_fault()) {
            // SAFETY: the action only calls async-signal-safe functions (sigaction via
            // libc::signal, write) on an fd that lives as long as the receiver, and the
            // registry's requirements (no panics, no allocation) hold.
            unsafe {
                signal_hook_registry::register_unchecked(signal.raw(), move |info| {
                    fault_or_sent(info, write_fd)
                })?;
            }
        }
        Ok(SignalReceiver {
            ordinary,
            faults: tokio::net::UnixDatagram::from_std(reader)?,
            _fault_writer: writer,
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
        let mut record = [0u8; 8];
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
            read = self.faults.recv(&mut record) => {
                // Only the handler writes here, always 8 bytes; anything else is skipped.
                if read.ok()? != record.len() {
                    return None;
                }
                let signal = i32::from_ne_bytes([record[0], record[1], record[2], record[3]]);
                let sender = i32::from_ne_bytes([record[4], record[5], record[6], record[7]]);
                Some(Received {
                    signal: Signal::from_raw(signal)?,
                    sender: Some(sender),
                    from_kernel: false,
                })
            }
        }
    }
}

/// The handler for ILL, FPE and SEGV (see the module docs).
fn fault_or_sent(info: &libc::siginfo_t, socket: RawFd) {
    let signal = info.si_signo;
    if info.si_code > 0 {
        // A real fault in graceful-run: let it be fatal.
        // SAFETY: signal(2) with SIG_DFL is async-signal-safe (it is sigaction).
        unsafe { libc::signal(signal, libc::SIG_DFL) };
        return;
    }
    // SAFETY: si_pid is valid for si_code <= 0 (SI_USER, SI_QUEUE, SI_TKILL).
    let pid = unsafe { info.si_pid() };
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&signal.to_ne_bytes());
    record[4..].copy_from_slice(&pid.to_ne_bytes());
    // SAFETY: write(2) is async-signal-safe; a full socket buffer drops the record (hundreds
    // are queued before that happens).
    unsafe { libc::write(socket, record.as_ptr().cast(), record.len()) };
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
