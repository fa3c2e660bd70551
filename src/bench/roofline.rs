//! The host's roofline: its measured read bandwidth and int8 / f32 compute
//! peaks ([`HostProbe`]), and the bytes a decoded token must read, which
//! together bound decode speed.

use std::path::Path;
use std::sync::Barrier;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::kernels::Kernels;
use crate::model::Model;
use crate::stats;

/// What the host can do on `threads` threads, measured: the ceilings every
/// brick's roofline is drawn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostProbe {
    /// CPU model name.
    pub cpu: String,
    /// Kernels that ran the probe.
    pub kernels: String,
    /// Threads the probe used.
    pub threads: usize,
    /// Read bandwidth, GB/s: median of `bandwidth_samples`.
    pub read_bandwidth_gb_s: f64,
    /// Every bandwidth pass, GB/s.
    pub bandwidth_samples: Vec<f64>,
    /// int8 multiply-add peak (u8 × i8 dot products from L1), 10⁹ ops/s; a multiply and an add count as two.
    pub int8_gops: f64,
    /// f32 FMA peak (dot products from L1), 10⁹ flops/s.
    pub f32_gflops: f64,
    /// Seconds since the Unix epoch when it was measured.
    pub measured_at: u64,
}

impl HostProbe {
    /// Measures the host: `bandwidth_passes` passes over a `bandwidth_bytes`
    /// buffer, then the best of five rounds of each compute kernel.
    pub fn measure(kernels: Kernels, threads: usize, bandwidth_bytes: usize, bandwidth_passes: usize) -> HostProbe {
        let bandwidth_samples = read_bandwidth_gb_s(kernels, threads, bandwidth_bytes, bandwidth_passes);
        HostProbe {
            cpu: crate::provenance::Host::detect().cpu,
            kernels: kernels.name().into(),
            threads,
            read_bandwidth_gb_s: stats::median(&bandwidth_samples),
            bandwidth_samples,
            int8_gops: compute_peak(threads, 5, Kernels::int8_ops_per_second, kernels),
            f32_gflops: compute_peak(threads, 5, Kernels::f32_flops_per_second, kernels),
            measured_at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }
    }

    /// The probe cached at `path` when it was taken on this CPU with these
    /// kernels and threads (and `remeasure` is false); otherwise a fresh one
    /// (512 MiB, 7 passes), saved there for next time. Says on stderr which it was.
    pub fn cached(path: &Path, kernels: Kernels, threads: usize, remeasure: bool) -> HostProbe {
        let cpu = crate::provenance::Host::detect().cpu;
        let old = std::fs::read(path).ok().and_then(|b| serde_json::from_slice::<HostProbe>(&b).ok());
        let matching = old.filter(|p| p.cpu == cpu && p.kernels == kernels.name() && p.threads == threads);
        if let Some(p) = matching.filter(|_| !remeasure) {
            eprintln!(
                "host probe: cached in {} ({} GB/s read, {} int8 GOPS)",
                path.display(),
                p.read_bandwidth_gb_s.round(),
                p.int8_gops.round()
            );
            return p;
        }
        eprintln!("host probe: measuring read bandwidth and compute peaks on {threads} threads (a few seconds)");
        let p = HostProbe::measure(kernels, threads, 512 << 20, 7);
        let saved = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
            crate::util::write_atomic(path, &serde_json::to_vec_pretty(&p).expect("a probe serializes"))
        });
        if let Err(e) = saved {
            eprintln!("host probe: not cached ({}: {e})", path.display());
        }
        p
    }
}

#[cfg(test)]
impl HostProbe {
    /// Ceilings stated rather than measured, for tests.
    pub(crate) fn stated(read_bandwidth_gb_s: f64, int8_gops: f64, f32_gflops: f64) -> HostProbe {
        HostProbe {
            cpu: "stated".into(),
            kernels: "stated".into(),
            threads: 1,
            read_bandwidth_gb_s,
            bandwidth_samples: vec![read_bandwidth_gb_s],
            int8_gops,
            f32_gflops,
            measured_at: 0,
        }
    }
}

/// The best rate (10⁹ per second) of `rounds` rounds, each running `rate` on every thread at once and summing.
fn compute_peak(threads: usize, rounds: usize, rate: fn(Kernels, f64) -> f64, kernels: Kernels) -> f64 {
    let threads = threads.max(1);
    (0..rounds)
        .map(|_| {
            let barrier = Barrier::new(threads);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let barrier = &barrier;
                        s.spawn(move || {
                            barrier.wait();
                            rate(kernels, 0.02)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("a probe thread panicked")).sum::<f64>()
            })
        })
        .fold(0.0, f64::max)
        / 1e9
}

