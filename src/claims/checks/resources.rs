//! Resource checks: heap allocations per decoded token and memory growth
//! (through the counting allocator the binaries install), KV cache sizes,
//! attention working memory, behaviour under a memory limit, system calls
//! per token (strace), and the backend choice.

use std::ffi::OsStr;
use std::process::Command;

use serde::Deserialize;
use stats_alloc::{Region, Stats, INSTRUMENTED_SYSTEM};

use super::judge::{self, Quantity};
use super::{kind, Check, Kind};
use crate::claims::{Context, Outcome, Unmet};
use crate::kernels::{Kernels, Pool};
use crate::model::{attention, KvCache, KvType, Logits};
use crate::rng::SplitMix64;
use crate::sample::argmax;
use crate::stats::Op;

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![
        kind::<AllocPerToken>(),
        kind::<MemoryGrowth>(),
        kind::<KvMemory>(),
        kind::<AttentionMemory>(),
        kind::<MemoryLimit>(),
        kind::<SyscallsPerToken>(),
        kind::<BackendChoice>(),
        kind::<PeakRss>(),
    ]
}

/// Heap activity over `f`, or `Missing` when this binary does not count
/// allocations (the counting allocator is installed by `falsify` and the claims harness).
pub fn heap_activity<T>(f: impl FnOnce() -> T) -> Result<(T, Stats), Unmet> {
    let probe = Region::new(&INSTRUMENTED_SYSTEM);
    std::hint::black_box(Box::new(1u8));
    if probe.change().allocations == 0 {
        return Err(Unmet::Missing(
            "this binary does not install the counting allocator (falsify and the claims harness do)".into(),
        ));
    }
    let region = Region::new(&INSTRUMENTED_SYSTEM);
    let out = f();
    Ok((out, region.change()))
}

/// Parameters of decode-loop checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeParams {
    /// Model size.
    pub model: String,
    /// Decode steps before measuring.
    pub warmup: usize,
    /// Decode steps measured.
    pub steps: usize,
    /// Operator.
    pub op: Op,
    /// Threshold (allocations per token, or bytes of growth).
    pub threshold: f64,
}

/// Greedy decode steps `warmup..warmup+steps` after a short prompt, with the
/// heap activity of the measured steps.
fn decode_activity(cx: &mut Context, p: &DecodeParams) -> Result<Stats, Unmet> {
    let loaded = cx.model(&p.model)?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let prompt = tok.encode("def main():\n", true);
    let mut cache = model.new_cache(prompt.len() + p.warmup + p.steps + 1);
    let mut logits = model.forward(&prompt, &mut cache, Logits::Last).map_err(Unmet::failed)?;
    for _ in 0..p.warmup {
        let next = argmax(&logits);
        model.forward_into(&[next], &mut cache, Logits::Last, None, &mut logits).map_err(Unmet::failed)?;
    }
    let (r, stats) = heap_activity(|| {
        for _ in 0..p.steps {
            let next = argmax(&logits);
            model.forward_into(&[next], &mut cache, Logits::Last, None, &mut logits)?;
        }
        Ok::<(), crate::model::ModelError>(())
    })?;
    r.map_err(Unmet::failed)?;
    Ok(stats)
}

/// Judges heap allocations per decoded token.
pub fn judge_allocs(p: &DecodeParams, s: &Stats) -> Outcome {
    let mut q = Quantity::new("allocations_per_token", "allocations", s.allocations as f64 / p.steps.max(1) as f64);
    q.n = p.steps;
    let q = q.detail(format!(
        "{} allocations, {} reallocations, {} bytes over {} steady-state decode steps",
        s.allocations, s.reallocations, s.bytes_allocated, p.steps
    ));
    judge::quantity(q, p.op, p.threshold)
}

/// `alloc_per_token`: heap allocations per decoded token in steady state.
pub struct AllocPerToken;

impl Check for AllocPerToken {
    const NAME: &'static str = "alloc_per_token";
    const DOC: &'static str = "heap allocations per decoded token in steady state (counting allocator)";
    const PARAMS: &'static str = "model, warmup, steps, op, threshold";
    type Params = DecodeParams;

    fn run(p: &DecodeParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let s = decode_activity(cx, p)?;
        Ok(judge_allocs(p, &s))
    }
}

