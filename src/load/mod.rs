//! Load generation against any engine's OpenAI-compatible endpoint
//! (`falsify load`): fixed concurrency, constant or Poisson arrival rate, and
//! sweeps over concurrencies; streamed requests with `ignore_eos`, each timed
//! at the client (TTFT, every inter-token gap, TPOT, end-to-end); percentile
//! summaries, throughput and goodput under SLOs, repeated runs with
//! confidence intervals, and per-request JSONL plus a summary JSON.

pub mod client;
pub mod command;
pub mod metrics;
pub mod prompts;
#[cfg(test)]
pub(crate) mod stub;
pub mod subject;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engines::Endpoint;
use metrics::{AcrossRuns, RequestRecord, RunSummary, Slo};
use prompts::Request;

/// How requests are offered to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Load {
    /// `streams` requests in flight at all times.
    Concurrency {
        /// Requests in flight.
        streams: usize,
    },
    /// Requests sent at `per_s` a second, evenly spaced or as a Poisson process.
    Rate {
        /// Mean arrivals per second.
        per_s: f64,
        /// Exponential gaps (seeded) instead of even ones.
        poisson: bool,
    },
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Load::Concurrency { streams } => write!(f, "concurrency {streams}"),
            Load::Rate { per_s, poisson: false } => write!(f, "rate {per_s}/s"),
            Load::Rate { per_s, poisson: true } => write!(f, "poisson {per_s}/s"),
        }
    }
}

impl Load {
    /// The most requests in flight it starts with (a rate's is unbounded: 1 here).
    pub fn streams(&self) -> usize {
        match self {
            Load::Concurrency { streams } => *streams,
            Load::Rate { .. } => 1,
        }
    }
}

/// When each of `count` requests is sent, seconds after the run begins, at
/// `per_s` a second: evenly spaced, or with exponential gaps drawn from a
/// generator seeded with `seed` (a Poisson process).
pub fn arrivals(count: usize, per_s: f64, poisson: bool, seed: u64) -> Vec<f64> {
    let mut rng = crate::rng::SplitMix64(seed);
    let mut t = 0.0;
    (0..count)
        .map(|i| {
            if !poisson {
                return i as f64 / per_s;
            }
            let at = t;
            // 1 − U lies in (0, 1], so the logarithm is finite.
            t += -(1.0 - rng.next_f64()).ln() / per_s;
            at
        })
        .collect()
}

/// What a load test does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The load levels, in order (one for a single test, several for a sweep).
    pub levels: Vec<Load>,
    /// Requests per run at each level.
    pub requests: usize,
    /// Runs at each level.
    pub runs: usize,
    /// Requests sent (and discarded) before the first run, one at a time.
    pub warmup: usize,
    /// Latency targets for goodput.
    pub slo: Slo,
    /// Seed of the Poisson arrivals (each run's own: seed + run).
    pub seed: u64,
}

impl Plan {
    /// Prompts the plan sends in all: the warmup's, then every run's at every level.
    pub fn prompts_needed(&self) -> usize {
        self.warmup + self.levels.len() * self.runs * self.requests
    }

    /// Where run `run` at level `level` starts in the prompts: after the
    /// warmup's and every earlier run's, so that with [`Plan::prompts_needed`]
    /// prompts no server sees a prompt twice (a server's prompt cache would
    /// otherwise answer a repeated prompt without prefilling it).
    pub fn first_prompt(&self, level: usize, run: usize) -> usize {
        self.warmup + (level * self.runs + run) * self.requests
    }

    /// Refuses a plan that cannot measure anything, naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.levels.is_empty() {
            return Err("no load level (give --concurrency, --rate or --sweep)".into());
        }
        for l in &self.levels {
            match *l {
                Load::Concurrency { streams: 0 } => return Err("--concurrency/--sweep: 0 streams".into()),
                Load::Rate { per_s, .. } if !(per_s.is_finite() && per_s > 0.0) => {
                    return Err(format!("--rate {per_s}: must be a positive number of requests a second"))
                }
                _ => {}
            }
        }
        if self.requests == 0 {
            return Err("--requests 0: a run needs at least one request".into());
        }
        if self.runs == 0 {
            return Err("--runs 0: needs at least one run".into());
        }
        Ok(())
    }
}

/// One level's runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelResult {
    /// The load.
    pub load: Load,
    /// Each run's summary.
    pub runs: Vec<RunSummary>,
    /// Every figure across the runs, with its 95% CI.
    pub across: Vec<AcrossRuns>,
}

