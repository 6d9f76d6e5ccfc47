"""`Pipeline`: the base class every task (built-in or custom) derives from.

A pipeline turns a task's typed input (a pydantic model) into engine arrays (`process_inputs`),
runs the engine in `batch_size` chunks (`engine_forward`) and turns the outputs back into the
task's typed output (`process_engine_outputs`). The shape of this API follows DeepSparse's
Pipelines, so a custom DeepSparse pipeline ports by changing its import. The task names live in
`sparsepipe.registry`, config files in `sparsepipe.config`.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Union

import numpy as np
from pydantic import BaseModel, ValidationError

from . import models, registry
from .aliases import (
    CREATE_ALIASES,
    check_input_shapes,
    check_scheduler,
    resolve_aliases,
    warn_context_ignored,
)
from .config import PipelineConfig, load_pipeline_config
from .engine import check_engine_options, check_engine_type, create_engine
from .errors import ConfigError, InputError
from .registry import normalize_task, registered_tasks

__all__ = [
    "Batch",
    "BatchFields",
    "EngineInputs",
    "Pipeline",
    "PipelineConfig",
    "StageTimings",
    "normalize_task",
    "plan_batches",
    "registered_tasks",
    "split_processed",
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

    def check(self, input_model: type[BaseModel], output_model: type[BaseModel]) -> None:
        """ConfigError unless every named field exists in the task's input/output models."""
        for kind, names, model in (
            ("input", self.inputs, input_model),
            ("output", self.outputs, output_model),
        ):
            missing = [n for n in names if n not in model.model_fields]
            if missing or not names:
                raise ConfigError(
                    f"batch_fields names {kind} field(s) {missing or '(none)'} that "
                    f"{model.__name__} does not have; its fields: {', '.join(model.model_fields)}"
                )

    def count(self, body: BaseModel) -> int:
        """The number of items in ``body`` (one value counts as one)."""
        return len(_as_list(getattr(body, self.inputs[0]))[0])

    def merge(
        self, bodies: Sequence[BaseModel], input_model: type[BaseModel]
    ) -> tuple[BaseModel, list[int], list[bool]]:
        """One input holding every item of ``bodies`` in order, each body's item count, and
        whether each body sent one value rather than a list."""
        merged: dict[str, list[Any]] = {f: [] for f in self.inputs}
        counts, singles = [], []
        for body in bodies:
            single = False
            for f in self.inputs:
                values, single = _as_list(getattr(body, f))
                merged[f].extend(values)
            counts.append(len(_as_list(getattr(body, self.inputs[0]))[0]))
            singles.append(single)
        return input_model(**merged), counts, singles

    def split(
        self,
        output: BaseModel,
        output_model: type[BaseModel],
        counts: Sequence[int],
        singles: Sequence[bool],
    ) -> list[BaseModel]:
        """The output of a merged call cut back into one output per merged body."""
        parts, offset = [], 0
        for n, single in zip(counts, singles):
            part = {f: getattr(output, f)[offset : offset + n] for f in self.outputs}
            if single and self.unwrap_single:
                part = {f: v[0] for f, v in part.items()}
            offset += n
            parts.append(output_model(**part))
        return parts


def _as_list(value: Any) -> tuple[list[Any], bool]:
    if isinstance(value, list):
        return value, False
    return [value], True


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


@dataclass(frozen=True)
class EngineInputs:
    """What a built-in task's `process_inputs` returns: the engine's input (arrays in input
    order, or rows that the task's `engine_forward` batches) and the keyword arguments its
    `process_engine_outputs` takes."""

    inputs: Any
    context: dict[str, Any] = field(default_factory=dict)


def split_processed(processed: Any) -> tuple[Any, dict[str, Any]]:
    """The engine input and the context of a `process_inputs` return value.

    This is the one place that reads it: an `EngineInputs`; DeepSparse's convention, a
    ``(engine_inputs, context_dict)`` tuple (custom pipelines written for DeepSparse return it);
    or the engine input alone (context empty).
    """
    if isinstance(processed, EngineInputs):
        return processed.inputs, dict(processed.context)
    if isinstance(processed, tuple) and len(processed) == 2 and isinstance(processed[1], dict):
        return processed[0], processed[1]
    return processed, {}


@dataclass(frozen=True)
class Batch:
    """One engine call of a batched run: the items it holds, in order (the last repeated
    ``padding`` times to fill a fixed batch), of which the first ``real`` are wanted."""

    items: list[int]
    real: int

    @property
    def padding(self) -> int:
        """How many copies of the last item fill the batch."""
        return len(self.items) - self.real


