//! `--pid-file`: graceful-run's own pid, for `kill -HUP "$(cat PATH)"`.
//!
//! Written to a temporary file in the same directory and renamed into place, so a reader
//! never sees a partial file. A file that names a live graceful-run other than this one makes
//! startup fail; a stale file (dead pid, or a pid now used by another program, or our own pid
//! as happens with PID 1 in a restarted container) is replaced. The file is removed at exit
//! if it still holds our pid.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    pub fn create(path: &Path) -> Result<PidFile, String> {
        let pid = std::process::id();
        if let Some(other) = live_owner(path, pid) {
            return Err(format!("graceful-run is already running as pid {other}"));
        }
        let directory = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file_name = path
            .file_name()
            .ok_or("the path has no file name")?
            .to_string_lossy();
        let temporary = directory.join(format!(".{file_name}.{pid}.tmp"));
        let written = fs::File::create(&temporary)
            .and_then(|mut file| {
                file.write_all(format!("{pid}\n").as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&temporary, path));
        if let Err(e) = written {
            let _ = fs::remove_file(&temporary);
            return Err(format!("cannot write it: {e}"));
        }
        Ok(PidFile {
            path: path.to_path_buf(),
            pid,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path) == Some(self.pid) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The pid in `path`, if it is a running graceful-run other than us.
fn live_owner(path: &Path, ours: u32) -> Option<u32> {
    let pid = read_pid(path)?;
    if pid == ours {
        return None;
    }
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim_end() == "graceful-run").then_some(pid)
}
