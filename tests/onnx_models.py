"""Deterministic test ONNX models with magnitude-pruned weights.

Every model is built with the ``onnx.helper`` API at opset 17 and IR version 8, from weights drawn
by a seeded ``numpy.random.Generator``. The dense weights depend only on the seed and the sizes, so
the models built at different sparsities are pruned versions of the same dense model.

Pruning is unstructured magnitude pruning: in every weight of a MatMul, a Gemm or a group-1
Conv the ``round(sparsity * size)`` entries of smallest magnitude are set to exactly zero, and the
survivors are rescaled so that the matrix keeps its Frobenius norm (activations keep the same
scale at every sparsity). Biases, embeddings, LayerNorm parameters and depthwise kernels stay
dense, and no weight is ever zero at sparsity 0.

Models (``MODELS``):

- ``mlp``: ``x`` float32 [batch, features] -> ``y`` [batch, classes]; MatMul+Add, Relu, Gemm
  (transB=1), Tanh, MatMul+Add, Relu, MatMul.
- ``bert``: ``input_ids``, ``attention_mask``, ``token_type_ids`` int64 [batch, sequence] ->
  ``last_hidden_state`` [batch, sequence, hidden], ``logits`` [batch, labels]; a BERT encoder in
  the layout Hugging Face exporters produce.
- ``convnet``: ``images`` float32 [batch, 3, H, W] -> ``logits`` [batch, classes]; Conv 3x3/2,
  depthwise 3x3, inverted residual of 1x1 convs with Clip(0, 6), GlobalAveragePool, Gemm.
- ``yolo``: ``images`` float32 [batch, 3, S, S] -> ``detections`` [batch, N, 5 + classes]; SiLU
  convs, MaxPool, nearest Resize, Concat, two 1x1 detection heads, Sigmoid, Reshape/Transpose.

``VARIANTS`` are the same builders with other settings: ``bert_range`` (position ids from Range
instead of a Slice of a constant), ``convnet_dynhw`` (symbolic "height"/"width"), ``yolo_b1``
(batch fixed at 1).

``python tests/onnx_models.py`` builds every model at several sparsities and runs it with
onnxruntime.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
MODELS = ("mlp", "bert", "convnet", "yolo")
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "bert_range": ("bert", {"position_ids": "range"}),
    "convnet_dynhw": ("convnet", {"dynamic_hw": True}),
    "yolo_b1": ("yolo", {"batch": 1}),
}
SPARSITIES = (0.0, 0.5, 0.8, 0.9, 0.95)

_META_BUILDER = "sparsepipe.test.builder"
_META_NAME = "sparsepipe.test.name"
_META_CONFIG = "sparsepipe.test.config"
_META_SPARSITY = "sparsepipe.test.sparsity"
_META_SEED = "sparsepipe.test.seed"

DEFAULT_SIZES: dict[str, dict[str, Any]] = {
    "mlp": {"features": 37, "hidden": 64, "hidden2": 48, "hidden3": 33, "classes": 10},
    "bert": {
        "vocab_size": 211,
        "hidden": 48,
        "heads": 4,
        "layers": 2,
        "intermediate": 192,
        "max_position": 64,
        "type_vocab": 2,
        "labels": 3,
        "position_ids": "slice",
    },
    "convnet": {
        "image": 32,
        "dynamic_hw": False,
        "stem": 24,
        "expand": 72,
        "head": 40,
        "classes": 10,
    },
    "yolo": {"image": 64, "batch": None, "anchors": 3, "classes": 4},
}


@dataclass(frozen=True)
class WeightInfo:
    """A constant weight of a MatMul, Gemm or group-1 Conv node and its fraction of exact zeros."""

    node: str
    op_type: str
    weight: str
    shape: tuple[int, ...]
    sparsity: float

    @property
    def size(self) -> int:
        """Number of elements of the weight."""
        return int(np.prod(self.shape))


def magnitude_prune(w: np.ndarray, sparsity: float, *, keep_norm: bool = True) -> np.ndarray:
    """Return a copy of `w` whose round(sparsity * w.size) smallest-magnitude entries are 0."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    out = np.array(w, dtype=np.float32, copy=True)
    k = round(sparsity * out.size)
    if k == 0:
        return out
    flat = out.reshape(-1)
    norm = float(np.linalg.norm(flat))
    idx = np.argpartition(np.abs(flat), k - 1)[:k]
    flat[idx] = 0.0
    if keep_norm:
        kept = float(np.linalg.norm(flat))
        if kept > 0.0:
            flat *= np.float32(norm / kept)
    return out


