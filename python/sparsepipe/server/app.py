"""The HTTP server: KServe v2 routes taking each task's own JSON bodies or Open Inference Protocol
v2 tensors, SageMaker routes, metrics.

Pipelines are built before the app is returned, so a bad model or option fails before serving.
Each request runs its pipeline in a worker thread (the engine releases the GIL), so the event
loop keeps accepting requests while models run. The same app fronts Ray Serve deployments
(`sparsepipe.ray.serve`): only how an `Endpoint` runs a request differs.
"""

import asyncio
import base64
import binascii
import functools
import hmac
import json
import logging
import os
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional

import anyio
from fastapi import FastAPI, File, Path, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import ConfigError, InputError, SparsepipeError
from ..pipeline import Pipeline
from .batching import DynamicBatcher, Merged, call_contained
from .config import (
    Backend,
    EndpointConfig,
    ServerConfig,
    check_backend,
    field_path,
    load_server_config,
    with_overrides,
)
from .limits import RequestTooLarge, check_limits
from .metrics import ServerMetrics
from .responses import documented
from .tensors import (
    HEADER_LENGTH,
    TensorError,
    describe_fields,
    encode_response,
    is_tensor_request,
    parse_request,
)

__all__ = [
    "Endpoint",
    "EndpointSpec",
    "EndpointUnavailable",
    "LocalEndpoint",
    "RequestInvalid",
    "RequestTimedOut",
    "build_pipeline",
    "create_app",
    "item_count",
    "serve",
]

logger = logging.getLogger("sparsepipe.server")

SAGEMAKER_MODEL_DIR = "/opt/ml/model"


class EndpointUnavailable(Exception):
    """The endpoint cannot run a request now (its worker stopped or is overloaded): HTTP 503."""


class RequestTimedOut(Exception):
    """A request was not answered within its endpoint's ``request_timeout_s``: HTTP 504."""


class RequestInvalid(Exception):
    """A request failed the input schema's validation where the error cannot travel as a pydantic
    ValidationError (another process): HTTP 422 with ``errors`` as the detail."""

    def __init__(self, errors: list[Any]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


@dataclass(frozen=True)
class EndpointSpec:
    """What the HTTP layer needs to know of a served pipeline: its routes, schemas, metadata."""

    task: str
    model: str
    batch_size: Optional[int]
    input_schema: type[BaseModel]
    output_schema: type[BaseModel]
    image_field: Optional[str]

    @classmethod
    def of(cls, pipeline: Pipeline) -> "EndpointSpec":
        """The spec of ``pipeline``."""
        return cls(
            task=str(pipeline.task),
            model=str(pipeline.model_path),
            batch_size=pipeline.batch_size,
            input_schema=pipeline.input_schema,
            output_schema=pipeline.output_schema,
            image_field=type(pipeline).image_field,
        )


class Endpoint(ABC):
    """A served pipeline as the HTTP layer sees it: a spec, and a way to run one request."""

    #: where its requests run ("local": this process; "ray": a Ray Serve deployment)
    backend: Backend = "local"

    def __init__(self, config: EndpointConfig, spec: EndpointSpec) -> None:
        self.config = config
        self.name = str(config.name)
        self.spec = spec

    @abstractmethod
    async def infer(self, body: BaseModel, options: Optional[dict[str, Any]]) -> Merged:
        """The output of one request (with its timings, queueing time and batch size); raises
        ValidationError/RequestInvalid, InputError, EndpointUnavailable or any other exception."""

    def metadata(self) -> dict[str, Any]:
        """The endpoint's KServe v2 model metadata."""
        spec = self.spec
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "sparsepipe",
            "task": spec.task,
            "model": spec.model,
            "batch_size": spec.batch_size,
            "inputs": describe_fields(spec.input_schema, outputs=False),
            "outputs": describe_fields(spec.output_schema, outputs=True),
            "input_schema": spec.input_schema.model_json_schema(),
            "output_schema": spec.output_schema.model_json_schema(),
        }


