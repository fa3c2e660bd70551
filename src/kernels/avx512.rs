//! AVX-512 VNNI kernels (with AVX-512 F/BW/VL and the AVX2 set beneath them).
//!
//! `vpdpbusd` forms four unsigned × signed byte products and adds them to a
//! 32-bit lane in one instruction, exactly (no 16-bit intermediate that could
//! saturate): where the AVX2 kernels need `maddubs`, `madd` and an add, these
//! need one. The decode kernels keep the AVX2 kernels' 256-bit lanes and
//! order ([`super::avx2`]; those shared with AVX-VNNI come from
//! [`super::vnni`]), so the results equal the scalar reference bit for bit.
//! The prefill gemms unpack a tile once for many activation rows and work in
//! 512 bits: on the 2-core development host (AMD EPYC, full-width AVX-512) a
//! 512-bit `vpdpbusd` issues as often as a 256-bit one. Attention and the
//! activations' quantization go sixteen lanes at a time.

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

/// A Q5_0 or Q8_0 tile-block's quants as signed bytes (Q5_0's less 16),
/// vector `v` holding elements `4v..4v + 4` of each row (row `r` at bytes
/// `4r..4r + 4`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q0_signed(format: PackedFormat, blk: &[u8]) -> [__m256i; 8] {
    let mut w = [_mm256_setzero_si256(); 8];
    if format == PackedFormat::Q5_0 {
        let mut bits = super::avx2::q5_0_plane_bits(load(&blk[16..]));
        for p in 0..4 {
            (w[p], w[p + 4]) = super::avx2::q5_0_pair(load(&blk[48 + 32 * p..]), &mut bits);
        }
        return w.map(|x| _mm256_sub_epi8(x, _mm256_set1_epi8(16)));
    }
    for (v, x) in w.iter_mut().enumerate() {
        *x = load(&blk[16 + 32 * v..]);
    }
    w
}

/// Bytes of one block of two Q5_0 or Q8_0 tiles as [`unpack_q0_pair`] leaves
/// it: eight 64-byte vectors of signed quants (Q5_0's less 16), vector `v`
/// holding elements `4v..4v + 4` of the first tile's eight rows, then of the
/// second's (row `r` of the pair at bytes `4r..4r + 4`); then sixteen 32-bit
/// lanes, −128 times row `r`'s sum of quants in lane `r`; then the sixteen
/// rows' scales as f32.
pub const Q0_PAIR_UNPACKED: usize = 10 * 64;

/// Two consecutive packed Q5_0 or Q8_0 tiles (sixteen rows) in the layout
/// [`tile_pair_gemm`] reads ([`Q0_PAIR_UNPACKED`] bytes a block). Without a
/// second tile, its eight rows are zero weights of scale 0 (their results, 0,
/// are not read).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn unpack_q0_pair(format: PackedFormat, (first, second): (&[u8], Option<&[u8]>), blocks: usize, out: &mut [u8]) {
    let bb = format.block_bytes();
    assert!(first.len() >= bb * blocks && out.len() >= Q0_PAIR_UNPACKED * blocks);
    assert!(second.is_none_or(|t| t.len() >= bb * blocks));
    let ones = _mm512_set1_epi8(1);
    for (b, dst) in out.chunks_exact_mut(Q0_PAIR_UNPACKED).take(blocks).enumerate() {
        let ba = &first[b * bb..][..bb];
        let bb = second.map(|t| &t[b * bb..][..bb]);
        let (wa, wb) = (q0_signed(format, ba), bb.map_or([_mm256_setzero_si256(); 8], |blk| q0_signed(format, blk)));
        let w: [__m512i; 8] = std::array::from_fn(|v| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(wa[v]), wb[v]));
        // Each row's sum of quants in its lane (four bytes of a lane times 1 each).
        let sums = w.iter().fold(_mm512_setzero_si512(), |s, &x| _mm512_dpbusd_epi32(s, ones, x));
        let init = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32::<7>(sums));
        let second_scales = bb.map_or(_mm_setzero_si128(), |blk| load128(blk));
        let halves = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(load128(ba)), second_scales);
        let dst = &mut dst[..Q0_PAIR_UNPACKED];
        // SAFETY: `dst` holds the block's 640 bytes; storeu needs no alignment.
        unsafe {
            for (v, x) in w.iter().enumerate() {
                _mm512_storeu_si512(dst.as_mut_ptr().add(64 * v).cast(), *x);
            }
            _mm512_storeu_si512(dst.as_mut_ptr().add(512).cast(), init);
            _mm512_storeu_ps(dst.as_mut_ptr().add(576).cast(), _mm512_cvtph_ps(halves));
        }
    }
}

