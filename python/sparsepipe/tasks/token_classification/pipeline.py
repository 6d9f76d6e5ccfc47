"""The token-classification pipeline (named entities, PII tagging)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import ConfigError, InputError, ModelLoadError
from ...pipeline import BatchFields, EngineInputs, Pipeline
from .._text import TextPipeline, check_encodable, config_labels
from .postprocess import merge_adjacent, postprocess_token_classification
from .schemas import (
    TokenClassificationInput,
    TokenClassificationOptions,
    TokenClassificationOutput,
    TokenClassificationResult,
)

__all__ = ["TokenClassificationPipeline"]


@Pipeline.register(
    "token-classification", task_aliases=("ner",), default_model_path="zoo:pii-ner-minilm"
)
class TokenClassificationPipeline(TextPipeline):
    """Entities per text with Hugging Face's aggregation strategies and offsets.

    A text longer than the sequence length is split into overlapping windows (``stride`` tokens
    shared) whose entities are merged as Hugging Face does, so nothing is silently cut off.
    """

    input_schema = TokenClassificationInput
    output_schema = TokenClassificationOutput
    options_schema = TokenClassificationOptions
    batch_fields = BatchFields(("inputs",), ("predictions",))
    example_field = "inputs"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        shape = self.engine.output_shapes[0]
        if len(shape) != 3:
            raise ModelLoadError(
                f"{self.onnx_file_path}: a token-classification model outputs logits "
                f"[batch, sequence, num_labels]; its first output {self.engine.output_names[0]!r} "
                f"has shape {shape}"
            )
        self._special = self.tokenizer.num_special_tokens_to_add(False)
        self._stride(self.options)
        self.id2label = config_labels(self.config, shape[2], self.onnx_file_path)

    def _stride(self, options: TokenClassificationOptions) -> int:
        room = self.truncation_length - self._special
        stride = options.stride if options.stride is not None else min(128, room // 4)
        if stride >= room:
            raise ConfigError(
                f"stride must be smaller than the sequence length minus the special tokens "
                f"({room}), got {stride}"
            )
        return stride

    def process_inputs(self, inputs: TokenClassificationInput) -> EngineInputs:
        """All windows of all texts as rows; the context maps rows back to their texts."""
        texts = [inputs.inputs] if isinstance(inputs.inputs, str) else list(inputs.inputs)
        check_encodable(texts, "inputs")
        try:
            stride = self._stride(self.options)
        except ConfigError as e:
            raise InputError(str(e)) from e
        windows: list[list[Any]] = []
        if texts:
            tok = self.truncating_tokenizer(self.truncation_length, stride)
            try:
                windows = [[e, *e.overflowing] for e in tok.encode_batch(texts)]
            except Exception as e:
                raise InputError(f"tokenization failed: {e}") from e
        rows = [w for ws in windows for w in ws]
        return EngineInputs(rows, {"texts": texts, "windows": windows})

    def process_engine_outputs(
        self, engine_outputs: Any, *, texts: list[str], windows: list[list[Any]], **kwargs: Any
    ) -> TokenClassificationOutput:
        """Entities per text from the per-window logits."""
        opts = self.options
        id2label = self.id2label
        predictions = []
        row = 0
        for text, ws in zip(texts, windows):
            logits = []
            for w in ws:
                out = np.asarray(engine_outputs[row][0], dtype=np.float32)
                if not id2label:
                    id2label = {i: f"LABEL_{i}" for i in range(out.shape[-1])}
                logits.append(out[: len(w.ids)])
                row += 1
            entities = postprocess_token_classification(
                text,
                ws,
                logits,
                id2label,
                self.tokenizer,
                aggregation_strategy=opts.aggregation_strategy,
                ignore_labels=opts.ignore_labels,
            )
            if opts.merge_adjacent:
                entities = merge_adjacent(text, entities)
            predictions.append(
                [
                    TokenClassificationResult(
                        entity=e.get("entity_group", e.get("entity")),
                        score=e["score"],
                        word=e["word"],
                        start=e.get("start"),
                        end=e.get("end"),
                        index=e.get("index"),
                        is_grouped=opts.aggregation_strategy != "none",
                    )
                    for e in entities
                ]
            )
        return TokenClassificationOutput(predictions=predictions)
