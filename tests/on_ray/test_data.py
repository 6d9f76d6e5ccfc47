"""Ray Data batch inference: `PipelinePredictor` in ``map_batches`` equals the in-process pipeline
(order kept) in pandas and numpy batch formats, and ``sparsepipe batch --ray-address local``
writes what the in-process run writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sparsepipe import ConfigError, Pipeline
from sparsepipe.cli import main
from sparsepipe.ray import PipelinePredictor

pd = pytest.importorskip("pandas")
ray = pytest.importorskip("ray")

KWARGS = {"task": "text-classification", "input_column": "text"}


@pytest.fixture(scope="module")
def samples(shared_dir) -> list[dict]:
    with open(shared_dir / "samples" / "sentiment_sample.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def expected(samples) -> Any:
    """The in-process pipeline's output for the 200 samples."""
    return Pipeline.create("text-classification")(sequences=[s["text"] for s in samples])


@pytest.fixture
def ordered(ray_cluster: Any) -> Iterator[Any]:
    """Ray Data with ``preserve_order`` on (restored afterwards)."""
    context = ray_cluster.data.DataContext.get_current()
    before = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    yield ray_cluster
    context.execution_options.preserve_order = before


def _check(rows: list[dict], samples: list[dict], expected: Any) -> None:
    assert [r["id"] for r in rows] == list(range(len(rows)))
    for r in rows:
        i = r["id"] % len(samples)
        assert r["text"] == samples[i]["text"] and r["label"] == samples[i]["label"]
        assert r["labels"] == expected.labels[i] and r["error"] is None
        assert r["scores"] == pytest.approx(expected.scores[i], rel=1e-5, abs=1e-6)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_data_2000_sentences_equal_the_pipeline_in_order(ordered, samples, expected):
    items = [{"id": i, **samples[i % len(samples)]} for i in range(2000)]
    ds = ordered.data.from_items(items, override_num_blocks=20).map_batches(
        PipelinePredictor,
        fn_constructor_kwargs=KWARGS,
        batch_size=100,
        compute=ordered.data.ActorPoolStrategy(size=2),
        num_cpus=1,
    )
    rows = ds.take_all()
    assert len(rows) == 2000
    assert list(rows[0]) == ["id", "text", "label", "labels", "scores", "error"]
    _check(rows, samples, expected)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_data_pandas_batches_and_recorded_errors(ordered, samples, expected):
    frame = pd.DataFrame([{"id": i, **samples[i]} for i in range(60)])
    frame.loc[5, "text"] = None
    ds = ordered.data.from_pandas(frame).map_batches(
        PipelinePredictor,
        fn_constructor_kwargs=KWARGS,
        batch_size=25,
        batch_format="pandas",
        compute=ordered.data.ActorPoolStrategy(size=1),
        num_cpus=1,
    )
    out = ds.to_pandas()
    assert list(out.columns) == ["id", "text", "label", "labels", "scores", "error"]
    rows = out.to_dict("records")
    bad = rows.pop(5)
    assert "valid string" in bad["error"] and pd.isna(bad["labels"])
    for r in rows:
        r["error"] = None if pd.isna(r["error"]) else r["error"]
    assert [r["id"] for r in rows] == [i for i in range(60) if i != 5]
    for r in rows:
        i = r["id"]
        assert r["labels"] == expected.labels[i] and r["error"] is None
        assert r["scores"] == pytest.approx(expected.scores[i], rel=1e-5, abs=1e-6)


def test_predictor_on_a_pandas_batch(samples, expected):
    predictor = PipelinePredictor(**KWARGS, on_error="skip")
    frame = pd.DataFrame({"text": [s["text"] for s in samples[:4]], "n": [1, 2, 3, 4]})
    frame.index = [10, 11, 12, 13]
    frame.loc[11, "text"] = None
    out = predictor(frame)
    assert list(out.index) == [10, 12, 13] and list(out["n"]) == [1, 3, 4]
    assert list(out.columns) == ["text", "n", "labels", "scores"]
    assert list(out["labels"]) == [expected.labels[i] for i in (0, 2, 3)]
    assert predictor.output_columns == ["labels", "scores"]


