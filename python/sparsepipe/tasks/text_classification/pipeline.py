"""The text-classification pipeline (sentiment analysis, GLUE-style pair tasks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import ModelLoadError
from ...pipeline import BatchFields, EngineInputs, Pipeline
from ...sparsify.evaluate import label_accuracy
from .._text import TextPipeline, check_encodable, config_labels
from .schemas import TextClassificationInput, TextClassificationOptions, TextClassificationOutput

__all__ = ["TextClassificationPipeline"]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@Pipeline.register(
    "text-classification",
    task_aliases=("glue", "sentiment-analysis"),
    default_model_path="zoo:sentiment-minilm-sparse80",
)
class TextClassificationPipeline(TextPipeline):
    """Labels for texts or text pairs with Hugging Face's scoring (softmax/sigmoid, top_k).

    Texts longer than the sequence length (default: the model's maximum) are truncated.
    """

    input_schema = TextClassificationInput
    output_schema = TextClassificationOutput
    options_schema = TextClassificationOptions
    batch_fields = BatchFields(("sequences",), ("labels", "scores"))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        shape = self.engine.output_shapes[0]
        seq = self.engine.input_shapes[self.engine.input_names.index("input_ids")][1:2]
        if len(shape) != 2 or (isinstance(shape[1], str) and [shape[1]] == seq):
            raise ModelLoadError(
                f"{self.onnx_file_path}: a text-classification model outputs logits "
                f"[batch, num_labels]; its first output {self.engine.output_names[0]!r} has "
                f"shape {shape}"
            )
        self._labels = config_labels(self.config, shape[1], self.onnx_file_path)

    def process_inputs(self, inputs: TextClassificationInput) -> EngineInputs:
        """Tokenized rows, one per sequence (pairs encoded as text pairs)."""
        seqs = inputs.sequences
        items = [seqs] if isinstance(seqs, str) else seqs
        texts = [s if isinstance(s, str) else s[0] if len(s) == 1 else (s[0], s[1]) for s in items]
        check_encodable(texts, "sequences")
        return EngineInputs(self.encode(texts))

    def _function(self, num_labels: int) -> str:
        chosen = self.options.function_to_apply
        if chosen not in (None, "default"):
            return chosen
        problem = self.config.get("problem_type")
        if problem == "multi_label_classification" or num_labels == 1:
            return "sigmoid"
        if problem == "single_label_classification" or num_labels > 1:
            return "softmax"
        return "none"

    def _label(self, i: int) -> str:
        return self._labels.get(i, f"LABEL_{i}")

    def process_engine_outputs(
        self, engine_outputs: Any, **kwargs: Any
    ) -> TextClassificationOutput:
        """Scores per sequence, sorted, cut to ``top_k``."""
        top_k = self.options.top_k
        labels: list[Any] = []
        scores: list[Any] = []
        for row in engine_outputs:
            logits = np.asarray(row[0], dtype=np.float32).reshape(-1)
            fn = self._function(logits.shape[0])
            if fn == "sigmoid":
                probs = _sigmoid(logits)
            elif fn == "softmax":
                probs = _softmax(logits)
            else:
                probs = logits
            ranked = sorted(
                ((self._label(i), float(p)) for i, p in enumerate(probs)),
                key=lambda t: t[1],
                reverse=True,
            )
            if top_k is not None:
                ranked = ranked[:top_k]
            if top_k == 1:
                labels.append(ranked[0][0])
                scores.append(ranked[0][1])
            else:
                labels.append([r[0] for r in ranked])
                scores.append([r[1] for r in ranked])
        return TextClassificationOutput(labels=labels, scores=scores)

    def accuracy(self, texts: Sequence[Any], labels: Sequence[Any]) -> float:
        """Fraction of `texts` whose top label is their entry of `labels` (names, or ids mapped
        through the model's ``id2label``)."""
        return label_accuracy(self, texts, labels)
