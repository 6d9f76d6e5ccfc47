"""A short soak of the server (`benches/server_load.py --soak`): 2,000 mixed requests from 64
concurrent clients — valid texts and images, malformed JSON, schema violations, undecodable
images, oversize bodies, unknown models — each answered with its own status, none lost, and the
server's memory flat after warm-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.server, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "benches" / "server_load.py"


def test_soak_of_2000_mixed_requests(tmp_path, shared_dir):
    out = tmp_path / "soak.json"
    args = ["--soak", "2000", "--warmup", "1000", "--no-baseline", "--json", str(out)]
    run = subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    report = json.loads(out.read_text())
    assert report["lost"] == 0 and report["unexpected_count"] == 0, report
    assert report["server_alive_at_end"]
    counts = {kind: sum(statuses.values()) for kind, statuses in report["statuses"].items()}
    assert sum(counts.values()) == 2000 and all(counts.values()), counts
    expected = {
        "text": "200",
        "text_list": "200",
        "image": "200",
        "image_file": "200",
        "malformed_json": "422",
        "schema_violation": "422",
        "bad_image": "400",
        "oversize": "413",
        "unknown_model": "404",
    }
    assert {kind: set(s) for kind, s in report["statuses"].items()} == {
        kind: {status} for kind, status in expected.items()
    }
    # flat after warm-up (the 100,000-request soak holds it under 5%; a short run is noisier)
    assert report["rss_growth_after_warmup"] < 0.10, report["rss_mb"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--server-cpus", "3-1"], "take CPU lists such as 0, 0,2 or 0-3"),
        (["--client-cpus", "a"], "take CPU lists such as 0, 0,2 or 0-3"),
        (["--server-cpus", "4096"], "pinned CPUs must be among this machine's"),
    ],
)
def test_bad_cpu_lists_are_refused_before_the_soak_starts(flags, message):
    run = subprocess.run(
        [sys.executable, str(BENCH), "--soak", "10", *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and message in run.stderr, run.stderr[-2000:]


@pytest.mark.parametrize("flag", ["--clients-per-worker", "--ingress-replicas"])
def test_ray_scaling_counts_must_be_positive(flag):
    bench = BENCH.with_name("ray_scaling.py")
    run = subprocess.run(
        [sys.executable, str(bench), flag, "0"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2 and "must be a whole number of at least 1" in run.stderr
