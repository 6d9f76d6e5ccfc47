"""Every bad model file, input or option gets a typed, helpful sparsepipe error.

Never a crash, a Rust panic (``PanicException``), a hang or a bare Python error: each failure is a
subclass of ``SparsepipeError`` whose message names what is wrong (the file, the input, the
option) and what was expected, and a failed call leaves the engine usable.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sparsepipe
from sparsepipe import ConfigError, EngineError, InputError, ModelLoadError, SparsepipeError

onnx = pytest.importorskip("onnx")
om = pytest.importorskip("onnx_models", reason="needs the onnx package")

try:  # guard against hangs when pytest-timeout is installed
    import pytest_timeout  # noqa: F401

    pytestmark = pytest.mark.timeout(120)
except ImportError:  # pragma: no cover
    pass

SPARSITY = 0.5
# Words that mark a message as an internal failure rather than a diagnosis of the user's mistake.
INTERNAL_WORDS = ("internal error", "bug in sparsepipe", "panicked", "PanicException")


def expect_error(
    cls: type[BaseException], fn: Callable[[], Any], *words: str, path: Path | None = None
) -> BaseException:
    """Call `fn`; fail unless it raises exactly `cls` (a SparsepipeError) whose message has `words`.

    With `path`, the message must name that file, and `words` are looked for in the rest of the
    message (temporary paths contain the test's name). Catches BaseException so that a pyo3
    PanicException (not an Exception) is reported as a failure with its message instead of
    aborting the run.
    """
    try:
        fn()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        err = e
    else:
        pytest.fail(f"expected {cls.__name__}, but the call succeeded")
    msg = str(err)
    kind = f"{type(err).__module__}.{type(err).__name__}"
    assert type(err) is cls, f"expected {cls.__name__}, got {kind}: {msg}"
    assert isinstance(err, SparsepipeError), f"{kind} is not a SparsepipeError"
    text = msg
    if path is not None:
        assert str(path) in msg, f"{cls.__name__} message does not name the file {path}: {msg!r}"
        text = msg.replace(str(path), "<path>")
    missing = [w for w in words if w not in text]
    assert not missing, f"{cls.__name__} message lacks {missing}: {msg!r}"
    internal = [w for w in INTERNAL_WORDS if w.lower() in msg.lower()]
    assert not internal, f"{cls.__name__} for a user error reads as an internal bug: {msg!r}"
    return err


# ---------------------------------------------------------------------------------------------
# Fixtures: small generated models, one Engine each for the whole module.


@pytest.fixture(scope="module")
def mlp(model_zoo: Any) -> tuple[Path, Any, Any]:
    """(path, onnx model, Engine) of the generated MLP: x float32 [batch, 37] -> y [batch, 10]."""
    path, model = model_zoo.get("mlp", SPARSITY)
    return path, model, sparsepipe.Engine(path)


@pytest.fixture(scope="module")
def bert(model_zoo: Any) -> tuple[Path, Any, Any]:
    """(path, onnx model, Engine) of the generated BERT: three int64 [batch, sequence] inputs."""
    path, model = model_zoo.get("bert", SPARSITY)
    return path, model, sparsepipe.Engine(path)


@pytest.fixture(scope="module")
def convnet(model_zoo: Any) -> tuple[Path, Any, Any]:
    """(path, onnx model, Engine) of the generated convnet: images float32 [batch, 3, 32, 32]."""
    path, model = model_zoo.get("convnet", SPARSITY)
    return path, model, sparsepipe.Engine(path)


def _x(batch: int = 2) -> np.ndarray:
    return om.sample_inputs("mlp", batch)["x"]


def _bert_feeds(batch: int = 2, seq: int = 8) -> dict[str, np.ndarray]:
    return om.sample_inputs("bert", batch, seq)


def _png_bytes() -> bytes:
    """A valid 2x2 RGB PNG image, built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes([255, 0, 0, 0, 255, 0]) for _ in range(2))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------------------------------
