//! Brick scores (claims catalog M011–M019): how well each brick uses the host,
//! from its measured time per token against its roofline ([`super::bricks`]).
//!
//! A brick's score is 30% compute efficiency (achieved ÷ peak operations per
//! second) + 25% bandwidth efficiency (achieved ÷ measured read bandwidth) +
//! 25% latency ratio (budget ÷ actual, capped at 1) + 20% stability (1 − CV of
//! its per-token times, floored at 0), on a 0–100 scale; grades run A ≥ 90,
//! B ≥ 80, C ≥ 70, D ≥ 60, F below. The model's score is the mean of its
//! bricks' scores; the bottleneck is the brick with the largest excess
//! (actual − budget, µs per token), its gap factor (actual ÷ budget) beside it.

use serde::{Deserialize, Serialize};

use super::bricks::{largest_excess, BrickBudget, Compute};
use super::roofline::HostProbe;
use crate::stats;

/// The weights of the four parts of a brick score; they add up to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// Compute efficiency.
    pub compute: f64,
    /// Bandwidth efficiency.
    pub bandwidth: f64,
    /// Latency ratio.
    pub latency: f64,
    /// Stability.
    pub stability: f64,
}

/// The catalog's weights: 30 / 25 / 25 / 20.
pub const WEIGHTS: Weights = Weights { compute: 0.30, bandwidth: 0.25, latency: 0.25, stability: 0.20 };

/// `x` clamped to [0, 1]; NaN counts as 0.
fn unit(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Achieved ÷ peak rate, in [0, 1]: `work` units done in `actual_us` against
/// a peak of `peak_per_us` units per µs.
pub fn efficiency(work: f64, actual_us: f64, peak_per_us: f64) -> f64 {
    if actual_us <= 0.0 || peak_per_us <= 0.0 {
        return 0.0;
    }
    unit(work / actual_us / peak_per_us)
}

/// `min(budget ÷ actual, 1)`; a brick that took no time met its budget.
pub fn latency_ratio(budget_us: f64, actual_us: f64) -> f64 {
    if actual_us <= 0.0 {
        return 1.0;
    }
    unit(budget_us / actual_us)
}

/// `1 − cv`, floored at 0 (and at most 1).
pub fn stability(cv: f64) -> f64 {
    unit(1.0 - cv)
}

/// The weighted sum of the four parts, 0–100.
pub fn combine(w: &Weights, compute: f64, bandwidth: f64, latency: f64, stability: f64) -> f64 {
    100.0 * (w.compute * compute + w.bandwidth * bandwidth + w.latency * latency + w.stability * stability)
}

/// The letter grade of a score out of 100: A ≥ 90, B ≥ 80, C ≥ 70, D ≥ 60, else F.
pub fn grade(score: f64) -> &'static str {
    match score {
        s if s >= 90.0 => "A",
        s if s >= 80.0 => "B",
        s if s >= 70.0 => "C",
        s if s >= 60.0 => "D",
        _ => "F",
    }
}

/// The weights of the kernel quality score (the seeds' "CUDA-TDG"): 30 / 25 / 20 / 15 / 10 points.
pub const KERNEL_QUALITY_POINTS: [f64; 5] = [30.0, 25.0, 20.0, 15.0, 10.0];

/// Kernel quality, 0–100, from five fractions in [0, 1]: efficiency, memory
/// access, resource use, error handling and portability, weighted by
/// [`KERNEL_QUALITY_POINTS`].
pub fn kernel_quality(parts: [f64; 5]) -> f64 {
    parts.iter().zip(KERNEL_QUALITY_POINTS).map(|(&p, w)| w * unit(p)).sum()
}

/// One brick's score, with everything it was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrickScore {
    /// Brick name.
    pub name: String,
    /// Mean measured time per token, µs.
    pub actual_us: f64,
    /// Coefficient of variation of the per-token times.
    pub cv: f64,
    /// Its budget, µs.
    pub budget_us: f64,
    /// Its roofline, µs.
    pub roofline_us: f64,
    /// Achieved operations, 10⁹ per second (not clamped).
    pub achieved_gops: f64,
    /// Achieved read bandwidth, GB/s (not clamped).
    pub achieved_gb_s: f64,
    /// Achieved ÷ peak operations, in [0, 1].
    pub compute_efficiency: f64,
    /// Achieved ÷ measured read bandwidth, in [0, 1].
    pub bandwidth_efficiency: f64,
    /// `min(budget ÷ actual, 1)`.
    pub latency_ratio: f64,
    /// `max(1 − cv, 0)`.
    pub stability: f64,
    /// The weighted score, 0–100.
    pub score: f64,
    /// Its letter grade.
    pub grade: String,
    /// `actual ÷ budget`: above 1 the brick misses its budget.
    pub gap_factor: f64,
}

