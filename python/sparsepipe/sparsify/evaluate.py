"""Accuracy of a label-predicting pipeline on a JSON Lines file of examples (``--eval``)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import ConfigError, InputError
from .files import PathLike

__all__ = ["evaluate_accuracy", "label_accuracy", "load_examples"]


def load_examples(
    jsonl_path: PathLike,
    *,
    text_field: str = "text",
    label_field: str = "label",
    limit: Optional[int] = None,
) -> tuple[list[Any], list[Any]]:
    """Texts and labels of a JSON Lines file (one object a line); InputError naming a bad line."""
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1
    ):
        raise ConfigError(f"limit must be a positive int or None, got {limit!r}")
    path = Path(os.fspath(jsonl_path)).expanduser()
    texts: list[Any] = []
    labels: list[Any] = []
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text: {e}") from e
    except OSError as e:
        raise InputError(f"cannot read the examples file {path}: {e}") from e
    for lineno, line in enumerate(content.split("\n"), 1):
        if limit is not None and len(texts) >= limit:
            break
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            row = json.loads(line)
        except ValueError as e:
            raise InputError(f"{where}: not valid JSON ({e})") from e
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for field in (text_field, label_field):
            if field not in row:
                fields = ", ".join(map(repr, row)) or "no fields"
                raise InputError(f"{where}: no {field!r} field (it has {fields})")
        text, label = row[text_field], row[label_field]
        pair = isinstance(text, list) and len(text) == 2 and all(isinstance(t, str) for t in text)
        if not isinstance(text, str) and not pair:
            raise InputError(
                f"{where}: {text_field!r} must be a string (or a pair of strings), "
                f"got {type(text).__name__}"
            )
        if isinstance(label, (dict, list)) or label is None:
            raise InputError(f"{where}: {label_field!r} must be a label name or id, got {label!r}")
        texts.append(tuple(text) if pair else text)
        labels.append(label)
    if not texts:
        raise InputError(f"{path} holds no examples")
    return texts, labels


def _label_name(label: Any, id2label: Any) -> str:
    is_id = isinstance(label, (int, np.integer)) and not isinstance(label, bool)
    if is_id and isinstance(id2label, dict) and str(int(label)) in id2label:
        return str(id2label[str(int(label))])
    return str(label)


def label_accuracy(pipeline: Any, texts: Sequence[Any], labels: Sequence[Any]) -> float:
    """Fraction of `texts` whose label in ``pipeline(texts).labels`` (the first when ranked)
    equals their entry in `labels`; integer labels are mapped through the model's ``id2label``."""
    if len(texts) != len(labels):
        raise InputError(f"got {len(texts)} texts but {len(labels)} labels; give one label a text")
    if not texts:
        raise InputError("no examples to evaluate; give at least one text and its label")
    id2label = (getattr(pipeline, "config", None) or {}).get("id2label")
    correct = 0
    chunk = 256
    for start in range(0, len(texts), chunk):
        predicted = pipeline(list(texts[start : start + chunk])).labels
        for pred, gold in zip(predicted, labels[start : start + chunk]):
            if isinstance(pred, list):
                pred = pred[0] if pred else None
            correct += str(pred) == _label_name(gold, id2label)
    return correct / len(texts)


def evaluate_accuracy(
    pipeline: Any,
    jsonl_path: PathLike,
    *,
    text_field: str = "text",
    label_field: str = "label",
    limit: Optional[int] = None,
) -> float:
    """Fraction of the file's examples whose ``pipeline(texts).labels`` equals their label.

    Integer labels are mapped through the model's ``id2label`` when it has one.
    """
    texts, labels = load_examples(
        jsonl_path, text_field=text_field, label_field=label_field, limit=limit
    )
    return label_accuracy(pipeline, texts, labels)
