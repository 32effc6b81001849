//! The HTTP health probe graceful-run sends itself (`--health-http PATH`): one `GET PATH
//! HTTP/1.1` with `Connection: close`, and the status of the answer. 2xx and 3xx are healthy,
//! as Docker's and Kubernetes' HTTP probes read them; anything else is unhealthy, with a reason
//! a person can act on.
//!
//! A minimal HTTP/1.1 client on tokio, with no new dependency: the probe needs the status
//! line and nothing else, and a full client (hyper, reqwest) would bring TLS, pools and
//! redirects to a binary that must stay small. Everything a misbehaving server can do is
//! bounded:
//!
//! - **time**: one deadline for the whole probe (connect, request, response head);
//! - **size**: at most [`MAX_HEAD`] bytes of response head (an endless header is a failure,
//!   not an allocation); a body is read only to close the connection politely, at most
//!   [`MAX_BODY`] bytes and never past the deadline, and never changes the verdict;
//! - **garbage**: the first bytes must be `HTTP/1.`, checked as soon as they arrive.
//!
//! Interim `1xx` responses (100 Continue, 103 Early Hints) are skipped; the final status
//! decides.
//!
//! Trust: a unix socket path lives in a directory that others may be able to write, where a
//! stranger could replace graceful-run's socket file with one of their own and answer the
//! probes (keeping a broken server "healthy", or making a good one look broken). graceful-run
//! creates and `listen()`s every listener itself, and the credentials of a unix stream
//! connection's peer (`SO_PEERCRED`) are those of the process that called `listen()`; so
//! [`probe`] refuses a unix socket whose listener was not made by this process. An abstract
//! name and a TCP port cannot be taken over while graceful-run holds them.
//!
//! The `--health-cmd` runner is not here: it is a process, and goes through the supervisor's
//! spawn and reaper.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::listen::Bound;

/// The most bytes of response head (status line and headers, interim responses included)
/// read before the probe fails: far more than any health endpoint sends.
pub const MAX_HEAD: usize = 16 * 1024;

/// The most bytes of body read after the head, only to let the server finish its write
/// before the connection closes.
pub const MAX_BODY: usize = 64 * 1024;

/// Where a probe connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    /// A unix stream socket at a path, which must be one of graceful-run's own listeners.
    Unix(PathBuf),
    /// An abstract unix socket name (without the leading NUL).
    Abstract(Vec<u8>),
}

impl Target {
    /// The address a probe of listener `bound` connects to: a wildcard address becomes the
    /// loopback address of its family. None for UDP.
    pub fn of(bound: &Bound) -> Option<Target> {
        match bound {
            Bound::Tcp(addr) => {
                let ip = match addr.ip() {
                    IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ip => ip,
                };
                Some(Target::Tcp(SocketAddr::new(ip, addr.port())))
            }
            Bound::Udp(_) => None,
            Bound::Unix(path) => Some(Target::Unix(path.clone())),
            Bound::Abstract(name) => Some(Target::Abstract(name.clone())),
        }
    }

    /// The `Host` header: the address for TCP (`127.0.0.1:8080`, `[::1]:8080`), `localhost`
    /// for unix sockets.
    pub fn host(&self) -> String {
        match self {
            Target::Tcp(addr) => addr.to_string(),
            Target::Unix(_) | Target::Abstract(_) => "localhost".into(),
        }
    }
}

