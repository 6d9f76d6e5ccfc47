"""Object-detection processing (letterbox, layouts, NMS, box rescaling, annotate) vs references.

The references below are written independently in plain Python loops from the Ultralytics
YOLOv5 semantics: letterbox geometry, greedy class-aware NMS on the candidates sorted by score
(ties in input order), keep score > conf and drop IoU > iou, and box mapping ``(xy - pad) / r``
clipped to the image. Real models: yolov3-tiny (YOLOv5 layout, trained) must find the cup in
coffee.png; yolov8n with random weights (YOLOv8 layout) must decode and run NMS.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import pytest
from PIL import Image
from sparsepipe.annotate import annotate
from sparsepipe.errors import ConfigError, InputError, ModelLoadError
from sparsepipe.tasks.object_detection.processing import (
    MAX_NMS,
    LetterboxInfo,
    decode_predictions,
    detect_layout,
    letterbox,
    non_max_suppression,
    postprocess_detections,
    scale_boxes,
    to_model_input,
)

BILINEAR = getattr(Image, "Resampling", Image).BILINEAR

# ----------------------------------------------------------------------------- references


def ref_letterbox_geometry(w: int, h: int, new_h: int, new_w: int) -> dict[str, Any]:
    """Ratio, resized size and integer/float padding of YOLOv5's letterbox (auto=False)."""
    r = min(new_h / h, new_w / w)
    nw, nh = round(w * r), round(h * r)
    dw, dh = (new_w - nw) / 2, (new_h - nh) / 2
    return {
        "r": r,
        "size": (nw, nh),
        "pad": (dw, dh),
        "top": round(dh - 0.1),
        "bottom": round(dh + 0.1),
        "left": round(dw - 0.1),
        "right": round(dw + 0.1),
    }


def ref_iou(a: list[float], b: list[float]) -> float:
    """IoU of two xyxy boxes; zero when the union is empty."""
    area_a = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
    area_b = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def ref_nms(
    pred: np.ndarray,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    agnostic: bool = False,
    multi_label: bool = False,
    classes: Optional[list[int]] = None,
) -> np.ndarray:
    """Plain-loop greedy NMS over (score desc, row, class) ordered candidates.

    Scores are float32, and so is the threshold they are compared with (as in torch).
    """
    conf = float(np.float32(conf))
    cands = []
    for n, row in enumerate(pred.tolist()):
        box, scores = row[:4], row[4:]
        if multi_label:
            picks = [c for c, s in enumerate(scores) if s > conf]
        else:
            best = 0
            for c, s in enumerate(scores):
                if s > scores[best]:
                    best = c
            picks = [best] if scores[best] > conf else []
        for c in picks:
            if classes is None or c in classes:
                cands.append((scores[c], n, c, box))
    cands.sort(key=lambda t: (-t[0], t[1], t[2]))
    cands = cands[:MAX_NMS]
    kept: list[tuple[float, int, int, list[float]]] = []
    for cand in cands:
        if len(kept) == max_det:
            break
        if all(not ((agnostic or k[2] == cand[2]) and ref_iou(k[3], cand[3]) > iou) for k in kept):
            kept.append(cand)
    out = np.zeros((len(kept), 6), dtype=np.float32)
    for i, (s, _, c, box) in enumerate(kept):
        out[i] = [*box, s, c]
    return out


def ref_scale(boxes: np.ndarray, r: float, pad: tuple[float, float], hw: tuple[int, int]):
    """Map xyxy boxes back with (xy - pad) / r, clipped to [0, w] x [0, h]."""
    h, w = hw
    out = []
    for x1, y1, x2, y2 in boxes.tolist():
        row = [(x1 - pad[0]) / r, (y1 - pad[1]) / r, (x2 - pad[0]) / r, (y2 - pad[1]) / r]
        limits = [w, h, w, h]
        out.append([min(max(v, 0.0), lim) for v, lim in zip(row, limits)])
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


def candidates(rows: list[list[float]]) -> np.ndarray:
    """[N, 4 + C] float32 candidate array from rows of box + class scores."""
    return np.asarray(rows, dtype=np.float32)


# ----------------------------------------------------------------------------- letterbox


