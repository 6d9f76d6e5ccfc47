"""`sparsepipe.sparsify`: which weights are prunable, exact zero counts, selection, safe writes."""

from __future__ import annotations

import hashlib
import math
import os
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sparsepipe import Engine
from sparsepipe.errors import ConfigError, InputError, ModelLoadError
from sparsepipe.sparsify import (
    copy_deployment_files,
    evaluate_accuracy,
    prunable_weights,
    sparsify,
    sparsify_file,
)

onnx = pytest.importorskip("onnx")
om = pytest.importorskip("onnx_models", reason="needs the onnx package")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _zeros_needed(sparsity: float, size: int) -> int:
    return math.ceil(Decimal(repr(sparsity)) * size)


def _arrays(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _model(nodes, inputs, outputs, initializers, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.checker.check_model(model)
    return model


def _mixed_model() -> onnx.ModelProto:
    """Shared weight, Constant-node weight, Gemm with constant A, Conv, ConvTranspose, a Gather
    table also used by a MatMul, a 1-D MatMul operand, biases and an int8 dequantized weight."""
    rng = np.random.default_rng(0)

    def f32(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) + 0.01, name)

    inits = [
        f32("shared", 8, 8),
        f32("gemm_a", 3, 8),
        f32("gemm_c", 8),
        f32("conv_w", 4, 2, 3, 3),
        f32("conv_b", 4),
        f32("deconv_w", 4, 2, 3, 3),
        f32("table", 10, 8),
        f32("vec", 8),
        numpy_helper.from_array(rng.integers(-5, 5, (8, 8)).astype(np.int8), "q_w"),
        numpy_helper.from_array(np.float32(0.1), "q_scale"),
        numpy_helper.from_array(np.int64([0, 1]), "ids"),
    ]
    const_w = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "cw")
    nodes = [
        helper.make_node("MatMul", ["x", "shared"], ["h1"], name="mm1"),
        helper.make_node("MatMul", ["h1", "shared"], ["h2"], name="mm2"),
        helper.make_node("Constant", [], ["const_w"], name="c0", value=const_w),
        helper.make_node("MatMul", ["h2", "const_w"], ["h3"], name="mm3"),
        helper.make_node("Gemm", ["gemm_a", "h3", "gemm_c"], ["g"], name="gemm", transB=1),
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="gather"),
        helper.make_node("MatMul", ["emb", "shared"], ["tied"], name="tied_mm"),
        helper.make_node("MatMul", ["table", "shared"], ["table_mm"], name="table_mm"),
        helper.make_node("MatMul", ["h3", "vec"], ["dot"], name="dot_mm"),
        helper.make_node("DequantizeLinear", ["q_w", "q_scale"], ["q_f"], name="dq"),
        helper.make_node("MatMul", ["h3", "q_f"], ["q_out"], name="q_mm"),
        helper.make_node("Conv", ["img", "conv_w", "conv_b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("ConvTranspose", ["c", "deconv_w"], ["d"], name="deconv"),
    ]
    vi = helper.make_tensor_value_info
    inputs = [vi("x", TensorProto.FLOAT, [2, 8]), vi("img", TensorProto.FLOAT, [1, 2, 5, 5])]
    outputs = [
        vi(n, TensorProto.FLOAT, [None] * rank)
        for n, rank in (("g", 2), ("tied", 2), ("dot", 1), ("q_out", 2), ("d", 4), ("table_mm", 2))
    ]
    return _model(nodes, inputs, outputs, inits, opset=19)


def _weight(name: str, array: np.ndarray) -> onnx.ModelProto:
    """x[batch, k] @ `array` as a one-node model."""
    k, n = array.shape
    dtype = helper.np_dtype_to_tensor_dtype(array.dtype)
    return _model(
        [helper.make_node("MatMul", ["x", name], ["y"], name="mm")],
        [helper.make_tensor_value_info("x", dtype, ["batch", k])],
        [helper.make_tensor_value_info("y", dtype, ["batch", n])],
        [numpy_helper.from_array(array, name)],
    )


# ---- which weights ------------------------------------------------------------------------------


def test_prunable_weights_of_bert(model_zoo):
    _, model = model_zoo.get("bert", 0.0)
    infos = prunable_weights(model)
    names = [w.name for w in infos]
    assert len(names) == len(set(names)) == 14
    assert all(n.endswith(".weight") and "embeddings" not in n for n in names)
    assert all("LayerNorm" not in n for n in names)
    assert {w.op_type for w in infos} == {"MatMul", "Gemm"}
    q = infos[0]
    assert q.name == "encoder.layer.0.attention.self.query.weight"
    assert q.nodes == ("/encoder/layer.0/attention/self/query/MatMul",)
    assert q.shape == (48, 48) and q.size == 48 * 48 and q.sparsity == 0.0 and not q.quantized
    _, pruned = model_zoo.get("bert", 0.8)
    for w in prunable_weights(pruned):
        assert abs(w.sparsity - 0.8) <= 1 / w.size


def test_prunable_weights_kinds():
    infos = {w.name: w for w in prunable_weights(_mixed_model())}
    assert infos["shared"].nodes == ("mm1", "mm2", "tied_mm", "table_mm")
    assert infos["shared"].op_type == "MatMul"
    assert infos["const_w"].nodes == ("mm3",) and infos["const_w"].shape == (8, 8)
    assert infos["gemm_a"].op_type == "Gemm" and infos["gemm_a"].shape == (3, 8)
    assert infos["conv_w"].op_type == "Conv" and infos["conv_w"].shape == (4, 2, 3, 3)
    assert infos["deconv_w"].op_type == "ConvTranspose"
    assert infos["q_w"].quantized and infos["q_w"].dtype == "int8"
    assert infos["q_w"].nodes == ("q_mm",)
    # the Gather table (even when a MatMul uses it too), biases and 1-D operands are left out
    assert set(infos) == {"shared", "const_w", "gemm_a", "conv_w", "deconv_w", "q_w"}


# ---- how much is pruned -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "bert", "convnet"])
@pytest.mark.parametrize("sparsity", [0.3, 0.8, 0.95])
def test_per_layer_exact_counts(model_zoo, name, sparsity):
    _, model = model_zoo.get(name, 0.0)
    pruned, results = sparsify(model, sparsity)
    after = _arrays(pruned)
    before = _arrays(model)
    assert [r.name for r in results] == [w.name for w in prunable_weights(model)]
    for r in results:
        w = after[r.name]
        zeros = int(np.count_nonzero(w == 0))
        assert zeros == _zeros_needed(sparsity, w.size), r
        assert r.sparsity_before == 0.0 and r.sparsity_after == zeros / w.size
        assert r.sparsity_after >= sparsity and r.op in ("MatMul", "Gemm", "Conv")
        # the survivors are unchanged and no pruned entry is larger than a kept one
        kept = w != 0
        np.testing.assert_array_equal(w[kept], before[r.name][kept])
        assert np.abs(before[r.name][~kept]).max() <= np.abs(before[r.name][kept]).min()


def test_ties_are_broken_by_position():
    w = np.ones((4, 5), dtype=np.float32)
    w[0, 0] = 0.5
    pruned, (r,) = sparsify(_weight("w", w), 0.5)
    out = _arrays(pruned)["w"].reshape(-1)
    assert r.sparsity_after == 0.5
    np.testing.assert_array_equal(out[:10], 0.0)
    np.testing.assert_array_equal(out[10:], 1.0)
    again, _ = sparsify(_weight("w", w), 0.5)
    assert again.SerializeToString() == pruned.SerializeToString()


def test_global_uses_one_threshold(model_zoo):
    _, model = model_zoo.get("bert", 0.0)
    pruned, results = sparsify(model, 0.7, scope="global")
    before, after = _arrays(model), _arrays(pruned)
    total = sum(after[r.name].size for r in results)
    zeros = sum(int(np.count_nonzero(after[r.name] == 0)) for r in results)
    assert zeros == _zeros_needed(0.7, total)
    cut = np.concatenate([np.abs(before[r.name][after[r.name] == 0]) for r in results])
    kept = np.concatenate([np.abs(before[r.name][after[r.name] != 0]) for r in results])
    assert cut.max() <= kept.min()
    # one threshold: layers with smaller weights lose more
    spread = [r.sparsity_after for r in results]
    assert max(spread) - min(spread) > 0.05


def test_biases_embeddings_and_layernorm_untouched(model_zoo):
    _, model = model_zoo.get("bert", 0.0)
    pruned, results = sparsify(model, 0.9)
    chosen = {r.name for r in results}
    before, after = _arrays(model), _arrays(pruned)
    assert before.keys() == after.keys()
    untouched = [n for n in before if n not in chosen]
    assert any("embeddings" in n for n in untouched) and any(n.endswith(".bias") for n in untouched)
    for n in untouched:
        np.testing.assert_array_equal(after[n], before[n], err_msg=n)
    assert [n.name for n in pruned.graph.node] == [n.name for n in model.graph.node]


def test_include_and_exclude(model_zoo):
    _, model = model_zoo.get("bert", 0.0)
    _, results = sparsify(model, 0.5, include=r"layer\.0\.")
    assert len(results) == 6 and all(".layer.0." in r.name for r in results)
    # node names match too
    _, results = sparsify(model, 0.5, include="^/pooler/dense/Gemm$")
    assert [r.name for r in results] == ["pooler.dense.weight"]
    pruned, results = sparsify(model, 0.5, exclude="classifier|pooler")
    assert len(results) == 12 and not any("classifier" in r.name for r in results)
    assert not np.any(_arrays(pruned)["classifier.weight"] == 0)
    _, results = sparsify(model, 0.5, include="attention", exclude="self")
    assert [r.name for r in results] == [
        "encoder.layer.0.attention.output.dense.weight",
        "encoder.layer.1.attention.output.dense.weight",
    ]


def test_input_model_is_not_modified(model_zoo):
    path, model = model_zoo.get("mlp", 0.0)
    blob = model.SerializeToString()
    file_hash = _sha256(path)
    sparsify(model, 0.9)
    sparsify(model, 0.9, scope="global")
    assert model.SerializeToString() == blob
    assert _sha256(path) == file_hash


def test_already_sparser_weights_are_left_alone(model_zoo):
    _, model = model_zoo.get("mlp", 0.9)
    pruned, results = sparsify(model, 0.8)
    assert pruned.SerializeToString() == model.SerializeToString()
    assert all(r.sparsity_after == r.sparsity_before >= 0.8 for r in results)
    assert all("already" in r.note for r in results)
    _, results = sparsify(model, 0.8, scope="global")
    assert all(r.sparsity_after == r.sparsity_before for r in results)
    _, results = sparsify(model, 0.95)
    assert all(r.sparsity_after >= 0.95 and not r.note for r in results)


def test_sparsity_zero_changes_nothing(model_zoo):
    _, model = model_zoo.get("mlp", 0.0)
    pruned, results = sparsify(model, 0.0)
    assert pruned.SerializeToString() == model.SerializeToString()
    assert all(r.sparsity_after == 0.0 and not r.note for r in results)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_dtypes(ort_run, tmp_path, dtype):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((16, 12)).astype(dtype)
    pruned, (r,) = sparsify(_weight("w", w), 0.75)
    out = _arrays(pruned)["w"]
    assert out.dtype == dtype and int(np.count_nonzero(out == 0)) == 144
    assert r.sparsity_after == 0.75
    path = tmp_path / "m.onnx"
    onnx.save_model(pruned, str(path))
    x = rng.standard_normal((3, 16)).astype(dtype)
    (y,) = ort_run(path, {"x": x})
    assert y.shape == (3, 12) and y.dtype == dtype


def test_quantized_weights_are_skipped_with_a_note():
    model = _mixed_model()
    pruned, results = sparsify(model, 0.5)
    by_name = {r.name: r for r in results}
    q = by_name["q_w"]
    assert "quantized" in q.note and q.sparsity_after == q.sparsity_before
    np.testing.assert_array_equal(_arrays(pruned)["q_w"], _arrays(model)["q_w"])
    for name in ("shared", "gemm_a", "conv_w", "deconv_w"):
        assert by_name[name].sparsity_after >= 0.5
    const = next(n for n in pruned.graph.node if n.op_type == "Constant")
    cw = numpy_helper.to_array(const.attribute[0].t)
    assert int(np.count_nonzero(cw == 0)) == 32
    with pytest.raises(ConfigError, match="quantized"):
        sparsify(model, 0.5, include="^q_w$")


# ---- the pruned model runs ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "bert", "convnet"])
def test_pruned_model_runs_and_uses_sparse_kernels(model_zoo, ort_run, tmp_path, name):
    path, model = model_zoo.get(name, 0.0)
    dst = tmp_path / f"{name}-pruned.onnx"
    results = sparsify_file(path, dst, 0.8)
    feeds = om.sample_inputs(model, 2, 9 if name == "bert" else None)
    ref = ort_run(path, feeds)
    out = ort_run(dst, feeds)
    assert [o.shape for o in out] == [r.shape for r in ref]
    assert all(np.all(np.isfinite(o)) for o in out)
    assert any(not np.allclose(o, r) for o, r in zip(out, ref))
    report = Engine(dst).sparsity_report()
    assert report
    for entry in report:
        if entry["sparsity"] >= 0.5:
            assert entry["kernel"] == "sparse", entry
    pruned_nodes = {n for r in results for n in r.nodes}
    sparse = [e for e in report if e["kernel"] == "sparse"]
    for e in sparse:  # the engine may suffix the node name (".ab", ".einsum")
        assert any(e["node"] == n or e["node"].startswith(n + ".") for n in pruned_nodes), e
    if name != "convnet":  # 3x3 convolutions are not in the matmul report
        assert len(sparse) == len(results)


# ---- files --------------------------------------------------------------------------------------


def test_sparsify_file_refuses_to_overwrite(model_zoo, tmp_path):
    path, _ = model_zoo.get("mlp", 0.0)
    src = tmp_path / "model.onnx"
    src.write_bytes(path.read_bytes())
    digest = _sha256(src)
    for same in (src, tmp_path / "." / "model.onnx", tmp_path / "sub" / ".." / "model.onnx"):
        with pytest.raises(ConfigError, match="refusing to overwrite the input model"):
            sparsify_file(src, same, 0.5, overwrite=True)
    link = tmp_path / "link.onnx"
    os.symlink(src, link)
    with pytest.raises(ConfigError, match="refusing to overwrite the input model"):
        sparsify_file(src, link, 0.5, overwrite=True)
    assert _sha256(src) == digest

    dst = tmp_path / "out.onnx"
    dst.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="already exists"):
        sparsify_file(src, dst, 0.5)
    assert dst.read_bytes() == b"keep me"
    results = sparsify_file(src, dst, 0.5, overwrite=True)
    assert all(r.sparsity_after >= 0.5 for r in results)
    assert all(w.sparsity >= 0.5 for w in prunable_weights(onnx.load(str(dst))))
    assert _sha256(src) == digest
    with pytest.raises(ConfigError, match="is a directory"):
        sparsify_file(src, tmp_path, 0.5)


