"""Input, output and option schemas of the object-detection task."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ObjectDetectionInput", "ObjectDetectionOptions", "ObjectDetectionOutput"]


class ObjectDetectionInput(BaseModel):
    """Images: paths, encoded bytes, PIL images, HWC uint8 RGB arrays, or a list of them."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    images: Any = Field(description="an image or a list of images")


class ObjectDetectionOptions(BaseModel):
    """Post-processing options (given at create time or per call)."""

    model_config = ConfigDict(extra="forbid")

    conf_threshold: float = Field(default=0.25, ge=0.0, le=1.0, description="minimum score")
    iou_threshold: float = Field(default=0.45, ge=0.0, le=1.0, description="NMS overlap")
    max_detections: int = Field(default=300, ge=1, description="boxes kept per image")
    agnostic_nms: bool = Field(default=False, description="NMS across classes")
    multi_label: bool = Field(default=False, description="a box may carry several classes")
    classes: Optional[list[int]] = Field(default=None, description="keep only these class ids")


class ObjectDetectionOutput(BaseModel):
    """Per image: boxes ``[x1, y1, x2, y2]`` in original pixels, scores and labels, best first."""

    boxes: list[list[list[float]]]
    scores: list[list[float]]
    labels: list[list[str]]
