"""`Pipeline`: the task registry and the base class every task (built-in or custom) derives from.

A pipeline turns a task's typed input (a pydantic model) into engine arrays (`process_inputs`),
runs the engine in `batch_size` chunks (`engine_forward`) and turns the outputs back into the
task's typed output (`process_engine_outputs`). The shape of this API follows DeepSparse's
Pipelines, so a custom DeepSparse pipeline ports by changing its import.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import os
import re
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import models
from .engine import ENGINE_TYPES, create_engine
from .errors import ConfigError, InputError

__all__ = [
    "BatchFields",
    "Pipeline",
    "PipelineConfig",
    "StageTimings",
    "normalize_task",
    "registered_tasks",
]


@dataclass(frozen=True)
class BatchFields:
    """How a server merges concurrent requests of one task into one pipeline call."""

    #: input fields whose values (one item or a list of them) are concatenated across requests;
    #: the first one counts the items of a request
    inputs: tuple[str, ...]
    #: output fields holding one entry per input item, split back per request
    outputs: tuple[str, ...]
    #: a request that sent one item, not a list, gets each output field's single entry back
    unwrap_single: bool = False


def normalize_task(task: str) -> str:
    """The canonical spelling of a task name: lower case, words joined by ``-``."""
    if not isinstance(task, str):
        raise ConfigError(f"task must be a string, got {type(task).__name__}")
    return re.sub(r"[\s_\-]+", "-", task.strip().lower())


@dataclass
class _Registration:
    cls: type
    task: str
    aliases: tuple[str, ...]
    default_model_path: Optional[str]


_REGISTRY: dict[str, _Registration] = {}
_REGISTRY_LOCK = threading.Lock()


def _ensure_builtin_tasks() -> None:
    from . import tasks  # noqa: F401 - importing registers the built-in tasks


def registered_tasks() -> dict[str, list[str]]:
    """Every registered task with its aliases, e.g. ``{"question-answering": ["qa"], ...}``."""
    _ensure_builtin_tasks()
    out: dict[str, list[str]] = {}
    for name, reg in _REGISTRY.items():
        if name == reg.task:
            out[name] = list(reg.aliases)
    return dict(sorted(out.items()))


def _lookup(task: str) -> _Registration:
    _ensure_builtin_tasks()
    key = normalize_task(task)
    reg = _REGISTRY.get(key)
    if reg is None:
        listing = "; ".join(
            name + (f" (aliases: {', '.join(a)})" if a else "")
            for name, a in registered_tasks().items()
        )
        raise ConfigError(f"unknown task {task!r}; registered tasks: {listing}")
    return reg


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent in each stage of one pipeline call."""

    pre: float
    engine: float
    post: float
    total: float

    def as_dict(self) -> dict[str, float]:
        """The timings as a plain dict."""
        return {"pre": self.pre, "engine": self.engine, "post": self.post, "total": self.total}


class PipelineConfig(BaseModel):
    """Everything `Pipeline.create` takes, as a validated, serialisable object."""

    model_config = ConfigDict(extra="forbid")

    task: str
    model_path: Optional[str] = None
    engine_type: str = "sparsepipe"
    batch_size: Optional[int] = Field(default=1, ge=1)
    num_threads: Optional[int] = Field(default=None, ge=1)
    sequence_length: Optional[Union[int, list[int]]] = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("engine_type")
    @classmethod
    def _engine_type(cls, v: str) -> str:
        if v not in ENGINE_TYPES:
            raise ValueError(f"must be one of {', '.join(ENGINE_TYPES)}")
        return v


_CALL_OPTIONS: contextvars.ContextVar[Optional[dict[int, BaseModel]]] = contextvars.ContextVar(
    "sparsepipe_call_options", default=None
)


