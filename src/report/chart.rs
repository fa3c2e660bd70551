//! The report's charts, drawn as SVG with plotters: throughput, ratio vs
//! target, brick budget, latency distribution, scoreboard and history.
//!
//! Every chart has a title, axis labels with units and a legend, and writes
//! each number it plots twice: as a visible text label next to the mark, and
//! in a `<desc>` element as JSON, so a reader (and claim F118) can read the
//! values back and compare them with the report's.

use plotters::coord::ranged1d::Ranged;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::record::RunReport;
use crate::record::Verdict;

/// One number a chart plots, under the label it is drawn with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plotted {
    /// What the number is (`0.5b p32/n128 decode_tok_s falsify`, `F084`, …).
    pub label: String,
    /// The number.
    pub value: f64,
}

/// A drawn chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// File stem (`throughput` → `throughput.svg`).
    pub name: &'static str,
    /// Its title.
    pub title: String,
    /// The SVG document.
    pub svg: String,
    /// Every number it plots.
    pub values: Vec<Plotted>,
}

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing the {chart} chart: {message}")]
pub struct ChartError {
    /// Which chart.
    pub chart: &'static str,
    /// The drawing backend's message.
    pub message: String,
}

/// The text a number is drawn with: four significant digits, no exponent.
pub fn label(v: f64) -> String {
    if !v.is_finite() || (v.fract() == 0.0 && v.abs() < 1e9) {
        return format!("{v}");
    }
    let digits = if v == 0.0 { 0 } else { (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize };
    format!("{v:.digits$}")
}

const WIDTH: u32 = 900;
const FONT: &str = "sans-serif";
const LIVE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const BASELINE: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const RECORDED: RGBColor = RGBColor(0x99, 0x99, 0x99);
const THRESHOLD: RGBColor = RGBColor(0xd6, 0x27, 0x28);

fn verdict_color(v: Verdict) -> RGBColor {
    match v {
        Verdict::Pass => RGBColor(0x2c, 0xa0, 0x2c),
        Verdict::Falsified => RGBColor(0xd6, 0x27, 0x28),
        Verdict::Inconclusive => RGBColor(0xff, 0xbb, 0x33),
        Verdict::Skipped => RGBColor(0xbb, 0xbb, 0xbb),
        Verdict::Pending => RGBColor(0xe0, 0xe0, 0xe0),
        Verdict::Error => RGBColor(0x94, 0x67, 0xbd),
    }
}

/// A horizontal bar: its row label, value, optional CI, colour and legend group.
struct Bar {
    label: String,
    value: f64,
    ci: Option<(f64, f64)>,
    color: RGBColor,
    group: &'static str,
    /// A target line on this bar's row.
    threshold: Option<f64>,
}

/// Puts the plotted values into the SVG as a `<desc>` right after the root's start tag.
fn with_data(svg: String, values: &[Plotted]) -> String {
    let data = serde_json::to_string(values).unwrap_or_default();
    let escaped = data.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    match svg.find("<svg").and_then(|at| svg[at..].find('>').map(|end| at + end + 1)) {
        Some(pos) => format!("{}\n<desc id=\"falsify-data\">{escaped}</desc>{}", &svg[..pos], &svg[pos..]),
        None => svg,
    }
}

/// Turns a drawing backend's error into a [`ChartError`] for `chart`.
fn fail<E: std::fmt::Display>(chart: &'static str) -> impl Fn(E) -> ChartError {
    move |e| ChartError { chart, message: e.to_string() }
}

/// Draws the legend at `at`, then writes the drawing out.
fn finish<'a, 'b: 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
    at: SeriesLabelPosition,
    name: &'static str,
) -> Result<(), ChartError> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(fail(name))?;
    chart.plotting_area().present().map_err(fail(name))
}

