//! Agreement with llama.cpp on the real models: tokenization, teacher-forced
//! next-token choice, and greedy text. Run with `make agree`
//! (`cargo test --release --test agreement`). A trial whose model or llama.cpp
//! build is absent is reported as ignored, with the reason in its kind and on
//! stderr: never as a pass.

use std::path::{Path, PathBuf};
use std::time::Duration;

use falsify::baseline::llama_cpp::{LlamaCpp, LlamaServer};
use falsify::engine::{self, GenerateOptions};
use falsify::gguf::GgufFile;
use falsify::model::{KvType, Logits, Model};
use falsify::sample::{argmax, SamplerConfig};
use falsify::tokenizer::Tokenizer;
use libtest_mimic::{Arguments, Failed, Trial};

const MODEL_05B: &str = "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const MODEL_15B: &str = "models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";
const THREADS: usize = 2;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus() -> Vec<String> {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/tokenizer-corpus.jsonl")).expect("corpus is committed");
    text.lines().map(|l| serde_json::from_str(l).expect("one JSON string per line")).collect()
}

fn prompts() -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/prompts.json")).expect("committed"))
        .expect("JSON list")
}

/// What a trial needs; `Err` is the reason it cannot run here.
fn need_model(rel: &str) -> Result<PathBuf, String> {
    let p = root().join(rel);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("model {rel} absent (run `make model` / `make model-1.5b`)"))
    }
}

fn need_llama() -> Result<LlamaCpp, String> {
    LlamaCpp::locate().map_err(|e| e.to_string())
}

fn server(llama: &LlamaCpp, model: &Path) -> Result<LlamaServer, Failed> {
    LlamaServer::start(llama, model, THREADS, Duration::from_secs(120)).map_err(|e| Failed::from(e.to_string()))
}

fn load(model: &Path) -> Result<(Model, Tokenizer), Failed> {
    let mut m = Model::load(model).map_err(|e| e.to_string())?;
    m.threads = THREADS;
    // FALSIFY_KV=f32 runs the suite with an f32 KV cache instead of llama.cpp's f16.
    if std::env::var("FALSIFY_KV").is_ok_and(|v| v == "f32") {
        m.kv_type = KvType::F32;
    }
    let t = Tokenizer::from_header(&m.file.header).map_err(|e| e.to_string())?;
    Ok((m, t))
}

/// F052: identical ids to llama-server's /tokenize on every corpus string.
fn tokenization(model: &Path, llama: &LlamaCpp) -> Result<(), Failed> {
    let tok =
        Tokenizer::from_header(&GgufFile::open(model).map_err(|e| e.to_string())?.header).map_err(|e| e.to_string())?;
    let srv = server(llama, model)?;
    let corpus = corpus();
    let mut mismatches = Vec::new();
    for s in &corpus {
        let theirs = srv.tokenize(s).map_err(|e| e.to_string())?;
        let ours = tok.encode(s, true);
        if ours != theirs {
            mismatches.push(format!("{s:?}: ours {ours:?} llama.cpp {theirs:?}"));
        }
    }
    eprintln!(
        "tokenization: {}/{} corpus strings identical to llama.cpp",
        corpus.len() - mismatches.len(),
        corpus.len()
    );
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} strings differ; first: {}",
            mismatches.len(),
            corpus.len(),
            mismatches[..mismatches.len().min(5)].join("\n")
        )
        .into())
    }
}

/// F053: detokenize(tokenize(s)) == s on the corpus.
fn round_trip(model: &Path) -> Result<(), Failed> {
    let tok =
        Tokenizer::from_header(&GgufFile::open(model).map_err(|e| e.to_string())?.header).map_err(|e| e.to_string())?;
    let corpus = corpus();
    let bad: Vec<&String> = corpus.iter().filter(|s| tok.decode(&tok.encode(s, true)) != **s).collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("{} strings do not round-trip, e.g. {:?}", bad.len(), bad[0]).into())
    }
}