/// The sixteen rows of two Q5_0 or Q8_0 tiles · `N` activation rows in whole
/// blocks ([`crate::quant::Order::Batch`]), the tiles unpacked by
/// [`unpack_q0_pair`] into `quants`: row `r` of the pair in lane `r`, each
/// block's products by eight 512-bit `vpdpbusd`s per activation row (its four
/// activations plus 128, [`ActRow::biased`], broadcast, times the signed
/// weights) in two chains, the first from −128 times the weights' sum so the
/// bias comes off exactly; then one fused multiply-add per block,
/// `acc = fma(isum, d_w · d_a, acc)`, as the scalar reference: equal bit for
/// bit. Out: row `t`, the first tile's eight rows then the second's.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn tile_pair_gemm<const N: usize>(quants: &[u8], blocks: usize, acts: [&ActRow; N]) -> [[f32; 16]; N] {
    assert!(quants.len() >= Q0_PAIR_UNPACKED * blocks);
    for a in acts {
        assert!(a.biased.len() >= 32 * blocks && a.d.len() >= blocks);
    }
    let q: [*const i32; N] = std::array::from_fn(|t| acts[t].biased.as_ptr().cast());
    let d: [*const f32; N] = std::array::from_fn(|t| acts[t].d.as_ptr());
    let quants = quants.as_ptr();
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..blocks {
        // SAFETY (every read in this block): block b < blocks of the unpacked quants, and elements
        // 32b..32b + 32 and scale b of each row, are in bounds (asserted above); the loads need no
        // alignment.
        unsafe {
            let w = quants.add(Q0_PAIR_UNPACKED * b);
            let wv: [__m512i; 8] = std::array::from_fn(|v| _mm512_loadu_si512(w.add(64 * v).cast()));
            let (init, sw) = (_mm512_loadu_si512(w.add(512).cast()), _mm512_loadu_ps(w.add(576).cast()));
            for t in 0..N {
                let a = |v: usize| _mm512_set1_epi32(q[t].add(8 * b + v).read_unaligned());
                let mut s = [init, _mm512_setzero_si512()];
                for (v, &wv) in wv.iter().enumerate() {
                    s[v % 2] = _mm512_dpbusd_epi32(s[v % 2], a(v), wv);
                }
                let isum = _mm512_cvtepi32_ps(_mm512_add_epi32(s[0], s[1]));
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(sw, _mm512_set1_ps(d[t].add(b).read())), isum, acc[t]);
            }
        }
    }
    acc.map(|a| {
        let mut rows = [0.0f32; 16];
        // SAFETY: `rows` holds 16 writable f32; storeu needs no alignment.
        unsafe { _mm512_storeu_ps(rows.as_mut_ptr(), a) };
        rows
    })
}

/// Rows `0..4` and `4..8` of two vectors of eight rows × four elements
/// (`a` and `b`: four consecutive elements each), as one 64-byte vector of
/// eight rows × eight elements (row `r` at bytes `8r..8r + 8`: its four of
/// `a`, then its four of `b`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn rows_of_eight(a: __m256i, b: __m256i) -> __m512i {
    let (lo, hi) = (_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
    let first = _mm256_permute2x128_si256::<0x20>(lo, hi);
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(first), _mm256_permute2x128_si256::<0x31>(lo, hi))
}

/// Bytes of one tile-block of a Q6_K tile as [`unpack_q6k_wide`] leaves it:
/// 32 vectors of quants, vector `u` holding elements `8u..8u + 8` of each
/// row (row `r` at bytes `8r..8r + 8`) as unsigned bytes (0..64); 16 vectors
/// of sub-block scales as 16-bit words, vector `j` holding row `r`'s scale of
/// sub-block `j` in words `4r..4r + 4`; and 4 vectors of −32 times the scales,
/// vector `k` holding row `r`'s of sub-blocks `4k..4k + 4` in words `4r..4r + 4`.
pub const Q6K_WIDE_UNPACKED: usize = 64 * (32 + 16 + 4);

