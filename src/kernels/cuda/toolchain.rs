//! NVIDIA's compilers run on the CPU: NVRTC (a library, loaded from the path
//! `make tools` installs it at) turns the CUDA C into PTX for a virtual
//! architecture, `ptxas -v` assembles the PTX into a cubin and reports each
//! kernel's registers, shared memory and spills, and `cuobjdump -sass` lists
//! the cubin's machine instructions. The parsers are pure, so the checks can
//! be audited on made-up tool output.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use super::Arch;
use crate::util::children;

/// The environment variable naming libnvrtc's full path (overrides the `.tools` copy).
pub const NVRTC_ENV: &str = "FALSIFY_NVRTC";

/// Where `make tools` installs libnvrtc (the `nvidia-cuda-nvrtc-cu12` wheel), under the project root.
const NVRTC_IN_TOOLS: &str = ".tools/cuda/nvidia/cuda_nvrtc/lib/libnvrtc.so.12";

/// How long one ptxas or cuobjdump run may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// libnvrtc's path: `$FALSIFY_NVRTC`, else the copy `make tools` installs under `root`.
pub fn find_nvrtc(root: &Path) -> Result<PathBuf, String> {
    let (path, from) = match std::env::var_os(NVRTC_ENV) {
        Some(p) => (PathBuf::from(p), format!("${NVRTC_ENV}")),
        None => (root.join(NVRTC_IN_TOOLS), "`make tools` (the nvidia-cuda-nvrtc-cu12 wheel)".to_owned()),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("lib:nvrtc: no NVRTC library at {} (installed by {from})", path.display()))
    }
}

/// NVRTC, loaded from a full path so that cudarc's NVRTC calls use it.
#[derive(Debug, Clone)]
pub struct Nvrtc {
    /// The library file.
    pub path: PathBuf,
    /// NVRTC's version (major, minor).
    pub version: (i32, i32),
}

/// dlopens `path` for the life of the process, its symbols global.
fn load_global(path: &Path) -> Result<(), String> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: a NUL in the path", path.display()))?;
    // SAFETY: `c` is a NUL-terminated path; dlopen runs the library's initializers, which for
    // NVIDIA's libnvrtc only set up its own state. The handle is never closed, so nothing loaded is unmapped.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns null or a NUL-terminated message owned by libc, copied at once.
        let why = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "unknown error".to_owned()
            } else {
                std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(format!("cannot load {}: {why}", path.display()));
    }
    Ok(())
}

impl Nvrtc {
    /// Loads libnvrtc from `path`, with the builtins library beside it first
    /// (libnvrtc loads it by its soname, which then resolves to this copy),
    /// and the library itself, which cudarc then finds by its soname.
    pub fn load(path: &Path) -> Result<Nvrtc, String> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let builtins = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libnvrtc-builtins.so")));
        if let Some(b) = builtins {
            load_global(&b)?;
        }
        load_global(path)?;
        // SAFETY: only tries to dlopen the library by its sonames, which now resolve to the copy loaded above.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(format!("{} was loaded, but not under the soname libnvrtc.so.12", path.display()));
        }
        let (mut major, mut minor) = (0, 0);
        // SAFETY: nvrtcVersion writes two ints through pointers to these locals.
        unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
            .result()
            .map_err(|e| format!("nvrtcVersion: {e:?}"))?;
        Ok(Nvrtc { path: path.to_path_buf(), version: (major, minor) })
    }
}

/// Compiles one CUDA C program (`name` for its messages) to PTX for `arch`'s
/// virtual architecture, or NVRTC's log when it does not compile. NVRTC must
/// have been loaded ([`Nvrtc::load`]; `_loaded` is the proof).
pub fn compile(_loaded: &Nvrtc, name: &str, program: &str, arch: &Arch) -> Result<String, String> {
    use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};
    if program.contains('\0') {
        return Err(format!("{name}: the source contains a NUL byte"));
    }
    let opts = CompileOptions { arch: Some(arch.virtual_name), name: Some(format!("{name}.cu")), ..Default::default() };
    match compile_ptx_with_opts(program, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(CompileError::CompileError { log, .. }) => Err(log.to_string_lossy().trim().to_owned()),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// Compiles one CUDA C program straight to a cubin of the real architecture
/// `sm` (`sm_90`): machine code the driver loads without compiling PTX, so a
/// driver older than this NVRTC still loads it. NVRTC must be loadable (the
/// toolkit's, or one [`Nvrtc::load`] loaded); its log when the program does not compile.
pub fn compile_cubin(name: &str, program: &str, sm: &str) -> Result<Vec<u8>, String> {
    use cudarc::nvrtc::{result, sys};
    let src = CString::new(program).map_err(|_| format!("{name}: the source contains a NUL byte"))?;
    let file = CString::new(format!("{name}.cu")).expect("a unit name has no NUL");
    let prog = result::create_program(&src, Some(&file)).map_err(|e| format!("{name}: nvrtcCreateProgram: {e:?}"))?;
    // SAFETY: `prog` was just created and is destroyed once, below, after its last use.
    let built = unsafe { result::compile_program(prog, &[format!("--gpu-architecture={sm}")]) };
    let out = match built {
        Ok(()) => {
            let mut size = 0usize;
            // SAFETY: `prog` compiled; NVRTC writes the cubin's size, then that many bytes into `cubin`.
            unsafe { sys::nvrtcGetCUBINSize(prog, &mut size).result() }
                .and_then(|()| {
                    let mut cubin = vec![0u8; size];
                    // SAFETY: as above; `cubin` holds `size` bytes.
                    unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()).result() }.map(|()| cubin)
                })
                .map_err(|e| format!("{name}: nvrtcGetCUBIN for {sm}: {e:?}"))
        }
        Err(e) => {
            // SAFETY: `prog` is live; the log is copied out before it is destroyed.
            let log = unsafe { result::get_program_log(prog) }
                .map(|l| l.iter().map(|&c| c as u8 as char).filter(|&c| c != '\0').collect::<String>())
                .unwrap_or_default();
            Err(format!("{name}: NVRTC for {sm}: {e:?}: {}", log.trim()))
        }
    };
    // SAFETY: `prog` is destroyed once, after its last use.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// Runs a tool with a time limit; its stdout and stderr, or why it failed.
