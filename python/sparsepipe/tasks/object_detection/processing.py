"""Object-detection pre- and post-processing with the semantics of Ultralytics YOLOv5 / YOLOv8.

Pure numpy and Pillow (no torch, torchvision or OpenCV):

* :func:`letterbox` is YOLOv5's ``letterbox(auto=False, scaleup=True)``: keep the aspect ratio,
  ``r = min(new_h / h, new_w / w)``, resize to ``(round(w * r), round(h * r))``, pad centred with
  ``top = round(dh / 2 - 0.1)``, ``bottom = round(dh / 2 + 0.1)`` (left/right likewise) and 114.
* :func:`decode_predictions` reads the two Ultralytics ONNX export layouts (see
  :func:`detect_layout`) into xyxy boxes and class confidences; for YOLOv5 the confidence is
  ``objectness * class score`` as its ``non_max_suppression`` computes it.
* :func:`non_max_suppression` is ``non_max_suppression`` of YOLOv5 / YOLOv8 for one image: keep
  scores ``> conf_threshold``, best class (or every class over the threshold with
  ``multi_label``), optional class filter, the 30000 best candidates, greedy NMS suppressing
  ``IoU > iou_threshold`` (per class unless ``agnostic``), the first ``max_detections`` kept.
* :func:`scale_boxes` is YOLOv5's ``scale_boxes(ratio_pad=(ratio, pad))`` then ``clip_boxes``.

Differences from Ultralytics, all small:

* Resizing uses Pillow's bilinear filter, not ``cv2.INTER_LINEAR``. Upscaled pixels differ by at
  most 1 grey level; when shrinking, Pillow widens the filter to the scale (anti-aliasing) where
  OpenCV samples only the 2x2 nearest pixels, so downscaled images are smoother and scores move
  by a few hundredths, boxes by a few pixels (yolov3-tiny, cup in a 600x400 photo: 0.60 here,
  0.65 with OpenCV).
* Class-aware NMS only compares boxes of the same class, where Ultralytics shifts each box by
  ``class * 7680`` px and runs one NMS in float32. Both agree for boxes under 7680 px, without
  the float32 rounding of the shifted coordinates.
* Equal scores keep their input order (stable sort); torchvision leaves that order unspecified.
* YOLOv5 first drops rows with ``objectness <= conf_threshold``. With class scores in 0..1 (the
  sigmoid outputs of every export) this cannot change the result, as ``obj * cls <= obj``; it is
  not repeated here.
* Boxes map back with the float padding ``(dw / 2, dh / 2)`` like YOLOv5; Ultralytics YOLOv8
  subtracts the integer offset ``round(dw / 2 - 0.1)`` instead (at most 0.5 input px apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Optional, Union

import numpy as np
from PIL import Image

from ...errors import ConfigError, InputError, ModelLoadError

__all__ = [
    "DEFAULT_PAD_VALUE",
    "LAYOUTS",
    "MAX_NMS",
    "YOLOV5",
    "YOLOV8",
    "LetterboxInfo",
    "clip_boxes",
    "decode_predictions",
    "detect_layout",
    "letterbox",
    "non_max_suppression",
    "postprocess_detections",
    "scale_boxes",
    "to_model_input",
]

YOLOV5 = "yolov5"
"""Layout ``[batch, boxes, 5 + classes]``: cx, cy, w, h, objectness, class scores."""

YOLOV8 = "yolov8"
"""Layout ``[batch, 4 + classes, boxes]``: cx, cy, w, h, class scores (no objectness)."""

LAYOUTS = (YOLOV5, YOLOV8)
"""Output layouts :func:`decode_predictions` reads."""

DEFAULT_PAD_VALUE = 114
"""Grey level YOLOv5 / YOLOv8 letterboxing pads with."""

MAX_NMS = 30000
"""At most this many candidates (the best scores) enter NMS, as in Ultralytics."""

_LAYOUT_HELP = (
    "supported detection outputs are the YOLOv5 layout [batch, boxes, 5 + classes] "
    "(cx, cy, w, h, objectness, class scores) and the YOLOv8 layout [batch, 4 + classes, boxes] "
    "(cx, cy, w, h, class scores)"
)

_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
}


@dataclass(frozen=True)
class LetterboxInfo:
    """How :func:`letterbox` mapped one original image into the model input."""

    ratio: float
    """Scale applied to the original image (input px per original px)."""
    pad: tuple[float, float]
    """Padding (left, top) as YOLOv5 reports it: ``(dw / 2, dh / 2)``, possibly half-integers."""
    original_size: tuple[int, int]
    """(height, width) of the original image."""
    input_size: tuple[int, int]
    """(height, width) of the letterboxed model input."""


def _check_size(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, Integral) and not isinstance(value, bool):
        value = (value, value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be (height, width), got {value!r}") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
            raise ConfigError(
                f"{name} must be two positive integers (height, width), got {value!r}"
            )
    return int(h), int(w)


def _check_color(color: Any) -> tuple[int, int, int]:
    values = (color,) * 3 if isinstance(color, Integral) else color
    try:
        rgb = tuple(values)
    except TypeError:
        rgb = ()
    if len(rgb) != 3 or any(
        isinstance(v, bool) or not isinstance(v, Integral) or not 0 <= v <= 255 for v in rgb
    ):
        raise ConfigError(f"color must be an int or 3 ints in 0..255, got {color!r}")
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def letterbox(
    image: Image.Image,
    new_shape: Union[int, tuple[int, int]],
    color: Union[int, tuple[int, int, int]] = (DEFAULT_PAD_VALUE,) * 3,
) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize `image` into `new_shape` keeping its aspect ratio and pad it centred with `color`.

    `new_shape` is (height, width) or one side. Scales up as well as down. Returns the HWC uint8
    RGB model input and its :class:`LetterboxInfo`.
    """
    new_h, new_w = _check_size("new_shape", new_shape)
    fill = _check_color(color)
    if not isinstance(image, Image.Image):
        raise InputError(f"letterbox takes a PIL image, got {type(image).__name__}")
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    if w < 1 or h < 1:
        raise InputError(f"image is empty ({w}x{h})")
    r = min(new_h / h, new_w / w)
    unpad_w, unpad_h = max(1, round(w * r)), max(1, round(h * r))
    dw, dh = (new_w - unpad_w) / 2, (new_h - unpad_h) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    if (unpad_w, unpad_h) != (w, h):
        image = image.resize((unpad_w, unpad_h), _BILINEAR)
    canvas = np.empty((new_h, new_w, 3), dtype=np.uint8)
    canvas[...] = fill
    canvas[top : top + unpad_h, left : left + unpad_w] = np.asarray(image, dtype=np.uint8)
    info = LetterboxInfo(
        ratio=float(r),
        pad=(float(dw), float(dh)),
        original_size=(int(h), int(w)),
        input_size=(new_h, new_w),
    )
    return canvas, info


