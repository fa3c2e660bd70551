//! APR: this engine's own model format, a GGUF file's content re-laid for the
//! fastest load with nothing lost, and [`TensorFile`], which opens either
//! format (told apart by the magic, not the extension).
//!
//! An APR file holds exactly what the GGUF held: every metadata key and value
//! (the model config and the tokenizer, so the same readers load them), every
//! tensor's name, shape, quantization type and bytes. What it adds: a
//! semantic version, a checksum over the whole header, a checksum per tensor,
//! and 256-byte alignment of every tensor's data (a cache line multiple, and
//! the widest vector load any kernel makes).
//!
//! # Layout (version 1.0.0; integers little-endian)
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 4 | magic `APR\0` |
//! | 4 | 2+2+2 | version major, minor, patch (1, 0, 0) |
//! | 10 | 2 | flags, 0 (a reader refuses any it does not know) |
//! | 12 | 4 | version of the GGUF the file was converted from |
//! | 16 | 8 | data offset: where the data section starts (a multiple of 256) |
//! | 24 | 8 | data size: the data section runs to the end of the file |
//! | 32 | 4 | header checksum: CRC-32C of bytes `[0, 32)` and `[36, data offset)` |
//! | 36 | 28 | reserved, zero |
//! | 64 | … | metadata count (u64), then each entry as GGUF encodes it: key, value type, value |
//! | … | … | tensor count (u64), then each tensor: name, dimension count (u32), dimensions (u64 each, innermost first), GGUF type id (u32), data offset relative to the data section (u64, a multiple of 256), data size (u64), CRC-32C of the data (u32) |
//! | … | … | zero padding to the data offset |
//! | data offset | data size | tensor data, each tensor at its offset, zero padding between |
//!
//! # What the checksums cover
//!
//! The header checksum covers every byte before the data section except its
//! own four: the fixed fields, the metadata, the tensor table (with every
//! tensor's checksum) and the padding. Each tensor's checksum covers its
//! data; the zero padding between tensors is covered by neither.
//! [`AprHeader::parse`] (every open) checks the header checksum; the tensor
//! checksums are checked by [`TensorFile::verify_checksums`] (`falsify
//! convert --verify`, `falsify inspect`, claim F097), not on every load,
//! since that would read the whole file before the first token.
//!
//! # Reading
//!
//! The reader shares the GGUF reader's guards: the header's fields are read
//! with the same bounds-checked cursor and memory budget
//! ([`crate::gguf::MAX_HEADER_MEMORY`]), the file is mapped through
//! [`MappedFile`] (a directory or FIFO refused unread, a truncation while
//! mapped named rather than a silent SIGBUS). A truncated, corrupted or
//! hostile file is an [`AprError`] naming the problem: a bad checksum, a
//! tensor out of bounds, unaligned or overlapping another, a size that does
//! not match its shape and type, an unknown type, an absurd count.

mod tensor_file;
#[cfg(test)]
mod tests;
mod write;

pub use tensor_file::{Format, TensorFile};
pub use write::{convert, convert_with_progress_bar, write_apr, Conversion};

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use crate::gguf::{
    tensor_bytes, Cursor, GgufError, GgufHeader, TensorInfo, METADATA_ENTRY_MEMORY, TENSOR_ENTRY_MEMORY,
};

/// The four bytes every APR file starts with.
pub const MAGIC: &[u8; 4] = b"APR\0";
/// The version this module writes; it reads every version with the same major.
pub const VERSION: AprVersion = AprVersion { major: 1, minor: 0, patch: 0 };
/// Alignment of the data section and of every tensor's data in it.
pub const ALIGNMENT: u64 = 256;
/// Bytes of the fixed header before the metadata.
pub const FIXED_HEADER_BYTES: usize = 64;
/// Where the header checksum lies in the fixed header.
const CHECKSUM_AT: usize = 32;
/// Smallest encoding of a tensor-table entry: name length (8), dimension
/// count (4), one dimension (8), type (4), offset (8), size (8), checksum (4).
const MIN_TABLE_ENTRY_BYTES: u64 = 44;
/// Smallest encoding of a metadata entry: key length (8), type (4), one byte of value.
const MIN_METADATA_ENTRY_BYTES: u64 = 13;