class LocalEndpoint(Endpoint):
    """An endpoint whose pipeline runs in this process (worker threads, dynamic batching)."""

    def __init__(self, config: EndpointConfig, pipeline: Pipeline) -> None:
        super().__init__(config, EndpointSpec.of(pipeline))
        self.pipeline = pipeline
        self.batcher: Optional[DynamicBatcher] = None
        fields = type(pipeline).batch_fields
        if config.max_batch_size > 1 and fields is not None:
            self.batcher = DynamicBatcher(
                fields,
                pipeline,
                pipeline.input_schema,
                pipeline.output_schema,
                max_items=config.max_batch_size,
                max_delay_s=config.max_queue_delay_ms / 1e3,
                timings=lambda: pipeline.timings,
            )

    async def infer(self, body: BaseModel, options: Optional[dict[str, Any]]) -> Merged:
        if self.batcher is not None and not options:
            return await self.batcher.submit(body)
        received = time.perf_counter()
        started = 0.0

        def call() -> tuple[Any, Any]:
            nonlocal started
            started = time.perf_counter()
            out = call_contained(self.pipeline, body, **(options or {}))
            return out, self.pipeline.timings

        out, timings = await anyio.to_thread.run_sync(call)
        return Merged(out, timings, started - received, item_count(body))


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _decode_images(value: Any, image_dirs: list[str], where: str) -> Any:
    """The images of a JSON body for the pipeline: data URLs (``data:image/png;base64,...``)
    become bytes; a path is allowed only inside ``image_dirs`` (InputError naming ``where``
    otherwise) and becomes the file's resolved path."""
    if isinstance(value, list):
        return [_decode_images(v, image_dirs, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    if value.startswith("data:"):
        try:
            return base64.b64decode(value.split(",", 1)[1], validate=True)
        except (IndexError, binascii.Error) as e:
            raise InputError(f"{where}: the image data URL is not valid base64: {e}") from e
    return _allowed_image_path(value, image_dirs, where)


def _allowed_image_path(path: str, image_dirs: list[str], where: str) -> str:
    shown = path if len(path) <= 200 else path[:200] + "..."
    if not image_dirs:
        raise InputError(
            f"{where}: {shown!r} is not a data:image/...;base64, URL, and this server reads no "
            "files named in requests; send the image as a data URL or upload it (multipart to "
            "/v2/models/<name>/infer/from_files, or an image/* body to /invocations), or list its "
            "directory in the server config's image_dirs"
        )
    if path.startswith(("http://", "https://")):
        raise InputError(f"{where}: URLs are not downloaded; send the image as a data URL")
    try:
        candidates = (
            [os.path.realpath(path)]
            if os.path.isabs(path)
            else [os.path.realpath(os.path.join(d, path)) for d in image_dirs]
        )
    except ValueError as e:  # a NUL character
        raise InputError(f"{where}: {shown!r} is not a valid path: {e}") from None
    inside = [c for c in candidates if any(_within_dir(c, d) for d in image_dirs)]
    if not inside:
        raise InputError(
            f"{where}: {shown!r} is outside the server's image_dirs ({', '.join(image_dirs)})"
        )
    found = next((c for c in inside if os.path.isfile(c)), None)
    if found is None:
        raise InputError(f"{where}: no image file {shown!r} in image_dirs")
    return found


def _within_dir(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def item_count(body: BaseModel) -> int:
    """The number of items a request holds: the length of its first field when a list, else 1."""
    for value in body.__dict__.values():
        return len(value) if isinstance(value, list) else 1
    return 1


def build_pipeline(
    ep: EndpointConfig, config: ServerConfig, *, num_threads: Optional[int] = None
) -> Pipeline:
    """The pipeline of endpoint ``ep`` (its errors name the endpoint)."""
    model = ep.model
    if model is None and config.integration == "sagemaker":
        model = os.environ.get("SPARSEPIPE_SAGEMAKER_MODEL_DIR", SAGEMAKER_MODEL_DIR)
    try:
        return Pipeline.create(
            ep.task,
            model,
            batch_size=ep.batch_size,
            num_threads=num_threads if num_threads is not None else config.num_threads,
            **ep.kwargs,
        )
    except SparsepipeError as e:
        raise type(e)(f"endpoint {ep.name!r}: {e}") from e


def _build_endpoints(config: ServerConfig) -> dict[str, Endpoint]:
    check_backend(config, "local")
    return {str(ep.name): LocalEndpoint(ep, build_pipeline(ep, config)) for ep in config.endpoints}


class _LimitBody:
    """ASGI middleware answering 413 when a request body exceeds ``limit`` bytes."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = _error(413, f"request body larger than max_request_bytes ({self.limit} bytes)")
        if (
            declared is not None
            and declared.isdigit()
            and (len(declared) > 18 or int(declared) > self.limit)
        ):
            await too_big(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await too_big(scope, receive, send)


_INFER_PATH = re.compile(r"^/v2/models/[^/]+/infer(/from_files)?$")


class _RequireKey:
    """ASGI middleware answering 401 to an inference request without ``Authorization: Bearer
    <key>`` (compared in constant time); every other route stays open."""

    def __init__(self, app: Any, key: str, routes: set[str]) -> None:
        self.app = app
        self.key = key.encode()
        self.routes = routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path in self.routes or _INFER_PATH.match(path)):
            header = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, token = header.partition(b" ")
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)):
                refused = JSONResponse(
                    {"error": "missing or wrong API key: send 'Authorization: Bearer <api_key>'"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _document_auth(app: FastAPI) -> None:
    """Marks the inference operations of ``app``'s OpenAPI document as needing the bearer key."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        if "bearer" not in schema.setdefault("components", {}).get("securitySchemes", {}):
            schema["components"].setdefault("securitySchemes", {})["bearer"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "the server's api_key",
            }
            for path, operations in schema.get("paths", {}).items():
                post = operations.get("post")
                if post is not None and (path in app.state.auth_routes or _INFER_PATH.match(path)):
                    post["security"] = [{"bearer": []}]
                    post.setdefault("responses", {})["401"] = {
                        "description": "missing or wrong API key",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ErrorBody"}
                            }
                        },
                    }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class _TooLarge(Exception):
    pass


def create_app(config: Any, *, endpoints: Optional[dict[str, Endpoint]] = None) -> FastAPI:
    """The FastAPI app serving ``config`` (a ServerConfig, dict or file); builds its pipelines
    in this process unless ``endpoints`` (e.g. Ray Serve deployments) are given."""
    config = load_server_config(config)
    endpoints = endpoints if endpoints is not None else _build_endpoints(config)
    metrics = ServerMetrics()
    app = FastAPI(
        title="sparsepipe",
        version=__version__,
        description="Inference pipelines served with KServe v2 routes and the tasks' own schemas.",
    )
    app.state.endpoints = endpoints
    app.state.metrics = metrics
    app.state.config = config

    held: dict[str, int] = dict.fromkeys(endpoints, 0)  # requests waiting or running
    app.state.draining = False  # set on SIGTERM by `serve`: readiness 503, no new requests
    app.state.in_flight = lambda: sum(held.values())

    async def run(ep: Endpoint, body: BaseModel, options: Optional[dict[str, Any]] = None) -> Any:
        received = time.perf_counter()
        status = 500
        limit = config.queue_limit(ep.config, ep.backend)
        admitted = limit is None or held[ep.name] < limit
        try:
            if app.state.draining:
                admitted = False
                raise EndpointUnavailable("the server is shutting down; retry on another instance")
            if not admitted:
                raise EndpointUnavailable(
                    f"endpoint {ep.name!r} already holds {limit} requests (max_queue_size); "
                    "retry shortly, or raise its max_queue_size"
                )
            held[ep.name] += 1
            limits = functools.partial(
                check_limits,
                body,
                item_count(body),
                ep.spec.image_field,
                max_items=ep.config.max_items_per_request,
                max_text_chars=ep.config.max_text_chars,
                max_image_pixels=ep.config.max_image_pixels,
            )
            if ep.spec.image_field is None:
                limits()
            else:  # reads image headers, from files too: off the event loop
                await anyio.to_thread.run_sync(limits)
            result = await _within(ep.infer(body, options), ep.config.request_timeout_s)
            status = 200
            metrics.batch_size.labels(ep.name).observe(result.batch_items)
            if result.timings is not None:
                for stage in ("pre", "engine", "post"):
                    metrics.latency.labels(ep.name, stage).observe(getattr(result.timings, stage))
            metrics.latency.labels(ep.name, "queue").observe(max(0.0, result.queue_s))
            return result.output
        except (ValidationError, RequestInvalid) as e:
            status = 422
            metrics.errors.labels(ep.name, "validation").inc()
            errors = e.errors if isinstance(e, RequestInvalid) else e.errors(include_url=False)
            return JSONResponse({"detail": errors}, status_code=422)
        except InputError as e:
            status = 400
            metrics.errors.labels(ep.name, "input").inc()
            return _error(400, str(e))
        except EndpointUnavailable as e:
            status = 503
            metrics.errors.labels(ep.name, "unavailable" if admitted else "overloaded").inc()
            return JSONResponse({"error": str(e)}, status_code=503, headers={"Retry-After": "1"})
        except RequestTooLarge as e:
            status = 413
            metrics.errors.labels(ep.name, "too_large").inc()
            return _error(413, str(e))
        except RequestTimedOut:
            status = 504
            metrics.errors.labels(ep.name, "timeout").inc()
            return _error(
                504,
                f"endpoint {ep.name!r} did not answer within request_timeout_s "
                f"({ep.config.request_timeout_s} s); retry, send fewer items, or raise it",
            )
        except Exception as e:
            error_id = getattr(e, "error_id", None) or uuid.uuid4().hex[:12]
            logger.exception("endpoint %s failed (error id %s)", ep.name, error_id)
            metrics.errors.labels(ep.name, "internal").inc()
            return _error(500, "the pipeline failed; see the server log", error_id=error_id)
        finally:
            if admitted:
                held[ep.name] -= 1
            metrics.requests.labels(ep.name, str(status)).inc()
            metrics.latency.labels(ep.name, "total").observe(time.perf_counter() - received)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        name = request.path_params.get("name") or _endpoint_from_path(request.url.path, endpoints)
        if name in endpoints:
            metrics.requests.labels(name, "422").inc()
            metrics.errors.labels(name, "validation").inc()
        errors = [
            {k: v for k, v in err.items() if k in ("loc", "msg", "type")} for err in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:
            message = f"{exc.detail}: send what the route's schema takes (see /docs)"
        elif exc.status_code == 404:
            message = f"no route {request.url.path!r}; the routes are listed at /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path!r}; see /docs"
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/v2/health/live", tags=["health"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get(
        "/v2/health/ready",
        tags=["health"],
        responses={503: {"description": "the server is shutting down"}},
    )
    async def ready() -> Any:
        if app.state.draining:
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True}

    @app.get("/v2", tags=["metadata"])
    async def server_metadata() -> dict[str, Any]:
        return {"name": "sparsepipe", "version": __version__, "extensions": ["metrics"]}

    @app.get(
        "/metrics",
        tags=["metrics"],
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "Prometheus text exposition format 0.0.4",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    for ep in endpoints.values():
        _add_endpoint_routes(app, ep, run)

    served: Any = Path(
        description="the name of a served model (any other name gets 404)",
        json_schema_extra={"enum": sorted(endpoints)},
    )

    @app.get("/v2/models/{name}", tags=["metadata"], responses=documented(404))
    async def model_metadata(name: str = served) -> Any:
        ep = endpoints.get(name)
        return ep.metadata() if ep else _unknown(name, endpoints)

    @app.get(
        "/v2/models/{name}/ready",
        tags=["health"],
        responses={**documented(404), 503: {"description": "the server is shutting down"}},
    )
    async def model_ready(name: str = served) -> Any:
        if name not in endpoints:
            return _unknown(name, endpoints)
        if app.state.draining:
            return JSONResponse({"name": name, "ready": False}, status_code=503)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer", include_in_schema=False)
    async def unknown_infer(name: str) -> Any:
        return _unknown(name, endpoints)

    @app.post("/v2/models/{name}/infer/from_files", include_in_schema=False)
    async def unknown_files(name: str) -> Any:
        return _unknown(name, endpoints)

    if config.integration == "sagemaker":
        _add_sagemaker_routes(app, next(iter(endpoints.values())), run)

    app.add_middleware(_LimitBody, limit=config.max_request_bytes)
    if config.api_key is not None:
        app.state.auth_routes = {ep.config.route for ep in endpoints.values() if ep.config.route}
        app.add_middleware(_RequireKey, key=config.api_key, routes=app.state.auth_routes)
        _document_auth(app)
    return app


async def _within(work: Any, timeout: Optional[float]) -> Any:
    """``await work``, or RequestTimedOut after ``timeout`` seconds (None: no limit); the work
    left behind is cancelled (a request still queued never runs) and its outcome discarded."""
    if timeout is None:
        return await work
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_discard)
        raise
    if task in done:
        return task.result()
    task.cancel()
    task.add_done_callback(_discard)
    raise RequestTimedOut()


