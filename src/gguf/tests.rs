use super::*;

fn sample() -> GgufWriter {
    GgufWriter::new(3)
        .meta("general.architecture", Value::String("qwen2".into()))
        .meta("u8", Value::U8(7))
        .meta("i8", Value::I8(-7))
        .meta("u16", Value::U16(700))
        .meta("i16", Value::I16(-700))
        .meta("u32", Value::U32(70_000))
        .meta("i32", Value::I32(-70_000))
        .meta("f32", Value::F32(1.5))
        .meta("bool", Value::Bool(true))
        .meta("u64", Value::U64(1 << 40))
        .meta("i64", Value::I64(-(1 << 40)))
        .meta("f64", Value::F64(-2.25))
        .meta("strings", Value::Array(vec![Value::String("a".into()), Value::String("Ġb".into())]))
        .meta("nested", Value::Array(vec![Value::Array(vec![Value::I32(1), Value::I32(2)])]))
        .tensor_f32("t0", &[4, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
        .tensor_f32("t1", &[3], &[9.0, 10.0, 11.0])
}

#[test]
fn round_trips_every_value_type_and_tensor_table() {
    let bytes = sample().to_bytes();
    let h = GgufHeader::parse(&bytes).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.get("general.architecture").unwrap().as_str(), Some("qwen2"));
    assert_eq!(h.get("u8"), Some(&Value::U8(7)));
    assert_eq!(h.get("i8"), Some(&Value::I8(-7)));
    assert_eq!(h.get("u16"), Some(&Value::U16(700)));
    assert_eq!(h.get("i16"), Some(&Value::I16(-700)));
    assert_eq!(h.get("u32"), Some(&Value::U32(70_000)));
    assert_eq!(h.get("i32"), Some(&Value::I32(-70_000)));
    assert_eq!(h.get("f32"), Some(&Value::F32(1.5)));
    assert_eq!(h.get("bool"), Some(&Value::Bool(true)));
    assert_eq!(h.get("u64").unwrap().as_u64(), Some(1 << 40));
    assert_eq!(h.get("i64"), Some(&Value::I64(-(1 << 40))));
    assert_eq!(h.get("f64").unwrap().as_f64(), Some(-2.25));
    assert_eq!(h.get("strings").unwrap().as_array().unwrap()[1].as_str(), Some("Ġb"));
    assert_eq!(h.get("nested").unwrap().as_array().unwrap()[0].as_array().unwrap().len(), 2);
    assert_eq!(h.tensors.len(), 2);
    let t0 = h.tensor("t0").unwrap();
    assert_eq!((t0.dims.clone(), t0.ty, t0.size), (vec![4, 2], TensorType::F32, 32));
    assert_eq!(t0.offset % 32, 0);
    let first = f32::from_le_bytes(bytes[t0.offset as usize..][..4].try_into().unwrap());
    assert_eq!(first, 1.0);
    let t1 = h.tensor("t1").unwrap();
    assert_eq!(t1.offset, t0.offset + 32);
}

#[test]
fn reads_version_2_and_custom_alignment() {
    let w = GgufWriter::new(2).meta("general.alignment", Value::U32(64)).tensor_f32("a", &[1], &[1.0]).tensor_f32(
        "b",
        &[1],
        &[2.0],
    );
    let h = GgufHeader::parse(&w.to_bytes()).unwrap();
    assert_eq!((h.version, h.alignment), (2, 64));
    assert_eq!(h.data_offset % 64, 0);
    assert_eq!(h.tensor("b").unwrap().offset - h.tensor("a").unwrap().offset, 64);
}

#[test]
fn every_truncation_is_a_clean_error() {
    let bytes = sample().to_bytes();
    for len in 0..bytes.len() {
        let err = GgufHeader::parse(&bytes[..len]);
        assert!(err.is_err(), "prefix of {len} bytes parsed");
    }
    let msg = GgufHeader::parse(&bytes[..10]).unwrap_err().to_string();
    assert!(msg.contains("truncated") && msg.contains("tensor count"), "{msg}");
}

#[test]
fn wrong_magic_is_named() {
    let mut bytes = sample().to_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let msg = GgufHeader::parse(&bytes).unwrap_err().to_string();
    assert_eq!(msg, "not a GGUF file: magic is [71, 71, 77, 76], expected \"GGUF\"");
}

#[test]
fn unsupported_version_is_named() {
    let msg = GgufHeader::parse(&GgufWriter::new(1).to_bytes()).unwrap_err().to_string();
    assert_eq!(msg, "unsupported GGUF version 1 (supported: 2 and 3)");
}

#[test]
fn tensor_past_end_of_file_is_out_of_bounds() {
    let bytes = sample().to_bytes();
    // Cut the last tensor's data short: the table is intact, the data is not.
    let cut = &bytes[..bytes.len() - 4];
    let msg = GgufHeader::parse(cut).unwrap_err().to_string();
    assert!(msg.contains("tensor \"t1\": data [") && msg.contains("outside the data section"), "{msg}");
}

#[test]
fn hostile_offset_does_not_overflow() {
    let h = GgufHeader::parse(&sample().to_bytes()).unwrap();
    let mut bytes = sample().to_bytes();
    // Patch t0's relative offset (the 8 bytes before the data section's padding) to u64::MAX - 31.
    let name_pos = bytes.windows(2).position(|w| w == b"t1").unwrap();
    let t0_offset_pos = name_pos - 8 /* t1 name length */ - 8;
    bytes[t0_offset_pos..t0_offset_pos + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    let msg = GgufHeader::parse(&bytes).unwrap_err().to_string();
    assert!(msg.contains("t0") && msg.contains("outside"), "{msg}");
    assert!(h.data_offset > 0);
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    let mut bytes = GgufWriter::new(3).to_bytes();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let msg = GgufHeader::parse(&bytes).unwrap_err().to_string();
    assert!(msg.starts_with("implausible tensor count"), "{msg}");

    let w = GgufWriter::new(3).meta("arr", Value::Array(vec![Value::U32(1)]));
    let mut bytes = w.to_bytes();
    let len = bytes.len();
    bytes[len - 12..len - 4].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let msg = GgufHeader::parse(&bytes).unwrap_err().to_string();
    assert!(msg.starts_with("implausible array length of \"arr\""), "{msg}");
}

#[test]
fn bad_alignment_unknown_type_and_duplicates_are_errors() {
    let w = GgufWriter::new(3).meta("general.alignment", Value::U32(3));
    assert_eq!(
        GgufHeader::parse(&w.to_bytes()).unwrap_err().to_string(),
        "invalid general.alignment 3 (must be a power of two)"
    );

    let mut bytes = GgufWriter::new(3).meta("k", Value::U8(1)).to_bytes();
    let len = bytes.len();
    bytes[len - 5..len - 1].copy_from_slice(&99u32.to_le_bytes());
    assert_eq!(GgufHeader::parse(&bytes).unwrap_err().to_string(), "unknown metadata value type 99 for key \"k\"");

    let w = GgufWriter::new(3).meta("k", Value::U8(1)).meta("k", Value::U8(2));
    assert_eq!(GgufHeader::parse(&w.to_bytes()).unwrap_err().to_string(), "duplicate metadata key \"k\"");
}

#[test]
fn partial_blocks_and_unknown_tensor_types_are_errors() {
    let w = GgufWriter::new(3).tensor("q", &[31], TensorType::Q8_0, vec![0; 34]);
    let msg = GgufHeader::parse(&w.to_bytes()).unwrap_err().to_string();
    assert_eq!(msg, "tensor \"q\": row length 31 is not a multiple of the Q8_0 block size 32");
    let w = GgufWriter::new(3).tensor("x", &[4], TensorType::Other(99), vec![0; 4]);
    let msg = GgufHeader::parse(&w.to_bytes()).unwrap_err().to_string();
    assert_eq!(msg, "tensor \"x\": unsupported tensor type type#99");
}

#[test]
fn deep_nesting_is_rejected() {
    let mut v = Value::U8(1);
    for _ in 0..6 {
        v = Value::Array(vec![v]);
    }
    let msg = GgufHeader::parse(&GgufWriter::new(3).meta("deep", v).to_bytes()).unwrap_err().to_string();
    assert!(msg.contains("nested"), "{msg}");
}

#[test]
fn missing_file_names_the_path() {
    let err = GgufFile::open("/nonexistent/model.gguf").err().unwrap().to_string();
    assert!(err.starts_with("cannot read /nonexistent/model.gguf:"), "{err}");
}

/// A fresh path in a directory of its own under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("falsify-gguf-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Writes `head` as the start of a sparse file of `len` bytes (only `head` takes disk space).
fn sparse_file(name: &str, head: &[u8], len: u64) -> PathBuf {
    let path = scratch(name);
    let file = File::create(&path).unwrap();
    std::io::Write::write_all(&mut &file, head).unwrap();
    file.set_len(len).unwrap();
    path
}

/// A GGUF v3 header with no tensors and one metadata array of `count` u8 values (the values themselves absent).
fn u8_array_header(count: u64) -> Vec<u8> {
    let mut head = GgufWriter::new(3).meta("arr", Value::Array(vec![Value::U8(0)])).to_bytes();
    let len = head.len();
    head[len - 9..len - 1].copy_from_slice(&count.to_le_bytes());
    head.truncate(len - 1);
    head
}

#[test]
fn hostile_counts_in_sparse_files_are_refused_by_their_memory_cost() {
    // 1.2 G and 480 M u8 values: 38.4 GB and 15.4 GB as parsed values, though the files can hold them.
    for count in [1_200_000_000u64, 480_000_000] {
        let head = u8_array_header(count);
        let path = sparse_file("array.gguf", &head, head.len() as u64 + count);
        let start = std::time::Instant::now();
        let msg = GgufFile::open(&path).err().unwrap().to_string();
        assert!(start.elapsed().as_secs_f64() < 1.0, "took {:?}", start.elapsed());
        let expected = format!("{}: array length of \"arr\" {count} at offset", path.display());
        assert!(msg.starts_with(&expected) && msg.contains("bytes of memory once parsed"), "{msg}");
        std::fs::remove_file(&path).unwrap();
    }
    // 833 M tensors in a 20 GB file: 24 bytes each on disk fit, their table in memory does not.
    let mut head = GgufWriter::new(3).to_bytes();
    head[8..16].copy_from_slice(&833_000_000u64.to_le_bytes());
    let path = sparse_file("tensors.gguf", &head, 20_000_000_000);
    let msg = GgufFile::open(&path).err().unwrap().to_string();
    assert!(msg.starts_with(&format!("{}: tensor count 833000000 at offset 8 would take", path.display())), "{msg}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_memory_budget_covers_the_whole_header_not_each_count() {
    let entry = METADATA_ENTRY_MEMORY;
    let array = |n: usize| Value::Array(vec![Value::U8(1); n]);
    let bytes = GgufWriter::new(3).meta("a", array(10)).meta("b", array(10)).to_bytes();
    let one_array = 10 * size_of::<Value>() as u64;
    let exact = 2 * entry + 2 + 2 * one_array;
    assert!(GgufHeader::parse_within(&bytes, exact).is_ok());
    let msg = GgufHeader::parse_within(&bytes, exact - 1).unwrap_err().to_string();
    let left = one_array - 1;
    assert!(
        msg.starts_with("array length of \"b\" 10 at offset") && msg.contains(&format!("only {left} bytes are left")),
        "{msg}"
    );

    let bytes = GgufWriter::new(3).tensor_f32("weights", &[2], &[1.0, 2.0]).to_bytes();
    let exact = TENSOR_ENTRY_MEMORY + "weights".len() as u64;
    assert!(GgufHeader::parse_within(&bytes, exact).is_ok());
    let msg = GgufHeader::parse_within(&bytes, exact - 1).unwrap_err().to_string();
    assert!(msg.starts_with("name of tensor #0 (string length) 7"), "{msg}");
}

#[test]
fn real_model_header_parses_quickly_in_a_fraction_of_the_budget() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    if !path.is_file() {
        eprintln!("skipped: {} is absent (make model)", path.display());
        return;
    }
    let file = File::open(&path).unwrap();
    // SAFETY: a read-only map of a file this test does not change.
    let map = unsafe { Mmap::map(&file) }.unwrap();
    let start = std::time::Instant::now();
    let header = GgufHeader::parse_within(&map, MAX_HEADER_MEMORY / 8).unwrap();
    let took = start.elapsed();
    eprintln!("parsed {} metadata entries and {} tensors in {took:?}", header.metadata.len(), header.tensors.len());
    assert_eq!(header.get("tokenizer.ggml.tokens").and_then(Value::as_array).map(<[Value]>::len), Some(151_936));
    assert!(took.as_secs_f64() < 2.0, "took {took:?}");
}

#[test]
fn parse_errors_name_the_file() {
    let path = scratch("bad-magic.gguf");
    std::fs::write(&path, b"GGML and more").unwrap();
    let msg = GgufFile::open(&path).err().unwrap().to_string();
    assert_eq!(msg, format!("{}: not a GGUF file: magic is [71, 71, 77, 76], expected \"GGUF\"", path.display()));
    std::fs::write(&path, b"").unwrap();
    let msg = GgufFile::open(&path).err().unwrap().to_string();
    assert!(msg.starts_with(&format!("{}: truncated: needed 4 bytes for magic", path.display())), "{msg}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn directories_fifos_and_devices_are_refused_without_blocking() {
    let dir = scratch("models");
    std::fs::create_dir(&dir).unwrap();
    let msg = GgufFile::open(&dir).err().unwrap().to_string();
    assert_eq!(msg, format!("{} is a directory, not a model file", dir.display()));

    let msg = GgufFile::open("/dev/null").err().unwrap().to_string();
    assert_eq!(msg, "/dev/null is a character device, not a model file");

    let fifo = scratch("model.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped the FIFO case: mkfifo failed");
        return;
    }
    // Opening a FIFO for reading blocks until a writer comes: run it where a hang fails the test.
    let (tx, rx) = std::sync::mpsc::channel();
    let opened = fifo.clone();
    std::thread::spawn(move || tx.send(GgufFile::open(&opened).err().map(|e| e.to_string())));
    let msg = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("opening a FIFO blocked").unwrap();
    assert_eq!(msg, format!("{} is a FIFO, not a model file", fifo.display()));
    std::fs::remove_file(&fifo).unwrap();
}

#[test]
fn a_mapped_file_truncated_while_in_use_is_named_not_a_silent_sigbus() {
    use std::os::unix::process::ExitStatusExt;
    const CHILD_FILE: &str = "FALSIFY_TEST_TRUNCATE_MAPPED";
    const NAME: &str = "gguf::tests::a_mapped_file_truncated_while_in_use_is_named_not_a_silent_sigbus";
    if let Some(path) = std::env::var_os(CHILD_FILE) {
        // The child: map the file, truncate it, read a tensor that is no longer there.
        let file = GgufFile::open(&path).unwrap();
        let weights = file.header.tensor("weights").unwrap().clone();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        let sum: u64 = file.tensor_data(&weights).iter().map(|&b| u64::from(b)).sum();
        println!("read the truncated tensor without a fault (sum {sum})");
        std::process::exit(0);
    }
    let path = scratch("truncated.gguf");
    std::fs::write(&path, GgufWriter::new(3).tensor_f32("weights", &[4096], &[1.0; 4096]).to_bytes()).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_FILE, &path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "died of a signal; stderr: {stderr}");
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {stderr}", String::from_utf8_lossy(&out.stdout));
    let expected = format!("error: {} changed while in use (truncated or rewritten", path.display());
    assert!(stderr.contains(&expected), "{stderr}");
    std::fs::remove_file(&path).unwrap();
}
