//! `waiting`: runs a command on a loopback listener (fd 3, LISTEN_FDS=1) and says when its
//! processes begin waiting for connections, as `--ready accepting` sees it: a way to try the
//! detector on a server before relying on it.
//!
//! ```text
//! target/debug/examples/waiting -- node -e "require('net').createServer().listen({fd: 3})"
//! started pid 4242
//! waiting after 41 ms
//! ```
//!
//! Like graceful-run, it runs the command in a process group of its own and is a child
//! subreaper, so that processes the command leaves behind when its first process exits (a
//! server that daemonizes) are still found. It prints `not waiting after 20s` and exits 1
//! when the command never waits; either way it kills the command's group at the end.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use graceful_run::accepting::{Scope, listener_inode, waiting_on};
use graceful_run::supervisor::core::{PROBE_FAST_LOOKS, PROBE_FIRST, PROBE_MAX};
use nix::libc;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

// Within the test harness's 30 s deadline, so that a test sees the answer.
const GIVE_UP_AFTER: Duration = Duration::from_secs(20);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.iter().position(|a| a == "--") {
        Some(i) if i + 1 < args.len() => &args[i + 1..],
        _ => {
            eprintln!("usage: waiting -- COMMAND [ARGS...]");
            std::process::exit(125);
        }
    };
    std::process::exit(run(command));
}

fn run(command: &[String]) -> i32 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback binds");
    let inode = listener_inode(listener.as_fd()).expect("fstat of a socket works");
    nix::sys::prctl::set_child_subreaper(true).expect("Linux has child subreapers");
    let fd = listener.as_raw_fd();
    let mut child = std::process::Command::new(&command[0]);
    child
        .args(&command[1..])
        .env("LISTEN_FDS", "1")
        .process_group(0);
    // SAFETY: between fork and exec only dup2 and fcntl run, both async-signal-safe, on an
    // fd that stays open in the parent for the whole spawn.
    unsafe {
        child.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 clears FD_CLOEXEC on its target, but an fd that already is 3 keeps it.
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let started = Instant::now();
    let leader = match child.spawn() {
        Ok(leader) => Pid::from_raw(leader.id() as i32),
        Err(e) => {
            eprintln!("waiting: cannot run {}: {e}", command[0]);
            return 127;
        }
    };
    println!("started pid {leader}");
    // The schedule graceful-run's core keeps for --ready accepting.
    let mut checks = 0;
    let mut interval = PROBE_FIRST;
    let code = loop {
        match waiting_on(Scope::Group(leader), &[inode]) {
            Ok(found) if !found.is_empty() => {
                // CLOCK_MONOTONIC too, to compare with a server's own clock readings.
                let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                    .expect("the monotonic clock is readable");
                println!(
                    "waiting after {} ms (CLOCK_MONOTONIC {}.{:09})",
                    started.elapsed().as_millis(),
                    now.tv_sec(),
                    now.tv_nsec()
                );
                break 0;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("waiting: cannot read /proc: {e}");
                break 1;
            }
        }
        if started.elapsed() > GIVE_UP_AFTER {
            println!("not waiting after {}s", GIVE_UP_AFTER.as_secs());
            break 1;
        }
        // Reap the leader (and orphans) if they exited, as graceful-run would.
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
        std::thread::sleep(interval);
        checks += 1;
        if checks >= PROBE_FAST_LOOKS {
            interval = (interval * 2).min(PROBE_MAX);
        }
    };
    let _ = killpg(leader, Signal::SIGKILL);
    // Every process of the group was our child or became one: reap them all.
    while waitpid(None, None).is_ok() {}
    code
}
