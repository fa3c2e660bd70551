//! The falsifiability audit: every registered check kind is fed a case it must
//! pass and a counterexample it must falsify. A kind missing here fails
//! `every_kind_is_audited`, so no kind ships unable to fail.

use super::judge::{self, Quantity};
use super::{agreement, bricks, exports, meta, perf, reference, resources, top, Registry};
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
    let host = crate::bench::roofline::HostProbe::stated(30.0, 200.0, 100.0);
    crate::bench::bricks::BrickProfile {
        model: "0.5b".into(),
        threads: 2,
        host: host.clone(),
        allowance: 1.5,
        decode: times.breakdown(64, wall),
        bricks: crate::bench::bricks::budgets(&costs, &host, 1.5),
    }
}

fn bench_params(metric: &str, op: &str, threshold: f64) -> perf::BenchParams {
    super::parse(
        &toml::from_str(&format!("model = \"0.5b\"\nmetric = \"{metric}\"\nop = \"{op}\"\nthreshold = {threshold:?}"))
            .unwrap(),
    )
    .unwrap()
}

fn of() -> perf::BenchOf {
    perf::BenchOf { model: "0.5b".into(), baseline: "llama.cpp".into(), prompt: 32, gen: 128 }
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

fn audit_cases() -> Vec<(&'static str, Case)> {
    vec![
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
            };
            (perf::judge_bandwidth(&p, &obs(120.0)), perf::judge_bandwidth(&p, &obs(40.0)))
        }),
        ("dot_gflops", || {
            let q = |x: f64| Quantity::of_samples("dot_gflops", "GFLOP/s", &[x, x * 1.01, x * 0.99, x, x]);
            (judge::quantity(q(40.0), Op::Ge, 25.0), judge::quantity(q(10.0), Op::Ge, 25.0))
        }),
        ("load_time", || {
            let p = perf::LoadParams { model: "0.5b".into(), op: Op::Le, threshold: 2.0, runs: 5 };
            let theirs = [100.0, 101.0, 99.0, 100.0, 102.0];
            (
                perf::judge_load(&p, &[150.0, 151.0, 149.0, 150.0, 152.0], &theirs, None).unwrap(),
                perf::judge_load(&p, &[500.0, 501.0, 499.0, 500.0, 502.0], &theirs, None).unwrap(),
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
        ("kv_consistency", || {
            let p = agreement::KvParams { model: "0.5b".into(), tolerance: 1e-3, sum_order: Default::default() };
            (agreement::judge_kv(&p, Ok(1e-5), 16), agreement::judge_kv(&p, Ok(0.5), 16))
        }),
        ("fast_vs_reference", || {
            let p = agreement::ToleranceParams { model: "0.5b".into(), tolerance: 0.25 };
            let r = |diffs: Vec<(usize, f32)>, max| crate::agreement::FastVsReference {
                positions: 25,
                same_top1: 25 - diffs.len(),
                max_abs_logit_diff: max,
                mean_abs_logit_diff: 0.05,
                top1_differences: diffs,
            };
            (
                agreement::judge_fast(&p, &r(vec![], 0.1), "avx2"),
                agreement::judge_fast(&p, &r(vec![(3, 0.01)], 0.1), "avx2"),
            )
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
            fn naive_softmax(x: &mut [f32]) {
                let sum: f32 = x.iter().map(|v| v.exp()).sum();
                x.iter_mut().for_each(|v| *v = v.exp() / sum);
            }
            let (n, bad) = reference::op_violations(reference::Op::Softmax, reference::Ops::engine());
            let (m, worse) = reference::op_violations(
                reference::Op::Softmax,
                reference::Ops { softmax: naive_softmax, ..reference::Ops::engine() },
            );
            (judge::no_violations("softmax", n, bad), judge::no_violations("softmax", m, worse))
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
            let p = resources::KvMemoryParams {
                model: "0.5b".into(),
                metric: resources::KvMetric::F16BytesRatio,
                op: Op::Le,
                threshold: 0.5,
            };
            (resources::judge_kv_memory(&p, 500, 1000, 10), resources::judge_kv_memory(&p, 1000, 1000, 10))
        }),
        ("attention_memory", || {
            let p = resources::AttentionParams { context: 4096, divisor: 10.0 };
            (resources::judge_attention(&p, 14, 4096), resources::judge_attention(&p, 14, 14 * 4096 * 4096))
        }),
        ("memory_limit", || {
            let p = resources::LimitParams { model: "0.5b".into(), limit_mib: 256 };
            let clean = resources::Exit { code: Some(1), signal: None, stderr: "error: cannot map the model\n".into() };
            let abort = resources::Exit {
                code: None,
                signal: Some(6),
                stderr: "memory allocation of 4096 bytes failed\n".into(),
            };
            (resources::judge_limit(&p, &clean), resources::judge_limit(&p, &abort))
        }),
        ("syscalls_per_token", || {
            let p = resources::SyscallParams {
                model: "0.5b".into(),
                syscalls: vec!["futex".into()],
                op: Op::Le,
                threshold: 2.0,
            };
            (resources::judge_syscalls(&p, (16, 100), (80, 150)), resources::judge_syscalls(&p, (16, 100), (80, 6500)))
        }),
        ("backend_choice", || {
            let failed = resources::Exit {
                code: Some(1),
                signal: None,
                stderr: "error: --backend cuda: no CUDA backend".into(),
            };
            let ok = resources::Exit { code: Some(0), signal: None, stderr: String::new() };
            (resources::judge_backend(&failed, &ok), resources::judge_backend(&ok, &ok))
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
            let good = brick_profile();
            let mut bad = brick_profile();
            bad.decode.bricks[crate::model::Brick::Rope as usize].us_per_token = 0.0;
            bad.decode.bricks.pop();
            (bricks::judge_timed(&good), bricks::judge_timed(&bad))
        }),
        ("brick_coverage", || {
            let p = bricks::CoverageParams { model: "0.5b".into(), op: Op::Ge, threshold: 0.95 };
            let mut low = brick_profile();
            low.decode.coverage = 0.80;
            (bricks::judge_coverage(&p, &brick_profile()), bricks::judge_coverage(&p, &low))
        }),
        ("brick_budget", || {
            let p = |factor: f64| bricks::BudgetParams {
                model: "0.5b".into(),
                bricks: vec!["ffn".into(), "qkv".into()],
                roofline_factor: Some(factor),
                budget_us: None,
            };
            // ffn + qkv take 8 + 3 = 11 ms per token against rooflines of 7.5 + 0.6 = 8.1 ms.
            let (roomy, tight) = (p(1.5), p(1.2));
            let prof = brick_profile();
            (bricks::judge_budget(&roomy, &prof, 24).unwrap(), bricks::judge_budget(&tight, &prof, 24).unwrap())
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
            let (_, ok) = top::roofline_violations(&p);
            let mut fast = p.clone();
            fast.decode.bricks[crate::model::Brick::Ffn as usize].us_per_token = 1.0; // 225 MB in 1 µs
            let (_, bad) = top::roofline_violations(&fast);
            (judge::no_violations("b", 10, ok), judge::no_violations("b", 10, bad))
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
        ("token_metrics", || {
            use crate::top::live::TokenSample;
            let full = TokenSample { index: 0, position: 5, wall_us: 100.0, bricks_us: [5.0; 10] };
            let mut lacking = full.clone();
            lacking.bricks_us[crate::model::Brick::Rope as usize] = 0.0;
            (
                judge::no_violations("m", 1, top::metrics_violations(std::slice::from_ref(&full))),
                judge::no_violations("m", 1, top::metrics_violations(&[lacking])),
            )
        }),
        ("instrumentation_overhead", || {
            let p =
                bricks::OverheadParams { model: "0.5b".into(), tokens: 48, rounds: 12, op: Op::Lt, threshold: 0.01 };
            let cheap: Vec<f64> = (0..12).map(|i| 0.002 + 0.0005 * (i % 3) as f64).collect();
            let costly: Vec<f64> = (0..12).map(|i| 0.04 + 0.001 * (i % 3) as f64).collect();
            (bricks::judge_overhead(&p, &cheap), bricks::judge_overhead(&p, &costly))
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
        let (pass, fail) = case();
        assert_eq!(pass.verdict, Verdict::Pass, "{name} should pass: {}", pass.sentence);
        assert_eq!(fail.verdict, Verdict::Falsified, "{name} should be falsified: {}", fail.sentence);
    }
}

#[test]
fn every_op_reference_catches_a_broken_implementation() {
    use reference::{op_violations, Op as RefOp, Ops};
    fn bad_rope(x: &mut [f32], dim: usize, pos: usize, base: f32) {
        let (mut c, mut s) = (vec![0.0; dim / 2], vec![0.0; dim / 2]);
        crate::kernels::ops::rope_angles(pos, dim, base, &mut c, &mut s);
        s.iter_mut().for_each(|v| *v = -*v);
        crate::kernels::ops::rope_neox(x, dim, &c, &s);
    }
    fn bad_swiglu(g: &mut [f32], u: &[f32]) {
        g.iter_mut().zip(u).for_each(|(g, u)| *g *= u);
    }
    fn bad_norm(x: &mut [f32], w: &[f32], _eps: f32) {
        let ms: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        x.iter_mut().zip(w).for_each(|(v, w)| *v = *v / ms.sqrt() * w);
    }
    let engine = Ops::engine();
    for op in [RefOp::Rope, RefOp::Softmax, RefOp::Swiglu, RefOp::Rmsnorm] {
        let (n, bad) = op_violations(op, engine);
        assert!(n > 0 && bad.is_empty(), "{op:?}: {bad:?}");
    }
    assert!(!op_violations(RefOp::Rope, Ops { rope: bad_rope, ..engine }).1.is_empty());
    assert!(!op_violations(RefOp::Swiglu, Ops { swiglu: bad_swiglu, ..engine }).1.is_empty());
    assert!(!op_violations(RefOp::Rmsnorm, Ops { rms_norm: bad_norm, ..engine }).1.is_empty());
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
    let stretched = ratios.svg.replacen("width=\"102\"", "width=\"300\"", 1);
    let mut tampered = charts.clone();
    tampered.iter_mut().find(|c| c.name == "ratios").unwrap().svg = stretched;
    let out = exports::judge_chart_values(&tampered, &r);
    assert_eq!(out.verdict, Verdict::Falsified, "{}", out.sentence);
}
