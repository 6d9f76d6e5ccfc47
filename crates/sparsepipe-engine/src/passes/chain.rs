//! Runs two of our linears back to back as one op when the second reads nothing but the first's
//! output (a transformer's feed-forward block: up-projection with GELU, then down-projection,
//! often with a residual folded into the second). Both contract the last axis of their input, so
//! a tile of rows goes through both weights while its intermediate stays in cache: it is never
//! transposed, written out or read back. Each output is the same sums as before.

use tract_core::internal::*;

use super::pattern::only_succ;
use crate::op::{ChainedLinear, OutAxis, WeightLinear};

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

/// Chains every eligible pair of linears of `model`.
pub fn run(model: &mut TypedModel) -> TractResult<Vec<Chained>> {
    let mut chained = vec![];
    for id in model.eval_order()? {
        let Some((first_id, op)) = find(model, id)? else { continue };
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
    Ok(chained)
}

/// Whether `lin`, reading an input of rank `rank`, contracts its last axis alone and keeps the
/// others in order, so that its output is row-major `[rows, N]`.
fn rows_in_rows_out(lin: &WeightLinear, rank: usize) -> bool {
    let expected = (0..lin.k_start).map(OutAxis::Input).chain([OutAxis::N]);
    lin.k_axes == 1 && lin.k_start + 1 == rank && lin.out_axes.iter().copied().eq(expected)
}

/// For a linear node: the linear before it that it can run with, and the op doing both.
fn find(model: &TypedModel, id: usize) -> TractResult<Option<(usize, ChainedLinear)>> {
    let Some(node) = model.nodes().get(id) else { return Ok(None) };
    let Some(second) = node.op_as::<WeightLinear>() else { return Ok(None) };
    let mid = node.inputs[0];
    let producer = model.node(mid.node);
    let Some(first) = producer.op_as::<WeightLinear>() else { return Ok(None) };
    if first.residual || first.isa != second.isa || only_succ(model, producer.id)?.map(|n| n.id) != Some(id) {
        return Ok(None);
    }
    // The residual is another tensor, not the intermediate again.
    if node.inputs[1..].contains(&mid) {
        return Ok(None);
    }
    let rank_in = model.outlet_fact(producer.inputs[0])?.rank();
    let rank_mid = model.outlet_fact(mid)?.rank();
    // The second must also keep every axis but the one it contracts, or its output would not be
    // the row-major `[rows, N2]` the chain writes.
    let second_keeps_rows = second.k_axes == 1 && second.k_start + 1 == rank_mid;
    if !rows_in_rows_out(first, rank_in) || !second_keeps_rows || first.packed.n() != second.packed.k() {
        return Ok(None);
    }
    Ok(Some((producer.id, ChainedLinear { first: first.clone(), second: second.clone() })))
}
