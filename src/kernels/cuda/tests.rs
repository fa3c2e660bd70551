use std::path::{Path, PathBuf};

use super::*;

/// A ptxas 12.9 `-v` report, trimmed.
const PTXAS_LOG: &str = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'gemv_q8_0' for 'sm_90'
ptxas info    : Function properties for gemv_q8_0
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 26 registers, used 0 barriers, 384 bytes cmem[0]
ptxas info    : Compiling entry function 'rmsnorm' for 'sm_90'
ptxas info    : Function properties for rmsnorm
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 18 registers, used 1 barriers, 128 bytes smem, 376 bytes cmem[0]
";

/// Two functions of a `cuobjdump -sass` listing, trimmed.
const SASS: &str = "
	code for sm_90
		Function : gemv_q8_0
	.headerflags	@\"EF_CUDA_TEXMODE_UNIFIED EF_CUDA_64BIT_ADDRESS EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)\"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                                /* 0x00000a00ff017b82 */
        /*0010*/                   IDP4A.S8.S8 R5, R4, R5, RZ ;                          /* 0x0000000504057226 */
        /*0020*/              @!P0 IDP.4A.S8.S8 R7, R6, R7, R5 ;
        /*0028*/                   IDP.2A.LO.S16.S8 R7, R6, R7, R5 ;
        /*0030*/                   EXIT ;
		..........
		Function : add
        /*0000*/                   FADD R5, R2, R5 ;
        /*0010*/                   EXIT ;
";

#[test]
fn ptxas_reports_parse_per_kernel() {
    let r = parse_ptxas(PTXAS_LOG);
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0],
        Resources { kernel: "gemv_q8_0".into(), registers: 26, shared: 0, stack: 0, spill_stores: 0, spill_loads: 0 }
    );
    assert_eq!(
        r[1],
        Resources { kernel: "rmsnorm".into(), registers: 18, shared: 128, stack: 8, spill_stores: 4, spill_loads: 12 }
    );
    assert!(parse_ptxas("garbage\n").is_empty());
}

#[test]
fn sass_listings_parse_per_function() {
    let s = parse_sass(SASS);
    assert_eq!(s.functions.len(), 2);
    // Both spellings of the int8 dot product (IDP4A, IDP.4A from sm_80 on), not IDP.2A.
    assert_eq!(s.count("gemv_q8_0", "IDP4A"), 2);
    assert_eq!(s.count("add", "IDP4A"), 0);
    assert_eq!(s.functions["add"], ["FADD", "EXIT"]);
    assert_eq!(s.count("absent", "IDP4A"), 0);
}

#[test]
fn occupancy_follows_the_published_limits() {
    let sm90 = Arch::named("sm_90").unwrap();
    let sm89 = Arch::named("sm_89").unwrap();
    // 32 registers, 4 warps a block: 16 blocks fill sm_90's 64 warps.
    let full = occupancy(&sm90, 32, 0, 128);
    assert_eq!((full.blocks, full.warps, full.fraction), (16, 64, 1.0));
    // 64 registers: 2048 per warp, 32 warps of 65536 registers: half.
    let half = occupancy(&sm90, 64, 0, 128);
    assert_eq!((half.warps, half.limiter), (32, "registers"));
    assert!((half.fraction - 0.5).abs() < 1e-12);
    // 255 registers in 1024-thread blocks: not one block fits.
    let none = occupancy(&sm90, 255, 0, 1024);
    assert_eq!((none.blocks, none.fraction, none.limiter), (0, 0.0, "registers"));
    // sm_89 holds 48 warps; 1024-thread blocks of few registers: one block, 2/3.
    let ada = occupancy(&sm89, 16, 0, 1024);
    assert_eq!((ada.blocks, ada.warps, ada.limiter), (1, 32, "warps"));
    // Shared memory: 60 KB a block on sm_89's 100 KB is one block.
    let smem = occupancy(&sm89, 16, 60 * 1024, 128);
    assert_eq!((smem.blocks, smem.limiter), (1, "shared memory"));
    assert!(Arch::named("sm_20").unwrap_err().contains("sm_89"));
}

#[test]
fn every_kernel_belongs_to_a_unit_that_defines_it() {
    for k in &KERNELS {
        let unit = UNITS.iter().find(|u| u.name == k.unit).unwrap_or_else(|| panic!("{}: no unit {}", k.name, k.unit));
        assert!(unit.source.contains(&format!("__global__ void {}(", k.name)), "{} not in {}.cu", k.name, k.unit);
        assert!(k.block % 32 == 0 && k.block <= 1024, "{}", k.name);
    }
    let defined: usize = UNITS.iter().map(|u| u.source.matches("extern \"C\" __global__").count()).sum();
    assert_eq!(defined, KERNELS.len(), "every kernel in the sources is in the table");
}

