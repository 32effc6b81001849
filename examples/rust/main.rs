//! A tokio HTTP server for graceful-run, small enough to read in one go: it serves the
//! listening socket on fd 3, says READY=1, and on TERM or INT stops accepting and finishes
//! the connections in flight. (`examples/http-server.rs` is the complete, dependency-free
//! version, with keep-alive, unix and UDP sockets.)
//!
//! ```text
//! cargo build --example tokio-server
//! graceful-run -l 8080 --ready notify -- target/debug/examples/tokio-server
//! ```

use std::os::fd::FromRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    if std::env::var("LISTEN_FDS").as_deref() != Ok("1") {
        eprintln!("no socket on fd 3: run me under graceful-run -l PORT");
        std::process::exit(2);
    }
    // SAFETY: LISTEN_FDS=1 says fd 3 is a listening socket handed to this process, which
    // nothing else in it owns. (The `listenfd` crate does this and the LISTEN_PID check.)
    let listener = unsafe { std::net::TcpListener::from_raw_fd(3) };
    // tokio needs O_NONBLOCK, which is shared with every other holder of the socket: fine, as
    // every generation of this server sets it too. Never toggle it, never shutdown(2) it.
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    // Catch the stop signals before saying READY=1: from then on a TERM can come at any time.
    let (mut term, mut int) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    sd_notify("READY=1");

    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { connections.spawn(serve(stream)); }
                Err(e) => eprintln!("accept: {e}"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    drop(listener); // close(2) our fd: the other generation keeps accepting on the socket
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One request per connection (`Connection: close`): nothing is left idle at a stop.
async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf).await? {
            0 => return Ok(()),
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    let pid = std::process::id();
    let body = match target
        .strip_prefix("/slow?ms=")
        .and_then(|ms| ms.parse().ok())
    {
        Some(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!("slow response from pid {pid} after {ms} ms\n")
        }
        None => format!("hello from pid {pid}\n"),
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Pid: {pid}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await
}

/// Sends `state` to $NOTIFY_SOCKET, if set: `@name` is Linux's abstract namespace, else a path.
fn sd_notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Ok(address) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let to = match address.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(&address)?,
        };
        socket.send_to_addr(state.as_bytes(), &to)
    });
    if let Err(e) = sent {
        eprintln!("sd_notify to {address}: {e}");
    }
}
