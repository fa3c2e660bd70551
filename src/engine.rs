//! Generation: prefill the prompt, then decode token by token, with timings.
//!
//! Timing definitions (the same everywhere in this project):
//! - **prefill**: the forward pass over the whole prompt; prefill tok/s =
//!   prompt tokens ÷ prefill time.
//! - **TTFT** (time to first token): from the start of prefill until the first
//!   generated token is chosen.
//! - **decode**: every forward pass after the first generated token; decode
//!   tok/s = tokens generated after the first ÷ their time.

use std::time::Instant;

use serde::Serialize;

use crate::kernels::cuda::device::Device;
use crate::model::device::{DeviceModel, KernelTime};
use crate::model::{Breakdown, BrickTimes, KvCache, KvUsage, Logits, Model, ModelError};
use crate::sample::{Sampler, SamplerConfig};
use crate::tokenizer::Tokenizer;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Token choice.
    pub sampler: SamplerConfig,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Time every brick of every forward pass (see [`crate::model::bricks`]).
    pub time_bricks: bool,
}

/// Timings of one generation, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Prefill time.
    pub prefill_ms: f64,
    /// Prompt tokens per second.
    pub prefill_tok_per_s: f64,
    /// Time to first token.
    pub ttft_ms: f64,
    /// Tokens generated after the first.
    pub decode_tokens: usize,
    /// Time spent on them.
    pub decode_ms: f64,
    /// Decode tokens per second (`decode_tokens / decode_ms`); 0 when none.
    pub decode_tok_per_s: f64,
    /// Per-token latency of each decode step.
    pub decode_token_ms: Vec<f64>,
    /// Where the prefill time went, brick by brick (when bricks were timed).
    pub prefill_bricks: Option<Breakdown>,
    /// Where the decode time went, brick by brick (when bricks were timed).
    pub decode_bricks: Option<Breakdown>,
    /// On a device, where one decode step's device time went, kernel by kernel
    /// (a step profiled after the generation, when bricks were timed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_kernels: Option<Vec<KernelTime>>,
}

/// The result of a generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// The prompt's token ids.
    pub prompt_tokens: Vec<u32>,
    /// Generated token ids (without the stop token, if one ended generation).
    pub tokens: Vec<u32>,
    /// Generated text.
    pub text: String,
    /// Whether an end-of-generation token stopped it.
    pub stopped_at_eos: bool,
    /// Whether the model's context length stopped it before `max_tokens`
    /// (the prompt and the generated tokens fill it).
    pub stopped_at_context: bool,
    /// Timings.
    pub timings: Timings,
    /// The KV cache's bytes at the end (held, at most, compressed).
    pub kv: KvUsage,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// One generation between forward passes: its KV cache, its sampler and the
/// tokens chosen so far. [`generate`] runs one; a server steps many together
/// ([`Model::forward_batch`]), each choosing its own tokens.
#[derive(Debug)]
pub struct Sequence {
    /// The prompt's and the chosen tokens' keys and values.
    pub cache: KvCache,
    sampler: Sampler,
    tokens: Vec<u32>,
    /// Most tokens to choose: the tokens asked for, capped where the context is full.
    max_tokens: usize,
    /// Whether the tokens asked for were capped by the context.
    capped: bool,
    ignore_eos: bool,
    stopped_at_eos: bool,
}

/// Why a [`Sequence`] stopped choosing tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token was chosen.
    EndOfGeneration,
    /// The tokens asked for were chosen.
    MaxTokens,
    /// The prompt and the tokens chosen fill the model's context length.
    Context,
}

impl Sequence {
    /// A sequence that will choose up to `opts.max_tokens` tokens after a
    /// prompt of `prompt_len` tokens, with a cache that holds them all. As
    /// llama.cpp's does at its context size, it stops where the prompt and
    /// its tokens fill `context` positions (at most the model's context
    /// length); a prompt longer than that, or a sampling parameter out of its
    /// range, is an error.
    pub fn new(
        model: &Model,
        prompt_len: usize,
        opts: &GenerateOptions,
        context: usize,
    ) -> Result<Sequence, ModelError> {
        opts.sampler.validate()?;
        let context = context.min(model.config.context_length);
        let Some(room) = context.checked_sub(prompt_len) else {
            let what = format!("a prompt of {prompt_len} tokens");
            return Err(ModelError::ContextLength { what, needed: prompt_len, context });
        };
        let max_tokens = opts.max_tokens.min(room);
        Ok(Sequence {
            cache: model.try_new_cache(prompt_len + max_tokens)?,
            sampler: Sampler::new(opts.sampler),
            tokens: Vec::with_capacity(max_tokens),
            max_tokens,
            capped: max_tokens < opts.max_tokens,
            ignore_eos: opts.ignore_eos,
            stopped_at_eos: false,
        })
    }

