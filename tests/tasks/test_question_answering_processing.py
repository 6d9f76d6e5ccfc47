"""Question-answering windows and answers match Hugging Face's pipeline output exactly.

Reference: ../shared/reference/nlp/hf_reference.json ("question-answering", made with
transformers 4.57) for four option sets. The model runs with onnxruntime one unpadded window at a
time, and once as a right-padded batch. Edge cases (empty and blank texts, the null answer, the
merge of equal answers, invalid values) are checked on the same tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
tokenizers = pytest.importorskip("tokenizers")

from sparsepipe.tasks.question_answering.processing import (  # noqa: E402
    QAWindow,
    default_qa_lengths,
    encode_qa,
    qa_answers,
)

SCORE_TOL = 1e-4
REF_DIR = Path("reference") / "nlp"

# option set in hf_reference.json -> (max_seq_len, doc_stride, qa_answers kwargs); None: default
OPTION_SETS: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "default": (None, None, {}),
    "top_k_3": (None, None, {"top_k": 3}),
    "impossible": (None, None, {"handle_impossible_answer": True}),
    "stride_64_len_128": (128, 64, {"max_answer_len": 10, "top_k": 2}),
}


class QAModel:
    """The reference ONNX QA model, its tokenizer (settings as shipped) and model_max_length."""

    def __init__(self, directory: Path) -> None:
        self.tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        config = json.loads((directory / "tokenizer_config.json").read_text("utf-8"))
        self.model_max_length = int(config["model_max_length"])
        self.pad_id = self.tokenizer.token_to_id(config["pad_token"])
        self.session = ort.InferenceSession(
            str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
        )

    def run(self, ids: list[list[int]], mask: list[list[int]], types: list[list[int]]) -> Any:
        feeds = {
            "input_ids": np.asarray(ids, dtype=np.int64),
            "attention_mask": np.asarray(mask, dtype=np.int64),
            "token_type_ids": np.asarray(types, dtype=np.int64),
        }
        return self.session.run(["start_logits", "end_logits"], feeds)

    def logits(self, window: QAWindow) -> tuple[np.ndarray, np.ndarray]:
        """Start and end logits of one unpadded window."""
        enc = window.encoding
        start, end = self.run([enc.ids], [enc.attention_mask], [enc.type_ids])
        return start[0], end[0]

    def logits_batched(self, windows: list[QAWindow]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Logits of all windows run as one right-padded batch, padding sliced off again."""
        width = max(len(w.encoding.ids) for w in windows)
        ids, mask, types = [], [], []
        for w in windows:
            pad = width - len(w.encoding.ids)
            ids.append(list(w.encoding.ids) + [self.pad_id] * pad)
            mask.append(list(w.encoding.attention_mask) + [0] * pad)
            types.append(list(w.encoding.type_ids) + [0] * pad)
        start, end = self.run(ids, mask, types)
        return [
            (start[i, : len(w.encoding.ids)], end[i, : len(w.encoding.ids)])
            for i, w in enumerate(windows)
        ]

    def answer_all(
        self,
        pairs: list[list[str]],
        max_seq_len: Any = None,
        doc_stride: Any = None,
        batched: bool = False,
        **kw: Any,
    ) -> list[list[dict]]:
        max_seq_len, doc_stride = default_qa_lengths(self.model_max_length, max_seq_len, doc_stride)
        windows = encode_qa(
            self.tokenizer,
            [q for q, _ in pairs],
            [c for _, c in pairs],
            max_seq_len=max_seq_len,
            doc_stride=doc_stride,
        )
        logits = self.logits_batched(windows) if batched else [self.logits(w) for w in windows]
        out = []
        for example, (_, context) in enumerate(pairs):
            mine = [i for i, w in enumerate(windows) if w.example == example]
            out.append(
                qa_answers(
                    context,
                    [windows[i] for i in mine],
                    [logits[i][0] for i in mine],
                    [logits[i][1] for i in mine],
                    **kw,
                )
            )
        return out


