//! The CI gate: a policy (`claims/gate.toml`) read against a run report.
//! The policy is a ratchet: a list of claims that must pass (add a claim once
//! it passes reliably), a maximum count of harness errors, a minimum headline
//! score (earned over all points) and a maximum count of pending claims
//! (raise the one and lower the other as claims get built). A required claim
//! that was skipped or is pending fails the gate: neither is a pass.
//!
//! The gate trusts nothing the report says about itself: it recomputes the
//! counts, points and score from the claims, refuses a report whose summary
//! disagrees with them or whose claim ids repeat, and re-decides every pass
//! from its own evidence (value, operator, threshold, interval).

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::record::RunReport;
use crate::record::Verdict;

/// The gate policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Claims that must pass.
    pub must_pass: Vec<String>,
    /// Most `error` verdicts allowed.
    pub max_errors: usize,
    /// Lowest headline score (points earned ÷ all points, out of 100) allowed.
    pub min_score: Option<f64>,
    /// Most `pending` verdicts (claims whose subject is not built) allowed.
    pub max_pending: Option<usize>,
}

/// The policy file as written, with the place of each value that is checked after parsing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    must_pass: Vec<String>,
    #[serde(default)]
    max_errors: usize,
    min_score: Option<Spanned<f64>>,
    max_pending: Option<usize>,
}

/// `path:line:column: message` for byte range `span` of `text`.
fn located(path: &Path, text: &str, span: Range<usize>, message: &str) -> String {
    let (line, column) = crate::util::line_col(text, span.start);
    format!("{}:{line}:{column}: {}", path.display(), message.trim_end())
}

impl Policy {
    /// Reads a policy file (size-limited; a non-UTF-8 byte is named by its
    /// offset); errors carry file:line:column. A `min_score` that is not a
    /// number from 0 to 100 (NaN, infinite) is refused: no score could fail it.
    pub fn load(path: &Path) -> Result<Policy, String> {
        let text = crate::util::read_text_limited(path, crate::util::MAX_TEXT_FILE_BYTES).map_err(|e| e.to_string())?;
        let raw: RawPolicy =
            toml::from_str(&text).map_err(|e| located(path, &text, e.span().unwrap_or(0..0), e.message()))?;
        if let Some(min) = &raw.min_score {
            if !(0.0..=100.0).contains(min.get_ref()) {
                let message = format!("min_score {} is not a score from 0 to 100", min.get_ref());
                return Err(located(path, &text, min.span(), &message));
            }
        }
        Ok(Policy {
            must_pass: raw.must_pass,
            max_errors: raw.max_errors,
            min_score: raw.min_score.map(Spanned::into_inner),
            max_pending: raw.max_pending,
        })
    }
}