/// Scores one brick from its per-token times (µs) against its budget on `host`.
pub fn score_brick(budget: &BrickBudget, host: &HostProbe, samples_us: &[f64]) -> BrickScore {
    let (actual_us, cv) = match samples_us {
        [] => (0.0, 0.0),
        [one] => (*one, 0.0),
        many => stats::Summary::of(many).map_or((f64::NAN, f64::NAN), |s| (s.mean, s.cv)),
    };
    let peak_gops = match budget.compute {
        Compute::Int8 => host.int8_gops,
        Compute::F32 => host.f32_gflops,
    };
    let (ops, bytes) = (budget.ops_per_token as f64, budget.bytes_per_token as f64);
    let compute_efficiency = efficiency(ops, actual_us, peak_gops * 1e3);
    let bandwidth_efficiency = efficiency(bytes, actual_us, host.read_bandwidth_gb_s * 1e3);
    let latency = latency_ratio(budget.budget_us, actual_us);
    let stable = stability(cv);
    let score = combine(&WEIGHTS, compute_efficiency, bandwidth_efficiency, latency, stable);
    let per_s = |x: f64| if actual_us > 0.0 { x / actual_us / 1e3 } else { 0.0 };
    BrickScore {
        name: budget.name.clone(),
        actual_us,
        cv,
        budget_us: budget.budget_us,
        roofline_us: budget.roofline_us,
        achieved_gops: per_s(ops),
        achieved_gb_s: per_s(bytes),
        compute_efficiency,
        bandwidth_efficiency,
        latency_ratio: latency,
        stability: stable,
        score,
        grade: grade(score).into(),
        gap_factor: if budget.budget_us > 0.0 { actual_us / budget.budget_us } else { f64::INFINITY },
    }
}

/// The mean of the brick scores (0 when there are none).
pub fn model_score(scores: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = scores.len();
    if n == 0 {
        return 0.0;
    }
    scores.sum::<f64>() / n as f64
}

/// The bottleneck: the brick whose time exceeds its budget by the most µs
/// per token ([`largest_excess`]); its gap factor is the ratio beside it.
pub fn bottleneck(scores: &[BrickScore]) -> Option<&BrickScore> {
    largest_excess(scores.iter().map(|s| (s.actual_us, s.budget_us))).map(|i| &scores[i])
}

