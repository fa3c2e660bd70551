//! The APR format on a real model (F097–F100): the model converted once per
//! run by `falsify convert`'s code, then read back through the loader's own
//! path ([`TensorFile`], [`Model::load`]) and compared with its GGUF.

use std::path::Path;

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::{kind, Check, Kind, ModelParams};
use crate::apr::{AprVersion, Format, TensorFile, ALIGNMENT, MAGIC};
use crate::claims::{Context, Outcome, Unmet};
use crate::engine::{self, GenerateOptions};
use crate::model::{Logits, Model, ModelConfig};
use crate::sample::SamplerConfig;
use crate::stats::Op;
use crate::tokenizer::Tokenizer;

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![kind::<AprIntegrity>(), kind::<AprVersionCheck>(), kind::<AprPreserved>(), kind::<AprParity>()]
}

/// What was checked and what failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// Properties checked.
    pub checked: usize,
    /// The ones that do not hold, one sentence each.
    pub violations: Vec<String>,
    /// Facts worth showing with a pass.
    pub details: Vec<String>,
}

impl Findings {
    /// Judged as "no violation", with the details appended to the evidence.
    pub fn judge(self, metric: &str) -> Outcome {
        let mut out = judge::no_violations(metric, self.checked, self.violations);
        if let Some(e) = out.evidence.as_mut() {
            e.details.extend(self.details);
        }
        out
    }
}

/// F097's observation of the file at `path`: its first four bytes are
/// `APR\0`, it opens as APR (which checks the header checksum), and every
/// tensor's data matches its checksum.
pub fn observe_integrity(path: &Path) -> Findings {
    let mut f = Findings { checked: 1, ..Findings::default() };
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic));
    match read {
        Ok(()) if &magic == MAGIC => {}
        Ok(()) => f.violations.push(format!("magic is {magic:?}, not \"APR\\0\"")),
        Err(e) => f.violations.push(format!("cannot read the magic of {}: {e}", path.display())),
    }
    f.checked += 1;
    let file = match TensorFile::open(path) {
        Ok(file) => file,
        Err(e) => {
            f.violations.push(e.to_string());
            return f;
        }
    };
    let Format::Apr { header_checksum, .. } = &file.format else {
        f.violations.push(format!("{} opens as {}, not APR", path.display(), file.format_name()));
        return f;
    };
    f.details.push(format!("header checksum {header_checksum:#010x} matches"));
    f.checked += file.header.tensors.len();
    match file.verify_checksums(&mut |_| {}) {
        Ok(_) => f.details.push(format!(
            "all {} tensors' data checksums match ({} bytes of data)",
            file.header.tensors.len(),
            file.header.tensors.iter().map(|t| t.size).sum::<u64>()
        )),
        Err(e) => f.violations.push(e.to_string()),
    }
    f
}

/// `apr_integrity`: the magic and the checksums of the converted model.
pub struct AprIntegrity;

impl Check for AprIntegrity {
    const NAME: &'static str = "apr_integrity";
    const DOC: &'static str = "the model converted to APR starts with APR\\0, its header checksum and every \
         tensor's data checksum match (read through the loader's own reader)";
    const PARAMS: &'static str = "model";
    type Params = ModelParams;

    fn run(p: &ModelParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let apr = cx.apr(&p.model)?;
        let mut f = observe_integrity(&apr.path);
        f.details.push(apr.conversion.to_string());
        Ok(f.judge("apr_integrity_violations"))
    }
}

/// Parameters of `apr_version`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionParams {
    /// Model size converted.
    pub model: String,
    /// The lowest acceptable version, `major.minor.patch`.
    pub min_version: String,
}

/// Parses `major.minor.patch`.
pub fn parse_version(s: &str) -> Result<AprVersion, String> {
    let parts: Vec<&str> = s.split('.').collect();
    let bad = || format!("version {s:?} is not major.minor.patch (e.g. 1.0.0)");
    let [major, minor, patch] = parts.as_slice() else {
        return Err(bad());
    };
    let n = |x: &str| x.parse::<u16>().map_err(|_| bad());
    Ok(AprVersion { major: n(major)?, minor: n(minor)?, patch: n(patch)? })
}

/// The tensors a Qwen2 model of `config` needs, `output.weight` included
/// when the model has its own head (`untied`).
pub fn required_tensors(config: &ModelConfig, untied: bool) -> Vec<String> {
    let mut names = vec!["token_embd.weight".to_owned(), "output_norm.weight".to_owned()];
    if untied {
        names.push("output.weight".into());
    }
    for i in 0..config.n_layer {
        for part in [
            "attn_norm.weight",
            "attn_q.weight",
            "attn_k.weight",
            "attn_v.weight",
            "attn_q.bias",
            "attn_k.bias",
            "attn_v.bias",
            "attn_output.weight",
            "ffn_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
        ] {
            names.push(format!("blk.{i}.{part}"));
        }
    }
    names
}