def _discard(task: "asyncio.Future[Any]") -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


def _endpoint_from_path(path: str, endpoints: dict[str, Endpoint]) -> Optional[str]:
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
        return parts[2]
    for ep in endpoints.values():
        if ep.config.route and path == ep.config.route:
            return ep.name
    return None


def _unknown(name: str, endpoints: dict[str, Endpoint]) -> JSONResponse:
    return _error(404, f"unknown model {name!r}; served: {', '.join(sorted(endpoints))}")


#: the error responses of every inference route
INFER_ERRORS = documented(400, 413, 422, 500, 503, 504)


def _add_endpoint_routes(app: FastAPI, ep: Endpoint, run: Any) -> None:
    input_model = ep.spec.input_schema
    output_model = ep.spec.output_schema
    image_field = ep.spec.image_field

    async def infer(body: input_model) -> Any:  # type: ignore[valid-type]
        if image_field is not None:
            try:
                decoded = _decode_images(
                    getattr(body, image_field), app.state.config.image_dirs, image_field
                )
                body = input_model.model_validate({**dict(body), image_field: decoded})
            except InputError as e:
                app.state.metrics.requests.labels(ep.name, "400").inc()
                return _error(400, str(e))
        return await run(ep, body)

    async def infer_tensors(request: Request, payload: Any) -> Response:
        header = request.headers.get(HEADER_LENGTH)
        raw = await request.body()
        try:
            if payload is not None:
                binary = b""
            elif header is not None:
                if not header.isdigit() or len(header) > 18 or int(header) > len(raw):
                    raise TensorError(
                        f"Inference-Header-Content-Length {header!r} is not a length within the "
                        f"{len(raw)}-byte body"
                    )
                head, binary = raw[: int(header)], raw[int(header) :]
                try:
                    payload = json.loads(head)
                except (ValueError, RecursionError) as e:
                    raise TensorError(f"the request's JSON header is not valid JSON: {e}") from None
            fields = list(input_model.model_fields)
            parsed = parse_request(payload, binary, fields, image_field)
            if image_field is not None and image_field in parsed.fields:
                parsed.fields[image_field] = _decode_images(
                    parsed.fields[image_field], app.state.config.image_dirs, image_field
                )
            try:
                body = input_model.model_validate(parsed.fields)
            except ValidationError as e:
                raise TensorError(_validation_message(e)) from None
        except InputError as e:
            app.state.metrics.requests.labels(ep.name, "400").inc()
            return _error(400, str(e))
        result = await run(ep, body, parsed.options)
        if isinstance(result, Response):
            if result.status_code == 422:
                detail = json.loads(bytes(result.body)).get("detail", [])
                return _error(400, "; ".join(_where_msg(d) for d in detail) or "invalid request")
            return result
        try:
            content, json_length = encode_response(ep.name, parsed, result)
        except TensorError as e:
            return _error(400, str(e))
        if json_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(json_length)},
        )

    summary = f"{ep.spec.task} on {ep.name}"
    app.router.add_api_route(
        f"/v2/models/{ep.name}/infer",
        infer,
        methods=["POST"],
        response_model=output_model,
        tags=[ep.name],
        summary=summary,
        responses=INFER_ERRORS,
        description="Takes the task's own JSON schema, or Open Inference Protocol v2 tensors "
        "(JSON, or with the binary tensor extension).",
        name=f"infer_{ep.name}",
        route_class_override=_tensor_route(infer_tensors),
    )
    if ep.config.route:
        app.post(
            ep.config.route,
            response_model=output_model,
            tags=[ep.name],
            summary=summary,
            responses=INFER_ERRORS,
        )(infer)
    if image_field is not None:

        async def infer_files(files: list[UploadFile] = File(..., min_length=1)) -> Any:  # noqa: B008
            images = [await f.read() for f in files]
            return await run(ep, input_model(**{image_field: images}))

        app.post(
            f"/v2/models/{ep.name}/infer/from_files",
            response_model=output_model,
            tags=[ep.name],
            summary=f"{summary}, images uploaded as files",
            name=f"infer_files_{ep.name}",
            responses=INFER_ERRORS,
        )(infer_files)


