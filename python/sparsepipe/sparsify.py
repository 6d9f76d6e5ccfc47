"""One-shot magnitude pruning of an ONNX model's weight matrices (``sparsepipe sparsify``).

The constant weights of MatMul, Gemm, Conv and ConvTranspose nodes get their smallest-magnitude
entries set to exactly zero, so that sparsepipe's sparse kernels can run them. Biases, embedding
tables and 1-D tensors are never touched. Pruning without fine-tuning costs accuracy: measure it
(`evaluate_accuracy`) before deploying the result.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .errors import ConfigError, InputError, ModelLoadError

__all__ = [
    "DEPLOYMENT_FILES",
    "LayerResult",
    "WeightInfo",
    "copy_deployment_files",
    "evaluate_accuracy",
    "load_examples",
    "prunable_weights",
    "sparsify",
    "sparsify_file",
]

PathLike = Union[str, "os.PathLike[str]"]

#: files next to a model that a pipeline needs besides the ONNX file
DEPLOYMENT_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "preprocessor_config.json",
)

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
_PROTOBUF_LIMIT = 2**31 - 2**26  # inline models must stay below protobuf's 2 GiB, with a margin


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


def _graph_tensors(graph: Any) -> Any:
    """Every TensorProto of `graph` and its subgraphs (initializers and tensor attributes)."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


def _external_locations(model: Any) -> set[str]:
    """The external data files (relative locations) the model's tensors point at."""
    from onnx import TensorProto

    found = set()
    for t in _graph_tensors(model.graph):
        if t.data_location == TensorProto.EXTERNAL:
            for entry in t.external_data:
                if entry.key == "location":
                    found.add(entry.value)
    return found


