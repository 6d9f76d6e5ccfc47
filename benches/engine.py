"""Side-by-side latency of sparsepipe, onnxruntime and deepsparse on pruned BERT-base, ResNet-50
and the vision models in ../shared.

The model is tests/onnx_models.py's ``bert`` at BERT-base shape (12 layers, hidden 768, 12 heads,
FFN 3072, vocab 30522) with random weights, magnitude-pruned to each requested sparsity and cached
as ``<cache-dir>/bert-base-s<sparsity>.onnx``; with ``--models synth`` (in the default) also the
HF-export-shaped BERT-base that ``../shared/bench/synth_models.py bert`` writes (skipped with a
message when ``../shared`` is absent); with ``--models resnet50`` the ResNet-50 that
``synth_models.py resnet50`` writes at each sparsity (224x224 images), and with ``--models vision``
the shipped EfficientNet-Lite0, YOLOv3-tiny and YOLOv8n of ``../shared/models`` (as they are; the
sparsity column is their own). Image models run on an engine planned for the batch, as the vision
pipelines do (``batch_size=B``); YOLOv8n's graph is fixed at one image. For every (sparsity,
batch, threads) the engines run interleaved on identical inputs: each round runs every engine
once, the order rotating from round to round, with a short pause between runs so no engine's
spinning threads overlap the next one. The table gives the median latency per engine and the
ratios to sparsepipe.

deepsparse runs in this process when ``import deepsparse`` works here, or in a worker process
(benches/_deepsparse_worker.py) under ``--deepsparse-python``; it compiles a static-shape copy of
the model per batch size, since it rewrites the file it is given.

Example::

    python benches/engine.py --sparsities 0,0.8,0.9,0.95 --batches 1,16 --seq 128 \\
        --threads 1,all --iters 20 --warmup 3 --json bench.json \\
        --deepsparse-python /opt/deepsparse-venv/bin/python
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

os.environ.setdefault("NM_DISABLE_ANALYTICS", "True")

REPO = Path(__file__).resolve().parents[1]
SYNTH = REPO.parent / "shared" / "bench" / "synth_models.py"
MODELS = ("builder", "synth", "resnet50", "vision")
SHARED_MODELS = REPO.parent / "shared" / "models"
VISION = {
    "efficientnet-lite0": "efficientnet-lite0-imagenet",
    "yolov3-tiny": "yolov3-tiny-coco",
    "yolov8n": "yolov8n-random",
}
WORKER = Path(__file__).with_name("_deepsparse_worker.py")
ENGINES = ("sparsepipe", "onnxruntime", "deepsparse")
BASE_SHAPE = {"hidden": 768, "heads": 12, "intermediate": 3072, "vocab_size": 30522}


def load_onnx_models() -> ModuleType:
    """Import tests/onnx_models.py by path."""
    path = REPO / "tests" / "onnx_models.py"
    spec = importlib.util.spec_from_file_location("onnx_models", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["onnx_models"] = module
    spec.loader.exec_module(module)
    return module


def cpu_info() -> dict[str, Any]:
    """Describe the CPU: model name, logical CPUs, CPUs usable by this process, SIMD flags."""
    model: str | None = None
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or "unknown"
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return {
        "model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "simd": simd,
        "platform": platform.platform(),
    }


def usable_cpus() -> int:
    """Number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def parse_list(text: str, kind: type) -> list[Any]:
    """Split a comma-separated argument into values of `kind`, keeping order, dropping repeats."""
    values: list[Any] = []
    for item in text.split(","):
        value = kind(item.strip())
        if value not in values:
            values.append(value)
    return values


def parse_threads(text: str) -> list[int]:
    """Parse a thread list such as "1,4,all" ("all" = CPUs usable by this process)."""
    values: list[int] = []
    for item in text.split(","):
        item = item.strip().lower()
        n = usable_cpus() if item == "all" else int(item)
        if n < 1:
            raise argparse.ArgumentTypeError(f"thread count must be >= 1, got {item}")
        if n not in values:
            values.append(n)
    return values


