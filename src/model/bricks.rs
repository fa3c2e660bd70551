//! Bricks: the named stages of the forward pass, and the stopwatch that times
//! them. Each brick records its own span (from [`Stopwatch::begin`] to
//! [`Stopwatch::end`]), so work done between spans is time no brick accounts
//! for: coverage is the spans' sum over the measured wall time, not 100% by
//! construction. Apart from the spans, the forward pass marks every
//! [`Stage`] it enters; the [`StageTrace`] records which brick's span (if any)
//! was open then, so a stage that runs outside every brick shows up. With no
//! [`BrickTimes`] to fill, the stopwatch reads no clock and records nothing.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A named stage of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Brick {
    /// Token embedding lookup (and the pass's scratch set-up).
    Embed,
    /// RMSNorm before attention.
    AttnNorm,
    /// Q, K and V projections with their biases.
    Qkv,
    /// Rotary position embedding of Q and K (angles included).
    Rope,
    /// KV cache write and causal attention over the cache.
    Attention,
    /// Attention output projection and its residual.
    OProj,
    /// RMSNorm before the FFN.
    FfnNorm,
    /// Gate and up projections, SwiGLU, down projection and its residual.
    Ffn,
    /// Final RMSNorm.
    OutputNorm,
    /// LM head: the logits.
    LmHead,
}

impl Brick {
    /// Every brick, in forward-pass order.
    pub const ALL: [Brick; 10] = [
        Brick::Embed,
        Brick::AttnNorm,
        Brick::Qkv,
        Brick::Rope,
        Brick::Attention,
        Brick::OProj,
        Brick::FfnNorm,
        Brick::Ffn,
        Brick::OutputNorm,
        Brick::LmHead,
    ];

    /// The brick's name as reports write it.
    pub fn name(self) -> &'static str {
        match self {
            Brick::Embed => "embed",
            Brick::AttnNorm => "attn_norm",
            Brick::Qkv => "qkv",
            Brick::Rope => "rope",
            Brick::Attention => "attention",
            Brick::OProj => "o_proj",
            Brick::FfnNorm => "ffn_norm",
            Brick::Ffn => "ffn",
            Brick::OutputNorm => "output_norm",
            Brick::LmHead => "lm_head",
        }
    }

    /// Whether the brick runs once per layer (rather than once per pass).
    pub fn per_layer(self) -> bool {
        !matches!(self, Brick::Embed | Brick::OutputNorm | Brick::LmHead)
    }
}

/// An operation the forward pass performs, named by the pass itself: what
/// the [`StageTrace`] records, independently of how bricks are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Embedding rows looked up (and the scratch buffers sized).
    EmbedLookup,
    /// RoPE angles for the batch's positions.
    RopeAngles,
    /// RMSNorm before attention.
    AttnNorm,
    /// Q, K and V matrix products.
    QkvMatmul,
    /// Q, K and V biases.
    QkvBias,
    /// Rotation of Q and K.
    RopeRotate,
    /// Keys and values written to the cache.
    KvWrite,
    /// Causal attention over the cache.
    Attend,
    /// Attention output projection.
    OMatmul,
    /// The attention residual.
    OResidual,
    /// RMSNorm before the FFN.
    FfnNorm,
    /// Gate and up products.
    GateUp,
    /// SwiGLU.
    Swiglu,
    /// Down product.
    Down,
    /// The FFN residual.
    FfnResidual,
    /// Final RMSNorm.
    OutputNorm,
    /// The logits' matrix product.
    Logits,
}

impl Stage {
    /// Every stage, in forward-pass order.
    pub const ALL: [Stage; 17] = [
        Stage::EmbedLookup,
        Stage::RopeAngles,
        Stage::AttnNorm,
        Stage::QkvMatmul,
        Stage::QkvBias,
        Stage::RopeRotate,
        Stage::KvWrite,
        Stage::Attend,
        Stage::OMatmul,
        Stage::OResidual,
        Stage::FfnNorm,
        Stage::GateUp,
        Stage::Swiglu,
        Stage::Down,
        Stage::FfnResidual,
        Stage::OutputNorm,
        Stage::Logits,
    ];

