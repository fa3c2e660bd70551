//! GPT-2 byte-level BPE built from a GGUF file's vocabulary and merges, with the
//! qwen2 pre-tokenizer, special tokens and the Qwen chat format.
//!
//! Encoding: split out special tokens → pre-tokenize each remaining fragment →
//! map each piece's bytes to GPT-2's printable byte alphabet → apply merges,
//! lowest rank first (leftmost on ties) → look up ids.

mod bpe;
mod pretokenize;

pub use pretokenize::split as pretokenize;

use std::collections::HashMap;

use crate::gguf::{GgufHeader, Value};

/// Why a tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A required metadata key is absent or has the wrong type.
    #[error("tokenizer metadata {0:?} is missing or malformed")]
    Metadata(&'static str),
    /// The tokenizer is not GPT-2 BPE.
    #[error("unsupported tokenizer model {0:?} (this engine supports gpt2 byte-level BPE)")]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names pre-tokenizer rules this engine does not implement.
    #[error(
        "unsupported pre-tokenizer tokenizer.ggml.pre = {0:?} (this engine implements {supported}); \
         its pieces, and so its token ids, would differ from llama.cpp's",
        supported = SUPPORTED_PRE.join(", ")
    )]
    UnsupportedPre(String),
    /// `tokenizer.ggml.pre` is absent.
    #[error(
        "tokenizer.ggml.pre is missing: llama.cpp then uses its \"default\" pre-tokenizer, which this engine \
         does not implement (it implements {supported}); name the vocabulary's pre-tokenizer in the file",
        supported = SUPPORTED_PRE.join(", ")
    )]
    MissingPre,
    /// A merge line is not two tokens separated by a space.
    #[error("merge #{index} {line:?} is not two tokens separated by one space")]
    BadMerge {
        /// Its position in the list.
        index: usize,
        /// The line.
        line: String,
    },
}

/// The `tokenizer.ggml.pre` values whose rules [`pretokenize`] implements:
/// llama.cpp gives both the qwen2 pre-tokenizer.
pub const SUPPORTED_PRE: [&str; 2] = ["qwen2", "deepseek-r1-qwen"];

/// GGUF token types (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An ordinary BPE token.
    Normal,
    /// The unknown token.
    Unknown,
    /// A control token such as `<|im_start|>`.
    Control,
    /// A user-defined token such as `<tool_call>`, always matched as a whole.
    UserDefined,
    /// A reserved, unused slot.
    Unused,
    /// A raw byte token.
    Byte,
}

impl TokenKind {
    fn from_id(id: i64) -> TokenKind {
        match id {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }
}

/// A byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    ids: HashMap<String, u32>,
    /// `(left id, right id)` → `(rank, merged id)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Special tokens matched in raw text, longest first: `(text, id, control)`.
    specials: Vec<(String, u32, bool)>,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    /// End-of-sequence token.
    pub eos: u32,
    /// Tokens that end generation (EOS, `<|im_end|>`, `<|endoftext|>`, …).
    pub end_of_generation: Vec<u32>,
    /// Whether a BOS token is prepended.
    pub add_bos: Option<u32>,
}

/// GPT-2's map from bytes to printable characters: printable Latin-1 bytes map
/// to themselves, the other 68 bytes to U+0100 onwards, in byte order.
pub fn byte_alphabet() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        map[b as usize] = if matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF) {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("below the surrogate range");
            next += 1;
            c
        };
    }
    map
}

