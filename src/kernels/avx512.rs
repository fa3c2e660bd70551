//! AVX-512 VNNI kernels (with AVX-512 F/BW/VL and the AVX2 set beneath them):
//! the packed Q5_0 and Q8_0 tiles times Q8_0 activations.
//!
//! `vpdpbusd` forms four unsigned × signed byte products and adds them to a
//! 32-bit lane in one instruction, exactly (no 16-bit intermediate that could
//! saturate): where the AVX2 kernels need `maddubs`, `madd` and an add, these
//! need one. The lanes and their order are the AVX2 kernels' ([`super::avx2`]),
//! so the results equal the scalar reference bit for bit. The 32 vector
//! registers of AVX-512 hold the eight lane accumulators of two activation
//! rows at once, so each weight vector is loaded once for both.
//!
//! The vectors stay 256 bits wide: on the hosts measured (AMD Zen 4) a 512-bit
//! operation costs two 256-bit ones, and the tiles are eight rows of 32 bits.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::avx2::{bcast4, lane_total, load, load128, store_rows};
use super::packed::{ActRow, PackedFormat, TILE_ROWS};

/// Eight f16 scales at the start of `b`, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scales(b: &[u8]) -> __m256 {
    _mm256_cvtph_ps(load128(b))
}

/// The 32-bit value at index `at` of `p`, in every lane.
///
/// # Safety
/// `p + 4 · at` must have 4 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn bcast_i32(p: *const i32, at: usize) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes at `p + at`.
    unsafe { _mm256_set1_epi32(p.add(at).read_unaligned()) }
}

/// Checks an activation row of Q8_0 blocks for `blocks` blocks.
fn check_q8_0_row(act: &ActRow, blocks: usize) {
    assert!(act.q.len() >= 32 * blocks && act.abs.len() >= 32 * blocks && act.d.len() >= blocks);
    assert!(act.offset4.len() >= 8 * blocks, "an activation row without its Q5_0 offsets");
}

/// The eight rows of a packed Q5_0 or Q8_0 tile · one activation row: the
/// lanes and fused multiply-adds of [`super::avx2::tile_dot`], each lane's
/// integer sum formed by `vpdpbusd`. Q5_0 starts each lane at the offset of
/// 16 times the activations' sum ([`ActRow::offset4`]) and adds the unsigned
/// quants' products to it; Q8_0 multiplies |a| by w with a's sign.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn tile_dot(format: PackedFormat, tile: &[u8], blocks: usize, act: &ActRow) -> [f32; TILE_ROWS] {
    let bb = format.block_bytes();
    assert!(tile.len() >= bb * blocks, "tile shorter than its blocks");
    check_q8_0_row(act, blocks);
    // Every read below is in bounds by the assertions above: block b < blocks of
    // the tile (bb bytes each), and elements 32b..32b + 32 of the activation row.
    let (q, abs, off) = (act.q.as_ptr().cast::<u8>(), act.abs.as_ptr(), act.offset4.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 8];
    for b in 0..blocks {
        let blk = &tile[b * bb..][..bb];
        super::avx2::prefetch_ahead(blk.as_ptr(), bb);
        let ds = _mm256_mul_ps(scales(blk), _mm256_set1_ps(act.d[b]));
        match format {
            PackedFormat::Q5_0 => {
                let mut bits = super::avx2::q5_0_plane_bits(load(&blk[16..]));
                for p in 0..4 {
                    let (lo, hi) = super::avx2::q5_0_pair(load(&blk[48 + 32 * p..]), &mut bits);
                    let at = 32 * b + 4 * p;
                    // SAFETY: elements at..at + 20 and offsets 8b + p + 4 are in bounds (see above).
                    let (l, h) = unsafe {
                        (
                            _mm256_dpbusd_epi32(bcast_i32(off, 8 * b + p), lo, bcast4(q, at)),
                            _mm256_dpbusd_epi32(bcast_i32(off, 8 * b + p + 4), hi, bcast4(q, at + 16)),
                        )
                    };
                    acc[p] = _mm256_fmadd_ps(ds, _mm256_cvtepi32_ps(l), acc[p]);
                    acc[p + 4] = _mm256_fmadd_ps(ds, _mm256_cvtepi32_ps(h), acc[p + 4]);
                }
            }
            PackedFormat::Q8_0 => {
                for (v, a) in acc.iter_mut().enumerate() {
                    let at = 32 * b + 4 * v;
                    // SAFETY: elements at..at + 4 are in bounds (see above).
                    let (sa, sq) = unsafe { (bcast4(abs, at), bcast4(q, at)) };
                    let w = _mm256_sign_epi8(load(&blk[16 + 32 * v..]), sq);
                    *a =
                        _mm256_fmadd_ps(ds, _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), sa, w)), *a);
                }
            }
            PackedFormat::Q4K | PackedFormat::Q6K => panic!("K-quant tiles go to the K-quant kernels"),
        }
    }
    store_rows([lane_total(acc)])[0]
}