/// F050: teacher-force llama.cpp's own greedy output through the engine; the
/// engine's top-1 must agree at ≥ 99% of positions.
fn teacher_forced(model: &Path, llama: &LlamaCpp, n_predict: usize) -> Result<(), Failed> {
    let (m, tok) = load(model)?;
    let srv = server(llama, model)?;
    let (mut agree, mut total) = (0usize, 0usize);
    let mut worst = Vec::new();
    // |our log-probability − llama.cpp's| over llama.cpp's top candidates at each position.
    let (mut lp_sum, mut lp_n, mut lp_max) = (0.0f64, 0usize, 0.0f64);
    for p in prompts() {
        let prompt = tok.encode(&p, true);
        let reference = srv.complete(&prompt, n_predict, 2, true).map_err(|e| e.to_string())?;
        let generated: Vec<u32> = reference.completion_probabilities.iter().map(|t| t.id).collect();
        if generated.is_empty() {
            return Err(format!("llama-server returned no tokens for {p:?}").into());
        }
        let mut seq = prompt.clone();
        seq.extend(&generated[..generated.len() - 1]);
        let mut cache = m.new_cache(seq.len());
        let mut logits = m.forward(&seq, &mut cache, Logits::All).map_err(|e| e.to_string())?;
        let vocab = m.config.vocab_size;
        for (i, probs) in reference.completion_probabilities.iter().enumerate() {
            let pos = prompt.len() - 1 + i;
            let row = &mut logits[pos * vocab..(pos + 1) * vocab];
            // llama-server bans end-of-generation tokens when told to ignore EOS; so do we here.
            let log_z = log_sum_exp(row);
            for &eog in &tok.end_of_generation {
                row[eog as usize] = f32::NEG_INFINITY;
            }
            let ours = argmax(row);
            for cand in &probs.top_logprobs {
                let diff = (f64::from(row[cand.id as usize]) - log_z - cand.logprob).abs();
                lp_sum += diff;
                lp_n += 1;
                lp_max = lp_max.max(diff);
            }
            total += 1;
            if ours == probs.id {
                agree += 1;
            } else {
                let margin = match probs.top_logprobs.as_slice() {
                    [a, b, ..] => a.logprob.exp() - b.logprob.exp(),
                    _ => f64::NAN,
                };
                worst.push(format!(
                    "{p:?} +{i}: ours {ours} llama.cpp {} (llama.cpp top-2 probability margin {margin:.4})",
                    probs.id
                ));
            }
        }
    }
    let rate = agree as f64 / total as f64;
    eprintln!("teacher-forced top-1: {agree}/{total} positions agree ({:.2}%)", rate * 100.0);
    eprintln!(
        "log-probability of llama.cpp's top-2 candidates, ours vs llama.cpp: mean |difference| {:.4}, max {:.4} (nats)",
        lp_sum / lp_n.max(1) as f64,
        lp_max
    );
    for w in &worst {
        eprintln!("  disagreement: {w}");
    }
    if rate >= 0.99 && total >= 640 {
        Ok(())
    } else {
        Err(format!("top-1 agreement {:.2}% over {total} positions (need ≥ 99% over ≥ 640)", rate * 100.0).into())
    }
}

/// F051: greedy continuations (32 tokens) equal llama-completion's for ≥ 9 of 10 prompts.
fn greedy_text(model: &Path, llama: &LlamaCpp) -> Result<(), Failed> {
    let (m, tok) = load(model)?;
    let opts = GenerateOptions {
        max_tokens: 32,
        sampler: SamplerConfig { temperature: 0.0, ..SamplerConfig::default() },
        ignore_eos: false,
    };
    let mut same = 0;
    let mut differing = Vec::new();
    let prompts = prompts();
    for p in &prompts {
        let prompt = tok.encode(p, true);
        let ours = engine::generate(&m, &tok, &prompt, &opts, |_| {}).map_err(|e| e.to_string())?;
        let theirs = llama.complete_greedy(model, p, 32, THREADS).map_err(|e| e.to_string())?;
        if theirs == ours.text {
            same += 1;
        } else {
            differing.push((p.clone(), prompt, ours));
            eprintln!(
                "  differs for {p:?}:\n    ours:      {:?}\n    llama.cpp: {theirs:?}",
                differing.last().unwrap().2.text
            );
        }
    }
    eprintln!("greedy text: {same}/{} prompts identical to llama-completion", prompts.len());
    if same < prompts.len() {
        // Context for the reader: how often llama.cpp agrees with itself when only its
        // attention kernel changes (flash attention off), on the same prompts.
        let mut self_same = 0;
        for p in &prompts {
            let on = llama.complete_greedy(model, p, 32, THREADS).map_err(|e| e.to_string())?;
            let off = llama.complete_greedy_with(model, p, 32, THREADS, &["-fa", "off"]).map_err(|e| e.to_string())?;
            self_same += usize::from(on == off);
        }
        eprintln!(
            "context: llama.cpp with flash attention on vs off agrees with itself on {self_same}/{} prompts",
            prompts.len()
        );
    }
    if !differing.is_empty() {
        // Show how close llama.cpp's own choice was where the texts part.
        let srv = server(llama, model)?;
        for (p, prompt, ours) in &differing {
            let reference = srv.complete(prompt, 32, 2, false).map_err(|e| e.to_string())?;
            let first = reference.completion_probabilities.iter().zip(&ours.tokens).position(|(r, &o)| r.id != o);
            if let Some(i) = first {
                let r = &reference.completion_probabilities[i];
                let top: Vec<String> =
                    r.top_logprobs.iter().map(|t| format!("{}:{:.4}", t.id, t.logprob.exp())).collect();
                eprintln!(
                    "  {p:?}: first differing token at +{i}: ours {} llama.cpp {} (llama.cpp top-2: {})",
                    ours.tokens[i],
                    r.id,
                    top.join(", ")
                );
            }
        }
    }
    if same >= 9 {
        Ok(())
    } else {
        Err(format!("only {same} of {} greedy continuations equal llama.cpp's", prompts.len()).into())
    }
}

