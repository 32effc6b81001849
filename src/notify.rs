//! sd_notify(3), both ways.
//!
//! Downstream: with `--ready notify`, each generation of the command gets a NOTIFY_SOCKET of
//! its own, and READY=1 on it marks *that* generation ready. A stale message from an old
//! generation can never be mistaken for the new one's.
//!
//! The sockets are files, in the form systemd itself uses (`/run/.../notify`): abstract
//! `@names` are not understood by every client (Debian's ruby `sd_notify` gem, and so puma,
//! crashes on one), and any local user could write to an abstract name. They live in
//! graceful-run's private directory ([`crate::private_dir`]: root-owned, worked on through a
//! descriptor, never by path), made with the first generation's socket under
//! `$XDG_RUNTIME_DIR` when set and usable, else `/run`, else `$TMPDIR` or `/tmp`. Each socket
//! file is mode 0700 and, with `--user`, handed to that user: the generation's user and root
//! can reach it, nobody else. A socket file is removed when its generation is gone
//! ([`NotifySocket`]'s drop), the directory at exit.
//!
//! # Who may notify
//!
//! `SO_PASSCRED` gives each datagram's sender pid and uid (the kernel vouches for both). A
//! datagram is acted on only if it comes from a uid the socket allows (root, graceful-run's
//! own, `--user`'s) *and* from a process of the generation itself ([`Members`]: its main
//! process, its process group, or the main process's descendants), as systemd accepts
//! notifications only from the unit's own processes: an unrelated process of the same user
//! cannot mark a generation ready while it still boots. The sender is checked when its
//! datagram is read, so a sender must still exist then; one that exits right after sending
//! is refused, which is why `graceful-run notify`, like `systemd-notify`, waits until its
//! message has been taken (BARRIER=1). Every refusal, and every malformed datagram, is
//! logged at warning level, a few lines a second per socket and then one line counting the
//! rest, so a flood of datagrams cannot flood the log.
//!
//! `STATUS=` is kept, not logged: the last one of each generation is what `graceful-run ctl
//! status` shows ([`NotifySocket::last_status`]), and at most [`STATUSES_PER_WINDOW`] a
//! second go on to the supervisor (which logs them at debug level and relays the current
//! generation's to systemd); the latest one held back follows at the end of the second. A
//! server that sends thousands a second costs a few lines at most. File descriptors a
//! datagram carries (`BARRIER=1`, fd stores; at most SCM_MAX_FD = 253) are closed at once, as
//! systemd does with ones it does not keep; room for all 253 is reserved, and a truncated
//! control message (MSG_CTRUNC) is reported: the kernel discards what did not fit, and
//! whatever did arrive is closed too.
//!
//! Upstream: when graceful-run itself is started with NOTIFY_SOCKET (systemd `Type=notify` or
//! `notify-reload`), that socket is graceful-run's channel to systemd and is never given to
//! the command. graceful-run sends READY=1 with MAINPID (its own pid, which never changes)
//! once the first generation is ready, RELOADING=1 with MONOTONIC_USEC when a restart starts,
//! READY=1 when the handover is done, and STOPPING=1 at stop.

use std::ffi::OsStr;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    bind, recvmsg, sendmsg, sendto, setsockopt, socket, sockopt,
};
use tokio::io::unix::AsyncFd;

use crate::log::Subject;
use crate::private_dir::{Handover, PrivateDir};
use crate::spawn::Credentials;
use crate::warn;

/// systemd's NOTIFY_BUFFER_MAX: longer datagrams are not notifications.
pub const MESSAGE_MAX: usize = 4096;

/// The kernel's SCM_MAX_FD: the most descriptors one datagram can carry.
const SCM_MAX_FD: usize = 253;

/// Warnings about ignored datagrams logged per socket in each [`WARNING_WINDOW`]; the rest
/// are counted and summed up in one line when the window ends.
const WARNINGS_PER_WINDOW: u32 = 3;
const WARNING_WINDOW: Duration = Duration::from_secs(1);

