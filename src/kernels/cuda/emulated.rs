//! A [`Device`] emulated on the CPU, for the tests: the kernels compiled as
//! C++20 with `emulate.h` into a shared library, buffers in host memory, a
//! graph the list of launches it recorded (arguments kept by value, as a CUDA
//! graph keeps them), marks host clock readings. It runs the real kernels'
//! arithmetic and the real launch sequence of the forward pass, so the host
//! side of the CUDA backend is tested where there is no GPU.

use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::device::{Arg, Device, DeviceError, DeviceResult};
use super::{Kernel, COMMON, KERNELS, UNITS};

/// The kernels' C++ source for the host: `emulate.h`, the common helpers with
/// host stand-ins for their inline PTX, the units without `extern "C"`.
pub fn emulation_source() -> String {
    let common = COMMON
        .replace(r#"asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));"#, "f = half_to_float(h);")
        .replace(r#"asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));"#, "h = float_to_half(f);");
    assert!(!common.contains("asm("), "every inline PTX line has a host stand-in");
    let units: String = UNITS.iter().map(|u| u.source.replace("extern \"C\" ", "")).collect();
    format!("{}\n{common}\n{units}\n", include_str!("emulate.h"))
}

/// The parameter types `name`'s signature in the sources declares (`const float*`, `int`, …).
pub fn declared_params(name: &str) -> Vec<String> {
    let all: String = UNITS.iter().map(|u| u.source).collect();
    let head = format!("__global__ void {name}(");
    let start = all.find(&head).unwrap_or_else(|| panic!("{name}: not in the sources")) + head.len();
    let end = start + all[start..].find(')').expect("a closing parenthesis");
    all[start..end]
        .split(',')
        .map(|p| {
            let p = p.split_whitespace().collect::<Vec<_>>().join(" ");
            let cut = p.rfind([' ', '*']).expect("a type and a name");
            p[..=cut].trim().to_owned()
        })
        .collect()
}

/// `emu_launch(name, grid, block, params)`: the kernel called `name` with its
/// parameters read as CUDA's `kernelParams` are (each a pointer to the value).
fn dispatcher() -> String {
    let mut s = String::from(
        "#include <mutex>\nextern \"C\" int emu_launch(const char* name, unsigned grid, unsigned block, void** p) {\n    static std::mutex one_at_a_time;\n    std::lock_guard<std::mutex> g(one_at_a_time);\n",
    );
    for k in &KERNELS {
        let args: Vec<String> =
            declared_params(k.name).iter().enumerate().map(|(i, t)| format!("*({t}*)p[{i}]")).collect();
        s.push_str(&format!(
            "    if (!std::strcmp(name, \"{}\")) {{ launch(grid, block, [&] {{ {}({}); }}); return 0; }}\n",
            k.name,
            k.name,
            args.join(", ")
        ));
    }
    s.push_str("    return 1;\n}\n");
    s
}

/// The emulation library, built with the host's C++ compiler into the
/// system's temporary directory under a name from its source's hash (so the
/// tests build it once per source, and a changed kernel builds anew); its
/// path, or why it cannot be built.
pub fn library() -> Result<PathBuf, String> {
    use sha2::Digest;
    if !crate::util::on_path("c++") {
        return Err("no C++ compiler (c++) to emulate the kernels with".into());
    }
    let source = format!("{}\n{}", emulation_source(), dispatcher());
    let hash: String = sha2::Sha256::digest(source.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
    let lib = std::env::temp_dir().join(format!("falsify-emulated-kernels-{hash}.so"));
    if lib.is_file() {
        return Ok(lib);
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (src, built) = (dir.path().join("emulated_device.cpp"), dir.path().join("emulated_device.so"));
    std::fs::write(&src, source).map_err(|e| e.to_string())?;
    let mut cc = std::process::Command::new("c++");
    // No _FORTIFY_SOURCE: its longjmp check refuses the jumps between fiber stacks.
    cc.args(["-std=c++20", "-O2", "-U_FORTIFY_SOURCE", "-pthread", "-shared", "-fPIC", "-w", "-o"])
        .arg(&built)
        .arg(&src);
    let out = crate::util::children::output(&mut cc, Some(std::time::Duration::from_secs(300)))
        .map_err(|e| format!("c++: {e}"))?;
    if !out.status.success() {
        return Err(format!("the C++ compiler cannot build the emulation: {}", String::from_utf8_lossy(&out.stderr)));
    }
    // Another test may have built it meanwhile: a rename over it is atomic.
    let staged = lib.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::copy(&built, &staged).map_err(|e| e.to_string())?;
    std::fs::rename(&staged, &lib).map_err(|e| e.to_string())?;
    Ok(lib)
}

type LaunchFn = unsafe extern "C" fn(*const i8, u32, u32, *mut *mut c_void) -> i32;

/// Host memory standing in for device memory, 8-byte aligned.
#[derive(Debug)]
pub struct HostBuf {
    ptr: *mut u64,
    words: usize,
    /// The device's count of bytes in use, and whether this buffer gives its bytes back.
    in_use: Arc<AtomicU64>,
    released: bool,
}

impl HostBuf {
    fn zeroed(bytes: usize, in_use: &Arc<AtomicU64>, released: bool) -> HostBuf {
        let words = bytes.div_ceil(8).max(1);
        let ptr = Box::into_raw(vec![0u64; words].into_boxed_slice()) as *mut u64;
        in_use.fetch_add(words as u64 * 8, Ordering::Relaxed);
        HostBuf { ptr, words, in_use: in_use.clone(), released }
    }

    fn bytes(&self) -> usize {
        self.words * 8
    }
}

impl Drop for HostBuf {
    fn drop(&mut self) {
        if !self.released {
            return; // Fault::Leaks: the bytes stay counted, the memory stays allocated.
        }
        self.in_use.fetch_sub(self.words as u64 * 8, Ordering::Relaxed);
        // SAFETY: `ptr` and `words` are the boxed slice `zeroed` leaked, freed once here.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.words)) });
    }
}

/// One argument kept by value: a buffer's address, an `int` or a `float`.
#[derive(Debug, Clone, Copy)]
enum Value {
    Ptr(*mut c_void),
    I32(i32),
    F32(f32),
}

/// A recorded launch.
#[derive(Debug, Clone)]
pub struct Launch {
    kernel: &'static Kernel,
    grid: u32,
    args: Vec<Value>,
}

/// A defect built into an emulated device, for the counterexamples of the checks that measure one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every launch after this many fails.
    FailsAfter(u64),
    /// Graph capture fails.
    NoCapture,
    /// A replayed graph leaves out the launches of this kernel.
    ReplaySkips(&'static str),
    /// Launches of this kernel never run.
    Skips(&'static str),
    /// A replayed graph counts as a launch per kernel in it, and pays each one's
    /// launch overhead (a graph emulated by relaunching).
    ReplayRelaunches,
    /// Freed buffers are never given back.
    Leaks,
    /// Every mark reads the same time, so nothing is timed.
    BlindMarks,
}

/// The emulated device.
pub struct Emulated {
    launch_fn: LaunchFn,
    recording: Mutex<Option<Vec<Launch>>>,
    launches: AtomicU64,
    in_use: Arc<AtomicU64>,
    /// A defect, for counterexamples.
    pub fault: Option<Fault>,
    /// Host time each launch submitted from the host costs (a graph replay pays it once).
    pub launch_overhead: Duration,
}

/// The emulated device, or `None` (with a note) where the host cannot build it.
pub fn device() -> Option<Emulated> {
    match library().and_then(|lib| Emulated::load(&lib)) {
        Ok(device) => Some(device),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

impl Emulated {
    /// Loads the library [`build`] made.
    pub fn load(lib: &Path) -> Result<Emulated, String> {
        let c = CString::new(lib.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: `c` is a NUL-terminated path to the library `build` compiled, whose only
        // initializers are its own globals'. The handle is never closed.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(format!("cannot load {}", lib.display()));
        }
        // SAFETY: looks up a symbol of the handle just opened by a NUL-terminated name.
        let sym = unsafe { libc::dlsym(handle, c"emu_launch".as_ptr()) };
        if sym.is_null() {
            return Err("emu_launch is not in the emulation library".into());
        }
        // SAFETY: `emu_launch` is defined by `dispatcher` with exactly this signature.
        let launch_fn = unsafe { std::mem::transmute::<*mut c_void, LaunchFn>(sym) };
        Ok(Emulated {
            launch_fn,
            recording: Mutex::new(None),
            launches: 0.into(),
            in_use: Arc::new(0.into()),
            fault: None,
            launch_overhead: Duration::ZERO,
        })
    }

    fn run(&self, l: &Launch) -> DeviceResult<()> {
        if self.fault == Some(Fault::Skips(l.kernel.name)) {
            return Ok(());
        }
        if let Some(Fault::FailsAfter(n)) = self.fault {
            if self.launches() >= n {
                return Err(DeviceError(format!("{}: an injected device error", l.kernel.name)));
            }
        }
        // Each value in the low bytes of an 8-byte slot, as the kernel's parameter reads it.
        let slot = |low: [u8; 4]| {
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&low);
            b
        };
        let mut values: Vec<[u8; 8]> = l
            .args
            .iter()
            .map(|v| match *v {
                Value::Ptr(p) => (p as u64).to_ne_bytes(),
                Value::I32(i) => slot(i.to_ne_bytes()),
                Value::F32(f) => slot(f.to_ne_bytes()),
            })
            .collect();
        let mut params: Vec<*mut c_void> = values.iter_mut().map(|v| v.as_mut_ptr().cast()).collect();
        let name = CString::new(l.kernel.name).expect("a kernel name has no NUL");
        // SAFETY: each parameter points to an 8-byte slot holding the value of the type the
        // kernel declares (arguments checked against the table, the table against the sources),
        // and every buffer address is a live `HostBuf` the forward pass sized for the kernel.
        let rc = unsafe { (self.launch_fn)(name.as_ptr(), l.grid, l.kernel.block, params.as_mut_ptr()) };
        if rc != 0 {
            return Err(DeviceError(format!("{}: not in the emulation library", l.kernel.name)));
        }
        Ok(())
    }
}

impl Device for Emulated {
    type Buf = HostBuf;
    type Graph = Vec<Launch>;
    type Mark = Instant;

    fn name(&self) -> String {
        "CUDA kernels emulated on the CPU".into()
    }

    fn alloc(&self, bytes: usize) -> DeviceResult<HostBuf> {
        Ok(HostBuf::zeroed(bytes, &self.in_use, self.fault != Some(Fault::Leaks)))
    }

    fn upload(&self, bytes: &[u8]) -> DeviceResult<HostBuf> {
        let mut b = self.alloc(bytes.len())?;
        self.write(&mut b, bytes)?;
        Ok(b)
    }

    fn write(&self, buf: &mut HostBuf, bytes: &[u8]) -> DeviceResult<()> {
        if bytes.len() > buf.bytes() {
            return Err(DeviceError(format!("a write of {} bytes to a buffer of {}", bytes.len(), buf.bytes())));
        }
        // SAFETY: `buf` holds at least `bytes.len()` bytes (checked) and does not overlap `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.ptr.cast::<u8>(), bytes.len()) };
        Ok(())
    }

    fn read(&self, buf: &HostBuf, out: &mut [u8]) -> DeviceResult<()> {
        if out.len() > buf.bytes() {
            return Err(DeviceError(format!("a read of {} bytes from a buffer of {}", out.len(), buf.bytes())));
        }
        // SAFETY: `buf` holds at least `out.len()` bytes (checked) and does not overlap `out`.
        unsafe { std::ptr::copy_nonoverlapping(buf.ptr.cast::<u8>(), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    fn submit(&self, kernel: &Kernel, grid: u32, args: &[Arg<'_, HostBuf>]) -> DeviceResult<()> {
        let kernel = KERNELS.iter().find(|k| k.name == kernel.name).expect("a kernel of the table");
        let args = args
            .iter()
            .map(|a| match a {
                Arg::Buf(b) => Value::Ptr(b.ptr.cast()),
                Arg::I32(i) => Value::I32(*i),
                Arg::F32(f) => Value::F32(*f),
            })
            .collect();
        let launch = Launch { kernel, grid, args };
        let mut recording = self.recording.lock().unwrap_or_else(|e| e.into_inner());
        match recording.as_mut() {
            Some(list) => list.push(launch),
            None => {
                drop(recording);
                std::thread::sleep(self.launch_overhead);
                self.run(&launch)?;
                self.launches.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn capture(&self, record: &mut dyn FnMut() -> DeviceResult<()>) -> DeviceResult<Vec<Launch>> {
        if self.fault == Some(Fault::NoCapture) {
            return Err(DeviceError("cuStreamBeginCapture: an injected failure".into()));
        }
        *self.recording.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
        let recorded = record();
        let list = self.recording.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
        recorded.map(|()| list)
    }

    fn replay(&self, graph: &Vec<Launch>) -> DeviceResult<()> {
        for l in graph {
            if self.fault != Some(Fault::ReplaySkips(l.kernel.name)) {
                self.run(l)?;
            }
        }
        let counted = if self.fault == Some(Fault::ReplayRelaunches) { graph.len() as u64 } else { 1 };
        std::thread::sleep(self.launch_overhead * counted as u32);
        self.launches.fetch_add(counted, Ordering::Relaxed);
        Ok(())
    }

    fn mark(&self) -> DeviceResult<Instant> {
        static BLIND: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        Ok(if self.fault == Some(Fault::BlindMarks) { *BLIND.get_or_init(Instant::now) } else { Instant::now() })
    }

    fn elapsed_ms(&self, from: &Instant, to: &Instant) -> DeviceResult<f64> {
        Ok(to.duration_since(*from).as_secs_f64() * 1e3)
    }

    fn launches(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    fn memory_in_use(&self) -> DeviceResult<usize> {
        Ok(self.in_use.load(Ordering::Relaxed) as usize)
    }
}