/// Draws horizontal bars with CI whiskers, value labels, optional per-row targets, and a legend.
fn bars(name: &'static str, title: &str, x_desc: &str, rows: &[Bar], extra: Vec<Plotted>) -> Result<Chart, ChartError> {
    let n = rows.len().max(1);
    let height = 120 + 34 * n as u32;
    let x_max = rows
        .iter()
        .flat_map(|r| [Some(r.value), r.ci.map(|c| c.1), r.threshold])
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.6;
    // Row i is drawn in segment n - 1 - i, so the first row is at the top.
    let seg = |i: usize| n - 1 - i;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(fail(name))?;
        let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(330)
            .build_cartesian_2d(0f64..x_max, (0..n).into_segmented())
            .map_err(fail(name))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("")
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) if *i < n => labels.get(n - 1 - *i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(fail(name))?;
        let mut groups: Vec<(&str, RGBColor)> = Vec::new();
        for r in rows {
            if !groups.iter().any(|(g, _)| *g == r.group) {
                groups.push((r.group, r.color));
            }
        }
        for (group, color) in groups {
            let drawn = rows.iter().enumerate().filter(|(_, r)| r.group == group).map(|(i, r)| {
                Rectangle::new(
                    [(0.0, SegmentValue::Exact(seg(i))), (r.value.max(0.0), SegmentValue::Exact(seg(i) + 1))],
                    r.color.mix(0.8).filled(),
                )
            });
            chart
                .draw_series(drawn)
                .map_err(fail(name))?
                .label(group)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        // The bars' rectangles span a whole segment; draw whiskers, targets and labels on the centre line.
        let centre = |i: usize| SegmentValue::CenterOf(seg(i));
        for (i, r) in rows.iter().enumerate() {
            if let Some((lo, hi)) = r.ci {
                chart
                    .draw_series(std::iter::once(PathElement::new(vec![(lo, centre(i)), (hi, centre(i))], BLACK)))
                    .map_err(fail(name))?;
            }
            if let Some(t) = r.threshold {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(t, SegmentValue::Exact(seg(i))), (t, SegmentValue::Exact(seg(i) + 1))],
                        THRESHOLD.stroke_width(3),
                    )))
                    .map_err(fail(name))?;
            }
            let at = r.ci.map_or(r.value, |c| c.1.max(r.value)).max(0.0);
            chart
                .draw_series(std::iter::once(Text::new(label(r.value), (at + x_max * 0.01, centre(i)), (FONT, 13))))
                .map_err(fail(name))?;
        }
        if rows.iter().any(|r| r.threshold.is_some()) {
            chart
                .draw_series(std::iter::empty::<PathElement<(f64, SegmentValue<usize>)>>())
                .map_err(fail(name))?
                .label("claim threshold")
                .legend(|(x, y)| PathElement::new(vec![(x + 6, y - 6), (x + 6, y + 6)], THRESHOLD.stroke_width(3)));
        }
        if rows.is_empty() {
            root.present().map_err(fail(name))?;
        } else {
            finish(&mut chart, SeriesLabelPosition::UpperRight, name)?;
        }
    }
    let mut values = rows.iter().map(|r| Plotted { label: r.label.clone(), value: r.value }).collect::<Vec<_>>();
    values.extend(extra);
    Ok(Chart { name, title: title.into(), svg: with_data(svg, &values), values })
}

/// `decode_tok_s` → `decode`.
fn short(metric: &str) -> &str {
    metric.strip_suffix("_tok_s").unwrap_or(metric)
}

/// Throughput: prefill and decode of every engine in every benchmark (mean
/// and its 95% CI), and the recorded figures of the same models, marked so.
pub fn throughput(r: &RunReport) -> Result<Chart, ChartError> {
    let mut rows = Vec::new();
    for b in &r.benches {
        for metric in ["prefill_tok_s", "decode_tok_s"] {
            for s in b.result.series.iter().filter(|s| s.metric == metric) {
                let live = s.engine == "falsify";
                rows.push(Bar {
                    label: format!(
                        "{} p{}/n{} {} · {}",
                        b.spec.model,
                        b.spec.prompt,
                        b.spec.gen,
                        short(metric),
                        s.engine
                    ),
                    value: s.summary.mean,
                    ci: Some((s.summary.mean_ci95.lo, s.summary.mean_ci95.hi)),
                    color: if live { LIVE } else { BASELINE },
                    group: if live { "falsify (live)" } else { "baseline (live, same run)" },
                    threshold: None,
                });
            }
            for f in
                r.recorded.iter().filter(|f| f.metric == metric && f.model.contains(&format!("-{}-", b.spec.model)))
            {
                rows.push(Bar {
                    label: format!(
                        "{} {} · {} RECORDED, {}",
                        b.spec.model,
                        short(metric),
                        f.engine,
                        f.hardware.replace("NVIDIA GeForce ", "")
                    ),
                    value: f.value,
                    ci: f.sd.map(|sd| (f.value - 1.96 * sd, f.value + 1.96 * sd)),
                    color: RECORDED,
                    group: "recorded figure (other hardware, not measured here)",
                    threshold: None,
                });
            }
        }
    }
    rows.dedup_by(|a, b| a.label == b.label);
    bars("throughput", "Throughput: mean with 95% CI", "tokens per second (tok/s)", &rows, Vec::new())
}

