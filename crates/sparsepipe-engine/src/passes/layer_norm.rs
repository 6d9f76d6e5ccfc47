//! Replaces layer normalization over the last axis — as tract's declutter leaves it: `Sum` over
//! the axis, a multiply by `1/n`, the subtraction, `RmsNorm`, then an optional per-channel scale
//! and shift — by one [`LayerNorm`] on our kernel. Recognised by dataflow; a chain whose
//! intermediate results are used elsewhere is left alone.

use std::sync::Arc;

use sparsepipe_kernels::Isa;
use tract_core::internal::*;
use tract_core::ops::nn::{Reduce, Reducer, RmsNorm};

use super::pattern::{f32_const, is_f32_bin_op, miss, only_succ, replace_chain, Fit};
use super::Miss;
use crate::norm_op::LayerNorm;

/// Rewrites every recognised layer norm of `model`; returns the names of the replaced RmsNorms,
/// and every other RmsNorm with why it was left alone.
pub fn run(model: &mut TypedModel, isa: Isa) -> TractResult<(Vec<String>, Vec<Miss>)> {
    let (mut fused, mut misses) = (vec![], vec![]);
    for id in model.eval_order()? {
        if !model.nodes().get(id).is_some_and(|n| n.op_is::<RmsNorm>()) {
            continue;
        }
        let name = model.node(id).name.clone();
        let Some(m) = Miss::keep(find(model, id)?, &name, &mut misses) else { continue };
        let op = LayerNorm { eps: m.eps, gamma: m.gamma, beta: m.beta, isa };
        replace_chain(model, format!("{name}.layer_norm"), op, &[m.input], m.last)?;
        fused.push(name);
    }
    model.compact()?;
    Ok((fused, misses))
}

struct Match {
    input: OutletId,
    eps: f32,
    gamma: Option<Arc<Vec<f32>>>,
    beta: Option<Arc<Vec<f32>>>,
    last: usize,
}

/// `node` multiplies or adds `from` by a constant of `n` values along the last axis (or one
/// value): returns those values, expanded to `n`.
fn per_channel(model: &TypedModel, node: &TypedNode, from: OutletId, n: usize) -> TractResult<Option<Vec<f32>>> {
    let other = if node.inputs[0] == from { node.inputs[1] } else { node.inputs[0] };
    let Some((shape, vals)) = f32_const(model, other)? else { return Ok(None) };
    let lead_ones = shape.iter().rev().skip(1).all(|d| *d == 1);
    Ok(match (lead_ones, shape.last().copied().unwrap_or(1), vals.len()) {
        (true, last, len) if last == n && len == n => Some(vals),
        (true, 1, 1) => Some(vec![vals[0]; n]),
        _ => None,
    })
}

fn find(model: &TypedModel, rms: usize) -> TractResult<Fit<Match>> {
    let rms_node = model.node(rms);
    let op = rms_node.op_as::<RmsNorm>().unwrap();
    let fact = model.outlet_fact(rms_node.inputs[0])?;
    let rank = fact.rank();
    if fact.datum_type != f32::datum_type() || rank == 0 || op.axis != rank - 1 {
        return miss("it does not normalize f32 values over their last axis");
    }
    let Ok(n) = fact.shape[rank - 1].to_usize() else {
        return miss("the size of the normalized axis is not fixed when the model is loaded");
    };
    let Ok(eps) = op.eps.cast_to_scalar::<f32>() else { return miss("its epsilon is not an f32 scalar") };
    // RmsNorm(Sub(x, Mul(Sum(x), 1/n))).
    let not_centered = "it normalizes x itself, not x minus its mean used once (an RMS norm: no fused kernel)";
    let sub = model.node(rms_node.inputs[0].node);
    if !is_f32_bin_op(sub, "Sub") || only_succ(model, sub.id)?.map(|s| s.id) != Some(rms) {
        return miss(not_centered);
    }
    let (x, mean) = (sub.inputs[0], sub.inputs[1]);
    let mul = model.node(mean.node);
    if !is_f32_bin_op(mul, "Mul") || only_succ(model, mul.id)?.map(|s| s.id) != Some(sub.id) {
        return miss(not_centered);
    }
    let (sum_in, recip) = match (f32_const(model, mul.inputs[0])?, f32_const(model, mul.inputs[1])?) {
        (None, Some((_, c))) => (mul.inputs[0], c),
        (Some((_, c)), None) => (mul.inputs[1], c),
        _ => return miss(not_centered),
    };
    if recip.len() != 1 || (recip[0] * n as f32 - 1.0).abs() > 1e-6 {
        return miss(format!("the subtracted mean is not the sum over the axis times 1/{n}"));
    }
    let sum = model.node(sum_in.node);
    let is_sum = sum.op_as::<Reduce>().is_some_and(|r| r.reducer == Reducer::Sum && r.axes[..] == [rank - 1]);
    if !is_sum || sum.inputs[0] != x || only_succ(model, sum.id)?.map(|s| s.id) != Some(mul.id) {
        return miss("the subtracted mean is not the mean of the same x over the last axis, used once");
    }
    if model.outlet_fact(x)?.datum_type != f32::datum_type() {
        return miss("its input is not f32");
    }
    // Then an optional scale and shift.
    let (mut gamma, mut beta, mut last) = (None, None, rms);
    if let Some(next) = only_succ(model, last)? {
        if is_f32_bin_op(next, "Mul") {
            if let Some(g) = per_channel(model, next, OutletId::new(last, 0), n)? {
                gamma = Some(Arc::new(g));
                last = next.id;
            }
        }
    }
    if let Some(next) = only_succ(model, last)? {
        if is_f32_bin_op(next, "Add") {
            if let Some(b) = per_channel(model, next, OutletId::new(last, 0), n)? {
                beta = Some(Arc::new(b));
                last = next.id;
            }
        }
    }
    if model.outlet_fact(OutletId::new(last, 0))?.shape != fact.shape {
        return miss("its scale or shift broadcasts the output to another shape");
    }
    Ok(Ok(Match { input: x, eps, gamma, beta, last }))
}
