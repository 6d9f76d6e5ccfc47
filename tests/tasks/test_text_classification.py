"""text-classification: Hugging Face parity, options, batching, the embedded default model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from sparsepipe import ConfigError, InputError, ModelLoadError, Pipeline

TOL = 1e-4


@pytest.fixture(scope="module")
def reference(shared_dir):
    with open(shared_dir / "reference" / "nlp" / "hf_reference.json") as f:
        return json.load(f)["text-classification"]


@pytest.fixture(scope="module")
def model_dir(shared_dir):
    return shared_dir / "reference" / "nlp" / "text-classification"


@pytest.fixture(scope="module")
def pipe(model_dir):
    return Pipeline.create("text-classification", model_path=model_dir, batch_size=None)


def _check(labels, scores, expected):
    assert len(labels) == len(expected)
    for lab, sc, exp in zip(labels, scores, expected):
        if not isinstance(lab, list):
            lab, sc = [lab], [sc]
        assert lab == [e["label"] for e in exp]
        np.testing.assert_allclose(sc, [e["score"] for e in exp], atol=TOL)


@pytest.mark.parametrize("engine_type", ["sparsepipe", "onnxruntime"])
@pytest.mark.parametrize("batch_size", [1, 3, None])
def test_matches_hugging_face_top_k_1(model_dir, reference, engine_type, batch_size):
    pipe = Pipeline.create(
        "text-classification", model_path=model_dir, engine_type=engine_type, batch_size=batch_size
    )
    out = pipe(sequences=reference["texts"])
    assert all(isinstance(label, str) for label in out.labels)
    _check(out.labels, out.scores, reference["top_k_1"])


def test_matches_hugging_face_all_labels(pipe, reference):
    out = pipe(reference["texts"], top_k=None)
    _check(out.labels, out.scores, reference["top_k_all"])
    # the per-call option did not change the pipeline's own
    assert pipe.options.top_k == 1
    _check(pipe(reference["texts"]).labels, pipe(reference["texts"]).scores, reference["top_k_1"])


def test_matches_hugging_face_text_pairs(pipe, reference):
    out = pipe(sequences=reference["pairs"], top_k=None)
    _check(out.labels, out.scores, reference["pairs_top_k_all"])


@pytest.mark.parametrize("sequence_length", [None, 512, [16, 64, 512]])
def test_sequence_length_policies_agree(model_dir, reference, sequence_length):
    pipe = Pipeline.create(
        "text-classification", model_path=model_dir, batch_size=4, sequence_length=sequence_length
    )
    out = pipe(reference["texts"], top_k=None)
    _check(out.labels, out.scores, reference["top_k_all"])


def test_short_sequence_length_truncates(model_dir):
    pipe = Pipeline.create("text-classification", model_path=model_dir, sequence_length=16)
    long_text = "word " * 100
    cut = pipe(long_text, top_k=None)
    prefix = pipe(" ".join(["word"] * 14), top_k=None)
    np.testing.assert_allclose(cut.scores[0], prefix.scores[0], atol=1e-6)


def test_top_k_and_functions(pipe, model_dir, ort_run):
    text = "What a great day!"
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    enc = tok.encode(text)
    feeds = {
        "input_ids": np.array([enc.ids], dtype=np.int64),
        "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
        "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
    }
    logits = ort_run(model_dir / "model.onnx", feeds)[0][0].astype(np.float64)
    labels = ["negative", "neutral", "positive"]
    expected = {
        "sigmoid": 1 / (1 + np.exp(-logits)),
        "none": logits,
        "softmax": np.exp(logits) / np.exp(logits).sum(),
    }
    for fn, values in expected.items():
        out = pipe(text, top_k=2, function_to_apply=fn)
        order = np.argsort(-values, kind="stable")[:2]
        assert out.labels[0] == [labels[i] for i in order]
        np.testing.assert_allclose(out.scores[0], values[order], atol=1e-5)
    # top_k larger than the label count returns every label
    assert len(pipe(text, top_k=10).labels[0]) == 3


def test_single_label_model_defaults_to_sigmoid(pipe):
    pipe.config = {**pipe.config, "id2label": {"0": "only"}}
    try:
        assert pipe._function(1) == "sigmoid"
    finally:
        del pipe.config["id2label"]
    pipe.config["problem_type"] = "multi_label_classification"
    try:
        assert pipe._function(3) == "sigmoid"
    finally:
        del pipe.config["problem_type"]
    assert pipe._function(3) == "softmax"


def test_call_forms_are_equivalent(pipe):
    a = pipe("I love it")
    b = pipe(sequences="I love it")
    c = pipe(pipe.input_schema(sequences="I love it"))
    d = pipe(["I love it"])
    assert a == b == c == d
    assert len(a.labels) == 1


def test_empty_inputs(pipe):
    out = pipe("")
    assert len(out.labels) == 1 and 0.0 <= out.scores[0] <= 1.0
    assert pipe([]).labels == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sequences": 5},
        {"sequences": [1, 2]},
        {"sequences": None},
        {"sequences": [[]]},
        {"sequences": [["a", "b", "c"]]},
        {"sequences": b"bytes"},
        {},
        {"sequences": "x", "top_k": -1},
        {"sequences": "x", "top_k": 0},
        {"sequences": "x", "top_k": "two"},
        {"sequences": "x", "function_to_apply": "relu"},
    ],
)
def test_bad_input_is_a_validation_error_and_pipeline_survives(pipe, kwargs):
    with pytest.raises(ValidationError):
        pipe(**kwargs)
    assert pipe("fine").labels


def test_unknown_argument_names_the_valid_ones(pipe):
    with pytest.raises(InputError, match=r"sequences.*top_k"):
        pipe(sequence="typo")
    with pytest.raises(InputError, match="at most 1 positional"):
        pipe("a", "b")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"top_k": -2}, "top_k"),
        ({"function_to_apply": "tanh"}, "function_to_apply"),
        ({"sequence_length": 100000}, "maximum"),
        ({"sequence_length": []}, "empty"),
        ({"sequence_length": "long"}, "sequence_length"),
        ({"aggregation_strategy": "simple"}, "unknown option"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_create_options(model_dir, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Pipeline.create("text-classification", model_path=model_dir, **kwargs)


def test_embedded_default_accuracy_matches_model_card(shared_dir):
    with open(shared_dir / "samples" / "sentiment_sample.jsonl") as f:
        rows = [json.loads(line) for line in f]
    texts = [r["text"] for r in rows]
    gold = [r["label"] for r in rows]
    ours = Pipeline.create("sentiment-analysis", batch_size=16)
    ort = Pipeline.create("sentiment-analysis", batch_size=16, engine_type="onnxruntime")
    a = ours(texts)
    b = ort(texts)
    assert a.labels == b.labels
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
    accuracy = np.mean([p == g for p, g in zip(a.labels, gold)])
    # MODEL_CARD / ../shared/README: 78.0% on these 200 (onnxruntime, truncation 128)
    assert accuracy == pytest.approx(0.78, abs=1e-9)
    assert ours.model_path == "zoo:sentiment-minilm-sparse80"


def test_wrong_kind_of_model_and_bad_text(shared_dir, pipe):
    with pytest.raises(ModelLoadError, match=r"\[batch, num_labels\]"):
        Pipeline.create(
            "text-classification", shared_dir / "reference" / "nlp" / "question-answering"
        )
    with pytest.raises(InputError, match="sequences item 0 is not valid Unicode"):
        pipe([["ok", "bad \ud800"]])
    assert pipe("x", function_to_apply="SOFTMAX").labels == pipe("x").labels
