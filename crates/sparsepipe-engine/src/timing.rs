//! Load-time timing of one operator on a node's inputs, to choose between two implementations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use rayon::ThreadPool;
use tract_core::internal::*;
use tract_linalg::multithread::Executor;

/// Rows a symbolic axis is timed at (one 128-token sequence): plans that serve every length
/// are chosen for a typical one.
pub const SYMBOLIC_ROWS: usize = 128;

/// The concrete shape `fact` is timed at: its symbolic axes at 1, except the first at
/// [`SYMBOLIC_ROWS`].
pub fn timing_shape(fact: &TypedFact) -> TVec<usize> {
    let mut first = true;
    fact.shape
        .iter()
        .map(|d| match d.to_usize() {
            Ok(v) => v,
            Err(_) if std::mem::take(&mut first) => SYMBOLIC_ROWS,
            Err(_) => 1,
        })
        .collect()
}

/// A one-op plan of `op` on a node's inputs — `facts`, with the one at `data` fed a tensor of
/// `shape` and every other a constant (or, with `data_only`, the data alone: an op holding its
/// weight) — optimized by tract and run on `pool` the way the engine runs its plans, with the
/// input it is timed on.
fn one_op_plan(
    facts: &[TypedFact],
    (data, data_only): (usize, bool),
    shape: &[usize],
    op: Box<dyn TypedOp>,
    pool: &Arc<ThreadPool>,
) -> TractResult<(Arc<TypedRunnableModel>, TValue)> {
    let mut model = TypedModel::default();
    let mut wires = tvec![];
    for (slot, fact) in facts.iter().enumerate().filter(|(slot, _)| !data_only || *slot == data) {
        let wire = if slot == data {
            model.add_source("x", f32::fact(shape))?
        } else {
            let value = fact.konst.clone().context("a weight input is not a constant")?;
            model.add_const(format!("c{slot}"), value)?
        };
        wires.push(wire);
    }
    let out = model.wire_node("op", op, &wires)?;
    model.select_output_outlets(&out)?;
    let options = RunOptions { executor: Some(Executor::MultiThread(pool.clone())), ..Default::default() };
    let plan = model.into_optimized()?.into_runnable_with_options(&options)?;
    let x = Tensor::from_shape(shape, &vec![0.5f32; shape.iter().product()])?;
    Ok((plan, x.into_tvalue()))
}

/// Runs of each plan timed, after one warm-up run each, alternating between the plans (the
/// order swapped each round) so a change of clock speed or a neighbour's load during the timing
/// falls on both.
const TIMED_ROUNDS: usize = 3;

/// Best seconds of each plan over [`TIMED_ROUNDS`] interleaved runs on `pool`.
fn time_interleaved(plans: [&(Arc<TypedRunnableModel>, TValue); 2], pool: &Arc<ThreadPool>) -> TractResult<[f64; 2]> {
    pool.install(|| {
        for (plan, x) in plans {
            plan.run(tvec![x.clone()])?;
        }
        let mut best = [f64::INFINITY; 2];
        for round in 0..TIMED_ROUNDS {
            for i in [round % 2, 1 - round % 2] {
                let (plan, x) = plans[i];
                let start = Instant::now();
                plan.run(tvec![x.clone()])?;
                best[i] = best[i].min(start.elapsed().as_secs_f64());
            }
        }
        Ok(best)
    })
}

/// Whether tract's `theirs` (fed every input in `facts`, the weights as constants) runs faster
/// than `ours` (built only when timed; it holds its weight and takes the data alone), with the
/// input at slot `data` fed a tensor of `shape`, timed interleaved ([`time_interleaved`]). Timed
/// once per `key` in this process (see [`remembered`]); a shape either cannot be timed on stays
/// with tract.
pub fn tract_is_faster(
    key: ChoiceKey,
    facts: &[TypedFact],
    (data, shape): (usize, &[usize]),
    theirs: Box<dyn TypedOp>,
    ours: impl FnOnce() -> TractResult<Box<dyn TypedOp>>,
    pool: &Arc<ThreadPool>,
) -> bool {
    remembered(key, || {
        let Ok(ours) = ours() else { return true };
        let plans = (
            one_op_plan(facts, (data, false), shape, theirs, pool),
            one_op_plan(facts, (data, true), shape, ours, pool),
        );
        let (Ok(on_tract), Ok(on_ours)) = plans else { return true };
        match time_interleaved([&on_tract, &on_ours], pool) {
            Ok([tract, ours]) => tract < ours,
            Err(_) => true,
        }
    })
}

/// What a choice between implementations was made for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChoiceKey {
    /// The einsum's axes.
    pub pattern: String,
    /// The data shape it was timed on.
    pub data: TVec<usize>,
    pub weight: Vec<usize>,
    pub threads: usize,
    pub isa: &'static str,
}

/// The choice made for `key` earlier in this process, else `decide()` (run without holding the
/// lock) remembered: every engine this process loads runs a shape the same way on the same
/// threads and ISA, so loading a model twice gives the same sums bit for bit, and times it once.
pub fn remembered(key: ChoiceKey, decide: impl FnOnce() -> bool) -> bool {
    static CHOICES: OnceLock<Mutex<HashMap<ChoiceKey, bool>>> = OnceLock::new();
    let choices = CHOICES.get_or_init(Default::default);
    if let Some(&chosen) = choices.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return chosen;
    }
    let chosen = decide();
    *choices.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_insert(chosen)
}