def _noise_image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize(
    ("w", "h", "new_shape"),
    [
        (600, 400, (416, 416)),  # landscape
        (427, 640, (416, 416)),  # portrait
        (512, 512, (416, 416)),  # square, shrunk
        (100, 60, (320, 320)),  # smaller than the input: scaled up
        (416, 300, (416, 416)),  # exact fit in width: no resize
        (301, 97, (256, 384)),  # odd sizes into a non-square input
        (640, 480, (480, 640)),  # same aspect: no padding
    ],
)
def test_letterbox_matches_reference(w: int, h: int, new_shape: tuple[int, int]) -> None:
    image = _noise_image(w, h, seed=w * h)
    out, info = letterbox(image, new_shape)
    ref = ref_letterbox_geometry(w, h, *new_shape)
    nw, nh = ref["size"]

    assert out.shape == (*new_shape, 3) and out.dtype == np.uint8
    assert info == LetterboxInfo(ref["r"], ref["pad"], (h, w), new_shape)
    assert ref["top"] + nh + ref["bottom"] == new_shape[0]
    assert ref["left"] + nw + ref["right"] == new_shape[1]
    top, left = ref["top"], ref["left"]
    assert (out[:top] == 114).all() and (out[top + nh :] == 114).all()
    assert (out[:, :left] == 114).all() and (out[:, left + nw :] == 114).all()
    expected = (
        np.asarray(image) if (nw, nh) == (w, h) else np.asarray(image.resize((nw, nh), BILINEAR))
    )
    np.testing.assert_array_equal(out[top : top + nh, left : left + nw], expected)


def test_letterbox_pads_half_pixels_like_yolov5() -> None:
    # 600x400 -> 416x277: dh = 139, so 69 rows on top and 70 below, pad reported as 69.5.
    out, info = letterbox(Image.new("RGB", (600, 400), (10, 20, 30)), (416, 416))
    assert info.pad == (0.0, 69.5)
    assert (out[68] == 114).all() and (out[69] == (10, 20, 30)).all()
    assert (out[345] == (10, 20, 30)).all() and (out[346] == 114).all()


def test_letterbox_options_and_errors() -> None:
    out, info = letterbox(Image.new("L", (20, 10), 200), 40, color=0)
    assert out.shape == (40, 40, 3) and info.input_size == (40, 40) and info.ratio == 2.0
    assert (out[:10] == 0).all() and (out[10:30] == 200).all()
    with pytest.raises(ConfigError):
        letterbox(Image.new("RGB", (4, 4)), (0, 10))
    with pytest.raises(ConfigError):
        letterbox(Image.new("RGB", (4, 4)), (10, 10), color=(1, 2))
    with pytest.raises(InputError):
        letterbox(np.zeros((4, 4, 3), np.uint8), (10, 10))  # type: ignore[arg-type]


def test_to_model_input() -> None:
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    b = np.full((2, 3, 3), 255, np.uint8)
    x = to_model_input([a, b], np.float32)
    assert x.shape == (2, 3, 2, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], a.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    assert (x[1] == 1.0).all()
    assert to_model_input([a], "tensor(float)").dtype == np.float32
    u = to_model_input([a, b], "uint8")
    assert u.dtype == np.uint8 and (u[0] == a.transpose(2, 0, 1)).all()
    with pytest.raises(ModelLoadError):
        to_model_input([a], np.int64)
    with pytest.raises(InputError):
        to_model_input([a, np.zeros((3, 3, 3), np.uint8)], np.float32)
    with pytest.raises(InputError):
        to_model_input([], np.float32)


# ----------------------------------------------------------------------------- layouts


def test_detect_layout() -> None:
    assert detect_layout([1, 2535, 85], None) == "yolov5"
    assert detect_layout([1, 84, 2100], None) == "yolov8"
    assert detect_layout(["batch", 2535, 85], 80) == "yolov5"
    assert detect_layout([1, 84, 2100], 80) == "yolov8"
    assert detect_layout(["batch", "anchors", 85], None) == "yolov5"
    assert detect_layout(["batch", 84, "anchors"], 80) == "yolov8"
    assert detect_layout([1, 6, 100], None) == "yolov8"  # 2 classes, v8
    assert detect_layout([1, 100, 6], 1) == "yolov5"  # 1 class, v5
    bad: list[tuple[list[Any], Optional[int]]] = [
        ([1, 85], None),
        ([2535, 85], 80),
        ([1, 1, 2535, 85], None),
        ([1, 10, 10], None),
        (["batch", "n", "c"], None),
        (["batch", "n", "c"], 80),
        ([1, None, None], 80),
        ([1, 2535, 85], 20),  # names disagree with both layouts
        ([1, 84, 85], 80),  # both layouts fit
        ([1, 3, 2535], None),  # too few features for either
        ([1, 0, 85], None),
    ]
    for shape, nc in bad:
        with pytest.raises(ModelLoadError, match=r"YOLOv5 layout .*YOLOv8 layout"):
            detect_layout(shape, nc)


