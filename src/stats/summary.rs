//! Descriptive statistics of a sample: location, spread, percentiles, the
//! Student-t confidence interval of the mean, and Tukey outlier counts.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// A closed interval `[lo, hi]` at a stated confidence level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
}

/// How many samples lie outside Tukey's fences (reported, never dropped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outliers {
    /// Below Q1 − 3·IQR.
    pub low_severe: usize,
    /// Between Q1 − 3·IQR and Q1 − 1.5·IQR.
    pub low_mild: usize,
    /// Between Q3 + 1.5·IQR and Q3 + 3·IQR.
    pub high_mild: usize,
    /// Above Q3 + 3·IQR.
    pub high_severe: usize,
}

impl Outliers {
    /// Total outliers, mild and severe.
    pub fn total(&self) -> usize {
        self.low_severe + self.low_mild + self.high_mild + self.high_severe
    }
}

/// Summary of a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Sample size.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median (= p50).
    pub median: f64,
    /// Sample standard deviation (n − 1 denominator).
    pub std_dev: f64,
    /// Coefficient of variation: std_dev / |mean|.
    pub cv: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 95% confidence interval of the mean (Student t, n − 1 degrees of freedom).
    pub mean_ci95: Interval,
    /// Tukey fence classification.
    pub outliers: Outliers,
}

/// Why a sample cannot be summarized.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// Fewer samples than the statistic needs.
    #[error("{what} needs at least {needed} samples, got {got}")]
    TooFew {
        /// The statistic.
        what: &'static str,
        /// Samples needed.
        needed: usize,
        /// Samples given.
        got: usize,
    },
    /// A NaN or infinite sample.
    #[error("sample #{index} is not finite ({value})")]
    NotFinite {
        /// Its position.
        index: usize,
        /// The value.
        value: f64,
    },
}

/// Checks every value is finite.
pub fn check_finite(xs: &[f64]) -> Result<(), StatsError> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(StatsError::NotFinite { index, value: xs[index] }),
        None => Ok(()),
    }
}

/// The `p`-th quantile (0 ≤ p ≤ 1) of **sorted** data by linear interpolation
/// between closest ranks (Hyndman & Fan type 7, numpy's default "linear").
pub fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p.clamp(0.0, 1.0);
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Median of unsorted data.
pub fn median(xs: &[f64]) -> f64 {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    quantile_sorted(&s, 0.5)
}

/// Counts of data in equal-width bins: bin `i` covers `lo + i·width ..` one width on.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Lower edge of the first bin.
    pub lo: f64,
    /// Width of every bin (> 0).
    pub width: f64,
    /// Values per bin.
    pub counts: Vec<u64>,
}

/// `xs` (finite values; others are left out) counted into `bins` (≥ 1) equal
/// bins from their minimum to their maximum. Constant data fall in the first
/// bin; no data give empty bins from 0.
pub fn histogram(xs: &[f64], bins: usize) -> Histogram {
    let bins = bins.max(1);
    let finite = xs.iter().copied().filter(|x| x.is_finite());
    let (lo, hi) = finite.clone().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| (l.min(x), h.max(x)));
    let lo = if lo.is_finite() { lo } else { 0.0 };
    let width = if hi > lo { (hi - lo) / bins as f64 } else { 1.0 / bins as f64 };
    let mut counts = vec![0u64; bins];
    for x in finite {
        counts[(((x - lo) / width) as usize).min(bins - 1)] += 1;
    }
    Histogram { lo, width, counts }
}

/// Tukey's fences on sorted data: mild beyond 1.5 IQR, severe beyond 3 IQR.
pub fn tukey(sorted: &[f64]) -> Outliers {
    let (q1, q3) = (quantile_sorted(sorted, 0.25), quantile_sorted(sorted, 0.75));
    let iqr = q3 - q1;
    let mut o = Outliers::default();
    for &x in sorted {
        if x < q1 - 3.0 * iqr {
            o.low_severe += 1;
        } else if x < q1 - 1.5 * iqr {
            o.low_mild += 1;
        } else if x > q3 + 3.0 * iqr {
            o.high_severe += 1;
        } else if x > q3 + 1.5 * iqr {
            o.high_mild += 1;
        }
    }
    o
}

/// Two-sided critical value of Student's t for `level` confidence and `df` degrees of freedom.
pub fn t_critical(level: f64, df: f64) -> f64 {
    StudentsT::new(0.0, 1.0, df).expect("df > 0").inverse_cdf(0.5 + level / 2.0)
}

impl Summary {
    /// Summarizes a sample of at least two finite values.
    pub fn of(xs: &[f64]) -> Result<Summary, StatsError> {
        if xs.len() < 2 {
            return Err(StatsError::TooFew { what: "a summary", needed: 2, got: xs.len() });
        }
        check_finite(xs)?;
        let n = xs.len();
        let mut s = xs.to_vec();
        s.sort_by(f64::total_cmp);
        let mean = s.iter().sum::<f64>() / n as f64;
        let var = s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let std_dev = var.sqrt();
        let half = t_critical(0.95, (n - 1) as f64) * std_dev / (n as f64).sqrt();
        Ok(Summary {
            n,
            mean,
            median: quantile_sorted(&s, 0.5),
            std_dev,
            cv: if mean != 0.0 { std_dev / mean.abs() } else { f64::INFINITY },
            min: s[0],
            max: s[n - 1],
            p90: quantile_sorted(&s, 0.90),
            p99: quantile_sorted(&s, 0.99),
            p999: quantile_sorted(&s, 0.999),
            mean_ci95: Interval { lo: mean - half, hi: mean + half, level: 0.95 },
            outliers: tukey(&s),
        })
    }
}
