//! Replaces every 2-D f32 max pool over channels-first images (concrete channels; the image size
//! may be symbolic) without an indices output by [`MaxPoolOp`], which reduces each window on the
//! image's padded stride phases a few vectors of outputs at a time.

use tract_core::internal::*;
use tract_core::ops::cnn::{MaxPool, PaddingSpec};
use tract_core::ops::nn::DataFormat;

use crate::conv_op::geometry;
use crate::pool_op::MaxPoolOp;
use sparsepipe_kernels::Isa;

/// Rewrites every eligible max pool of `model`; returns how many were replaced.
pub fn run(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(pool) = node.op_as::<MaxPool>() else { continue };
        let Some(op) = eligible(model, node, pool, isa)? else { continue };
        let inputs = [node.inputs[0]];
        let patch = TypedModelPatch::replace_single_op(model, node, &inputs, op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The op for `pool` when our kernel computes it: one f32 output, NCHW or CHW, 2-D window,
/// concrete channels, and an output size that is the floor formula (a ceil-mode pool on a
/// symbolic image stays with tract; on a concrete one only where ceiling changes nothing).
fn eligible(model: &TypedModel, node: &TypedNode, pool: &MaxPool, isa: Isa) -> TractResult<Option<MaxPoolOp>> {
    let spec = &pool.pool_spec;
    let has_n = match spec.data_format {
        DataFormat::NCHW => true,
        DataFormat::CHW => false,
        _ => return Ok(None),
    };
    if pool.with_index_outputs.is_some() || spec.rank() != 2 || node.inputs.len() != 1 {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    if x.datum_type != f32::datum_type() || x.rank() != 3 + has_n as usize {
        return Ok(None);
    }
    let lead = has_n as usize;
    let Ok(c) = x.shape[lead].to_usize() else { return Ok(None) };
    let size = (x.shape[lead + 1].to_usize().ok(), x.shape[lead + 2].to_usize().ok());
    let fits = match size {
        (Some(h), Some(w)) => geometry(spec, c, h, w).is_ok(),
        _ => !matches!(spec.padding, PaddingSpec::ExplicitOnnxPool(_, _, true)),
    };
    if !fits {
        return Ok(None);
    }
    Ok(Some(MaxPoolOp { spec: spec.clone(), c, has_n, isa }))
}
