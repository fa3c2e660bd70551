//! The decode step on a device ([`crate::kernels::cuda::device::Device`]):
//! the weights uploaded as they lie in the file, an f16 KV cache and every
//! activation in device memory, one token a step. The embedding row is looked
//! up on the host (one row of `n_embd` floats a step); everything after it,
//! to the argmax of the logits, runs on the device. The position is read from
//! a device buffer, so the step's launches can be captured once as a graph and
//! replayed for every position ([`StepMode::Graph`]); [`StepMode::Eager`]
//! launches them one by one. A prompt runs as steps, one token each.

use crate::kernels::cuda::device::{Arg, Device, DeviceError, DeviceResult};
use crate::kernels::cuda::{gemv_for, kernel_named, Kernel};

use super::{Matrix, Model, ModelError};

/// How a step's launches reach the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepMode {
    /// Each kernel launched from the host, every step.
    Eager,
    /// The step captured once as a graph, replayed every step.
    Graph,
}

impl StepMode {
    /// Its name, as `--graph` and the reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            StepMode::Eager => "eager",
            StepMode::Graph => "graph",
        }
    }
}

/// A weight matrix on the device with the GEMV that reads its format.
struct DeviceMatrix<B> {
    data: B,
    gemv: &'static Kernel,
    rows: usize,
    cols: usize,
}

/// One transformer block's weights on the device.
struct DeviceLayer<B> {
    attn_norm: B,
    wq: DeviceMatrix<B>,
    wk: DeviceMatrix<B>,
    wv: DeviceMatrix<B>,
    bq: B,
    bk: B,
    bv: B,
    wo: DeviceMatrix<B>,
    ffn_norm: B,
    w_gate: DeviceMatrix<B>,
    w_up: DeviceMatrix<B>,
    w_down: DeviceMatrix<B>,
    k_cache: B,
    v_cache: B,
}

/// The activations of a step, on the device.
struct Activations<B> {
    /// The residual stream (written from the host: the token's embedding).
    x: B,
    h: B,
    q: B,
    k: B,
    v: B,
    attn: B,
    o: B,
    gate: B,
    up: B,
    /// Activations quantized for the GEMVs (the widest input's blocks).
    quantized: B,
    scores: B,
    logits: B,
    best: B,
    /// The position being written (written from the host).
    pos: B,
}

/// A model's decode step on a device.
pub struct DeviceModel<'m, D: Device> {
    model: &'m Model,
    layers: Vec<DeviceLayer<D::Buf>>,
    output_norm: D::Buf,
    lm_head: DeviceMatrix<D::Buf>,
    act: Activations<D::Buf>,
    /// Positions the KV cache holds.
    capacity: usize,
    /// Positions run so far.
    position: usize,
    mode: StepMode,
    graph: Option<D::Graph>,
    embedding: Vec<f32>,
    /// While a step is profiled: each launch's kernel and the marks around it.
    profile: std::cell::RefCell<Option<Vec<Timed<D::Mark>>>>,
    /// The device, declared last so that its graph and buffers are dropped before it.
    device: D,
}

/// A launch of a profiled step: its kernel and the marks before and after it.
type Timed<M> = (&'static str, M, M);

/// One kernel's share of a profiled step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KernelTime {
    /// The kernel.
    pub name: &'static str,
    /// Its launches in the step.
    pub launches: usize,
    /// Their device time, milliseconds (between marks around each launch).
    pub ms: f64,
}

/// Floats as the little-endian bytes device memory holds.
fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn device_error(e: DeviceError) -> ModelError {
    ModelError::Device(e.0)
}

