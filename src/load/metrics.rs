//! What one streamed request measured (TTFT, every inter-token gap, TPOT,
//! end-to-end), percentile summaries, and a run's throughput and goodput
//! under stated latency targets (SLOs).

use serde::{Deserialize, Serialize};

use crate::stats::{self, Interval};

/// One request as the client saw it. Times are ms, measured with `Instant`
/// at the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Its position in the run.
    pub index: usize,
    /// When it was sent, ms after the run began.
    pub sent_ms: f64,
    /// Output tokens: the server's usage count when it gave one, else the
    /// streamed chunks that carried text.
    pub output_tokens: usize,
    /// Time to the first chunk carrying text.
    pub ttft_ms: f64,
    /// Every gap between consecutive text chunks.
    pub itl_ms: Vec<f64>,
    /// Time per output token after the first: (e2e − TTFT) / (tokens − 1);
    /// `None` with fewer than two tokens.
    pub tpot_ms: Option<f64>,
    /// Send to the end of the stream.
    pub e2e_ms: f64,
    /// The server's count of prompt tokens, when its usage gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<usize>,
    /// Why it failed, if it did (its times are then meaningless).
    pub error: Option<String>,
}

impl RequestRecord {
    /// The record of a request sent at `sent_ms` whose text chunks arrived at
    /// `chunk_ms` (ms after sending) and whose stream ended at `e2e_ms`, with
    /// the server's own count of output tokens when it reported one.
    pub fn from_times(index: usize, sent_ms: f64, chunk_ms: &[f64], e2e_ms: f64, usage: Option<usize>) -> Self {
        let output_tokens = usage.unwrap_or(chunk_ms.len());
        let ttft_ms = chunk_ms.first().copied().unwrap_or(f64::NAN);
        let itl_ms = chunk_ms.windows(2).map(|w| w[1] - w[0]).collect();
        let tpot_ms = (output_tokens > 1).then(|| (e2e_ms - ttft_ms) / (output_tokens - 1) as f64);
        RequestRecord {
            index,
            sent_ms,
            output_tokens,
            ttft_ms,
            itl_ms,
            tpot_ms,
            e2e_ms,
            prompt_tokens: None,
            error: None,
        }
    }

    /// The record of a request that failed with `error`.
    pub fn failed(index: usize, sent_ms: f64, e2e_ms: f64, error: String) -> Self {
        RequestRecord {
            index,
            sent_ms,
            output_tokens: 0,
            ttft_ms: f64::NAN,
            itl_ms: Vec::new(),
            tpot_ms: None,
            e2e_ms,
            prompt_tokens: None,
            error: Some(error),
        }
    }
}

/// Percentiles of a sample (linear interpolation, numpy's default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl Percentiles {
    /// The percentiles of `xs`, or `None` when it is empty or holds a non-finite value.
    pub fn of(xs: &[f64]) -> Option<Percentiles> {
        if xs.is_empty() || xs.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let mut s = xs.to_vec();
        s.sort_by(f64::total_cmp);
        let q = |p| stats::quantile_sorted(&s, p);
        Some(Percentiles {
            n: s.len(),
            mean: s.iter().sum::<f64>() / s.len() as f64,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
        })
    }

    /// The fewest samples whose `p`-th percentile (0 < p < 1) is not simply
    /// the largest value: 1 / (1 − p), e.g. 100 for p99.
    pub fn samples_needed(p: f64) -> usize {
        (1.0 / (1.0 - p)).round() as usize
    }
}

/// Latency targets a request must meet to count toward goodput.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Most time to first token, ms.
    pub ttft_ms: Option<f64>,
    /// Most time per output token, ms.
    pub tpot_ms: Option<f64>,
    /// Most end-to-end time, ms.
    pub e2e_ms: Option<f64>,
}

impl Slo {
    /// Parses `ttft_ms=500,tpot_ms=100` (any of ttft_ms, tpot_ms, e2e_ms).
    pub fn parse(text: &str) -> Result<Slo, String> {
        let mut slo = Slo::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |why: &str| format!("--slo {text:?}: `{part}`: {why} (e.g. ttft_ms=500,tpot_ms=100)");
            let (key, value) = part.split_once('=').ok_or_else(|| bad("expected key=value"))?;
            let v: f64 = value.trim().parse().map_err(|_| bad("the value is not a number"))?;
            if !(v.is_finite() && v > 0.0) {
                return Err(bad("the value must be a positive number of ms"));
            }
            let slot = match key.trim() {
                "ttft_ms" => &mut slo.ttft_ms,
                "tpot_ms" => &mut slo.tpot_ms,
                "e2e_ms" => &mut slo.e2e_ms,
                _ => return Err(bad("unknown target; known: ttft_ms, tpot_ms, e2e_ms")),
            };
            *slot = Some(v);
        }
        Ok(slo)
    }

    /// Whether any target is set.
    pub fn is_set(&self) -> bool {
        self.ttft_ms.is_some() || self.tpot_ms.is_some() || self.e2e_ms.is_some()
    }

    /// Whether `r` succeeded within every target.
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        let within = |bound: Option<f64>, v: Option<f64>| bound.is_none_or(|b| v.is_none_or(|v| v <= b));
        r.error.is_none()
            && within(self.ttft_ms, Some(r.ttft_ms))
            && within(self.tpot_ms, r.tpot_ms)
            && within(self.e2e_ms, Some(r.e2e_ms))
    }
}

