//! `cargo test --test claims`: one trial per claim in `claims/*.toml`.
//!
//! Verdicts map to trials: pass → ok; falsified, inconclusive and error →
//! FAILED with the evidence sentence (an undecided claim is not a pass, and a
//! red trial is the visible way to say "more is needed"); skipped and pending
//! → ignored, with the reason shown ("skipped: …" for something missing on
//! this host, "pending: …" for a subject not built yet). Filters, `--list`, `--exact` and `--test-threads`
//! behave as in any cargo test. Claims share one measurement context (one
//! benchmark serves several claims) behind a lock, so no two claims ever
//! measure at the same time.

use std::path::Path;
use std::sync::{Arc, Mutex};

use falsify::claims::checks::Registry;
use falsify::claims::Context;
use falsify::record::Settings;
use falsify::claims::{runner, ClaimSet, Verdict};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

// Counts heap allocations, so the allocation claims (F040, F093) can be measured here.
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let registry = Registry::builtin();
    let set = match ClaimSet::load_dir(&root.join("claims"), &[], &registry) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let runs = std::env::var("FALSIFY_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(10);
    let mut cx = Context::new(root, Settings { runs, ..Settings::default() });
    cx.falsify_exe = Some(Path::new(env!("CARGO_BIN_EXE_falsify")).to_path_buf());
    let latest = root.join("reports/latest.json");
    cx.previous_report = latest.is_file().then_some(latest);
    let shared = Arc::new(Mutex::new((cx, set.clone(), registry)));
    let trials = set
        .claims
        .iter()
        .map(|claim| {
            let shared = Arc::clone(&shared);
            let kind = format!("{:?}", claim.category).to_lowercase();
            let claim = claim.clone();
            Trial::ignorable_test(claim.trial_name(), move || {
                let mut guard = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let (cx, set, registry) = &mut *guard;
                let r = runner::evaluate(&claim, set, registry, cx);
                let o = &r.outcome;
                match o.verdict {
                    Verdict::Pass => {
                        eprintln!("{}: {}", claim.id, o.sentence);
                        Ok(Completion::Completed)
                    }
                    Verdict::Skipped | Verdict::Pending => {
                        Ok(Completion::ignored_with(format!("{}: {}", o.verdict.name(), o.sentence)))
                    }
                    v => {
                        let details = o.evidence.as_ref().map(|e| e.details.join("\n  ")).unwrap_or_default();
                        Err(Failed::from(format!("{}: {}\n  {details}", v.name(), o.sentence)))
                    }
                }
            })
            .with_kind(kind)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