# ModelLoadError: the file is missing, not ONNX, truncated or uses unsupported operators.


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "no_such_model.onnx"
    expect_error(ModelLoadError, lambda: sparsepipe.Engine(path), "not found", path=path)


def test_directory_without_model_onnx(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    expect_error(ModelLoadError, lambda: sparsepipe.Engine(tmp_path), "model.onnx", path=tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    expect_error(ModelLoadError, lambda: sparsepipe.Engine(path), "empty", path=path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_or_device_is_refused_without_reading_it(tmp_path: Path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)  # reading it would block until a writer came
    expect_error(ModelLoadError, lambda: sparsepipe.Engine(fifo), "not a regular file", path=fifo)
    expect_error(ModelLoadError, lambda: sparsepipe.Engine("/dev/zero"), "not a regular file")


NOT_ONNX: dict[str, Callable[[], bytes]] = {
    "text": lambda: b"This is a README, not a model.\nIt has several lines of text.\n" * 20,
    "json": lambda: b'{"architectures": ["BertForSequenceClassification"], "num_labels": 2}',
    "png": _png_bytes,
    "zeros": lambda: bytes(4096),
    "random": lambda: np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes(),
}


@pytest.mark.parametrize("kind", NOT_ONNX)
def test_not_an_onnx_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.onnx"
    path.write_bytes(NOT_ONNX[kind]())
    expect_error(ModelLoadError, lambda: sparsepipe.Engine(path), "ONNX", path=path)


@pytest.mark.parametrize("source", ["generated-bert", "shared-efficientnet"])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_model(
    tmp_path: Path, request: pytest.FixtureRequest, model_zoo: Any, source: str, fraction: float
) -> None:
    if source == "generated-bert":
        original = model_zoo.get("bert", SPARSITY)[0]
    else:
        shared = request.getfixturevalue("shared_dir")
        original = shared / "models" / "efficientnet-lite0-imagenet" / "model.onnx"
    data = original.read_bytes()
    path = tmp_path / f"truncated-{fraction}.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    expect_error(ModelLoadError, lambda: sparsepipe.Engine(path), "truncated", path=path)


def _graph_end(model: Any) -> int:
    """Byte offset where the serialized graph ends (fields are written in field-number order)."""
    head = onnx.ModelProto()
    head.CopyFrom(model)
    del head.opset_import[:]
    del head.metadata_props[:]
    prefix = head.SerializeToString()
    assert model.SerializeToString().startswith(prefix)
    return len(prefix)


def test_truncated_anywhere_in_the_graph(tmp_path: Path, model_zoo: Any) -> None:
    """Every cut inside the graph's bytes is a ModelLoadError, never a crash or a hang."""
    path, model = model_zoo.get("bert", SPARSITY)
    data = path.read_bytes()
    end = _graph_end(model)
    cut_file = tmp_path / "cut.onnx"
    cuts = sorted({*range(1, end, max(1, end // 40)), end - 1, 2, 3})
    for cut in cuts:
        cut_file.write_bytes(data[:cut])
        expect_error(ModelLoadError, lambda: sparsepipe.Engine(cut_file), path=cut_file)


def _softmax_without_opset() -> Any:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 3, 4])
    node = onnx.helper.make_node("Softmax", ["x"], ["y"], name="softmax")
    graph = onnx.helper.make_graph([node], "softmax", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[], ir_version=8)
    del model.opset_import[:]
    return model


@pytest.mark.parametrize("case", ["bert-cut-after-graph", "softmax-no-opset"])
def test_model_without_opset_import(tmp_path: Path, model_zoo: Any, case: str) -> None:
    """ONNX requires an opset_import for the default domain (onnxruntime refuses a model without
    one). A file cut right after its graph loses it; sparsepipe must not guess an opset (opset-0
    semantics change Softmax, Unsqueeze, Clip, Resize...) but say the model is incomplete."""
    path = tmp_path / f"{case}.onnx"
    if case == "bert-cut-after-graph":
        src, model = model_zoo.get("bert", SPARSITY)
        path.write_bytes(src.read_bytes()[: _graph_end(model)])
    else:
        path.write_bytes(_softmax_without_opset().SerializeToString())
    expect_error(ModelLoadError, lambda: sparsepipe.Engine(path), "opset", path=path)


def test_unsupported_operators_are_all_named(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])
    nodes = [
        onnx.helper.make_node("Relu", ["x"], ["a"], name="relu_ok"),
        onnx.helper.make_node(
            "FancyNorm", ["a"], ["b"], name="my_custom_node", domain="com.example.ops"
        ),
        onnx.helper.make_node("Frobnicate", ["b"], ["y"], name="frob_node"),
    ]
    graph = onnx.helper.make_graph(nodes, "unsupported", [x], [y])
    model = onnx.helper.make_model(
        graph,
        opset_imports=[
            onnx.helper.make_opsetid("", 17),
            onnx.helper.make_opsetid("com.example.ops", 1),
        ],
        ir_version=8,
    )
    path = tmp_path / "unsupported.onnx"
    onnx.save_model(model, str(path))
    err = expect_error(
        ModelLoadError,
        lambda: sparsepipe.Engine(path),
        "FancyNorm",
        "my_custom_node",
        "Frobnicate",
        "frob_node",
        path=path,
    )
    assert "relu_ok" not in str(err), f"a supported node is listed: {err}"


# ---------------------------------------------------------------------------------------------
# InputError: the inputs of a call do not match the model.


def test_input_error_is_a_value_error(mlp: tuple[Path, Any, Any]) -> None:
    assert issubclass(InputError, ValueError)
    assert issubclass(InputError, SparsepipeError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(EngineError, RuntimeError)
    assert issubclass(ModelLoadError, SparsepipeError)
    engine = mlp[2]
    with pytest.raises(ValueError, match="'x'"):
        engine([_x().astype(np.float64)])


@pytest.mark.parametrize(
    ("which", "count", "words"),
    [
        ("mlp", 2, ("1 input", "'x'", "got 2")),
        ("mlp", 0, ("1 input", "'x'", "got 0")),
        ("bert", 2, ("3 input", "'input_ids'", "'token_type_ids'", "got 2")),
        ("bert", 4, ("3 input", "got 4")),
    ],
)
def test_wrong_number_of_inputs(
    request: pytest.FixtureRequest, which: str, count: int, words: tuple[str, ...]
) -> None:
    engine = request.getfixturevalue(which)[2]
    one = _x() if which == "mlp" else _bert_feeds()["input_ids"]
    expect_error(InputError, lambda: engine([one] * count), *words)


def test_unknown_input_name(bert: tuple[Path, Any, Any]) -> None:
    engine = bert[2]
    feeds = {**_bert_feeds(), "position_ids": np.zeros((2, 8), np.int64)}
    expect_error(
        InputError,
        lambda: engine(feeds),
        "'position_ids'",
        "'input_ids'",
        "'attention_mask'",
        "'token_type_ids'",
    )


def test_misspelled_input_name(bert: tuple[Path, Any, Any]) -> None:
    engine = bert[2]
    feeds = _bert_feeds()
    feeds["input_id"] = feeds.pop("input_ids")
    expect_error(InputError, lambda: engine(feeds), "'input_id'", "'input_ids'")


def test_missing_input_name(bert: tuple[Path, Any, Any]) -> None:
    engine = bert[2]
    feeds = _bert_feeds()
    del feeds["attention_mask"]
    expect_error(InputError, lambda: engine(feeds), "'attention_mask'", "missing")


@pytest.mark.parametrize(
    ("which", "name", "dtype", "want"),
    [
        ("bert", "attention_mask", np.int32, "int64"),
        ("bert", "input_ids", np.int32, "int64"),
        ("bert", "token_type_ids", np.float32, "int64"),
        ("mlp", "x", np.float64, "float32"),
        ("mlp", "x", np.int64, "float32"),
        ("convnet", "images", np.float64, "float32"),
    ],
)
def test_wrong_dtype(
    request: pytest.FixtureRequest, which: str, name: str, dtype: type, want: str
) -> None:
    engine = request.getfixturevalue(which)[2]
    feeds = om.sample_inputs(which, 2)
    feeds[name] = feeds[name].astype(dtype)
    given = np.dtype(dtype).name
    expect_error(InputError, lambda: engine(feeds), f"'{name}'", want, given)


@pytest.mark.parametrize(
    ("which", "name", "shape", "words"),
    [
        ("mlp", "x", (37,), ("2 dimensions", "got 1")),
        ("mlp", "x", (1, 2, 37), ("2 dimensions", "got 3")),
        ("bert", "input_ids", (2, 8, 1), ("2 dimensions", "got 3")),
        ("convnet", "images", (3, 32, 32), ("4 dimensions", "got 3")),
    ],
)
def test_wrong_rank(
    request: pytest.FixtureRequest,
    which: str,
    name: str,
    shape: tuple[int, ...],
    words: tuple[str, ...],
) -> None:
    engine = request.getfixturevalue(which)[2]
    feeds = om.sample_inputs(which, 2, 8 if which == "bert" else None)
    feeds[name] = np.zeros(shape, feeds[name].dtype)
    expect_error(InputError, lambda: engine(feeds), f"'{name}'", *words)


@pytest.mark.parametrize(
    ("which", "shape", "words"),
    [
        ("mlp", (2, 30), ("(batch, 37)", "(2, 30)", "dimension 1 must be 37")),
        ("convnet", (1, 3, 30, 32), ("(batch, 3, 32, 32)", "(1, 3, 30, 32)", "dimension 2")),
        ("convnet", (1, 4, 32, 32), ("(1, 4, 32, 32)", "dimension 1 must be 3")),
    ],
)
def test_wrong_fixed_dimension(
    request: pytest.FixtureRequest, which: str, shape: tuple[int, ...], words: tuple[str, ...]
) -> None:
    engine = request.getfixturevalue(which)[2]
    name = engine.input_names[0]
    expect_error(InputError, lambda: engine([np.zeros(shape, np.float32)]), f"'{name}'", *words)


def test_inconsistent_sequence_lengths(bert: tuple[Path, Any, Any]) -> None:
    engine = bert[2]
    feeds = _bert_feeds(2, 6)
    feeds["input_ids"] = feeds["input_ids"][:, :5].copy()
    feeds["token_type_ids"] = feeds["token_type_ids"][:, :5].copy()
    expect_error(
        InputError,
        lambda: engine(feeds),
        "'input_ids'",
        "'attention_mask'",
        "sequence=5",
        "sequence=6",
    )


def test_inconsistent_batch_between_inputs(bert: tuple[Path, Any, Any]) -> None:
    engine = bert[2]
    feeds = _bert_feeds(3, 8)
    feeds["token_type_ids"] = feeds["token_type_ids"][:2].copy()
    expect_error(InputError, lambda: engine(feeds), "'token_type_ids'", "batch=2", "batch=3")


@pytest.mark.parametrize("batch", [1, 3])
def test_batch_differs_from_engine_batch_size(bert: tuple[Path, Any, Any], batch: int) -> None:
    engine = sparsepipe.Engine(bert[0], batch_size=2)
    assert engine.batch_size == 2
    expect_error(
        InputError,
        lambda: engine(_bert_feeds(batch, 8)),
        "batch_size=2",
        "'input_ids'",
        f"batch {batch}",
        "batch_size=None",
    )
    assert engine(_bert_feeds(2, 8))[1].shape == (2, 3)


@pytest.mark.parametrize(
    "value",
    [{"a": 1}, "hello", object(), [[1.0, 2.0], [3.0]]],
    ids=["dict", "str", "object", "ragged-list"],
)
def test_non_array_input(mlp: tuple[Path, Any, Any], value: Any) -> None:
    engine = mlp[2]
    expect_error(InputError, lambda: engine([value]), "'x'", "float32")
    expect_error(InputError, lambda: engine({"x": value}), "'x'", "float32")


def test_non_array_input_int_model(bert: tuple[Path, Any, Any]) -> None:
    engine = bert[2]
    feeds: dict[str, Any] = {**_bert_feeds(), "attention_mask": "all ones"}
    expect_error(InputError, lambda: engine(feeds), "'attention_mask'", "int64")


def test_python_int_too_large_in_list(bert: tuple[Path, Any, Any]) -> None:
    """A nested list that does not fit the model dtype is an InputError naming the input (not a
    bare OverflowError)."""
    engine = bert[2]
    feeds: dict[str, Any] = _bert_feeds(1, 4)
    feeds["input_ids"] = [[101, 2**70, 7, 102]]
    expect_error(InputError, lambda: engine(feeds), "'input_ids'", "int64")


@pytest.mark.parametrize(
    "inputs",
    ["hello", b"bytes", 5, None, (a for a in [1])],
    ids=["str", "bytes", "int", "None", "gen"],
)
def test_inputs_container_of_wrong_type(mlp: tuple[Path, Any, Any], inputs: Any) -> None:
    engine = mlp[2]
    err = expect_error(InputError, lambda: engine(inputs), "'x'", "list", "dict")
    assert type(inputs).__name__ in str(err)


@pytest.mark.parametrize(
    "dtype", [np.complex64, np.float16, np.complex128, np.uint32, object, "U4", "datetime64[s]"]
)
def test_unsupported_dtype(mlp: tuple[Path, Any, Any], dtype: Any) -> None:
    engine = mlp[2]
    x = np.zeros((2, 37), dtype=dtype)
    expect_error(InputError, lambda: engine([x]), "'x'", str(x.dtype), "float32")


def test_engine_usable_after_failed_calls(bert: tuple[Path, Any, Any]) -> None:
    engine = bert[2]
    good = _bert_feeds(2, 8)
    before = engine(good)
    bad_calls: list[Any] = [
        [good["input_ids"]],
        {**good, "extra": good["input_ids"]},
        {**good, "input_ids": good["input_ids"].astype(np.int32)},
        {**good, "input_ids": good["input_ids"][:, :5]},
        {**good, "attention_mask": np.zeros((2, 8), np.complex64)},
        {**good, "token_type_ids": "zeros"},
        "not inputs",
    ]
    for bad in bad_calls:
        with pytest.raises(InputError):
            engine(bad)
        after = engine(good)
        for a, b in zip(after, before):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "case", ["id-equal-to-vocab", "id-10000", "id-minus-500", "empty-sequence"]
)
def test_invalid_token_ids_are_diagnosed(bert: tuple[Path, Any, Any], case: str) -> None:
    """Token ids outside the embedding table (or an empty sequence) are the caller's mistake: the
    error must say so (name the failing Gather node or the input), not report an internal
    sparsepipe bug with advice about sparsity_threshold; the engine stays usable afterwards."""
    engine = bert[2]
    vocab = om.DEFAULT_SIZES["bert"]["vocab_size"]
    good = _bert_feeds(2, 8)
    feeds = dict(good)
    if case == "empty-sequence":
        feeds = {k: v[:, :0].copy() for k, v in good.items()}
    else:
        bad_id = {"id-equal-to-vocab": vocab, "id-10000": 10_000, "id-minus-500": -500}[case]
        ids = good["input_ids"].copy()
        ids[0, 1] = bad_id
        feeds["input_ids"] = ids
    try:
        engine(feeds)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        msg = str(e)
        kind = type(e).__name__
        assert isinstance(e, (InputError, EngineError)), f"got {kind}: {msg}"
        internal = [w for w in INTERNAL_WORDS if w.lower() in msg.lower()]
        assert not internal, f"{kind} blames sparsepipe for a bad input: {msg!r}"
        assert "Gather" in msg or "input_ids" in msg, f"{kind} does not say what failed: {msg!r}"
    else:
        pytest.fail(f"{case}: the call succeeded")
    ok = engine(good)
    assert ok[1].shape == (2, 3) and np.isfinite(ok[1]).all()


# ---------------------------------------------------------------------------------------------
# ConfigError: invalid options.


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"num_threads": 0}, ("num_threads", "at least 1")),
        ({"sparsity_threshold": -1}, ("sparsity_threshold", "-1")),
        ({"sparsity_threshold": -0.01}, ("sparsity_threshold",)),
        ({"sparsity_threshold": math.nan}, ("sparsity_threshold", "NaN")),
        ({"batch_size": 0}, ("batch_size", "at least 1")),
        ({"dense_backend": "cuda"}, ("dense_backend", "cuda", "'auto'", "'tract'", "'sparsepipe'")),
        ({"dense_backend": ""}, ("dense_backend", "'tract'")),
        ({"isa": "neon"}, ("isa", "neon", "'portable'")),
        ({"isa": "sse4"}, ("isa", "sse4", "'avx2'")),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_invalid_option(
    mlp: tuple[Path, Any, Any], options: dict[str, Any], words: tuple[str, ...]
) -> None:
    expect_error(ConfigError, lambda: sparsepipe.Engine(mlp[0], **options), *words)


@pytest.mark.parametrize("options", [{"num_threads": -1}, {"batch_size": -1}], ids=str)
def test_negative_int_option(mlp: tuple[Path, Any, Any], options: dict[str, Any]) -> None:
    """A negative count is an invalid value: ConfigError naming the option (not OverflowError)."""
    (option,) = options
    expect_error(ConfigError, lambda: sparsepipe.Engine(mlp[0], **options), option)


@pytest.mark.parametrize(
    "options",
    [
        {"isa": 3},
        {"dense_backend": None},
        {"num_threads": "2"},
        {"num_threads": 2.5},
        {"batch_size": "1"},
        {"sparsity_threshold": "high"},
    ],
    ids=str,
)
def test_wrongly_typed_option_names_the_option(
    mlp: tuple[Path, Any, Any], options: dict[str, Any]
) -> None:
    """A TypeError (or ConfigError) is fine for a wrong type, but it must name the option."""
    (option,) = options
    with pytest.raises((TypeError, ConfigError)) as info:
        sparsepipe.Engine(mlp[0], **options)
    assert option in str(info.value), (
        f"{type(info.value).__name__} does not name the option {option!r}: {info.value}"
    )


def test_isa_the_cpu_lacks(mlp: tuple[Path, Any, Any]) -> None:
    missing = [i for i in ("avx2", "avx512") if i not in sparsepipe.available_isas()]
    if not missing:
        pytest.skip("this CPU supports every kernel ISA")
    expect_error(
        ConfigError, lambda: sparsepipe.Engine(mlp[0], isa=missing[-1]), missing[-1], "support"
    )


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5", "two"])
def test_invalid_num_threads_env(
    mlp: tuple[Path, Any, Any], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SPARSEPIPE_NUM_THREADS", value)
    words = ("SPARSEPIPE_NUM_THREADS", value, "positive integer")
    expect_error(ConfigError, lambda: sparsepipe.Engine(mlp[0]), *words)
    expect_error(ConfigError, sparsepipe.default_num_threads, *words)
    # An explicit num_threads does not read the variable.
    assert sparsepipe.Engine(mlp[0], num_threads=1).num_threads == 1


def test_batch_size_on_fixed_batch_model(model_zoo: Any) -> None:
    path, _ = model_zoo.get("yolo_b1", SPARSITY)
    expect_error(
        ConfigError,
        lambda: sparsepipe.Engine(path, batch_size=2),
        "batch_size=2",
        "'images'",
        "fixed batch of 1",
        "batch_size=1",
    )
    assert sparsepipe.Engine(path, batch_size=1).batch_size == 1
