//! Where a measurement came from: the host, this engine's build, the model
//! file and the baselines. Every result the project writes carries one.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The machine a measurement ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// CPU model name.
    pub cpu: String,
    /// SIMD features that matter for the kernels (as detected at run time).
    pub cpu_features: Vec<String>,
    /// Logical cores available to this process.
    pub cores: usize,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Operating system and kernel.
    pub os: String,
    /// GPU, when one is usable (none is probed yet: `None`).
    pub gpu: Option<String>,
}

/// This engine's build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engine {
    /// Crate version.
    pub version: String,
    /// Git commit, when built from a checkout.
    pub git_sha: Option<String>,
    /// Whether the checkout had uncommitted changes.
    pub git_dirty: Option<bool>,
    /// `release` or `debug`.
    pub profile: String,
    /// The kernel set in use: the process's one (`--kernels`, else the fastest this CPU runs).
    pub kernels: Vec<String>,
}

/// A model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Path as given.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// sha256 of the file.
    pub sha256: String,
}

/// Everything a result needs to be traced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Host facts.
    pub host: Host,
    /// Engine build.
    pub engine: Engine,
    /// Threads the measurement used.
    pub threads: usize,
    /// Model files involved.
    pub models: Vec<ModelFile>,
    /// Baselines involved: name → provenance text (e.g. llama.cpp's PROVENANCE.toml).
    pub baselines: Vec<(String, String)>,
    /// Seconds since the Unix epoch when it was taken.
    pub timestamp: u64,
}

impl Host {
    /// Reads the host's facts from the operating system.
    pub fn detect() -> Host {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned()))
            .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines().find_map(|l| {
                    l.strip_prefix("MemTotal:").and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                })
            })
            .map_or(0, |kib| kib * 1024);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Host {
            cpu,
            cpu_features: cpu_features(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            os: format!("{} {}", std::env::consts::OS, kernel.trim()),
            gpu: None,
        }
    }
}

/// The SIMD features relevant to the kernels, detected at run time.
pub fn cpu_features() -> Vec<String> {
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let checks: [(&str, bool); 7] = [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("f16c", is_x86_feature_detected!("f16c")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512bw", is_x86_feature_detected!("avx512bw")),
            ("avx512vl", is_x86_feature_detected!("avx512vl")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
        ];
        f.extend(checks.iter().filter(|c| c.1).map(|c| c.0.to_owned()));
    }
    f
}

impl Engine {
    /// This build's facts (git state is captured at build time by build.rs).
    pub fn current() -> Engine {
        let sha = option_env!("FALSIFY_GIT_SHA").filter(|s| !s.is_empty()).map(str::to_owned);
        Engine {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            git_dirty: sha.as_ref().map(|_| option_env!("FALSIFY_GIT_DIRTY") == Some("1")),
            git_sha: sha,
            profile: if cfg!(debug_assertions) { "debug" } else { "release" }.to_owned(),
            kernels: vec![crate::kernels::Kernels::detect().name().to_owned()],
        }
    }
}

/// Why a model's hash could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash {path}: {source}")]
pub struct HashError {
    /// The file.
    pub path: PathBuf,
    /// The error.
    pub source: std::io::Error,
}

impl ModelFile {
    /// Describes a model file, hashing it only when the cache next to it
    /// (`FILE.sha256`, keyed by size and modification time) is missing or stale.
    pub fn describe(path: &Path) -> Result<ModelFile, HashError> {
        let err = |source| HashError { path: path.to_path_buf(), source };
        let meta = std::fs::metadata(path).map_err(err)?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
        let key = format!("{} {}", meta.len(), mtime);
        let cache = PathBuf::from(format!("{}.sha256", path.display()));
        if let Ok(text) = std::fs::read_to_string(&cache) {
            if let Some((_, sha)) = text.trim().rsplit_once(' ').filter(|(k, _)| *k == key) {
                return Ok(ModelFile { path: path.to_path_buf(), bytes: meta.len(), sha256: sha.to_owned() });
            }
        }
        let sha = sha256_file(path).map_err(err)?;
        // The cache is an optimization: a read-only directory just means hashing next time.
        let _ = std::fs::write(&cache, format!("{key} {sha}\n"));
        Ok(ModelFile { path: path.to_path_buf(), bytes: meta.len(), sha256: sha })
    }
}

/// sha256 of a file, streamed.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl Provenance {
    /// Provenance for a measurement that used `threads`, `models` and `baselines`.
    pub fn collect(threads: usize, models: Vec<ModelFile>, baselines: Vec<(String, String)>) -> Provenance {
        Provenance {
            host: Host::detect(),
            engine: Engine::current(),
            threads,
            models,
            baselines,
            timestamp: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_hash_is_correct_and_cached_by_size_and_mtime() {
        let path = std::env::temp_dir().join(format!("falsify-prov-{}.bin", std::process::id()));
        std::fs::write(&path, b"abc").unwrap();
        let first = ModelFile::describe(&path).unwrap();
        assert_eq!(first.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let cache = PathBuf::from(format!("{}.sha256", path.display()));
        let cached = std::fs::read_to_string(&cache).unwrap();
        assert!(cached.starts_with("3 ") && cached.trim_end().ends_with(&first.sha256));
        // A stale key forces a re-hash; a matching key is trusted.
        std::fs::write(&cache, "3 0 not-a-hash\n").unwrap();
        assert_eq!(ModelFile::describe(&path).unwrap().sha256, first.sha256);
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&cache).unwrap();
        assert!(ModelFile::describe(&path).unwrap_err().to_string().starts_with("cannot hash"));
    }

    #[test]
    fn host_and_engine_facts_are_filled_in() {
        let p = Provenance::collect(2, vec![], vec![("llama.cpp".into(), "package = \"x\"".into())]);
        assert!(!p.host.cpu.is_empty() && p.host.cores >= 1 && p.host.memory_bytes > 0);
        assert!(!p.engine.version.is_empty() && !p.engine.kernels.is_empty());
        assert!(p.timestamp > 1_700_000_000);
    }
}
