//! Test harness: run the real graceful-run binary, watch its output, talk to its sockets.
//!
//! Waiting is always for a condition with a generous deadline ([`DEADLINE`]), never a sleep
//! that hopes: output lines are awaited on a condition variable, process states are polled
//! in short steps until the deadline, and a failure prints everything graceful-run said.

#![allow(dead_code)]

pub mod http;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::libc;

/// How long any awaited condition may take before the test fails. Generous: CI machines
/// are slow and loaded; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn graceful_run_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_graceful-run"))
}

/// A file of the repository's examples/ (a server, a config), as a path for a command line.
pub fn example_file(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path)
        .display()
        .to_string()
}

/// A cargo example built next to the tests (`cargo test` builds every example).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let debug_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let path = debug_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo test`, which builds examples",
        path.display()
    );
    path
}

pub fn probe() -> String {
    example("probe").display().to_string()
}

pub fn http_server() -> String {
    example("http-server").display().to_string()
}

/// A private temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("gr-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("the temp dir is writable");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lines of one output stream, collected by a thread and awaitable.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn collect(self, stream: impl Read + Send + 'static) {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let (lines, changed) = &*self.0;
                lines
                    .lock()
                    .expect("no test thread panics holding it")
                    .push(line);
                changed.notify_all();
            }
        });
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0
            .0
            .lock()
            .expect("no test thread panics holding it")
            .clone()
    }

    pub fn text(&self) -> String {
        self.snapshot().join("\n")
    }

    /// The first line matching `pred`, waiting up to `timeout` for it.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let end = Instant::now() + timeout;
        let (lines, changed) = &*self.0;
        let mut guard = lines.lock().expect("no test thread panics holding it");
        loop {
            if let Some(line) = guard.iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            guard = changed
                .wait_timeout(guard, end - now)
                .expect("no panics holding it")
                .0;
        }
    }

    /// How many lines match `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.snapshot().iter().filter(|l| pred(l)).count()
    }
}

/// A running graceful-run.
pub struct Gr {
    pub child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
    exited: Option<ExitStatus>,
}

impl Gr {
    /// Starts graceful-run with `args`, stdin from /dev/null, stdout and stderr captured.
    pub fn start(args: &[&str]) -> Gr {
        let mut command = Command::new(graceful_run_bin());
        command.args(args);
        Gr::spawn(command)
    }

    pub fn spawn(command: Command) -> Gr {
        Gr::spawn_inner(command, None)
    }

    /// Like [`Gr::spawn`], with stderr going to `stderr` instead of being captured.
    pub fn spawn_with_stderr(command: Command, stderr: impl Into<Stdio>) -> Gr {
        Gr::spawn_inner(command, Some(stderr.into()))
    }

