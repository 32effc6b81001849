//! `--watch PATH`: one event per burst of file changes, for the development mode's rebuild
//! and restart.
//!
//! # Pieces
//!
//! - **`notify`** (its inotify backend) delivers the kernel's file events. It runs one thread
//!   of its own, blocked in `epoll_wait` with no timeout while nothing changes.
//! - **`ignore`** decides what is watched and what counts, with ripgrep's semantics:
//!   `.gitignore` (also outside a git repository), `.ignore`, `.git/info/exclude`, the global
//!   excludes file, in the same precedence as git; hidden files and directories (a name
//!   starting with `.`) are skipped. Its walker picks the directories to watch, so an ignored
//!   `target/` or `node_modules/` costs no inotify watch and wakes nothing when a build
//!   writes into it; its incremental matcher (the same rules, path by path) filters each
//!   event in the directories that are watched.
//! - **Debouncing** is done here, on the tokio side, with a timer armed by the first change:
//!   a burst ends once no change has come for [`QUIET`], or [`MAX_WAIT`] after its first
//!   change (so a tree that never stops changing still gets its rebuild).
//!
//! # Why not notify-debouncer-full or notify-debouncer-mini
//!
//! debouncer-full runs a thread that wakes every tick (a quarter of its timeout) for as long
//! as the watcher lives, whether or not anything changed: 799 context switches in 60 s of
//! idleness, where this module has none (docs/triggers-internals.md). debouncer-mini waits
//! without a timeout when idle, but debounces each path on its own: saves of two files 100 ms
//! apart arrive as two batches, 100 ms apart, so the consumer must debounce again; and it adds
//! a thread and a channel hop. Here, while nothing changes, neither notify's thread nor
//! graceful-run's event loop wakes at all; the timer exists only between the first change of a
//! burst and its delivery, and the pending burst lives where `changed()` can be cancelled
//! without losing it.
//!
//! # Directories
//!
//! Each watched directory is one non-recursive inotify watch (notify's recursive mode would
//! walk into ignored directories, and wake on every file a build writes there). A directory
//! created later is walked and watched when [`Watch::changed`] next runs (its creation is
//! itself a change, so nothing is lost: the rebuild sees its files). A PATH that is a file is
//! watched through its parent directory, and only events on that name count: editors that
//! save by writing a new file and renaming it over the old one replace the inode, and a watch
//! on the old inode would go silent. Explicitly named files are never ignored, even if hidden.
//!
//! Only changes count: creating, writing, renaming, deleting, changing metadata (`touch`).
//! Opening and reading files (the build reading its sources) does not. Edits to `.gitignore`
//! and `.ignore` files reload the rules for later events, and are not changes themselves;
//! they do not add or remove watches until graceful-run restarts.
//!
//! # Threads and signals
//!
//! notify's thread is created with every signal blocked, so process-directed signals are
//! still handled by graceful-run's own thread, as before. Nothing is forked from it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind};
use notify::{RecursiveMode, Watcher};

/// A burst ends once no change has come for this long: saves of several files, an editor's
/// write-then-rename, a `git checkout` all fall within one burst.
pub const QUIET: Duration = Duration::from_millis(300);

/// A burst ends this long after its first change even if changes keep coming.
pub const MAX_WAIT: Duration = Duration::from_secs(3);

/// The most changed paths a [`Change`] lists.
pub const MAX_LISTED: usize = 32;

/// The most directories created during one burst that are remembered one by one; past this,
/// every root is walked again.
const MAX_NEW_DIRS: usize = 1024;

/// One burst of changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// The first [`MAX_LISTED`] distinct paths that changed, in order.
    pub paths: Vec<PathBuf>,
    /// Changes past the list (events, not distinct paths: telling every path apart would
    /// take unbounded memory). A hint for the log line.
    pub more: usize,
    /// The kernel's event queue overflowed: anything may have changed.
    pub overflow: bool,
}

impl std::fmt::Display for Change {
    /// `src/main.go, src/util.go and 3 more`, relative paths as they were given.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<String> = self
            .paths
            .iter()
            .take(3)
            .map(|p| p.display().to_string())
            .collect();
        let more = self.more + self.paths.len().saturating_sub(3);
        if self.overflow {
            write!(f, "too many changes to follow (inotify queue overflow)")?;
            if !shown.is_empty() {
                write!(f, ", among them ")?;
            }
        }
        write!(f, "{}", shown.join(", "))?;
        if more > 0 {
            write!(f, " and {more} more")?;
        }
        Ok(())
    }
}

