//! KV page checks: how fast the same-fill detector classifies a real KV
//! cache's pages (with the data's cache residency stated), and the LZ4
//! compression ratio of a real generation held to a memory budget, which must
//! change no logit.

use std::time::Instant;

use serde::Deserialize;

use super::judge::{self, Quantity};
use super::resources::fill_by_forward;
use super::{kind, Check, Kind};
use crate::claims::{Context, Outcome, Unmet};
use crate::model::{kv_pages, KvCache, KvType, KvUsage, Logits, Model};
use crate::rng::SplitMix64;
use crate::sample::argmax;
use crate::stats::Op;

/// The kinds of this module.
pub fn kinds() -> Vec<Kind> {
    vec![kind::<SameFillScan>(), kind::<KvCompression>()]
}

/// Where the scanned buffer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Residency {
    /// Half the L2 cache: the pages stay in L2 from one scan to the next.
    L2,
    /// Eight times the L3 cache: every scan streams from memory.
    Dram,
}

/// Bytes of a CPU cache level as the system states it (`None` when it does not).
fn cpu_cache_bytes(level: u8) -> Option<usize> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let read = |f: &str| std::fs::read_to_string(e.path().join(f)).ok().map(|s| s.trim().to_owned());
        if read("level")? != level.to_string() || read("type")? == "Instruction" {
            return None;
        }
        let size = read("size")?;
        let (n, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
        let scale = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            "" => 1,
            _ => return None,
        };
        n.parse::<usize>().ok().map(|n| n * scale)
    })
}

impl Residency {
    /// The buffer's size and how it relates to this CPU's caches, in words.
    pub fn buffer_bytes(self) -> (usize, String) {
        let (l2, l3) = (cpu_cache_bytes(2), cpu_cache_bytes(3));
        let mib = |b: usize| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
        let stated = |b: Option<usize>, fallback: usize| b.map_or((fallback, "assumed"), |b| (b, "stated"));
        match self {
            Residency::L2 => {
                let (l2, how) = stated(l2, 1 << 20);
                (l2 / 2, format!("{}: half the L2 cache ({} per core, {how}): cache-resident", mib(l2 / 2), mib(l2)))
            }
            Residency::Dram => {
                let (l3, how) = stated(l3, 32 << 20);
                (
                    8 * l3,
                    format!("{}: eight times the L3 cache ({}, {how}): streamed from memory", mib(8 * l3), mib(l3)),
                )
            }
        }
    }
}

/// Parameters of `same_fill_scan`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanParams {
    /// Model whose forward pass writes the pages.
    pub model: String,
    /// Positions written into an f16 cache of twice as many (the rest of its pages never written).
    pub positions: usize,
    /// The buffer the claim is judged on (the other is measured and stated).
    pub residency: Residency,
    /// Timed scans.
    pub samples: usize,
    /// Operator.
    pub op: Op,
    /// Threshold, GB/s.
    pub threshold: f64,
}

/// A same-fill detector: the word a page repeats, if it is all one.
pub type Detector = fn(&[u8]) -> Option<u64>;

/// A real f16 cache's pages: `positions` positions of the forward pass in a
/// cache of twice as many, every page's bytes (never-written pages read as
/// zeros), and the page size.
pub fn real_pages(model: &Model, tokens: &[u32], positions: usize) -> Result<(Vec<u8>, usize), Unmet> {
    let c = &model.config;
    let mut cache = KvCache::new(KvType::F16, c.n_layer, c.kv_dim(), 2 * positions);
    fill_by_forward(model, tokens, &mut cache, positions, positions)?;
    Ok((cache.page_bytes().flatten().copied().collect(), cache.usage().page_bytes))
}

/// `bytes` bytes of whole pages taken from `pages` in turn.
pub fn buffer_of(pages: &[u8], page: usize, bytes: usize) -> Vec<u8> {
    let n = (bytes / page).max(1);
    pages.chunks_exact(page).cycle().take(n).flatten().copied().collect()
}

/// The pages `detect` misclassifies among `buffer`'s, and among copies of
/// its same-fill pages with one byte (at a random place) changed.
pub fn misclassified(detect: Detector, buffer: &[u8], page: usize) -> (usize, Vec<String>) {
    let truth = |p: &[u8]| {
        let first: [u8; 8] = p.get(..8)?.try_into().ok()?;
        p.iter().enumerate().all(|(i, &b)| b == first[i % 8]).then(|| u64::from_ne_bytes(first))
    };
    let (mut rng, mut checked, mut wrong) = (SplitMix64(0xf115), 0, Vec::new());
    for (i, p) in buffer.chunks_exact(page).enumerate() {
        let want = truth(p);
        checked += 1;
        if detect(p) != want {
            wrong.push(format!("page {i}: detected {:?}, is {want:?}", detect(p)));
        }
        if want.is_some() {
            let mut odd = p.to_vec();
            let at = rng.below(page);
            odd[at] ^= 1 << rng.below(8);
            checked += 1;
            if let Some(w) = detect(&odd) {
                wrong.push(format!("page {i} with byte {at} changed: detected as all {w:#x}"));
            }
        }
    }
    (checked, wrong)
}

