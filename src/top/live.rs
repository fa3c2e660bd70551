//! The live side of `falsify top`: a decoder that times every brick of every
//! token and publishes one [`TokenSample`] per token, and the [`Recorder`]
//! that turns samples into brick scores. The engine thread only publishes;
//! whoever shows the numbers reads them from a channel, so displaying never
//! holds up decoding.

use std::collections::VecDeque;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::bench::bricks::BrickBudget;
use crate::bench::roofline::HostProbe;
use crate::bench::score::{self, BrickScore};
use crate::model::{Brick, BrickTimes, KvCache, Logits, Model, ModelError, StageTrace};
use crate::stats;

/// One decoded token's measured time, in total and brick by brick: the
/// per-token metrics live views draw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenSample {
    /// Tokens decoded before this one.
    pub index: u64,
    /// Position of the token in its sequence.
    pub position: usize,
    /// Wall time of the step (forward pass and greedy choice), µs.
    pub wall_us: f64,
    /// Time per brick (its spans), µs, indexed like [`Brick::ALL`].
    pub bricks_us: [f64; Brick::ALL.len()],
    /// The stages the token's forward pass entered, and the bricks they ran inside.
    #[serde(default)]
    pub trace: StageTrace,
}

impl TokenSample {
    /// Tokens per second this token's wall time amounts to.
    pub fn tok_per_s(&self) -> f64 {
        if self.wall_us > 0.0 {
            1e6 / self.wall_us
        } else {
            0.0
        }
    }
}

/// A time budget for one token, held as latency and convertible to throughput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenBudget {
    /// Most µs a token may take.
    pub us_per_token: f64,
}

impl TokenBudget {
    /// The budget that a throughput of `tok_per_s` tokens per second amounts to.
    pub fn from_tok_per_s(tok_per_s: f64) -> TokenBudget {
        TokenBudget { us_per_token: 1e6 / tok_per_s }
    }

    /// The throughput the budget amounts to, tokens per second.
    pub fn tok_per_s(&self) -> f64 {
        1e6 / self.us_per_token
    }

    /// Whether a token's wall time met the budget.
    pub fn met_by(&self, s: &TokenSample) -> bool {
        s.wall_us <= self.us_per_token
    }
}

use crate::model::contract::micros as us;
pub use crate::model::BrickError;

/// A count with an SI prefix: 1792 → "1.79 k", 3000000 → "3.00 M".
fn si(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.2} k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} M", n as f64 / 1e6),
        _ => format!("{:.2} G", n as f64 / 1e9),
    }
}

/// What bounds `b` and how to read a miss of its budget.
fn hint(b: &BrickBudget, actual_us: f64) -> String {
    let (bound, roof) = if b.memory_us >= b.compute_us {
        (format!("memory-bound: {} bytes per token", si(b.bytes_per_token)), b.memory_us)
    } else {
        (format!("compute-bound: {} ops per token", si(b.ops_per_token)), b.compute_us)
    };
    format!(
        "{bound}, roofline {} µs, so the brick runs at {:.1}% of its roofline speed; profile it with `perf record` on `falsify top --headless`",
        us(roof),
        100.0 * roof / actual_us.max(f64::MIN_POSITIVE)
    )
}

/// Strict ("jidoka") mode: the first brick of `sample` over its budget, as an error.
pub fn check_budgets(sample: &TokenSample, budgets: &[BrickBudget]) -> Result<(), BrickError> {
    for (&actual_us, b) in sample.bricks_us.iter().zip(budgets) {
        if actual_us > b.budget_us {
            return Err(BrickError::BudgetExceeded {
                brick: b.name.clone(),
                token: sample.index,
                budget_us: b.budget_us,
                actual_us,
                hint: hint(b, actual_us),
            });
        }
    }
    Ok(())
}

/// Pins the calling thread to the first core (best effort). The pool's workers
/// are pinned to cores 1, 2, …; the thread that drives decoding runs the pool's
/// part 0, so on core 0 it never shares a core with a worker.
pub fn pin_to_first_core() {
    if let Some(core) = core_affinity::get_core_ids().and_then(|c| c.first().copied()) {
        core_affinity::set_for_current(core);
    }
}

/// Greedy decoding over a fixed window of positions: after `window` tokens
/// the cache is cut back to the prompt, so every window does the same work
/// and the numbers stay comparable for as long as it runs.
pub struct Decoder<'m> {
    model: &'m Model,
    cache: KvCache,
    /// The last step's logits, a buffer reused by the next.
    logits: Vec<f32>,
    prompt_len: usize,
    window: usize,
    next: u32,
    decoded: u64,
}

