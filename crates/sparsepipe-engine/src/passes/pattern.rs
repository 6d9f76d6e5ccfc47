//! Helpers shared by the fusion passes: walking single-use chains, recognising f32 binary ops
//! and constants, and replacing a matched chain by one op.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;

/// The single successor of `node`, unless its output is a model output or used twice.
pub(crate) fn only_succ(model: &TypedModel, node: usize) -> TractResult<Option<&TypedNode>> {
    if model.output_outlets()?.iter().any(|o| o.node == node) {
        return Ok(None);
    }
    model.single_succ(node)
}

/// Whether `node` is the two-input f32 binary op called `name` (`"Add"`, `"Mul"`, `"Sub"`).
pub(crate) fn is_f32_bin_op(node: &TypedNode, name: &str) -> bool {
    node.op_as::<TypedBinOp>()
        .is_some_and(|b| b.0.name() == name && b.1.is_none_or(|dt| dt == f32::datum_type()) && node.inputs.len() == 2)
}

/// The shape and values of an f32 constant outlet.
pub(crate) fn f32_const(model: &TypedModel, o: OutletId) -> TractResult<Option<(TVec<usize>, Vec<f32>)>> {
    match &model.outlet_fact(o)?.konst {
        Some(k) if k.datum_type() == f32::datum_type() && k.is_plain() => {
            Ok(Some((k.shape().into(), k.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())))
        }
        _ => Ok(None),
    }
}

/// Wires `op` on `inputs` in place of the chain ending at node `last` (named `name`).
pub(crate) fn replace_chain(
    model: &mut TypedModel,
    name: String,
    op: impl TypedOp,
    inputs: &[OutletId],
    last: usize,
) -> TractResult<()> {
    let mut patch = TypedModelPatch::default();
    let mut taps = tvec![];
    for o in inputs {
        taps.push(patch.tap_model(model, *o)?);
    }
    let y = patch.wire_node(name, op, &taps)?;
    patch.shunt_outside(model, OutletId::new(last, 0), y[0])?;
    patch.apply(model)
}
