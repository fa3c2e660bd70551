//! Agreement of the engine with llama.cpp on a real model: tokenization,
//! teacher-forced next-token choice, greedy text, full next-token
//! distributions (KL divergence) and KV-cache consistency.
//! Each function measures and reports; the caller (the agreement tests, the
//! claims) decides against its threshold. The comparisons themselves are
//! functions of their inputs (ids, texts, logits, a forward pass given as a
//! closure), so the falsifiability audit runs the same code on a broken
//! subject without the model or llama.cpp.

use std::io::Read;
use std::path::Path;

use serde::Serialize;

use crate::baseline::kl_base::{KlBase, KlBaseError, LogProbRow};
use crate::baseline::llama_cpp::{LlamaCpp, LlamaServer, TokenProbs};
use crate::baseline::BaselineError;
use crate::engine::{self, GenerateOptions};
use crate::model::{Logits, Model, ModelError};
use crate::quant::SumOrder;
use crate::sample::{argmax, SamplerConfig};
use crate::tokenizer::Tokenizer;

/// Why an agreement measurement could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum AgreementError {
    /// The engine failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// llama.cpp failed.
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    /// llama-perplexity's distribution file is unreadable.
    #[error("llama-perplexity --kl-divergence-base file: {0}")]
    KlBase(#[from] KlBaseError),
    /// llama.cpp's answer cannot be compared.
    #[error("{0}")]
    Reference(String),
}

/// The committed tokenizer corpus (one JSON string per line).
pub fn corpus(root: &Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(root.join("tests/fixtures/tokenizer-corpus.jsonl"))?;
    text.lines().map(|l| serde_json::from_str(l).map_err(std::io::Error::other)).collect()
}

/// The committed prompts for the logit and text comparisons.
pub fn prompts(root: &Path) -> std::io::Result<Vec<String>> {
    serde_json::from_str(&std::fs::read_to_string(root.join("tests/fixtures/prompts.json"))?)
        .map_err(std::io::Error::other)
}

/// Tokenization compared string by string.
#[derive(Debug, Clone, Serialize)]
pub struct Tokenization {
    /// Strings compared.
    pub total: usize,
    /// Strings with identical ids.
    pub identical: usize,
    /// The first few differences, described.
    pub mismatches: Vec<String>,
}

/// Compares `tok.encode(s, parse_special = true)` with llama-server's `/tokenize` for every string.
pub fn tokenization(tok: &Tokenizer, srv: &LlamaServer, corpus: &[String]) -> Result<Tokenization, AgreementError> {
    compare_tokenization(corpus, |s| tok.encode(s, true), |s| srv.tokenize(s).map_err(AgreementError::from))
}

/// Compares `ours(s)` with the reference's `theirs(s)` for every string of `corpus`.
pub fn compare_tokenization(
    corpus: &[String],
    ours: impl Fn(&str) -> Vec<u32>,
    mut theirs: impl FnMut(&str) -> Result<Vec<u32>, AgreementError>,
) -> Result<Tokenization, AgreementError> {
    let mut mismatches = Vec::new();
    for s in corpus {
        let (ours, theirs) = (ours(s), theirs(s)?);
        if ours != theirs {
            mismatches.push(format!("{s:?}: ours {ours:?} llama.cpp {theirs:?}"));
        }
    }
    let identical = corpus.len() - mismatches.len();
    mismatches.truncate(5);
    Ok(Tokenization { total: corpus.len(), identical, mismatches })
}

/// The strings for which `decode(encode(s)) != s`.
pub fn round_trip_failures(tok: &Tokenizer, corpus: &[String]) -> Vec<String> {
    trip_failures(corpus, |s| tok.decode(&tok.encode(s, true)))
}

/// The strings that do not come back unchanged from `trip` (a tokenizer's decode ∘ encode).
pub fn trip_failures(corpus: &[String], trip: impl Fn(&str) -> String) -> Vec<String> {
    corpus.iter().filter(|s| trip(s) != **s).cloned().collect()
}

