//! Helpers shared by the fusion passes: walking single-use chains, recognising f32 binary ops
//! and constants, and replacing a matched chain by one op.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::einsum::EinSum;

/// Why a candidate does not match: what, and the node that is about when not the candidate.
#[derive(Debug, Clone)]
pub(crate) struct Why {
    pub(crate) reason: String,
    pub(crate) related: Option<String>,
}

/// A candidate's match, or why it is not one.
pub(crate) type Fit<M> = std::result::Result<M, Why>;

/// The candidate does not match, because of `reason`.
pub(crate) fn miss<M>(reason: impl Into<String>) -> TractResult<Fit<M>> {
    Ok(Err(Why { reason: reason.into(), related: None }))
}

/// The candidate does not match, because of `reason` about `node`.
pub(crate) fn miss_at<M>(reason: impl Into<String>, node: &TypedNode) -> TractResult<Fit<M>> {
    Ok(Err(Why { reason: reason.into(), related: Some(node.name.clone()) }))
}

/// Whether `node` is a matmul by a constant weight that our kernels do not run (tract's own:
/// a dense weight with `dense_backend='tract'`, or a layout the `weight_matmul` pass does not map).
pub(crate) fn is_tract_weight_matmul(model: &TypedModel, node: &TypedNode) -> bool {
    node.op_is::<EinSum>() && node.inputs.iter().any(|i| model.outlet_fact(*i).is_ok_and(|f| f.konst.is_some()))
}

/// When `node` adds a constant to one other operand (a bias, as tract's declutter leaves it
/// after a matmul that could not take it): the node producing that operand.
pub(crate) fn before_bias<'m>(model: &'m TypedModel, node: &TypedNode) -> Option<&'m TypedNode> {
    if !is_f32_bin_op(node, "Add") {
        return None;
    }
    let is_const = |i: usize| model.outlet_fact(node.inputs[i]).is_ok_and(|f| f.konst.is_some());
    match (is_const(0), is_const(1)) {
        (true, false) => Some(model.node(node.inputs[1].node)),
        (false, true) => Some(model.node(node.inputs[0].node)),
        _ => None,
    }
}

/// The matmul by a constant weight left to tract that produces `node`'s output, directly or
/// through its bias.
pub(crate) fn tract_weight_matmul_before<'m>(model: &'m TypedModel, node: &'m TypedNode) -> Option<&'m TypedNode> {
    if is_tract_weight_matmul(model, node) {
        return Some(node);
    }
    before_bias(model, node).filter(|p| is_tract_weight_matmul(model, p))
}

/// The reason given when a weight matmul a fusion needs runs on tract's matmul, about that node;
/// the engine completes it with why.
pub const ON_TRACT_MATMUL: &str = "a weight matmul it needs runs on tract's matmul, not on our kernels";

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
