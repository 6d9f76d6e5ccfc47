"""The API contract of sparsepipe.Engine, on small generated models.

Introspection (names, shapes with symbolic dims as strings, dtypes), the ways to call it (list,
dict, bare array, nested Python lists, non-contiguous arrays), batch handling, threads (options,
environment, concurrent callers, the GIL), the sparsity report, and the kernel ISA / dense
backend options, which must not change results.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sparsepipe

pytest.importorskip("onnxruntime")
om = pytest.importorskip("onnx_models", reason="needs the onnx package")

try:  # guard against hangs (threads) when pytest-timeout is installed
    import pytest_timeout  # noqa: F401

    pytestmark = pytest.mark.timeout(180)
except ImportError:  # pragma: no cover
    pass

SPARSITY = 0.8
REPORT_KEYS = {
    "node",
    "pattern",
    "shape",
    "k",
    "n",
    "sparsity",
    "kernel",
    "isa",
    "fused",
    "plan_node",
    "plan_output_channels",
}
ISAS = ("portable", "avx2", "avx512")


class Loaded:
    """A generated model file, its onnx proto and a default Engine on it."""

    def __init__(self, model_zoo: Any, name: str, sparsity: float = SPARSITY) -> None:
        self.name = name
        self.path, self.model = model_zoo.get(name, sparsity)
        self.engine = sparsepipe.Engine(self.path)

    def feeds(self, batch: int, size: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        return om.sample_inputs(self.model, batch, size, seed)

    def as_list(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [feeds[n] for n in om.input_names(self.model)]


@pytest.fixture(scope="module")
def mlp(model_zoo: Any) -> Loaded:
    return Loaded(model_zoo, "mlp")


@pytest.fixture(scope="module")
def bert(model_zoo: Any) -> Loaded:
    return Loaded(model_zoo, "bert")


@pytest.fixture(scope="module")
def convnet(model_zoo: Any) -> Loaded:
    return Loaded(model_zoo, "convnet")


def assert_same(ours: list[np.ndarray], ref: list[np.ndarray], context: str = "") -> None:
    """Identical shapes, dtypes and values (the same data through the same engine)."""
    assert len(ours) == len(ref), context
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert isinstance(a, np.ndarray), f"{context}: output {i} is a {type(a).__name__}"
        assert a.shape == b.shape and a.dtype == b.dtype, (
            f"{context}: output {i} {a.shape} {a.dtype} != {b.shape} {b.dtype}"
        )
        np.testing.assert_array_equal(a, b, err_msg=f"{context}: output {i}")


# ---------------------------------------------------------------------------------------------
# Introspection.

EXPECTED_IO = {
    "mlp": (["x"], [["batch", 37]], ["float32"], ["y"], [["batch", 10]]),
    "bert": (
        ["input_ids", "attention_mask", "token_type_ids"],
        [["batch", "sequence"]] * 3,
        ["int64"] * 3,
        ["last_hidden_state", "logits"],
        [["batch", "sequence", 48], ["batch", 3]],
    ),
    "convnet": (["images"], [["batch", 3, 32, 32]], ["float32"], ["logits"], [["batch", 10]]),
    "convnet_dynhw": (
        ["images"],
        [["batch", 3, "height", "width"]],
        ["float32"],
        ["logits"],
        [["batch", 10]],
    ),
    "yolo_b1": (["images"], [[1, 3, 64, 64]], ["float32"], ["detections"], [[1, 960, 9]]),
}


@pytest.mark.parametrize("name", EXPECTED_IO)
def test_introspection(model_zoo: Any, name: str) -> None:
    path, model = model_zoo.get(name, SPARSITY)
    engine = sparsepipe.Engine(path)
    in_names, in_shapes, in_dtypes, out_names, out_shapes = EXPECTED_IO[name]
    assert engine.input_names == in_names == om.input_names(model)
    assert engine.input_shapes == in_shapes
    assert engine.input_dtypes == in_dtypes
    assert engine.output_names == out_names == om.output_names(model)
    assert engine.output_shapes == out_shapes
    assert engine.output_dtypes == ["float32"] * len(out_names)
    for shape in engine.input_shapes + engine.output_shapes:
        for d in shape:
            assert type(d) in (int, str), f"dimension {d!r} is a {type(d).__name__}"
    assert engine.model_path == str(path)
    assert engine.batch_size is None
    assert engine.num_threads >= 1
    assert engine.isa in sparsepipe.available_isas()
    text = repr(engine)
    assert str(path) in text and str(in_names) in text


def test_directory_and_pathlike(tmp_path: Path, mlp: Loaded) -> None:
    """A directory holding model.onnx loads that file; str and os.PathLike paths both work."""
    shutil.copy(mlp.path, tmp_path / "model.onnx")
    x = mlp.feeds(3)["x"]
    ref = mlp.engine([x])
    for where in (tmp_path, str(tmp_path), tmp_path / "model.onnx", str(mlp.path)):
        engine = sparsepipe.Engine(where)
        assert Path(engine.model_path).is_file()
        assert_same(engine([x]), ref, f"Engine({where!r})")
    assert sparsepipe.Engine(tmp_path).model_path == str(tmp_path / "model.onnx")


# ---------------------------------------------------------------------------------------------
# Calling conventions.


def test_list_and_dict_calls_are_identical(
    bert: Loaded, ort_run: Callable[..., Any], assert_close: Callable[..., None]
) -> None:
    feeds = bert.feeds(3, 11, seed=5)
    by_list = bert.engine(bert.as_list(feeds))
    by_dict = bert.engine(feeds)
    by_reversed_dict = bert.engine(dict(reversed(list(feeds.items()))))
    by_tuple = bert.engine(tuple(bert.as_list(feeds)))
    by_run = bert.engine.run(feeds)
    for other, how in (
        (by_dict, "dict"),
        (by_reversed_dict, "dict in another key order"),
        (by_tuple, "tuple"),
        (by_run, "Engine.run"),
    ):
        assert_same(other, by_list, how)
    assert_close(by_list, ort_run(bert.path, feeds), bert.engine.output_names)


def test_single_input_model_accepts_a_bare_array(mlp: Loaded) -> None:
    x = mlp.feeds(4)["x"]
    ref = mlp.engine([x])
    assert_same(mlp.engine(x), ref, "bare array")
    assert_same(mlp.engine({"x": x}), ref, "dict")


def test_python_lists_are_converted(bert: Loaded, mlp: Loaded) -> None:
    feeds = bert.feeds(2, 7, seed=3)
    ref = bert.engine(feeds)
    lists = {k: v.tolist() for k, v in feeds.items()}
    assert isinstance(lists["input_ids"][0][0], int)
    assert_same(bert.engine(lists), ref, "nested lists of Python ints")
    assert_same(bert.engine([lists[n] for n in bert.engine.input_names]), ref, "list of lists")

    x = mlp.feeds(3)["x"]
    assert_same(mlp.engine([x.tolist()]), mlp.engine([x]), "nested lists of Python floats")
    ints = np.arange(3 * 37).reshape(3, 37) % 5 - 2
    assert_same(
        mlp.engine([ints.tolist()]), mlp.engine([ints.astype(np.float32)]), "ints for float32"
    )


def _noncontiguous_variants(x: np.ndarray) -> dict[str, np.ndarray]:
    """Views equal to `x` that are not C-contiguous (each is checked to be so)."""
    rng = np.random.default_rng(0)
    variants = {"fortran": np.asfortranarray(x)}
    if x.ndim == 2:
        variants["transposed"] = np.ascontiguousarray(x.T).T
    big = np.empty((x.shape[0] * 2, *x.shape[1:]), x.dtype)
    big[::2] = x
    big[1::2] = rng.integers(0, 2, x.shape).astype(x.dtype)
    variants["every-other-row"] = big[::2]
    wide = np.repeat(x, 2, axis=-1)
    wide[..., 1::2] = 0
    variants["every-other-column"] = wide[..., ::2]
    variants["reversed-twice"] = x[::-1].copy()[::-1]
    for name, v in variants.items():
        assert not v.flags.c_contiguous or x.size <= 1, name
        np.testing.assert_array_equal(v, x)
    return variants


@pytest.mark.parametrize("which", ["mlp", "bert", "convnet"])
def test_noncontiguous_inputs(request: pytest.FixtureRequest, which: str) -> None:
    loaded: Loaded = request.getfixturevalue(which)
    feeds = loaded.feeds(3, 9 if which == "bert" else None, seed=11)
    ref = loaded.engine(feeds)
    name = loaded.engine.input_names[0]
    for how, view in _noncontiguous_variants(feeds[name]).items():
        assert_same(loaded.engine({**feeds, name: view}), ref, f"{which} {name} {how}")
    if which == "bert":  # every input non-contiguous at once
        views = {k: np.asfortranarray(v) for k, v in feeds.items()}
        assert_same(loaded.engine(views), ref, "bert all inputs Fortran-ordered")
    if which == "convnet":  # NHWC data viewed as NCHW
        nhwc = np.ascontiguousarray(feeds[name].transpose(0, 2, 3, 1))
        assert_same(loaded.engine([nhwc.transpose(0, 3, 1, 2)]), ref, "convnet NHWC view")


def test_inputs_are_not_modified(bert: Loaded, mlp: Loaded) -> None:
    feeds = bert.feeds(3, 10, seed=2)
    copies = {k: v.copy() for k, v in feeds.items()}
    fortran = {k: np.asfortranarray(v) for k, v in feeds.items()}
    bert.engine(feeds)
    bert.engine(fortran)
    for k in feeds:
        np.testing.assert_array_equal(feeds[k], copies[k], err_msg=k)
        np.testing.assert_array_equal(fortran[k], copies[k], err_msg=f"{k} (Fortran)")
        assert feeds[k].flags.writeable and feeds[k].flags.c_contiguous

    x = mlp.feeds(2)["x"]
    frozen = x.copy()
    frozen.flags.writeable = False
    ref = mlp.engine([x])
    assert_same(mlp.engine([frozen]), ref, "read-only input")
    np.testing.assert_array_equal(frozen, x)


def test_outputs_are_fresh_writable_arrays(mlp: Loaded) -> None:
    x = mlp.feeds(2)["x"]
    first = mlp.engine([x])[0]
    keep = first.copy()
    first[...] = 123.0  # the caller owns the output; writing it does not affect the engine
    np.testing.assert_array_equal(mlp.engine([x])[0], keep)


# ---------------------------------------------------------------------------------------------
# Batch sizes.


@pytest.mark.parametrize("which", ["mlp", "bert", "convnet"])
def test_any_batch_size_on_one_engine(
    request: pytest.FixtureRequest,
    which: str,
    ort_run: Callable[..., Any],
    assert_close: Callable[..., None],
) -> None:
    loaded: Loaded = request.getfixturevalue(which)
    assert loaded.engine.batch_size is None
    for batch in (1, 3, 7, 1):
        feeds = loaded.feeds(batch, 6 + batch if which == "bert" else None, seed=batch)
        ours = loaded.engine(feeds)
        assert all(o.shape[0] == batch for o in ours)
        assert_close(
            ours, ort_run(loaded.path, feeds), loaded.engine.output_names, context=f"b={batch}"
        )


@pytest.mark.parametrize("which", ["mlp", "bert"])
def test_fixed_batch_size(request: pytest.FixtureRequest, which: str) -> None:
    loaded: Loaded = request.getfixturevalue(which)
    engine = sparsepipe.Engine(loaded.path, batch_size=2)
    assert engine.batch_size == 2
    for seed in (1, 2):
        feeds = loaded.feeds(2, 8 if which == "bert" else None, seed=seed)
        assert_same(engine(feeds), loaded.engine(feeds), f"batch_size=2 seed {seed}")


# ---------------------------------------------------------------------------------------------
# Threads.


@pytest.mark.parametrize("which", ["mlp", "bert", "convnet"])
def test_num_threads_do_not_change_results(
    request: pytest.FixtureRequest, which: str, assert_close: Callable[..., None]
) -> None:
    loaded: Loaded = request.getfixturevalue(which)
    one = sparsepipe.Engine(loaded.path, num_threads=1)
    two = sparsepipe.Engine(loaded.path, num_threads=2)
    assert (one.num_threads, two.num_threads) == (1, 2)
    for batch in (1, 5):
        feeds = loaded.feeds(batch, 13 if which == "bert" else None, seed=batch)
        assert_close(two(feeds), one(feeds), one.output_names, rel=1e-5, context=f"b={batch}")


def test_num_threads_env_is_honoured(mlp: Loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARSEPIPE_NUM_THREADS", "1")
    assert sparsepipe.default_num_threads() == 1
    engine = sparsepipe.Engine(mlp.path)
    assert engine.num_threads == 1
    assert sparsepipe.Engine(mlp.path, num_threads=2).num_threads == 2
    x = mlp.feeds(3)["x"]
    np.testing.assert_allclose(engine([x])[0], mlp.engine([x])[0], rtol=1e-5, atol=1e-5)
    monkeypatch.delenv("SPARSEPIPE_NUM_THREADS")
    assert sparsepipe.default_num_threads() >= 1


def test_concurrent_calls_get_their_own_results(bert: Loaded) -> None:
    """8 Python threads share one Engine, each with its own batch size, sequence length and
    data, 5 calls each, started together: each gets exactly its own results."""
    engine = bert.engine
    n_threads, calls = 8, 5
    cases = [bert.feeds(1 + i % 3, 4 + 3 * i, seed=100 + i) for i in range(n_threads)]
    expected = [engine(feeds) for feeds in cases]
    barrier = threading.Barrier(n_threads)

    def work(i: int) -> list[list[np.ndarray]]:
        barrier.wait(timeout=60)
        return [engine(cases[i]) for _ in range(calls)]

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        results = list(pool.map(work, range(n_threads)))
    for i, per_thread in enumerate(results):
        assert len(per_thread) == calls
        for c, outs in enumerate(per_thread):
            for o, e in zip(outs, expected[i]):
                assert o.shape == e.shape, f"thread {i} call {c}: shape {o.shape} != {e.shape}"
                np.testing.assert_allclose(
                    o, e, rtol=1e-6, atol=1e-6, err_msg=f"thread {i} call {c}"
                )


@pytest.fixture(scope="module")
def slow_engine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, np.ndarray]]:
    """A convnet on 160x160 images, batch 4, one thread: tens of milliseconds per call."""
    model = om.build("convnet", 0.0, image=160)
    path = om.save(model, tmp_path_factory.mktemp("gil"), "convnet160.onnx")
    return sparsepipe.Engine(path, num_threads=1), om.sample_inputs(model, 4)


def _count(seconds: float, work: Callable[[], None] | None) -> tuple[float, int]:
    """Run a pure-Python counter thread for `seconds` while this thread sleeps (work=None) or
    calls `work` in a loop; return the counter's rate per second and the number of calls."""
    stop = threading.Event()
    total = [0]

    def counter() -> None:
        n = 0
        while not stop.is_set():
            n += 1
        total[0] = n

    thread = threading.Thread(target=counter)
    calls = 0
    start = time.perf_counter()
    thread.start()
    if work is None:
        time.sleep(seconds)
    else:
        while time.perf_counter() - start < seconds:
            work()
            calls += 1
    stop.set()
    thread.join(timeout=30)
    return total[0] / (time.perf_counter() - start), calls