/// A packed Q6_K tile in the layout [`tile_gemm_q6k_wide`] reads
/// ([`Q6K_WIDE_UNPACKED`] bytes a block): unpacked once for every activation
/// row a call multiplies.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn unpack_q6k_wide(tile: &[u8], blocks: usize, out: &mut [u8]) {
    use super::avx2::two_bits_at_4;
    use super::packed::q6k_chunk;
    let bb = PackedFormat::Q6K.block_bytes();
    assert!(tile.len() >= bb * blocks && out.len() >= Q6K_WIDE_UNPACKED * blocks);
    let low = _mm256_set1_epi8(0x0F);
    let store = |dst: &mut [u8], v: __m512i| {
        assert!(dst.len() >= 64);
        // SAFETY: the assertion above guarantees 64 writable bytes; storeu needs no alignment.
        unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), v) }
    };
    for (blk, dst) in tile.chunks_exact(bb).zip(out.chunks_exact_mut(Q6K_WIDE_UNPACKED)).take(blocks) {
        for c in 0..4 {
            let chunk = &blk[q6k_chunk(c)..];
            let high: [__m256i; 4] = std::array::from_fn(|k| load(&chunk[32 + 32 * k..]));
            // Group g: elements 64c + 4g..64c + 4g + 4 of each row.
            let mut groups = [_mm256_setzero_si256(); 16];
            for v in 0..8 {
                let n = load(&chunk[160 + 32 * v..]);
                groups[v] = _mm256_or_si256(_mm256_and_si256(n, low), two_bits_at_4(high[v % 4], v / 4));
                groups[v + 8] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(n, 4), low),
                    two_bits_at_4(high[v % 4], 2 + v / 4),
                );
            }
            for u in 0..8 {
                store(&mut dst[64 * (8 * c + u)..], rows_of_eight(groups[2 * u], groups[2 * u + 1]));
            }
            // Row r's scales of sub-blocks 4c..4c + 4 at bytes 4r..4r + 4 (rows 0..4, then 4..8).
            let (pair0, pair1) = (load128(chunk), load128(&chunk[16..]));
            let by_row = _mm256_set_m128i(_mm_unpackhi_epi16(pair0, pair1), _mm_unpacklo_epi16(pair0, pair1));
            let words = _mm512_cvtepi8_epi16(by_row);
            store(&mut dst[64 * (48 + c)..], _mm512_mullo_epi16(words, _mm512_set1_epi16(-32)));
            for m in 0..4 {
                // Byte 4r + m of each row, four times.
                let control = _mm256_add_epi8(
                    _mm256_setr_epi8(
                        0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12, 0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12,
                        12, 12,
                    ),
                    _mm256_set1_epi8(m as i8),
                );
                let scales = _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(by_row, control));
                store(&mut dst[64 * (32 + 4 * c + m)..], scales);
            }
        }
    }
}

/// The eight rows of a Q6_K tile · `N` Q8_K activation rows in the tiled
/// batch order ([`crate::quant::Order::Batch`]), the tile unpacked by
/// [`unpack_q6k_wide`] into `quants` (`tile` still gives the scales `d`): per
/// block, each eight products of a row as `vpmaddubsw` pairs times the
/// sub-block's scale summed by `vpdpwssd` (a weight row's pair of lanes holding
/// its sums), −32 times each sub-block's scale times the activations' sum of
/// 16 the same way, then the exact total added as the reference does, `acc =
/// fma(d · isum, d_a, acc)`: equal bit for bit.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn tile_gemm_q6k_wide<const N: usize>(
    tile: &[u8],
    quants: &[u8],
    blocks: usize,
    acts: [&ActRow; N],
) -> [[f32; TILE_ROWS]; N] {
    let bb = PackedFormat::Q6K.block_bytes();
    assert!(tile.len() >= bb * blocks && quants.len() >= Q6K_WIDE_UNPACKED * blocks);
    for a in acts {
        assert!(a.q.len() >= 256 * blocks && a.d.len() >= blocks && a.sum16.len() >= 16 * blocks);
    }
    let q: [*const i64; N] = std::array::from_fn(|t| acts[t].q.as_ptr().cast());
    let s16: [*const i64; N] = std::array::from_fn(|t| acts[t].sum16.as_ptr().cast());
    let d_a: [*const f32; N] = std::array::from_fn(|t| acts[t].d.as_ptr());
    let (tile, quants) = (tile.as_ptr(), quants.as_ptr());
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        // SAFETY (every read in this block): block b < blocks of the tile (bb bytes each) and of
        // the unpacked quants, and elements 256b..256b + 256, sums 16b..16b + 16 and scale b of
        // each row, are in bounds (asserted above); the loads need no alignment.
        unsafe {
            let w = quants.add(Q6K_WIDE_UNPACKED * b);
            let vec = |i: usize| _mm512_loadu_si512(w.add(64 * i).cast());
            // Two sums per row, so each row waits on half as many vpdpwssd latencies.
            let mut even = [_mm512_setzero_si512(); N];
            let mut odd = [_mm512_setzero_si512(); N];
            for k in 0..4 {
                let offset = vec(48 + k);
                for t in 0..N {
                    even[t] =
                        _mm512_dpwssd_epi32(even[t], offset, _mm512_set1_epi64(s16[t].add(4 * b + k).read_unaligned()));
                }
            }
            for j in 0..16 {
                let (sc, w0, w1) = (vec(32 + j), vec(2 * j), vec(2 * j + 1));
                for t in 0..N {
                    let a = |u: usize| _mm512_set1_epi64(q[t].add(32 * b + u).read_unaligned());
                    even[t] = _mm512_dpwssd_epi32(even[t], _mm512_maddubs_epi16(w0, a(2 * j)), sc);
                    odd[t] = _mm512_dpwssd_epi32(odd[t], _mm512_maddubs_epi16(w1, a(2 * j + 1)), sc);
                }
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(tile.add(b * bb).cast()));
            for t in 0..N {
                let s = _mm512_add_epi32(even[t], odd[t]);
                let isum = _mm512_cvtepi64_epi32(_mm512_add_epi32(s, _mm512_srli_epi64::<32>(s)));
                let da = _mm256_set1_ps(d_a[t].add(b).read());
                acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(isum)), da, acc[t]);
            }
        }
    }
    store_rows(acc)
}

