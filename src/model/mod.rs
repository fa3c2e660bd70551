//! The Qwen2 transformer: weights located in a memory-mapped GGUF file, and a
//! scalar reference forward pass with a KV cache.
//!
//! Per layer: RMSNorm → Q/K/V projections with biases → NEOX RoPE →
//! grouped-query causal attention → output projection → residual → RMSNorm →
//! SwiGLU FFN → residual. Then the final norm and the LM head (`output.weight`,
//! or the token embedding when the model ties them).

pub mod attention;
pub mod bricks;
mod config;
pub mod contract;
pub mod device;
mod kv_cache;
pub mod kv_pages;
pub mod pipeline;
pub mod probe;

pub use bricks::{Breakdown, Brick, BrickRow, BrickTimes, Stage, StageRow, StageTrace, Window};
pub use config::ModelConfig;
pub use contract::{BrickCost, BrickError, BrickSpec, Compute, Roofline};
pub use kv_cache::{KvCache, KvType, KvUsage};
pub use pipeline::{ComputeBrick, Pipeline, Verification};

use std::path::Path;

use crate::apr::{AprError, TensorFile};
use crate::gguf::{TensorInfo, TensorType};
use std::sync::Mutex;

use crate::kernels::packed::{ActRow, PackedMatrix, TILE_ROWS};
use crate::kernels::{available_cores, ops, usable_threads, BatchPart, Kernels, Pool};
use crate::quant::{self, QuantError, SumOrder};
use bricks::Stopwatch;
use pipeline::Pass;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file is not a readable model file (GGUF or APR).
    #[error(transparent)]
    File(#[from] AprError),
    /// The architecture is not Qwen2.
    #[error("unsupported architecture {0:?} (this engine runs qwen2)")]
    UnsupportedArch(String),
    /// A required metadata key is absent.
    #[error("metadata key {0:?} is missing")]
    MissingKey(String),
    /// A metadata value is out of range or of the wrong type.
    #[error("metadata key {key:?} has an invalid value {value}")]
    BadValue {
        /// The key.
        key: String,
        /// The value, as text.
        value: String,
    },
    /// A required tensor is absent.
    #[error("tensor {0:?} is missing")]
    MissingTensor(String),
    /// A tensor has the wrong shape.
    #[error("tensor {name:?} has shape {got:?}, expected {expected:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// Its dims.
        got: Vec<u64>,
        /// The dims the config implies.
        expected: Vec<u64>,
    },
    /// A tensor's type cannot be computed with.
    #[error("tensor {name:?}: {source}")]
    Quant {
        /// The tensor.
        name: String,
        /// The reason.
        source: QuantError,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// A request takes more positions than the model's context length.
    #[error("{what} takes {needed} positions, more than the model's context length of {context}")]
    ContextLength {
        /// The request, in words.
        what: String,
        /// Positions it takes.
        needed: usize,
        /// The model's context length.
        context: usize,
    },
    /// The KV cache is full.
    #[error("context full: {needed} positions needed, the KV cache holds {capacity}")]
    ContextFull {
        /// Positions the request needs.
        needed: usize,
        /// Positions the cache holds.
        capacity: usize,
    },
    /// An empty batch was given.
    #[error("no tokens to process")]
    Empty,
    /// The system refused the memory for a buffer (out of memory, an address-space limit).
    #[error("not enough memory for {what}")]
    OutOfMemory {
        /// The buffer, its size and the system's word.
        what: String,
    },
    /// The system refused to start a thread.
    #[error("cannot start a thread to {what}: {source}")]
    Thread {
        /// What the thread was for.
        what: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
    /// The KV cache cannot take a type or restore a page.
    #[error("KV cache: {0}")]
    KvCache(String),
    /// A sampling parameter is out of its range.
    #[error(transparent)]
    Sampler(#[from] crate::sample::InvalidSampler),
    /// A brick of the forward pass refused its input.
    #[error(transparent)]
    Brick(Box<BrickError>),
    /// The device backend refused the model, or its driver failed.
    #[error("device: {0}")]
    Device(String),
}

impl From<BrickError> for ModelError {
    fn from(e: BrickError) -> ModelError {
        match e {
            BrickError::Model(e) => e,
            other => ModelError::Brick(Box::new(other)),
        }
    }
}

/// A 2-D weight in the file: `rows` rows of `cols` elements of type `ty`.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// Where its data lies in the file.
    pub info: TensorInfo,
    /// Output features.
    pub rows: usize,
    /// Input features (row length).
    pub cols: usize,
    /// Bytes per row.
    pub row_bytes: usize,
    /// The rows repacked for the fast kernels, when the format has a packed layout.
    pub packed: Option<std::sync::Arc<PackedMatrix>>,
}

/// The weights of one transformer block (norms and biases copied out as f32).
#[derive(Debug, Clone)]
pub struct Layer {
    /// RMSNorm weight before attention.
    pub attn_norm: Vec<f32>,
    /// Query projection.
    pub wq: Matrix,
    /// Key projection.
    pub wk: Matrix,
    /// Value projection.
    pub wv: Matrix,
    /// Query bias.
    pub bq: Vec<f32>,
    /// Key bias.
    pub bk: Vec<f32>,
    /// Value bias.
    pub bv: Vec<f32>,
    /// Attention output projection.
    pub wo: Matrix,
    /// RMSNorm weight before the FFN.
    pub ffn_norm: Vec<f32>,
    /// FFN gate projection.
    pub w_gate: Matrix,
    /// FFN up projection.
    pub w_up: Matrix,
    /// FFN down projection.
    pub w_down: Matrix,
}

/// A loaded Qwen2 model.
pub struct Model {
    /// The mapped file (GGUF or APR).
    pub file: TensorFile,
    /// Hyperparameters.
    pub config: ModelConfig,
    /// Token embedding (`token_embd.weight`).
    pub token_embd: Matrix,
    /// Transformer blocks.
    pub layers: Vec<Layer>,
    /// Final RMSNorm weight.
    pub output_norm: Vec<f32>,
    /// LM head (`output.weight`, or the token embedding when tied).
    pub lm_head: Matrix,
    /// Threads for matrix products (see [`Model::set_threads`]).
    pool: Pool,
    /// Element type of the caches [`Model::new_cache`] makes.
    pub kv_type: KvType,
    /// Memory budget (bytes) of the caches [`Model::new_cache`] makes: none by default.
    pub kv_budget: Option<usize>,
    /// Dot-product implementation (fast by default; `Kernels::Scalar` is the reference).
    pub kernels: Kernels,
    /// How each product's order of summation is chosen (llama.cpp's by default).
    pub sum_order: SumOrder,
    /// Bytes of activation rows a matrix product's pass takes ([`ACT_BYTES_PER_PASS`] by default).
    pub act_bytes_per_pass: usize,
    /// The forward pass's bricks, in pass order.
    pub pipeline: Pipeline,
    /// Buffers the matrix products reuse.
    scratch: Mutex<Scratch>,
    /// The activations of a forward pass, reused by the next.
    buffers: Mutex<Buffers>,
}

/// The activations of one forward pass (rows of the batch back to back),
/// kept from one call to the next so that decoding allocates nothing.
#[derive(Debug, Default)]
struct Buffers {
    /// The residual stream.
    x: Vec<f32>,
    /// Normalized input of the attention or feed-forward block.
    h: Vec<f32>,
    /// Queries, keys and values.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output, before and after its projection.
    attn: Vec<f32>,
    o: Vec<f32>,
    /// Feed-forward gate and up projections.
    gate: Vec<f32>,
    up: Vec<f32>,
    /// RoPE angles' cosines and sines for each position of the batch.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// One thread's share of [`Model::quantize_rows`]: input rows, their quantized
/// bytes, their activation rows.
type QuantizePart<'a> = (&'a [f32], &'a mut [u8], &'a mut [ActRow]);

/// Buffers the matrix products reuse from one call to the next, so that once
/// grown they allocate nothing more.
#[derive(Debug, Default)]
struct Scratch {
    /// Quantized activation rows, back to back.
    acts: Vec<u8>,
    /// The same rows as the packed kernels read them.
    rows: Vec<ActRow>,
    /// Results unit by unit (unit rows × tokens each), before they are gathered.
    by_unit: Vec<f32>,
    /// Where each thread's run of units starts and ends (unit indices).
    bounds: Vec<usize>,
    /// The same boundaries as offsets into `by_unit`.
    cuts: Vec<usize>,
}

/// Most matrices one [`Model::matmul_group`] call multiplies (Q, K and V).
const MAX_GROUP: usize = 3;

/// Bytes of activation rows a thread multiplies by all its weight tiles
/// before it takes the next rows, by default: they stay in the core's L2 (512 KB or more
/// on the CPUs with these kernels) while its weights go by, and a tile is
/// unpacked once per pass. All 640 rows of a long prompt overflowed L2 and
/// took the tile kernels' time up 29-44%. Against a fixed 64 rows (352 KB of
/// the 0.5B model's FFN down input), 384 KB (412 rows of its 896-wide inputs)
/// took its 573-token prefill from 685 to 701 tok/s, median of 6 alternated
/// runs; 1 MB gave 704; the 1.5B model's prefill moved by neither.
const ACT_BYTES_PER_PASS: usize = 384 << 10;

/// Activation rows of `row_bytes` bytes a pass of `budget` bytes takes: as
/// many as fit, a multiple of four (see [`BatchPart`]), at least four.
fn tokens_per_pass(budget: usize, row_bytes: usize) -> usize {
    (budget / row_bytes.max(1) / 4).max(1) * 4
}

/// Which positions of a batch need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (prefill, decode).
    Last,
    /// Every position (teacher forcing, perplexity).
    All,
}

