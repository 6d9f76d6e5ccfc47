//! ONNX-level rewrites applied before tract types the graph: constructs that tract-hir 0.23.9
//! cannot type when several dimensions are symbolic become equivalent ones it can.
//!
//! Survey of tract-hir 0.23.9 and tract-onnx 0.23.9 for the restriction: `Flatten` is the one
//! operator whose shape rule refuses an input with more than one symbolic dimension
//! (`Flatten::compute_shape`: "Can not compute a shape with square of symbols"). `Reshape`,
//! `Expand`, `Tile`, `ConstantOfShape`, `Range`, `Slice` (opset 10+) and `Shape` compute with
//! symbolic dimension values and need no rewrite; the opset 1-9 `Slice` (attribute form) refuses a
//! symbolic sliced axis, but tract picks that form from the model's opset, so it cannot be
//! rewritten without changing the opset (a re-export at opset 10 or later fixes it).

use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

/// Rewrites every graph of `model` (subgraphs included) in place.
pub(crate) fn normalize(model: &mut ModelProto) {
    let opset = default_opset(model);
    if let Some(graph) = model.graph.as_mut() {
        normalize_graph(graph, opset);
    }
}

/// The version of the default (`ai.onnx`) operator set the model imports; 0 when none.
fn default_opset(model: &ModelProto) -> i64 {
    model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map_or(0, |o| o.version)
}

fn normalize_graph(graph: &mut GraphProto, opset: i64) {
    for node in graph.node.iter_mut() {
        for attr in node.attribute.iter_mut() {
            if let Some(g) = attr.g.as_mut() {
                normalize_graph(g, opset);
            }
            for g in attr.graphs.iter_mut() {
                normalize_graph(g, opset);
            }
        }
    }
    flatten_to_reshape(graph, opset);
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
fn flatten_to_reshape(graph: &mut GraphProto, opset: i64) {
    // Reshape takes its shape as an input from opset 5 on.
    if opset != 0 && opset < 5 {
        return;
    }
    let mut out: Vec<NodeProto> = Vec::with_capacity(graph.node.len());
    let mut constants: Vec<TensorProto> = vec![];
    for node in std::mem::take(&mut graph.node) {
        let is_flatten = node.op_type == "Flatten" && is_default_domain(&node.domain);
        let axis = if is_flatten { int_attr(&node, "axis").unwrap_or(1) } else { 0 };
        if !is_flatten || node.input.len() != 1 || node.output.len() != 1 || (axis < 0 && opset != 0 && opset < 10) {
            out.push(node);
            continue;
        }
        let x = node.input[0].clone();
        let y = node.output[0].clone();
        let base = format!("{y}__sparsepipe_flatten");
        let name = |suffix: &str| format!("{base}_{suffix}");
        let node_name = if node.name.is_empty() { base.clone() } else { node.name.clone() };
        let mut new = |op: &str, inputs: Vec<String>, output: String, suffix: &str| {
            let mut node = plain_node(op, &format!("{node_name}/{suffix}"), inputs, vec![output]);
            if op == "Concat" {
                node.attribute.push(int_attribute("axis", 0));
            }
            out.push(node);
        };
        match axis {
            0 | 1 => {
                let spec = if axis == 0 { [1, -1] } else { [0, -1] };
                constants.push(int64_tensor(&name("shape"), &spec));
                new("Reshape", vec![x, name("shape")], y, "reshape");
            }
            _ => {
                let merged_tail = name("tail_merged");
                if axis > 0 {
                    let mut spec = vec![0i64; axis as usize];
                    spec.push(-1);
                    constants.push(int64_tensor(&name("shape1"), &spec));
                    new("Reshape", vec![x, name("shape1")], merged_tail.clone(), "merge_tail");
                } else {
                    constants.push(int64_tensor(&name("zero"), &[0]));
                    constants.push(int64_tensor(&name("axis"), &[axis]));
                    constants.push(int64_tensor(&name("minus_one"), &[-1]));
                    new("Shape", vec![x.clone()], name("x_shape"), "shape_x");
                    new("Slice", vec![name("x_shape"), name("zero"), name("axis")], name("head"), "head");
                    new("Concat", vec![name("head"), name("minus_one")], name("shape1"), "shape1");
                    new("Reshape", vec![x, name("shape1")], merged_tail.clone(), "merge_tail");
                }
                // `merged_tail` has rank `r + 1` for a negative axis too; its last dimension is the tail.
                constants.push(int64_tensor(&name("last"), &[-1]));
                constants.push(int64_tensor(&name("lead"), &[-1]));
                new("Shape", vec![merged_tail.clone()], name("merged_shape"), "shape_merged");
                new("Gather", vec![name("merged_shape"), name("last")], name("tail"), "tail");
                new("Concat", vec![name("lead"), name("tail")], name("shape2"), "shape2");
                new("Reshape", vec![merged_tail, name("shape2")], y, "merge_head");
            }
        }
    }
    graph.node = out;
    graph.initializer.extend(constants);
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
