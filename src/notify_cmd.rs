//! `graceful-run notify`: sd_notify(3) from the command line, for servers written in languages
//! that cannot send a unix datagram themselves (shells, Node.js) or that would rather not.
//!
//! It sends one datagram to `$NOTIFY_SOCKET` (`@abstract` or a filesystem path, taken byte
//! for byte: a path need not be UTF-8), in the spirit of `systemd-notify`. graceful-run gives
//! each generation a NOTIFY_SOCKET of its own and accepts a message only from a process of
//! that generation, checked when it reads the datagram: this helper, a child of the server,
//! counts, as long as it still exists then. So, like `systemd-notify`, it then waits until
//! the message has been taken (sd_notify_barrier: BARRIER=1 with a pipe that the receiver
//! closes), at most [`BARRIER_TIMEOUT`]; `--no-block` sends and exits at once.
//!
//! A message longer than sd_notify receivers read (4096 bytes; systemd drops longer ones) is
//! refused rather than sent to be lost.
//!
//! Only `notify` as the *first* argument selects this mode; `graceful-run -- notify` runs a
//! program named notify. Exit status: 0 when the datagram was sent (and taken), 1 when
//! NOTIFY_SOCKET is unset, the send failed or nothing took the message in time, 125 for a bad
//! flag or a message too long; every failure is one line on stderr.

use std::ffi::OsString;

use clap::Parser;
use graceful_run::notify::{MESSAGE_MAX, Upstream, monotonic_usec};

/// Exit status when there is nowhere to send or the send failed, as systemd-notify's.
const NOT_SENT: i32 = 1;

/// How long to wait for the receiver to take the message (systemd-notify's 5 s).
const BARRIER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(
    name = "graceful-run notify",
    about = "Send sd_notify messages (READY=1, STATUS=...) to $NOTIFY_SOCKET",
    long_about = "Send sd_notify messages (READY=1, STATUS=...) to $NOTIFY_SOCKET, as \
                  systemd-notify does, for servers that cannot send a unix datagram themselves. \
                  Under `graceful-run --ready notify`, `graceful-run notify --ready` run by the \
                  server (or any process it starts) marks its generation ready.\n\n\
                  It waits until the receiver has taken the message, as systemd-notify does \
                  (at most 5s; --no-block: not at all).\n\n\
                  Exit status: 0 when sent (and taken); 1 when NOTIFY_SOCKET is unset, the send \
                  fails or the message is not taken in time; 125 for a bad flag or a message \
                  longer than the 4096 bytes receivers read.",
    max_term_width = 100
)]
struct NotifyCli {
    /// Send READY=1: startup (or a reload) is complete
    #[arg(long)]
    ready: bool,
    /// Send RELOADING=1 (with MONOTONIC_USEC)
    #[arg(long)]
    reloading: bool,
    /// Send STOPPING=1
    #[arg(long)]
    stopping: bool,
    /// Send STATUS=TEXT, a one-line description of the state
    #[arg(long, value_name = "TEXT")]
    status: Option<String>,
    /// Send MAINPID=PID
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pid: Option<u32>,
    /// Send and exit, without waiting until the receiver has taken the message
    #[arg(long)]
    no_block: bool,
    /// More assignments to send as they are, e.g. `WATCHDOG=1` or `ERRNO=2`
    #[arg(value_name = "VAR=VALUE", value_parser = parse_assignment)]
    assignments: Vec<String>,
}

fn parse_assignment(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((name, _)) if !name.is_empty() && !text.contains('\n') => Ok(text.to_string()),
        _ => Err("expected VAR=VALUE on one line".to_string()),
    }
}

