//! The benchmark protocol shared by `falsify bench` and the claims: warmup
//! runs that are not counted, N measured runs, two subjects (by default the
//! embedded engine and llama.cpp) interleaved (A B B A …) so drift hits both,
//! plausibility guards, and a JSON record with raw samples, summaries, ratios
//! and provenance.
//!
//! Metric definitions (one each, used everywhere):
//! - **prefill tok/s**: prompt tokens ÷ time of the forward pass over the
//!   prompt (fresh KV cache, random prompt tokens: nothing is cached).
//! - **decode tok/s**: tokens generated after the first ÷ their time.
//! - **TTFT**: start of prefill → first token chosen.
//! - **ITL**: time of each decode step.
//! - **e2e**: wall time of the whole decode run, 1-token prompt to last token.
//!
//! llama-bench reports `pp` (prompt) and `tg` (generation) rates by the same
//! definitions: its `tg` test decodes `n` tokens one at a time. A server
//! measured over HTTP ([`crate::load::subject`]) is timed at the client.

pub mod bricks;
pub mod roofline;
pub mod score;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::baseline::llama_cpp::LlamaCpp;
use crate::baseline::ollama::Ollama;
use crate::baseline::BaselineError;
use crate::engine::{self, GenerateOptions};
use crate::kernels::cuda::device::Device;
use crate::model::device::DeviceModel;
use crate::model::{Model, ModelError};
use crate::provenance::Provenance;
use crate::rng::SplitMix64;
use crate::sample::SamplerConfig;
use crate::stats::{self, Ratio, StatsError, Summary, TestResult};
use crate::tokenizer::{TokenKind, Tokenizer};

/// The name results give the embedded engine (the baselines go by theirs).
pub const ENGINE: &str = "falsify";

/// How many runs, and how many to discard first. The engine's worker threads
/// are pinned one per core; the calling thread is not, because the baselines'
/// processes are started from it and would inherit its affinity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Protocol {
    /// Runs before measuring, not counted.
    pub warmup: usize,
    /// Measured runs.
    pub runs: usize,
    /// Prompt tokens for the prefill test.
    pub n_prompt: usize,
    /// Tokens generated in the decode test.
    pub n_gen: usize,
    /// Threads for both engines.
    pub threads: usize,
    /// A measured sample shorter than this is rejected as implausible, ms.
    pub min_sample_ms: f64,
}

/// Why a benchmark could not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The engine failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The baseline failed.
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    /// The statistics could not be computed.
    #[error(transparent)]
    Stats(#[from] StatsError),
    /// Both sides of a comparison are one engine.
    #[error("engine `{0}` compared with itself: under one protocol the ratio measures nothing (name another engine, or none)")]
    SameEngine(String),
    /// A sample failed a plausibility guard.
    #[error("implausible {metric} sample from {engine}: {reason}")]
    Implausible {
        /// Which engine.
        engine: String,
        /// Which metric.
        metric: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// `Ok` when `plausible`, else the guard's rejection with its reason.
fn guard(plausible: bool, engine: &str, metric: &str, reason: impl FnOnce() -> String) -> Result<(), BenchError> {
    if plausible {
        Ok(())
    } else {
        Err(BenchError::Implausible { engine: engine.into(), metric: metric.into(), reason: reason() })
    }
}

/// Rejects durations that cannot be real: zero, negative, NaN, or over an hour.
pub fn check_duration(engine: &str, metric: &str, seconds: f64) -> Result<(), BenchError> {
    guard(seconds.is_finite() && seconds > 1e-6 && seconds < 3600.0, engine, metric, || format!("duration {seconds} s"))
}

/// Rejects a sample shorter than the protocol's minimum (too short to time reliably).
pub fn check_min(engine: &str, metric: &str, ms: f64, min_ms: f64) -> Result<(), BenchError> {
    guard(ms >= min_ms, engine, metric, || {
        format!("sample of {ms:.3} ms is shorter than the {min_ms} ms minimum; ask for more tokens")
    })
}

/// Rejects a generation shorter than asked (the rate would describe less work).
pub fn check_length(engine: &str, metric: &str, got: usize, asked: usize) -> Result<(), BenchError> {
    guard(got == asked, engine, metric, || format!("{got} tokens where {asked} were asked"))
}

/// One engine's samples of one metric, with their summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    /// Engine name.
    pub engine: String,
    /// Metric name (`prefill_tok_s`, `decode_tok_s`, …).
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// Raw measured samples, in run order.
    pub samples: Vec<f64>,
    /// Their summary.
    pub summary: Summary,
}

impl Series {
    fn new(engine: &str, metric: &str, unit: &str, samples: Vec<f64>) -> Result<Series, StatsError> {
        let summary = Summary::of(&samples)?;
        Ok(Series { engine: engine.into(), metric: metric.into(), unit: unit.into(), samples, summary })
    }
}

/// Engine A over engine B for one metric.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// Metric name.
    pub metric: String,
    /// Numerator engine.
    pub a: String,
    /// Denominator engine.
    pub b: String,
    /// Ratio of medians with its bootstrap CI.
    pub ratio: Ratio,
    /// Mann-Whitney U test of the two samples.
    pub test: TestResult,
}

