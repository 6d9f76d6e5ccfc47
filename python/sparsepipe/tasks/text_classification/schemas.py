"""Input, output and option schemas of the text-classification task."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

__all__ = ["TextClassificationInput", "TextClassificationOptions", "TextClassificationOutput"]


#: ``[text]`` or ``[text, text_pair]`` (the bounds are checked by the validator below, with a
#: message saying what a pair is; the JSON schema states them for HTTP clients)
_Pair = Annotated[list[StrictStr], Field(json_schema_extra={"minItems": 1, "maxItems": 2})]


class TextClassificationInput(BaseModel):
    """One text, a list of texts, or texts paired as ``[text, text_pair]`` lists."""

    model_config = ConfigDict(extra="forbid")

    sequences: Union[StrictStr, list[Union[StrictStr, _Pair]]] = Field(
        description="a string, or a list of strings, [text] lists (one text each, as DeepSparse "
        "reads them) or [text, text_pair] pairs"
    )

    @field_validator("sequences")
    @classmethod
    def _pairs_have_two(cls, v):
        if isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, list) and len(item) not in (1, 2):
                    raise ValueError(
                        f"item {i} is a list of {len(item)} strings; a text pair is "
                        "[text, text_pair] (exactly 2), a single text [text] or a string"
                    )
        return v


class TextClassificationOptions(BaseModel):
    """Options of text-classification (given at create time or per call)."""

    model_config = ConfigDict(extra="forbid")

    top_k: Optional[int] = Field(
        default=1, ge=1, description="labels per sequence; None returns every label"
    )
    function_to_apply: Optional[Literal["default", "softmax", "sigmoid", "none"]] = Field(
        default=None,
        description="score function; None/'default' = sigmoid for one label or multi-label "
        "models, softmax otherwise (as Hugging Face)",
    )

    @field_validator("function_to_apply", mode="before")
    @classmethod
    def _lower_function(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class TextClassificationOutput(BaseModel):
    """Per sequence: a label and score, or lists sorted by score when ``top_k != 1``."""

    labels: list[Union[str, list[str]]]
    scores: list[Union[float, list[float]]]
