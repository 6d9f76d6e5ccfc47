"""Temporarily changing a `tokenizers.Tokenizer`'s truncation/padding settings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["settings_restored"]


@contextlib.contextmanager
def settings_restored(tokenizer: Any) -> Iterator[Any]:
    """Yields ``tokenizer``; restores its truncation, padding and special-token splitting after."""
    truncation = tokenizer.truncation
    padding = tokenizer.padding
    split = tokenizer.encode_special_tokens
    try:
        yield tokenizer
    finally:
        if truncation is None:
            tokenizer.no_truncation()
        else:
            tokenizer.enable_truncation(**truncation)
        if padding is None:
            tokenizer.no_padding()
        else:
            tokenizer.enable_padding(**padding)
        tokenizer.encode_special_tokens = split
