"""Every graph in tests/data/exporters (tiny random-weight Hugging Face models exported by
transformers 4.x and 5.x with torch's legacy and dynamo exporters; see tools/export_models.py)
loads and matches onnxruntime, dense and with 90% of its weights pruned by `sparsepipe.sparsify`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sparsepipe
from sparsepipe.sparsify import sparsify_file

pytest.importorskip("onnx")

DATA = Path(__file__).resolve().parent / "data" / "exporters"
MANIFEST = json.loads((DATA / "manifest.json").read_text()) if DATA.is_dir() else {"models": []}
MODELS = {m["name"]: m for m in MANIFEST["models"]}
BATCH, SEQUENCE = 2, 7


def _dim(d: Any, axis: int) -> int:
    if isinstance(d, int) and d > 0:
        return d
    return BATCH if axis == 0 else SEQUENCE


def sample_feeds(entry: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for a manifest entry: valid token ids, a padded attention mask, random images."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in entry["inputs"]:
        shape = [_dim(d, i) for i, d in enumerate(spec["shape"])]
        name, dtype = spec["name"], np.dtype(spec["dtype"])
        if name == "attention_mask":
            value = np.ones(shape, dtype)
            if shape[0] > 1 and shape[-1] > 2:
                value[1, -2:] = 0
        elif name == "token_type_ids":
            value = rng.integers(0, entry.get("type_vocab_size") or 1, shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            value = rng.integers(5, entry["vocab_size"], shape).astype(dtype)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        feeds[name] = value
    return feeds


def test_the_corpus_is_there_and_covers_the_exporters():
    assert DATA.is_dir(), f"{DATA} is missing: run tools/export_models.py"
    names = set(MODELS)
    assert len(names) >= 40
    exporters = {(m["transformers"].split(".")[0], m["exporter"]) for m in MODELS.values()}
    assert {("4", "legacy"), ("5", "legacy"), ("5", "dynamo")} <= exporters
    assert {m["opset"] for m in MODELS.values()} >= {14, 17, 20}
    assert any(m["external_data"] for m in MODELS.values())
    heads = {m["head"] for m in MODELS.values()}
    assert heads == {
        "sequence-classification",
        "token-classification",
        "question-answering",
        "image-classification",
    }


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("pruned")


def _compare(path: Path, entry: dict[str, Any], ort_run, assert_close, what: str) -> None:
    feeds = sample_feeds(entry)
    ref = ort_run(path, feeds)
    engine = sparsepipe.Engine(path, num_threads=1)
    assert_close(engine.run(feeds), ref, context=f"{entry['name']} ({what})")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_loads_and_matches_onnxruntime(name, ort_run, assert_close):
    entry = MODELS[name]
    _compare(DATA / entry["path"], entry, ort_run, assert_close, "dense")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_90_percent_pruned_matches_onnxruntime(name, pruned_dir, ort_run, assert_close):
    entry = MODELS[name]
    out = pruned_dir / name / "model.onnx"
    results = sparsify_file(DATA / entry["path"], out, 0.9)
    assert results, "no prunable weights found"
    assert (out.parent / "model.onnx.data").exists() == entry["external_data"]
    _compare(out, entry, ort_run, assert_close, "90% pruned")
    engine = sparsepipe.Engine(out, num_threads=2)
    if entry["head"] != "image-classification":
        assert any(r["kernel"] == "sparse" for r in engine.sparsity_report()), (
            "no weight runs on the sparse kernel"
        )


ORT_OPTIMIZED = [
    "tf5-legacy-op17-bert-seqcls",
    "tf5-legacy-op17-distilbert-qa",
    "tf5-legacy-op17-albert-tokcls",
    "tf5-legacy-op17-roberta-seqcls",
    "tf5-legacy-op17-vit-imgcls",
    "tf4-legacy-op14-bert-seqcls",
]


@pytest.mark.parametrize("name", [n for n in ORT_OPTIMIZED if n in MODELS])
def test_graphs_optimised_by_onnxruntime_run(name, tmp_path, ort_run, assert_close):
    """onnxruntime's extended graph optimizations write com.microsoft FusedMatMul, FusedGemm,
    BiasGelu/FastGelu, ...: sparsepipe runs the saved graph and matches onnxruntime."""
    import onnx
    import onnxruntime as ort

    entry = MODELS[name]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "model.onnx")
    ort.InferenceSession(str(DATA / entry["path"]), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "model.onnx"))
    contrib = {n.op_type for n in optimized.graph.node if n.domain == "com.microsoft"}
    assert contrib, "onnxruntime fused nothing; the test needs a graph with contrib operators"
    _compare(tmp_path / "model.onnx", entry, ort_run, assert_close, f"ORT-optimised {contrib}")
