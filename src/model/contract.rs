//! What a brick promises: the [`ComputeBrick`] trait every forward-pass stage
//! implements, the typed activations that wire bricks together, the
//! assertions a brick declares and [`BrickSpec::verify`] evaluates, and the
//! errors a brick returns instead of panicking.
//!
//! Activations are [`Rows`] tagged with what they hold (a [`kind`]): a brick
//! that wants normalized rows takes `Rows<Normed>`, which only a norm brick
//! makes, so a pipeline wired in the wrong order does not compile.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::bricks::Brick;
use super::{Model, ModelError};

/// What the rows of an activation hold: zero-sized tags for [`Rows`].
pub mod kind {
    /// A tag naming the tensor its rows form, as assertions and reports name it.
    pub trait Kind {
        /// The tensor's name.
        const NAME: &'static str;
    }
    macro_rules! kinds {
        ($($(#[$doc:meta])* $t:ident = $name:literal;)*) => {$(
            $(#[$doc])*
            #[derive(Debug)]
            pub enum $t {}
            impl Kind for $t {
                const NAME: &'static str = $name;
            }
        )*};
    }
    kinds! {
        /// The residual stream.
        Hidden = "hidden";
        /// RMS-normalized rows of the residual stream.
        Normed = "normed";
        /// Queries with their bias, before RoPE.
        Query = "query";
        /// Keys with their bias, before RoPE.
        Key = "key";
        /// Values with their bias.
        Value = "value";
        /// Queries after RoPE.
        RotatedQuery = "rotated_query";
        /// Keys after RoPE.
        RotatedKey = "rotated_key";
        /// Attention output: the heads' weighted values, before the output projection.
        Mixed = "mixed";
        /// The final norm's output, what the LM head reads.
        FinalNormed = "final_normed";
        /// Logits, one row per position scored.
        Logit = "logits";
        /// RoPE cosines and sines, one row per position.
        Angle = "angles";
    }
}

use kind::Kind;

/// Rows of `width` values that hold a `K`: an activation a brick made,
/// which the next brick takes by value (or reads through [`Rows::view`]).
#[derive(Debug)]
pub struct Rows<'a, K> {
    data: &'a mut [f32],
    width: usize,
    kind: PhantomData<K>,
}

/// A read-only look at [`Rows`].
#[derive(Debug, Clone, Copy)]
pub struct View<'a, K> {
    data: &'a [f32],
    width: usize,
    kind: PhantomData<K>,
}

impl<'a, K: Kind> Rows<'a, K> {
    /// Rows over `data`, `width` values each: only bricks (and the harnesses
    /// that feed them cases) make them.
    pub(crate) fn new(data: &'a mut [f32], width: usize) -> Rows<'a, K> {
        Rows { data, width, kind: PhantomData }
    }

    /// `buffer` resized to `n` rows of `width` (stale contents: the brick writes every value).
    pub(crate) fn output(buffer: &'a mut Vec<f32>, n: usize, width: usize) -> Rows<'a, K> {
        buffer.resize(n * width, 0.0);
        Rows::new(buffer, width)
    }

    /// The same rows under another tag: how a brick that works in place says what they hold now.
    pub(crate) fn into_kind<L: Kind>(self) -> Rows<'a, L> {
        Rows { data: self.data, width: self.width, kind: PhantomData }
    }

    /// A read-only look at these rows.
    pub fn view(&self) -> View<'_, K> {
        View { data: self.data, width: self.width, kind: PhantomData }
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The values, row after row.
    pub fn values(&self) -> &[f32] {
        self.data
    }

    /// The values, mutably (bricks only).
    pub(crate) fn values_mut(&mut self) -> &mut [f32] {
        self.data
    }

    /// The first `n` rows only.
    pub(crate) fn first_rows(self, n: usize) -> Rows<'a, K> {
        let len = (n * self.width).min(self.data.len());
        Rows { data: &mut self.data[..len], width: self.width, kind: PhantomData }
    }
}

impl<'a, K: Kind> View<'a, K> {
    /// A read-only look at `data` as rows of `width` (bricks and harnesses only).
    pub(crate) fn new(data: &'a [f32], width: usize) -> View<'a, K> {
        View { data, width, kind: PhantomData }
    }

    /// The values, row after row.
    pub fn values(&self) -> &'a [f32] {
        self.data
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.width
    }
}

