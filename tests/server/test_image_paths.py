"""Image paths in requests: refused unless the server config lists their directory in
``image_dirs``; inside it, read on every route (JSON, tensors, SageMaker), and nothing outside it
(``..``, symlinks, absolute paths elsewhere) is ever opened."""

from __future__ import annotations

import base64
import shutil

import pytest
from sparsepipe import ConfigError, Pipeline
from sparsepipe.cli import main
from sparsepipe.server import create_app, load_server_config

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def images(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("served")
    allowed = root / "allowed"
    (allowed / "sub").mkdir(parents=True)
    outside = root / "outside"
    outside.mkdir()
    coffee = shared_dir / "samples" / "images" / "coffee.png"
    shutil.copy(coffee, allowed / "coffee.png")
    shutil.copy(coffee, allowed / "sub" / "cup.png")
    shutil.copy(coffee, outside / "secret.png")
    (allowed / "link.png").symlink_to(outside / "secret.png")
    return root


@pytest.fixture(scope="module")
def expected(images):
    return Pipeline.create("image-classification", top_k=2)(images / "allowed" / "coffee.png")


@pytest.fixture(scope="module")
def closed(start_server):
    return start_server(create_app({"endpoints": [{"task": "image-classification"}]}))


@pytest.fixture(scope="module")
def opened(start_server, images):
    config = {
        "endpoints": [{"task": "image-classification", "kwargs": {"top_k": 2}}],
        "image_dirs": [str(images / "allowed")],
    }
    return start_server(create_app(config))


PATH = "/v2/models/image-classification/infer"


def test_without_image_dirs_a_path_is_refused_with_400_saying_what_to_send(closed, images):
    for path in (str(images / "allowed" / "coffee.png"), "/etc/passwd", "coffee.png"):
        r = closed.client.post(PATH, json={"images": [path]})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error.startswith("images[0]: ") and "reads no files named in requests" in error
        assert "data URL" in error and "from_files" in error and "image_dirs" in error
    r = closed.client.post(PATH, json={"images": "x" * 5000})
    assert r.status_code == 400 and len(r.json()["error"]) < 600  # the value is shortened
    tensor = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["/x"]}]}
    r = closed.client.post(PATH, json=tensor)
    assert r.status_code == 400 and "reads no files" in r.json()["error"]


def test_data_urls_and_uploads_still_work_without_image_dirs(closed, images, expected):
    data = (images / "allowed" / "coffee.png").read_bytes()
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    r = closed.client.post(PATH, json={"images": url})
    assert r.status_code == 200 and r.json()["labels"][0] == expected.labels[0]
    r = closed.client.post(PATH + "/from_files", files=[("files", ("c.png", data, "image/png"))])
    assert r.status_code == 200 and r.json()["labels"][0][0] == expected.labels[0]
    r = closed.client.post(PATH, json={"images": ["data:image/png;base64,@@"]})
    assert r.status_code == 400
    assert r.json()["error"].startswith("images[0]: the image data URL is not valid base64")


def test_inside_image_dirs_absolute_and_relative_paths_are_read(opened, images, expected):
    absolute = str(images / "allowed" / "coffee.png")
    for path in (absolute, "coffee.png", "sub/cup.png", "sub/../coffee.png"):
        r = opened.client.post(PATH, json={"images": path})
        assert r.status_code == 200, (path, r.text)
        assert r.json()["labels"] == expected.labels
        assert r.json()["scores"] == pytest.approx(expected.scores, rel=1e-5)
    tensor = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [absolute]}]}
    r = opened.client.post(PATH, json=tensor)
    assert r.status_code == 200 and r.json()["outputs"]


@pytest.mark.parametrize(
    "path, says",
    [
        ("../outside/secret.png", "outside the server's image_dirs"),
        ("{root}/outside/secret.png", "outside the server's image_dirs"),
        ("{root}/allowed/../outside/secret.png", "outside the server's image_dirs"),
        ("link.png", "outside the server's image_dirs"),  # a symlink pointing out
        ("/etc/passwd", "outside the server's image_dirs"),
        ("missing.png", "no image file 'missing.png' in image_dirs"),
        ("sub", "no image file 'sub' in image_dirs"),
        ("bad\x00name.png", "is not a valid path"),
        ("https://example.com/a.png", "URLs are not downloaded"),
    ],
)
def test_paths_outside_image_dirs_get_400_and_are_never_opened(opened, images, path, says):
    path = path.format(root=images)
    r = opened.client.post(PATH, json={"images": [path]})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("images[0]: ") and says in r.json()["error"]


def test_sagemaker_takes_the_same_rule(start_server, images, expected):
    endpoint = {"task": "image-classification", "model": "zoo:efficientnet-lite0-imagenet"}
    closed = start_server(create_app({"endpoints": [endpoint], "integration": "sagemaker"}))
    path = str(images / "allowed" / "coffee.png")
    r = closed.client.post("/invocations", json={"images": path})
    assert r.status_code == 400 and "reads no files named in requests" in r.json()["error"]
    r = closed.client.post("/invocations", json={"images": "data:image/png;base64,@@"})
    assert r.status_code == 400 and "not valid base64" in r.json()["error"]
    opened = start_server(
        create_app(
            {
                "endpoints": [endpoint],
                "integration": "sagemaker",
                "image_dirs": [str(images / "allowed")],
            }
        )
    )
    r = opened.client.post("/invocations", json={"images": "coffee.png"})
    assert r.status_code == 200 and r.json()["labels"][0] == expected.labels[0]


def test_image_dirs_must_exist_and_are_resolved(images, monkeypatch):
    monkeypatch.chdir(images)
    config = load_server_config(
        {"endpoints": [{"task": "image-classification"}], "image_dirs": ["allowed"]}
    )
    assert config.image_dirs == [str((images / "allowed").resolve())]
    for bad in (str(images / "nope"), str(images / "allowed" / "coffee.png"), ""):
        with pytest.raises(ConfigError, match=r"image_dirs\[0\].*is not an existing directory"):
            load_server_config({"endpoints": [{"task": "ner"}], "image_dirs": [bad]})


def test_serve_image_dir_flag_is_checked(images, capsys):
    missing = str(images / "nope")
    argv = ["serve", "--task", "image-classification", "--image-dir", missing, "--port", "0"]
    assert main(argv) == 1
    assert "image_dirs[0]" in capsys.readouterr().err
