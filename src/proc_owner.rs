//! Reading the /proc files of the command's processes when they belong to another user
//! (`--user`), for the readiness look (`accepting.rs`) and the observation of connections
//! (`observe.rs`).
//!
//! Root with CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE reads them directly. Root without them
//! (the shipped systemd unit keeps neither) may not list another user's `/proc/PID/fd` (the
//! directory is its owner's, mode 0500) nor read its links, fdinfo or syscall files (ptrace
//! read access). It then reads them *as the process's owner*: this thread's filesystem ids
//! set to the process's uid and gid (`setfsuid`, `setfsgid`), which those checks use
//! (PTRACE_MODE_*_FSCREDS), and put back before returning. CAP_SETUID and CAP_SETGID allow
//! it, and `--user` needs them anyway.
//!
//! That is less privilege, not more: the kernel's rules for that user apply to every path
//! resolved meanwhile, so a `--user` server cannot make root read, through a link or a
//! file of its own, anything its own user could not (only /proc paths of numeric pids are
//! read, and a `/proc/PID/fd/N` link is only ever read with readlink, never followed). A
//! process whose real, effective and saved ids differ (a setuid program it ran) is not
//! read as anybody: its files stay refused.
//!
//! `process_vm_readv` (the poll and select ways of the readiness look) checks the real ids,
//! which this does not change: under such a unit only the epoll and accept ways are seen.

use std::fs;
use std::io;

use nix::unistd::{Gid, Uid, setfsgid, setfsuid};

/// Runs `read` (a read of `pid`'s /proc files); when it is refused, once more as `pid`'s
/// owner (see the module doc). The first refusal is returned when that cannot be done.
pub fn read<T>(pid: i32, mut read: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    match read() {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let Some((uid, gid)) = owner(pid) else {
                return Err(e);
            };
            // Root only: another user's setfsuid would only fail, and graceful-run's own
            // user gains nothing.
            if !Uid::effective().is_root() || uid == 0 {
                return Err(e);
            }
            as_owner(uid, gid, read).unwrap_or(Err(e))
        }
        other => other,
    }
}

/// `pid`'s uid and gid, when its real, effective and saved ids are each the same (the kernel
/// compares them all to the filesystem ids of whoever reads its files).
pub fn owner(pid: i32) -> Option<(u32, u32)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ids = |key: &str| -> Option<u32> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        let ids: Vec<u32> = line
            .split_whitespace()
            .take(3)
            .map(|id| id.parse().ok())
            .collect::<Option<_>>()?;
        (ids.len() == 3 && ids.iter().all(|&id| id == ids[0])).then_some(ids[0])
    };
    Some((ids("Uid:")?, ids("Gid:")?))
}

/// Runs `read` with this thread's filesystem uid and gid set to `uid` and `gid`, then puts
/// them back; None when they cannot be set (no CAP_SETUID or CAP_SETGID). setfsuid(2) and
/// setfsgid(2) report no error: a second call returns the id in force, which says whether the
/// first one took.
fn as_owner<T>(uid: u32, gid: u32, read: impl FnOnce() -> T) -> Option<T> {
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    let old_gid = setfsgid(gid);
    if setfsgid(gid) != gid {
        setfsgid(old_gid);
        return None;
    }
    let old_uid = setfsuid(uid);
    if setfsuid(uid) != uid {
        setfsuid(old_uid);
        setfsgid(old_gid);
        return None;
    }
    let result = read();
    setfsuid(old_uid);
    setfsgid(old_gid);
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As root: a read refused as root is done as the file's owner, and this thread's
    /// filesystem ids are root's again afterwards; a file its owner may not read stays
    /// refused (nothing is read with more than that user's rights).
    #[test]
    fn a_refused_read_is_done_as_the_owner_and_no_further() {
        if !Uid::effective().is_root() {
            return;
        }
        let own = std::process::id() as i32;
        let mut calls = 0;
        let result = read(own, || {
            calls += 1;
            if calls == 1 {
                Err(io::Error::from(io::ErrorKind::PermissionDenied))
            } else {
                Ok(calls)
            }
        });
        // graceful-run's own process is root's: nothing to retry as.
        assert!(result.is_err());
        assert_eq!(calls, 1);

        // As nobody, /etc/shadow (root's, 0640 or 0000) is refused.
        let shadow = as_owner(65534, 65534, || fs::read("/etc/shadow"));
        assert!(
            matches!(&shadow, Some(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied),
            "{shadow:?}"
        );
        // And the thread is root again.
        assert!(fs::read("/etc/shadow").is_ok());
        assert_eq!(setfsuid(Uid::from_raw(0)), Uid::from_raw(0));
        assert_eq!(setfsgid(Gid::from_raw(0)), Gid::from_raw(0));
    }
}
