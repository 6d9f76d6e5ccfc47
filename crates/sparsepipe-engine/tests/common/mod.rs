//! Helpers shared by the engine's integration tests: concrete input shapes and owned inputs.

use sparsepipe_engine::{Array, ArrayRef, Data, DataRef, Dim, Engine, TensorInfo};

/// The input's shape with its first symbolic dimension set to `batch` and the others to `seq`.
pub fn concrete_shape(info: &TensorInfo, batch: usize, seq: usize) -> Vec<usize> {
    info.shape
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Fixed(v) => *v,
            Dim::Symbol(_) if i == 0 => batch,
            Dim::Symbol(_) => seq,
        })
        .collect()
}

/// Runs `engine` on owned (shape, int64 or f32 data) inputs.
pub fn run(engine: &Engine, inputs: &[(Vec<usize>, Data)]) -> Vec<Array> {
    let refs: Vec<ArrayRef> = inputs
        .iter()
        .map(|(shape, data)| ArrayRef {
            shape,
            data: match data {
                Data::I64(v) => DataRef::I64(v),
                Data::F32(v) => DataRef::F32(v),
                _ => unreachable!("tests build int64 and f32 inputs only"),
            },
        })
        .collect();
    engine.run(&refs).unwrap()
}