/// A complete benchmark result (the record `falsify bench --json` writes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    /// Schema version of this record.
    pub schema: u32,
    /// The protocol followed.
    pub protocol: Protocol,
    /// Every measured series.
    pub series: Vec<Series>,
    /// Ratios of subject a over subject b.
    pub comparisons: Vec<Comparison>,
    /// Time to open and map the model and read its tokenizer, ms (measured once, before warmup).
    pub engine_load_ms: f64,
    /// The engine process's peak resident set size after the runs, bytes (`VmHWM`).
    pub engine_peak_rss_bytes: Option<u64>,
    /// Where it was measured.
    pub provenance: Provenance,
}

/// Random prompt tokens (as llama-bench uses), avoiding special tokens.
pub fn random_prompt(tokenizer: &Tokenizer, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64(seed);
    let normal: Vec<u32> =
        (0..tokenizer.vocab_size() as u32).filter(|&t| tokenizer.kind(t) == Some(TokenKind::Normal)).collect();
    (0..n).map(|_| normal[rng.below(normal.len())]).collect()
}

/// One round of a subject: prefill and decode rates, and (where the subject
/// reports them) its time to first token, per-token decode latencies and
/// decode run's end-to-end time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Prompt tokens per second.
    pub prefill_tok_s: f64,
    /// Decode tokens per second.
    pub decode_tok_s: f64,
    /// Time to first token of the prefill run, ms.
    pub ttft_ms: Option<f64>,
    /// Per-token decode latencies, ms (empty when not reported).
    pub itl_ms: Vec<f64>,
    /// End-to-end latency of the decode run (prompt to last token), ms.
    pub e2e_ms: Option<f64>,
}

impl Sample {
    /// A round that reports only its two rates (llama-bench, Ollama).
    pub fn rates(prefill_tok_s: f64, decode_tok_s: f64) -> Sample {
        Sample { prefill_tok_s, decode_tok_s, ttft_ms: None, itl_ms: Vec::new(), e2e_ms: None }
    }
}

/// Anything the protocol can measure: the embedded engine, llama.cpp's
/// llama-bench, Ollama, or (in [`crate::load::subject`]) any
/// OpenAI-compatible server.
pub trait Subject {
    /// Its name in results.
    fn name(&self) -> &str;
    /// One round: a prefill test of `p.n_prompt` tokens and a decode test of
    /// `p.n_gen` tokens, with prompts drawn from `seed`.
    fn run(&self, p: &Protocol, seed: u64) -> Result<Sample, BenchError>;
}

/// The embedded engine, in this process.
pub struct InProcess<'a> {
    /// The model.
    pub model: &'a Model,
    /// Its tokenizer.
    pub tokenizer: &'a Tokenizer,
}