/// [`tile_dot`] for a Q5_0 tile already unpacked by
/// [`super::avx2::unpack_q5_0`] into `quants` (`tile` still gives the
/// scales), for `N` activation rows at once: each weight vector is loaded once
/// for all of them, each row keeps its own eight lanes, summed as one row alone
/// would be, so equal bit for bit.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn tile_gemm_q5_0<const N: usize>(
    tile: &[u8],
    quants: &[u8],
    blocks: usize,
    acts: [&ActRow; N],
) -> [[f32; TILE_ROWS]; N] {
    let bb = PackedFormat::Q5_0.block_bytes();
    assert!(tile.len() >= bb * blocks && quants.len() >= super::avx2::Q5_0_UNPACKED * blocks);
    acts.iter().for_each(|a| check_q8_0_row(a, blocks));
    let q: [*const u8; N] = std::array::from_fn(|t| acts[t].q.as_ptr().cast());
    let off: [*const i32; N] = std::array::from_fn(|t| acts[t].offset4.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); 8]; N];
    for b in 0..blocks {
        let sw = scales(&tile[b * bb..]);
        let ds: [__m256; N] = std::array::from_fn(|t| _mm256_mul_ps(sw, _mm256_set1_ps(acts[t].d[b])));
        let w = &quants[super::avx2::Q5_0_UNPACKED * b..][..super::avx2::Q5_0_UNPACKED];
        for v in 0..8 {
            let wv = load(&w[32 * v..]);
            for t in 0..N {
                // SAFETY: element 32b + 4v + 4 and offset 8b + v of each row are in bounds (checked above).
                let l = unsafe { _mm256_dpbusd_epi32(bcast_i32(off[t], 8 * b + v), wv, bcast4(q[t], 32 * b + 4 * v)) };
                acc[t][v] = _mm256_fmadd_ps(ds[t], _mm256_cvtepi32_ps(l), acc[t][v]);
            }
        }
    }
    store_rows(acc.map(|a| lane_total(a)))
}

/// The eight rows of a packed Q5_0 or Q8_0 tile · `N` activation rows in
/// whole blocks ([`super::avx2::q0_tiles_whole`]), each block's 32 products
/// of a row summed by eight chained `vpdpbusd`s from its offset: Q5_0's
/// unsigned quants less 16 times the activations' block sum, Q8_0's weights
/// turned unsigned by adding 128 (flipping the top bit, once for all rows)
/// less 128 times it. Exact in 32 bits, so equal bit for bit to the reference.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn tile_dot_whole<const N: usize>(
    format: PackedFormat,
    tile: &[u8],
    blocks: usize,
    acts: [&ActRow; N],
) -> [[f32; TILE_ROWS]; N] {
    let top = _mm256_set1_epi8(i8::MIN);
    let offset = if format == PackedFormat::Q5_0 { -16 } else { -128 };
    super::avx2::q0_tiles_whole(
        format,
        tile,
        blocks,
        acts,
        |v| _mm256_xor_si256(v, top),
        |w, row, b| {
            let q: *const u8 = row.q.as_ptr().cast();
            (0..8).fold(_mm256_set1_epi32(offset * row.sum32[b]), |s, v| {
                // SAFETY: elements 32b..32b + 32 of the row are in bounds (asserted by q0_tiles_whole).
                _mm256_dpbusd_epi32(s, w[v], unsafe { bcast4(q, 32 * b + 4 * v) })
            })
        },
    )
}

/// Σ a[i]·b[i] of unsigned × signed bytes by `vpdpbusd`: the int8 peak of
/// these kernels, for the compute probe. Lengths must be equal and a multiple
/// of 128.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn dot_u8_i8(a: &[u8], b: &[i8]) -> i32 {
    super::avx2::sum_byte_products(a, b, |s, u, v| _mm256_dpbusd_epi32(s, u, v))
}

/// The eight rows of a packed Q4_K tile · `N` Q8_K activation rows, equal bit
/// for bit to [`super::packed::tile_dot_scalar`] as [`super::avx2::tile_dot_q4k`]
/// is: the same integer sums, each sub-block's products summed in 32 bits by
/// `vpdpbusd` (no 16-bit sums to add up), then multiplied by its scale.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn tile_dot_q4k<const N: usize>(
    tile: &[u8],
    blocks: usize,
    acts: [&ActRow; N],
    per_pair: bool,
) -> [[f32; TILE_ROWS]; N] {
    let low_half = _mm256_set1_epi32(0xFFFF);
    super::avx2::q4k_tiles(
        tile,
        blocks,
        acts,
        per_pair,
        |sums, w, a| _mm256_dpbusd_epi32(sums, w, a),
        |lo, hi, pair| {
            let (sl, sh) = (_mm256_and_si256(pair, low_half), _mm256_srli_epi32(pair, 16));
            _mm256_add_epi32(_mm256_mullo_epi32(lo, sl), _mm256_mullo_epi32(hi, sh))
        },
    )
}
