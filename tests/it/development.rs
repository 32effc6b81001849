//! Development mode (`--watch PATH --build CMD`, issue 18) with real toolchains, the commands of
//! README's "Development": the Go example of docs/servers.md rebuilt by `go build`, the Python
//! one checked by `py_compile`, the Node.js one by `node --check`, the puma one by `ruby -c`, each
//! copied into a directory of its own and edited there as a developer would, under a load of
//! new connections that must never see a refused or failed connection:
//!
//! - an edit is built and served;
//! - changes to a .gitignored file, to a file in a hidden directory and to the build's own
//!   output trigger nothing;
//! - a broken build keeps the old code serving, and the compiler's error is in graceful-run's
//!   output;
//! - new code that crashes on start keeps the old code serving;
//! - 20 saves in 200 ms give exactly one build (the build command counts itself in a file).
//!
//! And the idle cost: without `--watch` graceful-run has no watcher thread and no inotify fd;
//! with it, one of each, and neither wakes while nothing changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::http::{self, Load, Target};
use crate::support::{Gr, TempDir, example_file, graceful_run_bin, path_with_graceful_run};

/// Go builds on a busy 2-core machine: generous.
const BUILD_DEADLINE: Duration = Duration::from_secs(240);
/// Load clients: modest, for a 2-core machine running other tests at the same time.
const CLIENTS: usize = 4;
/// graceful-run's debounce quiet period (src/watch.rs `QUIET`): saves further apart than this
/// are two bursts, rightly.
const QUIET: Duration = Duration::from_millis(300);

/// A project of one source file, copied from examples/ into a temp dir.
struct Project {
    dir: TempDir,
    /// The source file that is edited, relative to `dir`.
    source: &'static str,
    /// The response body's start in the original source, replaced by each edit.
    greeting: &'static str,
    /// Turns the source into one that builds and exits at once with status 3.
    crash: fn(&str) -> String,
    /// Something that does not compile, and a piece of the compiler's complaint about it.
    broken: &'static str,
    complaint: &'static str,
    /// Whether the command runs the build's artifact (and not an interpreter).
    runs_artifact: bool,
    /// The directory the build writes into (ignored by the project's .gitignore).
    output_dir: &'static str,
    /// `--ready`.
    ready: &'static str,
    /// `--build` and the command.
    build: String,
    command: Vec<String>,
    /// Extra environment for graceful-run (and so for the build and the server).
    env: Vec<(String, String)>,
    original: String,
}

