//! Every fast kernel against the scalar reference, on random blocks and on
//! blocks from the real model (the committed quant fixtures).

use super::*;
use crate::gguf::TensorType;
use crate::rng::SplitMix64;
use crate::testing::uniform;

fn random_weights(rng: &mut SplitMix64, ty: TensorType, n: usize) -> Vec<u8> {
    crate::testing::random_weights(rng, ty, n, 3.0, 0.01)
}

fn activations(rng: &mut SplitMix64, ty: TensorType, n: usize, outlier: bool) -> Vec<u8> {
    let mut x: Vec<f32> = (0..n).map(|_| uniform(rng) * 3.0).collect();
    if outlier {
        x[3] = 400.0; // Qwen-like massive activation
    }
    let at = quant::dot_type(ty).unwrap();
    let mut a = vec![0u8; at.row_bytes(n).unwrap()];
    quant::quantize(at, &x, &mut a).unwrap();
    a
}

fn check(kernels: Kernels, ty: TensorType, w: &[u8], a: &[u8]) {
    let want = quant::dot(ty, w, a);
    let got = kernels.dot(ty, w, a);
    let tol = 1e-5 * want.abs().max(1.0);
    assert!((got - want).abs() <= tol, "{ty} {}: {got} vs reference {want}", kernels.name());
}

#[test]
fn fast_kernels_match_the_reference_on_random_blocks() {
    let k = Kernels::detect();
    let mut rng = SplitMix64(11);
    for ty in [TensorType::Q8_0, TensorType::Q5_0, TensorType::Q4K, TensorType::Q6K, TensorType::Q4_0] {
        for n in [256usize, 4864, 896 + 32] {
            if !n.is_multiple_of(ty.block_geometry().unwrap().0) {
                continue;
            }
            for outlier in [false, true] {
                let w = random_weights(&mut rng, ty, n);
                let a = activations(&mut rng, ty, n, outlier);
                check(k, ty, &w, &a);
            }
        }
    }
}

#[test]
fn fast_kernels_match_the_reference_on_model_blocks() {
    let k = Kernels::detect();
    let mut rng = SplitMix64(5);
    let cases: [(TensorType, &[u8]); 4] = [
        (TensorType::Q8_0, include_bytes!("../../tests/fixtures/quant/model_Q8_0.in")),
        (TensorType::Q5_0, include_bytes!("../../tests/fixtures/quant/model_Q5_0.in")),
        (TensorType::Q4K, include_bytes!("../../tests/fixtures/quant/model_Q4_K.in")),
        (TensorType::Q6K, include_bytes!("../../tests/fixtures/quant/model_Q6_K.in")),
    ];
    for (ty, w) in cases {
        let (block, bytes) = ty.block_geometry().unwrap();
        let n = w.len() / bytes * block;
        check(k, ty, w, &activations(&mut rng, ty, n, true));
    }
}

#[test]
fn a_wrong_kernel_would_be_caught() {
    // The comparison itself must be able to fail: a dot with one weight flipped differs.
    let mut rng = SplitMix64(3);
    let ty = TensorType::Q8_0;
    let w = random_weights(&mut rng, ty, 256);
    let a = activations(&mut rng, ty, 256, false);
    let mut bad = w.clone();
    bad[5] = bad[5].wrapping_add(40);
    let r = std::panic::catch_unwind(|| {
        let want = quant::dot(ty, &w, &a);
        let got = Kernels::detect().dot(ty, &bad, &a);
        assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0));
    });
    assert!(r.is_err());
}