def _image_dtype(dtype: Any) -> np.dtype:
    if isinstance(dtype, str) and dtype in _ORT_DTYPES:
        dtype = _ORT_DTYPES[dtype]
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or not (resolved == np.uint8 or resolved.kind == "f"):
        raise ModelLoadError(
            f"unsupported image input type {dtype!r}: detection models must take float "
            "(RGB 0..1) or uint8 (RGB 0..255) images"
        )
    return resolved


def to_model_input(letterboxed: Sequence[np.ndarray], dtype: Any) -> np.ndarray:
    """Stack HWC uint8 RGB images into ``[N, 3, H, W]``: float `dtype` scaled to 0..1, uint8 as is.

    `dtype` is a numpy dtype or an onnxruntime type string such as ``"tensor(float)"``.
    """
    target = _image_dtype(dtype)
    images = list(letterboxed)
    if not images:
        raise InputError("no images to stack")
    first = images[0]
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3:
            raise InputError(f"image {i} is not an HWC uint8 array")
        if im.shape[2] != 3 or im.shape != first.shape:
            raise InputError(
                f"image {i} has shape {list(im.shape)}; all images must be "
                f"{[*first.shape[:2], 3]} (H, W, 3)"
            )
    batch = np.stack(images).transpose(0, 3, 1, 2)
    if target == np.uint8:
        return np.ascontiguousarray(batch)
    out = batch.astype(target)
    out /= target.type(255)
    return out