/// Teacher-forced comparison of next-token choices and log-probabilities.
#[derive(Debug, Clone, Serialize)]
pub struct TeacherForced {
    /// Positions compared.
    pub total: usize,
    /// Positions where the engine's top-1 equals llama.cpp's token.
    pub agree: usize,
    /// Mean |our log-probability − llama.cpp's| over llama.cpp's reported candidates, nats.
    pub mean_abs_logprob_diff: f64,
    /// Largest such difference, nats.
    pub max_abs_logprob_diff: f64,
    /// Disagreements with llama.cpp's top-2 probability margin there.
    pub disagreements: Vec<String>,
}

impl TeacherForced {
    /// `agree / total`.
    pub fn rate(&self) -> f64 {
        self.agree as f64 / self.total.max(1) as f64
    }
}

/// Teacher-forced scores accumulated position by position.
#[derive(Debug, Clone, Default)]
pub struct TeacherForcedTally {
    total: usize,
    agree: usize,
    lp_sum: f64,
    lp_n: usize,
    lp_max: f64,
    disagreements: Vec<String>,
}

impl TeacherForcedTally {
    /// Scores our logits `row` at position `i` after `prompt` against
    /// llama.cpp's choice and candidates there; `banned` (end-of-generation
    /// tokens) are excluded from our top-1, as llama.cpp banned them.
    pub fn score(&mut self, prompt: &str, i: usize, row: &mut [f32], probs: &TokenProbs, banned: &[u32]) {
        let log_z = log_sum_exp(row);
        for cand in &probs.top_logprobs {
            let diff = (f64::from(row[cand.id as usize]) - log_z - cand.logprob).abs();
            self.lp_sum += diff;
            self.lp_n += 1;
            self.lp_max = self.lp_max.max(diff);
        }
        for &eog in banned {
            row[eog as usize] = f32::NEG_INFINITY;
        }
        let ours = argmax(row);
        self.total += 1;
        if ours == probs.id {
            self.agree += 1;
        } else {
            // The margin between llama.cpp's two best *allowed* candidates: EOG tokens were banned.
            let allowed: Vec<f64> =
                probs.top_logprobs.iter().filter(|c| !banned.contains(&c.id)).map(|c| c.logprob.exp()).collect();
            let margin = match allowed.as_slice() {
                [a, b, ..] => format!("llama.cpp top-2 probability margin {:.4}", a - b),
                _ => "llama.cpp's top-2 include a banned end-of-generation token: margin unknown".to_owned(),
            };
            self.disagreements.push(format!("{prompt:?} +{i}: ours {ours} llama.cpp {} ({margin})", probs.id));
        }
    }

    /// The comparison over every position scored.
    pub fn finish(self) -> TeacherForced {
        TeacherForced {
            total: self.total,
            agree: self.agree,
            mean_abs_logprob_diff: self.lp_sum / self.lp_n.max(1) as f64,
            max_abs_logprob_diff: self.lp_max,
            disagreements: self.disagreements,
        }
    }
}

/// log Σ exp(x), in f64.
fn log_sum_exp(xs: &[f32]) -> f64 {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    f64::from(max) + xs.iter().map(|&v| f64::from(v - max).exp()).sum::<f64>().ln()
}

/// Lets llama-server generate `n_predict` tokens greedily per prompt (EOS
/// banned, so every prompt gives all its positions), then feeds the engine the
/// prompt and llama.cpp's continuation the way llama.cpp computed it (the
/// prompt in one batch, then one token at a time: the batch size picks the
/// kernels, and so the last bits) and compares, at each generated position,
/// the engine's top-1 (EOS banned too) with llama.cpp's token.
pub fn teacher_forced(
    model: &Model,
    tok: &Tokenizer,
    srv: &LlamaServer,
    prompts: &[String],
    n_predict: usize,
) -> Result<TeacherForced, AgreementError> {
    let mut tally = TeacherForcedTally::default();
    let vocab = model.config.vocab_size;
    for p in prompts {
        let prompt = tok.encode(p, true);
        let reference = srv.complete(&prompt, n_predict, 2, true)?;
        let generated: Vec<u32> = reference.completion_probabilities.iter().map(|t| t.id).collect();
        if generated.is_empty() {
            return Err(AgreementError::Reference(format!("llama-server returned no tokens for {p:?}")));
        }
        let mut cache = model.new_cache(prompt.len() + generated.len());
        let mut logits = model.forward(&prompt, &mut cache, Logits::Last)?;
        for (i, probs) in reference.completion_probabilities.iter().enumerate() {
            if i > 0 {
                logits = model.forward(&generated[i - 1..i], &mut cache, Logits::Last)?;
            }
            tally.score(p, i, &mut logits[..vocab], probs, &tok.end_of_generation);
        }
    }
    Ok(tally.finish())
}

