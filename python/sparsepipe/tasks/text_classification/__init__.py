"""text-classification: schemas and pipeline."""

from .pipeline import TextClassificationPipeline
from .schemas import TextClassificationInput, TextClassificationOptions, TextClassificationOutput

__all__ = [
    "TextClassificationInput",
    "TextClassificationOptions",
    "TextClassificationOutput",
    "TextClassificationPipeline",
]
