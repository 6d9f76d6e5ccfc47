"""``sparsepipe models list``."""

from __future__ import annotations

import json
import subprocess
import sys

from sparsepipe.cli import main


def test_models_list(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "zoo:sentiment-minilm-sparse80" in out and "token-classification" in out


def test_models_list_json_via_module():
    proc = subprocess.run(
        [sys.executable, "-m", "sparsepipe", "models", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {m["name"]: m for m in json.loads(proc.stdout)}
    assert names["zoo:pii-ner-minilm"]["license"] == "CC-BY-4.0"


def test_usage_errors_exit_2(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["models"])
    assert e.value.code == 2
    assert "ACTION" in capsys.readouterr().err


def test_run_prints_json(capsys, shared_dir):
    assert main(["run", "--task", "sentiment-analysis", "I love it", "awful"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["labels"] == ["positive", "negative"]
    qa = str(shared_dir / "reference" / "nlp" / "question-answering")
    assert main(["run", "--task", "qa", "--model-path", qa, "who is mark?", "mark is batman"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == "batman"
    args = ["run", "--task", "ner", "--option", "aggregation_strategy=simple"]
    assert main([*args, "--json", '{"inputs": "Call John Smith"}']) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]


def test_run_errors_are_one_line(capsys):
    assert main(["run", "--task", "ner", "--json", "[1]"]) == 1
    assert "JSON object" in capsys.readouterr().err
    assert main(["run", "--task", "ner"]) == 1
    assert "give the input" in capsys.readouterr().err
    assert main(["run", "--task", "ner", "--option", "stride"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["run", "--task", "ner", "--json", '{"inputs": "a"}', "b", "c"]) == 1
    assert "either as arguments or with --json, not both" in capsys.readouterr().err
    for port in ("99999", "-1"):
        assert main(["serve", "--task", "ner", "--port", port]) == 1
        err = capsys.readouterr().err
        assert "invalid server config" in err and "port: Input should be" in err, err
