//! The falsifiability audit: every registered check kind is fed a case it must
//! pass and a counterexample it must falsify. A kind missing here fails
//! `every_kind_is_audited`, so no kind ships unable to fail.

use std::time::Duration;

use super::judge::{self, Quantity};
use super::{
    agreement, apr, bricks, contract, cuda, device, exports, layout, meta, perf, reference, resources, serving, top,
    Registry,
};
use crate::bench::{BenchResult, Comparison, Protocol, Series};
use crate::claims::{Outcome, Verdict};
use crate::provenance::Provenance;
use crate::stats::{self, Op, Summary};

type Case = fn() -> (Outcome, Outcome);

fn series(engine: &str, metric: &str, unit: &str, samples: Vec<f64>) -> Series {
    let summary = Summary::of(&samples).unwrap();
    Series { engine: engine.into(), metric: metric.into(), unit: unit.into(), samples, summary }
}

/// A benchmark result where the engine decodes at `ours` tok/s and llama.cpp at 40, with ±1% noise.
fn bench_result(ours: f64, runs: usize) -> BenchResult {
    let jitter = |x: f64| (0..runs).map(|i| x * (1.0 + 0.01 * ((i % 5) as f64 - 2.0) / 2.0)).collect::<Vec<f64>>();
    let s = vec![
        series("falsify", "prefill_tok_s", "tok/s", jitter(ours * 3.0)),
        series("falsify", "decode_tok_s", "tok/s", jitter(ours)),
        series("falsify", "ttft_ms", "ms", jitter(3200.0 / ours)),
        series("falsify", "itl_ms", "ms", jitter(1000.0 / ours)),
        series("falsify", "e2e_ms", "ms", jitter(128_000.0 / ours)),
        series("llama.cpp", "prefill_tok_s", "tok/s", jitter(120.0)),
        series("llama.cpp", "decode_tok_s", "tok/s", jitter(40.0)),
    ];
    let cmp = |m: &str| {
        let a = &s.iter().find(|x| x.engine == "falsify" && x.metric == m).unwrap().samples;
        let b = &s.iter().find(|x| x.engine == "llama.cpp" && x.metric == m).unwrap().samples;
        Comparison {
            metric: m.into(),
            a: "falsify".into(),
            b: "llama.cpp".into(),
            ratio: stats::ratio_of_medians(a, b, 0.95, 2000, 1).unwrap(),
            test: stats::mann_whitney_u(a, b).unwrap(),
        }
    };
    let comparisons = vec![cmp("prefill_tok_s"), cmp("decode_tok_s")];
    BenchResult {
        schema: 1,
        protocol: Protocol { warmup: 1, runs, n_prompt: 32, n_gen: 128, threads: 2, min_sample_ms: 1.0 },
        series: s,
        comparisons,
        engine_load_ms: 100.0,
        engine_peak_rss_bytes: None,
        provenance: Provenance::collect(2, vec![], vec![]),
    }
}

/// A brick profile: 64 tokens, ffn 8 ms and qkv 3 ms per token, everything else 0.1 ms; 30 GB/s.
fn brick_profile() -> crate::bench::bricks::BrickProfile {
    use crate::model::{Brick, BrickTimes};
    let mut times = BrickTimes::default();
    for b in Brick::ALL {
        times.ns[b as usize] = 64 * 100_000;
    }
    times.ns[Brick::Ffn as usize] = 64 * 8_000_000;
    times.ns[Brick::Qkv as usize] = 64 * 3_000_000;
    use crate::bench::bricks::{BrickCost, Compute};
    let mut costs = [BrickCost { bytes: 1_000, ops: 2_000, compute: Compute::F32 }; Brick::ALL.len()];
    costs[Brick::Ffn as usize] = BrickCost { bytes: 225_000_000, ops: 400_000_000, compute: Compute::Int8 }; // 7.5 ms at 30 GB/s
    costs[Brick::Qkv as usize] = BrickCost { bytes: 18_000_000, ops: 32_000_000, compute: Compute::Int8 }; // 0.6 ms
    let wall = times.total() as f64 / 1e6 / 0.98;
    let mut host = crate::bench::roofline::HostProbe::stated(30.0, 200.0, 100.0);
    host.bandwidth_samples = vec![29.0, 29.5, 30.0, 30.5, 31.0];
    let mut decode = times.breakdown(64, wall);
    // Eight windows of eight tokens, each within ±1% of the mean.
    decode.windows = (0..8)
        .map(|i| {
            let jitter = 1.0 + 0.01 * ((i % 5) as f64 - 2.0) / 2.0;
            let us_per_token: Vec<f64> = times.us_per_token(64).iter().map(|us| us * jitter).collect();
            let wall_ms = us_per_token.iter().sum::<f64>() * 8.0 / 1e3 / 0.98;
            crate::model::Window { tokens: 8, wall_ms, us_per_token }
        })
        .collect();
    crate::bench::bricks::BrickProfile {
        model: "0.5b".into(),
        threads: 2,
        host: host.clone(),
        allowance: 1.5,
        decode,
        bricks: crate::bench::bricks::budgets(&costs, &host, 1.5),
        window_bandwidth_gb_s: Vec::new(),
    }
}

/// The stage each brick's span holds in [`traced_pass`], in [`Brick::ALL`](crate::model::Brick::ALL) order.
const STAGE_OF: [crate::model::Stage; 10] = {
    use crate::model::Stage::*;
    [EmbedLookup, AttnNorm, QkvMatmul, RopeRotate, Attend, OMatmul, FfnNorm, Down, OutputNorm, Logits]
};

/// A forward pass through the real stopwatch: each brick's span holds its
/// stage and 150 µs of work, except `untimed`'s stage, which runs (with
/// 1.2 ms of work) outside every span, as a pass that forgot a brick would.
fn traced_pass(times: &mut crate::model::BrickTimes, untimed: Option<crate::model::Brick>) {
    use std::time::Duration;
    let mut sw = crate::model::bricks::Stopwatch::start(Some(times));
    for (b, s) in crate::model::Brick::ALL.into_iter().zip(STAGE_OF) {
        if Some(b) == untimed {
            sw.end();
            sw.stage(s);
            std::thread::sleep(Duration::from_micros(1200));
        } else {
            sw.begin(b);
            sw.stage(s);
            std::thread::sleep(Duration::from_micros(150));
        }
    }
    sw.finish();
}

/// [`brick_profile`] with its decode replaced by 16 [`traced_pass`]es sampled by the profiler's own windows.
fn traced_profile(untimed: Option<crate::model::Brick>) -> crate::bench::bricks::BrickProfile {
    let decode = crate::bench::bricks::sample_windows(
        16,
        |t| {
            traced_pass(t, untimed);
            Ok::<(), ()>(())
        },
        || {},
    )
    .unwrap();
    crate::bench::bricks::BrickProfile { decode, ..brick_profile() }
}

/// A bottleneck selector that ranks by ratio (actual ÷ budget): the selection `falsify top` used to ship.
fn by_ratio(p: &crate::bench::bricks::BrickProfile) -> Option<(&str, f64)> {
    p.decode
        .bricks
        .iter()
        .zip(&p.bricks)
        .filter(|(_, b)| b.budget_us > 0.0)
        .map(|(a, b)| (a.name.as_str(), a.us_per_token / b.budget_us))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// `falsify top`'s headless document on the tiny model: 16 tokens decoded by
/// the live decoder (their wall times replaced by `walls`, cycled, unless
/// empty), budgets from `probe`, windows of 2 tokens, and `quality`.
fn top_report(
    probe: crate::bench::roofline::HostProbe,
    walls: &[f64],
    quality: crate::top::quality::Quality,
) -> crate::top::headless::TopReport {
    use crate::top::headless::{report, HeadlessOptions};
    let m = crate::model::tests::tied_model();
    let session = crate::top::Session::new(&m, "tiny.gguf", vec![1, 2, 3], 8, probe, 1.5);
    let mut d = crate::top::live::Decoder::new(&m, &session.prompt, 8).unwrap();
    let mut rec = crate::top::live::Recorder::new(64);
    for i in 0..16 {
        let mut s = d.step().unwrap();
        if !walls.is_empty() {
            s.wall_us = walls[i % walls.len()];
        }
        rec.push(s);
    }
    report(&session, &rec, &HeadlessOptions { tokens: 16, warmup: 0, throughput_window: 2, strict: false }, quality)
}

/// The project's quality figures as `falsify top --quality` takes them here (clippy and coverage stated).
fn full_quality() -> crate::top::quality::Quality {
    use crate::top::quality::Measured;
    let mut q = crate::top::quality::measure(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), false);
    q.clippy_warnings = Measured { value: Some(0), how: "stated".into() };
    q.coverage_percent = Measured { value: Some(80.0), how: "stated".into() };
    q
}

fn bench_params(metric: &str, op: &str, threshold: f64) -> perf::BenchParams {
    super::parse(
        &toml::from_str(&format!("model = \"0.5b\"\nmetric = \"{metric}\"\nop = \"{op}\"\nthreshold = {threshold:?}"))
            .unwrap(),
    )
    .unwrap()
}

/// Two stub servers' streams measured by the benchmark protocol itself, a against b.
fn streamed_bench(a: (&str, Duration), b: (&str, Duration)) -> BenchResult {
    use crate::load::subject::Streamed;
    let endpoint = |(name, gap): (&str, Duration)| {
        crate::engines::Endpoint::at(name, &crate::load::stub::start(Duration::from_millis(5), gap).base, "m")
    };
    let (ea, eb) = (endpoint(a), endpoint(b));
    let p = Protocol { warmup: 0, runs: 5, n_prompt: 8, n_gen: 12, threads: 1, min_sample_ms: 1.0 };
    let provenance = Provenance::collect(1, vec![], vec![]);
    crate::bench::compare(&Streamed::new(&ea), Some(&Streamed::new(&eb)), 0.0, &p, provenance, |_, _| {}).unwrap()
}

fn of() -> perf::BenchOf {
    perf::BenchOf { model: "0.5b".into(), a: "falsify".into(), b: "llama.cpp".into(), prompt: 32, gen: 128 }
}