/// Bytes of one tile-block of a Q4_K tile as [`unpack_q4k_wide`] leaves it:
/// 32 vectors of quants (0..16), vector `u` holding elements `8u..8u + 8` of
/// each row (row `r` at bytes `8r..8r + 8`); 8 vectors of sub-block scales as
/// 16-bit words, vector `j` holding row `r`'s scale of sub-block `j` in words
/// `4r..4r + 4`; 4 vectors of mins, vector `k` holding row `r`'s min of
/// sub-block `2k + h` in words `4r + 2h` and `4r + 2h + 1`; then the rows' `d`
/// and `dmin` as f32, row `r`'s in lanes `2r` and `2r + 1`.
pub const Q4K_WIDE_UNPACKED: usize = 64 * (32 + 8 + 4 + 2);

/// A packed Q4_K tile in the layout [`tile_gemm_q4k_wide`] reads
/// ([`Q4K_WIDE_UNPACKED`] bytes a block): unpacked once for every activation
/// row a call multiplies.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn unpack_q4k_wide(tile: &[u8], blocks: usize, out: &mut [u8]) {
    use super::packed::q4k_chunk;
    let bb = PackedFormat::Q4K.block_bytes();
    assert!(tile.len() >= bb * blocks && out.len() >= Q4K_WIDE_UNPACKED * blocks);
    let low = _mm256_set1_epi8(0x0F);
    let pairs = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    // Byte 2r + h of each row's pair, four times: row r's scale of sub-block 2c + h.
    let pick = _mm256_setr_epi8(
        0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6, 8, 8, 8, 8, 10, 10, 10, 10, 12, 12, 12, 12, 14, 14, 14, 14,
    );
    for (blk, dst) in tile.chunks_exact(bb).zip(out.chunks_exact_mut(Q4K_WIDE_UNPACKED)).take(blocks) {
        let mut vectors = [_mm512_setzero_si512(); 46];
        for c in 0..4 {
            let chunk = &blk[q4k_chunk(c)..];
            // Group g: elements 64c + 4g..64c + 4g + 4 of each row.
            let mut groups = [_mm256_setzero_si256(); 16];
            for v in 0..8 {
                let n = load(&chunk[32 + 32 * v..]);
                (groups[v], groups[v + 8]) = (_mm256_and_si256(n, low), _mm256_and_si256(_mm256_srli_epi16(n, 4), low));
            }
            for u in 0..8 {
                vectors[8 * c + u] = rows_of_eight(groups[2 * u], groups[2 * u + 1]);
            }
            let pair_scales = _mm256_broadcastsi128_si256(load128(chunk));
            for h in 0..2 {
                let control = _mm256_add_epi8(pick, _mm256_set1_epi8(h as i8));
                vectors[32 + 2 * c + h] = _mm512_cvtepu8_epi16(_mm256_shuffle_epi8(pair_scales, control));
            }
            let mins = load128(&chunk[16..]);
            let twice = _mm256_set_m128i(_mm_unpackhi_epi8(mins, mins), _mm_unpacklo_epi8(mins, mins));
            vectors[40 + c] = _mm512_cvtepu8_epi16(twice);
        }
        let dup = |at: usize| _mm512_permutexvar_ps(pairs, _mm512_castps256_ps512(scales(&blk[at..at + 16])));
        let dst = &mut dst[..Q4K_WIDE_UNPACKED];
        // SAFETY: `dst` holds the block's bytes (46 integer vectors, then two of f32); storeu needs no alignment.
        unsafe {
            for (i, v) in vectors.iter().enumerate() {
                _mm512_storeu_si512(dst.as_mut_ptr().add(64 * i).cast(), *v);
            }
            _mm512_storeu_ps(dst.as_mut_ptr().add(64 * 44).cast(), dup(0));
            _mm512_storeu_ps(dst.as_mut_ptr().add(64 * 45).cast(), dup(16));
        }
    }
}