impl Project {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("the temp dir is writable");
        }
        std::fs::write(path, text).expect("the temp dir is writable");
    }

    /// The source with its greeting replaced by `greeting`.
    fn edited(&self, greeting: &str) -> String {
        assert!(self.original.contains(self.greeting));
        self.original.replacen(self.greeting, greeting, 1)
    }

    /// How many builds ran (each appends a line to builds.log before building).
    fn builds(&self) -> usize {
        std::fs::read_to_string(self.dir.join("builds.log"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

/// The shared GOCACHE of this test target, so that only the first build ever compiles net/http.
fn go_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("go-example")
        .join("cache")
}

/// A project directory for a development test: the example's source file `source` (its text is
/// also returned, to edit and restore), the other `files` copied beside it, and a .gitignore
/// of `ignored` (the build's output and its counter: ignored, or each build would trigger the
/// next one).
fn project_dir(
    tag: &str,
    source: (&str, &str),
    files: &[(&str, &str)],
    ignored: &str,
) -> (TempDir, String) {
    let dir = TempDir::new(tag);
    let (example, name) = source;
    let original = std::fs::read_to_string(example_file(example)).expect("the example exists");
    std::fs::write(dir.join(name), &original).expect("the temp dir is writable");
    for (example, name) in files {
        std::fs::copy(example_file(example), dir.join(name)).expect("the example exists");
    }
    std::fs::write(dir.join(".gitignore"), ignored).expect("the temp dir is writable");
    (dir, original)
}

fn go_project() -> Project {
    let (dir, original) = project_dir(
        "dev-go",
        ("go/main.go", "main.go"),
        &[("go/go.mod", "go.mod")],
        "bin/\n*.log\n",
    );
    let env = vec![
        ("GOCACHE".to_string(), go_cache().display().to_string()),
        ("GOPROXY".to_string(), "off".to_string()),
        ("GOFLAGS".to_string(), "-mod=mod".to_string()),
    ];
    let project = Project {
        dir,
        source: "main.go",
        greeting: "hello from pid",
        crash: |source| source.replacen("func main() {", "func main() {\n\tos.Exit(3)", 1),
        broken: "\nthis is not Go\n",
        complaint: "syntax error",
        output_dir: "bin",
        runs_artifact: true,
        // go build writes a new file (a new inode) and renames it into place: the running
        // generation's executable is never written to.
        ready: "notify",
        build: "echo build >> builds.log; go build -o bin/server .".to_string(),
        command: vec!["./bin/server".to_string()],
        env,
        original,
    };
    // The first build, before graceful-run starts (as a developer would), warms the cache.
    let output = Command::new("sh")
        .args(["-c", "go build -o bin/server ."])
        .current_dir(project.path())
        .envs(project.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("go runs");
    assert!(
        output.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    project
}

fn python_project() -> Project {
    let (dir, original) = project_dir(
        "dev-python",
        ("python/server.py", "server.py"),
        &[],
        "__pycache__/\n*.log\n",
    );
    Project {
        dir,
        source: "server.py",
        greeting: "hello from pid",
        crash: |source| format!("raise SystemExit(3)\n{source}"),
        broken: "\nthis is not Python(\n",
        complaint: "SyntaxError",
        output_dir: "__pycache__",
        runs_artifact: false,
        // A build step that only checks the syntax: a broken file is refused before any
        // generation runs it.
        ready: "notify",
        build: "echo build >> builds.log; python3 -m py_compile server.py".to_string(),
        command: vec!["python3".to_string(), "server.py".to_string()],
        env: Vec::new(),
        original,
    }
}

fn node_project() -> Project {
    let (dir, original) = project_dir(
        "dev-node",
        ("node/server.js", "server.js"),
        &[],
        "node_modules/\n*.log\n",
    );
    Project {
        dir,
        source: "server.js",
        greeting: "hello from pid",
        crash: |source| format!("process.exit(3);\n{source}"),
        broken: "\nthis is not JavaScript(\n",
        complaint: "SyntaxError",
        output_dir: "node_modules",
        runs_artifact: false,
        ready: "notify",
        // `node --check` parses without running: a syntax error is refused before any
        // generation runs it.
        build: "echo build >> builds.log; node --check server.js".to_string(),
        command: vec!["node".to_string(), "server.js".to_string()],
        env: Vec::new(),
        original,
    }
}

fn ruby_project() -> Project {
    let (dir, original) = project_dir(
        "dev-ruby",
        ("ruby/config.ru", "config.ru"),
        &[("ruby/puma.rb", "puma.rb")],
        "tmp/\n*.log\n",
    );
    Project {
        dir,
        source: "config.ru",
        greeting: "hello from pid",
        crash: |source| format!("exit 3\n{source}"),
        broken: "\nthis is not Ruby(\n",
        complaint: "syntax error",
        output_dir: "tmp",
        runs_artifact: false,
        ready: "auto",
        build: "echo build >> builds.log; ruby -c config.ru".to_string(),
        command: ["puma", "-C", "puma.rb", "config.ru"]
            .map(String::from)
            .to_vec(),
        env: Vec::new(),
        original,
    }
}

/// graceful-run in `project`'s directory, watching it, with its build and command.
fn start(project: &Project) -> Gr {
    let mut cmd = Command::new(graceful_run_bin());
    cmd.args(["-l", "127.0.0.1:0", "--stop-timeout", "20s"])
        .args(["--ready", project.ready])
        .arg("--watch")
        .arg(project.path())
        .args(["--build", &project.build, "--"])
        .args(&project.command)
        .current_dir(project.path())
        .envs(project.env.iter().map(|(k, v)| (k, v)))
        .env("PATH", path_with_graceful_run())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS");
    Gr::spawn(cmd)
}

/// Polls `found` until [`BUILD_DEADLINE`].
fn poll<T>(gr: &Gr, what: &str, found: impl FnMut() -> Option<T>) -> T {
    gr.poll_until(BUILD_DEADLINE, what, found)
}

fn lines(gr: &Gr, needle: &str) -> usize {
    gr.stderr
        .count(|l| l.starts_with("graceful-run: ") && l.contains(needle))
}

/// Waits until graceful-run has logged one more line containing `needle` than `before`.
fn wait_line(gr: &Gr, needle: &str, before: usize) {
    poll(gr, &format!("one more line with {needle:?}"), || {
        (lines(gr, needle) > before).then_some(())
    });
}

/// The body of `GET /`.
fn body(target: &Target) -> Option<String> {
    http::get(target, "/").ok().map(|r| r.body)
}

/// Every build started has ended, and every restart a build asked for has ended (taken over
/// or failed).
fn settled(gr: &Gr) -> bool {
    let started = lines(gr, "building (--build)");
    let ended = lines(gr, "--build succeeded") + lines(gr, "--build exited");
    let restarts = lines(gr, "--build succeeded: restarting");
    let restarted = lines(gr, "takes over from gen") + lines(gr, "before it was ready");
    started == ended && restarts == restarted
}

/// The lines graceful-run logged for each burst of changes.
fn changed_lines(gr: &Gr) -> Vec<String> {
    gr.stderr
        .snapshot()
        .into_iter()
        .filter(|l| l.starts_with("graceful-run: ") && l.contains("changed: "))
        .collect()
}

/// The whole scenario of the module doc for `project`.
fn develops(project: Project) {
    let gr = start(&project);
    wait_line(&gr, "ready after", 0);
    let target = Target::Tcp(gr.inet_addr(0));
    let first = poll(&gr, "the server answers", || body(&target));
    assert!(first.starts_with("hello from pid"), "{first:?}");
    let load = Load::start(target.clone(), CLIENTS);
    load.wait_successes(CLIENTS);

    // An edit is built and served.
    let takeovers = lines(&gr, "takes over from gen");
    project.write(project.source, &project.edited("edit 1 from pid"));
    poll(&gr, "the edit is served", || {
        body(&target).filter(|b| b.starts_with("edit 1 from pid"))
    });
    wait_line(&gr, "takes over from gen", takeovers);
    load.wait_successes(CLIENTS);

    // Ignored changes trigger nothing: a .gitignored file, a file in a hidden directory, the
    // build's output directory. A change made after them (notes.txt) is then one burst, and
    // names only itself: inotify reports events in order, so any of the ignored ones that
    // counted would come first or with it.
    let changes = changed_lines(&gr).len();
    project.write("debug.log", "ignored by .gitignore");
    project.write(".cache/state", "in a hidden directory");
    project.write(".hidden-file", "hidden");
    project.write(
        &format!("{}/other", project.output_dir),
        "in the ignored build output",
    );
    let takeovers = lines(&gr, "takes over from gen");
    project.write("notes.txt", "a change");
    wait_line(&gr, "takes over from gen", takeovers);
    let changed = changed_lines(&gr);
    assert_eq!(changed.len(), changes + 1, "{changed:#?}\n{}", gr.output());
    let last = &changed[changes];
    let listed = last.split("changed: ").nth(1).unwrap_or_default();
    assert!(
        listed.ends_with("notes.txt") && !listed.contains(','),
        "{last}\n{}",
        gr.output()
    );

    // A broken build: the old code serves on, and the compiler's complaint is shown.
    let serving = poll(&gr, "the edit is served", || body(&target));
    let failed_builds = lines(&gr, "keeps serving");
    project.write(
        project.source,
        &format!("{}{}", project.edited("edit 1 from pid"), project.broken),
    );
    wait_line(&gr, "keeps serving", failed_builds);
    let output = gr.output();
    assert!(
        output.contains("--build exited with status"),
        "no failed build logged\n{output}"
    );
    assert!(
        output.contains(project.complaint),
        "the build's error ({:?}) is not shown\n{output}",
        project.complaint
    );
    assert_eq!(body(&target).as_deref(), Some(serving.as_str()), "{output}");

    // New code that builds but crashes on start: the old code serves on.
    let failed_starts = lines(&gr, "before it was ready");
    project.write(project.source, &(project.crash)(&project.edited("crash")));
    wait_line(&gr, "before it was ready", failed_starts);
    assert_eq!(
        body(&target).as_deref(),
        Some(serving.as_str()),
        "{}",
        gr.output()
    );
    load.wait_successes(CLIENTS);
    if project.runs_artifact {
        // The build replaced bin/server (a new inode) with the crashing one; the serving
        // generation still runs its own, now unlinked, executable: no copy per generation
        // is needed.
        let pid = serving.trim().rsplit(' ').next().unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the server runs");
        assert!(
            exe.to_string_lossy().ends_with("bin/server (deleted)"),
            "{exe:?}"
        );
    }

    // 20 saves in 200 ms: one build. notes.txt, changed after them, is the next burst: by
    // then any second burst of the saves has been seen (inotify keeps the order). An attempt
    // whose saves, or graceful-run's watcher thread, were held up by the busy machine for
    // near a quiet period rightly gives two bursts; it is made again, up to 4 times.
    let mut attempts = Vec::new();
    for attempt in 1..=4 {
        let builds = project.builds();
        let changes = changed_lines(&gr).len();
        let greeting = format!("edit {} from pid", attempt + 1);
        let mut longest_gap = Duration::ZERO;
        let mut previous = Instant::now();
        for i in 0..20 {
            let comment = if project.source.ends_with(".go") || project.source.ends_with(".js") {
                "//"
            } else {
                "#"
            };
            let text = format!("{}\n{comment} save {i}\n", project.edited(&greeting));
            project.write(project.source, &text);
            longest_gap = longest_gap.max(previous.elapsed());
            previous = Instant::now();
            std::thread::sleep(Duration::from_millis(10));
        }
        poll(&gr, "the saved code is served", || {
            body(&target).filter(|b| b.starts_with(&greeting))
        });
        project.write("notes.txt", &format!("attempt {attempt}"));
        poll(&gr, "the change of notes.txt is seen", || {
            changed_lines(&gr)
                .last()
                .is_some_and(|l| l.ends_with("notes.txt"))
                .then_some(())
        });
        poll(&gr, "every build and restart has ended", || {
            settled(&gr).then_some(())
        });
        let bursts = changed_lines(&gr).len() - changes;
        let built = project.builds() - builds;
        if bursts == 2 && built == 2 && longest_gap < QUIET / 2 {
            attempts.clear();
            break;
        }
        eprintln!(
            "20 saves, attempt {attempt}: longest gap {longest_gap:?}, {bursts} bursts, {built} builds"
        );
        attempts.push((longest_gap, bursts, built));
    }
    assert!(
        attempts.is_empty(),
        "20 saves never gave one build (longest gap, bursts, builds with notes.txt's): \
         {attempts:?}\n{}",
        gr.output()
    );

    let report = load.stop();
    assert_eq!(
        report.failed(),
        0,
        "failed or refused connections during development: {report:?}\n{}",
        gr.output()
    );
    assert!(report.pids.len() >= 3, "{report:?}");
}

#[test]
#[cfg_attr(not(has_go), ignore = "Go not installed: apt-get install golang-go")]
fn go_build_edits_are_served_without_downtime() {
    develops(go_project());
}

#[test]
fn python_edits_are_served_without_downtime() {
    develops(python_project());
}

#[test]
#[cfg_attr(
    not(has_node),
    ignore = "Node.js not installed: apt-get install nodejs"
)]
fn node_edits_are_served_without_downtime() {
    develops(node_project());
}

#[test]
#[cfg_attr(not(has_puma), ignore = "puma not installed: apt-get install puma")]
fn ruby_puma_edits_are_served_without_downtime() {
    develops(ruby_project());
}

// ----- idle cost -------------------------------------------------------------------------------

/// graceful-run's threads (name, voluntary + involuntary context switches) and how many of its
/// fds are inotify instances.
fn threads_and_inotify_fds(pid: i32) -> (Vec<(String, u64)>, usize) {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("procfs")
        .flatten()
    {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        let switches = read("status")
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        threads.push((read("comm").trim().to_string(), switches));
    }
    threads.sort();
    let inotify = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("procfs")
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:inotify")
        })
        .count();
    (threads, inotify)
}

