//! Shape twins: a GGUF file with the exact tensor names, shapes and quant
//! types of a Qwen2.5-Coder Q4_K_M model (0.5B or 1.5B), seeded random weights
//! and a small byte-level BPE vocabulary of the same size, written without the
//! real model (a host that cannot download it can still measure speed, which
//! depends on bytes and shapes, not values). Its metadata says it is a twin
//! (`falsify.synth.like`, `falsify.synth.seed`).

use std::io::Write;
use std::path::Path;

use crate::gguf::{GgufWriter, TensorType, Value};
use crate::rng::SplitMix64;

/// One model a twin can copy.
#[derive(Debug, Clone, Copy)]
struct Shape {
    size: &'static str,
    label: &'static str,
    /// The tensor table (`name type dims…` a line, `#` comments), taken from the real file.
    table: &'static str,
    blocks: u32,
    embedding: u32,
    feed_forward: u32,
    heads: u32,
    kv_heads: u32,
}

/// The models a twin can copy (`--like`).
const SHAPES: [Shape; 2] = [
    Shape {
        size: "0.5b",
        label: "0.5B",
        table: include_str!("synth/qwen2.5-coder-0.5b.tensors"),
        blocks: 24,
        embedding: 896,
        feed_forward: 4864,
        heads: 14,
        kv_heads: 2,
    },
    Shape {
        size: "1.5b",
        label: "1.5B",
        table: include_str!("synth/qwen2.5-coder-1.5b.tensors"),
        blocks: 28,
        embedding: 1536,
        feed_forward: 8960,
        heads: 12,
        kv_heads: 2,
    },
];

/// Qwen2.5's control and user-defined tokens from id 151643 on, with their GGUF token types.
const SPECIALS: [(&str, i32); 22] = [
    ("<|endoftext|>", 3),
    ("<|im_start|>", 3),
    ("<|im_end|>", 3),
    ("<|object_ref_start|>", 3),
    ("<|object_ref_end|>", 3),
    ("<|box_start|>", 3),
    ("<|box_end|>", 3),
    ("<|quad_start|>", 3),
    ("<|quad_end|>", 3),
    ("<|vision_start|>", 3),
    ("<|vision_end|>", 3),
    ("<|vision_pad|>", 3),
    ("<|image_pad|>", 3),
    ("<|video_pad|>", 3),
    ("<tool_call>", 4),
    ("</tool_call>", 4),
    ("<|fim_prefix|>", 3),
    ("<|fim_middle|>", 3),
    ("<|fim_suffix|>", 3),
    ("<|fim_pad|>", 3),
    ("<|repo_name|>", 3),
    ("<|file_sep|>", 3),
];

/// The id of the first special token (`<|endoftext|>`), as in Qwen2.5's vocabulary.
const FIRST_SPECIAL: usize = 151_643;

/// The sizes `--like` accepts.
pub const LIKE: [&str; 2] = ["0.5b", "1.5b"];

/// A tensor of a twin: name, dims (innermost first), type.
pub type TensorSpec = (String, Vec<u64>, TensorType);

fn shape(like: &str) -> Result<&'static Shape, String> {
    SHAPES
        .iter()
        .find(|s| s.size == like)
        .ok_or_else(|| format!("--like {like}: no such model (known: {})", LIKE.join(", ")))
}

fn tensor_type(name: &str) -> Option<TensorType> {
    Some(match name {
        "F32" => TensorType::F32,
        "Q5_0" => TensorType::Q5_0,
        "Q8_0" => TensorType::Q8_0,
        "Q4_K" => TensorType::Q4K,
        "Q6_K" => TensorType::Q6K,
        _ => return None,
    })
}

/// The tensor table of the model `like` names, in the real file's order.
pub fn tensor_table(like: &str) -> Result<Vec<TensorSpec>, String> {
    let s = shape(like)?;
    let mut out = Vec::new();
    for line in s.table.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(name), Some(ty)) = (words.next(), words.next().and_then(tensor_type)) else {
            return Err(format!("the {like} tensor table has a bad line: {line}"));
        };
        let dims: Vec<u64> = words.map(str::parse).collect::<Result<_, _>>().map_err(|e| format!("{line}: {e}"))?;
        out.push((name.to_owned(), dims, ty));
    }
    Ok(out)
}

/// A byte-level BPE vocabulary of `size` tokens that llama.cpp and this
/// engine accept: the 256 byte characters (GPT-2's alphabet, in its order),
/// merges of a space or a letter with a letter, fillers, and Qwen2.5's special
/// tokens at their ids. (tokens, token types, merges).
fn vocabulary(size: usize) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let mut alphabet = crate::tokenizer::byte_alphabet();
    alphabet.sort_unstable();
    let mut tokens: Vec<String> = alphabet.iter().map(char::to_string).collect();
    let mut merges = Vec::new();
    let letters = 'a'..='z';
    for left in std::iter::once('Ġ').chain(letters.clone()) {
        for right in letters.clone() {
            merges.push(format!("{left} {right}"));
            tokens.push(format!("{left}{right}"));
        }
    }
    let mut types = vec![1; FIRST_SPECIAL.min(size)];
    tokens.extend((tokens.len()..FIRST_SPECIAL.min(size)).map(|i| format!("[PAD{i}]")));
    for (text, ty) in SPECIALS.iter().take(size.saturating_sub(FIRST_SPECIAL)) {
        tokens.push((*text).to_owned());
        types.push(*ty);
    }
    for i in tokens.len()..size {
        tokens.push(format!("[PAD{i}]"));
        types.push(5);
    }
    let strings = |v: Vec<String>| v.into_iter().map(Value::String).collect();
    (strings(tokens), types.into_iter().map(Value::I32).collect(), strings(merges))
}