/// A semantic version: major, minor, patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AprVersion {
    /// Incompatible layout changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
    /// Fixes.
    pub patch: u16,
}

impl fmt::Display for AprVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why an APR file could not be read, written or verified.
#[derive(Debug, thiserror::Error)]
pub enum AprError {
    /// The file could not be opened or mapped, or (opened as a model file) is an invalid GGUF file.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The file's contents are not a valid APR file.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents.
        source: Box<AprError>,
    },
    /// The first four bytes are not `APR\0`.
    #[error("not an APR file: magic is {found:?}, expected \"APR\\0\"")]
    BadMagic {
        /// The bytes found (zero-filled when the file is shorter).
        found: [u8; 4],
    },
    /// The file ends before the fixed header does.
    #[error("truncated: the fixed header takes {FIXED_HEADER_BYTES} bytes, the file has {len}")]
    TruncatedHeader {
        /// The file's length.
        len: u64,
    },
    /// The file ends before its data section does.
    #[error("truncated: the header says the data ends at byte {end}, the file has {len}")]
    Truncated {
        /// Where the data section ends, by the header.
        end: u64,
        /// The file's length.
        len: u64,
    },
    /// A major version this reader does not read.
    #[error("unsupported APR version {0} (this reader reads {major}.x.y)", major = VERSION.major)]
    UnsupportedVersion(AprVersion),
    /// Header flags this reader does not know.
    #[error("unknown header flags {0:#06x}")]
    UnknownFlags(u16),
    /// The fixed header's offsets and sizes do not describe a possible file.
    #[error("bad layout: {0}")]
    Layout(String),
    /// The header checksum does not match the header: it was corrupted.
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (the header is corrupted)")]
    HeaderChecksum {
        /// The checksum the file stores.
        stored: u32,
        /// The checksum of the bytes found.
        computed: u32,
    },
    /// A tensor's data checksum does not match its data: it was corrupted.
    #[error("tensor {name:?}: data checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (its data is corrupted)")]
    TensorChecksum {
        /// The tensor.
        name: String,
        /// The checksum the table stores.
        stored: u32,
        /// The checksum of the bytes found.
        computed: u32,
    },
    /// A field of the metadata or the tensor table is invalid (truncated, an
    /// absurd count, an unknown type, a duplicate name, a bad shape).
    #[error("header: {0}")]
    Header(GgufError),
    /// A tensor's stored size is not what its shape and type need.
    #[error("tensor {name:?}: {size} bytes stored, but its shape and type take {expected}")]
    SizeMismatch {
        /// The tensor.
        name: String,
        /// The size the table stores.
        size: u64,
        /// The size its shape and type take.
        expected: u64,
    },
    /// A tensor's data offset is not a multiple of [`ALIGNMENT`].
    #[error("tensor {name:?}: data offset {offset} is not a multiple of {ALIGNMENT}")]
    Unaligned {
        /// The tensor.
        name: String,
        /// Its offset in the data section.
        offset: u64,
    },
    /// A tensor's data lies (partly) outside the data section.
    #[error("tensor {name:?}: data [{start}, {end}) lies outside the data section of {data_size} bytes")]
    OutOfBounds {
        /// The tensor.
        name: String,
        /// Start in the data section.
        start: u64,
        /// End in the data section (`u64::MAX` when it overflows).
        end: u64,
        /// The data section's size.
        data_size: u64,
    },
    /// Two tensors' data overlap.
    #[error("tensors {first:?} and {second:?} overlap in the data section")]
    Overlap {
        /// The tensor that starts first.
        first: String,
        /// The tensor that starts inside it.
        second: String,
    },
    /// A written file does not read back as what was written.
    #[error("verification of {path} failed: {what}")]
    Differs {
        /// The written file.
        path: PathBuf,
        /// What differs.
        what: String,
    },
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Everything in an APR file except the tensor data.
#[derive(Debug, Clone)]
pub struct AprHeader {
    /// The format version.
    pub version: AprVersion,
    /// The model as the GGUF held it: `version` is the GGUF's version, the
    /// metadata is the GGUF's, the tensor table has absolute offsets into
    /// this file, `alignment` is [`ALIGNMENT`].
    pub model: GgufHeader,
    /// CRC-32C of each tensor's data, in `model.tensors` order.
    pub checksums: Vec<u32>,
    /// The header checksum (checked to match when parsed).
    pub header_checksum: u32,
    /// Size of the data section.
    pub data_size: u64,
}

