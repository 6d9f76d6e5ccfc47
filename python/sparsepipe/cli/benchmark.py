"""``sparsepipe benchmark``: throughput and latency of a task pipeline or a bare ONNX model."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..errors import ConfigError

__all__ = [
    "BenchmarkTarget",
    "add_parser",
    "cpu_model",
    "format_report",
    "load_target",
    "measure",
    "random_engine_inputs",
    "run_benchmark",
]

SCENARIOS = ("sync", "async")
DEFAULT_TIME = 10.0
DEFAULT_WARMUP = 2.0
DEFAULT_ASYNC_STREAMS = 2
#: the most streams (threads) the async scenario runs
MAX_STREAMS = 256
#: length given to the non-batch symbolic dimensions of a bare model's inputs
DEFAULT_MODEL_SEQUENCE_LENGTH = 128
TOKEN_ID_HIGH = 1000


@dataclass
class BenchmarkTarget:
    """What one benchmark call runs: ``call()`` plus the facts the report states about it."""

    call: Callable[[], Any]
    kind: str
    items_per_call: int
    engine_type: str
    num_threads: Optional[int]
    model: str
    inputs: str
    task: Optional[str] = None
    stage_timings: Optional[Callable[[], Any]] = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---- validation ---------------------------------------------------------------------------------


def _check_positive_int(option: str, value: Any, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{option} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_seconds(option: str, value: Any, minimum_exclusive: bool) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    seconds = float(value) if ok else math.nan
    bound_ok = seconds > 0 if minimum_exclusive else seconds >= 0
    if not (ok and math.isfinite(seconds) and bound_ok):
        want = "> 0" if minimum_exclusive else ">= 0"
        raise ConfigError(f"{option} must be a finite number of seconds {want}, got {value!r}")
    return seconds


# ---- inputs -------------------------------------------------------------------------------------


def random_engine_inputs(
    names: list[str],
    shapes: list[list[Any]],
    dtypes: list[Optional[str]],
    batch_size: int = 1,
    sequence_length: int = DEFAULT_MODEL_SEQUENCE_LENGTH,
    id_high: int = TOKEN_ID_HIGH,
    seed: int = 0,
) -> list[np.ndarray]:
    """Random arrays of the declared shapes: symbolic batch = ``batch_size``, other symbols =
    ``sequence_length``; masks ones, token types zeros, ids in [0, id_high), floats N(0, 1)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for name, shape, dtype in zip(names, shapes, dtypes):
        dims = [
            int(d) if isinstance(d, int) else (batch_size if i == 0 else sequence_length)
            for i, d in enumerate(shape)
        ]
        dt = np.dtype(dtype or "float32")
        lower = name.lower()
        if dt.kind == "b":
            arr = np.ones(dims, dtype=dt)
        elif dt.kind in "iu":
            if "mask" in lower:
                arr = np.ones(dims, dtype=dt)
            elif "type" in lower or "segment" in lower:
                arr = np.zeros(dims, dtype=dt)
            elif "position" in lower and dims:
                arr = np.broadcast_to(np.arange(dims[-1]), dims).astype(dt)
            else:
                high = min(id_high, int(np.iinfo(dt).max) + 1)
                arr = rng.integers(0, high, size=dims).astype(dt)
        else:
            arr = rng.standard_normal(dims).astype(dt)
        arrays.append(np.ascontiguousarray(arr))
    return arrays


def _vocab_size(model: Any) -> Optional[int]:
    try:
        size = model.json("config.json").get("vocab_size")
    except Exception:
        return None
    return size if isinstance(size, int) and size > 0 else None


# ---- targets ------------------------------------------------------------------------------------


def _looks_like_model(target: str) -> bool:
    return (
        target.startswith(("zoo:", "hf:", ".", "~"))
        or "/" in target
        or os.sep in target
        or target.lower().endswith(".onnx")
        or os.path.exists(target)
    )


def load_target(
    target: str,
    *,
    model_path: Optional[str] = None,
    engine_type: str = "sparsepipe",
    batch_size: int = 1,
    sequence_length: Optional[int] = None,
    num_threads: Optional[int] = None,
) -> BenchmarkTarget:
    """The pipeline (task name or alias) or bare engine (model path) to benchmark, with inputs."""
    from .. import models
    from ..registry import lookup, normalize_task

    if not isinstance(target, str) or not target.strip():
        raise ConfigError("MODEL_OR_TASK must be a task name or a model path")
    if _looks_like_model(target):
        if model_path is not None:
            raise ConfigError(
                f"--model-path is for task benchmarks; {target!r} is already a model path"
            )
        return _engine_target(
            models.resolve(target), engine_type, batch_size, sequence_length, num_threads
        )
    try:
        reg = lookup(target)
    except ConfigError as e:
        raise ConfigError(f"{e}; or pass the path of an .onnx file or model directory") from e
    return _pipeline_target(
        reg,
        normalize_task(target),
        model_path,
        engine_type,
        batch_size,
        sequence_length,
        num_threads,
    )


