//! Causal attention of one query head over the cached positions, computed in
//! one pass with an online softmax (running maximum `M` and sum `S`).
//!
//! With an f16 cache this follows llama.cpp's CPU flash-attention numerics on
//! x86 (its one-query-row kernel, which it runs for every decoded token and for
//! prompts under 64 tokens), which the agreement tests compare against: the
//! query is rounded to f16 before the dot products, which sum as its f16 dot
//! product does ([`dot`]); the weighted sum of values is accumulated in f16 by
//! fused multiply-adds (rounded after every update); the softmax sum is
//! updated by a fused multiply-add. With an f32 cache everything stays f32.

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::kv_cache::{KvCache, KvType};
use crate::kernels::{Kernels, Pool};

/// The attention heads of a model: query heads, KV heads, values per head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// Query heads.
    pub query: usize,
    /// KV heads (each shared by `query / kv` query heads).
    pub kv: usize,
    /// Values per head.
    pub dim: usize,
}

/// The prefill and decode attention the engine runs: every head of every
/// query row in `q` (rows at positions `p0..`) over layer `layer` of the
/// cache, into `out`. The (token, KV head) pairs, each with its group of
/// query heads, are dealt round-robin across the pool's threads (later tokens
/// attend over more positions); each runs [`attend_group_by`].
#[allow(clippy::too_many_arguments)]
pub fn attend_all(
    pool: &Pool,
    kernels: Kernels,
    heads: Heads,
    q: &[f32],
    cache: &KvCache,
    layer: usize,
    p0: usize,
    scale: f32,
    out: &mut [f32],
) {
    let (hd, n_kv) = (heads.dim, heads.kv);
    let width = hd * (heads.query / n_kv);
    pool.run_chunks(out, width, &|pair, o| {
        let (t, kv_head) = (pair / n_kv, pair % n_kv);
        let ctx = p0 + t + 1; // causal: positions 0..=p0+t
        attend_group_by(kernels, &q[pair * width..][..width], hd, cache, layer, kv_head, ctx, scale, o);
    });
}

/// One group of query heads over KV head `kv_head` as the engine computes it:
/// by `kernels`' fast kernel over an f16 cache where it has one, else by the
/// reference [`attend_group`].
#[allow(clippy::too_many_arguments)]
pub fn attend_group_by(
    kernels: Kernels,
    q: &[f32],
    hd: usize,
    cache: &KvCache,
    layer: usize,
    kv_head: usize,
    ctx: usize,
    scale: f32,
    out: &mut [f32],
) {
    let fast = cache.f16_layer(layer).is_some_and(|(keys, values)| {
        let rows = (cache.kv_dim(), kv_head * hd);
        kernels.attend_group_f16(q, hd, keys, values, rows, ctx, scale, out)
    });
    if !fast {
        attend_group(q, hd, cache, layer, kv_head * hd, ctx, scale, out);
    }
}

/// Writes into `out` the attention of query `q` (one head) over positions
/// `0..ctx` of `layer`, reading the KV head whose elements start at `kv_offset`.
pub fn attend(q: &[f32], cache: &KvCache, layer: usize, kv_offset: usize, ctx: usize, scale: f32, out: &mut [f32]) {
    attend_group(q, q.len(), cache, layer, kv_offset, ctx, scale, out);
}

