"""`Engine`: runs an ONNX model on sparsepipe's Rust engine."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from . import _engine
from .errors import ConfigError, InputError

__all__ = ["Engine", "OnnxRuntimeEngine", "create_engine"]


def _positive_int(option: str, value: Any) -> Optional[int]:
    """`value` as an int >= 1, or None; ConfigError/TypeError naming `option` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{option} must be an int or None, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ConfigError(f"{option} must be at least 1 (or None), got {value}")
    return int(value)


def _threshold(value: Any) -> float:
    """The sparsity threshold as a float in [0, inf); ConfigError/TypeError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"sparsity_threshold must be a number between 0 and 1, got {type(value).__name__} "
            f"{value!r}"
        )
    value = float(value)
    if not value >= 0.0:
        raise ConfigError(
            "sparsity_threshold must be between 0 and 1 (above 1 disables the sparse kernels), "
            f"got {'NaN' if value != value else value}"
        )
    return value


def _choice(option: str, value: Any, allowed: tuple[str, ...]) -> str:
    """`value` if it is one of `allowed`; ConfigError/TypeError naming `option` otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"{option} must be a str, one of {allowed}, got {type(value).__name__}")
    if value not in allowed:
        raise ConfigError(f"{option} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _flag(option: str, value: Any) -> bool:
    """`value` if it is a bool; TypeError naming `option` otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{option} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


PathLike = Union[str, "os.PathLike[str]"]


class Engine:
    """A loaded ONNX model, optimized once and callable many times, from any thread.

    Constant-weight matmuls with at least ``sparsity_threshold`` zeros run on sparsepipe's sparse
    SIMD kernels; everything else runs on tract. Work is spread over ``num_threads`` cores (default:
    ``$SPARSEPIPE_NUM_THREADS``, else all cores). The GIL is released while the model runs.

    Args:
        model_path: an ``.onnx`` file, or a directory containing ``model.onnx``.
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
            os.fspath(model_path),
            batch_size=_positive_int("batch_size", batch_size),
            num_threads=_positive_int("num_threads", num_threads),
            sparsity_threshold=_threshold(sparsity_threshold),
            dense_backend=_choice("dense_backend", dense_backend, ("auto", "tract", "sparsepipe")),
            isa=None if isa is None else _choice("isa", isa, ("avx512", "avx2", "portable")),
            fuse=_flag("fuse", fuse),
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
        names = self._engine.input_names
        if isinstance(inputs, Mapping):
            unknown = [k for k in inputs if k not in names]
            if unknown:
                raise InputError(
                    f"the model has no input named {unknown[0]!r}; its inputs are "
                    + ", ".join(repr(n) for n in names)
                )
            missing = [n for n in names if n not in inputs]
            if missing:
                raise InputError(
                    f"input {missing[0]!r} is missing; the model takes "
                    + ", ".join(repr(n) for n in names)
                )
            ordered = [inputs[n] for n in names]
        elif isinstance(inputs, np.ndarray):
            ordered = [inputs]
        elif isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
            ordered = list(inputs)
        else:
            raise InputError(
                "inputs must be a list of arrays in input order or a dict by input name "
                f"({', '.join(repr(n) for n in names)}), got {type(inputs).__name__}"
            )
        return self._engine.run([self._as_array(i, x) for i, x in enumerate(ordered)])

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
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ConfigError(f"iterations must be a positive int, got {iterations!r}")
        names = self._engine.input_names
        if isinstance(inputs, Mapping):
            missing = [n for n in names if n not in inputs]
            if missing:
                raise InputError(f"input {missing[0]!r} is missing; the model takes {names}")
            inputs = [inputs[n] for n in names]
        arrays = [self._as_array(i, x) for i, x in enumerate(inputs)]
        return self._engine.profile(arrays, iterations)

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

        self._batch_size = _positive_int("batch_size", batch_size)
        threads = _positive_int("num_threads", num_threads)
        options = ort.SessionOptions()
        if threads is None:
            threads = _engine.default_num_threads()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._num_threads = threads
        self._path = os.fspath(model_path)
        try:
            self._session = ort.InferenceSession(
                self._path, options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            raise ModelLoadError(f"onnxruntime cannot load {self._path}: {e}") from e
        self._inputs = self._session.get_inputs()
        self._outputs = self._session.get_outputs()
        self._dtypes = [np.dtype(_ORT_DTYPES.get(i.type, "float32")) for i in self._inputs]

    def __call__(self, inputs: Union[Sequence[Any], Mapping[str, Any]]) -> list[np.ndarray]:
        """Runs the model; ``inputs`` is a list in input order or a dict by input name."""
        return self.run(inputs)

    def run(self, inputs: Union[Sequence[Any], Mapping[str, Any]]) -> list[np.ndarray]:
        """Same as calling the engine."""
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
        try:
            return list(self._session.run(None, feed))
        except Exception as e:
            raise InputError(f"onnxruntime rejected the inputs: {e}") from e

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


def create_engine(
    engine_type: str,
    model_path: PathLike,
    *,
    batch_size: Optional[int] = None,
    num_threads: Optional[int] = None,
) -> Union[Engine, OnnxRuntimeEngine]:
    """An engine of ``engine_type`` (``"sparsepipe"`` or ``"onnxruntime"``) for ``model_path``."""
    kind = _choice("engine_type", engine_type, ENGINE_TYPES)
    if kind == "onnxruntime":
        return OnnxRuntimeEngine(model_path, batch_size=batch_size, num_threads=num_threads)
    return Engine(model_path, batch_size=batch_size, num_threads=num_threads)
