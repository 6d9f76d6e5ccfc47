"""The OpenAPI document is the server's contract: schemathesis, with every check, against a real
`sparsepipe serve` (every embedded default, and question-answering on the small shared model),
finds no failure.

What JSON Schema cannot state (a string that decodes to an image, two lists of equal length) is
made true of the positive cases by fuzz_hooks.py; negative cases are sent as generated.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import start_cli_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

pytest.importorskip("schemathesis")

SEED = 20261204
EXAMPLES_PER_OPERATION = 60


def _schemathesis() -> str:
    found = Path(sys.executable).with_name("schemathesis")
    return str(found) if found.exists() else (shutil.which("schemathesis") or "schemathesis")


def test_schemathesis_all_checks_find_no_failure(tmp_path, shared_dir):
    config = {
        "num_threads": 1,
        "endpoints": [
            {"task": "sentiment-analysis", "name": "sentiment", "route": "/predict"},
            {"task": "ner", "name": "ner", "kwargs": {"aggregation_strategy": "simple"}},
            {"task": "image-classification", "name": "imagenet"},
            {"task": "object-detection", "name": "yolo"},
            {
                "task": "question-answering",
                "name": "qa",
                "model": str(shared_dir / "reference" / "nlp" / "question-answering"),
            },
        ],
    }
    proc, url = start_cli_server(tmp_path, config)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
        "SCHEMATHESIS_HOOKS": "fuzz_hooks",
    }
    try:
        run = subprocess.run(
            [
                _schemathesis(),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--seed",
                str(SEED),
                "--max-examples",
                str(EXAMPLES_PER_OPERATION),
                "--workers",
                "1",
                "--continue-on-failure",
                "--generation-database",
                "none",
                "--no-color",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-12000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    tested = re.search(r"Tested: (\d+)", report)
    assert selected and tested, report[-4000:]
    assert int(tested.group(1)) == int(selected.group(2)) >= 14, report[-4000:]  # every route
    passed = re.search(r"(\d+) generated, (\d+) passed", report)
    assert passed, report[-4000:]
    assert passed.group(1) == passed.group(2) and int(passed.group(1)) > 500, report[-4000:]
    assert "WARNINGS" not in report, report[-4000:]
