//! The command line, as clap sees it: every flag, its environment variable and its help.
//!
//! This is the single source of `--help`, the man page and the shell completions (see
//! `tests/generated_files.rs`), so the texts here are the user documentation. Values that
//! have a type of their own (durations, signals) are parsed here, so clap's error names the
//! flag and the value; repeatable flags whose environment variable holds several values are
//! kept as text and split and parsed in `config.rs`.
//!
//! Every DURATION is bounded by [`MAX_DURATION`] here, at parse time: the supervisor adds
//! durations to `Instant::now()`, which panics on overflow. Flags whose values are words
//! (`--ready`, the signal flags) name those words through [`Offering`], which is how the
//! shell completions offer them instead of file names.

use std::ffi::OsString;
use std::time::Duration;

use clap::builder::{BoolishValueParser, PossibleValue, TypedValueParser};
use clap::{Parser, ValueEnum, ValueHint};

use crate::signal::Signal;

#[derive(Parser, Debug)]
#[command(
    name = "graceful-run",
    version,
    about = "Run a server with graceful stops, zero-downtime restarts and socket activation",
    long_about = LONG_ABOUT,
    after_help = "Exit status: the command's, or 128+N when signal N killed it; 124 when it never became ready; \
                  125 when graceful-run fails, 126 when COMMAND cannot run, 127 when it is not found. See --help for more.",
    max_term_width = 100,
)]
pub struct Cli {
    /// Open a listening socket and pass it to the command (repeatable; fds 3, 4, ... in order)
    ///
    /// SPEC is `PORT` or `:PORT` (every interface, dual-stack), `HOST:PORT`, `[IPV6]:PORT`,
    /// `tcp://HOST:PORT`, `udp://HOST:PORT`, `unix:/PATH`, `unix:///PATH`, any path with a
    /// `/` (e.g. `./app.sock`), or `@NAME` (abstract unix socket). systemfd's `tcp::`,
    /// `http::`, `https::`, `udp::` and `unix::` prefixes work too, where a bare port means
    /// 127.0.0.1 as in systemfd. Options follow after commas: `name=NAME` (LISTEN_FDNAMES),
    /// `backlog=N` (default 4096), `mode=0660` (unix socket file), `reuseport`. Port 0 picks a
    /// free port; every bound address is printed when graceful-run starts. In
    /// GRACEFUL_RUN_LISTEN, separate several specs with spaces.
    #[arg(
        short = 'l',
        long = "listen",
        value_name = "SPEC",
        env = "GRACEFUL_RUN_LISTEN",
        help_heading = "Sockets"
    )]
    pub listen: Vec<String>,

    /// Leave LISTEN_PID out of the command's environment
    ///
    /// For commands that reach the real server through an intermediary (`sh -c`, `npm start`,
    /// `cargo watch`), whose pid differs from the server's. Lenient readers such as Rust's
    /// listenfd accept the sockets without it; libsystemd does not.
    #[arg(long, env = "GRACEFUL_RUN_NO_LISTEN_PID", value_parser = BoolishValueParser::new(), action = clap::ArgAction::SetTrue, help_heading = "Sockets")]
    pub no_listen_pid: bool,

    /// Also describe the sockets in another tool's environment variables (repeatable)
    ///
    /// `server-starter` sets SERVER_STARTER_PORT (`host:port=fd;/path=fd`) and
    /// SERVER_STARTER_GENERATION, as Server::Starter's start_server does. `einhorn` sets
    /// EINHORN_FD_COUNT, EINHORN_FD_<i>, EINHORN_FDS and EINHORN_MASTER_PID. LISTEN_FDS is
    /// always set as well.
    #[arg(
        long,
        value_name = "PROTOCOL",
        value_enum,
        value_delimiter = ',',
        env = "GRACEFUL_RUN_COMPAT",
        help_heading = "Sockets"
    )]
    pub compat: Vec<Compat>,

    /// Translate a signal passed to the command (repeatable); `FROM:` drops it
    ///
    /// E.g. `--map-signal TERM:QUIT` for servers such as nginx whose graceful stop is QUIT.
    /// Signals are accepted as `TERM`, `SIGTERM`, `sigterm` or `15` everywhere. In
    /// GRACEFUL_RUN_MAP_SIGNAL, separate several rules with spaces.
    #[arg(
        long,
        value_name = "FROM:TO",
        env = "GRACEFUL_RUN_MAP_SIGNAL",
        value_parser = Offering::new(keep_text, signal_rule_words),
        hide_possible_values = true,
        help_heading = "Signals and stopping"
    )]
    pub map_signal: Vec<String>,

    /// The signal the command receives when graceful-run is asked to stop [default: the signal received, after --map-signal]
    ///
    /// graceful-run stops on TERM or INT. Old generations retired by a restart receive this
    /// signal too (TERM, after --map-signal, when it is not given).
    #[arg(
        long,
        value_name = "SIGNAL",
        env = "GRACEFUL_RUN_STOP_SIGNAL",
        value_parser = Offering::new(str::parse::<Signal>, signal_words),
        hide_possible_values = true,
        help_heading = "Signals and stopping"
    )]
    pub stop_signal: Option<Signal>,

    /// How long a stopping command may take before it is killed with SIGKILL
    ///
    /// After the stop signal graceful-run sends SIGCONT (so a stopped process can act on it),
    /// waits up to this long, then sends SIGKILL to the command's whole process group. A second
    /// TERM or INT during the stop kills at once. Durations are written `500ms`, `30s`,
    /// `1m30s`, or as a bare number of seconds (`1.5`); every duration flag accepts at most
    /// a year (`1y`).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_duration,
        value_hint = ValueHint::Other,
        env = "GRACEFUL_RUN_STOP_TIMEOUT",
        help_heading = "Signals and stopping"
    )]
    pub stop_timeout: Duration,

    /// Keep the command in graceful-run's process group and signal it alone
    ///
    /// By default the command leads a process group of its own, so that SIGKILL at the stop
    /// timeout reaches every process it started (see --kill-mode). Without one, the terminal's
    /// Ctrl-C reaches the command directly and only its main process is ever signalled.
    #[arg(long, env = "GRACEFUL_RUN_NO_PROCESS_GROUP", value_parser = BoolishValueParser::new(), action = clap::ArgAction::SetTrue, help_heading = "Signals and stopping")]
    pub no_process_group: bool,

    /// Who receives forwarded signals and the stop signal: `mixed` or `group`
    ///
    /// `mixed` (the default, as systemd's KillMode=mixed, Docker and tini): the command's main
    /// process receives them and passes them on to its workers as it sees fit, SIGKILL at the
    /// stop timeout goes to its whole process group, and processes left in the group once the
    /// main process has exited get the stop signal, then SIGKILL. `group`: every signal goes to
    /// the whole process group, for commands that do not pass signals on, such as a shell
    /// pipeline. With --no-process-group only the main process is ever signalled.
    #[arg(
        long,
        value_name = "MODE",
        value_enum,
        default_value = "mixed",
        env = "GRACEFUL_RUN_KILL_MODE",
        help_heading = "Signals and stopping"
    )]
    pub kill_mode: KillMode,

    /// Keep serving this long after a stop request, before the stop signal
    ///
    /// Lets load balancers and Kubernetes endpoints stop sending traffic first: they are
    /// updated at the same time as the container receives TERM. A second TERM or INT skips
    /// ahead to SIGKILL.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "0s",
        value_parser = parse_duration,
        value_hint = ValueHint::Other,
        env = "GRACEFUL_RUN_DRAIN_DELAY",
        help_heading = "Signals and stopping"
    )]
    pub drain_delay: Duration,

    /// Run CMD with `sh -c` at a stop request, after the drain delay and before the stop signal
    ///
    /// E.g. deregister from service discovery. Its time counts against --stop-timeout; its
    /// failure is logged, never fatal. MAINPID holds the command's pid.
    #[arg(
        long,
        value_name = "CMD",
        env = "GRACEFUL_RUN_PRE_STOP",
        value_hint = ValueHint::CommandString,
        help_heading = "Signals and stopping"
    )]
    pub pre_stop: Option<String>,

    /// Run CMD with `sh -c` after the command has exited, before graceful-run exits
    ///
    /// E.g. release resources. EXIT_CODE (`exited`, `killed` or `dumped`) and EXIT_STATUS (a
    /// number or a signal name) describe how the command ended, as systemd's ExecStopPost
    /// sees them. Its failure is logged, never fatal.
    #[arg(
        long,
        value_name = "CMD",
        env = "GRACEFUL_RUN_POST_STOP",
        value_hint = ValueHint::CommandString,
        help_heading = "Signals and stopping"
    )]
    pub post_stop: Option<String>,

    /// Longest time a --pre-stop or --post-stop hook may run before it is killed
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_duration,
        value_hint = ValueHint::Other,
        env = "GRACEFUL_RUN_HOOK_TIMEOUT",
        help_heading = "Signals and stopping"
    )]
    pub hook_timeout: Duration,

    /// The signal that starts a zero-downtime restart, or `none`
    ///
    /// A new generation of the command starts on the same sockets; once it is ready (see
    /// --ready) the old one is stopped. graceful-run's own pid never changes. With `none`,
    /// HUP is passed to the command like any other signal.
    #[arg(
        long,
        value_name = "SIGNAL",
        default_value = "HUP",
        value_parser = Offering::new(parse_optional_signal, restart_signal_words),
        hide_possible_values = true,
        env = "GRACEFUL_RUN_RESTART_SIGNAL",
        help_heading = "Restarts"
    )]
    pub restart_signal: OptionalSignal,

    /// When a new generation counts as ready (and the old one is stopped): `auto`, `accepting`, `notify` or a DURATION
    ///
    /// `auto` (the default) suits nearly every server: the generation is ready when it sends
    /// READY=1 (sd_notify(3)) on its own NOTIFY_SOCKET, or else as soon as its processes are
    /// seen waiting for connections on its sockets; nothing needs to change in the server.
    /// `accepting`: ready once its processes wait (in epoll, poll, select or accept) on every
    /// stream socket graceful-run passed, even if it sends READY=1 earlier. `notify`: only
    /// READY=1 counts; for servers that say it once they are truly warmed up, after they
    /// begin accepting. A DURATION (e.g. `2s`): ready if still running after that long; a
    /// last resort for commands that take their sockets in a way graceful-run cannot see.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "auto",
        value_parser = Offering::new(parse_ready, || vec!["auto", "accepting", "notify"]),
        hide_possible_values = true,
        env = "GRACEFUL_RUN_READY",
        help_heading = "Restarts"
    )]
    pub ready: Ready,

    /// How long a new generation may take to become ready before it is stopped
    ///
    /// The old generation keeps serving when a new one fails; the next restart signal tries
    /// again.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        value_parser = parse_duration,
        value_hint = ValueHint::Other,
        env = "GRACEFUL_RUN_READY_TIMEOUT",
        help_heading = "Restarts"
    )]
    pub ready_timeout: Duration,

    /// Restart the command when it exits on its own
    ///
    /// `never` exits with the command's status, as an init should; `on-failure` restarts after
    /// a non-zero exit or a death by signal; `always` restarts after any exit. The sockets stay
    /// open meanwhile, so clients wait instead of being refused.
    #[arg(
        long,
        value_name = "POLICY",
        value_enum,
        default_value = "never",
        env = "GRACEFUL_RUN_RESTART_POLICY",
        help_heading = "Restarts"
    )]
    pub restart_policy: RestartPolicy,

    /// First delay before a crash restart; it doubles after each quick failure, up to 30s
    ///
    /// The delay returns to this value once a generation has stayed up for 10 seconds.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "100ms",
        value_parser = parse_duration,
        value_hint = ValueHint::Other,
        env = "GRACEFUL_RUN_RESTART_DELAY",
        help_heading = "Restarts"
    )]
    pub restart_delay: Duration,

    /// Give up after N crash restarts in a row and exit with the command's status
    ///
    /// The count returns to zero once a generation has stayed up for 10 seconds.
    #[arg(
        long,
        value_name = "N",
        env = "GRACEFUL_RUN_MAX_RESTARTS",
        value_hint = ValueHint::Other,
        help_heading = "Restarts"
    )]
    pub max_restarts: Option<u32>,

    /// Run the command as USER, and GROUP if given (names or numbers)
    ///
    /// The sockets are opened first, so ports below 1024 work; every generation then runs
    /// with the user's ids and supplementary groups, and HOME, USER and LOGNAME set from the
    /// password database. graceful-run itself keeps running as the invoking user (it must, to
    /// start each new generation as USER).
    #[arg(
        long,
        value_name = "USER[:GROUP]",
        env = "GRACEFUL_RUN_USER",
        value_hint = ValueHint::Username,
        help_heading = "Process"
    )]
    pub user: Option<String>,

    /// Write graceful-run's own pid to PATH, so scripts can `kill -HUP "$(cat PATH)"`
    ///
    /// Written atomically and removed at exit. graceful-run refuses to start if PATH names a
    /// live graceful-run.
    #[arg(
        long,
        value_name = "PATH",
        env = "GRACEFUL_RUN_PID_FILE",
        value_hint = ValueHint::FilePath,
        help_heading = "Process"
    )]
    pub pid_file: Option<std::path::PathBuf>,

    /// Do not become a child subreaper
    ///
    /// By default graceful-run, when not PID 1, asks the kernel to make it the parent of
    /// orphaned descendants (PR_SET_CHILD_SUBREAPER), so it can reap them and wait for them.
    #[arg(long, env = "GRACEFUL_RUN_NO_SUBREAPER", value_parser = BoolishValueParser::new(), action = clap::ArgAction::SetTrue, help_heading = "Process")]
    pub no_subreaper: bool,

    /// Exit with TO when the command's status is FROM (repeatable)
    ///
    /// E.g. `143:0` for a JVM that exits 143 after a requested stop. A death by signal N
    /// counts as 128+N. In GRACEFUL_RUN_EXIT_CODE_MAP, separate several rules with spaces.
    #[arg(
        long,
        value_name = "FROM:TO",
        env = "GRACEFUL_RUN_EXIT_CODE_MAP",
        value_hint = ValueHint::Other,
        help_heading = "Process"
    )]
    pub exit_code_map: Vec<String>,

    /// Log only warnings and errors
    #[arg(short, long, env = "GRACEFUL_RUN_QUIET", value_parser = BoolishValueParser::new(), action = clap::ArgAction::SetTrue, conflicts_with = "verbose", help_heading = "Logging")]
    pub quiet: bool,

    /// Also log details: reaped orphans, notify messages, each forwarded signal
    #[arg(short, long, env = "GRACEFUL_RUN_VERBOSE", value_parser = BoolishValueParser::new(), action = clap::ArgAction::SetTrue, help_heading = "Logging")]
    pub verbose: bool,

    /// Format of graceful-run's own log lines on stderr (the command's output is untouched)
    #[arg(
        long,
        value_name = "FORMAT",
        value_enum,
        default_value = "text",
        env = "GRACEFUL_RUN_LOG_FORMAT",
        help_heading = "Logging"
    )]
    pub log_format: LogFormat,

    /// The command to run, and its arguments
    ///
    /// Options end at `--` or at the first word that is not an option, so
    /// `graceful-run nginx -g 'daemon off;'` passes `-g` to nginx. COMMAND is looked up on
    /// PATH afresh for every generation, so a rebuilt binary is what a restart runs.
    #[arg(
        value_name = "COMMAND",
        required = true,
        trailing_var_arg = true,
        value_hint = ValueHint::CommandWithArguments
    )]
    pub command: Vec<OsString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compat {
    /// Server::Starter's SERVER_STARTER_PORT and SERVER_STARTER_GENERATION
    ServerStarter,
    /// einhorn's EINHORN_FD_COUNT, EINHORN_FD_<i> and EINHORN_FDS
    Einhorn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KillMode {
    /// Signals to the main process; SIGKILL to the whole process group
    Mixed,
    /// Every signal to the whole process group
    Group,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestartPolicy {
    /// Exit with the command's status
    Never,
    /// Restart after a non-zero exit or a death by signal
    OnFailure,
    /// Restart after any exit
    Always,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `graceful-run: gen 2 (pid 4242): message`
    Text,
    /// One JSON object per line
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// READY=1 if the generation sends it first, else as [`Ready::Accepting`].
    Auto,
    /// Its processes wait for connections on every stream listener.
    Accepting,
    /// READY=1 on the generation's own NOTIFY_SOCKET.
    Notify,
    /// Still running after this long.
    After(Duration),
}

/// A signal, or none (for `--restart-signal none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalSignal(pub Option<Signal>);

/// The longest duration any flag accepts: one year (humantime's `1y`). Larger values would
/// overflow `Instant + Duration` (and abort) once added to the clock, and no timeout of a
/// supervised server is meaningfully longer.
pub const MAX_DURATION: Duration = Duration::from_secs(31_557_600);

/// What every duration flag accepts, for its error line.
const DURATION_FORMS: &str = "expected a duration such as 500ms, 30s, 1m30s or 1.5 (seconds)";

/// humantime durations (`500ms`, `1m30s`), and a bare number as seconds with an optional
/// fraction (`1.5`), as `docker stop -t` and `sleep` read it; at most [`MAX_DURATION`]. Errors
/// are one short line: humantime's own list every unit it knows.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match parse_seconds(text) {
        Some(seconds) => seconds,
        None => match humantime::parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(humantime::DurationError::NumberOverflow) => None,
            Err(humantime::DurationError::UnknownUnit { unit, .. }) => {
                return Err(format!(
                    "unknown unit '{}' (write e.g. 500ms, 30s, 1m30s or 1.5)",
                    crate::config::escape_controls(&unit)
                ));
            }
            Err(_) => return Err(DURATION_FORMS.into()),
        },
    };
    match duration {
        Some(duration) if duration <= MAX_DURATION => Ok(duration),
        _ => Err("longer than the maximum, 1y (365.25 days)".into()),
    }
}

