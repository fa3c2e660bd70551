//! The report's charts, drawn as SVG with plotters: throughput, ratio vs
//! target, brick budget, latency distribution, scoreboard and history, and
//! the latency and throughput of served load (`falsify load`, the serving claims).
//!
//! Every chart has a title, axis labels with units and a legend, and writes
//! each number it plots twice: as a visible text label next to the mark, and
//! in a `<desc>` element as JSON, so a reader (and claim F118) can read the
//! values back and compare them with the report's.

use plotters::coord::ranged1d::Ranged;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

use crate::load::LoadSummary;
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

/// The font size charts' titles are drawn with (plotters' size; the SVG's is this / 1.24).
const TITLE_SIZE: f64 = 20.0;
/// Vertical space per line of wrapped text, for the title's size.
const TITLE_LINE: u32 = 24;
/// The size of notes and messages drawn below or inside a chart.
const NOTE_SIZE: f64 = 14.0;
/// The size plotters draws tick and row labels with.
const TICK_SIZE: f64 = 12.0;
/// The space kept free at each side of the canvas.
const MARGIN: u32 = 12;

/// The width in pixels of `chars` characters of text drawn at plotters `size`:
/// an average glyph is taken as 0.6 of the SVG font size (`size` / 1.24).
fn text_width(chars: usize, size: f64) -> f64 {
    chars as f64 * size / 1.24 * 0.6
}

/// How many characters of text at `size` fit in `px` pixels.
fn chars_in(px: f64, size: f64) -> usize {
    ((px / text_width(1, size)).floor() as usize).max(1)
}

/// `text` shortened to at most `max` characters, ending in `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.into();
    }
    text.chars().take(max.saturating_sub(1)).chain(std::iter::once('…')).collect()
}

/// `text` broken at spaces into lines of at most `max` characters; a word
/// longer than a line is split.
fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        let used = line.chars().count();
        if used > 0 && used + 1 + word.len() > max {
            lines.push(std::mem::take(&mut line));
        }
        while word.len() > max {
            let rest = word.split_off(max);
            lines.push(word.into_iter().collect());
            word = rest;
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.extend(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// The lines a chart's title is drawn in, each within the canvas's width.
fn title_lines(title: &str) -> Vec<String> {
    wrap(title, chars_in(f64::from(WIDTH - 2 * MARGIN), TITLE_SIZE))
}

/// Draws `lines` centred, one under the other, from `top` in `area`.
fn draw_lines(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    lines: &[String],
    top: u32,
    size: f64,
    name: &'static str,
) -> Result<(), ChartError> {
    let style = TextStyle::from((FONT, size)).pos(Pos::new(HPos::Center, VPos::Top));
    let step = (size * 1.2).ceil() as i32;
    for (i, line) in lines.iter().enumerate() {
        let at = ((WIDTH / 2) as i32, top as i32 + i as i32 * step);
        area.draw(&Text::new(line.as_str(), at, style.clone())).map_err(fail(name))?;
    }
    Ok(())
}

/// Draws the wrapped title at the top of `root`; returns the area below it.
fn titled<'a>(
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    title: &[String],
    name: &'static str,
) -> Result<DrawingArea<SVGBackend<'a>, plotters::coord::Shift>, ChartError> {
    draw_lines(root, title, MARGIN, TITLE_SIZE, name)?;
    Ok(root.split_vertically(MARGIN + TITLE_LINE * title.len() as u32).1)
}

/// A chart with too little data to plot: its title and, instead of an empty
/// frame, `why` in words. It plots no values (its data is `[]`).
fn message(name: &'static str, title: &str, why: &str) -> Result<Chart, ChartError> {
    let title_lines = title_lines(title);
    let why_lines = wrap(why, chars_in(f64::from(WIDTH - 2 * MARGIN), NOTE_SIZE));
    let height = 2 * MARGIN + TITLE_LINE * title_lines.len() as u32 + 40 + 20 * why_lines.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(fail(name))?;
        let below = titled(&root, &title_lines, name)?;
        below.fill(&RGBColor(0xf4, 0xf4, 0xf4)).map_err(fail(name))?;
        draw_lines(&below, &why_lines, 20, NOTE_SIZE, name)?;
        root.present().map_err(fail(name))?;
    }
    Ok(Chart { name, title: title.into(), svg: with_data(svg, &[]), values: Vec::new() })
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