impl LevelResult {
    /// The figure `name` across runs.
    pub fn figure(&self, name: &str) -> Option<&AcrossRuns> {
        self.across.iter().find(|a| a.figure == name)
    }
}

/// A load test's summary (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    /// The engine's name.
    pub engine: String,
    /// Its base URL.
    pub base: String,
    /// The model name requests carried.
    pub model: String,
    /// Where the prompts came from.
    pub prompts: String,
    /// The plan.
    pub plan: Plan,
    /// Each level, in order.
    pub levels: Vec<LevelResult>,
}

/// One request as the per-request JSONL writes it: the record with its level and run.
#[derive(Debug, Clone, Serialize)]
struct Row<'a> {
    level: String,
    run: usize,
    #[serde(flatten)]
    record: &'a RequestRecord,
}

/// Runs `count` of `requests` once at `load` against `ep`, from request
/// `first` on (cycled), calling `done` as each request ends; the records come
/// back in request order.
#[allow(clippy::too_many_arguments)]
pub fn run_once(
    agent: &ureq::Agent,
    ep: &Endpoint,
    requests: &[Request],
    first: usize,
    count: usize,
    load: Load,
    seed: u64,
    done: &(dyn Fn() + Sync),
) -> Vec<RequestRecord> {
    let records = Mutex::new(Vec::with_capacity(count));
    let start = Instant::now();
    let one = |i: usize| {
        let r = client::send(agent, ep, &requests[(first + i) % requests.len()], i, start);
        records.lock().unwrap_or_else(|p| p.into_inner()).push(r);
        done();
    };
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| match load {
        Load::Concurrency { streams } => {
            for _ in 0..streams.min(count) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || crate::util::children::stop_signal().is_some() {
                        break;
                    }
                    one(i);
                });
            }
        }
        Load::Rate { per_s, poisson } => {
            for (i, at) in arrivals(count, per_s, poisson, seed).into_iter().enumerate() {
                if crate::util::children::stop_signal().is_some() {
                    break;
                }
                if let Some(wait) = Duration::from_secs_f64(at).checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
                let one = &one;
                s.spawn(move || one(i));
            }
        }
    });
    let mut records = records.into_inner().unwrap_or_else(|p| p.into_inner());
    records.sort_by_key(|r| r.index);
    records
}

/// Sends `count` requests one at a time and discards them; a failure is an error.
fn warm_up(agent: &ureq::Agent, ep: &Endpoint, requests: &[Request], count: usize) -> Result<(), String> {
    for i in 0..count {
        let r = client::send(agent, ep, &requests[i % requests.len()], i, Instant::now());
        if let Some(e) = r.error {
            return Err(format!("{}: the warmup request failed: {e}", ep.engine));
        }
    }
    Ok(())
}

/// The summary of one run's `records`; a run whose every request failed is an error.
fn summarize(ep: &Endpoint, load: Load, records: &[RequestRecord], slo: &Slo) -> Result<RunSummary, String> {
    match records.iter().find_map(|r| r.error.as_deref()) {
        Some(first) if records.iter().all(|r| r.error.is_some()) => {
            Err(format!("{}: every request of {load} failed; the first: {first}", ep.engine))
        }
        _ => Ok(RunSummary::of(records, slo)),
    }
}

/// Runs `plan` against two endpoints in interleaved rounds (a then b, then b
/// then a, …) after `plan.warmup` requests to each, so that drift in the
/// machine falls on both alike; returns each one's records, run by run. With
/// one level both run it on the same prompts; with two, a runs the first and
/// b the second, each on prompts of its own (so one engine can be compared
/// with itself under two loads).
pub fn run_paired(
    a: &Endpoint,
    b: &Endpoint,
    requests: &[Request],
    plan: &Plan,
) -> Result<[Vec<Vec<RequestRecord>>; 2], String> {
    plan.validate()?;
    let level = |side: usize| match plan.levels.len() {
        1 => 0,
        2 => side,
        n => unreachable!("a paired plan has one or two levels, not {n}"),
    };
    let streams = plan.levels.iter().map(Load::streams).max().unwrap_or(1);
    let agent = client::agent(streams);
    warm_up(&agent, a, requests, plan.warmup)?;
    warm_up(&agent, b, requests, plan.warmup)?;
    let mut runs = [Vec::new(), Vec::new()];
    for round in 0..plan.runs {
        if let Some(signal) = crate::util::children::stop_signal() {
            return Err(format!("interrupted by {signal}"));
        }
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (ep, load) = ([a, b][side], plan.levels[level(side)]);
            let first = plan.first_prompt(level(side), round);
            let records = run_once(&agent, ep, requests, first, plan.requests, load, plan.seed + round as u64, &|| {});
            summarize(ep, load, &records, &plan.slo)?;
            runs[side].push(records);
        }
    }
    Ok(runs)
}

