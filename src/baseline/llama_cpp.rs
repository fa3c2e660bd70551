//! llama.cpp, built by `make llama-cpp` into `baselines/llama.cpp/`:
//! `llama-completion` for greedy text and `llama-server` (started on a loopback
//! port, stopped on drop) for tokenization and next-token probabilities. Each
//! program runs in its own process group, ended on drop or on a stopping
//! signal ([`crate::util::children`]).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::BaselineError;
use crate::util::children::{self, GroupChild};
use crate::util::{read_text_limited, MAX_TEXT_FILE_BYTES};

/// Where `make llama-cpp` installs the binaries.
pub const DEFAULT_DIR: &str = "baselines/llama.cpp";
const HINT: &str = "run `make llama-cpp`, or set FALSIFY_LLAMA_CPP to a directory holding the llama.cpp binaries";

/// A llama.cpp build: a directory holding its binaries and shared libraries.
#[derive(Debug, Clone)]
pub struct LlamaCpp {
    dir: PathBuf,
}

/// `llama-perplexity`'s arguments for `model` over `text` in `ctx`-token chunks on `threads` threads.
fn perplexity_args(model: &Path, text: &Path, ctx: usize, threads: usize) -> Vec<String> {
    let (model, text) = (model.display().to_string(), text.display().to_string());
    ["-m", &model, "-f", &text, "-c", &ctx.to_string(), "-t", &threads.to_string()].map(str::to_owned).to_vec()
}

