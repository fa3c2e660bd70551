//! The run report (`reports/report.json`): every claim with its verdict and
//! evidence, a summary with points and grade ([`crate::record`]), validated against its
//! published JSON Schema ([`schema`]); the exports people read, rendered from
//! it alone ([`chart`] SVGs, [`html`], [`csv`], the [`markdown`] summary,
//! [`junit`] XML, the [`text`] table ending a run); the kept [`history`], the
//! [`diff`] of two reports, and the CI [`gate`]; the [`output`] directory,
//! held by one process at a time. Every file is written atomically (a new
//! temporary file in the same directory, then rename), so a reader never sees
//! half a report.

pub mod chart;
pub mod csv;
pub mod diff;
pub mod gate;
pub mod headline;
pub mod history;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod output;
pub mod schema;
pub mod svg;
pub mod text;

use std::path::{Path, PathBuf};

use crate::record::RunReport;
use crate::util::write_atomic;

/// Why the exports could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A file could not be written (the error names it).
    #[error("writing an export: {source}")]
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
/// charts inline), `report.csv`, `charts/<name>.svg`, `summary.md` ([`markdown`])
/// and `junit.xml` ([`junit`]); `past` feeds the history chart and holds the
/// previous run the changes are taken from. Returns the files written.
pub fn write_exports(report: &RunReport, out: &Path, past: &[RunReport]) -> Result<Vec<PathBuf>, ExportError> {
    let charts = chart::all(report, past)?;
    let changes = headline::changes(report, headline::previous(report, past));
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
    put(out.join("report.html"), html::render(report, &charts, changes.as_ref()).as_bytes())?;
    put(out.join("summary.md"), markdown::render(report, changes.as_ref()).as_bytes())?;
    put(out.join("junit.xml"), junit::render(report).as_bytes())?;
    Ok(files)
}
