"""Exceptions raised by sparsepipe: one class per kind of failure, all under SparsepipeError."""

from __future__ import annotations

__all__ = ["ConfigError", "EngineError", "InputError", "ModelLoadError", "SparsepipeError"]


class SparsepipeError(Exception):
    """Base class of every error sparsepipe raises on purpose."""


class ModelLoadError(SparsepipeError):
    """The model file is missing, unreadable, not ONNX, truncated or uses unsupported operators."""


class InputError(SparsepipeError, ValueError):
    """The inputs of a call do not match the model (count, name, dtype, rank or shape)."""


class ConfigError(SparsepipeError, ValueError):
    """An option given to sparsepipe is invalid (e.g. ``num_threads=0``)."""


class EngineError(SparsepipeError, RuntimeError):
    """Running the model failed after its inputs were accepted."""
