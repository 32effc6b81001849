//! graceful-run as an init: orphans re-parented to it are reaped (as a child subreaper and as
//! PID 1 of a pid namespace), its child dies with it, and an idle graceful-run never wakes.

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::libc;

use crate::support::{
    Gr, KillOnDrop, alive, code, descendants, graceful_run_bin, killed_by, poll_until, probe,
    processes, sleep_marker, sleepers,
};

/// How many orphans the probe leaves behind.
const ORPHANS: usize = 100;

/// The pids of the verbose "reaped orphan" lines.
fn reaped_orphans(gr: &Gr) -> Vec<i32> {
    gr.stderr
        .snapshot()
        .iter()
        .filter(|line| line.contains("reaped orphan"))
        .filter_map(|line| {
            let rest = &line[line.find("pid ")? + 4..];
            rest[..rest.find(':')?].parse().ok()
        })
        .collect()
}

/// Waits until graceful-run has logged `count` reaped orphans.
fn wait_reaped(gr: &Gr, count: usize) -> Vec<i32> {
    gr.poll(&format!("{count} orphans are reaped"), || {
        Some(reaped_orphans(gr)).filter(|reaped| reaped.len() >= count)
    })
}

/// The pid namespace of `pid`, as the target of its /proc/PID/ns/pid link.
fn pid_namespace(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|target| target.display().to_string())
}

/// Total context switches of `pid`'s main thread, from /proc/PID/status.
fn context_switches(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("graceful-run is running")
        .lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// As a child subreaper, graceful-run reaps the 100 orphans the command leaves: each is
/// logged, and none is left as a zombie; only the command remains below graceful-run.
#[test]
fn subreaper_reaps_every_orphan() {
    let probe = probe();
    let mut gr = Gr::start(&["-v", "--", &probe, "orphans", &ORPHANS.to_string()]);
    gr.wait_stdout("ready");
    let child = gr.generation_pid(1);
    let reaped = wait_reaped(&gr, ORPHANS);
    poll_until("only the command is left below graceful-run", || {
        descendants(gr.pid()) == [(child, 'S')]
    });
    let mut distinct = reaped.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ORPHANS, "{}", gr.output());
    assert!(!reaped.contains(&child), "{}", gr.output());

    gr.terminate_expecting_death_by(libc::SIGTERM);
    assert_eq!(reaped_orphans(&gr).len(), ORPHANS, "{}", gr.output());
}

/// With `--no-subreaper` the orphans go to the system's init: graceful-run reaps none.
#[test]
fn no_subreaper_leaves_orphans_to_init() {
    let probe = probe();
    let gr = Gr::start(&[
        "-v",
        "--no-subreaper",
        "--",
        &probe,
        "orphans",
        &ORPHANS.to_string(),
    ]);
    gr.wait_stdout("ready");
    let child = gr.generation_pid(1);
    // The orphans are children of neither graceful-run nor its command. (Pids only: the
    // command may still be running, state R, right after it printed `ready`.)
    let below: Vec<i32> = descendants(gr.pid())
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(below, [child], "{}", gr.output());
    // They stay in the command's process group until they end.
    poll_until("every orphan has ended", || {
        processes()
            .into_iter()
            .filter(|(pid, _, _)| *pid != child && alive(*pid))
            .all(|(pid, _, _)| {
                nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).ok()
                    != Some(nix::unistd::Pid::from_raw(child))
            })
    });
    // A barrier: graceful-run handles the forwarded WINCH (ignored by the probe) after any
    // SIGCHLD the orphans' deaths could have sent it.
    gr.signal(libc::SIGWINCH);
    gr.wait_stderr("forwarding SIGWINCH");
    assert_eq!(reaped_orphans(&gr), Vec::<i32>::new(), "{}", gr.output());
    // Not stopped with TERM: the orphans' zombies belong to init, which may reap them late,
    // and graceful-run waits for its command's process group to be empty. Dropping `gr`
    // kills it, and the probe with it.
}

