//! `falsify serve` as a process: it prints its address, answers the official
//! `openai` Python client (chat, streaming with usage, completions; malformed
//! JSON over raw HTTP gets a 4xx and the server stays up), and stops cleanly
//! on SIGTERM. The model is a tiny one written here; the Python part skips,
//! saying why, when `make tools` has not installed `openai` into .tools.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use falsify::gguf::{GgufWriter, Value};

/// A tiny Qwen2 model in F32 (hidden 64, 4 heads, 2 KV heads, FFN 128, a
/// vocabulary of the letters and an end token), written to `path`.
fn write_tiny_model(path: &Path) {
    let (d, kv, ff) = (64u64, 32u64, 128u64);
    let mut letters: Vec<String> = ('a'..='z').chain('A'..='Z').map(String::from).collect();
    letters.push(" ".into());
    letters.push("<|im_end|>".into());
    let vocab = letters.len() as u64;
    let types: Vec<Value> = (0..vocab).map(|i| Value::I32(if i + 1 == vocab { 3 } else { 1 })).collect();
    let mut state = 0x5EEDu64;
    let mut values = |n: u64, base: f32, spread: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                base + spread * ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            })
            .collect()
    };
    let mut w = GgufWriter::new(3).meta("general.architecture", Value::String("qwen2".into()));
    let sizes = [
        ("block_count", 1),
        ("embedding_length", d as u32),
        ("feed_forward_length", ff as u32),
        ("attention.head_count", 4),
        ("attention.head_count_kv", 2),
        ("context_length", 512),
    ];
    for (key, value) in sizes {
        w = w.meta(&format!("qwen2.{key}"), Value::U32(value));
    }
    w = w
        .meta("qwen2.rope.freq_base", Value::F32(10_000.0))
        .meta("qwen2.attention.layer_norm_rms_epsilon", Value::F32(1e-6))
        .meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.tokens", Value::Array(letters.into_iter().map(Value::String).collect()))
        .meta("tokenizer.ggml.token_type", Value::Array(types))
        .meta("tokenizer.ggml.merges", Value::Array(vec![]))
        .meta("tokenizer.ggml.pre", Value::String("qwen2".into()))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(vocab as u32 - 1));
    let mut matrix = |w: GgufWriter, name: &str, rows: u64, cols: u64| {
        w.tensor_f32(name, &[cols, rows], &values(rows * cols, 0.0, 0.4))
    };
    w = matrix(w, "token_embd.weight", vocab, d);
    for (name, rows, cols) in [
        ("attn_q.weight", d, d),
        ("attn_k.weight", kv, d),
        ("attn_v.weight", kv, d),
        ("attn_output.weight", d, d),
        ("ffn_gate.weight", ff, d),
        ("ffn_up.weight", ff, d),
        ("ffn_down.weight", d, ff),
    ] {
        w = matrix(w, &format!("blk.0.{name}"), rows, cols);
    }
    let mut vector = |w: GgufWriter, name: &str, n: u64, base: f32| w.tensor_f32(name, &[n], &values(n, base, 0.1));
    for (name, n, base) in [
        ("blk.0.attn_norm.weight", d, 1.0),
        ("blk.0.ffn_norm.weight", d, 1.0),
        ("blk.0.attn_q.bias", d, 0.0),
        ("blk.0.attn_k.bias", kv, 0.0),
        ("blk.0.attn_v.bias", kv, 0.0),
        ("output_norm.weight", d, 1.0),
    ] {
        w = vector(w, name, n, base);
    }
    std::fs::write(path, w.to_bytes()).unwrap();
}

/// A running `falsify serve`, killed if the test ends before it is stopped.
struct Serve {
    child: Child,
    base: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_serve(model: &Path) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_falsify"))
        .args(["serve", "--port", "0", "--threads", "1", "--max-batch", "4", "--model"])
        .arg(model)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {line:?}")).to_owned();
    Serve { child, base }
}

/// Sends SIGTERM and waits (at most 10 s) for the exit status.
fn terminate(serve: &mut Serve) -> std::process::ExitStatus {
    // SAFETY: kill(2) with the id of a child this test started and has not reaped.
    let sent = unsafe { libc::kill(serve.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let start = Instant::now();
    loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "falsify serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const CLIENT_SCRIPT: &str = r#"
import json, sys, urllib.request, urllib.error
import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
model = client.models.list().data[0].id
assert model == "tiny", model

chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}],
                                      max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
assert chat.choices[0].message.role == "assistant"
assert chat.usage.completion_tokens == 8, chat.usage
assert chat.usage.total_tokens == chat.usage.prompt_tokens + 8

pieces, usage = [], None
for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}],
                                            max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"ignore_eos": True}):
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
assert "".join(pieces) == chat.choices[0].message.content, (pieces, chat.choices[0].message.content)
assert usage is not None and usage.completion_tokens == 8, usage

done = client.completions.create(model=model, prompt="abc", max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 5, done

several = client.completions.create(model=model, prompt="abc", max_tokens=4, n=3, seed=9, extra_body={"ignore_eos": True})
assert [c.index for c in several.choices] == [0, 1, 2] and several.usage.completion_tokens == 12, several

request = urllib.request.Request(base + "/v1/chat/completions", data=b'{"messages": [', headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(request)
    raise SystemExit("malformed JSON was accepted")
except urllib.error.HTTPError as e:
    assert 400 <= e.code < 500, e.code
    body = json.loads(e.read())
    assert body["error"]["type"] == "invalid_request_error", body
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=100000)
    raise SystemExit("max_tokens beyond the context was accepted")
except openai.BadRequestError as e:
    assert "max_tokens" in str(e), e
assert json.loads(urllib.request.urlopen(base + "/health").read()) == {"status": "ok"}
print("openai client ok")
"#;

#[test]
fn falsify_serve_answers_the_openai_client_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    write_tiny_model(&model);
    let mut serve = start_serve(&model);
    let health = ureq::get(&format!("{}/health", serve.base)).call().unwrap().into_string().unwrap();
    assert_eq!(health, r#"{"status":"ok"}"#);

    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/lib");
    if tools.join("openai").is_dir() {
        let out = Command::new("python3")
            .args(["-c", CLIENT_SCRIPT, &serve.base])
            .env("PYTHONPATH", &tools)
            .output()
            .expect("python3 runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the openai client script failed:\n{stdout}\n{stderr}");
        assert_eq!(stdout.trim(), "openai client ok");
    } else {
        eprintln!("skipped the openai client part: {} has no openai package (run `make tools`)", tools.display());
    }
    let status = terminate(&mut serve);
    assert!(status.success(), "falsify serve exited with {status}");
}
