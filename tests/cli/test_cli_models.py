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
