//! The transformer's elementwise and reduction operations (the scalar
//! reference the fast kernels match bit for bit), written to follow
//! ggml's arithmetic (f64 accumulation for norms, RoPE angles
//! advanced by repeated multiplication in f32).

/// RMSNorm of `x` in place, then scaled elementwise by `weight`.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    // Squares in f32, summed in f64, as ggml does.
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, w) in x.iter_mut().zip(weight) {
        *v = (*v * scale) * w;
    }
}

/// Lanes of the vector unit whose exponential [`exp_lane`] reproduces.
pub const EXP_LANES: usize = 8;

/// e^x as one lane of llama.cpp's vectorized exponential on x86 (`ggml_v_expf`,
/// the Arm optimized-routines method: x = n·ln 2 + b with n rounded through a
/// shifter, e^b from a degree-5 polynomial, 2^n put in the exponent bits),
/// operation for operation, so equal to it bit for bit. Within 2 ulp of e^x.
pub fn exp_lane(x: f32) -> f32 {
    const SHIFTER: f32 = 12582912.0; // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3FB8_AA3B), SHIFTER); // log2(e)
    let n = z - SHIFTER;
    let b = (-n).mul_add(f32::from_bits(0x35BF_BE8E), (-n).mul_add(f32::from_bits(0x3F31_7200), x)); // ln 2, two parts
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let [p0, p1, p2, p3, p4] = [0x3C07_2010, 0x3D2B_9F17, 0x3E2A_AF33, 0x3EFF_FEDB, 0x3F7F_FFF6].map(f32::from_bits);
    let j = p0.mul_add(b, p1).mul_add(u, p2.mul_add(b, p3)).mul_add(u, p4 * b);
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    // 2^n outside the normal exponent range: scale in two steps (or saturate).
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7F00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// SiLU(gate) · up, written into `gate`, for rows of `row` elements, as
/// llama.cpp's CPU backend computes it: each row's elements in whole groups of
/// [`EXP_LANES`] with its vectorized exponential ([`exp_lane`]), the rest of the
/// row with the C library's.
pub fn swiglu(gate: &mut [f32], up: &[f32], row: usize) {
    swiglu_rows(gate, up, row, &|g, u| {
        for (g, u) in g.iter_mut().zip(u) {
            *g = silu_lane(*g) * u;
        }
    });
}

/// SiLU of one lane as llama.cpp's vectorized SiLU computes it.
pub fn silu_lane(x: f32) -> f32 {
    x / (1.0 + exp_lane(0.0 - x))
}

/// [`swiglu`] with `vectored` computing the whole groups of [`EXP_LANES`]
/// (given matching pieces of `gate` and `up`): how a fast kernel plugs in.
pub fn swiglu_rows(gate: &mut [f32], up: &[f32], row: usize, vectored: &dyn Fn(&mut [f32], &[f32])) {
    for (g, u) in gate.chunks_mut(row).zip(up.chunks(row)) {
        let split = g.len() - g.len() % EXP_LANES;
        let (g_vec, g_tail) = g.split_at_mut(split);
        vectored(g_vec, &u[..split]);
        for (g, u) in g_tail.iter_mut().zip(&u[split..]) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    }
}

/// Per-position RoPE angles: `cos`/`sin` of `pos * base^(-2i/dim)` for `i < dim/2`.
pub fn rope_angles(pos: usize, dim: usize, base: f32, cos: &mut [f32], sin: &mut [f32]) {
    let theta_scale = base.powf(-2.0 / dim as f32);
    let mut theta = pos as f32;
    for i in 0..dim / 2 {
        cos[i] = theta.cos();
        sin[i] = theta.sin();
        theta *= theta_scale;
    }
}

/// NEOX-style rotary embedding of every head in `x` (heads of `dim` contiguous
/// values): element `i` pairs with element `i + dim/2`. Each rotated value is
/// one fused multiply-add, as llama.cpp's x86 build computes it (its compiler
/// fuses `a·cos − b·sin` as `fma(a, cos, −(b·sin))` and `a·sin + b·cos` as
/// `fma(a, sin, b·cos)`).
pub fn rope_neox(x: &mut [f32], dim: usize, cos: &[f32], sin: &[f32]) {
    let half = dim / 2;
    for head in x.chunks_exact_mut(dim) {
        for i in 0..half {
            let (a, b) = (head[i], head[i + half]);
            head[i] = a.mul_add(cos[i], -(b * sin[i]));
            head[i + half] = a.mul_add(sin[i], b * cos[i]);
        }
    }
}

/// Words of a same-fill scan compared per step: 32 words (256 bytes) OR-ed
/// together without a branch, which the compiler turns into vector compares.
const WORDS_PER_STEP: usize = 32;

/// The 8-byte word `bytes` repeats when every word of it is the same (a page
/// that is all one value, zeros included), else `None` (also for no bytes):
/// the reference of [`crate::kernels::Kernels::same_fill`]. Scans 256 bytes per
/// step and stops at the first step that differs.
pub fn same_fill(bytes: &[u8]) -> Option<u64> {
    same_fill_by(bytes, &|words: &[u8], first: u64| {
        let (words, _) = words.as_chunks::<8>();
        let differs = |ws: &[[u8; 8]]| ws.iter().fold(0u64, |acc, w| acc | (u64::from_ne_bytes(*w) ^ first)) != 0;
        let (steps, rest) = words.as_chunks::<WORDS_PER_STEP>();
        steps.iter().any(|s| differs(s)) || differs(rest)
    })
}

/// [`same_fill`] with the scan of the whole words given: `differs(words,
/// first)` tells whether any 8-byte word of `words` (a multiple of 8 bytes)
/// is not `first`.
pub fn same_fill_by(bytes: &[u8], differs: &dyn Fn(&[u8], u64) -> bool) -> Option<u64> {
    let (words, tail) = bytes.as_chunks::<8>();
    let first = *words.first()?;
    if tail.iter().zip(first).any(|(&a, b)| a != b) {
        return None;
    }
    let word = u64::from_ne_bytes(first);
    match differs(&bytes[..8 * words.len()], word) {
        true => None,
        false => Some(word),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lane_exponential_is_within_two_ulp_of_exp() {
        for i in -8700..8800 {
            let x = i as f32 * 0.01;
            let (got, want) = (exp_lane(x), f64::from(x).exp());
            let ulp = f64::from(f32::EPSILON) * want;
            assert!((f64::from(got) - want).abs() <= 2.0 * ulp, "exp({x}) = {got}, want {want}");
        }
        // Past the normal range: underflow towards 0, overflow to infinity.
        assert!(exp_lane(-100.0) < 1e-38 && exp_lane(-200.0) == 0.0);
        assert_eq!((exp_lane(89.0), exp_lane(200.0)), (f32::INFINITY, f32::INFINITY));
    }

    #[test]
    fn swiglu_takes_the_row_tail_through_the_c_library() {
        // 13-element rows: 8 lanes by exp_lane, 5 by f32::exp.
        let gate: Vec<f32> = (0..26).map(|i| i as f32 * 0.37 - 4.0).collect();
        let up = vec![1.0f32; 26];
        let mut y = gate.clone();
        swiglu(&mut y, &up, 13);
        for (i, (&g, &y)) in gate.iter().zip(&y).enumerate() {
            let want = if i % 13 < 8 { silu_lane(g) } else { g / (1.0 + (-g).exp()) };
            assert_eq!(y.to_bits(), want.to_bits(), "element {i}");
        }
    }

    #[test]
    fn rms_norm_of_zeros_is_finite() {
        let mut x = [0.0f32; 8];
        rms_norm(&mut x, &[1.0; 8], 1e-6);
        assert!(x.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn rms_norm_matches_hand_computation() {
        let mut x = [3.0f32, 4.0];
        rms_norm(&mut x, &[1.0, 2.0], 0.0);
        let r = (12.5f32).sqrt();
        assert!((x[0] - 3.0 / r).abs() < 1e-6 && (x[1] - 8.0 / r).abs() < 1e-6);
    }

    #[test]
    fn swiglu_matches_formula() {
        let mut g = [1.0f32, -2.0];
        swiglu(&mut g, &[3.0, 0.5], 2);
        let silu = |v: f32| v / (1.0 + (-v).exp());
        assert_eq!(g, [silu(1.0) * 3.0, silu(-2.0) * 0.5]);
    }

    #[test]
    fn rope_matches_analytic_rotation() {
        let (dim, base, pos) = (8, 10_000.0f32, 7);
        let (mut cos, mut sin) = (vec![0.0; dim / 2], vec![0.0; dim / 2]);
        rope_angles(pos, dim, base, &mut cos, &mut sin);
        let x: Vec<f32> = (0..dim).map(|i| i as f32 + 1.0).collect();
        let mut y = x.clone();
        rope_neox(&mut y, dim, &cos, &sin);
        for i in 0..dim / 2 {
            let theta = pos as f64 * f64::from(base).powf(-2.0 * i as f64 / dim as f64);
            let (a, b) = (f64::from(x[i]), f64::from(x[i + dim / 2]));
            let (ya, yb) = (a * theta.cos() - b * theta.sin(), a * theta.sin() + b * theta.cos());
            assert!((f64::from(y[i]) - ya).abs() < 1e-4 && (f64::from(y[i + dim / 2]) - yb).abs() < 1e-4, "pair {i}");
        }
        // Rotation preserves the norm of each pair.
        let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((n(&x) - n(&y)).abs() < 1e-3);
    }
}
