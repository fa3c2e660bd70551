//! The record of one `falsify run`: schema version, provenance, settings, a
//! summary (counts per verdict, points earned / tested / total, score, grade),
//! every claim with its outcome and duration, and the benchmarks' raw data.

use serde::{Deserialize, Serialize};

use crate::bench::BenchResult;
use crate::claims::context::{BenchSpec, Settings};
use crate::claims::{Outcome, Verdict};
use crate::provenance::Provenance;

/// Version of the report's layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// One claim's entry in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimResult {
    /// Claim id.
    pub id: String,
    /// One-line statement.
    pub title: String,
    /// Catalog group.
    pub category: String,
    /// Points it is worth.
    pub points: u32,
    /// Its check kind, or `pending`.
    pub check: String,
    /// Its parameters as run (after the profile's replacements).
    pub params: serde_json::Value,
    /// The hardware profile applied, when the claim has profiles.
    pub profile: Option<String>,
    /// Its requirements.
    pub requires: Vec<String>,
    /// Where the claim comes from.
    pub source: String,
    /// Verdict, sentence and evidence.
    pub outcome: Outcome,
    /// Time the check took, ms.
    pub duration_ms: f64,
}

/// Counts, points, score and grade of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Claims in the run.
    pub total: usize,
    /// Claims per verdict.
    pub pass: usize,
    /// Falsified claims.
    pub falsified: usize,
    /// Inconclusive claims.
    pub inconclusive: usize,
    /// Skipped claims.
    pub skipped: usize,
    /// Claims whose check failed to run.
    pub error: usize,
    /// Points of passing claims.
    pub points_earned: u32,
    /// Points of claims that were tested (every verdict but `skipped`).
    pub points_tested: u32,
    /// Points of every claim.
    pub points_total: u32,
    /// 100 × earned ÷ tested (0 when nothing was tested).
    pub score: f64,
    /// 100 × earned ÷ total.
    pub score_of_total: f64,
    /// Letter grade of `score` (A ≥ 90, B ≥ 80, C ≥ 70, D ≥ 60, else F).
    pub grade: String,
}

/// The letter grade of a score out of 100.
pub fn grade(score: f64) -> &'static str {
    match score {
        s if s >= 90.0 => "A",
        s if s >= 80.0 => "B",
        s if s >= 70.0 => "C",
        s if s >= 60.0 => "D",
        _ => "F",
    }
}

impl Summary {
    /// Summarizes (verdict, points) pairs. A skip earns nothing and is not
    /// tested; inconclusive and error are tested and earn nothing.
    pub fn of(results: impl IntoIterator<Item = (Verdict, u32)>) -> Summary {
        let mut s = Summary {
            total: 0,
            pass: 0,
            falsified: 0,
            inconclusive: 0,
            skipped: 0,
            error: 0,
            points_earned: 0,
            points_tested: 0,
            points_total: 0,
            score: 0.0,
            score_of_total: 0.0,
            grade: String::new(),
        };
        for (verdict, points) in results {
            s.total += 1;
            s.points_total += points;
            match verdict {
                Verdict::Pass => s.pass += 1,
                Verdict::Falsified => s.falsified += 1,
                Verdict::Inconclusive => s.inconclusive += 1,
                Verdict::Skipped => s.skipped += 1,
                Verdict::Error => s.error += 1,
            }
            if verdict == Verdict::Pass {
                s.points_earned += points;
            }
            if verdict != Verdict::Skipped {
                s.points_tested += points;
            }
        }
        let pct = |a: u32, b: u32| if b == 0 { 0.0 } else { 100.0 * f64::from(a) / f64::from(b) };
        s.score = pct(s.points_earned, s.points_tested);
        s.score_of_total = pct(s.points_earned, s.points_total);
        s.grade = grade(s.score).into();
        s
    }
}

/// A benchmark taken during the run, with its raw samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRecord {
    /// Which benchmark.
    pub spec: BenchSpec,
    /// Its full result.
    pub result: BenchResult,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Where and with what it ran.
    pub provenance: Provenance,
    /// Benchmark settings.
    pub settings: Settings,
    /// The claims files read.
    pub claims_files: Vec<String>,
    /// The name filter, when one was given.
    pub filter: Option<String>,
    /// Wall time of the run, s.
    pub duration_s: f64,
    /// Counts, points, score, grade.
    pub summary: Summary,
    /// Every claim evaluated.
    pub claims: Vec<ClaimResult>,
    /// Every benchmark taken.
    pub benches: Vec<BenchRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_are_never_counted_as_tested_or_earned() {
        let s = Summary::of([
            (Verdict::Pass, 3),
            (Verdict::Falsified, 2),
            (Verdict::Skipped, 5),
            (Verdict::Inconclusive, 1),
            (Verdict::Error, 1),
        ]);
        assert_eq!((s.total, s.pass, s.falsified, s.skipped, s.inconclusive, s.error), (5, 1, 1, 1, 1, 1));
        assert_eq!((s.points_earned, s.points_tested, s.points_total), (3, 7, 12));
        assert!((s.score - 300.0 / 7.0).abs() < 1e-9 && s.score_of_total == 25.0);
        assert_eq!(s.grade, "F");
        let all_skipped = Summary::of([(Verdict::Skipped, 4)]);
        assert_eq!((all_skipped.score, all_skipped.grade.as_str()), (0.0, "F"));
    }

    #[test]
    fn grades_follow_the_scale() {
        let cases = [(100.0, "A"), (90.0, "A"), (89.99, "B"), (80.0, "B"), (70.0, "C"), (60.0, "D"), (59.9, "F")];
        for (score, g) in cases {
            assert_eq!(grade(score), g, "{score}");
        }
    }
}
