//! graceful-run among the tools around it: configuration from GRACEFUL_RUN_* variables,
//! `--user`, the Server::Starter and einhorn protocols (read by their own client code),
//! `--pid-file`, `--exit-code-map`, its own log output, and systemd's NOTIFY_SOCKET when
//! graceful-run itself runs under `Type=notify`.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Output};
use std::time::Duration;

use nix::libc;

use crate::support::{
    DEADLINE, Gr, TempDir, code, graceful_run_bin, killed_by, poll_until, probe, run_to_end,
};

// ----- helpers --------------------------------------------------------------------------------

/// graceful-run with `args`, and `env` added to the test's environment.
fn graceful_run(env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut command = Command::new(graceful_run_bin());
    command.args(args);
    command.envs(env.iter().copied());
    command
}

fn start(env: &[(&str, &str)], args: &[&str]) -> Gr {
    Gr::spawn(graceful_run(env, args))
}

/// `args` followed by `-- probe report`.
fn with_report(args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--".to_string(), probe(), "report".to_string()]);
    all
}

/// The `key=value` lines `probe report` printed, once it printed `ready`.
fn report(gr: &Gr) -> HashMap<String, String> {
    gr.stdout
        .wait_for(DEADLINE, |l| l == "ready")
        .unwrap_or_else(|| panic!("the probe never reported\n{}", gr.output()));
    gr.stdout
        .snapshot()
        .iter()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs graceful-run with `env` and `args -- probe report` and returns the report, after
/// graceful-run has exited 0 with the probe.
fn report_of(env: &[(&str, &str)], args: &[&str]) -> (HashMap<String, String>, Gr) {
    let all = with_report(args);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut gr = start(env, &all);
    let facts = report(&gr);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
    (facts, gr)
}

fn fact<'a>(facts: &'a HashMap<String, String>, key: &str) -> &'a str {
    facts
        .get(key)
        .unwrap_or_else(|| panic!("the probe did not report {key}: {facts:?}"))
}

/// Checks graceful-run's own failure: `status`, one stderr line containing every needle.
fn assert_one_line_failure(output: &Output, status: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code(output.status), Some(status), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "no {needle:?} in {stderr:?}");
    }
    assert!(!stderr.contains("started"), "{stderr}");
}

/// The fields of `key`'s entry in a name-service database (`getent passwd nobody`).
fn getent(database: &str, key: &str) -> Vec<String> {
    let output = Command::new("getent")
        .args([database, key])
        .output()
        .expect("getent runs");
    assert!(output.status.success(), "getent {database} {key} failed");
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .split(':')
        .map(str::to_string)
        .collect()
}

fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "--user tests switch users and must run as root (as CI does)"
    );
}

/// Sends `signal` to graceful-run, then waits for the probe (`probe signals`) to print it.
fn signal_and_see(gr: &Gr, signal: i32) {
    gr.signal(signal);
    gr.wait_stdout(&format!("signal {signal}"));
}

fn monotonic_usec() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is readable");
    now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1_000
}