/// Greedy continuations compared as text.
#[derive(Debug, Clone, Serialize)]
pub struct GreedyText {
    /// Prompts compared.
    pub total: usize,
    /// Prompts whose continuations are identical.
    pub identical: usize,
    /// For each differing prompt: where the texts part and llama.cpp's own top-2 there.
    pub differences: Vec<String>,
}

/// Compares `n`-token greedy continuations by the engine with `llama-completion --temp 0`'s.
/// Where they differ, asks llama-server for its top-2 at the first differing token.
pub fn greedy_text(
    model: &Model,
    tok: &Tokenizer,
    llama: &LlamaCpp,
    model_path: &Path,
    prompts: &[String],
    n: usize,
) -> Result<GreedyText, AgreementError> {
    let opts = GenerateOptions {
        max_tokens: n,
        sampler: SamplerConfig { temperature: 0.0, ..SamplerConfig::default() },
        ignore_eos: false,
        time_bricks: false,
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for p in prompts {
        let prompt = tok.encode(p, true);
        ours.push((prompt.clone(), engine::generate(model, tok, &prompt, &opts, |_| {})?));
        theirs.push(llama.complete_greedy(model_path, p, n, model.threads())?);
    }
    let texts: Vec<&str> = ours.iter().map(|(_, g)| g.text.as_str()).collect();
    let differing: Vec<_> = differing_texts(&texts, &theirs)
        .into_iter()
        .map(|i| (&prompts[i], &ours[i].0, &ours[i].1, &theirs[i]))
        .collect();
    let mut differences = Vec::new();
    if !differing.is_empty() {
        let srv = LlamaServer::start(llama, model_path, model.threads(), std::time::Duration::from_secs(120))?;
        for (p, prompt, ours, theirs) in &differing {
            let reference = srv.complete(prompt.as_slice(), n, 2, false)?;
            let first = reference.completion_probabilities.iter().zip(&ours.tokens).position(|(r, &o)| r.id != o);
            let detail = match first {
                Some(i) => {
                    let r = &reference.completion_probabilities[i];
                    let top: Vec<String> =
                        r.top_logprobs.iter().map(|t| format!("{}:{:.4}", t.id, t.logprob.exp())).collect();
                    format!(
                        "first differing token at +{i}: ours {} llama.cpp {} (llama.cpp top-2: {})",
                        ours.tokens[i],
                        r.id,
                        top.join(", ")
                    )
                }
                None => format!("same tokens, different text: ours {:?} llama.cpp {theirs:?}", ours.text),
            };
            differences.push(format!("{p:?}: {detail}"));
        }
    }
    Ok(GreedyText { total: prompts.len(), identical: prompts.len() - differing.len(), differences })
}

/// The indices at which our text differs from the reference's.
pub fn differing_texts(ours: &[impl AsRef<str>], theirs: &[impl AsRef<str>]) -> Vec<usize> {
    (0..ours.len().max(theirs.len()))
        .filter(|&i| ours.get(i).map(|s| s.as_ref()) != theirs.get(i).map(|s| s.as_ref()))
        .collect()
}

/// How far llama.cpp's log-probabilities move between two of its own runs
/// that differ only in arithmetic (`a` default, `b` e.g. `--no-repack`):
/// over the positions where both runs' greedy continuations still agree.
#[derive(Debug, Clone, Serialize)]
pub struct LogprobSpread {
    /// Candidate log-probabilities compared.
    pub compared: usize,
    /// Mean |difference|, nats.
    pub mean_abs: f64,
    /// Largest |difference|, nats.
    pub max_abs: f64,
}

/// [`LogprobSpread`] of llama.cpp against itself over `prompts`, `n_predict` tokens each.
pub fn llama_logprob_spread(
    tok: &Tokenizer,
    a: &LlamaServer,
    b: &LlamaServer,
    prompts: &[String],
    n_predict: usize,
) -> Result<LogprobSpread, AgreementError> {
    let (mut sum, mut compared, mut max_abs) = (0.0f64, 0usize, 0.0f64);
    for p in prompts {
        let prompt = tok.encode(p, true);
        let (ra, rb) = (a.complete(&prompt, n_predict, 2, true)?, b.complete(&prompt, n_predict, 2, true)?);
        for (x, y) in ra.completion_probabilities.iter().zip(&rb.completion_probabilities) {
            for cy in &y.top_logprobs {
                if let Some(cx) = x.top_logprobs.iter().find(|c| c.id == cy.id) {
                    let d = (cx.logprob - cy.logprob).abs();
                    (sum, compared, max_abs) = (sum + d, compared + 1, max_abs.max(d));
                }
            }
            if x.id != y.id {
                break;
            }
        }
    }
    Ok(LogprobSpread { compared, mean_abs: sum / compared.max(1) as f64, max_abs })
}

/// The llama.cpp settings that change only its arithmetic, not its model:
/// a label and the extra `llama-completion` arguments.
pub const LLAMA_VARIANTS: [(&str, &[&str]); 2] =
    [("flash attention off", &["-fa", "off"]), ("weight repacking off", &["--no-repack"])];

/// How many prompts llama.cpp continues identically with its default settings
/// and with each of [`LLAMA_VARIANTS`]: how far its own text moves when only
/// the order of its floating-point operations changes.
pub fn llama_self_agreement(
    llama: &LlamaCpp,
    model_path: &Path,
    prompts: &[String],
    n: usize,
    threads: usize,
) -> Result<Vec<(&'static str, usize)>, AgreementError> {
    let mut same = vec![0usize; LLAMA_VARIANTS.len()];
    for p in prompts {
        let default = llama.complete_greedy(model_path, p, n, threads)?;
        for (count, (_, args)) in same.iter_mut().zip(LLAMA_VARIANTS) {
            *count += usize::from(llama.complete_greedy_with(model_path, p, n, threads, args)? == default);
        }
    }
    Ok(LLAMA_VARIANTS.iter().map(|v| v.0).zip(same).collect())
}

/// One line for a reader: how often llama.cpp agrees with itself (from
/// [`llama_self_agreement`]) over `total` prompts.
pub fn self_agreement_line(same: &[(&str, usize)], total: usize) -> String {
    let parts: Vec<String> = same.iter().map(|(label, n)| format!("{n}/{total} with {label}")).collect();
    format!("context: llama.cpp's greedy text equals its own default run on {}", parts.join(", "))
}

/// Largest |logit difference| between token-by-token decode and a full
/// recompute of `tokens`, or the first position whose top-1 differs.
pub fn kv_cache_consistency(
    model: &mut Model,
    tokens: &[u32],
    sums: SumOrder,
) -> Result<Result<f32, String>, AgreementError> {
    let before = std::mem::replace(&mut model.sum_order, sums);
    let result = incremental_vs_recompute(model, tokens);
    model.sum_order = before;
    result
}

fn incremental_vs_recompute(model: &Model, tokens: &[u32]) -> Result<Result<f32, String>, AgreementError> {
    let vocab = model.config.vocab_size;
    let full = model.forward(tokens, &mut model.new_cache(tokens.len()), Logits::All)?;
    let mut cache = model.new_cache(tokens.len());
    let mut worst = 0.0f32;
    for (i, t) in tokens.iter().enumerate() {
        let step = model.forward(&[*t], &mut cache, Logits::Last)?;
        let row = &full[i * vocab..(i + 1) * vocab];
        worst = worst.max(step.iter().zip(row).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max));
        if argmax(&step) != argmax(row) {
            return Ok(Err(format!("position {i}: incremental top-1 {} vs recompute {}", argmax(&step), argmax(row))));
        }
    }
    Ok(Ok(worst))
}

