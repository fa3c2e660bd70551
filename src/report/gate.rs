//! The CI gate: a policy (`claims/gate.toml`) read against a run report.
//! The policy is a ratchet: a list of claims that must pass (add a claim once
//! it passes reliably), a maximum count of harness errors, a minimum headline
//! score (earned over all points) and a maximum count of pending claims
//! (raise the one and lower the other as claims get built). A required claim
//! that was skipped or is pending fails the gate: neither is a pass.

use serde::Deserialize;

use crate::record::RunReport;
use crate::record::Verdict;

/// The gate policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Claims that must pass.
    #[serde(default)]
    pub must_pass: Vec<String>,
    /// Most `error` verdicts allowed.
    #[serde(default)]
    pub max_errors: usize,
    /// Lowest headline score (points earned ÷ all points, out of 100) allowed.
    pub min_score: Option<f64>,
    /// Most `pending` verdicts (claims whose subject is not built) allowed.
    pub max_pending: Option<usize>,
}

impl Policy {
    /// Reads a policy file; errors carry file:line:column.
    pub fn load(path: &std::path::Path) -> Result<Policy, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let (line, col) = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    (before.matches('\n').count() + 1, before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1)
                })
                .unwrap_or((0, 0));
            format!("{}:{line}:{col}: {}", path.display(), e.message().trim_end())
        })
    }
}

/// Every rule of `policy` that `report` breaks, one line each (empty: the gate passes).
pub fn evaluate(report: &RunReport, policy: &Policy) -> Vec<String> {
    let mut failed = Vec::new();
    if let Some(why) = &report.interrupted {
        failed.push(format!("interrupted: the run stopped before judging every claim ({why})"));
    }
    for id in &policy.must_pass {
        match report.claims.iter().find(|c| &c.id == id) {
            None => failed.push(format!("must_pass {id}: not in the report (was it filtered out?)")),
            Some(c) if c.outcome.verdict != Verdict::Pass => {
                failed.push(format!("must_pass {id}: {} — {}", c.outcome.verdict.name(), c.outcome.sentence))
            }
            Some(_) => {}
        }
    }
    let s = &report.summary;
    if s.error > policy.max_errors {
        let which: Vec<&str> =
            report.claims.iter().filter(|c| c.outcome.verdict == Verdict::Error).map(|c| c.id.as_str()).collect();
        failed.push(format!("max_errors {}: {} claims errored ({})", policy.max_errors, s.error, which.join(", ")));
    }
    if let Some(min) = policy.min_score {
        if s.score < min {
            failed.push(format!("min_score {min}: the headline score is {:.1} ({})", s.score, s.headline()));
        }
    }
    if let Some(max) = policy.max_pending {
        if s.pending > max {
            let which: Vec<&str> =
                report.claims.iter().filter(|c| c.outcome.verdict == Verdict::Pending).map(|c| c.id.as_str()).collect();
            failed.push(format!("max_pending {max}: {} claims are pending ({})", s.pending, which.join(", ")));
        }
    }
    failed
}
