"""Schemathesis hooks for tests/server/test_fuzz.py: positive cases made valid where the OpenAPI
document cannot say what valid is.

JSON Schema cannot state that a string is a decodable image, nor that two lists have the same
length. A positive (schema-valid) case generated for an image route therefore gets a real image in
place of each generated image string or uploaded file (a PNG whose size comes from the generated
value, 1 to 64 pixels a side), and a question-answering case with two lists gets them cut to the
same length. Negative cases are sent as generated.
"""

from __future__ import annotations

import base64
import io
import zlib
from typing import Any

import schemathesis
from PIL import Image
from schemathesis import GenerationMode


def _png(seed: Any) -> bytes:
    """A PNG whose size and colour follow ``seed`` (deterministic, so runs are reproducible)."""
    h = zlib.crc32(repr(seed).encode())
    width, height = 1 + h % 64, 1 + (h >> 8) % 64
    colour = ((h >> 16) & 255, (h >> 4) & 255, (h >> 12) & 255)
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def _data_url(seed: Any) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(seed)).decode()


def _images(value: Any, make: Any) -> Any:
    if isinstance(value, list):
        return [make(v) for v in value]
    return make(value)


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return case
    body = case.body
    if not isinstance(body, dict):
        return case
    if "images" in body:
        body["images"] = _images(body["images"], _data_url)
    if case.operation.path.endswith("/from_files") and "files" in body:
        body["files"] = _images(body["files"], _png)
    q, c = body.get("question"), body.get("context")
    if isinstance(q, list) and isinstance(c, list):
        n = min(len(q), len(c))
        body["question"], body["context"] = q[:n], c[:n]
    return case
