"""Choosing the task a command runs from what the registered tasks declare, and its options."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from ..errors import ConfigError
from ..registry import lookup, normalize_task, registered_tasks

__all__ = ["declaring_task", "task_options"]


def declaring_task(task: Optional[str], declares: Callable[[type], bool], purpose: str) -> str:
    """The task a command runs: ``task`` (name or alias) in its canonical spelling, or when None
    the one registered task whose class passes ``declares`` (it overrides the hook the command
    calls); ConfigError listing the tasks that can ``purpose`` otherwise."""
    able = {name: a for name, a in registered_tasks().items() if declares(lookup(name).cls)}
    listing = "; ".join(
        name + (f" (aliases: {', '.join(a)})" if a else "") for name, a in able.items()
    )
    if not able:
        raise ConfigError(f"no registered task can {purpose}")
    if task is None:
        if len(able) > 1:
            raise ConfigError(
                f"several registered tasks can {purpose} ({listing}); pick one with --task"
            )
        return next(iter(able))
    wanted = normalize_task(task)
    for name, aliases in able.items():
        if wanted == name or wanted in aliases:
            return name
    raise ConfigError(f"task {task!r} cannot {purpose}; give --task one of: {listing}")


def task_options(
    items: Optional[Sequence[str]], flags: Optional[Mapping[str, str]] = None
) -> dict[str, Any]:
    """``--option KEY=VALUE`` items as keyword arguments (VALUE read as JSON when it parses, else
    as a string); ConfigError naming the item otherwise, or when KEY is set by one of the
    command's own flags (``flags``: option name to flag, besides --task and --model-path)."""
    taken = {"task": "--task", "model_path": "--model-path", **(flags or {})}
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option takes KEY=VALUE (JSON value), got {item!r}")
        if key in taken:
            raise ConfigError(f"--option {item!r}: {key} is set by {taken[key]}; use that instead")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options
