//! Writing APR files, and converting a GGUF file into one atomically.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{
    header_checksum, AprError, Format, TensorFile, ALIGNMENT, CHECKSUM_AT, FIXED_HEADER_BYTES, MAGIC, VERSION,
};
use crate::gguf::{put_string, put_value, value_type, GgufFile, GgufHeader};

/// Tensor data is written in pieces of this many bytes, each one reported to the progress callback.
const WRITE_PIECE: usize = 8 << 20;

/// Writes `model` as an APR file to `out`: its metadata verbatim, its tensor
/// table in order, tensor `i`'s bytes from `data[i]` (sized as the table
/// says), reporting the tensor bytes written so far to `progress`. Returns
/// the bytes written.
///
/// # Panics
/// When `data` does not hold one slice per tensor, each of the tensor's size.
pub fn write_apr(
    out: &mut dyn Write,
    model: &GgufHeader,
    data: &[&[u8]],
    progress: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    assert_eq!(data.len(), model.tensors.len(), "one data slice per tensor");
    let mut header = vec![0u8; FIXED_HEADER_BYTES];
    header.extend_from_slice(&(model.metadata.len() as u64).to_le_bytes());
    for (key, value) in &model.metadata {
        put_string(&mut header, key);
        header.extend_from_slice(&value_type(value).to_le_bytes());
        put_value(&mut header, value);
    }
    header.extend_from_slice(&(model.tensors.len() as u64).to_le_bytes());
    let mut offsets = Vec::with_capacity(data.len());
    let mut data_size = 0u64;
    for (info, bytes) in model.tensors.iter().zip(data) {
        assert_eq!(bytes.len() as u64, info.size, "tensor {:?}: data of its table size", info.name);
        let offset = data_size.next_multiple_of(ALIGNMENT);
        put_string(&mut header, &info.name);
        header.extend_from_slice(&(info.dims.len() as u32).to_le_bytes());
        for d in &info.dims {
            header.extend_from_slice(&d.to_le_bytes());
        }
        header.extend_from_slice(&info.ty.id().to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        header.extend_from_slice(&info.size.to_le_bytes());
        header.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
        offsets.push(offset);
        data_size = offset + info.size;
    }
    let data_offset = (header.len() as u64).next_multiple_of(ALIGNMENT);
    header.resize(data_offset as usize, 0);
    header[..4].copy_from_slice(MAGIC);
    for (at, part) in [(4, VERSION.major), (6, VERSION.minor), (8, VERSION.patch), (10, 0)] {
        header[at..at + 2].copy_from_slice(&part.to_le_bytes());
    }
    header[12..16].copy_from_slice(&model.version.to_le_bytes());
    header[16..24].copy_from_slice(&data_offset.to_le_bytes());
    header[24..32].copy_from_slice(&data_size.to_le_bytes());
    let checksum = header_checksum(&header, header.len());
    header[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&checksum.to_le_bytes());
    out.write_all(&header)?;

    let (mut at, mut done) = (0u64, 0u64);
    let padding = [0u8; ALIGNMENT as usize];
    for (bytes, offset) in data.iter().zip(offsets) {
        out.write_all(&padding[..(offset - at) as usize])?;
        for piece in bytes.chunks(WRITE_PIECE) {
            out.write_all(piece)?;
            done += piece.len() as u64;
            progress(done);
        }
        at = offset + bytes.len() as u64;
    }
    Ok(data_offset + data_size)
}

/// What a conversion did.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    /// The GGUF file read.
    pub source: PathBuf,
    /// The APR file written.
    pub out: PathBuf,
    /// The GGUF file's size.
    pub source_bytes: u64,
    /// The APR file's size.
    pub apr_bytes: u64,
    /// Tensors carried over.
    pub tensors: usize,
    /// Seconds the conversion took (with verification when asked for).
    pub seconds: f64,
    /// Whether the written file was read back and compared.
    pub verified: bool,
}

impl fmt::Display for Conversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} ({} bytes, APR {VERSION}, {} tensors) from {} ({} bytes) in {:.2} s{}",
            self.out.display(),
            self.apr_bytes,
            self.tensors,
            self.source.display(),
            self.source_bytes,
            self.seconds,
            if self.verified { "; verified: every tensor's bytes, the metadata and the checksums match" } else { "" }
        )
    }
}

