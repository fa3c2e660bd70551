//! What checks measure with: the models, llama.cpp and its server, Ollama,
//! the declared engines and their servers, host facts, and the run's cache, so that a measurement several claims need
//! (one interleaved benchmark serves F084, F120, F109, F085, F088) is taken once,
//! and the registry of every sample series the run's checks took (F110, F085
//! and F086 are judged on it).

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::requires::{model_path, Requirement};
use super::Unmet;
use crate::baseline::llama_cpp::{LlamaCpp, LlamaServer};
use crate::baseline::ollama::Ollama;
use crate::bench::bricks::BrickProfile;
use crate::bench::roofline::{HostProbe, ReadProbe};
use crate::bench::{self, BenchResult, Protocol};
use crate::engines::{Endpoint, Engines, ServeWith};
use crate::kernels::Kernels;
use crate::load::subject::Opened;
use crate::model::Model;
use crate::provenance::{ModelFile, Provenance};
use crate::record::ClaimResult;
use crate::record::{BenchSpec, SampleSeries, Settings};
use crate::tokenizer::Tokenizer;
use crate::util::{cuda_devices, on_path};

/// A loaded model with its tokenizer and how long loading took.
pub struct Loaded {
    /// The engine.
    pub model: Model,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Load time, ms.
    pub load_ms: f64,
    /// The file.
    pub path: PathBuf,
}

/// The model of one size converted to APR once per run, in a temporary
/// directory removed when the run's context is dropped.
#[derive(Debug, Clone)]
pub struct ConvertedApr {
    /// The `.apr` file.
    pub path: PathBuf,
    /// The GGUF file it was converted from.
    pub source: PathBuf,
    /// What the conversion did and took.
    pub conversion: crate::apr::Conversion,
    /// Keeps the directory (and the file) while a copy of this lives.
    _dir: std::sync::Arc<tempfile::TempDir>,
}

/// Bytes of the read bandwidth probe's buffer between a benchmark's rounds.
const BENCH_PROBE_BYTES: usize = 256 << 20;

/// Passes over that buffer after each measured round, timed as one (about
/// 100 ms at 40 GB/s): single 7 ms passes on the shared development host
/// ranged from 42 to 66 GB/s within a minute.
const BENCH_PROBE_PASSES: usize = 16;

/// Tokens the brick profile decodes: sixteen windows ([`bench::bricks::WINDOW_TOKENS`]), each a sample of the
/// bricks' times and followed by a bandwidth measurement.
const BRICK_PROFILE_TOKENS: usize = 128;

/// Everything a check can measure with, cached across the claims of one run.
pub struct Context {
    /// The project root (models/, tests/fixtures/, baselines/).
    pub root: PathBuf,
    /// Benchmark settings.
    pub settings: Settings,
    /// The `falsify` binary, for checks that run it as a child process.
    pub falsify_exe: Option<PathBuf>,
    /// The previous run's report, when there is one.
    pub previous_report: Option<PathBuf>,
    /// The results so far of a full run (`falsify run`), for the claims judged
    /// over the whole run; `None` in per-claim test runs.
    pub full_run: Option<Vec<ClaimResult>>,
    /// Print progress of long measurements to stderr.
    pub progress: bool,
    /// The engines claims may name: the built-ins and those `--add` files declare.
    pub engines: Engines,
    models: HashMap<String, Loaded>,
    endpoints: HashMap<String, Result<Endpoint, Unmet>>,
    llama: Option<Result<LlamaCpp, String>>,
    servers: HashMap<String, LlamaServer>,
    ollama: Option<Result<Ollama, crate::baseline::BaselineError>>,
    opened: HashMap<String, Result<Opened, Unmet>>,
    benches: Vec<(BenchSpec, Result<BenchResult, Unmet>)>,
    /// Read bandwidth (GB/s) measured after each of a benchmark's measured rounds.
    bench_bandwidth: Vec<(BenchSpec, Vec<f64>)>,
    series: Vec<SampleSeries>,
    memo: HashMap<String, Box<dyn Any + Send>>,
}

impl Context {
    /// A context for the project at `root`.
    pub fn new(root: impl Into<PathBuf>, settings: Settings) -> Context {
        Context {
            root: root.into(),
            settings,
            falsify_exe: None,
            previous_report: None,
            full_run: None,
            progress: true,
            engines: Engines::builtin(),
            models: HashMap::new(),
            endpoints: HashMap::new(),
            llama: None,
            servers: HashMap::new(),
            ollama: None,
            opened: HashMap::new(),
            benches: Vec::new(),
            bench_bandwidth: Vec::new(),
            series: Vec::new(),
            memo: HashMap::new(),
        }
    }

