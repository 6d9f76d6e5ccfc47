//! Reading an ONNX file into a typed tract model and its input and output descriptions: the
//! checks that turn a missing, bad or unsupported file into a clear error, the ONNX-level
//! rewrites and external data.

use std::path::Path;

use tract_core::internal::*;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, ModelProto};
use tract_onnx::prelude::{Framework, InferenceModelExt};

use crate::array::{DType, Dim, TensorInfo};
use crate::error::{chain, Error, Result};
use crate::normalize::node_name;
use crate::{external_data, normalize};

/// onnxruntime contrib (`com.microsoft`) operators that tract runs with onnxruntime's semantics,
/// each checked against onnxruntime by a test: the element-wise and normalisation ones.
const CONTRIB_OPS: &[&str] =
    &["BiasGelu", "FastGelu", "Gelu", "QuickGelu", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization"];

/// Operator domains tract reads besides the contrib one.
const STANDARD_DOMAINS: &[&str] = &["", "ai.onnx", "ai.onnx.ml"];

/// A parsed, typed model and its inputs and outputs.
pub(crate) struct Loaded {
    pub typed: TypedModel,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

/// Reads the `.onnx` file at `path` into a typed model; `Error::ModelLoad` saying what is wrong
/// with the file otherwise.
pub(crate) fn read_model(path: &Path) -> Result<Loaded> {
    check_model_file(path)?;
    let typed = load_typed(path)?;
    let inputs = io_infos(&typed, typed.input_outlets().map_err(load_err(path))?, true)?;
    let outputs = io_infos(&typed, typed.output_outlets().map_err(load_err(path))?, false)?;
    Ok(Loaded { typed, inputs, outputs })
}

/// `Error::ModelLoad` unless `path` is an existing file.
fn check_model_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::ModelLoad(format!(
            "{} is a directory; pass the path of the .onnx file in it",
            path.display()
        )));
    }
    if !path.exists() {
        return Err(Error::ModelLoad(format!(
            "model file not found: {}; check the path (relative paths are relative to the current \
             directory, {})",
            path.display(),
            std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()
        )));
    }
    Ok(())
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

/// Name, element type and declared shape of each of `outlets` (the model's inputs when `inputs`).
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

/// Parses the ONNX file, reports unsupported operators, rewrites what tract cannot type, reads
/// external data from the file's directory, and types the model.
fn load_typed(path: &Path) -> Result<TypedModel> {
    let mut proto = read_proto(path)?;
    check_string_tensors(&proto, path)?;
    normalize::normalize(&mut proto).map_err(|e| Error::ModelLoad(format!("{}: {e}", path.display())))?;
    let (mut unsupported, mut advice) = foreign_ops(&proto);
    let model_dir = match external_data::check(&proto, path)? {
        Some(dir) => Some(dir.to_str().ok_or_else(|| {
            Error::ModelLoad(format!(
                "the directory of {} is not valid UTF-8, so its external data cannot be located; \
                 move the model to a directory with a UTF-8 name",
                path.display()
            ))
        })?),
        None => None,
    };
    let onnx = tract_onnx::onnx();
    let parsed = match onnx.parse_with_template(&proto, model_dir, Default::default()) {
        Ok(parsed) => parsed,
        Err(_) if !unsupported.is_empty() => return Err(unsupported_error(path, &unsupported, &advice)),
        Err(e) => {
            return Err(Error::ModelLoad(format!("could not load the ONNX graph in {}: {}", path.display(), chain(&e))))
        }
    };
    if !parsed.unresolved_inputs.is_empty() {
        return Err(Error::ModelLoad(format!(
            "{}: the graph reads tensors nothing produces: {}. The file is incomplete; re-export it",
            path.display(),
            parsed.unresolved_inputs.join(", ")
        )));
    }
    let model = parsed.model;
    let unimplemented: Vec<Refused> = model
        .nodes()
        .iter()
        .filter(|n| !unsupported.iter().any(|(node, _)| *node == n.name))
        .filter_map(|n| {
            let op = n.op.name();
            op.strip_prefix("Unimplemented(").map(|t| (n.name.clone(), t.trim_end_matches(')').to_string()))
        })
        .collect();
    if !unimplemented.is_empty() {
        advice.push(
            "re-export the model without them (e.g. a lower opset, or replace custom ops with \
             standard ONNX ones)"
                .into(),
        );
        unsupported.extend(unimplemented);
    }
    if !unsupported.is_empty() {
        return Err(unsupported_error(path, &unsupported, &advice));
    }
    model.into_typed().map_err(|e| {
        Error::ModelLoad(format!(
            "could not infer the types and shapes of {}: {}. Check the model's input shapes \
             (onnx.checker.check_model(model, full_check=True) helps)",
            path.display(),
            chain(&e)
        ))
    })
}

