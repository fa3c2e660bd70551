//! Weights repacked once at load for the fast kernels, keeping each format's
//! bit width: rows interleaved in tiles of [`TILE_ROWS`], so that one vector
//! instruction multiplies the same four elements of eight rows, and a tile's
//! result is eight rows' dot products in one register, with no horizontal sums.
//!
//! A tile holds, block after block (32 elements of every row of the tile):
//! - scales: 8 little-endian f16, row `r`'s block scale `d` in slot `r`;
//! - Q5_0: a plane of 32 bytes, bit `v` of byte `4r + j` the fifth bit of
//!   element `4v + j` of row `r`; then 4 nibble vectors of 32 bytes, byte
//!   `4r + j` of vector `p` = low nibble of element `4p + j` of row `r` |
//!   low nibble of element `4(p + 4) + j` << 4;
//! - Q8_0: 8 vectors of 32 bytes, byte `4r + j` of vector `v` = element
//!   `4v + j` of row `r`, signed.
//!
//! That is 22 or 34 bytes per row and block, as in the GGUF file. The last
//! tile of a matrix whose rows are not a multiple of eight is padded with rows
//! of scale 0.
//!
//! Activations are Q8_0 blocks, read through [`ActRow`]: the quants back to
//! back, their absolute values, and each block's scale and quant sum.

use crate::gguf::TensorType;

/// Elements per block.
const QK: usize = 32;
/// Rows per tile.
pub const TILE_ROWS: usize = 8;

/// The formats with a packed layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedFormat {
    /// From Q5_0: unsigned 5-bit quants (q in 0..32 stands for q − 16).
    Q5_0,
    /// From Q8_0: signed 8-bit quants.
    Q8_0,
}

impl PackedFormat {
    /// Bytes of one block of a tile (all its rows).
    pub fn block_bytes(self) -> usize {
        match self {
            PackedFormat::Q5_0 => TILE_ROWS * 22,
            PackedFormat::Q8_0 => TILE_ROWS * 34,
        }
    }
}

/// A matrix of packed tiles.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    /// The layout.
    pub format: PackedFormat,
    /// Rows (without the padding of the last tile).
    pub rows: usize,
    /// Blocks per row.
    pub blocks: usize,
    /// The tiles, back to back.
    pub data: super::HugeBytes,
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
        let tile_bytes = blocks * format.block_bytes();
        let data = super::HugeBytes::zeroed(rows.div_ceil(TILE_ROWS) * tile_bytes);
        let mut m = PackedMatrix { format, rows, blocks, data };
        let src_row = blocks * src_block;
        for (i, tile) in m.data.chunks_exact_mut(tile_bytes).enumerate() {
            for r in 0..TILE_ROWS.min(rows - TILE_ROWS * i) {
                let src = &bytes[(TILE_ROWS * i + r) * src_row..][..src_row];
                for (b, blk) in src.chunks_exact(src_block).enumerate() {
                    pack_block(format, blk, r, &mut tile[b * format.block_bytes()..][..format.block_bytes()]);
                }
            }
        }
        Some(m)
    }

    /// Tiles, the last one possibly padded.
    pub fn tiles(&self) -> usize {
        self.rows.div_ceil(TILE_ROWS)
    }

    /// Bytes of one tile.
    pub fn tile_bytes(&self) -> usize {
        self.blocks * self.format.block_bytes()
    }

    /// Tile `i`.
    pub fn tile(&self, i: usize) -> &[u8] {
        let n = self.tile_bytes();
        &self.data[i * n..][..n]
    }
}

/// Writes GGUF block `src` as row `r` of a tile's block `dst`.
fn pack_block(format: PackedFormat, src: &[u8], r: usize, dst: &mut [u8]) {
    dst[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
    match format {
        PackedFormat::Q5_0 => {
            let qh = u32::from_le_bytes([src[2], src[3], src[4], src[5]]);
            for e in 0..QK {
                let nibble = if e < 16 { src[6 + e] & 0x0F } else { src[6 + e - 16] >> 4 };
                let (v, j) = (e / 4, e % 4);
                dst[16 + 4 * r + j] |= (((qh >> e) & 1) as u8) << v;
                dst[48 + 32 * (v % 4) + 4 * r + j] |= if v < 4 { nibble } else { nibble << 4 };
            }
        }
        PackedFormat::Q8_0 => {
            for e in 0..QK {
                dst[16 + 32 * (e / 4) + 4 * r + e % 4] = src[2 + e];
            }
        }
    }
}

/// The quants of block `b` of row `r` of a tile, as signed values: the scalar
/// decoding of the layout.
pub fn block_values(format: PackedFormat, tile: &[u8], b: usize, r: usize) -> [i8; QK] {
    let blk = &tile[b * format.block_bytes()..][..format.block_bytes()];
    std::array::from_fn(|e| {
        let (v, j) = (e / 4, e % 4);
        match format {
            PackedFormat::Q5_0 => {
                let byte = blk[48 + 32 * (v % 4) + 4 * r + j];
                let nibble = if v < 4 { byte & 0x0F } else { byte >> 4 };
                let high = (blk[16 + 4 * r + j] >> v) & 1;
                (nibble | (high << 4)) as i8 - 16
            }
            PackedFormat::Q8_0 => blk[16 + 32 * v + 4 * r + j] as i8,
        }
    })
}

/// The scale of block `b` of row `r` of a tile.
pub fn block_scale(format: PackedFormat, tile: &[u8], b: usize, r: usize) -> f32 {
    let at = b * format.block_bytes() + 2 * r;
    half::f16::from_le_bytes([tile[at], tile[at + 1]]).to_f32()
}

/// One row of Q8_0 activations as the packed kernels read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActRow {
    /// The quants, block after block (each in −127..=127, as Q8_0 quantization makes them).
    pub q: Vec<i8>,
    /// Their absolute values.
    pub abs: Vec<u8>,
    /// Each block's scale `d`.
    pub d: Vec<f32>,
    /// Each block's sum of quants.
    pub sum: Vec<i32>,
}

