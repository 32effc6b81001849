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
use clap::{Args, Parser, ValueEnum, ValueHint};

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
    // The flags in one struct per --help heading, in --help's order: clap's derive builds a
    // struct's flags in one function whose stack frame holds every flag's builder at once,
    // 58 KiB for all 41 flags in one struct, touched (14 page faults, 56 KiB of VmRSS for
    // good) at every start. Flattened, the frames of the parts overlap: 27 KiB.
    #[command(flatten)]
    pub sockets: SocketArgs,

    #[command(flatten)]
    pub stopping: StoppingArgs,

    #[command(flatten)]
    pub restarts: RestartArgs,

    #[command(flatten)]
    pub workers: WorkerArgs,

    #[command(flatten)]
    pub health: HealthArgs,

    #[command(flatten)]
    pub development: DevelopmentArgs,

    #[command(flatten)]
    pub process: ProcessArgs,

    #[command(flatten)]
    pub logging: LoggingArgs,

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

/// Flags under "Sockets" in --help.
#[derive(Args, Debug)]
pub struct SocketArgs {
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
}

/// Flags under "Signals and stopping" in --help.
#[derive(Args, Debug)]
pub struct StoppingArgs {
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
    /// Ctrl-C reaches the command directly and only its main process is ever signalled. (With
    /// --user the command always gets a session, and so a group, of its own.)
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
}

/// Flags under "Restarts" in --help.
#[derive(Args, Debug)]
pub struct RestartArgs {
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
    /// stream socket graceful-run passed, even if it sends READY=1 earlier; on a TCP socket
    /// every generation shares (`--handover shared`), a process that holds it and a
    /// connection accepted from it counts too (busy pre-fork workers never wait). `notify`: only
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

    /// How a restart hands TCP connections from one generation to the next: `steer` or `shared`
    ///
    /// `steer` (the default): each generation gets a listening socket of its own for every TCP
    /// `-l`, all bound to the same address in one SO_REUSEPORT group that graceful-run alone
    /// creates, and a small BPF program on the group decides which socket each new connection
    /// joins: the serving generation's while a new one starts, the new one's from the moment
    /// it is ready. The old generation is not signalled yet: it drains (see
    /// --drain-timeout), then gets its stop signal. So a server that keeps accepting after
    /// its stop signal and closes what it accepted, or that exits mid-request, loses
    /// nothing. `ss -ltn` shows one listener per generation during a handover. `shared`:
    /// every generation accepts from the one socket graceful-run holds, and the old one is
    /// signalled as soon as the new one is ready. Unix sockets, UDP and `-l ...,reuseport`
    /// always use the shared socket; where the kernel (Linux before 4.6) or a seccomp filter
    /// refuses steering, graceful-run says so once and uses the shared socket. A program of
    /// the same user that sets SO_REUSEPORT can join the group: graceful-run warns when it
    /// sees one, and cannot keep it out (run the server under --user).
    #[arg(
        long,
        value_name = "MODE",
        value_enum,
        default_value = "steer",
        env = "GRACEFUL_RUN_HANDOVER",
        help_heading = "Restarts"
    )]
    pub handover: Handover,

    /// Longest wait for an old generation to finish its requests before its stop signal
    ///
    /// After a handover (--handover steer), the old generation keeps running: it accepts the
    /// connections still queued on its own listener, and graceful-run watches, from outside,
    /// until that queue is empty, no handshake toward it is still in flight, and none of its
    /// connections is busy (unread or unsent bytes, a request waiting for its response,
    /// accepted moments ago with nothing received yet, or data sent less than 500 ms ago, as
    /// between the pieces of a streamed response; an idle keep-alive connection is not busy,
    /// nor is one whose client keeps sending requests during the drain, once seen between a
    /// response and its next request: it would never go idle), at most this long. Then the stop signal, --stop-timeout and SIGKILL follow as
    /// usual. A stop waits the same way after --drain-delay, for at most half of
    /// --stop-timeout (and at most this long): that wait counts against --stop-timeout, so
    /// that the whole stop still fits in --drain-delay + --stop-timeout and a server still
    /// has the rest of the timeout after its stop signal. `0` signals at once.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        value_parser = parse_duration,
        value_hint = ValueHint::Other,
        env = "GRACEFUL_RUN_DRAIN_TIMEOUT",
        help_heading = "Restarts"
    )]
    pub drain_timeout: Duration,

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
    /// Only a generation that fails before it serves waits: one that was ready for 1 second
    /// (or for this delay, if shorter) is restarted at once when it exits, and the delay
    /// returns to this value.
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
    /// The count returns to zero once a generation has been ready for 10 seconds.
    #[arg(
        long,
        value_name = "N",
        env = "GRACEFUL_RUN_MAX_RESTARTS",
        value_hint = ValueHint::Other,
        help_heading = "Restarts"
    )]
    pub max_restarts: Option<u32>,
}

