//! sd_notify(3), both ways.
//!
//! Downstream: with `--ready notify`, each generation of the command gets a NOTIFY_SOCKET of
//! its own, and READY=1 on it marks *that* generation ready. A stale message from an old
//! generation can never be mistaken for the new one's.
//!
//! The sockets are files, in the form systemd itself uses (`/run/.../notify`): abstract
//! `@names` are not understood by every client (Debian's ruby `sd_notify` gem, and so puma,
//! crashes on one), and any local user could write to an abstract name. They live in one
//! private directory per graceful-run ([`NotifyDir`]): created under `$XDG_RUNTIME_DIR` when
//! set and usable, else `/run` when writable, else `$TMPDIR` or `/tmp`, with an
//! unpredictable name, mode 0700, and owned by the `--user` user when there is one, so that
//! the generation's user and nobody else (but root) can reach the sockets. A socket file is
//! removed when its generation is gone ([`NotifySocket`]'s drop), the directory at exit.
//! sun_path holds 108 bytes: a base directory whose sockets would not fit is skipped.
//!
//! `SO_PASSCRED` gives each datagram's sender pid and uid; datagrams from a uid the socket
//! was not told to allow (at bind: root, graceful-run's own, `--user`'s) are ignored, as are
//! malformed ones. Those warnings are rate-limited per socket (a few lines a second, then one
//! line counting the rest), so a flood of datagrams cannot flood the log. File descriptors a
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

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, bind, recvmsg,
    sendto, setsockopt, socket, sockopt,
};
use tokio::io::unix::AsyncFd;

use crate::log::Subject;
use crate::spawn::Credentials;
use crate::warn;

/// systemd's NOTIFY_BUFFER_MAX: longer datagrams are not notifications.
const MESSAGE_MAX: usize = 4096;

/// The kernel's SCM_MAX_FD: the most descriptors one datagram can carry.
const SCM_MAX_FD: usize = 253;

/// Warnings about ignored datagrams logged per socket in each [`WARNING_WINDOW`]; the rest
/// are counted and summed up in one line when the window ends.
const WARNINGS_PER_WINDOW: u32 = 3;
const WARNING_WINDOW: Duration = Duration::from_secs(1);

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

/// The private directory that holds every generation's notify socket; removed on drop.
#[derive(Debug)]
pub struct NotifyDir {
    path: PathBuf,
}

