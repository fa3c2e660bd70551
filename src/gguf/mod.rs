//! GGUF reader: header, metadata and tensor table parsed with a bounds check on
//! every read; tensor data borrowed zero-copy from a memory map.
//!
//! The parser works on any byte slice ([`GgufHeader::parse`]) so it can be
//! fuzzed without files; [`GgufFile::open`] maps a file and parses it. Every
//! count read from the input is bounded twice: by the bytes left in the input
//! and by the memory its parsed form would take ([`MAX_HEADER_MEMORY`]), so a
//! hostile header is an error before anything large is allocated.

mod fault_guard;
mod types;
mod writer;

pub use types::TensorType;
pub use writer::GgufWriter;
pub(crate) use writer::{put_string, put_value, value_type};

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

/// The four bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Data-section alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays nested deeper than this are rejected (real files nest at most once).
const MAX_ARRAY_DEPTH: u32 = 4;
/// Tensors have at most this many dimensions (as in ggml).
const MAX_DIMS: u32 = 4;
/// The most memory a parsed header (metadata keys and values, the tensor
/// table) may take: 256 MiB. The 0.5B Qwen2 model's header, with its 151,936
/// tokens and 151,387 merges, takes 16.7 MiB of it as counted here.
pub const MAX_HEADER_MEMORY: u64 = 256 << 20;
/// Memory one metadata entry takes besides its key's and strings' bytes.
pub(crate) const METADATA_ENTRY_MEMORY: u64 = (size_of::<String>() + size_of::<Value>()) as u64;
/// Memory one tensor-table entry takes besides its name's bytes: the entry,
/// its dimensions and (with a hash table's spare room) its place in the
/// duplicate-name check.
pub(crate) const TENSOR_ENTRY_MEMORY: u64 =
    (size_of::<TensorInfo>() + MAX_DIMS as usize * 8 + 3 * size_of::<&str>()) as u64;

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The path names a directory, FIFO, socket or device, not a regular file.
    #[error("{path} is a {kind}, not a model file")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead, e.g. "directory" or "FIFO".
        kind: &'static str,
    },
    /// The file's contents are not a valid GGUF file.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents.
        source: Box<GgufError>,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic is {found:?}, expected \"GGUF\"")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// A version this reader does not support.
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    /// The input ended in the middle of a field.
    #[error("truncated: needed {needed} bytes for {what} at offset {offset}, but the file has {len}")]
    Truncated {
        /// What was being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// The input's length.
        len: u64,
    },
    /// A count or size is larger than the file could possibly hold.
    #[error("implausible {what} {value} at offset {offset}: the file has only {remaining} bytes left")]
    Implausible {
        /// What was being read.
        what: String,
        /// The value found.
        value: u64,
        /// Where it was found.
        offset: u64,
        /// Bytes remaining after it.
        remaining: u64,
    },
    /// A count whose parsed form would take more memory than a header may.
    #[error(
        "{what} {value} at offset {offset} would take {needed} bytes of memory once parsed, \
         but only {left} bytes are left of the {MAX_HEADER_MEMORY} a GGUF header may take"
    )]
    TooLarge {
        /// What was being read.
        what: String,
        /// The count found.
        value: u64,
        /// Where it was found.
        offset: u64,
        /// The memory its parsed form would take.
        needed: u64,
        /// What was left of the budget ([`MAX_HEADER_MEMORY`] in [`GgufHeader::parse`]).
        left: u64,
    },
    /// A metadata value type id that GGUF does not define.
    #[error("unknown metadata value type {type_id} for key {key:?}")]
    UnknownValueType {
        /// The key whose value has it.
        key: String,
        /// The type id found.
        type_id: u32,
    },
    /// A string that is not UTF-8.
    #[error("string at offset {offset} is not valid UTF-8")]
    BadUtf8 {
        /// Where the string starts.
        offset: u64,
    },
    /// Arrays nested more than four deep.
    #[error("metadata key {key:?}: arrays nested more than {MAX_ARRAY_DEPTH} deep")]
    TooDeep {
        /// The key.
        key: String,
    },
    /// The same metadata key or tensor name appears twice.
    #[error("duplicate {what} {name:?}")]
    Duplicate {
        /// "metadata key" or "tensor".
        what: &'static str,
        /// The repeated name.
        name: String,
    },
    /// `general.alignment` is zero, not a power of two, or not a u32.
    #[error("invalid general.alignment {0} (must be a power of two)")]
    BadAlignment(u64),
    /// A tensor's shape or type makes no sense.
    #[error("tensor {name:?}: {reason}")]
    BadTensor {
        /// The tensor.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor's data lies (partly) outside the file.
    #[error("tensor {name:?}: data [{start}, {end}) lies outside the data section [{data_start}, {file_len})")]
    OutOfBounds {
        /// The tensor.
        name: String,
        /// Absolute start of its data.
        start: u64,
        /// Absolute end of its data.
        end: u64,
        /// Start of the data section.
        data_start: u64,
        /// The file's length.
        file_len: u64,
    },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// uint8
    U8(u8),
    /// int8
    I8(i8),
    /// uint16
    U16(u16),
    /// int16
    I16(i16),
    /// uint32
    U32(u32),
    /// int32
    I32(i32),
    /// float32
    F32(f32),
    /// bool
    Bool(bool),
    /// UTF-8 string
    String(String),
    /// A homogeneous array.
    Array(Vec<Value>),
    /// uint64
    U64(u64),
    /// int64
    I64(i64),
    /// float64
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is any number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(s) if s.len() > 60 => write!(f, "{:?}… ({} bytes)", &s[..s.floor_char_boundary(60)], s.len()),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Array(a) => write!(f, "[{} items]", a.len()),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost (contiguous) first, as in ggml's `ne`.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: TensorType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Everything in a GGUF file except the tensor data.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata, by key.
    pub metadata: BTreeMap<String, Value>,
    /// The tensor table, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Alignment of tensor data.
    pub alignment: u64,
}

