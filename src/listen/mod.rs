//! The listening sockets graceful-run opens and holds for the whole life of the service.
//!
//! Holding them in the supervisor, not in the child, is what makes restarts lossless: while
//! no child accepts, connections wait in the kernel's backlog instead of being refused, and
//! every generation of the child inherits the very same sockets (fd 3, 4, ... in the order the
//! user gave them).
//!
//! Decisions, with the complaints of other tools' users behind them:
//! - The default backlog is 4096 (the kernel clamps it to `net.core.somaxconn`); systemfd's
//!   backlog of 1 drops connections under load (systemfd PR #26).
//! - `SO_REUSEADDR` is set on TCP listeners, as systemd does, so graceful-run itself can be
//!   restarted while old connections sit in TIME_WAIT. `SO_REUSEPORT` is opt-in: with it each
//!   process gets its own accept queue, and connections queued to an exiting process are reset.
//! - A unix socket path is replaced only if it is a socket nobody listens on (a non-blocking
//!   connect gets ECONNREFUSED; EAGAIN from a full backlog means a live listener, and never
//!   hangs startup); a live socket or any other file is an error. The stale file is removed
//!   only while the path is still the inode that was probed (see `replace_stale`). At exit the path is removed
//!   only if it is still the inode graceful-run created, so a newer instance's socket survives.
//!   The path is never touched on restart (node#19729, tableflip#24).

mod spec;
pub mod steer;

pub use spec::{Address, Host, ListenSpec};

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::libc;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrLike, SockaddrStorage,
    UnixAddr, bind, getsockname, setsockopt, socket, sockopt,
};

/// The backlog when the user gives none; the kernel clamps it to `net.core.somaxconn`.
pub const DEFAULT_BACKLOG: i32 = 4096;
/// systemd's default `SocketMode=`.
const DEFAULT_UNIX_MODE: u32 = 0o666;
/// The LISTEN_FDNAMES entry of a socket without `name=`: what sd_listen_fds_with_names(3)
/// reports when no names are given, so a server behaves as it would under systemd.
pub const DEFAULT_FD_NAME: &str = "unknown";

/// Where a socket ended up, with the real port when port 0 was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bound {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Unix(PathBuf),
    Abstract(Vec<u8>),
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Tcp(addr) => write!(f, "tcp://{addr}"),
            Bound::Udp(addr) => write!(f, "udp://{addr}"),
            Bound::Unix(path) => write!(f, "unix:{}", path.display()),
            Bound::Abstract(name) => write!(f, "unix:@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// One open listening socket.
pub struct Listener {
    pub spec: ListenSpec,
    pub bound: Bound,
    fd: Option<OwnedFd>,
}

impl Listener {
    /// A socket that accepts connections (all but UDP).
    pub fn is_stream(&self) -> bool {
        !matches!(self.bound, Bound::Udp(_))
    }

    /// The open socket, until graceful-run closes its copies at a stop.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.fd.as_ref().map(|fd| fd.as_fd())
    }

    pub fn fd_name(&self) -> &str {
        self.spec.name.as_deref().unwrap_or(DEFAULT_FD_NAME)
    }
}

/// A socket file graceful-run created, identified by inode so that it is removed only while
/// it is still ours.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn remove_if_ours(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// All listeners, in fd order.
#[derive(Default)]
pub struct Listeners {
    listeners: Vec<Listener>,
    files: Vec<SocketFile>,
}

/// A socket that could not be opened, with the spec it came from.
#[derive(Debug)]
pub struct BindError {
    pub spec: String,
    pub reason: String,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--listen '{}': {}", self.spec, self.reason)
    }
}

impl std::error::Error for BindError {}

impl Listeners {
    /// Opens every socket, or none: on failure the sockets already opened are closed and
    /// their files removed before the error is returned.
    pub fn bind(specs: &[ListenSpec]) -> Result<Listeners, BindError> {
        Listeners::bind_with(specs, false)
    }

