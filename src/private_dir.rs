//! graceful-run's private runtime directory: where the generations' NOTIFY_SOCKET files live.
//!
//! # Who may do what in it
//!
//! The directory belongs to graceful-run's own user (root, usually) and nobody else ever
//! owns or writes anything in it. With `--user`, the command's user gets exactly one thing:
//! its generation's socket file, handed over with `fchownat` so that it can send to it (a
//! unix socket takes write permission on the file). The directory itself is then mode 0711,
//! so that user can reach the socket by its path but cannot list, create, rename or remove
//! anything; without `--user` it is 0700. A `--user` server can therefore neither fill the
//! file system through it nor leave anything behind in it.
//!
//! Handing the file over takes CAP_CHOWN, which a hardened service may lack
//! (examples/systemd's unit keeps only CAP_SETUID, CAP_SETGID, CAP_KILL and
//! CAP_NET_BIND_SERVICE). Then the socket file stays graceful-run's and is made writable by
//! all (0722, [`Handover::OpenToAll`]): every local user can then send to it, as to the
//! abstract socket this used to fall back to, and is refused by uid and by process (see
//! `notify`); it is still a path, which every sd_notify client understands.
//!
//! # No path is trusted
//!
//! The directory sits in a base directory that others may be able to write to (`$TMPDIR`
//! may be a Kubernetes `emptyDir`, mode 0777 without the sticky bit, or owned by the
//! `--user` user): whoever can write there can rename graceful-run's directory away and put a
//! symlink to any directory in its place. So after creating it, graceful-run never uses a
//! path that goes through the base again: the directory is opened once with
//! `O_DIRECTORY|O_NOFOLLOW`, and every later operation is relative to that descriptor (and
//! the base's, for the directory's own removal): `unlinkat`, `fchownat` with
//! `AT_SYMLINK_NOFOLLOW`, and `bind` through `/proc/self/fd/N/NAME`, a path the kernel
//! resolves through our descriptor (or, without /proc, a `bind` relative to a working
//! directory set with `fchdir` for that one call). The path is only what others are told
//! (the NOTIFY_SOCKET value), and the worst a renamer can do with it is to misdirect the
//! messages of a service whose base directory it controls anyway.
//!
//! The one window is between `mkdirat` and the `openat` that follows: a renamer fast enough
//! to swap in another directory there would have to supply one that is owned by
//! graceful-run's user, empty and not accessible to group or others, which is checked; a
//! directory that fails the check is left alone and another name is tried.
//!
//! # Directories of instances that were killed
//!
//! A graceful-run killed with SIGKILL leaves its directory behind. Each instance holds an
//! exclusive `flock` on its directory for its whole life (the lock goes with the process).
//! Once the first generation has started, [`PrivateDir::sweep_dead`] looks in the same base
//! for other directories named `graceful-run-` and 16 hex digits: one that is a real
//! directory (opened `O_NOFOLLOW`), owned by graceful-run's user, not writable by others,
//! not changed in the last [`SWEEP_MIN_AGE`] (its mtime: a new instance locks its directory
//! microseconds after making it), and whose lock can be taken, is dead: its entries are
//! removed through its descriptor, then the directory itself, by name in the base only after
//! checking that the name still leads to the same directory. Directories of other users, and
//! those of older graceful-run versions (named `graceful-run.*`, which took no lock), are
//! never touched.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::libc;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, unlinkat};

use crate::log::Subject;
use crate::spawn::Credentials;
use crate::{debug, info};

/// The directory's name: this prefix and 16 hex digits. (Versions before the directory was
/// locked used `graceful-run.`: a different prefix keeps their live directories from being
/// taken for dead ones.)
pub const PREFIX: &str = "graceful-run-";
const NAME_LENGTH: usize = PREFIX.len() + 16;

/// A directory changed more recently than this is never swept: its instance may be between
/// `mkdirat` and `flock`.
pub const SWEEP_MIN_AGE: Duration = Duration::from_secs(10);

/// How a socket file was made reachable by the user it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    /// No other user: the file is graceful-run's own, mode 0700.
    Private,
    /// Owned by the user, mode 0700.
    Owned,
    /// graceful-run's own, mode 0722: graceful-run may not change a file's owner (no
    /// CAP_CHOWN), so anyone may send to it (see the module docs).
    OpenToAll,
}