@pytest.fixture(scope="module")
def reference(shared_dir: Path) -> dict[str, Any]:
    path = shared_dir / REF_DIR / "hf_reference.json"
    assert path.is_file(), f"{path} is missing from ../shared"
    return json.loads(path.read_text("utf-8"))["question-answering"]


@pytest.fixture(scope="module")
def model(shared_dir: Path) -> QAModel:
    return QAModel(shared_dir / REF_DIR / "question-answering")


def assert_answers_equal(ours: list[dict], ref: Any, context: str) -> None:
    ref = ref if isinstance(ref, list) else [ref]
    assert len(ours) == len(ref), f"{context}: {ours} != {ref}"
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert set(a) == {"score", "start", "end", "answer"}, context
        assert type(a["score"]) is float and type(a["start"]) is int and type(a["end"]) is int
        assert (a["answer"], a["start"], a["end"]) == (b["answer"], b["start"], b["end"]), (
            f"{context} answer {i}: {a} != {b}"
        )
        assert abs(a["score"] - b["score"]) <= SCORE_TOL, f"{context} answer {i}: {a} != {b}"


@pytest.mark.parametrize("option_set", sorted(OPTION_SETS))
def test_matches_hf_pipeline(model: QAModel, reference: dict[str, Any], option_set: str) -> None:
    max_seq_len, doc_stride, kw = OPTION_SETS[option_set]
    pairs = reference["pairs"]
    results = model.answer_all(pairs, max_seq_len, doc_stride, **kw)
    assert len(results) == len(reference[option_set]) == len(pairs)
    for i, (ours, ref) in enumerate(zip(results, reference[option_set])):
        assert_answers_equal(ours, ref, f"{option_set} pair {i}")
    json.dumps(results)


@pytest.mark.parametrize("option_set", ["default", "stride_64_len_128"])
def test_right_padded_batch_gives_same_answers(
    model: QAModel, reference: dict[str, Any], option_set: str
) -> None:
    max_seq_len, doc_stride, kw = OPTION_SETS[option_set]
    pairs = reference["pairs"]
    results = model.answer_all(pairs, max_seq_len, doc_stride, batched=True, **kw)
    assert len(results) == len(reference[option_set]) == len(pairs)
    for i, (ours, ref) in enumerate(zip(results, reference[option_set])):
        assert_answers_equal(ours, ref, f"batched {option_set} pair {i}")


def test_defaults_follow_hf() -> None:
    assert default_qa_lengths(512) == (384, 128)
    assert default_qa_lengths(128) == (128, 64)
    assert default_qa_lengths(512, max_seq_len=100) == (100, 50)
    assert default_qa_lengths(512, max_seq_len=100, doc_stride=7) == (100, 7)


def test_windows_layout(model: QAModel, reference: dict[str, Any]) -> None:
    tok = model.tokenizer
    question, context = reference["pairs"][2]
    windows = encode_qa(tok, [question], [context], max_seq_len=128, doc_stride=64)
    assert len(windows) > 2
    assert all(w.example == 0 for w in windows)
    q_tokens = tok.encode(question, add_special_tokens=False).ids
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    previous: list[int] = []
    for w in windows:
        enc = w.encoding
        ids, seq = list(enc.ids), enc.sequence_ids
        assert len(ids) <= 128
        assert ids[: len(q_tokens) + 2] == [cls_id, *q_tokens, sep_id]
        assert ids[-1] == sep_id
        assert list(enc.attention_mask) == [1] * len(ids)
        expected = [0 if s == 1 else 1 for s in seq]
        expected[0] = 0  # CLS stays unmasked
        assert w.p_mask.tolist() == expected
        ctx = [t for t, s in zip(ids, seq) if s == 1]
        if previous:
            assert ctx[:64] == previous[-64:], "consecutive windows share doc_stride tokens"
        previous = ctx
    starts = [
        o[0]
        for o, s in zip(windows[0].encoding.offsets, windows[0].encoding.sequence_ids)
        if s == 1
    ]
    assert starts[0] == 0, "offsets index the context string"