    /// [`Listeners::bind`], and with `steer` every TCP listener without the user's
    /// `reuseport` is made ready to found a steering group ([`steer::Group::new`]): bound
    /// without `SO_REUSEPORT`, so that the bind is exclusive (nobody else holds the address,
    /// and nobody without `SO_REUSEPORT` can take it later), then `SO_REUSEPORT` is set
    /// before `listen()`, so that graceful-run's later members can join it.
    pub fn bind_with(specs: &[ListenSpec], steer: bool) -> Result<Listeners, BindError> {
        let mut listeners = Listeners::default();
        for spec in specs {
            let fail = |reason: String| BindError {
                spec: spec.text.clone(),
                reason,
            };
            let (fd, bound) = open(spec, steer, &mut listeners.files).map_err(fail)?;
            listeners.listeners.push(Listener {
                spec: spec.clone(),
                bound,
                fd: Some(fd),
            });
        }
        Ok(listeners)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Listener> {
        self.listeners.iter()
    }

    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// The raw fds, in the order the child receives them (3, 4, ...).
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.listeners
            .iter()
            .filter_map(|l| l.fd.as_ref().map(|fd| fd.as_raw_fd()))
            .collect()
    }

    /// Clears O_NONBLOCK before a spawn. The flag lives on the open file description that
    /// every holder of the socket shares, so a Go or tokio child that set it would otherwise
    /// hand non-blocking sockets to the next child, and a blocking-accept server would fail
    /// with EAGAIN.
    pub fn reset_blocking(&self) -> io::Result<()> {
        for fd in self.listeners.iter().filter_map(|l| l.fd.as_ref()) {
            let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
            if flags.contains(OFlag::O_NONBLOCK) {
                fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
            }
        }
        Ok(())
    }

    /// Closes graceful-run's own copies at the final stop, so that once the child closes its
    /// copy a new connect is refused at once instead of waiting in a backlog nobody will
    /// accept from.
    pub fn close(&mut self) {
        for listener in &mut self.listeners {
            listener.fd = None;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.listeners.iter().all(|l| l.fd.is_none())
    }

    /// Removes the socket files that are still the ones graceful-run created.
    pub fn remove_socket_files(&mut self) {
        for file in self.files.drain(..) {
            file.remove_if_ours();
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.remove_socket_files();
    }
}

fn open(
    spec: &ListenSpec,
    steer: bool,
    files: &mut Vec<SocketFile>,
) -> Result<(OwnedFd, Bound), String> {
    match &spec.address {
        Address::Tcp(host, port) => {
            let group = steer && !spec.reuseport;
            open_inet(spec, host, *port, SockType::Stream, group)
        }
        Address::Udp(host, port) => open_inet(spec, host, *port, SockType::Datagram, false),
        Address::Unix(path) => {
            let fd = open_unix_path(spec, path, files)?;
            Ok((fd, Bound::Unix(path.clone())))
        }
        Address::Abstract(name) => {
            let addr = UnixAddr::new_abstract(name).map_err(|e| e.desc().to_string())?;
            let fd = unix_socket()?;
            bind(fd.as_raw_fd(), &addr).map_err(|e| format!("cannot bind: {}", e.desc()))?;
            listen(&fd, spec)?;
            Ok((fd, Bound::Abstract(name.clone())))
        }
    }
}

fn open_inet(
    spec: &ListenSpec,
    host: &Host,
    port: u16,
    kind: SockType,
    group: bool,
) -> Result<(OwnedFd, Bound), String> {
    let fd = match host {
        Host::Any => {
            let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            match inet_socket(spec, any6, kind, false, group) {
                Err((Errno::EAFNOSUPPORT | Errno::EADDRNOTAVAIL, _)) => {
                    // IPv6 is off on this host: every IPv4 interface instead.
                    let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
                    inet_socket(spec, any4, kind, false, group)
                }
                other => other,
            }
        }
        Host::Ip(ip) => inet_socket(spec, SocketAddr::new(*ip, port), kind, true, group),
        Host::Name(name) => {
            let addr = (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve '{name}': {e}"))?
                .next()
                .ok_or_else(|| format!("'{name}' resolves to no address"))?;
            inet_socket(spec, addr, kind, true, group)
        }
    }
    .map_err(|(_, message)| message)?;
    let local = local_inet_address(&fd)?;
    let bound = if kind == SockType::Stream {
        Bound::Tcp(local)
    } else {
        Bound::Udp(local)
    };
    Ok((fd, bound))
}

/// A bound (and for TCP, listening) socket; errors keep the errno so the caller can fall back.
/// `group`: `SO_REUSEPORT` is set after the bind, before `listen()` (see
/// [`Listeners::bind_with`]).
fn inet_socket(
    spec: &ListenSpec,
    addr: SocketAddr,
    kind: SockType,
    v6only: bool,
    group: bool,
) -> Result<OwnedFd, (Errno, String)> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fail = |what: &str, errno: Errno| (errno, format!("{what}: {}", errno.desc()));
    let fd = socket(family, kind, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| fail("cannot create socket", e))?;
    if family == AddressFamily::Inet6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &v6only).map_err(|e| fail("IPV6_V6ONLY", e))?;
    }
    if kind == SockType::Stream {
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| fail("SO_REUSEADDR", e))?;
    }
    if spec.reuseport {
        setsockopt(&fd, sockopt::ReusePort, &true).map_err(|e| fail("SO_REUSEPORT", e))?;
    }
    let bound = match addr {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4)),
        SocketAddr::V6(v6) => bind(fd.as_raw_fd(), &SockaddrIn6::from(v6)),
    };
    bound.map_err(|e| fail(&format!("cannot bind {addr}"), e))?;
    if group {
        setsockopt(&fd, sockopt::ReusePort, &true).map_err(|e| fail("SO_REUSEPORT", e))?;
    }
    if kind == SockType::Stream {
        listen(&fd, spec).map_err(|m| (Errno::last(), m))?;
    }
    Ok(fd)
}

