"""``sparsepipe sparsify``: the table, the warning, safe outputs and ``--eval``."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from sparsepipe.cli.sparsify import add_parser
from sparsepipe.errors import ConfigError, InputError, ModelLoadError

onnx = pytest.importorskip("onnx")
from sparsepipe.sparsify import prunable_weights  # noqa: E402


def run(argv: list[str]) -> int:
    """Parse `argv` with a parser holding only the sparsify subcommand and run its handler."""
    parser = argparse.ArgumentParser(prog="sparsepipe")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_table_total_and_warning(model_zoo, tmp_path, capsys):
    src, _ = model_zoo.get("mlp", 0.0)
    digest = _sha256(src)
    out = tmp_path / "mlp-80.onnx"
    assert run(["sparsify", str(src), "-o", str(out), "--sparsity", "0.8"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert re.match(r"layer\s+op\s+shape\s+sparsity", lines[0])
    for name, op, shape in (
        ("fc1.weight", "MatMul", "37x64"),
        ("fc2.weight", "Gemm", "48x64"),
        ("fc4.weight", "MatMul", "33x10"),
    ):
        row = next(line for line in lines if line.startswith(name + " "))
        assert re.search(rf"{op}\s+{shape}\s+0\.0% -> 80\.\d%", row), row
    total = next(line for line in lines if line.startswith("total:"))
    assert "4 weights" in total and "0.0% -> 80.0%" in total
    assert "warning" in captured.err and "one-shot" in captured.err
    assert "fine-tuning" in captured.err.lower() and "one-shot" not in captured.out
    assert all(w.sparsity >= 0.8 for w in prunable_weights(onnx.load(str(out))))
    assert _sha256(src) == digest


def test_global_include_exclude(model_zoo, tmp_path, capsys):
    src, _ = model_zoo.get("bert", 0.0)
    out = tmp_path / "b.onnx"
    argv = ["sparsify", str(src), "-o", str(out), "--sparsity", "0.6", "--global"]
    assert run([*argv, "--include", "encoder", "--exclude", r"layer\.1\."]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("encoder.")]
    assert len(rows) == 6 and all("layer.0." in row for row in rows)
    assert "classifier" not in text and "6 weights" in text
    with pytest.raises(SystemExit) as e:
        run([*argv, "--per-layer"])
    assert e.value.code == 2


def test_refuses_to_overwrite(model_zoo, tmp_path, capsys):
    path, _ = model_zoo.get("mlp", 0.0)
    src = tmp_path / "model.onnx"
    src.write_bytes(path.read_bytes())
    digest = _sha256(src)
    with pytest.raises(ConfigError, match="refusing to overwrite the input model"):
        run(["sparsify", str(src), "-o", str(tmp_path / "x" / ".." / "model.onnx"), "--overwrite",
             "--sparsity", "0.5"])  # fmt: skip
    assert _sha256(src) == digest
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old")
    with pytest.raises(ConfigError, match="--overwrite"):
        run(["sparsify", str(src), "-o", str(out), "--sparsity", "0.5"])
    assert out.read_bytes() == b"old"
    assert run(["sparsify", str(src), "-o", str(out), "--sparsity", "0.5", "--overwrite"]) == 0
    assert out.read_bytes() != b"old"


def test_invalid_options(model_zoo, tmp_path, capsys):
    src, _ = model_zoo.get("mlp", 0.0)
    out = str(tmp_path / "o.onnx")
    base = ["sparsify", str(src), "-o", out]
    with pytest.raises(ConfigError, match="sparsity"):
        run([*base, "--sparsity", "1"])
    with pytest.raises(ConfigError, match="include"):
        run([*base, "--sparsity", "0.5", "--include", "fc("])
    with pytest.raises(ConfigError, match="no weight selected"):
        run([*base, "--sparsity", "0.5", "--include", "conv"])
    with pytest.raises(ConfigError, match="only with --eval"):
        run([*base, "--sparsity", "0.5", "--task", "text-classification"])
    with pytest.raises(ModelLoadError):
        run(["sparsify", str(tmp_path / "none.onnx"), "-o", out, "--sparsity", "0.5"])
    with pytest.raises(SystemExit):  # --sparsity is required
        run(base)
    assert not Path(out).exists()


def test_deployment_files_copied_never_overwritten(shared_dir, tmp_path, capsys):
    src = shared_dir / "models" / "sentiment-minilm-sparse80"
    out_dir = tmp_path / "deploy"
    out_dir.mkdir()
    (out_dir / "config.json").write_text('{"mine": true}')
    out = out_dir / "model.onnx"
    assert run(["sparsify", str(src / "model.onnx"), "-o", str(out), "--sparsity", "0.85"]) == 0
    assert json.loads((out_dir / "config.json").read_text()) == {"mine": True}
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        assert (out_dir / name).read_bytes() == (src / name).read_bytes()
    assert not (out_dir / "MODEL_CARD.md").exists()
    assert "copied tokenizer.json" in capsys.readouterr().err


def test_eval_prints_both_accuracies(shared_dir, tmp_path, capsys):
    src = shared_dir / "models" / "sentiment-minilm-sparse80" / "model.onnx"
    sample = shared_dir / "samples" / "sentiment_sample.jsonl"
    out = tmp_path / "pruned" / "model.onnx"
    argv = ["sparsify", str(src), "-o", str(out), "--sparsity", "0.9", "--exclude", "classifier"]
    argv += ["--eval", str(sample), "--task", "sentiment-analysis", "--eval-limit", "24"]
    assert run(argv) == 0
    captured = capsys.readouterr()
    m = re.search(
        r"accuracy on 24 examples of .*: original (\d+\.\d)%, pruned (\d+\.\d)% "
        r"\(([+-]\d+\.\d) points\)",
        captured.out,
    )
    assert m, captured.out
    original, pruned, change = (float(g) for g in m.groups())
    assert original >= 60.0 and 0.0 <= pruned <= 100.0
    assert abs(pruned - original - change) < 0.11
    assert "/m/bert/encoder/layer.5/output/dense/MatMul" in captured.out
    assert "warning" in captured.err
    assert (out.parent / "tokenizer.json").is_file() and (out.parent / "config.json").is_file()


def test_eval_errors_come_before_writing(shared_dir, tmp_path):
    src = shared_dir / "models" / "sentiment-minilm-sparse80" / "model.onnx"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "positive"}\n{"text": "oops"\n')
    out = tmp_path / "out" / "model.onnx"
    with pytest.raises(InputError, match="line 2"):
        run(["sparsify", str(src), "-o", str(out), "--sparsity", "0.9", "--eval", str(bad)])
    with pytest.raises(ConfigError, match="text-classification"):
        run(["sparsify", str(src), "-o", str(out), "--sparsity", "0.9", "--eval", str(bad),
             "--task", "object-detection"])  # fmt: skip
    assert not out.parent.exists()


def test_a_pipe_as_the_source_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)  # reading it would block until a writer came
    with pytest.raises(ModelLoadError, match=r"is not a regular file \(expected an .onnx file\)"):
        run(["sparsify", str(fifo), "-o", str(tmp_path / "out.onnx"), "--sparsity", "0.5"])