impl Tokenizer {
    /// Builds the tokenizer from GGUF metadata.
    pub fn from_header(h: &GgufHeader) -> Result<Tokenizer, TokenizerError> {
        let model = h
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .ok_or(TokenizerError::Metadata("tokenizer.ggml.model"))?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_owned()));
        }
        match h.get("tokenizer.ggml.pre") {
            // llama.cpp reads an empty name as an absent one.
            None => return Err(TokenizerError::MissingPre),
            Some(Value::String(pre)) if pre.is_empty() => return Err(TokenizerError::MissingPre),
            Some(Value::String(pre)) if SUPPORTED_PRE.contains(&pre.as_str()) => {}
            Some(Value::String(pre)) => return Err(TokenizerError::UnsupportedPre(pre.clone())),
            Some(_) => return Err(TokenizerError::Metadata("tokenizer.ggml.pre")),
        }
        let strings = |key: &'static str| -> Result<Vec<String>, TokenizerError> {
            h.get(key)
                .and_then(Value::as_array)
                .ok_or(TokenizerError::Metadata(key))?
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or(TokenizerError::Metadata(key)))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let kinds: Vec<TokenKind> = match h.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(a) if a.len() == tokens.len() => {
                a.iter().map(|v| TokenKind::from_id(v.as_f64().unwrap_or(1.0) as i64)).collect()
            }
            Some(_) => return Err(TokenizerError::Metadata("tokenizer.ggml.token_type")),
            None => vec![TokenKind::Normal; tokens.len()],
        };
        let ids: HashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let mut merges = HashMap::new();
        for (rank, line) in strings("tokenizer.ggml.merges")?.into_iter().enumerate() {
            let bad = || TokenizerError::BadMerge { index: rank, line: line.clone() };
            let (l, r) = line.split_once(' ').ok_or_else(bad)?;
            let (Some(&li), Some(&ri), Some(&mi)) = (ids.get(l), ids.get(r), ids.get(&format!("{l}{r}"))) else {
                continue; // a merge whose parts are not tokens can never apply
            };
            merges.entry((li, ri)).or_insert((rank as u32, mi));
        }
        let mut specials: Vec<(String, u32, bool)> = kinds
            .iter()
            .enumerate()
            .filter(|(_, k)| matches!(k, TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown))
            .map(|(i, k)| (tokens[i].clone(), i as u32, *k != TokenKind::UserDefined))
            .filter(|(t, _, _)| !t.is_empty())
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let id_of = |key: &'static str| -> Option<u32> {
            h.get(key).and_then(Value::as_u64).map(|v| v as u32).filter(|&v| (v as usize) < tokens.len())
        };
        let eos =
            id_of("tokenizer.ggml.eos_token_id").ok_or(TokenizerError::Metadata("tokenizer.ggml.eos_token_id"))?;
        let add_bos = match h.get("tokenizer.ggml.add_bos_token") {
            Some(Value::Bool(true)) => id_of("tokenizer.ggml.bos_token_id"),
            _ => None,
        };
        let mut end_of_generation = vec![eos];
        for name in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"] {
            if let Some(&id) = ids.get(name) {
                if !end_of_generation.contains(&id) {
                    end_of_generation.push(id);
                }
            }
        }
        let byte_to_char = byte_alphabet();
        let char_to_byte = byte_to_char.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        Ok(Tokenizer {
            tokens,
            kinds,
            ids,
            merges,
            specials,
            byte_to_char,
            char_to_byte,
            eos,
            end_of_generation,
            add_bos,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a token given its exact vocabulary text (e.g. `<|im_start|>`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// The kind of a token.
    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// Encodes text. With `parse_special`, control tokens written in the text
    /// (`<|im_start|>`) become their ids; user-defined tokens always do.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out: Vec<u32> = self.add_bos.into_iter().collect();
        for fragment in self.partition(text, parse_special) {
            match fragment {
                Fragment::Special(id) => out.push(id),
                Fragment::Text(t) => {
                    for piece in pretokenize::split(t) {
                        self.bpe(piece, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Splits text at special-token occurrences, longest special first.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut fragments = vec![Fragment::Text(text)];
        for (special, id, control) in &self.specials {
            if *control && !parse_special {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len());
            for f in fragments {
                let Fragment::Text(mut t) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = t.find(special.as_str()) {
                    if at > 0 {
                        next.push(Fragment::Text(&t[..at]));
                    }
                    next.push(Fragment::Special(*id));
                    t = &t[at + special.len()..];
                }
                if !t.is_empty() {
                    next.push(Fragment::Text(t));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// Byte-level BPE of one pre-token, appending ids to `out`.
    fn bpe(&self, piece: &str, out: &mut Vec<u32>) {
        let encoded: String = piece.bytes().map(|b| self.byte_to_char[b as usize]).collect();
        if let Some(&id) = self.ids.get(&encoded) {
            out.push(id);
            return;
        }
        out.extend(bpe::merge(&self.symbols(&encoded), |l, r| self.merges.get(&(l, r)).copied()));
    }

    /// The single-character tokens of a byte-encoded piece, before any merge.
    /// A character outside the vocabulary (never the case for a complete byte
    /// alphabet) is dropped rather than invented.
    fn symbols(&self, encoded: &str) -> Vec<u32> {
        encoded.chars().filter_map(|c| self.ids.get(c.encode_utf8(&mut [0; 4]) as &str).copied()).collect()
    }

    /// The bytes a token stands for: raw text for special tokens, decoded bytes otherwise.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(text) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        match self.kinds[id as usize] {
            TokenKind::Normal | TokenKind::Byte => {
                text.chars().map(|c| self.char_to_byte.get(&c).copied().unwrap_or(b'?')).collect()
            }
            _ => text.as_bytes().to_vec(),
        }
    }

    /// Decodes ids to text (invalid UTF-8 at the seams becomes U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Renders a single-turn chat prompt in the Qwen format, with the
    /// model's default system message, ending where the assistant's answer begins.
    pub fn chat_prompt(user: &str, system: Option<&str>) -> String {
        let system = system.unwrap_or(DEFAULT_SYSTEM_PROMPT);
        format!("<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
    }
}

/// The system message of Qwen's chat template when a conversation has none.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

enum Fragment<'t> {
    Text(&'t str),
    Special(u32),
}

#[cfg(test)]
mod tests;