/// Judges net heap growth over the measured decode steps.
pub fn judge_growth(p: &DecodeParams, s: &Stats) -> Outcome {
    // stats_alloc already counts a realloc's growth as allocated and its shrinking
    // as freed (`bytes_reallocated` is the same growth again, for information).
    let net = s.bytes_allocated as f64 - s.bytes_deallocated as f64;
    let mut q = Quantity::new("heap_growth", "bytes", net);
    q.n = p.steps;
    let q = q.detail(format!(
        "over {} decode steps: {} bytes allocated, {} freed (the KV cache is allocated in full up front)",
        p.steps, s.bytes_allocated, s.bytes_deallocated
    ));
    judge::quantity(q, p.op, p.threshold)
}

/// `memory_growth`: live heap does not grow over many decode iterations.
pub struct MemoryGrowth;

impl Check for MemoryGrowth {
    const NAME: &'static str = "memory_growth";
    const DOC: &'static str = "net heap growth over many decode iterations (counting allocator)";
    const PARAMS: &'static str = "model, warmup, steps, op, threshold (bytes)";
    type Params = DecodeParams;

    fn run(p: &DecodeParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        cx.say(format_args!("decoding {} tokens while counting heap bytes", p.warmup + p.steps));
        let s = decode_activity(cx, p)?;
        Ok(judge_growth(p, &s))
    }
}

/// What `kv_memory` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvMetric {
    /// Bytes an f16 cache as large as the model's context commits for
    /// `positions` positions, over those of an f32 cache of `positions`.
    F16BytesRatio,
    /// Positions an f16 cache really runs (the forward pass, keeping top-1
    /// agreement with an f32 run) within the bytes an f32 cache of
    /// `positions` commits, over `positions`.
    ContextRatioAtBudget,
}

/// Parameters of `kv_memory`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvMemoryParams {
    /// Model size whose shape (and, for the budget, whose forward pass) is used.
    pub model: String,
    /// What to compare.
    pub metric: KvMetric,
    /// Positions of the caches compared (for the budget: of the f32 cache that sets it).
    pub positions: usize,
    /// For the budget: the least top-1 agreement with the f32 run that counts as running.
    #[serde(default)]
    pub min_agreement: Option<f64>,
    /// Operator.
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
}

/// How many times an allocation is measured: the counting allocator counts
/// every thread, and other threads' allocations only add, so the least count is kept.
const HEAP_TRIES: usize = 3;

/// The least heap bytes allocated by `f` over [`HEAP_TRIES`] calls (what it
/// returns is dropped after the count).
fn least_heap_bytes<T>(mut f: impl FnMut() -> T) -> Result<usize, Unmet> {
    let mut least = usize::MAX;
    for _ in 0..HEAP_TRIES {
        let (kept, s) = heap_activity(&mut f)?;
        drop(kept);
        least = least.min(s.bytes_allocated);
    }
    Ok(least)
}

/// Makes an empty KV cache of a type and capacity (the engine's, or a broken one in the audit).
pub type NewCache<'a> = &'a dyn Fn(KvType, usize) -> KvCache;

/// The bytes two caches committed for the same positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvBytes {
    /// Positions written to each.
    pub positions: usize,
    /// Capacity of the f16 cache (the model's context).
    pub capacity: usize,
    /// Bytes the f16 cache committed, counted page by page.
    pub f16_bytes: usize,
    /// Bytes the f32 cache of `positions` committed.
    pub f32_bytes: usize,
}

/// Writes `positions` positions into every layer of `cache` (rows of a
/// fixed pattern: the bytes committed do not depend on the values).
fn write_positions(cache: &mut KvCache, positions: usize) -> Result<(), Unmet> {
    const CHUNK: usize = 256;
    let kv_dim = cache.kv_dim();
    let rows: Vec<f32> = (0..CHUNK * kv_dim).map(|i| ((i % 97) as f32 - 48.0) / 16.0).collect();
    while cache.len() < positions {
        let n = CHUNK.min(positions - cache.len());
        for layer in 0..cache.layers() {
            let r = &rows[..n * kv_dim];
            cache.write(layer, cache.len(), r, r).map_err(Unmet::failed)?;
        }
        cache.advance(n);
    }
    Ok(())
}

/// The bytes an f16 cache of `capacity` positions and an f32 cache of
/// `positions` commit once `positions` positions of every layer are written.
pub fn kv_committed_bytes(new_cache: NewCache, capacity: usize, positions: usize) -> Result<KvBytes, Unmet> {
    let committed = |ty, capacity| -> Result<usize, Unmet> {
        let mut cache = new_cache(ty, capacity);
        write_positions(&mut cache, positions)?;
        Ok(cache.usage().peak_bytes)
    };
    Ok(KvBytes {
        positions,
        capacity,
        f16_bytes: committed(KvType::F16, capacity)?,
        f32_bytes: committed(KvType::F32, positions)?,
    })
}