#[test]
fn backend_choice_is_explicit() {
    let none = || Err("no CUDA driver: libcuda.so cannot be loaded".to_owned());
    assert_eq!(choose("cpu", none), Ok(Backend::Cpu));
    assert_eq!(choose("auto", none), Ok(Backend::Cpu));
    let e = choose("cuda", none).unwrap_err();
    assert!(e.contains("--backend cuda") && e.contains("libcuda"), "{e}");
    let h200 = || Ok(Device { name: "NVIDIA H200".into(), capability: (9, 0) });
    let e = choose("cuda", h200).unwrap_err();
    assert!(e.contains("NVIDIA H200") && e.contains("9.0"), "{e}");
    assert!(choose("tpu", none).is_err());
}

#[test]
fn the_probe_answers_without_panicking() {
    // On a host without a driver it names why; with one, it names the device.
    match probe() {
        Ok(d) => assert!(!d.name.is_empty()),
        Err(why) => assert!(!why.is_empty()),
    }
}

/// NVRTC, ptxas and cuobjdump from `make tools`, or `None` (with a note) when absent.
fn tools() -> Option<(Nvrtc, PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join(".tools/bin");
    let (ptxas, cuobjdump) = (bin.join("ptxas"), bin.join("cuobjdump"));
    match find_nvrtc(root) {
        Ok(p) if ptxas.is_file() && cuobjdump.is_file() => {
            Some((Nvrtc::load(&p).expect("NVRTC loads"), ptxas, cuobjdump))
        }
        _ => {
            eprintln!("skipped: NVRTC, ptxas or cuobjdump absent (make tools installs them)");
            None
        }
    }
}

/// Compiles, assembles and disassembles `program` for `arch`.
fn build(tools: &(Nvrtc, PathBuf, PathBuf), name: &str, program: &str, arch: &Arch) -> (Vec<Resources>, Sass) {
    let dir = tempfile::tempdir().unwrap();
    let ptx = compile(&tools.0, name, program, arch).unwrap_or_else(|log| panic!("{name}: {log}"));
    let (cubin, log) = assemble(&tools.1, name, &ptx, arch, dir.path()).unwrap();
    (parse_ptxas(&log), parse_sass(&disassemble(&tools.2, &cubin).unwrap()))
}

#[test]
fn every_kernel_compiles_assembles_and_the_gemvs_use_idp4a() {
    let Some(t) = tools() else { return };
    for arch in &ARCHS {
        for unit in &UNITS {
            let (res, sass) = build(&t, unit.name, &unit.program(), arch);
            for k in unit.kernels() {
                let r =
                    res.iter().find(|r| r.kernel == k.name).unwrap_or_else(|| panic!("{}: no ptxas report", k.name));
                assert!(r.registers > 0 && r.spill_stores == 0, "{}: {r:?}", k.name);
                assert_eq!(k.gemv, sass.count(k.name, "IDP4A") > 0, "{} on {}", k.name, arch.name);
            }
        }
    }
}

#[test]
fn a_syntax_error_fails_with_nvrtcs_log_and_a_plain_gemv_has_no_idp4a() {
    let Some(t) = tools() else { return };
    let arch = Arch::named("sm_90").unwrap();
    let broken = UNITS[0].program().replace("int dot = 0;", "int dot = 0");
    let log = compile(&t.0, "broken", &broken, &arch).unwrap_err();
    assert!(log.contains("error"), "{log}");
    // Products in f32, as a GEMV that dequantizes would take them (ptxas turns an
    // int8 multiply-add loop written out by hand into IDP.4A itself).
    let plain = UNITS[0].program().replace("__dp4a(", "dp4a_by_hand(").replace(
        "extern \"C\" __global__ void quantize_q8a",
        "__device__ int dp4a_by_hand(int a, int b, int c) {\n    float s = 0.0f;\n    for (int i = 0; i < 4; i++) s += (float)(signed char)(a >> (8 * i)) * (float)(signed char)(b >> (8 * i));\n    return c + (int)s;\n}\nextern \"C\" __global__ void quantize_q8a",
    );
    let (_, sass) = build(&t, "plain", &plain, &arch);
    assert_eq!(sass.count("gemv_q4_k", "IDP4A"), 0);
}
