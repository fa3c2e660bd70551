//! The run record: what one `falsify run` found, as every later stage reads
//! it. A claim's [`Verdict`], [`Outcome`] and [`Evidence`]; the
//! [`ClaimResult`] of each claim; the [`Summary`] (counts per verdict,
//! points, the headline score over all points); the benchmarks taken
//! ([`BenchSpec`], [`BenchRecord`]) under the run's [`Settings`]; and the
//! whole [`RunReport`]. `claims` fills it in and `report` renders it; neither
//! imports the other for it.

use serde::{Deserialize, Serialize};

use crate::baseline::recorded::Figure;
use crate::bench::bricks::BrickProfile;
use crate::bench::BenchResult;
use crate::provenance::Provenance;
use crate::stats::{decide_interval, decide_value, Decision, Interval, Op};

pub use crate::bench::score::grade;

/// A claim's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Measured, and the measurement satisfies the claim.
    Pass,
    /// Measured, and the measurement contradicts the claim.
    Falsified,
    /// Measured, but too noisy or too few samples to decide.
    Inconclusive,
    /// A requirement is missing on this host; nothing was decided.
    Skipped,
    /// The claim's subject is not built yet; nothing can be decided anywhere.
    Pending,
    /// The harness itself failed.
    Error,
}

impl Verdict {
    /// Every verdict, in the order reports list them.
    pub const ALL: [Verdict; 6] =
        [Verdict::Pass, Verdict::Falsified, Verdict::Inconclusive, Verdict::Skipped, Verdict::Pending, Verdict::Error];

    /// The verdict's name as reports write it.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Falsified => "falsified",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Skipped => "skipped",
            Verdict::Pending => "pending",
            Verdict::Error => "error",
        }
    }

    /// Whether the claim was measured here (pass, falsified, inconclusive or
    /// an error while measuring); skipped and pending claims were not.
    pub fn tested(self) -> bool {
        !matches!(self, Verdict::Skipped | Verdict::Pending)
    }
}

/// The baseline a measurement was compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineValue {
    /// Engine name (`llama.cpp`, `ollama`).
    pub engine: String,
    /// Its value of the same metric (median).
    pub value: f64,
    /// Where the baseline came from (build, package, sha256).
    pub provenance: Option<String>,
}

/// What a verdict rests on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// What was measured (`decode_ratio`, `top1_agreement`, …).
    pub metric: String,
    /// Its unit (`x`, `tok/s`, `fraction`, `count`, …).
    pub unit: String,
    /// The measured value (a median, a fraction, a count).
    pub value: Option<f64>,
    /// The predicate's operator (`>=`, `<=`, …).
    pub op: Option<String>,
    /// The predicate's threshold.
    pub threshold: Option<f64>,
    /// The value's confidence interval, when it has one.
    pub ci: Option<Interval>,
    /// How many samples or cases the value rests on.
    pub n: Option<usize>,
    /// Coefficient of variation of the samples, when they are timings.
    pub cv: Option<f64>,
    /// The raw samples (or, when they are many, the first ones: see `samples_note`).
    pub samples: Vec<f64>,
    /// Where the full samples are, when `samples` is not all of them.
    pub samples_note: Option<String>,
    /// The baseline's value and provenance.
    pub baseline: Option<BaselineValue>,
    /// Further facts a reader needs (counterexamples found, settings used).
    pub details: Vec<String>,
}

/// The rule every measured verdict follows: `value op threshold` decided on
/// the value's interval when it has one (an interval straddling the threshold
/// is inconclusive), else on the value itself; a NaN value decides nothing.
pub fn decide(value: f64, ci: Option<Interval>, op: Op, threshold: f64) -> Decision {
    match ci {
        _ if value.is_nan() => Decision::Inconclusive,
        Some(ci) => decide_interval(ci, op, threshold),
        None => decide_value(value, op, threshold),
    }
}