def test_gil_is_released_during_runs(slow_engine: tuple[Any, dict[str, np.ndarray]]) -> None:
    """While one thread runs the model in a loop for ~1 s, a pure-Python thread keeps counting.

    Were the GIL held during a run, the counter would only get the interpreter's switch
    interval (5 ms) between calls of tens of ms: under ~15% of its solo rate. With the GIL
    released it runs at full speed on a second core, or about half speed on a busy single core.
    The bar is 30% of the solo rate; a noisy machine gets three tries.
    """
    engine, feeds = slow_engine
    engine(feeds)  # warm up
    tries = []
    for _ in range(3):
        solo, _ = _count(0.3, None)
        busy, calls = _count(1.0, lambda: engine(feeds))
        tries.append((busy / solo, calls))
        if busy >= 0.3 * solo and calls >= 3:
            return
    pytest.fail(
        "a Python thread barely progressed while the engine ran (ratio to its solo rate, calls): "
        + ", ".join(f"{r:.2f} ({c})" for r, c in tries)
    )


# ---------------------------------------------------------------------------------------------
# Sparsity report, ISAs and dense backends.


def _onnx_node(reported: str, weights: dict[str, Any]) -> str:
    """The ONNX node a report entry names: the same name, or that name plus a tract suffix."""
    for node in weights:
        if reported == node or reported.startswith(node + "."):
            return node
    raise AssertionError(f"report entry {reported!r} matches no weight node of {list(weights)}")