fn read_pid(path: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

// ----- configuration from the environment ----------------------------------------------------

/// GRACEFUL_RUN_LISTEN takes several specs separated by spaces: the child gets them all,
/// at fds 3 and 4 in order.
#[test]
fn env_listen_takes_several_specs() {
    let dir = TempDir::new("eco-envlisten");
    let socket = dir.join("a.sock").display().to_string();
    let specs = format!("127.0.0.1:0 unix:{socket}");
    let (facts, _gr) = report_of(&[("GRACEFUL_RUN_LISTEN", &specs)], &[]);
    assert_eq!(fact(&facts, "env.LISTEN_FDS"), "2");
    assert!(
        fact(&facts, "fd.3").contains("family:inet address:127.0.0.1:"),
        "{facts:?}"
    );
    assert!(
        fact(&facts, "fd.4").contains(&format!("family:unix address:{socket} ")),
        "{facts:?}"
    );
}

/// Starts `probe ignore-term` with `env` and `args`, sends TERM, and checks that the stop
/// timeout in force was 1 s: the log says so and SIGKILL ends it long before the default 10 s.
fn assert_stop_timeout_is_one_second(env: &[(&str, &str)], args: &[&str]) {
    let probe = probe();
    let mut all = args.to_vec();
    all.extend(["--", &probe, "ignore-term"]);
    let mut gr = start(env, &all);
    gr.wait_stdout("ready");
    gr.signal(libc::SIGTERM);
    gr.wait_stderr("sent SIGTERM; SIGKILL in 1s if still running");
    let status = gr.wait_exit_within(Duration::from_secs(8));
    assert_eq!(killed_by(status), Some(libc::SIGKILL), "{}", gr.output());
}

/// GRACEFUL_RUN_STOP_TIMEOUT=1s sets the stop timeout: a child that ignores TERM is killed
/// after about a second.
#[test]
fn env_stop_timeout_applies() {
    assert_stop_timeout_is_one_second(&[("GRACEFUL_RUN_STOP_TIMEOUT", "1s")], &[]);
}

/// A flag on the command line wins over its environment variable.
#[test]
fn command_line_flag_beats_env() {
    assert_stop_timeout_is_one_second(
        &[("GRACEFUL_RUN_STOP_TIMEOUT", "60s")],
        &["--stop-timeout", "1s"],
    );
}

/// Switches read boolean words from the environment: GRACEFUL_RUN_NO_LISTEN_PID=1/true/yes
/// turn it on, =0/false turn it off.
#[test]
fn env_switches_take_boolean_words() {
    for (value, on) in [
        ("1", true),
        ("true", true),
        ("yes", true),
        ("0", false),
        ("false", false),
    ] {
        let (facts, _gr) = report_of(
            &[("GRACEFUL_RUN_NO_LISTEN_PID", value)],
            &["-l", "127.0.0.1:0"],
        );
        let expected = if on { "<unset>" } else { fact(&facts, "pid") };
        assert_eq!(
            fact(&facts, "env.LISTEN_PID"),
            expected,
            "GRACEFUL_RUN_NO_LISTEN_PID={value}"
        );
    }
}

/// A bad value in a GRACEFUL_RUN_* variable exits 125 with one line naming the flag and the
/// value, and starts nothing.
#[test]
fn bad_env_values_are_one_line_and_status_125() {
    let cases = [
        (
            "GRACEFUL_RUN_STOP_TIMEOUT",
            "soon",
            "--stop-timeout",
            "soon",
        ),
        (
            "GRACEFUL_RUN_LISTEN",
            "127.0.0.1:0 99999",
            "--listen",
            "99999",
        ),
        (
            "GRACEFUL_RUN_MAP_SIGNAL",
            "USR1:USR2 BOGUS:",
            "--map-signal",
            "BOGUS",
        ),
        (
            "GRACEFUL_RUN_NO_LISTEN_PID",
            "maybe",
            "--no-listen-pid",
            "maybe",
        ),
        ("GRACEFUL_RUN_COMPAT", "einhorn,inetd", "--compat", "inetd"),
    ];
    for (variable, value, flag, needle) in cases {
        let output = run_to_end(graceful_run(
            &[(variable, value)],
            &["--", "sh", "-c", "echo child-ran"],
        ));
        assert!(
            output.stdout.is_empty(),
            "{variable}={value}: the child ran"
        );
        assert_one_line_failure(&output, 125, &[flag, needle]);
    }
}

/// GRACEFUL_RUN_* variables configure graceful-run only: the child sees none of them.
#[test]
fn graceful_run_variables_are_not_passed_on() {
    let (facts, _gr) = report_of(
        &[
            ("GRACEFUL_RUN_LISTEN", "127.0.0.1:0"),
            ("GRACEFUL_RUN_STOP_TIMEOUT", "5s"),
            ("GRACEFUL_RUN_VERBOSE", "1"),
            ("GRACEFUL_RUN_NOT_A_FLAG", "x"),
        ],
        &[],
    );
    assert_eq!(
        fact(&facts, "env.LISTEN_FDS"),
        "1",
        "the variables were read"
    );
    // Only those graceful-run sets for its workers.
    assert_eq!(
        fact(&facts, "env.graceful_run_vars"),
        "GRACEFUL_RUN_WORKER,GRACEFUL_RUN_GENERATION"
    );
}

/// GRACEFUL_RUN_MAP_SIGNAL="USR1:USR2 WINCH:" translates USR1 to USR2 and drops WINCH.
#[test]
fn env_map_signal_takes_several_rules() {
    let probe = probe();
    let mut gr = start(
        &[("GRACEFUL_RUN_MAP_SIGNAL", "USR1:USR2 WINCH:")],
        &["-v", "--", &probe, "signals"],
    );
    gr.wait_stdout("ready");
    gr.signal(libc::SIGUSR1);
    gr.wait_stdout(&format!("signal {}", libc::SIGUSR2));
    gr.signal(libc::SIGWINCH);
    gr.wait_stderr("dropped SIGWINCH");
    // A sentinel: once the child has it, a forwarded WINCH would have arrived too.
    signal_and_see(&gr, libc::SIGALRM);
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
    for unwanted in [libc::SIGUSR1, libc::SIGWINCH] {
        let line = format!("signal {unwanted}");
        assert_eq!(gr.stdout.count(|l| l == line), 0, "{}", gr.output());
    }
}

// ----- --user ---------------------------------------------------------------------------------

/// Starts graceful-run on the first free privileged port of 127.0.0.1 with `rest` after the
/// `-l` flag; returns it and the port.
fn start_on_privileged_port(rest: &[&str]) -> (Gr, u16) {
    for port in 81..1024u16 {
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["-l", &listen];
        args.extend(rest);
        let mut gr = start(&[], &args);
        let line = gr
            .stderr
            .wait_for(DEADLINE, |l| {
                l.contains("listening on") || l.contains("--listen")
            })
            .unwrap_or_else(|| panic!("graceful-run said nothing\n{}", gr.output()));
        if line.contains("listening on") {
            return (gr, port);
        }
        assert!(line.contains("Address already in use"), "{}", gr.output());
        gr.wait_exit();
    }
    panic!("no privileged port of 127.0.0.1 is free");
}

/// `--user nobody`: the child runs with nobody's uid, gid and supplementary groups, HOME,
/// USER and LOGNAME from the password database, and gets a privileged port that graceful-run
/// bound before switching.
#[test]
fn user_switch_sets_ids_groups_and_home() {
    assert_root();
    let passwd = getent("passwd", "nobody");
    let groups = Command::new("id")
        .args(["-G", "nobody"])
        .output()
        .expect("id runs");
    let mut expected_groups: Vec<String> = String::from_utf8_lossy(&groups.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    expected_groups.sort();

    let report_args = with_report(&["--user", "nobody"]);
    let report_args: Vec<&str> = report_args.iter().map(String::as_str).collect();
    let (mut gr, port) = start_on_privileged_port(&report_args);
    let facts = report(&gr);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());

    assert_eq!(fact(&facts, "uid"), passwd[2]);
    assert_eq!(fact(&facts, "gid"), passwd[3]);
    let mut groups: Vec<String> = fact(&facts, "groups")
        .split(',')
        .map(str::to_string)
        .collect();
    groups.sort();
    assert_eq!(groups, expected_groups);
    assert_eq!(fact(&facts, "env.HOME"), passwd[5]);
    assert_eq!(fact(&facts, "env.USER"), "nobody");
    assert_eq!(fact(&facts, "env.LOGNAME"), "nobody");
    assert!(
        fact(&facts, "fd.3").contains(&format!("address:127.0.0.1:{port} listening:true")),
        "{facts:?}"
    );
}

/// `--user USER:GROUP` sets the gid to GROUP, by name or by number.
#[test]
fn user_with_group_sets_the_gid() {
    assert_root();
    let nogroup = getent("group", "nogroup")[2].clone();
    for (spec, gid) in [
        ("nobody:nogroup", nogroup.as_str()),
        ("nobody:4242", "4242"),
    ] {
        let (facts, _gr) = report_of(&[], &["--user", spec]);
        assert_eq!(fact(&facts, "uid"), "65534", "{spec}");
        assert_eq!(fact(&facts, "gid"), gid, "{spec}");
        assert!(
            fact(&facts, "groups").split(',').any(|g| g == gid),
            "{spec}: {facts:?}"
        );
    }
}

/// Numeric users: one with a password entry takes its name and group; one without needs a
/// group and then runs with exactly those ids.
#[test]
fn numeric_users() {
    assert_root();
    let (facts, _gr) = report_of(&[], &["--user", "65534"]);
    assert_eq!(
        (
            fact(&facts, "uid"),
            fact(&facts, "gid"),
            fact(&facts, "env.USER")
        ),
        ("65534", getent("passwd", "nobody")[3].as_str(), "nobody")
    );
    let (facts, _gr) = report_of(&[], &["--user", "12345:12345"]);
    assert_eq!(
        (
            fact(&facts, "uid"),
            fact(&facts, "gid"),
            fact(&facts, "groups")
        ),
        ("12345", "12345", "12345")
    );
}

/// An unknown user, or a uid without a password entry and without a group, exits 125 with
/// one line naming --user and the value.
#[test]
fn unusable_users_are_one_line_and_status_125() {
    assert_root();
    for spec in ["12345", "no-such-user-gr-eco"] {
        let output = run_to_end(graceful_run(
            &[],
            &["--user", spec, "--", "sh", "-c", "echo child-ran"],
        ));
        assert!(output.stdout.is_empty(), "{spec}: the child ran");
        assert_one_line_failure(&output, 125, &["--user", &format!("'{spec}'")]);
    }
}

// ----- --compat -------------------------------------------------------------------------------

/// Listens on a bare port, an explicit IPv4 address and a unix socket with
/// `--compat server-starter`, runs `child`, and returns graceful-run and the
/// SERVER_STARTER_PORT entries that describe those sockets.
fn server_starter(dir: &TempDir, child: &[&str]) -> (Gr, Vec<String>) {
    let socket = dir.join("ss.sock").display().to_string();
    let unix = format!("unix:{socket}");
    let mut args = vec![
        "--compat",
        "server-starter",
        "-l",
        "0",
        "-l",
        "127.0.0.1:0",
        "-l",
        &unix,
        "--",
    ];
    args.extend(child);
    let gr = start(&[], &args);
    let entries = vec![
        format!("{}=3", gr.inet_addr(0).port()),
        format!("127.0.0.1:{}=4", gr.inet_addr(1).port()),
        format!("{socket}=5"),
    ];
    (gr, entries)
}

/// `--compat server-starter` sets SERVER_STARTER_PORT to `PORT=3;HOST:PORT=4;/path=5` and
/// SERVER_STARTER_GENERATION=1, next to LISTEN_FDS.
#[test]
fn server_starter_variables_describe_the_sockets() {
    let dir = TempDir::new("eco-ss");
    let probe = probe();
    let (mut gr, entries) = server_starter(&dir, &[&probe, "report"]);
    let facts = report(&gr);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
    assert_eq!(fact(&facts, "env.SERVER_STARTER_PORT"), entries.join(";"));
    assert_eq!(fact(&facts, "env.SERVER_STARTER_GENERATION"), "1");
    assert_eq!(fact(&facts, "env.LISTEN_FDS"), "3");
}

/// Server::Starter's own client (`server_ports()` in Perl) reads the sockets graceful-run
/// describes.
#[test]
fn server_starter_perl_client_reads_the_ports() {
    let dir = TempDir::new("eco-ssperl");
    let script = r#"my $p = server_ports(); print "ports:", join(",", map { "$_=$p->{$_}" } sort keys %$p), "\n""#;
    let (mut gr, mut entries) = server_starter(
        &dir,
        &["perl", "-MServer::Starter=server_ports", "-e", script],
    );
    let line = gr.wait_stdout("ports:");
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
    entries.sort();
    assert_eq!(line, format!("ports:{}", entries.join(",")));
}

/// After a restart the new generation sees SERVER_STARTER_GENERATION=2.
#[test]
fn server_starter_generation_counts_restarts() {
    let mut gr = start(
        &[],
        &[
            "--compat",
            "server-starter",
            "--ready",
            "100ms",
            "-l",
            "127.0.0.1:0",
            "--",
            "sh",
            "-c",
            "echo gen=$SERVER_STARTER_GENERATION; exec sleep 1000",
        ],
    );
    gr.wait_stdout("gen=1");
    gr.wait_stderr("ready after");
    gr.signal(libc::SIGHUP);
    gr.wait_stdout("gen=2");
    gr.wait_stderr("takes over from gen 1");
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
    assert_eq!(
        gr.stdout.count(|l| l.starts_with("gen=")),
        2,
        "{}",
        gr.output()
    );
}

/// `--compat einhorn` sets EINHORN_FD_COUNT, EINHORN_FD_<i>, EINHORN_FDS and
/// EINHORN_MASTER_PID (graceful-run's pid).
#[test]
fn einhorn_variables_describe_the_sockets() {
    let probe = probe();
    let mut gr = start(
        &[],
        &[
            "--compat",
            "einhorn",
            "-l",
            "127.0.0.1:0",
            "-l",
            "127.0.0.1:0",
            "--",
            &probe,
            "report",
        ],
    );
    let facts = report(&gr);
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
    assert_eq!(fact(&facts, "env.EINHORN_FD_COUNT"), "2");
    assert_eq!(fact(&facts, "env.EINHORN_FD_0"), "3");
    assert_eq!(fact(&facts, "env.EINHORN_FD_1"), "4");
    assert_eq!(fact(&facts, "env.EINHORN_FDS"), "3 4");
    assert_eq!(fact(&facts, "env.EINHORN_MASTER_PID"), gr.pid().to_string());
}

/// A Python einhorn-style child opens the socket named by EINHORN_FD_0 and finds the
/// listener's address.
#[test]
fn einhorn_python_client_finds_the_listener() {
    let script = r#"import os, socket
s = socket.socket(fileno=int(os.environ["EINHORN_FD_0"]))
host, port = s.getsockname()
print("einhorn %s:%d listening=%d" % (host, port, s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)))"#;
    let mut gr = start(
        &[],
        &[
            "--compat",
            "einhorn",
            "-l",
            "127.0.0.1:0",
            "--",
            "python3",
            "-c",
            script,
        ],
    );
    let line = gr.wait_stdout("einhorn ");
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
    assert_eq!(line, format!("einhorn {} listening=1", gr.inet_addr(0)));
}