/// The `N` bytes at `at` (the caller has checked they are there).
fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// The header checksum of a file whose data section starts at `data_offset`:
/// CRC-32C of everything before it but the checksum's own four bytes.
fn header_checksum(bytes: &[u8], data_offset: usize) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&bytes[..CHECKSUM_AT]), &bytes[CHECKSUM_AT + 4..data_offset])
}

impl AprHeader {
    /// Parses and checks the header of an APR file held in `bytes`: the
    /// header checksum, then every field, then that every tensor's data lies
    /// in the data section, aligned, sized for its shape, overlapping none.
    pub fn parse(bytes: &[u8]) -> Result<AprHeader, AprError> {
        let len = bytes.len() as u64;
        let mut magic = [0u8; 4];
        let shown = bytes.len().min(4);
        magic[..shown].copy_from_slice(&bytes[..shown]);
        if magic[..shown] != MAGIC[..shown] {
            return Err(AprError::BadMagic { found: magic });
        }
        if bytes.len() < FIXED_HEADER_BYTES {
            return Err(AprError::TruncatedHeader { len });
        }
        let u16_at = |at| u16::from_le_bytes(field(bytes, at));
        let u64_at = |at| u64::from_le_bytes(field(bytes, at));
        let version = AprVersion { major: u16_at(4), minor: u16_at(6), patch: u16_at(8) };
        if version.major != VERSION.major {
            return Err(AprError::UnsupportedVersion(version));
        }
        let flags = u16_at(10);
        if flags != 0 {
            return Err(AprError::UnknownFlags(flags));
        }
        let gguf_version = u32::from_le_bytes(field(bytes, 12));
        let (data_offset, data_size) = (u64_at(16), u64_at(24));
        let stored = u32::from_le_bytes(field(bytes, CHECKSUM_AT));
        if !data_offset.is_multiple_of(ALIGNMENT) || data_offset < FIXED_HEADER_BYTES as u64 {
            return Err(AprError::Layout(format!(
                "data offset {data_offset} is not a multiple of {ALIGNMENT} past the {FIXED_HEADER_BYTES}-byte fixed header"
            )));
        }
        let end = data_offset
            .checked_add(data_size)
            .ok_or_else(|| AprError::Layout(format!("data offset {data_offset} + data size {data_size} overflows")))?;
        if end > len {
            return Err(AprError::Truncated { end, len });
        }
        if end < len {
            return Err(AprError::Layout(format!("{} bytes after the data section's end at byte {end}", len - end)));
        }
        let data_start = data_offset as usize;
        let computed = header_checksum(bytes, data_start);
        if computed != stored {
            return Err(AprError::HeaderChecksum { stored, computed });
        }
        if bytes[CHECKSUM_AT + 4..FIXED_HEADER_BYTES].iter().any(|&b| b != 0) {
            return Err(AprError::Layout("reserved header bytes are not zero".into()));
        }

        let mut c = Cursor::new(&bytes[..data_start], FIXED_HEADER_BYTES);
        let n_kv = c
            .count(MIN_METADATA_ENTRY_BYTES, METADATA_ENTRY_MEMORY, &|| "metadata count".into())
            .map_err(AprError::Header)?;
        let metadata = c.metadata(n_kv).map_err(AprError::Header)?;
        let n_tensors = c
            .count(MIN_TABLE_ENTRY_BYTES, TENSOR_ENTRY_MEMORY + 4, &|| "tensor count".into())
            .map_err(AprError::Header)?;
        // Within the memory budget reserved by `count` above.
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut checksums = Vec::with_capacity(n_tensors as usize);
        let mut names = HashSet::new();
        for i in 0..n_tensors {
            let (name, dims, ty) = c.tensor_entry(i).map_err(AprError::Header)?;
            let offset = c.u64(&|| format!("offset of {name:?}")).map_err(AprError::Header)?;
            let size = c.u64(&|| format!("size of {name:?}")).map_err(AprError::Header)?;
            let checksum = c.u32(&|| format!("checksum of {name:?}")).map_err(AprError::Header)?;
            if !names.insert(name) {
                return Err(AprError::Header(GgufError::Duplicate { what: "tensor", name: name.to_owned() }));
            }
            let expected = tensor_bytes(name, &dims, ty).map_err(AprError::Header)?;
            if size != expected {
                return Err(AprError::SizeMismatch { name: name.to_owned(), size, expected });
            }
            if !offset.is_multiple_of(ALIGNMENT) {
                return Err(AprError::Unaligned { name: name.to_owned(), offset });
            }
            match offset.checked_add(size) {
                Some(end) if end <= data_size => {}
                end => {
                    return Err(AprError::OutOfBounds {
                        name: name.to_owned(),
                        start: offset,
                        end: end.unwrap_or(u64::MAX),
                        data_size,
                    })
                }
            }
            tensors.push(TensorInfo { name: name.to_owned(), dims, ty, offset: data_offset + offset, size });
            checksums.push(checksum);
        }
        if bytes[c.pos..data_start].iter().any(|&b| b != 0) {
            return Err(AprError::Layout(format!(
                "bytes [{}, {data_offset}) between the tensor table and the data section are not zero padding",
                c.pos
            )));
        }
        check_no_overlap(&tensors)?;
        let model = GgufHeader { version: gguf_version, metadata, tensors, data_offset, alignment: ALIGNMENT };
        Ok(AprHeader { version, model, checksums, header_checksum: stored, data_size })
    }

