"""Model resolution: files, directories, embedded zoo: models, hf: from the local cache."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from sparsepipe import ModelLoadError, Pipeline, models


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tc_dir(shared_dir):
    return shared_dir / "reference" / "nlp" / "text-classification"


def test_zoo_lists_the_embedded_defaults():
    names = {m.name: m for m in models.list()}
    assert set(names) == {
        "sentiment-minilm-sparse80",
        "pii-ner-minilm",
        "efficientnet-lite0-imagenet",
        "yolov3-tiny-coco",
    }
    text_files = ("tokenizer.json",)
    for info in names.values():
        extra = text_files if info.task in ("text-classification", "token-classification") else ()
        for f in ("model.onnx", "config.json", "MODEL_CARD.md", "LICENSE", "NOTICE", *extra):
            assert (info.path / f).is_file(), (info.name, f)
        assert info.uri == f"zoo:{info.name}"
    assert names["pii-ner-minilm"].license == "CC-BY-4.0"
    assert names["efficientnet-lite0-imagenet"].license == "Apache-2.0"
    assert (names["efficientnet-lite0-imagenet"].path / "preprocessor_config.json").is_file()
    resolved = models.resolve("zoo:pii-ner-minilm")
    assert resolved.onnx_path.name == "model.onnx" and resolved.file("tokenizer.json")


def test_each_task_default_is_an_embedded_model_of_that_task():
    from sparsepipe.registry import lookup

    by_uri = {m.uri: m for m in models.list()}
    for task in (
        "text-classification",
        "token-classification",
        "image-classification",
        "object-detection",
    ):
        default = lookup(task).default_model_path
        assert default in by_uri, task
        assert by_uri[default].task == task


def test_model_resolution_names_no_task():
    from sparsepipe.pipeline import registered_tasks

    text = Path(models.__file__).read_text()
    for task, aliases in registered_tasks().items():
        for name in (task, *aliases):
            assert f'"{name}"' not in text and f"'{name}'" not in text, name
    # the embedded models' tasks come from their own zoo.json
    assert [m.name for m in models.list()] == [
        "sentiment-minilm-sparse80",
        "pii-ner-minilm",
        "efficientnet-lite0-imagenet",
        "yolov3-tiny-coco",
    ]


def test_unknown_zoo_name_lists_the_available_ones():
    with pytest.raises(ModelLoadError, match=r"zoo:sentiment-minilm-sparse80"):
        models.resolve("zoo:bert-large")


def test_file_and_directory(tc_dir):
    d = models.resolve(tc_dir)
    assert d.onnx_path == tc_dir / "model.onnx" and d.directory == tc_dir
    f = models.resolve(str(tc_dir / "model.onnx"))
    assert f.onnx_path == tc_dir / "model.onnx" and f.file("config.json") == tc_dir / "config.json"
    assert d.json("config.json")["id2label"]["0"] == "negative"
    assert d.json("preprocessor_config.json") == {}


def test_bad_paths(tmp_path, tc_dir):
    with pytest.raises(ModelLoadError, match=r"does not exist.*zoo:"):
        models.resolve(tmp_path / "nope")
    for empty in ("", "  "):
        with pytest.raises(ModelLoadError, match=r"model_path is an empty string.*zoo:"):
            models.resolve(empty)
    if hasattr(os, "mkfifo"):
        (tmp_path / "fifo").mkdir()
        os.mkfifo(tmp_path / "fifo" / "pipe.onnx")  # opening it would block until a writer came
        for special in (tmp_path / "fifo" / "pipe.onnx", "/dev/zero"):
            with pytest.raises(ModelLoadError, match=r"is not a regular file or a directory"):
                models.resolve(special)
        with pytest.raises(ModelLoadError, match=r"no model.onnx in the directory"):
            models.resolve(tmp_path / "fifo")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match=r"not an .onnx file"):
        models.resolve(tmp_path / "notes.txt")
    with pytest.raises(ModelLoadError, match=r"no model.onnx"):
        models.resolve(tmp_path)
    (tmp_path / "a.onnx").write_bytes(b"")
    (tmp_path / "b.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"several .onnx"):
        models.resolve(tmp_path)
    with pytest.raises(ModelLoadError, match=r"model_path must be"):
        models.resolve(42)
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(tc_dir / "model.onnx", broken / "model.onnx")
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"config.json"):
        Pipeline.create("text-classification", broken)
    (broken / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"tokenizer.json"):
        Pipeline.create("text-classification", broken)


def _fake_hf_cache(root: Path, src: Path, org: str, name: str, *, onnx_subdir: bool) -> str:
    repo = root / f"models--{org}--{name}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    (snap / "onnx").mkdir(parents=True)
    for f in src.iterdir():
        target = snap / "onnx" / f.name if (f.suffix == ".onnx" and onnx_subdir) else snap / f.name
        shutil.copy(f, target)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


@pytest.mark.parametrize("onnx_subdir", [False, True])
def test_hf_cache_resolution(tmp_path, monkeypatch, tc_dir, onnx_subdir):
    commit = _fake_hf_cache(tmp_path, tc_dir, "acme", "tiny-sentiment", onnx_subdir=onnx_subdir)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    r = models.resolve("hf:acme/tiny-sentiment")
    assert r.onnx_path.is_file() and r.file("tokenizer.json") is not None
    assert models.resolve(f"hf:acme/tiny-sentiment@{commit}").onnx_path == r.onnx_path
    pipe = Pipeline.create("sentiment-analysis", model_path="hf:acme/tiny-sentiment")
    assert pipe("fine").labels[0] in ("negative", "neutral", "positive")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path.parent / "nohome"))
    with pytest.raises(ModelLoadError, match=r"not in the local Hugging Face cache.*HF_HUB_CACHE"):
        models.resolve("hf:acme/tiny-sentiment")


def test_hf_errors(tmp_path, monkeypatch, tc_dir):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    _fake_hf_cache(tmp_path, tc_dir, "acme", "m", onnx_subdir=False)
    with pytest.raises(ModelLoadError, match=r"revision 'v2'"):
        models.resolve("hf:acme/m@v2")
    with pytest.raises(ModelLoadError, match=r"hf:<org>/<name>"):
        models.resolve("hf:just-a-name")
    assert models.hf_cache_dir() == tmp_path


def test_user_files_are_never_modified(tmp_path, shared_dir):
    src = shared_dir / "reference" / "nlp" / "token-classification"
    model = tmp_path / "model"
    shutil.copytree(src, model)
    before = _digest(model)
    pipe = Pipeline.create("ner", model, aggregation_strategy="simple")
    pipe("Sarah works for Acme Corp in Paris.")
    Pipeline.create("ner", model / "model.onnx", engine_type="onnxruntime")("Paris")
    assert _digest(model) == before
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in src.iterdir())


def test_embedded_model_missing_from_the_installation(tmp_path, monkeypatch):
    """A damaged install (zoo directory without the model file) names the model and the fix."""
    from sparsepipe import Pipeline

    (tmp_path / "yolov3-tiny-coco").mkdir()
    monkeypatch.setattr(models, "ZOO_DIR", tmp_path)
    with pytest.raises(ModelLoadError, match=r"'yolov3-tiny-coco' is missing.*reinstall"):
        models.get("zoo:yolov3-tiny-coco")
    with pytest.raises(ModelLoadError, match=r"yolov3-tiny-coco.*reinstall"):
        Pipeline.create("object-detection")
