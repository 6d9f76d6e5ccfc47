"""sparsepipe.Engine against onnxruntime on generated models at several sparsity levels.

One Engine per (model, sparsity, threshold) serves every batch size and sequence length tested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import sparsepipe

pytest.importorskip("onnxruntime")
om = pytest.importorskip("onnx_models", reason="needs the onnx package")

CASES = (*om.MODELS, *om.VARIANTS)
SPARSITIES = om.SPARSITIES
SPARSE_THRESHOLD = 0.5
NO_SPARSE_THRESHOLD = 1.01
REPORT_TOL = 0.02
REPORT_KEYS = {"node", "shape", "sparsity", "kernel", "isa"}

# (batch, size) runs on one Engine, in this order; size is the sequence length for BERT and the
# image side for convnet_dynhw (None: the model's own).
SHAPES: dict[str, tuple[tuple[int, int | None], ...]] = {
    "mlp": ((1, None), (5, None), (2, None)),
    "bert": ((2, 5), (3, 16), (1, 7), (2, 5)),
    "bert_range": ((1, 9), (3, 4)),
    "convnet": ((1, None), (3, None)),
    "convnet_dynhw": ((1, 32), (2, 24)),
    "yolo": ((1, None), (2, None)),
    "yolo_b1": ((1, None),),
}


@pytest.fixture(scope="session")
def engines() -> Iterator[dict[tuple[str, float, float], Any]]:
    """Session cache of Engines keyed by (case, sparsity, sparsity_threshold)."""
    cache: dict[tuple[str, float, float], Any] = {}
    yield cache
    cache.clear()


@pytest.fixture
def get_engine(
    model_zoo: Any, engines: dict[tuple[str, float, float], Any]
) -> Callable[[str, float, float], Any]:
    """Return the cached Engine for (case, sparsity, threshold), creating it on first use."""

    def get(case: str, sparsity: float, threshold: float = SPARSE_THRESHOLD) -> Any:
        key = (case, sparsity, threshold)
        if key not in engines:
            path, _ = model_zoo.get(case, sparsity)
            engines[key] = sparsepipe.Engine(str(path), sparsity_threshold=threshold)
        return engines[key]

    return get


def _run_engine(engine: Any, model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return list(engine([feeds[name] for name in om.input_names(model)]))


def _check_against_ort(
    case: str,
    sparsity: float,
    engine: Any,
    model_zoo: Any,
    ort_run: Callable[..., list[np.ndarray]],
    assert_close: Callable[..., None],
    label: str = "",
) -> None:
    path, model = model_zoo.get(case, sparsity)
    names = om.output_names(model)
    for batch, size in SHAPES[case]:
        feeds = om.sample_inputs(model, batch, size, rng=batch * 100 + (size or 0))
        ref = ort_run(path, feeds)
        ours = _run_engine(engine, model, feeds)
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        assert_close(ours, ref, names, context=f"{case} s={sparsity}{label} inputs {shapes}")


def _describe(report: Sequence[dict[str, Any]]) -> str:
    lines = [
        f"    {e.get('node')!s:55} {e.get('shape')!s:18} "
        f"sparsity={float(e.get('sparsity', 'nan')):.4f} "
        f"kernel={e.get('kernel')} isa={e.get('isa')}"
        for e in report
    ]
    return "\n".join(["  sparsity_report():", *lines]) if lines else "  sparsity_report() is empty"


def match_report(
    report: Sequence[dict[str, Any]], weights: Sequence[om.WeightInfo]
) -> tuple[dict[str, dict[str, Any]], list[om.WeightInfo]]:
    """Pair each pruned ONNX weight with a report entry: by node name, else by element count."""
    used: set[int] = set()
    matched: dict[str, dict[str, Any]] = {}

    def take(pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        for i, entry in enumerate(report):
            if i not in used and pred(entry):
                used.add(i)
                return entry
        return None

    pending = []
    for w in weights:
        entry = take(lambda e, w=w: str(e.get("node")) == w.node) or take(
            lambda e, w=w: w.node in str(e.get("node"))
        )
        if entry is None:
            pending.append(w)
        else:
            matched[w.node] = entry
    missing = []
    for w in pending:
        entry = take(lambda e, w=w: int(np.prod(e.get("shape") or [0])) == w.size)
        if entry is None:
            missing.append(w)
        else:
            matched[w.node] = entry
    return matched, missing


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("case", CASES)
def test_matches_onnxruntime(
    case: str,
    sparsity: float,
    get_engine: Callable[..., Any],
    model_zoo: Any,
    ort_run: Callable[..., list[np.ndarray]],
    assert_close: Callable[..., None],
) -> None:
    """One Engine matches onnxruntime for every batch size and sequence length in SHAPES."""
    engine = get_engine(case, sparsity)
    _check_against_ort(case, sparsity, engine, model_zoo, ort_run, assert_close)


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("case", CASES)
def test_sparsity_report(
    case: str, sparsity: float, get_engine: Callable[..., Any], model_zoo: Any
) -> None:
    """Each pruned weight is reported at its pruned level, with a sparse kernel from 0.5 up."""
    engine = get_engine(case, sparsity)
    _, model = model_zoo.get(case, sparsity)
    report = list(engine.sparsity_report())
    for entry in report:
        assert set(entry) >= REPORT_KEYS, f"report entry lacks {REPORT_KEYS - set(entry)}: {entry}"
    weights = om.prunable_weights(model)
    matched, missing = match_report(report, weights)
    assert not missing, (
        f"{case} s={sparsity}: no report entry for {[w.node for w in missing]}\n{_describe(report)}"
    )
    problems = []
    for w in weights:
        entry = matched[w.node]
        got = float(entry["sparsity"])
        if abs(got - sparsity) > REPORT_TOL:
            problems.append(
                f"{w.node} {list(w.shape)}: reported sparsity {got:.4f}, pruned to {sparsity}"
            )
        if sparsity >= SPARSE_THRESHOLD and entry["kernel"] != "sparse":
            problems.append(
                f"{w.node}: kernel {entry['kernel']!r} at sparsity {sparsity}, want 'sparse'"
            )
        if sparsity < SPARSE_THRESHOLD and entry["kernel"] == "sparse":
            problems.append(f"{w.node}: sparse kernel below the threshold (sparsity {sparsity})")
    assert not problems, (
        f"{case} s={sparsity}:\n  " + "\n  ".join(problems) + "\n" + _describe(report)
    )


@pytest.mark.parametrize("sparsity", [s for s in SPARSITIES if s > 0])
@pytest.mark.parametrize("case", CASES)
def test_threshold_disables_sparse(
    case: str,
    sparsity: float,
    get_engine: Callable[..., Any],
    model_zoo: Any,
    ort_run: Callable[..., list[np.ndarray]],
    assert_close: Callable[..., None],
) -> None:
    """With sparsity_threshold above 1 no kernel is sparse and outputs still match onnxruntime."""
    engine = get_engine(case, sparsity, NO_SPARSE_THRESHOLD)
    report = list(engine.sparsity_report())
    sparse = [e for e in report if e.get("kernel") == "sparse"]
    assert not sparse, (
        f"{case} s={sparsity} threshold={NO_SPARSE_THRESHOLD}: {len(sparse)} sparse kernels\n"
        + _describe(report)
    )
    _check_against_ort(
        case,
        sparsity,
        engine,
        model_zoo,
        ort_run,
        assert_close,
        label=f" threshold={NO_SPARSE_THRESHOLD}",
    )


@pytest.mark.parametrize("case", CASES)
def test_engine_signature(case: str, get_engine: Callable[..., Any], model_zoo: Any) -> None:
    """input_names/shapes/dtypes and output_names follow the ONNX graph."""
    engine = get_engine(case, 0.9)
    _, model = model_zoo.get(case, 0.9)
    assert list(engine.input_names) == om.input_names(model)
    assert list(engine.output_names) == om.output_names(model)
    feeds = om.sample_inputs(model, 1, SHAPES[case][0][1])
    dtypes = [np.dtype(d) for d in engine.input_dtypes]
    assert dtypes == [feeds[name].dtype for name in om.input_names(model)]
    inits = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    assert len(engine.input_shapes) == len(graph_inputs)
    for shape, vi in zip(engine.input_shapes, graph_inputs):
        dims = vi.type.tensor_type.shape.dim
        assert len(shape) == len(dims), f"{vi.name}: shape {shape}"
        for got, dim in zip(shape, dims):
            if dim.HasField("dim_value"):
                assert got == dim.dim_value, f"{vi.name}: shape {shape}"
            else:
                assert isinstance(got, str), f"{vi.name}: symbolic dim {dim.dim_param!r} as {got!r}"


@pytest.mark.parametrize("case", ["mlp", "bert"])
def test_dict_inputs_match_list_inputs(
    case: str,
    get_engine: Callable[..., Any],
    model_zoo: Any,
    assert_close: Callable[..., None],
) -> None:
    """Calling with a dict by input name gives the outputs of the positional call."""
    engine = get_engine(case, 0.8)
    _, model = model_zoo.get(case, 0.8)
    feeds = om.sample_inputs(model, 2, SHAPES[case][0][1])
    by_list = _run_engine(engine, model, feeds)
    by_dict = list(engine(dict(reversed(list(feeds.items())))))
    assert_close(by_dict, by_list, om.output_names(model), rel=1e-6, context=f"{case} dict call")
