//! `--pid-file`: graceful-run's own pid, for `kill -HUP "$(cat PATH)"`.
//!
//! The pid is written to a temporary file in the same directory and moved into place, so a
//! reader never sees a partial file. graceful-run usually runs as root and the directory may
//! be writable by others (/tmp), so the temporary file is made safely:
//! - an unpredictable name (random bytes from getrandom(2)) opened with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`: a symlink planted at the name is never followed
//!   (O_EXCL fails on any existing name, and the name cannot be guessed anyway);
//! - mode 0644 set with fchmod, whatever the umask (0666 under `umask 000` would let anyone
//!   rewrite the pid that a `kill "$(cat PATH)"` targets).
//!
//! The file is locked (`flock`, exclusive) for graceful-run's whole life, through an fd kept
//! open until exit. A pid file whose lock is held belongs to a running instance, and startup
//! fails naming its pid. Claiming the path is race-free between instances started at once:
//! - no file yet: `link(2)` the temporary file to the path, which fails if another instance
//!   created it first (then it is examined like an existing file);
//! - a file exists: lock it; if it is locked, it is in use; if we get the lock it is stale
//!   (its owner is gone, its lock with it), and it is replaced by `rename(2)` while we still
//!   hold its lock, so a racing instance either fails to lock it or finds our locked file.
//!
//! The existing file is opened with `O_NONBLOCK` and must be a regular file: a FIFO planted
//! at the path (`/tmp/gr.pid` is in a directory anyone may write to) would otherwise block
//! the open until someone writes to it, before any signal handling could end graceful-run.
//! A file in use is reported by who holds its lock, from /proc/locks, not by the pid written
//! in it, which anyone who could write the file could have chosen.
//!
//! A stale file written by an older graceful-run without a lock is still checked by content:
//! if it names a live graceful-run other than this one, startup fails. Our own pid (PID 1 in
//! a restarted container) or a pid now used by another program is stale.
//!
//! At exit the file is removed if the path is still the inode we created, so a newer
//! instance's file survives.

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::libc;
use nix::sys::stat::{Mode, fchmod, fstat};

/// How often a claim is retried when another instance changes the path under us: each retry
/// follows a real change by another process, so a few are plenty.
const CLAIM_ATTEMPTS: usize = 16;

pub struct PidFile {
    path: PathBuf,
    /// The locked file, open for graceful-run's life: the lock says "in use".
    file: OwnedFd,
}

