"""Magnitude pruning of an ONNX model held in memory: which weights are prunable, and pruning them.

The constant weights of MatMul, Gemm, Conv and ConvTranspose nodes get their smallest-magnitude
entries set to exactly zero. Biases, embedding tables and 1-D tensors are never touched.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Optional

import numpy as np

from ..errors import ConfigError, ModelLoadError

__all__ = ["SCOPES", "LayerResult", "WeightInfo", "prunable_weights", "sparsify"]

SCOPES = ("per-layer", "global")

# op type -> indices of the inputs that hold a weight when they are constant
_WEIGHT_INPUTS = {"MatMul": (0, 1), "Gemm": (1, 0), "Conv": (1,), "ConvTranspose": (1,)}
# quantized ops: their integer weights are reported but never pruned
_QUANTIZED_INPUTS = {
    "MatMulInteger": (0, 1),
    "ConvInteger": (1,),
    "QLinearMatMul": (0, 3),
    "QLinearConv": (3,),
}
_EMBEDDING_OPS = ("Gather", "GatherElements", "GatherND")


@dataclass(frozen=True)
class WeightInfo:
    """A prunable constant weight: its name, consuming nodes, op type, shape, dtype and sparsity."""

    name: str
    nodes: tuple[str, ...]
    op_type: str
    shape: tuple[int, ...]
    sparsity: float
    dtype: str = "float32"

    @property
    def size(self) -> int:
        """Number of elements of the weight."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def quantized(self) -> bool:
        """True for integer (quantized) weights, which `sparsify` leaves as they are."""
        return not np.issubdtype(np.dtype(self.dtype), np.floating)


@dataclass(frozen=True)
class LayerResult:
    """What `sparsify` did to one selected weight: sparsity before and after, and why if skipped."""

    name: str
    op: str
    shape: tuple[int, ...]
    sparsity_before: float
    sparsity_after: float
    nodes: tuple[str, ...] = ()
    note: str = ""

    @property
    def size(self) -> int:
        """Number of elements of the weight."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def display_name(self) -> str:
        """The weight's name, or its first node's name when the exporter made the name up."""
        if (not self.name or self.name.startswith("onnx::")) and self.nodes and self.nodes[0]:
            return self.nodes[0]
        return self.name


@dataclass
class _Weight:
    """A weight found in a graph: the TensorProto to read and rewrite, and who consumes it."""

    name: str
    tensor: Any
    nodes: list[str]
    ops: list[str]
    quantized: bool

    @property
    def op_type(self) -> str:
        return "+".join(dict.fromkeys(self.ops))


def _constant_tensors(graph: Any) -> dict[str, Any]:
    """Name -> TensorProto of every initializer and Constant node (``value``) of `graph`."""
    found = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    found[node.output[0]] = attr.t
    return found


def _scan(graph: Any) -> list[_Weight]:
    """The prunable weights of `graph` in first-use order (embedding tables left out)."""
    from onnx import TensorProto

    tensors = _constant_tensors(graph)
    dequantized = {}  # DequantizeLinear output -> its constant integer input
    embeddings = set()
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in tensors:
            dequantized[node.output[0]] = node.input[0]
        if node.op_type in _EMBEDDING_OPS and node.input:
            embeddings.add(node.input[0])
    embeddings |= {dequantized[e] for e in embeddings if e in dequantized}

    weights: dict[str, _Weight] = {}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        indices = _WEIGHT_INPUTS.get(node.op_type, ())
        quantized_op = node.op_type in _QUANTIZED_INPUTS
        if quantized_op:
            indices = _QUANTIZED_INPUTS[node.op_type]
        for i in indices:
            if i >= len(node.input) or not node.input[i]:
                continue
            name = node.input[i]
            quantized = quantized_op
            if name in dequantized:
                name, quantized = dequantized[name], True
            tensor = tensors.get(name)
            if tensor is None or name in embeddings or len(tensor.dims) < 2:
                continue
            if any(d == 0 for d in tensor.dims):
                continue
            floating = tensor.data_type in (
                TensorProto.FLOAT,
                TensorProto.FLOAT16,
                TensorProto.DOUBLE,
            )
            w = weights.get(name)
            if w is None:
                w = weights[name] = _Weight(name, tensor, [], [], quantized or not floating)
            w.nodes.append(node.name)
            w.ops.append(node.op_type)
    return list(weights.values())


def _to_array(w: _Weight) -> np.ndarray:
    """The values of a weight as a writable array; ModelLoadError if they are not loaded."""
    from onnx import TensorProto, numpy_helper

    t = w.tensor
    if t.data_location == TensorProto.EXTERNAL and not t.raw_data:
        raise ModelLoadError(
            f"weight {w.name!r} is stored in an external data file that was not loaded; load "
            "the model with onnx.load(path, load_external_data=True)"
        )
    try:
        return np.array(numpy_helper.to_array(t), copy=True)
    except Exception as e:
        raise ModelLoadError(f"cannot read weight {w.name!r}: {e}") from e


def _store(w: _Weight, array: np.ndarray) -> None:
    """Rewrite the weight's TensorProto in place with `array` (same dtype and shape)."""
    from onnx import numpy_helper

    t = w.tensor
    doc = t.doc_string
    t.CopyFrom(numpy_helper.from_array(array, t.name))
    t.doc_string = doc