/// The eight rows of a Q4_K tile · `N` Q8_K activation rows in the batch
/// order ([`crate::quant::Order::Batch`]: a fused multiply-add per pair of
/// sub-blocks), the tile unpacked by [`unpack_q4k_wide`] into `quants`: each
/// eight products of a row as `vpmaddubsw` pairs times the sub-block's scale
/// summed by `vpdpwssd` (a weight row's pair of lanes holding its sums), the
/// mins times the activations' sums of 16 the same way, then each pair of
/// sub-blocks' exact sums added as the reference adds them: equal bit for bit.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn tile_gemm_q4k_wide<const N: usize>(quants: &[u8], blocks: usize, acts: [&ActRow; N]) -> [[f32; TILE_ROWS]; N] {
    assert!(quants.len() >= Q4K_WIDE_UNPACKED * blocks);
    for a in acts {
        assert!(a.q.len() >= 256 * blocks && a.d.len() >= blocks && a.sum16.len() >= 16 * blocks);
    }
    let q: [*const i64; N] = std::array::from_fn(|t| acts[t].q.as_ptr().cast());
    let s16: [*const i64; N] = std::array::from_fn(|t| acts[t].sum16.as_ptr().cast());
    let d_a: [*const f32; N] = std::array::from_fn(|t| acts[t].d.as_ptr());
    let quants = quants.as_ptr();
    let pair_sum = |s: __m512i| _mm512_cvtepi32_ps(_mm512_add_epi32(s, _mm512_srli_epi64::<32>(s)));
    // Lane 2r of each: row r's sums; lane 2r + 1: no meaning.
    let (mut acc, mut acc_min) = ([_mm512_setzero_ps(); N], [_mm512_setzero_ps(); N]);
    for b in 0..blocks {
        // SAFETY (every read in this block): block b < blocks of the unpacked quants, and elements
        // 256b..256b + 256, sums 16b..16b + 16 and scale b of each row, are in bounds (asserted
        // above); the loads need no alignment.
        unsafe {
            let w = quants.add(Q4K_WIDE_UNPACKED * b);
            let vec = |i: usize| _mm512_loadu_si512(w.add(64 * i).cast());
            let (d, dmin) = (_mm512_loadu_ps(w.add(64 * 44).cast()), _mm512_loadu_ps(w.add(64 * 45).cast()));
            let da: [__m512; N] = std::array::from_fn(|t| _mm512_set1_ps(d_a[t].add(b).read()));
            let (dd, dm): ([__m512; N], [__m512; N]) =
                (da.map(|x| _mm512_mul_ps(d, x)), da.map(|x| _mm512_mul_ps(dmin, x)));
            for k in 0..4 {
                // Sub-block 2k: vectors 8k..8k + 4; sub-block 2k + 1: the next four. Each
                // vector is loaded once for all N rows.
                let wv: [__m512i; 8] = std::array::from_fn(|u| vec(8 * k + u));
                let (sc0, sc1, mins) = (vec(32 + 2 * k), vec(33 + 2 * k), vec(40 + k));
                for t in 0..N {
                    let a = |u: usize| _mm512_set1_epi64(q[t].add(32 * b + 8 * k + u).read_unaligned());
                    let (mut even, mut odd) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                    for u in (0..8).step_by(2) {
                        let sc = if u < 4 { sc0 } else { sc1 };
                        even = _mm512_dpwssd_epi32(even, _mm512_maddubs_epi16(wv[u], a(u)), sc);
                        odd = _mm512_dpwssd_epi32(odd, _mm512_maddubs_epi16(wv[u + 1], a(u + 1)), sc);
                    }
                    acc[t] = _mm512_fmadd_ps(pair_sum(_mm512_add_epi32(even, odd)), dd[t], acc[t]);
                    let sums = _mm512_set1_epi64(s16[t].add(4 * b + k).read_unaligned());
                    let m = _mm512_dpwssd_epi32(_mm512_setzero_si512(), mins, sums);
                    acc_min[t] = _mm512_fmadd_ps(pair_sum(m), dm[t], acc_min[t]);
                }
            }
        }
    }
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    store_rows(std::array::from_fn(|t| {
        _mm512_castps512_ps256(_mm512_permutexvar_ps(even, _mm512_sub_ps(acc[t], acc_min[t])))
    }))
}

