use std::time::Duration;

use super::metrics::{Percentiles, RequestRecord, RunSummary, Slo};
use super::*;

#[test]
fn ttft_itl_and_tpot_come_from_the_chunk_times() {
    let r = RequestRecord::from_times(0, 5.0, &[100.0, 110.0, 130.0, 160.0], 170.0, Some(5));
    assert_eq!(r.ttft_ms, 100.0);
    assert_eq!(r.itl_ms, vec![10.0, 20.0, 30.0]);
    assert_eq!(r.output_tokens, 5);
    assert_eq!(r.tpot_ms, Some(70.0 / 4.0));
    let one = RequestRecord::from_times(1, 0.0, &[50.0], 50.0, None);
    assert_eq!((one.output_tokens, one.tpot_ms), (1, None));
}

#[test]
fn percentiles_interpolate_like_numpy() {
    let xs: Vec<f64> = (1..=1000).map(f64::from).collect();
    let p = Percentiles::of(&xs).unwrap();
    // numpy.percentile(range(1, 1001), [50, 90, 99, 99.9]) = 500.5, 900.1, 990.01, 999.001
    for (got, want) in [(p.p50, 500.5), (p.p90, 900.1), (p.p99, 990.01), (p.p999, 999.001)] {
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
    assert_eq!(Percentiles::of(&[]), None);
    assert_eq!(Percentiles::of(&[1.0, f64::NAN]), None);
    assert_eq!(Percentiles::samples_needed(0.99), 100);
}

#[test]
fn throughput_and_goodput_count_only_what_met_the_slo() {
    // Three requests in 1 s: 10 tokens each; one slow to its first token, one failed.
    let ok = |i, sent, ttft| RequestRecord::from_times(i, sent, &[ttft, ttft + 10.0], ttft + 100.0, Some(10));
    let records = vec![
        ok(0, 0.0, 50.0),
        ok(1, 100.0, 600.0),
        RequestRecord::failed(2, 200.0, 800.0, "boom".into()),
        ok(3, 400.0, 50.0),
    ];
    let slo = Slo::parse("ttft_ms=500, tpot_ms=20").unwrap();
    let s = RunSummary::of(&records, &slo);
    assert_eq!((s.requests, s.failed, s.output_tokens), (4, 1, 30));
    assert!((s.duration_s - 1.0).abs() < 1e-12, "{}", s.duration_s);
    assert!((s.output_tok_s - 30.0).abs() < 1e-9);
    assert!((s.requests_per_s - 3.0).abs() < 1e-9);
    assert_eq!(s.goodput_req_s, Some(2.0));
    assert_eq!(RunSummary::of(&records, &Slo::default()).goodput_req_s, None);
    assert_eq!(s.figure("ttft_ms_p50"), Some(50.0));
}

#[test]
fn slo_text_is_parsed_and_bad_text_is_named() {
    assert_eq!(Slo::parse("e2e_ms=9").unwrap().e2e_ms, Some(9.0));
    for bad in ["ttft_ms", "ttft_ms=x", "ttft_ms=-1", "itl=3", "ttft_ms=nan"] {
        let e = Slo::parse(bad).unwrap_err();
        assert!(e.starts_with("--slo") && e.contains(bad.split('=').next().unwrap()), "{e}");
    }
}

#[test]
fn poisson_arrivals_are_seeded_with_the_asked_mean_rate() {
    let a = arrivals(4000, 20.0, true, 11);
    assert_eq!(a, arrivals(4000, 20.0, true, 11));
    assert_ne!(a, arrivals(4000, 20.0, true, 12));
    assert_eq!(a[0], 0.0);
    assert!(a.windows(2).all(|w| w[1] >= w[0]));
    let rate = (a.len() - 1) as f64 / a[a.len() - 1];
    assert!((rate - 20.0).abs() < 1.5, "{rate}");
    // Exponential gaps: their standard deviation is about their mean.
    let gaps: Vec<f64> = a.windows(2).map(|w| w[1] - w[0]).collect();
    let s = crate::stats::Summary::of(&gaps).unwrap();
    assert!((s.cv - 1.0).abs() < 0.1, "{}", s.cv);
    assert_eq!(arrivals(3, 4.0, false, 0), vec![0.0, 0.25, 0.5]);
}

#[test]
fn bad_plans_are_refused_naming_the_flag() {
    let plan = |levels, requests, runs| Plan { levels, requests, runs, warmup: 0, slo: Slo::default(), seed: 0 };
    let c = |streams| vec![Load::Concurrency { streams }];
    for (p, want) in [
        (plan(vec![], 1, 1), "no load level"),
        (plan(c(0), 1, 1), "--concurrency"),
        (plan(vec![Load::Rate { per_s: 0.0, poisson: true }], 1, 1), "--rate"),
        (plan(c(1), 0, 1), "--requests"),
        (plan(c(1), 1, 0), "--runs"),
    ] {
        assert!(p.validate().unwrap_err().contains(want));
    }
}

#[test]
fn a_sweep_against_a_streaming_stub_measures_its_latencies_and_writes_the_files() {
    let stub = stub::start(Duration::from_millis(30), Duration::from_millis(5));
    let ep = Endpoint::at("stub", &stub.base, "m");
    let requests = prompts::generated(4, 8, 6, 1);
    let plan = Plan {
        levels: vec![
            Load::Concurrency { streams: 1 },
            Load::Concurrency { streams: 2 },
            Load::Rate { per_s: 50.0, poisson: true },
        ],
        requests: 4,
        runs: 2,
        warmup: 1,
        slo: Slo::parse("ttft_ms=1000").unwrap(),
        seed: 3,
    };
    let (summary, lines) = run(&ep, &requests, "generated", &plan, false).unwrap();
    assert_eq!(summary.levels.len(), 3);
    for level in &summary.levels {
        for r in &level.runs {
            assert_eq!((r.requests, r.failed, r.output_tokens), (4, 0, 24));
            let ttft = r.ttft_ms.unwrap();
            assert!(ttft.p50 >= 30.0 && ttft.p50 < 1000.0, "{ttft:?}");
            let itl = r.itl_ms.unwrap();
            assert_eq!(itl.n, 4 * 5);
            assert!(itl.p50 >= 4.0, "{itl:?}");
            assert!(r.tpot_ms.unwrap().p50 >= 4.0);
            assert_eq!(r.goodput_req_s, Some(r.requests_per_s));
        }
        let tput = level.figure("output_tok_s").unwrap();
        assert_eq!(tput.values.len(), 2);
        assert!(tput.ci95.is_some());
    }
    // Two streams finish 4 requests sooner than one.
    let t = |i: usize| summary.levels[i].figure("output_tok_s").unwrap().mean;
    assert!(t(1) > t(0) * 1.3, "{} vs {}", t(1), t(0));
    assert_eq!(lines.lines().count(), 3 * 2 * 4);
    let dir = tempfile::tempdir().unwrap();
    let files = write(&dir.path().join("out"), &summary, &lines).unwrap();
    let back: LoadSummary = serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    assert_eq!(back, summary);
    let row: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&files[0]).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(row["level"], "poisson 50/s");
    assert_eq!(row["run"], 1);
    assert!(row["itl_ms"].as_array().unwrap().len() == 5);
    assert!(table(&summary).contains("concurrency 2"));
}