def _engine_target(
    model: Any,
    engine_type: str,
    batch_size: int,
    sequence_length: Optional[int],
    num_threads: Optional[int],
) -> BenchmarkTarget:
    from ..engine import create_engine

    engine = create_engine(
        engine_type,
        model.onnx_path,
        batch_size=batch_size if engine_type == "sparsepipe" else None,
        num_threads=num_threads,
    )
    shapes = engine.input_shapes
    firsts = {s[0] for s in shapes if s}
    if firsts and all(isinstance(d, int) for d in firsts) and firsts != {batch_size}:
        fixed = ", ".join(str(d) for d in sorted(firsts))
        raise ConfigError(
            f"the model's inputs have a fixed batch of {fixed}; use --batch-size {fixed}"
        )
    seq = DEFAULT_MODEL_SEQUENCE_LENGTH if sequence_length is None else sequence_length
    vocab = _vocab_size(model)
    id_high = min(TOKEN_ID_HIGH, vocab) if vocab else TOKEN_ID_HIGH
    arrays = random_engine_inputs(
        engine.input_names, shapes, engine.input_dtypes, batch_size, seq, id_high
    )
    described = ", ".join(
        f"{n}{list(a.shape)} {a.dtype}" for n, a in zip(engine.input_names, arrays)
    )
    extra: dict[str, Any] = {
        "input_shapes": {n: list(a.shape) for n, a in zip(engine.input_names, arrays)}
    }
    if engine.isa is not None:
        extra["isa"] = engine.isa
    return BenchmarkTarget(
        call=lambda: engine.run(arrays),
        kind="engine",
        items_per_call=batch_size,
        engine_type=engine_type,
        num_threads=engine.num_threads,
        model=os.fspath(model.onnx_path),
        inputs="random " + described,
        extra=extra,
    )


def _pipeline_target(
    reg: Any,
    name: str,
    model_path: Optional[str],
    engine_type: str,
    batch_size: int,
    sequence_length: Optional[int],
    num_threads: Optional[int],
) -> BenchmarkTarget:
    from .. import Pipeline
    from ..pipeline import init_options

    task = reg.task
    kwargs: dict[str, Any] = {}
    if sequence_length is not None:
        if "sequence_length" not in init_options(reg.cls):
            raise ConfigError(
                f"--sequence-length applies to text tasks and ONNX models, not to {task}"
            )
        kwargs["sequence_length"] = sequence_length
    pipeline = Pipeline.create(
        name,
        model_path,
        engine_type=engine_type,
        batch_size=batch_size,
        num_threads=num_threads,
        **kwargs,
    )
    data, described = pipeline.example_inputs(batch_size, sequence_length)
    extra: dict[str, Any] = {}
    if pipeline.engine.isa is not None:
        extra["isa"] = pipeline.engine.isa
    return BenchmarkTarget(
        call=lambda: pipeline(**data),
        kind="pipeline",
        items_per_call=batch_size,
        engine_type=engine_type,
        num_threads=pipeline.engine.num_threads,
        model=os.fspath(pipeline.model_path),
        inputs=described,
        task=task,
        stage_timings=lambda: pipeline.timings,
        extra=extra,
    )


# ---- measuring ----------------------------------------------------------------------------------


