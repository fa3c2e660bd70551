//! Correctness checks on the real models: agreement with llama.cpp (tokens,
//! teacher-forced top-1, greedy text, chat template, perplexity, KL divergence
//! of the full next-token distribution) and the
//! engine's own consistency (KV cache, fast vs scalar kernels, reduced-precision
//! KV, causal mask, finite logits, reproducibility).

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::{kind, Check, Kind};
use crate::agreement;
use crate::baseline::kl_base::KlBase;
use crate::baseline::BaselineError;
use crate::claims::{BaselineValue, Context, Outcome, Unmet};
use crate::engine::{self, GenerateOptions};
use crate::model::KvType;
use crate::quant::SumOrder;
use crate::sample::SamplerConfig;
use crate::stats::Op;
use crate::tokenizer::Tokenizer;

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![
        kind::<Tokenization>(),
        kind::<RoundTrip>(),
        kind::<TeacherForced>(),
        kind::<GreedyText>(),
        kind::<ChatTemplate>(),
        kind::<Perplexity>(),
        kind::<KlDivergence>(),
        kind::<KvConsistency>(),
        kind::<FastVsReference>(),
        kind::<KvPrecision>(),
        kind::<CausalMask>(),
        kind::<FiniteLogits>(),
        kind::<Reproducible>(),
    ]
}

fn one() -> f64 {
    1.0
}

/// Parameters naming just a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOnly {
    /// Model size.
    pub model: String,
}

/// Parameters of rate checks: a model, the rate to reach and the fewest cases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateParams {
    /// Model size.
    pub model: String,
    /// Fraction of cases that must agree (default 1).
    #[serde(default = "one")]
    pub min_rate: f64,
    /// Fewest cases for a decision (default 1).
    #[serde(default)]
    pub min_cases: usize,
    /// Tokens generated per prompt, where the check generates (default 32).
    #[serde(default = "default_tokens")]
    pub tokens: usize,
}

fn default_tokens() -> usize {
    32
}

fn map_err(e: agreement::AgreementError) -> Unmet {
    Unmet::failed(e)
}

fn corpus(cx: &Context) -> Result<Vec<String>, Unmet> {
    agreement::corpus(&cx.root).map_err(|e| Unmet::Failed(format!("tests/fixtures/tokenizer-corpus.jsonl: {e}")))
}

fn prompts(cx: &Context) -> Result<Vec<String>, Unmet> {
    agreement::prompts(&cx.root).map_err(|e| Unmet::Failed(format!("tests/fixtures/prompts.json: {e}")))
}

/// `tokenization`: our ids equal llama-server's `/tokenize` on the corpus.
pub struct Tokenization;

impl Check for Tokenization {
    const NAME: &'static str = "tokenization";
    const DOC: &'static str = "token ids equal llama.cpp's on every string of the tokenizer corpus";
    const PARAMS: &'static str = "model, min_rate (default 1), min_cases";
    type Params = RateParams;

    fn run(p: &RateParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let corpus = corpus(cx)?;
        let (loaded, srv) = cx.model_and_server(&p.model)?;
        let r = agreement::tokenization(&loaded.tokenizer, srv, &corpus).map_err(map_err)?;
        Ok(judge_tokenization(p, r))
    }
}

/// Judges a tokenization comparison.
pub fn judge_tokenization(p: &RateParams, r: agreement::Tokenization) -> Outcome {
    judge::rate("identical_tokenization", r.identical, r.total, p.min_rate, p.min_cases, r.mismatches)
}

/// `round_trip`: decode(encode(s)) == s on the corpus.
pub struct RoundTrip;

impl Check for RoundTrip {
    const NAME: &'static str = "round_trip";
    const DOC: &'static str = "detokenize(tokenize(s)) == s for every corpus string";
    const PARAMS: &'static str = "model";
    type Params = ModelOnly;

    fn run(p: &ModelOnly, cx: &mut Context) -> Result<Outcome, Unmet> {
        let corpus = corpus(cx)?;
        let tok = &cx.model(&p.model)?.tokenizer;
        Ok(judge_round_trip(corpus.len(), agreement::round_trip_failures(tok, &corpus)))
    }
}

