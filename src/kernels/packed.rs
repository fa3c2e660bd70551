//! Weights repacked once at load for the fast kernels, keeping each format's
//! bit width: Q5_0 and Q8_0 rows regrouped so a kernel decodes a block with a
//! few vector instructions instead of a dozen.
//!
//! A packed row is `[scales | planes | quants]`, blocks taken in groups of
//! eight (the last group padded with empty blocks whose scale is 0):
//! - scales: 8 little-endian f16 per group, the blocks' `d`;
//! - planes (Q5_0 only): 32 bytes per group, bit `k` of byte `j` is the fifth
//!   bit of element `j` of block `k` of the group;
//! - quants: Q5_0 blocks in pairs, 32 bytes per pair, byte `j` = low nibble of
//!   element `j` of the even block | low nibble of element `j` of the odd
//!   block << 4; Q8_0 blocks as their 32 signed bytes.
//!
//! Activations stay Q8_0 blocks; [`ActScales`] adds each block's scale and sum
//! as f32 arrays padded to whole groups, so a kernel handles eight scales at once.

use crate::gguf::TensorType;

/// Elements per block.
const QK: usize = 32;
/// Blocks per group.
pub const GROUP: usize = 8;

/// The formats with a packed layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedFormat {
    /// From Q5_0: unsigned 5-bit quants (q in 0..32 stands for q − 16).
    Q5_0,
    /// From Q8_0: signed 8-bit quants.
    Q8_0,
}

/// A matrix of packed rows.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    /// The layout.
    pub format: PackedFormat,
    /// Rows.
    pub rows: usize,
    /// Blocks per row.
    pub blocks: usize,
    /// Bytes per packed row.
    pub row_bytes: usize,
    /// The rows, back to back.
    pub data: Vec<u8>,
}

fn groups(blocks: usize) -> usize {
    blocks.div_ceil(GROUP)
}

/// Bytes of one packed row of `blocks` blocks.
pub fn packed_row_bytes(format: PackedFormat, blocks: usize) -> usize {
    let g = groups(blocks);
    match format {
        PackedFormat::Q5_0 => 2 * GROUP * g + 32 * g + 32 * blocks.div_ceil(2),
        PackedFormat::Q8_0 => 2 * GROUP * g + 32 * blocks,
    }
}

impl PackedMatrix {
    /// Packs `rows` rows of `cols` elements of type `ty` from their GGUF bytes;
    /// `None` for a type without a packed layout.
    pub fn pack(ty: TensorType, rows: usize, cols: usize, bytes: &[u8]) -> Option<PackedMatrix> {
        let (format, src_block) = match ty {
            TensorType::Q5_0 => (PackedFormat::Q5_0, 22),
            TensorType::Q8_0 => (PackedFormat::Q8_0, 34),
            _ => return None,
        };
        let blocks = cols / QK;
        let row_bytes = packed_row_bytes(format, blocks);
        let mut data = vec![0u8; rows * row_bytes];
        for (src, dst) in bytes.chunks_exact(blocks * src_block).zip(data.chunks_exact_mut(row_bytes)).take(rows) {
            pack_row(format, src, blocks, dst);
        }
        Some(PackedMatrix { format, rows, blocks, row_bytes, data })
    }

    /// Packed row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..][..self.row_bytes]
    }
}

fn pack_row(format: PackedFormat, src: &[u8], blocks: usize, dst: &mut [u8]) {
    let g = groups(blocks);
    let (scales, rest) = dst.split_at_mut(2 * GROUP * g);
    match format {
        PackedFormat::Q5_0 => {
            let (planes, quants) = rest.split_at_mut(32 * g);
            for (b, blk) in src.chunks_exact(22).enumerate() {
                scales[2 * b..2 * b + 2].copy_from_slice(&blk[..2]);
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                let (group, k) = (b / GROUP, b % GROUP);
                let pair = &mut quants[32 * (b / 2)..][..32];
                for j in 0..QK {
                    let nibble = if j < 16 { blk[6 + j] & 0x0F } else { blk[6 + j - 16] >> 4 };
                    pair[j] |= if b % 2 == 0 { nibble } else { nibble << 4 };
                    planes[32 * group + j] |= (((qh >> j) & 1) as u8) << k;
                }
            }
        }
        PackedFormat::Q8_0 => {
            for (b, blk) in src.chunks_exact(34).enumerate() {
                scales[2 * b..2 * b + 2].copy_from_slice(&blk[..2]);
                rest[32 * b..32 * b + 32].copy_from_slice(&blk[2..34]);
            }
        }
    }
}