def model_stem(layers: int, shape: dict[str, int]) -> str:
    """File stem for a cached model of this shape (sparsity excluded)."""
    if shape == BASE_SHAPE:
        stem = "bert-base"
    else:
        stem = "bert-H{hidden}-A{heads}-I{intermediate}-V{vocab_size}".format(**shape)
    return stem if layers == 12 else f"{stem}-L{layers}"


def ensure_model(
    om: ModuleType,
    cache_dir: Path,
    sparsity: float,
    layers: int,
    shape: dict[str, int],
    max_seq: int,
) -> Path:
    """Return the cached model for `sparsity`, building and saving it first if missing."""
    path = cache_dir / f"{model_stem(layers, shape)}-s{sparsity:g}.onnx"
    if path.exists():
        return path
    start = time.perf_counter()
    model = om.build(
        "bert",
        sparsity,
        layers=layers,
        max_position=max(512, max_seq),
        labels=2,
        **shape,
    )
    om.save(model, cache_dir, path.name)
    log(f"built {path} in {time.perf_counter() - start:.1f} s")
    return path


def ensure_synth_model(cache_dir: Path, sparsity: float, kind: str = "bert") -> Path | None:
    """Return ../shared/bench/synth_models.py's `kind` (the HF-export-shaped BERT-base, or
    ResNet-50) at `sparsity` (built once into the cache), or None when ../shared is absent."""
    if not SYNTH.is_file():
        log(f"skipping the synth model: {SYNTH} is absent (../shared sits beside the repository)")
        return None
    stem = "synth-bert-base" if kind == "bert" else kind
    path = cache_dir / f"{stem}-s{sparsity:g}.onnx"
    if not path.exists():
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, str(SYNTH), kind, str(path), f"{sparsity:g}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        log(f"built {path} in {time.perf_counter() - start:.1f} s")
    return path


def image_feeds(path: Path, batch: int) -> dict[str, np.ndarray]:
    """Random normal images for the single image input of the ONNX file at `path`."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    (vi,) = [i for i in model.graph.input if i.name not in inits]
    dims = [d.dim_value for d in vi.type.tensor_type.shape.dim][1:]
    rng = np.random.default_rng(batch)
    return {vi.name: rng.standard_normal((batch, *dims)).astype(np.float32)}


def fixed_batch(path: Path) -> int | None:
    """The batch size the graph at `path` is fixed to, or None when it is symbolic."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return None if dim.HasField("dim_param") else int(dim.dim_value)


def input_names(path: Path) -> list[str]:
    """The graph inputs of the ONNX file at `path` (initializers excluded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def static_copy(src: Path, dst: Path, batch: int, seq: int) -> Path:
    """Write a copy of `src` whose symbolic batch/sequence dims are fixed to `batch`/`seq` (any
    symbolic first axis is the batch)."""
    import onnx

    model = onnx.load(str(src))
    values = {"batch": batch, "sequence": seq}
    for vi in [*model.graph.input, *model.graph.output]:
        for i, dim in enumerate(vi.type.tensor_type.shape.dim):
            if dim.HasField("dim_param") and (dim.dim_param in values or i == 0):
                dim.dim_value = values.get(dim.dim_param, batch)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(dst))
    return dst


def log(message: str) -> None:
    """Print a progress line on stderr."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Runner(abc.ABC):
    """One engine on one model and thread count; `run_once` returns milliseconds."""

    name = "?"

    @abc.abstractmethod
    def set_inputs(self, feeds: dict[str, np.ndarray], order: Sequence[str]) -> None:
        """Fix the inputs of the following runs."""

    @abc.abstractmethod
    def run_once(self) -> float:
        """Run one inference on the fixed inputs and return its wall time in ms."""

    @abc.abstractmethod
    def outputs(self) -> list[np.ndarray]:
        """Run once and return the outputs in graph order."""

    def close(self) -> None:  # noqa: B027 - optional hook; most engines need no release
        """Release the engine."""