/// Judges a round trip of `checked` corpus strings, of which `failures` did not come back.
pub fn judge_round_trip(checked: usize, failures: Vec<String>) -> Outcome {
    let bad = failures.into_iter().map(|s| format!("{s:?}")).collect();
    judge::no_violations("round_trip_failures", checked, bad)
}

/// `teacher_forced`: our top-1 equals llama.cpp's greedy token at each generated position.
pub struct TeacherForced;

impl Check for TeacherForced {
    const NAME: &'static str = "teacher_forced";
    const DOC: &'static str = "top-1 next token agrees with llama.cpp's greedy continuation, position by position";
    const PARAMS: &'static str = "model, min_rate, min_cases (positions), tokens (per prompt)";
    type Params = RateParams;

    fn run(p: &RateParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let prompts = prompts(cx)?;
        let key = format!("teacher_forced/{}/{}", p.model, p.tokens);
        cx.say("teacher forcing against llama-server");
        let r = cx.memo(&key, |cx| {
            let (loaded, srv) = cx.model_and_server(&p.model)?;
            agreement::teacher_forced(&loaded.model, &loaded.tokenizer, srv, &prompts, p.tokens).map_err(map_err)
        })?;
        Ok(judge_teacher_forced(p, &r))
    }
}

/// Judges a teacher-forced comparison.
pub fn judge_teacher_forced(p: &RateParams, r: &agreement::TeacherForced) -> Outcome {
    let mut details = vec![format!(
        "log-probability of llama.cpp's top-2 candidates, ours vs llama.cpp: mean |difference| {:.4}, max {:.4} nats",
        r.mean_abs_logprob_diff, r.max_abs_logprob_diff
    )];
    details.extend(r.disagreements.iter().take(10).cloned());
    judge::rate("teacher_forced_top1", r.agree, r.total, p.min_rate, p.min_cases, details)
}

/// `greedy_text`: our greedy continuation equals llama-completion's, prompt by prompt.
pub struct GreedyText;

impl Check for GreedyText {
    const NAME: &'static str = "greedy_text";
    const DOC: &'static str = "greedy continuations equal llama-completion's text, prompt by prompt";
    const PARAMS: &'static str = "model, min_rate, min_cases (prompts), tokens";
    type Params = RateParams;

    fn run(p: &RateParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let prompts = prompts(cx)?;
        let llama = cx.llama()?;
        let loaded = cx.model(&p.model)?;
        let r = agreement::greedy_text(&loaded.model, &loaded.tokenizer, &llama, &loaded.path, &prompts, p.tokens)
            .map_err(map_err)?;
        let mut context = Vec::new();
        if r.identical < r.total {
            let threads = cx.settings.threads;
            let path = cx.model_path(&p.model)?;
            let same = agreement::llama_self_agreement(&llama, &path, &prompts, p.tokens, threads).map_err(map_err)?;
            context.push(agreement::self_agreement_line(&same, r.total));
        }
        Ok(judge_greedy(p, r, context))
    }
}

/// Judges a greedy-text comparison; `context` lines follow its differences.
pub fn judge_greedy(p: &RateParams, r: agreement::GreedyText, context: Vec<String>) -> Outcome {
    let mut details = r.differences;
    details.extend(context);
    judge::rate("identical_greedy_text", r.identical, r.total, p.min_rate, p.min_cases, details)
}

/// `chat_template`: our rendering of a chat prompt gives the same tokens as llama.cpp's template.
pub struct ChatTemplate;

/// Judges rendered chat prompts: (user message, ours, llama.cpp's) token ids.
pub fn judge_chat(cases: &[(String, Vec<u32>, Vec<u32>)]) -> Outcome {
    let bad =
        cases.iter().filter(|(_, a, b)| a != b).map(|(u, a, b)| format!("{u:?}: ours {a:?} llama.cpp {b:?}")).collect();
    judge::no_violations("chat_template_mismatches", cases.len(), bad)
}

impl Check for ChatTemplate {
    const NAME: &'static str = "chat_template";
    const DOC: &'static str = "the Qwen chat prompt renders to the same tokens as llama.cpp's template";
    const PARAMS: &'static str = "model";
    type Params = ModelOnly;

