//! The falsifiability audit's cases for the APR kinds: each kind's own
//! observation of a tiny model converted to APR, then of a deliberately
//! broken conversion (a flipped data byte, a version below 1.0.0, a changed
//! tensor type, changed weights).

use std::path::{Path, PathBuf};

use super::*;
use crate::apr::{convert_bytes, seal_header};
use crate::gguf::{GgufHeader, TensorType};
use crate::model::tests::{synthetic_model, Synthetic};

/// The tiny two-layer model as GGUF bytes.
fn tiny_gguf() -> Vec<u8> {
    synthetic_model(Synthetic { tied: true, n_layer: 2, head_cols: 64, context: 256 })
}

/// Writes `bytes` to `name` in `dir`.
fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `apr_integrity`: the conversion, then the same with one byte of its last tensor's data flipped.
pub fn integrity() -> (Outcome, Outcome) {
    let dir = tempfile::tempdir().unwrap();
    let good = convert_bytes(&tiny_gguf(), |_| {});
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    (
        observe_integrity(&put(dir.path(), "good.apr", &good)).judge("v"),
        observe_integrity(&put(dir.path(), "bad.apr", &bad)).judge("v"),
    )
}

/// `apr_version`: the conversion, then the same stamped version 0.9.0 (header checksum resealed).
pub fn version() -> (Outcome, Outcome) {
    let dir = tempfile::tempdir().unwrap();
    let good = convert_bytes(&tiny_gguf(), |_| {});
    let mut old = good.clone();
    old[4..10].copy_from_slice(&[0, 0, 9, 0, 0, 0]);
    assert!(seal_header(&mut old));
    let min = parse_version("1.0.0").unwrap();
    (
        observe_version(&put(dir.path(), "good.apr", &good), min).judge("v"),
        observe_version(&put(dir.path(), "old.apr", &old), min).judge("v"),
    )
}

/// `apr_preserved`: the conversion, then one whose converter turned an F32
/// norm weight of 64 values into F16 of 128 (the same bytes).
pub fn preserved() -> (Outcome, Outcome) {
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_gguf();
    let retyped = convert_bytes(&gguf, |h: &mut GgufHeader| {
        let t = h.tensors.iter_mut().find(|t| t.name == "output_norm.weight").unwrap();
        (t.ty, t.dims) = (TensorType::F16, vec![128]);
    });
    let source = put(dir.path(), "tiny.gguf", &gguf);
    (
        observe_preserved(&source, &put(dir.path(), "good.apr", &convert_bytes(&gguf, |_| {}))).judge("v"),
        observe_preserved(&source, &put(dir.path(), "retyped.apr", &retyped)).judge("v"),
    )
}

/// `apr_parity`: the GGUF against its conversion, then against the
/// conversion of a copy whose first query bias was shifted by 0.5.
pub fn parity() -> (Outcome, Outcome) {
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_gguf();
    let mut shifted = gguf.clone();
    let bias = GgufHeader::parse(&gguf).unwrap().tensor("blk.0.attn_q.bias").unwrap().clone();
    for v in shifted[bias.offset as usize..][..bias.size as usize].chunks_exact_mut(4) {
        let x = f32::from_le_bytes([v[0], v[1], v[2], v[3]]) + 0.5;
        v.copy_from_slice(&x.to_le_bytes());
    }
    let reference = Model::load(put(dir.path(), "tiny.gguf", &gguf)).unwrap();
    let tokenizer = Tokenizer::from_header(&reference.file.header).unwrap();
    let prompt = tokenizer.encode("FACEBAD", true);
    let judged = |name: &str, gguf: &[u8]| {
        let candidate = Model::load(put(dir.path(), name, &convert_bytes(gguf, |_| {}))).unwrap();
        judge_parity(&observe_parity(&reference, &candidate, &tokenizer, &prompt, 8).unwrap(), 1e-4)
    };
    (judged("good.apr", &gguf), judged("shifted.apr", &shifted))
}