/// An idle graceful-run running `sleep`, with `flags`: its threads and inotify fds, and its
/// threads' context switches over two idle seconds (after it settled).
fn idle(flags: &[&str]) -> (Vec<String>, usize, u64) {
    let marker = crate::support::sleep_marker();
    let _cleanup = crate::support::KillOnDrop(marker.clone());
    let mut args = flags.to_vec();
    args.extend(["--", "sleep", &marker]);
    let mut gr = Gr::start(&args);
    gr.wait_stderr("gen 1 (pid ");
    // Settled: the start is over once its threads' counts stop moving (a bounded wait; a
    // graceful-run that never settles fails below).
    let pid = gr.pid();
    let mut before = threads_and_inotify_fds(pid);
    let end = Instant::now() + crate::support::DEADLINE;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = threads_and_inotify_fds(pid);
        if now == before || Instant::now() > end {
            break;
        }
        before = now;
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = threads_and_inotify_fds(pid);
    let total = |t: &[(String, u64)]| t.iter().map(|(_, n)| n).sum::<u64>();
    let woke = total(&after.0) - total(&before.0);
    gr.signal(nix::libc::SIGTERM);
    gr.wait_exit();
    (
        after.0.into_iter().map(|(name, _)| name).collect(),
        after.1,
        woke,
    )
}

