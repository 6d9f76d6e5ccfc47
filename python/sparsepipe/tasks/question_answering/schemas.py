"""Input, output and option schemas of the question-answering task."""

from __future__ import annotations

from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

__all__ = [
    "QuestionAnsweringAnswer",
    "QuestionAnsweringInput",
    "QuestionAnsweringOptions",
    "QuestionAnsweringOutput",
]


#: a non-empty text (the validator below says which one is empty; the schema states it for HTTP)
_Text = Annotated[StrictStr, Field(json_schema_extra={"minLength": 1})]

#: both strings or both lists: the JSON schema's form of the first rule `_paired` checks (the
#: equal lengths of the lists are stated in the description, JSON Schema cannot express them)
_PAIRED_FORMS = {
    "oneOf": [
        {"properties": {"question": {"type": "string"}, "context": {"type": "string"}}},
        {"properties": {"question": {"type": "array"}, "context": {"type": "array"}}},
    ]
}


class QuestionAnsweringInput(BaseModel):
    """A question and the context to find its answer in (or equal-length lists of both)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_PAIRED_FORMS)

    question: Union[_Text, list[_Text]] = Field(
        description="a question, or a list of questions as long as the list of contexts"
    )
    context: Union[_Text, list[_Text]] = Field(
        description="the text to find the answer in, or a list of them (one per question)"
    )

    @model_validator(mode="after")
    def _paired(self) -> QuestionAnsweringInput:
        q, c = self.question, self.context
        if isinstance(q, str) != isinstance(c, str):
            raise ValueError("question and context must both be strings or both be lists")
        qs = [q] if isinstance(q, str) else q
        cs = [c] if isinstance(c, str) else c
        if len(qs) != len(cs):
            raise ValueError(
                f"question and context lists must have the same length, got {len(qs)} and {len(cs)}"
            )
        for name, items in (("question", qs), ("context", cs)):
            for i, text in enumerate(items):
                if not text:
                    where = "" if isinstance(q, str) else f" (item {i})"
                    raise ValueError(f"`{name}` cannot be empty{where}, as in Hugging Face")
        return self


class QuestionAnsweringOptions(BaseModel):
    """Options of question-answering, as Hugging Face's pipeline (create time or per call)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(default=1, ge=1, description="answers returned per question")
    doc_stride: Optional[int] = Field(
        default=None,
        ge=0,
        description="tokens shared by overlapping context windows; None = min(128, max_seq_len/2)",
    )
    max_answer_len: int = Field(default=15, ge=1, description="longest answer, in tokens")
    max_seq_len: Optional[int] = Field(
        default=None, ge=8, description="window length in tokens; None = min(384, model maximum)"
    )
    max_question_len: int = Field(
        default=64, ge=1, description="accepted for compatibility; unused, as in HF's fast path"
    )
    handle_impossible_answer: bool = Field(
        default=False, description="allow the empty answer when it beats every span"
    )
    align_to_words: bool = Field(default=True, description="widen answers to whole words")


class QuestionAnsweringAnswer(BaseModel):
    """One answer: its text, score (p(start)*p(end)) and character span in the context."""

    answer: str
    score: float
    start: int
    end: int


class QuestionAnsweringOutput(BaseModel):
    """The best answer's fields (lists for a batch) and the ``top_k`` answers in ``answers``."""

    answer: Union[str, list[str]]
    score: Union[float, list[float]]
    start: Union[int, list[int]]
    end: Union[int, list[int]]
    answers: Union[list[QuestionAnsweringAnswer], list[list[QuestionAnsweringAnswer]]]
