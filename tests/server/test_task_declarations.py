"""A task declares how the server batches it and which field takes images; the server knows no
task names, so a newly registered task is batched and takes uploads with no other file changed."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import re
from typing import Any, ClassVar, Optional

import httpx
import numpy as np
import pytest
from pydantic import BaseModel
from sparsepipe import ConfigError, Pipeline
from sparsepipe.pipeline import BatchFields
from sparsepipe.server import create_app

Image = pytest.importorskip("PIL.Image")


class PictureInput(BaseModel):
    pictures: Any
    note: str = ""


class PictureOutput(BaseModel):
    widths: list[int]
    rows: list[int]


class PictureWidths(Pipeline):
    """Widths of the pictures; the engine (a small MLP) runs one row per picture."""

    input_schema = PictureInput
    output_schema = PictureOutput
    batch_fields: ClassVar[Optional[BatchFields]] = BatchFields(("pictures",), ("widths", "rows"))
    image_field: ClassVar[Optional[str]] = "pictures"

    def process_inputs(self, inputs: PictureInput) -> Any:
        pictures = inputs.pictures if isinstance(inputs.pictures, list) else [inputs.pictures]
        widths = [Image.open(io.BytesIO(p)).size[0] for p in pictures]
        rows = np.zeros((len(widths), self.engine.input_shapes[0][1]), np.float32)
        return [rows], {"widths": widths}

    def process_engine_outputs(self, engine_outputs: list[np.ndarray], **kwargs: Any) -> Any:
        n = len(kwargs["widths"])
        return PictureOutput(widths=kwargs["widths"], rows=[engine_outputs[0].shape[0]] * n)


@pytest.fixture(scope="module")
def picture_task():
    Pipeline.register("picture-widths")(PictureWidths)
    return "picture-widths"


def _png(width: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, 3), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def _data_url(width: int) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(width)).decode()


@pytest.fixture(scope="module")
def server(start_server, model_zoo, picture_task):
    path, _ = model_zoo.get("mlp", 0.0)
    endpoint = {
        "task": picture_task,
        "model": str(path),
        "name": "pics",
        "batch_size": 8,
        "max_batch_size": 8,
        "max_queue_delay_ms": 200,
    }
    return start_server(create_app({"endpoints": [endpoint]}))


def test_a_new_task_is_batched_as_it_declares(server):
    def post(i):
        body = {"pictures": _data_url(10 + i) if i % 2 else [_data_url(10 + i)] * 2}
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return c.post("/v2/models/pics/infer", json=body)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(post, range(8)))
    for i, r in enumerate(replies):
        assert r.status_code == 200, r.text
        assert r.json()["widths"] == ([10 + i] if i % 2 else [10 + i] * 2)
    metrics = server.client.get("/metrics").text
    count = float(re.search(r'sparsepipe_batch_size_count\{endpoint="pics"\} (\S+)', metrics)[1])
    total = float(re.search(r'sparsepipe_batch_size_sum\{endpoint="pics"\} (\S+)', metrics)[1])
    assert total / count > 1.5  # requests were merged
    # a merged call ran the engine on more rows than any one request sent
    assert max(max(r.json()["rows"]) for r in replies) > 2


def test_a_new_image_task_takes_uploaded_files(server):
    files = [("files", (f"{w}.png", _png(w), "image/png")) for w in (21, 5)]
    r = server.client.post("/v2/models/pics/infer/from_files", files=files)
    assert r.status_code == 200, r.text
    assert r.json()["widths"] == [21, 5]


def test_a_bad_data_url_in_the_declared_image_field_is_a_400(server):
    r = server.client.post("/v2/models/pics/infer", json={"pictures": "data:image/png;base64,@@"})
    assert r.status_code == 400
    assert "not valid base64" in r.json()["error"]


def test_a_new_image_task_takes_raw_image_bodies_on_sagemaker(model_zoo, picture_task):
    from fastapi.testclient import TestClient

    path, _ = model_zoo.get("mlp", 0.0)
    app = create_app(
        {"integration": "sagemaker", "endpoints": [{"task": picture_task, "model": str(path)}]}
    )
    with TestClient(app) as client:
        r = client.post("/invocations", content=_png(17), headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        assert r.json()["widths"] == [17]
        r = client.post("/invocations", json={"pictures": [_data_url(4)]})
        assert r.status_code == 200, r.text
        assert r.json()["widths"] == [4]


def test_batch_fields_naming_a_missing_field_is_a_config_error(model_zoo):
    class Misdeclared(PictureWidths):
        batch_fields = BatchFields(("pictures",), ("heights",))

    Pipeline.register("misdeclared-pictures")(Misdeclared)
    path, _ = model_zoo.get("mlp", 0.0)
    endpoint = {"task": "misdeclared-pictures", "model": str(path), "max_batch_size": 4}
    with pytest.raises(ConfigError, match=r"output field\(s\) \['heights'\].*PictureOutput"):
        create_app({"endpoints": [endpoint]})


@pytest.mark.parametrize("package", ["sparsepipe.server", "sparsepipe.cli"])
def test_the_server_and_the_cli_name_no_task(package):
    import importlib
    import pathlib

    from sparsepipe.pipeline import registered_tasks

    names = [n for task, aliases in registered_tasks().items() for n in (task, *aliases)]
    assert "question-answering" in names and "yolo" in names
    for source in pathlib.Path(importlib.import_module(package).__file__).parent.glob("*.py"):
        text = source.read_text()
        for name in names:
            for quoted in (f'"{name}"', f"'{name}'"):
                assert quoted not in text, f"{source.name} names task {name}"