/// Without --watch: no watcher thread, no inotify fd. With it (and --build): one notify
/// thread and one inotify fd, and still no wakeup while nothing changes.
#[test]
fn the_watcher_exists_only_with_watch_and_never_wakes_idle() {
    let (threads, inotify, woke) = idle(&[]);
    assert!(
        !threads.iter().any(|t| t.starts_with("notify")),
        "{threads:?}"
    );
    assert_eq!(inotify, 0, "an inotify fd without --watch");
    assert_eq!(woke, 0, "woke while idle without --watch: {threads:?}");

    let dir = TempDir::new("dev-idle");
    std::fs::create_dir_all(dir.join("src/a")).expect("the temp dir is writable");
    let watched = dir.path().display().to_string();
    let (watching, inotify, woke) = idle(&["--watch", &watched, "--build", "true"]);
    assert_eq!(
        watching.iter().filter(|t| t.starts_with("notify")).count(),
        1,
        "{watching:?}"
    );
    assert_eq!(
        watching.len(),
        threads.len() + 1,
        "{threads:?} {watching:?}"
    );
    assert_eq!(inotify, 1, "inotify fds with --watch");
    assert_eq!(woke, 0, "woke while idle with --watch: {watching:?}");
    println!("idle, 2 s: without --watch {threads:?}; with --watch {watching:?}; no wakeup");
}

