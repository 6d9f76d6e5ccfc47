"""Softmax over an axis that is not the innermost (YOLOv8's distribution-focal head) on
sparsepipe's kernel, against onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sparsepipe

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_softmax_axis_matches_onnxruntime(
    axis: int,
    tmp_path: Path,
    ort_run: Callable[..., list[np.ndarray]],
    assert_close: Callable[..., None],
) -> None:
    """Every axis of a [batch, 16, 4, 37] tensor; all but the last run on our kernel."""
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=axis)],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16, 4, 37])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "softmax.onnx"
    onnx.save(model, path)
    engine = sparsepipe.Engine(str(path), num_threads=2)
    ops = [p["op"] for p in engine.profile([np.zeros((2, 16, 4, 37), np.float32)], iterations=1)]
    assert ("SparsepipeSoftmax" in ops) == (axis not in (-1, 3)), ops
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 16, 4, 37)).astype(np.float32) * 4
        assert_close(list(engine([x])), ort_run(path, {"x": x}), ["y"], context=f"axis {axis}")