/// A bare decimal number of seconds (`30`, `1.5`, `.25`): `Some(None)` when it is too long to
/// represent, `None` when `text` is not such a number.
fn parse_seconds(text: &str) -> Option<Option<Duration>> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.len() + fraction.len() == 0 || !digits(whole) || !digits(fraction) {
        return None;
    }
    // More than 12 digits of seconds is far beyond MAX_DURATION: say "too long" without
    // risking an overflow in the arithmetic below.
    if whole.trim_start_matches('0').len() > 12 {
        return Some(None);
    }
    let seconds: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    // Nanoseconds: the first nine digits of the fraction, padded with zeros.
    let nanos = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0u32, |n, digit| n * 10 + u32::from(digit - b'0'));
    Some(Some(Duration::new(seconds, nanos)))
}

fn parse_optional_signal(text: &str) -> Result<OptionalSignal, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(OptionalSignal(None));
    }
    let signal: Signal = text.parse()?;
    match signal {
        s if !s.is_catchable() => Err(format!("{s} cannot be caught")),
        Signal::TERM | Signal::INT => Err("TERM and INT stop graceful-run".into()),
        Signal::CHLD => Err("graceful-run needs SIGCHLD to learn when processes exit".into()),
        s => Ok(OptionalSignal(Some(s))),
    }
}