class SparsepipeRunner(Runner):
    """sparsepipe.Engine with num_threads set; one Engine serves every batch size."""

    name = "sparsepipe"

    def __init__(self, path: Path, threads: int, batch_size: int | None = None) -> None:
        import sparsepipe

        self.engine = sparsepipe.Engine(str(path), num_threads=threads, batch_size=batch_size)
        self.args: list[np.ndarray] = []

    def set_inputs(self, feeds: dict[str, np.ndarray], order: Sequence[str]) -> None:
        self.args = [feeds[name] for name in self.engine.input_names]

    def run_once(self) -> float:
        start = time.perf_counter()
        self.engine(self.args)
        return (time.perf_counter() - start) * 1e3

    def outputs(self) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.engine(self.args)]

    def kernel_summary(self) -> str:
        """Return e.g. "72/74 sparse (avx512f)" from the engine's sparsity report."""
        from sparsepipe.errors import SparsepipeError

        try:
            report = list(self.engine.sparsity_report())
        except (SparsepipeError, AttributeError, KeyError, TypeError) as exc:
            return f"report failed: {exc}"
        sparse = sum(1 for e in report if e.get("kernel") == "sparse")
        isas = sorted({str(e.get("isa")) for e in report if e.get("kernel") == "sparse"})
        suffix = f" ({', '.join(isas)})" if isas else ""
        return f"{sparse}/{len(report)} sparse{suffix}"

    def close(self) -> None:
        self.engine = None


class OrtRunner(Runner):
    """onnxruntime CPU session: intra-op threads set, sequential execution, all optimizations."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.feeds: dict[str, np.ndarray] = {}

    def set_inputs(self, feeds: dict[str, np.ndarray], order: Sequence[str]) -> None:
        self.feeds = dict(feeds)

    def run_once(self) -> float:
        start = time.perf_counter()
        self.session.run(None, self.feeds)
        return (time.perf_counter() - start) * 1e3

    def outputs(self) -> list[np.ndarray]:
        return self.session.run(None, self.feeds)

    def close(self) -> None:
        self.session = None


class DeepsparseRunner(Runner):
    """deepsparse in this process, compiled for one batch size on a static-shape copy."""

    name = "deepsparse"

    def __init__(self, static_path: Path, batch: int, threads: int) -> None:
        import deepsparse

        self.engine = deepsparse.compile_model(
            str(static_path), batch_size=batch, num_cores=threads
        )
        self.args: list[np.ndarray] = []

    def set_inputs(self, feeds: dict[str, np.ndarray], order: Sequence[str]) -> None:
        self.args = [np.ascontiguousarray(feeds[name]) for name in order]

    def run_once(self) -> float:
        start = time.perf_counter()
        self.engine(self.args)
        return (time.perf_counter() - start) * 1e3

    def outputs(self) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.engine(self.args)]

    def close(self) -> None:
        self.engine = None


class DeepsparseWorkerRunner(Runner):
    """deepsparse in a worker process of another Python; the worker times each run itself."""

    name = "deepsparse"

    def __init__(self, python: str, static_path: Path, batch: int, threads: int) -> None:
        self.static_path = static_path
        self.batch, self.threads = batch, threads
        self.log_path = static_path.with_suffix(".log")
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        env = dict(os.environ, NM_DISABLE_ANALYTICS="True", PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [python, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env=env,
        )
        self.info = self.request({"cmd": "info"})

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return the reply; raise with the worker's log on failure."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        reply = json.loads(line) if line else {"ok": False, "error": "worker exited"}
        if not reply.get("ok"):
            self._log.flush()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"deepsparse worker: {reply.get('error')}\n{tail}")
        return reply

    def set_inputs(self, feeds: dict[str, np.ndarray], order: Sequence[str]) -> None:
        npz = self.static_path.with_suffix(".inputs.npz")
        np.savez(npz, **{name: feeds[name] for name in order})
        self.request(
            {
                "cmd": "load",
                "model": str(self.static_path),
                "batch": self.batch,
                "threads": self.threads,
                "inputs": str(npz),
                "order": list(order),
            }
        )

    def run_once(self) -> float:
        return float(self.request({"cmd": "run"})["ms"])

    def outputs(self) -> list[np.ndarray]:
        npz = self.static_path.with_suffix(".outputs.npz")
        count = int(self.request({"cmd": "outputs", "path": str(npz)})["count"])
        with np.load(npz) as data:
            return [data[f"out{i}"] for i in range(count)]

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, OSError, ValueError):
                self.request({"cmd": "quit"})
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def interleave(
    runners: Sequence[Runner], rounds: int, pause_s: float, samples: dict[str, list[float]] | None
) -> None:
    """Run `rounds` rounds of every runner once (order rotated each round); record into samples."""
    n = len(runners)
    for r in range(rounds):
        for runner in [*runners[r % n :], *runners[: r % n]]:
            ms = runner.run_once()
            if samples is not None:
                samples[runner.name].append(ms)
            if pause_s > 0:
                time.sleep(pause_s)


def max_abs_diff(ours: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> float:
    """Largest |ours - ref| over all outputs (inf on a shape mismatch)."""
    if len(ours) != len(ref):
        return float("inf")
    worst = 0.0
    for o, r in zip(ours, ref):
        if np.shape(o) != np.shape(r):
            return float("inf")
        worst = max(worst, float(np.max(np.abs(np.asarray(o, np.float64) - r))))
    return worst


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median, mean, min, p90 and standard deviation of latency samples (ms)."""
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered),
        "mean_ms": statistics.fmean(ordered),
        "min_ms": ordered[0],
        "p90_ms": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        "stdev_ms": statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        "samples_ms": list(samples),
    }


