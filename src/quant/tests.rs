//! Bit-exactness against fixtures produced by independent references
//! (`scripts/gen-quant-fixtures.py`: gguf-py's `gguf.quants` and llama.cpp's
//! `quantize_row_q8_K_ref`), and dot products checked against dequantization.

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        (
            &include_bytes!(concat!("../../tests/fixtures/quant/", $name, ".in"))[..],
            &include_bytes!(concat!("../../tests/fixtures/quant/", $name, ".out"))[..],
        )
    };
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn assert_dequant_bit_exact(ty: TensorType, (input, expected): (&[u8], &[u8])) {
    let expected = f32s(expected);
    let mut got = vec![0.0; expected.len()];
    dequantize(ty, input, &mut got).unwrap();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(g.to_bits() == e.to_bits() || (g.is_nan() && e.is_nan()), "{ty} element {i}: got {g}, reference {e}");
    }
}

#[test]
fn dequantization_is_bit_exact_on_random_blocks() {
    assert_dequant_bit_exact(TensorType::Q4_0, fixture!("random_Q4_0"));
    assert_dequant_bit_exact(TensorType::Q5_0, fixture!("random_Q5_0"));
    assert_dequant_bit_exact(TensorType::Q8_0, fixture!("random_Q8_0"));
    assert_dequant_bit_exact(TensorType::Q4K, fixture!("random_Q4_K"));
    assert_dequant_bit_exact(TensorType::Q5K, fixture!("random_Q5_K"));
    assert_dequant_bit_exact(TensorType::Q6K, fixture!("random_Q6_K"));
    assert_dequant_bit_exact(TensorType::F16, fixture!("random_F16"));
    assert_dequant_bit_exact(TensorType::BF16, fixture!("random_BF16"));
    assert_dequant_bit_exact(TensorType::F32, fixture!("random_F32"));
}

#[test]
fn dequantization_is_bit_exact_on_real_model_tensors() {
    assert_dequant_bit_exact(TensorType::Q5_0, fixture!("model_Q5_0"));
    assert_dequant_bit_exact(TensorType::Q8_0, fixture!("model_Q8_0"));
    assert_dequant_bit_exact(TensorType::Q4K, fixture!("model_Q4_K"));
    assert_dequant_bit_exact(TensorType::Q6K, fixture!("model_Q6_K"));
    assert_dequant_bit_exact(TensorType::F32, fixture!("model_F32"));
}

#[test]
fn activation_quantization_is_bit_exact() {
    for (ty, (input, expected)) in
        [(TensorType::Q8_0, fixture!("quantize_Q8_0")), (TensorType::Q8K, fixture!("quantize_Q8_K"))]
    {
        let x = f32s(input);
        let mut got = vec![0u8; ty.row_bytes(x.len()).unwrap()];
        quantize(ty, &x, &mut got).unwrap();
        assert_eq!(got.len(), expected.len());
        let first = got.iter().zip(expected).position(|(a, b)| a != b);
        assert_eq!(first, None, "{ty}: first differing byte");
    }
}

#[test]
fn cpu_runtime_q8_0_rounding_is_bit_exact_with_llama_cpp() {
    let (input, expected) = fixture!("quantize_Q8_0_cpu");
    let x = f32s(input);
    let mut got = vec![0u8; expected.len()];
    quantize_with(TensorType::Q8_0, &x, &mut got, Q8_0Rounding::CpuRuntime).unwrap();
    assert_eq!(got.iter().zip(expected).position(|(a, b)| a != b), None, "first differing byte");
    // The two roundings are different functions: at a tie, half-away and half-even part.
    let mut tie = [0.0f32; 32];
    (tie[0], tie[1]) = (127.0, 2.5);
    let (mut a, mut b) = ([0u8; 34], [0u8; 34]);
    quantize(TensorType::Q8_0, &tie, &mut a).unwrap();
    quantize_with(TensorType::Q8_0, &tie, &mut b, Q8_0Rounding::CpuRuntime).unwrap();
    assert_eq!((a[3], b[3]), (3, 2));
}