/// Fills a cache through the model's forward pass up to a position, giving
/// the top-1 token of every position from a given one on.
pub type Fill<'a> = &'a mut dyn FnMut(&mut KvCache, usize, usize) -> Result<Vec<u32>, Unmet>;

/// A real run at a fixed KV byte budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRun {
    /// The budget: bytes an f32 cache of `f32_positions` committed.
    pub budget: usize,
    /// Positions of the f32 cache that sets the budget.
    pub f32_positions: usize,
    /// The most bytes the f16 cache held (its pages, compressed or not).
    pub f16_peak: usize,
    /// Positions the forward pass filled the f16 cache with.
    pub filled: usize,
    /// Positions past `f32_positions` whose top-1 agrees with the f32 run.
    pub agree: usize,
    /// Positions past `f32_positions` compared.
    pub compared: usize,
    /// The least agreement that counts as running.
    pub min_agreement: f64,
    /// The f16 cache's compression figures.
    pub usage: crate::model::KvUsage,
}

impl BudgetRun {
    /// Top-1 agreement with the f32 run past the f32 cache's positions.
    pub fn agreement(&self) -> f64 {
        self.agree as f64 / self.compared.max(1) as f64
    }

    /// Positions run within the budget over the f32 cache's: the filled
    /// positions when the f16 cache kept to the budget and to the agreement, else none.
    pub fn ratio(&self) -> f64 {
        let ran = self.f16_peak <= self.budget && self.compared > 0 && self.agreement() >= self.min_agreement;
        (if ran { self.filled } else { 0 }) as f64 / self.f32_positions as f64
    }
}

/// Sets the budget as the bytes an f32 cache commits for `positions`
/// positions of the forward pass, runs an f16 cache held to that budget
/// (compressing cold pages beyond it) to twice as many positions, and
/// compares its top-1 tokens past `positions` with the f32 run's.
pub fn kv_budget_run(
    new_cache: NewCache,
    positions: usize,
    min_agreement: f64,
    fill: Fill,
) -> Result<BudgetRun, Unmet> {
    let twice = 2 * positions;
    let mut full = new_cache(KvType::F32, twice);
    fill(&mut full, positions, twice)?;
    let budget = full.usage().peak_bytes;
    let want = fill(&mut full, twice, positions)?;
    drop(full);
    let mut half = new_cache(KvType::F16, twice);
    half.set_budget(Some(budget));
    let got = fill(&mut half, twice, positions)?;
    Ok(BudgetRun {
        budget,
        f32_positions: positions,
        f16_peak: half.usage().peak_bytes,
        filled: half.len(),
        agree: want.iter().zip(&got).filter(|(a, b)| a == b).count(),
        compared: want.len().min(got.len()),
        min_agreement,
        usage: half.usage(),
    })
}

/// Judges the f16 over f32 bytes committed for the same positions.
pub fn judge_kv_bytes(p: &KvMemoryParams, b: &KvBytes) -> Outcome {
    let q = Quantity::new("f16_kv_bytes_ratio", "x", b.f16_bytes as f64 / b.f32_bytes.max(1) as f64).detail(format!(
        "{} positions written to every layer: an f16 cache with room for {} committed {} bytes, an f32 cache of {} \
         positions {} (bytes of the pages first written, counted page by page)",
        b.positions, b.capacity, b.f16_bytes, b.positions, b.f32_bytes
    ));
    judge::quantity(q, p.op, p.threshold)
}

/// Judges the context run at a fixed KV budget.
pub fn judge_kv_budget(p: &KvMemoryParams, r: &BudgetRun) -> Outcome {
    let ratio = r.usage.compression_ratio().map_or("none made cold".into(), |x| format!("ratio {}", judge::num(x)));
    let q = Quantity::new("context_ratio_at_budget", "x", r.ratio())
        .detail(format!(
            "budget {} bytes (an f32 cache of {} positions of the forward pass); the f16 cache held at most {} bytes \
             over {} positions",
            r.budget, r.f32_positions, r.f16_peak, r.filled
        ))
        .detail(format!(
            "top-1 agreement with the f32 run past position {}: {}/{} ({:.2}%, at least {:.2}% counts as running)",
            r.f32_positions,
            r.agree,
            r.compared,
            100.0 * r.agreement(),
            100.0 * r.min_agreement
        ))
        .detail(format!(
            "pages of {} bytes: {} compressed, {} incompressible, {} stored as one value ({ratio})",
            r.usage.page_bytes, r.usage.compressed_pages, r.usage.incompressible_pages, r.usage.same_fill_pages
        ));
    judge::quantity(q, p.op, p.threshold)
}

