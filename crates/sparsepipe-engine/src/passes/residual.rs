//! Folds a residual connection into the linear or convolution before it: an f32 `Add` of one of
//! our linears' or convolutions' outputs (used by nothing else) and another tensor of exactly the
//! output's shape becomes that op with a second input, added to each output while it is in cache;
//! on channels-first outputs a ReLU or clamp after the addition is folded too. The sum is the same
//! float addition of the same two values, so results are identical; one pass over the output
//! (read both operands, write the sum) disappears.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;

use super::pattern::{only_succ, tract_weight_matmul_before, Fit, Why, ON_TRACT_MATMUL};
use super::{epilogue, Miss};
use crate::conv_op::WeightConv;
use crate::op::WeightLinear;

/// A folded residual: the linear's name and the name of the node that replaces it.
pub type Folded = (String, String);

/// Folds every eligible residual `Add` of `model`; returns (the linear's name, the name of the
/// node that replaces it) for each, and each `Add` of a weight matmul's output and another
/// activation that stays apart, with why.
pub fn run(model: &mut TypedModel) -> TractResult<(Vec<Folded>, Vec<Miss>)> {
    let (mut folded, mut misses) = (vec![], vec![]);
    for id in model.eval_order()? {
        let Some(found) = find(model, id)? else { continue };
        let Some((lin_id, other)) = Miss::keep(found, &model.node(id).name, &mut misses) else { continue };
        let lin = model.node(lin_id);
        let (min, max, clamped, _) = epilogue::clamps_after(model, id)?;
        // A clamp after the addition (a ReLU) folds into convolutions and channels-first linears.
        let (op, last): (Box<dyn TypedOp>, usize) = match lin.op_as::<WeightLinear>() {
            Some(l) => {
                let mut op = l.clone();
                op.residual = true;
                let facts = model.node_input_facts(lin_id)?;
                let inner = facts[0].shape.iter().skip(l.k_start + l.k_axes).product::<TDim>();
                if inner.to_usize().is_ok_and(|v| v > 1) {
                    op.after_add = (min, max);
                    (Box::new(op), clamped)
                } else {
                    (Box::new(op), id)
                }
            }
            None => {
                let mut op = lin.op_as::<WeightConv>().expect("checked by find").clone();
                op.residual = true;
                op.after_add = (min, max);
                (Box::new(op), clamped)
            }
        };
        let name = lin.name.clone();
        let x = lin.inputs[0];
        let mut patch = TypedModelPatch::default();
        let taps = [patch.tap_model(model, x)?, patch.tap_model(model, other)?];
        let new_name = format!("{name}.residual");
        let y = patch.wire_node(&new_name, op, &taps)?;
        patch.shunt_outside(model, OutletId::new(last, 0), y[0])?;
        patch.apply(model)?;
        folded.push((name, new_name));
    }
    model.compact()?;
    Ok((folded, misses))
}

/// For an `Add` node: the linear it can fold into and the other operand; `None` when it adds
/// no weight matmul's output, used by nothing else, to another activation.
fn find(model: &TypedModel, id: usize) -> TractResult<Option<Fit<(usize, OutletId)>>> {
    let Some(node) = model.nodes().get(id) else { return Ok(None) };
    let Some(bin) = node.op_as::<TypedBinOp>() else { return Ok(None) };
    if bin.0.name() != "Add" || bin.1.is_some_and(|dt| dt != f32::datum_type()) || node.inputs.len() != 2 {
        return Ok(None);
    }
    let out = model.outlet_fact(OutletId::new(id, 0))?;
    if out.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let mut why = None;
    for side in 0..2 {
        let (mine, other) = (node.inputs[side], node.inputs[1 - side]);
        let producer = model.node(mine.node);
        let (a, b) = (model.outlet_fact(mine)?, model.outlet_fact(other)?);
        // A candidate adds an activation to a weight matmul's output used by nothing else.
        if b.konst.is_some()
            || b.datum_type != f32::datum_type()
            || only_succ(model, producer.id)?.map(|n| n.id) != Some(id)
        {
            continue;
        }
        let has_residual = match (producer.op_as::<WeightLinear>(), producer.op_as::<WeightConv>()) {
            (Some(lin), _) => lin.residual,
            (_, Some(conv)) => conv.residual,
            _ => {
                if let Some(mm) = tract_weight_matmul_before(model, producer) {
                    why.get_or_insert(Why { reason: ON_TRACT_MATMUL.into(), related: Some(mm.name.clone()) });
                }
                continue;
            }
        };
        if has_residual {
            let reason = "the linear already adds another residual".into();
            why.get_or_insert(Why { reason, related: Some(producer.name.clone()) });
        } else if a.shape != out.shape || b.shape != out.shape {
            // Exactly the output's shape: no broadcasting.
            why.get_or_insert(Why {
                reason: "the Add broadcasts one operand to the other's shape".into(),
                related: None,
            });
        } else {
            return Ok(Some(Ok((producer.id, other))));
        }
    }
    Ok(why.map(Err))
}