impl Subject for InProcess<'_> {
    fn name(&self) -> &str {
        ENGINE
    }

    fn run(&self, p: &Protocol, seed: u64) -> Result<Sample, BenchError> {
        in_process_round(self.tokenizer, p, seed, |prompt, opts| {
            engine::generate(self.model, self.tokenizer, prompt, opts, |_| {})
        })
    }
}

/// The embedded engine with its forward passes on a device.
pub struct OnDevice<'a, D: Device> {
    /// The model's weights on the device (its cache holds [`OnDevice::positions`] at least).
    pub device: std::cell::RefCell<DeviceModel<'a, D>>,
    /// Its tokenizer.
    pub tokenizer: &'a Tokenizer,
}

impl<D: Device> OnDevice<'_, D> {
    /// Positions the device's cache needs for protocol `p`.
    pub fn positions(p: &Protocol) -> usize {
        p.n_prompt.max(p.n_gen + 2) + 1
    }
}

impl<D: Device> Subject for OnDevice<'_, D> {
    fn name(&self) -> &str {
        ENGINE
    }

    fn run(&self, p: &Protocol, seed: u64) -> Result<Sample, BenchError> {
        let mut device = self.device.borrow_mut();
        in_process_round(self.tokenizer, p, seed, |prompt, opts| {
            engine::generate_on_device(&mut device, self.tokenizer, prompt, opts, |_| {})
        })
    }
}

/// One round of the embedded engine, its generations made by `generate`: a
/// prefill run (1 token generated) and a decode run after a 1-token prompt.
fn in_process_round(
    tok: &Tokenizer,
    p: &Protocol,
    seed: u64,
    mut generate: impl FnMut(&[u32], &GenerateOptions) -> Result<engine::Generation, ModelError>,
) -> Result<Sample, BenchError> {
    let greedy = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
    let prompt = random_prompt(tok, p.n_prompt, seed);
    let pre =
        generate(&prompt, &GenerateOptions { max_tokens: 1, sampler: greedy, ignore_eos: true, time_bricks: false })?;
    check_duration(ENGINE, "prefill", pre.timings.prefill_ms / 1e3)?;
    let dec_prompt = random_prompt(tok, 1, seed ^ 1);
    let opts = GenerateOptions { max_tokens: p.n_gen + 1, sampler: greedy, ignore_eos: true, time_bricks: false };
    let start = std::time::Instant::now();
    let dec = generate(&dec_prompt, &opts)?;
    let e2e_ms = start.elapsed().as_secs_f64() * 1e3;
    check_length(ENGINE, "decode", dec.timings.decode_tokens, p.n_gen)?;
    check_duration(ENGINE, "decode", dec.timings.decode_ms / 1e3)?;
    check_min(ENGINE, "decode", dec.timings.decode_ms, p.min_sample_ms)?;
    Ok(Sample {
        prefill_tok_s: pre.timings.prefill_tok_per_s,
        decode_tok_s: dec.timings.decode_tok_per_s,
        ttft_ms: Some(pre.timings.ttft_ms),
        itl_ms: dec.timings.decode_token_ms,
        e2e_ms: Some(e2e_ms),
    })
}

/// llama.cpp through `llama-bench`, on a model file.
pub struct LlamaBench<'a> {
    /// The build.
    pub llama: &'a LlamaCpp,
    /// The model file.
    pub model: &'a Path,
}

impl Subject for LlamaBench<'_> {
    fn name(&self) -> &str {
        "llama.cpp"
    }

    fn run(&self, p: &Protocol, _seed: u64) -> Result<Sample, BenchError> {
        let pp = self.llama.bench(self.model, p.threads, p.n_prompt, 0, 1)?;
        let tg = self.llama.bench(self.model, p.threads, 0, p.n_gen, 1)?;
        for (row, metric) in [(&pp, "prefill"), (&tg, "decode")] {
            for &ns in &row.samples_ns {
                check_duration("llama.cpp", metric, ns as f64 / 1e9)?;
                check_min("llama.cpp", metric, ns as f64 / 1e6, p.min_sample_ms)?;
            }
        }
        Ok(Sample::rates(pp.samples_ts[0], tg.samples_ts[0]))
    }
}