/// `--compat server-starter,einhorn` sets both protocols' variables.
#[test]
fn both_compat_protocols_together() {
    let (facts, gr) = report_of(
        &[],
        &["--compat", "server-starter,einhorn", "-l", "127.0.0.1:0"],
    );
    let port = gr.inet_addr(0).port();
    assert_eq!(
        fact(&facts, "env.SERVER_STARTER_PORT"),
        format!("127.0.0.1:{port}=3")
    );
    assert_eq!(fact(&facts, "env.SERVER_STARTER_GENERATION"), "1");
    assert_eq!(fact(&facts, "env.EINHORN_FDS"), "3");
    assert_eq!(fact(&facts, "env.EINHORN_MASTER_PID"), gr.pid().to_string());
}

// ----- --pid-file -----------------------------------------------------------------------------

/// Starts graceful-run with `--pid-file path` and a long-running probe.
fn start_with_pid_file(path: &std::path::Path) -> Gr {
    let path = path.display().to_string();
    let probe = probe();
    start(
        &[],
        &[
            "--pid-file",
            &path,
            "--ready",
            "100ms",
            "--",
            &probe,
            "signals",
        ],
    )
}

/// The pid file holds graceful-run's pid while it runs, `kill -HUP "$(cat FILE)"` restarts,
/// and the file is gone after exit.
#[test]
fn pid_file_names_graceful_run_until_it_exits() {
    let dir = TempDir::new("eco-pid");
    let path = dir.join("gr.pid");
    let mut gr = start_with_pid_file(&path);
    poll_until("the pid file names graceful-run", || {
        read_pid(&path) == Some(gr.pid())
    });
    // Once a generation has started, graceful-run handles signals (the moment before that
    // is pid_file_appears_once_signals_are_handled's subject).
    gr.generation_pid(1);
    let kill = Command::new("sh")
        .args(["-c", "kill -HUP \"$(cat \"$1\")\"", "sh"])
        .arg(&path)
        .status()
        .expect("sh runs");
    assert!(kill.success());
    gr.generation_pid(2);
    gr.wait_stderr("takes over from gen 1");
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
    assert!(!path.exists(), "the pid file outlived graceful-run");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("exists").count(),
        0,
        "graceful-run left files in the pid file's directory"
    );
}