def test_tokenizer_settings_restored(model: QAModel) -> None:
    tok = model.tokenizer
    before_trunc = tok.truncation
    tok.enable_padding(pad_id=model.pad_id, pad_token="[PAD]", length=500)
    try:
        windows = encode_qa(tok, ["Who?"], ["Jane wrote it."], max_seq_len=64, doc_stride=16)
        assert tok.padding["length"] == 500
        assert tok.truncation == before_trunc
        assert tok.encode_special_tokens is False
        assert len(windows) == 1 and len(windows[0].encoding.ids) == 9, "windows are unpadded"
    finally:
        tok.no_padding()
    with pytest.raises(ValueError):
        encode_qa(tok, ["Who?"], ["x " * 300], max_seq_len=16, doc_stride=14)
    assert tok.truncation == before_trunc and tok.padding is None


def test_empty_texts_rejected_like_hf(model: QAModel) -> None:
    # HF's QuestionAnsweringArgumentHandler raises "`question` cannot be empty" (and None).
    with pytest.raises(ValueError, match="question"):
        encode_qa(model.tokenizer, [""], ["Some context."], max_seq_len=384, doc_stride=128)
    with pytest.raises(ValueError, match="context"):
        encode_qa(model.tokenizer, ["Why?"], [""], max_seq_len=384, doc_stride=128)
    with pytest.raises(ValueError, match="None"):
        encode_qa(model.tokenizer, [None], ["x"], max_seq_len=384, doc_stride=128)  # type: ignore[list-item]


def test_blank_texts_answer_like_hf(model: QAModel) -> None:
    # A blank context has no context token: only CLS survives the mask, its probability is
    # zeroed, and HF's decode keeps span (0, 0) whose CLS offsets give the empty answer, score 0.
    tok = model.tokenizer
    windows = encode_qa(tok, ["Who wrote it?"], ["   "], max_seq_len=384, doc_stride=128)
    assert len(windows) == 1
    assert windows[0].p_mask.tolist() == [0] + [1] * (len(windows[0].encoding.ids) - 1)
    start, end = model.logits(windows[0])
    for kw in ({}, {"top_k": 3}):
        assert qa_answers("   ", windows, [start], [end], **kw) == [
            {"score": 0.0, "start": 0, "end": 0, "answer": ""}
        ]
    # A blank question leaves [CLS] [SEP] context [SEP]; answers come from the context as usual.
    context = "Paris is the capital of France."
    windows = encode_qa(tok, ["  "], [context], max_seq_len=384, doc_stride=128)
    enc = windows[0].encoding
    assert enc.sequence_ids[:2] == [None, None] and enc.sequence_ids[2] == 1
    start, end = model.logits(windows[0])
    (best,) = qa_answers(context, windows, [start], [end])
    assert context[best["start"] : best["end"]] == best["answer"] != ""


def _softmax_masked(logits: np.ndarray, p_mask: np.ndarray) -> np.ndarray:
    x = np.where(p_mask == 1, -10000.0, logits).astype(np.float64)
    x = np.exp(x - x.max())
    return x / x.sum()


def test_null_answer_wins_when_cls_dominates(model: QAModel) -> None:
    context = "Jane Austen wrote the book."
    windows = encode_qa(model.tokenizer, ["Who?"], [context], max_seq_len=384, doc_stride=128)
    n = len(windows[0].encoding.ids)
    start = np.zeros(n, dtype=np.float32)
    end = np.zeros(n, dtype=np.float32)
    start[0] = end[0] = 6.0
    p_start = _softmax_masked(start, windows[0].p_mask)
    p_end = _softmax_masked(end, windows[0].p_mask)
    answers = qa_answers(context, windows, [start], [end], top_k=2, handle_impossible_answer=True)
    assert answers[0]["answer"] == "" and (answers[0]["start"], answers[0]["end"]) == (0, 0)
    assert answers[0]["score"] == pytest.approx(p_start[0] * p_end[0], rel=1e-5)
    assert answers[1]["answer"] != ""
    without = qa_answers(context, windows, [start], [end], top_k=2)
    assert all(a["answer"] != "" for a in without)


