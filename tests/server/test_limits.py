"""Per-request limits: too many items, too long a text or too big an image gets 413 naming the
limit, on every route (JSON, tensors, file uploads), and the endpoint keeps serving."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from sparsepipe import ConfigError
from sparsepipe.server import create_app, load_server_config

pytestmark = pytest.mark.server


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def server(start_server):
    config = {
        "endpoints": [
            {
                "task": "sentiment-analysis",
                "name": "sentiment",
                "max_items_per_request": 3,
                "max_text_chars": 40,
            },
            {"task": "image-classification", "name": "images", "max_image_pixels": 64 * 64},
        ]
    }
    return start_server(create_app(config))


def test_too_many_items_or_too_long_a_text_gets_413_naming_the_limit(server):
    c = server.client
    path = "/v2/models/sentiment/infer"
    r = c.post(path, json={"sequences": ["good"] * 4})
    assert r.status_code == 413 and "max_items_per_request" in r.json()["error"]
    assert "holds 4 items" in r.json()["error"]
    r = c.post(path, json={"sequences": ["fine", ["fine", "x" * 41]]})
    assert r.status_code == 413 and "sequences[1][1] holds 41 characters" in r.json()["error"]
    assert "max_text_chars" in r.json()["error"]
    tensor = {
        "inputs": [{"name": "sequences", "shape": [4], "datatype": "BYTES", "data": ["a"] * 4}]
    }
    assert c.post(path, json=tensor).status_code == 413
    r = c.post(path, json={"sequences": ["good", "x" * 40, "bad"]})
    assert r.status_code == 200 and len(r.json()["labels"]) == 3
    assert 'kind="too_large"' in c.get("/metrics").text


def test_an_image_over_max_image_pixels_gets_413_on_every_route(server):
    c = server.client
    big = "data:image/png;base64," + base64.b64encode(_png(65, 64)).decode()
    r = c.post("/v2/models/images/infer", json={"images": [big]})
    assert r.status_code == 413
    assert "images[0] is 65x64 = 4160 pixels" in r.json()["error"]
    assert "max_image_pixels" in r.json()["error"]
    files = [
        ("files", ("a.png", _png(64, 64), "image/png")),
        ("files", ("b.png", _png(80, 80), "image/png")),
    ]
    r = c.post("/v2/models/images/infer/from_files", files=files)
    assert r.status_code == 413 and "images[1]" in r.json()["error"]
    small = "data:image/png;base64," + base64.b64encode(_png(64, 64)).decode()
    r = c.post("/v2/models/images/infer", json={"images": [small]})
    assert r.status_code == 200 and len(r.json()["labels"]) == 1


def test_limits_have_defaults_can_be_lifted_and_are_checked():
    (ep,) = load_server_config({"endpoints": [{"task": "ner"}]}).endpoints
    assert (ep.max_items_per_request, ep.max_text_chars, ep.max_image_pixels) == (
        1024,
        1_000_000,
        64_000_000,
    )
    (lifted,) = load_server_config(
        {"endpoints": [{"task": "ner", "max_items_per_request": None}]}
    ).endpoints
    assert lifted.max_items_per_request is None
    for key in ("max_items_per_request", "max_text_chars", "max_image_pixels"):
        with pytest.raises(ConfigError, match=rf"endpoints\[0\]\.{key}"):
            load_server_config({"endpoints": [{"task": "ner", key: 0}]})
