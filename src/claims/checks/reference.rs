//! Checks against references that need no model: quant formats bit-exact
//! with independent fixtures (`quant_reference`), and the transformer's
//! operations as the engine's kernels run them against the scalar reference
//! and their definitions in f64 (`op_reference`).

use serde::Deserialize;

use super::judge;
use super::{kind, Check, Kind};
use crate::claims::{Context, Outcome, Unmet};
use crate::gguf::TensorType;
use crate::kernels::{ops, Kernels};
use crate::model::{attention, KvCache, KvType};
use crate::rng::SplitMix64;

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![kind::<QuantReference>(), kind::<OpReference>()]
}

/// Parameters of `quant_reference`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantParams {
    /// Fixture names under `tests/fixtures/quant/` (`random_Q4_K`, `model_Q6_K`, …), each an
    /// `.in` (quantized blocks) and `.out` (the reference's f32 values) pair.
    pub fixtures: Vec<String>,
}

fn fixture_type(name: &str) -> Result<TensorType, Unmet> {
    // `random_Q4_K`, `model_F32`: a source prefix, then the type's name.
    let suffix = name.split_once('_').map(|(_, t)| t);
    Ok(match suffix {
        Some("F32") => TensorType::F32,
        Some("F16") => TensorType::F16,
        Some("BF16") => TensorType::BF16,
        Some("Q4_0") => TensorType::Q4_0,
        Some("Q5_0") => TensorType::Q5_0,
        Some("Q8_0") => TensorType::Q8_0,
        Some("Q4_K") => TensorType::Q4K,
        Some("Q5_K") => TensorType::Q5K,
        Some("Q6_K") => TensorType::Q6K,
        _ => return Err(Unmet::Failed(format!("fixture {name}: no tensor type in its name"))),
    })
}

/// Elements whose dequantized bits differ from `expected` (little-endian f32s),
/// or why the pair cannot be compared.
pub fn dequant_mismatches(ty: TensorType, input: &[u8], expected: &[u8]) -> Result<usize, String> {
    let want: Vec<f32> = expected.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let mut got = vec![0.0f32; want.len()];
    crate::quant::dequantize(ty, input, &mut got).map_err(|e| e.to_string())?;
    Ok(got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count())
}

/// Judges fixtures: (name, element count, mismatches or error).
pub fn judge_quant(results: &[(String, usize, Result<usize, String>)]) -> Outcome {
    let bad = results
        .iter()
        .filter_map(|(name, n, r)| match r {
            Ok(0) => None,
            Ok(k) => Some(format!("{name}: {k} of {n} values differ in their bits")),
            Err(e) => Some(format!("{name}: {e}")),
        })
        .collect();
    let mut out = judge::no_violations("dequantization_mismatches", results.len(), bad);
    if let Some(e) = out.evidence.as_mut() {
        let total: usize = results.iter().map(|(_, n, _)| n).sum();
        e.details.push(format!("{total} values compared bit for bit (references: gguf-py's gguf.quants, libggml)"));
    }
    out
}

/// `quant_reference`: dequantization bit-exact with independent reference fixtures.
pub struct QuantReference;

impl Check for QuantReference {
    const NAME: &'static str = "quant_reference";
    const DOC: &'static str =
        "dequantization is bit-exact with fixtures from independent references (gguf-py, libggml)";
    const PARAMS: &'static str = "fixtures (names under tests/fixtures/quant, e.g. random_Q4_K)";
    type Params = QuantParams;

    fn run(p: &QuantParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let mut results = Vec::new();
        for name in &p.fixtures {
            let ty = fixture_type(name)?;
            let read = |ext: &str| {
                let path = cx.fixture(&format!("quant/{name}.{ext}"));
                std::fs::read(&path).map_err(|e| Unmet::Failed(format!("{}: {e}", path.display())))
            };
            let (input, expected) = (read("in")?, read("out")?);
            results.push((name.clone(), expected.len() / 4, dequant_mismatches(ty, &input, &expected)));
        }
        Ok(judge_quant(&results))
    }
}

/// Which operation `op_reference` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// NEOX RoPE as the engine's kernels run it: bit for bit the scalar
    /// reference, and the rotation formula within f32 angle drift.
    Rope,
    /// The softmax the engine runs, fused into its attention kernel: bit for
    /// bit the reference attention, finite and normalized (every output within
    /// its values' range) on huge, tiny and equal logits.
    Softmax,
    /// SiLU(gate)·up as the engine's kernels run it: bit for bit the scalar
    /// reference, and the f64 definition within 1e-5.
    Swiglu,
    /// RMSNorm as the model calls it: zero input stays finite; values match the f64 definition.
    Rmsnorm,
}

/// Parameters of `op_reference`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpParams {
    /// The operation.
    pub op: Op,
    /// Random inputs tried.
    #[serde(default = "default_cases")]
    pub cases: usize,
    /// Seed of the input generator.
    #[serde(default)]
    pub seed: u64,
}

fn default_cases() -> usize {
    2000
}