def test_sparsity_report_entries(model_zoo: Any) -> None:
    for name in ("mlp", "bert", "convnet"):
        path, model = model_zoo.get(name, SPARSITY)
        weights = {w.node: w for w in om.prunable_weights(model)}
        for threshold, kernel in ((0.5, "sparse"), (1.01, "dense")):
            engine = sparsepipe.Engine(path, sparsity_threshold=threshold)
            report = engine.sparsity_report()
            assert report, f"{name}: empty report"
            assert len(report) == len(weights), f"{name}: {[r['node'] for r in report]}"
            seen = set()
            for r in report:
                where = f"{name} {r.get('node')}"
                # tract may suffix the ONNX node name (a Gemm becomes "<name>.ab").
                onnx_node = _onnx_node(r["node"], weights)
                assert onnx_node not in seen, f"{where}: reported twice"
                seen.add(onnx_node)
                assert set(r) == REPORT_KEYS, f"{where}: keys {sorted(r)}"
                assert isinstance(r["node"], str) and isinstance(r["pattern"], str), where
                assert all(isinstance(d, int) for d in r["shape"]), where
                assert isinstance(r["k"], int) and isinstance(r["n"], int), where
                assert r["k"] * r["n"] == int(np.prod(r["shape"])), where
                assert r["sparsity"] == pytest.approx(weights[onnx_node].sparsity, abs=0.02)
                assert r["kernel"] == kernel, where
                assert isinstance(r["isa"], str) and r["isa"], where
                assert isinstance(r["fused"], list), where
                assert all(isinstance(f, str) for f in r["fused"]), where
                if kernel == "sparse":
                    assert r["isa"] == engine.isa, where
                # Itself, or (an attention's q/k/v on our kernels) the linear computing all three,
                # either possibly adding a residual connection.
                merged = {x["node"] + ".qkv" for x in report}
                plans = {r["node"], *merged}
                # Or two linears run back to back, named after the first.
                plans |= {p + ".residual" for p in plans}
                plans |= {x["node"] + ".chain" for x in report}
                assert r["plan_node"] in plans, where
                assert isinstance(r["plan_output_channels"], int), where
                if r["plan_node"] == r["node"]:
                    assert r["plan_output_channels"] == r["n"], where


