//! The benchmark protocol shared by `falsify bench` and the claims: warmup
//! runs that are not counted, N measured runs, the embedded engine and a
//! baseline interleaved (A B A B …) so drift hits both, plausibility guards,
//! and a JSON record with raw samples, summaries, ratios and provenance.
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
//! definitions: its `tg` test decodes `n` tokens one at a time.

pub mod bricks;
pub mod roofline;
pub mod score;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::baseline::llama_cpp::LlamaCpp;
use crate::baseline::ollama::Ollama;
use crate::baseline::BaselineError;
use crate::engine::{self, GenerateOptions};
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
    /// Ratios of the engine over each baseline.
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

/// One run of the embedded engine: prefill tok/s of an `n_prompt` prompt, and
/// decode tok/s over `n_gen` tokens after a 1-token prompt.
pub struct EngineSample {
    /// Prompt tokens per second.
    pub prefill_tok_s: f64,
    /// Decode tokens per second.
    pub decode_tok_s: f64,
    /// Time to first token of the prefill run, ms.
    pub ttft_ms: f64,
    /// Per-token decode latencies, ms.
    pub itl_ms: Vec<f64>,
    /// End-to-end latency of the decode run (prompt to last token), ms.
    pub e2e_ms: f64,
}

/// Measures the embedded engine once (prefill run, then decode run).
pub fn run_engine(model: &Model, tok: &Tokenizer, p: &Protocol, seed: u64) -> Result<EngineSample, BenchError> {
    let greedy = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
    let prompt = random_prompt(tok, p.n_prompt, seed);
    let pre = engine::generate(
        model,
        tok,
        &prompt,
        &GenerateOptions { max_tokens: 1, sampler: greedy, ignore_eos: true, time_bricks: false },
        |_| {},
    )?;
    check_duration(ENGINE, "prefill", pre.timings.prefill_ms / 1e3)?;
    let dec_prompt = random_prompt(tok, 1, seed ^ 1);
    let opts = GenerateOptions { max_tokens: p.n_gen + 1, sampler: greedy, ignore_eos: true, time_bricks: false };
    let start = std::time::Instant::now();
    let dec = engine::generate(model, tok, &dec_prompt, &opts, |_| {})?;
    let e2e_ms = start.elapsed().as_secs_f64() * 1e3;
    check_length(ENGINE, "decode", dec.timings.decode_tokens, p.n_gen)?;
    check_duration(ENGINE, "decode", dec.timings.decode_ms / 1e3)?;
    check_min(ENGINE, "decode", dec.timings.decode_ms, p.min_sample_ms)?;
    Ok(EngineSample {
        prefill_tok_s: pre.timings.prefill_tok_per_s,
        decode_tok_s: dec.timings.decode_tok_per_s,
        ttft_ms: pre.timings.ttft_ms,
        itl_ms: dec.timings.decode_token_ms,
        e2e_ms,
    })
}

/// An external engine measured with the same protocol.
pub trait Baseline {
    /// Its name in results.
    fn name(&self) -> &str;
    /// One round: (prefill tok/s, decode tok/s).
    fn run(&self, p: &Protocol, seed: u64) -> Result<(f64, f64), BenchError>;
}

/// llama.cpp through `llama-bench`, on a model file.
pub struct LlamaBench<'a> {
    /// The build.
    pub llama: &'a LlamaCpp,
    /// The model file.
    pub model: &'a Path,
}

