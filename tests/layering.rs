//! The module tree's imports point one way: no cycle among `src/`'s top-level
//! modules in non-test code. Each module's edges are the `crate::<module>`
//! paths its files name (test modules and comments left out); a cycle is
//! printed with its members.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules each top-level module of `src/` imports.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tests" {
                    stack.push(path);
                }
                continue;
            }
            if !name.ends_with(".rs") || name == "tests.rs" {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned();
            if top == "main" || top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => &text[..i],
                None => &text,
            };
            for line in code.lines() {
                let line = line.split("//").next().unwrap();
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let names: Vec<&str> = match rest.strip_prefix('{') {
                        Some(group) => group.split(',').map(|n| n.trim().split("::").next().unwrap_or("")).collect(),
                        None => vec![rest],
                    };
                    for n in names {
                        let module: String = n.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        if !module.is_empty() && module != top {
                            edges.entry(top.clone()).or_default().insert(module);
                        }
                    }
                }
            }
        }
    }
    edges
}

/// Whether `to` is reachable from `from`.
fn reaches(edges: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(m) = stack.pop() {
        for next in edges.get(&m).into_iter().flatten() {
            if next == to {
                return true;
            }
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    false
}

#[test]
fn no_import_cycle_among_top_level_modules() {
    let edges = edges(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let cyclic: Vec<String> = edges
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(move |to| (from, to)))
        .filter(|(from, to)| reaches(&edges, to, from))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(cyclic.is_empty(), "imports that close a cycle: {}", cyclic.join(", "));
}

#[test]
fn the_run_record_and_utilities_are_leaves_of_their_layer() {
    let edges = edges(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(edges.get("util").is_none_or(BTreeSet::is_empty), "util imports {:?}", edges["util"]);
    for above in ["claims", "report", "top"] {
        assert!(!reaches(&edges, "record", above), "record reaches {above}");
    }
    assert!(!reaches(&edges, "report", "claims"), "report reaches claims");
}
