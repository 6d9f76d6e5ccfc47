//! The sparsepipe engine: loads ONNX with tract, swaps constant-weight matmuls for our sparse
//! and dense kernels, and runs the plan on one shared rayon pool. No Python in here.

mod add_op;
pub mod array;
mod attention_op;
mod checks;
mod conv_op;
pub mod engine;
pub mod error;
mod external_data;
mod gather_op;
mod load;
mod norm_op;
mod normalize;
pub mod op;
pub mod options;
pub mod passes;
mod plan;
mod pool_op;
pub mod report;
mod softmax_op;
pub mod threads;
mod timing;

pub use array::{Array, ArrayRef, DType, Data, DataRef, Dim, TensorInfo};
pub use engine::{Engine, FusedOp, FusionMiss, NodeTime};
pub use error::{Error, Result};
pub use options::{EngineOptions, OptionValues};
pub use passes::weight_matmul::DenseBackend;
pub use report::{Kernel, LayerReport, RunsOn};
pub use sparsepipe_kernels::Isa;
