//! Every fast kernel against the scalar reference, on random blocks and on
//! blocks from the real model (the committed quant fixtures).

use super::*;
use crate::gguf::TensorType;
use crate::quant::SumOrder;
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

/// Every kernel set this CPU runs but the scalar reference: each is checked against it.
fn fast_sets() -> Vec<Kernels> {
    Kernels::available().into_iter().filter(|k| *k != Kernels::SCALAR).collect()
}

/// Row 0 of `w` (one row of `ty`) · `a` by the kernels `k`, through a packed tile.
fn fast_dot(k: Kernels, ty: TensorType, w: &[u8], a: &[u8]) -> f32 {
    use super::packed::{ActRow, PackedMatrix, TILE_ROWS};
    let cols = w.len() / ty.block_geometry().unwrap().1 * ty.block_geometry().unwrap().0;
    let p = PackedMatrix::pack(ty, 1, cols, w).unwrap();
    let act = ActRow::of(quant::dot_type(ty).unwrap(), a);
    let mut out = [0.0f32; TILE_ROWS];
    k.tile_dot_many(&p, 0, std::slice::from_ref(&act), SumOrder::LlamaCpp, &mut out);
    out[0]
}

#[test]
fn fast_kernels_equal_the_reference_on_model_blocks() {
    let mut rng = SplitMix64(5);
    let cases: [(TensorType, &[u8]); 4] = [
        (TensorType::Q8_0, include_bytes!("../../tests/fixtures/quant/model_Q8_0.in")),
        (TensorType::Q5_0, include_bytes!("../../tests/fixtures/quant/model_Q5_0.in")),
        (TensorType::Q4K, include_bytes!("../../tests/fixtures/quant/model_Q4_K.in")),
        (TensorType::Q6K, include_bytes!("../../tests/fixtures/quant/model_Q6_K.in")),
    ];
    for (ty, w) in cases {
        let (block, bytes) = ty.block_geometry().unwrap();
        let a = activations(&mut rng, ty, w.len() / bytes * block, true);
        for k in fast_sets() {
            let (got, want) = (fast_dot(k, ty, w, &a), quant::dot(ty, w, &a));
            assert_eq!(got.to_bits(), want.to_bits(), "{ty} {}: {got} vs reference {want}", k.name());
        }
    }
}

#[test]
fn a_wrong_kernel_would_be_caught() {
    // The comparison itself must be able to fail: a dot with one weight changed differs.
    let mut rng = SplitMix64(3);
    for ty in [TensorType::Q8_0, TensorType::Q5_0, TensorType::Q4K, TensorType::Q6K] {
        let w = random_weights(&mut rng, ty, 256);
        let a = activations(&mut rng, ty, 256, false);
        let mut bad = w.clone();
        let at = bad.len() - 3; // a quant (Q6_K: a scale) in every format
        bad[at] = bad[at].wrapping_add(0x11);
        for k in fast_sets() {
            assert_ne!(fast_dot(k, ty, &bad, &a).to_bits(), quant::dot(ty, &w, &a).to_bits(), "{ty} {}", k.name());
        }
    }
}

