//! Checks on decode's brick profile ([`crate::bench::bricks`]): every stage
//! the forward pass traced ran inside a registered brick's span (F001), the
//! brick spans account for the measured token time (F016), the bottleneck
//! named is the brick with the largest excess over its budget (F010), a
//! brick's time stays within its budget (F023–F029: roofline × a factor, or a
//! fixed µs budget per layer, judged on the profile's windows), and timing
//! the bricks costs little (F015).

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::{kind, Check, Kind, ModelParams};
use crate::bench::bricks::BrickProfile;
use crate::claims::{Context, Outcome, Unmet};
use crate::model::{Brick, Stage};
use crate::stats::Op;

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![
        kind::<BricksTimed>(),
        kind::<BrickCoverage>(),
        kind::<BrickBudget>(),
        kind::<Bottleneck>(),
        kind::<InstrumentationOverhead>(),
    ]
}

/// `bricks_timed`: every stage the forward pass traced ran inside a registered brick's span.
pub struct BricksTimed;

/// Judges the profile's stage trace against the brick registry ([`Brick::ALL`]):
/// a stage entered outside every brick span, a registered brick no traced
/// stage ran inside, or a brick with no time is a violation.
pub fn judge_timed(p: &BrickProfile) -> Outcome {
    let untimed = Brick::ALL.iter().filter_map(|b| match p.decode.bricks.iter().find(|r| r.name == b.name()) {
        None => Some(format!("brick {} has no row in the profile", b.name())),
        Some(r) if r.us_per_token.is_nan() || r.us_per_token <= 0.0 => {
            Some(format!("brick {} was never timed", b.name()))
        }
        Some(_) => None,
    });
    let violations = p.decode.trace().violations().into_iter().chain(untimed).collect();
    let mut o = judge::no_violations("stages_outside_bricks", Stage::ALL.len() + Brick::ALL.len(), violations);
    o.sentence = format!("{} ({} stages traced over {} tokens)", o.sentence, p.decode.stages.len(), p.decode.tokens);
    o
}

impl Check for BricksTimed {
    const NAME: &'static str = "bricks_timed";
    const DOC: &'static str = "every stage the decode's forward pass traces (embed_lookup … logits) ran inside the span of a registered brick, and every brick timed a stage";
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

/// `brick_coverage`: the brick spans' time over the decode's measured wall time (sampling included).
pub struct BrickCoverage;

/// Judges the profile's coverage: on its windows' coverages (median, with a
/// bootstrap CI) when it has two or more, else on the whole decode's.
pub fn judge_coverage(p: &CoverageParams, profile: &BrickProfile) -> Outcome {
    let d = &profile.decode;
    let windows: Vec<f64> = d.windows.iter().map(|w| w.coverage()).collect();
    let mut q = if windows.len() >= 2 {
        Quantity::of_samples("brick_coverage", "fraction", &windows)
    } else {
        let mut q = Quantity::new("brick_coverage", "fraction", d.coverage);
        q.n = d.tokens;
        q
    };
    q = q.detail(format!(
        "{} decode tokens in {} windows: {:.1} ms inside brick spans of {:.1} ms measured ({:.2}%)",
        d.tokens,
        d.windows.len(),
        d.bricks_ms,
        d.wall_ms,
        100.0 * d.coverage
    ));
    judge::quantity(q, p.op, p.threshold)
}

impl Check for BrickCoverage {
    const NAME: &'static str = "brick_coverage";
    const DOC: &'static str =
        "the brick spans' summed time as a fraction of decode's measured token wall time, per window of tokens";
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
    let mut index = Vec::with_capacity(p.bricks.len());
    let mut roofline = 0.0;
    for name in &p.bricks {
        let measured = profile.decode.bricks.iter().position(|r| &r.name == name);
        let budget = profile.bricks.iter().find(|r| &r.name == name);
        let (Some(i), Some(b)) = (measured, budget) else {
            return Err(Unmet::Failed(format!("the brick profile has no brick {name:?}")));
        };
        index.push(i);
        roofline += b.roofline_us;
    }
    let sum = |us: &[f64]| index.iter().map(|&i| us.get(i).copied().unwrap_or(f64::NAN)).sum::<f64>();
    let all: Vec<f64> = profile.decode.bricks.iter().map(|r| r.us_per_token).collect();
    let actual = sum(&all);
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
    let windows: Vec<f64> = profile.decode.windows.iter().map(|w| sum(&w.us_per_token)).collect();
    let mut q = if windows.len() >= 2 {
        Quantity::of_samples("brick_us_per_token", "us", &windows)
    } else {
        let mut q = Quantity::new("brick_us_per_token", "us", actual);
        q.n = profile.decode.tokens;
        q
    };
    q = q
        .detail(format!(
            "bricks {}: {:.1} µs per token over {} tokens, {} windows",
            p.bricks.join(" + "),
            actual,
            profile.decode.tokens,
            windows.len()
        ))
        .detail(how);
    Ok(judge::quantity(q, Op::Le, budget))
}

impl Check for BrickBudget {
    const NAME: &'static str = "brick_budget";
    const DOC: &'static str = "the named bricks' decode time per token within budget (roofline × factor, or µs per layer), on the median of the profile's windows with a bootstrap CI";
    const PARAMS: &'static str = "model, bricks (names), and roofline_factor or budget_us (per layer)";
    type Params = BudgetParams;

