//! The CUDA backend's host side: the kernels' CUDA C sources (embedded, compiled
//! at run time by NVRTC), the backend choice with a real device probe through
//! the driver (loaded dynamically by cudarc, so the binary runs where there is
//! none), and the tool chain that checks the kernels without a GPU: NVRTC to
//! PTX, `ptxas -v` to a cubin with each kernel's registers and shared memory,
//! `cuobjdump -sass` for the instructions, and the theoretical occupancy.
//!
//! [`device::Device`] is what the forward pass (`model::device`) drives:
//! [`device::Cuda`] on an NVIDIA GPU, an emulation of the same kernels on the
//! CPU in the tests.

pub mod device;
#[cfg(test)]
pub(crate) mod emulated;
mod occupancy;
mod toolchain;

pub use occupancy::{occupancy, Arch, Occupancy, ARCHS};
pub use toolchain::{
    assemble, compile, compile_cubin, disassemble, find_nvrtc, parse_ptxas, parse_sass, Nvrtc, Resources, Sass,
    NVRTC_ENV,
};

/// The text every unit starts with (f16 conversion, loads, reductions).
pub const COMMON: &str = include_str!("common.cuh");

/// One CUDA C source file, compiled as one NVRTC program.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    /// Its name (the file's stem).
    pub name: &'static str,
    /// Its text, without [`COMMON`].
    pub source: &'static str,
}

impl Unit {
    /// The program NVRTC compiles: [`COMMON`], then the unit.
    pub fn program(&self) -> String {
        format!("{COMMON}\n{}", self.source)
    }

    /// The kernels defined in it.
    pub fn kernels(&self) -> impl Iterator<Item = &'static Kernel> + '_ {
        KERNELS.iter().filter(|k| k.unit == self.name)
    }
}

/// The source files.
pub const UNITS: [Unit; 3] = [
    Unit { name: "gemv", source: include_str!("gemv.cu") },
    Unit { name: "elementwise", source: include_str!("elementwise.cu") },
    Unit { name: "attention", source: include_str!("attention.cu") },
];

/// How a kernel parameter is passed: a device pointer, an `int` or a `float`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// A pointer to device memory (any element type).
    Ptr,
    /// A 32-bit signed integer.
    I32,
    /// A 32-bit float.
    F32,
}

/// One kernel: its entry name, its unit, the block it is launched with and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    /// The `extern "C"` entry name.
    pub name: &'static str,
    /// The unit that defines it.
    pub unit: &'static str,
    /// Threads per block at launch (what occupancy is computed for).
    pub block: u32,
    /// A quantized GEMV, which must multiply with int8 dot instructions.
    pub gemv: bool,
    /// Its parameters in order, as its signature declares them (a launch is checked against them).
    pub params: &'static [Param],
}

const fn kernel(name: &'static str, unit: &'static str, block: u32, gemv: bool, params: &'static [Param]) -> Kernel {
    Kernel { name, unit, block, gemv, params }
}

use Param::{Ptr as P, F32 as F, I32 as I};

/// A GEMV's parameters: weights, quantized activations, output, rows, cols.
const GEMV: &[Param] = &[P, P, P, I, I];

/// Every kernel with its launch block size.
pub const KERNELS: [Kernel; 12] = [
    kernel("quantize_q8a", "gemv", 256, false, &[P, P, I]),
    kernel("gemv_q8_0", "gemv", 128, true, GEMV),
    kernel("gemv_q5_0", "gemv", 128, true, GEMV),
    kernel("gemv_q4_k", "gemv", 128, true, GEMV),
    kernel("gemv_q6_k", "gemv", 128, true, GEMV),
    kernel("rmsnorm", "elementwise", 256, false, &[P, P, P, I, F]),
    kernel("rope_neox", "elementwise", 64, false, &[P, I, P, F]),
    kernel("swiglu", "elementwise", 256, false, &[P, P, P, I]),
    kernel("add", "elementwise", 256, false, &[P, P, I]),
    kernel("argmax", "elementwise", 1024, false, &[P, I, P]),
    kernel("kv_store_f16", "attention", 256, false, &[P, P, P, P, P, I]),
    kernel("attention_f16", "attention", 128, false, &[P, P, P, P, P, P, I, I, I, I, F]),
];

