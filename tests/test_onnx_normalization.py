"""Graphs today's exporters write: the ONNX-level rewrites of symbolic-shape constructs, external
data files, and onnxruntime's contrib operators. Each generated graph is checked against
onnxruntime (or gets the one clear error it should)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import sparsepipe
from sparsepipe import ModelLoadError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OPSET = 17


def _model(nodes, inputs, outputs, initializers=(), *, opset=OPSET, domains=()):
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(initializers))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    return model


def _save(model, directory: Path, name: str = "model.onnx") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    onnx.save_model(model, str(path))
    return path


def _check_against_ort(path: Path, feeds: dict, ort_run, assert_close, *, threads=(1, 2)):
    ref = ort_run(path, feeds)
    for n in threads:
        ours = sparsepipe.Engine(path, num_threads=n).run(feeds)
        assert_close(ours, ref, context=f"{path.name}, {n} thread(s)")
    return ref


# ---- Flatten of symbolic shapes ------------------------------------------------------------------


def _flatten_model(shape, axis, elem=TensorProto.FLOAT, opset=OPSET):
    x = helper.make_tensor_value_info("x", elem, shape)
    y = helper.make_tensor_value_info("y", elem, None)
    node = helper.make_node("Flatten", ["x"], ["y"], axis=axis, name="flat")
    return _model([node], [x], [y], opset=opset)


FLATTEN_CASES = (
    [(["B", "S"], axis) for axis in (0, 1, 2, -1, -2)]
    + [(["B", "S", 4], axis) for axis in (0, 1, 2, 3, -1, -2, -3)]
    + [(["N", 3, "H", "W"], axis) for axis in (1, 2, 3, -2)]
)


@pytest.mark.parametrize(("shape", "axis"), FLATTEN_CASES, ids=lambda v: str(v))
def test_flatten_of_symbolic_shapes(shape, axis, tmp_path, ort_run, assert_close):
    path = _save(_flatten_model(shape, axis), tmp_path)
    rng = np.random.default_rng(0)
    for dims in ((2, 5, 4, 3), (1, 3, 4, 2), (3, 1, 4, 7)):
        concrete = [d if isinstance(d, int) else dims[i] for i, d in enumerate(shape)]
        if not shape and dims[0] != 2:
            continue
        feeds = {"x": rng.standard_normal(concrete).astype(np.float32)}
        ref = _check_against_ort(path, feeds, ort_run, assert_close)
        assert ref[0].ndim == 2


def test_one_plan_serves_every_shape_after_the_rewrite(tmp_path, ort_run, assert_close):
    path = _save(_flatten_model(["B", "S"], 2), tmp_path)
    engine = sparsepipe.Engine(path, num_threads=1)
    assert engine.input_shapes == [["B", "S"]]
    for b, s in ((1, 1), (2, 9), (4, 3)):
        x = np.arange(b * s, dtype=np.float32).reshape(b, s)
        (out,) = engine.run({"x": x})
        assert out.shape == (b * s, 1)
        np.testing.assert_array_equal(out, x.reshape(-1, 1))


def test_flatten_in_if_branches_is_rewritten(tmp_path, ort_run, assert_close):
    def branch(name, axis):
        node = helper.make_node("Flatten", ["x"], [f"{name}_out"], axis=axis)
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)
        return helper.make_graph([node], name, [], [out])

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 3])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node(
        "If", ["c"], ["y"], then_branch=branch("then", 2), else_branch=branch("else", 2)
    )
    path = _save(_model([node], [x, c], [y]), tmp_path)
    x_value = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    for cond in (True, False):
        feeds = {"x": x_value, "c": np.array(cond)}
        ref = _check_against_ort(path, feeds, ort_run, assert_close, threads=(1,))
        assert ref[0].shape == (8, 3)


@pytest.mark.parametrize("axis", [3, -3])
def test_flatten_axis_outside_the_rank_is_refused(axis, tmp_path):
    path = _save(_flatten_model(["B", "S"], axis), tmp_path)
    with pytest.raises(ModelLoadError, match=rf"Flatten node 'flat' has axis={axis}.*rank 2"):
        sparsepipe.Engine(path)


def test_generated_names_never_shadow_the_models_own(tmp_path, ort_run, assert_close):
    """A graph that already uses the names the rewrite would pick keeps its own tensors."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    z = helper.make_tensor_value_info("y__sparsepipe_flatten_last", TensorProto.INT64, None)
    inits = [numpy_helper.from_array(np.array([7], np.int64), "y__sparsepipe_flatten_last")]
    nodes = [helper.make_node("Flatten", ["x"], ["y"], axis=2, name="flat")]
    path = _save(_model(nodes, [x], [y, z], inits), tmp_path)
    feeds = {"x": np.ones((2, 3, 4), np.float32)}
    _check_against_ort(path, feeds, ort_run, assert_close)


