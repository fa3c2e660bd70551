//! The prompts a load sends: a seeded generator of prompts with a fixed
//! number of tokens, or a JSONL file of `{"prompt": ..., "max_tokens": ...}`.

use std::path::Path;

use serde::Deserialize;

use crate::rng::SplitMix64;

/// One request to send.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The prompt text.
    pub prompt: String,
    /// Tokens to generate (exactly: requests ignore end-of-sequence).
    pub max_tokens: usize,
}

/// Common English words that Qwen2's tokenizer (and most BPE tokenizers)
/// keep as one token each, with their leading space: a prompt of `n` of
/// them is `n` tokens.
const WORDS: [&str; 32] = [
    " the", " of", " and", " to", " in", " is", " that", " for", " it", " as", " with", " was", " on", " be", " at",
    " by", " this", " from", " or", " an", " are", " not", " but", " all", " can", " one", " which", " has", " more",
    " will", " time", " new",
];

/// `count` prompts of `prompt_tokens` words each, drawn by a generator seeded with `seed`.
pub fn generated(count: usize, prompt_tokens: usize, max_tokens: usize, seed: u64) -> Vec<Request> {
    let mut rng = SplitMix64(seed);
    (0..count)
        .map(|_| Request { prompt: (0..prompt_tokens).map(|_| WORDS[rng.below(WORDS.len())]).collect(), max_tokens })
        .collect()
}

/// The requests of a JSONL file, one object per non-blank line; `max_tokens`
/// may be left out (then `default_max_tokens`). Errors name the file and line.
pub fn from_jsonl(path: &Path, default_max_tokens: usize) -> Result<Vec<Request>, String> {
    let text = crate::util::read_text_limited(path, crate::util::MAX_TEXT_FILE_BYTES).map_err(|e| e.to_string())?;
    parse_jsonl(&text, &path.display().to_string(), default_max_tokens)
}

fn parse_jsonl(text: &str, file: &str, default_max_tokens: usize) -> Result<Vec<Request>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        prompt: String,
        max_tokens: Option<usize>,
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let l: Line = serde_json::from_str(line).map_err(|e| {
            format!("{file}:{}:{}: {e} (expected {{\"prompt\": ..., \"max_tokens\": ...}})", i + 1, e.column())
        })?;
        let max_tokens = l.max_tokens.unwrap_or(default_max_tokens);
        if max_tokens == 0 {
            return Err(format!("{file}:{}: max_tokens must be at least 1", i + 1));
        }
        out.push(Request { prompt: l.prompt, max_tokens });
    }
    if out.is_empty() {
        return Err(format!("{file}: holds no prompt (one JSON object per line)"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_prompts_are_seeded_and_have_the_asked_length() {
        let a = generated(3, 16, 8, 7);
        assert_eq!(a, generated(3, 16, 8, 7));
        assert_ne!(a, generated(3, 16, 8, 8));
        assert!(a.iter().all(|r| r.prompt.split(' ').count() == 17 && r.max_tokens == 8));
    }

    #[test]
    fn every_word_is_one_token_of_the_real_tokenizer() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::claims::requires::model_path("0.5b"));
        let Ok(file) = crate::gguf::GgufFile::open(&path) else {
            eprintln!("skipped: no model at {}", path.display());
            return;
        };
        let tok = crate::tokenizer::Tokenizer::from_header(&file.header).unwrap();
        for w in WORDS {
            assert_eq!(tok.encode(w, false).len(), 1, "{w:?}");
        }
        let r = &generated(1, 24, 1, 3)[0];
        assert_eq!(tok.encode(&r.prompt, false).len(), 24);
    }

    #[test]
    fn jsonl_lines_parse_and_bad_ones_are_named() {
        let ok = parse_jsonl("{\"prompt\":\"a\",\"max_tokens\":4}\n\n{\"prompt\":\"b\"}\n", "p.jsonl", 9).unwrap();
        assert_eq!(ok[1], Request { prompt: "b".into(), max_tokens: 9 });
        for (text, want) in [
            ("{\"prompt\":\"a\"}\n{\"prompt\":1}\n", "p.jsonl:2:"),
            ("{\"prompt\":\"a\",\"n\":1}\n", "p.jsonl:1:"),
            ("{\"prompt\":\"a\",\"max_tokens\":0}\n", "p.jsonl:1: max_tokens"),
            ("\n\n", "holds no prompt"),
        ] {
            let err = parse_jsonl(text, "p.jsonl", 4).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