/// [`super::avx2::attend_group_f16`] sixteen lanes at a time, for heads of
/// `16 · Z` values (`Z` even): the same arithmetic in the same order, so equal
/// bit for bit to [`crate::model::attention::attend_group`]. A score's four
/// eight-lane accumulators (vector `i` into accumulator `i mod 4`) are two
/// 512-bit ones, `[0 | 1]` and `[2 | 3]`, added as the reference adds them,
/// sixteen positions' lanes at once ([`add_lanes_16`]) over keys converted to
/// f32 once a chunk; each head's weighted sum of values stays in registers for a whole chunk of
/// positions, rounded to f16 after every update as the reference rounds it.
/// Row `p` of the keys and values starts at `p * stride + offset`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub fn attend_group_f16<const Z: usize>(
    q: &[f32],
    keys: &[half::f16],
    values: &[half::f16],
    (stride, offset): (usize, usize),
    ctx: usize,
    scale: f32,
    out: &mut [f32],
) {
    use super::avx2::{OnlineSoftmax, ATTEND_CHUNK, ATTEND_MAX_GROUP};
    let hd = 16 * Z;
    let heads = super::avx2::check_attend(q, out, hd, (keys, values), (stride, offset), ctx);
    let round = |x: __m512| _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
    // SAFETY (both): every index is below q.len() = out.len() (asserted above), 16 f32 from there are readable/writable.
    let ld = |x: &[f32], at: usize| unsafe { _mm512_loadu_ps(x[at..at + 16].as_ptr()) };
    let st = |x: &mut [f32], at: usize, v: __m512| unsafe { _mm512_storeu_ps(x[at..at + 16].as_mut_ptr(), v) };
    // SAFETY: p < ctx, so 16 f16 from `p * stride + offset + 16i` are in bounds (asserted above).
    let ld16 = |x: &[half::f16], at: usize| unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(x.as_ptr().add(at).cast())) };
    let mut qr = [0.0f32; ATTEND_MAX_GROUP * 256];
    let qr = &mut qr[..q.len()];
    for i in (0..q.len()).step_by(16) {
        st(qr, i, round(ld(q, i)));
    }
    out.fill(0.0);
    let mut soft = OnlineSoftmax::new();
    // The chunk's keys in f32, converted once for every head.
    let mut kf = [0.0f32; ATTEND_CHUNK * 256];
    for c0 in (0..ctx).step_by(ATTEND_CHUNK) {
        let n = ATTEND_CHUNK.min(ctx - c0);
        for j in 0..n {
            let at = (c0 + j) * stride + offset;
            for i in 0..Z {
                st(&mut kf, j * hd + 16 * i, ld16(keys, at + 16 * i));
            }
        }
        // Sixteen positions' scores at a time: each position's sixteen lanes as
        // the reference's accumulators hold them, then the sixteen added across
        // together by `add_lanes_16`.
        for (h, sc) in soft.score.iter_mut().enumerate().take(heads) {
            let qh: [__m512; Z] = std::array::from_fn(|i| ld(qr, h * hd + 16 * i));
            for j0 in (0..n).step_by(16) {
                let rows: [__m512; 16] = std::array::from_fn(|t| {
                    let (mut a01, mut a23) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                    if j0 + t < n {
                        for (i, qi) in qh.iter().enumerate() {
                            let k = ld(&kf, (j0 + t) * hd + 16 * i);
                            match i % 2 {
                                0 => a01 = _mm512_fmadd_ps(k, *qi, a01),
                                _ => a23 = _mm512_fmadd_ps(k, *qi, a23),
                            }
                        }
                    }
                    _mm512_add_ps(a01, a23)
                });
                // A chunk holds a whole number of sixteens: lanes past `n` land in unread scores.
                st(sc, j0, _mm512_mul_ps(add_lanes_16(rows), _mm512_set1_ps(scale)));
            }
        }
        soft.factors(heads, n);
        // Heads four at a time: their sums stay in registers, and the chains of
        // rounded updates of four heads overlap.
        let weigh = |h: usize, out: &mut [f32]| {
            let (values, rows) = (&values[c0 * stride + offset..], (stride, n));
            let g = heads - h;
            let out = &mut out[h * hd..][..g.min(4) * hd];
            let (ms, vs) = (&soft.ms[h..heads], &soft.vs[h..heads]);
            // SAFETY (every arm): the CPU supports this set (the caller's contract), and rows
            // 0..n of the chunk hold hd values each (asserted above).
            unsafe {
                match g {
                    1 => weigh_values::<Z, 1>(values, rows, ms, vs, out),
                    2 => weigh_values::<Z, 2>(values, rows, ms, vs, out),
                    3 => weigh_values::<Z, 3>(values, rows, ms, vs, out),
                    _ => weigh_values::<Z, 4>(values, rows, ms, vs, out),
                }
            }
        };
        for h in (0..heads).step_by(4) {
            weigh(h, out);
        }
    }
    for (h, s) in soft.sum.iter().enumerate().take(heads) {
        let inv = _mm512_set1_ps(1.0 / s);
        for i in 0..Z {
            let at = h * hd + 16 * i;
            st(out, at, _mm512_mul_ps(ld(out, at), inv));
        }
    }
}