/// Seeded values for one tensor: norms near 1, biases small, and quantized
/// blocks whose scales keep activations finite through every layer.
fn weights(spec: &TensorSpec, seed: u64, index: usize) -> Vec<u8> {
    let (name, dims, ty) = spec;
    let n = dims.iter().product::<u64>() as usize;
    let mut rng = SplitMix64(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    match ty {
        TensorType::F32 => {
            let base = if name.ends_with("norm.weight") { 1.0 } else { 0.0 };
            (0..n).flat_map(|_| (base + 0.1 * uniform(&mut rng)).to_le_bytes()).collect()
        }
        TensorType::Q6K => random_weights(&mut rng, *ty, n, 0.0, 1e-5),
        TensorType::Q4K => random_weights(&mut rng, *ty, n, 0.0, 1e-4),
        _ => random_weights(&mut rng, *ty, n, 0.05, 2e-3),
    }
}

/// Uniform in [-1, 1).
pub fn uniform(rng: &mut SplitMix64) -> f32 {
    rng.next_f64() as f32 * 2.0 - 1.0
}

/// `n` random weights of type `ty`: F32/F16/Q8_0 by quantizing values in
/// ±`amplitude`; other types as random blocks whose f16 scales lie in
/// [`scale`, 2·`scale`), so every value is finite.
pub fn random_weights(rng: &mut SplitMix64, ty: TensorType, n: usize, amplitude: f32, scale: f32) -> Vec<u8> {
    let bytes = ty.row_bytes(n).expect("n is a whole number of blocks");
    if matches!(ty, TensorType::F32 | TensorType::F16 | TensorType::Q8_0) {
        let x: Vec<f32> = (0..n).map(|_| uniform(rng) * amplitude).collect();
        let mut out = vec![0u8; bytes];
        crate::quant::quantize(ty, &x, &mut out).expect("sizes match");
        return out;
    }
    let (_, block_bytes) = ty.block_geometry().expect("known type");
    let mut out: Vec<u8> = (0..bytes).map(|_| (rng.next_u64() >> 56) as u8).collect();
    let scale_at: &[usize] = match ty {
        TensorType::Q6K => &[208],
        TensorType::Q4K | TensorType::Q5K => &[0, 2],
        _ => &[0],
    };
    for block in out.chunks_exact_mut(block_bytes) {
        for &at in scale_at {
            let s = scale * (1.0 + uniform(rng).abs());
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(s).to_le_bytes());
        }
    }
    out
}

/// What [`write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Tensors in the file.
    pub tensors: usize,
    /// The file's size, bytes.
    pub bytes: u64,
}

/// Writes the twin of the model `like` names, weights from `seed`, to `path`
/// (through a temporary file beside it, renamed once complete).
pub fn write(like: &str, seed: u64, path: &Path) -> Result<Written, String> {
    let s = shape(like)?;
    let table = tensor_table(like)?;
    let vocab = table
        .iter()
        .find(|t| t.0 == "token_embd.weight")
        .and_then(|t| t.1.get(1))
        .ok_or("the tensor table has no token_embd.weight")?;
    let (tokens, types, merges) = vocabulary(*vocab as usize);
    let u32v = |v: u32| Value::U32(v);
    let meta = GgufWriter::new(3)
        .meta("general.architecture", Value::String("qwen2".into()))
        .meta("general.type", Value::String("model".into()))
        .meta(
            "general.name",
            Value::String(format!("Qwen2.5-Coder {} shape twin (falsify synth, seed {seed})", s.label)),
        )
        .meta("general.basename", Value::String("Qwen2.5-Coder".into()))
        .meta("general.size_label", Value::String(s.label.into()))
        .meta("falsify.synth.like", Value::String(format!("qwen2.5-coder-{}-instruct-q4_k_m", s.size)))
        .meta("falsify.synth.seed", Value::U64(seed))
        .meta("qwen2.block_count", u32v(s.blocks))
        .meta("qwen2.context_length", u32v(32768))
        .meta("qwen2.embedding_length", u32v(s.embedding))
        .meta("qwen2.feed_forward_length", u32v(s.feed_forward))
        .meta("qwen2.attention.head_count", u32v(s.heads))
        .meta("qwen2.attention.head_count_kv", u32v(s.kv_heads))
        .meta("qwen2.rope.freq_base", Value::F32(1_000_000.0))
        .meta("qwen2.attention.layer_norm_rms_epsilon", Value::F32(1e-6))
        .meta("general.file_type", u32v(15))
        .meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", Value::String("qwen2".into()))
        .meta("tokenizer.ggml.tokens", Value::Array(tokens))
        .meta("tokenizer.ggml.token_type", Value::Array(types))
        .meta("tokenizer.ggml.merges", Value::Array(merges))
        .meta("tokenizer.ggml.eos_token_id", u32v(151_645))
        .meta("tokenizer.ggml.padding_token_id", u32v(151_643))
        .meta("tokenizer.ggml.bos_token_id", u32v(151_643))
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(false))
        .meta("general.quantization_version", u32v(2));
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp);
    meta.write_streamed(&mut out, &table, |i| weights(&table[i], seed, i)).map_err(err)?;
    out.flush().map_err(err)?;
    let tmp = out.into_inner().map_err(|e| err(e.into_error()))?;
    // A model file others may read, not the temporary file's owner-only mode.
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    tmp.as_file().set_permissions(mode).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    let bytes = std::fs::metadata(path).map_err(err)?.len();
    Ok(Written { tensors: table.len(), bytes })
}

#[cfg(test)]
mod tests;
