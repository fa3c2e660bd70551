//! Ollama through its HTTP API (`/api/generate`), used when a server answers
//! at `$OLLAMA_HOST`. Only "no server is listening" (the connection refused)
//! makes Ollama-dependent results skip; a malformed `OLLAMA_HOST`, a server
//! that answers with an HTTP error or garbage, or a stream that stalls is an
//! error, with the HTTP status and body when there is one.
//!
//! Generation is streamed, and the limit is on silence, not on the whole
//! generation: a stream that sends nothing for [`DEFAULT_STALL`] (or
//! `$FALSIFY_OLLAMA_TIMEOUT` seconds; loading the model before the first chunk
//! counts) fails, however long a steadily streaming generation takes.
//!
//! Rates use Ollama's own counters: decode tok/s = `eval_count / eval_duration`,
//! prefill tok/s = `prompt_eval_count / prompt_eval_duration` (durations in ns).

use std::io::Read;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BaselineError;

/// The environment variable naming the server (`host[:port]` or `http://host[:port]`).
pub const HOST_ENV: &str = "OLLAMA_HOST";
/// The environment variable that sets [`DEFAULT_STALL`] otherwise, in seconds.
pub const STALL_ENV: &str = "FALSIFY_OLLAMA_TIMEOUT";
/// How long a request may wait for the next bytes of its answer (the first
/// chunk of a generation included) before it fails as stalled.
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);
/// The most bytes of a response read: a generation's stream is far smaller.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;
/// The most bytes of an HTTP error's body shown.
const MAX_ERROR_BODY_BYTES: u64 = 2048;

/// A server address, from `$OLLAMA_HOST` (default `127.0.0.1:11434`).
#[derive(Debug, Clone)]
pub struct Ollama {
    base: String,
    stall: Duration,
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
        let chunk: Chunk = serde_json::from_str(line).map_err(|e| bad(format!("{e}: {}", excerpt(line))))?;
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

/// The base URL `host` names: `host[:port]`, `http://host[:port]`, `[v6]:port`;
/// the port defaults to Ollama's 11434. Anything else is refused, naming why.
pub fn base_url(host: &str) -> Result<String, BaselineError> {
    let bad = |message: String| BaselineError::Config { setting: format!("{HOST_ENV}={host:?}"), message };
    let host = host.trim();
    let rest = match host.split_once("://") {
        None => host,
        Some(("http", rest)) => rest,
        Some((scheme, _)) => return Err(bad(format!("scheme {scheme:?} is not supported (use http://host:port)"))),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Ok("http://127.0.0.1:11434".into());
    }
    let (name, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) =
                v6.split_once(']').ok_or_else(|| bad("an IPv6 address lacks its closing `]`".into()))?;
            addr.parse::<std::net::Ipv6Addr>().map_err(|e| bad(format!("[{addr}]: {e}")))?;
            let port = match after {
                "" => None,
                _ => {
                    Some(after.strip_prefix(':').ok_or_else(|| bad(format!("{after:?} after the address")))?.to_owned())
                }
            };
            (format!("[{addr}]"), port)
        }
        None => match rest.rsplit_once(':') {
            Some((name, port)) => (name.to_owned(), Some(port.to_owned())),
            None => (rest.to_owned(), None),
        },
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if !name.starts_with('[') && (name.is_empty() || !name.chars().all(plain)) {
        return Err(bad(format!("{name:?} is not a host name or address")));
    }
    let port: u16 = match port {
        None => 11434,
        Some(p) => p.parse().ok().filter(|&p| p > 0).ok_or_else(|| bad(format!("port {p:?} is not 1–65535")))?,
    };
    Ok(format!("http://{name}:{port}"))
}

/// The stall limit `seconds` sets (from [`STALL_ENV`]), or [`DEFAULT_STALL`] when unset.
pub fn stall_limit(seconds: Option<&str>) -> Result<Duration, BaselineError> {
    let Some(text) = seconds else { return Ok(DEFAULT_STALL) };
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| BaselineError::Config {
            setting: format!("{STALL_ENV}={text:?}"),
            message: "not a number of seconds above 0 (and at most a day)".into(),
        })
}

/// The value of environment variable `name`: `None` when unset, an error when not UTF-8.
fn env(name: &str) -> Result<Option<String>, BaselineError> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(BaselineError::Config { setting: format!("{name}={v:?}"), message: "not UTF-8".into() })
        }
    }
}

