//! The 256-element super-block formats: Q4_K, Q5_K and Q6_K (weights), and
//! Q8_K, the activation format their dot products use.
//!
//! Layouts (little-endian, as in GGUF):
//! - Q4_K: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`. Eight
//!   sub-blocks of 32 with 6-bit scale and min packed in `scales`; value =
//!   `d * sc * q - dmin * m`. Each 64-element group takes the low nibbles of
//!   32 `qs` bytes, then their high nibbles.
//! - Q5_K: `d, dmin, scales[12], qh: [u8; 32], qs: [u8; 128]`; like Q4_K with a
//!   fifth bit per element from `qh` (bit pair `2k, 2k+1` for group `k`).
//! - Q6_K: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`; sixteen
//!   sub-blocks of 16 with int8 scales; value = `d * sc * (q - 32)`.
//! - Q8_K: `d: f32, qs: [i8; 256], bsums: [i16; 16]` (sums of each 16 quants).

use super::f16_at;

/// Elements per super-block.
pub const QK_K: usize = 256;
/// Bytes of a Q4_K block.
pub const Q4K_BYTES: usize = 144;
/// Bytes of a Q5_K block.
pub const Q5K_BYTES: usize = 176;
/// Bytes of a Q6_K block.
pub const Q6K_BYTES: usize = 210;
/// Bytes of a Q8_K block.
pub const Q8K_BYTES: usize = 292;

/// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes.
pub(crate) fn scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// The unsigned quants (0..=31) of a Q4_K or Q5_K block, in element order.
pub(crate) fn q45k_values(b: &[u8], fifth_bit: bool) -> [u8; QK_K] {
    let (qh, qs) = if fifth_bit { (&b[16..48], &b[48..176]) } else { (&b[16..16], &b[16..144]) };
    let mut q = [0u8; QK_K];
    for g in 0..4 {
        for l in 0..32 {
            let byte = qs[32 * g + l];
            let (mut lo, mut hi) = (byte & 0x0F, byte >> 4);
            if fifth_bit {
                lo |= ((qh[l] >> (2 * g)) & 1) << 4;
                hi |= ((qh[l] >> (2 * g + 1)) & 1) << 4;
            }
            q[64 * g + l] = lo;
            q[64 * g + 32 + l] = hi;
        }
    }
    q
}

fn dequantize_q45k(bytes: &[u8], block_bytes: usize, out: &mut [f32], fifth_bit: bool) {
    for (b, y) in bytes.chunks_exact(block_bytes).zip(out.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let q = q45k_values(b, fifth_bit);
        for (j, (ys, qs)) in y.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
            let (sc, m) = scale_min(j, &b[4..16]);
            let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
            for (y, &q) in ys.iter_mut().zip(qs) {
                *y = d1 * f32::from(q) - m1;
            }
        }
    }
}

/// Dequantizes Q4_K blocks.
pub fn dequantize_q4k(bytes: &[u8], out: &mut [f32]) {
    dequantize_q45k(bytes, Q4K_BYTES, out, false);
}

/// Dequantizes Q5_K blocks.
pub fn dequantize_q5k(bytes: &[u8], out: &mut [f32]) {
    dequantize_q45k(bytes, Q5K_BYTES, out, true);
}

/// The signed quants (-32..=31) of a Q6_K block in element order, and its 16 scales.
pub(crate) fn q6k_values(b: &[u8]) -> ([i8; QK_K], [i8; 16]) {
    let (ql, qh) = (&b[..128], &b[128..192]);
    let mut q = [0i8; QK_K];
    for half in 0..2 {
        let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
        let q = &mut q[128 * half..];
        for l in 0..32 {
            q[l] = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            q[l + 32] = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            q[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            q[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    let mut sc = [0i8; 16];
    for (s, &raw) in sc.iter_mut().zip(&b[192..208]) {
        *s = raw as i8;
    }
    (q, sc)
}

/// Dequantizes Q6_K blocks.
pub fn dequantize_q6k(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(Q6K_BYTES).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 208);
        let (q, sc) = q6k_values(b);
        for (i, (ys, qs)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            let ds = d * f32::from(sc[i]);
            for (y, &q) in ys.iter_mut().zip(qs) {
                *y = ds * f32::from(q);
            }
        }
    }
}

/// Quantizes activations to Q8_K as ggml's reference does: the element of
/// largest magnitude maps to -127 (`iscale = -127 / max`), quants round to
/// nearest-even and clamp at 127, `d = 1 / iscale`, and `bsums` hold the sum of
/// each 16 quants.
#[inline(always)]
pub fn quantize_q8k(x: &[f32], out: &mut [u8]) {
    for (xs, b) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q8K_BYTES)) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xs {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            b.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        let mut qs = [0i8; QK_K];
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = (super::round_even_small(iscale * v) as i32).min(127) as i8;
        }
        b[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        for (dst, &q) in b[4..260].iter_mut().zip(&qs) {
            *dst = q as u8;
        }
        for (j, chunk) in qs.chunks_exact(16).enumerate() {
            let s: i16 = chunk.iter().map(|&q| i16::from(q)).sum();
            b[260 + 2 * j..262 + 2 * j].copy_from_slice(&s.to_le_bytes());
        }
    }
}

