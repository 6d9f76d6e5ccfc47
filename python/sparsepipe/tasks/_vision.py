"""What the vision tasks share: class names from config.json or a ``class_names`` option."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = [
    "COCO_NAMES",
    "NAMED_CLASS_SETS",
    "class_names_from",
    "image_size_from_shapes",
    "image_size_option",
]


def _from_mapping(names: Mapping[Any, Any], where: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for k, v in names.items():
        try:
            out[int(k)] = str(v)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: class ids must be integers, got {k!r}") from e
    return out


#: the 80 object categories of the COCO 2017 detection benchmark, in the order of the class ids
#: of detectors trained on it (Ultralytics YOLO, DeepSparse's ``class_names="coco"``)
COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

#: class name sets ``class_names`` may name instead of listing them
NAMED_CLASS_SETS: Mapping[str, Sequence[str]] = {"coco": COCO_NAMES}


def class_names_from(config: Mapping[str, Any], class_names: Any = None) -> dict[int, str]:
    """Class id -> name: ``class_names`` (list, dict, JSON file path, or the name of a
    `NAMED_CLASS_SETS` set such as ``"coco"``) if given, else config.json's ``names`` or
    ``id2label``; {} when neither has any."""
    named = isinstance(class_names, str) and class_names.lower() in NAMED_CLASS_SETS
    if named and not Path(class_names).exists():
        return dict(enumerate(NAMED_CLASS_SETS[class_names.lower()]))
    if class_names is not None:
        if isinstance(class_names, (str, os.PathLike)):
            path = Path(class_names)
            try:
                class_names = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ConfigError(f"class_names: cannot read the JSON file {path}: {e}") from e
            if isinstance(class_names, Mapping) and isinstance(
                class_names.get("names"), (list, dict)
            ):
                class_names = class_names["names"]
        if isinstance(class_names, Mapping):
            return _from_mapping(class_names, "class_names")
        if isinstance(class_names, Sequence) and not isinstance(class_names, (str, bytes)):
            return {i: str(n) for i, n in enumerate(class_names)}
        raise ConfigError(
            "class_names must be a list of names, a dict {id: name} or a path to a JSON file, "
            f"got {type(class_names).__name__}"
        )
    names = config.get("names")
    if isinstance(names, list):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, Mapping):
        return _from_mapping(names, "config.json names")
    id2label = config.get("id2label")
    if isinstance(id2label, Mapping):
        return _from_mapping(id2label, "config.json id2label")
    return {}


def image_size_option(value: Any) -> tuple[int, int]:
    """An ``image_size`` option (an int, or (height, width)) as (height, width) of ints >= 32."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
        and all(v >= 32 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ConfigError(f"image_size must be an int or (height, width) of ints >= 32, got {value!r}")


def image_size_from_shapes(task: Any, shapes: list[list[int]]) -> dict[str, Any]:
    """``{"image_size": (H, W)}`` from DeepSparse's ``input_shapes``: one ``[batch, 3, H, W]``."""
    if len(shapes) != 1 or len(shapes[0]) != 4:
        raise ConfigError(
            f"input_shapes for {task} is one [batch, 3, height, width] shape, got {shapes}"
        )
    return {"image_size": (shapes[0][2], shapes[0][3])}
