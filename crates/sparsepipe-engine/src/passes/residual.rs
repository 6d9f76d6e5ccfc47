//! Folds a residual connection into the linear before it: an f32 `Add` of one of our linears'
//! outputs (used by nothing else) and another tensor of exactly the output's shape becomes that
//! linear with a second input, added to each output while it is in cache. The sum is the same
//! float addition of the same two values, so results are identical; one pass over the output
//! (read both operands, write the sum) disappears.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;

use super::pattern::only_succ;
use crate::op::WeightLinear;

/// Folds every eligible residual `Add` of `model`; returns (the linear's name, the name of the
/// node that replaces it) for each.
pub fn run(model: &mut TypedModel) -> TractResult<Vec<(String, String)>> {
    let mut folded = vec![];
    for id in model.eval_order()? {
        let Some(found) = find(model, id)? else { continue };
        let (lin_id, other) = found;
        let lin = model.node(lin_id);
        let mut op = lin.op_as::<WeightLinear>().expect("checked by find").clone();
        op.residual = true;
        let name = lin.name.clone();
        let x = lin.inputs[0];
        let mut patch = TypedModelPatch::default();
        let taps = [patch.tap_model(model, x)?, patch.tap_model(model, other)?];
        let new_name = format!("{name}.residual");
        let y = patch.wire_node(&new_name, op, &taps)?;
        patch.shunt_outside(model, OutletId::new(id, 0), y[0])?;
        patch.apply(model)?;
        folded.push((name, new_name));
    }
    model.compact()?;
    Ok(folded)
}

/// For an `Add` node: the linear it can fold into and the other operand.
fn find(model: &TypedModel, id: usize) -> TractResult<Option<(usize, OutletId)>> {
    let Some(node) = model.nodes().get(id) else { return Ok(None) };
    let Some(bin) = node.op_as::<TypedBinOp>() else { return Ok(None) };
    if bin.0.name() != "Add" || bin.1.is_some_and(|dt| dt != f32::datum_type()) || node.inputs.len() != 2 {
        return Ok(None);
    }
    let out = model.outlet_fact(OutletId::new(id, 0))?;
    if out.datum_type != f32::datum_type() {
        return Ok(None);
    }
    for side in 0..2 {
        let (mine, other) = (node.inputs[side], node.inputs[1 - side]);
        let producer = model.node(mine.node);
        let Some(lin) = producer.op_as::<WeightLinear>() else { continue };
        if lin.residual || only_succ(model, producer.id)?.map(|n| n.id) != Some(id) {
            continue;
        }
        let (a, b) = (model.outlet_fact(mine)?, model.outlet_fact(other)?);
        // Exactly the output's shape: no broadcasting, no constant (a bias is already folded).
        if b.datum_type == f32::datum_type() && b.konst.is_none() && a.shape == out.shape && b.shape == out.shape {
            return Ok(Some((producer.id, other)));
        }
    }
    Ok(None)
}
