use std::time::{Duration, Instant};

use super::*;
use crate::gguf::GgufWriter;

/// `text`'s bytes in GPT-2's printable byte alphabet, as vocabulary entries spell them.
fn encoded(text: &str) -> String {
    let alphabet = byte_alphabet();
    text.bytes().map(|b| alphabet[b as usize]).collect()
}

/// A GGUF header with the 256 byte characters, each merge's result, three
/// special tokens, and `pre` as `tokenizer.ggml.pre` when given.
fn header(merges: &[String], pre: Option<Value>) -> Vec<u8> {
    let mut tokens: Vec<String> = byte_alphabet().iter().map(|c| c.to_string()).collect();
    for m in merges {
        let merged = m.replace(' ', "");
        if !tokens.contains(&merged) {
            tokens.push(merged);
        }
    }
    let mut types = vec![Value::I32(1); tokens.len()];
    for (s, ty) in [("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool_call>", 4)] {
        tokens.push(s.into());
        types.push(Value::I32(ty));
    }
    let eos = tokens.len() as u32 - 2;
    let mut w = GgufWriter::new(3)
        .meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.tokens", Value::Array(tokens.into_iter().map(Value::String).collect()))
        .meta("tokenizer.ggml.token_type", Value::Array(types))
        .meta("tokenizer.ggml.merges", Value::Array(merges.iter().cloned().map(Value::String).collect()))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(eos));
    if let Some(pre) = pre {
        w = w.meta("tokenizer.ggml.pre", pre);
    }
    w.to_bytes()
}

/// A qwen2 tokenizer with the byte alphabet, `merges` and special tokens.
fn tokenizer_with(merges: &[String]) -> Tokenizer {
    let h = header(merges, Some(Value::String("qwen2".into())));
    Tokenizer::from_header(&GgufHeader::parse(&h).unwrap()).unwrap()
}

/// The test vocabulary: enough merges to spell "hello world".
fn tokenizer() -> Tokenizer {
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "r l", "Ġwo rl", "Ġworl d"];
    tokenizer_with(&merges.map(String::from))
}

/// Merges that spell `unit` (byte-encoded) from its characters, left to right,
/// then join 2, 4, … up to 64 copies of it.
fn doubling_merges(unit: &str) -> Vec<String> {
    let chars: Vec<char> = unit.chars().collect();
    let mut merges: Vec<String> =
        (1..chars.len()).map(|i| format!("{} {}", chars[..i].iter().collect::<String>(), chars[i])).collect();
    let mut run = unit.to_owned();
    for _ in 0..6 {
        merges.push(format!("{run} {run}"));
        run = run.repeat(2);
    }
    merges
}

/// A vocabulary whose merges apply throughout long runs of `a`, spaces, `é`
/// and 🙂, so that each run takes thousands of merges.
fn run_tokenizer() -> Tokenizer {
    tokenizer_with(&["a", " ", "é", "🙂"].iter().flat_map(|u| doubling_merges(&encoded(u))).collect::<Vec<_>>())
}

/// The quadratic reference applied to a whole text (control tokens left as
/// text): the same fragments and pieces, each merged by rescanning every pair
/// after each merge.
fn encode_by_rescanning(t: &Tokenizer, text: &str) -> Vec<u32> {
    let mut out: Vec<u32> = t.add_bos.into_iter().collect();
    for fragment in t.partition(text, false) {
        let text = match fragment {
            Fragment::Special(id) => {
                out.push(id);
                continue;
            }
            Fragment::Text(text) => text,
        };
        for piece in pretokenize::split(text) {
            let spelled = encoded(piece);
            match t.ids.get(&spelled) {
                Some(&id) => out.push(id),
                None => {
                    out.extend(bpe::merge_by_rescanning(&t.symbols(&spelled), |l, r| t.merges.get(&(l, r)).copied()))
                }
            }
        }
    }
    out
}

#[test]
fn byte_alphabet_is_a_bijection_in_gpt2_order() {
    let a = byte_alphabet();
    assert_eq!((a[b'!' as usize], a[b' ' as usize], a[0], a[b'\n' as usize]), ('!', 'Ġ', 'Ā', 'Ċ'));
    let set: std::collections::HashSet<char> = a.iter().copied().collect();
    assert_eq!(set.len(), 256);
}

#[test]
fn merges_apply_by_rank() {
    let t = tokenizer();
    let ids = t.encode("hello world", false);
    assert_eq!(ids.iter().map(|&i| t.tokens[i as usize].as_str()).collect::<Vec<_>>(), ["hello", "Ġworld"]);
    // Unmerged bytes fall back to single-byte tokens.
    assert_eq!(t.encode("hx", false), vec![u32::from(b'h'), u32::from(b'x')]);
}

#[test]
fn specials_are_split_out_only_when_asked() {
    let t = tokenizer();
    let start = t.token_id("<|im_start|>").unwrap();
    let ids = t.encode("<|im_start|>hello<tool_call>", true);
    assert_eq!(ids[0], start);
    assert_eq!(*ids.last().unwrap(), t.token_id("<tool_call>").unwrap());
    let plain = t.encode("<|im_start|>hello<tool_call>", false);
    assert!(!plain.contains(&start), "control token parsed without parse_special");
    assert_eq!(*plain.last().unwrap(), t.token_id("<tool_call>").unwrap(), "user-defined tokens always match");
}

