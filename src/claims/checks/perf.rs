//! Performance checks over the interleaved benchmark of engine a against b:
//! ratios and absolute rates (`bench`), run-wide quality of every sample
//! series the run took (`bench_quality`), the fraction of the memory roofline reached
//! (`bandwidth_fraction`), kernel throughput (`dot_gflops`) and load time
//! (`load_time`).

use std::time::Instant;

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::{kind, Check, Kind};
use crate::bench::roofline;
use crate::bench::{BenchResult, Series};
use crate::claims::{BaselineValue, Context, Outcome, Unmet, Verdict};
use crate::gguf::TensorType;
use crate::kernels::Kernels;
use crate::quant::SumOrder;
use crate::record::{BenchSpec, SampleSeries};
use crate::stats::{self, Op};

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![
        kind::<BenchCheck>(),
        kind::<BenchQuality>(),
        kind::<BandwidthFraction>(),
        kind::<DotGflops>(),
        kind::<LoadTime>(),
        kind::<ContextDecay>(),
    ]
}

fn default_a() -> String {
    crate::bench::ENGINE.into()
}
fn default_b() -> String {
    "llama.cpp".into()
}
fn default_prompt() -> usize {
    32
}
fn default_gen() -> usize {
    128
}

/// Which benchmark a claim reads: model, engines a and b, prompt and
/// generation length.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchOf {
    /// Model size.
    pub model: String,
    /// The engine measured: any engine of the run (default `falsify`, in process).
    #[serde(default = "default_a")]
    pub a: String,
    /// The engine it is compared with (default `llama.cpp`), or `none`;
    /// `baseline` is its older name.
    #[serde(default = "default_b", alias = "baseline")]
    pub b: String,
    /// Prompt tokens of the prefill test (default 32).
    #[serde(default = "default_prompt")]
    pub prompt: usize,
    /// Tokens of the decode test (default 128).
    #[serde(default = "default_gen")]
    pub gen: usize,
}

impl BenchOf {
    /// The benchmark it names (the engines' names are checked when it runs).
    pub fn spec(&self) -> BenchSpec {
        BenchSpec {
            model: self.model.clone(),
            a: self.a.clone(),
            b: self.b.clone(),
            prompt: self.prompt,
            gen: self.gen,
        }
    }
}

/// What a `bench` claim reads from the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchMetric {
    /// Engine a's decode tok/s over b's (ratio of medians).
    DecodeRatio,
    /// Engine a's prefill tok/s over b's.
    PrefillRatio,
    /// Engine a's time to first token over b's (b's prompt time where it
    /// reports no time to first token, as llama-bench does).
    TtftRatio,
    /// Engine a's decode tok/s.
    DecodeTokS,
    /// Engine a's prefill tok/s.
    PrefillTokS,
    /// Engine a's time to first token, ms.
    TtftMs,
    /// p99 / p50 of engine a's per-token decode latency.
    ItlP99OverP50,
}

/// Parameters of `bench`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchParams {
    /// The benchmark.
    #[serde(flatten)]
    pub of: BenchOf,
    /// What to read from it.
    pub metric: BenchMetric,
    /// Operator.
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
    /// Fewest samples the metric must rest on (e.g. 256 decode tokens); fewer is inconclusive.
    #[serde(default)]
    pub min_samples: usize,
}

fn series<'a>(r: &'a BenchResult, engine: &str, metric: &str) -> Result<&'a Series, Unmet> {
    r.series
        .iter()
        .find(|s| s.engine == engine && s.metric == metric)
        .ok_or_else(|| Unmet::Failed(format!("the benchmark has no {engine} {metric} series")))
}

fn baseline_of(r: &BenchResult, engine: &str, metric: &str) -> Option<BaselineValue> {
    let s = r.series.iter().find(|s| s.engine == engine && s.metric == metric)?;
    let provenance = r.provenance.baselines.iter().find(|(e, _)| e == engine).map(|(_, p)| p.clone());
    Some(BaselineValue { engine: engine.into(), value: s.summary.median, provenance })
}