/// The message to send, one `KEY=VALUE` per line.
fn message(cli: &NotifyCli) -> Result<String, String> {
    let mut lines = Vec::new();
    if cli.ready {
        lines.push("READY=1".to_string());
    }
    if cli.reloading {
        lines.push("RELOADING=1".to_string());
        lines.push(format!("MONOTONIC_USEC={}", monotonic_usec()));
    }
    if cli.stopping {
        lines.push("STOPPING=1".to_string());
    }
    if let Some(status) = &cli.status {
        if status.contains('\n') {
            return Err(format!("--status '{status}': must be one line"));
        }
        lines.push(format!("STATUS={status}"));
    }
    if let Some(pid) = cli.pid {
        lines.push(format!("MAINPID={pid}"));
    }
    lines.extend(cli.assignments.iter().cloned());
    if lines.is_empty() {
        return Err(
            "nothing to send: give --ready, --reloading, --stopping, --status or VAR=VALUE"
                .to_string(),
        );
    }
    let text = lines.join("\n");
    if text.len() > MESSAGE_MAX {
        let shorten = if cli
            .status
            .as_ref()
            .is_some_and(|s| s.len() > MESSAGE_MAX / 2)
        {
            format!(
                "--status (its {} bytes)",
                cli.status.as_ref().map_or(0, String::len)
            )
        } else {
            "--status and the VAR=VALUE arguments".to_string()
        };
        return Err(format!(
            "the message would be {} bytes, more than the {MESSAGE_MAX} that sd_notify \
             receivers read (systemd drops longer ones): shorten {shorten}",
            text.len()
        ));
    }
    Ok(text)
}

/// Runs the mode with `args` (the words after `notify`); returns the exit status.
pub fn main(args: impl Iterator<Item = OsString>) -> i32 {
    let cli = match NotifyCli::try_parse_from(std::iter::once(OsString::from("notify")).chain(args))
    {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("graceful-run notify: {first}");
            return graceful_run::exit::FAILURE;
        }
    };
    let text = match message(&cli) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("graceful-run notify: {e}");
            return graceful_run::exit::FAILURE;
        }
    };
    let Some(address) = std::env::var_os("NOTIFY_SOCKET").filter(|a| !a.is_empty()) else {
        eprintln!(
            "graceful-run notify: NOTIFY_SOCKET is not set (run under `graceful-run --ready notify` or systemd Type=notify)"
        );
        return NOT_SENT;
    };
    let shown = address.to_string_lossy().into_owned();
    let sent = Upstream::new(&address).and_then(|socket| {
        socket
            .send(&text)
            .map_err(|e| format!("cannot send to NOTIFY_SOCKET '{shown}': {}", e.desc()))?;
        if cli.no_block {
            return Ok(());
        }
        match socket.barrier(BARRIER_TIMEOUT) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "sent to NOTIFY_SOCKET '{shown}', but nothing took the message within {} \
                 (--no-block does not wait)",
                humantime::format_duration(BARRIER_TIMEOUT)
            )),
            Err(e) => Err(format!(
                "sent to NOTIFY_SOCKET '{shown}', but cannot wait for it to be taken: {}",
                e.desc()
            )),
        }
    });
    match sent {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("graceful-run notify: {e}");
            NOT_SENT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<String, String> {
        let cli = NotifyCli::try_parse_from(std::iter::once("notify").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        message(&cli)
    }

    #[test]
    fn flags_become_lines_in_order() {
        assert_eq!(
            parse(&["--status", "up", "--ready", "--pid", "42", "X=1"]).unwrap(),
            "READY=1\nSTATUS=up\nMAINPID=42\nX=1"
        );
        assert!(
            parse(&["--reloading"])
                .unwrap()
                .starts_with("RELOADING=1\nMONOTONIC_USEC=")
        );
    }

    #[test]
    fn a_message_receivers_would_drop_is_refused() {
        let long = "x".repeat(100_000);
        let error = parse(&["--ready", "--status", &long]).unwrap_err();
        assert!(
            error.contains("100015 bytes") && error.contains("--status (its 100000 bytes)"),
            "{error}"
        );
        assert!(parse(&["--status", &"x".repeat(4000)]).is_ok());
    }

    #[test]
    fn nothing_or_nonsense_is_refused() {
        assert!(parse(&[]).unwrap_err().contains("nothing to send"));
        assert!(parse(&["READY"]).unwrap_err().contains("VAR=VALUE"));
        assert!(parse(&["--pid", "0"]).is_err());
    }
}