    /// The stage's name as reports write it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::EmbedLookup => "embed_lookup",
            Stage::RopeAngles => "rope_angles",
            Stage::AttnNorm => "attn_norm",
            Stage::QkvMatmul => "qkv_matmul",
            Stage::QkvBias => "qkv_bias",
            Stage::RopeRotate => "rope_rotate",
            Stage::KvWrite => "kv_write",
            Stage::Attend => "attend",
            Stage::OMatmul => "o_matmul",
            Stage::OResidual => "o_residual",
            Stage::FfnNorm => "ffn_norm",
            Stage::GateUp => "gate_up",
            Stage::Swiglu => "swiglu",
            Stage::Down => "down",
            Stage::FfnResidual => "ffn_residual",
            Stage::OutputNorm => "output_norm",
            Stage::Logits => "logits",
        }
    }
}

/// The stages a forward pass entered, each with the bricks whose spans were
/// open when it did: recorded by the pass, not derived from the spans' times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTrace {
    /// Times each stage was entered, indexed like [`Stage::ALL`].
    pub entered: [u32; Stage::ALL.len()],
    /// Times each stage was entered with no brick's span open.
    pub outside: [u32; Stage::ALL.len()],
    /// For each stage, the bricks whose spans it ran inside: bit `b as usize` per [`Brick`].
    pub inside: [u16; Stage::ALL.len()],
}

impl StageTrace {
    /// Notes that `stage` was entered while `open`'s span (if any) was open.
    fn enter(&mut self, stage: Stage, open: Option<Brick>) {
        let i = stage as usize;
        self.entered[i] += 1;
        match open {
            Some(b) => self.inside[i] |= 1 << b as usize,
            None => self.outside[i] += 1,
        }
    }

    /// Adds `other`'s entries to these.
    pub fn merge(&mut self, other: &StageTrace) {
        for i in 0..Stage::ALL.len() {
            self.entered[i] += other.entered[i];
            self.outside[i] += other.outside[i];
            self.inside[i] |= other.inside[i];
        }
    }

    /// The bricks `stage` ran inside, in pass order.
    pub fn bricks_of(&self, stage: Stage) -> impl Iterator<Item = Brick> + '_ {
        let mask = self.inside[stage as usize];
        Brick::ALL.into_iter().filter(move |&b| mask & (1 << b as usize) != 0)
    }

    /// What the trace shows against the brick registry ([`Brick::ALL`]): each
    /// stage entered outside every brick span, each registered brick inside
    /// whose span no stage ran, and an empty trace.
    pub fn violations(&self) -> Vec<String> {
        if self.entered.iter().all(|&n| n == 0) {
            return vec!["the forward pass traced no stage".into()];
        }
        let outside = Stage::ALL.iter().filter(|&&s| self.outside[s as usize] > 0).map(|&s| {
            format!(
                "stage {} ran {} of {} times outside any brick span",
                s.name(),
                self.outside[s as usize],
                self.entered[s as usize]
            )
        });
        let covered = self.inside.iter().fold(0u16, |a, &m| a | m);
        let idle = Brick::ALL
            .iter()
            .filter(|&&b| covered & (1 << b as usize) == 0)
            .map(|b| format!("brick {} is registered, but no traced stage ran inside its span", b.name()));
        outside.chain(idle).collect()
    }
}

/// Time spent in each brick over some forward passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrickTimes {
    /// Nanoseconds inside each brick's spans, indexed like [`Brick::ALL`].
    pub ns: [u64; Brick::ALL.len()],
    /// Forward passes timed.
    pub passes: u64,
    /// The stages the passes entered.
    pub trace: StageTrace,
}

impl BrickTimes {
    /// Nanoseconds spent in `brick`.
    pub fn of(&self, brick: Brick) -> u64 {
        self.ns[brick as usize]
    }

    /// Nanoseconds spent in all bricks.
    pub fn total(&self) -> u64 {
        self.ns.iter().sum()
    }

    /// Adds `other`'s times and trace to these.
    pub fn merge(&mut self, other: &BrickTimes) {
        self.ns.iter_mut().zip(&other.ns).for_each(|(a, b)| *a += b);
        self.passes += other.passes;
        self.trace.merge(&other.trace);
    }
}

/// One brick's share of some forward passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrickRow {
    /// Brick name.
    pub name: String,
    /// Mean time per token, µs.
    pub us_per_token: f64,
    /// Fraction of the bricks' total time.
    pub share: f64,
}

/// One traced stage of some forward passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRow {
    /// Stage name.
    pub name: String,
    /// Times it was entered.
    pub entered: u64,
    /// Times it was entered outside every brick span.
    pub outside: u64,
    /// The bricks whose spans it ran inside.
    pub bricks: Vec<String>,
}