/// What a bar chart shows besides its bars.
struct BarText<'a> {
    /// The chart's title.
    title: &'a str,
    /// The value axis's description, with its unit.
    x_desc: &'a str,
    /// Notes drawn under the chart (wrapped).
    notes: &'a [String],
    /// What the chart says in words when it has no bars.
    empty: &'a str,
}

/// Draws horizontal bars with CI whiskers, value labels, optional per-row
/// targets, a legend and notes below; with no bars, says `text.empty` instead.
/// Row labels too long for the label column (at most 60% of the width) are shortened.
fn bars(name: &'static str, text: &BarText, rows: &[Bar], extra: Vec<Plotted>) -> Result<Chart, ChartError> {
    if rows.is_empty() {
        return message(name, text.title, text.empty);
    }
    let n = rows.len();
    let title = title_lines(text.title);
    let notes: Vec<String> =
        text.notes.iter().flat_map(|note| wrap(note, chars_in(f64::from(WIDTH - 2 * MARGIN), NOTE_SIZE))).collect();
    let note_line = (NOTE_SIZE * 1.2).ceil() as u32;
    let notes_height = if notes.is_empty() { 0 } else { note_line * notes.len() as u32 + MARGIN };
    let height = 96 + TITLE_LINE * title.len() as u32 + 34 * n as u32 + notes_height;
    // Plotters draws a row label ending 10 px left of the plot, in TICK_SIZE text.
    let longest = rows.iter().map(|r| r.label.chars().count()).max().unwrap_or(0);
    let label_area = (text_width(longest, TICK_SIZE).ceil() as u32 + 16).clamp(120, WIDTH * 3 / 5);
    let fits = chars_in(f64::from(label_area - 10), TICK_SIZE);
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
        let below = titled(&root, &title, name)?;
        let (plot, under) = below.split_vertically(height - MARGIN - TITLE_LINE * title.len() as u32 - notes_height);
        draw_lines(&under, &notes, 0, NOTE_SIZE, name)?;
        let labels: Vec<String> = rows.iter().map(|r| shorten(&r.label, fits)).collect();
        let mut chart = ChartBuilder::on(&plot)
            .margin(MARGIN)
            .margin_right(3 * MARGIN)
            .x_label_area_size(40)
            .y_label_area_size(label_area)
            .build_cartesian_2d(0f64..x_max, (0..n).into_segmented())
            .map_err(fail(name))?;
        chart
            .configure_mesh()
            .x_desc(text.x_desc)
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
        finish(&mut chart, SeriesLabelPosition::UpperRight, name)?;
    }
    let mut values = rows.iter().map(|r| Plotted { label: r.label.clone(), value: r.value }).collect::<Vec<_>>();
    values.extend(extra);
    Ok(Chart { name, title: text.title.into(), svg: with_data(svg, &values), values })
}

/// `decode_tok_s` → `decode`.
fn short(metric: &str) -> &str {
    metric.strip_suffix("_tok_s").unwrap_or(metric)
}

/// Throughput: prefill and decode of every engine in every benchmark, all
/// measured live in this run (mean and its 95% CI). Figures recorded on other
/// hardware are drawn apart, by [`recorded`].
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
        }
    }
    let text = BarText {
        title: "Throughput measured in this run: mean with 95% CI",
        x_desc: "tokens per second (tok/s)",
        notes: &[],
        empty: "No throughput was measured in this run: it ran no benchmark.",
    };
    bars("throughput", &text, &rows, Vec::new())
}

/// The label a recorded figure is drawn with: engine, metric, model, hardware and date.
pub fn recorded_label(f: &crate::baseline::recorded::Figure) -> String {
    format!(
        "{} {} · {}, {}, {}",
        f.engine,
        short(&f.metric),
        f.model,
        f.hardware.replace("NVIDIA GeForce ", ""),
        f.date
    )
}

