//! The memory of a generation or a worker (`--max-memory`): the proportional set size (PSS)
//! of each of its processes, from `/proc/PID/smaps_rollup`, summed.
//!
//! # Why PSS, not RSS
//!
//! RSS counts every resident page a process maps, including the pages it shares. Pre-fork
//! servers share most of their memory: gunicorn's workers with the master, Node cluster
//! workers with nothing but libraries, puma's and unicorn's with the master after
//! `preload_app`. Summed over a group, RSS counts each shared page once per process, so a
//! limit would see a group's memory grow with its number of workers even when nothing grew.
//! PSS divides each page by the number of processes that map it: summed over every process that
//! shares a page, it counts that page once. Measured here (Linux 6.18; docs/triggers-internals.md
//! and `tests` below): a python3 that wrote 40 MiB and forked 3 children that sleep sums to
//! 202 MiB of RSS and 50 MiB of PSS; `gunicorn -w 4 --preload` to 268 MiB of RSS and 64 MiB
//! of PSS, `-w 7` to 424 and 71 MiB. A leak, which is private memory, counts in full in both.
//!
//! Pages shared with processes outside the group (libc, with every process on the machine)
//! count for their share only, which is right for a limit: they cost the group little.
//! Swapped-out pages are not counted (`SwapPss` is not added): the limit is on resident
//! memory, as a cgroup's `memory.max` is.
//!
//! # Cost
//!
//! smaps_rollup walks the page tables of the process, under its mmap lock for reading: its
//! cost grows with the resident memory: about 0.2 ms for a 50 MiB process, 1.5-2.4 ms for the 8
//! processes of `gunicorn -w 7` (docs/triggers-internals.md). Sample at most once a second,
//! and only with the flag.
//!
//! # What cannot be read
//!
//! smaps_rollup needs ptrace read access: root without CAP_SYS_PTRACE, CAP_SYS_ADMIN and
//! CAP_PERFMON (Docker's default set has none of them) cannot read it for a process of another
//! uid (`--user`) or a non-dumpable one (set-uid programs,
//! `prctl(PR_SET_DUMPABLE, 0)`), nor can an unprivileged graceful-run for non-dumpable
//! children. For those the sample falls back to RSS from `/proc/PID/statm`, which anyone may
//! read, and says so ([`Sample::rss_only`]); a process whose /proc entry cannot be read at all
//! (`hidepid=`) is listed in [`Sample::unreadable`]. Neither is an error: the sum is what could
//! be read. A process that exits while it is being sampled is simply not counted.
//!
//! Only meaningful when /proc belongs to graceful-run's pid namespace
//! (`process::proc_is_ours`); otherwise its pids are strangers'.

use std::fmt;
use std::io::Read;

use nix::errno::Errno;

/// The processes a sample covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Members {
    /// Every process whose process group is this one (what SIGKILL to the group reaches),
    /// found by scanning /proc: the cost grows with the number of processes on the machine.
    Group(i32),
    /// This process and its descendants, through `/proc/PID/task/TID/children`: the cost grows
    /// with the tree's processes and threads only. Misses orphans (re-parented to graceful-run
    /// or init) that the group still holds.
    Tree(i32),
}

/// One measurement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Bytes: PSS of each process whose smaps_rollup was readable, RSS of those in
    /// `rss_only`.
    pub bytes: u64,
    /// The processes counted in `bytes` (zombies and processes that exited are not).
    pub processes: usize,
    /// Counted by RSS, because their smaps_rollup could not be read (see the module doc).
    pub rss_only: Vec<i32>,
    /// Not counted at all: pid and why.
    pub unreadable: Vec<(i32, Errno)>,
}

