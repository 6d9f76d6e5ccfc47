"""DeepSparse 1.8 code runs with only its import changed: DeepSparse's argument and option names
are aliases of sparsepipe's (an alias and its name with different values is an error), its
`PipelineConfig` files load, and its input forms are read as DeepSparse reads them."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from sparsepipe import ConfigError, Pipeline, PipelineConfig, aliases


@pytest.fixture(scope="module")
def mlp_model(model_zoo):
    return model_zoo.get("mlp", 0.0)[0]


@pytest.fixture(scope="module")
def sentiment():
    return Pipeline.create(
        "sentiment-analysis",
        engine_type="deepsparse",
        num_cores=1,
        alias="my-sentiment",
        scheduler="multi_stream",
        input_shapes=[[1, 64]],
        batch_size=2,
    )


def test_create_takes_deepsparse_arguments(sentiment):
    assert sentiment.engine_type == "sparsepipe" and type(sentiment.engine).__name__ == "Engine"
    assert sentiment.num_threads == 1 and sentiment.engine.num_threads == 1
    assert sentiment.alias == "my-sentiment" and sentiment.scheduler == "multi_stream"
    assert sentiment.fixed_length == 64  # input_shapes [[batch, 64]] is the sequence length
    assert sentiment("what a wonderful film").labels == ["positive"]


def test_lists_of_one_text_are_single_sequences_as_deepsparse_reads_them(sentiment):
    nested = sentiment(sequences=[["a wonderful film"], ["dull and far too long"]])
    flat = sentiment(sequences=["a wonderful film", "dull and far too long"])
    assert nested == flat and nested.labels == ["positive", "negative"]
    pair = sentiment(sequences=[["a wonderful film", "I agree"]])
    assert len(pair.labels) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_cores": 1, "num_threads": 2}, r"num_cores .*num_threads.*different values"),
        ({"input_shapes": [[1, 64]], "sequence_length": 128}, "give only one of them"),
        ({"input_shapes": [[1, 3, 64]]}, r"\[batch, sequence_length\]"),
        ({"input_shapes": [[1, 0]]}, "input_shapes must be"),
        ({"input_shapes": "1x128"}, "input_shapes must be"),
        ({"scheduler": "round_robin"}, "scheduler must be one of single_stream"),
        ({"alias": ""}, "alias must be a non-empty string"),
        ({"engine_type": "tensorrt"}, "deepsparse"),
    ],
)
def test_bad_deepsparse_arguments_name_what_is_wrong(kwargs, match):
    with pytest.raises((ConfigError, TypeError), match=match):
        Pipeline.create("sentiment-analysis", **kwargs)


def test_same_value_under_both_names_is_accepted():
    pipe = Pipeline.create("sentiment-analysis", num_cores=1, num_threads=1)
    assert pipe.num_threads == 1


def test_context_is_accepted_and_ignored_with_one_warning(monkeypatch):
    monkeypatch.setattr(aliases, "_CONTEXT_WARNED", False)
    with pytest.warns(UserWarning, match="context=.*ignored"):
        Pipeline.create("sentiment-analysis", context=object())
    Pipeline.create("sentiment-analysis", context=object())  # no second warning (errors here)


def test_input_shapes_give_a_vision_model_its_input_size():
    clf = Pipeline.create("image-classification", input_shapes=[[1, 3, 224, 224]])
    assert clf.preprocessing.output_size() == (224, 224)
    with pytest.raises(ConfigError, match=r"fixed at \(224, 224\)"):
        Pipeline.create("image-classification", input_shapes=[[1, 3, 256, 256]])
    with pytest.raises(ConfigError, match=r"\[batch, 3, height, width\]"):
        Pipeline.create("image-classification", input_shapes=[[1, 224]])


def test_input_shapes_of_a_task_without_a_fixed_shape_is_a_config_error(mlp_model):
    with pytest.raises(ConfigError, match="does not take input_shapes"):
        Pipeline.create("custom", mlp_model, input_shapes=[[1, 37]])


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_deepsparse_pipeline_config_files_load(tmp_path, suffix):
    config = {
        "task": "sentiment-analysis",
        "engine_type": "deepsparse",
        "batch_size": 1,
        "num_cores": 1,
        "scheduler": "single_stream",
        "input_shapes": [[1, 32]],
        "alias": "reviews",
        "kwargs": {"top_k": 2},
    }
    path = tmp_path / f"pipeline{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(config))
    else:
        import yaml

        path.write_text(yaml.safe_dump(config))
    pipe = Pipeline.from_config(path)
    assert (pipe.num_threads, pipe.alias, pipe.scheduler, pipe.fixed_length) == (
        1,
        "reviews",
        "single_stream",
        32,
    )
    assert len(pipe("a wonderful film").labels[0]) == 2
    saved = pipe.to_config()
    assert saved.alias == "reviews" and saved.engine_type == "sparsepipe"
    assert Pipeline.from_config(saved.model_dump()).alias == "reviews"
    both = {"task": "ner", "num_cores": 1, "num_threads": 2}
    with pytest.raises(ConfigError, match="num_cores"):
        Pipeline.from_config(both)
    with pytest.raises(ValidationError, match="num_cores"):
        PipelineConfig.model_validate(both)


def test_question_answering_takes_deepsparse_option_names(shared_dir):
    model = shared_dir / "reference" / "nlp" / "question-answering"
    pipe = Pipeline.create(
        "qa",
        model,
        n_best_size=2,
        max_answer_length=10,
        max_question_length=32,
        version_2_with_negative=True,
        doc_stride=64,
    )
    opts = pipe.options
    assert (opts.top_k, opts.max_answer_len, opts.max_question_len) == (2, 10, 32)
    assert opts.handle_impossible_answer is True and opts.doc_stride == 64
    question, context = "who is mark?", "mark is batman"
    per_call = pipe(question=question, context=context, n_best_size=1)
    assert per_call == pipe(question=question, context=context, top_k=1)
    with pytest.raises(ConfigError, match="n_best_size"):
        Pipeline.create("qa", model, n_best_size=2, top_k=3)
    with pytest.raises(ConfigError, match="n_best_size"):
        pipe(question=question, context=context, n_best_size=1, top_k=2)


def test_object_detection_takes_deepsparse_threshold_names(shared_dir):
    detector = Pipeline.create("object-detection", conf_thres=0.3, iou_thres=0.5)
    assert (detector.options.conf_threshold, detector.options.iou_threshold) == (0.3, 0.5)
    image = shared_dir / "samples" / "images" / "coffee.png"
    strict = detector(image, conf_thres=0.6)
    assert strict == detector(image, conf_threshold=0.6)
    assert all(s >= 0.6 for s in strict.scores[0])
    with pytest.raises(ConfigError, match="iou_thres"):
        detector(image, iou_thres=0.4, iou_threshold=0.45)
    h, w = detector.image_size
    same = Pipeline.create("object-detection", input_shapes=[[1, 3, h, w]])
    assert same.image_size == (h, w)
    with pytest.raises(ConfigError, match=r"\[batch, 3, height, width\]"):
        Pipeline.create("object-detection", input_shapes=[[1, 416]])


def test_token_classification_results_say_whether_they_are_grouped():
    ner = Pipeline.create("token-classification", aggregation_strategy="none", merge_adjacent=False)
    text = "My name is Sarah Jessica Parker and I live in London"
    tokens = ner(text).predictions[0]
    groups = ner(text, aggregation_strategy="simple").predictions[0]
    assert tokens and not any(e.is_grouped for e in tokens)
    assert groups and all(e.is_grouped for e in groups)
    shipped = Pipeline.create("token-classification")(text).predictions[0]  # first + merge
    assert shipped and all(e.is_grouped for e in shipped)


def test_a_pipelines_alias_names_its_server_endpoint():
    from sparsepipe.server import load_server_config

    config = load_server_config(
        {
            "endpoints": [
                {"task": "sentiment-analysis", "kwargs": {"alias": "reviews"}},
                {"task": "sentiment-analysis", "name": "explicit", "kwargs": {"alias": "other"}},
                {"task": "sentiment-analysis"},
            ]
        }
    )
    assert [e.name for e in config.endpoints] == ["reviews", "explicit", "text-classification"]


def test_image_classification_output_follows_deepsparse_and_hugging_face(shared_dir):
    images = shared_dir / "samples" / "images"
    clf = Pipeline.create("image-classification", top_k=3)
    one = clf(images=str(images / "coffee.png"))
    assert len(one.labels) == 3 and one.labels[0] == "espresso"
    assert len(one.scores) == 3 and one.scores == sorted(one.scores, reverse=True)
    several = clf(images=[str(images / "coffee.png"), str(images / "chelsea.png")], top_k=1)
    assert several.labels[0] == ["espresso"] and len(several.labels[1]) == 1
    assert [len(s) for s in several.scores] == [1, 1]
    assert clf(images=[str(images / "coffee.png")], top_k=1).labels == [["espresso"]]


def test_object_detection_reads_per_image_and_knows_the_coco_names(shared_dir):
    from sparsepipe.tasks._vision import COCO_NAMES

    images = shared_dir / "samples" / "images"
    detector = Pipeline.create("yolo", class_names="coco")
    out = detector(images=[str(images / "coffee.png"), str(images / "chelsea.png")])
    assert len(out) == 2
    for i, (boxes, scores, labels) in enumerate(out):
        assert (boxes, scores, labels) == (out.boxes[i], out.scores[i], out.labels[i])
        assert set(labels) <= set(COCO_NAMES)
    assert out[1].labels == out.labels[1] and out[0].boxes == out.boxes[0]
    assert "cup" in out[0].labels
    assert out.model_dump()["labels"] == out.labels  # serialisation is unchanged
    assert len(COCO_NAMES) == 80 and COCO_NAMES[:3] == ("person", "bicycle", "car")


def test_deepsparse_readme_examples_run_with_the_import_changed(shared_dir):
    images = shared_dir / "samples" / "images"
    sa_pipeline = Pipeline.create(task="sentiment-analysis", num_cores=1)
    assert sa_pipeline(sequences="I love this movie").labels == ["positive"]

    qa_pipeline = Pipeline.create(
        task="question-answering",
        model_path=str(shared_dir / "reference" / "nlp" / "question-answering"),
    )
    answer = qa_pipeline(question="What's my name?", context="My name is Snorlax")
    assert answer.answer == "Snorlax"

    ner = Pipeline.create(task="token_classification", engine_type="deepsparse")
    out = ner(inputs="My name is Sarah Jessica Parker and I live in London")
    # the embedded PII model ships grouped, merged entities as its default
    assert [(e.entity, e.word) for e in out.predictions[0]][-1] == ("CITY", "London")

    cv_pipeline = Pipeline.create(task="image_classification")
    assert cv_pipeline(images=[str(images / "coffee.png")]).labels == [["espresso"]]

    yolo_pipeline = Pipeline.create(task="yolo", class_names="coco")
    detections = yolo_pipeline(images=[str(images / "coffee.png")], iou_thres=0.6, conf_thres=0.1)
    assert "cup" in detections[0].labels