    fn run(p: &BudgetParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let profile = cx.bricks(&p.model)?;
        let n_layer = cx.model(&p.model)?.model.config.n_layer;
        judge_budget(p, &profile, n_layer)
    }
}

/// How a profile's bottleneck is picked: the brick's name and its actual ÷ budget.
pub type Selector = fn(&BrickProfile) -> Option<(&str, f64)>;

/// Where `select` disagrees with the bottleneck's definition (the brick with
/// the largest excess, actual − budget, µs per token): on `profile` as
/// measured, and on copies of its figures that raise one brick's time at a
/// time enough to give it the largest excess by 10 µs (arithmetic on the
/// figures, not a slowed run), which must be named.
pub fn bottleneck_violations(profile: &BrickProfile, select: Selector) -> (usize, Vec<String>) {
    let rows = |p: &BrickProfile| -> Vec<(String, f64, f64)> {
        p.decode
            .bricks
            .iter()
            .zip(&p.bricks)
            .filter(|(_, b)| b.budget_us > 0.0)
            .map(|(a, b)| (a.name.clone(), a.us_per_token - b.budget_us, a.us_per_token / b.budget_us))
            .collect()
    };
    let check = |p: &BrickProfile, what: &str| -> Option<String> {
        let rows = rows(p);
        let (want, excess, ratio) = rows.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
        match select(p) {
            Some((name, r)) if name == want && (r - ratio).abs() <= 1e-9 * ratio.abs() => None,
            Some((name, r)) => Some(format!(
                "{what}: named {name} ({r:.2}× budget), but {want} exceeds its budget most (+{excess:.1} µs per token, {ratio:.2}×)"
            )),
            None => Some(format!("{what}: named no bottleneck; {want} exceeds its budget by {excess:.1} µs")),
        }
    };
    let measured = rows(profile);
    let top = measured.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
    let mut bad: Vec<String> = check(profile, "as measured").into_iter().collect();
    for (name, excess, _) in &measured {
        let mut raised = profile.clone();
        if let Some(row) = raised.decode.bricks.iter_mut().find(|r| &r.name == name) {
            row.us_per_token += top - excess + 10.0;
        }
        bad.extend(check(&raised, &format!("with {name}'s figure raised by {:.1} µs", top - excess + 10.0)));
    }
    (measured.len() + 1, bad)
}

/// `bottleneck`: the shipped bottleneck selection names the brick with the largest excess over its budget.
pub struct Bottleneck;

impl Check for Bottleneck {
    const NAME: &'static str = "bottleneck";
    const DOC: &'static str = "the bottleneck the profile names (BrickProfile::bottleneck, as `falsify top` and the report show it) is the brick with the largest actual − budget, on the measured decode and on copies of its figures with each brick's time raised in turn";
    const PARAMS: &'static str = "model";
    type Params = ModelParams;

    fn run(p: &ModelParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let profile = cx.bricks(&p.model)?;
        let (n, bad) = bottleneck_violations(&profile, BrickProfile::bottleneck);
        let mut o = judge::no_violations("misnamed_bottlenecks", n, bad);
        if let Some((name, ratio)) = profile.bottleneck() {
            o.sentence = format!("{} (bottleneck as measured: {name}, {ratio:.2}× its budget)", o.sentence);
        }
        Ok(o)
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
