//! Fast kernels, chosen at run time from what the CPU supports, each checked
//! against the scalar reference in [`crate::quant`].

#[cfg(target_arch = "x86_64")]
#[macro_use]
mod vnni;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avxvnni;
pub mod cuda;
pub mod ops;
pub mod packed;
mod pool;
#[cfg(test)]
pub(crate) mod test_alloc;

pub use pool::{available_cores, usable_threads, Pool};

/// Zeroed bytes in an anonymous mapping: the packed weights' home, committed
/// page by page as they are written. Not advised for transparent huge pages:
/// where the kernel compacts memory for madvised regions on fault (the default
/// `defrag = madvise`), that stalled two loads in five by 1 to 1.7 s, and
/// steady-state prefill and decode ran no faster with them.
#[derive(Debug)]
pub struct AnonBytes {
    map: memmap2::MmapMut,
    len: usize,
}

impl AnonBytes {
    /// `len` zero bytes, or the system's error when it refuses the mapping
    /// (out of memory, an address-space limit).
    pub fn zeroed(len: usize) -> std::io::Result<AnonBytes> {
        let map = memmap2::MmapMut::map_anon(len.max(1))?;
        Ok(AnonBytes { map, len })
    }
}

impl std::ops::Deref for AnonBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

impl std::ops::DerefMut for AnonBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.map[..self.len]
    }
}

use serde::Serialize;

use crate::gguf::TensorType;
use crate::quant;

/// Which implementation computes dot products: one kernel set, chosen once
/// per process ([`Kernels::detect`]). Only the scalar set can be named in
/// code ([`Kernels::SCALAR`]); the others come from detection
/// ([`Kernels::detect`], [`Kernels::available`], [`Kernels::named`]), which
/// hands out a set only where the CPU runs it, so no kernel re-checks the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels(Set);

impl Serialize for Kernels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The kernel sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Set {
    /// The scalar reference ([`crate::quant::dot`]).
    Scalar,
    /// AVX2 + FMA + F16C (x86_64), detected at run time.
    Avx2,
    /// AVX2 with AVX-VNNI (the VEX-encoded `vpdpbusd` and `vpdpwssd`), for
    /// CPUs without AVX-512 (x86_64), detected at run time.
    AvxVnni,
    /// AVX-512 F/BW/VL with VNNI, over the AVX2 set (x86_64), detected at run time.
    Avx512,
    /// The falsifiability audit's broken kernels: this CPU's kernels with bit
    /// `n` (0: the last) of every output of RoPE, SwiGLU and f16 attention flipped.
    #[cfg(test)]
    FlipBit(u32),
}

/// `x` with bit `n` of every value flipped (the [`Kernels::flip_bit`] hook).
#[cfg(test)]
fn flip_bits(x: &mut [f32], n: u32) {
    x.iter_mut().for_each(|v| *v = f32::from_bits(v.to_bits() ^ (1 << n)));
}

/// Whether the CPU has what the AVX2 kernels use.
#[cfg(target_arch = "x86_64")]
fn avx2_available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