#[test]
fn the_streaming_sum_matches_the_scalar_sum() {
    let mut rng = SplitMix64(9);
    for n in [0, 1, 15, 16, 17, 1000] {
        let words: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
        for k in fast_sets() {
            assert_eq!(k.sum_words(&words), Kernels::SCALAR.sum_words(&words), "{} n = {n}", k.name());
        }
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
            // 7 activation rows (one group of four and a remainder of three), as
            // decoding runs them; 11 (two groups and three), as prefill does.
            // 19: two groups of eight and three, as the AVX-512 whole-block gemm runs them;
            // 1 and 3: a decode step, and rows under the gemms' threshold.
            let acts: Vec<Vec<u8>> = (0..19).map(|i| activations(&mut rng, ty, cols, i == 2)).collect();
            let act_rows: Vec<ActRow> = acts.iter().map(|a| ActRow::of(quant::dot_type(ty).unwrap(), a)).collect();
            let src_row = ty.row_bytes(cols).unwrap();
            let runs = Kernels::available().into_iter().flat_map(|k| [(k, 1), (k, 3), (k, 7), (k, 11), (k, 19)]);
            for ((k, n), sums) in runs.flat_map(|r| SumOrder::ALL.map(|o| (r, o))) {
                // Every tile alone, then every tile with the next where a kernel takes two.
                let singles = (0..p.tiles()).map(|tile| (tile, false));
                for (tile, paired) in singles.chain((0..p.tiles().saturating_sub(1)).map(|tile| (tile, true))) {
                    let mut out = vec![f32::NAN; 2 * n * TILE_ROWS];
                    if paired {
                        let (first, second) = out.split_at_mut(n * TILE_ROWS);
                        let ran =
                            k.tile_pair_dot_part(&p, tile, &act_rows[..n], BatchPart::whole(n), sums, [first, second]);
                        let wide =
                            matches!(ty, TensorType::Q5_0 | TensorType::Q8_0) && n >= 16 && sums == SumOrder::Blocks;
                        assert_eq!(ran, k.name() == "avx512" && wide, "{ty} {} {n} rows {sums:?}", k.name());
                        if !ran {
                            continue;
                        }
                    } else {
                        k.tile_dot_many(&p, tile, &act_rows[..n], sums, &mut out[..n * TILE_ROWS]);
                    }
                    for (t, a) in acts.iter().enumerate().take(n) {
                        for j in 0..TILE_ROWS * (1 + usize::from(paired)) {
                            let r = tile * TILE_ROWS + j;
                            let order = sums.of(ty, t, n);
                            let want =
                                if r < rows { quant::dot_in(ty, &w[r * src_row..][..src_row], a, order) } else { 0.0 };
                            let got = out[(j / TILE_ROWS * n + t) * TILE_ROWS + j % TILE_ROWS];
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{ty} {} row {r} act {t} of {n} ({order:?}): {got} vs {want}",
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
    // Whole steps of every set, and lengths that leave a remainder of 128 or 384 bytes.
    for len in [128, 384, 896, 1024] {
        let want: i32 = a[..len].iter().zip(&b[..len]).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
        for k in Kernels::available() {
            assert_eq!(k.dot_u8_i8(&a[..len], &b[..len]), want, "{} over {len} bytes", k.name());
        }
    }
    let x: Vec<f32> = (0..1024).map(|_| uniform(&mut rng)).collect();
    let y: Vec<f32> = (0..1024).map(|_| uniform(&mut rng)).collect();
    let exact: f64 = x.iter().zip(&y).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum();
    for k in Kernels::available() {
        let got = f64::from(k.dot_f32(&x, &y));
        assert!((got - exact).abs() < 1e-3, "{}: {got} vs {exact}", k.name());
    }
}

#[test]
fn the_fast_rope_equals_the_reference_bit_for_bit() {
    let mut rng = SplitMix64(33);
    for dim in [2usize, 12, 16, 40, 64, 128] {
        let mut x: Vec<f32> = (0..3 * dim).map(|_| uniform(&mut rng) * 40.0).collect();
        let (mut cos, mut sin) = (vec![0.0; dim / 2], vec![0.0; dim / 2]);
        crate::kernels::ops::rope_angles(1234, dim, 1e6, &mut cos, &mut sin);
        // A zero result's sign must match too: −0 · cos − (1 · 0) is −0.
        (x[0], x[dim / 2], cos[0], sin[0]) = (-0.0, 1.0, 1.0, 0.0);
        let mut want = x.clone();
        crate::kernels::ops::rope_neox(&mut want, dim, &cos, &sin);
        for k in fast_sets() {
            let mut got = x.clone();
            k.rope_neox(&mut got, dim, &cos, &sin);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{} dim {dim} element {i}: {a} vs {b}", k.name());
            }
        }
    }
}

#[test]
fn the_fast_swiglu_equals_the_reference_bit_for_bit() {
    let mut rng = SplitMix64(21);
    for scale in [0.5f32, 4.0, 30.0, 120.0, 250.0] {
        for row in [8usize, 13, 64] {
            let gate: Vec<f32> = (0..3 * row).map(|_| uniform(&mut rng) * scale).collect();
            let up: Vec<f32> = (0..3 * row).map(|_| uniform(&mut rng) * 2.0).collect();
            let mut want = gate.clone();
            crate::kernels::ops::swiglu(&mut want, &up, row);
            for k in fast_sets() {
                let mut got = gate.clone();
                k.swiglu(&mut got, &up, row);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{} scale {scale} row {row} element {i}: {a} vs {b}",
                        k.name()
                    );
                }
            }
        }
    }
}

/// Under an address-space limit the packed weights' mapping once panicked.
#[test]
fn a_mapping_the_system_refuses_is_an_error() {
    assert!(super::AnonBytes::zeroed(usize::MAX / 2).is_err());
    assert_eq!(super::AnonBytes::zeroed(3).unwrap().len(), 3);
}

#[test]
fn kernel_sets_are_named_and_refused_where_the_cpu_lacks_them() {
    assert_eq!(Kernels::named("scalar"), Ok(Kernels::SCALAR));
    assert!(matches!(Kernels::named("avx9"), Err(KernelsError::Unknown(_))));
    for name in ["avx2", "avx-vnni", "avx512"] {
        match Kernels::named(name) {
            Ok(k) => assert!(k.supported() && Kernels::available().contains(&k) && k.name() == name),
            Err(e) => assert!(matches!(e, KernelsError::Unsupported(..)), "{name}: {e}"),
        }
    }
    // The process's set is fixed once: choosing another is an error, the same one is not.
    let chosen = Kernels::detect();
    assert_eq!(Kernels::choose(chosen.name()), Ok(chosen));
    if chosen != Kernels::SCALAR {
        assert!(matches!(Kernels::choose("scalar"), Err(KernelsError::AlreadyChosen(_))));
    }
}

#[test]
fn every_same_fill_scan_finds_what_the_reference_finds() {
    for len in [0usize, 3, 8, 16, 256, 264, 4096, 4104, 16384 + 3] {
        let mut page = vec![0x3cu8; len];
        let mut cases = vec![page.clone()];
        for at in [0, len / 2, len.saturating_sub(1), len.saturating_sub(9)] {
            if let Some(b) = page.get_mut(at) {
                *b ^= 0x10;
                cases.push(page.clone());
                page[at] ^= 0x10;
            }
        }
        for case in &cases {
            let want = ops::same_fill(case);
            for k in fast_sets() {
                assert_eq!(k.same_fill(case), want, "{} len {len}", k.name());
            }
        }
    }
}

#[test]
fn every_set_quantizes_activations_to_the_reference_bytes() {
    use crate::quant::Q8_0Rounding;
    let mut rng = SplitMix64(33);
    for ty in [TensorType::Q8_0, TensorType::Q8K] {
        // Random rows, a row of zeros, and halves (ties for the rounding).
        let random: Vec<f32> = (0..512).map(|_| 3.0 * uniform(&mut rng)).collect();
        let halves: Vec<f32> = (0..512).map(|i| (i as f32 - 256.0) * 0.5).collect();
        // Two values of the largest magnitude, the negative one first: Q8_K's scale comes from it.
        let mut ties = vec![0.25f32; 512];
        (ties[5], ties[100], ties[300], ties[301]) = (-4.0, 4.0, 2.0, -2.0);
        for x in [random, vec![0.0; 512], halves, ties] {
            let mut want = vec![0u8; ty.row_bytes(x.len()).unwrap()];
            quant::quantize_with(ty, &x, &mut want, Q8_0Rounding::CpuRuntime).unwrap();
            for k in Kernels::available() {
                let mut got = vec![0u8; want.len()];
                k.quantize(ty, &x, &mut got).unwrap();
                assert_eq!(got, want, "{ty} {}", k.name());
            }
        }
    }
}