/// F046 on the real model: incremental decode equals a full recompute.
fn kv_cache(model: &Path) -> Result<(), Failed> {
    let (m, tok) = load(model)?;
    let tokens = tok.encode("fn add(a: i32, b: i32) -> i32 { a + b }", true);
    let vocab = m.config.vocab_size;
    let full = m.forward(&tokens, &mut m.new_cache(tokens.len()), Logits::All).map_err(|e| e.to_string())?;
    let mut cache = m.new_cache(tokens.len());
    let mut worst = 0.0f32;
    for (i, t) in tokens.iter().enumerate() {
        let step = m.forward(&[*t], &mut cache, Logits::Last).map_err(|e| e.to_string())?;
        let row = &full[i * vocab..(i + 1) * vocab];
        worst = worst.max(step.iter().zip(row).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max));
        if argmax(&step) != argmax(row) {
            return Err(
                format!("position {i}: incremental top-1 {} vs recompute {}", argmax(&step), argmax(row)).into()
            );
        }
    }
    eprintln!("kv cache: max |logit difference| incremental vs recompute = {worst:e}");
    if worst <= 1e-3 {
        Ok(())
    } else {
        Err(format!("max logit difference {worst} > 1e-3").into())
    }
}

/// A llama-server killed mid-run gives a clean error, and dropping the handle
/// leaves no process behind.
fn server_killed_mid_run(model: &Path, llama: &LlamaCpp) -> Result<(), Failed> {
    let srv = server(llama, model)?;
    let pid = srv.pid();
    srv.tokenize("hello").map_err(|e| e.to_string())?;
    let status =
        std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("could not kill llama-server".into());
    }
    std::thread::sleep(Duration::from_millis(200));
    let err = match srv.tokenize("hello") {
        Ok(_) => return Err("a killed server still answered".into()),
        Err(e) => e.to_string(),
    };
    eprintln!("error after kill: {err}");
    drop(srv);
    // Reaped: no zombie or live process with that pid remains as our child.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    if stat.contains(") Z ") || stat.contains(") S ") || stat.contains(") R ") {
        return Err(format!("process {pid} is still there: {stat}").into());
    }
    if !err.contains("127.0.0.1") {
        return Err(format!("the error does not say which server failed: {err}").into());
    }
    Ok(())
}

/// log Σ exp(x), in f64.
fn log_sum_exp(xs: &[f32]) -> f64 {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    f64::from(max) + xs.iter().map(|&v| f64::from(v - max).exp()).sum::<f64>().ln()
}

fn trial(name: &str, needs: Result<(), String>, run: impl FnOnce() -> Result<(), Failed> + Send + 'static) -> Trial {
    match needs {
        Ok(()) => Trial::test(name, run),
        Err(reason) => {
            eprintln!("skipped {name}: {reason}");
            Trial::test(name, || Ok(())).with_ignored_flag(true).with_kind(format!("skipped: {reason}"))
        }
    }
}

fn main() {
    let mut args = Arguments::from_args();
    // Each trial uses every core; running them side by side would only skew timings.
    args.test_threads.get_or_insert(1);
    let llama = need_llama();
    let mut trials = Vec::new();
    for (label, rel) in [("0.5b", MODEL_05B), ("1.5b", MODEL_15B)] {
        let model = need_model(rel);
        let both = model.clone().and_then(|m| llama.clone().map(|l| (m, l)));
        let needs = both.as_ref().map(|_| ()).map_err(Clone::clone);
        if label == "0.5b" {
            let (b, m) = (both.clone(), model.clone());
            trials.push(trial("tokenization_equals_llama_cpp_0.5b", needs.clone(), move || {
                let (m, l) = b.unwrap();
                tokenization(&m, &l)
            }));
            trials.push(trial(
                "detokenize_round_trips_0.5b",
                m.as_ref().map(|_| ()).map_err(Clone::clone),
                move || round_trip(&m.unwrap()),
            ));
            let b = both.clone();
            trials.push(trial("teacher_forced_top1_0.5b", needs.clone(), move || {
                let (m, l) = b.unwrap();
                teacher_forced(&m, &l, 64)
            }));
            let b = both.clone();
            trials.push(trial("llama_server_killed_mid_run_is_a_clean_error", needs.clone(), move || {
                let (m, l) = b.unwrap();
                server_killed_mid_run(&m, &l)
            }));
            let m = model.clone();
            trials.push(trial(
                "kv_cache_incremental_equals_recompute_0.5b",
                m.as_ref().map(|_| ()).map_err(Clone::clone),
                move || kv_cache(&m.unwrap()),
            ));
        }
        let b = both.clone();
        trials.push(trial(&format!("greedy_text_equals_llama_completion_{label}"), needs, move || {
            let (m, l) = b.unwrap();
            greedy_text(&m, &l)
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}
