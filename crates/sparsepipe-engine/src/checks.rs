//! Input checks that tract itself does not make: token ids (or any indices) that feed an
//! embedding lookup must be inside the table.

use tract_core::internal::*;
use tract_core::ops::array::Gather;
use tract_core::ops::cast::Cast;
use tract_core::ops::change_axes::AxisOp;

use crate::array::{ArrayRef, DataRef, TensorInfo};
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