fn local_inet_address(fd: &OwnedFd) -> Result<SocketAddr, String> {
    let storage: SockaddrStorage =
        getsockname(fd.as_raw_fd()).map_err(|e| format!("getsockname: {}", e.desc()))?;
    if let Some(v4) = storage.as_sockaddr_in() {
        return Ok(SocketAddr::from(*v4));
    }
    if let Some(v6) = storage.as_sockaddr_in6() {
        return Ok(SocketAddr::from(*v6));
    }
    Err(format!("unexpected address family {:?}", storage.family()))
}

fn unix_socket() -> Result<OwnedFd, String> {
    socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("cannot create socket: {}", e.desc()))
}

fn open_unix_path(
    spec: &ListenSpec,
    path: &Path,
    files: &mut Vec<SocketFile>,
) -> Result<OwnedFd, String> {
    let addr = UnixAddr::new(path).map_err(|e| e.desc().to_string())?;
    let fd = unix_socket()?;
    match existing_socket(path)? {
        // bind(2) creates the file, and fails if one appeared since: no race here.
        None => bind(fd.as_raw_fd(), &addr).map_err(|e| format!("cannot bind: {}", e.desc()))?,
        Some(stale) => replace_stale(&fd, path, stale)?,
    }
    // Recorded before anything else can fail, so that a failure below removes the file.
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("after bind: {e}"))?;
    files.push(SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    });
    let mode = spec.mode.unwrap_or(DEFAULT_UNIX_MODE);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set mode {mode:o}: {e}"))?;
    listen(&fd, spec)?;
    Ok(fd)
}

/// How long the liveness probe of an existing socket may wait for an answer.
const PROBE_TIMEOUT_MS: u16 = 1000;

/// The identity of a socket file found stale, so that only that very file is replaced.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stale {
    dev: u64,
    ino: u64,
}

