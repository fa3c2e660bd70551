//! `reports/summary.md` (also `falsify report REPORT.json --format md`): the
//! run in CommonMark with GitHub tables, for a CI step summary or a
//! pull-request comment. It holds the headline, the headline claims with
//! their figures and change since the previous run, what changed (as `falsify
//! diff` finds it), and the failures with their evidence sentence.

use std::fmt::Write;

use super::chart::label;
use super::diff::Diff;
use super::headline::{change_of, failures, headline_claims, HEADLINE_CLAIMS};
use super::html::utc;
use super::text::Figures;
use crate::record::RunReport;

/// `s` as inline Markdown text on one line: every character Markdown could
/// read as inline syntax (`|` included, so a table cell stays one cell) is
/// backslash-escaped, and line breaks become spaces. (`>` is left as it is: it
/// only opens a quote at the start of a line, where none of these texts goes.)
pub fn inline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.split_whitespace().collect::<Vec<_>>().join(" ").chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '|' | '#' | '~' | '&' | '!' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A table with `header` and `rows`, every cell escaped with [`inline`].
fn table(o: &mut String, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let line =
        |cells: Vec<String>| format!("| {} |\n", cells.iter().map(|c| inline(c)).collect::<Vec<_>>().join(" | "));
    o.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
    o.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for row in rows {
        o.push_str(&line(row));
    }
    o.push('\n');
}

