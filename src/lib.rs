//! graceful-run: run a server with graceful stops, zero-downtime restarts and socket
//! activation. The binary's `main` is a thin shell around [`run`].
//!
//! Module map:
//! - `cli`, `config`: flags and GRACEFUL_RUN_* variables to a validated [`config::Config`].
//! - `listen`: the listening sockets graceful-run holds for the life of the service.
//! - `spawn`: every fork/exec/fd/signal-mask hazard, in one place.
//! - `child_env`: the environment each generation receives.
//! - `signal`: names, the `--map-signal` table, and receiving signals with their sender.
//! - `reaper`: the one caller of wait(2).
//! - `notify`: sd_notify, from the command and to graceful-run's own supervisor.
//! - `supervisor`: the one task that owns every process and decides everything
//!   (`restart`: generations, readiness, backoff; `stop`: the stop sequence and leftovers;
//!   `terminal`: job control).
//! - `accepting`: which listeners a generation waits on, from /proc (`--ready accepting`).
//! - `process`: facts from /proc and the terminal (descendants, leftovers, foreground).
//! - `exit`: every exit status, decided in one place.
//! - `log`: graceful-run's own lines on stderr, text or JSON, never blocking.
//! - `control`: `graceful-run ctl` and the control socket it talks to.
//! - `doc`: the reference sections shared by `--help` and the man page.
//! - `pid_file`: `--pid-file`.
//! - `random`: unpredictable names for files in shared directories.

pub mod accepting;
pub mod child_env;
pub mod cli;
pub mod config;
pub mod control;
pub mod doc;
pub mod exit;
pub mod listen;
pub mod log;
pub mod notify;
pub mod pid_file;
pub mod process;
pub mod random;
pub mod reaper;
pub mod signal;
pub mod spawn;
pub mod supervisor;

use anyhow::Context;
use config::Config;
use exit::Outcome;
use log::Subject;

/// Runs the service described by `config` to its end. Everything graceful-run created
/// (socket files, the pid file) is removed before this returns.
pub fn run(config: &Config) -> Outcome {
    log::init(config.log_level, config.log_format);
    // Read before any handler is installed: what the command must inherit as ignored.
    let ignored_signals = signal::receive::originally_ignored();
    let program = &config.command[0];
    let path = std::env::var_os("PATH");
    if let Err(e) = spawn::look_up(program, path.as_deref()) {
        error!(Subject::NONE, "{}", config::escape_controls(&e.to_string()));
        return Outcome::Code(e.exit_code());
    }

    // One thread: fork is then free of other threads' locks, and PR_SET_PDEATHSIG (which
    // follows the forking thread) follows the process.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the event loop")
    {
        Ok(runtime) => runtime,
        Err(e) => return startup_failed(&e),
    };
    runtime.block_on(serve(config, ignored_signals))
}

/// Logs a startup error with its chain of context on one line (`--listen '[::]:80': cannot
/// bind [::]:80: Permission denied`), and gives graceful-run's own failure status.
fn startup_failed(error: &anyhow::Error) -> Outcome {
    error!(
        Subject::NONE,
        "{}",
        config::escape_controls(&format!("{error:#}"))
    );
    Outcome::Code(exit::FAILURE)
}

/// What graceful-run holds before the first generation starts.
struct Started {
    signals: signal::receive::SignalReceiver,
    /// Removed when dropped.
    pid_file: Option<pid_file::PidFile>,
    listeners: listen::Listeners,
}

/// Everything that can fail before the command runs, in the order that keeps it clean:
/// handlers first (a TERM that arrives while sockets are being bound must stop the service
/// cleanly, not kill graceful-run and leave a socket file behind), then the pid file (a
/// script that reads the pid as soon as the file appears and sends HUP must reach a
/// graceful-run that handles it), then the sockets.
fn start(config: &Config) -> anyhow::Result<Started> {
    let signals =
        signal::receive::SignalReceiver::install().context("cannot install signal handlers")?;
    let pid_file = match &config.pid_file {
        Some(path) => Some(
            pid_file::PidFile::create(path)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--pid-file '{}'", path.display()))?,
        ),
        None => None,
    };
    let listeners = listen::Listeners::bind(&config.listen)?;
    for (i, listener) in listeners.iter().enumerate() {
        info!(
            Subject::NONE,
            "listening on {} (fd {}, name {})",
            config::escape_controls(&listener.bound.to_string()),
            3 + i,
            config::escape_controls(listener.fd_name())
        );
    }
    Ok(Started {
        signals,
        pid_file,
        listeners,
    })
}

async fn serve(config: &Config, ignored_signals: Vec<signal::Signal>) -> Outcome {
    let Started {
        signals,
        pid_file: _pid_file,
        mut listeners,
    } = match start(config) {
        Ok(started) => started,
        Err(e) => return startup_failed(&e),
    };
    let pid1 = std::process::id() == 1;
    let mut reaper = pid1;
    if !pid1 && config.subreaper {
        // SAFETY: prctl with integer arguments only.
        let result = unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        reaper = result == 0;
        if result != 0 {
            warn!(
                Subject::NONE,
                "cannot become a child subreaper ({}): orphaned descendants will not be reaped or waited for",
                nix::errno::Errno::last().desc()
            );
        }
    }
    let upstream = std::env::var("NOTIFY_SOCKET").ok().and_then(|value| {
        notify::Upstream::new(&value)
            .map_err(|why| warn!(Subject::NONE, "{why}"))
            .ok()
    });
    let terminal = if config.process_group {
        process::terminal_we_lead()
    } else {
        None
    };
    let env = child_env::ChildEnv::new(spawn::current_env(), config.user.as_ref());
    let setup = supervisor::Setup {
        config,
        listeners: &mut listeners,
        env,
        signals,
        ignored_signals,
        upstream,
        terminal,
        pid1,
        reaper,
        proc_is_ours: process::proc_is_ours(),
    };
    let outcome = supervisor::Supervisor::new(setup).run().await;
    listeners.remove_socket_files();
    outcome
}
