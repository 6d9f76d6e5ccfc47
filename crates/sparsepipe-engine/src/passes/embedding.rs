//! Replaces every `Gather` of rows from a constant f32 table (an embedding lookup: word,
//! position and token-type embeddings) by [`EmbeddingGather`], which copies the rows in parallel
//! on the plan's pool. The copies are exact, so results are identical.

use tract_core::internal::*;
use tract_core::ops::array::Gather;

use crate::gather_op::EmbeddingGather;

/// Rewrites every eligible `Gather` of `model`; returns how many were replaced.
pub fn run(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(gather) = node.op_as::<Gather>() else { continue };
        if gather.axis != 0 || gather.output_type.is_some() || node.inputs.len() != 2 {
            continue;
        }
        let Some(table) = model.outlet_fact(node.inputs[0])?.konst.clone() else { continue };
        let idx_type = model.outlet_fact(node.inputs[1])?.datum_type;
        if table.datum_type() != f32::datum_type() || table.rank() == 0 || !table.is_plain() {
            continue;
        }
        if ![DatumType::I64, DatumType::I32].contains(&idx_type) {
            continue;
        }
        let op = EmbeddingGather { table };
        // The op must produce exactly the fact it replaces.
        let facts = [model.outlet_fact(node.inputs[1])?];
        if op.output_facts(&facts)?[0].shape != model.outlet_fact(OutletId::new(id, 0))?.shape {
            continue;
        }
        let inputs = [node.inputs[1]];
        let patch = TypedModelPatch::replace_single_op(model, node, &inputs, op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}