/// Whether the CPU has what the AVX-512 kernels use (the AVX2 set included).
#[cfg(target_arch = "x86_64")]
fn avx512_available() -> bool {
    avx2_available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// Whether the CPU has what the AVX-VNNI kernels use (the AVX2 set included).
#[cfg(target_arch = "x86_64")]
fn avxvnni_available() -> bool {
    avx2_available() && is_x86_feature_detected!("avxvnni")
}

/// The kernel set of this process, fixed by its first use.
static CHOSEN: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();

/// Why a kernel set cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelsError {
    /// No set has that name.
    #[error("unknown kernel set {0:?}: one of scalar, avx2, avx-vnni, avx512")]
    Unknown(String),
    /// This CPU lacks what the set needs.
    #[error("this CPU cannot run the {0} kernels (it has: {1})")]
    Unsupported(&'static str, String),
    /// The process chose another set before.
    #[error("the {0} kernels were already chosen for this process")]
    AlreadyChosen(&'static str),
}

impl Kernels {
    /// The scalar reference, which runs anywhere.
    pub const SCALAR: Kernels = Kernels(Set::Scalar);

    /// Every set, slowest first.
    const ALL: [Kernels; 4] = [Kernels::SCALAR, Kernels(Set::Avx2), Kernels(Set::AvxVnni), Kernels(Set::Avx512)];

    /// The falsifiability audit's broken kernels ([`Set::FlipBit`]).
    #[cfg(test)]
    pub(crate) fn flip_bit(n: u32) -> Kernels {
        Kernels(Set::FlipBit(n))
    }

    /// The kernel set of this process: the one [`Kernels::choose`] fixed, else
    /// the fastest this CPU supports (fixed then). No kernel re-checks the CPU.
    pub fn detect() -> Kernels {
        *CHOSEN.get_or_init(|| *Kernels::available().last().expect("the scalar kernels run anywhere"))
    }

    /// The sets this CPU can run, slowest first (the scalar reference always).
    pub fn available() -> Vec<Kernels> {
        Kernels::ALL.into_iter().filter(|k| k.supported()).collect()
    }

    /// Whether this CPU can run the set.
    pub fn supported(self) -> bool {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Set::Avx2 => avx2_available(),
            #[cfg(target_arch = "x86_64")]
            Set::AvxVnni => avxvnni_available(),
            #[cfg(target_arch = "x86_64")]
            Set::Avx512 => avx512_available(),
            #[cfg(not(target_arch = "x86_64"))]
            Set::Avx2 | Set::AvxVnni | Set::Avx512 => false,
            _ => true,
        }
    }

    /// The set named `name` (`scalar`, `avx2`, `avx-vnni`, `avx512`), when this CPU runs it.
    pub fn named(name: &str) -> Result<Kernels, KernelsError> {
        let k =
            Kernels::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| KernelsError::Unknown(name.into()))?;
        if !k.supported() {
            let has: Vec<&str> = Kernels::available().iter().map(|k| k.name()).collect();
            return Err(KernelsError::Unsupported(k.name(), has.join(", ")));
        }
        Ok(k)
    }

    /// Fixes this process's kernel set to the one named `name` (`--kernels`),
    /// before any model loads; choosing the set already in use is no error.
    pub fn choose(name: &str) -> Result<Kernels, KernelsError> {
        let k = Kernels::named(name)?;
        match *CHOSEN.get_or_init(|| k) {
            got if got == k => Ok(k),
            got => Err(KernelsError::AlreadyChosen(got.name())),
        }
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self.0 {
            Set::Scalar => "scalar",
            Set::Avx2 => "avx2",
            Set::AvxVnni => "avx-vnni",
            Set::Avx512 => "avx512",
            #[cfg(test)]
            Set::FlipBit(_) => "flip-bit",
        }
    }

    /// Dot product of one weight row of type `ty` with an activation row in
    /// `quant::dot_type(ty)`, for a matrix without a packed layout: every
    /// implementation runs the reference (the fast kernels work on tiles).
    #[inline]
    pub fn dot(self, ty: TensorType, w: &[u8], a: &[u8]) -> f32 {
        quant::dot(ty, w, a)
    }

    /// `out[t] = w · acts[t]` for every activation row (`acts` holds
    /// `out.len()` rows back to back), rows `part.first..` of a product of
    /// `part.total` rows, each summed in the order `sums` gives its row.
    pub fn dot_many(
        self,
        ty: TensorType,
        w: &[u8],
        acts: &[u8],
        part: BatchPart,
        sums: quant::SumOrder,
        out: &mut [f32],
    ) {
        let rows = out.len();
        if rows == 0 {
            return;
        }
        for (t, (o, a)) in out.iter_mut().zip(acts.chunks_exact(acts.len() / rows)).enumerate() {
            *o = quant::dot_in(ty, w, a, sums.of(ty, part.first + t, part.total));
        }
    }
}

/// Which rows of a product's activations a kernel call multiplies: rows
/// `first..` of `total`. The order of summation of a row depends on both
/// (llama.cpp's kernels differ with the batch), so a product cut into parts
/// sums as the whole would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPart {
    /// The first row's index in the product.
    pub first: usize,
    /// Rows in the whole product.
    pub total: usize,
}

impl BatchPart {
    /// All `rows` rows of a product.
    pub fn whole(rows: usize) -> BatchPart {
        BatchPart { first: 0, total: rows }
    }
}

impl Kernels {
    /// Whether this implementation computes with [`packed`] weights.
    pub fn uses_packed(self) -> bool {
        matches!(self.0, Set::Avx2 | Set::AvxVnni | Set::Avx512)
    }

