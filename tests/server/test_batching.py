"""Dynamic batching: concurrent requests merged into one pipeline call, each client its answer."""

from __future__ import annotations

import concurrent.futures
import re

import httpx
import pytest
from sparsepipe import Pipeline
from sparsepipe.server import create_app


@pytest.fixture(scope="module")
def server(start_server, shared_dir):
    qa = str(shared_dir / "reference" / "nlp" / "question-answering")
    config = {
        "endpoints": [
            {
                "task": "sentiment-analysis",
                "name": "s",
                "max_batch_size": 16,
                "batch_size": 16,
                "max_queue_delay_ms": 100,
            },
            {
                "task": "qa",
                "model": qa,
                "name": "qa",
                "max_batch_size": 8,
                "max_queue_delay_ms": 100,
            },
        ]
    }
    return start_server(create_app(config))


def _post_all(server, path, bodies):
    def post(body):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return c.post(path, json=body)

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def test_concurrent_requests_are_merged_and_answered_individually(server):
    texts = [f"{'a wonderful' if i % 3 else 'a dreadful'} film, take {i}" for i in range(64)]
    bodies = [{"sequences": t} if i % 2 else {"sequences": [t, t]} for i, t in enumerate(texts)]
    expected = Pipeline.create("sentiment-analysis")(texts).labels
    replies = _post_all(server, "/v2/models/s/infer", bodies)
    for i, r in enumerate(replies):
        assert r.status_code == 200
        labels = r.json()["labels"]
        assert labels == ([expected[i]] if i % 2 else [expected[i]] * 2)
    metrics = server.client.get("/metrics").text
    count = float(re.search(r'sparsepipe_batch_size_count\{endpoint="s"\} (\S+)', metrics)[1])
    total = float(re.search(r'sparsepipe_batch_size_sum\{endpoint="s"\} (\S+)', metrics)[1])
    assert total / count > 1.5  # requests were merged


def test_a_bad_request_does_not_fail_its_batch(server):
    bodies = [{"sequences": f"fine text {i}"} for i in range(7)]
    replies = _post_all(server, "/v2/models/s/infer", bodies[:3])
    assert all(r.status_code == 200 for r in replies)

    def post(i):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            if i == 3:
                return c.post(
                    "/v2/models/s/infer",
                    content=b'{"sequences": "bad \\ud800"}',
                    headers={"content-type": "application/json"},
                )
            return c.post("/v2/models/s/infer", json=bodies[i])

    with concurrent.futures.ThreadPoolExecutor(7) as pool:
        replies = list(pool.map(post, range(7)))
    assert [r.status_code for r in replies] == [200, 200, 200, 400, 200, 200, 200]


def test_question_answering_keeps_single_and_list_shapes(server):
    bodies = [
        {"question": "who is mark?", "context": "mark is batman"},
        {"question": ["who is mark?", "who is bob?"], "context": ["mark is batman", "bob is x"]},
    ] * 4
    replies = _post_all(server, "/v2/models/qa/infer", bodies)
    for body, r in zip(bodies, replies):
        out = r.json()
        if isinstance(body["question"], str):
            assert out["answer"] == "batman" and isinstance(out["answers"][0], dict)
        else:
            assert out["answer"][0] == "batman" and len(out["answers"]) == 2