/// `STATUS=` values passed on to the supervisor per socket in each [`WARNING_WINDOW`]; the
/// latest one held back follows when the window ends.
pub const STATUSES_PER_WINDOW: u32 = 4;

/// One datagram received on a generation's socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub sender_pid: Option<i32>,
    pub sender_uid: Option<u32>,
    pub fields: Vec<(String, String)>,
}

impl Message {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_set(&self, key: &str) -> bool {
        self.get(key) == Some("1")
    }
}

/// Parses `KEY=VALUE` lines; lines without `=` are ignored, as sd_notify's receivers do.
pub fn parse_fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The private directory that holds every generation's notify socket (see `private_dir`).
#[derive(Debug)]
pub struct NotifyDir {
    dir: Arc<PrivateDir>,
    /// Who each socket file is handed to (uid, gid): the `--user` user, when it is not
    /// graceful-run's own.
    owner: Option<(u32, u32)>,
    swept: bool,
    /// Said once that the socket files are open to all (no CAP_CHOWN).
    said_open: std::cell::Cell<bool>,
}

impl NotifyDir {
    /// Creates the directory; `user` (`--user`) gets each generation's socket file.
    pub fn create(user: Option<&Credentials>) -> io::Result<NotifyDir> {
        let euid = nix::unistd::geteuid().as_raw();
        Ok(NotifyDir {
            dir: Arc::new(PrivateDir::create(user)?),
            owner: user.filter(|u| u.uid != euid).map(|u| (u.uid, u.gid)),
            swept: false,
            said_open: std::cell::Cell::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Binds generation `generation`'s socket; datagrams from uids not in `allowed_uids` are
    /// ignored, and so are those from processes not of the generation (see
    /// [`NotifySocket::accept_from`]). Must run inside the tokio runtime.
    pub fn bind(&self, generation: u64, allowed_uids: &[u32]) -> io::Result<NotifySocket> {
        let name = generation.to_string();
        let (fd, address, handover) = self.dir.bind_datagram(&name, self.owner)?;
        if handover == Handover::OpenToAll && !self.said_open.replace(true) {
            crate::info!(
                Subject::NONE,
                "NOTIFY_SOCKET files are open to every local user: graceful-run may not give \
                 them to uid {} (no CAP_CHOWN); only that uid's processes of each generation \
                 are listened to",
                self.owner.map_or(0, |(uid, _)| uid)
            );
        }
        // From here on the file is removed by NotifySocket's drop, or right here on failure.
        let file = SocketFile {
            dir: Arc::clone(&self.dir),
            name,
        };
        NotifySocket::open(fd, address, generation, allowed_uids, Some(file))
    }

    /// Once, after the first generation has started (off the path to its exec): removes the
    /// directories that killed instances left in the same base.
    pub fn sweep_once(&mut self) {
        if !std::mem::replace(&mut self.swept, true) {
            self.dir.sweep_dead();
        }
    }
}

/// A socket file in the private directory, removed on drop.
#[derive(Debug)]
struct SocketFile {
    dir: Arc<PrivateDir>,
    name: String,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.dir.remove(&self.name);
    }
}

/// The processes allowed to notify for a generation: its main process, the members of its
/// process group, and the main process's descendants. systemd's NotifyAccess=all accepts the
/// unit's control group; the group and the tree are graceful-run's nearest equivalent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Members {
    /// The generation's main process. A process whose process group id is this pid is in
    /// the group the main process leads (without a group of its own, the main process's
    /// pid is nobody's group id).
    pub leader: i32,
    /// /proc describes our pid namespace, so the leader's descendants can be found there.
    pub tree: bool,
}

impl Members {
    /// Whether the process `pid` (as SCM_CREDENTIALS gives it: 0 when it is not visible in
    /// our pid namespace) belongs to the generation; else why not.
    fn check(&self, pid: i32) -> Result<(), String> {
        if pid <= 0 {
            return Err("a process outside graceful-run's pid namespace sent it".to_string());
        }
        if pid == self.leader {
            return Ok(());
        }
        match nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))) {
            Ok(pgid) if pgid.as_raw() == self.leader => return Ok(()),
            Ok(_) => {}
            // The sender is gone (reaped), so nothing can say whose it was. systemd has the
            // same rule: a sender that exits at once must wait until its message is taken,
            // which `graceful-run notify` and `systemd-notify` do (BARRIER=1).
            Err(nix::errno::Errno::ESRCH) => {
                return Err(format!(
                    "pid {pid} exited before its message was read, so it cannot be told apart \
                     from a stranger (a sender that exits at once must wait until its message \
                     is taken, as `graceful-run notify` does)"
                ));
            }
            Err(_) => {}
        }
        if self.tree && crate::process::descends_from(pid, self.leader) {
            return Ok(());
        }
        Err(format!("pid {pid} is not a process of this generation"))
    }
}

