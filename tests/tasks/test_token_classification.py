"""token-classification pipeline: Hugging Face parity, long texts, the embedded PII default."""

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
        return json.load(f)["token-classification"]


@pytest.fixture(scope="module")
def model_dir(shared_dir):
    return shared_dir / "reference" / "nlp" / "token-classification"


@pytest.fixture(scope="module")
def pipe(model_dir):
    return Pipeline.create("ner", model_path=model_dir, batch_size=2)


def _check(predictions, expected):
    assert len(predictions) == len(expected)
    for got, exp in zip(predictions, expected):
        assert len(got) == len(exp)
        for g, e in zip(got, exp):
            assert g.entity == e.get("entity_group", e.get("entity"))
            assert (g.word, g.start, g.end) == (e["word"], e["start"], e["end"])
            assert g.index == e.get("index")
            assert g.score == pytest.approx(e["score"], abs=TOL)


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_matches_hugging_face(pipe, reference, strategy):
    out = pipe(reference["texts"], aggregation_strategy=strategy)
    _check(out.predictions, reference[strategy])


def test_ignore_nothing(pipe, reference):
    expected = reference["none_ignore_nothing"]  # made for the first texts only
    out = pipe(inputs=reference["texts"][: len(expected)], ignore_labels=[])
    _check(out.predictions, expected)


@pytest.mark.parametrize("engine_type", ["sparsepipe", "onnxruntime"])
def test_create_time_options_and_engines(model_dir, reference, engine_type):
    pipe = Pipeline.create(
        "token_classification",
        model_path=model_dir,
        aggregation_strategy="SIMPLE",
        batch_size=None,
        engine_type=engine_type,
    )
    _check(pipe(reference["texts"]).predictions, reference["simple"])
    _check([pipe(reference["texts"][1]).predictions[0]], [reference["simple"][1]])


def test_long_text_is_windowed_not_truncated(model_dir):
    pipe = Pipeline.create("ner", model_path=model_dir, sequence_length=32, stride=8)
    text = " ".join(["Sarah works for Acme Corp in Paris."] * 30)
    out = pipe(text, aggregation_strategy="simple", ignore_labels=[]).predictions[0]
    assert out[-1].end == len(text)  # the tail of the text is tagged
    starts = [e.start for e in out]
    assert starts == sorted(starts)
    assert all(a.end <= b.start for a, b in zip(out, out[1:]))  # merged, no overlaps
    for e in out:
        assert text[e.start : e.end].lower().replace(" ", "") == e.word.replace(" ", "").replace(
            "##", ""
        )


def test_stride_too_large(model_dir):
    with pytest.raises(ConfigError, match="stride"):
        Pipeline.create("ner", model_path=model_dir, sequence_length=16, stride=14)
    pipe = Pipeline.create("ner", model_path=model_dir, sequence_length=16)
    with pytest.raises(InputError, match="stride"):
        pipe("text", stride=100)
    assert pipe("text").predictions is not None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"inputs": 3},
        {"inputs": ["ok", None]},
        {"inputs": "x", "aggregation_strategy": "longest"},
        {"inputs": "x", "ignore_labels": "O"},
        {"inputs": "x", "stride": -1},
        {},
    ],
)
def test_bad_input(pipe, kwargs):
    with pytest.raises(ValidationError):
        pipe(**kwargs)
    assert pipe("Paris").predictions


def test_empty_text(pipe):
    assert pipe("").predictions == [[]]
    assert pipe([]).predictions == []


def test_embedded_pii_default_matches_hugging_face(shared_dir):
    with open(shared_dir / "reference" / "pii_ner_examples.jsonl") as f:
        rows = [json.loads(line) for line in f]
    pipe = Pipeline.create("token-classification", merge_adjacent=False, batch_size=4)
    assert pipe.model_path == "zoo:pii-ner-minilm"
    assert pipe.options.aggregation_strategy == "first"  # the model's shipped default
    out = pipe([r["text"] for r in rows]).predictions
    for row, got in zip(rows, out):
        exp = row["entities"]
        assert [(g.entity, g.word, g.start, g.end) for g in got] == [
            (e["entity_group"], e["word_hf"], e["start"], e["end"]) for e in exp
        ]
        np.testing.assert_allclose([g.score for g in got], [e["score"] for e in exp], atol=TOL)
        assert [row["text"][g.start : g.end] for g in got] == [e["word"] for e in exp]


def test_wrong_kind_of_model_and_bad_text(shared_dir, pipe):
    with pytest.raises(ModelLoadError, match=r"\[batch, sequence, num_labels\]"):
        Pipeline.create("ner", shared_dir / "reference" / "nlp" / "text-classification")
    with pytest.raises(InputError, match="item 1 is not valid Unicode"):
        pipe(["fine", "bad \ud800"])
    assert pipe("Paris").predictions


@pytest.mark.parametrize("task", ["ner", "text-classification"])
@pytest.mark.parametrize(
    "id2label, says",
    [
        ({"0": "O"}, r"config.json id2label lacks label id\(s\) 1"),
        (["O", "B-PER"], r"id2label must be an object mapping label ids to names, got list"),
        (5, r"id2label must be an object .* got int"),
        ({"x": "O"}, r"id2label key 'x' is not a label id"),
    ],
)
def test_a_broken_label_map_fails_at_load_naming_it(shared_dir, tmp_path, task, id2label, says):
    name = "token-classification" if task == "ner" else "text-classification"
    source = shared_dir / "reference" / "nlp" / name
    for f in source.iterdir():
        (tmp_path / f.name).symlink_to(f)
    config = json.loads((source / "config.json").read_text())
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps({**config, "id2label": id2label}))
    with pytest.raises(ModelLoadError, match=says):
        Pipeline.create(task, model_path=tmp_path)
    del config["id2label"]  # none at all: LABEL_<i>, as Hugging Face names them
    (tmp_path / "config.json").write_text(
        json.dumps({k: v for k, v in config.items() if k != "label2id"})
    )
    out = Pipeline.create(task, model_path=tmp_path)("John lives in Paris")
    labels = [e.entity for e in out.predictions[0]] if task == "ner" else [out.labels[0]]
    assert labels and all(label.startswith("LABEL_") for label in labels)
