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
//! That is 22 or 34 bytes per row and block, as in the GGUF file. The
//! 256-element K-quant blocks are cut into four chunks of 64 elements, each
//! chunk into 16 groups of 4; nibble vector `(c, v)` (`v` in 0..8) holds group
//! `v` of chunk `c` in its low nibbles and group `v + 8` in its high nibbles,
//! byte `4r + j` for element `j` of the group in row `r`:
//! - Q4_K: 8 f16 `d`, 8 f16 `dmin`, then per chunk ([`q4k_chunk`]) its two
//!   sub-blocks' 6-bit scales and mins widened to bytes (`[row][2]`) and its
//!   8 nibble vectors: 148 bytes per row and block (144 in the file);
//! - Q6_K: 8 f16 `d`, then per chunk ([`q6k_chunk`]) its four sub-blocks'
//!   signed scales (`[pair][row][2]`), 4 vectors of the high two bits, vector
//!   `k` holding in bits `2m..2m + 2` those of group `4m + k`, and the 8
//!   vectors of the low four bits: 210 bytes per row and block, as in the file.
//!
//! Every block is laid out in the order the kernels read it, front to back.
//!
//! The last
//! tile of a matrix whose rows are not a multiple of eight is padded with rows
//! of scale 0.
//!
//! Activations are Q8_0 blocks (Q5_0, Q8_0) or Q8_K blocks (Q4_K, Q6_K), read
//! through [`ActRow`]: the quants back to back, their absolute values, each
//! block's scale and the sums of its quants.

use crate::gguf::TensorType;
use crate::quant;
use crate::quant::kquants::{self, QK_K};

/// Elements per Q5_0/Q8_0 block.
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
    /// From Q4_K: 4-bit quants with 6-bit sub-block scales and mins.
    Q4K,
    /// From Q6_K: 6-bit quants (q − 32) with signed 8-bit sub-block scales.
    Q6K,
}

/// Each packed format's facts, one row per format: the one table a new
/// format adds a row to (its packing, scalar decoding and kernels aside).
struct FormatFacts {
    /// The format.
    format: PackedFormat,
    /// The GGUF tensor type it is packed from.
    tensor_type: TensorType,
    /// The type of the activations it multiplies.
    act_type: TensorType,
    /// Elements per block.
    block_elements: usize,
    /// Bytes of one row's block in the GGUF file.
    file_block_bytes: usize,
    /// Bytes of one row's block in a tile.
    tile_block_bytes: usize,
}

/// The facts of every packed format.
const FORMATS: [FormatFacts; 4] = [
    FormatFacts {
        format: PackedFormat::Q5_0,
        tensor_type: TensorType::Q5_0,
        act_type: TensorType::Q8_0,
        block_elements: QK,
        file_block_bytes: 22,
        tile_block_bytes: 22,
    },
    FormatFacts {
        format: PackedFormat::Q8_0,
        tensor_type: TensorType::Q8_0,
        act_type: TensorType::Q8_0,
        block_elements: QK,
        file_block_bytes: 34,
        tile_block_bytes: 34,
    },
    FormatFacts {
        format: PackedFormat::Q4K,
        tensor_type: TensorType::Q4K,
        act_type: TensorType::Q8K,
        block_elements: QK_K,
        file_block_bytes: 144,
        tile_block_bytes: 148,
    },
    FormatFacts {
        format: PackedFormat::Q6K,
        tensor_type: TensorType::Q6K,
        act_type: TensorType::Q8K,
        block_elements: QK_K,
        file_block_bytes: 210,
        tile_block_bytes: 210,
    },
];

impl PackedFormat {
    /// This format's row of [`FORMATS`] (rows in the order of the variants).
    fn facts(self) -> &'static FormatFacts {
        &FORMATS[self as usize]
    }

    /// The packed format of GGUF tensor type `ty`, if it has one.
    pub fn of(ty: TensorType) -> Option<PackedFormat> {
        FORMATS.iter().find(|f| f.tensor_type == ty).map(|f| f.format)
    }

    /// Bytes of one block of a tile (all its rows).
    pub fn block_bytes(self) -> usize {
        TILE_ROWS * self.facts().tile_block_bytes
    }

    /// Elements per block.
    pub fn block_elements(self) -> usize {
        self.facts().block_elements
    }

    /// The GGUF tensor type it was packed from.
    pub fn tensor_type(self) -> TensorType {
        self.facts().tensor_type
    }

    /// The format of the activations it multiplies.
    pub fn act_type(self) -> TensorType {
        self.facts().act_type
    }
}

