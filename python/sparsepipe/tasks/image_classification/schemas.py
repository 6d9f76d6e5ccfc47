"""Input, output and option schemas of the image-classification task."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._images import IMAGES_JSON_SCHEMA

__all__ = [
    "ImageClassificationInput",
    "ImageClassificationOptions",
    "ImageClassificationOutput",
]


class ImageClassificationInput(BaseModel):
    """Images: paths, encoded bytes, PIL images, HWC uint8 RGB arrays, or a list of them."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    images: Any = Field(
        description="an image or a list of images; over JSON, each a data:image/...;base64, URL "
        "or a file path under the server's image_dirs",
        json_schema_extra=IMAGES_JSON_SCHEMA,
    )


class ImageClassificationOptions(BaseModel):
    """Options of image-classification (given at create time or per call)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(default=1, ge=1, description="labels per image")
    function_to_apply: Optional[Literal["default", "softmax", "sigmoid", "none"]] = Field(
        default=None,
        description="score function; None/'default' = softmax, or none when the model already "
        "outputs probabilities (non-negative rows summing to 1)",
    )

    @field_validator("function_to_apply", mode="before")
    @classmethod
    def _lower_function(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class ImageClassificationOutput(BaseModel):
    """The ``top_k`` labels and scores, best first: flat for one image given alone, one list per
    image for a list of images (also at ``top_k=1``)."""

    labels: list[Union[str, list[str]]]
    scores: list[Union[float, list[float]]]
