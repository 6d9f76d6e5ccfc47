//! Replaces scaled dot-product attention — `EinSum(q, k)`, an optional multiply by a constant
//! scalar, an optional additive mask, `Softmax` over the keys, `EinSum(p, v)` — by one
//! [`MaskedAttention`] on our kernel. The NaN guard transformers 5 exports after the softmax
//! (`Where(IsNaN(p), 0, p)`, for queries whose keys are all masked) is folded in too. Recognised by dataflow and einsum axes, not node names, in
//! any operand layout; a chain whose intermediate results are used elsewhere is left alone.

use sparsepipe_kernels::Isa;
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::nn::{Softmax, SoftmaxKind};

use super::pattern::{f32_const, is_f32_bin_op, miss, miss_at, only_succ, replace_chain, Fit};
use super::Miss;
use crate::attention_op::{AttnAxes, MaskedAttention};

/// Rewrites every recognised attention of `model`; returns the names of the replaced softmaxes,
/// and every other softmax with why it was left alone.
pub fn run(model: &mut TypedModel, isa: Isa) -> TractResult<(Vec<String>, Vec<Miss>)> {
    let (mut fused, mut misses) = (vec![], vec![]);
    for id in model.eval_order()? {
        if !model.nodes().get(id).is_some_and(|n| n.op_is::<Softmax>()) {
            continue;
        }
        let name = model.node(id).name.clone();
        let Some(m) = Miss::keep(find(model, id)?, &name, &mut misses) else { continue };
        let op = MaskedAttention { axes: m.axes, scale: m.scale, zero_masked_rows: m.guarded, isa, packed: None };
        replace_chain(model, format!("{name}.attention"), op, &m.inputs, m.last)?;
        fused.push(name);
    }
    model.compact()?;
    Ok((fused, misses))
}

struct Match {
    /// q, k, v and the mask when there is one.
    inputs: TVec<OutletId>,
    axes: AttnAxes,
    scale: f32,
    /// A NaN guard followed the softmax.
    guarded: bool,
    /// The `EinSum(p, v)` node whose output the op replaces.
    last: usize,
}