/// A matrix of packed tiles.
#[derive(Debug)]
pub struct PackedMatrix {
    /// The layout.
    pub format: PackedFormat,
    /// Rows (without the padding of the last tile).
    pub rows: usize,
    /// Blocks per row.
    pub blocks: usize,
    /// The tiles, back to back.
    pub data: super::AnonBytes,
}

impl PackedMatrix {
    /// Packs `rows` rows of `cols` elements of type `ty` from their GGUF bytes;
    /// `None` for a type without a packed layout.
    ///
    /// # Panics
    /// When the system has no memory for the tiles ([`PackedMatrix::try_pack`] says so instead).
    pub fn pack(ty: TensorType, rows: usize, cols: usize, bytes: &[u8]) -> Option<PackedMatrix> {
        PackedMatrix::try_pack(ty, rows, cols, bytes)
            .unwrap_or_else(|e| panic!("no memory to pack a {rows} × {cols} {ty:?} matrix: {e}"))
    }

    /// [`PackedMatrix::pack`], or the system's error when it refuses the
    /// memory for the tiles (a model's load reports it).
    pub fn try_pack(ty: TensorType, rows: usize, cols: usize, bytes: &[u8]) -> std::io::Result<Option<PackedMatrix>> {
        let mut m = PackedMatrix::empty(ty, rows, cols)?;
        if let Some(m) = m.as_mut() {
            m.fill(bytes);
        }
        Ok(m)
    }

    /// The memory of a `rows` × `cols` matrix's packed copy, zeroed (to be
    /// [`PackedMatrix::fill`]ed), or the system's error when it refuses it;
    /// `None` for a type without a packed layout.
    pub fn empty(ty: TensorType, rows: usize, cols: usize) -> std::io::Result<Option<PackedMatrix>> {
        let Some(format) = PackedFormat::of(ty) else { return Ok(None) };
        let blocks = cols / format.block_elements();
        let data = super::AnonBytes::zeroed(rows.div_ceil(TILE_ROWS) * blocks * format.block_bytes())?;
        Ok(Some(PackedMatrix { format, rows, blocks, data }))
    }