def _zero_fraction(array: np.ndarray) -> float:
    return float(np.count_nonzero(array == 0)) / array.size if array.size else 0.0


def prunable_weights(model: Any) -> list[WeightInfo]:
    """The constant weights of MatMul, Gemm, Conv and ConvTranspose nodes, each listed once."""
    infos = []
    for w in _scan(model.graph):
        array = _to_array(w)
        infos.append(
            WeightInfo(
                name=w.name,
                nodes=tuple(w.nodes),
                op_type=w.op_type,
                shape=tuple(int(d) for d in array.shape),
                sparsity=_zero_fraction(array),
                dtype=array.dtype.name,
            )
        )
    return infos


def _check_sparsity(sparsity: Any) -> float:
    number = (int, float, np.integer, np.floating)
    if isinstance(sparsity, bool) or not isinstance(sparsity, number):
        raise ConfigError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    value = float(sparsity)
    if not 0.0 <= value < 1.0:
        raise ConfigError(
            f"sparsity must be at least 0 and below 1 (0.8 zeroes 80% of each weight), got {value}"
        )
    return value


def _check_scope(scope: Any) -> str:
    normalized = scope.strip().lower().replace("_", "-") if isinstance(scope, str) else scope
    if normalized not in SCOPES:
        raise ConfigError(f"scope must be 'per-layer' or 'global', got {scope!r}")
    return normalized


def _compile(option: str, pattern: Optional[str]) -> Optional[re.Pattern]:
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise ConfigError(f"{option} must be a regular expression string, got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{option} is not a valid regular expression {pattern!r}: {e}") from e


def _validate(
    sparsity: Any, include: Optional[str], exclude: Optional[str], scope: Any
) -> tuple[float, Optional[re.Pattern], Optional[re.Pattern], str]:
    return (
        _check_sparsity(sparsity),
        _compile("include", include),
        _compile("exclude", exclude),
        _check_scope(scope),
    )


def _zero_count(sparsity: float, size: int) -> int:
    """ceil(sparsity * size), computed on the decimal value written (0.8 * 3000 is 2400)."""
    return math.ceil(Decimal(repr(sparsity)) * size)


def _smallest(magnitude: np.ndarray, k: int) -> np.ndarray:
    """Mask of exactly `k` smallest entries of a flat array; ties go to the lowest indices."""
    mask = np.zeros(magnitude.shape, dtype=bool)
    if k <= 0:
        return mask
    if k >= magnitude.size:
        mask[:] = True
        return mask
    threshold = np.partition(magnitude, k - 1)[k - 1]
    mask = magnitude < threshold
    ties = np.flatnonzero(magnitude == threshold)[: k - int(np.count_nonzero(mask))]
    mask[ties] = True
    return mask


def _magnitude(array: np.ndarray, dtype: Any) -> np.ndarray:
    """|array| flattened in `dtype`, NaN counting as the largest magnitude."""
    m = np.abs(array.reshape(-1).astype(dtype, copy=False))
    m[np.isnan(m)] = np.inf
    return m


