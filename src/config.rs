//! From the command line and GRACEFUL_RUN_* variables to a validated [`Config`], with no side
//! effect: nothing is bound, spawned or written until every value has been checked. (Reading
//! the password database for `--user` is a lookup, not a side effect.)
//!
//! Every error is one line that names the flag and the value and says why, and graceful-run
//! exits 125 with it, as `env` and `timeout` do for their own failures.

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
    let matches = match command.try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(error) => return Err(clap_stop(error)),
    };
    let parsed = Cli::from_arg_matches(&matches).map_err(clap_stop)?;
    let from_env = |id: &str| matches.value_source(id) == Some(ValueSource::EnvVariable);
    build(parsed, &from_env).map_err(Stop::Invalid)
}

fn clap_stop(error: clap::Error) -> Stop {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            Stop::Info(error.render().to_string())
        }
        ErrorKind::MissingRequiredArgument
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Stop::Invalid(
            "no COMMAND given (usage: graceful-run [OPTIONS] [--] COMMAND [ARGS]...; see --help)"
                .into(),
        ),
        _ => Stop::Invalid(one_line(&error.render().to_string())),
    }
}

/// clap's first paragraph, on one line, without its `error: ` prefix.
fn one_line(rendered: &str) -> String {
    let paragraph: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = paragraph.join(" ");
    let text = joined.strip_prefix("error: ").unwrap_or(&joined);
    format!("{text} (see --help)")
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
    values
        .into_iter()
        .map(|text| parse(text).map_err(|reason| invalid(flag, text, reason)))
        .collect()
}

fn invalid(flag: &str, value: &str, reason: impl std::fmt::Display) -> String {
    format!("invalid value '{value}' for '{flag}': {reason}")
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

    for (flag, hook) in [
        ("--pre-stop <CMD>", &cli.pre_stop),
        ("--post-stop <CMD>", &cli.post_stop),
    ] {
        if hook.as_deref().is_some_and(|cmd| cmd.trim().is_empty()) {
            return Err(invalid(flag, "", "the command is empty"));
        }
    }

    if cli.command.first().is_some_and(|c| c.is_empty()) {
        return Err("invalid value '' for '<COMMAND>': the command is empty".into());
    }

    let user = match &cli.user {
        Some(spec) => {
            resolve_user(spec).map_err(|reason| invalid("--user <USER[:GROUP]>", spec, reason))?
        }
        None => None,
    };

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
        assert_eq!(config.ready, Ready::After(Duration::from_secs(1)));
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
