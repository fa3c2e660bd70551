//! What a reviewer looks for first, shared by every rendering (the HTML page,
//! the Markdown summary, the table at the end of a run): the headline claims
//! with their figures, the previous run from the history, and what changed
//! since it ([`super::diff`], as `falsify diff` computes it).

use super::diff::{diff, Diff};
use crate::record::{ClaimResult, RunReport, Verdict};

/// The claims a reviewer checks first: decode (0.5B, 1.5B), prefill and time
/// to first token, each against llama.cpp measured in the same run.
pub const HEADLINE_CLAIMS: [&str; 4] = ["F084", "F035", "F083", "F036"];

/// Smallest relative change of a value without a CI that counts as a change
/// (`falsify diff --min-change`'s default).
pub const MIN_RELATIVE_CHANGE: f64 = 0.05;

/// The headline claims present in `report`, in [`HEADLINE_CLAIMS`] order.
pub fn headline_claims(report: &RunReport) -> Vec<&ClaimResult> {
    HEADLINE_CLAIMS.iter().filter_map(|id| report.claims.iter().find(|c| c.id == *id)).collect()
}

/// The claims that did not pass for a reason the run measured: falsified,
/// inconclusive or error (pending and skipped are reported apart).
pub fn failures(report: &RunReport) -> Vec<&ClaimResult> {
    report
        .claims
        .iter()
        .filter(|c| matches!(c.outcome.verdict, Verdict::Falsified | Verdict::Inconclusive | Verdict::Error))
        .collect()
}

/// The newest report of `past` taken before `report` (the history holds the
/// report itself too, which is never its own previous run).
pub fn previous<'a>(report: &RunReport, past: &'a [RunReport]) -> Option<&'a RunReport> {
    past.iter().filter(|p| p.provenance.timestamp < report.provenance.timestamp).max_by_key(|p| p.provenance.timestamp)
}

/// What changed since `previous`, when there is one.
pub fn changes(report: &RunReport, previous: Option<&RunReport>) -> Option<Diff> {
    previous.map(|p| diff(p, report, MIN_RELATIVE_CHANGE))
}

/// One claim's change in words: its verdict flip and its value's significant
/// move, "no significant change", or "first run" when nothing came before.
pub fn change_of(id: &str, changes: Option<&Diff>) -> String {
    let Some(d) = changes else { return "first run".to_owned() };
    if d.added.iter().any(|a| a == id) {
        return "new claim".to_owned();
    }
    let mut parts: Vec<String> =
        d.verdicts.iter().filter(|v| v.id == id).map(|v| format!("{} → {}", v.old.name(), v.new.name())).collect();
    let prefix = format!("{id} ");
    parts.extend(
        d.metrics
            .iter()
            .filter(|m| m.what.starts_with(&prefix))
            .map(|m| format!("{} → {} ({})", super::chart::label(m.old), super::chart::label(m.new), m.why)),
    );
    if parts.is_empty() {
        "no significant change".to_owned()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_report;

    #[test]
    fn the_previous_run_is_the_newest_before_this_one() {
        let mut old = sample_report();
        old.provenance.timestamp = 10;
        let mut older = sample_report();
        older.provenance.timestamp = 5;
        let now = sample_report();
        let past = vec![older, old, now.clone()];
        assert_eq!(previous(&now, &past).map(|p| p.provenance.timestamp), Some(10));
        assert!(previous(&now, &past[2..]).is_none(), "a report is not its own previous run");
    }

    #[test]
    fn changes_name_the_flip_and_the_move_of_one_claim() {
        let mut old = sample_report();
        old.provenance.timestamp -= 1;
        let mut new = sample_report();
        let c = new.claims.iter_mut().find(|c| c.id == "F084").unwrap();
        c.outcome.verdict = Verdict::Pass;
        let e = c.outcome.evidence.as_mut().unwrap();
        e.value = Some(2.5);
        e.ci = None;
        let d = changes(&new, Some(&old));
        let said = change_of("F084", d.as_ref());
        assert!(said.contains("falsified → pass") && said.contains("→ 2.5"), "{said}");
        assert_eq!(change_of("F061", d.as_ref()), "no significant change");
        assert_eq!(change_of("F084", None), "first run");
        assert_eq!(headline_claims(&new).iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["F084"]);
        assert_eq!(failures(&new).len(), 0);
        assert_eq!(failures(&old).iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["F084"]);
    }
}