/// GB/s of page bytes `detect` classifies over `buffer`, one sample per timed
/// series of scans (at least 64 MiB scanned each); and how many pages are same-fill.
pub fn scan_rate(detect: Detector, buffer: &[u8], page: usize, samples: usize) -> (Vec<f64>, usize) {
    let scan = || buffer.chunks_exact(page).filter(|p| detect(std::hint::black_box(p)).is_some()).count();
    let same = scan();
    let repeats = (64 << 20) / buffer.len().max(1) + 1;
    let rates = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..repeats {
                std::hint::black_box(scan());
            }
            (repeats * buffer.len()) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    (rates, same)
}

/// One buffer's scan, as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// The buffer, in words (its size against the caches).
    pub buffer: String,
    /// Pages scanned, and of them same-fill.
    pub pages: (usize, usize),
    /// Cases checked for correctness, and the misclassified ones.
    pub checked: usize,
    /// Misclassified pages.
    pub wrong: Vec<String>,
    /// GB/s, one per sample.
    pub rates: Vec<f64>,
}

/// Scans `pages` (of `page` bytes) arranged into a buffer of `residency`.
pub fn scan(detect: Detector, pages: &[u8], page: usize, residency: Residency, samples: usize) -> Scan {
    let (bytes, buffer_words) = residency.buffer_bytes();
    let buffer = buffer_of(pages, page, bytes);
    let (checked, wrong) = misclassified(detect, &buffer[..buffer.len().min(pages.len())], page);
    let (rates, same) = scan_rate(detect, &buffer, page, samples);
    Scan { buffer: buffer_words, pages: (buffer.len() / page, same), checked, wrong, rates }
}

/// Judges the detection rate of the claim's buffer; a detector that
/// misclassifies any page detects nothing (0 GB/s).
pub fn judge_scan(p: &ScanParams, judged: &Scan, other: Option<&Scan>) -> Outcome {
    let mut q = if judged.wrong.is_empty() {
        Quantity::of_samples("same_fill_gb_s", "GB/s", &judged.rates)
    } else {
        Quantity::new("same_fill_gb_s", "GB/s", 0.0).detail(format!(
            "{} of {} cases misclassified: {}",
            judged.wrong.len(),
            judged.checked,
            judged.wrong[0]
        ))
    };
    q = q.detail(format!(
        "buffer {}; {} pages of a real f16 KV cache, {} of them same-fill (read in full, the others stop at their first \
         differing 256 bytes); {} cases classified correctly first",
        judged.buffer, judged.pages.0, judged.pages.1, judged.checked
    ));
    if let Some(o) = other {
        let median = crate::stats::Summary::of(&o.rates).map_or(f64::NAN, |s| s.median);
        q = q.detail(format!("also measured: {} GB/s over buffer {}", judge::num(median), o.buffer));
    }
    judge::quantity(q, p.op, p.threshold)
}

/// `same_fill_scan`: GB/s at which the same-fill detector classifies a real KV cache's pages.
pub struct SameFillScan;

impl Check for SameFillScan {
    const NAME: &'static str = "same_fill_scan";
    const DOC: &'static str = "GB/s at which the KV cache's same-fill detector classifies a real f16 cache's pages \
         (half never written), over an L2-resident or a DRAM-sized buffer, after checking it misses no changed byte";
    const PARAMS: &'static str = "model, positions, residency (l2|dram), samples, op, threshold";
    type Params = ScanParams;

    fn run(p: &ScanParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        let text = std::fs::read_to_string(cx.fixture("perplexity.txt")).map_err(Unmet::failed)?;
        let loaded = cx.model(&p.model)?;
        let tokens = loaded.tokenizer.encode(&text, true);
        let (pages, page) = real_pages(&loaded.model, &tokens, p.positions)?;
        cx.say(format_args!("scanning {} KV pages, L2-resident and DRAM-sized", pages.len() / page));
        let detect: Detector = kv_pages::same_fill;
        let other_residency = if p.residency == Residency::L2 { Residency::Dram } else { Residency::L2 };
        let other = scan(detect, &pages, page, other_residency, p.samples);
        let judged = scan(detect, &pages, page, p.residency, p.samples);
        Ok(judge_scan(p, &judged, Some(&other)))
    }
}

/// Parameters of `kv_compression`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionParams {
    /// Model size.
    pub model: String,
    /// The prompt.
    pub prompt: String,
    /// Greedy tokens generated (prompt and tokens: the cache's capacity).
    pub tokens: usize,
    /// The budget, as a fraction of the cache's bytes at full capacity.
    pub budget_fraction: f64,
    /// Operator.
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
}