// ----- changes during a build --------------------------------------------------------------

/// Lets the build waiting on the fifo `gate` go on (opening it for writing waits for that
/// build to open it for reading).
fn release(gate: &Path) {
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(gate)
        .expect("the gate opens once the build waits on it");
    std::io::Write::write_all(&mut fifo, b"go\n").expect("the build reads the gate");
}

/// Saves while a build runs make exactly one more build, after it, and the old generation
/// serves until the last build's generation is ready. Each build waits on a fifo that the test
/// opens, so the saves surely fall during the first build.
#[test]
fn saves_during_a_build_make_one_more_build() {
    let project = python_project();
    std::fs::write(
        project.dir.join(".gitignore"),
        "__pycache__/\n*.log\ngate\n",
    )
    .expect("the temp dir is writable");
    let gate = project.dir.join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .expect("mkfifo in the temp dir");
    let project = Project {
        build: "echo build >> builds.log; read _ < gate; python3 -m py_compile server.py"
            .to_string(),
        ..project
    };
    let gr = start(&project);
    wait_line(&gr, "ready after", 0);
    let target = Target::Tcp(gr.inet_addr(0));
    let first = poll(&gr, "the server answers", || body(&target));
    let load = Load::start(target.clone(), CLIENTS);
    load.wait_successes(CLIENTS);

    project.write(project.source, &project.edited("edit 1 from pid"));
    poll(&gr, "the first build runs", || {
        (project.builds() == 1).then_some(())
    });
    // Two more bursts of saves during it, each seen before the next.
    for edit in 2..=3 {
        let changes = changed_lines(&gr).len();
        project.write(
            project.source,
            &project.edited(&format!("edit {edit} from pid")),
        );
        poll(&gr, "the save is seen", || {
            (changed_lines(&gr).len() > changes).then_some(())
        });
    }
    assert_eq!(lines(&gr, "building again once the current build ends"), 1);
    release(&gate);
    poll(&gr, "the second build runs", || {
        (project.builds() == 2).then_some(())
    });
    wait_line(&gr, "files changed meanwhile", 0);
    // The first build's success restarted nothing: the old code serves.
    assert_eq!(lines(&gr, "takes over from gen"), 0, "{}", gr.output());
    assert_eq!(body(&target).as_deref(), Some(first.as_str()));
    release(&gate);
    poll(&gr, "the last save is served", || {
        body(&target).filter(|b| b.starts_with("edit 3 from pid"))
    });
    assert_eq!(project.builds(), 2, "{}", gr.output());
    assert_eq!(lines(&gr, "building (--build)"), 2, "{}", gr.output());
    wait_line(&gr, "takes over from gen", 0);
    assert_eq!(lines(&gr, "takes over from gen"), 1, "{}", gr.output());
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:?}\n{}", gr.output());
}