/// Flags under "Workers" in --help.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// How many copies of the command serve side by side, or `auto` for one per usable CPU [default: 1]
    ///
    /// Each worker runs the command on the same sockets with its own LISTEN_PID and
    /// NOTIFY_SOCKET, and GRACEFUL_RUN_WORKER=i (0 to N-1) and GRACEFUL_RUN_GENERATION. A restart
    /// replaces them one by one (see --max-surge and --max-unavailable); a worker that crashes
    /// is replaced alone, as --restart-policy and --max-restarts say for each worker (with the
    /// default `never`, the others serve on without it). `ctl scale N` and SIGTTIN/SIGTTOU
    /// change the count at run time. A stop drains and stops all of them within the one
    /// budget; graceful-run then exits with the status of the first worker, in index order,
    /// that did not exit 0 (its code, or its signal), else 0. `auto` counts, once at start,
    /// the CPUs graceful-run may run on: its affinity mask (taskset, cpuset) and its cgroup's
    /// CPU quota (cpu.max, or cpu.cfs_quota_us under cgroup v1), rounded up, at least 1. At
    /// most 1024.
    #[arg(
        short = 'w',
        long,
        value_name = "N|auto",
        value_parser = Offering::new(parse_workers, || vec!["auto"]),
        hide_possible_values = true,
        allow_hyphen_values = true,
        env = "GRACEFUL_RUN_WORKERS",
        help_heading = "Workers"
    )]
    pub workers: Option<WorkerCount>,

    /// During a rolling restart, how many workers may run beyond --workers [default: 1]
    ///
    /// As Kubernetes' maxSurge: with the default 1, one new worker starts, and an old one is
    /// retired once it is ready. At most 1024. --max-surge 0 needs --max-unavailable above 0.
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_worker_delta,
        value_hint = ValueHint::Other,
        allow_hyphen_values = true,
        env = "GRACEFUL_RUN_MAX_SURGE",
        help_heading = "Workers"
    )]
    pub max_surge: Option<u32>,

    /// During a rolling restart, how many workers may be missing from --workers [default: 0]
    ///
    /// As Kubernetes' maxUnavailable: ready workers never fall below --workers minus this
    /// (never below 0). The default 0 keeps every worker serving throughout; a larger value
    /// retires an old worker before its replacement is ready, for servers that cannot run one
    /// more copy at once (memory, a license). At most 1024.
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_worker_delta,
        value_hint = ValueHint::Other,
        allow_hyphen_values = true,
        env = "GRACEFUL_RUN_MAX_UNAVAILABLE",
        help_heading = "Workers"
    )]
    pub max_unavailable: Option<u32>,
}