    /// Packs the matrix's row-major `bytes` (as the file holds them) into its tiles.
    pub fn fill(&mut self, bytes: &[u8]) {
        let (format, rows, tile_bytes) = (self.format, self.rows, self.tile_bytes());
        let src_block = format.facts().file_block_bytes;
        let src_row = self.blocks * src_block;
        for (i, tile) in self.data.chunks_exact_mut(tile_bytes).enumerate() {
            for r in 0..TILE_ROWS.min(rows - TILE_ROWS * i) {
                let src = &bytes[(TILE_ROWS * i + r) * src_row..][..src_row];
                for (b, blk) in src.chunks_exact(src_block).enumerate() {
                    pack_block(format, blk, r, &mut tile[b * format.block_bytes()..][..format.block_bytes()]);
                }
            }
        }
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

/// Where chunk `c` of a Q4_K tile block starts: its scales (`[row][2]`, 16
/// bytes), mins (16 bytes), then its 8 nibble vectors; the block's 8 `d` and
/// 8 `dmin` come first. Each chunk is read front to back.
pub fn q4k_chunk(c: usize) -> usize {
    32 + 288 * c
}

/// Where chunk `c` of a Q6_K tile block starts: its two pairs of scales
/// (`[row][2]`, 16 bytes each), its 4 high-bit vectors, then its 8 nibble
/// vectors; the block's 8 `d` come first.
pub fn q6k_chunk(c: usize) -> usize {
    16 + 416 * c
}

/// Where byte `j` of row `r` of element group `g` (0..16) of a chunk lies
/// among the chunk's nibble vectors, and whether in the high nibble.
fn nibble_at(g: usize, r: usize, j: usize) -> (usize, bool) {
    (32 * (g % 8) + 4 * r + j, g >= 8)
}

/// Writes GGUF block `src` as row `r` of a tile's block `dst`.
fn pack_block(format: PackedFormat, src: &[u8], r: usize, dst: &mut [u8]) {
    match format {
        PackedFormat::Q4K => {
            dst[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
            dst[16 + 2 * r..18 + 2 * r].copy_from_slice(&src[2..4]);
            for j in 0..8 {
                let (sc, m) = kquants::scale_min(j, &src[4..16]);
                dst[q4k_chunk(j / 2) + 2 * r + j % 2] = sc;
                dst[q4k_chunk(j / 2) + 16 + 2 * r + j % 2] = m;
            }
            let q = kquants::q45k_values(src, false);
            for (e, &v) in q.iter().enumerate() {
                let (at, high) = nibble_at(e % 64 / 4, r, e % 4);
                dst[q4k_chunk(e / 64) + 32 + at] |= if high { v << 4 } else { v };
            }
        }
        PackedFormat::Q6K => {
            dst[2 * r..2 * r + 2].copy_from_slice(&src[208..210]);
            let (q, sc) = kquants::q6k_values(src);
            for (s, &v) in sc.iter().enumerate() {
                dst[q6k_chunk(s / 4) + 16 * (s % 4 / 2) + 2 * r + s % 2] = v as u8;
            }
            for (e, &v) in q.iter().enumerate() {
                let raw = (v + 32) as u8;
                let (c, g, j) = (e / 64, e % 64 / 4, e % 4);
                let (at, high) = nibble_at(g, r, j);
                dst[q6k_chunk(c) + 160 + at] |= if high { (raw & 0x0F) << 4 } else { raw & 0x0F };
                dst[q6k_chunk(c) + 32 + 32 * (g % 4) + 4 * r + j] |= (raw >> 4) << (2 * (g / 4));
            }
        }
        PackedFormat::Q5_0 => {
            dst[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
            let qh = u32::from_le_bytes([src[2], src[3], src[4], src[5]]);
            for e in 0..QK {
                let nibble = if e < 16 { src[6 + e] & 0x0F } else { src[6 + e - 16] >> 4 };
                let (v, j) = (e / 4, e % 4);
                dst[16 + 4 * r + j] |= (((qh >> e) & 1) as u8) << v;
                dst[48 + 32 * (v % 4) + 4 * r + j] |= if v < 4 { nibble } else { nibble << 4 };
            }
        }
        PackedFormat::Q8_0 => {
            dst[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
            for e in 0..QK {
                dst[16 + 32 * (e / 4) + 4 * r + e % 4] = src[2 + e];
            }
        }
    }
}

/// The quants of block `b` of row `r` of a Q5_0 or Q8_0 tile, as signed
/// values: the scalar decoding of the layout.
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
            PackedFormat::Q4K | PackedFormat::Q6K => panic!("block_values reads Q5_0 and Q8_0 tiles; see k_block"),
        }
    })
}

/// Row `r` of block `b` of a Q4_K or Q6_K tile, decoded: the scales `d` and
/// `dmin` (0 for Q6_K), the 256 quants (Q4_K: 0..16; Q6_K: q − 32), and the
/// sub-block scales and mins (8 each for Q4_K; 16 scales for Q6_K).
#[derive(Debug, Clone, PartialEq)]
pub struct KBlock {
    /// Super-block scale.
    pub d: f32,
    /// Super-block scale of the mins.
    pub dmin: f32,
    /// The quants, in element order.
    pub q: [i8; QK_K],
    /// Sub-block scales (Q4_K: the first 8).
    pub scales: [i32; 16],
    /// Sub-block mins (Q4_K; none for Q6_K).
    pub mins: [i32; 8],
}

/// The scalar decoding of row `r` of block `b` of a K-quant tile.
pub fn k_block(format: PackedFormat, tile: &[u8], b: usize, r: usize) -> KBlock {
    let blk = &tile[b * format.block_bytes()..][..format.block_bytes()];
    let f16 = |at: usize| half::f16::from_le_bytes([blk[at], blk[at + 1]]).to_f32();
    let nibble = |chunk: fn(usize) -> usize, skip: usize, e: usize| {
        let (at, high) = nibble_at(e % 64 / 4, r, e % 4);
        let byte = blk[chunk(e / 64) + skip + at];
        if high {
            byte >> 4
        } else {
            byte & 0x0F
        }
    };
    match format {
        PackedFormat::Q4K => KBlock {
            d: f16(2 * r),
            dmin: f16(16 + 2 * r),
            q: std::array::from_fn(|e| nibble(q4k_chunk, 32, e) as i8),
            scales: std::array::from_fn(|j| if j < 8 { i32::from(blk[q4k_chunk(j / 2) + 2 * r + j % 2]) } else { 0 }),
            mins: std::array::from_fn(|j| i32::from(blk[q4k_chunk(j / 2) + 16 + 2 * r + j % 2])),
        },
        PackedFormat::Q6K => KBlock {
            d: f16(2 * r),
            dmin: 0.0,
            q: std::array::from_fn(|e| {
                let (c, g, j) = (e / 64, e % 64 / 4, e % 4);
                let high = (blk[q6k_chunk(c) + 32 + 32 * (g % 4) + 4 * r + j] >> (2 * (g / 4))) & 3;
                (nibble(q6k_chunk, 160, e) | (high << 4)) as i8 - 32
            }),
            scales: std::array::from_fn(|s| i32::from(blk[q6k_chunk(s / 4) + 16 * (s % 4 / 2) + 2 * r + s % 2] as i8)),
            mins: [0; 8],
        },
        PackedFormat::Q5_0 | PackedFormat::Q8_0 => panic!("k_block reads Q4_K and Q6_K tiles; see block_values"),
    }
}

/// The scale of block `b` of row `r` of a tile.
pub fn block_scale(format: PackedFormat, tile: &[u8], b: usize, r: usize) -> f32 {
    let at = b * format.block_bytes() + 2 * r;
    half::f16::from_le_bytes([tile[at], tile[at + 1]]).to_f32()
}

/// One row of Q8_0 or Q8_K activations as the packed kernels read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActRow {
    /// The quants, block after block (each in −127..=127, as quantization makes them).
    pub q: Vec<i8>,
    /// Their absolute values (Q8_0 rows only: the Q8_0 weight kernel reads them).
    pub abs: Vec<u8>,
    /// Each quant plus 128 (Q8_0 rows only): the unsigned operand of the AVX-512
    /// whole-block kernels, whose weights are the signed one.
    pub biased: Vec<u8>,
    /// Each block's scale `d`.
    pub d: Vec<f32>,
    /// Each 32 quants' sum.
    pub sum32: Vec<i32>,
    /// −16 times each 4 quants' sum (Q8_0 rows only): the offset of 16 that
    /// the Q5_0 kernels take off each lane of unsigned quants' products.
    pub offset4: Vec<i32>,
    /// Each 16 quants' sum (Q8_K's `bsums`; Q8_K rows only), as the K-quant kernels broadcast them in pairs.
    pub sum16: Vec<i16>,
}

