//! Issue 15, attack by attack: nothing a `--user` server, a local user or a neighbouring
//! container does may reach past its own rights. Each test performs the attack of the
//! security review against the real binary, as root, with `nobody` (65534) as the attacker
//! where the review had it, and checks that it fails. Every one of them failed on the code
//! before the fix (item numbers are the issue's).
//!
//! Attackers are small programs: shell, `graceful-run notify` run as nobody, Python 3 from
//! /usr/bin (readable by nobody, unlike a pyenv under /root). A "neighbouring container" is
//! a process in another pid namespace that shares the network namespace, as on
//! `--network host` or in a Kubernetes pod; graceful-run runs as pid 1 of its own namespace
//! under `unshare`, like a container's init.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::libc;

use crate::support::{
    DEADLINE, Gr, KillOnDrop, TempDir, code, graceful_run_bin, path_with_graceful_run, poll_until,
    run_to_end, sleep_marker,
};

const PYTHON: &str = "/usr/bin/python3";
const NOBODY: &str = "65534";

/// `program args...` run as nobody:nogroup, without supplementary groups.
fn as_nobody(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(program);
    command
}

/// A directory anyone may write to, without the sticky bit: a Kubernetes `emptyDir`.
fn open_to_all(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("the temp dir is ours");
    dir
}

/// graceful-run with `args`, PATH able to find `graceful-run notify`, and `env`.
fn graceful_run(args: &[&str], env: &[(&str, &OsStr)]) -> Gr {
    let mut command = Command::new(graceful_run_bin());
    command
        .args(args)
        .env("PATH", path_with_graceful_run())
        .env_remove("NOTIFY_SOCKET");
    for (key, value) in env {
        command.env(key, value);
    }
    Gr::spawn(command)
}

/// A generation that says READY=1 through `graceful-run notify`, then sleeps `marker`.
fn ready_then_sleep(marker: &str) -> String {
    format!("graceful-run notify --ready || exit 9; exec sleep {marker}")
}

/// The abstract name of the control socket process `pid` listens on, as anyone who can read
/// its descriptors finds it: its socket inodes looked up in /proc/PID/net/unix.
fn ctl_socket_of(pid: i32) -> Option<String> {
    let inodes: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let name = fields.get(7)?.strip_prefix("@graceful-run/ctl/")?;
        inodes
            .contains(&fields.get(6)?.parse().ok()?)
            .then(|| format!("graceful-run/ctl/{name}"))
    })
}

fn connect_abstract(name: &str) -> std::io::Result<UnixStream> {
    UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
}

/// Sends `request` on a new connection to the abstract socket `name`, and reads everything
/// until the other side closes (at most [`DEADLINE`]).
fn ask(name: &str, request: &str) -> String {
    let mut stream = connect_abstract(name).expect("the control socket listens");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("a timeout can be set");
    let _ = stream.write_all(request.as_bytes());
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

fn ctl(args: &[&str]) -> Command {
    let mut command = Command::new(graceful_run_bin());
    command.arg("ctl").args(args);
    command
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The process named `comm` among the descendants of `root`, once it exists.
fn descendant_named(gr: &Gr, root: i32, comm: &str) -> i32 {
    gr.poll(&format!("{comm} runs under {root}"), || {
        crate::support::descendants(root)
            .into_iter()
            .map(|(pid, _)| pid)
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
            })
    })
}

/// graceful-run as pid 1 of a pid namespace (and, with `new_net`, a network namespace) of
/// its own, with a fresh /proc: a container's init. Returns it and its pid as seen here.
fn in_a_container(new_net: bool, args: &[&str]) -> (Gr, i32) {
    let mut command = Command::new("unshare");
    command.args(["--pid", "--fork", "--mount-proc"]);
    if new_net {
        command.arg("--net");
    }
    command
        .arg(graceful_run_bin())
        .args(args)
        .env("PATH", path_with_graceful_run());
    let gr = Gr::spawn(command);
    let outer = descendant_named(&gr, gr.pid(), "graceful-run");
    gr.wait_stderr("started");
    (gr, outer)
}

/// A pretend graceful-run: a Python server that listens on the control socket names a
/// squatter would take (its own pid's name in the pre-issue-15 form, a name in the current
/// form, and `extra`), and answers whatever it is asked with success: `status a fake
/// graceful-run`, or `accepted` then `done`. With FAKE_MODE=endless it streams one reply
/// line that never ends; with FAKE_PID_FILE it writes its pid there.
const FAKE_SERVER: &str = r#"
import os, socket, sys, threading
mode = os.environ.get("FAKE_MODE", "answer")
own = f"graceful-run/ctl/{os.stat('/proc/self/ns/pid').st_ino}/{os.getpid()}"
names = [own, "graceful-run/ctl/" + os.urandom(8).hex()] + sys.argv[1:]
def answer(conn):
    try:
        if mode == "endless":
            conn.sendall(b"status ")
            chunk = b"x" * 65536
            while True:
                conn.sendall(chunk)
        line = conn.makefile("rb").readline()
        if line.startswith(b"status"):
            conn.sendall(b"status a fake graceful-run\n")
        else:
            conn.sendall(b"accepted\ndone\n")
    except OSError:
        pass
    finally:
        conn.close()
