//! Finds the bias `Add` and clamp (`Max`/`Min` with a constant, as ReLU and ReLU6 become), or
//! the bias and an activation (exact GELU, SiLU, LeakyReLU), that follow a weight matmul or
//! convolution and can be folded into it.

use sparsepipe_kernels::{Activation, Epilogue};
use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::nn::{GeluExact, LeakyRelu, Silu};

/// An epilogue and the nodes it replaces.
#[derive(Debug)]
pub struct Absorbed {
    /// Bias, then either a clamp or an activation (`epilogue.act`).
    pub epilogue: Epilogue,
    /// The node whose output the fused op now produces.
    pub last: usize,
    /// Names of the absorbed nodes, in order.
    pub names: Vec<String>,
}

/// Walks the single-successor chain after `node` (whose output has `n` channels at axis
/// `n_axis`, `usize::MAX` when it has none), absorbing a bias Add then either Max/Min clamps with
/// constant operands or one activation: an exact (erf) GELU, a SiLU (tract's declutter has made
/// them `GeluExact` and `Silu`) or a LeakyReLU whose slope lies in `0..=1`.
pub fn absorb(model: &TypedModel, node: usize, n_axis: usize, n: usize) -> TractResult<Absorbed> {
    let mut bias: Option<Vec<f32>> = None;
    let (mut min, mut max) = (f32::NEG_INFINITY, f32::INFINITY);
    let mut names = vec![];
    let mut cur = node;
    let outputs = model.output_outlets()?.to_vec();
    while let Some((succ, op, per_channel)) = const_step(model, cur, &outputs, n_axis, n)? {
        match &*op {
            "Add" if min == f32::NEG_INFINITY && max == f32::INFINITY => {
                let b = bias.get_or_insert_with(|| vec![0.0; n]);
                b.iter_mut().zip(&per_channel).for_each(|(b, c)| *b += c);
            }
            "Max" if per_channel.iter().all(|v| *v == per_channel[0]) => min = min.max(per_channel[0]),
            "Min" if per_channel.iter().all(|v| *v == per_channel[0]) => max = max.min(per_channel[0]),
            _ => break,
        }
        names.push(succ.name.clone());
        cur = succ.id;
    }
    let mut act = Activation::None;
    if min == f32::NEG_INFINITY && max == f32::INFINITY && !outputs.contains(&OutletId::new(cur, 0)) {
        if let Some((id, a)) = activation_after(model, cur)? {
            act = a;
            names.push(model.node(id).name.clone());
            cur = id;
        }
    }
    Ok(Absorbed { epilogue: Epilogue { bias, min, max, act }, last: cur, names })
}

/// Walks the single-successor chain after `node` absorbing `Max`/`Min` with one constant value
/// each (a ReLU or clamp after a residual addition): `(min, max)`, the last node absorbed (`node`
/// when none) and the absorbed nodes' names.
pub fn clamps_after(model: &TypedModel, node: usize) -> TractResult<(f32, f32, usize, Vec<String>)> {
    let (mut min, mut max) = (f32::NEG_INFINITY, f32::INFINITY);
    let (mut cur, mut names) = (node, vec![]);
    let outputs = model.output_outlets()?.to_vec();
    while let Some((succ, op, v)) = const_step(model, cur, &outputs, usize::MAX, 1)? {
        match &*op {
            "Max" => min = min.max(v[0]),
            "Min" => max = max.min(v[0]),
            _ => break,
        }
        names.push(succ.name.clone());
        cur = succ.id;
    }
    Ok((min, max, cur, names))
}

/// The next link of a chain after node `cur` (not a model output): its single successor when
/// that is an f32 binary op of `cur`'s output and a constant, keeping the shape; with the op's
/// name and the constant as one value per channel (`n` channels at `n_axis`).
fn const_step<'m>(
    model: &'m TypedModel,
    cur: usize,
    outputs: &[OutletId],
    n_axis: usize,
    n: usize,
) -> TractResult<Option<(&'m TypedNode, String, Vec<f32>)>> {
    if outputs.contains(&OutletId::new(cur, 0)) {
        return Ok(None);
    }
    let Some(succ) = model.single_succ(cur)? else { return Ok(None) };
    let Some(bin) = succ.op_as::<TypedBinOp>() else { return Ok(None) };
    if succ.inputs.len() != 2 || bin.1.is_some_and(|dt| dt != f32::datum_type()) {
        return Ok(None);
    }
    let other = if succ.inputs[0].node == cur { succ.inputs[1] } else { succ.inputs[0] };
    let cur_fact = model.outlet_fact(OutletId::new(cur, 0))?;
    let out_fact = model.outlet_fact(OutletId::new(succ.id, 0))?;
    if out_fact.datum_type != f32::datum_type() || out_fact.shape != cur_fact.shape {
        return Ok(None);
    }
    let Some(c) = model.outlet_fact(other)?.konst.clone() else { return Ok(None) };
    let values = per_channel(&c, cur_fact.rank(), n_axis, n)?;
    Ok(values.map(|v| (succ, bin.0.name().to_string(), v)))
}

/// The constant as one value per output channel, when it broadcasts only along `n_axis`.
fn per_channel(c: &Tensor, rank: usize, n_axis: usize, n: usize) -> TractResult<Option<Vec<f32>>> {
    if c.datum_type() != f32::datum_type() || c.rank() > rank {
        return Ok(None);
    }
    let offset = rank - c.rank();
    for (i, &d) in c.shape().iter().enumerate() {
        if d != 1 && !(i + offset == n_axis && d == n) {
            return Ok(None);
        }
    }
    let vals = c.try_as_plain_ram()?.as_slice::<f32>()?;
    Ok(Some(if vals.len() == n { vals.to_vec() } else { vec![vals[0]; n] }))
}

/// The activation node that alone consumes node `x`'s f32 output, if there is one our kernels
/// compute, and that activation.
fn activation_after(model: &TypedModel, x: usize) -> TractResult<Option<(usize, Activation)>> {
    let f32t = f32::datum_type();
    let x_out = OutletId::new(x, 0);
    let succs = model.outlet_successors(x_out);
    let [only] = succs else { return Ok(None) };
    let node = model.node(only.node);
    let Some(op) = node.op_as::<ElementWiseOp>().filter(|op| op.1.is_none()) else { return Ok(None) };
    let act = if op.0.downcast_ref::<GeluExact>().is_some() {
        Activation::Gelu
    } else if op.0.downcast_ref::<Silu>().is_some() {
        Activation::Silu
    } else if let Some(l) = op.0.downcast_ref::<LeakyRelu>().filter(|l| (0.0..=1.0).contains(&l.alpha)) {
        Activation::LeakyRelu(l.alpha)
    } else {
        return Ok(None);
    };
    let out = OutletId::new(node.id, 0);
    let typed = model.outlet_fact(x_out)?.datum_type == f32t && model.outlet_fact(out)?.datum_type == f32t;
    Ok(typed.then_some((node.id, act)))
}
