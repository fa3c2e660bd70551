//! The brick profile of decode: where a decoded token's time goes, brick by
//! brick, next to each brick's roofline (the longer of its bytes ÷ the
//! measured read bandwidth and its operations ÷ the measured compute peak)
//! and its budget (roofline × an allowance).

use serde::{Deserialize, Serialize};

use std::time::Instant;

use super::roofline::HostProbe;
use crate::model::{Breakdown, Brick, BrickTimes, Logits, Model, ModelError, Window};

/// The allowance over the roofline that a brick's budget grants: the
/// catalog's "actual ≤ 1.5 × roofline budget".
pub const DEFAULT_ALLOWANCE: f64 = 1.5;

/// Tokens per window of a profile: each window is one repeated sample of
/// every brick's time per token.
pub const WINDOW_TOKENS: usize = 8;

pub use crate::model::{BrickCost, Compute};

/// One brick's roofline and budget, with the derivation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrickBudget {
    /// Brick name.
    pub name: String,
    /// Bytes the brick must read per decoded token.
    pub bytes_per_token: u64,
    /// Operations per decoded token.
    pub ops_per_token: u64,
    /// The compute peak that bounds them.
    pub compute: Compute,
    /// Time to read the bytes at the measured bandwidth, µs.
    pub memory_us: f64,
    /// Time to do the operations at the measured peak, µs.
    pub compute_us: f64,
    /// The roofline: `max(memory_us, compute_us)`, µs.
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
    /// The host's measured ceilings the rooflines use.
    pub host: HostProbe,
    /// Budget over roofline.
    pub allowance: f64,
    /// Measured time per brick.
    pub decode: Breakdown,
    /// Roofline and budget per brick, in pass order.
    pub bricks: Vec<BrickBudget>,
    /// Read bandwidth, GB/s, measured right after each window of
    /// `decode.windows`, so that a window's bricks meet the roofline of their
    /// own minute (the shared host's bandwidth drifts by tens of percent);
    /// empty where it was not measured.
    #[serde(default)]
    pub window_bandwidth_gb_s: Vec<f64>,
}

impl BrickProfile {
    /// The bottleneck: the brick with the largest excess of measured time
    /// over its budget (µs per token, [`largest_excess`]), with its ratio
    /// (actual ÷ budget). Bricks without a budget are left out.
    pub fn bottleneck(&self) -> Option<(&str, f64)> {
        let pairs = self.decode.bricks.iter().zip(&self.bricks).map(|(a, b)| (a.us_per_token, b.budget_us));
        let i = largest_excess(pairs)?;
        let (a, b) = (&self.decode.bricks[i], &self.bricks[i]);
        Some((a.name.as_str(), a.us_per_token / b.budget_us))
    }
}