/// Fills `cache` through the model's forward pass up to position `until`,
/// cycling through `tokens`, and gives the top-1 token of every position
/// from `top1_from` on.
pub fn fill_by_forward(
    model: &crate::model::Model,
    tokens: &[u32],
    cache: &mut KvCache,
    until: usize,
    top1_from: usize,
) -> Result<Vec<u32>, Unmet> {
    const CHUNK: usize = 64;
    let (vocab, mut logits, mut top1) = (model.config.vocab_size, Vec::new(), Vec::new());
    while cache.len() < until {
        let at = cache.len();
        let batch: Vec<u32> = (at..until.min(at + CHUNK)).map(|i| tokens[i % tokens.len()]).collect();
        let which = if at + batch.len() > top1_from { Logits::All } else { Logits::Last };
        model.forward_into(&batch, cache, which, None, &mut logits).map_err(Unmet::failed)?;
        if logits.iter().any(|v| !v.is_finite()) {
            return Err(Unmet::Failed(format!("the forward pass at position {at} gave non-finite logits")));
        }
        if which == Logits::All {
            let rows = logits.chunks_exact(vocab).enumerate().filter(|(i, _)| at + i >= top1_from);
            top1.extend(rows.map(|(_, row)| argmax(row)));
        }
    }
    Ok(top1)
}

/// `kv_memory`: the reduced-precision KV cache's size against the f32 one, as committed and as run.
pub struct KvMemory;

impl Check for KvMemory {
    const NAME: &'static str = "kv_memory";
    const DOC: &'static str = "bytes the f16 KV cache (as large as the model's context) commits for some positions \
         against an f32 cache of those positions, counted page by page; or the positions the model runs in an f16 \
         cache held to an f32 cache's bytes, agreeing with the f32 run's top-1";
    const PARAMS: &'static str =
        "model, metric (f16_bytes_ratio|context_ratio_at_budget), positions, min_agreement (budget), op, threshold";
    type Params = KvMemoryParams;

    fn run(p: &KvMemoryParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        if p.metric == KvMetric::ContextRatioAtBudget {
            cx.say(format_args!("running f32 and budgeted f16 KV caches to twice {} positions", p.positions));
        }
        let text = std::fs::read_to_string(cx.fixture("perplexity.txt")).map_err(Unmet::failed)?;
        let loaded = cx.model(&p.model)?;
        let (model, tok) = (&loaded.model, &loaded.tokenizer);
        let c = &model.config;
        let new_cache = |ty, positions| KvCache::new(ty, c.n_layer, c.kv_dim(), positions);
        Ok(match p.metric {
            KvMetric::F16BytesRatio => {
                judge_kv_bytes(p, &kv_committed_bytes(&new_cache, c.context_length, p.positions)?)
            }
            KvMetric::ContextRatioAtBudget => {
                let tokens = tok.encode(&text, true);
                let min = p.min_agreement.unwrap_or(1.0);
                let mut fill = |cache: &mut KvCache, until, from| fill_by_forward(model, &tokens, cache, until, from);
                judge_kv_budget(p, &kv_budget_run(&new_cache, p.positions, min, &mut fill)?)
            }
        })
    }
}

/// Parameters of `attention_memory`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionParams {
    /// Context length: a prefill of this many tokens.
    pub context: usize,
    /// The claim: working memory < naive (heads × context² × 4 bytes) ÷ this.
    pub divisor: f64,
}

/// The 0.5B model's attention: 14 query heads of 64 over 2 KV heads.
pub const QWEN_0_5B_HEADS: attention::Heads = attention::Heads { query: 14, kv: 2, dim: 64 };

/// A prefill attention: (queries, the cache, the output), every row at once.
pub type Attend<'a> = &'a dyn Fn(&[f32], &KvCache, &mut [f32]);

