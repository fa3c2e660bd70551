//! Evaluating claims: the profile that applies on this host, the
//! requirements, then the check; a panicking check is an `error`, never a crash.
//! [`evaluate`] runs one claim (the test harness uses it per trial);
//! [`run_all`] runs a set in order for `falsify run`, judging the claims that
//! need the whole run's verdicts (F096) last, and stops early when asked (a
//! signal), keeping the claims judged so far.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use super::checks::Registry;
use super::requires::Requirement;
use super::spec::{merge, Body, Claim, ClaimSet, Profile};
use super::{Context, Outcome, Verdict};
use crate::baseline::recorded;
use crate::provenance::{ModelFile, Provenance};
use crate::record::{BenchRecord, ClaimResult, RunReport, Summary, SCHEMA_VERSION};

/// The profile that applies to `claim` here and its parameters, or why none does.
/// A claim without profiles runs with its own parameters.
pub fn choose_profile(
    claim: &Claim,
    profiles: &[Profile],
    cx: &mut Context,
) -> Result<(Option<String>, toml::Table), String> {
    let Body::Check { params, .. } = &claim.body else { return Ok((None, toml::Table::new())) };
    if claim.profiles.is_empty() {
        return Ok((None, params.clone()));
    }
    let mut why = Vec::new();
    for profile in profiles {
        let Some((_, table)) = claim.profiles.iter().find(|(n, _)| n == &profile.name) else { continue };
        match unmet(&profile.requires, cx) {
            None => return Ok((Some(profile.name.clone()), merge(params, table))),
            Some(reason) => why.push(format!("profile {} ({}): {reason}", profile.name, profile.description)),
        }
    }
    Err(format!("no profile of this claim applies on this host — {}", why.join("; ")))
}

/// The reasons `requires` are not met here, joined, or `None` when all are.
fn unmet(requires: &[Requirement], cx: &mut Context) -> Option<String> {
    let reasons: Vec<String> = requires.iter().filter_map(|r| cx.requirement(r).err()).collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
}

/// Evaluates one claim.
pub fn evaluate(claim: &Claim, set: &ClaimSet, registry: &Registry, cx: &mut Context) -> ClaimResult {
    let start = Instant::now();
    let mut profile = None;
    let mut params = toml::Table::new();
    let outcome = (|| {
        let missing = unmet(&claim.requires, cx);
        let kind = match &claim.body {
            Body::Pending(reason) => {
                let also = missing.map(|m| format!("; also missing here: {m}")).unwrap_or_default();
                return Outcome::pending(format!("{reason}{also}"));
            }
            Body::Check { kind, .. } => kind,
        };
        if let Some(reason) = missing {
            return Outcome::skipped(reason);
        }
        match choose_profile(claim, &set.profiles, cx) {
            Ok((p, t)) => (profile, params) = (p, t),
            Err(reason) => return Outcome::skipped(reason),
        }
        let Some(k) = registry.get(kind) else { return Outcome::error(format!("unknown check kind `{kind}`")) };
        match catch_unwind(AssertUnwindSafe(|| (k.run)(&params, cx))) {
            Ok(outcome) => outcome,
            Err(p) => Outcome::error(format!("the `{kind}` check panicked: {}", panic_message(p.as_ref()))),
        }
    })();
    ClaimResult {
        id: claim.id.clone(),
        title: claim.title.clone(),
        category: format!("{:?}", claim.category).to_lowercase(),
        points: claim.points,
        check: match &claim.body {
            Body::Check { kind, .. } => kind.clone(),
            Body::Pending(_) => "pending".into(),
        },
        params: serde_json::to_value(&params).unwrap_or_default(),
        profile,
        requires: claim.requires.iter().map(ToString::to_string).collect(),
        source: claim.source.clone(),
        outcome,
        duration_ms: start.elapsed().as_secs_f64() * 1e3,
    }
}

/// Whether a claim is judged over the whole run's verdicts.
fn needs_full_run(c: &Claim) -> bool {
    c.requires.contains(&Requirement::FullRun)
}

/// The claims of `set` whose trial name ("ID title") contains `filter`, in file order.
pub fn select<'a>(set: &'a ClaimSet, filter: Option<&str>) -> Vec<&'a Claim> {
    set.claims.iter().filter(|c| filter.is_none_or(|f| c.trial_name().contains(f))).collect()
}