/// Reads `metric` of engine `a` (over engine `b`) from a benchmark result as a quantity.
pub fn bench_quantity(r: &BenchResult, a: &str, b: &str, metric: BenchMetric) -> Result<Quantity, Unmet> {
    let ours = |m: &str| series(r, a, m);
    let ratio = |m: &str, name: &str| -> Result<Quantity, Unmet> {
        let c =
            r.comparisons.iter().find(|c| c.metric == m && c.a == a && c.b == b).ok_or_else(|| {
                Unmet::Failed(format!("the benchmark has no {m} comparison of {a} with {b} (b `none`?)"))
            })?;
        let s = ours(m)?;
        let mut q = Quantity::of_samples(name, "x", &s.samples);
        q.value = c.ratio.ratio;
        q.ci = Some(c.ratio.ci);
        q.baseline = baseline_of(r, b, m);
        Ok(q.detail(format!("{a} median {} tok/s; samples are {a}'s", judge::num(s.summary.median))))
    };
    let q = match metric {
        BenchMetric::DecodeRatio => ratio("decode_tok_s", "decode_ratio")?,
        BenchMetric::PrefillRatio => ratio("prefill_tok_s", "prefill_ratio")?,
        BenchMetric::TtftRatio => {
            let ttft = ours("ttft_ms")?;
            let (theirs, how) = match series(r, b, "ttft_ms") {
                Ok(s) => (s.samples.clone(), format!("{b}'s time to first token as it reported it (ms)")),
                Err(_) => {
                    let n = r.protocol.n_prompt as f64;
                    let pp = series(r, b, "prefill_tok_s")?;
                    let prompt_ms = pp.samples.iter().map(|tps| n / tps * 1e3).collect();
                    (prompt_ms, format!("{b}'s time to first token is its {}-token prompt time (ms)", n))
                }
            };
            let rt = stats::ratio_of_medians(&ttft.samples, &theirs, 0.95, stats::DEFAULT_RESAMPLES, 0x5eed)
                .map_err(Unmet::failed)?;
            let mut q = Quantity::of_samples("ttft_ratio", "x", &ttft.samples);
            q.value = rt.ratio;
            q.ci = Some(rt.ci);
            q.baseline = Some(BaselineValue {
                engine: b.into(),
                value: stats::median(&theirs),
                provenance: baseline_of(r, b, "prefill_tok_s").and_then(|b| b.provenance),
            });
            q.detail(how)
        }
        BenchMetric::DecodeTokS => Quantity::of_samples("decode_tok_s", "tok/s", &ours("decode_tok_s")?.samples),
        BenchMetric::PrefillTokS => Quantity::of_samples("prefill_tok_s", "tok/s", &ours("prefill_tok_s")?.samples),
        BenchMetric::TtftMs => Quantity::of_samples("ttft_ms", "ms", &ours("ttft_ms")?.samples),
        BenchMetric::ItlP99OverP50 => {
            let s = ours("itl_ms")?;
            let mut q = Quantity::new("itl_p99_over_p50", "x", p99_over_p50(&s.samples));
            q.n = s.samples.len();
            q.cv = Some(s.summary.cv);
            q.ci = judge::bootstrap(&s.samples, p99_over_p50);
            q.detail(format!(
                "per-token decode latency p50 {} ms, p99 {} ms",
                judge::num(s.summary.median),
                judge::num(s.summary.p99)
            ))
        }
    };
    Ok(q.detail(format!(
        "protocol: {} warmup + {} runs, {} threads",
        r.protocol.warmup, r.protocol.runs, r.protocol.threads
    )))
}

/// Judges a `bench` claim on a benchmark result.
pub fn judge_bench(p: &BenchParams, r: &BenchResult) -> Result<Outcome, Unmet> {
    let q = bench_quantity(r, &p.of.a, &p.of.b, p.metric)?;
    if q.n < p.min_samples {
        let mut out = judge::quantity(q.clone(), p.op, p.threshold);
        out.verdict = crate::claims::Verdict::Inconclusive;
        out.sentence = format!("{} rests on {} samples; the claim needs at least {}", q.metric, q.n, p.min_samples);
        return Ok(out);
    }
    Ok(judge::quantity(q, p.op, p.threshold))
}

