//! The APR format: round trips, parity with the GGUF, and every kind of bad
//! file refused with an error naming the problem.

use super::*;
use crate::gguf::{GgufHeader, TensorType};
use crate::model::tests::{synthetic_model, Synthetic};
use crate::model::{Logits, Model};

/// The tiny two-layer model with its own output head, as GGUF bytes.
fn tiny_gguf() -> Vec<u8> {
    synthetic_model(Synthetic { tied: false, n_layer: 2, head_cols: 64, context: 256 })
}

/// Where the table entry of tensor `name` keeps its type id, offset, size and checksum.
fn entry_fields(apr: &[u8], name: &str) -> (usize, usize, usize, usize) {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = apr.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    let n_dims = u32::from_le_bytes(field(apr, at)) as usize;
    let ty = at + 4 + 8 * n_dims;
    (ty, ty + 4, ty + 12, ty + 20)
}

fn parse_err(bytes: &[u8]) -> AprError {
    AprHeader::parse(bytes).expect_err("the reader must refuse it")
}

#[test]
fn a_conversion_round_trips_metadata_tensors_and_bytes_aligned() {
    let gguf = tiny_gguf();
    let source = GgufHeader::parse(&gguf).unwrap();
    let apr = convert_bytes(&gguf, |_| {});
    let h = AprHeader::parse(&apr).unwrap();
    assert_eq!(h.version, VERSION);
    assert_eq!(h.model.version, source.version);
    assert_eq!(h.model.metadata, source.metadata);
    assert_eq!(h.model.alignment, ALIGNMENT);
    assert_eq!(h.model.data_offset % ALIGNMENT, 0);
    assert_eq!(h.model.tensors.len(), source.tensors.len());
    for (i, (a, g)) in h.model.tensors.iter().zip(&source.tensors).enumerate() {
        assert_eq!((&a.name, &a.dims, a.ty, a.size), (&g.name, &g.dims, g.ty, g.size));
        assert_eq!(a.offset % ALIGNMENT, 0, "{}", a.name);
        assert_eq!(&apr[a.offset as usize..][..a.size as usize], &gguf[g.offset as usize..][..g.size as usize]);
        h.verify_tensor(&apr, i).unwrap();
    }
}

#[test]
fn the_apr_model_computes_bit_for_bit_what_the_gguf_computes() {
    let gguf = tiny_gguf();
    // `load` names its file `.gguf`: the format is told by the magic, not the name.
    let a = crate::model::tests::load(&gguf).unwrap();
    let b = crate::model::tests::load(&convert_bytes(&gguf, |_| {})).unwrap();
    assert!(matches!(a.file.format, Format::Gguf));
    assert!(matches!(b.file.format, Format::Apr { .. }));
    let tokens = [3u32, 17, 42, 5, 9];
    let la = a.forward(&tokens, &mut a.new_cache(8), Logits::All).unwrap();
    let lb = b.forward(&tokens, &mut b.new_cache(8), Logits::All).unwrap();
    assert_eq!(la.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), lb.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    let ta = crate::tokenizer::Tokenizer::from_header(&a.file.header).unwrap();
    let tb = crate::tokenizer::Tokenizer::from_header(&b.file.header).unwrap();
    assert_eq!(ta.encode("FACE<|end|>", true), tb.encode("FACE<|end|>", true));
}

#[test]
fn every_truncation_is_a_clean_error() {
    let apr = convert_bytes(&tiny_gguf(), |_| {});
    let data_offset = AprHeader::parse(&apr).unwrap().model.data_offset as usize;
    let lengths = (0..data_offset + 8).chain((data_offset..apr.len()).step_by(997));
    for len in lengths {
        let e = parse_err(&apr[..len]);
        assert!(
            matches!(e, AprError::TruncatedHeader { .. } | AprError::Truncated { .. } | AprError::BadMagic { .. }),
            "{len}: {e}"
        );
    }
}

