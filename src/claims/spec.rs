//! The claims files: `claims/*.toml`, one `[[claim]]` table per claim, plus
//! `[[profile]]` tables naming hardware profiles. Loading validates every
//! entry (unique ids, known check kinds, typed parameters, known requirements
//! and profiles, the full catalog range, points from 1 to [`MAX_POINTS`], no
//! NaN or infinite number anywhere) and reports each problem at its
//! file:line:column with a hint; it never panics on bad input. Files are read
//! size-limited, and a file that is not UTF-8 is named with the offset of its
//! first invalid byte.
//!
//! ```toml
//! [[claim]]
//! id = "F084"
//! title = "Decode >= 2x llama.cpp (0.5B)"
//! category = "performance"
//! points = 5
//! check = "bench"                      # or: pending = "why no check can run yet"
//! requires = ["model:0.5b", "llama.cpp"]
//! source = "claims catalog F084; seeds §3"
//! [claim.params]
//! model = "0.5b"
//! metric = "decode_ratio"
//! op = ">="
//! threshold = 2.0
//! [claim.profile.rtx4090]              # parameters that replace `params` under a profile
//! threshold = 976.0
//! ```
//!
//! `gate.toml` in the same directory is the gate policy, not a claims file.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};
use toml::{Spanned, Table};

use super::checks::Registry;
use super::requires::Requirement;

/// The catalog's claim groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// F001–F020: brick core invariants.
    Brick,
    /// F021–F040: token budget compliance.
    Budget,
    /// F041–F060: backend correctness.
    Correctness,
    /// F061–F080: CUDA kernel validation.
    Cuda,
    /// F081–F100: performance.
    Performance,
    /// F101–F120: optimization claims and showcase points.
    Optimization,
    /// M001–M020: measurement and scoring.
    Measurement,
}

/// What judges a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A registered check kind with its parameters.
    Check {
        /// The kind's registered name.
        kind: String,
        /// Its parameters, as written (validated against the kind's types at load).
        params: Table,
    },
    /// No check can run yet because its subject does not exist; always `skipped` with this reason.
    Pending(String),
}

/// One validated claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Its id, e.g. `F084`.
    pub id: String,
    /// One-line statement.
    pub title: String,
    /// Catalog group.
    pub category: Category,
    /// Points it is worth.
    pub points: u32,
    /// What judges it.
    pub body: Body,
    /// What must be present for it to be measured here.
    pub requires: Vec<Requirement>,
    /// Where the claim comes from.
    pub source: String,
    /// Hardware profiles with the parameters that replace `params` under each, in file order.
    pub profiles: Vec<(String, Table)>,
    /// Where it is defined, `file:line`.
    pub location: String,
}

impl Claim {
    /// The name a test runner shows: id and title.
    pub fn trial_name(&self) -> String {
        format!("{} {}", self.id, self.title)
    }
}

/// A hardware profile: a named set of thresholds that applies where its requirements are met.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    /// Its name (`rtx4090`, `roofline`).
    pub name: String,
    /// What it stands for.
    pub description: String,
    /// What the host must have for it to apply.
    pub requires: Vec<Requirement>,
}

/// Every claim and profile loaded from a set of files.
#[derive(Debug, Clone, Default)]
pub struct ClaimSet {
    /// Claims in file order, files in name order.
    pub claims: Vec<Claim>,
    /// Profiles in file order.
    pub profiles: Vec<Profile>,
}

/// One problem in a claims file, located.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, or 0 when the problem is the file as a whole.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)?;
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found while loading, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    claim: Vec<Spanned<RawClaim>>,
    #[serde(default)]
    profile: Vec<Spanned<RawProfile>>,
    /// `[[engine]]` tables, read by [`crate::engines::Engines::add_file`].
    #[serde(default, rename = "engine")]
    _engine: Option<serde::de::IgnoredAny>,
}