    fn spawn_inner(mut command: Command, stderr_to: Option<Stdio>) -> Gr {
        let capture_stderr = stderr_to.is_none();
        command
            .stdout(Stdio::piped())
            .stderr(stderr_to.unwrap_or_else(Stdio::piped));
        if command.get_program() == graceful_run_bin().as_os_str() {
            command.stdin(Stdio::null());
        }
        let mut child = command.spawn().expect("the graceful-run binary runs");
        let stdout = Lines::default();
        let stderr = Lines::default();
        stdout
            .clone()
            .collect(child.stdout.take().expect("stdout was piped"));
        if capture_stderr {
            stderr
                .clone()
                .collect(child.stderr.take().expect("stderr was piped"));
        }
        Gr {
            child,
            stdout,
            stderr,
            exited: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with integer arguments.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Sends `signal` from a new process (a shell's `kill`): a second, separate request, where
    /// [`Gr::signal`] twice in a row is one process repeating itself, which graceful-run takes
    /// as one request (GNU timeout signals its child, then its own group).
    pub fn signal_from_another_process(&self, signal: i32) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", self.pid())])
            .status()
            .expect("sh runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Everything graceful-run and the child printed, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- stderr ---\n{}\n--- stdout ---\n{}",
            self.stderr.text(),
            self.stdout.text()
        )
    }

    /// Waits for a stderr line containing `needle`; fails the test after [`DEADLINE`].
    pub fn wait_stderr(&self, needle: &str) -> String {
        self.stderr
            .wait_for(DEADLINE, |l| l.contains(needle))
            .unwrap_or_else(|| panic!("no stderr line containing {needle:?}\n{}", self.output()))
    }

    /// Waits for a stdout line containing `needle`; fails the test after [`DEADLINE`].
    pub fn wait_stdout(&self, needle: &str) -> String {
        self.stdout
            .wait_for(DEADLINE, |l| l.contains(needle))
            .unwrap_or_else(|| panic!("no stdout line containing {needle:?}\n{}", self.output()))
    }

    /// The address of the `index`-th listener (0 = fd 3) from the "listening on" lines.
    pub fn listen_addr(&self, index: usize) -> String {
        let fd = format!("(fd {},", 3 + index);
        let line = self.wait_stderr(&fd);
        let start = line.find("listening on ").expect("a listening line") + "listening on ".len();
        let rest = &line[start..];
        rest[..rest.find(" (fd").expect("fd follows the address")].to_string()
    }

    /// The `index`-th listener as a TCP or UDP socket address.
    pub fn inet_addr(&self, index: usize) -> SocketAddr {
        let address = self.listen_addr(index);
        let bare = address
            .strip_prefix("tcp://")
            .or_else(|| address.strip_prefix("udp://"))
            .unwrap_or_else(|| panic!("not an inet listener: {address}"));
        bare.parse()
            .expect("graceful-run prints valid socket addresses")
    }

    /// The pid of generation `generation` from its "started" line.
    pub fn generation_pid(&self, generation: u64) -> i32 {
        let prefix = format!("gen {generation} (pid ");
        let line = self
            .stderr
            .wait_for(DEADLINE, |l| l.contains(&prefix) && l.contains("started"))
            .unwrap_or_else(|| panic!("generation {generation} never started\n{}", self.output()));
        let rest = &line[line.find(&prefix).expect("found above") + prefix.len()..];
        rest[..rest.find(')').expect("pid is closed by a parenthesis")]
            .parse()
            .expect("a pid")
    }

    /// Sends SIGTERM and waits: graceful-run must pass on the command's death by `signal`
    /// (its own exit by the same signal), or the test fails with everything it said.
    pub fn terminate_expecting_death_by(&mut self, signal: i32) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit();
        assert_eq!(killed_by(status), Some(signal), "{}", self.output());
    }

    /// Sends SIGTERM and waits: graceful-run must exit with `expected` (the command's code,
    /// passed on), or the test fails with everything it said.
    pub fn terminate_expecting_exit(&mut self, expected: i32) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit();
        assert_eq!(code(status), Some(expected), "{}", self.output());
    }

    /// Waits for graceful-run to exit; kills it and fails after [`DEADLINE`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.wait_exit_within(DEADLINE)
    }

    pub fn wait_exit_within(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting works") {
                self.exited = Some(status);
                // Let the reader threads drain what was written before exit.
                let _ = self.stderr.wait_for(Duration::from_millis(200), |_| false);
                return status;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                panic!(
                    "graceful-run did not exit within {timeout:?}\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.exited.is_none() && self.child.try_wait().expect("waiting works").is_none()
    }
}

impl Drop for Gr {
    fn drop(&mut self) {
        if self.exited.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            // SIGKILL: the child dies by its parent-death signal.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `condition` every few milliseconds until it holds; fails the test after `DEADLINE`.
pub fn poll_until(what: &str, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The exit code, or None when a signal ended the process.
pub fn code(status: ExitStatus) -> Option<i32> {
    status.code()
}

/// The signal that killed the process, if any.
pub fn killed_by(status: ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

/// Whether a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').map_or(0, |i| i + 2)..].chars().next();
            state != Some('Z') && state != Some('X')
        }
        Err(_) => false,
    }
}

/// (pid, ppid, state) of every process, from /proc.
pub fn processes() -> Vec<(i32, i32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            let mut fields = after.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            Some((pid, ppid, state))
        })
        .collect()
}

