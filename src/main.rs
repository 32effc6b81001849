//! The `graceful-run` binary: parse, run, end. Everything else is in the library.

use std::io::Write;

use graceful_run::{config, exit};

mod notify_cmd;

fn main() {
    ensure_standard_fds();
    // `graceful-run notify ...` is a mode of its own; `graceful-run -- notify` runs a command.
    if std::env::args_os().nth(1).is_some_and(|a| a == "notify") {
        exit::terminate(exit::Ending::Exit(notify_cmd::main(
            std::env::args_os().skip(2),
        )));
    }
    let config = match config::parse(std::env::args_os()) {
        Ok(config) => config,
        Err(config::Stop::Info(text)) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            exit::terminate(exit::Ending::Exit(0));
        }
        Err(config::Stop::Invalid(message)) => {
            eprintln!("graceful-run: {message}");
            exit::terminate(exit::Ending::Exit(exit::FAILURE));
        }
    };
    let outcome = graceful_run::run(&config);
    let is_pid1 = std::process::id() == 1;
    exit::terminate(exit::decide(outcome, &config.exit_codes, is_pid1));
}

/// Opens /dev/null on any of fds 0-2 that is closed, so that no socket graceful-run opens
/// lands there and becomes the command's stdin or stdout.
fn ensure_standard_fds() {
    for fd in 0..3 {
        if nix::fcntl::fcntl(unsafe_borrow(fd), nix::fcntl::FcntlArg::F_GETFD)
            == Err(nix::errno::Errno::EBADF)
        {
            // open() returns the lowest free fd, which is this one.
            let _ = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(std::mem::forget);
        }
    }
}

fn unsafe_borrow(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: the fd is only queried with F_GETFD, which is harmless on a closed fd (EBADF).
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}
