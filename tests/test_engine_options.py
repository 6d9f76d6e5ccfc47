"""Engine options are checked in one place (the Rust engine), so every entry point that takes
them (``Engine``, ``OnnxRuntimeEngine``, ``check_engine_options`` for pipelines) refuses the same
bad value with the same error and message."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sparsepipe
from sparsepipe import ConfigError
from sparsepipe.engine import OnnxRuntimeEngine, check_engine_options

pytest.importorskip("onnxruntime")
om = pytest.importorskip("onnx_models", reason="needs the onnx package")


@pytest.fixture(scope="module")
def mlp_path(model_zoo: Any) -> Path:
    return model_zoo.get("mlp", 0.5)[0]


def _raised(fn: Any) -> BaseException:
    with pytest.raises((TypeError, ConfigError)) as info:
        fn()
    return info.value


BAD_COUNTS = [
    ({"batch_size": 0}, ConfigError, ("batch_size", "at least 1", "got 0")),
    ({"batch_size": -1}, ConfigError, ("batch_size", "at least 1", "got -1")),
    ({"num_threads": 0}, ConfigError, ("num_threads", "at least 1")),
    ({"num_threads": -2}, ConfigError, ("num_threads", "got -2")),
    ({"batch_size": 2**40}, ConfigError, ("batch_size", "at most 4096", f"got {2**40}")),
    ({"batch_size": 4097}, ConfigError, ("batch_size", "at most 4096", "split the inputs")),
    ({"num_threads": 10**6}, ConfigError, ("num_threads", "at most 1024", "got 1000000")),
    ({"batch_size": True}, TypeError, ("batch_size", "bool")),
    ({"num_threads": np.True_}, TypeError, ("num_threads", "bool")),
    ({"batch_size": "4"}, TypeError, ("batch_size", "str", "'4'")),
    ({"num_threads": 2.5}, TypeError, ("num_threads", "float")),
]


@pytest.mark.parametrize(("options", "cls", "words"), BAD_COUNTS, ids=str)
def test_engine_and_onnxruntime_engine_refuse_alike(
    mlp_path: Path, options: dict[str, Any], cls: type, words: tuple[str, ...]
) -> None:
    ours = _raised(lambda: sparsepipe.Engine(mlp_path, **options))
    ort = _raised(lambda: OnnxRuntimeEngine(mlp_path, **options))
    assert type(ours) is type(ort) is cls, (ours, ort)
    assert str(ours) == str(ort)
    assert all(w in str(ours) for w in words), str(ours)


@pytest.mark.parametrize(("options", "cls", "words"), BAD_COUNTS, ids=str)
def test_check_engine_options_raises_config_errors(
    mlp_path: Path, options: dict[str, Any], cls: type, words: tuple[str, ...]
) -> None:
    """Pipelines take the same options; a wrong type is a ConfigError there, same message."""
    with pytest.raises(ConfigError) as info:
        check_engine_options(**options)
    assert str(info.value) == str(_raised(lambda: sparsepipe.Engine(mlp_path, **options)))


def test_check_engine_options_returns_ints() -> None:
    assert check_engine_options() == (None, None)
    assert check_engine_options(batch_size=np.int64(4), num_threads=2) == (4, 2)
    batch, threads = check_engine_options(batch_size=np.int32(3))
    assert type(batch) is int and batch == 3 and threads is None


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"sparsity_threshold": -0.5}, ("sparsity_threshold", "-0.5")),
        ({"sparsity_threshold": math.nan}, ("sparsity_threshold", "NaN")),
        ({"dense_backend": "cuda"}, ("dense_backend", "'cuda'", "'auto', 'tract', 'sparsepipe'")),
        ({"isa": "AVX2"}, ("isa", "'AVX2'", "'avx512', 'avx2', 'portable'")),
    ],
    ids=str,
)
def test_check_options_is_the_engines_check(
    mlp_path: Path, options: dict[str, Any], words: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as checked:
        sparsepipe._engine.check_options(**options)
    with pytest.raises(ConfigError) as loaded:
        sparsepipe.Engine(mlp_path, **options)
    assert str(checked.value) == str(loaded.value)
    assert all(w in str(checked.value) for w in words), str(checked.value)


@pytest.mark.parametrize(
    "options",
    [
        {"sparsity_threshold": True},
        {"sparsity_threshold": None},
        {"dense_backend": None},
        {"dense_backend": 1},
        {"isa": 3},
        {"fuse": None},
        {"fuse": 1},
    ],
    ids=str,
)
def test_wrong_types_are_type_errors_naming_the_option(options: dict[str, Any]) -> None:
    (option,) = options
    with pytest.raises(TypeError, match=option):
        sparsepipe._engine.check_options(**options)


def test_good_options_pass(mlp_path: Path) -> None:
    sparsepipe._engine.check_options(
        batch_size=np.int64(2),
        num_threads=1,
        sparsity_threshold=np.float32(0.7),
        dense_backend="tract",
        isa="portable",
        fuse=np.False_,
    )
    engine = sparsepipe.Engine(mlp_path, num_threads=1, fuse=np.False_, sparsity_threshold=1)
    assert engine.fuse is False and engine.num_threads == 1
    ort = OnnxRuntimeEngine(mlp_path, batch_size=np.int64(2), num_threads=1)
    assert ort.batch_size == 2 and type(ort.batch_size) is int


def test_a_directory_is_resolved_in_python_and_refused_by_the_binding(
    tmp_path: Path, mlp_path: Path
) -> None:
    """``Engine(dir)`` finds the model as pipelines do (here the only .onnx in it); the compiled
    engine itself takes files only."""
    (tmp_path / "weights.onnx").write_bytes(mlp_path.read_bytes())
    assert sparsepipe.Engine(tmp_path).model_path == str(tmp_path / "weights.onnx")
    with pytest.raises(sparsepipe.ModelLoadError, match=r"is a directory; pass the path of the"):
        sparsepipe._engine.Engine(str(tmp_path))


def test_profile_iterations(mlp_path: Path) -> None:
    engine = sparsepipe.Engine(mlp_path)
    x = om.sample_inputs("mlp", 2)["x"]
    assert engine.profile({"x": x}, iterations=1)
    for bad in (0, -1):
        with pytest.raises(ConfigError, match=rf"iterations must be at least 1, got {bad}"):
            engine.profile([x], iterations=bad)
    with pytest.raises(TypeError, match="iterations"):
        engine.profile([x], iterations=True)


def test_both_engines_implement_the_one_engine_protocol(mlp_path: Path) -> None:
    from sparsepipe.engine import InferenceEngine, create_engine

    members = [
        name for name in vars(InferenceEngine) if not name.startswith("_") or name == "__call__"
    ]
    assert {"run", "profile", "sparsity_report", "isa", "output_dtypes"} <= set(members)
    x = np.ones((3, 37), np.float32)
    ours = create_engine("sparsepipe", mlp_path, num_threads=1)
    ort = create_engine("onnxruntime", mlp_path, num_threads=1)
    for engine in (ours, ort):
        assert isinstance(engine, InferenceEngine)
        for name in members:
            assert hasattr(type(engine), name), (type(engine).__name__, name)
        assert engine.output_dtypes == ["float32"] and engine.input_dtypes == ["float32"]
        rows = engine.profile([x], iterations=2)
        assert rows and all(set(r) == {"name", "op", "seconds", "output_elements"} for r in rows)
        assert all(r["seconds"] >= 0 for r in rows)
    np.testing.assert_allclose(ours.run([x])[0], ort.run([x])[0], rtol=1e-4, atol=1e-5)
    ort_ops = {r["op"] for r in ort.profile([x], iterations=2)}
    assert ort_ops & {"MatMul", "Gemm", "FusedMatMul"}, ort_ops
    assert ours.isa in sparsepipe.available_isas() and ort.isa is None
    assert ours.sparsity_report()
    with pytest.raises(ConfigError, match="onnxruntime runs every weight dense"):
        ort.sparsity_report()
    with pytest.raises(ConfigError, match="iterations"):
        ort.profile([x], iterations=0)