fn run_tool(cmd: &mut Command) -> Result<(String, String), String> {
    let what = format!("{:?}", cmd.get_program());
    let out = children::output(cmd, Some(TOOL_TIMEOUT)).map_err(|e| format!("cannot run {what}: {e}"))?;
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    if out.status.success() {
        Ok((stdout, stderr))
    } else {
        Err(format!("{what} failed ({}): {}", out.status, stderr.trim()))
    }
}

/// Assembles `ptx` for `arch` with `ptxas -v` into `dir/name.cubin`; the cubin's
/// path and ptxas's resource report.
pub fn assemble(ptxas: &Path, name: &str, ptx: &str, arch: &Arch, dir: &Path) -> Result<(PathBuf, String), String> {
    let src = dir.join(format!("{name}.{}.ptx", arch.name));
    let cubin = dir.join(format!("{name}.{}.cubin", arch.name));
    std::fs::write(&src, ptx).map_err(|e| format!("{}: {e}", src.display()))?;
    let (stdout, stderr) =
        run_tool(Command::new(ptxas).arg("-v").arg(format!("-arch={}", arch.name)).arg("-o").arg(&cubin).arg(&src))?;
    Ok((cubin, stdout + &stderr))
}

/// The SASS listing of a cubin (`cuobjdump -sass`). cuobjdump runs nvdisasm,
/// looked for on `PATH`, to which the directory of `cuobjdump` (when named by
/// a path) is added first.
pub fn disassemble(cuobjdump: &Path, cubin: &Path) -> Result<String, String> {
    let mut cmd = Command::new(cuobjdump);
    if let Some(dir) = cuobjdump.parent().filter(|d| !d.as_os_str().is_empty()) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let joined = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path)))
            .map_err(|e| format!("PATH with {}: {e}", dir.display()))?;
        cmd.env("PATH", joined);
    }
    run_tool(cmd.arg("-sass").arg(cubin)).map(|(out, _)| out)
}

/// One kernel's resources as ptxas reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// The kernel.
    pub kernel: String,
    /// Registers per thread.
    pub registers: u32,
    /// Static shared memory, bytes.
    pub shared: u32,
    /// Stack frame, bytes.
    pub stack: u32,
    /// Bytes spilled to local memory (stores).
    pub spill_stores: u32,
    /// Bytes reloaded from spills.
    pub spill_loads: u32,
}

/// The number before `unit` in `line` (`"26 registers"` → 26).
fn count_before(line: &str, unit: &str) -> Option<u32> {
    let at = line.find(unit)?;
    line[..at].trim_end().rsplit([' ', ',']).next()?.parse().ok()
}

/// Each entry function's resources from `ptxas -v` output.
pub fn parse_ptxas(log: &str) -> Vec<Resources> {
    let mut out: Vec<Resources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default();
            out.push(Resources { kernel: name.to_owned(), ..Resources::default() });
        } else if let Some(r) = out.last_mut() {
            if line.contains("bytes stack frame") {
                r.stack = count_before(line, "bytes stack frame").unwrap_or(0);
                r.spill_stores = count_before(line, "bytes spill stores").unwrap_or(0);
                r.spill_loads = count_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("registers") && line.contains("Used") {
                r.registers = count_before(line, "registers").unwrap_or(0);
                r.shared = count_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

/// The instructions of each function in a SASS listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sass {
    /// Function name → its opcodes with modifiers (`IDP4A.S8.S8`), in order.
    pub functions: BTreeMap<String, Vec<String>>,
}

impl Sass {
    /// How many of `function`'s instructions are `mnemonic` (`IDP4A`), with any
    /// modifiers. SASS spells the int8 dot product `IDP4A.S8.S8` on older
    /// architectures and `IDP.4A.S8.S8` from sm_80 on: the opcode is its first
    /// dotted part, or its first two joined.
    pub fn count(&self, function: &str, mnemonic: &str) -> usize {
        self.functions.get(function).map_or(0, |ops| {
            ops.iter()
                .filter(|op| {
                    let mut parts = op.split('.');
                    let first = parts.next().unwrap_or_default();
                    first == mnemonic || parts.next().is_some_and(|second| format!("{first}{second}") == mnemonic)
                })
                .count()
        })
    }
}

/// Parses `cuobjdump -sass` output: `Function : name` headers, then lines
/// `/*0040*/  [@P0] OPCODE.MODS operands ;`.
pub fn parse_sass(text: &str) -> Sass {
    let mut sass = Sass::default();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("Function :").or_else(|| t.strip_prefix("Function:")) {
            let name = name.trim().to_owned();
            sass.functions.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (Some(f), Some(rest)) = (&current, t.strip_prefix("/*").and_then(|r| r.split_once("*/"))) else {
            continue;
        };
        let mut words = rest.1.split_whitespace().skip_while(|w| w.starts_with('@'));
        if let Some(op) = words.next().map(|w| w.trim_end_matches(';')).filter(|w| !w.is_empty()) {
            if op.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                sass.functions.entry(f.clone()).or_default().push(op.to_owned());
            }
        }
    }
    sass
}
