"""Copying the files a pipeline needs besides the ONNX file (config, tokenizer) next to a model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .files import PathLike, _same_file

__all__ = ["DEPLOYMENT_FILES", "copy_deployment_files"]

#: files next to a model that a pipeline needs besides the ONNX file
DEPLOYMENT_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "preprocessor_config.json",
)


def copy_deployment_files(src: PathLike, dst: PathLike) -> list[Path]:
    """Copy `DEPLOYMENT_FILES` found beside model `src` next to model `dst`; never overwrites.

    Returns the files written (none when both models are in the same directory).
    """
    from .. import models

    resolved = models.resolve(src)
    out_dir = Path(os.fspath(dst)).expanduser().parent
    if any(_same_file(d, out_dir) for d in (resolved.directory, resolved.onnx_path.parent)):
        return []
    copied = []
    for name in DEPLOYMENT_FILES:
        found = resolved.file(name)
        if found is None:
            continue
        target = out_dir / name
        try:
            with open(found, "rb") as fin, open(target, "xb") as fout:
                shutil.copyfileobj(fin, fout)
        except FileExistsError:
            continue
        copied.append(target)
    return copied