/// The `Iff(IsNan(p), 0, p)` node when the softmax output `p` feeds exactly that guard.
fn nan_guard(model: &TypedModel, softmax: usize) -> TractResult<Option<usize>> {
    if model.output_outlets()?.iter().any(|o| o.node == softmax) {
        return Ok(None);
    }
    let succ: Vec<usize> = model.node(softmax).outputs[0].successors.iter().map(|i| i.node).collect();
    if succ.len() != 2 {
        return Ok(None);
    }
    let p = OutletId::new(softmax, 0);
    for (a, b) in [(succ[0], succ[1]), (succ[1], succ[0])] {
        let (isnan, iff) = (model.node(a), model.node(b));
        if isnan.op.name() != "IsNan" || iff.op.name() != "Iff" || iff.inputs.len() != 3 {
            continue;
        }
        if only_succ(model, a)?.map(|n| n.id) != Some(b) || iff.inputs[0] != OutletId::new(a, 0) || iff.inputs[2] != p {
            continue;
        }
        let is_zero = f32_const(model, iff.inputs[1])?.is_some_and(|(_, v)| v.iter().all(|x| *x == 0.0));
        if is_zero && model.outlet_fact(OutletId::new(b, 0))?.shape == model.outlet_fact(p)?.shape {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

fn is_f32(model: &TypedModel, o: OutletId) -> TractResult<bool> {
    Ok(model.outlet_fact(o)?.datum_type == f32::datum_type())
}

/// A constant holding a single f32.
fn scalar(model: &TypedModel, o: OutletId) -> TractResult<Option<f32>> {
    Ok(f32_const(model, o)?.filter(|(_, v)| v.len() == 1).map(|(_, v)| v[0]))
}

/// Positions of one einsum axis in (input 0, input 1, output), each absent or single.
type Pos = (Option<usize>, Option<usize>, Option<usize>);

fn positions(es: &EinSum) -> Option<Vec<Pos>> {
    let mut out = vec![];
    for axis in es.axes.iter_all_axes() {
        if axis.inputs.len() != 2 || axis.inputs.iter().any(|i| i.len() > 1) || axis.outputs[0].len() > 1 {
            return None;
        }
        out.push((axis.inputs[0].first().copied(), axis.inputs[1].first().copied(), axis.outputs[0].first().copied()));
    }
    Some(out)
}

fn plain_einsum(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Vec<Pos>>> {
    let Some(es) = node.op_as::<EinSum>() else { return Ok(None) };
    if node.inputs.len() != 2 || es.q_params.is_some() || es.operating_dt != f32::datum_type() {
        return Ok(None);
    }
    for i in &node.inputs {
        if !is_f32(model, *i)? || model.outlet_fact(*i)?.konst.is_some() {
            return Ok(None);
        }
    }
    let Some(axes) = positions(es) else { return Ok(None) };
    // Axes of size 1 wherever they appear sum and broadcast nothing (the batch axis once the
    // batch size is fixed at 1, squeezed on one side by tract): the op leaves them at index 0.
    let (a, b) = (model.outlet_fact(node.inputs[0])?, model.outlet_fact(node.inputs[1])?);
    let out = model.outlet_fact(OutletId::new(node.id, 0))?;
    let unit = |fact: &TypedFact, axis: Option<usize>| axis.is_none_or(|i| fact.shape[i].to_usize().ok() == Some(1));
    Ok(Some(axes.into_iter().filter(|p| !(unit(a, p.0) && unit(b, p.1) && unit(out, p.2))).collect()))
}

fn find(model: &TypedModel, softmax: usize) -> TractResult<Fit<Match>> {
    let sm_node = model.node(softmax);
    let sm = sm_node.op_as::<Softmax>().unwrap();
    if sm.kind != SoftmaxKind::Softmax || sm.axes.len() != 1 || sm.quant_output_dt.is_some() {
        return miss("not a plain (unquantized, non-log) softmax over one axis");
    }
    let key_axis = sm.axes[0];
    let scores_fact = model.outlet_fact(sm_node.inputs[0])?.clone();
    if scores_fact.datum_type != f32::datum_type() {
        return miss(format!("its input is {:?}, not f32", scores_fact.datum_type));
    }
    // Walk back: [Add(mask)] <- [Mul(scale)] <- EinSum(q, k), each used only by the next.
    let mut cur = sm_node.inputs[0].node;
    if only_succ(model, cur)?.map(|n| n.id) != Some(softmax) {
        return miss("its input is also used by another node or is a model output");
    }
    let mut mask = None;
    let mut scale = 1.0f32;
    if is_f32_bin_op(model.node(cur), "Add") {
        let node = model.node(cur);
        let mut picked = None;
        for (s, o) in [(0, 1), (1, 0)] {
            let (a, b) = (node.inputs[s], node.inputs[o]);
            let looks_like_scores = {
                let n = model.node(a.node);
                n.op_is::<EinSum>() || is_f32_bin_op(n, "Mul")
            };
            let mfact = model.outlet_fact(b)?;
            let mask_fits = mfact.konst.is_none()
                && mfact.datum_type == f32::datum_type()
                && mfact.rank() == scores_fact.rank()
                && mfact.shape.iter().zip(scores_fact.shape.iter()).all(|(m, s)| m == s || m.is_one());
            if looks_like_scores && mask_fits && only_succ(model, a.node)?.map(|n| n.id) == Some(cur) {
                picked = Some((a, b));
                break;
            }
        }
        let Some((a, b)) = picked else {
            return miss("the Add before it is not scores plus a mask broadcastable to them, each used once");
        };
        mask = Some(b);
        cur = a.node;
    }
    if is_f32_bin_op(model.node(cur), "Mul") {
        let node = model.node(cur);
        let found = match (scalar(model, node.inputs[0])?, scalar(model, node.inputs[1])?) {
            (Some(s), None) => Some((s, node.inputs[1])),
            (None, Some(s)) => Some((s, node.inputs[0])),
            _ => None,
        };
        let Some((s, other)) = found else { return miss("the Mul before it is not by one constant") };
        if only_succ(model, other.node)?.map(|n| n.id) != Some(cur) {
            return miss("the unscaled scores are also used by another node");
        }
        scale = s;
        cur = other.node;
    }
    let qk_node = model.node(cur);
    let Some(qk) = plain_einsum(model, qk_node)? else {
        return miss_at(
            format!("its scores come from {}, not from an einsum of two f32 activations (q·kᵀ)", qk_node.op.name()),
            qk_node,
        );
    };
    if model.outlet_fact(OutletId::new(cur, 0))?.shape != scores_fact.shape {
        return miss("q·kᵀ has another shape than the scores (the mask broadcasts it)");
    }
    // Roles in EinSum(q, k): batch (in both and out), query (first only), key (second only),
    // depth (both, summed). Either input may be q.
    let (mut batch, mut only0, mut only1, mut depth) = (vec![], vec![], vec![], vec![]);
    for p in &qk {
        match *p {
            (Some(a), Some(b), Some(o)) => batch.push((a, b, o)),
            (Some(a), None, Some(o)) => only0.push((a, o)),
            (None, Some(b), Some(o)) => only1.push((b, o)),
            (Some(a), Some(b), None) => depth.push((a, b)),
            _ => return miss("q·kᵀ has an axis that is summed away from one operand alone"),
        }
    }
    if only0.len() != 1 || only1.len() != 1 || depth.len() != 1 {
        return miss("q·kᵀ does not have exactly one query, one key and one depth axis");
    }
    let (q_slot, (q_m, s_m), (k_n, s_n), (q_d, k_d)) = if only1[0].1 == key_axis {
        (0, only0[0], only1[0], depth[0])
    } else if only0[0].1 == key_axis {
        (1, only1[0], only0[0], (depth[0].1, depth[0].0))
    } else {
        return miss("it normalizes over an axis that is not q·kᵀ's key axis");
    };
    let (q, k) = (qk_node.inputs[q_slot], qk_node.inputs[1 - q_slot]);
    // Forward: Softmax -> [NaN guard] -> EinSum(p, v).
    let guard = nan_guard(model, softmax)?;
    let p_node = guard.unwrap_or(softmax);
    let Some(pv_node) = only_succ(model, p_node)? else {
        return miss("its probabilities are used by several nodes or are a model output");
    };
    let Some(pv) = plain_einsum(model, pv_node)? else {
        return miss_at(
            format!("its probabilities feed {}, not an einsum with the values (p·v)", pv_node.op.name()),
            pv_node,
        );
    };
    let p_slot = pv_node.inputs.iter().position(|i| i.node == p_node).unwrap();
    if pv_node.inputs[1 - p_slot].node == p_node {
        return miss("p·v multiplies the probabilities by themselves");
    }
    let v = pv_node.inputs[1 - p_slot];
    let pick = |p: &Pos| if p_slot == 0 { (p.0, p.1, p.2) } else { (p.1, p.0, p.2) };
    let (mut outer, mut pv_query, mut pv_key, mut pv_dv) = (vec![], None, None, None);
    for p in pv.iter().map(pick) {
        match p {
            (Some(ps), Some(vp), Some(o)) => {
                // A batch axis of the scores: find its q/k positions.
                let Some(&(qa, ka, _)) = batch.iter().find(|b| b.2 == ps) else {
                    return miss("p·v has a batch axis that q·kᵀ does not");
                };
                let (qa, ka) = if q_slot == 0 { (qa, ka) } else { (ka, qa) };
                outer.push([qa, ka, vp, ps, o]);
            }
            (Some(ps), None, Some(o)) if ps == s_m && pv_query.is_none() => pv_query = Some(o),
            (Some(ps), Some(vp), None) if ps == s_n && pv_key.is_none() => pv_key = Some(vp),
            (None, Some(vp), Some(o)) if pv_dv.is_none() => pv_dv = Some((vp, o)),
            _ => return miss("p·v's axes are not the scores' batch, query and key axes and one value axis"),
        }
    }
    let (Some(out_m), Some(v_n), Some((v_dv, out_dv))) = (pv_query, pv_key, pv_dv) else {
        return miss("p·v does not keep the query axis, sum the key axis and add one value axis");
    };
    if outer.len() != batch.len() {
        return miss("p·v drops a batch axis of the scores");
    }
    // Batch, depth and key dims must agree exactly (einsum would broadcast a size-1 one).
    let (qf, kf, vf) = (model.outlet_fact(q)?, model.outlet_fact(k)?, model.outlet_fact(v)?);
    if outer.iter().any(|o| qf.shape[o[0]] != kf.shape[o[1]] || qf.shape[o[0]] != vf.shape[o[2]])
        || qf.shape[q_d] != kf.shape[k_d]
        || vf.shape[v_n] != kf.shape[k_n]
    {
        return miss("q, k and v disagree on a batch, depth or key size (the einsums broadcast one)");
    }
    let out_fact = model.outlet_fact(OutletId::new(pv_node.id, 0))?;
    let axes = AttnAxes {
        outer,
        q: (q_m, q_d),
        k: (k_n, k_d),
        v: (v_n, v_dv),
        mask: (s_m, s_n),
        out: (out_m, out_dv),
        out_rank: out_fact.rank(),
    };
    let mut inputs = tvec![q, k, v];
    inputs.extend(mask);
    // The op must produce exactly the fact it replaces.
    let op = MaskedAttention { axes: axes.clone(), scale, zero_masked_rows: false, isa: Isa::Portable, packed: None };
    let facts: TVec<&TypedFact> = inputs.iter().map(|o| model.outlet_fact(*o)).collect::<TractResult<_>>()?;
    if op.output_facts(&facts)?[0].shape != out_fact.shape {
        return miss("the fused op's output shape would differ from p·v's");
    }
    Ok(Ok(Match { inputs, axes, scale, guarded: guard.is_some(), last: pv_node.id }))
}
