//! `graceful-run ctl`: talk to a running graceful-run from another shell, a deploy script or
//! `docker exec`.
//!
//! ```text
//! graceful-run ctl [--pid PID | --pid-file PATH] status [--json]
//! graceful-run ctl [--pid PID | --pid-file PATH] restart [--wait] [--timeout DURATION]
//! graceful-run ctl [--pid PID | --pid-file PATH] stop [--wait] [--timeout DURATION]
//! ```
//!
//! A program literally named `ctl` is run with `graceful-run -- ctl`: only a first argument
//! that is exactly `ctl` selects this mode.
//!
//! # Finding the instance by its pid alone
//!
//! Each graceful-run listens on an abstract unix socket named
//! `graceful-run/ctl/<pid namespace inode>/<pid in that namespace>`. Abstract, so that nothing
//! on disk needs cleaning up after a SIGKILL and no writable directory is needed in a
//! read-only container; `docker exec C graceful-run ctl --pid 1 restart --wait` works because
//! the exec'd client shares the container's network namespace (where abstract names live)
//! and pid namespace. The namespace inode is in the name because in a Kubernetes pod all
//! containers share one network namespace while each has its own pid namespace: two
//! graceful-runs there are both pid 1. The client derives the name from the pid it was given:
//! `NSpid` in /proc/PID/status gives the pid inside the target's own namespace, and when that
//! differs from the pid given, /proc/PID/ns/pid names the namespace (from the host,
//! `nsenter -t PID -n graceful-run ctl --pid PID ...` therefore works).
//!
//! # Who may talk
//!
//! Abstract sockets have no file permissions, so the server checks each peer's credentials
//! (SO_PEERCRED) at accept: only root and graceful-run's own effective uid are served. A
//! refused peer gets one `refused` line saying why, and both sides log it. The client checks
//! the other way too: the socket's owner must be the pid it asked for, so a process that
//! squats on the name cannot answer in graceful-run's stead.
//!
//! The server ([`server::Server`]) is one more event source for the supervisor's loop, like
//! signals: no thread, no polling. The wire format is in [`protocol`].

pub mod client;
pub mod protocol;
pub mod server;

use std::io;

pub use protocol::{
    GenerationState, GenerationStatus, ListenerStatus, Reply, Request, StatusReport,
};
pub use server::{ClientId, Server};

/// The abstract socket name of the graceful-run that is pid `pid` in the pid namespace whose
/// inode is `namespace`.
pub fn socket_name(namespace: u64, pid: u32) -> String {
    format!("graceful-run/ctl/{namespace}/{pid}")
}

/// This process's own control socket name.
pub fn own_socket_name() -> io::Result<String> {
    Ok(socket_name(
        namespace_inode("/proc/self/ns/pid")?,
        std::process::id(),
    ))
}

/// The control socket name of the process that is `pid` in the caller's pid namespace.
pub fn socket_name_of(pid: u32) -> io::Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let pids = ns_pids(&status).unwrap_or_else(|| vec![pid]);
    let inner = *pids.last().unwrap_or(&pid);
    // The target in our own namespace (the usual case, and the only one a user other than
    // the target's may look at): our own namespace's inode. Otherwise the target's, which
    // /proc/PID/ns/pid shows to root and to the target's user.
    let namespace = if pids.len() <= 1 {
        namespace_inode("/proc/self/ns/pid")?
    } else {
        namespace_inode(&format!("/proc/{pid}/ns/pid"))?
    };
    Ok(socket_name(namespace, inner))
}

/// `NSpid:` of /proc/PID/status: the pid in each namespace, outermost first.
fn ns_pids(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let pids: Option<Vec<u32>> = line.split_whitespace().map(|p| p.parse().ok()).collect();
    pids.filter(|p| !p.is_empty())
}

fn namespace_inode(path: &str) -> io::Result<u64> {
    Ok(nix::sys::stat::stat(path)?.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_pids_list_the_pid_in_every_namespace() {
        let status = "Name:\tsh\nPid:\t4242\nNSpid:\t4242\t17\t1\nNSpgid:\t4242\n";
        assert_eq!(ns_pids(status), Some(vec![4242, 17, 1]));
        assert_eq!(ns_pids("Name:\tsh\n"), None);
    }

    #[test]
    fn a_process_finds_its_own_name_through_its_pid() {
        let own = own_socket_name().expect("/proc/self/ns/pid is readable");
        assert_eq!(socket_name_of(std::process::id()).unwrap(), own);
        assert!(own.starts_with("graceful-run/ctl/"), "{own}");
        assert!(own.ends_with(&format!("/{}", std::process::id())), "{own}");
    }
}
