//! Runs operators that have no symbolic-integer kernel on plain `i64` values.
//!
//! tract-onnx types every ONNX `Cast(to=int64)` as a cast to `TDim` (so that shape arithmetic can
//! stay symbolic), and the values then flow into every consumer as `TDim` tensors. Most operators
//! compute on `TDim`, but some have no kernel for it and fail at run time ("TDim is not a
//! number"): RoBERTa's position ids, as torch's dynamo exporter writes them, are
//! `CumSum(Cast(input_ids != pad, int64))`. Those operators get their `TDim` inputs cast to `i64`
//! and their outputs cast back, so the rest of the graph is typed as before. At run time the
//! values are concrete numbers, so the casts are exact.

use tract_core::internal::*;
use tract_core::ops::cast::cast;

/// Operators (by tract name) evaluated only on numbers.
const NUMERIC_ONLY: &[&str] = &["CumSum", "Topk"];

/// Wraps each [`NUMERIC_ONLY`] node that takes a `TDim` input in `i64` casts.
pub(crate) fn run(model: &mut TypedModel) -> TractResult<()> {
    for id in model.eval_order()? {
        let node = model.node(id);
        if !NUMERIC_ONLY.contains(&node.op().name().as_ref()) {
            continue;
        }
        let facts: TVec<TypedFact> = model.node_input_facts(id)?.into_iter().cloned().collect();
        if !facts.iter().any(|f| f.datum_type == TDim::datum_type()) {
            continue;
        }
        let mut patch = TypedModelPatch::default();
        let mut inputs = tvec![];
        for (ix, (&outlet, fact)) in node.inputs.iter().zip(&facts).enumerate() {
            let mut wire = patch.tap_model(model, outlet)?;
            if fact.datum_type == TDim::datum_type() {
                wire = patch.wire_node(format!("{}.to_i64.{ix}", node.name), cast(i64::datum_type()), &[wire])?[0];
            }
            inputs.push(wire);
        }
        let outputs = patch.wire_node(format!("{}.i64", node.name), node.op.clone(), &inputs)?;
        for (slot, wire) in outputs.into_iter().enumerate() {
            let before = model.outlet_fact(OutletId::new(id, slot))?.datum_type;
            let wire = if before == TDim::datum_type() {
                patch.wire_node(format!("{}.to_tdim.{slot}", node.name), cast(before), &[wire])?[0]
            } else {
                wire
            };
            patch.shunt_outside(model, OutletId::new(id, slot), wire)?;
        }
        patch.apply(model)?;
    }
    Ok(())
}
