//! The forward pass's bricks: one object per stage, each taking typed
//! activations and returning typed activations ([`ComputeBrick`]), composed
//! by [`Model`]'s forward pass in this order:
//!
//! embed → per layer (attn_norm → qkv → rope → attention → o_proj →
//! ffn_norm → ffn) → output_norm → lm_head.
//!
//! A [`Pass`] carries what every brick of one forward pass shares: the
//! model, the batch of sequences, the stopwatch and, when asked, the
//! verification of every run against its brick's declared assertions.
//!
//! Bricks wired in pass order compile:
//!
//! ```no_run
//! # use falsify::model::{pipeline::{Pass, Projections, Angles}, Model};
//! fn rope_then_attention(m: &Model, pass: &mut Pass, p: Projections, a: Angles, out: &mut Vec<f32>) {
//!     let rotated = pass.apply(&m.pipeline.rope, Some(0), (p, a)).unwrap();
//!     let _mixed = pass.apply(&m.pipeline.attention, Some(0), (rotated, 0, out));
//! }
//! ```
//!
//! and wired out of order they do not: attention takes rotated queries and
//! keys, which only RoPE makes (the `brick_wiring` check compiles more such
//! cases, from `tests/wiring/wired.rs`):
//!
//! ```compile_fail,E0308
//! # use falsify::model::{pipeline::{Pass, Projections}, Model};
//! fn attention_before_rope(m: &Model, pass: &mut Pass, p: Projections, out: &mut Vec<f32>) {
//!     let _mixed = pass.apply(&m.pipeline.attention, Some(0), (p, 0, out));
//! }
//! ```

use std::time::Instant;

use super::bricks::{Brick, Stage, Stopwatch};
use super::contract::{
    self, kind::*, Assertion, BrickCost, BrickError, BrickSpec, Compute, Failure, Observation, Roofline, Rows, Tensors,
    View,
};
use super::{add_bias, add_into, norm_rows, KvCache, Layer, Matrix, Model, ModelConfig};
use crate::kernels::ops;

/// A forward-pass stage as an object: its declared contract ([`BrickSpec`])
/// and its run over typed inputs.
pub trait ComputeBrick: BrickSpec {
    /// What it takes: activations that live for `'i` (read or consumed),
    /// weights, and the buffers its outputs are written into (`'o`).
    type Input<'i, 'o>: Tensors;
    /// What it makes, in the output buffers.
    type Output<'o>: Tensors;
    /// Runs the brick on one batch. Wrong shapes, empty and non-finite
    /// inputs are errors, never panics.
    fn run<'i, 'o>(&self, pass: &mut Pass<'_, '_>, input: Self::Input<'i, 'o>) -> Result<Self::Output<'o>, BrickError>;
}

/// The verification of every brick run of some passes against the
/// assertions its brick declares ([`BrickSpec::verify`]).
#[derive(Debug, Clone)]
pub struct Verification {
    /// The host's ceilings the budgets come from.
    pub roofline: Roofline,
    /// Budget over roofline.
    pub allowance: f64,
    /// Brick runs verified.
    pub runs: usize,
    /// Assertions evaluated over all runs.
    pub evaluated: usize,
    /// Every assertion a run broke.
    pub failures: Vec<Failure>,
    /// Each brick's first run, as verify saw it.
    pub first_seen: Vec<(Brick, Observation)>,
    /// Every run's output values (brick, layer, values), when asked for.
    pub outputs: Option<Vec<BrickOutput>>,
}

/// One brick run's output values.
#[derive(Debug, Clone, PartialEq)]
pub struct BrickOutput {
    /// The brick.
    pub brick: Brick,
    /// Its layer, `None` outside the layers.
    pub layer: Option<usize>,
    /// Every output value, tensor after tensor.
    pub values: Vec<f32>,
}

impl Verification {
    /// An empty verification against `roofline` with budgets of `allowance` × roofline.
    pub fn new(roofline: Roofline, allowance: f64) -> Verification {
        Verification {
            roofline,
            allowance,
            runs: 0,
            evaluated: 0,
            failures: Vec::new(),
            first_seen: Vec::new(),
            outputs: None,
        }
    }

    /// [`Verification::new`] that also keeps every run's output values.
    pub fn keeping_outputs(roofline: Roofline, allowance: f64) -> Verification {
        Verification { outputs: Some(Vec::new()), ..Verification::new(roofline, allowance) }
    }
}

