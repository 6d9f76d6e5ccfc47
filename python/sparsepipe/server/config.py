"""Server configuration: endpoints (task, model, batch size, options) and server settings."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import BatchSize, NumThreads, read_config_file
from ..errors import ConfigError
from ..registry import normalize_task, registered_tasks

__all__ = [
    "API_KEY_ENV",
    "RAY_SETTINGS",
    "Backend",
    "EndpointConfig",
    "ServerConfig",
    "check_backend",
    "field_path",
    "load_server_config",
    "with_overrides",
]

#: endpoint keys that only Ray Serve reads (`sparsepipe serve --backend ray`)
RAY_SETTINGS = ("num_replicas", "autoscaling_config", "max_ongoing_requests", "ray_actor_options")
#: the environment variable an unset ``api_key`` is read from
API_KEY_ENV = "SPARSEPIPE_API_KEY"
#: where a server config runs: this process (uvicorn) or a Ray cluster (Ray Serve)
Backend = Literal["local", "ray"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: paths the server answers itself, which an endpoint's ``route`` would shadow or be shadowed by
_RESERVED_ROUTES = {"/v2", "/metrics", "/docs", "/redoc", "/openapi.json", "/ping", "/invocations"}
#: create() arguments an endpoint sets with its own keys, never in ``kwargs``
_SET_ELSEWHERE = {
    "task": "the endpoint's task",
    "model_path": "the endpoint's model",
    "batch_size": "the endpoint's batch_size",
    "num_threads": "the server's num_threads",
}


class EndpointConfig(BaseModel):
    """One served pipeline: ``/v2/models/<name>/infer`` runs ``task`` on ``model``."""

    model_config = ConfigDict(extra="forbid")

    task: str
    name: Optional[str] = Field(
        default=None, description="URL name; default: kwargs' alias, else the task name"
    )
    model: Optional[str] = Field(default=None, description="model path; default: the task's")
    batch_size: BatchSize = 1
    kwargs: dict[str, Any] = Field(default_factory=dict, description="task options")
    route: Optional[str] = Field(default=None, description="extra POST route for this endpoint")
    max_batch_size: int = Field(
        default=1, ge=1, description="dynamic batching: most items merged into one pipeline call"
    )
    max_queue_delay_ms: float = Field(
        default=5.0, ge=0, le=10_000, description="dynamic batching: longest wait for more requests"
    )
    max_queue_size: Optional[int] = Field(
        default=None,
        ge=1,
        description="most requests waiting or running at once; beyond it 503 with Retry-After "
        "(default: max(32, 4 x max_batch_size x the server's threads))",
    )
    request_timeout_s: Optional[float] = Field(
        default=None,
        gt=0,
        le=86_400,
        description="a request not answered within this many seconds gets 504 and frees its "
        "slot (default: no limit)",
    )
    max_items_per_request: Optional[int] = Field(
        default=1024, ge=1, description="most items (texts, images) in one request; None: no limit"
    )
    max_text_chars: Optional[int] = Field(
        default=1_000_000, ge=1, description="most characters per text; None: no limit"
    )
    max_image_pixels: Optional[int] = Field(
        default=64_000_000, ge=1, description="most pixels per image; None: no limit"
    )
    num_replicas: Optional[Union[Annotated[int, Field(ge=1)], Literal["auto"]]] = Field(
        default=None, description="Ray Serve: replicas of this endpoint (an int or 'auto')"
    )
    autoscaling_config: Optional[dict[str, Any]] = Field(
        default=None, description="Ray Serve: the deployment's autoscaling_config"
    )
    max_ongoing_requests: Optional[int] = Field(
        default=None, ge=1, description="Ray Serve: most requests a replica runs or batches at once"
    )
    ray_actor_options: Optional[dict[str, Any]] = Field(
        default=None, description="Ray Serve: each replica's ray_actor_options (num_cpus...)"
    )

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        task = normalize_task(v)
        canonical = {a: t for t, aliases in registered_tasks().items() for a in (t, *aliases)}
        if task not in canonical:
            raise ValueError(f"unknown task {v!r}; registered: {', '.join(sorted(canonical))}")
        return canonical[task]

    @model_validator(mode="after")
    def _default_name(self) -> EndpointConfig:
        if self.name is None:
            alias = self.kwargs.get("alias")  # DeepSparse's display name of a pipeline
            self.name = alias if isinstance(alias, str) and alias else self.task
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r} must be letters, digits, '.', '_' or '-'")
        if self.route is not None and not self.route.startswith("/"):
            raise ValueError(f"route {self.route!r} must start with '/'")
        if self.route is not None and (
            self.route.rstrip("/") in _RESERVED_ROUTES or self.route.startswith("/v2/")
        ):
            raise ValueError(
                f"route {self.route!r} is one of the server's own routes (/v2/..., "
                f"{', '.join(sorted(_RESERVED_ROUTES))}); choose another"
            )
        for key, where in _SET_ELSEWHERE.items():
            if key in self.kwargs:
                raise ValueError(f"kwargs.{key} is not a task option; set it with {where}")
        if self.autoscaling_config is not None and isinstance(self.num_replicas, int):
            raise ValueError(
                "give num_replicas (a fixed count) or autoscaling_config, not both; "
                "num_replicas: auto with an autoscaling_config tunes Ray's defaults"
            )
        return self

    def ray_settings(self) -> dict[str, Any]:
        """The Ray Serve keys this endpoint sets (empty when it sets none)."""
        return {k: getattr(self, k) for k in RAY_SETTINGS if getattr(self, k) is not None}


class ServerConfig(BaseModel):
    """Everything ``sparsepipe serve --config`` reads."""

    model_config = ConfigDict(extra="forbid")

    endpoints: list[EndpointConfig] = Field(min_length=1)
    num_threads: NumThreads = None
    host: str = "0.0.0.0"
    port: int = Field(default=5543, ge=0, le=65535)
    integration: Literal["local", "sagemaker"] = "local"
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="on SIGTERM: readiness turns 503 and requests in flight get this long to "
        "finish before the server exits",
    )
    api_key: Optional[str] = Field(
        default=None,
        min_length=8,
        repr=False,
        description="inference routes require 'Authorization: Bearer <api_key>' (default: the "
        "SPARSEPIPE_API_KEY environment variable; unset: no auth)",
    )
    access_log: bool = Field(
        default=True,
        description="log one line per request (uvicorn's access log; on Ray, Serve's); off saves "
        "CPU per request where /metrics already counts them",
    )
    image_dirs: list[str] = Field(
        default_factory=list,
        description="directories whose image files requests may name by path (relative paths "
        "are looked up in them, in order); default none: requests send images as data URLs or "
        "uploads and any path is refused with 400",
    )
    ingress_replicas: Optional[int] = Field(
        default=None,
        ge=1,
        le=64,
        description="Ray Serve: replicas of the HTTP ingress, which parses, validates and routes "
        "every request (default 1; /metrics then counts what the replica that answers it served)",
    )

    @field_validator("image_dirs")
    @classmethod
    def _existing_dirs(cls, dirs: list[str]) -> list[str]:
        resolved = []
        for i, d in enumerate(dirs):
            real = os.path.realpath(os.path.expanduser(d)) if d else ""
            if not real or not os.path.isdir(real):
                raise ValueError(f"image_dirs[{i}] {d!r} is not an existing directory")
            resolved.append(real)
        return resolved

    @model_validator(mode="before")
    @classmethod
    def _key_from_environment(cls, data: Any) -> Any:
        key = os.environ.get(API_KEY_ENV)
        if isinstance(data, Mapping) and data.get("api_key") is None and key:
            return {**data, "api_key": key}
        return data

    def queue_limit(self, endpoint: EndpointConfig, backend: Backend = "local") -> Optional[int]:
        """The most requests ``endpoint`` holds at once (waiting or running): its
        ``max_queue_size``, else a few full batches per engine thread on the local server, and
        no limit of its own on Ray (each replica's max_ongoing_requests bounds the work there)."""
        if endpoint.max_queue_size is not None:
            return endpoint.max_queue_size
        if backend == "ray":
            return None
        threads = self.num_threads or os.cpu_count() or 1
        return max(32, 4 * endpoint.max_batch_size * int(threads))

    @model_validator(mode="after")
    def _unique_names(self) -> ServerConfig:
        if self.api_key is not None and self.integration == "sagemaker":
            raise ValueError(
                "api_key does not apply to integration 'sagemaker': SageMaker authenticates "
                "callers itself (IAM) and cannot send the header; unset api_key / "
                f"{API_KEY_ENV}"
            )
        names = [e.name for e in self.endpoints]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"endpoint names must be unique; repeated: {', '.join(dupes)}")
        routes = [e.route.rstrip("/") for e in self.endpoints if e.route is not None]
        dupes = sorted({r for r in routes if routes.count(r) > 1})
        if dupes:
            raise ValueError(f"endpoint routes must be unique; repeated: {', '.join(dupes)}")
        return self