def _dim(value: Any) -> Optional[int]:
    """A fixed dimension as int, None when symbolic, -1 when not positive."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        return None
    return int(value) if value >= 1 else -1


def detect_layout(
    output_shape: Sequence[Union[int, str, None]], num_classes: Optional[int] = None
) -> str:
    """Return ``"yolov5"`` or ``"yolov8"`` for a detection output shape, else raise ModelLoadError.

    The feature dimension is the small one (or the only fixed one when the box count is
    symbolic); a known `num_classes` must give ``5 + C`` (v5, last) or ``4 + C`` (v8, middle).
    """
    shape = list(output_shape)
    desc = "[" + ", ".join(repr(d) if isinstance(d, str) else str(d) for d in shape) + "]"

    def fail(reason: str) -> ModelLoadError:
        return ModelLoadError(
            f"cannot read detection output of shape {desc}: {reason}; {_LAYOUT_HELP}"
        )

    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, Integral) or num_classes < 1
    ):
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if len(shape) != 3:
        raise fail(f"expected 3 dimensions, got {len(shape)}")
    mid, last = _dim(shape[1]), _dim(shape[2])
    if mid == -1 or last == -1:
        raise fail("dimensions must be positive")
    if mid is None and last is None:
        raise fail("both the box and the feature dimensions are unknown")
    if num_classes is not None:
        v5 = last == 5 + num_classes
        v8 = mid == 4 + num_classes
        if v5 and v8:
            raise fail(f"ambiguous for {num_classes} classes")
        if not (v5 or v8):
            raise fail(
                f"the model has {num_classes} class names, so expected {5 + num_classes} "
                f"features last (YOLOv5) or {4 + num_classes} features in the middle (YOLOv8)"
            )
        return YOLOV5 if v5 else YOLOV8
    if mid is None or last is None:
        v5 = mid is None and last >= 6
        v8 = last is None and mid >= 5
    else:
        v5 = 6 <= last < mid
        v8 = 5 <= mid < last
    if v5 == v8:
        raise fail("cannot tell which dimension holds the boxes")
    return YOLOV5 if v5 else YOLOV8


def _check_layout(layout: Any) -> str:
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown detection layout {layout!r}; expected one of {list(LAYOUTS)}")
    return layout


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    half = xywh[..., 2:4] / 2
    return np.concatenate((xywh[..., 0:2] - half, xywh[..., 0:2] + half), axis=-1)


def decode_predictions(output: np.ndarray, layout: str) -> np.ndarray:
    """Return ``[B, N, 4 + C]`` float32 candidates: xyxy boxes, then per-class confidences.

    YOLOv5 confidences are ``objectness * class score``; YOLOv8 ones are the class scores.
    """
    _check_layout(layout)
    out = np.asarray(output)
    if out.ndim != 3 or out.dtype.kind not in "fiu":
        raise InputError(
            f"detection output must be a 3-D numeric array, got {out.dtype} {list(out.shape)}"
        )
    out = out.astype(np.float32, copy=False)
    if layout == YOLOV5:
        if out.shape[2] < 6:
            raise InputError(f"YOLOv5 output needs >= 6 features last, got {list(out.shape)}")
        scores = out[..., 5:] * out[..., 4:5]
    else:
        if out.shape[1] < 5:
            raise InputError(f"YOLOv8 output needs >= 5 features in the middle, got {out.shape}")
        out = out.transpose(0, 2, 1)
        scores = out[..., 4:]
    return np.concatenate((_xywh_to_xyxy(out[..., :4]), scores), axis=-1).astype(
        np.float32, copy=False
    )


def _check_nms_options(
    conf_threshold: Any,
    iou_threshold: Any,
    max_detections: Any,
    classes: Any,
) -> Optional[np.ndarray]:
    for name, value in (("conf_threshold", conf_threshold), ("iou_threshold", iou_threshold)):
        if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
            raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    if isinstance(max_detections, bool) or not isinstance(max_detections, Integral):
        raise ConfigError(f"max_detections must be an integer, got {max_detections!r}")
    if max_detections < 1:
        raise ConfigError(f"max_detections must be >= 1, got {max_detections}")
    if classes is None:
        return None
    wanted = [classes] if isinstance(classes, Integral) else classes
    try:
        wanted = list(wanted)
    except TypeError:
        wanted = None
    if wanted is None or any(isinstance(c, bool) or not isinstance(c, Integral) for c in wanted):
        raise ConfigError(f"classes must be a sequence of class indices, got {classes!r}")
    return np.asarray(wanted, dtype=np.int64)


def _greedy_nms(
    boxes: np.ndarray, labels: Optional[np.ndarray], iou_threshold: float, limit: int
) -> np.ndarray:
    """Indices kept by greedy NMS of `boxes` (already sorted best first), at most `limit`."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    keep: list[int] = []
    todo = np.arange(len(boxes))
    while todo.size and len(keep) < limit:
        i = int(todo[0])
        keep.append(i)
        rest = todo[1:]
        inter_w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        inter_h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.maximum(inter_w, 0.0) * np.maximum(inter_h, 0.0)
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        suppressed = iou > iou_threshold
        if labels is not None:
            suppressed &= labels[rest] == labels[i]
        todo = rest[~suppressed]
    return np.asarray(keep, dtype=np.int64)


