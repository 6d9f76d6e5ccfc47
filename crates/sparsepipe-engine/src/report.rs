//! What the engine did with each constant-weight matmul.

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
    /// `"sparse"` or `"dense"`.
    pub kernel: String,
    /// Instruction set of the kernel (`avx512`, `avx2`, `portable`), or `tract` for tract's matmul.
    pub isa: String,
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