/// What every brick of one forward pass shares.
pub struct Pass<'p, 'b> {
    /// The model whose weights and kernels the bricks use.
    pub(crate) model: &'p Model,
    /// The sequences of the batch: their tokens, at positions `cache.len()..` of their caches.
    pub(crate) sequences: &'p mut [(&'b [u32], &'b mut KvCache)],
    /// Rows the pass runs now: every token, then (last layer's FFN on, with
    /// only the last positions' logits wanted) one per sequence.
    pub(crate) rows: usize,
    /// Times the bricks' spans and traces the stages.
    pub(crate) watch: Stopwatch<'p>,
    /// Verifies every run, when asked.
    verification: Option<&'p mut Verification>,
}

impl<'p, 'b> Pass<'p, 'b> {
    /// A pass of `model` over `sequences`, timed into `watch`, verified into `verification` when given.
    pub(crate) fn new(
        model: &'p Model,
        sequences: &'p mut [(&'b [u32], &'b mut KvCache)],
        watch: Stopwatch<'p>,
        verification: Option<&'p mut Verification>,
    ) -> Pass<'p, 'b> {
        let rows = sequences.iter().map(|(tokens, _)| tokens.len()).sum();
        Pass { model, sequences, rows, watch, verification }
    }

    /// Runs `brick` (of `layer`, `None` outside the layers) on `input` inside
    /// its span and, when the pass is verified, evaluates its assertions on
    /// what went in and came out.
    pub fn apply<'i, 'o, B: ComputeBrick>(
        &mut self,
        brick: &B,
        layer: Option<usize>,
        input: B::Input<'i, 'o>,
    ) -> Result<B::Output<'o>, BrickError> {
        self.watch.begin(brick.id());
        if self.verification.is_none() {
            return brick.run(self, input);
        }
        let mut tensors = Vec::new();
        input.observe(&mut tensors);
        let rows = self.rows;
        let start = Instant::now();
        let output = brick.run(self, input)?;
        let elapsed_us = start.elapsed().as_secs_f64() * 1e6;
        output.observe(&mut tensors);
        if let Some(v) = self.verification.as_deref_mut() {
            let ctx = self.sequences.iter().map(|(t, c)| c.len() + t.len()).max().unwrap_or(0);
            let budget_us = brick.budget_us(self.model, layer, ctx, &v.roofline, v.allowance) * rows as f64;
            let seen = Observation { rows, tensors, elapsed_us, budget_us };
            v.runs += 1;
            v.evaluated += brick.assertions().len();
            v.failures.extend(brick.verify(&seen));
            if !v.first_seen.iter().any(|(b, _)| *b == brick.id()) {
                v.first_seen.push((brick.id(), seen));
            }
            if let Some(outputs) = v.outputs.as_mut() {
                let mut values = Vec::new();
                output.collect(&mut values);
                outputs.push(BrickOutput { brick: brick.id(), layer, values });
            }
        }
        Ok(output)
    }
}

impl<'p, 'b> Pass<'p, 'b> {
    /// Moves each sequence's last row of `hidden` to the front (row `i` for
    /// the `i`-th sequence) and runs the rest of the pass on those rows only.
    pub(crate) fn keep_last_rows<'o>(&mut self, mut hidden: Rows<'o, Hidden>) -> Rows<'o, Hidden> {
        let d = hidden.width();
        let mut end = 0;
        for (i, (tokens, _)) in self.sequences.iter().enumerate() {
            end += tokens.len();
            // Row end - 1 >= i: every row moved is read before it is written over.
            hidden.values_mut().copy_within((end - 1) * d..end * d, i * d);
        }
        self.rows = self.sequences.len();
        hidden.first_rows(self.rows)
    }
}

/// RoPE cosines and sines for each row of the batch: half a head each.
#[derive(Debug, Clone, Copy)]
pub struct Angles<'a> {
    cos: &'a [f32],
    sin: &'a [f32],
}

impl Tensors for Angles<'_> {
    fn observe(&self, _: &mut Vec<contract::Seen>) {}
}

/// Q, K and V after their projections and biases.
#[derive(Debug)]
pub struct Projections<'a> {
    /// Queries.
    pub q: Rows<'a, Query>,
    /// Keys.
    pub k: Rows<'a, Key>,
    /// Values.
    pub v: Rows<'a, Value>,
}

