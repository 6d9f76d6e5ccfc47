"""DeepSparse's names for sparsepipe's options, and the DeepSparse arguments that have no
sparsepipe counterpart, resolved in one place so DeepSparse code runs with its import changed.

An alias and the name it stands for given together with different values is a ConfigError:
neither silently wins.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from .errors import ConfigError

__all__ = [
    "CREATE_ALIASES",
    "SCHEDULERS",
    "check_input_shapes",
    "check_scheduler",
    "resolve_aliases",
    "warn_context_ignored",
]

#: `Pipeline.create` / `PipelineConfig` arguments under DeepSparse's names
CREATE_ALIASES: Mapping[str, str] = {"num_cores": "num_threads"}

#: DeepSparse's schedulers. sparsepipe has one behaviour for all three: each call runs on every
#: thread of the engine's pool, and concurrent calls (server requests, threads) are queued
#: on that pool rather than split across separate streams.
SCHEDULERS = ("single_stream", "multi_stream", "elastic")


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(np.all(np.asarray(a == b)))
    except Exception:
        return a is b


def resolve_aliases(given: Mapping[str, Any], aliases: Mapping[str, str]) -> dict[str, Any]:
    """``given`` with each alias key renamed to the name it stands for; ConfigError when an alias
    and its name are both given with different values."""
    out = dict(given)
    for alias, name in aliases.items():
        if alias not in out:
            continue
        value = out.pop(alias)
        if name in out and not _same(out[name], value):
            raise ConfigError(
                f"{alias} (DeepSparse's name) and {name} are the same option and were given "
                f"different values, {value!r} and {out[name]!r}; give only one of them"
            )
        out[name] = value
    return out


def check_scheduler(value: Any) -> Optional[str]:
    """DeepSparse's ``scheduler`` (a name or its enum) as one of `SCHEDULERS`, or None."""
    if value is None:
        return None
    name = getattr(value, "name", value) if not isinstance(value, str) else value
    if isinstance(name, str) and name.lower() in SCHEDULERS:
        return name.lower()
    raise ConfigError(
        f"scheduler must be one of {', '.join(SCHEDULERS)} (or None), got {value!r}; "
        "sparsepipe runs every call on all of the engine's threads whichever is given"
    )


def check_input_shapes(value: Any) -> list[list[int]]:
    """DeepSparse's ``input_shapes`` (one shape, or one per model input) as lists of ints >= 1."""
    shapes = value
    if isinstance(shapes, Sequence) and shapes and not isinstance(shapes[0], Sequence):
        shapes = [shapes]
    ok = (
        isinstance(shapes, Sequence)
        and not isinstance(shapes, str)
        and len(shapes) > 0
        and all(
            isinstance(s, Sequence)
            and not isinstance(s, str)
            and len(s) > 0
            and all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in s
            )
            for s in shapes
        )
    )
    if not ok:
        raise ConfigError(
            "input_shapes must be a shape (a list of ints >= 1) or a list of them, e.g. [[1, 128]] "
            f"for a text model or [[1, 3, 224, 224]] for an image model; got {value!r}"
        )
    return [[int(d) for d in s] for s in shapes]


_CONTEXT_WARNED = False
_CONTEXT_LOCK = threading.Lock()


def warn_context_ignored() -> None:
    """Warns once per process that DeepSparse's ``context`` argument is ignored, and why."""
    global _CONTEXT_WARNED
    with _CONTEXT_LOCK:
        if _CONTEXT_WARNED:
            return
        _CONTEXT_WARNED = True
    warnings.warn(
        "Pipeline.create(context=...) is accepted for DeepSparse compatibility and ignored: "
        "sparsepipe engines with the same num_threads already share one thread pool, which is "
        "what a DeepSparse Context is for",
        UserWarning,
        stacklevel=3,
    )
