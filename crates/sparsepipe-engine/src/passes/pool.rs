//! Replaces every 2-D f32 max pool over channels-first images (concrete channels; the image size
//! may be symbolic) without an indices output by [`MaxPoolOp`], which reduces each window on the
//! image's padded stride phases a few vectors of outputs at a time.

use tract_core::internal::*;
use tract_core::ops::cnn::{MaxPool, PaddingSpec};
use tract_core::ops::nn::DataFormat;

use super::Miss;
use crate::conv_op::geometry;
use crate::pool_op::MaxPoolOp;
use sparsepipe_kernels::Isa;

/// Rewrites every eligible max pool of `model`; returns why each other one stays with tract.
pub fn run(model: &mut TypedModel, isa: Isa) -> TractResult<Vec<Miss>> {
    let mut misses = vec![];
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(pool) = node.op_as::<MaxPool>() else { continue };
        let op = match eligible(model, node, pool, isa)? {
            Ok(op) => op,
            Err(why) => {
                let reason = format!("{why}; it runs on tract's max pool");
                misses.push(Miss { node: node.name.clone(), reason, related: None });
                continue;
            }
        };
        let inputs = [node.inputs[0]];
        let patch = TypedModelPatch::replace_single_op(model, node, &inputs, op)?;
        patch.apply(model)?;
    }
    Ok(misses)
}

/// The op for `pool` when our kernel computes it: one f32 output, NCHW or CHW, 2-D window,
/// concrete channels, and an output size that is the floor formula (a ceil-mode pool on a
/// symbolic image stays with tract; on a concrete one only where ceiling changes nothing);
/// otherwise why not.
fn eligible(model: &TypedModel, node: &TypedNode, pool: &MaxPool, isa: Isa) -> TractResult<Result<MaxPoolOp, String>> {
    let spec = &pool.pool_spec;
    let has_n = match spec.data_format {
        DataFormat::NCHW => true,
        DataFormat::CHW => false,
        _ => return Ok(Err("its input is channels-last (NHWC); our kernel reads NCHW".into())),
    };
    if pool.with_index_outputs.is_some() {
        return Ok(Err("it also outputs the indices of the maxima".into()));
    }
    if spec.rank() != 2 || node.inputs.len() != 1 {
        return Ok(Err(format!("it pools over {} axes, not 2", spec.rank())));
    }
    let x = model.outlet_fact(node.inputs[0])?;
    if x.datum_type != f32::datum_type() || x.rank() != 3 + has_n as usize {
        return Ok(Err("its input is not an f32 image batch".into()));
    }
    let lead = has_n as usize;
    let Ok(c) = x.shape[lead].to_usize() else { return Ok(Err("its channel count is symbolic".into())) };
    let size = (x.shape[lead + 1].to_usize().ok(), x.shape[lead + 2].to_usize().ok());
    let fits = match size {
        (Some(h), Some(w)) => geometry(spec, c, h, w).is_ok(),
        _ => !matches!(spec.padding, PaddingSpec::ExplicitOnnxPool(_, _, true)),
    };
    if !fits {
        return Ok(Err("its output size is rounded up (ceil_mode) past the plain floor formula".into()));
    }
    Ok(Ok(MaxPoolOp { spec: spec.clone(), c, has_n, isa }))
}
