//! The host's memory roofline: measured read bandwidth, and the bytes a
//! decoded token must read, which together bound decode speed.

use std::sync::Barrier;
use std::time::Instant;

use crate::kernels::Kernels;
use crate::model::Model;

/// Read bandwidth in GB/s (10⁹ bytes/s), one sample per repetition: `threads`
/// threads each stream their share of a `bytes`-sized buffer once, timed from a
/// common start to the last one's finish.
pub fn read_bandwidth_gb_s(kernels: Kernels, threads: usize, bytes: usize, reps: usize) -> Vec<f64> {
    let threads = threads.max(1);
    let words: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
    let share = words.len().div_ceil(threads);
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let barrier = Barrier::new(threads + 1);
        let elapsed = std::thread::scope(|s| {
            let handles: Vec<_> = words
                .chunks(share)
                .map(|part| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        std::hint::black_box(kernels.sum_words(part));
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            for h in handles {
                h.join().expect("a bandwidth thread panicked");
            }
            start.elapsed().as_secs_f64()
        });
        samples.push(bytes as f64 / elapsed / 1e9);
    }
    samples
}

/// Bytes one decode step reads at context length `ctx`: every weight matrix
/// once, one embedding row, and the KV cache so far.
pub fn bytes_per_token(model: &Model, ctx: usize) -> u64 {
    let size = |m: &crate::model::Matrix| (m.rows * m.row_bytes) as u64;
    let layers: u64 = model
        .layers
        .iter()
        .map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down].map(size).iter().sum::<u64>())
        .sum();
    let c = &model.config;
    let kv = (2 * c.n_layer * c.kv_dim() * ctx * model.kv_type.bytes()) as u64;
    layers + size(&model.lm_head) + model.token_embd.row_bytes as u64 + kv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_samples_are_positive_and_finite() {
        let s = read_bandwidth_gb_s(Kernels::detect(), 2, 1 << 20, 3);
        assert_eq!(s.len(), 3);
        assert!(s.iter().all(|x| x.is_finite() && *x > 0.0), "{s:?}");
    }

    #[test]
    fn a_decode_step_reads_every_matrix_and_the_cache() {
        let m = crate::model::tests::tied_model();
        let at0 = bytes_per_token(&m, 0);
        let at10 = bytes_per_token(&m, 10);
        assert!(at0 >= (m.lm_head.rows * m.lm_head.row_bytes) as u64);
        assert!(at10 > at0);
    }
}
