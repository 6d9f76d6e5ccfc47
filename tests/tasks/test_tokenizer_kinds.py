"""Text pipelines with any tokenizer.json (WordPiece, byte-level BPE, Unigram) and any input set.

The models are built here: an embedding table of per-token logits, so every output can be
computed by hand from the tokenizer's own encodings. The RoBERTa-style model declares no
token_type_ids and pads with id 1; the Unigram one takes position_ids as well.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sparsepipe import ModelLoadError, Pipeline

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

CORPUS = [
    "Sarah works for Acme Corporation in Paris.",
    "Barack Obama visited the United Nations headquarters in New York.",
    "The quick brown fox jumps over the lazy dog near Lake Geneva.",
    "Tokenization matters, counterintuitively, for every language model.",
] * 20
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _model(path: Path, vocab: int, inputs: list[str], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    table = rng.normal(0, 2, (vocab, len(LABELS))).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["token_logits"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["token_logits", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["maskf", "axis1"], ["count"], keepdims=1),
        helper.make_node("Div", ["summed", "count"], ["pooled"]),
    ]
    extra = [n for n in inputs if n not in ("input_ids", "attention_mask")]
    for i, name in enumerate(extra):  # consume the extra inputs without changing the result
        nodes.append(helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("ReduceSum", [f"{name}_f"], [f"{name}_s"], keepdims=0))
        nodes.append(helper.make_node("Mul", [f"{name}_s", "zero"], [f"{name}_z"]))
        prev = "pooled" if i == 0 else f"pooled{i}"
        nodes.append(helper.make_node("Add", [prev, f"{name}_z"], [f"pooled{i + 1}"]))
    final = f"pooled{len(extra)}" if extra else "pooled"
    nodes.append(helper.make_node("Identity", [final], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "emb",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
            for n in inputs
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)]),
            helper.make_tensor_value_info(
                "token_logits", TensorProto.FLOAT, ["batch", "sequence", len(LABELS)]
            ),
        ],
        [
            helper.make_tensor("table", TensorProto.FLOAT, table.shape, table.ravel()),
            helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path / "model.onnx"))
    return table


def _token_model(src: Path, dst: Path) -> None:
    """The same directory whose model outputs the per-token logits first (token-classification)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "model.onnx":
            (dst / f.name).write_bytes(f.read_bytes())
    m = onnx.load(str(src / "model.onnx"))
    outs = list(m.graph.output)
    del m.graph.output[:]
    m.graph.output.extend([outs[1]])
    onnx.save(m, str(dst / "model.onnx"))


def _bpe(path: Path) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    (path / "tokenizer_config.json").write_text(
        json.dumps({"pad_token": "<pad>", "model_max_length": 64, "cls_token": "<s>"})
    )
    return tok


def _unigram(path: Path) -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=120, special_tokens=["<pad>", "<unk>", "<cls>", "<sep>"], unk_token="<unk>"
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A <sep> <cls>",
        pair="$A <sep> $B:1 <sep>:1 <cls>:2",
        special_tokens=[("<sep>", tok.token_to_id("<sep>")), ("<cls>", tok.token_to_id("<cls>"))],
    )
    (path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>"}))
    return tok


def _wordpiece(path: Path, shared: Path) -> Tokenizer:
    src = shared / "models" / "pii-ner-minilm"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (path / name).write_bytes((src / name).read_bytes())
    return Tokenizer.from_file(str(path / "tokenizer.json"))


KINDS = {
    "bpe": (_bpe, ["input_ids", "attention_mask"]),
    "unigram": (_unigram, ["input_ids", "attention_mask", "token_type_ids", "position_ids"]),
    "wordpiece": (_wordpiece, ["input_ids", "attention_mask", "token_type_ids"]),
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def kind(request, tmp_path_factory, shared_dir):
    name = request.param
    make, inputs = KINDS[name]
    path = tmp_path_factory.mktemp(name) / "text"
    path.mkdir()
    tok = make(path, shared_dir) if name == "wordpiece" else make(path)
    if name != "wordpiece":
        tok.save(str(path / "tokenizer.json"))
    (path / "config.json").write_text(json.dumps({"id2label": dict(enumerate(LABELS))}))
    table = _model(path, tok.get_vocab_size(), inputs, seed=len(name))
    token_dir = path.parent / "token"
    _token_model(path, token_dir)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return name, path, token_dir, tok, table


TEXTS = ["Sarah works in Paris.", "The lazy dog near Lake Geneva", "x", ""]


def test_text_classification_feeds_exactly_the_declared_inputs(kind):
    _name, path, _, tok, table = kind
    pipe = Pipeline.create(
        "text-classification", path, batch_size=3, top_k=None, function_to_apply="none"
    )
    out = pipe(TEXTS)
    for text, labels, scores in zip(TEXTS, out.labels, out.scores):
        enc = tok.encode(text)
        expected = table[enc.ids].mean(axis=0)
        got = dict(zip(labels, scores))
        np.testing.assert_allclose([got[label] for label in LABELS], expected, rtol=1e-5, atol=1e-5)


def test_token_classification_offsets_and_words(kind):
    _name, _, token_dir, tok, table = kind
    pipe = Pipeline.create("ner", token_dir, ignore_labels=[], batch_size=2)
    out = pipe(TEXTS[:3]).predictions
    for text, entities in zip(TEXTS, out):
        enc = tok.encode(text)
        keep = [i for i, s in enumerate(enc.special_tokens_mask) if not s]
        assert [e.index for e in entities] == keep
        for e, i in zip(entities, keep):
            assert (e.start, e.end) == enc.offsets[i]
            assert e.word == tok.id_to_token(enc.ids[i]) or e.word == text[e.start : e.end]
            assert e.entity == LABELS[int(np.argmax(table[enc.ids[i]]))]
    grouped = pipe(TEXTS[:2], aggregation_strategy="simple").predictions
    for text, entities in zip(TEXTS, grouped):
        for e in entities:
            assert 0 <= e.start <= e.end <= len(text)  # a byte-level space can be an empty span


def test_pad_id_comes_from_the_tokenizer(kind):
    name, path, _, tok, _ = kind
    pipe = Pipeline.create("text-classification", path)
    assert pipe.pad_token_id == tok.token_to_id("[PAD]" if name == "wordpiece" else "<pad>")


def test_model_with_unknown_input_is_refused(tmp_path, kind):
    _, path, _, tok, _ = kind
    _model(tmp_path, tok.get_vocab_size(), ["input_ids", "attention_mask", "pixel_values"], 0)
    for f in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        (tmp_path / f).write_bytes((path / f).read_bytes())
    with pytest.raises(ModelLoadError, match="pixel_values"):
        Pipeline.create("text-classification", tmp_path)