def test_equal_answers_merge_case_insensitively(model: QAModel) -> None:
    context = "Paris or paris."
    windows = encode_qa(model.tokenizer, ["Where?"], [context], max_seq_len=384, doc_stride=128)
    enc = windows[0].encoding
    ctx_tokens = [i for i, s in enumerate(enc.sequence_ids) if s == 1]
    first, second = ctx_tokens[0], ctx_tokens[2]
    assert enc.tokens[first] == enc.tokens[second] == "paris"
    logits = np.zeros(len(enc.ids), dtype=np.float32)
    logits[[first, second]] = 8.0
    p = _softmax_masked(logits, windows[0].p_mask)
    answers = qa_answers(context, windows, [logits], [logits], top_k=2)
    assert (answers[0]["answer"], answers[0]["start"], answers[0]["end"]) == ("Paris", 0, 5)
    assert answers[0]["score"] == pytest.approx(p[first] ** 2 + p[second] ** 2, rel=1e-5)
    assert answers[1]["answer"] == "Paris or paris"
    assert answers[1]["score"] == pytest.approx(p[first] * p[second], rel=1e-5)


def test_answer_splits_to_whole_words(model: QAModel) -> None:
    context = "The unbelievably long word."
    windows = encode_qa(model.tokenizer, ["What?"], [context], max_seq_len=384, doc_stride=128)
    enc = windows[0].encoding
    pieces = [i for i, t in enumerate(enc.tokens) if t.startswith("##")]
    assert pieces, enc.tokens
    logits = np.zeros(len(enc.ids), dtype=np.float32)
    logits[pieces[0]] = 9.0
    (aligned,) = qa_answers(context, windows, [logits], [logits])
    assert aligned["answer"] == "unbelievably"
    (raw,) = qa_answers(context, windows, [logits], [logits], align_to_words=False)
    start, stop = enc.offsets[pieces[0]]
    assert raw["answer"] == context[start:stop] != aligned["answer"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_seq_len": 100, "doc_stride": 101}, "larger than `max_seq_len`"),
        ({"max_seq_len": 0, "doc_stride": 0}, "max_seq_len"),
        ({"max_seq_len": 3, "doc_stride": 0}, "special tokens"),
        ({"max_seq_len": 64, "doc_stride": -1}, "doc_stride"),
        ({"max_seq_len": 16, "doc_stride": 12}, "doc_stride"),
        ({"max_seq_len": 8, "doc_stride": 1}, "no room for the context"),
    ],
)
def test_invalid_encode_values(model: QAModel, kwargs: dict[str, Any], match: str) -> None:
    question = "What is the capital city of France?"
    context = "Paris is the capital and most populous city of France. " * 4
    with pytest.raises(ValueError, match=match):
        encode_qa(model.tokenizer, [question], [context], **kwargs)


def test_short_pairs_need_no_stride_room(model: QAModel) -> None:
    # The Rust truncation only applies (and only checks the stride) when the pair is too long.
    windows = encode_qa(model.tokenizer, ["Who?"], ["Jane."], max_seq_len=12, doc_stride=8)
    assert len(windows) == 1


def test_invalid_answer_values(model: QAModel) -> None:
    context = "Jane Austen wrote the book."
    windows = encode_qa(model.tokenizer, ["Who?"], [context], max_seq_len=384, doc_stride=128)
    start, end = model.logits(windows[0])
    with pytest.raises(ValueError, match="top_k"):
        qa_answers(context, windows, [start], [end], top_k=0)
    with pytest.raises(ValueError, match="max_answer_len"):
        qa_answers(context, windows, [start], [end], max_answer_len=0)
    with pytest.raises(ValueError, match="length"):
        qa_answers(context, windows, [start[:-1]], [end[:-1]])
    with pytest.raises(ValueError, match="per window"):
        qa_answers(context, windows, [start, start], [end, end])
    with pytest.raises(ValueError, match="empty"):
        qa_answers(context, [], [], [])
    with pytest.raises(ValueError, match="same length"):
        encode_qa(model.tokenizer, ["a", "b"], [context], max_seq_len=384, doc_stride=128)