/// Heap bytes allocated by a prefill attention of `context` tokens of
/// `heads` (an f16 cache filled with random keys and values; the least over
/// [`HEAP_TRIES`] runs): an upper bound on its peak heap working memory.
pub fn attention_heap_bytes(attend: Attend, heads: attention::Heads, context: usize) -> Result<usize, Unmet> {
    let kv_dim = heads.kv * heads.dim;
    let mut cache = KvCache::new(KvType::F16, 1, kv_dim, context);
    let mut rng = SplitMix64(3);
    let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect() };
    for pos in 0..context {
        cache.write(0, pos, &random(kv_dim), &random(kv_dim)).map_err(Unmet::failed)?;
    }
    cache.advance(context);
    let q = random(context * heads.query * heads.dim);
    let mut out = vec![0.0f32; q.len()];
    least_heap_bytes(|| attend(&q, &cache, &mut out))
}

/// The prefill attention the engine runs ([`attention::attend_all`]) with
/// this CPU's kernels on a pool of `threads`.
pub fn engine_attention(heads: attention::Heads, threads: usize) -> impl Fn(&[f32], &KvCache, &mut [f32]) {
    let (pool, kernels) = (Pool::new(threads), Kernels::detect());
    let scale = 1.0 / (heads.dim as f32).sqrt();
    move |q, cache, out| attention::attend_all(&pool, kernels, heads, q, cache, 0, 0, scale, out)
}

/// Judges bytes allocated by attention at `context` against the naive score matrix.
pub fn judge_attention(p: &AttentionParams, heads: usize, allocated: usize) -> Outcome {
    let naive = (heads * p.context * p.context * 4) as f64;
    let q = Quantity::new("attention_bytes_allocated", "bytes", allocated as f64)
        .detail(format!(
            "a {}-token prefill's attention ({} kernels); naive scores for {heads} heads: {naive} bytes; bound = naive / {}",
            p.context,
            Kernels::detect().name(),
            p.divisor
        ))
        .detail(format!(
            "heap bytes, the least of {HEAP_TRIES} runs; the kernels' stack buffers have a fixed size, whatever the context"
        ));
    judge::quantity(q, Op::Lt, naive / p.divisor)
}

/// `attention_memory`: heap bytes the engine's prefill attention allocates at a long context, against the naive seq² scores.
pub struct AttentionMemory;

impl Check for AttentionMemory {
    const NAME: &'static str = "attention_memory";
    const DOC: &'static str = "heap bytes the engine's prefill attention (its kernels, its thread pool) allocates \
         over a long context, against naive seq² scores";
    const PARAMS: &'static str = "context, divisor";
    type Params = AttentionParams;

    fn run(p: &AttentionParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let heads = QWEN_0_5B_HEADS;
        cx.say(format_args!("a {}-token prefill attention, {HEAP_TRIES} times", p.context));
        let attend = engine_attention(heads, cx.settings.threads);
        Ok(judge_attention(p, heads.query, attention_heap_bytes(&attend, heads, p.context)?))
    }
}

/// Parameters of `memory_limit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitParams {
    /// Model size.
    pub model: String,
    /// The lowest address-space limit tried, MiB (below what the model needs).
    pub from_mib: u64,
    /// The highest limit tried, MiB.
    pub to_mib: u64,
    /// The step between limits, MiB.
    pub step_mib: u64,
}

impl LimitParams {
    /// The limits tried, lowest first.
    pub fn limits(&self) -> impl Iterator<Item = u64> {
        (self.from_mib..=self.to_mib).step_by(self.step_mib.max(1) as usize)
    }
}

/// How a child process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal, when one killed it.
    pub signal: Option<i32>,
    /// Its stderr.
    pub stderr: String,
}

