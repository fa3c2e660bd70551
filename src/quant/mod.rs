//! Reference (scalar) decoding of the tensor formats real Qwen2.5 GGUF files use,
//! and the quantized dot products that the forward pass is built on.
//!
//! As in llama.cpp, a matrix-vector product with quantized weights first
//! quantizes the activation row into the weight type's *dot type*
//! ([`dot_type`]): Q8_0 for the 32-element formats, Q8_K for K-quants, F16/BF16
//! for half-precision weights. The integer dot product then runs block by block.
//! These scalar functions are the oracle every fast kernel is checked against.

pub(crate) mod kquants;
mod legacy;

pub use legacy::Q8_0Rounding;

use half::{bf16, f16};

use crate::gguf::TensorType;

/// Why a row could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The type has no reference implementation here.
    #[error("tensor type {0} is not supported")]
    Unsupported(TensorType),
    /// The byte length does not match the element count for the type.
    #[error("{ty}: {n} elements need {expected} bytes, got {got}")]
    Length {
        /// The type.
        ty: TensorType,
        /// Elements requested.
        n: usize,
        /// Bytes those need.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

/// Reads the little-endian f16 at byte `at` as f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Rounds `x` to the nearest integer, ties to even, as `f32::round_ties_even`
/// does, for |x| < 2²² (and infinities and NaN): adding and taking off
/// 1.5 · 2²³ leaves no fraction bits, and IEEE addition rounds ties to even.
/// Unlike `round_ties_even` on a CPU without SSE4.1 (the baseline x86-64
/// target), it needs no call into libm, so quantization loops vectorize.
#[inline]
pub(crate) fn round_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    (x + MAGIC) - MAGIC
}

/// Eight f32 accumulators, one per lane of an x86 vector, in the order
/// llama.cpp's x86 build sums its Q4_0/Q5_0/Q8_0 × Q8_0 and Q6_K × Q8_K dot
/// products (its `vec_dot` kernels and its tinyBLAS prefill alike): each
/// block contributes eight exact integer lane sums ([`q0_lanes`],
/// [`kquants::q6k_lanes`]), each added to its lane by a fused multiply-add
/// with the block's scale product, and the lanes are summed at the end as
/// `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Lanes(pub [f32; 8]);

impl Lanes {
    /// Adds one block: `lane[m] = fma(d, sums[m], lane[m])`.
    #[inline]
    pub fn add_block(&mut self, d: f32, sums: [i32; 8]) {
        for (l, s) in self.0.iter_mut().zip(sums) {
            *l = (s as f32).mul_add(d, *l);
        }
    }

    /// The lanes summed in the x86 horizontal-sum order.
    #[inline]
    pub fn sum(self) -> f32 {
        let l = self.0;
        ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
    }
}

/// A row's running sum over Q4_0/Q5_0/Q8_0 blocks: in llama.cpp's lanes
/// ([`Lanes`]), or, in whole blocks ([`Order::Batch`]), each block's 32
/// products as one exact integer sum added by one fused multiply-add,
/// `acc = fma(isum, d, acc)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BlockSum {
    /// Eight lanes, each block's lane sums added lane by lane.
    Lanes(Lanes),
    /// One accumulator, each block added whole.
    Whole(f32),
}

impl BlockSum {
    /// An empty sum, in whole blocks when `whole`.
    pub fn new(whole: bool) -> BlockSum {
        if whole {
            BlockSum::Whole(0.0)
        } else {
            BlockSum::Lanes(Lanes::default())
        }
    }

    /// Adds one block of scale product `d` and lane sums `sums`.
    #[inline]
    pub fn add(&mut self, d: f32, sums: [i32; 8]) {
        match self {
            BlockSum::Lanes(lanes) => lanes.add_block(d, sums),
            BlockSum::Whole(acc) => *acc = (sums.iter().sum::<i32>() as f32).mul_add(d, *acc),
        }
    }

    /// The row's dot product.
    pub fn total(self) -> f32 {
        match self {
            BlockSum::Lanes(lanes) => lanes.sum(),
            BlockSum::Whole(acc) => acc,
        }
    }
}

/// The eight lane sums of one 32-element block of signed weight quants `w`
/// times activation quants `a`: lane `m` = Σ over elements `4m..4m + 4`.
#[inline]
pub(crate) fn q0_lanes(w: &[i8], a: &[i8]) -> [i32; 8] {
    std::array::from_fn(|m| (4 * m..4 * m + 4).map(|e| i32::from(w[e]) * i32::from(a[e])).sum())
}

/// Checks that `bytes` holds exactly `n` elements of `ty`.
pub fn check_len(ty: TensorType, n: usize, bytes: usize) -> Result<(), QuantError> {
    let expected = ty.row_bytes(n).ok_or(QuantError::Unsupported(ty))?;
    if expected != bytes {
        return Err(QuantError::Length { ty, n, expected, got: bytes });
    }
    Ok(())
}

