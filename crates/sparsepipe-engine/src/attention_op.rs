//! `MaskedAttention`: `softmax(scale·q·kᵀ + mask)·v` as one op on our attention kernel, reading
//! q, k and v in the layout the graph produced them (no transposes).

use crate::threads::on_plan_pool;
use sparsepipe_kernels::{attention, AttnAxis, AttnLayout, Isa};
use tract_core::internal::*;

/// Where each role of the attention lives in each operand, by axis position.
#[derive(Debug, Clone, PartialEq)]
pub struct AttnAxes {
    /// Batch-like axes (batch, head): positions in (q, k, v, mask, out).
    pub outer: Vec<[usize; 5]>,
    /// q: (query, depth).
    pub q: (usize, usize),
    /// k: (key, depth).
    pub k: (usize, usize),
    /// v: (key, value depth).
    pub v: (usize, usize),
    /// mask, laid out like the scores: (query, key).
    pub mask: (usize, usize),
    /// out: (query, value depth).
    pub out: (usize, usize),
    /// Rank of the output.
    pub out_rank: usize,
}

/// `out = softmax(scale·q·kᵀ + mask)·v`, inputs `[q, k, v]` or `[q, k, v, mask]` (f32, any
/// layout `axes` describes; the mask broadcasts along its size-1 axes).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedAttention {
    pub(crate) axes: AttnAxes,
    pub(crate) scale: f32,
    /// Queries with every key masked to `-inf` give zeros (a NaN guard followed the softmax).
    pub(crate) zero_masked_rows: bool,
    pub(crate) isa: Isa,
    /// When set, inputs 0-2 are one tensor holding q, k and v side by side along its last axis
    /// (one projection computed all three), each read through its view.
    pub(crate) packed: Option<[PackedView; 3]>,
}

impl Eq for MaskedAttention {}

/// One operand inside a packed q/k/v tensor: its channels start at `offset` of the last axis and
/// are shaped `split` (e.g. `[heads, depth]`); every other axis is the packed tensor's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedView {
    /// First channel of the operand along the packed tensor's last axis.
    pub offset: usize,
    /// The operand's trailing dimensions, whose product is its channel count.
    pub split: TVec<usize>,
}

impl PackedView {
    /// The operand's shape, given the packed tensor's.
    fn shape<D: DimLike>(&self, packed: &[D]) -> TVec<D> {
        let lead = &packed[..packed.len().saturating_sub(1)];
        lead.iter().cloned().chain(self.split.iter().map(|&d| D::from(d))).collect()
    }

    /// The operand's strides (in floats) inside a packed tensor of concrete shape `packed`.
    fn strides(&self, packed: &[usize]) -> TVec<usize> {
        let full = strides(packed);
        let lead = &full[..full.len().saturating_sub(1)];
        lead.iter().copied().chain(strides(&self.split)).collect()
    }
}

/// `s` from float `offset` on (an operand inside a packed tensor).
fn tail(s: &[f32], offset: usize) -> TractResult<&[f32]> {
    s.get(offset..).ok_or_else(|| format_err!("attention operand offset {offset} past {} values", s.len()))
}