def test_transformers5_attention_mask_pattern(tmp_path, ort_run, assert_close):
    """Cast(mask → bool) → Flatten(axis=2) → Gather, back to [B, S], used as a where-mask."""
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    idx = numpy_helper.from_array(np.array(0, np.int64), "idx")
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask_bool"], to=TensorProto.BOOL),
        helper.make_node("Flatten", ["mask_bool"], ["flat"], axis=2, name="/model/bert/Flatten"),
        helper.make_node("Gather", ["flat", "idx"], ["col"], axis=1),
        helper.make_node("Shape", ["attention_mask"], ["mshape"]),
        helper.make_node("Reshape", ["col", "mshape"], ["mask2"]),
        helper.make_node("Unsqueeze", ["mask2", "axes"], ["mask3"]),
        helper.make_node("Where", ["mask3", "x", "neg"], ["y"]),
    ]
    inits = [
        idx,
        numpy_helper.from_array(np.array([-1], np.int64), "axes"),
        numpy_helper.from_array(np.array(-1e4, np.float32), "neg"),
    ]
    path = _save(_model(nodes, [mask, x], [y], inits), tmp_path)
    rng = np.random.default_rng(1)
    for b, s in ((1, 5), (3, 7)):
        m = (rng.random((b, s)) > 0.3).astype(np.int64)
        feeds = {"attention_mask": m, "x": rng.standard_normal((b, s, 4)).astype(np.float32)}
        _check_against_ort(path, feeds, ort_run, assert_close)


# ---- external data -------------------------------------------------------------------------------


def _mlp_model():
    rng = np.random.default_rng(2)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "w2")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    return _model(nodes, [x], [y], [w1, b1, w2])


def _save_external(directory: Path, location: str = "model.onnx.data", *, one_file=True) -> Path:
    (directory / location).parent.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    onnx.save_model(
        _mlp_model(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=one_file,
        location=location,
        size_threshold=0,
    )
    return path


FEEDS = {"x": np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8)}


@pytest.mark.parametrize(
    ("location", "one_file"),
    [("model.onnx.data", True), ("weights/model.onnx_data", True), ("ignored", False)],
    ids=["beside", "subdirectory", "one-file-per-tensor"],
)
def test_external_data_loads_from_file_and_directory(
    location, one_file, tmp_path, ort_run, assert_close
):
    path = _save_external(tmp_path / "m", location, one_file=one_file)
    assert len(list(path.parent.rglob("*"))) > 1
    ref = ort_run(path, FEEDS)
    for target in (path, path.parent, str(path)):
        assert_close(sparsepipe.Engine(target, num_threads=1).run(FEEDS), ref)


