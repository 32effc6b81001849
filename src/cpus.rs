//! How many CPUs graceful-run may use, for `--workers auto`: not the host's count, which a
//! container or a pinned service does not get, but the smaller of
//!
//! - its **affinity mask** (`sched_getaffinity`): what `taskset`, systemd's CPUAffinity= and
//!   a cpuset cgroup (`docker run --cpuset-cpus`) leave it, and
//! - its cgroup's **CPU quota**, rounded up: cgroup v2 `cpu.max` (`150000 100000` is 1.5 CPUs,
//!   so 2 workers), or cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, as `docker run
//!   --cpus` and Kubernetes' CPU limits set them. Every cgroup from graceful-run's own up to
//!   the root of the mount counts: a parent's quota limits its children too.
//!
//! and at least 1. Rounding up: with 1.5 CPUs of quota, one worker would leave half a CPU
//! unused, and two share the quota as threads of one process would. (Rust's
//! `std::thread::available_parallelism` reads the same sources but rounds down and does not
//! say which one decided, which the log line should.)
//!
//! The cgroup files are found through `/proc/self/cgroup` and `/proc/self/mountinfo`, not at a
//! fixed `/sys/fs/cgroup`: hybrid hosts mount v2 at `/sys/fs/cgroup/unified` and v1's `cpu`
//! controller elsewhere, and in a container without a cgroup namespace the own cgroup path is
//! the host's, mapped through the mount's root. Read once, at start, and only for `auto`.

use std::fmt;
use std::path::{Path, PathBuf};

/// What `--workers auto` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpus {
    /// The CPUs graceful-run may use: the smaller of the two limits below, at least 1.
    pub count: u32,
    /// CPUs in the affinity mask, if it could be read.
    pub affinity: Option<u32>,
    /// The tightest CPU quota of graceful-run's cgroups, if any sets one.
    pub quota: Option<Quota>,
}

/// A cgroup's CPU bandwidth limit: `quota_us` of CPU time every `period_us`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    pub quota_us: u64,
    pub period_us: u64,
    /// The file it was read from (`.../cpu.max`, or `.../cpu.cfs_quota_us` under v1).
    pub file: PathBuf,
}

impl Quota {
    /// The CPUs the quota amounts to, rounded up, at least 1.
    pub fn cpus(&self) -> u32 {
        let cpus = self.quota_us.div_ceil(self.period_us.max(1)).max(1);
        u32::try_from(cpus).unwrap_or(u32::MAX)
    }

    /// Whether this quota allows fewer CPUs than `other` (compared exactly, before rounding).
    fn tighter_than(&self, other: &Quota) -> bool {
        u128::from(self.quota_us) * u128::from(other.period_us)
            < u128::from(other.quota_us) * u128::from(self.period_us)
    }
}

impl fmt::Display for Cpus {
    /// `2 (affinity mask: 4 CPUs; CPU quota 150000/100000 us in /sys/fs/cgroup/x/cpu.max)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", self.count)?;
        match self.affinity {
            Some(n) => write!(f, "affinity mask: {n} CPUs")?,
            None => write!(f, "affinity mask unreadable")?,
        }
        match &self.quota {
            Some(q) => write!(
                f,
                "; CPU quota {}/{} us in {})",
                q.quota_us,
                q.period_us,
                q.file.display()
            ),
            None => write!(f, "; no CPU quota)"),
        }
    }
}

/// The CPUs this process may use (see the module documentation).
pub fn available() -> Cpus {
    combine(
        affinity_count(),
        cgroup_quota(&|path| std::fs::read_to_string(path).ok()),
    )
}

fn combine(affinity: Option<u32>, quota: Option<Quota>) -> Cpus {
    let from_quota = quota.as_ref().map(Quota::cpus);
    let count = match (affinity, from_quota) {
        (Some(a), Some(q)) => a.min(q),
        (Some(n), None) | (None, Some(n)) => n,
        // Neither is readable (a seccomp filter, no /proc): one worker, the default.
        (None, None) => 1,
    };
    Cpus {
        count: count.max(1),
        affinity,
        quota,
    }
}

