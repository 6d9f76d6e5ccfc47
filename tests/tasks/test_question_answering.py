"""question-answering pipeline: Hugging Face parity for every option, batches, errors."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from sparsepipe import ConfigError, InputError, Pipeline

TOL = 1e-4


@pytest.fixture(scope="module")
def reference(shared_dir):
    with open(shared_dir / "reference" / "nlp" / "hf_reference.json") as f:
        return json.load(f)["question-answering"]


@pytest.fixture(scope="module")
def model_dir(shared_dir):
    return shared_dir / "reference" / "nlp" / "question-answering"


@pytest.fixture(scope="module")
def pipe(model_dir):
    return Pipeline.create("qa", model_path=model_dir, batch_size=4)


def _check(answers, expected):
    assert [(a.answer, a.start, a.end) for a in answers] == [
        (e["answer"], e["start"], e["end"]) for e in expected
    ]
    for a, e in zip(answers, expected):
        assert a.score == pytest.approx(e["score"], abs=TOL)


@pytest.mark.parametrize(
    "case, options",
    [
        ("default", {}),
        ("top_k_3", {"top_k": 3}),
        ("impossible", {"handle_impossible_answer": True}),
        (
            "stride_64_len_128",
            {"doc_stride": 64, "max_seq_len": 128, "max_answer_len": 10, "top_k": 2},
        ),
    ],
)
def test_matches_hugging_face(pipe, reference, case, options):
    for (question, context), expected in zip(reference["pairs"], reference[case]):
        if isinstance(expected, dict):
            expected = [expected]
        out = pipe(question=question, context=context, **options)
        _check(out.answers, expected)
        assert (out.answer, out.start, out.end) == (
            expected[0]["answer"],
            expected[0]["start"],
            expected[0]["end"],
        )


@pytest.mark.parametrize("engine_type", ["sparsepipe", "onnxruntime"])
@pytest.mark.parametrize("batch_size", [1, None])
def test_batched_pairs(model_dir, reference, engine_type, batch_size):
    pipe = Pipeline.create(
        "question-answering",
        model_dir,
        engine_type=engine_type,
        batch_size=batch_size,
        top_k=3,
    )
    questions = [q for q, _ in reference["pairs"]]
    contexts = [c for _, c in reference["pairs"]]
    out = pipe(questions, contexts)
    assert isinstance(out.answer, list) and len(out.answers) == len(questions)
    for answers, expected in zip(out.answers, reference["top_k_3"]):
        _check(answers, expected)


def test_no_default_model():
    with pytest.raises(ConfigError, match=r"no embedded default.*model_path"):
        Pipeline.create("question-answering")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"question": "who?"},
        {"context": "text"},
        {"question": "", "context": "text"},
        {"question": "who?", "context": ""},
        {"question": 1, "context": "text"},
        {"question": ["a?", "b?"], "context": ["only one"]},
        {"question": "a?", "context": ["list"]},
        {"question": "a?", "context": "c", "top_k": 0},
        {"question": "a?", "context": "c", "doc_stride": -1},
        {"question": "a?", "context": "c", "max_answer_len": -3},
        {"question": "a?", "context": "c", "handle_impossible_answer": "maybe"},
    ],
)
def test_bad_input(pipe, kwargs):
    with pytest.raises(ValidationError):
        pipe(**kwargs)
    assert pipe("who is mark?", "mark is batman").answer


def test_bad_lengths(pipe, model_dir):
    with pytest.raises(InputError, match=r"doc_stride"):
        pipe("q?", "c", doc_stride=300, max_seq_len=128)
    with pytest.raises(ConfigError, match=r"max_seq_len"):
        Pipeline.create("qa", model_dir, max_seq_len=4096)
    assert pipe("who is mark?", "mark is batman").answer == "batman"


def test_invalid_unicode(pipe):
    with pytest.raises(InputError, match="context item 0 is not valid Unicode"):
        pipe(question="who?", context="a \udc80 b")
    assert pipe("who is mark?", "mark is batman").answer == "batman"