def test_available_isas() -> None:
    isas = sparsepipe.available_isas()
    assert isinstance(isas, list) and isas[0] == "portable"
    assert len(set(isas)) == len(isas) and set(isas) <= set(ISAS)
    assert sorted(isas, key=ISAS.index) == isas, "not slowest first"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    ("which", "sparsity", "backend"),
    [("bert", 0.8, "tract"), ("convnet", 0.8, "tract"), ("bert", 0.0, "sparsepipe")],
)
def test_isa_does_not_change_results(
    model_zoo: Any,
    assert_close: Callable[..., None],
    isa: str,
    which: str,
    sparsity: float,
    backend: str,
) -> None:
    if isa not in sparsepipe.available_isas():
        pytest.skip(f"this CPU has no {isa}")
    path, model = model_zoo.get(which, sparsity)
    default = sparsepipe.Engine(path, dense_backend=backend)
    forced = sparsepipe.Engine(path, isa=isa, dense_backend=backend)
    assert forced.isa == isa
    assert default.isa == sparsepipe.available_isas()[-1]
    kernels = {r["isa"] for r in forced.sparsity_report()} - {"tract"}
    assert kernels == {isa}, f"report ISAs {kernels}"
    for batch in (1, 3):
        feeds = om.sample_inputs(model, batch, 12, batch)
        assert_close(
            forced(feeds), default(feeds), default.output_names, rel=1e-4, context=f"b={batch}"
        )