/// Recorded figures: every figure of `baselines/recorded.toml` the report
/// carries, each once, measured on other hardware and not here, with its
/// source. Never mixed with live measurements.
pub fn recorded(r: &RunReport) -> Result<Chart, ChartError> {
    const GROUP: &str = "recorded elsewhere, not measured here";
    let rows: Vec<Bar> = r
        .recorded
        .iter()
        .map(|f| Bar {
            label: recorded_label(f),
            value: f.value,
            ci: f.sd.map(|sd| (f.value - 1.96 * sd, f.value + 1.96 * sd)),
            color: RECORDED,
            group: GROUP,
            threshold: None,
        })
        .collect();
    let distinct = |field: fn(&crate::baseline::recorded::Figure) -> &str| {
        let mut all: Vec<&str> = r.recorded.iter().map(field).collect();
        all.sort();
        all.dedup();
        all.join("; ")
    };
    let notes = [format!(
        "Not comparable with this run's figures: measured on other hardware ({}). Sources: {}.",
        distinct(|f| &f.hardware),
        distinct(|f| &f.source)
    )];
    let text = BarText {
        title: "Recorded elsewhere, not measured here: figures from the seed documents (± 1.96 sd)",
        x_desc: "tokens per second (tok/s), recorded",
        notes: &notes,
        empty: "No recorded figures in this report (baselines/recorded.toml).",
    };
    bars("recorded", &text, &rows, Vec::new())
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
    let text = BarText {
        title: "Ratio claims: measured (95% CI) vs threshold",
        x_desc: "ratio (x)",
        notes: &[],
        empty: "No claim with a ratio as its evidence was evaluated in this run.",
    };
    bars("ratios", &text, &rows, Vec::new())
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
    let text = BarText {
        title: &title,
        x_desc: "microseconds per token (µs)",
        notes: &[],
        empty: "No brick profile in this report: the run did not profile the decode bricks.",
    };
    bars("bricks", &text, &rows, Vec::new())
}

/// Latency distribution: the histogram of per-token decode latencies of the
/// first benchmark, with p50, p99 and p999 marked.
pub fn latency(r: &RunReport) -> Result<Chart, ChartError> {
    const NAME: &str = "latency";
    let Some((what, s)) = r.benches.iter().find_map(|b| {
        b.result
            .series
            .iter()
            .find(|s| s.metric == "itl_ms")
            .map(|s| (format!("{} p{}/n{}", b.spec.model, b.spec.prompt, b.spec.gen), s))
    }) else {
        return message(
            NAME,
            "Per-token decode latency",
            "No per-token decode latencies in this report: it ran no decode benchmark.",
        );
    };
    let m = &s.summary;
    let marks = [("p50", m.median), ("p99", m.p99), ("p999", m.p999)];
    let title = title_lines(&format!("Per-token decode latency, {what} ({} tokens)", s.samples.len()));
    let samples = s.samples.as_slice();
    let mut svg = String::new();
    let mut values = Vec::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, 396 + TITLE_LINE * title.len() as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(fail(NAME))?;
        let below = titled(&root, &title, NAME)?;
        const BINS: usize = 40;
        let crate::stats::Histogram { lo, width, counts } = crate::stats::histogram(samples, BINS);
        let hi = lo + width * BINS as f64;
        let y_max = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.2;
        let mut chart = ChartBuilder::on(&below)
            .margin(MARGIN)
            .margin_right(3 * MARGIN)
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
    let text = BarText { title: &title, x_desc: "claims (count)", notes: &[], empty: "No claims in this report." };
    bars("scoreboard", &text, &rows, points.to_vec())
}