/// The brick that takes the most time (what a sampling profiler ranks first).
pub fn hotspot(scores: &[BrickScore]) -> Option<&BrickScore> {
    scores.iter().max_by(|a, b| a.actual_us.total_cmp(&b.actual_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: u64, ops: u64, budget_us: f64) -> BrickBudget {
        BrickBudget {
            name: "ffn".into(),
            bytes_per_token: bytes,
            ops_per_token: ops,
            compute: Compute::Int8,
            memory_us: budget_us / 1.5,
            compute_us: 0.0,
            roofline_us: budget_us / 1.5,
            budget_us,
        }
    }

    #[test]
    fn a_score_follows_the_formula_on_hand_computed_numbers() {
        // 20 MB and 40 Gop... per token in 1000 µs on a 40 GB/s, 100 GOPS host:
        // bandwidth 20 GB/s → 0.5; compute 40 GOPS → 0.4; budget 800 µs → 0.8;
        // times 900, 1000, 1100 → mean 1000, sd 100, CV 0.1 → 0.9.
        let host = HostProbe::stated(40.0, 100.0, 50.0);
        let s = score_brick(&budget(20_000_000, 40_000_000, 800.0), &host, &[900.0, 1000.0, 1100.0]);
        assert!((s.actual_us - 1000.0).abs() < 1e-9 && (s.cv - 0.1).abs() < 1e-12, "{s:?}");
        assert!((s.bandwidth_efficiency - 0.5).abs() < 1e-12 && (s.compute_efficiency - 0.4).abs() < 1e-12);
        assert!((s.latency_ratio - 0.8).abs() < 1e-12 && (s.stability - 0.9).abs() < 1e-12);
        // 100 × (0.3·0.4 + 0.25·0.5 + 0.25·0.8 + 0.2·0.9) = 62.5
        assert!((s.score - 62.5).abs() < 1e-9, "{}", s.score);
        assert_eq!(s.grade, "D");
        assert!((s.gap_factor - 1.25).abs() < 1e-12);
        assert!((s.achieved_gb_s - 20.0).abs() < 1e-9 && (s.achieved_gops - 40.0).abs() < 1e-9);
    }

    #[test]
    fn the_latency_ratio_is_capped_and_stability_floored() {
        assert_eq!(latency_ratio(500.0, 100.0), 1.0);
        assert_eq!(latency_ratio(50.0, 100.0), 0.5);
        assert_eq!(latency_ratio(50.0, 0.0), 1.0);
        assert_eq!(stability(0.04), 0.96);
        assert_eq!(stability(1.7), 0.0);
        assert_eq!(stability(f64::NAN), 0.0);
    }

    #[test]
    fn grades_follow_the_scale() {
        for (s, g) in [(100.0, "A"), (90.0, "A"), (89.99, "B"), (80.0, "B"), (79.9, "C"), (70.0, "C"), (60.0, "D")] {
            assert_eq!(grade(s), g, "{s}");
        }
        assert_eq!((grade(59.99), grade(0.0), grade(f64::NAN)), ("F", "F", "F"));
    }

    #[test]
    fn kernel_quality_weighs_thirty_twenty_five_twenty_fifteen_ten() {
        assert_eq!(kernel_quality([1.0; 5]), 100.0);
        assert_eq!(kernel_quality([1.0, 0.0, 0.0, 0.0, 0.0]), 30.0);
        assert_eq!(kernel_quality([0.0, 0.0, 0.0, 0.0, 1.0]), 10.0);
        assert!((kernel_quality([0.5, 1.0, 0.5, 1.0, 0.0]) - 65.0).abs() < 1e-12);
        assert_eq!(kernel_quality([2.0, -1.0, 0.0, 0.0, 0.0]), 30.0, "parts are clamped to [0, 1]");
    }

    #[test]
    fn the_model_score_is_the_mean_and_the_bottleneck_the_largest_gap() {
        let host = HostProbe::stated(40.0, 100.0, 50.0);
        let mut a = score_brick(&budget(1_000, 1_000, 10.0), &host, &[30.0]);
        a.name = "a".into();
        let mut b = score_brick(&budget(1_000, 1_000, 10.0), &host, &[5.0]);
        b.name = "b".into();
        let scores = [a.clone(), b.clone()];
        assert!((model_score(scores.iter().map(|s| s.score)) - (a.score + b.score) / 2.0).abs() < 1e-12);
        assert_eq!((bottleneck(&scores).unwrap().name.as_str(), hotspot(&scores).unwrap().name.as_str()), ("a", "a"));
        // c is 20× over a 0.1 µs budget, but loses 1.9 µs per token; a loses 20.
        let mut c = score_brick(&budget(1_000, 1_000, 0.1), &host, &[2.0]);
        c.name = "c".into();
        assert!(c.gap_factor > a.gap_factor);
        assert_eq!(bottleneck(&[c, a.clone()]).unwrap().name, "a");
        assert_eq!((model_score(std::iter::empty()), bottleneck(&[]).is_none()), (0.0, true));
    }

    #[test]
    fn property_every_part_stays_in_the_unit_interval() {
        use crate::rng::SplitMix64;
        let mut rng = SplitMix64(99);
        let wild = SplitMix64::wild_f64;
        for _ in 0..20_000 {
            let (work, actual, peak, budget, cv) =
                (wild(&mut rng), wild(&mut rng), wild(&mut rng), wild(&mut rng), wild(&mut rng));
            for x in [efficiency(work, actual, peak), latency_ratio(budget, actual), stability(cv)] {
                assert!((0.0..=1.0).contains(&x), "{x} from {work} {actual} {peak} {budget} {cv}");
            }
            let s =
                combine(&WEIGHTS, efficiency(work, actual, peak), 0.5, latency_ratio(budget, actual), stability(cv));
            assert!((0.0..=100.0).contains(&s), "{s}");
        }
    }
}