#[test]
fn decode_inverts_encode() {
    let t = tokenizer();
    for s in ["hello world", "<|im_start|>x\n\n  y<|im_end|>", "日本 🙂 e\u{301}", "\t\r\n", ""] {
        assert_eq!(t.decode(&t.encode(s, true)), s);
    }
}

#[test]
fn chat_prompt_has_the_qwen_shape() {
    let p = Tokenizer::chat_prompt("hi", None);
    assert!(p.starts_with("<|im_start|>system\nYou are Qwen"));
    assert!(p.ends_with("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"));
}

#[test]
fn encode_equals_the_rescanning_merge_on_random_and_adversarial_text() {
    let mut rng = crate::rng::SplitMix64(0x18);
    let alphabet = ['h', 'e', 'l', 'o', 'w', 'r', 'd', 'a', ' ', ' ', 'é', '🙂', '\n', '1', '\''];
    for t in [tokenizer(), run_tokenizer()] {
        let mut texts: Vec<String> =
            (0..300).map(|_| (0..rng.below(120)).map(|_| alphabet[rng.below(alphabet.len())]).collect()).collect();
        for unit in ["a", " ", "é", "🙂", "he", "hel", "lo ", " w", "aé"] {
            for n in [1, 2, 3, 63, 64, 65, 127, 200, 513] {
                texts.push(unit.repeat(n));
                texts.push(format!("x{}y", unit.repeat(n)));
            }
        }
        for text in &texts {
            assert_eq!(t.encode(text, false), encode_by_rescanning(&t, text), "text {text:?}");
        }
    }
}

#[test]
fn long_runs_tokenize_in_linear_time() {
    // Issue 18: these took 13 s (40k spaces) to over 60 s with the rescanning merge.
    let t = run_tokenizer();
    for (unit, n) in [("a", 130_000), (" ", 40_000), ("é", 60_000), ("🙂", 30_000)] {
        let text = unit.repeat(n);
        let start = Instant::now();
        let ids = t.encode(&text, false);
        let took = start.elapsed();
        eprintln!("{n} × {unit:?}: {} tokens in {took:?}", ids.len());
        assert_eq!(t.decode(&ids), text);
        // Runs of 64 copies, whatever the pre-tokenizer's pieces.
        assert!(ids.len() <= n / 64 + 8, "{n} × {unit:?}: {} tokens", ids.len());
        assert!(took < Duration::from_secs(5), "{n} × {unit:?} took {took:?}");
    }
}

/// The real vocabulary, when the model is here: the heap merge equals the
/// rescanning one on every piece of mixed text, code and long runs.
#[test]
fn encode_equals_the_rescanning_merge_on_the_real_vocabulary() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    if !path.is_file() {
        eprintln!("skipped: model {} absent (run `make model`)", path.display());
        return;
    }
    let t = Tokenizer::from_header(&crate::gguf::GgufFile::open(&path).unwrap().header).unwrap();
    let mut rng = crate::rng::SplitMix64(0x18);
    let alphabet: Vec<char> =
        "abcdefghijklmnopqrstuvwxyz ABC  \n\t0123456789éàü日本語🙂(){};:=+-*/'\"".chars().collect();
    let mut texts: Vec<String> =
        (0..300).map(|_| (0..rng.below(200)).map(|_| alphabet[rng.below(alphabet.len())]).collect()).collect();
    for unit in ["a", " ", "é", "🙂", "\n", "ab", "=", "0"] {
        texts.push(unit.repeat(1 + rng.below(700)));
    }
    texts.push(include_str!("mod.rs").to_owned());
    for text in &texts {
        assert_eq!(t.encode(text, false), encode_by_rescanning(&t, text), "text {text:?}");
    }
}

#[test]
fn pre_tokenizers_other_than_qwen2_are_refused_by_name() {
    let build = |pre: Option<Value>| Tokenizer::from_header(&GgufHeader::parse(&header(&[], pre)).unwrap());
    for name in SUPPORTED_PRE {
        assert!(build(Some(Value::String(name.into()))).is_ok(), "{name} refused");
    }
    for name in ["gpt-2", "llama-bpe", "default", "qwen35", "QWEN2"] {
        let err = build(Some(Value::String(name.into()))).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("unsupported pre-tokenizer tokenizer.ggml.pre = {name:?} (this engine implements qwen2, deepseek-r1-qwen)")),
            "{err}"
        );
    }
    for missing in [None, Some(Value::String(String::new()))] {
        let err = build(missing).unwrap_err().to_string();
        assert!(err.starts_with("tokenizer.ggml.pre is missing: llama.cpp then uses its \"default\""), "{err}");
        assert!(err.contains("qwen2, deepseek-r1-qwen"), "{err}");
    }
    let err = build(Some(Value::U32(2))).unwrap_err().to_string();
    assert_eq!(err, "tokenizer metadata \"tokenizer.ggml.pre\" is missing or malformed");
}

#[test]
fn malformed_metadata_is_an_error() {
    let h = GgufWriter::new(3).meta("tokenizer.ggml.model", Value::String("llama".into())).to_bytes();
    let err = Tokenizer::from_header(&GgufHeader::parse(&h).unwrap()).unwrap_err().to_string();
    assert_eq!(err, "unsupported tokenizer model \"llama\" (this engine supports gpt2 byte-level BPE)");
    let h = GgufWriter::new(3)
        .meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", Value::String("qwen2".into()))
        .to_bytes();
    let err = Tokenizer::from_header(&GgufHeader::parse(&h).unwrap()).unwrap_err().to_string();
    assert_eq!(err, "tokenizer metadata \"tokenizer.ggml.tokens\" is missing or malformed");
}