impl ActRow {
    /// Fills `self` from a row of Q8_0 or Q8_K blocks (`ty`), reusing its buffers.
    pub fn fill(&mut self, ty: TensorType, act: &[u8]) {
        self.q.clear();
        self.abs.clear();
        self.biased.clear();
        self.d.clear();
        self.sum32.clear();
        self.offset4.clear();
        self.sum16.clear();
        let (block, quants) = match ty {
            TensorType::Q8_0 => (34, 2..34),
            TensorType::Q8K => (292, 4..260),
            _ => panic!("activation rows are Q8_0 or Q8_K, not {ty}"),
        };
        for blk in act.chunks_exact(block) {
            self.d.push(match ty {
                TensorType::Q8_0 => half::f16::from_le_bytes([blk[0], blk[1]]).to_f32(),
                _ => f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]),
            });
            let q = &blk[quants.clone()];
            self.q.extend(q.iter().map(|&x| x as i8));
            self.sum32.extend(q.chunks_exact(32).map(|c| c.iter().map(|&x| i32::from(x as i8)).sum::<i32>()));
            match ty {
                TensorType::Q8_0 => {
                    self.abs.extend(q.iter().map(|&x| (x as i8).unsigned_abs()));
                    self.biased.extend(q.iter().map(|&x| x ^ 0x80));
                    self.offset4
                        .extend(q.chunks_exact(4).map(|c| -16 * c.iter().map(|&x| i32::from(x as i8)).sum::<i32>()));
                }
                _ => self.sum16.extend(q.chunks_exact(16).map(|c| c.iter().map(|&x| i16::from(x as i8)).sum::<i16>())),
            }
        }
    }

    /// The activation row of `ty` blocks `act`.
    pub fn of(ty: TensorType, act: &[u8]) -> ActRow {
        let mut a = ActRow::default();
        a.fill(ty, act);
        a
    }

    /// Blocks in the row.
    pub fn blocks(&self) -> usize {
        self.d.len()
    }
}

