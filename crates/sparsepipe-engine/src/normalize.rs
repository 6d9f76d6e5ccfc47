//! ONNX-level rewrites applied before tract types the graph: constructs that tract 0.23.9
//! cannot type or build become equivalent ones it can. One function per rewrite, each with why.
//!
//! Survey of tract-hir 0.23.9 and tract-onnx 0.23.9 for the symbolic-shape restriction: `Flatten`
//! is the one operator whose shape rule refuses an input with more than one symbolic dimension
//! (`Flatten::compute_shape`: "Can not compute a shape with square of symbols"). `Reshape`,
//! `Expand`, `Tile`, `ConstantOfShape`, `Range`, `Slice` (opset 10+) and `Shape` compute with
//! symbolic dimension values and need no rewrite; the opset 1-9 `Slice` (attribute form) refuses a
//! symbolic sliced axis, but tract picks that form from the model's opset, so it cannot be
//! rewritten without changing the opset (a re-export at opset 10 or later fixes it).

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::type_proto::Value;
use tract_onnx::pb::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};

/// Rewrites every graph of `model` (subgraphs included) in place; an error names a node whose
/// attributes make no sense for its input.
pub(crate) fn normalize(model: &mut ModelProto) -> Result<(), String> {
    let opset = default_opset(model);
    let mut names = Names::default();
    if let Some(graph) = model.graph.as_ref() {
        names.collect(graph);
    }
    if let Some(graph) = model.graph.as_mut() {
        normalize_graph(graph, opset, &mut names)?;
    }
    Ok(())
}

/// The version of the default (`ai.onnx`) operator set the model imports; 0 when none.
fn default_opset(model: &ModelProto) -> i64 {
    model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map_or(0, |o| o.version)
}

/// Every tensor name of the model (all scopes), so generated names never shadow one.
#[derive(Debug, Default)]
struct Names(HashSet<String>);

impl Names {
    fn collect(&mut self, graph: &GraphProto) {
        let infos = graph.input.iter().chain(&graph.output).chain(&graph.value_info);
        self.0.extend(infos.map(|v| v.name.clone()));
        self.0.extend(graph.initializer.iter().map(|t| t.name.clone()));
        for node in &graph.node {
            self.0.extend(node.input.iter().chain(&node.output).cloned());
            for attr in &node.attribute {
                for g in attr.g.iter().chain(&attr.graphs) {
                    self.collect(g);
                }
            }
        }
    }

    /// `base`, or `base` with the first counter that makes it unused; reserved from then on.
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.0.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

fn normalize_graph(graph: &mut GraphProto, opset: i64, names: &mut Names) -> Result<(), String> {
    for node in graph.node.iter_mut() {
        for attr in node.attribute.iter_mut() {
            if let Some(g) = attr.g.as_mut() {
                normalize_graph(g, opset, names)?;
            }
            for g in attr.graphs.iter_mut() {
                normalize_graph(g, opset, names)?;
            }
        }
    }
    flatten_to_reshape(graph, opset, names)?;
    skip_layer_norm_zero_beta(graph, names);
    fused_matmul_to_standard(graph, names);
    fused_gemm_to_standard(graph, names);
    Ok(())
}

/// Declared ranks of the graph's tensors (inputs, outputs, value_info with a shape).
fn declared_ranks(graph: &GraphProto) -> HashMap<&str, usize> {
    let rank = |v: &ValueInfoProto| match v.r#type.as_ref()?.value.as_ref()? {
        Value::TensorType(t) => t.shape.as_ref().map(|s| s.dim.len()),
        #[allow(unreachable_patterns)]
        _ => None,
    };
    graph
        .input
        .iter()
        .chain(&graph.output)
        .chain(&graph.value_info)
        .filter_map(|v| Some((v.name.as_str(), rank(v)?)))
        .collect()
}

