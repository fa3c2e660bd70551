//! `falsify top`: a live brick profiler of the embedded engine. It decodes
//! continuously with every brick timed, and shows each brick's time per
//! token against its roofline budget, its score and grade, and the
//! bottleneck: in a terminal UI ([`tui`]) or as one JSON document
//! ([`headless`]).

pub mod headless;
pub mod live;
pub mod quality;
pub mod tui;

use crate::bench::bricks::{budgets, costs_per_brick, BrickBudget};
use crate::bench::roofline::HostProbe;
use crate::model::Model;
use crate::provenance::Host;

/// What a profiling session decodes and measures against.
pub struct Session<'m> {
    /// The model.
    pub model: &'m Model,
    /// Its file, as given.
    pub model_path: String,
    /// The prompt decoding starts after.
    pub prompt: Vec<u32>,
    /// Positions decoded per round before the cache is cut back to the prompt.
    pub window: usize,
    /// Host facts.
    pub host: Host,
    /// The host's measured ceilings.
    pub probe: HostProbe,
    /// Kernels in use.
    pub kernels: String,
    /// Worker threads.
    pub threads: usize,
    /// Budget over roofline.
    pub allowance: f64,
    /// Each brick's roofline and budget at the round's mean context.
    pub budgets: Vec<BrickBudget>,
}

impl<'m> Session<'m> {
    /// A session on `model` after `prompt`, with budgets of `allowance` × the roofline on `probe`.
    pub fn new(
        model: &'m Model,
        model_path: &str,
        prompt: Vec<u32>,
        window: usize,
        probe: HostProbe,
        allowance: f64,
    ) -> Session<'m> {
        let window = window.max(1);
        // A window beyond the context is refused when decoding starts (live::Decoder::new).
        let mean_context = prompt.len().saturating_add(window / 2).min(model.config.context_length);
        let budgets = budgets(&costs_per_brick(model, mean_context), &probe, allowance);
        Session {
            model,
            model_path: model_path.into(),
            prompt,
            window,
            host: Host::detect(),
            probe,
            kernels: model.kernels.name().into(),
            threads: model.threads(),
            allowance,
            budgets,
        }
    }
}
