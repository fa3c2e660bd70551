//! Checks on the live brick profiler (`falsify top`), its scores and budgets:
//! the headless run as a user would start it (M001–M004, M006), CI mode
//! (M005), the terminal UI on a test backend (M007–M009), the workflow lint
//! (M010), the score formulas on hand-computed cases (M011, M014, M015, M017,
//! M019) and their range invariants (M012, M013), the roofline bound (M018),
//! the budgets' derivation (F020), token budget conversions (F008, F021),
//! strict mode (F011, F012, F022) and per-token metrics (F013).

use std::ffi::OsStr;
use std::process::Command;

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::resources::Exit;
use super::{kind, Check, Kind, ModelParams};
use crate::bench::bricks::{BrickProfile, Compute};
use crate::bench::score;
use crate::claims::{Context, Outcome, Unmet};
use crate::model::Brick;
use crate::rng::SplitMix64;
use crate::stats::{self, Interval, Op};
use crate::top::headless::TopReport;
use crate::top::live::{BrickError, TokenSample};

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![
        kind::<TopHeadless>(),
        kind::<TopCi>(),
        kind::<TuiRender>(),
        kind::<WorkflowLint>(),
        kind::<ScoreFormula>(),
        kind::<ScoreRange>(),
        kind::<RooflineBound>(),
        kind::<BudgetDerivation>(),
        kind::<TokenBudgetCheck>(),
        kind::<StrictMode>(),
        kind::<TokenMetrics>(),
    ]
}

/// What `falsify top --headless --json --quality` did.
#[derive(Debug, Clone)]
pub struct TopRun {
    /// How it ended.
    pub exit: Exit,
    /// Its JSON document, or why it did not parse.
    pub report: Result<TopReport, String>,
}

/// Reads `falsify top --headless --json`'s stdout as the headless document.
pub fn parse_top(stdout: &[u8]) -> Result<TopReport, String> {
    serde_json::from_slice::<TopReport>(stdout).map_err(|e| e.to_string())
}

/// The coefficient of variation of `xs` with its 95% interval: the sample
/// variance's chi-square interval (n − 1 degrees of freedom), over the mean.
pub fn cv_interval(xs: &[f64]) -> Option<(f64, Interval)> {
    use statrs::distribution::{ChiSquared, ContinuousCDF};
    let s = stats::Summary::of(xs).ok()?;
    let df = (xs.len() - 1) as f64;
    let chi = ChiSquared::new(df).ok()?;
    let ci = Interval {
        lo: s.cv * (df / chi.inverse_cdf(0.975)).sqrt(),
        hi: s.cv * (df / chi.inverse_cdf(0.025)).sqrt(),
        level: 0.95,
    };
    Some((s.cv, ci))
}

/// Runs `falsify top --headless --json --quality` on `size` once per run, as a user would.
fn top_run(cx: &mut Context, size: &str) -> Result<TopRun, Unmet> {
    let model = cx.model_path(size)?;
    let threads = cx.settings.threads.to_string();
    cx.memo(&format!("top:{size}"), |cx| {
        cx.say(format_args!("running `falsify top --headless --json --quality` on the {size} model (128 tokens)"));
        let probe = std::env::temp_dir().join(format!("falsify-top-probe-{}.json", std::process::id()));
        let args = ["top", "--headless", "--json", "--quality", "--reprobe", "--tokens", "128", "--threads", &threads]
            .map(OsStr::new);
        let out = cx.run_falsify(
            &[&args[..], &[OsStr::new("--probe-cache"), probe.as_os_str(), OsStr::new("--model"), model.as_os_str()]]
                .concat(),
        )?;
        Ok(TopRun { exit: Exit::of(&out), report: parse_top(&out.stdout) })
    })
}

