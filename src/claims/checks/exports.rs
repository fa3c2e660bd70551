//! Checks of the report and its exports, judged on a draft of this run's
//! report (every claim evaluated so far, the benchmarks and the brick
//! profile): the JSON validates against the published schema (M020), every
//! SVG is valid (F117) and the brick chart has data (F111), the charts' values
//! read back equal the report's (F118), all exports are written and parse
//! (F119), and a metric is present in the report (F116).

use std::path::Path;

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::{kind, Check, Kind};
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

/// No parameters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

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

/// `chart_values`: every value a chart draws equals the report's, read back from the SVG.
pub struct ChartValues;

/// Judges drawn charts against the values expected from the report.
pub fn judge_chart_values(drawn: &[chart::Chart], expected: &[chart::Chart]) -> Outcome {
    let mut violations = Vec::new();
    let mut checked = 0;
    for e in expected {
        let Some(d) = drawn.iter().find(|d| d.name == e.name) else {
            violations.push(format!("{}: not drawn", e.name));
            continue;
        };
        checked += e.values.len();
        match svg::read(&d.svg) {
            Ok(back) => {
                violations.extend(svg::missing_values(&back, &e.values).into_iter().map(|m| format!("{}: {m}", e.name)))
            }
            Err(err) => violations.push(format!("{}: {err}", e.name)),
        }
    }
    judge::no_violations("chart_value_mismatches", checked, violations)
}

impl Check for ChartValues {
    const NAME: &'static str = "chart_values";
    const DOC: &'static str = "the values drawn in every chart (text and embedded data) equal the report's";
    const PARAMS: &'static str = "none";
    type Params = NoParams;

    fn run(_: &NoParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let report = draft(cx)?;
        let drawn = chart::all(&report, &[]).map_err(Unmet::failed)?;
        // The expectation comes from the report as a reader gets it: through its JSON.
        let json = serde_json::to_string(&report).map_err(Unmet::failed)?;
        let reread: RunReport = serde_json::from_str(&json).map_err(Unmet::failed)?;
        let expected = chart::all(&reread, &[]).map_err(Unmet::failed)?;
        Ok(judge_chart_values(&drawn, &expected))
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
