//! AVX2 + FMA + F16C kernels: packed weight tiles times quantized activations,
//! attention over an f16 cache, and the probes of the host's peaks.
//!
//! The matrix kernels form each block's integer products exactly (unsigned ×
//! signed byte multiplies into 16-bit pair sums, then 32-bit sums) and scale
//! them with the reference's own f32 operations, so they equal the scalar
//! reference bit for bit. A tile holds one row per lane, so where the
//! reference keeps eight lane accumulators per row ([`crate::quant::Lanes`]),
//! the kernels keep eight vectors per activation row, vector `m` holding lane
//! `m` of all eight rows, and add them up in the reference's order at the end
//! ([`lane_total`]).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Sum of the eight lanes: (l0+l4 + l2+l6) + (l1+l5 + l3+l7).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let x = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    let x = _mm_add_ss(x, _mm_movehdup_ps(x));
    _mm_cvtss_f32(x)
}

/// Loads 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load(b: &[u8]) -> __m256i {
    assert!(b.len() >= 32);
    // SAFETY: the assertion above guarantees 32 readable bytes; loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// Loads 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load128(b: &[u8]) -> __m128i {
    assert!(b.len() >= 16);
    // SAFETY: the assertion above guarantees 16 readable bytes; loadu has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// How far ahead of the block in use the weight kernels ask for their next
/// bytes: the hardware prefetcher alone left one core streaming packed weights
/// at 13-14 GB/s; asking 2-3 KiB ahead measured 17-18 GB/s (Q5_0 gate and up
/// of all layers, one core), and 22 GB/s on the Q8_0 LM head (was 17.6).
const PREFETCH_AHEAD: usize = 3072;

/// Asks for the `len` bytes from `PREFETCH_AHEAD` past `p` to be brought into
/// the cache. A hint only: no address is read, none needs to be valid.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn prefetch_ahead(p: *const u8, len: usize) {
    let ahead = p.wrapping_add(PREFETCH_AHEAD);
    for line in (0..len).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast());
    }
}

/// Stores 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store(b: &mut [u8], v: __m256i) {
    assert!(b.len() >= 32);
    // SAFETY: the assertion above guarantees 32 writable bytes; storeu has no alignment requirement.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

/// Wrapping sum of 64-bit words with four independent 256-bit accumulators:
/// a pure streaming read, for measuring read bandwidth. It asks for its bytes
/// [`PREFETCH_AHEAD`] ahead, as the weight kernels do, so that it measures
/// the rate they can reach: without it, 16 passes over 256 MiB on two cores
/// of the development host read a median 35 GB/s against 39 with it, and the
/// LM head's kernel read at the probe's rate.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut blocks = words.chunks_exact(16);
    for b in &mut blocks {
        prefetch_ahead(b.as_ptr().cast(), 128);
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: each block holds 16 words; lanes k*4..k*4+4 are in bounds; loadu needs no alignment.
            let v = unsafe { _mm256_loadu_si256(b[k * 4..].as_ptr().cast()) };
            *a = _mm256_add_epi64(*a, v);
        }
    }
    let all = _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]), _mm256_add_epi64(acc[2], acc[3]));
    let mut lanes = [0u64; 4];
    // SAFETY: `lanes` is 32 writable bytes; storeu needs no alignment.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), all) };
    lanes.iter().chain(blocks.remainder()).fold(0u64, |s, &x| s.wrapping_add(x))
}

/// The eight rows of a packed Q5_0 or Q8_0 tile (see [`super::packed`]) · one
/// activation row, its eight lane accumulators held in registers. Every row is
/// summed as [`super::packed::tile_dot_scalar`] sums it (eight exact integer
/// lane sums per block, each added to its lane accumulator by the same fused
/// multiply-add), so the results are equal bit for bit.
///
/// Q5_0 multiplies its unsigned quants (0..32) and takes the offset of 16 off
/// each lane through the activations' sums of four ([`q5_0_lane`]). Q8_0
/// multiplies |a| by w with a's sign, one product pair per 16 bits.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn tile_dot(
    format: super::packed::PackedFormat,
    tile: &[u8],
    blocks: usize,
    act: &super::packed::ActRow,
) -> [f32; super::packed::TILE_ROWS] {
    use super::packed::PackedFormat;
    let bb = format.block_bytes();
    assert!(tile.len() >= bb * blocks, "tile shorter than its blocks");
    assert!(act.q.len() >= 32 * blocks && act.abs.len() >= 32 * blocks && act.d.len() >= blocks);
    assert!(act.offset4.len() >= 8 * blocks);
    // Every read below is in bounds by the assertions above: block b < blocks of
    // the tile (bb bytes each), and elements 32b..32b + 32 of the activation row.
    let (q, abs): (*const u8, *const u8) = (act.q.as_ptr().cast(), act.abs.as_ptr());
    // SAFETY (both): `p + at` has 32 (vector) or 4 (broadcast) readable bytes, by the assertions above.
    let vec_at = |p: *const u8, at: usize| unsafe { _mm256_loadu_si256(p.add(at).cast()) };
    let bcast = |p: *const u8, at: usize| unsafe { _mm256_set1_epi32(p.add(at).cast::<i32>().read_unaligned()) };
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 8];
    for b in 0..blocks {
        let blk = tile[b * bb..].as_ptr();
        prefetch_ahead(blk, bb);
        // SAFETY: the block's first 16 bytes are its scales (in bounds, see above).
        let sw = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(blk.cast()) });
        let ds = _mm256_mul_ps(sw, _mm256_set1_ps(act.d[b]));
        match format {
            PackedFormat::Q5_0 => {
                let mut bits = q5_0_plane_bits(vec_at(blk, 16));
                let s4 = &act.offset4[8 * b..];
                for p in 0..4 {
                    let (lo, hi) = q5_0_pair(vec_at(blk, 48 + 32 * p), &mut bits);
                    let at = 32 * b + 4 * p;
                    let (l, h) = (q5_0_lane(lo, bcast(q, at), s4[p]), q5_0_lane(hi, bcast(q, at + 16), s4[p + 4]));
                    acc[p] = _mm256_fmadd_ps(ds, _mm256_cvtepi32_ps(l), acc[p]);
                    acc[p + 4] = _mm256_fmadd_ps(ds, _mm256_cvtepi32_ps(h), acc[p + 4]);
                }
            }
            PackedFormat::Q4K | PackedFormat::Q6K => panic!("K-quant tiles go to tile_dot_q4k and tile_dot_q6k"),
            PackedFormat::Q8_0 => {
                // `v` picks the weight vector, the activations' group of four and the lane alike.
                for (v, a) in acc.iter_mut().enumerate() {
                    let (w, at) = (vec_at(blk, 16 + 32 * v), 32 * b + 4 * v);
                    let p = _mm256_maddubs_epi16(bcast(abs, at), _mm256_sign_epi8(w, bcast(q, at)));
                    *a = _mm256_fmadd_ps(ds, _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), *a);
                }
            }
        }
    }
    store_rows([lane_total(acc)])[0]
}

