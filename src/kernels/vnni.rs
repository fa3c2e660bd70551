//! The tile kernels that AVX-512 VNNI and AVX-VNNI share: the same code, whose
//! only difference between the two is the encoding of `vpdpbusd` and
//! `vpdpwssd` (EVEX with AVX-512 VL, VEX with AVX-VNNI). [`vnni_tile_kernels`]
//! writes them into the module that invokes it, compiled for its features.

/// Writes the shared VNNI tile kernels (`tile_dot_whole`, `tile_dot_q6k`,
/// `tile_dot_q4k`) into the invoking module, compiled for
/// `$features` with `$dpbusd` and `$dpwssd` as the 256-bit dot instructions;
/// `$isa` names the extension in their docs. The module imports the x86
/// intrinsics, `super::avx2::bcast4` and `super::packed::{ActRow,
/// PackedFormat, TILE_ROWS}`.
macro_rules! vnni_tile_kernels {
    ($features:literal, $dpbusd:ident, $dpwssd:ident, $isa:literal) => {
        /// The eight rows of a packed Q5_0 or Q8_0 tile · `N` activation rows in
        /// whole blocks ([`super::avx2::q0_tiles_whole`]), each block's 32 products
        /// of a row summed by `vpdpbusd`s in four chains, the first from its offset: Q5_0's unsigned quants less 16 times the
        /// activations' block sum, Q8_0's weights turned unsigned by adding 128
        /// (flipping the top bit, once for all rows) less 128 times it. Exact in
        /// 32 bits, so equal bit for bit to the reference.
        ///
        #[doc = concat!("Compiled for ", $isa, ".")]
        #[target_feature(enable = $features)]
        pub fn tile_dot_whole<const N: usize>(
            format: PackedFormat,
            tile: &[u8],
            blocks: usize,
            acts: [&ActRow; N],
        ) -> [[f32; TILE_ROWS]; N] {
            let top = _mm256_set1_epi8(i8::MIN);
            let offset = if format == PackedFormat::Q5_0 { -16 } else { -128 };
            let zero = _mm256_setzero_si256();
            super::avx2::q0_tiles_whole(
                format,
                tile,
                blocks,
                acts,
                |v| _mm256_xor_si256(v, top),
                |w, row, b| {
                    let q: *const u8 = row.q.as_ptr().cast();
                    // Four chains of two, so that a block's sum waits on two `vpdpbusd`s, not eight.
                    let mut s = [_mm256_set1_epi32(offset * row.sum32[b]), zero, zero, zero];
                    for v in 0..8 {
                        // SAFETY: elements 32b..32b + 32 of the row are in bounds (asserted by q0_tiles_whole).
                        s[v % 4] = $dpbusd(s[v % 4], w[v], unsafe { bcast4(q, 32 * b + 4 * v) });
                    }
                    _mm256_add_epi32(_mm256_add_epi32(s[0], s[1]), _mm256_add_epi32(s[2], s[3]))
                },
            )
        }

        /// The eight rows of a packed Q6_K tile · `N` Q8_K activation rows, equal
        /// bit for bit to [`super::packed::tile_dot_scalar`] as
        /// [`super::avx2::tile_dot_q6k`] is: the same integer sums, each pair sum
        /// times its scale added by `vpdpwssd` (no `madd` and add), then the
        /// reference's f32 operations.
        ///
        #[doc = concat!("Compiled for ", $isa, ".")]
        #[target_feature(enable = $features)]
        pub fn tile_dot_q6k<const N: usize>(
            tile: &[u8],
            blocks: usize,
            acts: [&ActRow; N],
            tiled: bool,
        ) -> [[f32; TILE_ROWS]; N] {
            super::avx2::q6k_tiles(tile, blocks, acts, tiled, |acc, pairs, scales| $dpwssd(acc, pairs, scales))
        }

        /// The eight rows of a packed Q4_K tile · `N` Q8_K activation rows, equal
        /// bit for bit to [`super::packed::tile_dot_scalar`] as
        /// [`super::avx2::tile_dot_q4k`] is: the same integer sums, each
        /// sub-block's products summed in 32 bits by `vpdpbusd` (no 16-bit sums
        /// to add up), then multiplied by its scale.
        ///
        #[doc = concat!("Compiled for ", $isa, ".")]
        #[target_feature(enable = $features)]
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
                |sums, w, a| $dpbusd(sums, w, a),
                |lo, hi, pair| {
                    let (sl, sh) = (_mm256_and_si256(pair, low_half), _mm256_srli_epi32(pair, 16));
                    _mm256_add_epi32(_mm256_mullo_epi32(lo, sl), _mm256_mullo_epi32(hi, sh))
                },
            )
        }
    };
}
