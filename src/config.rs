//! From the command line and GRACEFUL_RUN_* variables to a validated [`Config`], with no side
//! effect: nothing is bound, spawned or written until every value has been checked. (Reading
//! the password database for `--user` is a lookup, not a side effect.)
//!
//! Every error is one line that names the flag and the value and says why, and graceful-run
//! exits 125 with it, as `env` and `timeout` do for their own failures. The line also names
//! the GRACEFUL_RUN_* variable when the value came from one (a user who set it long ago in a
//! Dockerfile would otherwise look for the flag on a command line that has none), keeps
//! clap's "a similar argument exists" tip, and escapes control characters in echoed values
//! (a crafted value must not print several lines or drive the terminal).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::FromArgMatches;
use clap::parser::ValueSource;

use crate::cli::{self, Cli, Compat, Handover, LogFormat, MemorySize, WorkerCount};
use crate::exit::{self, ExitCodeMap};
use crate::listen::ListenSpec;
use crate::log::Level;
use crate::policy::Policy;
use crate::signal::{SignalMap, SignalRule};
use crate::spawn::Credentials;

/// Everything graceful-run was asked to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// The flags the supervisor decides by (signals, timings, restart rules).
    pub policy: Policy,
    pub listen: Vec<ListenSpec>,
    pub listen_pid: bool,
    pub compat: Vec<Compat>,
    pub process_group: bool,
    pub kill_mode: cli::KillMode,
    pub pre_stop: Option<String>,
    pub post_stop: Option<String>,
    /// How TCP connections move to a new generation (`--handover`, issue 16).
    pub handover: Handover,
    pub workers: Workers,
    /// Ready workers may fall this far below `workers.count` during a rolling restart (never
    /// below 0). Never 0 together with `max_surge`.
    pub max_unavailable: u32,
    pub health: Option<Health>,
    /// `--max-memory`: the PSS of a generation's (or worker's) processes, summed, that makes it
    /// be replaced; at least 1 MiB.
    pub max_memory: Option<MemorySize>,
    pub max_lifetime: Option<MaxLifetime>,
    pub watch: Option<Watch>,
    pub user: Option<Credentials>,
    pub pid_file: Option<PathBuf>,
    pub subreaper: bool,
    pub exit_codes: ExitCodeMap,
    pub log_level: Level,
    pub log_format: LogFormat,
    pub command: Vec<OsString>,
}

/// `--workers`, resolved at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workers {
    /// 1 to [`cli::MAX_WORKERS`].
    pub count: u32,
    /// With `--workers auto`: what the count was drawn from, for the log.
    pub auto: Option<crate::cpus::Cpus>,
}

/// What a health check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthCheck {
    /// `--health-cmd`: a non-empty command for `sh -c`; exit status 0 is healthy.
    Command(String),
    /// `--health-http`: the path of a `GET` (starts with `/`, visible ASCII only), sent to the
    /// first stream listener; there is one.
    Http(String),
}

/// `--health-cmd` or `--health-http` and their timing, under Docker's HEALTHCHECK names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub check: HealthCheck,
    /// From the end of one check to the start of the next; at least 1ms.
    pub interval: Duration,
    /// The longest one check may take; at least 1ms.
    pub timeout: Duration,
    /// Failures in a row that make a generation unhealthy; at least 1.
    pub retries: u32,
    /// After a generation is ready, failures do not count for this long (a success ends it).
    pub start_period: Duration,
}

/// `--max-lifetime`: each generation (or worker) is replaced after a lifetime drawn from
/// [90%, 100%] of this, so that copies started together are not replaced together, and none
/// outlives the stated maximum. At least 1s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxLifetime(pub Duration);

impl MaxLifetime {
    /// A lifetime for one new generation or worker.
    pub fn draw(self) -> Duration {
        self.jittered(crate::random::number())
    }

    /// The lifetime that `random` (uniform over u64) picks: `max - max * random / 2^64 / 10`.
    pub fn jittered(self, random: u64) -> Duration {
        let max = self.0.as_nanos();
        let jitter = (max / 10 * u128::from(random)) >> 64;
        let nanos = max - jitter;
        Duration::new(
            (nanos / 1_000_000_000) as u64,
            (nanos % 1_000_000_000) as u32,
        )
    }
}

/// `--watch` and `--build`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// Absolute (made so at start, without resolving symlinks), each an existing file or
    /// directory when graceful-run started.
    pub paths: Vec<PathBuf>,
    /// A non-empty command for `sh -c`.
    pub build: Option<String>,
}

/// Why parsing ended without a config.
#[derive(Debug)]
pub enum Stop {
    /// `--help` or `--version`: print this on stdout and exit 0.
    Info(String),
    /// A bad flag or value: print this one line and exit 125.
    Invalid(String),
}