/// One run at one load level, summarized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Requests sent.
    pub requests: usize,
    /// Requests that failed.
    pub failed: usize,
    /// First send to last stream end, seconds.
    pub duration_s: f64,
    /// Output tokens of the successful requests.
    pub output_tokens: usize,
    /// Output tokens per second over the run.
    pub output_tok_s: f64,
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// Requests within the SLO per second (`None` without an SLO).
    pub goodput_req_s: Option<f64>,
    /// Time to first token.
    pub ttft_ms: Option<Percentiles>,
    /// Every inter-token gap of every request.
    pub itl_ms: Option<Percentiles>,
    /// Time per output token.
    pub tpot_ms: Option<Percentiles>,
    /// End-to-end time.
    pub e2e_ms: Option<Percentiles>,
}

impl RunSummary {
    /// Summarizes the records of one run under `slo`.
    pub fn of(records: &[RequestRecord], slo: &Slo) -> RunSummary {
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.error.is_none()).collect();
        let begin = records.iter().map(|r| r.sent_ms).fold(f64::INFINITY, f64::min);
        let end = records.iter().map(|r| r.sent_ms + r.e2e_ms).fold(f64::NEG_INFINITY, f64::max);
        let duration_s = if records.is_empty() { 0.0 } else { (end - begin).max(0.0) / 1e3 };
        let per_s = |x: f64| if duration_s > 0.0 { x / duration_s } else { 0.0 };
        let output_tokens = ok.iter().map(|r| r.output_tokens).sum();
        let pick =
            |f: fn(&RequestRecord) -> Option<f64>| Percentiles::of(&ok.iter().filter_map(|r| f(r)).collect::<Vec<_>>());
        let itl: Vec<f64> = ok.iter().flat_map(|r| r.itl_ms.iter().copied()).collect();
        RunSummary {
            requests: records.len(),
            failed: records.len() - ok.len(),
            duration_s,
            output_tokens,
            output_tok_s: per_s(output_tokens as f64),
            requests_per_s: per_s(ok.len() as f64),
            goodput_req_s: slo.is_set().then(|| per_s(records.iter().filter(|r| slo.met_by(r)).count() as f64)),
            ttft_ms: pick(|r| Some(r.ttft_ms)),
            itl_ms: Percentiles::of(&itl),
            tpot_ms: pick(|r| r.tpot_ms),
            e2e_ms: pick(|r| Some(r.e2e_ms)),
        }
    }

    /// A named figure of this run (`output_tok_s`, `requests_per_s`,
    /// `goodput_req_s`, or `ttft_ms_p99`-style latency percentiles).
    pub fn figure(&self, name: &str) -> Option<f64> {
        match name {
            "output_tok_s" => return Some(self.output_tok_s),
            "requests_per_s" => return Some(self.requests_per_s),
            "goodput_req_s" => return self.goodput_req_s,
            _ => {}
        }
        let (latency, pct) = name.rsplit_once('_')?;
        let p = match latency {
            "ttft_ms" => self.ttft_ms,
            "itl_ms" => self.itl_ms,
            "tpot_ms" => self.tpot_ms,
            "e2e_ms" => self.e2e_ms,
            _ => return None,
        }?;
        match pct {
            "p50" => Some(p.p50),
            "p90" => Some(p.p90),
            "p99" => Some(p.p99),
            "p999" => Some(p.p999),
            "mean" => Some(p.mean),
            _ => None,
        }
    }
}

/// The figures every summary reports across repeated runs.
pub const FIGURES: [&str; 10] = [
    "output_tok_s",
    "requests_per_s",
    "goodput_req_s",
    "ttft_ms_p50",
    "ttft_ms_p99",
    "itl_ms_p50",
    "itl_ms_p99",
    "tpot_ms_p50",
    "e2e_ms_p50",
    "e2e_ms_p99",
];

/// One figure across repeated runs: each run's value, their mean and the
/// Student-t 95% confidence interval of the mean (with two runs or more).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcrossRuns {
    /// The figure (`output_tok_s`, `ttft_ms_p99`, …).
    pub figure: String,
    /// Each run's value.
    pub values: Vec<f64>,
    /// Their mean.
    pub mean: f64,
    /// 95% CI of the mean.
    pub ci95: Option<Interval>,
}

/// Every figure of [`FIGURES`] that the runs have, across them.
pub fn across_runs(runs: &[RunSummary]) -> Vec<AcrossRuns> {
    FIGURES
        .iter()
        .filter_map(|f| {
            let values: Vec<f64> = runs.iter().filter_map(|r| r.figure(f)).collect();
            if values.len() != runs.len() || values.is_empty() {
                return None;
            }
            let summary = stats::Summary::of(&values).ok();
            Some(AcrossRuns {
                figure: (*f).into(),
                mean: values.iter().sum::<f64>() / values.len() as f64,
                ci95: summary.filter(|s| s.n >= 2).map(|s| s.mean_ci95),
                values,
            })
        })
        .collect()
}