class _Graph:
    """Accumulates nodes and initializers; draws weights from one seeded generator."""

    def __init__(self, rng: np.random.Generator, sparsity: float) -> None:
        self.rng = rng
        self.sparsity = sparsity
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()

    def _unique(self, name: str) -> str:
        if name in self._names:
            raise ValueError(f"duplicate name {name!r}")
        self._names.add(name)
        return name

    def init(self, name: str, array: np.ndarray) -> str:
        """Add an initializer and return its name."""
        self.initializers.append(numpy_helper.from_array(np.asarray(array), self._unique(name)))
        return name

    def i64(self, name: str, values: Sequence[int] | int) -> str:
        """Add an int64 constant (a scalar when `values` is an int)."""
        return self.init(name, np.array(values, dtype=np.int64))

    def f32(self, name: str, values: Sequence[float] | float) -> str:
        """Add a float32 constant (a scalar when `values` is a float)."""
        return self.init(name, np.array(values, dtype=np.float32))

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        """Add a node with one output named `<name>_output_0` and return that output."""
        out = self._unique(f"{name}_output_0")
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def _normal(self, shape: Sequence[int], std: float) -> np.ndarray:
        w = self.rng.standard_normal(tuple(shape), dtype=np.float32) * np.float32(std)
        # An exact zero from the generator would read as pruned: nudge it.
        w[w == 0.0] = np.float32(std * 1e-3)
        return w

    def weight(
        self, name: str, shape: Sequence[int], fan_in: int, *, prune: bool, gain: float = 1.0
    ) -> str:
        """Add a N(0, gain^2/fan_in) weight, magnitude-pruned to the graph sparsity when `prune`."""
        w = self._normal(shape, gain / math.sqrt(fan_in))
        if prune:
            w = magnitude_prune(w, self.sparsity)
        return self.init(name, w)

    def vector(self, name: str, n: int, *, scale: float = 0.1, offset: float = 0.0) -> str:
        """Add a dense float32 vector offset + N(0, scale^2), never exactly zero."""
        v = self._normal((n,), scale) + np.float32(offset)
        v[v == 0.0] = np.float32(scale * 1e-3 + 1e-6)
        return self.init(name, v)


def _scope(prefix: str) -> str:
    """Node-name scope of a parameter prefix, torch style: `a.layer.0.b` -> `/a/layer.0/b`."""
    return "/" + re.sub(r"\.(?!\d)", "/", prefix)