def _where_msg(err: dict[str, Any]) -> str:
    return f"{field_path(tuple(p for p in err.get('loc', ()) if p != 'body'))}: {err.get('msg')}"


def _validation_message(e: ValidationError) -> str:
    return "; ".join(_where_msg(dict(err)) for err in e.errors(include_url=False))


def _tensor_route(handle: Any) -> type[APIRoute]:
    """A route class that answers Open Inference Protocol tensor requests with ``handle(request,
    payload)`` (payload: the parsed JSON body, or None when the JSON is a binary request's header)
    and passes every other request to the route's own (schema-validated) handler."""

    class TensorAwareRoute(APIRoute):
        def get_route_handler(self) -> Any:
            default = super().get_route_handler()

            async def route(request: Request) -> Response:
                if request.headers.get(HEADER_LENGTH) is not None:
                    return await handle(request, None)
                raw = await request.body()
                if b'"datatype"' in raw:
                    try:
                        payload = json.loads(raw)
                    except (ValueError, RecursionError):  # the route's own parser says why
                        payload = None
                    if is_tensor_request(payload):
                        return await handle(request, payload)
                return await default(request)

            return route

    return TensorAwareRoute


def _add_sagemaker_routes(app: FastAPI, ep: Endpoint, run: Any) -> None:
    input_model = ep.spec.input_schema
    output_model = ep.spec.output_schema
    image_field = ep.spec.image_field

    @app.get(
        "/ping", tags=["sagemaker"], responses={503: {"description": "the server is shutting down"}}
    )
    async def ping() -> Response:
        return Response(status_code=503 if app.state.draining else 200)

    @app.post(
        "/invocations",
        tags=["sagemaker"],
        response_model=output_model,
        responses=documented(400, 413, 415, 422, 500, 503, 504),
    )
    async def invocations(request: Request) -> Any:
        content_type = (
            request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        )
        data = await request.body()
        if content_type.startswith("image/") or content_type == "application/x-image":
            if image_field is None:
                return _error(415, f"{ep.spec.task} takes application/json, not {content_type}")
            body = input_model(**{image_field: [data]})
        elif content_type in ("application/json", ""):
            try:
                payload = json.loads(data or b"null")
                if image_field is not None and isinstance(payload, dict):
                    images = payload.get(image_field)
                    payload[image_field] = _decode_images(
                        images, app.state.config.image_dirs, image_field
                    )
                body = input_model.model_validate(payload)
            except InputError as e:
                return _error(400, str(e))
            except (ValueError, RecursionError) as e:
                if isinstance(e, ValidationError):
                    return JSONResponse({"detail": e.errors(include_url=False)}, status_code=422)
                return _error(400, f"the request body is not valid JSON: {e}")
        else:
            return _error(
                415, f"unsupported content type {content_type!r}; use application/json or image/*"
            )
        return await run(ep, body)