/// Q and K after RoPE, and V.
#[derive(Debug)]
pub struct Rotated<'a> {
    /// Queries.
    pub q: Rows<'a, RotatedQuery>,
    /// Keys.
    pub k: Rows<'a, RotatedKey>,
    /// Values.
    pub v: Rows<'a, Value>,
}

impl Tensors for Projections<'_> {
    fn observe(&self, out: &mut Vec<contract::Seen>) {
        (self.q.view(), self.k.view(), self.v.view()).observe(out);
    }
    fn collect(&self, out: &mut Vec<f32>) {
        (self.q.view(), self.k.view(), self.v.view()).collect(out);
    }
}

impl Tensors for Rotated<'_> {
    fn observe(&self, out: &mut Vec<contract::Seen>) {
        (self.q.view(), self.k.view(), self.v.view()).observe(out);
    }
    fn collect(&self, out: &mut Vec<f32>) {
        (self.q.view(), self.k.view(), self.v.view()).collect(out);
    }
}

/// Every brick is `Send + Sync`, checked when this crate compiles (the
/// `brick_send_sync` check compiles the same assertion for the registry's types).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Embed>();
    send_sync::<Norm>();
    send_sync::<Qkv>();
    send_sync::<Rope>();
    send_sync::<Attention>();
    send_sync::<OProj>();
    send_sync::<Ffn>();
    send_sync::<OutputNorm>();
    send_sync::<LmHead>();
};

/// The bricks of the forward pass, in pass order: the engine's registry.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Token embedding lookup.
    pub embed: Embed,
    /// RMSNorm before attention.
    pub attn_norm: Norm,
    /// Q, K and V projections with their biases.
    pub qkv: Qkv,
    /// Rotary position embedding of Q and K (angles included).
    pub rope: Rope,
    /// KV cache write and causal attention.
    pub attention: Attention,
    /// Attention output projection and its residual.
    pub o_proj: OProj,
    /// RMSNorm before the FFN.
    pub ffn_norm: Norm,
    /// Gate and up projections, SwiGLU, down projection and its residual.
    pub ffn: Ffn,
    /// Final RMSNorm.
    pub output_norm: OutputNorm,
    /// The logits.
    pub lm_head: LmHead,
}

