//! Serving under load (`serving`): two engines' OpenAI-compatible servers on
//! the same model and thread count, driven at a fixed concurrency in
//! interleaved runs by [`crate::load`], compared as a ratio (a ÷ b) of a
//! figure's median across runs with its bootstrap 95% CI: TTFT p99, ITL p50,
//! output throughput or goodput under an SLO.

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::{kind, Check, Kind};
use crate::claims::{BaselineValue, Context, Outcome, Unmet};
use crate::load::metrics::{RequestRecord, RunSummary, Slo};
use crate::load::{self, Load, Plan};
use crate::stats::{self, Op};

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![kind::<Serving>()]
}

/// What a `serving` claim compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServingMetric {
    /// p99 of time to first token.
    TtftP99Ratio,
    /// Median inter-token latency.
    ItlP50Ratio,
    /// Output tokens per second over all streams.
    ThroughputRatio,
    /// Requests per second that met the SLO.
    GoodputRatio,
}

impl ServingMetric {
    /// The run figure it compares ([`RunSummary::figure`]).
    fn figure(self) -> &'static str {
        match self {
            ServingMetric::TtftP99Ratio => "ttft_ms_p99",
            ServingMetric::ItlP50Ratio => "itl_ms_p50",
            ServingMetric::ThroughputRatio => "output_tok_s",
            ServingMetric::GoodputRatio => "goodput_req_s",
        }
    }

    fn name(self) -> &'static str {
        match self {
            ServingMetric::TtftP99Ratio => "ttft_p99_ratio",
            ServingMetric::ItlP50Ratio => "itl_p50_ratio",
            ServingMetric::ThroughputRatio => "throughput_ratio",
            ServingMetric::GoodputRatio => "goodput_ratio",
        }
    }
}

fn default_a() -> String {
    "falsify-server".into()
}
fn default_b() -> String {
    "llama-server".into()
}
fn default_tokens() -> usize {
    32
}
fn default_runs() -> usize {
    4
}

/// Parameters of `serving`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingParams {
    /// Model size (`0.5b`).
    pub model: String,
    /// The engine measured (default `falsify-server`).
    #[serde(default = "default_a")]
    pub a: String,
    /// The engine it is compared with (default `llama-server`).
    #[serde(default = "default_b")]
    pub b: String,
    /// Streams in flight.
    pub concurrency: usize,
    /// Streams in flight for engine b (default: `concurrency`). With `b` the
    /// same engine as `a`, the claim is about how it scales with load.
    #[serde(default)]
    pub b_concurrency: Option<usize>,
    /// Requests per run (default: twice the larger concurrency, at least 4).
    #[serde(default)]
    pub requests: Option<usize>,
    /// Interleaved runs of each engine (default 4).
    #[serde(default = "default_runs")]
    pub runs: usize,
    /// Prompt tokens of each request (default 32).
    #[serde(default = "default_tokens")]
    pub prompt: usize,
    /// Output tokens of each request, exactly (default 32).
    #[serde(default = "default_tokens")]
    pub gen: usize,
    /// Latency targets of goodput (required by `goodput_ratio`).
    #[serde(default)]
    pub slo: Slo,
    /// What to compare.
    pub metric: ServingMetric,
    /// Operator.
    pub op: Op,
    /// Threshold of the ratio a ÷ b.
    pub threshold: f64,
}

impl ServingParams {
    /// Engine b's streams in flight.
    pub fn b_streams(&self) -> usize {
        self.b_concurrency.unwrap_or(self.concurrency)
    }

    /// The load plan of one claim: one level both engines run, or a's and
    /// b's when their concurrencies differ.
    pub fn plan(&self) -> Plan {
        let (a, b) = (self.concurrency, self.b_streams());
        let mut levels = vec![Load::Concurrency { streams: a }];
        if b != a {
            levels.push(Load::Concurrency { streams: b });
        }
        Plan {
            levels,
            requests: self.requests.unwrap_or(2 * a.max(b)).max(4),
            runs: self.runs,
            warmup: 1,
            slo: self.slo,
            seed: 0x5eed,
        }
    }
}

