"""``sparsepipe serve --backend ray`` on a two-node Ray cluster on loopback: a head node and a
worker node with its own resource, each endpoint's replica pinned to one of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server.conftest import free_port
from sparsepipe import Pipeline

from on_ray.conftest import same_answer, start_serve, stop_serve, wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.server]

RAY = str(Path(sys.executable).with_name("ray"))
#: the nodes, `ray status` and the server share no auth token: loopback only
ENV = {
    **os.environ,
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",  # see conftest.py
}


def _start_node(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: Any) -> Iterator[str]:
    """The address of a head node (1 CPU, resource ``head``) joined by a worker node (1 CPU,
    resource ``worker``), both on 127.0.0.1; both stopped at the end."""
    logs = tmp_path_factory.mktemp("ray-nodes")
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = _start_node(
        [
            "--head",
            "--port",
            str(port),
            "--num-cpus",
            "1",
            "--resources",
            '{"head": 1}',
            "--include-dashboard",
            "false",
            "--ray-client-server-port",
            str(free_port()),
        ],
        logs / "head.log",
    )
    procs = [head]
    try:
        time.sleep(8)
        worker = _start_node(
            ["--address", address, "--num-cpus", "1", "--resources", '{"worker": 1}'],
            logs / "worker.log",
        )
        procs.append(worker)
        deadline = time.time() + 120
        while True:
            status = subprocess.run(
                [RAY, "status", "--address", address], capture_output=True, text=True, env=ENV
            )
            if status.returncode == 0 and "worker" in status.stdout and "head" in status.stdout:
                break
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                logs_text = "".join(f.read_text(errors="replace") for f in logs.iterdir())
                raise RuntimeError(f"the two-node cluster did not start:\n{logs_text[-4000:]}")
            time.sleep(2)
        yield address
    finally:
        for p in reversed(procs):
            _stop(p)


def test_serve_backend_ray_on_two_nodes(two_nodes, tmp_path):
    cfg = tmp_path / "server.yaml"
    cfg.write_text(
        "num_threads: 1\n"
        "endpoints:\n"
        "  - task: text-classification\n"
        "    name: sentiment\n"
        "    max_batch_size: 4\n"
        "    ray_actor_options: {num_cpus: 0.5, resources: {worker: 0.5}}\n"
        "  - task: ner\n"
        "    name: pii\n"
        "    ray_actor_options: {num_cpus: 0.5, resources: {head: 0.5}}\n"
    )
    port = free_port()
    log = tmp_path / "serve.log"
    proc = start_serve(
        [
            "--address",
            two_nodes,
            "--proxy-location",
            "HeadOnly",
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        log,
        ENV,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        wait_ready(proc, client, "/v2/models/pii/ready", log)
        sentiment = Pipeline.create("text-classification", num_threads=1)
        ner = Pipeline.create("ner", num_threads=1)
        texts = ["a wonderful film", "dull and far too long"]
        r = client.post("/v2/models/sentiment/infer", json={"sequences": texts})
        assert r.status_code == 200, r.text
        assert same_answer(r.json(), sentiment(sequences=texts).model_dump())
        text = "Maria Garcia, maria.g@example.org"
        r = client.post("/v2/models/pii/infer", json={"inputs": text})
        assert same_answer(r.json(), ner(inputs=text).model_dump())
        assert client.post("/v2/models/pii/infer", json={"inputs": 3}).status_code == 422
        assert client.post("/v2/models/nope/infer", json={}).status_code == 404
        metrics = client.get("/metrics").text
        assert 'sparsepipe_requests_total{endpoint="sentiment",status="200"} 1.0' in metrics
        assert 'sparsepipe_requests_total{endpoint="pii",status="422"} 1.0' in metrics
    finally:
        client.close()
        stop_serve(proc, log)