    fn run(p: &ModelOnly, cx: &mut Context) -> Result<Outcome, Unmet> {
        let (loaded, srv) = cx.model_and_server(&p.model)?;
        let mut cases = Vec::new();
        for user in ["Write a haiku about compilers.", "fn main() {}\n// explain this", "你好，世界 🌍", ""] {
            let ours = loaded.tokenizer.encode(&Tokenizer::chat_prompt(user, None), true);
            let text = srv.apply_template(user).map_err(Unmet::failed)?;
            let theirs = srv.tokenize(&text).map_err(Unmet::failed)?;
            cases.push((user.to_owned(), ours, theirs));
        }
        Ok(judge_chat(&cases))
    }
}

/// Parameters of `perplexity`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerplexityParams {
    /// Model size.
    pub model: String,
    /// Chunk length, tokens.
    pub ctx: usize,
    /// Text file under tests/fixtures/.
    pub text: String,
    /// Largest relative difference from llama.cpp's estimate.
    pub max_rel_diff: f64,
}

/// Judges our perplexity against llama.cpp's.
pub fn judge_perplexity(p: &PerplexityParams, ours: f64, theirs: f64, provenance: Option<String>) -> Outcome {
    let mut q = Quantity::new("perplexity_rel_diff", "fraction", (ours / theirs - 1.0).abs());
    q.n = 1;
    q.baseline = Some(BaselineValue { engine: "llama.cpp".into(), value: theirs, provenance });
    let q = q.detail(format!("perplexity: falsify {ours:.4}, llama-perplexity {theirs:.4} ({}-token chunks)", p.ctx));
    judge::quantity(q, Op::Le, p.max_rel_diff)
}

/// `perplexity`: our perplexity of a fixed text within a relative tolerance of llama-perplexity's.
pub struct Perplexity;

impl Check for Perplexity {
    const NAME: &'static str = "perplexity";
    const DOC: &'static str = "perplexity of a fixed text within a relative tolerance of llama-perplexity's";
    const PARAMS: &'static str = "model, ctx, text (under tests/fixtures), max_rel_diff";
    type Params = PerplexityParams;

    fn run(p: &PerplexityParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let llama = cx.llama()?;
        let text_path = cx.fixture(&p.text);
        let text =
            std::fs::read_to_string(&text_path).map_err(|e| Unmet::Failed(format!("{}: {e}", text_path.display())))?;
        let threads = cx.settings.threads;
        let path = cx.model_path(&p.model)?;
        cx.say("perplexity: llama-perplexity, then the engine");
        let (theirs, _) = llama.perplexity(&path, &text_path, p.ctx, threads).map_err(Unmet::failed)?;
        let loaded = cx.model(&p.model)?;
        let tokens = loaded.tokenizer.encode(&text, false);
        let ours = agreement::perplexity(&loaded.model, &tokens, p.ctx).map_err(map_err)?;
        Ok(judge_perplexity(p, ours, theirs, llama.provenance()))
    }
}

/// Parameters of `kl_divergence`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlParams {
    /// Model size.
    pub model: String,
    /// Chunk length, tokens (llama-perplexity's `-c`).
    pub ctx: usize,
    /// Text file under tests/fixtures/.
    pub text: String,
    /// Chunks to score (llama-perplexity's `--chunks`; default: every whole chunk of the text).
    #[serde(default)]
    pub chunks: Option<usize>,
    /// The mean KL must stay below this, nats.
    pub threshold: f64,
}

/// Judges the KL divergence of the engine's next-token distributions from
/// llama.cpp's: its mean (with a bootstrap CI over positions) below the threshold.
pub fn judge_kl(p: &KlParams, r: &agreement::KlDivergence, provenance: Option<String>) -> Outcome {
    let mut q = Quantity::new("mean_kl_divergence", "nats", r.mean);
    q.n = r.positions();
    q.ci = judge::bootstrap(&r.values, |xs| xs.iter().sum::<f64>() / xs.len() as f64);
    let build = provenance
        .as_deref()
        .and_then(|t| t.lines().find(|l| l.trim_start().starts_with("version")))
        .map(|l| format!(" ({})", l.trim()))
        .unwrap_or_default();
    let q = q
        .detail(format!(
            "KL(llama.cpp ‖ falsify) over {} positions (the second half of {} chunks of {} tokens): mean {:.6}, \
             p99 {:.6}, max {:.6} nats (max at chunk {}, position {})",
            r.positions(),
            r.chunks,
            r.n_ctx,
            r.mean,
            r.p99,
            r.max,
            r.worst.0,
            r.worst.1
        ))
        .detail(format!(
            "llama.cpp's distributions: llama-perplexity --kl-divergence-base{build} (its log-softmax of every \
             token, 16-bit quantized per row; tokens below −16 nats clipped and left out of the sum, as its own \
             --kl-divergence does); ours: Model::load with its default kernels and sum order, logits at every position"
        ))
        .detail(format!("same top-1 token at {}/{} positions", r.same_top1, r.positions()));
    judge::quantity(q, Op::Lt, p.threshold)
}