/// `bench`: a metric of the interleaved benchmark of engine a against b, against a threshold.
pub struct BenchCheck;

impl Check for BenchCheck {
    const NAME: &'static str = "bench";
    const DOC: &'static str =
        "a ratio or rate from the interleaved benchmark of engine a against engine b, decided on its 95% CI";
    const PARAMS: &'static str = "model, a (any engine; default falsify), b (any engine or none; default llama.cpp; \
         also `baseline`), prompt, gen, metric (decode_ratio|prefill_ratio|ttft_ratio|decode_tok_s|prefill_tok_s|\
         ttft_ms|itl_p99_over_p50), op, threshold, min_samples";
    type Params = BenchParams;

    fn run(p: &BenchParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let r = cx.bench(&p.of.spec())?;
        judge_bench(p, &r)
    }
}

/// p99 / p50 of a latency sample.
pub fn p99_over_p50(xs: &[f64]) -> f64 {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    stats::quantile_sorted(&sorted, 0.99) / stats::quantile_sorted(&sorted, 0.5)
}

/// Coefficient of variation (sample standard deviation over the mean).
pub fn cv(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    var.sqrt() / mean
}

/// What `bench_quality` reads across every sample series of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityMetric {
    /// The largest coefficient of variation of any rate series (unit `…/s`), with its 95% CI.
    MaxCv,
    /// The largest p99 / p50 of any latency series (unit `ms`), with its 95% CI.
    MaxP99OverP50,
    /// The fewest measured runs (after warmup) behind any series.
    MinRuns,
}

impl QualityMetric {
    fn name(self) -> &'static str {
        match self {
            QualityMetric::MaxCv => "max_cv",
            QualityMetric::MaxP99OverP50 => "max_p99_over_p50",
            QualityMetric::MinRuns => "min_runs",
        }
    }

    /// The statistic of one series, or `None` when the metric does not cover its unit.
    fn statistic(self, unit: &str) -> Option<fn(&[f64]) -> f64> {
        match self {
            QualityMetric::MaxCv if unit.ends_with("/s") => Some(cv),
            QualityMetric::MaxP99OverP50 if unit == "ms" => Some(p99_over_p50),
            _ => None,
        }
    }
}

/// Parameters of `bench_quality`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityParams {
    /// Benchmarks taken first, so that they are in the record even when no
    /// other claim of the run takes them.
    #[serde(default)]
    pub benches: Vec<BenchOf>,
    /// What to read.
    pub metric: QualityMetric,
    /// Operator.
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
}

/// Judges a run-wide measurement-quality claim over every recorded sample
/// series. `min_runs` is exact; `max_cv` and `max_p99_over_p50` carry the
/// interval (largest lower bound, largest upper bound) of the per-series 95%
/// bootstrap CIs, so noise that could put the worst series on either side of
/// the threshold is inconclusive.
pub fn judge_quality(p: &QualityParams, series: &[SampleSeries]) -> Outcome {
    let name = p.metric.name();
    if p.metric == QualityMetric::MinRuns {
        let worst = series.iter().min_by_key(|s| s.samples.len());
        let mut q = Quantity::new(name, "runs", worst.map_or(f64::NAN, |s| s.samples.len() as f64));
        q.n = series.len();
        q.details = series
            .iter()
            .filter(|s| stats::decide_value(s.samples.len() as f64, p.op, p.threshold) != stats::Decision::Pass)
            .map(|s| format!("{}: {} measured runs after {} warmup", s.name, s.samples.len(), s.warmup))
            .collect();
        q.details.insert(0, format!("{} series recorded by the run", series.len()));
        return judge::quantity(q, p.op, p.threshold);
    }
    let (mut value, mut lo, mut hi, mut n) = (f64::NAN, f64::NAN, f64::NAN, 0);
    let (mut worst, mut unestimated) = (String::from("no series"), Vec::new());
    for s in series {
        let Some(stat) = p.metric.statistic(&s.unit) else { continue };
        let Some(ci) = judge::bootstrap(&s.samples, stat) else {
            unestimated.push(format!("{} ({} samples)", s.name, s.samples.len()));
            continue;
        };
        let v = stat(&s.samples);
        n += 1;
        if value.is_nan() || v > value {
            value = v;
            worst = format!("{}: {} (95% CI {}–{})", s.name, judge::num(v), judge::num(ci.lo), judge::num(ci.hi));
        }
        lo = if lo.is_nan() { ci.lo } else { lo.max(ci.lo) };
        hi = if hi.is_nan() { ci.hi } else { hi.max(ci.hi) };
    }
    let mut q = Quantity::new(name, "x", value);
    q.n = n;
    q.ci = (!lo.is_nan()).then_some(stats::Interval { lo, hi, level: 0.95 });
    q.details.push(format!("worst: {worst}"));
    if !unestimated.is_empty() {
        q.details.push(format!("too few samples to estimate: {}", unestimated.join(", ")));
    }
    judge::quantity(q, p.op, p.threshold)
}

