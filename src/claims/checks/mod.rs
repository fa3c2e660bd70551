//! The check kinds: each turns a claim's typed parameters and the run's
//! [`Context`] into an [`Outcome`]. Every kind is split into an *observe* step
//! (which measures, and may need the model or llama.cpp) and a pure *judge*
//! step (which decides from the observation), so the falsifiability audit can
//! feed each kind a counterexample without hardware and see it fail.

pub mod agreement;
pub mod apr;
pub mod bricks;
pub mod contract;
pub mod cuda;
pub mod device;
pub mod exports;
pub mod judge;
pub mod kv_pages;
pub mod layout;
pub mod meta;
pub mod perf;
pub mod reference;
pub mod resources;
pub mod serving;
#[cfg(test)]
mod tests;
pub mod top;
pub mod wiring;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::Table;

use super::{Context, Outcome, Unmet};

/// Parameters naming only a model (its size: `0.5b`, `1.5b`, …).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    /// Model size.
    pub model: String,
}

/// No parameters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// A check kind: a name, what its parameters look like, and how it runs.
pub trait Check {
    /// The name claims use in `check = "…"`.
    const NAME: &'static str;
    /// What it checks, one line.
    const DOC: &'static str;
    /// Its parameters, as a hint for claim authors.
    const PARAMS: &'static str;
    /// Its typed parameters.
    type Params: DeserializeOwned;
    /// Measures and judges.
    fn run(p: &Self::Params, cx: &mut Context) -> Result<Outcome, Unmet>;
}

/// A registered check kind, type-erased.
#[derive(Clone, Copy)]
pub struct Kind {
    /// Its name.
    pub name: &'static str,
    /// What it checks.
    pub doc: &'static str,
    /// Its parameters, as a hint.
    pub params_hint: &'static str,
    /// Checks that a parameter table has the kind's types.
    pub validate: fn(&Table) -> Result<(), String>,
    /// Runs it.
    pub run: fn(&Table, &mut Context) -> Outcome,
}

/// Parses a parameter table into a kind's typed parameters.
pub fn parse<P: DeserializeOwned>(t: &Table) -> Result<P, String> {
    toml::Value::Table(t.clone()).try_into().map_err(|e: toml::de::Error| e.message().trim_end().to_owned())
}

fn validate<C: Check>(t: &Table) -> Result<(), String> {
    parse::<C::Params>(t).map(|_| ())
}

fn run<C: Check>(t: &Table, cx: &mut Context) -> Outcome {
    match parse::<C::Params>(t) {
        Ok(p) => C::run(&p, cx).unwrap_or_else(Unmet::outcome),
        Err(e) => Outcome::error(format!("params of `{}`: {e}", C::NAME)),
    }
}

/// The kind `C`, type-erased for the registry.
pub fn kind<C: Check>() -> Kind {
    Kind { name: C::NAME, doc: C::DOC, params_hint: C::PARAMS, validate: validate::<C>, run: run::<C> }
}

/// Every check kind by name.
#[derive(Clone)]
pub struct Registry {
    kinds: Vec<Kind>,
}

impl Registry {
    /// The built-in kinds.
    pub fn builtin() -> Registry {
        let mut kinds = Vec::new();
        kinds.extend(perf::kinds());
        kinds.extend(agreement::kinds());
        kinds.extend(reference::kinds());
        kinds.extend(resources::kinds());
        kinds.extend(kv_pages::kinds());
        kinds.extend(layout::kinds());
        kinds.extend(meta::kinds());
        kinds.extend(bricks::kinds());
        kinds.extend(contract::kinds());
        kinds.extend(wiring::kinds());
        kinds.extend(exports::kinds());
        kinds.extend(top::kinds());
        kinds.extend(serving::kinds());
        kinds.extend(apr::kinds());
        kinds.extend(cuda::kinds());
        kinds.extend(device::kinds());
        Registry { kinds }
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<&Kind> {
        self.kinds.iter().find(|k| k.name == name)
    }

    /// Every kind's name, in registry order.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name).collect()
    }
}
