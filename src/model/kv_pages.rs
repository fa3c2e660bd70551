//! Pages of the KV cache: what a page holds (nothing yet, its bytes in
//! memory, one repeated value, or its LZ4-compressed bytes), the same-fill
//! detector and the page compressor.

use crate::kernels::Kernels;

/// Where a page's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// Never written: no memory committed (reads as zeros).
    Unwritten,
    /// Its bytes are in memory.
    Resident,
    /// Its bytes are in memory and LZ4 does not shrink them (not tried again).
    Incompressible,
    /// Every 8-byte word of the page is this one (stored as that value alone).
    SameFill(u64),
    /// The page's bytes, LZ4-compressed (`lz4_flex`'s block format).
    Compressed(Box<[u8]>),
}

impl Page {
    /// Whether the page's bytes live outside memory (same-fill or compressed).
    pub fn is_cold(&self) -> bool {
        matches!(self, Page::SameFill(_) | Page::Compressed(_))
    }
}

/// The 8-byte word `bytes` repeats when every word of it is the same (a page
/// that is all one value, zeros included), else `None` (also for no bytes),
/// by the process's kernels ([`Kernels::same_fill`]).
pub fn same_fill(bytes: &[u8]) -> Option<u64> {
    Kernels::detect().same_fill(bytes)
}

/// Fills `bytes` with the word `word` repeated (the inverse of [`same_fill`]).
pub fn fill(bytes: &mut [u8], word: u64) {
    let w = word.to_ne_bytes();
    let (words, tail) = bytes.as_chunks_mut::<8>();
    words.iter_mut().for_each(|d| *d = w);
    tail.copy_from_slice(&w[..tail.len()]);
}

/// Splits elements of `width` bytes into byte planes (byte `j` of every
/// element together, then any bytes past the last whole element) into `out`:
/// the sign and exponent bytes of neighbouring values repeat, so LZ4 finds
/// runs in their plane that it cannot find among whole values.
fn split_planes(bytes: &[u8], width: usize, out: &mut Vec<u8>) {
    let n = bytes.len() / width;
    out.clear();
    out.resize(bytes.len(), 0);
    for (i, e) in bytes.chunks_exact(width).enumerate() {
        for (j, &b) in e.iter().enumerate() {
            out[j * n + i] = b;
        }
    }
    out[n * width..].copy_from_slice(&bytes[n * width..]);
}

/// Joins byte planes made by [`split_planes`] back into elements of `width` bytes.
fn join_planes(planes: &[u8], width: usize, out: &mut [u8]) {
    let n = out.len() / width;
    for (i, e) in out.chunks_exact_mut(width).enumerate() {
        for (j, b) in e.iter_mut().enumerate() {
            *b = planes[j * n + i];
        }
    }
    out[n * width..].copy_from_slice(&planes[n * width..]);
}

/// What a cold page of elements of `width` bytes becomes: [`Page::SameFill`]
/// when it is one value, [`Page::Compressed`] when LZ4 shrinks its byte
/// planes, else [`Page::Incompressible`]. `scratch` holds the planes.
pub fn freeze(bytes: &[u8], width: usize, scratch: &mut Vec<u8>) -> Page {
    if let Some(word) = same_fill(bytes) {
        return Page::SameFill(word);
    }
    split_planes(bytes, width.max(1), scratch);
    let packed = lz4_flex::block::compress(scratch);
    if packed.len() < bytes.len() {
        Page::Compressed(packed.into_boxed_slice())
    } else {
        Page::Incompressible
    }
}

/// Restores a cold page of elements of `width` bytes into `bytes` (its full
/// size); `scratch` holds the planes. Zeros need no work when `bytes` already
/// reads as zeros (`zeroed`).
pub fn thaw(page: &Page, bytes: &mut [u8], width: usize, zeroed: bool, scratch: &mut Vec<u8>) -> Result<(), String> {
    match page {
        Page::SameFill(0) if zeroed => Ok(()),
        Page::SameFill(word) => {
            fill(bytes, *word);
            Ok(())
        }
        Page::Compressed(packed) => {
            scratch.resize(bytes.len(), 0);
            match lz4_flex::block::decompress_into(packed, scratch) {
                Ok(n) if n == bytes.len() => {
                    join_planes(scratch, width.max(1), bytes);
                    Ok(())
                }
                Ok(n) => Err(format!("a compressed KV page decompressed to {n} bytes, not {}", bytes.len())),
                Err(e) => Err(format!("a compressed KV page does not decompress: {e}")),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_fill_finds_one_value_and_misses_any_other_byte() {
        for len in [16usize, 256, 4096, 4104, 16384 + 3] {
            let mut page = vec![0u8; len];
            assert_eq!(same_fill(&page), Some(0), "{len} zeros");
            fill(&mut page, 0x3c00_3c00_3c00_3c00);
            assert_eq!(same_fill(&page), Some(0x3c00_3c00_3c00_3c00), "{len} f16 ones");
            for at in [0, 1, len / 2, len - 1] {
                let mut odd = page.clone();
                odd[at] ^= 1;
                assert_eq!(same_fill(&odd), None, "{len} bytes, byte {at} differs");
            }
        }
        assert_eq!(same_fill(&[]), None);
        assert_eq!(same_fill(&[1, 2, 3]), None, "shorter than a word");
    }

    #[test]
    fn a_frozen_page_thaws_to_its_bytes() {
        let varied: Vec<u8> = (0..16384u32).map(|i| (i % 251 / 7) as u8).collect();
        let noise: Vec<u8> = {
            let mut rng = crate::rng::SplitMix64(9);
            (0..16384).map(|_| rng.next_u64() as u8).collect()
        };
        let ones = vec![7u8; 4096];
        // f16 values whose high bytes repeat and low bytes do not: compressible as planes only.
        let halves: Vec<u8> = noise.chunks_exact(2).flat_map(|c| [c[0], 0x3c]).collect();
        let scratch = &mut Vec::new();
        assert!(matches!(freeze(&varied, 2, scratch), Page::Compressed(_)));
        assert_eq!(freeze(&noise, 2, scratch), Page::Incompressible);
        assert!(matches!(freeze(&halves, 2, scratch), Page::Compressed(_)));
        assert_eq!(freeze(&ones, 2, scratch), Page::SameFill(u64::from_ne_bytes([7; 8])));
        for (bytes, width) in [(&varied[..], 2), (&varied[..], 4), (&halves, 2), (&ones, 2), (&varied[..5001], 4)] {
            let page = freeze(bytes, width, scratch);
            assert!(page.is_cold());
            let mut back = vec![0u8; bytes.len()];
            thaw(&page, &mut back, width, true, scratch).unwrap();
            assert_eq!(back, bytes, "width {width}");
        }
        let mut short = vec![0u8; 100];
        assert!(thaw(&freeze(&varied, 2, scratch), &mut short, 2, false, scratch).is_err());
    }
}