    /// The eight rows of tile `tile` of a packed matrix · every activation row:
    /// `out[8t + r]` = row `8 · tile + r` · `acts[t]` (rows past the matrix's
    /// end give 0), each summed in the order `sums` gives row `t` of
    /// `acts.len()`.
    pub fn tile_dot_many(
        self,
        w: &packed::PackedMatrix,
        tile: usize,
        acts: &[packed::ActRow],
        sums: quant::SumOrder,
        out: &mut [f32],
    ) {
        self.tile_dot_part(w, tile, acts, BatchPart::whole(acts.len()), sums, out);
    }

    /// [`Kernels::tile_dot_many`] for rows `part.first..` of a product of
    /// `part.total` activation rows (`part.first` a multiple of four), each
    /// summed as in the whole product. The fast K-quant kernels take the
    /// activations four at a time (as llama.cpp's Q4_K gemm does), the Q5_0
    /// and Q8_0 ones in whole blocks four at a time, else one or (AVX-512) two
    /// at a time; from 16 rows in the batch order, the
    /// AVX-512 gemms unpack the tile once and take them eight (Q4_K: four) at
    /// a time.
    pub fn tile_dot_part(
        self,
        w: &packed::PackedMatrix,
        tile: usize,
        acts: &[packed::ActRow],
        part: BatchPart,
        sums: quant::SumOrder,
        out: &mut [f32],
    ) {
        use packed::TILE_ROWS;
        assert!(part.first.is_multiple_of(4), "a part of a product starts at a multiple of four rows");
        let data = w.tile(tile);
        let ty = w.format.tensor_type();
        let order = |t: usize| sums.of(ty, part.first + t, part.total);
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Set::Avx2 | Set::AvxVnni | Set::Avx512 => {
                use packed::PackedFormat::{Q4K, Q5_0, Q6K, Q8_0};
                // Q5_0 and Q8_0 one activation row at a time: its eight lane accumulators
                // stay in registers (four rows' 32 spill; measured 93-110 vs 79 tok/s
                // prefill), and their order does not depend on the batch.
                let wide = self.0 == Set::Avx512;
                match w.format {
                    // The batch order on AVX-512, many rows: the gemms unpack the tile once for
                    // the rows summed in it (all, but for a remainder under four in llama.cpp's
                    // Q4_K order, which goes on below).
                    _ if wide && order(0) == quant::Order::Batch && acts.len() >= WIDE_GEMM_FROM_ROWS => {
                        let batch = (0..acts.len()).take_while(|&t| order(t) == quant::Order::Batch).count();
                        let (out_batch, out_rest) = out.split_at_mut(batch * TILE_ROWS);
                        // SAFETY: the AVX-512 set exists only where the CPU supports it (`Kernels::supported`).
                        unsafe { avx512_gemm(w.format, data, w.blocks, &acts[..batch], out_batch) };
                        if batch < acts.len() {
                            let rest = BatchPart { first: part.first + batch, total: part.total };
                            self.tile_dot_part(w, tile, &acts[batch..], rest, sums, out_rest);
                        }
                    }
                    // Whole blocks: the weights are decoded once per block for four rows
                    // (two for a remainder of two or three).
                    Q5_0 | Q8_0 if order(0) == quant::Order::Batch => {
                        let fours = acts.len() / 4 * 4;
                        let (out4, rest) = out.split_at_mut(fours * TILE_ROWS);
                        // SAFETY (all three): the set exists only where the CPU supports it (`Kernels::supported`).
                        let one =
                            |a: [&packed::ActRow; 1]| unsafe { x86_q0_tile_whole(self.0, w.format, data, w.blocks, a) };
                        let four =
                            |a: [&packed::ActRow; 4]| unsafe { x86_q0_tile_whole(self.0, w.format, data, w.blocks, a) };
                        let two =
                            |a: [&packed::ActRow; 2]| unsafe { x86_q0_tile_whole(self.0, w.format, data, w.blocks, a) };
                        by_groups(&acts[..fours], out4, four, one);
                        by_groups(&acts[fours..], rest, two, one);
                    }
                    Q5_0 if acts.len() >= if wide { WIDE_UNPACK_FROM_ROWS } else { UNPACK_FROM_ROWS } => UNPACKED
                        .with_borrow_mut(|quants| {
                            quants.resize(w.blocks * avx2::Q5_0_UNPACKED, 0);
                            // SAFETY (every call): a set above the scalar one exists only where the CPU
                            // supports it (`Kernels::supported`), AVX-512 VNNI for `wide`.
                            unsafe { avx2::unpack_q5_0(data, w.blocks, quants) };
                            if wide {
                                // Two rows at a time: their sixteen accumulators fit AVX-512's 32 registers.
                                by_groups::<2>(
                                    acts,
                                    out,
                                    |a| unsafe { avx512::tile_gemm_q5_0(data, quants, w.blocks, a) },
                                    |a| unsafe { avx512::tile_gemm_q5_0(data, quants, w.blocks, a) },
                                );
                                return;
                            }
                            for (a, o) in acts.iter().zip(out.chunks_exact_mut(TILE_ROWS)) {
                                o.copy_from_slice(&unsafe { avx2::tile_gemm_q5_0(data, quants, w.blocks, a) });
                            }
                        }),
                    Q5_0 | Q8_0 => {
                        for (a, o) in acts.iter().zip(out.chunks_exact_mut(TILE_ROWS)) {
                            // SAFETY: a set above the scalar one exists only where the CPU supports
                            // it (`Kernels::supported`), AVX-512 VNNI for `wide`.
                            let rows = unsafe {
                                match wide {
                                    true => avx512::tile_dot(w.format, data, w.blocks, a),
                                    false => avx2::tile_dot(w.format, data, w.blocks, a),
                                }
                            };
                            o.copy_from_slice(&rows);
                        }
                    }
                    Q4K | Q6K => {
                        // The groups of four are the first rows, the rest go one by one:
                        // every row of a group has the order of its first.
                        let (four, one) = (order(0), order(acts.len() - 1));
                        by_groups::<4>(
                            acts,
                            out,
                            // SAFETY (both): the set exists only where the CPU supports it (`Kernels::supported`).
                            |a| unsafe { x86_k_tile_dot(self.0, w.format, data, w.blocks, a, four) },
                            |a| unsafe { x86_k_tile_dot(self.0, w.format, data, w.blocks, a, one) },
                        );
                    }
                }
            }
            _ => {
                for (t, (a, o)) in acts.iter().zip(out.chunks_exact_mut(TILE_ROWS)).enumerate() {
                    o.copy_from_slice(&packed::tile_dot_scalar(w.format, data, w.blocks, a, order(t)));
                }
            }
        }
    }

    /// [`Kernels::tile_dot_part`] for tiles `tile` and `tile + 1` at once,
    /// into `outs[0]` and `outs[1]`, where a kernel takes their sixteen rows
    /// together: AVX-512, Q5_0 and Q8_0, from [`WIDE_GEMM_FROM_ROWS`]
    /// activation rows all in the batch order (one vector instruction then
    /// multiplies four elements of sixteen rows, and a block's sums and scales
    /// fill a vector). `false`, with `outs` untouched, where none does: the
    /// caller runs the tiles one by one.
    pub fn tile_pair_dot_part(
        self,
        w: &packed::PackedMatrix,
        tile: usize,
        acts: &[packed::ActRow],
        part: BatchPart,
        sums: quant::SumOrder,
        outs: [&mut [f32]; 2],
    ) -> bool {
        use packed::{PackedFormat::Q5_0, PackedFormat::Q8_0, TILE_ROWS};
        // The cheap tests first: decode asks for every pair of tiles.
        if self.0 != Set::Avx512 || !matches!(w.format, Q5_0 | Q8_0) || acts.len() < WIDE_GEMM_FROM_ROWS {
            return false;
        }
        let ty = w.format.tensor_type();
        if (0..acts.len()).any(|t| sums.of(ty, part.first + t, part.total) != quant::Order::Batch) {
            return false;
        }
        assert!(tile + 1 < w.tiles(), "tile {tile} has no next tile");
        let [first, second] = outs;
        #[cfg(target_arch = "x86_64")]
        UNPACKED.with_borrow_mut(|quants| {
            let tiles = (w.tile(tile), Some(w.tile(tile + 1)));
            // SAFETY: the AVX-512 set exists only where the CPU supports it (`Kernels::supported`).
            unsafe {
                avx512_q0_gemm(quants, w.format, tiles, w.blocks, acts, |t, rows| {
                    first[TILE_ROWS * t..][..TILE_ROWS].copy_from_slice(&rows[..TILE_ROWS]);
                    second[TILE_ROWS * t..][..TILE_ROWS].copy_from_slice(&rows[TILE_ROWS..]);
                })
            }
        });
        true
    }

    /// Quantizes activations `x` into `out` as the forward pass does
    /// ([`quant::quantize_with`], [`quant::Q8_0Rounding::CpuRuntime`]): the
    /// same code, compiled for this set's vectors, so the same bytes.
    pub fn quantize(self, ty: TensorType, x: &[f32], out: &mut [u8]) -> Result<(), quant::QuantError> {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the AVX-512 set exists only where the CPU supports it (`Kernels::supported`).
            Set::Avx512 => unsafe { avx512::quantize(ty, x, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the AVX2 set exists only where the CPU supports it (`Kernels::supported`).
            Set::Avx2 | Set::AvxVnni => unsafe { avx2::quantize(ty, x, out) },
            _ => quant::quantize_with(ty, x, out, quant::Q8_0Rounding::CpuRuntime),
        }
    }

    /// [`crate::kernels::ops::swiglu`] (rows of `row` elements), equal to it bit
    /// for bit: the fast kernel computes eight lanes at a time.
    pub fn swiglu(self, gate: &mut [f32], up: &[f32], row: usize) {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Set::Avx2 | Set::AvxVnni | Set::Avx512 => {
                // SAFETY: a set above the scalar one exists only where the CPU supports it (`Kernels::supported`).
                crate::kernels::ops::swiglu_rows(gate, up, row, &|g, u| unsafe { avx2::swiglu_lanes(g, u) });
            }
            #[cfg(test)]
            Set::FlipBit(n) => {
                Kernels::detect().swiglu(gate, up, row);
                flip_bits(gate, n);
            }
            _ => crate::kernels::ops::swiglu(gate, up, row),
        }
    }

    /// [`crate::kernels::ops::rope_neox`], equal to it bit for bit: the fast
    /// kernel rotates eight pairs at a time.
    pub fn rope_neox(self, x: &mut [f32], dim: usize, cos: &[f32], sin: &[f32]) {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Set::Avx2 | Set::AvxVnni | Set::Avx512 => {
                // SAFETY: a set above the scalar one exists only where the CPU supports it (`Kernels::supported`).
                unsafe { avx2::rope_neox(x, dim, cos, sin) }
            }
            #[cfg(test)]
            Set::FlipBit(n) => {
                Kernels::detect().rope_neox(x, dim, cos, sin);
                flip_bits(x, n);
            }
            _ => crate::kernels::ops::rope_neox(x, dim, cos, sin),
        }
    }

    /// Grouped-query attention over an f16 KV cache by the fast kernel, equal
    /// bit for bit to [`crate::model::attention::attend_group`]; `false` (and
    /// `out` untouched) when this implementation has none, or none for heads of
    /// `hd` values (the fast kernel takes 32, 64, 128 and 256), and the caller
    /// must run the reference. Row `p` of `keys` and `values` starts at
    /// `p * stride + offset`.
    #[allow(clippy::too_many_arguments)]
    pub fn attend_group_f16(
        self,
        q: &[f32],
        hd: usize,
        keys: &[half::f16],
        values: &[half::f16],
        rows: (usize, usize),
        ctx: usize,
        scale: f32,
        out: &mut [f32],
    ) -> bool {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Set::Avx512 => {
                // SAFETY (every arm): the set exists only where the CPU supports it (`Kernels::supported`).
                unsafe {
                    match hd {
                        32 => avx512::attend_group_f16::<2>(q, keys, values, rows, ctx, scale, out),
                        64 => avx512::attend_group_f16::<4>(q, keys, values, rows, ctx, scale, out),
                        128 => avx512::attend_group_f16::<8>(q, keys, values, rows, ctx, scale, out),
                        256 => avx512::attend_group_f16::<16>(q, keys, values, rows, ctx, scale, out),
                        _ => return false,
                    }
                }
                true
            }
            #[cfg(target_arch = "x86_64")]
            Set::Avx2 | Set::AvxVnni => {
                // SAFETY (every arm): the set exists only where the CPU supports it (`Kernels::supported`).
                unsafe {
                    match hd {
                        32 => avx2::attend_group_f16::<4>(q, keys, values, rows, ctx, scale, out),
                        64 => avx2::attend_group_f16::<8>(q, keys, values, rows, ctx, scale, out),
                        128 => avx2::attend_group_f16::<16>(q, keys, values, rows, ctx, scale, out),
                        256 => avx2::attend_group_f16::<32>(q, keys, values, rows, ctx, scale, out),
                        _ => return false,
                    }
                }
                true
            }
            #[cfg(test)]
            Set::FlipBit(n) => {
                let ran = Kernels::detect().attend_group_f16(q, hd, keys, values, rows, ctx, scale, out);
                if ran {
                    flip_bits(out, n);
                }
                ran
            }
            _ => false,
        }
    }

    /// Σ a[i]·b[i] of unsigned (≤ 127) × signed bytes, exactly: the int8
    /// multiply-add of the quantized kernels, timed by the compute probe.
    /// Lengths must be equal and a multiple of 128.
    pub fn dot_u8_i8(self, a: &[u8], b: &[i8]) -> i32 {
        assert!(a.len() == b.len() && a.len().is_multiple_of(128), "dot_u8_i8 needs equal lengths, a multiple of 128");
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Set::Avx2 => {
                // SAFETY: a set above the scalar one exists only where the CPU supports it (`Kernels::supported`).
                unsafe { avx2::dot_u8_i8(a, b) }
            }
            #[cfg(target_arch = "x86_64")]
            Set::AvxVnni => {
                // SAFETY: the AVX-VNNI set exists only where the CPU supports it (`Kernels::supported`).
                unsafe { avxvnni::dot_u8_i8(a, b) }
            }
            #[cfg(target_arch = "x86_64")]
            Set::Avx512 => {
                // SAFETY: the AVX-512 set exists only where the CPU supports it (`Kernels::supported`).
                unsafe { avx512::dot_u8_i8(a, b) }
            }
            _ => a.iter().zip(b).fold(0i32, |s, (&x, &y)| s.wrapping_add(i32::from(x) * i32::from(y))),
        }
    }

    /// Σ a[i]·b[i] in f32 (summation order differs between implementations):
    /// timed by the compute probe. Lengths must be equal and a multiple of 64.
    pub fn dot_f32(self, a: &[f32], b: &[f32]) -> f32 {
        assert!(a.len() == b.len() && a.len().is_multiple_of(64), "dot_f32 needs equal lengths, a multiple of 64");
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Set::Avx2 | Set::AvxVnni | Set::Avx512 => {
                // SAFETY: a set above the scalar one exists only where the CPU supports it (`Kernels::supported`).
                unsafe { avx2::dot_f32(a, b) }
            }
            _ => a.iter().zip(b).map(|(x, y)| x * y).sum(),
        }
    }

    /// [`ops::same_fill`]: the word `bytes` repeats when it is all one value.
    pub fn same_fill(self, bytes: &[u8]) -> Option<u64> {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Set::Avx2 | Set::AvxVnni | Set::Avx512 => {
                // SAFETY: a set above the scalar one exists only where the CPU supports it (`Kernels::supported`).
                ops::same_fill_by(bytes, &|words, word| unsafe { avx2::differs_from_word(words, word) })
            }
            _ => ops::same_fill(bytes),
        }
    }

    /// Wrapping sum of `words`: a streaming read that measures read bandwidth.
    pub fn sum_words(self, words: &[u64]) -> u64 {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Set::Avx2 | Set::AvxVnni | Set::Avx512 => {
                // SAFETY: a set above the scalar one exists only where the CPU supports it (`Kernels::supported`).
                unsafe { avx2::sum_words(words) }
            }
            _ => words.iter().fold(0u64, |s, &x| s.wrapping_add(x)),
        }
    }
}

