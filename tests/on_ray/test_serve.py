"""Ray Serve: a server config deployed on a local Ray cluster answers as the local server does."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from server.conftest import free_port
from sparsepipe import Pipeline
from sparsepipe.server import create_app

from on_ray.conftest import same_answer

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.server]

CONFIG: dict[str, Any] = {
    "num_threads": 1,
    "max_request_bytes": 2_000_000,
    "endpoints": [
        {
            "task": "text-classification",
            "name": "sentiment",
            "max_batch_size": 4,
            "max_queue_delay_ms": 20,
            "route": "/predict",
            "ray_actor_options": {"num_cpus": 0.5},
        },
        {"task": "ner", "name": "pii", "ray_actor_options": {"num_cpus": 0.5}},
    ],
}


@pytest.fixture(scope="module")
def deployed(ray_cluster: Any) -> Any:
    """CONFIG served by Ray Serve on a free loopback port (deleted at the end of the module)."""
    from ray import serve
    from sparsepipe.ray.serve import APP_NAME, run

    port = free_port()
    run(CONFIG, host="127.0.0.1", port=port, blocking=False)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    yield client
    client.close()
    serve.delete(APP_NAME)
    serve.shutdown()


@pytest.fixture(scope="module")
def local() -> Any:
    """The same config on the local (in-process) server, for side-by-side comparison."""
    local_config = json.loads(json.dumps(CONFIG))
    for ep in local_config["endpoints"]:
        ep.pop("ray_actor_options")
    with TestClient(create_app(local_config)) as client:
        yield client


TEXTS = [f"the movie number {i} was {'wonderful' if i % 3 else 'a dull mess'}" for i in range(24)]


def test_answers_equal_the_in_process_pipeline(deployed):
    sentiment = Pipeline.create("text-classification", num_threads=1)
    ner = Pipeline.create("ner", num_threads=1)
    r = deployed.post("/v2/models/sentiment/infer", json={"sequences": TEXTS[:5]})
    assert r.status_code == 200, r.text
    assert same_answer(r.json(), sentiment(sequences=TEXTS[:5]).model_dump())
    r = deployed.post("/predict", json={"sequences": "I loved it"})
    assert same_answer(r.json(), sentiment(sequences="I loved it").model_dump())
    text = "mail maria.g@example.org or call 555-0100, Maria Garcia"
    r = deployed.post("/v2/models/pii/infer", json={"inputs": text})
    assert r.status_code == 200, r.text
    assert same_answer(r.json(), ner(inputs=text).model_dump())


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(deployed):
    sentiment = Pipeline.create("text-classification", num_threads=1)
    bodies = [{"sequences": t} for t in TEXTS] + [{"sequences": TEXTS[:3]}, {"sequences": []}]

    def call(body: dict[str, Any]) -> Any:
        return deployed.post("/v2/models/sentiment/infer", json=body)

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(call, bodies))
    for body, r in zip(bodies, responses):
        assert r.status_code == 200, r.text
        assert same_answer(r.json(), sentiment(**body).model_dump()), body
    metrics = deployed.get("/metrics").text
    count = _metric(metrics, 'sparsepipe_batch_size_count{endpoint="sentiment"}')
    items = _metric(metrics, 'sparsepipe_batch_size_sum{endpoint="sentiment"}')
    assert count >= len(bodies) and items > count  # some requests shared a merged call


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


BAD_REQUESTS = [
    ("/v2/models/sentiment/infer", {"json": {"sequences": 1}}),
    ("/v2/models/sentiment/infer", {"json": {"sequences": [["a", "b", "c"]]}}),
    ("/v2/models/sentiment/infer", {"content": b"]["}),
    ("/v2/models/sentiment/infer", {"json": {"sequence": "x"}}),
    (
        "/v2/models/sentiment/infer",
        {"content": b'{"sequences": "\\ud800"}', "headers": {"content-type": "application/json"}},
    ),
    (
        "/v2/models/sentiment/infer",
        {
            "json": {
                "inputs": [{"name": "sequences", "shape": [1], "datatype": "BYTES", "data": ["x"]}],
                "parameters": {"top_k": 0},
            }
        },
    ),
    (
        "/v2/models/sentiment/infer",
        {"json": {"inputs": [{"name": "sequences", "shape": [2], "datatype": "BYTES"}]}},
    ),
    ("/v2/models/pii/infer", {"json": {"inputs": [None]}}),
    ("/v2/models/nope/infer", {"json": {"sequences": "x"}}),
    ("/v2/models/sentiment", {"json": {}}),
    ("/v2/models/sentiment/infer", {"content": b'{"sequences": "' + b"a" * 3_000_000 + b'"}'}),
]


@pytest.mark.parametrize("path, kwargs", BAD_REQUESTS)
def test_errors_keep_their_codes_and_bodies(deployed, local, path, kwargs):
    ours = deployed.post(path, **kwargs)
    expected = local.post(path, **kwargs)
    assert 400 <= expected.status_code < 500
    assert ours.status_code == expected.status_code, ours.text
    assert ours.json() == expected.json()
    ok = deployed.post("/v2/models/sentiment/infer", json={"sequences": "still fine"})
    assert ok.status_code == 200


def test_metadata_openapi_and_metrics_match_the_local_server(deployed, local):
    for path in ("/v2", "/v2/health/ready", "/v2/models/sentiment", "/v2/models/pii/ready"):
        assert deployed.get(path).json() == local.get(path).json(), path
    ours, theirs = deployed.get("/openapi.json").json(), local.get("/openapi.json").json()
    assert ours["paths"] == theirs["paths"]
    assert ours["components"] == theirs["components"]
    deployed.post("/v2/models/pii/infer", json={"inputs": "hello Maria"})
    metrics = deployed.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'sparsepipe_requests_total{endpoint="pii",status="200"}' in metrics.text


def test_a_replica_that_dies_mid_request_gives_503_and_is_replaced(deployed):
    import ray

    text = " ".join(["Maria Garcia lives at 12 Long Street and mails maria@example.org."] * 12)
    result: dict[str, Any] = {}

    def slow_call() -> None:
        result["r"] = deployed.post("/v2/models/pii/infer", json={"inputs": [text] * 48})

    worker = threading.Thread(target=slow_call)
    worker.start()
    time.sleep(1.0)
    replicas = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::sparsepipe#pii#")
    ]
    assert replicas, "no replica actor of the pii deployment"
    for a in replicas:
        ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=True)
    worker.join(timeout=120)
    assert not worker.is_alive(), "the request in flight hung"
    r = result["r"]
    assert r.status_code == 503, r.text
    assert "pii" in r.json()["error"] and r.headers.get("retry-after")
    deadline = time.time() + 120
    while True:
        r = deployed.post("/v2/models/pii/infer", json={"inputs": "hello Maria"})
        if r.status_code == 200 or time.time() > deadline:
            break
        assert r.status_code == 503, r.text
        time.sleep(1)
    assert r.status_code == 200, "the replica was not replaced"