/// Parameters of `top_headless`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadlessParams {
    /// Model size.
    pub model: String,
    /// What is judged: `exit`, `json`, `brick_scores`, `quality` or `throughput_cv`.
    pub aspect: String,
    /// Operator (`throughput_cv`).
    #[serde(default)]
    pub op: Option<Op>,
    /// Threshold (`throughput_cv`).
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// Judges one aspect of a headless run.
pub fn judge_headless(p: &HeadlessParams, run: &TopRun) -> Result<Outcome, Unmet> {
    let tail = |s: &str| s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_owned();
    let report = || run.report.as_ref().map_err(|e| Unmet::Failed(format!("its JSON did not parse: {e}")));
    Ok(match p.aspect.as_str() {
        "exit" => {
            let bad = match run.exit.code {
                Some(0) => vec![],
                code => vec![format!("exit {code:?}, signal {:?}: {}", run.exit.signal, tail(&run.exit.stderr))],
            };
            judge::no_violations("top_headless_failures", 1, bad)
        }
        "json" => {
            let bad = run.report.as_ref().err().map(|e| format!("stdout is not the headless document: {e}"));
            judge::no_violations("unparsable_outputs", 1, bad.into_iter().collect())
        }
        "brick_scores" => {
            let r = report()?;
            let positive = |x: f64| x.is_finite() && x > 0.0;
            let bad = Brick::ALL
                .iter()
                .filter_map(|b| match r.brick_scores.iter().find(|s| s.name == b.name()) {
                    None => Some(format!("no score for brick {}", b.name())),
                    Some(s)
                        if !((0.0..=100.0).contains(&s.score) && positive(s.actual_us) && positive(s.budget_us)) =>
                    {
                        Some(format!(
                            "brick {}: score {}, actual {} µs, budget {} µs",
                            s.name, s.score, s.actual_us, s.budget_us
                        ))
                    }
                    Some(s) if s.grade != score::grade(s.score) => {
                        Some(format!("brick {}: grade {} for score {:.1}", s.name, s.grade, s.score))
                    }
                    Some(_) => None,
                })
                .collect();
            judge::no_violations("bricks_without_scores", Brick::ALL.len(), bad)
        }
        "quality" => {
            let q = &report()?.quality;
            let coverage_tool = crate::util::on_path("cargo-llvm-cov");
            let mut bad = Vec::new();
            for (name, present, how) in [
                ("tests", q.tests.value.is_some(), &q.tests.how),
                ("clippy_warnings", q.clippy_warnings.value.is_some(), &q.clippy_warnings.how),
                ("unsafe_blocks", q.unsafe_blocks.value.is_some(), &q.unsafe_blocks.how),
                ("coverage_percent", q.coverage_percent.value.is_some() || !coverage_tool, &q.coverage_percent.how),
            ] {
                if !present {
                    bad.push(format!("{name} missing: {how}"));
                }
            }
            judge::no_violations("missing_quality_figures", 4, bad)
        }
        "throughput_cv" => {
            let r = report()?;
            let (Some(op), Some(threshold)) = (p.op, p.threshold) else {
                return Err(Unmet::Failed("aspect throughput_cv needs op and threshold".into()));
            };
            let t = &r.throughput;
            let mut q = Quantity::new("throughput_cv", "fraction", t.cv).detail(format!(
                "{:.2} tok/s over {} tokens; CV across {} windows of {} tokens: {:?}",
                t.tok_per_s,
                r.tokens,
                t.window_tok_per_s.len(),
                t.window_tokens,
                t.window_tok_per_s.iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>()
            ));
            q.n = t.window_tok_per_s.len();
            q.samples = t.window_tok_per_s.clone();
            q.ci = cv_interval(&t.window_tok_per_s).map(|(_, ci)| ci);
            judge::quantity(q, op, threshold)
        }
        other => return Err(Unmet::Failed(format!("unknown aspect {other:?} of top_headless"))),
    })
}

/// `top_headless`: `falsify top --headless --json` run as a user would, judged on one aspect.
pub struct TopHeadless;

impl Check for TopHeadless {
    const NAME: &'static str = "top_headless";
    const DOC: &'static str =
        "`falsify top --headless --json --quality` on the real model: exit status, JSON, brick scores, quality section, or throughput CV";
    const PARAMS: &'static str =
        "model, aspect (exit | json | brick_scores | quality | throughput_cv), op and threshold for throughput_cv";
    type Params = HeadlessParams;

    fn run(p: &HeadlessParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let run = top_run(cx, &p.model)?;
        judge_headless(p, &run)
    }
}

/// Judges CI mode: an impossible threshold must exit 1 naming it; met thresholds must exit 0.
pub fn judge_ci(impossible: &Exit, met: &Exit) -> Outcome {
    let mut bad = Vec::new();
    if impossible.code != Some(1) || !impossible.stderr.contains("CI thresholds not met") {
        bad.push(format!(
            "--brick-score 101 ended with exit {:?} and stderr {:?}: an impossible threshold did not fail",
            impossible.code,
            impossible.stderr.lines().last().unwrap_or("")
        ));
    }
    if met.code != Some(0) {
        bad.push(format!("thresholds that are met ended with exit {:?}: {:?}", met.code, met.stderr.lines().last()));
    }
    judge::no_violations("ci_mode_failures", 2, bad)
}

/// `top_ci`: CI mode exits 1 when a threshold is missed, 0 when met.
pub struct TopCi;