/// The most points one claim may be worth (the catalog's heaviest are 5).
pub const MAX_POINTS: u32 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaim {
    id: Spanned<String>,
    title: String,
    category: Category,
    /// 1 when absent.
    points: Option<Spanned<u32>>,
    check: Option<Spanned<String>>,
    pending: Option<String>,
    params: Option<Spanned<Table>>,
    requires: Option<Spanned<Vec<String>>>,
    source: String,
    #[serde(default)]
    profile: BTreeMap<String, Spanned<Table>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    description: String,
    #[serde(default)]
    requires: Vec<String>,
}

/// The 140 ids of the catalog: F001–F120 and M001–M020.
pub fn catalog_ids() -> Vec<String> {
    (1..=120).map(|i| format!("F{i:03}")).chain((1..=20).map(|i| format!("M{i:03}"))).collect()
}

/// The claims files of a directory: every `*.toml` except `gate.toml`, by name.
pub fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.file_name().is_some_and(|n| n != "gate.toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Collects located problems for one file.
struct Problems<'a> {
    file: &'a Path,
    text: &'a str,
    found: Vec<SpecError>,
}

impl Problems<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>, hint: Option<String>) {
        let (line, column) = crate::util::line_col(self.text, span.start);
        self.found.push(SpecError { file: self.file.to_path_buf(), line, column, message: message.into(), hint });
    }
}