def _progress_bar(total: float, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(
        total=total,
        desc="warmup",
        file=sys.stderr,
        leave=False,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s{postfix}",
    )


def measure(
    call: Callable[[], Any],
    *,
    streams: int = 1,
    seconds: float = DEFAULT_TIME,
    warmup: float = DEFAULT_WARMUP,
    stage_timings: Optional[Callable[[], Any]] = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Calls ``call`` from ``streams`` threads for ``warmup`` then ``seconds`` seconds.

    Returns the measured window's ``elapsed`` seconds, per-call ``latencies`` (seconds) and, when
    ``stage_timings`` is given, the `StageTimings` it returned after each measured call.
    """
    streams = _check_positive_int("streams", streams)
    seconds = _check_seconds("time", seconds, True)
    warmup = _check_seconds("warmup", warmup, False)
    latencies: list[list[float]] = [[] for _ in range(streams)]
    stages: list[list[Any]] = [[] for _ in range(streams)]
    ends = [0.0] * streams
    window: dict[str, float] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def open_window() -> None:
        window["start"] = time.perf_counter()
        window["end"] = window["start"] + seconds

    barrier = threading.Barrier(streams, action=open_window)
    start = time.perf_counter()
    warm_end = start + warmup

    def worker(i: int) -> None:
        try:
            while time.perf_counter() < warm_end and not stop.is_set():
                call()
            barrier.wait()
            mine, my_stages = latencies[i], stages[i]
            t_end = window["end"]
            while not stop.is_set():
                t0 = time.perf_counter()
                call()
                t1 = time.perf_counter()
                mine.append(t1 - t0)
                if stage_timings is not None:
                    my_stages.append(stage_timings())
                ends[i] = t1
                if t1 >= t_end:
                    break
        except threading.BrokenBarrierError:
            pass
        except BaseException as e:
            errors.append(e)
            stop.set()
            barrier.abort()

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"sparsepipe-benchmark-{i}", daemon=True)
        for i in range(streams)
    ]
    bar = _progress_bar(warmup + seconds, progress)
    try:
        for t in threads:
            t.start()
        while True:
            alive = [t for t in threads if t.is_alive()]
            if not alive:
                break
            alive[0].join(0.1)
            if bar is not None:
                if "start" in window and bar.desc != "benchmark":
                    bar.set_description_str("benchmark", refresh=False)
                bar.n = min(bar.total, time.perf_counter() - start)
                bar.set_postfix_str(f"{sum(len(x) for x in latencies)} calls", refresh=False)
                bar.refresh()
    except BaseException:
        stop.set()
        barrier.abort()
        raise
    finally:
        for t in threads:
            t.join()
        if bar is not None:
            bar.close()
    if errors:
        raise errors[0]
    all_latencies = [x for part in latencies for x in part]
    return {
        "elapsed": max(max(ends) - window["start"], 1e-9),
        "latencies": all_latencies,
        "stages": [s for part in stages for s in part if s is not None],
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what `platform` knows elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _summary_ms(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "mean": float(ms.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "std": float(ms.std()),
    }


def run_benchmark(
    target: str,
    *,
    model_path: Optional[str] = None,
    engine_type: str = "sparsepipe",
    batch_size: int = 1,
    sequence_length: Optional[int] = None,
    num_threads: Optional[int] = None,
    scenario: str = "sync",
    streams: Optional[int] = None,
    seconds: float = DEFAULT_TIME,
    warmup: float = DEFAULT_WARMUP,
    progress: bool = False,
) -> dict[str, Any]:
    """Benchmarks a task pipeline or a model file; returns ``{"config": ..., "results": ...}``."""
    from .. import __version__
    from ..engine import ENGINE_TYPES

    if scenario not in SCENARIOS:
        raise ConfigError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    if engine_type not in ENGINE_TYPES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINE_TYPES)}, got {engine_type!r}")
    batch_size = _check_positive_int("batch size", batch_size)
    sequence_length = _check_positive_int("sequence length", sequence_length, allow_none=True)
    num_threads = _check_positive_int("number of threads", num_threads, allow_none=True)
    seconds = _check_seconds("time", seconds, True)
    warmup = _check_seconds("warmup", warmup, False)
    if streams is None:
        streams = 1 if scenario == "sync" else DEFAULT_ASYNC_STREAMS
    streams = _check_positive_int("streams", streams)
    if streams > MAX_STREAMS:  # each stream is a thread started before the clock runs
        raise ConfigError(f"streams must be at most {MAX_STREAMS}, got {streams}")
    if scenario == "sync" and streams != 1:
        raise ConfigError(f"the sync scenario runs one stream; use --scenario async for {streams}")

    bench = load_target(
        target,
        model_path=model_path,
        engine_type=engine_type,
        batch_size=batch_size,
        sequence_length=sequence_length,
        num_threads=num_threads,
    )
    raw = measure(
        bench.call,
        streams=streams,
        seconds=seconds,
        warmup=warmup,
        stage_timings=bench.stage_timings,
        progress=progress,
    )
    calls = len(raw["latencies"])
    items = calls * bench.items_per_call
    elapsed = raw["elapsed"]
    stages_ms = None
    if bench.stage_timings is not None and raw["stages"]:
        stages_ms = {
            name: float(np.mean([getattr(s, name) for s in raw["stages"]]) * 1e3)
            for name in ("pre", "engine", "post", "total")
        }
    config = {
        "target": target,
        "kind": bench.kind,
        "task": bench.task,
        "model": bench.model,
        "engine": bench.engine_type,
        "batch_size": batch_size,
        "sequence_length": sequence_length,
        "num_threads": bench.num_threads,
        "scenario": scenario,
        "streams": streams,
        "time": seconds,
        "warmup": warmup,
        "inputs": bench.inputs,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "sparsepipe_version": __version__,
        "python": platform.python_version(),
        **bench.extra,
    }
    results = {
        "items_per_second": items / elapsed,
        "calls_per_second": calls / elapsed,
        "calls": calls,
        "items": items,
        "elapsed_s": elapsed,
        "latency_ms": _summary_ms(raw["latencies"]),
        "stages_ms": stages_ms,
    }
    return {"config": config, "results": results}


# ---- report -------------------------------------------------------------------------------------


def format_report(result: Mapping[str, Any]) -> str:
    """The short readable block ``sparsepipe benchmark`` prints for a `run_benchmark` result."""
    c, r = result["config"], result["results"]
    if c["kind"] == "pipeline":
        name = c["task"] if c["task"] == c["target"] else f"{c['target']} ({c['task']})"
        what = f"{name} pipeline, model {c['model']}"
    else:
        what = f"{c['engine']} engine on {c['model']}"
    streams = f", {c['streams']} streams" if c["scenario"] == "async" else ""
    lat = r["latency_ms"]
    lines = [
        f"sparsepipe {c['sparsepipe_version']} benchmark: {what}",
        f"  engine {c['engine']}, batch {c['batch_size']}, {c['num_threads']} threads, "
        f"{c['scenario']}{streams}, {c['time']:g} s after {c['warmup']:g} s warmup",
        f"  inputs      {c['inputs']}",
        f"  cpu         {c['cpu']} ({c['cpu_count']} logical cores)",
        f"  throughput  {r['items_per_second']:.2f} items/s ({r['calls']} calls, "
        f"{r['items']} items in {r['elapsed_s']:.2f} s)",
        f"  latency     mean {lat['mean']:.2f} ms, p50 {lat['p50']:.2f}, p90 {lat['p90']:.2f}, "
        f"p99 {lat['p99']:.2f} ms per call",
    ]
    st = r.get("stages_ms")
    if st:
        lines.append(
            f"  stages      pre {st['pre']:.2f} ms, engine {st['engine']:.2f} ms, "
            f"post {st['post']:.2f} ms (mean per call)"
        )
    return "\n".join(lines)


# ---- command line -------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    result = run_benchmark(
        args.model_or_task,
        model_path=args.model_path,
        engine_type=args.engine,
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
        num_threads=args.num_threads,
        scenario=args.scenario,
        streams=args.streams,
        seconds=args.time,
        warmup=args.warmup,
        progress=not args.quiet,
    )
    print(format_report(result))
    if args.export_json:
        path = Path(args.export_json)
        try:
            path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot write --export-json {path}: {e}") from e
        if not args.quiet:
            print(f"wrote {path}", file=sys.stderr)
    return 0


def add_parser(subparsers: Any) -> None:
    """Adds the ``benchmark`` subcommand to ``subparsers`` (from ``add_subparsers``)."""
    p = subparsers.add_parser(
        "benchmark",
        help="measure throughput and latency of a task pipeline or an ONNX model",
        description=(
            "Benchmark a task pipeline end to end on generated inputs (MODEL_OR_TASK is a task "
            "name or alias) or the bare engine on random inputs (MODEL_OR_TASK is an .onnx file "
            "or model directory)."
        ),
    )
    p.add_argument("model_or_task", metavar="MODEL_OR_TASK", help="task name/alias or model path")
    p.add_argument(
        "--model-path", default=None, help="model of the task (default: the task's embedded one)"
    )
    p.add_argument("--batch-size", type=int, default=1, help="items per call (default 1)")
    p.add_argument(
        "--sequence-length",
        type=int,
        default=None,
        help=(
            "tokens per generated text (default: the task's typical length) or length of the "
            "non-batch symbolic dims of an ONNX model "
            f"(default {DEFAULT_MODEL_SEQUENCE_LENGTH})"
        ),
    )
    p.add_argument("--num-threads", type=int, default=None, help="engine threads (default: all)")
    p.add_argument("--scenario", choices=SCENARIOS, default="sync", help="default sync")
    p.add_argument(
        "--streams",
        type=int,
        default=None,
        help=f"concurrent callers in the async scenario (default {DEFAULT_ASYNC_STREAMS})",
    )
    p.add_argument(
        "--time",
        type=float,
        default=DEFAULT_TIME,
        help=f"seconds measured (default {DEFAULT_TIME:g})",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=DEFAULT_WARMUP,
        help=f"seconds run before measuring (default {DEFAULT_WARMUP:g})",
    )
    p.add_argument("--engine", choices=("sparsepipe", "onnxruntime"), default="sparsepipe")
    p.add_argument("--export-json", default=None, metavar="PATH", help="write the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
