//! What travels on the control socket: one request line from the client, reply lines back.
//!
//! ```text
//! client: status | status json | restart | restart wait | stop | stop wait | scale N
//! server: status <text> | accepted | done | failed <why> | refused <why> | error <why>
//! ```
//!
//! Every message is one line, so a reader never needs a parser for framing: the status text
//! (several lines for a person, or one JSON object) travels with `\` and newlines escaped.
//! The server renders the status itself, as the request asked, so the client stays a thin
//! printer and the JSON is produced in one place. `refused` and `error` come from the
//! transport (a peer that may not talk to us, a request that makes no sense), never from
//! the supervisor.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// A client's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Report every generation, the listeners, restarts and the last exit.
    Status { json: bool },
    /// Start a restart (a HUP from the inside); with `wait`, report how it ended.
    Restart { wait: bool },
    /// Stop the service; with `wait`, the connection stays open until graceful-run exits.
    Stop { wait: bool },
    /// Run this many workers from now on.
    Scale { workers: u32 },
}

impl Request {
    pub fn to_line(self) -> String {
        let (verb, flag) = match self {
            Request::Status { json } => ("status", json.then(|| "json".to_string())),
            Request::Restart { wait } => ("restart", wait.then(|| "wait".to_string())),
            Request::Stop { wait } => ("stop", wait.then(|| "wait".to_string())),
            Request::Scale { workers } => ("scale", Some(workers.to_string())),
        };
        match flag {
            Some(flag) => format!("{verb} {flag}\n"),
            None => format!("{verb}\n"),
        }
    }

    /// One request line, without its newline.
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["status"] => Ok(Request::Status { json: false }),
            ["status", "json"] => Ok(Request::Status { json: true }),
            ["restart"] => Ok(Request::Restart { wait: false }),
            ["restart", "wait"] => Ok(Request::Restart { wait: true }),
            ["stop"] => Ok(Request::Stop { wait: false }),
            ["stop", "wait"] => Ok(Request::Stop { wait: true }),
            // The count's range is the supervisor's to judge (it answers why).
            ["scale", n] if n.bytes().all(|b| b.is_ascii_digit()) && n.len() <= 9 => {
                Ok(Request::Scale {
                    workers: n.parse().unwrap_or(0),
                })
            }
            _ => Err(format!("unknown request '{}'", line.escape_debug())),
        }
    }
}

/// The supervisor's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(StatusReport),
    /// The restart or stop has begun.
    Accepted,
    /// The restart finished: the new generation serves.
    Done,
    /// The restart failed; one line why ("exited before ready", "not ready in time").
    Failed(String),
}

/// A reply line as the client reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    Status(String),
    Accepted,
    Done,
    Failed(String),
    /// The server does not talk to this client (its uid).
    Refused(String),
    /// The server did not understand the request.
    Error(String),
}

impl Received {
    /// One reply line, without its newline.
    pub fn parse(line: &str) -> Option<Received> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        Some(match verb {
            "status" => Received::Status(unescape(rest)),
            "accepted" => Received::Accepted,
            "done" => Received::Done,
            "failed" => Received::Failed(unescape(rest)),
            "refused" => Received::Refused(unescape(rest)),
            "error" => Received::Error(unescape(rest)),
            _ => return None,
        })
    }
}

/// The line for `reply`; a status in JSON when the request asked for it.
pub fn reply_line(reply: &Reply, json: bool) -> String {
    match reply {
        Reply::Status(report) => {
            let text = if json {
                report.to_json(SystemTime::now())
            } else {
                report.to_text()
            };
            format!("status {}\n", escape(&text))
        }
        Reply::Accepted => "accepted\n".to_string(),
        Reply::Done => "done\n".to_string(),
        Reply::Failed(why) => format!("failed {}\n", escape(why)),
    }
}

/// The lines the transport itself sends.
pub fn refused_line(why: &str) -> String {
    format!("refused {}\n", escape(why))
}

pub fn error_line(why: &str) -> String {
    format!("error {}\n", escape(why))
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// Where a worker is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GenerationState {
    #[default]
    Starting,
    Ready,
    /// Replaced: new connections go elsewhere while it finishes what it holds.
    Draining,
    Stopping,
}