    /// Says what a long measurement is doing, on stderr.
    pub fn say(&self, what: impl std::fmt::Display) {
        if self.progress {
            eprintln!("  … {what}");
        }
    }

    /// `Ok` when `r` is met here, else the reason it is not and how to meet it.
    pub fn requirement(&mut self, r: &Requirement) -> Result<(), String> {
        match r {
            Requirement::Model(size) => {
                let p = self.root.join(model_path(size));
                if p.is_file() {
                    Ok(())
                } else {
                    let how = match size.as_str() {
                        "0.5b" => "run `make model`",
                        "1.5b" => "run `make model-1.5b`",
                        _ => "no make target provides it; place a Qwen2.5-Coder Q4_K_M GGUF there",
                    };
                    Err(format!("model:{size}: no file at {} ({how})", p.display()))
                }
            }
            Requirement::LlamaCpp => self.llama().map(|_| ()).map_err(|u| match u {
                Unmet::Missing(m) | Unmet::Failed(m) => m,
            }),
            Requirement::Ollama => self.ollama().map(|_| ()).map_err(|u| match u {
                Unmet::Missing(m) | Unmet::Failed(m) => m,
            }),
            Requirement::Cuda | Requirement::Gpu(_) => {
                let gpus = cuda_devices();
                let wanted = match r {
                    Requirement::Gpu(name) => gpus.iter().any(|g| g.contains(name.as_str())),
                    _ => !gpus.is_empty(),
                };
                if wanted {
                    Ok(())
                } else if gpus.is_empty() {
                    Err(format!("{r}: no CUDA device on this host (nvidia-smi lists none)"))
                } else {
                    Err(format!("{r}: this host's GPUs are {}", gpus.join(", ")))
                }
            }
            Requirement::Tool(name) => {
                if on_path(name) {
                    Ok(())
                } else {
                    Err(format!(
                        "tool:{name}: `{name}` is not on PATH; install it (`make deps` installs strace; `make tools` \
                         installs ptxas and cuobjdump into .tools/bin, which `make falsify` puts on PATH)"
                    ))
                }
            }
            Requirement::Nvrtc => crate::kernels::cuda::find_nvrtc(&self.root).map(|_| ()),
            Requirement::FullRun => match self.full_run {
                Some(_) => Ok(()),
                None => Err(
                    "full-run: judged on the whole run (its verdicts or its report); `falsify run` evaluates it last"
                        .into(),
                ),
            },
            Requirement::PreviousReport => match &self.previous_report {
                Some(p) if p.is_file() => Ok(()),
                _ => Err("previous-report: no earlier report to compare with (reports/latest.json); \
                          the next `falsify run` will have one"
                    .into()),
            },
        }
    }

    /// The path of the model of `size`, or why it is missing.
    pub fn model_path(&mut self, size: &str) -> Result<PathBuf, Unmet> {
        self.requirement(&Requirement::Model(size.into())).map_err(Unmet::Missing)?;
        Ok(self.root.join(model_path(size)))
    }

    /// The engine with the model of `size`, loaded once per run.
    pub fn model(&mut self, size: &str) -> Result<&mut Loaded, Unmet> {
        if !self.models.contains_key(size) {
            let path = self.model_path(size)?;
            self.say(format_args!("loading {}", path.display()));
            let start = Instant::now();
            let mut model = Model::load(&path).map_err(Unmet::failed)?;
            let load_ms = start.elapsed().as_secs_f64() * 1e3;
            model.set_threads(self.settings.threads);
            let tokenizer = Tokenizer::from_header(&model.file.header).map_err(Unmet::failed)?;
            self.models.insert(size.into(), Loaded { model, tokenizer, load_ms, path });
        }
        Ok(self.models.get_mut(size).expect("inserted above"))
    }

    /// The llama.cpp build, located once.
    pub fn llama(&mut self) -> Result<LlamaCpp, Unmet> {
        let found = self.llama.get_or_insert_with(|| LlamaCpp::locate().map_err(|e| format!("llama.cpp: {e}")));
        found.clone().map_err(Unmet::Missing)
    }

    /// A llama-server for the model of `size`, started once per run.
    pub fn server(&mut self, size: &str) -> Result<&LlamaServer, Unmet> {
        if !self.servers.contains_key(size) {
            let llama = self.llama()?;
            let path = self.model_path(size)?;
            self.say(format_args!("starting llama-server for {}", path.display()));
            let srv = LlamaServer::start(&llama, &path, self.settings.threads, crate::engines::READY_TIMEOUT)
                .map_err(Unmet::failed)?;
            self.servers.insert(size.into(), srv);
        }
        Ok(&self.servers[size])
    }