def test_decode_predictions() -> None:
    # one box: cx=10, cy=20, w=4, h=6; objectness 0.5, class scores 0.2 / 0.8
    v5 = np.array([[[10, 20, 4, 6, 0.5, 0.2, 0.8]]], np.float32)
    dec = decode_predictions(v5, "yolov5")
    np.testing.assert_allclose(dec, [[[8, 17, 12, 23, 0.1, 0.4]]], rtol=1e-6)
    v8 = np.array([[[10, 20, 4, 6, 0.2, 0.8]]], np.float32).transpose(0, 2, 1)
    dec = decode_predictions(v8, "yolov8")
    assert dec.shape == (1, 1, 6) and dec.dtype == np.float32
    np.testing.assert_allclose(dec, [[[8, 17, 12, 23, 0.2, 0.8]]], rtol=1e-6)
    with pytest.raises(ConfigError):
        decode_predictions(v5, "yolov7")
    with pytest.raises(InputError):
        decode_predictions(v5[0], "yolov5")
    with pytest.raises(InputError):
        decode_predictions(np.zeros((1, 10, 5), np.float32), "yolov5")


# ----------------------------------------------------------------------------- NMS, hand-checked


def test_nms_same_class_overlap_suppressed() -> None:
    # IoU([0,0,10,10], [1,1,11,11]) = 81 / 119 = 0.68 > 0.45
    pred = candidates([[0, 0, 10, 10, 0.9, 0.0], [1, 1, 11, 11, 0.8, 0.0]])
    det = non_max_suppression(pred)
    np.testing.assert_array_equal(det, candidates([[0, 0, 10, 10, 0.9, 0]]))
    np.testing.assert_array_equal(det, ref_nms(pred))
    assert len(non_max_suppression(pred, iou_threshold=0.7)) == 2


def test_nms_different_classes_kept_unless_agnostic() -> None:
    pred = candidates([[0, 0, 10, 10, 0.9, 0.0], [1, 1, 11, 11, 0.0, 0.8]])
    det = non_max_suppression(pred)
    np.testing.assert_array_equal(det, candidates([[0, 0, 10, 10, 0.9, 0], [1, 1, 11, 11, 0.8, 1]]))
    det = non_max_suppression(pred, agnostic=True)
    np.testing.assert_array_equal(det, candidates([[0, 0, 10, 10, 0.9, 0]]))


def test_nms_iou_edge_is_strict() -> None:
    # IoU([0,0,10,10], [0,0,10,20]) = 100 / 200 = 0.5 exactly: kept at 0.5, suppressed below
    pred = candidates([[0, 0, 10, 10, 0.9], [0, 0, 10, 20, 0.8]])
    assert len(non_max_suppression(pred, iou_threshold=0.5)) == 2
    assert len(non_max_suppression(pred, iou_threshold=0.49)) == 1


def test_nms_conf_threshold_edge_is_strict() -> None:
    pred = candidates([[0, 0, 1, 1, 0.25], [5, 5, 6, 6, 0.5]])
    det = non_max_suppression(pred, conf_threshold=0.25)
    np.testing.assert_array_equal(det[:, 4], [0.5])
    det = non_max_suppression(pred, conf_threshold=0.2499)
    np.testing.assert_array_equal(det[:, 4], [0.5, 0.25])
    assert len(non_max_suppression(pred, conf_threshold=0.5)) == 0
    assert len(non_max_suppression(pred, conf_threshold=0.0)) == 2
    # float32(0.1) is not above the threshold 0.1 taken at float32 precision, as in torch
    pred = candidates([[0, 0, 1, 1, 0.1]])
    assert len(non_max_suppression(pred, conf_threshold=0.1)) == 0
    assert len(ref_nms(pred, conf=0.1)) == 0