/// The kernel named `name` (a name not in [`KERNELS`] is a bug of the caller).
pub fn kernel_named(name: &str) -> &'static Kernel {
    KERNELS.iter().find(|k| k.name == name).unwrap_or_else(|| panic!("no CUDA kernel `{name}`"))
}

/// Which GEMV kernel reads each weight format (formats not here have none).
const GEMVS: [(crate::gguf::TensorType, &str); 4] = [
    (crate::gguf::TensorType::Q8_0, "gemv_q8_0"),
    (crate::gguf::TensorType::Q5_0, "gemv_q5_0"),
    (crate::gguf::TensorType::Q4K, "gemv_q4_k"),
    (crate::gguf::TensorType::Q6K, "gemv_q6_k"),
];

/// The GEMV kernel for weights of type `ty`, or `None` for a type no kernel reads.
pub fn gemv_for(ty: crate::gguf::TensorType) -> Option<&'static Kernel> {
    GEMVS.iter().find(|(t, _)| *t == ty).map(|(_, name)| kernel_named(name))
}

/// The compute backend a command runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The CPU kernels.
    Cpu,
    /// A CUDA device.
    Cuda,
}

impl Backend {
    /// Its name, as `--backend` and the reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
    }
}

/// A CUDA device the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its name.
    pub name: String,
    /// Its compute capability (major, minor).
    pub capability: (i32, i32),
}

/// The first CUDA device, or why none is usable: no driver library, a driver
/// that does not start, or no device.
pub fn probe() -> Result<Device, String> {
    use cudarc::driver::{result, sys};
    // SAFETY: only tries to dlopen the driver library by its usual names; no symbol is called.
    if !unsafe { sys::is_culib_present() } {
        return Err("no CUDA driver: libcuda.so cannot be loaded (no NVIDIA driver installed)".into());
    }
    result::init().map_err(|e| format!("the CUDA driver did not start (cuInit: {e})"))?;
    let count = result::device::get_count().map_err(|e| format!("cuDeviceGetCount: {e}"))?;
    if count < 1 {
        return Err("the CUDA driver sees no device".into());
    }
    let dev = result::device::get(0).map_err(|e| format!("cuDeviceGet(0): {e}"))?;
    let name = result::device::get_name(dev).map_err(|e| format!("cuDeviceGetName: {e}"))?;
    let attr = |a| {
        // SAFETY: `dev` is a device handle the initialized driver returned; the attribute is a valid enum value.
        unsafe { result::device::get_attribute(dev, a) }.map_err(|e| format!("cuDeviceGetAttribute: {e}"))
    };
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    Ok(Device { name, capability: (major, minor) })
}

/// The backend `--backend` names (`cpu`, `cuda` or `auto`) resolves to on this
/// host, or a clear error. `probe` says which device is usable (normally
/// [`probe`]); `on_device` says whether the command runs its forward passes on
/// a device (`generate` and `bench` do; the others run on the CPU so far). `auto` is
/// the device where there is one and the command runs on it, else the CPU;
/// `cuda` without a device, or on a command that runs on the CPU, is an error.
pub fn choose(
    requested: &str,
    probe: impl FnOnce() -> Result<Device, String>,
    on_device: bool,
) -> Result<Backend, String> {
    match requested {
        "cpu" => Ok(Backend::Cpu),
        "auto" if !on_device => Ok(Backend::Cpu),
        "auto" => Ok(if probe().is_ok() { Backend::Cuda } else { Backend::Cpu }),
        "cuda" => match probe() {
            Err(why) => Err(format!("--backend cuda: no usable CUDA device: {why}; use --backend cpu or auto")),
            Ok(d) if !on_device => Err(format!(
                "--backend cuda: {} (compute capability {}.{}) was found, but this command runs on the CPU so far \
                 (`falsify generate` and `bench` run on the device); use --backend cpu or auto",
                d.name, d.capability.0, d.capability.1
            )),
            Ok(_) => Ok(Backend::Cuda),
        },
        other => Err(format!("--backend {other}: unknown backend (cpu, cuda or auto)")),
    }
}

#[cfg(test)]
mod tests;