/// A signal sent as soon as the pid file appears is handled, not fatal: the file is written
/// only once graceful-run handles signals.
#[test]
fn pid_file_appears_once_signals_are_handled() {
    for attempt in 0..20 {
        let dir = TempDir::new("eco-pidrace");
        let path = dir.join("gr.pid");
        let mut gr = start_with_pid_file(&path);
        // A script that signals the moment the file appears: poll without pause.
        let end = std::time::Instant::now() + DEADLINE;
        let pid = loop {
            if let Some(pid) = read_pid(&path) {
                break pid;
            }
            assert!(std::time::Instant::now() < end, "no pid file appeared");
            std::hint::spin_loop();
        };
        // SAFETY: kill(2) with integer arguments.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        // Handled, the HUP starts generation 2; unhandled, it kills graceful-run.
        let end = std::time::Instant::now() + DEADLINE;
        while gr
            .stderr
            .wait_for(Duration::from_millis(50), |l| {
                l.contains("gen 2 (pid") && l.contains("started")
            })
            .is_none()
        {
            if !gr.is_running() {
                let status = gr.wait_exit();
                panic!(
                    "attempt {attempt}: a HUP sent when the pid file appeared ended graceful-run \
                     (killed by signal {:?}, exit code {:?}); pid file left behind: {}\n{}",
                    killed_by(status),
                    code(status),
                    path.exists(),
                    gr.output()
                );
            }
            assert!(std::time::Instant::now() < end, "{}", gr.output());
        }
    }
}

/// While one graceful-run holds a pid file, a second one with the same file exits 125 naming
/// the first's pid, and leaves the file alone.
#[test]
fn pid_file_of_a_running_instance_is_refused() {
    let dir = TempDir::new("eco-pid2");
    let path = dir.join("gr.pid");
    let mut first = start_with_pid_file(&path);
    poll_until("the pid file names the first graceful-run", || {
        read_pid(&path) == Some(first.pid())
    });
    let output = run_to_end(graceful_run(
        &[],
        &[
            "--pid-file",
            &path.display().to_string(),
            "--",
            "sh",
            "-c",
            "echo child-ran",
        ],
    ));
    assert!(output.stdout.is_empty(), "the second child ran");
    assert_one_line_failure(
        &output,
        125,
        &[
            "--pid-file",
            &format!("already running as pid {}", first.pid()),
        ],
    );
    assert_eq!(read_pid(&path), Some(first.pid()));
    assert!(first.is_running(), "{}", first.output());
    first.signal(libc::SIGTERM);
    first.wait_exit();
}

/// A stale pid file (a dead pid, or a live process that is not graceful-run) is replaced and
/// graceful-run runs.
#[test]
fn stale_pid_file_is_replaced() {
    let mut dead = Command::new("true").spawn().expect("true runs");
    let dead_pid = dead.id();
    dead.wait().expect("true ends");
    for stale in [dead_pid, std::process::id()] {
        let dir = TempDir::new("eco-pidstale");
        let path = dir.join("gr.pid");
        std::fs::write(&path, format!("{stale}\n")).expect("the temp dir is writable");
        let mut gr = start_with_pid_file(&path);
        gr.wait_stdout("ready");
        poll_until("the stale pid file is replaced", || {
            read_pid(&path) == Some(gr.pid())
        });
        gr.signal(libc::SIGTERM);
        gr.wait_exit();
        assert!(
            !path.exists(),
            "stale pid {stale}: the file outlived graceful-run"
        );
    }
}

