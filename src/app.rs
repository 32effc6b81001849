//! The application's wiring: everything between a validated [`Config`] and the
//! supervisor's loop, in the order that keeps a failed start clean (handlers, pid file,
//! sockets), and the runtime it all runs on.

use anyhow::Context;

use crate::config::{self, Config};
use crate::exit::{self, Outcome};
use crate::log::{self, Subject};
use crate::{
    child_env, cli, error, info, listen, notify, pid_file, process, signal, spawn, supervisor, warn,
};

/// Runs the service described by `config` to its end. Everything graceful-run created
/// (socket files, the pid file) is removed before this returns.
pub fn run(config: &Config) -> Outcome {
    log::init(config.log_level, config.log_format);
    // Read before any handler is installed: what the command must inherit as ignored.
    let ignored_signals = signal::receive::originally_ignored();
    let program = &config.command[0];
    let path = std::env::var_os("PATH");
    // Looked up here to fail before anything is set up (127, 126); the first generation then
    // runs what was found, without walking PATH again a few microseconds later.
    let executable = match spawn::look_up(program, path.as_deref()) {
        Ok(executable) => executable,
        Err(e) => {
            error!(Subject::NONE, "{}", config::escape_controls(&e.to_string()));
            return Outcome::Code(e.exit_code());
        }
    };

    // One runtime thread, which does every fork: PR_SET_PDEATHSIG (which follows the forking
    // thread) then follows the process. (Short-lived threads may look at /proc while a
    // generation starts, see `accepting`, or sample memory under --max-memory; they never
    // fork, and a child runs only async-signal-safe code between fork and exec, so a lock one
    // of them holds does not matter.)
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the event loop")
    {
        Ok(runtime) => runtime,
        Err(e) => return startup_failed(&e),
    };
    runtime.block_on(serve(config, ignored_signals, executable))
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
    /// The TCP listeners were bound to found steering groups.
    steering: bool,
    watch: Option<crate::watch::Watch>,
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
    if let Some(cpus) = &config.workers.auto {
        info!(Subject::NONE, "--workers auto: {cpus}");
    }
    let (steering, notes) = steering_wanted(config);
    let listeners = listen::Listeners::bind_with(&config.listen, steering)?;
    for note in &notes {
        note.log();
    }
    for (i, listener) in listeners.iter().enumerate() {
        info!(
            Subject::NONE,
            "listening on {} (fd {}, name {})",
            config::escape_controls(&listener.bound.to_string()),
            3 + i,
            config::escape_controls(listener.fd_name())
        );
    }
    // --watch: watched from the start, so that a change while the first generation boots
    // counts.
    let watch = match &config.watch {
        Some(watch) => Some(
            crate::watch::Watch::start(&watch.paths)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("--watch")?,
        ),
        None => None,
    };
    Ok(Started {
        signals,
        pid_file,
        listeners,
        steering,
        watch,
    })
}

/// Whether the TCP listeners are bound to found steering groups (issue 16): `--handover steer`
/// (the default), a TCP listener without `,reuseport`, and a kernel that runs the steering
/// program (checked once, about 0.2 ms, and only then). Otherwise every generation shares each
/// listener, as before steering existed, and one line says why: the lines are returned, to be
/// logged once the listeners are bound (a bind that fails is then the only line).
fn steering_wanted(config: &Config) -> (bool, Vec<SteeringNote>) {
    use listen::{Address, steer};
    if config.handover != cli::Handover::Steer {
        return (false, Vec::new());
    }
    let tcp: Vec<&listen::ListenSpec> = config
        .listen
        .iter()
        .filter(|spec| matches!(spec.address, Address::Tcp(..)))
        .collect();
    let mut notes: Vec<SteeringNote> = tcp
        .iter()
        .filter(|spec| spec.reuseport)
        .map(|spec| {
            SteeringNote::Info(format!(
                "--listen '{}': one socket for every generation: with ,reuseport other programs may join its group, so new connections cannot be steered",
                config::escape_controls(&spec.text)
            ))
        })
        .collect();
    if tcp.iter().all(|spec| spec.reuseport) {
        return (false, notes);
    }
    match steer::supported() {
        steer::Support::Yes => (true, notes),
        steer::Support::No(why) => {
            notes.push(SteeringNote::Warn(format!(
                "new connections cannot be steered here ({why}): every generation shares the listeners, and a restart relies on the old one to stop accepting on its stop signal"
            )));
            (false, notes)
        }
    }
}

/// A line about steering, logged once the listeners are bound.
enum SteeringNote {
    Info(String),
    Warn(String),
}

impl SteeringNote {
    fn log(&self) {
        match self {
            SteeringNote::Info(line) => info!(Subject::NONE, "{line}"),
            SteeringNote::Warn(line) => warn!(Subject::NONE, "{line}"),
        }
    }
}

async fn serve(
    config: &Config,
    ignored_signals: Vec<signal::Signal>,
    executable: std::path::PathBuf,
) -> Outcome {
    let Started {
        signals,
        pid_file: _pid_file,
        mut listeners,
        steering,
        watch,
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
    let upstream = std::env::var_os("NOTIFY_SOCKET").and_then(|value| {
        notify::Upstream::new(&value)
            .map_err(|why| warn!(Subject::NONE, "{why}"))
            .ok()
    });
    // A --user command gets no controlling terminal (spawn.rs: setsid), so no job control
    // either: graceful-run keeps the terminal's foreground and forwards Ctrl-C.
    let terminal = if config.process_group && config.user.is_none() {
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
        steering,
        watch,
        executable,
    };
    let outcome = supervisor::Supervisor::new(setup).run().await;
    listeners.remove_socket_files();
    outcome
}
