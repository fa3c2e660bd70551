//! Choosing the next token from logits: greedy, or temperature with top-k,
//! top-p and min-p filtering, drawn from a seeded generator.

use serde::Serialize;

use crate::rng::SplitMix64;

/// How to pick tokens. `temperature == 0` means greedy (argmax); see
/// [`SamplerConfig::validate`] for each parameter's range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SamplerConfig {
    /// Softmax temperature, finite and at least 0; 0 selects greedy decoding.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0, or more than the vocabulary: no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`, in (0, 1] (1: no limit).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one, in [0, 1] (0: no limit).
    pub min_p: f32,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 0.0, top_k: 40, top_p: 0.95, min_p: 0.05, seed: 42 }
    }
}

/// A sampling parameter outside its range: the command-line flag that sets
/// it, its value, and the range it must be in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{flag} {value}: {want}")]
pub struct InvalidSampler {
    /// The flag (`--temp`, `--top-p`, `--min-p`).
    pub flag: &'static str,
    /// The value given.
    pub value: f32,
    /// The range, in words.
    pub want: &'static str,
}

impl SamplerConfig {
    /// Checks every parameter's range: a NaN temperature once printed the
    /// first token over and over, a negative one silently decoded greedily,
    /// and NaN top-p and min-p were taken as given. Every `top_k` is valid.
    pub fn validate(&self) -> Result<(), InvalidSampler> {
        let checks = [
            (
                "--temp",
                self.temperature,
                self.temperature.is_finite() && self.temperature >= 0.0,
                "the temperature must be a finite number, 0 (greedy) or above",
            ),
            (
                "--top-p",
                self.top_p,
                self.top_p > 0.0 && self.top_p <= 1.0,
                "top-p must be above 0 and at most 1 (1: off)",
            ),
            ("--min-p", self.min_p, (0.0..=1.0).contains(&self.min_p), "min-p must be from 0 (off) to 1"),
        ];
        match checks.into_iter().find(|&(_, _, ok, _)| !ok) {
            Some((flag, value, _, want)) => Err(InvalidSampler { flag, value, want }),
            None => Ok(()),
        }
    }
}

/// A sampler with its own random state.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: SplitMix64,
    candidates: Vec<(u32, f32)>,
}

/// Index of the largest logit (the first one on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    /// A sampler seeded from `config.seed`.
    pub fn new(config: SamplerConfig) -> Sampler {
        Sampler { config, rng: SplitMix64(config.seed), candidates: Vec::new() }
    }

    /// Picks the next token.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let c = self.config;
        if c.temperature <= 0.0 {
            return argmax(logits);
        }
        let cand = &mut self.candidates;
        cand.clear();
        cand.extend(
            logits.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(|(i, &v)| (i as u32, v / c.temperature)),
        );
        // Most likely first, ties by id: a total order, so taking the top k
        // first and sorting only them gives what sorting everything would.
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if c.top_k > 0 && c.top_k < cand.len() {
            cand.select_nth_unstable_by(c.top_k - 1, order);
            cand.truncate(c.top_k);
        }
        cand.sort_unstable_by(order);
        let Some(&(first, max)) = cand.first() else {
            return argmax(logits);
        };
        let mut probs: Vec<f64> = cand.iter().map(|&(_, v)| f64::from(v - max).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        let mut keep = probs.len();
        if c.top_p < 1.0 {
            let mut acc = 0.0;
            let reached = probs.iter().position(|p| {
                acc += p;
                acc >= f64::from(c.top_p)
            });
            keep = reached.map_or(probs.len(), |i| i + 1);
        }
        if c.min_p > 0.0 {
            let floor = probs[0] * f64::from(c.min_p);
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        let total: f64 = probs[..keep].iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (i, p) in probs[..keep].iter().enumerate() {
            r -= p;
            if r < 0.0 {
                return cand[i].0;
            }
        }
        cand.get(keep - 1).map_or(first, |c| c.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_out_of_range_are_refused_naming_the_flag() {
        let ok = SamplerConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let edges = [
            SamplerConfig { temperature: 2.5, top_k: usize::MAX, top_p: 1.0, min_p: 1.0, ..ok },
            SamplerConfig { top_k: 0, top_p: f32::MIN_POSITIVE, min_p: 0.0, ..ok },
        ];
        for c in edges {
            assert_eq!(c.validate(), Ok(()), "{c:?}");
        }
        let refused = [
            (
                SamplerConfig { temperature: f32::NAN, ..ok },
                "--temp NaN: the temperature must be a finite number, 0 (greedy) or above",
            ),
            (
                SamplerConfig { temperature: -1.0, ..ok },
                "--temp -1: the temperature must be a finite number, 0 (greedy) or above",
            ),
            (
                SamplerConfig { temperature: f32::INFINITY, ..ok },
                "--temp inf: the temperature must be a finite number, 0 (greedy) or above",
            ),
            (SamplerConfig { top_p: f32::NAN, ..ok }, "--top-p NaN: top-p must be above 0 and at most 1 (1: off)"),
            (SamplerConfig { top_p: 0.0, ..ok }, "--top-p 0: top-p must be above 0 and at most 1 (1: off)"),
            (SamplerConfig { top_p: 1.5, ..ok }, "--top-p 1.5: top-p must be above 0 and at most 1 (1: off)"),
            (SamplerConfig { min_p: f32::NAN, ..ok }, "--min-p NaN: min-p must be from 0 (off) to 1"),
            (SamplerConfig { min_p: -0.1, ..ok }, "--min-p -0.1: min-p must be from 0 (off) to 1"),
        ];
        for (c, want) in refused {
            assert_eq!(c.validate().unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplerConfig::default());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 1);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let cfg = SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 9 };
        let run = |seed| {
            let mut s = Sampler::new(SamplerConfig { seed, ..cfg });
            (0..64).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn filters_restrict_the_support() {
        let logits = [5.0f32, 4.0, 0.0, -3.0, -9.0];
        let draw = |cfg: SamplerConfig| {
            let mut s = Sampler::new(cfg);
            (0..2000).map(|_| s.sample(&logits)).collect::<std::collections::HashSet<_>>()
        };
        let base = SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 1 };
        assert_eq!(draw(SamplerConfig { top_k: 2, ..base }), [0, 1].into());
        assert_eq!(draw(SamplerConfig { top_p: 0.5, ..base }), [0].into());
        assert_eq!(draw(SamplerConfig { min_p: 0.3, ..base }), [0, 1].into());
        assert!(draw(base).len() >= 3);
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let logits = [0.0f32, (3.0f32).ln()]; // probabilities 1/4 and 3/4
        let mut s = Sampler::new(SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 3 });
        let ones = (0..20_000).filter(|_| s.sample(&logits) == 1).count();
        assert!((ones as f64 / 20_000.0 - 0.75).abs() < 0.02, "{ones}");
    }
}
