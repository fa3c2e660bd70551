//! Test support shared by the unit tests: seeded random quantized weights
//! (the shape twins' generator) and the thread's CPU affinity.

pub use crate::synth::{random_weights, uniform};

/// The calling thread's `Cpus_allowed_list` (None where /proc does not say):
/// for checking that something leaves the caller's affinity alone.
pub fn cpus_allowed() -> Option<String> {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Cpus_allowed_list")).map(str::to_owned))
}