/// Flags under "Health and resources" in --help.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Check the serving generation's health by running CMD with `sh -c`: exit status 0 is healthy
    ///
    /// As Docker's HEALTHCHECK CMD: every --health-interval, killed after --health-timeout;
    /// after --health-retries failures in a row the generation is replaced, zero-downtime, by
    /// a new one (the unhealthy one keeps serving if the new one fails). Cannot be combined
    /// with --health-http.
    #[arg(
        long,
        value_name = "CMD",
        env = "GRACEFUL_RUN_HEALTH_CMD",
        value_hint = ValueHint::CommandString,
        help_heading = "Health and resources"
    )]
    pub health_cmd: Option<String>,

    /// Check the serving generation's health with an HTTP `GET PATH` on the first stream --listen socket: 2xx and 3xx are healthy
    ///
    /// graceful-run sends the request itself (no shell or curl needed in the image) with
    /// `Connection: close`, and reads at most 16 KiB of the response head. PATH starts with `/`
    /// and holds no spaces or control characters (percent-encode them). Timing and retries as
    /// for --health-cmd.
    #[arg(
        long,
        value_name = "PATH",
        env = "GRACEFUL_RUN_HEALTH_HTTP",
        value_parser = parse_http_path,
        value_hint = ValueHint::Other,
        help_heading = "Health and resources"
    )]
    pub health_http: Option<String>,

    /// Time between two health checks [default: 30s, as Docker's]
    ///
    /// Counted from the end of one check to the start of the next. At least 1ms.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_positive_duration,
        value_hint = ValueHint::Other,
        allow_hyphen_values = true,
        env = "GRACEFUL_RUN_HEALTH_INTERVAL",
        help_heading = "Health and resources"
    )]
    pub health_interval: Option<Duration>,

    /// Longest time one health check may take; a check still running then has failed (and a --health-cmd is killed) [default: 30s]
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_positive_duration,
        value_hint = ValueHint::Other,
        allow_hyphen_values = true,
        env = "GRACEFUL_RUN_HEALTH_TIMEOUT",
        help_heading = "Health and resources"
    )]
    pub health_timeout: Option<Duration>,

    /// Failed health checks in a row that make a generation unhealthy (at least 1) [default: 3]
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_retries,
        value_hint = ValueHint::Other,
        allow_hyphen_values = true,
        env = "GRACEFUL_RUN_HEALTH_RETRIES",
        help_heading = "Health and resources"
    )]
    pub health_retries: Option<u32>,

    /// Time after a generation is ready during which failed health checks do not count [default: 0s]
    ///
    /// As Docker's start period: a check that succeeds ends it early.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_nonnegative_duration,
        value_hint = ValueHint::Other,
        allow_hyphen_values = true,
        env = "GRACEFUL_RUN_HEALTH_START_PERIOD",
        help_heading = "Health and resources"
    )]
    pub health_start_period: Option<Duration>,

    /// Replace a generation that sends no `WATCHDOG=1` for longer than DURATION, as systemd's WatchdogSec
    ///
    /// Each generation receives WATCHDOG_USEC and WATCHDOG_PID (its main process) and pings with
    /// sd_notify(3) `WATCHDOG=1` on its NOTIFY_SOCKET, typically every half of it. A hung one is
    /// replaced, new generation first, and killed once the new one is ready or at
    /// --stop-timeout. EXTEND_TIMEOUT_USEC from a starting generation extends its
    /// --ready-timeout. At least 1ms.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_positive_duration,
        value_hint = ValueHint::Other,
        allow_hyphen_values = true,
        env = "GRACEFUL_RUN_WATCHDOG",
        help_heading = "Health and resources"
    )]
    pub watchdog: Option<Duration>,

    /// Replace a generation whose memory grows past SIZE, e.g. `512M` or `1.5G`
    ///
    /// Memory is the proportional set size (PSS) summed over all of the generation's processes,
    /// so pages that pre-fork workers share are counted once, not once per worker (as RSS
    /// would); it is sampled once a second, only when this flag is given. With --workers, each
    /// worker is measured and replaced on its own. Units K, M, G and T
    /// are powers of 1024 (`KiB`, `MB` and lower case are read the same); a bare number counts
    /// bytes. At least 1M.
    #[arg(
        long,
        value_name = "SIZE",
        value_parser = parse_memory_size,
        value_hint = ValueHint::Other,
        allow_hyphen_values = true,
        env = "GRACEFUL_RUN_MAX_MEMORY",
        help_heading = "Health and resources"
    )]
    pub max_memory: Option<MemorySize>,

    /// Replace each generation after it has served for about DURATION (at least 1s)
    ///
    /// Each generation, and each worker, draws its own lifetime uniformly between 90% and 100%
    /// of DURATION, so copies started together are not all replaced together and none lives
    /// longer than DURATION (as gunicorn's max_requests_jitter, by time).
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_lifetime,
        value_hint = ValueHint::Other,
        allow_hyphen_values = true,
        env = "GRACEFUL_RUN_MAX_LIFETIME",
        help_heading = "Health and resources"
    )]
    pub max_lifetime: Option<Duration>,
}

/// Flags under "Development" in --help.
#[derive(Args, Debug)]
pub struct DevelopmentArgs {
    /// Development mode: replace the generation when a file under PATH changes (repeatable)
    ///
    /// PATH is a directory, watched with everything below it, or a file; it must exist.
    /// Changes are debounced (one replacement per burst of saves); paths that .gitignore or
    /// .ignore files exclude, and hidden files and directories (a name starting with `.`), are
    /// not watched. With --build, the build runs first. In GRACEFUL_RUN_WATCH, separate several
    /// paths with spaces.
    #[arg(
        long,
        value_name = "PATH",
        env = "GRACEFUL_RUN_WATCH",
        value_hint = ValueHint::AnyPath,
        help_heading = "Development"
    )]
    pub watch: Vec<String>,

    /// With --watch: run CMD with `sh -c` after each burst of changes, and replace the generation only if it exits 0
    ///
    /// The old generation serves while the build runs; a failed build, or a new generation
    /// that does not become ready, leaves it serving, and the build's output is printed.
    /// Changes during a build lead to one more build after it.
    #[arg(
        long,
        value_name = "CMD",
        env = "GRACEFUL_RUN_BUILD",
        value_hint = ValueHint::CommandString,
        help_heading = "Development"
    )]
    pub build: Option<String>,
}

