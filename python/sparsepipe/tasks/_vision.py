"""What the vision tasks share: class names from config.json or a ``class_names`` option."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["class_names_from"]


def _from_mapping(names: Mapping[Any, Any], where: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for k, v in names.items():
        try:
            out[int(k)] = str(v)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: class ids must be integers, got {k!r}") from e
    return out


def class_names_from(config: Mapping[str, Any], class_names: Any = None) -> dict[int, str]:
    """Class id -> name: ``class_names`` (list, dict or JSON file path) if given, else config.json's
    ``names`` or ``id2label``; {} when neither has any."""
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
