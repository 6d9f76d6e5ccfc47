"""Image loading (`load_images`) and Hugging Face-style preprocessing (`ImagePreprocessing`).

Loading: every input kind gives the same RGB pixels; other modes, EXIF orientation, bad inputs
(InputError naming the index), untouched caller objects, no file left open. Preprocessing is
checked against a numpy/Pillow reference written here from the Hugging Face recipe (PIL resize,
center crop with zero padding, rescale, normalize, CHW), then end to end with onnxruntime on
the efficientnet-lite0 model.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image")

from sparsepipe.errors import ConfigError, InputError  # noqa: E402
from sparsepipe.tasks._images import is_single_image, load_images  # noqa: E402
from sparsepipe.tasks.image_classification.processing import ImagePreprocessing  # noqa: E402

SAMPLES = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")
MODEL = Path("models") / "efficientnet-lite0-imagenet"
TOL = 1e-5
BICUBIC, BILINEAR = 3, 2


@pytest.fixture(scope="module")
def images_dir(shared_dir: Path) -> Path:
    """The sample images folder of ../shared."""
    return shared_dir / "samples" / "images"


@pytest.fixture(scope="module")
def efficientnet_config(shared_dir: Path) -> dict[str, Any]:
    """preprocessor_config.json of efficientnet-lite0."""
    return json.loads((shared_dir / MODEL / "preprocessor_config.json").read_text())


def rgb_pixels(path: Path) -> np.ndarray:
    """Reference decode: Pillow, converted to RGB, as a uint8 HWC array."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


# --- load_images -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
def test_every_input_kind_gives_the_same_pixels(images_dir: Path, name: str) -> None:
    path = images_dir / name
    expected = rgb_pixels(path)
    data = path.read_bytes()
    with Image.open(path) as opened:
        items = [
            str(path),
            path,
            data,
            bytearray(data),
            memoryview(data),
            opened,
            Image.fromarray(expected),
            expected,
            np.dstack([expected, np.full(expected.shape[:2], 255, np.uint8)]),
        ]
        loaded = load_images(items)
    assert len(loaded) == len(items)
    for i, img in enumerate(loaded):
        assert isinstance(img, Image.Image)
        assert img.mode == "RGB", i
        np.testing.assert_array_equal(np.asarray(img), expected, err_msg=f"input kind {i}")


def test_single_item_and_lists(images_dir: Path) -> None:
    path = images_dir / "chelsea.png"
    assert is_single_image(str(path)) and is_single_image(path) and is_single_image(b"x")
    assert is_single_image(np.zeros((2, 2, 3), np.uint8))
    assert not is_single_image([path]) and not is_single_image((path,)) and not is_single_image([])
    assert len(load_images(path)) == 1
    assert len(load_images((path, path))) == 2
    assert load_images([]) == []


