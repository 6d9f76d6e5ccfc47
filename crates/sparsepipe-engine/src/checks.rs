//! Every check of a call's inputs against the model (names, count, dtypes, shapes, the batch
//! size the engine was loaded with, token ids inside their embedding table) and of the batch
//! size option against the model's fixed batch.

use std::collections::HashMap;

use tract_core::internal::*;
use tract_core::ops::array::Gather;
use tract_core::ops::cast::Cast;
use tract_core::ops::change_axes::AxisOp;

use crate::array::{ArrayRef, DataRef, Dim, TensorInfo};
use crate::error::{Error, Result};

/// An input whose values index a constant table of `rows` entries along a Gather axis.
#[derive(Debug, Clone)]
pub(crate) struct IndexBound {
    pub input: usize,
    pub node: String,
    pub rows: usize,
}

/// Finds Gathers on a constant table whose indices come straight from a model input
/// (through casts and axis changes only).
pub(crate) fn index_bounds(model: &TypedModel) -> TractResult<Vec<IndexBound>> {
    let inputs = model.input_outlets()?.to_vec();
    let mut out: Vec<IndexBound> = vec![];
    for node in model.nodes() {
        let Some(gather) = node.op_as::<Gather>() else { continue };
        if node.inputs.len() != 2 {
            continue;
        }
        let Some(table) = model.outlet_fact(node.inputs[0])?.konst.clone() else { continue };
        let mut src = node.inputs[1];
        loop {
            let n = model.node(src.node);
            if n.inputs.len() == 1 && (n.op_is::<Cast>() || n.op_is::<AxisOp>()) {
                src = n.inputs[0];
            } else {
                break;
            }
        }
        if let Some(input) = inputs.iter().position(|o| *o == src) {
            let rows = table.shape()[gather.axis];
            if !out.iter().any(|b| b.input == input && b.rows <= rows) {
                out.retain(|b| b.input != input);
                out.push(IndexBound { input, node: node.name.clone(), rows });
            }
        }
    }
    Ok(out)
}

