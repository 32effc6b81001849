//! Build-time checks for the third-party tools some integration tests drive.
//!
//! libtest cannot skip a test at run time: a test that returns early when its tool is missing
//! is reported `ok`, and the summary a user reads hides that it checked nothing. So each tool
//! found here sets a cfg (`has_gunicorn`), and a test that needs it carries
//!
//! ```text
//! #[cfg_attr(not(has_gunicorn), ignore = "gunicorn not installed: python3 -m pip install gunicorn")]
//! ```
//!
//! which `cargo test` counts in its summary line (`1 ignored`) and names with its reason.
//!
//! In CI a missing tool must fail, not skip: with GRACEFUL_RUN_TEST_REQUIRE_ALL=1 (what
//! `.ci/run` sets) or GRACEFUL_RUN_TEST_REQUIRE_<TOOL>=1 (e.g. `..._GUNICORN`), the cfg is
//! set whatever is found, so the test runs and fails on the missing tool.
//!
//! To add a tool: one entry in [`TOOLS`]. Cargo reruns this script when a directory on PATH
//! changes (a command installed) or a REQUIRE variable changes; after installing something
//! that adds no command (a Python module into an existing tree, bash-completion),
//! `touch build.rs` makes the next `cargo test` look again.

use std::process::{Command, Stdio};

/// A tool: the cfg it sets, its REQUIRE name, and a command that succeeds when it is usable.
struct Tool {
    cfg: &'static str,
    name: &'static str,
    probe: &'static [&'static str],
}

const TOOLS: &[Tool] = &[
    Tool {
        cfg: "has_gunicorn",
        name: "GUNICORN",
        probe: &["python3", "-c", "import gunicorn"],
    },
    Tool {
        cfg: "has_bash_completion",
        name: "BASH_COMPLETION",
        probe: &[
            "bash",
            "-c",
            ". /usr/share/bash-completion/bash_completion && declare -F _command_offset",
        ],
    },
    Tool {
        cfg: "has_fish",
        name: "FISH",
        probe: &["fish", "--no-config", "-c", "true"],
    },
    Tool {
        cfg: "has_uvicorn",
        name: "UVICORN",
        probe: &["python3", "-c", "import uvicorn"],
    },
    Tool {
        cfg: "has_hypercorn",
        name: "HYPERCORN",
        probe: &["python3", "-c", "import hypercorn"],
    },
    Tool {
        cfg: "has_uwsgi",
        name: "UWSGI",
        probe: &["uwsgi", "--version"],
    },
    Tool {
        cfg: "has_starman",
        name: "STARMAN",
        probe: &["starman", "--version"],
    },
    Tool {
        cfg: "has_go",
        name: "GO",
        probe: &["go", "version"],
    },
    Tool {
        cfg: "has_node",
        name: "NODE",
        probe: &["node", "--version"],
    },
    Tool {
        cfg: "has_puma",
        name: "PUMA",
        probe: &["puma", "--version"],
    },
    Tool {
        cfg: "has_ruby_sd_notify",
        name: "RUBY_SD_NOTIFY",
        probe: &["ruby", "-e", "require 'sd_notify'; require 'puma'"],
    },
    Tool {
        cfg: "has_fuse",
        name: "FUSE",
        probe: &["test", "-c", "/dev/fuse"],
    },
    Tool {
        cfg: "has_systemd_notify",
        name: "SYSTEMD_NOTIFY",
        probe: &["systemd-notify", "--version"],
    },
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=GRACEFUL_RUN_TEST_REQUIRE_ALL");
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path).filter(|dir| dir.is_dir()) {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }
    link_startup_text_first();
    let require_all = required("GRACEFUL_RUN_TEST_REQUIRE_ALL");
    for tool in TOOLS {
        let variable = format!("GRACEFUL_RUN_TEST_REQUIRE_{}", tool.name);
        println!("cargo::rerun-if-env-changed={variable}");
        println!("cargo::rustc-check-cfg=cfg({})", tool.cfg);
        if require_all || required(&variable) || available(tool.probe) {
            println!("cargo::rustc-cfg={}", tool.cfg);
        }
    }
}

fn required(variable: &str) -> bool {
    std::env::var_os(variable).is_some_and(|value| value == "1")
}

fn available(probe: &[&str]) -> bool {
    Command::new(probe[0])
        .args(&probe[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Links the functions that a plain start runs first and together (src/startup-text.ld,
/// written by bench/startup-text): the kernel maps code 64 KiB around every page a process
/// reads, so startup code spread over the whole executable made most of it resident. Measured
/// (`graceful-run -q -- sleep 100`): VmRSS 3636 -> 2616 KiB, page faults per start 178 -> 171.
/// An `INSERT` script adds one output section to the linker's own layout (lld's and GNU ld's
/// alike) and changes nothing else; names that match nothing are ignored.
fn link_startup_text_first() {
    println!("cargo::rerun-if-changed=src/startup-text.ld");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let script = std::path::Path::new(&dir).join("src/startup-text.ld");
    if !script.is_file() {
        return; // a packaging that left it out: the layout is only worse
    }
    // `-T FILE` to the compiler driver, as two arguments: a path with a comma in it would be
    // cut in two by `-Wl,`.
    println!("cargo::rustc-link-arg-bins=-T");
    println!("cargo::rustc-link-arg-bins={}", script.display());
    // bench/startup-text reads where each function went from the linker's map: the release
    // build it traces is the one users get, stripped, with the same symbol names.
    println!("cargo::rerun-if-env-changed=GRACEFUL_RUN_LINK_MAP");
    if let Some(map) = std::env::var_os("GRACEFUL_RUN_LINK_MAP") {
        println!(
            "cargo::rustc-link-arg-bins=-Wl,-Map={}",
            map.to_string_lossy()
        );
    }
}