/// Decodes `out.len()` elements of type `ty` from `bytes` into f32.
pub fn dequantize(ty: TensorType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    check_len(ty, out.len(), bytes.len())?;
    match ty {
        TensorType::F32 => {
            for (y, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        TensorType::F16 => {
            for (y, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *y = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        TensorType::BF16 => {
            for (y, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *y = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        TensorType::Q4_0 => legacy::dequantize_q4_0(bytes, out),
        TensorType::Q5_0 => legacy::dequantize_q5_0(bytes, out),
        TensorType::Q8_0 => legacy::dequantize_q8_0(bytes, out),
        TensorType::Q4K => kquants::dequantize_q4k(bytes, out),
        TensorType::Q5K => kquants::dequantize_q5k(bytes, out),
        TensorType::Q6K => kquants::dequantize_q6k(bytes, out),
        TensorType::Q8K | TensorType::Other(_) => return Err(QuantError::Unsupported(ty)),
    }
    Ok(())
}

/// The format activations are converted to before a dot product with weights of type `ty`.
pub fn dot_type(ty: TensorType) -> Result<TensorType, QuantError> {
    Ok(match ty {
        TensorType::F32 => TensorType::F32,
        TensorType::F16 => TensorType::F16,
        TensorType::BF16 => TensorType::BF16,
        TensorType::Q4_0 | TensorType::Q5_0 | TensorType::Q8_0 => TensorType::Q8_0,
        TensorType::Q4K | TensorType::Q5K | TensorType::Q6K => TensorType::Q8K,
        TensorType::Q8K | TensorType::Other(_) => return Err(QuantError::Unsupported(ty)),
    })
}

/// Encodes `x` as type `ty` (an activation format: F32, F16, BF16, Q8_0 or Q8_K)
/// into `out`, which must hold exactly `x.len()` elements of `ty`; Q8_0 rounds
/// as ggml's reference does.
pub fn quantize(ty: TensorType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    quantize_with(ty, x, out, Q8_0Rounding::Reference)
}

/// [`quantize`] with a choice of Q8_0 rounding: the forward pass uses
/// [`Q8_0Rounding::CpuRuntime`], as llama.cpp's CPU backend computes.
#[inline(always)]
pub fn quantize_with(ty: TensorType, x: &[f32], out: &mut [u8], rounding: Q8_0Rounding) -> Result<(), QuantError> {
    check_len(ty, x.len(), out.len())?;
    match ty {
        TensorType::F32 => {
            for (c, v) in out.chunks_exact_mut(4).zip(x) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        TensorType::F16 => {
            for (c, v) in out.chunks_exact_mut(2).zip(x) {
                c.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        TensorType::BF16 => {
            for (c, v) in out.chunks_exact_mut(2).zip(x) {
                c.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        TensorType::Q8_0 => legacy::quantize_q8_0(x, out, rounding),
        TensorType::Q8K => kquants::quantize_q8k(x, out),
        _ => return Err(QuantError::Unsupported(ty)),
    }
    Ok(())
}

/// Which of llama.cpp's x86 kernels a product follows in its order of
/// summation: the kernel depends on how many activation rows it multiplies at
/// once, and the order decides the last bits of the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The one-row kernels: `vec_dot` (Q5_0, Q8_0, Q6_K in eight lanes,
    /// [`Lanes`]) and the repacked gemv (Q4_K: a fused multiply-add per block).
    Row,
    /// The batch kernels: the repacked gemm, four activation rows at a time
    /// (Q4_K: a fused multiply-add per pair of sub-blocks), and the tiled
    /// kernel for eight rows or more (Q6_K: per block `fma(d · isum, d_a,
    /// acc)`). llama.cpp's Q4_0, Q5_0 and Q8_0 batches (tinyBLAS) sum as
    /// [`Order::Row`] does, so [`SumOrder::LlamaCpp`] never picks this order
    /// for them; in it ([`SumOrder::Blocks`]) each of their blocks is one exact
    /// integer sum of its 32 products, added by one fused multiply-add:
    /// `acc = fma(isum, d_w · d_a, acc)`.
    Batch,
}

impl Order {
    /// The order of activation row `row` of a product of `rows` rows with
    /// weights of type `ty`: Q4_K rows in whole groups of four go to the gemm,
    /// the rest to the gemv; Q6_K products of eight rows or more to the tiled
    /// kernel.
    pub fn of(ty: TensorType, row: usize, rows: usize) -> Order {
        let batch = match ty {
            TensorType::Q4K => row < rows - rows % 4,
            TensorType::Q6K => rows >= 8,
            _ => false,
        };
        if batch {
            Order::Batch
        } else {
            Order::Row
        }
    }
}

/// How a product's order of summation is chosen, row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SumOrder {
    /// As llama.cpp's CPU backend sums ([`Order::of`]): the order depends on
    /// the batch's size, so a prompt's logits equal llama.cpp's bit for bit,
    /// and differ from the same tokens decoded one at a time (last bits of
    /// each product, which the layers amplify).
    LlamaCpp,
    /// Every row as a one-row product ([`Order::Row`]), whatever the batch:
    /// a batched pass and a token-by-token decode give the same logits.
    BatchInvariant,
    /// Every row in the batch kernels' order ([`Order::Batch`]), whatever the
    /// batch: one fused multiply-add per block (Q4_K: per pair of
    /// sub-blocks), the fewest float operations, and batch-invariant as
    /// [`SumOrder::BatchInvariant`] is. No llama.cpp kernel sums Q5_0 or Q8_0
    /// this way, so its logits differ from llama.cpp's in the last bits. The
    /// default: its AVX-512 gemms take one multiply-add per block where
    /// llama.cpp's order takes one per four products (prefill about 1.6x as
    /// fast, measured on the 2-core development host; see the README), and
    /// F050, F051 and F054 measured the same agreement with llama.cpp in both.
    #[default]
    Blocks,
}

/// The order of this process's models, fixed by its first use.
static CHOSEN_ORDER: std::sync::OnceLock<SumOrder> = std::sync::OnceLock::new();

impl SumOrder {
    /// Every way of choosing, the default first.
    pub const ALL: [SumOrder; 3] = [SumOrder::LlamaCpp, SumOrder::BatchInvariant, SumOrder::Blocks];

    /// The order named `name` (`llama-cpp`, `batch-invariant`, `blocks`).
    pub fn named(name: &str) -> Result<SumOrder, String> {
        SumOrder::ALL.into_iter().find(|o| o.name() == name).ok_or_else(|| {
            let known: Vec<&str> = SumOrder::ALL.iter().map(|o| o.name()).collect();
            format!("unknown order of summation {name:?}: one of {}", known.join(", "))
        })
    }

    /// Fixes the order every model of this process loads with (`--sums`),
    /// before any loads; choosing the order already in use is no error.
    pub fn choose(name: &str) -> Result<SumOrder, String> {
        let o = SumOrder::named(name)?;
        match *CHOSEN_ORDER.get_or_init(|| o) {
            got if got == o => Ok(o),
            got => Err(format!("the {} order of summation was already chosen for this process", got.name())),
        }
    }

    /// The order models of this process load with: the one
    /// [`SumOrder::choose`] fixed, else the default (fixed then).
    pub fn process() -> SumOrder {
        *CHOSEN_ORDER.get_or_init(SumOrder::default)
    }

    /// The order a server sums in, whose results must not depend on how many
    /// requests share a step: itself where they do not already, else (for
    /// llama.cpp's order) [`SumOrder::Blocks`], the fastest batch-invariant order.
    pub fn for_serving(self) -> SumOrder {
        match self {
            SumOrder::LlamaCpp => SumOrder::Blocks,
            other => other,
        }
    }

    /// Its name in claims and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SumOrder::LlamaCpp => "llama-cpp",
            SumOrder::BatchInvariant => "batch-invariant",
            SumOrder::Blocks => "blocks",
        }
    }

    /// What it does, in a few words for reports.
    pub fn describe(self) -> &'static str {
        match self {
            SumOrder::LlamaCpp => "sums ordered as llama.cpp's kernels for each batch size",
            SumOrder::BatchInvariant => "batch-invariant sums (every row as a one-row product)",
            SumOrder::Blocks => "whole-block sums (one multiply-add per block, batch-invariant)",
        }
    }

    /// The order of activation row `row` of a product of `rows` rows with
    /// weights of type `ty`.
    pub fn of(self, ty: TensorType, row: usize, rows: usize) -> Order {
        match self {
            SumOrder::LlamaCpp => Order::of(ty, row, rows),
            SumOrder::BatchInvariant => Order::Row,
            SumOrder::Blocks => Order::Batch,
        }
    }
}

/// Dot product of one weight row of type `ty` with an activation row already
/// encoded as [`dot_type`]`(ty)`, in [`Order::Row`]. Both must hold the same
/// number of elements.
pub fn dot(ty: TensorType, w: &[u8], a: &[u8]) -> f32 {
    dot_in(ty, w, a, Order::Row)
}

/// [`dot`] summed in `order`.
pub fn dot_in(ty: TensorType, w: &[u8], a: &[u8], order: Order) -> f32 {
    let batch = order == Order::Batch;
    match ty {
        TensorType::F32 => float_dot(w, a, 4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        TensorType::F16 => float_dot(w, a, 2, |c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        TensorType::BF16 => float_dot(w, a, 2, |c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        TensorType::Q4_0 => legacy::dot_q4_0_q8_0(w, a, batch),
        TensorType::Q5_0 => legacy::dot_q5_0_q8_0(w, a, batch),
        TensorType::Q8_0 => legacy::dot_q8_0_q8_0(w, a, batch),
        TensorType::Q4K => kquants::dot_q4k_q8k(w, a, batch),
        TensorType::Q5K => kquants::dot_q5k_q8k(w, a, batch),
        TensorType::Q6K => kquants::dot_q6k_q8k(w, a, batch),
        TensorType::Q8K | TensorType::Other(_) => f32::NAN,
    }
}

fn float_dot(w: &[u8], a: &[u8], width: usize, read: fn(&[u8]) -> f32) -> f32 {
    w.chunks_exact(width).zip(a.chunks_exact(width)).map(|(x, y)| f64::from(read(x)) * f64::from(read(y))).sum::<f64>()
        as f32
}

#[cfg(test)]
mod tests;