def _png_bytes(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_other_modes_become_rgb() -> None:
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    gray = rgba[:, :, 0].copy()
    gray_rgb = np.repeat(gray[:, :, None], 3, axis=2)
    gray16 = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    gray16_img = Image.new("I;16", (5, 6))
    gray16_img.frombytes(gray16.astype("<u2").tobytes())
    gray16_rgb = np.repeat((gray16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    palette = Image.fromarray(rgba[:, :, :3]).quantize(colors=8)
    cmyk = Image.new("CMYK", (5, 6), (0, 255, 0, 0))
    cases = [
        (Image.fromarray(gray), gray_rgb),
        (gray, gray_rgb),
        (gray[:, :, None], gray_rgb),
        (_png_bytes(Image.fromarray(gray)), gray_rgb),
        (Image.fromarray(gray).convert("LA"), gray_rgb),
        (Image.fromarray(rgba), rgba[:, :, :3]),
        (rgba, rgba[:, :, :3]),
        (_png_bytes(Image.fromarray(rgba)), rgba[:, :, :3]),
        (palette, np.asarray(palette.convert("RGB"))),
        (_png_bytes(palette), np.asarray(palette.convert("RGB"))),
        (cmyk, np.asarray(cmyk.convert("RGB"))),
        (gray16_img, gray16_rgb),
        (_png_bytes(gray16_img), gray16_rgb),
    ]
    loaded = load_images([item for item, _ in cases])
    for i, (img, (_, expected)) in enumerate(zip(loaded, cases)):
        assert img.mode == "RGB", i
        np.testing.assert_array_equal(np.asarray(img), expected, err_msg=f"case {i}")
    assert np.asarray(cmyk.convert("RGB"))[0, 0].tolist() == [255, 0, 255]


# EXIF orientation -> the rotation of the stored pixels that displays the image upright
ORIENTATIONS = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a)}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:10, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"oriented_{orientation}.jpg"
    Image.fromarray(stored).save(path, format="JPEG", quality=95, exif=exif)
    decoded = rgb_pixels(path)  # stored pixels as decoded, orientation not applied
    expected = ORIENTATIONS[orientation](decoded)

    with Image.open(path) as opened:
        loaded = load_images([path, path.read_bytes(), opened])
        assert opened.getexif().get(0x0112) == orientation  # the caller's image is unchanged
    for img in loaded:
        assert img.size == (expected.shape[1], expected.shape[0])
        np.testing.assert_array_equal(np.asarray(img), expected)


def _bad_items(images_dir: Path, tmp_path: Path) -> dict[str, Any]:
    png = (images_dir / "chelsea.png").read_bytes()
    jpg = (images_dir / "rocket.jpg").read_bytes()
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return {
        "corrupt bytes": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "garbage bytes": b"definitely not an image",
        "truncated png": png[: len(png) // 2],
        "truncated jpeg": jpg[: len(jpg) // 2],
        "text file": str(text),
        "missing path": str(tmp_path / "missing.png"),
        "missing Path": tmp_path / "missing.jpg",
        "empty file": empty,
        "directory": tmp_path,
        "empty bytes": b"",
        "float array": np.zeros((8, 8, 3), np.float32),
        "5-D array": np.zeros((1, 2, 3, 4, 3), np.uint8),
        "channels-first array": np.zeros((3, 8, 8), np.uint8),
        "2-channel array": np.zeros((8, 8, 2), np.uint8),
        "None": None,
        "int": 7,
        "nested list": [png],
    }


def test_bad_items_raise_input_error_naming_the_index(images_dir: Path, tmp_path: Path) -> None:
    good = images_dir / "coffee.png"
    for what, bad in _bad_items(images_dir, tmp_path).items():
        with pytest.raises(InputError, match=r"^image 2: ") as info:
            load_images([good, good.read_bytes(), bad, good])
        assert isinstance(info.value, ValueError), what
    with pytest.raises(InputError, match="truncated"):
        load_images([good, (images_dir / "chelsea.png").read_bytes()[:60000]])
    with pytest.raises(InputError, match=r"^image 0: .*no such file"):
        load_images(tmp_path / "nope.png")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_each_unreadable_path_says_why(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it to read would block until a writer came
    cases = {
        str(fifo): "is not a regular file (a device, pipe or socket)",
        "/dev/null": "is not a regular file (a device, pipe or socket)",
        str(tmp_path): "is a directory, not an image file",
        str(tmp_path / "nope.png"): "no such file",
        "bad\x00name.png": "is not a valid path",
        "": "the path is an empty string",
    }
    for path, says in cases.items():
        with pytest.raises(InputError) as info:
            load_images(path)
        assert str(info.value).startswith("image 0: ") and says in str(info.value), path
        assert "not a valid path" not in str(info.value) or "\x00" in path


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_no_file_is_left_open(images_dir: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.png"
    data = (images_dir / "chelsea.png").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    paths = [images_dir / name for name in SAMPLES]
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        load_images(paths)
        with pytest.raises(InputError):
            load_images([*paths, truncated])
    assert len(os.listdir("/proc/self/fd")) == before


def test_caller_objects_are_unchanged(images_dir: Path) -> None:
    rgba_img = Image.open(images_dir / "astronaut.png").convert("RGBA")
    rgb_img = Image.open(images_dir / "chelsea.png").convert("RGB")
    array = np.asarray(rgb_img).copy()
    readonly = array.copy()
    readonly.setflags(write=False)
    gray = array[:, :, 1].copy()
    snapshots = [(im.mode, im.size, im.tobytes()) for im in (rgba_img, rgb_img)]
    arrays = [(a, a.copy(), a.flags.writeable) for a in (array, readonly, gray)]

    out = load_images([rgba_img, rgb_img, array, readonly, gray])
    for img in out:  # the results are independent copies
        img.paste((1, 2, 3), (0, 0, img.width, img.height))
    assert [(im.mode, im.size, im.tobytes()) for im in (rgba_img, rgb_img)] == snapshots
    for a, copy, writeable in arrays:
        np.testing.assert_array_equal(a, copy)
        assert a.flags.writeable == writeable
    assert out[1] is not rgb_img


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_refused(images_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = (images_dir / "chelsea.png").read_bytes()
    pixels = 451 * 300
    for limit in (pixels - 1, pixels // 3):  # Pillow's warning zone, then its error zone
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(InputError, match=r"^image 1: .*decompression bomb"):
            load_images([np.zeros((4, 4, 3), np.uint8), data])


# --- preprocessing -------------------------------------------------------------------------------


def reference_preprocess(
    image: Any,
    *,
    shortest_edge: Optional[int] = None,
    height_width: Optional[tuple[int, int]] = None,
    resample: int = BILINEAR,
    crop: Optional[tuple[int, int]] = None,
    scale: float = 1 / 255,
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """The Hugging Face recipe in float64: PIL resize, zero-padded center crop, scale, normalize."""
    pixels = np.asarray(image.convert("RGB"))
    h, w = pixels.shape[:2]
    if shortest_edge is not None:
        if w <= h:
            new_w, new_h = shortest_edge, math.floor(shortest_edge * h / w)
        else:
            new_h, new_w = shortest_edge, math.floor(shortest_edge * w / h)
        pixels = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), resample))
    elif height_width is not None:
        pixels = np.asarray(Image.fromarray(pixels).resize(height_width[::-1], resample))
    if crop is not None:
        h, w = pixels.shape[:2]
        ch, cw = crop
        canvas = np.zeros((max(h, ch), max(w, cw), 3), np.uint8)
        pad_top, pad_left = (
            math.ceil((canvas.shape[0] - h) / 2),
            math.ceil((canvas.shape[1] - w) / 2),
        )
        canvas[pad_top : pad_top + h, pad_left : pad_left + w] = pixels
        top = max(0, (h - ch) // 2 + pad_top)
        left = max(0, (w - cw) // 2 + pad_left)
        pixels = canvas[top : top + ch, left : left + cw]
    x = pixels.astype(np.float64) * scale
    x = (x - np.array(mean)) / np.array(std)
    return x.transpose(2, 0, 1)


def assert_matches(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.dtype == np.float32, what
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    diff = float(np.abs(ours.astype(np.float64) - ref).max())
    assert diff <= TOL, f"{what}: max abs diff {diff:.3g} > {TOL}"


@pytest.mark.parametrize("name", SAMPLES)
def test_efficientnet_config_matches_reference(
    images_dir: Path, efficientnet_config: dict[str, Any], name: str
) -> None:
    proc = ImagePreprocessing.from_config(efficientnet_config, (224, 224))
    (img,) = load_images(images_dir / name)
    # rescale 1/255, mean 127/255, std 128/255 is (x - 127) / 128
    ref = reference_preprocess(
        img, shortest_edge=256, resample=BICUBIC, crop=(224, 224), scale=1.0, mean=(127,) * 3,
        std=(128,) * 3,
    )  # fmt: skip
    assert_matches(proc.preprocess(img), ref, name)


@pytest.mark.parametrize("name", SAMPLES)
def test_imagenet_default_matches_reference(images_dir: Path, name: str) -> None:
    (img,) = load_images(images_dir / name)
    ref = reference_preprocess(
        img, shortest_edge=256, resample=BILINEAR, crop=(224, 224),
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    )  # fmt: skip
    for proc in (ImagePreprocessing.from_config(None), ImagePreprocessing.from_config({}, None)):
        assert_matches(proc.preprocess(img), ref, name)


def test_default_crops_to_the_model_input_size(images_dir: Path) -> None:
    (img,) = load_images(images_dir / "coffee.png")
    proc = ImagePreprocessing.from_config(None, (192, 160))
    assert proc.output_size() == (192, 160)
    assert proc.preprocess(img).shape == (3, 192, 160)


def test_batch_equals_single_images(images_dir: Path, efficientnet_config: dict[str, Any]) -> None:
    proc = ImagePreprocessing.from_config(efficientnet_config, (224, 224))
    imgs = load_images([images_dir / name for name in SAMPLES])
    batch = proc.preprocess_batch(imgs)
    assert batch.shape == (4, 3, 224, 224) and batch.dtype == np.float32
    for i, img in enumerate(imgs):
        np.testing.assert_array_equal(batch[i], proc.preprocess(img))
    assert proc.preprocess_batch([]).shape == (0, 3, 224, 224)


def test_height_width_resize_without_crop(images_dir: Path) -> None:
    config = {
        "image_processor_type": "BitImageProcessor",
        "size": {"height": 160, "width": 96},
        "resample": BICUBIC,
        "do_center_crop": False,
        "image_mean": [0.5, 0.4, 0.3],
        "image_std": [0.2, 0.25, 0.3],
    }
    proc = ImagePreprocessing.from_config(config, (224, 224))
    assert proc.output_size() == (160, 96)
    for name in SAMPLES:
        (img,) = load_images(images_dir / name)
        ref = reference_preprocess(
            img, height_width=(160, 96), resample=BICUBIC, mean=(0.5, 0.4, 0.3),
            std=(0.2, 0.25, 0.3),
        )  # fmt: skip
        assert_matches(proc.preprocess(img), ref, name)


@pytest.mark.parametrize(("crop", "shape"), [((224, 224), (100, 150)), ((161, 120), (40, 200))])
def test_image_smaller_than_the_crop_is_zero_padded(
    crop: tuple[int, int], shape: tuple[int, int]
) -> None:
    rng = np.random.default_rng(2)
    (img,) = load_images(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    config = {
        "image_processor_type": "BitImageProcessor",
        "do_resize": False,
        "crop_size": {"height": crop[0], "width": crop[1]},
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }
    out = ImagePreprocessing.from_config(config).preprocess(img)
    ref = reference_preprocess(
        img, crop=crop, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    assert_matches(out, ref, f"{shape} in crop {crop}")
    # the padding holds normalized zeros
    assert out[0, 0, 0] == pytest.approx(-0.485 / 0.229, abs=1e-6)
    # and a resized image smaller than the crop
    config.update(do_resize=True, size={"shortest_edge": 100})
    out = ImagePreprocessing.from_config(config).preprocess(img)
    ref = reference_preprocess(
        img, shortest_edge=100, resample=BICUBIC, crop=crop, mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )  # fmt: skip
    assert_matches(out, ref, f"{shape} resized to 100 in crop {crop}")


def test_portrait_and_landscape(images_dir: Path, efficientnet_config: dict[str, Any]) -> None:
    (landscape,) = load_images(images_dir / "chelsea.png")  # 451 x 300
    portrait = landscape.transpose(Image.Transpose.ROTATE_90)  # 300 x 451
    no_crop = {**efficientnet_config, "do_center_crop": False}
    proc = ImagePreprocessing.from_config(no_crop)
    assert proc.output_size() is None
    assert proc.preprocess(landscape).shape == (3, 256, int(256 * 451 / 300))
    assert proc.preprocess(portrait).shape == (3, int(256 * 451 / 300), 256)
    with pytest.raises(InputError, match="no fixed output size"):
        proc.preprocess_batch([landscape, portrait])
    cropped = ImagePreprocessing.from_config(efficientnet_config)
    for what, img in (("landscape", landscape), ("portrait", portrait)):
        ref = reference_preprocess(
            img, shortest_edge=256, resample=BICUBIC, crop=(224, 224), scale=1.0,
            mean=(127,) * 3, std=(128,) * 3,
        )  # fmt: skip
        assert_matches(cropped.preprocess(img), ref, what)


def test_processor_families(images_dir: Path) -> None:
    (img,) = load_images(images_dir / "rocket.jpg")
    convnext = {
        "image_processor_type": "ConvNextImageProcessor",
        "size": {"shortest_edge": 224},
        "crop_pct": 0.875,
        "resample": BICUBIC,
    }
    ref = reference_preprocess(
        img, shortest_edge=256, resample=BICUBIC, crop=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3
    )
    assert_matches(ImagePreprocessing.from_config(convnext).preprocess(img), ref, "convnext")
    convnext_384 = {**convnext, "size": {"shortest_edge": 384}}
    ref = reference_preprocess(
        img, height_width=(384, 384), resample=BICUBIC, mean=(0.5,) * 3, std=(0.5,) * 3
    )
    assert_matches(ImagePreprocessing.from_config(convnext_384).preprocess(img), ref, "convnext")
    vit_legacy = {
        "feature_extractor_type": "ViTFeatureExtractor",
        "size": 96,
        "do_center_crop": True,
    }
    ref = reference_preprocess(img, height_width=(96, 96), mean=(0.5,) * 3, std=(0.5,) * 3)
    assert_matches(ImagePreprocessing.from_config(vit_legacy).preprocess(img), ref, "vit")


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"size": {"width": 3}}, "size"),
        ({"size": {"shortest_edge": 0}}, "size"),
        ({"size": "big"}, "size"),
        ({"crop_size": {"shortest_edge": 3}}, "crop_size"),
        ({"resample": 9}, "resample"),
        ({"do_resize": "yes"}, "do_resize"),
        ({"rescale_factor": "1/255"}, "rescale_factor"),
        ({"image_mean": [0.5, 0.5]}, "image_mean"),
        ({"image_std": [0.5, 0.0, 0.5]}, "image_std"),
        ({"image_processor_type": "ViTImageProcessor", "size": {"shortest_edge": 9}}, "size"),
        ({"do_flip_channel_order": True}, "do_flip_channel_order"),
        ({"resample": None}, "resample"),
    ],
)
def test_invalid_configs_raise_config_error(config: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ImagePreprocessing.from_config({"image_processor_type": "BitImageProcessor", **config})


def test_preprocess_rejects_non_images() -> None:
    proc = ImagePreprocessing.from_config(None)
    with pytest.raises(InputError, match="PIL image"):
        proc.preprocess(np.zeros((4, 4, 3), np.uint8))


# --- end to end ----------------------------------------------------------------------------------


def test_efficientnet_predictions(
    images_dir: Path, shared_dir: Path, efficientnet_config: dict[str, Any], ort_run: Any
) -> None:
    id2label = json.loads((shared_dir / MODEL / "config.json").read_text())["id2label"]
    proc = ImagePreprocessing.from_config(efficientnet_config, (224, 224))
    batch = proc.preprocess_batch(
        load_images([images_dir / "chelsea.png", images_dir / "coffee.png"])
    )
    (logits,) = ort_run(shared_dir / MODEL / "model.onnx", {"pixel_values": batch})
    assert logits.shape == (2, 1000)
    top3 = [[id2label[str(int(j))] for j in np.argsort(-row)[:3]] for row in logits]
    cats = {"tabby cat", "tiger cat", "Egyptian Mau", "Persian cat", "Siamese cat"}
    assert cats & set(top3[0]), f"chelsea.png top-3: {top3[0]}"
    assert top3[1][0] == "espresso" or {"espresso", "cup", "coffee mug"} & set(top3[1]), top3[1]