@pytest.mark.parametrize("which", ["bert", "convnet"])
def test_dense_backend_auto_is_the_default_and_changes_no_output(
    model_zoo: Any, assert_close: Callable[..., None], which: str
) -> None:
    """By default each dense weight shape is timed on tract's matmul and on our dense kernel at
    load and runs on the faster; the outputs are those of either backend."""
    path, model = model_zoo.get(which, 0.0)
    auto = sparsepipe.Engine(path, batch_size=2)
    tract = sparsepipe.Engine(path, batch_size=2, dense_backend="tract")
    report = auto.sparsity_report()
    assert {r["kernel"] for r in report} == {"dense"}
    assert {r["isa"] for r in report} <= {"tract", auto.isa}
    by_shape: dict[Any, set[str]] = {}
    for r in report:
        by_shape.setdefault((r["pattern"], tuple(r["shape"])), set()).add(r["isa"])
    assert all(len(v) == 1 for v in by_shape.values()), by_shape
    feeds = om.sample_inputs(model, 2, 10, 2)
    assert_close(auto(feeds), tract(feeds), auto.output_names, rel=1e-4, context=which)


@pytest.mark.parametrize("which", ["mlp", "bert", "convnet"])
def test_dense_backend_sparsepipe(
    model_zoo: Any,
    ort_run: Callable[..., Any],
    assert_close: Callable[..., None],
    which: str,
) -> None:
    path, model = model_zoo.get(which, 0.0)
    tract = sparsepipe.Engine(path, dense_backend="tract")
    ours = sparsepipe.Engine(path, dense_backend="sparsepipe")
    assert {r["kernel"] for r in tract.sparsity_report()} == {"dense"}
    assert {r["isa"] for r in tract.sparsity_report()} == {"tract"}
    assert {r["isa"] for r in ours.sparsity_report()} == {ours.isa}
    for batch in (1, 4):
        feeds = om.sample_inputs(model, batch, 10, batch)
        a, b = ours(feeds), tract(feeds)
        assert_close(a, b, tract.output_names, rel=1e-4, context=f"vs tract b={batch}")
        assert_close(a, ort_run(path, feeds), tract.output_names, context=f"vs ort b={batch}")