    /// The loaded model of `size` together with its llama-server.
    pub fn model_and_server(&mut self, size: &str) -> Result<(&mut Loaded, &LlamaServer), Unmet> {
        self.model(size)?;
        self.server(size)?;
        let loaded = self.models.get_mut(size).expect("loaded above");
        Ok((loaded, &self.servers[size]))
    }

    /// The OpenAI-compatible endpoint of engine `name` serving the model of
    /// `size`, started once per run (with room for at least
    /// [`Context::SERVING_SLOTS`] concurrent requests, more when `streams` asks).
    /// An unknown engine, or one with no HTTP endpoint, is an error; one
    /// missing on this host is a skip.
    pub fn endpoint(&mut self, name: &str, size: &str, streams: usize) -> Result<&Endpoint, Unmet> {
        let slots = streams.max(Self::SERVING_SLOTS);
        let key = format!("{name} {size} {slots}");
        if !self.endpoints.contains_key(&key) {
            let engine = self.engines.get(name).map_err(Unmet::Failed)?.clone();
            let with = self.serve_with(size, slots)?;
            self.say(format_args!("starting engine `{name}` for the {size} model ({slots} slots)"));
            let started = engine.serve(&with).map_err(Unmet::from);
            self.endpoints.insert(key.clone(), started);
        }
        self.endpoints[&key].as_ref().map_err(Unmet::clone)
    }

    /// How a server of the `size` model is started for this run, with `slots` parallel requests.
    pub fn serve_with(&mut self, size: &str, slots: usize) -> Result<ServeWith, Unmet> {
        Ok(ServeWith {
            model: self.model_path(size)?,
            threads: self.settings.threads,
            slots,
            falsify_exe: self.falsify_exe.clone(),
            ready_timeout: crate::engines::READY_TIMEOUT,
        })
    }

    /// Engine `name` opened for benchmarks of the `size` model, once per run
    /// (a server it needs is started with [`Context::SERVING_SLOTS`] slots).
    fn open_engine(&mut self, name: &str, size: &str) -> Result<&Opened, Unmet> {
        let key = format!("{name} {size}");
        if !self.opened.contains_key(&key) {
            let engine = self.engines.get(name).map_err(Unmet::Failed)?.clone();
            let with = self.serve_with(size, Self::SERVING_SLOTS)?;
            if engine.is_http() {
                self.say(format_args!("opening engine `{name}` for the {size} model"));
            }
            let opened = Opened::open(&engine, &with).map_err(Unmet::from);
            self.opened.insert(key.clone(), opened);
        }
        self.opened[&key].as_ref().map_err(Unmet::clone)
    }

    /// The endpoints of engines `a` and `b` (see [`Context::endpoint`]).
    pub fn endpoint_pair(
        &mut self,
        a: &str,
        b: &str,
        size: &str,
        streams: usize,
    ) -> Result<(&Endpoint, &Endpoint), Unmet> {
        self.endpoint(a, size, streams)?;
        self.endpoint(b, size, streams)?;
        let slots = streams.max(Self::SERVING_SLOTS);
        let get = |name: &str| self.endpoints[&format!("{name} {size} {slots}")].as_ref().map_err(Unmet::clone);
        Ok((get(a)?, get(b)?))
    }

    /// Concurrent requests every started server can take at least.
    pub const SERVING_SLOTS: usize = 4;

    /// The Ollama server, probed once.
    pub fn ollama(&mut self) -> Result<&Ollama, Unmet> {
        let found = self.ollama.get_or_insert_with(|| {
            let o = Ollama::from_env()?;
            o.probe().map(|_| o)
        });
        // Only "no server listening" is a skip; a malformed OLLAMA_HOST or a
        // broken server is the harness's error.
        found.as_ref().map_err(|e| {
            let message = format!("ollama: {e}");
            if e.is_no_server() {
                Unmet::Missing(message)
            } else {
                Unmet::Failed(message)
            }
        })
    }

    /// The benchmark `spec`, run once per run: warmup, then `settings.runs`
    /// interleaved rounds of the engine and the baseline.
    pub fn bench(&mut self, spec: &BenchSpec) -> Result<BenchResult, Unmet> {
        if let Some((_, r)) = self.benches.iter().find(|(s, _)| s == spec) {
            return r.clone();
        }
        let result = self.run_bench(spec);
        if let Ok(r) = &result {
            for s in &r.series {
                self.record_series(
                    format!("bench {spec} {} {}", s.engine, s.metric),
                    &s.unit,
                    r.protocol.warmup,
                    &s.samples,
                );
            }
        }
        self.benches.push((spec.clone(), result.clone()));
        result
    }