/// Why a probe failed.
#[derive(Debug)]
pub enum Unhealthy {
    /// The connection could not be made (refused, no such socket, backlog full).
    Connect(io::Error),
    /// The unix socket at the path is not graceful-run's: `pid` made its listener.
    NotOurs { pid: Option<i32> },
    /// No complete answer within the probe's timeout.
    Timeout(Duration),
    /// The server closed the connection before the end of the response head.
    Closed,
    /// The answer does not start with `HTTP/1.`: its first bytes, escaped.
    NotHttp(String),
    /// More than [`MAX_HEAD`] bytes of head.
    HeadTooLong,
    /// A status outside 2xx and 3xx.
    Status { code: u16, reason: String },
    /// Reading or writing failed (reset by the server, ...).
    Io(io::Error),
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unhealthy::Connect(e) => write!(f, "cannot connect: {e}"),
            Unhealthy::NotOurs { pid: Some(pid) } => write!(
                f,
                "the socket file now belongs to pid {pid}, not to graceful-run: not probed"
            ),
            Unhealthy::NotOurs { pid: None } => write!(
                f,
                "the socket file now belongs to another process, not to graceful-run: not probed"
            ),
            Unhealthy::Timeout(timeout) => write!(
                f,
                "no response within {}",
                humantime::format_duration(*timeout)
            ),
            Unhealthy::Closed => write!(f, "the connection closed before a complete response"),
            Unhealthy::NotHttp(start) => write!(f, "not an HTTP response: {start}"),
            Unhealthy::HeadTooLong => write!(f, "response head longer than {MAX_HEAD} bytes"),
            Unhealthy::Status { code, reason } if reason.is_empty() => write!(f, "HTTP {code}"),
            Unhealthy::Status { code, reason } => write!(f, "HTTP {code} {reason}"),
            Unhealthy::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Connects to `target` and sends `GET path`; Ok(status) for 2xx and 3xx. The whole probe
/// takes at most `timeout`. `path` must be a valid request target (config.rs checks
/// `--health-http`: it starts with `/` and holds visible ASCII only).
pub async fn probe(target: &Target, path: &str, timeout: Duration) -> Result<u16, Unhealthy> {
    let deadline = Instant::now() + timeout;
    match target {
        Target::Tcp(addr) => {
            let connect = tokio::net::TcpStream::connect(addr);
            let stream = tokio::time::timeout_at(deadline, connect)
                .await
                .map_err(|_| Unhealthy::Timeout(timeout))?
                .map_err(Unhealthy::Connect)?;
            within(
                deadline,
                timeout,
                exchange(stream, path, &target.host(), deadline),
            )
            .await
        }
        Target::Unix(_) | Target::Abstract(_) => {
            let stream = connect_unix(target).map_err(Unhealthy::Connect)?;
            let peer = nix::sys::socket::getsockopt(
                &stream.as_fd(),
                nix::sys::socket::sockopt::PeerCredentials,
            )
            .map(|creds| creds.pid())
            .ok();
            if peer != Some(std::process::id() as i32) {
                return Err(Unhealthy::NotOurs { pid: peer });
            }
            within(
                deadline,
                timeout,
                exchange(stream, path, &target.host(), deadline),
            )
            .await
        }
    }
}

/// `probe`'s result by `deadline`, or a timeout.
async fn within(
    deadline: Instant,
    timeout: Duration,
    probe: impl Future<Output = Result<u16, Unhealthy>>,
) -> Result<u16, Unhealthy> {
    tokio::time::timeout_at(deadline, probe)
        .await
        .unwrap_or(Err(Unhealthy::Timeout(timeout)))
}

/// Sends `GET path` over `stream`, an already connected stream (TCP or unix), with `host` as
/// the Host header; Ok(status) for 2xx and 3xx. At most `timeout`.
pub async fn probe_stream<S>(
    stream: S,
    path: &str,
    host: &str,
    timeout: Duration,
) -> Result<u16, Unhealthy>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + timeout;
    within(deadline, timeout, exchange(stream, path, host, deadline)).await
}

/// A non-blocking unix stream connection: a unix `connect` completes at once or fails (with
/// EAGAIN when the listener's backlog is full), so it never waits.
fn connect_unix(target: &Target) -> io::Result<tokio::net::UnixStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let address = match target {
        Target::Unix(path) => UnixAddr::new(path.as_path()),
        Target::Abstract(name) => UnixAddr::new_abstract(name),
        Target::Tcp(_) => unreachable!("callers pass unix targets only"),
    }?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &address)?;
    tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
}