#[test]
fn batched_kernels_match_the_reference_row_by_row() {
    let k = Kernels::detect();
    let mut rng = SplitMix64(17);
    for ty in [TensorType::Q8_0, TensorType::Q5_0, TensorType::Q4K, TensorType::Q6K, TensorType::Q4_0] {
        let n = 512;
        let w = random_weights(&mut rng, ty, n);
        // 7 rows: one group of four and a remainder of three.
        let acts: Vec<Vec<u8>> = (0..7).map(|i| activations(&mut rng, ty, n, i == 2)).collect();
        let refs: Vec<&[u8]> = acts.iter().map(Vec::as_slice).collect();
        let mut out = vec![0.0; 7];
        k.dot_many(ty, &w, &refs, &mut out);
        for (t, a) in refs.iter().enumerate() {
            let want = quant::dot(ty, &w, a);
            assert!((out[t] - want).abs() <= 1e-5 * want.abs().max(1.0), "{ty} row {t}: {} vs {want}", out[t]);
        }
    }
}

#[test]
fn the_streaming_sum_matches_the_scalar_sum() {
    let mut rng = SplitMix64(9);
    for n in [0, 1, 15, 16, 17, 1000] {
        let words: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
        assert_eq!(Kernels::detect().sum_words(&words), Kernels::Scalar.sum_words(&words), "n = {n}");
    }
}

#[test]
fn packed_kernels_equal_the_reference_bit_for_bit() {
    use super::packed::{ActRow, PackedMatrix, TILE_ROWS};
    let mut rng = SplitMix64(21);
    for ty in [TensorType::Q5_0, TensorType::Q8_0, TensorType::Q4K, TensorType::Q6K] {
        let block = ty.block_geometry().unwrap().0;
        for (rows, blocks) in [(3usize, 1usize), (8, 3), (13, 9), (16, 28), (9, 152)] {
            let cols = block * blocks.min(if block == 32 { 152 } else { 19 });
            let w = random_weights(&mut rng, ty, rows * cols);
            let p = PackedMatrix::pack(ty, rows, cols, &w).unwrap();
            // 7 activation rows: one group of four and a remainder of three.
            let acts: Vec<Vec<u8>> = (0..7).map(|i| activations(&mut rng, ty, cols, i == 2)).collect();
            let act_rows: Vec<ActRow> = acts.iter().map(|a| ActRow::of(quant::dot_type(ty).unwrap(), a)).collect();
            let refs: Vec<&ActRow> = act_rows.iter().collect();
            let src_row = ty.row_bytes(cols).unwrap();
            for k in [Kernels::Scalar, Kernels::detect()] {
                for tile in 0..p.tiles() {
                    let mut out = vec![f32::NAN; acts.len() * TILE_ROWS];
                    k.tile_dot_many(&p, tile, &refs, &mut out);
                    for (t, a) in acts.iter().enumerate() {
                        for j in 0..TILE_ROWS {
                            let r = tile * TILE_ROWS + j;
                            let want = if r < rows { quant::dot(ty, &w[r * src_row..][..src_row], a) } else { 0.0 };
                            let got = out[t * TILE_ROWS + j];
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{ty} {} row {r} act {t}: {got} vs {want}",
                                k.name()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn probe_kernels_match_the_scalar_sums() {
    let mut rng = SplitMix64(5);
    let a: Vec<u8> = (0..1024).map(|_| (rng.next_u64() % 128) as u8).collect();
    let b: Vec<i8> = (0..1024).map(|_| rng.next_u64() as i8).collect();
    let want: i32 = a.iter().zip(&b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
    assert_eq!(Kernels::detect().dot_u8_i8(&a, &b), want);
    assert_eq!(Kernels::Scalar.dot_u8_i8(&a, &b), want);
    let x: Vec<f32> = (0..1024).map(|_| uniform(&mut rng)).collect();
    let y: Vec<f32> = (0..1024).map(|_| uniform(&mut rng)).collect();
    let exact: f64 = x.iter().zip(&y).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum();
    for k in [Kernels::detect(), Kernels::Scalar] {
        let got = f64::from(k.dot_f32(&x, &y));
        assert!((got - exact).abs() < 1e-3, "{}: {got} vs {exact}", k.name());
    }
}
