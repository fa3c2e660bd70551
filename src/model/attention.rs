//! Causal attention of one query head over the cached positions, computed in
//! one pass with an online softmax (running maximum `M` and sum `S`).
//!
//! With an f16 cache this follows llama.cpp's CPU flash-attention numerics,
//! which the agreement tests compare against: the query is rounded to f16
//! before the dot products, and the weighted sum of values is accumulated in
//! f16 (rounded after every update). With an f32 cache everything stays f32.

use half::f16;

use super::kv_cache::{KvCache, KvType};

/// Writes into `out` the attention of query `q` (one head) over positions
/// `0..ctx` of `layer`, reading the KV head whose elements start at `kv_offset`.
pub fn attend(q: &[f32], cache: &KvCache, layer: usize, kv_offset: usize, ctx: usize, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    let half = cache.kv_type() == KvType::F16;
    let round = |x: f32| if half { f16::from_f32(x).to_f32() } else { x };
    // The query as the dot product sees it.
    let mut qr = [0.0f32; MAX_HEAD_DIM];
    let qr = &mut qr[..hd];
    for (d, &s) in qr.iter_mut().zip(q) {
        *d = round(s);
    }
    out.fill(0.0);
    let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    for p in 0..ctx {
        let k = cache.key(layer, p, kv_offset, hd);
        let s = qr.iter().enumerate().map(|(i, &x)| x * k.get(i)).sum::<f32>() * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > max {
            let old = max;
            max = s;
            ms = (old - max).exp();
            if ms != 1.0 {
                out.iter_mut().for_each(|o| *o = round(*o * ms));
            }
        } else {
            vs = (s - max).exp();
        }
        let v = cache.value(layer, p, kv_offset, hd);
        for (i, o) in out.iter_mut().enumerate() {
            *o = round(*o + v.get(i) * vs);
        }
        sum = sum * ms + vs;
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inv);
}

/// Largest head dimension supported (Qwen2.5 uses 64 and 128).
pub const MAX_HEAD_DIM: usize = 256;