impl PidFile {
    pub fn create(path: &Path) -> Result<PidFile, String> {
        let pid = std::process::id();
        let directory = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file_name = path
            .file_name()
            .ok_or("the path has no file name")?
            .to_string_lossy();
        let (temporary, file) = create_temporary(directory, &file_name)
            .map_err(|e| format!("cannot create a file next to it: {}", e.desc()))?;
        let result = write_pid(&file, pid).and_then(|()| claim(path, &temporary, pid));
        // Linked or renamed into place, or failed: the temporary name is not needed either way.
        let _ = fs::remove_file(&temporary);
        result?;
        Ok(PidFile {
            path: path.to_path_buf(),
            file,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if is_same_file(&self.path, &self.file) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `.NAME.RANDOM.tmp`, created exclusively, never through a symlink, mode 0644, locked.
fn create_temporary(directory: &Path, file_name: &str) -> nix::Result<(PathBuf, OwnedFd)> {
    loop {
        let temporary = directory.join(format!(".{file_name}.{}.tmp", crate::random::token()));
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let file = match open(&temporary, flags, Mode::from_bits_truncate(0o644)) {
            Ok(file) => file,
            // A random name taken: try another.
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(e),
        };
        let locked = fchmod(&file, Mode::from_bits_truncate(0o644)).and_then(|()| lock(&file));
        if let Err(e) = locked {
            let _ = fs::remove_file(&temporary);
            return Err(e);
        }
        return Ok((temporary, file));
    }
}

fn write_pid(file: &OwnedFd, pid: u32) -> Result<(), String> {
    let mut writer = fs::File::from(
        file.try_clone()
            .map_err(|e| format!("cannot write it: {e}"))?,
    );
    writer
        .write_all(format!("{pid}\n").as_bytes())
        .and_then(|()| writer.sync_all())
        .map_err(|e| format!("cannot write it: {e}"))
}

/// An exclusive flock that fails at once (EWOULDBLOCK) when another holds it.
fn lock(file: &impl AsFd) -> nix::Result<()> {
    // SAFETY: flock on a live fd; no memory is passed.
    let result = unsafe { libc::flock(file.as_fd().as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    Errno::result(result).map(drop)
}

/// Puts `temporary` (locked, holding our pid) at `path` unless a running instance holds it.
fn claim(path: &Path, temporary: &Path, ours: u32) -> Result<(), String> {
    let mut last_holder_unknown = false;
    for _ in 0..CLAIM_ATTEMPTS {
        match fs::hard_link(temporary, path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create it: {e}")),
        }
        let existing = match open(
            path,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(existing) => existing,
            // Removed since the link failed: try to create it again.
            Err(Errno::ENOENT) => continue,
            Err(Errno::ELOOP) => {
                return Err("the path is a symbolic link; refusing to follow it".into());
            }
            Err(e) => return Err(format!("cannot open the existing file: {}", e.desc())),
        };
        let kind = fstat(&existing)
            .map(|stat| stat.st_mode & libc::S_IFMT)
            .map_err(|e| format!("cannot examine the existing file: {}", e.desc()))?;
        if kind != libc::S_IFREG {
            return Err(format!(
                "the path exists and is not a regular file ({}); refusing to use it",
                file_kind(kind)
            ));
        }
        match lock(&existing) {
            Ok(()) => {}
            // Replaced since we opened it (a racing instance): look again.
            Err(Errno::EWOULDBLOCK) if !is_same_file(path, &existing) => continue,
            Err(Errno::EWOULDBLOCK) => match lock_holder(&existing) {
                Some((pid, comm)) if comm == "graceful-run" => {
                    return Err(format!("graceful-run is already running as pid {pid}"));
                }
                Some((pid, comm)) => {
                    return Err(format!(
                        "it is locked by pid {pid} ({}), which is not a graceful-run",
                        comm.escape_debug()
                    ));
                }
                // Let go of since: look again.
                None => {
                    last_holder_unknown = true;
                    continue;
                }
            },
            Err(e) => return Err(format!("cannot lock the existing file: {}", e.desc())),
        }
        if !is_same_file(path, &existing) {
            // Replaced between our open and our lock: look again.
            continue;
        }
        // Stale by its lock; an unlocked file from an older graceful-run is judged by content.
        if let Some(other) = live_owner(&existing, ours) {
            return Err(format!("graceful-run is already running as pid {other}"));
        }
        // Still holding the stale file's lock, so no other instance can claim it meanwhile.
        return fs::rename(temporary, path).map_err(|e| format!("cannot replace it: {e}"));
    }
    Err(if last_holder_unknown {
        "another process holds its lock".into()
    } else {
        "other processes keep replacing it".into()
    })
}

/// Whether `path` (not following a symlink) is the file open as `file`.
fn is_same_file(path: &Path, file: &impl AsFd) -> bool {
    match (fs::symlink_metadata(path), fstat(file.as_fd())) {
        (Ok(meta), Ok(stat)) => meta.dev() == stat.st_dev && meta.ino() == stat.st_ino,
        _ => false,
    }
}

/// The pid written in the open file (never reopened by path: it may have changed).
fn read_pid(file: &OwnedFd) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let mut bytes = [0u8; 32];
    let file = fs::File::from(file.try_clone().ok()?);
    let n = file.read_at(&mut bytes, 0).ok()?;
    std::str::from_utf8(&bytes[..n]).ok()?.trim().parse().ok()
}

/// The pid and command name of the process holding the flock on `file`, from /proc/locks
/// (`1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF`; waiters are listed with `->`).
fn lock_holder(file: &OwnedFd) -> Option<(i32, String)> {
    let stat = fstat(file).ok()?;
    let device = format!(
        "{:02x}:{:02x}:{}",
        libc::major(stat.st_dev),
        libc::minor(stat.st_dev),
        stat.st_ino
    );
    let locks = fs::read_to_string("/proc/locks").ok()?;
    let pid: i32 = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&device.as_str()))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    Some((pid, comm.trim_end().to_string()))
}

/// What a file that is not a regular one is, for the error line.
fn file_kind(kind: libc::mode_t) -> &'static str {
    match kind {
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFDIR => "a directory",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "not a file",
    }
}

/// The pid in the open file, if it is a running graceful-run other than us.
fn live_owner(file: &OwnedFd, ours: u32) -> Option<u32> {
    let pid = read_pid(file)?;
    if pid == ours {
        return None;
    }
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim_end() == "graceful-run").then_some(pid)
}
