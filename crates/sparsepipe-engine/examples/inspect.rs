//! Prints a model's decluttered graph (a debugging aid):
//! `cargo run -p sparsepipe-engine --example inspect -- MODEL.onnx [--all]`.
//! Without `--all`, only the EinSum nodes with a constant input; with it, every node with its
//! operator, inputs and output facts.

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let path = std::env::args().nth(1).context("usage: inspect MODEL.onnx [--all]")?;
    let all = std::env::args().any(|a| a == "--all");
    let model = tract_onnx::onnx().model_for_path(path)?.into_typed()?.into_decluttered()?;
    for node in model.nodes() {
        if all {
            let outs: Vec<String> = node.outputs.iter().map(|o| format!("{:?}", o.fact)).collect();
            let ins: Vec<String> = node.inputs.iter().map(|i| format!("{}/{}", i.node, i.slot)).collect();
            println!(
                "#{} {} [{}] {:?} in {:?} -> {:?}",
                node.id,
                node.name,
                node.op.name(),
                node.op.info()?,
                ins,
                outs
            );
        } else if let Some(es) = node.op_as::<EinSum>() {
            let facts = model.node_input_facts(node.id)?;
            let konst: Vec<bool> = facts.iter().map(|f| f.konst.is_some()).collect();
            println!("{} {} inputs {:?} const {:?}", node.name, es.axes, facts, konst);
        }
    }
    Ok(())
}
