//! The qwen2 pre-tokenizer: splits text into the pieces BPE runs on.
//!
//! It implements this pattern (Qwen2's `tokenizer.json`) by hand, because the
//! `regex` crate has no lookahead for `\s+(?!\S)`:
//!
//! ```text
//! (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}
//! | ␠?[^\s\p{L}\p{N}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+
//! ```
//!
//! Alternatives are tried in order at each position, as a backtracking regex
//! engine would; the end of the text counts as "not \S".

use unicode_general_category::{get_general_category, GeneralCategory as G};

fn is_letter(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter
    )
}

fn is_number(c: char) -> bool {
    matches!(get_general_category(c), G::DecimalNumber | G::LetterNumber | G::OtherNumber)
}

/// `\s`: the Unicode White_Space property.
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

fn is_newline(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// Splits `text` into pre-tokens (borrowed slices that concatenate back to `text`).
pub fn split(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let byte = |i: usize| chars.get(i).map_or(text.len(), |&(b, _)| b);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let end = match_at(&at, i);
        out.push(&text[byte(i)..byte(end)]);
        i = end;
    }
    out
}

/// The end (exclusive char index) of the piece starting at `i`.
fn match_at(at: &dyn Fn(usize) -> Option<char>, i: usize) -> usize {
    let c = at(i).expect("i is in range");
    let is = |j: usize, f: fn(char) -> bool| at(j).is_some_and(f);
    let run = |mut j: usize, f: fn(char) -> bool| {
        while is(j, f) {
            j += 1;
        }
        j
    };

    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if c == '\'' {
        let lower = |j: usize| at(j).map(|c| c.to_ascii_lowercase());
        match (lower(i + 1), lower(i + 2)) {
            (Some('s' | 't' | 'm' | 'd'), _) => return i + 2,
            (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => return i + 3,
            _ => {}
        }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if is_letter(c) {
        return run(i + 1, is_letter);
    }
    if !is_newline(c) && !is_number(c) && is(i + 1, is_letter) {
        return run(i + 2, is_letter);
    }
    // \p{N}
    if is_number(c) {
        return i + 1;
    }
    // ␠?[^\s\p{L}\p{N}]+[\r\n]*
    let other = |c: char| !is_space(c) && !is_letter(c) && !is_number(c);
    let start = if c == ' ' { i + 1 } else { i };
    if at(start).is_some_and(other) {
        return run(run(start, other), is_newline);
    }
    // c is whitespace from here on.
    let ws_end = run(i, is_space);
    // \s*[\r\n]+ : up to and including the last newline of the whitespace run.
    if let Some(last_nl) = (i..ws_end).rev().find(|&j| is(j, is_newline)) {
        return last_nl + 1;
    }
    // \s+(?!\S) : leave the last space to the next piece unless the text ends here.
    if ws_end - i > 1 && at(ws_end).is_some() {
        return ws_end - 1;
    }
    // \s+
    ws_end
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn splits_like_the_qwen2_pattern() {
        let cases: &[(&str, &[&str])] = &[
            ("Hello world", &["Hello", " world"]),
            ("I'm here, they'RE", &["I", "'m", " here", ",", " they", "'RE"]),
            ("x = 12345;", &["x", " =", " ", "1", "2", "3", "4", "5", ";"]),
            ("a   b", &["a", "  ", " b"]),
            ("a  \n\n  b", &["a", "  \n\n", " ", " b"]),
            ("end   ", &["end", "   "]),
            ("\tfoo", &["\tfoo"]),
            ("(x)\n\n", &["(x", ")\n\n"]),
            ("def f():\n    return 1", &["def", " f", "():\n", "   ", " return", " ", "1"]),
            ("日本語 テキスト", &["日本語", " テキスト"]),
            ("naïve café", &["naïve", " café"]),
            ("🙂🙂 ok", &["🙂🙂", " ok"]),
            ("'x", &["'x"]),
        ];
        for (text, want) in cases {
            assert_eq!(split(text), *want, "text {text:?}");
        }
    }

    #[test]
    fn pieces_concatenate_back() {
        for text in ["", " ", "  \r\n\t x", "a'b'''c", "\u{0301}e\u{0301}", "١٢٣ ⅷ"] {
            assert_eq!(split(text).concat(), text);
        }
    }
}