impl Pipeline {
    /// The bricks for a model of `config`.
    pub fn new(c: &ModelConfig) -> Pipeline {
        let (d, kv, ff) = (c.n_embd, c.kv_dim(), c.n_ff);
        let shape = |tensor, width| Assertion::Shape { tensor, width };
        let finite = |tensor| Assertion::Finite { tensor };
        let contract = |tensors: &[(&'static str, usize)]| -> Vec<Assertion> {
            let mut a: Vec<Assertion> = tensors.iter().flat_map(|&(t, w)| [shape(t, w), finite(t)]).collect();
            a.push(Assertion::WithinBudget);
            a
        };
        let norm =
            |id| Norm { id, width: d, eps: c.rms_eps, assertions: contract(&[(Hidden::NAME, d), (Normed::NAME, d)]) };
        Pipeline {
            embed: Embed { width: d, assertions: contract(&[(Hidden::NAME, d)]) },
            attn_norm: norm(Brick::AttnNorm),
            qkv: Qkv {
                width: d,
                kv_width: kv,
                assertions: contract(&[(Normed::NAME, d), (Query::NAME, d), (Key::NAME, kv), (Value::NAME, kv)]),
            },
            rope: Rope {
                width: d,
                kv_width: kv,
                head_dim: c.head_dim,
                base: c.rope_base,
                assertions: contract(&[
                    (RotatedQuery::NAME, d),
                    (RotatedKey::NAME, kv),
                    (Query::NAME, d),
                    (Key::NAME, kv),
                    (Value::NAME, kv),
                ]),
            },
            attention: Attention {
                width: d,
                kv_width: kv,
                heads: super::attention::Heads { query: c.n_head, kv: c.n_head_kv, dim: c.head_dim },
                assertions: contract(&[
                    (RotatedQuery::NAME, d),
                    (RotatedKey::NAME, kv),
                    (Value::NAME, kv),
                    (Mixed::NAME, d),
                ]),
            },
            o_proj: OProj { width: d, assertions: contract(&[(Mixed::NAME, d), (Hidden::NAME, d)]) },
            ffn_norm: norm(Brick::FfnNorm),
            ffn: Ffn { width: d, ff, assertions: contract(&[(Normed::NAME, d), (Hidden::NAME, d)]) },
            output_norm: OutputNorm {
                width: d,
                eps: c.rms_eps,
                assertions: contract(&[(Hidden::NAME, d), (FinalNormed::NAME, d)]),
            },
            lm_head: LmHead {
                width: d,
                vocab: c.vocab_size,
                assertions: contract(&[(FinalNormed::NAME, d), (Logit::NAME, c.vocab_size)]),
            },
        }
    }

    /// Every brick, in pass order.
    pub fn specs(&self) -> [&dyn BrickSpec; Brick::ALL.len()] {
        [
            &self.embed,
            &self.attn_norm,
            &self.qkv,
            &self.rope,
            &self.attention,
            &self.o_proj,
            &self.ffn_norm,
            &self.ffn,
            &self.output_norm,
            &self.lm_head,
        ]
    }
}

/// The [`BrickSpec`] methods every brick states the same way: its id, and
/// the assertions it was built with.
macro_rules! declared {
    ($id:expr) => {
        fn id(&self) -> Brick {
            $id
        }
        fn assertions(&self) -> &[Assertion] {
            &self.assertions
        }
    };
}

/// Bytes of a matrix's weights.
fn matrix_bytes(m: &Matrix) -> u64 {
    (m.rows * m.row_bytes) as u64
}

/// Operations of one product with a matrix: a multiply and an add per weight.
fn matrix_ops(m: &Matrix) -> u64 {
    2 * (m.rows * m.cols) as u64
}

/// Bytes of `n` f32 values.
fn f32_bytes(n: usize) -> u64 {
    (n * 4) as u64
}

/// The peak a product with `m` runs against: int8 when its weights are block-quantized.
fn matrix_compute(m: &Matrix) -> Compute {
    match crate::quant::dot_type(m.info.ty) {
        Ok(crate::gguf::TensorType::Q8_0 | crate::gguf::TensorType::Q8K) => Compute::Int8,
        _ => Compute::F32,
    }
}

/// The layer `layer` names, or the first one when `None` is given.
fn layer_of(model: &Model, layer: Option<usize>) -> Option<&Layer> {
    model.layers.get(layer.unwrap_or(0))
}

/// Token embedding lookup: token ids in, the residual stream out.
#[derive(Debug, Clone)]
pub struct Embed {
    width: usize,
    assertions: Vec<Assertion>,
}

impl BrickSpec for Embed {
    declared!(Brick::Embed);
    /// One row of the embedding read, two operations per element to dequantize it.
    fn cost(&self, model: &Model, _: Option<usize>, _: usize) -> BrickCost {
        BrickCost { bytes: model.token_embd.row_bytes as u64, ops: 2 * self.width as u64, compute: Compute::F32 }
    }
}

impl ComputeBrick for Embed {
    type Input<'i, 'o> = (&'o mut Vec<f32>,);
    type Output<'o> = Rows<'o, Hidden>;
    fn run<'i, 'o>(
        &self,
        pass: &mut Pass<'_, '_>,
        (out,): Self::Input<'i, 'o>,
    ) -> Result<Rows<'o, Hidden>, BrickError> {
        pass.watch.stage(Stage::EmbedLookup);
        if pass.rows == 0 {
            return Err(BrickError::Empty { brick: self.name(), tensor: "tokens" });
        }
        let mut hidden = Rows::<Hidden>::output(out, pass.rows, self.width);
        let tokens = pass.sequences.iter().flat_map(|(tokens, _)| tokens.iter());
        for (&t, row) in tokens.zip(hidden.values_mut().chunks_exact_mut(self.width)) {
            pass.model.embed(t, row)?;
        }
        Ok(hidden)
    }
}

/// RMSNorm of the residual stream (before attention, or before the FFN).
#[derive(Debug, Clone)]
pub struct Norm {
    id: Brick,
    width: usize,
    eps: f32,
    assertions: Vec<Assertion>,
}

impl BrickSpec for Norm {
    fn id(&self) -> Brick {
        self.id
    }
    fn assertions(&self) -> &[Assertion] {
        &self.assertions
    }
    /// The weight read, four operations per element.
    fn cost(&self, _: &Model, _: Option<usize>, _: usize) -> BrickCost {
        BrickCost { bytes: f32_bytes(self.width), ops: 4 * self.width as u64, compute: Compute::F32 }
    }
}

impl ComputeBrick for Norm {
    type Input<'i, 'o> = (View<'i, Hidden>, &'i [f32], &'o mut Vec<f32>);
    type Output<'o> = Rows<'o, Normed>;
    fn run<'i, 'o>(
        &self,
        pass: &mut Pass<'_, '_>,
        (hidden, weight, out): Self::Input<'i, 'o>,
    ) -> Result<Rows<'o, Normed>, BrickError> {
        pass.watch.stage(if self.id == Brick::AttnNorm { Stage::AttnNorm } else { Stage::FfnNorm });
        contract::input::<Hidden>(self.name(), hidden.values(), hidden.width(), self.width, pass.rows)?;
        contract::shape(self.name(), "weight", weight, self.width, 1)?;
        let mut normed = Rows::<Normed>::output(out, pass.rows, self.width);
        pass.model.par_zip(normed.values_mut(), hidden.values(), self.width, &|h, x| norm_rows(h, x, weight, self.eps));
        Ok(normed)
    }
}

/// Q, K and V projections with their biases.
#[derive(Debug, Clone)]
pub struct Qkv {
    width: usize,
    kv_width: usize,
    assertions: Vec<Assertion>,
}

impl BrickSpec for Qkv {
    declared!(Brick::Qkv);
    /// The three matrices and their biases.
    fn cost(&self, model: &Model, layer: Option<usize>, _: usize) -> BrickCost {
        let Some(l) = layer_of(model, layer) else { return BrickCost::ZERO };
        let biases = l.bq.len() + l.bk.len() + l.bv.len();
        BrickCost {
            bytes: matrix_bytes(&l.wq) + matrix_bytes(&l.wk) + matrix_bytes(&l.wv) + f32_bytes(biases),
            ops: matrix_ops(&l.wq) + matrix_ops(&l.wk) + matrix_ops(&l.wv) + biases as u64,
            compute: matrix_compute(&l.wq),
        }
    }
}

impl ComputeBrick for Qkv {
    type Input<'i, 'o> = (Rows<'i, Normed>, &'i Layer, &'o mut Vec<f32>, &'o mut Vec<f32>, &'o mut Vec<f32>);
    type Output<'o> = Projections<'o>;
    fn run<'i, 'o>(
        &self,
        pass: &mut Pass<'_, '_>,
        (normed, l, q, k, v): Self::Input<'i, 'o>,
    ) -> Result<Projections<'o>, BrickError> {
        pass.watch.stage(Stage::QkvMatmul);
        let (d, kv, n) = (self.width, self.kv_width, pass.rows);
        contract::input::<Normed>(self.name(), normed.values(), normed.width(), d, n)?;
        for m in [&l.wq, &l.wk, &l.wv] {
            if m.cols != d {
                return Err(BrickError::Shape { brick: self.name(), tensor: "weight", got: m.cols, rows: 1, width: d });
            }
        }
        let (mut q, mut k, mut v) =
            (Rows::<Query>::output(q, n, d), Rows::<Key>::output(k, n, kv), Rows::<Value>::output(v, n, kv));
        pass.model.matmul_group(
            &[&l.wq, &l.wk, &l.wv],
            normed.values(),
            &mut [q.values_mut(), k.values_mut(), v.values_mut()],
        );
        pass.watch.stage(Stage::QkvBias);
        pass.model.par_zip(q.values_mut(), &[], d, &|q, _| add_bias(q, &l.bq));
        add_bias(k.values_mut(), &l.bk);
        add_bias(v.values_mut(), &l.bv);
        Ok(Projections { q, k, v })
    }
}

/// Rotary position embedding (NEOX) of the queries and keys.
#[derive(Debug, Clone)]
pub struct Rope {
    width: usize,
    kv_width: usize,
    head_dim: usize,
    base: f32,
    assertions: Vec<Assertion>,
}

impl Rope {
    /// The cosines and sines of every row's position, into `cos` and `sin`
    /// (inside the RoPE brick's span).
    pub fn angles<'o>(
        &self,
        pass: &mut Pass<'_, '_>,
        cos: &'o mut Vec<f32>,
        sin: &'o mut Vec<f32>,
    ) -> Result<Angles<'o>, BrickError> {
        pass.watch.begin(Brick::Rope);
        pass.watch.stage(Stage::RopeAngles);
        let half = self.head_dim / 2;
        if half == 0 {
            return Err(BrickError::Empty { brick: self.name(), tensor: "angles" });
        }
        cos.resize(pass.rows * half, 0.0);
        sin.resize(pass.rows * half, 0.0);
        let positions = pass.sequences.iter().flat_map(|(tokens, cache)| cache.len()..cache.len() + tokens.len());
        for (p, (cs, sn)) in positions.zip(cos.chunks_exact_mut(half).zip(sin.chunks_exact_mut(half))) {
            ops::rope_angles(p, self.head_dim, self.base, cs, sn);
        }
        pass.watch.end();
        Ok(Angles { cos, sin })
    }
}

