//! A small GGUF writer: builds files for tests, fuzz seeds and synthetic models.

use super::{TensorType, Value, DEFAULT_ALIGNMENT, MAGIC};

/// Builds a GGUF file in memory.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, TensorType, Vec<u8>)>,
}

impl GgufWriter {
    /// An empty file of the given version (2 or 3).
    pub fn new(version: u32) -> GgufWriter {
        GgufWriter { version, metadata: Vec::new(), tensors: Vec::new() }
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: &str, value: Value) -> GgufWriter {
        self.metadata.push((key.to_owned(), value));
        self
    }

    /// Adds a tensor with raw data (dims innermost first).
    pub fn tensor(mut self, name: &str, dims: &[u64], ty: TensorType, data: Vec<u8>) -> GgufWriter {
        self.tensors.push((name.to_owned(), dims.to_vec(), ty, data));
        self
    }

    /// Adds an F32 tensor.
    pub fn tensor_f32(self, name: &str, dims: &[u64], values: &[f32]) -> GgufWriter {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, TensorType::F32, data)
    }

    /// Serializes the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            self.header(self.tensors.iter().map(|(n, d, t, data)| (n.as_str(), d.as_slice(), *t, data.len())));
        // Padding goes before each tensor's data, never after the last one.
        for (_, _, _, data) in &self.tensors {
            out.resize(out.len().next_multiple_of(self.alignment()), 0);
            out.extend_from_slice(data);
        }
        out
    }

    /// Writes the file with this writer's metadata and the tensors of `table`
    /// (name, dims, type), whose data `data(i)` makes one at a time as the file
    /// is written, so a file larger than memory can be written. The tensors
    /// added with [`GgufWriter::tensor`] are left out. Each tensor's data must
    /// have the size its type and dims give.
    pub fn write_streamed(
        &self,
        out: &mut impl std::io::Write,
        table: &[(String, Vec<u64>, TensorType)],
        mut data: impl FnMut(usize) -> Vec<u8>,
    ) -> std::io::Result<()> {
        let mut sizes = Vec::with_capacity(table.len());
        for (name, dims, ty) in table {
            let n = dims.iter().product::<u64>();
            let bytes = usize::try_from(n).ok().and_then(|n| ty.row_bytes(n)).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{name}: {n} elements are not whole {ty} blocks"),
                )
            })?;
            sizes.push(bytes);
        }
        let header = self.header(table.iter().zip(&sizes).map(|((n, d, t), &b)| (n.as_str(), d.as_slice(), *t, b)));
        out.write_all(&header)?;
        let mut at = header.len();
        for (i, &size) in sizes.iter().enumerate() {
            let pad = at.next_multiple_of(self.alignment()) - at;
            out.write_all(&vec![0u8; pad])?;
            let bytes = data(i);
            if bytes.len() != size {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{}: {} bytes of data for a {size}-byte tensor", table[i].0, bytes.len()),
                ));
            }
            out.write_all(&bytes)?;
            at += pad + size;
        }
        Ok(())
    }

    /// The alignment of tensor data (`general.alignment`, else the default).
    fn alignment(&self) -> usize {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT) as usize
    }

    /// The magic, version, counts, metadata and tensor table of `tensors`
    /// (name, dims, type, data bytes), up to where the data begins.
    fn header<'a>(&'a self, tensors: impl Iterator<Item = (&'a str, &'a [u64], TensorType, usize)> + Clone) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(tensors.clone().count() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend_from_slice(&value_type(value).to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0usize;
        for (name, dims, ty, len) in tensors {
            put_string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = (offset + len).next_multiple_of(self.alignment());
        }
        out
    }
}

/// Appends a GGUF string: its length (u64) and its UTF-8 bytes.
pub(crate) fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The GGUF type id of a value.
pub(crate) fn value_type(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

/// Appends a metadata value in GGUF's encoding (without its type id).
pub(crate) fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            let elem = items.first().map(value_type).unwrap_or(0);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
