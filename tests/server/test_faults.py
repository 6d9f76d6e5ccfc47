"""Misbehaving clients and failing pipelines: a client that disconnects mid-request or sends its
body slowly holds no slot or worker, and a pipeline that raises any exception gets its request a
500 with an error id while the endpoint, and every other endpoint, keeps serving."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import re
import socket
import time

import httpx
import pytest
from sparsepipe.server import create_app

pytestmark = [pytest.mark.server, pytest.mark.slow]

TEXTS = [
    f"review {i}: the film was {'great' if i % 2 else 'dull'} and far too long" for i in range(300)
]


@pytest.fixture(scope="module")
def server(start_server):
    config = {
        "num_threads": 1,
        "endpoints": [
            {
                "task": "sentiment-analysis",
                "name": "sentiment",
                "max_batch_size": 8,
                "max_queue_delay_ms": 20,
                "max_queue_size": 4,
                "max_items_per_request": None,
            },
            {"task": "ner", "name": "ner", "kwargs": {"aggregation_strategy": "simple"}},
        ],
    }
    return start_server(create_app(config))


def _in_flight(server) -> int:
    return server.server.config.app.state.in_flight()


def _wait_idle(server, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while _in_flight(server):
        assert time.time() < deadline, f"{_in_flight(server)} requests still held"
        time.sleep(0.05)


def _raw_request(server, body: bytes, *, send: int | None = None) -> socket.socket:
    """A socket that sent a POST to the sentiment endpoint with a Content-Length of the whole
    ``body`` but only its first ``send`` bytes (all when None)."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"POST /v2/models/sentiment/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    s.sendall(head + body[: len(body) if send is None else send])
    return s


def _all_answered(server, n: int = 4) -> None:
    """``n`` concurrent requests (the endpoint's max_queue_size) all get their own answer."""
    texts = [["fine"], ["awful and boring"], ["great fun"], ["dull"]][:n]
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        answers = list(
            pool.map(
                lambda t: server.client.post("/v2/models/sentiment/infer", json={"sequences": t}),
                texts,
            )
        )
    assert [a.status_code for a in answers] == [200] * n, [a.text for a in answers]


def test_clients_that_disconnect_mid_request_leak_no_slot(server):
    body = json.dumps({"sequences": TEXTS}).encode()
    for _ in range(3):
        sockets = [_raw_request(server, body) for _ in range(4)]
        time.sleep(0.3)  # admitted and running or queued
        for s in sockets:
            s.close()  # gone before the answer
    _wait_idle(server)
    _all_answered(server)


def test_slow_bodies_take_no_slot_and_leak_nothing_when_cut(server):
    body = json.dumps({"sequences": TEXTS}).encode()
    slow = [_raw_request(server, body, send=len(body) // 2) for _ in range(16)]
    try:
        time.sleep(0.3)
        assert _in_flight(server) == 0  # a request is admitted once its body has arrived
        t0 = time.time()
        _all_answered(server)
        assert time.time() - t0 < 60
        slow[0].sendall(body[len(body) // 2 :])  # a slow client that finishes is served
        answer = slow[0].recv(1 << 20)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    finally:
        for s in slow:
            s.close()
    _wait_idle(server)
    _all_answered(server)


class _Boom(Exception):
    pass


FAILURES = [
    RuntimeError("simulated"),
    ValueError("simulated"),
    KeyError("simulated"),
    MemoryError(),
    RecursionError("simulated"),
    ZeroDivisionError("simulated"),
    AssertionError("simulated"),
    _Boom("custom"),
    SystemExit(3),
]


@pytest.mark.parametrize("failure", FAILURES, ids=lambda e: type(e).__name__)
def test_any_pipeline_exception_is_a_500_with_an_error_id_and_isolated(server, caplog, failure):
    pipe = server.server.config.app.state.endpoints["sentiment"].pipeline
    original = pipe.process_inputs

    def fails_on_boom(inputs):
        if "boom" in repr(inputs):
            raise failure
        return original(inputs)

    pipe.process_inputs = fails_on_boom
    c = server.client
    try:
        with (
            caplog.at_level(logging.ERROR, logger="sparsepipe.server"),
            concurrent.futures.ThreadPoolExecutor(6) as pool,
        ):
            bad = pool.submit(c.post, "/v2/models/sentiment/infer", json={"sequences": ["boom"]})
            good = [
                pool.submit(c.post, "/v2/models/sentiment/infer", json={"sequences": [t]})
                for t in ("fine", "awful", "great")
            ]
            ner = [
                pool.submit(c.post, "/v2/models/ner/infer", json={"inputs": "Maria lives in Paris"})
                for _ in range(2)
            ]
            bad, good, ner = bad.result(), [g.result() for g in good], [n.result() for n in ner]
    finally:
        pipe.process_inputs = original
    assert bad.status_code == 500, bad.text
    error_id = bad.json()["error_id"]
    assert re.fullmatch(r"[0-9a-f]{12}", error_id)
    assert "server log" in bad.json()["error"]
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is logged under that id
    assert [g.status_code for g in good] == [200, 200, 200]
    assert [n.status_code for n in ner] == [200, 200]
    assert [e["word"] for e in ner[0].json()["predictions"][0]][:1] == ["Maria"]
    _wait_idle(server)
    _all_answered(server)
    r = httpx.get(f"{server.url}/v2/health/ready")
    assert r.status_code == 200
