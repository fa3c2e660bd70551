//! Theoretical occupancy: how many warps of a kernel an SM holds at once, from
//! its registers per thread, static shared memory and block size, against the
//! target architecture's limits.
//!
//! The limits are NVIDIA's published ones: the CUDA C++ Programming Guide,
//! "Technical Specifications per Compute Capability" (threads, warps and blocks
//! per SM, 64 K registers per SM, 255 per thread, shared memory per SM and per
//! block), and the CUDA Occupancy Calculator's allocation rules (registers are
//! allocated per warp in units of 256; shared memory in units of 128 bytes;
//! the CUDA runtime reserves 1 KB of shared memory per block on compute
//! capability 8.0 and later).
//!
//! | arch  | GPUs            | warps/SM | blocks/SM | registers/SM | regs/thread | smem/SM   | smem/block |
//! |-------|-----------------|----------|-----------|--------------|-------------|-----------|------------|
//! | sm_89 | RTX 4090, L4    | 48       | 24        | 65536        | 255         | 100 KB    | 99 KB      |
//! | sm_90 | H100, H200      | 64       | 32        | 65536        | 255         | 228 KB    | 227 KB     |

use serde::Serialize;

/// One target architecture's per-SM limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Arch {
    /// `sm_XY`, as ptxas names it.
    pub name: &'static str,
    /// `compute_XY`, the virtual architecture NVRTC compiles for.
    pub virtual_name: &'static str,
    /// Resident warps per SM.
    pub max_warps: u32,
    /// Resident blocks per SM.
    pub max_blocks: u32,
    /// 32-bit registers per SM.
    pub registers: u32,
    /// Registers one thread may use.
    pub max_registers_per_thread: u32,
    /// Shared memory per SM, bytes.
    pub shared_per_sm: u32,
    /// Shared memory one block may use, bytes.
    pub shared_per_block: u32,
}

/// Registers are allocated per warp in units of this many.
const REGISTER_UNIT: u32 = 256;
/// Shared memory is allocated in units of this many bytes.
const SHARED_UNIT: u32 = 128;
/// Shared memory the CUDA runtime reserves per block (compute capability ≥ 8.0).
const SHARED_RESERVED: u32 = 1024;

/// The architectures the kernels are checked for (see the module's table).
pub const ARCHS: [Arch; 2] = [
    Arch {
        name: "sm_89",
        virtual_name: "compute_89",
        max_warps: 48,
        max_blocks: 24,
        registers: 65536,
        max_registers_per_thread: 255,
        shared_per_sm: 100 * 1024,
        shared_per_block: 99 * 1024,
    },
    Arch {
        name: "sm_90",
        virtual_name: "compute_90",
        max_warps: 64,
        max_blocks: 32,
        registers: 65536,
        max_registers_per_thread: 255,
        shared_per_sm: 228 * 1024,
        shared_per_block: 227 * 1024,
    },
];

impl Arch {
    /// The architecture called `name` (`sm_90`), or an error listing the known ones.
    pub fn named(name: &str) -> Result<Arch, String> {
        ARCHS.iter().find(|a| a.name == name).copied().ok_or_else(|| {
            let known: Vec<&str> = ARCHS.iter().map(|a| a.name).collect();
            format!("unknown CUDA architecture `{name}` (known: {})", known.join(", "))
        })
    }
}

/// A kernel's theoretical occupancy on one architecture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Occupancy {
    /// Blocks resident per SM (0: the block cannot launch).
    pub blocks: u32,
    /// Warps resident per SM.
    pub warps: u32,
    /// `warps` over the SM's most.
    pub fraction: f64,
    /// What bounds it: warps, blocks, registers or shared memory.
    pub limiter: &'static str,
}

/// The occupancy of a kernel using `registers` per thread and `shared` bytes of
/// static shared memory, launched with `block` threads, on `arch`.
pub fn occupancy(arch: &Arch, registers: u32, shared: u32, block: u32) -> Occupancy {
    let warps_per_block = block.div_ceil(32).max(1);
    let regs_per_warp = (registers.max(1) * 32).div_ceil(REGISTER_UNIT) * REGISTER_UNIT;
    let by_regs =
        if registers > arch.max_registers_per_thread { 0 } else { (arch.registers / regs_per_warp) / warps_per_block };
    let shared_per_block = (shared + SHARED_RESERVED).div_ceil(SHARED_UNIT) * SHARED_UNIT;
    let by_shared = if shared > arch.shared_per_block { 0 } else { arch.shared_per_sm / shared_per_block };
    let limits = [
        ("warps", arch.max_warps / warps_per_block),
        ("blocks", arch.max_blocks),
        ("registers", by_regs),
        ("shared memory", by_shared),
    ];
    let (limiter, blocks) = limits.iter().copied().min_by_key(|&(_, n)| n).unwrap_or(("warps", 0));
    let warps = blocks * warps_per_block;
    Occupancy { blocks, warps, fraction: f64::from(warps) / f64::from(arch.max_warps), limiter }
}
