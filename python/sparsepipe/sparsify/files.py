"""Pruning a model file into a new file (`sparsify_file`): loading, external data, safe writes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import ConfigError, ModelLoadError
from .prune import LayerResult, _sparsify_in_place, _validate

__all__ = ["PathLike", "sparsify_file"]

PathLike = Union[str, "os.PathLike[str]"]

_PROTOBUF_LIMIT = 2**31 - 2**26  # inline models must stay below protobuf's 2 GiB, with a margin


def _graph_tensors(graph: Any) -> Any:
    """Every TensorProto of `graph` and its subgraphs (initializers and tensor attributes)."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


def _external_locations(model: Any) -> set[str]:
    """The external data files (relative locations) the model's tensors point at."""
    from onnx import TensorProto

    found = set()
    for t in _graph_tensors(model.graph):
        if t.data_location == TensorProto.EXTERNAL:
            for entry in t.external_data:
                if entry.key == "location":
                    found.add(entry.value)
    return found


def _load(path: Path) -> tuple[Any, set[str]]:
    """The model at `path` with its external data loaded, and the external files it used."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelLoadError(f"cannot read {path} as an ONNX model: {e}") from e
    if not model.HasField("graph") or model.ir_version <= 0 or not model.graph.node:
        raise ModelLoadError(f"{path} is not an ONNX model (no graph or IR version in it)")
    locations = _external_locations(model)
    if locations:
        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as e:
            raise ModelLoadError(f"cannot read the external data of {path}: {e}") from e
    return model, locations


def _same_file(a: Path, b: Path) -> bool:
    try:
        if b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _save(model: Any, dst: Path, external: bool, overwrite: bool) -> None:
    """Write `model` to `dst` through a temporary folder beside it, then rename into place."""
    import onnx

    data_name = f"{dst.name}.data"
    if external and (dst.parent / data_name).exists() and not overwrite:
        raise ConfigError(
            f"{dst.parent / data_name} (the output's external data file) already exists; pass "
            "overwrite=True (--overwrite) to replace it"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        if external:
            onnx.save_model(
                model,
                str(tmp / dst.name),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
            if (tmp / data_name).exists():
                os.replace(tmp / data_name, dst.parent / data_name)
        else:
            onnx.save_model(model, str(tmp / dst.name))
        os.replace(tmp / dst.name, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sparsify_file(
    src: PathLike,
    dst: PathLike,
    sparsity: float,
    *,
    overwrite: bool = False,
    include: Optional[str] = None,
    exclude: Optional[str] = None,
    scope: str = "per-layer",
) -> list[LayerResult]:
    """Prune the model at `src` (a file, directory or ``zoo:`` name) into the new file `dst`.

    Refuses to write over `src`, or over an existing `dst` unless ``overwrite``. The file appears
    complete or not at all; it keeps its weights in ``<dst>.data`` when the source used external
    data or the result would exceed protobuf's 2 GB limit.
    """
    from .. import models

    target, inc, exc, scope = _validate(sparsity, include, exclude, scope)
    if isinstance(src, str) and src.startswith(("zoo:", "hf:")):
        source = models.resolve(src).onnx_path
    else:
        source = Path(os.fspath(src)).expanduser()
        if source.is_dir():
            source = models.resolve(source).onnx_path
        elif not source.is_file():
            if source.exists():  # a pipe, device or socket: reading it could block
                raise ModelLoadError(f"{src} is not a regular file (expected an .onnx file)")
            raise ModelLoadError(f"{src} does not exist (expected an .onnx file)")
    out = Path(os.fspath(dst)).expanduser()
    if out.is_dir():
        raise ConfigError(f"{out} is a directory; give the output file, e.g. {out / source.name}")
    if _same_file(source, out):
        raise ConfigError(f"refusing to overwrite the input model {source}; choose another output")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")

    model, locations = _load(source)
    data_file = out.parent / f"{out.name}.data"
    if any(_same_file(source.parent / loc, data_file) for loc in locations):
        raise ConfigError(
            f"refusing to overwrite the input model's external data {data_file}; choose another "
            "output name"
        )
    results = _sparsify_in_place(model, target, inc, exc, scope)
    try:
        size = model.ByteSize()
    except Exception:  # protobuf may refuse to size a message beyond its limit
        size = _PROTOBUF_LIMIT + 1
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(model, out, bool(locations) or size > _PROTOBUF_LIMIT, overwrite)
    return results