def _value_info(name: str, elem_type: int, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def _finish(
    g: _Graph,
    name: str,
    builder: str,
    config: dict[str, Any],
    seed: int,
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        g.nodes, f"sparsepipe_test_{builder}", inputs, outputs, g.initializers
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="sparsepipe-tests",
        doc_string=f"{name} test model, sparsity {g.sparsity}, seed {seed}",
    )
    helper.set_model_props(
        model,
        {
            _META_NAME: name,
            _META_BUILDER: builder,
            _META_CONFIG: json.dumps(config, sort_keys=True),
            _META_SPARSITY: repr(float(g.sparsity)),
            _META_SEED: str(seed),
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _linear(g: _Graph, x: str, prefix: str, k: int, n: int, *, bias: bool = True) -> str:
    """MatMul with a pruned [K, N] weight, then Add of a dense bias."""
    w = g.weight(f"{prefix}.weight", (k, n), k, prune=True)
    y = g.op("MatMul", [x, w], f"{_scope(prefix)}/MatMul")
    if bias:
        b = g.vector(f"{prefix}.bias", n)
        y = g.op("Add", [y, b], f"{_scope(prefix)}/Add")
    return y


def _gemm_nk(g: _Graph, x: str, prefix: str, k: int, n: int) -> str:
    """Gemm with transB=1: a pruned weight stored [N, K] and a dense bias."""
    w = g.weight(f"{prefix}.weight", (n, k), k, prune=True)
    b = g.vector(f"{prefix}.bias", n)
    return g.op("Gemm", [x, w, b], f"{_scope(prefix)}/Gemm", transB=1)


def _build_mlp(g: _Graph, c: dict[str, Any]) -> tuple[list, list]:
    f, h1, h2, h3, out = c["features"], c["hidden"], c["hidden2"], c["hidden3"], c["classes"]
    y = _linear(g, "x", "fc1", f, h1)
    y = g.op("Relu", [y], "/act1/Relu")
    y = _gemm_nk(g, y, "fc2", h1, h2)
    y = g.op("Tanh", [y], "/act2/Tanh")
    y = _linear(g, y, "fc3", h2, h3)
    y = g.op("Relu", [y], "/act3/Relu")
    w = g.weight("fc4.weight", (h3, out), h3, prune=True)
    g.nodes.append(helper.make_node("MatMul", [y, w], ["y"], name="/fc4/MatMul"))
    return (
        [_value_info("x", TensorProto.FLOAT, ["batch", f])],
        [_value_info("y", TensorProto.FLOAT, ["batch", out])],
    )


def _layer_norm(g: _Graph, x: str, prefix: str, hidden: int) -> str:
    gamma = g.vector(f"{prefix}.weight", hidden, scale=0.1, offset=1.0)
    beta = g.vector(f"{prefix}.bias", hidden, scale=0.1)
    name = f"{_scope(prefix)}/LayerNormalization"
    return g.op("LayerNormalization", [x, gamma, beta], name, axis=-1, epsilon=1e-12)


def _build_bert(g: _Graph, c: dict[str, Any]) -> tuple[list, list]:
    hidden, heads, inter = c["hidden"], c["heads"], c["intermediate"]
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not a multiple of heads {heads}")
    dh = hidden // heads

    word = g.init("embeddings.word_embeddings.weight", g._normal((c["vocab_size"], hidden), 0.5))
    pos = g.init(
        "embeddings.position_embeddings.weight", g._normal((c["max_position"], hidden), 0.5)
    )
    typ = g.init(
        "embeddings.token_type_embeddings.weight", g._normal((c["type_vocab"], hidden), 0.5)
    )

    ids_shape = g.op("Shape", ["input_ids"], "/embeddings/Shape")
    if c["position_ids"] == "slice":
        table = g.i64("embeddings.position_ids", np.arange(c["max_position"])[None, :])
        seq = g.op(
            "Slice",
            [ids_shape, g.i64("/embeddings/Constant_1", [1]), g.i64("/embeddings/Constant_2", [2])],
            "/embeddings/Slice_1",
        )
        pos_ids = g.op(
            "Slice",
            [
                table,
                g.i64("/embeddings/Constant_3", [0]),
                seq,
                g.i64("/embeddings/Constant_4", [1]),
            ],
            "/embeddings/Slice_2",
        )
    elif c["position_ids"] == "range":
        seq = g.op(
            "Gather", [ids_shape, g.i64("/embeddings/Constant_1", 1)], "/embeddings/Gather", axis=0
        )
        rng = g.op(
            "Range",
            [g.i64("/embeddings/Constant_2", 0), seq, g.i64("/embeddings/Constant_3", 1)],
            "/embeddings/Range",
        )
        pos_ids = g.op(
            "Unsqueeze", [rng, g.i64("/embeddings/Constant_4", [0])], "/embeddings/Unsqueeze"
        )
    else:
        raise ValueError(f"position_ids must be 'slice' or 'range', not {c['position_ids']!r}")

    e_word = g.op("Gather", [word, "input_ids"], "/embeddings/word_embeddings/Gather")
    e_pos = g.op("Gather", [pos, pos_ids], "/embeddings/position_embeddings/Gather")
    e_typ = g.op("Gather", [typ, "token_type_ids"], "/embeddings/token_type_embeddings/Gather")
    e = g.op("Add", [e_word, e_typ], "/embeddings/Add")
    e = g.op("Add", [e, e_pos], "/embeddings/Add_1")
    h = _layer_norm(g, e, "embeddings.LayerNorm", hidden)

    m = g.op("Unsqueeze", ["attention_mask", g.i64("/Constant", [1, 2])], "/Unsqueeze")
    m = g.op("Cast", [m], "/Cast", to=TensorProto.FLOAT)
    m = g.op("Sub", [g.f32("/Constant_1", 1.0), m], "/Sub")
    ext_mask = g.op("Mul", [m, g.f32("/Constant_2", -10000.0)], "/Mul")

    h_shape = g.op("Shape", [h], "/encoder/Shape")
    dim_b = g.op("Gather", [h_shape, g.i64("/encoder/Constant", 0)], "/encoder/Gather", axis=0)
    dim_s = g.op("Gather", [h_shape, g.i64("/encoder/Constant_1", 1)], "/encoder/Gather_1", axis=0)
    dim_b = g.op("Unsqueeze", [dim_b, g.i64("/encoder/Constant_2", [0])], "/encoder/Unsqueeze")
    dim_s = g.op("Unsqueeze", [dim_s, g.i64("/encoder/Constant_3", [0])], "/encoder/Unsqueeze_1")
    split_shape = g.op(
        "Concat",
        [dim_b, dim_s, g.i64("/encoder/Constant_4", [heads]), g.i64("/encoder/Constant_5", [dh])],
        "/encoder/Concat",
        axis=0,
    )
    merge_shape = g.op(
        "Concat",
        [dim_b, dim_s, g.i64("/encoder/Constant_6", [hidden])],
        "/encoder/Concat_1",
        axis=0,
    )
    scale = g.f32("/encoder/Constant_7", math.sqrt(dh))

    for i in range(c["layers"]):
        p = f"encoder.layer.{i}"
        n = f"/encoder/layer.{i}"
        q = _linear(g, h, f"{p}.attention.self.query", hidden, hidden)
        k = _linear(g, h, f"{p}.attention.self.key", hidden, hidden)
        v = _linear(g, h, f"{p}.attention.self.value", hidden, hidden)
        q = g.op("Reshape", [q, split_shape], f"{n}/attention/self/Reshape")
        k = g.op("Reshape", [k, split_shape], f"{n}/attention/self/Reshape_1")
        v = g.op("Reshape", [v, split_shape], f"{n}/attention/self/Reshape_2")
        q = g.op("Transpose", [q], f"{n}/attention/self/Transpose", perm=[0, 2, 1, 3])
        k = g.op("Transpose", [k], f"{n}/attention/self/Transpose_1", perm=[0, 2, 3, 1])
        v = g.op("Transpose", [v], f"{n}/attention/self/Transpose_2", perm=[0, 2, 1, 3])
        s = g.op("MatMul", [q, k], f"{n}/attention/self/MatMul")
        s = g.op("Div", [s, scale], f"{n}/attention/self/Div")
        s = g.op("Add", [s, ext_mask], f"{n}/attention/self/Add")
        s = g.op("Softmax", [s], f"{n}/attention/self/Softmax", axis=-1)
        ctx = g.op("MatMul", [s, v], f"{n}/attention/self/MatMul_1")
        ctx = g.op("Transpose", [ctx], f"{n}/attention/self/Transpose_3", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_shape], f"{n}/attention/self/Reshape_3")
        a = _linear(g, ctx, f"{p}.attention.output.dense", hidden, hidden)
        a = g.op("Add", [a, h], f"{n}/attention/output/Add_1")
        h1 = _layer_norm(g, a, f"{p}.attention.output.LayerNorm", hidden)
        u = _linear(g, h1, f"{p}.intermediate.dense", hidden, inter)
        t = g.op("Div", [u, g.f32(f"{n}/intermediate/Constant", math.sqrt(2.0))], f"{n}/gelu/Div")
        t = g.op("Erf", [t], f"{n}/gelu/Erf")
        t = g.op("Add", [t, g.f32(f"{n}/intermediate/Constant_1", 1.0)], f"{n}/gelu/Add")
        t = g.op("Mul", [u, t], f"{n}/gelu/Mul")
        t = g.op("Mul", [t, g.f32(f"{n}/intermediate/Constant_2", 0.5)], f"{n}/gelu/Mul_1")
        d = _linear(g, t, f"{p}.output.dense", inter, hidden)
        d = g.op("Add", [d, h1], f"{n}/output/Add_1")
        h = _layer_norm(g, d, f"{p}.output.LayerNorm", hidden)

    g.nodes.append(helper.make_node("Identity", [h], ["last_hidden_state"], name="/Identity"))
    first = g.op("Gather", [h, g.i64("/pooler/Constant", 0)], "/pooler/Gather", axis=1)
    pooled = g.op("Tanh", [_gemm_nk(g, first, "pooler.dense", hidden, hidden)], "/pooler/Tanh")
    w = g.weight("classifier.weight", (c["labels"], hidden), hidden, prune=True)
    b = g.vector("classifier.bias", c["labels"])
    g.nodes.append(
        helper.make_node("Gemm", [pooled, w, b], ["logits"], name="/classifier/Gemm", transB=1)
    )
    bs = ["batch", "sequence"]
    return (
        [
            _value_info("input_ids", TensorProto.INT64, bs),
            _value_info("attention_mask", TensorProto.INT64, bs),
            _value_info("token_type_ids", TensorProto.INT64, bs),
        ],
        [
            _value_info("last_hidden_state", TensorProto.FLOAT, [*bs, hidden]),
            _value_info("logits", TensorProto.FLOAT, ["batch", c["labels"]]),
        ],
    )


def _conv(
    g: _Graph,
    x: str,
    prefix: str,
    cin: int,
    cout: int,
    k: int,
    *,
    stride: int = 1,
    group: int = 1,
    bias: bool = True,
    gain: float = 2.0,
) -> str:
    """Conv with a [cout, cin/group, k, k] kernel; pruned unless it is grouped (depthwise)."""
    fan_in = cin // group * k * k
    prune = group == 1
    shape = (cout, cin // group, k, k)
    w = g.weight(f"{prefix}.weight", shape, fan_in, prune=prune, gain=gain)
    inputs = [x, w]
    if bias:
        inputs.append(g.vector(f"{prefix}.bias", cout))
    pad = k // 2
    return g.op(
        "Conv",
        inputs,
        f"{_scope(prefix)}/Conv",
        kernel_shape=[k, k],
        strides=[stride, stride],
        pads=[pad, pad, pad, pad],
        dilations=[1, 1],
        group=group,
    )


def _build_convnet(g: _Graph, c: dict[str, Any]) -> tuple[list, list]:
    stem, expand, head, classes = c["stem"], c["expand"], c["head"], c["classes"]
    zero, six = g.f32("clip.min", 0.0), g.f32("clip.max", 6.0)
    y = _conv(g, "images", "stem", 3, stem, 3, stride=2)
    y = g.op("Relu", [y], "/stem/Relu")
    y = _conv(g, y, "block.dw", stem, stem, 3, group=stem)
    y = g.op("Clip", [y, zero, six], "/block/dw/Clip")
    r = _conv(g, y, "block.expand", stem, expand, 1)
    r = g.op("Clip", [r, zero, six], "/block/expand/Clip")
    r = _conv(g, r, "block.project", expand, stem, 1, bias=False)
    y = g.op("Add", [y, r], "/block/Add")
    y = _conv(g, y, "head", stem, head, 1)
    y = g.op("Relu", [y], "/head/Relu")
    y = g.op("GlobalAveragePool", [y], "/pool/GlobalAveragePool")
    y = g.op("Flatten", [y], "/Flatten", axis=1)
    w = g.weight("classifier.weight", (classes, head), head, prune=True)
    b = g.vector("classifier.bias", classes)
    g.nodes.append(
        helper.make_node("Gemm", [y, w, b], ["logits"], name="/classifier/Gemm", transB=1)
    )
    hw: list[int | str] = ["height", "width"] if c["dynamic_hw"] else [c["image"], c["image"]]
    return (
        [_value_info("images", TensorProto.FLOAT, ["batch", 3, *hw])],
        [_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
    )


def _silu(g: _Graph, x: str, prefix: str) -> str:
    s = g.op("Sigmoid", [x], f"{_scope(prefix)}/Sigmoid")
    return g.op("Mul", [x, s], f"{_scope(prefix)}/Mul")


def _build_yolo(g: _Graph, c: dict[str, Any]) -> tuple[list, list]:
    size, na, nc = c["image"], c["anchors"], c["classes"]
    if size % 8:
        raise ValueError(f"yolo image size must be a multiple of 8, got {size}")
    no = 5 + nc

    def conv_silu(x: str, prefix: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
        return _silu(g, _conv(g, x, prefix, cin, cout, k, stride=stride, gain=1.7), prefix)

    y = conv_silu("images", "model.0", 3, 16, 3, stride=2)
    y = conv_silu(y, "model.1", 16, 32, 3, stride=2)
    p4 = conv_silu(y, "model.2", 32, 24, 1)
    y = g.op(
        "MaxPool", [p4], "/model.3/MaxPool", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0]
    )
    p8 = conv_silu(y, "model.4", 24, 48, 3)
    y = conv_silu(p8, "model.5", 48, 24, 1)
    y = g.op(
        "Resize",
        [y, "", g.f32("/model.6/Constant", [1.0, 1.0, 2.0, 2.0])],
        "/model.6/Resize",
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    y = g.op("Concat", [y, p4], "/model.7/Concat", axis=1)
    p4 = conv_silu(y, "model.8", 48, 32, 3)

    heads = []
    for i, (feat, cin, side) in enumerate(((p8, 48, size // 8), (p4, 32, size // 4))):
        prefix = f"model.9.m.{i}"
        d = _conv(g, feat, prefix, cin, na * no, 1, gain=1.7)
        d = g.op("Sigmoid", [d], f"/model.9/Sigmoid_{i}")
        d = g.op(
            "Reshape",
            [d, g.i64(f"/model.9/Constant_{2 * i}", [-1, na, no, side, side])],
            f"/model.9/Reshape_{2 * i}",
        )
        d = g.op("Transpose", [d], f"/model.9/Transpose_{i}", perm=[0, 1, 3, 4, 2])
        d = g.op(
            "Reshape",
            [d, g.i64(f"/model.9/Constant_{2 * i + 1}", [-1, na * side * side, no])],
            f"/model.9/Reshape_{2 * i + 1}",
        )
        heads.append(d)
    g.nodes.append(
        helper.make_node("Concat", heads, ["detections"], name="/model.9/Concat", axis=1)
    )
    n = na * ((size // 8) ** 2 + (size // 4) ** 2)
    batch: int | str = c["batch"] if c["batch"] is not None else "batch"
    return (
        [_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        [_value_info("detections", TensorProto.FLOAT, [batch, n, no])],
    )


_BUILDERS: dict[str, Callable[[_Graph, dict[str, Any]], tuple[list, list]]] = {
    "mlp": _build_mlp,
    "bert": _build_bert,
    "convnet": _build_convnet,
    "yolo": _build_yolo,
}


def _resolve(name: str, size: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if name in VARIANTS:
        builder, preset = VARIANTS[name]
    elif name in _BUILDERS:
        builder, preset = name, {}
    else:
        known = ", ".join([*MODELS, *VARIANTS])
        raise KeyError(f"unknown model {name!r}; known: {known}")
    unknown = set(size) - set(DEFAULT_SIZES[builder])
    if unknown:
        raise TypeError(f"unknown size arguments for {name}: {sorted(unknown)}")
    return builder, {**DEFAULT_SIZES[builder], **preset, **size}


def build(name: str, sparsity: float = 0.0, *, seed: int = 0, **size: Any) -> onnx.ModelProto:
    """Build model `name` (MODELS or VARIANTS) pruned to `sparsity`; `size` overrides sizes."""
    builder, config = _resolve(name, size)
    g = _Graph(np.random.default_rng(seed), float(sparsity))
    inputs, outputs = _BUILDERS[builder](g, config)
    return _finish(g, name, builder, config, seed, inputs, outputs)


def model_info(model: onnx.ModelProto) -> dict[str, Any]:
    """Return name, builder, sizes, sparsity and seed recorded in a model made by `build`."""
    props = {p.key: p.value for p in model.metadata_props}
    if _META_BUILDER not in props:
        raise ValueError("model was not built by onnx_models.build (no builder metadata)")
    return {
        "name": props[_META_NAME],
        "builder": props[_META_BUILDER],
        "config": json.loads(props[_META_CONFIG]),
        "sparsity": float(props[_META_SPARSITY]),
        "seed": int(props[_META_SEED]),
    }


def sample_inputs(
    model: onnx.ModelProto | str,
    batch: int,
    size: int | None = None,
    rng: np.random.Generator | int | None = None,
    **sizes: Any,
) -> dict[str, np.ndarray]:
    """Return deterministic feeds for `model`: a built model, or a name plus its `build` sizes.

    `size` is the sequence length for ``bert`` (default 16) and the image side for ``convnet``
    with ``dynamic_hw`` (default: the configured image side); other models ignore it. BERT feeds
    have right padding in every row but the first, and token types 0 then 1. `rng` is a
    generator or a seed (default 1234).
    """
    if isinstance(model, str):
        name, config = _resolve(model, sizes)
    else:
        if sizes:
            raise TypeError("size arguments apply only when `model` is a name")
        info = model_info(model)
        name, config = info["builder"], info["config"]
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(1234 if rng is None else rng)

    if name == "mlp":
        x = rng.standard_normal((batch, config["features"]), dtype=np.float32)
        return {"x": x}
    if name == "bert":
        seq = 16 if size is None else size
        if seq > config["max_position"]:
            raise ValueError(f"sequence {seq} exceeds max_position {config['max_position']}")
        ids = rng.integers(1, config["vocab_size"], size=(batch, seq), dtype=np.int64)
        mask = np.ones((batch, seq), dtype=np.int64)
        for row in range(1, batch):
            length = int(rng.integers(1, seq + 1))
            mask[row, length:] = 0
            ids[row, length:] = 0
        types = np.zeros((batch, seq), dtype=np.int64)
        types[:, seq // 2 :] = 1
        types *= mask
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if name == "convnet":
        side = config["image"] if size is None or not config["dynamic_hw"] else size
        images = rng.standard_normal((batch, 3, side, side), dtype=np.float32)
        return {"images": images}
    if name == "yolo":
        if config["batch"] is not None and batch != config["batch"]:
            raise ValueError(f"this yolo model has a fixed batch of {config['batch']}")
        side = config["image"]
        return {"images": rng.random((batch, 3, side, side), dtype=np.float32)}
    raise KeyError(f"unknown model {name!r}")


def save(model: onnx.ModelProto, directory: str | Path, filename: str | None = None) -> Path:
    """Write `model` into `directory` (created if missing) and return the file's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if filename is None:
        info = model_info(model)
        filename = f"{info['name']}-s{info['sparsity']:g}.onnx"
    path = directory / filename
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(model, str(tmp))
    tmp.replace(path)
    return path


def prunable_weights(model: onnx.ModelProto) -> list[WeightInfo]:
    """List the constant weights of MatMul, Gemm and group-1 Conv nodes with their sparsity."""
    inits = {t.name: t for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv") or len(node.input) < 2:
            continue
        tensor = inits.get(node.input[1])
        if tensor is None:
            continue
        w = numpy_helper.to_array(tensor)
        if node.op_type == "Conv":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("group", 1) != 1:
                continue
        sparsity = float(np.count_nonzero(w == 0)) / w.size
        found.append(WeightInfo(node.name, node.op_type, tensor.name, tuple(w.shape), sparsity))
    return found


def output_names(model: onnx.ModelProto) -> list[str]:
    """Return the graph output names in order."""
    return [o.name for o in model.graph.output]


def input_names(model: onnx.ModelProto) -> list[str]:
    """Return the graph input names in order (initializers excluded)."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _main() -> None:
    import onnxruntime as ort

    rng_seed = 7
    for name in (*MODELS, *VARIANTS):
        for sparsity in SPARSITIES:
            model = build(name, sparsity)
            weights = prunable_weights(model)
            for w in weights:
                if abs(w.sparsity - sparsity) > 0.5 / w.size + 1e-12:
                    raise AssertionError(f"{name} s={sparsity}: {w} is not pruned to {sparsity}")
            if sparsity == 0.0:
                dense = [
                    t.name
                    for t in model.graph.initializer
                    if t.data_type == TensorProto.FLOAT
                    and np.count_nonzero(numpy_helper.to_array(t) == 0)
                    and t.name != "clip.min"
                ]
                if dense:
                    raise AssertionError(f"{name}: zeros at sparsity 0 in {dense}")
            sess = ort.InferenceSession(
                model.SerializeToString(), providers=["CPUExecutionProvider"]
            )
            builder = model_info(model)["builder"]
            size = {"bert": 9, "convnet": 24}.get(builder)
            for batch in (1,) if name == "yolo_b1" else (1, 3):
                feeds = sample_inputs(model, batch, size, rng_seed)
                outs = sess.run(None, feeds)
                for out in outs:
                    if not np.all(np.isfinite(out)):
                        raise AssertionError(f"{name} s={sparsity}: non-finite output")
                shapes = ", ".join(
                    f"{n}{list(o.shape)} max|.|={float(np.abs(o).max()):.3g}"
                    for n, o in zip(output_names(model), outs)
                )
                print(
                    f"{name:13s} s={sparsity:<4g} b={batch} weights={len(weights):2d} "
                    f"nodes={len(model.graph.node):3d} -> {shapes}"
                )


if __name__ == "__main__":
    _main()
