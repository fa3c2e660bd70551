//! Bricks: the named stages of the forward pass, and the stopwatch that times
//! them. Every instruction of [`Model::forward_into`](super::Model::forward_into)
//! belongs to exactly one brick, so the bricks' times add up to the pass's
//! time; with no [`BrickTimes`] to fill, the stopwatch reads no clock at all.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A named stage of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Brick {
    /// Token embedding lookup (and the pass's scratch set-up).
    Embed,
    /// RMSNorm before attention.
    AttnNorm,
    /// Q, K and V projections with their biases.
    Qkv,
    /// Rotary position embedding of Q and K (angles included).
    Rope,
    /// KV cache write and causal attention over the cache.
    Attention,
    /// Attention output projection and its residual.
    OProj,
    /// RMSNorm before the FFN.
    FfnNorm,
    /// Gate and up projections, SwiGLU, down projection and its residual.
    Ffn,
    /// Final RMSNorm.
    OutputNorm,
    /// LM head: the logits.
    LmHead,
}

impl Brick {
    /// Every brick, in forward-pass order.
    pub const ALL: [Brick; 10] = [
        Brick::Embed,
        Brick::AttnNorm,
        Brick::Qkv,
        Brick::Rope,
        Brick::Attention,
        Brick::OProj,
        Brick::FfnNorm,
        Brick::Ffn,
        Brick::OutputNorm,
        Brick::LmHead,
    ];

    /// The brick's name as reports write it.
    pub fn name(self) -> &'static str {
        match self {
            Brick::Embed => "embed",
            Brick::AttnNorm => "attn_norm",
            Brick::Qkv => "qkv",
            Brick::Rope => "rope",
            Brick::Attention => "attention",
            Brick::OProj => "o_proj",
            Brick::FfnNorm => "ffn_norm",
            Brick::Ffn => "ffn",
            Brick::OutputNorm => "output_norm",
            Brick::LmHead => "lm_head",
        }
    }

    /// Whether the brick runs once per layer (rather than once per pass).
    pub fn per_layer(self) -> bool {
        !matches!(self, Brick::Embed | Brick::OutputNorm | Brick::LmHead)
    }
}

/// Time spent in each brick over some forward passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrickTimes {
    /// Nanoseconds per brick, indexed like [`Brick::ALL`].
    pub ns: [u64; Brick::ALL.len()],
    /// Forward passes timed.
    pub passes: u64,
}

impl BrickTimes {
    /// Nanoseconds spent in `brick`.
    pub fn of(&self, brick: Brick) -> u64 {
        self.ns[brick as usize]
    }

    /// Nanoseconds spent in all bricks.
    pub fn total(&self) -> u64 {
        self.ns.iter().sum()
    }
}

/// One brick's share of some forward passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrickRow {
    /// Brick name.
    pub name: String,
    /// Mean time per token, µs.
    pub us_per_token: f64,
    /// Fraction of the bricks' total time.
    pub share: f64,
}

/// Where the time of some forward passes went, brick by brick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Tokens the passes processed.
    pub tokens: usize,
    /// Wall time measured around the passes (sampling included), ms.
    pub wall_ms: f64,
    /// Time inside bricks, ms.
    pub bricks_ms: f64,
    /// `bricks_ms / wall_ms`: how much of the measured time the bricks account for.
    pub coverage: f64,
    /// Every brick, in pass order.
    pub bricks: Vec<BrickRow>,
}

impl BrickTimes {
    /// The breakdown of these times over `tokens` tokens that took `wall_ms` in all.
    pub fn breakdown(&self, tokens: usize, wall_ms: f64) -> Breakdown {
        let total = self.total().max(1) as f64;
        let bricks_ms = self.total() as f64 / 1e6;
        Breakdown {
            tokens,
            wall_ms,
            bricks_ms,
            coverage: if wall_ms > 0.0 { bricks_ms / wall_ms } else { 0.0 },
            bricks: Brick::ALL
                .iter()
                .map(|&b| BrickRow {
                    name: b.name().into(),
                    us_per_token: self.of(b) as f64 / 1e3 / tokens.max(1) as f64,
                    share: self.of(b) as f64 / total,
                })
                .collect(),
        }
    }
}

/// Charges the time since the previous lap to a brick. Without times to fill
/// it does nothing, not even read the clock.
pub(crate) struct Stopwatch<'a> {
    times: Option<&'a mut BrickTimes>,
    last: Instant,
}

impl<'a> Stopwatch<'a> {
    /// Starts timing a forward pass into `times`, when given.
    pub(crate) fn start(times: Option<&'a mut BrickTimes>) -> Stopwatch<'a> {
        Stopwatch { times, last: Instant::now() }
    }

    /// Charges the time since the last lap (or the start) to `brick`.
    #[inline]
    pub(crate) fn lap(&mut self, brick: Brick) {
        if let Some(times) = self.times.as_deref_mut() {
            let now = Instant::now();
            times.ns[brick as usize] += (now - self.last).as_nanos() as u64;
            self.last = now;
        }
    }

    /// Ends the pass: counts it.
    pub(crate) fn finish(self) {
        if let Some(times) = self.times {
            times.passes += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_in_pass_order() {
        let names: Vec<&str> = Brick::ALL.iter().map(|b| b.name()).collect();
        assert_eq!(
            names,
            ["embed", "attn_norm", "qkv", "rope", "attention", "o_proj", "ffn_norm", "ffn", "output_norm", "lm_head"]
        );
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for (i, b) in Brick::ALL.iter().enumerate() {
            assert_eq!(*b as usize, i);
        }
    }

    #[test]
    fn laps_charge_the_elapsed_time_to_the_named_brick() {
        let mut times = BrickTimes::default();
        let mut sw = Stopwatch::start(Some(&mut times));
        std::thread::sleep(std::time::Duration::from_millis(3));
        sw.lap(Brick::Ffn);
        sw.lap(Brick::Rope);
        sw.finish();
        assert!(times.of(Brick::Ffn) >= 3_000_000, "{times:?}");
        assert!(times.of(Brick::Rope) < times.of(Brick::Ffn));
        assert_eq!((times.passes, times.total()), (1, times.of(Brick::Ffn) + times.of(Brick::Rope)));
    }

    #[test]
    fn a_breakdown_divides_by_tokens_and_measures_coverage() {
        let mut times = BrickTimes::default();
        times.ns[Brick::Ffn as usize] = 3_000_000;
        times.ns[Brick::LmHead as usize] = 1_000_000;
        let b = times.breakdown(2, 5.0);
        assert_eq!((b.tokens, b.bricks.len()), (2, Brick::ALL.len()));
        assert!((b.bricks_ms - 4.0).abs() < 1e-12 && (b.coverage - 0.8).abs() < 1e-12);
        let ffn = &b.bricks[Brick::Ffn as usize];
        assert_eq!((ffn.name.as_str(), ffn.us_per_token, ffn.share), ("ffn", 1500.0, 0.75));
        assert_eq!(BrickTimes::default().breakdown(0, 0.0).coverage, 0.0);
    }

    #[test]
    fn a_stopwatch_without_times_records_nothing() {
        let mut sw = Stopwatch::start(None);
        sw.lap(Brick::Qkv);
        sw.finish();
    }
}
