//! `AxisSoftmax`: softmax over one axis that is not the innermost, on our kernel.

use sparsepipe_kernels::{softmax_axis, Isa};
use tract_core::internal::*;

use crate::op::write_output;
use crate::threads::on_plan_pool;

/// `y = softmax(x)` along `axis` of an f32 tensor of any shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AxisSoftmax {
    pub(crate) axis: usize,
    pub(crate) isa: Isa,
}

impl Op for AxisSoftmax {
    fn name(&self) -> StaticName {
        "SparsepipeSoftmax".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("axis {} isa={}", self.axis, self.isa)])
    }

    op_as_typed_op!();
}

impl EvalOp for AxisSoftmax {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "softmax takes 1 input");
        let x = &inputs[0];
        let shape = x.shape();
        ensure!(self.axis < shape.len(), "softmax axis {} of a rank-{} input", self.axis, shape.len());
        let outer: usize = shape[..self.axis].iter().product();
        let inner: usize = shape[self.axis + 1..].iter().product();
        let xs = x.try_as_plain_ram()?.as_slice::<f32>()?;
        write_output(shape, None, |_, ys| {
            on_plan_pool(|| softmax_axis(self.isa, xs, outer, shape[self.axis], inner, ys))
                .map_err(|e| format_err!("{e}"))
        })
    }

    op_out_of_plan!();
}

impl TypedOp for AxisSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(self.axis < inputs[0].rank());
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}