/// Every descendant of `root` (not `root` itself).
pub fn descendants(root: i32) -> Vec<(i32, char)> {
    let all = processes();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, ppid, state) in &all {
            if *ppid == parent {
                found.push((*pid, *state));
                frontier.push(*pid);
            }
        }
    }
    found
}

/// Processes whose command line contains `marker` (a unique string a test puts there).
pub fn processes_with(marker: &str) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(pid, _, state)| {
            *state != 'Z'
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(marker))
                    .unwrap_or(false)
        })
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Runs `command` to its end (stdin from /dev/null, stdout and stderr captured in full, up to
/// EOF) and returns what it printed; kills it and fails the test after [`DEADLINE`].
pub fn run_to_end(mut command: Command) -> std::process::Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("the command runs");
    let pid = child.id() as i32;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(DEADLINE) {
        Ok(output) => output.expect("waiting for the command works"),
        Err(_) => {
            // SAFETY: kill(2) with integer arguments.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{command:?} did not finish within {DEADLINE:?}");
        }
    }
}

/// A `sleep` duration no other process on the machine has on its command line (about 1000
/// seconds): run `sleep <it>` and find the process again with [`processes_with`].
pub fn sleep_marker() -> String {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Fixed width: no marker is a substring of another.
    format!("1000.{:07}{n:04}", std::process::id())
}

/// The `sleep` processes (not zombies) with `marker` on their command line.
pub fn sleepers(marker: &str) -> Vec<i32> {
    processes_with(marker)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "sleep")
        })
        .collect()
}

/// SIGKILLs every process with `marker` on its command line when dropped, so that a failing
/// test leaves none behind (the parent-death signal reaches only graceful-run's own child).
pub struct KillOnDrop(pub String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in processes_with(&self.0) {
            // SAFETY: kill(2) with integer arguments.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Gr {
    /// Polls `found` until it gives a value; fails after [`DEADLINE`] with `what` and
    /// everything graceful-run printed.
    pub fn poll<T>(&self, what: &str, found: impl FnMut() -> Option<T>) -> T {
        self.poll_until(DEADLINE, what, found)
    }

    /// [`Gr::poll`] with a deadline of the caller's (a build, say, takes longer).
    pub fn poll_until<T>(
        &self,
        deadline: Duration,
        what: &str,
        mut found: impl FnMut() -> Option<T>,
    ) -> T {
        let end = Instant::now() + deadline;
        loop {
            if let Some(value) = found() {
                return value;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting until {what}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A fake systemd notify socket (abstract, named after `tag` and this test process), and the
/// NOTIFY_SOCKET value naming it.
pub fn fake_systemd(tag: &str) -> (std::os::unix::net::UnixDatagram, String) {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("gr-test-{tag}-systemd/{}", std::process::id());
    let address =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("the name fits");
    let socket =
        std::os::unix::net::UnixDatagram::bind_addr(&address).expect("the abstract name is free");
    socket
        .set_read_timeout(Some(DEADLINE))
        .expect("a read timeout can be set");
    (socket, format!("@{name}"))
}

/// The next notification that is not a relayed STATUS= line.
pub fn next_state(socket: &std::os::unix::net::UnixDatagram, gr: &Gr) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({e})\n{}", gr.output()));
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !message.starts_with("STATUS=") {
            return message;
        }
    }
}

impl Gr {
    /// `graceful-run ctl --pid PID ARGS...` against this instance, run to its end.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(graceful_run_bin())
            .args(["ctl", "--pid", &self.pid().to_string()])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("graceful-run ctl runs")
    }
}

/// PATH with graceful-run's own directory first, so that a server can run
/// `graceful-run notify` as the guide shows.
pub fn path_with_graceful_run() -> String {
    let dir = graceful_run_bin()
        .parent()
        .expect("the binary lives in a directory")
        .display()
        .to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}