/// Parses `args` (argv including argv[0]) and the environment.
pub fn parse<I, T>(args: I) -> Result<Config, Stop>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let asks_for_help = args
        .iter()
        .skip(1)
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "--help");
    let mut command = if asks_for_help {
        cli::command()
    } else {
        cli::parsing_command()
    };
    // Parsed in place, not on a clone: cloning every flag's definition cost a tenth of
    // startup (150k of 1.5M instructions). clap_stop below still needs the command.
    let matches = match command.try_get_matches_from_mut(&args) {
        Ok(matches) => matches,
        Err(error) => return Err(clap_stop(error, &command, &args)),
    };
    // What `build` needs of the matches besides the values: where each came from and its
    // first text, kept before `from_arg_matches_mut` takes the values out. (Its `&` form
    // clones every match first: 7% of the instructions of a whole start.)
    let given: Vec<(String, bool, Option<String>)> = matches
        .ids()
        .map(|id| {
            let id = id.as_str();
            let text = matches
                .get_raw(id)
                .and_then(|mut values| Some(values.next()?.to_string_lossy().into_owned()));
            let env = matches.value_source(id) == Some(ValueSource::EnvVariable);
            (id.to_string(), env, text)
        })
        .collect();
    let mut matches = matches;
    let parsed = Cli::from_arg_matches_mut(&mut matches)
        .map_err(|error| clap_stop(error, &command, &args))?;
    let find = |id: &str| given.iter().find(|(given, ..)| given == id);
    let from_env = |id: &str| find(id).is_some_and(|(_, env, _)| *env);
    let raw = |id: &str| find(id).and_then(|(.., text)| text.clone());
    build(parsed, &from_env, &raw).map_err(Stop::Invalid)
}

/// clap's error as one line. clap renders several paragraphs (the error, tips, usage, a
/// pointer to --help) and echoes values verbatim, so the line is put together from the
/// error's parts instead: the value escaped, the tips kept, the origin of a value that came
/// from a GRACEFUL_RUN_* variable named.
fn clap_stop(error: clap::Error, command: &clap::Command, args: &[OsString]) -> Stop {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let text = |kind| match error.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        Some(ContextValue::StyledStr(text)) => Some(text.to_string()),
        _ => None,
    };
    let many = |kind| match error.get(kind) {
        Some(ContextValue::Strings(list)) => list.clone(),
        Some(ContextValue::String(one)) => vec![one.clone()],
        Some(ContextValue::StyledStrs(list)) => list.iter().map(ToString::to_string).collect(),
        _ => Vec::new(),
    };
    let message = match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            return Stop::Info(error.render().to_string());
        }
        ErrorKind::MissingRequiredArgument
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return Stop::Invalid(
                "no COMMAND given (usage: graceful-run [OPTIONS] [--] COMMAND [ARGS]...; see --help)"
                    .into(),
            );
        }
        kind @ (ErrorKind::InvalidValue | ErrorKind::ValueValidation) => {
            let (Some(arg), Some(value)) = (
                text(ContextKind::InvalidArg),
                text(ContextKind::InvalidValue),
            ) else {
                return Stop::Invalid(first_paragraph(&error));
            };
            let reason = if kind == ErrorKind::ValueValidation {
                std::error::Error::source(&error).map_or_else(
                    || "not a valid value".to_string(),
                    |source| source.to_string(),
                )
            } else {
                let valid = many(ContextKind::ValidValue).join(", ");
                match text(ContextKind::SuggestedValue) {
                    Some(suggested) => {
                        format!("expected one of {valid} (did you mean {suggested}?)")
                    }
                    None => format!("expected one of {valid}"),
                }
            };
            let origin = env_origin(&error, command, args, &arg);
            format!(
                "invalid value '{value}' for '{arg}'{origin}: {reason}",
                value = escape_controls(&value)
            )
        }
        ErrorKind::UnknownArgument => {
            let arg = text(ContextKind::InvalidArg).unwrap_or_default();
            let tips: Vec<String> = many(ContextKind::SuggestedArg)
                .into_iter()
                .map(|similar| format!("tip: a similar argument exists: '{similar}'"))
                .collect();
            // clap's other tip, "to pass '--x' as a value, use '-- --x'", misleads here:
            // after `--`, '--x' would be the command.
            let mut line = format!("unexpected argument '{}'", escape_controls(&arg));
            if !tips.is_empty() {
                line.push_str(&format!(" ({})", tips.join("; ")));
            }
            line
        }
        _ => first_paragraph(&error),
    };
    Stop::Invalid(format!("{} (see --help)", escape_controls(&message)))
}

/// ` from VARIABLE` when the bad value of `arg` came from its environment variable: the
/// same arguments without any environment parse past it.
fn env_origin(
    error: &clap::Error,
    command: &clap::Command,
    args: &[OsString],
    arg: &str,
) -> String {
    // An unbuilt command cannot display its arguments.
    let mut built = command.clone();
    built.build();
    let Some(variable) = built
        .get_arguments()
        .find(|candidate| candidate.to_string() == arg)
        .and_then(clap::Arg::get_env)
    else {
        return String::new();
    };
    let without_env = command.clone().mut_args(|arg| arg.env(None::<&str>));
    let same_error = match without_env.try_get_matches_from(args) {
        Ok(_) => false,
        Err(other) => {
            other.kind() == error.kind()
                && other
                    .get(clap::error::ContextKind::InvalidArg)
                    .map(ToString::to_string)
                    == Some(arg.to_string())
        }
    };
    if same_error {
        String::new()
    } else {
        format!(" from {}", variable.to_string_lossy())
    }
}

