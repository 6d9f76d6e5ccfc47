"""api_key: inference routes need 'Authorization: Bearer <key>' (401 otherwise, documented in
OpenAPI); health, metadata and metrics stay open; the key may come from SPARSEPIPE_API_KEY."""

from __future__ import annotations

import pytest
from sparsepipe import ConfigError
from sparsepipe.server import create_app, load_server_config

pytestmark = pytest.mark.server

KEY = "s3cret-key-for-tests"
BODY = {"sequences": ["I love it"]}


@pytest.fixture(scope="module")
def server(start_server):
    config = {
        "api_key": KEY,
        "endpoints": [{"task": "sentiment-analysis", "name": "sentiment", "route": "/predict"}],
    }
    return start_server(create_app(config))


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("path", ["/v2/models/sentiment/infer", "/predict", "/v2/models/x/infer"])
@pytest.mark.parametrize("headers", [{}, _auth("wrong-key-123"), {"Authorization": KEY}])
def test_inference_without_the_key_gets_401(server, path, headers):
    r = server.client.post(path, json=BODY, headers=headers)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in r.json()["error"]


def test_tensor_requests_need_the_key_too(server):
    tensor = {"inputs": [{"name": "sequences", "shape": [1], "datatype": "BYTES", "data": ["ok"]}]}
    path = "/v2/models/sentiment/infer"
    assert server.client.post(path, json=tensor).status_code == 401
    assert server.client.post(path, json=tensor, headers=_auth(KEY)).status_code == 200


def test_with_the_key_inference_works_and_the_rest_stays_open(server):
    r = server.client.post("/v2/models/sentiment/infer", json=BODY, headers=_auth(KEY))
    assert r.status_code == 200 and r.json()["labels"] == ["positive"]
    assert server.client.post("/predict", json=BODY, headers=_auth(KEY)).status_code == 200
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/sentiment", "/metrics"):
        assert server.client.get(path).status_code == 200, path


def test_openapi_marks_inference_as_needing_the_key(server):
    spec = server.client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path in ("/v2/models/sentiment/infer", "/predict"):
        post = spec["paths"][path]["post"]
        assert post["security"] == [{"bearer": []}] and "401" in post["responses"]
    assert "security" not in spec["paths"]["/v2/health/ready"]["get"]


def test_the_key_comes_from_the_environment_and_is_checked(monkeypatch):
    endpoints = [{"task": "ner"}]
    monkeypatch.setenv("SPARSEPIPE_API_KEY", "from-the-environment")
    assert load_server_config({"endpoints": endpoints}).api_key == "from-the-environment"
    assert load_server_config({"endpoints": endpoints, "api_key": "given-wins"}).api_key == (
        "given-wins"
    )
    assert "from-the-environment" not in repr(load_server_config({"endpoints": endpoints}))
    monkeypatch.delenv("SPARSEPIPE_API_KEY")
    assert load_server_config({"endpoints": endpoints}).api_key is None
    with pytest.raises(ConfigError, match="api_key"):
        load_server_config({"endpoints": endpoints, "api_key": "short"})
    with pytest.raises(ConfigError, match="SageMaker authenticates callers itself"):
        load_server_config(
            {"endpoints": endpoints, "api_key": "long-enough-key", "integration": "sagemaker"}
        )
