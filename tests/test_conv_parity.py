"""Convolutions on sparsepipe's kernels against onnxruntime, one generated graph per case.

Each graph is one ONNX ``Conv`` (with or without a bias) followed by an epilogue, run with the
dense weights forced onto our kernels (``dense_backend="sparsepipe"``) and at sparsity 0.5 and
0.9 on the sparse kernel; the report must say our kernels ran it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sparsepipe

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# (name, kernel, stride, padding attrs, image h x w, channels in -> out)
CASES: list[tuple[str, int, int, dict[str, Any], tuple[int, int], tuple[int, int]]] = [
    ("k3_s1_same", 3, 1, {"pads": [1, 1, 1, 1]}, (13, 13), (8, 16)),
    ("k3_s2", 3, 2, {"pads": [1, 1, 1, 1]}, (13, 13), (8, 12)),
    ("k3_asym", 3, 1, {"pads": [0, 1, 2, 0]}, (7, 9), (5, 7)),
    ("k3_same_upper_s2", 3, 2, {"auto_pad": "SAME_UPPER"}, (7, 9), (6, 10)),
    ("k5_s1", 5, 1, {"pads": [2, 2, 2, 2]}, (13, 13), (4, 9)),
    ("k5_s2_valid", 5, 2, {}, (13, 13), (4, 6)),
    ("k7_s2_stem", 7, 2, {"pads": [3, 3, 3, 3]}, (31, 29), (3, 16)),
    ("k1_s2", 1, 2, {}, (7, 9), (12, 20)),
    ("k1_s1_pad", 1, 1, {"pads": [1, 0, 0, 1]}, (7, 9), (6, 5)),
    ("k3_1x1_image", 3, 1, {"pads": [1, 1, 1, 1]}, (1, 1), (16, 24)),
    ("k3_dilated", 3, 1, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, (13, 13), (6, 8)),
]
EPILOGUES = ["none", "bias", "bias_relu", "relu6", "add_bias_relu", "bias_silu", "bias_leaky_relu"]
BATCHES = (1, 3)


def _scalar(value: float, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.float32(value), name)


def _prune(w: np.ndarray, sparsity: float) -> np.ndarray:
    if sparsity == 0:
        return w
    cut = np.quantile(np.abs(w), sparsity)
    return np.where(np.abs(w) <= cut, 0, w).astype(np.float32)


def _build(
    case: tuple[str, int, int, dict[str, Any], tuple[int, int], tuple[int, int]],
    epilogue: str,
    sparsity: float,
    batch: int | str,
) -> onnx.ModelProto:
    name, k, stride, pad, (h, w), (cin, cout) = case
    rng = np.random.default_rng(zlib.crc32(f"{name} {epilogue} {sparsity}".encode()))
    weight = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    inits = [numpy_helper.from_array(_prune(weight, sparsity), "W")]
    inputs = ["x", "W"]
    if epilogue != "none":
        bias = rng.standard_normal(cout).astype(np.float32) * 0.3
        inits.append(numpy_helper.from_array(bias, "B"))
        inputs.append("B")
    nodes = [
        helper.make_node("Conv", inputs, ["conv"], kernel_shape=[k, k], strides=[stride] * 2, **pad)
    ]
    out = "conv"
    if epilogue == "add_bias_relu":
        extra = rng.standard_normal((1, cout, 1, 1)).astype(np.float32)
        inits.append(numpy_helper.from_array(extra, "B2"))
        nodes.append(helper.make_node("Add", ["conv", "B2"], ["biased"]))
        out = "biased"
    if epilogue in ("bias_relu", "add_bias_relu"):
        nodes.append(helper.make_node("Relu", [out], ["y"]))
    elif epilogue == "bias_silu":
        nodes.append(helper.make_node("Sigmoid", [out], ["sig"]))
        nodes.append(helper.make_node("Mul", [out, "sig"], ["y"]))
    elif epilogue == "bias_leaky_relu":
        nodes.append(helper.make_node("LeakyRelu", [out], ["y"], alpha=0.1))
    elif epilogue == "relu6":
        inits += [
            numpy_helper.from_array(np.float32(0), "lo"),
            numpy_helper.from_array(np.float32(6), "hi"),
        ]
        nodes.append(helper.make_node("Clip", [out, "lo", "hi"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", [out], ["y"]))
    graph = helper.make_graph(
        nodes,
        f"conv_{name}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_conv_matches_onnxruntime(
    case: tuple[Any, ...],
    epilogue: str,
    sparsity: float,
    tmp_path: Path,
    ort_run: Callable[..., list[np.ndarray]],
    assert_close: Callable[..., None],
) -> None:
    """Every geometry, epilogue and sparsity on our kernels equals onnxruntime, batch 1 and 3."""
    path = tmp_path / "conv.onnx"
    onnx.save(_build(case, epilogue, sparsity, "batch"), path)
    engine = sparsepipe.Engine(str(path), dense_backend="sparsepipe", num_threads=2)
    report = engine.sparsity_report()
    assert len(report) == 1, report
    (line,) = report
    assert line["isa"] == engine.isa, f"the convolution stayed on {line['isa']}: {line}"
    assert line["kernel"] == ("sparse" if sparsity >= 0.5 else "dense"), line
    # A strided 1x1 convolution becomes a subsampling and a matmul in tract's declutter.
    assert line["pattern"].startswith(f"conv {case[1]}x{case[1]}") or case[0] == "k1_s2", line
    if epilogue in ("bias_relu", "add_bias_relu", "relu6", "bias_silu", "bias_leaky_relu"):
        assert line["fused"], f"the {epilogue} epilogue was not folded: {line}"
    cin, (h, w) = case[5][0], case[4]
    for batch in BATCHES:
        x = np.random.default_rng(batch).standard_normal((batch, cin, h, w)).astype(np.float32)
        assert_close(
            list(engine([x])),
            ort_run(path, {"x": x}),
            ["y"],
            context=f"{case[0]} {epilogue} b{batch}",
        )


def test_fixed_batch_of_one_and_auto_backend_match(
    tmp_path: Path, ort_run: Callable[..., list[np.ndarray]], assert_close: Callable[..., None]
) -> None:
    """A graph fixed at one image (tract drops the batch axis) and the default dense backend
    (timed at load, either kernel) give onnxruntime's outputs."""
    path = tmp_path / "conv.onnx"
    onnx.save(_build(CASES[1], "bias_relu", 0.0, 1), path)
    x = np.random.default_rng(0).standard_normal((1, 8, 13, 13)).astype(np.float32)
    for backend in ("sparsepipe", "auto", "tract"):
        engine = sparsepipe.Engine(str(path), dense_backend=backend, batch_size=1)
        (line,) = engine.sparsity_report()
        if backend == "tract":
            assert line["isa"] == "tract"
        if backend == "sparsepipe":
            assert line["isa"] == engine.isa
        assert_close(list(engine([x])), ort_run(path, {"x": x}), ["y"], context=backend)


