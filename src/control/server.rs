//! The control socket's server side: an event source for the supervisor's `select!`.
//!
//! No thread and no polling: the listener and every client are registered with the tokio
//! reactor, and [`Server::poll_request`] does all the reading inside the poll, so it is
//! cancel-safe (a `select!` that picks another branch loses nothing: partial lines stay in
//! the client's buffer). Each connection carries one request; once it has been handed to the
//! supervisor the connection stays open for the replies (`accepted`, then `done` or `failed`
//! for a waiting restart) and is watched only for the client going away, which drops it at
//! once (a later reply to it is a no-op). Replies are written without blocking and with
//! MSG_NOSIGNAL: a client that vanished must not raise SIGPIPE in graceful-run, which would
//! take it for a signal to forward to the command.
//!
//! Any local user in the network namespace can connect to an abstract socket: peers are
//! checked at accept, before anything is read, and refusals are logged at most once a
//! second (with a count of the rest) so that nobody can flood graceful-run's log.

use std::io;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, send};
use tokio::net::{UnixListener, UnixStream};

use super::protocol::{self, Reply, Request};
use crate::log::Subject;
use crate::{debug, warn};

/// Enough for a few operators and deploy scripts at once; more is a runaway script.
const MAX_CLIENTS: usize = 32;
/// Requests are a few words.
const MAX_REQUEST: usize = 256;

/// At most one refusal is logged per this interval: any local user can connect to an
/// abstract socket, and must not be able to flood graceful-run's log.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Lets one line through per interval and counts the ones held back.
#[derive(Debug, Default)]
struct RateLimit {
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimit {
    /// `Some(lines held back since the last one)` when a line may be written now.
    fn allow(&mut self, now: Instant, interval: Duration) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < interval)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// Identifies one connected client for [`Server::reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(u64);

impl ClientId {
    /// The number the supervisor's core knows the client by.
    pub fn number(self) -> u64 {
        self.0
    }

