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
    for k in &KERNELS {
        let declared: Vec<Param> = emulated::declared_params(k.name)
            .iter()
            .map(|t| match t.as_str() {
                "int" => Param::I32,
                "float" => Param::F32,
                t if t.ends_with('*') => Param::Ptr,
                t => panic!("{}: a parameter of type {t}", k.name),
            })
            .collect();
        assert_eq!(declared, k.params, "{}: the table's parameters are the signature's", k.name);
    }
    let defined: usize = UNITS.iter().map(|u| u.source.matches("extern \"C\" __global__").count()).sum();
    assert_eq!(defined, KERNELS.len(), "every kernel in the sources is in the table");
}

#[test]
fn backend_choice_is_explicit() {
    let none = || Err("no CUDA driver: libcuda.so cannot be loaded".to_owned());
    let h200 = || Ok(Device { name: "NVIDIA H200".into(), capability: (9, 0) });
    for on_device in [false, true] {
        assert_eq!(choose("cpu", none, on_device), Ok(Backend::Cpu));
        assert_eq!(choose("cpu", h200, on_device), Ok(Backend::Cpu));
        assert_eq!(choose("auto", none, on_device), Ok(Backend::Cpu));
        let e = choose("cuda", none, on_device).unwrap_err();
        assert!(e.contains("--backend cuda") && e.contains("libcuda"), "{e}");
        assert!(choose("tpu", none, on_device).is_err());
    }
    // A command that runs on the device takes it; one that runs on the CPU says so.
    assert_eq!(choose("cuda", h200, true), Ok(Backend::Cuda));
    assert_eq!(choose("auto", h200, true), Ok(Backend::Cuda));
    assert_eq!(choose("auto", h200, false), Ok(Backend::Cpu));
    let e = choose("cuda", h200, false).unwrap_err();
    assert!(e.contains("NVIDIA H200") && e.contains("9.0") && e.contains("generate"), "{e}");
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

/// The driver of the emulated kernels: `gemv_*` reads rows, cols, the weight
/// bytes and cols floats from stdin and writes the rows of y; `misc` checks the
/// other kernels against host formulas and prints each one's worst error.
const DRIVER: &str = r#"
#include <cstdio>
#include <random>
#include <string>
int main(int argc, char** argv) {
    std::string k = argv[1];
    if (k != "misc") {
        int rows, cols; unsigned long long len;
        if (fread(&rows, 4, 1, stdin) != 1 || fread(&cols, 4, 1, stdin) != 1 || fread(&len, 8, 1, stdin) != 1) return 2;
        std::vector<u8> w(len); std::vector<float> x(cols), y(rows); std::vector<int> a(cols / 32 * QA_WORDS);
        if (fread(w.data(), 1, len, stdin) != len || fread(x.data(), 4, cols, stdin) != (size_t)cols) return 2;
        launch((cols / 32 + 7) / 8, 256, [&] { quantize_q8a(x.data(), a.data(), cols); });
        auto g = k == "gemv_q8_0" ? gemv_q8_0 : k == "gemv_q5_0" ? gemv_q5_0 : k == "gemv_q4_k" ? gemv_q4_k : gemv_q6_k;
        launch((rows + 3) / 4, 128, [&] { g(w.data(), a.data(), y.data(), rows, cols); });
        fwrite(y.data(), 4, rows, stdout);
        return 0;
    }
    std::mt19937 rng(3); std::normal_distribution<float> N(0, 1);
    double worst = 0;
    auto err = [&](double got, double want) { worst = std::max(worst, std::fabs(got - want) / (1.0 + std::fabs(want))); };
    auto report = [&](const char* name) { printf("%s %.3e\n", name, worst); worst = 0; };
    int n = 896; std::vector<float> x(2 * n), w(n), y(2 * n);
    for (auto& v : x) v = N(rng); for (auto& v : w) v = N(rng);
    launch(2, 256, [&] { rmsnorm(x.data(), w.data(), y.data(), n, 1e-6f); });
    for (int r = 0; r < 2; r++) { double ss = 0; for (int i = 0; i < n; i++) ss += x[r*n+i] * x[r*n+i];
        for (int i = 0; i < n; i++) err(y[r*n+i], x[r*n+i] / std::sqrt(ss / n + 1e-6) * w[i]); }
    report("rmsnorm");
    int hd = 64, nh = 14, pos = 37; std::vector<float> q(nh * hd); for (auto& v : q) v = N(rng); auto q0 = q;
    launch(nh, 64, [&] { rope_neox(q.data(), hd, &pos, 1e6f); });
    for (int h = 0; h < nh; h++) for (int i = 0; i < hd / 2; i++) {
        double th = pos * std::pow(1e6, -2.0 * i / hd), a = q0[h*hd+i], b = q0[h*hd+i+hd/2];
        err(q[h*hd+i], a * std::cos(th) - b * std::sin(th)); err(q[h*hd+i+hd/2], a * std::sin(th) + b * std::cos(th)); }
    report("rope_neox");
    std::vector<float> gate(1000), up(1000), out(1000); for (auto& v : gate) v = N(rng); for (auto& v : up) v = N(rng);
    launch(4, 256, [&] { swiglu(gate.data(), up.data(), out.data(), 1000); });
    for (int i = 0; i < 1000; i++) err(out[i], gate[i] / (1 + std::exp(-(double)gate[i])) * up[i]);
    report("swiglu");
    auto sum = gate; launch(4, 256, [&] { add(sum.data(), up.data(), 1000); });
    for (int i = 0; i < 1000; i++) err(sum[i], (double)gate[i] + up[i]);
    report("add");
    std::vector<float> logits(151936); for (auto& v : logits) v = N(rng); logits[90000] = 50; logits[120000] = 50;
    int best = -1; launch(1, 1024, [&] { argmax(logits.data(), (int)logits.size(), &best); });
    err(best, 90000); report("argmax");
    int nkv = 2, kvd = nkv * hd, ctx = 64, last = 20; std::vector<u16> kc(ctx * kvd), vc(ctx * kvd);
    std::vector<std::vector<float>> K(last + 1, std::vector<float>(kvd)), V = K;
    for (int p = 0; p <= last; p++) { for (auto& v : K[p]) v = N(rng); for (auto& v : V[p]) v = N(rng);
        launch(1, 256, [&] { kv_store_f16(K[p].data(), V[p].data(), kc.data(), vc.data(), &p, kvd); }); }
    std::vector<float> Q(nh * hd), scores(nh * ctx), att(nh * hd); for (auto& v : Q) v = N(rng);
    float scale = 1 / std::sqrt((float)hd);
    launch(nh, 128, [&] { attention_f16(Q.data(), kc.data(), vc.data(), scores.data(), att.data(), &last, nh, nkv, hd, ctx, scale); });
    for (int h = 0; h < nh; h++) { int g = h / (nh / nkv); std::vector<double> s(last + 1); double mx = -1e30, tot = 0;
        for (int p = 0; p <= last; p++) { double d = 0; for (int i = 0; i < hd; i++) d += Q[h*hd+i] * half_to_float(float_to_half(K[p][g*hd+i])); s[p] = d * scale; mx = std::max(mx, s[p]); }
        for (auto& v : s) { v = std::exp(v - mx); tot += v; }
        for (int i = 0; i < hd; i++) { double o = 0; for (int p = 0; p <= last; p++) o += s[p] * half_to_float(float_to_half(V[p][g*hd+i])); err(att[h*hd+i], o / tot); } }
    report("attention_f16");
    return 0;
}
"#;

/// The kernels compiled for the host with the emulation header, or `None` (with a note) without a C++20 compiler.
fn emulated() -> Option<(tempfile::TempDir, PathBuf)> {
    if !crate::util::on_path("c++") {
        eprintln!("skipped: no C++ compiler (c++) to emulate the kernels with");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, exe) = (dir.path().join("emulated.cpp"), dir.path().join("emulated"));
    std::fs::write(&src, format!("{}\n{DRIVER}", emulated::emulation_source())).unwrap();
    let mut cc = std::process::Command::new("c++");
    cc.args(["-std=c++20", "-O1", "-U_FORTIFY_SOURCE", "-pthread", "-w", "-o"]).arg(&exe).arg(&src);
    let out = crate::util::children::output(&mut cc, Some(std::time::Duration::from_secs(300))).unwrap();
    if !out.status.success() {
        eprintln!("skipped: the C++ compiler cannot build the emulation: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some((dir, exe))
}

#[test]
fn the_kernels_emulated_on_the_cpu_match_the_reference_and_their_formulas() {
    let Some((_dir, exe)) = emulated() else { return };
    gemvs_equal_the_quant_reference(&exe);
    the_others_match_their_formulas(&exe);
}

/// The emulated GEMVs against `src/quant`'s dequantization times the kernel's int8 activations.
fn gemvs_equal_the_quant_reference(exe: &Path) {
    use crate::gguf::TensorType;
    let (rows, cols) = (8usize, 1024usize);
    let mut rng = crate::rng::SplitMix64(5);
    for (kernel, ty, scale) in [
        ("gemv_q8_0", TensorType::Q8_0, 0.0),
        ("gemv_q5_0", TensorType::Q5_0, 0.01),
        ("gemv_q4_k", TensorType::Q4K, 0.001),
        ("gemv_q6_k", TensorType::Q6K, 0.0001),
    ] {
        let w = crate::synth::random_weights(&mut rng, ty, rows * cols, 0.05, scale);
        let x: Vec<f32> = (0..cols).map(|_| 2.0 * crate::synth::uniform(&mut rng)).collect();
        let mut input = Vec::new();
        input.extend_from_slice(&(rows as i32).to_le_bytes());
        input.extend_from_slice(&(cols as i32).to_le_bytes());
        input.extend_from_slice(&(w.len() as u64).to_le_bytes());
        input.extend_from_slice(&w);
        input.extend(x.iter().flat_map(|v| v.to_le_bytes()));
        let mut child = std::process::Command::new(exe)
            .arg(kernel)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{kernel}");
        let y: Vec<f32> = out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(y.len(), rows);
        // The kernel's activations: per 32, d = max|x| / 127 in f32, quants rounded half to even.
        let xq: Vec<f64> = x
            .chunks_exact(32)
            .flat_map(|b| {
                let d = b.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
                b.iter().map(move |v| if d == 0.0 { 0.0 } else { f64::from(d) * f64::from((v / d).round_ties_even()) })
            })
            .collect();
        for (r, got) in y.iter().enumerate() {
            let mut row = vec![0.0f32; cols];
            let bytes = w.len() / rows;
            crate::quant::dequantize(ty, &w[r * bytes..(r + 1) * bytes], &mut row).unwrap();
            let want: f64 = row.iter().zip(&xq).map(|(a, b)| f64::from(*a) * b).sum();
            let norm = row.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt()
                * xq.iter().map(|b| b * b).sum::<f64>().sqrt();
            assert!((f64::from(*got) - want).abs() <= 1e-5 * norm, "{kernel} row {r}: {got} vs {want}");
        }
    }
}

/// The other emulated kernels against host formulas.
fn the_others_match_their_formulas(exe: &Path) {
    let out = std::process::Command::new(exe).arg("misc").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let checked: Vec<&str> = text.lines().collect();
    assert_eq!(checked.len(), 6, "{text}");
    for line in checked {
        let (name, worst) = line.split_once(' ').unwrap();
        assert!(worst.parse::<f64>().unwrap() < 1e-5, "{name}: worst error {worst}");
    }
}

#[test]
fn every_unit_compiles_straight_to_a_cubin_the_disassembler_reads() {
    let Some(t) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    for sm in ["sm_89", "sm_90"] {
        for unit in &UNITS {
            let cubin = compile_cubin(unit.name, &unit.program(), sm).unwrap_or_else(|e| panic!("{e}"));
            let path = dir.path().join(format!("{}.{sm}.cubin", unit.name));
            std::fs::write(&path, &cubin).unwrap();
            let sass = parse_sass(&disassemble(&t.2, &path).unwrap());
            for k in unit.kernels() {
                assert!(sass.functions.contains_key(k.name), "{} for {sm}: not in the cubin", k.name);
                assert_eq!(k.gemv, sass.count(k.name, "IDP4A") > 0, "{} for {sm}", k.name);
            }
        }
    }
    let broken = UNITS[0].program().replace("int dot = 0;", "int dot = 0");
    let e = compile_cubin("broken", &broken, "sm_90").unwrap_err();
    assert!(e.contains("error"), "{e}");
}
