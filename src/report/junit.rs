//! `reports/junit.xml`: the run as JUnit XML, which GitLab, Jenkins,
//! Buildkite and GitHub test reporters read. One `<testcase>` per claim
//! (classname its category, name `ID title`, time its duration): a pass is a
//! passed case; falsified, inconclusive and error are failures carrying the
//! evidence sentence; pending and skipped are skipped with their reason.

use std::fmt::Write;

use crate::record::{ClaimResult, RunReport, Verdict};

/// `s` as XML 1.0 text or attribute value: markup characters as references,
/// line breaks and tabs as character references (kept in attributes too), and
/// characters XML 1.0 cannot hold (other control characters, U+FFFE, U+FFFF)
/// as U+FFFD.
fn escape(s: &str) -> String {
    let kept: String = s
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => c,
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect();
    super::html::escape(&kept).replace('\n', "&#10;").replace('\r', "&#13;").replace('\t', "&#9;")
}

/// Milliseconds as JUnit's seconds (0 for a duration that is not a finite, non-negative number).
fn seconds(ms: f64) -> String {
    format!("{:.3}", if ms.is_finite() && ms > 0.0 { ms / 1000.0 } else { 0.0 })
}

fn testcase(o: &mut String, c: &ClaimResult) {
    let _ = write!(
        o,
        "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
        escape(&c.category),
        escape(&format!("{} {}", c.id, c.title)),
        seconds(c.duration_ms)
    );
    let sentence = escape(&c.outcome.sentence);
    let verdict = c.outcome.verdict.name();
    match c.outcome.verdict {
        Verdict::Pass => o.push_str("/>\n"),
        Verdict::Skipped | Verdict::Pending => {
            let _ = writeln!(o, ">\n      <skipped message=\"{verdict}: {sentence}\"/>\n    </testcase>");
        }
        Verdict::Falsified | Verdict::Inconclusive | Verdict::Error => {
            let predicate = c.outcome.evidence.as_ref().map(|e| e.predicate()).unwrap_or_default();
            let _ = writeln!(
                o,
                ">\n      <failure message=\"{sentence}\" type=\"{verdict}\">{verdict}: {sentence}\n{}</failure>\n    </testcase>",
                escape(&predicate)
            );
        }
    }
}

/// The JUnit XML of `report`: one `<testsuite>` whose counts are the
/// report's (tests: every claim; failures: falsified, inconclusive and error;
/// skipped: skipped and pending; errors: 0, as every harness error is a
/// failing claim) and whose time is the run's wall time.
pub fn render(report: &RunReport) -> String {
    let s = &report.summary;
    let failures = s.falsified + s.inconclusive + s.error;
    let skipped = s.skipped + s.pending;
    let time = seconds(report.duration_s * 1000.0);
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        o,
        "<testsuites name=\"falsify\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time}\">",
        s.total
    );
    let _ = writeln!(
        o,
        "  <testsuite name=\"falsify\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time}\">",
        s.total
    );
    o.push_str("    <properties>\n");
    let git = report.provenance.engine.git_sha.as_deref().unwrap_or("unknown");
    for (name, value) in [
        ("headline", s.headline()),
        ("score", format!("{:.1}", s.score)),
        ("grade", s.grade.clone()),
        ("git_sha", git.to_owned()),
        ("host_cpu", report.provenance.host.cpu.clone()),
    ] {
        let _ = writeln!(o, "      <property name=\"{name}\" value=\"{}\"/>", escape(&value));
    }
    o.push_str("    </properties>\n");
    for c in &report.claims {
        testcase(&mut o, c);
    }
    o.push_str("  </testsuite>\n</testsuites>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_report;
    use crate::record::Outcome;

    fn attr(node: roxmltree::Node, name: &str) -> usize {
        node.attribute(name).unwrap().parse().unwrap()
    }

    #[test]
    fn junit_counts_equal_the_reports_and_every_verdict_maps() {
        let mut r = sample_report();
        let mut odd = r.claims[1].clone();
        odd.id = "F999".into();
        odd.title = "quotes \" ' <tags> & amps\u{1}".into();
        odd.outcome = Outcome::error("line one\nline two <x> & \"y\"");
        odd.duration_ms = f64::NAN;
        r.claims.push(odd);
        r.claims[1].outcome.verdict = Verdict::Inconclusive;
        r.summary = r.summary_of_claims();
        let xml = render(&r);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
        let s = &r.summary;
        assert_eq!(attr(suite, "tests"), s.total);
        assert_eq!(attr(suite, "failures"), s.falsified + s.inconclusive + s.error);
        assert_eq!(attr(suite, "skipped"), s.skipped + s.pending);
        assert_eq!(attr(suite, "errors"), 0);
        let cases: Vec<_> = suite.children().filter(|n| n.has_tag_name("testcase")).collect();
        assert_eq!(cases.len(), r.claims.len());
        let child = |i: usize| cases[i].children().find(|n| n.is_element()).map(|n| n.tag_name().name());
        assert_eq!(
            (child(0), child(1), child(2), child(3), child(4)),
            (Some("failure"), Some("failure"), Some("skipped"), Some("skipped"), Some("failure"))
        );
        assert_eq!(cases[0].attribute("classname"), Some("performance"));
        assert_eq!(cases[0].attribute("name"), Some("F084 claim F084"));
        let time: f64 = cases[0].attribute("time").unwrap().parse().unwrap();
        assert!((time - 0.0015).abs() < 0.001, "{time}");
        let odd = cases[4];
        assert_eq!(odd.attribute("name"), Some("F999 quotes \" ' <tags> & amps\u{fffd}"));
        assert_eq!(odd.attribute("time"), Some("0.000"));
        let failure = odd.children().find(|n| n.has_tag_name("failure")).unwrap();
        assert_eq!(failure.attribute("message"), Some("line one\nline two <x> & \"y\""));
        assert_eq!(failure.attribute("type"), Some("error"));
        let reason = cases[2].children().find(|n| n.has_tag_name("skipped")).unwrap().attribute("message");
        assert_eq!(reason, Some("skipped: cuda: no CUDA device"));
    }
}
