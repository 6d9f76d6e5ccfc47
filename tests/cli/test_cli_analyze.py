"""``sparsepipe analyze`` and ``Engine.profile``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sparsepipe import ConfigError, Engine, InputError
from sparsepipe.cli import main
from sparsepipe.cli.analyze import analyze


@pytest.fixture(scope="module")
def bert(model_zoo):
    path, _ = model_zoo.get("bert", 0.9)
    return path


def test_profile_times_every_plan_node(bert):
    import onnx_models

    engine = Engine(bert)
    feeds = onnx_models.sample_inputs("bert", 2, 16)
    nodes = engine.profile(feeds, iterations=3)
    assert nodes and all(n["seconds"] >= 0 for n in nodes)
    assert {"name", "op", "seconds", "output_elements"} <= set(nodes[0])
    sparse = [n for n in nodes if n["op"] in ("SparsepipeLinear", "SparsepipeChainedLinear")]
    report = engine.sparsity_report()
    # One plan node per sparse weight, except each attention's q/k/v: one for the three (named
    # after them, with `.residual` when the node also adds a residual connection).
    plan_nodes = {r["plan_node"] for r in report if r["kernel"] == "sparse"}
    assert sorted(n["name"] for n in sparse) == sorted(plan_nodes)
    merged = [r for r in report if r["plan_node"] != r["node"]]
    qkv = [r for r in merged if r["plan_node"].endswith(".qkv")]
    assert len(qkv) == 3 * len(engine.fused_ops()["qkv_projection"]) > 0
    assert all(r["plan_node"].endswith((".qkv", ".residual", ".chain")) for r in merged)
    chains = [r for r in merged if r["plan_node"].endswith(".chain")]
    assert len(chains) == 2 * len(engine.fused_ops()["linear_chain"]) > 0
    assert all(
        r["plan_node"].startswith(r["node"]) or r["plan_node"].endswith((".qkv", ".chain"))
        for r in merged
    )
    with pytest.raises(ConfigError, match="iterations"):
        engine.profile(feeds, iterations=0)
    with pytest.raises(InputError):
        engine.profile({"input_ids": feeds["input_ids"]})


def test_analyze_report(bert, tmp_path, capsys):
    result = analyze(str(bert), batch_size=1, sequence_length=16, iterations=2)
    report = Engine(bert).sparsity_report()
    assert len(result["layers"]) == len(report)
    shares = [layer["time_share"] for layer in result["layers"]]
    assert all(0 <= s <= 1 for s in shares) and 0 < sum(shares) <= 1 + 1e-9
    assert 0 < result["gflops_effective"] < result["gflops_dense"]
    sparse = [layer for layer in result["layers"] if layer["kernel"] == "sparse"]
    assert sparse and all(layer["sparsity"] >= 0.5 for layer in sparse)
    # Every weight gets time, those computed together (q/k/v) their share of it.
    assert all(layer["ms"] > 0 for layer in sparse)
    assert any(layer["plan_node"] != layer["node"] for layer in sparse)
    # 16 rows through each encoder weight, however many weights one plan node computes.
    for layer in (x for x in result["layers"] if "/encoder/" in x["node"]):
        want = 2 * 16 * math.prod(layer["shape"]) / 1e9
        assert layer["gflops_dense"] == pytest.approx(want), layer
    out = tmp_path / "analysis.json"
    assert (
        main(
            [
                "analyze",
                str(bert),
                "--sequence-length",
                "16",
                "--iterations",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "weight matmul" in text and "G effective" in text
    saved = json.loads(out.read_text())
    assert saved["layers"]
    assert saved["fused_ops"]["attention"] == saved["fused_ops"]["qkv_projection"] > 0
    assert f"fused ops: attention {saved['fused_ops']['attention']}," in text
    # Each candidate left unfused is listed with its reason, grouped by kind and reason.
    for miss in saved["fusion_misses"]:
        assert set(miss) == {"kind", "node", "reason", "related"}
        assert f"{miss['kind']} x" in text and miss["reason"] in text


def test_analyze_names_the_option_that_would_fuse_more(model_zoo, capsys):
    dense, _ = model_zoo.get("bert", 0.0)
    args = ["analyze", str(dense), "--sequence-length", "8", "--iterations", "1"]
    assert main([*args, "--dense-backend", "tract"]) == 0
    text = capsys.readouterr().out
    assert "not fused (" in text and "load with dense_backend='sparsepipe'" in text
    result = analyze(str(dense), sequence_length=8, iterations=1, dense_backend="sparsepipe")
    assert result["fused_ops"]["qkv_projection"] > 0
    assert not any("dense_backend" in m["reason"] for m in result["fusion_misses"])
    assert main([*args, "--dense-backend", "onnx"]) == 1
    assert "dense_backend" in capsys.readouterr().err


def test_analyze_lists_unsupported_operators(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("FancyOp", ["x"], ["y"], name="my_fancy_node", domain="com.example")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    model.ir_version = 8
    path = tmp_path / "fancy.onnx"
    onnx.save(model, str(path))
    assert main(["analyze", str(path)]) == 1
    err = capsys.readouterr().err
    assert "FancyOp" in err and "my_fancy_node" in err


def test_analyze_bad_options(bert, capsys):
    assert main(["analyze", str(bert), "--iterations", "0"]) == 1
    assert "iterations" in capsys.readouterr().err
    assert main(["analyze", "/nonexistent.onnx"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_profile_on_real_model_is_consistent(shared_dir):
    engine = Engine(shared_dir / "models" / "sentiment-minilm-sparse80")
    ids = np.random.default_rng(0).integers(1000, 5000, (1, 24))
    nodes = engine.profile([ids, np.ones_like(ids), np.zeros_like(ids)], iterations=2)
    out = engine([ids, np.ones_like(ids), np.zeros_like(ids)])
    assert out[0].shape == (1, 2) and len(nodes) > 50