/// History: the score and the headline ratios over the reports kept.
pub fn history(r: &RunReport, past: &[RunReport]) -> Result<Chart, ChartError> {
    const NAME: &str = "history";
    let mut runs: Vec<&RunReport> = past.iter().collect();
    if !runs.iter().any(|p| p.provenance.timestamp == r.provenance.timestamp) {
        runs.push(r);
    }
    runs.sort_by_key(|p| p.provenance.timestamp);
    let n = runs.len();
    let title = format!("History over the last {n} run(s) in reports/history/");
    if n < 2 {
        return message(
            NAME,
            &title,
            "One run so far: the history starts with the next run, which will be drawn beside this one.",
        );
    }
    let title = title_lines(&title);
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
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, 396 + TITLE_LINE * title.len() as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(fail(NAME))?;
        let below = titled(&root, &title, NAME)?;
        let y_max =
            runs.iter().flat_map(|p| lines.iter().filter_map(move |(_, _, c)| value(p, *c))).fold(100.0f64, f64::max)
                * 1.1;
        let mut chart = ChartBuilder::on(&below)
            .margin(MARGIN)
            .margin_right(3 * MARGIN)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..y_max)
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
            // Each point's number centred above it, kept within the plotting area.
            let (across, _) = chart.plotting_area().get_pixel_range();
            for &(x, y) in &points {
                let text = label(y);
                let half = (text_width(text.chars().count(), 12.0) / 2.0).ceil() as i32;
                let (px, py) = chart.backend_coord(&(x, y));
                let px = px.clamp(across.start + half, (across.end - half).max(across.start + half));
                let style = TextStyle::from((FONT, 12)).pos(Pos::new(HPos::Center, VPos::Bottom));
                root.draw(&Text::new(text, (px, py - 4), style)).map_err(fail(NAME))?;
                values.push(Plotted { label: format!("run {} {name}", x as usize + 1), value: y });
            }
        }
        finish(&mut chart, SeriesLabelPosition::UpperLeft, NAME)?;
    }
    Ok(Chart { name: NAME, title: "History".into(), svg: with_data(svg, &values), values })
}

/// A bar of the mean of `values` (one per run) with its 95% CI, coloured by
/// whether `engine` is falsify's own.
fn runs_bar(label: String, engine: &str, values: &[f64]) -> Bar {
    let summary = crate::stats::Summary::of(values).ok().filter(|s| s.n >= 2);
    let ours = engine.starts_with("falsify");
    Bar {
        label,
        value: values.iter().sum::<f64>() / values.len().max(1) as f64,
        ci: summary.map(|s| (s.mean_ci95.lo, s.mean_ci95.hi)),
        color: if ours { LIVE } else { BASELINE },
        group: if ours { "falsify" } else { "other engine" },
        threshold: None,
    }
}

/// The latency and throughput bars of a load test, one row per level and figure.
fn load_rows(s: &LoadSummary, figures: &[&str]) -> Vec<Bar> {
    let mut rows = Vec::new();
    for level in &s.levels {
        for f in figures {
            if let Some(a) = level.figure(f) {
                rows.push(runs_bar(format!("{} · {}", level.load, f), &s.engine, &a.values));
            }
        }
    }
    rows
}

/// Latency against load (`falsify load`): TTFT and ITL p50 and p99 at each
/// level, mean across runs with its 95% CI.
pub fn load_latency(s: &LoadSummary) -> Result<Chart, ChartError> {
    let title = format!("{}: latency against load, mean of {} runs with 95% CI", s.engine, s.plan.runs);
    let text =
        BarText { title: &title, x_desc: "milliseconds (ms)", notes: &[], empty: "The load test measured no latency." };
    bars("load_latency", &text, &load_rows(s, &["ttft_ms_p50", "ttft_ms_p99", "itl_ms_p50", "itl_ms_p99"]), Vec::new())
}

/// Throughput against concurrency (`falsify load`): output tok/s at each
/// level, mean across runs with its 95% CI.
pub fn load_throughput(s: &LoadSummary) -> Result<Chart, ChartError> {
    let title = format!("{}: output throughput against load, mean of {} runs with 95% CI", s.engine, s.plan.runs);
    let text =
        BarText { title: &title, x_desc: "output tokens per second (tok/s)", notes: &[], empty: "No throughput." };
    bars("load_throughput", &text, &load_rows(s, &["output_tok_s"]), Vec::new())
}

/// Writes [`load_latency`] and [`load_throughput`] as SVG files into `out`; returns their paths.
pub fn write_load(out: &std::path::Path, s: &LoadSummary) -> Result<Vec<std::path::PathBuf>, String> {
    let mut files = Vec::new();
    for c in [load_latency(s), load_throughput(s)] {
        let c = c.map_err(|e| e.to_string())?;
        let path = out.join(format!("{}.svg", c.name));
        crate::util::write_atomic(&path, c.svg.as_bytes()).map_err(|e| e.to_string())?;
        files.push(path);
    }
    Ok(files)
}