impl LlamaCpp {
    /// Finds the build in `$FALSIFY_LLAMA_CPP`, else in `baselines/llama.cpp`
    /// (relative to the current directory, then to this crate's source tree),
    /// and checks that `llama-completion` and `llama-server` are there.
    pub fn locate() -> Result<LlamaCpp, BaselineError> {
        let candidates: Vec<PathBuf> = match std::env::var_os("FALSIFY_LLAMA_CPP") {
            Some(dir) => vec![PathBuf::from(dir)],
            None => vec![PathBuf::from(DEFAULT_DIR), Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DIR)],
        };
        let dir = candidates.iter().find(|d| d.join("llama-server").is_file()).cloned().ok_or_else(|| {
            BaselineError::Missing {
                what: "llama.cpp (llama-server)".into(),
                path: candidates[0].display().to_string(),
                hint: HINT,
            }
        })?;
        let me = LlamaCpp { dir };
        for bin in ["llama-completion", "llama-server", "llama-tokenize"] {
            me.binary(bin)?;
        }
        Ok(me)
    }

    /// The path of one of its programs, checked to exist.
    pub fn binary(&self, name: &str) -> Result<PathBuf, BaselineError> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(BaselineError::Missing { what: name.into(), path: path.display().to_string(), hint: HINT })
        }
    }

    /// The build's provenance record (`PROVENANCE.toml`, written by the build script).
    pub fn provenance(&self) -> Option<String> {
        read_text_limited(&self.dir.join("PROVENANCE.toml"), MAX_TEXT_FILE_BYTES).ok()
    }

    /// Runs `llama-bench` once: a prefill test of `n_prompt` tokens when
    /// `n_gen` is 0, or a decode test of `n_gen` tokens when `n_prompt` is 0,
    /// with `reps` repetitions; returns its raw samples.
    pub fn bench(
        &self,
        model: &Path,
        threads: usize,
        n_prompt: usize,
        n_gen: usize,
        reps: usize,
    ) -> Result<BenchRow, BaselineError> {
        let bin = self.binary("llama-bench")?;
        let args = [
            "-m",
            &model.display().to_string(),
            "-t",
            &threads.to_string(),
            "-o",
            "json",
            "-p",
            &n_prompt.to_string(),
            "-n",
            &n_gen.to_string(),
            "-r",
            &reps.to_string(),
        ]
        .map(str::to_owned);
        let out = run_with_timeout(&bin, &args, Duration::from_secs(600))?;
        let text = String::from_utf8_lossy(&out);
        let mut rows = parse_bench_json(&text)?;
        match rows.len() {
            1 => Ok(rows.remove(0)),
            n => Err(BaselineError::BadResponse {
                from: "llama-bench".into(),
                message: format!("{n} result rows, expected 1"),
            }),
        }
    }

    /// Perplexity of a text file by `llama-perplexity` with `ctx`-token chunks:
    /// its final estimate and the estimate's error.
    pub fn perplexity(
        &self,
        model: &Path,
        text: &Path,
        ctx: usize,
        threads: usize,
    ) -> Result<(f64, f64), BaselineError> {
        let bin = self.binary("llama-perplexity")?;
        let args = perplexity_args(model, text, ctx, threads);
        let (out, err) = run_with_timeout_both(&bin, &args, Duration::from_secs(900))?;
        let all = format!("{}{}", String::from_utf8_lossy(&out), err);
        parse_perplexity(&all)
    }

    /// Runs `llama-perplexity` over `text` in `ctx`-token chunks (the first
    /// `chunks` of them, or all) with `--kl-divergence-base out`: it writes
    /// its full next-token distribution at every scored position to `out`
    /// (read by [`super::kl_base::KlBase`]).
    pub fn kl_divergence_base(
        &self,
        model: &Path,
        text: &Path,
        ctx: usize,
        chunks: Option<usize>,
        threads: usize,
        out: &Path,
    ) -> Result<(), BaselineError> {
        let bin = self.binary("llama-perplexity")?;
        let mut args = perplexity_args(model, text, ctx, threads);
        args.extend(["--kl-divergence-base".to_owned(), out.display().to_string()]);
        if let Some(n) = chunks {
            args.extend(["--chunks".to_owned(), n.to_string()]);
        }
        run_with_timeout_both(&bin, &args, Duration::from_secs(900))?;
        Ok(())
    }

    /// Greedy continuation of `prompt` by `llama-completion --temp 0`: the text
    /// it prints (without the prompt). It may end early at end-of-generation.
    pub fn complete_greedy(
        &self,
        model: &Path,
        prompt: &str,
        n: usize,
        threads: usize,
    ) -> Result<String, BaselineError> {
        self.complete_greedy_with(model, prompt, n, threads, &[])
    }

    /// [`LlamaCpp::complete_greedy`] with extra `llama-completion` arguments (e.g. `-fa off`).
    pub fn complete_greedy_with(
        &self,
        model: &Path,
        prompt: &str,
        n: usize,
        threads: usize,
        extra: &[&str],
    ) -> Result<String, BaselineError> {
        let bin = self.binary("llama-completion")?;
        let args = [
            "-m",
            &model.display().to_string(),
            "-t",
            &threads.to_string(),
            "-p",
            prompt,
            "-n",
            &n.to_string(),
            "--temp",
            "0",
            "-no-cnv",
            "--no-display-prompt",
            "--simple-io",
            "-c",
            "2048",
            "-s",
            "0",
        ]
        .map(str::to_owned);
        let args: Vec<String> = args.into_iter().chain(extra.iter().map(|a| a.to_string())).collect();
        let out = run_with_timeout(&bin, &args, Duration::from_secs(300))?;
        let text = String::from_utf8(out).map_err(|_| BaselineError::BadResponse {
            from: "llama-completion".into(),
            message: "output is not UTF-8".into(),
        })?;
        Ok(strip_completion_trailer(&text).to_owned())
    }
}

impl LlamaCpp {
    /// The `load time` llama-completion reports for `model` when asked for one
    /// token (model load and context creation), ms.
    pub fn load_time_ms(&self, model: &Path, threads: usize) -> Result<f64, BaselineError> {
        let bin = self.binary("llama-completion")?;
        let args = ["-m", &model.display().to_string(), "-t", &threads.to_string(), "-p", "def", "-n", "1", "-no-cnv"]
            .map(str::to_owned);
        let (_, stderr) = run_with_timeout_both(&bin, &args, Duration::from_secs(300))?;
        parse_load_time(&stderr)
    }
}

/// Finds `load time = X ms` in llama.cpp's performance printout.
pub fn parse_load_time(output: &str) -> Result<f64, BaselineError> {
    output
        .lines()
        .find_map(|l| l.split_once("load time =").map(|(_, r)| r))
        .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .ok_or_else(|| BaselineError::BadResponse {
            from: "llama-completion".into(),
            message: "no `load time = … ms` line in its output".into(),
        })
}