impl Evidence {
    /// The decision [`decide`] makes on this evidence as recorded, or why it
    /// cannot be made (no value, operator or threshold; an unknown operator;
    /// a threshold that is not finite).
    pub fn decision(&self) -> Result<Decision, String> {
        let value = self.value.ok_or("the evidence has no value")?;
        let symbol = self.op.as_deref().ok_or("the evidence has no operator")?;
        let op = [Op::Ge, Op::Gt, Op::Le, Op::Lt]
            .into_iter()
            .find(|op| op.symbol() == symbol)
            .ok_or_else(|| format!("the evidence's operator {symbol:?} is not one of >=, >, <=, <"))?;
        let threshold = self.threshold.filter(|t| t.is_finite()).ok_or("the evidence has no finite threshold")?;
        Ok(decide(value, self.ci, op, threshold))
    }

    /// The predicate as recorded: `value 0.5 >= 1 (CI 0.4–0.6)`.
    pub fn predicate(&self) -> String {
        let show = |x: Option<f64>| x.map_or("none".to_owned(), |x| x.to_string());
        let ci = self.ci.map(|c| format!(" (CI {}–{})", c.lo, c.hi)).unwrap_or_default();
        format!("value {} {} {}{ci}", show(self.value), self.op.as_deref().unwrap_or("?"), show(self.threshold))
    }
}

/// A claim's verdict, one human sentence, and the evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// One line: what was found, or why nothing was decided.
    pub sentence: String,
    /// The measurement behind the verdict (absent when nothing was measured).
    pub evidence: Option<Evidence>,
}

impl Outcome {
    /// A verdict from a measurement.
    pub fn measured(verdict: Verdict, sentence: impl Into<String>, evidence: Evidence) -> Outcome {
        Outcome { verdict, sentence: sentence.into(), evidence: Some(evidence) }
    }

    /// Skipped: a requirement is missing; `reason` says which and how to provide it.
    pub fn skipped(reason: impl Into<String>) -> Outcome {
        Outcome { verdict: Verdict::Skipped, sentence: reason.into(), evidence: None }
    }

    /// Pending: the claim's subject is not built yet; `reason` says what is missing.
    pub fn pending(reason: impl Into<String>) -> Outcome {
        Outcome { verdict: Verdict::Pending, sentence: reason.into(), evidence: None }
    }

    /// The harness failed; `what` says how.
    pub fn error(what: impl std::fmt::Display) -> Outcome {
        Outcome { verdict: Verdict::Error, sentence: what.to_string(), evidence: None }
    }
}

/// How benchmarks are run in this session.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Threads for the engine and the baselines.
    pub threads: usize,
    /// Measured runs per benchmark.
    pub runs: usize,
    /// Warmup runs per benchmark, not counted.
    pub warmup: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { threads: 2, runs: 10, warmup: 1 }
    }
}

/// Which benchmark: one model, engines a and b, one prompt and generation length.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BenchSpec {
    /// Model size (`0.5b`, `1.5b`, …).
    pub model: String,
    /// The engine measured (`falsify` unless a claim names another).
    #[serde(default = "in_process")]
    pub a: String,
    /// The engine it is compared with, or `none` (`baseline` in the report).
    #[serde(rename = "baseline")]
    pub b: String,
    /// Prompt tokens of the prefill test.
    pub prompt: usize,
    /// Tokens generated in the decode test.
    pub gen: usize,
}

impl std::fmt::Display for BenchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} p{} n{} ", self.model, self.prompt, self.gen)?;
        if self.a != crate::bench::ENGINE {
            write!(f, "{} ", self.a)?;
        }
        write!(f, "vs {}", self.b)
    }
}

/// The engine a benchmark measures when a record names none: the embedded one.
fn in_process() -> String {
    crate::bench::ENGINE.into()
}

/// Version of the report's layout; bumped on any incompatible change (2: the
/// `pending` verdict, and `score` over all points).
pub const SCHEMA_VERSION: u32 = 2;

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

/// Counts, points, score and grade of a run. The headline score is points
/// earned over **all** points: a claim that is pending, skipped,
/// inconclusive or an error earns nothing and still counts, so building or
/// measuring less can never raise it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Claims in the run.
    pub total: usize,
    /// Claims that passed.
    pub pass: usize,
    /// Falsified claims.
    pub falsified: usize,
    /// Inconclusive claims.
    pub inconclusive: usize,
    /// Claims skipped for something missing on this host.
    pub skipped: usize,
    /// Claims whose subject is not built yet.
    pub pending: usize,
    /// Claims whose check failed to run.
    pub error: usize,
    /// Points of passing claims.
    pub points_earned: u64,
    /// Points of claims that were tested (every verdict but `skipped` and `pending`).
    pub points_tested: u64,
    /// Points of every claim.
    pub points_total: u64,
    /// The headline score: 100 × earned ÷ total (0 when there are no points).
    pub score: f64,
    /// 100 × earned ÷ tested (0 when nothing was tested); never the headline.
    pub score_of_tested: f64,
    /// Letter grade of the headline `score` (A ≥ 90, B ≥ 80, C ≥ 70, D ≥ 60, else F).
    pub grade: String,
}

