//! `WeightLinear`: the tract op that runs a constant-weight matmul on our kernels.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::threads::on_plan_pool;
use sparsepipe_kernels::{Conv2d, Isa, PackedLinear, Residual};
use tract_core::internal::*;

/// Where an output axis comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutAxis {
    /// The input axis at this position.
    Input(usize),
    /// The weight's output channels.
    N,
    /// A new axis of size 1.
    One,
}

/// `y = epilogue(x · W) (+ residual)` (bias, then a clamp or an exact GELU, then an optional
/// second input of the output's shape) where the input is viewed as `[outer, K, inner]`: its axes
/// `k_start..k_start + k_axes` are contracted (flattened in order to `K`); the result, laid out
/// `[outer, N, inner]` in memory, is shaped as `out_axes` says.
#[derive(Debug, Clone)]
pub struct WeightLinear {
    /// Identity of the packed weight: ops compare equal only when they share it.
    id: u64,
    pub(crate) packed: Arc<PackedLinear>,
    pub(crate) k_start: usize,
    pub(crate) k_axes: usize,
    /// What each output axis is.
    pub(crate) out_axes: TVec<OutAxis>,
    pub(crate) isa: Isa,
    /// A second input, shaped like the output, is added to it (a residual connection).
    pub(crate) residual: bool,
    /// The clamp applied after the residual is added (channels-first inputs only).
    pub(crate) after_add: (f32, f32),
}

impl PartialEq for WeightLinear {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.residual == other.residual
    }
}
impl Eq for WeightLinear {}

impl WeightLinear {
    /// Wraps a packed weight applied over input axes `k_start..k_start + k_axes`.
    pub fn new(packed: PackedLinear, k_start: usize, k_axes: usize, out_axes: Vec<OutAxis>, isa: Isa) -> WeightLinear {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        WeightLinear {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            packed: Arc::new(packed),
            k_start,
            k_axes,
            out_axes: out_axes.into(),
            isa,
            residual: false,
            after_add: (f32::NEG_INFINITY, f32::INFINITY),
        }
    }

    /// The kernel on `[outer, K, inner]` into `[outer, N, inner]`, plus `add` when given.
    fn compute(&self, xs: &[f32], outer: usize, inner: usize, add: Option<&[f32]>, ys: &mut [f32]) -> TractResult<()> {
        let (min, max) = self.after_add;
        match add {
            Some(values) if min > f32::NEG_INFINITY || max < f32::INFINITY => {
                // Channels-first (the pass checked): a 1x1 convolution of one-row images.
                ensure!(inner > 1, "a clamp after the residual needs a channels-first input");
                let g = Conv2d::new((self.packed.k(), 1, inner), (1, 1), (1, 1), (1, 1), (0, 0), (0, 0))
                    .map_err(|e| format_err!("{e}"))?;
                let r = Residual { values, min, max };
                self.packed.run_conv(self.isa, &g, xs, outer, Some(r), ys)
            }
            _ => self.packed.run_add(self.isa, xs, outer, inner, add, ys),
        }
        .map_err(|e| format_err!("{e}"))
    }

    fn output_shape<D: DimLike>(&self, input: &[D]) -> TVec<D> {
        self.out_axes
            .iter()
            .map(|a| match a {
                OutAxis::Input(p) => input[*p].clone(),
                OutAxis::N => D::from(self.packed.n()),
                OutAxis::One => D::from(1usize),
            })
            .collect()
    }
}

impl Op for WeightLinear {
    fn name(&self) -> StaticName {
        "SparsepipeLinear".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} K={} N={} axes {}..{} isa={}{}{}{}",
            self.packed.kind(),
            self.packed.k(),
            self.packed.n(),
            self.k_start,
            self.k_start + self.k_axes,
            self.isa,
            match self.packed.activation().name() {
                "" => String::new(),
                act => format!(" +{act}"),
            },
            if self.residual { " +residual" } else { "" },
            if self.after_add.0 > f32::NEG_INFINITY || self.after_add.1 < f32::INFINITY { " +clamp" } else { "" }
        )])
    }

    op_as_typed_op!();
}

