//! Checks on the bricks as objects ([`crate::model::contract`]), each on the
//! engine's own registry ([`Model::bricks`]), the one the forward pass runs:
//! every brick declares assertions (F002), `verify()` reports each one a run
//! breaks (F003), budgets are positive and finite (F004), names are unique
//! (F005), bad input gets an error and never a panic (F006, F018), every
//! [`BrickError`] variant is produced (F007), the bricks on the fast kernels
//! match the scalar reference (F017) and repeat bit for bit (F019).

use serde::Deserialize;

use super::judge;
use super::{kind, Check, Kind, ModelParams};
use crate::claims::{Context, Outcome, Unmet};
use crate::kernels::Kernels;
use crate::model::contract::{Assertion, Observation};
use crate::model::pipeline::BrickOutput;
use crate::model::probe::{self, Case, Defect, Ending};
use crate::model::{Brick, BrickError, BrickSpec, Logits, Model, Roofline, Verification};
use crate::rng::SplitMix64;

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![
        kind::<BrickRegistry>(),
        kind::<BrickCases>(),
        kind::<BrickErrors>(),
        kind::<BrickReference>(),
        kind::<BrickDeterminism>(),
    ]
}

/// A fixed prompt of `n` token ids spread over the vocabulary.
fn prompt(model: &Model, n: usize) -> Vec<u32> {
    let vocab = model.config.vocab_size as u32;
    (0..n as u32).map(|i| (1000 + 37 * i) % vocab).collect()
}

/// The host's ceilings as a roofline.
fn roofline(cx: &mut Context) -> Result<Roofline, Unmet> {
    let h = cx.host_probe()?;
    Ok(Roofline { read_gb_s: h.read_bandwidth_gb_s, int8_gops: h.int8_gops, f32_gflops: h.f32_gflops })
}

/// One verified forward pass of `tokens` on `model`.
pub fn verified_pass(model: &Model, tokens: &[u32], verification: &mut Verification) -> Result<(), Unmet> {
    let mut cache = model.try_new_cache(tokens.len()).map_err(Unmet::failed)?;
    let mut logits = Vec::new();
    model.forward_verified(tokens, &mut cache, Logits::Last, verification, &mut logits).map_err(Unmet::failed)
}

/// Parameters of `brick_registry`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryParams {
    /// Model size.
    pub model: String,
    /// What is judged: `assertions` (F002), `verify` (F003), `budgets` (F004) or `names` (F005).
    pub aspect: String,
}

/// `brick_registry`: a property of every brick in the engine's registry.
pub struct BrickRegistry;

/// Every registered brick declares at least one assertion, and a verified
/// pass evaluated them: `evaluated` is the count the pass evaluated per brick.
pub fn judge_assertions(bricks: &[&dyn BrickSpec], seen: &[(Brick, Observation)]) -> Outcome {
    let violations = bricks
        .iter()
        .filter_map(|b| match (b.assertions().len(), seen.iter().any(|(id, _)| *id == b.id())) {
            (0, _) => Some(format!("brick {} declares no assertion", b.name())),
            (_, false) => Some(format!("brick {} is registered, but the verified pass never ran it", b.name())),
            _ => None,
        })
        .collect();
    let declared: usize = bricks.iter().map(|b| b.assertions().len()).sum();
    let mut o = judge::no_violations("bricks_without_assertions", bricks.len(), violations);
    o.sentence = format!("{} ({declared} assertions declared by {} bricks)", o.sentence, bricks.len());
    o
}

/// A copy of `seen` that breaks `assertion` and nothing else it can help.
pub fn poisoned(seen: &Observation, assertion: &Assertion) -> Observation {
    let mut bad = seen.clone();
    match *assertion {
        Assertion::Shape { tensor, .. } => {
            if let Some(t) = bad.tensors.iter_mut().find(|t| t.tensor == tensor) {
                t.len += 1;
            }
        }
        Assertion::Finite { tensor } => {
            if let Some(t) = bad.tensors.iter_mut().find(|t| t.tensor == tensor) {
                t.non_finite += 1;
            }
        }
        Assertion::WithinBudget => bad.elapsed_us = 2.0 * bad.budget_us.max(1.0) + 1.0,
    }
    bad
}

