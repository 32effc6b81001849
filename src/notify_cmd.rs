//! `graceful-run notify`: sd_notify(3) from the command line, for servers written in languages
//! that cannot send a unix datagram themselves (shells, Node.js) or that would rather not.
//!
//! It sends one datagram to `$NOTIFY_SOCKET` (`@abstract` or a filesystem path), in the spirit
//! of `systemd-notify`. graceful-run gives each generation a NOTIFY_SOCKET of its own and does
//! not look at the sender's pid (only its uid), so a READY=1 sent by this helper, a child of
//! the server, counts for the generation that started it.
//!
//! Only `notify` as the *first* argument selects this mode; `graceful-run -- notify` runs a
//! program named notify. Exit status: 0 when the datagram was sent, 1 when NOTIFY_SOCKET is
//! unset or the send failed, 125 for a bad flag; every failure is one line on stderr.

use std::ffi::OsString;

use clap::Parser;
use graceful_run::notify::{Upstream, monotonic_usec};

/// Exit status when there is nowhere to send or the send failed, as systemd-notify's.
const NOT_SENT: i32 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "graceful-run notify",
    about = "Send sd_notify messages (READY=1, STATUS=...) to $NOTIFY_SOCKET",
    long_about = "Send sd_notify messages (READY=1, STATUS=...) to $NOTIFY_SOCKET, as \
                  systemd-notify does, for servers that cannot send a unix datagram themselves. \
                  Under `graceful-run --ready notify`, `graceful-run notify --ready` run by the \
                  server (or any process it starts) marks its generation ready.\n\n\
                  Exit status: 0 when sent; 1 when NOTIFY_SOCKET is unset or the send fails; \
                  125 for a bad flag.",
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
    Ok(lines.join("\n"))
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
    let address = address.to_string_lossy();
    let sent = Upstream::new(&address).and_then(|socket| {
        socket
            .send(&text)
            .map_err(|e| format!("cannot send to NOTIFY_SOCKET '{address}': {}", e.desc()))
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
    fn nothing_or_nonsense_is_refused() {
        assert!(parse(&[]).unwrap_err().contains("nothing to send"));
        assert!(parse(&["READY"]).unwrap_err().contains("VAR=VALUE"));
        assert!(parse(&["--pid", "0"]).is_err());
    }
}