/// A symlink planted at the temporary name graceful-run used to write through
/// (`.NAME.PID.tmp`, predictable) is not followed: the file it points to is untouched. The
/// pid is predictable here because a shell execs graceful-run once the link is in place.
#[test]
fn pid_file_does_not_follow_a_planted_symlink() {
    use std::io::Write;
    let dir = TempDir::new("eco-pidlink");
    let path = dir.join("gr.pid");
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").expect("the temp dir is writable");
    let probe = probe();
    let mut command = Command::new("sh");
    command
        .args(["-c", "read go && exec \"$0\" \"$@\""])
        .arg(crate::support::graceful_run_bin())
        .args([
            "--pid-file",
            &path.display().to_string(),
            "--",
            &probe,
            "signals",
        ])
        .stdin(std::process::Stdio::piped());
    let mut gr = Gr::spawn(command);
    for name in [
        format!(".gr.pid.{}.tmp", gr.pid()),
        format!(".gr.pid.{}", gr.pid()),
    ] {
        std::os::unix::fs::symlink(&victim, dir.join(&name)).expect("the temp dir is writable");
    }
    let mut stdin = gr.child.stdin.take().expect("stdin is piped");
    stdin.write_all(b"go\n").expect("the shell reads its stdin");
    drop(stdin);
    gr.wait_stdout("ready");
    assert_eq!(read_pid(&path), Some(gr.pid()), "{}", gr.output());
    assert_eq!(
        std::fs::read_to_string(&victim).expect("the victim file is still there"),
        "precious\n"
    );
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
    assert!(!path.exists());
}

/// Under `umask 000` the pid file is still 0644, not world-writable.
#[test]
fn pid_file_mode_ignores_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("eco-pidmode");
    let path = dir.join("gr.pid");
    let probe = probe();
    let mut command = graceful_run(
        &[],
        &[
            "--pid-file",
            &path.display().to_string(),
            "--",
            &probe,
            "signals",
        ],
    );
    // SAFETY: umask(2) is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut gr = Gr::spawn(command);
    gr.wait_stdout("ready");
    let mode = std::fs::metadata(&path)
        .expect("the pid file exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o644, "mode {mode:o}");
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

/// Instances started at once on the same pid file: exactly one runs, every other exits 125
/// naming the pid file; the file names the one that runs. (Checking the file's content
/// before writing let several through.)
#[test]
fn pid_file_racing_instances_exactly_one_runs() {
    let probe = probe();
    for round in 0..5 {
        let dir = TempDir::new("eco-pidrace2");
        let path = dir.join("gr.pid");
        let path_text = path.display().to_string();
        let mut instances: Vec<Gr> = (0..4)
            .map(|_| start(&[], &["--pid-file", &path_text, "--", &probe, "signals"]))
            .collect();
        let mut refused = 0;
        let mut running = Vec::new();
        for gr in &mut instances {
            // A refused instance exits at once; a running one prints the probe's "ready".
            let outcome = gr.poll("the instance runs or is refused", || {
                if gr.stdout.count(|l| l == "ready") > 0 {
                    Some(true)
                } else if gr.stderr.count(|l| l.contains("--pid-file")) > 0 {
                    Some(false)
                } else {
                    None
                }
            });
            if outcome {
                running.push(gr.pid());
            } else {
                assert_eq!(code(gr.wait_exit()), Some(125), "{}", gr.output());
                assert!(
                    gr.stderr.text().contains("already running as pid"),
                    "{}",
                    gr.output()
                );
                refused += 1;
            }
        }
        assert_eq!(running.len(), 1, "round {round}: running {running:?}");
        assert_eq!(refused, 3);
        assert_eq!(read_pid(&path), Some(running[0]));
        for gr in &mut instances {
            if gr.is_running() {
                gr.signal(libc::SIGTERM);
                gr.wait_exit();
            }
        }
        assert!(
            !path.exists(),
            "round {round}: the pid file outlived graceful-run"
        );
        assert_eq!(std::fs::read_dir(dir.path()).expect("exists").count(), 0);
    }
}

// ----- --exit-code-map ------------------------------------------------------------------------

/// `--exit-code-map FROM:TO` rules (repeatable, or spaces in the variable) rewrite the
/// command's status, a death by signal N counting as 128+N; other statuses pass through.
#[test]
fn exit_code_map_rewrites_the_command_status() {
    let kill_term = format!("kill {}", libc::SIGTERM);
    let two_rules = "--exit-code-map 3:4 --exit-code-map 5:6";
    // (GRACEFUL_RUN_EXIT_CODE_MAP, flags, the probe's mode and argument, the expected exit
    // code or None for a death by TERM)
    let cases: &[(Option<&str>, &str, &str, Option<i32>)] = &[
        (None, "", &kill_term, None),
        (None, "--exit-code-map 143:0", &kill_term, Some(0)),
        (None, "--exit-code-map 143:0", "exit 143", Some(0)),
        (None, two_rules, "exit 3", Some(4)),
        (None, two_rules, "exit 5", Some(6)),
        (None, two_rules, "exit 7", Some(7)),
        (Some("3:4 5:6"), "", "exit 5", Some(6)),
    ];
    let probe = probe();
    for (variable, flags, child, expected) in cases {
        let mut args: Vec<&str> = flags.split_whitespace().collect();
        args.extend(["--", &probe]);
        args.extend(child.split_whitespace());
        let env: Vec<(&str, &str)> = variable
            .iter()
            .map(|value| ("GRACEFUL_RUN_EXIT_CODE_MAP", *value))
            .collect();
        let mut gr = start(&env, &args);
        let status = gr.wait_exit();
        match expected {
            Some(expected) => assert_eq!(code(status), Some(*expected), "{args:?}"),
            None => assert_eq!(killed_by(status), Some(libc::SIGTERM), "{args:?}"),
        }
    }
}

/// A requested stop that ends the command by TERM exits 0 with `--exit-code-map 143:0`.
#[test]
fn exit_code_map_makes_a_requested_stop_a_success() {
    let mut gr = start(&[], &["--exit-code-map", "143:0", "--", "sleep", "1000"]);
    gr.generation_pid(1);
    gr.signal(libc::SIGTERM);
    gr.wait_stderr("killed by SIGTERM");
    assert_eq!(code(gr.wait_exit()), Some(0), "{}", gr.output());
}

/// graceful-run's own statuses 125, 126 and 127 are never mapped.
#[test]
fn exit_code_map_leaves_graceful_runs_own_statuses() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("eco-map");
    let script = dir.join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").expect("the temp dir is writable");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod works");
    let script = script.display().to_string();
    let cases: [(&[&str], i32); 3] = [
        (
            &["--exit-code-map", "127:0", "--", "no-such-command-gr-eco"],
            127,
        ),
        (&["--exit-code-map", "126:0", "--", &script], 126),
        (
            &["--exit-code-map", "125:0", "-l", "99999", "--", "true"],
            125,
        ),
    ];
    for (args, expected) in cases {
        let output = run_to_end(graceful_run(&[], args));
        assert_eq!(code(output.status), Some(expected), "{args:?}");
    }
}