/// One window of consecutive tokens: a repeated sample of the brick times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Tokens in the window.
    pub tokens: usize,
    /// Wall time measured around them, ms.
    pub wall_ms: f64,
    /// Mean µs per token of each brick, in [`Brick::ALL`] order.
    pub us_per_token: Vec<f64>,
}

impl Window {
    /// The bricks' spans over the window's wall time.
    pub fn coverage(&self) -> f64 {
        let bricks_ms = self.us_per_token.iter().sum::<f64>() * self.tokens as f64 / 1e3;
        if self.wall_ms > 0.0 {
            bricks_ms / self.wall_ms
        } else {
            0.0
        }
    }
}

/// Where the time of some forward passes went, brick by brick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Tokens the passes processed.
    pub tokens: usize,
    /// Wall time measured around the passes (sampling included), ms.
    pub wall_ms: f64,
    /// Time inside brick spans, ms.
    pub bricks_ms: f64,
    /// `bricks_ms / wall_ms`: how much of the measured time the brick spans account for.
    pub coverage: f64,
    /// Every brick, in pass order.
    pub bricks: Vec<BrickRow>,
    /// Every stage the passes entered, in pass order, with the bricks it ran inside.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageRow>,
    /// The same passes in windows of consecutive tokens, when they were sampled so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
}

impl BrickTimes {
    /// Mean µs per token of each brick over `tokens` tokens, in [`Brick::ALL`] order.
    pub fn us_per_token(&self, tokens: usize) -> Vec<f64> {
        self.ns.iter().map(|&ns| ns as f64 / 1e3 / tokens.max(1) as f64).collect()
    }

    /// The breakdown of these times over `tokens` tokens that took `wall_ms` in all.
    pub fn breakdown(&self, tokens: usize, wall_ms: f64) -> Breakdown {
        let total = self.total().max(1) as f64;
        let bricks_ms = self.total() as f64 / 1e6;
        let t = &self.trace;
        Breakdown {
            tokens,
            wall_ms,
            bricks_ms,
            coverage: if wall_ms > 0.0 { bricks_ms / wall_ms } else { 0.0 },
            bricks: Brick::ALL
                .iter()
                .zip(self.us_per_token(tokens))
                .map(|(&b, us_per_token)| BrickRow {
                    name: b.name().into(),
                    us_per_token,
                    share: self.of(b) as f64 / total,
                })
                .collect(),
            stages: Stage::ALL
                .iter()
                .filter(|&&s| t.entered[s as usize] > 0)
                .map(|&s| StageRow {
                    name: s.name().into(),
                    entered: t.entered[s as usize].into(),
                    outside: t.outside[s as usize].into(),
                    bricks: t.bricks_of(s).map(|b| b.name().into()).collect(),
                })
                .collect(),
            windows: Vec::new(),
        }
    }
}

impl Breakdown {
    /// The trace these passes recorded, read back from the stage rows (so a
    /// breakdown read from a report is judged like a fresh one).
    pub fn trace(&self) -> StageTrace {
        let mut t = StageTrace::default();
        for row in &self.stages {
            let Some(s) = Stage::ALL.into_iter().find(|s| s.name() == row.name) else { continue };
            let i = s as usize;
            t.entered[i] = u32::try_from(row.entered).unwrap_or(u32::MAX);
            t.outside[i] = u32::try_from(row.outside).unwrap_or(u32::MAX);
            t.inside[i] = Brick::ALL
                .iter()
                .filter(|b| row.bricks.iter().any(|n| n == b.name()))
                .fold(0, |m, &b| m | 1 << b as usize);
        }
        t
    }
}

/// Times each brick's span and traces the stages of one forward pass. Without
/// times to fill it does nothing, not even read the clock.
pub(crate) struct Stopwatch<'a> {
    times: Option<&'a mut BrickTimes>,
    open: Option<(Brick, Instant)>,
}