def check_backend(config: ServerConfig, backend: str) -> None:
    """ConfigError when ``config`` sets keys that ``backend`` cannot honour (Ray Serve keys on the
    local server)."""
    if backend not in ("local", "ray"):
        raise ConfigError(f"backend must be 'local' or 'ray', got {backend!r}")
    if backend == "ray":
        return
    if config.ingress_replicas is not None:
        raise ConfigError(
            "ingress_replicas is a Ray Serve setting; run the config with "
            "`sparsepipe serve --backend ray` or remove the key"
        )
    for i, ep in enumerate(config.endpoints):
        keys = ep.ray_settings()
        if keys:
            raise ConfigError(
                f"endpoints[{i}] ({ep.name!r}) sets {', '.join(keys)}, which only Ray Serve reads; "
                "run it with `sparsepipe serve --backend ray` or remove the key(s)"
            )


def field_path(loc: tuple[Union[str, int], ...]) -> str:
    """A validation error location as a path: ``endpoints[0].batch_size``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def with_overrides(config: ServerConfig, **values: Any) -> ServerConfig:
    """``config`` with the keys in ``values`` that are not None replaced (command-line flags),
    validated like a config file: ConfigError names a bad one."""
    updates = {k: v for k, v in values.items() if v is not None}
    if not updates:
        return config
    return load_server_config({**config.model_dump(), **updates})


def load_server_config(
    source: Union[ServerConfig, Mapping[str, Any], str, os.PathLike[str]],
) -> ServerConfig:
    """A validated `ServerConfig` from an object, a dict or a YAML/JSON file; ConfigError names
    the bad key otherwise."""
    if isinstance(source, ServerConfig):
        return source
    if isinstance(source, (str, os.PathLike)):
        source = read_config_file(source, "server config", any_suffix=True)
    try:
        return ServerConfig.model_validate(dict(source))
    except ValidationError as e:
        lines = [f"  {field_path(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError("invalid server config:\n" + "\n".join(lines)) from e