/// [`attend`] for the query heads that share one KV head (grouped-query
/// attention): `q` and `out` hold `q.len() / hd` heads of `hd` values. Each
/// cached key and value is read and converted once for all of them; every
/// head's arithmetic is exactly that of [`attend`].
#[allow(clippy::too_many_arguments)]
pub fn attend_group(
    q: &[f32],
    hd: usize,
    cache: &KvCache,
    layer: usize,
    kv_offset: usize,
    ctx: usize,
    scale: f32,
    out: &mut [f32],
) {
    let heads = q.len() / hd;
    assert!(heads <= MAX_GROUP && hd <= MAX_HEAD_DIM, "{heads} heads of {hd}: over the supported group and head size");
    let half = cache.kv_type() == KvType::F16;
    // The queries as the dot products see them.
    let mut qbuf = [0.0f32; MAX_GROUP * MAX_HEAD_DIM];
    let qr = &mut qbuf[..q.len()];
    qr.copy_from_slice(q);
    if half {
        qr.chunks_exact_mut(hd).for_each(round_to_f16);
    }
    out.fill(0.0);
    let (mut kbuf, mut vbuf) = ([0.0f32; MAX_HEAD_DIM], [0.0f32; MAX_HEAD_DIM]);
    let (mut max, mut sum) = ([f32::NEG_INFINITY; MAX_GROUP], [0.0f32; MAX_GROUP]);
    for p in 0..ctx {
        let k = cache.key(layer, p, kv_offset, hd).as_f32(&mut kbuf);
        let v = cache.value(layer, p, kv_offset, hd).as_f32(&mut vbuf);
        for (h, (qh, o)) in qr.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).enumerate() {
            let s = dot(qh, k) * scale;
            let (mut ms, mut vs) = (1.0f32, 1.0f32);
            if s > max[h] {
                let old = max[h];
                max[h] = s;
                ms = (old - s).exp();
                if ms != 1.0 {
                    o.iter_mut().for_each(|o| *o *= ms);
                    if half {
                        round_to_f16(o);
                    }
                }
            } else {
                vs = (s - max[h]).exp();
            }
            for (o, &x) in o.iter_mut().zip(v) {
                *o = x.mul_add(vs, *o);
            }
            if half {
                round_to_f16(o);
            }
            sum[h] = sum[h].mul_add(ms, vs);
        }
    }
    for (o, s) in out.chunks_exact_mut(hd).zip(sum) {
        let inv = 1.0 / s;
        o.iter_mut().for_each(|o| *o *= inv);
    }
}

/// Dot product as llama.cpp's f16 dot product sums on x86: each run of 32
/// elements into four accumulators of eight lanes (elements `8j..8j + 8` of
/// the run into accumulator `j`, by fused multiply-adds); accumulators 0 + 2
/// and 1 + 3, then those two; the eight lanes added as `(l0+l4) + (l1+l5)` and
/// `(l2+l6) + (l3+l7)`, then those two; the elements past the last full run
/// added one by one in f64.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [[0.0f32; 8]; 4];
    let (ac, bc) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail = ac.remainder().iter().zip(bc.remainder());
    for (x, y) in ac.zip(bc) {
        for (j, acc) in acc.iter_mut().enumerate() {
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc = x[8 * j + i].mul_add(y[8 * j + i], *acc);
            }
        }
    }
    let l: [f32; 8] = std::array::from_fn(|i| (acc[0][i] + acc[2][i]) + (acc[1][i] + acc[3][i]));
    let t: [f32; 4] = std::array::from_fn(|i| l[i] + l[i + 4]);
    let sum = f64::from((t[0] + t[1]) + (t[2] + t[3]));
    tail.fold(sum, |s, (x, y)| s + f64::from(x * y)) as f32
}

/// Rounds every value to the nearest f16 (as an f16 accumulator would hold it).
fn round_to_f16(x: &mut [f32]) {
    let mut h = [f16::ZERO; MAX_HEAD_DIM];
    let h = &mut h[..x.len()];
    h.convert_from_f32_slice(x);
    h.convert_to_f32_slice(x);
}

/// Largest head dimension supported (Qwen2.5 uses 64 and 128).
pub const MAX_HEAD_DIM: usize = 256;