/// A running watch. Dropping it stops notify's thread and removes every inotify watch.
pub struct Watch {
    watcher: notify::INotifyWatcher,
    shared: Arc<Shared>,
    /// The directory roots, walked again after an overflow.
    dir_roots: Vec<PathBuf>,
    quiet: Duration,
    max_wait: Duration,
}

/// What notify's thread hands to the event loop.
struct Shared {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct Pending {
    change: Change,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Directories created since the last walk, to be watched.
    new_dirs: Vec<PathBuf>,
    /// More than MAX_NEW_DIRS, or an overflow: walk every root again.
    rewalk: bool,
    warnings: Vec<String>,
}

impl Pending {
    fn record(&mut self, path: &Path, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        if self.change.paths.iter().any(|p| p == path) {
            return;
        }
        if self.change.paths.len() < MAX_LISTED {
            self.change.paths.push(path.to_path_buf());
        } else {
            self.change.more += 1;
        }
    }

    fn warn(&mut self, warning: String) {
        // Bounded: a warning repeated by every event is said once.
        if self.warnings.len() < 16 && !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }
}

/// Why a watch could not start.
#[derive(Debug)]
pub struct StartError(String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl Watch {
    /// Starts watching `paths` (absolute, existing files or directories, as config.rs
    /// leaves `--watch`), with the default [`QUIET`] and [`MAX_WAIT`].
    pub fn start(paths: &[PathBuf]) -> Result<Watch, StartError> {
        Watch::start_with(paths, QUIET, MAX_WAIT)
    }

    /// The same with other debounce times.
    pub fn start_with(
        paths: &[PathBuf],
        quiet: Duration,
        max_wait: Duration,
    ) -> Result<Watch, StartError> {
        let mut dir_roots = Vec::new();
        let mut file_roots = Vec::new();
        for path in paths {
            match std::fs::metadata(path) {
                Ok(meta) if meta.is_dir() => dir_roots.push(path.clone()),
                Ok(_) => file_roots.push(path.clone()),
                Err(e) => return Err(StartError(format!("--watch '{}': {e}", path.display()))),
            }
        }
        let mut walker = ignore::WalkBuilder::new(dir_roots.first().map_or(Path::new("/"), |p| p));
        for root in dir_roots.iter().skip(1) {
            walker.add(root);
        }
        walker
            .standard_filters(true)
            .require_git(false)
            .follow_links(false);

        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: tokio::sync::Notify::new(),
        });
        // Without directory roots there are no rules to apply: only the named files count.
        let walker = (!dir_roots.is_empty()).then_some(walker);
        let filter = Filter {
            matchers: walker
                .as_ref()
                .map_or_else(Vec::new, ignore::WalkBuilder::build_matchers),
            walker,
            file_roots: file_roots.clone(),
        };
        let handler_shared = Arc::clone(&shared);
        let mut filter = filter;
        let handler = move |event: notify::Result<notify::Event>| {
            filter.handle(event, &handler_shared);
        };
        let mut watcher = with_signals_blocked(|| {
            notify::INotifyWatcher::new(handler, notify::Config::default())
        })
        .map_err(|e| StartError(format!("--watch: cannot start watching: {e}")))?;

        for file in &file_roots {
            let parent = file.parent().unwrap_or(Path::new("/"));
            watch_dir(&mut watcher, parent)
                .map_err(|e| StartError(format!("--watch '{}': {e}", file.display())))?;
        }
        let mut watch = Watch {
            watcher,
            shared,
            dir_roots,
            quiet,
            max_wait,
        };
        if !watch.dir_roots.is_empty() {
            let roots = watch.dir_roots.clone();
            for root in &roots {
                watch
                    .walk_and_watch(root, true)
                    .map_err(|e| StartError(format!("--watch '{}': {e}", root.display())))?;
            }
        }
        Ok(watch)
    }