/// What [`run_all`] judged.
#[derive(Debug)]
pub struct Judged {
    /// The claims judged, in file order.
    pub results: Vec<ClaimResult>,
    /// Why the run stopped before judging every chosen claim, when it did.
    pub interrupted: Option<String>,
}

/// Evaluates the `chosen` claims of `set` in file order, calling `on_result`
/// after each; claims that judge the whole run come last. Before each claim
/// and after it, `stop` is asked whether to stop (it names the reason, e.g. a
/// signal): then the claim being judged when the stop came is left out (its
/// child processes may have been ended under it), as are the claims not yet
/// begun, and [`Judged::interrupted`] says how far the run got.
pub fn run_all(
    chosen: &[&Claim],
    set: &ClaimSet,
    registry: &Registry,
    cx: &mut Context,
    stop: impl Fn() -> Option<String>,
    mut on_result: impl FnMut(usize, usize, &ClaimResult),
) -> Judged {
    let total = chosen.len();
    let mut results: Vec<(usize, ClaimResult)> = Vec::with_capacity(total);
    let order = chosen
        .iter()
        .enumerate()
        .filter(|(_, c)| !needs_full_run(c))
        .chain(chosen.iter().enumerate().filter(|(_, c)| needs_full_run(c)));
    let mut interrupted = None;
    for (i, claim) in order {
        if let Some(why) = stop() {
            interrupted = Some(why);
            break;
        }
        if needs_full_run(claim) {
            cx.full_run = Some(results.iter().map(|(_, r)| r.clone()).collect());
        }
        let r = evaluate(claim, set, registry, cx);
        if let Some(why) = stop() {
            interrupted = Some(format!("{why} while {} was being judged", claim.id));
            break;
        }
        on_result(results.len() + 1, total, &r);
        results.push((i, r));
    }
    cx.full_run = None;
    let interrupted = interrupted.map(|why| {
        format!("{why}: {} of {total} claims judged, the other {} left out", results.len(), total - results.len())
    });
    results.sort_by_key(|(i, _)| *i);
    Judged { results: results.into_iter().map(|(_, r)| r).collect(), interrupted }
}

/// The run record of the claims evaluated in `cx` so far: provenance (models
/// and baselines in use, hashed once per run), every benchmark and the brick
/// profile taken, every sample series recorded, and the recorded figures
/// from `baselines/`.
pub fn assemble_report(
    cx: &mut Context,
    claims_files: Vec<String>,
    filter: Option<String>,
    duration_s: f64,
    claims: Vec<ClaimResult>,
) -> RunReport {
    let threads = cx.settings.threads;
    let provenance = cx
        .memo("provenance", |cx| {
            let models = ["0.5b", "1.5b", "7b", "32b"]
                .iter()
                .filter_map(|s| cx.model_path(s).ok())
                .filter_map(|p| ModelFile::describe(&p).ok())
                .collect();
            let baselines = cx
                .llama()
                .ok()
                .and_then(|l| l.provenance())
                .map(|p| vec![("llama.cpp".to_owned(), p)])
                .unwrap_or_default();
            Ok(Provenance::collect(threads, models, baselines))
        })
        .unwrap_or_else(|_| Provenance::collect(threads, Vec::new(), Vec::new()));
    RunReport {
        schema: SCHEMA_VERSION,
        provenance,
        settings: cx.settings,
        claims_files,
        filter,
        duration_s,
        summary: Summary::of(claims.iter().map(|r| (r.outcome.verdict, r.points))),
        claims,
        benches: cx.benches().map(|(s, r)| BenchRecord { spec: s.clone(), result: r.clone() }).collect(),
        bricks: cx.brick_profile(),
        series: cx.series().to_vec(),
        recorded: recorded::load(&cx.root.join("baselines/recorded.toml")).unwrap_or_default(),
        interrupted: None,
    }
}

/// A one-line rendering of a result for terminals: verdict, id, title, sentence.
pub fn line(r: &ClaimResult) -> String {
    let tag = match r.outcome.verdict {
        Verdict::Pass => "PASS        ",
        Verdict::Falsified => "FALSIFIED   ",
        Verdict::Inconclusive => "INCONCLUSIVE",
        Verdict::Skipped => "skipped     ",
        Verdict::Pending => "pending     ",
        Verdict::Error => "ERROR       ",
    };
    format!("{tag} {} {} — {}", r.id, r.title, r.outcome.sentence)
}