/// Checks every index input against its table size.
pub(crate) fn check_indices(bounds: &[IndexBound], infos: &[TensorInfo], inputs: &[ArrayRef<'_>]) -> Result<()> {
    for b in bounds {
        let arr = &inputs[b.input];
        let rows = b.rows as i64;
        let bad = match arr.data {
            DataRef::I64(v) => v.iter().position(|&i| i < -rows || i >= rows).map(|p| (p, v[p])),
            DataRef::I32(v) => v.iter().position(|&i| (i as i64) < -rows || i as i64 >= rows).map(|p| (p, v[p] as i64)),
            _ => None,
        };
        if let Some((pos, value)) = bad {
            let mut coords = vec![0; arr.shape.len()];
            let mut rest = pos;
            for (c, d) in coords.iter_mut().zip(arr.shape).rev() {
                *c = rest % d.max(&1);
                rest /= d.max(&1);
            }
            return Err(Error::Input(format!(
                "input '{}' has value {value} at position {coords:?}, but it indexes '{}' which has {} \
                 entries: values must be in [{}, {}]. Check that the tokenizer (vocabulary) matches the model",
                infos[b.input].name,
                b.node,
                b.rows,
                -rows,
                rows - 1
            )));
        }
    }
    Ok(())
}

/// `'a', 'b', 'c'`: the model's input names, for messages.
fn names(infos: &[TensorInfo]) -> String {
    infos.iter().map(|i| format!("'{}'", i.name)).collect::<Vec<_>>().join(", ")
}

/// Position of the input called `name`; `Error::Input` listing the inputs if there is none.
pub(crate) fn input_index(infos: &[TensorInfo], name: &str) -> Result<usize> {
    infos
        .iter()
        .position(|i| i.name == name)
        .ok_or_else(|| Error::Input(format!("the model has no input named '{name}'; its inputs are {}", names(infos))))
}

/// `named` values in input order; `Error::Input` for an unknown name, a name given twice or a
/// missing input.
pub(crate) fn order_by_name<T>(infos: &[TensorInfo], named: Vec<(String, T)>) -> Result<Vec<T>> {
    let mut slots: Vec<Option<T>> = infos.iter().map(|_| None).collect();
    for (name, value) in named {
        let i = input_index(infos, &name)?;
        if slots[i].replace(value).is_some() {
            return Err(Error::Input(format!("input '{name}' is given twice; pass each input once")));
        }
    }
    slots
        .into_iter()
        .zip(infos)
        .map(|(slot, info)| {
            slot.ok_or_else(|| {
                Error::Input(format!("input '{}' is missing; the model takes {}", info.name, names(infos)))
            })
        })
        .collect()
}

/// Checks `inputs` (in input order) against the model's inputs: count, dtype, rank, shape, the
/// engine's fixed batch size and dimensions that share a name.
pub(crate) fn check_inputs(infos: &[TensorInfo], batch_size: Option<usize>, inputs: &[ArrayRef<'_>]) -> Result<()> {
    if inputs.len() != infos.len() {
        return Err(Error::Input(format!(
            "the model takes {} input(s) ({}), got {}",
            infos.len(),
            names(infos),
            inputs.len()
        )));
    }
    let mut bound: HashMap<&str, (usize, &str)> = HashMap::new();
    for (info, arr) in infos.iter().zip(inputs) {
        let name = &info.name;
        let given = arr.data.dtype();
        if let Some(want) = info.dtype {
            if want != given {
                return Err(Error::InputDtype { input: name.clone(), want, given });
            }
        }
        let shape_str = |s: &[usize]| format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
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
                        if let Some(b) = batch_size {
                            if got != b {
                                return Err(Error::InputBatch { input: name.clone(), batch_size: b, got });
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

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// `Error::Config` when the fixed `batch` contradicts an input's fixed batch dimension.
pub(crate) fn check_batch_option(inputs: &[TensorInfo], batch: Option<usize>) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::DType;

    fn infos() -> Vec<TensorInfo> {
        let info = |name: &str| TensorInfo {
            name: name.into(),
            dtype: Some(DType::I64),
            shape: vec![Dim::Symbol("batch".into()), Dim::Symbol("sequence".into())],
        };
        vec![info("input_ids"), info("attention_mask")]
    }

    fn input_error<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::Input(m)) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn names_are_ordered_and_checked() {
        let infos = infos();
        let named = vec![("attention_mask".to_string(), 2), ("input_ids".to_string(), 1)];
        assert_eq!(order_by_name(&infos, named).unwrap(), vec![1, 2]);
        let msg = input_error(order_by_name(&infos, vec![("input_id".to_string(), 1), ("attention_mask".into(), 2)]));
        assert_eq!(msg, "the model has no input named 'input_id'; its inputs are 'input_ids', 'attention_mask'");
        let msg = input_error(order_by_name(&infos, vec![("input_ids".to_string(), 1)]));
        assert_eq!(msg, "input 'attention_mask' is missing; the model takes 'input_ids', 'attention_mask'");
        let twice = vec![("input_ids".to_string(), 1), ("input_ids".into(), 1), ("attention_mask".into(), 2)];
        assert!(input_error(order_by_name(&infos, twice)).contains("given twice"));
        assert_eq!(input_index(&infos, "attention_mask").unwrap(), 1);
        assert!(input_error(input_index(&infos, "x")).contains("no input named 'x'"));
    }

    #[test]
    fn count_dtype_and_batch_errors() {
        let infos = infos();
        let ids = [1i64, 2, 3, 4];
        let floats = [0f32; 4];
        let good = ArrayRef { shape: &[2, 2], data: DataRef::I64(&ids) };
        check_inputs(&infos, None, &[good, good]).unwrap();
        let msg = input_error(check_inputs(&infos, None, &[good]));
        assert_eq!(msg, "the model takes 2 input(s) ('input_ids', 'attention_mask'), got 1");
        let wrong = ArrayRef { shape: &[2, 2], data: DataRef::F32(&floats) };
        match check_inputs(&infos, None, &[good, wrong]) {
            Err(Error::InputDtype { input, want, given }) => {
                assert_eq!((input.as_str(), want, given), ("attention_mask", DType::I64, DType::F32))
            }
            other => panic!("{other:?}"),
        }
        match check_inputs(&infos, Some(3), &[good, good]) {
            Err(Error::InputBatch { input, batch_size, got }) => {
                assert_eq!((input.as_str(), batch_size, got), ("input_ids", 3, 2))
            }
            other => panic!("{other:?}"),
        }
        let short = ArrayRef { shape: &[1, 4], data: DataRef::I64(&ids) };
        let msg = input_error(check_inputs(&infos, None, &[good, short]));
        assert!(msg.contains("batch=1") && msg.contains("batch=2"), "{msg}");
    }

    #[test]
    fn batch_option_against_a_fixed_batch() {
        let fixed = vec![TensorInfo { name: "images".into(), dtype: Some(DType::F32), shape: vec![Dim::Fixed(1)] }];
        check_batch_option(&fixed, Some(1)).unwrap();
        check_batch_option(&fixed, None).unwrap();
        assert!(matches!(check_batch_option(&fixed, Some(2)), Err(Error::Config(m)) if m.contains("fixed batch of 1")));
    }
}