/// The number of CPUs in the calling thread's affinity mask. The mask is sized up until the
/// kernel accepts it: a fixed `cpu_set_t` holds 1024 CPUs, and sched_getaffinity fails with
/// EINVAL on machines with more.
fn affinity_count() -> Option<u32> {
    const WORD_BITS: usize = nix::libc::c_ulong::BITS as usize;
    let mut words = 1024 / WORD_BITS;
    while words <= (1 << 22) / WORD_BITS {
        let mut mask: Vec<nix::libc::c_ulong> = vec![0; words];
        // SAFETY: the kernel writes at most `size` bytes into the live buffer `mask`, which
        // is exactly `size` bytes long; cpu_set_t is a plain bit array of unsigned longs.
        let result = unsafe {
            nix::libc::sched_getaffinity(
                0,
                words * std::mem::size_of::<nix::libc::c_ulong>(),
                mask.as_mut_ptr().cast::<nix::libc::cpu_set_t>(),
            )
        };
        if result == 0 {
            return Some(mask.iter().map(|word| word.count_ones()).sum());
        }
        if nix::errno::Errno::last() != nix::errno::Errno::EINVAL {
            return None;
        }
        words *= 2;
    }
    None
}

/// The tightest CPU quota among this process's cgroups (v2 and v1), read through `read`
/// (a file's contents, or None), which tests replace with a fake tree.
fn cgroup_quota(read: &dyn Fn(&Path) -> Option<String>) -> Option<Quota> {
    let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
    let own = read(Path::new("/proc/self/cgroup"))?;
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
    let mut tightest: Option<Quota> = None;
    for line in own.lines() {
        // `HIERARCHY:CONTROLLERS:PATH`; the path may itself contain ':'.
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let v2 = hierarchy == "0" && controllers.is_empty();
        let v1_cpu = controllers.split(',').any(|c| c == "cpu");
        if !v2 && !v1_cpu {
            continue;
        }
        let mount = mounts.iter().find(|m| {
            if v2 {
                m.fstype == "cgroup2"
            } else {
                m.fstype == "cgroup" && m.options.split(',').any(|o| o == "cpu")
            }
        });
        let Some(mount) = mount else { continue };
        for dir in mount.dirs_of(path) {
            let quota = if v2 {
                read(&dir.join("cpu.max")).and_then(|text| parse_cpu_max(&text, &dir))
            } else {
                v1_quota(read, &dir)
            };
            if let Some(quota) = quota
                && tightest.as_ref().is_none_or(|t| quota.tighter_than(t))
            {
                tightest = Some(quota);
            }
        }
    }
    tightest
}

/// cgroup v2 `cpu.max`: `QUOTA PERIOD`, or `max PERIOD` for no limit.
fn parse_cpu_max(text: &str, dir: &Path) -> Option<Quota> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?.parse::<u64>().ok()?;
    let period = fields.next()?.parse::<u64>().ok()?;
    (period > 0).then(|| Quota {
        quota_us: quota,
        period_us: period,
        file: dir.join("cpu.max"),
    })
}

/// cgroup v1 `cpu.cfs_quota_us` (-1 for no limit) and `cpu.cfs_period_us`.
fn v1_quota(read: &dyn Fn(&Path) -> Option<String>, dir: &Path) -> Option<Quota> {
    let quota = read(&dir.join("cpu.cfs_quota_us"))?
        .trim()
        .parse::<i64>()
        .ok()?;
    let period = read(&dir.join("cpu.cfs_period_us"))?
        .trim()
        .parse::<u64>()
        .ok()?;
    (quota > 0 && period > 0).then(|| Quota {
        quota_us: quota as u64,
        period_us: period,
        file: dir.join("cpu.cfs_quota_us"),
    })
}