impl Baseline for LlamaBench<'_> {
    fn name(&self) -> &str {
        "llama.cpp"
    }

    fn run(&self, p: &Protocol, _seed: u64) -> Result<(f64, f64), BenchError> {
        let pp = self.llama.bench(self.model, p.threads, p.n_prompt, 0, 1)?;
        let tg = self.llama.bench(self.model, p.threads, 0, p.n_gen, 1)?;
        for (row, metric) in [(&pp, "prefill"), (&tg, "decode")] {
            for &ns in &row.samples_ns {
                check_duration("llama.cpp", metric, ns as f64 / 1e9)?;
                check_min("llama.cpp", metric, ns as f64 / 1e6, p.min_sample_ms)?;
            }
        }
        Ok((pp.samples_ts[0], tg.samples_ts[0]))
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

impl Baseline for OllamaGenerate<'_> {
    fn name(&self) -> &str {
        "ollama"
    }

    fn run(&self, p: &Protocol, seed: u64) -> Result<(f64, f64), BenchError> {
        // A fresh random prompt each round, so Ollama's prompt cache cannot hit.
        let prompt = self.tokenizer.decode(&random_prompt(self.tokenizer, p.n_prompt, seed ^ 0x0_11a));
        let g = self.server.generate(&self.model, &prompt, p.n_gen)?;
        check_duration("ollama", "decode", g.eval_duration as f64 / 1e9)?;
        check_min("ollama", "decode", g.eval_duration as f64 / 1e6, p.min_sample_ms)?;
        check_duration("ollama", "prefill", g.prompt_eval_duration as f64 / 1e9)?;
        Ok((g.prefill_tok_s(), g.decode_tok_s()))
    }
}

/// Runs the protocol: warmup, then `runs` interleaved rounds of the engine and
/// (when given) a baseline, reporting progress through `progress(done, total)`.
pub fn compare(
    model: &Model,
    tok: &Tokenizer,
    load_ms: f64,
    baseline: Option<&dyn Baseline>,
    p: &Protocol,
    provenance: Provenance,
    mut progress: impl FnMut(usize, usize),
) -> Result<BenchResult, BenchError> {
    let total = p.warmup + p.runs;
    let (mut ours_pp, mut ours_tg, mut ttft, mut itl, mut e2e) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut theirs_pp, mut theirs_tg) = (vec![], vec![]);
    for round in 0..total {
        progress(round, total);
        let measured = round >= p.warmup;
        // Alternate which engine goes first, so neither always runs on a warmer machine.
        let order_ours_first = round % 2 == 0;
        let run_theirs = |pp: &mut Vec<f64>, tg: &mut Vec<f64>| -> Result<(), BenchError> {
            if let Some(base) = baseline {
                let (a, b) = base.run(p, round as u64)?;
                if measured {
                    pp.push(a);
                    tg.push(b);
                }
            }
            Ok(())
        };
        if !order_ours_first {
            run_theirs(&mut theirs_pp, &mut theirs_tg)?;
        }
        let s = run_engine(model, tok, p, round as u64)?;
        if measured {
            ours_pp.push(s.prefill_tok_s);
            ours_tg.push(s.decode_tok_s);
            ttft.push(s.ttft_ms);
            itl.extend(s.itl_ms);
            e2e.push(s.e2e_ms);
        }
        if order_ours_first {
            run_theirs(&mut theirs_pp, &mut theirs_tg)?;
        }
    }
    progress(total, total);
    let mut series = vec![
        Series::new(ENGINE, "prefill_tok_s", "tok/s", ours_pp)?,
        Series::new(ENGINE, "decode_tok_s", "tok/s", ours_tg)?,
        Series::new(ENGINE, "ttft_ms", "ms", ttft)?,
        Series::new(ENGINE, "itl_ms", "ms", itl)?,
        Series::new(ENGINE, "e2e_ms", "ms", e2e)?,
    ];
    let mut comparisons = Vec::new();
    if let Some(base) = baseline {
        series.push(Series::new(base.name(), "prefill_tok_s", "tok/s", theirs_pp)?);
        series.push(Series::new(base.name(), "decode_tok_s", "tok/s", theirs_tg)?);
        for metric in ["prefill_tok_s", "decode_tok_s"] {
            let find = |e: &str| series.iter().find(|s| s.engine == e && s.metric == metric).expect("pushed above");
            let (a, b) = (find(ENGINE), find(base.name()));
            comparisons.push(Comparison {
                metric: metric.into(),
                a: a.engine.clone(),
                b: b.engine.clone(),
                ratio: stats::ratio_of_medians(&a.samples, &b.samples, 0.95, stats::DEFAULT_RESAMPLES, 0x5eed)?,
                test: stats::mann_whitney_u(&a.samples, &b.samples)?,
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
