//! What travels on the control socket: one request line from the client, reply lines back.
//!
//! ```text
//! client: status | status json | restart | restart wait | stop | stop wait
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
}

impl Request {
    pub fn to_line(self) -> String {
        let (verb, flag) = match self {
            Request::Status { json } => ("status", json.then_some("json")),
            Request::Restart { wait } => ("restart", wait.then_some("wait")),
            Request::Stop { wait } => ("stop", wait.then_some("wait")),
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

/// Where a generation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenerationState {
    Starting,
    Ready,
    Stopping,
}

impl GenerationState {
    pub fn name(self) -> &'static str {
        match self {
            GenerationState::Starting => "starting",
            GenerationState::Ready => "ready",
            GenerationState::Stopping => "stopping",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationStatus {
    pub number: u64,
    pub pid: i32,
    pub state: GenerationState,
    /// How long it has been in `state`.
    pub in_state_for: Duration,
    /// How it became ready: "READY=1", "accepting", "up for 1s"; None while starting.
    pub ready_by: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerStatus {
    /// The fd the command receives it as (3, 4, ...).
    pub fd: i32,
    /// As graceful-run logs it: `tcp://127.0.0.1:8080`, `unix:/run/app.sock`.
    pub address: String,
    /// Its LISTEN_FDNAMES name.
    pub name: String,
}

/// What `graceful-run ctl status` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// graceful-run's own pid (in its namespace).
    pub pid: u32,
    pub uptime: Duration,
    /// Every generation alive, oldest first.
    pub generations: Vec<GenerationStatus>,
    pub listeners: Vec<ListenerStatus>,
    /// Restarts begun so far (by signal, by `ctl`, or after the command exited).
    pub restarts: u64,
    /// How the last generation that ended did, as the log says it ("exited with status 1").
    pub last_exit: Option<String>,
}

impl StatusReport {
    /// For a person: a summary line, one line per generation, one per listener.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "graceful-run pid {}, up {}, {} restart{}",
            self.pid,
            age(self.uptime),
            self.restarts,
            if self.restarts == 1 { "" } else { "s" }
        );
        if let Some(last) = &self.last_exit {
            let _ = write!(out, ", last exit: {last}");
        }
        if self.generations.is_empty() {
            out.push_str("\nno generation runs");
        }
        for g in &self.generations {
            let _ = write!(
                out,
                "\ngen {} (pid {}): {} for {}",
                g.number,
                g.pid,
                g.state.name(),
                age(g.in_state_for)
            );
            if let Some(by) = &g.ready_by {
                let _ = write!(out, " (ready by {by})");
            }
        }
        for l in &self.listeners {
            let _ = write!(out, "\nfd {}: {} (name {})", l.fd, l.address, l.name);
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
            "{{\"pid\":{},\"uptime_ms\":{},\"restarts\":{},\"last_exit\":",
            self.pid,
            self.uptime.as_millis(),
            self.restarts
        );
        push_json_string_or_null(&mut out, self.last_exit.as_deref());
        out.push_str(",\"generations\":[");
        for (i, g) in self.generations.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"number\":{},\"pid\":{},\"state\":\"{}\",\"for_ms\":{},\"since\":\"{}\",\"ready_by\":",
                g.number,
                g.pid,
                g.state.name(),
                g.in_state_for.as_millis(),
                since(g.in_state_for)
            );
            push_json_string_or_null(&mut out, g.ready_by.as_deref());
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
            out.push('}');
        }
        out.push_str("]}");
        out
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
                },
                GenerationStatus {
                    number: 4,
                    pid: 530,
                    state: GenerationState::Starting,
                    in_state_for: Duration::from_millis(300),
                    ready_by: None,
                },
            ],
            listeners: vec![ListenerStatus {
                fd: 3,
                address: "tcp://0.0.0.0:8080".into(),
                name: "web \"main\"".into(),
            }],
            restarts: 3,
            last_exit: Some("gen 2 exited with status 1".into()),
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
             gen 3 (pid 412): ready for 2m 5s (ready by READY=1)\n\
             gen 4 (pid 530): starting for under 1s\n\
             fd 3: tcp://0.0.0.0:8080 (name web \"main\")"
        );
    }

    #[test]
    fn status_json_is_one_escaped_object() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            sample().to_json(now),
            "{\"pid\":1,\"uptime_ms\":3725000,\"restarts\":3,\
             \"last_exit\":\"gen 2 exited with status 1\",\"generations\":[\
             {\"number\":3,\"pid\":412,\"state\":\"ready\",\"for_ms\":125000,\
             \"since\":\"2027-01-15T07:57:55Z\",\"ready_by\":\"READY=1\"},\
             {\"number\":4,\"pid\":530,\"state\":\"starting\",\"for_ms\":300,\
             \"since\":\"2027-01-15T07:59:59Z\",\"ready_by\":null}],\
             \"listeners\":[{\"fd\":3,\"address\":\"tcp://0.0.0.0:8080\",\
             \"name\":\"web \\\"main\\\"\"}]}"
        );
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