/// From how many activation rows a Q5_0 tile is unpacked once for all of them
/// (prefill) rather than as the kernel goes (decode).
#[cfg(target_arch = "x86_64")]
const UNPACK_FROM_ROWS: usize = 8;

/// From how many activation rows the AVX-512 kernels unpack a tile once for
/// all of them (the gemms of prefill). Fewer rows, as in a batched decode step
/// of a few sequences, go through the kernels that decode the tile as they
/// read it: at four rows the unpacking cost more than it saved (`falsify
/// serve`'s output at 4 streams fell from 2.1 to 1.4 times its one stream's).
#[cfg(target_arch = "x86_64")]
const WIDE_GEMM_FROM_ROWS: usize = 16;

/// [`UNPACK_FROM_ROWS`] for the AVX-512 kernels, which take two rows per pass
/// of the unpacked tile: from two rows (a batched decode step of two
/// sequences) the tile is unpacked once, not once per row.
#[cfg(target_arch = "x86_64")]
const WIDE_UNPACK_FROM_ROWS: usize = 2;

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// A tile unpacked for the call's rows (`avx2::unpack_q5_0`, or an AVX-512
    /// gemm's layout), reused from call to call on each thread.
    static UNPACKED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
/// `out[8t + r]` for every activation row `t`: `group` takes the rows `N`
/// at a time, `one` the rest.
fn by_groups<const N: usize>(
    acts: &[packed::ActRow],
    out: &mut [f32],
    group: impl Fn([&packed::ActRow; N]) -> [[f32; packed::TILE_ROWS]; N],
    one: impl Fn([&packed::ActRow; 1]) -> [[f32; packed::TILE_ROWS]; 1],
) {
    use packed::TILE_ROWS;
    each_group(acts, group, one, |t, rows| out[TILE_ROWS * t..][..TILE_ROWS].copy_from_slice(rows));
}