/// The sums of the lanes of sixteen rows, row `t` in lane `t`, each added as
/// the reference's f16 dot product adds its accumulators' lanes (lanes `i` and
/// `i + 8`, then `i` and `i + 4`, then `(0 + 1) + (2 + 3)`): a tree of
/// shuffles that pairs the rows' lanes, so 15 additions serve all sixteen.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn add_lanes_16(rows: [__m512; 16]) -> __m512 {
    // Rows 2i and 2i+1: each row's lanes i + (i + 8), in its own half.
    let halves: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (rows[2 * i], rows[2 * i + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b))
    });
    // Rows 4j..4j+4: each row's four sums i + (i + 4), in its own quarter.
    let quarters: [__m512; 4] = std::array::from_fn(|j| {
        let (a, b) = (halves[2 * j], halves[2 * j + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(a, b), _mm512_shuffle_f32x4::<0xDD>(a, b))
    });
    // (0 + 1) and (2 + 3) of every row, then their sum.
    let pairs: [__m512; 2] = std::array::from_fn(|j| {
        let (a, b) = (quarters[2 * j], quarters[2 * j + 1]);
        _mm512_add_ps(_mm512_shuffle_ps::<0x88>(a, b), _mm512_shuffle_ps::<0xDD>(a, b))
    });
    let sums =
        _mm512_add_ps(_mm512_shuffle_ps::<0x88>(pairs[0], pairs[1]), _mm512_shuffle_ps::<0xDD>(pairs[0], pairs[1]));
    // Row 4j + k ended in lane 4k + j.
    _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), sums)
}

/// `G` heads' weighted sums of values (`out`, `G · 16Z` values) over the `n`
/// positions of a chunk (`rows`: the stride and `n`), as the reference adds
/// them: each position scales the sum by `ms` where the maximum moved
/// (rounded to f16), then adds the value times `vs` (rounded to f16).
///
/// # Safety
/// The CPU must support AVX-512 F; `values` must hold rows `0..n` of `16Z`
/// values at the stride.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn weigh_values<const Z: usize, const G: usize>(
    values: &[half::f16],
    (stride, n): (usize, usize),
    ms: &[[f32; super::avx2::ATTEND_CHUNK]],
    vs: &[[f32; super::avx2::ATTEND_CHUNK]],
    out: &mut [f32],
) {
    let hd = 16 * Z;
    assert!(out.len() == G * hd && ms.len() >= G && vs.len() >= G);
    assert!(n == 0 || (n - 1) * stride + hd <= values.len());
    let round = |x: __m512| _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
    // SAFETY: every index is below out.len() (asserted above).
    let mut o: [[__m512; Z]; G] =
        std::array::from_fn(|g| std::array::from_fn(|i| unsafe { _mm512_loadu_ps(out.as_ptr().add(g * hd + 16 * i)) }));
    for j in 0..n {
        // SAFETY: row j < n holds hd values (asserted above).
        let v: [__m512; Z] = std::array::from_fn(|i| unsafe {
            _mm512_cvtph_ps(_mm256_loadu_si256(values.as_ptr().add(j * stride + 16 * i).cast()))
        });
        for (g, og) in o.iter_mut().enumerate() {
            let (m, w) = (ms[g][j], vs[g][j]);
            if m != 1.0 {
                *og = og.map(|x| round(_mm512_mul_ps(x, _mm512_set1_ps(m))));
            }
            for (x, vi) in og.iter_mut().zip(&v) {
                *x = round(_mm512_fmadd_ps(*vi, _mm512_set1_ps(w), *x));
            }
        }
    }
    for (g, og) in o.iter().enumerate() {
        for (i, x) in og.iter().enumerate() {
            // SAFETY: every index is below out.len() (asserted above).
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(g * hd + 16 * i), *x) };
        }
    }
}

/// [`crate::quant::quantize_with`] in the forward pass's rounding, sixteen
/// values at a time: the same operations on each value (the largest magnitude
/// is exact in any order), so the same bytes. Other types, and lengths that
/// do not fit, go to the reference, which reports them.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn quantize(ty: crate::gguf::TensorType, x: &[f32], out: &mut [u8]) -> Result<(), crate::quant::QuantError> {
    use crate::gguf::TensorType;
    let block: fn(&[f32], &mut [u8]) = match ty {
        TensorType::Q8_0 => quantize_q8_0_block,
        TensorType::Q8K => quantize_q8k_block,
        _ => return crate::quant::quantize_with(ty, x, out, crate::quant::Q8_0Rounding::CpuRuntime),
    };
    let (n, bytes) = ty.block_geometry().expect("Q8_0 and Q8_K have blocks");
    if !x.len().is_multiple_of(n) || out.len() != x.len() / n * bytes {
        return crate::quant::quantize_with(ty, x, out, crate::quant::Q8_0Rounding::CpuRuntime);
    }
    for (xs, b) in x.chunks_exact(n).zip(out.chunks_exact_mut(bytes)) {
        block(xs, b);
    }
    Ok(())
}

