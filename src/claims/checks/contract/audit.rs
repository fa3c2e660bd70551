//! The falsifiability audit's cases for the brick kinds: each runs its real
//! observation on the small synthetic model's bricks, then on a deliberately
//! broken subject (a brick declaring nothing, a verify() that skips an
//! assertion, a zero budget, a duplicate name, a brick that panics or pads a
//! short input, a kernel off by one ulp, a type that is not `Sync`, a
//! mis-wiring that compiles).

use super::super::wiring;
use super::*;
use crate::model::contract::{Failure, Observation};
use crate::model::BrickCost;

/// A fault planted in a brick of the registry.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    NoAssertions,
    VerifySkipsBudget,
    ZeroCost,
    NamedQkv,
}

/// A registered brick with `fault` planted.
struct Broken<'a> {
    inner: &'a dyn BrickSpec,
    fault: Fault,
}

impl BrickSpec for Broken<'_> {
    fn id(&self) -> Brick {
        match self.fault {
            Fault::NamedQkv => Brick::Qkv,
            _ => self.inner.id(),
        }
    }
    fn assertions(&self) -> &[Assertion] {
        match self.fault {
            Fault::NoAssertions => &[],
            _ => self.inner.assertions(),
        }
    }
    fn cost(&self, model: &Model, layer: Option<usize>, ctx: usize) -> BrickCost {
        match self.fault {
            Fault::ZeroCost => BrickCost::ZERO,
            _ => self.inner.cost(model, layer, ctx),
        }
    }
    fn verify(&self, seen: &Observation) -> Vec<Failure> {
        let all = self.inner.verify(seen);
        match self.fault {
            Fault::VerifySkipsBudget => all.into_iter().filter(|f| f.assertion != Assertion::WithinBudget).collect(),
            _ => all,
        }
    }
}

fn roofline() -> Roofline {
    Roofline { read_gb_s: 30.0, int8_gops: 200.0, f32_gflops: 100.0 }
}

/// The model's bricks and their first runs in a verified pass.
fn registry_and_runs(model: &Model) -> Vec<(Brick, Observation)> {
    let mut v = Verification::new(roofline(), 1.5);
    verified_pass(model, &[1, 2, 3], &mut v).unwrap();
    v.first_seen
}

/// The registry with the brick at `at` (pass order) broken by `fault`.
fn judge_broken(model: &Model, at: usize, fault: Fault, judge: &dyn Fn(&[&dyn BrickSpec]) -> Outcome) -> Outcome {
    let bricks = model.bricks();
    let broken = Broken { inner: bricks[at], fault };
    let mut list: Vec<&dyn BrickSpec> = bricks.to_vec();
    list[at] = &broken;
    judge(&list)
}

pub(crate) fn assertions() -> (Outcome, Outcome) {
    let m = crate::model::tests::tied_model();
    let seen = registry_and_runs(&m);
    let good = judge_assertions(&m.bricks(), &seen);
    (good, judge_broken(&m, 5, Fault::NoAssertions, &|b| judge_assertions(b, &seen)))
}

pub(crate) fn verify() -> (Outcome, Outcome) {
    let m = crate::model::tests::tied_model();
    let seen = registry_and_runs(&m);
    let good = judge_verify(&m.bricks(), &seen);
    (good, judge_broken(&m, 7, Fault::VerifySkipsBudget, &|b| judge_verify(b, &seen)))
}

pub(crate) fn budgets() -> (Outcome, Outcome) {
    let m = crate::model::tests::tied_model();
    let good = judge_budgets(&m, &m.bricks(), &roofline(), 1.5);
    (good, judge_broken(&m, 2, Fault::ZeroCost, &|b| judge_budgets(&m, b, &roofline(), 1.5)))
}

pub(crate) fn names() -> (Outcome, Outcome) {
    let m = crate::model::tests::tied_model();
    (judge_names(&m.bricks()), judge_broken(&m, 4, Fault::NamedQkv, &judge_names))
}

