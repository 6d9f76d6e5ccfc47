"""Property tests of every task's input parsing, pre- and post-processing: whatever a caller
passes (random Unicode, control characters, lone surrogates, empty and huge strings, lists nested
to the wrong depth, images of extreme sizes and every mode, corrupt image bytes, NaN and inf in
numeric inputs, out-of-range options), only the typed errors escape — `InputError` and pydantic's
`ValidationError` — and the next valid call still gives the same answer as before.

Runs are derandomized (a fixed sequence of examples per test), so CI sees the same cases each time.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError
from sparsepipe import InputError, Pipeline

pytestmark = pytest.mark.slow

PROPERTY = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TYPED = (InputError, ValidationError)

# -- strategies -------------------------------------------------------------------------------

#: any Unicode text, lone surrogates and control characters included
any_text = st.text(st.characters(codec=None, categories=None), max_size=200)
nasty_text = st.one_of(
    any_text,
    st.text(st.characters(categories=["Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Mn"]), max_size=50),
    st.sampled_from(["", " ", "\x00", "\ufeff", "\u200b" * 40, "😀" * 30, "a\udc80b", "\r\n\t"]),
)
scalar = st.one_of(
    nasty_text, st.integers(), st.floats(allow_nan=True), st.none(), st.booleans(), st.binary()
)
#: a value of any shape: scalars, lists nested to any depth, dicts
anything = st.recursive(
    scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)
text_inputs = st.one_of(
    nasty_text,
    st.lists(nasty_text, max_size=5),
    st.lists(st.lists(nasty_text, max_size=3), max_size=3),
    anything,
)
option_value = st.one_of(st.integers(-3, 600), st.floats(allow_nan=True), scalar)

HUGE = "word " * 200_000  # a million characters (truncated by text-classification)
LONG = "word " * 20_000  # a hundred thousand (read whole, in windows, by NER and QA)


def _same(a: Any, b: Any) -> None:
    assert a.model_dump() == b.model_dump()


def _typed_only(call: Any) -> None:
    with contextlib.suppress(TYPED):  # anything else fails the test
        call()


# -- text tasks -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentiment():
    pipe = Pipeline.create("sentiment-analysis")
    return pipe, pipe(sequences=["a fine film", "a dull film"])


@given(
    sequences=text_inputs,
    options=st.dictionaries(
        st.sampled_from(["top_k", "function_to_apply", "truncation", "x"]), option_value, max_size=2
    ),
)
@example(sequences=HUGE, options={})
@example(sequences=[["a", "b", "c"]], options={})
@example(sequences=[[["deep"]]], options={})
@PROPERTY
def test_text_classification_inputs(sentiment, sequences, options):
    pipe, expected = sentiment
    _typed_only(lambda: pipe(sequences=sequences, **options))
    _same(pipe(sequences=["a fine film", "a dull film"]), expected)


@pytest.fixture(scope="module")
def ner():
    pipe = Pipeline.create("ner")
    return pipe, pipe(inputs="Maria Garcia lives at 12 Main Street, mail maria.g@example.org")


@given(
    inputs=text_inputs,
    options=st.dictionaries(
        st.sampled_from(["aggregation_strategy", "ignore_labels", "stride", "x"]),
        st.one_of(
            st.sampled_from(["none", "simple", "first", "average", "max", "bogus"]), option_value
        ),
        max_size=2,
    ),
)
@example(inputs=LONG, options={})
@example(inputs=["é" * 3000, "\u0301" * 100], options={"aggregation_strategy": "simple"})
@PROPERTY
def test_token_classification_inputs(ner, inputs, options):
    pipe, expected = ner
    _typed_only(lambda: pipe(inputs=inputs, **options))
    _same(pipe(inputs="Maria Garcia lives at 12 Main Street, mail maria.g@example.org"), expected)


@pytest.fixture(scope="module")
def qa(shared_dir):
    pipe = Pipeline.create(
        "question-answering", shared_dir / "reference" / "nlp" / "question-answering"
    )
    return pipe, pipe(question="who is mark?", context="mark is batman")


@given(
    question=text_inputs,
    context=text_inputs,
    options=st.dictionaries(
        st.sampled_from(
            [
                "top_k",
                "doc_stride",
                "max_answer_len",
                "max_seq_len",
                "max_question_len",
                "handle_impossible_answer",
            ]
        ),
        option_value,
        max_size=2,
    ),
)
@example(question="who?", context=LONG, options={})
@example(question=HUGE, context="mark is batman", options={})
@PROPERTY
def test_question_answering_inputs(qa, question, context, options):
    pipe, expected = qa
    _typed_only(lambda: pipe(question=question, context=context, **options))
    _same(pipe(question="who is mark?", context="mark is batman"), expected)


# -- image tasks ------------------------------------------------------------------------------

MODES = [
    "1",
    "L",
    "P",
    "RGB",
    "RGBA",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "I",
    "F",
    "LA",
    "PA",
    "La",
    "RGBa",
    "I;16",
    "I;16B",
]
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM"]


@st.composite
def pil_images(draw: Any) -> Any:
    from PIL import Image

    mode = draw(st.sampled_from(MODES))
    width = draw(st.one_of(st.integers(1, 64), st.sampled_from([1, 2, 3000])))
    height = draw(st.one_of(st.integers(1, 64), st.sampled_from([1, 2, 3000])))
    return Image.new(mode, (width, height))


@st.composite
def encoded_images(draw: Any) -> bytes:
    img = draw(pil_images())
    fmt = draw(st.sampled_from(FORMATS))
    out = io.BytesIO()
    try:
        img.save(out, format=fmt)
    except (OSError, ValueError, KeyError):  # this format cannot hold this mode or size
        img.convert("RGB").resize((min(img.width, 64), min(img.height, 64))).save(out, format="PNG")
    data = out.getvalue()
    damage = draw(st.sampled_from(["none", "truncate", "flip", "prefix"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    elif damage == "prefix":
        data = draw(st.binary(max_size=16)) + data
    return data


arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int16, np.int64, np.float32, np.float64, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12),
)
one_image = st.one_of(
    pil_images(), encoded_images(), arrays, st.binary(max_size=64), nasty_text, scalar
)
image_inputs = st.one_of(
    one_image,
    st.lists(one_image, max_size=3),
    st.lists(st.lists(one_image, max_size=2), max_size=2),
)


def _coffee(shared_dir: Any) -> bytes:
    return (shared_dir / "samples" / "images" / "coffee.png").read_bytes()


@pytest.fixture(scope="module")
def classifier(shared_dir):
    pipe = Pipeline.create("image-classification")
    return pipe, _coffee(shared_dir), pipe(images=_coffee(shared_dir))


@given(
    images=image_inputs,
    options=st.dictionaries(
        st.sampled_from(["top_k", "function_to_apply", "x"]), option_value, max_size=1
    ),
)
@example(images="/dev/zero", options={})
@example(images="a\x00b", options={})
@example(images=np.zeros((1, 4000, 3), np.uint8), options={})
@example(images=np.full((8, 8, 3), np.nan, np.float32), options={})
@PROPERTY
def test_image_classification_inputs(classifier, images, options):
    pipe, coffee, expected = classifier
    _typed_only(lambda: pipe(images=images, **options))
    _same(pipe(images=coffee), expected)


@pytest.fixture(scope="module")
def detector(shared_dir):
    pipe = Pipeline.create("object-detection")
    return pipe, _coffee(shared_dir), pipe(images=_coffee(shared_dir))


@given(
    images=image_inputs,
    options=st.dictionaries(
        st.sampled_from(["conf_thres", "iou_thres", "max_det", "x"]), option_value, max_size=1
    ),
)
@example(images="/dev/zero", options={})
@settings(PROPERTY, max_examples=40)
def test_object_detection_inputs(detector, images, options):
    pipe, coffee, expected = detector
    _typed_only(lambda: pipe(images=images, **options))
    _same(pipe(images=coffee), expected)


# -- custom task: numeric inputs straight to the engine ----------------------------------------


@pytest.fixture(scope="module")
def custom(model_zoo):
    import onnx_models

    path, _ = model_zoo.get("mlp", 0.0)
    pipe = Pipeline.create("custom", model_path=path)
    x = onnx_models.sample_inputs("mlp", 2)["x"]
    return pipe, x, pipe(inputs=[x])


float_arrays = hnp.arrays(
    dtype=st.sampled_from(
        [np.float32, np.float64, np.float16, np.int32, np.int64, np.bool_, np.uint8]
    ),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40),
    elements=None,
)


@given(inputs=st.one_of(float_arrays, st.lists(float_arrays, max_size=3), anything))
@example(inputs=[np.full((2, 37), np.nan, np.float32)])
@example(inputs=[np.full((2, 37), np.inf, np.float32)])
@example(inputs=[np.full((2, 37), -np.inf, np.float32)])
@PROPERTY
def test_custom_task_numeric_inputs(custom, inputs):
    pipe, x, expected = custom
    _typed_only(lambda: pipe(inputs=inputs))
    got = pipe(inputs=[x])
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
