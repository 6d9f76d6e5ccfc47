"""Load test: N concurrent HTTP clients for T seconds against ``sparsepipe serve``.

Starts ``sparsepipe serve`` for ``--task`` on a free port (or targets ``--url``), runs
``--clients`` threads posting one review sentence each per request for ``--seconds``, and prints
requests/s, latency p50/p90/p99, the error count (must be 0) and the ratio to the same pipeline
called in-process by the same number of threads. Example::

    python benches/server_load.py --task sentiment-analysis --clients 16 --seconds 10 \\
        --max-batch-size 16
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _texts(path: Path | None = None) -> list[str]:
    path = path or SHARED / "samples" / "sentiment_sample.jsonl"
    if path.is_file():
        with open(path) as f:
            return [json.loads(line)["text"] for line in f if line.strip()]
    return [f"sample review number {i}, quite good overall" for i in range(200)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, dead, path: str = "/v2/health/ready", timeout_s: float = 300) -> None:
    """Waits until ``url + path`` answers 200; SystemExit when ``dead()`` (the server's exit code,
    None while it runs) says it stopped or ``timeout_s`` passes."""
    deadline = time.time() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.time() > deadline or dead() is not None:
            raise SystemExit(f"the server at {url} did not start")
        time.sleep(0.2)


def _load(call, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(k: int) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            ok = call(i)
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                errors += 0 if ok else 1
            i += clients

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": q[49] * 1e3,
        "p90_ms": q[89] * 1e3,
        "p99_ms": q[98] * 1e3,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sentiment-analysis")
    parser.add_argument("--url", default=None, help="an already running server")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    parser.add_argument("--num-threads", type=int, default=None)
    args = parser.parse_args()
    texts = _texts()

    proc = None
    url = args.url
    if url is None:
        port = _free_port()
        config = {
            "endpoints": [
                {
                    "task": args.task,
                    "name": "bench",
                    "batch_size": args.max_batch_size,
                    "max_batch_size": args.max_batch_size,
                    "max_queue_delay_ms": args.max_queue_delay_ms,
                }
            ],
            "host": "127.0.0.1",
            "port": port,
        }
        if args.num_threads:
            config["num_threads"] = args.num_threads
        cfg = Path(tempfile.mkdtemp()) / "server.json"
        cfg.write_text(json.dumps(config))
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparsepipe", "serve", "--config", str(cfg)],
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc.poll)
    clients = [httpx.Client(base_url=url, timeout=60) for _ in range(args.clients)]

    def http_call(i: int) -> bool:
        c = clients[i % args.clients]
        r = c.post("/v2/models/bench/infer", json={"sequences": texts[i % len(texts)]})
        return r.status_code == 200

    try:
        http_call(0)
        served = _load(http_call, args.clients, args.seconds)
    finally:
        for c in clients:
            c.close()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)

    from sparsepipe import Pipeline

    pipe = Pipeline.create(args.task, num_threads=args.num_threads)
    pipe(texts[0])

    def local_call(i: int) -> bool:
        pipe(texts[i % len(texts)])
        return True

    local = _load(local_call, args.clients, args.seconds)
    print(
        f"task {args.task}, {args.clients} clients, {args.seconds:.0f} s, "
        f"max_batch_size {args.max_batch_size}"
    )
    for name, r in (("server", served), ("in-process", local)):
        print(
            f"  {name:10s} {r['requests_per_s']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
            f"p90 {r['p90_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}"
        )
    ratio = served["requests_per_s"] / local["requests_per_s"]
    print(f"  server / in-process throughput: {ratio:.2f}")
    if served["errors"]:
        raise SystemExit(f"{served['errors']} request(s) failed")


if __name__ == "__main__":
    main()