impl BrickSpec for Rope {
    declared!(Brick::Rope);
    /// Q and K read and written, six operations per rotated pair.
    fn cost(&self, _: &Model, _: Option<usize>, _: usize) -> BrickCost {
        let n = self.width + self.kv_width;
        BrickCost { bytes: f32_bytes(2 * n), ops: 3 * n as u64, compute: Compute::F32 }
    }
}

impl ComputeBrick for Rope {
    type Input<'i, 'o> = (Projections<'o>, Angles<'i>);
    type Output<'o> = Rotated<'o>;
    fn run<'i, 'o>(
        &self,
        pass: &mut Pass<'_, '_>,
        (Projections { mut q, mut k, v }, angles): Self::Input<'i, 'o>,
    ) -> Result<Rotated<'o>, BrickError> {
        pass.watch.stage(Stage::RopeRotate);
        let (d, kv, hd, n, half) = (self.width, self.kv_width, self.head_dim, pass.rows, self.head_dim / 2);
        contract::input::<Query>(self.name(), q.values(), q.width(), d, n)?;
        contract::input::<Key>(self.name(), k.values(), k.width(), kv, n)?;
        contract::input::<Value>(self.name(), v.values(), v.width(), kv, n)?;
        contract::shape(self.name(), "angles", angles.cos, half, n)?;
        contract::shape(self.name(), "angles", angles.sin, half, n)?;
        let kernels = pass.model.kernels;
        for t in 0..n {
            let (cs, sn) = (&angles.cos[t * half..][..half], &angles.sin[t * half..][..half]);
            kernels.rope_neox(&mut q.values_mut()[t * d..][..d], hd, cs, sn);
            kernels.rope_neox(&mut k.values_mut()[t * kv..][..kv], hd, cs, sn);
        }
        Ok(Rotated { q: q.into_kind(), k: k.into_kind(), v })
    }
}