/// Finds `Final estimate: PPL = X +/- E` in llama-perplexity's output.
pub fn parse_perplexity(output: &str) -> Result<(f64, f64), BaselineError> {
    let bad = |message: &str| BaselineError::BadResponse { from: "llama-perplexity".into(), message: message.into() };
    let line = output
        .lines()
        .find_map(|l| l.split_once("Final estimate: PPL = ").map(|(_, r)| r))
        .ok_or_else(|| bad("no final estimate in its output"))?;
    let mut parts = line.split("+/-").map(|p| p.trim().parse::<f64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(ppl)), Some(Ok(err))) if ppl.is_finite() && ppl >= 1.0 => Ok((ppl, err)),
        _ => Err(bad(&format!("unreadable estimate {line:?}"))),
    }
}

/// One `llama-bench -o json` result row: its raw per-repetition samples.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct BenchRow {
    /// Prompt tokens processed (a prefill test when > 0 and `n_gen` = 0).
    pub n_prompt: usize,
    /// Tokens generated (a decode test when > 0 and `n_prompt` = 0).
    pub n_gen: usize,
    /// Threads used.
    pub n_threads: usize,
    /// Duration of each repetition in nanoseconds.
    pub samples_ns: Vec<u64>,
    /// Tokens per second of each repetition.
    pub samples_ts: Vec<f64>,
}

/// Parses `llama-bench -o json` output.
pub fn parse_bench_json(json: &str) -> Result<Vec<BenchRow>, BaselineError> {
    let rows: Vec<BenchRow> = serde_json::from_str(json)
        .map_err(|e| BaselineError::BadResponse { from: "llama-bench".into(), message: e.to_string() })?;
    for r in &rows {
        if r.samples_ns.is_empty() || r.samples_ns.len() != r.samples_ts.len() {
            return Err(BaselineError::BadResponse {
                from: "llama-bench".into(),
                message: format!("{} duration samples but {} rate samples", r.samples_ns.len(), r.samples_ts.len()),
            });
        }
    }
    Ok(rows)
}

/// llama-completion ends what it prints with "\n\n", preceded by " [end of text]\n"
/// when generation stopped at an end-of-generation token; this removes both.
fn strip_completion_trailer(printed: &str) -> &str {
    let text = printed.strip_suffix("\n\n").unwrap_or(printed);
    text.strip_suffix(" [end of text]\n").unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::{parse_bench_json, parse_load_time, parse_perplexity, strip_completion_trailer};

    #[test]
    fn load_time_is_read_from_the_perf_printout() {
        let out = "llama_perf_sampler_print: ...\nllama_perf_context_print:        load time =     182.31 ms\n";
        assert_eq!(parse_load_time(out).unwrap(), 182.31);
        assert!(parse_load_time("nothing here").is_err());
        assert!(parse_load_time("load time = nan ms").is_err());
    }

    #[test]
    fn bench_json_yields_raw_samples_and_rejects_malformed_output() {
        let ok = r#"[{"n_prompt": 512, "n_gen": 0, "n_threads": 2, "avg_ts": 250.0,
                      "samples_ns": [2000000000, 2100000000], "samples_ts": [256.0, 243.8]}]"#;
        let rows = parse_bench_json(ok).unwrap();
        assert_eq!((rows[0].n_prompt, rows[0].samples_ts.clone()), (512, vec![256.0, 243.8]));
        let uneven = r#"[{"n_prompt": 1, "n_gen": 0, "n_threads": 2, "samples_ns": [1], "samples_ts": []}]"#;
        assert!(parse_bench_json(uneven).unwrap_err().to_string().contains("1 duration samples but 0 rate samples"));
        assert!(parse_bench_json("build: unknown")
            .unwrap_err()
            .to_string()
            .starts_with("unexpected response from llama-bench"));
    }

    #[test]
    fn perplexity_estimate_is_found_or_reported_missing() {
        let out = "perplexity: calculating perplexity over 4 chunks\n[1]1.0032,[2]1.0033,\nI Final estimate: PPL = 12.3456 +/- 0.00051\n";
        assert_eq!(parse_perplexity(out).unwrap(), (12.3456, 0.00051));
        assert!(parse_perplexity("crashed").unwrap_err().to_string().contains("no final estimate"));
        assert!(parse_perplexity("Final estimate: PPL = nan +/- nan").unwrap_err().to_string().contains("unreadable"));
    }

    #[test]
    fn server_timings_are_read_from_a_completion_body() {
        let body = r#"{"content":" Paris","tokens":[12095],"stop":true,
            "timings":{"cache_n":0,"prompt_n":5,"prompt_ms":21.5,"prompt_per_token_ms":4.3,"prompt_per_second":232.5,
                       "predicted_n":1,"predicted_ms":0.01,"predicted_per_token_ms":0.01,"predicted_per_second":100000.0}}"#;
        let c: super::ServerCompletion = serde_json::from_str(body).unwrap();
        let t = c.timings.unwrap();
        assert_eq!((t.prompt_n, t.prompt_ms, t.predicted_n), (5, 21.5, 1));
    }

    #[test]
    fn completion_trailer_is_removed() {
        assert_eq!(strip_completion_trailer("abc\n\n"), "abc");
        assert_eq!(strip_completion_trailer("abc\n\n\n"), "abc\n");
        assert_eq!(strip_completion_trailer("LIMIT 1; [end of text]\n\n\n"), "LIMIT 1;");
        assert_eq!(strip_completion_trailer("no trailer"), "no trailer");
    }
}

