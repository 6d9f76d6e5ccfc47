"""End-to-end text pipelines: sparsepipe vs onnxruntime vs deepsparse on the embedded defaults.

Workload: the 200 labelled movie-review sentences of ``../shared/samples/sentiment_sample.jsonl``
(or ``--texts FILE``, one JSON object with ``text`` per line) through the text-classification
default (``zoo:sentiment-minilm-sparse80``) and the token-classification default
(``zoo:pii-ner-minilm``). Per (task, batch size, threads) every variant processes the whole
workload once per round, rounds interleaved with rotating order; the table gives the median
items/s and the ratio to sparsepipe's default pipeline, and the median latency of one call.

Variants:

- ``sparsepipe``: the default pipeline (each batch padded to its longest text, multiple of 8);
- ``sparsepipe s128``: the same pipeline padding every batch to 128 tokens (DeepSparse's default
  ``sequence_length``) — shows what dynamic padding buys;
- ``onnxruntime``: the same pipeline with ``engine_type="onnxruntime"``;
- ``ort by hand`` (text-classification): what a user writes without a pipeline library —
  ``tokenizers`` (pad to the longest in the batch, truncate at 128), an onnxruntime session with
  the same thread count, softmax and argmax in numpy;
- ``deepsparse s128``: deepsparse 1.8 compiled at ``[batch, 128]`` (static shapes, as its
  pipelines run) on a copy of the model, in a worker process under ``--deepsparse-python``;
  its time is (number of batches) x (median engine time of one batch) + sparsepipe's measured
  tokenization and post-processing time, i.e. the same pre/post work with its engine.

The per-stage split (pre / engine / post, from ``pipeline.timings``) of sparsepipe's pipeline is
printed too. Example::

    python benches/pipelines.py --batches 1,32 --threads 1,all --rounds 5 \\
        --deepsparse-python /work/ds-venv/bin/python --json pipelines.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("NM_DISABLE_ANALYTICS", "True")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _bench_engine_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "bench_engine", Path(__file__).with_name("engine.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_engine"] = module
    spec.loader.exec_module(module)
    return module


def _static_copy(src: Path, dst: Path, batch: int, seq: int) -> Path:
    import onnx

    model = onnx.load(str(src))
    for vi in [*model.graph.input, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        for i, dim in enumerate(dims):
            if dim.HasField("dim_param"):
                dim.dim_value = batch if i == 0 else seq
    onnx.save_model(model, str(dst))
    return dst


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class HandWrittenOrt:
    """Text classification with tokenizers + onnxruntime + numpy, as a user writes it by hand."""

    def __init__(self, model_dir: Path, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(128)
        self.tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        config = json.loads((model_dir / "config.json").read_text())
        self.labels = {int(k): v for k, v in config["id2label"].items()}

    def __call__(self, texts: list[str]) -> list[tuple[str, float]]:
        encodings = self.tokenizer.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feeds = {n: np.asarray(columns[n], np.int64) for n in self.inputs}
        logits = self.session.run(None, feeds)[0]
        exp = np.exp(logits - logits.max(-1, keepdims=True))
        probs = exp / exp.sum(-1, keepdims=True)
        best = probs.argmax(-1)
        return [(self.labels[int(b)], float(p[b])) for b, p in zip(best, probs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="text-classification,token-classification")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--threads", default="1,all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--texts", type=Path, default=SHARED / "samples" / "sentiment_sample.jsonl")
    parser.add_argument("--deepsparse-python", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    bench = _bench_engine_module()
    from sparsepipe import Pipeline

    with open(args.texts) as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    threads_list = bench.parse_threads(args.threads)
    ds_mode, ds_desc = bench.deepsparse_mode(args)
    bench.log(f"{len(texts)} texts; cpu: {bench.cpu_info().get('model', '?')}; {ds_desc}")
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="sparsepipe-pipelines-"))
    for task in args.tasks.split(","):
        for threads in threads_list:
            for batch in batches:
                common = {"batch_size": batch, "num_threads": threads}
                pipes = {
                    "sparsepipe": Pipeline.create(task, **common),
                    "sparsepipe s128": Pipeline.create(task, sequence_length=128, **common),
                    "onnxruntime": Pipeline.create(task, engine_type="onnxruntime", **common),
                }
                if task == "text-classification":
                    model_dir = Path(pipes["sparsepipe"].onnx_file_path).parent
                    pipes["ort by hand"] = HandWrittenOrt(model_dir, threads)
                stages: dict[str, list[float]] = {"pre": [], "engine": [], "post": []}
                call_s: dict[str, list[float]] = {name: [] for name in pipes}

                def workload(
                    pipe: Any,
                    calls: list[float],
                    record: bool = False,
                    stages: dict = stages,
                    batch: int = batch,
                ) -> Callable[[], float]:
                    def run_all() -> float:
                        start = time.perf_counter()
                        for chunk in _chunks(texts, batch):
                            t0 = time.perf_counter()
                            pipe(chunk)
                            calls.append(time.perf_counter() - t0)
                            if record:
                                t = pipe.timings
                                stages["pre"].append(t.pre)
                                stages["engine"].append(t.engine)
                                stages["post"].append(t.post)
                        return time.perf_counter() - start

                    return run_all

                runs = {
                    name: workload(p, call_s[name], record=name == "sparsepipe")
                    for name, p in pipes.items()
                }
                ds = None
                if ds_mode == "worker":
                    src = Path(pipes["sparsepipe"].onnx_file_path)
                    static = _static_copy(src, tmp / f"{task}-b{batch}.onnx", batch, 128)
                    ds = bench.DeepsparseWorkerRunner(
                        args.deepsparse_python, static, batch, threads
                    )
                    names = pipes["sparsepipe"].engine.input_names
                    feeds = {n: np.ones((batch, 128), np.int64) for n in names}
                    ds.set_inputs(feeds, names)
                    n_batches = math.ceil(len(texts) / batch)

                    def ds_run(
                        ds: Any = ds, n_batches: int = n_batches, stages: dict = stages
                    ) -> float:
                        ms = [ds.run_once() for _ in range(min(n_batches, 8))]
                        engine_s = statistics.median(ms) / 1e3 * n_batches
                        pre_post = (
                            statistics.median(stages["pre"] or [0])
                            + statistics.median(stages["post"] or [0])
                        ) * n_batches
                        return engine_s + pre_post

                    runs["deepsparse s128"] = ds_run
                for run in runs.values():  # warm-up
                    run()
                for values in [*stages.values(), *call_s.values()]:
                    values.clear()
                samples: dict[str, list[float]] = {name: [] for name in runs}
                names = list(runs)
                for r in range(args.rounds):
                    for name in names[r % len(names) :] + names[: r % len(names)]:
                        samples[name].append(runs[name]())
                        time.sleep(0.05)
                if ds is not None:
                    ds.close()
                row = {
                    "task": task,
                    "batch": batch,
                    "threads": threads,
                    "items_per_s": {
                        n: len(texts) / statistics.median(s) for n, s in samples.items()
                    },
                    "stage_ms_per_call": {k: statistics.median(v) * 1e3 for k, v in stages.items()},
                    "median_ms_per_call": {
                        n: statistics.median(v) * 1e3 for n, v in call_s.items() if v
                    },
                }
                results.append(row)
                base = row["items_per_s"]["sparsepipe"]
                lat = row["median_ms_per_call"]
                cells = ", ".join(
                    f"{n} {v:.0f}/s ({base / v:.2f}x"
                    + (f", {lat[n]:.2f} ms/call)" if n in lat else ")")
                    for n, v in row["items_per_s"].items()
                )
                st = row["stage_ms_per_call"]
                print(
                    f"{task:22s} b{batch:<3d} t{threads:<2d} {cells}; sparsepipe stages per call: "
                    f"pre {st['pre']:.2f} ms, engine {st['engine']:.2f} ms, "
                    f"post {st['post']:.2f} ms",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps({"cpu": bench.cpu_info(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
