"""token-classification: schemas, HF-identical post-processing and pipeline."""

from .pipeline import TokenClassificationPipeline
from .schemas import (
    TokenClassificationInput,
    TokenClassificationOptions,
    TokenClassificationOutput,
    TokenClassificationResult,
)

__all__ = [
    "TokenClassificationInput",
    "TokenClassificationOptions",
    "TokenClassificationOutput",
    "TokenClassificationPipeline",
    "TokenClassificationResult",
]
