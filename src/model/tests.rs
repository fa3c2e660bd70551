//! Forward-pass properties on a small synthetic Qwen2 model written as GGUF.

use super::*;
use crate::gguf::{GgufWriter, TensorType, Value};
use crate::rng::SplitMix64;
use crate::testing::uniform;

/// Random weights of `rows × cols` encoded as `ty` (scales kept small and finite).
fn weights(rng: &mut SplitMix64, ty: TensorType, rows: usize, cols: usize) -> Vec<u8> {
    crate::testing::random_weights(rng, ty, rows * cols, 0.2, 0.002)
}

pub(crate) struct Synthetic {
    /// Leave out `output.weight` (the LM head is then the token embedding).
    pub tied: bool,
    pub n_layer: usize,
    /// Row length written for `output.weight` (64 is correct).
    pub head_cols: usize,
    /// `qwen2.context_length`.
    pub context: u32,
}

/// Dimensions and weight formats of a synthetic model (4 heads, 2 KV heads).
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    /// Hidden size, KV width, FFN width, vocabulary.
    pub d: usize,
    pub kv: usize,
    pub ff: usize,
    pub vocab: usize,
    /// Formats of the embedding, Q, K, V, attention output, gate, up, and down in even and odd blocks.
    pub types: [TensorType; 9],
}

/// Hidden 64, FFN 256, vocab 48, and formats of every kind the CPU reads.
pub(crate) const SMALL: Layout = Layout {
    d: 64,
    kv: 32,
    ff: 256,
    vocab: 48,
    types: [
        TensorType::Q8_0,
        TensorType::Q8_0,
        TensorType::F16,
        TensorType::Q5_0,
        TensorType::Q4_0,
        TensorType::Q8_0,
        TensorType::F32,
        TensorType::Q6K,
        TensorType::Q4K,
    ],
};

/// Hidden 256, FFN 512, vocab 64, in the formats of the Qwen2.5-Coder files the device kernels read.
pub(crate) const DEVICE: Layout = Layout {
    d: 256,
    kv: 128,
    ff: 512,
    vocab: 64,
    types: [
        TensorType::Q8_0,
        TensorType::Q5_0,
        TensorType::Q5_0,
        TensorType::Q8_0,
        TensorType::Q4K,
        TensorType::Q4K,
        TensorType::Q5_0,
        TensorType::Q6K,
        TensorType::Q4K,
    ],
};

/// Writes a tiny Qwen2 model of the [`SMALL`] layout.
pub(crate) fn synthetic_model(opts: Synthetic) -> Vec<u8> {
    synthetic_with(&SMALL, opts)
}