impl fmt::Display for Sample {
    /// `48.9 MiB in 5 processes`, then what was not measured by PSS.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1} MiB in {} process{}",
            self.bytes as f64 / f64::from(1 << 20),
            self.processes,
            if self.processes == 1 { "" } else { "es" }
        )?;
        if !self.rss_only.is_empty() {
            write!(
                f,
                "; RSS, not PSS, for pid {} (smaps_rollup not readable)",
                join(self.rss_only.iter())
            )?;
        }
        if !self.unreadable.is_empty() {
            let each = self
                .unreadable
                .iter()
                .map(|(pid, errno)| format!("{pid} ({})", errno.desc()));
            write!(f, "; not counted: pid {}", join(each))?;
        }
        Ok(())
    }
}

fn join(items: impl Iterator<Item = impl fmt::Display>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// Measures `members` now.
pub fn sample(members: Members) -> Sample {
    measure(&pids_of(members))
}

/// The pids of `members`, in no particular order.
pub fn pids_of(members: Members) -> Vec<i32> {
    match members {
        Members::Group(pgid) => group(pgid),
        Members::Tree(root) => tree(root),
    }
}

/// The sum over `pids` (see [`Sample`]).
pub fn measure(pids: &[i32]) -> Sample {
    let mut sample = Sample::default();
    let mut buffer = Vec::with_capacity(2048);
    for &pid in pids {
        match pss(pid, &mut buffer) {
            Ok(Some(bytes)) => {
                sample.bytes += bytes;
                sample.processes += 1;
            }
            // A zombie: no memory left.
            Ok(None) => {}
            Err(Errno::ENOENT | Errno::ESRCH) => {}
            Err(_) => match rss(pid, &mut buffer) {
                Ok(Some(bytes)) => {
                    sample.bytes += bytes;
                    sample.processes += 1;
                    sample.rss_only.push(pid);
                }
                Ok(None) | Err(Errno::ENOENT | Errno::ESRCH) => {}
                Err(errno) => sample.unreadable.push((pid, errno)),
            },
        }
    }
    sample
}

/// Reads a /proc file whole into `buffer` (cleared first).
fn read_proc(path: &str, buffer: &mut Vec<u8>) -> Result<(), Errno> {
    let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO));
    buffer.clear();
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_end(buffer))
        .map(drop)
        .map_err(errno)
}

/// The `Pss:` line of smaps_rollup, in bytes; None for a process without memory (a zombie's
/// file is empty).
fn pss(pid: i32, buffer: &mut Vec<u8>) -> Result<Option<u64>, Errno> {
    read_proc(&format!("/proc/{pid}/smaps_rollup"), buffer)?;
    let text = String::from_utf8_lossy(buffer);
    Ok(text.lines().find_map(|line| {
        let kib = line.strip_prefix("Pss:")?.trim().strip_suffix("kB")?;
        kib.trim().parse::<u64>().ok().map(|kib| kib * 1024)
    }))
}

/// The resident pages of `/proc/PID/statm` (its second field), in bytes; None for a zombie.
fn rss(pid: i32, buffer: &mut Vec<u8>) -> Result<Option<u64>, Errno> {
    read_proc(&format!("/proc/{pid}/statm"), buffer)?;
    let text = String::from_utf8_lossy(buffer);
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or(Errno::EIO)?;
    Ok((pages > 0).then(|| pages * page_size()))
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u64::try_from(size).ok())
        .unwrap_or(4096)
}

/// Every pid whose process group is `pgid`, from /proc/PID/stat.
fn group(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut buffer = Vec::with_capacity(512);
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            read_proc(&format!("/proc/{pid}/stat"), &mut buffer).is_ok()
                && group_of_stat(&buffer) == Some(pgid)
        })
        .collect()
}

