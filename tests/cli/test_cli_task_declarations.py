"""A task declares what ``sparsepipe annotate`` and ``sparsepipe sparsify --eval`` need (the
`Pipeline.annotate` and `Pipeline.accuracy` hooks); the CLI names no task, so a newly registered
task is annotated or evaluated with no other file changed, and picks its default from them."""

from __future__ import annotations

import argparse
import io
import re
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import numpy as np
import pytest
from pydantic import BaseModel
from sparsepipe import ConfigError, Pipeline
from sparsepipe.cli import main
from sparsepipe.cli.sparsify import add_parser
from sparsepipe.sparsify import label_accuracy

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("onnx")


class PictureInput(BaseModel):
    pictures: Any


class TextInput(BaseModel):
    texts: Any


class Output(BaseModel):
    values: list[Any]


def _rows(pipe: Pipeline, n: int) -> np.ndarray:
    return np.zeros((n, pipe.engine.input_shapes[0][1]), np.float32)


class Plain(Pipeline):
    """Declares nothing: the engine (a small MLP) runs one zero row per item."""

    input_schema = TextInput
    output_schema = Output

    def process_inputs(self, inputs: Any) -> Any:
        items = inputs.texts if isinstance(inputs.texts, list) else [inputs.texts]
        return [_rows(self, len(items))], {"items": items}

    def process_engine_outputs(self, engine_outputs: list[np.ndarray], **kwargs: Any) -> Any:
        return Output(values=[len(str(t)) for t in kwargs["items"]])


class FramedPictures(Pipeline):
    """Draws a frame as wide as the engine's output row count on each picture."""

    input_schema = PictureInput
    output_schema = Output

    def process_inputs(self, inputs: PictureInput) -> Any:
        return [_rows(self, 1)], {"path": inputs.pictures}

    def process_engine_outputs(self, engine_outputs: list[np.ndarray], **kwargs: Any) -> Any:
        return Output(values=[int(engine_outputs[0].shape[0])])

    def annotate(self, image: Any, output: Any = None) -> Any:
        output = self(image) if output is None else output
        picture = Image.open(image).convert("RGB")
        pixels = np.asarray(picture).copy()
        width = 1 + output.values[0]
        pixels[:width], pixels[-width:], pixels[:, :width], pixels[:, -width:] = 255, 255, 255, 255
        return Image.fromarray(pixels)


class LabelsOutput(BaseModel):
    labels: list[str]


class LengthLabels(Plain):
    """Labels a text "long" when it has more than four characters, else "short"."""

    output_schema = LabelsOutput

    def process_engine_outputs(self, engine_outputs: list[np.ndarray], **kwargs: Any) -> Any:
        assert engine_outputs[0].shape[0] == len(kwargs["items"])
        return LabelsOutput(labels=["long" if len(t) > 4 else "short" for t in kwargs["items"]])

    def accuracy(self, texts: Sequence[Any], labels: Sequence[Any]) -> float:
        return label_accuracy(self, texts, labels)


@pytest.fixture
def register() -> Iterator[Callable[[str, type], str]]:
    """Registers task classes for one test; its names then go to a class declaring nothing, so
    the built-in tasks are again the only ones that annotate or evaluate."""
    names: list[str] = []

    def add(name: str, cls: type) -> str:
        Pipeline.register(name)(cls)
        names.append(name)
        return name

    yield add
    for name in names:
        Pipeline.register(name)(type("Retired", (Plain,), {}))


@pytest.fixture
def mlp(model_zoo) -> str:
    path, _ = model_zoo.get("mlp", 0.0)
    return str(path)


def _png(path, color: tuple[int, int, int]) -> None:
    Image.new("RGB", (12, 9), color).save(path)


def sparsify_cli(argv: list[str]) -> int:
    """Runs the sparsify subcommand (errors propagate, as in tests/cli/test_cli_sparsify.py)."""
    parser = argparse.ArgumentParser(prog="sparsepipe")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


# ---- annotate ------------------------------------------------------------------------------------