/// Flags under "Process" in --help.
#[derive(Args, Debug)]
pub struct ProcessArgs {
    /// Run the command as USER, and GROUP if given (names or numbers)
    ///
    /// The sockets are opened first, so ports below 1024 work; every generation then runs
    /// with the user's ids and supplementary groups, and HOME, USER and LOGNAME set from the
    /// password database, in a session of its own: without a controlling terminal, so that it
    /// cannot type into the terminal of whoever started graceful-run (Ctrl-C still reaches it,
    /// forwarded). graceful-run itself keeps running as the invoking user (it must, to start
    /// each new generation as USER).
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
}

/// Flags under "Logging" in --help.
#[derive(Args, Debug)]
pub struct LoggingArgs {
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
}

pub use crate::policy::{Handover, KillMode, LogFormat, Ready, RestartPolicy};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compat {
    /// Server::Starter's SERVER_STARTER_PORT and SERVER_STARTER_GENERATION
    ServerStarter,
    /// einhorn's EINHORN_FD_COUNT, EINHORN_FD_<i> and EINHORN_FDS
    Einhorn,
}

/// A signal, or none (for `--restart-signal none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalSignal(pub Option<Signal>);

/// `--workers`: a count, or `auto`, which config.rs resolves once at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerCount {
    Count(u32),
    Auto,
}

/// The most workers (`--workers`), and the largest `--max-surge` and `--max-unavailable`:
/// far beyond any machine's useful count of one server's copies, and low enough that a typo
/// (`-w 40000`) is refused instead of forking the machine to a halt.
pub const MAX_WORKERS: u32 = 1024;

// The defaults of the flags above that have one. They are applied in config.rs, not through
// clap's `default_value`: clap parses every default value at every start, whether the flag
// is used or not, about 8,600 instructions each, and these flags must cost nothing when they
// are not given. The help texts state them.
pub const DEFAULT_WORKERS: u32 = 1;
pub const DEFAULT_MAX_SURGE: u32 = 1;
pub const DEFAULT_MAX_UNAVAILABLE: u32 = 0;
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HEALTH_RETRIES: u32 = 3;
pub const DEFAULT_HEALTH_START_PERIOD: Duration = Duration::ZERO;

/// A number of bytes (`--max-memory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemorySize(pub u64);

/// The smallest `--max-memory`: no server fits in less, and a smaller value is nearly always a
/// bare number meant as megabytes (`512`).
pub const MIN_MEMORY: MemorySize = MemorySize(1 << 20);

impl std::fmt::Display for MemorySize {
    /// In the largest unit that divides it exactly: `512M`, `1536M`, `1G`, `1048577` (bytes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.0;
        for (unit, size) in [
            ("T", 1u64 << 40),
            ("G", 1 << 30),
            ("M", 1 << 20),
            ("K", 1 << 10),
        ] {
            if bytes >= size && bytes.is_multiple_of(size) {
                return write!(f, "{}{unit}", bytes / size);
            }
        }
        write!(f, "{bytes}")
    }
}

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
    if text.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
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

/// The smallest duration of the health and watchdog flags, as Docker's health check minimum:
/// a period of zero would spin, and below a millisecond WATCHDOG_USEC rounds to 0, which
/// sd_watchdog_enabled(3) reads as "no watchdog".
pub const MIN_PERIOD: Duration = Duration::from_millis(1);

/// A duration of at least [`MIN_PERIOD`] (`--health-interval`, `--health-timeout`,
/// `--watchdog`).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration.is_zero() => Err("must be more than 0".into()),
        duration if duration < MIN_PERIOD => Err("must be at least 1ms".into()),
        duration => Ok(duration),
    }
}

/// A duration that may be 0 (`--health-start-period`); [`parse_duration`] already refuses a
/// negative one.
fn parse_nonnegative_duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

/// The shortest `--max-lifetime`: a generation needs time to start and become ready, and a
/// lifetime below a second would only replace generations in a storm.
pub const MIN_LIFETIME: Duration = Duration::from_secs(1);

fn parse_lifetime(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration.is_zero() => Err("must be more than 0".into()),
        duration if duration < MIN_LIFETIME => Err(
            "must be at least 1s: each generation needs time to start before it is replaced".into(),
        ),
        duration => Ok(duration),
    }
}