/// `kl_divergence`: mean KL(llama.cpp ‖ engine) of the full next-token distribution below a threshold.
pub struct KlDivergence;

impl Check for KlDivergence {
    const NAME: &'static str = "kl_divergence";
    const DOC: &'static str = "mean KL divergence from llama-perplexity's full next-token distributions \
         (--kl-divergence-base) to the engine's, over the same tokens and positions, below a threshold";
    const PARAMS: &'static str = "model, ctx, text (under tests/fixtures), chunks (default all), threshold (nats)";
    type Params = KlParams;

    fn run(p: &KlParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let llama = cx.llama()?;
        let text = cx.fixture(&p.text);
        let threads = cx.settings.threads;
        let path = cx.model_path(&p.model)?;
        let dir = tempfile::tempdir().map_err(|e| Unmet::Failed(format!("a temporary directory: {e}")))?;
        let file = dir.path().join("kl-base.bin");
        cx.say("KL divergence: llama-perplexity --kl-divergence-base, then the engine on the same tokens");
        llama.kl_divergence_base(&path, &text, p.ctx, p.chunks, threads, &file).map_err(|e| match e {
            BaselineError::Missing { .. } => Unmet::Missing(e.to_string()),
            e => Unmet::failed(e),
        })?;
        let mut base = KlBase::open(&file).map_err(|e| Unmet::Failed(format!("{}: {e}", file.display())))?;
        let loaded = cx.model(&p.model)?;
        let r = agreement::kl_divergence(&loaded.model, loaded.tokenizer.add_bos, &mut base).map_err(map_err)?;
        Ok(judge_kl(p, &r, llama.provenance()))
    }
}

/// Parameters of checks with a numeric tolerance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToleranceParams {
    /// Model size.
    pub model: String,
    /// Largest |logit difference| allowed.
    pub tolerance: f64,
}

/// Parameters of `kv_consistency`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvParams {
    /// Model size.
    pub model: String,
    /// Largest |logit difference| allowed.
    pub tolerance: f64,
    /// How the engine orders its sums on both sides: `blocks` (whole-block
    /// sums, batch-invariant), `llama-cpp` (by batch size) or
    /// `batch-invariant` (every row as a one-row product, so that only the KV
    /// cache can make the two sides differ); absent, the order the engine
    /// runs with ([`SumOrder::process`]).
    #[serde(default)]
    pub sum_order: Option<SumOrder>,
}

impl KvParams {
    /// The order both sides sum in: the one named, else the engine's.
    fn order(&self) -> SumOrder {
        self.sum_order.unwrap_or_else(SumOrder::process)
    }
}

const KV_TEXT: &str = "fn add(a: i32, b: i32) -> i32 { a + b }";

/// Judges incremental-vs-recompute logits: the worst difference, or a top-1 change.
pub fn judge_kv(p: &KvParams, observed: Result<f32, String>, positions: usize) -> Outcome {
    match observed {
        Ok(worst) => {
            let mut q = Quantity::new("max_abs_logit_diff", "logit", f64::from(worst));
            q.n = positions;
            let how = p.order().describe();
            judge::quantity(
                q.detail(format!("token-by-token decode vs one batched forward pass; {how}")),
                Op::Le,
                p.tolerance,
            )
        }
        Err(top1) => judge::no_violations("kv_top1_changes", positions, vec![top1]),
    }
}

/// `kv_consistency`: token-by-token decode with the KV cache equals one batched pass.
pub struct KvConsistency;

impl Check for KvConsistency {
    const NAME: &'static str = "kv_consistency";
    const DOC: &'static str =
        "incremental decode through the KV cache equals a batched recompute (logits within tolerance)";
    const PARAMS: &'static str =
        "model, tolerance, sum_order (blocks | llama-cpp | batch-invariant; default: the engine's)";
    type Params = KvParams;

