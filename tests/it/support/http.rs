//! A minimal HTTP/1.1 client and a load generator that classifies every request.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where requests go.
#[derive(Clone, Debug)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// One answered request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The pid of the process that answered (the example server's X-Pid header).
    pub fn pid(&self) -> i32 {
        self.header("X-Pid")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no X-Pid header in {self:?}"))
    }
}

/// Why a request did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// connect(2) was refused: nothing listened.
    Refused,
    /// The connection was reset or closed before a complete response.
    Reset,
    /// No complete response within the timeout.
    Timeout,
    /// A response with a status other than 2xx.
    Status(u16),
    Other(String),
}

const TIMEOUT: Duration = Duration::from_secs(15);

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn connect(target: &Target) -> Result<Box<dyn Stream>, Failure> {
    let classify = |e: std::io::Error| match e.kind() {
        ErrorKind::ConnectionRefused | ErrorKind::NotFound => Failure::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Failure::Timeout,
        _ => Failure::Other(format!("connect: {e}")),
    };
    match target {
        Target::Tcp(addr) => {
            let stream = TcpStream::connect_timeout(addr, TIMEOUT).map_err(classify)?;
            stream
                .set_read_timeout(Some(TIMEOUT))
                .map_err(|e| Failure::Other(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream))
        }
        Target::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(classify)?;
            stream
                .set_read_timeout(Some(TIMEOUT))
                .map_err(|e| Failure::Other(e.to_string()))?;
            Ok(Box::new(stream))
        }
    }
}

/// One `GET path` on a fresh connection (`Connection: close`).
pub fn get(target: &Target, path: &str) -> Result<Reply, Failure> {
    let mut stream = connect(target)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io_failure)?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if raw.is_empty() => return Err(io_failure(e)),
        Err(e) => return Err(io_failure(e)),
    }
    let reply = parse(&raw).ok_or(Failure::Reset)?;
    if (200..300).contains(&reply.status) {
        Ok(reply)
    } else {
        Err(Failure::Status(reply.status))
    }
}

fn io_failure(e: std::io::Error) -> Failure {
    match e.kind() {
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => Failure::Reset,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Failure::Timeout,
        _ => Failure::Other(e.to_string()),
    }
}

/// Parses a complete response; None if it is cut short.
fn parse(raw: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())?;
    (body.len() >= length).then(|| Reply {
        status,
        headers,
        body: body[..length].to_string(),
    })
}

/// Requests sent by a [`Load`], by outcome.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub ok: usize,
    pub failures: BTreeMap<Failure, usize>,
    /// How many successful responses each pid gave.
    pub pids: BTreeMap<i32, usize>,
}

impl LoadReport {
    pub fn failed(&self) -> usize {
        self.failures.values().sum()
    }
}

/// Background clients sending `GET /` (or another path) in a loop until stopped, each on a
/// new connection.
pub struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(target: Target, clients: usize) -> Load {
        Load::start_path(target, clients, "/")
    }

    /// [`Load::start`] with `GET path`.
    pub fn start_path(target: Target, clients: usize, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let threads = (0..clients)
            .map(|_| {
                let (target, stop, report) = (target.clone(), stop.clone(), report.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = get(&target, path);
                        let mut report = report.lock().expect("no panics holding it");
                        match outcome {
                            Ok(reply) => {
                                report.ok += 1;
                                *report.pids.entry(reply.pid()).or_default() += 1;
                            }
                            Err(failure) => *report.failures.entry(failure).or_default() += 1,
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            report,
            threads,
        }
    }

    /// Requests so far.
    pub fn snapshot(&self) -> LoadReport {
        self.report.lock().expect("no panics holding it").clone()
    }

    /// Waits until at least `n` more requests succeeded than at the call.
    pub fn wait_successes(&self, n: usize) {
        let start = self.snapshot().ok;
        let end = Instant::now() + super::DEADLINE;
        while self.snapshot().ok < start + n {
            assert!(
                Instant::now() < end,
                "load made no progress: {:?}",
                self.snapshot()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("load threads do not panic");
        }
        Arc::try_unwrap(self.report)
            .map(|m| m.into_inner().expect("no panics holding it"))
            .unwrap_or_default()
    }
}