def test_concurrent_calls_at_long_sequences_do_not_abort(shared_dir):
    """Threads sharing a multi-threaded engine (in a child: an abort must not kill pytest)."""
    import subprocess
    import sys

    model = shared_dir / "models" / "sentiment-minilm-sparse80" / "model.onnx"
    code = f"""
import threading, numpy as np
from sparsepipe import Engine
e = Engine({str(model)!r}, num_threads=2)
ids = np.random.default_rng(0).integers(1000, 5000, (1, 128))
f = [ids, np.ones_like(ids), np.zeros_like(ids)]
ref = e(f)[0]
bad = []
def work():
    for _ in range(25):
        if not np.array_equal(e(f)[0], ref):
            bad.append(1)
ts = [threading.Thread(target=work) for _ in range(3)]
[t.start() for t in ts]; [t.join() for t in ts]
print("mismatches", len(bad))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mismatches 0" in proc.stdout


def test_engines_sharing_a_pool_run_and_profile_concurrently(shared_dir):
    """Two engines with the same thread count share one pool: runs of both and a profile, from
    several threads at once, each get their own results (in a child: an abort must not kill
    pytest)."""
    import subprocess
    import sys

    zoo = shared_dir / "models"
    code = f"""
import threading, numpy as np
from sparsepipe import Engine
a = Engine({str(zoo / "sentiment-minilm-sparse80" / "model.onnx")!r}, num_threads=2)
b = Engine({str(zoo / "pii-ner-minilm" / "model.onnx")!r}, num_threads=2)
ids = np.random.default_rng(1).integers(1000, 5000, (2, 64))
feeds = {{n: (ids if n == "input_ids" else np.ones_like(ids) if n == "attention_mask"
             else np.zeros_like(ids)) for n in a.input_names}}