/// For every registered brick's real run (`seen`) and every assertion it
/// declares: `verify()` on the run poisoned to break that assertion must
/// report it. An assertion verify does not report is a violation.
pub fn judge_verify(bricks: &[&dyn BrickSpec], seen: &[(Brick, Observation)]) -> Outcome {
    let mut violations = Vec::new();
    let mut checked = 0;
    for b in bricks {
        let Some((_, run)) = seen.iter().find(|(id, _)| *id == b.id()) else {
            violations.push(format!("brick {}: no run to verify", b.name()));
            continue;
        };
        for a in b.assertions() {
            checked += 1;
            let reported = b.verify(&poisoned(run, a));
            if !reported.iter().any(|f| f.assertion == *a) {
                violations.push(format!("brick {}: verify() did not report a broken \"{}\"", b.name(), a.describe()));
            }
        }
    }
    let mut o = judge::no_violations("assertions_verify_missed", checked, violations);
    o.sentence = format!("{} ({checked} assertions poisoned one at a time)", o.sentence);
    o
}

/// Every brick's budget in every layer, from `roofline`: positive and finite.
pub fn judge_budgets(model: &Model, bricks: &[&dyn BrickSpec], roofline: &Roofline, allowance: f64) -> Outcome {
    let mut violations = Vec::new();
    let mut checked = 0;
    for b in bricks {
        for layer in model.brick_layers(b.id()) {
            checked += 1;
            let budget = b.budget_us(model, layer, 512, roofline, allowance);
            if !(budget.is_finite() && budget > 0.0) {
                let at = layer.map_or(String::new(), |l| format!(" in layer {l}"));
                violations.push(format!("brick {}{at}: budget {budget} µs", b.name()));
            }
        }
    }
    let mut o = judge::no_violations("budgets_not_positive_finite", checked, violations);
    o.sentence = format!(
        "{} ({checked} budgets at {:.1} GB/s, {:.0} int8 GOPS, {:.0} f32 GFLOPS × {allowance})",
        o.sentence, roofline.read_gb_s, roofline.int8_gops, roofline.f32_gflops
    );
    o
}

/// The registry's names are unique.
pub fn judge_names(bricks: &[&dyn BrickSpec]) -> Outcome {
    let names: Vec<&str> = bricks.iter().map(|b| b.name()).collect();
    let violations = names
        .iter()
        .enumerate()
        .filter(|(i, n)| names[..*i].contains(n))
        .map(|(_, n)| format!("brick name {n:?} is registered twice"))
        .collect();
    let mut o = judge::no_violations("duplicate_brick_names", names.len(), violations);
    o.sentence = format!("{} (names: {})", o.sentence, names.join(", "));
    o
}

impl Check for BrickRegistry {
    const NAME: &'static str = "brick_registry";
    const DOC: &'static str = "a property of every brick in the engine's own registry (Model::bricks, the bricks its forward pass runs): declared assertions, verify() reporting each broken one, budgets, unique names";
    const PARAMS: &'static str = "model, aspect (assertions | verify | budgets | names)";
    type Params = RegistryParams;

    fn run(p: &RegistryParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let roofline = roofline(cx)?;
        let model = &cx.model(&p.model)?.model;
        let bricks = model.bricks();
        let seen = || -> Result<Vec<(Brick, Observation)>, Unmet> {
            let mut v = Verification::new(roofline, crate::bench::bricks::DEFAULT_ALLOWANCE);
            verified_pass(model, &prompt(model, 8), &mut v)?;
            Ok(v.first_seen)
        };
        Ok(match p.aspect.as_str() {
            "assertions" => judge_assertions(&bricks, &seen()?),
            "verify" => judge_verify(&bricks, &seen()?),
            "budgets" => judge_budgets(model, &bricks, &roofline, crate::bench::bricks::DEFAULT_ALLOWANCE),
            "names" => judge_names(&bricks),
            other => return Err(Unmet::Failed(format!("unknown aspect {other:?}"))),
        })
    }
}

/// Parameters of `brick_cases`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesParams {
    /// Model size.
    pub model: String,
    /// Cases drawn.
    pub cases: usize,
    /// Seed of the draw.
    pub seed: u64,
    /// What is judged: `no_panic` (F006: bad input is refused, sound input runs, nothing panics)
    /// or `shape_errors` (F018: every wrong shape is a shape error).
    pub aspect: String,
}

/// `brick_cases`: a seeded property test of the registry's bricks on good and bad input.
pub struct BrickCases;