impl<'a> Stopwatch<'a> {
    /// Starts timing a forward pass into `times`, when given.
    pub(crate) fn start(times: Option<&'a mut BrickTimes>) -> Stopwatch<'a> {
        Stopwatch { times, open: None }
    }

    /// Opens `brick`'s span, closing any span still open at the same instant.
    #[inline]
    pub(crate) fn begin(&mut self, brick: Brick) {
        if self.times.is_some() {
            let now = Instant::now();
            self.close(now);
            self.open = Some((brick, now));
        }
    }

    /// Closes the open span, charging its time to its brick.
    #[inline]
    pub(crate) fn end(&mut self) {
        if self.times.is_some() {
            self.close(Instant::now());
        }
    }

    /// Charges the open span, if any, up to `now` to its brick.
    fn close(&mut self, now: Instant) {
        if let (Some(times), Some((brick, since))) = (self.times.as_deref_mut(), self.open.take()) {
            times.ns[brick as usize] += (now - since).as_nanos() as u64;
        }
    }

    /// Records that the pass entered `stage`, inside the open span if any.
    #[inline]
    pub(crate) fn stage(&mut self, stage: Stage) {
        if let Some(times) = self.times.as_deref_mut() {
            times.trace.enter(stage, self.open.map(|(b, _)| b));
        }
    }

    /// Ends the pass: closes the open span and counts the pass.
    pub(crate) fn finish(mut self) {
        self.end();
        if let Some(times) = self.times {
            times.passes += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_in_pass_order() {
        let names: Vec<&str> = Brick::ALL.iter().map(|b| b.name()).collect();
        assert_eq!(
            names,
            ["embed", "attn_norm", "qkv", "rope", "attention", "o_proj", "ffn_norm", "ffn", "output_norm", "lm_head"]
        );
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for (i, b) in Brick::ALL.iter().enumerate() {
            assert_eq!(*b as usize, i);
        }
    }

    #[test]
    fn spans_charge_their_own_time_and_leave_gaps_uncharged() {
        let mut times = BrickTimes::default();
        let clock = Instant::now();
        let mut sw = Stopwatch::start(Some(&mut times));
        sw.begin(Brick::Ffn);
        sw.stage(Stage::Down);
        std::thread::sleep(std::time::Duration::from_millis(3));
        sw.end();
        sw.stage(Stage::Swiglu); // outside every span
        std::thread::sleep(std::time::Duration::from_millis(3));
        sw.begin(Brick::Rope);
        sw.finish();
        let wall = clock.elapsed().as_nanos() as u64;
        assert!(times.of(Brick::Ffn) >= 3_000_000, "{times:?}");
        assert!(times.of(Brick::Rope) < 3_000_000, "the gap is charged to no brick: {times:?}");
        assert!(wall >= times.total() + 3_000_000, "{times:?}");
        assert_eq!((times.passes, times.total()), (1, times.of(Brick::Ffn) + times.of(Brick::Rope)));
        let t = times.trace;
        assert_eq!(t.bricks_of(Stage::Down).collect::<Vec<_>>(), [Brick::Ffn]);
        assert_eq!((t.entered[Stage::Swiglu as usize], t.outside[Stage::Swiglu as usize]), (1, 1));
        let bad = t.violations();
        assert!(bad.iter().any(|v| v.starts_with("stage swiglu ran 1 of 1 times outside")), "{bad:?}");
        assert!(bad.iter().any(|v| v.starts_with("brick embed is registered")), "{bad:?}");
        assert!(!bad.iter().any(|v| v.starts_with("brick ffn ")), "{bad:?}");
        assert_eq!(times.breakdown(1, 7.0).trace(), t);
    }

    #[test]
    fn a_breakdown_divides_by_tokens_and_measures_coverage() {
        let mut times = BrickTimes::default();
        times.ns[Brick::Ffn as usize] = 3_000_000;
        times.ns[Brick::LmHead as usize] = 1_000_000;
        let b = times.breakdown(2, 5.0);
        assert_eq!((b.tokens, b.bricks.len()), (2, Brick::ALL.len()));
        assert!((b.bricks_ms - 4.0).abs() < 1e-12 && (b.coverage - 0.8).abs() < 1e-12);
        let ffn = &b.bricks[Brick::Ffn as usize];
        assert_eq!((ffn.name.as_str(), ffn.us_per_token, ffn.share), ("ffn", 1500.0, 0.75));
        assert_eq!(BrickTimes::default().breakdown(0, 0.0).coverage, 0.0);
    }

    #[test]
    fn a_stopwatch_without_times_records_nothing() {
        let mut sw = Stopwatch::start(None);
        sw.begin(Brick::Qkv);
        sw.stage(Stage::QkvMatmul);
        assert!(sw.open.is_none());
        sw.finish();
        assert_eq!(StageTrace::default().violations(), ["the forward pass traced no stage"]);
    }
}
