//! The file `llama-perplexity --kl-divergence-base FILE` writes: llama.cpp's
//! full next-token distribution at every position its perplexity scores.
//!
//! Layout (little-endian, as llama.cpp's `tools/perplexity/perplexity.cpp`
//! writes it on x86):
//!
//! - the 8 bytes `_logits_`, then `n_ctx`, `n_vocab` and `n_chunk` as `i32`;
//! - the evaluated tokens, `n_chunk × n_ctx` `i32`s (the text's tokens, not
//!   replaced by BOS: llama.cpp puts BOS in at evaluation only);
//! - per chunk, one row for each scored position `n_ctx/2 … n_ctx−2` (the
//!   second half, each predicting the next token): `nv = 2⌈n_vocab/2⌉ + 4`
//!   `u16`s, of which the first four hold two `f32`s, `scale` and
//!   `min_log_prob`, and the next `n_vocab` the quantized log-softmax `q`:
//!   log p(token) = `scale · q[token] + min_log_prob`. Logits more than 16
//!   below the row's maximum are clipped to `q = 0`.
//!
//! The reader checks the header against the file's length before it reads
//! on, grows its buffers only as bytes actually arrive, and reports every
//! malformation as a [`KlBaseError`].

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// The file's first eight bytes.
pub const MAGIC: &[u8; 8] = b"_logits_";
/// Bytes before the tokens: the magic and three `i32`s.
const HEADER_BYTES: u64 = 8 + 3 * 4;
/// The largest context the reader accepts (llama.cpp's own models stay far below).
pub const MAX_CTX: usize = 1 << 20;
/// The largest vocabulary the reader accepts.
pub const MAX_VOCAB: usize = 1 << 22;
/// The most chunks the reader accepts.
pub const MAX_CHUNKS: usize = 1 << 20;
/// Tokens read per block while the token table grows.
const TOKEN_BLOCK: usize = 1 << 16;
/// How far above 0 a row's largest log-probability may decode (its quantization step).
const LOG_PROB_SLACK: f64 = 1e-2;

/// Why a `--kl-divergence-base` file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum KlBaseError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// It does not start with `_logits_`.
    #[error("not a llama-perplexity log-probability file: it starts with {found:?}, not \"_logits_\"")]
    Magic {
        /// The first bytes found.
        found: String,
    },
    /// A header field is outside what any real file holds.
    #[error("header field {field} = {value} is out of range ({why})")]
    Header {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
        /// The accepted range.
        why: String,
    },
    /// The file's length differs from what its header announces.
    #[error(
        "the header ({n_ctx}-token context, {n_vocab}-token vocabulary, {n_chunk} chunks) needs {expected} bytes, \
         the file holds {actual}"
    )]
    Size {
        /// Context length.
        n_ctx: usize,
        /// Vocabulary size.
        n_vocab: usize,
        /// Chunks.
        n_chunk: usize,
        /// Bytes the header needs.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The data ends before the part named.
    #[error("truncated: the file ends inside {what}")]
    Truncated {
        /// The part being read.
        what: String,
    },
    /// A token id outside the vocabulary.
    #[error("token {value} at position {index} is outside the {n_vocab}-token vocabulary")]
    Token {
        /// The id read.
        value: i32,
        /// Its index in the token table.
        index: usize,
        /// Vocabulary size.
        n_vocab: usize,
    },
    /// A row's scale or offset is not a log-probability's.
    #[error("chunk {chunk}, row {row}: {what}")]
    Row {
        /// The chunk.
        chunk: usize,
        /// The row within it.
        row: usize,
        /// What is wrong.
        what: String,
    },
    /// Every chunk has been read.
    #[error("all {0} chunks have been read")]
    Exhausted(usize),
}

/// One position's distribution, as llama.cpp stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogProbRow {
    /// Log-probability per quantization step.
    pub scale: f32,
    /// The log-probability of `q = 0` (the clipped tail's).
    pub min_log_prob: f32,
    /// Quantized log-probabilities, one per vocabulary entry.
    pub q: Vec<u16>,
}