/// Both engines' requests, run by run, of one claim's plan.
#[derive(Debug, Clone)]
pub struct Paired {
    /// Engine a's name and records.
    pub a: (String, Vec<Vec<RequestRecord>>),
    /// Engine b's name and records.
    pub b: (String, Vec<Vec<RequestRecord>>),
}

impl Paired {
    /// Each engine's name and run summaries under `slo`.
    pub fn summaries(&self, slo: &Slo) -> [(String, Vec<RunSummary>); 2] {
        let of = |(name, runs): &(String, Vec<Vec<RequestRecord>>)| {
            (name.clone(), runs.iter().map(|r| RunSummary::of(r, slo)).collect())
        };
        [of(&self.a), of(&self.b)]
    }
}

/// Measures `p`'s plan on two endpoints, interleaved.
pub fn observe(p: &ServingParams, a: &crate::engines::Endpoint, b: &crate::engines::Endpoint) -> Result<Paired, Unmet> {
    // A prompt of its own for every request: a repeated prompt is answered from a prompt cache.
    let requests = load::prompts::generated(p.plan().prompts_needed(), p.prompt, p.gen, 0x5eed);
    let [ra, rb] = load::run_paired(a, b, &requests, &p.plan()).map_err(Unmet::Failed)?;
    Ok(Paired { a: (a.engine.clone(), ra), b: (b.engine.clone(), rb) })
}

/// Judges a `serving` claim on both engines' runs.
pub fn judge_serving(p: &ServingParams, obs: &Paired) -> Result<Outcome, Unmet> {
    let figure = p.metric.figure();
    let [(a_name, a_runs), (b_name, b_runs)] = obs.summaries(&p.slo);
    let values = |name: &str, runs: &[RunSummary]| -> Result<Vec<f64>, Unmet> {
        runs.iter()
            .map(|r| r.figure(figure))
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| Unmet::Failed(format!("{name}'s runs have no {figure} (goodput needs an slo)")))
    };
    let (a, b) = (values(&a_name, &a_runs)?, values(&b_name, &b_runs)?);
    let ratio = stats::ratio_of_medians(&a, &b, 0.95, stats::DEFAULT_RESAMPLES, 0x5eed)
        .map_err(|e| Unmet::Failed(format!("{a_name} ÷ {b_name} of {figure}: {e} ({a:?} vs {b:?})")))?;
    let plan = p.plan();
    let mut q = Quantity::of_samples(p.metric.name(), "x", &a);
    q.value = ratio.ratio;
    q.ci = Some(ratio.ci);
    q.baseline = Some(BaselineValue { engine: b_name.clone(), value: stats::median(&b), provenance: None });
    let per_run = a_runs.first().map_or(0, |r| r.requests);
    let mut q = q
        .detail(format!(
            "{a_name} median {figure} {} vs {b_name} median {}; samples are {a_name}'s, one per run",
            judge::num(stats::median(&a)),
            judge::num(stats::median(&b)),
        ))
        .detail(format!(
            "{} interleaved runs each at concurrency {}: {per_run} streamed requests of {} prompt and {} output tokens \
             (ignore_eos), after {} warmup request each",
            plan.runs,
            concurrencies(p),
            p.prompt,
            p.gen,
            plan.warmup
        ));
    if p.metric == ServingMetric::TtftP99Ratio {
        q = q.detail(format!("each run's p99 rests on its {per_run} requests (near their largest)"));
    }
    if p.slo.is_set() {
        q = q.detail(format!("SLO: {}", serde_json::to_string(&p.slo).unwrap_or_default()));
    }
    Ok(judge::quantity(q, p.op, p.threshold))
}

/// The concurrency both engines ran at, or a's and b's.
fn concurrencies(p: &ServingParams) -> String {
    match p.b_streams() {
        b if b == p.concurrency => b.to_string(),
        b => format!("{} ({}) and {b} ({})", p.concurrency, p.a, p.b),
    }
}