/// The eight lane accumulators of one activation row added up as
/// [`crate::quant::Lanes::sum`] adds a row's lanes: `((a0 + a4) + (a2 + a6)) +
/// ((a1 + a5) + (a3 + a7))`, all eight rows at once.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn lane_total(a: [__m256; 8]) -> __m256 {
    let even = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
    let odd = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
    _mm256_add_ps(even, odd)
}

/// `gate[i] = SiLU(gate[i]) · up[i]` eight lanes at a time (lengths a multiple
/// of eight), each lane equal bit for bit to [`crate::kernels::ops::silu_lane`]:
/// the same operations, vectorized.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn swiglu_lanes(gate: &mut [f32], up: &[f32]) {
    assert!(gate.len().is_multiple_of(8) && up.len() >= gate.len());
    for (g, u) in gate.chunks_exact_mut(8).zip(up.chunks_exact(8)) {
        // SAFETY: both chunks hold 8 floats.
        let (x, y) = unsafe { (_mm256_loadu_ps(g.as_ptr()), _mm256_loadu_ps(u.as_ptr())) };
        let silu = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
        // SAFETY: the chunk holds 8 floats.
        unsafe { _mm256_storeu_ps(g.as_mut_ptr(), _mm256_mul_ps(silu, y)) };
    }
}

/// [`crate::kernels::ops::rope_neox`] eight pairs at a time, equal to it bit
/// for bit: the same fused multiply-adds, each exactly rounded once.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn rope_neox(x: &mut [f32], dim: usize, cos: &[f32], sin: &[f32]) {
    let half = dim / 2;
    assert!(cos.len() >= half && sin.len() >= half);
    let sign = _mm256_set1_ps(-0.0);
    for head in x.chunks_exact_mut(dim) {
        let (lo, hi) = head.split_at_mut(half);
        let mut i = 0;
        while i + 8 <= half {
            // SAFETY: i + 8 <= half, and lo, hi, cos and sin hold at least half floats.
            unsafe {
                let (a, b) = (_mm256_loadu_ps(lo.as_ptr().add(i)), _mm256_loadu_ps(hi.as_ptr().add(i)));
                let (c, s) = (_mm256_loadu_ps(cos.as_ptr().add(i)), _mm256_loadu_ps(sin.as_ptr().add(i)));
                // −(b·sin) by flipping the sign bit: exact, zeros included (0 − y is not).
                let minus_b_sin = _mm256_xor_ps(_mm256_mul_ps(b, s), sign);
                _mm256_storeu_ps(lo.as_mut_ptr().add(i), _mm256_fmadd_ps(a, c, minus_b_sin));
                _mm256_storeu_ps(hi.as_mut_ptr().add(i), _mm256_fmadd_ps(a, s, _mm256_mul_ps(b, c)));
            }
            i += 8;
        }
        for j in i..half {
            let (a, b) = (lo[j], hi[j]);
            lo[j] = a.mul_add(cos[j], -(b * sin[j]));
            hi[j] = a.mul_add(sin[j], b * cos[j]);
        }
    }
}

/// [`crate::kernels::ops::exp_lane`] on eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn exp8(x: __m256) -> __m256 {
    let c = |bits: u32| _mm256_castsi256_ps(_mm256_set1_epi32(bits as i32));
    let shifter = _mm256_set1_ps(12582912.0);
    let z = _mm256_fmadd_ps(x, c(0x3FB8_AA3B), shifter);
    let n = _mm256_sub_ps(z, shifter);
    let b = _mm256_fnmadd_ps(n, c(0x35BF_BE8E), _mm256_fnmadd_ps(n, c(0x3F31_7200), x));
    let e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    let k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0))));
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(c(0x3C07_2010), b, c(0x3D2B_9F17)),
            u,
            _mm256_fmadd_ps(c(0x3E2A_AF33), b, c(0x3EFF_FEDB)),
        ),
        u,
        _mm256_mul_ps(c(0x3F7F_FFF6), b),
    );
    let normal = _mm256_fmadd_ps(j, k, k);
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
    if _mm256_movemask_ps(big) == 0 {
        return normal;
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7F00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    let scaled = _mm256_blendv_ps(normal, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1), big);
    _mm256_blendv_ps(scaled, _mm256_mul_ps(s1, s1), huge)
}

/// A Q5_0 tile-block's plane of fifth bits, as [`q5_0_pair`] reads it: bit
/// `p` of each byte at bit 4 (for vectors 0..4), and bit `4 + p` at bit 4
/// (for vectors 4..8), for `p` = 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_0_plane_bits(plane: __m256i) -> (__m256i, __m256i) {
    (_mm256_slli_epi16(plane, 4), plane)
}

