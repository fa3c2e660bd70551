//! A device the decode step runs on: memory, copies, kernel launches checked
//! against the kernel table, a captured launch sequence replayed as one (a
//! CUDA graph) and timing marks (CUDA events). [`Cuda`] is an NVIDIA device
//! through the driver; the unit tests emulate one on the CPU, so the forward
//! pass that drives a device is tested on hosts without one.

use std::sync::Arc;

use super::{Kernel, Param, UNITS};

/// Why a device operation failed, in the driver's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(pub String);

/// A device operation's result.
pub type DeviceResult<T> = Result<T, DeviceError>;

/// One kernel argument: a device buffer, an `int` or a `float`.
#[derive(Debug)]
pub enum Arg<'a, B> {
    /// A buffer, passed as its device address.
    Buf(&'a B),
    /// An `int`.
    I32(i32),
    /// A `float`.
    F32(f32),
}

impl<B> Arg<'_, B> {
    fn param(&self) -> Param {
        match self {
            Arg::Buf(_) => Param::Ptr,
            Arg::I32(_) => Param::I32,
            Arg::F32(_) => Param::F32,
        }
    }
}

/// `args` against `kernel`'s declared parameters: a launch with the wrong
/// arguments is an error here, not undefined behaviour on the device.
fn check_args<B>(kernel: &Kernel, args: &[Arg<'_, B>]) -> DeviceResult<()> {
    let given: Vec<Param> = args.iter().map(Arg::param).collect();
    if given != kernel.params {
        return Err(DeviceError(format!(
            "{}: launched with arguments {given:?}, but it takes {:?}",
            kernel.name, kernel.params
        )));
    }
    Ok(())
}

/// What the forward pass needs of a device.
pub trait Device {
    /// Device memory.
    type Buf;
    /// A captured launch sequence.
    type Graph;
    /// A point in the device's stream, for timing.
    type Mark;

    /// The device's name, for reports.
    fn name(&self) -> String;
    /// `bytes` of zeroed memory.
    fn alloc(&self, bytes: usize) -> DeviceResult<Self::Buf>;
    /// A buffer holding a copy of `bytes`.
    fn upload(&self, bytes: &[u8]) -> DeviceResult<Self::Buf>;
    /// Copies `bytes` to the start of `buf`.
    fn write(&self, buf: &mut Self::Buf, bytes: &[u8]) -> DeviceResult<()>;
    /// Copies the start of `buf` into `out`, after all work queued before.
    fn read(&self, buf: &Self::Buf, out: &mut [u8]) -> DeviceResult<()>;
    /// Queues `kernel` on `grid` blocks of its block size; the arguments are already checked.
    fn submit(&self, kernel: &Kernel, grid: u32, args: &[Arg<'_, Self::Buf>]) -> DeviceResult<()>;
    /// Records the launches `record` makes instead of running them, as one graph.
    fn capture(&self, record: &mut dyn FnMut() -> DeviceResult<()>) -> DeviceResult<Self::Graph>;
    /// Runs a captured graph.
    fn replay(&self, graph: &Self::Graph) -> DeviceResult<()>;
    /// A mark at this point of the queued work.
    fn mark(&self) -> DeviceResult<Self::Mark>;
    /// Milliseconds of device time between two marks (waits for the later one).
    fn elapsed_ms(&self, from: &Self::Mark, to: &Self::Mark) -> DeviceResult<f64>;
    /// Launches the host has submitted so far: each kernel launched alone and each graph replay count one.
    fn launches(&self) -> u64;
    /// Bytes of device memory in use (by this process and, on a shared device, others).
    fn memory_in_use(&self) -> DeviceResult<usize>;

    /// Queues `kernel` on `grid` blocks, its arguments checked against its parameters.
    fn launch(&self, kernel: &Kernel, grid: u32, args: &[Arg<'_, Self::Buf>]) -> DeviceResult<()> {
        check_args(kernel, args)?;
        self.submit(kernel, grid, args)
    }
}

/// An NVIDIA device through the CUDA driver: the first device, one stream,
/// the kernels compiled by NVRTC for its compute capability.
pub struct Cuda {
    ctx: Arc<cudarc::driver::CudaContext>,
    stream: Arc<cudarc::driver::CudaStream>,
    functions: Vec<(&'static str, cudarc::driver::CudaFunction)>,
    name: String,
    launches: std::sync::atomic::AtomicU64,
}

fn driver(what: &str) -> impl Fn(cudarc::driver::DriverError) -> DeviceError + '_ {
    move |e| DeviceError(format!("{what}: {e}"))
}

impl Cuda {
    /// Opens device 0 and compiles every kernel to machine code for its
    /// compute capability with NVRTC: the toolkit's where the loader finds it, else the copy
    /// `make tools` installs under `root` (or `$FALSIFY_NVRTC`).
    pub fn open(root: &std::path::Path) -> DeviceResult<Cuda> {
        use cudarc::driver::CudaContext;
        let device = super::probe().map_err(DeviceError)?;
        // SAFETY: only tries to dlopen NVRTC by its usual names; no symbol is called.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            let path = super::find_nvrtc(root)
                .map_err(|e| DeviceError(format!("no NVRTC to compile the kernels with ({e})")))?;
            super::Nvrtc::load(&path).map_err(DeviceError)?;
        }
        let ctx = CudaContext::new(0).map_err(driver("cuCtxCreate"))?;
        // One stream and no other: the per-buffer events cudarc records for
        // several streams would break graph capture, and nothing needs them.
        // SAFETY: called before any buffer or stream of this context exists.
        unsafe { ctx.disable_event_tracking() };
        // A stream of its own: the legacy default stream cannot be captured.
        let stream = ctx.new_stream().map_err(driver("cuStreamCreate"))?;
        // Machine code for the device's own architecture, not PTX: a driver older
        // than this NVRTC cannot compile its PTX, but loads a cubin of its major version.
        let sm = format!("sm_{}{}", device.capability.0, device.capability.1);
        let mut functions = Vec::new();
        for unit in &UNITS {
            let cubin = super::compile_cubin(unit.name, &unit.program(), &sm).map_err(DeviceError)?;
            let module = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin)).map_err(driver("cuModuleLoadData"))?;
            for k in unit.kernels() {
                functions.push((k.name, module.load_function(k.name).map_err(driver(k.name))?));
            }
        }
        let name = format!("{} (compute capability {}.{})", device.name, device.capability.0, device.capability.1);
        Ok(Cuda { ctx, stream, functions, name, launches: 0.into() })
    }

    fn function(&self, kernel: &Kernel) -> DeviceResult<&cudarc::driver::CudaFunction> {
        self.functions
            .iter()
            .find(|(n, _)| *n == kernel.name)
            .map(|(_, f)| f)
            .ok_or_else(|| DeviceError(format!("{}: not loaded", kernel.name)))
    }
}

impl Device for Cuda {
    type Buf = cudarc::driver::CudaSlice<u8>;
    type Graph = cudarc::driver::CudaGraph;
    type Mark = cudarc::driver::CudaEvent;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn alloc(&self, bytes: usize) -> DeviceResult<Self::Buf> {
        self.stream.alloc_zeros::<u8>(bytes.max(1)).map_err(driver("cuMemAlloc"))
    }

    fn upload(&self, bytes: &[u8]) -> DeviceResult<Self::Buf> {
        if bytes.is_empty() {
            return self.alloc(1);
        }
        self.stream.clone_htod(bytes).map_err(driver("cuMemcpyHtoD"))
    }

    fn write(&self, buf: &mut Self::Buf, bytes: &[u8]) -> DeviceResult<()> {
        let mut dst = buf.slice_mut(..bytes.len());
        self.stream.memcpy_htod(bytes, &mut dst).map_err(driver("cuMemcpyHtoD"))
    }

    fn read(&self, buf: &Self::Buf, out: &mut [u8]) -> DeviceResult<()> {
        self.stream.memcpy_dtoh(&buf.slice(..out.len()), out).map_err(driver("cuMemcpyDtoH"))?;
        self.stream.synchronize().map_err(driver("cuStreamSynchronize"))
    }

    fn submit(&self, kernel: &Kernel, grid: u32, args: &[Arg<'_, Self::Buf>]) -> DeviceResult<()> {
        use cudarc::driver::{LaunchConfig, PushKernelArg};
        let f = self.function(kernel)?;
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::Buf(buf) => b.arg(*buf),
                Arg::I32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (kernel.block, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the arguments match the kernel's declared parameters (checked by
        // `Device::launch`), every buffer outlives the launch, and the kernels
        // index only within the sizes the forward pass allocated for them.
        unsafe { b.launch(cfg) }.map_err(driver(kernel.name))?;
        self.launches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn capture(&self, record: &mut dyn FnMut() -> DeviceResult<()>) -> DeviceResult<Self::Graph> {
        use cudarc::driver::sys;
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(driver("cuStreamBeginCapture"))?;
        let before = self.launches();
        let recorded = record();
        let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(driver("cuStreamEndCapture"));
        // Launches recorded into the graph were not submitted to run.
        self.launches.store(before, std::sync::atomic::Ordering::Relaxed);
        recorded?;
        graph?.ok_or_else(|| DeviceError("cuStreamEndCapture: no graph was captured".into()))
    }

    fn replay(&self, graph: &Self::Graph) -> DeviceResult<()> {
        graph.launch().map_err(driver("cuGraphLaunch"))?;
        self.launches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn mark(&self) -> DeviceResult<Self::Mark> {
        let flags = cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
        self.stream.record_event(Some(flags)).map_err(driver("cuEventRecord"))
    }

    fn elapsed_ms(&self, from: &Self::Mark, to: &Self::Mark) -> DeviceResult<f64> {
        to.synchronize().map_err(driver("cuEventSynchronize"))?;
        from.elapsed_ms(to).map(f64::from).map_err(driver("cuEventElapsedTime"))
    }

    fn launches(&self) -> u64 {
        self.launches.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn memory_in_use(&self) -> DeviceResult<usize> {
        self.stream.synchronize().map_err(driver("cuStreamSynchronize"))?;
        let (free, total) = self.ctx.mem_get_info().map_err(driver("cuMemGetInfo"))?;
        Ok(total.saturating_sub(free))
    }
}
