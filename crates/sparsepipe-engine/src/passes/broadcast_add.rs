//! Replaces the f32 `Add`s that tract evaluates slowly by [`BroadcastAdd`]: those whose operands
//! broadcast (attention scores plus mask) and those fed by one of our weight matmuls (residual
//! adds after a sparse linear, which tract cannot fuse into its own matmul). Same-shape adds
//! after tract's matmuls stay with tract, which fuses them into the matmul's epilogue.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;

use crate::add_op::BroadcastAdd;
use crate::op::WeightLinear;

/// Rewrites the qualifying `Add` nodes of `model`; returns how many were replaced.
pub fn run(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(bin) = node.op_as::<TypedBinOp>() else { continue };
        if bin.0.name() != "Add" || bin.1.is_some_and(|dt| dt != f32::datum_type()) || node.inputs.len() != 2 {
            continue;
        }
        let (eligible, broadcasts) = {
            let facts = model.node_input_facts(id)?;
            let eligible = facts.iter().all(|f| f.datum_type == f32::datum_type() && f.konst.is_none())
                && facts[0].rank() == facts[1].rank()
                && model.outlet_fact(OutletId::new(id, 0))?.datum_type == f32::datum_type();
            (eligible, facts[0].shape != facts[1].shape)
        };
        if !eligible {
            continue;
        }
        let after_ours = node.inputs.iter().any(|i| model.node(i.node).op_is::<WeightLinear>());
        if !broadcasts && !after_ours {
            continue;
        }
        let inputs = node.inputs.clone();
        let patch = TypedModelPatch::replace_single_op(model, node, &inputs, BroadcastAdd)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}
