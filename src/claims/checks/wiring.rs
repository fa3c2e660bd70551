//! Checks that the compiler makes: bricks wired out of pass order do not
//! compile (F009), and every brick type of the engine's registry is
//! `Send + Sync` (F014). Each compiles real Rust against the falsify library
//! built next to the binary, with `rustc --emit=metadata` (type checking, no
//! code generation).

use std::path::{Path, PathBuf};

use super::judge;
use super::{kind, Check, Kind, ModelParams, NoParams};
use crate::claims::{Context, Outcome, Unmet};

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![kind::<BrickWiring>(), kind::<BrickSendSync>()]
}

/// Bricks wired in pass order: the source every mis-wiring is made from.
pub const WIRED: &str = include_str!("../../../tests/wiring/wired.rs");

/// Mis-wirings of [`WIRED`]: a name, a line of it, and what replaces that line.
pub const MISWIRINGS: [(&str, &str, &str); 4] = [
    (
        "attention before RoPE",
        "let mixed = pass.apply(&p.attention, Some(0), (rotated, 0, attn))?;",
        "let mixed = pass.apply(&p.attention, Some(0), (projections, 0, attn))?;",
    ),
    (
        "projections of the residual, not its norm",
        "let projections = pass.apply(&p.qkv, Some(0), (normed, layer, q, k, v))?;",
        "let projections = pass.apply(&p.qkv, Some(0), (hidden, layer, q, k, v))?;",
    ),
    (
        "attention output added without its projection",
        "pass.apply(&p.o_proj, Some(0), (mixed, &layer.wo, o, hidden))",
        "pass.apply(&p.o_proj, Some(0), (hidden, &layer.wo, o, mixed))",
    ),
    (
        "RoPE applied twice",
        "let mixed = pass.apply(&p.attention, Some(0), (rotated, 0, attn))?;",
        "let mixed = pass.apply(&p.attention, Some(0), (pass.apply(&p.rope, Some(0), (rotated, angles))?, 0, attn))?;",
    ),
];

/// Where the falsify library a snippet compiles against lies.
#[derive(Debug, Clone)]
pub struct Library {
    /// `libfalsify.rlib`.
    pub rlib: PathBuf,
    /// The `deps` folder beside it.
    pub deps: PathBuf,
}

impl Library {
    /// The library built with the binary at `exe` (`target/<profile>/falsify`),
    /// or why there is none.
    pub fn beside(exe: &Path) -> Result<Library, Unmet> {
        let dir = exe.parent().ok_or_else(|| Unmet::Missing("the falsify binary has no folder".into()))?;
        let rlib = dir.join("libfalsify.rlib");
        let deps = dir.join("deps");
        match rlib.is_file() && deps.is_dir() {
            true => Ok(Library { rlib, deps }),
            false => Err(Unmet::Missing(format!(
                "{} is not built (cargo build --release builds it beside the binary)",
                rlib.display()
            ))),
        }
    }
}

/// How one snippet compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// What the snippet is.
    pub name: String,
    /// Whether rustc accepted it.
    pub ok: bool,
    /// rustc's error codes, in order.
    pub codes: Vec<String>,
    /// rustc's first error line.
    pub first_error: String,
}

/// Type-checks `source` as a library crate with `rustc`, against `library` when given.
pub fn compile(name: &str, source: &str, library: Option<&Library>) -> Result<Compiled, Unmet> {
    let dir = tempfile::Builder::new().prefix("falsify-wiring-").tempdir().map_err(Unmet::failed)?;
    let file = dir.path().join("snippet.rs");
    std::fs::write(&file, source).map_err(Unmet::failed)?;
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = std::process::Command::new(&rustc);
    cmd.args(["--edition", "2021", "--crate-type", "lib", "--crate-name", "snippet", "--emit=metadata", "--out-dir"])
        .arg(dir.path())
        .arg(&file);
    if let Some(lib) = library {
        let mut extern_arg = std::ffi::OsString::from("falsify=");
        extern_arg.push(&lib.rlib);
        let mut deps = std::ffi::OsString::from("dependency=");
        deps.push(&lib.deps);
        cmd.arg("--extern").arg(extern_arg).arg("-L").arg(deps);
    }
    let out = crate::util::children::output(&mut cmd, None)
        .map_err(|e| Unmet::Missing(format!("cannot run {}: {e}", PathBuf::from(&rustc).display())))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let codes =
        stderr.match_indices("error[E").filter_map(|(i, _)| stderr.get(i + 6..i + 11).map(str::to_string)).collect();
    let first_error = stderr.lines().find(|l| l.starts_with("error")).unwrap_or_default().to_string();
    Ok(Compiled { name: name.into(), ok: out.status.success(), codes, first_error })
}