impl LogProbRow {
    /// The stored log-probability of `token`, in f64.
    pub fn log_prob(&self, token: usize) -> f64 {
        f64::from(self.scale) * f64::from(self.q[token]) + f64::from(self.min_log_prob)
    }

    /// The row llama.cpp writes for `logits` (its `log_softmax` with the
    /// 16-bit quantization): the inverse of reading, to build files in tests.
    pub fn quantize(logits: &[f32]) -> LogProbRow {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = logits.iter().copied().fold(f32::INFINITY, f32::min).max(max - 16.0);
        let sum_exp: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
        let log_sum_exp = sum_exp.ln() as f32;
        let scale = (max - min) / 65535.0;
        let q = if scale > 0.0 {
            let inv = 1.0 / scale;
            logits.iter().map(|&l| if l > min { (inv * (l - min)).round_ties_even() as u16 } else { 0 }).collect()
        } else {
            vec![0; logits.len()]
        };
        LogProbRow { scale, min_log_prob: min - max - log_sum_exp, q }
    }
}

/// An open `--kl-divergence-base` file: its header and tokens, and its rows
/// read chunk by chunk.
#[derive(Debug)]
pub struct KlBase<R> {
    /// Tokens per chunk (llama-perplexity's `-c`).
    pub n_ctx: usize,
    /// Vocabulary size (entries per row).
    pub n_vocab: usize,
    /// Chunks in the file.
    pub n_chunk: usize,
    /// The evaluated tokens, `n_chunk × n_ctx`.
    pub tokens: Vec<u32>,
    reader: R,
    next: usize,
}

impl KlBase<BufReader<File>> {
    /// Opens `path`, checks its header against its length and reads its tokens.
    pub fn open(path: &Path) -> Result<KlBase<BufReader<File>>, KlBaseError> {
        let io = |source| KlBaseError::Io { path: path.display().to_string(), source };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        KlBase::read(BufReader::new(file), len)
    }
}

impl<R: Read> KlBase<R> {
    /// Reads the header and tokens from `reader`, which holds `len` bytes in all.
    pub fn read(mut reader: R, len: u64) -> Result<KlBase<R>, KlBaseError> {
        let mut magic = [0u8; 8];
        read_exact(&mut reader, &mut magic, "the magic")?;
        if &magic != MAGIC {
            return Err(KlBaseError::Magic { found: String::from_utf8_lossy(&magic).into_owned() });
        }
        let n_ctx = header_field(&mut reader, "n_ctx", 3, MAX_CTX)?;
        let n_vocab = header_field(&mut reader, "n_vocab", 1, MAX_VOCAB)?;
        let n_chunk = header_field(&mut reader, "n_chunk", 1, MAX_CHUNKS)?;
        let expected = file_len(n_ctx, n_vocab, n_chunk);
        if expected != len {
            return Err(KlBaseError::Size { n_ctx, n_vocab, n_chunk, expected, actual: len });
        }
        let count = n_ctx * n_chunk;
        let mut tokens = Vec::with_capacity(count.min(TOKEN_BLOCK));
        let mut block = vec![0u8; 4 * count.min(TOKEN_BLOCK)];
        while tokens.len() < count {
            let n = (count - tokens.len()).min(TOKEN_BLOCK);
            read_exact(&mut reader, &mut block[..4 * n], "the token table")?;
            for b in block[..4 * n].chunks_exact(4) {
                let value = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                let index = tokens.len();
                match u32::try_from(value) {
                    Ok(t) if (t as usize) < n_vocab => tokens.push(t),
                    _ => return Err(KlBaseError::Token { value, index, n_vocab }),
                }
            }
        }
        Ok(KlBase { n_ctx, n_vocab, n_chunk, tokens, reader, next: 0 })
    }

    /// The first position of a chunk that is scored (`n_ctx / 2`).
    pub fn first_scored(&self) -> usize {
        self.n_ctx / 2
    }