    /// Waits for the next burst of changes and returns it once it has ended (see [`QUIET`]).
    ///
    /// Cancel-safe: dropped before it returns (another branch of a `select!` won), it loses
    /// nothing; changes keep accumulating until the next call. While nothing changes it
    /// waits on a `tokio::sync::Notify`, with no timer.
    pub async fn changed(&mut self) -> Change {
        loop {
            let (new_dirs, rewalk, due) = {
                let mut pending = self
                    .shared
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let due = match (pending.first, pending.last) {
                    (Some(first), Some(last)) => {
                        Some((last + self.quiet).min(first + self.max_wait))
                    }
                    _ => None,
                };
                (
                    std::mem::take(&mut pending.new_dirs),
                    std::mem::take(&mut pending.rewalk),
                    due,
                )
            };
            if rewalk {
                for root in self.dir_roots.clone() {
                    if let Err(e) = self.walk_and_watch(&root, false) {
                        self.warn(format!("--watch '{}': {e}", root.display()));
                    }
                }
            } else {
                for dir in new_dirs {
                    if let Err(e) = self.walk_and_watch(&dir, false) {
                        self.warn(format!("--watch: cannot watch '{}': {e}", dir.display()));
                    }
                }
            }
            match due {
                None => self.shared.wake.notified().await,
                Some(due) if due <= Instant::now() => {
                    let mut pending = self
                        .shared
                        .pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    // A change that came in since `due` was computed moves it: look again.
                    if pending
                        .last
                        .is_some_and(|last| last + self.quiet > Instant::now())
                        && pending
                            .first
                            .is_some_and(|first| first + self.max_wait > Instant::now())
                    {
                        continue;
                    }
                    pending.first = None;
                    pending.last = None;
                    return std::mem::take(&mut pending.change);
                }
                Some(due) => {
                    let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(due));
                    tokio::select! {
                        () = sleep => {}
                        () = self.shared.wake.notified() => {}
                    }
                }
            }
        }
    }

    /// Problems met since the last call (a directory that could not be watched, the inotify
    /// watch limit, an unreadable ignore file), one line each, to be logged as warnings.
    pub fn take_warnings(&mut self) -> Vec<String> {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut pending.warnings)
    }

    fn warn(&self, warning: String) {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pending.warn(warning);
    }

    /// Watches `dir` and every directory below it that the rules let through. At start
    /// (`strict`), the first directory that cannot be watched is an error; later, a warning.
    fn walk_and_watch(&mut self, dir: &Path, strict: bool) -> Result<(), String> {
        // The same rules as at start (parents' ignore files included), from `dir`.
        let mut walk = ignore::WalkBuilder::new(dir);
        walk.standard_filters(true)
            .require_git(false)
            .follow_links(false);
        for entry in walk.build() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e)
                    if strict
                        && e.io_error()
                            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
                {
                    return Err(e.to_string());
                }
                Err(e) => {
                    self.warn(format!("--watch: {e}"));
                    continue;
                }
            };
            if !entry.file_type().is_some_and(|t| t.is_dir()) {
                continue;
            }
            if let Err(e) = watch_dir(&mut self.watcher, entry.path()) {
                if strict {
                    return Err(e);
                }
                self.warn(format!(
                    "--watch: cannot watch '{}': {e}",
                    entry.path().display()
                ));
            }
        }
        Ok(())
    }
}

/// One non-recursive watch, with the inotify limit explained.
fn watch_dir(watcher: &mut notify::INotifyWatcher, dir: &Path) -> Result<(), String> {
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| match e.kind {
            notify::ErrorKind::MaxFilesWatch => format!(
                "{}: the inotify watch limit is reached (sysctl fs.inotify.max_user_watches); \
                 add the largest directories to .gitignore",
                dir.display()
            ),
            _ => format!("{}: {e}", dir.display()),
        })
}

/// Runs `f` with every signal blocked in the calling thread, so that a thread it creates
/// starts with every signal blocked, and restores the mask. Signals that arrive meanwhile
/// stay pending and are delivered once the mask is restored.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    let mut previous = SigSet::empty();
    let blocked = pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut previous),
    )
    .is_ok();
    let result = f();
    if blocked {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    }
    result
}

/// The rules, on notify's thread: which events are changes.
struct Filter {
    /// Rebuilds `matchers` when an ignore file changes; None without directory roots.
    walker: Option<ignore::WalkBuilder>,
    /// One per directory root, in the walker's order.
    matchers: Vec<ignore::IncrementalIgnore>,
    file_roots: Vec<PathBuf>,
}

