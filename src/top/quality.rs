//! The quality section of `falsify top --headless`: counts taken from the
//! source tree this binary was built from (test functions, `unsafe` blocks),
//! clippy's warnings when asked to run it, and line coverage when a coverage
//! tool is installed. Anything not measured says why instead of a number.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// A count, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured<T> {
    /// The value, when measured.
    pub value: Option<T>,
    /// How it was measured, or why it was not.
    pub how: String,
}

impl<T> Measured<T> {
    fn of(value: T, how: impl Into<String>) -> Measured<T> {
        Measured { value: Some(value), how: how.into() }
    }

    fn not(why: impl Into<String>) -> Measured<T> {
        Measured { value: None, how: why.into() }
    }
}

/// The project's quality figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// `#[test]` functions in src/ and tests/.
    pub tests: Measured<usize>,
    /// `unsafe` blocks and functions in src/.
    pub unsafe_blocks: Measured<usize>,
    /// Warnings of `cargo clippy --all-targets`.
    pub clippy_warnings: Measured<usize>,
    /// Line coverage of the library's tests, percent.
    pub coverage_percent: Measured<f64>,
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// Occurrences in code (not in `//` comments) of `unsafe {` and `unsafe fn`.
pub fn count_unsafe(source: &str) -> usize {
    source
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .map(|code| code.matches("unsafe {").count() + code.matches("unsafe fn").count())
        .sum()
}

/// Lines that are exactly a `#[test]` attribute.
pub fn count_tests(source: &str) -> usize {
    source.lines().filter(|l| l.trim() == "#[test]").count()
}

/// Runs clippy in `root` and counts its warnings (any diagnostic it emits at warning level).
fn clippy_warnings(root: &Path) -> Measured<usize> {
    let out = Command::new("cargo")
        .args(["clippy", "--all-targets", "--message-format=short", "--quiet"])
        .current_dir(root)
        .output();
    match out {
        Err(e) => Measured::not(format!("cargo clippy could not run: {e}")),
        Ok(o) if !o.status.success() => Measured::not(format!(
            "cargo clippy failed: {}",
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        )),
        Ok(o) => {
            let n = String::from_utf8_lossy(&o.stderr).lines().filter(|l| l.contains(": warning:")).count();
            Measured::of(n, "cargo clippy --all-targets (warnings counted)")
        }
    }
}

/// Line coverage with cargo-llvm-cov, when installed.
fn coverage(root: &Path) -> Measured<f64> {
    if !crate::util::on_path("cargo-llvm-cov") {
        return Measured::not("no coverage tool on PATH (install cargo-llvm-cov)");
    }
    let out = Command::new("cargo").args(["llvm-cov", "--lib", "--summary-only", "--json"]).current_dir(root).output();
    let percent = out.ok().filter(|o| o.status.success()).and_then(|o| {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        v["data"][0]["totals"]["lines"]["percent"].as_f64()
    });
    match percent {
        Some(p) => Measured::of(p, "cargo llvm-cov --lib (line coverage)"),
        None => Measured::not("cargo llvm-cov ran but gave no line coverage"),
    }
}

/// Measures the tree at `root` (this crate's checkout): counts always,
/// clippy and coverage only when `run_tools` (they take a while).
pub fn measure(root: &Path, run_tools: bool) -> Quality {
    let src = root.join("src");
    if !src.is_dir() {
        let why = format!("no source tree at {}", root.display());
        return Quality {
            tests: Measured::not(&why),
            unsafe_blocks: Measured::not(&why),
            clippy_warnings: Measured::not(&why),
            coverage_percent: Measured::not(&why),
        };
    }
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let lib = rust_files(&src);
    let tests: usize = lib.iter().chain(&rust_files(&root.join("tests"))).map(|p| count_tests(&read(p))).sum();
    let unsafe_blocks: usize = lib.iter().map(|p| count_unsafe(&read(p))).sum();
    let skipped = "not run (pass --quality to run it)";
    Quality {
        tests: Measured::of(tests, format!("#[test] functions in {}/src and tests", root.display())),
        unsafe_blocks: Measured::of(unsafe_blocks, format!("`unsafe {{` and `unsafe fn` in {}/src", root.display())),
        clippy_warnings: if run_tools { clippy_warnings(root) } else { Measured::not(skipped) },
        coverage_percent: if run_tools { coverage(root) } else { Measured::not(skipped) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ignore_comments_and_look_alikes() {
        let src = "fn a() {\n    // SAFETY: unsafe { in a comment\n    unsafe { x() }\n}\npub unsafe fn b() {}\nlet s = \"#[test]\";\n    #[test]\nfn t() {}\n";
        assert_eq!(count_unsafe(src), 2);
        assert_eq!(count_tests(src), 1);
    }

    #[test]
    fn the_crate_itself_has_tests_and_counted_unsafe() {
        let q = measure(Path::new(env!("CARGO_MANIFEST_DIR")), false);
        assert!(q.tests.value.unwrap() > 100 && q.unsafe_blocks.value.unwrap() > 0, "{q:?}");
        assert!(q.clippy_warnings.value.is_none() && q.clippy_warnings.how.contains("--quality"));
        let missing = measure(Path::new("/nonexistent"), true);
        assert!(missing.tests.value.is_none() && missing.tests.how.contains("no source tree"));
    }
}