/// Ollama through `/api/generate`, with a prompt of about `n_prompt` tokens.
pub struct OllamaGenerate<'a> {
    /// The server.
    pub server: &'a Ollama,
    /// Ollama's model name (e.g. `qwen2.5-coder:0.5b`).
    pub model: String,
    /// The tokenizer used to build prompts.
    pub tokenizer: &'a Tokenizer,
}

impl Subject for OllamaGenerate<'_> {
    fn name(&self) -> &str {
        "ollama"
    }

    fn run(&self, p: &Protocol, seed: u64) -> Result<Sample, BenchError> {
        // A fresh random prompt each round, so Ollama's prompt cache cannot hit.
        let prompt = self.tokenizer.decode(&random_prompt(self.tokenizer, p.n_prompt, seed ^ 0x0_11a));
        let g = self.server.generate(&self.model, &prompt, p.n_gen)?;
        check_duration("ollama", "decode", g.eval_duration as f64 / 1e9)?;
        check_min("ollama", "decode", g.eval_duration as f64 / 1e6, p.min_sample_ms)?;
        check_duration("ollama", "prefill", g.prompt_eval_duration as f64 / 1e9)?;
        Ok(Sample::rates(g.prefill_tok_s(), g.decode_tok_s()))
    }
}

/// One subject's samples across the measured rounds.
#[derive(Default)]
struct Taken {
    prefill: Vec<f64>,
    decode: Vec<f64>,
    ttft: Vec<f64>,
    itl: Vec<f64>,
    e2e: Vec<f64>,
}

impl Taken {
    fn push(&mut self, s: Sample) {
        self.prefill.push(s.prefill_tok_s);
        self.decode.push(s.decode_tok_s);
        self.ttft.extend(s.ttft_ms);
        self.itl.extend(s.itl_ms);
        self.e2e.extend(s.e2e_ms);
    }

    /// The series of `engine`: both rates, and each latency it reported in every round.
    fn series(self, engine: &str) -> Result<Vec<Series>, StatsError> {
        let rounds = self.prefill.len();
        let mut out = vec![
            Series::new(engine, "prefill_tok_s", "tok/s", self.prefill)?,
            Series::new(engine, "decode_tok_s", "tok/s", self.decode)?,
        ];
        for (metric, samples, every_round) in
            [("ttft_ms", self.ttft, true), ("itl_ms", self.itl, false), ("e2e_ms", self.e2e, true)]
        {
            if !samples.is_empty() && (!every_round || samples.len() == rounds) {
                out.push(Series::new(engine, metric, "ms", samples)?);
            }
        }
        Ok(out)
    }
}