/// `bench_quality`: run-wide measurement quality over every sample series the run took.
pub struct BenchQuality;

impl Check for BenchQuality {
    const NAME: &'static str = "bench_quality";
    const DOC: &'static str = "the worst CV, p99/p50 or run count over every sample series the run took";
    const PARAMS: &'static str =
        "benches (taken first: list of {model, a, b, prompt, gen}), metric (max_cv|max_p99_over_p50|min_runs), \
         op, threshold";
    type Params = QualityParams;

    fn run(p: &QualityParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        for b in &p.benches {
            cx.bench(&b.spec())?;
        }
        Ok(judge_quality(p, cx.series()))
    }
}

/// Parameters of `bandwidth_fraction`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandwidthParams {
    /// The benchmark whose decode rate is used.
    #[serde(flatten)]
    pub of: BenchOf,
    /// Operator.
    pub op: Op,
    /// Threshold (a fraction of the measured read bandwidth).
    pub threshold: f64,
}

/// The roofline observation: decode rate samples, bytes per token, read bandwidth samples.
#[derive(Debug, Clone)]
pub struct Roofline {
    /// Engine decode tok/s samples.
    pub decode_tok_s: Vec<f64>,
    /// Bytes one decode step reads.
    pub bytes_per_token: u64,
    /// Measured read bandwidth samples, GB/s.
    pub bandwidth_gb_s: Vec<f64>,
    /// Whether `bandwidth_gb_s[i]` was taken right after `decode_tok_s[i]` (a
    /// pass after each benchmark round), so each rate has its own bandwidth.
    pub paired: bool,
}