/// `Flatten(x, axis)` → `Reshape`s with computed shapes.
///
/// Why: tract-hir's `Flatten` refuses an input with two or more symbolic dimensions, and
/// transformers 5.x exports `Cast(attention_mask) → Flatten(axis=2)` on a `[batch, sequence]`
/// mask, so every such text model failed to load. `Reshape` computes symbolic products.
/// The rewrite needs no knowledge of the input's rank:
/// - `axis == 0`: `Reshape(x, [1, -1])`;
/// - `axis == 1`: `Reshape(x, [0, -1])`;
/// - `axis > 1`: `y = Reshape(x, [0; axis] ++ [-1])` merges the trailing dimensions into one
///   (`[d0 .. d(axis-1), tail]`), then `Reshape(y, [-1, tail])` with `tail` read by
///   `Gather(Shape(y), [axis])` merges the leading ones;
/// - `axis < 0`: the leading dimensions are read by `Slice(Shape(x), [0], [axis])` instead of
///   written as zeros (opset 10+, where `Slice` takes inputs; older graphs keep their `Flatten`).
fn flatten_to_reshape(graph: &mut GraphProto, opset: i64, names: &mut Names) -> Result<(), String> {
    // Reshape takes its shape as an input from opset 5 on.
    if opset != 0 && opset < 5 {
        return Ok(());
    }
    let ranks: HashMap<String, usize> = declared_ranks(graph).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let mut out: Vec<NodeProto> = Vec::with_capacity(graph.node.len());
    let mut constants: Vec<TensorProto> = vec![];
    for node in std::mem::take(&mut graph.node) {
        let is_flatten = node.op_type == "Flatten" && is_default_domain(&node.domain);
        let axis = if is_flatten { int_attr(&node, "axis").unwrap_or(1) } else { 0 };
        if !is_flatten || node.input.len() != 1 || node.output.len() != 1 || (axis < 0 && opset != 0 && opset < 10) {
            out.push(node);
            continue;
        }
        let (x, y) = (node.input[0].clone(), node.output[0].clone());
        if let Some(&rank) = ranks.get(&x) {
            if axis < -(rank as i64) || axis > rank as i64 {
                return Err(format!(
                    "Flatten node '{}' has axis={axis}, but its input '{x}' has rank {rank}: axis must be \
                     in [-{rank}, {rank}]; fix the axis attribute or re-export the model",
                    node.name
                ));
            }
        }
        let node_name = node_name(&node).to_string();
        let base = format!("{y}__sparsepipe_flatten");
        let mut fresh = |suffix: &str| names.fresh(&format!("{base}_{suffix}"));
        let mut new = |op: &str, inputs: Vec<String>, output: String, suffix: &str| {
            let mut node = plain_node(op, &format!("{node_name}/{suffix}"), inputs, vec![output]);
            if op == "Concat" {
                node.attribute.push(int_attribute("axis", 0));
            }
            out.push(node);
        };
        if axis == 0 || axis == 1 {
            let shape = fresh("shape");
            constants.push(int64_tensor(&shape, &if axis == 0 { [1, -1] } else { [0, -1] }));
            new("Reshape", vec![x, shape], y, "reshape");
        } else {
            let merged_tail = fresh("tail_merged");
            if axis > 0 {
                let mut spec = vec![0i64; axis as usize];
                spec.push(-1);
                let shape1 = fresh("shape1");
                constants.push(int64_tensor(&shape1, &spec));
                new("Reshape", vec![x, shape1], merged_tail.clone(), "merge_tail");
            } else {
                let [zero, end, minus_one, x_shape, head, shape1] =
                    ["zero", "axis", "minus_one", "x_shape", "head", "shape1"].map(&mut fresh);
                constants.push(int64_tensor(&zero, &[0]));
                constants.push(int64_tensor(&end, &[axis]));
                constants.push(int64_tensor(&minus_one, &[-1]));
                new("Shape", vec![x.clone()], x_shape.clone(), "shape_x");
                new("Slice", vec![x_shape, zero, end], head.clone(), "head");
                new("Concat", vec![head, minus_one], shape1.clone(), "shape1");
                new("Reshape", vec![x, shape1], merged_tail.clone(), "merge_tail");
            }
            // `merged_tail` is `[d0 .. d(axis-1), tail]`: its last dimension is the tail.
            let [last, lead, merged_shape, tail, shape2] =
                ["last", "lead", "merged_shape", "tail", "shape2"].map(&mut fresh);
            constants.push(int64_tensor(&last, &[-1]));
            constants.push(int64_tensor(&lead, &[-1]));
            new("Shape", vec![merged_tail.clone()], merged_shape.clone(), "shape_merged");
            new("Gather", vec![merged_shape, last], tail.clone(), "tail");
            new("Concat", vec![lead, tail], shape2.clone(), "shape2");
            new("Reshape", vec![merged_tail, shape2], y, "merge_head");
        }
    }
    graph.node = out;
    graph.initializer.extend(constants);
    Ok(())
}

