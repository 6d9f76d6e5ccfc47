"""Image preprocessing identical to Hugging Face transformers' (slow) image processors.

`ImagePreprocessing` holds the fields of a ``preprocessor_config.json`` and applies them as
``BitImageProcessor`` / ``CLIPImageProcessor`` / ``ViTImageProcessor`` /
``ConvNextImageProcessor`` do: PIL resize, center crop (zero padding when the image is smaller),
rescale in float64 then cast to float32, normalize in float32, channels first. Rescale and
normalize act on each 0..255 value independently, so they are applied through a per-channel
256-entry table computed with the same float operations, which gives the same float32 bits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ...errors import ConfigError, InputError

if TYPE_CHECKING:
    import PIL.Image

__all__ = ["ImagePreprocessing"]

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_INPUT_SIZE = (224, 224)
NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING = 0, 1, 2, 3, 4, 5

_SIZE_KEY_SETS = ({"shortest_edge"}, {"shortest_edge", "longest_edge"}, {"height", "width"})
_MISSING = object()


@dataclass(frozen=True)
class _Family:
    """Defaults and rules of one Hugging Face image-processor class."""

    size: dict
    size_int_is_square: bool
    resample: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    has_center_crop: bool = True
    size_rule: str = "any"  # "any", "height_width" (ViT) or "shortest_edge" (ConvNext)


_CLIP_LIKE = _Family({"shortest_edge": 224}, False, BICUBIC, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
_FAMILIES = {
    "bit": _CLIP_LIKE,
    "clip": _CLIP_LIKE,
    "vit": _Family(
        {"height": 224, "width": 224},
        True,
        BILINEAR,
        IMAGENET_STANDARD_MEAN,
        IMAGENET_STANDARD_STD,
        has_center_crop=False,
        size_rule="height_width",
    ),
    "convnext": _Family(
        {"shortest_edge": 384},
        False,
        BILINEAR,
        IMAGENET_STANDARD_MEAN,
        IMAGENET_STANDARD_STD,
        has_center_crop=False,
        size_rule="shortest_edge",
    ),
}


@dataclass(frozen=True)
class ImagePreprocessing:
    """Hugging Face image-processor fields; `preprocess` turns an RGB PIL image into float32 CHW.

    ``size`` is ``{"shortest_edge": n}`` (aspect ratio kept; a ``"longest_edge"`` entry is
    accepted and ignored, as BitImageProcessor ignores it) or ``{"height": h, "width": w}``;
    ``crop_size`` is ``{"height": h, "width": w}``; ``resample`` is a PIL filter code
    (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming).
    """

    do_resize: bool
    size: dict
    resample: int
    do_center_crop: bool
    crop_size: dict
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    _table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validate every field (`ConfigError` naming it), canonicalize, build the value table."""
        for key in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
            object.__setattr__(self, key, _flag(key, getattr(self, key)))
        object.__setattr__(self, "size", _canonical_size("size", self.size, _SIZE_KEY_SETS))
        object.__setattr__(
            self, "crop_size", _canonical_size("crop_size", self.crop_size, ({"height", "width"},))
        )
        object.__setattr__(self, "resample", _resample("resample", self.resample))
        object.__setattr__(self, "rescale_factor", _number("rescale_factor", self.rescale_factor))
        object.__setattr__(self, "image_mean", _triple("image_mean", self.image_mean))
        object.__setattr__(self, "image_std", _triple("image_std", self.image_std))
        if self.do_normalize and 0.0 in self.image_std:
            raise ConfigError(f"image_std must not contain 0, got {list(self.image_std)}")
        object.__setattr__(self, "_table", self._value_table())

    @classmethod
    def from_config(
        cls, config: Optional[dict], input_size: Optional[tuple[int, int]] = None
    ) -> ImagePreprocessing:
        """Settings of a ``preprocessor_config.json`` dict, or the ImageNet convention without one.

        With no config (None or empty): resize the shortest edge to 256 (bilinear; for an input
        size other than 224 the edge scales as ``max(h, w) * 256 // 224``), center crop to
        ``input_size`` (h, w; default 224x224), rescale by 1/255, normalize with the ImageNet mean
        and std. With a config, ``input_size`` is not used; missing keys take the defaults of its
        ``image_processor_type`` (Bit/CLIP, ViT, ConvNext; other types: the ImageNet convention),
        unknown keys are ignored, invalid values raise `ConfigError` naming the key, and options
        these fields cannot express (channel flip, padding, EfficientNet's offset/include_top)
        raise `ConfigError`.
        """
        in_h, in_w = _input_size(input_size)
        if config is None or (isinstance(config, Mapping) and len(config) == 0):
            return cls(
                do_resize=True,
                size={"shortest_edge": max(in_h, in_w) * 256 // 224},
                resample=BILINEAR,
                do_center_crop=True,
                crop_size={"height": in_h, "width": in_w},
                do_rescale=True,
                rescale_factor=1 / 255,
                do_normalize=True,
                image_mean=IMAGENET_DEFAULT_MEAN,
                image_std=IMAGENET_DEFAULT_STD,
            )
        if not isinstance(config, Mapping):
            raise ConfigError(
                f"the preprocessor config must be a dict, got {type(config).__name__}"
            )
        return _from_hf_config(cls, config, (in_h, in_w))

    def output_size(self) -> Optional[tuple[int, int]]:
        """The (height, width) every image is brought to, or None when it depends on the image."""
        if self.do_center_crop:
            return (self.crop_size["height"], self.crop_size["width"])
        if self.do_resize and "height" in self.size:
            return (self.size["height"], self.size["width"])
        return None

    def preprocess(self, image: PIL.Image.Image) -> np.ndarray:
        """Float32 ``[3, H, W]`` pixels of one PIL image, as the Hugging Face processor gives."""
        pixels = self._pixels(image, "image")
        out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
        self._apply_table(pixels, out)
        return out

    def preprocess_batch(self, images: Sequence[PIL.Image.Image]) -> np.ndarray:
        """Float32 ``[N, 3, H, W]`` pixels of PIL images; `InputError` if their sizes differ."""
        images = list(images)
        if not images:
            fixed = self.output_size()
            if fixed is None:
                raise InputError(
                    "no images to preprocess, and the preprocessor config gives no fixed output "
                    "size to shape an empty batch"
                )
            return np.zeros((0, 3, *fixed), dtype=np.float32)
        first = self._pixels(images[0], "image 0")
        height, width = first.shape[:2]
        out = np.empty((len(images), 3, height, width), dtype=np.float32)
        self._apply_table(first, out[0])
        for i in range(1, len(images)):
            pixels = self._pixels(images[i], f"image {i}")
            if pixels.shape[:2] != (height, width):
                raise InputError(
                    f"image {i} preprocesses to {pixels.shape[0]}x{pixels.shape[1]} but image 0 "
                    f"to {height}x{width}: the preprocessor config gives no fixed output size (no "
                    "center crop and no height/width resize), so images of different aspect "
                    "ratios cannot share a batch; run them one at a time"
                )
            self._apply_table(pixels, out[i])
        return out

    def _pixels(self, image: Any, name: str) -> np.ndarray:
        """Resized and cropped uint8 ``[H, W, 3]`` pixels of ``image``."""
        import PIL.Image

        if not isinstance(image, PIL.Image.Image):
            raise InputError(
                f"{name}: preprocess expects a PIL image, got {type(image).__name__}; decode "
                "inputs with load_images first"
            )
        img = image if image.mode == "RGB" else image.convert("RGB")
        if self.do_resize:
            img = img.resize(
                self._resized_size(img.width, img.height)[::-1], resample=self.resample
            )
        if self.do_center_crop:
            crop_h, crop_w = self.crop_size["height"], self.crop_size["width"]
            top = (img.height - crop_h) // 2
            left = (img.width - crop_w) // 2
            if (top, left, crop_h, crop_w) != (0, 0, img.height, img.width):
                img = img.crop((left, top, left + crop_w, top + crop_h))
        return np.asarray(img)

    def _resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) after the resize step, by HF's ``get_resize_output_image_size`` rule."""
        if "shortest_edge" not in self.size:
            return (self.size["height"], self.size["width"])
        edge = self.size["shortest_edge"]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = edge, int(edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def _apply_table(self, pixels: np.ndarray, out: np.ndarray) -> None:
        for c in range(3):
            np.take(self._table[c], pixels[:, :, c], out=out[c], mode="clip")

    def _value_table(self) -> np.ndarray:
        """float32 ``[3, 256]``: rescale then normalize of every uint8 value, per channel."""
        values = np.arange(256, dtype=np.float64)
        if self.do_rescale:
            x = (values * self.rescale_factor).astype(np.float32)
        else:
            x = values.astype(np.float32)
        table = np.empty((3, 256), dtype=np.float32)
        for c in range(3):
            if self.do_normalize:
                mean = np.array(self.image_mean[c], dtype=np.float32)
                std = np.array(self.image_std[c], dtype=np.float32)
                table[c] = (x - mean) / std
            else:
                table[c] = x
        table.setflags(write=False)
        return table


def _from_hf_config(
    cls: type[ImagePreprocessing], config: Mapping[str, Any], input_size: tuple[int, int]
) -> ImagePreprocessing:
    type_name = config.get("image_processor_type") or config.get("feature_extractor_type") or ""
    if not isinstance(type_name, str):
        raise ConfigError(f"image_processor_type must be a string, got {type_name!r}")
    family_name = type_name
    for suffix in ("Fast", "ImageProcessor", "FeatureExtractor"):
        family_name = family_name[: -len(suffix)] if family_name.endswith(suffix) else family_name
    family = _FAMILIES.get(family_name.lower())
    _reject_unsupported(config, family_name.lower())

    def value(key: str) -> Any:
        return config.get(key, _MISSING)

    in_h, in_w = input_size
    if family is None:
        family = _Family(
            {"shortest_edge": max(in_h, in_w) * 256 // 224},
            True,
            BILINEAR,
            IMAGENET_DEFAULT_MEAN,
            IMAGENET_DEFAULT_STD,
        )
        default_crop: Any = {"height": in_h, "width": in_w}
    else:
        default_crop = {"height": 224, "width": 224}

    do_resize = _flag_or_null("do_resize", value("do_resize"), True)
    do_rescale = _flag_or_null("do_rescale", value("do_rescale"), True)
    do_normalize = _flag_or_null("do_normalize", value("do_normalize"), True)
    do_center_crop = _flag_or_null("do_center_crop", value("do_center_crop"), True)

    raw_size = value("size")
    size = (
        dict(family.size)
        if raw_size is _MISSING or raw_size is None
        else _legacy_size("size", raw_size, family.size_int_is_square)
    )
    raw_crop = value("crop_size")
    crop_size = (
        default_crop
        if raw_crop is _MISSING or raw_crop is None
        else _legacy_size("crop_size", raw_crop, True)
    )

    resample = value("resample")
    if resample is _MISSING:
        resample = family.resample
    elif resample is None:
        if do_resize:
            raise ConfigError("resample is null but do_resize is true")
        resample = BILINEAR

    raw_factor = value("rescale_factor")
    if raw_factor is _MISSING:
        rescale_factor: Any = 1 / 255
    elif raw_factor is None:
        if do_rescale:
            raise ConfigError("rescale_factor is null but do_rescale is true")
        rescale_factor = 1 / 255
    else:
        rescale_factor = raw_factor

    mean = value("image_mean")
    std = value("image_std")
    image_mean = family.image_mean if mean is _MISSING or mean is None else mean
    image_std = family.image_std if std is _MISSING or std is None else std

    if family.size_rule == "height_width":
        size = _check_keys("size", size, ({"height", "width"},), family_name)
        do_center_crop = False
        crop_size = {"height": size["height"], "width": size["width"]}
    elif family.size_rule == "shortest_edge":
        size = _check_keys(
            "size", size, ({"shortest_edge"}, {"shortest_edge", "longest_edge"}), family_name
        )
        size, do_center_crop, crop_size = _convnext_resize(size, config, do_resize)
    else:
        size = _check_keys("size", size, _SIZE_KEY_SETS, family_name or "this processor")
    return cls(
        do_resize=do_resize,
        size=size,
        resample=resample,
        do_center_crop=do_center_crop,
        crop_size=crop_size,
        do_rescale=do_rescale,
        rescale_factor=rescale_factor,
        do_normalize=do_normalize,
        image_mean=image_mean,
        image_std=image_std,
    )


def _convnext_resize(
    size: dict, config: Mapping[str, Any], do_resize: bool
) -> tuple[dict, bool, dict]:
    """ConvNextImageProcessor's rule as (size, do_center_crop, crop_size).

    Below 384 the shortest edge goes to ``int(shortest_edge / crop_pct)``, then a square
    ``shortest_edge`` center crop; from 384 the image is resized to a square without crop.
    """
    edge = _positive_int("size.shortest_edge", size["shortest_edge"])
    crop_pct = config.get("crop_pct")
    crop_pct = 224 / 256 if crop_pct is None else _number("crop_pct", crop_pct)
    if crop_pct <= 0:
        raise ConfigError(f"crop_pct must be > 0, got {crop_pct}")
    square = {"height": edge, "width": edge}
    if not do_resize:
        return {"shortest_edge": edge}, False, square
    if edge < 384:
        return {"shortest_edge": int(edge / crop_pct)}, True, square
    return square, False, square


def _reject_unsupported(config: Mapping[str, Any], family: str) -> None:
    if config.get("do_flip_channel_order"):
        raise ConfigError("do_flip_channel_order (BGR input) is not supported")
    if config.get("do_pad"):
        raise ConfigError("do_pad is not supported by image-classification preprocessing")
    if config.get("rescale_offset"):
        raise ConfigError("rescale_offset (rescale to -1..1 by an offset) is not supported")
    if family == "efficientnet" and config.get("include_top", True):
        raise ConfigError(
            "include_top (EfficientNetImageProcessor's second division by image_std) is not "
            "supported; set it to false if the model does not need it"
        )


def _input_size(input_size: Any) -> tuple[int, int]:
    if input_size is None:
        return DEFAULT_INPUT_SIZE
    try:
        h, w = input_size
    except (TypeError, ValueError):
        raise ConfigError(
            f"input_size must be (height, width) or None, got {input_size!r}"
        ) from None
    h = DEFAULT_INPUT_SIZE[0] if h is None else _positive_int("input_size height", h)
    w = DEFAULT_INPUT_SIZE[1] if w is None else _positive_int("input_size width", w)
    return (h, w)


def _flag(key: str, v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    raise ConfigError(f"{key} must be true or false, got {v!r}")


def _flag_or_null(key: str, v: Any, default: bool) -> bool:
    """A boolean option; missing gives ``default``, null is false (as HF's truthiness test)."""
    if v is _MISSING:
        return default
    if v is None:
        return False
    return _flag(key, v)


def _positive_int(key: str, v: Any) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {v!r}")
    return int(v)


def _number(key: str, v: Any) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{key} must be a number, got {v!r}")
    if not math.isfinite(float(v)):
        raise ConfigError(f"{key} must be finite, got {v!r}")
    return float(v)


def _resample(key: str, v: Any) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= v <= 5:
        raise ConfigError(
            f"{key} must be a PIL filter code 0..5 (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, "
            f"4 box, 5 hamming), got {v!r}"
        )
    return int(v)


def _triple(key: str, v: Any) -> tuple[float, float, float]:
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        x = _number(key, v)
        return (x, x, x)
    if isinstance(v, (list, tuple, np.ndarray)) and len(v) == 3:
        a, b, c = (_number(f"{key}[{i}]", x) for i, x in enumerate(v))
        return (a, b, c)
    raise ConfigError(f"{key} must be a number or a list of 3 numbers (R, G, B), got {v!r}")


def _legacy_size(key: str, v: Any, int_is_square: bool) -> dict:
    """HF's ``get_size_dict``: an int or (h, w) list becomes a size dict; dicts pass through."""
    if isinstance(v, Mapping):
        return dict(v)
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        n = _positive_int(key, v)
        return {"height": n, "width": n} if int_is_square else {"shortest_edge": n}
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return {"height": v[0], "width": v[1]}
    raise ConfigError(
        f"{key} must be a dict like {{'shortest_edge': n}} or {{'height': h, 'width': w}}, "
        f"an int or [height, width]; got {v!r}"
    )


def _check_keys(key: str, v: dict, allowed: Sequence[set], who: str) -> dict:
    if set(v) not in allowed:
        options = " or ".join(str(sorted(a)) for a in allowed)
        raise ConfigError(f"{key} for {who} must have the keys {options}; got {sorted(v)}")
    return v


def _canonical_size(key: str, v: Any, allowed: Sequence[set]) -> dict:
    if not isinstance(v, Mapping):
        raise ConfigError(f"{key} must be a dict, got {v!r}")
    _check_keys(key, dict(v), allowed, "ImagePreprocessing")
    return {k: _positive_int(f"{key}.{k}", v[k]) for k in v}