/// Judges achieved bytes/s over measured read bandwidth. Paired samples give
/// one fraction per benchmark round (its rate over the pass after it), and
/// the interval is the bootstrap CI of their median: the host's drift between
/// rounds moves both and cancels. Otherwise the interval carries both
/// spreads: the decode rate's and the bandwidth probe's (bootstrap CIs of
/// their medians, the low rate over the high bandwidth and back). A
/// fraction above 1 beyond that spread (the interval's low end above 1) is
/// physically impossible (the probe under-measured the bandwidth): an error,
/// never a pass. A median above 1 whose interval reaches below 1 is within
/// the two measurements' noise, and is judged on its interval like any other.
pub fn judge_bandwidth(p: &BandwidthParams, o: &Roofline) -> Outcome {
    let bw = stats::median(&o.bandwidth_gb_s);
    let gb_per_token = o.bytes_per_token as f64 / 1e9;
    let paired = o.paired && o.bandwidth_gb_s.len() == o.decode_tok_s.len();
    let fractions: Vec<f64> = match paired {
        true => o.decode_tok_s.iter().zip(&o.bandwidth_gb_s).map(|(t, b)| t * gb_per_token / b).collect(),
        false => o.decode_tok_s.iter().map(|t| t * gb_per_token / bw).collect(),
    };
    let ci = |xs: &[f64]| stats::bootstrap_median(xs, 0.95, stats::DEFAULT_RESAMPLES, 0x5eed).ok();
    let bw_ci = ci(&o.bandwidth_gb_s).unwrap_or(stats::Interval { lo: bw, hi: bw, level: 0.95 });
    let mut q = Quantity::of_samples("bandwidth_fraction", "fraction", &fractions);
    q.ci = match paired {
        true => ci(&fractions),
        false => ci(&o.decode_tok_s).map(|t| stats::Interval {
            lo: t.lo * gb_per_token / bw_ci.hi,
            hi: t.hi * gb_per_token / bw_ci.lo,
            level: t.level,
        }),
    };
    q.details = vec![
        format!("bytes read per decoded token: {:.1} MB", o.bytes_per_token as f64 / 1e6),
        format!("achieved: {} GB/s", judge::num(stats::median(&o.decode_tok_s) * gb_per_token)),
        format!(
            "measured read bandwidth: {} GB/s (median of {} measurements, 95% CI {}–{})",
            judge::num(bw),
            o.bandwidth_gb_s.len(),
            judge::num(bw_ci.lo),
            judge::num(bw_ci.hi)
        ),
    ];
    let (value, low) = (q.value, q.ci.map_or(q.value, |ci| ci.lo));
    if value > 1.0 && low <= 1.0 {
        q.details.push(format!(
            "the median fraction is above 1, but its interval reaches {}: within the decode rate's and the probe's noise",
            judge::num(low)
        ));
    }
    let mut out = judge::quantity(q, p.op, p.threshold);
    if low > 1.0 {
        out.verdict = Verdict::Error;
        out.sentence = format!(
            "bandwidth_fraction = {}: decode cannot read faster than the memory delivers, so the bandwidth probe under-measured ({} GB/s); no verdict on the claim",
            judge::num(value),
            judge::num(bw)
        );
    }
    out
}

/// The host's read bandwidth passes, GB/s, from the run's host probe.
pub fn bandwidth(cx: &mut Context) -> Result<Vec<f64>, Unmet> {
    Ok(cx.host_probe()?.bandwidth_samples)
}

/// `bandwidth_fraction`: decode's achieved bytes/s over the measured read bandwidth.
pub struct BandwidthFraction;

impl Check for BandwidthFraction {
    const NAME: &'static str = "bandwidth_fraction";
    const DOC: &'static str =
        "engine a's decode tok/s × bytes read per token ÷ the read bandwidth measured between the benchmark's rounds, against a threshold";
    const PARAMS: &'static str = "model, a, b, prompt, gen (the benchmark), op, threshold";
    type Params = BandwidthParams;

    fn run(p: &BandwidthParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let spec = p.of.spec();
        let r = cx.bench(&spec)?;
        let decode = series(&r, &spec.a, "decode_tok_s")?.samples.clone();
        let ctx = spec.prompt.min(1) + spec.gen / 2;
        let bytes = roofline::bytes_per_token(&cx.model(&spec.model)?.model, ctx);
        // The bandwidth of the benchmark's own minutes: a shared host's moves by the hour.
        let (bw, paired) = match cx.bench_bandwidth(&spec) {
            Some(passes) if passes.len() == decode.len() => (passes.to_vec(), true),
            _ => (bandwidth(cx)?, false),
        };
        let mut out =
            judge_bandwidth(p, &Roofline { decode_tok_s: decode, bytes_per_token: bytes, bandwidth_gb_s: bw, paired });
        if let Some(e) = out.evidence.as_mut() {
            e.details.push(match paired {
                true => "read bandwidth: measured after each round of the benchmark (16 passes over 256 MiB), each round's fraction over its own",
                false => "read bandwidth: the run's host probe",
            }.into());
        }
        Ok(out)
    }
}

/// Parameters of `dot_gflops`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DotParams {
    /// Weight type (`q8_0`, `q5_0`, `q4_k`, `q6_k`).
    pub ty: String,
    /// Operator.
    pub op: Op,
    /// Threshold, GFLOP/s.
    pub threshold: f64,
}

