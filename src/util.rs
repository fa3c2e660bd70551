//! Small host utilities every layer may use, importing nothing of the crate:
//! atomic file writes, size-limited text reads, line and column of an offset, `PATH` lookup, CUDA device
//! detection, this process's peak resident set size, and [`children`]: child
//! processes that end with this one.

pub mod children;

use std::io::Write;
use std::path::Path;

/// `e` with `path` named in its message (its kind kept).
pub fn io_error_at(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The directory `path` lies in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Writes `bytes` to `path` atomically: a temporary file of a random name,
/// created exclusively in the same directory (so a planted symbolic link is
/// never followed), synced, then renamed over `path`, so a reader never sees
/// half a file; the temporary is removed when anything fails. Errors name the
/// path they concern.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_whole(path, bytes, true)
}

/// [`write_atomic`] for a file that must be new: fails (`AlreadyExists`)
/// rather than replace one that is there.
pub fn create_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_whole(path, bytes, false)
}

fn write_whole(path: &Path, bytes: &[u8], replace: bool) -> std::io::Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).map_err(|e| io_error_at(dir, e))?;
    let name = path.file_name().ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(|e| io_error_at(dir, e))?;
    tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all()).map_err(|e| io_error_at(tmp.path(), e))?;
    let persisted = if replace { tmp.persist(path) } else { tmp.persist_noclobber(path) };
    persisted.map_err(|e| io_error_at(path, e.error))?;
    Ok(())
}

/// Checks that files can be created in `dir` (creating it when missing) by
/// creating and removing a probe file there, so that a run learns before
/// measuring, not after, that it could not keep its results.
pub fn check_writable(dir: &Path) -> std::io::Result<()> {
    let cannot = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{}: cannot write in this directory: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(cannot)?;
    let probe = tempfile::Builder::new().prefix(".write-probe.").tempfile_in(dir).map_err(cannot)?;
    probe.as_file().sync_all().map_err(cannot)?;
    probe.close().map_err(cannot)
}

/// The most bytes a report, policy, claims or baseline file may have (64 MiB):
/// a larger one, `/dev/zero` or a FIFO that never ends is refused, not read
/// until memory runs out.
pub const MAX_TEXT_FILE_BYTES: u64 = 64 << 20;

/// Reads the text file at `path`, refusing one over `limit` bytes, one that is
/// not a regular file (a directory, a FIFO, a device) and one that is not
/// UTF-8 (naming the byte offset). Every error names the path.
pub fn read_text_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(named)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not a regular file", path.display()),
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path).map_err(named)?.take(limit + 1).read_to_end(&mut bytes).map_err(named)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: larger than the {limit}-byte limit for this kind of file", path.display()),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: not UTF-8 (invalid byte at offset {})", path.display(), e.utf8_error().valid_up_to()),
        )
    })
}

/// 1-based line and column (in characters) of byte `offset` in `text`, for
/// errors at file:line:column; an offset inside a character counts from its start.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Whether `program` is an executable file on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let p = dir.join(program);
            p.is_file()
                && p.metadata().is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
        })
    })
}

/// Names of the CUDA devices `nvidia-smi -L` lists (none when it is absent).
pub fn cuda_devices() -> Vec<String> {
    if !on_path("nvidia-smi") {
        return Vec::new();
    }
    children::output(std::process::Command::new("nvidia-smi").arg("-L"), Some(std::time::Duration::from_secs(30)))
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with("GPU")).map(str::to_owned).collect()
        })
        .unwrap_or_default()
}

/// This process's peak resident set size (`VmHWM` in /proc/self/status), when known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_no_temporary_behind() {
        let dir = std::env::temp_dir().join(format!("falsify-util-{}", std::process::id()));
        let path = dir.join("sub/report.json");
        write_atomic(&path, b"{\"a\":1}").unwrap();
        write_atomic(&path, b"{\"a\":2}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":2}");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        let e = write_atomic(Path::new("/proc/nope/x.json"), b"x").unwrap_err().to_string();
        assert!(e.contains("/proc/nope"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        // Links at the old fixed temporary names, and at the file itself.
        for name in [format!(".report.json.tmp.{}", std::process::id()), "report.json".into()] {
            std::os::unix::fs::symlink(&target, out.join(name)).unwrap();
        }
        write_atomic(&out.join("report.json"), b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        assert_eq!(std::fs::read_to_string(out.join("report.json")).unwrap(), "new");
        assert!(!out.join("report.json").is_symlink());
        create_atomic(&out.join("fresh.json"), b"1").unwrap();
        let e = create_atomic(&out.join("fresh.json"), b"2").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("fresh.json"), "{e}");
    }

    #[test]
    fn writability_is_checked_by_name() {
        let dir = tempfile::tempdir().unwrap();
        check_writable(&dir.path().join("new/sub")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("new/sub")).unwrap().count(), 0, "the probe is removed");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        let e = check_writable(&plain.join("reports")).unwrap_err().to_string();
        assert!(e.contains("plain/reports: cannot write"), "{e}");
    }

    #[test]
    fn limited_reads_refuse_large_special_and_non_utf8_files() {
        let dir = std::env::temp_dir().join(format!("falsify-read-limited-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok.txt");
        std::fs::write(&ok, "héllo").unwrap();
        assert_eq!(read_text_limited(&ok, 16).unwrap(), "héllo");
        let err = read_text_limited(&ok, 3).unwrap_err().to_string();
        assert!(err.contains("ok.txt") && err.contains("limit"), "{err}");
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, b"ab\xffcd").unwrap();
        let err = read_text_limited(&bad, 16).unwrap_err().to_string();
        assert!(err.contains("offset 2"), "{err}");
        let err = read_text_limited(&dir, 16).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = read_text_limited(Path::new("/dev/zero"), 16).unwrap_err().to_string();
        assert!(err.contains("/dev/zero"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn line_and_column_count_characters_from_one() {
        let text = "a = 1\nbé = nan\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, text.find("nan").unwrap()), (2, 6));
        assert_eq!(line_col(text, text.find('é').unwrap() + 1), (2, 2), "inside a character");
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn path_lookup_finds_sh_and_not_nonsense() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-falsify"));
    }

    #[test]
    fn peak_rss_is_known_on_linux() {
        assert!(peak_rss_bytes().is_some_and(|b| b > 0));
    }
}