def test_nms_zero_detections() -> None:
    for pred in (candidates([[0, 0, 1, 1, 0.1, 0.2]]), np.zeros((0, 85), np.float32)):
        det = non_max_suppression(pred)
        assert det.shape == (0, 6) and det.dtype == np.float32
    info = LetterboxInfo(1.0, (0.0, 0.0), (10, 10), (10, 10))
    out = postprocess_detections(np.zeros((2, 20, 85), np.float32), "yolov5", [info, info])
    assert [d.shape for d in out] == [(0, 6), (0, 6)]
    out = postprocess_detections(np.zeros((1, 84, 20), np.float32), "yolov8", [info])
    assert out[0].shape == (0, 6)


def test_nms_multi_label() -> None:
    pred = candidates([[0, 0, 10, 10, 0.6, 0.5, 0.1], [20, 20, 30, 30, 0.3, 0.1, 0.7]])
    det = non_max_suppression(pred, multi_label=True)
    np.testing.assert_allclose(
        det,
        [
            [20, 20, 30, 30, 0.7, 2],
            [0, 0, 10, 10, 0.6, 0],
            [0, 0, 10, 10, 0.5, 1],
            [20, 20, 30, 30, 0.3, 0],
        ],
        rtol=1e-6,
    )
    np.testing.assert_array_equal(det, ref_nms(pred, multi_label=True))
    assert len(non_max_suppression(pred, multi_label=True, agnostic=True)) == 2
    assert len(non_max_suppression(pred)) == 2