impl Exit {
    /// How a finished process ended.
    pub fn of(out: &std::process::Output) -> Exit {
        Exit {
            code: out.status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Judges runs under rising memory limits (lowest first, ending at the first
/// that succeeded, if any): every run below the need must fail with a non-zero
/// exit code and an error message, not a signal (abort, segfault); the lowest
/// limit must be below the need.
pub fn judge_limits(p: &LimitParams, runs: &[(u64, Exit)]) -> Outcome {
    let mut bad = Vec::new();
    let mut details = Vec::new();
    for (i, (limit, e)) in runs.iter().enumerate() {
        let last = e.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_owned();
        let problem = match (e.code, e.signal) {
            (Some(0), _) if i == 0 => {
                Some(format!("it succeeded under the lowest limit, {limit} MiB: no limit below its need was tried"))
            }
            (Some(0), _) => None,
            (Some(_), _) if last.to_lowercase().contains("error") => None,
            (Some(c), _) => Some(format!("{limit} MiB: exit code {c} without an error message (stderr: {last:?})")),
            (None, Some(sig)) => Some(format!("{limit} MiB: killed by signal {sig} (stderr: {last:?})")),
            (None, None) => Some(format!("{limit} MiB: ended without an exit code or signal")),
        };
        let how = if e.code == Some(0) { "succeeded (the need is below this limit)".to_owned() } else { last };
        details.push(format!("under a {limit} MiB address-space limit: {how}"));
        bad.extend(problem);
    }
    if runs.is_empty() {
        bad.push(format!("no limit between {} and {} MiB was tried", p.from_mib, p.to_mib));
    }
    let mut out = judge::no_violations("unclean_failures", runs.len().max(1), bad);
    if let Some(ev) = out.evidence.as_mut() {
        ev.details.extend(details);
    }
    out
}

/// `memory_limit`: under every address-space limit below the need, the engine fails cleanly.
pub struct MemoryLimit;

impl Check for MemoryLimit {
    const NAME: &'static str = "memory_limit";
    const DOC: &'static str = "under every address-space limit from `from_mib` up to the need (in steps), `falsify \
         generate` exits with a clear error, never a signal";
    const PARAMS: &'static str = "model, from_mib, to_mib, step_mib";
    type Params = LimitParams;

    fn run(p: &LimitParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let exe = cx.falsify_exe()?.to_path_buf();
        let model = cx.model_path(&p.model)?;
        let mut runs = Vec::new();
        for limit in p.limits() {
            let script = format!("ulimit -v {} && exec \"$0\" generate --model \"$1\" -p hello -n 4", limit * 1024);
            let out =
                crate::util::children::output(Command::new("sh").args(["-c", &script]).arg(&exe).arg(&model), None)
                    .map_err(|e| Unmet::Failed(format!("cannot run sh: {e}")))?;
            let exit = Exit::of(&out);
            let succeeded = exit.code == Some(0);
            runs.push((limit, exit));
            if succeeded {
                break;
            }
        }
        Ok(judge_limits(p, &runs))
    }
}

/// Parameters of `syscalls_per_token`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallParams {
    /// Model size.
    pub model: String,
    /// System calls counted.
    pub syscalls: Vec<String>,
    /// Times the pair of runs (short, long) is repeated: one sample each.
    pub repeats: usize,
    /// Operator.
    pub op: Op,
    /// Threshold, calls per decoded token.
    pub threshold: f64,
}

/// Tokens generated by the short and the long traced run.
pub const TRACED_TOKENS: (usize, usize) = (16, 80);

/// Total calls of `syscalls` in an `strace -c` summary, or why `text` is not one.
pub fn parse_strace_summary(text: &str, syscalls: &[String]) -> Result<u64, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let head = |l: &&str| l.starts_with("% time") && l.ends_with("syscall");
    if !lines.by_ref().any(|l| head(&l)) {
        let first = text.lines().next().unwrap_or("");
        return Err(format!("no `% time … syscall` header: not an strace -c summary (first line {first:?})"));
    }
    let mut total = 0;
    for l in lines.filter(|l| !l.starts_with("---")) {
        let cols: Vec<&str> = l.split_whitespace().collect();
        let name = cols.last().copied().unwrap_or("");
        if name == "total" {
            return Ok(total);
        }
        if syscalls.iter().any(|s| s == name) {
            // % time, seconds, usecs/call, calls, [errors,] syscall
            let calls = cols.get(3).and_then(|c| c.parse::<u64>().ok());
            total += calls.ok_or_else(|| format!("the {name} row has no call count: {l:?}"))?;
        }
    }
    Err("no `total` row: the strace -c summary is cut short".into())
}

/// Traces `repeats` pairs of runs (`trace(n)` generates `n` tokens and gives
/// its strace -c summary): the counted calls of each (short, long) pair.
pub fn traced_calls(
    p: &SyscallParams,
    trace: &mut dyn FnMut(usize) -> Result<String, Unmet>,
) -> Result<Vec<(u64, u64)>, Unmet> {
    let mut count = |n: usize| -> Result<u64, Unmet> {
        let text = trace(n)?;
        parse_strace_summary(&text, &p.syscalls).map_err(|e| Unmet::Failed(format!("strace of {n} tokens: {e}")))
    };
    (0..p.repeats).map(|_| Ok((count(TRACED_TOKENS.0)?, count(TRACED_TOKENS.1)?))).collect()
}

/// Judges the extra calls of each long run over its short one, per extra token.
pub fn judge_syscalls(p: &SyscallParams, pairs: &[(u64, u64)]) -> Outcome {
    let extra_tokens = (TRACED_TOKENS.1 - TRACED_TOKENS.0) as f64;
    let per: Vec<f64> = pairs.iter().map(|&(short, long)| (long as f64 - short as f64) / extra_tokens).collect();
    let q = Quantity::of_samples("syscalls_per_token", "calls", &per).detail(format!(
        "{}: (calls generating {}, calls generating {}) per repeat: {pairs:?}",
        p.syscalls.join(","),
        TRACED_TOKENS.0,
        TRACED_TOKENS.1
    ));
    judge::quantity(q, p.op, p.threshold)
}

/// `falsify generate` of `n` tokens under `strace -f -c`: its summary.
fn strace_generate(exe: &std::path::Path, model: &std::path::Path, threads: usize, n: usize) -> Result<String, Unmet> {
    let log = std::env::temp_dir().join(format!("falsify-strace-{}-{n}.txt", std::process::id()));
    let mut strace = Command::new("strace");
    strace
        .args(["-f", "-c", "-o"])
        .arg(&log)
        .arg(exe)
        .args(["generate", "--ignore-eos", "-p", "hello", "--threads", &threads.to_string(), "-n", &n.to_string()])
        .arg("--model")
        .arg(model)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let status = crate::util::children::status(&mut strace, None)
        .map_err(|e| Unmet::Failed(format!("cannot run strace: {e}")))?;
    let text = std::fs::read_to_string(&log);
    let _ = std::fs::remove_file(&log);
    if !status.success() {
        return Err(Unmet::Failed(format!("strace falsify generate exited with {status}")));
    }
    text.map_err(|e| Unmet::Failed(format!("strace wrote no summary to {}: {e}", log.display())))
}

/// `syscalls_per_token`: memory-mapping and futex calls per decoded token (strace).
pub struct SyscallsPerToken;

impl Check for SyscallsPerToken {
    const NAME: &'static str = "syscalls_per_token";
    const DOC: &'static str = "system calls per decoded token in steady state, counted by strace over two run \
         lengths, repeated (a median with a bootstrap CI)";
    const PARAMS: &'static str = "model, syscalls (names), repeats, op, threshold";
    type Params = SyscallParams;

    fn run(p: &SyscallParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let exe = cx.falsify_exe()?.to_path_buf();
        let model = cx.model_path(&p.model)?;
        let threads = cx.settings.threads;
        cx.say(format_args!("{} traced pairs of generations", p.repeats));
        let pairs = traced_calls(p, &mut |n| strace_generate(&exe, &model, threads, n))?;
        Ok(judge_syscalls(p, &pairs))
    }
}

/// Parameters of `backend_choice`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendParams {
    /// Model size.
    pub model: String,
}

/// Judges `--backend cuda` and `--backend auto`, each with the backend its
/// JSON names (`timings.backend`). Where no device is usable (`device` is
/// `None`), `cuda` must end with an exit code (not a signal or a panic) and an
/// error naming CUDA and why, and `auto` must run on the CPU. Where the probe
/// found a device, both must run on it.
pub fn judge_backend(cuda: &Exit, auto: &Exit, ran_on: [Option<&str>; 2], device: Option<&str>) -> Outcome {
    let mut bad = Vec::new();
    let cuda_msg = cuda.stderr.to_lowercase();
    let [cuda_backend, auto_backend] = ran_on;
    let expected = if device.is_some() { "cuda" } else { "cpu" };
    if let Some(d) = device {
        if cuda.code != Some(0) || cuda_backend != Some("cuda") {
            bad.push(format!(
                "--backend cuda with {d} present: exit {:?}, ran on {cuda_backend:?}, stderr {:?}",
                cuda.code,
                cuda.stderr.trim()
            ));
        }
    } else if cuda.code.is_none_or(|c| c == 0)
        || !cuda_msg.contains("--backend cuda")
        || !cuda_msg.contains("error")
        || cuda_msg.contains("panicked")
    {
        bad.push(format!(
            "--backend cuda: exit {:?}, signal {:?}, stderr {:?}",
            cuda.code,
            cuda.signal,
            cuda.stderr.trim()
        ));
    }
    if auto.code != Some(0) {
        bad.push(format!("--backend auto: exit {:?}, stderr {:?}", auto.code, auto.stderr.trim()));
    } else if auto_backend != Some(expected) {
        bad.push(format!("--backend auto: ran on {auto_backend:?}, not {expected}"));
    }
    let mut out = judge::no_violations("backend_choice_violations", 2, bad);
    if let Some(e) = out.evidence.as_mut() {
        match device {
            Some(d) => e
                .details
                .push(format!("device: {d}; --backend cuda and auto ran on {cuda_backend:?}, {auto_backend:?}")),
            None => e.details.push(format!("--backend cuda said: {}", cuda.stderr.trim())),
        }
    }
    out
}

/// `backend_choice`: `--backend cuda` without a usable device fails clearly and `auto` falls back to
/// the CPU; with one, both run on it.
pub struct BackendChoice;

impl Check for BackendChoice {
    const NAME: &'static str = "backend_choice";
    const DOC: &'static str = "`falsify generate --backend cuda` without a usable CUDA backend fails with an error \
         saying why (the driver probed), and `--backend auto` runs, its JSON naming the CPU backend";
    const PARAMS: &'static str = "model";
    type Params = BackendParams;