fn parse_ready(text: &str) -> Result<Ready, String> {
    const MODES: [(&str, Ready); 3] = [
        ("auto", Ready::Auto),
        ("accepting", Ready::Accepting),
        ("notify", Ready::Notify),
    ];
    let trimmed = text.trim();
    if let Some((_, mode)) = MODES
        .iter()
        .find(|(name, _)| trimmed.eq_ignore_ascii_case(name))
    {
        return Ok(*mode);
    }
    if let Ok(duration) = parse_duration(trimmed) {
        return Ok(Ready::After(duration));
    }
    // A word close to a mode is a typo of it; anything else was meant as a duration.
    let lower = trimmed.to_ascii_lowercase();
    if let Some((name, _)) = MODES
        .iter()
        .find(|(name, _)| strsim::damerau_levenshtein(&lower, name) <= 2)
    {
        return Err(format!(
            "expected auto, accepting, notify or a duration such as 2s (did you mean {name}?)"
        ));
    }
    match parse_duration(trimmed) {
        Err(why) if trimmed.starts_with(|c: char| c.is_ascii_digit() || c == '.') => Err(format!(
            "expected auto, accepting, notify or a duration: {why}"
        )),
        _ => Err("expected auto, accepting, notify or a duration such as 2s".into()),
    }
}