def deepsparse_mode(args: argparse.Namespace) -> tuple[str | None, str]:
    """Return ("worker"|"inprocess"|None, description) for how deepsparse will run."""
    if args.deepsparse_python:
        probe = subprocess.run(
            [args.deepsparse_python, "-c", "import deepsparse, sys; print(deepsparse.__version__)"],
            capture_output=True,
            text=True,
            env=dict(os.environ, NM_DISABLE_ANALYTICS="True"),
            check=False,
        )
        if probe.returncode != 0:
            tail = (probe.stderr or probe.stdout).strip().splitlines()[-1:]
            return None, f"unavailable ({args.deepsparse_python}: {' '.join(tail)})"
        version = probe.stdout.strip().splitlines()[-1] if probe.stdout.strip() else "?"
        return "worker", f"deepsparse {version} (worker: {args.deepsparse_python})"
    try:
        import deepsparse
    except (ImportError, AttributeError, OSError, RuntimeError, TypeError, ValueError) as exc:
        return None, f"unavailable in this Python ({type(exc).__name__}: {exc})"
    return "inprocess", f"deepsparse {getattr(deepsparse, '__version__', '?')} (in process)"


def engine_versions() -> dict[str, str]:
    """Versions of sparsepipe and onnxruntime importable here (or why not)."""
    out = {}
    for name in ("sparsepipe", "onnxruntime"):
        try:
            module = __import__(name)
            out[name] = str(getattr(module, "__version__", "?"))
        except ImportError as exc:
            out[name] = f"unavailable ({type(exc).__name__}: {exc})"
    return out


def format_ms(value: float | None) -> str:
    """Milliseconds for the table, or a dash."""
    return "-" if value is None else f"{value:.2f}"