#[test]
fn a_corrupted_reference_is_detected() {
    let (input, expected) = fixture!("random_Q6_K");
    let mut wrong = expected.to_vec();
    wrong[4] ^= 1;
    let result = std::panic::catch_unwind(|| assert_dequant_bit_exact(TensorType::Q6K, (input, &wrong)));
    assert!(result.is_err(), "a one-bit difference went unnoticed");
}

/// Dot products equal the f64 sum of the dequantized operands to float rounding.
#[test]
fn dot_products_agree_with_dequantized_operands() {
    let cases = [
        (TensorType::Q4_0, fixture!("random_Q4_0").0),
        (TensorType::Q5_0, fixture!("random_Q5_0").0),
        (TensorType::Q8_0, fixture!("random_Q8_0").0),
        (TensorType::Q4K, fixture!("random_Q4_K").0),
        (TensorType::Q5K, fixture!("random_Q5_K").0),
        (TensorType::Q6K, fixture!("random_Q6_K").0),
        (TensorType::Q6K, fixture!("model_Q6_K").0),
        (TensorType::F16, fixture!("random_F16").0),
        (TensorType::BF16, fixture!("random_BF16").0),
        (TensorType::F32, fixture!("random_F32").0),
    ];
    for (ty, w) in cases {
        let (block, bytes) = ty.block_geometry().unwrap();
        let n = w.len() / bytes * block;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919 % 113) as f32 - 56.0) * 0.03).collect();
        let at = dot_type(ty).unwrap();
        let mut a = vec![0u8; at.row_bytes(n).unwrap()];
        quantize(at, &x, &mut a).unwrap();
        let (mut wd, mut ad) = (vec![0.0; n], vec![0.0; n]);
        dequantize(ty, w, &mut wd).unwrap();
        if at == TensorType::Q8K {
            // Q8_K has no dequantizer in the public API: d * q.
            for (blk, out) in a.chunks_exact(292).zip(ad.chunks_exact_mut(256)) {
                let d = f32::from_le_bytes(blk[..4].try_into().unwrap());
                for (o, &q) in out.iter_mut().zip(&blk[4..260]) {
                    *o = d * f32::from(q as i8);
                }
            }
        } else {
            dequantize(at, &a, &mut ad).unwrap();
        }
        let exact: f64 = wd.iter().zip(&ad).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum();
        let scale: f64 = wd.iter().zip(&ad).map(|(&p, &q)| (f64::from(p) * f64::from(q)).abs()).sum();
        let got = f64::from(dot(ty, w, &a));
        assert!((got - exact).abs() <= 1e-5 * scale + 1e-6, "{ty}: dot {got} vs dequantized {exact} (scale {scale})");
    }
}

#[test]
fn length_mismatch_and_unsupported_types_are_errors() {
    let mut out = [0.0; 32];
    let err = dequantize(TensorType::Q8_0, &[0; 33], &mut out).unwrap_err();
    assert_eq!(err.to_string(), "Q8_0: 32 elements need 34 bytes, got 33");
    assert_eq!(
        dequantize(TensorType::Other(99), &[], &mut []).unwrap_err(),
        QuantError::Unsupported(TensorType::Other(99))
    );
    assert!(dot_type(TensorType::Q8K).is_err());
}

#[test]
fn q8k_of_all_zeros_is_all_zeros() {
    let mut out = vec![0xAAu8; 292];
    quantize(TensorType::Q8K, &[0.0; 256], &mut out).unwrap();
    assert!(out.iter().all(|&b| b == 0));
}

#[test]
fn round_even_small_equals_round_ties_even() {
    let mut xs: Vec<f32> = (-600..=600).map(|i| i as f32 * 0.25).collect();
    xs.extend([0.49999997, -0.49999997, 126.5, -126.5, 127.49999, 4_194_303.5, -4_194_303.5, f32::INFINITY]);
    let mut state = 0x9E37_79B9u32;
    for _ in 0..100_000 {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        xs.push(f32::from_bits(state) % 4_194_304.0);
    }
    for x in xs.into_iter().filter(|x| !x.is_nan()) {
        assert_eq!(
            super::round_even_small(x).to_bits() & 0x7FFF_FFFF,
            x.round_ties_even().to_bits() & 0x7FFF_FFFF,
            "{x}"
        );
        assert_eq!(super::round_even_small(x) as i8, x.round_ties_even() as i8, "{x}");
    }
    assert!(super::round_even_small(f32::NAN).is_nan());
}