/// The keys and values written to each sequence's cache, and causal
/// attention of every query head over it.
#[derive(Debug, Clone)]
pub struct Attention {
    width: usize,
    kv_width: usize,
    heads: super::attention::Heads,
    assertions: Vec<Assertion>,
}

impl BrickSpec for Attention {
    declared!(Brick::Attention);
    /// Keys and values of `ctx` positions read; four operations per head
    /// dimension and position, five per score (softmax).
    fn cost(&self, model: &Model, _: Option<usize>, ctx: usize) -> BrickCost {
        let h = self.heads;
        BrickCost {
            bytes: (2 * model.kv_type.row_bytes(self.kv_width) * ctx) as u64,
            ops: (h.query * ctx * (4 * h.dim + 5)) as u64,
            compute: Compute::F32,
        }
    }
}

impl ComputeBrick for Attention {
    type Input<'i, 'o> = (Rotated<'i>, usize, &'o mut Vec<f32>);
    type Output<'o> = Rows<'o, Mixed>;
    fn run<'i, 'o>(
        &self,
        pass: &mut Pass<'_, '_>,
        (Rotated { q, k, v }, li, out): Self::Input<'i, 'o>,
    ) -> Result<Rows<'o, Mixed>, BrickError> {
        pass.watch.stage(Stage::KvWrite);
        let (d, kv, n) = (self.width, self.kv_width, pass.rows);
        contract::input::<RotatedQuery>(self.name(), q.values(), q.width(), d, n)?;
        contract::input::<RotatedKey>(self.name(), k.values(), k.width(), kv, n)?;
        contract::input::<Value>(self.name(), v.values(), v.width(), kv, n)?;
        let model = pass.model;
        let mut row = 0;
        for (tokens, cache) in pass.sequences.iter_mut() {
            if li >= cache.layers() {
                return Err(BrickError::Shape {
                    brick: self.name(),
                    tensor: "kv_cache",
                    got: cache.layers(),
                    rows: 1,
                    width: li + 1,
                });
            }
            let rows = row..row + tokens.len();
            let (k, v) = (&k.values()[rows.start * kv..rows.end * kv], &v.values()[rows.start * kv..rows.end * kv]);
            cache.write(li, cache.len(), k, v)?;
            row = rows.end;
        }
        pass.watch.stage(Stage::Attend);
        let mut mixed = Rows::<Mixed>::output(out, n, d);
        let scale = 1.0 / (self.heads.dim as f32).sqrt();
        let mut row = 0;
        for (tokens, cache) in pass.sequences.iter() {
            let rows = row * d..(row + tokens.len()) * d;
            let q = &q.values()[rows.clone()];
            let attn = &mut mixed.values_mut()[rows];
            super::attention::attend_all(
                &model.pool,
                model.kernels,
                self.heads,
                q,
                cache,
                li,
                cache.len(),
                scale,
                attn,
            );
            row += tokens.len();
        }
        Ok(mixed)
    }
}

