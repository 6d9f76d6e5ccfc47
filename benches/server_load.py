"""Load test: N concurrent HTTP clients for T seconds against ``sparsepipe serve``, or a soak of
N mixed requests.

Starts ``sparsepipe serve`` for ``--task`` on a free port (or targets ``--url``), runs
``--clients`` threads posting one review sentence each per request for ``--seconds``, and prints
requests/s, latency p50/p90/p99, the error count (must be 0) and the ratio to the same pipeline
called in-process by the same number of threads. Example::

    python benches/server_load.py --task sentiment-analysis --clients 16 --seconds 10 \\
        --max-batch-size 16

``--soak N`` serves the embedded sentiment and image-classification defaults and sends N mixed
requests from ``--clients`` (default 64) concurrent clients: valid texts, text lists, images as
data URLs and as uploaded files, and, each with the status it must get, malformed JSON (422),
schema violations (422), undecodable images (400), bodies over ``max_request_bytes`` (413) and
unknown models (404). It reports throughput, p50/p99, responses by kind and status, unexpected
statuses and lost responses (both must be 0), and the server's resident memory at start, after
warm-up (the first fifth: the allocator's arenas and the pipelines' buffers fill
during it) and at the end (growth after warm-up must stay under 5%); then it runs
the same valid requests through the same pipelines in-process with as many threads and prints the
throughput ratio (``--no-baseline`` skips that). ``--json PATH`` writes the report. Example::

    python benches/server_load.py --soak 100000
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import os
import random
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


def _cpus(spec: str | None) -> set[int] | None:
    """CPU numbers from a ``taskset``-style list (``0``, ``0,2``, ``0-3``), None when unset."""
    if not spec:
        return None
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _serve(config: dict, num_threads, cpus: set[int] | None = None) -> tuple[subprocess.Popen, str]:
    """`sparsepipe serve` with ``config`` (plus host, port and num_threads) on a free loopback
    port, once it is ready; pinned to ``cpus`` when given."""
    port = _free_port()
    config = {**config, "host": "127.0.0.1", "port": port}
    if num_threads:
        config["num_threads"] = num_threads
    cfg = Path(tempfile.mkdtemp()) / "server.json"
    cfg.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparsepipe", "serve", "--config", str(cfg)],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, proc.poll)
    return proc, url


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


# ---- soak: N mixed requests, statuses checked, memory watched --------------------------------

#: (kind, weight in 20, the status it must get)
SOAK_MIX = [
    ("text", 10, 200),
    ("text_list", 2, 200),
    ("image", 2, 200),
    ("image_file", 1, 200),
    ("malformed_json", 1, 422),
    ("schema_violation", 1, 422),
    ("bad_image", 1, 400),
    ("oversize", 1, 413),
    ("unknown_model", 1, 404),
]
SOAK_EXPECTED = {kind: status for kind, _, status in SOAK_MIX}
SOAK_VALID = {kind for kind, _, status in SOAK_MIX if status == 200}
SOAK_MAX_REQUEST_BYTES = 256 * 1024


def _rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _soak_image() -> bytes:
    from PIL import Image

    path = SHARED / "samples" / "images" / "coffee.png"
    img = Image.open(path).convert("RGB") if path.is_file() else Image.new("RGB", (8, 8), "red")
    out = io.BytesIO()
    img.resize((128, 128)).save(out, format="PNG")
    return out.getvalue()


def _soak_kinds(n: int) -> list[str]:
    """``n`` request kinds in the SOAK_MIX proportions, in a fixed shuffled order."""
    block = [kind for kind, weight, _ in SOAK_MIX for _ in range(weight)]
    kinds: list[str] = []
    rng = random.Random(0)
    while len(kinds) < n:
        rng.shuffle(block)
        kinds.extend(block)
    return kinds[:n]


def _soak_request(client: httpx.Client, kind: str, i: int, texts: list[str], png: bytes):
    text = texts[i % len(texts)]
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    if kind == "text":
        return client.post("/v2/models/text/infer", json={"sequences": text})
    if kind == "text_list":
        return client.post("/v2/models/text/infer", json={"sequences": [text] * 4})
    if kind == "image":
        return client.post("/v2/models/image/infer", json={"images": [url]})
    if kind == "image_file":
        files = [("files", ("image.png", png, "image/png"))]
        return client.post("/v2/models/image/infer/from_files", files=files)
    if kind == "malformed_json":
        body = b'{"sequences": ["' + text.encode()
        return client.post(
            "/v2/models/text/infer", content=body, headers={"content-type": "application/json"}
        )
    if kind == "schema_violation":
        return client.post("/v2/models/text/infer", json={"sequences": i})
    if kind == "bad_image":
        return client.post(
            "/v2/models/image/infer", json={"images": ["data:image/png;base64,AAAA"]}
        )
    if kind == "oversize":
        body = json.dumps({"sequences": "x" * SOAK_MAX_REQUEST_BYTES}).encode()
        return client.post(
            "/v2/models/text/infer", content=body, headers={"content-type": "application/json"}
        )
    if kind == "unknown_model":
        return client.post("/v2/models/nope/infer", json={"sequences": text})
    raise ValueError(kind)


def _soak_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    common = {"max_queue_size": 4 * args.clients, "max_items_per_request": None}
    config: dict = {
        "endpoints": [
            {
                "task": "sentiment-analysis",
                "name": "text",
                "max_batch_size": args.max_batch_size,
                "max_queue_delay_ms": args.max_queue_delay_ms,
                **common,
            },
            {
                "task": "image-classification",
                "name": "image",
                "max_batch_size": args.max_batch_size,
                "max_queue_delay_ms": args.max_queue_delay_ms,
                **common,
            },
        ],
        "max_request_bytes": SOAK_MAX_REQUEST_BYTES,
        "access_log": args.access_log,
    }
    return _serve(config, args.num_threads, args.server_cpus)


def _soak_http(args: argparse.Namespace, kinds: list[str], texts: list[str], png: bytes) -> dict:
    proc, url = _soak_server(args)
    n = len(kinds)
    warmup = args.warmup if args.warmup is not None else max(1, n // 5)
    marks = {max(1, n * k // 10): f"{10 * k}%" for k in range(1, 11)}
    lock = threading.Lock()
    counter = itertools.count()
    latencies: list[float] = []
    by_kind: dict[str, dict[str, int]] = {kind: {} for kind in SOAK_EXPECTED}
    lost: list[str] = []
    rss = {"start": _rss_mb(proc.pid)}
    done = 0

    def worker() -> None:
        nonlocal done
        with httpx.Client(base_url=url, timeout=120) as client:
            while (i := next(counter)) < n:
                kind = kinds[i]
                t0 = time.perf_counter()
                try:
                    status = str(_soak_request(client, kind, i, texts, png).status_code)
                except httpx.HTTPError as e:
                    status = None
                    with lock:
                        lost.append(f"{kind}: {type(e).__name__}: {e}")
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if status is not None:
                        by_kind[kind][status] = by_kind[kind].get(status, 0) + 1
                    done += 1
                    if done == warmup:
                        rss["after_warmup"] = _rss_mb(proc.pid)
                    if done in marks:
                        rss[marks[done]] = _rss_mb(proc.pid)

    if args.client_cpus:  # threads started from here on inherit it
        os.sched_setaffinity(0, args.client_cpus)
    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    cpu = {"server": -_cpu_s(proc.pid), "clients": -_cpu_s(os.getpid())}
    start = time.perf_counter()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        cpu["server"] += _cpu_s(proc.pid)
        cpu["clients"] += _cpu_s(os.getpid())
        rss["end"] = _rss_mb(proc.pid)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    unexpected = {
        kind: {s: c for s, c in statuses.items() if int(s) != SOAK_EXPECTED[kind]}
        for kind, statuses in by_kind.items()
    }
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    valid = sum(1 for k in kinds if k in SOAK_VALID)
    return {
        "requests": n,
        "warmup_requests": warmup,
        "clients": args.clients,
        "seconds": elapsed,
        "requests_per_s": n / elapsed,
        "valid_requests_per_s": valid / elapsed,
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "statuses": by_kind,
        "unexpected": {k: v for k, v in unexpected.items() if v},
        "unexpected_count": sum(sum(v.values()) for v in unexpected.values()),
        "lost": len(lost),
        "lost_examples": lost[:5],
        "rss_mb": rss,
        "cpu_s": cpu,
        "rss_growth_after_warmup": rss["end"] / rss.get("after_warmup", rss["end"]) - 1,
        "server_alive_at_end": alive,
    }


def _soak_inprocess(args: argparse.Namespace, kinds: list[str], texts: list[str], png: bytes):
    """The valid requests of the soak through the same pipelines, called by as many threads."""
    from sparsepipe import Pipeline

    if args.server_cpus:  # the server's CPUs, for the pipelines' threads and the callers'
        os.sched_setaffinity(0, args.server_cpus)
    text = Pipeline.create("sentiment-analysis", num_threads=args.num_threads)
    image = Pipeline.create("image-classification", num_threads=args.num_threads)
    calls = {
        "text": lambda i: text(sequences=texts[i % len(texts)]),
        "text_list": lambda i: text(sequences=[texts[i % len(texts)]] * 4),
        "image": lambda i: image(images=[png]),
        "image_file": lambda i: image(images=[png]),
    }
    work = [(i, k) for i, k in enumerate(kinds) if k in SOAK_VALID]
    for k in calls:
        calls[k](0)
    counter = itertools.count()

    def worker() -> None:
        while (j := next(counter)) < len(work):
            i, kind = work[j]
            calls[kind](i)

    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"valid_requests_per_s": len(work) / (time.perf_counter() - start)}


def soak(args: argparse.Namespace) -> dict:
    """Runs the soak (and the in-process baseline unless ``--no-baseline``); prints the report."""
    texts, png = _texts(), _soak_image()
    kinds = _soak_kinds(args.soak)
    report = _soak_http(args, kinds, texts, png)
    if not args.no_baseline:
        local = _soak_inprocess(args, kinds, texts, png)
        report["inprocess_valid_requests_per_s"] = local["valid_requests_per_s"]
        report["server_vs_inprocess"] = (
            report["valid_requests_per_s"] / local["valid_requests_per_s"]
        )
    r = report
    print(
        f"soak: {r['requests']} mixed requests, {r['clients']} clients, {r['seconds']:.0f} s: "
        f"{r['requests_per_s']:.1f} req/s ({r['valid_requests_per_s']:.1f} valid/s), "
        f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms"
    )
    for kind, statuses in r["statuses"].items():
        print(f"  {kind:17s} {statuses}  (expected {SOAK_EXPECTED[kind]})")
    print(f"  unexpected statuses {r['unexpected_count']}, lost responses {r['lost']}")
    print(
        f"  CPU seconds: server {r['cpu_s']['server']:.0f}, load-generating clients "
        f"{r['cpu_s']['clients']:.0f} (wall {r['seconds']:.0f} s, {os.cpu_count()} CPUs)"
    )
    m = r["rss_mb"]
    growth = 100 * r["rss_growth_after_warmup"]
    print(
        f"  server RSS: start {m['start']:.0f} MiB, after warm-up {m.get('after_warmup', 0):.0f} "
        f"MiB, end {m['end']:.0f} MiB (growth after warm-up {growth:+.1f}%)"
    )
    print("  RSS by progress: " + ", ".join(f"{k} {v:.0f}" for k, v in m.items() if "%" in k))
    if "server_vs_inprocess" in r:
        local = r["inprocess_valid_requests_per_s"]
        print(
            f"  in-process, same valid requests and threads: {local:.1f} valid/s; "
            f"server / in-process {r['server_vs_inprocess']:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sentiment-analysis")
    parser.add_argument("--url", default=None, help="an already running server")
    parser.add_argument("--clients", type=int, default=None, help="default 16 (soak: 64)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--max-queue-delay-ms", type=float, default=5.0)
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument("--soak", type=int, default=None, metavar="N", help="N mixed requests")
    parser.add_argument("--no-baseline", action="store_true", help="soak: skip the in-process run")
    parser.add_argument(
        "--warmup", type=int, default=None, metavar="K", help="soak: warm-up requests (N/5)"
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="soak: write the report")
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="soak: serve with access_log: false (no log line per request)",
    )
    parser.add_argument(
        "--server-cpus",
        default=None,
        metavar="LIST",
        help="soak: pin the server, and then the in-process baseline, to these CPUs (0 or 0-3)",
    )
    parser.add_argument(
        "--client-cpus",
        default=None,
        metavar="LIST",
        help="soak: pin the load-generating clients to these CPUs, apart from the server's",
    )
    args = parser.parse_args()
    if args.soak is not None:
        if args.url or args.soak < 1:
            parser.error("--soak N needs N >= 1 and starts its own server (no --url)")
        try:  # parsed once here: the soak reads the CPU sets
            args.server_cpus, args.client_cpus = _cpus(args.server_cpus), _cpus(args.client_cpus)
        except ValueError:
            args.server_cpus = set()
        if set() in (args.server_cpus, args.client_cpus):
            parser.error("--server-cpus/--client-cpus take CPU lists such as 0, 0,2 or 0-3")
        pinned = (args.server_cpus or set()) | (args.client_cpus or set())
        if pinned - os.sched_getaffinity(0):
            parser.error(
                f"pinned CPUs must be among this machine's {sorted(os.sched_getaffinity(0))}"
            )
        args.clients = args.clients or 64
        report = soak(args)
        failed = report["unexpected_count"] or report["lost"] or not report["server_alive_at_end"]
        raise SystemExit(1 if failed else 0)
    args.clients = args.clients or 16
    texts = _texts()

    proc = None
    url = args.url
    if url is None:
        config = {
            "endpoints": [
                {
                    "task": args.task,
                    "name": "bench",
                    "batch_size": args.max_batch_size,
                    "max_batch_size": args.max_batch_size,
                    "max_queue_delay_ms": args.max_queue_delay_ms,
                }
            ]
        }
        proc, url = _serve(config, args.num_threads)
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
