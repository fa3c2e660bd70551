use super::*;
use crate::gguf::GgufWriter;

/// A vocabulary of the 256 byte characters, a few merges and special tokens.
fn tokenizer() -> Tokenizer {
    let alphabet = byte_alphabet();
    let mut tokens: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "r l", "Ġwo rl", "Ġworl d"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![Value::I32(1); tokens.len()];
    for (s, ty) in [("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool_call>", 4)] {
        tokens.push(s.into());
        types.push(Value::I32(ty));
    }
    let h = GgufWriter::new(3)
        .meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.tokens", Value::Array(tokens.into_iter().map(Value::String).collect()))
        .meta("tokenizer.ggml.token_type", Value::Array(types))
        .meta("tokenizer.ggml.merges", Value::Array(merges.iter().map(|m| Value::String(m.to_string())).collect()))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(266))
        .to_bytes();
    Tokenizer::from_header(&GgufHeader::parse(&h).unwrap()).unwrap()
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
fn malformed_metadata_is_an_error() {
    let h = GgufWriter::new(3).meta("tokenizer.ggml.model", Value::String("llama".into())).to_bytes();
    let err = Tokenizer::from_header(&GgufHeader::parse(&h).unwrap()).unwrap_err().to_string();
    assert_eq!(err, "unsupported tokenizer model \"llama\" (this engine supports gpt2 byte-level BPE)");
    let h = GgufWriter::new(3).meta("tokenizer.ggml.model", Value::String("gpt2".into())).to_bytes();
    let err = Tokenizer::from_header(&GgufHeader::parse(&h).unwrap()).unwrap_err().to_string();
    assert_eq!(err, "tokenizer metadata \"tokenizer.ggml.tokens\" is missing or malformed");
}