impl Check for TopCi {
    const NAME: &'static str = "top_ci";
    const DOC: &'static str =
        "`falsify top --headless --ci` exits 1 on an impossible brick-score threshold and 0 on met ones";
    const PARAMS: &'static str = "model";
    type Params = ModelParams;

    fn run(p: &ModelParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let model = cx.model_path(&p.model)?;
        let probe = std::env::temp_dir().join(format!("falsify-top-ci-probe-{}.json", std::process::id()));
        let run = |thresholds: &[&str]| -> Result<Exit, Unmet> {
            let head = ["top", "--headless", "--tokens", "8", "--warmup", "2", "--ci"].map(OsStr::new);
            let tail = [OsStr::new("--probe-cache"), probe.as_os_str(), OsStr::new("--model"), model.as_os_str()];
            let mid: Vec<&OsStr> = thresholds.iter().map(OsStr::new).collect();
            Ok(Exit::of(&cx.run_falsify(&[&head[..], &mid, &tail].concat())?))
        };
        let impossible = run(&["--brick-score", "101"])?;
        let met = run(&["--brick-score", "0", "--throughput", "0.001"])?;
        let _ = std::fs::remove_file(&probe);
        Ok(judge_ci(&impossible, &met))
    }
}

/// Parameters of `tui_render`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuiParams {
    /// Model size.
    pub model: String,
    /// What is judged: `renders` (every view, no panic), `every_brick` (the pipeline lists
    /// each brick), `drill_histogram` (the drill-down shows a histogram with p50/p99/p999).
    pub aspect: String,
}

/// A view's screen as `draw` renders it, or the message of the panic it raised.
pub fn capture(draw: impl FnOnce() -> String) -> Result<String, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(draw)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".into())
    })
}

/// The screens of every view of a UI fed `samples`, or the panic a view raised.
pub fn tui_screens(
    session: &crate::top::Session<'_>,
    samples: &[TokenSample],
) -> Vec<(String, Result<String, String>)> {
    use crate::top::tui::{snapshot, App};
    use ratatui::crossterm::event::KeyCode;
    let mut app = App::new(session);
    for s in samples {
        app.hear(s.clone());
    }
    let keys = [
        ("pipeline", KeyCode::Esc),
        ("budget", KeyCode::Char('b')),
        ("histogram", KeyCode::Char('h')),
        ("memory", KeyCode::Char('m')),
        ("drill-down", KeyCode::Enter),
    ];
    keys.iter()
        .map(|&(name, key)| {
            app.on_key(key);
            (name.to_owned(), capture(|| snapshot(&app, 150, 32)))
        })
        .collect()
}

/// Judges one aspect of the UI's screens.
pub fn judge_tui(aspect: &str, screens: &[(String, Result<String, String>)]) -> Result<Outcome, Unmet> {
    let screen = |name: &str| screens.iter().find(|(n, _)| n == name).and_then(|(_, s)| s.as_ref().ok());
    Ok(match aspect {
        "renders" => {
            let bad = screens
                .iter()
                .filter_map(|(n, s)| s.as_ref().err().map(|e| format!("view {n} panicked: {e}")))
                .collect();
            judge::no_violations("views_that_panicked", screens.len(), bad)
        }
        "every_brick" => {
            let s = screen("pipeline").map_or("", |s| s.as_str());
            let words: Vec<&str> = s.split(|c: char| c.is_whitespace() || c == '│').collect();
            let bad = Brick::ALL
                .iter()
                .filter(|b| !words.contains(&b.name()))
                .map(|b| format!("the pipeline does not show brick {}", b.name()))
                .collect();
            judge::no_violations("bricks_not_shown", Brick::ALL.len(), bad)
        }
        "drill_histogram" => {
            let s = screen("drill-down").map_or("", |s| s.as_str());
            let bad = ["p50", "p99", "p999", "█"]
                .iter()
                .filter(|part| !s.contains(*part))
                .map(|part| format!("the drill-down lacks {part:?}"))
                .collect();
            judge::no_violations("histogram_parts_missing", 4, bad)
        }
        other => return Err(Unmet::Failed(format!("unknown aspect {other:?} of tui_render"))),
    })
}

/// `tui_render`: the terminal UI on ratatui's test backend, fed real decode samples.
pub struct TuiRender;

impl Check for TuiRender {
    const NAME: &'static str = "tui_render";
    const DOC: &'static str =
        "the `falsify top` UI, fed 48 real decoded tokens, drawn on ratatui's test backend in every view";
    const PARAMS: &'static str = "model, aspect (renders | every_brick | drill_histogram)";
    type Params = TuiParams;

