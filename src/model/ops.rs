//! The transformer's elementwise and reduction operations, written to follow
//! ggml's arithmetic (f64 accumulation for norms and softmax sums, RoPE angles
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

/// Softmax of `x` in place (max-subtracted, f64 sum).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        // All -inf (nothing to attend to) or a NaN/inf input: a uniform
        // distribution over finite entries is meaningless, so report NaN.
        x.fill(if max == f32::NEG_INFINITY { 0.0 } else { f32::NAN });
        return;
    }
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// SiLU(gate) · up, written into `gate`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
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
/// values): element `i` pairs with element `i + dim/2`.
pub fn rope_neox(x: &mut [f32], dim: usize, cos: &[f32], sin: &[f32]) {
    let half = dim / 2;
    for head in x.chunks_exact_mut(dim) {
        for i in 0..half {
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos[i] - b * sin[i];
            head[i + half] = a * sin[i] + b * cos[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn softmax_is_stable_and_normalized() {
        for input in [vec![1e30f32, 1e30, -1e30], vec![-1e30, -1e30], vec![0.0; 5], vec![88.0, 89.0, 90.0]] {
            let mut x = input.clone();
            softmax(&mut x);
            let s: f32 = x.iter().sum();
            assert!(x.iter().all(|v| v.is_finite()) && (s - 1.0).abs() < 1e-5, "{input:?} -> {x:?}");
        }
    }

    #[test]
    fn softmax_with_nan_does_not_hide_it() {
        let mut x = [1.0f32, f32::INFINITY];
        softmax(&mut x);
        assert!(x.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn swiglu_matches_formula() {
        let mut g = [1.0f32, -2.0];
        swiglu(&mut g, &[3.0, 0.5]);
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
