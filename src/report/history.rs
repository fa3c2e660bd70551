//! `reports/history/`: every run's report, kept for the history chart and for
//! `falsify diff`; only the newest [`KEEP`] are kept.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::record::RunReport;
use crate::util::{io_error_at, read_text_limited, MAX_TEXT_FILE_BYTES};

/// How many reports the history keeps.
pub const KEEP: usize = 50;

/// Stores a run's JSON as a new file `dir/report-<seconds>-<nanoseconds>-<pid>.json`
/// (atomically, never replacing a file: runs finishing at once each keep
/// theirs, a name already taken gaining `-<n>`, as where the clock is coarser
/// than two writers), then removes the oldest reports beyond [`KEEP`]. Returns
/// the file written. Every error names its path.
pub fn record(dir: &Path, json: &[u8]) -> std::io::Result<PathBuf> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let stem = format!("report-{:012}-{:09}-{}", now.as_secs(), now.subsec_nanos(), std::process::id());
    let mut attempt = 0;
    let path = loop {
        let path = match attempt {
            0 => dir.join(format!("{stem}.json")),
            n => dir.join(format!("{stem}-{n}.json")),
        };
        match crate::util::create_atomic(&path, json) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 64 => attempt += 1,
            done => break done.map(|()| path)?,
        }
    };
    let mut kept = files(dir)?;
    kept.sort();
    let excess = kept.len().saturating_sub(KEEP);
    for old in &kept[..excess] {
        std::fs::remove_file(old).map_err(|e| io_error_at(old, e))?;
    }
    Ok(path)
}

fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)
        .map_err(|e| io_error_at(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("report-") && n.ends_with(".json"))
        })
        .collect())
}

/// The reports in `dir`, oldest first, and a warning for each file that is
/// not a readable report (it is left out, never fatal). A missing directory is an empty history.
pub fn load(dir: &Path) -> (Vec<RunReport>, Vec<String>) {
    let Ok(paths) = files(dir) else { return (Vec::new(), Vec::new()) };
    let mut reports = Vec::new();
    let mut warnings = Vec::new();
    for p in paths {
        let named = |e: String| format!("{}: {e}", p.display());
        match read_text_limited(&p, MAX_TEXT_FILE_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| named(e.to_string())))
            .and_then(|doc| RunReport::from_json(doc).map_err(named))
        {
            Ok(r) => reports.push(r),
            Err(e) => warnings.push(format!("left out of the history: {e}")),
        }
    }
    reports.sort_by_key(|r: &RunReport| r.provenance.timestamp);
    (reports, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_report;

    #[test]
    fn keeps_the_newest_and_skips_unreadable_files() {
        let dir = std::env::temp_dir().join(format!("falsify-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut r = sample_report();
        for stamp in 0..(KEEP as u64 + 3) {
            r.provenance.timestamp = 1000 + stamp;
            record(&dir, &serde_json::to_vec(&r).unwrap()).unwrap();
        }
        std::fs::write(dir.join("report-999999999999.json"), "{not json").unwrap();
        let (reports, warnings) = load(&dir);
        assert_eq!(reports.len(), KEEP);
        assert_eq!(reports[0].provenance.timestamp, 1003, "the three oldest were removed");
        assert!(reports.windows(2).all(|w| w[0].provenance.timestamp < w[1].provenance.timestamp));
        assert_eq!(warnings.len(), 1);
        assert!(load(&dir.join("absent")).0.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runs_finishing_at_once_each_keep_their_entry() {
        let dir = tempfile::tempdir().unwrap();
        let json = serde_json::to_vec(&sample_report()).unwrap();
        let written: Vec<PathBuf> = std::thread::scope(|s| {
            let writers: Vec<_> = (0..4).map(|_| s.spawn(|| record(dir.path(), &json).unwrap())).collect();
            writers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(files(dir.path()).unwrap().len(), 4, "{written:?}");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        let e = record(&plain.join("history"), &json).unwrap_err().to_string();
        assert!(e.contains("plain/history"), "{e}");
    }
}