/// Sixteen values from `x[at..]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load16(x: &[f32], at: usize) -> __m512 {
    let x = &x[at..at + 16];
    // SAFETY: `x` holds 16 floats; loadu needs no alignment.
    unsafe { _mm512_loadu_ps(x.as_ptr()) }
}

/// `round_even_small(v)` of [`crate::quant`] on sixteen values: adding and
/// taking off 1.5 · 2²³, as it does, then the integer each now is.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn round_to_i32(v: __m512) -> __m512i {
    let magic = _mm512_set1_ps(12_582_912.0);
    _mm512_cvttps_epi32(_mm512_sub_ps(_mm512_add_ps(v, magic), magic))
}

/// One Q8_0 block as [`crate::quant::legacy::quantize_q8_0`] writes it in the
/// CPU runtime's rounding.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn quantize_q8_0_block(xs: &[f32], b: &mut [u8]) {
    let (lo, hi) = (load16(xs, 0), load16(xs, 16));
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
    b[..2].copy_from_slice(&half::f16::from_f32(amax / 127.0).to_le_bytes());
    let id = _mm512_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    let q = |v: __m512| _mm512_cvtepi32_epi8(round_to_i32(_mm512_mul_ps(v, id)));
    let q = _mm256_set_m128i(q(hi), q(lo));
    let b = &mut b[2..34];
    // SAFETY: `b` holds 32 bytes; storeu needs no alignment.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), q) };
}

/// One Q8_K block as [`crate::quant::kquants::quantize_q8k`] writes it: the
/// scale from the first value of the largest magnitude, and each 16 quants' sum.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn quantize_q8k_block(xs: &[f32], b: &mut [u8]) {
    let amax = (0..16).fold(_mm512_setzero_ps(), |m, i| _mm512_max_ps(m, _mm512_abs_ps(load16(xs, 16 * i))));
    let amax = _mm512_reduce_max_ps(amax);
    if amax == 0.0 {
        b.fill(0);
        return;
    }
    let max = xs.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
    let iscale = -127.0 / max;
    b[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    let (scale, top) = (_mm512_set1_ps(iscale), _mm512_set1_epi32(127));
    for i in 0..16 {
        let q = _mm512_min_epi32(round_to_i32(_mm512_mul_ps(scale, load16(xs, 16 * i))), top);
        let sum = _mm512_reduce_add_epi32(q) as i16;
        b[260 + 2 * i..262 + 2 * i].copy_from_slice(&sum.to_le_bytes());
        let dst = &mut b[4 + 16 * i..20 + 16 * i];
        // SAFETY: `dst` holds 16 bytes; storeu needs no alignment.
        unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(q)) };
    }
}

/// Σ a[i]·b[i] of unsigned × signed bytes by 512-bit `vpdpbusd`, 512 bytes a
/// step into eight independent accumulators (a latency of four cycles at two
/// a cycle): the int8 peak of the gemms, for the compute probe. Lengths must
/// be equal and a multiple of 128.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub fn dot_u8_i8(a: &[u8], b: &[i8]) -> i32 {
    assert!(a.len() == b.len() && a.len().is_multiple_of(128), "dot_u8_i8 needs equal lengths, a multiple of 128");
    // SAFETY (both): 64 bytes from the start of the slice, bounds-checked; loadu needs no alignment.
    let lda = |x: &[u8]| unsafe { _mm512_loadu_si512(x[..64].as_ptr().cast()) };
    let ldb = |x: &[i8]| unsafe { _mm512_loadu_si512(x[..64].as_ptr().cast()) };
    let mut acc = [_mm512_setzero_si512(); 8];
    let (steps_a, steps_b) = (a.chunks_exact(512), b.chunks_exact(512));
    let (rest_a, rest_b) = (steps_a.remainder(), steps_b.remainder());
    for (x, y) in steps_a.zip(steps_b) {
        for (k, s) in acc.iter_mut().enumerate() {
            *s = _mm512_dpbusd_epi32(*s, lda(&x[64 * k..]), ldb(&y[64 * k..]));
        }
    }
    for (k, (x, y)) in rest_a.chunks_exact(64).zip(rest_b.chunks_exact(64)).enumerate() {
        acc[k] = _mm512_dpbusd_epi32(acc[k], lda(x), ldb(y));
    }
    _mm512_reduce_add_epi32(acc.iter().fold(_mm512_setzero_si512(), |s, &x| _mm512_add_epi32(s, x)))
}

vnni_tile_kernels!(
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    _mm256_dpbusd_epi32,
    _mm256_dpwssd_epi32,
    "AVX-512 VNNI"
);
