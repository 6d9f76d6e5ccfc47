"""`TextPipeline`: what every NLP task shares — tokenizer loading, sequence-length policy, batching.

Rows (tokenized texts or windows) are grouped into ``batch_size`` chunks, longest-first so rows of
similar length share a chunk, and each chunk is padded only as far as its policy requires:
to its longest row rounded up to a multiple of 8 (default), to a fixed length, or to the smallest
bucket that fits. One engine plan serves every length.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Optional, Union

import numpy as np

from ..errors import ConfigError, InputError, ModelLoadError
from ..pipeline import Pipeline, plan_batches
from . import _examples

__all__ = ["TextPipeline", "load_tokenizer"]

MAX_SEQUENCE_LENGTH = 512
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def load_tokenizer(path: Any) -> Any:
    """A `tokenizers.Tokenizer` from ``tokenizer.json`` with its own truncation and padding off."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:  # pragma: no cover - tokenizers is a dependency
        raise ModelLoadError(
            "text tasks need the tokenizers package: pip install tokenizers"
        ) from e
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:
        raise ModelLoadError(f"cannot load the tokenizer {path}: {e}") from e
    tok.no_truncation()
    tok.no_padding()
    return tok


def config_labels(config: Any, num_labels: Any, where: Any) -> dict[int, str]:
    """Label id -> name from config.json's ``id2label`` (``LABEL_<i>`` for every id when it has
    none); ModelLoadError naming ``where`` when it is not an object of ids to names or, with
    ``num_labels`` known (an int), lacks one of the model's label ids."""
    id2label = config.get("id2label")
    if id2label is None or id2label == {}:
        return {i: f"LABEL_{i}" for i in range(num_labels)} if isinstance(num_labels, int) else {}
    if not isinstance(id2label, dict):
        raise ModelLoadError(
            f"{where}: config.json id2label must be an object mapping label ids to names, got "
            f"{type(id2label).__name__}"
        )
    labels: dict[int, str] = {}
    for key, name in id2label.items():
        try:
            labels[int(key)] = str(name)
        except ValueError:
            raise ModelLoadError(
                f"{where}: config.json id2label key {key!r} is not a label id (an integer)"
            ) from None
    if isinstance(num_labels, int):
        missing = [i for i in range(num_labels) if i not in labels]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise ModelLoadError(
                f"{where}: config.json id2label lacks label id(s) {shown} of the model's "
                f"{num_labels} labels; give a name for each id 0..{num_labels - 1}"
            )
    return labels


def check_encodable(texts: Sequence[Any], field: str) -> None:
    """InputError naming the first text (or pair member) that is not valid Unicode."""
    for i, item in enumerate(texts):
        for text in (item,) if isinstance(item, str) else tuple(item):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InputError(
                    f"{field} item {i} is not valid Unicode text ({e.reason} at character "
                    f"{e.start}); remove or replace the lone surrogate"
                ) from e


def _token_id(tok: Any, token: Any) -> Optional[int]:
    if isinstance(token, dict):
        token = token.get("content")
    if not isinstance(token, str):
        return None
    return tok.token_to_id(token)


