"""Question-answering windows and answers identical to Hugging Face's ``QuestionAnsweringPipeline``.

Pure numpy on top of ``tokenizers`` (no ``transformers``). Mirrors transformers 4.57 with a fast
tokenizer whose padding side is ``"right"`` (question first, context second):

* :func:`encode_qa` is ``preprocess``: ``truncation="only_second"``, ``max_length=max_seq_len``,
  ``stride=doc_stride``, no padding, every overflowing window kept; ``p_mask`` is 1 outside the
  context (sequence id != 1) except on the CLS token.
* :func:`qa_answers` is ``postprocess``: per window, non-context logits set to -10000, softmax over
  all positions, null score from position 0, CLS zeroed, best spans by ``np.argpartition`` /
  ``np.argsort`` exactly as HF (ties included), word-aligned character spans, answers with the same
  (case-insensitive) text merged by summing scores, all windows pooled and sorted, ``top_k`` kept.

``max_question_len`` is accepted for parity but unused: HF only applies it on the slow-tokenizer
(SQuAD features) path; the fast path never truncates the question.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .._tokenizers import settings_restored

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

__all__ = ["QAWindow", "default_qa_lengths", "encode_qa", "qa_answers"]

HF_MAX_SEQ_LEN = 384
"""Upper bound HF puts on the default ``max_seq_len``."""

HF_MAX_DOC_STRIDE = 128
"""Upper bound HF puts on the default ``doc_stride``."""

_CLS_CANDIDATES = ("[CLS]", "<s>", "<cls>")
_NULL_SCORE_START = 1000000  # HF's initial min_null_score: large and positive
_MASKED_LOGIT = -10000.0

_SETTINGS_LOCK = threading.Lock()


@dataclass
class QAWindow:
    """One model row: an unpadded window of a (question, context) pair and its answer mask."""

    encoding: Encoding
    """ids / type_ids / attention_mask / offsets of this window, unpadded."""
    p_mask: np.ndarray
    """int64, 1 = cannot be part of an answer (question, special tokens), 0 = context or CLS."""
    example: int
    """Index of the (question, context) pair this window belongs to."""


def default_qa_lengths(
    model_max_length: int, max_seq_len: Optional[int] = None, doc_stride: Optional[int] = None
) -> tuple[int, int]:
    """HF defaults: max_seq_len = min(model_max_length, 384), doc_stride = min(max_seq_len//2, 128).

    Arguments that are given are returned unchanged.
    """
    if max_seq_len is None:
        max_seq_len = min(int(model_max_length), HF_MAX_SEQ_LEN)
    if doc_stride is None:
        doc_stride = min(max_seq_len // 2, HF_MAX_DOC_STRIDE)
    return max_seq_len, doc_stride


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_texts(name: str, key: str, texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError(f"{name} must be a sequence of strings, not a single string")
    out = list(texts)
    for i, text in enumerate(out):
        if text is None:
            raise ValueError(f"`{key}` cannot be None ({name}[{i}])")
        if not isinstance(text, str):
            raise ValueError(f"{name}[{i}] must be a string, got {type(text).__name__}")
        if len(text) == 0:
            raise ValueError(f"`{key}` cannot be empty ({name}[{i}])")
    return out


def _cls_token_id(tokenizer: Tokenizer, cls_token: Optional[str]) -> Optional[int]:
    if cls_token is None:
        return None
    if cls_token != "auto":
        token_id = tokenizer.token_to_id(cls_token)
        if token_id is None:
            raise ValueError(f"cls_token {cls_token!r} is not in the tokenizer's vocabulary")
        return token_id
    for candidate in _CLS_CANDIDATES:
        token_id = tokenizer.token_to_id(candidate)
        if token_id is not None:
            return token_id
    return None


def _check_fits(
    tokenizer: Tokenizer,
    questions: list[str],
    contexts: list[str],
    max_seq_len: int,
    doc_stride: int,
    n_added: int,
) -> None:
    """Raise where the Rust truncation would fail (question too long) or panic (stride too long)."""
    budget = max_seq_len - n_added
    question_lens = [
        len(e.ids) for e in tokenizer.encode_batch(questions, add_special_tokens=False)
    ]
    for i, q_len in enumerate(question_lens):
        if q_len < budget and doc_stride < budget - q_len:
            continue
        c_len = len(tokenizer.encode(contexts[i], add_special_tokens=False).ids)
        if q_len + c_len <= budget:
            continue
        if q_len >= budget:
            raise ValueError(
                f"question {i} has {q_len} tokens, which leaves no room for the context in "
                f"max_seq_len={max_seq_len} ({n_added} special tokens)"
            )
        raise ValueError(
            f"doc_stride={doc_stride} must be smaller than the {budget - q_len} context tokens a "
            f"window of pair {i} holds (max_seq_len={max_seq_len} - {n_added} special tokens - "
            f"{q_len} question tokens)"
        )


def encode_qa(
    tokenizer: Tokenizer,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    max_seq_len: int,
    doc_stride: int,
    max_question_len: int = 64,
    cls_token: Optional[str] = "auto",
) -> list[QAWindow]:
    """All windows of all pairs, in order, as HF makes them (caller's tokenizer left unchanged).

    ``max_question_len`` is unused, as in HF's fast-tokenizer path. ``cls_token``: the token kept
    unmasked in ``p_mask`` (HF's ``cls_token``); ``"auto"`` picks the first of ``[CLS]``, ``<s>``,
    ``<cls>`` the vocabulary has, ``None`` means the model has none. The tokenizer's truncation and
    padding settings are changed during the call and restored afterwards (do not use the same
    tokenizer from another thread meanwhile).
    """
    del max_question_len
    questions = _check_texts("questions", "question", questions)
    contexts = _check_texts("contexts", "context", contexts)
    if len(questions) != len(contexts):
        raise ValueError(
            f"questions and contexts must have the same length, got {len(questions)} "
            f"and {len(contexts)}"
        )
    max_seq_len = _check_int("max_seq_len", max_seq_len, 1)
    doc_stride = _check_int("doc_stride", doc_stride, 0)
    if doc_stride > max_seq_len:
        raise ValueError(
            f"`doc_stride` ({doc_stride}) is larger than `max_seq_len` ({max_seq_len})"
        )
    n_added = tokenizer.num_special_tokens_to_add(True)
    if max_seq_len <= n_added:
        raise ValueError(
            f"max_seq_len ({max_seq_len}) must be larger than the {n_added} special tokens of a "
            "question/context pair"
        )
    cls_id = _cls_token_id(tokenizer, cls_token)
    if not questions:
        return []

    with _SETTINGS_LOCK, settings_restored(tokenizer):
        tokenizer.no_padding()
        tokenizer.no_truncation()
        tokenizer.encode_special_tokens = False
        _check_fits(tokenizer, questions, contexts, max_seq_len, doc_stride, n_added)
        try:
            tokenizer.enable_truncation(
                max_seq_len, stride=doc_stride, strategy="only_second", direction="right"
            )
        except ValueError as exc:
            raise ValueError(
                f"doc_stride={doc_stride} is too large for max_seq_len={max_seq_len}: {exc}"
            ) from exc
        encodings = tokenizer.encode_batch(list(zip(questions, contexts)), add_special_tokens=True)

    windows = []
    for example, first in enumerate(encodings):
        for enc in [first, *first.overflowing]:
            p_mask = np.array([0 if s == 1 else 1 for s in enc.sequence_ids], dtype=np.int64)
            if cls_id is not None:
                p_mask[np.asarray(enc.ids, dtype=np.int64) == cls_id] = 0
            windows.append(QAWindow(encoding=enc, p_mask=p_mask, example=example))
    return windows


def _decode_spans(
    start: np.ndarray,
    end: np.ndarray,
    topk: int,
    max_answer_len: int,
    undesired_tokens: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HF ``decode_spans``; ``undesired_tokens`` is 1 where a token may be part of an answer."""
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    # HF tests membership in the 2-D ``nonzero()`` tuple, whose row indices (all 0) admit index 0.
    allowed = undesired_tokens.nonzero()
    desired_spans = np.isin(starts, allowed) & np.isin(ends, allowed)
    starts = starts[desired_spans]
    ends = ends[desired_spans]
    scores = candidates[0, starts, ends]
    return starts, ends, scores


def _select_starts_ends(
    start: np.ndarray,
    end: np.ndarray,
    p_mask: np.ndarray,
    attention_mask: np.ndarray,
    min_null_score: float,
    top_k: int,
    handle_impossible_answer: bool,
    max_answer_len: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """HF ``select_starts_ends`` on ``[1, n]`` arrays."""
    undesired_tokens = np.abs(p_mask - 1) & attention_mask
    undesired_tokens_mask = undesired_tokens == 0.0
    start = np.where(undesired_tokens_mask, _MASKED_LOGIT, start)
    end = np.where(undesired_tokens_mask, _MASKED_LOGIT, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = _decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return starts, ends, scores, min_null_score


def _char_span(enc: Encoding, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
    """HF ``get_indices`` for a question-first pair (context is sequence 1)."""
    if align_to_words:
        try:
            start_word = enc.token_to_word(s)
            end_word = enc.token_to_word(e)
            start_index = enc.word_to_chars(start_word, sequence_index=1)[0]
            end_index = enc.word_to_chars(end_word, sequence_index=1)[1]
        except Exception:
            start_index = enc.offsets[s][0]
            end_index = enc.offsets[e][1]
    else:
        start_index = enc.offsets[s][0]
        end_index = enc.offsets[e][1]
    return start_index, end_index


def _as_logits(values: Any, n: int, name: str, index: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{name}[{index}] must be 1-D of length {n} (the window's unpadded length), "
            f"got shape {list(arr.shape)}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    return arr


def qa_answers(
    context: str,
    windows: Sequence[QAWindow],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    *,
    top_k: int = 1,
    handle_impossible_answer: bool = False,
    max_answer_len: int = 15,
    align_to_words: bool = True,
) -> list[dict[str, Union[float, int, str]]]:
    """HF-identical answers for one pair: up to top_k dicts {score, start, end, answer}, best first.

    Each dict is {score: float, start: int, end: int, answer: str}; start/end index ``context``.
    start_logits/end_logits: per window, 1-D float arrays of length len(window.encoding.ids)
    (padding removed). Always a list (HF unwraps a single answer into a bare dict).
    """
    if not isinstance(context, str):
        raise ValueError(f"context must be a string, got {type(context).__name__}")
    top_k = _check_int("top_k", top_k, 1)
    max_answer_len = _check_int("max_answer_len", max_answer_len, 1)
    windows = list(windows)
    start_logits = list(start_logits)
    end_logits = list(end_logits)
    if not windows:
        raise ValueError("windows must not be empty")
    if len(start_logits) != len(windows) or len(end_logits) != len(windows):
        raise ValueError(
            f"need one start/end logit array per window: {len(windows)} windows, "
            f"{len(start_logits)} start_logits, {len(end_logits)} end_logits"
        )
    if len({w.example for w in windows}) != 1:
        raise ValueError("windows must all belong to the same (question, context) pair")

    pre_topk = top_k * 2 + 10 if align_to_words else top_k
    min_null_score: float = _NULL_SCORE_START
    answers: list[dict[str, Any]] = []
    for i, window in enumerate(windows):
        enc = window.encoding
        n = len(enc.ids)
        start = _as_logits(start_logits[i], n, "start_logits", i)[None]
        end = _as_logits(end_logits[i], n, "end_logits", i)[None]
        p_mask = np.asarray(window.p_mask, dtype=np.int64)
        if p_mask.shape != (n,):
            raise ValueError(f"windows[{i}].p_mask must have shape [{n}], got {list(p_mask.shape)}")
        attention_mask = np.asarray(enc.attention_mask, dtype=np.int64)[None]
        starts, ends, scores, min_null_score = _select_starts_ends(
            start,
            end,
            p_mask[None],
            attention_mask,
            min_null_score,
            pre_topk,
            handle_impossible_answer,
            max_answer_len,
        )
        for s, e, score in zip(starts, ends, scores):
            start_index, end_index = _char_span(enc, int(s), int(e), align_to_words)
            target = context[start_index:end_index].lower()
            same = next((a for a in answers if a["answer"].lower() == target), None)
            if same is not None:
                same["score"] += score.item()
            else:
                answers.append(
                    {
                        "score": score.item(),
                        "start": start_index,
                        "end": end_index,
                        "answer": context[start_index:end_index],
                    }
                )
    if handle_impossible_answer:
        answers.append({"score": float(min_null_score), "start": 0, "end": 0, "answer": ""})
    return sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
