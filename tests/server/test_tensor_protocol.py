"""Open Inference Protocol v2 tensors on `sparsepipe serve`: tritonclient (binary tensors, its
default, and JSON) against a real server on loopback gives the in-process pipeline's answers,
and malformed tensor requests get 400 with a message while the server keeps serving."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sparsepipe import Pipeline
from sparsepipe.server import create_app

httpclient = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http]")


@pytest.fixture(scope="module")
def served(start_server, shared_dir):
    config = {
        "endpoints": [
            {"task": "sentiment-analysis", "name": "sentiment"},
            {"task": "ner", "kwargs": {"aggregation_strategy": "simple"}},
            {"task": "image-classification", "name": "classifier", "kwargs": {"top_k": 2}},
        ]
    }
    server = start_server(create_app(config))
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    return server, client


def _texts(values, binary=True):
    tensor = httpclient.InferInput("sequences", [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=object), binary_data=binary)
    return tensor


def _strings(array):
    return [v.decode() if isinstance(v, bytes) else v for v in array.ravel().tolist()]


@pytest.mark.parametrize("binary", [True, False])
def test_text_classification_through_tritonclient(served, binary):
    _, client = served
    texts = ["I love it", "awful, a waste of time"]
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("labels", "scores")]
    result = client.infer("sentiment", [_texts(texts, binary)], outputs=outputs)
    expected = Pipeline.create("sentiment-analysis")(texts)
    assert _strings(result.as_numpy("labels")) == expected.labels
    np.testing.assert_allclose(result.as_numpy("scores"), expected.scores, atol=1e-5)
    assert result.as_numpy("scores").dtype == np.float32
    two = client.infer("sentiment", [_texts(texts, binary)], parameters={"top_k": 2})
    assert two.as_numpy("labels").shape == (2, 2)  # per-call options as request parameters


@pytest.mark.parametrize("binary", [True, False])
def test_token_classification_entities_are_json(served, binary):
    _, client = served
    text = "My name is Sarah Jessica Parker and I live in London"
    tensor = httpclient.InferInput("inputs", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([text], dtype=object), binary_data=binary)
    wanted = [httpclient.InferRequestedOutput("predictions", binary_data=binary)]
    result = client.infer("token-classification", [tensor], outputs=wanted)
    entities = [json.loads(v) for v in _strings(result.as_numpy("predictions"))]
    expected = Pipeline.create("ner", aggregation_strategy="simple")([text])
    assert entities == [[e.model_dump() for e in expected.predictions[0]]]


@pytest.mark.parametrize("binary", [True, False])
def test_image_classification_takes_encoded_images(served, shared_dir, binary):
    import base64

    _, client = served
    images = [
        (shared_dir / "samples" / "images" / name).read_bytes()
        for name in ("coffee.png", "chelsea.png")
    ]
    tensor = httpclient.InferInput("images", [2], "BYTES")
    if binary:
        tensor.set_data_from_numpy(np.array(images, dtype=object))
    else:  # JSON strings: the images as data URLs
        urls = ["data:image/png;base64," + base64.b64encode(i).decode() for i in images]
        tensor.set_data_from_numpy(np.array(urls, dtype=object), binary_data=False)
    wanted = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("labels", "scores")]
    result = client.infer("classifier", [tensor], outputs=wanted)
    expected = Pipeline.create("image-classification", top_k=2)(images)
    labels = result.as_numpy("labels")
    assert labels.shape == (2, 2)
    assert [_strings(row) for row in labels] == expected.labels
    np.testing.assert_allclose(result.as_numpy("scores"), expected.scores, atol=1e-5)


def test_model_metadata_through_tritonclient(served):
    _, client = served
    meta = client.get_model_metadata("sentiment")
    assert meta["inputs"] == [{"name": "sequences", "datatype": "BYTES", "shape": [-1]}]


def _post(server, body, headers=None):
    import httpx

    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json", **(headers or {})}
    return httpx.post(f"{server.url}/v2/models/sentiment/infer", content=content, headers=headers)


@pytest.mark.parametrize(
    "body, match",
    [
        (
            {"inputs": [{"name": "sequences", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            "sequences",
        ),
        (
            {"inputs": [{"name": "sequences", "shape": [2], "datatype": "BYTES", "data": ["a"]}]},
            "data holds 1 values",
        ),
        (
            {"inputs": [{"name": "texts", "shape": [1], "datatype": "BYTES", "data": ["a"]}]},
            "no such input; the inputs are sequences",
        ),
        (
            {"inputs": [{"name": "sequences", "shape": [1], "datatype": "STRING", "data": ["a"]}]},
            "unknown datatype",
        ),
        (
            {"inputs": [{"name": "sequences", "shape": "1", "datatype": "BYTES", "data": ["a"]}]},
            "shape must be a list",
        ),
        (
            {
                "inputs": [{"name": "sequences", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                "outputs": [{"name": "logits"}],
            },
            "no output named 'logits'",
        ),
        (
            {
                "inputs": [{"name": "sequences", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                "parameters": ["top_k"],
            },
            "parameters must be an object",
        ),
        (
            {
                "inputs": [{"name": "sequences", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                "parameters": {"top_k": 0},
            },
            "top_k",
        ),
        (
            {"inputs": [{"name": "sequences", "shape": [1], "datatype": ["BYTES"], "data": ["a"]}]},
            "unknown datatype ['BYTES']",
        ),
        (
            {
                "inputs": [
                    {"name": "sequences", "shape": [2**32, 2**32], "datatype": "BYTES", "data": []}
                ]
            },
            "data holds 0 values",
        ),
        (
            {
                "inputs": [{"name": "sequences", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                "outputs": [{"name": "labels", "parameters": [1]}],
            },
            "output 'labels': parameters must be an object",
        ),
        (
            {
                "inputs": [{"name": "sequences", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                "parameters": {"binary_data_output": "no"},
            },
            "binary_data_output must be true or false, got 'no'",
        ),
        (
            {
                "inputs": [{"name": "sequences", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                "outputs": [{"name": "labels", "parameters": {"binary_data": 1}}],
            },
            "output 'labels': binary_data must be true or false, got 1",
        ),
    ],
)
def test_malformed_tensor_requests_get_400(served, body, match):
    server, client = served
    r = _post(server, body)
    assert r.status_code == 400, r.text
    assert match in r.json()["error"]
    ok = client.infer("sentiment", [_texts(["fine"])])
    assert _strings(ok.as_numpy("labels")) in (["positive"], ["negative"])


def test_image_tensors_must_be_bytes_and_sizes_integers(served):
    server, _ = served
    import httpx

    url = f"{server.url}/v2/models/classifier/infer"
    body = {"inputs": [{"name": "images", "shape": [1, 2], "datatype": "UINT8", "data": [1, 2]}]}
    r = httpx.post(url, json=body)
    assert r.status_code == 400 and "images are BYTES tensors" in r.json()["error"], r.text
    header = {
        "inputs": [
            {
                "name": "sequences",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": 4.0},
            }
        ]
    }
    head = json.dumps(header).encode()
    r = _post(server, head + b"\x00" * 4, {"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 400
    assert "binary_data_size must be an integer >= 0, got 4.0" in r.json()["error"]


def test_truncated_binary_part_gets_400(served):
    server, client = served
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "sequences",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 13},
                }
            ]
        }
    ).encode()
    body = header + (9).to_bytes(4, "little") + b"I lo"  # 8 of the 13 bytes, element cut short
    r = _post(server, body, {"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400 and "binary" in r.json()["error"]
    r = _post(server, b"{}", {"Inference-Header-Content-Length": "99"})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    r = _post(server, b'{"inputs": [', {"Inference-Header-Content-Length": "12"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = _post(server, b"{}", {"Inference-Header-Content-Length": "9" * 5000})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    deep = b"[" * 100_000 + b"]" * 100_000
    r = _post(server, deep, {"Inference-Header-Content-Length": str(len(deep))})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = _post(server, b'{"datatype": 1, "x": ' + deep + b"}")
    assert r.status_code in (400, 422), r.text
    assert client.is_server_live()


def test_the_tasks_own_schema_still_works_beside_tensors(served):
    server, _ = served
    r = _post(server, {"sequences": ["I love it"]})
    assert r.status_code == 200 and r.json()["labels"] == ["positive"]
    import httpx

    entities = httpx.post(
        f"{server.url}/v2/models/token-classification/infer", json={"inputs": ["I am Sarah"]}
    )
    assert entities.status_code == 200 and "predictions" in entities.json()


def test_request_id_is_echoed_and_unknown_models_get_404(served):
    from tritonclient.utils import InferenceServerException

    _, client = served
    result = client.infer("sentiment", [_texts(["fine"])], request_id="req-7")
    assert result.get_response()["id"] == "req-7"
    assert result.get_response()["model_name"] == "sentiment"
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [_texts(["fine"])])
