"""question-answering: schemas, HF-identical windows and answer decoding, pipeline."""

from .pipeline import QuestionAnsweringPipeline
from .schemas import (
    QuestionAnsweringAnswer,
    QuestionAnsweringInput,
    QuestionAnsweringOptions,
    QuestionAnsweringOutput,
)

__all__ = [
    "QuestionAnsweringAnswer",
    "QuestionAnsweringInput",
    "QuestionAnsweringOptions",
    "QuestionAnsweringOutput",
    "QuestionAnsweringPipeline",
]