/// An `strace -c` summary with `futex` and `mmap` calls, as strace 6 prints it.
fn strace_summary(futex: u64, mmap: u64) -> String {
    format!(
        "% time     seconds  usecs/call     calls    errors syscall\n\
         ------ ----------- ----------- --------- --------- ----------------\n\
         \x20 90.00    0.009000          12 {futex:>9}        15 futex\n\
         \x20 10.00    0.001000           3 {mmap:>9}           mmap\n\
         ------ ----------- ----------- --------- --------- ----------------\n\
         100.00    0.010000           9 {:>9}        15 total\n",
        futex + mmap
    )
}

/// The tiny synthetic model (vocabulary `A`…`n`, end token `<|end|>`) and its tokenizer.
fn tiny() -> (crate::model::Model, crate::tokenizer::Tokenizer) {
    let m = crate::model::tests::tied_model();
    let tok = crate::tokenizer::Tokenizer::from_header(&m.file.header).unwrap();
    (m, tok)
}

/// Strings the tiny tokenizer covers.
fn tiny_corpus() -> Vec<String> {
    ["ABC", "FACE", "deaf", "high", "BADCAB"].map(String::from).to_vec()
}

/// Logits of every position of `seq` through `m`, from an empty cache.
fn all_logits(m: &crate::model::Model, seq: &[u32]) -> Vec<f32> {
    m.forward(seq, &mut m.new_cache(seq.len()), crate::model::Logits::All).unwrap()
}

/// `s` without its last character: a tokenizer that drops a byte sees this.
fn drop_last(s: &str) -> &str {
    s.char_indices().last().map_or(s, |(i, _)| &s[..i])
}

fn rate_params(min_rate: f64, min_cases: usize) -> agreement::RateParams {
    agreement::RateParams { model: "tiny".into(), min_rate, min_cases, tokens: 8 }
}

/// `n` tokens after `prompt` on the tiny model, each chosen by `pick` from the logits.
fn decode_with(m: &crate::model::Model, prompt: &[u32], n: usize, pick: fn(&[f32]) -> u32) -> Vec<u32> {
    let mut cache = m.new_cache(prompt.len() + n);
    let mut logits = m.forward(prompt, &mut cache, crate::model::Logits::Last).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = pick(&logits);
        out.push(t);
        logits = m.forward(&[t], &mut cache, crate::model::Logits::Last).unwrap();
    }
    out
}

/// The token a model whose top-1 is wrong picks: the runner-up.
fn second_best(row: &[f32]) -> u32 {
    let best = crate::sample::argmax(row) as usize;
    let mut masked = row.to_vec();
    masked[best] = f32::NEG_INFINITY;
    crate::sample::argmax(&masked)
}

/// A context holding only the given sample series, as a run's measuring checks record them.
fn context_with(series: &[(&str, &str, usize, Vec<f64>)]) -> crate::claims::Context {
    let mut cx = crate::claims::Context::new(std::env::temp_dir(), crate::record::Settings::default());
    cx.progress = false;
    for (name, unit, warmup, samples) in series {
        cx.record_series(*name, unit, *warmup, samples);
    }
    cx
}

/// `n` samples around `x` with a ±`spread` relative wobble and every `every`-th one `tail` times `x`.
fn wobble(x: f64, n: usize, spread: f64, every: usize, tail: f64) -> Vec<f64> {
    (0..n)
        .map(|i| {
            if every > 0 && i % every == every - 1 {
                x * tail
            } else {
                x * (1.0 + spread * ((i % 7) as f64 - 3.0) / 3.0)
            }
        })
        .collect()
}

/// `bench_quality` run as the registry runs it, over the series in `cx`.
fn quality(metric: perf::QualityMetric, op: Op, threshold: f64, cx: &mut crate::claims::Context) -> Outcome {
    use super::Check;
    let p = perf::QualityParams { benches: Vec::new(), metric, op, threshold };
    perf::BenchQuality::run(&p, cx).unwrap()
}

/// A `serving` claim at concurrency 2: 3 runs of 4 requests, 8 prompt and 3 output tokens.
fn serving_params(metric: serving::ServingMetric, op: Op, threshold: f64) -> serving::ServingParams {
    serving::ServingParams {
        model: "0.5b".into(),
        a: "a".into(),
        b: "b".into(),
        concurrency: 2,
        b_concurrency: None,
        requests: Some(4),
        runs: 3,
        prompt: 8,
        gen: 3,
        slo: crate::load::metrics::Slo::default(),
        metric,
        op,
        threshold,
    }
}

/// One kernel as ptxas and cuobjdump would report it on sm_90, for the CUDA audits.
fn kernel_build(name: &'static str, registers: u32, block: u32, int8_dots: usize) -> cuda::KernelBuild {
    let arch = crate::kernels::cuda::Arch::named("sm_90").unwrap();
    let kernel =
        crate::kernels::cuda::Kernel { name, unit: "gemv", block, gemv: name.starts_with("gemv"), params: &[] };
    let resources = crate::kernels::cuda::Resources {
        kernel: name.into(),
        registers,
        ..crate::kernels::cuda::Resources::default()
    };
    cuda::KernelBuild { arch, kernel, resources: Some(resources), int8_dots: Some(int8_dots) }
}

/// The gemv unit compiled for sm_90: PTX defining every kernel of the unit, or `error`.
fn unit_build(error: Option<&str>) -> Vec<cuda::UnitBuild> {
    use crate::kernels::cuda::{Arch, KERNELS};
    let ptx: String =
        KERNELS.iter().filter(|k| k.unit == "gemv").map(|k| format!(".visible .entry {}(\n", k.name)).collect();
    let arch = Arch::named("sm_90").unwrap();
    vec![cuda::UnitBuild { arch, unit: "gemv".into(), ptx: error.map_or(Ok(ptx), |e| Err(e.to_owned())) }]
}

/// A process that exited with `code`, printing `stderr`.
fn exit(code: i32, stderr: &str) -> resources::Exit {
    resources::Exit { code: Some(code), signal: None, stderr: stderr.into() }
}