// ----- logging --------------------------------------------------------------------------------

/// `-q` silences info lines (a clean run prints nothing on stderr) but keeps errors.
#[test]
fn quiet_prints_only_problems() {
    let probe = probe();
    let loud = run_to_end(graceful_run(&[], &["--", &probe, "exit", "0"]));
    assert!(
        String::from_utf8_lossy(&loud.stderr).contains("started"),
        "without -q the start is logged"
    );
    let quiet = run_to_end(graceful_run(&[], &["-q", "--", &probe, "exit", "0"]));
    assert_eq!(code(quiet.status), Some(0));
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    let failing = run_to_end(graceful_run(&[], &["-q", "--", "no-such-command-gr-quiet"]));
    assert_eq!(code(failing.status), Some(127));
    assert!(
        String::from_utf8_lossy(&failing.stderr).contains("no-such-command-gr-quiet"),
        "-q still reports errors"
    );
}

/// graceful-run's stderr after forwarding one USR1 to `probe signals` and stopping.
fn log_of_a_forwarded_usr1(flags: &[&str]) -> String {
    let probe = probe();
    let mut args = flags.to_vec();
    args.extend(["--", &probe, "signals"]);
    let mut gr = start(&[], &args);
    gr.wait_stdout("ready");
    signal_and_see(&gr, libc::SIGUSR1);
    gr.signal(libc::SIGTERM);
    // The last line: every earlier one has been read.
    gr.wait_stderr("exited with status 0");
    gr.wait_exit();
    gr.stderr.text()
}

/// `-v` logs details such as each forwarded signal; without it they are not logged.
#[test]
fn verbose_logs_forwarded_signals() {
    let verbose = log_of_a_forwarded_usr1(&["-v"]);
    assert!(verbose.contains("forwarding SIGUSR1"), "{verbose}");
    let normal = log_of_a_forwarded_usr1(&[]);
    assert!(!normal.contains("forwarding"), "{normal}");
}

