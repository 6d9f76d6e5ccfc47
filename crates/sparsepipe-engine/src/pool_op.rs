//! `MaxPoolOp`: 2-D max pooling over channels-first images on our kernel.

use sparsepipe_kernels::{max_pool, Isa};
use tract_core::internal::*;
use tract_core::ops::cnn::PoolSpec;

use crate::conv_op::geometry;
use crate::op::write_output;
use crate::threads::on_plan_pool;

/// `y = max over each window of x` for channels-first `x` (`[N, C, H, W]`, or `[C, H, W]` when
/// tract has dropped a batch of one); the image size may vary from call to call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaxPoolOp {
    /// Window, strides, dilations and padding rule (tract's, as the ONNX node gave them).
    pub(crate) spec: PoolSpec,
    /// Channels.
    pub(crate) c: usize,
    /// Whether the input has a leading batch axis.
    pub(crate) has_n: bool,
    pub(crate) isa: Isa,
}

impl MaxPoolOp {
    /// The output shape for an input of shape `input`, or an error naming the axis that
    /// differs from what the op was built for.
    fn output_shape<D: DimLike>(&self, input: &[D]) -> TractResult<TVec<D>> {
        let lead = self.has_n as usize;
        ensure!(input.len() == 3 + lead, "max pool input has rank {}, expected {}", input.len(), 3 + lead);
        ensure!(
            input[lead].to_usize().ok() == Some(self.c),
            "max pool input axis {lead} is {}, expected {} channels",
            input[lead],
            self.c
        );
        let pads = self.spec.computed_padding(&input[lead + 1..]);
        let mut out: TVec<D> = input[..lead + 1].iter().cloned().collect();
        out.extend([pads[0].convoluted.clone(), pads[1].convoluted.clone()]);
        Ok(out)
    }
}

impl Op for MaxPoolOp {
    fn name(&self) -> StaticName {
        "SparsepipeMaxPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let s = &self.spec;
        Ok(vec![format!(
            "{:?} stride {:?} dilation {:?} padding {:?} C={} isa={}",
            s.kernel_shape,
            s.strides(),
            s.dilations(),
            s.padding,
            self.c,
            self.isa
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPoolOp {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "max pool takes 1 input");
        let x = &inputs[0];
        let oshape = self.output_shape(x.shape())?;
        let lead = self.has_n as usize;
        let g = geometry(&self.spec, self.c, x.shape()[lead + 1], x.shape()[lead + 2])?;
        let batch = if self.has_n { x.shape()[0] } else { 1 };
        let xs = x.try_as_plain_ram()?.as_slice::<f32>()?;
        write_output(&oshape, None, |_, ys| {
            on_plan_pool(|| max_pool(self.isa, &g, xs, batch, ys)).map_err(|e| format_err!("{e}"))
        })
    }

    op_out_of_plan!();
}

impl TypedOp for MaxPoolOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        Ok(tvec!(f32::fact(self.output_shape(&shape)?)))
    }

    as_op!();
}