#[cfg(target_arch = "x86_64")]
/// `put(t, results)` for every activation row `t`: `group` takes the rows
/// `N` at a time, `one` the rest, each giving `R` results a row.
fn each_group<const N: usize, const R: usize>(
    acts: &[packed::ActRow],
    group: impl Fn([&packed::ActRow; N]) -> [[f32; R]; N],
    one: impl Fn([&packed::ActRow; 1]) -> [[f32; R]; 1],
    mut put: impl FnMut(usize, &[f32; R]),
) {
    let mut groups = acts.chunks_exact(N);
    for (g, a) in (&mut groups).enumerate() {
        group(std::array::from_fn(|i| &a[i])).iter().enumerate().for_each(|(i, rows)| put(N * g + i, rows));
    }
    let done = acts.len() - groups.remainder().len();
    for (i, a) in groups.remainder().iter().enumerate() {
        put(done + i, &one([a])[0]);
    }
}

/// The AVX-512 gemm of a Q5_0 or Q8_0 tile and the next (`tiles.1`; none:
/// the tile alone) times every row of `acts`, all in the batch order: the
/// tiles are unpacked once into `quants` ([`avx512::unpack_q0_pair`]), then
/// [`avx512::tile_pair_gemm`] takes the rows eight at a time; `put(t, rows)`
/// receives row `t`'s sixteen results (the first tile's, then the next's).
///
/// # Safety
/// The CPU must support the AVX-512 set (`avx512_available()`).
#[cfg(target_arch = "x86_64")]
unsafe fn avx512_q0_gemm(
    quants: &mut Vec<u8>,
    format: packed::PackedFormat,
    tiles: (&[u8], Option<&[u8]>),
    blocks: usize,
    acts: &[packed::ActRow],
    put: impl FnMut(usize, &[f32; 16]),
) {
    quants.resize(blocks * avx512::Q0_PAIR_UNPACKED, 0);
    let quants = &mut quants[..];
    // SAFETY (every call): the caller guarantees the CPU features these kernels enable.
    unsafe {
        avx512::unpack_q0_pair(format, tiles, blocks, quants);
        each_group::<8, 16>(
            acts,
            |a| avx512::tile_pair_gemm(quants, blocks, a),
            |a| avx512::tile_pair_gemm(quants, blocks, a),
            put,
        );
    }
}

