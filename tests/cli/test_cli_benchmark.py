"""``sparsepipe benchmark``: pipelines and bare models, sync and async, JSON export, validation."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sparsepipe import ConfigError, ModelLoadError, __version__
from sparsepipe.cli import benchmark
from sparsepipe.cli.benchmark import measure, random_engine_inputs, run_benchmark
from sparsepipe.tasks import _examples

FAST = {"seconds": 0.3, "warmup": 0.1}
FAST_ARGS = ["--time", "0.3", "--warmup", "0.1"]

CONFIG_KEYS = {
    "target",
    "kind",
    "task",
    "model",
    "engine",
    "batch_size",
    "sequence_length",
    "num_threads",
    "scenario",
    "streams",
    "time",
    "warmup",
    "inputs",
    "cpu",
    "cpu_count",
    "sparsepipe_version",
    "python",
}
RESULT_KEYS = {
    "items_per_second",
    "calls_per_second",
    "calls",
    "items",
    "elapsed_s",
    "latency_ms",
    "stages_ms",
}
LATENCY_KEYS = {"mean", "p50", "p90", "p99", "min", "max", "std"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsepipe")
    sub = parser.add_subparsers(dest="command")
    benchmark.add_parser(sub)
    return parser


def _cli(*argv: str) -> int:
    args = _parser().parse_args(["benchmark", *argv])
    return args.func(args)


def _check_sane(result: dict, *, batch: int = 1, streams: int = 1, stages: bool) -> None:
    assert set(result) == {"config", "results"}
    config, r = result["config"], result["results"]
    assert set(config) >= CONFIG_KEYS
    assert set(r) >= RESULT_KEYS
    assert set(r["latency_ms"]) == LATENCY_KEYS
    assert config["batch_size"] == batch and config["streams"] == streams
    assert config["sparsepipe_version"] == __version__ and config["cpu"]
    assert config["num_threads"] >= 1
    assert r["calls"] >= streams and r["items"] == r["calls"] * batch
    assert r["items_per_second"] > 0 and math.isfinite(r["items_per_second"])
    assert r["elapsed_s"] >= config["time"] * 0.9
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]
    if stages:
        st = r["stages_ms"]
        assert set(st) == {"pre", "engine", "post", "total"}
        assert all(v >= 0 for v in st.values()) and st["engine"] > 0
        assert st["pre"] + st["engine"] + st["post"] == pytest.approx(st["total"], rel=1e-6)
        assert st["total"] <= lat["mean"] * 1.01
    else:
        assert r["stages_ms"] is None


def test_sync_pipeline_through_the_parser_with_json_export(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert _cli("sentiment-analysis", *FAST_ARGS, "--export-json", str(out)) == 0
    captured = capsys.readouterr()
    assert "items/s" in captured.out and "p99" in captured.out and "pre " in captured.out
    assert "text-classification" in captured.out
    assert "warmup" in captured.err and f"wrote {out}" in captured.err  # progress on stderr
    result = json.loads(out.read_text())
    _check_sane(result, stages=True)
    c = result["config"]
    assert c["target"] == "sentiment-analysis" and c["task"] == "text-classification"
    assert c["kind"] == "pipeline" and c["engine"] == "sparsepipe" and c["scenario"] == "sync"
    assert c["model"] == "zoo:sentiment-minilm-sparse80"
    assert c["time"] == 0.3 and c["warmup"] == 0.1
    assert "32 tokens" in c["inputs"]


def test_quiet_prints_only_the_report(capsys):
    assert _cli("sentiment-analysis", *FAST_ARGS, "--quiet") == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith("sparsepipe ") and "latency" in captured.out


def test_async_pipeline_batches_and_streams():
    result = run_benchmark(
        "sentiment-analysis", scenario="async", streams=2, batch_size=3, sequence_length=16, **FAST
    )
    _check_sane(result, batch=3, streams=2, stages=True)
    assert result["config"]["scenario"] == "async"
    assert result["config"]["sequence_length"] == 16


def test_raw_onnx_file_sync(shared_dir):
    path = shared_dir / "models" / "sentiment-minilm-sparse80" / "model.onnx"
    result = run_benchmark(str(path), sequence_length=32, batch_size=2, **FAST)
    _check_sane(result, batch=2, stages=False)
    c = result["config"]
    assert c["kind"] == "engine" and c["task"] is None and c["model"] == str(path)
    assert c["input_shapes"] == {
        n: [2, 32] for n in ("input_ids", "attention_mask", "token_type_ids")
    }


def test_raw_model_directory_async(model_zoo):
    path, _ = model_zoo.get("mlp", 0.8)
    result = run_benchmark(str(path), scenario="async", streams=3, **FAST)
    _check_sane(result, streams=3, stages=False)
    assert result["config"]["input_shapes"] == {"x": [1, 37]}


def test_onnxruntime_engine_through_the_parser(shared_dir, tmp_path, capsys):
    model_dir = shared_dir / "models" / "sentiment-minilm-sparse80"
    out = tmp_path / "ort.json"
    argv = [str(model_dir), "--engine", "onnxruntime", "--sequence-length", "32", "--quiet"]
    assert _cli(*argv, *FAST_ARGS, "--num-threads", "1", "--export-json", str(out)) == 0
    assert "onnxruntime engine" in capsys.readouterr().out
    result = json.loads(out.read_text())
    _check_sane(result, stages=False)
    assert result["config"]["engine"] == "onnxruntime" and result["config"]["num_threads"] == 1


def test_onnxruntime_pipeline():
    result = run_benchmark("sentiment-analysis", engine_type="onnxruntime", **FAST)
    _check_sane(result, stages=True)
    assert result["config"]["engine"] == "onnxruntime"


def test_image_task_with_model_path(shared_dir, capsys):
    model = shared_dir / "models" / "efficientnet-lite0-imagenet"
    argv = ["image-classification", "--model-path", str(model), "--batch-size", "2", "--quiet"]
    assert _cli(*argv, *FAST_ARGS) == 0
    out = capsys.readouterr().out
    assert "image-classification pipeline" in out and "image(s)" in out and "engine " in out


def test_image_task_uses_a_synthetic_image_without_samples(shared_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(_examples, "SAMPLE_IMAGES", tmp_path / "none")
    model = shared_dir / "models" / "efficientnet-lite0-imagenet"
    result = run_benchmark("image-classification", model_path=str(model), **FAST)
    _check_sane(result, stages=True)
    assert "synthetic 640x480 RGB" in result["config"]["inputs"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seconds": 0}, "time must be"),
        ({"seconds": -1.0}, "time must be"),
        ({"seconds": float("nan")}, "time must be"),
        ({"warmup": -0.5}, "warmup must be"),
        ({"scenario": "async", "streams": 0}, "streams must be"),
        ({"scenario": "async", "streams": 100_000}, "streams must be at most 256, got 100000"),
        ({"streams": 2}, "--scenario async"),
        ({"batch_size": 0}, "batch size must be"),
        ({"num_threads": 0}, "number of threads must be"),
        ({"sequence_length": 0}, "sequence length must be"),
        ({"scenario": "burst"}, "scenario must be one of"),
        ({"engine_type": "tensorrt"}, "engine must be one of"),
    ],
)
def test_invalid_options_raise_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        run_benchmark("sentiment-analysis", **{**FAST, **options})


def test_unknown_task_and_missing_model():
    with pytest.raises(ConfigError, match=r"unknown task 'sentimnet'.*registered tasks"):
        run_benchmark("sentimnet", **FAST)
    with pytest.raises(ModelLoadError, match="does not exist"):
        run_benchmark("no/such/model.onnx", **FAST)
    with pytest.raises(ConfigError, match="no embedded default model"):
        run_benchmark("question-answering", **FAST)
    with pytest.raises(ConfigError, match="--sequence-length applies to text tasks"):
        run_benchmark("yolo", model_path="unused", sequence_length=64, **FAST)


def test_parser_rejects_unknown_choices(capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["benchmark", "sentiment-analysis", "--scenario", "burst"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_random_engine_inputs_follow_names_and_shapes():
    names = ["input_ids", "attention_mask", "token_type_ids", "pixels", "flag"]
    shapes = [["batch", "seq"], ["batch", "seq"], ["batch", "seq"], ["n", 3, "h", "w"], [2]]
    dtypes = ["int64", "int64", "int32", "float32", "bool"]
    ids, mask, types, pixels, flag = random_engine_inputs(names, shapes, dtypes, 4, 16)
    assert ids.shape == (4, 16) and ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < 1000 and len(np.unique(ids)) > 1
    assert mask.shape == (4, 16) and (mask == 1).all()
    assert types.dtype == np.int32 and (types == 0).all()
    assert pixels.shape == (4, 3, 16, 16) and pixels.dtype == np.float32
    assert abs(float(pixels.mean())) < 0.2 and 0.8 < float(pixels.std()) < 1.2
    assert flag.shape == (2,) and flag.all()


def test_async_streams_overlap_calls_that_release_the_gil():
    def call() -> None:
        time.sleep(0.005)

    sync = measure(call, streams=1, seconds=0.3, warmup=0.0)
    four = measure(call, streams=4, seconds=0.3, warmup=0.0)
    assert len(four["latencies"]) > 2 * len(sync["latencies"])
    assert 0.3 <= sync["elapsed"] < 0.4


def test_errors_in_a_stream_propagate():
    calls = []

    def call() -> None:
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        measure(call, streams=2, seconds=5.0, warmup=0.0)


def test_async_raw_engine_at_128_tokens_in_a_subprocess(shared_dir):
    path = Path(shared_dir) / "models" / "sentiment-minilm-sparse80" / "model.onnx"
    code = (
        "import sys; from sparsepipe.cli.benchmark import run_benchmark; "
        f"run_benchmark({str(path)!r}, scenario='async', streams=2, seconds=0.5, warmup=0.1)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "RUST_BACKTRACE": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-500:]


def _register_rows_task(name: str, with_examples: bool):
    """A task over the test MLP (``rows`` of features in, class scores out)."""
    from pydantic import BaseModel
    from sparsepipe import Pipeline

    class RowsInput(BaseModel):
        rows: list[list[float]]

    class RowsOutput(BaseModel):
        best: list[int]

    class Rows(Pipeline):
        input_schema = RowsInput
        output_schema = RowsOutput

        def process_inputs(self, inputs):
            return [np.asarray(inputs.rows, np.float32)]

        def process_engine_outputs(self, engine_outputs, **kwargs):
            return RowsOutput(best=engine_outputs[0].argmax(axis=1).tolist())

        if with_examples:

            def example_inputs(self, batch_size, tokens=None):
                width = self.engine.input_shapes[0][1]
                return {"rows": [[0.5] * width] * batch_size}, f"{batch_size} rows of 0.5"

    Pipeline.register(name)(Rows)


def test_a_registered_task_benchmarks_on_the_inputs_it_declares(model_zoo):
    path, _ = model_zoo.get("mlp", 0.0)
    _register_rows_task("rows-with-examples", with_examples=True)
    result = run_benchmark("rows-with-examples", model_path=str(path), batch_size=3, **FAST)
    _check_sane(result, batch=3, stages=True)
    assert result["config"]["inputs"] == "3 rows of 0.5"
    assert result["config"]["task"] == "rows-with-examples"
    with pytest.raises(ConfigError, match="--sequence-length applies to text tasks"):
        run_benchmark("rows-with-examples", model_path=str(path), sequence_length=8, **FAST)


def test_a_task_without_example_inputs_is_a_config_error(model_zoo):
    path, _ = model_zoo.get("mlp", 0.0)
    _register_rows_task("rows-without-examples", with_examples=False)
    with pytest.raises(ConfigError, match="'rows-without-examples' does not generate example"):
        run_benchmark("rows-without-examples", model_path=str(path), **FAST)


def test_the_benchmark_names_no_task():
    from sparsepipe.pipeline import registered_tasks

    package = Path(benchmark.__file__).resolve().parents[1]
    names = [n for task, aliases in registered_tasks().items() for n in (task, *aliases)]
    assert "question-answering" in names
    text = (package / "cli" / "benchmark.py").read_text()
    for name in names:
        for quoted in (f'"{name}"', f"'{name}'"):
            assert quoted not in text, f"benchmark.py names task {name}"
