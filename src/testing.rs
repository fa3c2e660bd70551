//! Test support shared by the unit tests: seeded random quantized weights.

use crate::gguf::TensorType;
use crate::rng::SplitMix64;

/// Uniform in [-1, 1).
pub fn uniform(rng: &mut SplitMix64) -> f32 {
    rng.next_f64() as f32 * 2.0 - 1.0
}

/// `n` random weights of type `ty`: F32/F16/Q8_0 by quantizing values in
/// ±`amplitude`; other types as random blocks whose f16 scales lie in
/// [`scale`, 2·`scale`), so every value is finite.
pub fn random_weights(rng: &mut SplitMix64, ty: TensorType, n: usize, amplitude: f32, scale: f32) -> Vec<u8> {
    let bytes = ty.row_bytes(n).expect("n is a whole number of blocks");
    if matches!(ty, TensorType::F32 | TensorType::F16 | TensorType::Q8_0) {
        let x: Vec<f32> = (0..n).map(|_| uniform(rng) * amplitude).collect();
        let mut out = vec![0u8; bytes];
        crate::quant::quantize(ty, &x, &mut out).expect("sizes match");
        return out;
    }
    let (_, block_bytes) = ty.block_geometry().expect("known type");
    let mut out: Vec<u8> = (0..bytes).map(|_| (rng.next_u64() >> 56) as u8).collect();
    let scale_at: &[usize] = match ty {
        TensorType::Q6K => &[208],
        TensorType::Q4K | TensorType::Q5K => &[0, 2],
        _ => &[0],
    };
    for block in out.chunks_exact_mut(block_bytes) {
        for &at in scale_at {
            let s = scale * (1.0 + uniform(rng).abs());
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(s).to_le_bytes());
        }
    }
    out
}

/// The calling thread's `Cpus_allowed_list` (None where /proc does not say):
/// for checking that something leaves the caller's affinity alone.
pub fn cpus_allowed() -> Option<String> {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Cpus_allowed_list")).map(str::to_owned))
}
