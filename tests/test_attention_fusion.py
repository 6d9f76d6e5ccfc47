"""The fused attention op: generated transformer encoders in the layouts exporters write (post-LN
and pre-LN, erf and tanh GELU, LayerNormalization and its decomposed form, masks as transformers
exports them, the scale before or after ``q·kᵀ``, keys pre-transposed or not) must give the
unfused path's outputs and onnxruntime's, dense and pruned, at several batch sizes, lengths and
thread counts."""

from __future__ import annotations

import collections
import itertools
from pathlib import Path

import numpy as np
import pytest
import sparsepipe

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_models import magnitude_prune  # noqa: E402


class _G:
    def __init__(self, seed: int) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.count = 0
        self.rng = np.random.default_rng(seed)

    def name(self, p: str) -> str:
        self.count += 1
        return f"{p}_{self.count}"

    def const(self, arr, p: str = "c") -> str:
        nm = self.name(p)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def op(self, t: str, ins: list[str], **attrs) -> str:
        out = self.name(t.lower())
        self.nodes.append(helper.make_node(t, ins, [out], name=self.name(t), **attrs))
        return out


def _encoder(
    *,
    hidden: int = 32,
    heads: int = 4,
    layers: int = 2,
    ffn: int = 64,
    pre_ln: bool = False,
    gelu: str = "erf",
    ln_op: bool = True,
    mask: str = "bert",
    scale_q: bool = False,
    k_transposed: bool = True,
    mask_first: bool = False,
    sparsity: float = 0.0,
    seed: int = 0,
) -> onnx.ModelProto:
    """``x`` [batch, seq, hidden] (+ ``attention_mask`` int64 [batch, seq]) -> ``y``."""
    g = _G(seed)
    dh = hidden // heads

    def weight(i: int, o: int) -> str:
        w = (g.rng.standard_normal((i, o)) / np.sqrt(i)).astype(np.float32)
        return g.const(magnitude_prune(w, sparsity) if sparsity else w, "W")

    def linear(x: str, i: int, o: int) -> str:
        b = g.const((g.rng.standard_normal(o) * 0.1).astype(np.float32), "b")
        return g.op("Add", [g.op("MatMul", [x, weight(i, o)]), b])

    def layer_norm(x: str) -> str:
        gamma = g.const((1 + 0.1 * g.rng.standard_normal(hidden)).astype(np.float32), "gamma")
        beta = g.const((0.1 * g.rng.standard_normal(hidden)).astype(np.float32), "beta")
        if ln_op:
            return g.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5)
        axes = g.const(np.array([-1], np.int64))
        mean = g.op("ReduceMean", [x], axes=[-1])
        d = g.op("Sub", [x, mean])
        var = g.op("ReduceMean", [g.op("Pow", [d, g.const(np.array(2.0, np.float32))])], axes=[-1])
        del axes
        std = g.op("Sqrt", [g.op("Add", [var, g.const(np.array(1e-5, np.float32))])])
        return g.op("Add", [g.op("Mul", [g.op("Div", [d, std]), gamma]), beta])

    def act(x: str) -> str:
        if gelu == "erf":
            e = g.op("Erf", [g.op("Div", [x, g.const(np.array(np.sqrt(2.0), np.float32))])])
            one = g.const(np.array(1.0, np.float32))
            return g.op(
                "Mul", [g.op("Mul", [x, g.op("Add", [e, one])]), g.const(np.array(0.5, np.float32))]
            )
        c = g.const(np.array(np.sqrt(2 / np.pi), np.float32))
        cube = g.op("Mul", [g.op("Mul", [x, x]), x])
        inner = g.op("Add", [x, g.op("Mul", [cube, g.const(np.array(0.044715, np.float32))])])
        t = g.op("Tanh", [g.op("Mul", [inner, c])])
        half = g.op("Mul", [x, g.const(np.array(0.5, np.float32))])
        return g.op("Mul", [half, g.op("Add", [t, g.const(np.array(1.0, np.float32))])])

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden])]
    additive = None
    if mask != "none":
        inputs.append(
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
        )
        m = g.op("Unsqueeze", ["attention_mask", g.const(np.array([1, 2], np.int64))])
        m = g.op("Cast", [m], to=TensorProto.FLOAT)
        inv = g.op("Sub", [g.const(np.array(1.0, np.float32)), m])
        low = -10000.0 if mask == "bert" else float(np.finfo(np.float32).min)
        additive = g.op("Mul", [inv, g.const(np.array(low, np.float32))])
    x = "x"
    scale = np.float32(np.sqrt(dh))
    for _ in range(layers):
        h_in = layer_norm(x) if pre_ln else x

        def split(t: str, perm: list[int]) -> str:
            t = g.op("Reshape", [t, g.const(np.array([0, 0, heads, dh], np.int64))])
            return g.op("Transpose", [t], perm=perm)

        q = split(linear(h_in, hidden, hidden), [0, 2, 1, 3])
        if scale_q:
            q = g.op("Div", [q, g.const(np.array(scale, np.float32))])
        if k_transposed:
            k = split(linear(h_in, hidden, hidden), [0, 2, 3, 1])
        else:
            k = g.op(
                "Transpose", [split(linear(h_in, hidden, hidden), [0, 2, 1, 3])], perm=[0, 1, 3, 2]
            )
        v = split(linear(h_in, hidden, hidden), [0, 2, 1, 3])
        s = g.op("MatMul", [q, k])
        if not scale_q:
            s = g.op("Mul", [s, g.const(np.array(1 / scale, np.float32))])
        if additive is not None:
            s = g.op("Add", [additive, s] if mask_first else [s, additive])
        p = g.op("Softmax", [s], axis=-1)
        c = g.op("Transpose", [g.op("MatMul", [p, v])], perm=[0, 2, 1, 3])
        c = g.op("Reshape", [c, g.const(np.array([0, 0, hidden], np.int64))])
        a = g.op("Add", [linear(c, hidden, hidden), x])
        x = a if pre_ln else layer_norm(a)
        f_in = layer_norm(x) if pre_ln else x
        f = linear(act(linear(f_in, hidden, ffn)), ffn, hidden)
        f = g.op("Add", [f, x])
        x = f if pre_ln else layer_norm(f)
    if pre_ln:
        x = layer_norm(x)
    y = g.op("Identity", [x])
    graph = helper.make_graph(
        g.nodes,
        "encoder",
        inputs,
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _feeds(model: onnx.ModelProto, batch: int, seq: int, hidden: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {"x": rng.standard_normal((batch, seq, hidden)).astype(np.float32)}
    if any(i.name == "attention_mask" for i in model.graph.input):
        m = np.ones((batch, seq), np.int64)
        for b in range(1, batch):
            m[b, max(1, seq - 2 * b) :] = 0  # padded rows of different lengths
        feeds["attention_mask"] = m
    return feeds


def _tol_check(got: np.ndarray, want: np.ndarray, what: str) -> None:
    tol = 1e-4 * np.maximum(1.0, np.abs(want))
    bad = np.abs(got - want) > tol
    assert not bad.any(), f"{what}: max |diff| {np.abs(got - want).max()} at {np.argwhere(bad)[0]}"


LAYOUTS = {
    "bert-post-ln": {},
    "pre-ln-tanh": {"pre_ln": True, "gelu": "tanh"},
    "decomposed-ln": {"ln_op": False},
    "finfo-min-mask": {"mask": "finfo"},
    "no-mask": {"mask": "none"},
    "scaled-q-distilbert": {"scale_q": True},
    "k-transposed-after": {"k_transposed": False},
    "mask-first-operand": {"mask_first": True},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("sparsity", [0.0, 0.9])
def test_fused_equals_unfused_and_onnxruntime(
    layout: str, sparsity: float, tmp_path: Path, ort_run
) -> None:
    model = _encoder(sparsity=sparsity, **LAYOUTS[layout])
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path))
    fused = {n: sparsepipe.Engine(path, num_threads=n, dense_backend="tract") for n in (1, 2)}
    plain = sparsepipe.Engine(path, num_threads=1, fuse=False)
    # Planned for batch 1, tract squeezes the batch axis out of q·kᵀ and of the linears' outputs
    # on one side: the attention, the merged projections and the feed-forward chains still fuse.
    batch_one = sparsepipe.Engine(path, batch_size=1, dense_backend="tract")
    ops = fused[1].fused_ops()
    assert len(ops["attention"]) == 2, ops
    for kind in ("attention", "qkv_projection", "layer_norm", "residual_add", "linear_chain"):
        assert batch_one.fused_ops()[kind] == ops[kind], (kind, batch_one.fused_ops())
    # Two per layer (post-LN) or two per layer plus the final one (pre-LN).
    assert len(ops["layer_norm"]) == (5 if LAYOUTS[layout].get("pre_ln") else 4), ops
    # Dense weights on tract (as loaded here), so only the sparse projections merge.
    assert ops["qkv_projection"] == (ops["attention"] if sparsity else []), ops
    assert plain.fused_ops() == {
        "attention": [],
        "qkv_projection": [],
        "layer_norm": [],
        "residual_add": [],
        "linear_chain": [],
    }
    # The attention output and FFN down projections take their residual (sparse weights only),
    # and each FFN's up- and down-projections run as one op.
    assert len(ops["residual_add"]) == (4 if sparsity else 0), ops
    # The exact GELU folds into the up-projection; a tanh GELU stays between the two linears.
    erf_gelu = LAYOUTS[layout].get("gelu", "erf") == "erf"
    assert len(ops["linear_chain"]) == (2 if sparsity and erf_gelu else 0), ops
    # What did not fuse says why: dense weights run on tract's matmul (and the option that
    # moves them to ours), a tanh GELU is not folded into the up-projection.
    assert plain.fusion_misses() == []
    misses = fused[1].fusion_misses()
    kinds = collections.Counter(m["kind"] for m in misses)
    if not sparsity:
        assert kinds == {"qkv_projection": 2, "residual_add": 4, "linear_chain": 2}, misses
        assert all("dense_backend='sparsepipe'" in m["reason"] for m in misses), misses
    elif not erf_gelu:
        assert kinds == {"linear_chain": 2}, misses
        assert all("Tanh" in m["reason"] and "epilogue" in m["reason"] for m in misses), misses
    else:
        assert misses == [], misses
    for batch, seq in itertools.product((1, 3), (1, 7, 128)):
        feeds = _feeds(model, batch, seq, 32, seed=batch * 1000 + seq)
        (want,) = ort_run(path, feeds)
        (unfused,) = plain.run(feeds)
        _tol_check(unfused, want, f"{layout} s{sparsity} b{batch} s{seq}: unfused vs onnxruntime")
        engines = [*fused.items(), *([("b1", batch_one)] if batch == 1 else [])]
        for n, engine in engines:
            (got,) = engine.run(feeds)
            _tol_check(got, unfused, f"{layout} s{sparsity} b{batch} s{seq} {n}T: fused vs unfused")
            _tol_check(
                got, want, f"{layout} s{sparsity} b{batch} s{seq} {n}T: fused vs onnxruntime"
            )


@pytest.mark.parametrize("sparsity", [0.8, 0.95])
def test_other_sparsities_with_bert_base_head_size(
    sparsity: float, tmp_path: Path, ort_run
) -> None:
    model = _encoder(hidden=128, heads=2, ffn=256, layers=1, sparsity=sparsity, seed=3)
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path))
    engine = sparsepipe.Engine(path, num_threads=2)
    assert len(engine.fused_ops()["attention"]) == 1
    assert len(engine.fused_ops()["qkv_projection"]) == 1
    for batch, seq in ((1, 128), (3, 7)):
        feeds = _feeds(model, batch, seq, 128, seed=seq)
        (want,) = ort_run(path, feeds)
        (got,) = engine.run(feeds)
        _tol_check(got, want, f"s{sparsity} b{batch} s{seq}")