/// The fast kernels against the scalar reference on the real model.
#[derive(Debug, Clone, Serialize)]
pub struct FastVsReference {
    /// Positions compared.
    pub positions: usize,
    /// Positions with the same top-1 token.
    pub same_top1: usize,
    /// Largest |logit difference| over every position and token.
    pub max_abs_logit_diff: f32,
    /// Mean |logit difference| over every position and token.
    pub mean_abs_logit_diff: f64,
    /// Where the top-1 differs: position and the reference's top-2 logit gap there.
    pub top1_differences: Vec<(usize, f32)>,
}

/// Runs `tokens` through the model with its fast kernels and with the scalar
/// reference, and compares the logits at every position.
pub fn fast_vs_reference(model: &mut Model, tokens: &[u32]) -> Result<FastVsReference, AgreementError> {
    let fast_kernels = model.kernels;
    let vocab = model.config.vocab_size;
    let fast = model.forward(tokens, &mut model.new_cache(tokens.len()), Logits::All)?;
    model.kernels = crate::kernels::Kernels::SCALAR;
    let reference = model.forward(tokens, &mut model.new_cache(tokens.len()), Logits::All);
    model.kernels = fast_kernels;
    let reference = reference?;
    let mut top1_differences = Vec::new();
    for (pos, (a, b)) in fast.chunks_exact(vocab).zip(reference.chunks_exact(vocab)).enumerate() {
        let best = argmax(b) as usize;
        if argmax(a) as usize != best {
            let second =
                b.iter().enumerate().filter(|&(i, _)| i != best).map(|(_, &v)| v).fold(f32::NEG_INFINITY, f32::max);
            top1_differences.push((pos, b[best] - second));
        }
    }
    // Equal bits differ by 0; a NaN on either side (never equal to anything) by infinity.
    let diff = |(a, b): (&f32, &f32)| match (a - b).abs() {
        d if d.is_nan() && a.to_bits() != b.to_bits() => f32::INFINITY,
        d if d.is_nan() => 0.0,
        d => d,
    };
    let max_abs_logit_diff = fast.iter().zip(&reference).map(diff).fold(0.0, f32::max);
    let mean_abs_logit_diff = fast.iter().zip(&reference).map(|p| f64::from(diff(p))).sum::<f64>() / fast.len() as f64;
    Ok(FastVsReference {
        positions: tokens.len(),
        same_top1: tokens.len() - top1_differences.len(),
        max_abs_logit_diff,
        mean_abs_logit_diff,
        top1_differences,
    })
}

