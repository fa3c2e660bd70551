//! A claim's figures in words (value with unit, CI, threshold), shared by the
//! Markdown summary, and the compact table `falsify run` prints last: the
//! failures, then the headline claims with their change since the previous run.

use super::chart::label;
use super::diff::Diff;
use super::headline::{change_of, failures, headline_claims};
use crate::record::{ClaimResult, RunReport};

/// What stands in a cell that has nothing to show.
pub const NONE: &str = "—";

/// One claim's figures as a reader sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// The value with its unit (`1.538 x`), or [`NONE`].
    pub value: String,
    /// The confidence interval (`1.432–1.651`, its level added when not 95%), or [`NONE`].
    pub ci: String,
    /// The predicate's operator and threshold (`>= 2`), or [`NONE`].
    pub threshold: String,
}

impl Figures {
    /// The figures of `claim`'s evidence ([`NONE`] where it has none).
    pub fn of(claim: &ClaimResult) -> Figures {
        let e = claim.outcome.evidence.as_ref();
        let value = e
            .and_then(|e| e.value.map(|v| format!("{} {}", label(v), e.unit).trim_end().to_owned()))
            .unwrap_or_else(|| NONE.to_owned());
        let ci = e.and_then(|e| e.ci).map_or_else(
            || NONE.to_owned(),
            |ci| {
                let level = if (ci.level - 0.95).abs() > 1e-9 {
                    format!(" ({}%)", label(ci.level * 100.0))
                } else {
                    String::new()
                };
                format!("{}–{}{level}", label(ci.lo), label(ci.hi))
            },
        );
        let threshold = e
            .and_then(|e| e.threshold.map(|t| format!("{} {}", e.op.as_deref().unwrap_or("?"), label(t))))
            .unwrap_or_else(|| NONE.to_owned());
        Figures { value, ci, threshold }
    }
}

/// `s` cut to at most `max` characters, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Longest evidence sentence the end-of-run table shows.
const SENTENCE_CHARS: usize = 100;

/// Rows as columns padded to their widest cell, each line indented by two spaces.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The table `falsify run` prints before its headline line: each failure
/// (falsified, inconclusive, error) with its evidence sentence cut short, then
/// the headline claims with value, CI, threshold, verdict and `changes`.
pub fn end_of_run(report: &RunReport, changes: Option<&Diff>) -> String {
    let failed = failures(report);
    let mut out = if failed.is_empty() {
        "failures: none (no claim falsified, inconclusive or an error)\n".to_owned()
    } else {
        let rows: Vec<Vec<String>> = failed
            .iter()
            .map(|c| {
                vec![c.id.clone(), c.outcome.verdict.name().to_owned(), truncate(&c.outcome.sentence, SENTENCE_CHARS)]
            })
            .collect();
        format!("failures ({}):\n{}", failed.len(), aligned(&rows))
    };
    let headline = headline_claims(report);
    if headline.is_empty() {
        out.push_str("headline claims: none in this run\n");
        return out;
    }
    let mut rows = vec![["claim", "verdict", "value", "95% CI", "threshold", "change since previous run"]
        .map(str::to_owned)
        .to_vec()];
    rows.extend(headline.iter().map(|c| {
        let f = Figures::of(c);
        vec![c.id.clone(), c.outcome.verdict.name().to_owned(), f.value, f.ci, f.threshold, change_of(&c.id, changes)]
    }));
    out.push_str("headline claims:\n");
    out.push_str(&aligned(&rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_report;
    use crate::record::Verdict;

    #[test]
    fn figures_show_value_ci_and_threshold_or_a_dash() {
        let r = sample_report();
        let f = Figures::of(&r.claims[0]);
        assert!(f.value.ends_with(" x") && f.ci.contains('–') && f.threshold == ">= 2", "{f:?}");
        let f = Figures::of(&r.claims[1]);
        assert_eq!((f.value.as_str(), f.ci.as_str(), f.threshold.as_str()), ("2 x", NONE, ">= 1.900"));
        assert_eq!(Figures::of(&r.claims[2]).value, NONE);
    }

    #[test]
    fn long_sentences_are_cut_to_one_short_line() {
        assert_eq!(truncate("a\nb  c", 10), "a b c");
        let cut = truncate(&"é".repeat(300), 20);
        assert_eq!((cut.chars().count(), cut.ends_with('…')), (20, true));
    }

    #[test]
    fn the_end_of_run_table_lists_failures_then_headline_claims() {
        let mut r = sample_report();
        r.claims[1].outcome.verdict = Verdict::Error;
        r.claims[1].outcome.sentence = "x".repeat(500);
        let text = end_of_run(&r, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "failures (2):");
        assert!(lines[1].starts_with("  F084  falsified") && lines[2].starts_with("  F061  error"), "{text}");
        assert!(lines.iter().all(|l| l.chars().count() < 140), "{text}");
        assert_eq!(lines[3], "headline claims:");
        assert!(
            lines[5].starts_with("  F084") && lines[5].contains(">= 2") && lines[5].ends_with("first run"),
            "{text}"
        );
        r.claims.retain(|c| c.id == "F030");
        let text = end_of_run(&r, None);
        assert!(text.starts_with("failures: none") && text.contains("headline claims: none"), "{text}");
    }
}