    /// Chooses the next token from `logits` (of the last position run): the
    /// token, or `None` when it ends generation (an end-of-generation token,
    /// unless told to ignore them). Call only while [`Sequence::finish`] is `None`.
    pub fn choose(&mut self, logits: &[f32], tokenizer: &Tokenizer) -> Option<u32> {
        let token = self.sampler.sample(logits);
        if !self.ignore_eos && tokenizer.end_of_generation.contains(&token) {
            self.stopped_at_eos = true;
            return None;
        }
        self.tokens.push(token);
        Some(token)
    }

    /// The tokens chosen so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Why generation is over, or `None` while it goes on.
    pub fn finish(&self) -> Option<Finish> {
        match (self.stopped_at_eos, self.tokens.len() >= self.max_tokens) {
            (true, _) => Some(Finish::EndOfGeneration),
            (false, true) if self.capped => Some(Finish::Context),
            (false, true) => Some(Finish::MaxTokens),
            (false, false) => None,
        }
    }
}

/// Generates up to `opts.max_tokens` tokens after `prompt`, calling `on_token`
/// with each token as it is chosen. As llama.cpp's does at its context size,
/// generation stops when the prompt and the tokens generated fill the model's
/// context length; a prompt longer than that, or a sampling parameter out of
/// its range, is an error before any work.
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: impl FnMut(u32),
) -> Result<Generation, ModelError> {
    let run = |tokens: &[u32], cache: &mut KvCache, times: Option<&mut BrickTimes>, logits: &mut Vec<f32>| {
        model.forward_into(tokens, cache, Logits::Last, times, logits)
    };
    generate_with(model, run, tokenizer, prompt, opts, on_token)
}

/// [`generate`] with every forward pass on a device: the prompt runs one token
/// a step. No brick is timed; when `opts.time_bricks` asks for it and the
/// device's cache has a position left, one more step of the last token is
/// profiled kernel by kernel ([`Timings::device_kernels`]).
pub fn generate_on_device<D: Device>(
    device: &mut DeviceModel<'_, D>,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: impl FnMut(u32),
) -> Result<Generation, ModelError> {
    let model = device.model();
    device.reset();
    let run = |tokens: &[u32], _: &mut KvCache, _: Option<&mut BrickTimes>, logits: &mut Vec<f32>| {
        for &t in tokens {
            device.step(t)?;
        }
        device.logits(logits)
    };
    let profile = opts.time_bricks;
    let opts = GenerateOptions { time_bricks: false, ..opts.clone() };
    let mut gen = generate_with(model, run, tokenizer, prompt, &opts, on_token)?;
    let last = gen.tokens.last().or(prompt.last()).copied();
    if let (true, Some(last)) = (profile && device.position() < device.capacity(), last) {
        gen.timings.device_kernels = Some(device.profile_step(last)?);
    }
    Ok(gen)
}