/// A Q8_K block's scale and quants.
fn q8k_parts(a: &[u8]) -> (f32, &[u8]) {
    (f32::from_le_bytes([a[0], a[1], a[2], a[3]]), &a[4..260])
}

/// Sum over 32-element sub-blocks of `weight_scale * Σ q_w q_a` (integer) and of
/// `weight_min * Σ q_a`, for the Q4_K/Q5_K formula, in the order of llama.cpp's
/// repacked Q4_K kernels on x86: the scaled sums and the scaled mins each go
/// into their own f32 accumulator by a fused multiply-add (`d · d_a` and
/// `dmin · d_a` as factors), once per block (its gemv) or, `per_pair`, once
/// per pair of sub-blocks (its gemm); the second is taken off the first at
/// the end.
fn dot_q45k(w: &[u8], block_bytes: usize, a: &[u8], fifth_bit: bool, per_pair: bool) -> f32 {
    let (mut acc, mut acc_min) = (0.0f32, 0.0f32);
    for (wb, ab) in w.chunks_exact(block_bytes).zip(a.chunks_exact(Q8K_BYTES)) {
        let (da, qa) = q8k_parts(ab);
        let q = q45k_values(wb, fifth_bit);
        let (d, dmin) = (f16_at(wb, 0) * da, f16_at(wb, 2) * da);
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = scale_min(j, &wb[4..16]);
            let range = 32 * j..32 * j + 32;
            let dot: i32 =
                q[range.clone()].iter().zip(&qa[range.clone()]).map(|(&x, &y)| i32::from(x) * i32::from(y as i8)).sum();
            let qsum: i32 = qa[range].iter().map(|&y| i32::from(y as i8)).sum();
            isum += i32::from(sc) * dot;
            msum += i32::from(m) * qsum;
            if (per_pair && j % 2 == 1) || j == 7 {
                acc = (isum as f32).mul_add(d, acc);
                acc_min = (msum as f32).mul_add(dmin, acc_min);
                (isum, msum) = (0, 0);
            }
        }
    }
    acc - acc_min
}

/// Dot product of Q4_K weights with Q8_K activations ([`dot_q45k`]).
pub fn dot_q4k_q8k(w: &[u8], a: &[u8], per_pair: bool) -> f32 {
    dot_q45k(w, Q4K_BYTES, a, false, per_pair)
}

/// Dot product of Q5_K weights with Q8_K activations ([`dot_q45k`]).
pub fn dot_q5k_q8k(w: &[u8], a: &[u8], per_pair: bool) -> f32 {
    dot_q45k(w, Q5K_BYTES, a, true, per_pair)
}

/// The eight lane sums of one Q6_K × Q8_K block as llama.cpp's AVX2 kernel
/// forms them: lane `m` = Σ over the eight 32-element chunks `c` of the scale
/// of the chunk's sub-block holding elements `4m..4m + 4` times their unsigned
/// quants (`q + 32`, 0..64) · the activations, less `32 · (bsums[2m] ·
/// scales[2m] + bsums[2m + 1] · scales[2m + 1])`: the offset of sub-blocks
/// `2m` and `2m + 1` goes to lane `m`, whichever lanes their products went to.
/// The total over the lanes is the block's exact integer sum.
pub(crate) fn q6k_lanes(q: &[i8; QK_K], scales: &[i32], a: &[i8], bsums: &[i32]) -> [i32; 8] {
    std::array::from_fn(|m| {
        let products: i32 = (0..8)
            .map(|c| {
                let dot: i32 =
                    (32 * c + 4 * m..32 * c + 4 * m + 4).map(|e| (i32::from(q[e]) + 32) * i32::from(a[e])).sum();
                scales[2 * c + m / 4] * dot
            })
            .sum();
        products - 32 * (bsums[2 * m] * scales[2 * m] + bsums[2 * m + 1] * scales[2 * m + 1])
    })
}

/// Dot product of Q6_K weights with Q8_K activations, in llama.cpp's x86
/// orders: its `vec_dot` ([`super::Lanes`], [`q6k_lanes`]) or, `tiled`, its
/// tiled batch kernel, which adds each block's exact integer sum as
/// `acc = fma(d · isum, d_a, acc)`.
pub fn dot_q6k_q8k(w: &[u8], a: &[u8], tiled: bool) -> f32 {
    let (mut lanes, mut acc) = (super::Lanes::default(), 0.0f32);
    for (wb, ab) in w.chunks_exact(Q6K_BYTES).zip(a.chunks_exact(Q8K_BYTES)) {
        let (da, qa) = q8k_parts(ab);
        let (q, sc) = q6k_values(wb);
        let qa: [i8; QK_K] = std::array::from_fn(|i| qa[i] as i8);
        let scales: [i32; 16] = sc.map(i32::from);
        let bsums: [i32; 16] =
            std::array::from_fn(|j| i32::from(i16::from_le_bytes([ab[260 + 2 * j], ab[261 + 2 * j]])));
        let sums = q6k_lanes(&q, &scales, &qa, &bsums);
        if tiled {
            acc = (f16_at(wb, 208) * sums.iter().sum::<i32>() as f32).mul_add(da, acc);
        } else {
            lanes.add_block(da * f16_at(wb, 208), sums);
        }
    }
    if tiled {
        acc
    } else {
        lanes.sum()
    }
}
