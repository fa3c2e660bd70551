//! AVX-VNNI kernels: the AVX2 set, with the tile kernels that AVX-512 VNNI
//! shares ([`super::vnni`]) compiled for the VEX-encoded `vpdpbusd` and
//! `vpdpwssd`, for CPUs that have AVX-VNNI but no AVX-512. Each equals the
//! scalar reference bit for bit, as its AVX-512 twin does.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::avx2::bcast4;
use super::packed::{ActRow, PackedFormat, TILE_ROWS};

vnni_tile_kernels!("avx2,fma,f16c,avxvnni", _mm256_dpbusd_avx_epi32, _mm256_dpwssd_avx_epi32, "AVX-VNNI");

/// Σ a[i]·b[i] of unsigned × signed bytes by 256-bit `vpdpbusd`: the int8
/// peak of these kernels, for the compute probe. Lengths must be equal and a
/// multiple of 128.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub fn dot_u8_i8(a: &[u8], b: &[i8]) -> i32 {
    super::avx2::sum_byte_products(a, b, |s, u, v| _mm256_dpbusd_avx_epi32(s, u, v))
}
