//! One streamed completion against an OpenAI-compatible endpoint, timed at
//! the client: `/v1/completions` with `stream`, `ignore_eos` (so the output
//! length is the one asked for), greedy sampling and
//! `stream_options.include_usage` (the server's own token count).

use std::io::BufRead;
use std::time::{Duration, Instant};

use super::metrics::RequestRecord;
use super::prompts::Request;
use crate::engines::Endpoint;

/// An HTTP agent for load: no pooled-connection limit below `streams`, and
/// a generous read timeout (a stalled stream is an error, not a hang).
pub fn agent(streams: usize) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .max_idle_connections_per_host(streams.max(1))
        .timeout_connect(Duration::from_secs(5))
        .timeout_read(Duration::from_secs(120))
        .build()
}

/// What a stream's `data:` chunks said.
#[derive(Debug, Default, PartialEq)]
struct Chunks {
    /// When each chunk carrying text arrived, ms after sending.
    text_ms: Vec<f64>,
    /// The usage chunk's completion tokens.
    usage: Option<usize>,
    /// The usage chunk's prompt tokens.
    prompt_usage: Option<usize>,
}

/// Reads an SSE stream to its `data: [DONE]`, noting the arrival (ms after
/// `sent`) of each chunk that carries text.
fn read_stream(body: impl BufRead, sent: Instant) -> Result<Chunks, String> {
    let mut chunks = Chunks::default();
    for line in body.lines() {
        let line = line.map_err(|e| format!("stream broke: {e}"))?;
        let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
        if data == "[DONE]" {
            return Ok(chunks);
        }
        let at = sent.elapsed().as_secs_f64() * 1e3;
        let v: serde_json::Value =
            serde_json::from_str(data).map_err(|e| format!("chunk is not JSON ({e}): {data}"))?;
        if let Some(e) = v.get("error") {
            return Err(format!("the server sent an error: {e}"));
        }
        let choice = v.get("choices").and_then(|c| c.get(0));
        let text = choice.and_then(|c| c.get("text").or_else(|| c.get("delta").and_then(|d| d.get("content"))));
        if text.and_then(|t| t.as_str()).is_some_and(|t| !t.is_empty()) {
            chunks.text_ms.push(at);
        }
        let usage = |field: &str| v.get("usage")?.get(field)?.as_u64().map(|n| n as usize);
        chunks.usage = usage("completion_tokens").or(chunks.usage);
        chunks.prompt_usage = usage("prompt_tokens").or(chunks.prompt_usage);
    }
    Err("the stream ended without `data: [DONE]`".into())
}

/// Sends `request` as request `index` of a run that began at `run_start`, and
/// records it; a failure is recorded, not returned.
pub fn send(agent: &ureq::Agent, ep: &Endpoint, request: &Request, index: usize, run_start: Instant) -> RequestRecord {
    let sent = Instant::now();
    let sent_ms = sent.duration_since(run_start).as_secs_f64() * 1e3;
    let url = format!("{}/completions", ep.base);
    let body = serde_json::json!({
        "model": ep.model, "prompt": request.prompt, "max_tokens": request.max_tokens,
        "stream": true, "stream_options": { "include_usage": true }, "ignore_eos": true,
        "temperature": 0.0, "seed": index,
    });
    let mut call = agent.post(&url);
    if let Some(key) = &ep.api_key {
        call = call.set("Authorization", &format!("Bearer {key}"));
    }
    let result = call
        .send_json(body)
        .map_err(|e| format!("{url}: {e}"))
        .and_then(|resp| read_stream(std::io::BufReader::new(resp.into_reader()), sent));
    let e2e_ms = sent.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(c) if c.text_ms.is_empty() => RequestRecord::failed(index, sent_ms, e2e_ms, "no token streamed".into()),
        Ok(c) => RequestRecord {
            prompt_tokens: c.prompt_usage,
            ..RequestRecord::from_times(index, sent_ms, &c.text_ms, e2e_ms, c.usage)
        },
        Err(e) => RequestRecord::failed(index, sent_ms, e2e_ms, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_chunks_and_the_usage_chunk_are_read_and_a_cut_stream_is_an_error() {
        let body = "data: {\"choices\":[{\"text\":\"a\"}]}\n\n: comment\ndata: {\"choices\":[{\"text\":\"\"}]}\n\n\
                    data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n\
                    data: {\"choices\":[],\"usage\":{\"completion_tokens\":3,\"prompt_tokens\":5}}\n\ndata: [DONE]\n\n";
        let c = read_stream(body.as_bytes(), Instant::now()).unwrap();
        assert_eq!((c.text_ms.len(), c.usage, c.prompt_usage), (2, Some(3), Some(5)));
        let cut = read_stream("data: {\"choices\":[{\"text\":\"a\"}]}\n".as_bytes(), Instant::now()).unwrap_err();
        assert!(cut.contains("[DONE]"), "{cut}");
        let bad = read_stream("data: {nope\n".as_bytes(), Instant::now()).unwrap_err();
        assert!(bad.contains("not JSON"), "{bad}");
    }
}