impl GenerationState {
    pub fn name(self) -> &'static str {
        match self {
            GenerationState::Starting => "starting",
            GenerationState::Ready => "ready",
            GenerationState::Draining => "draining",
            GenerationState::Stopping => "stopping",
        }
    }
}

/// One worker of a generation (with one worker, the generation itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerationStatus {
    pub number: u64,
    /// Its index (GRACEFUL_RUN_WORKER), when there are several workers.
    pub worker: Option<u32>,
    pub pid: i32,
    pub state: GenerationState,
    /// How long it has been in `state`.
    pub in_state_for: Duration,
    /// How it became ready: "READY=1", "accepting", "up for 1s"; None while starting.
    pub ready_by: Option<String>,
    /// The last `STATUS=` it sent (sd_notify), as it sent it: untrusted text, shown with
    /// its control characters escaped.
    pub status: Option<String>,
    /// Its processes' memory at the last sample (`--max-memory`), in bytes.
    pub memory: Option<u64>,
    /// Its health (`--health-*`), once a check counted.
    pub healthy: Option<bool>,
    /// Connections waiting in its own listener's accept queue (steering).
    pub queue: Option<u32>,
    /// While it drains: its busy and idle connections at the last look.
    pub busy: Option<u32>,
    pub idle: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerStatus {
    /// The fd the command receives it as (3, 4, ...).
    pub fd: i32,
    /// As graceful-run logs it: `tcp://127.0.0.1:8080`, `unix:/run/app.sock`.
    pub address: String,
    /// Its LISTEN_FDNAMES name.
    pub name: String,
    /// None when each generation gets a listener of its own and new connections are steered
    /// (`--handover steer`); else why every generation shares this one.
    pub shared_because: Option<String>,
}

/// What `graceful-run ctl status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusReport {
    /// graceful-run's own pid (in its namespace).
    pub pid: u32,
    pub uptime: Duration,
    /// Every worker alive, oldest first.
    pub generations: Vec<GenerationStatus>,
    pub listeners: Vec<ListenerStatus>,
    /// How many workers run (`--workers`, `ctl scale`); None with the one worker of a plain
    /// run.
    pub workers: Option<u32>,
    /// Restarts begun so far (by signal, by `ctl`, or after the command exited).
    pub restarts: u64,
    /// How the last generation that ended did, as the log says it ("exited with status 1").
    pub last_exit: Option<String>,
    /// Why the last restart failed, until one succeeds.
    pub last_failure: Option<String>,
    /// Replacements each trigger asked for, and restarts from `--watch` ("unhealthy", 2).
    pub triggered: Vec<(&'static str, u64)>,
}

/// A value of the status, as JSON writes it.
enum Value<'a> {
    Number(u64),
    Text(&'a str),
    Bool(bool),
    Null,
}

/// One field of the status: its JSON key and value, and how the text shows it (nothing when
/// the value is missing). The text and the JSON are both made from one list of these.
struct Field<'a> {
    key: &'static str,
    value: Value<'a>,
    text: Option<String>,
}

fn field<'a, T>(
    key: &'static str,
    value: Option<T>,
    json: impl Fn(&T) -> Value<'a>,
    text: impl Fn(&T) -> String,
) -> Field<'a> {
    match value {
        Some(value) => Field {
            key,
            text: Some(text(&value)),
            value: json(&value),
        },
        None => Field {
            key,
            value: Value::Null,
            text: None,
        },
    }
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl GenerationStatus {
    /// What follows the head ("gen 3 (pid 412): ready for 2m 5s").
    fn extras(&self) -> Vec<Field<'_>> {
        vec![
            field(
                "ready_by",
                self.ready_by.as_deref(),
                |by| Value::Text(by),
                |by| format!(" (ready by {by})"),
            ),
            field(
                "status",
                self.status.as_deref(),
                |status| Value::Text(status),
                |status| format!(", status: {}", crate::text::escape_controls(status)),
            ),
            field(
                "healthy",
                self.healthy,
                |h| Value::Bool(*h),
                |h| if *h { ", healthy" } else { ", unhealthy" }.to_string(),
            ),
            field(
                "memory_bytes",
                self.memory,
                |m| Value::Number(*m),
                |m| format!(", memory {}", mebibytes(*m)),
            ),
            field(
                "queue",
                self.queue,
                |q| Value::Number(u64::from(*q)),
                |q| format!(", {q} queued"),
            ),
            field(
                "busy",
                self.busy,
                |b| Value::Number(u64::from(*b)),
                |b| format!(", {b} busy"),
            ),
            field(
                "idle",
                self.idle,
                |i| Value::Number(u64::from(*i)),
                |i| format!(", {i} idle"),
            ),
        ]
    }
}

