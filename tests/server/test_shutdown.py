"""Graceful shutdown of `sparsepipe serve`: on SIGTERM readiness turns 503 and new requests get
503 while the requests in flight finish with their answers; then the process exits with 0."""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import time

import httpx
import pytest

from .conftest import start_cli_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

TEXTS = [f"review {i}: the film was {'great' if i % 2 else 'dull'} and long" for i in range(600)]


def _start(tmp_path, grace: float) -> tuple[subprocess.Popen, str]:
    config = {
        "num_threads": 1,
        "shutdown_grace_s": grace,
        "endpoints": [
            {
                "task": "sentiment-analysis",
                "name": "s",
                "batch_size": 16,
                "max_items_per_request": None,
            }
        ],
    }
    return start_cli_server(tmp_path, config)


def test_sigterm_drains_requests_in_flight_then_exits_0(tmp_path):
    proc, url = _start(tmp_path, grace=120)
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            calls = [
                pool.submit(
                    httpx.post,
                    f"{url}/v2/models/s/infer",
                    json={"sequences": TEXTS},
                    timeout=300,
                )
                for _ in range(3)
            ]
            time.sleep(1.0)  # the three requests are in flight (each takes seconds)
            assert not any(c.done() for c in calls), "requests finished before SIGTERM"
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            ready = httpx.get(f"{url}/v2/health/ready", timeout=10)
            assert ready.status_code == 503 and ready.json() == {"ready": False}
            late = httpx.post(f"{url}/v2/models/s/infer", json={"sequences": ["hi"]}, timeout=10)
            assert late.status_code == 503 and "shutting down" in late.json()["error"]
            assert httpx.get(f"{url}/v2/models/s/ready", timeout=10).status_code == 503
            answers = [c.result(timeout=300) for c in calls]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert all(len(a.json()["labels"]) == len(TEXTS) for a in answers)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


def test_a_second_signal_exits_at_once(tmp_path):
    proc, url = _start(tmp_path, grace=600)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            call = pool.submit(
                httpx.post, f"{url}/v2/models/s/infer", json={"sequences": TEXTS * 8}, timeout=300
            )
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            t0 = time.time()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            assert time.time() - t0 < 30
            cut = call.exception(timeout=60) or call.result()
            assert isinstance(cut, httpx.HTTPError) or cut.status_code != 200, cut.text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