/// Ratio vs target: every claim whose evidence is a ratio (unit `x`) with a
/// threshold: the measured ratio, its CI and the claim's threshold.
pub fn ratios(r: &RunReport) -> Result<Chart, ChartError> {
    let rows: Vec<Bar> = r
        .claims
        .iter()
        .filter_map(|c| {
            let e = c.outcome.evidence.as_ref()?;
            (e.unit == "x").then_some(())?;
            Some(Bar {
                label: format!("{} {}", c.id, e.metric),
                value: e.value?,
                ci: e.ci.map(|ci| (ci.lo, ci.hi)),
                color: verdict_color(c.outcome.verdict),
                group: c.outcome.verdict.name(),
                threshold: e.threshold,
            })
        })
        .collect();
    bars("ratios", "Ratio claims: measured (95% CI) vs threshold", "ratio (x)", &rows, Vec::new())
}

/// Brick budget: each brick's measured µs per token next to its budget.
pub fn bricks(r: &RunReport) -> Result<Chart, ChartError> {
    let mut rows = Vec::new();
    if let Some(p) = &r.bricks {
        for (a, b) in p.decode.bricks.iter().zip(&p.bricks) {
            rows.push(Bar {
                label: format!("{} actual", a.name),
                value: a.us_per_token,
                ci: None,
                color: LIVE,
                group: "measured µs/token",
                threshold: None,
            });
            rows.push(Bar {
                label: format!("{} budget", b.name),
                value: b.budget_us,
                ci: None,
                color: RECORDED,
                group: "budget: roofline × allowance",
                threshold: None,
            });
        }
    }
    let title = match &r.bricks {
        Some(p) => format!(
            "Brick budget, {} decode ({} threads, {} GB/s read, allowance {}×){}",
            p.model,
            p.threads,
            label(p.host.read_bandwidth_gb_s),
            p.allowance,
            p.decode
                .bricks
                .iter()
                .max_by(|a, b| a.share.total_cmp(&b.share))
                .map(|b| format!(": most time in {} ({}%)", b.name, label(100.0 * b.share)))
                .unwrap_or_default()
                + &p.bottleneck()
                    .map(|(n, g)| format!(", bottleneck (largest excess over budget) {n} at {}×", label(g)))
                    .unwrap_or_default()
        ),
        None => "Brick budget: no brick profile in this report".into(),
    };
    bars("bricks", &title, "microseconds per token (µs)", &rows, Vec::new())
}

