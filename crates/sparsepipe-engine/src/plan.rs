//! Turning a loaded model into the engine's plan: the batch fixed when asked, our passes in order
//! between tract's declutter and optimize, and the report of what was fused and what was not.

use std::path::Path;
use std::sync::Arc;

use sparsepipe_kernels::Isa;
use tract_core::internal::*;
use tract_linalg::multithread::Executor;

use crate::checks::{self, IndexBound};
use crate::engine::{FusedOp, FusionMiss};
use crate::error::Result;
use crate::load::load_err;
use crate::options::EngineOptions;
use crate::passes::{
    self,
    weight_matmul::{self, DenseBackend},
};
use crate::report::{LayerReport, RunsOn};
use crate::threads::SharedPool;

/// What [`build`] makes of a model.
pub(crate) struct Planned {
    pub plan: Arc<TypedRunnableModel>,
    pub report: Vec<LayerReport>,
    pub fused: Vec<FusedOp>,
    pub misses: Vec<FusionMiss>,
    pub index_bounds: Vec<IndexBound>,
}

/// Plans `typed` (loaded from `path`) for `options` on `isa`, its ops running on `pool`.
pub(crate) fn build(
    typed: TypedModel,
    path: &Path,
    options: &EngineOptions,
    isa: Isa,
    pool: &SharedPool,
) -> Result<Planned> {
    let typed = match options.batch_size {
        Some(b) => fix_batch(&typed, b).map_err(load_err(path))?,
        None => typed,
    };
    let mut typed = typed;
    passes::tdim_numeric::run(&mut typed).map_err(load_err(path))?;
    passes::guarded::declutter(&mut typed).map_err(load_err(path))?;
    let index_bounds = checks::index_bounds(&typed).map_err(load_err(path))?;
    let cfg = weight_matmul::Config {
        sparsity_threshold: options.sparsity_threshold,
        dense: options.dense_backend,
        isa,
        pool: pool.pool().clone(),
    };
    let mut report = weight_matmul::run(&mut typed, &cfg).map_err(load_err(path))?;
    let (conv_lines, conv_misses) = passes::conv::run(&mut typed, &cfg).map_err(load_err(path))?;
    report.extend(conv_lines);
    let mut fused = vec![];
    let mut misses = vec![];
    let mut missed = |kind: &'static str, found: Vec<passes::Miss>| {
        misses.extend(found.into_iter().map(|m| FusionMiss {
            kind,
            node: m.node,
            reason: m.reason,
            related: m.related,
        }))
    };
    missed("convolution", conv_misses);
    if options.fuse {
        let (found, missing) = passes::attention::run(&mut typed, isa).map_err(load_err(path))?;
        missed("attention", missing);
        for node in found {
            fused.push(FusedOp { kind: "attention", node });
        }
        let (found, missing) = passes::qkv::run(&mut typed).map_err(load_err(path))?;
        missed("qkv_projection", missing);
        for m in found {
            let out_channels = report.iter().filter(|l| m.parts.contains(&l.node)).map(|l| l.n).sum();
            for line in report.iter_mut().filter(|l| m.parts.contains(&l.node)) {
                line.plan_node = m.linear.clone();
                line.plan_output_channels = out_channels;
            }
            fused.push(FusedOp { kind: "qkv_projection", node: m.attention });
        }
        let (found, missing) = passes::layer_norm::run(&mut typed, isa).map_err(load_err(path))?;
        missed("layer_norm", missing);
        for node in found {
            fused.push(FusedOp { kind: "layer_norm", node });
        }
        let (found, missing) = passes::residual::run(&mut typed).map_err(load_err(path))?;
        missed("residual_add", missing);
        for (node, plan_node) in found {
            for line in report.iter_mut().filter(|l| l.plan_node == node) {
                line.plan_node = plan_node.clone();
            }
            fused.push(FusedOp { kind: "residual_add", node });
        }
        let (found, missing) = passes::chain::run(&mut typed).map_err(load_err(path))?;
        missed("linear_chain", missing);
        for c in found {
            let out_channels = report.iter().find(|l| l.plan_node == c.second).map(|l| l.plan_output_channels);
            for line in report.iter_mut().filter(|l| l.plan_node == c.first || l.plan_node == c.second) {
                line.plan_node = c.node.clone();
                line.plan_output_channels = out_channels.unwrap_or(line.plan_output_channels);
            }
            fused.push(FusedOp { kind: "linear_chain", node: c.first });
        }
    }
    explain_tract_matmuls(&mut misses, &report, options.dense_backend);
    passes::embedding::run(&mut typed).map_err(load_err(path))?;
    passes::softmax::run(&mut typed, isa).map_err(load_err(path))?;
    let pool_misses = passes::pool::run(&mut typed, isa).map_err(load_err(path))?;
    misses.extend(pool_misses.into_iter().map(|m| FusionMiss {
        kind: "max_pool",
        node: m.node,
        reason: m.reason,
        related: m.related,
    }));
    passes::broadcast_add::run(&mut typed).map_err(load_err(path))?;
    passes::guarded::optimize(&mut typed).map_err(load_err(path))?;
    let run_options = RunOptions { executor: Some(Executor::MultiThread(pool.pool().clone())), ..Default::default() };
    let plan = typed.into_runnable_with_options(&run_options).map_err(load_err(path))?;
    Ok(Planned { plan, report, fused, misses, index_bounds })
}

/// Says why each weight matmul a missed fusion needs runs on tract's matmul: the sparsity
/// threshold and dense backend options, or a layout our kernels do not take.
fn explain_tract_matmuls(misses: &mut [FusionMiss], report: &[LayerReport], dense: DenseBackend) {
    for m in misses.iter_mut().filter(|m| m.reason == passes::ON_TRACT_MATMUL) {
        let chosen = report.iter().any(|l| Some(&l.node) == m.related.as_ref() && l.isa == RunsOn::Tract);
        m.reason = if chosen && dense == DenseBackend::Auto {
            format!(
                "{}: its weight is below sparsity_threshold and tract's matmul was faster on its shape when \
                 timed at load (load with dense_backend='sparsepipe' to run it on ours)",
                m.reason
            )
        } else if chosen {
            format!(
                "{}: its weight is below sparsity_threshold and dense_backend='tract' (load with \
                 dense_backend='sparsepipe' to run it on ours)",
                m.reason
            )
        } else {
            format!(
                "{}: our kernels do not take the layout of its operands (e.g. contracted axes that are not \
                 adjacent, or a weight with a batch axis)",
                m.reason
            )
        };
    }
}

/// The model with the symbolic batch dimension of its inputs set to `batch`: concrete shapes let
/// tract pick its specialised convolution kernels (depthwise, direct, blocked).
fn fix_batch(model: &TypedModel, batch: usize) -> TractResult<TypedModel> {
    let mut subs = std::collections::HashMap::new();
    for outlet in model.input_outlets()? {
        if let Some(TDim::Sym(sym)) = model.outlet_fact(*outlet)?.shape.dims().first() {
            subs.insert(sym.clone(), TDim::Val(batch as i64));
        }
    }
    if subs.is_empty() {
        return Ok(model.clone());
    }
    model.set_symbols(&subs)
}
