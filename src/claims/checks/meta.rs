//! Checks about the run itself: no significant regression against the
//! previous report (`regression`), the aggregate score (`aggregate_score`),
//! and the grading scale (`grade_scale`).

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::perf::BenchOf;
use super::{kind, Check, Kind};
use crate::bench::{self, BenchResult, MetricChange};
use crate::claims::{Context, Outcome, Unmet};
use crate::record::{Summary, Verdict};
use crate::stats::{Change, Op};

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![kind::<Regression>(), kind::<AggregateScore>(), kind::<GradeScale>()]
}

/// Parameters of `regression`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionParams {
    /// The benchmarks compared with the previous report's.
    pub benches: Vec<BenchOf>,
    /// Significance level of the Mann-Whitney test.
    pub alpha: f64,
    /// Relative change below which nothing counts (noise).
    pub noise: f64,
}

/// Judges the metric changes found: any regression falsifies.
pub fn judge_regression(compared: usize, changes: &[MetricChange]) -> Outcome {
    let bad = changes
        .iter()
        .filter(|c| c.change == Change::Regressed)
        .map(|c| format!("{} {}: {:+.1}% (p = {:.4})", c.engine, c.metric, c.relative * 100.0, c.p_value))
        .collect();
    judge::no_violations("significant_regressions", compared, bad)
}

/// `regression`: no throughput metric regressed significantly since the previous report.
pub struct Regression;

impl Check for Regression {
    const NAME: &'static str = "regression";
    const DOC: &'static str =
        "no statistically significant throughput regression of the engine against the previous run's report";
    const PARAMS: &'static str = "benches (list of {model, a, b, prompt, gen}), alpha, noise";
    type Params = RegressionParams;

    fn run(p: &RegressionParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let path = cx.previous_report.clone().filter(|p| p.is_file()).ok_or_else(|| {
            Unmet::Missing("previous-report: no earlier report (reports/latest.json) to compare with".into())
        })?;
        let text = std::fs::read_to_string(&path).map_err(|e| Unmet::Failed(format!("{}: {e}", path.display())))?;
        /// The part of a run report this claim compares: its benchmarks (the
        /// rest of the report may have changed layout between versions).
        #[derive(Deserialize)]
        struct Previous {
            benches: Vec<crate::record::BenchRecord>,
        }
        let previous: Previous = serde_json::from_str(&text)
            .map_err(|e| Unmet::Failed(format!("{}: holds no benchmarks of this version: {e}", path.display())))?;
        let mut changes = Vec::new();
        let mut compared = 0;
        for b in &p.benches {
            let spec = b.spec();
            let Some(old) = previous.benches.iter().find(|r| r.spec == spec) else { continue };
            let new: BenchResult = cx.bench(&spec)?;
            // The claim is about engine a: b's own drift is not a's regression.
            let found = bench::compare_results(&old.result, &new, p.alpha, p.noise).map_err(Unmet::failed)?;
            let ours: Vec<_> = found.into_iter().filter(|c| c.engine == spec.a).collect();
            compared += ours.len();
            changes.extend(ours);
        }
        if compared == 0 {
            return Err(Unmet::Missing(format!(
                "previous-report: {} holds none of these benchmarks to compare with",
                path.display()
            )));
        }
        Ok(judge_regression(compared, &changes))
    }
}

/// Parameters of `aggregate_score`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreParams {
    /// Operator.
    pub op: Op,
    /// Threshold, out of 100.
    pub threshold: f64,
}

/// Judges the headline score of the verdicts so far: points earned over all
/// points, so a pending, skipped, inconclusive or failed claim lowers it.
pub fn judge_score(p: &ScoreParams, verdicts: &[(Verdict, u32)]) -> Outcome {
    let s = Summary::of(verdicts.iter().copied());
    let mut q = Quantity::new("score", "points %", s.score);
    q.n = s.total;
    let q = q.detail(format!(
        "{} of all {} points earned (grade {}); {:.1} over the {} tested points; {} claims pending, {} skipped",
        s.points_earned, s.points_total, s.grade, s.score_of_tested, s.points_tested, s.pending, s.skipped
    ));
    judge::quantity(q, p.op, p.threshold)
}

/// `aggregate_score`: the run's headline score (points earned ÷ all points) against a threshold.
pub struct AggregateScore;

impl Check for AggregateScore {
    const NAME: &'static str = "aggregate_score";
    const DOC: &'static str = "the run's headline score (points earned over all points) against a threshold";
    const PARAMS: &'static str = "op, threshold";
    type Params = ScoreParams;

    fn run(p: &ScoreParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let results = cx.full_run.as_ref().ok_or_else(|| {
            Unmet::Missing("full-run: judged over a whole run's verdicts; `falsify run` evaluates it".into())
        })?;
        let verdicts: Vec<(Verdict, u32)> = results.iter().map(|r| (r.outcome.verdict, r.points)).collect();
        Ok(judge_score(p, &verdicts))
    }
}

/// Parameters of `grade_scale`: the lowest score of each grade.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradeParams {
    /// Lowest score for A.
    pub a: f64,
    /// Lowest score for B.
    pub b: f64,
    /// Lowest score for C.
    pub c: f64,
    /// Lowest score for D.
    pub d: f64,
}

/// Scores in [0, 100] (every tenth, and each bound ± a hair) whose grade by
/// `grade` differs from the scale in `p`.
pub fn grade_violations(p: &GradeParams, grade: fn(f64) -> &'static str) -> (usize, Vec<String>) {
    let want = |s: f64| match s {
        s if s >= p.a => "A",
        s if s >= p.b => "B",
        s if s >= p.c => "C",
        s if s >= p.d => "D",
        _ => "F",
    };
    let mut scores: Vec<f64> = (0..=1000).map(|i| f64::from(i) / 10.0).collect();
    for bound in [p.a, p.b, p.c, p.d] {
        scores.extend([bound - 1e-9, bound, bound + 1e-9]);
    }
    let bad = scores
        .iter()
        .filter(|&&s| grade(s) != want(s))
        .map(|&s| format!("score {s}: graded {} where the scale says {}", grade(s), want(s)))
        .collect();
    (scores.len(), bad)
}

/// `grade_scale`: the report's grades follow the stated scale.
pub struct GradeScale;

impl Check for GradeScale {
    const NAME: &'static str = "grade_scale";
    const DOC: &'static str = "the report's letter grades follow the stated scale at every score and bound";
    const PARAMS: &'static str = "a, b, c, d (lowest score of each grade)";
    type Params = GradeParams;

    fn run(p: &GradeParams, _cx: &mut Context) -> Result<Outcome, Unmet> {
        let (n, bad) = grade_violations(p, crate::record::grade);
        Ok(judge::no_violations("misgraded_scores", n, bad))
    }
}