fn tensor_type(name: &str) -> Result<TensorType, Unmet> {
    Ok(match name {
        "q8_0" => TensorType::Q8_0,
        "q5_0" => TensorType::Q5_0,
        "q4_k" => TensorType::Q4K,
        "q6_k" => TensorType::Q6K,
        _ => return Err(Unmet::Failed(format!("unknown weight type `{name}` (q8_0, q5_0, q4_k, q6_k)"))),
    })
}

/// GFLOP/s samples of the fast matrix kernel for `ty` on one thread, as the
/// engine runs it (packed tiles): a 3584-wide, 256-row weight block
/// (L2-resident) times one activation row. The scalar implementation has no
/// packed kernel and times the reference row by row.
pub fn dot_gflops_samples(kernels: Kernels, ty: TensorType, reps: usize) -> Vec<f64> {
    use crate::kernels::packed::{ActRow, PackedMatrix, TILE_ROWS};
    let cols = 896 * 4;
    let rows = 256;
    let row_bytes = ty.row_bytes(cols).expect("a supported type");
    let mut rng = crate::rng::SplitMix64(7);
    let weights: Vec<u8> = (0..rows * row_bytes).map(|_| (rng.next_u64() & 0x3f) as u8).collect();
    let act_ty = crate::quant::dot_type(ty).expect("a quantized type");
    let x: Vec<f32> = (0..cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let mut act = vec![0u8; act_ty.row_bytes(cols).expect("a supported type")];
    crate::quant::quantize(act_ty, &x, &mut act).expect("sizes match");
    let packed = PackedMatrix::pack(ty, rows, cols, &weights).filter(|_| kernels.uses_packed());
    let act_row = ActRow::of(act_ty, &act);
    let mut out = [0.0f32; TILE_ROWS];
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        let mut passes = 0usize;
        while start.elapsed().as_secs_f64() < 0.05 {
            match &packed {
                Some(p) => (0..p.tiles()).for_each(|i| {
                    kernels.tile_dot_many(p, i, std::slice::from_ref(&act_row), SumOrder::process(), &mut out)
                }),
                None => weights.chunks_exact(row_bytes).for_each(|r| out[0] = kernels.dot(ty, r, &act)),
            }
            std::hint::black_box(&out);
            passes += 1;
        }
        let flops = 2.0 * (cols * rows * passes) as f64;
        samples.push(flops / start.elapsed().as_secs_f64() / 1e9);
    }
    samples
}

/// `dot_gflops`: throughput of the fast dot-product kernel.
pub struct DotGflops;

impl Check for DotGflops {
    const NAME: &'static str = "dot_gflops";
    const DOC: &'static str = "GFLOP/s of the fast quantized dot-product kernel on one thread (cache-resident)";
    const PARAMS: &'static str = "ty (q8_0|q5_0|q4_k|q6_k), op, threshold";
    type Params = DotParams;

    fn run(p: &DotParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let ty = tensor_type(&p.ty)?;
        let kernels = Kernels::detect();
        cx.say(format_args!("timing the {} {} dot kernel", kernels.name(), p.ty));
        let samples = dot_gflops_samples(kernels, ty, 15);
        cx.record_series(format!("dot_gflops {} {}", kernels.name(), p.ty), "GFLOP/s", 0, &samples);
        let q = Quantity::of_samples("dot_gflops", "GFLOP/s", &samples).detail(format!(
            "{} kernels, {} weights, 1 thread",
            kernels.name(),
            p.ty
        ));
        Ok(judge::quantity(q, p.op, p.threshold))
    }
}

/// Parameters of `load_time`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadParams {
    /// Model size.
    pub model: String,
    /// The engine timed (default `falsify`, in process).
    #[serde(default = "default_a")]
    pub a: String,
    /// The engine it is compared with (default `llama.cpp`).
    #[serde(default = "default_b")]
    pub b: String,
    /// Operator on (a's load time ÷ b's).
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
    /// Runs of each (default 5).
    #[serde(default = "default_load_runs")]
    pub runs: usize,
}

fn default_load_runs() -> usize {
    5
}

