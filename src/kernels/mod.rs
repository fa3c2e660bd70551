//! Fast kernels, chosen at run time from what the CPU supports, each checked
//! against the scalar reference in [`crate::quant`].

#[cfg(target_arch = "x86_64")]
mod avx2;
mod pool;

pub use pool::Pool;

use serde::Serialize;

use crate::gguf::TensorType;
use crate::quant;

/// Which implementation computes dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kernels {
    /// The scalar reference ([`crate::quant::dot`]).
    Scalar,
    /// AVX2 + FMA + F16C (x86_64), detected at run time.
    Avx2,
}

/// Whether the CPU has what the AVX2 kernels use.
#[cfg(target_arch = "x86_64")]
fn avx2_available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

impl Kernels {
    /// The fastest implementation this CPU supports.
    pub fn detect() -> Kernels {
        #[cfg(target_arch = "x86_64")]
        if avx2_available() {
            return Kernels::Avx2;
        }
        Kernels::Scalar
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Scalar => "scalar",
            Kernels::Avx2 => "avx2",
        }
    }

    /// Dot product of one weight row of type `ty` with an activation row in
    /// `quant::dot_type(ty)`, by this implementation (the reference for types
    /// it has no kernel for).
    #[inline]
    pub fn dot(self, ty: TensorType, w: &[u8], a: &[u8]) -> f32 {
        match self {
            Kernels::Scalar => quant::dot(ty, w, a),
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2 => {
                assert!(
                    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                    "AVX2 kernels chosen on a CPU without AVX2"
                );
                // SAFETY: the CPU supports AVX2 and FMA (checked just above; the check is cached by std).
                unsafe {
                    match ty {
                        TensorType::Q8_0 => avx2::dot_q8_0_q8_0(w, a),
                        TensorType::Q5_0 => avx2::dot_q5_0_q8_0(w, a),
                        TensorType::Q4K => avx2::dot_q4k_q8k(w, a),
                        TensorType::Q6K => avx2::dot_q6k_q8k(w, a),
                        _ => quant::dot(ty, w, a),
                    }
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernels::Avx2 => quant::dot(ty, w, a),
        }
    }
}

#[cfg(test)]
mod tests;