/// Vectors `p` and `4 + p` of a packed Q5_0 tile-block as unsigned quants
/// (0..32), from its nibble vector `p`, taken in order `p` = 0..4: `bits`
/// (from [`q5_0_plane_bits`]) supplies the fifth bits and moves on to `p + 1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_0_pair(nib: __m256i, bits: &mut (__m256i, __m256i)) -> (__m256i, __m256i) {
    let (low, bit4) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x10));
    let lo = _mm256_or_si256(_mm256_and_si256(nib, low), _mm256_and_si256(bits.0, bit4));
    let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(nib, 4), low), _mm256_and_si256(bits.1, bit4));
    *bits = (_mm256_srli_epi16(bits.0, 1), _mm256_srli_epi16(bits.1, 1));
    (lo, hi)
}

/// One lane sum of a Q5_0 block for all eight rows: unsigned quants `u` (four
/// elements of each row) times the four activations `a` broadcast to every
/// row, plus `offset4` (−16 times their sum, [`super::packed::ActRow::offset4`]),
/// so the offset of 16 comes off exactly.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_lane(u: __m256i, a: __m256i, offset4: i32) -> __m256i {
    let s = _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1));
    _mm256_add_epi32(s, _mm256_set1_epi32(offset4))
}

/// Bytes of one Q5_0 tile-block unpacked by [`unpack_q5_0`]: eight vectors of
/// 32 quants (four elements of each of the eight rows).
pub const Q5_0_UNPACKED: usize = 256;

/// The quants of a packed Q5_0 tile as unsigned bytes (0..32), block after
/// block, vector `v` of a block holding elements `4v..4v + 4` of each row: the
/// form [`tile_gemm_q5_0`] reads, so that a tile multiplying many activation
/// rows is unpacked once, not once per four rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn unpack_q5_0(tile: &[u8], blocks: usize, out: &mut [u8]) {
    let bb = super::packed::PackedFormat::Q5_0.block_bytes();
    assert!(tile.len() >= bb * blocks && out.len() >= Q5_0_UNPACKED * blocks);
    for (blk, dst) in tile.chunks_exact(bb).zip(out.chunks_exact_mut(Q5_0_UNPACKED)).take(blocks) {
        let mut bits = q5_0_plane_bits(load(&blk[16..]));
        for p in 0..4 {
            let (lo, hi) = q5_0_pair(load(&blk[48 + 32 * p..]), &mut bits);
            store(&mut dst[32 * p..], lo);
            store(&mut dst[32 * (4 + p)..], hi);
        }
    }
}

/// [`tile_dot`] for a Q5_0 tile already unpacked by [`unpack_q5_0`] into
/// `quants` (`tile` still gives the scales): the same integer sums and f32
/// operations, so equal bit for bit, without unpacking per call.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn tile_gemm_q5_0(
    tile: &[u8],
    quants: &[u8],
    blocks: usize,
    act: &super::packed::ActRow,
) -> [f32; super::packed::TILE_ROWS] {
    let bb = super::packed::PackedFormat::Q5_0.block_bytes();
    assert!(tile.len() >= bb * blocks && quants.len() >= Q5_0_UNPACKED * blocks);
    assert!(act.q.len() >= 32 * blocks && act.d.len() >= blocks && act.offset4.len() >= 8 * blocks);
    let q: *const u8 = act.q.as_ptr().cast();
    let mut acc = [_mm256_setzero_ps(); 8];
    for b in 0..blocks {
        let sw = _mm256_cvtph_ps(load128(&tile[b * bb..]));
        let ds = _mm256_mul_ps(sw, _mm256_set1_ps(act.d[b]));
        let w = &quants[Q5_0_UNPACKED * b..][..Q5_0_UNPACKED];
        for (v, a) in acc.iter_mut().enumerate() {
            // SAFETY: elements 32b + 4v..32b + 4v + 4 of the row are in bounds (asserted above).
            let x = unsafe { bcast4(q, 32 * b + 4 * v) };
            let l = q5_0_lane(load(&w[32 * v..]), x, act.offset4[8 * b + v]);
            *a = _mm256_fmadd_ps(ds, _mm256_cvtepi32_ps(l), *a);
        }
    }
    store_rows([lane_total(acc)])[0]
}

/// The eight rows of a packed Q5_0 or Q8_0 tile · `N` activation rows in
/// whole blocks ([`crate::quant::Order::Batch`]): per block, the eight weight
/// vectors are decoded once for all `N` rows, vector `v` holding elements
/// `4v..4v + 4` of each of the eight rows (Q5_0's as unsigned quants 0..32,
/// Q8_0's as stored, then each passed through `adjust`), `block_sum(w, row, b)` each
/// row's exact integer sum of the block's 32 products (one 32-bit lane per
/// weight row), and one fused multiply-add per block adds it as the scalar
/// reference does, `acc = fma(isum, d_w · d_a, acc)`: equal bit for bit.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q0_tiles_whole<const N: usize>(
    format: super::packed::PackedFormat,
    tile: &[u8],
    blocks: usize,
    acts: [&super::packed::ActRow; N],
    adjust: impl Fn(__m256i) -> __m256i,
    block_sum: impl Fn(&[__m256i; 8], &super::packed::ActRow, usize) -> __m256i,
) -> [[f32; super::packed::TILE_ROWS]; N] {
    let bb = format.block_bytes();
    assert!(tile.len() >= bb * blocks, "tile shorter than its blocks");
    for a in acts {
        assert!(
            a.q.len() >= 32 * blocks && a.abs.len() >= 32 * blocks && a.d.len() >= blocks && a.sum32.len() >= blocks
        );
    }
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        let blk = &tile[b * bb..][..bb];
        prefetch_ahead(blk.as_ptr(), bb);
        let mut w = [_mm256_setzero_si256(); 8];
        if format == super::packed::PackedFormat::Q5_0 {
            let mut bits = q5_0_plane_bits(load(&blk[16..]));
            for p in 0..4 {
                (w[p], w[p + 4]) = q5_0_pair(load(&blk[48 + 32 * p..]), &mut bits);
            }
        } else {
            for (v, x) in w.iter_mut().enumerate() {
                *x = adjust(load(&blk[16 + 32 * v..]));
            }
        }
        let sw = _mm256_cvtph_ps(load128(blk));
        for (a, row) in acc.iter_mut().zip(acts) {
            let ds = _mm256_mul_ps(sw, _mm256_set1_ps(row.d[b]));
            *a = _mm256_fmadd_ps(ds, _mm256_cvtepi32_ps(block_sum(&w, row, b)), *a);
        }
    }
    store_rows(acc)
}

