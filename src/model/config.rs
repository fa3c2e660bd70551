//! Hyperparameters of a Qwen2 model, read from GGUF metadata.

use serde::Serialize;

use super::ModelError;
use crate::gguf::GgufHeader;

/// The shape of a Qwen2-architecture transformer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// `general.architecture` (always `qwen2` here).
    pub arch: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// FFN inner size.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention).
    pub n_head_kv: usize,
    /// Dimension of one head (`n_embd / n_head`).
    pub head_dim: usize,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub context_length: usize,
}

impl ModelConfig {
    /// Reads the configuration from a GGUF header, checking it is a supported
    /// architecture and that the numbers are consistent.
    pub fn from_header(h: &GgufHeader) -> Result<ModelConfig, ModelError> {
        let arch = h
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ModelError::MissingKey("general.architecture".into()))?
            .to_owned();
        if arch != "qwen2" {
            return Err(ModelError::UnsupportedArch(arch));
        }
        let int = |key: &str| -> Result<usize, ModelError> {
            let full = format!("{arch}.{key}");
            let v = h.get(&full).ok_or_else(|| ModelError::MissingKey(full.clone()))?;
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0 && n < (1 << 24))
                .ok_or_else(|| ModelError::BadValue { key: full, value: v.to_string() })
        };
        let float = |key: &str| -> Result<f32, ModelError> {
            let full = format!("{arch}.{key}");
            let v = h.get(&full).ok_or_else(|| ModelError::MissingKey(full.clone()))?;
            v.as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .map(|x| x as f32)
                .ok_or_else(|| ModelError::BadValue { key: full, value: v.to_string() })
        };
        let n_embd = int("embedding_length")?;
        let n_head = int("attention.head_count")?;
        let n_head_kv = int("attention.head_count_kv")?;
        if !n_embd.is_multiple_of(n_head)
            || !n_head.is_multiple_of(n_head_kv)
            || !(n_embd / n_head).is_multiple_of(2)
            || n_embd / n_head > super::attention::MAX_HEAD_DIM
        {
            return Err(ModelError::BadValue {
                key: format!("{arch}.attention.head_count"),
                value: format!("{n_head} heads / {n_head_kv} KV heads for hidden size {n_embd}"),
            });
        }
        let embd =
            h.tensor("token_embd.weight").ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        Ok(ModelConfig {
            name: h.get("general.name").and_then(|v| v.as_str()).map(str::to_owned),
            n_layer: int("block_count")?,
            n_embd,
            n_ff: int("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim: n_embd / n_head,
            rope_base: float("rope.freq_base").or_else(|e| match e {
                ModelError::MissingKey(_) => Ok(10_000.0),
                e => Err(e),
            })?,
            rms_eps: float("attention.layer_norm_rms_epsilon")?,
            vocab_size: embd.dims.get(1).copied().unwrap_or(0) as usize,
            context_length: int("context_length")?,
            arch,
        })
    }

    /// Width of one layer's keys (or values): `n_head_kv * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}
