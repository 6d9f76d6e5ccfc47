//! tract's declutter and codegen optimizers, with two guards for graphs today's exporters write.
//!
//! 1. tract 0.23.9's `FoldUniformMask` replaces a boolean input that is provably all-true (or
//!    all-false) by a constant of shape `[1; rank]` and re-wires the node. When that input was
//!    the one that gave the node's output its size (`And(arange(S) >= 0, true)` as torch's dynamo
//!    exporter writes for BERT's attention mask: `[1,1,S,1]` and `[]`), the re-wired node's
//!    output shrinks to `[1,1,1,1]` and the model later fails or broadcasts wrongly. Such patches
//!    are refused here (the node then computes its mask at run time, which costs next to
//!    nothing); every other fold of the pass runs unchanged.
//! 2. A node-level declutter rule that fails stops the whole load in tract (transformers 5.x text
//!    models: `declutter_mul` casts a symbolic `sequence` length to f64 and fails with
//!    "Undetermined symbol in expression"). Here such a node is left as it is, exactly as when
//!    no rule applies; the rule cannot have changed anything, as rules only return patches.

use tract_core::internal::*;
use tract_core::ops::dummy::Dummy;
use tract_core::optim::{Optimizer, OptimizerSession, TypedPass};

/// Declutters `model` as `TypedModel::declutter` does, with the guards described above.
pub(crate) fn declutter(model: &mut TypedModel) -> TractResult<()> {
    guard(Optimizer::declutter()).optimize(model)
}

/// Optimizes (codegen) `model` as `TypedModel::optimize` does, with the guards described above.
pub(crate) fn optimize(model: &mut TypedModel) -> TractResult<()> {
    model.optimize_with_session(&mut guard(Optimizer::codegen()).session())
}

/// `optimizer` with its uniform-mask fold wrapped in [`ShapePreserving`] and its node-level
/// declutter replaced by [`TolerantDeclutter`].
fn guard(mut optimizer: Optimizer) -> Optimizer {
    for pass in optimizer.passes.iter_mut() {
        let name = format!("{pass:?}");
        if name.starts_with("FoldUniformMask") {
            let inner = pass.clone();
            *pass = Box::new(ShapePreserving { inner });
        } else if name == "declutter" {
            *pass = Box::new(TolerantDeclutter::default());
        }
    }
    optimizer
}

/// tract's node-by-node "declutter" pass (`TypedOp::declutter_with_session` on each node), except
/// that a rule failing on a node leaves that node unchanged instead of failing the load.
#[derive(Debug, Clone, Default)]
struct TolerantDeclutter {
    from: usize,
}

impl TypedPass for TolerantDeclutter {
    fn reset(&mut self) -> TractResult<()> {
        self.from = 0;
        Ok(())
    }

    fn next(&mut self, session: &mut OptimizerSession, model: &TypedModel) -> TractResult<Option<TypedModelPatch>> {
        for node in &model.nodes()[self.from.min(model.nodes().len())..] {
            if node.op_is::<Dummy>() {
                continue;
            }
            if let Ok(Some(mut patch)) = node.op.declutter_with_session(session, model, node) {
                patch.push_context(format!("declutter {node}"));
                self.from = node.id + patch.dont_apply_twice.is_some() as usize;
                return Ok(Some(patch));
            }
        }
        Ok(None)
    }
}

/// Runs `inner`, dropping each patch that would change the shape or type of a wire it replaces.
#[derive(Debug, Clone)]
struct ShapePreserving {
    inner: Box<dyn TypedPass>,
}

impl TypedPass for ShapePreserving {
    fn reset(&mut self) -> TractResult<()> {
        self.inner.reset()
    }

    fn next(&mut self, session: &mut OptimizerSession, model: &TypedModel) -> TractResult<Option<TypedModelPatch>> {
        // The inner pass resumes after the node of the patch it returned, so asking again moves on.
        while let Some(patch) = self.inner.next(session, model)? {
            if keeps_facts(model, &patch)? {
                return Ok(Some(patch));
            }
        }
        Ok(None)
    }
}

fn keeps_facts(model: &TypedModel, patch: &TypedModelPatch) -> TractResult<bool> {
    for (old, new) in &patch.shunts {
        let (before, after) = (model.outlet_fact(*old)?, patch.model.outlet_fact(*new)?);
        if before.shape != after.shape || before.datum_type != after.datum_type {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_guards_replace_the_passes_they_guard() {
        let names = |o: Optimizer| o.passes.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>();
        let declutter = names(guard(Optimizer::declutter()));
        assert_eq!(declutter.iter().filter(|n| n.starts_with("ShapePreserving")).count(), 1, "{declutter:?}");
        assert_eq!(declutter.iter().filter(|n| n.starts_with("TolerantDeclutter")).count(), 1, "{declutter:?}");
        assert!(!declutter.iter().any(|n| n.starts_with("FoldUniformMask") || n == "declutter"), "{declutter:?}");
        let codegen = names(guard(Optimizer::codegen()));
        assert!(codegen.iter().any(|n| n.starts_with("TolerantDeclutter")), "{codegen:?}");
        assert!(!codegen.iter().any(|n| n == "declutter"), "{codegen:?}");
    }
}