/// Most query heads sharing one KV head (Qwen2.5: 5 to 7).
pub const MAX_GROUP: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ty: KvType, keys: &[Vec<f32>], values: &[Vec<f32>]) -> KvCache {
        let mut c = KvCache::new(ty, 1, keys[0].len(), keys.len());
        for (p, (k, v)) in keys.iter().zip(values).enumerate() {
            c.write(0, p, k, v).unwrap();
        }
        c.advance(keys.len());
        c
    }

    fn data(n: usize, hd: usize, seed: f32) -> Vec<Vec<f32>> {
        (0..n).map(|p| (0..hd).map(|i| ((p * hd + i) as f32 * seed).sin()).collect()).collect()
    }

    /// Two-pass softmax attention in f64, the textbook definition.
    fn naive(q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>], scale: f32) -> Vec<f32> {
        let s: Vec<f64> =
            k.iter().map(|k| q.iter().zip(k).map(|(a, b)| f64::from(a * b)).sum::<f64>() * f64::from(scale)).collect();
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|s| (s - max).exp()).collect();
        let z: f64 = e.iter().sum();
        (0..q.len()).map(|i| (e.iter().zip(v).map(|(w, v)| w * f64::from(v[i])).sum::<f64>() / z) as f32).collect()
    }

    #[test]
    fn online_softmax_equals_the_two_pass_definition() {
        let (k, v, q) = (data(37, 16, 0.37), data(37, 16, 0.11), data(1, 16, 0.7).remove(0));
        let c = cache(KvType::F32, &k, &v);
        let mut out = vec![0.0; 16];
        attend(&q, &c, 0, 0, 37, 0.25, &mut out);
        let want = naive(&q, &k, &v, 0.25);
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn a_group_computes_exactly_what_each_head_alone_does() {
        for ty in [KvType::F32, KvType::F16] {
            let (k, v) = (data(29, 16, 0.37), data(29, 16, 0.11));
            let c = cache(ty, &k, &v);
            let q: Vec<f32> = data(3, 16, 0.7).concat();
            let mut together = vec![0.0; 48];
            attend_group(&q, 16, &c, 0, 0, 29, 0.25, &mut together);
            for h in 0..3 {
                let mut alone = vec![0.0; 16];
                attend(&q[16 * h..16 * h + 16], &c, 0, 0, 29, 0.25, &mut alone);
                assert_eq!(&together[16 * h..16 * h + 16], &alone[..], "{ty:?} head {h}");
            }
        }
    }

    #[test]
    fn the_fast_kernel_equals_the_reference_bit_for_bit() {
        use crate::kernels::Kernels;
        // Every set this CPU runs: each ISA's kernel is checked, not only the fastest.
        let cases =
            [(64usize, 7usize, 1usize), (64, 7, 37), (64, 7, 129), (128, 6, 300), (256, 2, 70), (32, 2, 5), (16, 2, 5)];
        for (fast, (hd, heads, ctx)) in Kernels::available().into_iter().flat_map(|k| cases.map(|c| (k, c))) {
            let (k, v) = (data(ctx, 2 * hd, 0.37), data(ctx, 2 * hd, 0.11));
            let c = cache(KvType::F16, &k, &v);
            let q: Vec<f32> = data(heads, hd, 0.7).concat().iter().map(|x| x * 3.0).collect();
            for kv_head in 0..2 {
                let mut want = vec![0.0; q.len()];
                attend_group(&q, hd, &c, 0, kv_head * hd, ctx, 0.125, &mut want);
                let (keys, values) = c.f16_layer(0).unwrap();
                let mut got = vec![f32::NAN; q.len()];
                let rows = (2 * hd, kv_head * hd);
                let ran = fast.attend_group_f16(&q, hd, keys, values, rows, ctx, 0.125, &mut got);
                // Every head size the Qwen2.5 models use has a fast kernel where the CPU has one.
                assert_eq!(ran, fast != Kernels::SCALAR && hd >= 32, "hd {hd}");
                if ran {
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{} hd {hd} heads {heads} ctx {ctx} kv head {kv_head}: {got:?} vs {want:?}",
                        fast.name()
                    );
                }
            }
        }
        assert!(!Kernels::SCALAR.attend_group_f16(&[0.0; 8], 8, &[], &[], (8, 0), 0, 1.0, &mut [0.0; 8]));
    }

    #[test]
    fn one_position_returns_its_value_and_f16_stays_close() {
        let (k, v, q) = (data(20, 8, 0.9), data(20, 8, 0.3), data(1, 8, 0.5).remove(0));
        let mut out = vec![0.0; 8];
        attend(&q, &cache(KvType::F32, &k, &v), 0, 0, 1, 1.0, &mut out);
        assert_eq!(out, v[0]);
        let mut half = vec![0.0; 8];
        attend(&q, &cache(KvType::F16, &k, &v), 0, 0, 20, 0.3, &mut half);
        attend(&q, &cache(KvType::F32, &k, &v), 0, 0, 20, 0.3, &mut out);
        for (a, b) in half.iter().zip(&out) {
            assert!((a - b).abs() < 5e-3, "f16 {a} vs f32 {b}");
        }
    }
}