def test_sparsify_file_bad_sources(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        sparsify_file(tmp_path / "missing.onnx", tmp_path / "out.onnx", 0.5)
    for i, blob in enumerate((b"", b"this is not a protobuf \xff\xfe\x00\x01", b"\x08\x07")):
        bad = tmp_path / f"bad{i}.onnx"
        bad.write_bytes(blob)
        with pytest.raises(ModelLoadError):
            sparsify_file(bad, tmp_path / "out.onnx", 0.5)
    assert not (tmp_path / "out.onnx").exists()


def test_failed_write_leaves_nothing(model_zoo, tmp_path, monkeypatch):
    path, _ = model_zoo.get("mlp", 0.0)
    out = tmp_path / "out"
    out.mkdir()

    def broken_save(model, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        sparsify_file(path, out / "m.onnx", 0.5)
    assert list(out.iterdir()) == []


def test_external_data_models(model_zoo, ort_run, tmp_path):
    _, model = model_zoo.get("mlp", 0.0)
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = src_dir / "model.onnx"
    onnx.save_model(
        model,
        str(src),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    digests = {p.name: _sha256(p) for p in src_dir.iterdir()}
    dst = tmp_path / "out" / "pruned.onnx"
    results = sparsify_file(src, dst, 0.8)
    assert {p.name for p in dst.parent.iterdir()} == {"pruned.onnx", "pruned.onnx.data"}
    assert {p.name: _sha256(p) for p in src_dir.iterdir()} == digests
    loaded = onnx.load(str(dst))
    assert all(w.sparsity >= 0.8 for w in prunable_weights(loaded))
    assert len(results) == 4
    feeds = om.sample_inputs(model, 3)
    assert ort_run(dst, feeds)[0].shape == ort_run(src, feeds)[0].shape
    # a ModelProto whose external data was not loaded cannot be read
    unloaded = onnx.load(str(src), load_external_data=False)
    with pytest.raises(ModelLoadError, match="load_external_data=True"):
        sparsify(unloaded, 0.5)


def test_models_beyond_the_protobuf_limit_get_external_data(
    model_zoo, ort_run, tmp_path, monkeypatch
):
    import sparsepipe.sparsify.files as sp

    path, model = model_zoo.get("mlp", 0.0)
    monkeypatch.setattr(sp, "_PROTOBUF_LIMIT", 1000)
    dst = tmp_path / "big.onnx"
    sparsify_file(path, dst, 0.5)
    assert (tmp_path / "big.onnx.data").stat().st_size > 1000
    assert dst.stat().st_size < 5000
    feeds = om.sample_inputs(model, 2)
    assert ort_run(dst, feeds)[0].shape == (2, 10)


# ---- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.5", True, None])
def test_invalid_sparsity(model_zoo, bad):
    _, model = model_zoo.get("mlp", 0.0)
    with pytest.raises(ConfigError, match="sparsity"):
        sparsify(model, bad)


def test_invalid_options(model_zoo, tmp_path):
    path, model = model_zoo.get("mlp", 0.0)
    with pytest.raises(ConfigError, match="scope"):
        sparsify(model, 0.5, scope="layer")
    with pytest.raises(ConfigError, match=r"include .*'fc\['"):
        sparsify(model, 0.5, include="fc[")
    with pytest.raises(ConfigError, match=r"exclude .*'\(x'"):
        sparsify(model, 0.5, exclude="(x")
    with pytest.raises(ConfigError, match="no weight selected: include='nothing'"):
        sparsify(model, 0.5, include="nothing")
    with pytest.raises(ConfigError, match="no weight selected: exclude='fc'"):
        sparsify(model, 0.5, exclude="fc")
    # options are checked before the model is read or anything is written
    with pytest.raises(ConfigError):
        sparsify_file(path, tmp_path / "o.onnx", 2.0)
    assert not (tmp_path / "o.onnx").exists()
    relu = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [],
    )
    with pytest.raises(ConfigError, match="no prunable weights"):
        sparsify(relu, 0.5)


# ---- deployment files and accuracy --------------------------------------------------------------


def test_copy_deployment_files(model_zoo, tmp_path):
    path, _ = model_zoo.get("mlp", 0.0)
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(path.read_bytes())
    (src / "config.json").write_text('{"a": 1}')
    (src / "vocab.txt").write_text("[PAD]\n")
    (src / "notes.md").write_text("not copied")
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    copied = copy_deployment_files(src / "model.onnx", out / "pruned.onnx")
    assert copied == [out / "vocab.txt"]
    assert (out / "config.json").read_text() == '{"mine": true}'
    assert not (out / "notes.md").exists()
    assert copy_deployment_files(src / "model.onnx", src / "pruned.onnx") == []


class _FakePipeline:
    """Answers `answer(text)` for each text, like a text-classification pipeline."""

    def __init__(self, answer):
        self.answer = answer
        self.config = {"id2label": {"0": "negative", "1": "positive"}}

    def __call__(self, texts):
        return SimpleNamespace(labels=[self.answer(t) for t in texts])


def test_evaluate_accuracy(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"text": "good", "label": "positive"}\n'
        "\n"
        '{"text": "bad", "label": 0}\n'
        '{"text": "meh", "label": "positive"}\n'
        '{"text": "fine", "label": 1}\n'
    )
    pipe = _FakePipeline(lambda t: "negative" if t in ("bad", "meh") else "positive")
    assert evaluate_accuracy(pipe, data) == 0.75
    assert evaluate_accuracy(pipe, data, limit=2) == 1.0
    other = tmp_path / "o.jsonl"
    other.write_text('{"sentence": "good", "y": "positive"}\n')
    assert evaluate_accuracy(pipe, other, text_field="sentence", label_field="y") == 1.0
    with pytest.raises(ConfigError, match="limit"):
        evaluate_accuracy(pipe, data, limit=0)


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"text": "a", "label": 1}', "{not json"], "line 2: not valid JSON"),
        (['{"text": "a", "label": 1}', "", '["a", 1]'], "line 3: expected a JSON object"),
        (['{"label": 1}'], "line 1: no 'text' field"),
        (['{"text": "a"}'], "line 1: no 'label' field"),
        (['{"text": 5, "label": 1}'], "line 1: 'text' must be a string"),
        (['{"text": "a", "label": null}'], "line 1: 'label' must be"),
        ([""], "holds no examples"),
    ],
)
def test_evaluate_accuracy_bad_files(tmp_path, lines, message):
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=message):
        evaluate_accuracy(_FakePipeline(lambda t: "x"), data)
    with pytest.raises(InputError, match="cannot read"):
        evaluate_accuracy(_FakePipeline(lambda t: "x"), tmp_path / "missing.jsonl")


def test_real_model_per_layer_leaves_sparse_layers(shared_dir, tmp_path):
    src = shared_dir / "models" / "sentiment-minilm-sparse80" / "model.onnx"
    digest = _sha256(src)
    results = sparsify_file(src, tmp_path / "m.onnx", 0.8)
    dense = [r for r in results if r.sparsity_before < 0.5]
    assert {r.name for r in dense} == {"m.bert.pooler.dense.weight", "m.classifier.weight"}
    assert all(r.sparsity_after >= 0.8 for r in dense)
    assert all(r.sparsity_after == r.sparsity_before for r in results if r not in dense)
    assert results[0].display_name == "/m/bert/encoder/layer.0/attention/self/query/MatMul"
    assert _sha256(src) == digest


def test_public_names():
    import sparsepipe.sparsify as sp

    for name in (
        "DEPLOYMENT_FILES",
        "LayerResult",
        "WeightInfo",
        "copy_deployment_files",
        "evaluate_accuracy",
        "label_accuracy",
        "load_examples",
        "prunable_weights",
        "sparsify",
        "sparsify_file",
    ):
        assert name in sp.__all__ and getattr(sp, name).__doc__, name