/// Writes a tiny Qwen2 model of `layout`.
pub(crate) fn synthetic_with(layout: &Layout, opts: Synthetic) -> Vec<u8> {
    let Layout { d, kv, ff, vocab, types: t } = *layout;
    let mut rng = SplitMix64(7);
    let mut w = GgufWriter::new(3)
        .meta("general.architecture", Value::String("qwen2".into()))
        .meta("qwen2.block_count", Value::U32(opts.n_layer as u32))
        .meta("qwen2.embedding_length", Value::U32(d as u32))
        .meta("qwen2.feed_forward_length", Value::U32(ff as u32))
        .meta("qwen2.attention.head_count", Value::U32(4))
        .meta("qwen2.attention.head_count_kv", Value::U32(2))
        .meta("qwen2.rope.freq_base", Value::F32(10_000.0))
        .meta("qwen2.attention.layer_norm_rms_epsilon", Value::F32(1e-6))
        .meta("qwen2.context_length", Value::U32(opts.context))
        .meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta(
            "tokenizer.ggml.tokens",
            Value::Array(
                (0..vocab)
                    .map(|i| {
                        Value::String(if i == vocab - 1 {
                            "<|end|>".into()
                        } else {
                            char::from(b'A' + i as u8).to_string()
                        })
                    })
                    .collect(),
            ),
        )
        .meta(
            "tokenizer.ggml.token_type",
            Value::Array((0..vocab).map(|i| Value::I32(if i == vocab - 1 { 3 } else { 1 })).collect()),
        )
        .meta("tokenizer.ggml.merges", Value::Array(vec![]))
        .meta("tokenizer.ggml.pre", Value::String("qwen2".into()))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(vocab as u32 - 1));
    let vec =
        |rng: &mut SplitMix64, n: usize, base: f32| -> Vec<f32> { (0..n).map(|_| base + uniform(rng) * 0.1).collect() };
    let m = |w: GgufWriter, rng: &mut SplitMix64, name: &str, ty: TensorType, rows: usize, cols: usize| {
        let data = weights(rng, ty, rows, cols);
        w.tensor(name, &[cols as u64, rows as u64], ty, data)
    };
    w = m(w, &mut rng, "token_embd.weight", t[0], vocab, d);
    for i in 0..opts.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}");
        let v = vec(&mut rng, d, 1.0);
        w = w.tensor_f32(&n("attn_norm.weight"), &[d as u64], &v);
        w = m(w, &mut rng, &n("attn_q.weight"), t[1], d, d);
        w = m(w, &mut rng, &n("attn_k.weight"), t[2], kv, d);
        w = m(w, &mut rng, &n("attn_v.weight"), t[3], kv, d);
        for (name, len) in [("attn_q.bias", d), ("attn_k.bias", kv), ("attn_v.bias", kv)] {
            let v = vec(&mut rng, len, 0.0);
            w = w.tensor_f32(&n(name), &[len as u64], &v);
        }
        w = m(w, &mut rng, &n("attn_output.weight"), t[4], d, d);
        let v = vec(&mut rng, d, 1.0);
        w = w.tensor_f32(&n("ffn_norm.weight"), &[d as u64], &v);
        w = m(w, &mut rng, &n("ffn_gate.weight"), t[5], ff, d);
        w = m(w, &mut rng, &n("ffn_up.weight"), t[6], ff, d);
        w = m(w, &mut rng, &n("ffn_down.weight"), t[7 + i % 2], d, ff);
    }
    let v = vec(&mut rng, d, 1.0);
    w = w.tensor_f32("output_norm.weight", &[d as u64], &v);
    if !opts.tied {
        let ty = if opts.head_cols.is_multiple_of(256) { TensorType::Q5K } else { TensorType::Q8_0 };
        w = m(w, &mut rng, "output.weight", ty, vocab, opts.head_cols);
    }
    w.to_bytes()
}

/// A tiny model of the [`DEVICE`] layout, tied, 2 blocks, a context of 64.
pub(crate) fn device_model() -> Model {
    load(&synthetic_with(&DEVICE, Synthetic { tied: true, n_layer: 2, head_cols: 256, context: 64 })).unwrap()
}