/// Converts the GGUF file `source` into the APR file `out`, reporting
/// (bytes done, total) to `progress`: the tensor bytes written and, with
/// `verify`, then the tensor bytes compared while reading the written file back and comparing every
/// tensor's bytes, type and shape, the metadata and the checksums with the
/// source. The file is written under a temporary name in `out`'s directory
/// and renamed to `out` only once complete (and verified): a conversion that
/// fails leaves no file under `out`.
pub fn convert(
    source: &Path,
    out: &Path,
    verify: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Conversion, AprError> {
    let start = Instant::now();
    let gguf = GgufFile::open(source)?;
    let write_error = |source| AprError::Write { path: out.to_path_buf(), source };
    if let (Ok(a), Ok(b)) = (source.canonicalize(), out.canonicalize()) {
        if a == b {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "it is the GGUF file being converted");
            return Err(write_error(e));
        }
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = out.file_name().ok_or_else(|| write_error(io::Error::other("the path has no file name")))?;
    // Readable by all, as a model file is (the process umask still applies), not a temporary file's 0600.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(write_error)?;
    let data: Vec<&[u8]> = gguf.header.tensors.iter().map(|t| gguf.tensor_data(t)).collect();
    let data_bytes: u64 = gguf.header.tensors.iter().map(|t| t.size).sum();
    let total = if verify { 2 * data_bytes } else { data_bytes };
    let mut writer = io::BufWriter::with_capacity(1 << 20, tmp.as_file());
    let apr_bytes = write_apr(&mut writer, &gguf.header, &data, &mut |done| progress(done, total))
        .and_then(|n| writer.flush().map(|()| n))
        .map_err(write_error)?;
    drop(writer);
    tmp.as_file().sync_all().map_err(write_error)?;
    if verify {
        verify_against(&gguf, tmp.path(), out, &mut |done| progress(data_bytes + done, total))?;
    }
    tmp.persist(out).map_err(|e| write_error(e.error))?;
    Ok(Conversion {
        source: source.to_path_buf(),
        out: out.to_path_buf(),
        source_bytes: gguf.len(),
        apr_bytes,
        tensors: gguf.header.tensors.len(),
        seconds: start.elapsed().as_secs_f64(),
        verified: verify,
    })
}

/// Reads the APR file at `written` back and compares it with `gguf`: the
/// format, the metadata, every tensor's name, shape, type and bytes, and
/// every checksum. Errors name `shown` (the file's final name).
fn verify_against(
    gguf: &GgufFile,
    written: &Path,
    shown: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), AprError> {
    let differs = |what: String| AprError::Differs { path: shown.to_path_buf(), what };
    let apr = TensorFile::open(written)?;
    if !matches!(apr.format, Format::Apr { .. }) {
        return Err(differs("it does not read back as an APR file".into()));
    }
    let (want, got) = (&gguf.header, &apr.header);
    if got.version != want.version {
        return Err(differs(format!("GGUF version {} instead of {}", got.version, want.version)));
    }
    if got.metadata != want.metadata {
        let key = want.metadata.keys().chain(got.metadata.keys()).find(|k| want.get(k) != got.get(k));
        return Err(differs(format!("metadata differs (first at key {:?})", key.map_or("", |k| k.as_str()))));
    }
    if got.tensors.len() != want.tensors.len() {
        return Err(differs(format!("{} tensors instead of {}", got.tensors.len(), want.tensors.len())));
    }
    apr.verify_checksums(&mut |_| {})?;
    let mut done = 0;
    for (w, g) in want.tensors.iter().zip(&got.tensors) {
        if (&w.name, &w.dims, w.ty) != (&g.name, &g.dims, g.ty) {
            return Err(differs(format!(
                "tensor {:?} {:?} {} reads back as {:?} {:?} {}",
                w.name, w.dims, w.ty, g.name, g.dims, g.ty
            )));
        }
        if gguf.tensor_data(w) != apr.tensor_data(g) {
            return Err(differs(format!("tensor {:?}: its bytes differ", w.name)));
        }
        done += w.size;
        progress(done);
    }
    Ok(())
}

/// [`convert`] with a progress bar of the bytes done on stderr (drawn only
/// when stderr is a terminal).
pub fn convert_with_progress_bar(source: &Path, out: &Path, verify: bool) -> Result<Conversion, AprError> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({binary_bytes_per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(if verify { "converting and verifying" } else { "converting" });
    let result = convert(source, out, verify, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    result
}