/// The request, the response head, the verdict; then the body drained within the deadline.
async fn exchange<S>(
    mut stream: S,
    path: &str,
    host: &str,
    deadline: Instant,
) -> Result<u16, Unhealthy>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: graceful-run/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(Unhealthy::Io)?;
    stream.flush().await.map_err(Unhealthy::Io)?;

    let mut buffer: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    // Bytes of head already parsed (interim responses), which count against MAX_HEAD.
    let mut consumed = 0;
    let head = loop {
        match parse_head(&buffer) {
            Parsed::Final {
                code,
                reason,
                end,
                content_length,
            } => {
                break (code, reason, buffer.len() - end, content_length);
            }
            Parsed::Interim { end } => {
                consumed += end;
                buffer.drain(..end);
                continue;
            }
            Parsed::NotHttp => return Err(Unhealthy::NotHttp(escaped_start(&buffer))),
            Parsed::Incomplete => {}
        }
        if consumed + buffer.len() >= MAX_HEAD {
            return Err(Unhealthy::HeadTooLong);
        }
        let room = (MAX_HEAD - consumed - buffer.len()).min(chunk.len());
        let read = stream
            .read(&mut chunk[..room])
            .await
            .map_err(Unhealthy::Io)?;
        if read == 0 {
            return Err(Unhealthy::Closed);
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let (code, reason, body_read, content_length) = head;
    // Read what is left of the body so the close is orderly (unread data would make the
    // kernel answer with RST); the verdict stands whatever happens here.
    let mut left = content_length
        .map_or(MAX_BODY, |length| length.min(MAX_BODY as u64) as usize)
        .saturating_sub(body_read);
    let drain = async {
        while left > 0 {
            match stream.read(&mut chunk[..left.min(4096)]).await {
                Ok(0) | Err(_) => break,
                Ok(read) => left -= read,
            }
        }
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout_at(deadline, drain).await;
    if (200..400).contains(&code) {
        Ok(code)
    } else {
        Err(Unhealthy::Status { code, reason })
    }
}

/// What the bytes received so far hold.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A final response's head, `end` bytes long.
    Final {
        code: u16,
        reason: String,
        end: usize,
        content_length: Option<u64>,
    },
    /// A 1xx response's head, `end` bytes long: another response follows.
    Interim {
        end: usize,
    },
    NotHttp,
    Incomplete,
}

/// Parses a response head at the start of `bytes`: `HTTP/1.x SSS reason`, headers, an empty
/// line (CRLF, or bare LF as lenient clients accept).
fn parse_head(bytes: &[u8]) -> Parsed {
    const PREFIX: &[u8] = b"HTTP/1.";
    let checked = bytes.len().min(PREFIX.len());
    if bytes[..checked] != PREFIX[..checked] {
        return Parsed::NotHttp;
    }
    let Some(line_end) = bytes.iter().position(|&b| b == b'\n') else {
        return Parsed::Incomplete;
    };
    let status_line = String::from_utf8_lossy(&bytes[..line_end]);
    let status_line = status_line.trim_end_matches('\r');
    // `HTTP/1.1 200 OK`: a version digit, a space, three digits, then a space and the reason.
    let rest = &status_line[PREFIX.len()..];
    let mut parts = rest.splitn(3, ' ');
    let version_ok = parts
        .next()
        .is_some_and(|minor| minor.len() == 1 && minor.as_bytes()[0].is_ascii_digit());
    let code = parts
        .next()
        .filter(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..600).contains(code));
    let (true, Some(code)) = (version_ok, code) else {
        return Parsed::NotHttp;
    };
    let reason: String = parts
        .next()
        .unwrap_or("")
        .chars()
        .take(100)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_debug().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    // The head ends at the first empty line after the status line.
    let mut content_length = None;
    let mut start = line_end + 1;
    loop {
        let Some(offset) = bytes[start..].iter().position(|&b| b == b'\n') else {
            return Parsed::Incomplete;
        };
        let line = &bytes[start..start + offset];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start += offset + 1;
        if line.is_empty() {
            break;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':')
            && line[..colon].eq_ignore_ascii_case(b"content-length")
        {
            content_length = String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .parse()
                .ok();
        }
    }
    if code < 200 {
        Parsed::Interim { end: start }
    } else {
        Parsed::Final {
            code,
            reason,
            end: start,
            content_length,
        }
    }
}

