//! The server on a tiny generated model: every endpoint over real HTTP, the
//! OpenAI shapes, streaming with usage, bad requests, concurrent requests.

use super::api::{self, Endpoint, StopScan};
use super::chat::{render, Message, Role};
use super::*;
use crate::engine::{generate, GenerateOptions};
use crate::model::tests::tied_model;
use crate::quant::SumOrder;
use crate::sample::SamplerConfig;

fn start() -> (Server, String) {
    let model = tied_model();
    let tokenizer = Tokenizer::from_header(&model.file.header).unwrap();
    let options =
        ServeOptions { host: "127.0.0.1".into(), port: 0, max_batch: 8, context: 256, model_id: "tiny".into() };
    let server = Server::start(model, tokenizer, &options).unwrap();
    let base = format!("http://{}", server.address());
    (server, base)
}

/// POSTs `body`: the status and the response body.
fn post(url: &str, body: &str) -> (u16, String) {
    match ureq::post(url).set("Content-Type", "application/json").send_string(body) {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn post_json(url: &str, body: Value) -> Value {
    let (status, text) = post(url, &body.to_string());
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// The `data:` payloads of a server-sent event stream.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n").filter_map(|e| e.trim().strip_prefix("data:").map(|d| d.trim().to_owned())).collect()
}

/// What `falsify generate` gives for `text` on its own, greedily, as the server sums.
fn alone(text: &str, max_tokens: usize) -> String {
    let mut model = tied_model();
    model.sum_order = SumOrder::default().for_serving();
    let tok = Tokenizer::from_header(&model.file.header).unwrap();
    let sampler = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
    let opts = GenerateOptions { max_tokens, sampler, ignore_eos: true, time_bricks: false };
    generate(&model, &tok, &tok.encode(text, true), &opts, |_| {}).unwrap().text
}

#[test]
fn every_endpoint_answers_in_the_openai_shape() {
    let (_server, base) = start();
    let health: Value = ureq::get(&format!("{base}/health")).call().unwrap().into_json().unwrap();
    assert_eq!(health, json!({ "status": "ok" }));
    let models: Value = ureq::get(&format!("{base}/v1/models")).call().unwrap().into_json().unwrap();
    assert_eq!((models["object"].as_str(), models["data"][0]["id"].as_str()), (Some("list"), Some("tiny")));

    let greedy = json!({ "temperature": 0, "ignore_eos": true, "max_tokens": 5 });
    let mut body = greedy.clone();
    body["prompt"] = json!("abc");
    let done = post_json(&format!("{base}/v1/completions"), body);
    assert_eq!(done["object"], "text_completion");
    assert_eq!(done["choices"][0]["finish_reason"], "length");
    assert_eq!(done["choices"][0]["text"].as_str().unwrap(), alone("abc", 5));
    let prompt_tokens = done["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        done["usage"],
        json!({ "prompt_tokens": prompt_tokens, "completion_tokens": 5, "total_tokens": prompt_tokens + 5 })
    );

    let mut body = greedy;
    body["messages"] = json!([{ "role": "user", "content": "hello" }]);
    let chat = post_json(&format!("{base}/v1/chat/completions"), body);
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["choices"][0]["message"]["role"], "assistant");
    let want = alone(&render(&[Message { role: Role::User, content: "hello".into() }]), 5);
    assert_eq!(chat["choices"][0]["message"]["content"].as_str().unwrap(), want);
    assert_eq!(chat["usage"]["completion_tokens"], 5);
}

#[test]
fn a_stream_sends_the_same_text_in_chunks_then_usage_and_done() {
    let (_server, base) = start();
    for (endpoint, input) in [
        (Endpoint::Completions, json!({ "prompt": "hijk" })),
        (
            Endpoint::Chat,
            json!({ "messages": [{ "role": "system", "content": "be brief" }, { "role": "user", "content": "hi" }] }),
        ),
    ] {
        let path = if endpoint == Endpoint::Chat { "/v1/chat/completions" } else { "/v1/completions" };
        let mut body = json!({ "temperature": 0, "ignore_eos": true, "max_tokens": 6 });
        body.as_object_mut().unwrap().extend(input.as_object().unwrap().clone());
        let whole = post_json(&format!("{base}{path}"), body.clone());
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
        let (status, text) = post(&format!("{base}{path}"), &body.to_string());
        assert_eq!(status, 200);
        let data = events(&text);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
        let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
        let (usage, rest) = chunks.split_last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"], whole["usage"]);
        let (closing, content) = rest.split_last().unwrap();
        assert_eq!(closing["choices"][0]["finish_reason"], "length");
        let streamed: String = content
            .iter()
            .map(|c| {
                let choice = &c["choices"][0];
                assert!(choice["finish_reason"].is_null());
                match endpoint {
                    Endpoint::Completions => choice["text"].as_str().unwrap().to_owned(),
                    Endpoint::Chat => choice["delta"]["content"].as_str().unwrap().to_owned(),
                }
            })
            .collect();
        match endpoint {
            Endpoint::Completions => {
                assert_eq!(content[0]["object"], "text_completion");
                assert_eq!(streamed, whole["choices"][0]["text"].as_str().unwrap());
            }
            Endpoint::Chat => {
                assert_eq!(content[0]["object"], "chat.completion.chunk");
                assert_eq!(content[0]["choices"][0]["delta"]["role"], "assistant");
                assert_eq!(streamed, whole["choices"][0]["message"]["content"].as_str().unwrap());
            }
        }
        // Without include_usage: no usage chunk.
        body["stream_options"] = json!({ "include_usage": false });
        let plain = events(&post(&format!("{base}{path}"), &body.to_string()).1);
        assert_eq!(plain.len(), data.len() - 1);
    }
}

#[test]
fn bad_requests_get_a_4xx_naming_the_problem_and_the_server_stays_up() {
    let (_server, base) = start();
    let completions = format!("{base}/v1/completions");
    let chat = format!("{base}/v1/chat/completions");
    let cases = [
        (&completions, "{\"prompt\": \"ab\",", "the request body is not valid JSON"),
        (&completions, "[1, 2]", "the request body must be a JSON object"),
        (&completions, r#"{"max_tokens": 3}"#, "prompt: required"),
        (&completions, r#"{"prompt": 7}"#, "prompt: expected a string, got 7"),
        (&completions, r#"{"prompt": "ab", "max_tokens": "x"}"#, "max_tokens: expected a count (0 or more), got \"x\""),
        (&completions, r#"{"prompt": "ab", "max_tokens": -2}"#, "max_tokens: expected a count"),
        (
            &completions,
            r#"{"prompt": "ab", "max_tokens": 1000}"#,
            "max_tokens 1000: after a prompt of 2 tokens the context of 256 holds 254 more",
        ),
        (&completions, r#"{"prompt": "ab", "temperature": -1}"#, "temperature -1: the temperature must be"),
        (&completions, r#"{"prompt": "ab", "top_p": 0}"#, "top_p 0: top-p must be above 0"),
        (&completions, r#"{"prompt": "ab", "stream": "yes"}"#, "stream: expected true or false"),
        (&completions, r#"{"prompt": "ab", "stop": 3}"#, "stop: expected a string or an array of strings"),
        (&completions, r#"{"prompt": "ab", "n": 0}"#, "n: expected 1 to 16 choices, got 0"),
        (&completions, r#"{"prompt": ""}"#, "prompt: empty"),
        (&chat, r#"{"messages": []}"#, "messages: expected a non-empty array"),
        (
            &chat,
            r#"{"messages": [{"role": "robot", "content": "hi"}]}"#,
            "messages[0].role: expected system, user or assistant, got \"robot\"",
        ),
        (&chat, r#"{"messages": [{"content": "hi"}]}"#, "messages[0].role: required"),
    ];
    for (url, body, want) in cases {
        let (status, text) = post(url, body);
        assert_eq!(status, 400, "{body}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(want), "{body}: {message}");
    }
    let (status, text) = post(&format!("{base}/v1/nothing"), "{}");
    assert_eq!(status, 404);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["error"]["message"], "no such endpoint");
    assert_eq!(ureq::get(&format!("{base}/health")).call().unwrap().status(), 200);
    let done = post_json(&completions, json!({ "prompt": "ab", "max_tokens": 2, "ignore_eos": true }));
    assert_eq!(done["usage"]["completion_tokens"], 2);
}

/// Requests sent together are decoded in shared steps; each still gets
/// exactly the text it gets alone (the server sums batch-invariantly).
#[test]
fn concurrent_requests_each_get_their_own_text() {
    let (_server, base) = start();
    let prompts = ["abc", "defg", "hi", "jklmno", "a", "bb"];
    let served: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let url = format!("{base}/v1/completions");
                s.spawn(move || {
                    let body = json!({ "prompt": p, "max_tokens": 12, "temperature": 0, "ignore_eos": true });
                    post_json(&url, body)["choices"][0]["text"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (p, text) in prompts.iter().zip(served) {
        assert_eq!(text, alone(p, 12), "prompt {p:?}");
    }
}

/// `n` choices run side by side: choice `i` samples with the seed + `i`, so
/// each is what a request of that seed alone gets; usage counts them all,
/// and a stream carries each choice's chunks under its index.
#[test]
fn n_choices_each_sample_with_their_own_seed() {
    let (_server, base) = start();
    let url = format!("{base}/v1/completions");
    let body = |n: usize, seed: u64, stream: bool| {
        json!({ "prompt": "ab", "max_tokens": 10, "temperature": 1.0, "seed": seed, "ignore_eos": true, "n": n,
                "stream": stream, "stream_options": { "include_usage": true } })
    };
    let three = post_json(&url, body(3, 40, false));
    let texts: Vec<&str> = (0..3).map(|i| three["choices"][i]["text"].as_str().unwrap()).collect();
    assert_eq!(three["usage"]["completion_tokens"], 30);
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(three["choices"][i]["index"], i);
        let single = post_json(&url, body(1, 40 + i as u64, false));
        assert_eq!(single["choices"][0]["text"].as_str().unwrap(), *text, "choice {i}");
    }
    assert!(texts[0] != texts[1] || texts[1] != texts[2], "three seeds gave one text: {texts:?}");
    let (status, streamed) = post(&url, &body(3, 40, true).to_string());
    assert_eq!(status, 200);
    let mut joined = vec![String::new(); 3];
    let mut usage = None;
    for e in events(&streamed).iter().filter(|e| *e != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        match v["choices"].get(0) {
            Some(c) => joined[c["index"].as_u64().unwrap() as usize] += c["text"].as_str().unwrap(),
            None => usage = Some(v["usage"]["completion_tokens"].clone()),
        }
    }
    assert_eq!(joined, texts);
    assert_eq!((usage, events(&streamed).last().map(String::as_str)), (Some(json!(30)), Some("[DONE]")));
}

#[test]
fn a_stop_string_ends_the_text_before_it() {
    let (_server, base) = start();
    let url = format!("{base}/v1/completions");
    let free = alone("abc", 12);
    let stop: String = free.chars().skip(3).take(2).collect();
    let cut = &free[..free.find(&stop).unwrap()];
    for stream in [false, true] {
        let body = json!({ "prompt": "abc", "max_tokens": 12, "temperature": 0, "ignore_eos": true, "stop": [stop], "stream": stream });
        let (text, reason) = match stream {
            false => {
                let done = post_json(&url, body);
                (done["choices"][0]["text"].as_str().unwrap().to_owned(), done["choices"][0]["finish_reason"].clone())
            }
            true => {
                let chunks: Vec<Value> = events(&post(&url, &body.to_string()).1)
                    .iter()
                    .filter(|d| *d != "[DONE]")
                    .map(|d| serde_json::from_str(d).unwrap())
                    .collect();
                let text = chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap()).collect();
                (text, chunks.last().unwrap()["choices"][0]["finish_reason"].clone())
            }
        };
        assert_eq!((text.as_str(), reason), (cut, json!("stop")), "stream: {stream}");
    }
}

#[test]
fn the_server_stops_and_frees_its_port() {
    let (server, _) = start();
    let address = server.address();
    server.stop().unwrap();
    assert!(std::net::TcpStream::connect(address).is_err());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let model = tied_model();
    let tokenizer = Tokenizer::from_header(&model.file.header).unwrap();
    let options = ServeOptions {
        host: "127.0.0.1".into(),
        port: taken.local_addr().unwrap().port(),
        max_batch: 1,
        context: 16,
        model_id: "tiny".into(),
    };
    let err = Server::start(model, tokenizer, &options).err().unwrap().to_string();
    assert!(err.starts_with(&format!("cannot listen on 127.0.0.1:{}: ", options.port)), "{err}");
}

#[test]
fn stop_strings_are_found_across_pieces_and_their_starts_held_back() {
    let mut scan = StopScan::new(vec!["END".into(), "xy".into()]);
    assert_eq!(scan.push("abc"), ("abc".into(), false));
    assert_eq!(scan.push("dE"), ("d".into(), false));
    assert_eq!(scan.push("N"), (String::new(), false));
    assert_eq!(scan.push("Dzz"), (String::new(), true));
    let mut scan = StopScan::new(vec!["END".into()]);
    assert_eq!(scan.push("aEN"), ("a".into(), false));
    assert_eq!(scan.push("x"), ("ENx".into(), false));
    assert_eq!(scan.push("EN"), (String::new(), false));
    assert_eq!(scan.finish(), "EN");
    let mut none = StopScan::new(Vec::new());
    assert_eq!(none.push("é"), ("é".into(), false));
}

#[test]
fn requests_take_defaults_and_their_own_sampling() {
    let r = api::parse(br#"{"prompt": "x"}"#, Endpoint::Completions, 5).unwrap();
    assert_eq!((r.max_tokens, r.sampler.temperature, r.sampler.seed), (Some(api::DEFAULT_COMPLETION_TOKENS), 0.8, 5));
    assert!(!r.stream && !r.include_usage && !r.ignore_eos && r.stop.is_empty());
    let r = api::parse(br#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}"#, Endpoint::Chat, 5).unwrap();
    assert_eq!(r.max_tokens, None);
    assert_eq!(r.input, api::Input::Messages(vec![Message { role: Role::User, content: "ab".into() }]));
    let body = br#"{"prompt": "x", "max_tokens": 3, "temperature": 0.5, "top_k": -1, "top_p": 0.9, "min_p": 0.1, "seed": 7, "stop": "q", "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}, "model": "any", "user": null}"#;
    let r = api::parse(body, Endpoint::Completions, 5).unwrap();
    assert_eq!(r.sampler, SamplerConfig { temperature: 0.5, top_k: 0, top_p: 0.9, min_p: 0.1, seed: 7 });
    assert_eq!(
        (r.max_tokens, r.stop, r.ignore_eos, r.stream, r.include_usage),
        (Some(3), vec!["q".into()], true, true, true)
    );
}

#[test]
fn the_chat_template_is_qwens() {
    let user = |c: &str| Message { role: Role::User, content: c.into() };
    assert_eq!(render(&[user("hi")]), Tokenizer::chat_prompt("hi", None));
    let system = Message { role: Role::System, content: "be brief".into() };
    assert_eq!(render(&[system.clone(), user("hi")]), Tokenizer::chat_prompt("hi", Some("be brief")));
    let turns = [system, user("a"), Message { role: Role::Assistant, content: "b".into() }, user("c")];
    assert_eq!(
        render(&turns),
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn the_terminal_chat_keeps_the_conversation_and_ends_at_exit_or_eof() {
    let model = tied_model();
    let tok = Tokenizer::from_header(&model.file.header).unwrap();
    let sampler = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
    let generate_opts = GenerateOptions { max_tokens: 4, sampler, ignore_eos: true, time_bricks: false };
    let options = chat::ChatOptions { generate: generate_opts.clone(), system: None };
    let answer = |messages: &[Message]| {
        generate(&model, &tok, &tok.encode(&render(messages), true), &generate_opts, |_| {}).unwrap().text
    };
    let user = |c: &str| Message { role: Role::User, content: c.into() };
    let first = answer(&[user("ab")]);
    let second = answer(&[user("ab"), Message { role: Role::Assistant, content: first.clone() }, user("cd")]);
    for (input, want) in [
        ("ab\n\ncd\n/exit\nnever read\n", format!("{first}\n{second}\n")),
        ("ab\n", format!("{first}\n")),
        ("/exit\n", String::new()),
    ] {
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        chat::chat(&model, &tok, &options, &mut input.as_bytes(), &mut out, &mut notes, "> ").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), want, "input {input:?}");
    }
}

#[test]
fn a_terminal_chat_that_outgrows_the_context_starts_over() {
    let model = crate::model::tests::model_with_context(40);
    let tok = Tokenizer::from_header(&model.file.header).unwrap();
    let sampler = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
    let generate = GenerateOptions { max_tokens: 4, sampler, ignore_eos: true, time_bricks: false };
    let options = chat::ChatOptions { generate, system: Some("s".into()) };
    let (mut out, mut notes) = (Vec::new(), Vec::new());
    let long = "abcdefghijklmno".repeat(4);
    chat::chat(&model, &tok, &options, &mut format!("{long}\nab\n").as_bytes(), &mut out, &mut notes, "").unwrap();
    let notes = String::from_utf8(notes).unwrap();
    assert!(notes.contains("more than the context of 40; starting over"), "{notes}");
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1, "the second line is answered");
}