/// The summary of `report`; `changes` is what changed since the previous run
/// ([`super::headline::changes`]), `None` when there was none.
pub fn render(report: &RunReport, changes: Option<&Diff>) -> String {
    let s = &report.summary;
    let p = &report.provenance;
    let mut o = format!("# falsify: {}\n\n", inline(&s.headline()));
    let git = p.engine.git_sha.as_deref().map_or("unknown", |g| &g[..g.len().min(12)]);
    let _ = writeln!(
        o,
        "{} · grade {}\n\nRun at {} on {} ({} threads, {} runs per benchmark) · falsify {} git {}\n",
        inline(&s.counts()),
        inline(&s.grade),
        utc(p.timestamp),
        inline(&p.host.cpu),
        report.settings.threads,
        report.settings.runs,
        inline(&p.engine.version),
        inline(git)
    );
    if let Some(why) = &report.interrupted {
        let _ = writeln!(o, "**Interrupted** ({}): a partial report, which the gate refuses.\n", inline(why));
    }

    o.push_str("## Headline claims\n\n");
    let headline = headline_claims(report);
    if headline.is_empty() {
        let _ = writeln!(o, "None of the headline claims ({}) is in this run.\n", HEADLINE_CLAIMS.join(", "));
    } else {
        let rows = headline.iter().map(|c| {
            let f = Figures::of(c);
            vec![
                c.id.clone(),
                c.title.clone(),
                f.value,
                f.ci,
                f.threshold,
                c.outcome.verdict.name().to_owned(),
                change_of(&c.id, changes),
            ]
        });
        table(
            &mut o,
            &["Claim", "Title", "Value", "95% CI", "Threshold", "Verdict", "Change since previous run"],
            rows,
        );
    }

    o.push_str("## What changed since the previous run\n\n");
    match changes {
        None => o.push_str("First run: no earlier report in the history to compare with.\n\n"),
        Some(d) if d == &Diff::default() => {
            o.push_str("No verdict changed and no metric changed significantly.\n\n");
        }
        Some(d) => {
            if !d.verdicts.is_empty() {
                let _ = writeln!(o, "### Verdicts that flipped ({})\n", d.verdicts.len());
                let rows = d
                    .verdicts
                    .iter()
                    .map(|v| vec![v.id.clone(), v.old.name().to_owned(), v.new.name().to_owned(), v.sentence.clone()]);
                table(&mut o, &["Claim", "Was", "Now", "Evidence"], rows);
            }
            if !d.metrics.is_empty() {
                let _ = writeln!(o, "### Metrics that moved ({})\n", d.metrics.len());
                let rows = d.metrics.iter().map(|m| vec![m.what.clone(), label(m.old), label(m.new), m.why.clone()]);
                table(&mut o, &["Metric", "Was", "Now", "Why it counts"], rows);
            }
            for (what, ids) in [("added", &d.added), ("removed", &d.removed)] {
                if !ids.is_empty() {
                    let _ = writeln!(o, "Claims {what}: {}\n", inline(&ids.join(", ")));
                }
            }
        }
    }

    let failed = failures(report);
    let _ = writeln!(o, "## Failures ({})\n", failed.len());
    if failed.is_empty() {
        o.push_str("No claim was falsified, inconclusive or an error.\n");
    } else {
        let rows = failed.iter().map(|c| {
            vec![c.id.clone(), c.title.clone(), c.outcome.verdict.name().to_owned(), c.outcome.sentence.clone()]
        });
        table(&mut o, &["Claim", "Title", "Verdict", "Evidence"], rows);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_report;
    use crate::record::{ClaimResult, Verdict};
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

    /// What a CommonMark parser (with GitHub tables) reads in `md`: the
    /// headings' text, and each table as rows of cell text (header first).
    fn parse(md: &str) -> (Vec<String>, Vec<Vec<Vec<String>>>) {
        let (mut headings, mut tables) = (Vec::new(), Vec::<Vec<Vec<String>>>::new());
        let mut text: Option<String> = None;
        for event in Parser::new_ext(md, Options::ENABLE_TABLES) {
            match event {
                Event::Start(Tag::Heading { .. } | Tag::TableCell) => text = Some(String::new()),
                Event::Start(Tag::Table(_)) => tables.push(Vec::new()),
                Event::Start(Tag::TableHead | Tag::TableRow) => tables.last_mut().unwrap().push(Vec::new()),
                Event::Text(t) | Event::Code(t) => {
                    if let Some(s) = text.as_mut() {
                        s.push_str(&t);
                    }
                }
                Event::End(TagEnd::Heading(_)) => headings.push(text.take().unwrap()),
                Event::End(TagEnd::TableCell) => {
                    tables.last_mut().unwrap().last_mut().unwrap().push(text.take().unwrap());
                }
                _ => {}
            }
        }
        (headings, tables)
    }

    fn with_headline_claims() -> crate::record::RunReport {
        let mut r = sample_report();
        for id in ["F035", "F083", "F036"] {
            r.claims.push(ClaimResult { id: id.into(), title: format!("claim {id}"), ..r.claims[0].clone() });
        }
        r.summary = r.summary_of_claims();
        r
    }

    #[test]
    fn the_summary_parses_with_headline_changes_and_failures() {
        let mut r = with_headline_claims();
        r.claims[0].title = "decode | with a pipe\nand a newline <b>*bold*</b>".into();
        r.claims[0].outcome.sentence = "ratio 0.60 | below 2 & `code` [link](x)".into();
        let (headings, tables) = parse(&render(&r, None));
        assert_eq!(headings[0], format!("falsify: {}", r.summary.headline()));
        assert_eq!(&headings[1..], ["Headline claims", "What changed since the previous run", "Failures (4)"]);
        let claims = &tables[0];
        assert_eq!(claims.len(), 5, "a header and the 4 headline claims: {claims:?}");
        assert_eq!(claims[0][0], "Claim");
        let ids: Vec<&str> = claims[1..].iter().map(|row| row[0].as_str()).collect();
        assert_eq!(ids, HEADLINE_CLAIMS);
        let f084 = &claims[1];
        assert_eq!(f084.len(), 7, "the pipe and newline stay inside one cell: {f084:?}");
        assert_eq!(f084[1], "decode | with a pipe and a newline <b>*bold*</b>");
        assert_eq!((f084[4].as_str(), f084[5].as_str(), f084[6].as_str()), (">= 2", "falsified", "first run"));
        let failed = &tables[1];
        assert_eq!(failed.len(), 5);
        assert_eq!(
            failed[1],
            ["F084", &r.claims[0].title.replace('\n', " "), "falsified", &r.claims[0].outcome.sentence]
        );
    }

    #[test]
    fn the_summary_names_flipped_verdicts_and_moved_metrics() {
        let mut old = with_headline_claims();
        old.provenance.timestamp -= 1;
        let mut new = with_headline_claims();
        new.claims[0].outcome.verdict = Verdict::Pass;
        let e = new.claims[0].outcome.evidence.as_mut().unwrap();
        (e.value, e.ci) = (Some(2.5), None);
        new.claims.retain(|c| c.id != "F097");
        new.summary = new.summary_of_claims();
        let d = super::super::headline::changes(&new, Some(&old));
        let md = render(&new, d.as_ref());
        let (headings, tables) = parse(&md);
        assert!(headings.contains(&"Verdicts that flipped (1)".to_owned()), "{headings:?}");
        assert!(headings.contains(&"Metrics that moved (1)".to_owned()), "{headings:?}");
        assert!(tables[0][1][6].contains("falsified → pass"), "{:?}", tables[0][1]);
        assert_eq!(tables[1][1][..3], ["F084", "falsified", "pass"]);
        assert_eq!(tables[2][1][0], "F084 decode_ratio");
        assert!(md.contains("Claims removed: F097"), "{md}");
        assert!(render(&old, Some(&Diff::default())).contains("No verdict changed"));
    }

    #[test]
    fn a_run_without_headline_claims_or_failures_says_so() {
        let mut r = sample_report();
        r.claims.retain(|c| c.outcome.verdict != Verdict::Falsified);
        r.summary = r.summary_of_claims();
        r.interrupted = Some("SIGINT".into());
        let md = render(&r, None);
        assert!(md.contains("None of the headline claims (F084, F035, F083, F036)"), "{md}");
        assert!(md.contains("## Failures (0)") && md.contains("No claim was falsified"), "{md}");
        assert!(md.contains("**Interrupted** (SIGINT)"), "{md}");
        assert!(parse(&md).1.is_empty());
    }
}