def serve(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()
for name in dict.fromkeys(names):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind("\0" + name)
    except OSError as e:
        print("cannot bind", name, e, flush=True)
        continue
    s.listen(64)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
if "FAKE_PID_FILE" in os.environ:
    with open(os.environ["FAKE_PID_FILE"], "w") as f:
        f.write(f"{os.getpid()}\n")
print("listening", os.getpid(), flush=True)
threading.Event().wait()
"#;

/// A running [`FAKE_SERVER`], killed on drop.
struct Fake {
    child: Child,
    pid: i32,
}

impl Fake {
    fn start(mut command: Command, extra_names: &[&str], env: &[(&str, &str)]) -> Fake {
        command
            .args(["-c", FAKE_SERVER])
            .args(extra_names)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut child = command.spawn().expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("piped"))
            .read_line(&mut line)
            .expect("the fake server reports");
        let pid = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the fake server did not start: {line:?}"));
        Fake { child, pid }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- item 1: the private directory --------------------------------------------------------

/// Item 1. A `--user` server renames its NOTIFY_SOCKET directory away (its parent, like a
/// Kubernetes emptyDir, is writable by all) and puts a symlink to a root directory in its
/// place; a restart then binds generation 2's socket, and stopping removes both generations'
/// socket files. None of that may land in the victim directory: before the fix root deleted
/// `victim/1` and `victim/2` (and made `victim/2` a socket on the way).
#[test]
fn a_user_server_cannot_turn_roots_file_operations_onto_another_directory() {
    let base = open_to_all("sec-swap-base");
    let victim = TempDir::new("sec-swap-victim");
    std::fs::write(victim.join("1"), "precious 1").expect("the temp dir is writable");
    std::fs::write(victim.join("2"), "precious 2").expect("the temp dir is writable");
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let once = base.join("swapped");
    let script = format!(
        r#"if [ -e '{once}' ]; then exec sleep {marker}; fi
: > '{once}'
graceful-run notify --ready || exit 9
d=$(dirname "$NOTIFY_SOCKET")
mv "$d" "$d.moved" && ln -s '{victim}' "$d" && echo swapped
exec sleep {marker}"#,
        once = once.display(),
        victim = victim.path().display()
    );
    let mut gr = graceful_run(
        &[
            "--user",
            "nobody",
            "--ready",
            "notify",
            "--ready-timeout",
            "120s",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[("XDG_RUNTIME_DIR", base.path().as_os_str())],
    );
    gr.wait_stdout("swapped");
    gr.signal(libc::SIGHUP);
    gr.wait_stderr("gen 2 (pid");
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
    let mut left: Vec<String> = std::fs::read_dir(victim.path())
        .expect("the victim directory is still there")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["1", "2"], "{}", gr.output());
    for name in ["1", "2"] {
        assert_eq!(
            std::fs::read_to_string(victim.join(name)).unwrap_or_default(),
            format!("precious {name}"),
            "{}",
            gr.output()
        );
    }
}

/// Item 9. The `--user` server may write nothing in graceful-run's directory (before the fix
/// it owned it: it could fill /run's tmpfs, or leave a tree behind). The socket file is all
/// it gets, and nothing is left once graceful-run is gone.
#[test]
fn a_user_server_can_write_nothing_in_the_notify_directory() {
    let base = TempDir::new("sec-write");
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let script = format!(
        r#"d=$(dirname "$NOTIFY_SOCKET")
if mkdir "$d/tree" 2>/dev/null || touch "$d/junk" 2>/dev/null; then echo wrote; else echo refused; fi
{}"#,
        ready_then_sleep(&marker)
    );
    let mut gr = graceful_run(
        &[
            "--user", "nobody", "--ready", "notify", "--", "sh", "-c", &script,
        ],
        &[("XDG_RUNTIME_DIR", base.path().as_os_str())],
    );
    gr.wait_stderr("ready after");
    let verdict = gr
        .stdout
        .wait_for(DEADLINE, |l| l == "wrote" || l == "refused");
    assert_eq!(verdict.as_deref(), Some("refused"), "{}", gr.output());
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
    let left: Vec<PathBuf> = std::fs::read_dir(base.path())
        .expect("the base is there")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(left, Vec::<PathBuf>::new(), "left behind\n{}", gr.output());
}

/// Without CAP_CHOWN (examples/systemd's hardened unit) the socket file cannot be given to
/// the `--user` user: it stays root's, open to all (0722) in the root-owned directory, and
/// the generation still becomes ready; everything else about the directory holds.
#[test]
fn without_cap_chown_the_socket_is_open_to_all_and_the_directory_stays_roots() {
    use std::os::unix::fs::MetadataExt;
    let base = TempDir::new("sec-nochown");
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let script = format!(
        r#"stat -c 'socket %u %a' "$NOTIFY_SOCKET"; stat -c 'directory %u %a' "$(dirname "$NOTIFY_SOCKET")"; {}"#,
        ready_then_sleep(&marker)
    );
    let mut command = Command::new("setpriv");
    command
        .args(["--bounding-set=-chown", "--inh-caps=-chown"])
        .arg(graceful_run_bin())
        .args([
            "--user", "nobody", "--ready", "notify", "--", "sh", "-c", &script,
        ])
        .env("PATH", path_with_graceful_run())
        .env("XDG_RUNTIME_DIR", base.path());
    let mut gr = Gr::spawn(command);
    gr.wait_stderr("ready after");
    gr.wait_stderr("no CAP_CHOWN");
    assert_eq!(gr.wait_stdout("socket "), "socket 0 722", "{}", gr.output());
    assert_eq!(
        gr.wait_stdout("directory "),
        "directory 0 711",
        "{}",
        gr.output()
    );
    let dir = runtime_dirs(base.path());
    assert_eq!(dir.len(), 1);
    assert_eq!(std::fs::metadata(&dir[0]).expect("there").uid(), 0);
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

/// The `graceful-run*` entries of `base`.
fn runtime_dirs(base: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(base)
        .expect("the base is there")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("graceful-run"))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Dates a directory an hour back: a sweep leaves directories changed in the last seconds
/// alone (their instance may not have locked them yet).
fn age(path: &Path) {
    let status = Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(path)
        .status()
        .expect("touch runs");
    assert!(status.success());
}

/// Item 9. Every SIGKILLed instance used to leave its directory behind for good. The next
/// start sweeps them, and only them: a live instance's directory (locked) stays, and so do a
/// symlink planted under a matching name and a directory of another user.
#[test]
fn a_later_start_sweeps_what_killed_instances_left_and_nothing_else() {
    let base = TempDir::new("sec-sweep");
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let script = ready_then_sleep(&marker);
    let start = || {
        let gr = graceful_run(
            &["--ready", "notify", "--", "sh", "-c", &script],
            &[("XDG_RUNTIME_DIR", base.path().as_os_str())],
        );
        gr.wait_stderr("ready after");
        gr
    };
    let mut killed = start();
    let dead = runtime_dirs(base.path());
    assert_eq!(dead.len(), 1, "{dead:?}");
    killed.signal(libc::SIGKILL);
    killed.wait_exit();
    assert!(dead[0].exists(), "a SIGKILL leaves the directory");
    age(&dead[0]);

    let mut live = start();
    live.wait_stderr("left behind by a graceful-run that was killed");
    assert!(!dead[0].exists(), "not swept\n{}", live.output());
    let live_dir = runtime_dirs(base.path());
    assert_eq!(live_dir.len(), 1, "{live_dir:?}");
    age(&live_dir[0]);
    let victim = TempDir::new("sec-sweep-victim");
    std::fs::write(victim.join("1"), "precious").expect("the temp dir is writable");
    let planted = base.join(&format!("graceful-run-{}", "a".repeat(16)));
    std::os::unix::fs::symlink(victim.path(), &planted).expect("the base is ours");
    let foreign = base.join(&format!("graceful-run-{}", "b".repeat(16)));
    std::fs::create_dir(&foreign).expect("the base is ours");
    std::fs::write(foreign.join("1"), "theirs").expect("the directory is ours");
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("root may chown");
    age(&foreign);

    let mut later = start();
    assert!(
        live_dir[0].exists(),
        "a live instance's directory was swept"
    );
    assert!(victim.join("1").exists(), "a symlink was followed");
    assert!(
        foreign.join("1").exists(),
        "another user's directory was touched"
    );
    assert_eq!(later.stderr.count(|l| l.contains("left behind")), 0);
    // The live instance still hears its generations.
    live.signal(libc::SIGHUP);
    live.wait_stderr("takes over from gen 1");
    for gr in [&mut live, &mut later] {
        gr.signal(libc::SIGTERM);
        gr.wait_exit();
    }
}

// ----- item 4: who may notify ---------------------------------------------------------------

/// Item 4. While generation 2 boots (here: forever), an unrelated process of the same user
/// sends READY=1 to its socket. Before the fix the old generation was stopped at once for a
/// new one that could not serve; now the message is refused, with a warning saying why.
#[test]
fn an_unrelated_process_of_the_same_user_cannot_mark_a_generation_ready() {
    let shared = open_to_all("sec-ready");
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let once = shared.join("started");
    let socket_file = shared.join("socket");
    let script = format!(
        r#"if [ -e '{once}' ]; then echo "$NOTIFY_SOCKET" > '{socket}'; exec sleep {marker}; fi
: > '{once}'
{ready}"#,
        once = once.display(),
        socket = socket_file.display(),
        ready = ready_then_sleep(&marker)
    );
    let mut gr = graceful_run(
        &[
            "--user",
            "nobody",
            "--ready",
            "notify",
            "--ready-timeout",
            "120s",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
    );
    gr.wait_stderr("ready after");
    gr.signal(libc::SIGHUP);
    let socket = gr.poll("generation 2 says where its socket is", || {
        std::fs::read_to_string(&socket_file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    });
    let mut attacker = as_nobody(graceful_run_bin());
    attacker
        .args(["notify", "--ready"])
        .env("NOTIFY_SOCKET", &socket);
    let sent = run_to_end(attacker);
    assert_eq!(code(sent.status), Some(0), "{}", text(&sent));
    let outcome = gr
        .stderr
        .wait_for(DEADLINE, |l| {
            l.contains("takes over from gen 1") || l.contains("ignoring a notify message")
        })
        .unwrap_or_else(|| panic!("the message was neither taken nor refused\n{}", gr.output()));
    assert!(
        outcome.contains("gen 2") && outcome.contains("is not a process of this generation"),
        "{outcome}\n{}",
        gr.output()
    );
    assert_eq!(gr.stderr.count(|l| l.contains("takes over")), 0);
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

// ----- item 2: ctl --------------------------------------------------------------------------

/// Item 2. A process of a neighbouring container (another pid namespace, the same network
/// namespace), root or the same uid as graceful-run, reads the control socket's name from
/// /proc/net/unix and asks for a stop. Before the fix it was obeyed; now it is refused, and
/// `ctl` from inside the container (what `docker exec` does) still works.
#[test]
fn a_process_outside_graceful_runs_pid_namespace_cannot_control_it() {
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let (mut gr, outer) = in_a_container(false, &["--", "sleep", &marker]);
    let name = gr.poll("the control socket listens", || ctl_socket_of(outer));
    let reply = ask(&name, "stop\n");
    assert!(reply.starts_with("refused "), "{reply:?}\n{}", gr.output());
    assert!(
        reply.contains("outside graceful-run's pid namespace"),
        "{reply}"
    );
    gr.wait_stderr("refused a client");
    let inside = run_to_end({
        let mut command = Command::new("nsenter");
        command
            .args(["--target", &outer.to_string(), "--pid", "--mount", "--"])
            .arg(graceful_run_bin())
            .args(["ctl", "--pid", "1", "status"]);
        command
    });
    assert_eq!(code(inside.status), Some(0), "{}", text(&inside));
    assert!(String::from_utf8_lossy(&inside.stdout).contains("graceful-run pid 1"));
    assert_eq!(gr.stderr.count(|l| l.contains("stop requested")), 0);
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(outer, libc::SIGTERM) };
    gr.wait_exit();
}

/// Item 2. The client inside a container meets a squatter on graceful-run's control socket
/// name: nobody, in the host's pid namespace (its pid reads 0 in there), in the network
/// namespace where the client connects (here the container's own differs). Before the fix
/// the client trusted a peer whose pid reads 0 and reported a restart that never happened;
/// now it refuses to talk to it.
#[test]
fn ctl_does_not_take_a_squatter_for_graceful_run() {
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let (mut gr, outer) = in_a_container(true, &["--", "sleep", &marker]);
    let real = gr.poll("the control socket listens", || ctl_socket_of(outer));
    let namespace = nix::sys::stat::stat(format!("/proc/{outer}/ns/pid").as_str())
        .expect("root sees the namespace")
        .st_ino;
    let old_style = format!("graceful-run/ctl/{namespace}/1");
    let _squatter = Fake::start(as_nobody(PYTHON), &[&real, &old_style], &[]);
    // The container's pid and mount namespaces, this network namespace.
    let output = run_to_end({
        let mut command = Command::new("nsenter");
        command
            .args(["--target", &outer.to_string(), "--pid", "--mount", "--"])
            .arg(graceful_run_bin())
            .args(["ctl", "--pid", "1", "restart", "--wait"]);
        command
    });
    assert_eq!(code(output.status), Some(125), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not talking to it"), "{stderr}");
    assert_eq!(
        gr.stderr.count(|l| l.contains("gen 2")),
        0,
        "{}",
        gr.output()
    );
    // SAFETY: kill(2) with integer arguments.
    unsafe { libc::kill(outer, libc::SIGTERM) };
    gr.wait_exit();
}

/// Item 2. A name taken before graceful-run starts (nobody reserved the name that the pid
/// about to start would get) used to leave ctl dead for the instance's life; the name is
/// unpredictable now, and ctl works.
#[test]
fn a_name_squatted_before_graceful_run_starts_does_not_leave_ctl_dead() {
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let mut command = Command::new("sh");
    command
        .args(["-c", r#"echo $$; read go; exec "$@""#, "sh"])
        .arg(graceful_run_bin())
        .args(["--", "sleep", &marker])
        .stdin(Stdio::piped());
    let mut gr = Gr::spawn(command);
    let pid: i32 = gr
        .stdout
        .wait_for(DEADLINE, |l| !l.is_empty())
        .and_then(|l| l.parse().ok())
        .expect("the shell says its pid");
    let namespace = nix::sys::stat::stat("/proc/self/ns/pid")
        .expect("our namespace")
        .st_ino;
    let _squatter = Fake::start(
        as_nobody(PYTHON),
        &[&format!("graceful-run/ctl/{namespace}/{pid}")],
        &[],
    );
    gr.child
        .stdin
        .take()
        .expect("piped")
        .write_all(b"go\n")
        .expect("the shell reads");
    gr.wait_stderr("ready after");
    let output = run_to_end(ctl(&["--pid", &pid.to_string(), "status"]));
    assert_eq!(code(output.status), Some(0), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("gen 1"));
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

/// Item 2. `ctl --pid-file` with a pid file that another user wrote, naming that user's own
/// fake server: before the fix `restart --wait`, `status` and `stop --wait` all reported
/// success. Now the pid file is not believed, and neither is a server of another user asked
/// for by pid.
#[test]
fn ctl_believes_no_pid_file_and_no_server_of_another_user() {
    let dir = open_to_all("sec-pidfile");
    let pid_file = dir.join("gr.pid");
    let fake = Fake::start(
        as_nobody(PYTHON),
        &[],
        &[("FAKE_PID_FILE", pid_file.to_str().expect("utf-8"))],
    );
    for args in [&["restart", "--wait"][..], &["status"], &["stop", "--wait"]] {
        let mut all = vec!["--pid-file", pid_file.to_str().expect("utf-8")];
        all.extend_from_slice(args);
        let output = run_to_end(ctl(&all));
        assert_eq!(
            code(output.status),
            Some(125),
            "{args:?}: {}",
            text(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("belongs to uid 65534, neither root nor you"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let output = run_to_end(ctl(&["--pid", &fake.pid.to_string(), "status"]));
    assert_eq!(code(output.status), Some(125), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("uid 65534, neither root nor you"),
        "{}",
        text(&output)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
}

/// A graceful-run with no socket to serve whose generations are ready at once, for the ctl
/// tests.
fn serving_nothing(marker: &str) -> Gr {
    let gr = graceful_run(
        &[
            "--ready",
            "notify",
            "--",
            "sh",
            "-c",
            &ready_then_sleep(marker),
        ],
        &[],
    );
    gr.wait_stderr("ready after");
    gr
}

/// Item 2. Every request that changes something is logged with the pid and uid that asked
/// (the log used to say only "stop requested by graceful-run ctl").
#[test]
fn every_restart_and_stop_is_logged_with_who_asked() {
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let mut gr = serving_nothing(&marker);
    let mut client = ctl(&["--pid", &gr.pid().to_string(), "restart"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("graceful-run ctl runs");
    let asker = client.id();
    assert!(client.wait().expect("ctl ends").success());
    gr.wait_stderr(&format!("pid {asker} (uid 0) asks for 'restart'"));
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

/// A graceful-run that runs as another user (a non-root image) is controlled as that user:
/// root's ctl does not believe a server of another uid, and says how to proceed, whether or
/// not root may look at the process (in a container root lacks CAP_SYS_PTRACE).
#[test]
fn ctl_of_another_users_instance_is_run_as_that_user() {
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let mut command = as_nobody(graceful_run_bin());
    command.args(["--", "sleep", &marker]);
    let mut gr = Gr::spawn(command);
    gr.wait_stderr("ready after");
    let pid = gr.pid().to_string();
    let mut without_ptrace = Command::new("setpriv");
    without_ptrace
        .args(["--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace"])
        .arg(graceful_run_bin())
        .args(["ctl", "--pid", &pid, "status"]);
    for command in [ctl(&["--pid", &pid, "status"]), without_ptrace] {
        let output = run_to_end(command);
        assert_eq!(code(output.status), Some(125), "{}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("run ctl as that user"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let mut as_owner = as_nobody(graceful_run_bin());
    as_owner.args(["ctl", "--pid", &pid, "status"]);
    let output = run_to_end(as_owner);
    assert_eq!(code(output.status), Some(0), "{}", text(&output));
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

// ----- item 6: idle connections -------------------------------------------------------------

/// Item 6. 32 connections that never send used to lock every ctl client out for as long as
/// they stayed open, and 1,000 connections gave about 1,000 warning lines. Now a newcomer
/// takes the place of the oldest idle one, the warnings are throttled, and an idle connection
/// is closed after a few seconds.
#[test]
fn connections_that_never_send_neither_lock_ctl_out_nor_flood_the_log() {
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let mut gr = serving_nothing(&marker);
    let pid = gr.pid().to_string();
    let name = gr.poll("the control socket listens", || ctl_socket_of(gr.pid()));
    let idle: Vec<UnixStream> = (0..32)
        .map(|_| connect_abstract(&name).expect("connects"))
        .collect();
    let output = run_to_end(ctl(&["--pid", &pid, "status"]));
    assert_eq!(code(output.status), Some(0), "{}", text(&output));
    drop(idle);

    let before = gr.stderr.count(|l| l.contains("control:"));
    for _ in 0..10 {
        let batch: Vec<UnixStream> = (0..100)
            .filter_map(|_| connect_abstract(&name).ok())
            .collect();
        drop(batch);
    }
    // Answered after every connection before it was accepted.
    let output = run_to_end(ctl(&["--pid", &pid, "status"]));
    assert_eq!(code(output.status), Some(0), "{}", text(&output));
    let lines = gr.stderr.count(|l| l.contains("control:")) - before;
    assert!(
        lines <= 10,
        "{lines} lines for 1,000 connections\n{}",
        gr.output()
    );

    // One that sends nothing is closed: the read ends (a line saying why, then EOF).
    let mut quiet = connect_abstract(&name).expect("connects");
    quiet
        .set_read_timeout(Some(DEADLINE))
        .expect("a timeout can be set");
    let mut said = String::new();
    let read = quiet.read_to_string(&mut said);
    assert!(read.is_ok(), "still open after {DEADLINE:?}: {read:?}");
    assert_eq!(said, "error no request in time\n");
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

// ----- item 8: the client -------------------------------------------------------------------

/// Item 8. A server that streams one endless reply line grew the client without bound (300
/// MB until `ulimit -v` aborted it). The client now gives up past a size no graceful-run
/// reply comes near. (The pretend server runs as root, so the client's other checks pass.)
#[test]
fn the_client_gives_up_on_an_endless_reply() {
    use std::os::unix::process::CommandExt;
    let fake = Fake::start(Command::new(PYTHON), &[], &[("FAKE_MODE", "endless")]);
    let mut client = ctl(&["--pid", &fake.pid.to_string(), "status"]);
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        client.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 512 << 20,
                rlim_max: 512 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = run_to_end(client);
    assert_eq!(code(output.status), Some(125), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("a reply longer than"),
        "{}",
        text(&output)
    );
}

/// Item 8. `ctl stop --wait` exited 0 when graceful-run was SIGKILLed in the middle of the
/// stop; it must say the stop did not complete.
#[test]
fn stop_wait_fails_when_graceful_run_is_killed_before_it_is_done() {
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    // A command that ignores TERM: the stop waits for its 60 s timeout.
    let mut gr = graceful_run(
        &[
            "--stop-timeout",
            "60s",
            "--",
            "sh",
            "-c",
            &format!("trap '' TERM; exec sleep {marker}"),
        ],
        &[],
    );
    gr.wait_stderr("ready after");
    let client = ctl(&["--pid", &gr.pid().to_string(), "stop", "--wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("graceful-run ctl runs");
    gr.wait_stderr("stop requested");
    gr.signal(libc::SIGKILL);
    gr.wait_exit();
    let output = client.wait_with_output().expect("ctl ends");
    assert_eq!(code(output.status), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ended before it confirmed the stop"),
        "{}",
        text(&output)
    );
}

/// Item 8. A client that shuts down its sending side after the request (`nc -N` does) lost
/// the result of `restart wait`; it now gets both replies.
#[test]
fn a_client_that_closes_its_sending_side_still_learns_how_the_restart_ended() {
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let mut gr = serving_nothing(&marker);
    let name = gr.poll("the control socket listens", || ctl_socket_of(gr.pid()));
    let mut stream = connect_abstract(&name).expect("connects");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("a timeout can be set");
    stream
        .write_all(b"restart wait\n")
        .expect("the request is sent");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("a connected socket shuts down");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert_eq!(reply, "accepted\ndone\n", "{}", gr.output());
    gr.wait_stderr("takes over from gen 1");
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}

// ----- item 7: the pid file -----------------------------------------------------------------

/// Item 7. A FIFO at the pid-file path (in /tmp, anyone's to plant) hung graceful-run before
/// it started anything, beyond the reach of TERM. It is refused at once now.
#[test]
fn a_fifo_at_the_pid_file_path_is_refused_at_once() {
    let dir = TempDir::new("sec-fifo");
    let path = dir.join("gr.pid");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o666))
        .expect("the temp dir is writable");
    let mut gr = Gr::start(&["--pid-file", path.to_str().expect("utf-8"), "--", "true"]);
    let status = gr.wait_exit();
    assert_eq!(code(status), Some(125), "{}", gr.output());
    let stderr = gr.stderr.text();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--pid-file") && stderr.contains("a FIFO"),
        "{stderr}"
    );
}

/// Item 7. A pid file in use is reported by the process that holds its lock, not by the pid
/// written in it (which whoever wrote the file chose: here 1).
#[test]
fn a_pid_file_in_use_names_the_process_that_holds_its_lock() {
    let dir = TempDir::new("sec-holder");
    let path = dir.join("gr.pid");
    let mut holder = Command::new(PYTHON)
        .args([
            "-c",
            "import fcntl, sys, time\n\
             f = open(sys.argv[1], 'w'); f.write('1\\n'); f.flush()\n\
             fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(1000)",
        ])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().expect("piped"))
        .read_line(&mut line)
        .expect("the holder reports");
    let mut gr = Gr::start(&["--pid-file", path.to_str().expect("utf-8"), "--", "true"]);
    let status = gr.wait_exit();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code(status), Some(125), "{}", gr.output());
    let stderr = gr.stderr.text();
    assert!(
        stderr.contains(&format!("locked by pid {} (python3)", holder.id())),
        "{stderr}"
    );
}

// ----- item 3: the terminal -----------------------------------------------------------------

/// Item 3. A `--user` command run from root's interactive terminal pushed a command line
/// into the terminal's input (TIOCSTI), which root's shell read once graceful-run exited.
/// It has no controlling terminal now: TIOCSTI is refused, and the shell reads what root
/// types.
#[test]
fn a_user_command_cannot_type_into_roots_terminal() {
    let dir = TempDir::new("sec-tty");
    let inject = dir.join("inject.py");
    std::fs::write(
        &inject,
        "import fcntl, termios\n\
         try:\n\
         \x20   for c in b'echo INJECTED\\n': fcntl.ioctl(0, termios.TIOCSTI, bytes([c]))\n\
         \x20   print('tiocsti: done', flush=True)\n\
         except OSError as e:\n\
         \x20   print('tiocsti: refused', e.errno, flush=True)\n",
    )
    .expect("the temp dir is writable");
    let script = format!(
        "'{}' --user nobody -- {PYTHON} '{}'; read line; echo \"after:$line\"",
        graceful_run_bin().display(),
        inject.display()
    );
    let (mut session, mut terminal) = crate::terminal::in_terminal(&script);
    let said = session.wait_stdout("tiocsti:");
    session.wait_stderr("exiting with status");
    terminal
        .write_all(b"typed\n")
        .expect("the terminal takes input");
    let after = session.wait_stdout("after:");
    session.wait_exit();
    assert_eq!(after, "after:typed", "{said}\n{}", session.output());
    assert!(said.starts_with("tiocsti: refused"), "{said}");
}

/// Item 3, what must keep working: Ctrl-C in an interactive shell still stops a `--user`
/// command (graceful-run, the job the shell put in the terminal's foreground, forwards it),
/// and the shell sees 130.
#[test]
fn ctrl_c_still_stops_a_user_command() {
    let marker = sleep_marker();
    let _cleanup = KillOnDrop(marker.clone());
    let (mut shell, mut terminal) = crate::terminal::in_terminal("exec bash --norc --noprofile -i");
    let mut typing = |text: &[u8]| terminal.write_all(text).expect("the terminal takes input");
    typing(
        format!(
            "'{}' --user nobody -- sleep {marker}\n",
            graceful_run_bin().display()
        )
        .as_bytes(),
    );
    shell.wait_stderr("started");
    poll_until("the command sleeps", || {
        !crate::support::sleepers(&marker).is_empty()
    });
    typing(b"\x03");
    shell.wait_stderr("dying of SIGINT like the command");
    // A job killed by SIGINT ends the rest of its command line: ask for its status apart.
    typing(b"echo status:$?\n");
    assert_eq!(
        shell.wait_stdout("status:"),
        "status:130",
        "{}",
        shell.output()
    );
    typing(b"exit\n");
    shell.wait_exit();
}

// ----- item 5: a server graceful-run cannot see ---------------------------------------------

/// Item 5. A non-root graceful-run cannot see a server that made itself non-dumpable
/// (PR_SET_DUMPABLE 0, as file capabilities or setuid do): before the fix it killed it while
/// it waited in accept(), exited 124 and blamed it, with the real cause only under -v. It
/// says so once, at warning level, with what to use instead.
#[test]
fn a_server_that_hides_its_proc_files_is_named_in_one_warning() {
    let server = "import ctypes, socket\n\
                  ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)\n\
                  socket.socket(fileno=3).accept()\n";
    let mut command = as_nobody(graceful_run_bin());
    command.args([
        "--ready-timeout",
        "3s",
        "-l",
        "127.0.0.1:0",
        "--",
        PYTHON,
        "-c",
        server,
    ]);
    let mut gr = Gr::spawn(command);
    let status = gr.wait_exit();
    assert_eq!(code(status), Some(124), "{}", gr.output());
    let warnings: Vec<String> = gr
        .stderr
        .snapshot()
        .into_iter()
        .filter(|l| l.contains("cannot see whether it waits for connections"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", gr.output());
    assert!(
        warnings[0].contains("warning")
            && warnings[0].contains("permission denied (the process is not dumpable")
            && warnings[0].contains("--ready notify")
            && warnings[0].contains("--ready DURATION"),
        "{}",
        warnings[0]
    );
    // The readiness timeout's own line names the cause too.
    let timeout = gr
        .stderr
        .snapshot()
        .into_iter()
        .find(|l| l.contains("not ready after"))
        .unwrap_or_else(|| panic!("no timeout line\n{}", gr.output()));
    assert!(
        timeout.contains("not dumpable") && timeout.contains("--ready notify"),
        "{timeout}"
    );
}

// ----- item 11: a look that blocks ----------------------------------------------------------

/// A server that waits in poll() on an array that lives in a page of a FUSE file whose read
/// is answered only after 40 s: a look at its poll array waits as long. It holds fd 3, as a
/// server does. The file system is served by a child process (a FUSE server must not be a
/// thread of the process that faults on its pages, or neither can ever exit), in a mount
/// namespace of their own that goes with them; as root, since /dev/fuse is root's here.
const FUSE_POLLER: &str = r#"
import ctypes, errno, os, struct, sys, tempfile, threading
libc = ctypes.CDLL(None, use_errno=True)
# A private /tmp of its own, too, for the mount point: nothing is left on the host's.
if (libc.unshare(0x00020000) != 0
        or libc.mount(None, b"/", None, 0x4000 | 0x40000, None) != 0
        or libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None) != 0):
    sys.exit("no mount namespace: " + os.strerror(ctypes.get_errno()))
mnt = tempfile.mkdtemp()
ready_r, ready_w = os.pipe()
if os.fork() == 0:
    libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    dev = os.open("/dev/fuse", os.O_RDWR)
    options = f"fd={dev},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"slow", mnt.encode(), b"fuse", 0x2 | 0x4, options) != 0:
        os._exit(1)
    os.write(ready_w, b"!")
    def attr(ino, mode):
        return struct.pack("QQQQQQIIIIIIIIII", ino, 4096, 8, 0, 0, 0, 0, 0, 0, mode, 1, 0, 0, 0, 4096, 0)
    def reply(unique, body=b"", error=0):
        try:
            os.write(dev, struct.pack("IiQ", 16 + len(body), error, unique) + body)
        except OSError:
            pass
    while True:
        data = os.read(dev, 1 << 20)
        length, opcode, unique, node = struct.unpack_from("IIQQ", data)
        if opcode == 26:    # INIT
            reply(unique, struct.pack("IIIIHHI", 7, 19, 0, 0, 0, 0, 4096))
        elif opcode == 1:   # LOOKUP
            reply(unique, struct.pack("QQQQII", 2, 0, 60, 60, 0, 0) + attr(2, 0o100644))
        elif opcode == 3:   # GETATTR
            reply(unique, struct.pack("QII", 60, 0, 0) + attr(*((1, 0o40755) if node == 1 else (2, 0o100644))))
        elif opcode == 14:  # OPEN
            reply(unique, struct.pack("QII", 1, 0, 0))
        elif opcode == 15:  # READ: answered 40 s later
            size = struct.unpack_from("QQII", data, 40)[2]
            threading.Timer(40, reply, (unique, bytes(size))).start()
        elif opcode == 36:  # INTERRUPT: no answer
            pass
        elif opcode in (18, 25):
            reply(unique)
        else:
            reply(unique, error=-errno.ENOSYS)
if os.read(ready_r, 1) != b"!":
    sys.exit("no FUSE mount")
fd = os.open(os.path.join(mnt, "f"), os.O_RDONLY)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
page = libc.mmap(None, 4096, 1, 1, fd, 0)
print("polling", flush=True)
libc.poll(ctypes.c_void_p(page), 1, -1)
"#;

/// Item 11. The readiness look read the poll array of a starting generation through
/// /proc/PID/mem on the supervisor's only thread: a read that blocks froze signal handling
/// and every timeout (here for 40 s: a TERM went unanswered). The look runs on a thread of
/// its own now, waited for at most 200 ms: the generation is named as not seen, and TERM is
/// acted on at once. (The server itself cannot die of it while its read is pending: it is
/// SIGKILLed at the stop timeout, which ends its file system, its read, and the look.)
#[test]
#[cfg_attr(not(has_fuse), ignore = "no /dev/fuse: modprobe fuse")]
fn a_look_that_blocks_in_the_kernel_does_not_freeze_the_supervisor() {
    let mut gr = Gr::start(&[
        "-l",
        "127.0.0.1:0",
        "--ready-timeout",
        "120s",
        "--stop-timeout",
        "1s",
        "--",
        "python3",
        "-c",
        FUSE_POLLER,
    ]);
    gr.wait_stdout("polling");
    gr.wait_stderr("took longer than 200ms");
    gr.signal(libc::SIGTERM);
    gr.wait_stderr("SIGTERM received: stopping");
    gr.wait_stderr("sending SIGKILL");
    gr.wait_exit_within(Duration::from_secs(10));
}

// ----- item 10: graceful-run notify ---------------------------------------------------------

/// Item 10. A NOTIFY_SOCKET path that is not UTF-8 was converted lossily, and the message
/// went to another path (or nowhere). It goes to the path given, byte for byte.
#[test]
fn notify_sends_to_a_path_that_is_not_utf8() {
    let dir = TempDir::new("sec-notify-bytes");
    let path = dir.path().join(OsStr::from_bytes(b"notify-\xff.sock"));
    let socket = UnixDatagram::bind(&path).expect("the temp dir is writable");
    socket
        .set_read_timeout(Some(DEADLINE))
        .expect("a timeout can be set");
    let child = Command::new(graceful_run_bin())
        .args(["notify", "--ready"])
        .env("NOTIFY_SOCKET", path.as_os_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("graceful-run runs");
    let mut buf = [0u8; 4096];
    let first = socket.recv(&mut buf).map(|n| buf[..n].to_vec());
    // Then its barrier, taken (and its descriptor closed) by this read.
    let _ = socket.recv(&mut buf);
    let output = child.wait_with_output().expect("graceful-run notify ends");
    assert_eq!(
        first.ok().as_deref(),
        Some(&b"READY=1"[..]),
        "{}",
        text(&output)
    );
    assert_eq!(code(output.status), Some(0), "{}", text(&output));
}

/// Item 10. A 100 KB `--status` was reported sent, though receivers drop a datagram over
/// their buffer (systemd reads 4096 bytes). It is refused, with nothing sent.
#[test]
fn notify_refuses_a_message_receivers_would_drop() {
    let dir = TempDir::new("sec-notify-long");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("the temp dir is writable");
    let long = "x".repeat(100_000);
    let output = run_to_end({
        let mut command = Command::new(graceful_run_bin());
        command
            .args(["notify", "--status", &long])
            .env("NOTIFY_SOCKET", &path);
        command
    });
    assert_eq!(code(output.status), Some(125), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--status") && stderr.contains("4096"),
        "{stderr}"
    );
    socket.set_nonblocking(true).expect("fcntl works");
    let mut buf = [0u8; 16];
    assert!(socket.recv(&mut buf).is_err(), "something was sent");
}

// ----- item 9: STATUS= ----------------------------------------------------------------------

/// Item 9. 73,915 STATUS= datagrams gave 73,933 log lines. systemd keeps STATUS=, it does not
/// log it: graceful-run logs it at debug level only, a few a second, and `ctl status` shows
/// the last one.
#[test]
fn a_flood_of_status_messages_is_kept_not_logged() {
    let server = "import os, socket, time\n\
                  address = os.environ['NOTIFY_SOCKET'].replace('@', '\\0', 1)\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                  for n in range(5000):\n\
                  \x20   s.sendto(b'STATUS=step %d' % n, address)\n\
                  s.sendto(b'READY=1\\nSTATUS=all done', address)\n\
                  print('sent', flush=True)\n\
                  time.sleep(1000)\n";
    let mut gr = Gr::start(&[
        "-v",
        "--log-format",
        "json",
        "--ready",
        "notify",
        "--",
        "python3",
        "-c",
        server,
    ]);
    gr.wait_stderr("ready after");
    gr.wait_stdout("sent");
    let logged = gr.stderr.count(|l| l.contains("status: step"));
    assert!(logged <= 40, "{logged} lines for 5,000 STATUS= messages");
    assert_eq!(
        gr.stderr
            .count(|l| l.contains("status: step") && !l.contains(r#""level":"debug""#)),
        0,
        "STATUS= is logged at debug level only\n{}",
        gr.output()
    );
    let output = run_to_end(ctl(&["--pid", &gr.pid().to_string(), "status"]));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("status: all done"),
        "{}",
        text(&output)
    );
    gr.signal(libc::SIGTERM);
    gr.wait_exit();
}
