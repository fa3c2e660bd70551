//! `falsify top --headless`: decode a fixed number of tokens with every brick
//! timed and write one JSON document: the hardware and its measured ceilings,
//! throughput with its CV, each brick's score against its roofline budget,
//! the model's score and grade, the bottleneck and the project's quality
//! figures. In CI mode, thresholds on the score and throughput decide the
//! exit status.

use serde::{Deserialize, Serialize};

use super::live::{check_budgets, BrickError, Decoder, Recorder};
use super::quality::Quality;
use super::Session;
use crate::bench::bricks::BrickBudget;
use crate::bench::roofline::HostProbe;
use crate::bench::score::{self, BrickScore};
use crate::model::Brick;
use crate::provenance::Host;
use crate::stats;

/// The version of the headless document's layout.
pub const TOP_SCHEMA: u32 = 1;

/// How long and how a headless run measures.
#[derive(Debug, Clone)]
pub struct HeadlessOptions {
    /// Tokens measured after warm-up.
    pub tokens: usize,
    /// Tokens decoded first and not measured.
    pub warmup: usize,
    /// Tokens per throughput sample (the CV is taken across these windows).
    pub throughput_window: usize,
    /// Stop with [`BrickError::BudgetExceeded`] at the first brick over its budget.
    pub strict: bool,
}

/// The hardware a run measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// Host facts.
    pub host: Host,
    /// Measured ceilings.
    pub probe: HostProbe,
    /// Kernels in use.
    pub kernels: String,
    /// Worker threads.
    pub threads: usize,
}

/// Throughput over the measured tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Tokens ÷ their summed wall time.
    pub tok_per_s: f64,
    /// Tokens per second of each window of `window_tokens` tokens.
    pub window_tok_per_s: Vec<f64>,
    /// Tokens per window.
    pub window_tokens: usize,
    /// Coefficient of variation across the windows.
    pub cv: f64,
    /// Per-token wall time: mean, p50, p99, p999, µs.
    pub token_us: Percentiles,
}

/// Mean and percentiles of a set of times, µs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl Percentiles {
    /// Of `xs` (zeros when there are fewer than two).
    pub fn of(xs: &[f64]) -> Percentiles {
        stats::Summary::of(xs).map_or(Percentiles { mean: 0.0, p50: 0.0, p99: 0.0, p999: 0.0 }, |s| Percentiles {
            mean: s.mean,
            p50: s.median,
            p99: s.p99,
            p999: s.p999,
        })
    }
}

/// The brick that misses its budget by the most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bottleneck {
    /// Brick name.
    pub name: String,
    /// Actual − budget, µs per token: what the bottleneck is picked on.
    #[serde(default)]
    pub excess_us: f64,
    /// Actual ÷ budget.
    pub gap_factor: f64,
    /// Mean time per token, µs.
    pub actual_us: f64,
    /// Budget, µs.
    pub budget_us: f64,
    /// Its share of the bricks' time.
    pub share: f64,
}

/// The headless document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopReport {
    /// [`TOP_SCHEMA`].
    pub schema: u32,
    /// Model file.
    pub model: String,
    /// Tokens measured.
    pub tokens: usize,
    /// Tokens of warm-up.
    pub warmup: usize,
    /// Positions decoded per round before the cache is cut back to the prompt.
    pub window: usize,
    /// Hardware and ceilings.
    pub hardware: Hardware,
    /// Throughput.
    pub throughput: Throughput,
    /// Bricks' time over the measured wall time.
    pub coverage: f64,
    /// Budget over roofline.
    pub allowance: f64,
    /// Each brick's roofline and budget, with the derivation.
    pub budgets: Vec<BrickBudget>,
    /// Each brick's score.
    pub brick_scores: Vec<BrickScore>,
    /// Each brick's per-token p50 / p99 / p999, µs, in brick order.
    pub brick_latency_us: Vec<Percentiles>,
    /// Mean of the brick scores.
    pub model_score: f64,
    /// Its grade.
    pub grade: String,
    /// The brick with the largest excess over its budget (µs per token).
    pub bottleneck: Option<Bottleneck>,
    /// The brick with the largest share of the time (what a sampling profiler ranks first).
    pub hotspot: Option<Bottleneck>,
    /// Tests, clippy warnings, unsafe blocks, coverage.
    pub quality: Quality,
}