def _load(path: Path) -> tuple[Any, set[str]]:
    """The model at `path` with its external data loaded, and the external files it used."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelLoadError(f"cannot read {path} as an ONNX model: {e}") from e
    if not model.HasField("graph") or model.ir_version <= 0 or not model.graph.node:
        raise ModelLoadError(f"{path} is not an ONNX model (no graph or IR version in it)")
    locations = _external_locations(model)
    if locations:
        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as e:
            raise ModelLoadError(f"cannot read the external data of {path}: {e}") from e
    return model, locations


def _same_file(a: Path, b: Path) -> bool:
    try:
        if b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _save(model: Any, dst: Path, external: bool, overwrite: bool) -> None:
    """Write `model` to `dst` through a temporary folder beside it, then rename into place."""
    import onnx

    data_name = f"{dst.name}.data"
    if external and (dst.parent / data_name).exists() and not overwrite:
        raise ConfigError(
            f"{dst.parent / data_name} (the output's external data file) already exists; pass "
            "overwrite=True (--overwrite) to replace it"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        if external:
            onnx.save_model(
                model,
                str(tmp / dst.name),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
            if (tmp / data_name).exists():
                os.replace(tmp / data_name, dst.parent / data_name)
        else:
            onnx.save_model(model, str(tmp / dst.name))
        os.replace(tmp / dst.name, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sparsify_file(
    src: PathLike,
    dst: PathLike,
    sparsity: float,
    *,
    overwrite: bool = False,
    include: Optional[str] = None,
    exclude: Optional[str] = None,
    scope: str = "per-layer",
) -> list[LayerResult]:
    """Prune the model at `src` (a file, directory or ``zoo:`` name) into the new file `dst`.

    Refuses to write over `src`, or over an existing `dst` unless ``overwrite``. The file appears
    complete or not at all; it keeps its weights in ``<dst>.data`` when the source used external
    data or the result would exceed protobuf's 2 GB limit.
    """
    from . import models

    target, inc, exc, scope = _validate(sparsity, include, exclude, scope)
    if isinstance(src, str) and src.startswith(("zoo:", "hf:")):
        source = models.resolve(src).onnx_path
    else:
        source = Path(os.fspath(src)).expanduser()
        if source.is_dir():
            source = models.resolve(source).onnx_path
        elif not source.is_file():
            raise ModelLoadError(f"{src} does not exist (expected an .onnx file)")
    out = Path(os.fspath(dst)).expanduser()
    if out.is_dir():
        raise ConfigError(f"{out} is a directory; give the output file, e.g. {out / source.name}")
    if _same_file(source, out):
        raise ConfigError(f"refusing to overwrite the input model {source}; choose another output")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")

    model, locations = _load(source)
    data_file = out.parent / f"{out.name}.data"
    if any(_same_file(source.parent / loc, data_file) for loc in locations):
        raise ConfigError(
            f"refusing to overwrite the input model's external data {data_file}; choose another "
            "output name"
        )
    results = _sparsify_in_place(model, target, inc, exc, scope)
    try:
        size = model.ByteSize()
    except Exception:  # protobuf may refuse to size a message beyond its limit
        size = _PROTOBUF_LIMIT + 1
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(model, out, bool(locations) or size > _PROTOBUF_LIMIT, overwrite)
    return results


def copy_deployment_files(src: PathLike, dst: PathLike) -> list[Path]:
    """Copy `DEPLOYMENT_FILES` found beside model `src` next to model `dst`; never overwrites.

    Returns the files written (none when both models are in the same directory).
    """
    from . import models

    resolved = models.resolve(src)
    out_dir = Path(os.fspath(dst)).expanduser().parent
    if any(_same_file(d, out_dir) for d in (resolved.directory, resolved.onnx_path.parent)):
        return []
    copied = []
    for name in DEPLOYMENT_FILES:
        found = resolved.file(name)
        if found is None:
            continue
        target = out_dir / name
        try:
            with open(found, "rb") as fin, open(target, "xb") as fout:
                shutil.copyfileobj(fin, fout)
        except FileExistsError:
            continue
        copied.append(target)
    return copied


def load_examples(
    jsonl_path: PathLike,
    *,
    text_field: str = "text",
    label_field: str = "label",
    limit: Optional[int] = None,
) -> tuple[list[Any], list[Any]]:
    """Texts and labels of a JSON Lines file (one object a line); InputError naming a bad line."""
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1
    ):
        raise ConfigError(f"limit must be a positive int or None, got {limit!r}")
    path = Path(os.fspath(jsonl_path)).expanduser()
    texts: list[Any] = []
    labels: list[Any] = []
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text: {e}") from e
    except OSError as e:
        raise InputError(f"cannot read the examples file {path}: {e}") from e
    for lineno, line in enumerate(content.split("\n"), 1):
        if limit is not None and len(texts) >= limit:
            break
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            row = json.loads(line)
        except ValueError as e:
            raise InputError(f"{where}: not valid JSON ({e})") from e
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for field in (text_field, label_field):
            if field not in row:
                fields = ", ".join(map(repr, row)) or "no fields"
                raise InputError(f"{where}: no {field!r} field (it has {fields})")
        text, label = row[text_field], row[label_field]
        pair = isinstance(text, list) and len(text) == 2 and all(isinstance(t, str) for t in text)
        if not isinstance(text, str) and not pair:
            raise InputError(
                f"{where}: {text_field!r} must be a string (or a pair of strings), "
                f"got {type(text).__name__}"
            )
        if isinstance(label, (dict, list)) or label is None:
            raise InputError(f"{where}: {label_field!r} must be a label name or id, got {label!r}")
        texts.append(tuple(text) if pair else text)
        labels.append(label)
    if not texts:
        raise InputError(f"{path} holds no examples")
    return texts, labels


def _label_name(label: Any, id2label: Any) -> str:
    is_id = isinstance(label, (int, np.integer)) and not isinstance(label, bool)
    if is_id and isinstance(id2label, dict) and str(int(label)) in id2label:
        return str(id2label[str(int(label))])
    return str(label)


def evaluate_accuracy(
    pipeline: Any,
    jsonl_path: PathLike,
    *,
    text_field: str = "text",
    label_field: str = "label",
    limit: Optional[int] = None,
) -> float:
    """Fraction of the file's examples whose ``pipeline(texts).labels`` equals their label.

    Integer labels are mapped through the model's ``id2label`` when it has one.
    """
    texts, labels = load_examples(
        jsonl_path, text_field=text_field, label_field=label_field, limit=limit
    )
    id2label = (getattr(pipeline, "config", None) or {}).get("id2label")
    correct = 0
    chunk = 256
    for start in range(0, len(texts), chunk):
        predicted = pipeline(texts[start : start + chunk]).labels
        for pred, gold in zip(predicted, labels[start : start + chunk]):
            if isinstance(pred, list):
                pred = pred[0] if pred else None
            correct += str(pred) == _label_name(gold, id2label)
    return correct / len(texts)
