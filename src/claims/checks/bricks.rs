//! Checks on decode's brick profile ([`crate::bench::bricks`]): every stage of
//! the forward pass is timed as a brick (F001), the bricks account for the
//! measured token time (F016), and a brick's time stays within its budget
//! (F023–F029: roofline × a factor, or a fixed µs budget per layer), and
//! timing the bricks costs little (F015).

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::{kind, Check, Kind};
use crate::bench::bricks::BrickProfile;
use crate::claims::{Context, Outcome, Unmet};
use crate::model::Brick;
use crate::stats::Op;

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![kind::<BricksTimed>(), kind::<BrickCoverage>(), kind::<BrickBudget>(), kind::<InstrumentationOverhead>()]
}

/// Parameters naming the profiled model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    /// Model size.
    pub model: String,
}

/// `bricks_timed`: every stage of the forward pass got time as a named brick.
pub struct BricksTimed;

/// Judges that every brick of [`Brick::ALL`] appears in the profile with time charged to it.
pub fn judge_timed(p: &BrickProfile) -> Outcome {
    let violations = Brick::ALL
        .iter()
        .filter_map(|b| match p.decode.bricks.iter().find(|r| r.name == b.name()) {
            None => Some(format!("stage {} has no brick in the profile", b.name())),
            Some(r) if r.us_per_token <= 0.0 => Some(format!("brick {} was never timed", b.name())),
            Some(_) => None,
        })
        .collect();
    judge::no_violations("untimed_stages", Brick::ALL.len(), violations)
}

impl Check for BricksTimed {
    const NAME: &'static str = "bricks_timed";
    const DOC: &'static str = "every forward-pass stage (embed … lm_head) is timed as a named brick during decode";
    const PARAMS: &'static str = "model";
    type Params = ModelParams;

    fn run(p: &ModelParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        Ok(judge_timed(&cx.bricks(&p.model)?))
    }
}

/// Parameters of `brick_coverage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoverageParams {
    /// Model size.
    pub model: String,
    /// Operator.
    pub op: Op,
    /// Threshold, a fraction of the measured token time.
    pub threshold: f64,
}

/// `brick_coverage`: the bricks' time over the decode's measured wall time (sampling included).
pub struct BrickCoverage;

/// Judges the profile's coverage.
pub fn judge_coverage(p: &CoverageParams, profile: &BrickProfile) -> Outcome {
    let d = &profile.decode;
    let mut q = Quantity::new("brick_coverage", "fraction", d.coverage).detail(format!(
        "{} decode tokens: {:.1} ms inside bricks of {:.1} ms measured",
        d.tokens, d.bricks_ms, d.wall_ms
    ));
    q.n = d.tokens;
    judge::quantity(q, p.op, p.threshold)
}

impl Check for BrickCoverage {
    const NAME: &'static str = "brick_coverage";
    const DOC: &'static str = "the bricks' time as a fraction of decode's measured token time";
    const PARAMS: &'static str = "model, op, threshold";
    type Params = CoverageParams;

    fn run(p: &CoverageParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        Ok(judge_coverage(p, &cx.bricks(&p.model)?))
    }
}

/// Parameters of `brick_budget`; a profile gives either `roofline_factor` or `budget_us`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetParams {
    /// Model size.
    pub model: String,
    /// The bricks judged together (their times add up).
    pub bricks: Vec<String>,
    /// Budget = this × the bricks' memory roofline.
    #[serde(default)]
    pub roofline_factor: Option<f64>,
    /// Budget in µs per layer (the seeds' RTX 4090 figures).
    #[serde(default)]
    pub budget_us: Option<f64>,
}

/// `brick_budget`: the named bricks' time per token within their budget.
pub struct BrickBudget;