/// Writes `bytes` to a temporary file and loads it as a model.
pub(crate) fn load(bytes: &[u8]) -> Result<Model, ModelError> {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = std::env::temp_dir().join(format!("falsify-test-{}-{n}.gguf", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let m = Model::load(&path);
    std::fs::remove_file(&path).ok();
    m
}

pub(crate) fn tied_model() -> Model {
    model_with_context(256)
}

/// [`tied_model`] with a context length of `context` positions.
pub(crate) fn model_with_context(context: u32) -> Model {
    load(&synthetic_model(Synthetic { tied: true, n_layer: 2, head_cols: 64, context })).unwrap()
}

#[test]
fn untied_head_is_used_when_present_and_checked() {
    let m = load(&synthetic_model(Synthetic { tied: false, n_layer: 1, head_cols: 64, context: 256 })).unwrap();
    assert_eq!(m.lm_head.info.name, "output.weight");
    assert!(m.forward(&[1, 2], &mut m.new_cache(2), Logits::Last).unwrap().iter().all(|v| v.is_finite()));
    assert_eq!(tied_model().lm_head.info.name, "token_embd.weight");
    let err = load(&synthetic_model(Synthetic { tied: false, n_layer: 1, head_cols: 256, context: 256 }))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(err, "tensor \"output.weight\" has shape [256, 48], expected [64, 48]");
}

#[test]
fn incremental_decode_equals_full_recompute() {
    let m = tied_model();
    let tokens = [3u32, 17, 42, 5, 9, 30, 1, 44];
    let mut full = m.new_cache(16);
    let all = m.forward(&tokens, &mut full, Logits::All).unwrap();
    let vocab = m.config.vocab_size;
    let mut inc = m.new_cache(16);
    let mut logits = m.forward(&tokens[..3], &mut inc, Logits::Last).unwrap();
    assert_close(&logits, &all[2 * vocab..3 * vocab], "after prefill of 3");
    for (i, &t) in tokens.iter().enumerate().skip(3) {
        logits = m.forward(&[t], &mut inc, Logits::Last).unwrap();
        assert_close(&logits, &all[i * vocab..(i + 1) * vocab], &format!("position {i}"));
    }
    assert_eq!(inc.len(), tokens.len());
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let max = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(max < 1e-4, "{what}: max abs difference {max}");
}

#[test]
fn later_tokens_never_change_earlier_logits() {
    let m = tied_model();
    let vocab = m.config.vocab_size;
    let a = m.forward(&[1, 2, 3, 4, 5], &mut m.new_cache(8), Logits::All).unwrap();
    let b = m.forward(&[1, 2, 3, 40, 41], &mut m.new_cache(8), Logits::All).unwrap();
    assert_eq!(a[..3 * vocab], b[..3 * vocab]);
    assert_ne!(a[3 * vocab..], b[3 * vocab..]);
}

#[test]
fn output_is_deterministic_and_finite() {
    let m = tied_model();
    let a = m.forward(&[7, 8, 9], &mut m.new_cache(4), Logits::All).unwrap();
    let b = m.forward(&[7, 8, 9], &mut m.new_cache(4), Logits::All).unwrap();
    assert!(a.iter().all(|v| v.is_finite()));
    assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
}

#[test]
fn bad_requests_are_errors() {
    let m = tied_model();
    let mut cache = m.new_cache(2);
    assert_eq!(m.forward(&[], &mut cache, Logits::Last).unwrap_err().to_string(), "no tokens to process");
    assert_eq!(
        m.forward(&[99], &mut cache, Logits::Last).unwrap_err().to_string(),
        "token id 99 is outside the vocabulary (size 48)"
    );
    assert_eq!(
        m.forward(&[1, 2, 3], &mut cache, Logits::Last).unwrap_err().to_string(),
        "context full: 3 positions needed, the KV cache holds 2"
    );
}

#[test]
fn missing_tensors_and_keys_are_named() {
    let bytes = GgufWriter::new(3).meta("general.architecture", Value::String("llama".into())).to_bytes();
    assert_eq!(load(&bytes).err().unwrap().to_string(), "unsupported architecture \"llama\" (this engine runs qwen2)");
    let bytes = GgufWriter::new(3).meta("general.architecture", Value::String("qwen2".into())).to_bytes();
    assert_eq!(load(&bytes).err().unwrap().to_string(), "metadata key \"qwen2.embedding_length\" is missing");
}

#[test]
fn timing_bricks_changes_no_logit_and_times_every_brick() {
    let m = tied_model();
    let plain = m.forward(&[4, 8, 15], &mut m.new_cache(4), Logits::Last).unwrap();
    let mut times = BrickTimes::default();
    let mut timed = vec![f32::NAN; 3];
    m.forward_into(&[4, 8, 15], &mut m.new_cache(4), Logits::Last, Some(&mut times), &mut timed).unwrap();
    assert_eq!(plain, timed);
    assert_eq!(times.passes, 1);
    for b in Brick::ALL {
        assert!(times.of(b) > 0, "brick {} was never timed", b.name());
    }
}

#[test]
fn work_shared_out_across_threads_equals_the_serial_loop() {
    let mut m = tied_model();
    m.set_threads(3);
    let b: Vec<f32> = (0..10_003).map(|i| (i as f32).sin()).collect();
    let mut want: Vec<f32> = (0..10_003).map(|i| i as f32 * 0.5).collect();
    let mut got = want.clone();
    for (x, y) in want.iter_mut().zip(&b) {
        *x = *x * 2.0 + y;
    }
    m.par_zip(&mut got, &b, 1, &|a, b| a.iter_mut().zip(b).for_each(|(x, y)| *x = *x * 2.0 + y));
    assert_eq!(got, want);
    // Rows of 7 with nothing to zip: every row is touched once, whole.
    let mut rows = vec![1.0f32; 7 * 1000];
    m.par_zip(&mut rows, &[], 7, &|a, b| {
        assert!(b.is_empty() && a.len().is_multiple_of(7));
        a.iter_mut().for_each(|x| *x += 1.0);
    });
    assert!(rows.iter().all(|&x| x == 2.0));
}

/// A model with a context length of 4 once prefilled 10 tokens and generated 100.
#[test]
fn a_forward_pass_beyond_the_context_length_is_an_error() {
    let m = model_with_context(4);
    assert_eq!(m.config.context_length, 4);
    let mut cache = m.new_cache(10);
    assert_eq!(cache.capacity(), 4, "a cache never holds more than the context");
    let err = m.forward(&[1; 10], &mut cache, Logits::Last).unwrap_err().to_string();
    assert_eq!(
        err,
        "a batch of 10 tokens after 0 cached takes 10 positions, more than the model's context length of 4"
    );
    m.forward(&[1, 2, 3], &mut cache, Logits::Last).unwrap();
    let err = m.forward(&[4, 5], &mut cache, Logits::Last).unwrap_err().to_string();
    assert_eq!(err, "a batch of 2 tokens after 3 cached takes 5 positions, more than the model's context length of 4");
    m.forward(&[4], &mut cache, Logits::Last).unwrap();
    assert!(matches!(m.forward(&[5], &mut cache, Logits::Last), Err(ModelError::ContextLength { needed: 5, .. })));
    assert_eq!(m.new_cache(usize::MAX).capacity(), 4);
}

#[test]
fn a_cache_the_system_cannot_hold_is_an_error() {
    for (n_layer, kv_dim, capacity) in [(24, 128, usize::MAX), (1, 1 << 20, 1 << 26)] {
        let err = KvCache::try_new(KvType::F16, n_layer, kv_dim, capacity).unwrap_err().to_string();
        assert!(err.starts_with(&format!("not enough memory for a KV cache of {capacity} positions (")), "{err}");
    }
}

/// `-t 100000` once started a thread per count until the process died.
#[test]
fn any_thread_count_is_taken_and_capped() {
    let mut m = tied_model();
    let start = std::time::Instant::now();
    for asked in [0, 1, 3, 100_000, usize::MAX] {
        let used = m.set_threads(asked);
        assert_eq!((used, m.threads()), (usable_threads(asked), used), "{asked} threads asked");
        m.forward(&[1, 2], &mut m.new_cache(2), Logits::Last).unwrap();
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(5), "{:?}", start.elapsed());
}

/// Every kernel set this CPU runs gives the scalar reference's logits bit for
/// bit, on a prompt multiplied in several passes of activation rows (with a
/// remainder that is not a multiple of four), in both orders of summation.
#[test]
fn every_kernel_set_gives_the_reference_logits_on_a_long_prompt() {
    let mut m = tied_model();
    // Passes of at most 60 rows (150 = 60 + 60 + 30): every activation row of this model is 68 bytes or more.
    m.act_bytes_per_pass = 4096;
    let tokens: Vec<u32> = (0..150).map(|i| (i * 7 % 47) as u32).collect();
    for sums in SumOrder::ALL {
        m.sum_order = sums;
        m.kernels = Kernels::SCALAR;
        let want = m.forward(&tokens, &mut m.new_cache(256), Logits::All).unwrap();
        for k in Kernels::available() {
            m.kernels = k;
            let got = m.forward(&tokens, &mut m.new_cache(256), Logits::All).unwrap();
            let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{} kernels, {sums:?}: logits differ from the scalar reference", k.name());
        }
    }
}

/// Prefills one cache per prompt and returns them with each one's next token.
fn prefilled(m: &Model, prompts: &[&[u32]]) -> Vec<(u32, KvCache)> {
    prompts
        .iter()
        .map(|p| {
            let mut cache = m.new_cache(16);
            let logits = m.forward(p, &mut cache, Logits::Last).unwrap();
            (crate::sample::argmax(&logits), cache)
        })
        .collect()
}

#[test]
fn a_batched_decode_step_equals_each_sequence_alone_bit_for_bit() {
    let mut m = tied_model();
    let prompts: [&[u32]; 5] = [&[1, 2, 3], &[40], &[7, 7, 7, 7, 7, 7], &[9, 30], &[2, 4, 8, 16, 32]];
    let vocab = m.config.vocab_size;
    for (threads, sums) in [(1, SumOrder::BatchInvariant), (3, SumOrder::BatchInvariant), (3, SumOrder::Blocks)] {
        m.sum_order = sums;
        m.set_threads(threads);
        m.set_threads(threads);
        let (mut alone, mut batched) = (prefilled(&m, &prompts), prefilled(&m, &prompts));
        for step in 0..4 {
            let want: Vec<f32> = alone
                .iter_mut()
                .flat_map(|(token, cache)| m.forward(&[*token], cache, Logits::Last).unwrap())
                .collect();
            let got = batch_step(&m, &mut batched);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "step {step}, {threads} threads, {sums:?}");
            for (i, ((t, c), (bt, bc))) in alone.iter_mut().zip(batched.iter_mut()).enumerate() {
                assert_eq!(c.len(), bc.len());
                *t = crate::sample::argmax(&want[i * vocab..(i + 1) * vocab]);
                *bt = *t;
            }
        }
    }
}

/// One batched decode step of every `(token, cache)`: the logits.
fn batch_step(m: &Model, seqs: &mut [(u32, KvCache)]) -> Vec<f32> {
    let tokens: Vec<u32> = seqs.iter().map(|(t, _)| *t).collect();
    let mut steps: Vec<(&[u32], &mut KvCache)> =
        tokens.iter().zip(seqs.iter_mut()).map(|(t, (_, c))| (std::slice::from_ref(t), c)).collect();
    let mut got = Vec::new();
    m.forward_batch(&mut steps, &mut got).unwrap();
    got
}

#[test]
fn a_prompt_run_in_a_decode_step_gives_what_it_gives_alone() {
    // A server's step: two sequences decoding, one new prompt beside them.
    let mut m = tied_model();
    let vocab = m.config.vocab_size;
    for sums in [SumOrder::BatchInvariant, SumOrder::Blocks] {
        m.sum_order = sums;
        let decoded: [&[u32]; 2] = [&[1, 2, 3], &[9, 30]];
        let prompt: &[u32] = &[5, 6, 7, 8, 9, 10, 11];
        // Each alone: the two decode steps, and the prompt.
        let mut alone = prefilled(&m, &decoded);
        let mut want: Vec<Vec<f32>> =
            alone.iter_mut().map(|(t, c)| m.forward(&[*t], c, Logits::Last).unwrap()).collect();
        want.insert(1, m.forward(prompt, &mut m.new_cache(16), Logits::Last).unwrap());
        // Together, the prompt between them.
        let mut together = prefilled(&m, &decoded);
        let tokens: Vec<u32> = together.iter().map(|(t, _)| *t).collect();
        let mut one = m.new_cache(16);
        let [(_, a), (_, b)] = &mut together[..] else { unreachable!("two sequences") };
        let mut steps: Vec<(&[u32], &mut KvCache)> = vec![(&tokens[..1], a), (prompt, &mut one), (&tokens[1..], b)];
        let mut got = Vec::new();
        m.forward_batch(&mut steps, &mut got).unwrap();
        assert_eq!(got.len(), 3 * vocab);
        assert!(got.iter().zip(want.concat()).all(|(g, w)| g.to_bits() == w.to_bits()), "{sums:?}");
        assert_eq!(one.len(), prompt.len());
    }
}

#[test]
fn a_batched_step_in_llama_cpp_order_stays_close_to_each_sequence_alone() {
    let m = tied_model();
    let prompts: [&[u32]; 5] = [&[1, 2, 3], &[5, 6], &[7, 8, 9, 10], &[11], &[12, 13]];
    let (mut alone, mut batched) = (prefilled(&m, &prompts), prefilled(&m, &prompts));
    let want: Vec<f32> =
        alone.iter_mut().flat_map(|(token, cache)| m.forward(&[*token], cache, Logits::Last).unwrap()).collect();
    let got = batch_step(&m, &mut batched);
    assert_close(&got, &want, "a batch of 5 in llama.cpp's order");
}

#[test]
fn a_batched_step_that_does_not_fit_changes_no_cache() {
    let m = tied_model();
    let mut a = m.new_cache(4);
    let mut full = m.new_cache(2);
    m.forward(&[1, 2], &mut full, Logits::Last).unwrap();
    let mut logits = Vec::new();
    let err = m.forward_batch(&mut [(&[3], &mut a), (&[4], &mut full)], &mut logits).unwrap_err();
    assert_eq!(err.to_string(), "context full: 3 positions needed, the KV cache holds 2");
    assert_eq!((a.len(), full.len()), (0, 2));
    assert!(matches!(m.forward_batch(&mut [], &mut logits), Err(ModelError::Empty)));
}

#[test]
fn bricks_refuse_bad_input_and_never_panic_on_thousands_of_seeded_cases() {
    use super::probe::{ending, run_case, Case, Ending};
    let m = tied_model();
    let mut rng = SplitMix64(2006);
    let mut by_variant = std::collections::BTreeMap::new();
    for _ in 0..3000 {
        let case = Case::draw(&mut rng);
        let end = ending(&|c| run_case(&m, c), &case);
        let want = case.defect.expected();
        match (&end, want) {
            (Ending::Ran, None) => {}
            (Ending::Refused { variant }, Some(w)) if variant == w => *by_variant.entry(w).or_insert(0) += 1,
            _ => panic!("{case:?} ended {end:?}, expected {want:?}"),
        }
    }
    assert_eq!(by_variant.keys().copied().collect::<Vec<_>>(), ["empty", "model", "non_finite", "shape"]);
}

#[test]
fn every_brick_error_variant_but_the_budget_is_produced_here() {
    use super::probe::{run_case, Case, Defect};
    // BudgetExceeded comes from strict mode: top::live's tests produce it.
    let m = tied_model();
    let case = |brick, defect| run_case(&m, &Case { brick, rows: 2, tensor: 1, defect }).unwrap_err();
    let shape = case(Brick::Attention, Defect::Short { by: 3 });
    assert!(matches!(shape, BrickError::Shape { brick: "attention", tensor: "rotated_key", .. }), "{shape}");
    let empty = case(Brick::LmHead, Defect::Empty);
    assert!(matches!(empty, BrickError::Empty { brick: "lm_head", .. }), "{empty}");
    let nan = case(Brick::Ffn, Defect::Nan);
    assert!(matches!(nan, BrickError::NonFinite { brick: "ffn", tensor: "hidden", .. }), "{nan}");
    let token = case(Brick::Embed, Defect::BadToken);
    assert!(matches!(token, BrickError::Model(ModelError::TokenOutOfRange { id: 48, .. })), "{token}");
    let produced = [&shape, &empty, &nan, &token].map(|e| e.variant());
    let left: Vec<_> = BrickError::VARIANTS.iter().filter(|v| !produced.contains(v)).collect();
    assert_eq!(left, [&"budget_exceeded"]);
}

#[test]
fn a_verified_pass_evaluates_every_assertion_and_changes_no_logit() {
    let m = tied_model();
    let tokens = [3, 1, 4, 1, 5];
    let plain = m.forward(&tokens, &mut m.new_cache(8), Logits::All).unwrap();
    // A host so slow that every budget holds: only a broken assertion can fail.
    let slow = Roofline { read_gb_s: 1e-9, int8_gops: 1e-9, f32_gflops: 1e-9 };
    let mut v = Verification::keeping_outputs(slow, 1.5);
    let mut logits = Vec::new();
    m.forward_verified(&tokens, &mut m.new_cache(8), Logits::All, &mut v, &mut logits).unwrap();
    assert_eq!(logits, plain);
    assert!(v.failures.is_empty(), "{:?}", v.failures);
    let per_pass: usize =
        m.bricks().iter().map(|b| b.assertions().len() * if b.id().per_layer() { 2 } else { 1 }).sum();
    assert_eq!((v.runs, v.evaluated), (3 + 7 * 2, per_pass));
    assert_eq!(v.first_seen.iter().map(|(b, _)| *b).collect::<Vec<_>>(), Brick::ALL);
    let head = v.outputs.unwrap().pop().unwrap();
    assert_eq!((head.brick, head.values), (Brick::LmHead, plain));
}

#[test]
fn the_registry_is_the_pass_order_with_unique_names_and_broken_runs_are_reported() {
    use super::contract::{Observation, Seen};
    let m = tied_model();
    let ids: Vec<Brick> = m.bricks().iter().map(|b| b.id()).collect();
    assert_eq!(ids, Brick::ALL);
    let qkv = m.bricks()[2];
    let seen = |tensor: &str, len, width, non_finite| Seen { tensor: tensor.into(), len, width, non_finite };
    let run = Observation {
        rows: 2,
        tensors: vec![
            seen("normed", 128, 64, 0),
            seen("query", 128, 64, 1),
            seen("key", 64, 32, 0),
            seen("value", 60, 32, 0),
        ],
        elapsed_us: 10.0,
        budget_us: 5.0,
    };
    let failed: Vec<String> = qkv.verify(&run).iter().map(|f| f.assertion.describe()).collect();
    assert_eq!(
        failed,
        ["query is finite", "value has one row of 32 values per row of the pass", "the run is within its budget"]
    );
}
