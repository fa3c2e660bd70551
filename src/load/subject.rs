//! Any engine as a subject of the benchmark protocol ([`crate::bench`]): the
//! embedded engine in process, llama.cpp through llama-bench, Ollama through
//! its native API, and every other engine (llama-server, `falsify serve`, a
//! declared URL or command) through its OpenAI-compatible endpoint, timed at
//! the client:
//! - **prefill tok/s**: the server's count of prompt tokens (the prompt's
//!   words, each one token, when its usage gives none) ÷ the time to the
//!   first streamed token of a request for one token (so it includes the
//!   HTTP round trip and the first token's sampling);
//! - **decode tok/s**: tokens after the first ÷ the time from the first to
//!   the end of the stream, on a one-word prompt;
//! - **TTFT**, **ITL** and **e2e** as the client saw them.
//!
//! Every round sends prompts of its own, so no prompt cache can answer them.

use std::path::Path;
use std::time::Instant;

use super::client;
use super::prompts::{self, Request};
use crate::baseline::llama_cpp::LlamaCpp;
use crate::baseline::ollama::Ollama;
use crate::bench::{check_duration, check_length, check_min, BenchError, Protocol, Sample, Subject};
use crate::bench::{InProcess, LlamaBench, OllamaGenerate};
use crate::engines::{Endpoint, Engine, ServeWith, Source, Unavailable};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// An OpenAI-compatible endpoint measured with the protocol.
pub struct Streamed<'a> {
    /// The endpoint.
    pub endpoint: &'a Endpoint,
    agent: ureq::Agent,
}

impl<'a> Streamed<'a> {
    /// The subject behind `endpoint`, one request at a time.
    pub fn new(endpoint: &'a Endpoint) -> Streamed<'a> {
        Streamed { endpoint, agent: client::agent(1) }
    }

    /// Sends one request; a failed one is an error naming the engine.
    fn send(&self, request: &Request, metric: &str) -> Result<super::metrics::RequestRecord, BenchError> {
        let record = client::send(&self.agent, self.endpoint, request, 0, Instant::now());
        match record.error {
            Some(e) => Err(BenchError::Implausible {
                engine: self.endpoint.engine.clone(),
                metric: metric.into(),
                reason: format!("the request failed: {e}"),
            }),
            None => Ok(record),
        }
    }
}

impl Subject for Streamed<'_> {
    fn name(&self) -> &str {
        &self.endpoint.engine
    }

    fn run(&self, p: &Protocol, seed: u64) -> Result<Sample, BenchError> {
        let name = self.name().to_owned();
        let prefill = &prompts::generated(1, p.n_prompt, 1, seed ^ 0x5_7e4d)[0];
        let pre = self.send(prefill, "prefill")?;
        let prompt_tokens = pre.prompt_tokens.unwrap_or(p.n_prompt);
        check_length(&name, "prefill prompt", prompt_tokens, p.n_prompt)?;
        check_duration(&name, "prefill", pre.ttft_ms / 1e3)?;
        let dec = self.send(&prompts::generated(1, 1, p.n_gen + 1, seed ^ 0xdec0)[0], "decode")?;
        check_length(&name, "decode", dec.output_tokens.saturating_sub(1), p.n_gen)?;
        let decode_ms = dec.e2e_ms - dec.ttft_ms;
        check_duration(&name, "decode", decode_ms / 1e3)?;
        check_min(&name, "decode", decode_ms, p.min_sample_ms)?;
        Ok(Sample {
            prefill_tok_s: prompt_tokens as f64 / (pre.ttft_ms / 1e3),
            decode_tok_s: p.n_gen as f64 / (decode_ms / 1e3),
            ttft_ms: Some(pre.ttft_ms),
            itl_ms: dec.itl_ms,
            e2e_ms: Some(dec.e2e_ms),
        })
    }
}