def test_external_data_with_offsets_and_lengths(tmp_path, ort_run, assert_close):
    """One shared file, tensors at nonzero offsets with explicit lengths (as onnx writes them)."""
    path = _save_external(tmp_path / "m")
    model = onnx.load(str(path), load_external_data=False)
    entries = {t.name: {e.key: e.value for e in t.external_data} for t in model.graph.initializer}
    assert any(int(e.get("offset", 0)) > 0 and "length" in e for e in entries.values())
    assert_close(sparsepipe.Engine(path, num_threads=1).run(FEEDS), ort_run(path, FEEDS))


def test_external_data_relative_to_the_model_not_the_working_directory(
    tmp_path, monkeypatch, ort_run, assert_close
):
    path = _save_external(tmp_path / "deep" / "m")
    monkeypatch.chdir(tmp_path)
    rel = Path("deep/m/model.onnx")
    assert_close(sparsepipe.Engine(rel, num_threads=1).run(FEEDS), ort_run(path, FEEDS))


def _save_model_external(model, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.data",
        size_threshold=0,
        convert_attribute=True,
    )
    return path


def test_external_data_of_constant_nodes_and_subgraph_initializers(tmp_path, ort_run, assert_close):
    def branch(name, value):
        init = numpy_helper.from_array(np.full(4, value, np.float32), f"{name}_w")
        node = helper.make_node("Add", ["h", f"{name}_w"], [f"{name}_o"])
        out = helper.make_tensor_value_info(f"{name}_o", TensorProto.FLOAT, None)
        return helper.make_graph([node], name, [], [out], [init])

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    const = numpy_helper.from_array(np.arange(4, dtype=np.float32), "cval")
    nodes = [
        helper.make_node("Constant", [], ["k"], value=const),
        helper.make_node("Add", ["x", "k"], ["h"]),
        helper.make_node(
            "If", ["c"], ["y"], then_branch=branch("t", 3), else_branch=branch("e", -5)
        ),
    ]
    path = _save_model_external(_model(nodes, [x, c], [y]), tmp_path / "m")
    stored = onnx.load(str(path), load_external_data=False)
    assert stored.graph.node[0].attribute[0].t.external_data
    for cond in (True, False):
        feeds = {"x": np.ones((2, 4), np.float32), "c": np.array(cond)}
        _check_against_ort(path, feeds, ort_run, assert_close, threads=(1,))
    (path.parent / "w.data").write_bytes((path.parent / "w.data").read_bytes()[:20])
    with pytest.raises(ModelLoadError, match=r"tensor '(t_w|e_w|cval)'.*truncated"):
        sparsepipe.Engine(path)


def test_external_string_tensors_are_refused(tmp_path):
    path = _save_external(tmp_path / "m")
    model = onnx.load(str(path), load_external_data=False)
    model.graph.initializer[0].data_type = TensorProto.STRING
    onnx.save_model(model, str(path))
    with pytest.raises(ModelLoadError, match=r"tensor 'w1'.*no fixed size"):
        sparsepipe.Engine(path)


def test_missing_external_data_file(tmp_path):
    path = _save_external(tmp_path / "m")
    (path.parent / "model.onnx.data").unlink()
    with pytest.raises(ModelLoadError) as e:
        sparsepipe.Engine(path)
    msg = str(e.value)
    assert "model.onnx.data" in msg and "does not exist" in msg
    assert "'w1'" in msg or "'b1'" in msg or "'w2'" in msg


def test_truncated_external_data_file(tmp_path):
    path = _save_external(tmp_path / "m")
    data = path.parent / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(ModelLoadError, match=r"tensor 'w2'.*truncated"):
        sparsepipe.Engine(path)


def test_external_data_length_that_does_not_match_the_shape(tmp_path):
    path = _save_external(tmp_path / "m")
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "length":
            entry.value = str(int(entry.value) - 4)
    onnx.save_model(model, str(path))
    with pytest.raises(ModelLoadError, match=r"tensor 'w1'.*'length' gives"):
        sparsepipe.Engine(path)