def _sparsify_in_place(
    model: Any,
    sparsity: float,
    include: Optional[re.Pattern],
    exclude: Optional[re.Pattern],
    scope: str,
) -> list[LayerResult]:
    weights = _scan(model.graph)
    if not weights:
        raise ConfigError(
            "the model has no prunable weights (constant weights of MatMul, Gemm, Conv or "
            "ConvTranspose nodes, 2-D or more)"
        )

    def selected(w: _Weight) -> bool:
        keys = (w.name, *w.nodes)
        if include is not None and not any(include.search(k) for k in keys):
            return False
        return exclude is None or not any(exclude.search(k) for k in keys)

    chosen = [w for w in weights if selected(w)]
    if not chosen:
        given = ", ".join(
            f"{opt}={p.pattern!r}" for opt, p in (("include", include), ("exclude", exclude)) if p
        )
        examples = ", ".join(repr(w.name) for w in weights[:3])
        raise ConfigError(
            f"no weight selected: {given} leave none of the model's {len(weights)} prunable "
            "weights (the regexes are matched with re.search against each weight's initializer "
            f"name and the names of the nodes using it, e.g. {examples})"
        )
    floating = [w for w in chosen if not w.quantized]
    if not floating:
        raise ConfigError(
            f"the {len(chosen)} selected weights are integer (quantized) weights, which sparsify "
            "does not prune; prune the float model before quantizing it"
        )

    results: dict[str, LayerResult] = {}
    arrays: dict[str, np.ndarray] = {}
    for w in chosen:
        if w.quantized:
            array = _to_array(w)
            before = _zero_fraction(array)
            results[w.name] = LayerResult(
                w.name,
                w.op_type,
                tuple(array.shape),
                before,
                before,
                tuple(w.nodes),
                f"{array.dtype.name} (quantized) weights are not pruned",
            )
            continue
        arrays[w.name] = _to_array(w)

    # weights at or above the target are left as they are, in either scope
    todo = []
    for w in floating:
        array = arrays[w.name]
        before = _zero_fraction(array)
        if np.count_nonzero(array == 0) >= _zero_count(sparsity, array.size):
            note = "already sparser than the target" if sparsity > 0 and before > 0 else ""
            results[w.name] = LayerResult(
                w.name, w.op_type, tuple(array.shape), before, before, tuple(w.nodes), note
            )
        else:
            todo.append(w)

    masks: dict[str, np.ndarray] = {}
    if scope == "per-layer":
        for w in todo:
            array = arrays[w.name]
            dtype = np.float64 if array.dtype == np.float64 else np.float32
            masks[w.name] = _smallest(_magnitude(array, dtype), _zero_count(sparsity, array.size))
    elif todo:
        wide = any(arrays[w.name].dtype == np.float64 for w in todo)
        dtype = np.float64 if wide else np.float32
        pooled = np.concatenate([_magnitude(arrays[w.name], dtype) for w in todo])
        mask = _smallest(pooled, _zero_count(sparsity, pooled.size))
        del pooled
        start = 0
        for w in todo:
            size = arrays[w.name].size
            masks[w.name] = mask[start : start + size]
            start += size

    for w in todo:
        array = arrays[w.name]
        before = _zero_fraction(array)
        array.reshape(-1)[masks[w.name]] = 0
        _store(w, array)
        results[w.name] = LayerResult(
            w.name,
            w.op_type,
            tuple(array.shape),
            before,
            _zero_fraction(array),
            tuple(w.nodes),
        )
    return [results[w.name] for w in chosen]


def sparsify(
    model: Any,
    sparsity: float,
    *,
    include: Optional[str] = None,
    exclude: Optional[str] = None,
    scope: str = "per-layer",
) -> tuple[Any, list[LayerResult]]:
    """A magnitude-pruned copy of `model` (unchanged itself) and what happened to each weight.

    Every selected float weight ends with at least ``ceil(sparsity * size)`` exact zeros:
    ``scope="per-layer"`` zeroes that many smallest-|w| entries of each weight (ties broken by
    position), ``"global"`` applies one magnitude threshold to the selected weights together.
    Weights already at least that sparse, and integer (quantized) weights, are left as they are.
    ``include`` / ``exclude`` are regexes matched (``re.search``) against each weight's name and
    the names of the nodes using it.
    """
    import onnx

    target, inc, exc, scope = _validate(sparsity, include, exclude, scope)
    if not isinstance(model, onnx.ModelProto):
        raise ConfigError(f"sparsify takes an onnx.ModelProto, got {type(model).__name__}")
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    return pruned, _sparsify_in_place(pruned, target, inc, exc, scope)