/// The private directory; removed when dropped (with whatever socket files are left in it).
#[derive(Debug)]
pub struct PrivateDir {
    /// The base directory, as it was when the directory was made in it.
    base: OwnedFd,
    /// The directory's name in the base.
    name: String,
    /// The directory, opened `O_DIRECTORY|O_NOFOLLOW`; it holds the instance's flock.
    fd: OwnedFd,
    /// `base/name`: what others are told, never used by graceful-run itself.
    path: PathBuf,
}

/// `$XDG_RUNTIME_DIR`, /run, `$TMPDIR`, /tmp, in that order (relative paths are skipped).
pub fn base_candidates(xdg_runtime_dir: Option<PathBuf>, tmpdir: Option<PathBuf>) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = xdg_runtime_dir.into_iter().collect();
    candidates.push(PathBuf::from("/run"));
    candidates.extend(tmpdir);
    candidates.push(PathBuf::from("/tmp"));
    candidates.retain(|path| path.is_absolute());
    candidates
}

/// Whether `base/<directory>/<up to 20 digits>` fits in sun_path (108 bytes with the NUL).
pub fn fits_sun_path(base: &Path) -> bool {
    base.as_os_str().as_bytes().len() + 1 + NAME_LENGTH + 1 + 20 < 108
}

impl PrivateDir {
    /// Makes the directory in the first usable base (see [`base_candidates`]): one that
    /// exists, where graceful-run may create a directory, short enough for sun_path, and (for
    /// `user`) searchable by that user, who must reach its socket.
    pub fn create(user: Option<&Credentials>) -> io::Result<PrivateDir> {
        let candidates = base_candidates(
            std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            std::env::var_os("TMPDIR").map(PathBuf::from),
        );
        let mut last_error = io::Error::new(
            io::ErrorKind::NotFound,
            "no usable directory among $XDG_RUNTIME_DIR, /run, $TMPDIR and /tmp",
        );
        for base in candidates {
            match PrivateDir::create_in(&base, user) {
                Ok(dir) => return Ok(dir),
                Err(e) => {
                    debug!(
                        Subject::NONE,
                        "private directory: {} is not usable: {e}",
                        base.display()
                    );
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    fn create_in(base: &Path, user: Option<&Credentials>) -> io::Result<PrivateDir> {
        if !fits_sun_path(base) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too long for a socket path",
            ));
        }
        // The base path is followed as configured (/var/run is a symlink on many systems);
        // from here on only this descriptor is used.
        let base_fd = nix::fcntl::open(
            base,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let base_stat = fstat(&base_fd)?;
        let euid = nix::unistd::geteuid().as_raw();
        let foreign_user = user.filter(|u| u.uid != euid);
        if let Some(user) = foreign_user
            && !searchable_by(&base_stat, user)
        {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} cannot search it", user.name),
            ));
        }
        let mode = if foreign_user.is_some() { 0o711 } else { 0o700 };
        loop {
            let name = format!("{PREFIX}{}", crate::random::token());
            // Owner-only whatever the umask; the final mode is set through the descriptor.
            match mkdirat(&base_fd, name.as_str(), Mode::from_bits_truncate(0o700)) {
                Ok(()) => {}
                // A random name taken (planted or not): never reused, try another.
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(e.into()),
            }
            let opened = openat(
                &base_fd,
                name.as_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            );
            let (fd, stat) = match opened {
                Ok(fd) => {
                    let stat = fstat(&fd)?;
                    (fd, stat)
                }
                Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            // Renamed away and replaced between mkdirat and openat (see the module docs):
            // what is there now is not ours to use, nor to remove.
            if !is_fresh(&stat, euid) {
                continue;
            }
            // mkdirat gave 0700 unless the umask took bits from the owner too.
            if stat.st_mode & 0o7777 != mode {
                fchmod(&fd, Mode::from_bits_truncate(mode))?;
            }
            lock(&fd, libc::LOCK_EX)?;
            return Ok(PrivateDir {
                base: base_fd,
                path: base.join(&name),
                name,
                fd,
            });
        }
    }

