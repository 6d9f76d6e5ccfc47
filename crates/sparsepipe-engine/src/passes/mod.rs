//! Graph passes, one per file: tract's declutter (guarded) and ours, run between it and optimize.

pub mod attention;
pub mod broadcast_add;
pub mod chain;
pub mod conv;
pub mod embedding;
pub mod epilogue;
pub(crate) mod guarded;
pub mod layer_norm;
mod pattern;
pub mod pool;
pub use pattern::ON_TRACT_MATMUL;
pub mod qkv;
pub mod residual;
pub mod softmax;
pub(crate) mod tdim_numeric;
pub mod weight_matmul;

/// A candidate subgraph a fusion pass left to the per-operator path, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    /// The node the pass looked at (a softmax, a normalization, an attention, an `Add`, a linear).
    pub node: String,
    /// What did not match.
    pub reason: String,
    /// The node the reason is about, when not `node` itself.
    pub related: Option<String>,
}

impl Miss {
    /// `found`'s match, or `None` after adding to `misses` why `node` did not match.
    fn keep<M>(found: pattern::Fit<M>, node: &str, misses: &mut Vec<Miss>) -> Option<M> {
        let record =
            |why: pattern::Why| misses.push(Miss { node: node.to_string(), reason: why.reason, related: why.related });
        found.map_err(record).ok()
    }
}