pub(crate) fn no_panic() -> (Outcome, Outcome) {
    let m = crate::model::tests::tied_model();
    let good = run_cases(&|c| probe::run_case(&m, c), 300, 6);
    // A brick that reads its first row without checking there is one.
    let unchecked = run_cases(
        &|c| match c.defect {
            Defect::Empty => panic!("index out of bounds: the len is 0 but the index is 0"),
            _ => probe::run_case(&m, c),
        },
        300,
        6,
    );
    (judge_no_panic(&good), judge_no_panic(&unchecked))
}

pub(crate) fn shape_errors() -> (Outcome, Outcome) {
    let m = crate::model::tests::tied_model();
    let good = run_cases(&|c| probe::run_case(&m, c), 300, 18);
    // A brick that pads a short input with zeros and runs.
    let padding = run_cases(
        &|c| match c.defect {
            Defect::Short { .. } => probe::run_case(&m, &Case { defect: Defect::None, ..*c }),
            _ => probe::run_case(&m, c),
        },
        300,
        18,
    );
    (judge_shape_errors(&good), judge_shape_errors(&padding))
}

pub(crate) fn errors() -> (Outcome, Outcome) {
    let m = crate::model::tests::tied_model();
    let produced = provoke(&m, &crate::bench::roofline::HostProbe::stated(30.0, 200.0, 100.0)).unwrap();
    let good = judge_errors(&BrickError::VARIANTS, &produced);
    // An error type with a variant nothing produces.
    let mut declared = BrickError::VARIANTS.to_vec();
    declared.push("unreachable");
    (good, judge_errors(&declared, &produced))
}

pub(crate) fn reference() -> (Outcome, Outcome) {
    let mut m = crate::model::tests::tied_model();
    let tokens = [1, 2, 3, 4];
    let fast = outputs_on(&mut m, Kernels::detect(), &tokens).unwrap();
    let reference = outputs_on(&mut m, Kernels::SCALAR, &tokens).unwrap();
    let off = outputs_on(&mut m, Kernels::flip_bit(0), &tokens).unwrap();
    (judge_reference(&fast, &reference, 1e-5, "fast"), judge_reference(&off, &reference, 1e-9, "flip-bit"))
}

pub(crate) fn determinism() -> (Outcome, Outcome) {
    let mut m = crate::model::tests::tied_model();
    let tokens = [5, 6, 7];
    let set = Kernels::detect();
    let first = outputs_on(&mut m, set, &tokens).unwrap();
    let again = vec![outputs_on(&mut m, set, &tokens).unwrap()];
    // A brick whose result changes from run to run: the second pass's kernels are off by one ulp.
    let changed = vec![outputs_on(&mut m, Kernels::flip_bit(0), &tokens).unwrap()];
    (judge_determinism(&first, &again, 2), judge_determinism(&first, &changed, 2))
}

pub(crate) fn wiring() -> (Outcome, Outcome) {
    let c = |name: &str, src: &str| wiring::compile(name, src, None).unwrap();
    let wired = c("wired", "pub fn half(x: f32) -> f32 { x / 2.0 }");
    let refused = c("a string where a number goes", "pub fn half() -> f32 { \"x\" }");
    let accepted = c("a mis-wiring that compiles", "pub fn half() -> f32 { 1.0 }");
    (wiring::judge_wiring(&wired, &[refused]), wiring::judge_wiring(&wired, &[accepted]))
}

pub(crate) fn send_sync() -> (Outcome, Outcome) {
    let check = |types: &[&str]| {
        let compiled = wiring::compile("send + sync", &wiring::send_sync_source(types), None).unwrap();
        wiring::judge_send_sync(&compiled, types)
    };
    (check(&["std::sync::Arc<u8>", "std::vec::Vec<f32>"]), check(&["std::vec::Vec<f32>", "std::rc::Rc<u8>"]))
}
