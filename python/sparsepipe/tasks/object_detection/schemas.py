"""Input, output and option schemas of the object-detection task."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple, Optional

from pydantic import BaseModel, ConfigDict, Field

from .._images import IMAGES_JSON_SCHEMA

__all__ = [
    "ImageDetections",
    "ObjectDetectionInput",
    "ObjectDetectionOptions",
    "ObjectDetectionOutput",
]


class ObjectDetectionInput(BaseModel):
    """Images: paths, encoded bytes, PIL images, HWC uint8 RGB arrays, or a list of them."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    images: Any = Field(
        description="an image or a list of images; over JSON, each a data:image/...;base64, URL "
        "or a file path under the server's image_dirs",
        json_schema_extra=IMAGES_JSON_SCHEMA,
    )


class ObjectDetectionOptions(BaseModel):
    """Post-processing options (given at create time or per call)."""

    model_config = ConfigDict(extra="forbid")

    conf_threshold: float = Field(default=0.25, ge=0.0, le=1.0, description="minimum score")
    iou_threshold: float = Field(default=0.45, ge=0.0, le=1.0, description="NMS overlap")
    max_detections: int = Field(default=300, ge=1, description="boxes kept per image")
    agnostic_nms: bool = Field(default=False, description="NMS across classes")
    multi_label: bool = Field(default=False, description="a box may carry several classes")
    classes: Optional[list[int]] = Field(default=None, description="keep only these class ids")


class ImageDetections(NamedTuple):
    """One image's detections: boxes ``[x1, y1, x2, y2]``, scores and labels, best first."""

    boxes: list[list[float]]
    scores: list[float]
    labels: list[str]


class ObjectDetectionOutput(BaseModel):
    """Per image: boxes ``[x1, y1, x2, y2]`` in original pixels, scores and labels, best first.

    As in DeepSparse, it also reads per image: ``for boxes, scores, labels in out`` and
    ``out[i].labels`` (an `ImageDetections`); ``len(out)`` is the number of images.
    """

    boxes: list[list[list[float]]]
    scores: list[list[float]]
    labels: list[list[str]]

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int) -> ImageDetections:
        """The detections of image ``index``."""
        return ImageDetections(self.boxes[index], self.scores[index], self.labels[index])

    def __iter__(self) -> Iterator[ImageDetections]:  # type: ignore[override]
        """Each image's detections, in input order."""
        for i in range(len(self.boxes)):
            yield self[i]