impl<'m, D: Device> DeviceModel<'m, D> {
    /// Uploads `model`'s weights to `device` with a KV cache of `capacity`
    /// positions. A weight in a format no device kernel reads is an error naming it.
    pub fn upload(model: &'m Model, device: D, capacity: usize, mode: StepMode) -> Result<Self, ModelError> {
        let c = &model.config;
        let capacity = capacity.clamp(1, c.context_length);
        if c.head_dim > 256 || !c.n_head.is_multiple_of(c.n_head_kv) {
            return Err(ModelError::Device(format!(
                "the device attention takes heads of at most 256 and whole groups; this model has {} heads of {} over {} KV heads",
                c.n_head, c.head_dim, c.n_head_kv
            )));
        }
        let dev = &device;
        let floats = |v: &[f32]| dev.upload(&le_bytes(v)).map_err(device_error);
        let zeros = |n: usize| dev.alloc(n * 4).map_err(device_error);
        let matrix = |m: &Matrix| -> Result<DeviceMatrix<D::Buf>, ModelError> {
            let gemv = gemv_for(m.info.ty).ok_or_else(|| {
                ModelError::Device(format!("{}: no device kernel reads {:?} weights", m.info.name, m.info.ty))
            })?;
            if !m.cols.is_multiple_of(32) {
                return Err(ModelError::Device(format!(
                    "{}: rows of {} are not whole blocks of 32",
                    m.info.name, m.cols
                )));
            }
            let data = dev.upload(model.rows(m)).map_err(device_error)?;
            Ok(DeviceMatrix { data, gemv, rows: m.rows, cols: m.cols })
        };
        let kv_bytes = capacity * c.kv_dim() * 2;
        let mut layers = Vec::with_capacity(model.layers.len());
        for l in &model.layers {
            layers.push(DeviceLayer {
                attn_norm: floats(&l.attn_norm)?,
                wq: matrix(&l.wq)?,
                wk: matrix(&l.wk)?,
                wv: matrix(&l.wv)?,
                bq: floats(&l.bq)?,
                bk: floats(&l.bk)?,
                bv: floats(&l.bv)?,
                wo: matrix(&l.wo)?,
                ffn_norm: floats(&l.ffn_norm)?,
                w_gate: matrix(&l.w_gate)?,
                w_up: matrix(&l.w_up)?,
                w_down: matrix(&l.w_down)?,
                k_cache: dev.alloc(kv_bytes).map_err(device_error)?,
                v_cache: dev.alloc(kv_bytes).map_err(device_error)?,
            });
        }
        let widest = c.n_embd.max(c.n_ff);
        let act = Activations {
            x: zeros(c.n_embd)?,
            h: zeros(c.n_embd)?,
            q: zeros(c.n_head * c.head_dim)?,
            k: zeros(c.kv_dim())?,
            v: zeros(c.kv_dim())?,
            attn: zeros(c.n_head * c.head_dim)?,
            o: zeros(c.n_embd)?,
            gate: zeros(c.n_ff)?,
            up: zeros(c.n_ff)?,
            quantized: zeros(widest / 32 * 9)?,
            scores: zeros(c.n_head * capacity)?,
            logits: zeros(c.vocab_size)?,
            best: zeros(1)?,
            pos: zeros(1)?,
        };
        let output_norm = floats(&model.output_norm)?;
        let lm_head = matrix(&model.lm_head)?;
        Ok(DeviceModel {
            model,
            layers,
            output_norm,
            lm_head,
            act,
            capacity,
            position: 0,
            mode,
            graph: None,
            embedding: vec![0.0; c.n_embd],
            profile: std::cell::RefCell::new(None),
            device,
        })
    }

    /// The model whose weights these are.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// Positions the KV cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions run so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Forgets every position run (the cache is overwritten from position 0).
    pub fn reset(&mut self) {
        self.position = 0;
    }

    /// The device, its buffers given back.
    pub fn into_device(self) -> D {
        self.device
    }

    fn launch(&self, name: &str, grid: usize, args: &[Arg<'_, D::Buf>]) -> DeviceResult<()> {
        self.launch_kernel(kernel_named(name), grid, args)
    }

    /// Launches `kernel`, between two marks while a step is profiled.
    fn launch_kernel(&self, kernel: &'static Kernel, grid: usize, args: &[Arg<'_, D::Buf>]) -> DeviceResult<()> {
        let mut profile = self.profile.borrow_mut();
        let Some(marks) = profile.as_mut() else {
            return self.device.launch(kernel, grid as u32, args);
        };
        let before = self.device.mark()?;
        self.device.launch(kernel, grid as u32, args)?;
        marks.push((kernel.name, before, self.device.mark()?));
        Ok(())
    }

    /// `y = W·x` for the device matrix `m`, `x` in `input` (quantized first).
    fn gemv(&self, m: &DeviceMatrix<D::Buf>, input: &D::Buf, y: &D::Buf) -> DeviceResult<()> {
        use Arg::{Buf, I32};
        let a = &self.act.quantized;
        self.launch("quantize_q8a", (m.cols / 32).div_ceil(8), &[Buf(input), Buf(a), I32(m.cols as i32)])?;
        let rows = m.rows as i32;
        self.launch_kernel(m.gemv, m.rows.div_ceil(4), &[Buf(&m.data), Buf(a), Buf(y), I32(rows), I32(m.cols as i32)])
    }

    fn add(&self, x: &D::Buf, y: &D::Buf, n: usize) -> DeviceResult<()> {
        self.launch("add", n.div_ceil(256), &[Arg::Buf(x), Arg::Buf(y), Arg::I32(n as i32)])
    }

    fn rmsnorm(&self, x: &D::Buf, w: &D::Buf, y: &D::Buf) -> DeviceResult<()> {
        let c = &self.model.config;
        self.launch(
            "rmsnorm",
            1,
            &[Arg::Buf(x), Arg::Buf(w), Arg::Buf(y), Arg::I32(c.n_embd as i32), Arg::F32(c.rms_eps)],
        )
    }