def non_max_suppression(
    pred: np.ndarray,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_detections: int = 300,
    agnostic: bool = False,
    multi_label: bool = False,
    classes: Optional[Sequence[int]] = None,
) -> np.ndarray:
    """Filter one image's ``[N, 4 + C]`` candidates into ``[K, 6]`` float32 detections.

    Rows are (x1, y1, x2, y2, score, class), best score first; float32 scores must exceed
    `conf_threshold` (compared in float32, as torch does), and NMS drops boxes whose IoU with a
    better kept box of the same class (any class if `agnostic`) exceeds `iou_threshold`.
    """
    wanted = _check_nms_options(conf_threshold, iou_threshold, max_detections, classes)
    x = np.asarray(pred)
    if x.ndim != 2 or x.shape[1] < 5 or x.dtype.kind not in "fiu":
        raise InputError(
            f"candidates must be a numeric [N, 4 + classes] array, got {x.dtype} {list(x.shape)}"
        )
    x = x.astype(np.float32, copy=False)
    boxes, scores = x[:, :4], x[:, 4:]
    conf_threshold = np.float32(conf_threshold)
    if multi_label:
        rows, cls = np.nonzero(scores > conf_threshold)
        conf = scores[rows, cls]
    else:
        cls = np.argmax(scores, axis=1) if len(x) else np.zeros(0, dtype=np.int64)
        conf = scores[np.arange(len(x)), cls]
        rows = np.nonzero(conf > conf_threshold)[0]
        cls, conf = cls[rows], conf[rows]
    if wanted is not None:
        mask = np.isin(cls, wanted)
        rows, cls, conf = rows[mask], cls[mask], conf[mask]
    order = np.argsort(-conf, kind="stable")[:MAX_NMS]
    rows, cls, conf = rows[order], cls[order], conf[order]
    keep = _greedy_nms(
        boxes[rows].astype(np.float64),
        None if agnostic else cls,
        float(iou_threshold),
        int(max_detections),
    )
    det = np.empty((len(keep), 6), dtype=np.float32)
    det[:, :4] = boxes[rows[keep]]
    det[:, 4] = conf[keep]
    det[:, 5] = cls[keep]
    return det


def clip_boxes(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Return xyxy `boxes` (``[..., 4]``) clipped to x in [0, width], y in [0, height] of `size`."""
    out = np.array(boxes, dtype=np.float64)
    if out.ndim < 1 or out.shape[-1] != 4:
        raise InputError(f"boxes must have shape [..., 4], got {list(out.shape)}")
    h, w = size
    out[..., [0, 2]] = out[..., [0, 2]].clip(0, w)
    out[..., [1, 3]] = out[..., [1, 3]].clip(0, h)
    return out.astype(np.float32)


def scale_boxes(boxes: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map xyxy `boxes` (``[..., 4]``) from model-input to original-image px, clipped to it."""
    out = np.array(boxes, dtype=np.float64)
    if out.ndim < 1 or out.shape[-1] != 4:
        raise InputError(f"boxes must have shape [..., 4], got {list(out.shape)}")
    out[..., [0, 2]] -= info.pad[0]
    out[..., [1, 3]] -= info.pad[1]
    out /= info.ratio
    return clip_boxes(out, info.original_size)


def postprocess_detections(
    output: np.ndarray,
    layout: str,
    infos: Sequence[LetterboxInfo],
    *,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_detections: int = 300,
    agnostic: bool = False,
    multi_label: bool = False,
    classes: Optional[Sequence[int]] = None,
) -> list[np.ndarray]:
    """Decode a batch output, run NMS per image and map boxes back: one ``[K, 6]`` per image.

    Rows are (x1, y1, x2, y2, score, class) in original-image pixels, best score first.
    """
    _check_nms_options(conf_threshold, iou_threshold, max_detections, classes)
    candidates = decode_predictions(output, layout)
    infos = list(infos)
    if len(infos) != len(candidates):
        raise InputError(f"{len(infos)} letterbox infos for a batch of {len(candidates)} outputs")
    results = []
    for pred, info in zip(candidates, infos):
        if not isinstance(info, LetterboxInfo):
            raise InputError(f"expected LetterboxInfo, got {type(info).__name__}")
        det = non_max_suppression(
            pred,
            conf_threshold=conf_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            agnostic=agnostic,
            multi_label=multi_label,
            classes=classes,
        )
        det[:, :4] = scale_boxes(det[:, :4], info)
        results.append(det)
    return results