/// `serving`: one engine's server against another's under the same load.
pub struct Serving;

impl Check for Serving {
    const NAME: &'static str = "serving";
    const DOC: &'static str =
        "two engines' servers under the same concurrent streaming load (or one engine under two), a figure's ratio a ÷ b \
         decided on its 95% CI";
    const PARAMS: &'static str = "model, a (default falsify-server), b (default llama-server), concurrency, \
         b_concurrency (default concurrency), requests, runs, prompt, gen, slo {ttft_ms, tpot_ms, e2e_ms}, metric (ttft_p99_ratio|itl_p50_ratio|\
         throughput_ratio|goodput_ratio), op, threshold";
    type Params = ServingParams;

    fn run(p: &ServingParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        if p.concurrency == 0 || p.b_streams() == 0 || p.runs < 2 {
            return Err(Unmet::Failed("serving: concurrency must be at least 1 and runs at least 2".into()));
        }
        if p.metric == ServingMetric::GoodputRatio && !p.slo.is_set() {
            return Err(Unmet::Failed("serving: goodput_ratio needs an slo (e.g. slo = { ttft_ms = 2000.0 })".into()));
        }
        // The SLO only decides goodput, so claims differing in it share one measurement.
        let key = format!("serving {} {} {} {:?}", p.model, p.a, p.b, Plan { slo: Slo::default(), ..p.plan() });
        let p2 = p.clone();
        let streams = p.concurrency.max(p.b_streams());
        let obs = cx.memo(&key, move |cx| {
            cx.endpoint_pair(&p2.a, &p2.b, &p2.model, streams)?;
            cx.say(format_args!(
                "serving: {} vs {} at concurrency {}, {} interleaved runs",
                p2.a,
                p2.b,
                concurrencies(&p2),
                p2.runs
            ));
            let (a, b) = cx.endpoint_pair(&p2.a, &p2.b, &p2.model, streams)?;
            observe(&p2, a, b)
        })?;
        let unit = match p.metric {
            ServingMetric::ThroughputRatio => "tok/s",
            ServingMetric::GoodputRatio => "req/s",
            ServingMetric::TtftP99Ratio | ServingMetric::ItlP50Ratio => "ms",
        };
        for ((name, runs), streams) in obs.summaries(&p.slo).into_iter().zip([p.concurrency, p.b_streams()]) {
            let values: Vec<f64> = runs.iter().filter_map(|r| r.figure(p.metric.figure())).collect();
            let series = format!("serving {} c={streams} {name} {}", p.model, p.metric.figure());
            cx.record_series(series, unit, 1, &values);
        }
        judge_serving(p, &obs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Settings;

    fn params(a: &str, metric: &str) -> ServingParams {
        let text = format!(
            "model = \"0.5b\"\na = \"{a}\"\nconcurrency = 2\nmetric = \"{metric}\"\nop = \">=\"\nthreshold = 1.0\n"
        );
        super::super::parse(&toml::from_str(&text).unwrap()).unwrap()
    }

    fn context() -> Context {
        Context::new(env!("CARGO_MANIFEST_DIR"), Settings { threads: 1, runs: 2, warmup: 0 })
    }

    #[test]
    fn an_unknown_engine_is_an_error_naming_the_known_ones() {
        match Serving::run(&params("vllm", "throughput_ratio"), &mut context()) {
            Err(Unmet::Failed(m)) => assert!(m.contains("unknown engine `vllm`") && m.contains("llama-server"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_a_serving_falsify_the_claim_is_skipped_and_goodput_needs_an_slo() {
        // No falsify binary is known to this context: falsify-server is missing here, never a pass.
        match Serving::run(&params("falsify-server", "throughput_ratio"), &mut context()) {
            Err(Unmet::Missing(m)) => assert!(m.contains("falsify") || m.contains("model:0.5b"), "{m}"),
            other => panic!("{other:?}"),
        }
        match Serving::run(&params("falsify-server", "goodput_ratio"), &mut context()) {
            Err(Unmet::Failed(m)) => assert!(m.contains("needs an slo"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