/// A whole number in `min..=max`, for the count flags; `what` names the count in errors.
fn parse_count(text: &str, min: u32, max: u32, what: &str) -> Result<u32, String> {
    let text = text.trim();
    if text.starts_with('-') && text.len() > 1 {
        return Err(format!("{what} cannot be negative"));
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a whole number from {min} to {max}"));
    }
    match text.parse::<u64>() {
        Ok(n) if n < u64::from(min) => Err(format!("{what} must be at least {min}")),
        Ok(n) if n <= u64::from(max) => Ok(n as u32),
        _ => Err(format!("{what} must be at most {max}")),
    }
}

fn parse_workers(text: &str) -> Result<WorkerCount, String> {
    if text.trim().eq_ignore_ascii_case("auto") {
        return Ok(WorkerCount::Auto);
    }
    parse_count(text, 1, MAX_WORKERS, "the number of workers")
        .map(WorkerCount::Count)
        .map_err(|why| format!("{why} (or auto)"))
}

fn parse_worker_delta(text: &str) -> Result<u32, String> {
    parse_count(text, 0, MAX_WORKERS, "the number of workers")
}

fn parse_retries(text: &str) -> Result<u32, String> {
    parse_count(text, 1, u32::MAX, "the number of retries")
}

/// The longest `--health-http` PATH: far beyond any health endpoint, short enough that the
/// request line is never what a server refuses.
const MAX_HTTP_PATH: usize = 2048;

/// `--health-http`: an origin-form request target. Only visible ASCII: a space would end the
/// request line, and CR or LF would let the value inject headers or a second request.
fn parse_http_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err("expected a path starting with '/', e.g. /healthz".into());
    }
    if let Some(bad) = text.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{} is not allowed in an HTTP path: percent-encode it (a space is %20)",
            match bad {
                ' ' => "a space".to_string(),
                c if c.is_control() => "a control character".to_string(),
                c => format!("'{c}'"),
            }
        ));
    }
    if text.len() > MAX_HTTP_PATH {
        return Err(format!("longer than {MAX_HTTP_PATH} bytes"));
    }
    Ok(text.to_string())
}

/// `512M`, `1.5G`, `1024K`, `1GiB`, `2gb`, or a bare number of bytes; units are powers of
/// 1024, as systemd's MemoryMax= and `docker run -m` read them. At least [`MIN_MEMORY`].
pub fn parse_memory_size(text: &str) -> Result<MemorySize, String> {
    const FORMS: &str = "expected a size such as 512M or 1.5G";
    let text = text.trim();
    if text.starts_with('-') {
        return Err("a size cannot be negative".into());
    }
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let unit_size: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown unit '{}' (write e.g. 512M or 1.5G; K, M, G and T are powers of 1024)",
                crate::config::escape_controls(unit.trim())
            ));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.len() + fraction.len() == 0 || fraction.contains('.') {
        return Err(FORMS.into());
    }
    let too_large = || "too large".to_string();
    // Integer arithmetic, so that 1.1G is exact to the byte and nothing rounds through floats.
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    let fraction = &fraction[..fraction.len().min(12)];
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| FORMS.to_string())?
    };
    let bytes = whole
        .checked_mul(u128::from(unit_size))
        .and_then(|b| b.checked_add(fraction * u128::from(unit_size) / scale))
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(too_large)?;
    match MemorySize(bytes) {
        MemorySize(0) => Err("must be more than 0".into()),
        size if size < MIN_MEMORY => {
            Err("must be at least 1M (a bare number counts bytes: write e.g. 512M)".into())
        }
        size => Ok(size),
    }
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
and graceful-run's own user may, from graceful-run's own pid namespace (inside its \
container). A program named ctl runs as `graceful-run -- ctl`.


graceful-run notify [--ready] [--reloading] [--stopping] [--status TEXT] [--pid PID] \
[VAR=VALUE...], with notify as the first argument, sends sd_notify messages to $NOTIFY_SOCKET \
as systemd-notify does: a server that cannot send a unix datagram (a shell script, Node.js) \
runs \"graceful-run notify --ready\" to mark its generation ready under --ready notify. Like \
systemd-notify it waits until the message is taken (--no-block: it does not). It exits 0 \
when sent, 1 when NOTIFY_SOCKET is unset, the send fails or the message is not taken within \
5s, 125 for a message over 4096 bytes. \"graceful-run -- notify\" runs a command named notify.";
