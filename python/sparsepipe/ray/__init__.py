"""Scale-out on Ray (the ``ray`` extra): Ray Serve deployments of a server config
(`sparsepipe.ray.serve`) and Ray Data batch inference (`PipelinePredictor`).

Nothing outside this package imports Ray; `require_ray` turns a missing extra into one line.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError

__all__ = ["PipelinePredictor", "require_ray"]


def require_ray(what: str, parts: tuple[str, ...] = ("serve", "data")) -> None:
    """ConfigError naming ``what`` and the extra to install unless Ray and the Ray libraries in
    ``parts`` (``serve``, ``data``) import."""
    try:
        import ray  # noqa: F401

        for part in parts:
            importlib.import_module(f"ray.{part}")
    except ImportError as e:
        raise ConfigError(
            f"{what} needs the ray extra ({e.name} is missing): pip install 'sparsepipe[ray]'"
        ) from e


def __getattr__(name: str) -> Any:
    if name == "PipelinePredictor":
        from .data import PipelinePredictor

        return PipelinePredictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