impl ClaimSet {
    /// Loads `files`, validating each claim against `registry`. With
    /// `require_catalog`, every catalog id (F001–F120, M001–M020) must be present.
    pub fn load(files: &[PathBuf], registry: &Registry, require_catalog: bool) -> Result<ClaimSet, SpecErrors> {
        let mut set = ClaimSet::default();
        let mut errors = Vec::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        // (claim location, profile name) pairs, checked once every file's profiles are known.
        let mut used_profiles: Vec<(String, String)> = Vec::new();
        for file in files {
            let text = match crate::util::read_text_limited(file, crate::util::MAX_TEXT_FILE_BYTES) {
                Ok(t) => t,
                Err(e) => {
                    let e = e.to_string();
                    let why = e.strip_prefix(&format!("{}: ", file.display())).unwrap_or(&e);
                    errors.push(SpecError {
                        file: file.clone(),
                        line: 0,
                        column: 0,
                        message: format!("cannot read: {why}"),
                        hint: None,
                    });
                    continue;
                }
            };
            let mut problems = Problems { file, text: &text, found: Vec::new() };
            if let Ok(doc) = DeTable::parse(&text) {
                for (span, message) in non_finite_numbers(doc.get_ref()) {
                    let hint = "a NaN or infinite threshold, tolerance or bound makes a claim that cannot fail; \
                                write a finite number";
                    problems.at(span, message, Some(hint.into()));
                }
            }
            match toml::from_str::<RawFile>(&text) {
                Err(e) => problems.at(
                    e.span().unwrap_or(0..0),
                    e.message().trim_end().to_owned(),
                    Some("see the format in claims/README.md".into()),
                ),
                Ok(raw) => {
                    for p in raw.profile {
                        let span = p.span();
                        let p = p.into_inner();
                        let requires = parse_requirements(&p.requires, span.clone(), &mut problems);
                        set.profiles.push(Profile { name: p.name, description: p.description, requires });
                    }
                    for c in raw.claim {
                        let claim_span = c.span();
                        let c = c.into_inner();
                        if let Some(claim) = validate(c, claim_span, registry, &mut problems, &mut seen) {
                            used_profiles
                                .extend(claim.profiles.iter().map(|(name, _)| (claim.location.clone(), name.clone())));
                            set.claims.push(claim);
                        }
                    }
                }
            }
            errors.extend(problems.found);
        }
        let known: HashSet<&str> = set.profiles.iter().map(|p| p.name.as_str()).collect();
        for (at, name) in &used_profiles {
            if !known.contains(name.as_str()) {
                let (file, line) = at.rsplit_once(':').unwrap_or((at, "0"));
                errors.push(SpecError {
                    file: PathBuf::from(file),
                    line: line.parse().unwrap_or(0),
                    column: 1,
                    message: format!("this claim uses profile `{name}`, which no file defines"),
                    hint: Some("define it with a [[profile]] table (see claims/profiles.toml)".into()),
                });
            }
        }
        if require_catalog {
            let missing: Vec<String> = catalog_ids().into_iter().filter(|id| !seen.contains_key(id)).collect();
            if !missing.is_empty() {
                errors.push(SpecError {
                    file: files.first().and_then(|f| f.parent()).map(Path::to_path_buf).unwrap_or_default(),
                    line: 0,
                    column: 0,
                    message: format!("{} catalog claims are missing: {}", missing.len(), missing.join(", ")),
                    hint: Some("every id F001–F120 and M001–M020 needs one [[claim]] entry".into()),
                });
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(SpecErrors(errors))
        }
    }

    /// Loads the claims files of `dir` (see [`files_in`]) plus `extra` files.
    pub fn load_dir(dir: &Path, extra: &[PathBuf], registry: &Registry) -> Result<ClaimSet, SpecErrors> {
        let mut files = files_in(dir).map_err(|e| {
            SpecErrors(vec![SpecError {
                file: dir.to_path_buf(),
                line: 0,
                column: 0,
                message: format!("cannot list the claims directory: {e}"),
                hint: Some("pass the directory holding the claims files with --claims DIR".into()),
            }])
        })?;
        files.extend(extra.iter().cloned());
        ClaimSet::load(&files, registry, true)
    }
}

/// Every NaN or infinite float in the document `table`, in file order, with
/// its span and a message naming it by its dotted path (`claim[3].params.threshold`).
/// Every float a check reads (thresholds, tolerances, bounds) is found here,
/// whatever its kind's parameter types.
fn non_finite_numbers(table: &DeTable) -> Vec<(Range<usize>, String)> {
    let mut found = Vec::new();
    let mut stack: Vec<(String, &Spanned<DeValue>)> = table.iter().map(|(k, v)| (k.get_ref().to_string(), v)).collect();
    while let Some((path, value)) = stack.pop() {
        match value.get_ref() {
            DeValue::Float(f) if f.as_str().contains("nan") || f.as_str().contains("inf") => {
                found.push((value.span(), format!("{path} = {} is not a finite number", f.as_str())));
            }
            DeValue::Table(t) => stack.extend(t.iter().map(|(k, v)| (format!("{path}.{}", k.get_ref()), v))),
            DeValue::Array(a) => stack.extend(a.iter().enumerate().map(|(i, v)| (format!("{path}[{i}]"), v))),
            _ => {}
        }
    }
    found.sort_by_key(|(span, _)| span.start);
    found
}

fn parse_requirements(words: &[String], span: Range<usize>, problems: &mut Problems) -> Vec<Requirement> {
    let mut out = Vec::new();
    for w in words {
        match w.parse::<Requirement>() {
            Ok(r) => out.push(r),
            Err(e) => problems.at(span.clone(), e, Some(Requirement::VOCABULARY.into())),
        }
    }
    out
}

fn validate(
    c: RawClaim,
    span: Range<usize>,
    registry: &Registry,
    problems: &mut Problems,
    seen: &mut BTreeMap<String, String>,
) -> Option<Claim> {
    let before = problems.found.len();
    let (line, _) = crate::util::line_col(problems.text, c.id.span().start);
    let location = format!("{}:{line}", problems.file.display());
    let id = c.id.get_ref().trim().to_owned();
    if id.is_empty() || !id.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
        problems.at(
            c.id.span(),
            format!("claim id {id:?} is not a plain name"),
            Some("use letters, digits, - or _".into()),
        );
    } else if let Some(first) = seen.get(&id) {
        problems.at(c.id.span(), format!("duplicate claim id {id}"), Some(format!("first defined at {first}")));
    } else {
        seen.insert(id.clone(), location.clone());
    }
    let points = match &c.points {
        None => 1,
        Some(p) if (1..=MAX_POINTS).contains(p.get_ref()) => *p.get_ref(),
        Some(p) => {
            problems.at(
                p.span(),
                format!("points = {} is out of range", p.get_ref()),
                Some(format!("a claim is worth 1 to {MAX_POINTS} points")),
            );
            0
        }
    };
    let requires = match &c.requires {
        Some(r) => parse_requirements(r.get_ref(), r.span(), problems),
        None => Vec::new(),
    };
    let (params, params_span) = match c.params {
        Some(p) => {
            let span = p.span();
            (p.into_inner(), span)
        }
        None => (Table::new(), span.clone()),
    };
    let body = match (c.check, c.pending) {
        (Some(kind), None) => {
            let name = kind.get_ref().clone();
            match registry.get(&name) {
                None => problems.at(
                    kind.span(),
                    format!("unknown check kind `{name}`"),
                    Some(format!("known kinds: {}", registry.names().join(", "))),
                ),
                Some(k) => {
                    if let Err(e) = (k.validate)(&params) {
                        problems.at(
                            params_span,
                            format!("params of `{name}`: {e}"),
                            Some(format!("`{name}` checks that {}; params: {}", k.doc, k.params_hint)),
                        );
                    }
                    for (profile, table) in &c.profile {
                        let merged = merge(&params, table.get_ref());
                        if let Err(e) = (k.validate)(&merged) {
                            problems.at(table.span(), format!("profile `{profile}` params of `{name}`: {e}"), None);
                        }
                    }
                }
            }
            Body::Check { kind: name, params }
        }
        (None, Some(reason)) if !reason.trim().is_empty() => Body::Pending(reason),
        (Some(kind), Some(_)) => {
            problems.at(kind.span(), "a claim has either `check` or `pending`, not both", None);
            Body::Pending(String::new())
        }
        _ => {
            problems.at(
                span,
                format!("claim {id} has neither `check` nor `pending`"),
                Some("name a check kind, or say with `pending = \"…\"` why none can run yet".into()),
            );
            Body::Pending(String::new())
        }
    };
    if problems.found.len() > before {
        return None;
    }
    let profiles = c.profile.into_iter().map(|(name, t)| (name, t.into_inner())).collect();
    Some(Claim {
        id,
        title: c.title,
        category: c.category,
        points,
        body,
        requires,
        source: c.source,
        profiles,
        location,
    })
}

