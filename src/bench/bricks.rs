//! The brick profile of decode: where a decoded token's time goes, brick by
//! brick, next to each brick's memory roofline (the bytes it must read ÷ the
//! measured read bandwidth) and its budget (roofline × an allowance).

use serde::{Deserialize, Serialize};

use crate::engine::{self, GenerateOptions};
use crate::model::{Breakdown, Brick, Model, ModelError};
use crate::sample::SamplerConfig;
use crate::tokenizer::Tokenizer;

/// The allowance over the roofline that a brick's budget grants: the
/// catalog's "actual ≤ 1.5 × roofline budget".
pub const DEFAULT_ALLOWANCE: f64 = 1.5;

/// One brick's roofline and budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrickBudget {
    /// Brick name.
    pub name: String,
    /// Bytes the brick must read per decoded token.
    pub bytes_per_token: u64,
    /// Time to read them at the measured bandwidth, µs.
    pub roofline_us: f64,
    /// `roofline_us × allowance`, µs.
    pub budget_us: f64,
}

/// Decode's brick profile on one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrickProfile {
    /// Model size (`0.5b`, …).
    pub model: String,
    /// Threads used.
    pub threads: usize,
    /// The read bandwidth the rooflines use, GB/s (median of the measurement).
    pub read_bandwidth_gb_s: f64,
    /// Budget over roofline.
    pub allowance: f64,
    /// Measured time per brick.
    pub decode: Breakdown,
    /// Roofline and budget per brick, in pass order.
    pub bricks: Vec<BrickBudget>,
}