/// The AVX-512 gemm for a tile of `format` times every row of `acts`, all in
/// the batch order ([`crate::quant::Order::Batch`]): the tile is unpacked
/// once into the layout the format's gemm reads, which then takes the rows
/// eight at a time (Q4_K: four, whose sums, scales and a pair of sub-blocks'
/// weights fill the 32 vector registers).
///
/// # Safety
/// The CPU must support the AVX-512 set (`avx512_available()`).
#[cfg(target_arch = "x86_64")]
unsafe fn avx512_gemm(
    format: packed::PackedFormat,
    tile: &[u8],
    blocks: usize,
    acts: &[packed::ActRow],
    out: &mut [f32],
) {
    use packed::PackedFormat::{Q4K, Q5_0, Q6K, Q8_0};
    UNPACKED.with_borrow_mut(|quants| {
        // SAFETY (every call): the caller guarantees the CPU features these kernels enable.
        unsafe {
            match format {
                // A tile alone goes as the first of a pair whose second is empty.
                Q5_0 | Q8_0 => avx512_q0_gemm(quants, format, (tile, None), blocks, acts, |t, rows| {
                    out[packed::TILE_ROWS * t..][..packed::TILE_ROWS].copy_from_slice(&rows[..packed::TILE_ROWS])
                }),
                Q4K => {
                    quants.resize(blocks * avx512::Q4K_WIDE_UNPACKED, 0);
                    avx512::unpack_q4k_wide(tile, blocks, quants);
                    by_groups::<4>(
                        acts,
                        out,
                        |a| avx512::tile_gemm_q4k_wide(quants, blocks, a),
                        |a| avx512::tile_gemm_q4k_wide(quants, blocks, a),
                    );
                }
                Q6K => {
                    quants.resize(blocks * avx512::Q6K_WIDE_UNPACKED, 0);
                    avx512::unpack_q6k_wide(tile, blocks, quants);
                    by_groups::<8>(
                        acts,
                        out,
                        |a| avx512::tile_gemm_q6k_wide(tile, quants, blocks, a),
                        |a| avx512::tile_gemm_q6k_wide(tile, quants, blocks, a),
                    );
                }
            }
        }
    });
}

