//! The shared judging step: a measured quantity against a predicate (with its
//! confidence interval when it has one), a rate of agreeing cases, or a list
//! of violations. Pure functions, so every kind's audit can feed them directly.

use crate::claims::{BaselineValue, Evidence, Outcome, Verdict};
use crate::stats::{self, Decision, Interval, Op, Summary};

/// How many raw samples evidence carries inline.
const INLINE_SAMPLES: usize = 64;

/// A measured value with what it rests on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quantity {
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// The value (a median, a ratio, a fraction).
    pub value: f64,
    /// Its confidence interval; when present the decision is made on the interval.
    pub ci: Option<Interval>,
    /// Samples or cases behind it.
    pub n: usize,
    /// Coefficient of variation of the samples.
    pub cv: Option<f64>,
    /// Raw samples.
    pub samples: Vec<f64>,
    /// The baseline's value.
    pub baseline: Option<BaselineValue>,
    /// Further facts.
    pub details: Vec<String>,
}

impl Quantity {
    /// A quantity with just a name, unit and value.
    pub fn new(metric: &str, unit: &str, value: f64) -> Quantity {
        Quantity { metric: metric.into(), unit: unit.into(), value, n: 1, ..Quantity::default() }
    }

    /// The median of timing samples, with a bootstrap CI of the median.
    pub fn of_samples(metric: &str, unit: &str, samples: &[f64]) -> Quantity {
        let mut q = Quantity::new(metric, unit, f64::NAN);
        q.n = samples.len();
        q.samples = samples.to_vec();
        if let Ok(s) = Summary::of(samples) {
            q.value = s.median;
            q.cv = Some(s.cv);
            q.ci = stats::bootstrap_median(samples, 0.95, stats::DEFAULT_RESAMPLES, 0x5eed).ok();
        }
        q
    }

    /// With a detail line added.
    pub fn detail(mut self, d: impl Into<String>) -> Quantity {
        self.details.push(d.into());
        self
    }

    fn evidence(self, op: Op, threshold: f64) -> Evidence {
        let total = self.samples.len();
        let mut samples = self.samples;
        let samples_note = (total > INLINE_SAMPLES).then(|| {
            samples.truncate(INLINE_SAMPLES);
            format!("first {INLINE_SAMPLES} of {total} samples; all are in the report's `benches` section")
        });
        Evidence {
            metric: self.metric,
            unit: self.unit,
            value: Some(self.value),
            op: Some(op.symbol().into()),
            threshold: Some(threshold),
            ci: self.ci,
            n: Some(self.n),
            cv: self.cv,
            samples,
            samples_note,
            baseline: self.baseline,
            details: self.details,
        }
    }
}

/// Percentile-bootstrap 95% CI of `stat` over `samples` (seeded, so the same
/// samples give the same interval); `None` with fewer than two samples.
pub fn bootstrap(samples: &[f64], stat: impl Fn(&[f64]) -> f64) -> Option<Interval> {
    if samples.len() < 2 || samples.iter().any(|x| !x.is_finite()) {
        return None;
    }
    const RESAMPLES: usize = 2000;
    let mut rng = crate::rng::SplitMix64(0x5eed);
    let mut buf = vec![0.0; samples.len()];
    let mut stats: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            buf.iter_mut().for_each(|x| *x = samples[rng.below(samples.len())]);
            stat(&buf)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    Some(Interval { lo: stats::quantile_sorted(&stats, 0.025), hi: stats::quantile_sorted(&stats, 0.975), level: 0.95 })
}

/// A number for a sentence: few digits for big values, more for small ones.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        format!("{x}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.3}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{x:.4}")
    }
}

/// Decides `q.value op threshold` by [`crate::record::decide`]: on the
/// interval when `q` has one (so a CI straddling the threshold is
/// inconclusive), else on the value. NaN never passes. The gate re-decides
/// every recorded pass by the same rule.
pub fn quantity(q: Quantity, op: Op, threshold: f64) -> Outcome {
    let decision = crate::record::decide(q.value, q.ci, op, threshold);
    let ci = q.ci.map(|c| format!(" (95% CI {}–{})", num(c.lo), num(c.hi))).unwrap_or_default();
    let base = q.baseline.as_ref().map(|b| format!("; {} {}", b.engine, num(b.value))).unwrap_or_default();
    let head = format!("{} = {} {}{ci}, n = {}{base}", q.metric, num(q.value), q.unit, q.n);
    let (verdict, sentence) = match decision {
        Decision::Pass => (Verdict::Pass, format!("{head}: satisfies {} {}", op.symbol(), num(threshold))),
        Decision::Falsified => (Verdict::Falsified, format!("{head}: violates {} {}", op.symbol(), num(threshold))),
        Decision::Inconclusive if q.value.is_nan() => {
            (Verdict::Inconclusive, format!("{}: no valid value was measured (NaN)", q.metric))
        }
        Decision::Inconclusive => (
            Verdict::Inconclusive,
            format!(
                "{head}: the interval straddles {} {}; more runs (--runs) or a quieter machine are needed to decide",
                op.symbol(),
                num(threshold)
            ),
        ),
    };
    Outcome::measured(verdict, sentence, q.evidence(op, threshold))
}

/// Decides "at least `min_rate` of at least `min_cases` cases agree".
/// Too few cases is inconclusive.
pub fn rate(
    metric: &str,
    agree: usize,
    total: usize,
    min_rate: f64,
    min_cases: usize,
    details: Vec<String>,
) -> Outcome {
    let mut q = Quantity::new(metric, "fraction", agree as f64 / total.max(1) as f64);
    q.n = total;
    q.details = details;
    q.details.insert(0, format!("{agree} of {total} cases agree"));
    if total < min_cases || total == 0 {
        let sentence = format!("only {total} cases were compared; the claim needs at least {min_cases}");
        return Outcome::measured(Verdict::Inconclusive, sentence, q.evidence(Op::Ge, min_rate));
    }
    let mut out = quantity(q, Op::Ge, min_rate);
    out.sentence = format!("{agree}/{total} agree ({:.2}%) — {}", 100.0 * agree as f64 / total as f64, out.sentence);
    out
}

/// Decides "no violation among `checked` cases". Nothing checked is inconclusive.
pub fn no_violations(metric: &str, checked: usize, violations: Vec<String>) -> Outcome {
    let mut q = Quantity::new(metric, "count", violations.len() as f64);
    q.n = checked;
    let count = violations.len();
    q.details = violations.into_iter().take(10).collect();
    if checked == 0 {
        let sentence = format!("{metric}: nothing was checked");
        return Outcome::measured(Verdict::Inconclusive, sentence, q.evidence(Op::Le, 0.0));
    }
    let mut out = quantity(q, Op::Le, 0.0);
    out.sentence = match out.verdict {
        Verdict::Pass => format!("{metric}: all {checked} cases hold"),
        _ => format!(
            "{metric}: {count} of {checked} cases violate it; first: {}",
            out.evidence.as_ref().and_then(|e| e.details.first()).map_or("", String::as_str)
        ),
    };
    out
}