/// A bounds-checked reader over the input bytes that also keeps count of the
/// memory the parsed header may still take. The APR reader reads its header
/// with it too, so both formats share one set of guards.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    /// Where the next read starts.
    pub(crate) pos: usize,
    memory_left: u64,
}

impl<'a> Cursor<'a> {
    /// A reader over `bytes` starting at `pos`, allowed [`MAX_HEADER_MEMORY`] bytes of parsed header.
    pub(crate) fn new(bytes: &'a [u8], pos: usize) -> Cursor<'a> {
        Cursor { bytes, pos, memory_left: MAX_HEADER_MEMORY }
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                len: self.bytes.len() as u64,
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    pub(crate) fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Reads a count, checks that `count * min_item_bytes` fits in the rest of
    /// the input, and reserves `count * item_memory` bytes of the memory budget.
    pub(crate) fn count(
        &mut self,
        min_item_bytes: u64,
        item_memory: u64,
        what: &dyn Fn() -> String,
    ) -> Result<u64, GgufError> {
        let offset = self.pos as u64;
        let n = self.u64(what)?;
        let remaining = self.remaining();
        if n.saturating_mul(min_item_bytes.max(1)) > remaining {
            return Err(GgufError::Implausible { what: what(), value: n, offset, remaining });
        }
        let needed = n.saturating_mul(item_memory);
        if needed > self.memory_left {
            return Err(GgufError::TooLarge { what: what(), value: n, offset, needed, left: self.memory_left });
        }
        self.memory_left -= needed;
        Ok(n)
    }

    /// Reads a length-prefixed UTF-8 string, borrowed from the input.
    pub(crate) fn str(&mut self, what: &dyn Fn() -> String) -> Result<&'a str, GgufError> {
        let len = self.count(1, 1, &|| format!("{} (string length)", what()))?;
        let offset = self.pos as u64;
        let raw = self.take(len, what)?;
        std::str::from_utf8(raw).map_err(|_| GgufError::BadUtf8 { offset })
    }

    pub(crate) fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        self.str(what).map(str::to_owned)
    }

