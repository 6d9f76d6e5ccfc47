//! Replaces every matmul with a constant f32 weight (an `EinSum` after declutter, in any of the
//! layouts exporters produce) by a [`WeightLinear`] running our kernels, choosing sparse or dense
//! per weight and folding the following bias and clamp into it.

use std::sync::Arc;

use rayon::ThreadPool;
use sparsepipe_kernels::{Epilogue, Isa, PackedLinear};
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;

use super::epilogue;
use crate::op::{OutAxis, WeightLinear};
use crate::report::{zero_fraction, Kernel, LayerReport, RunsOn};

/// Who runs weights that are not sparse enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseBackend {
    /// Whichever of the two is faster on the weight's shape, timed at load on the plan's threads
    /// (once per distinct shape; a symbolic axis timed at [`crate::timing::SYMBOLIC_ROWS`]).
    Auto,
    /// tract's own packed matmul (multi-threaded by its executor).
    Tract,
    /// sparsepipe's dense kernel.
    Sparsepipe,
}

/// Settings of the pass.
#[derive(Debug, Clone)]
pub struct Config {
    /// A weight with at least this fraction of zeros runs on the sparse kernel.
    pub sparsity_threshold: f64,
    pub dense: DenseBackend,
    pub isa: Isa,
    /// The pool plans run on, for [`DenseBackend::Auto`]'s timing.
    pub pool: Arc<ThreadPool>,
}

/// How an EinSum's inputs map onto `[outer, K, inner] x [K, N]`.
#[derive(Debug)]
struct Layout {
    data_slot: usize,
    k_start: usize,
    k_axes: usize,
    out_axes: Vec<OutAxis>,
    k: usize,
    n: usize,
    /// Flat weight offset of each contracted index, in the data's axis order.
    k_offsets: Vec<usize>,
    n_stride: usize,
    weight: Arc<Tensor>,
}

/// Runs the pass; returns one report line per constant-weight matmul found.
pub fn run(model: &mut TypedModel, cfg: &Config) -> TractResult<Vec<LayerReport>> {
    let mut report = vec![];
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(es) = node.op_as::<EinSum>() else { continue };
        let Some(layout) = analyze(model, node, es)? else { continue };
        let w = layout.weight.try_as_plain_ram()?.as_slice::<f32>()?;
        let sparsity = zero_fraction(w);
        let sparse = sparsity >= cfg.sparsity_threshold;
        let mut line = LayerReport {
            node: node.name.clone(),
            pattern: es.axes.to_string(),
            weight_shape: layout.weight.shape().to_vec(),
            k: layout.k,
            n: layout.n,
            sparsity,
            kernel: if sparse { Kernel::Sparse } else { Kernel::Dense },
            isa: RunsOn::Ours(cfg.isa),
            fused: vec![],
            plan_node: node.name.clone(),
            plan_output_channels: layout.n,
        };
        let on_tract = match cfg.dense {
            _ if sparse => false,
            DenseBackend::Tract => true,
            DenseBackend::Sparsepipe => false,
            DenseBackend::Auto => {
                let facts: Vec<TypedFact> = model.node_input_facts(id)?.into_iter().cloned().collect();
                let shape = crate::timing::timing_shape(&facts[layout.data_slot]);
                let key = crate::timing::ChoiceKey {
                    pattern: es.axes.to_string(),
                    data: shape.clone(),
                    weight: layout.weight.shape().to_vec(),
                    threads: cfg.pool.current_num_threads(),
                    isa: cfg.isa.name(),
                };
                let ours = || {
                    let at = |kk: usize, nn: usize| w[layout.k_offsets[kk] + nn * layout.n_stride];
                    let ours = PackedLinear::dense(layout.k, layout.n, at, Epilogue::default());
                    let ours = WeightLinear::new(ours, layout.k_start, layout.k_axes, layout.out_axes.clone(), cfg.isa);
                    Ok(Box::new(ours) as Box<dyn TypedOp>)
                };
                let data = (layout.data_slot, &shape[..]);
                crate::timing::tract_is_faster(key, &facts, data, Box::new(es.clone()), ours, &cfg.pool)
            }
        };
        if on_tract {
            line.isa = RunsOn::Tract;
            report.push(line);
            continue;
        }
        let n_pos = layout.out_axes.iter().position(|a| *a == OutAxis::N).unwrap_or(usize::MAX);
        let absorbed = epilogue::absorb(model, id, n_pos, layout.n)?;
        let at = |kk: usize, nn: usize| w[layout.k_offsets[kk] + nn * layout.n_stride];
        let packed = if sparse {
            PackedLinear::sparse(layout.k, layout.n, at, absorbed.epilogue)
        } else {
            PackedLinear::dense(layout.k, layout.n, at, absorbed.epilogue)
        };
        let op = WeightLinear::new(packed, layout.k_start, layout.k_axes, layout.out_axes, cfg.isa);
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, node.inputs[layout.data_slot])?;
        let y = patch.wire_node(&node.name, op, &[x])?;
        patch.shunt_outside(model, OutletId::new(absorbed.last, 0), y[0])?;
        patch.apply(model)?;
        line.fused = absorbed.names;
        report.push(line);
    }
    model.compact()?;
    Ok(report)
}