def _positive_or_none(name: str, value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive int or None, got {value!r}")
    return int(value)


class Pipeline(ABC):
    """Base class of every task pipeline; `Pipeline.create` builds one by task name.

    Subclasses define ``input_schema`` / ``output_schema`` (pydantic model classes, as class
    attributes or properties), ``process_inputs`` and ``process_engine_outputs``; they may define
    ``setup_onnx_file_path`` and take their own options in ``__init__`` before calling
    ``super().__init__(**kwargs)``. Calls accept keyword arguments, positional raw values (in the
    schema's field order) or an ``input_schema`` instance, and return an ``output_schema`` instance.
    """

    #: the task name this class is registered under (set by `Pipeline.register`)
    task: ClassVar[Optional[str]] = None
    #: the model used when ``model_path`` is not given (set by `Pipeline.register`)
    default_model_path: ClassVar[Optional[str]] = None
    #: a pydantic model of the per-call options (``top_k``...), or None for tasks without any
    options_schema: ClassVar[Optional[type[BaseModel]]] = None
    #: plan the engine for exactly ``batch_size`` rows (concrete shapes let the engine pick its
    #: specialised convolution kernels); the last chunk of a call is then padded
    fixed_engine_batch: ClassVar[bool] = False
    #: how a server merges concurrent requests into one call; None: requests run one at a time
    batch_fields: ClassVar[Optional[BatchFields]] = None
    #: the input field that takes images (paths, bytes, arrays, PIL images), so a server accepts
    #: uploaded files, raw image bodies and data URLs for it; None for tasks without images
    image_field: ClassVar[Optional[str]] = None

    def __init__(
        self,
        model_path: Optional[Union[str, os.PathLike[str]]] = None,
        *,
        engine_type: str = "sparsepipe",
        batch_size: Optional[int] = 1,
        num_threads: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        task = type(self).task or type(self).__name__
        schema = type(self).options_schema
        if schema is not None:
            given = {k: kwargs.pop(k) for k in list(kwargs) if k in schema.model_fields}
            try:
                self._options = schema.model_validate(given)
            except ValidationError as e:
                raise ConfigError(f"invalid option for task {task!r}:\n{e}") from e
        if kwargs:
            valid = ["model_path", *_init_options(type(self))]
            if type(self).options_schema is not None:
                valid += [f for f in type(self).options_schema.model_fields if f not in valid]
            raise ConfigError(
                f"unknown option(s) for task {task!r}: {', '.join(sorted(kwargs))}; "
                f"valid options: {', '.join(valid)}"
            )
        if model_path is None:
            model_path = type(self).default_model_path
        if model_path is None:
            raise ConfigError(
                f"task {task!r} has no embedded default model; pass one, e.g. "
                f"Pipeline.create({task!r}, model_path='path/to/model-dir')"
            )
        if engine_type not in ENGINE_TYPES:
            raise ConfigError(
                f"engine_type must be one of {', '.join(ENGINE_TYPES)}, got {engine_type!r}"
            )
        self.model_path = model_path
        self.engine_type = engine_type
        self.batch_size = _positive_or_none("batch_size", batch_size)
        self.num_threads = _positive_or_none("num_threads", num_threads)
        self._timings: Optional[StageTimings] = None
        self._local = threading.local()
        self._model: Optional[models.ResolvedModel] = None
        self.onnx_file_path = os.fspath(self.setup_onnx_file_path())
        self._engine_batch = None
        engine_batch = None
        if type(self).fixed_engine_batch and self.batch_size is not None:
            engine_batch = self.batch_size
        self.engine = create_engine(
            engine_type, self.onnx_file_path, batch_size=engine_batch, num_threads=self.num_threads
        )
        self._engine_batch = engine_batch or self._fixed_batch()
        if self._engine_batch is not None:
            if self.batch_size is None:
                self.batch_size = self._engine_batch
            elif self.batch_size != self._engine_batch:
                raise ConfigError(
                    f"the model has a fixed batch size of {self._engine_batch}; "
                    f"create the pipeline with batch_size={self._engine_batch}"
                )
        self._context_kwargs = _context_parameters(self.process_engine_outputs)

    # ---- registry -------------------------------------------------------------------------

    @staticmethod
    def register(
        task: str,
        task_aliases: Sequence[str] = (),
        default_model_path: Optional[str] = None,
    ) -> Callable[[type], type]:
        """Class decorator registering a `Pipeline` subclass under ``task`` and its aliases."""
        name = normalize_task(task)
        if isinstance(task_aliases, str):
            task_aliases = (task_aliases,)
        aliases = tuple(normalize_task(a) for a in task_aliases)

        def decorator(cls: type) -> type:
            if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
                raise TypeError(f"Pipeline.register decorates Pipeline subclasses, got {cls!r}")
            if inspect.isabstract(cls):
                missing = ", ".join(sorted(cls.__abstractmethods__))
                raise TypeError(
                    f"cannot register {cls.__name__} for task {name!r}: it must define {missing}"
                )
            cls.task = name
            if default_model_path is not None:
                cls.default_model_path = default_model_path
            reg = _Registration(cls, name, aliases, default_model_path)
            with _REGISTRY_LOCK:
                old = _REGISTRY.get(name)
                if old is not None and old.task == name:
                    for key in old.aliases:
                        if _REGISTRY.get(key) is old:
                            del _REGISTRY[key]
                for key in (name, *aliases):
                    taken = _REGISTRY.get(key)
                    if taken is not None and taken.task != name:
                        warnings.warn(
                            f"Pipeline.register: {key!r} now names task {name!r} "
                            f"({cls.__name__}) instead of {taken.task!r}",
                            stacklevel=2,
                        )
                    _REGISTRY[key] = reg
            return cls

        return decorator

    @staticmethod
    def create(
        task: str,
        model_path: Optional[Union[str, os.PathLike[str]]] = None,
        *,
        engine_type: str = "sparsepipe",
        batch_size: Optional[int] = 1,
        num_threads: Optional[int] = None,
        sequence_length: Optional[Union[int, Sequence[int]]] = None,
        **task_kwargs: Any,
    ) -> Pipeline:
        """The pipeline registered for ``task`` (name or alias) on ``model_path`` or the default."""
        reg = _lookup(task)
        kwargs = dict(task_kwargs)
        if sequence_length is not None:
            kwargs["sequence_length"] = sequence_length
        if model_path is None:
            model_path = reg.default_model_path
        pipeline = reg.cls(
            model_path=model_path,
            engine_type=engine_type,
            batch_size=batch_size,
            num_threads=num_threads,
            **kwargs,
        )
        pipeline._task_kwargs = {k: v for k, v in task_kwargs.items()}
        return pipeline

    @staticmethod
    def from_config(
        config: Union[PipelineConfig, Mapping[str, Any], str, os.PathLike[str]],
    ) -> Pipeline:
        """A pipeline from a `PipelineConfig`, a dict, or a ``.yaml``/``.yml``/``.json`` file."""
        if isinstance(config, (str, os.PathLike)):
            path = Path(config)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as e:
                raise ConfigError(f"cannot read pipeline config {path}: {e}") from e
            try:
                if path.suffix.lower() in (".yaml", ".yml"):
                    import yaml

                    data = yaml.safe_load(text)
                elif path.suffix.lower() == ".json":
                    data = json.loads(text)
                else:
                    raise ConfigError(f"pipeline config {path} must end in .yaml, .yml or .json")
            except ConfigError:
                raise
            except Exception as e:
                raise ConfigError(f"pipeline config {path} is not valid: {e}") from e
            config = data
        if isinstance(config, Mapping):
            try:
                config = PipelineConfig.model_validate(dict(config))
            except ValidationError as e:
                raise ConfigError(f"invalid pipeline config:\n{e}") from e
        if not isinstance(config, PipelineConfig):
            raise ConfigError(
                "from_config takes a PipelineConfig, a dict or a file path, "
                f"got {type(config).__name__}"
            )
        return Pipeline.create(
            config.task,
            config.model_path,
            engine_type=config.engine_type,
            batch_size=config.batch_size,
            num_threads=config.num_threads,
            sequence_length=config.sequence_length,
            **config.kwargs,
        )

    def to_config(self) -> PipelineConfig:
        """The `PipelineConfig` that recreates this pipeline with `Pipeline.from_config`."""
        reg = _REGISTRY.get(type(self).task or "")
        if reg is None or reg.cls is not type(self):
            raise ConfigError(
                f"{type(self).__name__} is not registered under its own task name, so a config "
                "could not rebuild it; decorate it with @Pipeline.register(...)"
            )
        kwargs = self._config_kwargs()
        for key, value in getattr(self, "_task_kwargs", {}).items():
            kwargs.setdefault(key, value)
        try:
            json.dumps(kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"the pipeline's options cannot be saved as a config: {e}") from e
        sequence_length = kwargs.pop("sequence_length", None)
        return PipelineConfig(
            task=type(self).task,
            model_path=os.fspath(self.model_path),
            engine_type=self.engine_type,
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            sequence_length=sequence_length,
            kwargs=kwargs,
        )

    def _config_kwargs(self) -> dict[str, Any]:
        """Task options to store in `to_config` (the options model's values by default)."""
        opts = getattr(self, "options", None)
        return opts.model_dump() if isinstance(opts, BaseModel) else {}

    # ---- what subclasses define -------------------------------------------------------------

    @property
    @abstractmethod
    def input_schema(self) -> type[BaseModel]:
        """The pydantic model of one call's input."""

    @property
    @abstractmethod
    def output_schema(self) -> type[BaseModel]:
        """The pydantic model of one call's output."""

    @abstractmethod
    def process_inputs(self, inputs: BaseModel) -> Any:
        """Engine arrays for ``inputs``, or ``(arrays, context_dict)``."""

    @abstractmethod
    def process_engine_outputs(self, engine_outputs: list[np.ndarray], **kwargs: Any) -> Any:
        """The task output for the engine outputs (``kwargs`` is the context of process_inputs)."""

    def setup_onnx_file_path(self) -> Union[str, os.PathLike[str]]:
        """The ONNX file to load; by default the one ``model_path`` resolves to."""
        return self.model.onnx_path

    # ---- running ---------------------------------------------------------------------------

    @property
    def model(self) -> models.ResolvedModel:
        """The resolved model files (ONNX file, config, tokenizer...)."""
        if self._model is None:
            self._model = models.resolve(self.model_path)
        return self._model

    @property
    def options(self) -> Optional[BaseModel]:
        """The task options in effect for the current call (create-time values + overrides)."""
        current = _CALL_OPTIONS.get()
        if current is not None and id(self) in current:
            return current[id(self)]
        return getattr(self, "_options", None)

    @property
    def timings(self) -> Optional[StageTimings]:
        """Seconds per stage (pre, engine, post, total) of this thread's most recent call (or of
        the most recent call from any thread when this one has made none)."""
        return getattr(self._local, "timings", None) or self._timings

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the pipeline on one input: keyword fields, positional values or a schema object."""
        overrides = {}
        schema = self.options_schema
        if schema is not None:
            for name in list(kwargs):
                if name in schema.model_fields:
                    overrides[name] = kwargs.pop(name)
        t0 = time.perf_counter()
        inputs = self.parse_inputs(*args, **kwargs)
        token = None
        if overrides:
            merged = {**self._options.model_dump(), **overrides}
            outer = _CALL_OPTIONS.get() or {}
            token = _CALL_OPTIONS.set({**outer, id(self): schema.model_validate(merged)})
        try:
            processed = self.process_inputs(inputs)
            if (
                isinstance(processed, tuple)
                and len(processed) == 2
                and isinstance(processed[1], dict)
            ):
                engine_inputs, context = processed
            else:
                engine_inputs, context = processed, {}
            t1 = time.perf_counter()
            engine_outputs = self.engine_forward(engine_inputs)
            t2 = time.perf_counter()
            wanted = self._context_kwargs
            if wanted is not True:
                context = {k: v for k, v in context.items() if k in wanted}
            outputs = self.process_engine_outputs(engine_outputs, **context)
            outputs = self._as_output(outputs)
            t3 = time.perf_counter()
        finally:
            if token is not None:
                _CALL_OPTIONS.reset(token)
        self._timings = StageTimings(t1 - t0, t2 - t1, t3 - t2, t3 - t0)
        self._local.timings = self._timings
        return outputs

    def example_inputs(
        self, batch_size: int, tokens: Optional[int] = None
    ) -> tuple[dict[str, Any], str]:
        """Representative keyword arguments of a call of ``batch_size`` items (texts about
        ``tokens`` tokens long where the task takes text, else its own typical length) and a
        one-line description of them, for `sparsepipe benchmark`; a task that cannot make any
        raises ConfigError."""
        raise ConfigError(
            f"task {type(self).task or type(self).__name__!r} does not generate example inputs "
            "(it defines no example_inputs); pass its .onnx file to benchmark the engine"
        )

    def parse_inputs(self, *args: Any, **kwargs: Any) -> BaseModel:
        """The ``input_schema`` instance for a call's arguments (ValidationError if invalid)."""
        schema = self.input_schema
        if len(args) == 1 and not kwargs and isinstance(args[0], BaseModel):
            if isinstance(args[0], schema):
                return args[0]
            raise InputError(
                f"expected a {schema.__name__} (pipeline.input_schema), "
                f"got {type(args[0]).__name__}"
            )
        fields = list(schema.model_fields)
        if len(args) > len(fields):
            raise InputError(
                f"{self.task} takes at most {len(fields)} positional input(s) "
                f"({', '.join(fields)}), got {len(args)}"
            )
        data = dict(zip(fields, args))
        for name, value in kwargs.items():
            if name in data:
                raise InputError(f"input {name!r} given both by position and by keyword")
            data[name] = value
        if schema.model_config.get("extra") != "allow":
            unknown = [k for k in data if k not in fields]
            if unknown:
                opts = list(self.options_schema.model_fields) if self.options_schema else []
                raise InputError(
                    f"unknown argument(s) {', '.join(map(repr, unknown))} for {self.task}; "
                    f"inputs: {', '.join(fields)}"
                    + (f"; options: {', '.join(opts)}" if opts else "")
                )
        return schema.model_validate(data)

    def _as_output(self, outputs: Any) -> Any:
        schema = self.output_schema
        if isinstance(outputs, schema):
            return outputs
        if isinstance(outputs, Mapping):
            return schema.model_validate(dict(outputs))
        return outputs

    def _fixed_batch(self) -> Optional[int]:
        dims = {s[0] for s in self.engine.input_shapes if s and isinstance(s[0], int)}
        return dims.pop() if len(dims) == 1 else None

    def engine_forward(self, engine_inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Runs the engine over the arrays in ``batch_size`` chunks and joins the outputs.

        A chunk smaller than ``batch_size`` is padded (with copies of its last row) only when the
        model's batch size is fixed; outputs are trimmed back to the real rows either way.
        """
        arrays = [np.asarray(a) for a in engine_inputs]
        if not arrays or arrays[0].ndim == 0:
            return self.engine.run(arrays)
        n = arrays[0].shape[0]
        if n == 0:
            raise InputError(
                "the engine inputs hold no items (batch dimension 0); pass at least one item"
            )
        step = self.batch_size
        if step is None or n == step:
            return self.engine.run(arrays)
        batched = [a.ndim > 0 and a.shape[0] == n for a in arrays]
        chunks: list[list[np.ndarray]] = []
        for start in range(0, n, step):
            part = [a[start : start + step] if b else a for a, b in zip(arrays, batched)]
            rows = min(step, n - start)
            if rows < step and self._engine_batch is not None:
                part = [
                    np.concatenate([p, np.repeat(p[-1:], step - rows, axis=0)]) if b else p
                    for p, b in zip(part, batched)
                ]
            out = self.engine.run(part)
            chunks.append([o[:rows] if o.ndim and o.shape[0] == len(part[0]) else o for o in out])
        joined = []
        for i, first in enumerate(chunks[0]):
            per_row = first.ndim and all(c[i].ndim and c[i].shape[0] <= step for c in chunks)
            is_batch = per_row and sum(c[i].shape[0] for c in chunks) == n
            joined.append(np.concatenate([c[i] for c in chunks]) if is_batch else first)
        return joined

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(task={self.task!r}, model_path={os.fspath(self.model_path)!r}, "
            f"engine_type={self.engine_type!r}, batch_size={self.batch_size})"
        )


def _takes_var_keyword(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _context_parameters(fn: Callable[..., Any]) -> Union[bool, frozenset[str]]:
    """True when ``fn`` takes ``**kwargs`` (all context), else the names it can take by keyword."""
    if _takes_var_keyword(fn):
        return True
    params = list(inspect.signature(fn).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in params if p.kind in kinds)


def _init_options(cls: type) -> list[str]:
    """Keyword options the ``__init__`` methods of ``cls`` and its bases accept by name."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in params:
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in names:
                names.append(p.name)
    return names
