"""Representative inputs the tasks generate for themselves (`Pipeline.example_inputs`): sentences
of a given token length, questions with a context, and the sample images beside a source
checkout (a synthetic image without them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["QUESTION", "SYNTHETIC_IMAGE_SIZE", "example_images", "sentences"]

SYNTHETIC_IMAGE_SIZE = (480, 640)  # height, width
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: the sample images beside a source checkout; a synthetic image is used when absent
SAMPLE_IMAGES = Path(__file__).resolve().parents[3].parent / "shared" / "samples" / "images"

_WORD_TEXT = (
    "the quick brown fox jumps over a lazy dog while people walk through the old city park "
    "on a warm summer day and children play near the river as music drifts from an open "
    "window where someone reads a good book about history science and art before dinner "
    "with friends who talk about work travel family food movies weather and the news"
)
_WORDS = _WORD_TEXT.split()
#: the question of generated question-answering inputs
QUESTION = "Where do the children play on a warm summer day?"


def _fit_text(
    words: list[str], tokens: int, count: Optional[Callable[[str], int]], reserved: int
) -> str:
    """The longest prefix of ``words`` (as a sentence) that ``count`` says fits in ``tokens``."""

    def text(k: int) -> str:
        return " ".join(words[:k]).capitalize() + "."

    k = max(1, min(len(words), tokens - reserved))
    if count is None:
        return text(k)
    while k > 1 and count(text(k)) > tokens:
        k -= max(1, (count(text(k)) - tokens) // 2)
        k = max(1, k)
    while k < len(words) and count(text(k + 1)) <= tokens:
        k += 1
    return text(k)


def sentences(
    batch: int, tokens: int, count: Optional[Callable[[str], int]] = None, reserved: int = 2
) -> list[str]:
    """``batch`` fixed pseudo-random sentences, each as long as fits in ``tokens`` by ``count``
    (a word per token less ``reserved`` without a counter)."""
    rng = np.random.default_rng(0)
    texts = []
    for _ in range(batch):
        words = [str(w) for w in rng.choice(_WORDS, size=2 * tokens + 8)]
        texts.append(_fit_text(words, tokens, count, reserved))
    return texts


def _sample_image_files() -> list[Path]:
    if not SAMPLE_IMAGES.is_dir():
        return []
    return sorted(p for p in SAMPLE_IMAGES.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def example_images(batch: int) -> tuple[list[Any], str]:
    """``batch`` RGB images (the sample images in turn, else one synthetic image) and a
    description of them."""
    images: list[np.ndarray] = []
    names: list[str] = []
    try:
        from PIL import Image

        for path in _sample_image_files():
            with Image.open(path) as img:
                images.append(np.asarray(img.convert("RGB")))
            names.append(path.name)
    except (ImportError, OSError):
        images, names = [], []
    if images:
        described = f"{batch} sample image(s) from {SAMPLE_IMAGES} ({', '.join(names)})"
    else:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, size=(*SYNTHETIC_IMAGE_SIZE, 3), dtype=np.uint8)]
        h, w = SYNTHETIC_IMAGE_SIZE
        described = f"{batch} synthetic {w}x{h} RGB image(s)"
    return [images[i % len(images)] for i in range(batch)], described
