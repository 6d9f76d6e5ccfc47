"""Per-request limits of an endpoint: items, characters per text, pixels per image; a request
over one gets 413 naming the limit, so that no single request can take the server's memory."""

from __future__ import annotations

import io
import os
from typing import Any, Optional

from pydantic import BaseModel

__all__ = ["RequestTooLarge", "check_limits"]


class RequestTooLarge(Exception):
    """A request exceeds one of its endpoint's per-request limits: HTTP 413."""


def check_limits(
    body: BaseModel,
    items: int,
    image_field: Optional[str],
    *,
    max_items: Optional[int],
    max_text_chars: Optional[int],
    max_image_pixels: Optional[int],
) -> None:
    """RequestTooLarge naming the limit when ``body`` (holding ``items`` items) exceeds one."""
    if max_items is not None and items > max_items:
        raise RequestTooLarge(
            f"the request holds {items} items; this endpoint takes at most {max_items} "
            "(max_items_per_request): split it into several requests"
        )
    for name, value in body.__dict__.items():
        if name == image_field:
            if max_image_pixels is not None:
                _check_pixels(name, value, max_image_pixels)
        elif max_text_chars is not None:
            _check_texts(name, value, max_text_chars)


def _check_texts(path: str, value: Any, limit: int) -> None:
    if isinstance(value, str):
        if len(value) > limit:
            raise RequestTooLarge(
                f"{path} holds {len(value)} characters; this endpoint takes at most {limit} "
                "per text (max_text_chars)"
            )
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_texts(f"{path}[{i}]", v, limit)


def _check_pixels(path: str, value: Any, limit: int) -> None:
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_pixels(f"{path}[{i}]", v, limit)
        return
    size = _image_size(value)
    if size is not None and size[0] * size[1] > limit:
        raise RequestTooLarge(
            f"{path} is {size[0]}x{size[1]} = {size[0] * size[1]} pixels; this endpoint takes at "
            f"most {limit} per image (max_image_pixels)"
        )


def _image_size(value: Any) -> Optional[tuple[int, int]]:
    """Width and height from the image's header, without decoding it (None when unreadable:
    the pipeline then says what is wrong with it)."""
    import PIL.Image

    if isinstance(value, (bytes, bytearray, memoryview)):
        source: Any = io.BytesIO(bytes(value))
    elif isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
        source = value
    else:
        return None
    try:
        with PIL.Image.open(source) as image:
            return image.size
    except Exception:
        return None