/// Why a brick refused its input or could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BrickError {
    /// A tensor does not have the shape the brick declares.
    #[error("brick {brick}: {tensor} has {got} values, expected {rows} rows of {width} ({expected})", expected = rows * width)]
    Shape {
        /// The brick.
        brick: &'static str,
        /// The tensor.
        tensor: &'static str,
        /// Values it holds.
        got: usize,
        /// Rows expected.
        rows: usize,
        /// Values per row expected.
        width: usize,
    },
    /// A tensor the brick needs rows of has none.
    #[error("brick {brick}: {tensor} is empty")]
    Empty {
        /// The brick.
        brick: &'static str,
        /// The tensor.
        tensor: &'static str,
    },
    /// A tensor holds a NaN or an infinity.
    #[error("brick {brick}: {tensor}[{index}] is {value}, not a finite number")]
    NonFinite {
        /// The brick.
        brick: &'static str,
        /// The tensor.
        tensor: &'static str,
        /// Where, counting values row after row.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Strict mode: a brick took longer than its budget.
    #[error(
        "brick {brick} exceeded its budget at token {token}: expected ≤ {budget} µs, actual {actual} µs ({gap:.2}× budget); hint: {hint}",
        budget = micros(*budget_us),
        actual = micros(*actual_us),
        gap = actual_us / budget_us
    )]
    BudgetExceeded {
        /// The brick.
        brick: String,
        /// The token's index.
        token: u64,
        /// Its budget, µs.
        budget_us: f64,
        /// Its measured time, µs.
        actual_us: f64,
        /// What bounds the brick and how far it is from that bound.
        hint: String,
    },
    /// The model refused the work (a token outside the vocabulary, a full KV cache, …).
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl BrickError {
    /// The name of every variant, in declaration order: what F007 holds each to.
    pub const VARIANTS: [&'static str; 5] = ["shape", "empty", "non_finite", "budget_exceeded", "model"];

    /// This error's variant name, one of [`BrickError::VARIANTS`].
    pub fn variant(&self) -> &'static str {
        match self {
            BrickError::Shape { .. } => "shape",
            BrickError::Empty { .. } => "empty",
            BrickError::NonFinite { .. } => "non_finite",
            BrickError::BudgetExceeded { .. } => "budget_exceeded",
            BrickError::Model(_) => "model",
        }
    }
}

/// A time in µs with three significant digits or one decimal, whichever shows more.
pub fn micros(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// One thing a brick declares about every run: what [`BrickSpec::verify`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Assertion {
    /// The tensor has one row of `width` values per row the pass runs.
    Shape {
        /// The tensor.
        tensor: &'static str,
        /// Values per row.
        width: usize,
    },
    /// The tensor holds no NaN or infinity.
    Finite {
        /// The tensor.
        tensor: &'static str,
    },
    /// The run took no longer than the brick's budget for that many rows.
    WithinBudget,
}

impl Assertion {
    /// The assertion in words.
    pub fn describe(&self) -> String {
        match self {
            Assertion::Shape { tensor, width } => format!("{tensor} has one row of {width} values per row of the pass"),
            Assertion::Finite { tensor } => format!("{tensor} is finite"),
            Assertion::WithinBudget => "the run is within its budget".into(),
        }
    }
}

/// What one tensor of a run looked like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// The tensor.
    pub tensor: String,
    /// Values it held.
    pub len: usize,
    /// Values per row.
    pub width: usize,
    /// Values that were NaN or infinite.
    pub non_finite: usize,
}

/// What one run of a brick looked like: the facts [`BrickSpec::verify`] judges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Rows the pass ran at that point (the batch's tokens; in the last
    /// layer's FFN and the head, the positions whose logits are wanted).
    pub rows: usize,
    /// Every input and output tensor.
    pub tensors: Vec<Seen>,
    /// Wall time of the run, µs.
    pub elapsed_us: f64,
    /// The budget for the run, µs.
    pub budget_us: f64,
}

/// One declared assertion that a run broke.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The brick.
    pub brick: String,
    /// The assertion.
    pub assertion: Assertion,
    /// What was expected and what was seen.
    pub detail: String,
}

