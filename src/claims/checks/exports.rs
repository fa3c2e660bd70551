//! Checks of the report and its exports, judged on a draft of this run's
//! report (every claim evaluated so far, the benchmarks and the brick
//! profile): the JSON validates against the published schema (M020), every
//! SVG is valid (F117) and the brick chart has data (F111), the numbers the
//! charts show (their text and their bars' lengths, read back from the SVG)
//! equal values this module computes from the report itself (F118), all exports are written and parse
//! (F119), and a metric is present in the report (F116).

use std::path::Path;

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::{kind, Check, Kind, NoParams};
use crate::claims::{Context, Outcome, Unmet, Verdict};
use crate::record::RunReport;
use crate::report::{chart, csv, schema, svg, write_exports};
use crate::stats::Op;

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![kind::<ReportSchema>(), kind::<SvgValid>(), kind::<ChartValues>(), kind::<Exports>(), kind::<ReportMetric>()]
}

/// The report of the claims evaluated so far in a full run.
fn draft(cx: &mut Context) -> Result<RunReport, Unmet> {
    let results = cx
        .full_run
        .clone()
        .ok_or_else(|| Unmet::Missing("full-run: judged on the run's own report; `falsify run` evaluates it".into()))?;
    Ok(crate::claims::runner::assemble_report(cx, Vec::new(), None, 0.0, results))
}

/// `report_schema`: the run's report validates against `reports/schema/report-v2.json`.
pub struct ReportSchema;

/// Judges a report document against the published schema.
pub fn judge_schema(doc: &serde_json::Value) -> Outcome {
    let claims = doc["claims"].as_array().map_or(0, Vec::len);
    let violations = schema::violations(doc).iter().map(ToString::to_string).collect();
    let mut out = judge::no_violations("schema_violations", 1 + claims, violations);
    if out.verdict == Verdict::Pass {
        out.sentence = format!("the report ({claims} claims) validates against {}", schema::SCHEMA_PATH);
    }
    out
}

impl Check for ReportSchema {
    const NAME: &'static str = "report_schema";
    const DOC: &'static str = "the run's report validates against its published JSON Schema";
    const PARAMS: &'static str = "none";
    type Params = NoParams;

    fn run(_: &NoParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let doc = serde_json::to_value(draft(cx)?).map_err(Unmet::failed)?;
        Ok(judge_schema(&doc))
    }
}

/// Parameters of `svg_valid`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvgParams {
    /// Charts that must plot data (e.g. `bricks`: the brick profile is taken first).
    #[serde(default)]
    pub require: Vec<String>,
    /// The model whose brick profile a required `bricks` chart needs.
    #[serde(default = "default_model")]
    pub model: String,
}

fn default_model() -> String {
    "0.5b".into()
}

/// `svg_valid`: every chart parses as XML with an `svg` root and a viewBox, and the required ones plot data.
pub struct SvgValid;

/// Judges charts: each must read back as valid SVG; each of `require` must exist and plot something.
pub fn judge_svgs(charts: &[chart::Chart], require: &[String]) -> Outcome {
    let mut violations: Vec<String> =
        charts.iter().filter_map(|c| svg::read(&c.svg).err().map(|e| format!("{}.svg: {e}", c.name))).collect();
    for name in require {
        match charts.iter().find(|c| c.name == name) {
            None => violations.push(format!("no {name} chart was drawn")),
            Some(c) if c.values.is_empty() => violations.push(format!("the {name} chart plots no data")),
            Some(_) => {}
        }
    }
    judge::no_violations("invalid_svgs", charts.len() + require.len(), violations)
}

impl Check for SvgValid {
    const NAME: &'static str = "svg_valid";
    const DOC: &'static str = "every chart is valid SVG (XML, svg root, viewBox), and the required charts plot data";
    const PARAMS: &'static str = "require (chart names, optional), model (for the bricks chart, default 0.5b)";
    type Params = SvgParams;

    fn run(p: &SvgParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        if p.require.iter().any(|c| c == "bricks") {
            cx.bricks(&p.model)?;
        }
        let report = draft(cx)?;
        let charts = chart::all(&report, &[]).map_err(Unmet::failed)?;
        Ok(judge_svgs(&charts, &p.require))
    }
}

/// `chart_values`: every number a chart shows, read back from its SVG, equals the report's.
pub struct ChartValues;

/// A number a chart shows, read back from its SVG.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    /// The row label (bar charts) or mark name (`p99`) it is drawn with.
    pub label: String,
    /// The number its text says (NaN when the row has no number drawn).
    pub text: f64,
    /// The bar's length in axis units, where a bar is drawn on the row.
    pub bar: Option<f64>,
    /// Axis units per pixel of the chart's value axis (0 without one).
    pub unit_per_px: f64,
}