/// Judges `p.bricks` of `profile` against the budget; `n_layer` turns a per-layer budget into a per-token one.
pub fn judge_budget(p: &BudgetParams, profile: &BrickProfile, n_layer: usize) -> Result<Outcome, Unmet> {
    let mut actual = 0.0;
    let mut roofline = 0.0;
    for name in &p.bricks {
        let measured = profile.decode.bricks.iter().find(|r| &r.name == name);
        let budget = profile.bricks.iter().find(|r| &r.name == name);
        let (Some(m), Some(b)) = (measured, budget) else {
            return Err(Unmet::Failed(format!("the brick profile has no brick {name:?}")));
        };
        actual += m.us_per_token;
        roofline += b.roofline_us;
    }
    let (budget, how) = match (p.roofline_factor, p.budget_us) {
        (Some(f), None) => (
            f * roofline,
            format!(
                "budget {f} × roofline {:.1} µs ({} GB/s measured read bandwidth)",
                roofline,
                judge::num(profile.host.read_bandwidth_gb_s)
            ),
        ),
        (None, Some(us)) => (us * n_layer as f64, format!("budget {us} µs per layer × {n_layer} layers")),
        _ => return Err(Unmet::Failed("brick_budget needs exactly one of roofline_factor and budget_us".into())),
    };
    let mut q = Quantity::new("brick_us_per_token", "us", actual)
        .detail(format!("bricks {}: {:.1} µs per token", p.bricks.join(" + "), actual))
        .detail(how);
    q.n = profile.decode.tokens;
    Ok(judge::quantity(q, Op::Le, budget))
}

impl Check for BrickBudget {
    const NAME: &'static str = "brick_budget";
    const DOC: &'static str =
        "the named bricks' decode time per token within budget (roofline × factor, or µs per layer)";
    const PARAMS: &'static str = "model, bricks (names), and roofline_factor or budget_us (per layer)";
    type Params = BudgetParams;

    fn run(p: &BudgetParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let profile = cx.bricks(&p.model)?;
        let n_layer = cx.model(&p.model)?.model.config.n_layer;
        judge_budget(p, &profile, n_layer)
    }
}

/// Parameters of `instrumentation_overhead`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverheadParams {
    /// Model size.
    pub model: String,
    /// Decoded tokens per generation.
    pub tokens: usize,
    /// Paired rounds (one generation with brick timing, one without, order alternating).
    pub rounds: usize,
    /// Operator.
    pub op: Op,
    /// Threshold on the median relative overhead (timed ÷ untimed decode time − 1).
    pub threshold: f64,
}

/// Judges the per-round overheads (timed ÷ untimed decode time − 1).
pub fn judge_overhead(p: &OverheadParams, overheads: &[f64]) -> Outcome {
    let q = Quantity::of_samples("instrumentation_overhead", "fraction", overheads).detail(format!(
        "{} paired rounds of {} decoded tokens, with and without brick timing, order alternating",
        overheads.len(),
        p.tokens
    ));
    judge::quantity(q, p.op, p.threshold)
}

/// `instrumentation_overhead`: decode with every brick timed against decode without, same run.
pub struct InstrumentationOverhead;

impl Check for InstrumentationOverhead {
    const NAME: &'static str = "instrumentation_overhead";
    const DOC: &'static str =
        "relative cost of brick timing: decode time with bricks timed ÷ without − 1, paired and interleaved in one run";
    const PARAMS: &'static str = "model, tokens, rounds, op, threshold";
    type Params = OverheadParams;

    fn run(p: &OverheadParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        use crate::engine::{generate, GenerateOptions};
        let loaded = cx.model(&p.model)?;
        let prompt = loaded.tokenizer.encode("def quicksort(items):", true);
        let decode_ms = |timed: bool| -> Result<f64, Unmet> {
            let opts = GenerateOptions {
                max_tokens: p.tokens + 1,
                sampler: crate::sample::SamplerConfig { temperature: 0.0, ..Default::default() },
                ignore_eos: true,
                time_bricks: timed,
            };
            let g = generate(&loaded.model, &loaded.tokenizer, &prompt, &opts, |_| {}).map_err(Unmet::failed)?;
            Ok(g.timings.decode_ms)
        };
        decode_ms(false)?; // warm-up
        let mut overheads = Vec::with_capacity(p.rounds);
        for r in 0..p.rounds {
            let (on, off) = if r % 2 == 0 {
                let off = decode_ms(false)?;
                (decode_ms(true)?, off)
            } else {
                let on = decode_ms(true)?;
                (on, decode_ms(false)?)
            };
            overheads.push(on / off - 1.0);
        }
        cx.record_series(format!("instrumentation_overhead {}", p.model), "fraction", 1, &overheads);
        Ok(judge_overhead(p, &overheads))
    }
}