    fn run(p: &KvParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let loaded = cx.model(&p.model)?;
        let tokens = loaded.tokenizer.encode(KV_TEXT, true);
        let r = agreement::kv_cache_consistency(&mut loaded.model, &tokens, p.order()).map_err(map_err)?;
        Ok(judge_kv(p, r, tokens.len()))
    }
}

/// Judges fast-vs-reference logits.
pub fn judge_fast(p: &ToleranceParams, r: &agreement::FastVsReference, kernels: &str) -> Outcome {
    let mut bad: Vec<String> = r
        .top1_differences
        .iter()
        .map(|(pos, gap)| format!("position {pos}: top-1 differs (reference top-2 gap {gap:.4})"))
        .collect();
    if f64::from(r.max_abs_logit_diff) > p.tolerance {
        bad.push(format!("max |logit difference| {} > tolerance {}", r.max_abs_logit_diff, p.tolerance));
    }
    let mut out = judge::no_violations("fast_vs_scalar_violations", r.positions, bad);
    if let Some(e) = out.evidence.as_mut() {
        e.details.push(format!(
            "{kernels} vs scalar: same top-1 at {}/{} positions, |logit difference| mean {:.4} max {:.4}",
            r.same_top1, r.positions, r.mean_abs_logit_diff, r.max_abs_logit_diff
        ));
    }
    out
}

/// `fast_vs_reference`: the fast kernels give the scalar reference's top-1 everywhere, logits within tolerance.
pub struct FastVsReference;

impl Check for FastVsReference {
    const NAME: &'static str = "fast_vs_reference";
    const DOC: &'static str =
        "fast kernels match the scalar reference: same top-1 at every position, logits within tolerance \
         (skipped where the host runs only the scalar kernels)";
    const PARAMS: &'static str = "model, tolerance (0: bit for bit)";
    type Params = ToleranceParams;

    fn run(p: &ToleranceParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        if cx.model(&p.model)?.model.kernels == crate::kernels::Kernels::SCALAR {
            return Err(Unmet::Missing(
                "this host runs only the scalar kernels (no AVX2, FMA and F16C): there is no fast path to compare \
                 with the scalar reference"
                    .into(),
            ));
        }
        let key = format!("fast_vs_reference/{}", p.model);
        cx.say("running the scalar reference path (slow)");
        let r = cx.memo(&key, |cx| {
            let loaded = cx.model(&p.model)?;
            let tokens = loaded
                .tokenizer
                .encode("def quicksort(arr):\n    if len(arr) <= 1:\n        return arr\n    pivot = arr[0]", true);
            agreement::fast_vs_reference(&mut loaded.model, &tokens).map_err(map_err)
        })?;
        let kernels = cx.model(&p.model)?.model.kernels.name();
        Ok(judge_fast(p, &r, kernels))
    }
}

/// `kv_precision`: an f16 KV cache keeps top-1 agreement with an f32 one.
pub struct KvPrecision;

impl Check for KvPrecision {
    const NAME: &'static str = "kv_precision";
    const DOC: &'static str =
        "top-1 agreement of an f16 KV cache with an f32 KV cache over prompts and their continuations";
    const PARAMS: &'static str = "model, min_rate, min_cases (positions), tokens";
    type Params = RateParams;

    fn run(p: &RateParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let prompts = prompts(cx)?;
        let loaded = cx.model(&p.model)?;
        let r = agreement::kv_precision(&mut loaded.model, &loaded.tokenizer, &prompts, p.tokens, KvType::F16)
            .map_err(map_err)?;
        Ok(judge_kv_precision(p, &r))
    }
}

/// Judges the top-1 agreement of a reduced-precision KV cache with an f32 one.
pub fn judge_kv_precision(p: &RateParams, r: &agreement::KvPrecision) -> Outcome {
    judge::rate("f16_vs_f32_kv_top1", r.agree, r.total, p.min_rate, p.min_cases, Vec::new())
}

/// `causal_mask`: changing a later token never changes earlier positions' logits.
pub struct CausalMask;

impl Check for CausalMask {
    const NAME: &'static str = "causal_mask";
    const DOC: &'static str = "changing only the last token leaves every earlier position's logits bit-identical";
    const PARAMS: &'static str = "model";
    type Params = ModelOnly;

