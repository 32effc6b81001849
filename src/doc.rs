//! Reference sections shared by `--help` and the man page, beyond what clap generates from
//! the flags: the environment the command receives, configuration through the environment,
//! signals, exit status and examples. One source, two renderings, so they cannot disagree.

/// One piece of a section.
pub enum Block {
    /// A paragraph.
    Para(&'static str),
    /// A term and its description.
    Item(&'static str, &'static str),
    /// A comment and the command line it describes.
    Example(&'static str, &'static str),
}

pub struct Section {
    pub title: &'static str,
    pub blocks: &'static [Block],
}

use Block::{Example, Item, Para};

pub const SECTIONS: &[Section] = &[
    Section {
        title: "ENVIRONMENT GIVEN TO THE COMMAND",
        blocks: &[
            Para(
                "The command inherits graceful-run's environment, except the variables below that \
                 describe sockets it does not receive, and GRACEFUL_RUN_* (graceful-run's own \
                 configuration). With --listen it receives, per generation:",
            ),
            Item(
                "LISTEN_FDS",
                "The number of sockets, at fds 3, 4, ... in the order of the --listen flags.",
            ),
            Item(
                "LISTEN_PID",
                "The command's own pid, written after fork: libsystemd's sd_listen_fds(3), gunicorn \
                 and go-systemd ignore the sockets otherwise. Left out with --no-listen-pid.",
            ),
            Item(
                "LISTEN_FDNAMES",
                "The sockets' names (name=...), separated by colons; `unknown` for unnamed ones.",
            ),
            Item(
                "NOTIFY_SOCKET",
                "Unless --ready is a duration: the generation's own sd_notify socket. A \
                 message counts only from a process of the generation (its main process, its \
                 process group, a descendant) that still exists when it is read. \
                 graceful-run's own NOTIFY_SOCKET, if it has one, is never passed on.",
            ),
            Item(
                "SERVER_STARTER_PORT, SERVER_STARTER_GENERATION",
                "With --compat server-starter.",
            ),
            Item(
                "EINHORN_FD_COUNT, EINHORN_FD_<i>, EINHORN_FDS, EINHORN_MASTER_PID",
                "With --compat einhorn.",
            ),
            Item(
                "HOME, USER, LOGNAME",
                "With --user, from the password database.",
            ),
            Para(
                "Inherited LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, LISTEN_PIDFDID, \
                 LISTEN_FDS_FIRST_FD, NOTIFY_SOCKET, SERVER_STARTER_* and EINHORN_* are removed. No \
                 other file descriptor of graceful-run reaches the command; the sockets are in \
                 blocking mode at each start; the command starts with an empty signal mask and \
                 default signal dispositions (signals that were ignored when graceful-run started \
                 stay ignored, as under nohup).",
            ),
        ],
    },
    Section {
        title: "CONFIGURATION FROM THE ENVIRONMENT",
        blocks: &[
            Para(
                "Every flag can be set with a variable named after it: GRACEFUL_RUN_ followed by \
                 the flag in capitals with dashes as underscores (--stop-timeout is \
                 GRACEFUL_RUN_STOP_TIMEOUT). A flag given on the command line wins. Switches take \
                 true/false, yes/no, on/off or 1/0. Variables of repeatable flags (LISTEN, \
                 MAP_SIGNAL, EXIT_CODE_MAP, WATCH) take several values separated by spaces; \
                 COMPAT takes commas.",
            ),
            Example(
                "A Dockerfile configures the entrypoint without repeating it:",
                "ENV GRACEFUL_RUN_LISTEN=8080 GRACEFUL_RUN_DRAIN_DELAY=5s GRACEFUL_RUN_STOP_TIMEOUT=20s",
            ),
        ],
    },
    Section {
        title: "DURATIONS",
        blocks: &[Para(
            "Every DURATION is written with units, as `500ms`, `30s`, `1m30s`, `2h` or `1d`, or \
             as a bare number of seconds, with a fraction if need be (`1.5`). The longest \
             accepted is one year (`1y`, 365.25 days); a longer value is refused at start.",
        )],
    },
    Section {
        title: "SIGNALS",
        blocks: &[
            Item(
                "TERM, INT",
                "Stop: after --drain-delay and --pre-stop, the command's main process receives \
                 the stop signal (the same signal by default; see --stop-signal and \
                 --map-signal) and SIGCONT; graceful-run closes its copies of the sockets, waits \
                 up to --stop-timeout, then kills the command's process group with SIGKILL \
                 (--kill-mode). A second TERM or INT kills at once; the same signal again from \
                 the same process within 500 ms (GNU timeout signals its child, then its group) \
                 is the same request. When the main process exits, processes left in its group, \
                 and orphans re-parented to graceful-run, get the stop signal and then SIGKILL; \
                 graceful-run exits when none is left, within drain delay + stop timeout + hook \
                 timeout (plus 2 s per stage for processes that survive SIGKILL, then left \
                 behind with a warning).",
            ),
            Item(
                "HUP (--restart-signal)",
                "Zero-downtime restart: a new generation starts on the same sockets; once it is \
                 ready the old one gets the stop signal (TERM by default). Requests during a \
                 restart are coalesced into one more restart. A hangup sent by the kernel (the \
                 terminal closed) is forwarded instead.",
            ),
            Item("CHLD", "Used to reap exited processes; never forwarded."),
            Item(
                "every other signal",
                "Forwarded to the command's main process (to its whole process group with \
                 --kill-mode group), after --map-signal. A signal that a process of the \
                 command's group sends to graceful-run is not echoed back to it; TERM and INT \
                 from any descendant of graceful-run are ignored (Go's grace and endless TERM \
                 their parent after a restart). The restart signal from the command is \
                 honoured: a server may ask for its own replacement.",
            ),
            Para(
                "Signals are written TERM, SIGTERM, sigterm or 15; real-time signals, which are \
                 forwarded like any other, RTMIN, RTMIN+3, SIGRTMAX-1 or 34-64. When \
                 graceful-run is killed with SIGKILL, the command receives SIGKILL too \
                 (PR_SET_PDEATHSIG), also under --user.",
            ),
        ],
    },
    Section {
        title: "EXIT STATUS",
        blocks: &[
            Item(
                "the command's status",
                "graceful-run exits with the exit code of the command (of the generation serving \
                 last), after --exit-code-map. Its last log line says how it ends, e.g. \
                 `graceful-run: exiting with status 3` or `graceful-run: dying of SIGTERM like \
                 the command`.",
            ),
            Item(
                "death by signal N",
                "When a signal killed the command, graceful-run kills itself with the same signal \
                 (core dumps off), so its parent sees the same death, as GNU timeout does. As PID \
                 1, where that is impossible, it exits 128+N. --exit-code-map sees 128+N.",
            ),
            Item(
                "0 after --help or --version",
                "Also when the reader of stdout goes away early (`graceful-run --help | head`).",
            ),
            Item(
                "124",
                "The command never became ready within --ready-timeout, so nothing ever served \
                 (as GNU timeout's 124). The log says how to become ready.",
            ),
            Item(
                "125",
                "graceful-run failed: a bad flag or value (one line on stderr names the flag, \
                 the value, and the variable if it came from one), a socket it cannot bind, \
                 stdout unwritable for --help, ...",
            ),
            Item("126", "COMMAND was found but cannot be executed."),
            Item("127", "COMMAND was not found."),
        ],
    },
    Section {
        title: "EXAMPLES",
        blocks: &[
            Example(
                "Serve on port 8080 (every interface); the server reads LISTEN_FDS:",
                "graceful-run -l 8080 -- ./server",
            ),
            Example(
                "nginx-style graceful stop, a drain for the load balancer, restart on HUP when the \
                 new generation says READY=1:",
                "graceful-run -l 80 --map-signal TERM:QUIT --drain-delay 5s --ready notify -- ./server",
            ),
            Example(
                "Zero-downtime deploy: replace the binary, then",
                "kill -HUP \"$(cat /run/app.pid)\"   # with --pid-file /run/app.pid",
            ),
            Example(
                "A unix socket and an abstract one, named for sd_listen_fds_with_names(3):",
                "graceful-run -l unix:/run/app.sock,name=api,mode=0660 -l @app-admin,name=admin -- ./server",
            ),
            Example(
                "Restart on crashes with backoff; run as an unprivileged user on port 80:",
                "graceful-run -l 80 --user www-data --restart-policy on-failure -- ./server",
            ),
            Example(
                "A server started through a shell or npm, whose pid differs from its child's:",
                "graceful-run -l 3000 --no-listen-pid -- npm start",
            ),
        ],
    },
];

/// The sections as `--help` shows them after the flags.
pub fn help_text() -> String {
    let mut text = String::new();
    for section in SECTIONS {
        text.push_str(section.title);
        text.push_str(":\n");
        for block in section.blocks {
            match block {
                Para(body) => {
                    text.push_str(&indent(body, "  "));
                    text.push('\n');
                }
                Item(term, body) => {
                    text.push_str("  ");
                    text.push_str(term);
                    text.push('\n');
                    text.push_str(&indent(body, "      "));
                    text.push('\n');
                }
                Example(comment, command) => {
                    text.push_str(&indent(comment, "  "));
                    text.push_str("\n      ");
                    text.push_str(command);
                    text.push('\n');
                }
            }
        }
        text.push('\n');
    }
    text.trim_end().to_string()
}

/// Wraps `body` at 90 columns with `prefix` on every line.
fn indent(body: &str, prefix: &str) -> String {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in body.split_whitespace() {
        if !line.is_empty() && prefix.len() + line.len() + 1 + word.len() > 90 {
            lines.push(format!("{prefix}{line}"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(format!("{prefix}{line}"));
    }
    lines.join("\n")
}

/// The sections in roff, for the man page after clap_mangen's own.
pub fn roff() -> String {
    let mut out = String::new();
    for section in SECTIONS {
        out.push_str(&format!(".SH \"{}\"\n", section.title));
        for block in section.blocks {
            match block {
                Para(body) => out.push_str(&format!(".PP\n{}\n", roff_escape(body))),
                Item(term, body) => out.push_str(&format!(
                    ".TP\n\\fB{}\\fR\n{}\n",
                    roff_escape(term),
                    roff_escape(body)
                )),
                Example(comment, command) => out.push_str(&format!(
                    ".PP\n{}\n.PP\n.RS 4\n.nf\n\\fB{}\\fR\n.fi\n.RE\n",
                    roff_escape(comment),
                    roff_escape(command)
                )),
            }
        }
    }
    out
}

/// `code` spans (Markdown-style backticks, which --help shows as they are) in bold, as man
/// pages set literal text. An unpaired backtick is left alone.
pub fn roff_code(roff: &str) -> String {
    let mut out = String::with_capacity(roff.len());
    let mut rest = roff;
    while let Some(start) = rest.find('`') {
        let Some(length) = rest[start + 1..].find('`') else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str("\\fB");
        out.push_str(&rest[start + 1..start + 1 + length]);
        out.push_str("\\fR");
        rest = &rest[start + 2 + length..];
    }
    out.push_str(rest);
    out
}

fn roff_escape(text: &str) -> String {
    let escaped = roff_code(&text.replace('\\', "\\e").replace('-', "\\-"));
    // A line starting with . or ' would be a roff request.
    escaped
        .lines()
        .map(|line| {
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_text_has_every_section() {
        let text = help_text();
        for section in SECTIONS {
            assert!(text.contains(section.title));
        }
        assert!(text.lines().all(|l| l.len() <= 100), "{text}");
    }

    #[test]
    fn roff_escapes_dashes_and_leading_dots() {
        assert_eq!(roff_escape("--flag"), "\\-\\-flag");
        assert_eq!(roff_escape(".hidden"), "\\&.hidden");
    }

    #[test]
    fn roff_sets_code_in_bold() {
        assert_eq!(
            roff_code("use `a` or `b c`, not `"),
            "use \\fBa\\fR or \\fBb c\\fR, not `"
        );
    }
}