struct SvgText {
    x: f64,
    y: f64,
    anchor: String,
    text: String,
}

/// The value axis of a bar chart: its numeric tick labels, centred on one
/// line. Returns (pixel of value 0, axis units per pixel).
fn value_axis(texts: &[SvgText]) -> Option<(f64, f64)> {
    let ticks: Vec<(f64, f64, f64)> = texts
        .iter()
        .filter(|t| t.anchor == "middle")
        .filter_map(|t| Some((t.y, t.x, t.text.parse::<f64>().ok()?)))
        .collect();
    let line = ticks.iter().map(|t| t.0).max_by_key(|y| ticks.iter().filter(|t| t.0 == *y).count())?;
    let on_line: Vec<_> = ticks.iter().filter(|t| t.0 == line).collect();
    let (first, last) = (on_line.first()?, on_line.last()?);
    if on_line.len() < 2 || last.2 == first.2 || last.1 == first.1 {
        return None;
    }
    let per_px = (last.2 - first.2) / (last.1 - first.1);
    Some((first.1 - first.2 / per_px, per_px))
}

/// Every labelled number an SVG chart shows: each bar row (its label, the
/// number drawn on its line, and the length of the bar starting at the value
/// axis's zero, in axis units from the tick labels) and each mark drawn as
/// `name number` (the latency percentiles).
pub fn shown_values(svg: &str) -> Result<Vec<Shown>, String> {
    let doc = roxmltree::Document::parse(svg).map_err(|e| format!("not well-formed XML: {e}"))?;
    let num = |n: &roxmltree::Node, a: &str| n.attribute(a).and_then(|v| v.parse::<f64>().ok());
    let texts: Vec<SvgText> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| {
            Some(SvgText {
                x: num(&n, "x")?,
                y: num(&n, "y")?,
                anchor: n.attribute("text-anchor").unwrap_or("start").to_owned(),
                text: n
                    .descendants()
                    .filter_map(|t| t.text().filter(|_| t.is_text()))
                    .collect::<String>()
                    .trim()
                    .into(),
            })
        })
        .collect();
    let rects: Vec<[f64; 4]> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter_map(|n| Some([num(&n, "x")?, num(&n, "y")?, num(&n, "width")?, num(&n, "height")?]))
        .collect();
    let axis = value_axis(&texts);
    let mut shown = Vec::new();
    let is_number = |t: &str| t.parse::<f64>().is_ok();
    for row in texts.iter().filter(|t| t.anchor == "end" && !t.text.is_empty() && !is_number(&t.text)) {
        let text = texts
            .iter()
            .filter(|t| t.anchor == "start" && (t.y - row.y).abs() <= 3.0)
            .find_map(|t| t.text.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        let bar = axis.and_then(|(zero, per_px)| {
            rects
                .iter()
                .find(|[x, y, _, h]| (x - zero).abs() <= 1.0 && *y <= row.y && row.y <= y + h)
                .map(|r| r[2] * per_px)
        });
        shown.push(Shown { label: row.text.clone(), text, bar, unit_per_px: axis.map_or(0.0, |a| a.1) });
    }
    for t in texts.iter().filter(|t| t.anchor == "start") {
        if let Some((name, v)) = t.text.split_once(' ') {
            if let Ok(v) = v.parse::<f64>() {
                shown.push(Shown { label: name.to_owned(), text: v, bar: None, unit_per_px: 0.0 });
            }
        }
    }
    Ok(shown)
}