impl Model {
    /// Maps a model file (GGUF or APR, told apart by its magic) and locates
    /// and checks every tensor the forward pass needs.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        let file = TensorFile::open(path)?;
        let config = ModelConfig::from_header(&file.header)?;
        let c = &config;
        let (d, kv, ff) = (c.n_embd, c.kv_dim(), c.n_ff);
        let matrix = |name: &str, cols: usize, rows: usize| -> Result<Matrix, ModelError> {
            let info = file.header.tensor(name).ok_or_else(|| ModelError::MissingTensor(name.into()))?;
            if info.dims != [cols as u64, rows as u64] {
                return Err(ModelError::Shape {
                    name: name.into(),
                    got: info.dims.clone(),
                    expected: vec![cols as u64, rows as u64],
                });
            }
            quant::dot_type(info.ty).map_err(|source| ModelError::Quant { name: name.into(), source })?;
            let row_bytes = info
                .ty
                .row_bytes(cols)
                .ok_or_else(|| ModelError::Quant { name: name.into(), source: QuantError::Unsupported(info.ty) })?;
            Ok(Matrix { info: info.clone(), rows, cols, row_bytes, packed: None })
        };
        let vector = |name: &str, n: usize| -> Result<Vec<f32>, ModelError> {
            let info = file.header.tensor(name).ok_or_else(|| ModelError::MissingTensor(name.into()))?;
            if info.dims != [n as u64] {
                return Err(ModelError::Shape { name: name.into(), got: info.dims.clone(), expected: vec![n as u64] });
            }
            let mut out = vec![0.0; n];
            quant::dequantize(info.ty, file.tensor_data(info), &mut out)
                .map_err(|source| ModelError::Quant { name: name.into(), source })?;
            Ok(out)
        };
        let token_embd = matrix("token_embd.weight", d, c.vocab_size)?;
        // Grown as the blocks are found: a hostile block count fails at its first missing tensor.
        let mut layers = Vec::new();
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: vector(&n("attn_norm.weight"), d)?,
                wq: matrix(&n("attn_q.weight"), d, d)?,
                wk: matrix(&n("attn_k.weight"), d, kv)?,
                wv: matrix(&n("attn_v.weight"), d, kv)?,
                bq: vector(&n("attn_q.bias"), d)?,
                bk: vector(&n("attn_k.bias"), kv)?,
                bv: vector(&n("attn_v.bias"), kv)?,
                wo: matrix(&n("attn_output.weight"), d, d)?,
                ffn_norm: vector(&n("ffn_norm.weight"), d)?,
                w_gate: matrix(&n("ffn_gate.weight"), d, ff)?,
                w_up: matrix(&n("ffn_up.weight"), d, ff)?,
                w_down: matrix(&n("ffn_down.weight"), ff, d)?,
            });
        }
        let output_norm = vector("output_norm.weight", d)?;
        let mut lm_head = match file.header.tensor("output.weight") {
            Some(_) => matrix("output.weight", d, c.vocab_size)?,
            None => token_embd.clone(),
        };
        let pool = Pool::new(available_cores());
        let kernels = Kernels::detect();
        if kernels.uses_packed() {
            let mut all: Vec<&mut Matrix> = layers
                .iter_mut()
                .flat_map(|l| [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down])
                .collect();
            all.push(&mut lm_head);
            pack_all(&file, &mut all, pool.threads())?;
        }
        let pipeline = Pipeline::new(&config);
        Ok(Model {
            file,
            config,
            token_embd,
            layers,
            output_norm,
            lm_head,
            pool,
            kv_type: KvType::default(),
            kv_budget: None,
            kernels,
            sum_order: SumOrder::process(),
            act_bytes_per_pass: ACT_BYTES_PER_PASS,
            pipeline,
            scratch: Mutex::default(),
            buffers: Mutex::default(),
        })
    }

    /// Threads used for matrix products.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Uses `threads` threads for matrix products from now on, at least one
    /// and at most the cores this process may use ([`usable_threads`]), and
    /// returns how many that is.
    pub fn set_threads(&mut self, threads: usize) -> usize {
        if usable_threads(threads) != self.pool.threads() {
            self.pool = Pool::new(threads);
        }
        self.pool.threads()
    }

    /// A KV cache of `self.kv_type` for up to `capacity` positions, at most
    /// the model's context length (no forward pass goes beyond it).
    ///
    /// # Panics
    /// When the system has no memory for it ([`Model::try_new_cache`] says so instead).
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        self.try_new_cache(capacity).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Model::new_cache`], or [`ModelError::OutOfMemory`] when the system
    /// refuses the memory, or [`ModelError::KvCache`] when a head is not a
    /// whole number of the cache type's blocks.
    pub fn try_new_cache(&self, capacity: usize) -> Result<KvCache, ModelError> {
        let c = &self.config;
        if !c.head_dim.is_multiple_of(self.kv_type.block()) {
            let (ty, block) = (self.kv_type.name(), self.kv_type.block());
            let what =
                format!("a {ty} cache needs heads of whole {block}-element blocks; this model's are {}", c.head_dim);
            return Err(ModelError::KvCache(what));
        }
        let mut cache = KvCache::try_new(self.kv_type, c.n_layer, c.kv_dim(), capacity.min(c.context_length))?;
        cache.set_budget(self.kv_budget);
        Ok(cache)
    }

    fn rows(&self, m: &Matrix) -> &[u8] {
        self.file.tensor_data(&m.info)
    }

    /// Looks up one token's embedding.
    pub fn embed(&self, token: u32, out: &mut [f32]) -> Result<(), ModelError> {
        let vocab = self.config.vocab_size;
        if token as usize >= vocab {
            return Err(ModelError::TokenOutOfRange { id: token, vocab });
        }
        let m = &self.token_embd;
        let row = &self.rows(m)[token as usize * m.row_bytes..][..m.row_bytes];
        quant::dequantize(m.info.ty, row, out).map_err(|source| ModelError::Quant { name: m.info.name.clone(), source })
    }

    /// `out[t][r] = W[r] · xs[t]` for every row `r` of `m` and every input row `t`
    /// (`xs` holds rows of `m.cols`, `out` rows of `m.rows`), split across threads by rows.
    pub(crate) fn matmul(&self, m: &Matrix, xs: &[f32], out: &mut [f32]) {
        self.matmul_group(&[m], xs, &mut [out]);
    }

    /// [`Model::matmul`] for several matrices that read the same input: the input
    /// is quantized once and all their rows are shared out in one dispatch, split
    /// across threads by bytes. Matrices whose activation types differ run one by one.
    pub(crate) fn matmul_group(&self, ms: &[&Matrix], xs: &[f32], outs: &mut [&mut [f32]]) {
        let cols = ms[0].cols;
        let at = quant::dot_type(ms[0].info.ty).expect("checked at load");
        if ms.iter().any(|m| m.cols != cols || quant::dot_type(m.info.ty).ok() != Some(at)) {
            for (m, out) in ms.iter().zip(outs.iter_mut()) {
                self.matmul(m, xs, out);
            }
            return;
        }
        assert!(ms.len() <= MAX_GROUP && outs.len() == ms.len(), "a group of at most {MAX_GROUP} matrices");
        let n_tok = xs.len() / cols;
        let a_bytes = at.row_bytes(cols).expect("checked at load");
        // Fixed-size arrays, first ms.len() entries used: a decode step allocates nothing.
        let packed: [Option<&PackedMatrix>; MAX_GROUP] =
            std::array::from_fn(|i| ms.get(i).and_then(|m| m.packed.as_deref()).filter(|_| self.kernels.uses_packed()));
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let Scratch { acts, rows, by_unit, bounds, cuts } = &mut *scratch;
        acts.resize(a_bytes * n_tok, 0);
        let n_rows = if packed.iter().any(Option::is_some) { n_tok } else { 0 };
        if rows.len() < n_rows {
            rows.resize_with(n_rows, ActRow::default);
        }
        self.quantize_rows(at, cols, xs, acts, &mut rows[..n_rows]);
        let (acts, act_rows) = (&acts[..], &rows[..n_rows]);
        // Work units: a packed matrix's tiles of TILE_ROWS rows, another matrix's rows.
        let unit_rows: [usize; MAX_GROUP] = std::array::from_fn(|i| if packed[i].is_some() { TILE_ROWS } else { 1 });
        let units: [Units; MAX_GROUP] = std::array::from_fn(|i| match ms.get(i) {
            Some(m) => Units { count: m.rows.div_ceil(unit_rows[i]), bytes: unit_rows[i] * m.row_bytes },
            None => Units { count: 0, bytes: 0 },
        });
        let units = &units[..ms.len()];
        // Global unit u of the group is unit u - first[i] of matrix i; its results
        // (unit rows × tokens) start at result[i] + (u - first[i]) × unit rows × tokens.
        let (mut first, mut result) = ([0usize; MAX_GROUP], [0usize; MAX_GROUP]);
        let (mut n_units, mut total) = (0, 0);
        for (i, u) in units.iter().enumerate() {
            (first[i], result[i]) = (n_units, total);
            n_units += u.count;
            total += u.count * unit_rows[i] * n_tok;
        }
        let first = &first[..ms.len()];
        let matrix_of = |g: usize| first.iter().rposition(|&f| f <= g).expect("unit 0 belongs to the first matrix");
        let offset = |g: usize| match g == n_units {
            true => total,
            false => result[matrix_of(g)] + (g - first[matrix_of(g)]) * unit_rows[matrix_of(g)] * n_tok,
        };
        // One run of units per thread, of about equal bytes (finer pieces handed out
        // on demand measured no faster here). Every result is written before it is read.
        split_by_bytes(units, self.pool.threads(), bounds);
        cuts.clear();
        cuts.extend(bounds.iter().map(|&g| offset(g)));
        by_unit.resize(total, 0.0);
        let (kernels, sums, bounds) = (self.kernels, self.sum_order, &bounds[..]);
        let pass = tokens_per_pass(self.act_bytes_per_pass, a_bytes);
        self.pool.run_split(&mut by_unit[..total], cuts, &|pi, part| {
            // The activations a run of units at a time, so that they stay in the
            // core's cache while the thread's weights go by.
            for t0 in (0..n_tok).step_by(pass) {
                let (len, rows) = (pass.min(n_tok - t0), BatchPart { first: t0, total: n_tok });
                let (mut at, mut g) = (0, bounds[pi]);
                while g < bounds[pi + 1] {
                    let mi = matrix_of(g);
                    let (m, i, ur) = (ms[mi], g - first[mi], unit_rows[mi]);
                    // Two tiles of a matrix at once where a kernel takes them together.
                    if let Some(p) = packed[mi].filter(|_| g + 1 < bounds[pi + 1] && i + 1 < units[mi].count) {
                        let (one, next) = part[at..].split_at_mut(ur * n_tok);
                        let outs = [&mut one[ur * t0..][..ur * len], &mut next[..ur * n_tok][ur * t0..][..ur * len]];
                        if kernels.tile_pair_dot_part(p, i, &act_rows[t0..t0 + len], rows, sums, outs) {
                            (at, g) = (at + 2 * ur * n_tok, g + 2);
                            continue;
                        }
                    }
                    let res = &mut part[at..][..ur * n_tok][ur * t0..][..ur * len];
                    (at, g) = (at + ur * n_tok, g + 1);
                    match packed[mi] {
                        Some(p) => kernels.tile_dot_part(p, i, &act_rows[t0..t0 + len], rows, sums, res),
                        None => {
                            let w = &self.rows(m)[i * m.row_bytes..][..m.row_bytes];
                            kernels.dot_many(m.info.ty, w, &acts[t0 * a_bytes..][..len * a_bytes], rows, sums, res);
                        }
                    }
                }
            }
        });
        // The rows of matrix mi for tokens t0.. (`out`, whole rows): unit u's values
        // for those tokens lie back to back, so they are read in order, unit after unit.
        let by_unit = &by_unit[..total];
        let gather = |mi: usize, t0: usize, out: &mut [f32]| {
            let (ur, width) = (unit_rows[mi], ms[mi].rows);
            let tokens = out.len() / width;
            for u in 0..width.div_ceil(ur) {
                let (col, values) = (u * ur, ur.min(width - u * ur));
                let from = &by_unit[result[mi] + (u * n_tok + t0) * ur..][..tokens * ur];
                for (k, from) in from.chunks_exact(ur).enumerate() {
                    let (o, from) = (&mut out[k * width + col..][..values], &from[..values]);
                    // A whole tile's eight values: a copy of fixed size, inlined (a call to
                    // memcpy per eight values cost more than the copy).
                    match (<&mut [f32; TILE_ROWS]>::try_from(&mut *o), <&[f32; TILE_ROWS]>::try_from(from)) {
                        (Ok(o), Ok(from)) => *o = *from,
                        _ => o.copy_from_slice(from),
                    }
                }
            }
        };
        let threads = self.pool.threads();
        if n_tok < 2 * threads {
            for (mi, out) in outs.iter_mut().enumerate() {
                gather(mi, 0, &mut out[..n_tok * ms[mi].rows]);
            }
            return;
        }
        // Many tokens: each thread gathers a run of them.
        let per = n_tok.div_ceil(threads);
        let mut token_parts: Vec<Vec<&mut [f32]>> = (0..threads).map(|_| Vec::with_capacity(outs.len())).collect();
        for (mi, out) in outs.iter_mut().enumerate() {
            for (part, chunk) in token_parts.iter_mut().zip(out.chunks_mut(per * ms[mi].rows)) {
                part.push(chunk);
            }
        }
        let token_parts: Vec<Mutex<Vec<&mut [f32]>>> = token_parts.into_iter().map(Mutex::new).collect();
        self.pool.run(&|pi| {
            let Some(part) = token_parts.get(pi) else { return };
            let mut part = part.lock().unwrap_or_else(|e| e.into_inner());
            for (mi, chunk) in part.iter_mut().enumerate() {
                gather(mi, pi * per, chunk);
            }
        });
    }

    /// Runs `f` on matching pieces of `a` and `b` (equal lengths, or `b`
    /// empty), cut at multiples of `unit` elements, on all threads when there
    /// is enough work to pay for a dispatch, else on the caller's.
    fn par_zip(&self, a: &mut [f32], b: &[f32], unit: usize, f: &(dyn Fn(&mut [f32], &[f32]) + Sync)) {
        /// Fewer elements than this per thread are not worth a dispatch.
        const MIN_PER_THREAD: usize = 1024;
        let threads = self.pool.threads().min(a.len() / MIN_PER_THREAD).max(1);
        if threads == 1 {
            f(a, b);
            return;
        }
        let per = (a.len() / unit).div_ceil(threads) * unit;
        // `b`'s matching piece, or an empty one when `b` is empty.
        self.pool.run_chunks(a, per, &|j, a| f(a, b.chunks(per).nth(j).unwrap_or_default()));
    }

    /// Quantizes every row of `xs` (`cols` wide) into `acts` (rows of `at`)
    /// and, when `rows` is not empty, into one [`ActRow`] per input row; many
    /// rows are shared out across the threads.
    fn quantize_rows(&self, at: TensorType, cols: usize, xs: &[f32], acts: &mut [u8], rows: &mut [ActRow]) {
        let a_bytes = at.row_bytes(cols).expect("checked at load");
        let quantize = |xs: &[f32], acts: &mut [u8], rows: &mut [ActRow]| {
            for (t, (x, a)) in xs.chunks_exact(cols).zip(acts.chunks_exact_mut(a_bytes)).enumerate() {
                self.kernels.quantize(at, x, a).expect("sizes checked at load");
                if let Some(row) = rows.get_mut(t) {
                    row.fill(at, a);
                }
            }
        };
        let (n_tok, threads) = (xs.len() / cols, self.pool.threads());
        if n_tok < 2 * threads {
            quantize(xs, acts, rows);
            return;
        }
        let per = n_tok.div_ceil(threads);
        let mut row_parts = rows.chunks_mut(per);
        let parts: Vec<Mutex<QuantizePart>> = xs
            .chunks(per * cols)
            .zip(acts.chunks_mut(per * a_bytes))
            .map(|(x, a)| Mutex::new((x, a, row_parts.next().unwrap_or_default())))
            .collect();
        self.pool.run(&|pi| {
            if let Some(part) = parts.get(pi) {
                let mut part = part.lock().unwrap_or_else(|e| e.into_inner());
                let (x, a, r) = &mut *part;
                quantize(x, a, r);
            }
        });
    }

    /// Runs `tokens` (at positions `cache.len()..`) through the model, appending
    /// their keys and values to `cache`. Returns logits for the last position
    /// (`Logits::Last`, `vocab` values) or for every position (`Logits::All`,
    /// `tokens.len() * vocab` values).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, which: Logits) -> Result<Vec<f32>, ModelError> {
        let mut logits = Vec::new();
        self.forward_into(tokens, cache, which, None, &mut logits)?;
        Ok(logits)
    }

    /// [`Model::forward`] into `logits` (resized to fit), timing each
    /// [`Brick`]'s span and tracing every [`Stage`] entered into `times` when given. With the same
    /// `logits` from one call to the next, a decode step allocates nothing once
    /// the first has grown the buffers.
    pub fn forward_into(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
        times: Option<&mut BrickTimes>,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        self.forward_sequences(&mut [(tokens, cache)], which, times, None, logits)
    }

    /// [`Model::forward_into`] with every brick run verified against the
    /// assertions its brick declares, into `verification`.
    pub fn forward_verified(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
        verification: &mut Verification,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        self.forward_sequences(&mut [(tokens, cache)], which, None, Some(verification), logits)
    }

    /// The bricks the forward pass runs, in pass order: the engine's registry.
    pub fn bricks(&self) -> [&dyn BrickSpec; Brick::ALL.len()] {
        self.pipeline.specs()
    }

    /// Where `brick` runs in one pass: in every layer (`Some(i)`) for a
    /// per-layer brick, else once outside the layers (`None`).
    pub fn brick_layers(&self, brick: Brick) -> impl Iterator<Item = Option<usize>> {
        let per_layer = brick.per_layer();
        let runs = if per_layer { self.layers.len() } else { 1 };
        (0..runs).map(move |l| per_layer.then_some(l))
    }

    /// One step of several sequences at once: each `(tokens, cache)` runs
    /// `tokens` (one for a decoding sequence, a whole prompt for a new one) at
    /// positions `cache.len()..` of its own cache. Every matrix product
    /// multiplies all the sequences' rows together (the weights are read once
    /// for the whole step); RoPE, the KV rows and attention are each
    /// sequence's own. `logits` gets `vocab` values per sequence (its last
    /// position), in order. With a batch-invariant order
    /// ([`SumOrder::for_serving`]) each sequence's logits equal those of
    /// its own [`Model::forward_into`] bit for bit.
    pub fn forward_batch<'b>(
        &self,
        steps: &mut [(&'b [u32], &'b mut KvCache)],
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        self.forward_sequences(steps, Logits::Last, None, None, logits)
    }

    /// The forward pass of [`Model::forward_into`] and [`Model::forward_batch`]:
    /// every sequence's `tokens` (at positions `cache.len()..` of its cache)
    /// as rows of one batch, back to back. `Logits::Last` gives the last row of
    /// each sequence, `Logits::All` every row. Nothing is changed when a
    /// sequence does not fit.
    fn forward_sequences<'b>(
        &self,
        sequences: &mut [(&'b [u32], &'b mut KvCache)],
        which: Logits,
        times: Option<&mut BrickTimes>,
        verification: Option<&mut Verification>,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        if sequences.is_empty() {
            return Err(ModelError::Empty);
        }
        for (tokens, cache) in sequences.iter() {
            let (n, p0) = (tokens.len(), cache.len());
            if n == 0 {
                return Err(ModelError::Empty);
            }
            if p0 + n > c.context_length {
                let what = format!("a batch of {n} tokens after {p0} cached");
                return Err(ModelError::ContextLength { what, needed: p0 + n, context: c.context_length });
            }
            if p0 + n > cache.capacity() {
                return Err(ModelError::ContextFull { needed: p0 + n, capacity: cache.capacity() });
            }
            if cache.layers() != self.layers.len() {
                return Err(ModelError::KvCache(format!(
                    "the cache holds {} layers, the model has {}",
                    cache.layers(),
                    self.layers.len()
                )));
            }
        }
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let Buffers { x, h, q, k, v, attn, o, gate, up, cos, sin } = &mut *buffers;
        let p = &self.pipeline;
        let mut pass = Pass::new(self, sequences, Stopwatch::start(times), verification);
        let mut hidden = pass.apply(&p.embed, None, (x,))?;
        let angles = p.rope.angles(&mut pass, cos, sin)?;
        for (li, l) in self.layers.iter().enumerate() {
            let normed = pass.apply(&p.attn_norm, Some(li), (hidden.view(), &l.attn_norm[..], &mut *h))?;
            let projections = pass.apply(&p.qkv, Some(li), (normed, l, &mut *q, &mut *k, &mut *v))?;
            let rotated = pass.apply(&p.rope, Some(li), (projections, angles))?;
            let mixed = pass.apply(&p.attention, Some(li), (rotated, li, &mut *attn))?;
            hidden = pass.apply(&p.o_proj, Some(li), (mixed, &l.wo, &mut *o, hidden))?;
            pass.watch.end();
            // As llama.cpp does, the last layer's feed-forward runs only on the
            // rows whose logits are wanted (the batch size picks its kernels):
            // with `Logits::Last`, each sequence's last row, moved to the front.
            if li + 1 == self.layers.len() && which == Logits::Last {
                hidden = pass.keep_last_rows(hidden);
            }
            let normed = pass.apply(&p.ffn_norm, Some(li), (hidden.view(), &l.ffn_norm[..], &mut *h))?;
            hidden = pass.apply(&p.ffn, Some(li), (normed, l, &mut *gate, &mut *up, &mut *o, hidden))?;
            pass.watch.end();
        }
        if which == Logits::Last && pass.rows != pass.sequences.len() {
            hidden = pass.keep_last_rows(hidden);
        }
        for (tokens, cache) in pass.sequences.iter_mut() {
            cache.advance(tokens.len());
        }
        let normed = pass.apply(&p.output_norm, None, (hidden, &self.output_norm[..]))?;
        pass.apply(&p.lm_head, None, (normed, logits))?;
        pass.watch.finish();
        Ok(())
    }
}

/// A matrix's work units: `count` units of `bytes` bytes each.
struct Units {
    count: usize,
    bytes: usize,
}

/// Boundaries (global unit indices, at most `parts + 1` of them) that cut the
/// group's units into contiguous pieces of about equal bytes, into `bounds`.
fn split_by_bytes(units: &[Units], parts: usize, bounds: &mut Vec<usize>) {
    let total: usize = units.iter().map(|u| u.count * u.bytes).sum();
    let count: usize = units.iter().map(|u| u.count).sum();
    bounds.clear();
    bounds.push(0);
    let (mut unit, mut bytes) = (0, 0);
    for u in units {
        for _ in 0..u.count {
            unit += 1;
            bytes += u.bytes;
            if bounds.len() < parts && bytes * parts >= total * bounds.len() {
                bounds.push(unit);
            }
        }
    }
    bounds.push(count);
    bounds.dedup();
}

/// Address space a load leaves free for what the process allocates after it.
/// Under a 960 MiB limit, the 0.5B model's packed copies fitted and its
/// tokenizer's 151,936 strings then found no room and aborted the process.
const ROOM_AFTER_LOAD: usize = 64 << 20;

/// Repacks every matrix whose format has a packed layout, spread over `threads` threads.
///
/// Every packed copy's memory is taken first, in this thread. When the system
/// refuses one, the copies taken so far are given back before the error is
/// written: with the packing threads each mapping their own, the error's few
/// bytes once found no memory left and the process aborted.
fn pack_all(file: &TensorFile, matrices: &mut [&mut Matrix], threads: usize) -> Result<(), ModelError> {
    let mut copies = Vec::with_capacity(matrices.len());
    for m in matrices.iter() {
        match PackedMatrix::empty(m.info.ty, m.rows, m.cols) {
            Ok(copy) => copies.push(copy),
            Err(e) => {
                drop(copies);
                let bytes = file.tensor_data(&m.info).len();
                let what = format!("the packed copy of tensor {:?} ({bytes} bytes): {e}", m.info.name);
                return Err(ModelError::OutOfMemory { what });
            }
        }
    }
    // What follows a load (the tokenizer's vocabulary and maps, the caches, the
    // buffers) allocates without a way to fail cleanly: refuse the load here
    // unless that much room is left.
    if let Err(e) = crate::kernels::AnonBytes::zeroed(ROOM_AFTER_LOAD) {
        drop(copies);
        let what = format!("{} MiB of room after the packed copies: {e}", ROOM_AFTER_LOAD >> 20);
        return Err(ModelError::OutOfMemory { what });
    }
    let mut work: Vec<(&mut Matrix, Option<PackedMatrix>)> =
        matrices.iter_mut().map(|m| &mut **m).zip(copies).collect();
    let share = work.len().div_ceil(threads.max(1)).max(1);
    let pack = |part: &mut [(&mut Matrix, Option<PackedMatrix>)]| -> Result<(), ModelError> {
        for (m, copy) in part.iter_mut() {
            if let Some(mut copy) = copy.take() {
                copy.fill(file.tensor_data(&m.info));
                m.packed = Some(std::sync::Arc::new(copy));
                // The fast kernels read the packed copy; the scalar reference reads the file again.
                file.release(&m.info);
            }
        }
        Ok(())
    };
    std::thread::scope(|s| {
        let mut parts = work.chunks_mut(share);
        let mine = parts.next();
        let others = parts
            .map(|part| std::thread::Builder::new().spawn_scoped(s, || pack(part)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ModelError::Thread { what: "pack the weights", source });
        let mine = mine.map_or(Ok(()), pack);
        for handle in others? {
            handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        }
        mine
    })
}

/// `out` = RMSNorm of each row of `x` (rows as long as `weight`).
fn norm_rows(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    out.copy_from_slice(x);
    out.chunks_exact_mut(weight.len()).for_each(|r| ops::rms_norm(r, weight, eps));
}

/// Adds `bias` to every row of `rows`.
fn add_bias(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        add_into(row, bias);
    }
}

/// `acc += x`, element by element.
fn add_into(acc: &mut [f32], x: &[f32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

#[cfg(test)]
pub(crate) mod tests;
