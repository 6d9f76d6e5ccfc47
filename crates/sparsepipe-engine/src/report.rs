//! What the engine did with each constant-weight matmul.

use sparsepipe_kernels::Isa;

/// Which of our kernels a weight is packed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Only the nonzero weights are stored and multiplied.
    Sparse,
    /// Every weight is stored and multiplied.
    Dense,
}

/// Who runs a weight's matmul: our kernels on an instruction set, or tract's own matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsOn {
    /// Our kernels, on this instruction set.
    Ours(Isa),
    /// tract's matmul (or convolution).
    Tract,
}

/// Fraction of exact zeros in `w` (0 for an empty slice).
pub(crate) fn zero_fraction(w: &[f32]) -> f64 {
    if w.is_empty() {
        return 0.0;
    }
    w.iter().filter(|v| **v == 0.0).count() as f64 / w.len() as f64
}

/// One constant-weight matmul or groups-1 convolution of the model and how it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Node name in the decluttered graph (derived from the ONNX node name).
    pub node: String,
    /// The einsum pattern tract found, e.g. `amk,kn->amn`.
    pub pattern: String,
    /// Shape of the weight as stored.
    pub weight_shape: Vec<usize>,
    /// Contracted size.
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// Fraction of exact zeros in the weight.
    pub sparsity: f64,
    /// The kernel the weight is packed for.
    pub kernel: Kernel,
    /// Instruction set of our kernel, or tract when tract's matmul runs it.
    pub isa: RunsOn,
    /// Names of the bias/activation nodes folded into the kernel.
    pub fused: Vec<String>,
    /// The plan node that computes it: `node`, the linear that computes an attention's query,
    /// key and value projections together, or either with `.residual` when it also adds a
    /// residual connection, or `<first linear>.chain` when it runs right after another linear
    /// (or before one) in one op.
    pub plan_node: String,
    /// Output channels of the plan node's output (its rows are its output elements over this).
    pub plan_output_channels: usize,
}