    fn run(p: &ModelOnly, cx: &mut Context) -> Result<Outcome, Unmet> {
        let loaded = cx.model(&p.model)?;
        let tokens = loaded.tokenizer.encode("The quick brown fox jumps over the lazy dog", true);
        let replacement = loaded.tokenizer.encode(" cat", false).first().copied().unwrap_or(0);
        let bad = agreement::causal_mask_violations(&loaded.model, &tokens, replacement).map_err(map_err)?;
        Ok(judge_causal(tokens.len(), bad))
    }
}

/// Judges the positions of a `tokens`-long sequence whose logits moved when only its last token changed.
pub fn judge_causal(tokens: usize, moved: Vec<String>) -> Outcome {
    judge::no_violations("causal_mask_violations", tokens.saturating_sub(1), moved)
}

/// `finite_logits`: no NaN or Inf over a long greedy generation.
pub struct FiniteLogits;

impl Check for FiniteLogits {
    const NAME: &'static str = "finite_logits";
    const DOC: &'static str = "no NaN/Inf in the logits of any step of a long greedy generation";
    const PARAMS: &'static str = "model, tokens (min_rate and min_cases unused)";
    type Params = RateParams;

    fn run(p: &RateParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let loaded = cx.model(&p.model)?;
        let prompt = loaded.tokenizer.encode("def main():\n", true);
        cx.say(format_args!("generating {} tokens, checking every logit", p.tokens));
        let loaded = cx.model(&p.model)?;
        let bad = agreement::non_finite_steps(&loaded.model, &prompt, p.tokens).map_err(map_err)?;
        Ok(judge_finite(p.tokens, bad))
    }
}

/// Judges a generation of `steps` steps, of which `bad` had non-finite logits.
pub fn judge_finite(steps: usize, bad: Vec<String>) -> Outcome {
    let mut out = judge::no_violations("non_finite_steps", steps, bad);
    if let Some(e) = out.evidence.as_mut() {
        e.details.push("checked: the logits of every step (per-brick outputs are not exposed yet)".into());
    }
    out
}

/// `reproducible`: seeded sampling repeats exactly; greedy output is the same at 1 and 2 threads.
pub struct Reproducible;

fn generate(cx: &mut Context, size: &str, sampler: SamplerConfig, threads: usize, n: usize) -> Result<Vec<u32>, Unmet> {
    let loaded = cx.model(size)?;
    let before = loaded.model.threads();
    loaded.model.set_threads(threads);
    let prompt = loaded.tokenizer.encode("Once upon a time", true);
    let opts = GenerateOptions { max_tokens: n, sampler, ignore_eos: true, time_bricks: false };
    let g = engine::generate(&loaded.model, &loaded.tokenizer, &prompt, &opts, |_| {});
    loaded.model.set_threads(before);
    Ok(g.map_err(Unmet::failed)?.tokens)
}

/// Judges pairs of runs that must be identical: (what, first run, second run).
pub fn judge_identical(pairs: &[(String, Vec<u32>, Vec<u32>)]) -> Outcome {
    let bad = pairs
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(what, a, b)| {
            let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            format!("{what}: runs part at token {at}")
        })
        .collect();
    judge::no_violations("irreproducible_runs", pairs.len(), bad)
}

impl Check for Reproducible {
    const NAME: &'static str = "reproducible";
    const DOC: &'static str = "seeded sampling repeats exactly, and greedy output is identical at 1 and 2 threads";
    const PARAMS: &'static str = "model, tokens (min_rate and min_cases unused)";
    type Params = RateParams;

    fn run(p: &RateParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let seeded = SamplerConfig { temperature: 0.8, seed: 1234, ..SamplerConfig::default() };
        let greedy = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
        let threads = cx.settings.threads.max(2);
        let pairs = vec![
            (
                "seeded sampling (temperature 0.8, seed 1234), twice".to_owned(),
                generate(cx, &p.model, seeded, threads, p.tokens)?,
                generate(cx, &p.model, seeded, threads, p.tokens)?,
            ),
            (
                format!("greedy at 1 thread vs {threads} threads"),
                generate(cx, &p.model, greedy, 1, p.tokens)?,
                generate(cx, &p.model, greedy, threads, p.tokens)?,
            ),
        ];
        Ok(judge_identical(&pairs))
    }
}
