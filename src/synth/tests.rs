use std::path::Path;

use super::*;
use crate::gguf::GgufFile;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_tables_parse_and_match_the_hyperparameters() {
    for s in &SHAPES {
        let t = tensor_table(s.size).unwrap();
        let blocks = t.iter().filter(|x| x.0.ends_with(".attn_norm.weight")).count();
        assert_eq!(blocks, s.blocks as usize, "{}", s.size);
        let embd = t.iter().find(|x| x.0 == "token_embd.weight").unwrap();
        assert_eq!(embd.1, [u64::from(s.embedding), 151_936]);
        let up = t.iter().find(|x| x.0 == "blk.0.ffn_up.weight").unwrap();
        assert_eq!(up.1, [u64::from(s.embedding), u64::from(s.feed_forward)]);
    }
    assert!(tensor_table("7b").unwrap_err().contains("0.5b"));
}

#[test]
fn the_vocabulary_has_every_byte_the_specials_and_the_size() {
    let (tokens, types, merges) = vocabulary(151_936);
    assert_eq!((tokens.len(), types.len()), (151_936, 151_936));
    let text = |i: usize| tokens[i].as_str().unwrap().to_owned();
    assert_eq!((text(0), text(151_643), text(151_645)), ("!".into(), "<|endoftext|>".into(), "<|im_end|>".into()));
    let distinct: std::collections::HashSet<&str> = tokens.iter().filter_map(Value::as_str).collect();
    assert_eq!(distinct.len(), tokens.len(), "token texts are unique");
    for m in merges.iter().filter_map(Value::as_str) {
        let joined = m.replace(' ', "");
        assert!(distinct.contains(joined.as_str()), "{m}");
    }
}

#[test]
fn the_twin_loads_tokenizes_generates_and_llama_cpp_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twin-0.5b.gguf");
    let w = write("0.5b", 7, &path).unwrap();
    assert_eq!(w.tensors, 291);
    let m = crate::model::Model::load(&path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let tok = crate::tokenizer::Tokenizer::from_header(&file.header).unwrap();
    let ids = tok.encode("def hello", false);
    assert!(!ids.is_empty());
    assert_eq!(tok.decode(&ids), "def hello");
    let opts = crate::engine::GenerateOptions {
        max_tokens: 3,
        sampler: crate::sample::SamplerConfig::default(),
        ignore_eos: true,
        time_bricks: false,
    };
    let a = crate::engine::generate(&m, &tok, &ids, &opts, |_| {}).unwrap();
    assert_eq!(a.tokens.len(), 3);
    let Ok(bin) = crate::baseline::llama_cpp::LlamaCpp::locate().and_then(|l| l.binary("llama-completion")) else {
        eprintln!("skipped (llama.cpp part): llama.cpp absent (make llama-cpp)");
        return;
    };
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("-m").arg(&path).args(["-p", "def hello", "-n", "4", "-no-cnv", "--temp", "0", "-t", "2"]);
    let out = crate::util::children::output(&mut cmd, Some(std::time::Duration::from_secs(120))).unwrap();
    assert!(out.status.success(), "llama-completion failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_same_seed_makes_the_same_weights_and_another_seed_others() {
    let table = tensor_table("0.5b").unwrap();
    for i in [0, 2, 5, table.len() - 1] {
        let w = weights(&table[i], 7, i);
        assert_eq!(w, weights(&table[i], 7, i), "{}", table[i].0);
        assert_ne!(w, weights(&table[i], 8, i), "{}", table[i].0);
    }
}

#[test]
fn the_twins_tensor_table_equals_the_real_models() {
    for size in LIKE {
        let real = root().join(crate::claims::requires::model_path(size));
        if !real.is_file() {
            eprintln!("skipped: {} absent (make model)", real.display());
            continue;
        }
        let header = GgufFile::open(&real).unwrap().header;
        let real_table: Vec<TensorSpec> =
            header.tensors.iter().map(|t| (t.name.clone(), t.dims.clone(), t.ty)).collect();
        assert_eq!(tensor_table(size).unwrap(), real_table, "{size}");
    }
}
