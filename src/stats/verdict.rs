//! Deciding a predicate from a measurement: a value, or an interval when the
//! measurement is noisy. An interval that straddles the threshold decides nothing.

use serde::{Deserialize, Serialize};

use super::summary::Interval;

/// A comparison operator in a claim's predicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `<`
    #[serde(rename = "<")]
    Lt,
}

impl Op {
    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Ge => value >= threshold,
            Op::Gt => value > threshold,
            Op::Le => value <= threshold,
            Op::Lt => value < threshold,
        }
    }

    /// The operator as written in claims.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
        }
    }
}

/// The statistical outcome of testing a predicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The predicate holds (for an interval: at its whole width).
    Pass,
    /// The predicate fails (for an interval: at its whole width).
    Falsified,
    /// The interval straddles the threshold: more samples are needed.
    Inconclusive,
}

/// Decides `value op threshold` for an exact measurement; NaN never passes.
pub fn decide_value(value: f64, op: Op, threshold: f64) -> Decision {
    if !value.is_nan() && op.holds(value, threshold) {
        Decision::Pass
    } else {
        Decision::Falsified
    }
}

/// Decides `x op threshold` where `x` is only known to lie in `ci`: it holds
/// when every point of the interval satisfies it, is falsified when none does,
/// and is inconclusive otherwise. E.g. "ratio >= 2.0" passes when `lo >= 2.0`
/// and is falsified when `hi < 2.0`.
pub fn decide_interval(ci: Interval, op: Op, threshold: f64) -> Decision {
    if ci.lo.is_nan() || ci.hi.is_nan() {
        return Decision::Inconclusive;
    }
    let (all, none) = match op {
        Op::Ge | Op::Gt => (op.holds(ci.lo, threshold), !op.holds(ci.hi, threshold)),
        Op::Le | Op::Lt => (op.holds(ci.hi, threshold), !op.holds(ci.lo, threshold)),
    };
    if all {
        Decision::Pass
    } else if none {
        Decision::Falsified
    } else {
        Decision::Inconclusive
    }
}
