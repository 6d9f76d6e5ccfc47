//! `Engine`: load an ONNX model once, run it many times from any thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sparsepipe_kernels::Isa;
use tract_core::internal::*;

use crate::array::{Array, ArrayRef, Data, TensorInfo};
use crate::checks::{self, IndexBound};
use crate::error::{chain, no_panic, Error, Result};
use crate::options::{below_one, EngineOptions};
use crate::report::LayerReport;
use crate::threads::{self, SharedPool};
use crate::{load, plan};

/// Time spent in one plan node: its name, operator and mean seconds per run.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTime {
    /// Node name in the optimized plan (weight matmuls keep their ONNX node name).
    pub name: String,
    /// Operator name.
    pub op: String,
    /// Mean wall time per run, in seconds.
    pub seconds: f64,
    /// Elements of the node's first output in the last run.
    pub output_elements: usize,
}

/// A subgraph replaced by one fused op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusedOp {
    /// `"attention"` (`q·kᵀ`, scale, mask, softmax, `·v`), `"qkv_projection"`, `"layer_norm"`,
    /// `"residual_add"` or `"linear_chain"`.
    pub kind: &'static str,
    /// The node that names it in the decluttered graph (the softmax, or the RMS norm).
    pub node: String,
}

/// A candidate for one kind of fused op that runs on the per-operator path instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusionMiss {
    /// The kind of fused op it could have been, as in [`FusedOp::kind`], or the op of ours a
    /// convolution or max pool could have become (`"convolution"`, `"max_pool"`).
    pub kind: &'static str,
    /// The node the pass looked at: a softmax (`"attention"`, `"qkv_projection"`), a
    /// normalization (`"layer_norm"`), an `Add` (`"residual_add"`) or the second of two
    /// weight matmuls (`"linear_chain"`).
    pub node: String,
    /// What did not match, and how to make it match when the user can.
    pub reason: String,
    /// The node the reason is about, when not `node` itself (e.g. a weight matmul it needs).
    pub related: Option<String>,
}

/// A loaded, optimized model; `run` may be called concurrently from several threads.
#[derive(Debug)]
pub struct Engine {
    plan: Arc<TypedRunnableModel>,
    /// The shared pool of this thread count; plans run inside it one at a time.
    pool: Arc<SharedPool>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    report: Vec<LayerReport>,
    fused: Vec<FusedOp>,
    misses: Vec<FusionMiss>,
    index_bounds: Vec<IndexBound>,
    options: EngineOptions,
    isa: Isa,
    path: PathBuf,
}

impl Engine {
    /// Loads the `.onnx` file at `path` and plans it for `options` (validated first).
    pub fn load(path: impl AsRef<Path>, options: EngineOptions) -> Result<Engine> {
        no_panic("loading the model", || Self::load_inner(path.as_ref(), options))
    }

    fn load_inner(path: &Path, options: EngineOptions) -> Result<Engine> {
        options.validate()?;
        let isa = options.resolved_isa();
        let pool = threads::shared_pool(threads::resolve_num_threads(options.num_threads)?)?;
        let load::Loaded { typed, inputs, outputs } = load::read_model(path)?;
        checks::check_batch_option(&inputs, options.batch_size)?;
        let plan::Planned { plan, report, fused, misses, index_bounds } =
            plan::build(typed, path, &options, isa, &pool)?;
        let path = path.to_path_buf();
        Ok(Engine { plan, pool, inputs, outputs, report, fused, misses, index_bounds, options, isa, path })
    }

    /// The model's inputs, in order.
    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    /// The model's outputs, in order.
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// Position of the input called `name`.
    pub fn input_index(&self, name: &str) -> Result<usize> {
        checks::input_index(&self.inputs, name)
    }

    /// `named` (input name, value) pairs in input order; `Error::Input` for a name the model
    /// does not have, a name given twice or an input left out.
    pub fn order_inputs<T>(&self, named: Vec<(String, T)>) -> Result<Vec<T>> {
        checks::order_by_name(&self.inputs, named)
    }

