//! `falsify diff OLD NEW`: the claims whose verdict changed, claims added or
//! removed, and the metrics that changed significantly: both values have
//! confidence intervals and they do not overlap, or (without intervals) the
//! value moved by more than a relative threshold.

use std::fmt;

use super::chart::label;
use crate::record::RunReport;
use crate::record::Verdict;
use crate::stats::Interval;

/// A claim whose verdict changed.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictChange {
    /// Claim id.
    pub id: String,
    /// Old verdict.
    pub old: Verdict,
    /// New verdict.
    pub new: Verdict,
    /// The new evidence sentence.
    pub sentence: String,
}

/// A metric that changed significantly.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricChange {
    /// What it is (`F084 decode_ratio`, `bench 0.5b p32/n128 falsify decode_tok_s`).
    pub what: String,
    /// Old value.
    pub old: f64,
    /// New value.
    pub new: f64,
    /// Why the change counts.
    pub why: String,
}

/// Everything that changed between two reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// Claims whose verdict changed.
    pub verdicts: Vec<VerdictChange>,
    /// Metrics that changed significantly.
    pub metrics: Vec<MetricChange>,
    /// Claims only in the new report.
    pub added: Vec<String>,
    /// Claims only in the old report.
    pub removed: Vec<String>,
}

/// Whether `old → new` is significant: non-overlapping intervals when both
/// have one, else a relative change above `min_relative` (any change when old is 0).
fn significant(
    old: f64,
    new: f64,
    old_ci: Option<Interval>,
    new_ci: Option<Interval>,
    min_relative: f64,
) -> Option<String> {
    if !(old.is_finite() && new.is_finite()) || old == new {
        return None;
    }
    match (old_ci, new_ci) {
        (Some(a), Some(b)) => (a.hi < b.lo || b.hi < a.lo).then(|| {
            format!("95% CIs do not overlap ({}–{} vs {}–{})", label(a.lo), label(a.hi), label(b.lo), label(b.hi))
        }),
        _ => {
            let rel = if old == 0.0 { f64::INFINITY } else { (new - old) / old.abs() };
            (rel.abs() > min_relative).then(|| format!("{:+.1}% (no CI on both sides)", rel * 100.0))
        }
    }
}

/// The changes from `old` to `new`.
pub fn diff(old: &RunReport, new: &RunReport, min_relative: f64) -> Diff {
    let mut d = Diff::default();
    for n in &new.claims {
        let Some(o) = old.claims.iter().find(|o| o.id == n.id) else {
            d.added.push(n.id.clone());
            continue;
        };
        if o.outcome.verdict != n.outcome.verdict {
            d.verdicts.push(VerdictChange {
                id: n.id.clone(),
                old: o.outcome.verdict,
                new: n.outcome.verdict,
                sentence: n.outcome.sentence.clone(),
            });
        }
        if let (Some(oe), Some(ne)) = (&o.outcome.evidence, &n.outcome.evidence) {
            if let (Some(a), Some(b), true) = (oe.value, ne.value, oe.metric == ne.metric) {
                if let Some(why) = significant(a, b, oe.ci, ne.ci, min_relative) {
                    d.metrics.push(MetricChange { what: format!("{} {}", n.id, ne.metric), old: a, new: b, why });
                }
            }
        }
    }
    d.removed = old.claims.iter().filter(|o| !new.claims.iter().any(|n| n.id == o.id)).map(|o| o.id.clone()).collect();
    for nb in &new.benches {
        let Some(ob) = old.benches.iter().find(|b| b.spec == nb.spec) else { continue };
        for ns in &nb.result.series {
            let Some(os) = ob.result.series.iter().find(|s| s.engine == ns.engine && s.metric == ns.metric) else {
                continue;
            };
            let (a, b) = (&os.summary, &ns.summary);
            if let Some(why) = significant(a.mean, b.mean, Some(a.mean_ci95), Some(b.mean_ci95), min_relative) {
                d.metrics.push(MetricChange {
                    what: format!("bench {} {} {} (mean)", nb.spec, ns.engine, ns.metric),
                    old: a.mean,
                    new: b.mean,
                    why,
                });
            }
        }
    }
    d
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.verdicts.is_empty() && self.metrics.is_empty() && self.added.is_empty() && self.removed.is_empty() {
            return writeln!(f, "no verdict changed and no metric changed significantly");
        }
        if !self.verdicts.is_empty() {
            writeln!(f, "verdicts changed ({}):", self.verdicts.len())?;
            for v in &self.verdicts {
                writeln!(f, "  {} {} → {}: {}", v.id, v.old.name(), v.new.name(), v.sentence)?;
            }
        }
        if !self.metrics.is_empty() {
            writeln!(f, "significant metric changes ({}):", self.metrics.len())?;
            for m in &self.metrics {
                writeln!(f, "  {}: {} → {} ({})", m.what, label(m.old), label(m.new), m.why)?;
            }
        }
        if !self.added.is_empty() {
            writeln!(f, "claims added: {}", self.added.join(", "))?;
        }
        if !self.removed.is_empty() {
            writeln!(f, "claims removed: {}", self.removed.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_report;

    #[test]
    fn identical_reports_have_no_changes() {
        let r = sample_report();
        let d = diff(&r, &r, 0.05);
        assert_eq!(d, Diff::default());
        assert!(d.to_string().starts_with("no verdict changed"));
    }

    #[test]
    fn verdicts_metrics_and_claim_sets_are_compared() {
        let old = sample_report();
        let mut new = sample_report();
        new.claims[0].outcome.verdict = Verdict::Pass;
        let e = new.claims[0].outcome.evidence.as_mut().unwrap();
        e.value = Some(2.1);
        e.ci = Some(Interval { lo: 2.05, hi: 2.2, level: 0.95 });
        new.claims[1].outcome.evidence.as_mut().unwrap().value = Some(2.02); // +1%: below 5%, no CI
        new.claims.pop();
        let s = &mut new.benches[0].result.series[1];
        s.summary.mean *= 1.5;
        s.summary.mean_ci95 = Interval { lo: s.summary.mean - 0.1, hi: s.summary.mean + 0.1, level: 0.95 };
        let d = diff(&old, &new, 0.05);
        assert_eq!(d.verdicts.len(), 1);
        assert_eq!((d.verdicts[0].old, d.verdicts[0].new), (Verdict::Falsified, Verdict::Pass));
        let whats: Vec<&str> = d.metrics.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(whats, ["F084 decode_ratio", "bench 0.5b p32 n128 vs llama.cpp falsify decode_tok_s (mean)"]);
        assert_eq!(d.removed, ["F097"]);
        let text = d.to_string();
        assert!(text.contains("F084 falsified → pass") && text.contains("do not overlap"), "{text}");
    }

    #[test]
    fn the_relative_rule_applies_without_intervals() {
        assert!(significant(10.0, 10.4, None, None, 0.05).is_none());
        assert!(significant(10.0, 11.0, None, None, 0.05).unwrap().contains("+10.0%"));
        assert!(significant(0.0, 1.0, None, None, 0.05).is_some());
        let a = Interval { lo: 9.0, hi: 11.0, level: 0.95 };
        let b = Interval { lo: 10.5, hi: 12.0, level: 0.95 };
        assert!(significant(10.0, 11.2, Some(a), Some(b), 0.05).is_none(), "overlapping CIs are not a change");
    }
}