/// Runs `plan` against `ep` with `requests` (cycled), showing a progress bar
/// on stderr when `progress`; returns the summary and every request's row as
/// a JSON line.
pub fn run(
    ep: &Endpoint,
    requests: &[Request],
    prompts: &str,
    plan: &Plan,
    progress: bool,
) -> Result<(LoadSummary, String), String> {
    plan.validate()?;
    if requests.is_empty() {
        return Err("no prompts to send".into());
    }
    let streams = plan.levels.iter().map(Load::streams).max().unwrap_or(1);
    let agent = client::agent(streams);
    let total = (plan.levels.len() * plan.runs * plan.requests + plan.warmup) as u64;
    let bar = if progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} requests, {elapsed}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    bar.set_message(format!("{}: warmup", ep.engine));
    warm_up(&agent, ep, requests, plan.warmup)?;
    bar.inc(plan.warmup as u64);
    let mut lines = String::new();
    let mut levels = Vec::new();
    for (level, &load) in plan.levels.iter().enumerate() {
        let mut runs = Vec::new();
        for run in 0..plan.runs {
            if let Some(signal) = crate::util::children::stop_signal() {
                return Err(format!("interrupted by {signal}"));
            }
            bar.set_message(format!("{}: {load}, run {}/{}", ep.engine, run + 1, plan.runs));
            let first = plan.first_prompt(level, run);
            let records =
                run_once(&agent, ep, requests, first, plan.requests, load, plan.seed + run as u64, &|| bar.inc(1));
            for r in &records {
                let row = Row { level: load.to_string(), run, record: r };
                lines.push_str(&serde_json::to_string(&row).map_err(|e| e.to_string())?);
                lines.push('\n');
            }
            runs.push(summarize(ep, load, &records, &plan.slo)?);
        }
        let across = metrics::across_runs(&runs);
        levels.push(LevelResult { load, runs, across });
    }
    bar.finish_and_clear();
    let summary = LoadSummary {
        engine: ep.engine.clone(),
        base: ep.base.clone(),
        model: ep.model.clone(),
        prompts: prompts.into(),
        plan: plan.clone(),
        levels,
    };
    Ok((summary, lines))
}

/// Writes `requests.jsonl` and `summary.json` into `out` (created if
/// missing), each atomically; returns their paths.
pub fn write(out: &Path, summary: &LoadSummary, lines: &str) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("--out {}: {e}", out.display()))?;
    let json = serde_json::to_string_pretty(summary).map_err(|e| e.to_string())? + "\n";
    let files = [(out.join("requests.jsonl"), lines.as_bytes()), (out.join("summary.json"), json.as_bytes())];
    for (path, bytes) in &files {
        crate::util::write_atomic(path, bytes).map_err(|e| e.to_string())?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// The summary as a table: one row per level, each figure's mean ± its CI's half-width.
pub fn table(s: &LoadSummary) -> String {
    let mut out = format!(
        "{} at {} ({} runs of {} requests per level; prompts: {})\n",
        s.engine, s.base, s.plan.runs, s.plan.requests, s.prompts
    );
    // Every figure but the median end-to-end time, which the p99 column stands for.
    let cols: Vec<&str> = metrics::FIGURES.iter().copied().filter(|f| *f != "e2e_ms_p50").collect();
    out += &format!("{:<18}", "load");
    for c in &cols {
        out += &format!(" {c:>17}");
    }
    out.push('\n');
    for l in &s.levels {
        out += &format!("{:<18}", l.load.to_string());
        for c in &cols {
            let cell = match l.figure(c) {
                Some(a) => match a.ci95 {
                    Some(ci) => format!("{:.1} ±{:.1}", a.mean, (ci.hi - ci.lo) / 2.0),
                    None => format!("{:.1}", a.mean),
                },
                None => "-".into(),
            };
            out += &format!(" {cell:>17}");
        }
        out.push('\n');
    }
    out
}
