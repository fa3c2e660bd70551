//! Small host utilities every layer may use, importing nothing of the crate:
//! atomic file writes, `PATH` lookup, CUDA device detection and this
//! process's peak resident set size.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, synced, then renamed over `path`, so a reader never sees half a
/// file; the temporary is removed when anything fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp.{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
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
        assert!(write_atomic(Path::new("/proc/nope/x.json"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
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
    fn path_lookup_finds_sh_and_not_nonsense() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-falsify"));
    }

    #[test]
    fn peak_rss_is_known_on_linux() {
        assert!(peak_rss_bytes().is_some_and(|b| b > 0));
    }
}
