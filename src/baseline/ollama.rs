//! Ollama through its HTTP API (`/api/generate`), used when a server answers
//! at `$OLLAMA_HOST`; otherwise every Ollama-dependent result is skipped.
//!
//! Rates use Ollama's own counters: decode tok/s = `eval_count / eval_duration`,
//! prefill tok/s = `prompt_eval_count / prompt_eval_duration` (durations in ns).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BaselineError;

/// A server address, from `$OLLAMA_HOST` (default `127.0.0.1:11434`).
#[derive(Debug, Clone)]
pub struct Ollama {
    base: String,
    agent: ureq::Agent,
}

/// The final statistics of a generation, as Ollama reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OllamaGeneration {
    /// Generated text (concatenated across streamed chunks).
    pub response: String,
    /// Tokens generated.
    pub eval_count: u64,
    /// Time generating them, ns.
    pub eval_duration: u64,
    /// Prompt tokens evaluated (0 when the prompt was cached).
    pub prompt_eval_count: u64,
    /// Time evaluating the prompt, ns.
    pub prompt_eval_duration: u64,
    /// Time loading the model, ns.
    pub load_duration: u64,
    /// Whole request, ns.
    pub total_duration: u64,
}

impl OllamaGeneration {
    /// Decode tokens per second.
    pub fn decode_tok_s(&self) -> f64 {
        self.eval_count as f64 / (self.eval_duration as f64 / 1e9)
    }

    /// Prompt tokens per second.
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_eval_count as f64 / (self.prompt_eval_duration as f64 / 1e9)
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    response: String,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    error: Option<String>,
    eval_count: Option<u64>,
    eval_duration: Option<u64>,
    prompt_eval_count: Option<u64>,
    prompt_eval_duration: Option<u64>,
    load_duration: Option<u64>,
    total_duration: Option<u64>,
}

/// Parses an `/api/generate` body: one JSON object, or newline-delimited
/// streamed objects whose last has `done: true` and the statistics.
pub fn parse_generate(body: &str) -> Result<OllamaGeneration, BaselineError> {
    let bad = |message: String| BaselineError::BadResponse { from: "ollama /api/generate".into(), message };
    let mut text = String::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let chunk: Chunk = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if let Some(error) = chunk.error {
            return Err(bad(format!("server error: {error}")));
        }
        text.push_str(&chunk.response);
        if chunk.done {
            let need = |v: Option<u64>, name: &str| v.ok_or_else(|| bad(format!("final chunk lacks {name}")));
            let g = OllamaGeneration {
                response: text,
                eval_count: need(chunk.eval_count, "eval_count")?,
                eval_duration: need(chunk.eval_duration, "eval_duration")?,
                prompt_eval_count: chunk.prompt_eval_count.unwrap_or(0),
                prompt_eval_duration: chunk.prompt_eval_duration.unwrap_or(0),
                load_duration: chunk.load_duration.unwrap_or(0),
                total_duration: chunk.total_duration.unwrap_or(0),
            };
            if g.eval_duration == 0 {
                return Err(bad("eval_duration is 0".into()));
            }
            return Ok(g);
        }
    }
    Err(bad("the response ended before a chunk with done: true".into()))
}

impl Ollama {
    /// The server named by `$OLLAMA_HOST`.
    pub fn from_env() -> Ollama {
        let host = std::env::var("OLLAMA_HOST").unwrap_or_else(|_| "127.0.0.1:11434".into());
        let base = if host.starts_with("http") { host } else { format!("http://{host}") };
        let agent =
            ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(2)).timeout(Duration::from_secs(600)).build();
        Ollama { base: base.trim_end_matches('/').to_owned(), agent }
    }

    /// Checks that a server answers; the error says where it looked.
    pub fn probe(&self) -> Result<String, BaselineError> {
        let url = format!("{}/api/version", self.base);
        let resp = self.agent.get(&url).timeout(Duration::from_secs(3)).call().map_err(|e| BaselineError::Http {
            message: format!("no Ollama server ({}); set OLLAMA_HOST", super::without_url(&url, &e)),
            url: url.clone(),
        })?;
        let v: serde_json::Value =
            resp.into_json().map_err(|e| BaselineError::BadResponse { from: url, message: e.to_string() })?;
        Ok(v["version"].as_str().unwrap_or("unknown").to_owned())
    }

    /// Generates `num_predict` tokens greedily for `prompt` with `model`.
    pub fn generate(&self, model: &str, prompt: &str, num_predict: usize) -> Result<OllamaGeneration, BaselineError> {
        let url = format!("{}/api/generate", self.base);
        let body = serde_json::json!({
            "model": model, "prompt": prompt, "stream": false, "raw": true,
            "options": { "num_predict": num_predict, "temperature": 0 },
        });
        let resp = match self.agent.post(&url).send_json(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(BaselineError::http(&url, &e)),
        };
        let text = resp.into_string().map_err(|e| BaselineError::http(&url, &e))?;
        parse_generate(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped exactly like the examples in Ollama's API documentation.
    const SINGLE: &str = r#"{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","response":"The sky is blue because it is the color of the sky.","done":true,"context":[1,2,3],"total_duration":5043500667,"load_duration":5025959,"prompt_eval_count":26,"prompt_eval_duration":325953000,"eval_count":290,"eval_duration":4709213000}"#;
    const STREAM: &str = "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\",\"response\":\"The\",\"done\":false}\n{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\",\"response\":\" sky\",\"done\":false}\n{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T19:22:45.499127Z\",\"response\":\"\",\"done\":true,\"context\":[1,2,3],\"total_duration\":10706818083,\"load_duration\":6338219291,\"prompt_eval_count\":26,\"prompt_eval_duration\":130079000,\"eval_count\":259,\"eval_duration\":4232710000}\n";

    #[test]
    fn single_response_gives_rates() {
        let g = parse_generate(SINGLE).unwrap();
        assert_eq!((g.eval_count, g.prompt_eval_count), (290, 26));
        assert!((g.decode_tok_s() - 290.0 / 4.709213).abs() < 1e-9);
        assert!((g.prefill_tok_s() - 26.0 / 0.325953).abs() < 1e-9);
    }

    #[test]
    fn streamed_response_is_concatenated() {
        let g = parse_generate(STREAM).unwrap();
        assert_eq!(g.response, "The sky");
        assert_eq!((g.eval_count, g.eval_duration, g.load_duration), (259, 4232710000, 6338219291));
    }

    #[test]
    fn errors_and_truncation_are_reported() {
        let e = parse_generate(r#"{"error":"model 'nope' not found"}"#).unwrap_err().to_string();
        assert!(e.ends_with("server error: model 'nope' not found"), "{e}");
        let e =
            parse_generate(&STREAM[..STREAM.find("\n{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T19").unwrap()])
                .unwrap_err();
        assert!(e.to_string().contains("before a chunk with done: true"));
        assert!(parse_generate("not json").is_err());
    }

    #[test]
    fn unreachable_server_is_a_clean_error() {
        let o = Ollama {
            base: "http://127.0.0.1:9".into(),
            agent: ureq::AgentBuilder::new().timeout_connect(Duration::from_millis(300)).build(),
        };
        let e = o.probe().unwrap_err().to_string();
        assert!(e.starts_with("http://127.0.0.1:9/api/version: no Ollama server"), "{e}");
    }
}
