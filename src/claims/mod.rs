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

pub use crate::record::{BaselineValue, Evidence, Outcome, Verdict};
pub use context::Context;
pub use spec::{Claim, ClaimSet, SpecError};

/// Why a measurement could not be taken: either something is missing here
/// (a skip) or something broke (an error). Checks use it with `?`.
#[derive(Debug, Clone, PartialEq)]
pub enum Unmet {
    /// A requirement is missing; the claim is skipped with this reason.
    Missing(String),
    /// Something failed; the claim is an error with this message.
    Failed(String),
}

impl From<crate::engines::Unavailable> for Unmet {
    /// An engine missing here is a skip; a broken one is an error.
    fn from(e: crate::engines::Unavailable) -> Unmet {
        match e {
            crate::engines::Unavailable::Missing(m) => Unmet::Missing(m),
            crate::engines::Unavailable::Failed(m) => Unmet::Failed(m),
        }
    }
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