/// The scalar tile product: the eight rows of tile `tile` · `act`, each row
/// summed block by block exactly as the scalar reference
/// ([`crate::quant::dot_in`]) sums a GGUF row in `order`, which the fast
/// kernels reproduce bit for bit.
pub fn tile_dot_scalar(
    format: PackedFormat,
    tile: &[u8],
    blocks: usize,
    act: &ActRow,
    order: quant::Order,
) -> [f32; TILE_ROWS] {
    let dot = |q: &[i8], a: &[i8]| q.iter().zip(a).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum::<i32>();
    let batch = order == quant::Order::Batch;
    std::array::from_fn(|r| match format {
        PackedFormat::Q5_0 | PackedFormat::Q8_0 => {
            let mut sum = quant::BlockSum::new(batch);
            for b in 0..blocks {
                let sums = quant::q0_lanes(&block_values(format, tile, b, r), &act.q[QK * b..][..QK]);
                sum.add(block_scale(format, tile, b, r) * act.d[b], sums);
            }
            sum.total()
        }
        PackedFormat::Q4K => {
            let (mut acc, mut acc_min) = (0.0f32, 0.0f32);
            for b in 0..blocks {
                let k = k_block(format, tile, b, r);
                let a = &act.q[QK_K * b..][..QK_K];
                let (d, dmin) = (k.d * act.d[b], k.dmin * act.d[b]);
                let sub = |j: usize| k.scales[j] * dot(&k.q[32 * j..][..32], &a[32 * j..][..32]);
                let min = |j: usize| k.mins[j] * act.sum32[8 * b + j];
                // Fused multiply-adds per pair of sub-blocks (batch) or per block.
                let step = if batch { 2 } else { 8 };
                for g in (0..8).step_by(step) {
                    acc = ((g..g + step).map(sub).sum::<i32>() as f32).mul_add(d, acc);
                    acc_min = ((g..g + step).map(min).sum::<i32>() as f32).mul_add(dmin, acc_min);
                }
            }
            acc - acc_min
        }
        PackedFormat::Q6K => {
            let (mut lanes, mut acc) = (quant::Lanes::default(), 0.0f32);
            for b in 0..blocks {
                let k = k_block(format, tile, b, r);
                let bsums: [i32; 16] = std::array::from_fn(|j| i32::from(act.sum16[16 * b + j]));
                let sums = kquants::q6k_lanes(&k.q, &k.scales, &act.q[QK_K * b..][..QK_K], &bsums);
                if batch {
                    acc = (k.d * sums.iter().sum::<i32>() as f32).mul_add(act.d[b], acc);
                } else {
                    lanes.add_block(act.d[b] * k.d, sums);
                }
            }
            if batch {
                acc
            } else {
                lanes.sum()
            }
        }
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
        assert!(PackedMatrix::pack(TensorType::Q4_0, 1, 32, &[0; 18]).is_none());
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
            let got = tile_dot_scalar(p.format, p.tile(0), 9, &ActRow::of(TensorType::Q8_0, &a), quant::Order::Row);
            let row = ty.row_bytes(cols).unwrap();
            for r in 0..rows {
                assert_eq!(got[r].to_bits(), quant::dot(ty, &w[r * row..][..row], &a).to_bits(), "{ty} row {r}");
            }
        }
    }

    #[test]
    fn the_format_table_has_a_row_per_format_in_order() {
        for (i, f) in FORMATS.iter().enumerate() {
            assert_eq!(f.format as usize, i);
            assert_eq!(PackedFormat::of(f.tensor_type), Some(f.format));
        }
        assert_eq!(PackedFormat::of(TensorType::F32), None);
    }

    #[test]
    fn activation_rows_hold_quants_scales_and_sums() {
        let x: Vec<f32> = (0..96).map(|i| (i as f32 - 40.0) / 7.0).collect();
        let mut a = vec![0u8; 3 * 34];
        quant::quantize(TensorType::Q8_0, &x, &mut a).unwrap();
        let s = ActRow::of(TensorType::Q8_0, &a);
        assert_eq!((s.blocks(), s.q.len(), s.abs.len()), (3, 96, 96));
        for b in 0..3 {
            let blk = &a[34 * b..34 * b + 34];
            assert_eq!(s.d[b], half::f16::from_le_bytes([blk[0], blk[1]]).to_f32());
            assert_eq!(s.sum32[b], blk[2..].iter().map(|&q| i32::from(q as i8)).sum::<i32>());
            for g in 0..8 {
                assert_eq!(
                    s.offset4[8 * b + g],
                    -16 * blk[2 + 4 * g..6 + 4 * g].iter().map(|&q| i32::from(q as i8)).sum::<i32>()
                );
            }
            for j in 0..32 {
                assert_eq!((s.q[32 * b + j], s.abs[32 * b + j]), (blk[2 + j] as i8, (blk[2 + j] as i8).unsigned_abs()));
            }
        }
    }
}
