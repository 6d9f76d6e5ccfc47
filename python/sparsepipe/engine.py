"""`Engine`: runs an ONNX model on sparsepipe's Rust engine."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Protocol, Union, runtime_checkable

import numpy as np

from . import _engine, models
from .errors import ConfigError, InputError

__all__ = [
    "ENGINE_ALIASES",
    "ENGINE_TYPES",
    "Engine",
    "InferenceEngine",
    "OnnxRuntimeEngine",
    "check_engine_options",
    "check_engine_type",
    "create_engine",
]


def check_engine_options(
    batch_size: Any = None, num_threads: Any = None
) -> tuple[Optional[int], Optional[int]]:
    """``(batch_size, num_threads)`` as ints (or None) after the engine's own checks; ConfigError
    naming the option for a bad value or a wrong type (e.g. ``batch_size=0``, ``"4"``, ``True``).
    """
    try:
        _engine.check_options(batch_size=batch_size, num_threads=num_threads)
    except TypeError as e:
        raise ConfigError(str(e)) from e
    return (
        None if batch_size is None else int(batch_size),
        None if num_threads is None else int(num_threads),
    )


PathLike = Union[str, "os.PathLike[str]"]
Inputs = Union[Sequence[Any], Mapping[str, Any]]


@runtime_checkable
class InferenceEngine(Protocol):
    """What pipelines, the CLI and the server use of an engine: `Engine` and `OnnxRuntimeEngine`
    both implement all of it, so no caller needs to ask which one it holds."""

    def __call__(self, inputs: Inputs) -> list[np.ndarray]:
        """Same as `run`."""

    def run(self, inputs: Inputs) -> list[np.ndarray]:
        """The outputs, in output order, for inputs in input order or by input name."""

    def profile(self, inputs: Inputs, iterations: int = 10) -> list[dict[str, Any]]:
        """Mean seconds per node: dicts with ``name``, ``op``, ``seconds``, ``output_elements``."""

    def sparsity_report(self) -> list[dict[str, Any]]:
        """One dict per constant-weight matmul or convolution; ConfigError where the engine does
        not choose kernels by sparsity."""

    @property
    def input_names(self) -> list[str]:
        """Input names, in input order."""

    @property
    def output_names(self) -> list[str]:
        """Output names, in output order."""

    @property
    def input_shapes(self) -> list[list[Union[int, str]]]:
        """Declared input shapes; symbolic dimensions are strings."""

    @property
    def output_shapes(self) -> list[list[Union[int, str]]]:
        """Declared output shapes; symbolic dimensions are strings."""

    @property
    def input_dtypes(self) -> list[Optional[str]]:
        """Input element types as numpy names."""

    @property
    def output_dtypes(self) -> list[Optional[str]]:
        """Output element types as numpy names."""

    @property
    def batch_size(self) -> Optional[int]:
        """The fixed batch size, or None when any batch is accepted."""

    @property
    def num_threads(self) -> int:
        """Threads the engine runs on."""

    @property
    def model_path(self) -> str:
        """Path of the ONNX file loaded."""

    @property
    def isa(self) -> Optional[str]:
        """Instruction set of sparsepipe's kernels in use, or None for an engine with its own."""


