//! Bricks fed one case at a time: a brick of the engine's registry run on
//! inputs of chosen shapes and contents (wrong widths, missing values, no
//! rows, a NaN, a token outside the vocabulary), so a property test can show
//! that bad input gets a [`BrickError`] and never a panic.

use serde::Serialize;

use super::bricks::{Brick, Stopwatch};
use super::contract::{kind::*, BrickError, Rows, View};
use super::pipeline::{Pass, Projections, Rotated};
use super::Model;
use crate::rng::SplitMix64;

/// What is wrong with a case's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Defect {
    /// Nothing: the brick must run.
    None,
    /// One activation's rows are `by` values wider than the brick declares.
    Wider {
        /// Extra values per row.
        by: usize,
    },
    /// One activation holds `by` values fewer than its rows need.
    Short {
        /// Values missing.
        by: usize,
    },
    /// The batch has no rows.
    Empty,
    /// One activation holds a NaN.
    Nan,
    /// A token outside the vocabulary (the embedding only).
    BadToken,
}

impl Defect {
    /// The [`BrickError`] variant the case must end in (`None`: it must run).
    pub fn expected(self) -> Option<&'static str> {
        match self {
            Defect::None => None,
            Defect::Wider { .. } | Defect::Short { .. } => Some("shape"),
            Defect::Empty => Some("empty"),
            Defect::Nan => Some("non_finite"),
            Defect::BadToken => Some("model"),
        }
    }

    /// Whether the case's input has the wrong shape.
    pub fn is_shape(self) -> bool {
        matches!(self, Defect::Wider { .. } | Defect::Short { .. })
    }
}

/// One case: a brick, the batch's rows, which of its activations is
/// defective and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Case {
    /// The brick.
    pub brick: Brick,
    /// Rows of the batch.
    pub rows: usize,
    /// Which activation input carries the defect (taken modulo the brick's count).
    pub tensor: usize,
    /// The defect.
    pub defect: Defect,
}

impl Case {
    /// A case drawn from `rng`: any brick, 1 to 4 rows, a third of the cases sound.
    pub fn draw(rng: &mut SplitMix64) -> Case {
        let brick = Brick::ALL[rng.below(Brick::ALL.len())];
        let defect = match rng.below(9) {
            0..=2 => Defect::None,
            3 => Defect::Wider { by: 1 + rng.below(64) },
            4 | 8 => Defect::Short { by: 1 + rng.below(64) },
            5 => Defect::Empty,
            _ => Defect::Nan,
        };
        // The embedding takes token ids, no activation: only their number and values can be wrong.
        let defect = match (brick, defect) {
            (Brick::Embed, Defect::Wider { .. } | Defect::Short { .. } | Defect::Nan) => Defect::BadToken,
            (_, d) => d,
        };
        Case { brick, rows: 1 + rng.below(4), tensor: rng.below(3), defect }
    }
}

