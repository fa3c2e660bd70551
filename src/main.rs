//! The `falsify` command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

use falsify::apr::{self, TensorFile};
use falsify::bench::Protocol;
use falsify::engine::{self, GenerateOptions};
use falsify::kernels::cuda::Backend;
use falsify::kernels::Kernels;
use falsify::load::subject::Opened;
use falsify::model::device::{DeviceModel, StepMode};
use falsify::model::{KvType, Model, ModelConfig};
use falsify::provenance::{ModelFile, Provenance};
use falsify::quant::SumOrder;
use falsify::sample::SamplerConfig;
use falsify::tokenizer::Tokenizer;

// Counts heap allocations, so the claims about allocation (F040, F093) can be measured in this binary.
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Where `make model` puts the default model.
const DEFAULT_MODEL: &str = "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

#[derive(Parser)]
#[command(name = "falsify", version, about = "Falsifiable claims about LLM inference, run for real", long_about = None)]
struct Cli {
    /// Kernel set for the whole process: scalar (the reference), avx2, avx-vnni
    /// (AVX2 with AVX-VNNI) or avx512 (AVX-512 VNNI) [default: $FALSIFY_KERNELS,
    /// else the fastest this CPU runs].
    #[arg(long, global = true, value_parser = ["scalar", "avx2", "avx-vnni", "avx512"])]
    kernels: Option<String>,
    /// Order of summation of every matrix product: blocks (one exact integer
    /// sum and one multiply-add per block: the fewest float operations,
    /// batch-invariant), llama-cpp (llama.cpp's kernels' order for each batch
    /// size; logits equal llama.cpp's bit for bit) or batch-invariant (every
    /// row as a one-row product) [default: $FALSIFY_SUMS, else blocks].
    #[arg(long, global = true, value_parser = ["blocks", "llama-cpp", "batch-invariant"])]
    sums: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ModelArg {
    /// GGUF or APR model file (told apart by content) [default: $FALSIFY_MODEL, else models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf]
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
}

impl ModelArg {
    fn path(&self) -> PathBuf {
        self.model
            .clone()
            .or_else(|| std::env::var_os("FALSIFY_MODEL").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL))
    }
}

#[derive(clap::Args)]
struct BackendArg {
    /// Compute backend: cpu, cuda, or auto (a CUDA device where there is one and the
    /// command runs on it, else the CPU). `generate` and `bench` run the embedded
    /// engine on a device; cuda fails naming why where it cannot run.
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda"])]
    backend: String,
}

impl BackendArg {
    /// The backend chosen on this host for a command that runs its forward
    /// passes on a device (`on_device`) or on the CPU, or why none is.
    fn resolve(&self, on_device: bool) -> Result<Backend> {
        Ok(falsify::kernels::cuda::choose(&self.backend, falsify::kernels::cuda::probe, on_device)?)
    }
}