def test_a_wrong_image_size_is_an_input_error(tmp_path: Path) -> None:
    """The geometry is fixed at load: another image size is refused with the expected one named."""
    path = tmp_path / "conv.onnx"
    onnx.save(_build(CASES[0], "bias", 0.9, "batch"), path)
    engine = sparsepipe.Engine(str(path))
    with pytest.raises(sparsepipe.InputError, match="13"):
        engine([np.zeros((1, 8, 12, 13), np.float32)])


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("sparsity", [0.0, 0.9])
def test_residual_and_relu_after_it_fold_into_the_convolution(
    k: int,
    sparsity: float,
    tmp_path: Path,
    ort_run: Callable[..., list[np.ndarray]],
    assert_close: Callable[..., None],
) -> None:
    """A ResNet block's tail, ``Relu(Conv(x) + x)``: the addition and the ReLU run inside the
    convolution (a 1x1 one is a channels-first matmul), with onnxruntime's outputs."""
    rng = np.random.default_rng(k)
    c = 16
    w = _prune(
        (rng.standard_normal((c, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32), sparsity
    )
    b = rng.standard_normal(c).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["conv"], kernel_shape=[k, k], pads=[k // 2] * 4),
        helper.make_node("Add", ["conv", "x"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", c, 9, 11])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "block.onnx"
    onnx.save(model, path)
    engine = sparsepipe.Engine(str(path), dense_backend="sparsepipe")
    (line,) = engine.sparsity_report()
    assert line["plan_node"].endswith(".residual"), line
    assert len(engine.fused_ops()["residual_add"]) == 1, engine.fused_ops()
    ops = [p["op"] for p in engine.profile([np.ones((1, c, 9, 11), np.float32)], iterations=1)]
    assert not any(op.startswith(("OptMax", "Max", "Add", "OptBin")) for op in ops), ops
    for batch in (1, 3):
        x = rng.standard_normal((batch, c, 9, 11)).astype(np.float32)
        assert_close(list(engine([x])), ort_run(path, {"x": x}), ["y"], context=f"k{k} b{batch}")


DEPTHWISE = [
    ("dw3_s1", 3, 1, {"pads": [1, 1, 1, 1]}, (13, 13)),
    ("dw3_s2", 3, 2, {"pads": [0, 0, 1, 1]}, (13, 13)),
    ("dw5_s1", 5, 1, {"pads": [2, 2, 2, 2]}, (7, 9)),
    ("dw5_s2_same_upper", 5, 2, {"auto_pad": "SAME_UPPER"}, (7, 9)),
    ("dw3_1x1_image", 3, 1, {"pads": [1, 1, 1, 1]}, (1, 1)),
]


@pytest.mark.parametrize("epilogue", ["none", "bias_relu6", "bias_silu"])
@pytest.mark.parametrize("case", DEPTHWISE, ids=[c[0] for c in DEPTHWISE])
def test_depthwise_matches_onnxruntime(
    case: tuple[Any, ...],
    epilogue: str,
    tmp_path: Path,
    ort_run: Callable[..., list[np.ndarray]],
    assert_close: Callable[..., None],
) -> None:
    """Depthwise convolutions (one filter per channel) run on our direct kernel, batch 1 and 3."""
    name, k, stride, pad, (h, w) = case
    c = 12
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    inits = [numpy_helper.from_array(rng.standard_normal((c, 1, k, k)).astype(np.float32), "W")]
    inputs = ["x", "W"]
    if epilogue != "none":
        inits.append(numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "B"))
        inputs.append("B")
    attrs = {"kernel_shape": [k, k], "strides": [stride] * 2, "group": c, **pad}
    nodes = [helper.make_node("Conv", inputs, ["conv"], **attrs)]
    if epilogue == "bias_relu6":
        inits += [
            numpy_helper.from_array(np.float32(0), "lo"),
            numpy_helper.from_array(np.float32(6), "hi"),
        ]
        nodes.append(helper.make_node("Clip", ["conv", "lo", "hi"], ["y"]))
    elif epilogue == "bias_silu":
        nodes.append(helper.make_node("Sigmoid", ["conv"], ["sig"]))
        nodes.append(helper.make_node("Mul", ["conv", "sig"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["conv"], ["y"]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "dw.onnx"
    onnx.save(model, path)
    engine = sparsepipe.Engine(str(path), dense_backend="sparsepipe")
    ops = [p["op"] for p in engine.profile([np.ones((1, c, h, w), np.float32)], iterations=1)]
    folded = ("Clip", "Max", "Sigmoid", "Silu", "Mul")
    assert "SparsepipeConv" in ops and not any(f in op for op in ops for f in folded), ops
    for batch in BATCHES:
        x = rng.standard_normal((batch, c, h, w)).astype(np.float32) * 3
        assert_close(list(engine([x])), ort_run(path, {"x": x}), ["y"], context=f"{name} b{batch}")


def test_symbolic_image_size_is_computed_per_call(
    tmp_path: Path, ort_run: Callable[..., list[np.ndarray]], assert_close: Callable[..., None]
) -> None:
    """With a symbolic height and width the geometry follows each call's image, SAME padding
    included; a window larger than the padded image is an error that says so, not a crash."""
    model = _build(CASES[3], "bias_relu", 0.9, "batch")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    path = tmp_path / "conv.onnx"
    onnx.save(model, path)
    engine = sparsepipe.Engine(str(path))
    (line,) = engine.sparsity_report()
    assert line["isa"] == engine.isa and line["kernel"] == "sparse", line
    for shape in [(1, 6, 7, 9), (2, 6, 16, 5), (1, 6, 1, 1)]:
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        assert_close(list(engine([x])), ort_run(path, {"x": x}), ["y"], context=str(shape))
    valid = _build(CASES[5], "bias", 0.9, "batch")  # 5x5, no padding
    dims = valid.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    onnx.save(valid, path)
    engine = sparsepipe.Engine(str(path))
    with pytest.raises(sparsepipe.SparsepipeError, match="larger than the padded"):
        engine([np.zeros((1, 4, 3, 3), np.float32)])


# (name, kernel, stride, attributes, image h x w)
MAX_POOLS: list[tuple[str, int, int, dict[str, Any], tuple[int, int]]] = [
    ("k2_s2", 2, 2, {}, (16, 14)),
    ("k2_s1_pad_after", 2, 1, {"pads": [0, 0, 1, 1]}, (13, 13)),
    ("k3_s2_pad", 3, 2, {"pads": [1, 1, 1, 1]}, (15, 17)),
    ("k5_s1_sppf", 5, 1, {"pads": [2, 2, 2, 2]}, (10, 10)),
    ("k3_s2_same_upper", 3, 2, {"auto_pad": "SAME_UPPER"}, (9, 8)),
    ("k3_dilated", 3, 1, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, (11, 12)),
    ("k3_s2_ceil_exact", 3, 2, {"ceil_mode": 1}, (9, 9)),
    ("k3_s2_ceil_grows", 3, 2, {"ceil_mode": 1}, (10, 10)),
    ("k2_1x1_image", 2, 1, {"pads": [0, 0, 1, 1]}, (1, 1)),
]


def _max_pool_model(
    tmp_path: Path, name: str, k: int, stride: int, attrs: dict[str, Any], chw: list[Any]
) -> Path:
    """A one-node ``MaxPool`` model over ``[batch, *chw]`` input, saved under ``tmp_path``."""
    node = helper.make_node(
        "MaxPool", ["x"], ["y"], kernel_shape=[k, k], strides=[stride] * 2, **attrs
    )
    graph = helper.make_graph(
        [node],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *chw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "pool.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("case", MAX_POOLS, ids=[c[0] for c in MAX_POOLS])
def test_max_pool_matches_onnxruntime(
    case: tuple[Any, ...],
    tmp_path: Path,
    ort_run: Callable[..., list[np.ndarray]],
    assert_close: Callable[..., None],
) -> None:
    """Max pools run on our kernel (a ceil-mode pool whose ceiling adds an output stays with
    tract) and equal onnxruntime exactly, negative inputs and padding included, batch 1 and 3."""
    name, k, stride, attrs, (h, w) = case
    c = 6
    path = _max_pool_model(tmp_path, name, k, stride, attrs, [c, h, w])
    engine = sparsepipe.Engine(str(path))
    ops = [p["op"] for p in engine.profile([np.ones((1, c, h, w), np.float32)], iterations=1)]
    assert ("SparsepipeMaxPool" in ops) == (name != "k3_s2_ceil_grows"), ops
    misses = [m for m in engine.fusion_misses() if m["kind"] == "max_pool"]
    if name == "k3_s2_ceil_grows":
        (miss,) = misses
        assert miss["node"] == "y" and "ceil_mode" in str(miss["reason"]), miss
    else:
        assert misses == [], misses
    for batch in BATCHES:
        # All negative: a padding value of 0 instead of -inf would win.
        normal = np.random.default_rng(batch).standard_normal((batch, c, h, w))
        x = (-np.abs(normal) - 0.5).astype(np.float32)
        got, want = list(engine([x])), ort_run(path, {"x": x})
        assert_close(got, want, ["y"], context=f"{name} b{batch}")
        np.testing.assert_array_equal(got[0], want[0])


def test_max_pool_of_symbolic_image_size_follows_each_call(
    tmp_path: Path, ort_run: Callable[..., list[np.ndarray]]
) -> None:
    """With a symbolic height and width a max pool's geometry follows each call's image; an
    image smaller than the window is an error that says so, not a crash."""
    path = _max_pool_model(tmp_path, "symbolic", 3, 2, {}, [4, "height", "width"])
    engine = sparsepipe.Engine(str(path))
    for shape in [(1, 4, 9, 9), (2, 4, 16, 5), (1, 4, 3, 3)]:
        x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        got = list(engine([x]))
        np.testing.assert_array_equal(got[0], ort_run(path, {"x": x})[0], err_msg=str(shape))
    ops = [p["op"] for p in engine.profile([np.ones((1, 4, 9, 9), np.float32)], iterations=1)]
    assert "SparsepipeMaxPool" in ops, ops
    with pytest.raises(sparsepipe.SparsepipeError, match="larger than the padded"):
        engine([np.zeros((1, 4, 2, 2), np.float32)])


def test_a_convolution_left_to_tract_is_listed_with_why(
    tmp_path: Path, ort_run: Callable[..., list[np.ndarray]], assert_close: Callable[..., None]
) -> None:
    """A grouped convolution with two channels per group runs on tract's op, equals
    onnxruntime, and ``fusion_misses`` (what ``sparsepipe analyze`` prints) says why."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W"], ["y"], kernel_shape=[3, 3], pads=[1] * 4, group=4)
    graph = helper.make_graph(
        [node],
        "grouped",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "grouped.onnx"
    onnx.save(model, path)
    engine = sparsepipe.Engine(str(path), fuse=False)
    (miss,) = [m for m in engine.fusion_misses() if m["kind"] == "convolution"]
    assert miss["node"] == "y", miss
    assert "4 groups of 2 input channels" in str(miss["reason"]), miss
    assert "tract" in str(miss["reason"]), miss
    x = rng.standard_normal((1, 8, 9, 9)).astype(np.float32)
    assert_close(list(engine([x])), ort_run(path, {"x": x}), ["y"], context="grouped")
