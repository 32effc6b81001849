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
    man.render_synopsis_section(&mut page)
        .expect("writing to a Vec cannot fail");
    man.render_description_section(&mut page)
        .expect("writing to a Vec cannot fail");
    man.render_options_section(&mut page)
        .expect("writing to a Vec cannot fail");
    // Our own sections (environment, signals, exit status, examples) replace clap_mangen's
    // "extra" section, which would print the same text without roff formatting.
    page.extend_from_slice(graceful_run::doc::roff().as_bytes());
    man.render_version_section(&mut page)
        .expect("writing to a Vec cannot fail");
    page
}

fn completion(shell: Shell) -> Vec<u8> {
    let mut command = graceful_run::cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "graceful-run", &mut script);
    script
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