def test_attention_probabilities_used_elsewhere_are_not_fused(tmp_path: Path, ort_run) -> None:
    model = _encoder(layers=1)
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.output.append(
        helper.make_tensor_value_info(softmax.output[0], TensorProto.FLOAT, None)
    )
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path))
    engine = sparsepipe.Engine(path, num_threads=2)
    assert engine.fused_ops()["attention"] == []
    (miss,) = [m for m in engine.fusion_misses() if m["kind"] == "attention"]
    assert miss["node"] == softmax.name and "model output" in miss["reason"], miss
    feeds = _feeds(model, 2, 5, 32, seed=1)
    for got, want in zip(engine.run(feeds), ort_run(path, feeds)):
        _tol_check(got, want, "probabilities as an output")


def test_fuse_must_be_a_bool(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save_model(_encoder(layers=1), str(path))
    with pytest.raises(TypeError, match="fuse must be True or False, got str 'no'"):
        sparsepipe.Engine(path, fuse="no")
    assert sparsepipe.Engine(path, fuse=False).fuse is False


def test_dense_projections_merge_on_our_dense_kernel(tmp_path: Path, ort_run) -> None:
    model = _encoder()
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path))
    engine = sparsepipe.Engine(path, num_threads=2, dense_backend="sparsepipe")
    assert engine.fused_ops()["qkv_projection"] == engine.fused_ops()["attention"]
    assert len(engine.fused_ops()["qkv_projection"]) == 2
    for batch, seq in ((1, 1), (3, 7), (2, 128)):
        feeds = _feeds(model, batch, seq, 32, seed=seq)
        (want,) = ort_run(path, feeds)
        (got,) = engine.run(feeds)
        _tol_check(got, want, f"dense b{batch} s{seq}")