/// `SkipLayerNormalization(x, skip, gamma, "", bias)` (com.microsoft) gets an explicit zero
/// `beta` (`Sub(gamma, gamma)`).
///
/// Why: tract-onnx 0.23.9's builder drops the empty `beta` input and then reads `bias` at input
/// position 4, past the end, which panics. onnxruntime's optimizer writes this form when a
/// LayerNorm has no shift.
fn skip_layer_norm_zero_beta(graph: &mut GraphProto, names: &mut Names) {
    let mut out: Vec<NodeProto> = Vec::with_capacity(graph.node.len());
    for mut node in std::mem::take(&mut graph.node) {
        let has = |i: usize| node.input.get(i).is_some_and(|n| !n.is_empty());
        if node.domain == "com.microsoft" && node.op_type == "SkipLayerNormalization" && has(4) && !has(3) && has(2) {
            let beta = names.fresh(&format!("{}__sparsepipe_zero_beta", node.input[2]));
            let gamma = node.input[2].clone();
            let name = names.fresh(&format!("{}/zero_beta", node.name));
            out.push(plain_node("Sub", &name, vec![gamma.clone(), gamma], vec![beta.clone()]));
            node.input[3] = beta;
        }
        out.push(node);
    }
    graph.node = out;
}

/// `FusedMatMul(a, b)` (com.microsoft) → `MatMul`, or `Einsum` when an operand is transposed,
/// then `Mul` by `alpha` when it is not 1. Left as is (and so refused) with `transBatchA/B`.
///
/// Why: onnxruntime's graph optimizer (level extended, and Optimum's O2+) folds the attention
/// scale into the score matmul this way; the standard form runs on tract and keeps the graph
/// visible to our passes.
fn fused_matmul_to_standard(graph: &mut GraphProto, names: &mut Names) {
    let mut out: Vec<NodeProto> = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node) {
        let batch_transposed =
            int_attr(&node, "transBatchA").unwrap_or(0) != 0 || int_attr(&node, "transBatchB").unwrap_or(0) != 0;
        if node.domain != "com.microsoft"
            || node.op_type != "FusedMatMul"
            || node.input.len() != 2
            || node.output.len() != 1
            || batch_transposed
        {
            out.push(node);
            continue;
        }
        let alpha = float_attr(&node, "alpha").unwrap_or(1.0);
        let (ta, tb) = (int_attr(&node, "transA").unwrap_or(0) != 0, int_attr(&node, "transB").unwrap_or(0) != 0);
        let y = node.output[0].clone();
        let product = if alpha == 1.0 { y.clone() } else { names.fresh(&format!("{y}__sparsepipe_unscaled")) };
        let name = names.fresh(&format!("{}/matmul", node_name(&node)));
        let mut matmul = if ta || tb {
            let mut n = plain_node("Einsum", &name, node.input.clone(), vec![product.clone()]);
            let (a, b) = (if ta { "ji" } else { "ij" }, if tb { "kj" } else { "jk" });
            n.attribute.push(AttributeProto {
                name: "equation".into(),
                r#type: AttributeType::String as i32,
                s: format!("...{a},...{b}->...ik").into_bytes(),
                ..Default::default()
            });
            n
        } else {
            plain_node("MatMul", &name, node.input.clone(), vec![product.clone()])
        };
        matmul.doc_string = node.doc_string.clone();
        out.push(matmul);
        if alpha != 1.0 {
            let scale = names.fresh(&format!("{y}__sparsepipe_alpha"));
            graph.initializer.push(float_scalar(&scale, alpha));
            let name = names.fresh(&format!("{}/alpha", node_name(&node)));
            out.push(plain_node("Mul", &name, vec![product, scale], vec![y]));
        }
    }
    graph.node = out;
}

