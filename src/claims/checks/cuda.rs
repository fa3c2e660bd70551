//! The CUDA kernels checked without a GPU (F061, F066, F070, F071): every
//! unit compiled by NVRTC for each target architecture, assembled by
//! `ptxas -v` (registers, shared memory, spills per kernel), the GEMVs'
//! machine code listed by `cuobjdump -sass`, and the theoretical occupancy
//! from the architecture's published limits. The compilers are NVIDIA's, run
//! on the CPU; nothing here claims a kernel ran on a device.

use std::path::Path;

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::{kind, Check, Kind};
use crate::claims::{Context, Outcome, Unmet};
use crate::kernels::cuda::{self, Arch, Kernel, Nvrtc, Resources, Sass, KERNELS, UNITS};
use crate::stats::Op;

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![kind::<CudaCompile>(), kind::<CudaSass>(), kind::<CudaRegisters>(), kind::<CudaOccupancy>()]
}

/// One unit compiled for one architecture: the PTX, or NVRTC's log.
#[derive(Debug, Clone)]
pub struct UnitBuild {
    /// The architecture.
    pub arch: Arch,
    /// The unit's name.
    pub unit: String,
    /// The PTX, or why it did not compile.
    pub ptx: Result<String, String>,
}

/// One kernel assembled for one architecture: what ptxas reported and its SASS opcodes.
#[derive(Debug, Clone)]
pub struct KernelBuild {
    /// The architecture.
    pub arch: Arch,
    /// The kernel.
    pub kernel: Kernel,
    /// Its resources; `None` when ptxas reported nothing for it.
    pub resources: Option<Resources>,
    /// How many of its instructions are the int8 dot product (IDP4A); `None` when not disassembled.
    pub int8_dots: Option<usize>,
}

/// The architectures named in a claim's parameters.
fn archs(names: &[String]) -> Result<Vec<Arch>, Unmet> {
    if names.is_empty() {
        return Err(Unmet::Failed("params: `archs` names no architecture".into()));
    }
    names.iter().map(|n| Arch::named(n).map_err(Unmet::Failed)).collect()
}

/// NVRTC loaded from `make tools`' copy (or `$FALSIFY_NVRTC`), once per run.
fn nvrtc(cx: &mut Context) -> Result<Nvrtc, Unmet> {
    cx.memo("cuda nvrtc", |cx| {
        let path = cuda::find_nvrtc(&cx.root).map_err(Unmet::Missing)?;
        Nvrtc::load(&path).map_err(Unmet::Failed)
    })
}

/// Every unit compiled for every architecture of `names`, once per run.
fn compiled(cx: &mut Context, names: &[String]) -> Result<Vec<UnitBuild>, Unmet> {
    let archs = archs(names)?;
    let nvrtc = nvrtc(cx)?;
    cx.memo(&format!("cuda compiled {}", names.join(",")), |cx| {
        cx.say(format_args!(
            "NVRTC {}.{}: {} units for {}",
            nvrtc.version.0,
            nvrtc.version.1,
            UNITS.len(),
            names.join(", ")
        ));
        Ok(archs
            .iter()
            .flat_map(|arch| {
                UNITS.iter().map(|u| UnitBuild {
                    arch: *arch,
                    unit: u.name.into(),
                    ptx: cuda::compile(&nvrtc, u.name, &u.program(), arch),
                })
            })
            .collect())
    })
}

/// Every kernel assembled by `ptxas -v` (and, with `sass`, disassembled by
/// cuobjdump) for every architecture of `names`, once per run.
fn assembled(cx: &mut Context, names: &[String], sass: bool) -> Result<Vec<KernelBuild>, Unmet> {
    let units = compiled(cx, names)?;
    cx.memo(&format!("cuda assembled {} {sass}", names.join(",")), |_| {
        let dir = tempfile::tempdir().map_err(Unmet::failed)?;
        let mut out = Vec::new();
        for b in &units {
            let ptx = b.ptx.as_ref().map_err(|log| {
                Unmet::Failed(format!(
                    "{} does not compile for {} (F061 says why): {}",
                    b.unit,
                    b.arch.name,
                    first_line(log)
                ))
            })?;
            let (cubin, log) =
                cuda::assemble(Path::new("ptxas"), &b.unit, ptx, &b.arch, dir.path()).map_err(Unmet::Failed)?;
            let listing = if sass { Some(sass_of(&cubin)?) } else { None };
            let resources = cuda::parse_ptxas(&log);
            for k in UNITS.iter().filter(|u| u.name == b.unit).flat_map(|u| u.kernels()) {
                out.push(KernelBuild {
                    arch: b.arch,
                    kernel: *k,
                    resources: resources.iter().find(|r| r.kernel == k.name).cloned(),
                    int8_dots: listing.as_ref().map(|s| s.count(k.name, "IDP4A")),
                });
            }
        }
        Ok(out)
    })
}