/// A fresh output of shape `oshape` filled by `fill(residual, output)`; `residual`, when given,
/// must have the output's shape. `fill` must write every element of the output.
pub(crate) fn write_output(
    oshape: &[usize],
    residual: Option<&TValue>,
    fill: impl FnOnce(Option<&[f32]>, &mut [f32]) -> TractResult<()>,
) -> TractResult<TVec<TValue>> {
    let residual = match residual {
        Some(r) => {
            ensure!(r.shape() == oshape, "residual shape {:?} differs from the output's {:?}", r.shape(), oshape);
            Some(r.try_as_plain_ram()?)
        }
        None => None,
    };
    let add = residual.as_ref().map(|r| r.as_slice::<f32>()).transpose()?;
    // SAFETY: every caller's `fill` writes each element of the output before anything reads it.
    let mut y = unsafe { Tensor::uninitialized::<f32>(oshape)? };
    {
        let mut view = y.try_as_plain_ram_mut()?;
        fill(add, view.as_slice_mut::<f32>()?)?;
    }
    Ok(tvec!(y.into_tvalue()))
}

impl EvalOp for WeightLinear {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1 + self.residual as usize, "linear takes {} inputs", 1 + self.residual as usize);
        let x = &inputs[0];
        let shape = x.shape();
        ensure!(shape.len() >= self.k_start + self.k_axes, "input rank {} too small", shape.len());
        let outer: usize = shape[..self.k_start].iter().product();
        let k: usize = shape[self.k_start..self.k_start + self.k_axes].iter().product();
        let inner: usize = shape[self.k_start + self.k_axes..].iter().product();
        ensure!(k == self.packed.k(), "contracted size {} differs from the weight's {}", k, self.packed.k());
        let xs = x.try_as_plain_ram()?.as_slice::<f32>()?;
        let oshape = self.output_shape(shape);
        write_output(&oshape, inputs.get(1), |add, ys| on_plan_pool(|| self.compute(xs, outer, inner, add, ys)))
    }

    op_out_of_plan!();
}

impl TypedOp for WeightLinear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        ensure!(shape.len() >= self.k_start + self.k_axes);
        Ok(tvec!(f32::fact(self.output_shape(&shape))))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let shape = &inputs[0].shape;
        let cols: TDim = shape[..self.k_start].iter().chain(shape[self.k_start + self.k_axes..].iter()).product();
        let macs = match &*self.packed {
            PackedLinear::Sparse(m) => m.nnz(),
            PackedLinear::Dense(m) => m.k() * m.n(),
        };
        Ok(tvec!((Cost::FMA(f32::datum_type()), cols * macs)))
    }

    as_op!();
}

/// `second(first(x))` for two of our linears where `second` reads only `first`'s output,
/// contracting its last axis, and `first` contracts the last axis of `x` (a transformer's
/// feed-forward block: up-projection with GELU, then down-projection). Each tile of rows goes
/// through both weights while its intermediate stays in cache. Inputs: `x`, then `second`'s
/// residual when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedLinear {
    pub(crate) first: WeightLinear,
    pub(crate) second: WeightLinear,
}

impl ChainedLinear {
    fn output_shape<D: DimLike>(&self, input: &[D]) -> TVec<D> {
        self.second.output_shape(&self.first.output_shape(input))
    }
}

impl Op for ChainedLinear {
    fn name(&self) -> StaticName {
        "SparsepipeChainedLinear".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut lines = self.first.info()?;
        lines.extend(self.second.info()?);
        Ok(lines)
    }

    op_as_typed_op!();
}

impl EvalOp for ChainedLinear {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let residual = self.second.residual;
        ensure!(inputs.len() == 1 + residual as usize, "chained linear takes {} inputs", 1 + residual as usize);
        let x = &inputs[0];
        let shape = x.shape();
        ensure!(shape.len() == self.first.k_start + 1, "input rank {} is not {}", shape.len(), self.first.k_start + 1);
        let rows: usize = shape[..self.first.k_start].iter().product();
        let k = shape[self.first.k_start];
        ensure!(
            k == self.first.packed.k(),
            "contracted size {} differs from the weight's {}",
            k,
            self.first.packed.k()
        );
        let xs = x.try_as_plain_ram()?.as_slice::<f32>()?;
        let oshape = self.output_shape(shape);
        let (first, second, isa) = (&self.first.packed, &self.second.packed, self.first.isa);
        write_output(&oshape, inputs.get(1), |add, ys| {
            on_plan_pool(|| first.run_chain(second, isa, xs, rows, add, ys)).map_err(|e| format_err!("{e}"))
        })
    }

    op_out_of_plan!();
}

impl TypedOp for ChainedLinear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        ensure!(shape.len() == self.first.k_start + 1);
        Ok(tvec!(f32::fact(self.output_shape(&shape))))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let mid = self.first.output_facts(&inputs[..1])?.remove(0);
        let (a, b) = (self.first.cost(&inputs[..1])?, self.second.cost(&[&mid])?);
        Ok(tvec!((Cost::FMA(f32::datum_type()), a[0].1.clone() + b[0].1.clone())))
    }

    as_op!();
}