impl StatusReport {
    /// What follows the summary's head ("graceful-run pid 1, up 1h 2m").
    fn extras(&self) -> Vec<Field<'_>> {
        vec![
            field(
                "workers",
                self.workers,
                |n| Value::Number(u64::from(*n)),
                |n| format!(", {n} workers"),
            ),
            field(
                "restarts",
                Some(self.restarts),
                |n| Value::Number(*n),
                |n| format!(", {n} restart{}", if *n == 1 { "" } else { "s" }),
            ),
            field(
                "last_exit",
                self.last_exit.as_deref(),
                |e| Value::Text(e),
                |e| format!(", last exit: {e}"),
            ),
            field(
                "last_failure",
                self.last_failure.as_deref(),
                |f| Value::Text(f),
                |f| format!(", last restart failed: {f}"),
            ),
        ]
    }

    /// For a person: a summary line, one line per worker, one per listener.
    pub fn to_text(&self) -> String {
        let mut out = format!("graceful-run pid {}, up {}", self.pid, age(self.uptime));
        for f in self.extras() {
            out.push_str(f.text.as_deref().unwrap_or(""));
        }
        if !self.triggered.is_empty() {
            let counts: Vec<String> = self
                .triggered
                .iter()
                .map(|(why, n)| format!("{why} {n}"))
                .collect();
            let _ = write!(out, ", replaced for: {}", counts.join(", "));
        }
        if self.generations.is_empty() {
            out.push_str("\nno generation runs");
        }
        for g in &self.generations {
            let _ = write!(out, "\ngen {}", g.number);
            if let Some(worker) = g.worker {
                let _ = write!(out, " worker {worker}");
            }
            let _ = write!(
                out,
                " (pid {}): {} for {}",
                g.pid,
                g.state.name(),
                age(g.in_state_for)
            );
            for f in g.extras() {
                out.push_str(f.text.as_deref().unwrap_or(""));
            }
        }
        for l in &self.listeners {
            let _ = write!(out, "\nfd {}: {} (name {})", l.fd, l.address, l.name);
            match &l.shared_because {
                None => out.push_str(", steered"),
                Some(why) => {
                    let _ = write!(out, ", shared: {}", crate::text::escape_controls(why));
                }
            }
        }
        out
    }

    /// One JSON object; `now` dates the `since` fields (wall clock, RFC 3339, seconds).
    pub fn to_json(&self, now: SystemTime) -> String {
        let since = |age: Duration| {
            now.checked_sub(age)
                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .unwrap_or_default()
        };
        let mut out = format!(
            "{{\"pid\":{},\"uptime_ms\":{}",
            self.pid,
            self.uptime.as_millis()
        );
        push_json_fields(&mut out, &self.extras());
        out.push_str(",\"triggered\":{");
        for (i, (why, n)) in self.triggered.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{why}\":{n}");
        }
        out.push_str("},\"generations\":[");
        for (i, g) in self.generations.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"number\":{}", g.number);
            if let Some(worker) = g.worker {
                let _ = write!(out, ",\"worker\":{worker}");
            }
            let _ = write!(
                out,
                ",\"pid\":{},\"state\":\"{}\",\"for_ms\":{},\"since\":\"{}\"",
                g.pid,
                g.state.name(),
                g.in_state_for.as_millis(),
                since(g.in_state_for)
            );
            push_json_fields(&mut out, &g.extras());
            out.push('}');
        }
        out.push_str("],\"listeners\":[");
        for (i, l) in self.listeners.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"fd\":{},\"address\":", l.fd);
            push_json_string_or_null(&mut out, Some(&l.address));
            out.push_str(",\"name\":");
            push_json_string_or_null(&mut out, Some(&l.name));
            let handover = if l.shared_because.is_some() {
                "shared"
            } else {
                "steer"
            };
            let _ = write!(out, ",\"handover\":\"{handover}\",\"shared_because\":");
            push_json_string_or_null(&mut out, l.shared_because.as_deref());
            out.push('}');
        }
        out.push_str("]}");
        out
    }
}