/// Runs a program to completion with a deadline; returns its stdout.
fn run_with_timeout(bin: &Path, args: &[String], timeout: Duration) -> Result<Vec<u8>, BaselineError> {
    run_with_timeout_both(bin, args, timeout).map(|(out, _)| out)
}

/// Runs a program to completion with a deadline, in its own process group
/// (ended on a stopping signal); returns its stdout and stderr.
fn run_with_timeout_both(bin: &Path, args: &[String], timeout: Duration) -> Result<(Vec<u8>, String), BaselineError> {
    let program = bin.display().to_string();
    let out = children::output(Command::new(bin).args(args), Some(timeout))
        .map_err(|e| BaselineError::Process { program: program.clone(), message: e.to_string() })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let tail: String =
            stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
        return Err(BaselineError::Process { program, message: format!("exited with {}: {tail}", out.status) });
    }
    Ok((out.stdout, stderr))
}

/// A running `llama-server` on a loopback port, in its own process group:
/// killed and reaped when dropped or when this process receives a stopping signal.
pub struct LlamaServer {
    child: GroupChild,
    base: String,
    agent: ureq::Agent,
}

/// One generated position of a `/completion` call.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenProbs {
    /// The chosen token.
    pub id: u32,
    /// Its log-probability.
    pub logprob: f64,
    /// The most likely tokens at this position, most likely first.
    pub top_logprobs: Vec<TopLogprob>,
}

/// One candidate token and its log-probability.
#[derive(Debug, Clone, Deserialize)]
pub struct TopLogprob {
    /// Token id.
    pub id: u32,
    /// Log-probability.
    pub logprob: f64,
}

/// A `/completion` result.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerCompletion {
    /// Generated text.
    pub content: String,
    /// Generated token ids.
    #[serde(default)]
    pub tokens: Vec<u32>,
    /// Per-position probabilities (when `n_probs > 0`).
    #[serde(default)]
    pub completion_probabilities: Vec<TokenProbs>,
    /// The server's own timings of this request.
    #[serde(default)]
    pub timings: Option<ServerTimings>,
}

/// llama-server's `timings` object: prompt processing and generation.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct ServerTimings {
    /// Prompt tokens evaluated (cached tokens are not counted).
    pub prompt_n: u64,
    /// Time evaluating them, ms (≈ time to first token on the server).
    pub prompt_ms: f64,
    /// Tokens generated.
    pub predicted_n: u64,
    /// Time generating them, ms.
    pub predicted_ms: f64,
    /// `predicted_n / predicted_ms`, per second (excludes prompt time).
    pub predicted_per_second: f64,
}