/// A generation run twice in step, without and with a memory budget.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressionRun {
    /// Positions generated through.
    pub positions: usize,
    /// The budget, bytes.
    pub budget: usize,
    /// The budgeted cache's figures.
    pub usage: KvUsage,
    /// Bytes the unbudgeted cache held.
    pub unbudgeted: usize,
    /// Steps whose logits differ between the two.
    pub differing: Vec<String>,
}

/// Generates `n` greedy tokens after `prompt` with an f16 cache and, in step,
/// with one held to `fraction` of its bytes; `tamper` sees the budgeted cache
/// after every step (the audit breaks it there). Every step's logits are compared bit for bit.
pub fn compression_run(
    model: &Model,
    prompt: &[u32],
    n: usize,
    fraction: f64,
    tamper: &mut dyn FnMut(&mut KvCache),
) -> Result<CompressionRun, Unmet> {
    let c = &model.config;
    let capacity = prompt.len() + n;
    let new = || KvCache::new(KvType::F16, c.n_layer, c.kv_dim(), capacity);
    let (mut free, mut tight) = (new(), new());
    let budget = (tight.bytes() as f64 * fraction) as usize;
    tight.set_budget(Some(budget));
    let (mut a, mut b, mut differing) = (Vec::new(), Vec::new(), Vec::new());
    let mut batch = prompt.to_vec();
    for step in 0..=n {
        model.forward_into(&batch, &mut free, Logits::Last, None, &mut a).map_err(Unmet::failed)?;
        model.forward_into(&batch, &mut tight, Logits::Last, None, &mut b).map_err(Unmet::failed)?;
        tamper(&mut tight);
        if let Some(i) = a.iter().zip(&b).position(|(x, y)| x.to_bits() != y.to_bits()) {
            differing.push(format!("step {step}: logit {i} is {} with the budget, {} without", b[i], a[i]));
        }
        batch = vec![argmax(&a)];
    }
    Ok(CompressionRun {
        positions: free.len(),
        budget,
        usage: tight.usage(),
        unbudgeted: free.usage().peak_bytes,
        differing,
    })
}

/// Judges the compression ratio of a budgeted generation's cold pages
/// ([`KvUsage::compression_ratio`]); one whose logits differ
/// from the unbudgeted run's lost data, and counts as no compression (0).
pub fn judge_compression(p: &CompressionParams, r: &CompressionRun) -> Outcome {
    let u = &r.usage;
    let ratio = if r.differing.is_empty() { u.compression_ratio().unwrap_or(f64::NAN) } else { 0.0 };
    let mut q = Quantity::new("kv_compression_ratio", "x", ratio)
        .detail(format!(
            "a real generation through {} positions; budget {} bytes ({} of the cache's {} at full capacity); the \
             unbudgeted cache held {} bytes, the budgeted one at most {}",
            r.positions,
            r.budget,
            p.budget_fraction,
            (r.budget as f64 / p.budget_fraction) as usize,
            r.unbudgeted,
            u.peak_bytes
        ))
        .detail(format!(
            "pages of {} bytes the budget made cold or tried to: {} LZ4-compressed into {} bytes (LZ4 ratio {}), {} \
             incompressible (kept as they are), {} stored as one value",
            u.page_bytes,
            u.compressed_pages,
            u.compressed_bytes,
            u.lz4_ratio().map_or("none".into(), judge::num),
            u.incompressible_pages,
            u.same_fill_pages
        ));
    q = match r.differing.first() {
        None => q.detail(format!("every step's logits equal the unbudgeted run's bit for bit ({} steps)", r.positions)),
        Some(first) => {
            q.detail(format!("{} steps' logits differ from the unbudgeted run's: {first}", r.differing.len()))
        }
    };
    judge::quantity(q, p.op, p.threshold)
}

/// `kv_compression`: the compression ratio of a real generation's KV pages under a memory budget, losslessly.
pub struct KvCompression;

impl Check for KvCompression {
    const NAME: &'static str = "kv_compression";
    const DOC: &'static str =
        "compression ratio (LZ4, same-fill) of a real generation's cold KV pages under a memory budget \
         (into the JSON report), with every step's logits equal to an unbudgeted run's";
    const PARAMS: &'static str = "model, prompt, tokens, budget_fraction, op, threshold";
    type Params = CompressionParams;

    fn run(p: &CompressionParams, cx: &mut Context) -> Result<Outcome, Unmet> {
        cx.say(format_args!("generating {} tokens with and without a KV budget", p.tokens));
        let loaded = cx.model(&p.model)?;
        let prompt = loaded.tokenizer.encode(&p.prompt, true);
        let run = compression_run(&loaded.model, &prompt, p.tokens, p.budget_fraction, &mut |_| {})?;
        Ok(judge_compression(p, &run))
    }
}