def test_nms_max_detections_and_classes() -> None:
    pred = candidates([[i * 10, 0, i * 10 + 5, 5, 0.5 + i * 0.1] for i in range(5)])
    det = non_max_suppression(pred, max_detections=3)
    np.testing.assert_allclose(det[:, 4], [0.9, 0.8, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(det[:, 0], [40, 30, 20])
    assert len(non_max_suppression(pred, max_detections=1)) == 1
    assert len(non_max_suppression(pred, max_detections=300)) == 5
    pred = candidates([[i * 10, 0, i * 10 + 5, 5, 0.1 * (i % 2), 0.5] for i in range(4)])
    det = non_max_suppression(pred, classes=[0])
    assert len(det) == 0
    det = non_max_suppression(pred, classes=[1])
    assert len(det) == 4 and (det[:, 5] == 1).all()
    assert len(non_max_suppression(pred, classes=[])) == 0


def test_nms_ties_keep_input_order() -> None:
    pred = candidates([[0, 0, 10, 10, 0.5], [1, 1, 11, 11, 0.5], [2, 2, 12, 12, 0.5]])
    det = non_max_suppression(pred)
    np.testing.assert_array_equal(det, candidates([[0, 0, 10, 10, 0.5, 0]]))


def test_nms_candidate_cap() -> None:
    # 30000 duplicates scoring 0.9 fill the cap, so the lone 0.5 box never reaches NMS
    dup = np.tile(candidates([[0, 0, 10, 10, 0.9]]), (MAX_NMS, 1))
    pred = np.concatenate([candidates([[50, 50, 60, 60, 0.5]]), dup])
    det = non_max_suppression(pred)
    np.testing.assert_array_equal(det, candidates([[0, 0, 10, 10, 0.9, 0]]))
    det = non_max_suppression(pred[: MAX_NMS // 2])
    assert len(det) == 2


def test_nms_option_errors() -> None:
    pred = candidates([[0, 0, 1, 1, 0.5]])
    for kwargs in (
        {"conf_threshold": -0.1},
        {"conf_threshold": 1.5},
        {"iou_threshold": 2},
        {"iou_threshold": "0.5"},
        {"max_detections": 0},
        {"max_detections": 2.5},
        {"classes": ["person"]},
    ):
        with pytest.raises(ConfigError):
            non_max_suppression(pred, **kwargs)
        with pytest.raises(ConfigError):
            postprocess_detections(np.zeros((0, 10, 6), np.float32), "yolov5", [], **kwargs)
    with pytest.raises(InputError):
        non_max_suppression(np.zeros((3, 4), np.float32))
    with pytest.raises(InputError):
        non_max_suppression(np.zeros((1, 3, 6), np.float32))
    info = LetterboxInfo(1.0, (0.0, 0.0), (10, 10), (10, 10))
    with pytest.raises(InputError):
        postprocess_detections(np.zeros((2, 10, 6), np.float32), "yolov5", [info])


# ----------------------------------------------------------------------------- box rescaling


def test_scale_boxes_clips_to_image() -> None:
    # 600x400 letterboxed into 416x416: r = 416/600, pad (0, 69.5)
    info = LetterboxInfo(416 / 600, (0.0, 69.5), (400, 600), (416, 416))
    boxes = np.array(
        [[-10, 60, 100, 200], [400, 300, 430, 360], [10, 100, 20, 110]], dtype=np.float32
    )
    out = scale_boxes(boxes, info)
    assert out.dtype == np.float32 and out.shape == (3, 4)
    ref = ref_scale(boxes, info.ratio, info.pad, info.original_size)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    np.testing.assert_allclose(out[0], [0, 0, 100 * 600 / 416, (200 - 69.5) * 600 / 416], 1e-6)
    np.testing.assert_allclose(out[1], [400 * 600 / 416, (300 - 69.5) * 600 / 416, 600, 400], 1e-6)
    assert scale_boxes(np.zeros((0, 4), np.float32), info).shape == (0, 4)
    with pytest.raises(InputError):
        scale_boxes(np.zeros((2, 5)), info)


# ----------------------------------------------------------------------------- randomized


@pytest.mark.parametrize("seed", range(40))
def test_nms_random_vs_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, nc = int(rng.integers(0, 150)), int(rng.integers(1, 6))
    centers = rng.uniform(0, 100, (max(1, n // 8), 2))
    cxy = centers[rng.integers(0, len(centers), n)] + rng.normal(0, 4, (n, 2))
    wh = rng.uniform(2, 30, (n, 2))
    boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], axis=1)
    scores = rng.integers(0, 21, (n, nc)) / 20 if seed % 3 == 0 else rng.uniform(0, 1, (n, nc))
    pred = np.concatenate([boxes, scores], axis=1).astype(np.float32)
    opts = {
        "conf": float(rng.choice([0.0, 0.1, 0.25, 0.5])),
        "iou": float(rng.choice([0.0, 0.3, 0.45, 0.7, 1.0])),
        "max_det": int(rng.choice([1, 5, 300])),
        "agnostic": bool(rng.integers(0, 2)),
        "multi_label": bool(rng.integers(0, 2)),
        "classes": None if seed % 4 else sorted({int(c) for c in rng.integers(0, nc, 2)}),
    }
    det = non_max_suppression(
        pred,
        conf_threshold=opts["conf"],
        iou_threshold=opts["iou"],
        max_detections=opts["max_det"],
        agnostic=opts["agnostic"],
        multi_label=opts["multi_label"],
        classes=opts["classes"],
    )
    np.testing.assert_array_equal(det, ref_nms(pred, **opts), err_msg=str(opts))
    assert (np.diff(det[:, 4]) <= 0).all()

    w, h = int(rng.integers(20, 300)), int(rng.integers(20, 300))
    geo = ref_letterbox_geometry(w, h, 128, 128)
    info = LetterboxInfo(geo["r"], geo["pad"], (h, w), (128, 128))
    scaled = scale_boxes(det[:, :4], info)
    np.testing.assert_allclose(scaled, ref_scale(det[:, :4], geo["r"], geo["pad"], (h, w)), 1e-5)


def test_postprocess_random_batch_vs_reference() -> None:
    rng = np.random.default_rng(123)
    xywh = np.concatenate([rng.uniform(0, 320, (2, 300, 2)), rng.uniform(5, 80, (2, 300, 2))], 2)
    obj = rng.uniform(0, 1, (2, 300, 1))
    cls = rng.uniform(0, 1, (2, 300, 3))
    out = np.concatenate([xywh, obj, cls], axis=2).astype(np.float32)
    infos = [
        LetterboxInfo(320 / 500, (0.0, 40.0), (375, 500), (320, 320)),
        LetterboxInfo(0.5, (20.0, 0.0), (640, 600), (320, 320)),
    ]
    for layout, raw in (
        ("yolov5", out),
        ("yolov8", out[..., [0, 1, 2, 3, 5, 6, 7]].transpose(0, 2, 1)),
    ):
        results = postprocess_detections(raw, layout, infos, conf_threshold=0.3)
        for b, (det, info) in enumerate(zip(results, infos)):
            rows = raw[b] if layout == "yolov5" else raw[b].T
            cand = []
            for r in rows.tolist():
                cx, cy, w, h = r[:4]
                conf = [s * r[4] for s in r[5:]] if layout == "yolov5" else r[4:]
                cand.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, *conf])
            ref = ref_nms(np.asarray(cand, dtype=np.float32), conf=0.3)
            assert len(det) == len(ref) > 0
            np.testing.assert_allclose(det[:, 4:], ref[:, 4:], rtol=1e-6)
            ref_boxes = ref_scale(ref[:, :4], info.ratio, info.pad, info.original_size)
            np.testing.assert_allclose(det[:, :4], ref_boxes, rtol=1e-5, atol=1e-3)


# ----------------------------------------------------------------------------- real models


def _open(shared_dir: Path, name: str) -> Image.Image:
    with Image.open(shared_dir / "samples" / "images" / name) as image:
        return image.convert("RGB")


def _class_names(model_dir: Path) -> list[str]:
    return json.loads((model_dir / "config.json").read_text("utf-8"))["names"]


def test_yolov3_tiny_finds_the_cup(shared_dir: Path, ort_run: Any) -> None:
    model_dir = shared_dir / "models" / "yolov3-tiny-coco"
    names = _class_names(model_dir)
    images = [_open(shared_dir, name) for name in ("coffee.png", "chelsea.png")]
    boxed = [letterbox(im, (416, 416)) for im in images]
    x = to_model_input([b[0] for b in boxed], np.float32)
    (output,) = ort_run(model_dir / "model.onnx", {"images": x})
    layout = detect_layout(["batch", 2535, 85], len(names))
    assert layout == "yolov5" and output.shape == (2, 2535, 85)
    infos = [b[1] for b in boxed]
    dets = postprocess_detections(output, layout, infos, conf_threshold=0.25)
    coffee = dets[0]
    labels = [names[int(c)] for c in coffee[:, 5]]
    assert "cup" in labels, labels
    cup = coffee[labels.index("cup")]
    # the cup fills the middle of the 600x400 photo
    assert cup[0] < 250 < cup[2] and cup[1] < 150 < cup[3] and cup[4] > 0.25
    for det, image in zip(dets, images):
        w, h = image.size
        assert ((det[:, [0, 2]] >= 0) & (det[:, [0, 2]] <= w)).all()
        assert ((det[:, [1, 3]] >= 0) & (det[:, [1, 3]] <= h)).all()
    # the same detections from the independent reference on the decoded candidates
    decoded = decode_predictions(output, layout)
    ref = ref_nms(decoded[0], conf=0.25)
    np.testing.assert_array_equal(coffee[:, 4:], ref[:, 4:])
    np.testing.assert_allclose(
        coffee[:, :4], ref_scale(ref[:, :4], infos[0].ratio, infos[0].pad, (400, 600)), 1e-5
    )


def test_yolov8n_random_decodes(shared_dir: Path, ort_run: Any) -> None:
    model_dir = shared_dir / "models" / "yolov8n-random"
    names = _class_names(model_dir)
    image = _open(shared_dir, "rocket.jpg")
    arr, info = letterbox(image, (320, 320))
    (output,) = ort_run(model_dir / "model.onnx", {"images": to_model_input([arr], np.float32)})
    layout = detect_layout(list(output.shape), len(names))
    assert layout == "yolov8" and output.shape == (1, 84, 2100)
    (det,) = postprocess_detections(output, layout, [info], conf_threshold=0.0, max_detections=50)
    assert det.shape[1] == 6 and 0 < len(det) <= 50
    w, h = image.size
    assert ((det[:, [0, 2]] >= 0) & (det[:, [0, 2]] <= w)).all()
    assert ((det[:, [1, 3]] >= 0) & (det[:, [1, 3]] <= h)).all()
    assert ((det[:, 5] >= 0) & (det[:, 5] < 80)).all()
    assert (np.diff(det[:, 4]) <= 0).all()
    ref = ref_nms(decode_predictions(output, layout)[0], conf=0.0, max_det=50)
    np.testing.assert_array_equal(det[:, 4:], ref[:, 4:])


# ----------------------------------------------------------------------------- annotate


def _blank(w: int = 200, h: int = 150) -> Image.Image:
    return Image.new("RGB", (w, h), (50, 60, 70))


def test_annotate_draws_box_and_caption() -> None:
    image = _blank()
    before = np.asarray(image).copy()
    result = {"boxes": [[60, 50, 140, 120]], "scores": [0.87], "labels": ["cup"]}
    out = annotate(image, result)
    assert out is not image and out.size == image.size and out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), before)  # input untouched
    px = np.asarray(out)
    assert (px[85, 60] != before[85, 60]).any()  # left edge of the box
    assert (px[120, 100] != before[120, 100]).any()  # bottom edge
    assert (px[50 - 3, 62] != before[50 - 3, 62]).any()  # caption background above the box
    assert (px[140:, 170:] == before[140:, 170:]).all()  # far corner
    assert (px[85, 100] == before[85, 100]).all()  # inside the box, below the caption


def test_annotate_inputs_and_colours(tmp_path: Path) -> None:
    arr = np.asarray(_blank()).copy()
    path = tmp_path / "blank.png"
    Image.fromarray(arr).save(path)
    data = path.read_bytes()
    result = SimpleNamespace(
        boxes=np.array([[10.0, 40.0, 60.0, 90.0], [100.0, 40.0, 150.0, 90.0]]),
        scores=[0.5, 0.4],
        labels=[0, 1],
    )
    outs = [
        annotate(source, result, class_names=["a", "b"], line_width=3)
        for source in (arr, path, str(path), data, io.BytesIO(data), Image.fromarray(arr))
    ]
    for out in outs[1:]:
        np.testing.assert_array_equal(np.asarray(out), np.asarray(outs[0]))
    px = np.asarray(outs[0])
    assert tuple(px[65, 10]) != tuple(px[65, 100])  # different classes, different colours
    assert (arr == (50, 60, 70)).all()
    empty = annotate(arr, {"boxes": [], "scores": [], "labels": []})
    np.testing.assert_array_equal(np.asarray(empty), arr)
    # boxes past the border are drawn clipped, without error
    out = annotate(arr, {"boxes": [[-20, -20, 500, 500]], "scores": [0.9], "labels": ["x"]})
    assert (np.asarray(out)[149, 100] != arr[149, 100]).any()


@pytest.mark.parametrize(
    "result",
    [
        {"boxes": [[0, 0, 5, 5]], "scores": [0.5, 0.4], "labels": ["a"]},
        {"boxes": [[0, 0, 5]], "scores": [0.5], "labels": ["a"]},
        {"boxes": [[0, 0, 5, "x"]], "scores": [0.5], "labels": ["a"]},
        {"boxes": [[0, 0, 5, math.nan]], "scores": [0.5], "labels": ["a"]},
        {"boxes": [[5, 0, 0, 5]], "scores": [0.5], "labels": ["a"]},
        {"boxes": [[[0, 0, 5, 5]]], "scores": [[0.5]], "labels": [["a"]]},
        {"boxes": [[0, 0, 5, 5]], "scores": ["high"], "labels": ["a"]},
        {"boxes": [[0, 0, 5, 5]], "scores": [0.5], "labels": [None]},
        {"boxes": [[0, 0, 5, 5]], "scores": [0.5]},
        {"boxes": 5, "scores": [0.5], "labels": ["a"]},
        SimpleNamespace(boxes=[[0, 0, 5, 5]], scores=[0.5]),
    ],
)
def test_annotate_rejects_bad_results(result: Any) -> None:
    with pytest.raises(InputError):
        annotate(_blank(), result)


def test_annotate_rejects_bad_options_and_images(tmp_path: Path) -> None:
    result = {"boxes": [], "scores": [], "labels": []}
    for image in (tmp_path / "missing.png", b"not an image", 12, [_blank(), _blank()]):
        with pytest.raises(InputError):
            annotate(image, result)
    with pytest.raises(ConfigError):
        annotate(_blank(), result, line_width=0)
    with pytest.raises(ConfigError):
        annotate(_blank(), result, font="Arial")


def test_the_detector_annotates_its_own_results(shared_dir: Path) -> None:
    from sparsepipe import Pipeline

    pipe = Pipeline.create("object-detection", shared_dir / "models" / "yolov3-tiny-coco")
    path = shared_dir / "samples" / "images" / "coffee.png"
    result = pipe(path)
    one = {"boxes": result.boxes[0], "scores": result.scores[0], "labels": result.labels[0]}
    expected = np.asarray(annotate(path, one))
    assert "cup" in one["labels"]
    for image in (path, path.read_bytes(), io.BytesIO(path.read_bytes())):
        np.testing.assert_array_equal(np.asarray(pipe.annotate(image)), expected)
    np.testing.assert_array_equal(np.asarray(pipe.annotate(path, result)), expected)
    with pytest.raises(InputError, match="one image"):
        pipe.annotate([path, path])
    with pytest.raises(InputError, match="holds 2 images"):
        pipe.annotate(path, pipe([path, path]))