/// Which compute peak bounds a brick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compute {
    /// int8 multiply-adds: quantized weights against quantized activations.
    Int8,
    /// f32 arithmetic.
    F32,
}

/// What one brick must do per decoded token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BrickCost {
    /// Bytes read (weights, norms, biases, vectors, KV cache).
    pub bytes: u64,
    /// Arithmetic operations (a multiply and an add count as two).
    pub ops: u64,
    /// The peak those operations run against.
    pub compute: Compute,
}

impl BrickCost {
    /// Nothing to do (yet).
    pub const ZERO: BrickCost = BrickCost { bytes: 0, ops: 0, compute: Compute::F32 };

    /// The roofline time of this cost on `roofline`, µs: the longer of its
    /// bytes over the bandwidth and its operations over the peak.
    pub fn roofline_us(&self, roofline: &Roofline) -> f64 {
        self.memory_us(roofline).max(self.compute_us(roofline))
    }

    /// The time to read the bytes at the roofline's bandwidth, µs.
    pub fn memory_us(&self, roofline: &Roofline) -> f64 {
        self.bytes as f64 / (roofline.read_gb_s * 1e3)
    }

    /// The time to do the operations at the roofline's peak, µs.
    pub fn compute_us(&self, roofline: &Roofline) -> f64 {
        let peak = match self.compute {
            Compute::Int8 => roofline.int8_gops,
            Compute::F32 => roofline.f32_gflops,
        };
        self.ops as f64 / (peak * 1e3)
    }
}

/// A host's ceilings, as measured by the bench's probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roofline {
    /// Read bandwidth, GB/s.
    pub read_gb_s: f64,
    /// int8 multiply-add peak, 10⁹ ops/s.
    pub int8_gops: f64,
    /// f32 peak, 10⁹ ops/s.
    pub f32_gflops: f64,
}

/// What every brick states about itself: object-safe, so the engine's
/// registry ([`Model::bricks`]) can list them.
pub trait BrickSpec: Send + Sync {
    /// Which stage of the pass it is.
    fn id(&self) -> Brick;

    /// Its name, unique in the registry.
    fn name(&self) -> &'static str {
        self.id().name()
    }

    /// Its Rust type, as a compile test names it.
    fn type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// The assertions every run must satisfy.
    fn assertions(&self) -> &[Assertion];

    /// What one token costs it in `layer` (`None` for a brick outside the
    /// layers) at context length `ctx`.
    fn cost(&self, model: &Model, layer: Option<usize>, ctx: usize) -> BrickCost;

    /// Its budget per token in `layer`, µs: the roofline of its cost times `allowance`.
    fn budget_us(&self, model: &Model, layer: Option<usize>, ctx: usize, roofline: &Roofline, allowance: f64) -> f64 {
        self.cost(model, layer, ctx).roofline_us(roofline) * allowance
    }

    /// Evaluates every declared assertion on a run and reports each one that fails.
    fn verify(&self, seen: &Observation) -> Vec<Failure> {
        self.assertions().iter().filter_map(|a| broken(self.name(), a, seen)).collect()
    }
}

/// How `seen` breaks `assertion` of brick `brick`, if it does.
pub fn broken(brick: &str, assertion: &Assertion, seen: &Observation) -> Option<Failure> {
    let tensor = |name: &str| seen.tensors.iter().find(|t| t.tensor == name);
    let detail = match *assertion {
        Assertion::Shape { tensor: name, width } => {
            let rows = seen.rows;
            match tensor(name) {
                None => Some(format!("{name} was not seen")),
                Some(t) if t.width != width || t.len != rows * width => Some(format!(
                    "{name}: expected {rows} rows of {width} values, saw {} values in rows of {}",
                    t.len, t.width
                )),
                Some(_) => None,
            }
        }
        Assertion::Finite { tensor: name } => match tensor(name) {
            None => Some(format!("{name} was not seen")),
            Some(t) if t.non_finite > 0 => Some(format!("{name}: {} of {} values not finite", t.non_finite, t.len)),
            Some(_) => None,
        },
        Assertion::WithinBudget => match seen.budget_us.is_finite() && seen.budget_us > 0.0 {
            false => Some(format!("no usable budget ({} µs)", seen.budget_us)),
            true if seen.elapsed_us > seen.budget_us => {
                Some(format!("took {:.1} µs, budget {:.1} µs", seen.elapsed_us, seen.budget_us))
            }
            true => None,
        },
    };
    detail.map(|detail| Failure { brick: brick.into(), assertion: *assertion, detail })
}