    /// Checks tensor `index`'s data in `bytes` (the whole file) against its checksum.
    pub fn verify_tensor(&self, bytes: &[u8], index: usize) -> Result<(), AprError> {
        let info = &self.model.tensors[index];
        check_tensor(info, self.checksums[index], &bytes[info.offset as usize..(info.offset + info.size) as usize])
    }
}

/// Checks `data`, the bytes of tensor `info`, against its stored checksum.
fn check_tensor(info: &TensorInfo, stored: u32, data: &[u8]) -> Result<(), AprError> {
    let computed = crc32c::crc32c(data);
    if computed != stored {
        return Err(AprError::TensorChecksum { name: info.name.clone(), stored, computed });
    }
    Ok(())
}

/// An error naming two tensors whose data overlap, if any do.
fn check_no_overlap(tensors: &[TensorInfo]) -> Result<(), AprError> {
    let mut by_start: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
    by_start.sort_by_key(|t| t.offset);
    for pair in by_start.windows(2) {
        if pair[1].offset < pair[0].offset + pair[0].size {
            return Err(AprError::Overlap { first: pair[0].name.clone(), second: pair[1].name.clone() });
        }
    }
    Ok(())
}

/// Rewrites the header checksum of the APR file in `bytes` to match its
/// header, so a tool (a test, the fuzzer) can change a field and see what the
/// reader makes of it beyond the checksum. False, changing nothing, when the
/// fixed header is incomplete or its data offset lies outside `bytes`.
pub fn seal_header(bytes: &mut [u8]) -> bool {
    if bytes.len() < FIXED_HEADER_BYTES {
        return false;
    }
    let data_offset = u64::from_le_bytes(field(bytes, 16));
    if data_offset < FIXED_HEADER_BYTES as u64 || data_offset > bytes.len() as u64 {
        return false;
    }
    let checksum = header_checksum(bytes, data_offset as usize);
    bytes[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&checksum.to_le_bytes());
    true
}

/// `gguf` (a whole GGUF file) converted to APR in memory, its header
/// changed by `edit` first (the data stays as it was).
#[cfg(test)]
pub(crate) fn convert_bytes(gguf: &[u8], edit: impl FnOnce(&mut GgufHeader)) -> Vec<u8> {
    let mut header = GgufHeader::parse(gguf).unwrap();
    let data: Vec<&[u8]> = header.tensors.iter().map(|t| &gguf[t.offset as usize..][..t.size as usize]).collect();
    edit(&mut header);
    let mut out = Vec::new();
    write_apr(&mut out, &header, &data, &mut |_| {}).unwrap();
    out
}