    fn run(p: &TuiParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let probe = cx.host_probe()?;
        let loaded = cx.model(&p.model)?;
        let prompt = loaded.tokenizer.encode("def quicksort(items):", true);
        let session = crate::top::Session::new(&loaded.model, &p.model, prompt, 64, probe, 1.5);
        let mut d = crate::top::live::Decoder::new(&loaded.model, &session.prompt, 64).map_err(Unmet::failed)?;
        let samples: Vec<TokenSample> = (0..48).map(|_| d.step()).collect::<Result<_, _>>().map_err(Unmet::failed)?;
        judge_tui(&p.aspect, &tui_screens(&session, &samples))
    }
}

/// Parameters of `workflow_lint`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LintParams {
    /// The linter (on PATH).
    pub tool: String,
    /// Its arguments before the files.
    #[serde(default)]
    pub args: Vec<String>,
    /// Files it checks.
    pub files: Vec<String>,
}

/// Judges a linter's run: it must exit 0; otherwise its output lines are the findings.
pub fn judge_lint(files: usize, exit: &Exit, stdout: &str) -> Outcome {
    let bad = if exit.code == Some(0) {
        vec![]
    } else {
        let lines: Vec<String> = stdout
            .lines()
            .chain(exit.stderr.lines())
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .take(10)
            .collect();
        if lines.is_empty() {
            vec![format!("exit {:?} without output", exit.code)]
        } else {
            lines
        }
    };
    judge::no_violations("lint_findings", files, bad)
}

/// `workflow_lint`: a linter finds nothing in the CI workflow definitions.
pub struct WorkflowLint;

impl Check for WorkflowLint {
    const NAME: &'static str = "workflow_lint";
    const DOC: &'static str =
        "a linter (check-jsonschema against the GitHub workflow schema) accepts the CI workflow files";
    const PARAMS: &'static str = "tool, args, files";
    type Params = LintParams;

    fn run(p: &LintParams, _cx: &mut Context) -> Result<Outcome, Unmet> {
        let missing: Vec<&String> = p.files.iter().filter(|f| !std::path::Path::new(f).is_file()).collect();
        if !missing.is_empty() {
            return Err(Unmet::Failed(format!("workflow files missing: {missing:?}")));
        }
        let out = crate::util::children::output(Command::new(&p.tool).args(&p.args).args(&p.files), None)
            .map_err(|e| Unmet::Missing(format!("tool:{}: cannot run it: {e}", p.tool)))?;
        Ok(judge_lint(p.files.len(), &Exit::of(&out), &String::from_utf8_lossy(&out.stdout)))
    }
}

/// One hand-computed case of a formula.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The formula's inputs.
    pub inputs: Vec<f64>,
    /// The value worked out by hand.
    pub want: f64,
}

/// Parameters of `score_formula`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormulaParams {
    /// `brick_score` (compute, bandwidth, latency, stability), `latency_ratio` (budget, actual),
    /// `stability` (cv), `kernel_quality` (five parts) or `model_score` (brick scores).
    pub formula: String,
    /// Cases worked out by hand.
    pub cases: Vec<Case>,
    /// Largest accepted absolute difference.
    pub tolerance: f64,
}

/// The implementation of `name`, applied to `inputs` (None: wrong arity or unknown).
pub fn formula(name: &str, x: &[f64]) -> Option<f64> {
    Some(match (name, x) {
        ("brick_score", &[c, b, l, s]) => score::combine(&score::WEIGHTS, c, b, l, s),
        ("latency_ratio", &[budget, actual]) => score::latency_ratio(budget, actual),
        ("stability", &[cv]) => score::stability(cv),
        ("kernel_quality", &[a, b, c, d, e]) => score::kernel_quality([a, b, c, d, e]),
        ("model_score", xs) if !xs.is_empty() => score::model_score(xs.iter().copied()),
        _ => return None,
    })
}

/// Cases where `f` differs from the hand-computed value by more than the tolerance.
pub fn formula_violations(p: &FormulaParams, f: impl Fn(&str, &[f64]) -> Option<f64>) -> Vec<String> {
    p.cases
        .iter()
        .filter_map(|c| match f(&p.formula, &c.inputs) {
            None => Some(format!("{}{:?}: not a valid call", p.formula, c.inputs)),
            Some(got) if got.is_nan() || (got - c.want).abs() > p.tolerance => {
                Some(format!("{}{:?} = {got}, worked out by hand: {}", p.formula, c.inputs, c.want))
            }
            Some(_) => None,
        })
        .collect()
}

/// `score_formula`: a scoring formula against values worked out by hand.
pub struct ScoreFormula;

