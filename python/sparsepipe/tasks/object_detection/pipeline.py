"""The object-detection pipeline for YOLOv5- and YOLOv8-layout ONNX models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Optional, Union

import numpy as np
from PIL import Image

from ...errors import ConfigError, InputError, ModelLoadError
from ...pipeline import BatchFields, EngineInputs, Pipeline
from .._examples import example_images
from .._images import load_images
from .._vision import class_names_from, image_size_from_shapes, image_size_option
from .annotate import annotate as draw_detections
from .processing import detect_layout, letterbox, postprocess_detections, to_model_input
from .schemas import ObjectDetectionInput, ObjectDetectionOptions, ObjectDetectionOutput

__all__ = ["ObjectDetectionPipeline"]


@Pipeline.register(
    "object-detection", task_aliases=("yolo",), default_model_path="zoo:yolov3-tiny-coco"
)
class ObjectDetectionPipeline(Pipeline):
    """Boxes, scores and labels per image from a YOLO model (layout read from its output shape).

    Images are letterboxed to the model's input size (aspect ratio kept, padding 114, centred);
    ``image_size`` gives that size when the model's is dynamic (default 640).
    """

    input_schema = ObjectDetectionInput
    output_schema = ObjectDetectionOutput
    options_schema = ObjectDetectionOptions
    fixed_engine_batch = True
    batch_fields = BatchFields(("images",), ("boxes", "scores", "labels"))
    image_field = "images"
    option_aliases: ClassVar[Mapping[str, str]] = {
        "conf_thres": "conf_threshold",
        "iou_thres": "iou_threshold",
    }

    @classmethod
    def input_shapes_options(cls, shapes: list[list[int]]) -> dict[str, Any]:
        """``image_size`` (height, width) from an NCHW ``[batch, 3, H, W]`` shape."""
        return image_size_from_shapes(cls.task, shapes)

    def __init__(
        self,
        *,
        class_names: Any = None,
        image_size: Optional[Union[int, tuple[int, int]]] = None,
        **kwargs: Any,
    ) -> None:
        self._class_names_option = class_names
        self._image_size_option = image_size
        super().__init__(**kwargs)
        self.class_names = class_names_from(self.model.json("config.json"), class_names)
        names = self.engine.input_names
        if len(names) != 1:
            raise ModelLoadError(
                f"{self.onnx_file_path}: an object-detection model takes one image input; "
                f"this one takes {names}"
            )
        shape = self.engine.input_shapes[0]
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise ModelLoadError(
                f"{self.onnx_file_path}: expected an NCHW RGB image input [batch, 3, H, W], "
                f"got {shape}"
            )
        fixed = [d for d in shape[2:] if isinstance(d, int)]
        if len(fixed) == 2:
            self.image_size = (int(shape[2]), int(shape[3]))
            if image_size is not None and image_size_option(image_size) != self.image_size:
                raise ConfigError(
                    f"the model's input size is fixed at {self.image_size}; "
                    "leave image_size unset or give that size"
                )
        else:
            self.image_size = image_size_option(640 if image_size is None else image_size)
        self._dtype = np.dtype(self.engine.input_dtypes[0] or "float32")
        out_shape = self.engine.output_shapes[0]
        num_classes = len(self.class_names) or None
        try:
            self.layout = detect_layout(out_shape, num_classes)
            self._model_classes = _model_classes(out_shape, self.layout)
        except ModelLoadError:
            if num_classes is None:
                raise
            self.layout = detect_layout(out_shape, None)
            where = "class_names" if class_names is not None else "config.json names/id2label"
            raise ConfigError(
                f"{where} has {num_classes} names but the model outputs "
                f"{_model_classes(out_shape, self.layout)} classes "
                f"({self.layout} layout {out_shape}); give one name per class"
            ) from None

    def _config_kwargs(self) -> dict[str, Any]:
        out = super()._config_kwargs()
        if self._class_names_option is not None:
            names = self._class_names_option
            out["class_names"] = names if isinstance(names, (list, dict)) else str(names)
        if self._image_size_option is not None:
            out["image_size"] = self._image_size_option
        return out

    def example_inputs(self, batch_size: int, tokens: Optional[int] = None) -> tuple[dict, str]:
        """The sample images beside a source checkout in turn, else a synthetic image."""
        images, described = example_images(batch_size)
        return {"images": images}, described

    def process_inputs(self, inputs: ObjectDetectionInput) -> EngineInputs:
        """Letterboxed ``[N, 3, H, W]`` images; the context keeps how to map boxes back."""
        n, wanted = self._model_classes, self.options.classes
        if n is not None and wanted:
            bad = [c for c in wanted if not 0 <= c < n]
            if bad:
                raise InputError(
                    f"classes {', '.join(map(str, bad))} are not class ids of this model "
                    f"(0..{n - 1})"
                )
        images = load_images(inputs.images)
        if not images:
            return EngineInputs([np.zeros((0, 3, *self.image_size), self._dtype)], {"infos": []})
        boxed = [letterbox(img, self.image_size) for img in images]
        arrays = to_model_input([b[0] for b in boxed], self._dtype)
        return EngineInputs([arrays], {"infos": [b[1] for b in boxed]})

    def engine_forward(self, engine_inputs: Any) -> list[np.ndarray]:
        """The base batching, skipped for an empty batch."""
        if engine_inputs[0].shape[0] == 0:
            return []
        return super().engine_forward(engine_inputs)

    def _label(self, cls: int) -> str:
        return self.class_names.get(cls, str(cls))

    def process_engine_outputs(
        self, engine_outputs: list[np.ndarray], *, infos: list[Any], **kwargs: Any
    ) -> ObjectDetectionOutput:
        """NMS per image, boxes mapped back to original pixels."""
        if not infos:
            return ObjectDetectionOutput(boxes=[], scores=[], labels=[])
        opts = self.options
        dets = postprocess_detections(
            np.asarray(engine_outputs[0]),
            self.layout,
            infos,
            conf_threshold=opts.conf_threshold,
            iou_threshold=opts.iou_threshold,
            max_detections=opts.max_detections,
            agnostic=opts.agnostic_nms,
            multi_label=opts.multi_label,
            classes=opts.classes,
        )
        return ObjectDetectionOutput(
            boxes=[[[float(v) for v in row[:4]] for row in d] for d in dets],
            scores=[[float(row[4]) for row in d] for d in dets],
            labels=[[self._label(int(row[5])) for row in d] for d in dets],
        )

    def annotate(self, image: Any, output: Optional[ObjectDetectionOutput] = None) -> Any:
        """A copy of `image` with its detections drawn, a box and "label score" caption each;
        `output` is this pipeline's result for `image`, computed when not given."""
        if isinstance(image, (list, tuple)):
            raise InputError("annotate draws on one image; got a list or tuple")
        if hasattr(image, "read") and not isinstance(image, Image.Image):
            image = image.read()  # a binary file is read once, for detecting and drawing
        if output is None:
            output = self(image)
        if len(output.boxes) != 1:
            raise InputError(
                f"annotate draws one image's detections; the output holds {len(output.boxes)} "
                "images (run the pipeline on that one image)"
            )
        one = {"boxes": output.boxes[0], "scores": output.scores[0], "labels": output.labels[0]}
        return draw_detections(image, one)


def _model_classes(out_shape: Any, layout: str) -> Optional[int]:
    """The class count a detection output of ``layout`` holds (None when symbolic)."""
    features = out_shape[2] if layout == "yolov5" else out_shape[1]
    return features - (5 if layout == "yolov5" else 4) if isinstance(features, int) else None
