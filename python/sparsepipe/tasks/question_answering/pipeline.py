"""The extractive question-answering pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Optional

import numpy as np

from ...errors import ConfigError, InputError
from ...pipeline import BatchFields, EngineInputs, Pipeline
from .. import _examples
from .._text import TextPipeline, check_encodable
from .processing import encode_qa, qa_answers
from .schemas import (
    QuestionAnsweringAnswer,
    QuestionAnsweringInput,
    QuestionAnsweringOptions,
    QuestionAnsweringOutput,
)

__all__ = ["QuestionAnsweringPipeline"]


@Pipeline.register("question-answering", task_aliases=("qa",))
class QuestionAnsweringPipeline(TextPipeline):
    """Answers spans of a context with Hugging Face's algorithm (overlapping windows, p(s)·p(e)).

    There is no embedded default model: pass ``model_path`` (a directory with model.onnx with
    start_logits/end_logits outputs, config.json and tokenizer.json).
    """

    input_schema = QuestionAnsweringInput
    output_schema = QuestionAnsweringOutput
    options_schema = QuestionAnsweringOptions
    option_aliases: ClassVar[Mapping[str, str]] = {
        "max_answer_length": "max_answer_len",
        "max_question_length": "max_question_len",
        "n_best_size": "top_k",
        "version_2_with_negative": "handle_impossible_answer",
    }
    batch_fields = BatchFields(
        ("question", "context"),
        ("answer", "score", "start", "end", "answers"),
        unwrap_single=True,
    )

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("model_path") is None:
            raise ConfigError(
                "question-answering has no embedded default model (none with a usable license "
                "ships with sparsepipe); pass one: Pipeline.create('question-answering', "
                "model_path='path/to/model-dir') where the directory holds model.onnx, "
                "config.json and tokenizer.json, or an hf:<org>/<name> in the local cache"
            )
        super().__init__(**kwargs)
        names = self.engine.output_names
        self._start = names.index("start_logits") if "start_logits" in names else 0
        self._end = names.index("end_logits") if "end_logits" in names else 1
        if len(names) < 2:
            raise ConfigError(
                f"{self.onnx_file_path}: a question-answering model needs start and end logits "
                f"outputs; this one has {names}"
            )
        from tokenizers import Tokenizer

        self._qa_tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
        cls = self.tokenizer_config.get("cls_token")
        if isinstance(cls, dict):
            cls = cls.get("content")
        self._cls = cls if isinstance(cls, str) else "auto"
        self._lengths(self.options)

    def _lengths(self, opts: QuestionAnsweringOptions) -> tuple[int, int]:
        max_seq_len = opts.max_seq_len
        if max_seq_len is None:
            max_seq_len = min(384, self.truncation_length)
        elif max_seq_len > self.truncation_length:
            raise ConfigError(
                f"max_seq_len {max_seq_len} is longer than the model's sequence length "
                f"{self.truncation_length}"
            )
        doc_stride = opts.doc_stride
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        if doc_stride > max_seq_len:
            raise ConfigError(
                f"doc_stride ({doc_stride}) must not be larger than max_seq_len ({max_seq_len})"
            )
        return max_seq_len, doc_stride

    def example_inputs(self, batch_size: int, tokens: Optional[int] = None) -> tuple[dict, str]:
        """One generated question with a context each, about 128 tokens together by default."""
        tokens = tokens or 128
        question = _examples.QUESTION
        contexts = _examples.sentences(
            batch_size,
            tokens,
            lambda context: len(self.tokenizer.encode(question, context).ids),
            reserved=3 + len(question.split()) + 2,
        )
        data = {
            "question": question if batch_size == 1 else [question] * batch_size,
            "context": contexts[0] if batch_size == 1 else contexts,
        }
        described = f"{batch_size} synthetic question(s) with a context, about {tokens} tokens each"
        return data, described

    def process_inputs(self, inputs: QuestionAnsweringInput) -> EngineInputs:
        """Windows of every (question, context) pair as rows; the context maps them back."""
        single = isinstance(inputs.question, str)
        questions = [inputs.question] if single else list(inputs.question)
        contexts = [inputs.context] if single else list(inputs.context)
        check_encodable(questions, "question")
        check_encodable(contexts, "context")
        try:
            max_seq_len, doc_stride = self._lengths(self.options)
        except ConfigError as e:
            raise InputError(str(e)) from e
        try:
            windows = encode_qa(
                self._qa_tokenizer,
                questions,
                contexts,
                max_seq_len=max_seq_len,
                doc_stride=doc_stride,
                cls_token=self._cls,
            )
        except (ValueError, TypeError) as e:
            raise InputError(str(e)) from e
        rows = [w.encoding for w in windows]
        return EngineInputs(rows, {"single": single, "contexts": contexts, "windows": windows})

    def process_engine_outputs(
        self,
        engine_outputs: Any,
        *,
        single: bool,
        contexts: list[str],
        windows: list[Any],
        **kwargs: Any,
    ) -> QuestionAnsweringOutput:
        """The top_k answers of each pair from its windows' start/end logits."""
        opts = self.options
        per_example: list[list[int]] = [[] for _ in contexts]
        for row, w in enumerate(windows):
            per_example[w.example].append(row)
        results = []
        for i, context in enumerate(contexts):
            rows = per_example[i]
            ws = [windows[r] for r in rows]
            starts = [
                np.asarray(engine_outputs[r][self._start], np.float32).reshape(-1)[
                    : len(w.encoding)
                ]
                for r, w in zip(rows, ws)
            ]
            ends = [
                np.asarray(engine_outputs[r][self._end], np.float32).reshape(-1)[: len(w.encoding)]
                for r, w in zip(rows, ws)
            ]
            answers = qa_answers(
                context,
                ws,
                starts,
                ends,
                top_k=opts.top_k,
                handle_impossible_answer=opts.handle_impossible_answer,
                max_answer_len=opts.max_answer_len,
                align_to_words=opts.align_to_words,
            )
            if not answers:
                answers = [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
            results.append([QuestionAnsweringAnswer(**a) for a in answers])
        if single:
            best = results[0][0]
            return QuestionAnsweringOutput(
                answer=best.answer,
                score=best.score,
                start=best.start,
                end=best.end,
                answers=results[0],
            )
        return QuestionAnsweringOutput(
            answer=[r[0].answer for r in results],
            score=[r[0].score for r in results],
            start=[r[0].start for r in results],
            end=[r[0].end for r in results],
            answers=results,
        )
