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
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