@pytest.mark.parametrize("location", ["../outside.data", "/etc/passwd", "a/../../outside.data"])
def test_external_data_path_escaping_the_directory_is_refused(location, tmp_path):
    (tmp_path / "outside.data").write_bytes(b"\0" * 4096)
    path = _save_external(tmp_path / "m")
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save_model(model, str(path))
    with pytest.raises(ModelLoadError, match=r"tensor 'w1'.*not a relative path inside"):
        sparsepipe.Engine(path)


def test_external_data_symlink_escaping_the_directory_is_refused(tmp_path):
    path = _save_external(tmp_path / "m")
    data = path.parent / "model.onnx.data"
    shutil.move(data, tmp_path / "elsewhere.data")
    data.symlink_to(tmp_path / "elsewhere.data")
    with pytest.raises(ModelLoadError, match="outside the model's directory"):
        sparsepipe.Engine(path)


def test_external_data_through_pipeline_create(tmp_path, ort_run):
    from sparsepipe import Pipeline

    path = _save_external(tmp_path / "m")

    def pre(inputs):
        return [np.asarray(inputs, np.float32)], {}

    def post(outputs, **_):
        return {"argmax": outputs[0].argmax(-1).tolist()}

    pipe = Pipeline.create(
        "custom", model_path=str(path.parent), process_inputs_fn=pre, process_outputs_fn=post
    )
    expected = ort_run(path, FEEDS)[0].argmax(-1).tolist()
    assert pipe(FEEDS["x"]).argmax == expected


# ---- onnxruntime contrib operators ---------------------------------------------------------------

MS = "com.microsoft"


def _contrib_model(node, inputs, initializers, output_shape):
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)
    return _model([node], inputs, [y], initializers, domains=[MS])


def _x(shape=("batch", "sequence", 8), name="x"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


RNG = np.random.default_rng(3)
HIDDEN = 8


def _vec(name, scale=1.0, offset=0.0):
    return numpy_helper.from_array(
        (RNG.standard_normal(HIDDEN) * scale + offset).astype(np.float32), name
    )


CONTRIB_CASES = {
    "BiasGelu": lambda: _contrib_model(
        helper.make_node("BiasGelu", ["x", "b"], ["y"], domain=MS), [_x()], [_vec("b")], None
    ),
    "FastGelu": lambda: _contrib_model(
        helper.make_node("FastGelu", ["x", "b"], ["y"], domain=MS), [_x()], [_vec("b")], None
    ),
    "FastGelu-no-bias": lambda: _contrib_model(
        helper.make_node("FastGelu", ["x"], ["y"], domain=MS), [_x()], [], None
    ),
    "Gelu": lambda: _contrib_model(
        helper.make_node("Gelu", ["x"], ["y"], domain=MS), [_x()], [], None
    ),
    "QuickGelu": lambda: _contrib_model(
        helper.make_node("QuickGelu", ["x"], ["y"], domain=MS, alpha=1.5), [_x()], [], None
    ),
    "SkipLayerNormalization": lambda: _contrib_model(
        helper.make_node(
            "SkipLayerNormalization",
            ["x", "skip", "gamma", "beta", "bias"],
            ["y"],
            domain=MS,
            epsilon=1e-5,
        ),
        [_x(), _x(name="skip")],
        [_vec("gamma", 0.5, 1.0), _vec("beta"), _vec("bias")],
        None,
    ),
    "SkipLayerNormalization-no-beta-no-bias": lambda: _contrib_model(
        helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma"], ["y"], domain=MS),
        [_x(), _x(name="skip")],
        [_vec("gamma", 0.5, 1.0)],
        None,
    ),
    "SkipLayerNormalization-bias-no-beta": lambda: _contrib_model(
        helper.make_node(
            "SkipLayerNormalization", ["x", "skip", "gamma", "", "bias"], ["y"], domain=MS
        ),
        [_x(), _x(name="skip")],
        [_vec("gamma", 0.5, 1.0), _vec("bias")],
        None,
    ),
    "SkipSimplifiedLayerNormalization": lambda: _contrib_model(
        helper.make_node(
            "SkipSimplifiedLayerNormalization", ["x", "skip", "gamma"], ["y"], domain=MS
        ),
        [_x(), _x(name="skip")],
        [_vec("gamma", 0.5, 1.0)],
        None,
    ),
}


def test_skip_layer_normalization_sum_output(tmp_path, ort_run, assert_close):
    node = helper.make_node(
        "SkipLayerNormalization",
        ["x", "skip", "gamma", "beta", "bias"],
        ["y", "", "", "sum"],
        domain=MS,
        epsilon=1e-6,
    )
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "sum")]
    inits = [_vec("gamma", 0.5, 1.0), _vec("beta"), _vec("bias")]
    model = _model([node], [_x(), _x(name="skip")], outs, inits, domains=[MS])
    path = _save(model, tmp_path)
    rng = np.random.default_rng(5)
    feeds = {n: rng.standard_normal((2, 3, HIDDEN)).astype(np.float32) for n in ("x", "skip")}
    _check_against_ort(path, feeds, ort_run, assert_close)