def test_a_new_task_that_declares_annotate_is_annotated(register, mlp, tmp_path, capsys):
    task = register("framed-pictures", FramedPictures)
    src = tmp_path / "src"
    src.mkdir()
    _png(src / "a.png", (10, 20, 30))
    _png(src / "b.png", (40, 50, 60))
    out = tmp_path / "out"
    argv = ["annotate", "--task", task, "--model-path", mlp, "--source", str(src)]
    assert main([*argv, "--save-dir", str(out)]) == 0
    assert "annotated 2 of 2" in capsys.readouterr().err
    for name, color in (("a.png", (10, 20, 30)), ("b.png", (40, 50, 60))):
        pixels = np.asarray(Image.open(out / name))
        assert (pixels[0, 0] == 255).all() and (pixels[1, 1] == 255).all()
        assert tuple(pixels[4, 6]) == color
    # detection thresholds go to the task only when given: this task has no such option
    assert main([*argv, "--save-dir", str(out), "--conf-threshold", "0.5"]) == 1
    assert "conf_threshold" in capsys.readouterr().err


def test_annotate_picks_its_default_task_from_the_declarations(register, tmp_path):
    source = tmp_path / "a.png"
    _png(source, (0, 0, 0))
    argv = ["annotate", "--source", str(source), "--save-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match=r"cannot annotate images.*object-detection"):
        main([*argv, "--task", "qa"])
    register("framed-pictures", FramedPictures)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert re.search(
        r"several registered tasks can annotate images \(.*framed-pictures", str(e.value)
    )
    assert "object-detection" in str(e.value) and "--task" in str(e.value)
    register("plain-texts", Plain)
    with pytest.raises(SystemExit, match="'Plain_Texts' cannot annotate images; give --task"):
        main([*argv, "--task", "Plain_Texts"])


def test_the_base_hooks_raise_a_config_error(register, mlp):
    pipe = Pipeline.create(register("plain-texts", Plain), mlp)
    assert pipe("hello").values == [5]
    with pytest.raises(ConfigError, match="'plain-texts' cannot annotate images"):
        pipe.annotate(io.BytesIO(b"not used"))
    with pytest.raises(ConfigError, match="'plain-texts' cannot be evaluated by --eval"):
        pipe.accuracy(["a"], ["b"])


# ---- sparsify --eval -----------------------------------------------------------------------------


def test_a_new_task_that_declares_accuracy_is_evaluated(register, mlp, tmp_path, capsys):
    task = register("length-labels", LengthLabels)
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"text": "tiny", "label": "short"}\n{"text": "enormous", "label": "long"}\n'
        '{"text": "big", "label": "long"}\n{"text": "gigantic", "label": "long"}\n'
    )
    out = tmp_path / "pruned.onnx"
    argv = ["sparsify", mlp, "-o", str(out), "--sparsity", "0.5", "--eval", str(data)]
    assert sparsify_cli([*argv, "--task", task]) == 0
    text = capsys.readouterr().out
    assert re.search(r"accuracy on 4 examples of .*: original 75\.0%, pruned 75\.0% \(\+0\.0", text)
    # with two evaluable tasks registered, --task must say which
    with pytest.raises(ConfigError, match=r"several registered tasks can be evaluated by --eval"):
        sparsify_cli(argv)


def test_eval_rejects_a_task_that_declares_no_accuracy(register, mlp, tmp_path):
    task = register("plain-texts", Plain)
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "tiny", "label": "short"}\n')
    out = tmp_path / "pruned.onnx"
    argv = ["sparsify", mlp, "-o", str(out), "--sparsity", "0.5", "--eval", str(data)]
    message = r"'plain-texts' cannot be evaluated by --eval; give --task one of: text-class"
    with pytest.raises(ConfigError, match=message):
        sparsify_cli([*argv, "--task", task])
    assert not out.exists()


def test_label_accuracy_checks_its_examples():
    from sparsepipe import InputError

    pipe = argparse.Namespace(config={})
    with pytest.raises(InputError, match="2 texts but 1 labels"):
        label_accuracy(pipe, ["a", "b"], ["x"])
    with pytest.raises(InputError, match="no examples"):
        label_accuracy(pipe, [], [])