/// The x86 whole-block kernel for a Q5_0 or Q8_0 tile
/// ([`crate::quant::Order::Batch`]) of kernel set `set`: AVX-512 VNNI's,
/// AVX-VNNI's, else AVX2's.
///
/// # Safety
/// The CPU must support `set` (`Kernels::supported`); `set` is one of the x86 sets.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn x86_q0_tile_whole<const N: usize>(
    set: Set,
    format: packed::PackedFormat,
    tile: &[u8],
    blocks: usize,
    acts: [&packed::ActRow; N],
) -> [[f32; packed::TILE_ROWS]; N] {
    // SAFETY: the caller guarantees the CPU features these kernels enable.
    unsafe {
        match set {
            Set::Avx512 => avx512::tile_dot_whole(format, tile, blocks, acts),
            Set::AvxVnni => avxvnni::tile_dot_whole(format, tile, blocks, acts),
            _ => avx2::tile_dot_whole(format, tile, blocks, acts),
        }
    }
}

/// The x86 kernel of set `set` for a K-quant tile's format, summing in
/// `order`: AVX-512 VNNI's, AVX-VNNI's, else AVX2's.
///
/// # Safety
/// The CPU must support `set` (`Kernels::supported`); `set` is one of the x86 sets.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn x86_k_tile_dot<const N: usize>(
    set: Set,
    format: packed::PackedFormat,
    tile: &[u8],
    blocks: usize,
    acts: [&packed::ActRow; N],
    order: quant::Order,
) -> [[f32; packed::TILE_ROWS]; N] {
    use packed::PackedFormat;
    let batch = order == quant::Order::Batch;
    // SAFETY: the caller guarantees the CPU features these kernels enable.
    unsafe {
        match (format, set) {
            (PackedFormat::Q4K, Set::Avx512) => avx512::tile_dot_q4k(tile, blocks, acts, batch),
            (PackedFormat::Q4K, Set::AvxVnni) => avxvnni::tile_dot_q4k(tile, blocks, acts, batch),
            (PackedFormat::Q4K, _) => avx2::tile_dot_q4k(tile, blocks, acts, batch),
            (PackedFormat::Q6K, Set::Avx512) => avx512::tile_dot_q6k(tile, blocks, acts, batch),
            (PackedFormat::Q6K, Set::AvxVnni) => avxvnni::tile_dot_q6k(tile, blocks, acts, batch),
            (PackedFormat::Q6K, _) => avx2::tile_dot_q6k(tile, blocks, acts, batch),
            (PackedFormat::Q5_0 | PackedFormat::Q8_0, _) => unreachable!("Q5_0 and Q8_0 tiles go to tile_dot"),
        }
    }
}

#[cfg(test)]
mod tests;