impl<'m> Decoder<'m> {
    /// Prefills `prompt` (at least one token) and gets ready to decode
    /// `window` tokens per round; the prompt and the window must fit in the
    /// model's context length.
    pub fn new(model: &'m Model, prompt: &[u32], window: usize) -> Result<Decoder<'m>, ModelError> {
        let window = window.max(1);
        let (needed, context) = (prompt.len().saturating_add(window), model.config.context_length);
        if needed > context {
            let what = format!("a window of {window} tokens after a prompt of {}", prompt.len());
            return Err(ModelError::ContextLength { what, needed, context });
        }
        let mut cache = model.try_new_cache(needed)?;
        let logits = model.forward(prompt, &mut cache, Logits::Last)?;
        let next = crate::sample::argmax(&logits);
        Ok(Decoder { model, cache, logits, prompt_len: prompt.len(), window, next, decoded: 0 })
    }

    /// Decodes one token with every brick timed.
    pub fn step(&mut self) -> Result<TokenSample, ModelError> {
        if self.cache.len() >= self.prompt_len + self.window {
            self.cache.truncate(self.prompt_len);
        }
        let position = self.cache.len();
        let mut times = BrickTimes::default();
        let start = Instant::now();
        self.model.forward_into(&[self.next], &mut self.cache, Logits::Last, Some(&mut times), &mut self.logits)?;
        self.next = crate::sample::argmax(&self.logits);
        let wall_us = start.elapsed().as_secs_f64() * 1e6;
        let sample = TokenSample {
            index: self.decoded,
            position,
            wall_us,
            bricks_us: times.ns.map(|ns| ns as f64 / 1e3),
            trace: times.trace,
        };
        self.decoded += 1;
        Ok(sample)
    }
}

/// The samples seen so far (the newest `keep`), and what they add up to.
#[derive(Debug, Clone)]
pub struct Recorder {
    keep: usize,
    samples: VecDeque<TokenSample>,
    /// Every token recorded, including those no longer kept.
    pub total: u64,
}

impl Recorder {
    /// A recorder keeping the newest `keep` samples.
    pub fn new(keep: usize) -> Recorder {
        Recorder { keep: keep.max(1), samples: VecDeque::new(), total: 0 }
    }

    /// Adds a sample, dropping the oldest beyond `keep`.
    pub fn push(&mut self, s: TokenSample) {
        if self.samples.len() == self.keep {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
        self.total += 1;
    }

    /// The kept samples, oldest first.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = &TokenSample> {
        self.samples.iter()
    }

    /// One brick's kept per-token times, µs.
    pub fn brick_us(&self, brick: Brick) -> Vec<f64> {
        self.samples.iter().map(|s| s.bricks_us[brick as usize]).collect()
    }

    /// The kept per-token wall times, µs.
    pub fn wall_us(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.wall_us).collect()
    }

    /// Tokens per second over the kept samples (tokens ÷ their summed wall time).
    pub fn tok_per_s(&self) -> f64 {
        let us: f64 = self.samples.iter().map(|s| s.wall_us).sum();
        if us > 0.0 {
            self.samples.len() as f64 * 1e6 / us
        } else {
            0.0
        }
    }

    /// Tokens per second of each consecutive run of `window` kept samples.
    pub fn window_tok_per_s(&self, window: usize) -> Vec<f64> {
        let wall = self.wall_us();
        wall.chunks_exact(window.max(1)).map(|w| w.len() as f64 * 1e6 / w.iter().sum::<f64>()).collect()
    }

    /// The bricks' summed time over the summed wall time.
    pub fn coverage(&self) -> f64 {
        let wall: f64 = self.samples.iter().map(|s| s.wall_us).sum();
        let bricks: f64 = self.samples.iter().map(|s| s.bricks_us.iter().sum::<f64>()).sum();
        if wall > 0.0 {
            bricks / wall
        } else {
            0.0
        }
    }

    /// Every brick's score against `budgets` (in [`Brick::ALL`] order) on `host`.
    pub fn scores(&self, budgets: &[BrickBudget], host: &HostProbe) -> Vec<BrickScore> {
        Brick::ALL.iter().zip(budgets).map(|(&b, budget)| score::score_brick(budget, host, &self.brick_us(b))).collect()
    }

