//! Checks against references that need no model: quant formats bit-exact
//! with independent fixtures (`quant_reference`), and the transformer's
//! operations against their analytic definitions in f64 (`op_reference`).

use serde::Deserialize;

use super::judge;
use super::{kind, Check, Kind};
use crate::claims::{Context, Outcome, Unmet};
use crate::gguf::TensorType;
use crate::kernels::ops;
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
    /// NEOX RoPE against the rotation formula.
    Rope,
    /// Softmax on extreme inputs: finite, normalized, equal to the f64 definition.
    Softmax,
    /// SiLU(gate)·up against the f64 definition.
    Swiglu,
    /// RMSNorm: zero input stays finite; values match the f64 definition.
    Rmsnorm,
}

/// Parameters of `op_reference`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpParams {
    /// The operation.
    pub op: Op,
}

/// The implementations under test (the engine's, or a deliberately broken one in the audit).
#[derive(Clone, Copy)]
pub struct Ops {
    /// RoPE of one head: (x, dim, pos, base).
    pub rope: fn(&mut [f32], usize, usize, f32),
    /// Softmax in place.
    pub softmax: fn(&mut [f32]),
    /// SiLU(gate)·up into gate.
    pub swiglu: fn(&mut [f32], &[f32]),
    /// RMSNorm: (x, weight, eps).
    pub rms_norm: fn(&mut [f32], &[f32], f32),
}

fn engine_rope(x: &mut [f32], dim: usize, pos: usize, base: f32) {
    let (mut cos, mut sin) = (vec![0.0; dim / 2], vec![0.0; dim / 2]);
    ops::rope_angles(pos, dim, base, &mut cos, &mut sin);
    ops::rope_neox(x, dim, &cos, &sin);
}

impl Ops {
    /// The engine's operations.
    pub fn engine() -> Ops {
        Ops {
            rope: engine_rope,
            softmax: ops::softmax,
            swiglu: |g, u| ops::swiglu(g, u, g.len()),
            rms_norm: ops::rms_norm,
        }
    }
}

fn close(a: f32, b: f64, tol: f64) -> bool {
    a.is_finite() && (f64::from(a) - b).abs() <= tol * (1.0 + b.abs())
}

/// Cases checked and violations found for `op` implemented by `ops`.
pub fn op_violations(op: Op, ops: Ops) -> (usize, Vec<String>) {
    let mut rng = SplitMix64(0x0b5);
    let mut rand = |scale: f64| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32;
    let mut bad = Vec::new();
    let mut cases = 0;
    match op {
        Op::Rope => {
            let dim = 64;
            for pos in [0usize, 1, 7, 100, 1000, 4095] {
                for base in [10_000.0f32, 1_000_000.0] {
                    cases += 1;
                    let x: Vec<f32> = (0..dim).map(|_| rand(1.0)).collect();
                    let mut y = x.clone();
                    (ops.rope)(&mut y, dim, pos, base);
                    for i in 0..dim / 2 {
                        let theta = pos as f64 * f64::from(base).powf(-2.0 * i as f64 / dim as f64);
                        let (a, b) = (f64::from(x[i]), f64::from(x[i + dim / 2]));
                        let want = [a * theta.cos() - b * theta.sin(), a * theta.sin() + b * theta.cos()];
                        // f32 angles drift by ~pos·ε, so the tolerance grows with the position.
                        let tol = 1e-5 + pos as f64 * 4e-7;
                        if !close(y[i], want[0], tol) || !close(y[i + dim / 2], want[1], tol) {
                            bad.push(format!(
                                "pos {pos} base {base} pair {i}: got ({}, {}) want {want:?}",
                                y[i],
                                y[i + dim / 2]
                            ));
                            break;
                        }
                    }
                }
            }
        }
        Op::Softmax => {
            let inputs: Vec<Vec<f32>> = vec![
                vec![1e30, 1e30, -1e30],
                vec![-1e30, -1e30, -1e30 + 1e24],
                vec![5.0; 7],
                vec![0.0, 1000.0, -1000.0],
                vec![f32::MAX, 0.0],
                vec![-3.0e38, 3.0e38],
                (0..1000).map(|_| rand(100.0)).collect(),
                vec![1e-30, 0.0, -1e-30],
            ];
            for x in inputs {
                cases += 1;
                let mut y = x.clone();
                (ops.softmax)(&mut y);
                let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f64> = x.iter().map(|&v| (f64::from(v) - f64::from(max)).exp()).collect();
                let z: f64 = exps.iter().sum();
                let sum: f64 = y.iter().map(|&v| f64::from(v)).sum();
                let wrong = y.iter().zip(&exps).position(|(&a, &e)| !close(a, e / z, 1e-5));
                if y.iter().any(|v| !v.is_finite()) || (sum - 1.0).abs() > 1e-5 || wrong.is_some() {
                    bad.push(format!(
                        "input {:?}…: output {:?}…, sum {sum}",
                        &x[..x.len().min(3)],
                        &y[..y.len().min(3)]
                    ));
                }
            }
        }
        Op::Swiglu => {
            for scale in [1.0, 10.0, 80.0] {
                cases += 1;
                let gate: Vec<f32> = (0..256).map(|_| rand(scale)).collect();
                let up: Vec<f32> = (0..256).map(|_| rand(scale)).collect();
                let mut y = gate.clone();
                (ops.swiglu)(&mut y, &up);
                for i in 0..gate.len() {
                    let g = f64::from(gate[i]);
                    let want = g / (1.0 + (-g).exp()) * f64::from(up[i]);
                    if !close(y[i], want, 1e-5) {
                        bad.push(format!("gate {g} up {}: got {} want {want}", up[i], y[i]));
                        break;
                    }
                }
            }
        }
        Op::Rmsnorm => {
            let eps = 1e-6f32;
            let n = 896;
            let weight: Vec<f32> = (0..n).map(|_| rand(2.0)).collect();
            for scale in [0.0, 1e-20, 1.0, 1e3] {
                cases += 1;
                let x: Vec<f32> = (0..n).map(|_| rand(scale)).collect();
                let mut y = x.clone();
                (ops.rms_norm)(&mut y, &weight, eps);
                let ms: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n as f64;
                let inv = 1.0 / (ms + f64::from(eps)).sqrt();
                let wrong = (0..n).find(|&i| !close(y[i], f64::from(x[i]) * inv * f64::from(weight[i]), 1e-5));
                if let Some(i) = wrong {
                    bad.push(format!("scale {scale}: element {i} is {} (input {})", y[i], x[i]));
                }
            }
        }
    }
    (cases, bad)
}

/// `op_reference`: an operation of the forward pass against its f64 definition.
pub struct OpReference;

impl Check for OpReference {
    const NAME: &'static str = "op_reference";
    const DOC: &'static str =
        "a forward-pass operation (rope, softmax, swiglu, rmsnorm) against its f64 definition, extremes included";
    const PARAMS: &'static str = "op (rope|softmax|swiglu|rmsnorm)";
    type Params = OpParams;

    fn run(p: &OpParams, _cx: &mut Context) -> Result<Outcome, Unmet> {
        let (cases, bad) = op_violations(p.op, Ops::engine());
        Ok(judge::no_violations(&format!("{:?}_violations", p.op).to_lowercase(), cases, bad))
    }
}