/// A parser function, and the words shell completion offers for its flag (which a plain
/// function parser cannot tell clap_complete, which then offers file names).
#[derive(Clone)]
pub struct Offering<T> {
    parse: fn(&str) -> Result<T, String>,
    words: fn() -> Vec<&'static str>,
}

impl<T> Offering<T> {
    fn new(parse: fn(&str) -> Result<T, String>, words: fn() -> Vec<&'static str>) -> Self {
        Offering { parse, words }
    }
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Offering<T> {
    type Value = T;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        // clap's own handling of a function parser: the same errors as before.
        TypedValueParser::parse_ref(&self.parse, command, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new((self.words)().into_iter().map(PossibleValue::new)))
    }
}

fn keep_text(text: &str) -> Result<String, String> {
    Ok(text.to_string())
}

/// Every catchable signal by name, for completion.
fn signal_words() -> Vec<&'static str> {
    Signal::all()
        .filter(|s| s.is_catchable())
        .map(Signal::short_name)
        .collect()
}

fn restart_signal_words() -> Vec<&'static str> {
    let mut words = vec!["none"];
    words.extend(
        Signal::all()
            .filter(|&s| parse_optional_signal(s.short_name()).is_ok())
            .map(Signal::short_name),
    );
    words
}

/// The translations servers commonly need, for completion: graceful stop on QUIT (nginx,
/// Starman, hypercorn) or WINCH (Apache httpd), and the reload signals of unicorn, puma and
/// Server::Starter-era servers.
fn signal_rule_words() -> Vec<&'static str> {
    vec![
        "TERM:QUIT",
        "TERM:WINCH",
        "TERM:INT",
        "INT:TERM",
        "INT:QUIT",
        "QUIT:TERM",
        "HUP:USR2",
        "USR2:HUP",
        "WINCH:",
        "URG:",
    ]
}