/// F098's observation of the file at `path`: its version is at least
/// `min`, and its tensors are exactly those its config needs.
pub fn observe_version(path: &Path, min: AprVersion) -> Findings {
    let mut f = Findings { checked: 2, ..Findings::default() };
    let file = match TensorFile::open(path) {
        Ok(file) => file,
        Err(e) => {
            f.violations.push(e.to_string());
            return f;
        }
    };
    match &file.format {
        Format::Apr { version, .. } if *version >= min => f.details.push(format!("version {version} >= {min}")),
        Format::Apr { version, .. } => f.violations.push(format!("version {version} is below {min}")),
        Format::Gguf => f.violations.push(format!("{} is {}, not APR", path.display(), file.format_name())),
    }
    let config = match ModelConfig::from_header(&file.header) {
        Ok(c) => c,
        Err(e) => {
            f.violations.push(format!("its config does not read: {e}"));
            return f;
        }
    };
    let untied = file.header.tensor("output.weight").is_some();
    let needed = required_tensors(&config, untied);
    let stored = &file.header.tensors;
    let missing: Vec<&String> = needed.iter().filter(|n| file.header.tensor(n).is_none()).collect();
    let extra: Vec<&str> = stored.iter().map(|t| t.name.as_str()).filter(|n| !needed.iter().any(|x| x == n)).collect();
    if stored.len() != needed.len() || !missing.is_empty() || !extra.is_empty() {
        f.violations.push(format!(
            "{} tensors stored, the config ({} layers{}) needs {}; missing {missing:?}, unexpected {extra:?}",
            stored.len(),
            config.n_layer,
            if untied { ", own output head" } else { ", tied head" },
            needed.len()
        ));
    } else {
        f.details.push(format!(
            "{} tensors, as {} layers{} need",
            stored.len(),
            config.n_layer,
            if untied { " with their own output head" } else { " with a tied head" }
        ));
    }
    f
}

/// `apr_version`: the converted model's version and tensor count.
pub struct AprVersionCheck;

impl Check for AprVersionCheck {
    const NAME: &'static str = "apr_version";
    const DOC: &'static str = "the model converted to APR has a version >= min_version and exactly the tensors \
         its config needs (as many, by name)";
    const PARAMS: &'static str = "model, min_version";
    type Params = VersionParams;

    fn run(p: &VersionParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let min = parse_version(&p.min_version).map_err(Unmet::Failed)?;
        let apr = cx.apr(&p.model)?;
        Ok(observe_version(&apr.path, min).judge("apr_version_violations"))
    }
}

/// F099's observation: every tensor of the GGUF at `gguf` is in the APR at
/// `apr` with the same type and shape, and nothing else is; every tensor's
/// data starts on a 256-byte boundary of the file.
pub fn observe_preserved(gguf: &Path, apr: &Path) -> Findings {
    let mut f = Findings::default();
    let (source, converted) = match (TensorFile::open(gguf), TensorFile::open(apr)) {
        (Ok(s), Ok(c)) => (s, c),
        (s, c) => {
            f.checked = 1;
            f.violations.extend(s.err().into_iter().chain(c.err()).map(|e| e.to_string()));
            return f;
        }
    };
    for t in &source.header.tensors {
        f.checked += 1;
        match converted.header.tensor(&t.name) {
            None => f.violations.push(format!("{}: missing from the APR file", t.name)),
            Some(c) if c.ty != t.ty || c.dims != t.dims => f
                .violations
                .push(format!("{}: {} {:?} in the GGUF, {} {:?} in the APR file", t.name, t.ty, t.dims, c.ty, c.dims)),
            Some(c) if !c.offset.is_multiple_of(ALIGNMENT) => {
                f.violations.push(format!("{}: data at byte {}, not a multiple of {ALIGNMENT}", t.name, c.offset))
            }
            Some(_) => {}
        }
    }
    f.checked += 1;
    let extra: Vec<&str> = converted
        .header
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| source.header.tensor(n).is_none())
        .collect();
    if !extra.is_empty() {
        f.violations.push(format!("tensors not in the GGUF: {extra:?}"));
    }
    let mut types = std::collections::BTreeMap::<String, usize>::new();
    for t in &converted.header.tensors {
        *types.entry(t.ty.to_string()).or_default() += 1;
    }
    f.details.push(format!(
        "{} tensors, types {}; data section at byte {}",
        converted.header.tensors.len(),
        types.iter().map(|(t, n)| format!("{t} ×{n}")).collect::<Vec<_>>().join(", "),
        converted.header.data_offset
    ));
    f
}

/// `apr_preserved`: types and shapes preserved from the GGUF, data 256-byte aligned.
pub struct AprPreserved;

impl Check for AprPreserved {
    const NAME: &'static str = "apr_preserved";
    const DOC: &'static str = "every tensor of the GGUF is in its APR conversion with the same quantization type \
         and shape (and nothing else is), its data 256-byte aligned";
    const PARAMS: &'static str = "model";
    type Params = ModelParams;

