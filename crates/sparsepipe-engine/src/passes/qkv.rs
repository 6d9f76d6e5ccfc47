//! Computes an attention's query, key and value projections as one: when q, k and v each come
//! from a constant-weight linear (optionally through a reshape that splits the channels into
//! heads, and for q and k a multiply by a constant, which moves into the attention's scale), all
//! three linears read the same input and nothing else uses them, the three weights are packed
//! side by side into one linear whose output the attention reads through three views. One pass
//! over the input and one parallel section replace three; each projection's sums are computed
//! in the same order as before.

use tract_core::internal::*;
use tract_core::ops::change_axes::AxisOp;

use super::pattern::{
    before_bias, f32_const, is_f32_bin_op, miss, miss_at, only_succ, tract_weight_matmul_before, Fit, ON_TRACT_MATMUL,
};
use super::Miss;
use crate::attention_op::{MaskedAttention, PackedView};
use crate::op::{OutAxis, WeightLinear};

/// One attention whose projections were merged.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The attention, named by its softmax (as the attention pass names it).
    pub attention: String,
    /// The node computing the three projections.
    pub linear: String,
    /// The q, k and v linears it replaced.
    pub parts: [String; 3],
}

/// Merges the projections of every eligible attention of `model`; also returns every other
/// attention (named by its softmax) with why its projections stay apart.
pub fn run(model: &mut TypedModel) -> TractResult<(Vec<Merged>, Vec<Miss>)> {
    let (mut merged, mut misses) = (vec![], vec![]);
    for id in model.eval_order()? {
        let Some(att) = model.nodes().get(id).and_then(|n| n.op_as::<MaskedAttention>()) else { continue };
        if att.packed.is_some() {
            continue;
        }
        let node = model.node(id);
        let name = node.name.clone();
        let softmax = name.strip_suffix(".attention").unwrap_or(&name);
        let Some(found) = Miss::keep(find(model, id)?, softmax, &mut misses) else { continue };
        let mask = node.inputs.get(3).copied();
        let mut op = att.clone();
        op.packed = Some(found.views);
        op.scale *= found.scale;
        let parts = found.parts.map(|id| model.node(id).name.clone());
        let linear = format!("{}.qkv", parts[0]);
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, found.input)?;
        let qkv = patch.wire_node(&linear, found.linear, &[x])?[0];
        let mut inputs = tvec![qkv, qkv, qkv];
        if let Some(m) = mask {
            inputs.push(patch.tap_model(model, m)?);
        }
        let y = patch.wire_node(format!("{name}.packed"), op, &inputs)?;
        patch.shunt_outside(model, OutletId::new(id, 0), y[0])?;
        patch.apply(model)?;
        let attention = name.strip_suffix(".attention").unwrap_or(&name).to_string();
        merged.push(Merged { attention, linear, parts });
    }
    model.compact()?;
    Ok((merged, misses))
}

struct Found {
    /// The input the three projections share.
    input: OutletId,
    /// The merged projection.
    linear: WeightLinear,
    views: [PackedView; 3],
    /// Constants q and k were multiplied by, folded into the attention's scale.
    scale: f32,
    /// The q, k and v linear nodes.
    parts: [usize; 3],
}

/// A constant holding a single f32.
fn scalar(model: &TypedModel, o: OutletId) -> TractResult<Option<f32>> {
    Ok(f32_const(model, o)?.filter(|(_, v)| v.len() == 1).map(|(_, v)| v[0]))
}