/// One line of /proc/self/mountinfo, the fields that place a cgroup hierarchy.
struct Mount {
    /// The directory of the hierarchy that is mounted (`/` unless bind-mounted from deeper).
    root: String,
    mount_point: PathBuf,
    fstype: String,
    options: String,
}

impl Mount {
    /// `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`
    fn parse(line: &str) -> Option<Mount> {
        let (left, right) = line.split_once(" - ")?;
        let left: Vec<&str> = left.split_whitespace().collect();
        let mut right = right.split_whitespace();
        let fstype = right.next()?.to_string();
        let _source = right.next()?;
        Some(Mount {
            root: unescape_octal(left.get(3)?),
            mount_point: PathBuf::from(unescape_octal(left.get(4)?)),
            fstype,
            options: right.next().unwrap_or_default().to_string(),
        })
    }

    /// The directories of cgroup `path` and its ancestors under this mount, deepest first,
    /// down to the mount point. A path outside the mount's root (a cgroup namespace that does
    /// not match this mount) gives the mount point alone.
    fn dirs_of(&self, path: &str) -> Vec<PathBuf> {
        let root = self.root.trim_end_matches('/');
        let relative = match path.strip_prefix(root) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') || root.is_empty() => rest,
            _ => "",
        };
        let mut dirs = Vec::new();
        let mut dir = self.mount_point.clone();
        dirs.push(dir.clone());
        for part in relative.split('/').filter(|p| !p.is_empty() && *p != "..") {
            dir.push(part);
            dirs.push(dir.clone());
        }
        dirs.reverse();
        dirs
    }
}