    /// Rows per chunk: positions `n_ctx/2 … n_ctx−2`.
    pub fn rows_per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.first_scored()
    }

    /// The tokens of chunk `c` (which must be below `n_chunk`).
    pub fn chunk_tokens(&self, c: usize) -> &[u32] {
        &self.tokens[c * self.n_ctx..(c + 1) * self.n_ctx]
    }

    /// Reads the next chunk's rows; [`KlBaseError::Exhausted`] after the last.
    pub fn next_chunk(&mut self) -> Result<Vec<LogProbRow>, KlBaseError> {
        let chunk = self.next;
        if chunk >= self.n_chunk {
            return Err(KlBaseError::Exhausted(self.n_chunk));
        }
        let nv = row_u16s(self.n_vocab);
        let mut bytes = vec![0u8; 2 * nv];
        let mut rows = Vec::new();
        for row in 0..self.rows_per_chunk() {
            read_exact(&mut self.reader, &mut bytes, &format!("chunk {chunk}, row {row}"))?;
            let f32_at = |i: usize| f32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
            let (scale, min_log_prob) = (f32_at(0), f32_at(4));
            let q: Vec<u16> =
                bytes[8..8 + 2 * self.n_vocab].chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
            let r = LogProbRow { scale, min_log_prob, q };
            check_row(&r).map_err(|what| KlBaseError::Row { chunk, row, what })?;
            rows.push(r);
        }
        self.next += 1;
        Ok(rows)
    }
}

/// `u16`s per row: two `f32`s, then the vocabulary padded to an even count.
fn row_u16s(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// The exact length of a file with this header (the fields are already
/// bounded, so the product fits in u64).
fn file_len(n_ctx: usize, n_vocab: usize, n_chunk: usize) -> u64 {
    let (ctx, chunks) = (n_ctx as u64, n_chunk as u64);
    let rows = ctx - 1 - ctx / 2;
    HEADER_BYTES + 4 * ctx * chunks + chunks * rows * 2 * row_u16s(n_vocab) as u64
}

/// A row whose scale and offset could come from a log-softmax: finite, the
/// scale not negative, and the largest log-probability (about) at most 0.
fn check_row(r: &LogProbRow) -> Result<(), String> {
    if !r.scale.is_finite() || r.scale < 0.0 || !r.min_log_prob.is_finite() {
        return Err(format!("scale {} and min_log_prob {} are not a log-softmax's", r.scale, r.min_log_prob));
    }
    let top =
        r.q.iter()
            .copied()
            .max()
            .map_or(f64::NEG_INFINITY, |q| f64::from(r.scale) * f64::from(q) + f64::from(r.min_log_prob));
    if top > LOG_PROB_SLACK {
        return Err(format!("its largest log-probability decodes to {top} > 0"));
    }
    Ok(())
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), KlBaseError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => KlBaseError::Truncated { what: what.to_owned() },
        _ => KlBaseError::Io { path: what.to_owned(), source: e },
    })
}

fn header_field(reader: &mut impl Read, field: &'static str, min: usize, max: usize) -> Result<usize, KlBaseError> {
    let mut b = [0u8; 4];
    read_exact(reader, &mut b, &format!("the header's {field}"))?;
    let value = i32::from_le_bytes(b);
    usize::try_from(value).ok().filter(|v| (min..=max).contains(v)).ok_or_else(|| KlBaseError::Header {
        field,
        value: i64::from(value),
        why: format!("{min}..={max}"),
    })
}

