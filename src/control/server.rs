//! The control socket's server side: an event source for the supervisor's `select!`.
//!
//! No thread and no polling: the listener and every client are registered with the tokio
//! reactor, and [`Server::poll_request`] does all the reading inside the poll, so it is
//! cancel-safe (a `select!` that picks another branch loses nothing: partial lines stay in
//! the client's buffer). Each connection carries one request; once it has been handed to the
//! supervisor the connection stays open for the replies (`accepted`, then `done` or `failed`
//! for a waiting restart or stop). A client that closes its end after the request
//! (`shutdown(SHUT_WR)`, as `nc -N` and many scripts do) still gets its replies; one that is
//! gone altogether is dropped when the kernel says so (POLLHUP), or at the latest when a
//! reply to it fails. Replies are written without blocking and with MSG_NOSIGNAL: a client
//! that vanished must not raise SIGPIPE in graceful-run, which would take it for a signal to
//! forward to the command.
//!
//! Who may connect (see the module docs of `control`): peers are checked at accept, before
//! anything is read. A peer that connects and sends nothing holds one of [`MAX_CLIENTS`]
//! slots for at most [`REQUEST_TIMEOUT`], and when every slot is taken the oldest such idle
//! connection is closed to make room, so idle connections cannot lock `ctl` out. Refusals
//! and those closures are logged at most once a second (with a count of the rest), so that
//! nobody can flood graceful-run's log.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::linux::net::SocketAddrExt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, recv, send};
use tokio::net::{UnixListener, UnixStream};

use super::protocol::{self, Reply, Request};
use crate::log::Subject;
use crate::{debug, info, warn};

/// Enough for a few operators and deploy scripts at once; more is a runaway script.
pub const MAX_CLIENTS: usize = 32;
/// Requests are a few words.
const MAX_REQUEST: usize = 256;
/// A client must send its request within this time of connecting (`graceful-run ctl` sends
/// it at once).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How many random names are tried when the one drawn is taken (it never is, unless someone
/// binds names at random).
const BIND_ATTEMPTS: usize = 16;