/// [`q0_tiles_whole`] on AVX2: Q5_0's four unsigned × signed pair sums of
/// 16 bits added before widening (each under 2·31·127, so four fit), the
/// offset of 16 taken off once per block; Q8_0's |a| times w with a's sign.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn tile_dot_whole<const N: usize>(
    format: super::packed::PackedFormat,
    tile: &[u8],
    blocks: usize,
    acts: [&super::packed::ActRow; N],
) -> [[f32; super::packed::TILE_ROWS]; N] {
    let ones = _mm256_set1_epi16(1);
    let q5 = format == super::packed::PackedFormat::Q5_0;
    q0_tiles_whole(
        format,
        tile,
        blocks,
        acts,
        |v| v,
        |w, row, b| {
            let (q, abs): (*const u8, *const u8) = (row.q.as_ptr().cast(), row.abs.as_ptr());
            // SAFETY (every read): elements 32b..32b + 32 of the row are in bounds (asserted by q0_tiles_whole).
            let a = |v: usize| unsafe { bcast4(q, 32 * b + 4 * v) };
            if q5 {
                let half = |h: usize| {
                    let p = |v: usize| _mm256_maddubs_epi16(w[v], a(v));
                    _mm256_madd_epi16(
                        _mm256_add_epi16(_mm256_add_epi16(p(h), p(h + 1)), _mm256_add_epi16(p(h + 2), p(h + 3))),
                        ones,
                    )
                };
                return _mm256_add_epi32(_mm256_add_epi32(half(0), half(4)), _mm256_set1_epi32(-16 * row.sum32[b]));
            }
            (0..8).fold(_mm256_setzero_si256(), |s, v| {
                // SAFETY: as above.
                let sa = unsafe { bcast4(abs, 32 * b + 4 * v) };
                _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(sa, _mm256_sign_epi8(w[v], a(v))), ones))
            })
        },
    )
}

/// Bits `2m..2m + 2` of every byte moved to bits 4..6, the rest cleared.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn two_bits_at_4(x: __m256i, m: usize) -> __m256i {
    let moved = match m {
        0 => _mm256_slli_epi16(x, 4),
        1 => _mm256_slli_epi16(x, 2),
        2 => x,
        _ => _mm256_srli_epi16(x, 2),
    };
    _mm256_and_si256(moved, _mm256_set1_epi8(0x30))
}

/// Checks a K-quant tile and `N` Q8_K activation rows for `blocks` blocks.
fn check_k_tile<const N: usize>(tile: &[u8], bb: usize, blocks: usize, acts: &[&super::packed::ActRow; N]) {
    assert!(tile.len() >= bb * blocks, "tile shorter than its blocks");
    for a in acts {
        assert!(a.q.len() >= 256 * blocks && a.d.len() >= blocks && a.sum32.len() >= 8 * blocks);
        assert!(a.sum16.len() >= 16 * blocks);
    }
}

/// Within each 32-bit lane of a vector of 16-bit pairs, the first (`second`
/// false) or the second value twice: a `_mm256_shuffle_epi8` control.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dup_pair(second: bool) -> __m256i {
    let first = _mm_set_epi64x(0x0D0C_0D0C_0908_0908, 0x0504_0504_0100_0100);
    let v = _mm256_set_m128i(first, first);
    if second {
        _mm256_add_epi8(v, _mm256_set1_epi8(2))
    } else {
        v
    }
}

/// Four bytes of a row of quants from element `at`, in every 32-bit lane.
///
/// # Safety
/// `p + at` must have 4 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bcast4(p: *const u8, at: usize) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes at `p + at`.
    unsafe { _mm256_set1_epi32(p.add(at).cast::<i32>().read_unaligned()) }
}

/// The eight rows of a packed Q4_K tile · `N` Q8_K activation rows, equal bit
/// for bit to [`super::packed::tile_dot_scalar`]: exact integer sums, then the
/// reference's f32 operations (two fused multiply-add chains, once per block
/// or, `per_pair` ([`crate::quant::Order::Batch`]), once per pair of
/// sub-blocks). The
/// unsigned × signed products of a 32-element sub-block are summed in 16 bits
/// (at most 8 · 2 · 15 · 128 < 2¹⁵), then multiplied by its scale widened to
/// 16 bits.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn tile_dot_q4k<const N: usize>(
    tile: &[u8],
    blocks: usize,
    acts: [&super::packed::ActRow; N],
    per_pair: bool,
) -> [[f32; super::packed::TILE_ROWS]; N] {
    let (dup_lo, dup_hi) = (dup_pair(false), dup_pair(true));
    q4k_tiles(
        tile,
        blocks,
        acts,
        per_pair,
        |sums, w, a| _mm256_add_epi16(sums, _mm256_maddubs_epi16(w, a)),
        |lo, hi, pair| {
            let (sl, sh) = (_mm256_shuffle_epi8(pair, dup_lo), _mm256_shuffle_epi8(pair, dup_hi));
            _mm256_add_epi32(_mm256_madd_epi16(lo, sl), _mm256_madd_epi16(hi, sh))
        },
    )
}