fa = feeds
fb = {{n: feeds[n] for n in b.input_names}}
ra, rb = a(fa)[0], b(fb)[0]
bad = []
def work(engine, f, ref):
    for _ in range(10):
        if not np.array_equal(engine(f)[0], ref):
            bad.append(1)
def prof():
    for _ in range(3):
        if not a.profile(fa, iterations=2):
            bad.append(1)
jobs = [(a, fa, ra), (b, fb, rb), (b, fb, rb)]
ts = [threading.Thread(target=work, args=j) for j in jobs] + [threading.Thread(target=prof)]
[t.start() for t in ts]; [t.join() for t in ts]
print("mismatches", len(bad))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mismatches 0" in proc.stdout, proc.stdout


def test_gelu_after_a_weight_matmul_is_fused(
    bert: Loaded, ort_run: Callable[..., Any], assert_close: Callable[..., None]
) -> None:
    """The FFN's bias and exact GELU run inside the linear op (tract's GeluExact math) and the
    model still matches onnxruntime, on one and on two threads (parallel GELU chunks)."""
    fused = [r for r in bert.engine.sparsity_report() if "/intermediate/" in r["node"]]
    assert fused, "the test model has no intermediate (FFN) matmul"
    for r in fused:
        assert any("gelu" in f.lower() for f in r["fused"]), r
    feeds = bert.feeds(4, 64, seed=21)  # 4 x 64 x FFN outputs: several GELU chunks
    ref = ort_run(bert.path, feeds)
    for threads in (1, 2):
        engine = sparsepipe.Engine(bert.path, num_threads=threads)
        assert_close(engine(feeds), ref, engine.output_names, context=f"threads={threads}")


def test_broadcast_and_residual_adds_run_on_our_add(
    bert: Loaded, ort_run: Callable[..., Any], assert_close: Callable[..., None]
) -> None:
    """The attention-mask add ([B, H, S, S] + [B, 1, 1, S]) and the residual adds after our
    linears run on sparsepipe's row-parallel add, and the model still matches onnxruntime."""
    feeds = bert.feeds(3, 40, seed=5)
    for threads in (1, 2):
        engine = sparsepipe.Engine(bert.path, num_threads=threads)
        ops = {r["op"] for r in engine.profile(feeds, iterations=1)}
        assert "SparsepipeAdd" in ops, ops
        assert_close(engine(feeds), ort_run(bert.path, feeds), context=f"threads={threads}")


def test_embedding_lookups_run_on_our_parallel_gather(bert: Loaded, ort_run) -> None:
    # Word, position and token-type lookups copy their rows on the pool; the copies are exact.
    feeds = bert.feeds(16, 64, seed=3)
    nodes = bert.engine.profile(feeds, iterations=1)
    lookups = {n["name"]: n["op"] for n in nodes if n["name"].endswith("embeddings/Gather")}
    assert len(lookups) == 3 and set(lookups.values()) == {"SparsepipeGather"}, lookups
    two = sparsepipe.Engine(bert.path, num_threads=2, fuse=False)
    for got, want in zip(two(feeds), ort_run(bert.path, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