    fn run(p: &ModelParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let apr = cx.apr(&p.model)?;
        Ok(observe_preserved(&apr.source, &apr.path).judge("apr_preservation_violations"))
    }
}

/// Parameters of `apr_parity`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParityParams {
    /// Model size converted.
    pub model: String,
    /// The fixed prompt.
    pub prompt: String,
    /// Greedy tokens generated by each.
    pub tokens: usize,
    /// Largest acceptable absolute difference of any logit.
    pub tolerance: f64,
}

/// F100's observation: the two models' logits at every prompt position, and
/// their greedy continuations.
#[derive(Debug, Clone, PartialEq)]
pub struct Parity {
    /// Largest absolute difference of any logit (NaN when either is not finite).
    pub max_abs_diff: f64,
    /// Logits compared.
    pub logits: usize,
    /// Logits that differ in any bit.
    pub bits_differ: usize,
    /// The reference's greedy tokens.
    pub reference_tokens: Vec<u32>,
    /// The candidate's greedy tokens.
    pub candidate_tokens: Vec<u32>,
    /// The reference's greedy text.
    pub text: String,
}

/// Runs `prompt` through `reference` and `candidate` (logits at every
/// position), then `tokens` greedy tokens from each.
pub fn observe_parity(
    reference: &Model,
    candidate: &Model,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    tokens: usize,
) -> Result<Parity, Unmet> {
    let logits = |m: &Model| m.forward(prompt, &mut m.try_new_cache(prompt.len())?, Logits::All);
    let (a, b) = (logits(reference).map_err(Unmet::failed)?, logits(candidate).map_err(Unmet::failed)?);
    let mut max_abs_diff = 0.0f64;
    for (x, y) in a.iter().zip(&b) {
        let d = (f64::from(*x) - f64::from(*y)).abs();
        // NaN wins: a non-finite logit must not read as agreement.
        if d.is_nan() || d > max_abs_diff {
            max_abs_diff = d;
        }
        if max_abs_diff.is_nan() {
            break;
        }
    }
    if a.len() != b.len() {
        max_abs_diff = f64::NAN;
    }
    let bits_differ = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    let opts = GenerateOptions {
        max_tokens: tokens,
        sampler: SamplerConfig { temperature: 0.0, ..SamplerConfig::default() },
        ignore_eos: false,
        time_bricks: false,
    };
    let generate = |m: &Model| engine::generate(m, tokenizer, prompt, &opts, |_| {}).map_err(Unmet::failed);
    let (r, c) = (generate(reference)?, generate(candidate)?);
    Ok(Parity {
        max_abs_diff,
        logits: a.len(),
        bits_differ,
        reference_tokens: r.tokens,
        candidate_tokens: c.tokens,
        text: r.text,
    })
}

/// Judges parity: greedy tokens identical, then the largest logit difference within `tolerance`.
pub fn judge_parity(o: &Parity, tolerance: f64) -> Outcome {
    if o.reference_tokens != o.candidate_tokens {
        let at = o.reference_tokens.iter().zip(&o.candidate_tokens).take_while(|(a, b)| a == b).count();
        let divergence = format!(
            "greedy tokens diverge at token {at}: GGUF {:?}, APR {:?}",
            o.reference_tokens.get(at),
            o.candidate_tokens.get(at)
        );
        return judge::no_violations("greedy_token_divergences", o.reference_tokens.len().max(1), vec![divergence]);
    }
    let q = Quantity::new("max_abs_logit_diff", "logit", o.max_abs_diff)
        .detail(format!(
            "{} of {} logits differ in any bit{}",
            o.bits_differ,
            o.logits,
            if o.bits_differ == 0 { " (bit for bit equal)" } else { "" }
        ))
        .detail(format!("greedy text identical over {} tokens: {:?}", o.reference_tokens.len(), o.text));
    judge::quantity(q, Op::Le, tolerance)
}

/// `apr_parity`: the converted model computes what its GGUF computes.
pub struct AprParity;

impl Check for AprParity {
    const NAME: &'static str = "apr_parity";
    const DOC: &'static str = "logits of the model loaded from its APR conversion against the GGUF's at every \
         position of a fixed prompt (largest absolute difference <= tolerance), and greedy tokens identical";
    const PARAMS: &'static str = "model, prompt, tokens, tolerance";
    type Params = ParityParams;

    fn run(p: &ParityParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let apr = cx.apr(&p.model)?;
        cx.say(format_args!("loading {}", apr.path.display()));
        let mut candidate = Model::load(&apr.path).map_err(Unmet::failed)?;
        candidate.set_threads(cx.settings.threads);
        let loaded = cx.model(&p.model)?;
        let prompt = loaded.tokenizer.encode(&p.prompt, true);
        let o = observe_parity(&loaded.model, &candidate, &loaded.tokenizer, &prompt, p.tokens)?;
        Ok(judge_parity(&o, p.tolerance))
    }
}

#[cfg(test)]
pub(super) mod audit;
