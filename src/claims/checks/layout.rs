//! The repacked weight layout against the naive one: dot-product throughput of
//! a real weight matrix in packed tiles (the fast kernels' layout) and row by
//! row as the file stores it, both timed in the same run, interleaved.

use std::time::Instant;

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::{kind, Check, Kind};
use crate::claims::{Context, Outcome, Unmet};
use crate::gguf::GgufFile;
use crate::kernels::packed::{ActRow, PackedMatrix, TILE_ROWS};
use crate::kernels::{BatchPart, Kernels};
use crate::quant::{self, SumOrder};
use crate::rng::SplitMix64;
use crate::stats::{self, Op};

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![kind::<PackedThroughput>()]
}

/// Parameters of `packed_throughput`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutParams {
    /// Model size whose weights are used.
    pub model: String,
    /// The weight matrix, e.g. `blk.0.ffn_gate.weight`.
    pub tensor: String,
    /// Timed rounds of each layout (alternating).
    pub rounds: usize,
    /// Operator on packed ÷ naive throughput.
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
}

/// Dot products per second of `packed` and of `naive` (each call computes
/// `rows` of them), timed alternately `rounds` times: (packed, naive) samples.
pub fn interleaved_rates(
    rows: usize,
    rounds: usize,
    packed: &mut dyn FnMut(),
    naive: &mut dyn FnMut(),
) -> (Vec<f64>, Vec<f64>) {
    let rate = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        rows as f64 / t.elapsed().as_secs_f64().max(1e-9)
    };
    // One untimed call of each first: caches and page tables warm for both.
    packed();
    naive();
    (0..rounds).map(|_| (rate(packed), rate(naive))).unzip()
}

/// Judges packed over naive throughput: the ratio of medians with its bootstrap CI.
pub fn judge_layout(p: &LayoutParams, packed: &[f64], naive: &[f64]) -> Outcome {
    let Ok(r) = stats::ratio_of_medians(packed, naive, 0.95, stats::DEFAULT_RESAMPLES, 0x1a7) else {
        return judge::quantity(Quantity::new("packed_over_naive_throughput", "x", f64::NAN), p.op, p.threshold);
    };
    let mut q = Quantity::new("packed_over_naive_throughput", "x", r.ratio).detail(format!(
        "{}: median {:.3e} dot products/s packed, {:.3e} row by row (the engine's product for a matrix without a \
         packed layout: the scalar reference, there is no SIMD row kernel), over {} alternating rounds",
        p.tensor,
        stats::median(packed),
        stats::median(naive),
        packed.len()
    ));
    q.ci = Some(r.ci);
    q.n = packed.len();
    judge::quantity(q, p.op, p.threshold)
}

/// `packed_throughput`: repacked tiles against row-by-row dot products of the same real weights.
pub struct PackedThroughput;

impl Check for PackedThroughput {
    const NAME: &'static str = "packed_throughput";
    const DOC: &'static str = "dot-product throughput of a real weight matrix in the fast kernels' packed tiles \
         against the file's row-by-row layout, timed alternately in one run (ratio of medians, bootstrap CI)";
    const PARAMS: &'static str = "model, tensor, rounds, op, threshold";
    type Params = LayoutParams;

    fn run(p: &LayoutParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let kernels = Kernels::detect();
        if !kernels.uses_packed() {
            return Err(Unmet::Missing(format!(
                "this host runs the {} kernels, which do not use the packed layout",
                kernels.name()
            )));
        }
        let file = GgufFile::open(cx.model_path(&p.model)?).map_err(Unmet::failed)?;
        let info = file.header.tensor(&p.tensor).ok_or_else(|| Unmet::Failed(format!("no tensor {}", p.tensor)))?;
        let (ty, cols, rows) = (info.ty, info.dims[0] as usize, info.dims[1] as usize);
        let bytes = file.tensor_data(info);
        let packed = PackedMatrix::pack(ty, rows, cols, bytes)
            .ok_or_else(|| Unmet::Failed(format!("{}: {ty} has no packed layout", p.tensor)))?;
        let act_ty = quant::dot_type(ty).map_err(Unmet::failed)?;
        let mut rng = SplitMix64(0x1a7);
        let x: Vec<f32> = (0..cols).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
        let mut act = vec![0u8; act_ty.row_bytes(cols).ok_or_else(|| Unmet::Failed("activation row size".into()))?];
        quant::quantize(act_ty, &x, &mut act).map_err(Unmet::failed)?;
        let act_row = [ActRow::of(act_ty, &act)];
        let row_bytes = bytes.len() / rows;
        let (mut tiled, mut by_row) = (vec![0.0f32; packed.tiles() * TILE_ROWS], vec![0.0f32; rows]);
        cx.say(format_args!("{} rounds of {} ({rows} rows) in each layout", p.rounds, p.tensor));
        // Both layouts sum in the order the engine runs with.
        let sums = SumOrder::process();
        let (fast, naive) = interleaved_rates(
            rows,
            p.rounds,
            &mut || {
                for (t, out) in tiled.chunks_exact_mut(TILE_ROWS).enumerate() {
                    kernels.tile_dot_many(&packed, t, &act_row, sums, out);
                }
            },
            &mut || {
                for (out, w) in by_row.iter_mut().zip(bytes.chunks_exact(row_bytes)) {
                    kernels.dot_many(ty, w, &act, BatchPart::whole(1), sums, std::slice::from_mut(out));
                }
            },
        );
        // Both layouts hold the same weights: the products must be the same numbers.
        if let Some(r) = (0..rows).find(|&r| tiled[r].to_bits() != by_row[r].to_bits()) {
            return Err(Unmet::Failed(format!("row {r}: packed {} but row by row {}", tiled[r], by_row[r])));
        }
        Ok(judge_layout(p, &fast, &naive))
    }
}