/// `base` with every key of `over` replaced or added.
pub fn merge(base: &Table, over: &Table) -> Table {
    let mut t = base.clone();
    for (k, v) in over {
        t.insert(k.clone(), v.clone());
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: impl AsRef<[u8]>) -> Result<ClaimSet, SpecErrors> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("falsify-spec-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("x.toml");
        std::fs::write(&file, text).unwrap();
        let r = ClaimSet::load(&[file], &Registry::builtin(), false);
        std::fs::remove_dir_all(&dir).unwrap();
        r
    }

    const GOOD: &str = "[[claim]]\nid = \"X1\"\ntitle = \"t\"\ncategory = \"correctness\"\ncheck = \"op_reference\"\n\
                        source = \"s\"\n[claim.params]\nop = \"rope\"\n";

    #[test]
    fn the_shipped_claims_load_and_cover_the_catalog() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("claims");
        let set = ClaimSet::load_dir(&dir, &[], &Registry::builtin()).unwrap_or_else(|e| panic!("{e}"));
        // The catalog's 140 and the serving claims S001–S011.
        assert_eq!(set.claims.len(), 152);
        assert!(set.profiles.iter().any(|p| p.name == "roofline" && p.requires.is_empty()));
    }

    #[test]
    fn a_valid_user_claim_loads() {
        let set = load_text(GOOD).unwrap();
        assert_eq!(set.claims[0].id, "X1");
    }

    #[test]
    fn errors_are_located_with_a_hint() {
        let cases = [
            (GOOD.replace("op_reference", "no_such_kind"), 5, "unknown check kind"),
            (GOOD.replace("\"rope\"", "3"), 7, "params of `op_reference`"),
            (GOOD.replace("category = \"correctness\"", "category = \"speed\""), 4, "unknown variant"),
            (format!("{GOOD}\n{GOOD}"), 11, "duplicate claim id X1"),
            (GOOD.replace("source = \"s\"", "source = \"s\"\nrequires = [\"gpu-magic\"]"), 7, "unknown requirement"),
            (GOOD.replace("title = \"t\"", "title = \"t"), 3, ""),
            (GOOD.replace("check = \"op_reference\"\n", ""), 1, "neither `check` nor `pending`"),
        ];
        for (text, line, needle) in cases {
            let e = load_text(&text).unwrap_err();
            let first = &e.0[0];
            assert_eq!(first.line, line, "{first}");
            assert!(first.column >= 1 && first.to_string().contains(needle), "{first}");
            assert!(first.to_string().contains("x.toml:"), "{first}");
        }
    }

    #[test]
    fn non_finite_numbers_are_refused_where_they_are_written() {
        let cases = [
            (format!("{GOOD}threshold = nan\n"), 9, 13, "claim[0].params.threshold = nan is not a finite number"),
            (format!("{GOOD}tolerance = +nan\n"), 9, 13, "claim[0].params.tolerance = +nan"),
            (format!("{GOOD}tolerance = inf\n"), 9, 13, "claim[0].params.tolerance = inf"),
            (format!("{GOOD}cases = [{{ inputs = [1.0], want = nan }}]\n"), 9, 35, "params.cases[0].want = nan"),
            (format!("{GOOD}[claim.profile.p]\nthreshold = -inf\n"), 10, 13, "claim[0].profile.p.threshold = -inf"),
        ];
        for (text, line, column, needle) in cases {
            let e = load_text(&text).unwrap_err();
            let first = &e.0[0];
            assert_eq!((first.line, first.column), (line, column), "{first}");
            assert!(first.to_string().contains(needle) && first.to_string().contains("cannot fail"), "{first}");
        }
    }

    #[test]
    fn points_are_bounded_and_default_to_one() {
        assert_eq!(load_text(GOOD).unwrap().claims[0].points, 1);
        let with = |points: &str| GOOD.replace("title = \"t\"\n", &format!("title = \"t\"\npoints = {points}\n"));
        assert_eq!(load_text(with("100")).unwrap().claims[0].points, MAX_POINTS);
        for points in ["0", "101", "4294967295", "4294967296", "-1"] {
            let e = load_text(with(points)).unwrap_err();
            let first = &e.0[0];
            assert_eq!((first.line, first.column), (4, 10), "{first}");
        }
        let e = load_text(with("4294967295")).unwrap_err().to_string();
        assert!(e.contains("points = 4294967295 is out of range") && e.contains("1 to 100 points"), "{e}");
    }

    #[test]
    fn a_non_utf8_claims_file_is_named_with_the_byte_offset() {
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes.insert(GOOD.find("\"t\"").unwrap() + 1, 0xff);
        let e = load_text(bytes).unwrap_err().to_string();
        assert!(e.contains("x.toml: cannot read: not UTF-8 (invalid byte at offset 29)"), "{e}");
    }

    #[test]
    fn the_catalog_range_is_enforced_and_unknown_profiles_are_rejected() {
        let dir = std::env::temp_dir().join(format!("falsify-spec-range-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("x.toml");
        std::fs::write(&file, format!("{GOOD}[claim.profile.nowhere]\nop = \"softmax\"\n")).unwrap();
        let e = ClaimSet::load(&[file], &Registry::builtin(), true).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("140 catalog claims are missing") && e.contains("profile `nowhere`"), "{e}");
    }
}