    /// p50, p99 and p999 of one brick's kept times, µs (None without samples).
    pub fn percentiles(&self, brick: Brick) -> Option<[f64; 3]> {
        let s = stats::Summary::of(&self.brick_us(brick)).ok()?;
        Some([s.median, s.p99, s.p999])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::bricks::Compute;
    use crate::model::tests::tied_model;

    fn sample(index: u64, wall_us: f64, ffn_us: f64) -> TokenSample {
        let mut bricks_us = [1.0; Brick::ALL.len()];
        bricks_us[Brick::Ffn as usize] = ffn_us;
        TokenSample { index, position: 3, wall_us, bricks_us, trace: StageTrace::default() }
    }

    fn budget(name: &str, budget_us: f64) -> BrickBudget {
        BrickBudget {
            name: name.into(),
            bytes_per_token: 3_000_000,
            ops_per_token: 6_000_000,
            compute: Compute::Int8,
            memory_us: budget_us / 1.5,
            compute_us: budget_us / 3.0,
            roofline_us: budget_us / 1.5,
            budget_us,
        }
    }

    #[test]
    fn every_decoded_token_carries_every_brick() {
        let m = tied_model();
        let mut d = Decoder::new(&m, &[1, 2, 3], 4).unwrap();
        let samples: Vec<TokenSample> = (0..10).map(|_| d.step().unwrap()).collect();
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(s.index, i as u64);
            assert!(s.bricks_us.iter().all(|&us| us > 0.0), "token {i}: {:?}", s.bricks_us);
            assert!(s.bricks_us.iter().sum::<f64>() <= s.wall_us);
            assert_eq!(s.trace.violations(), Vec::<String>::new(), "token {i}");
        }
        // The window of 4 wraps back to the prompt's end.
        let positions: Vec<usize> = samples.iter().map(|s| s.position).collect();
        assert_eq!(positions, [3, 4, 5, 6, 3, 4, 5, 6, 3, 4]);
    }

    /// `top --window 100000000` once asked for a cache of that many positions.
    #[test]
    fn a_window_beyond_the_context_is_an_error() {
        let m = crate::model::tests::model_with_context(8);
        let err = Decoder::new(&m, &[1, 2, 3], 6).err().unwrap().to_string();
        assert_eq!(
            err,
            "a window of 6 tokens after a prompt of 3 takes 9 positions, more than the model's context length of 8"
        );
        for window in [100_000_000, usize::MAX] {
            assert!(matches!(Decoder::new(&m, &[1], window), Err(ModelError::ContextLength { context: 8, .. })));
        }
        let mut d = Decoder::new(&m, &[1, 2, 3], 5).unwrap();
        assert!((0..12).all(|_| d.step().is_ok()), "a window that fits decodes on and on");
    }

    #[test]
    fn token_rates_and_budgets_agree_with_the_latency() {
        let s = sample(0, 250.0, 100.0);
        assert_eq!(s.tok_per_s(), 4000.0);
        let b = TokenBudget::from_tok_per_s(4000.0);
        assert_eq!((b.us_per_token, b.tok_per_s()), (250.0, 4000.0));
        assert!(b.met_by(&s) && !TokenBudget { us_per_token: 249.9 }.met_by(&s));
    }

    #[test]
    fn strict_mode_names_the_brick_the_budget_and_a_hint() {
        let budgets: Vec<BrickBudget> = Brick::ALL.iter().map(|b| budget(b.name(), 50.0)).collect();
        assert!(check_budgets(&sample(7, 300.0, 40.0), &budgets).is_ok());
        let e = check_budgets(&sample(7, 300.0, 120.0), &budgets).unwrap_err();
        let BrickError::BudgetExceeded { ref brick, token, budget_us, actual_us, ref hint } = e else { panic!("{e}") };
        assert_eq!((brick.as_str(), token, budget_us, actual_us), ("ffn", 7, 50.0, 120.0));
        assert!(hint.contains("memory-bound") && hint.contains("roofline"), "{hint}");
        let msg = e.to_string();
        for part in ["ffn", "expected ≤ 50.000 µs", "actual 120.0 µs", "hint:"] {
            assert!(msg.contains(part), "{msg} lacks {part}");
        }
    }

    #[test]
    fn the_recorder_keeps_the_newest_and_sums_them() {
        let mut r = Recorder::new(4);
        for i in 0..6 {
            r.push(sample(i, 100.0 + i as f64, 50.0));
        }
        assert_eq!((r.total, r.samples().len()), (6, 4));
        assert_eq!(r.samples().next().unwrap().index, 2);
        assert!((r.tok_per_s() - 4.0 * 1e6 / (102.0 + 103.0 + 104.0 + 105.0)).abs() < 1e-9);
        assert_eq!(r.window_tok_per_s(2).len(), 2);
        assert!((r.coverage() - 59.0 * 4.0 / 414.0).abs() < 1e-12);
        let [p50, p99, p999] = r.percentiles(Brick::Ffn).unwrap();
        assert_eq!((p50, p99, p999), (50.0, 50.0, 50.0));
    }
}
