//! The 32-element block formats: Q4_0, Q5_0 and Q8_0 (weights), and Q8_0 as
//! the activation format their dot products use.
//!
//! Layouts (little-endian, as in GGUF):
//! - Q4_0: `d: f16, qs: [u8; 16]`; element `j` is the low nibble of `qs[j]`,
//!   element `j + 16` the high nibble; value = `d * (q - 8)`.
//! - Q5_0: `d: f16, qh: u32, qs: [u8; 16]`; bit `j` of `qh` is the fifth bit of
//!   element `j`, bit `j + 16` that of element `j + 16`; value = `d * (q - 16)`.
//! - Q8_0: `d: f16, qs: [i8; 32]`; value = `d * q`.

use super::f16_at;

/// Elements per block.
pub const QK: usize = 32;
/// Bytes of a Q4_0 block.
pub const Q4_0_BYTES: usize = 18;
/// Bytes of a Q5_0 block.
pub const Q5_0_BYTES: usize = 22;
/// Bytes of a Q8_0 block.
pub const Q8_0_BYTES: usize = 34;

/// Unpacks a Q4_0 block's quants to signed values.
fn q4_0_values(b: &[u8]) -> [i8; QK] {
    let mut q = [0i8; QK];
    for j in 0..16 {
        q[j] = (b[2 + j] & 0x0F) as i8 - 8;
        q[j + 16] = (b[2 + j] >> 4) as i8 - 8;
    }
    q
}

/// Unpacks a Q5_0 block's quants to signed values.
fn q5_0_values(b: &[u8]) -> [i8; QK] {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let mut q = [0i8; QK];
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        q[j] = ((b[6 + j] & 0x0F) | h0) as i8 - 16;
        q[j + 16] = ((b[6 + j] >> 4) | h1) as i8 - 16;
    }
    q
}

fn q8_0_values(b: &[u8]) -> [i8; QK] {
    let mut q = [0i8; QK];
    for (dst, &src) in q.iter_mut().zip(&b[2..2 + QK]) {
        *dst = src as i8;
    }
    q
}

fn dequantize_blocks(bytes: &[u8], block_bytes: usize, out: &mut [f32], values: fn(&[u8]) -> [i8; QK]) {
    for (b, y) in bytes.chunks_exact(block_bytes).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (y, q) in y.iter_mut().zip(values(b)) {
            *y = f32::from(q) * d;
        }
    }
}

/// Dequantizes Q4_0 blocks.
pub fn dequantize_q4_0(bytes: &[u8], out: &mut [f32]) {
    dequantize_blocks(bytes, Q4_0_BYTES, out, q4_0_values);
}

/// Dequantizes Q5_0 blocks.
pub fn dequantize_q5_0(bytes: &[u8], out: &mut [f32]) {
    dequantize_blocks(bytes, Q5_0_BYTES, out, q5_0_values);
}

/// Dequantizes Q8_0 blocks.
pub fn dequantize_q8_0(bytes: &[u8], out: &mut [f32]) {
    dequantize_blocks(bytes, Q8_0_BYTES, out, q8_0_values);
}

/// How Q8_0 activation quants are rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Q8_0Rounding {
    /// ggml's reference (`quantize_row_q8_0_ref`, gguf-py): `q = round_half_away(x · (1/d))`.
    Reference,
    /// llama.cpp's x86 CPU backend at run time: `q = round_half_even(x · (127/max|x|))`.
    CpuRuntime,
}

/// Quantizes activations to Q8_0: `d = max|x| / 127` stored as f16, quants
/// rounded as `rounding` says.
#[inline(always)]
pub fn quantize_q8_0(x: &[f32], out: &mut [u8], rounding: Q8_0Rounding) {
    for (xs, b) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        b[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        match rounding {
            Q8_0Rounding::Reference => {
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                for (q, &v) in b[2..].iter_mut().zip(xs) {
                    *q = (v * id).round() as i8 as u8;
                }
            }
            Q8_0Rounding::CpuRuntime => {
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                for (q, &v) in b[2..].iter_mut().zip(xs) {
                    *q = super::round_even_small(v * id) as i8 as u8;
                }
            }
        }
    }
}

/// Σ over blocks: in llama.cpp's x86 lane order ([`super::Lanes`]), or when
/// `whole` ([`super::Order::Batch`]) each block's 32 products as one exact
/// integer sum added by one fused multiply-add, `acc = fma(isum, d_w · d_a, acc)`.
fn dot_blocks(w: &[u8], w_block_bytes: usize, a: &[u8], values: fn(&[u8]) -> [i8; QK], whole: bool) -> f32 {
    let mut sum = super::BlockSum::new(whole);
    for (wb, ab) in w.chunks_exact(w_block_bytes).zip(a.chunks_exact(Q8_0_BYTES)) {
        let aq: [i8; QK] = std::array::from_fn(|e| ab[2 + e] as i8);
        sum.add(f16_at(wb, 0) * f16_at(ab, 0), super::q0_lanes(&values(wb), &aq));
    }
    sum.total()
}

/// Dot product of Q4_0 weights with Q8_0 activations, in whole blocks when `whole` ([`dot_blocks`]).
pub fn dot_q4_0_q8_0(w: &[u8], a: &[u8], whole: bool) -> f32 {
    dot_blocks(w, Q4_0_BYTES, a, q4_0_values, whole)
}

/// Dot product of Q5_0 weights with Q8_0 activations, in whole blocks when `whole` ([`dot_blocks`]).
pub fn dot_q5_0_q8_0(w: &[u8], a: &[u8], whole: bool) -> f32 {
    dot_blocks(w, Q5_0_BYTES, a, q5_0_values, whole)
}

/// Dot product of Q8_0 weights with Q8_0 activations, in whole blocks when `whole` ([`dot_blocks`]).
pub fn dot_q8_0_q8_0(w: &[u8], a: &[u8], whole: bool) -> f32 {
    dot_blocks(w, Q8_0_BYTES, a, q8_0_values, whole)
}