def test_predictor_on_a_numpy_batch(samples, expected):
    predictor = PipelinePredictor(**KWARGS)
    batch = {
        "text": np.array([s["text"] for s in samples[:3]], dtype=object),
        "id": np.arange(3),
    }
    out = predictor(batch)
    assert list(out) == ["text", "id", "labels", "scores", "error"]
    assert out["id"].tolist() == [0, 1, 2]
    assert out["labels"].tolist() == expected.labels[:3]
    assert out["scores"].dtype == np.float64
    assert out["scores"].tolist() == pytest.approx(expected.scores[:3], rel=1e-5)
    assert out["error"].tolist() == [None, None, None]
    skipping = PipelinePredictor(**KWARGS, on_error="skip")
    kept = skipping({"text": np.array(["good", None, "bad"], dtype=object), "id": np.arange(3)})
    assert kept["id"].tolist() == [0, 2] and list(kept) == ["text", "id", "labels", "scores"]
    assert skipping({"text": np.array([None], dtype=object)})["labels"].tolist() == []
    unicode = predictor({"text": np.array(["good", "bad"])})
    assert (
        unicode["labels"].tolist()
        == Pipeline.create("text-classification")(sequences=["good", "bad"]).labels
    )


def test_predictor_errors_are_clear():
    predictor = PipelinePredictor(**KWARGS)
    with pytest.raises(
        ConfigError, match=r"no column 'text' \(for input field 'sequences'\); its columns: body"
    ):
        predictor({"body": np.array(["x"])})
    with pytest.raises(ConfigError, match="pandas or numpy batches"):
        predictor([1, 2])
    with pytest.raises(ConfigError, match="on_error must be one of"):
        PipelinePredictor(**KWARGS, on_error="explode")
    with pytest.raises(ConfigError, match="unknown option"):
        PipelinePredictor(**KWARGS, colour="red")


@pytest.mark.ray
@pytest.mark.slow
def test_cli_batch_on_ray_equals_the_in_process_run(ray_cluster, tmp_path, samples, capsys):
    rows = [{"id": i, "text": samples[i]["text"], "meta": [i]} for i in range(45)]
    rows[7]["text"] = None
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    base = ["batch", "--task", "text-classification", "--quiet", "--input", str(src)]
    base += ["--column", "text", "--shard-size", "20"]
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main([*base, "--output", str(local)]) == 1
    capsys.readouterr()
    ray_args = ["--ray-address", "local", "--concurrency", "1", "--output", str(on_ray)]
    assert main([*base, *ray_args]) == 1
    err = capsys.readouterr().err
    assert "1 of 45 row(s) failed (1 recorded with their error)" in err, err
    assert ray_cluster.is_initialized()  # the command leaves a cluster it did not start
    want = [json.loads(line) for line in local.read_text().splitlines()]
    got = [json.loads(line) for line in on_ray.read_text().splitlines()]
    assert [r["id"] for r in got] == list(range(45))
    assert [list(r) for r in got] == [list(r) for r in want]
    assert got[7]["scores"] is None and "valid string" in got[7]["error"]
    for g, w in zip(got, want):
        if w["scores"] is not None:
            assert g["scores"] == pytest.approx(w["scores"], rel=1e-5, abs=1e-6)
            g["scores"] = w["scores"]
    assert got == want
    assert not (tmp_path / "ray.jsonl.shards").exists()


def test_an_unreachable_cluster_is_a_clear_error():
    from sparsepipe.ray.data import _check_reachable

    with pytest.raises(ConfigError, match=r"cannot reach the Ray cluster at '127\.0\.0\.1:1'"):
        _check_reachable("127.0.0.1:1")
    _check_reachable("auto")  # nothing to check: Ray finds the cluster itself