/// Rate limiting of the warnings about ignored datagrams.
#[derive(Default)]
struct Warnings {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
    /// Fires at the end of a window in which lines were suppressed, to sum them up even if
    /// no datagram follows.
    summary_at: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Warnings {
    /// Logs `reason` unless this window's quota is used up, then counts it.
    fn note(&mut self, generation: u64, reason: &str) {
        let now = Instant::now();
        if self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= WARNING_WINDOW)
        {
            self.summarise(generation);
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged < WARNINGS_PER_WINDOW {
            self.logged += 1;
            warn!(
                Subject::generation_only(generation),
                "ignoring a notify message: {reason}"
            );
            return;
        }
        self.suppressed += 1;
        if self.summary_at.is_none() {
            let end = self.window_start.unwrap_or(now) + WARNING_WINDOW;
            self.summary_at = Some(Box::pin(tokio::time::sleep_until(
                tokio::time::Instant::from_std(end),
            )));
        }
    }

    fn summarise(&mut self, generation: u64) {
        self.summary_at = None;
        let suppressed = std::mem::take(&mut self.suppressed);
        if suppressed > 0 {
            warn!(
                Subject::generation_only(generation),
                "{suppressed} more notify messages ignored"
            );
        }
    }

    /// Sums up at the window's end (registers the waker until then).
    fn poll_summary(&mut self, generation: u64, cx: &mut Context<'_>) {
        if let Some(timer) = &mut self.summary_at
            && timer.as_mut().poll(cx).is_ready()
        {
            self.summarise(generation);
        }
    }
}

/// The last `STATUS=` of a generation, and how many went on to the supervisor lately.
#[derive(Default)]
struct Statuses {
    last: Option<String>,
    window_start: Option<Instant>,
    passed: u32,
    /// The last one was held back; it goes on when `flush_at` fires.
    held: bool,
    flush_at: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Statuses {
    /// Records `status`; whether it may go on to the supervisor now.
    fn note(&mut self, status: &str, now: Instant) -> bool {
        self.last = Some(status.to_string());
        if self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= WARNING_WINDOW)
        {
            self.window_start = Some(now);
            self.passed = 0;
        }
        if self.passed < STATUSES_PER_WINDOW {
            self.passed += 1;
            self.held = false;
            return true;
        }
        self.held = true;
        if self.flush_at.is_none() {
            let end = self.window_start.unwrap_or(now) + WARNING_WINDOW;
            self.flush_at = Some(Box::pin(tokio::time::sleep_until(
                tokio::time::Instant::from_std(end),
            )));
        }
        false
    }

    /// The status held back, once its window is over (registers the waker until then).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Option<String> {
        let timer = self.flush_at.as_mut()?;
        if timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        self.flush_at = None;
        if !std::mem::take(&mut self.held) {
            return None;
        }
        // The flushed status opens a window of its own.
        self.window_start = Some(Instant::now());
        self.passed = 1;
        self.last.clone()
    }
}

/// What `poll_message` keeps between calls; behind a lock because it takes `&self`.
#[derive(Default)]
struct Bookkeeping {
    warnings: Warnings,
    statuses: Statuses,
}