class Engine:
    """A loaded ONNX model, optimized once and callable many times, from any thread.

    Constant-weight matmuls with at least ``sparsity_threshold`` zeros run on sparsepipe's sparse
    SIMD kernels; everything else runs on tract. Work is spread over ``num_threads`` cores (default:
    ``$SPARSEPIPE_NUM_THREADS``, else all cores). The GIL is released while the model runs.

    Args:
        model_path: an ``.onnx`` file, or a directory containing ``model.onnx`` (found as
            `sparsepipe.models` finds a pipeline's model).
        batch_size: ``None`` accepts any batch size; an int requires exactly that batch and plans
            for it (concrete shapes select faster convolution kernels).
        num_threads: threads to use; ``None`` uses all cores (or ``$SPARSEPIPE_NUM_THREADS``).
        sparsity_threshold: weights with at least this fraction of zeros use the sparse kernels;
            a value above 1 disables them.
        dense_backend: who runs the other weights: ``"auto"`` (default: whichever of tract's
            matmul and our dense kernel is faster on each weight's shape, timed at load on these
            threads, a symbolic axis at 128), ``"tract"`` or ``"sparsepipe"``.
        isa: force a kernel instruction set (``"avx512"``, ``"avx2"``, ``"portable"``).
        fuse: run recognised subgraphs (scaled dot-product attention: ``q·kᵀ``, scale, additive
            mask, softmax, ``·v``; layer normalization) as one fused op each (default);
            ``False`` runs them op by op.
    """

    def __init__(
        self,
        model_path: PathLike,
        *,
        batch_size: Optional[int] = None,
        num_threads: Optional[int] = None,
        sparsity_threshold: float = 0.5,
        dense_backend: str = "auto",
        isa: Optional[str] = None,
        fuse: bool = True,
    ) -> None:
        if not isinstance(model_path, (str, os.PathLike)):
            raise TypeError(
                f"model_path must be a str or os.PathLike, got {type(model_path).__name__}"
            )
        self._engine = _engine.Engine(
            models.onnx_file(model_path),
            batch_size=batch_size,
            num_threads=num_threads,
            sparsity_threshold=sparsity_threshold,
            dense_backend=dense_backend,
            isa=isa,
            fuse=fuse,
        )
        self._dtypes = [np.dtype(d) if d else None for d in self._engine.input_dtypes]

    def __call__(self, inputs: Union[Sequence[Any], Mapping[str, Any]]) -> list[np.ndarray]:
        """Runs the model; ``inputs`` is a list in input order or a dict by input name.

        numpy arrays must have the model's dtypes; nested lists and scalars are converted to them.
        Returns the outputs as numpy arrays, in output order.
        """
        return self.run(inputs)

    def run(self, inputs: Union[Sequence[Any], Mapping[str, Any]]) -> list[np.ndarray]:
        """Same as calling the engine."""
        return self._engine.run(self._converted(inputs))

    def _converted(self, inputs: Any) -> Any:
        """``inputs`` with lists and scalars made arrays of the model's dtypes: a dict stays a
        dict, one array or a sequence becomes a list; anything else is left for the engine to
        refuse (it checks names, count, dtypes and shapes)."""
        if isinstance(inputs, Mapping):
            names = self._engine.input_names
            return {
                k: self._as_array(names.index(k), x) if k in names else x for k, x in inputs.items()
            }
        if isinstance(inputs, np.ndarray):
            return [inputs]
        if isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
            return [self._as_array(i, x) for i, x in enumerate(inputs)]
        return inputs

    def _as_array(self, i: int, x: Any) -> Any:
        if isinstance(x, np.ndarray) or i >= len(self._dtypes) or self._dtypes[i] is None:
            return x
        name = self._engine.input_names[i]
        want = self._dtypes[i]
        if x is None:
            raise InputError(f"input {name!r} is None; pass a {want} array")
        try:
            arr = np.asarray(x)
            if arr.dtype == object:
                raise ValueError("it is ragged or holds non-numeric values")
            if not np.can_cast(arr.dtype, want, casting="same_kind"):
                raise ValueError(f"its values are {arr.dtype}, which do not convert safely")
            out = arr.astype(want)
            if want.kind in "iu" and not np.array_equal(out, arr):
                raise ValueError(f"some values do not fit in {want}")
            return out
        except (TypeError, ValueError, OverflowError) as e:
            raise InputError(f"input {name!r} could not be converted to a {want} array: {e}") from e

    @property
    def input_names(self) -> list[str]:
        """Input names, in the order ``__call__`` takes a list."""
        return self._engine.input_names

    @property
    def output_names(self) -> list[str]:
        """Output names, in the order outputs are returned."""
        return self._engine.output_names

    @property
    def input_shapes(self) -> list[list[Union[int, str]]]:
        """Declared input shapes; symbolic dimensions are strings such as ``"batch"``."""
        return self._engine.input_shapes

    @property
    def output_shapes(self) -> list[list[Union[int, str]]]:
        """Declared output shapes; symbolic dimensions are strings."""
        return self._engine.output_shapes

    @property
    def input_dtypes(self) -> list[Optional[str]]:
        """Input element types as numpy names (``"int64"``, ``"float32"``...)."""
        return self._engine.input_dtypes

    @property
    def output_dtypes(self) -> list[Optional[str]]:
        """Output element types as numpy names."""
        return self._engine.output_dtypes

    @property
    def batch_size(self) -> Optional[int]:
        """The fixed batch size, or ``None`` when any batch is accepted."""
        return self._engine.batch_size

    @property
    def num_threads(self) -> int:
        """Threads the engine runs on."""
        return self._engine.num_threads

    @property
    def isa(self) -> str:
        """Instruction set of the kernels in use (``avx512``, ``avx2`` or ``portable``)."""
        return self._engine.isa

    @property
    def model_path(self) -> str:
        """Path of the ONNX file loaded."""
        return os.fspath(self._engine.model_path)

    def profile(
        self, inputs: Union[Sequence[Any], Mapping[str, Any]], iterations: int = 10
    ) -> list[dict[str, Any]]:
        """Mean seconds per plan node over ``iterations`` runs on ``inputs``: one dict per node
        with ``name``, ``op``, ``seconds`` and ``output_elements``, in plan order."""
        return self._engine.profile(self._converted(inputs), iterations)

    def sparsity_report(self) -> list[dict[str, Any]]:
        """One dict per constant-weight matmul or groups-1 convolution (``pattern`` ``"conv KxK
        stride SxS"``, ``k`` = C·kh·kw): node, pattern, shape, k, n, sparsity, kernel
        (``"sparse"`` or ``"dense"``), isa (``"tract"`` when tract's matmul runs it), the
        fused bias/activation nodes and plan_node, the plan node that computes it (``node``
        itself, or the one linear that computes an attention's query, key and value; with a
        ``.residual`` suffix when that node also adds a residual connection; ``<first>.chain``
        when two linears run back to back as one node) and plan_output_channels, the channels
        of that node's output."""
        return self._engine.sparsity_report()

    @property
    def fuse(self) -> bool:
        """Whether recognised subgraphs run as fused ops."""
        return self._engine.fuse

    def fused_ops(self) -> dict[str, list[str]]:
        """The subgraphs that run as one fused op, by kind: ``"attention"`` (``q·kᵀ``, scale,
        mask, softmax, ``·v``; named by the softmax node), ``"qkv_projection"`` (an attention's
        query, key and value linears computed as one; named by the softmax node),
        ``"layer_norm"`` (named by the normalization node), ``"residual_add"`` (an ``Add`` of
        a linear's output and a tensor of its shape done as the linear writes it; named by the
        linear) and ``"linear_chain"`` (a linear whose output only feeds another, e.g. a
        feed-forward block's up- and down-projections, run as one op with each tile of rows
        kept in cache between the two; named by the first); empty lists when ``fuse=False``."""
        out: dict[str, list[str]] = {
            "attention": [],
            "qkv_projection": [],
            "layer_norm": [],
            "residual_add": [],
            "linear_chain": [],
        }
        for kind, node in self._engine.fused_ops():
            out.setdefault(kind, []).append(node)
        return out

    def fusion_misses(self) -> list[dict[str, Optional[str]]]:
        """Every subgraph that could have run as a fused op of ``fused_ops()``'s kinds but runs
        operator by operator, as ``{"kind", "node", "reason", "related"}``: each softmax that
        is not a recognised attention, each attention whose projections stay apart (named by
        its softmax), each normalization that is not a layer norm, each ``Add`` of a weight
        matmul's output and another activation that is not folded into it, and each weight
        matmul fed by another (directly or through element-wise ops) that does not run chained
        to it. The reason says what did not match and, when an option would fix it, which;
        ``related`` names the node it is about when that is not ``node`` (e.g. a weight matmul
        left to tract), else None. Besides those (none when ``fuse=False``), kind
        ``"convolution"`` lists each convolution and ``"max_pool"`` each max pool that our
        kernels do not take and tract runs (e.g. grouped convolutions with several channels per
        group, a ceil-mode pool that rounds its output size up), with why."""
        return [
            {"kind": kind, "node": node, "reason": reason, "related": related}
            for kind, node, reason, related in self._engine.fusion_misses()
        ]

    def __repr__(self) -> str:
        report = self.sparsity_report()
        sparse = sum(1 for r in report if r["kernel"] == "sparse")
        return (
            f"Engine({self.model_path!r}, inputs={self.input_names}, "
            f"batch_size={self.batch_size}, num_threads={self.num_threads}, "
            f"sparse_layers={sparse}/{len(report)}, isa={self.isa!r})"
        )


