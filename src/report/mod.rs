//! The run report (`reports/report.json`): every claim with its verdict and
//! evidence, a summary with points and grade ([`run`]), validated against its
//! published JSON Schema ([`schema`]); the exports people read, rendered from
//! it alone ([`chart`] SVGs, [`html`], [`csv`]); the kept [`history`], the
//! [`diff`] of two reports, and the CI [`gate`]. Every file is written
//! atomically (temporary file in the same directory, then rename), so a reader
//! never sees half a report.

pub mod chart;
pub mod csv;
pub mod diff;
pub mod gate;
pub mod history;
pub mod html;
pub mod run;
pub mod schema;
pub mod svg;

use std::io::Write;
use std::path::{Path, PathBuf};

use run::RunReport;

/// Why the exports could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A chart could not be drawn.
    #[error(transparent)]
    Chart(#[from] chart::ChartError),
    /// The CSV could not be formatted.
    #[error("formatting report.csv: {0}")]
    Csv(#[from] ::csv::Error),
}

/// Renders the exports of `report` into `out`: `report.html` (self-contained,
/// charts inline), `report.csv` and `charts/<name>.svg`; `past` feeds the
/// history chart. Returns the files written.
pub fn write_exports(report: &RunReport, out: &Path, past: &[RunReport]) -> Result<Vec<PathBuf>, ExportError> {
    let charts = chart::all(report, past)?;
    let mut files = Vec::new();
    let mut put = |path: PathBuf, bytes: &[u8]| {
        write_atomic(&path, bytes).map_err(|source| ExportError::Io { path: path.clone(), source })?;
        files.push(path);
        Ok::<_, ExportError>(())
    };
    for c in &charts {
        put(out.join("charts").join(format!("{}.svg", c.name)), c.svg.as_bytes())?;
    }
    put(out.join("report.csv"), csv::render(report)?.as_bytes())?;
    put(out.join("report.html"), html::render(report, &charts).as_bytes())?;
    Ok(files)
}

/// Writes `bytes` to `path` atomically.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_no_temporary_behind() {
        let dir = std::env::temp_dir().join(format!("falsify-report-{}", std::process::id()));
        let path = dir.join("sub/report.json");
        write_atomic(&path, b"{\"a\":1}").unwrap();
        write_atomic(&path, b"{\"a\":2}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":2}");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        assert!(write_atomic(Path::new("/proc/nope/x.json"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