def format_ratio(num: float | None, den: float | None) -> str:
    """Ratio num/den for the table, or a dash."""
    return "-" if num is None or den is None or den == 0 else f"{num / den:.2f}x"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sparsities", default="0,0.8,0.9,0.95", help="comma-separated")
    parser.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    parser.add_argument("--seq", default="128", help="sequence length(s), comma-separated")
    parser.add_argument("--threads", default="1,all", help='comma-separated; "all" = usable CPUs')
    parser.add_argument("--iters", type=int, default=20, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=BASE_SHAPE["hidden"])
    parser.add_argument("--heads", type=int, default=BASE_SHAPE["heads"])
    parser.add_argument("--ffn", type=int, default=BASE_SHAPE["intermediate"])
    parser.add_argument("--vocab", type=int, default=BASE_SHAPE["vocab_size"])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sparsepipe-bench",
        help="where generated models are kept (default: $TMPDIR/sparsepipe-bench)",
    )
    parser.add_argument(
        "--engines",
        default="auto",
        help='comma-separated subset of sparsepipe,onnxruntime,deepsparse; "auto" = all available',
    )
    parser.add_argument("--deepsparse-python", help="Python of a venv with deepsparse installed")
    parser.add_argument("--pause-ms", type=float, default=5.0, help="idle time between runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--models",
        default="builder,synth",
        help="comma-separated: builder (tests/onnx_models.py's bert at the shape above), synth "
        "(../shared/bench/synth_models.py bert: HF-export-shaped BERT-base), resnet50 "
        "(synth_models.py resnet50), vision (../shared/models' EfficientNet-Lite0, YOLOv3-tiny, "
        "YOLOv8n, as shipped)",
    )
    args = parser.parse_args(argv)
    models = parse_list(args.models, str)
    if not models or any(m not in MODELS for m in models):
        parser.error(f"--models: choose from {', '.join(MODELS)}")

    sparsities = parse_list(args.sparsities, float)
    batches = parse_list(args.batches, int)
    seqs = parse_list(args.seq, int)
    threads_list = parse_threads(args.threads)
    shape = {
        "hidden": args.hidden,
        "heads": args.heads,
        "intermediate": args.ffn,
        "vocab_size": args.vocab,
    }
    cache_dir: Path = args.cache_dir
    cache_dir.mkdir(parents=True, exist_ok=True)

    versions = engine_versions()
    ds_mode, ds_desc = deepsparse_mode(args)
    if args.deepsparse_python and ds_mode is None:
        parser.error(f"--deepsparse-python: deepsparse {ds_desc}")
    available = {
        "sparsepipe": not versions["sparsepipe"].startswith("unavailable"),
        "onnxruntime": not versions["onnxruntime"].startswith("unavailable"),
        "deepsparse": ds_mode is not None,
    }
    if args.engines == "auto":
        engines = [e for e in ENGINES if available[e]]
    else:
        engines = parse_list(args.engines, str)
        unknown = [e for e in engines if e not in ENGINES]
        missing = [e for e in engines if e in ENGINES and not available[e]]
        if unknown or missing:
            descs = {**versions, "deepsparse": ds_desc}
            parser.error(
                f"unknown engines {unknown}" if unknown else f"not available: {missing} ({descs})"
            )
    if not engines:
        parser.error("no engine available")

    om = load_onnx_models()
    machine = cpu_info()
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    descriptions = {
        "sparsepipe": f"sparsepipe {versions['sparsepipe']}",
        "onnxruntime": f"onnxruntime {versions['onnxruntime']}",
        "deepsparse": ds_desc,
    }
    header = [
        "# sparsepipe engine benchmark",
        "",
        f"- date: {now}",
        (
            f"- CPU: {machine['model']} ({machine['logical_cpus']} logical CPUs, "
            f"{machine['usable_cpus']} usable here; {', '.join(machine['simd']) or 'no AVX2'})"
        ),
        f"- Python {platform.python_version()}, {machine['platform']}",
        f"- engines: {'; '.join(descriptions[e] for e in ENGINES)}",
        (
            f"- models: {', '.join(models)}; builder = BERT, {args.layers} layers, hidden "
            f"{args.hidden}, {args.heads} heads, "
            f"FFN {args.ffn}, vocab {args.vocab}; random weights, unstructured magnitude pruning "
            "of every Q/K/V/O, FFN, pooler and classifier matrix"
        ),
        (
            f"- method: {args.warmup} warm-up + {args.iters} timed rounds; each round runs every "
            f"engine once on the same inputs, order rotated per round, {args.pause_ms:g} ms "
            "pause between runs; median wall time per call"
        ),
    ]
    print("\n".join(header), flush=True)

    results: list[dict[str, Any]] = []
    points = [(m, s) for m in models if m != "vision" for s in sparsities]
    if "vision" in models:
        points += [(name, None) for name in VISION]
    for model_kind, sparsity in points:
        if model_kind in VISION:
            path = SHARED_MODELS / VISION[model_kind] / "model.onnx"
            if not path.is_file():
                log(f"skipping {model_kind}: {path} is absent")
                continue
            results.extend(
                bench_images(args, model_kind, path, batches, threads_list, ds_mode, engines)
            )
            continue
        if model_kind == "resnet50":
            found = ensure_synth_model(cache_dir, sparsity, "resnet50")
            if found is None:
                continue
            results.extend(
                bench_images(
                    args, model_kind, found, batches, threads_list, ds_mode, engines, sparsity
                )
            )
            continue
        if model_kind == "synth":
            found = ensure_synth_model(cache_dir, sparsity)
            if found is None:
                continue
            path = found
        else:
            path = ensure_model(om, cache_dir, sparsity, args.layers, shape, max(seqs))
        for threads in threads_list:
            shared: list[Runner] = []
            if "sparsepipe" in engines:
                shared.append(SparsepipeRunner(path, threads))
            if "onnxruntime" in engines:
                shared.append(OrtRunner(path, threads))
            for batch in batches:
                for seq in seqs:
                    rec = bench_one(
                        om, args, path, sparsity, batch, seq, threads, shared, ds_mode, engines
                    )
                    rec["model"] = model_kind
                    results.append(rec)
                    log(table_row(rec))
            for runner in shared:
                runner.close()

    print()
    print("\n".join([*TABLE_HEAD, *(table_row(rec) for rec in results)]), flush=True)
    if args.json:
        payload = {
            "date": now,
            "machine": machine,
            "python": platform.python_version(),
            "engines": {e: descriptions[e] for e in engines},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        log(f"wrote {args.json}")
    return 0


def bench_images(
    args: argparse.Namespace,
    model_kind: str,
    path: Path,
    batches: Sequence[int],
    threads_list: Sequence[int],
    ds_mode: str | None,
    engines: Sequence[str],
    sparsity: float | None = None,
) -> list[dict[str, Any]]:
    """Time an image model at every (batch, threads); sparsepipe planned for each batch."""
    import onnx

    if sparsity is None:
        weights = [
            onnx.numpy_helper.to_array(t)
            for t in onnx.load(str(path)).graph.initializer
            if len(t.dims) >= 2
        ]
        zeros = sum(int((w == 0).sum()) for w in weights)
        sparsity = round(zeros / max(1, sum(w.size for w in weights)), 2)
    fixed = fixed_batch(path)
    records = []
    for batch in batches:
        if fixed is not None and batch != fixed:
            log(f"skipping {model_kind} batch {batch}: the graph is fixed at batch {fixed}")
            continue
        feeds = image_feeds(path, batch)
        for threads in threads_list:
            shared: list[Runner] = []
            if "sparsepipe" in engines:
                shared.append(SparsepipeRunner(path, threads, batch_size=batch))
            if "onnxruntime" in engines:
                shared.append(OrtRunner(path, threads))
            try:
                rec = bench_one(
                    None, args, path, sparsity, batch, 0, threads, shared, ds_mode, engines, feeds
                )
            finally:
                for runner in shared:
                    runner.close()
            rec["model"] = model_kind
            records.append(rec)
            log(table_row(rec))
    return records


def bench_one(
    om: ModuleType | None,
    args: argparse.Namespace,
    path: Path,
    sparsity: float,
    batch: int,
    seq: int,
    threads: int,
    shared: Sequence[Runner],
    ds_mode: str | None,
    engines: Sequence[str],
    feeds: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Time every engine on one (sparsity, batch, seq, threads) point and return the record;
    `feeds` are the inputs (default: BERT token ids of `batch` x `seq`)."""
    order = input_names(path)
    if feeds is None:
        assert om is not None
        feeds = om.sample_inputs(
            "bert", batch, seq, rng=1000 * batch + seq, vocab_size=args.vocab, max_position=seq
        )
    feeds = {name: feeds[name] for name in order}
    runners = list(shared)
    extra: list[Runner] = []
    static = None
    if "deepsparse" in engines and ds_mode is not None:
        static = static_copy(
            path, args.cache_dir / "deepsparse" / f"{path.stem}-b{batch}-t{seq}.onnx", batch, seq
        )
        if ds_mode == "worker":
            extra.append(DeepsparseWorkerRunner(args.deepsparse_python, static, batch, threads))
        else:
            extra.append(DeepsparseRunner(static, batch, threads))
    runners.extend(extra)
    point = f"sparsity {sparsity:g} batch {batch} seq {seq} threads {threads}"
    log(f"{point}: {', '.join(r.name for r in runners)}")
    try:
        for runner in runners:
            runner.set_inputs(feeds, order)
        interleave(runners, args.warmup, args.pause_ms / 1e3, None)

        outputs = {r.name: r.outputs() for r in runners}
        diffs = {}
        if "onnxruntime" in outputs:
            for name, outs in outputs.items():
                if name != "onnxruntime":
                    diffs[name] = max_abs_diff(outs, outputs["onnxruntime"])

        samples: dict[str, list[float]] = {r.name: [] for r in runners}
        interleave(runners, args.iters, args.pause_ms / 1e3, samples)
        kernels = next(
            (r.kernel_summary() for r in runners if isinstance(r, SparsepipeRunner)), None
        )
    finally:
        for runner in extra:
            runner.close()
        if static is not None:
            for leftover in static.parent.glob(static.stem + "*"):
                leftover.unlink(missing_ok=True)

    stats = {name: summarize(s) for name, s in samples.items()}
    med = {name: s["median_ms"] for name, s in stats.items()}
    sp = med.get("sparsepipe")
    ratios = {
        f"{name}/sparsepipe": med[name] / sp
        for name in ("onnxruntime", "deepsparse")
        if name in med and sp
    }
    return {
        "sparsity": sparsity,
        "batch": batch,
        "seq": seq,
        "threads": threads,
        "engines": stats,
        "ratios": ratios,
        "max_abs_diff_vs_onnxruntime": diffs,
        "sparsepipe_kernels": kernels,
    }


TABLE_HEAD = (
    (
        "| model | sparsity | batch | seq | threads | sparsepipe ms | onnxruntime ms "
        "| deepsparse ms | ort/sp | ds/sp | sp max abs diff vs ort | sp kernels |"
    ),
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
)


def table_row(rec: dict[str, Any]) -> str:
    """One markdown table row for a benchmark record."""
    med = {name: s["median_ms"] for name, s in rec["engines"].items()}
    sp, ort, ds = med.get("sparsepipe"), med.get("onnxruntime"), med.get("deepsparse")
    diff = rec["max_abs_diff_vs_onnxruntime"].get("sparsepipe")
    cells = [
        rec.get("model", "builder"),
        f"{rec['sparsity']:g}",
        str(rec["batch"]),
        str(rec["seq"]),
        str(rec["threads"]),
        format_ms(sp),
        format_ms(ort),
        format_ms(ds),
        format_ratio(ort, sp),
        format_ratio(ds, sp),
        "-" if diff is None else f"{diff:.2g}",
        rec["sparsepipe_kernels"] or "-",
    ]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    sys.exit(main())