#[test]
fn a_server_that_refuses_every_request_is_an_error_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ep = Endpoint::at("gone", &format!("http://127.0.0.1:{port}/v1"), "m");
    let plan = Plan {
        levels: vec![Load::Concurrency { streams: 1 }],
        requests: 2,
        runs: 1,
        warmup: 0,
        slo: Slo::default(),
        seed: 0,
    };
    let err = run(&ep, &prompts::generated(1, 4, 2, 0), "generated", &plan, false).unwrap_err();
    assert!(err.contains("gone: every request of concurrency 1 failed"), "{err}");
}

#[test]
fn every_request_of_a_plan_gets_a_prompt_of_its_own() {
    let plan = Plan {
        levels: vec![Load::Concurrency { streams: 1 }, Load::Concurrency { streams: 4 }],
        requests: 5,
        runs: 3,
        warmup: 2,
        slo: Slo::default(),
        seed: 0,
    };
    assert_eq!(plan.prompts_needed(), 2 + 2 * 3 * 5);
    let mut used: Vec<usize> = (0..2).collect();
    for level in 0..2 {
        for run in 0..3 {
            used.extend((0..5).map(|i| plan.first_prompt(level, run) + i));
        }
    }
    let n = used.len();
    used.sort_unstable();
    used.dedup();
    assert_eq!((used.len(), n, used.last().copied()), (n, plan.prompts_needed(), Some(plan.prompts_needed() - 1)));
}