    /// Reads `n_kv` metadata entries (key, type id, value), refusing a repeated key.
    pub(crate) fn metadata(&mut self, n_kv: u64) -> Result<BTreeMap<String, Value>, GgufError> {
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = self.string(&|| format!("metadata key #{i}"))?;
            let type_id = self.u32(&|| format!("value type of {key:?}"))?;
            let value = self.value(type_id, &key, 0)?;
            match metadata.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) => {
                    return Err(GgufError::Duplicate { what: "metadata key", name: slot.key().clone() })
                }
            }
        }
        Ok(metadata)
    }

    /// Reads the start of tensor-table entry `i`: its name, dimensions and type.
    pub(crate) fn tensor_entry(&mut self, i: u64) -> Result<(&'a str, Vec<u64>, TensorType), GgufError> {
        let name = self.str(&|| format!("name of tensor #{i}"))?;
        let n_dims = self.u32(&|| format!("dimension count of {name:?}"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadTensor {
                name: name.to_owned(),
                reason: format!("{n_dims} dimensions (1..={MAX_DIMS} allowed)"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(self.u64(&|| format!("dimension {d} of {name:?}"))?);
        }
        let ty = TensorType::from_id(self.u32(&|| format!("type of {name:?}"))?);
        Ok((name, dims, ty))
    }

    fn value(&mut self, type_id: u32, key: &str, depth: u32) -> Result<Value, GgufError> {
        let what = || format!("value of {key:?}");
        Ok(match type_id {
            0 => Value::U8(self.array::<1>(&what)?[0]),
            1 => Value::I8(self.array::<1>(&what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => Value::U32(self.u32(&what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => Value::Bool(self.array::<1>(&what)?[0] != 0),
            8 => Value::String(self.string(&what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::TooDeep { key: key.to_owned() });
                }
                let elem_type = self.u32(&what)?;
                let min = min_value_bytes(elem_type)
                    .ok_or_else(|| GgufError::UnknownValueType { key: key.to_owned(), type_id: elem_type })?;
                let n = self.count(min, size_of::<Value>() as u64, &|| format!("array length of {key:?}"))?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem_type, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(&what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            other => return Err(GgufError::UnknownValueType { key: key.to_owned(), type_id: other }),
        })
    }
}

/// Smallest encoding of one value of a type, used to reject absurd array lengths early.
fn min_value_bytes(type_id: u32) -> Option<u64> {
    Some(match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        10..=12 => 8,
        _ => return None,
    })
}

impl GgufHeader {
    /// Parses the header, metadata and tensor table of a GGUF file held in `bytes`,
    /// checking that every tensor's data lies inside `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
        GgufHeader::parse_within(bytes, MAX_HEADER_MEMORY)
    }

    /// [`GgufHeader::parse`] with a memory budget of `memory_limit` bytes
    /// instead of [`MAX_HEADER_MEMORY`].
    fn parse_within(bytes: &[u8], memory_limit: u64) -> Result<GgufHeader, GgufError> {
        let mut c = Cursor { bytes, pos: 0, memory_left: memory_limit };
        let magic: [u8; 4] = c.array(&|| "magic".into())?;
        if &magic != MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = c.u32(&|| "version".into())?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        // A tensor-table entry is at least 8 (name) + 4 + 4 (type) + 8 (offset) bytes.
        let n_tensors = c.count(24, TENSOR_ENTRY_MEMORY, &|| "tensor count".into())?;
        // A metadata entry is at least 8 (key) + 4 (type) + 1 (value) bytes.
        let n_kv = c.count(13, METADATA_ENTRY_MEMORY, &|| "metadata count".into())?;

        let metadata = c.metadata(n_kv)?;
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(v) => return Err(GgufError::BadAlignment(v.as_u64().unwrap_or(0))),
        };

        // Within the memory budget reserved by `count` above.
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = HashSet::new();
        for i in 0..n_tensors {
            let (name, dims, ty) = c.tensor_entry(i)?;
            // Relative to the data section until its start is known, below.
            let offset = c.u64(&|| format!("offset of {name:?}"))?;
            if !names.insert(name) {
                return Err(GgufError::Duplicate { what: "tensor", name: name.to_owned() });
            }
            tensors.push(TensorInfo { name: name.to_owned(), dims, ty, offset, size: 0 });
        }

        let data_offset = (c.pos as u64).next_multiple_of(alignment);
        let file_len = bytes.len() as u64;
        for t in &mut tensors {
            let size = tensor_bytes(&t.name, &t.dims, t.ty)?;
            let rel = t.offset;
            if rel % alignment != 0 {
                return Err(GgufError::BadTensor {
                    name: std::mem::take(&mut t.name),
                    reason: format!("offset {rel} is not a multiple of the alignment {alignment}"),
                });
            }
            let start = data_offset.checked_add(rel);
            let end = start.and_then(|s| s.checked_add(size));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => (t.offset, t.size) = (start, size),
                _ => {
                    return Err(GgufError::OutOfBounds {
                        name: std::mem::take(&mut t.name),
                        start: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        data_start: data_offset,
                        file_len,
                    })
                }
            }
        }
        Ok(GgufHeader { version, metadata, tensors, data_offset, alignment })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A tensor's table entry by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Byte size of a tensor, checking that its row length is a whole number of blocks
/// and that nothing overflows.
pub(crate) fn tensor_bytes(name: &str, dims: &[u64], ty: TensorType) -> Result<u64, GgufError> {
    let bad = |reason: String| GgufError::BadTensor { name: name.to_owned(), reason };
    let (block, block_bytes) = ty.block_geometry().ok_or_else(|| bad(format!("unsupported tensor type {ty}")))?;
    let (block, block_bytes) = (block as u64, block_bytes as u64);
    if !dims[0].is_multiple_of(block) {
        return Err(bad(format!("row length {} is not a multiple of the {ty} block size {block}", dims[0])));
    }
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
    (n / block).checked_mul(block_bytes).ok_or_else(|| bad(format!("shape {dims:?} overflows")))
}

/// A read-only memory map of a model file, watched for truncation while it
/// lives ([`fault_guard`]). Both model formats (GGUF, and APR in
/// `crate::apr`) read their bytes through it.
pub struct MappedFile {
    /// Where the file was read from.
    pub path: PathBuf,
    /// Names `path` if a read of `mmap` faults because the file was truncated
    /// (declared first, so it stops watching before the map is unmapped).
    _fault_guard: fault_guard::FaultGuard,
    mmap: Mmap,
}

impl MappedFile {
    /// Maps the regular file at `path`. A path that is not a regular file (a
    /// directory, a FIFO, a device) is refused before it is read, so a FIFO
    /// cannot block the caller.
    pub fn open(path: impl AsRef<Path>) -> Result<MappedFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let file = open_regular_file(&path)?;
        // SAFETY: the map is read-only and never written through. Another
        // process may still truncate or rewrite the file while it is mapped:
        // a read past the new end then raises SIGBUS, which `fault_guard`
        // turns into an error naming the file (watched before the first read).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| GgufError::Io { path: path.clone(), source })?;
        let fault_guard = fault_guard::FaultGuard::watch(&mmap, &path);
        Ok(MappedFile { path, _fault_guard: fault_guard, mmap })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.mmap
    }

    /// The raw bytes of a tensor whose table entry was bounds-checked against this file.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.offset as usize..(info.offset + info.size) as usize]
    }

    /// Lets the OS drop the resident pages of a tensor whose data has been
    /// copied elsewhere (e.g. repacked); touching it again reads it back from
    /// the file. A hint: failure changes nothing but memory use.
    pub fn release(&self, info: &TensorInfo) {
        // SAFETY: the map is read-only and never written through, so dropping its
        // pages loses nothing: a later access faults them back in from the file.
        let _ = unsafe {
            self.mmap.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                info.offset as usize,
                info.size as usize,
            )
        };
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.mmap.is_empty()
    }
}

/// A memory-mapped GGUF file with its parsed header.
pub struct GgufFile {
    /// Where the file was read from.
    pub path: PathBuf,
    /// The parsed header.
    pub header: GgufHeader,
    map: MappedFile,
}

impl GgufFile {
    /// Maps and parses a GGUF file. Every error names the path; a path that
    /// is not a regular file is refused unread ([`MappedFile::open`]).
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let map = MappedFile::open(path)?;
        let path = map.path.clone();
        let header = GgufHeader::parse(map.bytes())
            .map_err(|e| GgufError::Invalid { path: path.clone(), source: Box::new(e) })?;
        Ok(GgufFile { path, header, map })
    }

    /// The raw bytes of a tensor (already bounds-checked at parse time).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        self.map.tensor_data(info)
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.map.len()
    }

    /// Whether the file is empty (never true for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Opens `path` for reading when it is a regular file. It is looked at
/// before opening (so a device is never opened) and again after (in case the
/// path was replaced in between), and opened non-blocking so that a FIFO put
/// there in between cannot block either.
fn open_regular_file(path: &Path) -> Result<File, GgufError> {
    let io = |source| GgufError::Io { path: path.to_owned(), source };
    require_regular_file(path, &std::fs::metadata(path).map_err(io)?)?;
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    require_regular_file(path, &file.metadata().map_err(io)?)?;
    Ok(file)
}

/// An error naming what `path` is when its metadata says it is not a regular file.
fn require_regular_file(path: &Path, meta: &Metadata) -> Result<(), GgufError> {
    let ty = meta.file_type();
    let kind = if ty.is_file() {
        return Ok(());
    } else if ty.is_dir() {
        "directory"
    } else if ty.is_fifo() {
        "FIFO"
    } else if ty.is_socket() {
        "socket"
    } else if ty.is_block_device() {
        "block device"
    } else if ty.is_char_device() {
        "character device"
    } else {
        "special file"
    };
    Err(GgufError::NotAFile { path: path.to_owned(), kind })
}

#[cfg(test)]
mod tests;