impl Check for ScoreFormula {
    const NAME: &'static str = "score_formula";
    const DOC: &'static str = "a brick-scoring formula evaluated on cases whose values were worked out by hand";
    const PARAMS: &'static str = "formula (brick_score | latency_ratio | stability | kernel_quality | model_score), cases [{inputs, want}], tolerance";
    type Params = FormulaParams;

    fn run(p: &FormulaParams, _cx: &mut Context) -> Result<Outcome, Unmet> {
        Ok(judge::no_violations("formula_mismatches", p.cases.len(), formula_violations(p, formula)))
    }
}

/// Parameters of `score_range`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    /// The efficiency judged (`compute_efficiency` or `bandwidth_efficiency`).
    pub part: String,
    /// Random inputs tried.
    pub cases: usize,
    /// Seed of the inputs.
    pub seed: u64,
}

/// Inputs (work, µs, peak per µs) for which `efficiency` leaves [0, 1].
pub fn range_violations(p: &RangeParams, efficiency: fn(f64, f64, f64) -> f64) -> Vec<String> {
    let mut rng = SplitMix64(p.seed);
    (0..p.cases)
        .filter_map(|_| {
            let (w, t, peak) = (rng.wild_f64(), rng.wild_f64(), rng.wild_f64());
            let e = efficiency(w, t, peak);
            (!(0.0..=1.0).contains(&e)).then(|| format!("{}({w}, {t} µs, peak {peak}) = {e}", p.part))
        })
        .take(10)
        .collect()
}

/// `score_range`: a score part stays in [0, 1] for any input (a property test).
pub struct ScoreRange;

impl Check for ScoreRange {
    const NAME: &'static str = "score_range";
    const DOC: &'static str =
        "an efficiency stays within [0, 1] on random inputs, including zero, negative, NaN and infinite ones";
    const PARAMS: &'static str = "part (compute_efficiency | bandwidth_efficiency), cases, seed";
    type Params = RangeParams;

    fn run(p: &RangeParams, _cx: &mut Context) -> Result<Outcome, Unmet> {
        if !matches!(p.part.as_str(), "compute_efficiency" | "bandwidth_efficiency") {
            return Err(Unmet::Failed(format!("unknown part {:?}", p.part)));
        }
        Ok(judge::no_violations("out_of_range", p.cases, range_violations(p, score::efficiency)))
    }
}

/// Each brick's achieved ops/s over its roofline bound, min(peak, `bandwidth_gb_s` × ops/byte),
/// with the brick's name, from its µs per token (`us_per_token`, in
/// [`crate::model::Brick::ALL`] order); bricks with no time or no bytes left out.
pub fn roofline_ratios<'a>(
    profile: &'a BrickProfile,
    us_per_token: &[f64],
    bandwidth_gb_s: f64,
) -> Vec<(&'a str, f64)> {
    let h = &profile.host;
    profile
        .bricks
        .iter()
        .zip(us_per_token)
        .filter(|(b, &us)| us > 0.0 && b.bytes_per_token > 0)
        .map(|(b, &us)| {
            let peak = match b.compute {
                Compute::Int8 => h.int8_gops,
                Compute::F32 => h.f32_gflops,
            };
            let achieved = b.ops_per_token as f64 / us / 1e3; // 10⁹ ops/s
            let bound = peak.min(bandwidth_gb_s * b.ops_per_token as f64 / b.bytes_per_token as f64);
            (b.name.as_str(), achieved / bound)
        })
        .collect()
}

