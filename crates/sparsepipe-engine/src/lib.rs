pub use tract_onnx; pub use tract_linalg;
