//! Finds the bias `Add` and clamp (`Max`/`Min` with a constant, as ReLU and ReLU6 become) that
//! follow a weight matmul and can be folded into its kernel's epilogue.

use sparsepipe_kernels::Epilogue;
use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;

/// An epilogue and the nodes it replaces.
#[derive(Debug)]
pub struct Absorbed {
    pub epilogue: Epilogue,
    /// The node whose output the fused op now produces.
    pub last: usize,
    /// Names of the absorbed nodes, in order.
    pub names: Vec<String>,
}

/// Walks the single-successor chain after `node` (whose output has `n` channels at axis
/// `n_axis`, `usize::MAX` when it has none), absorbing a bias Add then Max/Min clamps with constant operands.
pub fn absorb(model: &TypedModel, node: usize, n_axis: usize, n: usize) -> TractResult<Absorbed> {
    let mut bias: Option<Vec<f32>> = None;
    let (mut min, mut max) = (f32::NEG_INFINITY, f32::INFINITY);
    let mut names = vec![];
    let mut cur = node;
    let outputs = model.output_outlets()?.to_vec();
    loop {
        if outputs.contains(&OutletId::new(cur, 0)) {
            break;
        }
        let Some(succ) = model.single_succ(cur)? else { break };
        let Some(bin) = succ.op_as::<TypedBinOp>() else { break };
        if succ.inputs.len() != 2 || bin.1.is_some_and(|dt| dt != f32::datum_type()) {
            break;
        }
        let other = if succ.inputs[0].node == cur { succ.inputs[1] } else { succ.inputs[0] };
        let cur_fact = model.outlet_fact(OutletId::new(cur, 0))?;
        let out_fact = model.outlet_fact(OutletId::new(succ.id, 0))?;
        if out_fact.datum_type != f32::datum_type() || out_fact.shape != cur_fact.shape {
            break;
        }
        let Some(c) = model.outlet_fact(other)?.konst.clone() else { break };
        let Some(per_channel) = per_channel(&c, cur_fact.rank(), n_axis, n)? else { break };
        match bin.0.name() {
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
    Ok(Absorbed { epilogue: Epilogue { bias, min, max }, last: cur, names })
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