/// The index of the `(actual, budget)` pair whose excess (actual − budget)
/// is largest: where a token loses the most time to a brick missing its
/// budget, whatever the ratio. Pairs without a positive budget are left out.
pub fn largest_excess(pairs: impl IntoIterator<Item = (f64, f64)>) -> Option<usize> {
    pairs
        .into_iter()
        .enumerate()
        .filter(|(_, (_, budget))| *budget > 0.0)
        .map(|(i, (actual, budget))| (i, actual - budget))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// What each brick must do per decoded token at context length `ctx`, in
/// [`Brick::ALL`] order: each registered brick's own cost
/// ([`crate::model::BrickSpec::cost`]), summed over the layers for the
/// bricks that run once per layer.
pub fn costs_per_brick(model: &Model, ctx: usize) -> [BrickCost; Brick::ALL.len()] {
    let mut cost = [BrickCost::ZERO; Brick::ALL.len()];
    for brick in model.bricks() {
        let id = brick.id();
        let c = &mut cost[id as usize];
        for layer in model.brick_layers(id) {
            let one = brick.cost(model, layer, ctx);
            (c.bytes, c.ops, c.compute) = (c.bytes + one.bytes, c.ops + one.ops, one.compute);
        }
    }
    cost
}

/// Rooflines and budgets from each brick's cost, the host's ceilings and the allowance.
pub fn budgets(costs: &[BrickCost; Brick::ALL.len()], host: &HostProbe, allowance: f64) -> Vec<BrickBudget> {
    Brick::ALL
        .iter()
        .zip(costs)
        .map(|(b, c)| {
            let peak = match c.compute {
                Compute::Int8 => host.int8_gops,
                Compute::F32 => host.f32_gflops,
            };
            let memory_us = c.bytes as f64 / (host.read_bandwidth_gb_s * 1e3);
            let compute_us = c.ops as f64 / (peak * 1e3);
            let roofline_us = memory_us.max(compute_us);
            BrickBudget {
                name: b.name().into(),
                bytes_per_token: c.bytes,
                ops_per_token: c.ops,
                compute: c.compute,
                memory_us,
                compute_us,
                roofline_us,
                budget_us: roofline_us * allowance,
            }
        })
        .collect()
}

/// Runs `step` (one timed token into the times it is given) `n_gen` times in
/// windows of [`WINDOW_TOKENS`], measuring each window's wall time around
/// its steps and calling `after_window` after each, outside its time: the
/// breakdown of them all, with every window's beside it.
pub fn sample_windows<E>(
    n_gen: usize,
    mut step: impl FnMut(&mut BrickTimes) -> Result<(), E>,
    mut after_window: impl FnMut(),
) -> Result<Breakdown, E> {
    let (mut all, mut windows, mut wall_ms) = (BrickTimes::default(), Vec::new(), 0.0);
    for start in (0..n_gen).step_by(WINDOW_TOKENS) {
        let tokens = WINDOW_TOKENS.min(n_gen - start);
        let mut times = BrickTimes::default();
        let clock = Instant::now();
        for _ in 0..tokens {
            step(&mut times)?;
        }
        let ms = clock.elapsed().as_secs_f64() * 1e3;
        windows.push(Window { tokens, wall_ms: ms, us_per_token: times.us_per_token(tokens) });
        all.merge(&times);
        wall_ms += ms;
        after_window();
    }
    let mut decode = all.breakdown(n_gen, wall_ms);
    decode.windows = windows;
    Ok(decode)
}

/// Profiles decode: prefills `prompt`, decodes one untimed warm-up token,
/// then `n_gen` greedy tokens with every brick timed, in windows of
/// [`WINDOW_TOKENS`] (each window a repeated sample); budgets at the decode's
/// mean context. `bandwidth`, where given, measures the read bandwidth
/// (GB/s) right after each window ([`BrickProfile::window_bandwidth_gb_s`]).
pub fn profile(
    model: &Model,
    size: &str,
    prompt: &[u32],
    n_gen: usize,
    host: &HostProbe,
    mut bandwidth: Option<&mut dyn FnMut() -> f64>,
) -> Result<BrickProfile, ModelError> {
    let mut cache = model.new_cache(prompt.len() + n_gen + 1);
    let mut logits = Vec::new();
    model.forward_into(prompt, &mut cache, Logits::Last, None, &mut logits)?;
    let mut next = crate::sample::argmax(&logits);
    let mut step = |times: Option<&mut BrickTimes>| -> Result<(), ModelError> {
        model.forward_into(&[next], &mut cache, Logits::Last, times, &mut logits)?;
        next = crate::sample::argmax(&logits);
        Ok(())
    };
    step(None)?;
    let mut window_bandwidth_gb_s = Vec::new();
    let decode = sample_windows(
        n_gen,
        |times| step(Some(times)),
        || window_bandwidth_gb_s.extend(bandwidth.as_mut().map(|measure| measure())),
    )?;
    let mean_ctx = prompt.len() + n_gen / 2;
    Ok(BrickProfile {
        model: size.into(),
        threads: model.threads(),
        host: host.clone(),
        allowance: DEFAULT_ALLOWANCE,
        decode,
        bricks: budgets(&costs_per_brick(model, mean_ctx), host, DEFAULT_ALLOWANCE),
        window_bandwidth_gb_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tied_model;
    use crate::model::BrickTimes;

    #[test]
    fn budgets_take_the_longer_of_memory_and_compute_times_the_allowance() {
        let mut costs = [BrickCost { bytes: 0, ops: 0, compute: Compute::F32 }; Brick::ALL.len()];
        costs[Brick::Ffn as usize] = BrickCost { bytes: 30_000_000, ops: 60_000_000, compute: Compute::Int8 };
        costs[Brick::Attention as usize] = BrickCost { bytes: 1_000, ops: 9_000_000, compute: Compute::F32 };
        let host = HostProbe::stated(30.0, 100.0, 10.0);
        let b = budgets(&costs, &host, 1.5);
        let ffn = &b[Brick::Ffn as usize];
        assert_eq!((ffn.name.as_str(), ffn.bytes_per_token, ffn.compute), ("ffn", 30_000_000, Compute::Int8));
        // 30 MB at 30 GB/s = 1000 µs; 60 Mop at 100 Gop/s = 600 µs: memory-bound.
        assert!((ffn.memory_us - 1000.0).abs() < 1e-9 && (ffn.compute_us - 600.0).abs() < 1e-9);
        assert!((ffn.roofline_us - 1000.0).abs() < 1e-9 && (ffn.budget_us - 1500.0).abs() < 1e-9);
        // 9 Mflop at 10 Gflop/s = 900 µs: compute-bound.
        let att = &b[Brick::Attention as usize];
        assert!((att.roofline_us - 900.0).abs() < 1e-9 && (att.budget_us - 1350.0).abs() < 1e-9);
        assert_eq!(b[Brick::Rope as usize].budget_us, 0.0);
    }

    #[test]
    fn every_weight_and_cache_byte_is_charged_to_a_brick() {
        let m = tied_model();
        let costs = costs_per_brick(&m, 7);
        let weights_and_kv = crate::bench::roofline::bytes_per_token(&m, 7);
        let extra: u64 = [Brick::AttnNorm, Brick::FfnNorm, Brick::OutputNorm, Brick::Rope]
            .iter()
            .map(|&b| costs[b as usize].bytes)
            .sum::<u64>()
            + m.layers.iter().map(|l| 4 * (l.bq.len() + l.bk.len() + l.bv.len()) as u64).sum::<u64>();
        assert_eq!(costs.iter().map(|c| c.bytes).sum::<u64>(), weights_and_kv + extra);
        assert!(costs.iter().all(|c| c.bytes > 0 && c.ops > 0), "{costs:?}");
        let lm = &costs[Brick::LmHead as usize];
        assert_eq!(lm.ops, 2 * (m.lm_head.rows * m.lm_head.cols) as u64);
    }

    #[test]
    fn a_profile_times_every_brick() {
        let m = tied_model();
        let p = profile(&m, "tiny", &[1, 2, 3], 20, &HostProbe::stated(10.0, 50.0, 20.0), None).unwrap();
        assert_eq!((p.decode.tokens, p.bricks.len()), (20, Brick::ALL.len()));
        assert!(p.decode.bricks.iter().all(|b| b.us_per_token > 0.0));
        assert!(p.bottleneck().is_some());
        let sizes: Vec<usize> = p.decode.windows.iter().map(|w| w.tokens).collect();
        assert_eq!(sizes, [8, 8, 4]);
        assert!(p.decode.windows.iter().all(|w| w.us_per_token.len() == Brick::ALL.len() && w.coverage() > 0.0));
        assert_eq!(p.decode.trace().violations(), Vec::<String>::new());
    }

    #[test]
    fn the_bottleneck_is_the_largest_excess_over_budget_not_the_largest_ratio() {
        let mut times = BrickTimes::default();
        times.ns[Brick::Embed as usize] = 30; // 0.03 µs against a 0.001 µs budget: 30×, excess 0.029 µs
        times.ns[Brick::Ffn as usize] = 4_000; // 4 µs against a 2 µs budget: 2×, excess 2 µs
        times.ns[Brick::LmHead as usize] = 4_500; // 4.5 µs against a 3 µs budget: 1.5×, excess 1.5 µs
        times.ns[Brick::Rope as usize] = 50_000; // no budget: never the bottleneck
        let mut costs = [BrickCost { bytes: 0, ops: 0, compute: Compute::F32 }; Brick::ALL.len()];
        costs[Brick::Embed as usize].bytes = 1;
        costs[Brick::Ffn as usize].bytes = 2_000;
        costs[Brick::LmHead as usize].bytes = 3_000;
        let host = HostProbe::stated(1.0, 1.0, 1.0);
        let p = BrickProfile {
            model: "x".into(),
            threads: 1,
            host: host.clone(),
            allowance: 1.0,
            decode: times.breakdown(1, 1.0),
            bricks: budgets(&costs, &host, 1.0),
            window_bandwidth_gb_s: Vec::new(),
        };
        let (name, ratio) = p.bottleneck().unwrap();
        assert_eq!(name, "ffn");
        assert!((ratio - 2.0).abs() < 1e-9);
        assert_eq!(largest_excess([(1.0, 0.0), (5.0, 4.0), (3.0, 1.0)]), Some(2));
        assert_eq!(largest_excess([(1.0, 0.0)]), None);
    }
}
