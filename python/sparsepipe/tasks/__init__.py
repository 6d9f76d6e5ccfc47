"""Built-in tasks; importing this package registers them with `Pipeline`."""

from . import custom, text_classification, token_classification

__all__ = ["custom", "text_classification", "token_classification"]
