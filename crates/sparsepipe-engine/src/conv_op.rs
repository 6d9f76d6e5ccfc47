//! `WeightConv`: the tract op that runs a constant-weight 2-D convolution on our kernels.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sparsepipe_kernels::{Conv2d, Depthwise, Isa, PackedLinear, Residual};
use tract_core::internal::*;
use tract_core::ops::cnn::PoolSpec;

use crate::op::write_output;
use crate::threads::on_plan_pool;

/// How a convolution's weight is computed.
#[derive(Debug, Clone)]
pub enum ConvKernel {
    /// Groups 1: the `[C·kh·kw, O]` matrix of [`Conv2d`], as implicit GEMM.
    Gemm(Arc<PackedLinear>),
    /// One filter per channel, directly on each plane.
    Depthwise(Arc<Depthwise>),
}

/// `y = epilogue(conv(x, W))` for channels-first `x` (`[N, C, H, W]`, or `[C, H, W]` when tract
/// has dropped a batch of one); the image size may vary from call to call: the geometry follows
/// the convolution's padding rule, strides and dilations.
#[derive(Debug, Clone)]
pub struct WeightConv {
    /// Identity of the packed weight: ops compare equal only when they share it.
    id: u64,
    pub(crate) kernel: ConvKernel,
    /// Kernel size, strides, dilations and padding rule (tract's, as the ONNX node gave them).
    spec: PoolSpec,
    /// Input channels.
    c: usize,
    /// Whether the input has a leading batch axis.
    pub(crate) has_n: bool,
    pub(crate) isa: Isa,
    /// A second input, shaped like the output, is added to it (a residual connection)...
    pub(crate) residual: bool,
    /// ...then clamped to this range (the ReLU after it).
    pub(crate) after_add: (f32, f32),
}

impl PartialEq for WeightConv {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.residual == other.residual && self.after_add == other.after_add
    }
}
impl Eq for WeightConv {}

impl WeightConv {
    /// A convolution of `c`-channel images under `spec` (2-D, channels-first) computed by `kernel`.
    pub fn new(kernel: ConvKernel, spec: PoolSpec, c: usize, has_n: bool, isa: Isa) -> WeightConv {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        WeightConv {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            kernel,
            spec,
            c,
            has_n,
            isa,
            residual: false,
            after_add: (f32::NEG_INFINITY, f32::INFINITY),
        }
    }

    /// The geometry on `h x w` images, or an error naming why the window does not fit.
    pub fn geom(&self, h: usize, w: usize) -> TractResult<Conv2d> {
        geometry(&self.spec, self.c, h, w)
    }

    /// The output shape for an input of shape `input`, or an error naming the axis that
    /// differs from what the op was built for.
    fn output_shape<D: DimLike>(&self, input: &[D]) -> TractResult<TVec<D>> {
        let lead = self.has_n as usize;
        ensure!(input.len() == 3 + lead, "convolution input has rank {}, expected {}", input.len(), 3 + lead);
        ensure!(
            input[lead].to_usize().ok() == Some(self.c),
            "convolution input axis {lead} is {}, expected {} channels",
            input[lead],
            self.c
        );
        let pads = self.spec.computed_padding(&input[lead + 1..]);
        let mut out: TVec<D> = input[..lead].iter().cloned().collect();
        out.extend([D::from(self.out_channels()), pads[0].convoluted.clone(), pads[1].convoluted.clone()]);
        Ok(out)
    }

    fn out_channels(&self) -> usize {
        match &self.kernel {
            ConvKernel::Gemm(p) => p.n(),
            ConvKernel::Depthwise(_) => self.c,
        }
    }

    /// `(kind, multiply-adds per output pixel over all channels)`.
    fn kind_and_macs(&self) -> (&'static str, usize) {
        let taps = self.spec.kernel_shape.iter().product::<usize>();
        match &self.kernel {
            ConvKernel::Gemm(p) => match &**p {
                PackedLinear::Sparse(m) => ("sparse", m.nnz()),
                PackedLinear::Dense(m) => ("dense", m.k() * m.n()),
            },
            ConvKernel::Depthwise(_) => ("depthwise", self.c * taps),
        }
    }
}

/// The geometry of `spec` on `c`-channel `h x w` images; an error when the window does not fit
/// or the output size is not the plain floor formula tract computes.
pub fn geometry(spec: &PoolSpec, c: usize, h: usize, w: usize) -> TractResult<Conv2d> {
    let pads = spec.computed_padding(&[h, w]);
    let (strides, dilations) = (spec.strides(), spec.dilations());
    let g = Conv2d::new(
        (c, h, w),
        (spec.kernel_shape[0], spec.kernel_shape[1]),
        (strides[0], strides[1]),
        (dilations[0], dilations[1]),
        (pads[0].pad_before, pads[1].pad_before),
        (pads[0].pad_after, pads[1].pad_after),
    )
    .map_err(|e| format_err!("{e}"))?;
    ensure!(
        (g.oh, g.ow) == (pads[0].convoluted, pads[1].convoluted),
        "convolution output {}x{} differs from the padding rule's {}x{}",
        g.oh,
        g.ow,
        pads[0].convoluted,
        pads[1].convoluted
    );
    Ok(g)
}

impl Op for WeightConv {
    fn name(&self) -> StaticName {
        "SparsepipeConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let s = &self.spec;
        Ok(vec![format!(
            "{} {:?} stride {:?} dilation {:?} padding {:?} C={} O={} isa={}{}",
            self.kind_and_macs().0,
            s.kernel_shape,
            s.strides(),
            s.dilations(),
            s.padding,
            self.c,
            self.out_channels(),
            self.isa,
            if self.residual { " +residual" } else { "" }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for WeightConv {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let count = 1 + self.residual as usize;
        ensure!(inputs.len() == count, "convolution takes {count} inputs");
        let x = &inputs[0];
        let oshape = self.output_shape(x.shape())?;
        let lead = self.has_n as usize;
        let g = self.geom(x.shape()[lead + 1], x.shape()[lead + 2])?;
        let batch = if self.has_n { x.shape()[0] } else { 1 };
        let xs = x.try_as_plain_ram()?.as_slice::<f32>()?;
        let (min, max) = self.after_add;
        write_output(&oshape, inputs.get(1), |add, ys| {
            let add = add.map(|values| Residual { values, min, max });
            on_plan_pool(|| match &self.kernel {
                ConvKernel::Gemm(p) => p.run_conv(self.isa, &g, xs, batch, add, ys),
                ConvKernel::Depthwise(d) => d.run(self.isa, &g, xs, batch, add, ys),
            })
            .map_err(|e| format_err!("{e}"))
        })
    }

    op_out_of_plan!();
}

impl TypedOp for WeightConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        Ok(tvec!(f32::fact(self.output_shape(&shape)?)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        let out = self.output_shape(&shape)?;
        let lead = self.has_n as usize;
        let pixels: TDim = out[..lead].iter().chain(&out[lead + 1..]).product();
        Ok(tvec!((Cost::FMA(f32::datum_type()), pixels * self.kind_and_macs().1)))
    }

    as_op!();
}
