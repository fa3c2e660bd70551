//! The OpenAI API's requests and responses: fields read from JSON with an
//! error naming the field, text cut at stop strings, and the response and
//! stream chunk shapes of `/v1/completions` and `/v1/chat/completions`.

use serde_json::{json, Map, Value};

use super::chat::{Message, Role};
use crate::engine::{Finish, GenerateOptions};
use crate::sample::SamplerConfig;

/// A request the server refuses, with the reason (sent as a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/completions`: a prompt string.
    Completions,
    /// `/v1/chat/completions`: messages in the chat template.
    Chat,
}

/// What the model is given: a prompt string or a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Text to continue.
    Prompt(String),
    /// Messages to answer.
    Messages(Vec<Message>),
}

/// A generation request, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The prompt or the conversation.
    pub input: Input,
    /// Most tokens to generate (`None`: up to the context).
    pub max_tokens: Option<usize>,
    /// Token choice.
    pub sampler: SamplerConfig,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Strings that end the text (left out of it).
    pub stop: Vec<String>,
    /// Send the text as server-sent events.
    pub stream: bool,
    /// End the stream with a chunk of token counts.
    pub include_usage: bool,
    /// Choices to generate for the prompt, each sampled with its own seed.
    pub n: usize,
}

/// Most choices one request may ask for (`n`).
pub const MAX_CHOICES: usize = 16;

/// Temperature when a request sets none: llama-server's default, so both
/// servers sample alike when compared.
pub const DEFAULT_TEMPERATURE: f32 = 0.8;

/// Tokens generated when a `/v1/completions` request sets no `max_tokens` (OpenAI's default).
pub const DEFAULT_COMPLETION_TOKENS: usize = 16;

/// A JSON object's fields, each read as its type or refused naming it.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// The field, `None` when absent or null.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn wrong(key: &str, want: &str, got: &Value) -> BadRequest {
        BadRequest(format!("{key}: expected {want}, got {got}"))
    }

    fn number(&self, key: &str) -> Result<Option<f64>, BadRequest> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| Self::wrong(key, "a number", v))).transpose()
    }

    fn integer(&self, key: &str) -> Result<Option<i64>, BadRequest> {
        self.get(key).map(|v| v.as_i64().ok_or_else(|| Self::wrong(key, "an integer", v))).transpose()
    }

    fn count(&self, key: &str) -> Result<Option<usize>, BadRequest> {
        let v = self.get(key);
        v.map(|v| {
            v.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| Self::wrong(key, "a count (0 or more)", v))
        })
        .transpose()
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, BadRequest> {
        self.get(key).map(|v| v.as_bool().ok_or_else(|| Self::wrong(key, "true or false", v))).transpose()
    }

    fn text(&self, key: &str) -> Result<Option<&'a str>, BadRequest> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| Self::wrong(key, "a string", v))).transpose()
    }
}

/// Reads a request body for `endpoint`, with `seed` as the seed when it sets none.
pub fn parse(body: &[u8], endpoint: Endpoint, seed: u64) -> Result<Request, BadRequest> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BadRequest(format!("the request body is not valid JSON: {e}")))?;
    let object =
        value.as_object().ok_or_else(|| BadRequest(format!("the request body must be a JSON object, got {value}")))?;
    let f = Fields(object);
    f.text("model")?;
    let n = match f.integer("n")? {
        None => 1,
        Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => n as usize,
        Some(n) => return Err(BadRequest(format!("n: expected 1 to {MAX_CHOICES} choices, got {n}"))),
    };
    let input = match endpoint {
        Endpoint::Completions => {
            Input::Prompt(f.text("prompt")?.ok_or_else(|| BadRequest("prompt: required".into()))?.to_owned())
        }
        Endpoint::Chat => Input::Messages(messages(f.get("messages"))?),
    };
    let max_tokens = match f.count("max_completion_tokens")? {
        Some(n) => Some(n),
        None => f.count("max_tokens")?,
    };
    let max_tokens = match endpoint {
        Endpoint::Completions => Some(max_tokens.unwrap_or(DEFAULT_COMPLETION_TOKENS)),
        Endpoint::Chat => max_tokens,
    };
    let defaults = SamplerConfig::default();
    let top_k = match f.integer("top_k")? {
        None => defaults.top_k,
        // 0 and -1 (as vLLM writes it) turn top-k off.
        Some(k) if k <= 0 => 0,
        Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
    };
    let sampler = SamplerConfig {
        temperature: f.number("temperature")?.map_or(DEFAULT_TEMPERATURE, |t| t as f32),
        top_k,
        top_p: f.number("top_p")?.map_or(defaults.top_p, |p| p as f32),
        min_p: f.number("min_p")?.map_or(defaults.min_p, |p| p as f32),
        // A negative seed is as random as none.
        seed: f.integer("seed")?.and_then(|s| u64::try_from(s).ok()).unwrap_or(seed),
    };
    sampler.validate().map_err(|e| {
        let field = match e.flag {
            "--temp" => "temperature",
            "--top-p" => "top_p",
            _ => "min_p",
        };
        BadRequest(format!("{field} {}: {}", e.value, e.want))
    })?;
    let stop = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_owned).ok_or_else(|| Fields::wrong("stop", "strings", s)))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(Fields::wrong("stop", "a string or an array of strings", other)),
    };
    let stop = stop.into_iter().filter(|s: &String| !s.is_empty()).collect();
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(Value::Object(o)) => Fields(o).flag("include_usage")?.unwrap_or(false),
        Some(other) => return Err(Fields::wrong("stream_options", "an object", other)),
    };
    Ok(Request {
        input,
        max_tokens,
        sampler,
        ignore_eos: f.flag("ignore_eos")?.unwrap_or(false),
        stop,
        stream: f.flag("stream")?.unwrap_or(false),
        include_usage,
        n,
    })
}