impl Summary {
    /// Summarizes (verdict, points) pairs. Points are summed as `u64`, so no
    /// count of `u32` points a report can hold overflows.
    pub fn of(results: impl IntoIterator<Item = (Verdict, u32)>) -> Summary {
        let mut s = Summary::default();
        for (verdict, points) in results {
            let points = u64::from(points);
            s.total += 1;
            s.points_total += points;
            *match verdict {
                Verdict::Pass => &mut s.pass,
                Verdict::Falsified => &mut s.falsified,
                Verdict::Inconclusive => &mut s.inconclusive,
                Verdict::Skipped => &mut s.skipped,
                Verdict::Pending => &mut s.pending,
                Verdict::Error => &mut s.error,
            } += 1;
            if verdict == Verdict::Pass {
                s.points_earned += points;
            }
            if verdict.tested() {
                s.points_tested += points;
            }
        }
        let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
        s.score = pct(s.points_earned, s.points_total);
        s.score_of_tested = pct(s.points_earned, s.points_tested);
        s.grade = grade(s.score).into();
        s
    }

    /// How many claims got verdict `v`.
    pub fn count(&self, v: Verdict) -> usize {
        match v {
            Verdict::Pass => self.pass,
            Verdict::Falsified => self.falsified,
            Verdict::Inconclusive => self.inconclusive,
            Verdict::Skipped => self.skipped,
            Verdict::Pending => self.pending,
            Verdict::Error => self.error,
        }
    }

    /// The headline in one line a reader cannot misread:
    /// `score 43.3 of 100 (all 194 points) · 60.0 over tested points · 47 pending · 54 skipped`.
    pub fn headline(&self) -> String {
        format!(
            "score {:.1} of 100 (all {} points) · {:.1} over tested points · {} pending · {} skipped",
            self.score, self.points_total, self.score_of_tested, self.pending, self.skipped
        )
    }

    /// Each field of this summary that differs from `recomputed`, named with both values.
    pub fn differences(&self, recomputed: &Summary) -> Vec<String> {
        let (s, r) = (self, recomputed);
        let count = |c: usize| c as f64;
        let points = |p: u64| p as f64;
        let fields = [
            ("total", count(s.total), count(r.total)),
            ("pass", count(s.pass), count(r.pass)),
            ("falsified", count(s.falsified), count(r.falsified)),
            ("inconclusive", count(s.inconclusive), count(r.inconclusive)),
            ("skipped", count(s.skipped), count(r.skipped)),
            ("pending", count(s.pending), count(r.pending)),
            ("error", count(s.error), count(r.error)),
            ("points_earned", points(s.points_earned), points(r.points_earned)),
            ("points_tested", points(s.points_tested), points(r.points_tested)),
            ("points_total", points(s.points_total), points(r.points_total)),
            ("score", s.score, r.score),
            ("score_of_tested", s.score_of_tested, r.score_of_tested),
        ];
        let mut found: Vec<String> = fields
            .into_iter()
            .filter(|&(_, stated, given)| stated.is_nan() || (stated - given).abs() > 1e-9 * given.abs().max(1.0))
            .map(|(name, stated, given)| format!("summary.{name} is {stated}, but the claims give {given}"))
            .collect();
        if s.grade != r.grade {
            found.push(format!("summary.grade is {:?}, but the claims give {:?}", s.grade, r.grade));
        }
        found
    }