    /// The directory's path, for others (NOTIFY_SOCKET); never used by graceful-run.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Binds a non-blocking, close-on-exec datagram socket at `name` in the directory, mode
    /// 0700 (exactly, whatever the umask), then hands the file to `owner` (uid, gid) if given
    /// (or, without CAP_CHOWN, opens it to all: see the module docs). Returns the socket, its
    /// path for others, and how it was handed over.
    pub fn bind_datagram(
        &self,
        name: &str,
        owner: Option<(u32, u32)>,
    ) -> io::Result<(OwnedFd, String, Handover)> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        let through_proc = format!("/proc/self/fd/{}/{name}", self.fd.as_raw_fd());
        // bind creates the file with 0777 & ~umask: umask 077 makes it 0700 without a chmod.
        let bound = with_private_umask(|| {
            match bind(fd.as_raw_fd(), &UnixAddr::new(through_proc.as_str())?) {
                // No /proc: bind relative to the directory, made the working directory for
                // this one call.
                Err(Errno::ENOENT) if std::fs::metadata("/proc/self/fd").is_err() => {
                    bind_relative(&self.fd, fd.as_raw_fd(), name)
                }
                other => other,
            }
        });
        bound?;
        let handover = match owner {
            None => Handover::Private,
            Some((uid, gid)) => match fchownat(
                &self.fd,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(()) => Handover::Owned,
                // No CAP_CHOWN. fchmodat follows a symlink in the last component, but nobody
                // else can put anything in this directory.
                Err(Errno::EPERM) => {
                    let opened = nix::sys::stat::fchmodat(
                        &self.fd,
                        name,
                        Mode::from_bits_truncate(0o722),
                        nix::sys::stat::FchmodatFlags::FollowSymlink,
                    );
                    if let Err(e) = opened {
                        self.remove(name);
                        return Err(e.into());
                    }
                    Handover::OpenToAll
                }
                Err(e) => {
                    self.remove(name);
                    return Err(e.into());
                }
            },
        };
        let path = self.path.join(name);
        let path = path
            .to_str()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "non-UTF-8 path"))?
            .to_string();
        Ok((fd, path, handover))
    }

    /// Removes the file `name` from the directory (a no-op when it is not there).
    pub fn remove(&self, name: &str) {
        let _ = unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir);
    }

    /// Removes the directories of dead instances from the base (see the module docs);
    /// returns how many. Reads the base once; costs a few syscalls per `graceful-run-*`
    /// entry, none for other entries.
    pub fn sweep_dead(&self) -> usize {
        self.sweep(SWEEP_MIN_AGE)
    }

    fn sweep(&self, min_age: Duration) -> usize {
        let Ok(mut listing) = nix::dir::Dir::openat(
            &self.base,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return 0;
        };
        let euid = nix::unistd::geteuid().as_raw();
        let names: Vec<CString> = listing
            .iter()
            .flatten()
            .map(|entry| entry.file_name().to_owned())
            .filter(|name| {
                let bytes = name.to_bytes();
                bytes.len() == NAME_LENGTH
                    && bytes.starts_with(PREFIX.as_bytes())
                    && bytes[PREFIX.len()..]
                        .iter()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
                    && bytes != self.name.as_bytes()
            })
            .collect();
        let mut removed = 0;
        for name in names {
            if sweep_one(&self.base, &name, euid, min_age) {
                removed += 1;
                info!(
                    Subject::NONE,
                    "removed {}, left behind by a graceful-run that was killed",
                    self.path
                        .with_file_name(std::ffi::OsStr::from_bytes(name.to_bytes()))
                        .display()
                );
            }
        }
        removed
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // Whatever is left in it was put there by graceful-run (nobody else can write in it).
        empty(&self.fd);
        remove_if_same(&self.base, self.name.as_str(), &self.fd);
    }
}

/// Whether the user may search (x) a directory with this status, as owner, group or other.
fn searchable_by(stat: &FileStat, user: &Credentials) -> bool {
    let bit = if stat.st_uid == user.uid {
        0o100
    } else if stat.st_gid == user.gid || user.groups.contains(&stat.st_gid) {
        0o010
    } else {
        0o001
    };
    stat.st_mode & bit != 0
}

