//! The HTML report: one self-contained file (inline CSS and SVG, no script,
//! no network) that leads with what a reviewer came for: the headline score
//! with its pending, skipped and inconclusive counts, the headline claims
//! table ([`headline`]) and what changed since the previous run. Then the
//! charts, then every claim with its verdict badge, sentence, numbers, chart
//! and permalink (`#F084`), then the provenance.
//! Filtering by verdict and category works with CSS alone (radio buttons and
//! `:has()`), so it needs no JavaScript.

use std::fmt::Write as _;

use super::chart::{label, Chart};
use super::diff::Diff;
use super::headline;
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
header,section{max-width:1300px;margin:0 auto;padding:12px 20px}
header{background:#20232a;color:#fff;max-width:none}
header h1{margin:4px 0;font-size:22px} header p{margin:2px 0;color:#ccc;font-size:13px}
h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin:8px 0 8px;font-size:21px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:90px}
.card b{display:block;font-size:26px} .card span{font-size:12px;color:#555;text-transform:uppercase}
.score b{font-size:34px}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;min-width:78px;text-align:center}
.v-pass .badge,.card.pass{background:#2ca02c;color:#fff} .v-falsified .badge,.card.falsified{background:#d62728;color:#fff}
.v-inconclusive .badge,.card.inconclusive{background:#e6a700;color:#fff} .v-skipped .badge,.card.skipped{background:#999;color:#fff}
.v-error .badge,.card.error{background:#9467bd;color:#fff} .v-pending .badge,.card.pending{background:#5b7fa6;color:#fff}
.card.pass span,.card.falsified span,.card.inconclusive span,.card.skipped span,.card.pending span,.card.error span{color:#fff}
#summary p{margin:6px 0;font-size:13px;color:#444}
table.headline{border-collapse:collapse;width:100%;background:#fff;font-size:14px}
table.headline th{background:#dde6f0;text-align:left}
table.headline td,table.headline th{border:1px solid #b8c4d0;padding:4px 8px}
table.headline tbody tr:nth-child(even){background:#f1f5f9}
table.headline td:nth-child(n+2):not(:last-child){white-space:nowrap}
table.headline .why{font-size:12px;color:#555}
.changes{background:#fff8e1;border:1px solid #e8d9a8;border-radius:6px;padding:4px 12px}
#changes ul{margin:4px 0;font-size:14px} #changes h3{margin:6px 0 2px;font-size:15px} #changes p{margin:4px 0}
.claim .permalink{color:#999;text-decoration:none;margin-left:6px} .claim .permalink:hover{color:#1f77b4}
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
         <div class=\"card score\"><span>headline score (earned ÷ all points)</span><b>{} ({})</b>{} of {} points</div>",
        label(s.score),
        s.grade,
        s.points_earned,
        s.points_total,
    );
    let beside_the_score = [Verdict::Pending, Verdict::Skipped, Verdict::Inconclusive];
    let rest = Verdict::ALL.into_iter().filter(|v| !beside_the_score.contains(v));
    for v in beside_the_score.into_iter().chain(rest) {
        let _ = write!(o, "<div class=\"card {0}\"><span>{0}</span><b>{1}</b></div>", v.name(), s.count(v));
    }
    let _ = write!(
        o,
        "<div class=\"card\"><span>over tested points only</span><b>{}</b>{} of {} tested points</div>\
         </div><p>{} claims in {:.0} s, {} threads, {} runs after {} warmup per benchmark{}. \
         Pending (not built), skipped (missing on this host), inconclusive and error earn no points and count in the headline score; each reason says what is missing.</p></section>",
        label(s.score_of_tested),
        s.points_earned,
        s.points_tested,
        s.total,
        r.duration_s,
        r.settings.threads,
        r.settings.runs,
        r.settings.warmup,
        r.filter.as_deref().map(|f| format!(", filter {}", escape(f))).unwrap_or_default()
    );
}

/// The headline claims, one row each: value, CI, threshold, verdict and the
/// change since the previous run; each id links to the claim's card.
fn headline_table(o: &mut String, r: &RunReport, changes: Option<&Diff>) {
    let _ = write!(o, "<section id=\"headline-claims\"><h2>Headline claims</h2>");
    let claims = headline::headline_claims(r);
    if claims.is_empty() {
        let _ = write!(
            o,
            "<p>None of the headline claims ({}) is in this report.</p></section>",
            headline::HEADLINE_CLAIMS.join(", ")
        );
        return;
    }
    let _ = write!(
        o,
        "<table class=\"headline\"><thead><tr><th>claim</th><th>value</th><th>95% CI</th><th>threshold</th>\
         <th>verdict</th><th>change since the previous run</th></tr></thead><tbody>"
    );
    for c in claims {
        let v = c.outcome.verdict.name();
        let e = c.outcome.evidence.as_ref();
        let value = match e.and_then(|e| e.value.map(|x| (x, &e.unit))) {
            Some((x, unit)) => format!("{} {}", label(x), escape(unit)),
            None => format!("<span class=\"why\">{}</span>", escape(&c.outcome.sentence)),
        };
        let ci = e.and_then(|e| e.ci).map_or_else(
            || "—".to_owned(),
            |ci| {
                let level = if (ci.level - 0.95).abs() < 1e-9 {
                    String::new()
                } else {
                    format!(" ({}%)", label(ci.level * 100.0))
                };
                format!("{}–{}{level}", label(ci.lo), label(ci.hi))
            },
        );
        let threshold = e
            .and_then(|e| Some(format!("{} {}", escape(e.op.as_deref()?), label(e.threshold?))))
            .unwrap_or_else(|| "—".to_owned());
        let _ = write!(
            o,
            "<tr class=\"v-{v}\"><td><a href=\"#{0}\">{0}</a> {1}</td><td>{value}</td><td>{ci}</td><td>{threshold}</td>\
             <td><span class=\"badge\">{v}</span></td><td>{2}</td></tr>",
            escape(&c.id),
            escape(&c.title),
            escape(&headline::change_of(&c.id, changes)),
        );
    }
    let _ = write!(o, "</tbody></table></section>");
}

/// How many changes of each kind are listed before the rest fold away.
const CHANGES_SHOWN: usize = 5;

/// Writes `items` as a list, the first [`CHANGES_SHOWN`] open and the rest
/// folded in a `<details>` (no script), so the page's top stays short.
fn folded_list(o: &mut String, heading: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = write!(o, "<h3>{heading} ({})</h3><ul>", items.len());
    for item in items.iter().take(CHANGES_SHOWN) {
        let _ = write!(o, "<li>{item}</li>");
    }
    let _ = write!(o, "</ul>");
    if items.len() > CHANGES_SHOWN {
        let _ = write!(o, "<details><summary>{} more</summary><ul>", items.len() - CHANGES_SHOWN);
        for item in &items[CHANGES_SHOWN..] {
            let _ = write!(o, "<li>{item}</li>");
        }
        let _ = write!(o, "</ul></details>");
    }
}

/// A claim id linked to its card when the report has that claim, else plain.
fn claim_link(r: &RunReport, id: &str) -> String {
    if r.claims.iter().any(|c| c.id == id) {
        format!("<a href=\"#{0}\">{0}</a>", escape(id))
    } else {
        escape(id)
    }
}

/// "What changed" since the previous run: verdicts that flipped and metrics
/// that moved significantly (`falsify diff`'s logic), or "first run".
fn what_changed(o: &mut String, r: &RunReport, changes: Option<&Diff>) {
    let _ = write!(o, "<section id=\"changes\"><h2>What changed</h2><div class=\"changes\">");
    match changes {
        None => {
            let _ = write!(o, "<p>First run: no previous report in <code>reports/history/</code> to compare with.</p>");
        }
        Some(d) if d.verdicts.is_empty() && d.metrics.is_empty() && d.added.is_empty() && d.removed.is_empty() => {
            let _ = write!(o, "<p>Since the previous run, no verdict changed and no metric moved significantly.</p>");
        }
        Some(d) => changes_since_previous(o, r, d),
    }
    let _ = write!(o, "</div></section>");
}

/// The flips, the moves and the claims added or removed in `d`.
fn changes_since_previous(o: &mut String, r: &RunReport, d: &Diff) {
    let badge = |v: Verdict| format!("<span class=\"v-{0}\"><span class=\"badge\">{0}</span></span>", v.name());
    let flips: Vec<String> = d
        .verdicts
        .iter()
        .map(|v| format!("{} {} → {} {}", claim_link(r, &v.id), badge(v.old), badge(v.new), escape(&v.sentence)))
        .collect();
    let moves: Vec<String> = d
        .metrics
        .iter()
        .map(|m| {
            let what = match m.what.split_once(' ') {
                Some((id, rest)) if r.claims.iter().any(|c| c.id == id) => {
                    format!("{} {}", claim_link(r, id), escape(rest))
                }
                _ => escape(&m.what),
            };
            format!("{what}: {} → {} ({})", label(m.old), label(m.new), escape(&m.why))
        })
        .collect();
    folded_list(o, "Verdicts that flipped", &flips);
    folded_list(o, "Metrics that moved significantly", &moves);
    let ids = |ids: &[String]| ids.iter().map(|id| claim_link(r, id)).collect::<Vec<_>>().join(", ");
    if !d.added.is_empty() {
        let _ = write!(o, "<p>Claims added: {}</p>", ids(&d.added));
    }
    if !d.removed.is_empty() {
        let _ = write!(o, "<p>Claims removed: {}</p>", ids(&d.removed));
    }
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
        "<article class=\"claim v-{v} c-{}\" id=\"{id}\"><h3><span class=\"badge\">{v}</span><span class=\"id\">{id}</span>{}\
         <a class=\"permalink\" href=\"#{id}\" title=\"link to this claim\">#</a></h3>\
         <div class=\"cat\">{} · {} point(s) · check <code>{}</code>{}{}</div><p>{}</p>",
        slug(&c.category),
        escape(&c.title),
        escape(&c.category),
        c.points,
        escape(&c.check),
        c.profile.as_deref().map(|p| format!(" · profile {}", escape(p))).unwrap_or_default(),
        if c.requires.is_empty() { String::new() } else { format!(" · requires {}", escape(&c.requires.join(", "))) },
        escape(&c.outcome.sentence),
        id = escape(&c.id),
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
pub fn render(r: &RunReport, charts: &[Chart], changes: Option<&Diff>) -> String {
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
    headline_table(&mut o, r, changes);
    what_changed(&mut o, r, changes);
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

    /// `sample_report()` and a later run in which F084 flipped to pass and
    /// its value moved, with the changes between them.
    fn a_run_with_changes() -> (RunReport, Diff) {
        let mut old = sample_report();
        old.provenance.timestamp -= 60;
        let mut new = sample_report();
        let c = new.claims.iter_mut().find(|c| c.id == "F084").unwrap();
        c.outcome.verdict = Verdict::Pass;
        c.outcome.sentence = "decode 2.50x".into();
        let e = c.outcome.evidence.as_mut().unwrap();
        e.value = Some(2.5);
        e.ci = None;
        let d = headline::changes(&new, Some(&old)).unwrap();
        (new, d)
    }

    #[test]
    fn the_page_leads_with_headline_table_and_changes_then_charts_claims_and_provenance() {
        let (r, d) = a_run_with_changes();
        let charts = crate::report::chart::all(&r, &[]).unwrap();
        let page = render(&r, &charts, Some(&d));
        let at = |s: &str| page.find(s).unwrap_or_else(|| panic!("{s} missing"));
        let order = [
            "id=\"summary\"",
            "headline score (earned ÷ all points)",
            "<table class=\"headline\"",
            "id=\"changes\"",
            "id=\"charts\"",
            "id=\"claims\"",
            "<article",
            "id=\"provenance\"",
        ];
        for w in order.windows(2) {
            assert!(at(w[0]) < at(w[1]), "{} should come before {}", w[0], w[1]);
        }
        let cards = &page[at("<div class=\"cards\">")..at("</div><p>")];
        let score = cards.find("card score").unwrap();
        let beside: Vec<usize> =
            ["card pending", "card skipped", "card inconclusive"].map(|c| cards.find(c).unwrap()).into();
        assert!(beside.windows(2).all(|w| w[0] < w[1]) && score < beside[0], "the counts follow the score");
        assert!(beside[2] < cards.find("card pass").unwrap());
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
    fn the_headline_table_shows_value_ci_threshold_verdict_and_change() {
        let (r, d) = a_run_with_changes();
        let page = render(&sample_report(), &[], None);
        let table = &page[page.find("<table class=\"headline\"").unwrap()..page.find("id=\"changes\"").unwrap()];
        assert_eq!(table.matches("<tr class=\"v-").count(), 1, "sample_report has one headline claim: {table}");
        for cell in [
            "<a href=\"#F084\">F084</a>",
            "0.6028 x",
            "0.5957–0.6111",
            "&gt;= 2",
            "<span class=\"badge\">falsified</span>",
            "first run",
        ] {
            assert!(table.contains(cell), "{cell} missing from {table}");
        }
        let page = render(&r, &[], Some(&d));
        let table = &page[page.find("<table class=\"headline\"").unwrap()..page.find("id=\"changes\"").unwrap()];
        assert!(table.contains("2.500 x") && table.contains("<td>—</td>"), "no CI reads as a dash: {table}");
        assert!(table.contains("falsified → pass") && table.contains("0.6028 → 2.500"), "{table}");
    }

    #[test]
    fn a_report_without_headline_claims_says_so() {
        let mut r = sample_report();
        r.claims.retain(|c| !headline::HEADLINE_CLAIMS.contains(&c.id.as_str()));
        let page = render(&r, &[], None);
        assert!(page.contains("None of the headline claims (F084, F035, F083, F036) is in this report."));
        assert!(!page.contains("<table class=\"headline\""));
    }

    #[test]
    fn every_card_has_a_permalink_and_the_headline_ids_link_to_the_cards() {
        let r = sample_report();
        let page = render(&r, &[], None);
        for c in &r.claims {
            let card = page.find(&format!("id=\"{}\"><h3>", c.id)).unwrap_or_else(|| panic!("no card for {}", c.id));
            let end = card + page[card..].find("</article>").unwrap();
            assert!(page[card..end].contains(&format!("<a class=\"permalink\" href=\"#{}\"", c.id)), "{}", c.id);
            assert_eq!(page.matches(&format!("id=\"{}\"", c.id)).count(), 1, "one element is #{}", c.id);
        }
        let table = page.find("<table class=\"headline\"").unwrap();
        assert!(page[table..].find("href=\"#F084\"").unwrap() < page[table..].find("id=\"F084\"").unwrap());
    }

    #[test]
    fn what_changed_says_first_run_nothing_or_the_flips_and_moves() {
        let r = sample_report();
        let section = |page: &str| {
            let start = page.find("id=\"changes\"").unwrap();
            page[start..start + page[start..].find("</section>").unwrap()].to_owned()
        };
        assert!(section(&render(&r, &[], None)).contains("First run"));
        let same = section(&render(&r, &[], Some(&Diff::default())));
        assert!(same.contains("no verdict changed and no metric moved significantly"), "{same}");
        let (r, d) = a_run_with_changes();
        let changed = section(&render(&r, &[], Some(&d)));
        assert!(
            changed.contains("Verdicts that flipped (1)") && changed.contains("Metrics that moved significantly (1)")
        );
        assert!(changed.contains("<a href=\"#F084\">F084</a> <span class=\"v-falsified\"><span class=\"badge\">falsified</span></span> → <span class=\"v-pass\">"), "{changed}");
        assert!(changed.contains("decode_ratio: 0.6028 → 2.500"), "{changed}");
        let many = Diff {
            metrics: (0..CHANGES_SHOWN + 3)
                .map(|i| crate::report::diff::MetricChange {
                    what: format!("bench m{i}"),
                    old: 1.0,
                    new: 2.0,
                    why: "+100.0%".into(),
                })
                .collect(),
            added: vec!["F999".into()],
            ..Diff::default()
        };
        let long = section(&render(&r, &[], Some(&many)));
        assert!(
            long.contains("<details><summary>3 more</summary>")
                && long.contains(&format!("bench m{}", CHANGES_SHOWN + 2)),
            "{long}"
        );
        assert!(long.contains("Claims added: F999"), "an id without a card is not a link: {long}");
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
        r.claims[0].title = "<b>bold</b> & co".into();
        r.claims[0].outcome.evidence.as_mut().unwrap().unit = "<i>x</i>".into();
        let d = Diff {
            verdicts: vec![crate::report::diff::VerdictChange {
                id: "F084".into(),
                old: Verdict::Pass,
                new: Verdict::Falsified,
                sentence: "<script>flip</script>".into(),
            }],
            metrics: vec![crate::report::diff::MetricChange {
                what: "F084 <m>".into(),
                old: 1.0,
                new: 2.0,
                why: "<why>".into(),
            }],
            ..Diff::default()
        };
        let page = render(&r, &[], Some(&d));
        for raw in ["<script", "<b>bold", "<i>x", "<m>", "<why>"] {
            assert!(!page.contains(raw), "{raw} reached the page unescaped");
        }
        for escaped in [
            "&lt;b&gt;bold&lt;/b&gt; &amp; co",
            "&lt;i&gt;x&lt;/i&gt;",
            "&lt;script&gt;flip",
            "F084</a> &lt;m&gt;",
            "(&lt;why&gt;)",
        ] {
            assert!(page.contains(escaped), "{escaped} missing");
        }
    }
}