/// At most one line of a kind is logged per this interval: whoever may connect must not be
/// able to flood graceful-run's log.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

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

    /// Logs `line` as a warning unless one was logged less than [`LOG_INTERVAL`] ago.
    fn warn(&mut self, line: &str) {
        match self.allow(Instant::now(), LOG_INTERVAL) {
            Some(0) => warn!(Subject::NONE, "control: {line}"),
            Some(more) => warn!(
                Subject::NONE,
                "control: {line} ({more} more like it before, not logged)"
            ),
            None => {}
        }
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
    /// The peer's pid (in graceful-run's pid namespace) and uid, from SO_PEERCRED.
    pid: i32,
    uid: u32,
    /// On tokio's clock, the one the idle timer runs on.
    connected: tokio::time::Instant,
    /// The request line read so far.
    buffer: Vec<u8>,
    /// The request, once it was handed to the supervisor: only replies matter now.
    request: Option<Request>,
    /// The client shut down its sending side after its request: nothing more to read, and
    /// its readiness (end of file) must not be polled again.
    read_closed: bool,
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
            if self.read_closed {
                return ClientEvent::Pending;
            }
            match self.stream.poll_read_ready(cx) {
                Poll::Pending => return ClientEvent::Pending,
                Poll::Ready(Err(_)) => return ClientEvent::Gone,
                Poll::Ready(Ok(())) => {}
            }
            let mut chunk = [0u8; MAX_REQUEST];
            match self.stream.try_read(&mut chunk) {
                Ok(0) if self.request.is_some() && !self.hung_up() => {
                    // Half-closed after its request: it still reads the replies.
                    self.read_closed = true;
                    return ClientEvent::Pending;
                }
                // Gone: it asks for nothing more and hears nothing more.
                Ok(0) => return ClientEvent::Gone,
                // Anything after the request is ignored.
                Ok(_) if self.request.is_some() => {}
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                        let line = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                        self.buffer = Vec::new();
                        return match Request::parse(&line) {
                            Ok(request) => {
                                self.request = Some(request);
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

    /// Whether the peer closed its socket altogether (both directions shut), as opposed to
    /// only its sending side.
    fn hung_up(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            self.stream.as_fd(),
            nix::poll::PollFlags::empty(),
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP)),
            Err(_) => true,
        }
    }

    /// Whether a whole request line has arrived, read or not yet.
    fn has_request_line(&self) -> bool {
        if self.request.is_some() || self.buffer.contains(&b'\n') {
            return true;
        }
        let mut peek = [0u8; MAX_REQUEST];
        match recv(
            self.stream.as_raw_fd(),
            &mut peek,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => peek[..n].contains(&b'\n'),
            Err(_) => false,
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

    fn json(&self) -> bool {
        self.request == Some(Request::Status { json: true })
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
/// - `Stop { wait: false }`: `Accepted`, last. `Stop { wait: true }`: `Accepted`, then `Done`,
///   last, when graceful-run is about to exit. A client that sees the connection end without
///   `Done` knows graceful-run did not finish (it was killed).
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
    crowding: RateLimit,
    /// Armed at the earliest moment a connected client that sent nothing runs out of time.
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// [`REQUEST_TIMEOUT`], shorter in tests.
    request_timeout: Duration,
}

impl Server {
    /// Binds this process's control socket, under a fresh random name (see the module doc
    /// of `control`); a name found taken is replaced by another. Must run inside the tokio
    /// runtime (with its clock). Abstract: nothing on disk to remove, ever.
    pub fn bind() -> io::Result<Server> {
        let mut last = io::Error::from(io::ErrorKind::AddrInUse);
        for _ in 0..BIND_ATTEMPTS {
            match Server::bind_name(&super::new_socket_name()) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
                other => return other,
            }
        }
        Err(last)
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
            crowding: RateLimit::default(),
            idle_timer: None,
            request_timeout: REQUEST_TIMEOUT,
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

    /// The pid and uid of a connected client (SO_PEERCRED at accept).
    pub fn peer(&self, client: ClientId) -> Option<(i32, u32)> {
        self.clients
            .iter()
            .find(|c| c.id == client)
            .map(|c| (c.pid, c.uid))
    }

    /// The pid of the process that sent `client`'s request (in graceful-run's pid
    /// namespace), while it is connected.
    pub fn peer_pid(&self, client: ClientId) -> Option<i32> {
        self.clients.iter().find(|c| c.id == client).map(|c| c.pid)
    }

    /// Cancel-safe: the next complete, authorised request. Connections are accepted, peers
    /// checked, idle ones closed and lines read in here.
    pub fn poll_request(&mut self, cx: &mut Context<'_>) -> Poll<(ClientId, Request)> {
        loop {
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => self.admit(stream),
                Poll::Ready(Err(e)) => {
                    // EMFILE and the like: the connection waits in the backlog; the next
                    // wake-up of the loop tries again.
                    self.crowding.warn(&format!("cannot accept a client: {e}"));
                    break;
                }
                Poll::Pending => break,
            }
        }
        self.close_idle(cx);
        let mut i = 0;
        while i < self.clients.len() {
            match self.clients[i].poll(cx) {
                ClientEvent::Request(request) => {
                    let client = &self.clients[i];
                    let asks = request.to_line();
                    let asks = asks.trim_end();
                    // Who asked, for every request that changes something; status requests
                    // (monitoring may poll them) only in debug.
                    if matches!(request, Request::Status { .. }) {
                        debug!(
                            Subject::NONE,
                            "control: pid {} (uid {}) asks for '{asks}'", client.pid, client.uid
                        );
                    } else {
                        info!(
                            Subject::NONE,
                            "control: pid {} (uid {}) asks for '{asks}'", client.pid, client.uid
                        );
                    }
                    return Poll::Ready((client.id, request));
                }
                ClientEvent::Pending => i += 1,
                ClientEvent::Gone => {
                    self.clients.swap_remove(i);
                }
                ClientEvent::Bad(why) => {
                    let client = self.clients.swap_remove(i);
                    self.crowding
                        .warn(&format!("pid {} (uid {}): {why}", client.pid, client.uid));
                    client.send(&protocol::error_line(&why));
                }
            }
        }
        Poll::Pending
    }

    fn admit(&mut self, stream: UnixStream) {
        let (pid, uid) = match stream.peer_cred() {
            Ok(peer) => (peer.pid().unwrap_or(0), peer.uid()),
            Err(e) => {
                self.refusals.warn(&format!(
                    "refused a client: cannot read its credentials: {e}"
                ));
                return;
            }
        };
        let refusal = if pid <= 0 {
            Some(format!(
                "a process outside graceful-run's pid namespace (uid {uid}; another container, \
                 or the host) may not control it: run ctl inside its container (docker exec)"
            ))
        } else if uid != 0 && uid != self.euid {
            Some(format!(
                "uid {uid} (pid {pid}) may not control this graceful-run: only root and uid {} \
                 may",
                self.euid
            ))
        } else {
            None
        };
        let id = ClientId(self.next_id);
        self.next_id += 1;
        let client = Client {
            id,
            stream,
            pid,
            uid,
            connected: tokio::time::Instant::now(),
            buffer: Vec::new(),
            request: None,
            read_closed: false,
        };
        if let Some(why) = refusal {
            self.refusals.warn(&format!("refused a client: {why}"));
            client.send(&protocol::refused_line(&why));
            return;
        }
        if self.clients.len() >= MAX_CLIENTS && !self.make_room() {
            let why = format!("too many control clients (at most {MAX_CLIENTS} at once)");
            self.crowding.warn(&format!("pid {pid} (uid {uid}): {why}"));
            client.send(&protocol::error_line(&why));
            return;
        }
        self.clients.push(client);
    }

    /// Closes the oldest connection that has sent no request yet; false when every client
    /// is waiting for the answer to a request.
    fn make_room(&mut self) -> bool {
        let oldest = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.has_request_line())
            .min_by_key(|(_, c)| c.connected)
            .map(|(i, _)| i);
        let Some(i) = oldest else {
            return false;
        };
        let client = self.clients.swap_remove(i);
        self.crowding.warn(&format!(
            "closed the idle connection of pid {} (uid {}) to make room: {MAX_CLIENTS} \
             clients at once",
            client.pid, client.uid
        ));
        client.send(&protocol::error_line(
            "closed to make room for another client",
        ));
        true
    }

    /// Closes the connections that sent no request within [`REQUEST_TIMEOUT`], and arms the
    /// timer for the next one to run out.
    fn close_idle(&mut self, cx: &mut Context<'_>) {
        if self.clients.is_empty() {
            // The common case, on every wakeup of the loop: no clock to read.
            self.idle_timer = None;
            return;
        }
        loop {
            let now = tokio::time::Instant::now();
            let mut i = 0;
            while i < self.clients.len() {
                let client = &self.clients[i];
                if client.request.is_none() && now >= client.connected + self.request_timeout {
                    let client = self.clients.swap_remove(i);
                    self.crowding.warn(&format!(
                        "pid {} (uid {}) sent no request within {}; closed its connection",
                        client.pid,
                        client.uid,
                        humantime::format_duration(self.request_timeout)
                    ));
                    client.send(&protocol::error_line("no request in time"));
                } else {
                    i += 1;
                }
            }
            let Some(next) = self
                .clients
                .iter()
                .filter(|c| c.request.is_none())
                .map(|c| c.connected + self.request_timeout)
                .min()
            else {
                self.idle_timer = None;
                return;
            };
            let timer = self
                .idle_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
        }
    }

    /// Sends one reply line (non-blocking, best effort) and closes the client if `last`. A
    /// client that has gone away meanwhile is skipped.
    pub fn reply(&mut self, client: ClientId, reply: &Reply, last: bool) {
        let Some(i) = self.clients.iter().position(|c| c.id == client) else {
            return;
        };
        let sent = self.clients[i].send(&protocol::reply_line(reply, self.clients[i].json()));
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
    fn lines_are_logged_once_a_second_with_a_count_of_the_rest() {
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

    #[tokio::test]
    async fn a_client_that_half_closes_after_its_request_still_gets_the_replies() {
        let mut server = server("half-closed");
        let name = server.name().to_string();
        let reply = tokio::task::spawn_blocking(move || {
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .expect("a valid name");
            let mut stream = StdUnixStream::connect_addr(&address).expect("the server listens");
            stream
                .write_all(b"restart wait\n")
                .expect("the server reads");
            stream
                .shutdown(std::net::Shutdown::Write)
                .expect("a connected socket shuts down");
            let mut reply = String::new();
            let _ = stream.read_to_string(&mut reply);
            reply
        });
        let (id, request) = next(&mut server).await;
        assert_eq!(request, Request::Restart { wait: true });
        // Let the server see the end of the client's input before it answers.
        let more = tokio::time::timeout(Duration::from_millis(200), next(&mut server)).await;
        assert!(more.is_err(), "no second request");
        assert_eq!(server.client_count(), 1, "the half-closed client is kept");
        server.reply(id, &Reply::Accepted, false);
        server.reply(id, &Reply::Done, true);
        assert_eq!(reply.await.expect("the client runs"), "accepted\ndone\n");
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_is_closed_after_the_request_timeout() {
        let mut server = server("idle");
        server.request_timeout = Duration::from_millis(300);
        let address = std::os::unix::net::SocketAddr::from_abstract_name(server.name().as_bytes())
            .expect("a valid name");
        let idle = StdUnixStream::connect_addr(&address).expect("the server listens");
        let reader = tokio::task::spawn_blocking(move || {
            let mut reply = String::new();
            let _ = (&idle).read_to_string(&mut reply);
            reply
        });
        tokio::select! {
            reply = reader => assert_eq!(
                reply.expect("the reader runs"),
                "error no request in time\n"
            ),
            (_, request) = next(&mut server) => panic!("{request:?} from an idle client"),
        }
        assert_eq!(server.client_count(), 0);
    }
}
