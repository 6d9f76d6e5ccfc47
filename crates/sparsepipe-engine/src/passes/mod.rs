//! Graph passes run between tract's declutter and optimize, one per file.

pub mod epilogue;
pub mod weight_matmul;