/// clap's first paragraph, on one line, without its `error: ` prefix.
fn first_paragraph(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let paragraph: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = paragraph.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

pub use crate::text::escape_controls;

/// Parses every value of a repeatable flag: from the command line one per flag, from its
/// environment variable separated by whitespace.
fn parse_all<T>(
    raw: &[String],
    from_env: bool,
    flag: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let values: Vec<&str> = if from_env {
        raw.iter().flat_map(|v| v.split_whitespace()).collect()
    } else {
        raw.iter().map(String::as_str).collect()
    };
    let origin = origin(flag, from_env);
    values
        .into_iter()
        .map(|text| parse(text).map_err(|reason| invalid_from(flag, &origin, text, reason)))
        .collect()
}

/// ` from GRACEFUL_RUN_STOP_TIMEOUT` for a value of `flag` (`--stop-timeout <DURATION>`)
/// that came from its variable, whose name is the flag's in capitals, as clap's `env`
/// attributes in cli.rs spell every one; empty for a value from the command line.
fn origin(flag: &str, from_env: bool) -> String {
    if !from_env {
        return String::new();
    }
    let name = flag
        .trim_start_matches('-')
        .split(' ')
        .next()
        .unwrap_or_default();
    format!(
        " from GRACEFUL_RUN_{}",
        name.replace('-', "_").to_ascii_uppercase()
    )
}

/// The one form of every bad-value line; `origin` is [`origin`]'s.
fn invalid_from(flag: &str, origin: &str, value: &str, reason: impl std::fmt::Display) -> String {
    format!(
        "invalid value '{}' for '{flag}'{origin}: {}",
        escape_controls(value),
        escape_controls(&reason.to_string())
    )
}

/// `from_env(id)`: the value of the field `id` came from its GRACEFUL_RUN_* variable;
/// `raw(id)`: its text as given, for errors found after parsing.
fn build(
    cli: Cli,
    from_env: &dyn Fn(&str) -> bool,
    raw: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, String> {
    let listen = parse_all(
        &cli.sockets.listen,
        from_env("listen"),
        "--listen <SPEC>",
        str::parse,
    )?;
    let rules = parse_all(
        &cli.stopping.map_signal,
        from_env("map_signal"),
        "--map-signal <FROM:TO>",
        str::parse::<SignalRule>,
    )?;
    let exit_rules = parse_all(
        &cli.process.exit_code_map,
        from_env("exit_code_map"),
        "--exit-code-map <FROM:TO>",
        exit::parse_exit_code_rule,
    )?;

    let restart_signal = cli.restarts.restart_signal.0;

    for (id, flag, hook) in [
        ("pre_stop", "--pre-stop <CMD>", &cli.stopping.pre_stop),
        ("post_stop", "--post-stop <CMD>", &cli.stopping.post_stop),
        ("health_cmd", "--health-cmd <CMD>", &cli.health.health_cmd),
        ("build", "--build <CMD>", &cli.development.build),
    ] {
        if hook.as_deref().is_some_and(|cmd| cmd.trim().is_empty()) {
            let origin = origin(flag, from_env(id));
            return Err(invalid_from(flag, &origin, "", "the command is empty"));
        }
    }

    if cli.command.first().is_some_and(|c| c.is_empty()) {
        return Err("invalid value '' for '<COMMAND>': the command is empty".into());
    }

    let user = match &cli.process.user {
        Some(spec) => resolve_user(spec).map_err(|reason| {
            let flag = "--user <USER[:GROUP]>";
            invalid_from(flag, &origin(flag, from_env("user")), spec, reason)
        })?,
        None => None,
    };

    if cli.sockets.compat.contains(&Compat::ServerStarter) {
        check_server_starter_paths(&listen, from_env("listen"))?;
    }

    let workers = resolve_workers(
        cli.workers
            .workers
            .unwrap_or(WorkerCount::Count(cli::DEFAULT_WORKERS)),
    );
    let max_surge = cli.workers.max_surge.unwrap_or(cli::DEFAULT_MAX_SURGE);
    let max_unavailable = cli
        .workers
        .max_unavailable
        .unwrap_or(cli::DEFAULT_MAX_UNAVAILABLE);
    if max_surge == 0 && max_unavailable == 0 {
        let flag = "--max-surge <N>";
        return Err(invalid_from(
            flag,
            &origin(flag, from_env("max_surge")),
            "0",
            "with --max-unavailable 0 as well, a rolling restart could neither start a new \
             worker nor retire an old one: give one of them at least 1",
        ));
    }
    let health = health(&cli, &listen, from_env, raw)?;
    let watch = watch(&cli, from_env)?;

    Ok(Config {
        listen,
        policy: Policy {
            signal_map: SignalMap::new(rules),
            stop_signal: cli.stopping.stop_signal,
            stop_timeout: cli.stopping.stop_timeout,
            drain_delay: cli.stopping.drain_delay,
            hook_timeout: cli.stopping.hook_timeout,
            restart_signal,
            ready: cli.restarts.ready,
            ready_timeout: cli.restarts.ready_timeout,
            drain_timeout: cli.restarts.drain_timeout,
            restart_policy: cli.restarts.restart_policy,
            restart_delay: cli.restarts.restart_delay,
            max_restarts: cli.restarts.max_restarts,
            max_surge,
            watchdog: cli.health.watchdog,
        },
        listen_pid: !cli.sockets.no_listen_pid,
        compat: cli.sockets.compat,
        process_group: !cli.stopping.no_process_group,
        kill_mode: cli.stopping.kill_mode,
        pre_stop: cli.stopping.pre_stop,
        post_stop: cli.stopping.post_stop,
        handover: cli.restarts.handover,
        workers,
        max_unavailable,
        health,
        max_memory: cli.health.max_memory,
        max_lifetime: cli.health.max_lifetime.map(MaxLifetime),
        watch,
        user,
        pid_file: cli.process.pid_file,
        subreaper: !cli.process.no_subreaper,
        exit_codes: ExitCodeMap::new(exit_rules),
        log_level: if cli.logging.quiet {
            Level::Warn
        } else if cli.logging.verbose {
            Level::Debug
        } else {
            Level::Info
        },
        log_format: cli.logging.log_format,
        command: cli.command,
    })
}

/// `--workers`: `auto` becomes the CPUs graceful-run may use (read only for `auto`).
fn resolve_workers(count: WorkerCount) -> Workers {
    match count {
        WorkerCount::Count(count) => Workers { count, auto: None },
        WorkerCount::Auto => {
            let cpus = crate::cpus::available();
            Workers {
                count: cpus.count.clamp(1, cli::MAX_WORKERS),
                auto: Some(cpus),
            }
        }
    }
}

/// The health flags: one check at most, tuning only with a check, and `--health-http` only
/// with a stream socket to send its request to.
fn health(
    cli: &Cli,
    listen: &[ListenSpec],
    from_env: &dyn Fn(&str) -> bool,
    raw: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Health>, String> {
    let check = match (&cli.health.health_cmd, &cli.health.health_http) {
        (Some(_), Some(path)) => {
            let flag = "--health-http <PATH>";
            return Err(invalid_from(
                flag,
                &origin(flag, from_env("health_http")),
                path,
                "cannot be combined with --health-cmd: give one health check",
            ));
        }
        (Some(command), None) => Some(HealthCheck::Command(command.clone())),
        (None, Some(path)) => {
            use crate::listen::Address;
            let stream = |spec: &ListenSpec| !matches!(spec.address, Address::Udp(..));
            if !listen.iter().any(stream) {
                let flag = "--health-http <PATH>";
                return Err(invalid_from(
                    flag,
                    &origin(flag, from_env("health_http")),
                    path,
                    "needs a stream socket to send the request to: give --listen with a TCP or \
                     unix socket",
                ));
            }
            Some(HealthCheck::Http(path.clone()))
        }
        (None, None) => None,
    };
    let tuning = [
        ("health_interval", "--health-interval <DURATION>"),
        ("health_timeout", "--health-timeout <DURATION>"),
        ("health_retries", "--health-retries <N>"),
        ("health_start_period", "--health-start-period <DURATION>"),
    ];
    let Some(check) = check else {
        if let Some((id, flag, value)) = tuning
            .into_iter()
            .find_map(|(id, flag)| Some((id, flag, raw(id)?)))
        {
            return Err(invalid_from(
                flag,
                &origin(flag, from_env(id)),
                &value,
                "tunes a health check, and none is given: add --health-cmd or --health-http",
            ));
        }
        return Ok(None);
    };
    let flags = &cli.health;
    Ok(Some(Health {
        check,
        interval: flags
            .health_interval
            .unwrap_or(cli::DEFAULT_HEALTH_INTERVAL),
        timeout: flags.health_timeout.unwrap_or(cli::DEFAULT_HEALTH_TIMEOUT),
        retries: flags.health_retries.unwrap_or(cli::DEFAULT_HEALTH_RETRIES),
        start_period: flags
            .health_start_period
            .unwrap_or(cli::DEFAULT_HEALTH_START_PERIOD),
    }))
}

/// `--watch` paths exist (and are made absolute); `--build` needs `--watch`.
fn watch(cli: &Cli, from_env: &dyn Fn(&str) -> bool) -> Result<Option<Watch>, String> {
    let paths = parse_all(
        &cli.development.watch,
        from_env("watch"),
        "--watch <PATH>",
        watched_path,
    )?;
    if paths.is_empty() {
        if let Some(build) = &cli.development.build {
            let flag = "--build <CMD>";
            return Err(invalid_from(
                flag,
                &origin(flag, from_env("build")),
                build,
                "needs --watch PATH: the build runs when a watched file changes",
            ));
        }
        return Ok(None);
    }
    Ok(Some(Watch {
        paths,
        build: cli.development.build.clone(),
    }))
}

/// An existing file or directory, made absolute against the current directory.
fn watched_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("the path is empty".into());
    }
    let metadata = std::fs::metadata(text).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        _ => e.to_string(),
    })?;
    if !(metadata.is_dir() || metadata.is_file()) {
        return Err("not a file or a directory".into());
    }
    std::path::absolute(text).map_err(|e| e.to_string())
}