/// The clap command with everything `--help` shows, for `--help`, the man page and the
/// completions.
pub fn command() -> clap::Command {
    parsing_command().after_long_help(crate::doc::help_text())
}

/// The clap command without the reference sections after the flags: wrapping them costs
/// more than the rest of startup together, and only `--help` shows them.
pub fn parsing_command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

const LONG_ABOUT: &str = "\
Run a server with graceful stops, zero-downtime restarts and socket activation.

graceful-run opens the listening sockets itself and passes them to COMMAND by the systemd \
socket-activation protocol (fds from 3, LISTEN_FDS, LISTEN_FDNAMES, and LISTEN_PID set to the \
command's own pid), forwards signals to it, stops it gracefully (stop signal, timeout, \
SIGKILL), and on a restart signal starts a new generation on the same sockets and stops the \
old one once the new one is ready: no connection is refused, and graceful-run's pid never \
changes. As PID 1 in a container it reaps zombies and handles every signal itself.

`graceful-run ctl [--pid PID | --pid-file PATH] status [--json] | restart [--wait] | stop \
[--wait]` talks to a running graceful-run (from a deploy script, another shell, or `docker exec \
C graceful-run ctl --pid 1 ...`): `restart --wait` exits 0 once the new generation took over, \
1 with the reason when it failed (the old one keeps serving), 2 at its --timeout. Only root \
and graceful-run's own user may. A program named ctl runs as `graceful-run -- ctl`.


graceful-run notify [--ready] [--reloading] [--stopping] [--status TEXT] [--pid PID] \
[VAR=VALUE...], with notify as the first argument, sends sd_notify messages to $NOTIFY_SOCKET \
as systemd-notify does: a server that cannot send a unix datagram (a shell script, Node.js) \
runs \"graceful-run notify --ready\" to mark its generation ready under --ready notify. It \
exits 0 when sent, 1 when NOTIFY_SOCKET is unset or the send fails. \"graceful-run -- notify\" \
runs a command named notify.";
