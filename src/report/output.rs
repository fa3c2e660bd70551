//! The report directory a command writes (`reports/` by default), held for
//! one process at a time: [`OutputDir::take`] locks it (a second run on the
//! same directory fails naming the holder's pid, instead of mixing its files
//! with the first's) and checks that files can be written there before any
//! measuring starts.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::util::{check_writable, io_error_at, write_atomic};

/// The lock file in a report directory.
pub const LOCK_FILE: &str = ".falsify.lock";

/// A report directory this process holds until the value is dropped (the
/// lock is the operating system's, so it also ends with the process).
#[derive(Debug)]
pub struct OutputDir {
    dir: PathBuf,
    _lock: File,
}

impl OutputDir {
    /// Takes `dir` for this process, creating it when missing: locks it,
    /// writing this process's id and `command` into the lock file, and checks
    /// that files can be created there. Fails, naming the directory, when it
    /// cannot be written or another process holds it (naming that one's id).
    pub fn take(dir: &Path, command: &str) -> std::io::Result<OutputDir> {
        check_writable(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // A planted symbolic link is refused, never followed.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| io_error_at(&path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = Read::by_ref(&mut lock).take(256).read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "another process" } else { holder };
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by {holder}; wait for it to finish, or pass another --out directory",
                        dir.display()
                    ),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(io_error_at(&path, e)),
        }
        let note = format!("falsify {command} (pid {})\n", std::process::id());
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| lock.write_all(note.as_bytes()))
            .map_err(|e| io_error_at(&path, e))?;
        Ok(OutputDir { dir: dir.to_path_buf(), _lock: lock })
    }

    /// Keeps a run's report (its JSON): a new entry in `history/`, then
    /// `report.json` and `latest.json`. Returns the history entry.
    pub fn write_report(&self, json: &[u8]) -> std::io::Result<PathBuf> {
        let history = super::history::record(&self.dir.join("history"), json)?;
        write_atomic(&self.dir.join("report.json"), json)?;
        write_atomic(&self.dir.join("latest.json"), json)?;
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::take(dir.path(), "run").unwrap();
        let e = OutputDir::take(dir.path(), "run").unwrap_err().to_string();
        assert!(e.contains(&format!("falsify run (pid {})", std::process::id())), "{e}");
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        let history = out.write_report(b"{}").unwrap();
        assert!(history.starts_with(dir.path().join("history")));
        assert_eq!(std::fs::read(dir.path().join("latest.json")).unwrap(), b"{}");
        drop(out);
        OutputDir::take(dir.path(), "report").unwrap();
    }

    #[test]
    fn an_unwritable_directory_is_refused_by_name_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        for bad in [plain.join("reports"), PathBuf::from("/proc/falsify-reports")] {
            let e = OutputDir::take(&bad, "run").unwrap_err().to_string();
            assert!(e.contains(&bad.display().to_string()) && e.contains("cannot write"), "{e}");
        }
    }

    #[test]
    fn a_planted_lock_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(&target, out.join(LOCK_FILE)).unwrap();
        let e = OutputDir::take(&out, "run").unwrap_err().to_string();
        assert!(e.contains(LOCK_FILE), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }
}
