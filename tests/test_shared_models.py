"""The real models in ../shared load in sparsepipe.Engine and match onnxruntime on realistic inputs.

Text models get real token ids from their own tokenizer.json (with the `tokenizers` package, else
ids in the vocabulary's range between [CLS] and [SEP]), batches of 1 and 3 at two padded lengths
on one engine; image models get the sample photos preprocessed as their model cards say (with
Pillow) and random images. Tolerance per output: max|ours - ref| <= 1e-4 * max(1, max|ref|).

The `shared_dir` fixture skips these tests when ../shared is absent, or fails them when $CI is set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import pytest
import sparsepipe

pytest.importorskip("onnxruntime")

# name -> directory under ../shared
NLP_MODELS = {
    "sentiment-minilm-sparse80": "models/sentiment-minilm-sparse80",
    "pii-ner-minilm": "models/pii-ner-minilm",
    "text-classification": "reference/nlp/text-classification",
    "token-classification": "reference/nlp/token-classification",
    "question-answering": "reference/nlp/question-answering",
}
IMAGE_MODELS = {
    "efficientnet-lite0-imagenet": "models/efficientnet-lite0-imagenet",
    "yolov3-tiny-coco": "models/yolov3-tiny-coco",
    "yolov8n-random": "models/yolov8n-random",
}
# (batch, padded length) runs on one engine, in this order: two lengths, batches 1 and 3.
NLP_RUNS = ((3, 40), (1, 16), (3, 16), (1, 40))

Text = Union[str, tuple[str, str]]


@pytest.fixture(scope="module")
def engines(shared_dir: Path) -> dict[str, Any]:
    """One Engine per shared model, created on first use (module cache)."""
    return {}


def model_dir(shared_dir: Path, name: str) -> Path:
    rel = {**NLP_MODELS, **IMAGE_MODELS}[name]
    path = shared_dir / rel
    assert (path / "model.onnx").is_file(), f"{path}/model.onnx is missing from ../shared"
    return path


def get_engine(engines: dict[str, Any], shared_dir: Path, name: str) -> Any:
    if name not in engines:
        engines[name] = sparsepipe.Engine(model_dir(shared_dir, name))
    return engines[name]


def test_every_shared_model_is_tested(shared_dir: Path) -> None:
    present = {p.name for p in (shared_dir / "models").iterdir() if (p / "model.onnx").is_file()}
    known = {Path(d).name for d in (*NLP_MODELS.values(), *IMAGE_MODELS.values())}
    assert present <= known, f"add {sorted(present - known)} to test_shared_models.py"


# ---------------------------------------------------------------------------------------------
# Text models.


def _texts(shared_dir: Path) -> list[str]:
    """Real sentences: sentiment samples, PII examples and the HF reference inputs (one of them
    longer than any padded length, so it is truncated)."""
    texts = []
    with open(shared_dir / "samples" / "sentiment_sample.jsonl", encoding="utf-8") as f:
        texts += [json.loads(line)["text"] for line, _ in zip(f, range(4))]
    with open(shared_dir / "reference" / "pii_ner_examples.jsonl", encoding="utf-8") as f:
        texts += [json.loads(line)["text"] for line, _ in zip(f, range(3))]
    ref = json.loads((shared_dir / "reference" / "nlp" / "hf_reference.json").read_text("utf-8"))
    texts += ref["text-classification"]["texts"]
    return texts


def _pairs(shared_dir: Path) -> list[tuple[str, str]]:
    ref = json.loads((shared_dir / "reference" / "nlp" / "hf_reference.json").read_text("utf-8"))
    return [tuple(p) for p in ref["question-answering"]["pairs"]]


def encode(directory: Path, texts: Sequence[Text], length: int) -> dict[str, np.ndarray]:
    """BERT feeds for `texts` (or (question, context) pairs), truncated and right-padded to
    `length`, from the model's tokenizer.json."""
    spec = json.loads((directory / "tokenizer.json").read_text("utf-8"))
    vocab: dict[str, int] = spec["model"]["vocab"]
    pad, cls, sep = vocab["[PAD]"], vocab["[CLS]"], vocab["[SEP]"]
    try:
        from tokenizers import Tokenizer
    except ImportError:
        Tokenizer = None
    ids = np.full((len(texts), length), pad, np.int64)
    mask = np.zeros((len(texts), length), np.int64)
    types = np.zeros((len(texts), length), np.int64)
    if Tokenizer is not None:
        tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        tok.enable_truncation(max_length=length)
        tok.enable_padding(pad_id=pad, pad_token="[PAD]", length=length)
        for row, enc in enumerate(tok.encode_batch(list(texts))):
            ids[row], mask[row], types[row] = enc.ids, enc.attention_mask, enc.type_ids
    else:  # ids in the vocabulary's range, with the model's own special tokens
        rng = np.random.default_rng(len(texts) * 1000 + length)
        specials = {i for t, i in vocab.items() if t.startswith("[") and t.endswith("]")}
        words = np.array(sorted(set(vocab.values()) - specials), np.int64)
        for row, text in enumerate(texts):
            parts = text if isinstance(text, tuple) else (text,)
            n = [max(1, len(p.split()) + len(p) // 12) for p in parts]
            while sum(n) + len(parts) + 1 > length:
                n[int(np.argmax(n))] -= 1
            pos = 0
            for seg, count in enumerate(n):
                segment = ([cls] if seg == 0 else []) + list(rng.choice(words, count)) + [sep]
                ids[row, pos : pos + len(segment)] = segment
                types[row, pos : pos + len(segment)] = seg
                pos += len(segment)
            mask[row, :pos] = 1
    assert ((ids == pad) == (mask == 0)).all(), "padding and attention mask disagree"
    assert ids.min() >= 0 and ids.max() < len(vocab)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("name", NLP_MODELS)
def test_text_model_matches_onnxruntime(
    name: str,
    shared_dir: Path,
    engines: dict[str, Any],
    ort_run: Callable[..., list[np.ndarray]],
    assert_close: Callable[..., None],
) -> None:
    directory = model_dir(shared_dir, name)
    engine = get_engine(engines, shared_dir, name)
    assert engine.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    texts: list[Text] = list(_pairs(shared_dir)) if name == "question-answering" else []
    texts += _texts(shared_dir)
    padded = truncated = 0
    for i, (batch, length) in enumerate(NLP_RUNS):
        chosen = [texts[(3 * i + j) % len(texts)] for j in range(batch)]
        feeds = encode(directory, chosen, length)
        padded += int((feeds["attention_mask"] == 0).any())
        truncated += int((feeds["attention_mask"][:, -1] == 1).any())
        ours = engine(feeds)
        ref = ort_run(directory / "model.onnx", feeds)
        assert_close(ours, ref, engine.output_names, context=f"{name} batch {batch} len {length}")
    assert padded >= 2, "the runs should include padded rows"
    assert truncated >= 1, "the runs should include a full-length row"


def test_text_model_long_sequence(
    shared_dir: Path,
    engines: dict[str, Any],
    ort_run: Callable[..., list[np.ndarray]],
    assert_close: Callable[..., None],
) -> None:
    """The sentiment model at its recommended maximum length (128), batch 3."""
    name = "sentiment-minilm-sparse80"
    directory = model_dir(shared_dir, name)
    engine = get_engine(engines, shared_dir, name)
    texts = _texts(shared_dir)
    long = max(texts, key=len)
    feeds = encode(directory, [long, texts[0], texts[1]], 128)
    ours = engine(feeds)
    assert_close(ours, ort_run(directory / "model.onnx", feeds), engine.output_names)


def test_sentiment_runs_on_sparse_kernels(shared_dir: Path, engines: dict[str, Any]) -> None:
    engine = get_engine(engines, shared_dir, "sentiment-minilm-sparse80")
    report = engine.sparsity_report()
    sparse = [r for r in report if r["kernel"] == "sparse"]
    assert len(report) == 38, [r["node"] for r in report]
    assert len(sparse) >= 36, "dense: " + ", ".join(
        f"{r['node']} ({r['sparsity']:.2f})" for r in report if r["kernel"] != "sparse"
    )
    assert all(r["sparsity"] >= 0.79 for r in sparse)


# ---------------------------------------------------------------------------------------------
# Image models.


def _load_image(path: Path) -> Any:
    image_mod = pytest.importorskip("PIL.Image", reason="the sample photos need Pillow")
    return image_mod.open(path).convert("RGB")


def _efficientnet_input(path: Path) -> np.ndarray:
    """Shortest edge 256 (bicubic), center crop 224, (x - 127) / 128, NCHW."""
    from PIL import Image

    im = _load_image(path)
    w, h = im.size
    scale = 256 / min(w, h)
    im = im.resize((max(256, round(w * scale)), max(256, round(h * scale))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    x = (np.asarray(im, np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _letterbox_input(path: Path, size: int) -> np.ndarray:
    """Letterboxed RGB in 0..1 (gray 114 padding), NCHW."""
    from PIL import Image

    im = _load_image(path)
    w, h = im.size
    scale = min(size / w, size / h)
    nw, nh = round(w * scale), round(h * scale)
    im = im.resize((nw, nh), Image.BILINEAR)
    canvas = np.full((size, size, 3), 114, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top : top + nh, left : left + nw] = np.asarray(im)
    return np.ascontiguousarray((canvas.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])


IMAGE_SETUP: dict[str, tuple[str, Callable[[Path], np.ndarray], tuple[float, float]]] = {
    # name -> (sample photo, preprocessing, range of a random image)
    "efficientnet-lite0-imagenet": ("chelsea.png", _efficientnet_input, (-1.0, 1.0)),
    "yolov3-tiny-coco": ("coffee.png", lambda p: _letterbox_input(p, 416), (0.0, 1.0)),
    "yolov8n-random": ("astronaut.png", lambda p: _letterbox_input(p, 320), (0.0, 1.0)),
}


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_model_matches_onnxruntime(
    name: str,
    shared_dir: Path,
    engines: dict[str, Any],
    ort_run: Callable[..., list[np.ndarray]],
    assert_close: Callable[..., None],
) -> None:
    """A sample photo at batch 1, then photo + random image at batch 2 (symbolic batch) or the
    random image alone (batch fixed at 1)."""
    directory = model_dir(shared_dir, name)
    engine = get_engine(engines, shared_dir, name)
    (shape,) = engine.input_shapes
    photo_name, preprocess, (lo, hi) = IMAGE_SETUP[name]
    photo = preprocess(shared_dir / "samples" / "images" / photo_name)
    assert list(photo.shape[1:]) == shape[1:]
    random = np.random.default_rng(7).uniform(lo, hi, photo.shape).astype(np.float32)
    if isinstance(shape[0], str):
        runs = {"photo b=1": photo, "photo+random b=2": np.concatenate([photo, random])}
    else:
        assert shape[0] == 1
        runs = {"photo b=1": photo, "random b=1": random}
    for label, images in runs.items():
        feeds = {engine.input_names[0]: images}
        ours = engine(feeds)
        ref = ort_run(directory / "model.onnx", feeds)
        assert_close(ours, ref, engine.output_names, context=f"{name} {label}")


def test_efficientnet_report_and_labels(shared_dir: Path, engines: dict[str, Any]) -> None:
    engine = get_engine(engines, shared_dir, "efficientnet-lite0-imagenet")
    report = engine.sparsity_report()
    # 32 pointwise convolutions and the classifier as matmuls, and the 3x3 stem convolution
    # (the depthwise ones are not weight matmuls).
    assert len(report) == 34
    assert [r["pattern"] for r in report].count("conv 3x3 stride 2x2") == 1
    labels = json.loads(
        (model_dir(shared_dir, "efficientnet-lite0-imagenet") / "config.json").read_text("utf-8")
    )["id2label"]
    images = shared_dir / "samples" / "images"
    x = np.concatenate([_efficientnet_input(images / f) for f in ("chelsea.png", "coffee.png")])
    cat, coffee = (labels[str(int(i))] for i in engine([x])[0].argmax(axis=1))
    assert cat in {"tiger cat", "Egyptian Mau", "tabby cat", "tabby", "Egyptian cat"}, cat
    assert coffee == "espresso", coffee


def test_yolov3_tiny_finds_the_cup(shared_dir: Path, engines: dict[str, Any]) -> None:
    directory = model_dir(shared_dir, "yolov3-tiny-coco")
    engine = get_engine(engines, shared_dir, "yolov3-tiny-coco")
    names = json.loads((directory / "config.json").read_text("utf-8"))["names"]
    x = _letterbox_input(shared_dir / "samples" / "images" / "coffee.png", 416)
    (out,) = engine([x])
    assert out.shape == (1, 2535, 85)
    scores = out[0, :, 4:5] * out[0, :, 5:]
    box, cls = np.unravel_index(int(scores.argmax()), scores.shape)
    assert names[cls] == "cup" and scores[box, cls] > 0.3, (names[cls], float(scores[box, cls]))