/// What `op_reference` runs: the engine's kernels, or a deliberately broken
/// subject in the audit.
#[derive(Clone, Copy)]
pub struct Subject {
    /// The kernels whose RoPE, SwiGLU and attention are checked.
    pub kernels: Kernels,
    /// RMSNorm as the model calls it: (x, weight, eps).
    pub rms_norm: fn(&mut [f32], &[f32], f32),
}

impl Subject {
    /// What the engine runs on this CPU.
    pub fn engine() -> Subject {
        Subject { kernels: Kernels::detect(), rms_norm: ops::rms_norm }
    }
}

fn close(a: f32, b: f64, tol: f64) -> bool {
    a.is_finite() && (f64::from(a) - b).abs() <= tol * (1.0 + b.abs())
}

/// The first element whose bits differ between `got` and `want`.
fn first_bit_difference(got: &[f32], want: &[f32]) -> Option<String> {
    let i = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits())?;
    Some(format!("element {i} is {:e}, the scalar reference {:e}", got[i], want[i]))
}

/// Uniform in ±`scale`.
fn uniform(rng: &mut SplitMix64, scale: f64) -> f32 {
    ((rng.next_f64() * 2.0 - 1.0) * scale) as f32
}

/// One random RoPE input: what differs from the reference or the formula.
fn rope_case(k: Kernels, rng: &mut SplitMix64) -> Option<String> {
    let dim = [64, 128][rng.below(2)];
    let heads = 1 + rng.below(14);
    let pos = rng.below(32_768);
    let base = [10_000.0f32, 1_000_000.0][rng.below(2)];
    let scale = [1.0, 100.0][rng.below(2)];
    let x: Vec<f32> = (0..heads * dim).map(|_| uniform(rng, scale)).collect();
    let (mut cos, mut sin) = (vec![0.0; dim / 2], vec![0.0; dim / 2]);
    ops::rope_angles(pos, dim, base, &mut cos, &mut sin);
    let (mut got, mut want) = (x.clone(), x.clone());
    k.rope_neox(&mut got, dim, &cos, &sin);
    ops::rope_neox(&mut want, dim, &cos, &sin);
    let at = format!("dim {dim} heads {heads} pos {pos} base {base}");
    if let Some(d) = first_bit_difference(&got, &want) {
        return Some(format!("{at}: {d}"));
    }
    // f32 angles drift by ~pos·ε, so the tolerance grows with the position.
    let tol = 1e-5 + pos as f64 * 4e-7;
    (0..dim / 2).find_map(|i| {
        let theta = pos as f64 * f64::from(base).powf(-2.0 * i as f64 / dim as f64);
        let (a, b) = (f64::from(x[i]), f64::from(x[i + dim / 2]));
        let want = [a * theta.cos() - b * theta.sin(), a * theta.sin() + b * theta.cos()];
        let tol = tol * scale;
        (!close(got[i], want[0], tol) || !close(got[i + dim / 2], want[1], tol))
            .then(|| format!("{at} pair {i}: got ({}, {}) want {want:?}", got[i], got[i + dim / 2]))
    })
}

/// One random attention input (huge, tiny, equal or ordinary logits): what
/// differs from the reference attention, or is not finite and normalized.
fn softmax_case(k: Kernels, rng: &mut SplitMix64) -> Option<String> {
    let hd = [64, 128][rng.below(2)];
    let (group, ctx, kv_head) = (1 + rng.below(7), 1 + rng.below(96), rng.below(2));
    // q·k·scale of order 1e4 (huge), 1e-6 (tiny), exactly 0 (equal), or 1.
    let (regime, qs, ks) =
        [("huge", 100.0, 100.0), ("tiny", 1e-3, 1e-3), ("equal", 0.0, 1.0), ("ordinary", 1.0, 1.0)][rng.below(4)];
    let mut cache = KvCache::new(KvType::F16, 1, 2 * hd, ctx);
    let mut values = Vec::with_capacity(ctx * 2 * hd);
    for p in 0..ctx {
        let key: Vec<f32> = (0..2 * hd).map(|_| uniform(rng, ks)).collect();
        let value: Vec<f32> = (0..2 * hd).map(|_| uniform(rng, 1.0)).collect();
        if let Err(e) = cache.write(0, p, &key, &value) {
            return Some(e.to_string());
        }
        values.extend(value.iter().map(|&v| half::f16::from_f32(v).to_f32()));
    }
    cache.advance(ctx);
    let q: Vec<f32> = (0..group * hd).map(|_| uniform(rng, qs)).collect();
    let scale = 1.0 / (hd as f32).sqrt();
    let (mut got, mut want) = (vec![f32::NAN; q.len()], vec![f32::NAN; q.len()]);
    attention::attend_group_by(k, &q, hd, &cache, 0, kv_head, ctx, scale, &mut got);
    attention::attend_group(&q, hd, &cache, 0, kv_head * hd, ctx, scale, &mut want);
    let at = format!("{regime} logits, {group} heads of {hd}, {ctx} positions");
    if let Some(d) = first_bit_difference(&got, &want) {
        return Some(format!("{at}: {d}"));
    }
    // Softmax weights are positive and sum to 1, so each output lies within the
    // range of the values it weighs (up to the f16 accumulator's rounding).
    got.chunks_exact(hd).flat_map(|h| h.iter().enumerate()).find_map(|(i, &o)| {
        let column = (0..ctx).map(|p| values[p * 2 * hd + kv_head * hd + i]);
        let (lo, hi) = column.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        (!o.is_finite() || o < lo - 0.05 || o > hi + 0.05)
            .then(|| format!("{at}: output {o} outside its values' range [{lo}, {hi}]"))
    })
}

