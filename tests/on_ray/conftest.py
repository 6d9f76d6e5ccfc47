"""One local Ray cluster (2 CPUs) shared by every Ray test of the session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """``ray`` initialised on a local 2-CPU cluster (shut down at the end of the session)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Serve kills an HTTP proxy not ready within 5 s, which a busy 2-core machine can exceed
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    if not ray.is_initialized():
        from sparsepipe.ray.serve import apply_serve_environment

        apply_serve_environment()  # the cluster `sparsepipe serve --backend ray` starts
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def same_answer(got: Any, want: Any, rel: float = 1e-5) -> bool:
    """``got`` equals ``want`` exactly but for floats, which may differ by ``rel``: a replica is
    another process, whose engine may sum in another order than this one's."""
    if isinstance(want, float) and isinstance(got, (int, float)):
        return abs(got - want) <= rel * max(abs(want), 1e-12)
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(same_answer(got[k], want[k], rel) for k in want)
        )
    if isinstance(want, (list, tuple)):
        return (
            isinstance(got, (list, tuple))
            and len(got) == len(want)
            and all(same_answer(g, w, rel) for g, w in zip(got, want))
        )
    return bool(got == want)


def start_serve(args: list[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen:
    """``sparsepipe serve --backend ray`` with ``args`` in a subprocess writing to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sparsepipe", "serve", "--backend", "ray", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
        )


def wait_ready(proc: subprocess.Popen, client: httpx.Client, path: str, log: Path) -> None:
    """Returns once ``client`` gets 200 from ``path``; raises AssertionError with the end of
    ``log`` if ``proc`` exits first or 240 s pass."""
    deadline = time.time() + 240
    while True:
        try:
            if client.get(path).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            raise AssertionError(
                "serve --backend ray did not come up:\n" + log.read_text(errors="replace")[-4000:]
            )
        time.sleep(1)


def stop_serve(proc: subprocess.Popen, log: Path) -> None:
    """Sends SIGTERM to ``proc`` and asserts that it exits 0 within 120 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, log.read_text(errors="replace")[-4000:]