#[test]
fn lane_sums_total_the_exact_block_sums() {
    // Each lane formula only redistributes a block's exact integer sum over
    // eight lanes: their total is Σ scale · Σ q · a, whatever the lane order.
    let mut rng = crate::rng::SplitMix64(17);
    for _ in 0..50 {
        let q: [i8; kquants::QK_K] = std::array::from_fn(|_| (rng.next_u64() % 64) as i8 - 32);
        let a: Vec<i8> = (0..kquants::QK_K).map(|_| (rng.next_u64() % 255) as i8).map(|x| x.max(-127)).collect();
        let scales: Vec<i32> = (0..16).map(|_| (rng.next_u64() % 256) as i32 - 128).collect();
        let bsums: Vec<i32> = a.chunks_exact(16).map(|c| c.iter().map(|&x| i32::from(x)).sum()).collect();
        let exact: i32 = (0..kquants::QK_K).map(|e| scales[e / 16] * i32::from(q[e]) * i32::from(a[e])).sum();
        assert_eq!(kquants::q6k_lanes(&q, &scales, &a, &bsums).iter().sum::<i32>(), exact);
        let (w, x) = (&q[..32], &a[..32]);
        let exact0: i32 = w.iter().zip(x).map(|(&p, &y)| i32::from(p) * i32::from(y)).sum();
        assert_eq!(q0_lanes(w, x).iter().sum::<i32>(), exact0);
    }
}

#[test]
fn lanes_add_in_the_x86_horizontal_order() {
    // In the order ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) the two ones
    // survive; a left-to-right sum loses the first one in 1e8 + 1.
    let l = Lanes([1e8, 1.0, 0.0, 0.0, -1e8, 1.0, 0.0, 0.0]);
    assert_eq!(l.sum(), 2.0);
    assert_eq!(l.0.iter().sum::<f32>(), 1.0);
}

#[test]
fn the_batch_size_picks_the_order() {
    use TensorType::*;
    assert_eq!(Order::of(Q4K, 0, 1), Order::Row);
    assert_eq!((0..7).map(|t| Order::of(Q4K, t, 7)).filter(|&o| o == Order::Batch).count(), 4);
    assert_eq!(Order::of(Q4K, 7, 8), Order::Batch);
    assert_eq!((Order::of(Q6K, 0, 7), Order::of(Q6K, 6, 8)), (Order::Row, Order::Batch));
    assert_eq!((Order::of(Q5_0, 0, 64), Order::of(Q8_0, 3, 64)), (Order::Row, Order::Row));
    assert_eq!(SumOrder::LlamaCpp.of(Q6K, 6, 8), Order::Batch);
    for (ty, row, rows) in [(Q4K, 0, 4), (Q4K, 7, 8), (Q6K, 6, 8), (Q5_0, 0, 64)] {
        assert_eq!(SumOrder::BatchInvariant.of(ty, row, rows), Order::Row);
    }
}

#[test]
fn the_orders_differ_in_the_last_bits() {
    // The choice of order is observable: on real model blocks some products
    // differ between the one-row and the batch kernels' orders.
    let mut rng = crate::rng::SplitMix64(4);
    for (ty, w) in [
        (TensorType::Q4K, &include_bytes!("../../tests/fixtures/quant/model_Q4_K.in")[..]),
        (TensorType::Q6K, &include_bytes!("../../tests/fixtures/quant/model_Q6_K.in")[..]),
    ] {
        let row = &w[..ty.row_bytes(1024).unwrap()];
        let differ = (0..64).any(|_| {
            let x: Vec<f32> = (0..1024).map(|_| crate::testing::uniform(&mut rng) * 3.0).collect();
            let mut a = vec![0u8; TensorType::Q8K.row_bytes(1024).unwrap()];
            quantize(TensorType::Q8K, &x, &mut a).unwrap();
            dot_in(ty, row, &a, Order::Row).to_bits() != dot_in(ty, row, &a, Order::Batch).to_bits()
        });
        assert!(differ, "{ty}: the orders never differed");
    }
}