/// Judges the largest achieved ÷ roofline bound against 1.
///
/// Paired, where the profile measured the read bandwidth after each window
/// ([`BrickProfile::window_bandwidth_gb_s`]): each window's bricks against
/// the bandwidth of their own moment, the median of the windows' largest
/// ratios with its bootstrap CI. Otherwise against the run's one host probe,
/// with an interval from the probe's own spread. Either way a brick that
/// beats the bound only within the noise is inconclusive, not falsified.
pub fn judge_roofline(profile: &BrickProfile) -> Outcome {
    let h = &profile.host;
    let overall: Vec<f64> = profile.decode.bricks.iter().map(|b| b.us_per_token).collect();
    let worst = |us: &[f64], bw: f64| roofline_ratios(profile, us, bw).iter().map(|r| r.1).fold(0.0, f64::max);
    let (windows, window_bw) = (&profile.decode.windows, &profile.window_bandwidth_gb_s);
    let paired = !windows.is_empty() && window_bw.len() == windows.len();
    let (mut q, bw, bw_note) = if paired {
        let per_window: Vec<f64> = windows.iter().zip(window_bw).map(|(w, &bw)| worst(&w.us_per_token, bw)).collect();
        let bw = stats::median(window_bw);
        let (lo, hi) = window_bw.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &b| (lo.min(b), hi.max(b)));
        let note = format!(
            "each of {} windows against the read bandwidth measured right after it: median {} GB/s (range {}–{})",
            windows.len(),
            judge::num(bw),
            judge::num(lo),
            judge::num(hi)
        );
        (Quantity::of_samples("roofline_achieved_over_bound", "ratio", &per_window), bw, note)
    } else {
        let bw = h.read_bandwidth_gb_s;
        let bw_ci = stats::bootstrap_median(&h.bandwidth_samples, 0.95, stats::DEFAULT_RESAMPLES, 0x5eed).ok();
        let mut q = Quantity::new("roofline_achieved_over_bound", "ratio", worst(&overall, bw));
        q.n = profile.bricks.len();
        q.ci = bw_ci.map(|c| Interval { lo: worst(&overall, c.hi), hi: worst(&overall, c.lo), level: c.level });
        let note = format!(
            "read bandwidth {} GB/s, median of {} probe passes{}",
            judge::num(bw),
            h.bandwidth_samples.len(),
            bw_ci.map_or(String::new(), |c| format!(", 95% CI {}–{}", judge::num(c.lo), judge::num(c.hi)))
        );
        (q, bw, note)
    };
    q.details = roofline_ratios(profile, &overall, bw)
        .iter()
        .filter(|r| r.1 > 1.0)
        .map(|(name, r)| format!("{name}: {r:.3}× its roofline bound over the whole decode"))
        .collect();
    q.details.push(bw_note);
    judge::quantity(q, Op::Le, 1.0)
}

/// `roofline_bound`: no brick runs faster than the roofline allows.
pub struct RooflineBound;

impl Check for RooflineBound {
    const NAME: &'static str = "roofline_bound";
    const DOC: &'static str = "each brick's achieved ops/s ≤ min(compute peak, read bandwidth × its arithmetic intensity), measured in decode, the bandwidth probe's spread as the interval";
    const PARAMS: &'static str = "model";
    type Params = ModelParams;

    fn run(p: &ModelParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        Ok(judge_roofline(&cx.bricks(&p.model)?))
    }
}

/// Budgets that do not follow from the recorded bytes, operations, ceilings and allowance.
pub fn derivation_violations(p: &BrickProfile) -> Vec<String> {
    let h = &p.host;
    let mut bad = Vec::new();
    for (what, v) in [
        ("read bandwidth", h.read_bandwidth_gb_s),
        ("int8 peak", h.int8_gops),
        ("f32 peak", h.f32_gflops),
        ("allowance", p.allowance),
    ] {
        if !(v.is_finite() && v > 0.0) {
            bad.push(format!("{what} is {v}: no budget can be derived from it"));
        }
    }
    if p.bricks.len() != Brick::ALL.len() {
        bad.push(format!("{} budgets for {} bricks", p.bricks.len(), Brick::ALL.len()));
    }
    for b in &p.bricks {
        let peak = match b.compute {
            Compute::Int8 => h.int8_gops,
            Compute::F32 => h.f32_gflops,
        };
        let memory = b.bytes_per_token as f64 / (h.read_bandwidth_gb_s * 1e3);
        let compute = b.ops_per_token as f64 / (peak * 1e3);
        let want = p.allowance * memory.max(compute);
        if !(b.budget_us.is_finite() && b.budget_us > 0.0) {
            bad.push(format!("{}: budget {} µs", b.name, b.budget_us));
        } else if (b.budget_us - want).abs() > 1e-9 * want.max(1.0) {
            bad.push(format!(
                "{}: budget {:.4} µs, but {} × max({} B ÷ bandwidth, {} ops ÷ peak) = {want:.4} µs",
                b.name, b.budget_us, p.allowance, b.bytes_per_token, b.ops_per_token
            ));
        }
    }
    bad
}

/// `budget_derivation`: every budget is traceable to the measured roofline.
pub struct BudgetDerivation;

impl Check for BudgetDerivation {
    const NAME: &'static str = "budget_derivation";
    const DOC: &'static str = "every brick budget is > 0, finite, and equals allowance × max(bytes ÷ measured bandwidth, ops ÷ measured peak) from the figures in the report";
    const PARAMS: &'static str = "model";
    type Params = ModelParams;

    fn run(p: &ModelParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let profile = cx.bricks(&p.model)?;
        Ok(judge::no_violations("underived_budgets", profile.bricks.len() + 4, derivation_violations(&profile)))
    }
}

