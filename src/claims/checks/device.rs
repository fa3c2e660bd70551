//! The decode step on a CUDA device (F062–F065, F074, F079): a long greedy
//! generation without a device error, a step captured as a graph, replays
//! equal to eager launches at every position, top-1 agreement with the CPU's
//! scalar reference, and the launches the host makes per token. Each claim
//! needs a device (`requires = ["cuda"]`) and is skipped, naming why, where
//! there is none. The observations are generic over the device, so the
//! falsifiability audit runs them on the kernels emulated on the CPU, sound
//! and with a defect built in.

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::{kind, Check, Kind};
use crate::claims::{Context, Outcome, Unmet};
use crate::kernels::cuda::device::{Cuda, Device, DeviceResult};
use crate::kernels::Kernels;
use crate::model::device::{DeviceModel, StepMode};
use crate::model::{Logits, Model, ModelError};
use crate::stats::Op;

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![kind::<DeviceStep>()]
}

/// What a `device_step` claim observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Tokens a greedy generation of `tokens` steps (replayed graphs) completes without a device error.
    Generation,
    /// Whether the step is captured as a graph (failures, 0 or 1).
    Capture,
    /// The largest difference between replayed and eager logits over `tokens` positions.
    ReplayEqualsEager,
    /// The fraction of `tokens` positions whose top-1 token is the CPU scalar reference's.
    CpuTop1,
    /// Launches the host submits per decoded token, over `tokens` replayed steps.
    LaunchesPerToken,
    /// Device memory still in use after `cycles` uploads of the model, a step and its release, bytes.
    MemoryReleased,
    /// Eager steps' time over replayed steps' time, `tokens` steps a run, `runs` runs interleaved.
    GraphSpeedup,
    /// Launches of `tokens` profiled steps (device marks around each launch) that show no device time.
    KernelProfile,
}

/// Parameters of `device_step`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceParams {
    /// Model size.
    pub model: String,
    /// What is observed.
    pub measure: Measure,
    /// Steps (positions) observed.
    pub tokens: usize,
    /// Load and release cycles (`memory_released`).
    #[serde(default)]
    pub cycles: usize,
    /// Interleaved runs of each mode (`graph_speedup`).
    #[serde(default = "default_runs")]
    pub runs: usize,
    /// Operator.
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
}

fn default_runs() -> usize {
    5
}