/// The arithmetic mean of raw samples, computed here rather than read from the
/// series' summary that the chart draws from.
fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// The numbers each chart must show, computed here from the report's
/// claims, benchmarks and brick profile (sharing no code with the chart
/// module): (chart, label, value). The history chart plots earlier reports
/// and is not covered.
pub fn expected_values(r: &RunReport) -> Vec<(&'static str, String, f64)> {
    let mut out = Vec::new();
    let mut cells: Vec<(String, f64)> = Vec::new();
    for c in &r.claims {
        let label = format!("{} {}", c.category, c.outcome.verdict.name());
        match cells.iter_mut().find(|(l, _)| *l == label) {
            Some(cell) => cell.1 += 1.0,
            None => cells.push((label, 1.0)),
        }
    }
    out.extend(cells.into_iter().map(|(l, v)| ("scoreboard", l, v)));
    for b in &r.benches {
        let spec = &b.spec;
        for (metric, short) in [("prefill_tok_s", "prefill"), ("decode_tok_s", "decode")] {
            for s in b.result.series.iter().filter(|s| s.metric == metric) {
                let label = format!("{} p{}/n{} {short} · {}", spec.model, spec.prompt, spec.gen, s.engine);
                out.push(("throughput", label, mean(&s.samples)));
            }
        }
    }
    for f in &r.recorded {
        let hardware = f.hardware.replace("NVIDIA GeForce ", "");
        let metric = f.metric.strip_suffix("_tok_s").unwrap_or(&f.metric);
        let label = format!("{} {metric} · {}, {hardware}, {}", f.engine, f.model, f.date);
        out.push(("recorded", label, f.value));
    }
    for c in &r.claims {
        if let Some((e, v)) = c.outcome.evidence.as_ref().filter(|e| e.unit == "x").and_then(|e| Some((e, e.value?))) {
            out.push(("ratios", format!("{} {}", c.id, e.metric), v));
        }
    }
    if let Some(p) = &r.bricks {
        for (a, b) in p.decode.bricks.iter().zip(&p.bricks) {
            out.push(("bricks", format!("{} actual", a.name), a.us_per_token));
            out.push(("bricks", format!("{} budget", b.name), b.budget_us));
        }
    }
    // The serving claims' series: a row per series, the mean of its runs.
    for s in r.series.iter().filter(|s| !s.samples.is_empty()) {
        let Some(label) = s.name.strip_prefix("serving ") else { continue };
        match s.unit.as_str() {
            "ms" => out.push(("serving_latency", label.to_owned(), mean(&s.samples))),
            "tok/s" => out.push(("serving_throughput", label.to_owned(), mean(&s.samples))),
            _ => {}
        }
    }
    if let Some(s) = r.benches.iter().find_map(|b| b.result.series.iter().find(|s| s.metric == "itl_ms")) {
        let mut sorted = s.samples.clone();
        sorted.sort_by(f64::total_cmp);
        for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
            out.push(("latency", name.to_owned(), crate::stats::quantile_sorted(&sorted, q)));
        }
    }
    out
}

/// Whether a number drawn with four significant digits shows `want`.
fn shows(drawn: f64, want: f64) -> bool {
    (drawn.is_nan() && want.is_nan()) || (drawn - want).abs() <= (5e-4 * want.abs()).max(5e-7)
}

/// Judges the charts drawn for `report`: every number each chart shows (its
/// text, and its bar's length to within two pixels) must equal the value
/// [`expected_values`] computes from the report, and no chart may show a row
/// the report does not have (the history chart, which plots earlier reports, aside).
pub fn judge_chart_values(charts: &[chart::Chart], report: &RunReport) -> Outcome {
    let expected = expected_values(report);
    let mut violations = Vec::new();
    for c in charts.iter().filter(|c| c.name != "history") {
        let shown = match shown_values(&c.svg) {
            Ok(s) => s,
            Err(e) => {
                violations.push(format!("{}: {e}", c.name));
                continue;
            }
        };
        let want: Vec<&(&str, String, f64)> = expected.iter().filter(|(name, _, _)| *name == c.name).collect();
        for (_, label, v) in &want {
            let rows: Vec<&Shown> = shown.iter().filter(|s| &s.label == label).collect();
            if rows.is_empty() {
                violations.push(format!("{}: {label} is not drawn", c.name));
            }
            for s in rows {
                if !shows(s.text, *v) {
                    violations.push(format!("{}: {label} shows {} where the report says {v}", c.name, s.text));
                }
                let length = s.bar.unwrap_or(0.0);
                if s.unit_per_px > 0.0 && (length - v.max(0.0)).abs() > 2.0 * s.unit_per_px {
                    violations.push(format!("{}: {label}'s bar is {length} long where the report says {v}", c.name));
                }
            }
        }
        for s in shown.iter().filter(|s| !want.iter().any(|(_, l, _)| *l == s.label)) {
            violations.push(format!("{}: draws {} = {}, which the report does not have", c.name, s.label, s.text));
        }
    }
    judge::no_violations("chart_value_mismatches", expected.len(), violations)
}

impl Check for ChartValues {
    const NAME: &'static str = "chart_values";
    const DOC: &'static str =
        "the numbers every chart shows (text and bar lengths, read back from its SVG) equal the report's own values";
    const PARAMS: &'static str = "none";
    type Params = NoParams;

    fn run(_: &NoParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let report = draft(cx)?;
        let charts = chart::all(&report, &[]).map_err(Unmet::failed)?;
        Ok(judge_chart_values(&charts, &report))
    }
}

/// `exports`: report.json, report.csv, report.html and every chart SVG are written and parse.
pub struct Exports;