/// What one engine needs to be measured, opened once: nothing (in process),
/// the llama.cpp build, the Ollama server and its model tag, or an endpoint
/// (with the server falsify started, stopped when this is dropped).
pub enum Opened {
    /// The embedded engine.
    InProcess,
    /// llama.cpp's command-line tools.
    Llama(LlamaCpp),
    /// Ollama's native API, and its tag for the model.
    Ollama(Ollama, String),
    /// An OpenAI-compatible endpoint.
    Http(Endpoint),
}

impl Opened {
    /// Opens `engine` for the model file and threads in `with`: what is not
    /// on this host is [`Unavailable::Missing`].
    pub fn open(engine: &Engine, with: &ServeWith) -> Result<Opened, Unavailable> {
        match &engine.source {
            Source::InProcess => Ok(Opened::InProcess),
            Source::LlamaCli => {
                LlamaCpp::locate().map(Opened::Llama).map_err(|e| Unavailable::Missing(format!("llama.cpp: {e}")))
            }
            Source::Ollama => {
                let server = Ollama::from_env().map_err(|e| Unavailable::Failed(format!("ollama: {e}")))?;
                match server.probe() {
                    Ok(_) => Ok(Opened::Ollama(server, crate::engines::ollama_model(&with.model))),
                    Err(e) if e.is_no_server() => Err(Unavailable::Missing(format!("ollama: {e}"))),
                    Err(e) => Err(Unavailable::Failed(format!("ollama: {e}"))),
                }
            }
            _ => engine.serve(with).map(Opened::Http),
        }
    }

    /// What the report's provenance says of it (none for the embedded
    /// engine, which the run's own provenance describes).
    pub fn provenance(&self) -> Option<String> {
        match self {
            Opened::InProcess => None,
            Opened::Llama(l) => Some(l.provenance().unwrap_or_else(|| "no PROVENANCE.toml".into())),
            Opened::Ollama(s, model) => {
                Some(format!("server version {}, model {model}", s.probe().unwrap_or_else(|e| e.to_string())))
            }
            Opened::Http(ep) => Some(format!("{} (model `{}`), timed at the client", ep.base, ep.model)),
        }
    }

    /// The subject measuring it on `model` (the embedded engine's copy, its
    /// tokenizer, and the file both were opened from).
    pub fn subject<'a>(&'a self, model: &'a Model, tokenizer: &'a Tokenizer, path: &'a Path) -> Box<dyn Subject + 'a> {
        match self {
            Opened::InProcess => Box::new(InProcess { model, tokenizer }),
            Opened::Llama(llama) => Box::new(LlamaBench { llama, model: path }),
            Opened::Ollama(server, tag) => Box::new(OllamaGenerate { server, model: tag.clone(), tokenizer }),
            Opened::Http(endpoint) => Box::new(Streamed::new(endpoint)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_streaming_server_is_measured_and_a_stalled_one_is_implausible() {
        let stub = super::super::stub::start(Duration::from_millis(30), Duration::from_millis(2));
        let ep = Endpoint::at("stub", &stub.base, "m");
        let p = Protocol { warmup: 0, runs: 1, n_prompt: 8, n_gen: 16, threads: 1, min_sample_ms: 1.0 };
        let s = Streamed::new(&ep).run(&p, 1).unwrap();
        assert!(s.ttft_ms.unwrap() >= 30.0, "{s:?}");
        assert!((s.prefill_tok_s - 8.0 / (s.ttft_ms.unwrap() / 1e3)).abs() < 1e-9, "{s:?}");
        assert_eq!(s.itl_ms.len(), 16, "{s:?}");
        // 16 tokens 2 ms apart: at most 500 tok/s. The client times the stream, so a first read
        // that wakes late shortens the span it sees: up to 15 ms of its 30 are allowed.
        assert!(s.decode_tok_s > 0.0 && s.decode_tok_s <= 500.0 * 2.0, "{s:?}");
        let too_short = Protocol { min_sample_ms: 10_000.0, ..p };
        match Streamed::new(&ep).run(&too_short, 1) {
            Err(BenchError::Implausible { metric, .. }) => assert_eq!(metric, "decode"),
            other => panic!("{other:?}"),
        }
    }
}
