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