class TextPipeline(Pipeline):
    """Base of the NLP pipelines: loads ``tokenizer.json`` and runs rows of token ids.

    ``sequence_length``: ``None`` pads each batch to its longest row (multiple of 8) and truncates
    at the model's maximum (at most 512 tokens); an int fixes the padded length; a list gives
    buckets (the smallest that fits is used; longer texts are cut at the largest).
    """

    #: the input field the generated example sentences go in (`example_inputs`)
    example_field: ClassVar[str] = "sequences"

    @classmethod
    def input_shapes_options(cls, shapes: list[list[int]]) -> dict[str, Any]:
        """``sequence_length`` from ``[batch, length]`` shapes (one, or one per model input)."""
        lengths = {s[1] for s in shapes if len(s) == 2}
        if len(lengths) != 1 or any(len(s) != 2 for s in shapes):
            raise ConfigError(
                f"input_shapes for {cls.task} are [batch, sequence_length] shapes with one "
                f"sequence length, got {shapes}"
            )
        return {"sequence_length": lengths.pop()}

    def __init__(
        self, *, sequence_length: Optional[Union[int, Sequence[int]]] = None, **kwargs: Any
    ) -> None:
        self._requested_length = sequence_length
        super().__init__(**kwargs)
        self._setup_lengths(sequence_length)
        names = self.engine.input_names
        unknown = [n for n in names if n not in _KNOWN_INPUTS]
        if unknown or "input_ids" not in names:
            raise ModelLoadError(
                f"{self.onnx_file_path}: a {self.task} model must take input_ids (and optionally "
                f"attention_mask, token_type_ids, position_ids); this one takes {names}"
            )
        dtypes = dict(zip(names, self.engine.input_dtypes))
        self._dtypes = {n: np.dtype(dtypes[n] or "int64") for n in names}
        self.truncating_tokenizer(self.truncation_length)

    # ---- setup ------------------------------------------------------------------------------

    def setup_onnx_file_path(self) -> Any:
        """Loads config.json, tokenizer.json and tokenizer_config.json beside the ONNX file."""
        model = self.model
        self.config: dict[str, Any] = model.json("config.json")
        self.tokenizer_config: dict[str, Any] = model.json("tokenizer_config.json")
        tok_path = model.file("tokenizer.json")
        if tok_path is None:
            raise ModelLoadError(
                f"{model.source}: no tokenizer.json beside the model; text tasks need the Hugging "
                "Face fast tokenizer file (save it with "
                "AutoTokenizer.from_pretrained(name).save_pretrained(model_dir))"
            )
        self.tokenizer = load_tokenizer(tok_path)
        self.pad_token_id = self._pad_id()
        self._truncating: dict[tuple[int, int], Any] = {}
        self._truncating_lock = threading.Lock()
        return model.onnx_path

    def _pad_id(self) -> int:
        for source in (self.tokenizer_config.get("pad_token"),):
            tid = _token_id(self.tokenizer, source)
            if tid is not None:
                return tid
        pad = self.tokenizer.padding
        if pad and isinstance(pad.get("pad_id"), int):
            return pad["pad_id"]
        for token in ("[PAD]", "<pad>", "<|padding|>"):
            tid = self.tokenizer.token_to_id(token)
            if tid is not None:
                return tid
        pid = self.config.get("pad_token_id")
        return pid if isinstance(pid, int) else 0

    def _setup_lengths(self, sequence_length: Any) -> None:
        limits = [MAX_SEQUENCE_LENGTH]
        mml = self.tokenizer_config.get("model_max_length")
        if isinstance(mml, (int, float)) and 0 < mml < 1_000_000:
            limits.append(int(mml))
        mpe = self.config.get("max_position_embeddings")
        if isinstance(mpe, int) and mpe > 0:
            if self.config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
                mpe -= 2
            limits.append(mpe)
        shape = self.engine.input_shapes[self.engine.input_names.index("input_ids")]
        fixed = shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None
        self.max_length = fixed if fixed is not None else min(limits)
        self.fixed_length = fixed
        self.buckets: Optional[list[int]] = None
        if sequence_length is None:
            self.truncation_length = self.max_length
            return
        if isinstance(sequence_length, (int, np.integer)) and not isinstance(sequence_length, bool):
            values = [int(sequence_length)]
        elif isinstance(sequence_length, Sequence) and not isinstance(sequence_length, str):
            values = list(sequence_length)
            if not values:
                raise ConfigError("sequence_length buckets must not be empty")
        else:
            raise ConfigError(
                f"sequence_length must be None, an int or a list of ints, got {sequence_length!r}"
            )
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 4:
                raise ConfigError(f"sequence_length values must be ints >= 4, got {v!r}")
            if v > self.max_length:
                raise ConfigError(
                    f"sequence_length {v} is longer than the model's maximum of {self.max_length} "
                    "tokens"
                )
            if fixed is not None and v != fixed:
                raise ConfigError(
                    f"the model has a fixed sequence length of {fixed}; use sequence_length={fixed}"
                )
        values = sorted({int(v) for v in values})
        if isinstance(sequence_length, (int, np.integer)):
            self.fixed_length = values[0]
        else:
            self.buckets = values
        self.truncation_length = values[-1]

    def _config_kwargs(self) -> dict[str, Any]:
        out = super()._config_kwargs()
        length = self._requested_length
        if length is not None:
            out["sequence_length"] = length if isinstance(length, int) else list(length)
        return out

    # ---- tokenization -----------------------------------------------------------------------

    def example_inputs(self, batch_size: int, tokens: Optional[int] = None) -> tuple[dict, str]:
        """Generated sentences of about ``tokens`` tokens (32 by default) by this tokenizer, in
        the task's ``example_field``."""
        tokens = tokens or 32
        texts = _examples.sentences(batch_size, tokens, lambda s: len(self.tokenizer.encode(s).ids))
        described = f"{batch_size} synthetic sentence(s) of about {tokens} tokens"
        return {self.example_field: texts}, described

    def truncating_tokenizer(self, max_length: int, stride: int = 0) -> Any:
        """A private copy of the tokenizer that truncates at ``max_length`` with ``stride``."""
        key = (max_length, stride)
        tok = self._truncating.get(key)
        if tok is None:
            with self._truncating_lock:
                tok = self._truncating.get(key)
                if tok is None:
                    from tokenizers import Tokenizer

                    tok = Tokenizer.from_str(self.tokenizer.to_str())
                    tok.enable_truncation(max_length, stride=stride, strategy="longest_first")
                    tok.no_padding()
                    self._truncating[key] = tok
        return tok

    def encode(
        self, texts: Sequence[Union[str, tuple[str, str]]], max_length: Optional[int] = None
    ) -> list[Any]:
        """Encodings of ``texts`` (strings or pairs) with special tokens, cut at ``max_length``."""
        if not texts:
            return []
        tok = self.truncating_tokenizer(max_length or self.truncation_length)
        try:
            return tok.encode_batch(list(texts), add_special_tokens=True)
        except Exception as e:
            raise InputError(f"tokenization failed: {e}") from e

    # ---- running ----------------------------------------------------------------------------

    def padded_length(self, longest: int) -> int:
        """The length a chunk whose longest row has ``longest`` tokens is padded to."""
        if self.fixed_length is not None:
            return self.fixed_length
        if self.buckets is not None:
            for b in self.buckets:
                if b >= longest:
                    return b
            return self.buckets[-1]
        return min(max(8, math.ceil(longest / 8) * 8), max(self.max_length, longest))

    def engine_forward(self, engine_inputs: Sequence[Any]) -> list[list[np.ndarray]]:
        """Runs tokenized rows in ``batch_size`` chunks, longest first; each row's outputs, in
        row order."""
        rows = list(engine_inputs)
        n = len(rows)
        if n == 0:
            return []
        step = self.batch_size or n
        order = sorted(range(n), key=lambda i: -len(rows[i].ids)) if n > step else None
        results: list[Optional[list[np.ndarray]]] = [None] * n
        for batch in plan_batches(n, step, pad=self._engine_batch is not None, order=order):
            outputs = self.run_engine(self._arrays([rows[i] for i in batch.items]))
            for j, i in enumerate(batch.items[: batch.real]):
                results[i] = [o[j] for o in outputs]
        return results  # type: ignore[return-value]

    def _arrays(self, batch: Sequence[Any]) -> list[np.ndarray]:
        longest = max(len(r.ids) for r in batch)
        length = self.padded_length(longest)
        b = len(batch)
        ids = np.full((b, length), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((b, length), dtype=np.int64)
        types = np.zeros((b, length), dtype=np.int64)
        for j, r in enumerate(batch):
            k = min(len(r.ids), length)
            ids[j, :k] = r.ids[:k]
            mask[j, :k] = r.attention_mask[:k]
            types[j, :k] = r.type_ids[:k]
        arrays = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": types,
            "position_ids": np.broadcast_to(np.arange(length, dtype=np.int64), (b, length)),
        }
        return [arrays[n].astype(self._dtypes[n], copy=False) for n in self.engine.input_names]
