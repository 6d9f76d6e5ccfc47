"""The HTTP server, over real HTTP: routes, OpenAPI, metrics, errors, concurrency, SageMaker."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import re
import subprocess
import sys
import time

import httpx
import pytest
from sparsepipe import ConfigError, Pipeline
from sparsepipe.server import create_app, load_server_config

from .conftest import free_port


@pytest.fixture(scope="module")
def server(start_server, shared_dir):
    config = {
        "endpoints": [
            # room for the 64 concurrent clients below (the default queue holds 32 on 2 cores;
            # past it a request gets 503 by design, tested in test_backpressure.py)
            {
                "task": "sentiment-analysis",
                "name": "sentiment",
                "route": "/predict",
                "max_queue_size": 64,
            },
            {"task": "ner", "kwargs": {"aggregation_strategy": "simple"}},
            {
                "task": "question-answering",
                "name": "qa",
                "model": str(shared_dir / "reference" / "nlp" / "question-answering"),
            },
            {
                "task": "yolo",
                "name": "yolo",
                "model": str(shared_dir / "models" / "yolov3-tiny-coco"),
            },
        ],
        "max_request_bytes": 2_000_000,
    }
    return start_server(create_app(config))


@pytest.fixture(scope="module")
def coffee(shared_dir):
    return (shared_dir / "samples" / "images" / "coffee.png").read_bytes()


def test_health_and_metadata(server):
    c = server.client
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").json() == {"ready": True}
    assert c.get("/v2").json()["name"] == "sparsepipe"
    meta = c.get("/v2/models/sentiment").json()
    assert meta["task"] == "text-classification" and "sequences" in json.dumps(meta["inputs"])
    assert meta["inputs"] == [{"name": "sequences", "datatype": "BYTES", "shape": [-1]}]
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [
        ("labels", "BYTES"),
        ("scores", "FP32"),
    ]
    assert meta["input_schema"]["title"] == "TextClassificationInput"
    assert c.get("/v2/models/token-classification/ready").json()["ready"] is True
    for path in ("/v2/models/nope", "/v2/models/nope/ready"):
        r = c.get(path)
        assert r.status_code == 404 and "served: " in r.json()["error"]


def test_infer_every_task(server, coffee):
    c = server.client
    r = c.post("/v2/models/sentiment/infer", json={"sequences": ["I love it", "awful"]})
    assert r.status_code == 200 and r.json()["labels"] == ["positive", "negative"]
    assert c.post("/predict", json={"sequences": "I love it"}).json()["labels"] == ["positive"]
    r = c.post(
        "/v2/models/token-classification/infer", json={"inputs": "Call John Smith in Austin"}
    )
    assert {e["entity"] for e in r.json()["predictions"][0]} >= {"GIVEN_NAME", "SURNAME"}
    r = c.post(
        "/v2/models/qa/infer", json={"question": "who is mark?", "context": "mark is batman"}
    )
    assert r.json()["answer"] == "batman"
    r = c.post(
        "/v2/models/yolo/infer/from_files", files=[("files", ("c.png", coffee, "image/png"))]
    )
    assert r.status_code == 200 and "cup" in r.json()["labels"][0]
    url = "data:image/png;base64," + base64.b64encode(coffee).decode()
    assert "cup" in c.post("/v2/models/yolo/infer", json={"images": [url]}).json()["labels"][0]


def test_openapi_is_generated_from_the_schemas(server):
    spec = server.client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    body = spec["paths"]["/v2/models/sentiment/infer"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    assert "sequences" in spec["components"]["schemas"][ref]["properties"]
    assert "/v2/models/yolo/infer/from_files" in spec["paths"]
    assert server.client.get("/docs").status_code == 200
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(spec)


def test_every_error_the_server_answers_is_documented_with_its_body(server):
    from sparsepipe.server.responses import ErrorBody, ValidationErrorBody

    c = server.client
    spec = c.get("/openapi.json").json()
    for path in ("/v2/models/sentiment/infer", "/predict", "/v2/models/yolo/infer/from_files"):
        codes = set(spec["paths"][path]["post"]["responses"])
        assert codes >= {"200", "400", "413", "422", "500", "503"}, path
        assert "Retry-After" in spec["paths"][path]["post"]["responses"]["503"]["headers"]
    assert set(spec["paths"]["/v2/models/{name}"]["get"]["responses"]) >= {"200", "404"}
    metrics_doc = spec["paths"]["/metrics"]["get"]["responses"]["200"]
    assert "text/plain" in metrics_doc["content"]
    tensor = {"inputs": [{"name": "sequences", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}
    cases = [
        ("post", "/v2/models/sentiment/infer", {"json": {"sequences": 5}}),
        ("post", "/v2/models/sentiment/infer", {"content": b"{not json"}),
        ("post", "/v2/models/sentiment/infer", {"json": tensor}),
        ("post", "/v2/models/sentiment/infer", {"content": b"x" * 2_000_001}),
        ("post", "/v2/models/yolo/infer", {"json": {"images": ["data:image/png;base64,AAAA"]}}),
        ("get", "/v2/models/nope", {}),
        ("get", "/v2/models/nope/ready", {}),
    ]
    seen = set()
    for method, path, kwargs in cases:
        headers = {"content-type": "application/json"} if "content" in kwargs else None
        r = c.request(method, path, headers=headers, **kwargs)
        template = path if path in spec["paths"] else path.replace("nope", "{name}")
        documented = spec["paths"][template][method]["responses"]
        assert str(r.status_code) in documented, (path, r.status_code, r.text)
        model = ValidationErrorBody if r.status_code == 422 else ErrorBody
        model.model_validate(r.json())
        seen.add(r.status_code)
    assert seen == {400, 404, 413, 422}
    r = c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")


def test_the_schema_states_what_the_server_enforces(server):
    c = server.client
    schemas = c.get("/openapi.json").json()["components"]["schemas"]
    (pair,) = [
        alt
        for alt in schemas["TextClassificationInput"]["properties"]["sequences"]["anyOf"][1][
            "items"
        ]["anyOf"]
        if alt.get("type") == "array"
    ]
    assert (pair["minItems"], pair["maxItems"]) == (1, 2)
    images = schemas["ObjectDetectionInput"]["properties"]["images"]
    assert {alt["type"] for alt in images["anyOf"]} == {"string", "array"}
    path = "/v2/models/sentiment/infer"
    for served in ([], [["fine"]], [["good", "pair"]], ["one", ["two"]]):
        r = c.post(path, json={"sequences": served})
        assert r.status_code == 200, (served, r.text)
    for refused in ([[]], [["a", "b", "c"]]):
        assert c.post(path, json={"sequences": refused}).status_code == 422
    r = c.post("/v2/models/yolo/infer", json={"images": {}})
    assert r.status_code == 400 and "unsupported type dict" in r.json()["error"]
    assert c.post("/v2/models/yolo/infer", json={"images": []}).json()["labels"] == []


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


def test_metrics_count_requests(server):
    c = server.client
    before = c.get("/metrics").text
    for _ in range(3):
        c.post("/v2/models/sentiment/infer", json={"sequences": "fine"})
    c.post("/v2/models/sentiment/infer", json={"sequences": 5})
    after = c.get("/metrics").text
    ok = dict(endpoint="sentiment", status="200")
    bad = dict(endpoint="sentiment", status="422")
    assert (
        _metric(after, "sparsepipe_requests_total", **ok)
        - _metric(before, "sparsepipe_requests_total", **ok)
        == 3
    )
    assert (
        _metric(after, "sparsepipe_requests_total", **bad)
        - _metric(before, "sparsepipe_requests_total", **bad)
        == 1
    )
    for stage in ("total", "queue", "pre", "engine", "post"):
        assert f'stage="{stage}"' in after
    assert "sparsepipe_batch_size_bucket" in after


def test_concurrent_clients_get_their_own_answers(server):
    texts = [f"{'great' if i % 2 else 'terrible'} movie number {i}" for i in range(64)]
    expected = Pipeline.create("sentiment-analysis")(texts).labels

    def ask(i):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return c.post("/v2/models/sentiment/infer", json={"sequences": texts[i]}).json()

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(ask, range(64)))
    assert [a["labels"][0] for a in answers] == expected


MALFORMED = [
    ("/v2/models/sentiment/infer", {"content": b"{not json"}, 422),
    ("/v2/models/sentiment/infer", {"content": b""}, 422),
    ("/v2/models/sentiment/infer", {"content": b"[]"}, 422),
    ("/v2/models/sentiment/infer", {"content": b"null"}, 422),
    ("/v2/models/sentiment/infer", {"content": b"\xff\xfe"}, 422),
    ("/v2/models/sentiment/infer", {"json": {}}, 422),
    ("/v2/models/sentiment/infer", {"json": {"sequences": None}}, 422),
    ("/v2/models/sentiment/infer", {"json": {"sequences": 1}}, 422),
    ("/v2/models/sentiment/infer", {"json": {"sequences": 1.5}}, 422),
    ("/v2/models/sentiment/infer", {"json": {"sequences": True}}, 422),
    ("/v2/models/sentiment/infer", {"json": {"sequences": {"a": 1}}}, 422),
    ("/v2/models/sentiment/infer", {"json": {"sequences": [1, 2]}}, 422),
    ("/v2/models/sentiment/infer", {"json": {"sequences": [["a", "b", "c"]]}}, 422),
    ("/v2/models/sentiment/infer", {"json": {"sequences": [["a", "b", "c"]]}}, 422),
    ("/v2/models/sentiment/infer", {"json": {"sequences": [[1, 2]]}}, 422),
    ("/v2/models/sentiment/infer", {"json": {"sequences": "x", "top_k": 2}}, 422),
    ("/v2/models/sentiment/infer", {"json": {"sequence": "x"}}, 422),
    (
        "/v2/models/sentiment/infer",
        {"content": b'{"sequences": "\\ud800"}', "headers": {"content-type": "application/json"}},
        400,
    ),
    ("/v2/models/sentiment/infer", {"json": ["I love it"]}, 422),
    ("/v2/models/sentiment/infer", {"json": "I love it"}, 422),
    ("/v2/models/token-classification/infer", {"json": {}}, 422),
    ("/v2/models/token-classification/infer", {"json": {"inputs": 3}}, 422),
    ("/v2/models/token-classification/infer", {"json": {"inputs": [None]}}, 422),
    ("/v2/models/token-classification/infer", {"json": {"inputs": [["nested"]]}}, 422),
    ("/v2/models/token-classification/infer", {"json": {"text": "x"}}, 422),
    ("/v2/models/qa/infer", {"json": {"question": "who?"}}, 422),
    ("/v2/models/qa/infer", {"json": {"context": "c"}}, 422),
    ("/v2/models/qa/infer", {"json": {"question": "", "context": "c"}}, 422),
    ("/v2/models/qa/infer", {"json": {"question": "q", "context": ""}}, 422),
    ("/v2/models/qa/infer", {"json": {"question": ["a", "b"], "context": ["c"]}}, 422),
    ("/v2/models/qa/infer", {"json": {"question": "a", "context": ["c"]}}, 422),
    ("/v2/models/qa/infer", {"json": {"question": 1, "context": "c"}}, 422),
    ("/v2/models/qa/infer", {"json": {"question": "q", "context": "c", "x": 1}}, 422),
    ("/v2/models/yolo/infer", {"json": {}}, 422),
    ("/v2/models/yolo/infer", {"json": {"images": "data:image/png;base64,@@@"}}, 400),
    ("/v2/models/yolo/infer", {"json": {"images": "data:image/png;base64,aGVsbG8="}}, 400),
    ("/v2/models/yolo/infer", {"json": {"images": ["/nonexistent/x.png"]}}, 400),
    ("/v2/models/yolo/infer", {"json": {"images": 42}}, 400),
    ("/v2/models/yolo/infer", {"json": {"images": None}}, 400),
    (
        "/v2/models/yolo/infer/from_files",
        {"files": [("files", ("a.png", b"junk", "image/png"))]},
        400,
    ),
    ("/v2/models/yolo/infer/from_files", {"files": [("files", ("a.png", b"", "image/png"))]}, 400),
    ("/v2/models/yolo/infer/from_files", {"files": [("other", ("a.png", b"x", "image/png"))]}, 422),
    ("/v2/models/yolo/infer/from_files", {"data": {"files": "not a file"}}, 422),
    ("/v2/models/nope/infer", {"json": {"sequences": "x"}}, 404),
    ("/v2/models/nope/infer/from_files", {"json": {}}, 404),
    ("/v2/models/sentiment/infer", {"content": b'{"sequences": "' + b"a" * 3_000_000 + b'"}'}, 413),
    (
        "/v2/models/yolo/infer/from_files",
        {"files": [("files", ("a.png", b"\0" * 3_000_000, "image/png"))]},
        413,
    ),
    ("/v2/models/sentiment/infer/from_files", {"json": {}}, 404),
    ("/v2/models/sentiment/other", {"json": {}}, 404),
    ("/v2/models/sentiment", {"json": {}}, 405),
    ("/predict", {"json": {"sequences": None}}, 422),
    ("/predict", {"content": b"]["}, 422),
    (
        "/predict",
        {"content": b"\xff5@\x00", "headers": {"content-type": "application/json"}},
        400,
    ),
]


@pytest.mark.parametrize("path, kwargs, status", MALFORMED)
def test_malformed_requests_get_the_right_4xx(server, path, kwargs, status):
    from sparsepipe.server.responses import ErrorBody, ValidationErrorBody

    r = server.client.post(path, **kwargs)
    assert r.status_code == status, r.text
    body = (ValidationErrorBody if status == 422 else ErrorBody).model_validate(r.json())
    if status == 405:
        assert "POST is not allowed" in body.error
    assert server.client.get("/v2/health/ready").status_code == 200
    ok = server.client.post("/v2/models/sentiment/infer", json={"sequences": "still fine"})
    assert ok.status_code == 200


def test_internal_errors_get_an_error_id_and_the_server_keeps_serving(server, caplog):
    ep = server.client  # break the sentiment pipeline for one call
    app_endpoints = (
        server.server.config.app.state.endpoints
        if hasattr(server.server.config.app, "state")
        else None
    )
    pipe = app_endpoints["sentiment"].pipeline
    original = pipe.process_engine_outputs

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    pipe.process_engine_outputs = boom
    try:
        r = ep.post("/v2/models/sentiment/infer", json={"sequences": "x"})
    finally:
        pipe.process_engine_outputs = original
    assert r.status_code == 500 and len(r.json()["error_id"]) == 12
    assert ep.post("/v2/models/sentiment/infer", json={"sequences": "x"}).status_code == 200


def test_sagemaker_integration(start_server, shared_dir, coffee, monkeypatch):
    monkeypatch.setenv(
        "SPARSEPIPE_SAGEMAKER_MODEL_DIR", str(shared_dir / "models" / "yolov3-tiny-coco")
    )
    s = start_server(create_app({"endpoints": [{"task": "yolo"}], "integration": "sagemaker"}))
    assert s.client.get("/ping").status_code == 200
    r = s.client.post("/invocations", content=coffee, headers={"content-type": "image/png"})
    assert r.status_code == 200 and "cup" in r.json()["labels"][0]
    url = "data:image/png;base64," + base64.b64encode(coffee).decode()
    r = s.client.post("/invocations", json={"images": [url]})
    assert "cup" in r.json()["labels"][0]
    r = s.client.post("/invocations", content=b"x", headers={"content-type": "text/csv"})
    assert r.status_code == 415
    r = s.client.post("/invocations", content=b"{bad", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = s.client.post("/invocations", content=b"junk", headers={"content-type": "image/png"})
    assert r.status_code == 400


@pytest.mark.parametrize(
    "config, match",
    [
        ({}, "endpoints"),
        ({"endpoints": []}, "endpoints"),
        ({"endpoints": [{"task": "translation"}]}, r"endpoints\[0\]\.task"),
        ({"endpoints": [{"task": "ner", "batch_sise": 2}]}, r"endpoints\[0\]\.batch_sise"),
        ({"endpoints": [{"task": "ner"}], "prot": 1}, "prot"),
        ({"endpoints": [{"task": "ner"}, {"task": "ner"}]}, "unique"),
        ({"endpoints": [{"task": "ner", "name": "a b"}]}, "name"),
        ({"endpoints": [{"task": "ner"}], "integration": "lambda"}, "integration"),
        (
            {
                "endpoints": [
                    {"task": "ner", "name": "a", "route": "/same"},
                    {"task": "ner", "name": "b", "route": "/same/"},
                ]
            },
            "endpoint routes must be unique; repeated: /same",
        ),
        (
            {"endpoints": [{"task": "ner", "route": "/v2/models/x/infer"}]},
            r"route '/v2/models/x/infer' is one of the server's own routes",
        ),
        ({"endpoints": [{"task": "ner", "route": "/metrics"}]}, "one of the server's own routes"),
        (
            {"endpoints": [{"task": "ner", "kwargs": {"num_threads": 1}}]},
            r"kwargs.num_threads is not a task option; set it with the server's num_threads",
        ),
        (
            {"endpoints": [{"task": "ner", "kwargs": {"batch_size": 2}}]},
            r"kwargs.batch_size .*the endpoint's batch_size",
        ),
        ({"endpoints": [{"task": "ner", "kwargs": {"model_path": "m"}}]}, r"kwargs.model_path"),
        ({"endpoints": [{"task": "ner"}], "port": 99999}, r"port"),
    ],
)
def test_bad_server_config_names_the_key(config, match):
    with pytest.raises(ConfigError, match=match):
        load_server_config(config)


def test_bad_endpoint_fails_before_serving(tmp_path):
    with pytest.raises(
        ConfigError, match=r"(?s)endpoint .token-classification.*aggregation_strategy"
    ):
        create_app({"endpoints": [{"task": "ner", "kwargs": {"aggregation_strategy": "x"}}]})
    cfg = tmp_path / "server.yaml"
    cfg.write_text("endpoints:\n  - task: sentiment-analysis\n    batch_size: 0\n")
    with pytest.raises(ConfigError, match=r"endpoints\[0\]\.batch_size"):
        load_server_config(cfg)


def test_cli_serve_subprocess(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sparsepipe",
            "serve",
            "--task",
            "sentiment-analysis",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/v2/models/text-classification/infer",
                    json={"sequences": "I love it"},
                    timeout=10,
                )
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        assert r.json()["labels"] == ["positive"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
    bad = subprocess.run(
        [sys.executable, "-m", "sparsepipe", "serve", "--task", "translation"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "unknown task" in bad.stderr