/// [`generate`] with the forward passes `run` makes: it runs the tokens given
/// after those it ran before (with the sequence's cache, when it keeps its
/// keys and values there) and leaves the last position's logits.
fn generate_with(
    model: &Model,
    mut run: impl FnMut(&[u32], &mut KvCache, Option<&mut BrickTimes>, &mut Vec<f32>) -> Result<(), ModelError>,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32),
) -> Result<Generation, ModelError> {
    let mut seq = Sequence::new(model, prompt.len(), opts, model.config.context_length)?;
    let mut timings = Timings { prompt_tokens: prompt.len(), ..Timings::default() };

    let (mut prefill_bricks, mut decode_bricks) = (BrickTimes::default(), BrickTimes::default());

    let start = Instant::now();
    let mut logits = Vec::new();
    run(prompt, &mut seq.cache, opts.time_bricks.then_some(&mut prefill_bricks), &mut logits)?;
    timings.prefill_ms = ms(start);
    while seq.finish().is_none() {
        let step = Instant::now();
        let first = seq.tokens.is_empty();
        if let Some(&last) = seq.tokens.last() {
            let times = opts.time_bricks.then_some(&mut decode_bricks);
            run(&[last], &mut seq.cache, times, &mut logits)?;
        }
        let token = seq.choose(&logits, tokenizer);
        if first {
            timings.ttft_ms = ms(start);
        } else {
            timings.decode_token_ms.push(ms(step));
        }
        if let Some(token) = token {
            on_token(token);
        }
    }
    let stopped_at_context = seq.finish() == Some(Finish::Context);
    timings.decode_tokens = timings.decode_token_ms.len();
    timings.decode_ms = timings.decode_token_ms.iter().sum();
    if timings.decode_tokens > 0 {
        timings.decode_tok_per_s = timings.decode_tokens as f64 / (timings.decode_ms / 1e3);
    }
    timings.prefill_tok_per_s = prompt.len() as f64 / (timings.prefill_ms / 1e3);
    if opts.time_bricks {
        timings.prefill_bricks = Some(prefill_bricks.breakdown(prompt.len(), timings.prefill_ms));
        timings.decode_bricks = Some(decode_bricks.breakdown(timings.decode_tokens, timings.decode_ms));
    }
    let tokens = seq.tokens;
    let text = tokenizer.decode(&tokens);
    let kv = seq.cache.usage();
    Ok(Generation {
        prompt_tokens: prompt.to_vec(),
        tokens,
        text,
        stopped_at_eos: seq.stopped_at_eos,
        stopped_at_context,
        timings,
        kv,
    })
}

/// Turns tokens into text as they come: a token may end in the middle of a
/// UTF-8 character, whose bytes wait for the tokens that complete it.
#[derive(Debug, Default)]
pub struct TextStream {
    pending: Vec<u8>,
}

impl TextStream {
    /// The whole characters `token` completes (empty when it only starts one).
    pub fn push(&mut self, tokenizer: &Tokenizer, token: u32) -> String {
        self.pending.extend(tokenizer.token_bytes(token));
        let whole = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An incomplete character at the end waits; invalid bytes go out as U+FFFD.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let text = String::from_utf8_lossy(&self.pending[..whole]).into_owned();
        self.pending.drain(..whole);
        text
    }

    /// What is left at the end (an unfinished character as U+FFFD).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{model_with_context, tied_model};

    fn greedy(max_tokens: usize, ignore_eos: bool) -> GenerateOptions {
        GenerateOptions {
            max_tokens,
            sampler: SamplerConfig { temperature: 0.0, ..SamplerConfig::default() },
            ignore_eos,
            time_bricks: false,
        }
    }

    #[test]
    fn generation_counts_and_times_its_tokens() {
        let m = tied_model();
        let tok = Tokenizer::from_header(&m.file.header).unwrap();
        let mut seen = Vec::new();
        let g = generate(&m, &tok, &[1, 2, 3], &greedy(6, true), |t| seen.push(t)).unwrap();
        assert_eq!((g.tokens.len(), seen.clone()), (6, g.tokens.clone()));
        let t = &g.timings;
        assert_eq!((t.prompt_tokens, t.decode_tokens, t.decode_token_ms.len()), (3, 5, 5));
        assert!(t.prefill_ms > 0.0 && t.ttft_ms >= t.prefill_ms && t.decode_tok_per_s > 0.0);
        assert_eq!(g.text, tok.decode(&g.tokens));
    }

    #[test]
    fn greedy_generation_matches_teacher_forced_argmax() {
        let m = tied_model();
        let tok = Tokenizer::from_header(&m.file.header).unwrap();
        let g = generate(&m, &tok, &[5, 6], &greedy(5, true), |_| {}).unwrap();
        let mut seq = vec![5, 6];
        seq.extend(&g.tokens[..4]);
        let all = m.forward(&seq, &mut m.new_cache(seq.len()), Logits::All).unwrap();
        let v = m.config.vocab_size;
        for (i, &t) in g.tokens.iter().enumerate() {
            assert_eq!(crate::sample::argmax(&all[(i + 1) * v..(i + 2) * v]), t, "token {i}");
        }
    }