/// Recognises `data x const-weight` EinSums whose contracted axes are contiguous in the data.
fn analyze(model: &TypedModel, node: &TypedNode, es: &EinSum) -> TractResult<Option<Layout>> {
    if node.inputs.len() != 2 || es.q_params.is_some() || es.operating_dt != f32::datum_type() {
        return Ok(None);
    }
    let facts = model.node_input_facts(node.id)?;
    let out_fact = model.outlet_fact(OutletId::new(node.id, 0))?;
    let (w_slot, d_slot) = match (facts[0].konst.is_some(), facts[1].konst.is_some()) {
        (false, true) => (1, 0),
        (true, false) => (0, 1),
        _ => return Ok(None),
    };
    let f32t = f32::datum_type();
    if facts[d_slot].datum_type != f32t || facts[w_slot].datum_type != f32t || out_fact.datum_type != f32t {
        return Ok(None);
    }
    let weight = facts[w_slot].konst.clone().unwrap();
    if !weight.is_plain() {
        return Ok(None);
    }
    let (rd, rw, ro) = (facts[d_slot].rank(), weight.rank(), out_fact.rank());
    let mut k_axes = vec![]; // (data pos, weight pos)
    let mut out_axes = vec![OutAxis::One; ro];
    let mut squeezed = 0; // size-1 data axes summed away
    let mut unit_w = 0; // size-1 weight axes summed away
    let mut n_axis = None; // weight pos
    let is_one = |d: &TDim| d.to_usize().ok() == Some(1);
    for axis in es.axes.iter_all_axes() {
        let (d, w, o) = (&axis.inputs[d_slot], &axis.inputs[w_slot], &axis.outputs[0]);
        if d.len() > 1 || w.len() > 1 || o.len() > 1 {
            return Ok(None);
        }
        match (d.first(), w.first(), o.first()) {
            (Some(&pd), Some(&pw), None) => k_axes.push((pd, pw)),
            (Some(&pd), None, Some(&po)) => out_axes[po] = OutAxis::Input(pd),
            (Some(&pd), None, None) if is_one(&facts[d_slot].shape[pd]) => squeezed += 1,
            (None, Some(&pw), None) if weight.shape()[pw] == 1 => unit_w += 1,
            (None, Some(&pw), Some(&po)) if n_axis.is_none() => {
                n_axis = Some(pw);
                out_axes[po] = OutAxis::N;
            }
            (None, None, Some(&po)) if is_one(&out_fact.shape[po]) => out_axes[po] = OutAxis::One,
            _ => return Ok(None),
        }
    }
    if k_axes.is_empty() || rw != k_axes.len() + unit_w + n_axis.is_some() as usize {
        return Ok(None);
    }
    k_axes.sort();
    let k_start = k_axes[0].0;
    let nk = k_axes.len();
    if k_axes.iter().enumerate().any(|(i, &(pd, _))| pd != k_start + i) {
        return Ok(None);
    }
    let ws = weight.shape();
    let n = n_axis.map_or(1, |pw| ws[pw]);
    // In memory the result is [data axes before K, N, data axes after K]: the output must list
    // them in that order, size-1 axes (and N when it is 1) aside.
    let kept = |a: &&OutAxis| !(matches!(a, OutAxis::One) || (matches!(a, OutAxis::N) && n == 1));
    let got: Vec<OutAxis> = out_axes.iter().filter(kept).cloned().collect();
    let mut want: Vec<OutAxis> =
        out_axes.iter().filter(|a| matches!(a, OutAxis::Input(p) if *p < k_start)).cloned().collect();
    want.sort_by_key(|a| if let OutAxis::Input(p) = a { *p } else { 0 });
    let n_at = want.len();
    let mut after: Vec<OutAxis> =
        out_axes.iter().filter(|a| matches!(a, OutAxis::Input(p) if *p > k_start)).cloned().collect();
    after.sort_by_key(|a| if let OutAxis::Input(p) = a { *p } else { 0 });
    want.extend(after);
    if n > 1 {
        want.insert(n_at, OutAxis::N);
    }
    let m_count = out_axes.iter().filter(|a| matches!(a, OutAxis::Input(_))).count();
    if got != want || rd != nk + m_count + squeezed {
        return Ok(None);
    }
    let mut strides = vec![1usize; rw];
    for i in (0..rw.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * ws[i + 1];
    }
    let k: usize = k_axes.iter().map(|&(_, pw)| ws[pw]).product();
    let mut k_offsets = Vec::with_capacity(k);
    let mut counter = vec![0usize; nk];
    for _ in 0..k {
        k_offsets.push(counter.iter().zip(&k_axes).map(|(c, &(_, pw))| c * strides[pw]).sum());
        for j in (0..nk).rev() {
            counter[j] += 1;
            if counter[j] < ws[k_axes[j].1] {
                break;
            }
            counter[j] = 0;
        }
    }
    Ok(Some(Layout {
        data_slot: d_slot,
        k_start,
        k_axes: nk,
        out_axes,
        k,
        n,
        k_offsets,
        n_stride: n_axis.map_or(0, |pw| strides[pw]),
        weight,
    }))
}
