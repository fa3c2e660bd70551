//! Tensor element types as GGUF numbers them, with their block geometry.

use std::fmt;

/// A tensor's storage type (the `ggml_type` numbering used in GGUF files).
///
/// Only the types this project can compute with are named; any other id is
/// kept as [`TensorType::Other`] so a file that uses it can still be inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 32-element blocks: f16 scale, 4-bit quants with offset 8.
    Q4_0,
    /// 32-element blocks: f16 scale, 5-bit quants with offset 16.
    Q5_0,
    /// 32-element blocks: f16 scale, int8 quants.
    Q8_0,
    /// 256-element super-blocks, 8 sub-blocks with 6-bit scales and mins, 4-bit quants.
    Q4K,
    /// 256-element super-blocks like Q4_K with a fifth bit per quant.
    Q5K,
    /// 256-element super-blocks, 16 sub-blocks with int8 scales, 6-bit quants.
    Q6K,
    /// 256-element super-blocks: f32 scale, int8 quants, 16-element sums (activations only).
    Q8K,
    /// bfloat16.
    BF16,
    /// A type id this project does not compute with.
    Other(u32),
}

impl TensorType {
    /// Maps a GGUF type id to a type.
    pub fn from_id(id: u32) -> TensorType {
        match id {
            0 => TensorType::F32,
            1 => TensorType::F16,
            2 => TensorType::Q4_0,
            6 => TensorType::Q5_0,
            8 => TensorType::Q8_0,
            12 => TensorType::Q4K,
            13 => TensorType::Q5K,
            14 => TensorType::Q6K,
            15 => TensorType::Q8K,
            30 => TensorType::BF16,
            other => TensorType::Other(other),
        }
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q4_0 => 2,
            TensorType::Q5_0 => 6,
            TensorType::Q8_0 => 8,
            TensorType::Q4K => 12,
            TensorType::Q5K => 13,
            TensorType::Q6K => 14,
            TensorType::Q8K => 15,
            TensorType::BF16 => 30,
            TensorType::Other(id) => id,
        }
    }

    /// Elements per block and bytes per block, or `None` for an unknown type.
    pub fn block_geometry(self) -> Option<(usize, usize)> {
        Some(match self {
            TensorType::F32 => (1, 4),
            TensorType::F16 | TensorType::BF16 => (1, 2),
            TensorType::Q4_0 => (32, 18),
            TensorType::Q5_0 => (32, 22),
            TensorType::Q8_0 => (32, 34),
            TensorType::Q4K => (256, 144),
            TensorType::Q5K => (256, 176),
            TensorType::Q6K => (256, 210),
            TensorType::Q8K => (256, 292),
            TensorType::Other(_) => return None,
        })
    }

    /// Bytes needed for a row of `n` elements, or `None` when `n` is not a
    /// whole number of blocks or the type is unknown.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let (block, bytes) = self.block_geometry()?;
        if !n.is_multiple_of(block) {
            return None;
        }
        (n / block).checked_mul(bytes)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            TensorType::F32 => "F32",
            TensorType::F16 => "F16",
            TensorType::Q4_0 => "Q4_0",
            TensorType::Q5_0 => "Q5_0",
            TensorType::Q8_0 => "Q8_0",
            TensorType::Q4K => "Q4_K",
            TensorType::Q5K => "Q5_K",
            TensorType::Q6K => "Q6_K",
            TensorType::Q8K => "Q8_K",
            TensorType::BF16 => "BF16",
            TensorType::Other(id) => return write!(f, "type#{id}"),
        };
        f.write_str(name)
    }
}