/// Milliseconds `steps` run in `mode` take on a fresh upload, until the last argmax is read back.
fn timed_steps<D: Device>(model: &Model, device: D, tokens: &[u32], mode: StepMode) -> Result<f64, ModelError> {
    let mut d = DeviceModel::upload(model, device, tokens.len() + 1, mode)?;
    // The first step captures the graph (or warms the eager launches): not timed.
    d.step(tokens[0])?;
    d.argmax()?;
    let start = std::time::Instant::now();
    for &t in &tokens[1..] {
        d.step(t)?;
    }
    d.argmax()?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// The text whose tokens the teacher-forced measures feed, repeated as needed.
const TEXT: &str = "def quicksort(items):\n    if len(items) <= 1:\n        return items\n    pivot = items[0]\n    \
                    left = [x for x in items[1:] if x < pivot]\n    right = [x for x in items[1:] if x >= pivot]\n    \
                    return quicksort(left) + [pivot] + quicksort(right)\n";

/// The device's logits for `tokens`, one step each, in `mode`.
fn device_logits<D: Device>(
    model: &Model,
    device: D,
    tokens: &[u32],
    mode: StepMode,
) -> Result<Vec<Vec<f32>>, ModelError> {
    let mut d = DeviceModel::upload(model, device, tokens.len(), mode)?;
    let mut all = Vec::with_capacity(tokens.len());
    for &t in tokens {
        d.step(t)?;
        let mut logits = Vec::new();
        d.logits(&mut logits)?;
        all.push(logits);
    }
    Ok(all)
}

fn top1(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

/// Observes `p.measure` on devices `open` makes (a fresh one for each run),
/// teacher-forcing `tokens` (cycled to `p.tokens` positions) where it needs a
/// sequence, and judges it.
pub fn observe<D: Device>(
    model: &Model,
    open: &mut dyn FnMut() -> DeviceResult<D>,
    tokens: &[u32],
    p: &DeviceParams,
) -> Result<Outcome, Unmet> {
    let n = p.tokens.clamp(1, model.config.context_length);
    let forced: Vec<u32> = tokens.iter().copied().cycle().take(n).collect();
    let fail = |e: &dyn std::fmt::Display| Unmet::Failed(e.to_string());
    let mut device = || open().map_err(|e| fail(&e));
    let q = match p.measure {
        Measure::Generation => {
            let mut d = DeviceModel::upload(model, device()?, n + 1, StepMode::Graph).map_err(|e| fail(&e))?;
            let (mut done, mut token, mut error) = (0usize, forced[0], None);
            while done < n {
                match d.step(token).and_then(|()| d.argmax()) {
                    Ok(next) => (token, done) = (next, done + 1),
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            let q = Quantity::new("tokens_without_device_error", "tokens", done as f64);
            q.detail(error.map_or(format!("{n} greedy steps, each a replayed graph"), |e| format!("stopped: {e}")))
        }
        Measure::Capture => {
            let mut d = DeviceModel::upload(model, device()?, 1, StepMode::Graph).map_err(|e| fail(&e))?;
            let failed = d.step(forced[0]).err();
            let q = Quantity::new("capture_failures", "count", f64::from(u8::from(failed.is_some())));
            q.detail(failed.map_or("one decode step captured as a graph and replayed".into(), |e| e.to_string()))
        }
        Measure::ReplayEqualsEager => {
            let eager = device_logits(model, device()?, &forced, StepMode::Eager).map_err(|e| fail(&e))?;
            let graph = device_logits(model, device()?, &forced, StepMode::Graph).map_err(|e| fail(&e))?;
            let worst = eager
                .iter()
                .flatten()
                .zip(graph.iter().flatten())
                .map(|(a, b)| match f64::from((a - b).abs()) {
                    _ if a.to_bits() == b.to_bits() => 0.0,
                    d if d.is_nan() => f64::INFINITY,
                    d => d,
                })
                .fold(0.0f64, f64::max);
            Quantity::new("replay_max_abs_difference", "logit", worst)
                .detail(format!("{n} positions, eager launches against one captured step replayed"))
        }
        Measure::CpuTop1 => {
            let got = device_logits(model, device()?, &forced, StepMode::Graph).map_err(|e| fail(&e))?;
            let mut cache = model.try_new_cache(n).map_err(|e| fail(&e))?;
            let want = model.forward(&forced, &mut cache, Logits::All).map_err(|e| fail(&e))?;
            let vocab = model.config.vocab_size;
            let agree = got.iter().zip(want.chunks_exact(vocab)).filter(|(g, w)| top1(g) == top1(w)).count();
            let mut q = Quantity::new("top1_agreement", "fraction", agree as f64 / n as f64);
            q.n = n;
            q.detail(format!("{agree} of {n} positions; the CPU with {} kernels", model.kernels.name()))
        }
        Measure::LaunchesPerToken => {
            let mut d = DeviceModel::upload(model, device()?, n + 1, StepMode::Graph).map_err(|e| fail(&e))?;
            d.step(forced[0]).map_err(|e| fail(&e))?;
            let before = d.device().launches();
            for &t in &forced[1..] {
                d.step(t).map_err(|e| fail(&e))?;
            }
            let steps = (n - 1).max(1);
            let per = (d.device().launches() - before) as f64 / steps as f64;
            Quantity::new("launches_per_token", "launches", per).detail(format!(
                "{steps} replayed steps after the one captured; kernel launches and graph launches counted"
            ))
        }
        Measure::MemoryReleased => {
            if p.cycles == 0 {
                return Err(Unmet::Failed("memory_released needs `cycles` of at least 1".into()));
            }
            let mut dev = device()?;
            let before = dev.memory_in_use().map_err(|e| fail(&e))?;
            let mut peak = before;
            for _ in 0..p.cycles {
                let mut d = DeviceModel::upload(model, dev, 2, StepMode::Graph).map_err(|e| fail(&e))?;
                d.step(forced[0]).map_err(|e| fail(&e))?;
                peak = peak.max(d.device().memory_in_use().map_err(|e| fail(&e))?);
                dev = d.into_device();
            }
            let after = dev.memory_in_use().map_err(|e| fail(&e))?;
            let kept = after.saturating_sub(before);
            Quantity::new("memory_kept_bytes", "bytes", kept as f64).detail(format!(
                "{} cycles: {before} bytes in use before, {peak} at most while loaded, {after} after",
                p.cycles
            ))
        }
        Measure::GraphSpeedup => {
            let steps = &forced[..n.max(2)];
            let (mut eager, mut graph) = (Vec::new(), Vec::new());
            for r in 0..p.runs.max(2) {
                let mut run = |mode| timed_steps(model, device()?, steps, mode).map_err(|e| fail(&e));
                // Alternate which mode goes first.
                if r % 2 == 0 {
                    eager.push(run(StepMode::Eager)?);
                    graph.push(run(StepMode::Graph)?);
                } else {
                    graph.push(run(StepMode::Graph)?);
                    eager.push(run(StepMode::Eager)?);
                }
            }
            let r = crate::stats::ratio_of_medians(&eager, &graph, 0.95, 2000, 1).map_err(|e| fail(&e))?;
            let mut q = Quantity::new("graph_speedup", "x", r.ratio);
            q.ci = Some(r.ci);
            q.n = eager.len();
            q.detail(format!(
                "{} steps a run; eager runs {eager:.1?} ms, replayed runs {graph:.1?} ms",
                steps.len() - 1
            ))
        }
        Measure::KernelProfile => {
            let mut d = DeviceModel::upload(model, device()?, n, StepMode::Eager).map_err(|e| fail(&e))?;
            let mut total: Vec<crate::model::device::KernelTime> = Vec::new();
            let before = d.device().launches();
            for &t in &forced {
                for k in d.profile_step(t).map_err(|e| fail(&e))? {
                    match total.iter_mut().find(|x| x.name == k.name) {
                        Some(x) => (x.launches, x.ms) = (x.launches + k.launches, x.ms + k.ms),
                        None => total.push(k),
                    }
                }
            }
            let ran = d.device().launches() - before;
            let timed: usize = total.iter().filter(|k| k.ms > 0.0).map(|k| k.launches).sum();
            let untimed: Vec<&str> = total.iter().filter(|k| k.ms.is_nan() || k.ms <= 0.0).map(|k| k.name).collect();
            let mut q = Quantity::new("launches_without_time", "launches", ran.saturating_sub(timed as u64) as f64);
            q.n = ran as usize;
            let per_token = |k: &crate::model::device::KernelTime| k.ms * 1e3 / n as f64;
            let mut q = q.detail(format!(
                "{n} profiled steps: {ran} launches ran, {timed} with device time; kernels without time: {untimed:?}"
            ));
            for k in &total {
                q = q.detail(format!("{}: {} launches, {:.1} µs a token", k.name, k.launches, per_token(k)));
            }
            q
        }
    };
    Ok(judge::quantity(q, p.op, p.threshold))
}

/// `device_step`: the decode step observed on the CUDA device.
pub struct DeviceStep;

impl Check for DeviceStep {
    const NAME: &'static str = "device_step";
    const DOC: &'static str = "the decode step on the CUDA device: a greedy generation without a device error, graph \
         capture, replays equal to eager launches, top-1 agreement with the CPU scalar reference, launches per token, \
         memory released after repeated loads, graph replay's speedup over eager launches, every kernel in the profile";
    const PARAMS: &'static str =
        "model, measure (generation|capture|replay_equals_eager|cpu_top1|launches_per_token), \
         tokens, op, threshold";
    type Params = DeviceParams;

    fn run(p: &DeviceParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let root = cx.root.clone();
        let loaded = cx.model(&p.model)?;
        let tokens = loaded.tokenizer.encode(TEXT, false);
        let kernels = loaded.model.kernels;
        // The CPU side of top-1 agreement is the scalar reference.
        loaded.model.kernels = Kernels::SCALAR;
        let out = observe(&loaded.model, &mut || Cuda::open(&root), &tokens, p);
        loaded.model.kernels = kernels;
        out
    }
}

/// The falsifiability audit's cases: each measure observed on the emulated
/// device, sound and with a defect that must falsify it.
#[cfg(test)]
pub(crate) mod audit {
    use super::*;
    use crate::kernels::cuda::emulated::{self, Emulated, Fault};

    fn params(measure: Measure, tokens: usize, op: Op, threshold: f64) -> DeviceParams {
        DeviceParams { model: "tiny".into(), measure, tokens, cycles: 3, runs: 3, op, threshold }
    }

    /// `p` observed on a sound emulated device and on one with `fault`.
    fn case(p: &DeviceParams, fault: Fault) -> (Outcome, Outcome) {
        case_with_overhead(p, fault, std::time::Duration::ZERO)
    }

    /// [`case`] on devices whose host launches cost `overhead` each.
    fn case_with_overhead(p: &DeviceParams, fault: Fault, overhead: std::time::Duration) -> (Outcome, Outcome) {
        let model = crate::model::tests::device_model();
        let tokens: Vec<u32> = (0..24).map(|i| (i * 7 + 3) % 64).collect();
        let open = |fault: Option<Fault>| {
            move || -> DeviceResult<Emulated> {
                let mut d = emulated::device().expect("the audit emulates the device with the host's C++ compiler");
                d.fault = fault;
                d.launch_overhead = overhead;
                Ok(d)
            }
        };
        let sound = observe(&model, &mut open(None), &tokens, p).unwrap_or_else(Unmet::outcome);
        let broken = observe(&model, &mut open(Some(fault)), &tokens, p).unwrap_or_else(Unmet::outcome);
        (sound, broken)
    }

    /// A generation of 4 steps; the device fails from the 3rd launch on.
    pub fn generation() -> (Outcome, Outcome) {
        case(&params(Measure::Generation, 4, Op::Ge, 4.0), Fault::FailsAfter(2))
    }

    /// Capture; the device cannot capture.
    pub fn capture() -> (Outcome, Outcome) {
        case(&params(Measure::Capture, 1, Op::Le, 0.0), Fault::NoCapture)
    }

    /// Replays against eager launches; a replay leaves out the RoPE kernels.
    pub fn replay() -> (Outcome, Outcome) {
        case(&params(Measure::ReplayEqualsEager, 3, Op::Le, 0.0), Fault::ReplaySkips("rope_neox"))
    }

    /// Top-1 against the CPU; the residual adds never run.
    pub fn cpu_top1() -> (Outcome, Outcome) {
        case(&params(Measure::CpuTop1, 4, Op::Ge, 1.0), Fault::Skips("add"))
    }

    /// Launches per token; a "graph" that relaunches every kernel.
    pub fn launches() -> (Outcome, Outcome) {
        case(&params(Measure::LaunchesPerToken, 3, Op::Le, 30.0), Fault::ReplayRelaunches)
    }

    /// Memory after 3 loads; a device that never gives freed buffers back.
    pub fn memory() -> (Outcome, Outcome) {
        case(&params(Measure::MemoryReleased, 1, Op::Le, 0.0), Fault::Leaks)
    }

    /// Graph speedup where a host launch costs 10 ms; a "graph" that pays it for every kernel.
    /// The sound replay measures about 8x and the relaunching one about 1x; the threshold sits
    /// between them with room for a loaded test host, and 5 runs keep the interval narrow.
    pub fn speedup() -> (Outcome, Outcome) {
        let p = DeviceParams { runs: 5, ..params(Measure::GraphSpeedup, 2, Op::Ge, 3.0) };
        case_with_overhead(&p, Fault::ReplayRelaunches, std::time::Duration::from_millis(10))
    }

    /// The kernel profile; marks that all read the same time.
    pub fn profile() -> (Outcome, Outcome) {
        case(&params(Measure::KernelProfile, 2, Op::Le, 0.0), Fault::BlindMarks)
    }
}
