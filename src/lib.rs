//! falsify: numbered, falsifiable claims about LLM inference, run for real.
//!
//! The modules follow the data's path: [`gguf`] reads model files, [`quant`]
//! decodes their tensor formats (the scalar reference) and [`kernels`] computes
//! with them fast, [`model`] runs the Qwen2 transformer, [`tokenizer`] and
//! [`sample`] turn text into tokens and back, and [`engine`] drives generation
//! with timings; [`serve`] puts the engine behind an OpenAI-compatible HTTP
//! API. [`baseline`] runs the engines compared against, [`agreement`]
//! and [`bench`](mod@bench) measure against them, using [`stats`]; [`provenance`] says
//! where every result came from and [`report`] writes results.

#![warn(missing_docs)]

pub mod agreement;
pub mod apr;
pub mod baseline;
pub mod bench;
pub mod claims;
pub mod engine;
pub mod engines;
pub mod gguf;
pub mod kernels;
pub mod load;
pub mod model;
pub mod provenance;
pub mod quant;
pub mod record;
pub mod report;
pub mod rng;
pub mod sample;
pub mod serve;
pub mod stats;
pub mod synth;
#[cfg(test)]
mod testing;
pub mod tokenizer;
pub mod top;
pub mod util;