/// One engine's load-time samples, ms, and how they were timed.
#[derive(Debug, Clone)]
pub struct Loads {
    /// The engine's name.
    pub engine: String,
    /// Its samples, ms.
    pub ms: Vec<f64>,
    /// What one sample spans.
    pub how: &'static str,
}

/// Judges load-time samples of engines a and b as a ratio of medians.
pub fn judge_load(p: &LoadParams, a: &Loads, b: &Loads, provenance: Option<String>) -> Result<Outcome, Unmet> {
    let r = stats::ratio_of_medians(&a.ms, &b.ms, 0.95, stats::DEFAULT_RESAMPLES, 0x5eed).map_err(Unmet::failed)?;
    let mut q = Quantity::of_samples("load_ratio", "x", &a.ms);
    q.value = r.ratio;
    q.ci = Some(r.ci);
    q.baseline = Some(BaselineValue { engine: b.engine.clone(), value: stats::median(&b.ms), provenance });
    let q = q
        .detail(format!("{}: {}, ms (samples are {}'s)", a.engine, a.how, a.engine))
        .detail(format!("{}: {}, ms", b.engine, b.how));
    Ok(judge::quantity(q, p.op, p.threshold))
}

/// Times one load of `engine` on the model file `path`: what it spans, and ms.
fn load_once(cx: &mut Context, engine: &crate::engines::Engine, size: &str) -> Result<(&'static str, f64), Unmet> {
    use crate::engines::Source;
    let threads = cx.settings.threads;
    let path = cx.model_path(size)?;
    match &engine.source {
        Source::InProcess => {
            let start = Instant::now();
            let mut m = crate::model::Model::load(&path).map_err(Unmet::failed)?;
            m.set_threads(threads);
            let tok = crate::tokenizer::Tokenizer::from_header(&m.file.header).map_err(Unmet::failed)?;
            let first = tok.encode("def", false);
            m.forward(&first, &mut m.new_cache(first.len()), crate::model::Logits::Last).map_err(Unmet::failed)?;
            Ok(("open + map + tokenizer + first 1-token forward", start.elapsed().as_secs_f64() * 1e3))
        }
        Source::LlamaCli => {
            let ms = cx.llama()?.load_time_ms(&path, threads).map_err(Unmet::failed)?;
            Ok(("`load time` printed by llama-completion -n 1 (model load and context creation)", ms))
        }
        Source::Url { .. } | Source::Ollama => Err(Unmet::Failed(format!(
            "engine `{}` is a server already running: its load cannot be timed (load_time starts what it times)",
            engine.name
        ))),
        Source::LlamaServer | Source::FalsifyServer | Source::Command { .. } => {
            let with = cx.serve_with(size, 1)?;
            let start = Instant::now();
            let endpoint = engine.serve(&with)?;
            let request = crate::load::prompts::Request { prompt: " def".into(), max_tokens: 1 };
            let record = crate::load::client::send(&crate::load::client::agent(1), &endpoint, &request, 0, start);
            if let Some(e) = record.error {
                return Err(Unmet::Failed(format!("engine `{}`: its first request failed: {e}", engine.name)));
            }
            Ok((
                "start of its server → ready → first streamed token of a 1-token request",
                record.sent_ms + record.ttft_ms,
            ))
        }
    }
}

/// `load_time`: engine a's load (open → first token ready) against engine b's, interleaved.
pub struct LoadTime;

impl Check for LoadTime {
    const NAME: &'static str = "load_time";
    const DOC: &'static str =
        "engine a's model load (start → first token ready) over engine b's (default falsify over llama.cpp), interleaved runs";
    const PARAMS: &'static str = "model, a (default falsify), b (default llama.cpp), op, threshold, runs";
    type Params = LoadParams;