@pytest.mark.parametrize("case", sorted(CONTRIB_CASES))
def test_contrib_elementwise_and_normalisation_ops_match_onnxruntime(
    case, tmp_path, ort_run, assert_close
):
    model = CONTRIB_CASES[case]()
    path = _save(model, tmp_path)
    rng = np.random.default_rng(4)
    for b, s in ((1, 3), (2, 5)):
        feeds = {"x": (rng.standard_normal((b, s, HIDDEN)) * 2).astype(np.float32)}
        if any(i.name == "skip" for i in model.graph.input):
            feeds["skip"] = rng.standard_normal((b, s, HIDDEN)).astype(np.float32)
        _check_against_ort(path, feeds, ort_run, assert_close)


@pytest.mark.parametrize(("trans_a", "trans_b"), [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("alpha", [1.0, 0.125])
def test_fused_matmul_runs_as_standard_ops(
    trans_a, trans_b, alpha, tmp_path, ort_run, assert_close
):
    a_shape = ["batch", 2, 6, 5] if trans_a else ["batch", 2, 5, 6]
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)
    b_dims = [2, 4, 6] if trans_b else [2, 6, 4]
    b = numpy_helper.from_array(RNG.standard_normal(b_dims).astype(np.float32), "b")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node(
        "FusedMatMul", ["a", "b"], ["y"], domain=MS, alpha=alpha, transA=trans_a, transB=trans_b
    )
    path = _save(_model([node], [a], [y], [b], domains=[MS]), tmp_path)
    rng = np.random.default_rng(6)
    for batch in (1, 3):
        shape = [batch, *a_shape[1:]]
        feeds = {"a": rng.standard_normal(shape).astype(np.float32)}
        _check_against_ort(path, feeds, ort_run, assert_close)


@pytest.mark.parametrize(
    ("activation", "params"),
    [
        ("Relu", {}),
        ("Tanh", {}),
        ("Sigmoid", {}),
        ("LeakyRelu", {"activation_alpha": 0.1}),
        ("HardSigmoid", {"activation_alpha": 0.3, "activation_beta": 0.4}),
    ],
)
def test_fused_gemm_runs_as_gemm_and_its_activation(
    activation, params, tmp_path, ort_run, assert_close
):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(RNG.standard_normal((4, 6)).astype(np.float32), "w")
    c = numpy_helper.from_array(RNG.standard_normal(4).astype(np.float32), "c")
    attrs = {"transB": 1, "alpha": 0.7, "beta": 1.3, "activation": activation, **params}
    node = helper.make_node("FusedGemm", ["x", "w", "c"], ["y"], domain=MS, **attrs)
    path = _save(_model([node], [x], [y], [w, c], domains=[MS]), tmp_path)
    feeds = {"x": np.random.default_rng(7).standard_normal((3, 6)).astype(np.float32)}
    _check_against_ort(path, feeds, ort_run, assert_close)


def test_fused_matmul_with_batch_transposes_is_refused(tmp_path):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    b = numpy_helper.from_array(np.ones((4, 2), np.float32), "b")
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, transBatchA=1, name="fm")
    path = _save(_model([node], [a], [y], [b], domains=[MS]), tmp_path)
    with pytest.raises(ModelLoadError, match=r"com\.microsoft::FusedMatMul \(node 'fm'\)"):
        sparsepipe.Engine(path)


