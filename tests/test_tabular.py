"""`sparsepipe.tabular.RowRunner`: input columns, output columns, order, merged calls equal to
the in-process pipeline, on_error modes and option checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sparsepipe import ConfigError, InputError, Pipeline
from sparsepipe.tabular import RowRunner, check_on_error, plain_value
from sparsepipe.tasks.text_classification.pipeline import TextClassificationPipeline

QA_MODEL = "reference/nlp/question-answering"

TEXTS = [
    "My name is John Smith and I live in Paris.",
    "a dull, lifeless film",
    "Call Maria Garcia at 555-0100 tomorrow.",
    "A joyous, warm-hearted comedy.",
    "",
]


@pytest.fixture(scope="module")
def sentiment() -> Pipeline:
    return Pipeline.create("text-classification")


@pytest.fixture(scope="module")
def samples(shared_dir) -> list[dict]:
    with open(shared_dir / "samples" / "sentiment_sample.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_output_columns_follow_the_task_and_on_error(sentiment):
    assert RowRunner(sentiment).output_columns == ["labels", "scores", "error"]
    assert RowRunner(sentiment, on_error="skip").output_columns == ["labels", "scores"]
    assert RowRunner(sentiment, on_error="raise").task_columns == ["labels", "scores"]
    assert RowRunner(sentiment).columns == {"sequences": "sequences"}
    assert RowRunner(sentiment, "text").columns == {"sequences": "text"}


def test_rows_keep_order_and_columns(sentiment):
    rows = [{"id": i, "text": t, "meta": {"k": i}} for i, t in enumerate(TEXTS)]
    out = RowRunner(sentiment, "text").run(rows)
    assert [r["id"] for r in out] == list(range(len(TEXTS)))
    assert list(out[0]) == ["id", "text", "meta", "labels", "scores", "error"]
    assert all(r["meta"] == {"k": r["id"]} and r["error"] is None for r in out)
    expected = sentiment(sequences=TEXTS)
    assert [r["labels"] for r in out] == expected.labels
    assert [r["scores"] for r in out] == expected.scores


def test_text_classification_merged_and_per_row_equal_the_pipeline(sentiment, samples):
    texts = [s["text"] for s in samples]
    rows = [{"text": t, "label": s["label"]} for t, s in zip(texts, samples)]
    expected = sentiment(sequences=texts)
    merged = RowRunner(sentiment, "text", chunk_size=64).outputs(rows)
    per_row = RowRunner(sentiment, "text", chunk_size=1).outputs(rows)
    assert merged == per_row
    assert [r["labels"] for r in merged] == expected.labels
    assert [r["scores"] for r in merged] == expected.scores


def test_nested_outputs_are_json_encoded(sentiment):
    runner = RowRunner(Pipeline.create("text-classification", top_k=None), on_error="skip")
    (out,) = runner.outputs([{"sequences": "a fine film"}])
    labels, scores = json.loads(out["labels"]), json.loads(out["scores"])
    assert sorted(labels) == ["negative", "positive"] and len(scores) == 2


def test_token_classification_equals_the_pipeline():
    pipe = Pipeline.create("token-classification")
    rows = [{"inputs": t} for t in TEXTS]
    out = RowRunner(pipe, chunk_size=2).outputs(rows)
    for text, got in zip(TEXTS, out):
        want = pipe(inputs=[text]).model_dump(mode="json")["predictions"][0]
        assert json.loads(got["predictions"]) == want and got["error"] is None
    assert any(json.loads(r["predictions"]) for r in out)


def test_question_answering_equals_the_pipeline(shared_dir):
    pipe = Pipeline.create("question-answering", shared_dir / QA_MODEL)
    questions = ["Who went home?", "Where does Maria live?", "What is red?"]
    contexts = ["John went home early.", "Maria lives in Lisbon.", "The apple is red."]
    rows = [{"q": q, "context": c, "id": i} for i, (q, c) in enumerate(zip(questions, contexts))]
    out = RowRunner(pipe, "q").run(rows)
    want = pipe(question=questions, context=contexts)
    assert [r["id"] for r in out] == [0, 1, 2]
    assert [r["answer"] for r in out] == want.answer
    assert [r["score"] for r in out] == want.score
    assert [(r["start"], r["end"]) for r in out] == list(zip(want.start, want.end))
    answers = [json.loads(r["answers"]) for r in out]
    assert answers == [[a.model_dump() for a in per_q] for per_q in want.answers]
    by_dict = RowRunner(pipe, {"question": "q"}).run(rows)
    assert by_dict == out


def test_on_error_modes(sentiment):
    rows = [{"text": "good"}, {"text": 5}, {"text": None}, {"text": "bad"}, {"other": "x"}]
    recorded = RowRunner(sentiment, "text").outputs(rows)
    assert [r["error"] is None for r in recorded] == [True, False, False, True, False]
    assert "sequences: Input should be a valid string (got int)" in recorded[1]["error"]
    assert recorded[1]["labels"] is None and recorded[1]["scores"] is None
    assert "no column 'text'" in recorded[4]["error"]
    good = sentiment(sequences=["good", "bad"])
    assert [recorded[0]["labels"], recorded[3]["labels"]] == good.labels
    skipped = RowRunner(sentiment, "text", on_error="skip").run(rows)
    assert [r["text"] for r in skipped] == ["good", "bad"]
    assert all("error" not in r for r in skipped)
    with pytest.raises(InputError, match=r"^row 11: invalid input: sequences"):
        RowRunner(sentiment, "text", on_error="raise").outputs(rows, start=10)


def test_question_answering_bad_row_does_not_fail_the_others(shared_dir):
    pipe = Pipeline.create("question-answering", shared_dir / QA_MODEL)
    rows = [
        {"question": "Who?", "context": "John went home."},
        {"question": "", "context": "John went home."},
    ]
    ok, bad = RowRunner(pipe).outputs(rows)
    assert ok["answer"] == "John" and ok["error"] is None
    assert bad["answer"] is None and "`question` cannot be empty" in bad["error"]


def test_unreadable_image_fails_only_its_row(shared_dir):
    pipe = Pipeline.create("image-classification")
    image = str(shared_dir / "samples" / "images" / "coffee.png")
    rows = [{"path": image}, {"path": "/no/such/image.png"}, {"path": image}]
    out = RowRunner(pipe, "path").outputs(rows)
    assert out[0] == out[2] and out[0]["error"] is None
    assert json.loads(out[0]["labels"]) == pipe(images=[image]).labels[0]
    assert "no such file" in out[1]["error"] and out[1]["labels"] is None
    with pytest.raises(InputError, match=r"^row 1: .*no such file"):
        RowRunner(pipe, "path", on_error="raise").outputs(rows)


class _RowByRow(TextClassificationPipeline):
    """Text classification without batch_fields: rows run one call each."""

    batch_fields = None


def test_task_without_batch_fields_runs_row_by_row(sentiment):
    runner = RowRunner(_RowByRow(), "text")
    assert runner.output_columns == ["labels", "scores", "error"]
    out = runner.outputs([{"text": "good"}, {"text": 3}])
    want = sentiment(sequences="good")
    assert json.loads(out[0]["labels"]) == want.labels
    assert json.loads(out[0]["scores"]) == want.scores
    assert out[1]["labels"] is None and "valid string" in out[1]["error"]


def test_numpy_values_are_converted(sentiment):
    rows = [{"text": np.str_("good")}, {"text": np.array(["a fine", "film"], dtype=object)}]
    out = RowRunner(sentiment, "text").outputs(rows)
    assert all(r["error"] is None for r in out)
    assert out[1]["labels"] == sentiment(sequences=[["a fine", "film"]]).labels[0]
    assert plain_value(np.int64(3)) == 3 and type(plain_value(np.float32(1.5))) is float
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    assert plain_value(image) is image


def test_missing_column_names_the_columns_and_the_option(sentiment):
    runner = RowRunner(sentiment)
    with pytest.raises(ConfigError) as e:
        runner.check_columns(["text", "label"])
    msg = str(e.value)
    assert "'sequences'" in msg and "text, label" in msg and "input_column" in msg
    runner = RowRunner(sentiment, "body", column_option="--column")
    with pytest.raises(ConfigError, match=r"no column 'body' .*set --column"):
        runner.check_columns(["text"])
    runner.check_columns(["body", "id"])


def test_input_column_named_like_an_output_column_is_refused(sentiment):
    with pytest.raises(ConfigError, match="'labels' have the name of an output column"):
        RowRunner(sentiment, "text").check_columns(["text", "labels"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"on_error": "ignore"}, "on_error must be one of raise, skip, record"),
        ({"input_column": ""}, "non-empty column name"),
        ({"input_column": 3}, "column name or a dict"),
        ({"input_column": {"text": "x"}}, "'text', not input field"),
        ({"input_column": {"sequences": 1}}, "maps input fields to column names"),
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1"),
    ],
)
def test_bad_options(sentiment, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RowRunner(sentiment, **kwargs)


def test_check_on_error_names_the_option():
    assert check_on_error("skip") == "skip"
    with pytest.raises(ConfigError, match=r"^--on-error must be one of"):
        check_on_error("nope", "--on-error")
