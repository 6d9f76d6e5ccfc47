"""Choosing the task a command runs from what the registered tasks declare."""

from __future__ import annotations

from typing import Callable, Optional

from ..errors import ConfigError
from ..registry import lookup, normalize_task, registered_tasks

__all__ = ["declaring_task"]


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