/// Perplexity of `tokens` scored as llama-perplexity scores it: the text is cut
/// into whole chunks of `ctx` tokens, each evaluated from an empty cache, and
/// only the second half of each chunk is scored (each position predicting the next token).
pub fn perplexity(model: &Model, tokens: &[u32], ctx: usize) -> Result<f64, AgreementError> {
    let vocab = model.config.vocab_size;
    let chunks = tokens.len() / ctx;
    if chunks == 0 || ctx < 4 {
        return Err(AgreementError::Reference(format!("{} tokens is less than one {ctx}-token chunk", tokens.len())));
    }
    let (mut nll, mut count) = (0.0f64, 0usize);
    for chunk in tokens.chunks_exact(ctx).take(chunks) {
        let logits = model.forward(chunk, &mut model.new_cache(ctx), Logits::All)?;
        for pos in ctx / 2..ctx - 1 {
            let row = &logits[pos * vocab..(pos + 1) * vocab];
            nll += log_sum_exp(row) - f64::from(row[chunk[pos + 1] as usize]);
            count += 1;
        }
    }
    Ok((nll / count as f64).exp())
}

/// Log-probabilities at or below this are not summed: llama-perplexity's
/// file clips everything more than 16 nats below a row's maximum, and its own
/// `--kl-divergence` sums over the same tokens.
pub const KL_LOG_PROB_FLOOR: f64 = -16.0;

/// KL(P_llama.cpp ‖ P_engine) at every position llama-perplexity scored.
#[derive(Debug, Clone, Serialize)]
pub struct KlDivergence {
    /// Chunk length, tokens.
    pub n_ctx: usize,
    /// Chunks compared.
    pub chunks: usize,
    /// KL at each position, nats, chunk by chunk.
    pub values: Vec<f64>,
    /// Mean KL, nats.
    pub mean: f64,
    /// 99th percentile, nats.
    pub p99: f64,
    /// Largest, nats.
    pub max: f64,
    /// Chunk and position of the largest.
    pub worst: (usize, usize),
    /// Positions where both distributions have the same most likely token.
    pub same_top1: usize,
}