    /// Records a series of samples a check took: `warmup` runs discarded
    /// first, then `samples`. Every measuring check calls it, so the run's
    /// record holds every series behind a performance verdict.
    pub fn record_series(&mut self, name: impl Into<String>, unit: &str, warmup: usize, samples: &[f64]) {
        let s = SampleSeries { name: name.into(), unit: unit.into(), warmup, samples: samples.to_vec() };
        match self.series.iter_mut().find(|x| x.name == s.name) {
            Some(x) => *x = s,
            None => self.series.push(s),
        }
    }

    /// Every series of samples this run has taken, in order.
    pub fn series(&self) -> &[SampleSeries] {
        &self.series
    }

    /// Every benchmark this run has taken, in order.
    pub fn benches(&self) -> impl Iterator<Item = (&BenchSpec, &BenchResult)> {
        self.benches.iter().filter_map(|(s, r)| r.as_ref().ok().map(|r| (s, r)))
    }

    /// Decode's brick profile on the `size` model ([`BRICK_PROFILE_TOKENS`]
    /// after a short prompt, budgets from the host probe's read bandwidth,
    /// the bandwidth measured again after each window), taken once per run.
    pub fn bricks(&mut self, size: &str) -> Result<BrickProfile, Unmet> {
        let host = self.host_probe()?;
        let threads = self.settings.threads;
        self.memo(&format!("bricks:{size}"), |cx| {
            cx.say(format_args!(
                "profiling the {size} model's decode brick by brick ({BRICK_PROFILE_TOKENS} tokens), the read bandwidth measured after each window"
            ));
            let loaded = cx.model(size)?;
            let prompt = loaded.tokenizer.encode("def quicksort(items):", true);
            let probe = ReadProbe::new(Kernels::detect(), threads, BENCH_PROBE_BYTES);
            let mut bandwidth = || probe.sustained(BENCH_PROBE_PASSES);
            let p = bench::bricks::profile(&loaded.model, size, &prompt, BRICK_PROFILE_TOKENS, &host, Some(&mut bandwidth))
                .map_err(Unmet::failed)?;
            // One untimed warm-up token, then each window of tokens is one measured sample.
            let per_token: Vec<f64> = p.decode.windows.iter().map(|w| w.wall_ms / w.tokens.max(1) as f64).collect();
            cx.record_series(format!("brick profile {size} decode ms/token"), "ms", 1, &per_token);
            Ok(p)
        })
    }

    /// The model of `size` converted to APR (`falsify convert`'s code, with
    /// no verification: the claims check the file themselves), once per run.
    pub fn apr(&mut self, size: &str) -> Result<ConvertedApr, Unmet> {
        self.memo(&format!("apr:{size}"), |cx| {
            let source = cx.model_path(size)?;
            let dir = tempfile::Builder::new().prefix("falsify-apr-").tempdir().map_err(Unmet::failed)?;
            let path = dir.path().join(format!("qwen2.5-coder-{size}-instruct-q4_k_m.apr"));
            cx.say(format_args!("converting {} to {}", source.display(), path.display()));
            let conversion = crate::apr::convert(&source, &path, false, &mut |_, _| {}).map_err(Unmet::failed)?;
            Ok(ConvertedApr { path, source, conversion, _dir: std::sync::Arc::new(dir) })
        })
    }

    /// The host's ceilings (read bandwidth, int8 and f32 peaks), measured once per run.
    pub fn host_probe(&mut self) -> Result<HostProbe, Unmet> {
        let threads = self.settings.threads;
        self.memo("host_probe", |cx| {
            cx.say(format_args!(
                "probing the host: read bandwidth (512 MiB, 7 passes) and compute peaks, {threads} threads"
            ));
            Ok(HostProbe::measure(Kernels::detect(), threads, 512 << 20, 7))
        })
    }

    /// The brick profile this run has taken, if any (the 0.5B model's first).
    pub fn brick_profile(&self) -> Option<BrickProfile> {
        ["0.5b", "1.5b", "7b", "32b"].iter().find_map(|s| self.peek::<BrickProfile>(&format!("bricks:{s}")))
    }

