"""Token classification post-processing matches Hugging Face's pipeline output exactly.

References: ../shared/reference/nlp/hf_reference.json ("token-classification", made with
transformers 4.57) and ../shared/reference/pii_ner_examples.jsonl (aggregation "first"). The
models run with onnxruntime, one unpadded text at a time. Stride windows and their merge are
checked on hand-built cases and end to end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
tokenizers = pytest.importorskip("tokenizers")

from sparsepipe.tasks.token_classification.postprocess import (  # noqa: E402
    AGGREGATION_STRATEGIES,
    _aggregate_overlapping_entities,
    encode_windows,
    postprocess_token_classification,
)

SCORE_TOL = 1e-4
REF_MODEL = Path("reference") / "nlp" / "token-classification"
PII_MODEL = Path("models") / "pii-ner-minilm"

LONG_TEXT = (
    "Sarah Connor works for Acme Corp in Paris. Barack Obama visited the United Nations "
    "headquarters in New York. The quick brown fox jumps over the lazy dog near Lake Geneva. "
    "Dublin and Cork are in Ireland, while Angela Merkel met Emmanuel Macron in Berlin and "
    "Microsoft opened an office in Seattle next to Amazon."
)


class TokenModel:
    """An ONNX token classifier with its tokenizer (truncation and padding off) and labels."""

    def __init__(self, directory: Path) -> None:
        self.tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        config = json.loads((directory / "config.json").read_text("utf-8"))
        self.id2label = {int(k): v for k, v in config["id2label"].items()}
        self.session = ort.InferenceSession(
            str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
        )

    def logits(self, enc: Any) -> np.ndarray:
        """Logits [len(enc.ids), num_labels] of one unpadded encoding."""
        feeds = {
            "input_ids": np.asarray([enc.ids], dtype=np.int64),
            "attention_mask": np.asarray([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.asarray([enc.type_ids], dtype=np.int64),
        }
        return self.session.run(["logits"], feeds)[0][0]

    def entities(self, text: str, windows: list[Any], strategy: str, **kw: Any) -> list[dict]:
        logits = [self.logits(w) for w in windows]
        return postprocess_token_classification(
            text, windows, logits, self.id2label, self.tokenizer, strategy, **kw
        )

    def predict(self, text: str, strategy: str, **kw: Any) -> list[dict]:
        return self.entities(text, [self.tokenizer.encode(text)], strategy, **kw)


@pytest.fixture(scope="module")
def ref_model(shared_dir: Path) -> TokenModel:
    return TokenModel(shared_dir / REF_MODEL)


@pytest.fixture(scope="module")
def pii_model(shared_dir: Path) -> TokenModel:
    return TokenModel(shared_dir / PII_MODEL)


@pytest.fixture(scope="module")
def hf_reference(shared_dir: Path) -> dict[str, Any]:
    path = shared_dir / "reference" / "nlp" / "hf_reference.json"
    return json.loads(path.read_text("utf-8"))["token-classification"]


def assert_same_entities(ours: list[dict], ref: list[dict], context: str) -> None:
    assert len(ours) == len(ref), f"{context}: {len(ours)} entities, HF has {len(ref)}\n{ours}"
    for i, (o, r) in enumerate(zip(ours, ref)):
        assert set(o) == set(r), f"{context} #{i}: keys {sorted(o)} != {sorted(r)}"
        for key in r:
            if key == "score":
                assert isinstance(o[key], float)
                assert abs(o[key] - r[key]) <= SCORE_TOL, f"{context} #{i}: {o} vs {r}"
            else:
                assert o[key] == r[key], f"{context} #{i}: {key} {o[key]!r} != {r[key]!r}"
                assert type(o[key]) is type(r[key])


# --- real references -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["none", "simple", "first", "average", "max", "none_ignore_nothing"]
)
def test_matches_hf_reference(ref_model: TokenModel, hf_reference: dict, case: str) -> None:
    strategy, ignore = ("none", []) if case == "none_ignore_nothing" else (case, ["O"])
    expected = hf_reference[case]
    assert expected, f"reference has no outputs for {case}"
    for i, (text, ref) in enumerate(zip(hf_reference["texts"], expected)):
        ours = ref_model.predict(text, strategy, ignore_labels=ignore)
        assert_same_entities(ours, ref, f"{case} text {i} {text!r}")
        json.dumps(ours)


def test_matches_pii_reference(shared_dir: Path, pii_model: TokenModel) -> None:
    lines = (shared_dir / "reference" / "pii_ner_examples.jsonl").read_text("utf-8").splitlines()
    examples = [json.loads(line) for line in lines if line.strip()]
    assert len(examples) == 20
    for n, ex in enumerate(examples):
        ours = pii_model.predict(ex["text"], "first")
        ref = [
            {k: e[k] for k in ("entity_group", "score", "start", "end")} | {"word": e["word_hf"]}
            for e in ex["entities"]
        ]
        assert_same_entities(ours, ref, f"pii example {n}")
        for e in ex["entities"]:
            assert ex["text"][e["start"] : e["end"]] == e["word"]


def test_unknown_token_uses_text_span(ref_model: TokenModel) -> None:
    text = "I love 😀 in Zürich"
    ours = ref_model.predict(text, "none", ignore_labels=[])
    assert [e["word"] for e in ours] == ["i", "love", "😀", "in", "zurich"]
    for e in ours:
        assert 1 <= e["index"] <= 5
    grouped = ref_model.predict(text, "first", ignore_labels=[])
    assert "😀" in " ".join(e["word"] for e in grouped)


def test_bad_strategy_raises(ref_model: TokenModel) -> None:
    enc = ref_model.tokenizer.encode("hello")
    logits = np.zeros((len(enc.ids), len(ref_model.id2label)), dtype=np.float32)
    with pytest.raises(ValueError) as info:
        postprocess_token_classification(
            "hello", [enc], [logits], ref_model.id2label, ref_model.tokenizer, "longest"
        )
    for name in AGGREGATION_STRATEGIES:
        assert name in str(info.value)
    assert "longest" in str(info.value)


def test_logits_shape_checked(ref_model: TokenModel) -> None:
    enc = ref_model.tokenizer.encode("hello world")
    logits = np.zeros((len(enc.ids) - 1, len(ref_model.id2label)), dtype=np.float32)
    with pytest.raises(ValueError, match="logits"):
        postprocess_token_classification(
            "hello world", [enc], [logits], ref_model.id2label, ref_model.tokenizer
        )


# --- fallback word heuristic (no continuing_subword_prefix) ----------------------------------


def test_fallback_subword_heuristic_and_join_without_decoder() -> None:
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, "hello": 1, ",": 2, "world": 3, "foo": 4}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    text = "hello,world foo"
    enc = tok.encode(text)
    assert enc.tokens == ["hello", ",", "world", "foo"]
    id2label = {0: "O", 1: "B-X", 2: "I-X", 3: "B-Y"}
    logits = np.full((4, 4), -5.0, dtype=np.float32)
    logits[0, 1] = 5.0  # hello: B-X
    logits[1, 3] = 5.0  # ",": B-Y, but a subword of "hello,world"
    logits[2, 0] = 5.0  # world: O, also a subword
    logits[3, 3] = 5.0  # foo: B-Y
    first = postprocess_token_classification(text, [enc], [logits], id2label, tok, "first")
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in first] == [
        ("X", "hello , world", 0, 11),
        ("Y", "foo", 12, 15),
    ]
    simple = postprocess_token_classification(text, [enc], [logits], id2label, tok, "simple")
    assert [(e["entity_group"], e["word"]) for e in simple] == [
        ("X", "hello"),
        ("Y", ","),
        ("Y", "foo"),
    ]
    average = postprocess_token_classification(
        text, [enc], [logits], id2label, tok, "average", ignore_labels=[]
    )
    assert [(e["word"], e["start"], e["end"]) for e in average] == [
        ("hello , world", 0, 11),
        ("foo", 12, 15),
    ]


# --- windows ---------------------------------------------------------------------------------


def _content(window: Any) -> list[int]:
    return [i for i, special in enumerate(window.special_tokens_mask) if not special]


@pytest.mark.parametrize(("max_length", "stride"), [(16, 4), (24, 8), (12, 0), (64, 20)])
def test_encode_windows_boundaries(ref_model: TokenModel, max_length: int, stride: int) -> None:
    tok = ref_model.tokenizer
    texts = [LONG_TEXT, "Short one.", ""]
    all_windows = encode_windows(tok, texts, max_length, stride)
    assert len(all_windows) == len(texts)
    for text, windows in zip(texts, all_windows):
        full = tok.encode(text)
        full_ids = [full.ids[i] for i in _content(full)]
        full_offsets = [full.offsets[i] for i in _content(full)]
        budget = max_length - tok.num_special_tokens_to_add(False)
        step = budget - stride
        expected = 1 if len(full_ids) <= budget else 1 + -(-(len(full_ids) - budget) // step)
        assert len(windows) == expected
        rebuilt_ids: list[int] = []
        rebuilt_offsets: list[Any] = []
        previous: list[int] = []
        for k, w in enumerate(windows):
            assert len(w.ids) <= max_length
            assert w.tokens[0] == "[CLS]" and w.tokens[-1] == "[SEP]"
            ids = [w.ids[i] for i in _content(w)]
            offsets = [w.offsets[i] for i in _content(w)]
            for start, end in offsets:
                assert 0 <= start <= end <= len(text)
            if k < len(windows) - 1:
                assert len(ids) == budget
            if k > 0:
                assert ids[:stride] == previous[len(previous) - stride :]
                ids, offsets = ids[stride:], offsets[stride:]
            rebuilt_ids += ids
            rebuilt_offsets += offsets
            previous = [w.ids[i] for i in _content(w)]
        assert rebuilt_ids == full_ids
        assert rebuilt_offsets == full_offsets


def test_encode_windows_restores_tokenizer_settings(ref_model: TokenModel) -> None:
    tok = tokenizers.Tokenizer.from_str(ref_model.tokenizer.to_str())
    tok.enable_truncation(100, stride=2)
    tok.enable_padding(length=120)
    trunc, pad = tok.truncation, tok.padding
    windows = encode_windows(tok, [LONG_TEXT], 16, 4)[0]
    assert len(windows) > 1 and all(len(w.ids) <= 16 for w in windows)
    assert 0 not in windows[-1].ids  # no padding
    assert tok.truncation == trunc and tok.padding == pad
    tok.no_truncation()
    tok.no_padding()
    encode_windows(tok, [LONG_TEXT], 16, 4)
    assert tok.truncation is None and tok.padding is None


def test_encode_windows_rejects_bad_stride(ref_model: TokenModel) -> None:
    with pytest.raises(ValueError, match="stride"):
        encode_windows(ref_model.tokenizer, [LONG_TEXT], 16, 14)
    with pytest.raises(ValueError, match="max_length"):
        encode_windows(ref_model.tokenizer, [LONG_TEXT], 2, 0)


def _ent(start: int, end: int, score: float, group: str = "X") -> dict[str, Any]:
    return {
        "entity_group": group,
        "score": score,
        "word": f"{start}-{end}",
        "start": start,
        "end": end,
    }


@pytest.mark.parametrize(
    ("entities", "kept"),
    [
        ([], []),
        ([_ent(0, 4, 0.9)], [_ent(0, 4, 0.9)]),
        # sorted by start, touching spans do not overlap
        ([_ent(5, 9, 0.5), _ent(0, 5, 0.6)], [_ent(0, 5, 0.6), _ent(5, 9, 0.5)]),
        # the same span from two windows: the higher score wins, ties keep the first
        (
            [_ent(0, 4, 0.7), _ent(10, 12, 0.8), _ent(0, 4, 0.9)],
            [_ent(0, 4, 0.9), _ent(10, 12, 0.8)],
        ),
        ([_ent(0, 4, 0.7, "A"), _ent(0, 4, 0.7, "B")], [_ent(0, 4, 0.7, "A")]),
        # the longer span wins whatever the scores
        ([_ent(3, 6, 0.99), _ent(0, 10, 0.1)], [_ent(0, 10, 0.1)]),
        ([_ent(0, 10, 0.1), _ent(2, 6, 0.99)], [_ent(0, 10, 0.1)]),
        (
            [_ent(0, 5, 0.9), _ent(3, 12, 0.2), _ent(12, 14, 0.5)],
            [_ent(3, 12, 0.2), _ent(12, 14, 0.5)],
        ),
        # only entities starting inside the kept one are compared with it
        ([_ent(0, 6, 0.5), _ent(2, 4, 0.9), _ent(6, 8, 0.4)], [_ent(0, 6, 0.5), _ent(6, 8, 0.4)]),
    ],
)
def test_merge_overlapping_entities(entities: list[dict], kept: list[dict]) -> None:
    assert _aggregate_overlapping_entities(list(entities)) == kept


def _merge_reference(entities: list[dict]) -> list[dict]:
    """HF's merge written as a fold over start-sorted entities."""
    out: list[dict] = []
    for e in sorted(entities, key=lambda x: x["start"]):
        if out and out[-1]["start"] <= e["start"] < out[-1]["end"]:
            cur, prev = e["end"] - e["start"], out[-1]["end"] - out[-1]["start"]
            if cur > prev or (cur == prev and e["score"] > out[-1]["score"]):
                out[-1] = e
        else:
            out.append(e)
    return out


