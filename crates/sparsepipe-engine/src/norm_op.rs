//! `LayerNorm`: layer normalization over the last axis as one op on our kernel (tract runs it
//! as a sum, a multiply, a subtraction, an RMS norm and the affine multiply-add).

use std::sync::Arc;

use crate::threads::on_plan_pool;
use sparsepipe_kernels::{layer_norm, Isa};
use tract_core::internal::*;

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta` over the last axis of an f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    pub(crate) eps: f32,
    /// Scale and shift per channel of the last axis, when the graph has them.
    pub(crate) gamma: Option<Arc<Vec<f32>>>,
    pub(crate) beta: Option<Arc<Vec<f32>>>,
    pub(crate) isa: Isa,
}

impl Eq for LayerNorm {}

impl Op for LayerNorm {
    fn name(&self) -> StaticName {
        "SparsepipeLayerNorm".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "eps {} gamma {} beta {} isa={}",
            self.eps,
            self.gamma.is_some(),
            self.beta.is_some(),
            self.isa
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for LayerNorm {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let n = *x.shape().last().context("layer norm of a scalar")?;
        // SAFETY: `layer_norm` writes every element before anything reads the tensor.
        let mut y = unsafe { Tensor::uninitialized::<f32>(x.shape())? };
        {
            let xs = x.try_as_plain_ram()?;
            let xs = xs.as_slice::<f32>()?;
            let mut view = y.try_as_plain_ram_mut()?;
            let ys = view.as_slice_mut::<f32>()?;
            let (g, b) = (self.gamma.as_deref().map(Vec::as_slice), self.beta.as_deref().map(Vec::as_slice));
            let run = || layer_norm(self.isa, xs, n, g, b, self.eps, ys).map_err(|e| format_err!("{e}"));
            on_plan_pool(run)?;
        }
        Ok(tvec!(y.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for LayerNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}