/// What `falsify report` makes of a run report.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ReportFormat {
    /// Every export written into --out: report.html, report.csv, charts/*.svg, summary.md, junit.xml.
    Files,
    /// The Markdown summary on stdout (headline, headline claims, changes, failures).
    Md,
    /// The JUnit XML on stdout (one test case per claim).
    Junit,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF or APR model's format, architecture, hyperparameters and tensor table (an APR file's checksums checked).
    Inspect {
        /// GGUF or APR model file.
        model: PathBuf,
        /// Print every metadata entry too.
        #[arg(long)]
        metadata: bool,
    },
    /// Convert a GGUF model into an APR file (same tensors, bytes and metadata; checksummed, 256-byte aligned).
    Convert {
        /// The GGUF model file to read.
        model: PathBuf,
        /// The APR file to write (replaced only once complete).
        out: PathBuf,
        /// Read the written file back and compare every tensor's bytes, type and shape, the metadata and the checksums.
        #[arg(long)]
        verify: bool,
    },
    /// Print the token ids of a text, space-separated.
    Tokenize {
        #[command(flatten)]
        model: ModelArg,
        /// The text.
        text: String,
        /// Treat control tokens written in the text (e.g. <|im_start|>) as plain text.
        #[arg(long)]
        no_parse_special: bool,
        /// Print JSON: {"tokens": [...], "pieces": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Generate a continuation of a prompt with the embedded engine.
    Generate {
        #[command(flatten)]
        model: ModelArg,
        /// The prompt.
        #[arg(long, short = 'p')]
        prompt: String,
        /// Most tokens to generate.
        #[arg(short = 'n', long = "n-predict", default_value_t = 64)]
        n: usize,
        /// Temperature; 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temp: f32,
        /// Top-k (0: off).
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        /// Top-p (1: off).
        #[arg(long, default_value_t = 0.95)]
        top_p: f32,
        /// Min-p (0: off).
        #[arg(long, default_value_t = 0.05)]
        min_p: f32,
        /// Random seed for sampling.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Worker threads [default: all cores].
        #[arg(long, short = 't')]
        threads: Option<usize>,
        /// Wrap the prompt in the Qwen chat format as a user message.
        #[arg(long)]
        chat: bool,
        /// Do not stop at end-of-generation tokens.
        #[arg(long)]
        ignore_eos: bool,
        /// Use the scalar reference kernels instead of the fastest ones this CPU supports.
        #[arg(long)]
        reference: bool,
        /// Time every brick (forward-pass stage) and print the breakdown on stderr
        /// (always on with --json, which reports it as timings.prefill_bricks / decode_bricks).
        #[arg(long)]
        bricks: bool,
        #[command(flatten)]
        backend: BackendArg,
        /// On a CUDA device, launch every kernel from the host each step instead of
        /// replaying the step captured once as a CUDA graph.
        #[arg(long)]
        eager: bool,
        /// Print JSON: prompt_tokens, tokens, text, timings, kv (the KV cache's bytes), peak_rss_bytes.
        #[arg(long)]
        json: bool,
        /// KV cache element type: f16, f32 or q8_0 (as llama.cpp's -ctk/-ctv).
        #[arg(long, default_value = "f16")]
        kv_type: KvType,
        /// KV cache memory budget in MiB: beyond it the oldest pages are stored
        /// compressed (LZ4, or as one value) and restored when used [default: none].
        #[arg(long)]
        kv_budget_mib: Option<u64>,
    },
    /// Write a "shape twin": a GGUF with the exact tensor names, shapes and quant types of
    /// Qwen2.5-Coder 0.5B or 1.5B Q4_K_M, seeded random weights and a byte-level BPE
    /// vocabulary of the same size (llama.cpp loads it). Speed depends on bytes and shapes,
    /// not values, so a host without the real model can still measure it.
    Synth {
        /// The model to copy the shape of: 0.5b or 1.5b.
        #[arg(long, value_parser = falsify::synth::LIKE)]
        like: String,
        /// The GGUF file to write (replaced only once complete).
        out: PathBuf,
        /// Seed of the random weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Evaluate the claims and write the reports: report.json, latest.json, history/, report.html, report.csv, charts/*.svg, summary.md, junit.xml.
    ///
    /// Each claim is judged pass, falsified, inconclusive, skipped (with the reason) or
    /// error. Measurements several claims share (benchmarks, the llama.cpp server) are
    /// taken once. Exit status 0 whatever the verdicts: `falsify gate` decides.
    Run {
        /// Directory of claims files (every *.toml but gate.toml).
        #[arg(long, default_value = "claims")]
        claims: PathBuf,
        /// Extra files with your own claims (their own ids) and `[[engine]]` tables
        /// declaring engines those claims may name (see `falsify load --help`).
        #[arg(long = "add")]
        extra: Vec<PathBuf>,
        /// Only claims whose "ID title" contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Report directory.
        #[arg(long, default_value = "reports")]
        out: PathBuf,
        /// Measured runs per benchmark.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Warmup runs per benchmark.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Threads for the engine and the baselines.
        #[arg(long, short = 't', default_value_t = 2)]
        threads: usize,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Drive an engine's OpenAI-compatible server with streamed requests and measure it.
    ///
    /// Every request streams with ignore_eos, so it yields exactly --max-tokens tokens;
    /// each is timed at the client: time to first token (TTFT), every inter-token gap
    /// (ITL), time per output token (TPOT) and end-to-end. Each load level gets
    /// p50/p90/p99/p99.9, output tok/s, requests/s and goodput under --slo, with 95%
    /// CIs across --runs. Engines: falsify-server and llama-server (started on
    /// loopback and stopped), ollama ($OLLAMA_HOST), or one declared in an --engines
    /// file: `[[engine]] name = "mine"` with `url = "http://host:port/v1"` (optional
    /// `model`, `api_key_env`) or `command = ["./srv", "--port", "{port}", "-m", "{model}"]`
    /// (optional `ready` URL, default http://127.0.0.1:{port}/health).
    Load {
        #[command(flatten)]
        options: falsify::load::command::Options,
        #[command(flatten)]
        model: ModelArg,
    },
    /// Re-render the exports of an existing run report, measuring nothing.
    ///
    /// The report is validated against reports/schema/report-v2.json first; a report
    /// that breaks the schema is refused with every failing path named.
    Report {
        /// The report (e.g. reports/latest.json).
        report: PathBuf,
        /// Where to write report.html, report.csv, charts/, summary.md and junit.xml
        /// (its history/ feeds the history chart and holds the previous run).
        #[arg(long, default_value = "reports")]
        out: PathBuf,
        /// files: write every export into --out; md: print the Markdown summary;
        /// junit: print the JUnit XML (md and junit write nothing).
        #[arg(long, value_enum, default_value_t = ReportFormat::Files)]
        format: ReportFormat,
    },
    /// Show what changed between two run reports: verdicts, claims added or removed,
    /// and metrics that changed significantly (non-overlapping 95% CIs, or a relative
    /// change above --min-change where a value has no CI).
    Diff {
        /// The older report.
        old: PathBuf,
        /// The newer report.
        new: PathBuf,
        /// Smallest relative change that counts for values without a CI.
        #[arg(long, default_value_t = 0.05)]
        min_change: f64,
    },
    /// Check a run report against the gate policy; exit 1 naming each rule that fails.
    Gate {
        /// The report (e.g. reports/latest.json).
        report: PathBuf,
        /// The policy: claims that must pass, most errors allowed, minimum scores.
        #[arg(long, default_value = "claims/gate.toml")]
        policy: PathBuf,
    },
    /// Benchmark one engine against another, interleaved, with CIs on the ratios.
    ///
    /// Each round runs a prefill test (a random N_PROMPT-token prompt, fresh cache)
    /// and a decode test (N_GEN tokens after a 1-token prompt) on --engine (default:
    /// the embedded engine) and the same two tests on --baseline (default: llama.cpp
    /// through llama-bench); rounds alternate which engine goes first. A server
    /// (llama-server, falsify-server, a declared one) is timed at the client.
    Bench {
        #[command(flatten)]
        model: ModelArg,
        /// Prompt tokens in the prefill test.
        #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
        n_prompt: usize,
        /// Tokens in the decode test.
        #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
        n_gen: usize,
        /// Measured rounds.
        #[arg(short = 'r', long = "repetitions", default_value_t = 10)]
        runs: usize,
        /// Warmup rounds, not counted.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Threads for both engines.
        #[arg(long, short = 't', default_value_t = 2)]
        threads: usize,
        /// The engine measured: falsify (in process), llama.cpp, llama-server,
        /// falsify-server, ollama, or one declared in an --engines file.
        #[arg(long, default_value = "falsify")]
        engine: String,
        /// The engine it is compared with (any --engine name), or none.
        #[arg(long, default_value = "llama.cpp")]
        baseline: String,
        /// TOML files declaring more engines ([[engine]] tables; see `falsify load --help`).
        #[arg(long = "engines")]
        engine_files: Vec<PathBuf>,
        /// Ollama's name for the model (default: its tag for the project's model file).
        #[arg(long)]
        ollama_model: Option<String>,
        /// Also write the full result (samples, summaries, ratios, provenance) as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Compare with a saved `--json` result: report significant throughput changes
        /// (Mann-Whitney p < 0.05 and a median change beyond 2%); exit 1 on a regression.
        #[arg(long)]
        compare: Option<PathBuf>,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Live brick profiler: decode continuously and show each brick's time per token
    /// against its roofline budget, its score, grade, and the bottleneck.
    ///
    /// Budgets are roofline × --allowance, the roofline being the longer of a brick's
    /// bytes ÷ read bandwidth and its operations ÷ compute peak, as measured on this
    /// host (cached in --probe-cache; --reprobe measures again). Decoding repeats a
    /// window of --window positions after the prompt, so the figures stay comparable.
    ///
    /// Interactive by default (q quits; ↑/↓, Enter, b, h, m, Esc). --headless measures
    /// --tokens tokens and prints a summary, or with --json the full document. With --ci,
    /// --brick-score and --throughput are thresholds: exit 1 when one is missed.
    Top {
        #[command(flatten)]
        model: ModelArg,
        #[command(flatten)]
        backend: BackendArg,
        /// Worker threads.
        #[arg(long, short = 't', default_value_t = 2)]
        threads: usize,
        /// The text decoding starts after.
        #[arg(long, short = 'p', default_value = "def quicksort(items):")]
        prompt: String,
        /// Positions decoded after the prompt before the cache is cut back to it.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Budget = this × the roofline.
        #[arg(long, default_value_t = falsify::bench::bricks::DEFAULT_ALLOWANCE)]
        allowance: f64,
        /// Where the host probe is cached (the file's number is the probe's method: 3 reads
        /// the bandwidth asking for its bytes ahead as the weight kernels do, 2 timed the int8
        /// peak with each set's widest `vpdpbusd`; older caches are not read).
        #[arg(long, default_value = "reports/cache/host-probe-3.json")]
        probe_cache: PathBuf,
        /// Measure the host again instead of reading the cached probe.
        #[arg(long)]
        reprobe: bool,
        /// No terminal UI: measure --tokens tokens and print the result.
        #[arg(long)]
        headless: bool,
        /// Print the headless result as JSON.
        #[arg(long, requires = "headless")]
        json: bool,
        /// Write the JSON to this file instead of stdout (atomically).
        #[arg(long, requires = "json")]
        output: Option<PathBuf>,
        /// Tokens measured in headless mode.
        #[arg(long, default_value_t = 128)]
        tokens: usize,
        /// Tokens decoded before measuring, not counted.
        #[arg(long, default_value_t = 16)]
        warmup: usize,
        /// Tokens per throughput sample; the CV is taken across these windows.
        #[arg(long, default_value_t = 16)]
        throughput_window: usize,
        /// Strict ("jidoka") mode: stop with an error at the first brick over its budget.
        #[arg(long, requires = "headless")]
        strict: bool,
        /// Also run cargo clippy and, when installed, cargo llvm-cov for the quality section.
        #[arg(long, requires = "headless")]
        quality: bool,
        /// CI mode: exit 1 when --brick-score or --throughput is not met.
        #[arg(long, requires = "headless")]
        ci: bool,
        /// Lowest acceptable model brick score (0–100) in CI mode.
        #[arg(long, requires = "ci")]
        brick_score: Option<f64>,
        /// Lowest acceptable decode tokens per second in CI mode.
        #[arg(long, requires = "ci")]
        throughput: Option<f64>,
    },
    /// Serve the embedded engine over an OpenAI-compatible HTTP API.
    ///
    /// Endpoints: POST /v1/completions and /v1/chat/completions (streaming as
    /// server-sent events), GET /v1/models and /health. Requests that arrive
    /// together are decoded in one batched step. Prints `listening on
    /// http://HOST:PORT` once it takes requests; SIGINT or SIGTERM stops it.
    Serve {
        #[command(flatten)]
        model: ModelArg,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on (0: any free port, printed on start).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Worker threads for the model [default: all cores].
        #[arg(long, short = 't')]
        threads: Option<usize>,
        /// Most requests decoded in one batched step; more wait their turn.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
        max_batch: u64,
        /// Most positions (prompt and generated tokens) of one request, at most the model's context length.
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
        ctx: u64,
    },
    /// Chat with the model in the terminal: each line you type is a message, the
    /// answer streams back; the conversation is kept. /exit or end of input quits.
    Chat {
        #[command(flatten)]
        model: ModelArg,
        /// Worker threads [default: all cores].
        #[arg(long, short = 't')]
        threads: Option<usize>,
        /// Most tokens per answer.
        #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
        n: usize,
        /// Temperature; 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temp: f32,
        /// Random seed for sampling.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The system message [default: Qwen's].
        #[arg(long)]
        system: Option<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`falsify inspect … | head`) is the reader's choice, not an error.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes text to stdout, returning (rather than panicking on) a closed pipe.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Opens a model, explaining how to get the default one when it is missing.
fn open_model(arg: &ModelArg) -> Result<Model> {
    let path = arg.path();
    if !path.exists() {
        return Err(format!(
            "model file {} not found (run `make model`, or pass --model / set FALSIFY_MODEL)",
            path.display()
        )
        .into());
    }
    Ok(Model::load(&path)?)
}

fn run(cli: Cli) -> Result<()> {
    if let Some(name) = cli.kernels.or_else(|| std::env::var("FALSIFY_KERNELS").ok()) {
        Kernels::choose(&name)?;
    }
    if let Some(name) = cli.sums.or_else(|| std::env::var("FALSIFY_SUMS").ok()) {
        SumOrder::choose(&name)?;
    }
    match cli.command {
        Command::Inspect { model, metadata } => inspect(&model, metadata),
        Command::Synth { like, out, seed } => {
            let w = falsify::synth::write(&like, seed, &out)?;
            emit(&format!(
                "{}: shape twin of qwen2.5-coder-{like}-instruct-q4_k_m, seed {seed}: {} tensors, {} bytes\n",
                out.display(),
                w.tensors,
                w.bytes
            ))
        }
        Command::Convert { model, out, verify } => {
            emit(&format!("{}\n", apr::convert_with_progress_bar(&model, &out, verify)?))
        }
        Command::Top {
            model,
            backend,
            threads,
            prompt,
            window,
            allowance,
            probe_cache,
            reprobe,
            headless,
            json,
            output,
            tokens,
            warmup,
            throughput_window,
            strict,
            quality,
            ci,
            brick_score,
            throughput,
        } => {
            backend.resolve(false)?;
            if !(allowance.is_finite() && allowance > 0.0) {
                return Err(format!("--allowance must be a positive number, not {allowance}").into());
            }
            if ci && brick_score.is_none() && throughput.is_none() {
                return Err("--ci needs a threshold: --brick-score N and/or --throughput N".into());
            }
            let mut m = open_model(&model)?;
            set_threads(&mut m, threads);
            let tok = Tokenizer::from_header(&m.file.header)?;
            let prompt = tok.encode(&prompt, true);
            if prompt.is_empty() {
                return Err("--prompt must give at least one token".into());
            }
            let probe = falsify::bench::roofline::HostProbe::cached(&probe_cache, m.kernels, m.threads(), reprobe);
            let path = model.path().display().to_string();
            let session = falsify::top::Session::new(&m, &path, prompt, window, probe, allowance);
            if !headless {
                return Ok(falsify::top::tui::run(&session)?);
            }
            let opts =
                falsify::top::headless::HeadlessOptions { tokens: tokens.max(2), warmup, throughput_window, strict };
            eprintln!("decoding {warmup} + {} tokens on {} threads with every brick timed", opts.tokens, m.threads());
            let recorder =
                falsify::top::headless::measure(&session, &opts, |n| eprint!("\r  {n}/{} tokens", opts.tokens))?;
            eprintln!();
            let quality = falsify::top::quality::measure(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), quality);
            let report = falsify::top::headless::report(&session, &recorder, &opts, quality);
            if json {
                let text = serde_json::to_string_pretty(&report)? + "\n";
                match &output {
                    Some(path) => falsify::util::write_atomic(path, text.as_bytes())?,
                    None => emit(&text)?,
                }
            } else {
                emit(&top_summary(&report))?;
            }
            let failures = falsify::top::headless::ci_failures(
                &report,
                &falsify::top::headless::Thresholds { brick_score, throughput },
            );
            if ci && !failures.is_empty() {
                return Err(format!("CI thresholds not met: {}", failures.join("; ")).into());
            }
            Ok(())
        }
        Command::Run { claims, extra, filter, out, runs, warmup, threads, backend } => {
            backend.resolve(false)?;
            if runs < 2 {
                return Err("need at least 2 measured runs (--runs) for a confidence interval".into());
            }
            let settings = falsify::record::Settings { threads: usable_threads(threads), runs, warmup };
            run_claims(&claims, &extra, filter.as_deref(), &out, settings)
        }
        Command::Load { mut options, model } => {
            options.model = model.path();
            options.threads = usable_threads(options.threads);
            options.falsify_exe = std::env::current_exe().ok();
            falsify::util::children::handle_stop_signals(falsify::util::children::FirstSignal::Exit)?;
            let summary = falsify::load::command::run(&options, true)?;
            if let Some(out) = &options.out {
                for path in falsify::report::chart::write_load(out, &summary)? {
                    eprintln!("wrote {}", path.display());
                }
            }
            Ok(())
        }
        Command::Gate { report, policy } => gate(&report, &policy),
        Command::Report { report, out, format } => {
            use falsify::report::{headline, junit, markdown};
            let r = read_report(&report, true)?;
            let _output = match format {
                ReportFormat::Files => Some(falsify::report::output::OutputDir::take(&out, "report")?),
                ReportFormat::Md | ReportFormat::Junit => None,
            };
            let (past, warnings) = falsify::report::history::load(&out.join("history"));
            warnings.iter().for_each(|w| eprintln!("warning: {w}"));
            match format {
                ReportFormat::Files => {
                    for f in falsify::report::write_exports(&r, &out, &past)? {
                        println!("wrote {}", f.display());
                    }
                    Ok(())
                }
                ReportFormat::Md => {
                    emit(&markdown::render(&r, headline::changes(&r, headline::previous(&r, &past)).as_ref()))
                }
                ReportFormat::Junit => emit(&junit::render(&r)),
            }
        }
        Command::Diff { old, new, min_change } => {
            let (old, new) = (read_report(&old, false)?, read_report(&new, false)?);
            emit(&falsify::report::diff::diff(&old, &new, min_change).to_string())
        }
        Command::Bench {
            model,
            n_prompt,
            n_gen,
            runs,
            warmup,
            threads,
            engine,
            baseline,
            engine_files,
            ollama_model,
            json,
            compare,
            backend,
        } => {
            let explicit = backend.backend == "cuda";
            let backend = backend.resolve(true)?;
            if runs < 2 {
                return Err("need at least 2 measured repetitions (-r) for a confidence interval".into());
            }
            bench(
                &model,
                Protocol {
                    warmup,
                    runs,
                    n_prompt: n_prompt.max(1),
                    n_gen: n_gen.max(1),
                    threads: usable_threads(threads),
                    min_sample_ms: 1.0,
                },
                Pair { a: &engine, b: &baseline, files: &engine_files, ollama_model },
                (backend, explicit),
                json,
                compare,
            )
        }
        Command::Tokenize { model, text, no_parse_special, json } => {
            let file = TensorFile::open(model.path())?;
            let tok = Tokenizer::from_header(&file.header)?;
            let ids = tok.encode(&text, !no_parse_special);
            if json {
                let pieces: Vec<String> =
                    ids.iter().map(|&i| String::from_utf8_lossy(&tok.token_bytes(i)).into_owned()).collect();
                emit(&format!("{}\n", serde_json::json!({ "tokens": ids, "pieces": pieces })))
            } else {
                emit(&format!("{}\n", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")))
            }
        }
        Command::Serve { model, host, port, threads, max_batch, ctx } => {
            let mut m = open_model(&model)?;
            if let Some(t) = threads {
                set_threads(&mut m, t);
            }
            let tok = Tokenizer::from_header(&m.file.header)?;
            let model_id = model.path().file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned());
            let options = falsify::serve::ServeOptions {
                host,
                port,
                max_batch: usize::try_from(max_batch).unwrap_or(usize::MAX),
                context: usize::try_from(ctx).unwrap_or(usize::MAX),
                model_id,
            };
            Ok(falsify::serve::serve(m, tok, &options)?)
        }
        Command::Chat { model, threads, n, temp, seed, system } => {
            let sampler = SamplerConfig { temperature: temp, seed, ..SamplerConfig::default() };
            sampler.validate()?;
            let mut m = open_model(&model)?;
            if let Some(t) = threads {
                set_threads(&mut m, t);
            }
            let tok = Tokenizer::from_header(&m.file.header)?;
            let generate = GenerateOptions { max_tokens: n, sampler, ignore_eos: false, time_bricks: false };
            let options = falsify::serve::chat::ChatOptions { generate, system };
            falsify::serve::chat::run_in_terminal(&m, &tok, &options)?;
            Ok(())
        }
        Command::Generate {
            model,
            prompt,
            n,
            temp,
            top_k,
            top_p,
            min_p,
            seed,
            threads,
            chat,
            ignore_eos,
            reference,
            bricks,
            backend,
            eager,
            json,
            kv_type,
            kv_budget_mib,
        } => {
            let backend = backend.resolve(true)?;
            // Checked again by engine::generate; here before the model's load, to fail at once.
            let sampler = SamplerConfig { temperature: temp, top_k, top_p, min_p, seed };
            sampler.validate()?;
            let load_start = Instant::now();
            let mut m = open_model(&model)?;
            if let Some(t) = threads {
                set_threads(&mut m, t);
            }
            if reference {
                m.kernels = Kernels::SCALAR;
            }
            m.kv_type = kv_type;
            m.kv_budget = kv_budget_mib.map(|mib| usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX));
            let tok = Tokenizer::from_header(&m.file.header)?;
            let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
            let text = if chat { Tokenizer::chat_prompt(&prompt, None) } else { prompt };
            let prompt_tokens = tok.encode(&text, true);
            if prompt_tokens.is_empty() {
                return Err("the prompt is empty".into());
            }
            let opts = GenerateOptions { max_tokens: n, sampler, ignore_eos, time_bricks: json || bricks };
            let mut stdout = std::io::stdout();
            let mut text = engine::TextStream::default();
            let mut on_token = |t| {
                if !json {
                    // Print whole UTF-8 characters as they complete.
                    let _ = stdout.write_all(text.push(&tok, t).as_bytes());
                    let _ = stdout.flush();
                }
            };
            let (gen, device) = match backend {
                Backend::Cpu => (engine::generate(&m, &tok, &prompt_tokens, &opts, &mut on_token)?, None),
                Backend::Cuda => {
                    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
                    let cuda = falsify::kernels::cuda::device::Cuda::open(root)
                        .map_err(|e| format!("--backend {}: {e}", backend.name()))?;
                    let name = falsify::kernels::cuda::device::Device::name(&cuda);
                    let mode = if eager { StepMode::Eager } else { StepMode::Graph };
                    // One position more than the generation needs: --bricks profiles one more step.
                    let mut d = DeviceModel::upload(&m, cuda, prompt_tokens.len() + n + 1, mode)?;
                    let gen = engine::generate_on_device(&mut d, &tok, &prompt_tokens, &opts, &mut on_token)?;
                    (gen, Some(format!("{name}, {} steps", mode.name())))
                }
            };
            if json {
                let mut v = serde_json::to_value(&gen)?;
                v["timings"]["load_ms"] = load_ms.into();
                v["timings"]["threads"] = m.threads().into();
                v["timings"]["kernels"] = m.kernels.name().into();
                v["timings"]["backend"] = backend.name().into();
                v["timings"]["device"] = device.clone().into();
                v["peak_rss_bytes"] = falsify::util::peak_rss_bytes().into();
                emit(&format!("{v}\n"))?;
            } else {
                let _ = stdout.write_all(text.finish().as_bytes());
                println!();
                if gen.stopped_at_context {
                    eprintln!("note: stopped at the model's context length of {} tokens", m.config.context_length);
                }
                let t = &gen.timings;
                eprintln!(
                    "prefill: {} tokens in {:.1} ms ({:.1} tok/s) | decode: {} tokens in {:.1} ms ({:.2} tok/s) | ttft {:.1} ms | {} backend, {} threads, {} kernels",
                    t.prompt_tokens, t.prefill_ms, t.prefill_tok_per_s, t.decode_tokens, t.decode_ms, t.decode_tok_per_s, t.ttft_ms, backend.name(), m.threads(), m.kernels.name()
                );
                if let Some(d) = &device {
                    eprintln!("device: {d}");
                }
                for (phase, b) in [("prefill", &t.prefill_bricks), ("decode", &t.decode_bricks)] {
                    if let Some(b) = b {
                        eprintln!("{}", brick_table(phase, b));
                    }
                }
                if let Some(kernels) = &t.device_kernels {
                    eprintln!("device kernels (one decode step, CUDA events around each launch):");
                    for k in kernels {
                        eprintln!("  {:<14} {:>5} launches {:>10.1} µs", k.name, k.launches, k.ms * 1e3);
                    }
                }
            }
            Ok(())
        }
    }
}

/// Sets the model's threads from `--threads`, with a note when the count is
/// capped at the cores this process may use.
fn set_threads(m: &mut Model, threads: usize) {
    m.set_threads(usable_threads(threads));
}

/// `--threads` capped at the cores this process may use, with a note when
/// capped: every engine of a run (ours and llama.cpp's) gets the same count.
fn usable_threads(threads: usize) -> usize {
    let used = falsify::kernels::usable_threads(threads);
    if used < threads {
        eprintln!("note: --threads {threads} capped at {used}, the cores this process may use");
    }
    used
}

/// The per-brick breakdown of one phase as a text table.
fn brick_table(phase: &str, b: &falsify::model::Breakdown) -> String {
    let mut out = format!(
        "{phase} bricks ({} tokens, {:.1}% of {:.1} ms inside bricks):\n  {:<12} {:>12} {:>7}",
        b.tokens,
        100.0 * b.coverage,
        b.wall_ms,
        "brick",
        "µs/token",
        "share"
    );
    for r in &b.bricks {
        out += &format!("\n  {:<12} {:>12.1} {:>6.1}%", r.name, r.us_per_token, 100.0 * r.share);
    }
    out
}

/// The two engines `falsify bench` compares, as its flags name them.
struct Pair<'a> {
    a: &'a str,
    b: &'a str,
    files: &'a [PathBuf],
    ollama_model: Option<String>,
}

fn bench(
    model: &ModelArg,
    protocol: Protocol,
    pair: Pair,
    (backend, explicit): (Backend, bool),
    json: Option<PathBuf>,
    compare: Option<PathBuf>,
) -> Result<()> {
    // Nothing of a benchmark cut short is worth keeping: a signal ends llama-bench and exits.
    falsify::util::children::handle_stop_signals(falsify::util::children::FirstSignal::Exit)?;
    let previous: Option<falsify::bench::BenchResult> = match &compare {
        Some(path) => Some(
            serde_json::from_str(&falsify::util::read_text_limited(path, falsify::util::MAX_TEXT_FILE_BYTES)?)
                .map_err(|e| format!("{}: not a bench result: {e}", path.display()))?,
        ),
        None => None,
    };
    if pair.a == pair.b {
        return Err(falsify::bench::BenchError::SameEngine(pair.a.into()).into());
    }
    let mut engines = falsify::engines::Engines::builtin();
    for file in pair.files {
        engines.add_file(file)?;
    }
    let path = model.path();
    let with = falsify::engines::ServeWith {
        model: path.clone(),
        threads: protocol.threads,
        slots: 1,
        falsify_exe: std::env::current_exe().ok(),
        ready_timeout: falsify::engines::READY_TIMEOUT,
    };
    let mut opened = Vec::new();
    for name in std::iter::once(pair.a).chain((pair.b != "none").then_some(pair.b)) {
        let engine = engines.get(name)?;
        let open = Opened::open(engine, &with).map_err(|e| format!("engine `{name}`: {e}"))?;
        opened.push(match (open, &pair.ollama_model) {
            (Opened::Ollama(server, _), Some(tag)) => Opened::Ollama(server, tag.clone()),
            (open, _) => open,
        });
    }
    let load_start = Instant::now();
    let mut m = open_model(model)?;
    m.set_threads(protocol.threads);
    let tok = Tokenizer::from_header(&m.file.header)?;
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let names = [pair.a, pair.b];
    let baselines = names.iter().zip(&opened).filter_map(|(n, o)| Some(((*n).to_owned(), o.provenance()?))).collect();
    let provenance = Provenance::collect(protocol.threads, vec![ModelFile::describe(&path)?], baselines);
    let mut subjects: Vec<_> = opened.iter().map(|o| o.subject(&m, &tok, &path)).collect();
    // The embedded engine's side runs on the device (`auto` where it is compared at all).
    let in_process = opened.iter().position(|o| matches!(o, Opened::InProcess));
    if backend == Backend::Cuda && (explicit || in_process.is_some()) {
        let at = in_process.ok_or_else(|| {
            format!(
                "--backend cuda: neither `{}` nor `{}` is the embedded engine, which is what runs on a device",
                pair.a, pair.b
            )
        })?;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cuda = falsify::kernels::cuda::device::Cuda::open(root).map_err(|e| format!("--backend cuda: {e}"))?;
        eprintln!("bench: the embedded engine on {}", falsify::kernels::cuda::device::Device::name(&cuda));
        let positions = falsify::bench::OnDevice::<falsify::kernels::cuda::device::Cuda>::positions(&protocol);
        let device = DeviceModel::upload(&m, cuda, positions, StepMode::Graph)?;
        subjects[at] = Box::new(falsify::bench::OnDevice { device: device.into(), tokenizer: &tok });
    }
    let b = subjects.get(1).map(|b| &**b);
    let result = falsify::bench::compare(&*subjects[0], b, load_ms, &protocol, provenance, |done, total| {
        eprint!("\rbench: round {done}/{total} (first {} are warmup)   ", protocol.warmup);
        if done == total {
            eprintln!();
        }
    })?;
    let mut o = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "{:<15} {:<14} {:>10} {:>23} {:>7} {:>9}",
        "metric", "engine", "median", "95% CI of mean", "CV", "outliers"
    );
    for s in &result.series {
        let sm = &s.summary;
        let _ = writeln!(
            o,
            "{:<15} {:<14} {:>10.2} {:>23} {:>6.1}% {:>9}",
            s.metric,
            s.engine,
            sm.median,
            format!("[{:.2}, {:.2}]", sm.mean_ci95.lo, sm.mean_ci95.hi),
            sm.cv * 100.0,
            sm.outliers.total()
        );
    }
    for c in &result.comparisons {
        let _ = writeln!(
            o,
            "ratio {} {}/{}: {:.3}x  95% CI [{:.3}, {:.3}]  ({} p = {:.2e})",
            c.metric, c.a, c.b, c.ratio.ratio, c.ratio.ci.lo, c.ratio.ci.hi, c.test.test, c.test.p_value
        );
    }
    let _ = writeln!(
        o,
        "falsify in process: model load {:.1} ms, peak RSS {}",
        result.engine_load_ms,
        result.engine_peak_rss_bytes.map_or("unknown".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
    );
    emit(&o)?;
    if let Some(path) = json {
        falsify::util::write_atomic(&path, serde_json::to_string_pretty(&result)?.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(previous) = previous {
        let changes = falsify::bench::compare_results(&previous, &result, 0.05, 0.02)?;
        let mut o = String::new();
        for c in &changes {
            let _ = writeln!(
                o,
                "vs saved: {} {} {:+.1}% ({:?}, p = {:.2e})",
                c.engine,
                c.metric,
                c.relative * 100.0,
                c.change,
                c.p_value
            );
        }
        emit(&o)?;
        if changes.iter().any(|c| c.change == falsify::stats::Change::Regressed) {
            return Err("a throughput regression against the saved result".into());
        }
    }
    Ok(())
}

fn inspect(path: &PathBuf, metadata: bool) -> Result<()> {
    use std::fmt::Write as _;
    let file = TensorFile::open(path)?;
    let h = &file.header;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "file: {} ({} bytes, {}, {} tensors, {} metadata keys)",
        path.display(),
        file.len(),
        file.format_name(),
        h.tensors.len(),
        h.metadata.len()
    );
    if let apr::Format::Apr { header_checksum, .. } = &file.format {
        file.verify_checksums(&mut |_| {})?;
        let _ = writeln!(
            o,
            "checksums: header {header_checksum:#010x} ok; every tensor's data ok; converted from GGUF v{}; data at byte {}, {}-byte aligned",
            h.version, h.data_offset, h.alignment
        );
    }
    match ModelConfig::from_header(h) {
        Ok(c) => {
            let _ = writeln!(
                o,
                "architecture: {}{}",
                c.arch,
                c.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
            );
            let _ = writeln!(o,
                "layers {} | hidden {} | ffn {} | heads {} (kv {}) | head dim {} | vocab {} | context {} | rope base {} | rms eps {:e}",
                c.n_layer, c.n_embd, c.n_ff, c.n_head, c.n_head_kv, c.head_dim, c.vocab_size, c.context_length, c.rope_base, c.rms_eps
            );
        }
        Err(e) => {
            let _ = writeln!(o, "architecture: not runnable here ({e})");
        }
    }
    if metadata {
        let _ = writeln!(o, "\nmetadata:");
        for (k, v) in &h.metadata {
            let _ = writeln!(o, "  {k} = {v}");
        }
    }
    let _ = writeln!(o, "\n{:<32} {:>6} {:>18} {:>12}", "tensor", "type", "shape", "bytes");
    let mut by_type = std::collections::BTreeMap::<String, (usize, u64)>::new();
    for t in &h.tensors {
        let shape = t.dims.iter().map(u64::to_string).collect::<Vec<_>>().join(" x ");
        let _ = writeln!(o, "{:<32} {:>6} {:>18} {:>12}", t.name, t.ty.to_string(), shape, t.size);
        let e = by_type.entry(t.ty.to_string()).or_default();
        e.0 += 1;
        e.1 += t.size;
    }
    let _ = writeln!(o);
    for (ty, (n, bytes)) in by_type {
        let _ = writeln!(o, "{ty:>6}: {n:>4} tensors, {bytes:>12} bytes");
    }
    emit(&o)
}

/// `falsify run`: selects the claims, takes the report directory (locked,
/// checked writable) before measuring, judges the claims (a SIGINT or SIGTERM
/// ends the child processes and stops the run, keeping the claims judged so
/// far as a partial report marked interrupted), then writes the reports.
fn run_claims(
    dir: &std::path::Path,
    extra: &[PathBuf],
    filter: Option<&str>,
    out: &std::path::Path,
    settings: falsify::record::Settings,
) -> Result<()> {
    use falsify::claims::{checks::Registry, runner, ClaimSet, Context};
    use falsify::report::headline;
    use falsify::util::children;
    let registry = Registry::builtin();
    let set = ClaimSet::load_dir(dir, extra, &registry)?;
    let chosen = runner::select(&set, filter);
    if chosen.is_empty() {
        return Err(format!(
            "no claim matches --filter {:?} (of the {} claims loaded); nothing was run and nothing written",
            filter.unwrap_or_default(),
            set.claims.len()
        )
        .into());
    }
    let output = falsify::report::output::OutputDir::take(out, "run")?;
    let root = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).to_path_buf();
    let mut cx = Context::new(root, settings);
    for file in extra {
        cx.engines.add_file(file)?;
    }
    cx.falsify_exe = std::env::current_exe().ok();
    let latest = out.join("latest.json");
    cx.previous_report = latest.is_file().then(|| latest.clone());
    children::handle_stop_signals(children::FirstSignal::Stop)?;
    let start = Instant::now();
    eprintln!("falsify run: {} of {} claims from {}", chosen.len(), set.claims.len(), dir.display());
    let judged = runner::run_all(&chosen, &set, &registry, &mut cx, children::stop_signal, |done, total, r| {
        eprintln!("[{done:>3}/{total}] {}", runner::line(r));
    });
    if let (Some(why), true) = (&judged.interrupted, judged.results.is_empty()) {
        return Err(format!("interrupted ({why}); nothing was measured, so nothing was written").into());
    }
    let files = falsify::claims::spec::files_in(dir)?.iter().chain(extra).map(|p| p.display().to_string()).collect();
    let mut report = runner::assemble_report(
        &mut cx,
        files,
        filter.map(str::to_owned),
        start.elapsed().as_secs_f64(),
        judged.results,
    );
    // The servers and other children end here, before the reports are written.
    drop(cx);
    report.interrupted = judged.interrupted;
    let summary = report.summary.clone();
    let doc = serde_json::to_value(&report)?;
    falsify::report::schema::validate(&doc).map_err(|e| format!("refusing to write an invalid report: {e}"))?;
    let json = serde_json::to_vec_pretty(&doc)?;
    let history = output.write_report(&json)?;
    let (past, warnings) = falsify::report::history::load(&out.join("history"));
    warnings.iter().for_each(|w| eprintln!("warning: {w}"));
    let exports = falsify::report::write_exports(&report, out, &past)?;
    println!("{}", summary.counts());
    println!(
        "report: {} (valid against {}; also {}, {}); {} exports: {}, {}, {}",
        out.join("report.json").display(),
        falsify::report::schema::SCHEMA_PATH,
        latest.display(),
        history.display(),
        exports.len(),
        out.join("report.html").display(),
        out.join("summary.md").display(),
        out.join("junit.xml").display()
    );
    let changes = headline::changes(&report, headline::previous(&report, &past));
    print!("{}", falsify::report::text::end_of_run(&report, changes.as_ref()));
    println!("{}", summary.headline());
    match report.interrupted {
        Some(why) => {
            Err(format!("interrupted ({why}); the partial report was written, and the gate refuses it").into())
        }
        None => Ok(()),
    }
}

/// Reads a run report, optionally validating it against the published schema first.
fn read_report(path: &std::path::Path, validate: bool) -> Result<falsify::record::RunReport> {
    let text = falsify::util::read_text_limited(path, falsify::util::MAX_TEXT_FILE_BYTES)?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    if validate {
        falsify::report::schema::validate(&doc).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(falsify::record::RunReport::from_json(doc)
        .map_err(|e| format!("{}: not a falsify run report: {e}", path.display()))?)
}

fn gate(report: &std::path::Path, policy: &std::path::Path) -> Result<()> {
    use falsify::report::gate::{evaluate, Policy};
    let policy = Policy::load(policy)?;
    let report = read_report(report, true)?;
    let failed = evaluate(&report, &policy);
    let s = report.summary_of_claims();
    println!("gate: {}", s.counts());
    println!("gate: {}", s.headline());
    let bound = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    println!(
        "gate: policy: {} required claims, at most {} errors, minimum headline score {}, at most {} pending",
        policy.must_pass.len(),
        policy.max_errors,
        bound(policy.min_score.map(|m| format!("{m:.1}"))),
        bound(policy.max_pending.map(|m| m.to_string()))
    );
    if failed.is_empty() {
        println!("gate: PASS");
        Ok(())
    } else {
        for f in &failed {
            println!("gate: FAIL {f}");
        }
        Err(format!("the gate failed {} rule(s)", failed.len()).into())
    }
}

/// The headless result as a table.
fn top_summary(r: &falsify::top::headless::TopReport) -> String {
    let t = &r.throughput;
    let mut s = format!(
        "{}: {:.2} tok/s (CV {:.1}% over {} windows of {} tokens), p50 {:.0} µs, p99 {:.0} µs per token\n\
         host: {:.1} GB/s read, {:.0} int8 GOPS, {:.0} f32 GFLOPS ({} threads, {} kernels); bricks cover {:.1}%\n\n",
        r.model,
        t.tok_per_s,
        100.0 * t.cv,
        t.window_tok_per_s.len(),
        t.window_tokens,
        t.token_us.p50,
        t.token_us.p99,
        r.hardware.probe.read_bandwidth_gb_s,
        r.hardware.probe.int8_gops,
        r.hardware.probe.f32_gflops,
        r.hardware.threads,
        r.hardware.kernels,
        100.0 * r.coverage
    );
    s += &format!(
        "{:<12} {:>10} {:>10} {:>7} {:>6} {:>6} {:>6}\n",
        "brick", "µs/token", "budget µs", "gap", "CV%", "score", "grade"
    );
    for b in &r.brick_scores {
        s += &format!(
            "{:<12} {:>10.1} {:>10.1} {:>6.2}× {:>6.1} {:>6.1} {:>6}\n",
            b.name,
            b.actual_us,
            b.budget_us,
            b.gap_factor,
            100.0 * b.cv,
            b.score,
            b.grade
        );
    }
    s += &format!("\nmodel score {:.1} ({})", r.model_score, r.grade);
    if let Some(b) = &r.bottleneck {
        s += &format!(
            "; bottleneck {}, {:+.1} µs per token over its budget ({:.2}× it, {:.0}% of brick time)",
            b.name,
            b.excess_us,
            b.gap_factor,
            100.0 * b.share
        );
    }
    s + "\n"
}