@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
def test_stride_windows_end_to_end(ref_model: TokenModel, strategy: str) -> None:
    tok = ref_model.tokenizer
    windows = encode_windows(tok, [LONG_TEXT], 20, 6)[0]
    assert len(windows) >= 4
    merged = ref_model.entities(LONG_TEXT, windows, strategy, ignore_labels=[])
    per_window = [ref_model.entities(LONG_TEXT, [w], strategy, ignore_labels=[]) for w in windows]
    assert merged == _merge_reference([e for es in per_window for e in es])
    json.dumps(merged)
    # every kept entity comes from some window; they are sorted and disjoint
    pool = [e for es in per_window for e in es]
    assert all(e in pool for e in merged)
    for a, b in zip(merged, merged[1:]):
        assert a["end"] <= b["start"]
    # with nothing ignored, the merged entities cover the text from the first to the last token
    assert merged[0]["start"] == windows[0].offsets[1][0]
    assert merged[-1]["end"] == windows[-1].offsets[-2][1]
    # each window contributes entities
    for es in per_window:
        assert any(e in merged for e in es)
    # filtering ignore_labels happens per window before the merge
    filtered = ref_model.entities(LONG_TEXT, windows, strategy)
    assert all(e["entity_group"] != "O" for e in filtered)
    per_window_filtered = [[e for e in es if e["entity_group"] != "O"] for es in per_window]
    assert filtered == _merge_reference([e for es in per_window_filtered for e in es])


def test_single_window_equals_unwindowed(ref_model: TokenModel) -> None:
    text = "Barack Obama visited the United Nations headquarters in New York."
    windows = encode_windows(ref_model.tokenizer, [text], 512, 128)[0]
    assert len(windows) == 1
    for strategy in AGGREGATION_STRATEGIES:
        assert ref_model.entities(text, windows, strategy) == ref_model.predict(text, strategy)