impl Bookkeeping {
    /// A received message as it is passed on: a STATUS over the rate limit is held back for
    /// the flush (and the waker of `cx`, when given, registered with the flush timer it may
    /// have armed); None when the held STATUS was all the message had.
    fn admit(&mut self, mut message: Message, cx: Option<&mut Context<'_>>) -> Option<Message> {
        if let Some(status) = message.get("STATUS").map(str::to_string)
            && !self.statuses.note(&status, Instant::now())
        {
            message.fields.retain(|(key, _)| key != "STATUS");
            if let Some(cx) = cx {
                let _ = self.statuses.poll_flush(cx);
            }
            if message.fields.is_empty() {
                return None;
            }
        }
        Some(message)
    }
}

/// A generation's own NOTIFY_SOCKET; its file is removed on drop.
pub struct NotifySocket {
    fd: AsyncFd<OwnedFd>,
    address: String,
    generation: u64,
    allowed_uids: Vec<u32>,
    /// Who belongs to the generation; None until it has started (nothing is accepted).
    members: Option<Members>,
    /// Never contended (one task).
    book: Mutex<Bookkeeping>,
    /// The socket's file, removed with it (None for an abstract socket).
    _file: Option<SocketFile>,
}

impl NotifySocket {
    /// A socket in the abstract namespace, for when no private directory can be had (a
    /// read-only root without a writable /tmp): it needs no file system, and any local user
    /// in the network namespace could send to it, so the uid and process checks are all that
    /// keep strangers out. Some sd_notify clients do not understand the `@` form (Debian's
    /// ruby sd_notify): the directory is preferred for them.
    pub fn bind_abstract(generation: u64, allowed_uids: &[u32]) -> io::Result<NotifySocket> {
        let name = format!(
            "graceful-run/notify/{}/{generation}/{}",
            std::process::id(),
            crate::random::token()
        );
        let fd = datagram_socket()?;
        bind(fd.as_raw_fd(), &UnixAddr::new_abstract(name.as_bytes())?)?;
        NotifySocket::open(fd, format!("@{name}"), generation, allowed_uids, None)
    }

    fn open(
        fd: OwnedFd,
        address: String,
        generation: u64,
        allowed_uids: &[u32],
        file: Option<SocketFile>,
    ) -> io::Result<NotifySocket> {
        setsockopt(&fd, sockopt::PassCred, &true)?;
        // SAFETY: `fd` is an open socket that the AsyncFd owns from here on, so it stays open
        // and names the same socket for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(NotifySocket {
            fd,
            address,
            generation,
            allowed_uids: allowed_uids.to_vec(),
            members: None,
            book: Mutex::new(Bookkeeping::default()),
            _file: file,
        })
    }

    /// The NOTIFY_SOCKET value for the child: the socket's path.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// From now on, messages are taken from `members` only. Called once the generation's
    /// main process exists (right after it is spawned, before any datagram is read).
    pub fn accept_from(&mut self, members: Members) {
        self.members = Some(members);
    }

    /// The last `STATUS=` the generation sent, for `graceful-run ctl status`.
    pub fn last_status(&self) -> Option<String> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .statuses
            .last
            .clone()
    }

    /// The next valid message from an allowed sender; others are skipped with a
    /// rate-limited warning. `STATUS=` is rate-limited too (see the module docs): a message
    /// may come without the STATUS it carried, and a held-back STATUS later on its own.
    pub fn poll_message(&self, cx: &mut Context<'_>) -> Poll<Message> {
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        book.warnings.poll_summary(self.generation, cx);
        if let Some(status) = book.statuses.poll_flush(cx) {
            return Poll::Ready(Message {
                fields: vec![("STATUS".to_string(), status)],
                ..Message::default()
            });
        }
        loop {
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                // An AsyncFd whose reactor is gone: nothing will ever arrive.
                Poll::Ready(Err(_)) | Poll::Pending => return Poll::Pending,
            };
            let received = receive(self.fd.get_ref().as_raw_fd(), &self.allowed_uids)
                .map(|datagram| self.unless_stranger(datagram));
            match received {
                Ok(Datagram::Message(message)) => match book.admit(message, Some(cx)) {
                    Some(message) => return Poll::Ready(message),
                    None => continue,
                },
                Ok(Datagram::Ignored(reason)) => {
                    book.warnings.note(self.generation, &reason);
                    // A summary timer may just have been armed: register the waker.
                    book.warnings.poll_summary(self.generation, cx);
                }
                Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(_) => {}
            }
        }
    }

    /// A message already queued on the socket, read at once, without waiting for the reactor
    /// to say the socket is readable (it may not have looked since the datagram came).
    /// The executor drains these before it hands a timer's expiry to the core: a `WATCHDOG=1`
    /// queued by the time the watchdog's deadline is judged came in time. STATUS is
    /// rate-limited as in `poll_message`; a flush timer it arms is registered by the next
    /// `poll_message`, which the executor's loop always makes.
    pub fn try_message(&self) -> Option<Message> {
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let received = receive(self.fd.get_ref().as_raw_fd(), &self.allowed_uids)
                .map(|datagram| self.unless_stranger(datagram));
            match received {
                Ok(Datagram::Message(message)) => match book.admit(message, None) {
                    Some(message) => return Some(message),
                    None => continue,
                },
                Ok(Datagram::Ignored(reason)) => book.warnings.note(self.generation, &reason),
                // EAGAIN: nothing queued. Another error: nothing readable now either.
                Err(_) => return None,
            }
        }
    }

    /// A message passes only if its sender belongs to the generation.
    fn unless_stranger(&self, datagram: Datagram) -> Datagram {
        let Datagram::Message(message) = datagram else {
            return datagram;
        };
        let verdict = match (self.members, message.sender_pid) {
            (Some(members), Some(pid)) => members.check(pid),
            (None, _) => Err("it came before the generation started".to_string()),
            (_, None) => Err("it came without credentials".to_string()),
        };
        match verdict {
            Ok(()) => Datagram::Message(message),
            Err(why) => Datagram::Ignored(why),
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        // A window cut short by the generation's end still gets its summary line.
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .warnings
            .summarise(self.generation);
    }
}

