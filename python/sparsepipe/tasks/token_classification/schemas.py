"""Input, output and option schemas of the token-classification task."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

__all__ = [
    "TokenClassificationInput",
    "TokenClassificationOptions",
    "TokenClassificationOutput",
    "TokenClassificationResult",
]


class TokenClassificationInput(BaseModel):
    """One text or a list of texts to tag."""

    model_config = ConfigDict(extra="forbid")

    inputs: Union[StrictStr, list[StrictStr]] = Field(description="a string or a list of strings")


class TokenClassificationOptions(BaseModel):
    """Options of token-classification (given at create time or per call)."""

    model_config = ConfigDict(extra="forbid")

    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] = Field(
        default="none",
        description="how tokens are grouped into entities, exactly as Hugging Face's pipeline",
    )
    ignore_labels: list[StrictStr] = Field(
        default_factory=lambda: ["O"], description="labels (or groups) left out of the output"
    )
    stride: Optional[int] = Field(
        default=None,
        ge=0,
        description="tokens shared by consecutive windows of a text longer than the sequence "
        "length; None = a quarter of the sequence length (at most 128)",
    )

    merge_adjacent: bool = Field(
        default=False,
        description="after aggregation, join same-group entities that touch in the text (nothing "
        "or only characters of .@-_/+:#?=&%~ between) into one entity: start of the first, end "
        "of the last, word = the text slice, score = the mean of the merged scores (not in "
        "Hugging Face; needs an aggregation_strategy other than 'none')",
    )

    @field_validator("aggregation_strategy", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _merge_needs_groups(self) -> TokenClassificationOptions:
        if self.merge_adjacent and self.aggregation_strategy == "none":
            raise ValueError(
                "merge_adjacent=True joins grouped entities, so it needs an aggregation_strategy "
                "other than 'none'; pass aggregation_strategy='first' (or 'simple', 'average', "
                "'max'), or merge_adjacent=False"
            )
        return self


class TokenClassificationResult(BaseModel):
    """One entity: label (or group), score, word and character span; token index when ungrouped."""

    entity: str
    score: float
    word: str
    start: Optional[int]
    end: Optional[int]
    index: Optional[int] = None
    #: whether this entity groups tokens (an aggregation strategy other than "none"), as
    #: DeepSparse's results say
    is_grouped: bool = False


class TokenClassificationOutput(BaseModel):
    """Per input text, its entities in text order."""

    predictions: list[list[TokenClassificationResult]]