impl BrickProfile {
    /// The brick whose measured time exceeds its budget by the largest factor
    /// (actual ÷ budget), with that factor. Bricks without a budget are left out.
    pub fn bottleneck(&self) -> Option<(&str, f64)> {
        self.decode
            .bricks
            .iter()
            .zip(&self.bricks)
            .filter(|(_, b)| b.budget_us > 0.0)
            .map(|(a, b)| (a.name.as_str(), a.us_per_token / b.budget_us))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// Bytes each brick reads per decoded token at context length `ctx`, in
/// [`Brick::ALL`] order: weights, norms, biases, rotated vectors and the KV cache.
pub fn bytes_per_brick(model: &Model, ctx: usize) -> [u64; Brick::ALL.len()] {
    let c = &model.config;
    let size = |m: &crate::model::Matrix| (m.rows * m.row_bytes) as u64;
    let f32s = |n: usize| (n * 4) as u64;
    let mut bytes = [0u64; Brick::ALL.len()];
    for l in &model.layers {
        bytes[Brick::AttnNorm as usize] += f32s(l.attn_norm.len());
        bytes[Brick::Qkv as usize] +=
            size(&l.wq) + size(&l.wk) + size(&l.wv) + f32s(l.bq.len() + l.bk.len() + l.bv.len());
        bytes[Brick::Rope as usize] += f32s(2 * (c.n_embd + c.kv_dim()));
        bytes[Brick::Attention as usize] += (2 * c.kv_dim() * ctx * model.kv_type.bytes()) as u64;
        bytes[Brick::OProj as usize] += size(&l.wo);
        bytes[Brick::FfnNorm as usize] += f32s(l.ffn_norm.len());
        bytes[Brick::Ffn as usize] += size(&l.w_gate) + size(&l.w_up) + size(&l.w_down);
    }
    bytes[Brick::Embed as usize] = model.token_embd.row_bytes as u64;
    bytes[Brick::OutputNorm as usize] = f32s(model.output_norm.len());
    bytes[Brick::LmHead as usize] = size(&model.lm_head);
    bytes
}

/// Rooflines and budgets from bytes per brick, bandwidth (GB/s) and allowance.
pub fn budgets(bytes: &[u64; Brick::ALL.len()], bandwidth_gb_s: f64, allowance: f64) -> Vec<BrickBudget> {
    Brick::ALL
        .iter()
        .zip(bytes)
        .map(|(b, &n)| {
            let roofline_us = n as f64 / (bandwidth_gb_s * 1e3);
            BrickBudget { name: b.name().into(), bytes_per_token: n, roofline_us, budget_us: roofline_us * allowance }
        })
        .collect()
}

/// Profiles decode: one short warm-up generation, then `n_gen` greedy tokens
/// after `prompt` with every brick timed; budgets at the decode's mean context.
pub fn profile(
    model: &Model,
    tokenizer: &Tokenizer,
    size: &str,
    prompt: &[u32],
    n_gen: usize,
    bandwidth_gb_s: f64,
) -> Result<BrickProfile, ModelError> {
    let opts = GenerateOptions {
        max_tokens: n_gen + 1,
        sampler: SamplerConfig { temperature: 0.0, ..SamplerConfig::default() },
        ignore_eos: true,
        time_bricks: true,
    };
    engine::generate(model, tokenizer, prompt, &GenerateOptions { max_tokens: 2, ..opts.clone() }, |_| {})?;
    let g = engine::generate(model, tokenizer, prompt, &opts, |_| {})?;
    let decode = g.timings.decode_bricks.unwrap_or_else(|| crate::model::BrickTimes::default().breakdown(0, 0.0));
    let mean_ctx = prompt.len() + n_gen / 2;
    Ok(BrickProfile {
        model: size.into(),
        threads: model.threads(),
        read_bandwidth_gb_s: bandwidth_gb_s,
        allowance: DEFAULT_ALLOWANCE,
        decode,
        bricks: budgets(&bytes_per_brick(model, mean_ctx), bandwidth_gb_s, DEFAULT_ALLOWANCE),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tied_model;
    use crate::model::BrickTimes;

    #[test]
    fn budgets_are_bytes_over_bandwidth_times_allowance() {
        let mut bytes = [0u64; Brick::ALL.len()];
        bytes[Brick::Ffn as usize] = 30_000_000;
        let b = budgets(&bytes, 30.0, 1.5);
        let ffn = &b[Brick::Ffn as usize];
        assert_eq!((ffn.name.as_str(), ffn.bytes_per_token), ("ffn", 30_000_000));
        assert!((ffn.roofline_us - 1000.0).abs() < 1e-9 && (ffn.budget_us - 1500.0).abs() < 1e-9);
        assert_eq!(b[Brick::Rope as usize].budget_us, 0.0);
    }

    #[test]
    fn every_weight_and_cache_byte_is_charged_to_a_brick() {
        let m = tied_model();
        let bytes = bytes_per_brick(&m, 7);
        let weights_and_kv = crate::bench::roofline::bytes_per_token(&m, 7);
        let extra: u64 = [Brick::AttnNorm, Brick::FfnNorm, Brick::OutputNorm, Brick::Rope]
            .iter()
            .map(|&b| bytes[b as usize])
            .sum::<u64>()
            + m.layers.iter().map(|l| 4 * (l.bq.len() + l.bk.len() + l.bv.len()) as u64).sum::<u64>();
        assert_eq!(bytes.iter().sum::<u64>(), weights_and_kv + extra);
    }

    #[test]
    fn a_profile_times_every_brick() {
        let m = tied_model();
        let tok = Tokenizer::from_header(&m.file.header).unwrap();
        let p = profile(&m, &tok, "tiny", &[1, 2, 3], 4, 10.0).unwrap();
        assert_eq!((p.decode.tokens, p.bricks.len()), (4, Brick::ALL.len()));
        assert!(p.decode.bricks.iter().all(|b| b.us_per_token > 0.0));
        assert!(p.bottleneck().is_some());
    }

    #[test]
    fn the_bottleneck_is_the_largest_actual_over_budget() {
        let mut times = BrickTimes::default();
        times.ns[Brick::Ffn as usize] = 4_000; // 4 µs against a 2 µs budget: 2×
        times.ns[Brick::LmHead as usize] = 9_000; // 9 µs against a 3 µs budget: 3×
        times.ns[Brick::Rope as usize] = 50_000; // no budget: never the bottleneck
        let mut bytes = [0u64; Brick::ALL.len()];
        (bytes[Brick::Ffn as usize], bytes[Brick::LmHead as usize]) = (2_000, 3_000);
        let p = BrickProfile {
            model: "x".into(),
            threads: 1,
            read_bandwidth_gb_s: 1.0,
            allowance: 1.0,
            decode: times.breakdown(1, 1.0),
            bricks: budgets(&bytes, 1.0, 1.0),
        };
        let (name, gap) = p.bottleneck().unwrap();
        assert_eq!(name, "lm_head");
        assert!((gap - 3.0).abs() < 1e-9);
    }
}