/// The chat messages of a request: each an object with a known role and
/// text content (a string, or an array of text parts).
fn messages(value: Option<&Value>) -> Result<Vec<Message>, BadRequest> {
    let items = match value {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(other) => return Err(Fields::wrong("messages", "a non-empty array of messages", other)),
        None => return Err(BadRequest("messages: required".into())),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let key = format!("messages[{i}]");
            let object = m.as_object().ok_or_else(|| Fields::wrong(&key, "an object", m))?;
            let f = Fields(object);
            let role = f.text("role").map_err(|e| BadRequest(format!("{key}.{}", e.0)))?;
            let role = role.ok_or_else(|| BadRequest(format!("{key}.role: required")))?;
            let role = Role::from_name(role)
                .ok_or_else(|| BadRequest(format!("{key}.role: expected system, user or assistant, got {role:?}")))?;
            let content = match f.get("content") {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| {
                        p.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| Fields::wrong(&format!("{key}.content"), "text parts", p))
                    })
                    .collect::<Result<String, _>>()?,
                Some(other) => return Err(Fields::wrong(&format!("{key}.content"), "a string", other)),
            };
            Ok(Message { role, content })
        })
        .collect()
}

impl Request {
    /// The engine's options for choice `index` of this request, with
    /// `max_tokens` settled: choice `i` samples with the request's seed + `i`.
    pub fn options(&self, max_tokens: usize, index: usize) -> GenerateOptions {
        let sampler = SamplerConfig { seed: self.sampler.seed.wrapping_add(index as u64), ..self.sampler };
        GenerateOptions { max_tokens, sampler, ignore_eos: self.ignore_eos, time_bricks: false }
    }
}

/// Generated text cut at the first stop string: text that may be the start
/// of one is held back until the next piece settles it.
#[derive(Debug, Default)]
pub struct StopScan {
    stop: Vec<String>,
    held: String,
}

impl StopScan {
    /// A scan for `stop` strings.
    pub fn new(stop: Vec<String>) -> StopScan {
        StopScan { stop, held: String::new() }
    }

    /// Takes the next piece of text: the text now safe to send, and whether a
    /// stop string was met (then the text ends before it).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        if let Some(at) = self.stop.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let text = self.held[..at].to_owned();
            self.held.clear();
            return (text, true);
        }
        // The longest end of the held text that begins a stop string stays held.
        let keep = self
            .stop
            .iter()
            .flat_map(|s| s.char_indices().map(|(i, _)| i).skip(1).map(move |n| &s[..n]))
            .filter(|prefix| self.held.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let text = self.held[..self.held.len() - keep].to_owned();
        self.held.drain(..self.held.len() - keep);
        (text, false)
    }

    /// The text still held at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The OpenAI `finish_reason` of a generation.
pub fn finish_reason(finish: Finish, stopped_by_string: bool) -> &'static str {
    match (finish, stopped_by_string) {
        (_, true) | (Finish::EndOfGeneration, _) => "stop",
        (Finish::MaxTokens | Finish::Context, false) => "length",
    }
}

/// The `usage` object.
pub fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// Who a response is for: its id, creation time and model.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Response id (`cmpl-…`, `chatcmpl-…`).
    pub id: String,
    /// Unix time of the request.
    pub created: u64,
    /// The model's id.
    pub model: String,
    /// The endpoint answered.
    pub endpoint: Endpoint,
}

impl Reply {
    fn object(&self, stream: bool) -> &'static str {
        match (self.endpoint, stream) {
            (Endpoint::Completions, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        }
    }

    fn with_choices(&self, stream: bool, choices: Value) -> Value {
        json!({ "id": self.id, "object": self.object(stream), "created": self.created, "model": self.model, "choices": choices })
    }

    /// The whole (non-streamed) response: each choice's text and `finish_reason`, in order.
    pub fn complete(&self, choices: &[(String, &str)], usage: Value) -> Value {
        let choices: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(index, (text, finish_reason))| match self.endpoint {
                Endpoint::Completions => {
                    json!({ "index": index, "text": text, "logprobs": null, "finish_reason": finish_reason })
                }
                Endpoint::Chat => json!({
                    "index": index,
                    "message": { "role": "assistant", "content": text },
                    "logprobs": null,
                    "finish_reason": finish_reason,
                }),
            })
            .collect();
        let mut out = self.with_choices(false, Value::Array(choices));
        out["usage"] = usage;
        out
    }

    /// A stream chunk of choice `index` carrying `text` (the first one of a
    /// chat also names the assistant's role), or its closing chunk with its
    /// `finish_reason`.
    pub fn chunk(&self, index: usize, text: &str, first: bool, finish_reason: Option<&str>) -> Value {
        let choice = match self.endpoint {
            Endpoint::Completions => {
                json!({ "index": index, "text": text, "logprobs": null, "finish_reason": finish_reason })
            }
            Endpoint::Chat => {
                let delta = match (finish_reason, first) {
                    (Some(_), _) => json!({}),
                    (None, true) => json!({ "role": "assistant", "content": text }),
                    (None, false) => json!({ "content": text }),
                };
                json!({ "index": index, "delta": delta, "logprobs": null, "finish_reason": finish_reason })
            }
        };
        self.with_choices(true, json!([choice]))
    }

    /// The stream's last chunk when usage was asked for: no choices, the token counts.
    pub fn usage_chunk(&self, usage: Value) -> Value {
        let mut out = self.with_choices(true, json!([]));
        out["usage"] = usage;
        out
    }
}

/// The OpenAI error object.
pub fn error(message: &str, kind: &str) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })
}