/// The Q4_K tile product of [`tile_dot_q4k`], its integer steps given:
/// `products(sums, w, a)` adds the products of unsigned quants `w` and
/// activations `a` (four per 32-bit lane, a row per lane) to the sub-block's
/// running `sums`; `scaled(lo, hi, pair)` turns the sums of sub-blocks 2c
/// (`lo`) and 2c + 1 (`hi`) into one 32-bit total per row, each times its
/// scale (`pair`: row `r`'s two scales in 16-bit halves of lane `r`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4k_tiles<const N: usize>(
    tile: &[u8],
    blocks: usize,
    acts: [&super::packed::ActRow; N],
    per_pair: bool,
    products: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
    scaled: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) -> [[f32; super::packed::TILE_ROWS]; N] {
    use super::packed::q4k_chunk;
    let bb = super::packed::PackedFormat::Q4K.block_bytes();
    check_k_tile(tile, bb, blocks, &acts);
    let q: [*const u8; N] = std::array::from_fn(|t| acts[t].q.as_ptr().cast());
    let low = _mm256_set1_epi8(0x0F);
    let (mut acc, mut acc_min) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
    for b in 0..blocks {
        let blk = &tile[b * bb..][..bb];
        prefetch_ahead(blk.as_ptr(), bb);
        let (d, dmin) = (_mm256_cvtph_ps(load128(blk)), _mm256_cvtph_ps(load128(&blk[16..])));
        let (mut isum, mut msum) = ([_mm256_setzero_si256(); N], [_mm256_setzero_si256(); N]);
        for c in 0..4 {
            // Sub-block 2c in the low nibbles, 2c + 1 in the high nibbles.
            let (mut lo_sums, mut hi_sums) = ([_mm256_setzero_si256(); N], [_mm256_setzero_si256(); N]);
            for v in 0..8 {
                let n = load(&blk[q4k_chunk(c) + 32 + 32 * v..]);
                let (lo, hi) = (_mm256_and_si256(n, low), _mm256_and_si256(_mm256_srli_epi16(n, 4), low));
                let at = 256 * b + 64 * c + 4 * v;
                for t in 0..N {
                    // SAFETY: elements at..at + 36 of the row are in bounds (checked by check_k_tile).
                    let (al, ah) = unsafe { (bcast4(q[t], at), bcast4(q[t], at + 32)) };
                    lo_sums[t] = products(lo_sums[t], lo, al);
                    hi_sums[t] = products(hi_sums[t], hi, ah);
                }
            }
            let pair = _mm256_cvtepu8_epi16(load128(&blk[q4k_chunk(c)..]));
            let mins = _mm256_cvtepu8_epi16(load128(&blk[q4k_chunk(c) + 16..]));
            for t in 0..N {
                isum[t] = _mm256_add_epi32(isum[t], scaled(lo_sums[t], hi_sums[t], pair));
                // The mins of sub-blocks 2c, 2c + 1 times their activation sums, as 16-bit pairs.
                let (s0, s1) = (acts[t].sum32[8 * b + 2 * c], acts[t].sum32[8 * b + 2 * c + 1]);
                let sums = _mm256_set1_epi32((s0 & 0xFFFF) | (s1 << 16));
                msum[t] = _mm256_add_epi32(msum[t], _mm256_madd_epi16(mins, sums));
            }
            if per_pair || c == 3 {
                for t in 0..N {
                    let da = _mm256_set1_ps(acts[t].d[b]);
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(d, da), acc[t]);
                    acc_min[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(msum[t]), _mm256_mul_ps(dmin, da), acc_min[t]);
                    (isum[t], msum[t]) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                }
            }
        }
    }
    store_rows(std::array::from_fn(|t| _mm256_sub_ps(acc[t], acc_min[t])))
}

/// The eight rows of a packed Q6_K tile · `N` Q8_K activation rows, equal bit
/// for bit to [`super::packed::tile_dot_scalar`]: per block, the eight lane
/// sums of [`crate::quant::kquants::q6k_lanes`] (vector `m` holding lane `m`
/// of every row: group `m` and group `m + 8` of each 64-element chunk, each
/// times its sub-block scale widened to 16 bits; unsigned quants, 0..64, two
/// products summed in 16 bits, 2 · 63 · 128 < 2¹⁵), the offset of 32 of
/// sub-blocks `2m` and `2m + 1` taken off lane `m`; then one fused
/// multiply-add per lane or, `tiled` ([`crate::quant::Order::Batch`]), the
/// lanes' total as `acc = fma(d · isum, d_a, acc)`.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn tile_dot_q6k<const N: usize>(
    tile: &[u8],
    blocks: usize,
    acts: [&super::packed::ActRow; N],
    tiled: bool,
) -> [[f32; super::packed::TILE_ROWS]; N] {
    q6k_tiles(tile, blocks, acts, tiled, |acc, pairs, scales| _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, scales)))
}