/// What one datagram turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum Datagram {
    Message(Message),
    /// Not a notification graceful-run acts on, and why.
    Ignored(String),
}

/// Receives one datagram. Every descriptor it carried is closed before this returns,
/// whatever the datagram turns out to be.
fn receive(fd: RawFd, allowed_uids: &[u32]) -> nix::Result<Datagram> {
    let mut buf = [0u8; MESSAGE_MAX];
    let mut control = nix::cmsg_space!(libc::ucred, [RawFd; SCM_MAX_FD]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC;
    let received = recvmsg::<()>(fd, &mut iov, Some(&mut control), flags)?;
    let mut message = Message::default();
    let mut descriptors = 0;
    for cmsg in received.cmsgs()? {
        match cmsg {
            ControlMessageOwned::ScmCredentials(credentials) => {
                message.sender_pid = Some(credentials.pid());
                message.sender_uid = Some(credentials.uid());
            }
            ControlMessageOwned::ScmRights(fds) => {
                descriptors += fds.len();
                for fd in fds {
                    let _ = nix::unistd::close(fd);
                }
            }
            _ => {}
        }
    }
    let length = received.bytes;
    let sender = match message.sender_pid {
        Some(pid) => format!("pid {pid}"),
        None => "an unknown sender".to_string(),
    };
    if received.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Ok(Datagram::Ignored(format!(
            "{sender} sent more control data than a notification can carry \
             ({descriptors} descriptors received and closed)"
        )));
    }
    match message.sender_uid {
        Some(uid) if allowed_uids.contains(&uid) => {}
        Some(uid) => {
            return Ok(Datagram::Ignored(format!("{sender} runs as uid {uid}")));
        }
        None => return Ok(Datagram::Ignored(format!("{sender} sent no credentials"))),
    }
    if received.flags.contains(MsgFlags::MSG_TRUNC) || length > MESSAGE_MAX {
        return Ok(Datagram::Ignored(format!(
            "{sender} sent {length} bytes, more than {MESSAGE_MAX}"
        )));
    }
    let Ok(text) = std::str::from_utf8(&buf[..length]) else {
        return Ok(Datagram::Ignored(format!(
            "{sender} sent text that is not UTF-8"
        )));
    };
    message.fields = parse_fields(text);
    Ok(Datagram::Message(message))
}

