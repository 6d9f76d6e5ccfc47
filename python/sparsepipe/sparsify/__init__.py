"""One-shot magnitude pruning of an ONNX model's weight matrices (``sparsepipe sparsify``).

The constant weights of MatMul, Gemm, Conv and ConvTranspose nodes get their smallest-magnitude
entries set to exactly zero, so that sparsepipe's sparse kernels can run them. Biases, embedding
tables and 1-D tensors are never touched. Pruning without fine-tuning costs accuracy: measure it
(`evaluate_accuracy`) before deploying the result.
"""

from .deploy import DEPLOYMENT_FILES, copy_deployment_files
from .evaluate import evaluate_accuracy, label_accuracy, load_examples
from .files import PathLike, sparsify_file
from .prune import SCOPES, LayerResult, WeightInfo, prunable_weights, sparsify

__all__ = [
    "DEPLOYMENT_FILES",
    "SCOPES",
    "LayerResult",
    "PathLike",
    "WeightInfo",
    "copy_deployment_files",
    "evaluate_accuracy",
    "label_accuracy",
    "load_examples",
    "prunable_weights",
    "sparsify",
    "sparsify_file",
]
