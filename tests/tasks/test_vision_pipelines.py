"""image-classification and object-detection pipelines on the real models in ../shared."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from pydantic import ValidationError
from sparsepipe import ConfigError, InputError, ModelLoadError, Pipeline

onnx = pytest.importorskip("onnx")
PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def images(shared_dir):
    return shared_dir / "samples" / "images"


@pytest.fixture(scope="module")
def classifier(shared_dir):
    return Pipeline.create(
        "image-classification",
        model_path=shared_dir / "models" / "efficientnet-lite0-imagenet",
        batch_size=None,
        top_k=3,
    )


@pytest.fixture(scope="module")
def detector(shared_dir):
    return Pipeline.create("yolo", model_path=shared_dir / "models" / "yolov3-tiny-coco")


CATS = {"tiger cat", "Egyptian Mau", "Egyptian cat", "tabby cat", "tabby"}


def test_classifier_finds_the_cat_and_the_espresso(classifier, images):
    out = classifier([images / "chelsea.png", str(images / "coffee.png")])
    assert CATS & set(out.labels[0])
    assert out.labels[1][0] == "espresso" and out.scores[1][0] > 0.9
    assert out.scores[0] == sorted(out.scores[0], reverse=True)


@pytest.mark.parametrize("batch_size", [1, 2, 3, None])
def test_classifier_batches_of_mixed_sizes(shared_dir, images, batch_size, ort_run):
    pipe = Pipeline.create(
        "image-classification",
        model_path=shared_dir / "models" / "efficientnet-lite0-imagenet",
        batch_size=batch_size,
    )
    files = sorted(images.iterdir())  # png and jpg, different sizes
    batch = [f.read_bytes() for f in files] + [np.asarray(PIL.open(files[0]).convert("RGB"))]
    out = pipe(batch)
    assert len(out.labels) == len(batch)
    single = [pipe(item) for item in batch]
    assert [s.labels for s in single] == out.labels  # one image alone: its labels, flat
    np.testing.assert_allclose([s.scores for s in single], out.scores, atol=1e-4)


def test_classifier_agrees_with_onnxruntime(shared_dir, images):
    model = shared_dir / "models" / "efficientnet-lite0-imagenet"
    ours = Pipeline.create("image-classification", model, top_k=5, batch_size=None)
    ort = Pipeline.create("image-classification", model, top_k=5, engine_type="onnxruntime")
    files = sorted(images.iterdir())
    a, b = ours(files), ort(files)
    assert [x[0] for x in a.labels] == [x[0] for x in b.labels]
    np.testing.assert_allclose([x[0] for x in a.scores], [x[0] for x in b.scores], atol=1e-3)


def test_classifier_options(classifier, images, tmp_path):
    path = images / "coffee.png"
    assert isinstance(classifier(path, top_k=1).labels[0], str)
    raw = classifier(path, top_k=2, function_to_apply="none").scores
    assert raw[0] > 1.0  # logits, not probabilities
    sig = classifier(path, top_k=1, function_to_apply="sigmoid").scores[0]
    assert 0.5 < sig < 1.0
    names = [f"class{i}" for i in range(1000)]
    (tmp_path / "names.json").write_text(json.dumps(names))
    for class_names in (names, dict(enumerate(names)), str(tmp_path / "names.json")):
        pipe = Pipeline.create(
            "image-classification", classifier.model_path, class_names=class_names
        )
        assert pipe(path).labels[0] == f"class{967}"  # espresso's index
    with pytest.raises(ConfigError, match="class_names"):
        Pipeline.create("image-classification", classifier.model_path, class_names=5)


def test_corrupt_image_names_its_index(classifier, images):
    good = (images / "coffee.png").read_bytes()
    for bad in (good[: len(good) // 2], b"not an image", b""):
        with pytest.raises(InputError, match="image 1"):
            classifier([good, bad, good])
    with pytest.raises(InputError, match="image 0"):
        classifier(images / "missing.png")
    assert classifier(good).labels[0] == "espresso"  # still usable


@pytest.mark.parametrize(
    "kwargs",
    [{"images": "x", "top_k": 0}, {"images": "x", "function_to_apply": "relu"}, {}, {"image": "x"}],
)
def test_classifier_bad_arguments(classifier, kwargs):
    with pytest.raises((ValidationError, InputError)):
        classifier(**kwargs)


def test_empty_batches(classifier, detector):
    assert classifier([]).labels == []
    assert detector([]).boxes == []


def test_detector_finds_the_cup(detector, images):
    out = detector(images / "coffee.png")
    assert "cup" in out.labels[0]
    with PIL.open(images / "coffee.png") as img:
        w, h = img.size
    for box in out.boxes[0]:
        assert 0 <= box[0] <= box[2] <= w and 0 <= box[1] <= box[3] <= h


@pytest.mark.parametrize("batch_size", [1, 2, None])
def test_detector_batches_of_mixed_sizes(shared_dir, images, batch_size):
    pipe = Pipeline.create(
        "object-detection", shared_dir / "models" / "yolov3-tiny-coco", batch_size=batch_size
    )
    files = sorted(images.iterdir())
    out = pipe(files)
    assert len(out.boxes) == len(files)
    for f, boxes, labels in zip(files, out.boxes, out.labels):
        alone = pipe(f)
        assert alone.labels[0] == labels
        np.testing.assert_allclose(alone.boxes[0], boxes, atol=0.05)
        with PIL.open(f) as img:
            w, h = img.size
        assert all(0 <= b[0] <= b[2] <= w and 0 <= b[1] <= b[3] <= h for b in boxes)


def test_detector_options(detector, images):
    path = images / "coffee.png"
    many = detector(path, conf_threshold=0.01, max_detections=300)
    few = detector(path, conf_threshold=0.01, max_detections=2)
    assert len(few.boxes[0]) == 2 and few.scores[0] == many.scores[0][:2]
    assert len(detector(path, conf_threshold=0.99).boxes[0]) == 0
    assert len(detector(path, conf_threshold=0.01, agnostic_nms=True).boxes[0]) <= len(
        many.boxes[0]
    )
    assert len(detector(path, conf_threshold=0.01, multi_label=True).boxes[0]) >= len(many.boxes[0])
    only_cups = detector(path, conf_threshold=0.01, classes=[41])
    assert set(only_cups.labels[0]) <= {"cup"}
    for bad in ({"conf_threshold": 1.5}, {"iou_threshold": -0.1}, {"max_detections": 0}):
        with pytest.raises(ValidationError):
            detector(path, **bad)
    with pytest.raises(InputError, match=r"classes 1000, -1 are not class ids of this model"):
        detector(path, classes=[41, 1000, -1])
    assert detector(path).labels[0]


def test_yolov8_layout(shared_dir, images):
    pipe = Pipeline.create(
        "yolo", shared_dir / "models" / "yolov8n-random", conf_threshold=0.0, max_detections=5
    )
    assert pipe.layout == "yolov8" and pipe.image_size == (320, 320) and pipe.batch_size == 1
    out = pipe([images / "coffee.png", images / "rocket.jpg"])
    assert [len(b) for b in out.boxes] == [5, 5]
    with pytest.raises(ConfigError, match="fixed batch"):
        Pipeline.create("yolo", shared_dir / "models" / "yolov8n-random", batch_size=4)
    with pytest.raises(ConfigError, match="fixed"):
        Pipeline.create("yolo", shared_dir / "models" / "yolov8n-random", image_size=640)


def _dynamic_detector(path, classes: int = 3):
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (5 + classes, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["images"], ["p"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Conv", ["p", "w"], ["c"]),
        helper.make_node("Sigmoid", ["c"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["scaled"]),
        helper.make_node("Reshape", ["scaled", "shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["output0"], perm=[0, 2, 1]),
    ]
    scale = np.ones((1, 5 + classes, 1, 1), np.float32)
    scale[0, :4] = 64.0
    graph = helper.make_graph(
        nodes,
        "dyn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["b", 3, "h", "w"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["b", "n", 5 + classes])],
        [
            helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
            helper.make_tensor("scale", TensorProto.FLOAT, scale.shape, scale.ravel()),
            helper.make_tensor("shape", TensorProto.INT64, [3], [0, 5 + classes, -1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_dynamic_input_size_uses_image_size(tmp_path, images):
    path = _dynamic_detector(tmp_path / "dyn.onnx")
    pipe = Pipeline.create("yolo", path, image_size=(128, 192), conf_threshold=0.0)
    assert pipe.image_size == (128, 192) and pipe.layout == "yolov5"
    seen = []
    run = pipe.engine.run
    pipe.engine = type("Spy", (), {"run": lambda self, a: seen.append(a[0].shape) or run(a)})()
    pipe.engine.input_shapes = [["b", 3, "h", "w"]]
    out = pipe(images / "astronaut.png")
    assert seen == [(1, 3, 128, 192)]
    assert out.labels[0] and set(out.labels[0]) <= {"0", "1", "2"}  # no names: index strings
    assert Pipeline.create("yolo", path).image_size == (640, 640)
    with pytest.raises(ConfigError, match="image_size"):
        Pipeline.create("yolo", path, image_size=(10, "x"))


def test_unsupported_output_layout(tmp_path, shared_dir):
    src = shared_dir / "models" / "efficientnet-lite0-imagenet" / "model.onnx"
    with pytest.raises(ModelLoadError, match=r"(?i)layout|yolo"):
        Pipeline.create("object-detection", src)


def test_vision_config_round_trip(detector):
    cfg = detector.to_config()
    again = Pipeline.from_config(cfg)
    assert again.to_config() == cfg and again.layout == detector.layout


def test_images_from_every_kind_of_input(detector, images):
    path = images / "coffee.png"
    img = PIL.open(path)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    kinds = [path, str(path), buf.getvalue(), img, np.asarray(img.convert("RGB"))]
    outs = [detector(k) for k in kinds]
    assert all(o == outs[0] for o in outs)


@pytest.mark.parametrize("model", ["efficientnet-lite0-imagenet", "yolov3-tiny-coco"])
def test_fixed_batch_engine_matches_dynamic(shared_dir, model):
    from sparsepipe import Engine

    path = shared_dir / "models" / model / "model.onnx"
    dynamic = Engine(path)
    size = dynamic.input_shapes[0][2:]
    x = np.random.default_rng(0).random((2, 3, *size), dtype=np.float32)
    fixed = Engine(path, batch_size=2)
    np.testing.assert_allclose(fixed([x])[0], dynamic([x])[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="batch_size=2"):
        fixed([x[:1]])


def test_class_names_must_match_the_model(shared_dir):
    with pytest.raises(ConfigError, match="class_names has 1 names but the model outputs 80"):
        Pipeline.create("yolo", shared_dir / "models" / "yolov3-tiny-coco", class_names=["a"])
    with pytest.raises(ConfigError, match="class_names"):  # listed among the valid options
        Pipeline.create("yolo", shared_dir / "models" / "yolov3-tiny-coco", class_name=["a"])


def test_single_label_classifier_uses_sigmoid(classifier):
    logits = np.array([2.0], dtype=np.float32)
    classifier._options = classifier._options.model_copy(update={"function_to_apply": None})
    import types

    fake = types.SimpleNamespace(json=lambda name: {"problem_type": "multi_label_classification"})
    real = classifier._model
    classifier._model = fake
    try:
        assert classifier._scores(logits)[0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    finally:
        classifier._model = real


def test_embedded_default_classifier(images):
    pipe = Pipeline.create("image-classification", top_k=3)
    assert pipe.model.onnx_path.parent.name == "efficientnet-lite0-imagenet"
    out = pipe([images / "chelsea.png", images / "coffee.png"])
    assert CATS & set(out.labels[0])
    assert out.labels[1][0] == "espresso" and out.scores[1][0] > 0.9


def test_embedded_default_detector(images):
    pipe = Pipeline.create("object-detection")
    assert pipe.model.onnx_path.parent.name == "yolov3-tiny-coco"
    out = pipe(images / "coffee.png")
    assert "cup" in out.labels[0]
    assert Pipeline.create("yolo").model.onnx_path == pipe.model.onnx_path
