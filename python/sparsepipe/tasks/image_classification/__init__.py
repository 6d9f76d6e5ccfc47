"""image-classification: HF-style preprocessing, schemas and pipeline."""

from .pipeline import ImageClassificationPipeline
from .schemas import (
    ImageClassificationInput,
    ImageClassificationOptions,
    ImageClassificationOutput,
)

__all__ = [
    "ImageClassificationInput",
    "ImageClassificationOptions",
    "ImageClassificationOutput",
    "ImageClassificationPipeline",
]