/// The SASS of a cubin.
fn sass_of(cubin: &Path) -> Result<Sass, Unmet> {
    cuda::disassemble(Path::new("cuobjdump"), cubin).map(|t| cuda::parse_sass(&t)).map_err(Unmet::Failed)
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// Parameters of the CUDA checks that only name architectures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchParams {
    /// Target architectures (`sm_89`, `sm_90`).
    pub archs: Vec<String>,
}

/// Judges the builds: each must compile, and its PTX must define each of the unit's kernels.
pub fn judge_compile(builds: &[UnitBuild], kernels: &[Kernel]) -> Outcome {
    let mut bad = Vec::new();
    for b in builds {
        match &b.ptx {
            Err(log) => bad.push(format!("{}.cu for {}: {}", b.unit, b.arch.name, first_line(log))),
            Ok(ptx) => {
                for k in kernels.iter().filter(|k| k.unit == b.unit) {
                    if !ptx.contains(&format!(".entry {}(", k.name)) {
                        bad.push(format!("{}.cu for {}: no entry `{}` in the PTX", b.unit, b.arch.name, k.name));
                    }
                }
            }
        }
    }
    judge::no_violations("cuda_compile_failures", builds.len(), bad)
}

/// `cuda_compile` (F061): every CUDA unit compiles with NVRTC and defines its kernels.
pub struct CudaCompile;

impl Check for CudaCompile {
    const NAME: &'static str = "cuda_compile";
    const DOC: &'static str =
        "every CUDA C unit compiles with NVRTC for each target architecture, its PTX defining each kernel";
    const PARAMS: &'static str = "archs";
    type Params = ArchParams;

    fn run(p: &ArchParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        Ok(judge_compile(&compiled(cx, &p.archs)?, &KERNELS))
    }
}

/// Judges the GEMVs' machine code: each must contain int8 dot instructions.
pub fn judge_sass(builds: &[KernelBuild]) -> Outcome {
    let gemvs: Vec<&KernelBuild> = builds.iter().filter(|b| b.kernel.gemv).collect();
    let bad = gemvs
        .iter()
        .filter(|b| b.int8_dots.unwrap_or(0) == 0)
        .map(|b| format!("{} for {}: no IDP4A instruction in its SASS", b.kernel.name, b.arch.name))
        .collect();
    let mut out = judge::no_violations("gemv_without_int8_dot", gemvs.len(), bad);
    if let Some(e) = out.evidence.as_mut() {
        e.details.extend(gemvs.iter().map(|b| {
            format!("{} {}: {} IDP4A", b.kernel.name, b.arch.name, b.int8_dots.map_or("?".into(), |n| n.to_string()))
        }));
    }
    out
}

/// `cuda_sass` (F066): the quantized GEMVs' SASS contains IDP4A.
pub struct CudaSass;

impl Check for CudaSass {
    const NAME: &'static str = "cuda_sass";
    const DOC: &'static str =
        "each quantized GEMV's machine code (cuobjdump -sass of the ptxas cubin) contains IDP4A int8 dot instructions";
    const PARAMS: &'static str = "archs";
    type Params = ArchParams;

    fn run(p: &ArchParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        Ok(judge_sass(&assembled(cx, &p.archs, true)?))
    }
}

/// One line on a kernel's resources.
fn describe(b: &KernelBuild, r: &Resources) -> String {
    format!(
        "{} {}: {} registers, {} B shared, {} B spilled, {} threads",
        b.kernel.name,
        b.arch.name,
        r.registers,
        r.shared,
        r.spill_stores + r.spill_loads,
        b.kernel.block
    )
}