/// The file's `ModelProto`, after the checks that tell a damaged or foreign file apart.
fn read_proto(path: &Path) -> Result<ModelProto> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::ModelLoad(format!("could not read {}: {e}", path.display())))?;
    if !meta.is_file() {
        // reading a pipe or a device could block or never end
        return Err(Error::ModelLoad(format!(
            "{} is not a regular file ({}); pass an .onnx file",
            path.display(),
            if meta.is_dir() { "a directory" } else { "a pipe, device or socket" }
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::ModelLoad(format!("could not read {}: {e}", path.display())))?;
    if bytes.is_empty() {
        return Err(Error::ModelLoad(format!("{} is empty; it is not an ONNX model", path.display())));
    }
    let proto = tract_onnx::onnx().proto_model_for_read(&mut &*bytes).map_err(|e| {
        Error::ModelLoad(format!(
            "{} is not a valid ONNX model (the file may be truncated or in another format): {}",
            path.display(),
            chain(&e)
        ))
    })?;
    if proto.graph.as_ref().is_none_or(|g| g.node.is_empty() && g.output.is_empty()) {
        return Err(Error::ModelLoad(format!(
            "{} holds no ONNX graph (the file may be truncated or not an ONNX model)",
            path.display()
        )));
    }
    if !proto.opset_import.iter().any(|o| o.domain.is_empty() || o.domain == "ai.onnx") {
        return Err(Error::ModelLoad(format!(
            "{} declares no ONNX opset (opset_import has no entry for the default domain), so its \
             operators cannot be interpreted; the file may be truncated, or re-export it with an opset",
            path.display()
        )));
    }
    Ok(proto)
}

/// Refuses string tensors stored as raw bytes, which ONNX does not allow (and tract cannot read).
fn check_string_tensors(proto: &ModelProto, path: &Path) -> Result<()> {
    let mut bad: Option<String> = None;
    if let Some(g) = &proto.graph {
        external_data::visit_tensors(g, &mut |t| {
            if bad.is_none() && t.data_type == DataType::String as i32 && !t.raw_data.is_empty() {
                bad = Some(t.name.clone());
            }
        });
    }
    match bad {
        Some(name) => Err(Error::ModelLoad(format!(
            "{}: string tensor '{name}' keeps its data in raw_data, which ONNX does not allow for \
             strings (use string_data); the file is damaged or was written by a non-conforming tool",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// Every node outside the standard domains that tract would not run with its exporter's meaning
/// (onnxruntime's fused transformer operators such as `Attention` and `EmbedLayerNormalization`,
/// custom operators, model-local functions), and what to do about each kind.
fn foreign_ops(proto: &ModelProto) -> (Vec<Refused>, Vec<String>) {
    let mut refused: Vec<Refused> = vec![];
    let mut contrib = false;
    let mut functions = false;
    let mut custom = false;
    if let Some(g) = &proto.graph {
        collect_foreign(g, proto, &mut refused, [&mut contrib, &mut functions, &mut custom]);
    }
    let mut advice = vec![];
    if contrib {
        advice.push(format!(
            "onnxruntime's fused operators come from an optimised graph (onnxruntime.transformers \
             optimizer, or `optimum-cli export onnx --optimize O2` and above): export a plain graph \
             instead (`optimum-cli export onnx` without --optimize, or `torch.onnx.export`). Of the \
             com.microsoft operators sparsepipe runs {}",
            CONTRIB_OPS.join(", ")
        ));
    }
    if functions {
        advice.push(
            "model-local functions can be inlined with `onnx.inliner.inline_local_functions(model)` \
             and the result saved"
                .into(),
        );
    }
    if custom {
        advice.push("custom operators must be replaced with standard ONNX ones".into());
    }
    (refused, advice)
}

/// The one error listing every operator sparsepipe cannot run, with what to do.
fn unsupported_error(path: &Path, ops: &[Refused], advice: &[String]) -> Error {
    let listed: Vec<String> = ops.iter().map(|(node, what)| format!("{what} (node '{node}')")).collect();
    Error::ModelLoad(format!(
        "{} uses {} operator(s) sparsepipe does not support: {}. {}",
        path.display(),
        ops.len(),
        listed.join(", "),
        advice.join("; ")
    ))
}

/// A node sparsepipe cannot run: its name (as tract names it) and what it is.
type Refused = (String, String);

fn collect_foreign(graph: &GraphProto, proto: &ModelProto, refused: &mut Vec<Refused>, kinds: [&mut bool; 3]) {
    let [contrib, functions, custom] = kinds;
    for node in &graph.node {
        let domain = node.domain.as_str();
        let is_function = proto
            .functions
            .iter()
            .any(|f| f.name.as_deref() == Some(node.op_type.as_str()) && f.domain.as_deref().unwrap_or("") == domain);
        if is_function {
            *functions = true;
            refused.push((node_name(node).into(), format!("{domain}::{} (a model-local function)", node.op_type)));
        } else if domain == "com.microsoft" {
            if !CONTRIB_OPS.contains(&node.op_type.as_str()) {
                *contrib = true;
                refused.push((node_name(node).into(), format!("com.microsoft::{}", node.op_type)));
            }
        } else if !STANDARD_DOMAINS.contains(&domain) {
            *custom = true;
            refused.push((node_name(node).into(), format!("{domain}::{}", node.op_type)));
        }
        for attr in &node.attribute {
            for g in attr.g.iter().chain(&attr.graphs) {
                collect_foreign(g, proto, refused, [&mut *contrib, &mut *functions, &mut *custom]);
            }
        }
    }
}