impl KlDivergence {
    /// Positions compared.
    pub fn positions(&self) -> usize {
        self.values.len()
    }
}

/// KL(P ‖ Q) in nats, in f64, of llama.cpp's stored distribution `p` and
/// the engine's `logits` (Q = their softmax), summed over the tokens whose
/// stored log-probability is above [`KL_LOG_PROB_FLOOR`], as llama.cpp's own
/// `--kl-divergence` sums it.
pub fn position_kl(p: &LogProbRow, logits: &[f32]) -> f64 {
    let log_z = log_sum_exp(logits);
    (0..logits.len())
        .map(|i| (p.log_prob(i), f64::from(logits[i]) - log_z))
        .filter(|&(lp, _)| lp > KL_LOG_PROB_FLOOR)
        .map(|(lp, lq)| lp.exp() * (lp - lq))
        .sum()
}

/// Scores the engine (its default kernels and sum order, one forward pass
/// per chunk from an empty cache, logits at every position) at the positions
/// llama-perplexity wrote to `base`, on the tokens read from the file itself;
/// each chunk's first token becomes `bos` when the model adds one, as
/// llama-perplexity does.
pub fn kl_divergence<R: Read>(
    model: &Model,
    bos: Option<u32>,
    base: &mut KlBase<R>,
) -> Result<KlDivergence, AgreementError> {
    let vocab = model.config.vocab_size;
    if base.n_vocab != vocab {
        return Err(AgreementError::Reference(format!(
            "llama-perplexity's distributions have {} entries, the model's vocabulary {vocab}",
            base.n_vocab
        )));
    }
    kl_of(base, bos, |chunk| Ok(model.forward(chunk, &mut model.new_cache(chunk.len()), Logits::All)?))
}

/// [`kl_divergence`] of any forward pass: `forward(chunk)` gives the logits
/// of every position of `chunk` (`n_vocab` each) from an empty cache.
pub fn kl_of<R: Read>(
    base: &mut KlBase<R>,
    bos: Option<u32>,
    mut forward: impl FnMut(&[u32]) -> Result<Vec<f32>, AgreementError>,
) -> Result<KlDivergence, AgreementError> {
    let (vocab, ctx, first) = (base.n_vocab, base.n_ctx, base.first_scored());
    let (mut values, mut worst, mut worst_kl, mut same_top1) = (Vec::new(), (0, 0), f64::NEG_INFINITY, 0);
    for c in 0..base.n_chunk {
        let rows = base.next_chunk()?;
        let mut input = base.chunk_tokens(c).to_vec();
        if let Some(b) = bos {
            input[0] = b;
        }
        let logits = forward(&input)?;
        if logits.len() != ctx * vocab {
            return Err(AgreementError::Reference(format!(
                "the forward pass gave {} logits for {ctx} positions of {vocab}",
                logits.len()
            )));
        }
        for (r, p) in rows.iter().enumerate() {
            let pos = first + r;
            let row = &logits[pos * vocab..(pos + 1) * vocab];
            // NaN logits give a NaN sum: no distribution at all, the farthest from llama.cpp's.
            let kl = Some(position_kl(p, row)).filter(|k| !k.is_nan()).unwrap_or(f64::INFINITY);
            if kl > worst_kl {
                (worst, worst_kl) = ((c, pos), kl);
            }
            values.push(kl);
            // llama.cpp's top-1: the first of the largest stored entries.
            let top = p.q.iter().copied().max().unwrap_or(0);
            same_top1 += usize::from(p.q.iter().position(|&q| q == top) == Some(argmax(row) as usize));
        }
    }
    let n = values.len().max(1) as f64;
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(KlDivergence {
        n_ctx: ctx,
        chunks: base.n_chunk,
        mean: values.iter().sum::<f64>() / n,
        p99: if sorted.is_empty() { f64::NAN } else { crate::stats::quantile_sorted(&sorted, 0.99) },
        max: worst_kl,
        values,
        worst,
        same_top1,
    })
}

