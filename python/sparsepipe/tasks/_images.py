"""Image loading for vision tasks: paths, encoded bytes, PIL images and arrays to RGB PIL images.

Every image comes back fully decoded, in mode ``"RGB"``, with its EXIF orientation applied, as
Hugging Face's ``load_image`` + ``convert_rgb`` do: other modes go through ``Image.convert("RGB")``,
so an alpha channel is dropped (not composited on a background) and a palette is expanded.
16-bit grayscale (``I;16*``) keeps its 8 most significant bits instead of being clipped at 255.
Multi-frame files (GIF, animated WebP, TIFF) give their first frame. A file or byte string that is
missing, empty, truncated, corrupt or not an image raises `InputError` naming the item's index.
"""

from __future__ import annotations

import io
import os
import stat
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    import PIL.Image

__all__ = ["IMAGES_JSON_SCHEMA", "is_single_image", "load_images"]

#: the JSON forms of an ``images`` field (what HTTP clients can send): one image or a list of
#: them, each a ``data:image/...;base64,`` URL or a file path the server may read (its image_dirs)
IMAGES_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}},
    ]
}

_EXPECTED = (
    "a file path (str or pathlib.Path), encoded image bytes, a PIL.Image.Image, "
    "or a uint8 numpy array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_EXCLUDED_FORMATS = ("EPS",)  # decoding EPS runs Ghostscript on untrusted input

_formats_cache: Optional[tuple[str, ...]] = None


def _pil() -> Any:
    try:
        import PIL.Image
        import PIL.ImageOps
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("image tasks need Pillow: pip install pillow") from e
    return PIL


def _allowed_formats(image_module: Any) -> tuple[str, ...]:
    global _formats_cache
    if _formats_cache is None:
        image_module.init()
        _formats_cache = tuple(f for f in image_module.ID if f not in _EXCLUDED_FORMATS)
    return _formats_cache


def is_single_image(images: Any) -> bool:
    """True when ``images`` is one item rather than a list or tuple of items."""
    return not isinstance(images, (list, tuple))


def load_images(images: Any) -> list[PIL.Image.Image]:
    """Decode one item or a list/tuple of items into fully loaded RGB ``PIL.Image.Image`` objects.

    An item is a path (str or pathlib.Path), encoded bytes (bytes, bytearray, memoryview), a
    ``PIL.Image.Image`` or a uint8 array (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA;
    alpha is dropped, not composited.
    The caller's images and arrays are left unchanged; no file stays open. Raises `InputError`
    naming the index of the first item that cannot be loaded.
    """
    pil = _pil()
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    return [_load_one(pil, item, i) for i, item in enumerate(items)]


def _load_one(pil: Any, item: Any, index: int) -> Any:
    image_module = pil.Image
    prefix = f"image {index}"
    if isinstance(item, image_module.Image):
        return _from_pil(pil, item, prefix)
    if isinstance(item, np.ndarray):
        return _from_array(image_module, item, prefix)
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        if not data:
            raise InputError(f"{prefix}: the encoded image is an empty bytes object")
        return _decode(pil, data, prefix, f"the encoded image ({len(data)} bytes)")
    if isinstance(item, (str, os.PathLike)):
        return _decode(pil, _read_file(item, prefix), prefix, f"file {os.fspath(item)!r}")
    raise InputError(f"{prefix}: unsupported type {type(item).__name__}; expected {_EXPECTED}")


def _read_file(path: Any, prefix: str) -> bytes:
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.startswith(("http://", "https://")):
        raise InputError(f"{prefix}: URLs are not downloaded; fetch {text!r} and pass its bytes")
    if text == "":
        raise InputError(f"{prefix}: the path is an empty string")
    try:
        mode = os.stat(text).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(text)
        regular = stat.S_ISREG(mode)
        if regular:  # reading a pipe or a device could block or never end
            with open(text, "rb") as f:
                data = f.read()
    except FileNotFoundError:
        raise InputError(f"{prefix}: no such file: {text!r}") from None
    except IsADirectoryError:
        raise InputError(f"{prefix}: {text!r} is a directory, not an image file") from None
    except OSError as e:
        raise InputError(f"{prefix}: cannot read {text!r}: {e}") from None
    except ValueError as e:  # a NUL character in the path
        raise InputError(f"{prefix}: {text!r} is not a valid path: {e}") from None
    if not regular:
        raise InputError(
            f"{prefix}: {text!r} is not a regular file (a device, pipe or socket); "
            "pass an image file or its bytes"
        )
    if not data:
        raise InputError(f"{prefix}: file {text!r} is empty")
    return data


def _decode(pil: Any, data: bytes, prefix: str, source: str) -> Any:
    image_module = pil.Image
    try:
        img = image_module.open(io.BytesIO(data), formats=_allowed_formats(image_module))
    except image_module.DecompressionBombError as e:
        raise InputError(f"{prefix}: {source} is refused as a decompression bomb: {e}") from None
    except Exception as e:
        detail = (
            "cannot identify image file"
            if isinstance(e, image_module.UnidentifiedImageError)
            else str(e)
        )
        raise InputError(
            f"{prefix}: {source} is not a readable image ({detail}; unknown format, corrupt or "
            "truncated data?)"
        ) from None
    try:
        _check_pixel_count(image_module, img, prefix, source)
        try:
            img.load()
        except Exception as e:
            raise InputError(
                f"{prefix}: {source} could not be decoded ({type(e).__name__}: {e}); the data is "
                f"truncated or corrupt ({img.format or 'unknown'} image, {img.width}x{img.height})"
            ) from None
        return _to_rgb(pil, img, prefix, source)
    finally:
        img.close()


def _check_pixel_count(image_module: Any, img: Any, prefix: str, source: str) -> None:
    limit = image_module.MAX_IMAGE_PIXELS
    if limit is not None and img.width * img.height > limit:
        raise InputError(
            f"{prefix}: {source} is refused as a decompression bomb: {img.width}x{img.height} = "
            f"{img.width * img.height} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS = {limit}"
        )


def _from_pil(pil: Any, img: Any, prefix: str) -> Any:
    source = f"the PIL image ({img.mode}, {img.width}x{img.height})"
    try:
        img.load()
    except Exception as e:
        raise InputError(
            f"{prefix}: {source} could not be decoded ({type(e).__name__}: {e}); its file is "
            "truncated or corrupt"
        ) from None
    if img.width == 0 or img.height == 0:
        raise InputError(f"{prefix}: {source} has no pixels")
    return _to_rgb(pil, img, prefix, source)


def _to_rgb(pil: Any, img: Any, prefix: str, source: str) -> Any:
    """A new, loaded RGB image: EXIF orientation applied; never the object passed in."""
    try:
        out = pil.ImageOps.exif_transpose(img)
        if out is img:
            out = img.copy()
        if out.mode in _SIXTEEN_BIT_MODES:
            high = (np.asarray(out).astype(np.uint16) >> 8).astype(np.uint8)
            out = pil.Image.fromarray(high)
        if out.mode != "RGB":
            out = out.convert("RGB")
        out.load()
    except InputError:
        raise
    except Exception as e:
        raise InputError(
            f"{prefix}: {source} cannot be converted to RGB ({type(e).__name__}: {e})"
        ) from None
    return out


def _from_array(image_module: Any, arr: np.ndarray, prefix: str) -> Any:
    if arr.dtype != np.uint8:
        raise InputError(
            f"{prefix}: array dtype {arr.dtype} is not supported; expected uint8 pixels 0..255 of "
            "shape (H, W, 3) RGB (also (H, W), (H, W, 1) or (H, W, 4)); convert float images in "
            "0..1 with (x * 255).round().astype(np.uint8)"
        )
    shape = arr.shape
    if arr.ndim == 3 and shape[2] == 1:
        arr = arr[:, :, 0]
    elif not (arr.ndim == 2 or (arr.ndim == 3 and shape[2] in (3, 4))):
        hint = (
            "; channels-first (C, H, W) arrays must be transposed to (H, W, C)"
            if arr.ndim == 3 and shape[0] in (1, 3, 4)
            else ""
        )
        raise InputError(
            f"{prefix}: array shape {list(shape)} is not an image; expected (H, W) grayscale or "
            f"(H, W, C) with C = 1, 3 (RGB) or 4 (RGBA){hint}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{prefix}: array shape {list(shape)} has no pixels")
    img = image_module.fromarray(np.array(arr, dtype=np.uint8, order="C", copy=True))
    return img if img.mode == "RGB" else img.convert("RGB")