/// [`tile_dot_q6k`] with `scaled(acc, pairs, scales)` adding to each 32-bit
/// lane of `acc` its two 16-bit pair sums times their 16-bit scales (AVX2:
/// `madd` and an add; AVX-512 VNNI: one `vpdpwssd`). Exact in 32 bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q6k_tiles<const N: usize>(
    tile: &[u8],
    blocks: usize,
    acts: [&super::packed::ActRow; N],
    tiled: bool,
    scaled: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) -> [[f32; super::packed::TILE_ROWS]; N] {
    use super::packed::q6k_chunk;
    let bb = super::packed::PackedFormat::Q6K.block_bytes();
    check_k_tile(tile, bb, blocks, &acts);
    let q: [*const u8; N] = std::array::from_fn(|t| acts[t].q.as_ptr().cast());
    let s16: [*const u8; N] = std::array::from_fn(|t| acts[t].sum16.as_ptr().cast());
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [[_mm256_setzero_ps(); 8]; N];
    for b in 0..blocks {
        let blk = &tile[b * bb..][..bb];
        prefetch_ahead(blk.as_ptr(), bb);
        let mut lane = [[_mm256_setzero_si256(); 8]; N];
        for c in 0..4 {
            // Sub-blocks 4c, 4c + 1 in the low nibbles, 4c + 2, 4c + 3 in the high ones.
            let chunk = &blk[q6k_chunk(c)..];
            let pair_lo = _mm256_cvtepi8_epi16(load128(chunk));
            let pair_hi = _mm256_cvtepi8_epi16(load128(&chunk[16..]));
            let high: [__m256i; 4] = std::array::from_fn(|k| load(&chunk[32 + 32 * k..]));
            for v in 0..8 {
                let n = load(&chunk[160 + 32 * v..]);
                let lo = _mm256_or_si256(_mm256_and_si256(n, low), two_bits_at_4(high[v % 4], v / 4));
                let hi = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(n, 4), low),
                    two_bits_at_4(high[v % 4], 2 + v / 4),
                );
                let dup = dup_pair(v >= 4);
                let (sl, sh) = (_mm256_shuffle_epi8(pair_lo, dup), _mm256_shuffle_epi8(pair_hi, dup));
                let at = 256 * b + 64 * c + 4 * v;
                for t in 0..N {
                    // SAFETY: elements at..at + 36 of the row are in bounds (checked by check_k_tile).
                    let (al, ah) = unsafe { (bcast4(q[t], at), bcast4(q[t], at + 32)) };
                    let l = scaled(lane[t][v], _mm256_maddubs_epi16(lo, al), sl);
                    lane[t][v] = scaled(l, _mm256_maddubs_epi16(hi, ah), sh);
                }
            }
            for t in 0..N {
                // SAFETY: sums 16b + 4c .. 16b + 4c + 4 are in bounds (checked by check_k_tile).
                let (sa, sb) =
                    unsafe { (bcast4(s16[t], 2 * (16 * b + 4 * c)), bcast4(s16[t], 2 * (16 * b + 4 * c + 2))) };
                let (m0, m1) = (2 * c, 2 * c + 1);
                lane[t][m0] = _mm256_sub_epi32(lane[t][m0], _mm256_slli_epi32(_mm256_madd_epi16(pair_lo, sa), 5));
                lane[t][m1] = _mm256_sub_epi32(lane[t][m1], _mm256_slli_epi32(_mm256_madd_epi16(pair_hi, sb), 5));
            }
        }
        let d = _mm256_cvtph_ps(load128(blk));
        for t in 0..N {
            let da = _mm256_set1_ps(acts[t].d[b]);
            if tiled {
                let l = lane[t];
                let sum = |a: usize, b: usize| _mm256_add_epi32(l[a], l[b]);
                let isum =
                    _mm256_add_epi32(_mm256_add_epi32(sum(0, 1), sum(2, 3)), _mm256_add_epi32(sum(4, 5), sum(6, 7)));
                acc[t][0] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(isum)), da, acc[t][0]);
                continue;
            }
            let dd = _mm256_mul_ps(da, d);
            for m in 0..8 {
                acc[t][m] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lane[t][m]), acc[t][m]);
            }
        }
    }
    store_rows(acc.map(|a| if tiled { a[0] } else { lane_total(a) }))
}

/// The accumulators of `N` activation rows as eight rows' results each.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn store_rows<const N: usize>(acc: [__m256; N]) -> [[f32; super::packed::TILE_ROWS]; N] {
    let mut out = [[0.0f32; super::packed::TILE_ROWS]; N];
    for t in 0..N {
        // SAFETY: `out[t]` is 8 writable f32; storeu needs no alignment.
        unsafe { _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]) };
    }
    out
}

/// Positions per chunk of the f16 attention kernels.
pub(super) const ATTEND_CHUNK: usize = 64;
// The softmax pass marks a chunk's positions in one u64.
const _: () = assert!(ATTEND_CHUNK <= 64);

/// Most query heads per KV head the f16 attention kernels take.
pub(super) const ATTEND_MAX_GROUP: usize = 16;

/// Checks an f16 attention kernel's arguments: `q` and `out` hold the same
/// whole number of heads of `hd` values, at most [`ATTEND_MAX_GROUP`], and
/// rows `0..ctx` of the keys and values (row `p` at `p * stride + offset`)
/// are in bounds. Returns the number of heads.
pub(super) fn check_attend(
    q: &[f32],
    out: &[f32],
    hd: usize,
    (keys, values): (&[half::f16], &[half::f16]),
    (stride, offset): (usize, usize),
    ctx: usize,
) -> usize {
    let heads = q.len() / hd;
    assert!(q.len().is_multiple_of(hd) && heads <= ATTEND_MAX_GROUP && out.len() == q.len());
    // The reference sums runs of 32 elements and the rest apart: only whole runs here.
    assert!(hd.is_multiple_of(32), "heads of {hd} values: not a whole number of 32-element runs");
    assert!(ctx == 0 || ((ctx - 1) * stride + offset + hd <= keys.len().min(values.len())));
    heads
}