/// graceful-run's own NOTIFY_SOCKET, inherited from its supervisor; also what `graceful-run
/// notify` sends to.
pub struct Upstream {
    fd: OwnedFd,
    address: UnixAddr,
}

impl Upstream {
    /// `@name` (abstract) or a path, taken byte for byte (a path need not be UTF-8);
    /// anything else (vsock:) is not supported.
    pub fn new(value: &OsStr) -> Result<Upstream, String> {
        let bytes = value.as_bytes();
        let shown = value.to_string_lossy();
        let address = if let Some(name) = bytes.strip_prefix(b"@") {
            UnixAddr::new_abstract(name)
        } else if bytes.starts_with(b"/") {
            UnixAddr::new(Path::new(value))
        } else {
            return Err(format!(
                "NOTIFY_SOCKET '{shown}' is not a unix socket address"
            ));
        }
        .map_err(|e| format!("NOTIFY_SOCKET '{shown}': {}", e.desc()))?;
        let fd = datagram_socket()
            .map_err(|e| format!("NOTIFY_SOCKET: cannot create a socket: {}", e.desc()))?;
        Ok(Upstream { fd, address })
    }

    pub fn send(&self, text: &str) -> nix::Result<()> {
        sendto(
            self.fd.as_raw_fd(),
            text.as_bytes(),
            &self.address,
            MsgFlags::MSG_NOSIGNAL,
        )
        .map(drop)
    }

    /// sd_notify_barrier(3): waits until the receiver has taken every message sent before
    /// this one. `BARRIER=1` carries the write end of a pipe; the receiver closes it when it
    /// reads the datagram (systemd and graceful-run close every descriptor they do not
    /// keep), and the read end then reports the hang-up. `Ok(false)` after `timeout`.
    pub fn barrier(&self, timeout: Duration) -> nix::Result<bool> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let fds = [write.as_raw_fd()];
        let iov = [io::IoSlice::new(b"BARRIER=1")];
        sendmsg(
            self.fd.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            Some(&self.address),
        )?;
        drop(write);
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let mut poll = [nix::poll::PollFd::new(
                read.as_fd(),
                nix::poll::PollFlags::empty(),
            )];
            let millis = left.as_millis().min(i32::MAX as u128) as i32;
            match nix::poll::poll(
                &mut poll,
                nix::poll::PollTimeout::try_from(millis).unwrap_or(nix::poll::PollTimeout::MAX),
            ) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// An unbound unix datagram socket: close-on-exec (no child inherits it by accident) and
/// non-blocking (the runtime polls it; a full peer must not stall the loop).
fn datagram_socket() -> nix::Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
}