/// Judges each kernel's resources against its architecture: registers per
/// thread within the most a thread may have, its block's registers and shared
/// memory within one SM's, and nothing spilled to local memory.
pub fn judge_registers(builds: &[KernelBuild]) -> Outcome {
    let mut bad = Vec::new();
    for b in builds {
        let Some(r) = &b.resources else {
            bad.push(format!("{} {}: ptxas reported no resources", b.kernel.name, b.arch.name));
            continue;
        };
        let a = &b.arch;
        let block_regs = r.registers.div_ceil(8) * 8 * b.kernel.block;
        if r.registers > a.max_registers_per_thread
            || block_regs > a.registers
            || r.shared > a.shared_per_block
            || r.spill_stores + r.spill_loads > 0
        {
            bad.push(format!(
                "{} (limits: {} registers a thread, {} an SM, {} B shared a block)",
                describe(b, r),
                a.max_registers_per_thread,
                a.registers,
                a.shared_per_block
            ));
        }
    }
    let mut out = judge::no_violations("register_limit_violations", builds.len(), bad);
    if let Some(e) = out.evidence.as_mut() {
        e.details.extend(builds.iter().filter_map(|b| b.resources.as_ref().map(|r| describe(b, r))));
    }
    out
}

/// `cuda_registers` (F070): registers and shared memory per kernel (ptxas -v) within the SM's limits.
pub struct CudaRegisters;

impl Check for CudaRegisters {
    const NAME: &'static str = "cuda_registers";
    const DOC: &'static str = "each kernel's registers and shared memory (ptxas -v) fit the target architecture, \
         with its launch block, and nothing spills";
    const PARAMS: &'static str = "archs";
    type Params = ArchParams;

    fn run(p: &ArchParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        Ok(judge_registers(&assembled(cx, &p.archs, false)?))
    }
}

/// Parameters of `cuda_occupancy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OccupancyParams {
    /// Target architectures.
    pub archs: Vec<String>,
    /// Operator on the lowest kernel's theoretical occupancy.
    pub op: Op,
    /// Threshold (a fraction of the SM's warps).
    pub threshold: f64,
}

/// Judges the lowest theoretical occupancy over every kernel and architecture
/// (a kernel without a ptxas report counts as 0).
pub fn judge_occupancy(p: &OccupancyParams, builds: &[KernelBuild]) -> Outcome {
    let mut lowest = f64::NAN;
    let mut details = Vec::new();
    for b in builds {
        let (fraction, line) = match &b.resources {
            Some(r) => {
                let o = cuda::occupancy(&b.arch, r.registers, r.shared, b.kernel.block);
                let line = format!(
                    "{}: {} blocks, {} of {} warps = {:.0}% (bound by {})",
                    describe(b, r),
                    o.blocks,
                    o.warps,
                    b.arch.max_warps,
                    100.0 * o.fraction,
                    o.limiter
                );
                (o.fraction, line)
            }
            None => (0.0, format!("{} {}: ptxas reported no resources", b.kernel.name, b.arch.name)),
        };
        lowest = if lowest.is_nan() { fraction } else { lowest.min(fraction) };
        details.push(line);
    }
    details.sort_by_key(|l| l.contains(" = 100%"));
    let mut q = Quantity::new("lowest_theoretical_occupancy", "fraction", lowest);
    q.n = builds.len();
    q.details = details;
    q.details.push(
        "limits per SM from the CUDA C++ Programming Guide's table of compute capabilities; allocation rules \
         (256-register warp units, 128-byte shared units, 1 KB reserved a block) from the CUDA Occupancy Calculator"
            .into(),
    );
    judge::quantity(q, p.op, p.threshold)
}

/// `cuda_occupancy` (F071): the theoretical occupancy of every kernel from its ptxas resources.
pub struct CudaOccupancy;

impl Check for CudaOccupancy {
    const NAME: &'static str = "cuda_occupancy";
    const DOC: &'static str = "the lowest theoretical occupancy over every kernel (its ptxas registers and shared \
         memory, its launch block, the target architecture's per-SM limits)";
    const PARAMS: &'static str = "archs, op, threshold";
    type Params = OccupancyParams;

    fn run(p: &OccupancyParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        Ok(judge_occupancy(p, &assembled(cx, &p.archs, false)?))
    }
}