/// The process group in a /proc/PID/stat line: `pid (comm) state ppid pgrp ...`, where comm
/// may hold spaces and parentheses, so the fields are counted after the last `)`.
fn group_of_stat(stat: &[u8]) -> Option<i32> {
    let after_comm = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    std::str::from_utf8(after_comm)
        .ok()?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// `root` and its descendants, from the children files of every thread. Bounded: a pid is
/// visited once, so a pid reused during the walk cannot make it loop.
fn tree(root: i32) -> Vec<i32> {
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let pid = found[next];
        next += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                if !found.contains(&child) {
                    found.push(child);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};

    const MIB: u64 = 1 << 20;

    /// A python3 process in a process group of its own that writes `mib` MiB, forks
    /// `children` that keep it shared and sleep, and prints `ready` once all of them exist.
    /// Killed with its group when dropped.
    struct Forked {
        child: Child,
        pgid: i32,
    }

    impl Forked {
        fn start(mib: u64, children: u32) -> Forked {
            Forked::start_with(mib, children, "")
        }

        /// The same, running the Python statement `prelude` first.
        fn start_with(mib: u64, children: u32, prelude: &str) -> Forked {
            let script = format!(
                "import os, sys, time\n\
                 {prelude}\n\
                 data = b'x' * ({mib} << 20)\n\
                 kids = []\n\
                 for _ in range({children}):\n\
                 \x20   pid = os.fork()\n\
                 \x20   if pid == 0:\n\
                 \x20       time.sleep(600)\n\
                 \x20       os._exit(0)\n\
                 \x20   kids.append(pid)\n\
                 print('ready', flush=True)\n\
                 time.sleep(600)\n"
            );
            let mut command = Command::new("python3");
            command.args(["-c", &script]);
            Forked::run(command)
        }

        /// Runs `command`, which prints `ready` when it is.
        fn run(mut command: Command) -> Forked {
            let mut child = command
                .stdout(Stdio::piped())
                .process_group(0)
                .spawn()
                .expect("the test's command runs");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("piped"))
                .read_line(&mut line)
                .expect("the command prints");
            assert_eq!(line.trim(), "ready");
            let pgid = child.id() as i32;
            Forked { child, pgid }
        }
    }

    impl Drop for Forked {
        fn drop(&mut self) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = self.child.wait();
        }
    }

    /// The group's RSS summed, as a limit that counted RSS would see it.
    fn rss_sum(pids: &[i32]) -> u64 {
        let mut buffer = Vec::new();
        pids.iter()
            .filter_map(|&pid| rss(pid, &mut buffer).ok().flatten())
            .sum()
    }

    /// The reason for PSS: pages a parent shares with forked children count once in the
    /// PSS sum, and once per process in the RSS sum.
    #[test]
    fn shared_pages_count_once() {
        let forked = Forked::start(40, 3);
        let pids = pids_of(Members::Group(forked.pgid));
        assert_eq!(pids.len(), 4, "{pids:?}");
        let sample = sample(Members::Group(forked.pgid));
        assert_eq!(sample.processes, 4, "{sample}");
        assert!(
            sample.rss_only.is_empty() && sample.unreadable.is_empty(),
            "{sample}"
        );
        let rss = rss_sum(&pids);
        assert!(
            sample.bytes >= 40 * MIB && sample.bytes < 60 * MIB,
            "PSS sum {sample}"
        );
        assert!(rss >= 160 * MIB, "RSS sum {} MiB", rss / MIB);
    }

    /// The tree and the group of a server that did not move its children are the same
    /// processes.
    #[test]
    fn tree_and_group_agree() {
        let forked = Forked::start(1, 2);
        let mut group = pids_of(Members::Group(forked.pgid));
        let mut tree = pids_of(Members::Tree(forked.pgid));
        group.sort_unstable();
        tree.sort_unstable();
        assert_eq!(group, tree);
        assert_eq!(group.len(), 3);
    }

    /// Private memory counts in full: a process that writes 64 MiB more is 64 MiB bigger.
    #[test]
    fn private_memory_counts_in_full() {
        let small = Forked::start(1, 0);
        let big = Forked::start(65, 0);
        let small = sample(Members::Group(small.pgid)).bytes;
        let big = sample(Members::Group(big.pgid)).bytes;
        let grown = big.saturating_sub(small);
        assert!(
            (60 * MIB..70 * MIB).contains(&grown),
            "grew by {} KiB",
            grown / 1024
        );
    }

    #[test]
    fn nothing_is_an_empty_sample() {
        // No process is in the group of a pid that does not exist.
        let sample = sample(Members::Group(i32::MAX));
        assert_eq!(sample, Sample::default());
        assert_eq!(measure(&[i32::MAX]), Sample::default());
    }

    #[test]
    fn stat_lines_with_odd_names_parse() {
        assert_eq!(group_of_stat(b"42 (a) b) c) S 1 77 77 0"), Some(77));
        assert_eq!(group_of_stat(b"42 (x"), None);
    }

    /// The calling thread without CAP_SYS_PTRACE, CAP_SYS_ADMIN and CAP_PERFMON in its effective
    /// set until dropped, as root in a Docker container is (each of the three grants ptrace
    /// read access). Capabilities are per thread: the test's other threads keep theirs.
    struct WithoutPtrace {
        data: [CapData; 2],
    }

    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }

    const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_SYS_PTRACE: u32 = 19;
    const CAP_SYS_ADMIN: u32 = 21;
    /// Bit 38: bit 6 of the second word.
    const CAP_PERFMON: u32 = 38;

    impl WithoutPtrace {
        fn new() -> WithoutPtrace {
            let mut header = CapHeader {
                version: CAPABILITY_VERSION_3,
                pid: 0,
            };
            let mut data = [CapData::default(); 2];
            // SAFETY: capget with a v3 header writes two CapData structs, which `data` holds.
            let got = unsafe {
                nix::libc::syscall(nix::libc::SYS_capget, &mut header, data.as_mut_ptr())
            };
            assert_eq!(got, 0, "capget: {}", Errno::last());
            let mut reduced = data;
            reduced[0].effective &= !(1 << CAP_SYS_PTRACE | 1 << CAP_SYS_ADMIN);
            reduced[1].effective &= !(1 << (CAP_PERFMON - 32));
            // SAFETY: capset reads the header and two CapData structs; pid 0 is this thread.
            let set =
                unsafe { nix::libc::syscall(nix::libc::SYS_capset, &mut header, reduced.as_ptr()) };
            assert_eq!(set, 0, "capset: {}", Errno::last());
            WithoutPtrace { data }
        }
    }

    impl Drop for WithoutPtrace {
        fn drop(&mut self) {
            let mut header = CapHeader {
                version: CAPABILITY_VERSION_3,
                pid: 0,
            };
            // SAFETY: as in new(); the permitted set still holds what is restored.
            unsafe { nix::libc::syscall(nix::libc::SYS_capset, &mut header, self.data.as_ptr()) };
        }
    }

    /// A process of another user (`--user`), and a non-dumpable one, cannot be read by PSS
    /// without CAP_SYS_PTRACE: they are counted by RSS and named, and the sample goes on.
    #[test]
    fn unreadable_processes_fall_back_to_rss() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test runs processes as nobody and must run as root (as CI does)"
        );
        // Not python3: it may live where nobody cannot reach (pyenv under /root).
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "sh",
            "-c",
            "echo ready; exec sleep 600",
        ]);
        let other_user = Forked::run(command);
        let readable = sample(Members::Group(other_user.pgid));
        assert!(readable.rss_only.is_empty(), "{readable}");
        let without_ptrace = WithoutPtrace::new();
        let denied = sample(Members::Group(other_user.pgid));
        drop(without_ptrace);
        assert_eq!(denied.rss_only, vec![other_user.pgid], "{denied}");
        assert_eq!(denied.processes, 1);
        assert!(denied.bytes > 0, "{denied}");
        assert!(denied.to_string().contains("RSS, not PSS"), "{denied}");

        let non_dumpable = Forked::start_with(
            8,
            1,
            // PR_SET_DUMPABLE is 4; a child inherits the flag across fork.
            "import ctypes; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)",
        );
        let without_ptrace = WithoutPtrace::new();
        let mut denied = sample(Members::Group(non_dumpable.pgid));
        drop(without_ptrace);
        denied.rss_only.sort_unstable();
        let mut pids = pids_of(Members::Group(non_dumpable.pgid));
        pids.sort_unstable();
        assert_eq!(denied.rss_only, pids, "{denied}");
        assert_eq!(denied.processes, 2, "{denied}");
    }
}