    fn run(p: &BackendParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let model = cx.model_path(&p.model)?;
        let run = |backend: &str| -> Result<std::process::Output, Unmet> {
            let args = ["generate", "--json", "-p", "hi", "-n", "2", "--backend", backend, "--model"].map(OsStr::new);
            cx.run_falsify(&[&args[..], &[model.as_os_str()]].concat())
        };
        let (cuda, auto) = (run("cuda")?, run("auto")?);
        let json = |o: &std::process::Output| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok();
        let (cuda_json, auto_json) = (json(&cuda), json(&auto));
        let ran_on = [&cuda_json, &auto_json].map(|j| j.as_ref().and_then(|v| v["timings"]["backend"].as_str()));
        let device = crate::kernels::cuda::probe().ok().map(|d| d.name);
        Ok(judge_backend(&Exit::of(&cuda), &Exit::of(&auto), ran_on, device.as_deref()))
    }
}

/// Parameters of `peak_rss`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RssParams {
    /// Model size.
    pub model: String,
    /// Tokens generated.
    pub tokens: usize,
    /// Operator on peak RSS ÷ (model file size + KV cache size).
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
}

/// Judges a peak RSS against the model file plus the KV cache it needed.
pub fn judge_rss(p: &RssParams, peak: u64, model_bytes: u64, kv_bytes: u64) -> Outcome {
    let need = model_bytes + kv_bytes;
    let q = Quantity::new("peak_rss_ratio", "x", peak as f64 / need as f64).detail(format!(
        "peak RSS {:.1} MB; model file {:.1} MB + KV cache {:.1} MB",
        peak as f64 / 1e6,
        model_bytes as f64 / 1e6,
        kv_bytes as f64 / 1e6
    ));
    judge::quantity(q, p.op, p.threshold)
}