    pub fn from_number(number: u64) -> ClientId {
        ClientId(number)
    }
}

struct Client {
    id: ClientId,
    stream: UnixStream,
    /// The request line read so far.
    buffer: Vec<u8>,
    /// The request was handed to the supervisor: only the client's going away matters now.
    answered: bool,
    /// The status reply is rendered as JSON.
    json: bool,
}

enum ClientEvent {
    Request(Request),
    Pending,
    Gone,
    Bad(String),
}

impl Client {
    fn poll(&mut self, cx: &mut Context<'_>) -> ClientEvent {
        loop {
            match self.stream.poll_read_ready(cx) {
                Poll::Pending => return ClientEvent::Pending,
                Poll::Ready(Err(_)) => return ClientEvent::Gone,
                Poll::Ready(Ok(())) => {}
            }
            let mut chunk = [0u8; MAX_REQUEST];
            match self.stream.try_read(&mut chunk) {
                // The client closed its end: it asks for nothing more and hears nothing more.
                Ok(0) => return ClientEvent::Gone,
                // Anything after the request is ignored.
                Ok(_) if self.answered => {}
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                        self.answered = true;
                        let line = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                        self.buffer = Vec::new();
                        return match Request::parse(&line) {
                            Ok(request) => {
                                if let Request::Status { json } = request {
                                    self.json = json;
                                }
                                ClientEvent::Request(request)
                            }
                            Err(why) => ClientEvent::Bad(why),
                        };
                    }
                    if self.buffer.len() > MAX_REQUEST {
                        return ClientEvent::Bad("request too long".into());
                    }
                }
                // Readiness was stale; try_read cleared it, so the next poll registers.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return ClientEvent::Gone,
            }
        }
    }

    /// Writes all of `line` now or gives up: a client that does not read its replies is not
    /// waited for.
    fn send(&self, line: &str) -> bool {
        let mut bytes = line.as_bytes();
        while !bytes.is_empty() {
            match send(
                self.stream.as_raw_fd(),
                bytes,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => bytes = &bytes[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// The control socket of this graceful-run.
///
/// How the supervisor answers each request (every request gets a reply; the `last` one
/// closes the connection):
/// - `Status { .. }`: `Reply::Status(report)`, last.
/// - `Restart { wait: false }`: `Accepted`, last (or `Failed(why)`, last, when no restart
///   can begin, e.g. while stopping).
/// - `Restart { wait: true }`: `Accepted`, then once the handover that covers this request
///   ends, `Done` or `Failed(why)`, last. A request coalesced into a restart already under
///   way is answered when that one ends.
/// - `Stop { wait: false }`: `Accepted`, last. `Stop { wait: true }`: `Accepted`, then
///   nothing: the connection closes when graceful-run exits and the Server is dropped,
///   which the client takes as done.
///
/// Call [`Server::poll_request`] again after each request it returns (a `select!` loop
/// does): clients after the one that was answered are polled then.
pub struct Server {
    listener: UnixListener,
    name: String,
    euid: u32,
    clients: Vec<Client>,
    next_id: u64,
    refusals: RateLimit,
}

impl Server {
    /// Binds this process's control socket (see the module doc of `control` for the name).
    /// Must run inside the tokio runtime. Abstract: nothing on disk to remove, ever.
    pub fn bind() -> io::Result<Server> {
        Server::bind_name(&super::own_socket_name()?)
    }

    /// Binds the abstract name `name`; EADDRINUSE when another process holds it.
    pub fn bind_name(name: &str) -> io::Result<Server> {
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let listener = std::os::unix::net::UnixListener::bind_addr(&address)?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener: UnixListener::from_std(listener)?,
            name: name.to_string(),
            euid: nix::unistd::geteuid().as_raw(),
            clients: Vec::new(),
            next_id: 0,
            refusals: RateLimit::default(),
        })
    }

    /// The abstract name, without its leading NUL (`@name` in `ss -x`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Clients connected now (waiting ones included).
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Cancel-safe: the next complete, authorised request. Connections are accepted, peers
    /// checked and lines read in here.
    pub fn poll_request(&mut self, cx: &mut Context<'_>) -> Poll<(ClientId, Request)> {
        loop {
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => self.admit(stream),
                Poll::Ready(Err(e)) => {
                    // EMFILE and the like: the connection waits in the backlog; the next
                    // wake-up of the loop tries again.
                    warn!(Subject::NONE, "control socket: cannot accept a client: {e}");
                    break;
                }
                Poll::Pending => break,
            }
        }
        let mut i = 0;
        while i < self.clients.len() {
            match self.clients[i].poll(cx) {
                ClientEvent::Request(request) => {
                    let id = self.clients[i].id;
                    debug!(Subject::NONE, "control: {}", request.to_line().trim_end());
                    return Poll::Ready((id, request));
                }
                ClientEvent::Pending => i += 1,
                ClientEvent::Gone => {
                    self.clients.swap_remove(i);
                }
                ClientEvent::Bad(why) => {
                    warn!(Subject::NONE, "control: {why}");
                    let client = self.clients.swap_remove(i);
                    client.send(&protocol::error_line(&why));
                }
            }
        }
        Poll::Pending
    }

    fn admit(&mut self, stream: UnixStream) {
        let refusal = match stream.peer_cred() {
            Ok(peer) if peer.uid() == 0 || peer.uid() == self.euid => None,
            Ok(peer) => Some(format!(
                "uid {} (pid {}) may not control this graceful-run: only root and uid {} may",
                peer.uid(),
                peer.pid()
                    .map_or_else(|| "unknown".to_string(), |p| p.to_string()),
                self.euid
            )),
            Err(e) => Some(format!("cannot read the client's credentials: {e}")),
        };
        let id = ClientId(self.next_id);
        self.next_id += 1;
        let client = Client {
            id,
            stream,
            buffer: Vec::new(),
            answered: false,
            json: false,
        };
        if let Some(why) = refusal {
            match self.refusals.allow(Instant::now(), REFUSAL_LOG_INTERVAL) {
                Some(0) => warn!(Subject::NONE, "control: refused a client: {why}"),
                Some(more) => warn!(
                    Subject::NONE,
                    "control: refused a client: {why} ({more} more refused before, not logged)"
                ),
                None => {}
            }
            client.send(&protocol::refused_line(&why));
            return;
        }
        if self.clients.len() >= MAX_CLIENTS {
            let why = format!("too many control clients (at most {MAX_CLIENTS} at once)");
            warn!(Subject::NONE, "control: {why}");
            client.send(&protocol::error_line(&why));
            return;
        }
        self.clients.push(client);
    }

    /// Sends one reply line (non-blocking, best effort) and closes the client if `last`. A
    /// client that has gone away meanwhile is skipped.
    pub fn reply(&mut self, client: ClientId, reply: &Reply, last: bool) {
        let Some(i) = self.clients.iter().position(|c| c.id == client) else {
            return;
        };
        let sent = self.clients[i].send(&protocol::reply_line(reply, self.clients[i].json));
        if !sent {
            debug!(Subject::NONE, "control: a client did not take its reply");
        }
        if last || !sent {
            self.clients.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream as StdUnixStream;

    use super::*;

    fn server(tag: &str) -> Server {
        Server::bind_name(&format!("graceful-run/test/{}/{tag}", std::process::id()))
            .expect("a fresh abstract name binds")
    }

    /// Connects a blocking client that sends `chunks` one write at a time, pausing for the
    /// server to have read each, then reads everything until the server closes.
    fn client(name: String, chunks: Vec<&'static [u8]>) -> tokio::task::JoinHandle<String> {
        tokio::task::spawn_blocking(move || {
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .expect("a valid name");
            let mut stream = StdUnixStream::connect_addr(&address).expect("the server listens");
            for chunk in chunks {
                stream.write_all(chunk).expect("the server reads");
            }
            let mut reply = String::new();
            let _ = stream.read_to_string(&mut reply);
            reply
        })
    }

    async fn next(server: &mut Server) -> (ClientId, Request) {
        std::future::poll_fn(|cx| server.poll_request(cx)).await
    }

    #[tokio::test]
    async fn a_request_split_across_writes_is_read_whole() {
        let mut server = server("split");
        let reply = client(server.name().to_string(), vec![b"rest", b"art w", b"ait\n"]);
        let (id, request) = next(&mut server).await;
        assert_eq!(request, Request::Restart { wait: true });
        assert_eq!(server.client_count(), 1);
        server.reply(id, &Reply::Accepted, false);
        server.reply(id, &Reply::Failed("not ready in time".into()), true);
        assert_eq!(server.client_count(), 0);
        assert_eq!(
            reply.await.expect("the client runs"),
            "accepted\nfailed not ready in time\n"
        );
    }

    #[tokio::test]
    async fn nonsense_gets_an_error_line_and_never_reaches_the_supervisor() {
        let mut server = server("nonsense");
        let reply = client(server.name().to_string(), vec![b"reboot\n"]);
        tokio::select! {
            reply = reply => assert_eq!(
                reply.expect("the client runs"),
                "error unknown request 'reboot'\n"
            ),
            (_, request) = next(&mut server) => panic!("{request:?} reached the supervisor"),
        }
        let long = client(server.name().to_string(), vec![&[b'x'; 1000]]);
        tokio::select! {
            reply = long => assert_eq!(
                reply.expect("the client runs"),
                "error request too long\n"
            ),
            (_, request) = next(&mut server) => panic!("{request:?} reached the supervisor"),
        }
        assert_eq!(server.client_count(), 0);
    }

    #[tokio::test]
    async fn a_reply_to_a_departed_client_is_harmless() {
        let mut server = server("departed");
        let reply = client(server.name().to_string(), vec![b"status\n"]);
        let (id, _) = next(&mut server).await;
        server.reply(id, &Reply::Done, true);
        assert_eq!(reply.await.expect("the client runs"), "done\n");
        // Gone: nothing is sent, nothing fails, no SIGPIPE.
        server.reply(id, &Reply::Done, true);
        server.reply(ClientId(999), &Reply::Accepted, false);
        assert_eq!(server.client_count(), 0);
    }

    #[test]
    fn refusals_are_logged_once_a_second_with_a_count_of_the_rest() {
        let mut limit = RateLimit::default();
        let start = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(limit.allow(start, second), Some(0));
        assert_eq!(limit.allow(start + Duration::from_millis(10), second), None);
        assert_eq!(
            limit.allow(start + Duration::from_millis(999), second),
            None
        );
        assert_eq!(limit.allow(start + second, second), Some(2));
        assert_eq!(limit.allow(start + second * 3, second), Some(0));
    }

    #[tokio::test]
    async fn a_second_instance_cannot_take_the_name() {
        let first = server("taken");
        let second = Server::bind_name(first.name());
        assert_eq!(
            second.err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
    }
}