fn strides(shape: &[usize]) -> TVec<usize> {
    let mut s: TVec<usize> = tvec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl MaskedAttention {
    fn output_shape<D: DimLike>(&self, q: &[D], v: &[D]) -> TVec<D> {
        let mut shape: TVec<D> = tvec![D::from(1usize); self.axes.out_rank];
        for o in &self.axes.outer {
            shape[o[4]] = q[o[0]].clone();
        }
        shape[self.axes.out.0] = q[self.axes.q.0].clone();
        shape[self.axes.out.1] = v[self.axes.v.1].clone();
        shape
    }

    /// The kernel layout for these concrete input shapes, after checking they agree.
    fn layout(
        &self,
        (q, qs): (&[usize], &[usize]),
        (k, ks): (&[usize], &[usize]),
        (v, vs): (&[usize], &[usize]),
        mask: Option<&[usize]>,
    ) -> TractResult<AttnLayout> {
        let a = &self.axes;
        let needs = |pick: fn(&[usize; 5]) -> usize, extra: [usize; 2]| {
            a.outer.iter().map(pick).chain(extra).max().unwrap_or(0) + 1
        };
        for (name, rank, need) in [
            ("q", q.len(), needs(|o| o[0], [a.q.0, a.q.1])),
            ("k", k.len(), needs(|o| o[1], [a.k.0, a.k.1])),
            ("v", v.len(), needs(|o| o[2], [a.v.0, a.v.1])),
            ("mask", mask.map_or(usize::MAX, |m| m.len()), needs(|o| o[3], [a.mask.0, a.mask.1])),
        ] {
            ensure!(rank >= need, "attention {name} has rank {rank}, expected at least {need}");
        }
        let out_shape = self.output_shape(q, v);
        let os = strides(&out_shape);
        let ms = mask.map(strides);
        let mask_stride = |pos: usize, size: usize| -> TractResult<usize> {
            match (mask, &ms) {
                (Some(m), Some(s)) if m[pos] == size => Ok(s[pos]),
                (Some(m), Some(_)) if m[pos] == 1 => Ok(0),
                (Some(m), _) => bail!("attention mask dimension {} is {}, expected {size} or 1", pos, m[pos]),
                _ => Ok(0),
            }
        };
        let mut outer = vec![];
        for o in &a.outer {
            let size = q[o[0]];
            ensure!(
                k[o[1]] == size && v[o[2]] == size,
                "attention operands disagree on a batch axis: q {q:?}, k {k:?}, v {v:?}"
            );
            outer.push(AttnAxis {
                size,
                q: qs[o[0]],
                k: ks[o[1]],
                v: vs[o[2]],
                mask: mask_stride(o[3], size)?,
                out: os[o[4]],
            });
        }
        let (sq, sk, d, dv) = (q[a.q.0], k[a.k.0], q[a.q.1], v[a.v.1]);
        ensure!(k[a.k.1] == d, "attention q depth {d} differs from k depth {}", k[a.k.1]);
        ensure!(v[a.v.0] == sk, "attention k has {sk} keys but v has {}", v[a.v.0]);
        Ok(AttnLayout {
            outer,
            sq,
            sk,
            d,
            dv,
            q: (qs[a.q.0], qs[a.q.1]),
            k: (ks[a.k.0], ks[a.k.1]),
            v: (vs[a.v.0], vs[a.v.1]),
            mask: (mask_stride(a.mask.0, sq)?, mask_stride(a.mask.1, sk)?),
            out: (os[a.out.0], os[a.out.1]),
            scale: self.scale,
            zero_masked_rows: self.zero_masked_rows,
        })
    }
}

impl Op for MaskedAttention {
    fn name(&self) -> StaticName {
        "SparsepipeAttention".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale {} isa={}{}{}",
            self.scale,
            self.isa,
            if self.zero_masked_rows { " masked rows 0" } else { "" },
            if self.packed.is_some() { " q/k/v packed" } else { "" }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for MaskedAttention {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 3 || inputs.len() == 4, "attention takes q, k, v and an optional mask");
        let mask = inputs.get(3);
        let mut operands: TVec<(TVec<usize>, TVec<usize>, usize)> = tvec![];
        for (i, input) in inputs.iter().take(3).enumerate() {
            let shape = input.shape();
            operands.push(match &self.packed {
                Some(views) => {
                    let v = &views[i];
                    let last = shape.last().copied().unwrap_or(0);
                    ensure!(
                        v.offset + v.split.iter().product::<usize>() <= last,
                        "packed attention operand {i} needs channels {}.. of a last axis of {last}",
                        v.offset
                    );
                    (v.shape(shape), v.strides(shape), v.offset)
                }
                None => (shape.into(), strides(shape), 0),
            });
        }
        let [(qs, qst, qo), (ks, kst, ko), (vs, vst, vo)] = [&operands[0], &operands[1], &operands[2]];
        let layout = self.layout((qs, qst), (ks, kst), (vs, vst), mask.map(|m| m.shape()))?;
        let out_shape = self.output_shape(qs, vs);
        let mut y = Tensor::zero::<f32>(&out_shape)?;
        {
            let q = inputs[0].try_as_plain_ram()?;
            let k = inputs[1].try_as_plain_ram()?;
            let v = inputs[2].try_as_plain_ram()?;
            let m = mask.map(|m| m.try_as_plain_ram()).transpose()?;
            let (q, k, v) = (q.as_slice::<f32>()?, k.as_slice::<f32>()?, v.as_slice::<f32>()?);
            let (q, k, v) = (tail(q, *qo)?, tail(k, *ko)?, tail(v, *vo)?);
            let m = m.as_ref().map(|m| m.as_slice::<f32>()).transpose()?;
            let mut view = y.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            let run = || attention(self.isa, &layout, q, k, v, m, out).map_err(|e| format_err!("{e}"));
            on_plan_pool(run)?;
        }
        Ok(tvec!(y.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for MaskedAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3 || inputs.len() == 4);
        let (q, v): (TVec<TDim>, TVec<TDim>) = match &self.packed {
            Some(views) => (views[0].shape(&inputs[0].shape), views[2].shape(&inputs[2].shape)),
            None => (inputs[0].shape.iter().cloned().collect(), inputs[2].shape.iter().cloned().collect()),
        };
        Ok(tvec!(f32::fact(self.output_shape(&q, &v))))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        // q·kᵀ and p·v: about twice the q volume times the keys (value depth ~ depth).
        let shape = |i: usize| -> TVec<TDim> {
            match &self.packed {
                Some(views) => views[i].shape(&inputs[i].shape),
                None => inputs[i].shape.iter().cloned().collect(),
            }
        };
        let keys = shape(1)[self.axes.k.0].clone();
        let macs = shape(0).iter().product::<TDim>() * keys * 2;
        Ok(tvec!((Cost::FMA(f32::datum_type()), macs)))
    }

    as_op!();
}
