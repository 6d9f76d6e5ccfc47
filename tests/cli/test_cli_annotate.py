"""``sparsepipe annotate``: annotated copies of a folder, bad files skipped and reported."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sparsepipe.cli import main

PIL = pytest.importorskip("PIL.Image")


def test_annotate_folder(tmp_path, shared_dir, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(shared_dir / "samples" / "images" / "coffee.png", src / "coffee.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (src / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "out"
    model = shared_dir / "models" / "yolov3-tiny-coco"
    rc = main(
        ["annotate", "--model-path", str(model), "--source", str(src), "--save-dir", str(out)]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "broken.jpg" in err and "annotated 1 of 2" in err
    assert sorted(p.name for p in out.iterdir()) == ["coffee.png"]
    before = np.asarray(PIL.open(src / "coffee.png").convert("RGB"))
    after = np.asarray(PIL.open(out / "coffee.png").convert("RGB"))
    assert before.shape == after.shape and (before != after).any()


def test_annotate_refuses_to_overwrite_the_source(tmp_path, shared_dir):
    shutil.copy(shared_dir / "samples" / "images" / "coffee.png", tmp_path / "coffee.png")
    with pytest.raises(SystemExit, match="must differ"):
        main(["annotate", "--source", str(tmp_path), "--save-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="must differ"):  # a single file in the save dir too
        main(["annotate", "--source", str(tmp_path / "coffee.png"), "--save-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="object-detection"):
        main(["annotate", "--task", "ner", "--source", str(tmp_path), "--save-dir", "x"])


def test_annotate_missing_source(tmp_path, capsys):
    rc = main(["annotate", "--source", str(tmp_path / "nope"), "--save-dir", str(tmp_path / "o")])
    assert rc == 1 and "neither an image file nor a folder" in capsys.readouterr().err


def test_annotate_save_dir_that_is_a_file(tmp_path, shared_dir, capsys):
    (tmp_path / "taken").write_text("")
    src = shared_dir / "samples" / "images" / "coffee.png"
    rc = main(["annotate", "--source", str(src), "--save-dir", str(tmp_path / "taken")])
    err = capsys.readouterr().err
    assert rc == 1 and "--save-dir" in err and "is a file; give a folder" in err, err


def test_annotate_uses_the_embedded_detector_by_default(tmp_path, shared_dir, capsys):
    out = tmp_path / "out"
    src = shared_dir / "samples" / "images" / "coffee.png"
    assert main(["annotate", "--source", str(src), "--save-dir", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["coffee.png"]
    with PIL.open(out / "coffee.png") as after, PIL.open(src) as before:
        assert after.size == before.size