impl ActRow {
    /// Fills `self` from a row of Q8_0 blocks, reusing its buffers.
    pub fn fill(&mut self, act: &[u8]) {
        let blocks = act.len() / 34;
        self.q.clear();
        self.abs.clear();
        self.d.clear();
        self.sum.clear();
        for blk in act.chunks_exact(34) {
            self.d.push(half::f16::from_le_bytes([blk[0], blk[1]]).to_f32());
            let q = blk[2..].iter().map(|&x| x as i8);
            self.q.extend(q.clone());
            self.abs.extend(q.clone().map(i8::unsigned_abs));
            self.sum.push(q.map(i32::from).sum());
        }
        debug_assert_eq!(self.d.len(), blocks);
    }

    /// The activation row of Q8_0 blocks `act`.
    pub fn of(act: &[u8]) -> ActRow {
        let mut a = ActRow::default();
        a.fill(act);
        a
    }

    /// Blocks in the row.
    pub fn blocks(&self) -> usize {
        self.d.len()
    }
}

/// The scalar tile product: the eight rows of tile `tile` · `act`, each row
/// summed block by block as the scalar reference sums a GGUF row
/// (`sum += isum · d_w · d_a`), which the fast kernels reproduce bit for bit.
pub fn tile_dot_scalar(format: PackedFormat, tile: &[u8], blocks: usize, act: &ActRow) -> [f32; TILE_ROWS] {
    std::array::from_fn(|r| {
        (0..blocks).fold(0.0f32, |sum, b| {
            let v = block_values(format, tile, b, r);
            let isum: i32 = v.iter().zip(&act.q[QK * b..][..QK]).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
            sum + isum as f32 * block_scale(format, tile, b, r) * act.d[b]
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant;
    use crate::rng::SplitMix64;

    #[test]
    fn packing_keeps_every_value_and_scale() {
        let mut rng = SplitMix64(3);
        for (ty, src_block) in [(TensorType::Q5_0, 22), (TensorType::Q8_0, 34)] {
            for (rows, blocks) in [(3usize, 1usize), (8, 7), (11, 9), (16, 28)] {
                let cols = 32 * blocks;
                let w = crate::testing::random_weights(&mut rng, ty, rows * cols, 2.0, 0.01);
                let p = PackedMatrix::pack(ty, rows, cols, &w).unwrap();
                assert_eq!((p.rows, p.blocks, p.tiles()), (rows, blocks, rows.div_ceil(8)));
                assert_eq!(p.tile_bytes(), 8 * blocks * src_block);
                for r in 0..p.tiles() * TILE_ROWS {
                    let tile = p.tile(r / TILE_ROWS);
                    let mut want = vec![0.0f32; cols];
                    if r < rows {
                        quant::dequantize(ty, &w[r * blocks * src_block..][..blocks * src_block], &mut want).unwrap();
                    }
                    for b in 0..blocks {
                        let d = block_scale(p.format, tile, b, r % TILE_ROWS);
                        let vals = block_values(p.format, tile, b, r % TILE_ROWS);
                        for j in 0..QK {
                            // Padding rows have scale 0.
                            assert_eq!(f32::from(vals[j]) * d, want[32 * b + j], "{ty} row {r} block {b} element {j}");
                        }
                    }
                }
            }
        }
        assert!(PackedMatrix::pack(TensorType::Q4K, 1, 256, &[0; 144]).is_none());
    }

    #[test]
    fn the_scalar_tile_product_is_the_reference_dot_bit_for_bit() {
        let mut rng = SplitMix64(8);
        for ty in [TensorType::Q5_0, TensorType::Q8_0] {
            let (rows, cols) = (8, 32 * 9);
            let w = crate::testing::random_weights(&mut rng, ty, rows * cols, 2.0, 0.01);
            let x: Vec<f32> = (0..cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0).collect();
            let mut a = vec![0u8; 9 * 34];
            quant::quantize(TensorType::Q8_0, &x, &mut a).unwrap();
            let p = PackedMatrix::pack(ty, rows, cols, &w).unwrap();
            let got = tile_dot_scalar(p.format, p.tile(0), 9, &ActRow::of(&a));
            let row = ty.row_bytes(cols).unwrap();
            for r in 0..rows {
                assert_eq!(got[r].to_bits(), quant::dot(ty, &w[r * row..][..row], &a).to_bits(), "{ty} row {r}");
            }
        }
    }

    #[test]
    fn activation_rows_hold_quants_scales_and_sums() {
        let x: Vec<f32> = (0..96).map(|i| (i as f32 - 40.0) / 7.0).collect();
        let mut a = vec![0u8; 3 * 34];
        quant::quantize(TensorType::Q8_0, &x, &mut a).unwrap();
        let s = ActRow::of(&a);
        assert_eq!((s.blocks(), s.q.len(), s.abs.len()), (3, 96, 96));
        for b in 0..3 {
            let blk = &a[34 * b..34 * b + 34];
            assert_eq!(s.d[b], half::f16::from_le_bytes([blk[0], blk[1]]).to_f32());
            assert_eq!(s.sum[b], blk[2..].iter().map(|&q| i32::from(q as i8)).sum::<i32>());
            for j in 0..32 {
                assert_eq!((s.q[32 * b + j], s.abs[32 * b + j]), (blk[2 + j] as i8, (blk[2 + j] as i8).unsigned_abs()));
            }
        }
    }
}