/// The inputs and outputs of a brick as tensors it can be observed by.
pub trait Tensors {
    /// Appends what each tensor looks like.
    fn observe(&self, out: &mut Vec<Seen>);
    /// Appends every activation value, tensor after tensor.
    fn collect(&self, _: &mut Vec<f32>) {}
}

/// What `values` (rows of `width`) of `tensor` look like.
fn seen(tensor: &str, values: &[f32], width: usize) -> Seen {
    Seen {
        tensor: tensor.into(),
        len: values.len(),
        width,
        non_finite: values.iter().filter(|v| !v.is_finite()).count(),
    }
}

impl<K: Kind> Tensors for Rows<'_, K> {
    fn observe(&self, out: &mut Vec<Seen>) {
        out.push(seen(K::NAME, self.data, self.width));
    }
    fn collect(&self, out: &mut Vec<f32>) {
        out.extend_from_slice(self.data);
    }
}

impl<K: Kind> Tensors for View<'_, K> {
    fn observe(&self, out: &mut Vec<Seen>) {
        out.push(seen(K::NAME, self.data, self.width));
    }
}

/// Weights, buffers and other inputs that are not activations: nothing to observe.
macro_rules! opaque {
    ($($t:ty),*) => {$(
        impl Tensors for $t {
            fn observe(&self, _: &mut Vec<Seen>) {}
        }
    )*};
}
opaque!(&mut Vec<f32>, &[f32], &super::Layer, &super::Matrix, usize);

macro_rules! tuples {
    ($(($($n:ident),+))*) => {$(
        impl<$($n: Tensors),+> Tensors for ($($n,)+) {
            #[allow(non_snake_case)]
            fn observe(&self, out: &mut Vec<Seen>) {
                let ($($n,)+) = self;
                $($n.observe(out);)+
            }
            #[allow(non_snake_case)]
            fn collect(&self, out: &mut Vec<f32>) {
                let ($($n,)+) = self;
                $($n.collect(out);)+
            }
        }
    )*};
}
tuples!((A)(A, B)(A, B, C)(A, B, C, D)(A, B, C, D, E)(A, B, C, D, E, F));

/// The first value of `values` that is NaN or infinite, as a
/// [`BrickError::NonFinite`] of `brick`'s `tensor`. The scan reads every value
/// with no early exit, so it vectorizes; the position is looked for only when
/// there is one.
pub(crate) fn finite(brick: &'static str, tensor: &'static str, values: &[f32]) -> Result<(), BrickError> {
    const EXPONENT: u32 = 0x7f80_0000;
    let any = values.iter().fold(false, |any, v| any | (v.to_bits() & EXPONENT == EXPONENT));
    match any {
        false => Ok(()),
        true => {
            let index = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
            Err(BrickError::NonFinite { brick, tensor, index, value: values[index] })
        }
    }
}

/// Checks that `values` of `tensor` are `rows` rows of `width` (and not empty).
pub(crate) fn shape(
    brick: &'static str,
    tensor: &'static str,
    values: &[f32],
    width: usize,
    rows: usize,
) -> Result<(), BrickError> {
    if values.is_empty() || rows == 0 {
        return Err(BrickError::Empty { brick, tensor });
    }
    if values.len() != rows * width {
        return Err(BrickError::Shape { brick, tensor, got: values.len(), rows, width });
    }
    Ok(())
}

/// Checks that an activation is `rows` rows of `width`, all finite.
pub(crate) fn input<K: Kind>(
    brick: &'static str,
    values: &[f32],
    given_width: usize,
    width: usize,
    rows: usize,
) -> Result<(), BrickError> {
    if given_width != width && !values.is_empty() {
        return Err(BrickError::Shape { brick, tensor: K::NAME, got: values.len(), rows, width });
    }
    shape(brick, K::NAME, values, width, rows)?;
    finite(brick, K::NAME, values)
}