/// The online softmax of the f16 attention kernels, per head, one chunk of
/// positions at a time: the kernel writes a chunk's scores, [`Self::factors`]
/// turns them into the factors the weighted sum of values takes, and the
/// running maximum and sum carry over to the next chunk.
pub(super) struct OnlineSoftmax {
    /// Each head's running maximum score.
    max: [f32; ATTEND_MAX_GROUP],
    /// Each head's running sum of weights.
    pub(super) sum: [f32; ATTEND_MAX_GROUP],
    /// The chunk's scores, per head and position (then, in [`Self::factors`], the exponentials' arguments).
    pub(super) score: [[f32; ATTEND_CHUNK]; ATTEND_MAX_GROUP],
    /// Per head and position: the factor that scales the sum so far.
    pub(super) ms: [[f32; ATTEND_CHUNK]; ATTEND_MAX_GROUP],
    /// Per head and position: the position's weight.
    pub(super) vs: [[f32; ATTEND_CHUNK]; ATTEND_MAX_GROUP],
}

impl OnlineSoftmax {
    /// Before the first position: no maximum, an empty sum.
    pub(super) fn new() -> OnlineSoftmax {
        OnlineSoftmax {
            max: [f32::NEG_INFINITY; ATTEND_MAX_GROUP],
            sum: [0.0; ATTEND_MAX_GROUP],
            score: [[0.0; ATTEND_CHUNK]; ATTEND_MAX_GROUP],
            ms: [[1.0; ATTEND_CHUNK]; ATTEND_MAX_GROUP],
            vs: [[1.0; ATTEND_CHUNK]; ATTEND_MAX_GROUP],
        }
    }

    /// The softmax pass over the first `n` scores of `heads` heads, per head in
    /// position order, as the reference computes it: where a score raises the
    /// running maximum, the factor `ms` that scales the sum so far (`exp(old −
    /// new)`), else the position's weight `vs` (`exp(s − max)`), the other
    /// factor 1; the running sum updated as `fma(sum, ms, vs)`.
    ///
    /// In three loops, so that no value is carried across a call of `expf`
    /// (which would keep it in memory): the maxima and each exponential's
    /// argument (in place of the scores), then the exponentials, then the
    /// sums, position by position across the heads so that their chains of
    /// multiply-adds overlap.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn factors(&mut self, heads: usize, n: usize) {
        for h in 0..heads {
            // Bit j: position j raised the maximum.
            let (mut max, mut raised, arg) = (self.max[h], 0u64, &mut self.score[h]);
            for (j, a) in arg.iter_mut().enumerate().take(n) {
                let s = *a;
                if s > max {
                    (*a, max) = (max - s, s);
                    raised |= 1 << j;
                } else {
                    *a = s - max;
                }
            }
            self.max[h] = max;
            for (j, a) in arg.iter().enumerate().take(n) {
                let e = a.exp();
                let pair = if raised >> j & 1 == 1 { (e, 1.0) } else { (1.0, e) };
                (self.ms[h][j], self.vs[h][j]) = pair;
            }
        }
        let mut sum = self.sum;
        for j in 0..n {
            for (h, sum) in sum.iter_mut().enumerate().take(heads) {
                *sum = sum.mul_add(self.ms[h][j], self.vs[h][j]);
            }
        }
        self.sum = sum;
    }
}

/// [`crate::model::attention::attend_group`] over an f16 cache for heads of
/// `8 · L` values (`L` a multiple of 4), the same arithmetic in the same
/// order, eight lanes at a time (the same fused multiply-adds, roundings to f16
/// by F16C, which rounds to nearest even as the reference does), so the results
/// are equal bit for bit.
/// Row `p` of the keys and values starts at `p * stride + offset`.
///
/// The positions go in chunks, each in three passes: every head's scores, then
/// (in position order, per head) the running maximum and the softmax factors,
/// then the weighted values. The reference interleaves the three per position;
/// apart, each pass is a run of independent work the core can overlap.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub fn attend_group_f16<const L: usize>(
    q: &[f32],
    keys: &[half::f16],
    values: &[half::f16],
    (stride, offset): (usize, usize),
    ctx: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = 8 * L;
    let heads = check_attend(q, out, hd, (keys, values), (stride, offset), ctx);
    let round = |x: __m256| _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
    // SAFETY (all three): every index is below q.len() = out.len() (asserted above), 8 f32 from there are readable/writable.
    let ld = |x: &[f32], at: usize| unsafe { _mm256_loadu_ps(x[at..at + 8].as_ptr()) };
    let st = |x: &mut [f32], at: usize, v: __m256| unsafe { _mm256_storeu_ps(x[at..at + 8].as_mut_ptr(), v) };
    // SAFETY: p < ctx, so 8 f16 from `p * stride + offset + 8i` are in bounds (asserted above).
    let ld16 = |x: &[half::f16], at: usize| unsafe { _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(at).cast())) };
    let mut qr = [0.0f32; ATTEND_MAX_GROUP * 256];
    let qr = &mut qr[..q.len()];
    for i in (0..q.len()).step_by(8) {
        st(qr, i, round(ld(q, i)));
    }
    out.fill(0.0);
    let mut soft = OnlineSoftmax::new();
    for c0 in (0..ctx).step_by(ATTEND_CHUNK) {
        let n = ATTEND_CHUNK.min(ctx - c0);
        for j in 0..n {
            let at = (c0 + j) * stride + offset;
            let k: [__m256; L] = std::array::from_fn(|i| ld16(keys, at + 8 * i));
            for (h, sc) in soft.score.iter_mut().enumerate().take(heads) {
                // Four accumulators, vector i into accumulator i mod 4 (L is a multiple of 4).
                let mut acc = [_mm256_setzero_ps(); 4];
                for (i, ki) in k.iter().enumerate() {
                    acc[i % 4] = _mm256_fmadd_ps(*ki, ld(qr, h * hd + 8 * i), acc[i % 4]);
                }
                let a = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
                let t = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                let t = _mm_hadd_ps(t, t);
                sc[j] = _mm_cvtss_f32(_mm_hadd_ps(t, t)) * scale;
            }
        }
        soft.factors(heads, n);
        for j in 0..n {
            let at = (c0 + j) * stride + offset;
            let v: [__m256; L] = std::array::from_fn(|i| ld16(values, at + 8 * i));
            for h in 0..heads {
                let (m, w) = (soft.ms[h][j], soft.vs[h][j]);
                if m != 1.0 {
                    for i in 0..L {
                        let at = h * hd + 8 * i;
                        st(out, at, round(_mm256_mul_ps(ld(out, at), _mm256_set1_ps(m))));
                    }
                }
                for (i, vi) in v.iter().enumerate() {
                    let at = h * hd + 8 * i;
                    st(out, at, round(_mm256_fmadd_ps(*vi, _mm256_set1_ps(w), ld(out, at))));
                }
            }
        }
    }
    for (h, s) in soft.sum.iter().enumerate().take(heads) {
        let inv = _mm256_set1_ps(1.0 / s);
        for i in 0..L {
            let at = h * hd + 8 * i;
            st(out, at, _mm256_mul_ps(ld(out, at), inv));
        }
    }
}

