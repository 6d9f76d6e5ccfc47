"""Scale-out on Ray (the ``ray`` extra): Ray Serve deployments of a server config
(`sparsepipe.ray.serve`) and Ray Data batch inference (`PipelinePredictor`).

Nothing outside this package imports Ray; `require_ray` turns a missing extra into one line.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

__all__ = ["PipelinePredictor", "require_ray"]


def require_ray(what: str) -> None:
    """ConfigError naming ``what`` and the extra to install unless Ray Serve and Ray Data import."""
    try:
        import ray
        import ray.data
        import ray.serve  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"{what} needs the ray extra ({e.name} is missing): pip install 'sparsepipe[ray]'"
        ) from e


def __getattr__(name: str) -> Any:
    if name == "PipelinePredictor":
        from .data import PipelinePredictor

        return PipelinePredictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