impl Ollama {
    /// The server at `host` (see [`base_url`]), whose answers may stall for at most `stall`.
    pub fn new(host: &str, stall: Duration) -> Result<Ollama, BaselineError> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            .timeout_read(stall)
            .timeout_write(stall)
            .build();
        Ok(Ollama { base: base_url(host)?, stall, agent })
    }

    /// The server named by `$OLLAMA_HOST`, with the stall limit of
    /// `$FALSIFY_OLLAMA_TIMEOUT`; either malformed is an error.
    pub fn from_env() -> Result<Ollama, BaselineError> {
        let stall = stall_limit(env(STALL_ENV)?.as_deref())?;
        Ollama::new(env(HOST_ENV)?.as_deref().unwrap_or_default(), stall)
    }

    /// What a failed request to `url` means: nothing listening
    /// ([`BaselineError::NoServer`]), an HTTP error with its status and body,
    /// a stall, or another transport failure.
    fn failure(&self, url: &str, e: ureq::Error) -> BaselineError {
        let io_kind =
            std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>()).map(std::io::Error::kind);
        match e {
            ureq::Error::Status(code, resp) => {
                let status = format!("HTTP {code} {}", resp.status_text());
                let mut body = Vec::new();
                let read = resp.into_reader().take(MAX_ERROR_BODY_BYTES + 1).read_to_end(&mut body);
                let cut = body.len() as u64 > MAX_ERROR_BODY_BYTES;
                body.truncate(MAX_ERROR_BODY_BYTES as usize);
                let text = String::from_utf8_lossy(&body);
                let message = match (read, text.trim()) {
                    (Err(e), _) => format!("{status} (its body could not be read: {e})"),
                    (Ok(_), "") => format!("{status} with an empty body"),
                    (Ok(_), text) => format!("{status}: {text}{}", if cut { " …" } else { "" }),
                };
                BaselineError::Http { url: url.to_owned(), message }
            }
            ureq::Error::Transport(t)
                if t.kind() == ureq::ErrorKind::ConnectionFailed
                    && io_kind == Some(std::io::ErrorKind::ConnectionRefused) =>
            {
                BaselineError::NoServer { url: url.to_owned(), message: super::without_url(url, &t) }
            }
            ureq::Error::Transport(_)
                if matches!(io_kind, Some(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)) =>
            {
                self.stalled(url)
            }
            e => BaselineError::http(url, &e),
        }
    }

    /// The error of an answer that stopped coming for the stall limit.
    fn stalled(&self, url: &str) -> BaselineError {
        BaselineError::Http {
            url: url.to_owned(),
            message: format!(
                "the server sent nothing for {:.1} s (the limit; set {STALL_ENV} in seconds to change it)",
                self.stall.as_secs_f64()
            ),
        }
    }

    /// The whole body of a successful answer, at most [`MAX_RESPONSE_BYTES`], each read within the stall limit.
    fn body(&self, url: &str, resp: ureq::Response) -> Result<String, BaselineError> {
        let mut bytes = Vec::new();
        resp.into_reader().take(MAX_RESPONSE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => self.stalled(url),
            _ => BaselineError::http(url, &e),
        })?;
        let bad = |message: String| BaselineError::BadResponse { from: url.to_owned(), message };
        if bytes.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(bad(format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes")));
        }
        String::from_utf8(bytes)
            .map_err(|e| bad(format!("not UTF-8 (invalid byte at offset {})", e.utf8_error().valid_up_to())))
    }

    /// Checks that a server answers and returns its version. A server that
    /// is not listening is [`BaselineError::NoServer`] (see
    /// [`BaselineError::is_no_server`]); any other failure is a broken server.
    pub fn probe(&self) -> Result<String, BaselineError> {
        let url = format!("{}/api/version", self.base);
        let resp = self.agent.get(&url).call().map_err(|e| self.failure(&url, e))?;
        let text = self.body(&url, resp)?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| BaselineError::BadResponse {
            from: url.clone(),
            message: format!("{e}: {}", excerpt(&text)),
        })?;
        v["version"].as_str().map(str::to_owned).ok_or_else(|| BaselineError::BadResponse {
            from: url,
            message: format!("no \"version\" in {}", excerpt(&text)),
        })
    }

    /// Generates `num_predict` tokens greedily for `prompt` with `model`,
    /// streamed, so that only a stalled stream times out.
    pub fn generate(&self, model: &str, prompt: &str, num_predict: usize) -> Result<OllamaGeneration, BaselineError> {
        let url = format!("{}/api/generate", self.base);
        let body = serde_json::json!({
            "model": model, "prompt": prompt, "stream": true, "raw": true,
            "options": { "num_predict": num_predict, "temperature": 0 },
        });
        let resp = self.agent.post(&url).send_json(body).map_err(|e| self.failure(&url, e))?;
        parse_generate(&self.body(&url, resp)?)
    }
}