/// The attention output projection, added to the residual stream.
#[derive(Debug, Clone)]
pub struct OProj {
    width: usize,
    assertions: Vec<Assertion>,
}

impl BrickSpec for OProj {
    declared!(Brick::OProj);
    /// The matrix; one operation per residual element.
    fn cost(&self, model: &Model, layer: Option<usize>, _: usize) -> BrickCost {
        let Some(l) = layer_of(model, layer) else { return BrickCost::ZERO };
        BrickCost {
            bytes: matrix_bytes(&l.wo),
            ops: matrix_ops(&l.wo) + self.width as u64,
            compute: matrix_compute(&l.wo),
        }
    }
}

impl ComputeBrick for OProj {
    type Input<'i, 'o> = (Rows<'i, Mixed>, &'i Matrix, &'i mut Vec<f32>, Rows<'o, Hidden>);
    type Output<'o> = Rows<'o, Hidden>;
    fn run<'i, 'o>(
        &self,
        pass: &mut Pass<'_, '_>,
        (mixed, wo, scratch, mut hidden): Self::Input<'i, 'o>,
    ) -> Result<Rows<'o, Hidden>, BrickError> {
        pass.watch.stage(Stage::OMatmul);
        let (d, n) = (self.width, pass.rows);
        contract::input::<Mixed>(self.name(), mixed.values(), mixed.width(), d, n)?;
        contract::input::<Hidden>(self.name(), hidden.values(), hidden.width(), d, n)?;
        if wo.cols != d || wo.rows != d {
            return Err(BrickError::Shape {
                brick: self.name(),
                tensor: "weight",
                got: wo.rows * wo.cols,
                rows: d,
                width: d,
            });
        }
        scratch.resize(n * d, 0.0);
        pass.model.matmul(wo, mixed.values(), scratch);
        pass.watch.stage(Stage::OResidual);
        pass.model.par_zip(hidden.values_mut(), scratch, d, &add_into);
        Ok(hidden)
    }
}

/// The feed-forward block: gate and up projections, SwiGLU, the down
/// projection, added to the residual stream.
#[derive(Debug, Clone)]
pub struct Ffn {
    width: usize,
    ff: usize,
    assertions: Vec<Assertion>,
}

impl BrickSpec for Ffn {
    declared!(Brick::Ffn);
    /// The three matrices; five operations per SwiGLU element, one per residual element.
    fn cost(&self, model: &Model, layer: Option<usize>, _: usize) -> BrickCost {
        let Some(l) = layer_of(model, layer) else { return BrickCost::ZERO };
        BrickCost {
            bytes: matrix_bytes(&l.w_gate) + matrix_bytes(&l.w_up) + matrix_bytes(&l.w_down),
            ops: matrix_ops(&l.w_gate)
                + matrix_ops(&l.w_up)
                + matrix_ops(&l.w_down)
                + 5 * self.ff as u64
                + self.width as u64,
            compute: matrix_compute(&l.w_down),
        }
    }
}