/// The serving claims' load (series `serving MODEL c=N ENGINE FIGURE`, one
/// value per run): latency against load and throughput against concurrency,
/// or nothing when the run served no load.
pub fn serving(r: &RunReport) -> Result<Vec<Chart>, ChartError> {
    let rows = |unit: &str| -> Vec<Bar> {
        r.series
            .iter()
            .filter(|s| s.unit == unit && !s.samples.is_empty())
            .filter_map(|s| {
                let rest = s.name.strip_prefix("serving ")?;
                let engine = rest.split(' ').nth(2)?;
                Some(runs_bar(rest.to_owned(), engine, &s.samples))
            })
            .collect()
    };
    let (latency, tput) = (rows("ms"), rows("tok/s"));
    let mut charts = Vec::new();
    if !latency.is_empty() {
        let text = BarText {
            title: "Serving: latency against load (mean of the runs, 95% CI)",
            x_desc: "milliseconds (ms)",
            notes: &[],
            empty: "",
        };
        charts.push(bars("serving_latency", &text, &latency, Vec::new())?);
    }
    if !tput.is_empty() {
        let text = BarText {
            title: "Serving: output throughput against concurrency (mean of the runs, 95% CI)",
            x_desc: "output tokens per second (tok/s)",
            notes: &[],
            empty: "",
        };
        charts.push(bars("serving_throughput", &text, &tput, Vec::new())?);
    }
    Ok(charts)
}