def serve(config: Any, *, host: Optional[str] = None, port: Optional[int] = None) -> None:
    """Builds the app for ``config`` and serves it with uvicorn until interrupted."""
    import uvicorn

    config = load_server_config(config)
    if config.integration == "sagemaker":
        bound = os.environ.get("SAGEMAKER_BIND_TO_PORT")
        if bound is not None and not bound.strip().isdigit():
            raise ConfigError(f"SAGEMAKER_BIND_TO_PORT must be a port number, got {bound!r}")
        port = int(bound) if bound is not None else (port or 8080)
    config = with_overrides(config, host=host, port=port)
    app = create_app(config)
    if not app.state.endpoints:
        raise ConfigError("no endpoints to serve")
    settings = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        timeout_graceful_shutdown=1,
        access_log=config.access_log,
    )
    _draining_server(settings, app, config.shutdown_grace_s).run()


def _draining_server(settings: Any, app: FastAPI, grace: float) -> Any:
    """uvicorn's server, but SIGTERM/SIGINT first drains: readiness turns 503 and new requests
    get 503 while those in flight finish (up to ``grace`` seconds); then it exits with status 0.
    A second signal exits at once."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if app.state.draining:
                self.should_exit = self.force_exit = True
                return
            app.state.draining = True
            logger.warning("shutting down: %d request(s) in flight", app.state.in_flight())
            threading.Thread(target=self._drain, daemon=True).start()

        def _drain(self) -> None:
            deadline = time.monotonic() + grace
            while app.state.in_flight() > 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.should_exit = True

    return DrainingServer(settings)