/// A stop while a build runs kills the build (its whole process group), stops the serving
/// generation, and exits 0: nothing is left behind.
#[test]
fn a_stop_during_a_build_kills_it() {
    let project = python_project();
    std::fs::write(
        project.dir.join(".gitignore"),
        "__pycache__/\n*.log\ngate\n",
    )
    .expect("the temp dir is writable");
    let gate = project.dir.join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .expect("mkfifo in the temp dir");
    let marker = crate::support::sleep_marker();
    let _cleanup = crate::support::KillOnDrop(marker.clone());
    let project = Project {
        build: format!("echo build >> builds.log; read _ < gate; : {marker}"),
        ..project
    };
    let mut gr = start(&project);
    wait_line(&gr, "ready after", 0);
    project.write(project.source, &project.edited("edit 1 from pid"));
    poll(&gr, "the build runs", || {
        (project.builds() == 1 && !crate::support::processes_with(&marker).is_empty()).then_some(())
    });
    gr.signal(nix::libc::SIGTERM);
    assert_eq!(
        crate::support::code(gr.wait_exit()),
        Some(0),
        "{}",
        gr.output()
    );
    assert_eq!(
        crate::support::processes_with(&marker),
        Vec::<i32>::new(),
        "the build outlived graceful-run\n{}",
        gr.output()
    );
}
