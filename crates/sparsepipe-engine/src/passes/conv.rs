//! Replaces every 2-D convolution with a constant f32 kernel (channels-first, concrete image
//! size) that tract's declutter left a `Conv` — k×k, strided, padded, dilated — by a
//! [`WeightConv`]: groups 1 on our sparse or dense kernels as implicit GEMM, depthwise (one filter
//! per channel) on our direct kernel; each folds its bias and the bias/ReLU/clamp after it. 1x1
//! stride-1 convolutions are already matmuls (`weight_matmul`).

use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat};
use tract_core::ops::nn::DataFormat;

use super::weight_matmul::{Config, DenseBackend};
use super::{epilogue, Miss};
use crate::conv_op::{geometry, ConvKernel, WeightConv};
use crate::report::{zero_fraction, Kernel, LayerReport, RunsOn};
use sparsepipe_kernels::{Depthwise, Epilogue, PackedLinear};

/// The side a symbolic image axis is timed at when choosing between tract and our kernels.
const SYMBOLIC_SIDE: usize = 64;

/// A convolution the pass can run: its geometry, weight `[O, C, kh, kw]` (`[C, 1, kh, kw]` when
/// depthwise) and bias.
struct Found {
    /// Input channels, and the kernel's height and width.
    c: usize,
    kernel: (usize, usize),
    /// The data shape the choice of kernel is timed on (a symbolic batch at 1, a symbolic
    /// image side at [`SYMBOLIC_SIDE`]).
    timing: TVec<usize>,
    depthwise: bool,
    has_n: bool,
    weight: Arc<Tensor>,
    /// One value per output channel (a scalar bias repeated), `None` when all zero.
    bias: Option<Vec<f32>>,
}

/// Runs the pass; returns one report line per constant-kernel convolution it took or timed, and
/// why each other convolution stays with tract.
pub fn run(model: &mut TypedModel, cfg: &Config) -> TractResult<(Vec<LayerReport>, Vec<Miss>)> {
    let (mut report, mut misses) = (vec![], vec![]);
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else { continue };
        let found = match analyze(model, node, conv)? {
            Ok(found) => found,
            Err(why) => {
                let reason = format!("{why}; it runs on tract's convolution");
                misses.push(Miss { node: node.name.clone(), reason, related: None });
                continue;
            }
        };
        if found.depthwise {
            let conv = conv.clone();
            depthwise(model, id, &conv, found, cfg)?;
            continue;
        }
        let ((kh, kw), o) = (found.kernel, found.weight.shape()[0]);
        let k = found.c * kh * kw;
        let spec = conv.pool_spec.clone();
        let strides = spec.strides();
        let w = found.weight.try_as_plain_ram()?.as_slice::<f32>()?;
        let sparsity = zero_fraction(w);
        let sparse = sparsity >= cfg.sparsity_threshold;
        let mut line = LayerReport {
            node: node.name.clone(),
            pattern: format!("conv {kh}x{kw} stride {}x{}", strides[0], strides[1]),
            weight_shape: found.weight.shape().to_vec(),
            k,
            n: o,
            sparsity,
            kernel: if sparse { Kernel::Sparse } else { Kernel::Dense },
            isa: RunsOn::Ours(cfg.isa),
            fused: vec![],
            plan_node: node.name.clone(),
            plan_output_channels: o,
        };
        // Weight row `kk` of output channel `nn` is stored at `nn·K + kk` ([O, C, kh, kw]).
        let at = |kk: usize, nn: usize| w[nn * k + kk];
        let on_tract = match cfg.dense {
            _ if sparse => false,
            DenseBackend::Tract => true,
            DenseBackend::Sparsepipe => false,
            DenseBackend::Auto => {
                let facts: Vec<TypedFact> = model.node_input_facts(id)?.into_iter().cloned().collect();
                let shape = found.timing.clone();
                let key = crate::timing::ChoiceKey {
                    pattern: format!("{} {spec:?}", line.pattern),
                    data: shape.clone(),
                    weight: found.weight.shape().to_vec(),
                    threads: cfg.pool.current_num_threads(),
                    isa: cfg.isa.name(),
                };
                let ours = || {
                    let ours = ConvKernel::Gemm(Arc::new(PackedLinear::dense(k, o, at, Default::default())));
                    Ok(Box::new(WeightConv::new(ours, spec.clone(), found.c, found.has_n, cfg.isa)) as Box<dyn TypedOp>)
                };
                crate::timing::tract_is_faster(key, &facts, (0, &shape), Box::new(conv.clone()), ours, &cfg.pool)
            }
        };
        if on_tract {
            line.isa = RunsOn::Tract;
            report.push(line);
            continue;
        }
        let c_axis = found.has_n as usize;
        let mut absorbed = epilogue::absorb(model, id, c_axis, o)?;
        let bias = add_biases(found.bias, absorbed.epilogue.bias.take());
        let epi = Epilogue { bias, ..absorbed.epilogue };
        let packed = if sparse { PackedLinear::sparse(k, o, at, epi) } else { PackedLinear::dense(k, o, at, epi) };
        let op = WeightConv::new(ConvKernel::Gemm(Arc::new(packed)), spec, found.c, found.has_n, cfg.isa);
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, node.inputs[0])?;
        let y = patch.wire_node(&node.name, op, &[x])?;
        patch.shunt_outside(model, OutletId::new(absorbed.last, 0), y[0])?;
        patch.apply(model)?;
        line.fused = absorbed.names;
        report.push(line);
    }
    model.compact()?;
    Ok((report, misses))
}