/// Each case with how it ended.
pub type CaseEndings = Vec<(Case, Ending)>;

/// Draws `n` cases from `seed` and runs each on `subject`.
pub fn run_cases(subject: &dyn Fn(&Case) -> Result<(), BrickError>, n: usize, seed: u64) -> CaseEndings {
    let mut rng = SplitMix64(seed);
    (0..n)
        .map(|_| {
            let case = Case::draw(&mut rng);
            let ending = probe::ending(subject, &case);
            (case, ending)
        })
        .collect()
}

/// F006: no case panicked, every bad case was refused with its error, every sound case ran.
pub fn judge_no_panic(endings: &CaseEndings) -> Outcome {
    let violations = endings
        .iter()
        .filter_map(|(case, ending)| {
            let wrong = match (case.defect.expected(), ending) {
                (_, Ending::Panicked { message }) => format!("panicked: {message}"),
                (None, Ending::Ran) => return None,
                (None, Ending::Refused { variant }) => format!("a sound input was refused ({variant})"),
                (Some(want), Ending::Refused { variant }) if want == variant => return None,
                (Some(want), Ending::Refused { variant }) => format!("refused with {variant}, expected {want}"),
                (Some(want), Ending::Ran) => format!("ran on bad input (expected a {want} error)"),
            };
            Some(format!("{} on {:?} ({} rows): {wrong}", case.brick.name(), case.defect, case.rows))
        })
        .collect();
    tally("cases_failed", endings, violations)
}

/// F018: every case with a wrong shape ended in a shape error.
pub fn judge_shape_errors(endings: &CaseEndings) -> Outcome {
    let shaped: Vec<&(Case, Ending)> = endings.iter().filter(|(c, _)| c.defect.is_shape()).collect();
    let violations = shaped
        .iter()
        .filter_map(|(case, ending)| match ending {
            Ending::Refused { variant } if variant == "shape" => None,
            other => Some(format!("{} on {:?} ({} rows): {other:?}", case.brick.name(), case.defect, case.rows)),
        })
        .collect();
    let shaped: CaseEndings = shaped.into_iter().cloned().collect();
    tally("shape_cases_not_shape_errors", &shaped, violations)
}

/// The verdict on `violations` among `endings`, with what the cases were.
fn tally(metric: &str, endings: &CaseEndings, violations: Vec<String>) -> Outcome {
    let count = |f: &dyn Fn(&Ending) -> bool| endings.iter().filter(|(_, e)| f(e)).count();
    let (ran, refused, panicked) = (
        count(&|e| matches!(e, Ending::Ran)),
        count(&|e| matches!(e, Ending::Refused { .. })),
        count(&|e| matches!(e, Ending::Panicked { .. })),
    );
    let mut o = judge::no_violations(metric, endings.len(), violations);
    o.sentence = format!("{} ({} cases: {ran} ran, {refused} refused, {panicked} panicked)", o.sentence, endings.len());
    o
}

impl Check for BrickCases {
    const NAME: &'static str = "brick_cases";
    const DOC: &'static str = "a seeded property test: the registry's bricks fed sound input, wrong widths, missing values, no rows, NaN and bad tokens; bad input must be refused with its BrickError and nothing may panic";
    const PARAMS: &'static str = "model, cases, seed, aspect (no_panic | shape_errors)";
    type Params = CasesParams;

    fn run(p: &CasesParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let model = &cx.model(&p.model)?.model;
        let endings = run_cases(&|case| probe::run_case(model, case), p.cases, p.seed);
        Ok(match p.aspect.as_str() {
            "no_panic" => judge_no_panic(&endings),
            "shape_errors" => judge_shape_errors(&endings),
            other => return Err(Unmet::Failed(format!("unknown aspect {other:?}"))),
        })
    }
}

/// `brick_errors`: every [`BrickError`] variant is produced by a real case.
pub struct BrickErrors;

/// The variants `produced` (variant, how) covers of `declared`: one not produced is a violation.
pub fn judge_errors(declared: &[&str], produced: &[(String, String)]) -> Outcome {
    let violations = declared
        .iter()
        .filter(|v| !produced.iter().any(|(p, _)| p == *v))
        .map(|v| format!("variant {v} was produced by no case"))
        .collect();
    let mut o = judge::no_violations("variants_not_produced", declared.len(), violations);
    let how: Vec<String> = produced.iter().map(|(v, how)| format!("{v}: {how}")).collect();
    o.sentence = format!("{} ({})", o.sentence, how.join("; "));
    o
}

