"""Shared pytest fixtures: onnxruntime reference runs, output comparison, generated models."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent

REL_TOL = 1e-4


def assert_outputs_close(
    ours: Sequence[Any],
    ref: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    *,
    rel: float = REL_TOL,
    context: str = "",
) -> None:
    """Fail unless each output has the reference's shape and dtype and is within the tolerance.

    The tolerance of an output is ``max|ours - ref| <= rel * max(1, max|ref|)``.
    """
    header = f"{context}: " if context else ""
    if len(ours) != len(ref):
        raise AssertionError(f"{header}{len(ours)} outputs, reference has {len(ref)}")
    problems = []
    for i, (o, r) in enumerate(zip(ours, ref)):
        name = names[i] if names is not None else f"output {i}"
        o = np.asarray(o)
        r = np.asarray(r)
        if o.shape != r.shape:
            problems.append(f"{name}: shape {list(o.shape)} != reference {list(r.shape)}")
            continue
        if o.dtype != r.dtype:
            problems.append(f"{name}: dtype {o.dtype} != reference {r.dtype}")
            continue
        if r.size == 0:
            continue
        ref_max = float(np.max(np.abs(r)))
        tol = rel * max(1.0, ref_max)
        diff = np.abs(o.astype(np.float64) - r.astype(np.float64))
        bad = ~(diff <= tol)
        if not bad.any():
            continue
        finite = diff[np.isfinite(diff)]
        worst = float(finite.max()) if finite.size else float("nan")
        idx = np.unravel_index(int(np.argmax(np.where(np.isfinite(diff), diff, np.inf))), r.shape)
        problems.append(
            f"{name}{list(r.shape)}: max|ours-ref| = {worst:.3g} > tol {tol:.3g} "
            f"(max|ref| = {ref_max:.3g}); {int(bad.sum())} of {r.size} elements out of tolerance, "
            f"non-finite in ours: {int((~np.isfinite(o)).sum())}; "
            f"worst at {tuple(int(j) for j in idx)}: "
            f"ours {float(o[idx]):.7g}, ref {float(r[idx]):.7g}"
        )
    if problems:
        raise AssertionError(header.rstrip() + "\n  " + "\n  ".join(problems))


@pytest.fixture(scope="session")
def assert_close() -> Callable[..., None]:
    """Return the output comparison `assert_outputs_close(ours, ref, names, *, rel, context)`."""
    return assert_outputs_close


@pytest.fixture(scope="session")
def ort_run() -> Callable[[str | Path, dict[str, np.ndarray]], list[np.ndarray]]:
    """Run a model file with onnxruntime (CPU, sessions cached per path); outputs in graph order."""
    ort = pytest.importorskip("onnxruntime")
    sessions: dict[str, Any] = {}

    def run(model_path: str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        key = str(model_path)
        if key not in sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            sessions[key] = ort.InferenceSession(
                key, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        return sessions[key].run(None, feeds)

    return run


class ModelZoo:
    """Generated test models (tests/onnx_models.py), built on first use and saved in one folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._models: dict[tuple[str, float], tuple[Path, Any]] = {}

    def get(self, name: str, sparsity: float) -> tuple[Path, Any]:
        """Return (path, onnx.ModelProto) of model `name` pruned to `sparsity`."""
        key = (name, float(sparsity))
        if key not in self._models:
            import onnx_models

            model = onnx_models.build(name, sparsity)
            self._models[key] = (onnx_models.save(model, self.directory), model)
        return self._models[key]


@pytest.fixture(scope="session")
def model_zoo(tmp_path_factory: pytest.TempPathFactory) -> ModelZoo:
    """Return a session-wide ModelZoo writing into a pytest temporary folder."""
    pytest.importorskip("onnx")
    return ModelZoo(tmp_path_factory.mktemp("onnx_models"))


SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Return ../shared beside the repository (real models and samples).

    Skips with a visible reason when it is absent, except when $CI is set: then the test fails,
    so that CI always runs the real-model tests.
    """
    if (SHARED_DIR / "models").is_dir():
        return SHARED_DIR
    reason = (
        f"../shared is absent: no models directory under {SHARED_DIR} (check it out beside the "
        "repository to run the real-model tests)"
    )
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(reason + "; CI is set, so this is an error", pytrace=False)
    pytest.skip(reason)


_SERVER_DIRS = ("server", "deploy")
#: modules whose tests start subprocesses or time real workloads
_SLOW_MODULES = ("test_cli_benchmark.py", "test_cli_sparsify.py", "test_sagemaker.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks ``server`` the tests under tests/server and tests/deploy, and ``slow`` those that
    run the real models of ../shared or start subprocesses (``-m "not slow"`` skips them)."""
    for item in items:
        path = item.path.relative_to(TESTS_DIR)
        if path.parts[0] in _SERVER_DIRS:
            item.add_marker(pytest.mark.server)
        if "shared_dir" in getattr(item, "fixturenames", ()) or path.name in _SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