/// The first 40 bytes received, escaped for a log line.
fn escaped_start(bytes: &[u8]) -> String {
    let start = &bytes[..bytes.len().min(40)];
    let text: String = start.escape_ascii().to_string();
    if bytes.len() > 40 {
        format!("\"{text}...\"")
    } else {
        format!("\"{text}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    /// Long enough that no scheduling delay on a loaded machine turns a good answer into a
    /// timeout; the tests that expect a timeout use [`SHORT`].
    const GENEROUS: Duration = Duration::from_secs(30);
    const SHORT: Duration = Duration::from_millis(300);

    /// A TCP server on 127.0.0.1 that answers one connection with `answer`, after reading
    /// the request head, which it sends back on the channel.
    fn serve_once(
        answer: impl FnOnce(&mut std::net::TcpStream) + Send + 'static,
    ) -> (Target, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("bound");
        let (sent, received) = mpsc::channel();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("the probe connects");
            let mut reader = BufReader::new(stream.try_clone().expect("a second fd"));
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let _ = sent.send(head);
            answer(&mut stream);
        });
        (Target::Tcp(addr), received)
    }

    fn answer_with(bytes: &'static [u8]) -> impl FnOnce(&mut std::net::TcpStream) + Send {
        move |stream| {
            let _ = stream.write_all(bytes);
        }
    }

    #[tokio::test]
    async fn a_healthy_server_and_the_request_it_receives() {
        let (target, request) = serve_once(answer_with(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
        ));
        let Target::Tcp(addr) = target else {
            unreachable!()
        };
        assert_eq!(probe(&target, "/healthz?x=1", GENEROUS).await.unwrap(), 200);
        let head = request.recv().expect("the server saw a request");
        let lines: Vec<&str> = head.lines().collect();
        assert_eq!(lines[0], "GET /healthz?x=1 HTTP/1.1");
        assert!(lines.contains(&format!("Host: {addr}").as_str()), "{head}");
        assert!(lines.contains(&"Connection: close"), "{head}");
    }

    #[tokio::test]
    async fn a_server_error_is_unhealthy_with_its_status() {
        let (target, _) = serve_once(answer_with(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nerror",
        ));
        let why = probe(&target, "/", GENEROUS).await.unwrap_err();
        assert!(
            matches!(why, Unhealthy::Status { code: 500, .. }),
            "{why:?}"
        );
        assert_eq!(why.to_string(), "HTTP 500 Internal Server Error");
        let (target, _) = serve_once(answer_with(b"HTTP/1.0 404 Not Found\r\n\r\n"));
        let why = probe(&target, "/", GENEROUS).await.unwrap_err();
        assert_eq!(why.to_string(), "HTTP 404 Not Found");
    }

    #[tokio::test]
    async fn redirects_and_interim_responses_are_healthy() {
        let (target, _) = serve_once(answer_with(
            b"HTTP/1.1 301 Moved Permanently\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
        ));
        assert_eq!(probe(&target, "/", GENEROUS).await.unwrap(), 301);
        let (target, _) = serve_once(answer_with(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ));
        assert_eq!(probe(&target, "/", GENEROUS).await.unwrap(), 204);
    }

    /// A server that accepts and reads, and never answers.
    #[tokio::test]
    async fn a_hanging_server_times_out() {
        let (target, _) = serve_once(|stream| {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        });
        let why = probe(&target, "/", SHORT).await.unwrap_err();
        assert!(
            matches!(why, Unhealthy::Timeout(t) if t == SHORT),
            "{why:?}"
        );
        assert_eq!(why.to_string(), "no response within 300ms");
    }

    /// Another protocol on the port: refused as soon as its first bytes arrive, not at the
    /// timeout.
    #[tokio::test]
    async fn garbage_is_not_http() {
        let (target, _) = serve_once(|stream| {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\x1b[2J");
            // Keep the connection open: the verdict must not wait for the close.
            thread::sleep(Duration::from_secs(60));
        });
        let why = probe(&target, "/", GENEROUS).await.unwrap_err();
        let Unhealthy::NotHttp(start) = &why else {
            panic!("{why:?}")
        };
        assert!(start.starts_with("\"SSH-2.0"), "{start}");
        assert!(!why.to_string().contains('\x1b'), "{why}");
        let (target, _) = serve_once(answer_with(b"HTTP/1.1 2000 OK\r\n\r\n"));
        let why = probe(&target, "/", GENEROUS).await.unwrap_err();
        assert!(matches!(why, Unhealthy::NotHttp(_)), "{why:?}");
    }

    /// A header that never ends fails once MAX_HEAD bytes are in.
    #[tokio::test]
    async fn an_endless_header_is_cut_at_the_cap() {
        let (target, _) = serve_once(|stream| {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Filler: ");
            // Until the probe closes the connection.
            while stream.write_all(&[b'a'; 1024]).is_ok() {}
        });
        let why = probe(&target, "/", GENEROUS).await.unwrap_err();
        assert!(matches!(why, Unhealthy::HeadTooLong), "{why:?}");
    }

    /// An endless body does not hold the verdict past the drain's cap.
    #[tokio::test]
    async fn an_endless_body_does_not_matter() {
        let (target, _) = serve_once(|stream| {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            while stream.write_all(&[b'a'; 1024]).is_ok() {}
        });
        assert_eq!(probe(&target, "/", GENEROUS).await.unwrap(), 200);
    }

    /// A response written one byte at a time, with bare LF line ends, is read whole.
    #[tokio::test]
    async fn a_response_in_pieces_is_reassembled() {
        let (target, _) = serve_once(|stream| {
            stream.set_nodelay(true).expect("a TCP socket");
            for byte in b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok" {
                if stream.write_all(&[*byte]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(1));
            }
        });
        assert_eq!(probe(&target, "/", GENEROUS).await.unwrap(), 200);
    }

    #[tokio::test]
    async fn a_close_before_the_answer_and_a_refused_connection() {
        let (target, _) = serve_once(|stream| {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n");
        });
        let why = probe(&target, "/", GENEROUS).await.unwrap_err();
        assert!(matches!(why, Unhealthy::Closed), "{why:?}");

        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("bound");
        drop(listener);
        let why = probe(&Target::Tcp(addr), "/", GENEROUS).await.unwrap_err();
        assert!(why.to_string().starts_with("cannot connect"), "{why}");
    }

    /// A unix socket this process listens on (as graceful-run's listeners are), by path and
    /// by abstract name; a socket file that another process listens on is refused unprobed.
    #[tokio::test]
    async fn unix_sockets_must_be_our_own() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
        let dir = std::env::temp_dir().join(format!("gr-health-{}", crate::random::token()));
        std::fs::create_dir(&dir).expect("a temp dir");
        let path = dir.join("app.sock");
        let name = format!("gr-health-{}", crate::random::token());
        let listeners = [
            (
                UnixListener::bind(&path).expect("bind a path"),
                Target::Unix(path.clone()),
            ),
            (
                UnixListener::bind_addr(&UnixAddr::from_abstract_name(&name).unwrap())
                    .expect("bind an abstract name"),
                Target::Abstract(name.into_bytes()),
            ),
        ];
        for (listener, target) in listeners {
            thread::spawn(move || {
                let (mut stream, _) = listener.accept().expect("the probe connects");
                let mut head = [0u8; 1024];
                let _ = stream.read(&mut head);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            });
            assert_eq!(
                probe(&target, "/", GENEROUS).await.unwrap(),
                200,
                "{target:?}"
            );
        }

        // Another process's socket at the path (python3's, replacing ours).
        std::fs::remove_file(&path).expect("the socket file exists");
        let mut stranger = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket, sys, time\n\
                 s = socket.socket(socket.AF_UNIX)\n\
                 s.bind(sys.argv[1]); s.listen()\n\
                 print('ready', flush=True)\n\
                 time.sleep(60)\n",
            ])
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(stranger.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("python3 prints");
        let why = probe(&Target::Unix(path.clone()), "/", GENEROUS)
            .await
            .unwrap_err();
        let _ = stranger.kill();
        let _ = stranger.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            matches!(why, Unhealthy::NotOurs { pid: Some(pid) } if pid == stranger.id() as i32),
            "{why:?}"
        );
    }

    /// A real HTTP server: Python's http.server, healthy on `/`, 404 on a missing file.
    #[tokio::test]
    async fn pythons_http_server() {
        let dir = std::env::temp_dir().join(format!("gr-health-{}", crate::random::token()));
        std::fs::create_dir(&dir).expect("a temp dir");
        let mut server = std::process::Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(&dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(server.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("http.server prints its port");
        // `Serving HTTP on 127.0.0.1 port 45678 (http://127.0.0.1:45678/) ...`
        let port: u16 = line
            .split_whitespace()
            .skip_while(|word| *word != "port")
            .nth(1)
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        let target = Target::Tcp(SocketAddr::from(([127, 0, 0, 1], port)));
        let healthy = probe(&target, "/", GENEROUS).await;
        let missing = probe(&target, "/missing", GENEROUS).await;
        let _ = server.kill();
        let _ = server.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(healthy.unwrap(), 200);
        assert_eq!(missing.unwrap_err().to_string(), "HTTP 404 File not found");
    }

    /// probe_stream works on any connected stream, e.g. one end of a socketpair.
    #[tokio::test]
    async fn an_already_connected_stream() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("a socketpair");
        thread::spawn(move || {
            let mut theirs = theirs;
            let mut head = [0u8; 1024];
            let _ = theirs.read(&mut head);
            let _ = theirs.write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        });
        ours.set_nonblocking(true).expect("a socket");
        let stream = tokio::net::UnixStream::from_std(ours).expect("in a runtime");
        let why = probe_stream(stream, "/ready", "localhost", GENEROUS)
            .await
            .unwrap_err();
        assert_eq!(why.to_string(), "HTTP 503 Service Unavailable");
    }

    #[test]
    fn wildcard_listeners_are_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let v6: SocketAddr = "[::]:80".parse().unwrap();
        let exact: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(
            Target::of(&Bound::Tcp(v4)),
            Some(Target::Tcp("127.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            Target::of(&Bound::Tcp(v6)),
            Some(Target::Tcp("[::1]:80".parse().unwrap()))
        );
        assert_eq!(Target::of(&Bound::Tcp(exact)), Some(Target::Tcp(exact)));
        assert_eq!(Target::of(&Bound::Udp(v4)), None);
        assert_eq!(Target::Tcp("[::1]:80".parse().unwrap()).host(), "[::1]:80");
        assert_eq!(Target::Abstract(b"x".to_vec()).host(), "localhost");
    }

    #[test]
    fn heads_parse() {
        assert_eq!(parse_head(b"HTT"), Parsed::Incomplete);
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nA: b\r\n"),
            Parsed::Incomplete
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-length:  12 \r\n\r\nbody"),
            Parsed::Final {
                code: 200,
                reason: "OK".into(),
                end: 41,
                content_length: Some(12)
            }
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 204\r\n\r\n"),
            Parsed::Final {
                code: 204,
                reason: String::new(),
                end: 16,
                content_length: None
            }
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"),
            Parsed::Interim { end: 25 }
        );
        for bad in [
            &b"HTTP/2 200\r\n"[..],
            b"http/1.1 200 OK\r\n",
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/1.1 OK\r\n",
            b"HTTP/1.x 200 OK\r\n",
            b"<html>",
        ] {
            assert_eq!(parse_head(bad), Parsed::NotHttp, "{}", bad.escape_ascii());
        }
    }

    #[test]
    fn reasons_are_one_escaped_line() {
        let why = Unhealthy::Status {
            code: 500,
            reason: "a\u{1b}b".into(),
        };
        assert_eq!(why.to_string(), "HTTP 500 a\u{1b}b");
        let Parsed::Final { reason, .. } = parse_head(b"HTTP/1.1 500 a\x1bb\r\n\r\n") else {
            panic!("a head")
        };
        assert_eq!(reason, "a\\u{1b}b");
    }
}