/// [`WIRED`] with `line` replaced by `with`, or `None` when the line is not in it.
pub fn miswired(line: &str, with: &str) -> Option<String> {
    WIRED.contains(line).then(|| WIRED.replacen(line, with, 1))
}

/// F009: the wired source compiles; every mis-wiring fails to, with a type mismatch (E0308).
pub fn judge_wiring(wired: &Compiled, miswired: &[Compiled]) -> Outcome {
    let mut violations = Vec::new();
    if !wired.ok {
        violations.push(format!("the pipeline wired in pass order does not compile: {}", wired.first_error));
    }
    for m in miswired {
        match (m.ok, m.codes.iter().any(|c| c == "E0308")) {
            (true, _) => violations.push(format!("mis-wiring \"{}\" compiles", m.name)),
            (false, false) => violations
                .push(format!("mis-wiring \"{}\" fails, but not as a type mismatch: {}", m.name, m.first_error)),
            (false, true) => {}
        }
    }
    let mut o = judge::no_violations("miswirings_accepted", miswired.len() + 1, violations);
    let names: Vec<&str> = miswired.iter().map(|m| m.name.as_str()).collect();
    o.sentence = format!("{} (refused with E0308: {})", o.sentence, names.join("; "));
    o
}

/// `brick_wiring`: bricks wired out of pass order do not compile.
pub struct BrickWiring;

impl Check for BrickWiring {
    const NAME: &'static str = "brick_wiring";
    const DOC: &'static str = "the attention half of a layer wired in pass order (tests/wiring/wired.rs) type-checks against the built library, and each of its mis-wirings fails with a type mismatch (E0308)";
    const PARAMS: &'static str = "(none)";
    type Params = NoParams;

    fn run(_: &NoParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let library = Library::beside(cx.falsify_exe()?)?;
        let wired = compile("wired in pass order", WIRED, Some(&library))?;
        let miswired = MISWIRINGS
            .iter()
            .map(|(name, line, with)| {
                let source =
                    miswired(line, with).ok_or_else(|| Unmet::Failed(format!("{name}: line not in wired.rs")))?;
                compile(name, &source, Some(&library))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(judge_wiring(&wired, &miswired))
    }
}

/// A crate asserting at compile time that each of `types` is `Send + Sync`.
pub fn send_sync_source(types: &[&str]) -> String {
    let asserts: String = types.iter().map(|t| format!("    send_sync::<{t}>();\n")).collect();
    format!("fn send_sync<T: Send + Sync>() {{}}\npub fn every_brick() {{\n{asserts}}}\n")
}

/// F014: the assertion crate compiled.
pub fn judge_send_sync(compiled: &Compiled, types: &[&str]) -> Outcome {
    let violations = match compiled.ok {
        true => vec![],
        false => vec![format!("not Send + Sync: {}", compiled.first_error)],
    };
    let mut o = judge::no_violations("brick_types_not_send_sync", types.len(), violations);
    o.sentence = format!("{} ({})", o.sentence, types.join(", "));
    o
}

/// `brick_send_sync`: every brick type in the engine's registry is `Send + Sync`.
pub struct BrickSendSync;

impl Check for BrickSendSync {
    const NAME: &'static str = "brick_send_sync";
    const DOC: &'static str = "a crate asserting Send + Sync for the type of every brick in the engine's registry (Model::bricks) compiles against the built library";
    const PARAMS: &'static str = "model";
    type Params = ModelParams;

    fn run(p: &ModelParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let library = Library::beside(cx.falsify_exe()?)?;
        let model = &cx.model(&p.model)?.model;
        let mut types: Vec<&str> = model.bricks().iter().map(|b| b.type_name()).collect();
        types.sort_unstable();
        types.dedup();
        let compiled = compile("send + sync", &send_sync_source(&types), Some(&library))?;
        Ok(judge_send_sync(&compiled, &types))
    }
}
