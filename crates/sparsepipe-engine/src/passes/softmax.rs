//! Replaces every f32 softmax over one axis that is not the innermost (tract walks those an
//! element view at a time) by [`AxisSoftmax`], which reduces a vector of columns at a time.
//! Softmaxes over the last axis stay with tract's row kernel (or in a fused attention).

use tract_core::internal::*;
use tract_core::ops::nn::{Softmax, SoftmaxKind};

use crate::softmax_op::AxisSoftmax;
use sparsepipe_kernels::Isa;

/// Rewrites every eligible softmax of `model`; returns how many were replaced.
pub fn run(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(sm) = node.op_as::<Softmax>() else { continue };
        if sm.kind != SoftmaxKind::Softmax || sm.quant_output_dt.is_some() || sm.axes.len() != 1 {
            continue;
        }
        let fact = model.outlet_fact(node.inputs[0])?;
        let axis = sm.axes[0];
        if fact.datum_type != f32::datum_type() || axis + 1 >= fact.rank() {
            continue;
        }
        let inputs = [node.inputs[0]];
        let patch = TypedModelPatch::replace_single_op(model, node, &inputs, AxisSoftmax { axis, isa })?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}
