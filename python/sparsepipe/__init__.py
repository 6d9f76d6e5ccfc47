"""sparsepipe: fast CPU inference for ONNX models, much faster when their weights are pruned.

Importing it registers the built-in tasks (`sparsepipe.tasks`) with `Pipeline`.
"""

from . import errors, models, registry, tasks
from ._engine import __version__, available_isas, default_num_threads
from .annotate import annotate
from .engine import Engine
from .errors import ConfigError, EngineError, InputError, ModelLoadError, SparsepipeError
from .pipeline import Pipeline, PipelineConfig, StageTimings

__all__ = [
    "ConfigError",
    "Engine",
    "EngineError",
    "InputError",
    "ModelLoadError",
    "Pipeline",
    "PipelineConfig",
    "SparsepipeError",
    "StageTimings",
    "__version__",
    "annotate",
    "available_isas",
    "default_num_threads",
    "errors",
    "models",
    "registry",
    "tasks",
]