/// Whether a directory just made with mkdirat is the one opened: ours, empty, owner-only.
fn is_fresh(stat: &FileStat, euid: u32) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
        && stat.st_uid == euid
        && stat.st_nlink == 2
        && stat.st_mode & 0o077 == 0
}

/// flock without waiting: EWOULDBLOCK when another open file holds it.
fn lock(fd: &impl AsFd, operation: libc::c_int) -> nix::Result<()> {
    // SAFETY: flock on a live fd; no memory is passed.
    let result = unsafe { libc::flock(fd.as_fd().as_raw_fd(), operation | libc::LOCK_NB) };
    Errno::result(result).map(drop)
}

/// Runs `create` under umask 077, so that what it creates is exactly as private as asked.
/// The umask is process-wide: graceful-run creates files from its one runtime thread.
pub fn with_private_umask<T>(create: impl FnOnce() -> T) -> T {
    let previous = nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
    let result = create();
    nix::sys::stat::umask(previous);
    result
}

/// `bind` to `name` relative to `dir`, for systems without /proc: the working directory is
/// `dir` for the call only (graceful-run runs no other code meanwhile: one runtime thread).
fn bind_relative(dir: &OwnedFd, socket: libc::c_int, name: &str) -> nix::Result<()> {
    let cwd = nix::fcntl::open(
        ".",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    nix::unistd::fchdir(dir)?;
    let result = UnixAddr::new(name).and_then(|address| bind(socket, &address));
    // Back where it was, even if that directory has been removed meanwhile.
    nix::unistd::fchdir(&cwd)?;
    result
}

/// Removes every non-directory entry of `dir`, through its descriptor.
fn empty(dir: &OwnedFd) {
    let Ok(mut listing) = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let names: Vec<CString> = listing
        .iter()
        .flatten()
        .map(|entry| entry.file_name().to_owned())
        .filter(|name| name.to_bytes() != b"." && name.to_bytes() != b"..")
        .collect();
    for name in names {
        // A directory in it was not made by graceful-run: left, and so is its parent.
        let _ = unlinkat(dir, name.as_c_str(), UnlinkatFlags::NoRemoveDir);
    }
}

/// Removes the directory `name` of `base` if that name still leads to `dir` (it may have
/// been renamed away by whoever can write to the base; then it stays where they put it).
fn remove_if_same(base: &OwnedFd, name: &(impl nix::NixPath + ?Sized), dir: &OwnedFd) {
    let (Ok(now), Ok(ours)) = (
        fstatat(base, name, AtFlags::AT_SYMLINK_NOFOLLOW),
        fstat(dir),
    ) else {
        return;
    };
    if now.st_dev == ours.st_dev && now.st_ino == ours.st_ino {
        let _ = unlinkat(base, name, UnlinkatFlags::RemoveDir);
    }
}

/// Sweeps one `graceful-run-*` entry of `base` if it is a dead instance's directory.
fn sweep_one(base: &OwnedFd, name: &CString, euid: u32, min_age: Duration) -> bool {
    let Ok(fd) = openat(
        base,
        name.as_c_str(),
        OFlag::O_RDONLY
            | OFlag::O_DIRECTORY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK,
        Mode::empty(),
    ) else {
        return false;
    };
    let Ok(stat) = fstat(&fd) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let recent = now.saturating_sub(stat.st_mtime) < min_age.as_secs() as i64;
    if stat.st_uid != euid || stat.st_mode & 0o022 != 0 || recent {
        return false;
    }
    // Held by a live instance: not dead.
    if lock(&fd, libc::LOCK_EX).is_err() {
        return false;
    }
    empty(&fd);
    remove_if_same(base, name.as_c_str(), &fd);
    fstatat(base, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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
            !fits_sun_path(&long),
            "its sockets would not fit in sun_path"
        );
        assert!(fits_sun_path(Path::new("/tmp")));
    }

    fn scratch(tag: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("gr-private-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("the temp dir is writable");
        path
    }

    #[test]
    fn the_directory_is_private_locked_and_removed_with_its_sockets() {
        let base = scratch("private");
        let dir = PrivateDir::create_in(&base, None).expect("a directory is made");
        let meta = std::fs::symlink_metadata(dir.path()).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        let (_socket, path, handover) = dir.bind_datagram("1", None).unwrap();
        assert_eq!(handover, Handover::Private);
        assert_eq!(PathBuf::from(&path), dir.path().join("1"));
        let socket_mode = std::fs::symlink_metadata(&path).unwrap().mode();
        assert_eq!(socket_mode & 0o777, 0o700, "{socket_mode:o}");
        // Locked: a sweep from another instance leaves it.
        let other = PrivateDir::create_in(&base, None).unwrap();
        assert_eq!(other.sweep(Duration::ZERO), 0);
        assert!(std::path::Path::new(&path).exists());
        let dir_path = dir.path().to_path_buf();
        drop(dir);
        assert!(!dir_path.exists(), "the directory outlived its instance");
        drop(other);
        std::fs::remove_dir(&base).expect("nothing is left in the base");
    }

    #[test]
    fn a_directory_renamed_away_is_not_followed() {
        let base = scratch("renamed");
        let victim = scratch("renamed-victim");
        std::fs::write(victim.join("2"), "precious").unwrap();
        let dir = PrivateDir::create_in(&base, None).unwrap();
        let moved = base.join("moved");
        std::fs::rename(dir.path(), &moved).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path()).unwrap();
        let (_socket, _, _) = dir
            .bind_datagram("2", None)
            .expect("binds in the real directory");
        assert_eq!(
            std::fs::read_to_string(victim.join("2")).unwrap(),
            "precious"
        );
        assert!(
            moved.join("2").exists(),
            "the socket is in the directory it made"
        );
        dir.remove("2");
        assert!(victim.join("2").exists());
        drop(dir);
        assert!(victim.join("2").exists());
        assert!(
            std::fs::symlink_metadata(
                base.join(
                    std::fs::read_dir(&base)
                        .unwrap()
                        .flatten()
                        .find(|e| e.file_name() != "moved")
                        .unwrap()
                        .file_name()
                )
            )
            .unwrap()
            .file_type()
            .is_symlink()
        );
        std::fs::remove_dir_all(&base).unwrap();
        std::fs::remove_dir_all(&victim).unwrap();
    }

    #[test]
    fn only_dead_directories_of_our_own_are_swept() {
        use std::os::unix::fs::PermissionsExt;
        let base = scratch("sweep");
        let victim = scratch("sweep-victim");
        std::fs::write(victim.join("1"), "precious").unwrap();
        let dead = base.join(format!("{PREFIX}{}", "0".repeat(16)));
        std::fs::create_dir(&dead).unwrap();
        std::fs::set_permissions(&dead, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::os::unix::net::UnixDatagram::bind(dead.join("1")).unwrap();
        let planted = base.join(format!("{PREFIX}{}", "1".repeat(16)));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let open_to_all = base.join(format!("{PREFIX}{}", "2".repeat(16)));
        std::fs::create_dir(&open_to_all).unwrap();
        std::fs::set_permissions(&open_to_all, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(open_to_all.join("1"), "theirs").unwrap();
        let old_style = base.join(format!("graceful-run.{}", "3".repeat(16)));
        std::fs::create_dir(&old_style).unwrap();
        let lookalike = base.join(format!("{PREFIX}{}", "x".repeat(16)));
        std::fs::create_dir(&lookalike).unwrap();

        let dir = PrivateDir::create_in(&base, None).unwrap();
        assert_eq!(dir.sweep(SWEEP_MIN_AGE), 0, "too recent to be judged");
        assert_eq!(dir.sweep(Duration::ZERO), 1);
        assert!(!dead.exists(), "the dead directory is swept");
        assert!(victim.join("1").exists(), "a symlink is never followed");
        assert!(planted.is_symlink());
        assert!(
            open_to_all.join("1").exists(),
            "a directory others may write is left"
        );
        assert!(old_style.exists(), "an older version's directory is left");
        assert!(
            lookalike.exists(),
            "a name that is not prefix + 16 hex digits is left"
        );
        assert!(dir.path().exists(), "its own directory stays");
        drop(dir);
        std::fs::remove_dir_all(&base).unwrap();
        std::fs::remove_dir_all(&victim).unwrap();
    }
}
