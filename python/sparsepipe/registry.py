"""The task registry: task names and aliases, each naming one `Pipeline` subclass.

Built-in tasks register themselves when `sparsepipe.tasks` is imported, which the package's
``__init__`` does; this module imports no task and no pipeline.
"""

from __future__ import annotations

import inspect
import re
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from .errors import ConfigError

__all__ = [
    "Registration",
    "add",
    "lookup",
    "normalize_task",
    "registered_as",
    "registered_tasks",
    "registration",
]


def normalize_task(task: str) -> str:
    """The canonical spelling of a task name: lower case, words joined by ``-``."""
    if not isinstance(task, str):
        raise ConfigError(f"task must be a string, got {type(task).__name__}")
    return re.sub(r"[\s_\-]+", "-", task.strip().lower())


@dataclass(frozen=True)
class Registration:
    """One registered task: its class, canonical name, aliases and default model."""

    cls: type
    task: str
    aliases: tuple[str, ...]
    default_model_path: Optional[str]


_REGISTRY: dict[str, Registration] = {}
_LOCK = threading.Lock()


def add(
    cls: type,
    task: str,
    aliases: Sequence[str] = (),
    default_model_path: Optional[str] = None,
    *,
    stacklevel: int = 2,
) -> Registration:
    """Registers ``cls`` under ``task`` and ``aliases`` (normalised), replacing an earlier class
    of the same task; warns when a name moves from another task."""
    name = normalize_task(task)
    if isinstance(aliases, str):
        aliases = (aliases,)
    names = tuple(normalize_task(a) for a in aliases)
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise TypeError(
            f"cannot register {cls.__name__} for task {name!r}: it must define {missing}"
        )
    reg = Registration(cls, name, names, default_model_path)
    with _LOCK:
        old = _REGISTRY.get(name)
        if old is not None and old.task == name:
            for key in old.aliases:
                if _REGISTRY.get(key) is old:
                    del _REGISTRY[key]
        for key in (name, *names):
            taken = _REGISTRY.get(key)
            if taken is not None and taken.task != name:
                warnings.warn(
                    f"Pipeline.register: {key!r} now names task {name!r} "
                    f"({cls.__name__}) instead of {taken.task!r}",
                    stacklevel=stacklevel + 1,
                )
            _REGISTRY[key] = reg
    return reg


def registered_tasks() -> dict[str, list[str]]:
    """Every registered task (canonical name) with its aliases, sorted by name."""
    out = {name: list(reg.aliases) for name, reg in _REGISTRY.items() if name == reg.task}
    return dict(sorted(out.items()))


def registration(task: str) -> Optional[Registration]:
    """The registration of ``task`` (name or alias), or None."""
    return _REGISTRY.get(normalize_task(task))


def lookup(task: str) -> Registration:
    """The registration of ``task`` (name or alias); ConfigError listing the tasks otherwise."""
    reg = registration(task)
    if reg is None:
        listing = "; ".join(
            name + (f" (aliases: {', '.join(a)})" if a else "")
            for name, a in registered_tasks().items()
        )
        raise ConfigError(f"unknown task {task!r}; registered tasks: {listing}")
    return reg


def registered_as(cls: type, task: Optional[str]) -> bool:
    """Whether ``cls`` is the class registered under the task name ``task``."""
    reg = _REGISTRY.get(task or "")
    return reg is not None and reg.cls is cls
