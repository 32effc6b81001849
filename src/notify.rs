//! sd_notify(3), both ways.
//!
//! Downstream: with `--ready notify`, each generation of the command gets a NOTIFY_SOCKET of
//! its own (an abstract unix datagram socket, so there is no file to clean up and a
//! `--user` child can write to it), and READY=1 on it marks *that* generation ready. A stale
//! message from an old generation can never be mistaken for the new one's. `SO_PASSCRED`
//! gives each datagram's sender pid and uid; messages from a uid other than root,
//! graceful-run's own or `--user`'s are ignored. File descriptors a message carries
//! (`BARRIER=1`, fd stores) are closed at once, as systemd does with ones it does not keep.
//!
//! Upstream: when graceful-run itself is started with NOTIFY_SOCKET (systemd `Type=notify` or
//! `notify-reload`), that socket is graceful-run's channel to systemd and is never given to
//! the command. graceful-run sends READY=1 with MAINPID (its own pid, which never changes)
//! once the first generation is ready, RELOADING=1 with MONOTONIC_USEC when a restart starts,
//! READY=1 when the handover is done, and STOPPING=1 at stop.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

use nix::libc;
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, bind, recvmsg,
    sendto, setsockopt, socket, sockopt,
};
use tokio::io::unix::AsyncFd;

/// systemd's NOTIFY_BUFFER_MAX: longer datagrams are not notifications.
const MESSAGE_MAX: usize = 4096;

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

/// A generation's own NOTIFY_SOCKET.
pub struct NotifySocket {
    fd: AsyncFd<OwnedFd>,
    address: String,
}

impl NotifySocket {
    /// Must run inside the tokio runtime.
    pub fn bind(generation: u64) -> io::Result<NotifySocket> {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "graceful-run/{}/{generation}/{nonce:08x}",
            std::process::id()
        );
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        bind(fd.as_raw_fd(), &UnixAddr::new_abstract(name.as_bytes())?)?;
        setsockopt(&fd, sockopt::PassCred, &true)?;
        // SAFETY: `fd` is an open socket that the AsyncFd owns from here on, so it stays open
        // and names the same socket for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(NotifySocket {
            fd,
            address: format!("@{name}"),
        })
    }

    /// The NOTIFY_SOCKET value for the child.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The next complete message; malformed datagrams are skipped.
    pub fn poll_message(&self, cx: &mut Context<'_>) -> Poll<Message> {
        loop {
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                // An AsyncFd whose reactor is gone: nothing will ever arrive.
                Poll::Ready(Err(_)) | Poll::Pending => return Poll::Pending,
            };
            match receive(self.fd.get_ref().as_raw_fd()) {
                Ok(Some(message)) => return Poll::Ready(message),
                Ok(None) => continue,
                Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(_) => continue,
            }
        }
    }
}

/// One datagram; `None` for one that is not a valid notification.
fn receive(fd: RawFd) -> nix::Result<Option<Message>> {
    let mut buf = [0u8; MESSAGE_MAX];
    let mut control = nix::cmsg_space!(libc::ucred, [RawFd; 16]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC;
    let received = recvmsg::<()>(fd, &mut iov, Some(&mut control), flags)?;
    let mut message = Message::default();
    for cmsg in received.cmsgs()? {
        match cmsg {
            ControlMessageOwned::ScmCredentials(credentials) => {
                message.sender_pid = Some(credentials.pid());
                message.sender_uid = Some(credentials.uid());
            }
            ControlMessageOwned::ScmRights(fds) => {
                for fd in fds {
                    let _ = nix::unistd::close(fd);
                }
            }
            _ => {}
        }
    }
    let length = received.bytes;
    let truncated = received.flags.contains(MsgFlags::MSG_TRUNC);
    if truncated || length > MESSAGE_MAX {
        return Ok(None);
    }
    let Ok(text) = std::str::from_utf8(&buf[..length]) else {
        return Ok(None);
    };
    message.fields = parse_fields(text);
    Ok(Some(message))
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

    #[tokio::test]
    async fn a_generation_socket_receives_with_credentials() {
        let socket = NotifySocket::bind(7).unwrap();
        let address = socket.address().to_string();
        let client = Upstream::new(&address).unwrap();
        client.send("READY=1\nSTATUS=hi").unwrap();
        let message = std::future::poll_fn(|cx| socket.poll_message(cx)).await;
        assert!(message.is_set("READY"));
        assert_eq!(message.get("STATUS"), Some("hi"));
        assert_eq!(message.sender_pid, Some(std::process::id() as i32));
    }
}
