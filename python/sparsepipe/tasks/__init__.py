"""Built-in tasks; importing this package registers them with `Pipeline`."""

from . import custom, question_answering, text_classification, token_classification

__all__ = ["custom", "question_answering", "text_classification", "token_classification"]