/// Top-1 agreement between two runs of the same sequences through `model`,
/// once with each KV cache element type.
#[derive(Debug, Clone, Serialize)]
pub struct KvPrecision {
    /// Positions compared.
    pub total: usize,
    /// Positions with the same top-1.
    pub agree: usize,
}

/// Runs each sequence (prompt + `n` greedy tokens) with an f32 and then a
/// reduced-precision (`reduced`) KV cache and compares top-1 at every position.
pub fn kv_precision(
    model: &mut Model,
    tok: &Tokenizer,
    prompts: &[String],
    n: usize,
    reduced: crate::model::KvType,
) -> Result<KvPrecision, AgreementError> {
    let vocab = model.config.vocab_size;
    let original = model.kv_type;
    let run = |model: &mut Model, ty, seq: &[u32]| {
        model.kv_type = ty;
        let out = model.forward(seq, &mut model.new_cache(seq.len()), Logits::All);
        model.kv_type = original;
        out
    };
    let (mut total, mut agree) = (0, 0);
    for p in prompts {
        let mut seq = tok.encode(p, true);
        model.kv_type = crate::model::KvType::F32;
        let opts = GenerateOptions {
            max_tokens: n,
            sampler: SamplerConfig { temperature: 0.0, ..SamplerConfig::default() },
            ignore_eos: true,
            time_bricks: false,
        };
        let generated = engine::generate(model, tok, &seq, &opts, |_| {});
        model.kv_type = original;
        seq.extend(generated?.tokens);
        let full = run(model, crate::model::KvType::F32, &seq)?;
        let low = run(model, reduced, &seq)?;
        let r = top1_agreement(&full, &low, vocab);
        (total, agree) = (total + r.total, agree + r.agree);
    }
    Ok(KvPrecision { total, agree })
}

/// Top-1 agreement, position by position, of two runs' logits (`vocab` per position).
pub fn top1_agreement(full: &[f32], reduced: &[f32], vocab: usize) -> KvPrecision {
    let rows = full.chunks_exact(vocab).zip(reduced.chunks_exact(vocab));
    let positions = full.len().max(reduced.len()) / vocab.max(1);
    KvPrecision { total: positions, agree: rows.filter(|(a, b)| argmax(a) == argmax(b)).count() }
}

/// Positions whose logits change when only a later token changes: runs
/// `tokens` and `tokens` with its last token replaced, and lists every earlier
/// position whose logits differ at all.
pub fn causal_mask_violations(model: &Model, tokens: &[u32], replacement: u32) -> Result<Vec<String>, AgreementError> {
    causal_violations(model.config.vocab_size, tokens, replacement, |seq| {
        Ok(model.forward(seq, &mut model.new_cache(seq.len()), Logits::All)?)
    })
}

