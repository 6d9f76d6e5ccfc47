"""object-detection: YOLOv5/YOLOv8 layouts, letterbox, NMS, drawing boxes, schemas and pipeline."""

from .pipeline import ObjectDetectionPipeline
from .schemas import ObjectDetectionInput, ObjectDetectionOptions, ObjectDetectionOutput

__all__ = [
    "ObjectDetectionInput",
    "ObjectDetectionOptions",
    "ObjectDetectionOutput",
    "ObjectDetectionPipeline",
]
