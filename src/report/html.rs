//! The HTML report: one self-contained file (inline CSS and SVG, no script,
//! no network) with the summary first, then the charts, then every claim with
//! its verdict badge, sentence, numbers and chart, then the provenance.
//! Filtering by verdict and category works with CSS alone (radio buttons and
//! `:has()`), so it needs no JavaScript.

use std::fmt::Write as _;

use super::chart::{label, Chart};
use crate::record::Verdict;
use crate::record::{ClaimResult, RunReport};

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A class-safe form of a category name.
fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header,section{max-width:1100px;margin:0 auto;padding:12px 20px}
header{background:#20232a;color:#fff;max-width:none}
header h1{margin:4px 0;font-size:22px} header p{margin:2px 0;color:#ccc;font-size:13px}
h2{border-bottom:2px solid #ddd;padding-bottom:4px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:110px}
.card b{display:block;font-size:26px} .card span{font-size:12px;color:#555;text-transform:uppercase}
.score b{font-size:34px}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;min-width:78px;text-align:center}
.v-pass .badge,.card.pass{background:#2ca02c;color:#fff} .v-falsified .badge,.card.falsified{background:#d62728;color:#fff}
.v-inconclusive .badge,.card.inconclusive{background:#e6a700;color:#fff} .v-skipped .badge,.card.skipped{background:#999;color:#fff}
.v-error .badge,.card.error{background:#9467bd;color:#fff}
.card.pass span,.card.falsified span,.card.inconclusive span,.card.skipped span,.card.error span{color:#fff}
.chart{background:#fff;border:1px solid #ddd;border-radius:6px;margin:10px 0;padding:6px}
.chart svg{width:100%;height:auto}
.claim{background:#fff;border:1px solid #ddd;border-left:6px solid #999;border-radius:4px;margin:8px 0;padding:8px 12px}
.claim.v-pass{border-left-color:#2ca02c} .claim.v-falsified{border-left-color:#d62728}
.claim.v-inconclusive{border-left-color:#e6a700} .claim.v-error{border-left-color:#9467bd}
.claim h3{margin:0;font-size:15px} .claim .id{font-family:monospace;margin:0 6px}
.claim .cat{font-size:12px;color:#666} .claim p{margin:6px 0}
.claim table{border-collapse:collapse;font-size:13px} .claim td,.claim th{border:1px solid #e3e3e3;padding:2px 8px;text-align:left}
.claim ul{margin:4px 0;font-size:12px;color:#444}
.filters{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;font-size:14px}
.filters input{margin-left:10px}
.filters fieldset{border:0;margin:0;padding:2px 0}
pre{white-space:pre-wrap;font-size:12px;background:#f0f0f0;padding:6px}
.recorded{font-style:italic;color:#666}
"#;

fn filter_css(categories: &[String]) -> String {
    let mut css = String::new();
    for v in Verdict::ALL {
        let n = v.name();
        let _ = writeln!(css, "body:has(#f-v-{n}:checked) .claim:not(.v-{n}){{display:none}}");
    }
    for c in categories {
        let s = slug(c);
        let _ = writeln!(css, "body:has(#f-c-{s}:checked) .claim:not(.c-{s}){{display:none}}");
    }
    css
}

fn categories(r: &RunReport) -> Vec<String> {
    let mut cats: Vec<String> = r.claims.iter().map(|c| c.category.clone()).collect();
    cats.sort();
    cats.dedup();
    cats
}

fn summary(o: &mut String, r: &RunReport) {
    let s = &r.summary;
    let _ = write!(
        o,
        "<section id=\"summary\"><h2>Summary</h2><div class=\"cards\">\
         <div class=\"card score\"><span>headline score (earned ÷ all points)</span><b>{} ({})</b>{} of {} points</div>\
         <div class=\"card\"><span>over tested points only</span><b>{}</b>{} of {} tested points</div>",
        label(s.score),
        s.grade,
        s.points_earned,
        s.points_total,
        label(s.score_of_tested),
        s.points_earned,
        s.points_tested,
    );
    for (v, n) in Verdict::ALL.iter().map(|&v| (v, s.count(v))) {
        let _ = write!(o, "<div class=\"card {0}\"><span>{0}</span><b>{n}</b></div>", v.name());
    }
    let _ = write!(
        o,
        "</div><p>{} claims in {:.0} s, {} threads, {} runs after {} warmup per benchmark{}. \
         Pending (not built), skipped (missing on this host), inconclusive and error earn no points and count in the headline score; each reason says what is missing.</p></section>",
        s.total,
        r.duration_s,
        r.settings.threads,
        r.settings.runs,
        r.settings.warmup,
        r.filter.as_deref().map(|f| format!(", filter {}", escape(f))).unwrap_or_default()
    );
}

/// A small strip plot of a claim's samples, drawn inline.
fn samples_strip(values: &[f64]) -> String {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() < 2 {
        return String::new();
    }
    let (lo, hi) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 320 34\" width=\"320\" height=\"34\" role=\"img\"><title>{} samples from {} to {}</title><line x1=\"10\" y1=\"14\" x2=\"310\" y2=\"14\" stroke=\"#ccc\"/>",
        finite.len(),
        label(lo),
        label(hi)
    );
    for v in &finite {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"14\" r=\"3\" fill=\"#1f77b4\" fill-opacity=\"0.5\"/>",
            10.0 + 300.0 * (v - lo) / span
        );
    }
    let _ = write!(
        svg,
        "<text x=\"10\" y=\"31\" font-size=\"10\">{}</text><text x=\"310\" y=\"31\" font-size=\"10\" text-anchor=\"end\">{}</text></svg>",
        label(lo),
        label(hi)
    );
    svg
}

fn claim(o: &mut String, c: &ClaimResult) {
    let v = c.outcome.verdict.name();
    let _ = write!(
        o,
        "<article class=\"claim v-{v} c-{}\" id=\"{}\"><h3><span class=\"badge\">{v}</span><span class=\"id\">{}</span>{}</h3>\
         <div class=\"cat\">{} · {} point(s) · check <code>{}</code>{}{}</div><p>{}</p>",
        slug(&c.category),
        escape(&c.id),
        escape(&c.id),
        escape(&c.title),
        escape(&c.category),
        c.points,
        escape(&c.check),
        c.profile.as_deref().map(|p| format!(" · profile {}", escape(p))).unwrap_or_default(),
        if c.requires.is_empty() { String::new() } else { format!(" · requires {}", escape(&c.requires.join(", "))) },
        escape(&c.outcome.sentence)
    );
    if let Some(e) = &c.outcome.evidence {
        let mut rows = vec![("metric", format!("{} ({})", e.metric, e.unit))];
        if let Some(x) = e.value {
            rows.push(("value", label(x)));
        }
        if let (Some(op), Some(t)) = (&e.op, e.threshold) {
            rows.push(("claim", format!("{op} {}", label(t))));
        }
        if let Some(ci) = e.ci {
            rows.push(("CI", format!("{}–{} ({}%)", label(ci.lo), label(ci.hi), label(ci.level * 100.0))));
        }
        if let Some(n) = e.n {
            rows.push(("n", n.to_string()));
        }
        if let Some(cv) = e.cv {
            rows.push(("CV", format!("{}%", label(cv * 100.0))));
        }
        if let Some(b) = &e.baseline {
            rows.push(("baseline", format!("{} {}", b.engine, label(b.value))));
        }
        let _ = write!(o, "<table>");
        for (k, val) in rows {
            let _ = write!(o, "<tr><th>{k}</th><td>{}</td></tr>", escape(&val));
        }
        let _ = write!(o, "</table>");
        if !e.samples.is_empty() {
            let _ = write!(o, "<div class=\"samples\">{}</div>", samples_strip(&e.samples));
        }
        if e.unit == "x" && e.value.is_some() {
            let _ = write!(o, "<p><a href=\"#chart-ratios\">ratio chart</a></p>");
        }
        if !e.details.is_empty() {
            let _ = write!(o, "<ul>");
            for d in &e.details {
                let _ = write!(o, "<li>{}</li>", escape(d));
            }
            let _ = write!(o, "</ul>");
        }
    }
    let _ = write!(o, "</article>");
}

fn provenance(o: &mut String, r: &RunReport) {
    let p = &r.provenance;
    let _ = write!(
        o,
        "<section id=\"provenance\"><h2>Provenance</h2><table class=\"prov\">\
         <tr><th>host</th><td>{} ({} cores, {} GiB, features {}) on {}{}</td></tr>\
         <tr><th>engine</th><td>falsify {} ({} build, kernels {}), git {}{}</td></tr>\
         <tr><th>threads</th><td>{}</td></tr><tr><th>claims files</th><td>{}</td></tr></table><h3>Models</h3><ul>",
        escape(&p.host.cpu),
        p.host.cores,
        p.host.memory_bytes >> 30,
        escape(&p.host.cpu_features.join(", ")),
        escape(&p.host.os),
        p.host.gpu.as_deref().map(|g| format!(", GPU {}", escape(g))).unwrap_or_default(),
        escape(&p.engine.version),
        escape(&p.engine.profile),
        escape(&p.engine.kernels.join(", ")),
        escape(p.engine.git_sha.as_deref().unwrap_or("unknown")),
        if p.engine.git_dirty == Some(true) { " (with uncommitted changes)" } else { "" },
        p.threads,
        escape(&r.claims_files.join(", "))
    );
    for m in &p.models {
        let _ = write!(
            o,
            "<li><code>{}</code>: {} bytes, sha256 <code>{}</code></li>",
            escape(&m.path.display().to_string()),
            m.bytes,
            escape(&m.sha256)
        );
    }
    let _ = write!(o, "</ul><h3>Baselines</h3>");
    for (name, text) in &p.baselines {
        let _ = write!(o, "<p>{}</p><pre>{}</pre>", escape(name), escape(text));
    }
    if !r.recorded.is_empty() {
        let _ = write!(o, "<h3>Recorded figures (not measured in this run)</h3><ul>");
        for f in &r.recorded {
            let _ = write!(
                o,
                "<li class=\"recorded\">{} {} {} = {} on {} ({}; <code>{}</code>): {}</li>",
                escape(&f.engine),
                escape(&f.model),
                escape(&f.metric),
                label(f.value),
                escape(&f.hardware),
                escape(&f.date),
                escape(&f.command),
                escape(&f.source)
            );
        }
        let _ = write!(o, "</ul>");
    }
    let _ = write!(o, "</section>");
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC` (proleptic Gregorian calendar).
pub fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// The whole page for `r`, with `charts` inline.
pub fn render(r: &RunReport, charts: &[Chart], _changes: Option<&super::diff::Diff>) -> String {
    let cats = categories(r);
    let s = &r.summary;
    let mut o = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>falsify report: score {} of 100 ({}), {} pending</title><style>{STYLE}{}</style></head><body>\
         <header><h1>falsify report</h1><p class=\"headline\">{}</p><p>schema {} · run at {} · {} · falsify {} git {}</p></header>",
        label(s.score),
        s.grade,
        s.pending,
        filter_css(&cats),
        escape(&s.headline()),
        r.schema,
        utc(r.provenance.timestamp),
        escape(&r.provenance.host.cpu),
        escape(&r.provenance.engine.version),
        escape(r.provenance.engine.git_sha.as_deref().map_or("unknown", |g| &g[..g.len().min(12)]))
    );
    summary(&mut o, r);
    let _ = write!(o, "<section id=\"charts\"><h2>Charts</h2>");
    // A chart with too little data says so in its own SVG.
    for c in charts {
        let _ = write!(o, "<div class=\"chart\" id=\"chart-{}\">{}</div>", c.name, c.svg);
    }
    let _ = write!(o, "</section><section id=\"claims\"><h2>Claims</h2><form class=\"filters\"><fieldset>Verdict:");
    let _ = write!(o, "<input type=\"radio\" name=\"v\" id=\"f-v-all\" checked><label for=\"f-v-all\">all</label>");
    for v in Verdict::ALL {
        let n = v.name();
        let _ = write!(o, "<input type=\"radio\" name=\"v\" id=\"f-v-{n}\"><label for=\"f-v-{n}\">{n}</label>");
    }
    let _ = write!(o, "</fieldset><fieldset>Category:");
    let _ = write!(o, "<input type=\"radio\" name=\"c\" id=\"f-c-all\" checked><label for=\"f-c-all\">all</label>");
    for c in &cats {
        let _ = write!(
            o,
            "<input type=\"radio\" name=\"c\" id=\"f-c-{}\"><label for=\"f-c-{}\">{}</label>",
            slug(c),
            slug(c),
            escape(c)
        );
    }
    let _ = write!(o, "</fieldset></form>");
    for c in &r.claims {
        claim(&mut o, c);
    }
    let _ = write!(o, "</section>");
    provenance(&mut o, r);
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_report;

    #[test]
    fn the_page_holds_summary_every_claim_charts_and_provenance_in_order() {
        let r = sample_report();
        let charts = crate::report::chart::all(&r, &[]).unwrap();
        let page = render(&r, &charts, None);
        let at = |s: &str| page.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("id=\"summary\"") < at("id=\"charts\"") && at("id=\"charts\"") < at("id=\"claims\""));
        assert!(at("id=\"claims\"") < at("id=\"provenance\""));
        for c in &r.claims {
            assert!(page.contains(&format!("id=\"{}\"", c.id)), "{}", c.id);
        }
        assert_eq!(page.matches("<svg").count(), charts.len() + 1, "one strip plot for the claim with samples");
        for outside in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
            assert!(!page.contains(outside), "the page reaches outside: {outside}");
        }
        assert!(page.contains("#f-v-falsified:checked") && page.contains("c-performance"));
    }

    #[test]
    fn timestamps_read_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_795_249_271), "2026-11-21 08:21 UTC");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let mut r = sample_report();
        r.claims[0].outcome.sentence = "<script>alert(1)</script>".into();
        assert!(!render(&r, &[], None).contains("<script>"));
    }
}