/// One projection feeding `user` at `operand`: its linear node, how its output channels are
/// split (e.g. into heads) and the constant it is multiplied by on the way (exporters scale q and
/// k by `depth^-1/4` each; only allowed when `scalable`).
fn projection(
    model: &TypedModel,
    operand: OutletId,
    user: usize,
    scalable: bool,
    role: &str,
) -> TractResult<Fit<(usize, TVec<usize>, f32)>> {
    let (mut cur, mut consumer) = (operand, user);
    let (mut split, mut scale) = (None, 1f32);
    loop {
        let node = model.node(cur.node);
        if only_succ(model, node.id)?.map(|n| n.id) != Some(consumer) {
            return miss_at(format!("{role} is also used by another node or is a model output"), node);
        }
        if let Some(AxisOp::Reshape(at, from, to)) = node.op_as::<AxisOp>() {
            let rank = model.outlet_fact(node.inputs[0])?.rank();
            let to: Option<TVec<usize>> = to.iter().map(|d| d.to_usize().ok()).collect();
            match to {
                Some(to) if split.is_none() && from.len() == 1 && at + 1 == rank => split = Some(to),
                _ => return miss(format!("{role} goes through a reshape that is not one split of its channels")),
            }
            (cur, consumer) = (node.inputs[0], node.id);
            continue;
        }
        if scalable && is_f32_bin_op(node, "Mul") {
            let found = match (scalar(model, node.inputs[0])?, scalar(model, node.inputs[1])?) {
                (_, Some(s)) => Some((s, node.inputs[0])),
                (Some(s), None) => Some((s, node.inputs[1])),
                _ => None,
            };
            let Some((s, data)) = found else {
                return miss(format!("{role} is multiplied by something other than one constant"));
            };
            scale *= s;
            (cur, consumer) = (data, node.id);
            continue;
        }
        let Some(lin) = node.op_as::<WeightLinear>() else {
            if let Some(mm) = tract_weight_matmul_before(model, node) {
                return miss_at(ON_TRACT_MATMUL, mm);
            }
            if let Some(lin) = before_bias(model, node).filter(|p| p.op_is::<WeightLinear>()) {
                let reason = format!(
                    "{role}'s linear keeps its bias apart: its output is also used by another node or is a model \
                     output"
                );
                return miss_at(reason, lin);
            }
            return miss_at(
                format!("{role} comes from {}, not from a matmul by a constant weight", node.op.name()),
                node,
            );
        };
        // The input's last axes contracted and the channels the output's last axis, so the output
        // is row-major `[rows, N]` and a view of the merged output has the same leading axes (the
        // others are the input's in order, give or take size-1 axes: see `weight_matmul`).
        let rank = model.outlet_fact(node.inputs[0])?.rank();
        if lin.k_start + lin.k_axes != rank || lin.out_axes.last() != Some(&OutAxis::N) {
            return miss_at(format!("{role}'s linear does not keep its input's axes with the channels last"), node);
        }
        let n = lin.packed.n();
        let split = split.unwrap_or_else(|| tvec![n]);
        if split.iter().product::<usize>() != n {
            return miss(format!("{role}'s reshape does not split exactly its {n} channels"));
        }
        return Ok(Ok((node.id, split, scale)));
    }
}

fn find(model: &TypedModel, att: usize) -> TractResult<Fit<Found>> {
    let node = model.node(att);
    let mut parts = vec![];
    let mut scale = 1f32;
    for (i, &operand) in node.inputs[..3].iter().enumerate() {
        match projection(model, operand, att, i < 2, ["the query", "the key", "the value"][i])? {
            Ok((id, split, s)) => {
                parts.push((id, split));
                scale *= s;
            }
            Err(why) => return Ok(Err(why)),
        }
    }
    let (a, b, c) = (parts[0].0, parts[1].0, parts[2].0);
    if a == b || b == c || a == c {
        return miss("two of the query, key and value come from the same linear");
    }
    let lins: Vec<&WeightLinear> = parts.iter().filter_map(|(id, _)| model.node(*id).op_as::<WeightLinear>()).collect();
    let input = model.node(a).inputs[0];
    let same = |l: &WeightLinear, id: usize| {
        model.node(id).inputs[0] == input
            && l.k_start == lins[0].k_start
            && l.k_axes == lins[0].k_axes
            && l.out_axes == lins[0].out_axes
            && l.isa == lins[0].isa
    };
    if lins.len() != 3 || !lins.iter().zip([a, b, c]).all(|(l, id)| same(l, id)) {
        return miss("the query, key and value linears do not read the same input the same way");
    }
    let packed: Vec<&sparsepipe_kernels::PackedLinear> = lins.iter().map(|l| &*l.packed).collect();
    let Some(merged) = sparsepipe_kernels::PackedLinear::concat_n(&packed) else {
        let kinds: Vec<&str> = lins.iter().map(|l| l.packed.kind()).collect();
        return miss(format!(
            "the three weights cannot be packed as one: they run on {} kernels (set sparsity_threshold so \
             all three are sparse or all dense) or differ in activation",
            kinds.join("/")
        ));
    };
    let mut offset = 0;
    let mut views = vec![];
    for ((_, split), l) in parts.into_iter().zip(&lins) {
        views.push(PackedView { offset, split });
        offset += l.packed.n();
    }
    let Ok(views) = <[PackedView; 3]>::try_from(views) else { return miss("not three projections") };
    let linear = WeightLinear::new(merged, lins[0].k_start, lins[0].k_axes, lins[0].out_axes.to_vec(), lins[0].isa);
    Ok(Ok(Found { input, linear, views, scale, parts: [a, b, c] }))
}