/// The first 200 characters of `text`, for an error message.
fn excerpt(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        format!("{cut} …")
    } else {
        cut
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

    /// A server on 127.0.0.1 that reads each request, then writes `reply`
    /// and, with `hang`, keeps the connection open until the client leaves.
    fn serve(reply: &'static [u8], hang: bool) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    line.clear();
                }
                let _ = reader.by_ref().take(length).read_to_end(&mut Vec::new());
                let _ = stream.write_all(reply);
                if hang {
                    let _ = reader.read_to_end(&mut Vec::new());
                }
            }
        });
        host
    }

    fn client(host: &str) -> Ollama {
        Ollama::new(host, Duration::from_millis(300)).unwrap()
    }

    #[test]
    fn a_streamed_generation_is_read_whole() {
        const REPLY: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n";
        let reply: &'static str = Box::leak(format!("{REPLY}{STREAM}").into_boxed_str());
        let g = client(&serve(reply.as_bytes(), false)).generate("m", "p", 4).unwrap();
        assert_eq!((g.response.as_str(), g.eval_count), ("The sky", 259));
    }

    #[test]
    fn http_errors_show_their_status_and_body() {
        let host = serve(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n\
              Connection: close\r\n\r\nmodel runner crashed\n",
            false,
        );
        let o = client(&host);
        for e in [o.generate("m", "p", 4).unwrap_err(), o.probe().unwrap_err()] {
            assert!(!e.is_no_server(), "{e}");
            assert!(e.to_string().contains("HTTP 500 Internal Server Error: model runner crashed"), "{e}");
        }
    }

    #[test]
    fn a_stalled_stream_fails_at_the_stall_limit() {
        let host = serve(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n\
              1e\r\n{\"response\":\"a\",\"done\":false}\n\r\n",
            true,
        );
        let start = std::time::Instant::now();
        let e = client(&host).generate("m", "p", 4).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        assert!(!e.is_no_server() && e.to_string().contains("sent nothing for 0.3 s"), "{e}");
        assert!(e.to_string().contains(STALL_ENV), "{e}");
        let silent = serve(b"", true);
        let e = client(&silent).probe().unwrap_err();
        assert!(!e.is_no_server() && e.to_string().contains("sent nothing"), "{e}");
    }

    #[test]
    fn a_server_answering_garbage_is_broken_not_absent() {
        let e = client(&serve(b"garbage\n\n", false)).probe().unwrap_err();
        assert!(!e.is_no_server(), "{e}");
        let host = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot json!", false);
        let e = client(&host).probe().unwrap_err();
        assert!(!e.is_no_server() && e.to_string().contains("not json!"), "{e}");
    }

    #[test]
    fn only_a_closed_port_means_no_server() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = client(&format!("127.0.0.1:{port}")).probe().unwrap_err();
        assert!(e.is_no_server(), "{e}");
        assert!(
            e.to_string().starts_with(&format!("http://127.0.0.1:{port}/api/version: no server is listening")),
            "{e}"
        );
    }

    #[test]
    fn malformed_settings_are_errors_naming_the_variable() {
        for (host, base) in [
            ("", "http://127.0.0.1:11434"),
            ("0.0.0.0", "http://0.0.0.0:11434"),
            ("http://ollama.local:8080/", "http://ollama.local:8080"),
            ("[::1]:11435", "http://[::1]:11435"),
        ] {
            assert_eq!(base_url(host).unwrap(), base, "{host}");
        }
        for host in
            ["exa mple:11434", "host:99999", "host:0", "host:port", "ftp://host", "https://host", "[::1", "a:b:c"]
        {
            let e = base_url(host).unwrap_err();
            assert!(!e.is_no_server() && e.to_string().starts_with("OLLAMA_HOST="), "{host}: {e}");
        }
        assert_eq!(stall_limit(None).unwrap(), DEFAULT_STALL);
        assert_eq!(stall_limit(Some("2.5")).unwrap(), Duration::from_millis(2500));
        for bad in ["0", "-1", "nan", "inf", "soon"] {
            let e = stall_limit(Some(bad)).unwrap_err().to_string();
            assert!(e.starts_with("FALSIFY_OLLAMA_TIMEOUT="), "{e}");
        }
    }
}
