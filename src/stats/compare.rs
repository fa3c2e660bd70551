//! Comparing two samples: bootstrap confidence intervals (median, ratio of
//! medians), Welch's t-test, the Mann-Whitney U test, Holm's correction for
//! many claims, and regression detection against a saved result.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use super::summary::{check_finite, median, Interval, StatsError};
use crate::rng::SplitMix64;

/// Bootstrap resamples used unless a caller asks otherwise.
pub const DEFAULT_RESAMPLES: usize = 10_000;

/// Percentile interval of a bootstrap distribution.
fn percentile_interval(mut stats: Vec<f64>, level: f64) -> Interval {
    stats.sort_by(f64::total_cmp);
    let a = (1.0 - level) / 2.0;
    Interval {
        lo: super::summary::quantile_sorted(&stats, a),
        hi: super::summary::quantile_sorted(&stats, 1.0 - a),
        level,
    }
}

fn resample(xs: &[f64], rng: &mut SplitMix64, buf: &mut Vec<f64>) {
    buf.clear();
    buf.extend((0..xs.len()).map(|_| xs[rng.below(xs.len())]));
}

/// Percentile-bootstrap CI of the median (seeded: the same inputs give the same interval).
pub fn bootstrap_median(xs: &[f64], level: f64, resamples: usize, seed: u64) -> Result<Interval, StatsError> {
    if xs.len() < 2 {
        return Err(StatsError::TooFew { what: "a bootstrap interval", needed: 2, got: xs.len() });
    }
    check_finite(xs)?;
    let mut rng = SplitMix64(seed);
    let mut buf = Vec::with_capacity(xs.len());
    let stats = (0..resamples)
        .map(|_| {
            resample(xs, &mut rng, &mut buf);
            median(&buf)
        })
        .collect();
    Ok(percentile_interval(stats, level))
}

/// The ratio median(a) / median(b), with a percentile-bootstrap CI that
/// resamples both samples independently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// median(a) / median(b).
    pub ratio: f64,
    /// Its confidence interval.
    pub ci: Interval,
}

/// Ratio of medians of `a` over `b` with a seeded bootstrap CI.
pub fn ratio_of_medians(a: &[f64], b: &[f64], level: f64, resamples: usize, seed: u64) -> Result<Ratio, StatsError> {
    for xs in [a, b] {
        if xs.len() < 2 {
            return Err(StatsError::TooFew { what: "a ratio of medians", needed: 2, got: xs.len() });
        }
        check_finite(xs)?;
    }
    let mut rng = SplitMix64(seed);
    let (mut ba, mut bb) = (Vec::with_capacity(a.len()), Vec::with_capacity(b.len()));
    let stats = (0..resamples)
        .map(|_| {
            resample(a, &mut rng, &mut ba);
            resample(b, &mut rng, &mut bb);
            median(&ba) / median(&bb)
        })
        .collect();
    Ok(Ratio { ratio: median(a) / median(b), ci: percentile_interval(stats, level) })
}

/// The outcome of a two-sample significance test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// Which test.
    pub test: String,
    /// Its statistic (t, or U).
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Welch's unequal-variance t-test, two-sided.
pub fn welch_t(a: &[f64], b: &[f64]) -> Result<TestResult, StatsError> {
    let (sa, sb) = (super::Summary::of(a)?, super::Summary::of(b)?);
    let (va, vb) = (sa.std_dev.powi(2) / sa.n as f64, sb.std_dev.powi(2) / sb.n as f64);
    let se = (va + vb).sqrt();
    if se == 0.0 {
        let p = if sa.mean == sb.mean { 1.0 } else { 0.0 };
        return Ok(TestResult { test: "welch-t".into(), statistic: f64::INFINITY, p_value: p });
    }
    let t = (sa.mean - sb.mean) / se;
    let df = (va + vb).powi(2) / (va.powi(2) / (sa.n - 1) as f64 + vb.powi(2) / (sb.n - 1) as f64);
    let dist = StudentsT::new(0.0, 1.0, df).expect("df > 0");
    Ok(TestResult { test: "welch-t".into(), statistic: t, p_value: 2.0 * dist.cdf(-t.abs()) })
}

/// Mann-Whitney U test, two-sided, normal approximation with tie correction
/// and continuity correction. `statistic` is U of sample `a`.
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Result<TestResult, StatsError> {
    for xs in [a, b] {
        if xs.is_empty() {
            return Err(StatsError::TooFew { what: "a Mann-Whitney test", needed: 1, got: 0 });
        }
        check_finite(xs)?;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let mut all: Vec<(f64, bool)> = a.iter().map(|&x| (x, true)).chain(b.iter().map(|&x| (x, false))).collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (mut rank_sum_a, mut tie_term) = (0.0, 0.0);
    let mut i = 0;
    while i < all.len() {
        let j = (i..all.len()).find(|&j| all[j].0 != all[i].0).unwrap_or(all.len());
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        let t = (j - i) as f64;
        tie_term += t * t * t - t;
        rank_sum_a += avg_rank * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let mu = n1 * n2 / 2.0;
    let n = n1 + n2;
    let sigma = (n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
    let p = if sigma == 0.0 {
        1.0
    } else {
        let z = ((u - mu).abs() - 0.5).max(0.0) / sigma;
        2.0 * Normal::new(0.0, 1.0).expect("valid").cdf(-z)
    };
    Ok(TestResult { test: "mann-whitney-u".into(), statistic: u, p_value: p.min(1.0) })
}

/// Holm-Bonferroni adjusted p-values, in the input order.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p_values[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// How a new measurement compares with a saved one (criterion-style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Significantly worse by more than the noise threshold.
    Regressed,
    /// Significantly better by more than the noise threshold.
    Improved,
    /// Within noise, or not significant.
    NoChange,
}

/// Compares `new` with `old` samples of a higher-is-better metric: a change
/// counts only when the Mann-Whitney p-value is below `alpha` *and* the
/// medians differ by more than `noise` (relative, e.g. 0.02 for 2%).
pub fn detect_change(
    old: &[f64],
    new: &[f64],
    alpha: f64,
    noise: f64,
) -> Result<(Change, f64, TestResult), StatsError> {
    let test = mann_whitney_u(new, old)?;
    let rel = median(new) / median(old) - 1.0;
    let change = if test.p_value >= alpha || rel.abs() <= noise {
        Change::NoChange
    } else if rel < 0.0 {
        Change::Regressed
    } else {
        Change::Improved
    };
    Ok((change, rel, test))
}