/// SERVER_STARTER_PORT is `KEY=FD` pairs joined with `;`, and Server::Starter's readers split
/// on both characters with no escape: a unix socket path (or abstract name) containing either
/// would be read as other sockets or other fds.
fn check_server_starter_paths(listen: &[ListenSpec], from_env: bool) -> Result<(), String> {
    use crate::listen::Address;
    let flag = "--listen <SPEC>";
    for spec in listen {
        let key = match &spec.address {
            Address::Unix(path) => path.as_os_str().as_encoded_bytes(),
            Address::Abstract(name) => name.as_slice(),
            Address::Tcp(..) | Address::Udp(..) => continue,
        };
        if let Some(&bad) = key.iter().find(|&&b| b == b';' || b == b'=') {
            return Err(invalid_from(
                flag,
                &origin(flag, from_env),
                &spec.text,
                format!(
                    "--compat server-starter cannot pass a socket path containing '{}': \
                     SERVER_STARTER_PORT separates sockets with ';' and fds with '=', unescaped",
                    char::from(bad)
                ),
            ));
        }
    }
    Ok(())
}

/// `USER[:GROUP]`, names or numbers, against the password and group databases. Returns None
/// when no switch is needed (the user is graceful-run's own).
fn resolve_user(spec: &str) -> Result<Option<Credentials>, String> {
    use nix::unistd::{Gid, Group, Uid, User, getgrouplist};
    let (user_text, group_text) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    if user_text.is_empty() {
        return Err("empty user name".into());
    }
    let lookup_error =
        |e: nix::errno::Errno| format!("cannot read the user database: {}", e.desc());
    let entry = match user_text.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).map_err(lookup_error)?,
        Err(_) => Some(
            User::from_name(user_text)
                .map_err(lookup_error)?
                .ok_or_else(|| format!("no user named '{user_text}'"))?,
        ),
    };
    let gid = match group_text {
        None | Some("") => match &entry {
            Some(user) => user.gid.as_raw(),
            None => {
                return Err(format!(
                    "uid {user_text} has no entry in the password database; give its group too, e.g. {user_text}:{user_text}"
                ));
            }
        },
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(group)
                .map_err(lookup_error)?
                .ok_or_else(|| format!("no group named '{group}'"))?
                .gid
                .as_raw(),
        },
    };
    let uid = match (&entry, user_text.parse::<u32>()) {
        (Some(user), _) => user.uid.as_raw(),
        (None, Ok(uid)) => uid,
        (None, Err(_)) => unreachable!("a name without an entry was rejected above"),
    };
    // (uid_t)-1 and (gid_t)-1 mean "leave unchanged" to setresuid(2) and setresgid(2): the
    // command would quietly keep graceful-run's identity.
    if uid == u32::MAX {
        return Err(format!(
            "uid {uid} is (uid_t)-1, which setuid(2) takes as \"no change\""
        ));
    }
    if gid == u32::MAX {
        return Err(format!(
            "gid {gid} is (gid_t)-1, which setgid(2) takes as \"no change\""
        ));
    }
    let groups = match &entry {
        Some(user) => {
            let name = std::ffi::CString::new(user.name.as_bytes())
                .map_err(|_| "the user name contains a NUL byte".to_string())?;
            getgrouplist(&name, Gid::from_raw(gid))
                .map_err(|e| format!("cannot list the user's groups: {}", e.desc()))?
                .into_iter()
                .map(Gid::as_raw)
                .collect()
        }
        None => vec![gid],
    };
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        if uid == euid.as_raw() && gid == nix::unistd::getegid().as_raw() {
            return Ok(None);
        }
        return Err(format!(
            "switching users needs root, and graceful-run runs as uid {euid}"
        ));
    }
    Ok(Some(Credentials {
        name: entry
            .as_ref()
            .map_or_else(|| user_text.to_string(), |u| u.name.clone()),
        uid,
        gid,
        groups,
        home: entry.map_or_else(|| PathBuf::from("/"), |u| u.dir),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Ready;
    use crate::signal::Signal;

    fn parse_args(args: &[&str]) -> Result<Config, Stop> {
        parse(std::iter::once("graceful-run").chain(args.iter().copied()))
    }

    fn error(args: &[&str]) -> String {
        match parse_args(args) {
            Err(Stop::Invalid(message)) => message,
            other => panic!("expected an error for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn options_stop_at_the_first_non_option() {
        let config = parse_args(&["-l", "8080", "nginx", "-g", "daemon off;"]).unwrap();
        assert_eq!(config.command, ["nginx", "-g", "daemon off;"]);
        let config = parse_args(&["--", "-h"]).unwrap();
        assert_eq!(config.command, ["-h"]);
    }

    #[test]
    fn defaults() {
        let config = parse_args(&["true"]).unwrap();
        assert_eq!(config.policy.stop_timeout, Duration::from_secs(10));
        assert_eq!(config.policy.restart_signal, Some(Signal::HUP));
        assert_eq!(config.policy.ready, Ready::Auto);
        assert_eq!(config.handover, Handover::Steer);
        assert_eq!(config.policy.drain_timeout, Duration::from_secs(30));
        assert!(config.process_group && config.listen_pid && config.subreaper);
    }

    #[test]
    fn errors_name_the_flag_and_the_value() {
        let message = error(&["--stop-timeout", "soon", "true"]);
        assert!(
            message.contains("--stop-timeout") && message.contains("soon"),
            "{message}"
        );
        let message = error(&["-l", "99999", "true"]);
        assert!(
            message.contains("--listen") && message.contains("99999"),
            "{message}"
        );
        let message = error(&["--map-signal", "TERM", "true"]);
        assert!(
            message.contains("--map-signal") && message.contains("'TERM'"),
            "{message}"
        );
        let message = error(&["--restart-signal", "TERM", "true"]);
        assert!(message.contains("--restart-signal"), "{message}");
        let message = error(&["--user", "no-such-user-xyz", "true"]);
        assert!(
            message.contains("--user") && message.contains("no-such-user-xyz"),
            "{message}"
        );
        for spec in ["4294967295:0", "0:4294967295"] {
            let message = error(&["--user", spec, "true"]);
            assert!(
                message.contains("--user") && message.contains(spec) && message.contains("-1"),
                "{message}"
            );
        }
        let message = error(&["--exit-code-map", "300:0", "true"]);
        assert!(message.contains("--exit-code-map"), "{message}");
        let message = error(&["--bogus", "true"]);
        assert!(message.contains("--bogus"), "{message}");
        assert!(!message.contains('\n'));
        assert!(error(&[]).contains("no COMMAND"));
    }

    #[test]
    fn trigger_and_worker_defaults() {
        let config = parse_args(&["true"]).unwrap();
        assert_eq!(
            config.workers,
            Workers {
                count: 1,
                auto: None
            }
        );
        assert_eq!((config.policy.max_surge, config.max_unavailable), (1, 0));
        assert_eq!(config.health, None);
        assert_eq!(config.policy.watchdog, None);
        assert_eq!(config.max_memory, None);
        assert_eq!(config.max_lifetime, None);
        assert_eq!(config.watch, None);
    }

    #[test]
    fn workers_take_a_count_or_auto() {
        let config = parse_args(&["-w", "4", "--max-surge", "2", "true"]).unwrap();
        assert_eq!(config.workers.count, 4);
        assert_eq!(config.policy.max_surge, 2);
        let config = parse_args(&["--workers", "AUTO", "true"]).unwrap();
        let cpus = config.workers.auto.expect("auto says what it found");
        assert_eq!(config.workers.count, cpus.count);
        assert!(config.workers.count >= 1);
        let config = parse_args(&["--max-surge", "0", "--max-unavailable", "1", "true"]).unwrap();
        assert_eq!((config.policy.max_surge, config.max_unavailable), (0, 1));
        let config = parse_args(&["--workers", "1024", "true"]).unwrap();
        assert_eq!(config.workers.count, cli::MAX_WORKERS);
    }

    #[test]
    fn bad_worker_counts_are_refused() {
        for (args, needle) in [
            (&["-w", "0"][..], "at least 1"),
            (&["-w", "-1"], "cannot be negative"),
            (&["-w", "four"], "whole number"),
            (&["-w", "2.5"], "whole number"),
            (&["-w", "1025"], "at most 1024"),
            (&["-w", "99999999999999999999"], "at most 1024"),
            (&["--max-surge", "-1"], "cannot be negative"),
            (&["--max-surge", "2000"], "at most 1024"),
            (&["--max-unavailable", "x"], "whole number"),
            (&["--max-surge", "0"], "neither start"),
        ] {
            let mut all = args.to_vec();
            all.push("true");
            let message = error(&all);
            let flag = if args[0] == "-w" {
                "--workers"
            } else {
                args[0]
            };
            assert!(
                message.contains(flag) && message.contains(&format!("'{}'", args[1])),
                "{args:?}: {message}"
            );
            assert!(message.contains(needle), "{args:?}: {message}");
        }
    }

    #[test]
    fn health_flags_follow_docker() {
        let config = parse_args(&["--health-cmd", "curl -f localhost", "true"]).unwrap();
        assert_eq!(
            config.health,
            Some(Health {
                check: HealthCheck::Command("curl -f localhost".into()),
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(30),
                retries: 3,
                start_period: Duration::ZERO,
            })
        );
        let config = parse_args(&[
            "-l",
            "127.0.0.1:0",
            "--health-http",
            "/healthz?full=1",
            "--health-interval",
            "5s",
            "--health-timeout",
            "500ms",
            "--health-retries",
            "1",
            "--health-start-period",
            "1m",
            "true",
        ])
        .unwrap();
        let health = config.health.expect("a check is given");
        assert_eq!(health.check, HealthCheck::Http("/healthz?full=1".into()));
        assert_eq!(health.interval, Duration::from_secs(5));
        assert_eq!(health.timeout, Duration::from_millis(500));
        assert_eq!(health.retries, 1);
        assert_eq!(health.start_period, Duration::from_secs(60));
    }

    #[test]
    fn bad_health_flags_are_refused() {
        for (args, flag, needle) in [
            (
                &["--health-cmd", "x", "--health-interval", "0"][..],
                "--health-interval",
                "more than 0",
            ),
            (
                &["--health-cmd", "x", "--health-interval", "-5s"],
                "--health-interval",
                "negative",
            ),
            (
                &["--health-cmd", "x", "--health-timeout", "0s"],
                "--health-timeout",
                "more than 0",
            ),
            (
                &["--health-cmd", "x", "--health-timeout", "10us"],
                "--health-timeout",
                "at least 1ms",
            ),
            (
                &["--health-cmd", "x", "--health-retries", "0"],
                "--health-retries",
                "at least 1",
            ),
            (
                &["--health-cmd", "x", "--health-start-period", "-1s"],
                "--health-start-period",
                "negative",
            ),
            (&["--health-cmd", ""], "--health-cmd", "empty"),
            (
                &["-l", "127.0.0.1:0", "--health-http", "healthz"],
                "--health-http",
                "starting with '/'",
            ),
            (
                &["-l", "127.0.0.1:0", "--health-http", "/a b"],
                "--health-http",
                "a space",
            ),
            (
                &["-l", "127.0.0.1:0", "--health-http", "/a\r\nX: y"],
                "--health-http",
                "control",
            ),
            (
                &["-l", "127.0.0.1:0", "--health-http", "/é"],
                "--health-http",
                "percent-encode",
            ),
            (
                &["--health-http", "/healthz"],
                "--health-http",
                "needs a stream socket",
            ),
            (
                &["-l", "udp://127.0.0.1:0", "--health-http", "/healthz"],
                "--health-http",
                "needs a stream socket",
            ),
            (
                &[
                    "-l",
                    "127.0.0.1:0",
                    "--health-http",
                    "/h",
                    "--health-cmd",
                    "true",
                ],
                "--health-http",
                "cannot be combined",
            ),
            (
                &["--health-interval", "5s"],
                "--health-interval",
                "add --health-cmd",
            ),
            (
                &["--health-retries", "5"],
                "--health-retries",
                "add --health-cmd",
            ),
            (
                &["--health-start-period", "0s"],
                "--health-start-period",
                "add --health-cmd",
            ),
            (
                &["--health-timeout", "1s"],
                "--health-timeout",
                "add --health-cmd",
            ),
        ] {
            let mut all = args.to_vec();
            all.push("true");
            let message = error(&all);
            assert!(message.contains(flag), "{args:?}: {message}");
            assert!(message.contains(needle), "{args:?}: {message}");
            assert!(!message.contains('\n'), "{args:?}: {message}");
        }
    }

    #[test]
    fn resource_triggers_parse() {
        let config = parse_args(&[
            "--watchdog",
            "10s",
            "--max-memory",
            "1.5G",
            "--max-lifetime",
            "1h",
            "true",
        ])
        .unwrap();
        assert_eq!(config.policy.watchdog, Some(Duration::from_secs(10)));
        assert_eq!(config.max_memory, Some(MemorySize(3 << 29)));
        assert_eq!(
            config.max_lifetime,
            Some(MaxLifetime(Duration::from_secs(3600)))
        );
    }

    #[test]
    fn memory_sizes() {
        for (text, bytes) in [
            ("512M", 512u64 << 20),
            ("512m", 512 << 20),
            ("512MiB", 512 << 20),
            ("512 MB", 512 << 20),
            ("1G", 1 << 30),
            ("1.5g", 3 << 29),
            (".5G", 1 << 29),
            ("2048K", 2 << 20),
            ("1T", 1 << 40),
            ("1048576", 1 << 20),
            ("1048576B", 1 << 20),
            ("1.1G", 1_181_116_006),
        ] {
            assert_eq!(
                cli::parse_memory_size(text),
                Ok(MemorySize(bytes)),
                "{text}"
            );
        }
        for (text, needle) in [
            ("10X", "unknown unit 'X'"),
            ("-1M", "negative"),
            ("0", "more than 0"),
            ("0M", "more than 0"),
            ("512", "at least 1M"),
            ("1023K", "at least 1M"),
            ("", "expected a size"),
            ("M", "expected a size"),
            ("1.2.3G", "expected a size"),
            ("99999999999T", "too large"),
            ("18446744073709551616", "too large"),
        ] {
            let why = cli::parse_memory_size(text).expect_err(text);
            assert!(why.contains(needle), "{text}: {why}");
        }
        assert_eq!(MemorySize(512 << 20).to_string(), "512M");
        assert_eq!(MemorySize(3 << 29).to_string(), "1536M");
        assert_eq!(MemorySize((1 << 20) + 1).to_string(), "1048577");
    }

    #[test]
    fn bad_resource_triggers_are_refused() {
        for (args, flag, needle) in [
            (&["--max-memory", "10X"][..], "--max-memory", "unknown unit"),
            (&["--max-memory", "-1M"], "--max-memory", "negative"),
            (&["--max-memory", "0"], "--max-memory", "more than 0"),
            (&["--watchdog", "0"], "--watchdog", "more than 0"),
            (&["--watchdog", "-1s"], "--watchdog", "negative"),
            (&["--max-lifetime", "0s"], "--max-lifetime", "more than 0"),
            (
                &["--max-lifetime", "500ms"],
                "--max-lifetime",
                "at least 1s",
            ),
            (&["--max-lifetime", "-1h"], "--max-lifetime", "negative"),
        ] {
            let mut all = args.to_vec();
            all.push("true");
            let message = error(&all);
            assert!(
                message.contains(flag) && message.contains(&format!("'{}'", args[1])),
                "{args:?}: {message}"
            );
            assert!(message.contains(needle), "{args:?}: {message}");
        }
    }

    #[test]
    fn lifetimes_are_drawn_from_the_last_tenth() {
        let hour = MaxLifetime(Duration::from_secs(3600));
        assert_eq!(hour.jittered(0), Duration::from_secs(3600));
        assert_eq!(hour.jittered(u64::MAX / 2 + 1), Duration::from_secs(3420));
        let shortest = hour.jittered(u64::MAX);
        assert!(
            shortest > Duration::from_secs(3240) && shortest < Duration::from_millis(3_240_001),
            "{shortest:?}"
        );
        let drawn: Vec<Duration> = (0..50).map(|_| hour.draw()).collect();
        assert!(
            drawn
                .iter()
                .all(|d| *d >= Duration::from_secs(3240) && *d <= Duration::from_secs(3600))
        );
        assert!(
            drawn.iter().any(|d| *d != drawn[0]),
            "50 draws are not all equal"
        );
    }

    #[test]
    fn watch_paths_exist_and_build_needs_watch() {
        let dir = std::env::temp_dir().join(format!("gr-config-{}", crate::random::token()));
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("main.go");
        std::fs::write(&file, "package main").unwrap();
        let (d, f) = (dir.display().to_string(), file.display().to_string());
        let config =
            parse_args(&["--watch", &d, "--watch", &f, "--build", "go build", "true"]).unwrap();
        assert_eq!(
            config.watch,
            Some(Watch {
                paths: vec![dir.clone(), file.clone()],
                build: Some("go build".into()),
            })
        );
        // Relative paths are made absolute against the directory graceful-run starts in.
        let config = parse_args(&["--watch", "src", "true"]).unwrap();
        let watch = config.watch.expect("--watch given");
        assert!(watch.paths[0].is_absolute() && watch.paths[0].ends_with("src"));
        assert_eq!(watch.build, None);

        let missing = dir.join("missing").display().to_string();
        for (args, flag, needle) in [
            (&["--watch", &missing][..], "--watch", "no such file"),
            (&["--watch", ""], "--watch", "empty"),
            (
                &["--watch", "/dev/null"],
                "--watch",
                "not a file or a directory",
            ),
            (&["--build", "make"], "--build", "needs --watch"),
            (&["--watch", &d, "--build", " "], "--build", "empty"),
        ] {
            let mut all = args.to_vec();
            all.push("true");
            let message = error(&all);
            assert!(message.contains(flag), "{args:?}: {message}");
            assert!(message.contains(needle), "{args:?}: {message}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations_accept_bare_seconds() {
        assert_eq!(cli::parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(cli::parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(cli::parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(cli::parse_duration("fast").is_err());
    }

    #[test]
    fn bare_seconds_take_a_fraction() {
        assert_eq!(cli::parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(cli::parse_duration(".25"), Ok(Duration::from_millis(250)));
        assert_eq!(cli::parse_duration("2."), Ok(Duration::from_secs(2)));
        assert_eq!(
            cli::parse_duration("0.0000000019"),
            Ok(Duration::from_nanos(1))
        );
        for bad in [".", "1.2.3", "-1", "1,5", ""] {
            assert!(cli::parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_stop_at_a_year() {
        assert_eq!(cli::parse_duration("1y"), Ok(cli::MAX_DURATION));
        assert_eq!(cli::parse_duration("31557600"), Ok(cli::MAX_DURATION));
        for long in [
            "31557601",
            "1y1s",
            "18446744073709551615",
            "99999999999999999999.5",
            "600000000000000000000000ns",
        ] {
            let why = cli::parse_duration(long).expect_err(long);
            assert!(why.contains("maximum"), "{long}: {why}");
        }
    }

    #[test]
    fn handover_and_drain_timeout() {
        let config =
            parse_args(&["--handover", "shared", "--drain-timeout", "1.5", "true"]).unwrap();
        assert_eq!(config.handover, Handover::Shared);
        assert_eq!(config.policy.drain_timeout, Duration::from_millis(1500));
        let config = parse_args(&["--drain-timeout", "0", "true"]).unwrap();
        assert_eq!(config.policy.drain_timeout, Duration::ZERO);
        let message = error(&["--handover", "steering", "true"]);
        assert!(
            message.contains("'--handover <MODE>'")
                && message.contains("'steering'")
                && message.contains("steer, shared"),
            "{message}"
        );
        let message = error(&["--drain-timeout", "forever", "true"]);
        assert!(
            message.contains("'--drain-timeout <DURATION>'") && message.contains("'forever'"),
            "{message}"
        );
    }

    #[test]
    fn ready_modes_and_typos() {
        for (text, ready) in [
            ("auto", Ready::Auto),
            ("accepting", Ready::Accepting),
            ("Notify", Ready::Notify),
            ("2s", Ready::After(Duration::from_secs(2))),
            ("0.5", Ready::After(Duration::from_millis(500))),
        ] {
            let config = parse_args(&["--ready", text, "true"]).unwrap();
            assert_eq!(config.policy.ready, ready, "{text}");
        }
        let message = error(&["--ready", "acepting", "true"]);
        assert!(message.contains("did you mean accepting?"), "{message}");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain é"), "plain é");
        assert_eq!(escape_controls("a\nb\x1b[0m\t"), "a\\nb\\u{1b}[0m\\t");
        let message = error(&["--stop-signal", "X\nY", "true"]);
        assert!(
            message.contains("X\\nY") && !message.contains('\n'),
            "{message}"
        );
    }

    #[test]
    fn env_lists_split_on_whitespace() {
        let same = |text: &str| Ok::<_, String>(text.to_string());
        assert_eq!(
            parse_all(&["8080 unix:/a.sock".into()], true, "-l", same),
            Ok(vec!["8080".to_string(), "unix:/a.sock".to_string()])
        );
        assert_eq!(
            parse_all(&["unix:/my dir/a.sock".into()], false, "-l", same),
            Ok(vec!["unix:/my dir/a.sock".to_string()])
        );
    }
}