/// Every chart of a report; `past` are the reports kept in `reports/history/`.
/// The serving charts come last, only when the run served load.
pub fn all(r: &RunReport, past: &[RunReport]) -> Result<Vec<Chart>, ChartError> {
    let mut charts =
        vec![scoreboard(r)?, throughput(r)?, recorded(r)?, ratios(r)?, bricks(r)?, latency(r)?, history(r, past)?];
    charts.extend(serving(r)?);
    Ok(charts)
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

    /// `r` as the previous run: the same report an hour earlier.
    fn an_hour_before(r: &RunReport) -> RunReport {
        let mut earlier = r.clone();
        earlier.provenance.timestamp -= 3600;
        earlier
    }

    #[test]
    fn every_chart_draws_its_values_and_says_so_in_its_data() {
        let r = sample_report();
        for c in all(&r, &[an_hour_before(&r)]).unwrap() {
            assert!(c.svg.starts_with("<svg") && c.svg.contains("viewBox"), "{}", c.name);
            assert!(!c.values.is_empty(), "{} plots nothing", c.name);
            let back = crate::report::svg::read(&c.svg).unwrap();
            assert_eq!(back.data.as_ref(), Some(&c.values), "{}", c.name);
            assert_eq!(crate::report::svg::missing_values(&back, &c.values), Vec::<String>::new(), "{}", c.name);
            assert_eq!(c.svg.matches("falsify-data").count(), 1, "{}", c.name);
        }
    }

    /// Every `<text>` of `svg` whose estimated extent (font size × characters
    /// × 0.6 wide, placed by its text-anchor, turned by a `rotate`) leaves the viewBox.
    fn texts_outside_the_view_box(svg: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).unwrap();
        let num = |s: &str| s.trim().parse::<f64>().unwrap();
        let view: Vec<f64> = doc.root_element().attribute("viewBox").unwrap().split(' ').map(num).collect();
        let (right, bottom) = (view[0] + view[2], view[1] + view[3]);
        let mut outside = Vec::new();
        for t in doc.descendants().filter(|n| n.has_tag_name("text")) {
            let text: String = t.descendants().filter(|d| d.is_text()).filter_map(|d| d.text()).collect();
            let text = text.trim();
            let (x, y) = (num(t.attribute("x").unwrap()), num(t.attribute("y").unwrap()));
            let size = num(t.attribute("font-size").unwrap());
            let width = size * text.chars().count() as f64 * 0.6;
            let (start, end) = match t.attribute("text-anchor").unwrap_or("start") {
                "middle" => (-width / 2.0, width / 2.0),
                "end" => (-width, 0.0),
                _ => (0.0, width),
            };
            // Upright text runs along x; text turned by 90° or 270° runs along y.
            let turned = t.attribute("transform").is_some_and(|tr| tr.contains("rotate"));
            let (along, low, high) = if turned { (y, view[1], bottom) } else { (x, view[0], right) };
            let across = if turned { (x, view[0], right) } else { (y, view[1], bottom) };
            let fits_along = along + start >= low - 0.5 && along + end <= high + 0.5;
            // Plotters shifts text by dy: 0.76em hangs it below y, 0.5ex centres it, -0.5ex or none sits it on y.
            let (above, below) = match t.attribute("dy").unwrap_or("") {
                "0.76em" => (0.0, size),
                "0.5ex" => (size / 2.0, size / 2.0),
                _ => (size, 0.0),
            };
            let fits_across = across.0 - above >= across.1 - 0.5 && across.0 + below <= across.2 + 0.5;
            if !(fits_along && fits_across) {
                outside.push(format!("{text:?} at ({x}, {y}), {size} px, in a viewBox to ({right}, {bottom})"));
            }
        }
        outside
    }

    /// A report whose titles and names run far beyond any chart's width.
    fn absurdly_long_names() -> RunReport {
        let mut r = sample_report();
        let long = "an-absurdly-long-name-with-no-spaces-".repeat(8);
        let words = "a very long title made of many words that runs on ".repeat(10);
        for b in &mut r.benches {
            b.spec.model = format!("{long}model");
            for s in &mut b.result.series {
                s.engine = format!("{words}engine");
            }
        }
        for c in &mut r.claims {
            c.category = format!("{words}{}", c.category);
            if let Some(e) = c.outcome.evidence.as_mut() {
                e.metric = format!("{long}{}", e.metric);
            }
        }
        for f in &mut r.recorded {
            f.hardware = format!("{words}{}", f.hardware);
            f.source = format!("{long}{}", f.source);
        }
        if let Some(p) = r.bricks.as_mut() {
            p.model = format!("{words}{long}");
        }
        r
    }

    #[test]
    fn no_text_leaves_the_canvas_whatever_the_titles_length() {
        let r = sample_report();
        let long = absurdly_long_names();
        let runs = |r: &RunReport| {
            (0..60)
                .map(|h| {
                    let mut p = r.clone();
                    p.provenance.timestamp -= 3600 * (h + 1);
                    p.summary.score = 99.99 - h as f64;
                    p
                })
                .collect::<Vec<_>>()
        };
        let mut bare = sample_report();
        bare.benches.clear();
        bare.recorded.clear();
        bare.claims.clear();
        bare.bricks = None;
        for (what, r, past) in [
            ("sample", &r, vec![an_hour_before(&r)]),
            ("sample, 60 runs", &r, runs(&r)),
            ("long names", &long, runs(&long)),
            ("long names, one run", &long, vec![]),
            ("no data", &bare, vec![]),
        ] {
            for c in all(r, &past).unwrap() {
                assert_eq!(texts_outside_the_view_box(&c.svg), Vec::<String>::new(), "{what}: {}", c.name);
            }
        }
    }

    #[test]
    fn a_chart_with_too_little_data_says_so_in_words() {
        let r = sample_report();
        let mut bare = sample_report();
        bare.benches.clear();
        bare.recorded.clear();
        bare.claims.clear();
        bare.bricks = None;
        let one_run = history(&r, &[]).unwrap();
        let charts = all(&bare, &[]).unwrap();
        for c in std::iter::once(&one_run).chain(&charts) {
            let back = crate::report::svg::read(&c.svg).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert!(c.values.is_empty() && back.data == Some(Vec::new()), "{}", c.name);
            assert!(back.texts.len() >= 2, "{}: a title and a message, {:?}", c.name, back.texts);
        }
        assert!(one_run.svg.contains("One run so far: the history starts with the next run"), "{}", one_run.svg);
        let bricks = charts.iter().find(|c| c.name == "bricks").unwrap();
        assert!(bricks.svg.contains("No brick profile in this report"));
    }

    #[test]
    fn wrapping_keeps_every_word_and_each_line_within_its_width() {
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), [""]);
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
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
    fn recorded_figures_are_drawn_apart_once_each_and_ratios_show_thresholds() {
        let r = sample_report();
        let t = throughput(&r).unwrap();
        assert!(!t.svg.contains("recorded") && !t.svg.contains("RTX"), "live throughput only");
        assert!(t.values.iter().all(|v| !v.label.contains("RTX")), "{:?}", t.values);
        let rec = recorded(&r).unwrap();
        assert_eq!(rec.values.len(), r.recorded.len(), "each figure once");
        let f = &r.recorded[0];
        assert!(rec.values.iter().any(|v| v.label == recorded_label(f) && v.value == f.value), "{:?}", rec.values);
        assert!(rec.svg.contains("Recorded elsewhere, not measured here") && rec.svg.contains(&f.date));
        assert!(rec.svg.contains("Sources: ") && rec.svg.contains("RTX 4090"));
        let ratio = ratios(&r).unwrap();
        assert_eq!(ratio.values.len(), 2);
        assert!(ratio.svg.contains("claim threshold"));
        let b = bricks(&r).unwrap();
        assert_eq!(b.values.len(), 2 * crate::model::Brick::ALL.len());
        assert!(b.title.contains("most time in lm_head") && b.title.contains("largest excess"), "{}", b.title);
    }

    #[test]
    fn served_load_is_drawn_for_falsify_load_and_in_the_run_report() {
        use crate::load::metrics::{across_runs, RequestRecord, RunSummary, Slo};
        use crate::load::{LevelResult, Load, Plan};
        let run = |ttft: f64| {
            let r = RequestRecord::from_times(0, 0.0, &[ttft, ttft + 20.0, ttft + 45.0], ttft + 60.0, None);
            RunSummary::of(&[r], &Slo::default())
        };
        let levels: Vec<LevelResult> = [1, 4]
            .into_iter()
            .map(|streams| {
                let runs = vec![run(100.0 * streams as f64), run(110.0 * streams as f64)];
                LevelResult { load: Load::Concurrency { streams }, across: across_runs(&runs), runs }
            })
            .collect();
        let plan = Plan {
            levels: levels.iter().map(|l| l.load).collect(),
            requests: 1,
            runs: 2,
            warmup: 0,
            slo: Slo::default(),
            seed: 0,
        };
        let s = LoadSummary {
            engine: "llama-server".into(),
            base: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            prompts: "generated".into(),
            plan,
            levels,
        };
        let mut r = sample_report();
        assert!(serving(&r).unwrap().is_empty(), "no load served, no serving chart");
        let series = crate::record::tests::sample_series;
        r.series.push(series("serving 0.5b c=4 llama-server ttft_ms_p99", "ms", vec![400.0, 440.0]));
        r.series.push(series("serving 0.5b c=4 falsify-server output_tok_s", "tok/s", vec![30.0, 31.0]));
        let served = serving(&r).unwrap();
        assert_eq!(served.iter().map(|c| c.name).collect::<Vec<_>>(), ["serving_latency", "serving_throughput"]);
        assert_eq!(all(&r, &[]).unwrap().len(), 9);
        let charts = [load_latency(&s).unwrap(), load_throughput(&s).unwrap()];
        assert_eq!(charts[0].values.len(), 2 * 4);
        let p99 = charts[0].values.iter().find(|v| v.label == "concurrency 4 · ttft_ms_p99");
        assert_eq!(p99.map(|v| v.value), Some(420.0), "{:?}", charts[0].values);
        for c in charts.iter().chain(&served) {
            let back = crate::report::svg::read(&c.svg).unwrap();
            assert_eq!(back.data.as_ref(), Some(&c.values), "{}", c.name);
            assert_eq!(crate::report::svg::missing_values(&back, &c.values), Vec::<String>::new(), "{}", c.name);
            assert_eq!(texts_outside_the_view_box(&c.svg), Vec::<String>::new(), "{}", c.name);
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(write_load(dir.path(), &s).unwrap().len(), 2);
    }
}
