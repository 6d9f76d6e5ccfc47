//! Prints the decluttered graph's EinSum nodes with a constant input (a debugging aid):
//! `cargo run -p sparsepipe-engine --example inspect -- MODEL.onnx`.

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let path = std::env::args().nth(1).context("usage: inspect MODEL.onnx")?;
    let model = tract_onnx::onnx().model_for_path(path)?.into_typed()?.into_decluttered()?;
    for node in model.nodes() {
        if let Some(es) = node.op_as::<EinSum>() {
            let facts = model.node_input_facts(node.id)?;
            let konst: Vec<bool> = facts.iter().map(|f| f.konst.is_some()).collect();
            println!("{} {} inputs {:?} const {:?}", node.name, es.axes, facts, konst);
        }
    }
    Ok(())
}
