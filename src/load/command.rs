//! `falsify load`: the options as the command line gives them, turned into
//! an engine's endpoint, a plan and prompts, then run, printed and written.

use std::path::PathBuf;

use super::metrics::Slo;
use super::{prompts, Load, LoadSummary, Plan};
use crate::engines::{Engines, ServeWith};

/// `falsify load`'s options, as its command line gives them.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The engine to load.
    #[arg(long)]
    pub engine: String,
    /// TOML files declaring more engines ([[engine]] tables).
    #[arg(long = "engines")]
    pub engine_files: Vec<PathBuf>,
    /// Threads a started server computes with.
    #[arg(long, short = 't', default_value_t = 2)]
    pub threads: usize,
    /// Keep this many requests in flight (the default: 1).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Send requests at this many a second instead, whatever is in flight.
    #[arg(long)]
    pub rate: Option<f64>,
    /// With --rate: exponential gaps (a Poisson process, seeded by --seed).
    #[arg(long)]
    pub poisson: bool,
    /// Sweep over these concurrencies, e.g. 1,2,4.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<usize>,
    /// Requests per run at each load level.
    #[arg(long, default_value_t = 16)]
    pub requests: usize,
    /// Runs at each load level (2 or more give confidence intervals).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Requests sent one at a time and discarded first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Tokens of each generated prompt.
    #[arg(long, default_value_t = 32)]
    pub prompt_tokens: usize,
    /// Output tokens of each request (and the default of a --prompts line).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// A JSONL file of prompts, one {"prompt": ..., "max_tokens": ...} a line, instead of generated ones.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Latency targets of goodput, e.g. ttft_ms=500,tpot_ms=100 (also e2e_ms).
    #[arg(long)]
    pub slo: Option<String>,
    /// Seed of the generated prompts and the Poisson arrivals.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Directory for requests.jsonl (one line per request) and summary.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The model file a started server loads (the command's --model).
    #[arg(skip)]
    pub model: PathBuf,
    /// This binary, for `falsify-server`.
    #[arg(skip)]
    pub falsify_exe: Option<PathBuf>,
}

impl Options {
    /// The load levels the flags ask for (concurrency 1 when none is given).
    fn levels(&self) -> Result<Vec<Load>, String> {
        let given = [self.concurrency.is_some(), self.rate.is_some(), !self.sweep.is_empty()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err("give one of --concurrency, --rate or --sweep".into());
        }
        if self.poisson && self.rate.is_none() {
            return Err("--poisson needs --rate".into());
        }
        Ok(match (self.concurrency, self.rate) {
            (_, Some(per_s)) => vec![Load::Rate { per_s, poisson: self.poisson }],
            (Some(streams), None) => vec![Load::Concurrency { streams }],
            (None, None) if self.sweep.is_empty() => vec![Load::Concurrency { streams: 1 }],
            (None, None) => self.sweep.iter().map(|&streams| Load::Concurrency { streams }).collect(),
        })
    }
}

/// Runs `falsify load`: prints the summary table on stdout, writes the
/// files into `--out` when given (their paths on stderr), and returns the summary.
pub fn run(o: &Options, progress: bool) -> Result<LoadSummary, String> {
    let plan = Plan {
        levels: o.levels()?,
        requests: o.requests,
        runs: o.runs,
        warmup: o.warmup,
        slo: o.slo.as_deref().map(Slo::parse).transpose()?.unwrap_or_default(),
        seed: o.seed,
    };
    plan.validate()?;
    if let Some(out) = &o.out {
        crate::util::check_writable(out).map_err(|e| format!("--out: {e}"))?;
    }
    let (requests, source) = match &o.prompts {
        Some(path) => (prompts::from_jsonl(path, o.max_tokens)?, path.display().to_string()),
        None => (
            prompts::generated(plan.prompts_needed().max(1), o.prompt_tokens, o.max_tokens, o.seed),
            format!("generated, {} tokens each, seed {}", o.prompt_tokens, o.seed),
        ),
    };
    let mut engines = Engines::builtin();
    for f in &o.engine_files {
        engines.add_file(f)?;
    }
    let engine = engines.get(&o.engine).map_err(|e| format!("--engine: {e}"))?;
    if !engine.is_http() {
        return Err(format!(
            "--engine {}: it runs without an HTTP endpoint; load needs a server (falsify-server, llama-server, ollama, or one you declare)",
            o.engine
        ));
    }
    if !o.model.is_file()
        && matches!(engine.source, crate::engines::Source::LlamaServer | crate::engines::Source::FalsifyServer)
    {
        return Err(format!("--model {}: no such file", o.model.display()));
    }
    let with = ServeWith {
        model: o.model.clone(),
        threads: o.threads,
        slots: plan.levels.iter().map(Load::streams).max().unwrap_or(1),
        falsify_exe: o.falsify_exe.clone(),
        ready_timeout: crate::engines::READY_TIMEOUT,
    };
    if progress {
        eprintln!("falsify load: starting or reaching engine `{}`", o.engine);
    }
    let ep = engine.serve(&with).map_err(|e| e.to_string())?;
    let (summary, lines) = super::run(&ep, &requests, &source, &plan, progress)?;
    print!("{}", super::table(&summary));
    if let Some(out) = &o.out {
        for path in super::write(out, &summary, &lines)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(summary)
}