    /// Every constant-weight matmul and groups-1 convolution, and the kernel that runs it.
    pub fn sparsity_report(&self) -> &[LayerReport] {
        &self.report
    }

    /// The subgraphs that run as one fused op, in the order they were found.
    pub fn fused_ops(&self) -> &[FusedOp] {
        &self.fused
    }

    /// Every candidate for a fused op that was left to the per-operator path, with why; empty
    /// when fusion is off.
    pub fn fusion_misses(&self) -> &[FusionMiss] {
        &self.misses
    }

    /// Threads used by this engine.
    pub fn num_threads(&self) -> usize {
        self.pool.pool().current_num_threads()
    }

    /// Kernel instruction set in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The options the engine was loaded with.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Path of the ONNX file loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the model on `inputs` (in input order) and returns its outputs in output order.
    pub fn run(&self, inputs: &[ArrayRef<'_>]) -> Result<Vec<Array>> {
        no_panic("running the model", || {
            let tensors = self.checked_tensors(inputs)?;
            let outs = self.pool.run_exclusive(|| self.plan.run(tensors));
            let outs = outs.map_err(|e| Error::Engine(format!("running the model failed: {}", chain(&e))))?;
            outs.into_iter().map(|t| Ok(Array { shape: t.shape().to_vec(), data: Data::from_tensor(&t)? })).collect()
        })
    }

    /// Mean wall time per plan node over `iterations` (at least 1) runs on `inputs`, in plan
    /// order.
    pub fn profile(&self, inputs: &[ArrayRef<'_>], iterations: usize) -> Result<Vec<NodeTime>> {
        no_panic("profiling the model", || {
            if iterations == 0 {
                return Err(below_one("iterations", 0));
            }
            let tensors = self.checked_tensors(inputs)?;
            let mut totals: HashMap<usize, (f64, usize)> = HashMap::new();
            self.pool.run_exclusive(|| self.profile_runs(tensors, iterations, &mut totals))?;
            let model = self.plan.model();
            let mut ids: Vec<usize> = totals.keys().copied().collect();
            ids.sort_unstable();
            Ok(ids
                .into_iter()
                .map(|id| {
                    let node = model.node(id);
                    let (total, output_elements) = totals[&id];
                    let seconds = total / iterations as f64;
                    NodeTime { name: node.name.clone(), op: node.op().name().to_string(), seconds, output_elements }
                })
                .collect())
        })
    }

    /// Runs the plan `iterations` times on this thread, adding each node's wall time to `totals`
    /// (and recording its output size).
    fn profile_runs(
        &self,
        tensors: TVec<TValue>,
        iterations: usize,
        totals: &mut HashMap<usize, (f64, usize)>,
    ) -> Result<()> {
        let mut state = self.plan.spawn().map_err(|e| Error::Engine(chain(&e)))?;
        for _ in 0..iterations {
            state
                .run_plan_with_eval(tensors.clone(), |ctx, op_state, node, node_inputs| {
                    let start = std::time::Instant::now();
                    let out = tract_core::plan::eval(ctx, op_state, node, node_inputs);
                    let entry = totals.entry(node.id).or_default();
                    entry.0 += start.elapsed().as_secs_f64();
                    if let Ok(values) = &out {
                        entry.1 = values.first().map_or(0, |v| v.len());
                    }
                    out
                })
                .map_err(|e| Error::Engine(format!("profiling the model failed: {}", chain(&e))))?;
        }
        Ok(())
    }

    /// Validates `inputs` against the model and copies them into tract tensors.
    fn checked_tensors(&self, inputs: &[ArrayRef<'_>]) -> Result<TVec<TValue>> {
        checks::check_inputs(&self.inputs, self.options.batch_size, inputs)?;
        checks::check_indices(&self.index_bounds, &self.inputs, inputs)?;
        inputs
            .iter()
            .map(|a| a.data.to_tensor(a.shape).map(|t| t.into_tvalue()))
            .collect::<TractResult<_>>()
            .map_err(|e| Error::Engine(chain(&e)))
    }
}