/// Runs `case` on `model`'s own bricks (layer 0) with a fresh cache.
pub fn run_case(model: &Model, case: &Case) -> Result<(), BrickError> {
    let c = &model.config;
    let rows = if case.defect == Defect::Empty { 0 } else { case.rows };
    let mut tokens: Vec<u32> = (0..rows as u32).map(|i| i % c.vocab_size as u32).collect();
    if case.defect == Defect::BadToken {
        tokens[0] = c.vocab_size as u32;
    }
    let mut cache = model.try_new_cache(case.rows + 1)?;
    let mut sequences = [(&tokens[..], &mut cache)];
    let mut pass = Pass::new(model, &mut sequences, Stopwatch::start(None), None);
    let p = &model.pipeline;
    let l = model.layers.first().ok_or(BrickError::Empty { brick: "pass", tensor: "layers" })?;
    let (d, kv) = (c.n_embd, c.kv_dim());
    // The activation inputs of the brick, each `rows` rows of its width; the
    // defect goes into one of them.
    let widths: &[usize] = match case.brick {
        Brick::Embed => &[],
        Brick::Qkv | Brick::AttnNorm | Brick::FfnNorm | Brick::OutputNorm | Brick::LmHead => &[d],
        Brick::Rope | Brick::Attention => &[d, kv, kv],
        Brick::OProj | Brick::Ffn => &[d, d],
    };
    let mut inputs: Vec<(Vec<f32>, usize)> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let mine = !widths.is_empty() && i == case.tensor % widths.len();
            let width = match case.defect {
                Defect::Wider { by } if mine => w + by,
                _ => w,
            };
            let mut len = rows * width;
            if let Defect::Short { by } = case.defect {
                // Short, not empty: at least one value is left.
                len = if mine { len.saturating_sub(by).max(1) } else { len };
            }
            let mut v: Vec<f32> = (0..len).map(|j| ((j % 17) as f32 - 8.0) / 64.0).collect();
            if case.defect == Defect::Nan && mine && !v.is_empty() {
                let at = len / 2;
                v[at] = f32::NAN;
            }
            (v, width)
        })
        .collect();
    let (mut out1, mut out2, mut out3) = (Vec::new(), Vec::new(), Vec::new());
    let (o1, o2, o3) = (&mut out1, &mut out2, &mut out3);
    let mut it = inputs.iter_mut().map(|(v, w)| (&mut v[..], *w));
    let mut next = || it.next().unwrap_or((&mut [][..], 0));
    match case.brick {
        Brick::Embed => pass.apply(&p.embed, None, (o1,)).map(drop),
        Brick::AttnNorm | Brick::FfnNorm => {
            let (h, w) = next();
            let (brick, weight) = match case.brick {
                Brick::AttnNorm => (&p.attn_norm, &l.attn_norm),
                _ => (&p.ffn_norm, &l.ffn_norm),
            };
            pass.apply(brick, Some(0), (View::<Hidden>::new(h, w), &weight[..], o1)).map(drop)
        }
        Brick::Qkv => {
            let (h, w) = next();
            pass.apply(&p.qkv, Some(0), (Rows::<Normed>::new(h, w), l, o1, o2, o3)).map(drop)
        }
        Brick::Rope => {
            let ((q, wq), (k, wk), (v, wv)) = (next(), next(), next());
            let angles = p.rope.angles(&mut pass, o1, o2)?;
            let projections = Projections { q: Rows::new(q, wq), k: Rows::new(k, wk), v: Rows::new(v, wv) };
            pass.apply(&p.rope, Some(0), (projections, angles)).map(drop)
        }
        Brick::Attention => {
            let ((q, wq), (k, wk), (v, wv)) = (next(), next(), next());
            let rotated = Rotated { q: Rows::new(q, wq), k: Rows::new(k, wk), v: Rows::new(v, wv) };
            pass.apply(&p.attention, Some(0), (rotated, 0, o1)).map(drop)
        }
        Brick::OProj => {
            let ((m, wm), (h, wh)) = (next(), next());
            pass.apply(&p.o_proj, Some(0), (Rows::<Mixed>::new(m, wm), &l.wo, o1, Rows::<Hidden>::new(h, wh))).map(drop)
        }
        Brick::Ffn => {
            let ((n, wn), (h, wh)) = (next(), next());
            let input = (Rows::<Normed>::new(n, wn), l, o1, o2, o3, Rows::<Hidden>::new(h, wh));
            pass.apply(&p.ffn, Some(0), input).map(drop)
        }
        Brick::OutputNorm => {
            let (h, w) = next();
            pass.apply(&p.output_norm, None, (Rows::<Hidden>::new(h, w), &model.output_norm[..])).map(drop)
        }
        Brick::LmHead => {
            let (h, w) = next();
            pass.apply(&p.lm_head, None, (Rows::<FinalNormed>::new(h, w), o1)).map(drop)
        }
    }
}

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "ended")]
pub enum Ending {
    /// The brick ran.
    Ran,
    /// The brick returned an error of this variant.
    Refused {
        /// The [`BrickError`] variant.
        variant: String,
    },
    /// The brick panicked.
    Panicked {
        /// The panic's message.
        message: String,
    },
}

/// Runs `subject` on `case`, catching a panic as an [`Ending::Panicked`].
pub fn ending(subject: &dyn Fn(&Case) -> Result<(), BrickError>, case: &Case) -> Ending {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| subject(case))) {
        Ok(Ok(())) => Ending::Ran,
        Ok(Err(e)) => Ending::Refused { variant: e.variant().into() },
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            Ending::Panicked { message }
        }
    }
}