    fn run_bench(&mut self, spec: &BenchSpec) -> Result<BenchResult, Unmet> {
        let s = self.settings;
        let protocol = Protocol {
            warmup: s.warmup,
            runs: s.runs,
            n_prompt: spec.prompt,
            n_gen: spec.gen,
            threads: s.threads,
            min_sample_ms: 1.0,
        };
        if spec.a == "none" {
            return Err(Unmet::Failed("a benchmark's engine a cannot be `none`".into()));
        }
        let sides: Vec<&str> =
            std::iter::once(spec.a.as_str()).chain((spec.b != "none").then_some(spec.b.as_str())).collect();
        for name in &sides {
            self.open_engine(name, &spec.model)?;
        }
        let progress = self.progress;
        let path = self.model_path(&spec.model)?;
        let model_file = ModelFile::describe(&path).map_err(Unmet::failed)?;
        self.model(&spec.model)?;
        let opened: Vec<&Opened> =
            sides.iter().map(|n| self.opened[&format!("{n} {}", spec.model)].as_ref().expect("opened above")).collect();
        let baselines =
            sides.iter().zip(&opened).filter_map(|(n, o)| Some(((*n).to_owned(), o.provenance()?))).collect();
        let provenance = Provenance::collect(s.threads, vec![model_file], baselines);
        let loaded = &self.models[&spec.model];
        let subjects: Vec<_> =
            opened.iter().map(|o| o.subject(&loaded.model, &loaded.tokenizer, &loaded.path)).collect();
        let label = spec.to_string();
        let b = subjects.get(1).map(|b| &**b);
        let (mut probe, mut bandwidth) = (None, Vec::new());
        let result = bench::compare(&*subjects[0], b, loaded.load_ms, &protocol, provenance, |done, total| {
            if progress {
                eprint!("\r  … bench {label}: round {done}/{total} (first {} warmup)   ", protocol.warmup);
                if done == total {
                    eprintln!();
                }
            }
            // After each measured round, the read bandwidth of the moment: the
            // host's in the same minutes as the rates it bounds.
            if done > protocol.warmup {
                let probe =
                    probe.get_or_insert_with(|| ReadProbe::new(Kernels::detect(), s.threads, BENCH_PROBE_BYTES));
                bandwidth.push(probe.sustained(BENCH_PROBE_PASSES));
            }
        })
        .map_err(Unmet::failed);
        self.bench_bandwidth.push((spec.clone(), bandwidth));
        result
    }

    /// The read bandwidth (GB/s) measured after each measured round of
    /// `spec`'s benchmark, once it has run.
    pub fn bench_bandwidth(&self, spec: &BenchSpec) -> Option<&[f64]> {
        self.bench_bandwidth.iter().find(|(s, _)| s == spec).map(|(_, b)| &b[..])
    }

    /// A measurement cached under `key` for the rest of the run: `f` runs the
    /// first time, and its result (or why it could not be taken) is reused.
    pub fn memo<T: Clone + Send + 'static>(
        &mut self,
        key: &str,
        f: impl FnOnce(&mut Context) -> Result<T, Unmet>,
    ) -> Result<T, Unmet> {
        if let Some(v) = self.memo.get(key) {
            if let Some(v) = v.downcast_ref::<Result<T, Unmet>>() {
                return v.clone();
            }
        }
        let v = f(self);
        self.memo.insert(key.into(), Box::new(v.clone()));
        v
    }

    /// The successful result cached under `key`, if one was taken.
    pub fn peek<T: Clone + 'static>(&self, key: &str) -> Option<T> {
        self.memo.get(key)?.downcast_ref::<Result<T, Unmet>>()?.as_ref().ok().cloned()
    }

    /// A fixture file under `tests/fixtures/`.
    pub fn fixture(&self, name: &str) -> PathBuf {
        self.root.join("tests/fixtures").join(name)
    }

    /// The `falsify` binary, or why there is none.
    pub fn falsify_exe(&self) -> Result<&Path, Unmet> {
        self.falsify_exe.as_deref().filter(|p| p.is_file()).ok_or_else(|| {
            Unmet::Missing("the falsify binary was not found (build it with `cargo build --release`)".into())
        })
    }

    /// Runs the `falsify` binary with `args` in its own process group (ended
    /// on a stopping signal) and waits for it.
    pub fn run_falsify(&self, args: &[&std::ffi::OsStr]) -> Result<std::process::Output, Unmet> {
        let exe = self.falsify_exe()?;
        crate::util::children::output(std::process::Command::new(exe).args(args), None)
            .map_err(|e| Unmet::Failed(format!("cannot run {}: {e}", exe.display())))
    }
}