/// Builds the document from what `recorder` holds.
pub fn report(session: &Session<'_>, recorder: &Recorder, opts: &HeadlessOptions, quality: Quality) -> TopReport {
    let scores = recorder.scores(&session.budgets, &session.probe);
    let windows = recorder.window_tok_per_s(opts.throughput_window);
    let cv = stats::Summary::of(&windows).map_or(f64::NAN, |s| s.cv);
    let total: f64 = scores.iter().map(|s| s.actual_us).sum();
    let model_score = score::model_score(scores.iter().map(|s| s.score));
    TopReport {
        schema: TOP_SCHEMA,
        model: session.model_path.clone(),
        tokens: recorder.samples().len(),
        warmup: opts.warmup,
        window: session.window,
        hardware: Hardware {
            host: session.host.clone(),
            probe: session.probe.clone(),
            kernels: session.kernels.clone(),
            threads: session.threads,
        },
        throughput: Throughput {
            tok_per_s: recorder.tok_per_s(),
            window_tok_per_s: windows,
            window_tokens: opts.throughput_window,
            cv,
            token_us: Percentiles::of(&recorder.wall_us()),
        },
        coverage: recorder.coverage(),
        allowance: session.allowance,
        budgets: session.budgets.clone(),
        brick_latency_us: Brick::ALL.iter().map(|&b| Percentiles::of(&recorder.brick_us(b))).collect(),
        bottleneck: score::bottleneck(&scores).map(|b| summary(b, total)),
        hotspot: score::hotspot(&scores).map(|b| summary(b, total)),
        brick_scores: scores,
        model_score,
        grade: score::grade(model_score).into(),
        quality,
    }
}

/// One brick's gap, times and share of `total_us`.
fn summary(b: &BrickScore, total_us: f64) -> Bottleneck {
    Bottleneck {
        name: b.name.clone(),
        excess_us: b.actual_us - b.budget_us,
        gap_factor: b.gap_factor,
        actual_us: b.actual_us,
        budget_us: b.budget_us,
        share: if total_us > 0.0 { b.actual_us / total_us } else { 0.0 },
    }
}

/// Decodes `opts.warmup + opts.tokens` tokens, recording the measured ones;
/// `progress` hears about every tenth of the way. The decoding runs on a
/// thread of its own pinned to the first core, beside the pool's workers on
/// the others; the caller keeps its affinity, so the processes it starts
/// afterwards (the baselines) may use every core.
pub fn measure(
    session: &Session<'_>,
    opts: &HeadlessOptions,
    progress: impl FnMut(usize) + Send,
) -> Result<Recorder, BrickError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            super::live::pin_to_first_core();
            decode(session, opts, progress)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn decode(
    session: &Session<'_>,
    opts: &HeadlessOptions,
    mut progress: impl FnMut(usize),
) -> Result<Recorder, BrickError> {
    let mut decoder = Decoder::new(session.model, &session.prompt, session.window)?;
    for _ in 0..opts.warmup {
        decoder.step()?;
    }
    let mut recorder = Recorder::new(opts.tokens);
    for i in 0..opts.tokens {
        let sample = decoder.step()?;
        if opts.strict {
            check_budgets(&sample, &session.budgets)?;
        }
        recorder.push(sample);
        if (i + 1) % (opts.tokens / 10).max(1) == 0 {
            progress(i + 1);
        }
    }
    Ok(recorder)
}

/// CI thresholds: a model score and a throughput that must be met.
#[derive(Debug, Clone, Copy, Default)]
pub struct Thresholds {
    /// Lowest acceptable model score (0–100).
    pub brick_score: Option<f64>,
    /// Lowest acceptable tokens per second.
    pub throughput: Option<f64>,
}