    /// Queues one step's launches: every block, then the logits and their argmax.
    /// The token's embedding is in `x` and its position in `pos` already.
    fn queue_step(&self) -> DeviceResult<()> {
        use Arg::{Buf, F32, I32};
        let c = &self.model.config;
        let a = &self.act;
        let (hd, kv) = (c.head_dim as i32, c.kv_dim());
        for l in &self.layers {
            self.rmsnorm(&a.x, &l.attn_norm, &a.h)?;
            self.gemv(&l.wq, &a.h, &a.q)?;
            self.add(&a.q, &l.bq, c.n_head * c.head_dim)?;
            self.gemv(&l.wk, &a.h, &a.k)?;
            self.add(&a.k, &l.bk, kv)?;
            self.gemv(&l.wv, &a.h, &a.v)?;
            self.add(&a.v, &l.bv, kv)?;
            self.launch("rope_neox", c.n_head, &[Buf(&a.q), I32(hd), Buf(&a.pos), F32(c.rope_base)])?;
            self.launch("rope_neox", c.n_head_kv, &[Buf(&a.k), I32(hd), Buf(&a.pos), F32(c.rope_base)])?;
            let store = [Buf(&a.k), Buf(&a.v), Buf(&l.k_cache), Buf(&l.v_cache), Buf(&a.pos), I32(kv as i32)];
            self.launch("kv_store_f16", kv.div_ceil(256), &store)?;
            let scale = 1.0 / (c.head_dim as f32).sqrt();
            let attend = [
                Buf(&a.q),
                Buf(&l.k_cache),
                Buf(&l.v_cache),
                Buf(&a.scores),
                Buf(&a.attn),
                Buf(&a.pos),
                I32(c.n_head as i32),
                I32(c.n_head_kv as i32),
                I32(hd),
                I32(self.capacity as i32),
                F32(scale),
            ];
            self.launch("attention_f16", c.n_head, &attend)?;
            self.gemv(&l.wo, &a.attn, &a.o)?;
            self.add(&a.x, &a.o, c.n_embd)?;
            self.rmsnorm(&a.x, &l.ffn_norm, &a.h)?;
            self.gemv(&l.w_gate, &a.h, &a.gate)?;
            self.gemv(&l.w_up, &a.h, &a.up)?;
            self.launch("swiglu", c.n_ff.div_ceil(256), &[Buf(&a.gate), Buf(&a.up), Buf(&a.gate), I32(c.n_ff as i32)])?;
            self.gemv(&l.w_down, &a.gate, &a.o)?;
            self.add(&a.x, &a.o, c.n_embd)?;
        }
        self.rmsnorm(&a.x, &self.output_norm, &a.h)?;
        self.gemv(&self.lm_head, &a.h, &a.logits)?;
        self.launch("argmax", 1, &[Buf(&a.logits), I32(c.vocab_size as i32), Buf(&a.best)])
    }

    /// Writes `token`'s embedding and the next position into their device buffers.
    fn begin_step(&mut self, token: u32) -> Result<(), ModelError> {
        if self.position >= self.capacity {
            let what = "a device step".to_owned();
            return Err(ModelError::ContextLength { what, needed: self.position + 1, context: self.capacity });
        }
        self.model.embed(token, &mut self.embedding)?;
        let x = le_bytes(&self.embedding);
        self.device.write(&mut self.act.x, &x).map_err(device_error)?;
        let pos = (self.position as i32).to_le_bytes();
        self.device.write(&mut self.act.pos, &pos).map_err(device_error)
    }

    /// Runs `token` at the next position launch by launch, timing each
    /// launch between device marks: every kernel's launches and device time.
    pub fn profile_step(&mut self, token: u32) -> Result<Vec<KernelTime>, ModelError> {
        self.begin_step(token)?;
        *self.profile.borrow_mut() = Some(Vec::new());
        let queued = self.queue_step();
        let marks = self.profile.borrow_mut().take().unwrap_or_default();
        queued.map_err(device_error)?;
        self.position += 1;
        let mut times: Vec<KernelTime> = Vec::new();
        for (name, from, to) in &marks {
            let ms = self.device.elapsed_ms(from, to).map_err(device_error)?;
            match times.iter_mut().find(|t| t.name == *name) {
                Some(t) => (t.launches, t.ms) = (t.launches + 1, t.ms + ms),
                None => times.push(KernelTime { name, launches: 1, ms }),
            }
        }
        Ok(times)
    }

    /// Runs `token` at the next position: its logits and their argmax are then on the device.
    pub fn step(&mut self, token: u32) -> Result<(), ModelError> {
        self.begin_step(token)?;
        match self.mode {
            StepMode::Eager => self.queue_step().map_err(device_error)?,
            StepMode::Graph => {
                if self.graph.is_none() {
                    let graph = self.device.capture(&mut || self.queue_step()).map_err(device_error)?;
                    self.graph = Some(graph);
                }
                let graph = self.graph.as_ref().expect("captured above");
                self.device.replay(graph).map_err(device_error)?;
            }
        }
        self.position += 1;
        Ok(())
    }

    /// The last step's logits.
    pub fn logits(&self, out: &mut Vec<f32>) -> Result<(), ModelError> {
        let mut bytes = vec![0u8; self.model.config.vocab_size * 4];
        self.device.read(&self.act.logits, &mut bytes).map_err(device_error)?;
        out.clear();
        out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))));
        Ok(())
    }

    /// The last step's most likely token (the lowest id among equal logits).
    pub fn argmax(&self) -> Result<u32, ModelError> {
        let mut b = [0u8; 4];
        self.device.read(&self.act.best, &mut b).map_err(device_error)?;
        Ok(u32::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests;
