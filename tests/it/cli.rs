//! The command line as a user meets it: `--help`, `-h` and `--version`, where graceful-run's
//! options end and the command's begin, and graceful-run's own failures (a bad value, a port
//! in use, a command that cannot run): one line on stderr naming what was wrong, the
//! documented exit status, and nothing started or left behind.

use std::process::{Command, Output};

use std::time::{Duration, Instant};

use crate::support::{DEADLINE, Gr, TempDir, code, graceful_run_bin, killed_by, run_to_end};

/// Runs graceful-run with `args` to its end.
fn run(args: &[&str]) -> Output {
    let mut command = Command::new(graceful_run_bin());
    command.args(args);
    run_to_end(command)
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Whitespace runs collapsed to one space, so wrapped help text reads as one line.
fn squeezed(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks that `output` is graceful-run's failure: exit `status`, exactly one stderr line
/// that starts `graceful-run:` and contains every needle, nothing on stdout. Returns what is
/// wrong, if anything.
fn one_line_failure(output: &Output, status: i32, needles: &[&str]) -> Option<String> {
    let stderr = stderr_of(output);
    let lines: Vec<&str> = stderr.lines().collect();
    let mut problems = Vec::new();
    if code(output.status) != Some(status) {
        problems.push(format!("status {:?}, expected {status}", output.status));
    }
    if lines.len() != 1 {
        problems.push(format!("{} stderr lines, expected 1", lines.len()));
    }
    if !stderr.starts_with("graceful-run: ") {
        problems.push("the line does not start with `graceful-run: `".into());
    }
    for needle in needles {
        if !stderr.contains(needle) {
            problems.push(format!("the line does not contain {needle:?}"));
        }
    }
    if !output.stdout.is_empty() {
        problems.push(format!("stdout is not empty: {:?}", stdout_of(output)));
    }
    (!problems.is_empty()).then(|| format!("{}\n  stderr: {stderr:?}", problems.join("; ")))
}

fn assert_one_line_failure(output: &Output, status: i32, needles: &[&str]) {
    if let Some(problem) = one_line_failure(output, status, needles) {
        panic!("{problem}");
    }
}

/// The long flags declared in `src/cli.rs`: the fields of `struct Cli` but COMMAND, and of
/// the structs it flattens (one per --help heading).
fn declared_long_flags() -> Vec<String> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/cli.rs"))
        .expect("src/cli.rs is readable");
    let fields = |name: &str| -> Vec<(String, String)> {
        let start = source
            .find(&format!("pub struct {name} {{"))
            .unwrap_or_else(|| panic!("src/cli.rs declares struct {name}"));
        let body = &source[start..];
        let body = &body[..body.find("\n}\n").expect("the struct ends")];
        body.lines()
            .filter_map(|line| line.trim().strip_prefix("pub ")?.split_once(':'))
            .map(|(field, ty)| {
                (
                    field.trim().to_string(),
                    ty.trim().trim_end_matches(',').to_string(),
                )
            })
            .filter(|(field, _)| field != "command" && !field.contains(' '))
            .collect()
    };
    let cli = source
        .find("pub struct Cli {")
        .map(|start| &source[start..])
        .expect("src/cli.rs declares struct Cli");
    let cli = &cli[..cli.find("\n}\n").expect("struct Cli ends")];
    let flattened: Vec<String> = cli
        .split("#[command(flatten)]")
        .skip(1)
        .filter_map(|rest| rest.trim().strip_prefix("pub ")?.split_once(':'))
        .map(|(_, ty)| ty.split(',').next().unwrap_or_default().trim().to_string())
        .collect();
    let flags: Vec<String> = fields("Cli")
        .into_iter()
        .filter(|(_, ty)| !flattened.contains(ty))
        .chain(flattened.iter().flat_map(|ty| fields(ty)))
        .map(|(field, _)| field.replace('_', "-"))
        .collect();
    assert!(
        flags.len() >= 20,
        "found only {flags:?} in src/cli.rs: the parser above is out of date"
    );
    flags
}

/// `--help` prints, on stdout with status 0, every flag of `src/cli.rs` with its
/// GRACEFUL_RUN_* variable.
#[test]
fn long_help_lists_every_flag_with_its_environment_variable() {
    let output = run(&["--help"]);
    assert_eq!(code(output.status), Some(0), "{}", stderr_of(&output));
    assert!(output.stderr.is_empty(), "{}", stderr_of(&output));
    let help = squeezed(&stdout_of(&output));
    assert!(
        help.contains("Usage: graceful-run [OPTIONS] <COMMAND>..."),
        "{help}"
    );
    let mut missing = Vec::new();
    for flag in declared_long_flags() {
        if !help.contains(&format!("--{flag}")) {
            missing.push(format!("--{flag}"));
        }
        let variable = format!("GRACEFUL_RUN_{}", flag.replace('-', "_").to_uppercase());
        if !help.contains(&format!("[env: {variable}=")) {
            missing.push(format!("[env: {variable}=]"));
        }
    }
    assert!(missing.is_empty(), "--help lacks {missing:?}");
}

/// `-h` prints the short summary (every flag, not the long sections) on stdout with status 0.
#[test]
fn short_help_is_a_summary() {
    let short = run(&["-h"]);
    let long = run(&["--help"]);
    assert_eq!(code(short.status), Some(0), "{}", stderr_of(&short));
    assert!(short.stderr.is_empty(), "{}", stderr_of(&short));
    let text = squeezed(&stdout_of(&short));
    assert!(
        text.contains("Usage: graceful-run [OPTIONS] <COMMAND>..."),
        "{text}"
    );
    assert!(text.contains("see more with '--help'"), "{text}");
    for flag in declared_long_flags() {
        assert!(text.contains(&format!("--{flag}")), "-h lacks --{flag}");
    }
    assert!(
        !text.contains("EXIT STATUS:") && squeezed(&stdout_of(&long)).contains("EXIT STATUS:"),
        "only --help has the long sections"
    );
    assert!(short.stdout.len() < long.stdout.len());
}

/// `--version` prints `graceful-run <version>` from Cargo.toml on stdout with status 0.
#[test]
fn version_is_the_crate_version() {
    for flag in ["--version", "-V"] {
        let output = run(&[flag]);
        assert_eq!(
            code(output.status),
            Some(0),
            "{flag}: {}",
            stderr_of(&output)
        );
        assert_eq!(
            stdout_of(&output),
            format!("graceful-run {}\n", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
        assert!(output.stderr.is_empty(), "{flag}: {}", stderr_of(&output));
    }
}

/// Options end at the first non-option word: `graceful-run sh -c 'exit 7'` gives `-c` to sh.
#[test]
fn options_end_at_the_command_name() {
    let output = run(&["sh", "-c", "exit 7"]);
    assert_eq!(code(output.status), Some(7), "{}", stderr_of(&output));
}

/// Words that look like graceful-run's flags after the command (`--help`, `-l`, `-V`) are
/// the command's arguments.
#[test]
fn flags_after_the_command_belong_to_it() {
    let output = run(&[
        "sh",
        "-c",
        "echo \"args:$*\"",
        "sh",
        "--help",
        "-l",
        "5",
        "-V",
    ]);
    assert_eq!(code(output.status), Some(0), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "args:--help -l 5 -V\n");
    assert!(
        !stderr_of(&output).contains("listening on"),
        "{}",
        stderr_of(&output)
    );
}

/// After `--`, even `-h` is the command: it is looked up (127, one line naming `-h`), and no
/// help is printed.
#[test]
fn double_dash_makes_a_dash_word_the_command() {
    let output = run(&["--", "-h"]);
    assert_one_line_failure(&output, 127, &["-h", "not found"]);
}

/// A bad value for any flag (or an unknown flag) exits 125 with one line naming the flag and
/// the value, before any socket, pid file or command exists.
#[test]
fn every_bad_value_is_one_line_and_status_125() {
    // (arguments, the flag the line names, the value the line contains); `{tmp}` is the
    // test's directory.
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--listen", "99999"], "--listen", "99999"),
        (&["--listen", "ftp://x:1"], "--listen", "ftp://x:1"),
        (&["--listen", "8080,bogus"], "--listen", "8080,bogus"),
        (
            &["--listen", "unix:{tmp}/bad.sock,bogus"],
            "--listen",
            "bad.sock,bogus",
        ),
        (&["--listen", "8080,name=a:b"], "--listen", "name=a:b"),
        (&["--listen", "8080,mode=0660"], "--listen", "mode=0660"),
        (&["--map-signal", "TERM"], "--map-signal", "TERM"),
        (&["--map-signal", "FOO:TERM"], "--map-signal", "FOO:TERM"),
        (&["--map-signal", "KILL:TERM"], "--map-signal", "KILL"),
        (&["--stop-signal", "FOO"], "--stop-signal", "FOO"),
        (&["--stop-timeout", "soon"], "--stop-timeout", "soon"),
        (&["--drain-delay", "soon"], "--drain-delay", "soon"),
        (&["--hook-timeout", "soon"], "--hook-timeout", "soon"),
        (&["--restart-signal", "FOO"], "--restart-signal", "FOO"),
        (&["--restart-signal", "TERM"], "--restart-signal", "TERM"),
        (&["--ready", "sometime"], "--ready", "sometime"),
        (&["--ready-timeout", "soon"], "--ready-timeout", "soon"),
        (&["--handover", "swap"], "--handover", "swap"),
        (&["--handover", ""], "--handover", "''"),
        (&["--drain-timeout", "soon"], "--drain-timeout", "soon"),
        (&["--drain-timeout=-1s"], "--drain-timeout", "-1s"),
        (&["--drain-timeout", "2y"], "--drain-timeout", "2y"),
        (
            &["--restart-policy", "sometimes"],
            "--restart-policy",
            "sometimes",
        ),
        (&["--restart-delay", "soon"], "--restart-delay", "soon"),
        (&["--max-restarts", "many"], "--max-restarts", "many"),
        (&["--user", "no-such-user-gr"], "--user", "no-such-user-gr"),
        (
            &["--user", "root:no-such-group-gr"],
            "--user",
            "no-such-group-gr",
        ),
        (&["--user", "4294967295:0"], "--user", "4294967295"),
        (&["--user", "0:4294967295"], "--user", "4294967295"),
        (&["--exit-code-map", "300:0"], "--exit-code-map", "300:0"),
        (&["--exit-code-map", "143"], "--exit-code-map", "143"),
        (&["--log-format", "xml"], "--log-format", "xml"),
        (&["--compat", "systemd"], "--compat", "systemd"),
        (&["--pre-stop", ""], "--pre-stop", "''"),
        (&["--post-stop", ""], "--post-stop", "''"),
        (&["--bogus"], "--bogus", "--bogus"),
        // Durations past the documented maximum (a year) would overflow the clock later.
        (
            &["--stop-timeout", "18446744073709551615"],
            "--stop-timeout",
            "maximum",
        ),
        (&["--ready-timeout", "2y"], "--ready-timeout", "2y"),
        (&["--drain-delay", "31557601"], "--drain-delay", "31557601"),
        (&["--ready", "400d"], "--ready", "400d"),
        // Workers (issue 17).
        (&["-w", "0"], "--workers", "'0'"),
        (&["-w", "-1"], "--workers", "'-1'"),
        (&["--workers", "many"], "--workers", "many"),
        (&["-w", "1025"], "--workers", "1025"),
        (&["--max-surge", "-1"], "--max-surge", "'-1'"),
        (&["--max-unavailable", "2000"], "--max-unavailable", "2000"),
        (
            &["--max-surge", "0", "--max-unavailable", "0"],
            "--max-surge",
            "--max-unavailable 0",
        ),
        // Health and resources (issue 18).
        (&["--health-cmd", ""], "--health-cmd", "''"),
        (
            &["--health-cmd", "true", "--health-interval", "0"],
            "--health-interval",
            "'0'",
        ),
        (
            &["--health-cmd", "true", "--health-interval", "-5s"],
            "--health-interval",
            "-5s",
        ),
        (
            &["--health-cmd", "true", "--health-timeout", "0s"],
            "--health-timeout",
            "0s",
        ),
        (
            &["--health-cmd", "true", "--health-retries", "0"],
            "--health-retries",
            "'0'",
        ),
        (
            &["--health-cmd", "true", "--health-start-period", "-1s"],
            "--health-start-period",
            "-1s",
        ),
        (&["--health-interval", "5s"], "--health-interval", "5s"),
        (&["--health-http", "healthz"], "--health-http", "healthz"),
        (&["--health-http", "/a b"], "--health-http", "/a b"),
        (
            &["--health-http", "/h", "--health-cmd", "true"],
            "--health-http",
            "--health-cmd",
        ),
        (&["--watchdog", "0"], "--watchdog", "'0'"),
        (&["--watchdog", "-1s"], "--watchdog", "-1s"),
        (&["--max-memory", "10X"], "--max-memory", "10X"),
        (&["--max-memory", "-1M"], "--max-memory", "-1M"),
        (&["--max-memory", "0"], "--max-memory", "'0'"),
        (&["--max-memory", "512"], "--max-memory", "'512'"),
        (&["--max-lifetime", "0"], "--max-lifetime", "'0'"),
        (&["--max-lifetime", "-1h"], "--max-lifetime", "-1h"),
        (
            &["--health-cmd", "true", "--health-retries", "-1"],
            "--health-retries",
            "'-1'",
        ),
        (
            &["--health-cmd", "true", "--health-timeout", "-1s"],
            "--health-timeout",
            "-1s",
        ),
        (&["--max-memory", "1.5.0G"], "--max-memory", "1.5.0G"),
        (&["--max-memory", ""], "--max-memory", "''"),
        (&["--watchdog", "soon"], "--watchdog", "soon"),
        // Development mode (issue 18).
        (&["--watch", "{tmp}/missing"], "--watch", "missing"),
        (&["--build", "make"], "--build", "make"),
        // SERVER_STARTER_PORT cannot carry ';' or '=' in a socket path.
        (
            &["--compat", "server-starter", "-l", "unix:{tmp}/a;b.sock"],
            "--listen",
            "a;b.sock",
        ),
        (
            &["--compat", "server-starter", "-l", "@name=x"],
            "--listen",
            "@name=x",
        ),
    ];
    let mut failures = Vec::new();
    for (bad, flag, value) in cases {
        let dir = TempDir::new("cli-bad");
        let tmp = dir.path().display().to_string();
        let good_socket = format!("unix:{tmp}/good.sock");
        let pid_file = format!("{tmp}/gr.pid");
        let bad: Vec<String> = bad.iter().map(|a| a.replace("{tmp}", &tmp)).collect();
        let mut args = vec!["-l", &good_socket, "--pid-file", &pid_file];
        args.extend(bad.iter().map(String::as_str));
        args.extend(["--", "sh", "-c", "echo child-ran"]);
        let output = run(&args);
        if let Some(problem) = one_line_failure(&output, 125, &[flag, value]) {
            failures.push(format!("{bad:?}: {problem}"));
        }
        if stderr_of(&output).contains("started") {
            failures.push(format!("{bad:?}: the command was started"));
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("the temp dir exists")
            .flatten()
            .map(|entry| entry.file_name())
            .collect();
        if !left.is_empty() {
            failures.push(format!("{bad:?}: left {left:?} behind"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// No COMMAND at all (with or without other flags) exits 125 with one line mentioning COMMAND.
#[test]
fn no_command_is_one_line_and_status_125() {
    for args in [&[][..], &["-l", "127.0.0.1:0"], &["--"]] {
        let output = run(args);
        if let Some(problem) = one_line_failure(&output, 125, &["COMMAND"]) {
            panic!("{args:?}: {problem}");
        }
    }
}

/// A port that is already in use exits 125 with one line naming `--listen`, the value and
/// the reason, after closing (and removing) the sockets it had opened, without starting the
/// command.
#[test]
fn a_port_in_use_is_one_line_and_status_125() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let taken = format!("127.0.0.1:{}", holder.local_addr().expect("bound").port());
    let dir = TempDir::new("cli-bind");
    let first = format!("unix:{}", dir.join("first.sock").display());
    let output = run(&[
        "-l",
        &first,
        "-l",
        &taken,
        "--",
        "sh",
        "-c",
        "echo child-ran",
    ]);
    assert_one_line_failure(
        &output,
        125,
        &["--listen", &taken, "Address already in use"],
    );
    assert!(
        !dir.join("first.sock").exists(),
        "the socket opened before the failure was left behind"
    );
}

/// A command that does not exist exits 127 with one line naming it.
#[test]
fn a_missing_command_is_one_line_and_status_127() {
    for command in ["no-such-command-gr-cli", "/no/such/dir/gr-cli"] {
        let output = run(&["-l", "127.0.0.1:0", "--", command, "arg"]);
        assert_one_line_failure(&output, 127, &[command]);
    }
}

/// A file that exists but cannot be executed exits 126 with one line naming it.
#[test]
fn a_non_executable_command_is_one_line_and_status_126() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cli-noexec");
    let script = dir.join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("the temp dir is writable");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod works");
    let path = script.display().to_string();
    let output = run(&["--", &path]);
    assert_one_line_failure(&output, 126, &[&path]);
}

/// A bad flag with stderr a broken pipe still exits 125 (eprintln! panicked: 134).
#[test]
fn bad_flag_with_broken_stderr_exits_125() {
    let (read, write) = nix::unistd::pipe().expect("a test process has fds to spare");
    drop(read);
    let mut command = Command::new(graceful_run_bin());
    command.args(["--stop-timeout", "soon", "--", "true"]);
    let mut gr = crate::support::Gr::spawn_with_stderr(command, write);
    assert_eq!(code(gr.wait_exit()), Some(125));
}

/// What bash offers for the words `words` of a `graceful-run` command line (the last is the
/// word being completed), with the committed completion script and bash-completion loaded
/// and `fakecmd` completing `--alpha --beta`: the completion function is called as bash
/// calls it. `line` is the text typed, which the script reads to find glued words. Runs in
/// a directory holding a file named `file-in-cwd`, to show when file names are offered.
fn bash_completions(line: &str, words: &[&str]) -> Vec<String> {
    let dir = TempDir::new("cli-complete");
    std::fs::write(dir.join("file-in-cwd"), "").expect("the temp dir is writable");
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect();
    let script = format!(
        r#"
. /usr/share/bash-completion/bash_completion
. '{root}/completions/graceful-run.bash'
complete -W '--alpha --beta' fakecmd
COMP_LINE='{line}'
COMP_POINT=${{#COMP_LINE}}
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMPREPLY=()
_graceful_run_complete graceful-run "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}" 2>/dev/null
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        root = env!("CARGO_MANIFEST_DIR"),
        words = quoted.join(" "),
    );
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .current_dir(dir.path())
        .output()
        .expect("bash runs");
    assert!(output.status.success(), "{}", stderr_of(&output));
    let mut offered: Vec<String> = stdout_of(&output)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    offered.sort();
    offered.dedup();
    offered
}

/// bash completes the values of --ready, the signal flags and the enumerations (never file
/// names there), and after `--` or the first non-option word completes a command, then its
/// arguments with the command's own completion, also past a `FROM:TO` that bash splits at
/// the colon.
#[test]
#[cfg_attr(
    not(has_bash_completion),
    ignore = "bash-completion not installed: apt-get install bash-completion"
)]
fn bash_completes_values_and_the_command() {
    let set = |words: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        v.sort();
        v
    };
    let cases: &[(&str, &[&str], Vec<String>)] = &[
        (
            "graceful-run --ready ",
            &["graceful-run", "--ready", ""],
            set(&["accepting", "auto", "notify"]),
        ),
        (
            "graceful-run --stop-signal TE",
            &["graceful-run", "--stop-signal", "TE"],
            set(&["TERM"]),
        ),
        (
            "graceful-run --restart-signal n",
            &["graceful-run", "--restart-signal", "n"],
            set(&["none"]),
        ),
        (
            "graceful-run --map-signal T",
            &["graceful-run", "--map-signal", "T"],
            set(&["TERM:INT", "TERM:QUIT", "TERM:WINCH"]),
        ),
        (
            "graceful-run --map-signal TERM:",
            &["graceful-run", "--map-signal", "TERM", ":", ""],
            set(&["INT", "QUIT", "WINCH"]),
        ),
        (
            "graceful-run --restart-policy ",
            &["graceful-run", "--restart-policy", ""],
            set(&["always", "never", "on-failure"]),
        ),
        (
            "graceful-run --log-format ",
            &["graceful-run", "--log-format", ""],
            set(&["json", "text"]),
        ),
        (
            "graceful-run --compat ",
            &["graceful-run", "--compat", ""],
            set(&["einhorn", "server-starter"]),
        ),
        (
            "graceful-run -l 8080 fakecmd --al",
            &["graceful-run", "-l", "8080", "fakecmd", "--al"],
            set(&["--alpha"]),
        ),
        (
            "graceful-run -v -- fakecmd --b",
            &["graceful-run", "-v", "--", "fakecmd", "--b"],
            set(&["--beta"]),
        ),
        (
            "graceful-run --map-signal TERM:QUIT fakecmd --b",
            &[
                "graceful-run",
                "--map-signal",
                "TERM",
                ":",
                "QUIT",
                "fakecmd",
                "--b",
            ],
            set(&["--beta"]),
        ),
    ];
    let mut failures = Vec::new();
    for (line, words, expected) in cases {
        let offered = bash_completions(line, words);
        if offered != *expected {
            failures.push(format!(
                "{line:?}: offered {offered:?}, expected {expected:?}"
            ));
        }
    }
    // Every signal name for --stop-signal, and no file names.
    let signals = bash_completions(
        "graceful-run --stop-signal ",
        &["graceful-run", "--stop-signal", ""],
    );
    if !(signals.contains(&"QUIT".to_string()) && signals.contains(&"USR2".to_string()))
        || signals.iter().any(|s| s.contains("file-in-cwd"))
    {
        failures.push(format!("--stop-signal: offered {signals:?}"));
    }
    // A command name after `--`, as bash completes commands.
    let commands = bash_completions("graceful-run -- tru", &["graceful-run", "--", "tru"]);
    if !commands.contains(&"true".to_string()) {
        failures.push(format!("`-- tru`: offered {commands:?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// graceful-run with `args` and `env` added, run to its end.
fn run_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(graceful_run_bin());
    command.args(args).envs(env.iter().copied());
    run_to_end(command)
}

/// A misspelt flag keeps clap's tip naming the flag meant, on the one line.
#[test]
fn a_misspelt_flag_gets_the_similar_one() {
    let output = run(&["--stop-timout", "5", "true"]);
    assert_one_line_failure(
        &output,
        125,
        &[
            "'--stop-timout'",
            "tip: a similar argument exists: '--stop-timeout'",
        ],
    );
}

/// A bad value gets one short line that says what is expected: no parser internals, no
/// list of every unit humantime knows; a near miss of a --ready mode names it.
#[test]
fn bad_values_get_one_short_line() {
    let output = run(&["--ready", "notfy", "true"]);
    assert_one_line_failure(
        &output,
        125,
        &["'notfy'", "--ready", "did you mean notify?"],
    );
    assert!(
        !stderr_of(&output).contains("expected number"),
        "{}",
        stderr_of(&output)
    );
    let output = run(&["--stop-timeout", "10x", "true"]);
    assert_one_line_failure(
        &output,
        125,
        &["'10x'", "--stop-timeout", "unknown unit 'x'"],
    );
    let line = stderr_of(&output);
    assert!(line.len() < 200 && !line.contains("usec"), "{line}");
}

/// A bare number of seconds may have a fraction, as --help says: `--stop-timeout 1.5` kills
/// a command that ignores TERM about 1.5 s after the stop signal (not after the default 10 s).
#[test]
fn a_fractional_stop_timeout_is_seconds() {
    let mut gr = Gr::start(&[
        "--stop-timeout",
        "1.5",
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo up; sleep 100",
    ]);
    gr.wait_stdout("up");
    let sent = Instant::now();
    gr.signal(nix::libc::SIGTERM);
    let status = gr.wait_exit();
    let elapsed = sent.elapsed();
    assert_eq!(
        killed_by(status),
        Some(nix::libc::SIGKILL),
        "{}",
        gr.output()
    );
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_secs(8),
        "killed {elapsed:?} after TERM\n{}",
        gr.output()
    );
}

/// `--ready` takes `auto` (the default), `accepting`, `notify` and durations.
#[test]
fn ready_accepts_every_mode() {
    for mode in ["auto", "accepting", "notify", "2s", "0.5"] {
        let output = run(&["--ready", mode, "--", "sh", "-c", "exit 4"]);
        assert_eq!(
            code(output.status),
            Some(4),
            "{mode}: {}",
            stderr_of(&output)
        );
    }
}

/// A bad value from a GRACEFUL_RUN_* variable names the variable as well as the flag; a bad
/// value on the command line does not blame a (good) variable.
#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        ("GRACEFUL_RUN_STOP_TIMEOUT", "10x", "--stop-timeout"),
        ("GRACEFUL_RUN_READY", "sometime", "--ready"),
        ("GRACEFUL_RUN_COMPAT", "systemd", "--compat"),
        ("GRACEFUL_RUN_LISTEN", "99999", "--listen"),
        ("GRACEFUL_RUN_MAP_SIGNAL", "TERM", "--map-signal"),
        ("GRACEFUL_RUN_USER", "no-such-user-gr", "--user"),
        ("GRACEFUL_RUN_HANDOVER", "swap", "--handover"),
        ("GRACEFUL_RUN_DRAIN_TIMEOUT", "10x", "--drain-timeout"),
        ("GRACEFUL_RUN_WORKERS", "0", "--workers"),
        ("GRACEFUL_RUN_MAX_MEMORY", "-1M", "--max-memory"),
        ("GRACEFUL_RUN_WATCHDOG", "0", "--watchdog"),
        ("GRACEFUL_RUN_HEALTH_INTERVAL", "5s", "--health-interval"),
        ("GRACEFUL_RUN_BUILD", "make", "--build"),
        ("GRACEFUL_RUN_WATCH", "/no/such/dir/gr", "--watch"),
        ("GRACEFUL_RUN_MAX_SURGE", "0", "--max-surge"),
    ];
    let mut failures = Vec::new();
    for (variable, value, flag) in cases {
        let output = run_env(&[(variable, value)], &["--", "sh", "-c", "echo child-ran"]);
        let needle = format!("from {variable}");
        if let Some(problem) = one_line_failure(&output, 125, &[flag, value, &needle]) {
            failures.push(format!("{variable}={value}: {problem}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let output = run_env(
        &[("GRACEFUL_RUN_STOP_TIMEOUT", "5s")],
        &["--stop-timeout", "10x", "true"],
    );
    assert_one_line_failure(&output, 125, &["--stop-timeout", "'10x'"]);
    assert!(
        !stderr_of(&output).contains("GRACEFUL_RUN_"),
        "{}",
        stderr_of(&output)
    );
}

/// Control characters and newlines in a value are escaped in the error line: one line, no
/// raw escape sequence reaching the terminal.
#[test]
fn control_characters_in_values_are_escaped() {
    let cases: &[&[&str]] = &[
        &["-l", "unix:/tmp/x\n\x1b[31mred,bogus"],
        &["--stop-signal", "TERM\nKILL"],
        &["--stop-timeout", "1\n\x1b[2J"],
        &["--log-format", "json\n"],
        &["--bogus\nflag"],
        &["--user", "x\r\nroot"],
    ];
    let mut failures = Vec::new();
    for bad in cases {
        let mut args = bad.to_vec();
        args.push("true");
        let output = run(&args);
        if let Some(problem) = one_line_failure(&output, 125, &["\\n"]) {
            failures.push(format!("{bad:?}: {problem}"));
        }
        let bytes = &output.stderr[..output.stderr.len().saturating_sub(1)];
        if bytes.iter().any(|b| b.is_ascii_control()) {
            failures.push(format!(
                "{bad:?}: a control character: {:?}",
                stderr_of(&output)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The write end of a pipe whose read end is closed: writing to it fails with EPIPE.
fn broken_pipe() -> std::os::fd::OwnedFd {
    let (read, write) = nix::unistd::pipe().expect("a test process can make a pipe");
    drop(read);
    write
}

/// Runs `command` to its end (stdin from /dev/null) within [`DEADLINE`].
fn status_of(mut command: Command) -> std::process::ExitStatus {
    let mut child = command
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("graceful-run runs");
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("waiting works") {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("{command:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A bad flag with stderr a broken pipe still exits 125 (no panic on the failed write), and
/// --help or --version whose reader went away exits 0; an unwritable stdout (a full disk)
/// exits 125 with one line.
#[test]
fn failed_writes_of_messages_keep_the_documented_status() {
    let mut command = Command::new(graceful_run_bin());
    command
        .args(["--bogus", "true"])
        .stdout(std::process::Stdio::null())
        .stderr(broken_pipe());
    let status = status_of(command);
    assert_eq!(code(status), Some(125), "{status:?}");
    for flag in ["--help", "--version"] {
        let mut command = Command::new(graceful_run_bin());
        command
            .arg(flag)
            .stdout(broken_pipe())
            .stderr(std::process::Stdio::null());
        let status = status_of(command);
        assert_eq!(code(status), Some(0), "{flag}: {status:?}");
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full exists on Linux");
    let mut command = Command::new(graceful_run_bin());
    command.arg("--help").stdout(full);
    let output = run_to_end_keeping_stdout(command);
    assert_one_line_failure(&output, 125, &["stdout"]);
}

/// Like [`run_to_end`], with stdout left as the command set it.
fn run_to_end_keeping_stdout(mut command: Command) -> Output {
    command
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("graceful-run runs");
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(DEADLINE) {
        Ok(output) => output.expect("waiting works"),
        Err(_) => panic!("pid {pid} did not finish within {DEADLINE:?}"),
    }
}

/// graceful-run's last line says how it ends: the command's status, a mapped status, or a
/// death by the command's signal.
#[test]
fn the_last_line_says_how_graceful_run_exits() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["sh", "-c", "exit 3"],
            "graceful-run: exiting with status 3",
        ),
        (
            &["--exit-code-map", "3:0", "--", "sh", "-c", "exit 3"],
            "graceful-run: exiting with status 0 (the command's 3, after --exit-code-map)",
        ),
        (
            &["sh", "-c", "kill -TERM $$"],
            "graceful-run: dying of SIGTERM like the command",
        ),
    ];
    for (args, last) in cases {
        let output = run(args);
        let stderr = stderr_of(&output);
        assert_eq!(stderr.lines().last(), Some(*last), "{args:?}: {stderr}");
    }
}

/// A startup failure after parsing (here the pid file's directory is missing) is one line
/// with its context: the flag, the path and the system's reason.
#[test]
fn startup_errors_carry_their_context() {
    let output = run(&["--pid-file", "/no/such/dir/gr.pid", "--", "true"]);
    assert_one_line_failure(
        &output,
        125,
        &[
            "--pid-file '/no/such/dir/gr.pid'",
            "No such file or directory",
        ],
    );
}

/// Counts read as English: `serving on 1 socket`, `1 connection open` (the example server's
/// lines, which users copy).
#[test]
fn counts_of_one_are_singular() {
    use std::io::{Read, Write};
    let server = crate::support::http_server();
    // STATUS= is logged at debug level (-v).
    let mut gr = Gr::start(&[
        "-v",
        "-l",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--",
        &server,
    ]);
    gr.wait_stderr("status: serving on 1 socket");
    // One keep-alive connection, open when the stop begins.
    let mut connection = std::net::TcpStream::connect(gr.inet_addr(0)).expect("the server accepts");
    connection
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("the request is sent");
    connection
        .set_read_timeout(Some(DEADLINE))
        .expect("a timeout can be set");
    let mut first = [0u8; 12];
    connection
        .read_exact(&mut first)
        .expect("the response begins");
    assert_eq!(&first, b"HTTP/1.1 200", "{}", gr.output());
    gr.signal(nix::libc::SIGTERM);
    gr.wait_stderr("stopping: 1 connection open");
    drop(connection);
    gr.wait_exit();
    assert_eq!(
        gr.stderr
            .count(|l| l.contains("1 sockets") || l.contains("1 connections")),
        0,
        "{}",
        gr.output()
    );
}

/// What fish offers for `line` with the committed completion script loaded and `fakecmd`
/// completing `--alpha` and `--beta`, in a directory holding `file-in-cwd`.
fn fish_completions(line: &str) -> Vec<String> {
    let dir = TempDir::new("cli-fish");
    std::fs::write(dir.join("file-in-cwd"), "").expect("the temp dir is writable");
    let script = format!(
        "source '{}/completions/graceful-run.fish'; \
         complete -c fakecmd -l alpha; complete -c fakecmd -l beta; \
         complete -C '{line}'",
        env!("CARGO_MANIFEST_DIR")
    );
    let output = Command::new("fish")
        .args(["--no-config", "-c", &script])
        .current_dir(dir.path())
        .output()
        .expect("fish runs");
    assert!(output.status.success(), "{}", stderr_of(&output));
    let mut offered: Vec<String> = stdout_of(&output)
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    offered.sort();
    offered.dedup();
    offered
}

/// fish, like bash, completes the values of --ready and the signal flags, and the command
/// and then its arguments after the options.
#[test]
#[cfg_attr(not(has_fish), ignore = "fish not installed: apt-get install fish")]
fn fish_completes_values_and_the_command() {
    let cases: &[(&str, &[&str])] = &[
        ("graceful-run --ready ", &["accepting", "auto", "notify"]),
        ("graceful-run --stop-signal TE", &["TERM"]),
        (
            "graceful-run --restart-policy ",
            &["always", "never", "on-failure"],
        ),
        ("graceful-run -l 8080 fakecmd --al", &["--alpha"]),
        ("graceful-run -v -- fakecmd --b", &["--beta"]),
        (
            "graceful-run --map-signal TERM:QUIT fakecmd --b",
            &["--beta"],
        ),
    ];
    let mut failures = Vec::new();
    for (line, expected) in cases {
        let offered = fish_completions(line);
        if offered != *expected {
            failures.push(format!(
                "{line:?}: offered {offered:?}, expected {expected:?}"
            ));
        }
    }
    let commands = fish_completions("graceful-run -- tru");
    if !commands.contains(&"true".to_string()) {
        failures.push(format!("`-- tru`: offered {commands:?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
