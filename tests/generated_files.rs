//! `man/graceful-run.1` and `completions/*` are generated from the clap definition, so they
//! cannot disagree with `--help`. This test renders them in memory and fails when the
//! committed files differ. To regenerate after changing a flag:
//!
//! ```text
//! UPDATE_GENERATED=1 cargo test --test generated_files
//! ```
//!
//! The generators (clap_mangen, clap_complete) are dev-dependencies only: the shipped binary
//! does not carry them.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn man_page() -> Vec<u8> {
    let man = clap_mangen::Man::new(graceful_run::cli::command())
        .manual("User Commands")
        .source(format!("graceful-run {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render_title(&mut page)
        .expect("writing to a Vec cannot fail");
    man.render_name_section(&mut page)
        .expect("writing to a Vec cannot fail");
    // clap_mangen's SYNOPSIS leaves out every option's value (`[-l|--listen]`).
    page.extend_from_slice(synopsis(&graceful_run::cli::command()).as_bytes());
    let mut clap_sections = Vec::new();
    man.render_description_section(&mut clap_sections)
        .expect("writing to a Vec cannot fail");
    man.render_options_section(&mut clap_sections)
        .expect("writing to a Vec cannot fail");
    // The help texts mark literal text with backticks, which roff would print as they are.
    let clap_sections = String::from_utf8(clap_sections).expect("roff is text");
    page.extend_from_slice(graceful_run::doc::roff_code(&clap_sections).as_bytes());
    // Our own sections (environment, signals, exit status, examples) replace clap_mangen's
    // "extra" section, which would print the same text without roff formatting.
    page.extend_from_slice(graceful_run::doc::roff().as_bytes());
    man.render_version_section(&mut page)
        .expect("writing to a Vec cannot fail");
    page
}

/// `graceful-run [-l|--listen SPEC]... [--no-listen-pid] ... [--] COMMAND [ARGS]...` in roff.
fn synopsis(command: &clap::Command) -> String {
    // No hyphenation: a flag broken across lines reads as another flag.
    let mut out = String::from(".SH SYNOPSIS\n.nh\n\\fBgraceful\\-run\\fR");
    for arg in command.get_arguments().filter(|arg| !arg.is_positional()) {
        let names: Vec<String> = arg
            .get_short()
            .map(|s| format!("\\fB\\-{s}\\fR"))
            .into_iter()
            .chain(
                arg.get_long()
                    .map(|l| format!("\\fB\\-\\-{}\\fR", l.replace('-', "\\-"))),
            )
            .collect();
        let value = match arg.get_value_names() {
            Some(values) if arg.get_action().takes_values() => values
                .iter()
                .map(|v| format!(" \\fI{v}\\fR"))
                .collect::<String>(),
            _ => String::new(),
        };
        let repeat = if matches!(arg.get_action(), clap::ArgAction::Append) {
            "..."
        } else {
            ""
        };
        out.push_str(&format!(" [{}{value}]{repeat}", names.join("|")));
    }
    out.push_str(" [\\fB\\-\\-\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...\n.hy\n");
    out
}

fn completion(shell: Shell) -> Vec<u8> {
    let mut command = graceful_run::cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "graceful-run", &mut script);
    match shell {
        Shell::Bash => script.extend_from_slice(bash_command_completion(&command).as_bytes()),
        Shell::Fish => {
            script = fish_options_before_the_command(&command, &script);
            script.extend_from_slice(fish_command_completion(&command).as_bytes());
        }
        _ => {}
    }
    script
}

/// The options that take a value, as a shell pattern (`-l|--listen|...`).
fn options_with_values(command: &clap::Command, separator: &str, long_prefix: &str) -> String {
    command
        .get_arguments()
        .filter(|arg| !arg.is_positional() && arg.get_num_args().is_none_or(|n| n.takes_values()))
        .filter(|arg| arg.get_action().takes_values())
        .flat_map(|arg| {
            let short = arg.get_short().map(|s| format!("-{s}"));
            let long = arg.get_long().map(|l| format!("{long_prefix}{l}"));
            short.into_iter().chain(long)
        })
        .collect::<Vec<_>>()
        .join(separator)
}

