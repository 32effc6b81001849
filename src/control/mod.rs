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
//! # The socket, and finding it by the pid alone
//!
//! Each graceful-run listens on an abstract unix socket named `graceful-run/ctl/` followed by
//! 16 random hex digits. Abstract, so that nothing on disk needs cleaning up after a SIGKILL
//! and no writable directory is needed in a read-only container. Random, so that nobody can
//! take the name first: with a name derived from the pid (as before issue 15), anyone in the
//! network namespace could reserve the names of pids to come and leave ctl dead, or answer
//! in graceful-run's stead. A name found taken anyway is replaced by another at once.
//!
//! The client finds the name from the pid it is given ([`find_socket`]): the socket inodes
//! of `/proc/PID/fd` are looked up in `/proc/PID/net/unix`, which lists the listening socket
//! with its name. Reading `/proc/PID/fd` takes the right to inspect the process (root, or
//! graceful-run's own user), which is also who may talk to it.
//!
//! # Who is trusted with what
//!
//! Abstract names are scoped by network namespace, not by container: containers on
//! `--network host` and all containers of a Kubernetes pod share one, and see each other's
//! names in `/proc/net/unix`. So each side checks the other's credentials (SO_PEERCRED, which
//! the kernel fills in at connect and listen):
//!
//! - The server ([`server::Server`]) serves a peer only if its pid is visible in
//!   graceful-run's pid namespace (the kernel reports 0 for a process outside it: another
//!   container, or the host) and its uid is root or graceful-run's own. So `docker exec` and
//!   `runc exec`, which enter the container's pid namespace, work; a neighbouring container
//!   sharing only the network namespace is refused, whatever its uid (the same uid 65532 runs
//!   every distroless "nonroot" image). Every accepted request is logged with the peer's pid
//!   and uid; refusals are logged, at most once a second.
//! - The client ([`client`]) talks only to a socket whose listener is the very pid it was
//!   asked about (never 0: a process outside its pid namespace) and runs as root or as the
//!   client's own user. A pid file is believed only if it is a regular file owned by root or
//!   the client's user and writable by nobody else.
//!
//! The server is one more event source for the supervisor's loop, like signals: no thread,
//! no polling. The wire format is in [`protocol`].

pub mod client;
pub mod protocol;
pub mod server;

use std::collections::HashSet;
use std::io;

pub use protocol::{
    GenerationState, GenerationStatus, ListenerStatus, Reply, Request, StatusReport,
};
pub use server::{ClientId, Server};

/// The start of every control socket's abstract name.
pub const NAME_PREFIX: &str = "graceful-run/ctl/";

/// A fresh, unpredictable control socket name.
pub fn new_socket_name() -> String {
    format!("{NAME_PREFIX}{}", crate::random::token())
}

/// Why [`find_socket`] found nothing.
#[derive(Debug)]
pub enum FindError {
    /// No process has this pid (in the caller's pid namespace).
    NoProcess,
    /// The process's descriptors may not be looked at: it is not the caller's user's, and
    /// the caller is not root (or is root without CAP_SYS_PTRACE, as in a container).
    NotAllowed,
    /// The process holds no control socket: not a graceful-run (or one started with none).
    NoSocket,
    Other(io::Error),
}

impl From<io::Error> for FindError {
    fn from(error: io::Error) -> FindError {
        match error.kind() {
            io::ErrorKind::NotFound => FindError::NoProcess,
            io::ErrorKind::PermissionDenied => FindError::NotAllowed,
            _ => FindError::Other(error),
        }
    }
}

/// The abstract name (without its leading NUL) of the control socket that process `pid`
/// listens on, from `/proc/PID/fd` and `/proc/PID/net/unix`.
pub fn find_socket(pid: u32) -> Result<String, FindError> {
    let mut inodes = HashSet::new();
    let mut denied = false;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(entry) = entry else { continue };
        // A descriptor closed meanwhile has no link: skipped. One whose link may not be read
        // (root without CAP_SYS_PTRACE, as in a container, listing another user's process)
        // says who may look.
        let target = match std::fs::read_link(entry.path()) {
            Ok(target) => target,
            Err(e) => {
                denied |= e.kind() == io::ErrorKind::PermissionDenied;
                continue;
            }
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok())
        {
            inodes.insert(inode);
        }
    }
    if inodes.is_empty() {
        return Err(if denied {
            FindError::NotAllowed
        } else {
            FindError::NoSocket
        });
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix"))?;
    table
        .lines()
        .skip(1)
        .filter_map(parse_unix_line)
        .find(|socket| socket.listening && inodes.contains(&socket.inode))
        .map(|socket| socket.name.to_string())
        .ok_or(FindError::NoSocket)
}

/// One line of /proc/net/unix that is a stream socket with a control socket's name.
#[derive(Debug, PartialEq, Eq)]
struct UnixSocket<'a> {
    inode: u64,
    name: &'a str,
    listening: bool,
}

/// `Num RefCount Protocol Flags Type St Inode Path`: only stream sockets whose abstract name
/// starts with [`NAME_PREFIX`].
fn parse_unix_line(line: &str) -> Option<UnixSocket<'_>> {
    // __SO_ACCEPTCON in Flags: the socket listens.
    const ACCEPTING: u32 = 0x10000;
    const STREAM: u32 = 1;
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let _refs = fields.next()?;
    let _protocol = fields.next()?;
    let flags = u32::from_str_radix(fields.next()?, 16).ok()?;
    let kind = u32::from_str_radix(fields.next()?, 16).ok()?;
    let _state = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    let name = fields.next()?.strip_prefix('@')?;
    (kind == STREAM && name.starts_with(NAME_PREFIX)).then_some(UnixSocket {
        inode,
        name,
        listening: flags & ACCEPTING != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_table_lines_give_control_sockets_only() {
        let listening = "0000000000000000: 00000002 00000000 00010000 0001 01 23456 \
                         @graceful-run/ctl/0123456789abcdef";
        assert_eq!(
            parse_unix_line(listening),
            Some(UnixSocket {
                inode: 23456,
                name: "graceful-run/ctl/0123456789abcdef",
                listening: true
            })
        );
        let connected = "0000000000000000: 00000003 00000000 00000000 0001 03 23457 \
                         @graceful-run/ctl/0123456789abcdef";
        assert!(!parse_unix_line(connected).unwrap().listening);
        for other in [
            "0000000000000000: 00000002 00000000 00010000 0001 01 1 /run/app.sock",
            "0000000000000000: 00000002 00000000 00000000 0002 01 2 @graceful-run/ctl/x",
            "0000000000000000: 00000002 00000000 00010000 0001 01 3",
            "Num       RefCount Protocol Flags    Type St Inode Path",
        ] {
            assert_eq!(parse_unix_line(other), None, "{other}");
        }
    }

    #[test]
    fn names_are_unpredictable() {
        let (a, b) = (new_socket_name(), new_socket_name());
        assert!(a.starts_with(NAME_PREFIX) && b.starts_with(NAME_PREFIX));
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_process_is_found_by_its_pid() {
        let server = Server::bind().expect("a random name binds");
        assert_eq!(
            find_socket(std::process::id()).expect("this process holds one"),
            server.name()
        );
        assert!(matches!(find_socket(u32::MAX), Err(FindError::NoProcess)));
    }
}
