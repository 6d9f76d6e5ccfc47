"""Configuration files: the one YAML/JSON reader, and `PipelineConfig` (what `Pipeline.create`
takes, as a validated, serialisable object)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from .aliases import CREATE_ALIASES, resolve_aliases
from .engine import check_engine_options, check_engine_type
from .errors import ConfigError

__all__ = [
    "BatchSize",
    "EngineType",
    "NumThreads",
    "PipelineConfig",
    "load_pipeline_config",
    "read_config_file",
]

#: ``batch_size`` in a config: None (any batch) or an int >= 1, checked by the engine's check
BatchSize = Annotated[
    Optional[int], AfterValidator(lambda v: check_engine_options(batch_size=v)[0])
]
#: ``num_threads`` in a config: None (every core) or an int >= 1, checked by the engine's check
NumThreads = Annotated[
    Optional[int], AfterValidator(lambda v: check_engine_options(num_threads=v)[1])
]
#: ``engine_type`` in a config, checked as `create_engine` checks it
EngineType = Annotated[str, AfterValidator(check_engine_type)]

_SUFFIXES = (".yaml", ".yml", ".json")


def read_config_file(
    path: Union[str, os.PathLike[str]], what: str, *, any_suffix: bool = False
) -> Mapping[str, Any]:
    """The mapping a ``.yaml``/``.yml``/``.json`` file holds (with ``any_suffix``, other names are
    read as YAML); ConfigError naming ``what`` (e.g. ``"server config"``) and the file when it
    cannot be read or parsed, or holds no mapping."""
    path = Path(os.fspath(path)).expanduser()
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES and not any_suffix:
        raise ConfigError(f"{what} {path} must end in .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what} {path}: {e}") from e
    try:
        if suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:
        kind = "JSON" if suffix == ".json" else "YAML"
        raise ConfigError(f"{what} {path} is not valid {kind}: {e}") from e
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{what} {path} must hold a mapping of keys to values, got {type(data).__name__}"
        )
    return data


class PipelineConfig(BaseModel):
    """Everything `Pipeline.create` takes, as a validated, serialisable object."""

    model_config = ConfigDict(extra="forbid")

    task: str
    model_path: Optional[str] = None
    engine_type: EngineType = "sparsepipe"
    batch_size: BatchSize = 1
    num_threads: NumThreads = None
    sequence_length: Optional[Union[int, list[int]]] = None
    #: DeepSparse's fields (``num_cores`` is read as ``num_threads``): see `Pipeline.create`
    alias: Optional[str] = None
    scheduler: Optional[str] = None
    input_shapes: Optional[list[list[int]]] = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _deepsparse_names(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = resolve_aliases(data, CREATE_ALIASES)
        return data


def load_pipeline_config(
    config: Union[PipelineConfig, Mapping[str, Any], str, os.PathLike[str]],
) -> PipelineConfig:
    """A validated `PipelineConfig` from itself, a dict or a ``.yaml``/``.yml``/``.json`` file."""
    if isinstance(config, (str, os.PathLike)):
        config = read_config_file(config, "pipeline config")
    if isinstance(config, Mapping):
        try:
            config = PipelineConfig.model_validate(dict(config))
        except ValidationError as e:
            raise ConfigError(f"invalid pipeline config:\n{e}") from e
    if not isinstance(config, PipelineConfig):
        raise ConfigError(
            "from_config takes a PipelineConfig, a dict or a file path, "
            f"got {type(config).__name__}"
        )
    return config