/// The convolution's own bias plus the one absorbed after it, channel by channel.
fn add_biases(own: Option<Vec<f32>>, after: Option<Vec<f32>>) -> Option<Vec<f32>> {
    match (own, after) {
        (Some(a), Some(b)) => Some(a.iter().zip(&b).map(|(a, b)| a + b).collect()),
        (a, b) => a.or(b),
    }
}

/// Replaces the depthwise convolution `id` by ours, unless the dense backend (or its timing)
/// keeps it on tract. Not a weight matmul: no report line.
fn depthwise(model: &mut TypedModel, id: usize, conv: &Conv, found: Found, cfg: &Config) -> TractResult<()> {
    let c = found.c;
    let w = found.weight.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let make = |epi| {
        let dw = Depthwise::new(c, found.kernel, &w, epi).map_err(|e| format_err!("{e}"))?;
        TractResult::Ok(WeightConv::new(
            ConvKernel::Depthwise(Arc::new(dw)),
            conv.pool_spec.clone(),
            c,
            found.has_n,
            cfg.isa,
        ))
    };
    let keep = match cfg.dense {
        DenseBackend::Tract => true,
        DenseBackend::Sparsepipe => false,
        DenseBackend::Auto => {
            let facts: Vec<TypedFact> = model.node_input_facts(id)?.into_iter().cloned().collect();
            let shape = found.timing.clone();
            let key = crate::timing::ChoiceKey {
                pattern: format!("depthwise {:?}", conv.pool_spec),
                data: shape.clone(),
                weight: found.weight.shape().to_vec(),
                threads: cfg.pool.current_num_threads(),
                isa: cfg.isa.name(),
            };
            let ours = || Ok(Box::new(make(Default::default())?) as Box<dyn TypedOp>);
            crate::timing::tract_is_faster(key, &facts, (0, &shape), Box::new(conv.clone()), ours, &cfg.pool)
        }
    };
    if keep {
        return Ok(());
    }
    let mut absorbed = epilogue::absorb(model, id, found.has_n as usize, c)?;
    let bias = add_biases(found.bias, absorbed.epilogue.bias.take());
    let op = make(Epilogue { bias, ..absorbed.epilogue })?;
    let node = model.node(id);
    let mut patch = TypedModelPatch::default();
    let x = patch.tap_model(model, node.inputs[0])?;
    let y = patch.wire_node(&node.name, op, &[x])?;
    patch.shunt_outside(model, OutletId::new(absorbed.last, 0), y[0])?;
    patch.apply(model)
}

