"""Token classification post-processing identical to Hugging Face's ``TokenClassificationPipeline``.

Pure numpy on top of ``tokenizers`` (no ``transformers``): softmax over labels, pre-entity
gathering, word aggregation (``first``/``average``/``max``), B-/I- grouping, ``ignore_labels``
filtering and the merge of entities found in overlapping stride windows. `merge_adjacent` (not in
Hugging Face) joins same-group entities that touch in the text into one.
"""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from .._tokenizers import settings_restored

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

__all__ = [
    "AGGREGATION_STRATEGIES",
    "MERGE_JOINERS",
    "encode_windows",
    "merge_adjacent",
    "postprocess_token_classification",
]

AGGREGATION_STRATEGIES = ("none", "simple", "first", "average", "max")
"""Valid ``aggregation_strategy`` values, as accepted by Hugging Face's pipeline."""

_UNK_ID_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

MERGE_JOINERS = frozenset(".@-_/+:#?=&%~")
"""The characters that may lie between two entities `merge_adjacent` joins (those inside e-mail
addresses, URLs, phone numbers and handles); any other character, a space included, keeps them
apart."""


def merge_adjacent(text: str, entities: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Grouped ``entities`` of ``text`` (in text order) with each run of same-group entities that
    touch merged into one: the next starts where the previous ends, or only `MERGE_JOINERS`
    characters lie between. A merged entity spans from the first's ``start`` to the last's
    ``end``, its ``word`` is ``text[start:end]`` and its ``score`` the mean of the merged scores.
    Every entity's ``word`` becomes its exact text slice; entities without offsets stay apart."""
    out: list[dict[str, Any]] = []
    scores: list[list[float]] = []
    for entity in entities:
        e = dict(entity)
        group = e.get("entity_group", e.get("entity"))
        start, end = e.get("start"), e.get("end")
        prev = out[-1] if out else None
        if (
            prev is not None
            and start is not None
            and prev.get("end") is not None
            and prev.get("entity_group", prev.get("entity")) == group
            and prev["end"] <= start
            and all(ch in MERGE_JOINERS for ch in text[prev["end"] : start])
        ):
            prev["end"] = end
            prev["word"] = text[prev["start"] : end]
            scores[-1].append(float(e["score"]))
            prev["score"] = float(np.mean(scores[-1]))
            continue
        if start is not None and end is not None:
            e["word"] = text[start:end]
        out.append(e)
        scores.append([float(e["score"])])
    return out


def _check_strategy(aggregation_strategy: str) -> str:
    strategy = aggregation_strategy.lower() if isinstance(aggregation_strategy, str) else None
    if strategy not in AGGREGATION_STRATEGIES:
        raise ValueError(
            f"unknown aggregation_strategy {aggregation_strategy!r}; "
            f"valid strategies are: {', '.join(AGGREGATION_STRATEGIES)}"
        )
    return strategy


def _unk_token_id(tokenizer: Tokenizer) -> Optional[int]:
    """Id of the tokenizer model's unknown token, or None when it has none."""
    model = tokenizer.model
    if hasattr(model, "unk_token"):
        unk = model.unk_token
        return tokenizer.token_to_id(unk) if unk else None
    try:
        return _UNK_ID_CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    # Unigram does not expose its unk id: read it from the serialized model.
    unk_id = json.loads(tokenizer.to_str()).get("model", {}).get("unk_id")
    unk_id = int(unk_id) if unk_id is not None else None
    with contextlib.suppress(TypeError):
        _UNK_ID_CACHE[tokenizer] = unk_id
    return unk_id


def _tokens_to_string(tokenizer: Tokenizer, tokens: list[str]) -> str:
    decoder = tokenizer.decoder
    return decoder.decode(tokens) if decoder is not None else " ".join(tokens)


def _softmax(logits: np.ndarray) -> np.ndarray:
    maxes = np.max(logits, axis=-1, keepdims=True)
    shifted_exp = np.exp(logits - maxes)
    return shifted_exp / shifted_exp.sum(axis=-1, keepdims=True)


def _gather_pre_entities(
    sentence: str,
    input_ids: Sequence[int],
    scores: np.ndarray,
    offset_mapping: Sequence[tuple[int, int]],
    special_tokens_mask: Sequence[int],
    tokenizer: Tokenizer,
    unk_token_id: Optional[int],
    word_aware: bool,
) -> list[dict[str, Any]]:
    pre_entities = []
    for idx, token_scores in enumerate(scores):
        if special_tokens_mask[idx]:
            continue
        token_id = int(input_ids[idx])
        word = tokenizer.id_to_token(token_id)
        start_ind, end_ind = (int(x) for x in offset_mapping[idx])
        word_ref = sentence[start_ind:end_ind]
        if word_aware:
            is_subword = len(word) != len(word_ref)
        else:
            is_subword = start_ind > 0 and " " not in sentence[start_ind - 1 : start_ind + 1]
        if token_id == unk_token_id:
            word = word_ref
            is_subword = False
        pre_entities.append(
            {
                "word": word,
                "scores": token_scores,
                "start": start_ind,
                "end": end_ind,
                "index": idx,
                "is_subword": is_subword,
            }
        )
    return pre_entities


def _aggregate(
    pre_entities: list[dict[str, Any]],
    strategy: str,
    id2label: Mapping[int, str],
    tokenizer: Tokenizer,
) -> list[dict[str, Any]]:
    if strategy in ("none", "simple"):
        entities = []
        for pre_entity in pre_entities:
            entity_idx = int(pre_entity["scores"].argmax())
            entities.append(
                {
                    "entity": id2label[entity_idx],
                    "score": pre_entity["scores"][entity_idx],
                    "index": pre_entity["index"],
                    "word": pre_entity["word"],
                    "start": pre_entity["start"],
                    "end": pre_entity["end"],
                }
            )
    else:
        entities = _aggregate_words(pre_entities, strategy, id2label, tokenizer)
    if strategy == "none":
        return entities
    return _group_entities(entities, tokenizer)


def _aggregate_word(
    entities: list[dict[str, Any]],
    strategy: str,
    id2label: Mapping[int, str],
    tokenizer: Tokenizer,
) -> dict[str, Any]:
    word = _tokens_to_string(tokenizer, [entity["word"] for entity in entities])
    if strategy == "first":
        scores = entities[0]["scores"]
        idx = int(scores.argmax())
        score = scores[idx]
    elif strategy == "max":
        max_entity = max(entities, key=lambda entity: entity["scores"].max())
        scores = max_entity["scores"]
        idx = int(scores.argmax())
        score = scores[idx]
    elif strategy == "average":
        average_scores = np.nanmean(np.stack([entity["scores"] for entity in entities]), axis=0)
        idx = int(average_scores.argmax())
        score = average_scores[idx]
    else:
        raise ValueError(f"strategy {strategy!r} is invalid for word aggregation")
    return {
        "entity": id2label[idx],
        "score": score,
        "word": word,
        "start": entities[0]["start"],
        "end": entities[-1]["end"],
    }


def _aggregate_words(
    entities: list[dict[str, Any]],
    strategy: str,
    id2label: Mapping[int, str],
    tokenizer: Tokenizer,
) -> list[dict[str, Any]]:
    word_entities = []
    word_group: Optional[list[dict[str, Any]]] = None
    for entity in entities:
        if word_group is None:
            word_group = [entity]
        elif entity["is_subword"]:
            word_group.append(entity)
        else:
            word_entities.append(_aggregate_word(word_group, strategy, id2label, tokenizer))
            word_group = [entity]
    if word_group is not None:
        word_entities.append(_aggregate_word(word_group, strategy, id2label, tokenizer))
    return word_entities


def _group_sub_entities(entities: list[dict[str, Any]], tokenizer: Tokenizer) -> dict[str, Any]:
    entity = entities[0]["entity"].split("-", 1)[-1]
    scores = np.nanmean([e["score"] for e in entities])
    return {
        "entity_group": entity,
        "score": np.mean(scores),
        "word": _tokens_to_string(tokenizer, [e["word"] for e in entities]),
        "start": entities[0]["start"],
        "end": entities[-1]["end"],
    }


def _get_tag(entity_name: str) -> tuple[str, str]:
    if entity_name.startswith("B-"):
        return "B", entity_name[2:]
    if entity_name.startswith("I-"):
        return "I", entity_name[2:]
    return "I", entity_name


def _group_entities(entities: list[dict[str, Any]], tokenizer: Tokenizer) -> list[dict[str, Any]]:
    entity_groups = []
    entity_group_disagg: list[dict[str, Any]] = []
    for entity in entities:
        if not entity_group_disagg:
            entity_group_disagg.append(entity)
            continue
        bi, tag = _get_tag(entity["entity"])
        _, last_tag = _get_tag(entity_group_disagg[-1]["entity"])
        if tag == last_tag and bi != "B":
            entity_group_disagg.append(entity)
        else:
            entity_groups.append(_group_sub_entities(entity_group_disagg, tokenizer))
            entity_group_disagg = [entity]
    if entity_group_disagg:
        entity_groups.append(_group_sub_entities(entity_group_disagg, tokenizer))
    return entity_groups


def _aggregate_overlapping_entities(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sort by start; of entities starting inside the previous kept one, keep the longer one
    (the higher-scoring one on equal length)."""
    if len(entities) == 0:
        return entities
    entities = sorted(entities, key=lambda x: x["start"])
    aggregated_entities = []
    previous_entity = entities[0]
    for entity in entities:
        if previous_entity["start"] <= entity["start"] < previous_entity["end"]:
            current_length = entity["end"] - entity["start"]
            previous_length = previous_entity["end"] - previous_entity["start"]
            if current_length > previous_length or (
                current_length == previous_length and entity["score"] > previous_entity["score"]
            ):
                previous_entity = entity
        else:
            aggregated_entities.append(previous_entity)
            previous_entity = entity
    aggregated_entities.append(previous_entity)
    return aggregated_entities


def _to_python(entity: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entity.items():
        if key == "score":
            out[key] = float(value)
        elif key in ("index", "start", "end"):
            out[key] = int(value)
        else:
            out[key] = str(value)
    return out


def postprocess_token_classification(
    text: str,
    windows: Sequence[Encoding],
    logits: Sequence[np.ndarray],
    id2label: Mapping[int, str],
    tokenizer: Tokenizer,
    aggregation_strategy: str = "none",
    ignore_labels: Sequence[str] = ("O",),
) -> list[dict[str, Any]]:
    """HF-identical entities for one text: dicts {entity, score, index, word, start, end} without
    aggregation, {entity_group, score, word, start, end} with it; scores are Python floats,
    index/start/end Python ints."""
    strategy = _check_strategy(aggregation_strategy)
    if len(windows) != len(logits):
        raise ValueError(f"got {len(windows)} windows but {len(logits)} logits arrays")
    ignore = list(ignore_labels)
    labels = {int(k): v for k, v in id2label.items()}
    unk_token_id = _unk_token_id(tokenizer)
    word_aware = bool(getattr(tokenizer.model, "continuing_subword_prefix", None))

    all_entities: list[dict[str, Any]] = []
    for w, (window, window_logits) in enumerate(zip(windows, logits)):
        window_logits = np.asarray(window_logits, dtype=np.float32)
        ids = window.ids
        if window_logits.ndim != 2 or window_logits.shape[0] != len(ids):
            raise ValueError(
                f"window {w}: logits shape {tuple(window_logits.shape)} does not match "
                f"[{len(ids)}, num_labels]"
            )
        scores = _softmax(window_logits)
        pre_entities = _gather_pre_entities(
            text,
            ids,
            scores,
            window.offsets,
            window.special_tokens_mask,
            tokenizer,
            unk_token_id,
            word_aware,
        )
        grouped = _aggregate(pre_entities, strategy, labels, tokenizer)
        all_entities.extend(
            entity
            for entity in grouped
            if entity.get("entity", None) not in ignore
            and entity.get("entity_group", None) not in ignore
        )
    if len(windows) > 1:
        all_entities = _aggregate_overlapping_entities(all_entities)
    return [_to_python(entity) for entity in all_entities]


def encode_windows(
    tokenizer: Tokenizer, texts: Sequence[str], max_length: int, stride: int
) -> list[list[Encoding]]:
    """Per text, its windows ``[enc, *enc.overflowing]``: encoded with special tokens, truncated to
    ``max_length`` tokens, consecutive windows sharing ``stride`` tokens; unpadded. The tokenizer's
    own truncation/padding settings are restored afterwards (do not share it across threads
    during the call)."""
    budget = max_length - tokenizer.num_special_tokens_to_add(False)
    if budget <= 0:
        raise ValueError(
            f"max_length={max_length} leaves no room for text after the special tokens"
        )
    if stride < 0 or stride >= budget:
        raise ValueError(
            f"stride must be in [0, {budget}) (max_length minus special tokens), got {stride}"
        )
    with settings_restored(tokenizer):
        tokenizer.no_padding()
        tokenizer.enable_truncation(
            max_length, stride=stride, strategy="longest_first", direction="right"
        )
        encodings = tokenizer.encode_batch(list(texts), add_special_tokens=True)
    return [[enc, *enc.overflowing] for enc in encodings]
