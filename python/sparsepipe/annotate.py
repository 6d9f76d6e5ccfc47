"""`annotate`: draw detections on an image (defined with the object-detection task)."""

from .tasks.object_detection.annotate import PALETTE, annotate

__all__ = ["PALETTE", "annotate"]
