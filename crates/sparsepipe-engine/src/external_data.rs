//! Checks a model's external data (weights kept beside `model.onnx`, as torch's dynamo exporter
//! and every model over 2 GB write them) before tract memory-maps it: each file is inside the
//! model's directory, exists, and holds every byte its tensors claim.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::{GraphProto, ModelProto, TensorProto};

use crate::error::{Error, Result};

/// Checks every external tensor of `model` (loaded from `model_path`) against its data file;
/// returns the directory tract reads them from, or `None` when the model keeps all data inline.
pub(crate) fn check<'p>(model: &ModelProto, model_path: &'p Path) -> Result<Option<&'p Path>> {
    let Some(graph) = &model.graph else { return Ok(None) };
    let dir = model_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut canonical_dir: Option<PathBuf> = None;
    let mut sizes: HashMap<PathBuf, u64> = HashMap::new();
    let mut result = Ok(false);
    visit_tensors(graph, &mut |t| {
        if result.is_ok() && is_external(t) {
            result = (|| {
                if canonical_dir.is_none() {
                    canonical_dir = Some(dir.canonicalize().map_err(|e| {
                        Error::ModelLoad(format!("could not resolve the directory of {}: {e}", model_path.display()))
                    })?);
                }
                let canonical = canonical_dir.as_deref().unwrap_or(dir);
                check_tensor(t, model_path, dir, canonical, &mut sizes).map(|()| true)
            })();
        }
    });
    Ok(result?.then_some(dir))
}

fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32) && t.raw_data.is_empty()
}

/// Calls `f` on every tensor of `graph` and its subgraphs: initializers and tensor attributes.
pub(crate) fn visit_tensors(graph: &GraphProto, f: &mut dyn FnMut(&TensorProto)) {
    graph.initializer.iter().for_each(&mut *f);
    for node in &graph.node {
        for attr in &node.attribute {
            attr.t.iter().for_each(&mut *f);
            attr.tensors.iter().for_each(&mut *f);
            for g in attr.g.iter().chain(&attr.graphs) {
                visit_tensors(g, f);
            }
        }
    }
}

fn check_tensor(
    t: &TensorProto,
    model_path: &Path,
    dir: &Path,
    canonical_dir: &Path,
    sizes: &mut HashMap<PathBuf, u64>,
) -> Result<()> {
    let name = &t.name;
    let entry = |key: &str| t.external_data.iter().find(|e| e.key == key).map(|e| e.value.as_str());
    let bad = |what: String| {
        Error::ModelLoad(format!(
            "{}: tensor '{name}' keeps its data in an external file, but {what}. Re-save the model \
             with onnx.save_model(model, path, save_as_external_data=True) or with its data inline",
            model_path.display()
        ))
    };
    let location = entry("location").ok_or_else(|| bad("its external_data names no 'location'".into()))?;
    let number = |key: &str| -> Result<Option<u64>> {
        entry(key)
            .map(|v| v.trim().parse::<u64>().map_err(|_| bad(format!("its '{key}' is '{v}', not a byte count"))))
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?;
    let rel = Path::new(location);
    if location.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(Error::ModelLoad(format!(
            "{}: tensor '{name}' names the external data file '{location}', which is not a relative \
             path inside the model's directory {}; external data must sit in the model's directory \
             (or below it) and be named relative to it",
            model_path.display(),
            dir.display()
        )));
    }
    let file = dir.join(rel);
    let canonical = file.canonicalize().map_err(|_| {
        Error::ModelLoad(format!(
            "{}: tensor '{name}' keeps its data in '{location}', but {} does not exist; copy the \
             model's external data files (e.g. model.onnx.data) into {} beside the .onnx file",
            model_path.display(),
            file.display(),
            dir.display()
        ))
    })?;
    if !canonical.starts_with(canonical_dir) {
        return Err(Error::ModelLoad(format!(
            "{}: tensor '{name}' names the external data file '{location}', which resolves to {} \
             outside the model's directory {}; refusing to read it (copy the file into the directory)",
            model_path.display(),
            canonical.display(),
            dir.display()
        )));
    }
    let size = match sizes.get(&canonical) {
        Some(&s) => s,
        None => {
            let meta = std::fs::metadata(&canonical)
                .map_err(|e| Error::ModelLoad(format!("could not read {}: {e}", file.display())))?;
            if !meta.is_file() {
                return Err(bad(format!("'{location}' is not a file")));
            }
            sizes.insert(canonical.clone(), meta.len());
            meta.len()
        }
    };
    let available = size.saturating_sub(offset);
    let claimed = length.unwrap_or(available);
    let needed = length.or(expected_bytes(t)).unwrap_or(claimed);
    if offset > size || needed > available {
        return Err(Error::ModelLoad(format!(
            "{}: tensor '{name}' needs {needed} bytes at offset {offset} of {}, but the file has \
             {size} bytes: the external data file is truncated (an interrupted copy?); copy it again",
            model_path.display(),
            file.display()
        )));
    }
    let Some(expected) = expected_bytes(t) else {
        return Err(bad(format!(
            "its element type (ONNX data type {}) has no fixed size, so it cannot be stored externally",
            t.data_type
        )));
    };
    if claimed != expected {
        return Err(bad(format!(
            "{} {claimed} bytes of '{location}' while its shape {:?} and type take {expected} bytes",
            if length.is_some() { "its 'length' gives" } else { "with no 'length' it would read the remaining" },
            t.dims
        )));
    }
    Ok(())
}

/// Bytes a tensor's data takes, for fixed-size element types.
fn expected_bytes(t: &TensorProto) -> Option<u64> {
    let element: u64 = match DataType::try_from(t.data_type).ok()? {
        DataType::Uint8 | DataType::Int8 | DataType::Bool => 1,
        DataType::Uint16 | DataType::Int16 | DataType::Float16 | DataType::Bfloat16 => 2,
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Int64 | DataType::Uint64 | DataType::Double | DataType::Complex64 => 8,
        DataType::Complex128 => 16,
        _ => return None,
    };
    t.dims.iter().try_fold(element, |acc, &d| u64::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
}