/// Runs the protocol: warmup, then `runs` interleaved rounds of subject `a`
/// and (when given) subject `b`, alternating which goes first, reporting
/// progress through `progress(done, total)`. `load_ms` is the embedded
/// engine's model load time.
pub fn compare(
    a: &dyn Subject,
    b: Option<&dyn Subject>,
    load_ms: f64,
    p: &Protocol,
    provenance: Provenance,
    mut progress: impl FnMut(usize, usize),
) -> Result<BenchResult, BenchError> {
    if b.is_some_and(|b| b.name() == a.name()) {
        return Err(BenchError::SameEngine(a.name().into()));
    }
    let total = p.warmup + p.runs;
    let mut taken = [Taken::default(), Taken::default()];
    for round in 0..total {
        progress(round, total);
        let measured = round >= p.warmup;
        // Alternate which engine goes first, so neither always runs on a warmer machine.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let Some(subject) = [Some(a), b][side] else { continue };
            let s = subject.run(p, round as u64)?;
            if measured {
                taken[side].push(s);
            }
        }
    }
    progress(total, total);
    let [ta, tb] = taken;
    let mut series = ta.series(a.name())?;
    let mut comparisons = Vec::new();
    if let Some(b) = b {
        series.extend(tb.series(b.name())?);
        for metric in ["prefill_tok_s", "decode_tok_s"] {
            let find = |e: &str| series.iter().find(|s| s.engine == e && s.metric == metric).expect("pushed above");
            let (sa, sb) = (find(a.name()), find(b.name()));
            comparisons.push(Comparison {
                metric: metric.into(),
                a: sa.engine.clone(),
                b: sb.engine.clone(),
                ratio: stats::ratio_of_medians(&sa.samples, &sb.samples, 0.95, stats::DEFAULT_RESAMPLES, 0x5eed)?,
                test: stats::mann_whitney_u(&sa.samples, &sb.samples)?,
            });
        }
    }
    Ok(BenchResult {
        schema: 1,
        protocol: *p,
        series,
        comparisons,
        engine_load_ms: load_ms,
        engine_peak_rss_bytes: crate::util::peak_rss_bytes(),
        provenance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_engine_on_the_emulated_device_is_benchmarked_like_on_the_cpu() {
        let Some(dev) = crate::kernels::cuda::emulated::device() else { return };
        let m = crate::model::tests::device_model();
        let tok = Tokenizer::from_header(&m.file.header).unwrap();
        let p = Protocol { warmup: 0, runs: 2, n_prompt: 4, n_gen: 3, threads: 1, min_sample_ms: 0.0 };
        let positions = OnDevice::<crate::kernels::cuda::emulated::Emulated>::positions(&p);
        let d = DeviceModel::upload(&m, dev, positions, crate::model::device::StepMode::Graph).unwrap();
        let on_device = OnDevice { device: d.into(), tokenizer: &tok };
        let r = compare(&on_device, None, 0.0, &p, Provenance::collect(1, vec![], vec![]), |_, _| {}).unwrap();
        let decode = r.series.iter().find(|s| s.metric == "decode_tok_s").unwrap();
        assert_eq!(decode.samples.len(), 2);
        assert!(decode.samples.iter().all(|x| x.is_finite() && *x > 0.0), "{decode:?}");
    }

    fn result(decode: &[f64]) -> BenchResult {
        let p = Protocol { warmup: 0, runs: decode.len(), n_prompt: 1, n_gen: 1, threads: 1, min_sample_ms: 0.0 };
        BenchResult {
            schema: 1,
            protocol: p,
            series: vec![Series::new(ENGINE, "decode_tok_s", "tok/s", decode.to_vec()).unwrap()],
            comparisons: vec![],
            engine_load_ms: 1.0,
            engine_peak_rss_bytes: None,
            provenance: Provenance::collect(1, vec![], vec![]),
        }
    }

    #[test]
    fn saved_results_are_compared_for_regressions() {
        let old: Vec<f64> = (0..20).map(|i| 30.0 + (i % 4) as f64 * 0.1).collect();
        let slower: Vec<f64> = old.iter().map(|x| x * 0.8).collect();
        let changes = compare_results(&result(&old), &result(&slower), 0.05, 0.02).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].change, stats::Change::Regressed);
        assert!((changes[0].relative + 0.2).abs() < 1e-9);
        let same = compare_results(&result(&old), &result(&old), 0.05, 0.02).unwrap();
        assert_eq!(same[0].change, stats::Change::NoChange);
    }

    /// A subject whose rates are `rate` (prefill ten times it), with or
    /// without latencies; it records the order the rounds ran in.
    struct Fixed {
        name: &'static str,
        rate: f64,
        latencies: bool,
        ran: std::cell::RefCell<Vec<(u64, &'static str)>>,
    }

    impl Subject for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn run(&self, _: &Protocol, seed: u64) -> Result<Sample, BenchError> {
            self.ran.borrow_mut().push((seed, self.name));
            let jitter = 1.0 + (seed % 3) as f64 * 0.01;
            let mut s = Sample::rates(10.0 * self.rate * jitter, self.rate * jitter);
            if self.latencies {
                (s.ttft_ms, s.itl_ms, s.e2e_ms) = (Some(5.0 * jitter), vec![1.0, 1.1], Some(50.0));
            }
            Ok(s)
        }
    }

    fn fixed(name: &'static str, rate: f64, latencies: bool) -> Fixed {
        Fixed { name, rate, latencies, ran: Default::default() }
    }

    #[test]
    fn any_two_subjects_are_interleaved_and_compared_a_over_b() {
        let p = Protocol { warmup: 1, runs: 6, n_prompt: 8, n_gen: 8, threads: 1, min_sample_ms: 0.0 };
        let (a, b) = (fixed("server-a", 30.0, true), fixed("server-b", 20.0, false));
        let r = compare(&a, Some(&b), 0.0, &p, Provenance::collect(1, vec![], vec![]), |_, _| {}).unwrap();
        // Rounds alternate which engine goes first.
        assert_eq!(a.ran.borrow()[..2], [(0, "server-a"), (1, "server-a")]);
        let decode = r.comparisons.iter().find(|c| c.metric == "decode_tok_s").unwrap();
        assert_eq!((decode.a.as_str(), decode.b.as_str()), ("server-a", "server-b"));
        assert!((decode.ratio.ratio - 1.5).abs() < 1e-9, "{decode:?}");
        let has = |e: &str, m: &str| r.series.iter().any(|s| s.engine == e && s.metric == m);
        assert!(has("server-a", "ttft_ms") && has("server-a", "itl_ms") && has("server-b", "prefill_tok_s"));
        assert!(!has("server-b", "ttft_ms"), "b reported no time to first token");
        assert_eq!(
            r.series.iter().find(|s| s.engine == "server-a" && s.metric == "decode_tok_s").unwrap().samples.len(),
            6
        );
        // The same engine on both sides is refused: the ratio would measure nothing.
        let twin = fixed("server-a", 30.0, true);
        assert!(compare(&a, Some(&twin), 0.0, &p, Provenance::collect(1, vec![], vec![]), |_, _| {}).is_err());
    }

    #[test]
    fn guards_reject_implausible_samples() {
        assert!(check_duration("x", "decode", 0.0).is_err());
        assert!(check_duration("x", "decode", 1e-9).is_err());
        assert!(check_duration("x", "decode", f64::NAN).is_err());
        assert!(check_duration("x", "decode", 7200.0).is_err());
        assert!(check_duration("x", "decode", 0.5).is_ok());
        let e = check_length("llama.cpp", "decode", 1, 128).unwrap_err().to_string();
        assert_eq!(e, "implausible decode sample from llama.cpp: 1 tokens where 128 were asked");
        assert!(check_min("x", "prefill", 0.4, 1.0).is_err() && check_min("x", "prefill", 2.0, 1.0).is_ok());
    }
}

/// A metric whose median moved significantly between two bench results.
#[derive(Debug, Clone, Serialize)]
pub struct MetricChange {
    /// Engine.
    pub engine: String,
    /// Metric.
    pub metric: String,
    /// Relative change of the median (new / old − 1).
    pub relative: f64,
    /// Regressed, improved or no change.
    pub change: stats::Change,
    /// The Mann-Whitney p-value behind it.
    pub p_value: f64,
}

/// Compares every throughput series (higher is better) present in both results:
/// a change counts when p < `alpha` and the medians differ by more than `noise`.
pub fn compare_results(
    old: &BenchResult,
    new: &BenchResult,
    alpha: f64,
    noise: f64,
) -> Result<Vec<MetricChange>, StatsError> {
    let mut out = Vec::new();
    for n in new.series.iter().filter(|s| s.unit == "tok/s") {
        if let Some(o) = old.series.iter().find(|o| o.engine == n.engine && o.metric == n.metric) {
            let (change, relative, test) = stats::detect_change(&o.samples, &n.samples, alpha, noise)?;
            out.push(MetricChange {
                engine: n.engine.clone(),
                metric: n.metric.clone(),
                relative,
                change,
                p_value: test.p_value,
            });
        }
    }
    Ok(out)
}
