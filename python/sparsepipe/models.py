"""Model resolution: turns a ``model_path`` (file, directory, ``zoo:`` or ``hf:`` name) into files.

Nothing here downloads anything or writes to the user's files: ``zoo:`` models ship inside the
package and ``hf:`` models are read from the local Hugging Face cache.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .errors import ModelLoadError

__all__ = ["ModelInfo", "ResolvedModel", "get", "hf_cache_dir", "list", "resolve"]

ZOO_DIR = Path(__file__).resolve().parent / "zoo"

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class ModelInfo:
    """An embedded model: its ``zoo:`` name, task, one-line description, license and directory."""

    name: str
    task: str
    description: str
    license: str
    path: Path

    @property
    def uri(self) -> str:
        """The ``zoo:<name>`` string that resolves to this model."""
        return f"zoo:{self.name}"


#: the embedded models, in listing order; each one's ``zoo.json`` says which task it serves,
#: what it is and its license
_ZOO = (
    "sentiment-minilm-sparse80",
    "pii-ner-minilm",
    "efficientnet-lite0-imagenet",
    "yolov3-tiny-coco",
)


def _zoo_models() -> list[ModelInfo]:
    out = []
    for name in _ZOO:
        directory = ZOO_DIR / name
        try:
            meta = json.loads((directory / "zoo.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}  # a damaged install: `get` names the model and the fix
        missing = "(missing from this installation)"
        out.append(
            ModelInfo(
                name,
                meta.get("task", missing),
                meta.get("description", missing),
                meta.get("license", missing),
                directory,
            )
        )
    return out


def shipped_options(model_path: Any) -> dict[str, Any]:
    """The pipeline options an embedded model ships as its defaults (its ``zoo.json``'s
    ``pipeline_options``) when ``model_path`` is a ``zoo:<name>`` reference; {} otherwise."""
    if not isinstance(model_path, str) or not model_path.startswith("zoo:"):
        return {}
    bare = model_path[4:]
    if bare not in _ZOO:
        return {}
    try:
        meta = json.loads((ZOO_DIR / bare / "zoo.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    options = meta.get("pipeline_options") if isinstance(meta, dict) else None
    return dict(options) if isinstance(options, dict) else {}


def list() -> list[ModelInfo]:
    """The embedded models, in a fixed order."""
    return _zoo_models()


def get(name: str) -> ModelInfo:
    """The embedded model called ``name`` (with or without ``zoo:``); ModelLoadError if unknown."""
    bare = name[4:] if name.startswith("zoo:") else name
    for info in _zoo_models():
        if info.name == bare:
            if not (info.path / "model.onnx").is_file():
                raise ModelLoadError(
                    f"the embedded model {bare!r} is missing from this installation "
                    f"({info.path}); reinstall sparsepipe"
                )
            return info
    names = ", ".join(f"zoo:{i.name}" for i in _zoo_models())
    raise ModelLoadError(f"unknown embedded model {name!r}; available: {names}")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are: the ONNX file and the directory holding its config/tokenizer."""

    source: str
    onnx_path: Path
    directory: Path

    def file(self, name: str) -> Optional[Path]:
        """Path of the deployment file ``name`` (e.g. ``tokenizer.json``), or None if absent."""
        for d in (self.directory, self.onnx_path.parent):
            p = d / name
            if p.is_file():
                return p
        return None

    def json(self, name: str) -> dict[str, Any]:
        """The JSON object in file ``name``; {} when absent, ModelLoadError if invalid."""
        p = self.file(name)
        if p is None:
            return {}
        try:
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot read {p}: {e}") from e
        if not isinstance(data, dict):
            raise ModelLoadError(f"{p} must hold a JSON object, found {type(data).__name__}")
        return data


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else the default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _usage() -> str:
    zoo = ", ".join(f"zoo:{i.name}" for i in _zoo_models())
    return (
        "model_path must be an .onnx file, a directory with model.onnx (plus config.json and "
        f"tokenizer files), an embedded model ({zoo}) or hf:<org>/<name> from the local "
        "Hugging Face cache"
    )


def _onnx_in(directory: Path, source: str) -> Path:
    for candidate in (directory / "model.onnx", directory / "onnx" / "model.onnx"):
        if candidate.is_file():
            return candidate
    found = sorted(p for p in directory.glob("*.onnx") if p.is_file())
    if len(found) == 1:
        return found[0]
    if found:
        raise ModelLoadError(
            f"{source}: the directory holds several .onnx files "
            f"({', '.join(p.name for p in found)}) and no model.onnx; pass the file itself"
        )
    raise ModelLoadError(f"{source}: no model.onnx in the directory {directory}. {_usage()}")


def _resolve_hf(spec: str) -> ResolvedModel:
    name, _, revision = spec.partition("@")
    parts = name.split("/")
    if len(parts) != 2 or not all(parts):
        raise ModelLoadError(f"hf:{spec}: expected hf:<org>/<name> or hf:<org>/<name>@<revision>")
    revision = revision or "main"
    cache = hf_cache_dir()
    repo = cache / ("models--" + "--".join(parts))
    how = (
        f"download it on a machine with network access (huggingface-cli download {name}) and copy "
        f"the cache, set HF_HUB_CACHE/HF_HOME to where it is, or pass the local directory instead"
    )
    if not repo.is_dir():
        raise ModelLoadError(f"hf:{spec} is not in the local Hugging Face cache ({cache}); {how}")
    ref = repo / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = repo / "snapshots" / commit
    if not snapshot.is_dir():
        raise ModelLoadError(
            f"hf:{spec}: revision {revision!r} is not in the local cache ({repo}); {how}"
        )
    return ResolvedModel(f"hf:{spec}", _onnx_in(snapshot, f"hf:{spec}"), snapshot)


def resolve(model_path: PathLike) -> ResolvedModel:
    """Finds the ONNX file and deployment directory ``model_path`` names; ModelLoadError if none."""
    if isinstance(model_path, ResolvedModel):
        return model_path
    if not isinstance(model_path, (str, os.PathLike)):
        raise ModelLoadError(f"{_usage()}; got {type(model_path).__name__}")
    raw = os.fspath(model_path)
    if isinstance(raw, str) and not raw.strip():
        raise ModelLoadError(f"model_path is an empty string. {_usage()}")
    if isinstance(model_path, str) and raw.startswith("zoo:"):
        info = get(raw)
        return ResolvedModel(info.uri, info.path / "model.onnx", info.path)
    if isinstance(model_path, str) and raw.startswith("hf:"):
        return _resolve_hf(raw[3:])
    path = Path(raw).expanduser()
    if path.is_dir():
        return ResolvedModel(raw, _onnx_in(path, raw), path)
    if path.is_file():
        if path.suffix.lower() != ".onnx":
            raise ModelLoadError(f"{raw} is not an .onnx file. {_usage()}")
        return ResolvedModel(raw, path, path.parent)
    if path.exists():  # a pipe, device or socket: reading it could block or never end
        raise ModelLoadError(f"{raw} is not a regular file or a directory. {_usage()}")
    raise ModelLoadError(f"{raw} does not exist. {_usage()}")


def onnx_file(model_path: PathLike) -> str:
    """``model_path`` as given when it is not a directory; else the ONNX file in it, found as
    `resolve` finds it (``model.onnx``, ``onnx/model.onnx`` or the only ``.onnx``), ModelLoadError
    if there is none."""
    raw = os.fspath(model_path)
    if not os.path.isdir(raw):
        return raw
    return os.fspath(_onnx_in(Path(raw), raw))