#[test]
fn a_flipped_byte_anywhere_is_caught_by_a_checksum() {
    let apr = convert_bytes(&tiny_gguf(), |_| {});
    let h = AprHeader::parse(&apr).unwrap();
    // Past the magic and the fields that describe the layout, which have their own errors.
    for at in (32..h.model.data_offset as usize).step_by(7) {
        let mut bad = apr.clone();
        bad[at] ^= 0x01;
        let e = parse_err(&bad);
        assert!(matches!(e, AprError::HeaderChecksum { .. }), "byte {at}: {e}");
    }
    for (i, t) in h.model.tensors.iter().enumerate() {
        let mut bad = apr.clone();
        bad[(t.offset + t.size / 2) as usize] ^= 0x80;
        let h = AprHeader::parse(&bad).unwrap();
        let e = h.verify_tensor(&bad, i).unwrap_err();
        assert!(e.to_string().contains(&t.name) && e.to_string().contains("checksum mismatch"), "{e}");
    }
}

#[test]
fn hostile_fields_with_a_valid_checksum_get_typed_errors() {
    let apr = convert_bytes(&tiny_gguf(), |_| {});
    let edited = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = apr.clone();
        edit(&mut b);
        assert!(seal_header(&mut b));
        parse_err(&b)
    };
    let put_u64 = |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    let put_u32 = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let (ty, offset, size, _) = entry_fields(&apr, "blk.0.attn_q.weight");
    let (_, second, _, _) = entry_fields(&apr, "blk.0.attn_k.weight");

    assert!(matches!(edited(&|b| b[4] = 2), AprError::UnsupportedVersion(v) if v.major == 2));
    assert!(matches!(edited(&|b| b[4] = 0), AprError::UnsupportedVersion(v) if v.major == 0));
    assert!(matches!(edited(&|b| b[10] = 1), AprError::UnknownFlags(1)));
    assert!(matches!(edited(&|b| b[40] = 1), AprError::Layout(_)));
    assert!(matches!(edited(&|b| put_u32(b, ty, 99)), AprError::Header(GgufError::BadTensor { .. })));
    assert!(matches!(edited(&|b| put_u64(b, offset, 1 << 40)), AprError::OutOfBounds { .. }));
    assert!(matches!(edited(&|b| put_u64(b, offset, u64::MAX - 255)), AprError::OutOfBounds { .. }));
    assert!(matches!(edited(&|b| put_u64(b, offset, 128)), AprError::Unaligned { offset: 128, .. }));
    assert!(matches!(edited(&|b| put_u64(b, size, 1)), AprError::SizeMismatch { size: 1, .. }));
    assert!(matches!(edited(&|b| put_u64(b, second, 0)), AprError::Overlap { .. }));
    // An absurd metadata count, and an absurd tensor count.
    assert!(matches!(edited(&|b| put_u64(b, 64, u64::MAX)), AprError::Header(GgufError::Implausible { .. })));
    let n_tensors_at = entry_fields(&apr, "token_embd.weight").0 - 4 - 16 - 8 - "token_embd.weight".len() - 8;
    let e = edited(&|b| put_u64(b, n_tensors_at, 1 << 60));
    assert!(matches!(e, AprError::Header(GgufError::Implausible { .. })), "{e}");
    // The data section's layout.
    assert!(matches!(edited(&|b| put_u64(b, 16, 100)), AprError::Layout(_)));
    let e = edited(&|b| put_u64(b, 24, u64::MAX));
    assert!(matches!(e, AprError::Layout(_)), "{e}");
    let mut longer = apr.clone();
    longer.push(0);
    assert!(matches!(parse_err(&longer), AprError::Layout(_)));
    // Padding before the data that is not zero.
    let data_offset = AprHeader::parse(&apr).unwrap().model.data_offset as usize;
    assert!(matches!(edited(&|b| b[data_offset - 1] = 1), AprError::Layout(_)));
    // Every message says what is wrong.
    let msg = edited(&|b| put_u64(b, offset, 1 << 40)).to_string();
    assert!(msg.contains("blk.0.attn_q.weight") && msg.contains("outside the data section"), "{msg}");
}