/// Parameters of `token_budget`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBudgetParams {
    /// Random cases.
    pub cases: usize,
    /// Seed.
    pub seed: u64,
}

/// The conversions judged: µs → tok/s of a budget, tok/s → µs, a sample's tok/s, and "met".
#[derive(Clone, Copy)]
pub struct Conversions {
    /// A budget's throughput from its latency.
    pub tok_per_s: fn(f64) -> f64,
    /// A budget's latency from its throughput.
    pub us_per_token: fn(f64) -> f64,
    /// A token sample's throughput from its wall time.
    pub sample_tok_per_s: fn(f64) -> f64,
    /// Whether a token of this wall time meets this budget.
    pub met: fn(f64, f64) -> bool,
}

impl Conversions {
    /// The implementation in [`crate::top::live`].
    pub fn engine() -> Conversions {
        use crate::top::live::TokenBudget;
        fn sample(wall_us: f64) -> TokenSample {
            TokenSample {
                index: 0,
                position: 0,
                wall_us,
                bricks_us: [0.0; Brick::ALL.len()],
                trace: Default::default(),
            }
        }
        Conversions {
            tok_per_s: |us| TokenBudget { us_per_token: us }.tok_per_s(),
            us_per_token: |t| TokenBudget::from_tok_per_s(t).us_per_token,
            sample_tok_per_s: |us| sample(us).tok_per_s(),
            met: |wall, budget| TokenBudget { us_per_token: budget }.met_by(&sample(wall)),
        }
    }
}

/// Random latencies on which the conversions disagree with tok/s = 10⁶ ÷ µs and "met ⇔ µs ≤ budget".
pub fn token_budget_violations(p: &TokenBudgetParams, c: Conversions) -> Vec<String> {
    let mut rng = SplitMix64(p.seed);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    (0..p.cases)
        .filter_map(|_| {
            let us = 10f64.powf(rng.next_f64() * 9.0 - 2.0); // 0.01 µs … 10 s
            let budget = us * (0.5 + rng.next_f64());
            let t = (c.tok_per_s)(us);
            if !close(t, 1e6 / us) || !close((c.sample_tok_per_s)(us), 1e6 / us) {
                return Some(format!("{us} µs per token ↦ {t} tok/s, not {}", 1e6 / us));
            }
            if !close((c.us_per_token)(t), us) {
                return Some(format!("{us} µs ↦ {t} tok/s ↦ {} µs", (c.us_per_token)(t)));
            }
            ((c.met)(us, budget) != (us <= budget))
                .then(|| format!("{us} µs against a {budget} µs budget: met = {}", (c.met)(us, budget)))
        })
        .take(10)
        .collect()
}

/// `token_budget`: latency ↔ throughput conversions and "budget met" agree (a property test).
pub struct TokenBudgetCheck;

impl Check for TokenBudgetCheck {
    const NAME: &'static str = "token_budget";
    const DOC: &'static str =
        "token budgets and samples: tok/s = 10⁶ ÷ µs both ways, and met ⇔ µs ≤ budget, on random latencies";
    const PARAMS: &'static str = "cases, seed";
    type Params = TokenBudgetParams;

    fn run(p: &TokenBudgetParams, _cx: &mut Context) -> Result<Outcome, Unmet> {
        Ok(judge::no_violations("inconsistent_conversions", p.cases, token_budget_violations(p, Conversions::engine())))
    }
}

/// Parameters of `strict_mode`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrictParams {
    /// Model size.
    pub model: String,
    /// `stops` (a violation stops decoding with BudgetExceeded; no violation, no stop)
    /// or `actionable` (the error names the brick, the expected and actual times, a hint).
    pub aspect: String,
}

/// What strict decoding did with the catalog's budgets, with budgets nobody can meet and with budgets nobody can miss.
#[derive(Debug)]
pub struct StrictRuns {
    /// Budgets = 1.5 × the roofline.
    pub real: Result<usize, BrickError>,
    /// Budgets ≈ 0.
    pub impossible: Result<usize, BrickError>,
    /// Budgets ≈ ∞.
    pub generous: Result<usize, BrickError>,
}