/// Provokes each variant on `model`'s bricks: one case per defect, and a
/// real timed token held in strict mode to budgets of `host`'s roofline
/// times a vanishing allowance; returns each variant produced with the error's message.
pub fn provoke(model: &Model, host: &crate::bench::roofline::HostProbe) -> Result<Vec<(String, String)>, Unmet> {
    let cases = [
        Case { brick: Brick::Qkv, rows: 2, tensor: 0, defect: Defect::Wider { by: 3 } },
        Case { brick: Brick::FfnNorm, rows: 2, tensor: 0, defect: Defect::Empty },
        Case { brick: Brick::OProj, rows: 2, tensor: 1, defect: Defect::Nan },
        Case { brick: Brick::Embed, rows: 2, tensor: 0, defect: Defect::BadToken },
    ];
    let mut produced: Vec<(String, String)> = cases
        .iter()
        .filter_map(|c| probe::run_case(model, c).err())
        .map(|e| (e.variant().to_string(), e.to_string()))
        .collect();
    let mut times = crate::model::BrickTimes::default();
    let mut cache = model.try_new_cache(1).map_err(Unmet::failed)?;
    model
        .forward_into(&prompt(model, 1), &mut cache, Logits::Last, Some(&mut times), &mut Vec::new())
        .map_err(Unmet::failed)?;
    let bricks_us: Vec<f64> = times.us_per_token(1);
    let sample = crate::top::live::TokenSample {
        index: 0,
        position: 0,
        wall_us: bricks_us.iter().sum(),
        bricks_us: std::array::from_fn(|i| bricks_us[i]),
        trace: times.trace,
    };
    let costs = crate::bench::bricks::costs_per_brick(model, 1);
    let tight = crate::bench::bricks::budgets(&costs, host, 1e-9);
    if let Err(e) = crate::top::live::check_budgets(&sample, &tight) {
        produced.push((e.variant().into(), e.to_string()));
    }
    Ok(produced)
}

impl Check for BrickErrors {
    const NAME: &'static str = "brick_errors";
    const DOC: &'static str = "every BrickError variant is produced by a real case on the engine's bricks (a wrong shape, no rows, a NaN, a token outside the vocabulary, a strict-mode budget miss)";
    const PARAMS: &'static str = "model";
    type Params = ModelParams;

    fn run(p: &ModelParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let host = cx.host_probe()?;
        let model = &cx.model(&p.model)?.model;
        Ok(judge_errors(&BrickError::VARIANTS, &provoke(model, &host)?))
    }
}

/// Parameters of `brick_reference`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceParams {
    /// Model size.
    pub model: String,
    /// Prompt tokens.
    pub tokens: usize,
    /// Largest relative difference allowed (max |a − b| over max |b| of a brick's output).
    pub tolerance: f64,
}

/// `brick_reference`: each brick on the process's kernel set against the scalar reference.
pub struct BrickReference;

/// Every brick run's output values of one verified pass on `kernels`.
pub fn outputs_on(model: &mut Model, kernels: Kernels, tokens: &[u32]) -> Result<Vec<BrickOutput>, Unmet> {
    let saved = model.kernels;
    model.kernels = kernels;
    // Only the outputs are wanted: the budgets' roofline is immaterial here.
    let mut v = Verification::keeping_outputs(Roofline { read_gb_s: 1.0, int8_gops: 1.0, f32_gflops: 1.0 }, 1.0);
    let result = verified_pass(model, tokens, &mut v);
    model.kernels = saved;
    result?;
    Ok(v.outputs.unwrap_or_default())
}

/// The largest relative difference of `a` from `b`: max |a − b| over max |b|
/// (infinite when the lengths differ or a value is not finite in one only).
pub fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let scale = b.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs())).max(f64::MIN_POSITIVE);
    a.iter().zip(b).fold(0f64, |m, (&x, &y)| match (x.is_finite(), y.is_finite()) {
        (true, true) => m.max((f64::from(x) - f64::from(y)).abs() / scale),
        (false, false) if x.to_bits() == y.to_bits() => m,
        _ => f64::INFINITY,
    })
}

