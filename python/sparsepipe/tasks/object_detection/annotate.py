"""Draw object-detection results on an image: one coloured box and "label score" caption each."""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any, Optional, Union

from PIL import Image, ImageDraw, ImageFont

from ...errors import ConfigError, InputError
from .._images import load_images

__all__ = ["PALETTE", "annotate"]

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 225, 25),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
    (255, 127, 80),
)
"""Box colours (RGB); class index ``i`` is drawn in ``PALETTE[i % len(PALETTE)]``."""


def _field(result: Any, name: str) -> Any:
    if isinstance(result, Mapping):
        if name not in result:
            raise InputError(f"detection result has no {name!r} key")
        return result[name]
    if not hasattr(result, name):
        raise InputError(f"detection result {type(result).__name__} has no {name!r} attribute")
    return getattr(result, name)


def _as_list(name: str, value: Any) -> list[Any]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise InputError(f"detection {name} must be a list, got {type(value).__name__}")
    return list(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_box(i: int, box: Any) -> tuple[float, float, float, float]:
    try:
        values = list(box)
    except TypeError:
        values = []
    if len(values) != 4 or not all(_is_number(v) for v in values):
        raise InputError(f"box {i} must be 4 finite numbers [x1, y1, x2, y2], got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in values)
    if x2 < x1 or y2 < y1:
        raise InputError(f"box {i} {values} has x2 < x1 or y2 < y1")
    return x1, y1, x2, y2


def _read_result(result: Any) -> list[tuple[tuple[float, float, float, float], float, Any]]:
    boxes = _as_list("boxes", _field(result, "boxes"))
    scores = _as_list("scores", _field(result, "scores"))
    labels = _as_list("labels", _field(result, "labels"))
    if not len(boxes) == len(scores) == len(labels):
        raise InputError(
            f"detection result has {len(boxes)} boxes, {len(scores)} scores and "
            f"{len(labels)} labels; they must have the same length"
        )
    items = []
    for i, (box, score, label) in enumerate(zip(boxes, scores, labels)):
        if not _is_number(score):
            raise InputError(f"score {i} must be a finite number, got {score!r}")
        if not isinstance(label, (str, Integral)) or isinstance(label, bool):
            raise InputError(f"label {i} must be a string or a class index, got {label!r}")
        items.append((_check_box(i, box), float(score), label))
    return items


def _class_of(label: Union[str, int], class_names: Optional[Sequence[str]]) -> tuple[str, int]:
    """(caption name, palette index) of a label."""
    if isinstance(label, Integral):
        index = int(label)
        if class_names is not None and 0 <= index < len(class_names):
            return str(class_names[index]), index
        return str(index), index
    if class_names is not None and label in class_names:
        return label, list(class_names).index(label)
    return label, zlib.crc32(label.encode("utf-8"))


def _default_font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _text_color(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def annotate(
    image: Any,
    result: Any,
    *,
    class_names: Optional[Sequence[str]] = None,
    line_width: Optional[int] = None,
    font: Any = None,
) -> Image.Image:
    """Return a new RGB copy of `image` with each detection of `result` drawn as box and caption.

    `image` is a path, bytes, binary file, PIL image or HWC uint8 array, loaded as the vision
    pipelines load it (EXIF orientation applied). `result` is one image's result: an object or
    dict with ``boxes`` ([x1, y1, x2, y2] in pixels), ``scores`` and ``labels`` (names, or class
    indices looked up in `class_names`). Raises InputError when `image` or `result` is malformed.
    """
    if line_width is not None and (
        isinstance(line_width, bool) or not isinstance(line_width, Integral) or line_width < 1
    ):
        raise ConfigError(f"line_width must be a positive integer, got {line_width!r}")
    if font is not None and not hasattr(font, "getbbox"):
        raise ConfigError(f"font must be a PIL ImageFont, got {type(font).__name__}")
    items = _read_result(result)
    if isinstance(image, (list, tuple)):
        raise InputError("annotate draws on one image; got a list or tuple")
    if hasattr(image, "read") and not isinstance(image, Image.Image):
        image = image.read()
    (canvas,) = load_images(image)
    width, height = canvas.size
    lw = int(line_width) if line_width is not None else max(2, round((width + height) / 2 * 0.003))
    if font is None:
        font = _default_font(max(12, round((width + height) * 0.0125)))
    draw = ImageDraw.Draw(canvas)
    captions = []
    for (x1, y1, x2, y2), score, label in items:
        name, index = _class_of(label, class_names)
        color = PALETTE[index % len(PALETTE)]
        left, top = min(max(x1, 0.0), width - 1.0), min(max(y1, 0.0), height - 1.0)
        right, bottom = min(max(x2, 0.0), width - 1.0), min(max(y2, 0.0), height - 1.0)
        draw.rectangle((left, top, right, bottom), outline=color, width=lw)
        captions.append((f"{name} {score:.2f}", left, top, color))
    pad = max(1, lw // 2)
    for text, left, top, color in captions:
        tl, tt, tr, tb = draw.textbbox((0, 0), text, font=font)
        label_w, label_h = tr - tl + 2 * pad, tb - tt + 2 * pad
        x0 = max(0.0, min(left, width - label_w))
        y0 = top - label_h if top - label_h >= 0 else top
        draw.rectangle((x0, y0, x0 + label_w - 1, y0 + label_h - 1), fill=color)
        draw.text((x0 + pad - tl, y0 + pad - tt), text, fill=_text_color(color), font=font)
    return canvas