/// One Q8_0 activation row's block scales and block sums as f32, padded with
/// zeros to whole groups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActScales {
    /// Each block's scale `d`.
    pub d: Vec<f32>,
    /// Each block's sum of quants.
    pub sum: Vec<f32>,
}

impl ActScales {
    /// The scales and sums of a row of Q8_0 blocks.
    pub fn of(act: &[u8]) -> ActScales {
        let blocks = act.len() / 34;
        let padded = groups(blocks) * GROUP;
        let mut s = ActScales { d: vec![0.0; padded], sum: vec![0.0; padded] };
        for (b, blk) in act.chunks_exact(34).enumerate() {
            s.d[b] = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            s.sum[b] = blk[2..34].iter().map(|&q| f32::from(q as i8)).sum();
        }
        s
    }
}

/// The quants of block `b` of a packed row, as signed values (the scalar
/// decoding of the layout, which the fast kernels must agree with).
pub fn block_values(format: PackedFormat, row: &[u8], blocks: usize, b: usize) -> [i8; QK] {
    let g = groups(blocks);
    let quants_at = 2 * GROUP * g + if format == PackedFormat::Q5_0 { 32 * g } else { 0 };
    let mut out = [0i8; QK];
    for (j, o) in out.iter_mut().enumerate() {
        *o = match format {
            PackedFormat::Q5_0 => {
                let byte = row[quants_at + 32 * (b / 2) + j];
                let nibble = if b.is_multiple_of(2) { byte & 0x0F } else { byte >> 4 };
                let high = (row[2 * GROUP * g + 32 * (b / GROUP) + j] >> (b % GROUP)) & 1;
                (nibble | (high << 4)) as i8 - 16
            }
            PackedFormat::Q8_0 => row[quants_at + 32 * b + j] as i8,
        };
    }
    out
}

/// The scale of block `b` of a packed row.
pub fn block_scale(row: &[u8], b: usize) -> f32 {
    half::f16::from_le_bytes([row[2 * b], row[2 * b + 1]]).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant;
    use crate::rng::SplitMix64;

    #[test]
    fn packing_keeps_every_value_and_scale() {
        let mut rng = SplitMix64(3);
        for (ty, fmt, src_block) in
            [(TensorType::Q5_0, PackedFormat::Q5_0, 22), (TensorType::Q8_0, PackedFormat::Q8_0, 34)]
        {
            for blocks in [1usize, 7, 8, 9, 28] {
                let cols = 32 * blocks;
                let w = crate::testing::random_weights(&mut rng, ty, 3 * cols, 2.0, 0.01);
                let p = PackedMatrix::pack(ty, 3, cols, &w).unwrap();
                assert_eq!((p.rows, p.blocks, p.row_bytes), (3, blocks, packed_row_bytes(fmt, blocks)));
                for r in 0..3 {
                    let src = &w[r * blocks * src_block..][..blocks * src_block];
                    let mut want = vec![0.0f32; cols];
                    quant::dequantize(ty, src, &mut want).unwrap();
                    for b in 0..blocks {
                        let d = block_scale(p.row(r), b);
                        let vals = block_values(fmt, p.row(r), blocks, b);
                        for j in 0..QK {
                            assert_eq!(f32::from(vals[j]) * d, want[32 * b + j], "{ty} row {r} block {b} element {j}");
                        }
                    }
                    // Padding blocks have scale 0.
                    for b in blocks..groups(blocks) * GROUP {
                        assert_eq!(block_scale(p.row(r), b), 0.0);
                    }
                }
            }
        }
        assert!(PackedMatrix::pack(TensorType::Q4K, 1, 256, &[0; 144]).is_none());
    }

    #[test]
    fn activation_scales_and_sums_are_read_per_block_and_padded() {
        let x: Vec<f32> = (0..96).map(|i| (i as f32 - 40.0) / 7.0).collect();
        let mut a = vec![0u8; 3 * 34];
        quant::quantize(TensorType::Q8_0, &x, &mut a).unwrap();
        let s = ActScales::of(&a);
        assert_eq!((s.d.len(), s.sum.len()), (8, 8));
        for b in 0..3 {
            let blk = &a[34 * b..34 * b + 34];
            assert_eq!(s.d[b], half::f16::from_le_bytes([blk[0], blk[1]]).to_f32());
            assert_eq!(s.sum[b], blk[2..].iter().map(|&q| f32::from(q as i8)).sum::<f32>());
        }
        assert!(s.d[3..].iter().chain(&s.sum[3..]).all(|&v| v == 0.0));
    }
}
