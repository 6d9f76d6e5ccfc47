"""Built-in tasks; importing this package registers them with `Pipeline`."""

from . import (
    custom,
    image_classification,
    object_detection,
    question_answering,
    text_classification,
    token_classification,
)

__all__ = [
    "custom",
    "image_classification",
    "object_detection",
    "question_answering",
    "text_classification",
    "token_classification",
]