#[test]
fn an_empty_model_and_a_gguf_are_told_apart_by_magic() {
    let empty = GgufHeader::parse(&crate::gguf::GgufWriter::new(3).to_bytes()).unwrap();
    let mut apr = Vec::new();
    write_apr(&mut apr, &empty, &[], &mut |_| {}).unwrap();
    let h = AprHeader::parse(&apr).unwrap();
    assert!(h.model.tensors.is_empty() && h.data_size == 0);
    let e = parse_err(b"GGUF\x03\0\0\0");
    assert!(e.to_string().contains("not an APR file"), "{e}");
}

#[test]
fn convert_writes_atomically_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    std::fs::write(&gguf, tiny_gguf()).unwrap();
    let out = dir.path().join("tiny.apr");
    let mut last = (0, 0);
    let c = convert(&gguf, &out, true, &mut |done, total| last = (done, total)).unwrap();
    let meta = std::fs::metadata(&out).unwrap();
    assert!(c.verified && c.apr_bytes == meta.len());
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o444, 0o444, "readable by all");
    assert_eq!(last.0, last.1, "the progress reaches its total");
    let file = TensorFile::open(&out).unwrap();
    assert_eq!(file.format_name(), "APR 1.0.0");
    assert!(file.verify_checksums(&mut |_| {}).unwrap());

    // A failed conversion leaves nothing under the final name, and no temporary file.
    let listing = || {
        let mut v: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        v.sort();
        v
    };
    let before = listing();
    let broken = dir.path().join("broken.gguf");
    std::fs::write(&broken, &tiny_gguf()[..1000]).unwrap();
    let e = convert(&broken, &dir.path().join("broken.apr"), false, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("broken.gguf"), "{e}");
    let e = convert(&gguf, &gguf, false, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("being converted"), "{e}");
    let e = convert(&gguf, &dir.path().join("missing/x.apr"), false, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("missing/x.apr"), "{e}");
    let mut after = listing();
    after.retain(|n| n != "broken.gguf");
    assert_eq!(after, before);
}

#[test]
fn a_corrupted_file_is_named_when_opened_or_verified() {
    let dir = tempfile::tempdir().unwrap();
    let apr = convert_bytes(&tiny_gguf(), |_| {});
    let mut header_flip = apr.clone();
    header_flip[100] ^= 1;
    let path = dir.path().join("header.apr");
    std::fs::write(&path, &header_flip).unwrap();
    let msg = Model::load(&path).err().unwrap().to_string();
    assert!(msg.contains("header.apr") && msg.contains("header checksum mismatch"), "{msg}");

    let mut data_flip = apr.clone();
    let last = data_flip.len() - 1;
    data_flip[last] ^= 1;
    let path = dir.path().join("data.apr");
    std::fs::write(&path, &data_flip).unwrap();
    let msg = TensorFile::open(&path).unwrap().verify_checksums(&mut |_| {}).unwrap_err().to_string();
    assert!(msg.contains("data.apr") && msg.contains("output.weight"), "{msg}");

    let msg = TensorFile::open(dir.path()).err().unwrap().to_string();
    assert!(msg.contains("directory"), "{msg}");
}

#[test]
fn a_changed_type_is_written_as_given_and_read_back_as_written() {
    let apr = convert_bytes(&tiny_gguf(), |h| {
        let t = h.tensors.iter_mut().find(|t| t.name == "output_norm.weight").unwrap();
        (t.ty, t.dims) = (TensorType::F16, vec![128]);
    });
    let h = AprHeader::parse(&apr).unwrap();
    let t = h.model.tensor("output_norm.weight").unwrap();
    assert_eq!((t.ty, t.dims.as_slice()), (TensorType::F16, &[128u64][..]));
}
