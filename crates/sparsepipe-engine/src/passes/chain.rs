//! Runs two of our linears back to back as one op when the second reads nothing but the first's
//! output (a transformer's feed-forward block: up-projection with GELU, then down-projection,
//! often with a residual folded into the second). Both contract the last axis of their input, so
//! a tile of rows goes through both weights while its intermediate stays in cache: it is never
//! transposed, written out or read back. Each output is the same sums as before.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::element_wise::ElementWiseOp;

use super::pattern::{is_tract_weight_matmul, miss, miss_at, only_succ, Fit, ON_TRACT_MATMUL};
use super::Miss;
use crate::op::{ChainedLinear, WeightLinear};

/// One pair of linears now run as one op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chained {
    /// The first linear's plan node.
    pub first: String,
    /// The second linear's plan node.
    pub second: String,
    /// The node that replaces both.
    pub node: String,
}

/// Chains every eligible pair of linears of `model`; also returns each other weight matmul fed
/// by one other weight matmul (directly or through element-wise ops) with why they stay apart.
pub fn run(model: &mut TypedModel) -> TractResult<(Vec<Chained>, Vec<Miss>)> {
    let (mut chained, mut misses) = (vec![], vec![]);
    for id in model.eval_order()? {
        let Some(found) = find(model, id)? else { continue };
        let Some((first_id, op)) = Miss::keep(found, &model.node(id).name, &mut misses) else { continue };
        let (first, second) = (model.node(first_id), model.node(id));
        let found =
            Chained { first: first.name.clone(), second: second.name.clone(), node: format!("{}.chain", first.name) };
        let mut patch = TypedModelPatch::default();
        let mut taps = tvec![patch.tap_model(model, first.inputs[0])?];
        if let Some(&r) = second.inputs.get(1) {
            taps.push(patch.tap_model(model, r)?);
        }
        let y = patch.wire_node(&found.node, op, &taps)?;
        patch.shunt_outside(model, OutletId::new(id, 0), y[0])?;
        patch.apply(model)?;
        chained.push(found);
    }
    model.compact()?;
    Ok((chained, misses))
}

/// Whether `lin`, reading an input of rank `rank`, contracts its last axis alone, so that its
/// output is row-major `[rows, N]` in memory: the `weight_matmul` pass only maps outputs laid out
/// as the input's other axes in order and then N, give or take size-1 axes (the batch axis tract
/// squeezes away when the batch is fixed at 1).
fn rows_in_rows_out(lin: &WeightLinear, rank: usize) -> bool {
    lin.k_axes == 1 && lin.k_start + 1 == rank
}

/// Whether `node` multiplies by a constant weight, on our kernels or on tract's.
fn is_weight_matmul(model: &TypedModel, node: &TypedNode) -> bool {
    node.op_is::<WeightLinear>() || is_tract_weight_matmul(model, node)
}

/// When `input` comes from exactly one weight matmul through nothing but element-wise ops (a
/// handful at most): that matmul and the names of those ops.
fn elementwise_source(model: &TypedModel, input: OutletId) -> TractResult<Option<(usize, Vec<String>)>> {
    let (mut source, mut between, mut todo, mut seen) = (None, vec![], vec![input.node], vec![]);
    while let Some(id) = todo.pop() {
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let node = model.node(id);
        if is_weight_matmul(model, node) {
            if source.is_some_and(|s| s != id) {
                return Ok(None);
            }
            source = Some(id);
            continue;
        }
        if !(node.op_is::<TypedBinOp>() || node.op_is::<ElementWiseOp>()) || seen.len() > 24 {
            return Ok(None);
        }
        let name = node.op.name().to_string();
        if !between.contains(&name) {
            between.push(name);
        }
        for i in &node.inputs {
            if model.outlet_fact(*i)?.konst.is_none() {
                todo.push(i.node);
            }
        }
    }
    Ok(source.map(|s| (s, between)))
}

/// For a weight matmul node fed by another one: the linear before it that it can run with and
/// the op doing both, or why they cannot be; `None` when no weight matmul feeds it.
fn find(model: &TypedModel, id: usize) -> TractResult<Option<Fit<(usize, ChainedLinear)>>> {
    let Some(node) = model.nodes().get(id) else { return Ok(None) };
    if !is_weight_matmul(model, node) {
        return Ok(None);
    }
    let Some(&mid) = node.inputs.iter().find(|i| model.outlet_fact(**i).is_ok_and(|f| f.konst.is_none())) else {
        return Ok(None);
    };
    let producer = model.node(mid.node);
    if !is_weight_matmul(model, producer) {
        let Some((source, between)) = elementwise_source(model, mid)? else { return Ok(None) };
        for n in [model.node(source), node] {
            if !n.op_is::<WeightLinear>() {
                return Ok(Some(miss_at(ON_TRACT_MATMUL, n)?));
            }
        }
        let reason = format!(
            "it reads the weight matmul before it through {} that no linear's epilogue folds (a bias, Max/Min \
             clamps and the exact erf GELU are folded)",
            between.join(", ")
        );
        return Ok(Some(miss_at(reason, model.node(source))?));
    }
    Ok(Some(fit(model, node, producer)?))
}

/// Whether the weight matmul `node` can run right after the weight matmul `producer` feeding it.
fn fit(model: &TypedModel, node: &TypedNode, producer: &TypedNode) -> TractResult<Fit<(usize, ChainedLinear)>> {
    let on_tract = |n: &TypedNode| miss_at(ON_TRACT_MATMUL, n);
    let (first, second) = match (producer.op_as::<WeightLinear>(), node.op_as::<WeightLinear>()) {
        (Some(first), Some(second)) => (first, second),
        (None, _) => return on_tract(producer),
        (_, None) => return on_tract(node),
    };
    if first.residual {
        return miss_at("the linear before it adds a residual", producer);
    }
    if first.isa != second.isa {
        return miss("the two linears run on different instruction sets");
    }
    if only_succ(model, producer.id)?.map(|n| n.id) != Some(node.id) {
        return miss_at("the output of the linear before it is also used elsewhere", producer);
    }
    // The residual is another tensor, not the intermediate again.
    let mid = node.inputs[0];
    if node.inputs[1..].contains(&mid) {
        return miss("its residual is the intermediate itself");
    }
    let rank_in = model.outlet_fact(producer.inputs[0])?.rank();
    let rank_mid = model.outlet_fact(mid)?.rank();
    // The second must also keep every axis but the one it contracts, or its output would not be
    // the row-major `[rows, N2]` the chain writes.
    let second_keeps_rows = second.k_axes == 1 && second.k_start + 1 == rank_mid;
    if !rows_in_rows_out(first, rank_in) || !second_keeps_rows || first.packed.n() != second.packed.k() {
        return miss("the two linears do not both contract the last axis of row-major activations");
    }
    Ok(Ok((producer.id, ChainedLinear { first: first.clone(), second: second.clone() })))
}