_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


class OnnxRuntimeEngine:
    """`Engine`'s interface run by onnxruntime (``pip install sparsepipe[onnxruntime]``)."""

    def __init__(
        self,
        model_path: PathLike,
        *,
        batch_size: Optional[int] = None,
        num_threads: Optional[int] = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ConfigError(
                "engine_type='onnxruntime' needs onnxruntime: pip install 'sparsepipe[onnxruntime]'"
            ) from e
        from .errors import ModelLoadError

        _engine.check_options(batch_size=batch_size, num_threads=num_threads)
        self._batch_size = None if batch_size is None else int(batch_size)
        threads = None if num_threads is None else int(num_threads)
        self._num_threads = _engine.default_num_threads() if threads is None else threads
        self._path = os.fspath(model_path)
        try:
            self._session = self._new_session(ort)
        except Exception as e:
            raise ModelLoadError(f"onnxruntime cannot load {self._path}: {e}") from e
        self._inputs = self._session.get_inputs()
        self._outputs = self._session.get_outputs()
        self._dtypes = [np.dtype(_ORT_DTYPES.get(i.type, "float32")) for i in self._inputs]

    def _new_session(self, ort: Any, profile_prefix: Optional[str] = None) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._num_threads
        options.inter_op_num_threads = 1
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        return ort.InferenceSession(self._path, options, providers=["CPUExecutionProvider"])

    def __call__(self, inputs: Union[Sequence[Any], Mapping[str, Any]]) -> list[np.ndarray]:
        """Runs the model; ``inputs`` is a list in input order or a dict by input name."""
        return self.run(inputs)

    def run(self, inputs: Union[Sequence[Any], Mapping[str, Any]]) -> list[np.ndarray]:
        """Same as calling the engine."""
        feed = self._feed(inputs)
        try:
            return list(self._session.run(None, feed))
        except Exception as e:
            raise InputError(f"onnxruntime rejected the inputs: {e}") from e

    def _feed(self, inputs: Union[Sequence[Any], Mapping[str, Any]]) -> dict[str, np.ndarray]:
        names = self.input_names
        if isinstance(inputs, Mapping):
            unknown = [k for k in inputs if k not in names]
            missing = [n for n in names if n not in inputs]
            if unknown or missing:
                raise InputError(
                    f"inputs must be named {', '.join(map(repr, names))}; "
                    f"unknown: {unknown}, missing: {missing}"
                )
            ordered = [inputs[n] for n in names]
        else:
            ordered = list(inputs)
        if len(ordered) != len(names):
            raise InputError(f"the model takes {len(names)} inputs, got {len(ordered)}")
        feed = {}
        for name, want, x in zip(names, self._dtypes, ordered):
            arr = np.asarray(x)
            if arr.dtype != want:
                if not np.can_cast(arr.dtype, want, casting="same_kind"):
                    raise InputError(f"input {name!r} must be {want}, got {arr.dtype}")
                arr = arr.astype(want)
            if self._batch_size is not None and arr.ndim and arr.shape[0] != self._batch_size:
                raise InputError(
                    f"input {name!r} has batch {arr.shape[0]}, the engine takes {self._batch_size}"
                )
            feed[name] = arr
        return feed

    def profile(
        self, inputs: Union[Sequence[Any], Mapping[str, Any]], iterations: int = 10
    ) -> list[dict[str, Any]]:
        """Mean seconds per node over ``iterations`` runs on ``inputs``, from onnxruntime's own
        profiler: one dict per node with ``name``, ``op``, ``seconds`` and ``output_elements``,
        in the order the nodes first ran (nodes onnxruntime fused carry its names)."""
        import json
        import tempfile

        import onnxruntime as ort

        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ConfigError(f"iterations must be a positive int, got {iterations!r}")
        feed = self._feed(inputs)
        with tempfile.TemporaryDirectory(prefix="sparsepipe-ort-profile-") as tmp:
            session = self._new_session(ort, os.path.join(tmp, "profile"))
            for _ in range(iterations):
                session.run(None, feed)
            with open(session.end_profiling(), encoding="utf-8") as f:
                events = json.load(f)
        nodes: dict[str, dict[str, Any]] = {}
        for event in events:
            name = event.get("name", "")
            if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
                continue
            name = name[: -len("_kernel_time")]
            args = event.get("args", {})
            entry = nodes.setdefault(
                name,
                {"name": name, "op": args.get("op_name", ""), "seconds": 0.0, "output_elements": 0},
            )
            entry["seconds"] += float(event.get("dur", 0)) * 1e-6 / iterations
            shapes = args.get("output_type_shape") or [{}]
            dims = next(iter(shapes[0].values()), [])
            entry["output_elements"] = int(np.prod(dims)) if dims else 0
        return list(nodes.values())

    def sparsity_report(self) -> list[dict[str, Any]]:
        """Never: onnxruntime runs every weight dense; ConfigError saying to use sparsepipe's
        engine, whose `Engine.sparsity_report` says which weights run on the sparse kernels."""
        raise ConfigError(
            "sparsity_report describes sparsepipe's engine; onnxruntime runs every weight dense "
            "(use engine_type='sparsepipe')"
        )

    @property
    def input_names(self) -> list[str]:
        """Input names, in the order ``__call__`` takes a list."""
        return [i.name for i in self._inputs]

    @property
    def output_names(self) -> list[str]:
        """Output names, in the order outputs are returned."""
        return [o.name for o in self._outputs]

    @property
    def input_shapes(self) -> list[list[Union[int, str]]]:
        """Declared input shapes; symbolic dimensions are strings."""
        return [[d if isinstance(d, int) else str(d) for d in i.shape] for i in self._inputs]

    @property
    def output_shapes(self) -> list[list[Union[int, str]]]:
        """Declared output shapes; symbolic dimensions are strings."""
        return [[d if isinstance(d, int) else str(d) for d in o.shape] for o in self._outputs]

    @property
    def input_dtypes(self) -> list[Optional[str]]:
        """Input element types as numpy names."""
        return [d.name for d in self._dtypes]

    @property
    def output_dtypes(self) -> list[Optional[str]]:
        """Output element types as numpy names (None for a type numpy has no name for)."""
        return [_ORT_DTYPES.get(o.type) for o in self._outputs]

    @property
    def isa(self) -> Optional[str]:
        """None: onnxruntime picks its own kernels."""
        return None

    @property
    def batch_size(self) -> Optional[int]:
        """The fixed batch size, or ``None`` when any batch is accepted."""
        return self._batch_size

    @property
    def num_threads(self) -> int:
        """Threads onnxruntime runs on."""
        return self._num_threads

    @property
    def model_path(self) -> str:
        """Path of the ONNX file loaded."""
        return self._path

    def __repr__(self) -> str:
        return f"OnnxRuntimeEngine({self._path!r}, inputs={self.input_names})"


ENGINE_TYPES = ("sparsepipe", "onnxruntime")


#: other names of the engines: DeepSparse code asks for ``engine_type="deepsparse"``
ENGINE_ALIASES = {"deepsparse": "sparsepipe"}


def check_engine_type(engine_type: Any) -> str:
    """The engine ``engine_type`` names (one of `ENGINE_TYPES`, or an `ENGINE_ALIASES` key, read
    as the engine it stands for); TypeError for a non-string, ConfigError listing the engines
    otherwise."""
    if not isinstance(engine_type, str):
        raise TypeError(
            f"engine_type must be a str, one of {ENGINE_TYPES}, got {type(engine_type).__name__}"
        )
    engine_type = ENGINE_ALIASES.get(engine_type, engine_type)
    if engine_type not in ENGINE_TYPES:
        raise ConfigError(
            f"engine_type must be one of {', '.join(map(repr, ENGINE_TYPES))} (or 'deepsparse', "
            f"this engine under DeepSparse's name), got {engine_type!r}"
        )
    return engine_type


def create_engine(
    engine_type: str,
    model_path: PathLike,
    *,
    batch_size: Optional[int] = None,
    num_threads: Optional[int] = None,
) -> InferenceEngine:
    """An engine of ``engine_type`` (``"sparsepipe"`` or ``"onnxruntime"``) for ``model_path``."""
    if check_engine_type(engine_type) == "onnxruntime":
        return OnnxRuntimeEngine(model_path, batch_size=batch_size, num_threads=num_threads)
    return Engine(model_path, batch_size=batch_size, num_threads=num_threads)