/// `None` when nothing is at `path`; the stale socket's identity when a socket nobody listens
/// on is there; an error for a live socket or any other file.
fn existing_socket(path: &Path) -> Result<Option<Stale>, String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot inspect the existing path: {e}")),
    };
    if !meta.file_type().is_socket() {
        return Err("the path exists and is not a socket; refusing to replace it".into());
    }
    let stale = Stale {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    match probe(path) {
        Ok(Liveness::Live) => Err("another process is listening on this socket".into()),
        Ok(Liveness::Stale) => Ok(Some(stale)),
        // Removed while we looked: nothing to replace.
        Ok(Liveness::Gone) => Ok(None),
        Err(e) => Err(format!(
            "cannot check whether the existing socket is live: {}",
            e.desc()
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Liveness {
    Live,
    Stale,
    Gone,
}

/// Connects to `path` without blocking. A listener whose backlog is full makes a blocking
/// connect wait until it accepts, possibly forever (a stalled server), which would hang
/// startup; non-blocking, the kernel answers EAGAIN at once, and that alone proves a
/// listener. Any other pending answer is waited for at most [`PROBE_TIMEOUT_MS`].
fn probe(path: &Path) -> nix::Result<Liveness> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::connect;
    let addr = UnixAddr::new(path)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) | Err(Errno::EAGAIN) => Ok(Liveness::Live),
        Err(Errno::ECONNREFUSED) => Ok(Liveness::Stale),
        Err(Errno::ENOENT) => Ok(Liveness::Gone),
        Err(Errno::EINPROGRESS) => {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
            if poll(&mut fds, PollTimeout::from(PROBE_TIMEOUT_MS))? == 0 {
                // No answer in time, but something holds the address: treat it as live rather
                // than pull a socket out from under a slow server.
                return Ok(Liveness::Live);
            }
            match nix::sys::socket::getsockopt(&fd, sockopt::SocketError)? {
                0 => Ok(Liveness::Live),
                libc::ECONNREFUSED => Ok(Liveness::Stale),
                errno => Err(Errno::from_raw(errno)),
            }
        }
        Err(e) => Err(e),
    }
}

/// Binds `fd` at `path` in place of the stale socket file probed as `stale`.
///
/// The file is unlinked only if the path is still the very file that was probed: a socket
/// another process created meanwhile (a second instance starting at the same moment) is not
/// removed, and the refusal says so. Check and unlink are two syscalls, so a sliver of a race
/// remains (Linux has no "unlink if this inode"), against a whole blocking connect before.
/// Binding at a temporary name and renaming it over the path would close it, but the socket
/// would then report the temporary name from getsockname(2), and servers that match
/// inherited sockets by path (`sd_is_socket_unix`) would not recognise it.
fn replace_stale(fd: &OwnedFd, path: &Path, stale: Stale) -> Result<(), String> {
    let still_stale = std::fs::symlink_metadata(path)
        .is_ok_and(|meta| meta.dev() == stale.dev && meta.ino() == stale.ino);
    if !still_stale {
        return Err(
            "the socket was replaced by another process while graceful-run checked it".into(),
        );
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove the stale socket: {e}")),
    }
    let addr = UnixAddr::new(path).map_err(|e| e.desc().to_string())?;
    // Fails with EADDRINUSE if another process bound the path since the unlink.
    bind(fd.as_raw_fd(), &addr).map_err(|e| format!("cannot bind: {}", e.desc()))
}

fn listen(fd: &OwnedFd, spec: &ListenSpec) -> Result<(), String> {
    let backlog = spec.backlog.unwrap_or(DEFAULT_BACKLOG);
    // nix's Backlog refuses values above SOMAXCONN, but a host may raise net.core.somaxconn
    // and users may ask for more; the kernel clamps whatever it is given.
    // SAFETY: listen(2) on a socket fd we own; no memory is passed.
    let result = unsafe { libc::listen(fd.as_fd().as_raw_fd(), backlog) };
    Errno::result(result)
        .map(drop)
        .map_err(|e| format!("cannot listen: {}", e.desc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("gr-listen-{tag}-{}", crate::random::token()))
    }

    /// A stale socket file that another process replaced after the probe is not removed.
    #[test]
    fn a_replaced_stale_socket_is_left_alone() {
        let path = temp_path("replaced");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("the temp dir is writable"));
        let stale = existing_socket(&path)
            .expect("a stale socket is not an error")
            .expect("and it is found");
        // Another instance replaces it between our probe and our unlink. A second link keeps
        // the stale inode allocated, so the newer socket cannot get its number.
        let keeper = temp_path("keeper");
        std::fs::hard_link(&path, &keeper).expect("same directory");
        std::fs::remove_file(&path).expect("the file is ours");
        let newer = std::os::unix::net::UnixListener::bind(&path).expect("rebinds");
        let newer_inode = std::fs::symlink_metadata(&path).expect("bound").ino();
        let fd = unix_socket().expect("a socket");
        let result = replace_stale(&fd, &path, stale);
        let inode_after = std::fs::symlink_metadata(&path).map(|m| m.ino()).ok();
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&keeper);
        drop(newer);
        assert_ne!(newer_inode, stale.ino);
        assert!(result.unwrap_err().contains("replaced by another process"));
        assert_eq!(
            inode_after,
            Some(newer_inode),
            "the newer socket is untouched"
        );
    }

    #[test]
    fn a_stale_socket_is_replaced() {
        let path = temp_path("stale");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("the temp dir is writable"));
        let stale = existing_socket(&path)
            .expect("a stale socket is not an error")
            .expect("and it is found");
        let fd = unix_socket().expect("a socket");
        let result = replace_stale(&fd, &path, stale);
        let _ = std::fs::remove_file(&path);
        assert_eq!(result, Ok(()));
    }
}