/// [`crate::quant::quantize_with`] in the forward pass's rounding, compiled
/// for AVX2: the same element-wise operations on wider vectors, so the same
/// bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn quantize(ty: crate::gguf::TensorType, x: &[f32], out: &mut [u8]) -> Result<(), crate::quant::QuantError> {
    crate::quant::quantize_with(ty, x, out, crate::quant::Q8_0Rounding::CpuRuntime)
}

/// Σ a[i]·b[i] over unsigned × signed bytes (each `a[i]` ≤ 127, so no pair sum
/// saturates) by `maddubs` and `madd`: the multiply-add throughput the
/// quantized kernels are built on, for measuring the int8 compute peak. The
/// length must be a multiple of 128.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_u8_i8(a: &[u8], b: &[i8]) -> i32 {
    let ones = _mm256_set1_epi16(1);
    sum_byte_products(a, b, |s, u, v| _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(u, v), ones)))
}

/// Σ a[i]·b[i] of unsigned × signed bytes, 256 bytes a step into eight
/// independent accumulators (the rest, 128 bytes, into four), `step(acc, u,
/// v)` adding the products of 32 byte pairs to `acc`'s eight lanes. Lengths
/// must be equal and a multiple of 128.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn sum_byte_products(a: &[u8], b: &[i8], step: impl Fn(__m256i, __m256i, __m256i) -> __m256i) -> i32 {
    assert!(a.len() == b.len() && a.len().is_multiple_of(128), "dot_u8_i8 needs equal lengths, a multiple of 128");
    // SAFETY (both): 32 bytes from the start of the slice, bounds-checked; loadu needs no alignment.
    let lda = |x: &[u8]| unsafe { _mm256_loadu_si256(x[..32].as_ptr().cast()) };
    let ldb = |x: &[i8]| unsafe { _mm256_loadu_si256(x[..32].as_ptr().cast()) };
    let mut acc = [_mm256_setzero_si256(); 8];
    let (steps_a, steps_b) = (a.chunks_exact(256), b.chunks_exact(256));
    let (rest_a, rest_b) = (steps_a.remainder(), steps_b.remainder());
    for (x, y) in steps_a.zip(steps_b) {
        for (k, s) in acc.iter_mut().enumerate() {
            *s = step(*s, lda(&x[32 * k..]), ldb(&y[32 * k..]));
        }
    }
    for (k, (x, y)) in rest_a.chunks_exact(32).zip(rest_b.chunks_exact(32)).enumerate() {
        acc[k] = step(acc[k], lda(x), ldb(y));
    }
    let all = acc.iter().fold(_mm256_setzero_si256(), |s, &x| _mm256_add_epi32(s, x));
    let mut lanes = [0i32; 8];
    // SAFETY: `lanes` is 32 writable bytes; storeu needs no alignment.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), all) };
    lanes.iter().fold(0i32, |s, &x| s.wrapping_add(x))
}

/// Σ a[i]·b[i] in f32, 64 values per step into eight independent FMA
/// accumulators: for measuring the f32 compute peak. The length must be a
/// multiple of 64.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert!(a.len() == b.len() && a.len().is_multiple_of(64), "dot_f32 needs equal lengths, a multiple of 64");
    let mut acc = [_mm256_setzero_ps(); 8];
    for (x, y) in a.chunks_exact(64).zip(b.chunks_exact(64)) {
        for (k, s) in acc.iter_mut().enumerate() {
            // SAFETY: each chunk holds 64 floats, so floats 8k..8k+8 are in bounds; loadu needs no alignment.
            let (u, v) = unsafe { (_mm256_loadu_ps(x[8 * k..].as_ptr()), _mm256_loadu_ps(y[8 * k..].as_ptr())) };
            *s = _mm256_fmadd_ps(u, v, *s);
        }
    }
    let quad = |i: usize| _mm256_add_ps(_mm256_add_ps(acc[i], acc[i + 1]), _mm256_add_ps(acc[i + 2], acc[i + 3]));
    hsum(_mm256_add_ps(quad(0), quad(4)))
}

/// Whether any 8-byte word of `bytes` (a multiple of 8 bytes) is not `word`:
/// 256 bytes a step, eight 32-byte loads each compared with the word and
/// gathered into one vector, stopping at the first step that differs.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn differs_from_word(bytes: &[u8], word: u64) -> bool {
    let w = _mm256_set1_epi64x(word as i64);
    let mut steps = bytes.chunks_exact(256);
    for step in &mut steps {
        let mut acc = _mm256_setzero_si256();
        for k in 0..8 {
            acc = _mm256_or_si256(acc, _mm256_xor_si256(load(&step[32 * k..]), w));
        }
        if _mm256_testz_si256(acc, acc) == 0 {
            return true;
        }
    }
    steps.remainder().chunks_exact(8).any(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")) != word)
}