/// What is wrong with the exports of `report` in `dir`: (files checked, problems).
pub fn export_violations(dir: &Path, report: &RunReport) -> (usize, Vec<String>) {
    let mut bad = Vec::new();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let mut checked = 0;
    match read("report.json")
        .and_then(|t| serde_json::from_str::<RunReport>(&t).map_err(|e| format!("report.json: {e}")))
    {
        Ok(r) if r.claims.len() == report.claims.len() => {}
        Ok(r) => bad.push(format!("report.json has {} claims, not {}", r.claims.len(), report.claims.len())),
        Err(e) => bad.push(e),
    }
    checked += 1;
    match read("report.csv").and_then(|t| csv::parse(&t).map_err(|e| format!("report.csv: {e}"))) {
        Ok(rows) if rows.len() == report.claims.len() => {}
        Ok(rows) => bad.push(format!("report.csv has {} rows, not {}", rows.len(), report.claims.len())),
        Err(e) => bad.push(e),
    }
    checked += 1;
    match read("report.html") {
        Ok(page) => {
            if !(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>")) {
                bad.push("report.html is not a whole HTML document".into());
            }
            let absent: Vec<&str> = report
                .claims
                .iter()
                .map(|c| c.id.as_str())
                .filter(|id| !page.contains(&format!("id=\"{id}\"")))
                .collect();
            if !absent.is_empty() {
                bad.push(format!("report.html lacks claims {}", absent.join(", ")));
            }
        }
        Err(e) => bad.push(e),
    }
    checked += 1;
    match std::fs::read_dir(dir.join("charts")) {
        Ok(entries) => {
            let svgs: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "svg"))
                .collect();
            if svgs.is_empty() {
                bad.push("charts/ holds no SVG".into());
            }
            for p in svgs {
                checked += 1;
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                match std::fs::read_to_string(&p) {
                    Ok(text) => {
                        if let Err(e) = svg::read(&text) {
                            bad.push(format!("charts/{name}: {e}"));
                        }
                    }
                    Err(e) => bad.push(format!("charts/{name}: {e}")),
                }
            }
        }
        Err(e) => bad.push(format!("charts/: {e}")),
    }
    (checked, bad)
}

/// Writes every export of `report` into `dir` (the JSON as `falsify run` writes it).
pub fn write_all(dir: &Path, report: &RunReport) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| e.to_string())?;
    crate::util::write_atomic(&dir.join("report.json"), &json).map_err(|e| e.to_string())?;
    write_exports(report, dir, &[]).map(|_| ()).map_err(|e| e.to_string())
}

impl Check for Exports {
    const NAME: &'static str = "exports";
    const DOC: &'static str = "report.json, report.csv, report.html and charts/*.svg are written and parse back";
    const PARAMS: &'static str = "none";
    type Params = NoParams;

    fn run(_: &NoParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let report = draft(cx)?;
        let dir = std::env::temp_dir().join(format!("falsify-exports-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_all(&dir, &report).map_err(Unmet::failed)?;
        let (checked, bad) = export_violations(&dir, &report);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(judge::no_violations("unparsable_exports", checked, bad))
    }
}

/// Parameters of `report_metric`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricParams {
    /// The evidence metric the report must carry.
    pub metric: String,
    /// The claim whose evidence carries it.
    pub from: String,
}

/// `report_metric`: the run's report carries a finite value of a metric.
pub struct ReportMetric;

/// Judges whether claim `p.from` of `report` carries a finite value of `p.metric`.
/// When that claim was not run, or was skipped, nothing can be said.
pub fn judge_metric(report: &RunReport, p: &MetricParams) -> Result<Outcome, Unmet> {
    let (metric, from) = (&p.metric, &p.from);
    let claim = report
        .claims
        .iter()
        .find(|c| &c.id == from)
        .ok_or_else(|| Unmet::Missing(format!("{from}, which measures {metric}, is not part of this run")))?;
    if claim.outcome.verdict == crate::claims::Verdict::Skipped {
        return Err(Unmet::Missing(format!(
            "{from}, which measures {metric}, was skipped: {}",
            claim.outcome.sentence
        )));
    }
    let (present, detail) = match claim.outcome.evidence.as_ref().filter(|e| &e.metric == metric).map(|e| e.value) {
        Some(Some(v)) if v.is_finite() => {
            (1.0, format!("the report carries {metric} = {} (from {from})", judge::num(v)))
        }
        Some(v) => (0.0, format!("{from} reports {metric} without a finite value ({v:?})")),
        None => (0.0, format!("{from}'s evidence does not carry {metric}")),
    };
    let q = Quantity::new(&format!("{metric}_reported"), "bool", present).detail(&detail);
    let mut out = judge::quantity(q, Op::Ge, 1.0);
    out.sentence = detail;
    Ok(out)
}

impl Check for ReportMetric {
    const NAME: &'static str = "report_metric";
    const DOC: &'static str =
        "the run's JSON report carries a finite value of a metric, from the claim that measures it";
    const PARAMS: &'static str = "metric, from (the claim id that measures it)";
    type Params = MetricParams;

    fn run(p: &MetricParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        judge_metric(&draft(cx)?, p)
    }
}