def test_fused_transformer_ops_get_one_error_listing_them(tmp_path):
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", "sequence"])
    seg = helper.make_tensor_value_info("segment_ids", TensorProto.INT32, ["batch", "sequence"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    h = HIDDEN
    inits = [
        numpy_helper.from_array(RNG.standard_normal((50, h)).astype(np.float32), "word"),
        numpy_helper.from_array(RNG.standard_normal((16, h)).astype(np.float32), "pos"),
        numpy_helper.from_array(RNG.standard_normal((2, h)).astype(np.float32), "segw"),
        _vec("gamma"),
        _vec("beta"),
        numpy_helper.from_array(RNG.standard_normal((h, 3 * h)).astype(np.float32), "qkv_w"),
        numpy_helper.from_array(RNG.standard_normal(3 * h).astype(np.float32), "qkv_b"),
    ]
    nodes = [
        helper.make_node(
            "EmbedLayerNormalization",
            ["input_ids", "segment_ids", "word", "pos", "segw", "gamma", "beta"],
            ["emb", "mask_index"],
            domain=MS,
            name="embed",
        ),
        helper.make_node(
            "Attention", ["emb", "qkv_w", "qkv_b"], ["att"], domain=MS, num_heads=2, name="attn"
        ),
        helper.make_node("FastGelu", ["att"], ["y"], domain=MS, name="gelu"),
    ]
    path = _save(_model(nodes, [ids, seg], [y], inits, domains=[MS]), tmp_path)
    with pytest.raises(ModelLoadError) as e:
        sparsepipe.Engine(path)
    msg = str(e.value)
    assert "2 operator(s)" in msg
    assert "com.microsoft::EmbedLayerNormalization (node 'embed')" in msg
    assert "com.microsoft::Attention (node 'attn')" in msg
    assert "FastGelu (node" not in msg
    assert "optimum-cli export onnx" in msg and "torch.onnx.export" in msg


def test_unnamed_refused_nodes_are_listed_once_by_their_output(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Foo", ["x"], ["y"], domain="my.dom")
    path = _save(_model([node], [x], [y], domains=["my.dom"]), tmp_path)
    with pytest.raises(ModelLoadError, match=r"uses 1 operator\(s\).*my\.dom::Foo \(node 'y'\)"):
        sparsepipe.Engine(path)


def test_custom_domain_ops_are_refused_even_with_a_standard_name(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Relu", ["x"], ["y"], domain="my.company", name="mine")
    path = _save(_model([node], [x], [y], domains=["my.company"]), tmp_path)
    expected = r"my\.company::Relu \(node 'mine'\).*custom operators"
    with pytest.raises(ModelLoadError, match=expected):
        sparsepipe.Engine(path)


def test_model_local_functions_are_refused_with_the_inlining_advice(tmp_path):
    fn = helper.make_function(
        "local",
        "Double",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", OPSET)],
    )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Double", ["x"], ["y"], domain="local", name="twice")
    model = _model([node], [x], [y], domains=["local"])
    model.functions.append(fn)
    path = _save(model, tmp_path)
    with pytest.raises(ModelLoadError, match="inline_local_functions"):
        sparsepipe.Engine(path)


# ---- tract rules that failed on exporter graphs --------------------------------------------------


def _arange_mask_model(last_nodes, out_type=TensorProto.BOOL):
    """`arange(sequence) >= 0` as [1, 1, S, 1] (provably all true), as torch's dynamo exporter
    writes BERT's mask, followed by `last_nodes`."""
    x = helper.make_tensor_value_info("x", TensorProto.INT64, ["B", "S"])
    y = helper.make_tensor_value_info("y", out_type, None)
    inits = [
        numpy_helper.from_array(np.array(True), "true"),
        numpy_helper.from_array(np.ones((1, 1, 1, 1), bool), "true4"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1, np.int64), "step"),
        numpy_helper.from_array(np.array([0, 1, 3], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["s1"], start=1, end=2),
        helper.make_node("Squeeze", ["s1"], ["n"]),
        helper.make_node("Range", ["zero", "n", "step"], ["r"]),
        helper.make_node("Unsqueeze", ["r", "axes"], ["ru"]),
        helper.make_node("GreaterOrEqual", ["ru", "zero"], ["ge"]),
        *last_nodes,
    ]
    return _model(nodes, [x], [y], inits, opset=20)


@pytest.mark.parametrize(
    "last",
    [
        [helper.make_node("And", ["true", "ge"], ["y"])],
        [helper.make_node("And", ["ge", "true4"], ["y"])],
        [helper.make_node("And", ["ge", "ge"], ["y"])],
        [helper.make_node("Or", ["ge", "true"], ["y"])],
    ],
    ids=["and-scalar", "and-ones", "and-self", "or"],
)
def test_all_true_masks_keep_their_shape(last, tmp_path, ort_run):
    path = _save(_arange_mask_model(last), tmp_path)
    for b, s in ((2, 7), (1, 3)):
        feeds = {"x": np.zeros((b, s), np.int64)}
        (ref,) = ort_run(path, feeds)
        (ours,) = sparsepipe.Engine(path, num_threads=1).run(feeds)
        assert ours.shape == ref.shape == (1, 1, s, 1)
        np.testing.assert_array_equal(ours, ref)


def test_topk_over_int64_cast_values(tmp_path, ort_run):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5])
    outs = [helper.make_tensor_value_info(n, TensorProto.INT64, None) for n in ("v", "i")]
    k = numpy_helper.from_array(np.array([2], np.int64), "k")
    nodes = [
        helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT64),
        helper.make_node("TopK", ["xi", "k"], ["v", "i"], axis=1),
    ]
    path = _save(_model(nodes, [x], outs, [k]), tmp_path)
    feeds = {"x": np.array([[3, 9, 1, 7, 5], [2, 8, 6, 4, 0]], np.float32)}
    ref = ort_run(path, feeds)
    ours = sparsepipe.Engine(path, num_threads=1).run(feeds)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)


def test_int64_cumsum_and_int64_outputs(tmp_path, ort_run):
    """RoBERTa's position ids as the dynamo exporter writes them: CumSum over Cast(..., int64)."""
    x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, None)
    inits = [
        numpy_helper.from_array(np.array(1, np.int64), "pad"),
        numpy_helper.from_array(np.array(1, np.int64), "axis"),
    ]
    nodes = [
        helper.make_node("Equal", ["input_ids", "pad"], ["is_pad"]),
        helper.make_node("Not", ["is_pad"], ["keep"]),
        helper.make_node("Cast", ["keep"], ["keep32"], to=TensorProto.INT32),
        helper.make_node("Cast", ["keep32"], ["keep64"], to=TensorProto.INT64),
        helper.make_node("CumSum", ["keep64", "axis"], ["y"]),
    ]
    path = _save(_model(nodes, [x], [y], inits, opset=20), tmp_path)
    engine = sparsepipe.Engine(path, num_threads=1)
    assert engine.output_dtypes == ["int64"]
    feeds = {"input_ids": np.array([[3, 1, 4, 1, 5], [1, 1, 2, 7, 1]], np.int64)}
    (ref,) = ort_run(path, feeds)
    (ours,) = engine.run(feeds)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, ref)