def test_projections_are_not_merged_when_used_elsewhere_or_of_different_kinds(
    tmp_path: Path, ort_run
) -> None:
    model = _encoder(layers=1, sparsity=0.9)
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    q_weight, k_matmul = matmuls[0].input[1], matmuls[1]
    # The key projection is also a model output.
    used = onnx.ModelProto()
    used.CopyFrom(model)
    used.graph.output.append(
        helper.make_tensor_value_info(k_matmul.output[0], TensorProto.FLOAT, None)
    )
    # The query weight is dense while the key and value weights are sparse.
    mixed = onnx.ModelProto()
    mixed.CopyFrom(model)
    init = next(i for i in mixed.graph.initializer if i.name == q_weight)
    dense = np.random.default_rng(5).standard_normal(tuple(init.dims)).astype(np.float32) * 0.2
    init.CopyFrom(numpy_helper.from_array(dense, q_weight))
    for name, m, options, why in (
        ("used elsewhere", used, {}, "keeps its bias apart"),
        ("mixed kinds", mixed, {"dense_backend": "tract"}, "dense_backend='sparsepipe'"),
        ("mixed, our dense kernel", mixed, {"dense_backend": "sparsepipe"}, "dense/sparse/sparse"),
    ):
        path = tmp_path / f"{name}.onnx"
        onnx.save_model(m, str(path))
        engine = sparsepipe.Engine(path, num_threads=2, **options)
        assert len(engine.fused_ops()["attention"]) == 1, name
        assert engine.fused_ops()["qkv_projection"] == [], name
        (miss,) = [m for m in engine.fusion_misses() if m["kind"] == "qkv_projection"]
        assert why in miss["reason"], (name, miss)
        feeds = _feeds(m, 2, 9, 32, seed=4)
        for got, want in zip(engine.run(feeds), ort_run(path, feeds)):
            _tol_check(got, want, name)