/// `peak_rss`: a `falsify generate` process's peak RSS against model file + KV cache.
pub struct PeakRss;

impl Check for PeakRss {
    const NAME: &'static str = "peak_rss";
    const DOC: &'static str = "peak RSS of a `falsify generate` process over model file size plus KV cache size";
    const PARAMS: &'static str = "model, tokens, op, threshold";
    type Params = RssParams;

    fn run(p: &RssParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let model = cx.model_path(&p.model)?;
        let n = p.tokens.to_string();
        let args = ["generate", "--json", "--ignore-eos", "-p", "hello", "-n", &n, "--model"].map(OsStr::new);
        let out = cx.run_falsify(&[&args[..], &[model.as_os_str()]].concat())?;
        if !out.status.success() {
            return Err(Unmet::Failed(format!("falsify generate failed: {}", String::from_utf8_lossy(&out.stderr))));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(Unmet::failed)?;
        let peak = v["peak_rss_bytes"].as_u64().ok_or_else(|| Unmet::Failed("no peak_rss_bytes in its JSON".into()))?;
        let prompt_len = v["prompt_tokens"].as_array().map_or(1, Vec::len);
        let c = cx.model(&p.model)?.model.config.clone();
        let kv = KvCache::new(KvType::default(), c.n_layer, c.kv_dim(), prompt_len + p.tokens).bytes() as u64;
        let size = std::fs::metadata(&model).map_err(Unmet::failed)?.len();
        Ok(judge_rss(p, peak, size, kv))
    }
}