impl LlamaServer {
    /// Starts `llama-server` for `model` and waits until `/health` answers (at most `ready_timeout`).
    pub fn start(
        llama: &LlamaCpp,
        model: &Path,
        threads: usize,
        ready_timeout: Duration,
    ) -> Result<LlamaServer, BaselineError> {
        Self::start_with(llama, model, threads, ready_timeout, &[])
    }

    /// [`LlamaServer::start`] with extra `llama-server` arguments (e.g. `--no-repack`).
    pub fn start_with(
        llama: &LlamaCpp,
        model: &Path,
        threads: usize,
        ready_timeout: Duration,
        extra: &[&str],
    ) -> Result<LlamaServer, BaselineError> {
        let bin = llama.binary("llama-server")?;
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| {
            BaselineError::Process { program: "llama-server".into(), message: format!("no free loopback port: {e}") }
        })?;
        let child = GroupChild::spawn(
            Command::new(&bin)
                .args([
                    "-m",
                    &model.display().to_string(),
                    "-t",
                    &threads.to_string(),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "-c",
                    "4096",
                    "-np",
                    "1",
                    "--no-webui",
                ])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .map_err(|e| BaselineError::Process { program: bin.display().to_string(), message: e.to_string() })?;
        let agent =
            ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(2)).timeout(Duration::from_secs(300)).build();
        let mut server = LlamaServer { child, base: format!("http://127.0.0.1:{port}"), agent };
        let start = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait().ok().flatten() {
                return Err(BaselineError::Process {
                    program: "llama-server".into(),
                    message: format!("exited during startup with {status}"),
                });
            }
            let health = server.agent.get(&format!("{}/health", server.base)).timeout(Duration::from_secs(2)).call();
            if matches!(health, Ok(ref r) if r.status() == 200) {
                return Ok(server);
            }
            if start.elapsed() > ready_timeout {
                return Err(BaselineError::Process {
                    program: "llama-server".into(),
                    message: format!("not ready after {} s", ready_timeout.as_secs()),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn post<T: for<'de> Deserialize<'de>>(&self, path: &str, body: serde_json::Value) -> Result<T, BaselineError> {
        let url = format!("{}{path}", self.base);
        let resp = self.agent.post(&url).send_json(body).map_err(|e| BaselineError::http(&url, &e))?;
        resp.into_json().map_err(|e| BaselineError::BadResponse { from: url, message: e.to_string() })
    }

    /// Its base URL, `http://127.0.0.1:PORT` (OpenAI's API lives under `/v1`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Token ids of `text` (special tokens parsed, no BOS added).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, BaselineError> {
        #[derive(Deserialize)]
        struct R {
            tokens: Vec<u32>,
        }
        Ok(self
            .post::<R>(
                "/tokenize",
                serde_json::json!({ "content": text, "add_special": false, "parse_special": true }),
            )?
            .tokens)
    }

    /// The model's own chat template applied by the server to one user message
    /// (with the generation prompt appended), as text.
    pub fn apply_template(&self, user: &str) -> Result<String, BaselineError> {
        #[derive(Deserialize)]
        struct R {
            prompt: String,
        }
        let body = serde_json::json!({ "messages": [{ "role": "user", "content": user }] });
        Ok(self.post::<R>("/apply-template", body)?.prompt)
    }

    /// Greedy continuation of `prompt` (token ids) for `n_predict` tokens, with
    /// the top `n_probs` log-probabilities at each generated position; with
    /// `ignore_eos` it does not stop at end-of-generation tokens.
    pub fn complete(
        &self,
        prompt: &[u32],
        n_predict: usize,
        n_probs: usize,
        ignore_eos: bool,
    ) -> Result<ServerCompletion, BaselineError> {
        self.post(
            "/completion",
            serde_json::json!({
                "prompt": prompt, "n_predict": n_predict, "n_probs": n_probs, "temperature": 0.0,
                "top_k": 1, "samplers": ["top_k"], "cache_prompt": false, "ignore_eos": ignore_eos, "post_sampling_probs": false, "return_tokens": true,
            }),
        )
    }
}