/// The convolution's channels, kernel, weight and bias when our kernels can run it: f32,
/// groups 1 or depthwise, OIHW kernel and bias constants, channels-first input with concrete
/// channels (the image size may be symbolic); otherwise why not.
fn analyze(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Result<Found, String>> {
    let spec = &conv.pool_spec;
    let has_n = match spec.data_format {
        DataFormat::NCHW => true,
        DataFormat::CHW => false,
        _ => return Ok(Err("its input is channels-last (NHWC); our kernels read NCHW".into())),
    };
    if conv.q_params.is_some() {
        return Ok(Err("it is quantized".into()));
    }
    if conv.kernel_fmt != KernelFormat::OIHW || spec.rank() != 2 {
        return Ok(Err(format!("it is not a 2-D convolution with an OIHW kernel ({:?})", conv.kernel_fmt)));
    }
    if node.inputs.len() != 3 {
        return Ok(Err("it has no bias input after declutter".into()));
    }
    let facts = model.node_input_facts(node.id)?;
    let f32t = f32::datum_type();
    let out = model.outlet_fact(OutletId::new(node.id, 0))?;
    if facts.iter().any(|f| f.datum_type != f32t) || out.datum_type != f32t {
        return Ok(Err("it is not f32".into()));
    }
    let (Some(weight), Some(bias)) = (facts[1].konst.clone(), facts[2].konst.clone()) else {
        return Ok(Err("its kernel or bias is not a constant".into()));
    };
    if !weight.is_plain() || !bias.is_plain() || weight.rank() != 4 {
        return Ok(Err("its kernel is not a plain rank-4 tensor".into()));
    }
    let x = &facts[0].shape;
    let lead = has_n as usize;
    if x.len() != 3 + lead {
        return Ok(Err(format!("its input has rank {}", x.len())));
    }
    let Ok(c) = x[lead].to_usize() else { return Ok(Err("its channel count is symbolic".into())) };
    let (h, w) = (x[lead + 1].to_usize().ok(), x[lead + 2].to_usize().ok());
    let ws = weight.shape();
    let o = ws[0];
    // Groups 1, or one filter per channel (a channel multiplier above 1 stays with tract).
    let depthwise = conv.group > 1 && conv.group == c && o == c && ws[1] == 1;
    let in_per_group = if depthwise { 1 } else { c };
    if !(conv.group == 1 || depthwise) || ws[1] != in_per_group || o != spec.output_channels {
        return Ok(Err(format!(
            "it has {} groups of {} input channels (our kernels take groups 1 and depthwise)",
            conv.group, ws[1]
        )));
    }
    if ws[2] != spec.kernel_shape[0] || ws[3] != spec.kernel_shape[1] {
        return Ok(Err("its kernel shape differs from its attributes".into()));
    }
    let b = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let bias = match b.len() {
        _ if b.iter().all(|v| *v == 0.0) => None,
        1 if bias.rank() == 0 => Some(vec![b[0]; o]),
        len if len == o => Some(b),
        _ => return Ok(Err(format!("its bias has {} values for {o} output channels", b.len()))),
    };
    // A concrete image must fit the window now; a symbolic one is checked on each call.
    if let (Some(h), Some(w)) = (h, w) {
        if let Err(e) = geometry(spec, c, h, w) {
            return Ok(Err(format!("its geometry does not fit our kernels: {e}")));
        }
    }
    let mut timing: TVec<usize> = x.iter().map(|d| d.to_usize().unwrap_or(SYMBOLIC_SIDE)).collect();
    if has_n && x[0].to_usize().is_err() {
        timing[0] = 1;
    }
    let kernel = (ws[2], ws[3]);
    Ok(Ok(Found { c, kernel, timing, depthwise, has_n, weight, bias }))
}