/// clap_complete's bash script completes flags and their values only, and file names after
/// them. This completes COMMAND, after `--` or from the first word that is neither an option
/// nor an option's value, and then its arguments with the command's own completion, as
/// `sudo` and `env` do (bash-completion's `_command_offset`).
fn bash_command_completion(command: &clap::Command) -> String {
    let options = options_with_values(command, "|", "--");
    format!(
        r#"
# Added to clap's script by tests/generated_files.rs: complete COMMAND (after `--`, or the
# first word that is neither an option nor an option's value) and then its arguments with
# the command's own completion, as sudo and env do.
_graceful_run_complete() {{
    # Which words are glued to the one before (bash splits `TERM:QUIT` and `[::1]:80` at
    # each colon): an option's value spans them.
    local line=$COMP_LINE j glued=()
    for (( j = 0; j < ${{#COMP_WORDS[@]}}; j++ )); do
        if [[ $line =~ ^[[:space:]] ]]; then glued[j]=0; else glued[j]=1; fi
        line=${{line#"${{line%%[![:space:]]*}}"}}
        line=${{line#"${{COMP_WORDS[j]}}"}}
    done
    local i=1
    while (( i < COMP_CWORD )); do
        case ${{COMP_WORDS[i]}} in
            --)
                _graceful_run_command $(( i + 1 ))
                return
                ;;
            {options})
                (( i++ ))
                while (( i + 1 < COMP_CWORD && glued[i + 1] )); do (( i++ )); done
                ;;
            -*) ;;
            *)
                _graceful_run_command "$i"
                return
                ;;
        esac
        (( i++ ))
    done
    # A value bash split at its colons (`--map-signal TERM:`): complete the whole value,
    # then offer only the part after the last piece bash kept apart.
    local start=$COMP_CWORD
    while (( start > 2 && glued[start] )); do (( start-- )); done
    if (( start < COMP_CWORD )); then
        local whole="" prefix
        for (( j = start; j <= COMP_CWORD; j++ )); do whole+=${{COMP_WORDS[j]}}; done
        _graceful__run "$1" "$whole" "${{COMP_WORDS[start - 1]}}"
        prefix=${{whole%"${{COMP_WORDS[COMP_CWORD]}}"}}
        COMPREPLY=( "${{COMPREPLY[@]#"$prefix"}}" )
        return
    fi
    _graceful__run "$@"
}}

# The command line from word $1 on, completed as its own: bash-completion's _command_offset
# when it is loaded, else command names and then file names.
_graceful_run_command() {{
    if declare -F _command_offset >/dev/null; then
        _command_offset "$1"
    elif (( COMP_CWORD == $1 )); then
        COMPREPLY=( $(compgen -c -- "${{COMP_WORDS[COMP_CWORD]}}") )
    else
        COMPREPLY=( $(compgen -f -- "${{COMP_WORDS[COMP_CWORD]}}") )
    fi
}}

complete -F _graceful_run_complete -o bashdefault -o default graceful-run
"#
    )
}

/// fish: clap_complete leaves positionals out; complete COMMAND and its arguments with fish's
/// own helper for sudo-like commands, given the options that take a value. The helper reads
/// leading `--word` arguments as its own flags: the list starts with `-l`.
fn fish_command_completion(command: &clap::Command) -> String {
    let options = options_with_values(command, " ", "--");
    assert!(options.starts_with("-l "), "{options}");
    format!(
        "# Added by tests/generated_files.rs: COMMAND and its arguments, as for sudo and env.\n\
         complete -c graceful-run -x -a '(__fish_complete_subcommand {options})'\n"
    )
}

/// fish: clap_complete offers graceful-run's options anywhere on the line, also after the
/// command, where `graceful-run ... fakecmd --b` would offer graceful-run's `--build` next to
/// fakecmd's `--beta`. Each of its lines gets a condition: no command word yet (a word that
/// is neither an option nor an option's value, or `--`).
fn fish_options_before_the_command(command: &clap::Command, script: &[u8]) -> Vec<u8> {
    let script = String::from_utf8(script.to_vec()).expect("the fish script is text");
    let options = options_with_values(command, " ", "--");
    let conditioned = script.replace(
        "complete -c graceful-run ",
        "complete -c graceful-run -n __graceful_run_no_command ",
    );
    format!(
        "# Added by tests/generated_files.rs: graceful-run's options only before COMMAND.\n\
         function __graceful_run_no_command\n\
         \x20   set -l tokens (commandline -opc)\n\
         \x20   set -e tokens[1]\n\
         \x20   while set -q tokens[1]\n\
         \x20       switch $tokens[1]\n\
         \x20           case --\n\
         \x20               return 1\n\
         \x20           case {options}\n\
         \x20               set -e tokens[1]\n\
         \x20           case '-*'\n\
         \x20           case '*'\n\
         \x20               return 1\n\
         \x20       end\n\
         \x20       set -e tokens[1]\n\
         \x20   end\n\
         \x20   return 0\n\
         end\n{conditioned}"
    )
    .into_bytes()
}

fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let root = root();
    vec![
        (root.join("man/graceful-run.1"), man_page()),
        (
            root.join("completions/graceful-run.bash"),
            completion(Shell::Bash),
        ),
        (
            root.join("completions/_graceful-run"),
            completion(Shell::Zsh),
        ),
        (
            root.join("completions/graceful-run.fish"),
            completion(Shell::Fish),
        ),
    ]
}

/// The committed man page and completions are exactly what the current flags generate.
#[test]
fn man_page_and_completions_are_up_to_date() {
    let update = std::env::var_os("UPDATE_GENERATED").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (path, content) in generated() {
        let current = std::fs::read(&path).unwrap_or_default();
        if current == content {
            continue;
        }
        if update {
            std::fs::write(&path, &content)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        } else {
            stale.push(
                path.strip_prefix(root())
                    .unwrap_or(Path::new("?"))
                    .display()
                    .to_string(),
            );
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files: {}; run `UPDATE_GENERATED=1 cargo test --test generated_files`",
        stale.join(", ")
    );
}

/// The man page covers every flag, the environment, signals, exit codes and examples.
#[test]
fn man_page_covers_the_reference() {
    let page = String::from_utf8(man_page()).expect("roff is text");
    for argument in graceful_run::cli::command().get_arguments() {
        if let Some(long) = argument.get_long() {
            assert!(
                page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                "--{long} missing"
            );
        }
        if let Some(variable) = argument.get_env() {
            let variable = variable.to_string_lossy();
            assert!(page.contains(variable.as_ref()), "{variable} missing");
        }
    }
    // SYNOPSIS shows each option's value; literal text is bold, not in raw backticks.
    assert!(
        page.contains("[\\fB\\-l\\fR|\\fB\\-\\-listen\\fR \\fISPEC\\fR]..."),
        "SYNOPSIS lacks -l's value"
    );
    assert!(page.contains("\\fB\\-\\-ready\\fR \\fIMODE\\fR"));
    assert!(!page.contains('`'), "a backtick is left in the man page");
    for section in [
        "ENVIRONMENT GIVEN TO THE COMMAND",
        "SIGNALS",
        "EXIT STATUS",
        "EXAMPLES",
        "GRACEFUL_RUN_",
    ] {
        assert!(page.contains(section), "{section} missing");
    }
}