/// mountinfo writes space, tab, newline and backslash in paths as `\040`-style octal.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let digit = |k: usize| u32::from(bytes[i + k] - b'0');
            // At most \377 in what the kernel writes; anything larger wraps, harmlessly.
            out.push((digit(1) * 64 + digit(2) * 8 + digit(3)) as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::process::Command;

    /// A fake filesystem for [`cgroup_quota`].
    fn tree(files: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(path, text)| (PathBuf::from(path), text.to_string()))
            .collect();
        move |path: &Path| files.get(path).cloned()
    }

    const V2_MOUNT: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn a_parent_quota_limits_a_child_and_rounds_up() {
        let read = tree(&[
            ("/proc/self/mountinfo", V2_MOUNT),
            ("/proc/self/cgroup", "0::/a/b\n"),
            ("/sys/fs/cgroup/a/b/cpu.max", "max 100000\n"),
            ("/sys/fs/cgroup/a/cpu.max", "150000 100000\n"),
            ("/sys/fs/cgroup/cpu.max", "400000 100000\n"),
        ]);
        let quota = cgroup_quota(&read).expect("a quota is set");
        assert_eq!(quota.file, Path::new("/sys/fs/cgroup/a/cpu.max"));
        assert_eq!(quota.cpus(), 2);
    }

    #[test]
    fn the_tightest_quota_wins_whatever_the_periods() {
        let read = tree(&[
            ("/proc/self/mountinfo", V2_MOUNT),
            ("/proc/self/cgroup", "0::/a/b\n"),
            // 0.75 CPU, then 0.8 CPU with another period.
            ("/sys/fs/cgroup/a/b/cpu.max", "75000 100000\n"),
            ("/sys/fs/cgroup/a/cpu.max", "40000 50000\n"),
        ]);
        let quota = cgroup_quota(&read).expect("a quota is set");
        assert_eq!((quota.quota_us, quota.period_us), (75000, 100000));
        assert_eq!(quota.cpus(), 1, "less than one CPU still runs one worker");
    }

    #[test]
    fn no_limit_anywhere_is_no_quota() {
        let read = tree(&[
            ("/proc/self/mountinfo", V2_MOUNT),
            ("/proc/self/cgroup", "0::/a\n"),
            ("/sys/fs/cgroup/a/cpu.max", "max 100000\n"),
        ]);
        assert_eq!(cgroup_quota(&read), None);
        let unreadable = tree(&[]);
        assert_eq!(cgroup_quota(&unreadable), None);
    }

    /// A container without a cgroup namespace: /proc/self/cgroup names the host's path, and
    /// the mount's root is that same cgroup, bind-mounted.
    #[test]
    fn the_own_path_is_mapped_through_the_mount_root() {
        let read = tree(&[
            (
                "/proc/self/mountinfo",
                "40 30 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup rw\n",
            ),
            ("/proc/self/cgroup", "0::/docker/abc\n"),
            ("/sys/fs/cgroup/cpu.max", "200000 100000\n"),
        ]);
        let quota = cgroup_quota(&read).expect("a quota is set");
        assert_eq!(quota.file, Path::new("/sys/fs/cgroup/cpu.max"));
        assert_eq!(quota.cpus(), 2);
    }

    /// A hybrid host as this project's machines are: v1 controllers (cpu among them) and an
    /// empty v2 hierarchy at /sys/fs/cgroup/unified, a mount point with a space in it.
    #[test]
    fn cgroup_v1_cfs_quota_is_read_on_a_hybrid_host() {
        let read = tree(&[
            (
                "/proc/self/mountinfo",
                "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                 32 31 0:29 / /sys/fs/cgroup/cpu\\040x rw,relatime - cgroup cgroup rw,cpu\n\
                 33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
                 41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
            ),
            ("/proc/self/cgroup", "2:cpuacct:/\n1:cpu:/svc/app\n0::/\n"),
            ("/sys/fs/cgroup/cpu x/svc/app/cpu.cfs_quota_us", "-1\n"),
            ("/sys/fs/cgroup/cpu x/svc/app/cpu.cfs_period_us", "100000\n"),
            ("/sys/fs/cgroup/cpu x/svc/cpu.cfs_quota_us", "250000\n"),
            ("/sys/fs/cgroup/cpu x/svc/cpu.cfs_period_us", "100000\n"),
            ("/sys/fs/cgroup/cpuacct/svc/cpu.cfs_quota_us", "100000\n"),
            ("/sys/fs/cgroup/cpuacct/svc/cpu.cfs_period_us", "100000\n"),
        ]);
        let quota = cgroup_quota(&read).expect("a v1 quota is set");
        assert_eq!(
            quota.file,
            Path::new("/sys/fs/cgroup/cpu x/svc/cpu.cfs_quota_us")
        );
        assert_eq!(quota.cpus(), 3);
    }

    #[test]
    fn the_smaller_limit_decides_and_the_count_is_at_least_one() {
        let quota = |quota_us, period_us| Quota {
            quota_us,
            period_us,
            file: PathBuf::from("/x/cpu.max"),
        };
        assert_eq!(combine(Some(4), Some(quota(150_000, 100_000))).count, 2);
        assert_eq!(combine(Some(1), Some(quota(300_000, 100_000))).count, 1);
        assert_eq!(combine(None, Some(quota(1_000, 100_000))).count, 1);
        assert_eq!(combine(Some(8), None).count, 8);
        assert_eq!(combine(None, None).count, 1);
        let text = combine(Some(4), Some(quota(150_000, 100_000))).to_string();
        assert_eq!(
            text,
            "2 (affinity mask: 4 CPUs; CPU quota 150000/100000 us in /x/cpu.max)"
        );
    }

    /// The number of CPUs in the kernel's own list for this thread (`0-3,8`).
    fn cpus_allowed_list() -> u32 {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("procfs");
        let list = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .expect("status has Cpus_allowed_list")
            .trim();
        list.split(',')
            .map(|range| match range.split_once('-') {
                Some((a, b)) => b.parse::<u32>().unwrap() - a.parse::<u32>().unwrap() + 1,
                None => 1,
            })
            .sum()
    }

    /// What the environment of a re-run of this test (under taskset, in a test cgroup)
    /// expects `available().count` to be.
    const EXPECT: &str = "GR_CPUS_TEST_EXPECT";
    /// The same for the quota's CPUs and the directory of its file: `N DIR`.
    const EXPECT_QUOTA: &str = "GR_CPUS_TEST_EXPECT_QUOTA";

    /// The affinity count is the kernel's; when re-run by the tests below, the count is what
    /// they arranged.
    #[test]
    fn the_count_matches_the_kernels_view() {
        let cpus = available();
        assert_eq!(cpus.affinity, Some(cpus_allowed_list()), "{cpus}");
        if let Ok(expected) = std::env::var(EXPECT) {
            assert_eq!(cpus.count.to_string(), expected, "{cpus}");
        }
        if let Ok(expected) = std::env::var(EXPECT_QUOTA) {
            let (cpus_of_quota, file) = expected.split_once(' ').expect("`N FILE-PREFIX`");
            let quota = cpus.quota.as_ref().expect("a quota is set");
            assert_eq!(quota.cpus().to_string(), cpus_of_quota, "{cpus}");
            assert!(quota.file.starts_with(file), "{cpus}");
        }
    }

    /// Runs [`the_count_matches_the_kernels_view`] alone in a new process, through `sh -c
    /// PREFIX`, expecting `expected` CPUs.
    fn rerun(prefix: &str, expected: u32, expected_quota: Option<String>) {
        let exe = std::env::current_exe().expect("the test binary has a path");
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{prefix} \"$0\" --exact cpus::tests::the_count_matches_the_kernels_view --test-threads 1"
            ))
            .arg(exe)
            .env(EXPECT, expected.to_string())
            .envs(expected_quota.map(|q| (EXPECT_QUOTA, q)))
            .output()
            .expect("sh runs");
        assert!(
            output.status.success(),
            "{prefix}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "the test did not run: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    /// `taskset -c` limits the count to the CPUs it names.
    #[test]
    fn taskset_limits_the_count() {
        let first = available().affinity.expect("the mask is readable");
        rerun("taskset -c 0", 1, None);
        if first >= 2 {
            rerun("taskset -c 0,1", 2, None);
        }
    }

    /// A real cgroup with a quota of 1.5 CPUs: its file is found, its quota rounds up to 2, and
    /// the count is 2 or the affinity count if smaller;
    /// under cgroup v2 where the cpu controller is enabled, else under v1's cpu hierarchy.
    #[test]
    fn a_test_cgroup_quota_limits_the_count() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "creating a test cgroup needs root (as CI has)"
        );
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("procfs");
        let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
        let v2 = mounts.iter().find(|m| {
            m.fstype == "cgroup2"
                && std::fs::read_to_string(m.mount_point.join("cgroup.subtree_control"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
        });
        let v1 = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == "cpu"));
        let (parent, files): (&Path, &[(&str, &str)]) = match (v2, v1) {
            (Some(m), _) => (&m.mount_point, &[("cpu.max", "150000 100000")]),
            (None, Some(m)) => (
                &m.mount_point,
                &[
                    ("cpu.cfs_period_us", "100000"),
                    ("cpu.cfs_quota_us", "150000"),
                ],
            ),
            (None, None) => panic!("no cgroup hierarchy with the cpu controller: {mountinfo}"),
        };
        let dir = parent.join(format!("graceful-run-test-{}", crate::random::token()));
        std::fs::create_dir(&dir).expect("root can create a cgroup");
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                // The re-run process has exited: the cgroup is empty.
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _remove = Remove(dir.clone());
        for (file, value) in files {
            std::fs::write(dir.join(file), value).expect("the quota is writable");
        }
        let expected = available().affinity.expect("the mask is readable").min(2);
        rerun(
            &format!("echo $$ > '{}/cgroup.procs' && exec", dir.display()),
            expected,
            Some(format!("2 {}", dir.display())),
        );
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_octal(r"/a\040b\011c\134"), "/a b\tc\\");
        assert_eq!(unescape_octal(r"/a\04"), r"/a\04");
    }
}