/// Latency distribution: the histogram of per-token decode latencies of the
/// first benchmark, with p50, p99 and p999 marked.
pub fn latency(r: &RunReport) -> Result<Chart, ChartError> {
    const NAME: &str = "latency";
    let series = r.benches.iter().find_map(|b| {
        b.result
            .series
            .iter()
            .find(|s| s.metric == "itl_ms")
            .map(|s| (format!("{} p{}/n{}", b.spec.model, b.spec.prompt, b.spec.gen), s))
    });
    let mut svg = String::new();
    let mut values = Vec::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(fail(NAME))?;
        let (title, samples, marks) = match series {
            Some((what, s)) => {
                let m = &s.summary;
                let marks = [("p50", m.median), ("p99", m.p99), ("p999", m.p999)];
                (
                    format!("Per-token decode latency, {what} ({} tokens)", s.samples.len()),
                    s.samples.as_slice(),
                    marks.to_vec(),
                )
            }
            None => ("Per-token decode latency: no decode benchmark in this report".into(), &[][..], Vec::new()),
        };
        const BINS: usize = 40;
        let crate::stats::Histogram { lo, width, counts } = crate::stats::histogram(samples, BINS);
        let hi = lo + width * BINS as f64;
        let y_max = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.2;
        let mut chart = ChartBuilder::on(&root)
            .caption(&title, (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi + width, 0f64..y_max)
            .map_err(fail(NAME))?;
        chart.configure_mesh().x_desc("latency per token (ms)").y_desc("tokens").draw().map_err(fail(NAME))?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], LIVE.mix(0.7).filled())
            }))
            .map_err(fail(NAME))?
            .label("tokens per latency bin")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], LIVE.filled()));
        for (i, (name, v)) in marks.iter().enumerate() {
            let color = [BLACK, THRESHOLD, RGBColor(0x94, 0x67, 0xbd)][i];
            chart
                .draw_series(std::iter::once(PathElement::new(vec![(*v, 0.0), (*v, y_max)], color.stroke_width(2))))
                .map_err(fail(NAME))?
                .label(format!("{name} = {} ms", label(*v)))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], color.stroke_width(2)));
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{name} {}", label(*v)),
                    // Right of the line, or left of it near the right edge.
                    (
                        if *v > lo + 0.75 * (hi - lo) { *v - 0.14 * (hi - lo) } else { *v },
                        y_max * (0.95 - 0.07 * i as f64),
                    ),
                    (FONT, 13),
                )))
                .map_err(fail(NAME))?;
            values.push(Plotted { label: (*name).into(), value: *v });
        }
        finish(&mut chart, SeriesLabelPosition::UpperRight, NAME)?;
    }
    Ok(Chart { name: NAME, title: "Per-token decode latency".into(), svg: with_data(svg, &values), values })
}

/// Scoreboard: claims per category and verdict, and the points.
pub fn scoreboard(r: &RunReport) -> Result<Chart, ChartError> {
    let mut categories: Vec<&str> = r.claims.iter().map(|c| c.category.as_str()).collect();
    categories.sort();
    categories.dedup();
    let rows: Vec<Bar> = categories
        .iter()
        .flat_map(|cat| {
            Verdict::ALL.iter().filter_map(move |&v| {
                let n = r.claims.iter().filter(|c| c.category == *cat && c.outcome.verdict == v).count();
                (n > 0).then(|| Bar {
                    label: format!("{cat} {}", v.name()),
                    value: n as f64,
                    ci: None,
                    color: verdict_color(v),
                    group: v.name(),
                    threshold: None,
                })
            })
        })
        .collect();
    let s = &r.summary;
    let title = format!(
        "Scoreboard: score {} ({}), {} of all {} points; {} pending",
        label(s.score),
        s.grade,
        s.points_earned,
        s.points_total,
        s.pending
    );
    let points =
        [("points earned", s.points_earned), ("points tested", s.points_tested), ("points total", s.points_total)]
            .map(|(what, v)| Plotted { label: what.into(), value: v as f64 });
    bars("scoreboard", &title, "claims (count)", &rows, points.to_vec())
}