/// [`causal_mask_violations`] of any forward pass: `forward(seq)` gives the
/// logits of every position of `seq` (`vocab` each) from an empty cache.
pub fn causal_violations(
    vocab: usize,
    tokens: &[u32],
    replacement: u32,
    mut forward: impl FnMut(&[u32]) -> Result<Vec<f32>, AgreementError>,
) -> Result<Vec<String>, AgreementError> {
    let mut other = tokens.to_vec();
    if let Some(last) = other.last_mut() {
        *last = replacement;
    }
    let a = forward(tokens)?;
    let b = forward(&other)?;
    let earlier = tokens.len().saturating_sub(1);
    Ok((0..earlier)
        .filter_map(|pos| {
            let (ra, rb) = (&a[pos * vocab..(pos + 1) * vocab], &b[pos * vocab..(pos + 1) * vocab]);
            let worst = ra.iter().zip(rb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            (worst != 0.0)
                .then(|| format!("position {pos} changed by up to {worst:e} when only position {earlier} changed"))
        })
        .collect())
}

/// Decode steps whose logits hold NaN or ±Inf over a greedy generation of `n`
/// tokens after `prompt` (end-of-generation ignored).
pub fn non_finite_steps(model: &Model, prompt: &[u32], n: usize) -> Result<Vec<String>, AgreementError> {
    let mut cache = model.new_cache(prompt.len() + n);
    let first = model.forward(prompt, &mut cache, Logits::Last)?;
    non_finite_of(first, n, |next| Ok(model.forward(&[next], &mut cache, Logits::Last)?))
}

/// [`non_finite_steps`] of any decoder: `first` are the prompt's last logits,
/// and `step(token)` decodes one token and gives the next logits.
pub fn non_finite_of(
    first: Vec<f32>,
    n: usize,
    mut step: impl FnMut(u32) -> Result<Vec<f32>, AgreementError>,
) -> Result<Vec<String>, AgreementError> {
    let mut bad = Vec::new();
    let mut logits = first;
    for i in 0..n {
        let count = logits.iter().filter(|x| !x.is_finite()).count();
        if count > 0 {
            bad.push(format!("step {i}: {count} non-finite logits"));
        }
        if i + 1 < n {
            logits = step(argmax(&logits))?;
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::{kl_of, position_kl, AgreementError};
    use crate::baseline::kl_base::{encode, KlBase, LogProbRow};
    use std::io::Cursor;

    #[test]
    fn position_kl_is_the_hand_computed_divergence() {
        // P = (1/2, 1/2), Q = (3/4, 1/4): ½ ln(2/3) + ½ ln 2.
        let p = LogProbRow::quantize(&[0.0, 0.0]);
        let kl = position_kl(&p, &[3f32.ln(), 0.0]);
        assert!((kl - (0.5 * (2.0f64 / 3.0).ln() + 0.5 * 2f64.ln())).abs() < 1e-6, "{kl}");
        let logits = [1.5f32, -0.25, 3.0, 0.0, -2.0];
        assert!(position_kl(&LogProbRow::quantize(&logits), &logits).abs() < 1e-4);
        // A token clipped in llama.cpp's file is left out of the sum, however Q weighs it.
        let clipped = LogProbRow::quantize(&[0.0, -30.0]);
        assert!(position_kl(&clipped, &[0.0, -30.0]).abs() < 1e-6);
    }

    #[test]
    fn kl_of_feeds_the_file_tokens_with_bos_and_scores_the_second_half() {
        let (ctx, vocab) = (6, 3);
        let tokens: Vec<u32> = vec![1, 2, 0, 1, 2, 0, 2, 2, 1, 0, 0, 1];
        // Rows for positions 3 and 4 of each chunk; position 3 of chunk 1 is far from uniform.
        let rows =
            [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 0.0]].map(|l| LogProbRow::quantize(&l));
        let bytes = encode(ctx, vocab, &tokens, &rows);
        let mut base = KlBase::read(Cursor::new(&bytes[..]), bytes.len() as u64).unwrap();
        let mut seen = Vec::new();
        let r = kl_of(&mut base, Some(2), |chunk| {
            seen.push(chunk.to_vec());
            Ok(vec![0.0; ctx * vocab])
        })
        .unwrap();
        assert_eq!(seen, [vec![2, 2, 0, 1, 2, 0], vec![2, 2, 1, 0, 0, 1]]);
        assert_eq!((r.positions(), r.chunks, r.worst), (4, 2, (1, 3)));
        assert!(r.values[0].abs() < 1e-6 && r.values[2] > 0.5, "{:?}", r.values);
        assert!((r.mean - r.values.iter().sum::<f64>() / 4.0).abs() < 1e-12 && r.max == r.values[2]);
        // Uniform logits pick token 0; llama.cpp's top-1 is token 0 on every row.
        assert_eq!(r.same_top1, 4);
        // NaN logits are no distribution: an infinite divergence, not a NaN that reads as unmeasured.
        let mut base = KlBase::read(Cursor::new(&bytes[..]), bytes.len() as u64).unwrap();
        let r = kl_of(&mut base, None, |_| Ok(vec![f32::NAN; ctx * vocab])).unwrap();
        assert_eq!(r.mean, f64::INFINITY);
        // A forward pass of the wrong width is an error.
        let mut base = KlBase::read(Cursor::new(&bytes[..]), bytes.len() as u64).unwrap();
        let err = kl_of(&mut base, None, |_| Ok(vec![0.0; 5])).unwrap_err();
        assert!(matches!(err, AgreementError::Reference(m) if m.contains("5 logits for 6 positions")));
    }
}