    fn run(p: &LoadParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let engines = [
            cx.engines.get(&p.a).map_err(Unmet::Failed)?.clone(),
            cx.engines.get(&p.b).map_err(Unmet::Failed)?.clone(),
        ];
        cx.model_path(&p.model)?;
        cx.say(format_args!("timing {} loads of {} and {}, interleaved", p.runs, p.a, p.b));
        let mut loads = engines.clone().map(|e| Loads { engine: e.name, ms: Vec::new(), how: "" });
        for run in 0..p.runs {
            // Alternate which engine loads first, so neither always finds the page cache warmer.
            for side in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
                let (how, ms) = load_once(cx, &engines[side], &p.model)?;
                loads[side].how = how;
                loads[side].ms.push(ms);
            }
        }
        for l in &loads {
            cx.record_series(format!("load_time {} {}", p.model, l.engine), "ms", 0, &l.ms);
        }
        let provenance = match engines[1].source {
            crate::engines::Source::LlamaCli => cx.llama()?.provenance(),
            _ => None,
        };
        judge_load(p, &loads[0], &loads[1], provenance)
    }
}

/// Parameters of `context_decay`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecayParams {
    /// Model size.
    pub model: String,
    /// Context position of the long-context decode.
    pub position: usize,
    /// Decode steps per sample.
    pub steps: usize,
    /// Samples of each (interleaved).
    pub samples: usize,
    /// Operator on (decode tok/s at `position`) ÷ (decode tok/s at position 0).
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
}

/// Judges decode-rate samples at a long position against samples at position 0.
pub fn judge_decay(p: &DecayParams, near: &[f64], far: &[f64]) -> Result<Outcome, Unmet> {
    let r = stats::ratio_of_medians(far, near, 0.95, stats::DEFAULT_RESAMPLES, 0x5eed).map_err(Unmet::failed)?;
    let mut q = Quantity::of_samples("long_context_decode_ratio", "x", far);
    q.value = r.ratio;
    q.ci = Some(r.ci);
    let q = q.detail(format!(
        "decode at position {}: {} tok/s; at position 0: {} tok/s (samples are the long-context ones)",
        p.position,
        judge::num(stats::median(far)),
        judge::num(stats::median(near))
    ));
    Ok(judge::quantity(q, p.op, p.threshold))
}

/// `context_decay`: decode speed at a long context position against position 0.
pub struct ContextDecay;

impl Check for ContextDecay {
    const NAME: &'static str = "context_decay";
    const DOC: &'static str = "decode tok/s with a long context already cached, over decode tok/s from an empty one";
    const PARAMS: &'static str = "model, position, steps, samples, op, threshold";
    type Params = DecayParams;

    fn run(p: &DecayParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let seed_prompt = |tok: &crate::tokenizer::Tokenizer, n| crate::bench::random_prompt(tok, n, 11);
        cx.say(format_args!("filling a {}-position context, then decoding", p.position));
        let loaded = cx.model(&p.model)?;
        let (m, tok) = (&loaded.model, &loaded.tokenizer);
        let total = p.position + p.samples * p.steps + 1;
        let mut far_cache = m.new_cache(total);
        let mut far_logits = m
            .forward(&seed_prompt(tok, p.position), &mut far_cache, crate::model::Logits::Last)
            .map_err(Unmet::failed)?;
        let mut near_cache = m.new_cache(1 + p.samples * p.steps);
        let mut near_logits =
            m.forward(&seed_prompt(tok, 1), &mut near_cache, crate::model::Logits::Last).map_err(Unmet::failed)?;
        let decode = |cache: &mut crate::model::KvCache, logits: &mut Vec<f32>| -> Result<f64, Unmet> {
            let start = Instant::now();
            for _ in 0..p.steps {
                *logits = m
                    .forward(&[crate::sample::argmax(logits)], cache, crate::model::Logits::Last)
                    .map_err(Unmet::failed)?;
            }
            Ok(p.steps as f64 / start.elapsed().as_secs_f64())
        };
        let (mut near, mut far) = (Vec::new(), Vec::new());
        for _ in 0..p.samples {
            near.push(decode(&mut near_cache, &mut near_logits)?);
            far.push(decode(&mut far_cache, &mut far_logits)?);
        }
        cx.record_series(format!("context_decay {} position 0", p.model), "tok/s", 0, &near);
        cx.record_series(format!("context_decay {} position {}", p.model, p.position), "tok/s", 0, &far);
        judge_decay(p, &near, &far)
    }
}
