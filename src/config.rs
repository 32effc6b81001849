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

use crate::cli::{self, Cli, Compat, LogFormat, Ready, RestartPolicy};
use crate::exit::{self, ExitCodeMap};
use crate::listen::ListenSpec;
use crate::log::Level;
use crate::signal::{Mapping, Signal, SignalMap, SignalRule};
use crate::spawn::Credentials;

/// Everything graceful-run was asked to do.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Vec<ListenSpec>,
    pub listen_pid: bool,
    pub compat: Vec<Compat>,
    pub signal_map: SignalMap,
    pub stop_signal: Option<Signal>,
    pub stop_timeout: Duration,
    pub process_group: bool,
    pub kill_mode: cli::KillMode,
    pub drain_delay: Duration,
    pub pre_stop: Option<String>,
    pub post_stop: Option<String>,
    pub hook_timeout: Duration,
    pub restart_signal: Option<Signal>,
    pub ready: Ready,
    pub ready_timeout: Duration,
    pub restart_policy: RestartPolicy,
    pub restart_delay: Duration,
    pub max_restarts: Option<u32>,
    pub user: Option<Credentials>,
    pub pid_file: Option<PathBuf>,
    pub subreaper: bool,
    pub exit_codes: ExitCodeMap,
    pub log_level: Level,
    pub log_format: LogFormat,
    pub command: Vec<OsString>,
}

impl Config {
    /// What the command receives when graceful-run stops it after receiving `received`
    /// (TERM or INT), or retires it after a restart (`received` is then TERM).
    pub fn stop_mapping(&self, received: Signal) -> Mapping {
        match self.stop_signal {
            Some(signal) => Mapping::To(signal),
            None => self.signal_map.translate(received),
        }
    }
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
    let command = if asks_for_help {
        cli::command()
    } else {
        cli::parsing_command()
    };
    let matches = match command.clone().try_get_matches_from(&args) {
        Ok(matches) => matches,
        Err(error) => return Err(clap_stop(error, &command, &args)),
    };
    let parsed =
        Cli::from_arg_matches(&matches).map_err(|error| clap_stop(error, &command, &args))?;
    let from_env = |id: &str| matches.value_source(id) == Some(ValueSource::EnvVariable);
    build(parsed, &from_env).map_err(Stop::Invalid)
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

/// `text` with control characters (newlines, escape sequences) written as Rust escapes
/// (`\n`, `\u{1b}`), so that a value echoed in an error stays on its line and cannot drive
/// the terminal. Everything else, non-ASCII letters included, is kept as it is.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_debug());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

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

fn build(cli: Cli, from_env: &dyn Fn(&str) -> bool) -> Result<Config, String> {
    let listen = parse_all(
        &cli.listen,
        from_env("listen"),
        "--listen <SPEC>",
        str::parse,
    )?;
    let rules = parse_all(
        &cli.map_signal,
        from_env("map_signal"),
        "--map-signal <FROM:TO>",
        str::parse::<SignalRule>,
    )?;
    let exit_rules = parse_all(
        &cli.exit_code_map,
        from_env("exit_code_map"),
        "--exit-code-map <FROM:TO>",
        exit::parse_exit_code_rule,
    )?;

    let restart_signal = cli.restart_signal.0;

    for (id, flag, hook) in [
        ("pre_stop", "--pre-stop <CMD>", &cli.pre_stop),
        ("post_stop", "--post-stop <CMD>", &cli.post_stop),
    ] {
        if hook.as_deref().is_some_and(|cmd| cmd.trim().is_empty()) {
            let origin = origin(flag, from_env(id));
            return Err(invalid_from(flag, &origin, "", "the command is empty"));
        }
    }

    if cli.command.first().is_some_and(|c| c.is_empty()) {
        return Err("invalid value '' for '<COMMAND>': the command is empty".into());
    }

    let user = match &cli.user {
        Some(spec) => resolve_user(spec).map_err(|reason| {
            let flag = "--user <USER[:GROUP]>";
            invalid_from(flag, &origin(flag, from_env("user")), spec, reason)
        })?,
        None => None,
    };

    if cli.compat.contains(&Compat::ServerStarter) {
        check_server_starter_paths(&listen, from_env("listen"))?;
    }

    Ok(Config {
        listen,
        listen_pid: !cli.no_listen_pid,
        compat: cli.compat,
        signal_map: SignalMap::new(rules),
        stop_signal: cli.stop_signal,
        stop_timeout: cli.stop_timeout,
        process_group: !cli.no_process_group,
        kill_mode: cli.kill_mode,
        drain_delay: cli.drain_delay,
        pre_stop: cli.pre_stop,
        post_stop: cli.post_stop,
        hook_timeout: cli.hook_timeout,
        restart_signal,
        ready: cli.ready,
        ready_timeout: cli.ready_timeout,
        restart_policy: cli.restart_policy,
        restart_delay: cli.restart_delay,
        max_restarts: cli.max_restarts,
        user,
        pid_file: cli.pid_file,
        subreaper: !cli.no_subreaper,
        exit_codes: ExitCodeMap::new(exit_rules),
        log_level: if cli.quiet {
            Level::Warn
        } else if cli.verbose {
            Level::Debug
        } else {
            Level::Info
        },
        log_format: cli.log_format,
        command: cli.command,
    })
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
        assert_eq!(config.stop_timeout, Duration::from_secs(10));
        assert_eq!(config.restart_signal, Some(Signal::HUP));
        assert_eq!(config.ready, Ready::Auto);
        assert_eq!(config.stop_mapping(Signal::INT), Mapping::To(Signal::INT));
        assert!(config.process_group && config.listen_pid && config.subreaper);
    }

    #[test]
    fn stop_signal_follows_the_map_unless_given() {
        let config = parse_args(&["--map-signal", "TERM:QUIT", "true"]).unwrap();
        assert_eq!(
            config.stop_mapping(Signal::TERM),
            Mapping::To("QUIT".parse().unwrap())
        );
        let config =
            parse_args(&["--map-signal", "TERM:QUIT", "--stop-signal", "USR1", "true"]).unwrap();
        assert_eq!(
            config.stop_mapping(Signal::TERM),
            Mapping::To("USR1".parse().unwrap())
        );
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
        let message = error(&["--exit-code-map", "300:0", "true"]);
        assert!(message.contains("--exit-code-map"), "{message}");
        let message = error(&["--bogus", "true"]);
        assert!(message.contains("--bogus"), "{message}");
        assert!(!message.contains('\n'));
        assert!(error(&[]).contains("no COMMAND"));
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
    fn ready_modes_and_typos() {
        for (text, ready) in [
            ("auto", Ready::Auto),
            ("accepting", Ready::Accepting),
            ("Notify", Ready::Notify),
            ("2s", Ready::After(Duration::from_secs(2))),
            ("0.5", Ready::After(Duration::from_millis(500))),
        ] {
            let config = parse_args(&["--ready", text, "true"]).unwrap();
            assert_eq!(config.ready, ready, "{text}");
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
