"""One local Ray cluster (2 CPUs) shared by every Ray test of the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

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