/// The bytes of a file with these tokens and rows, as llama-perplexity lays
/// them out: the inverse of [`KlBase::read`], to build files in tests.
pub fn encode(n_ctx: usize, n_vocab: usize, tokens: &[u32], rows: &[LogProbRow]) -> Vec<u8> {
    let n_chunk = tokens.len() / n_ctx.max(1);
    let mut out = MAGIC.to_vec();
    for v in [n_ctx, n_vocab, n_chunk] {
        out.extend((v as i32).to_le_bytes());
    }
    out.extend(tokens.iter().flat_map(|&t| (t as i32).to_le_bytes()));
    for r in rows {
        out.extend(r.scale.to_le_bytes());
        out.extend(r.min_log_prob.to_le_bytes());
        out.extend(r.q.iter().flat_map(|q| q.to_le_bytes()));
        out.resize(out.len() + 2 * (row_u16s(n_vocab) - 4 - r.q.len()), 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{encode, file_len, KlBase, KlBaseError, LogProbRow};
    use std::io::Cursor;

    /// A 2-chunk file of 8-token chunks over a 5-token vocabulary: 3 rows per chunk.
    fn sample() -> (Vec<u32>, Vec<LogProbRow>, Vec<u8>) {
        let tokens: Vec<u32> = (0..16).map(|i| i % 5).collect();
        let rows: Vec<LogProbRow> =
            (0..6).map(|r| LogProbRow::quantize(&[1.0, -2.0 + r as f32, 0.5, -40.0, 3.0 - r as f32 * 0.25])).collect();
        let bytes = encode(8, 5, &tokens, &rows);
        (tokens, rows, bytes)
    }

    fn read(bytes: &[u8]) -> Result<KlBase<Cursor<&[u8]>>, KlBaseError> {
        KlBase::read(Cursor::new(bytes), bytes.len() as u64)
    }

    #[test]
    fn a_hand_built_file_reads_back_exactly() {
        let (tokens, rows, bytes) = sample();
        // Header 20 bytes, 16 tokens, 6 rows of 2·3 + 4 = 10 u16s (5 entries padded to 6).
        assert_eq!(bytes.len() as u64, 20 + 64 + 6 * 20);
        assert_eq!(file_len(8, 5, 2), bytes.len() as u64);
        let mut base = read(&bytes).unwrap();
        assert_eq!((base.n_ctx, base.n_vocab, base.n_chunk), (8, 5, 2));
        assert_eq!((base.first_scored(), base.rows_per_chunk()), (4, 3));
        assert_eq!(base.tokens, tokens);
        assert_eq!(base.chunk_tokens(1), &tokens[8..]);
        assert_eq!(base.next_chunk().unwrap(), rows[..3]);
        assert_eq!(base.next_chunk().unwrap(), rows[3..]);
        assert!(matches!(base.next_chunk(), Err(KlBaseError::Exhausted(2))));
    }

    #[test]
    fn quantized_rows_decode_to_the_log_softmax() {
        let logits = [2.0f32, -1.0, 0.25, -30.0, 1.5];
        let z = logits.iter().map(|&l| f64::from(l).exp()).sum::<f64>().ln();
        let row = LogProbRow::quantize(&logits);
        for (i, &l) in logits.iter().enumerate().filter(|(_, &l)| l > 2.0 - 16.0) {
            assert!((row.log_prob(i) - (f64::from(l) - z)).abs() < 2e-4, "token {i}");
        }
        // Clipped: more than 16 below the maximum decodes to the floor, about −16 − log Z.
        assert_eq!(row.q[3], 0);
        assert!((row.log_prob(3) - (-16.0 + 2.0 - z)).abs() < 1e-4);
        // A flat row has scale 0 and every entry at log(1/n).
        let flat = LogProbRow::quantize(&[0.5; 4]);
        assert_eq!((flat.scale, flat.q.clone()), (0.0, vec![0; 4]));
        assert!((flat.log_prob(2) - 0.25f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn a_truncated_or_padded_file_is_a_size_error() {
        let (_, _, bytes) = sample();
        for len in [bytes.len() - 1, bytes.len() - 40, 84, 21] {
            let err = read(&bytes[..len]).unwrap_err();
            assert!(matches!(err, KlBaseError::Size { expected: 204, .. }), "{len}: {err}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(read(&longer), Err(KlBaseError::Size { actual: 205, .. })));
        // Shorter than the header itself.
        for len in [0, 5, 8, 12, 19] {
            assert!(matches!(read(&bytes[..len]), Err(KlBaseError::Truncated { .. })), "{len}");
        }
    }

    #[test]
    fn a_reader_that_lies_about_its_length_ends_in_a_truncation_error() {
        let (_, _, bytes) = sample();
        let short = &bytes[..bytes.len() - 3];
        let mut base = KlBase::read(Cursor::new(short), bytes.len() as u64).unwrap();
        base.next_chunk().unwrap();
        let err = base.next_chunk().unwrap_err();
        assert_eq!(err.to_string(), "truncated: the file ends inside chunk 1, row 2");
        let err = KlBase::read(Cursor::new(&bytes[..50]), bytes.len() as u64).unwrap_err();
        assert_eq!(err.to_string(), "truncated: the file ends inside the token table");
    }

    #[test]
    fn hostile_headers_are_rejected_before_anything_is_allocated() {
        let (_, _, bytes) = sample();
        let with = |offset: usize, v: i32| {
            let mut b = bytes.clone();
            b[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
            read(&b).unwrap_err()
        };
        let header = |e: KlBaseError| match e {
            KlBaseError::Header { field, value, .. } => (field, value),
            other => panic!("{other}"),
        };
        assert_eq!(header(with(8, -1)), ("n_ctx", -1));
        assert_eq!(header(with(8, 2)), ("n_ctx", 2));
        assert_eq!(header(with(8, i32::MAX)), ("n_ctx", i64::from(i32::MAX)));
        assert_eq!(header(with(12, 0)), ("n_vocab", 0));
        assert_eq!(header(with(12, 1 << 30)), ("n_vocab", 1 << 30));
        assert_eq!(header(with(16, i32::MIN)), ("n_chunk", i64::from(i32::MIN)));
        // In range but inconsistent with the length: a size error, nothing read past the header.
        assert!(matches!(with(16, 1 << 20), KlBaseError::Size { n_chunk: 1_048_576, .. }));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(read(&magic).unwrap_err().to_string().contains("\"Xlogits_\""));
    }

    #[test]
    fn bad_tokens_and_rows_are_named() {
        let (_, _, bytes) = sample();
        let mut b = bytes.clone();
        b[20 + 4 * 7..20 + 4 * 8].copy_from_slice(&5i32.to_le_bytes());
        assert_eq!(read(&b).unwrap_err().to_string(), "token 5 at position 7 is outside the 5-token vocabulary");
        b[20 + 4 * 7..20 + 4 * 8].copy_from_slice(&(-3i32).to_le_bytes());
        assert!(matches!(read(&b), Err(KlBaseError::Token { value: -3, index: 7, .. })));
        // Row 1 of chunk 0 starts at 84 + 20: its scale NaN, then its offset positive.
        let row = |patch: &dyn Fn(&mut Vec<u8>)| {
            let mut b = bytes.clone();
            patch(&mut b);
            let mut base = read(&b).unwrap();
            base.next_chunk().unwrap_err().to_string()
        };
        let nan = row(&|b| b[104..108].copy_from_slice(&f32::NAN.to_le_bytes()));
        assert!(nan.starts_with("chunk 0, row 1: scale NaN"), "{nan}");
        let positive = row(&|b| b[108..112].copy_from_slice(&3.0f32.to_le_bytes()));
        assert!(positive.contains("largest log-probability decodes to"), "{positive}");
    }

    /// Reads every chunk of `bytes` (told its true length, or a wrong one), stopping at the first error.
    fn read_all(bytes: &[u8], len: u64) -> Result<usize, KlBaseError> {
        let mut base = KlBase::read(Cursor::new(bytes), len)?;
        (0..base.n_chunk).try_fold(0, |n, _| Ok(n + base.next_chunk()?.len()))
    }

    #[test]
    fn no_corruption_or_cut_panics() {
        let (_, _, bytes) = sample();
        assert_eq!(read_all(&bytes, bytes.len() as u64).unwrap(), 6);
        for i in 0..bytes.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = read_all(&b, b.len() as u64);
            }
            let _ = read_all(&bytes[..i], i as u64);
            let _ = read_all(&bytes[..i], bytes.len() as u64);
        }
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let err = KlBase::open(std::path::Path::new("/nonexistent/kl-base.bin")).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/kl-base.bin: "), "{err}");
    }
}
