//! The requirements vocabulary: what must be present on a host for a claim to
//! be measured there. A requirement that is not met makes the claim `skipped`,
//! with a reason that says what is missing and how to provide it.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// One thing a claim needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// A Qwen2.5-Coder Q4_K_M model of this size (`0.5b`, `1.5b`, `7b`, `32b`) under `models/`.
    Model(String),
    /// The llama.cpp build (llama-bench, llama-server, llama-completion …).
    LlamaCpp,
    /// An Ollama server reachable at `OLLAMA_HOST`.
    Ollama,
    /// A usable CUDA device.
    Cuda,
    /// A GPU whose name contains this text (`gpu:RTX 4090`).
    Gpu(String),
    /// A program on `PATH` (`tool:strace`).
    Tool(String),
    /// NVIDIA's NVRTC library (`lib:nvrtc`), as `make tools` installs it.
    Nvrtc,
    /// The results of the whole run (only `falsify run` has them).
    FullRun,
    /// A report from an earlier run to compare with.
    PreviousReport,
}

/// The model sizes the vocabulary knows.
pub const MODEL_SIZES: [&str; 4] = ["0.5b", "1.5b", "7b", "32b"];

impl Requirement {
    /// The vocabulary, for hints.
    pub const VOCABULARY: &'static str = "known requirements: model:0.5b, model:1.5b, model:7b, model:32b, llama.cpp, \
         ollama, cuda, gpu:<name>, tool:<program>, lib:nvrtc, full-run, previous-report";
}

impl FromStr for Requirement {
    type Err = String;

    fn from_str(s: &str) -> Result<Requirement, String> {
        let r = match s {
            "llama.cpp" => Requirement::LlamaCpp,
            "ollama" => Requirement::Ollama,
            "cuda" => Requirement::Cuda,
            "lib:nvrtc" => Requirement::Nvrtc,
            "full-run" => Requirement::FullRun,
            "previous-report" => Requirement::PreviousReport,
            _ => match s.split_once(':') {
                Some(("model", size)) if MODEL_SIZES.contains(&size) => Requirement::Model(size.into()),
                Some(("tool", name)) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                    Requirement::Tool(name.into())
                }
                Some(("gpu", name)) if !name.trim().is_empty() => Requirement::Gpu(name.into()),
                _ => return Err(format!("unknown requirement `{s}`")),
            },
        };
        Ok(r)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Model(size) => write!(f, "model:{size}"),
            Requirement::LlamaCpp => f.write_str("llama.cpp"),
            Requirement::Ollama => f.write_str("ollama"),
            Requirement::Cuda => f.write_str("cuda"),
            Requirement::Gpu(name) => write!(f, "gpu:{name}"),
            Requirement::Tool(name) => write!(f, "tool:{name}"),
            Requirement::Nvrtc => f.write_str("lib:nvrtc"),
            Requirement::FullRun => f.write_str("full-run"),
            Requirement::PreviousReport => f.write_str("previous-report"),
        }
    }
}

impl Serialize for Requirement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The model file for a size, relative to the project root.
pub fn model_path(size: &str) -> String {
    format!("models/qwen2.5-coder-{size}-instruct-q4_k_m.gguf")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocabulary_parses_and_prints_back() {
        for w in ["model:0.5b", "model:32b", "llama.cpp", "ollama", "cuda", "gpu:RTX 4090", "tool:strace", "lib:nvrtc"]
        {
            assert_eq!(w.parse::<Requirement>().unwrap().to_string(), w);
        }
        for bad in ["model:3b", "tool:", "llama", "gpu: ", "apr", "lib:cublas", ""] {
            assert!(bad.parse::<Requirement>().is_err(), "{bad}");
        }
    }
}
