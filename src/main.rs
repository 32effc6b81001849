//! The `graceful-run` binary: dispatch on the first argument, parse, run, end. Everything else
//! is in the library.
//!
//! Nothing here may panic on a failed write: the error line of a bad flag, or `--help`, can
//! meet a closed or broken stderr/stdout (`graceful-run --help | head -1`, a daemon started
//! with `2>&-`), and a panic there would turn exit status 125 into 101 or an abort (134).
//!
//! No Rust `main`: the C `main` below is the entry point, which skips what Rust's runtime does
//! before `main` and graceful-run does not need: its stack-overflow guard (which finds the
//! main thread's stack by reading and parsing /proc/self/maps with `sscanf`, 15% of the
//! instructions of a whole `graceful-run -- true`, then installs SIGSEGV and SIGBUS handlers
//! on an alternate stack: 13 system calls), and its `poll` of fds 0-2, which
//! `ensure_standard_fds` does anyway. What it does that graceful-run relies on is done here:
//! SIGPIPE ignored, and the arguments taken from `argv` (Rust's runtime on musl takes them
//! from its `main` only). A stack overflow still kills (the kernel's guard gap), as SIGSEGV
//! instead of a message and SIGABRT. Unit tests keep the test harness's `main`.
#![cfg_attr(not(test), no_main)]

use std::ffi::OsString;
use std::io::Write;

use graceful_run::exit::{self, ChildExit, Ending, Outcome};
use graceful_run::log::Subject;
use graceful_run::{config, info};

mod notify_cmd;

// The unwinder from libgcc_eh.a, linked in, instead of libgcc_s.so.1 loaded at every start:
// listed before std's own `-lgcc_s`, it provides the `_Unwind_*` symbols, and the linker's
// --as-needed then drops libgcc_s. Measured (perf stat -r 100, `graceful-run -q -- true`):
// task-clock 2.80-2.93 -> 2.48-2.50 ms, page faults 197-199 -> 192, VmRSS -176 KiB; one
// shared library fewer for the loader to find, map and relocate (BENCHMARKS.md, figure 1).
// glibc targets only: musl and crt-static builds link their unwinder statically already.
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    not(target_feature = "crt-static")
))]
#[link(name = "gcc_eh", kind = "static", modifiers = "-bundle")]
unsafe extern "C" {}

/// The process's entry point, called by the C library with the arguments.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    argc: nix::libc::c_int,
    argv: *const *const nix::libc::c_char,
) -> nix::libc::c_int {
    // As Rust's runtime does before `main`: a write to a closed pipe or socket (a ctl client
    // that went away, `--help | head -1`) returns EPIPE instead of killing graceful-run.
    // SAFETY: SIG_IGN installs no handler; one thread runs so far.
    unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_IGN) };
    let args = (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| {
            use std::os::unix::ffi::OsStrExt;
            // SAFETY: the C library passes argc valid, NUL-terminated strings in argv, which
            // live as long as the process.
            let arg = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
            std::ffi::OsStr::from_bytes(arg.to_bytes()).to_os_string()
        })
        .collect();
    run(args)
}

/// Unit tests have the test harness's `main` instead, so nothing calls this there.
#[cfg_attr(test, allow(dead_code))]
fn run(args: Vec<OsString>) -> ! {
    ensure_standard_fds();
    // Other modes of the same binary dispatch here on their first word, exactly; a program of
    // that name runs as `graceful-run -- ctl` / `graceful-run -- notify`.
    let ending = match args.get(1).map(OsString::as_os_str) {
        Some(word) if word == "ctl" => {
            Ending::Exit(graceful_run::control::client::main(args[1..].to_vec()))
        }
        Some(word) if word == "notify" => Ending::Exit(notify_cmd::main(args[2..].iter().cloned())),
        _ => supervise(args),
    };
    exit::terminate(ending)
}

/// `graceful-run [OPTIONS] [--] COMMAND [ARGS]...`: run and supervise the command.
fn supervise(args: Vec<OsString>) -> Ending {
    let config = match config::parse(args) {
        Ok(config) => config,
        Err(config::Stop::Info(text)) => return print_info(&text),
        Err(config::Stop::Invalid(message)) => {
            // Nowhere left to report a failed write of the error itself: the status says it.
            let _ = writeln!(std::io::stderr(), "graceful-run: {message}");
            return Ending::Exit(exit::FAILURE);
        }
    };
    let outcome = graceful_run::run(&config);
    let is_pid1 = std::process::id() == 1;
    let ending = exit::decide(outcome, &config.exit_codes, is_pid1);
    // graceful-run's own failures (125, 126, 127) were explained by their error line; after
    // the command ran, say how graceful-run itself ends, since a mapped status or a death by
    // signal is not what the command's exit line shows.
    if let Outcome::Child(child) = outcome {
        match (ending, child) {
            (Ending::Raise(signal), _) => {
                info!(Subject::NONE, "dying of {signal} like the command");
            }
            (Ending::Exit(code), _) if code != child.code() => {
                info!(
                    Subject::NONE,
                    "exiting with status {code} (the command's {}, after --exit-code-map)",
                    child.code()
                );
            }
            (Ending::Exit(code), ChildExit::Signaled { signal, .. }) if is_pid1 => {
                info!(
                    Subject::NONE,
                    "exiting with status {code}: as PID 1, graceful-run cannot die of {signal} like the command"
                );
            }
            (Ending::Exit(code), _) => info!(Subject::NONE, "exiting with status {code}"),
        }
    }
    ending
}

/// Prints `--help` or `--version` on stdout: status 0, also when the reader went away early
/// (`--help | head -1`, EPIPE); 125 with one line on stderr when stdout cannot be written
/// (closed, full).
fn print_info(text: &str) -> Ending {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ending::Exit(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ending::Exit(0),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "graceful-run: cannot write to stdout: {e}"
            );
            Ending::Exit(exit::FAILURE)
        }
    }
}

/// Opens /dev/null on any of fds 0-2 that is closed, so that no socket graceful-run opens
/// lands there and becomes the command's stdin or stdout.
fn ensure_standard_fds() {
    for fd in 0..3 {
        // A raw fcntl, not a BorrowedFd: the fd may be closed, and a BorrowedFd promises an
        // open one.
        // SAFETY: F_GETFD reads a flag; on a closed fd it only fails with EBADF.
        let closed = unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } == -1
            && nix::errno::Errno::last() == nix::errno::Errno::EBADF;
        if closed {
            // open() returns the lowest free fd, which is this one.
            let _ = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(std::mem::forget);
        }
    }
}