impl Kernels {
    /// int8 multiply-adds per second (two ops each) of [`Kernels::dot_u8_i8`]
    /// over 8 KiB in L1, run for about `seconds`.
    fn int8_ops_per_second(self, seconds: f64) -> f64 {
        let a: Vec<u8> = (0..4096).map(|i| (i * 37 % 128) as u8).collect();
        let b: Vec<i8> = (0..4096).map(|i| (i * 91 % 256) as u8 as i8).collect();
        repeat_for(seconds, 2.0 * a.len() as f64, || {
            std::hint::black_box(self.dot_u8_i8(std::hint::black_box(&a), std::hint::black_box(&b)));
        })
    }

    /// f32 flops per second (two per FMA) of [`Kernels::dot_f32`] over 8 KiB in L1, run for about `seconds`.
    fn f32_flops_per_second(self, seconds: f64) -> f64 {
        let a: Vec<f32> = (0..1024).map(|i| i as f32 * 1e-3).collect();
        let b: Vec<f32> = (0..1024).map(|i| 1.0 - i as f32 * 1e-4).collect();
        repeat_for(seconds, 2.0 * a.len() as f64, || {
            std::hint::black_box(self.dot_f32(std::hint::black_box(&a), std::hint::black_box(&b)));
        })
    }
}

/// Calls `step` (worth `ops` operations) in batches until `seconds` have passed; ops per second.
fn repeat_for(seconds: f64, ops: f64, mut step: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..64 {
            step();
        }
        calls += 64;
    }
    calls as f64 * ops / start.elapsed().as_secs_f64()
}

/// Read bandwidth in GB/s (10⁹ bytes/s), one sample per repetition of
/// [`ReadProbe::pass`] over a `bytes`-sized buffer.
pub fn read_bandwidth_gb_s(kernels: Kernels, threads: usize, bytes: usize, reps: usize) -> Vec<f64> {
    let probe = ReadProbe::new(kernels, threads, bytes);
    (0..reps).map(|_| probe.pass()).collect()
}

/// A buffer whose passes time the host's read bandwidth, kept to take passes
/// at intervals (between a benchmark's rounds).
pub struct ReadProbe {
    words: Vec<u64>,
    kernels: Kernels,
    threads: usize,
}

impl ReadProbe {
    /// A `bytes`-sized buffer, written once so that every page is resident,
    /// read by `threads` threads with `kernels`.
    pub fn new(kernels: Kernels, threads: usize, bytes: usize) -> ReadProbe {
        ReadProbe { words: (0..bytes / 8).map(|i| i as u64).collect(), kernels, threads: threads.max(1) }
    }

    /// The bandwidth over `passes` passes back to back, GB/s: the bytes of all
    /// of them over their total time.
    pub fn sustained(&self, passes: usize) -> f64 {
        let passes = passes.max(1);
        passes as f64 / (0..passes).map(|_| 1.0 / self.pass()).sum::<f64>()
    }

    /// One pass, GB/s: every thread streams its share of the buffer once,
    /// released together, timed from the first one's start to the last one's
    /// finish as the threads themselves read the clock. (Timed from the
    /// spawning thread, a pass it woke up late for once read 46,000 GB/s.)
    pub fn pass(&self) -> f64 {
        let kernels = self.kernels;
        let parts: Vec<&[u64]> = self.words.chunks(self.words.len().div_ceil(self.threads).max(1)).collect();
        let barrier = Barrier::new(parts.len());
        let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .iter()
                .map(|&part| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let start = Instant::now();
                        std::hint::black_box(kernels.sum_words(part));
                        (start, Instant::now())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a bandwidth thread panicked")).collect()
        });
        let first = spans.iter().map(|s| s.0).min().expect("at least one part");
        let last = spans.iter().map(|s| s.1).max().expect("at least one part");
        (self.words.len() * 8) as f64 / last.duration_since(first).as_secs_f64().max(1e-9) / 1e9
    }
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
    let kv = (2 * c.n_layer * model.kv_type.row_bytes(c.kv_dim()) * ctx) as u64;
    layers + size(&model.lm_head) + model.token_embd.row_bytes as u64 + kv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_measures_every_ceiling_and_caches_it() {
        let p = HostProbe::measure(Kernels::detect(), 1, 1 << 20, 3);
        assert_eq!((p.threads, p.bandwidth_samples.len()), (1, 3));
        assert!(p.read_bandwidth_gb_s > 0.0 && p.int8_gops > 0.0 && p.f32_gflops > 0.0, "{p:?}");
        let dir = std::env::temp_dir().join(format!("falsify-probe-{}", std::process::id()));
        let path = dir.join("probe.json");
        let mut planted = p.clone();
        planted.int8_gops = 12345.0;
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, serde_json::to_vec(&planted).unwrap()).unwrap();
        assert_eq!(HostProbe::cached(&path, Kernels::detect(), 1, false).int8_gops, 12345.0, "reads a matching cache");
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