/// As PID 1 of a pid namespace, graceful-run reaps the 100 orphans, stops on TERM with
/// 128+15, and no process of the namespace outlives it.
#[test]
fn pid1_reaps_every_orphan_and_leaves_no_process() {
    let probe = probe();
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(graceful_run_bin())
        .args(["-v", "--", &probe, "orphans", &ORPHANS.to_string()])
        .stdin(Stdio::null());
    let mut unshare = Gr::spawn(command);
    unshare.wait_stdout("ready");
    let reaped = wait_reaped(&unshare, ORPHANS);
    assert_eq!(reaped.len(), ORPHANS, "{}", unshare.output());

    let inner = processes()
        .into_iter()
        .find(|(_, ppid, _)| *ppid == unshare.pid())
        .map(|(pid, _, _)| pid)
        .expect("graceful-run runs below unshare");
    let namespace = pid_namespace(inner).expect("graceful-run's namespace is readable");
    assert_ne!(
        Some(namespace.clone()),
        pid_namespace(std::process::id() as i32)
    );
    poll_until("the orphans are reaped", || descendants(inner).len() == 1);

    // graceful-run handles TERM, so a signal from outside the namespace reaches its PID 1.
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(inner, libc::SIGTERM) };
    let status = unshare.wait_exit();
    assert_eq!(
        code(status),
        Some(128 + libc::SIGTERM),
        "{}",
        unshare.output()
    );
    let left: Vec<i32> = processes()
        .into_iter()
        .map(|(pid, _, _)| pid)
        .filter(|pid| pid_namespace(*pid).as_ref() == Some(&namespace))
        .collect();
    assert_eq!(left, Vec::<i32>::new(), "{}", unshare.output());
}

/// When graceful-run is killed with SIGKILL, its command dies too (PR_SET_PDEATHSIG).
#[test]
fn command_dies_with_graceful_run() {
    let probe = probe();
    let mut gr = Gr::start(&["--", &probe, "ignore-term"]);
    gr.wait_stdout("ready");
    let child = gr.generation_pid(1);
    assert!(alive(child));
    gr.signal(libc::SIGKILL);
    assert_eq!(killed_by(gr.wait_exit()), Some(libc::SIGKILL));
    poll_until("the command is gone", || !alive(child));
}

/// The same with `--user nobody`: the kernel clears the parent-death signal on a credential
/// change, so it must be set after it (before, the command lived on as an orphan holding the
/// sockets).
#[test]
fn command_under_user_dies_with_graceful_run() {
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let mut gr = Gr::start(&[
        "--user",
        "nobody",
        "-l",
        "127.0.0.1:0",
        "--",
        "sleep",
        &marker,
    ]);
    let child = gr.generation_pid(1);
    let sleeper = gr.poll("the command runs", || sleepers(&marker).first().copied());
    assert_eq!(sleeper, child, "{}", gr.output());
    let uid = std::fs::read_to_string(format!("/proc/{child}/status"))
        .expect("the command is running")
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|v| v.split_whitespace().next().map(str::to_owned))
        })
        .flatten();
    assert_eq!(uid.as_deref(), Some("65534"), "runs as nobody");
    gr.signal(libc::SIGKILL);
    assert_eq!(killed_by(gr.wait_exit()), Some(libc::SIGKILL));
    poll_until("the command is gone", || !alive(child));
}

/// An idle graceful-run (command ready, nothing happening) is one thread that never wakes.
#[test]
fn idle_graceful_run_never_wakes_up() {
    let probe = probe();
    let mut gr = Gr::start(&["--ready", "1s", "--", &probe, "ignore-term"]);
    gr.wait_stdout("ready");
    // The readiness timer (--ready 1s) is its last pending deadline.
    gr.wait_stderr("ready after");
    let tasks = std::fs::read_dir(format!("/proc/{}/task", gr.pid()))
        .expect("graceful-run is running")
        .count();
    assert_eq!(tasks, 1, "graceful-run runs one thread\n{}", gr.output());
    // Back to sleep after logging that line: blocked in epoll_wait, where an idle event loop is.
    poll_until("graceful-run sleeps in epoll_wait", || {
        std::fs::read_to_string(format!("/proc/{}/wchan", gr.pid()))
            .is_ok_and(|wchan| wchan.contains("epoll"))
    });
    let before = context_switches(gr.pid());
    // Observation window: proving that nothing happens takes watching for a while. Any
    // timer, poll or helper wake-up would count a context switch in it.
    std::thread::sleep(Duration::from_secs(2));
    let after = context_switches(gr.pid());
    assert_eq!(
        before,
        after,
        "graceful-run woke up while idle\n{}",
        gr.output()
    );
    assert!(gr.is_running());
}