/// Each threshold `report` misses, as a sentence (none: CI passes).
pub fn ci_failures(report: &TopReport, t: &Thresholds) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(min) = t.brick_score.filter(|&min| report.model_score.is_nan() || report.model_score < min) {
        out.push(format!(
            "model brick score {:.1} ({}) is below the threshold {min}",
            report.model_score, report.grade
        ));
    }
    if let Some(min) =
        t.throughput.filter(|&min| report.throughput.tok_per_s.is_nan() || report.throughput.tok_per_s < min)
    {
        out.push(format!("throughput {:.2} tok/s is below the threshold {min} tok/s", report.throughput.tok_per_s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tied_model;

    fn opts(tokens: usize, strict: bool) -> HeadlessOptions {
        HeadlessOptions { tokens, warmup: 2, throughput_window: 4, strict }
    }

    #[test]
    fn a_headless_run_scores_every_brick_and_serializes() {
        let m = tied_model();
        let session = Session::new(&m, "tiny.gguf", vec![1, 2, 3], 8, HostProbe::stated(10.0, 50.0, 20.0), 1.5);
        let mut seen = Vec::new();
        let before = crate::testing::cpus_allowed();
        let rec = measure(&session, &opts(16, false), |n| seen.push(n)).unwrap();
        assert_eq!(seen.last(), Some(&16));
        // The decoding thread is pinned, the caller (and what it starts later) is not.
        assert_eq!(crate::testing::cpus_allowed(), before);
        let q = super::super::quality::measure(std::path::Path::new("/nonexistent"), false);
        let r = report(&session, &rec, &opts(16, false), q);
        assert_eq!((r.tokens, r.brick_scores.len(), r.throughput.window_tok_per_s.len()), (16, Brick::ALL.len(), 4));
        for (s, b) in r.brick_scores.iter().zip(Brick::ALL) {
            assert_eq!(s.name, b.name());
            assert!((0.0..=100.0).contains(&s.score) && s.actual_us > 0.0, "{s:?}");
        }
        let mean = r.brick_scores.iter().map(|s| s.score).sum::<f64>() / Brick::ALL.len() as f64;
        assert!((r.model_score - mean).abs() < 1e-9);
        let worst = r.brick_scores.iter().map(|s| s.actual_us - s.budget_us).fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(r.bottleneck.as_ref().unwrap().excess_us, worst);
        let most = r.brick_scores.iter().map(|s| s.actual_us).fold(0.0, f64::max);
        assert_eq!(r.hotspot.as_ref().unwrap().actual_us, most);
        let back: TopReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.brick_scores.len(), Brick::ALL.len());
    }

    #[test]
    fn strict_mode_stops_at_a_brick_over_its_budget() {
        let m = tied_model();
        // Ceilings a thousand times beyond any CPU: every budget is missed.
        let session = Session::new(&m, "tiny.gguf", vec![1, 2], 8, HostProbe::stated(1e6, 1e6, 1e6), 1.5);
        let e = measure(&session, &opts(8, true), |_| {}).unwrap_err();
        assert!(
            matches!(e, BrickError::BudgetExceeded { token: 2, .. }),
            "the first token after the 2 of warm-up: {e}"
        );
        assert!(measure(&session, &opts(8, false), |_| {}).is_ok(), "without strict mode the run goes on");
    }

    #[test]
    fn ci_thresholds_fail_when_missed() {
        let m = tied_model();
        let session = Session::new(&m, "tiny.gguf", vec![1, 2], 8, HostProbe::stated(10.0, 50.0, 20.0), 1.5);
        let rec = measure(&session, &opts(8, false), |_| {}).unwrap();
        let r =
            report(&session, &rec, &opts(8, false), super::super::quality::measure(std::path::Path::new("/x"), false));
        assert!(ci_failures(&r, &Thresholds::default()).is_empty());
        assert!(ci_failures(&r, &Thresholds { brick_score: Some(0.0), throughput: Some(0.001) }).is_empty());
        let failed = ci_failures(&r, &Thresholds { brick_score: Some(101.0), throughput: Some(1e12) });
        assert_eq!(failed.len(), 2, "{failed:?}");
    }
}