/// `--log-format json`: each of graceful-run's stderr lines is a JSON object with time,
/// level and msg, generation lines carry gen and the child's pid, and the child's own output
/// is left as it was.
#[test]
fn json_log_lines_are_objects_and_child_output_is_untouched() {
    let output = run_to_end(graceful_run(
        &[],
        &[
            "--log-format",
            "json",
            "-l",
            "127.0.0.1:0",
            "--",
            "sh",
            "-c",
            "echo child-pid=$$; echo child-stderr-line >&2; exit 3",
        ],
    ));
    assert_eq!(code(output.status), Some(3));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let child_pid = stdout
        .strip_prefix("child-pid=")
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("stdout was changed: {stdout:?}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (child_lines, own_lines): (Vec<&str>, Vec<&str>) =
        stderr.lines().partition(|l| *l == "child-stderr-line");
    assert_eq!(child_lines.len(), 1, "{stderr}");
    assert!(own_lines.len() >= 3, "{stderr}");

    // Python's json module checks each line and prints its fields as key=value, tab-separated.
    let checker = r#"import json, sys
for line in sys.argv[1:]:
    value = json.loads(line)
    if not isinstance(value, dict):
        sys.exit("not an object: " + line)
    print("\t".join("%s=%s" % (k, value[k]) for k in sorted(value)))"#;
    let mut python = Command::new("python3");
    python.args(["-c", checker]).args(&own_lines);
    let checked = run_to_end(python);
    assert!(
        checked.status.success(),
        "not JSON: {}\n{stderr}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let objects: Vec<HashMap<String, String>> = String::from_utf8_lossy(&checked.stdout)
        .lines()
        .map(|line| {
            line.split('\t')
                .filter_map(|field| field.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect();
    assert_eq!(objects.len(), own_lines.len());
    for object in &objects {
        for key in ["time", "level", "msg"] {
            assert!(object.contains_key(key), "no {key} in {object:?}");
        }
        if object.contains_key("gen") {
            assert_eq!(
                object.get("pid").map(String::as_str),
                Some(child_pid),
                "{object:?}"
            );
        }
    }
    for message in ["started", "exited with status 3"] {
        assert!(
            objects
                .iter()
                .any(|o| o["msg"].starts_with(message)
                    && o.get("gen").map(String::as_str) == Some("1")),
            "no gen 1 line starting {message:?}: {objects:?}"
        );
    }
}

// ----- NOTIFY_SOCKET from graceful-run's own supervisor --------------------------------------

/// A stand-in for systemd's notify socket, read with the harness deadline.
struct Supervisor {
    socket: UnixDatagram,
    /// The NOTIFY_SOCKET value that names it.
    address: String,
}

impl Supervisor {
    fn abstract_socket() -> Supervisor {
        use std::os::linux::net::SocketAddrExt;
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("gr-test-systemd/{}/{n}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("the name fits");
        let socket = UnixDatagram::bind_addr(&address).expect("the abstract name is free");
        Supervisor::ready(socket, format!("@{name}"))
    }

    fn path_socket(dir: &TempDir) -> Supervisor {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("the temp dir is writable");
        Supervisor::ready(socket, path.display().to_string())
    }

    fn ready(socket: UnixDatagram, address: String) -> Supervisor {
        socket
            .set_read_timeout(Some(DEADLINE))
            .expect("a read timeout can be set");
        Supervisor { socket, address }
    }

    /// The next notification that changes the state (STATUS= lines are skipped).
    fn next(&self, gr: &Gr) -> String {
        let mut buf = [0u8; 4096];
        loop {
            let message = match self.socket.recv(&mut buf) {
                Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(e) => panic!("no notification ({e})\n{}", gr.output()),
            };
            if !message.starts_with("STATUS=") {
                return message;
            }
        }
    }

    /// graceful-run with NOTIFY_SOCKET set to this socket, running a `probe notify READY=1`
    /// child that first prints the NOTIFY_SOCKET it got.
    fn run_notifying_child(&self) -> Gr {
        let probe = probe();
        start(
            &[("NOTIFY_SOCKET", &self.address)],
            &[
                "--ready",
                "notify",
                "-l",
                "127.0.0.1:0",
                "--",
                "sh",
                "-c",
                "echo \"child-notify=$NOTIFY_SOCKET\"; exec \"$0\" notify READY=1",
                &probe,
            ],
        )
    }
}

/// Under an abstract NOTIFY_SOCKET, graceful-run reports READY=1 with its own MAINPID, then
/// RELOADING=1 with the current MONOTONIC_USEC and READY=1 around a restart, and
/// STOPPING=1 at stop; each generation gets graceful-run's own socket, never the inherited one.
#[test]
fn notify_socket_hears_ready_reloading_and_stopping() {
    let systemd = Supervisor::abstract_socket();
    let mut gr = systemd.run_notifying_child();
    assert_eq!(systemd.next(&gr), format!("READY=1\nMAINPID={}", gr.pid()));
    let before = monotonic_usec();
    gr.signal(libc::SIGHUP);
    let reloading = systemd.next(&gr);
    let after = monotonic_usec();
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a RELOADING=1 message: {reloading:?}"));
    assert!(
        (before..=after).contains(&usec),
        "MONOTONIC_USEC={usec} is not between {before} and {after}"
    );
    assert!(systemd.next(&gr).starts_with("READY=1\n"));
    gr.wait_stderr("takes over from gen 1");
    gr.signal(libc::SIGTERM);
    assert_eq!(systemd.next(&gr), "STOPPING=1");
    gr.wait_exit();

    let children: Vec<String> = gr
        .stdout
        .snapshot()
        .into_iter()
        .filter_map(|l| l.strip_prefix("child-notify=").map(str::to_string))
        .collect();
    assert_eq!(children.len(), 2, "{}", gr.output());
    for socket in &children {
        assert!(
            socket.starts_with('/')
                && socket.contains("/graceful-run-")
                && *socket != systemd.address,
            "a generation got NOTIFY_SOCKET={socket}"
        );
    }
    assert_ne!(
        children[0], children[1],
        "each generation has its own socket"
    );
}

/// A path NOTIFY_SOCKET works too: READY=1 with MAINPID, then STOPPING=1.
#[test]
fn notify_socket_at_a_path() {
    let dir = TempDir::new("eco-notify");
    let systemd = Supervisor::path_socket(&dir);
    let mut gr = systemd.run_notifying_child();
    assert_eq!(systemd.next(&gr), format!("READY=1\nMAINPID={}", gr.pid()));
    gr.signal(libc::SIGTERM);
    assert_eq!(systemd.next(&gr), "STOPPING=1");
    gr.wait_exit();
}

/// Without `--ready notify` the child gets no NOTIFY_SOCKET at all, even though graceful-run
/// has one.
#[test]
fn inherited_notify_socket_is_not_passed_on() {
    let systemd = Supervisor::abstract_socket();
    let (facts, _gr) = report_of(
        &[("NOTIFY_SOCKET", &systemd.address)],
        // A duration: with a notify-based --ready the generation has a NOTIFY_SOCKET of its own.
        &["--ready", "1s", "-l", "127.0.0.1:0"],
    );
    assert_eq!(fact(&facts, "env.NOTIFY_SOCKET"), "<unset>");
}

/// A pipe that is already full and that nobody reads, as stderr for graceful-run.
fn full_pipe() -> (std::fs::File, std::fs::File) {
    use std::io::Write;
    let (read, write) = nix::unistd::pipe().expect("a test process can make a pipe");
    let (read, mut write) = (std::fs::File::from(read), std::fs::File::from(write));
    let flags = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_GETFL).expect("F_GETFL works");
    let nonblocking = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(nonblocking)).expect("F_SETFL works");
    while write.write(&[b'.'; 4096]).is_ok() {}
    // Blocking again, as a pipe from a shell or Docker would be.
    let blocking = nonblocking - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(blocking)).expect("F_SETFL works");
    (read, write)
}

/// graceful-run with `args`, its stderr the write end of `pipe`, its stdout captured.
fn with_stderr(pipe: &std::fs::File, args: &[&str]) -> Gr {
    let mut command = Command::new(graceful_run_bin());
    command.args(args);
    Gr::spawn_with_stderr(
        command,
        pipe.try_clone().expect("the pipe can be duplicated"),
    )
}

/// A full stderr that nobody reads does not stop graceful-run: a TERM still runs the stop
/// sequence to SIGKILL at the stop timeout, although every log line about it is dropped.
#[test]
fn full_stderr_does_not_stall_the_stop_sequence() {
    let (_read, write) = full_pipe();
    let mut gr = with_stderr(
        &write,
        &["-v", "--stop-timeout", "1s", "--", &probe(), "ignore-term"],
    );
    gr.wait_stdout("ready");
    gr.signal(libc::SIGTERM);
    let status = gr.wait_exit();
    assert_eq!(
        killed_by(status),
        Some(libc::SIGKILL),
        "the stop sequence did not run"
    );
}

/// Lines dropped while stderr was full are counted and reported once lines get through.
#[test]
fn dropped_log_lines_are_reported_when_stderr_drains() {
    use std::io::Read;
    let (mut read, write) = full_pipe();
    let gr = with_stderr(
        &write,
        &["-v", "--restart-signal", "none", "--", &probe(), "signals"],
    );
    gr.wait_stdout("ready");
    gr.signal(libc::SIGUSR1);
    gr.wait_stdout(&format!("signal {}", libc::SIGUSR1));
    // Drain what the test itself wrote; graceful-run's lines since then were dropped.
    let mut filler = vec![0u8; 65536];
    read.read_exact(&mut filler)
        .expect("the pipe holds the test's 64 KiB");
    gr.signal(libc::SIGUSR2);
    gr.wait_stdout(&format!("signal {}", libc::SIGUSR2));
    let mut seen = String::new();
    let mut chunk = [0u8; 4096];
    while !seen.contains("forwarding SIGUSR2") {
        let n = read
            .read(&mut chunk)
            .expect("graceful-run writes its next lines");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(
        seen.contains(" dropped: stderr was full"),
        "no report of dropped lines in {seen:?}"
    );
}

// ----- each generation's NOTIFY_SOCKET ---------------------------------------------------------

/// A python sd_notify client that knows nothing of abstract `@names`: prints the address it
/// got, sends READY=1 to it as a path, and waits.
const PLAIN_NOTIFY_CLIENT: &str = "import os, socket, time\n\
     address = os.environ['NOTIFY_SOCKET']\n\
     print('notify=' + address, flush=True)\n\
     socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', address)\n\
     time.sleep(1000)\n";

/// The NOTIFY_SOCKET that generation `index` (0-based) printed.
fn printed_notify_socket(gr: &Gr, index: usize) -> std::path::PathBuf {
    gr.poll("the command printed its NOTIFY_SOCKET", || {
        gr.stdout
            .snapshot()
            .iter()
            .filter_map(|l| l.strip_prefix("notify=").map(std::path::PathBuf::from))
            .nth(index)
    })
}

/// Under `--user nobody`, NOTIFY_SOCKET is a socket file (not an abstract name) in a private
/// directory that stays root's (mode 0711: nobody can reach its socket, not list or write the
/// directory); the socket file alone is nobody's, which can send READY=1 to it; another user
/// cannot. A generation's socket goes with it, the directory with graceful-run.
#[test]
fn notify_socket_is_a_private_file_reachable_by_the_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let python = "/usr/bin/python3";
    let mut gr = start(
        &[],
        &[
            "--ready",
            "notify",
            "--user",
            "nobody",
            "--",
            python,
            "-c",
            PLAIN_NOTIFY_CLIENT,
        ],
    );
    let socket = printed_notify_socket(&gr, 0);
    gr.wait_stderr("gen 1 (pid");
    gr.wait_stderr("ready after");
    assert!(socket.is_absolute(), "{}", socket.display());
    let dir = socket
        .parent()
        .expect("the socket is in a directory")
        .to_path_buf();
    let dir_meta = std::fs::metadata(&dir).expect("the directory exists");
    assert_eq!(dir_meta.permissions().mode() & 0o7777, 0o711);
    assert_eq!(dir_meta.uid(), 0, "graceful-run's own");
    let socket_meta = std::fs::metadata(&socket).expect("the socket exists");
    assert_eq!(socket_meta.uid(), 65534, "owned by nobody");
    assert_eq!(socket_meta.permissions().mode() & 0o777, 0o700);

    // Another user (daemon, uid 1) cannot reach it.
    let mut intruder = Command::new(python);
    intruder
        .args([
            "-c",
            "import socket, sys\n\
             try:\n    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', sys.argv[1])\n\
             except PermissionError:\n    print('refused')\n",
        ])
        .arg(&socket)
        .uid(1)
        .gid(1);
    let output = run_to_end(intruder);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "refused");

    // A restart: generation 2 gets a socket of its own; generation 1's goes with it.
    gr.signal(libc::SIGHUP);
    let second = printed_notify_socket(&gr, 1);
    assert_ne!(second, socket);
    assert_eq!(second.parent(), Some(dir.as_path()));
    gr.wait_stderr("takes over from gen 1");
    poll_until("generation 1's socket is removed", || !socket.exists());
    assert!(second.exists());

    gr.signal(libc::SIGTERM);
    gr.wait_exit();
    assert!(!dir.exists(), "the notify directory outlived graceful-run");
}

/// systemd's own client, `systemd-notify --ready`, makes a generation ready.
#[test]
#[cfg_attr(
    not(has_systemd_notify),
    ignore = "systemd-notify not installed: apt-get install systemd"
)]
fn systemd_notify_makes_a_generation_ready() {
    if !std::path::Path::new("/usr/bin/systemd-notify").exists() {
        eprintln!("SKIPPED: systemd-notify is not installed");
        return;
    }
    let marker = crate::support::sleep_marker();
    let _cleanup = crate::support::KillOnDrop(marker.clone());
    let script = format!("systemd-notify --ready && exec sleep {marker}");
    let mut gr = start(&[], &["--ready", "notify", "--", "sh", "-c", &script]);
    gr.wait_stderr("ready after");
    gr.terminate_expecting_death_by(libc::SIGTERM);
}

