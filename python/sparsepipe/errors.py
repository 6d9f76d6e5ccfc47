"""Exceptions raised by sparsepipe: one class per kind of failure, all under SparsepipeError.

The classes are created by the compiled engine (so it raises them itself) and re-exported here,
where they say they live:

- ``SparsepipeError(Exception)``: base class of every error sparsepipe raises on purpose.
- ``ModelLoadError(SparsepipeError)``: the model file is missing, unreadable, not ONNX,
  truncated or uses unsupported operators.
- ``InputError(SparsepipeError, ValueError)``: the inputs of a call do not match the model
  (count, name, dtype, rank or shape).
- ``ConfigError(SparsepipeError, ValueError)``: an option given to sparsepipe is invalid (e.g.
  ``num_threads=0``).
- ``EngineError(SparsepipeError, RuntimeError)``: running the model failed after its inputs were
  accepted.
"""

from __future__ import annotations

from ._engine import ConfigError, EngineError, InputError, ModelLoadError, SparsepipeError

__all__ = ["ConfigError", "EngineError", "InputError", "ModelLoadError", "SparsepipeError"]