/// History: the score and the headline ratios over the reports kept.
pub fn history(r: &RunReport, past: &[RunReport]) -> Result<Chart, ChartError> {
    const NAME: &str = "history";
    let mut runs: Vec<&RunReport> = past.iter().collect();
    if !runs.iter().any(|p| p.provenance.timestamp == r.provenance.timestamp) {
        runs.push(r);
    }
    runs.sort_by_key(|p| p.provenance.timestamp);
    // Each line: its legend, colour, and the claim whose ratio it plots (none: the score).
    let lines = [
        ("headline score (0–100)", LIVE, None),
        ("F084 decode ratio × 100", BASELINE, Some("F084")),
        ("F035 prefill ratio × 100", RGBColor(0x2c, 0xa0, 0x2c), Some("F035")),
    ];
    let value = |p: &RunReport, claim: Option<&str>| match claim {
        None => Some(p.summary.score),
        Some(id) => p
            .claims
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.outcome.evidence.as_ref())
            .and_then(|e| e.value)
            .map(|v| v * 100.0),
    };
    let mut values = Vec::new();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(fail(NAME))?;
        let y_max =
            runs.iter().flat_map(|p| lines.iter().filter_map(move |(_, _, c)| value(p, *c))).fold(100.0f64, f64::max)
                * 1.1;
        let n = runs.len();
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("History over the last {n} run(s) in reports/history/"), (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5).max(0.5), 0f64..y_max)
            .map_err(fail(NAME))?;
        chart
            .configure_mesh()
            .x_desc("run (oldest → newest)")
            .y_desc("score, ratio × 100")
            .x_labels(n.clamp(2, 12))
            .x_label_formatter(&|x| format!("{}", x.round() as i64 + 1))
            .draw()
            .map_err(fail(NAME))?;
        for (name, color, claim) in &lines {
            let points: Vec<(f64, f64)> =
                runs.iter().enumerate().filter_map(|(i, p)| value(p, *claim).map(|v| (i as f64, v))).collect();
            let color = *color;
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)).point_size(4))
                .map_err(fail(NAME))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], color.stroke_width(2)));
            for &(x, y) in &points {
                chart
                    .draw_series(std::iter::once(Text::new(label(y), (x, y + y_max * 0.02), (FONT, 12))))
                    .map_err(fail(NAME))?;
                values.push(Plotted { label: format!("run {} {name}", x as usize + 1), value: y });
            }
        }
        finish(&mut chart, SeriesLabelPosition::UpperLeft, NAME)?;
    }
    Ok(Chart { name: NAME, title: "History".into(), svg: with_data(svg, &values), values })
}

/// Every chart of a report; `past` are the reports kept in `reports/history/`.
pub fn all(r: &RunReport, past: &[RunReport]) -> Result<Vec<Chart>, ChartError> {
    Ok(vec![scoreboard(r)?, throughput(r)?, ratios(r)?, bricks(r)?, latency(r)?, history(r, past)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_report;

    #[test]
    fn labels_keep_four_significant_digits() {
        let cases = [
            (0.6045, "0.6045"),
            (26.336, "26.34"),
            (43.5639, "43.56"),
            (1280.0, "1280"),
            (0.0, "0"),
            (2.0, "2"),
            (-0.25, "-0.2500"),
        ];
        for (v, s) in cases {
            assert_eq!(label(v), s, "{v}");
        }
    }

    #[test]
    fn every_chart_draws_its_values_and_says_so_in_its_data() {
        let r = sample_report();
        for c in all(&r, &[]).unwrap() {
            assert!(c.svg.starts_with("<svg") && c.svg.contains("viewBox"), "{}", c.name);
            assert!(!c.values.is_empty(), "{} plots nothing", c.name);
            let back = crate::report::svg::read(&c.svg).unwrap();
            assert_eq!(back.data.as_ref(), Some(&c.values), "{}", c.name);
            assert_eq!(crate::report::svg::missing_values(&back, &c.values), Vec::<String>::new(), "{}", c.name);
            assert_eq!(c.svg.matches("falsify-data").count(), 1, "{}", c.name);
        }
    }

    #[test]
    fn charts_can_be_looked_at() {
        if let Some(dir) = std::env::var_os("FALSIFY_CHART_DIR") {
            for c in all(&sample_report(), &[]).unwrap() {
                std::fs::write(std::path::Path::new(&dir).join(format!("{}.svg", c.name)), &c.svg).unwrap();
            }
        }
    }

    #[test]
    fn throughput_marks_recorded_figures_and_ratios_show_thresholds() {
        let r = sample_report();
        let t = throughput(&r).unwrap();
        assert!(t.values.iter().any(|v| v.label.contains("RECORDED") && v.value == 581.53), "{:?}", t.values);
        assert!(t.svg.contains("recorded figure (other hardware, not measured here)"));
        let ratio = ratios(&r).unwrap();
        assert_eq!(ratio.values.len(), 2);
        assert!(ratio.svg.contains("claim threshold"));
        let b = bricks(&r).unwrap();
        assert_eq!(b.values.len(), 2 * crate::model::Brick::ALL.len());
        assert!(b.title.contains("most time in lm_head") && b.title.contains("largest excess"), "{}", b.title);
    }
}
