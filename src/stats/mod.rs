//! Statistics every verdict rests on: summaries and percentiles, confidence
//! intervals (Student t, seeded bootstrap), significance tests, Holm's
//! correction, regression detection, and interval-based decisions.

mod compare;
mod summary;
mod verdict;

pub use compare::{
    bootstrap_median, detect_change, holm, mann_whitney_u, ratio_of_medians, welch_t, Change, Ratio, TestResult,
    DEFAULT_RESAMPLES,
};
pub use summary::{
    histogram, median, quantile_sorted, t_critical, tukey, Histogram, Interval, Outliers, StatsError, Summary,
};
pub use verdict::{decide_interval, decide_value, Decision, Op};

#[cfg(test)]
mod tests;