/// puma with Debian's ruby `sd_notify` gem, which does not understand abstract `@names` (it
/// crashed puma at boot), becomes ready on its NOTIFY_SOCKET and serves the inherited unix
/// socket.
#[test]
#[cfg_attr(
    not(has_ruby_sd_notify),
    ignore = "puma or ruby-sd-notify not installed: apt-get install puma ruby-sd-notify"
)]
fn puma_becomes_ready_through_sd_notify() {
    let available = Command::new("ruby")
        .args(["-e", "require 'sd_notify'; require 'puma'"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var_os("GRACEFUL_RUN_TEST_REQUIRE_PUMA").is_none(),
            "puma and ruby-sd-notify are required here"
        );
        eprintln!("SKIPPED: puma or ruby-sd-notify is not installed");
        return;
    }
    let dir = TempDir::new("eco-puma");
    let app = dir.join("config.ru");
    std::fs::write(
        &app,
        "run ->(env) { [200, {'Content-Type' => 'text/plain', 'X-Pid' => Process.pid.to_s}, ['hello']] }\n",
    )
    .expect("the temp dir is writable");
    let socket = dir.join("puma.sock");
    let mut gr = start(
        &[],
        &[
            "--ready",
            "notify",
            "--ready-timeout",
            "30s",
            "-l",
            &format!("unix:{}", socket.display()),
            "--",
            "puma",
            "--environment",
            "production",
            "-b",
            &format!("unix://{}", socket.display()),
            &app.display().to_string(),
        ],
    );
    let pid = gr.generation_pid(1);
    gr.wait_stderr("ready after");
    let reply = crate::support::http::get(&crate::support::http::Target::Unix(socket), "/")
        .unwrap_or_else(|e| panic!("puma answers: {e:?}\n{}", gr.output()));
    assert_eq!(reply.body, "hello");
    assert_eq!(reply.pid(), pid);
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}