fn audit_cases() -> Vec<(&'static str, Case)> {
    vec![
        ("cuda_compile", || {
            // A unit with a syntax error: NVRTC's log instead of PTX.
            let kernels = crate::kernels::cuda::KERNELS;
            let broken = unit_build(Some("gemv.cu(40): error: expected a \";\""));
            (cuda::judge_compile(&unit_build(None), &kernels), cuda::judge_compile(&broken, &kernels))
        }),
        ("cuda_compile", || {
            // PTX that compiled but lacks a kernel the table launches.
            let kernels = crate::kernels::cuda::KERNELS;
            let mut missing = unit_build(None);
            missing[0].ptx = missing[0].ptx.clone().map(|p| p.replace(".entry gemv_q6_k(", ".entry gemv_q6_k_v2("));
            (cuda::judge_compile(&unit_build(None), &kernels), cuda::judge_compile(&missing, &kernels))
        }),
        ("cuda_sass", || {
            // A GEMV written without dp4a: no IDP4A in its SASS.
            let good = [kernel_build("gemv_q4_k", 40, 128, 16), kernel_build("gemv_q8_0", 32, 128, 8)];
            let plain = [kernel_build("gemv_q4_k", 40, 128, 0), kernel_build("gemv_q8_0", 32, 128, 8)];
            (cuda::judge_sass(&good), cuda::judge_sass(&plain))
        }),
        ("cuda_registers", || {
            // 255 registers a thread in a 1024-thread block: 261,120 registers, over an SM's 65,536.
            let good = [kernel_build("argmax", 24, 1024, 0), kernel_build("gemv_q4_k", 40, 128, 16)];
            let over = [kernel_build("argmax", 255, 1024, 0), kernel_build("gemv_q4_k", 40, 128, 16)];
            (cuda::judge_registers(&good), cuda::judge_registers(&over))
        }),
        ("cuda_registers", || {
            // Spills to local memory: the kernel did not fit its registers.
            let good = [kernel_build("gemv_q6_k", 48, 128, 16)];
            let mut spilled = [kernel_build("gemv_q6_k", 48, 128, 16)];
            if let Some(r) = spilled[0].resources.as_mut() {
                r.spill_stores = 16;
            }
            (cuda::judge_registers(&good), cuda::judge_registers(&spilled))
        }),
        ("cuda_occupancy", || {
            // 128 registers a thread: 16 of sm_90's 64 warps, 25%.
            let p = cuda::OccupancyParams { archs: vec!["sm_90".into()], op: Op::Ge, threshold: 0.5 };
            let good = [kernel_build("gemv_q4_k", 32, 128, 16), kernel_build("argmax", 32, 1024, 0)];
            let heavy = [kernel_build("gemv_q4_k", 128, 128, 16), kernel_build("argmax", 32, 1024, 0)];
            (cuda::judge_occupancy(&p, &good), cuda::judge_occupancy(&p, &heavy))
        }),
        ("device_step", device::audit::generation),
        ("device_step", device::audit::capture),
        ("device_step", device::audit::replay),
        ("device_step", device::audit::cpu_top1),
        ("device_step", device::audit::launches),
        ("device_step", device::audit::memory),
        ("device_step", device::audit::speedup),
        ("device_step", device::audit::profile),
        ("apr_integrity", apr::audit::integrity),
        ("apr_version", apr::audit::version),
        ("apr_preserved", apr::audit::preserved),
        ("apr_parity", apr::audit::parity),
        ("brick_registry", contract::audit::assertions),
        ("brick_registry", contract::audit::verify),
        ("brick_registry", contract::audit::budgets),
        ("brick_registry", contract::audit::names),
        ("brick_cases", contract::audit::no_panic),
        ("brick_cases", contract::audit::shape_errors),
        ("brick_errors", contract::audit::errors),
        ("brick_reference", contract::audit::reference),
        ("brick_determinism", contract::audit::determinism),
        ("brick_wiring", contract::audit::wiring),
        ("brick_send_sync", contract::audit::send_sync),
        ("bench", || {
            let p = bench_params("decode_ratio", ">=", 2.0);
            (
                perf::judge_bench(&p, &bench_result(100.0, 10)).unwrap(),
                perf::judge_bench(&p, &bench_result(30.0, 10)).unwrap(),
            )
        }),
        ("bench_quality", || {
            // min_runs (F110): one series the run took with too few runs (F038's 5) falsifies it.
            let bench = ("bench 0.5b falsify decode_tok_s", "tok/s", 1, wobble(50.0, 30, 0.01, 0, 1.0));
            let decay = ("context_decay 0.5b position 2048", "tok/s", 0, wobble(30.0, 5, 0.01, 0, 1.0));
            let mut all30 = context_with(std::slice::from_ref(&bench));
            let mut with_decay = context_with(&[bench, decay]);
            (
                quality(perf::QualityMetric::MinRuns, Op::Ge, 30.0, &mut all30),
                quality(perf::QualityMetric::MinRuns, Op::Ge, 30.0, &mut with_decay),
            )
        }),
        ("bench_quality", || {
            // max_cv (F085): a rate series with a 20% wobble among steady ones.
            let steady = ("dot_gflops avx2 q4_k", "GFLOP/s", 0, wobble(40.0, 15, 0.01, 0, 1.0));
            let noisy = ("load_time 0.5b falsify", "tok/s", 0, wobble(30.0, 30, 0.3, 0, 1.0));
            let mut ok = context_with(std::slice::from_ref(&steady));
            let mut bad = context_with(&[steady, noisy]);
            (
                quality(perf::QualityMetric::MaxCv, Op::Lt, 0.05, &mut ok),
                quality(perf::QualityMetric::MaxCv, Op::Lt, 0.05, &mut bad),
            )
        }),
        ("bench_quality", || {
            // max_p99_over_p50 (F086): a latency series whose every 10th sample takes 3×.
            let steady = ("bench 0.5b falsify itl_ms", "ms", 1, wobble(20.0, 300, 0.02, 0, 1.0));
            let tailed = ("load_time 0.5b llama.cpp", "ms", 0, wobble(100.0, 60, 0.02, 10, 3.0));
            let mut ok = context_with(std::slice::from_ref(&steady));
            let mut bad = context_with(&[steady, tailed]);
            (
                quality(perf::QualityMetric::MaxP99OverP50, Op::Lt, 2.0, &mut ok),
                quality(perf::QualityMetric::MaxP99OverP50, Op::Lt, 2.0, &mut bad),
            )
        }),
        ("bench", || {
            // Engines a and b on the real protocol: a server streaming a token every 10 ms against one
            // every 30 ms, then the claim about the slow one. A run stalled by 100 ms decides neither.
            let claim = |a: &str, b: &str| {
                let text = format!("model = \"0.5b\"\na = \"{a}\"\nb = \"{b}\"\nmetric = \"decode_ratio\"\nop = \">=\"\nthreshold = 1.5");
                super::parse::<perf::BenchParams>(&toml::from_str(&text).unwrap()).unwrap()
            };
            let (fast, slow) = (("fast", Duration::from_millis(10)), ("slow", Duration::from_millis(30)));
            (
                perf::judge_bench(&claim("fast", "slow"), &streamed_bench(fast, slow)).unwrap(),
                perf::judge_bench(&claim("slow", "fast"), &streamed_bench(slow, fast)).unwrap(),
            )
        }),
        ("bench", || {
            // ttft_ratio (F036): llama.cpp's 32-token prompt takes 267 ms; ours 32 ms, then 640 ms.
            let p = bench_params("ttft_ratio", "<=", 1.0);
            (
                perf::judge_bench(&p, &bench_result(100.0, 10)).unwrap(),
                perf::judge_bench(&p, &bench_result(5.0, 10)).unwrap(),
            )
        }),
        ("bench", || {
            // itl_p99_over_p50 (F037): every 20th token takes 3× the others.
            let p = bench_params("itl_p99_over_p50", "<=", 1.5);
            let tailed = |every| {
                let mut r = bench_result(50.0, 300);
                let itl = r.series.iter_mut().find(|s| s.metric == "itl_ms").unwrap();
                *itl = series("falsify", "itl_ms", "ms", wobble(20.0, 300, 0.01, every, 3.0));
                r
            };
            (perf::judge_bench(&p, &tailed(0)).unwrap(), perf::judge_bench(&p, &tailed(20)).unwrap())
        }),
        ("bandwidth_fraction", || {
            let p = perf::BandwidthParams { of: of(), op: Op::Ge, threshold: 0.7 };
            let obs = |tps: f64| perf::Roofline {
                decode_tok_s: vec![tps * 0.99, tps, tps * 1.01, tps, tps],
                bytes_per_token: 400_000_000,
                bandwidth_gb_s: vec![60.0, 60.5, 59.5],
                paired: false,
            };
            // 160 tok/s × 400 MB = 64 GB/s over a 60 GB/s probe: the probe under-measured.
            assert_eq!(perf::judge_bandwidth(&p, &obs(160.0)).verdict, Verdict::Error);
            // 151 tok/s: 1.007 of the median, an interval reaching 0.99: within noise, judged on it.
            assert_eq!(perf::judge_bandwidth(&p, &obs(151.0)).verdict, Verdict::Pass);
            // 106 tok/s: 0.707 of the median, but the probe's spread reaches below 0.7.
            assert_eq!(perf::judge_bandwidth(&p, &obs(106.0)).verdict, Verdict::Inconclusive);
            // A host whose bandwidth drifts 40% between rounds, each rate taken with its own pass:
            // every round reads 0.8 of its bandwidth. Unpaired, the drift would leave it undecided.
            let drifting = |paired| perf::Roofline {
                decode_tok_s: vec![100.0, 120.0, 80.0, 110.0, 90.0],
                bytes_per_token: 400_000_000,
                bandwidth_gb_s: vec![50.0, 60.0, 40.0, 55.0, 45.0],
                paired,
            };
            let judged = perf::judge_bandwidth(&p, &drifting(true));
            assert_eq!(judged.verdict, Verdict::Pass, "{}", judged.sentence);
            assert!(judged.evidence.and_then(|e| e.value).is_some_and(|v| (v - 0.8).abs() < 1e-9));
            assert_eq!(perf::judge_bandwidth(&p, &drifting(false)).verdict, Verdict::Inconclusive);
            // Paired, a decode reading half as fast (0.4 of every round's bandwidth) is falsified.
            let slow = perf::Roofline {
                decode_tok_s: drifting(true).decode_tok_s.iter().map(|t| t / 2.0).collect(),
                ..drifting(true)
            };
            assert_eq!(perf::judge_bandwidth(&p, &slow).verdict, Verdict::Falsified);
            (perf::judge_bandwidth(&p, &obs(120.0)), perf::judge_bandwidth(&p, &obs(40.0)))
        }),
        ("dot_gflops", || {
            let q = |x: f64| Quantity::of_samples("dot_gflops", "GFLOP/s", &[x, x * 1.01, x * 0.99, x, x]);
            (judge::quantity(q(40.0), Op::Ge, 25.0), judge::quantity(q(10.0), Op::Ge, 25.0))
        }),
        ("load_time", || {
            let text = "model = \"0.5b\"\nop = \"<=\"\nthreshold = 2.0";
            let p: perf::LoadParams = super::parse(&toml::from_str(text).unwrap()).unwrap();
            let loads =
                |engine: &str, ms: [f64; 5]| perf::Loads { engine: engine.into(), ms: ms.to_vec(), how: "stated" };
            let theirs = loads("llama.cpp", [100.0, 101.0, 99.0, 100.0, 102.0]);
            (
                perf::judge_load(&p, &loads("falsify", [150.0, 151.0, 149.0, 150.0, 152.0]), &theirs, None).unwrap(),
                perf::judge_load(&p, &loads("falsify", [500.0, 501.0, 499.0, 500.0, 502.0]), &theirs, None).unwrap(),
            )
        }),
        ("context_decay", || {
            let p = perf::DecayParams {
                model: "0.5b".into(),
                position: 2048,
                steps: 16,
                samples: 5,
                op: Op::Ge,
                threshold: 0.75,
            };
            let near = [30.0, 30.2, 29.8, 30.1, 29.9];
            (
                perf::judge_decay(&p, &near, &[27.0, 27.1, 26.9, 27.0, 27.2]).unwrap(),
                perf::judge_decay(&p, &near, &[12.0, 12.1, 11.9, 12.0, 12.2]).unwrap(),
            )
        }),
        ("tokenization", || {
            // The reference is the tokenizer itself; the broken one drops each string's last byte.
            let (_, tok) = tiny();
            let corpus = tiny_corpus();
            let compare = |ours: &dyn Fn(&str) -> Vec<u32>| {
                let r = crate::agreement::compare_tokenization(&corpus, ours, |s| Ok(tok.encode(s, true))).unwrap();
                agreement::judge_tokenization(&rate_params(1.0, 5), r)
            };
            (compare(&|s| tok.encode(s, true)), compare(&|s| tok.encode(drop_last(s), true)))
        }),
        ("round_trip", || {
            let (_, tok) = tiny();
            let corpus = tiny_corpus();
            let good = crate::agreement::round_trip_failures(&tok, &corpus);
            let dropping = crate::agreement::trip_failures(&corpus, |s| tok.decode(&tok.encode(drop_last(s), true)));
            (agreement::judge_round_trip(corpus.len(), good), agreement::judge_round_trip(corpus.len(), dropping))
        }),
        ("teacher_forced", || {
            // llama.cpp's choices and top-2 log-probabilities are the tiny model's own; the broken
            // model lowers its best logit at every position, so its top-1 differs.
            use crate::baseline::llama_cpp::{TokenProbs, TopLogprob};
            let (m, tok) = tiny();
            let seq = tok.encode("FACEBAD", true);
            let logits = all_logits(&m, &seq);
            let vocab = m.config.vocab_size;
            let reference: Vec<TokenProbs> = logits
                .chunks_exact(vocab)
                .map(|row| {
                    let z = row.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
                    let (a, b) = (crate::sample::argmax(row), second_best(row));
                    let lp = |id: u32| f64::from(row[id as usize]) - z;
                    TokenProbs {
                        id: a,
                        logprob: lp(a),
                        top_logprobs: vec![TopLogprob { id: a, logprob: lp(a) }, TopLogprob { id: b, logprob: lp(b) }],
                    }
                })
                .collect();
            let forced = |lower: f32| {
                let mut tally = crate::agreement::TeacherForcedTally::default();
                for (i, (row, probs)) in logits.chunks_exact(vocab).zip(&reference).enumerate() {
                    let mut row = row.to_vec();
                    row[probs.id as usize] -= lower;
                    tally.score("FACEBAD", i, &mut row, probs, &tok.end_of_generation);
                }
                agreement::judge_teacher_forced(&rate_params(0.99, seq.len()), &tally.finish())
            };
            (forced(0.0), forced(100.0))
        }),
        ("greedy_text", || {
            // The reference decodes greedily; the broken model's top-1 is its runner-up.
            let (m, tok) = tiny();
            let prompts = ["AB", "CAFE", "hi", "deed"].map(|p| tok.encode(p, true));
            let texts = |pick: fn(&[f32]) -> u32| -> Vec<String> {
                prompts.iter().map(|p| tok.decode(&decode_with(&m, p, 6, pick))).collect()
            };
            let reference = texts(crate::sample::argmax);
            let greedy = |ours: Vec<String>| {
                let differing = crate::agreement::differing_texts(&ours, &reference);
                let r = crate::agreement::GreedyText {
                    total: reference.len(),
                    identical: reference.len() - differing.len(),
                    differences: differing.iter().map(|&i| format!("{:?}: {:?}", reference[i], ours[i])).collect(),
                };
                agreement::judge_greedy(&rate_params(0.9, 4), r, Vec::new())
            };
            (greedy(texts(crate::sample::argmax)), greedy(texts(second_best)))
        }),
        ("chat_template", || {
            let same = vec![("hi".to_owned(), vec![1, 2], vec![1, 2])];
            let differ = vec![("hi".to_owned(), vec![1, 2], vec![1, 3])];
            (agreement::judge_chat(&same), agreement::judge_chat(&differ))
        }),
        ("perplexity", || {
            let p =
                agreement::PerplexityParams { model: "0.5b".into(), ctx: 128, text: "t".into(), max_rel_diff: 0.01 };
            (agreement::judge_perplexity(&p, 10.05, 10.0, None), agreement::judge_perplexity(&p, 10.5, 10.0, None))
        }),
        ("kl_divergence", || {
            // llama.cpp's distributions are the tiny model's own, stored as llama-perplexity
            // stores them (2 chunks of 8 tokens, rows for positions 4..=6); the broken engine's
            // logits are off by up to ±2 at every position. Both go through the real KL sum.
            use crate::baseline::kl_base::{self, KlBase, LogProbRow};
            let (m, _) = tiny();
            let vocab = m.config.vocab_size;
            let ctx = 8;
            let tokens: Vec<u32> = (0..2 * ctx).map(|i| (i * 7 % vocab) as u32).collect();
            let rows: Vec<LogProbRow> = tokens
                .chunks(ctx)
                .flat_map(|c| {
                    let l = all_logits(&m, c);
                    (ctx / 2..ctx - 1).map(move |pos| LogProbRow::quantize(&l[pos * vocab..(pos + 1) * vocab]))
                })
                .collect();
            let bytes = kl_base::encode(ctx, vocab, &tokens, &rows);
            let p = agreement::KlParams { model: "0.5b".into(), ctx, text: "t".into(), chunks: None, threshold: 0.01 };
            let kl = |shift: f32| {
                let mut base = KlBase::read(std::io::Cursor::new(&bytes[..]), bytes.len() as u64).unwrap();
                let r = crate::agreement::kl_of(&mut base, None, |c| {
                    let mut l = all_logits(&m, c);
                    l.iter_mut().enumerate().for_each(|(i, x)| *x += shift * ((i % 5) as f32 - 2.0));
                    Ok(l)
                })
                .unwrap();
                agreement::judge_kl(&p, &r, None)
            };
            (kl(0.0), kl(1.0))
        }),
        ("kv_consistency", || {
            let p = agreement::KvParams { model: "0.5b".into(), tolerance: 1e-3, sum_order: Default::default() };
            (agreement::judge_kv(&p, Ok(1e-5), 16), agreement::judge_kv(&p, Ok(0.5), 16))
        }),
        ("fast_vs_reference", || {
            // The real comparison on a small model: its fast kernels, then kernels whose
            // RoPE, SwiGLU and attention are off by 2^-7 (a last-bit error would be
            // absorbed by the f16 cache and the 8-bit activations: the logits stay equal).
            let p = agreement::ToleranceParams { model: "0.5b".into(), tolerance: 0.0 };
            let mut m = crate::model::tests::tied_model();
            let tokens = [3u32, 17, 42, 5, 9, 30, 1, 44];
            let fast = crate::agreement::fast_vs_reference(&mut m, &tokens).unwrap();
            m.kernels = crate::kernels::Kernels::flip_bit(16);
            let broken = crate::agreement::fast_vs_reference(&mut m, &tokens).unwrap();
            (agreement::judge_fast(&p, &fast, "fast"), agreement::judge_fast(&p, &broken, "flip-bit"))
        }),
        ("kv_precision", || {
            // f16 against f32 KV on the tiny model; the broken cache keeps no precision at all:
            // every position sees only its own token.
            let (mut m, tok) = tiny();
            let seq = tok.encode("FACEBADhigh", true);
            let vocab = m.config.vocab_size;
            let run = |m: &mut crate::model::Model, ty| {
                m.kv_type = ty;
                all_logits(m, &seq)
            };
            let full = run(&mut m, crate::model::KvType::F32);
            let f16 = run(&mut m, crate::model::KvType::F16);
            let lost: Vec<f32> = seq.iter().flat_map(|&t| all_logits(&m, &[t])).collect();
            let p = rate_params(0.995, seq.len());
            (
                agreement::judge_kv_precision(&p, &crate::agreement::top1_agreement(&full, &f16, vocab)),
                agreement::judge_kv_precision(&p, &crate::agreement::top1_agreement(&full, &lost, vocab)),
            )
        }),
        ("causal_mask", || {
            // The broken mask lets each position see the next token: its row mixes in the next one's.
            let (m, tok) = tiny();
            let seq = tok.encode("FACEBAD", true);
            let vocab = m.config.vocab_size;
            let good = crate::agreement::causal_mask_violations(&m, &seq, 10).unwrap();
            let leaky = crate::agreement::causal_violations(vocab, &seq, 10, |s| {
                let mut rows = all_logits(&m, s);
                for i in 0..s.len() - 1 {
                    let next = rows[(i + 1) * vocab..(i + 2) * vocab].to_vec();
                    rows[i * vocab..(i + 1) * vocab].iter_mut().zip(next).for_each(|(a, b)| *a += 0.5 * b);
                }
                Ok(rows)
            })
            .unwrap();
            (agreement::judge_causal(seq.len(), good), agreement::judge_causal(seq.len(), leaky))
        }),
        ("finite_logits", || {
            // The broken decoder's logits hold a NaN from its fifth step on.
            let (m, tok) = tiny();
            let prompt = tok.encode("CAFE", true);
            let good = crate::agreement::non_finite_steps(&m, &prompt, 12).unwrap();
            let mut cache = m.new_cache(prompt.len() + 12);
            let first = m.forward(&prompt, &mut cache, crate::model::Logits::Last).unwrap();
            let mut steps = 0;
            let nan = crate::agreement::non_finite_of(first, 12, |t| {
                steps += 1;
                let mut row = m.forward(&[t], &mut cache, crate::model::Logits::Last)?;
                if steps >= 5 {
                    row[7] = f32::NAN;
                }
                Ok(row)
            })
            .unwrap();
            (agreement::judge_finite(12, good), agreement::judge_finite(12, nan))
        }),
        ("reproducible", || {
            let same = vec![("twice".to_owned(), vec![1, 2, 3], vec![1, 2, 3])];
            let differ = vec![("twice".to_owned(), vec![1, 2, 3], vec![1, 4, 3])];
            (agreement::judge_identical(&same), agreement::judge_identical(&differ))
        }),
        ("quant_reference", || {
            let (input, expected) = (
                include_bytes!("../../../tests/fixtures/quant/random_Q4_K.in").as_slice(),
                include_bytes!("../../../tests/fixtures/quant/random_Q4_K.out").as_slice(),
            );
            let mut corrupted = expected.to_vec();
            corrupted[10] ^= 1;
            let ty = crate::gguf::TensorType::Q4K;
            let n = expected.len() / 4;
            (
                reference::judge_quant(&[(
                    "random_Q4_K".into(),
                    n,
                    reference::dequant_mismatches(ty, input, expected),
                )]),
                reference::judge_quant(&[(
                    "random_Q4_K".into(),
                    n,
                    reference::dequant_mismatches(ty, input, &corrupted),
                )]),
            )
        }),
        ("op_reference", || {
            // The engine's RoPE kernel, then one whose every output differs in the last bit.
            let (op, engine) = (reference::Op::Rope, reference::Subject::engine());
            let broken = reference::Subject { kernels: crate::kernels::Kernels::flip_bit(0), ..engine };
            (
                reference::judge_op(op, engine.kernels, reference::op_violations(op, engine, 500, 1)),
                reference::judge_op(op, broken.kernels, reference::op_violations(op, broken, 500, 1)),
            )
        }),
        ("alloc_per_token", || {
            let p = resources::DecodeParams { model: "0.5b".into(), warmup: 1, steps: 64, op: Op::Le, threshold: 0.0 };
            let s = |allocations| stats_alloc::Stats { allocations, ..Default::default() };
            (resources::judge_allocs(&p, &s(0)), resources::judge_allocs(&p, &s(640)))
        }),
        ("memory_growth", || {
            let p = resources::DecodeParams { model: "0.5b".into(), warmup: 1, steps: 900, op: Op::Le, threshold: 0.0 };
            let s = |a, d| stats_alloc::Stats { bytes_allocated: a, bytes_deallocated: d, ..Default::default() };
            // A Vec that grew by reallocation and was freed: its growth is in both counters.
            let regrown = stats_alloc::Stats { bytes_reallocated: 4096, ..s(5096, 5096) };
            assert_eq!(resources::judge_growth(&p, &regrown).verdict, Verdict::Pass);
            (resources::judge_growth(&p, &s(1000, 1000)), resources::judge_growth(&p, &s(90_000, 1000)))
        }),
        ("kv_memory", || {
            // The engine's paged cache, then one that commits every page up front
            // (bytes), and one that stores f32 when asked for f16 (budget), on the small model.
            let m = crate::model::tests::tied_model();
            let c = m.config.clone();
            let engine = |ty, n| crate::model::KvCache::new(ty, c.n_layer, c.kv_dim(), n);
            let up_front = |ty, n| {
                let mut cache = crate::model::KvCache::new(ty, c.n_layer, c.kv_dim(), n);
                let zeros = vec![0.0; n * c.kv_dim()];
                (0..c.n_layer).for_each(|l| cache.write(l, 0, &zeros, &zeros).unwrap());
                cache
            };
            let f32_always = |_, n| crate::model::KvCache::new(crate::model::KvType::F32, c.n_layer, c.kv_dim(), n);
            let p = |metric, op, threshold| resources::KvMemoryParams {
                model: "0.5b".into(),
                metric,
                positions: 128,
                min_agreement: Some(0.9),
                op,
                threshold,
            };
            let bytes = p(resources::KvMetric::F16BytesRatio, Op::Le, 0.5);
            let committed = |new: resources::NewCache| resources::kv_committed_bytes(new, 1024, 128).unwrap();
            assert_eq!(resources::judge_kv_bytes(&bytes, &committed(&engine)).verdict, Verdict::Pass);
            assert_eq!(resources::judge_kv_bytes(&bytes, &committed(&up_front)).verdict, Verdict::Falsified);
            let tokens: Vec<u32> = (0..256).map(|i| (i * 7 + 3) % 47).collect();
            let mut fill = |cache: &mut crate::model::KvCache, until, from| {
                resources::fill_by_forward(&m, &tokens, cache, until, from)
            };
            let budget = p(resources::KvMetric::ContextRatioAtBudget, Op::Ge, 2.0);
            let run = |new: resources::NewCache, fill: resources::Fill| {
                resources::kv_budget_run(new, 128, 0.9, fill).unwrap()
            };
            let (good, broken) = (run(&engine, &mut fill), run(&f32_always, &mut fill));
            assert_eq!(broken.filled, 256, "{broken:?}");
            (resources::judge_kv_budget(&budget, &good), resources::judge_kv_budget(&budget, &broken))
        }),
        ("same_fill_scan", || {
            // The engine's detector on a small model's real pages, then one that
            // compares only the first and last words of a page.
            use super::kv_pages::{self as kp, Residency};
            let m = crate::model::tests::tied_model();
            let tokens: Vec<u32> = (0..64).map(|i| (i * 7 + 3) % 47).collect();
            let (pages, page) = kp::real_pages(&m, &tokens, 64).unwrap();
            let p = kp::ScanParams {
                model: "0.5b".into(),
                positions: 64,
                residency: Residency::L2,
                samples: 3,
                op: Op::Gt,
                threshold: 0.01,
            };
            let ends: kp::Detector = |b| {
                let first = u64::from_ne_bytes(b.get(..8)?.try_into().ok()?);
                (u64::from_ne_bytes(b[b.len() - 8..].try_into().ok()?) == first).then_some(first)
            };
            let good = kp::scan(crate::model::kv_pages::same_fill, &pages, page, Residency::L2, 3);
            assert!(good.pages.1 > 0 && good.pages.1 < good.pages.0, "{good:?}");
            let bad = kp::scan(ends, &pages, page, Residency::L2, 3);
            (kp::judge_scan(&p, &good, None), kp::judge_scan(&p, &bad, None))
        }),
        ("kv_compression", || {
            // A generation under a budget, then one whose compressor flips a bit in a page.
            use super::kv_pages as kp;
            let m = crate::model::tests::tied_model();
            let prompt: Vec<u32> = (0..70).map(|i| (i * 7 + 3) % 47).collect();
            let p = kp::CompressionParams {
                model: "0.5b".into(),
                prompt: String::new(),
                tokens: 60,
                budget_fraction: 0.5,
                op: Op::Gt,
                threshold: 1.0,
            };
            let good = kp::compression_run(&m, &prompt, 60, 0.5, &mut |_| {}).unwrap();
            assert!(good.usage.compressed_pages > 0, "{good:?}");
            let flipped = kp::compression_run(&m, &prompt, 60, 0.5, &mut |c| {
                c.flip_a_compressed_bit();
            })
            .unwrap();
            (kp::judge_compression(&p, &good), kp::judge_compression(&p, &flipped))
        }),
        ("attention_memory", || {
            // The engine's prefill attention, then one that first materializes every head's seq² scores.
            let (heads, p) = (resources::QWEN_0_5B_HEADS, resources::AttentionParams { context: 256, divisor: 10.0 });
            let engine = resources::engine_attention(heads, 2);
            let naive = |q: &[f32], cache: &crate::model::KvCache, out: &mut [f32]| {
                let n = cache.len();
                let mut scores = vec![0.0f32; heads.query * n * n];
                for (i, s) in scores.iter_mut().enumerate() {
                    let (h, t, pos) = (i / (n * n), i / n % n, i % n);
                    *s = q[(t * heads.query + h) * heads.dim] * pos as f32;
                }
                std::hint::black_box(&scores);
                engine(q, cache, out);
            };
            let measure =
                |attend: resources::Attend| resources::attention_heap_bytes(attend, heads, p.context).unwrap();
            (
                resources::judge_attention(&p, heads.query, measure(&engine)),
                resources::judge_attention(&p, heads.query, measure(&naive)),
            )
        }),
        ("memory_limit", || {
            let p = resources::LimitParams { model: "0.5b".into(), from_mib: 256, to_mib: 1024, step_mib: 256 };
            let exit = |code, signal, stderr: &str| resources::Exit { code, signal, stderr: stderr.into() };
            let clean = exit(Some(1), None, "error: cannot map the model\n");
            let abort = exit(None, Some(6), "memory allocation of 4096 bytes failed\n");
            let ran = exit(Some(0), None, "");
            assert_eq!(
                resources::judge_limits(&p, &[(256, ran.clone())]).verdict,
                Verdict::Falsified,
                "a lowest limit that is not below the need proves nothing"
            );
            (
                resources::judge_limits(&p, &[(256, clean.clone()), (512, clean.clone()), (768, ran)]),
                resources::judge_limits(&p, &[(256, clean), (512, abort)]),
            )
        }),
        ("syscalls_per_token", || {
            // The real parsing and judging of strace -c summaries from a quiet
            // subject (a constant futex count) and a stormy one (80 per token).
            let p = resources::SyscallParams {
                model: "0.5b".into(),
                syscalls: vec!["futex".into(), "mmap".into()],
                repeats: 5,
                op: Op::Le,
                threshold: 2.0,
            };
            let mut quiet = |n: usize| Ok(strace_summary(120 + n as u64 / 16, 40));
            let mut storm = |n: usize| Ok(strace_summary(120 + 80 * n as u64, 40));
            let calls = |trace: &mut dyn FnMut(usize) -> Result<String, crate::claims::Unmet>| {
                resources::traced_calls(&p, trace).unwrap()
            };
            (resources::judge_syscalls(&p, &calls(&mut quiet)), resources::judge_syscalls(&p, &calls(&mut storm)))
        }),
        ("packed_throughput", || {
            // The real interleaved timing of row-by-row Q4_K products (the naive
            // layout) against a subject ten times as fast, then against a
            // "packed" layout that is the naive one again.
            let p = layout::LayoutParams {
                model: "0.5b".into(),
                tensor: "w".into(),
                rounds: 15,
                op: Op::Ge,
                threshold: 3.0,
            };
            let (rows, cols, ty) = (64, 512, crate::gguf::TensorType::Q4K);
            let mut rng = crate::rng::SplitMix64(9);
            let w = crate::testing::random_weights(&mut rng, ty, rows * cols, 1.0, 0.01);
            let a = crate::testing::random_weights(&mut rng, crate::gguf::TensorType::Q8K, cols, 1.0, 0.01);
            let k = crate::kernels::Kernels::detect();
            let (row_bytes, w, a) = (w.len() / rows, &w, &a);
            let by_rows = |reps: usize| {
                move || {
                    for _ in 0..reps {
                        for r in w.chunks_exact(row_bytes) {
                            std::hint::black_box(k.dot(ty, r, a));
                        }
                    }
                }
            };
            let (mut once, mut tenfold) = (by_rows(1), by_rows(10));
            let (fast, slow) = layout::interleaved_rates(rows, p.rounds, &mut once, &mut tenfold);
            let (same, naive) = layout::interleaved_rates(rows, p.rounds, &mut once, &mut by_rows(1));
            (layout::judge_layout(&p, &fast, &slow), layout::judge_layout(&p, &same, &naive))
        }),
        ("backend_choice", || {
            let (failed, ok) = (exit(1, "error: --backend cuda: no usable CUDA device: no CUDA driver"), exit(0, ""));
            let cpu = [None, Some("cpu")];
            (resources::judge_backend(&failed, &ok, cpu, None), resources::judge_backend(&ok, &ok, cpu, None))
        }),
        ("backend_choice", || {
            // `auto` succeeding on a backend that cannot run here is no fallback.
            let (failed, ok) = (exit(1, "error: --backend cuda: no usable CUDA device: no CUDA driver"), exit(0, ""));
            let (cpu, cuda) = ([None, Some("cpu")], [None, Some("cuda")]);
            (resources::judge_backend(&failed, &ok, cpu, None), resources::judge_backend(&failed, &ok, cuda, None))
        }),
        ("backend_choice", || {
            // With a device present, `cuda` falling back to the CPU is no device run.
            let ok = exit(0, "");
            let (on_device, fell_back) = ([Some("cuda"), Some("cuda")], [Some("cpu"), Some("cuda")]);
            let h200 = Some("NVIDIA H200");
            (resources::judge_backend(&ok, &ok, on_device, h200), resources::judge_backend(&ok, &ok, fell_back, h200))
        }),
        ("backend_choice", || {
            // A panic is not a clear failure.
            let clear = exit(1, "error: --backend cuda: no usable CUDA device: the CUDA driver sees no device");
            let panicked = exit(101, "thread 'main' panicked: --backend cuda error: Unable to dynamically load");
            let ok = exit(0, "");
            let cpu = [None, Some("cpu")];
            (resources::judge_backend(&clear, &ok, cpu, None), resources::judge_backend(&panicked, &ok, cpu, None))
        }),
        ("peak_rss", || {
            let p = resources::RssParams { model: "0.5b".into(), tokens: 64, op: Op::Le, threshold: 1.1 };
            (resources::judge_rss(&p, 500, 480, 10), resources::judge_rss(&p, 900, 480, 10))
        }),
        ("regression", || {
            let old = bench_result(50.0, 10);
            let same = crate::bench::compare_results(&old, &bench_result(50.0, 10), 0.05, 0.02).unwrap();
            let slower = crate::bench::compare_results(&old, &bench_result(40.0, 10), 0.05, 0.02).unwrap();
            (meta::judge_regression(same.len(), &same), meta::judge_regression(slower.len(), &slower))
        }),
        ("aggregate_score", || {
            // A skipped or pending claim earns nothing and still counts: a run
            // that built or measured half of its claims cannot score 90.
            let p = meta::ScoreParams { op: Op::Ge, threshold: 90.0 };
            (
                meta::judge_score(&p, &[(Verdict::Pass, 10), (Verdict::Falsified, 1)]),
                meta::judge_score(&p, &[(Verdict::Pass, 1), (Verdict::Skipped, 1), (Verdict::Pending, 1)]),
            )
        }),
        ("bricks_timed", || {
            // The real forward pass on the tiny model traces every stage inside a brick;
            // a pass that runs the ffn's stage outside every span is caught by the same trace.
            let m = crate::model::tests::tied_model();
            let host = crate::bench::roofline::HostProbe::stated(10.0, 50.0, 20.0);
            let real = crate::bench::bricks::profile(&m, "tiny", &[1, 2, 3], 8, &host, None).unwrap();
            let broken = traced_profile(Some(crate::model::Brick::Ffn));
            (bricks::judge_timed(&real), bricks::judge_timed(&broken))
        }),
        ("brick_coverage", || {
            let p = bricks::CoverageParams { model: "0.5b".into(), op: Op::Ge, threshold: 0.95 };
            let (full, gap) = (traced_profile(None), traced_profile(Some(crate::model::Brick::Ffn)));
            (bricks::judge_coverage(&p, &full), bricks::judge_coverage(&p, &gap))
        }),
        ("brick_budget", || {
            let p = |factor: f64| bricks::BudgetParams {
                model: "0.5b".into(),
                bricks: vec!["ffn".into(), "qkv".into()],
                roofline_factor: Some(factor),
                budget_us: None,
            };
            // ffn + qkv take 8 + 3 = 11 ms per token (±1% across windows) against rooflines of 7.5 + 0.6 = 8.1 ms.
            let (roomy, tight, straddling) = (p(1.5), p(1.2), p(11.0 / 8.1));
            let prof = brick_profile();
            assert_eq!(bricks::judge_budget(&straddling, &prof, 24).unwrap().verdict, Verdict::Inconclusive);
            (bricks::judge_budget(&roomy, &prof, 24).unwrap(), bricks::judge_budget(&tight, &prof, 24).unwrap())
        }),
        ("bottleneck", || {
            // The 0.1 ms bricks are 2000× over their 0.05 µs budgets but lose 0.1 ms each; qkv, 3.3×,
            // loses 2.1 ms per token.
            let p = brick_profile();
            assert_eq!((by_ratio(&p).unwrap().0, p.bottleneck().unwrap().0), ("lm_head", "qkv"));
            let (n, ok) = bricks::bottleneck_violations(&p, crate::bench::bricks::BrickProfile::bottleneck);
            let (m, bad) = bricks::bottleneck_violations(&p, by_ratio);
            (judge::no_violations("b", n, ok), judge::no_violations("b", m, bad))
        }),
        ("report_schema", || {
            let good = serde_json::to_value(crate::record::tests::sample_report()).unwrap();
            let mut bad = good.clone();
            bad["summary"]["grade"] = "A+".into();
            (exports::judge_schema(&good), exports::judge_schema(&bad))
        }),
        ("svg_valid", || {
            let r = crate::record::tests::sample_report();
            let charts = crate::report::chart::all(&r, &[]).unwrap();
            let mut broken = charts.clone();
            broken[0].svg = broken[0].svg.replacen("viewBox", "viewbox", 1);
            let need = ["bricks".to_owned()];
            let mut no_bricks = r.clone();
            no_bricks.bricks = None;
            let empty = crate::report::chart::all(&no_bricks, &[]).unwrap();
            assert_eq!(exports::judge_svgs(&empty, &need).verdict, Verdict::Falsified);
            (exports::judge_svgs(&charts, &need), exports::judge_svgs(&broken, &need))
        }),
        ("chart_values", || {
            // The broken ratio chart plots each claim's CI upper end instead of its value.
            let r = crate::record::tests::sample_report();
            let charts = crate::report::chart::all(&r, &[]).unwrap();
            let mut wrong_field = r.clone();
            for e in wrong_field.claims.iter_mut().filter_map(|c| c.outcome.evidence.as_mut()) {
                e.value = e.ci.map(|ci| ci.hi).or(e.value);
            }
            let broken = crate::report::chart::all(&wrong_field, &[]).unwrap();
            (exports::judge_chart_values(&charts, &r), exports::judge_chart_values(&broken, &r))
        }),
        ("chart_values", || {
            // The broken throughput chart plots each series' median where the report's mean belongs.
            let r = crate::record::tests::sample_report();
            let mut wrong_field = r.clone();
            for s in wrong_field.benches.iter_mut().flat_map(|b| b.result.series.iter_mut()) {
                s.summary.mean = s.summary.p90;
            }
            let broken = crate::report::chart::all(&wrong_field, &[]).unwrap();
            let good = crate::report::chart::all(&r, &[]).unwrap();
            (exports::judge_chart_values(&good, &r), exports::judge_chart_values(&broken, &r))
        }),
        ("exports", || {
            let r = crate::record::tests::sample_report();
            let dir = std::env::temp_dir().join(format!("falsify-audit-exports-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            exports::write_all(&dir, &r).unwrap();
            let (n, ok) = exports::export_violations(&dir, &r);
            let good = judge::no_violations("unparsable_exports", n, ok);
            std::fs::write(dir.join("report.csv"), "id,verdict\nF1\n").unwrap();
            std::fs::write(dir.join("charts/ratios.svg"), "<svg>").unwrap();
            let (m, bad) = exports::export_violations(&dir, &r);
            assert_eq!(bad.len(), 2, "{bad:?}");
            std::fs::remove_dir_all(&dir).unwrap();
            (good, judge::no_violations("unparsable_exports", m, bad))
        }),
        ("report_metric", || {
            let r = crate::record::tests::sample_report();
            let p = exports::MetricParams { metric: "f16_kv_bytes_ratio".into(), from: "F061".into() };
            let mut without = r.clone();
            without.claims[1].outcome.evidence.as_mut().unwrap().metric = "something_else".into();
            let skipped = exports::MetricParams { from: "F030".into(), ..p.clone() };
            assert!(matches!(exports::judge_metric(&r, &skipped), Err(crate::claims::Unmet::Missing(_))));
            (exports::judge_metric(&r, &p).unwrap(), exports::judge_metric(&without, &p).unwrap())
        }),
        ("top_headless", || {
            use crate::top::headless::TopReport;
            let exit = |code| resources::Exit { code: Some(code), signal: None, stderr: "error: boom".into() };
            let p = top::HeadlessParams { model: "0.5b".into(), aspect: "exit".into(), op: None, threshold: None };
            let run = |code, report: Result<TopReport, String>| top::TopRun { exit: exit(code), report };
            let good = top::judge_headless(&p, &run(0, Err("unused".into()))).unwrap();
            (good, top::judge_headless(&p, &run(1, Err("unused".into()))).unwrap())
        }),
        ("top_headless", || {
            // M002: the real parser on the real document, and on stdout with a progress line in front of it.
            let p = top::HeadlessParams { model: "0.5b".into(), aspect: "json".into(), op: None, threshold: None };
            let doc = serde_json::to_vec(&top_report(
                crate::bench::roofline::HostProbe::stated(10.0, 50.0, 20.0),
                &[],
                full_quality(),
            ))
            .unwrap();
            let noisy = [&b"decoding: 50%\n"[..], &doc].concat();
            let run = |stdout: &[u8]| top::TopRun {
                exit: resources::Exit { code: Some(0), signal: None, stderr: String::new() },
                report: top::parse_top(stdout),
            };
            (top::judge_headless(&p, &run(&doc)).unwrap(), top::judge_headless(&p, &run(&noisy)).unwrap())
        }),
        ("top_headless", || {
            // M003: scores from budgets of a sane probe, and of a probe whose bandwidth pass measured 0 GB/s.
            use crate::bench::roofline::HostProbe;
            let p =
                top::HeadlessParams { model: "0.5b".into(), aspect: "brick_scores".into(), op: None, threshold: None };
            let run = |probe| top::TopRun {
                exit: resources::Exit { code: Some(0), signal: None, stderr: String::new() },
                report: Ok(top_report(probe, &[], full_quality())),
            };
            (
                top::judge_headless(&p, &run(HostProbe::stated(10.0, 50.0, 20.0))).unwrap(),
                top::judge_headless(&p, &run(HostProbe::stated(0.0, 50.0, 20.0))).unwrap(),
            )
        }),
        ("top_headless", || {
            // M004: quality measured on this project, and on a directory with no source tree.
            let p = top::HeadlessParams { model: "0.5b".into(), aspect: "quality".into(), op: None, threshold: None };
            let elsewhere = crate::top::quality::measure(std::path::Path::new("/nonexistent"), false);
            let run = |quality| top::TopRun {
                exit: resources::Exit { code: Some(0), signal: None, stderr: String::new() },
                report: Ok(top_report(crate::bench::roofline::HostProbe::stated(10.0, 50.0, 20.0), &[], quality)),
            };
            (top::judge_headless(&p, &run(full_quality())).unwrap(), top::judge_headless(&p, &run(elsewhere)).unwrap())
        }),
        ("top_headless", || {
            // M006: the real report's window CV and its interval, on steady tokens and on tokens that
            // alternate between 1 ms and 1.5 ms every window.
            let p = top::HeadlessParams {
                model: "0.5b".into(),
                aspect: "throughput_cv".into(),
                op: Some(Op::Lt),
                threshold: Some(0.05),
            };
            let run = |walls: &[f64]| top::TopRun {
                exit: resources::Exit { code: Some(0), signal: None, stderr: String::new() },
                report: Ok(top_report(
                    crate::bench::roofline::HostProbe::stated(10.0, 50.0, 20.0),
                    walls,
                    full_quality(),
                )),
            };
            let steady = [1000.0, 1001.0, 999.0, 1000.5, 999.5];
            let jittery = [1000.0, 1000.0, 1500.0, 1500.0];
            // A 4% CV from 8 windows: its interval straddles 5%.
            let borderline = [1000.0, 1000.0, 1080.0, 1080.0];
            assert_eq!(top::judge_headless(&p, &run(&borderline)).unwrap().verdict, Verdict::Inconclusive);
            (top::judge_headless(&p, &run(&steady)).unwrap(), top::judge_headless(&p, &run(&jittery)).unwrap())
        }),
        ("top_ci", || {
            let exit = |code, stderr: &str| resources::Exit { code: Some(code), signal: None, stderr: stderr.into() };
            let failed = exit(1, "error: CI thresholds not met: model brick score 31.8 (F) is below the threshold 101");
            (top::judge_ci(&failed, &exit(0, "")), top::judge_ci(&exit(0, ""), &exit(0, "")))
        }),
        ("tui_render", || {
            let pipeline = |names: &[&str]| {
                vec![("pipeline".to_string(), Ok(names.iter().map(|n| format!("│{n:<12}│ 1.0\n")).collect::<String>()))]
            };
            let all: Vec<&str> = crate::model::Brick::ALL.iter().map(|b| b.name()).collect();
            assert_eq!(top::judge_tui("every_brick", &pipeline(&all)).unwrap().verdict, Verdict::Pass);
            assert_eq!(top::judge_tui("every_brick", &pipeline(&all[1..])).unwrap().verdict, Verdict::Falsified);
            let screens = |drill: &str| {
                vec![("pipeline".to_string(), Ok(String::new())), ("drill-down".to_string(), Ok(drill.to_string()))]
            };
            (
                top::judge_tui("drill_histogram", &screens("p50 1.0 · p99 2.0 · p999 3.0 ███")).unwrap(),
                top::judge_tui("drill_histogram", &screens("p50 1.0 (no histogram)")).unwrap(),
            )
        }),
        ("tui_render", || {
            // M007: every view of the real UI fed real tokens, and a view whose drawing indexes past its rows.
            let m = crate::model::tests::tied_model();
            let probe = crate::bench::roofline::HostProbe::stated(10.0, 50.0, 20.0);
            let session = crate::top::Session::new(&m, "tiny.gguf", vec![1, 2, 3], 8, probe, 1.5);
            let mut d = crate::top::live::Decoder::new(&m, &session.prompt, 8).unwrap();
            let samples: Vec<_> = (0..12).map(|_| d.step().unwrap()).collect();
            let screens = top::tui_screens(&session, &samples);
            let mut broken = screens.clone();
            let rows: Vec<String> = Vec::new();
            broken.push(("overflowing".into(), top::capture(|| rows[3].clone())));
            (top::judge_tui("renders", &screens).unwrap(), top::judge_tui("renders", &broken).unwrap())
        }),
        ("workflow_lint", || {
            let ok = resources::Exit { code: Some(0), signal: None, stderr: String::new() };
            let bad = resources::Exit { code: Some(1), ..ok.clone() };
            let finding = "$.jobs.ci: Additional properties are not allowed ('step' was unexpected)";
            (top::judge_lint(1, &ok, "ok -- validation done"), top::judge_lint(1, &bad, finding))
        }),
        ("score_formula", || {
            let p = |want: f64| top::FormulaParams {
                formula: "brick_score".into(),
                cases: vec![top::Case { inputs: vec![0.4, 0.5, 0.8, 0.9], want }],
                tolerance: 1e-9,
            };
            let ok = top::formula_violations(&p(62.5), top::formula);
            let bad = top::formula_violations(&p(62.5), |_, x| Some(100.0 * x.iter().sum::<f64>() / 4.0));
            (judge::no_violations("f", 1, ok), judge::no_violations("f", 1, bad))
        }),
        ("score_range", || {
            let p = top::RangeParams { part: "compute_efficiency".into(), cases: 2000, seed: 3 };
            let unclamped: fn(f64, f64, f64) -> f64 = |w, t, peak| w / t / peak;
            let ok = top::range_violations(&p, crate::bench::score::efficiency);
            (judge::no_violations("r", 2000, ok), judge::no_violations("r", 2000, top::range_violations(&p, unclamped)))
        }),
        ("roofline_bound", || {
            let p = brick_profile();
            let mut fast = p.clone();
            fast.decode.bricks[crate::model::Brick::Ffn as usize].us_per_token = 1.0; // 225 MB in 1 µs
                                                                                      // 225 MB in 7.45 ms beats 30 GB/s, but not 30.5: within the probe's spread.
            let mut close = p.clone();
            close.decode.bricks[crate::model::Brick::Ffn as usize].us_per_token = 7450.0;
            assert_eq!(top::judge_roofline(&close).verdict, Verdict::Inconclusive);
            // Paired: a host whose bandwidth drifts 40% between windows, each window's ffn
            // reading `fraction` of the bandwidth measured right after it.
            let drifting = |fraction: f64| {
                let mut d = brick_profile();
                d.window_bandwidth_gb_s = vec![24.0, 36.0, 30.0, 27.0, 33.0, 30.0, 25.0, 35.0];
                for (w, bw) in d.decode.windows.iter_mut().zip(d.window_bandwidth_gb_s.clone()) {
                    w.us_per_token[crate::model::Brick::Ffn as usize] = 225e6 / (fraction * bw * 1e9) * 1e6;
                }
                d
            };
            let judged = top::judge_roofline(&drifting(0.9));
            assert_eq!(judged.verdict, Verdict::Pass, "{}", judged.sentence);
            assert!(judged.evidence.and_then(|e| e.value).is_some_and(|v| (v - 0.9).abs() < 1e-9));
            // Paired, an ffn reading 1.2 times every window's bandwidth beats the roofline.
            assert_eq!(top::judge_roofline(&drifting(1.2)).verdict, Verdict::Falsified);
            (top::judge_roofline(&p), top::judge_roofline(&fast))
        }),
        ("budget_derivation", || {
            let p = brick_profile();
            let mut tampered = p.clone();
            tampered.bricks[crate::model::Brick::Qkv as usize].budget_us *= 1.2;
            (
                judge::no_violations("d", 14, top::derivation_violations(&p)),
                judge::no_violations("d", 14, top::derivation_violations(&tampered)),
            )
        }),
        ("token_budget", || {
            let p = top::TokenBudgetParams { cases: 1000, seed: 1 };
            let inverted = top::Conversions { met: |wall, budget| wall >= budget, ..top::Conversions::engine() };
            let rounded = top::Conversions { tok_per_s: |us| (1e6 / us).round(), ..top::Conversions::engine() };
            assert!(!top::token_budget_violations(&p, rounded).is_empty());
            let ok = top::token_budget_violations(&p, top::Conversions::engine());
            let bad = top::token_budget_violations(&p, inverted);
            (judge::no_violations("t", 1000, ok), judge::no_violations("t", 1000, bad))
        }),
        ("strict_mode", || {
            let exceeded = || crate::top::live::BrickError::BudgetExceeded {
                brick: "ffn".into(),
                token: 3,
                budget_us: 10.0,
                actual_us: 20.0,
                hint: "memory-bound".into(),
            };
            let good = top::StrictRuns { real: Ok(16), impossible: Err(exceeded()), generous: Ok(16) };
            let silent = top::StrictRuns { real: Ok(16), impossible: Ok(16), generous: Ok(16) };
            (top::judge_strict("stops", &good).unwrap(), top::judge_strict("stops", &silent).unwrap())
        }),
        ("strict_mode", || {
            // F012: the real strict check on a real token against budgets nobody meets, from the
            // real budget table and from one whose rows lost their brick names.
            use crate::top::live::check_budgets;
            let m = crate::model::tests::tied_model();
            let sample = crate::top::live::Decoder::new(&m, &[1, 2, 3], 8).unwrap().step().unwrap();
            let host = crate::bench::roofline::HostProbe::stated(10.0, 50.0, 20.0);
            let tight = crate::bench::bricks::budgets(&crate::bench::bricks::costs_per_brick(&m, 4), &host, 1e-9);
            let mut nameless = tight.clone();
            nameless.iter_mut().for_each(|b| b.name = format!("#{}", b.name.len()));
            let runs = |budgets: &[crate::bench::bricks::BrickBudget]| top::StrictRuns {
                real: check_budgets(&sample, budgets).map(|()| 1),
                impossible: check_budgets(&sample, budgets).map(|()| 1),
                generous: Ok(1),
            };
            (
                top::judge_strict("actionable", &runs(&tight)).unwrap(),
                top::judge_strict("actionable", &runs(&nameless)).unwrap(),
            )
        }),
        ("token_metrics", || {
            // The live decoder's tokens on the tiny model, and a token from a pass whose rope stage ran
            // outside every brick span.
            use crate::top::live::TokenSample;
            let m = crate::model::tests::tied_model();
            let mut d = crate::top::live::Decoder::new(&m, &[1, 2, 3], 8).unwrap();
            let real: Vec<TokenSample> = (0..6).map(|_| d.step().unwrap()).collect();
            let mut times = crate::model::BrickTimes::default();
            let clock = std::time::Instant::now();
            traced_pass(&mut times, Some(crate::model::Brick::Rope));
            let broken = TokenSample {
                index: 0,
                position: 3,
                wall_us: clock.elapsed().as_secs_f64() * 1e6,
                bricks_us: times.ns.map(|ns| ns as f64 / 1e3),
                trace: times.trace,
            };
            (
                judge::no_violations("m", real.len(), top::metrics_violations(&real)),
                judge::no_violations("m", 1, top::metrics_violations(&[broken])),
            )
        }),
        ("instrumentation_overhead", || {
            let p =
                bricks::OverheadParams { model: "0.5b".into(), tokens: 48, rounds: 12, op: Op::Lt, threshold: 0.01 };
            let cheap: Vec<f64> = (0..12).map(|i| 0.002 + 0.0005 * (i % 3) as f64).collect();
            let costly: Vec<f64> = (0..12).map(|i| 0.04 + 0.001 * (i % 3) as f64).collect();
            (bricks::judge_overhead(&p, &cheap), bricks::judge_overhead(&p, &costly))
        }),
        ("serving", || {
            // The same stub server against itself, then one whose first token comes 5x later; first
            // tokens long enough, and runs enough, that a request stalled by 100 ms decides neither.
            let p =
                serving::ServingParams { runs: 5, ..serving_params(serving::ServingMetric::TtftP99Ratio, Op::Le, 2.0) };
            let fast = crate::load::stub::start(Duration::from_millis(120), Duration::from_millis(2));
            let twin = crate::load::stub::start(Duration::from_millis(120), Duration::from_millis(2));
            let slow = crate::load::stub::start(Duration::from_millis(600), Duration::from_millis(2));
            let at = |name: &str, s: &crate::load::stub::Stub| crate::engines::Endpoint::at(name, &s.base, "m");
            let same = serving::observe(&p, &at("a", &fast), &at("b", &twin)).unwrap();
            let inflated = serving::observe(&p, &at("a", &slow), &at("b", &twin)).unwrap();
            (serving::judge_serving(&p, &same).unwrap(), serving::judge_serving(&p, &inflated).unwrap())
        }),
        ("serving", || {
            // One engine against itself at 4 streams and 1: a server that serves requests together
            // scales (about 4x), one that queues them does not (1x); a run stalled by 150 ms decides neither.
            let mut p = serving_params(serving::ServingMetric::ThroughputRatio, Op::Ge, 2.0);
            (p.concurrency, p.b_concurrency, p.requests) = (4, Some(1), Some(8));
            let at = |s: &crate::load::stub::Stub| crate::engines::Endpoint::at("stub", &s.base, "m");
            let together = at(&crate::load::stub::start(Duration::from_millis(100), Duration::from_millis(10)));
            let queued = at(&crate::load::stub::start_serial(Duration::from_millis(100), Duration::from_millis(10)));
            let scales = serving::observe(&p, &together, &together).unwrap();
            let flat = serving::observe(&p, &queued, &queued).unwrap();
            (serving::judge_serving(&p, &scales).unwrap(), serving::judge_serving(&p, &flat).unwrap())
        }),
        ("grade_scale", || {
            fn lenient(s: f64) -> &'static str {
                if s >= 85.0 {
                    "A"
                } else {
                    crate::record::grade(s)
                }
            }
            let p = meta::GradeParams { a: 90.0, b: 80.0, c: 70.0, d: 60.0 };
            let (n, ok) = meta::grade_violations(&p, crate::record::grade);
            let (m, bad) = meta::grade_violations(&p, lenient);
            (judge::no_violations("g", n, ok), judge::no_violations("g", m, bad))
        }),
    ]
}

#[test]
fn every_kind_is_audited() {
    let audited: Vec<&str> = audit_cases().iter().map(|(k, _)| *k).collect();
    for name in Registry::builtin().names() {
        assert!(audited.contains(&name), "check kind `{name}` has no falsifiability audit");
    }
    for name in &audited {
        assert!(Registry::builtin().get(name).is_some(), "audit for unknown kind `{name}`");
    }
}

#[test]
fn every_kind_passes_its_case_and_falsifies_its_counterexample() {
    for (name, case) in audit_cases() {
        // Counting this thread's heap (and the pool's), not the parallel tests'.
        let (pass, fail) = crate::kernels::test_alloc::counting(case);
        assert_eq!(pass.verdict, Verdict::Pass, "{name} should pass: {}", pass.sentence);
        assert_eq!(fail.verdict, Verdict::Falsified, "{name} should be falsified: {}", fail.sentence);
        // The gate re-decides every pass from its evidence: it must agree.
        let decided = pass.evidence.as_ref().map(crate::record::Evidence::decision);
        assert!(
            matches!(decided, Some(Ok(crate::stats::Decision::Pass))),
            "{name}: the gate would refuse this pass ({decided:?}): {:?}",
            pass.evidence
        );
    }
}

#[test]
fn every_op_reference_catches_a_broken_implementation() {
    use reference::{op_violations, Op as RefOp, Subject};
    fn bad_norm(x: &mut [f32], w: &[f32], _eps: f32) {
        let ms: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        x.iter_mut().zip(w).for_each(|(v, w)| *v = *v / ms.sqrt() * w);
    }
    let engine = Subject::engine();
    let flipped = Subject { kernels: crate::kernels::Kernels::flip_bit(0), ..engine };
    for op in [RefOp::Rope, RefOp::Softmax, RefOp::Swiglu, RefOp::Rmsnorm] {
        let (n, bad) = op_violations(op, engine, 300, 7);
        assert!(n == 300 && bad.is_empty(), "{op:?}: {bad:?}");
    }
    assert_eq!(op_violations(RefOp::Swiglu, flipped, 300, 7).1.len(), 300);
    // The fast attention kernel exists only where the CPU has AVX2.
    if engine.kernels != crate::kernels::Kernels::SCALAR {
        assert_eq!(op_violations(RefOp::Softmax, flipped, 300, 7).1.len(), 300);
    }
    assert!(!op_violations(RefOp::Rmsnorm, Subject { rms_norm: bad_norm, ..engine }, 300, 7).1.is_empty());
}

#[test]
fn an_unparseable_strace_summary_is_an_error_and_noisy_counts_are_inconclusive() {
    let p = resources::SyscallParams {
        model: "0.5b".into(),
        syscalls: vec!["futex".into()],
        repeats: 3,
        op: Op::Le,
        threshold: 2.0,
    };
    let summary = strace_summary(100, 4);
    assert_eq!(resources::parse_strace_summary(&summary, &p.syscalls), Ok(100));
    for text in ["strace: exec: No such file or directory\n", &summary[..summary.len() / 2]] {
        let err = resources::traced_calls(&p, &mut |_| Ok(text.to_owned())).unwrap_err();
        assert!(matches!(err, crate::claims::Unmet::Failed(ref e) if e.contains("strace of 16 tokens")), "{err:?}");
    }
    // Repeats that straddle the bound (1, 2.5, 4 calls per token) decide nothing.
    let noisy = [(0, 64), (0, 160), (0, 256)];
    assert_eq!(resources::judge_syscalls(&p, &noisy).verdict, Verdict::Inconclusive);
}

#[test]
fn a_straddling_interval_is_inconclusive_and_nan_never_passes() {
    let mut q = Quantity::new("r", "x", 2.0);
    q.ci = Some(stats::Interval { lo: 1.9, hi: 2.1, level: 0.95 });
    assert_eq!(judge::quantity(q, Op::Ge, 2.0).verdict, Verdict::Inconclusive);
    assert_ne!(judge::quantity(Quantity::new("r", "x", f64::NAN), Op::Le, 1.0).verdict, Verdict::Pass);
    assert_eq!(judge::rate("r", 3, 3, 1.0, 10, vec![]).verdict, Verdict::Inconclusive);
    assert_eq!(judge::no_violations("v", 0, vec![]).verdict, Verdict::Inconclusive);
}

#[test]
fn too_few_samples_make_a_bench_claim_inconclusive() {
    let p = perf::BenchParams { min_samples: 5000, ..bench_params("itl_p99_over_p50", "<=", 1.5) };
    assert_eq!(perf::judge_bench(&p, &bench_result(50.0, 10)).unwrap().verdict, Verdict::Inconclusive);
}

#[test]
fn noise_that_straddles_the_threshold_leaves_the_metrics_inconclusive() {
    // ttft: 3200/12 = 267 ms against llama.cpp's 267 ms prompt time.
    let ttft = bench_params("ttft_ratio", "<=", 1.0);
    assert_eq!(perf::judge_bench(&ttft, &bench_result(12.0, 10)).unwrap().verdict, Verdict::Inconclusive);
    // itl: 1 token in 100 takes 1.6×: p99 sits at the edge of that tail.
    let mut r = bench_result(50.0, 300);
    *r.series.iter_mut().find(|s| s.metric == "itl_ms").unwrap() =
        series("falsify", "itl_ms", "ms", wobble(20.0, 300, 0.001, 100, 1.6));
    let itl = perf::judge_bench(&bench_params("itl_p99_over_p50", "<=", 1.5), &r).unwrap();
    assert_eq!(itl.verdict, Verdict::Inconclusive, "{}", itl.sentence);
    // CV near 5% over 8 samples.
    let mut cx = context_with(&[("bench x decode_tok_s", "tok/s", 1, wobble(40.0, 8, 0.065, 0, 1.0))]);
    let cv = quality(perf::QualityMetric::MaxCv, Op::Lt, 0.05, &mut cx);
    assert_eq!(cv.verdict, Verdict::Inconclusive, "{}", cv.sentence);
    // p99/p50 near 2 with few samples.
    let mut cx = context_with(&[("load_time x", "ms", 0, wobble(100.0, 20, 0.02, 20, 2.0))]);
    let tail = quality(perf::QualityMetric::MaxP99OverP50, Op::Lt, 2.0, &mut cx);
    assert_eq!(tail.verdict, Verdict::Inconclusive, "{}", tail.sentence);
}

#[test]
fn chart_values_are_read_from_the_drawing() {
    let r = crate::record::tests::sample_report();
    let charts = crate::report::chart::all(&r, &[]).unwrap();
    let ratios = charts.iter().find(|c| c.name == "ratios").unwrap();
    let shown = exports::shown_values(&ratios.svg).unwrap();
    let f084 = shown.iter().find(|s| s.label == "F084 decode_ratio").unwrap_or_else(|| panic!("{shown:?}"));
    let want = r.claims.iter().find(|c| c.id == "F084").unwrap().outcome.evidence.as_ref().unwrap().value.unwrap();
    assert!((f084.text - want).abs() < 1e-3 * want && (f084.bar.unwrap() - want).abs() < 3.0 * f084.unit_per_px);
    // A bar drawn too long with the right text is caught by its geometry.
    let drawn = format!("width=\"{}\"", (f084.bar.unwrap() / f084.unit_per_px).round());
    let stretched = ratios.svg.replacen(&drawn, "width=\"300\"", 1);
    let mut tampered = charts.clone();
    tampered.iter_mut().find(|c| c.name == "ratios").unwrap().svg = stretched;
    let out = exports::judge_chart_values(&tampered, &r);
    assert_eq!(out.verdict, Verdict::Falsified, "{}", out.sentence);
}

/// The serving charts draw the mean of each serving series' runs, and F118
/// finds each of them in the report (a run with serving claims once failed it).
#[test]
fn serving_charts_show_the_reports_own_values() {
    let mut r = crate::record::tests::sample_report();
    let series = crate::record::tests::sample_series;
    r.series.push(series("serving 0.5b c=4 llama-server itl_ms_p50", "ms", vec![60.0, 61.3]));
    r.series.push(series("serving 0.5b c=4 falsify-server output_tok_s", "tok/s", vec![90.0, 99.0]));
    let charts = crate::report::chart::all(&r, &[]).unwrap();
    let out = exports::judge_chart_values(&charts, &r);
    assert_eq!(out.verdict, Verdict::Pass, "{}", out.sentence);
    r.series.last_mut().unwrap().samples = vec![80.0, 99.0];
    let out = exports::judge_chart_values(&charts, &r);
    assert_eq!(out.verdict, Verdict::Falsified, "a chart of other runs: {}", out.sentence);
}