    /// The counts per verdict, one clause each.
    pub fn counts(&self) -> String {
        format!(
            "{} claims: {} pass, {} falsified, {} inconclusive, {} skipped, {} pending, {} error",
            self.total, self.pass, self.falsified, self.inconclusive, self.skipped, self.pending, self.error
        )
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

/// One series of samples a measuring check took: what it timed, its unit,
/// the warmup runs it discarded first and every measured sample, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleSeries {
    /// What was measured (`bench 0.5b p32 n128 vs llama.cpp falsify decode_tok_s`, `F038 …`).
    pub name: String,
    /// Unit of the samples (`tok/s`, `ms`, `GFLOP/s`, `fraction`).
    pub unit: String,
    /// Warmup runs taken before the first sample and discarded.
    pub warmup: usize,
    /// The measured samples.
    pub samples: Vec<f64>,
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
    /// Decode's brick profile, when one was taken.
    #[serde(default)]
    pub bricks: Option<BrickProfile>,
    /// Every series of samples the run's measuring checks took (benchmarks,
    /// context decay, load time, kernel throughput, instrumentation overhead,
    /// the brick profile), warmup counted apart.
    #[serde(default)]
    pub series: Vec<SampleSeries>,
    /// Recorded figures (`baselines/recorded.toml`) shown beside live ones,
    /// always labelled as recorded, with their source.
    #[serde(default)]
    pub recorded: Vec<Figure>,
    /// Why the run stopped before every selected claim was judged (a signal),
    /// when it did: such a partial report is kept, and the gate refuses it.
    #[serde(default)]
    pub interrupted: Option<String>,
}

impl RunReport {
    /// The summary its claims give (counts, points, score, grade), whatever its `summary` says.
    pub fn summary_of_claims(&self) -> Summary {
        Summary::of(self.claims.iter().map(|c| (c.outcome.verdict, c.points)))
    }

    /// Where the report contradicts itself, one line each (empty: nowhere): a
    /// claim id that appears more than once, a `summary` field that differs
    /// from what the claims give, a `pass` whose own evidence does not decide
    /// a pass (or that has no evidence).
    pub fn inconsistencies(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut copies: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for c in &self.claims {
            *copies.entry(c.id.as_str()).or_default() += 1;
        }
        for (id, n) in copies.into_iter().filter(|&(_, n)| n > 1) {
            found.push(format!("claim {id} appears {n} times; a report holds each claim once"));
        }
        found.extend(self.summary.differences(&self.summary_of_claims()));
        for c in self.claims.iter().filter(|c| c.outcome.verdict == Verdict::Pass) {
            let why = match c.outcome.evidence.as_ref().map(Evidence::decision) {
                None => "it has no evidence".to_owned(),
                Some(Ok(Decision::Pass)) => continue,
                Some(Ok(other)) => {
                    let decided = if other == Decision::Falsified { "falsified" } else { "inconclusive" };
                    let e = c.outcome.evidence.as_ref().map(Evidence::predicate).unwrap_or_default();
                    format!("its evidence decides {decided} ({e})")
                }
                Some(Err(why)) => why,
            };
            found.push(format!("claim {}: verdict pass, but {why}", c.id));
        }
        found
    }

    /// A run report from its JSON document, of this schema or schema 1. A
    /// schema-1 report is read as this schema would have recorded it: its
    /// claims with `check = "pending"` (reported then as skipped) get the
    /// `pending` verdict, and its summary is recomputed, so its headline
    /// score is over all points as today's.
    pub fn from_json(mut doc: serde_json::Value) -> Result<RunReport, String> {
        if doc["schema"] == 1 {
            for c in doc["claims"].as_array_mut().into_iter().flatten() {
                if c["check"] == "pending" {
                    c["outcome"]["verdict"] = Verdict::Pending.name().into();
                }
            }
            let claims: Vec<ClaimResult> =
                serde_json::from_value(doc["claims"].clone()).map_err(|e| format!("its claims: {e}"))?;
            let summary = Summary::of(claims.iter().map(|c| (c.outcome.verdict, c.points)));
            doc["summary"] = serde_json::to_value(summary).map_err(|e| e.to_string())?;
            doc["schema"] = SCHEMA_VERSION.into();
        }
        match doc["schema"].as_u64() {
            Some(v) if v == u64::from(SCHEMA_VERSION) => serde_json::from_value(doc).map_err(|e| e.to_string()),
            other => Err(format!("schema {other:?} is not one this version reads (1 or {SCHEMA_VERSION})")),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
