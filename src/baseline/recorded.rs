//! Recorded baseline figures (`baselines/recorded.toml`): numbers taken from
//! the seed documents, each with its source, hardware and date. They are
//! always labelled *recorded* and are only offered for comparison on matching
//! hardware; on any other host they are not a baseline at all.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::provenance::Host;

/// One recorded figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    /// The engine that produced it.
    pub engine: String,
    /// The model it ran.
    pub model: String,
    /// Metric name, as in bench results.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// Its standard deviation, when the source gave one.
    #[serde(default)]
    pub sd: Option<f64>,
    /// The hardware it was measured on (a GPU or CPU name).
    pub hardware: String,
    /// When it was measured.
    pub date: String,
    /// How it was measured.
    pub command: String,
    /// Where it is written down.
    pub source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    figure: Vec<Figure>,
}

/// Why the recorded figures could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordedError {
    /// The file could not be read (the error names it).
    #[error("cannot read the recorded figures: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
}

/// Reads recorded figures from a TOML file (at most [`crate::util::MAX_TEXT_FILE_BYTES`]).
pub fn load(path: &Path) -> Result<Vec<Figure>, RecordedError> {
    let text = crate::util::read_text_limited(path, crate::util::MAX_TEXT_FILE_BYTES)
        .map_err(|source| RecordedError::Io { path: path.display().to_string(), source })?;
    parse(&text).map_err(|message| RecordedError::Parse { path: path.display().to_string(), message })
}

fn parse(text: &str) -> Result<Vec<Figure>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    for f in &file.figure {
        if !f.value.is_finite() || f.value <= 0.0 || f.source.trim().is_empty() || f.hardware.trim().is_empty() {
            return Err(format!(
                "figure for {} {} {} lacks a positive value, a source or hardware",
                f.engine, f.model, f.metric
            ));
        }
    }
    Ok(file.figure)
}

/// Whether a figure was measured on hardware like `host`'s (its GPU, or its CPU model).
pub fn matches_host(figure: &Figure, host: &Host) -> bool {
    let hw = figure.hardware.to_lowercase();
    host.gpu.as_ref().is_some_and(|g| g.to_lowercase().contains(&hw)) || host.cpu.to_lowercase().contains(&hw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(cpu: &str, gpu: Option<&str>) -> Host {
        Host {
            cpu: cpu.into(),
            cpu_features: vec![],
            cores: 2,
            memory_bytes: 1,
            os: "linux".into(),
            gpu: gpu.map(Into::into),
        }
    }

    #[test]
    fn committed_figures_load_with_sources() {
        let figs = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines/recorded.toml")).unwrap();
        assert!(figs.len() >= 10);
        assert!(figs.iter().all(|f| f.source.contains("seeds/") && !f.date.is_empty()));
        assert!(figs.iter().any(|f| f.engine == "ollama") && figs.iter().any(|f| f.engine == "llama.cpp"));
    }

    #[test]
    fn figures_only_match_their_hardware() {
        let figs = parse(
            &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines/recorded.toml")).unwrap(),
        )
        .unwrap();
        let here = host("AMD EPYC 9B14", None);
        assert!(figs.iter().all(|f| !matches_host(f, &here)));
        let box4090 = host("AMD Ryzen Threadripper 7960X 24-Cores", Some("NVIDIA GeForce RTX 4090"));
        assert_eq!(figs.iter().filter(|f| matches_host(f, &box4090)).count(), figs.len());
    }

    #[test]
    fn invalid_files_are_located_errors() {
        let e = parse("[[figure]]\nengine = \"x\"\nvalue = \"fast\"\n").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        let e = parse("[[figure]]\nengine='x'\nmodel='m'\nmetric='d'\nvalue=-1.0\nhardware='h'\ndate='d'\ncommand='c'\nsource='s'\n").unwrap_err();
        assert!(e.contains("lacks a positive value"), "{e}");
    }
}
