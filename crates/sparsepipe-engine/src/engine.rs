//! `Engine`: load an ONNX model once, run it many times from any thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sparsepipe_kernels::Isa;
use tract_core::internal::*;

use crate::array::{Array, ArrayRef, DType, Data, Dim, TensorInfo};
use crate::checks::{self, IndexBound};
use crate::error::{chain, no_panic, Error, Result};
use crate::load::{load_typed, resolve_model_path};
use crate::passes::weight_matmul::DenseBackend;
use crate::plan;
use crate::report::LayerReport;
use crate::threads::{self, SharedPool};

/// Options fixed when a model is loaded.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// `None` accepts any batch size; `Some(b)` requires batch `b` on every call.
    pub batch_size: Option<usize>,
    /// `None`: `$SPARSEPIPE_NUM_THREADS`, else every core.
    pub num_threads: Option<usize>,
    /// Weights with at least this fraction of zeros run on the sparse kernel (above 1: never).
    pub sparsity_threshold: f64,
    /// Who runs weights below the threshold.
    pub dense_backend: DenseBackend,
    /// Kernel instruction set; `None` picks the best this CPU has.
    pub isa: Option<Isa>,
    /// Replace recognised subgraphs (scaled dot-product attention, layer normalization) by
    /// fused ops.
    pub fuse: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            batch_size: None,
            num_threads: None,
            sparsity_threshold: 0.5,
            dense_backend: DenseBackend::Auto,
            isa: None,
            fuse: true,
        }
    }
}

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
    /// Loads `path` (an `.onnx` file, or a directory holding `model.onnx`) and plans it.
    pub fn load(path: impl AsRef<Path>, options: EngineOptions) -> Result<Engine> {
        no_panic("loading the model", || Self::load_inner(path.as_ref(), options))
    }

    fn load_inner(path: &Path, options: EngineOptions) -> Result<Engine> {
        if options.sparsity_threshold.is_nan() || options.sparsity_threshold < 0.0 {
            return Err(Error::Config(format!(
                "sparsity_threshold must be between 0 and 1 (above 1 disables the sparse kernels), got {}",
                options.sparsity_threshold
            )));
        }
        if options.batch_size == Some(0) {
            return Err(Error::Config("batch_size must be at least 1, or None for any batch size".into()));
        }
        let isa = match options.isa {
            Some(isa) if !isa.is_supported() => {
                return Err(Error::Config(format!("this CPU does not support the {isa} kernels")))
            }
            Some(isa) => isa,
            None => Isa::best(),
        };
        let num_threads = threads::resolve_num_threads(options.num_threads)?;
        let pool = threads::shared_pool(num_threads)?;
        let path = resolve_model_path(path)?;
        let typed = load_typed(&path)?;
        let inputs = io_infos(&typed, typed.input_outlets().map_err(load_err(&path))?, true)?;
        let outputs = io_infos(&typed, typed.output_outlets().map_err(load_err(&path))?, false)?;
        check_batch_option(&inputs, options.batch_size)?;
        let plan::Planned { plan, report, fused, misses, index_bounds } =
            plan::build(typed, &path, &options, isa, &pool)?;
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
        self.inputs.iter().position(|i| i.name == name).ok_or_else(|| {
            let names: Vec<_> = self.inputs.iter().map(|i| format!("'{}'", i.name)).collect();
            Error::Input(format!("the model has no input named '{name}'; its inputs are {}", names.join(", ")))
        })
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

    /// Mean wall time per plan node over `iterations` runs on `inputs`, in plan order.
    pub fn profile(&self, inputs: &[ArrayRef<'_>], iterations: usize) -> Result<Vec<NodeTime>> {
        no_panic("profiling the model", || {
            let tensors = self.checked_tensors(inputs)?;
            let iterations = iterations.max(1);
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
        self.check_inputs(inputs)?;
        checks::check_indices(&self.index_bounds, &self.inputs, inputs)?;
        inputs
            .iter()
            .map(|a| a.data.to_tensor(a.shape).map(|t| t.into_tvalue()))
            .collect::<TractResult<_>>()
            .map_err(|e| Error::Engine(chain(&e)))
    }

    fn check_inputs(&self, inputs: &[ArrayRef<'_>]) -> Result<()> {
        if inputs.len() != self.inputs.len() {
            let names: Vec<_> = self.inputs.iter().map(|i| format!("'{}'", i.name)).collect();
            return Err(Error::Input(format!(
                "the model takes {} input(s) ({}), got {}",
                self.inputs.len(),
                names.join(", "),
                inputs.len()
            )));
        }
        let mut bound: HashMap<&str, (usize, &str)> = HashMap::new();
        for (info, arr) in self.inputs.iter().zip(inputs) {
            let name = &info.name;
            let given = arr.data.dtype();
            if let Some(want) = info.dtype {
                if want != given {
                    return Err(Error::Input(format!(
                        "input '{name}' must be {want}, got {given}: convert it with .astype(numpy.{want})"
                    )));
                }
            }
            let shape_str =
                |s: &[usize]| format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
            let expected = format!("({})", info.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
            if arr.shape.len() != info.shape.len() {
                return Err(Error::Input(format!(
                    "input '{name}' must have {} dimensions {expected}, got {} dimensions {}",
                    info.shape.len(),
                    arr.shape.len(),
                    shape_str(arr.shape)
                )));
            }
            let product = arr.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if product != Some(arr.data.len()) {
                return Err(Error::Input(format!(
                    "input '{name}' has {} values but shape {}",
                    arr.data.len(),
                    shape_str(arr.shape)
                )));
            }
            for (axis, (dim, &got)) in info.shape.iter().zip(arr.shape).enumerate() {
                match dim {
                    Dim::Fixed(want) if *want != got => {
                        return Err(Error::Input(format!(
                            "input '{name}' must have shape {expected}, got {}: dimension {axis} must be {want}",
                            shape_str(arr.shape)
                        )));
                    }
                    Dim::Symbol(sym) => {
                        if got == 0 {
                            return Err(Error::Input(format!(
                                "input '{name}' has an empty dimension {axis} ('{sym}'); pass at least one element"
                            )));
                        }
                        if axis == 0 {
                            if let Some(b) = self.options.batch_size {
                                if got != b {
                                    return Err(Error::Input(format!(
                                        "this engine was created with batch_size={b}, but input '{name}' has batch {got}; \
                                         pass {b} item(s) per call or create the Engine with batch_size=None"
                                    )));
                                }
                            }
                        }
                        if is_identifier(sym) {
                            match bound.get(sym.as_str()) {
                                Some(&(v, other)) if v != got => {
                                    return Err(Error::Input(format!(
                                        "input '{name}' has {sym}={got} (dimension {axis}) but input '{other}' has {sym}={v}; \
                                         inputs sharing a dimension name must agree"
                                    )));
                                }
                                _ => {
                                    bound.insert(sym, (got, name));
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// A tract error while preparing `path`, as a load error that says what to try.
pub(crate) fn load_err(path: &Path) -> impl Fn(tract_core::prelude::TractError) -> Error + '_ {
    move |e| {
        Error::ModelLoad(format!(
            "could not prepare {} for inference: {}. The model may use an operator configuration \
             tract 0.23 does not support; simplify or re-export it (opset 13-17)",
            path.display(),
            chain(&e)
        ))
    }
}

fn io_infos(model: &TypedModel, outlets: &[OutletId], inputs: bool) -> Result<Vec<TensorInfo>> {
    outlets
        .iter()
        .map(|&o| {
            let fact = model.outlet_fact(o).map_err(|e| Error::ModelLoad(chain(&e)))?;
            let name = if inputs {
                model.node(o.node).name.clone()
            } else {
                model.outlet_label(o).map(|s| s.to_string()).unwrap_or_else(|| model.node(o.node).name.clone())
            };
            let shape = fact
                .shape
                .iter()
                .map(|d| match d.to_usize() {
                    Ok(v) => Dim::Fixed(v),
                    Err(_) => Dim::Symbol(d.to_string()),
                })
                .collect();
            Ok(TensorInfo { name, dtype: DType::from_datum(fact.datum_type), shape })
        })
        .collect()
}

fn check_batch_option(inputs: &[TensorInfo], batch: Option<usize>) -> Result<()> {
    let Some(b) = batch else { return Ok(()) };
    for info in inputs {
        if let Some(Dim::Fixed(d)) = info.shape.first() {
            if *d != b {
                return Err(Error::Config(format!(
                    "batch_size={b} was requested but input '{}' has a fixed batch of {d}; \
                     use batch_size={d} or None",
                    info.name
                )));
            }
        }
    }
    Ok(())
}