    #[test]
    fn stops_at_end_of_generation_unless_told_not_to() {
        let m = tied_model();
        let mut tok = Tokenizer::from_header(&m.file.header).unwrap();
        let free = generate(&m, &tok, &[1], &greedy(12, true), |_| {}).unwrap();
        // Declare the first token that did not occur earlier an end-of-generation token.
        let at = (1..free.tokens.len())
            .find(|&i| !free.tokens[..i].contains(&free.tokens[i]))
            .expect("greedy output varies");
        tok.end_of_generation = vec![free.tokens[at]];
        let stopped = generate(&m, &tok, &[1], &greedy(12, false), |_| {}).unwrap();
        assert!(stopped.stopped_at_eos);
        assert_eq!(stopped.tokens, free.tokens[..at]);
        let ignored = generate(&m, &tok, &[1], &greedy(12, true), |_| {}).unwrap();
        assert_eq!((ignored.tokens, ignored.stopped_at_eos), (free.tokens, false));
    }

    /// `-n 18446744073709551614` once overflowed the cache's size and
    /// `-n 10000000` asked for 61 GB; a context of 4 generated 100 tokens.
    #[test]
    fn generation_stops_where_the_context_is_full() {
        let m = model_with_context(4);
        let tok = Tokenizer::from_header(&m.file.header).unwrap();
        for asked in [100, 10_000_000, usize::MAX - 1] {
            let g = generate(&m, &tok, &[1], &greedy(asked, true), |_| {}).unwrap();
            assert_eq!((g.tokens.len(), g.stopped_at_context), (3, true), "{asked} tokens asked");
        }
        let within = generate(&m, &tok, &[1, 2], &greedy(2, true), |_| {}).unwrap();
        assert_eq!((within.tokens.len(), within.stopped_at_context), (2, false));
        let full = generate(&m, &tok, &[1, 2, 3, 4], &greedy(5, true), |_| {}).unwrap();
        assert_eq!((full.tokens.len(), full.stopped_at_context), (0, true));
    }

    #[test]
    fn a_prompt_longer_than_the_context_is_an_error() {
        let m = model_with_context(4);
        let tok = Tokenizer::from_header(&m.file.header).unwrap();
        let err = generate(&m, &tok, &[1; 10], &greedy(1, true), |_| {}).unwrap_err().to_string();
        assert_eq!(err, "a prompt of 10 tokens takes 10 positions, more than the model's context length of 4");
    }

    /// `--temp NaN` once printed `!!!!!!!!` and `--temp=-1` silently decoded greedily.
    #[test]
    fn sampling_parameters_are_checked_before_generating() {
        let m = tied_model();
        let tok = Tokenizer::from_header(&m.file.header).unwrap();
        let mut opts = greedy(4, true);
        opts.sampler.temperature = f32::NAN;
        let mut called = false;
        let err = generate(&m, &tok, &[1], &opts, |_| called = true).unwrap_err();
        assert!(matches!(err, ModelError::Sampler(_)) && !called);
        assert_eq!(err.to_string(), "--temp NaN: the temperature must be a finite number, 0 (greedy) or above");
    }

    #[test]
    fn a_generation_on_the_emulated_device_decodes_its_tokens_and_profiles_a_step() {
        use crate::model::device::StepMode;
        let Some(dev) = crate::kernels::cuda::emulated::device() else { return };
        let m = crate::model::tests::device_model();
        let tok = Tokenizer::from_header(&m.file.header).unwrap();
        let prompt = [3u32, 17, 40];
        let mut d = DeviceModel::upload(&m, dev, prompt.len() + 4 + 1, StepMode::Graph).unwrap();
        let opts = GenerateOptions { time_bricks: true, ..greedy(4, true) };
        let mut seen = Vec::new();
        let gen = generate_on_device(&mut d, &tok, &prompt, &opts, |t| seen.push(t)).unwrap();
        assert_eq!((gen.tokens.len(), &seen), (4, &gen.tokens));
        assert_eq!(gen.timings.decode_tokens, 3);
        assert!(gen.timings.prefill_bricks.is_none(), "no CPU brick was timed");
        let kernels = gen.timings.device_kernels.expect("one step profiled");
        assert_eq!(kernels.len(), crate::kernels::cuda::KERNELS.len(), "{kernels:?}");
        assert_eq!(kernels.iter().map(|k| k.launches).sum::<usize>(), 56);
        assert!(kernels.iter().all(|k| k.ms > 0.0), "{kernels:?}");
        // The same generation again starts from position 0.
        let again = generate_on_device(&mut d, &tok, &prompt, &greedy(4, true), |_| {}).unwrap();
        assert_eq!(again.tokens, gen.tokens);
    }
}