/// Brick by brick, `fast` against `reference` (the same pass's runs, in
/// order): each within `tolerance`; the first brick off is named.
pub fn judge_reference(fast: &[BrickOutput], reference: &[BrickOutput], tolerance: f64, set: &str) -> Outcome {
    let mut violations = Vec::new();
    let mut worst = 0f64;
    let mut exact = 0;
    if fast.len() != reference.len() || fast.is_empty() {
        violations.push(format!("{} brick runs on {set}, {} on the scalar reference", fast.len(), reference.len()));
    }
    for (a, b) in fast.iter().zip(reference) {
        let d = relative_difference(&a.values, &b.values);
        worst = worst.max(d);
        exact += usize::from(a.values.iter().map(|x| x.to_bits()).eq(b.values.iter().map(|x| x.to_bits())));
        if d.is_nan() || d > tolerance || a.brick != b.brick {
            let at = a.layer.map_or(String::new(), |l| format!(" (layer {l})"));
            violations.push(format!("brick {}{at}: relative difference {d:.3e} > {tolerance:e}", a.brick.name()));
        }
    }
    let mut o = judge::no_violations("bricks_off_reference", fast.len(), violations);
    o.sentence = format!(
        "{} (kernel set {set}; {exact} of {} brick runs equal bit for bit; largest relative difference {worst:.3e}, tolerance {tolerance:e})",
        o.sentence,
        fast.len()
    );
    o
}

impl Check for BrickReference {
    const NAME: &'static str = "brick_reference";
    const DOC: &'static str = "every brick run of a real forward pass on the process's kernel set against the same pass on the scalar reference kernels, brick by brick, within a stated relative tolerance";
    const PARAMS: &'static str = "model, tokens, tolerance";
    type Params = ReferenceParams;

    fn run(p: &ReferenceParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let model = &mut cx.model(&p.model)?.model;
        let tokens = prompt(model, p.tokens);
        let set = model.kernels;
        let fast = outputs_on(model, set, &tokens)?;
        let reference = outputs_on(model, Kernels::SCALAR, &tokens)?;
        Ok(judge_reference(&fast, &reference, p.tolerance, set.name()))
    }
}

/// Parameters of `brick_determinism`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeterminismParams {
    /// Model size.
    pub model: String,
    /// Prompt tokens.
    pub tokens: usize,
    /// Passes compared with the first.
    pub repeats: usize,
}

/// `brick_determinism`: the same input at the same thread count gives every brick the same bits.
pub struct BrickDeterminism;

/// Every pass in `repeats` against `first`, brick run by brick run, bit for bit.
pub fn judge_determinism(first: &[BrickOutput], repeats: &[Vec<BrickOutput>], threads: usize) -> Outcome {
    let mut violations = Vec::new();
    for (i, again) in repeats.iter().enumerate() {
        if again.len() != first.len() || first.is_empty() {
            violations.push(format!("pass {}: {} brick runs, the first had {}", i + 2, again.len(), first.len()));
            continue;
        }
        if let Some((a, _)) = first.iter().zip(again).find(|(a, b)| {
            a.brick != b.brick || !a.values.iter().map(|x| x.to_bits()).eq(b.values.iter().map(|x| x.to_bits()))
        }) {
            let at = a.layer.map_or(String::new(), |l| format!(" (layer {l})"));
            violations.push(format!("pass {}: brick {}{at} differs from the first pass", i + 2, a.brick.name()));
        }
    }
    let mut o = judge::no_violations("passes_differing", repeats.len(), violations);
    o.sentence =
        format!("{} ({} passes of {} brick runs each, {threads} threads)", o.sentence, repeats.len() + 1, first.len());
    o
}

impl Check for BrickDeterminism {
    const NAME: &'static str = "brick_determinism";
    const DOC: &'static str = "the same prompt run again at the same thread count gives every brick run of the forward pass the same output, bit for bit";
    const PARAMS: &'static str = "model, tokens, repeats";
    type Params = DeterminismParams;

    fn run(p: &DeterminismParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let model = &mut cx.model(&p.model)?.model;
        let tokens = prompt(model, p.tokens);
        let set = model.kernels;
        let first = outputs_on(model, set, &tokens)?;
        let repeats = (0..p.repeats).map(|_| outputs_on(model, set, &tokens)).collect::<Result<Vec<_>, _>>()?;
        Ok(judge_determinism(&first, &repeats, model.threads()))
    }
}

#[cfg(test)]
pub(super) mod audit;