/// Judges strict mode.
pub fn judge_strict(aspect: &str, runs: &StrictRuns) -> Result<Outcome, Unmet> {
    Ok(match aspect {
        "stops" => {
            let mut bad = Vec::new();
            match &runs.impossible {
                Err(BrickError::BudgetExceeded { .. }) => {}
                Err(e) => bad.push(format!("with impossible budgets it failed otherwise: {e}")),
                Ok(n) => bad.push(format!("with impossible budgets it decoded {n} tokens without stopping")),
            }
            if let Err(e) = &runs.generous {
                bad.push(format!("with budgets nobody can miss it stopped: {e}"));
            }
            judge::no_violations("strict_mode_failures", 2, bad)
        }
        "actionable" => {
            // A violation of the real budgets when the engine misses one, else of the impossible ones.
            let msg = match (&runs.real, &runs.impossible) {
                (Err(e @ BrickError::BudgetExceeded { .. }), _) | (_, Err(e @ BrickError::BudgetExceeded { .. })) => {
                    e.to_string()
                }
                other => return Err(Unmet::Failed(format!("strict mode raised no budget violation: {other:?}"))),
            };
            let bad = Brick::ALL
                .iter()
                .any(|b| msg.contains(&format!("brick {} ", b.name())))
                .then_some(())
                .map_or_else(|| vec![format!("names no brick: {msg}")], |_| vec![])
                .into_iter()
                .chain(
                    ["expected", "actual", "hint:"]
                        .iter()
                        .filter(|w| !msg.contains(*w))
                        .map(|w| format!("lacks {w:?}: {msg}")),
                )
                .collect();
            let mut o = judge::no_violations("message_parts_missing", 4, bad);
            o.sentence = format!("{} — {msg}", o.sentence);
            o
        }
        other => return Err(Unmet::Failed(format!("unknown aspect {other:?} of strict_mode"))),
    })
}

/// `strict_mode`: budget violations stop decoding with an actionable `BudgetExceeded`.
pub struct StrictMode;

impl Check for StrictMode {
    const NAME: &'static str = "strict_mode";
    const DOC: &'static str = "strict (jidoka) decoding on the real model stops with BudgetExceeded under budgets nobody meets, and not under budgets nobody misses";
    const PARAMS: &'static str = "model, aspect (stops | actionable)";
    type Params = StrictParams;

    fn run(p: &StrictParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        use crate::top::headless::{measure, HeadlessOptions};
        let probe = cx.host_probe()?;
        let loaded = cx.model(&p.model)?;
        let prompt = loaded.tokenizer.encode("fn main() {", true);
        let opts = HeadlessOptions { tokens: 16, warmup: 0, throughput_window: 8, strict: true };
        let run = |allowance: f64| {
            let session =
                crate::top::Session::new(&loaded.model, &p.model, prompt.clone(), 32, probe.clone(), allowance);
            measure(&session, &opts, |_| {}).map(|r| r.samples().len())
        };
        let runs = StrictRuns { real: run(1.5), impossible: run(1e-9), generous: run(1e12) };
        judge_strict(&p.aspect, &runs)
    }
}

/// Parameters of `token_metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsParams {
    /// Model size.
    pub model: String,
    /// Tokens decoded.
    pub tokens: usize,
}

/// Samples that lack a brick, whose traced stages ran outside every brick
/// span (or left a registered brick without one), or whose brick spans
/// exceed the token's wall time.
pub fn metrics_violations(samples: &[TokenSample]) -> Vec<String> {
    samples
        .iter()
        .flat_map(|s| {
            let missing = Brick::ALL
                .iter()
                .filter(|&&b| s.bricks_us[b as usize].is_nan() || s.bricks_us[b as usize] <= 0.0)
                .map(move |b| format!("token {}: no time for brick {}", s.index, b.name()));
            let traced = s.trace.violations().into_iter().map(move |v| format!("token {}: {v}", s.index));
            let total: f64 = s.bricks_us.iter().sum();
            let over = (total > s.wall_us)
                .then(|| format!("token {}: brick spans {total:.1} µs > wall {:.1} µs", s.index, s.wall_us));
            missing.chain(traced).chain(over)
        })
        .take(10)
        .collect()
}

/// `token_metrics`: every decoded token publishes a time for every brick.
pub struct TokenMetrics;

impl Check for TokenMetrics {
    const NAME: &'static str = "token_metrics";
    const DOC: &'static str =
        "each token decoded on the real model publishes a time for every brick and a stage trace whose every stage ran inside a brick span, the spans within its wall time";
    const PARAMS: &'static str = "model, tokens";
    type Params = MetricsParams;

    fn run(p: &MetricsParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let loaded = cx.model(&p.model)?;
        let prompt = loaded.tokenizer.encode("fn main() {", true);
        let mut d = crate::top::live::Decoder::new(&loaded.model, &prompt, 64).map_err(Unmet::failed)?;
        let samples: Vec<TokenSample> =
            (0..p.tokens).map(|_| d.step()).collect::<Result<_, _>>().map_err(Unmet::failed)?;
        Ok(judge::no_violations("tokens_missing_bricks", samples.len(), metrics_violations(&samples)))
    }
}