/// `FusedGemm(a, b, c)` (com.microsoft) → `Gemm` then its activation (`Relu`, `LeakyRelu`,
/// `Sigmoid`, `Tanh`, `HardSigmoid`). Other activations are left as is (and so refused).
///
/// Why: onnxruntime's graph optimizer (level extended) fuses a Gemm with its activation this way
/// (the BERT pooler's `Tanh`, classifier heads' `Relu`).
fn fused_gemm_to_standard(graph: &mut GraphProto, names: &mut Names) {
    let mut out: Vec<NodeProto> = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node) {
        let activation = node
            .attribute
            .iter()
            .find(|a| a.name == "activation")
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
            .unwrap_or_default();
        let known = ["", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid"].contains(&activation.as_str());
        if node.domain != "com.microsoft" || node.op_type != "FusedGemm" || node.output.len() != 1 || !known {
            out.push(node);
            continue;
        }
        let y = node.output[0].clone();
        let gemm_out = if activation.is_empty() { y.clone() } else { names.fresh(&format!("{y}__sparsepipe_gemm")) };
        let name = names.fresh(&format!("{}/gemm", node_name(&node)));
        let mut gemm = plain_node("Gemm", &name, node.input.clone(), vec![gemm_out.clone()]);
        gemm.attribute = node
            .attribute
            .iter()
            .filter(|a| ["alpha", "beta", "transA", "transB"].contains(&a.name.as_str()))
            .cloned()
            .collect();
        out.push(gemm);
        if !activation.is_empty() {
            let name = names.fresh(&format!("{}/{activation}", node_name(&node)));
            let mut act = plain_node(&activation, &name, vec![gemm_out], vec![y]);
            let param = |key: &str, to: &str| {
                float_attr(&node, key).map(|v| AttributeProto {
                    name: to.into(),
                    r#type: AttributeType::Float as i32,
                    f: v,
                    ..Default::default()
                })
            };
            match activation.as_str() {
                "LeakyRelu" => act.attribute.extend(param("activation_alpha", "alpha")),
                "HardSigmoid" => {
                    act.attribute.extend(param("activation_alpha", "alpha"));
                    act.attribute.extend(param("activation_beta", "beta"));
                }
                _ => {}
            }
            out.push(act);
        }
    }
    graph.node = out;
}

/// The name tract gives a node: its own, else its first output's, else its operator's.
pub(crate) fn node_name(node: &NodeProto) -> &str {
    if !node.name.is_empty() {
        &node.name
    } else {
        node.output.first().filter(|o| !o.is_empty()).unwrap_or(&node.op_type)
    }
}

fn float_attr(node: &NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

/// A float32 scalar initializer.
fn float_scalar(name: &str, value: f32) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![],
        data_type: tract_onnx::pb::tensor_proto::DataType::Float as i32,
        float_data: vec![value],
        ..Default::default()
    }
}

fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

fn int_attr(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: value, ..Default::default() }
}

fn plain_node(op: &str, name: &str, input: Vec<String>, output: Vec<String>) -> NodeProto {
    NodeProto { op_type: op.into(), name: name.into(), input, output, ..Default::default() }
}

/// A 1-D int64 initializer.
fn int64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: tract_onnx::pb::tensor_proto::DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}
