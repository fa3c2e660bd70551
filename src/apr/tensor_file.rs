//! A model file in either format, told apart by its magic: what the model
//! and tokenizer loaders read (metadata, tensor table, tensor bytes).

use std::path::{Path, PathBuf};

use super::{check_tensor, AprError, AprHeader, AprVersion, MAGIC};
use crate::gguf::{GgufError, GgufHeader, MappedFile, TensorInfo};

/// Which format a [`TensorFile`] is in, with what only that format has.
#[derive(Debug, Clone)]
pub enum Format {
    /// A GGUF file (its version is `header.version`).
    Gguf,
    /// An APR file.
    Apr {
        /// The APR version.
        version: AprVersion,
        /// CRC-32C of each tensor's data, in `header.tensors` order.
        checksums: Vec<u32>,
        /// The header checksum (it matched when the file was opened).
        header_checksum: u32,
    },
}

/// A memory-mapped model file, GGUF or APR, with its parsed header.
pub struct TensorFile {
    /// Where the file was read from.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Metadata and tensor table as the GGUF reader gives them (an APR file
    /// carries its GGUF's verbatim), offsets absolute in this file.
    pub header: GgufHeader,
    map: MappedFile,
}

impl TensorFile {
    /// Maps and parses a model file, APR when it starts with `APR\0`, GGUF
    /// otherwise. Every error names the path.
    pub fn open(path: impl AsRef<Path>) -> Result<TensorFile, AprError> {
        let map = MappedFile::open(path)?;
        let path = map.path.clone();
        let (format, header) = if map.bytes().starts_with(MAGIC) {
            let h = AprHeader::parse(map.bytes())
                .map_err(|e| AprError::Invalid { path: path.clone(), source: Box::new(e) })?;
            let format = Format::Apr { version: h.version, checksums: h.checksums, header_checksum: h.header_checksum };
            (format, h.model)
        } else {
            let h = GgufHeader::parse(map.bytes())
                .map_err(|e| GgufError::Invalid { path: path.clone(), source: Box::new(e) })?;
            (Format::Gguf, h)
        };
        Ok(TensorFile { path, format, header, map })
    }

    /// The format's name and version, e.g. `GGUF v3` or `APR 1.0.0`.
    pub fn format_name(&self) -> String {
        match &self.format {
            Format::Gguf => format!("GGUF v{}", self.header.version),
            Format::Apr { version, .. } => format!("APR {version}"),
        }
    }

    /// Checks every tensor's data against its checksum, reporting the bytes
    /// checked so far to `progress`. A GGUF file has no checksums: `Ok(false)`.
    pub fn verify_checksums(&self, progress: &mut dyn FnMut(u64)) -> Result<bool, AprError> {
        let Format::Apr { checksums, .. } = &self.format else {
            return Ok(false);
        };
        let mut done = 0;
        for (info, &stored) in self.header.tensors.iter().zip(checksums) {
            check_tensor(info, stored, self.tensor_data(info))
                .map_err(|e| AprError::Invalid { path: self.path.clone(), source: Box::new(e) })?;
            done += info.size;
            progress(done);
        }
        Ok(true)
    }

    /// The raw bytes of a tensor (already bounds-checked at parse time).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        self.map.tensor_data(info)
    }

    /// Lets the OS drop the resident pages of a tensor whose data has been
    /// copied elsewhere (e.g. repacked); see [`MappedFile::release`].
    pub fn release(&self, info: &TensorInfo) {
        self.map.release(info);
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