/// `,"key":value` for each field.
fn push_json_fields(out: &mut String, fields: &[Field<'_>]) {
    for f in fields {
        let _ = write!(out, ",\"{}\":", f.key);
        match &f.value {
            Value::Number(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Text(text) => push_json_string_or_null(out, Some(text)),
            Value::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Value::Null => out.push_str("null"),
        }
    }
}

fn push_json_string_or_null(out: &mut String, text: Option<&str>) {
    match text {
        Some(text) => {
            out.push('"');
            crate::log::push_json_escaped(out, text);
            out.push('"');
        }
        None => out.push_str("null"),
    }
}

/// A duration as a person reads an age: "under 1s", "42s", "3m 5s", "2h 10m", "3d 4h".
pub fn age(duration: Duration) -> String {
    let s = duration.as_secs();
    match s {
        0 => "under 1s".to_string(),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> StatusReport {
        StatusReport {
            pid: 1,
            uptime: Duration::from_secs(3725),
            generations: vec![
                GenerationStatus {
                    number: 3,
                    pid: 412,
                    state: GenerationState::Ready,
                    in_state_for: Duration::from_secs(125),
                    ready_by: Some("READY=1".into()),
                    status: Some("serving \u{1b}[2J3 workers".into()),
                    ..GenerationStatus::default()
                },
                GenerationStatus {
                    number: 4,
                    pid: 530,
                    state: GenerationState::Starting,
                    in_state_for: Duration::from_millis(300),
                    ready_by: None,
                    status: None,
                    ..GenerationStatus::default()
                },
            ],
            listeners: vec![ListenerStatus {
                fd: 3,
                address: "tcp://0.0.0.0:8080".into(),
                name: "web \"main\"".into(),
                shared_because: None,
            }],
            restarts: 3,
            last_exit: Some("gen 2 exited with status 1".into()),
            ..StatusReport::default()
        }
    }

    #[test]
    fn requests_round_trip_and_nonsense_is_refused() {
        for request in [
            Request::Status { json: false },
            Request::Status { json: true },
            Request::Restart { wait: false },
            Request::Restart { wait: true },
            Request::Stop { wait: false },
            Request::Stop { wait: true },
            Request::Scale { workers: 4 },
        ] {
            let line = request.to_line();
            assert!(line.ends_with('\n'));
            assert_eq!(Request::parse(line.trim_end()), Ok(request));
        }
        assert_eq!(
            Request::parse("restart now\u{1b}"),
            Err("unknown request 'restart now\\u{1b}'".to_string())
        );
        assert!(Request::parse("").is_err());
    }

    #[test]
    fn replies_are_single_lines_and_read_back() {
        let report = sample();
        let cases = [
            (Reply::Accepted, Received::Accepted),
            (Reply::Done, Received::Done),
            (
                Reply::Failed("exited before ready:\nstatus 1 \\o/".into()),
                Received::Failed("exited before ready:\nstatus 1 \\o/".into()),
            ),
            (
                Reply::Status(report.clone()),
                Received::Status(report.to_text()),
            ),
        ];
        for (reply, expected) in cases {
            let line = reply_line(&reply, false);
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert_eq!(Received::parse(line.trim_end()), Some(expected));
        }
        assert_eq!(
            Received::parse(refused_line("uid 65534").trim_end()),
            Some(Received::Refused("uid 65534".into()))
        );
        assert_eq!(Received::parse("bogus"), None);
    }

    #[test]
    fn status_text_names_generations_listeners_and_the_last_exit() {
        assert_eq!(
            sample().to_text(),
            "graceful-run pid 1, up 1h 2m, 3 restarts, last exit: gen 2 exited with status 1\n\
             gen 3 (pid 412): ready for 2m 5s (ready by READY=1), status: serving \\u{1b}[2J3 workers\n\
             gen 4 (pid 530): starting for under 1s\n\
             fd 3: tcp://0.0.0.0:8080 (name web \"main\"), steered"
        );
    }

    #[test]
    fn status_json_is_one_escaped_object() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            sample().to_json(now),
            "{\"pid\":1,\"uptime_ms\":3725000,\"workers\":null,\"restarts\":3,\
             \"last_exit\":\"gen 2 exited with status 1\",\"last_failure\":null,\
             \"triggered\":{},\"generations\":[\
             {\"number\":3,\"pid\":412,\"state\":\"ready\",\"for_ms\":125000,\
             \"since\":\"2027-01-15T07:57:55Z\",\"ready_by\":\"READY=1\",\
             \"status\":\"serving \\u001b[2J3 workers\",\"healthy\":null,\
             \"memory_bytes\":null,\"queue\":null,\"busy\":null,\"idle\":null},\
             {\"number\":4,\"pid\":530,\"state\":\"starting\",\"for_ms\":300,\
             \"since\":\"2027-01-15T07:59:59Z\",\"ready_by\":null,\"status\":null,\
             \"healthy\":null,\"memory_bytes\":null,\"queue\":null,\"busy\":null,\
             \"idle\":null}],\
             \"listeners\":[{\"fd\":3,\"address\":\"tcp://0.0.0.0:8080\",\
             \"name\":\"web \\\"main\\\"\",\"handover\":\"steer\",\"shared_because\":null}]}"
        );
    }

    /// Text and JSON come from one list of fields: each shows what the other does.
    #[test]
    fn workers_health_memory_and_drains_show_in_both_forms() {
        let report = StatusReport {
            pid: 1,
            workers: Some(2),
            triggered: vec![("unhealthy", 2)],
            last_failure: Some("the new generation was not ready in time".into()),
            generations: vec![
                GenerationStatus {
                    number: 5,
                    worker: Some(1),
                    pid: 77,
                    state: GenerationState::Ready,
                    healthy: Some(false),
                    memory: Some(3 << 20),
                    queue: Some(0),
                    ..GenerationStatus::default()
                },
                GenerationStatus {
                    number: 4,
                    worker: Some(1),
                    pid: 66,
                    state: GenerationState::Draining,
                    queue: Some(2),
                    busy: Some(1),
                    idle: Some(3),
                    ..GenerationStatus::default()
                },
            ],
            ..StatusReport::default()
        };
        let text = report.to_text();
        assert!(
            text.starts_with(
                "graceful-run pid 1, up under 1s, 2 workers, 0 restarts, last restart failed: the \
             new generation was not ready in time, replaced for: unhealthy 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "gen 5 worker 1 (pid 77): ready for under 1s, unhealthy, memory 3.0 MiB, 0 queued"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "gen 4 worker 1 (pid 66): draining for under 1s, 2 queued, 1 busy, 3 idle"
            ),
            "{text}"
        );
        let json = report.to_json(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        for needle in [
            "\"workers\":2",
            "\"triggered\":{\"unhealthy\":2}",
            "\"worker\":1,\"pid\":77,\"state\":\"ready\"",
            "\"healthy\":false,\"memory_bytes\":3145728,\"queue\":0",
            "\"state\":\"draining\"",
            "\"queue\":2,\"busy\":1,\"idle\":3",
        ] {
            assert!(json.contains(needle), "{needle} in {json}");
        }
    }

    #[test]
    fn ages_read_like_a_person_says_them() {
        assert_eq!(age(Duration::from_millis(999)), "under 1s");
        assert_eq!(age(Duration::from_secs(59)), "59s");
        assert_eq!(age(Duration::from_secs(61)), "1m 1s");
        assert_eq!(age(Duration::from_secs(7260)), "2h 1m");
        assert_eq!(age(Duration::from_secs(90000)), "1d 1h");
    }
}