/// One random SwiGLU input: what differs from the reference or the definition.
fn swiglu_case(k: Kernels, rng: &mut SplitMix64) -> Option<String> {
    let (row, rows) = (1 + rng.below(4_864), 1 + rng.below(3));
    let scale = [1.0, 10.0, 100.0][rng.below(3)];
    let gate: Vec<f32> = (0..row * rows).map(|_| uniform(rng, scale)).collect();
    let up: Vec<f32> = (0..row * rows).map(|_| uniform(rng, scale)).collect();
    let (mut got, mut want) = (gate.clone(), gate.clone());
    k.swiglu(&mut got, &up, row);
    ops::swiglu(&mut want, &up, row);
    if let Some(d) = first_bit_difference(&got, &want) {
        return Some(format!("{rows} rows of {row}: {d}"));
    }
    (0..gate.len()).find_map(|i| {
        let g = f64::from(gate[i]);
        let want = g / (1.0 + (-g).exp()) * f64::from(up[i]);
        (!close(got[i], want, 1e-5)).then(|| format!("gate {g} up {}: got {} want {want}", up[i], got[i]))
    })
}

/// One random RMSNorm input (all zero, tiny, ordinary or large): what differs from the definition.
fn rmsnorm_case(rms_norm: fn(&mut [f32], &[f32], f32), rng: &mut SplitMix64) -> Option<String> {
    let (eps, n) = (1e-6f32, [896, 1536, 1 + rng.below(4096)][rng.below(3)]);
    let scale = [0.0, 1e-20, 1.0, 1e3][rng.below(4)];
    let weight: Vec<f32> = (0..n).map(|_| uniform(rng, 2.0)).collect();
    let x: Vec<f32> = (0..n).map(|_| uniform(rng, scale)).collect();
    let mut y = x.clone();
    rms_norm(&mut y, &weight, eps);
    let ms: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n as f64;
    let inv = 1.0 / (ms + f64::from(eps)).sqrt();
    (0..n)
        .find(|&i| !close(y[i], f64::from(x[i]) * inv * f64::from(weight[i]), 1e-5))
        .map(|i| format!("{n} values of scale {scale}: element {i} is {} (input {})", y[i], x[i]))
}

/// Cases checked and violations found for `op` run by `subject` on `cases`
/// random inputs drawn from `seed`.
pub fn op_violations(op: Op, subject: Subject, cases: usize, seed: u64) -> (usize, Vec<String>) {
    let mut rng = SplitMix64(seed);
    let bad = (0..cases)
        .filter_map(|_| match op {
            Op::Rope => rope_case(subject.kernels, &mut rng),
            Op::Softmax => softmax_case(subject.kernels, &mut rng),
            Op::Swiglu => swiglu_case(subject.kernels, &mut rng),
            Op::Rmsnorm => rmsnorm_case(subject.rms_norm, &mut rng),
        })
        .collect();
    (cases, bad)
}

/// Judges `op_violations`, saying which kernels ran.
pub fn judge_op(op: Op, kernels: Kernels, (cases, bad): (usize, Vec<String>)) -> Outcome {
    let mut out = judge::no_violations(&format!("{op:?}_violations").to_lowercase(), cases, bad);
    if let Some(e) = out.evidence.as_mut() {
        e.details.push(match (op, kernels) {
            (Op::Rmsnorm, _) => "the model calls the scalar RMSNorm itself; checked against the f64 definition".into(),
            (_, Kernels::SCALAR) => {
                "this CPU runs the scalar reference kernels: the bit comparison is the reference against itself".into()
            }
            _ => format!("the {} kernels the engine runs, against the scalar reference bit for bit", kernels.name()),
        });
    }
    out
}

/// `op_reference`: an operation as the engine runs it against the scalar
/// reference (bit for bit) and its definition, on seeded random inputs.
pub struct OpReference;

impl Check for OpReference {
    const NAME: &'static str = "op_reference";
    const DOC: &'static str = "a forward-pass operation as the engine's kernels run it (rope, softmax in attention, \
         swiglu, rmsnorm) equals the scalar reference bit for bit and matches its f64 definition, on seeded random inputs";
    const PARAMS: &'static str = "op (rope|softmax|swiglu|rmsnorm), cases (default 2000), seed (default 0)";
    type Params = OpParams;

    fn run(p: &OpParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let subject = Subject::engine();
        cx.say(format_args!("{} random inputs through the {} kernels", p.cases, subject.kernels.name()));
        Ok(judge_op(p.op, subject.kernels, op_violations(p.op, subject, p.cases, p.seed)))
    }
}