/// CLOCK_MONOTONIC in microseconds, for `MONOTONIC_USEC=` next to `RELOADING=1`.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_key_value_lines() {
        let fields = parse_fields("READY=1\nSTATUS=serving: 3 workers\nnonsense\n");
        let message = Message {
            fields,
            ..Message::default()
        };
        assert!(message.is_set("READY"));
        assert_eq!(message.get("STATUS"), Some("serving: 3 workers"));
        assert_eq!(message.get("nonsense"), None);
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn this_process() -> Members {
        Members {
            leader: std::process::id() as i32,
            tree: true,
        }
    }

    #[tokio::test]
    async fn a_generation_socket_receives_with_credentials() {
        let dir = NotifyDir::create(None).unwrap();
        let mut socket = dir.bind(7, &[me()]).unwrap();
        socket.accept_from(this_process());
        let address = socket.address().to_string();
        assert!(
            address.starts_with('/'),
            "a path, not an abstract name: {address}"
        );
        assert!(address.ends_with("/7"), "{address}");
        let client = Upstream::new(OsStr::new(&address)).unwrap();
        client.send("READY=1\nSTATUS=hi").unwrap();
        let message = std::future::poll_fn(|cx| socket.poll_message(cx)).await;
        assert!(message.is_set("READY"));
        assert_eq!(message.get("STATUS"), Some("hi"));
        assert_eq!(message.sender_pid, Some(std::process::id() as i32));
        assert_eq!(socket.last_status().as_deref(), Some("hi"));
    }

    #[tokio::test]
    async fn a_sender_of_another_uid_is_ignored() {
        let dir = NotifyDir::create(None).unwrap();
        let socket = dir.bind(3, &[me() + 1]).unwrap();
        let client = Upstream::new(OsStr::new(socket.address())).unwrap();
        client.send("READY=1").unwrap();
        assert_eq!(
            receive(socket.fd.get_ref().as_raw_fd(), &[me() + 1]),
            Ok(Datagram::Ignored(format!(
                "pid {} runs as uid {}",
                std::process::id(),
                me()
            )))
        );
    }

    #[test]
    fn only_the_generations_processes_are_members() {
        let parent = nix::unistd::getppid().as_raw();
        let me = std::process::id() as i32;
        let of_parent = Members {
            leader: parent,
            tree: true,
        };
        assert_eq!(of_parent.check(me), Ok(()), "a descendant");
        assert_eq!(of_parent.check(parent), Ok(()), "the leader");
        let without_tree = Members {
            tree: false,
            ..of_parent
        };
        assert!(without_tree.check(me).is_err());
        let of_me = Members {
            leader: me,
            tree: true,
        };
        assert_eq!(
            of_me.check(parent),
            Err(format!("pid {parent} is not a process of this generation"))
        );
        assert!(of_me.check(0).unwrap_err().contains("outside"));
        let own_group = Members {
            leader: nix::unistd::getpgrp().as_raw(),
            tree: false,
        };
        assert_eq!(own_group.check(me), Ok(()), "a member of the group");
    }

    /// The drain before a timer's expiry: a datagram that is queued is read even though the
    /// reactor has not looked at the socket since (no await between the send and the read).
    #[tokio::test]
    async fn a_queued_datagram_is_taken_without_the_reactor() {
        let dir = NotifyDir::create(None).unwrap();
        let mut socket = dir.bind(5, &[me()]).unwrap();
        socket.accept_from(this_process());
        assert!(socket.try_message().is_none(), "nothing queued yet");
        let client = Upstream::new(OsStr::new(socket.address())).unwrap();
        client.send("WATCHDOG=1").unwrap();
        client.send("WATCHDOG=1\nSTATUS=still here").unwrap();
        let first = socket.try_message().expect("the first datagram");
        assert!(first.is_set("WATCHDOG"));
        let second = socket.try_message().expect("the second datagram");
        assert_eq!(second.get("STATUS"), Some("still here"));
        assert!(socket.try_message().is_none(), "both taken");
    }

    #[tokio::test]
    async fn statuses_beyond_the_quota_are_held_and_the_last_one_follows() {
        let dir = NotifyDir::create(None).unwrap();
        let mut socket = dir.bind(9, &[me()]).unwrap();
        socket.accept_from(this_process());
        let client = Upstream::new(OsStr::new(socket.address())).unwrap();
        // The kernel queues 10 datagrams at most (net.unix.max_dgram_qlen).
        for n in 0..8 {
            client.send(&format!("STATUS=step {n}")).unwrap();
        }
        client.send("READY=1\nSTATUS=ready now").unwrap();
        let mut seen = Vec::new();
        loop {
            let message = std::future::poll_fn(|cx| socket.poll_message(cx)).await;
            let ready = message.is_set("READY");
            seen.push(message);
            if ready {
                break;
            }
        }
        let statuses: Vec<&str> = seen.iter().filter_map(|m| m.get("STATUS")).collect();
        assert_eq!(statuses, ["step 0", "step 1", "step 2", "step 3"]);
        assert_eq!(seen.last().unwrap().get("STATUS"), None, "held back");
        assert_eq!(socket.last_status().as_deref(), Some("ready now"));
        // At the window's end (within a second), the latest comes on its own.
        let message = std::future::poll_fn(|cx| socket.poll_message(cx)).await;
        assert_eq!(
            message.fields,
            [("STATUS".to_string(), "ready now".to_string())]
        );
    }
}
