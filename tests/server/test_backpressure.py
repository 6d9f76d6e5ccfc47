"""Bounded load: a full endpoint answers 503 with Retry-After at once, a slow request 504 after
its endpoint's request_timeout_s, and both free their slot for the requests after them."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Optional

import anyio
import pytest
from pydantic import BaseModel
from sparsepipe import ConfigError, Pipeline
from sparsepipe.server import create_app, load_server_config
from sparsepipe.server.app import LocalEndpoint
from sparsepipe.server.batching import Merged

pytestmark = pytest.mark.server


class Gated(LocalEndpoint):
    """The sentiment endpoint, whose requests wait for ``gate`` before running."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    async def infer(self, body: BaseModel, options: Optional[dict[str, Any]]) -> Merged:
        self.entered.release()
        await anyio.to_thread.run_sync(self.gate.wait)
        return await super().infer(body, options)


@pytest.fixture(scope="module")
def sentiment() -> Pipeline:
    return Pipeline.create("sentiment-analysis", num_threads=1)


def _gated_server(start_server, sentiment, **endpoint: Any):
    config = load_server_config({"endpoints": [{"task": "sentiment-analysis", **endpoint}]})
    (ep,) = config.endpoints
    gated = Gated(ep, sentiment)
    return start_server(create_app(config, endpoints={gated.name: gated})), gated


BODY = {"sequences": ["I love it"]}
PATH = "/v2/models/text-classification/infer"


def test_a_full_endpoint_answers_503_at_once_and_serves_again_when_drained(start_server, sentiment):
    server, gated = _gated_server(start_server, sentiment, max_queue_size=2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        held = [pool.submit(server.client.post, PATH, json=BODY) for _ in range(2)]
        for _ in range(2):
            assert gated.entered.acquire(timeout=30)
        t0 = time.perf_counter()
        r = server.client.post(PATH, json=BODY)
        assert time.perf_counter() - t0 < 5
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert "max_queue_size" in r.json()["error"]
        gated.gate.set()
        answers = [f.result(timeout=60) for f in held]
    expected = sentiment(**BODY).model_dump()
    assert [a.json() for a in answers] == [expected, expected]
    assert server.client.post(PATH, json=BODY).json() == expected
    metrics = server.client.get("/metrics").text
    assert 'kind="overloaded"' in metrics and 'status="503"' in metrics


def test_a_slow_request_gets_504_and_frees_its_slot(start_server, sentiment):
    server, gated = _gated_server(start_server, sentiment, max_queue_size=1, request_timeout_s=0.5)
    t0 = time.perf_counter()
    r = server.client.post(PATH, json=BODY)
    assert r.status_code == 504 and "request_timeout_s (0.5 s)" in r.json()["error"]
    assert time.perf_counter() - t0 < 10
    gated.gate.set()
    r = server.client.post(PATH, json=BODY)  # the slot is free again: no 503
    assert r.status_code == 200 and r.json() == sentiment(**BODY).model_dump()
    assert 'kind="timeout"' in server.client.get("/metrics").text


def test_a_request_timed_out_in_the_batch_queue_is_never_run(start_server, sentiment):
    config = load_server_config(
        {
            "endpoints": [
                {
                    "task": "sentiment-analysis",
                    "max_batch_size": 8,
                    "max_queue_delay_ms": 400,
                    "request_timeout_s": 0.05,
                }
            ]
        }
    )
    (ep,) = config.endpoints
    endpoint = LocalEndpoint(ep, sentiment)
    calls: list[Any] = []
    assert endpoint.batcher is not None
    endpoint.batcher.pipeline = lambda body: calls.append(body) or sentiment(body)
    server = start_server(create_app(config, endpoints={endpoint.name: endpoint}))
    r = server.client.post(PATH, json=BODY)
    assert r.status_code == 504
    time.sleep(0.6)  # past the batch window: the batcher drops the abandoned request
    assert calls == []


def test_queue_limits_default_per_backend_and_are_checked():
    config = load_server_config(
        {"num_threads": 2, "endpoints": [{"task": "ner", "max_batch_size": 8}, {"task": "qa"}]}
    )
    batched, single = config.endpoints
    assert config.queue_limit(batched) == 64 and config.queue_limit(single) == 32
    assert config.queue_limit(batched, "ray") is None  # Serve's max_ongoing_requests bound it
    for bad in ({"max_queue_size": 0}, {"request_timeout_s": 0}, {"request_timeout_s": "soon"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            load_server_config({"endpoints": [{"task": "ner", **bad}]})


def test_the_openapi_document_lists_504(start_server, sentiment):
    server, _ = _gated_server(start_server, sentiment)
    spec = server.client.get("/openapi.json").json()
    assert "504" in spec["paths"][PATH]["post"]["responses"]