impl ComputeBrick for Ffn {
    type Input<'i, 'o> =
        (Rows<'i, Normed>, &'i Layer, &'i mut Vec<f32>, &'i mut Vec<f32>, &'i mut Vec<f32>, Rows<'o, Hidden>);
    type Output<'o> = Rows<'o, Hidden>;
    fn run<'i, 'o>(
        &self,
        pass: &mut Pass<'_, '_>,
        (normed, l, gate, up, scratch, mut hidden): Self::Input<'i, 'o>,
    ) -> Result<Rows<'o, Hidden>, BrickError> {
        pass.watch.stage(Stage::GateUp);
        let (d, ff, n) = (self.width, self.ff, pass.rows);
        contract::input::<Normed>(self.name(), normed.values(), normed.width(), d, n)?;
        contract::input::<Hidden>(self.name(), hidden.values(), hidden.width(), d, n)?;
        if l.w_gate.cols != d || l.w_up.cols != d || l.w_down.cols != ff || l.w_down.rows != d {
            let got = l.w_down.cols;
            return Err(BrickError::Shape { brick: self.name(), tensor: "weight", got, rows: 1, width: ff });
        }
        gate.resize(n * ff, 0.0);
        up.resize(n * ff, 0.0);
        scratch.resize(n * d, 0.0);
        pass.model.matmul_group(&[&l.w_gate, &l.w_up], normed.values(), &mut [&mut gate[..], &mut up[..]]);
        pass.watch.stage(Stage::Swiglu);
        let kernels = pass.model.kernels;
        pass.model.par_zip(gate, up, ff, &|g, u| kernels.swiglu(g, u, ff));
        pass.watch.stage(Stage::Down);
        pass.model.matmul(&l.w_down, gate, scratch);
        pass.watch.stage(Stage::FfnResidual);
        pass.model.par_zip(hidden.values_mut(), scratch, d, &add_into);
        Ok(hidden)
    }
}

/// The final RMSNorm, in place.
#[derive(Debug, Clone)]
pub struct OutputNorm {
    width: usize,
    eps: f32,
    assertions: Vec<Assertion>,
}

impl BrickSpec for OutputNorm {
    declared!(Brick::OutputNorm);
    /// The weight read, four operations per element.
    fn cost(&self, _: &Model, _: Option<usize>, _: usize) -> BrickCost {
        BrickCost { bytes: f32_bytes(self.width), ops: 4 * self.width as u64, compute: Compute::F32 }
    }
}

impl ComputeBrick for OutputNorm {
    type Input<'i, 'o> = (Rows<'o, Hidden>, &'i [f32]);
    type Output<'o> = Rows<'o, FinalNormed>;
    fn run<'i, 'o>(
        &self,
        pass: &mut Pass<'_, '_>,
        (mut hidden, weight): Self::Input<'i, 'o>,
    ) -> Result<Rows<'o, FinalNormed>, BrickError> {
        pass.watch.stage(Stage::OutputNorm);
        contract::input::<Hidden>(self.name(), hidden.values(), hidden.width(), self.width, pass.rows)?;
        contract::shape(self.name(), "weight", weight, self.width, 1)?;
        hidden.values_mut().chunks_exact_mut(self.width).for_each(|r| ops::rms_norm(r, weight, self.eps));
        Ok(hidden.into_kind())
    }
}

/// The LM head: one row of logits per position scored.
#[derive(Debug, Clone)]
pub struct LmHead {
    width: usize,
    vocab: usize,
    assertions: Vec<Assertion>,
}

impl BrickSpec for LmHead {
    declared!(Brick::LmHead);
    /// The head matrix.
    fn cost(&self, model: &Model, _: Option<usize>, _: usize) -> BrickCost {
        let m = &model.lm_head;
        BrickCost { bytes: matrix_bytes(m), ops: matrix_ops(m), compute: matrix_compute(m) }
    }
}

impl ComputeBrick for LmHead {
    type Input<'i, 'o> = (Rows<'i, FinalNormed>, &'o mut Vec<f32>);
    type Output<'o> = Rows<'o, Logit>;
    fn run<'i, 'o>(
        &self,
        pass: &mut Pass<'_, '_>,
        (normed, out): Self::Input<'i, 'o>,
    ) -> Result<Rows<'o, Logit>, BrickError> {
        pass.watch.stage(Stage::Logits);
        let n = pass.rows;
        contract::input::<FinalNormed>(self.name(), normed.values(), normed.width(), self.width, n)?;
        let head = &pass.model.lm_head;
        if head.cols != self.width || head.rows != self.vocab {
            let got = head.rows * head.cols;
            return Err(BrickError::Shape {
                brick: self.name(),
                tensor: "weight",
                got,
                rows: self.vocab,
                width: self.width,
            });
        }
        let mut logits = Rows::<Logit>::output(out, n, self.vocab);
        pass.model.matmul(head, normed.values(), logits.values_mut());
        Ok(logits)
    }
}
