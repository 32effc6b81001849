//! Facts about processes that the kernel offers only through /proc or probing syscalls.
//!
//! /proc is trusted only when it belongs to graceful-run's pid namespace: under
//! `unshare --pid --fork` without a fresh /proc mount, /proc shows the outer namespace's pids,
//! and acting on them would signal strangers. `/proc/self` resolving to our own pid is the
//! test. When /proc is foreign, graceful-run falls back to what syscalls tell (process
//! groups, wait status), and as PID 1 to kill(-1), which reaches exactly the processes of its
//! namespace.

use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal as NixSignal, killpg, pthread_sigmask};
use nix::unistd::Pid;

/// Whether /proc describes our own pid namespace.
pub fn proc_is_ours() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|target| target.to_str()?.parse::<u32>().ok())
        == Some(std::process::id())
}

/// The parent pid of `pid`, from /proc/PID/stat.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is a descendant of `ancestor`, walking parent links (at most 64).
pub fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut current = pid;
    for _ in 0..64 {
        match parent_of(current) {
            Some(parent) if parent == ancestor => return true,
            Some(parent) if parent > 1 => current = parent,
            _ => return false,
        }
    }
    false
}

/// Our children, as listed in /proc/self/task/*/children.
pub fn children_of_self() -> Vec<Pid> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(
                list.split_whitespace()
                    .filter_map(|pid| pid.parse().ok())
                    .map(Pid::from_raw),
            );
        }
    }
    children
}

/// Whether any process (zombies included) is still in process group `pgid`.
pub fn group_alive(pgid: Pid) -> bool {
    !matches!(killpg(pgid, None), Err(Errno::ESRCH))
}

/// Runs `f` with SIGTTOU blocked: a background process may then change the terminal's
/// foreground group (tcsetpgrp would otherwise stop it, or loop on its handler).
pub fn with_ttou_blocked<T>(f: impl FnOnce() -> T) -> T {
    let mut ttou = SigSet::empty();
    ttou.add(NixSignal::SIGTTOU);
    let mut previous = SigSet::empty();
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut previous)).is_ok();
    let result = f();
    if blocked && !previous.contains(NixSignal::SIGTTOU) {
        let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&ttou), None);
    }
    result
}

/// The terminal on stdin, if graceful-run's process group is its foreground group: only then
/// may the command take it over (a graceful-run started with `&` must not steal it).
pub fn terminal_we_lead() -> Option<RawFd> {
    (terminal_foreground()? == nix::unistd::getpgrp()).then_some(0)
}

/// The terminal's current foreground process group.
pub fn terminal_foreground() -> Option<Pid> {
    nix::unistd::tcgetpgrp(std::io::stdin()).ok()
}

/// Makes `pgid` the terminal's foreground group.
pub fn give_terminal(pgid: Pid) {
    with_ttou_blocked(|| {
        let _ = nix::unistd::tcsetpgrp(std::io::stdin(), pgid);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_descends_from_its_parent() {
        let parent = nix::unistd::getppid().as_raw();
        assert!(descends_from(std::process::id() as i32, parent));
        assert!(!descends_from(parent, std::process::id() as i32));
    }

    #[test]
    fn proc_belongs_to_this_namespace_here() {
        assert!(proc_is_ours());
    }
}