def plan_batches(
    n: int, step: Optional[int], *, pad: bool, order: Optional[Sequence[int]] = None
) -> list[Batch]:
    """Items ``0..n-1`` in ``order`` (default: as given) split into batches of ``step`` (all in
    one when None); with ``pad`` the last batch is filled up to ``step`` with its last item."""
    items = list(range(n)) if order is None else list(order)
    if not step or step >= n:
        step = step if pad and step else max(n, 1)
    out = []
    for start in range(0, n, step):
        part = items[start : start + step]
        real = len(part)
        if pad and real < step:
            part = part + [part[-1]] * (step - real)
        out.append(Batch(part, real))
    return out


class _Call:
    """The state of one pipeline call on one thread: its option overrides and engine time."""

    __slots__ = ("engine_runs", "engine_seconds", "options")

    def __init__(self, options: Optional[BaseModel]) -> None:
        self.options = options
        self.engine_seconds = 0.0
        self.engine_runs = 0


class _ThreadState(threading.local):
    """Per-thread state of a pipeline: the call running on the thread and its last timings."""

    def __init__(self) -> None:
        self.call: Optional[_Call] = None
        self.timings: Optional[StageTimings] = None


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
    #: DeepSparse's names of this task's options and the names they stand for here; both are
    #: accepted at create time and per call (`sparsepipe.aliases.resolve_aliases`)
    option_aliases: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        model_path: Optional[Union[str, os.PathLike[str]]] = None,
        *,
        engine_type: str = "sparsepipe",
        batch_size: Optional[int] = 1,
        num_threads: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        self._local = _ThreadState()
        self._options: Optional[BaseModel] = None
        self._task_kwargs: dict[str, Any] = {}
        #: the display name given with ``alias=`` (DeepSparse's), e.g. a server endpoint's name
        self.alias: Optional[str] = None
        #: DeepSparse's ``scheduler`` as given (sparsepipe runs every call on all threads)
        self.scheduler: Optional[str] = None
        kwargs = resolve_aliases(kwargs, type(self).option_aliases)
        task = type(self).task or type(self).__name__
        schema = type(self).options_schema
        if schema is not None:
            source = model_path if model_path is not None else type(self).default_model_path
            shipped = {
                k: v for k, v in models.shipped_options(source).items() if k in schema.model_fields
            }
            given = {k: kwargs.pop(k) for k in list(kwargs) if k in schema.model_fields}
            try:
                self._options = schema.model_validate({**shipped, **given})
            except ValidationError as e:
                note = (
                    f"\n(the embedded model {source} ships the defaults {shipped}; pass any of "
                    "them to override it)"
                    if shipped
                    else ""
                )
                raise ConfigError(f"invalid option for task {task!r}:\n{e}{note}") from e
        if kwargs:
            valid = ["model_path", *init_options(type(self))]
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
        self.model_path = model_path
        self.engine_type = check_engine_type(engine_type)
        self.batch_size, self.num_threads = check_engine_options(batch_size, num_threads)
        self._timings: Optional[StageTimings] = None
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
        self._context_kwargs = context_parameters(self.process_engine_outputs)

    # ---- registry -------------------------------------------------------------------------

    @staticmethod
    def register(
        task: str,
        task_aliases: Sequence[str] = (),
        default_model_path: Optional[str] = None,
    ) -> Callable[[type], type]:
        """Class decorator registering a `Pipeline` subclass under ``task`` and its aliases."""

        def decorator(cls: type) -> type:
            if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
                raise TypeError(f"Pipeline.register decorates Pipeline subclasses, got {cls!r}")
            reg = registry.add(cls, task, task_aliases, default_model_path)
            cls.task = reg.task
            if default_model_path is not None:
                cls.default_model_path = default_model_path
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
        alias: Optional[str] = None,
        input_shapes: Optional[Sequence[Any]] = None,
        scheduler: Any = None,
        context: Any = None,
        **task_kwargs: Any,
    ) -> Pipeline:
        """The pipeline registered for ``task`` (name or alias) on ``model_path`` or the default.

        DeepSparse's arguments are accepted too: ``num_cores`` (``num_threads``),
        ``engine_type="deepsparse"`` (this engine), ``alias`` (a display name, kept as
        ``pipeline.alias``), ``input_shapes`` (a text model's sequence length or a vision model's
        input size, as the task reads them), ``scheduler`` (checked and kept; every call runs
        on all threads) and ``context`` (ignored, with a warning).
        """
        reg = registry.lookup(task)
        given = {**task_kwargs, **({} if num_threads is None else {"num_threads": num_threads})}
        task_kwargs = resolve_aliases(given, CREATE_ALIASES)
        num_threads = task_kwargs.pop("num_threads", None)
        if alias is not None and (not isinstance(alias, str) or not alias.strip()):
            raise ConfigError(f"alias must be a non-empty string, got {alias!r}")
        scheduler = check_scheduler(scheduler)
        if context is not None:
            warn_context_ignored()
        kwargs = dict(task_kwargs)
        if sequence_length is not None:
            kwargs["sequence_length"] = sequence_length
        if input_shapes is not None:
            derived = reg.cls.input_shapes_options(check_input_shapes(input_shapes))
            for key, value in derived.items():
                if kwargs.get(key) is not None and kwargs[key] != value:
                    raise ConfigError(
                        f"input_shapes={input_shapes!r} sets {key}={value!r}, but "
                        f"{key}={kwargs[key]!r} was given too; give only one of them"
                    )
                kwargs[key] = value
        if model_path is None:
            model_path = reg.default_model_path
        pipeline = reg.cls(
            model_path=model_path,
            engine_type=engine_type,
            batch_size=batch_size,
            num_threads=num_threads,
            **kwargs,
        )
        pipeline._task_kwargs = resolve_aliases(task_kwargs, reg.cls.option_aliases)
        pipeline.alias = alias
        pipeline.scheduler = scheduler
        return pipeline

    @classmethod
    def input_shapes_options(cls, shapes: list[list[int]]) -> dict[str, Any]:
        """The task options DeepSparse's ``input_shapes`` stands for (e.g. a text model's
        ``sequence_length``); a task that takes no fixed input shape raises ConfigError."""
        raise ConfigError(
            f"task {cls.task or cls.__name__!r} does not take input_shapes; its inputs' shapes "
            "follow from each call"
        )

    @staticmethod
    def from_config(
        config: Union[PipelineConfig, Mapping[str, Any], str, os.PathLike[str]],
    ) -> Pipeline:
        """A pipeline from a `PipelineConfig`, a dict, or a ``.yaml``/``.yml``/``.json`` file."""
        config = load_pipeline_config(config)
        return Pipeline.create(
            config.task,
            config.model_path,
            engine_type=config.engine_type,
            batch_size=config.batch_size,
            num_threads=config.num_threads,
            sequence_length=config.sequence_length,
            alias=config.alias,
            scheduler=config.scheduler,
            input_shapes=config.input_shapes,
            **config.kwargs,
        )

    def to_config(self) -> PipelineConfig:
        """The `PipelineConfig` that recreates this pipeline with `Pipeline.from_config`."""
        if not registry.registered_as(type(self), type(self).task):
            raise ConfigError(
                f"{type(self).__name__} is not registered under its own task name, so a config "
                "could not rebuild it; decorate it with @Pipeline.register(...)"
            )
        kwargs = self._config_kwargs()
        for key, value in self._task_kwargs.items():
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
            alias=self.alias,
            scheduler=self.scheduler,
            kwargs=kwargs,
        )

    def _config_kwargs(self) -> dict[str, Any]:
        """Task options to store in `to_config` (the options model's values by default)."""
        opts = self.options
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
        """The task options in effect for the call running on this thread (create-time values
        with that call's overrides), or the create-time values outside a call."""
        call = self._local.call
        if call is not None and call.options is not None:
            return call.options
        return self._options

    @property
    def timings(self) -> Optional[StageTimings]:
        """Seconds per stage of this thread's most recent call (or of the most recent call from
        any thread when this one has made none): ``pre`` (parsing, `process_inputs`, batching and
        padding the engine arrays), ``engine`` (inside the engine), ``post``
        (`process_engine_outputs`) and ``total``."""
        return self._local.timings or self._timings

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the pipeline on one input: keyword fields, positional values or a schema object;
        keyword arguments named in ``options_schema`` override the task options for this call."""
        overrides = {}
        schema = self.options_schema
        if self.option_aliases:
            kwargs = resolve_aliases(kwargs, self.option_aliases)
        if schema is not None:
            for name in list(kwargs):
                if name in schema.model_fields:
                    overrides[name] = kwargs.pop(name)
        t0 = time.perf_counter()
        inputs = self.parse_inputs(*args, **kwargs)
        options = None
        if overrides:
            options = schema.model_validate({**self._options.model_dump(), **overrides})
        call = _Call(options)
        outer, self._local.call = self._local.call, call
        try:
            engine_inputs, context = split_processed(self.process_inputs(inputs))
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
            self._local.call = outer
        if call.engine_runs:
            engine = call.engine_seconds
            pre = t2 - t0 - engine
        else:
            engine, pre = t2 - t1, t1 - t0
        self._timings = StageTimings(pre, engine, t3 - t2, t3 - t0)
        self._local.timings = self._timings
        return outputs

    def run_engine(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Runs the engine once on ``arrays`` (one chunk); the time counts as the current call's
        engine stage. `engine_forward` implementations call this for each chunk."""
        t = time.perf_counter()
        try:
            return self.engine.run(arrays)
        finally:
            call = self._local.call
            if call is not None:
                call.engine_seconds += time.perf_counter() - t
                call.engine_runs += 1

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

        ``engine_inputs`` is a list or tuple of arrays, one per model input (one array alone is
        taken as that list of one); anything else raises `InputError`.

        A chunk smaller than ``batch_size`` is padded (with copies of its last row) only when the
        model's batch size is fixed; outputs are trimmed back to the real rows either way.
        """
        arrays = _engine_arrays(engine_inputs)
        if not arrays or arrays[0].ndim == 0:
            return self.run_engine(arrays)
        n = arrays[0].shape[0]
        if n == 0:
            raise InputError(
                "the engine inputs hold no items (batch dimension 0); pass at least one item"
            )
        step = self.batch_size
        if step is None or n == step:
            return self.run_engine(arrays)
        batched = [a.ndim > 0 and a.shape[0] == n for a in arrays]
        chunks: list[list[np.ndarray]] = []
        for chunk in plan_batches(n, step, pad=self._engine_batch is not None):
            lo, hi = chunk.items[0], chunk.items[chunk.real - 1] + 1
            part = [a[lo:hi] if b else a for a, b in zip(arrays, batched)]
            if chunk.padding:
                part = [
                    np.concatenate([p, np.repeat(p[-1:], chunk.padding, axis=0)]) if b else p
                    for p, b in zip(part, batched)
                ]
            out = self.run_engine(part)
            rows = len(part[0])
            chunks.append([o[: chunk.real] if o.ndim and o.shape[0] == rows else o for o in out])
        joined = []
        for i, first in enumerate(chunks[0]):
            per_row = first.ndim and all(c[i].ndim and c[i].shape[0] <= step for c in chunks)
            is_batch = per_row and sum(c[i].shape[0] for c in chunks) == n
            joined.append(np.concatenate([c[i] for c in chunks]) if is_batch else first)
        return joined

    # ---- what a task declares for the command line (a task overrides those it supports) -------

    def annotate(self, image: Any, output: Any = None) -> Any:
        """A copy of `image` (a PIL image) with this task's result for it drawn on it, for
        ``sparsepipe annotate``; `output` is the pipeline's result for `image`, computed when not
        given. A task that cannot draw its results raises ConfigError."""
        raise ConfigError(
            f"task {type(self).task or type(self).__name__!r} cannot annotate images (its "
            "pipeline defines no annotate method); use a task that draws its results"
        )

    def accuracy(self, texts: Sequence[Any], labels: Sequence[Any]) -> float:
        """Fraction (0 to 1) of `texts` (strings or text pairs) for which the pipeline predicts
        the matching entry of `labels` (label names or ids), for ``sparsepipe sparsify --eval``;
        a task that cannot be scored on labelled texts raises ConfigError."""
        raise ConfigError(
            f"task {type(self).task or type(self).__name__!r} cannot be evaluated by --eval (its "
            "pipeline defines no accuracy method); use a task that predicts one label per text"
        )

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


def context_parameters(fn: Callable[..., Any]) -> Union[bool, frozenset[str]]:
    """True when ``fn`` takes ``**kwargs`` (all context), else the names it can take by keyword."""
    if _takes_var_keyword(fn):
        return True
    params = list(inspect.signature(fn).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in params if p.kind in kinds)


def init_options(cls: type) -> list[str]:
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


def _engine_arrays(engine_inputs: Any) -> list[np.ndarray]:
    """The engine's input arrays from what processing returned, or InputError saying what is
    wrong with it."""
    if isinstance(engine_inputs, np.ndarray):
        return [engine_inputs]
    if not isinstance(engine_inputs, (list, tuple)):
        raise InputError(
            "the engine inputs must be a list of numpy arrays, one per model input; got "
            f"{type(engine_inputs).__name__}"
        )
    arrays = []
    for i, a in enumerate(engine_inputs):
        try:
            arrays.append(np.asarray(a))
        except (ValueError, TypeError) as e:
            raise InputError(f"engine input {i} cannot be made a numpy array: {e}") from None
    return arrays
