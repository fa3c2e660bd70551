//! The claims: numbered, falsifiable statements about the engine, read from
//! `claims/*.toml` ([`spec`]), each judged by a registered check kind
//! ([`checks`]) against live measurements shared through a [`Context`], and
//! run one by one ([`runner`]) into a [`Outcome`] per claim.
//!
//! The verdict contract: a claim passes only when it was measured and the
//! measurement satisfies it. A missing model, tool, device or server gives
//! `skipped` with the exact reason; noise too high to decide gives
//! `inconclusive`; a failure of the harness itself gives `error`.

pub mod checks;
pub mod context;
pub mod requires;
pub mod runner;
pub mod spec;

use serde::{Deserialize, Serialize};

use crate::stats::Interval;

pub use context::Context;
pub use spec::{Claim, ClaimSet, SpecError};

/// A claim's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Measured, and the measurement satisfies the claim.
    Pass,
    /// Measured, and the measurement contradicts the claim.
    Falsified,
    /// Measured, but too noisy or too few samples to decide.
    Inconclusive,
    /// A requirement is missing here; nothing was decided.
    Skipped,
    /// The harness itself failed.
    Error,
}

impl Verdict {
    /// The verdict's name as reports write it.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Falsified => "falsified",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Skipped => "skipped",
            Verdict::Error => "error",
        }
    }
}

/// The baseline a measurement was compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineValue {
    /// Engine name (`llama.cpp`, `ollama`).
    pub engine: String,
    /// Its value of the same metric (median).
    pub value: f64,
    /// Where the baseline came from (build, package, sha256).
    pub provenance: Option<String>,
}

/// What a verdict rests on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// What was measured (`decode_ratio`, `top1_agreement`, …).
    pub metric: String,
    /// Its unit (`x`, `tok/s`, `fraction`, `count`, …).
    pub unit: String,
    /// The measured value (a median, a fraction, a count).
    pub value: Option<f64>,
    /// The predicate's operator (`>=`, `<=`, …).
    pub op: Option<String>,
    /// The predicate's threshold.
    pub threshold: Option<f64>,
    /// The value's confidence interval, when it has one.
    pub ci: Option<Interval>,
    /// How many samples or cases the value rests on.
    pub n: Option<usize>,
    /// Coefficient of variation of the samples, when they are timings.
    pub cv: Option<f64>,
    /// The raw samples (or, when they are many, the first ones: see `samples_note`).
    pub samples: Vec<f64>,
    /// Where the full samples are, when `samples` is not all of them.
    pub samples_note: Option<String>,
    /// The baseline's value and provenance.
    pub baseline: Option<BaselineValue>,
    /// Further facts a reader needs (counterexamples found, settings used).
    pub details: Vec<String>,
}

/// A claim's verdict, one human sentence, and the evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// One line: what was found, or why nothing was decided.
    pub sentence: String,
    /// The measurement behind the verdict (absent when nothing was measured).
    pub evidence: Option<Evidence>,
}

impl Outcome {
    /// A verdict from a measurement.
    pub fn measured(verdict: Verdict, sentence: impl Into<String>, evidence: Evidence) -> Outcome {
        Outcome { verdict, sentence: sentence.into(), evidence: Some(evidence) }
    }

    /// Skipped: a requirement is missing; `reason` says which and how to provide it.
    pub fn skipped(reason: impl Into<String>) -> Outcome {
        Outcome { verdict: Verdict::Skipped, sentence: reason.into(), evidence: None }
    }

    /// The harness failed; `what` says how.
    pub fn error(what: impl std::fmt::Display) -> Outcome {
        Outcome { verdict: Verdict::Error, sentence: what.to_string(), evidence: None }
    }
}

/// Why a measurement could not be taken: either something is missing here
/// (a skip) or something broke (an error). Checks use it with `?`.
#[derive(Debug, Clone, PartialEq)]
pub enum Unmet {
    /// A requirement is missing; the claim is skipped with this reason.
    Missing(String),
    /// Something failed; the claim is an error with this message.
    Failed(String),
}

impl Unmet {
    /// A failure from any displayable error.
    pub fn failed(e: impl std::fmt::Display) -> Unmet {
        Unmet::Failed(e.to_string())
    }

    /// The outcome it gives.
    pub fn outcome(self) -> Outcome {
        match self {
            Unmet::Missing(reason) => Outcome::skipped(reason),
            Unmet::Failed(what) => Outcome::error(what),
        }
    }
}