impl NotifyDir {
    /// Creates the directory (see the module docs for where), owned by `owner` if given.
    pub fn create(owner: Option<&Credentials>) -> io::Result<NotifyDir> {
        let candidates = base_candidates(
            std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            std::env::var_os("TMPDIR").map(PathBuf::from),
        );
        let mut last_error = io::Error::new(
            io::ErrorKind::NotFound,
            "no usable directory among $XDG_RUNTIME_DIR, /run, $TMPDIR and /tmp",
        );
        for base in candidates {
            if !usable_base(&base, owner) {
                crate::debug!(
                    crate::log::Subject::NONE,
                    "NOTIFY_SOCKET: {} is not usable",
                    base.display()
                );
                continue;
            }
            match create_private(&base, owner) {
                Ok(path) => return Ok(NotifyDir { path }),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Binds generation `generation`'s socket; datagrams from uids not in `allowed_uids` are
    /// ignored. Must run inside the tokio runtime.
    pub fn bind(&self, generation: u64, allowed_uids: &[u32]) -> io::Result<NotifySocket> {
        let path = self.path.join(generation.to_string());
        let address = path
            .to_str()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "non-UTF-8 path"))?
            .to_string();
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        // A leftover of a generation with the same number cannot exist (numbers are never
        // reused), but a file the owner planted in its own directory could: replace it.
        let _ = std::fs::remove_file(&path);
        // The file is created 0700 by bind itself: a chmod afterwards would follow a symlink
        // that the directory's owner (--user) could swap in meanwhile.
        with_private_umask(|| bind(fd.as_raw_fd(), &UnixAddr::new(&path)?))?;
        // From here on the file is removed by NotifySocket's drop, or right here on failure.
        let socket = SocketFile(path);
        let dir_meta = std::fs::metadata(&self.path)?;
        if dir_meta.uid() != nix::unistd::geteuid().as_raw() {
            // The directory belongs to --user: so does the socket, which it must write to.
            std::os::unix::fs::lchown(&socket.0, Some(dir_meta.uid()), Some(dir_meta.gid()))?;
        }
        NotifySocket::open(fd, address, generation, allowed_uids, Some(socket))
    }
}

impl Drop for NotifyDir {
    fn drop(&mut self) {
        // Private: nothing in it but our sockets (and whatever the owner put there).
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `$XDG_RUNTIME_DIR`, /run, `$TMPDIR`, /tmp, in that order (relative paths are skipped).
fn base_candidates(xdg_runtime_dir: Option<PathBuf>, tmpdir: Option<PathBuf>) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = xdg_runtime_dir.into_iter().collect();
    candidates.push(PathBuf::from("/run"));
    candidates.extend(tmpdir);
    candidates.push(PathBuf::from("/tmp"));
    candidates.retain(|path| path.is_absolute());
    candidates
}

/// `graceful-run.` + 16 hex digits: the directory's name.
const DIR_NAME_LENGTH: usize = "graceful-run.".len() + 16;

/// Whether `base` can hold the directory: writable and searchable by us, short enough for
/// `base/graceful-run.XXXX/<generation>` to fit in sun_path, and (with `--user`) searchable by
/// that user, who must reach the socket.
fn usable_base(base: &Path, owner: Option<&Credentials>) -> bool {
    use std::os::unix::ffi::OsStrExt;
    // "/" + dir name + "/" + up to 20 digits + NUL.
    if base.as_os_str().as_bytes().len() + 1 + DIR_NAME_LENGTH + 1 + 20 + 1 > 108 {
        return false;
    }
    let Ok(meta) = std::fs::metadata(base) else {
        return false;
    };
    if !meta.is_dir() {
        return false;
    }
    if nix::unistd::access(
        base,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_err()
    {
        return false;
    }
    match owner {
        Some(owner) if owner.uid != nix::unistd::geteuid().as_raw() => {
            let mode = meta.mode();
            meta.uid() == owner.uid
                || mode & 0o001 != 0
                || (mode & 0o010 != 0
                    && (meta.gid() == owner.gid || owner.groups.contains(&meta.gid())))
        }
        _ => true,
    }
}

/// mkdir with an unpredictable name and mode 0700 (mkdir is exclusive: an existing name,
/// planted or not, is never reused), then handed to `owner`.
fn create_private(base: &Path, owner: Option<&Credentials>) -> io::Result<PathBuf> {
    loop {
        let path = base.join(format!("graceful-run.{}", crate::random::token()));
        // Exactly 0700, whatever the umask, without a chmod that would follow a symlink.
        match with_private_umask(|| std::fs::DirBuilder::new().mode(0o700).create(&path)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        let owned = match owner {
            Some(owner) => std::os::unix::fs::lchown(&path, Some(owner.uid), Some(owner.gid)),
            None => Ok(()),
        };
        if let Err(e) = owned {
            let _ = std::fs::remove_dir(&path);
            return Err(e);
        }
        return Ok(path);
    }
}

/// Runs `create` under umask 077, so that what it creates is exactly as private as asked.
/// The umask is process-wide; graceful-run creates files from its one thread.
fn with_private_umask<T>(create: impl FnOnce() -> T) -> T {
    let previous = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let result = create();
    nix::sys::stat::umask(previous);
    result
}

/// A socket file, removed on drop.
#[derive(Debug)]
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
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

/// A generation's own NOTIFY_SOCKET; its file is removed on drop.
pub struct NotifySocket {
    fd: AsyncFd<OwnedFd>,
    address: String,
    generation: u64,
    allowed_uids: Vec<u32>,
    /// Behind a lock because `poll_message` takes `&self`; never contended (one task).
    warnings: Mutex<Warnings>,
    /// The socket's file, removed with it (None for an abstract socket).
    _file: Option<SocketFile>,
}

impl NotifySocket {
    /// A socket in the abstract namespace, for when no private directory can be had (a
    /// read-only root without a writable /tmp; --user without CAP_CHOWN to hand it the
    /// directory): it needs no file system, and any local user could send to it, so the uid
    /// filter is all that keeps strangers out. Some sd_notify clients do not understand the
    /// `@` form (Debian's ruby sd_notify): the directory is preferred for them.
    pub fn bind_abstract(generation: u64, allowed_uids: &[u32]) -> io::Result<NotifySocket> {
        let name = format!(
            "graceful-run/notify/{}/{generation}/{}",
            std::process::id(),
            crate::random::token()
        );
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
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
            warnings: Mutex::new(Warnings::default()),
            _file: file,
        })
    }

    /// The NOTIFY_SOCKET value for the child: the socket's path.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The next valid message from an allowed sender; others are skipped with a
    /// rate-limited warning.
    pub fn poll_message(&self, cx: &mut Context<'_>) -> Poll<Message> {
        let mut warnings = self
            .warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        warnings.poll_summary(self.generation, cx);
        loop {
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                // An AsyncFd whose reactor is gone: nothing will ever arrive.
                Poll::Ready(Err(_)) | Poll::Pending => return Poll::Pending,
            };
            match receive(self.fd.get_ref().as_raw_fd(), &self.allowed_uids) {
                Ok(Datagram::Message(message)) => return Poll::Ready(message),
                Ok(Datagram::Ignored(reason)) => {
                    warnings.note(self.generation, &reason);
                    // A summary timer may just have been armed: register the waker.
                    warnings.poll_summary(self.generation, cx);
                }
                Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(_) => {}
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        // A window cut short by the generation's end still gets its summary line.
        self.warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// graceful-run's own NOTIFY_SOCKET, inherited from its supervisor.
pub struct Upstream {
    fd: OwnedFd,
    address: UnixAddr,
}

impl Upstream {
    /// `@name` (abstract) or a path; anything else (vsock:) is not supported.
    pub fn new(value: &str) -> Result<Upstream, String> {
        let address = if let Some(name) = value.strip_prefix('@') {
            UnixAddr::new_abstract(name.as_bytes())
        } else if value.starts_with('/') {
            UnixAddr::new(value)
        } else {
            return Err(format!(
                "NOTIFY_SOCKET '{value}' is not a unix socket address"
            ));
        }
        .map_err(|e| format!("NOTIFY_SOCKET '{value}': {}", e.desc()))?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
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

    #[tokio::test]
    async fn a_generation_socket_receives_with_credentials() {
        let dir = NotifyDir::create(None).unwrap();
        let socket = dir.bind(7, &[me()]).unwrap();
        let address = socket.address().to_string();
        assert!(
            address.starts_with('/'),
            "a path, not an abstract name: {address}"
        );
        assert!(address.ends_with("/7"), "{address}");
        let client = Upstream::new(&address).unwrap();
        client.send("READY=1\nSTATUS=hi").unwrap();
        let message = std::future::poll_fn(|cx| socket.poll_message(cx)).await;
        assert!(message.is_set("READY"));
        assert_eq!(message.get("STATUS"), Some("hi"));
        assert_eq!(message.sender_pid, Some(std::process::id() as i32));
    }

    #[tokio::test]
    async fn the_directory_is_private_and_cleaned_up() {
        let dir = NotifyDir::create(None).unwrap();
        let path = dir.path().to_path_buf();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
        assert_eq!(meta.uid(), me());
        let socket = dir.bind(1, &[me()]).unwrap();
        let file = PathBuf::from(socket.address());
        let socket_mode = std::fs::symlink_metadata(&file).unwrap().mode();
        assert_eq!(socket_mode & 0o777, 0o700, "{socket_mode:o}");
        drop(socket);
        assert!(!file.exists(), "the socket file outlived its socket");
        let _second = dir.bind(2, &[me()]).unwrap();
        drop(dir);
        assert!(!path.exists(), "the directory outlived graceful-run");
    }

    #[tokio::test]
    async fn a_sender_of_another_uid_is_ignored() {
        let dir = NotifyDir::create(None).unwrap();
        let socket = dir.bind(3, &[me() + 1]).unwrap();
        let client = Upstream::new(socket.address()).unwrap();
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
    fn base_directories_in_order() {
        assert_eq!(
            base_candidates(Some("/run/user/0".into()), Some("/var/tmp".into())),
            ["/run/user/0", "/run", "/var/tmp", "/tmp"].map(PathBuf::from)
        );
        assert_eq!(
            base_candidates(Some("relative".into()), None),
            ["/run", "/tmp"].map(PathBuf::from)
        );
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(80)));
        assert!(
            !usable_base(&long, None),
            "its sockets would not fit in sun_path"
        );
        assert!(usable_base(Path::new("/tmp"), None));
        assert!(!usable_base(Path::new("/nonexistent"), None));
    }
}
