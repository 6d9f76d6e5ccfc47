//! Graph passes, one per file: tract's declutter (guarded) and ours, run between it and optimize.

pub mod attention;
pub mod broadcast_add;
pub mod chain;
pub mod epilogue;
pub(crate) mod guarded;
pub mod layer_norm;
mod pattern;
pub mod qkv;
pub mod residual;
pub(crate) mod tdim_numeric;
pub mod weight_matmul;