impl Filter {
    fn handle(&mut self, event: notify::Result<notify::Event>, shared: &Shared) {
        let now = Instant::now();
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
                pending.warn(format!("--watch: {e}"));
                return;
            }
        };
        if event.need_rescan() {
            let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.change.overflow = true;
            pending.rewalk = true;
            pending.first.get_or_insert(now);
            pending.last = Some(now);
            drop(pending);
            shared.wake.notify_one();
            return;
        }
        let is_change = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) | EventKind::Other | EventKind::Any => false,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        };
        if !is_change {
            return;
        }
        let mut changed = false;
        for path in &event.paths {
            let name = path.file_name().and_then(|n| n.to_str());
            if matches!(name, Some(".gitignore" | ".ignore")) {
                // New rules for later events (IncrementalIgnore caches what it loaded).
                if let Some(walker) = &self.walker {
                    self.matchers = walker.build_matchers();
                }
                continue;
            }
            let is_dir = match event.kind {
                EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder) => {
                    true
                }
                EventKind::Create(CreateKind::File) | EventKind::Remove(RemoveKind::File) => false,
                _ => std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()),
            };
            if !self.counts(path, is_dir) {
                continue;
            }
            let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.record(path, now);
            let appeared = matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
            );
            if is_dir && appeared {
                if pending.new_dirs.len() < MAX_NEW_DIRS {
                    pending.new_dirs.push(path.clone());
                } else {
                    pending.rewalk = true;
                }
            }
            changed = true;
        }
        if changed {
            shared.wake.notify_one();
        }
    }

    /// Whether a change of `path` counts: a named file itself, or a path under a directory
    /// root that the rules do not ignore.
    fn counts(&mut self, path: &Path, is_dir: bool) -> bool {
        if self.file_roots.iter().any(|f| f == path) {
            return true;
        }
        self.matchers.iter_mut().any(|matcher| {
            let Ok(relative) = path.strip_prefix(matcher.root()) else {
                return false;
            };
            let relative = relative.to_path_buf();
            !matcher.matched(&relative, is_dir).is_ignore()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    /// Long enough that a burst is always delivered, on a loaded machine too.
    const DELIVERY: Duration = Duration::from_secs(30);
    /// How long the tests wait to see that no (second) change comes: three quiet periods,
    /// by which a change recorded before the wait began would have been delivered.
    const NOTHING_MORE: Duration = Duration::from_millis(3 * 300);

    /// A directory under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let dir = std::env::temp_dir().join(format!("gr-watch-{}", crate::random::token()));
            std::fs::create_dir(&dir).expect("the temp dir is writable");
            TempDir(dir)
        }

        fn join(&self, path: &str) -> PathBuf {
            self.0.join(path)
        }

        fn write(&self, path: &str, text: &str) {
            std::fs::write(self.join(path), text).expect("the temp dir is writable");
        }

        fn mkdir(&self, path: &str) {
            std::fs::create_dir_all(self.join(path)).expect("the temp dir is writable");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn next(watch: &mut Watch) -> Change {
        timeout(DELIVERY, watch.changed())
            .await
            .expect("a change is delivered")
    }

    async fn assert_nothing_more(watch: &mut Watch) {
        if let Ok(change) = timeout(NOTHING_MORE, watch.changed()).await {
            panic!("an unexpected change: {change:?}");
        }
    }

    /// Twenty saves within 200 ms are one change. An attempt whose saves were held up for
    /// half a quiet period (a loaded machine) proves nothing and is made again.
    #[tokio::test]
    async fn twenty_saves_in_200ms_are_one_change() {
        let dir = TempDir::new();
        dir.write("main.go", "package main");
        let mut watch = Watch::start(std::slice::from_ref(&dir.0)).expect("the watch starts");
        for attempt in 1..=5 {
            let mut longest_gap = Duration::ZERO;
            let started = Instant::now();
            let mut previous = started;
            for i in 0..20 {
                dir.write("main.go", &format!("package main // {i}"));
                longest_gap = longest_gap.max(previous.elapsed());
                previous = Instant::now();
                std::thread::sleep(Duration::from_millis(10));
            }
            let took = started.elapsed();
            let change = next(&mut watch).await;
            if longest_gap >= QUIET / 2 || took > MAX_WAIT / 2 {
                // Held up: let any second burst arrive, then try again.
                let _ = timeout(NOTHING_MORE, watch.changed()).await;
                assert!(attempt < 5, "every attempt was held up ({longest_gap:?})");
                continue;
            }
            assert_eq!(change.paths, vec![dir.join("main.go")], "{change:?}");
            assert_nothing_more(&mut watch).await;
            return;
        }
    }

    /// Changes in ignored paths (.gitignore patterns, hidden files and directories, a
    /// directory ignored when it is created) are not changes; the one real change, made
    /// after all of them, arrives alone.
    #[tokio::test]
    async fn ignored_and_hidden_paths_are_not_changes() {
        let dir = TempDir::new();
        dir.write(".gitignore", "*.log\ntarget/\nbuild/\n");
        for sub in ["src", "target/debug", ".git", ".cache"] {
            dir.mkdir(sub);
        }
        dir.write("src/main.go", "package main");
        let mut watch = Watch::start(std::slice::from_ref(&dir.0)).expect("the watch starts");
        dir.write("app.log", "log");
        dir.write("src/debug.log", "log");
        dir.write("target/debug/app", "binary");
        dir.write(".git/index", "index");
        dir.write(".cache/x", "cache");
        dir.write(".hidden.swp", "swap");
        dir.write("src/.main.go.swp", "swap");
        dir.mkdir("build");
        dir.write("build/out", "output");
        dir.write("src/main.go", "package main // edited");
        let change = next(&mut watch).await;
        assert_eq!(change.paths, vec![dir.join("src/main.go")], "{change:?}");
        // The ignored build/ got no watch: writing in it now is still nothing.
        dir.write("build/more", "output");
        assert_nothing_more(&mut watch).await;
    }

    /// A directory created after the start is a change, and is watched from then on, with
    /// the directories created inside it.
    #[tokio::test]
    async fn new_directories_are_watched() {
        let dir = TempDir::new();
        let mut watch = Watch::start(std::slice::from_ref(&dir.0)).expect("the watch starts");
        dir.mkdir("pkg/deep");
        let change = next(&mut watch).await;
        assert_eq!(change.paths, vec![dir.join("pkg")], "{change:?}");
        dir.write("pkg/a.go", "package pkg");
        let change = next(&mut watch).await;
        assert_eq!(change.paths, vec![dir.join("pkg/a.go")], "{change:?}");
        dir.write("pkg/deep/b.go", "package deep");
        let change = next(&mut watch).await;
        assert_eq!(change.paths, vec![dir.join("pkg/deep/b.go")], "{change:?}");
    }

    /// A watched file keeps being watched across saves that replace it (write a new file,
    /// rename it over the old one), and its neighbours do not count.
    #[tokio::test]
    async fn a_watched_file_survives_saves_by_rename() {
        let dir = TempDir::new();
        dir.write("main.go", "v0");
        dir.write("other.go", "v0");
        let mut watch = Watch::start(&[dir.join("main.go")]).expect("the watch starts");
        for version in ["v1", "v2"] {
            dir.write(".gitignore", "*.tmp\n");
            dir.write("other.go", version);
            dir.write(".main.go.tmp", version);
            std::fs::rename(dir.join(".main.go.tmp"), dir.join("main.go")).expect("rename");
            let change = next(&mut watch).await;
            assert_eq!(
                change.paths,
                vec![dir.join("main.go")],
                "{version}: {change:?}"
            );
        }
    }

    /// Opening and reading files (a build reading its sources) is not a change.
    #[tokio::test]
    async fn reads_are_not_changes() {
        let dir = TempDir::new();
        dir.write("main.go", "package main");
        let mut watch = Watch::start(std::slice::from_ref(&dir.0)).expect("the watch starts");
        for _ in 0..10 {
            std::fs::read(dir.join("main.go")).expect("readable");
            std::fs::read_dir(&dir.0).expect("listable").for_each(drop);
        }
        dir.write("b.go", "package main");
        let change = next(&mut watch).await;
        assert_eq!(change.paths, vec![dir.join("b.go")], "{change:?}");
    }

    /// Nested .gitignore files and negations follow git's rules; an edit of a .gitignore
    /// applies to the changes after it, and is not a change itself.
    #[tokio::test]
    async fn gitignore_rules_nest_and_reload() {
        let dir = TempDir::new();
        dir.mkdir("sub");
        dir.write("sub/.gitignore", "*.gen\n!keep.gen\n");
        let mut watch = Watch::start(std::slice::from_ref(&dir.0)).expect("the watch starts");
        dir.write("sub/x.gen", "generated");
        dir.write("sub/keep.gen", "kept");
        let change = next(&mut watch).await;
        assert_eq!(change.paths, vec![dir.join("sub/keep.gen")], "{change:?}");

        dir.write(".gitignore", "*.tmp\n");
        dir.write("a.tmp", "temporary");
        dir.write("c.go", "package main");
        let change = next(&mut watch).await;
        assert_eq!(change.paths, vec![dir.join("c.go")], "{change:?}");
    }

    /// Dropped before it returns (a select! whose other branch wins each time),
    /// `changed()` loses nothing.
    #[tokio::test]
    async fn changed_is_cancel_safe() {
        let dir = TempDir::new();
        let mut watch = Watch::start(std::slice::from_ref(&dir.0)).expect("the watch starts");
        dir.write("a.go", "package main");
        let deadline = Instant::now() + DELIVERY;
        let change = loop {
            assert!(Instant::now() < deadline, "no change delivered");
            tokio::select! {
                change = watch.changed() => break change,
                () = tokio::time::sleep(Duration::from_millis(7)) => {}
            }
        };
        assert_eq!(change.paths, vec![dir.join("a.go")], "{change:?}");
    }

    #[tokio::test]
    async fn a_missing_path_is_refused() {
        let dir = TempDir::new();
        let Err(e) = Watch::start(&[dir.join("missing")]) else {
            panic!("a missing path was watched")
        };
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn changes_read_as_one_line() {
        let change = Change {
            paths: ["a.go", "b.go", "c.go", "d.go"].map(PathBuf::from).to_vec(),
            more: 2,
            overflow: false,
        };
        assert_eq!(change.to_string(), "a.go, b.go, c.go and 3 more");
        let overflow = Change {
            paths: Vec::new(),
            more: 0,
            overflow: true,
        };
        assert_eq!(
            overflow.to_string(),
            "too many changes to follow (inotify queue overflow)"
        );
    }

    /// Context switches of each thread of this process, by thread name.
    fn switches() -> Vec<(String, u64)> {
        let mut all = Vec::new();
        for task in std::fs::read_dir("/proc/thread-self/..")
            .expect("procfs")
            .flatten()
        {
            let read =
                |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
            let count: u64 = read("status")
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            all.push((read("comm").trim().to_string(), count));
        }
        all
    }

    /// Set in the process that [`an_idle_watch_never_wakes`] starts to measure alone.
    const IDLE_CHILD: &str = "GR_WATCH_IDLE_CHILD";

    /// While nothing changes, notify's thread does not run at all, and the event loop
    /// waiting in `changed()` wakes only for the test's own timeout. Measured in a process
    /// of its own, where no other test's watch runs.
    #[tokio::test]
    async fn an_idle_watch_never_wakes() {
        if std::env::var_os(IDLE_CHILD).is_none() {
            let exe = std::env::current_exe().expect("the test binary has a path");
            let output = std::process::Command::new(exe)
                .args([
                    "--exact",
                    "watch::tests::an_idle_watch_never_wakes",
                    "--test-threads",
                    "1",
                    "--nocapture",
                ])
                .env(IDLE_CHILD, "1")
                .output()
                .expect("the test binary runs");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && stdout.contains("1 passed"),
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            return;
        }
        let dir = TempDir::new();
        dir.mkdir("src/a/b");
        let mut watch = Watch::start(std::slice::from_ref(&dir.0)).expect("the watch starts");
        // Let the start settle, then count over two seconds of nothing.
        let _ = timeout(Duration::from_millis(200), watch.changed()).await;
        let before = switches();
        let idle = timeout(Duration::from_secs(2), watch.changed()).await;
        let after = switches();
        assert!(idle.is_err(), "a change while idle: {idle:?}");
        let notify_thread = |all: &[(String, u64)]| {
            all.iter()
                .find(|(name, _)| name.starts_with("notify-rs"))
                .map(|(_, count)| *count)
                .expect("notify's thread exists")
        };
        assert_eq!(
            notify_thread(&before),
            notify_thread(&after),
            "{before:?} {after:?}"
        );
        let total = |all: &[(String, u64)]| all.iter().map(|(_, c)| c).sum::<u64>();
        // The test's own 2 s timeout wakes its thread once or twice; a ticking debouncer
        // would wake several times a second.
        assert!(total(&after) - total(&before) <= 4, "{before:?}\n{after:?}");
        println!("idle: {before:?} -> {after:?}");
    }
}
