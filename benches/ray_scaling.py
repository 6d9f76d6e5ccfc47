"""Scale-out on Ray: throughput against replicas / concurrency, next to one process.

For k = 1, 2, 4, ... up to ``--max-workers`` (default: every core), each with 1 engine thread per
worker and requests of ``--batch`` sentences:

- ``inproc``: the pipeline in this process with k engine threads (the one-machine baseline);
- ``local``: ``sparsepipe serve`` (one process, k threads) under 2k HTTP clients on loopback
  (``--clients-per-worker`` sets the 2, in the serve mode too);
- ``serve``: Ray Serve with k replicas (1 CPU each) under 2k HTTP clients on loopback, behind
  ``--ingress-replicas`` ingress replicas (default 1) and ``--http-proxy`` (Serve's proxy actor,
  or HAProxy);
- ``data``: Ray Data ``map_batches(PipelinePredictor, concurrency=k)`` over a dataset.

It prints items/s and the speedup over k = 1 per mode, and a Markdown table with ``--markdown``.
Example (every mode, up to 16 workers)::

    python benches/ray_scaling.py --task sentiment-analysis --batch 16 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_load import _free_port, _load, _texts, _wait_ready

MODES = ("inproc", "local", "serve", "data")


def _steps(top: int) -> list[int]:
    ks, k = [], 1
    while k < top:
        ks.append(k)
        k *= 2
    return [*ks, top]


def _http_rate(url: str, path: str, texts: list[str], batch: int, clients: int, seconds: float):
    pool = [httpx.Client(base_url=url, timeout=120) for _ in range(clients)]

    def call(i: int) -> bool:
        start = (i * batch) % len(texts)
        body = {"sequences": (texts * 2)[start : start + batch]}
        return pool[i % clients].post(path, json=body).status_code == 200

    try:
        for i in range(clients):
            call(i)
        result = _load(call, clients, seconds)
    finally:
        for c in pool:
            c.close()
    result["items_per_s"] = result["requests_per_s"] * batch
    return result


def _inproc(task: str, k: int, texts: list[str], batch: int, seconds: float) -> dict[str, Any]:
    from sparsepipe import Pipeline

    pipe = Pipeline.create(task, num_threads=k, batch_size=batch)

    def call(i: int) -> bool:
        start = (i * batch) % len(texts)
        pipe(sequences=(texts * 2)[start : start + batch])
        return True

    call(0)
    result = _load(call, 1, seconds)
    result["items_per_s"] = result["requests_per_s"] * batch
    return result


def _local(
    task: str, k: int, texts: list[str], batch: int, seconds: float, clients: int
) -> dict[str, Any]:
    port = _free_port()
    config = {
        "num_threads": k,
        "host": "127.0.0.1",
        "port": port,
        "endpoints": [{"task": task, "name": "bench", "batch_size": batch}],
    }
    cfg = Path(tempfile.mkdtemp()) / "server.json"
    cfg.write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "sparsepipe", "serve", "--config", str(cfg)])
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc.poll, "/v2/models/bench/ready")
        return _http_rate(url, "/v2/models/bench/infer", texts, batch, clients * k, seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _serve(
    task: str,
    k: int,
    texts: list[str],
    batch: int,
    seconds: float,
    port: int,
    ingress: int,
    clients: int,
    http_proxy: str = "ray",
):
    from ray import serve
    from sparsepipe.ray.serve import APP_NAME, run

    config = {
        "num_threads": 1,
        "ingress_replicas": ingress,
        "endpoints": [
            {
                "task": task,
                "name": "bench",
                "batch_size": batch,
                "num_replicas": k,
                "max_ongoing_requests": 4,
                "ray_actor_options": {"num_cpus": 1},
            }
        ],
    }
    # a fresh application per k: redeploying with new arguments would roll every replica (and
    # the ingress) over while the load runs
    if k > 1:
        serve.delete(APP_NAME)
    run(config, host="127.0.0.1", port=port, http_proxy=http_proxy, blocking=False)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, lambda: None, "/v2/models/bench/ready")
    return _http_rate(url, "/v2/models/bench/infer", texts, batch, clients * k, seconds)


def _data(task: str, k: int, texts: list[str], batch: int, seconds: float) -> dict[str, Any]:
    import ray.data
    from sparsepipe.ray import PipelinePredictor

    rows = [{"text": t} for t in texts]
    # ~the given seconds at ~300 items/s per worker, timed from the first batch out (after the
    # actor pool has started and loaded the model) to the last
    n = max(len(rows), int(seconds * 300 * k))
    ds = ray.data.from_items((rows * (n // len(rows) + 1))[:n])
    out = ds.map_batches(
        PipelinePredictor,
        fn_constructor_kwargs={"task": task, "input_column": "text", "num_threads": 1},
        batch_size=batch,
        compute=ray.data.ActorPoolStrategy(size=k),
        num_cpus=1,
        batch_format="pandas",
    )
    done, errors, start = 0, 0, None
    for part in out.iter_batches(batch_size=batch, batch_format="pandas"):
        if start is None:
            start = time.perf_counter()
            continue
        done += len(part)
        errors += int(part["error"].notna().sum()) if "error" in part else 0
    elapsed = time.perf_counter() - (start or time.perf_counter())
    return {"items_per_s": done / max(elapsed, 1e-9), "requests": done, "errors": errors}


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sentiment-analysis")
    parser.add_argument("--batch", type=int, default=16, help="sentences per request / batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--workers", default=None, help="the worker counts to run, e.g. 1,16 (default 1, 2, 4...)"
    )
    parser.add_argument("--modes", default=",".join(MODES), help=f"any of {', '.join(MODES)}")
    parser.add_argument(
        "--ingress-replicas",
        type=_positive,
        default=1,
        help="Serve's ingress replicas (default 1)",
    )
    parser.add_argument(
        "--http-proxy",
        choices=("ray", "haproxy"),
        default="ray",
        help="what answers HTTP in the serve mode: Serve's proxy actor (default) or HAProxy",
    )
    parser.add_argument(
        "--clients-per-worker",
        type=_positive,
        default=2,
        help="HTTP clients per worker in the local and serve modes (default 2)",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table too")
    parser.add_argument(
        "--texts", type=Path, default=None, help="a JSONL file of {'text': ...} rows to send"
    )
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise SystemExit(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    texts = _texts(args.texts)
    ks = _steps(args.max_workers)
    if args.workers:
        try:
            ks = sorted({int(k) for k in args.workers.split(",")})
        except ValueError:
            ks = []
        if not ks or ks[0] < 1 or ks[-1] > args.max_workers:
            raise SystemExit(
                f"--workers must be counts from 1 to --max-workers ({args.max_workers}), "
                f"e.g. 1,16; got {args.workers!r}"
            )
    results: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in modes}
    if {"serve", "data"} & set(modes):
        import ray
        from sparsepipe.ray.serve import apply_serve_environment

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # what `sparsepipe serve --backend ray [--http-proxy ...]` gives its own cluster
        apply_serve_environment(args.http_proxy)
        # One CPU above the workers, for Ray's own tasks (Data's scheduling, the Serve proxy).
        ray.init(
            address="local",
            num_cpus=args.max_workers + 1,
            include_dashboard=False,
            log_to_driver=False,
        )
    port = _free_port()
    for mode in modes:
        for k in ks:
            if mode == "inproc":
                r = _inproc(args.task, k, texts, args.batch, args.seconds)
            elif mode == "local":
                r = _local(args.task, k, texts, args.batch, args.seconds, args.clients_per_worker)
            elif mode == "serve":
                r = _serve(
                    args.task,
                    k,
                    texts,
                    args.batch,
                    args.seconds,
                    port,
                    args.ingress_replicas,
                    args.clients_per_worker,
                    args.http_proxy,
                )
            else:
                r = _data(args.task, k, texts, args.batch, args.seconds)
            results[mode][k] = r
            base = results[mode][ks[0]]["items_per_s"]
            print(
                f"{mode:7s} k={k:3d}  {r['items_per_s']:9.1f} items/s  "
                f"x{r['items_per_s'] / base:5.2f}  errors {r.get('errors', 0)}",
                flush=True,
            )
        if mode == "serve":
            from ray import serve
            from sparsepipe.ray.serve import APP_NAME

            serve.delete(APP_NAME)  # frees the replicas' CPUs for the modes after it
    if args.markdown:
        print("\n| workers | " + " | ".join(f"{m} items/s (x k=1)" for m in modes) + " |")
        print("|---:|" + "---:|" * len(modes))
        for k in ks:
            cells = []
            for m in modes:
                r, base = results[m][k], results[m][ks[0]]["items_per_s"]
                cells.append(f"{r['items_per_s']:.0f} ({r['items_per_s'] / base:.2f}x)")
            print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