/// Every rule of `policy` that `report` breaks, one line each (empty: the
/// gate passes). Counts, points and score are recomputed from the claims
/// ([`RunReport::summary_of_claims`]); every place the report contradicts
/// itself ([`RunReport::inconsistencies`]) is a broken rule of its own.
pub fn evaluate(report: &RunReport, policy: &Policy) -> Vec<String> {
    let mut failed = Vec::new();
    if let Some(why) = &report.interrupted {
        failed.push(format!("interrupted: the run stopped before judging every claim ({why})"));
    }
    failed.extend(report.inconsistencies().into_iter().map(|why| format!("inconsistent report: {why}")));
    for id in &policy.must_pass {
        match report.claims.iter().find(|c| &c.id == id) {
            None => failed.push(format!("must_pass {id}: not in the report (was it filtered out?)")),
            Some(c) if c.outcome.verdict != Verdict::Pass => {
                failed.push(format!("must_pass {id}: {} — {}", c.outcome.verdict.name(), c.outcome.sentence))
            }
            Some(_) => {}
        }
    }
    let s = report.summary_of_claims();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_report;
    use crate::record::Outcome;

    fn policy(must_pass: &[&str]) -> Policy {
        Policy {
            must_pass: must_pass.iter().map(|id| id.to_string()).collect(),
            max_errors: 0,
            min_score: Some(5.0),
            max_pending: Some(1),
        }
    }

    /// Whether some failed rule contains every one of `needles`.
    fn fails_with(report: &RunReport, p: &Policy, needles: &[&str]) -> bool {
        let failed = evaluate(report, p);
        failed.iter().any(|f| needles.iter().all(|n| f.contains(n))) || panic!("{needles:?} not in {failed:#?}")
    }

    #[test]
    fn an_honest_report_passes() {
        assert_eq!(evaluate(&sample_report(), &policy(&["F061"])), Vec::<String>::new());
    }

    #[test]
    fn an_error_verdict_counts_whatever_the_summary_says() {
        let mut r = sample_report();
        r.claims[0].outcome = Outcome::error("the check crashed");
        assert_eq!(r.summary.error, 0, "the summary still says no claim errored");
        assert!(fails_with(&r, &policy(&[]), &["summary.error is 0, but the claims give 1"]));
        assert!(fails_with(&r, &policy(&[]), &["max_errors 0: 1 claims errored (F084)"]));
    }

    #[test]
    fn a_forged_score_is_refused_and_the_recomputed_one_judged() {
        let mut r = sample_report();
        r.summary.score = 99.0;
        r.summary.grade = "A".into();
        assert!(fails_with(&r, &policy(&[]), &["summary.score is 99, but the claims give"]));
        assert!(fails_with(&r, &policy(&[]), &["summary.grade is \"A\", but the claims give \"F\""]));
        let strict = Policy { min_score: Some(50.0), ..policy(&[]) };
        assert!(fails_with(&r, &strict, &["min_score 50: the headline score is 11.1"]));
    }

    #[test]
    fn a_pass_that_its_evidence_contradicts_is_refused() {
        let mut r = sample_report();
        let e = r.claims[1].outcome.evidence.as_mut().unwrap();
        e.value = Some(0.5);
        e.threshold = Some(1.0);
        assert!(fails_with(&r, &policy(&["F061"]), &["claim F061: verdict pass", "decides falsified", "0.5 >= 1"]));
        // A pass with no evidence, no value or an interval straddling the threshold is no pass either.
        let mut r = sample_report();
        r.claims[1].outcome.evidence = None;
        assert!(fails_with(&r, &policy(&[]), &["claim F061: verdict pass, but it has no evidence"]));
        let mut r = sample_report();
        r.claims[1].outcome.evidence.as_mut().unwrap().value = None;
        assert!(fails_with(&r, &policy(&[]), &["F061", "no value"]));
        let mut r = sample_report();
        r.claims[1].outcome.evidence.as_mut().unwrap().ci =
            Some(crate::stats::Interval { lo: 1.5, hi: 2.5, level: 0.95 });
        assert!(fails_with(&r, &policy(&[]), &["F061", "decides inconclusive"]));
    }

    #[test]
    fn a_repeated_claim_id_is_refused() {
        let mut r = sample_report();
        let mut copy = r.claims[0].clone();
        copy.id = "F061".into();
        r.claims.push(copy);
        r.summary = r.summary_of_claims();
        assert!(fails_with(&r, &policy(&["F061"]), &["claim F061 appears 2 times"]));
    }

    fn load_text(name: &str, text: &[u8]) -> Result<Policy, String> {
        let dir = std::env::temp_dir().join(format!("falsify-gate-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gate.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = Policy::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        loaded
    }

    #[test]
    fn policies_that_no_report_could_fail_are_refused_at_their_place() {
        let ok = load_text("ok", b"must_pass = [\"F061\"]\nmin_score = 30.0\n").unwrap();
        assert_eq!((ok.min_score, ok.max_errors), (Some(30.0), 0));
        for (value, name) in [("nan", "nan"), ("+inf", "inf"), ("-inf", "neginf"), ("101.0", "over")] {
            let text = format!("must_pass = []\nmin_score = {value}\n");
            let e = load_text(name, text.as_bytes()).unwrap_err();
            assert!(e.contains("gate.toml:2:13: min_score") && e.contains("not a score from 0 to 100"), "{e}");
        }
        let e = load_text("typo", b"max_error = 1\n").unwrap_err();
        assert!(e.contains("gate.toml:1:1: unknown field"), "{e}");
    }

    #[test]
    fn a_non_utf8_policy_names_the_byte_offset() {
        let e = load_text("utf8", b"must_pass = [\"F0\xff1\"]\n").unwrap_err();
        assert!(e.contains("gate.toml") && e.contains("offset 16"), "{e}");
    }
}
