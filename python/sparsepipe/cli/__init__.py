"""The ``sparsepipe`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

__all__ = ["main"]


def _models_list(args: argparse.Namespace) -> int:
    from .. import models

    infos = models.list()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": i.uri,
                        "task": i.task,
                        "description": i.description,
                        "license": i.license,
                        "path": str(i.path),
                    }
                    for i in infos
                ],
                indent=2,
            )
        )
        return 0
    width = max(len(i.uri) for i in infos)
    task_width = max(len(i.task) for i in infos)
    license_width = max(len(i.license) for i in infos)
    for i in infos:
        print(
            f"{i.uri:<{width}}  {i.task:<{task_width}}  {i.license:<{license_width}}  "
            f"{i.description}"
        )
    return 0


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def _image_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    raise FileNotFoundError(f"--source {source} is neither an image file nor a folder")


def _progress(items: list[Path], desc: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return items
    return tqdm(items, desc=desc, unit="img", file=sys.stderr, disable=not items)


def _annotate(args: argparse.Namespace) -> int:
    from .. import Pipeline
    from ..errors import ConfigError, SparsepipeError
    from .declarations import declaring_task

    try:
        task = declaring_task(
            args.task, lambda cls: cls.annotate is not Pipeline.annotate, "annotate images"
        )
    except ConfigError as e:
        raise SystemExit(f"sparsepipe annotate: {e}") from None
    source = Path(args.source)
    files = _image_files(source)
    save_dir = Path(args.save_dir)
    if save_dir.exists() and not save_dir.is_dir():
        raise ConfigError(f"--save-dir {save_dir} is a file; give a folder for the copies")
    if any((save_dir / p.name).resolve() == p.resolve() for p in files):
        raise SystemExit(
            "sparsepipe annotate: --save-dir must differ from the folder of the source images "
            "(annotated copies would overwrite them)"
        )
    given = {"conf_threshold": args.conf_threshold, "iou_threshold": args.iou_threshold}
    options = {k: v for k, v in given.items() if v is not None}
    pipe = Pipeline.create(task, args.model_path, num_threads=args.num_threads, **options)
    save_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in _progress(files, "annotating"):
        try:
            pipe.annotate(path).save(save_dir / path.name)
        except (SparsepipeError, OSError) as e:
            failed += 1
            print(f"sparsepipe annotate: skipped {path}: {e}", file=sys.stderr)
    print(
        f"annotated {len(files) - failed} of {len(files)} image(s) into {save_dir}", file=sys.stderr
    )
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    from .. import Pipeline
    from ..errors import InputError
    from .declarations import task_options

    if args.json is not None and args.inputs:
        raise InputError("give the input either as arguments or with --json, not both")
    pipe = Pipeline.create(args.task, args.model_path, **task_options(args.option))
    if args.json is not None:
        try:
            data = json.loads(args.json)
        except ValueError as e:
            raise InputError(f"--json is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise InputError("--json must be a JSON object with the task's input fields")
        result = pipe(**data)
    elif args.inputs:
        fields = list(pipe.input_schema.model_fields)
        if len(fields) == 1 and len(args.inputs) > 1:
            result = pipe(list(args.inputs))
        else:
            result = pipe(*args.inputs)
    else:
        raise InputError("give the input as arguments or with --json")
    print(result.model_dump_json(indent=2) if hasattr(result, "model_dump_json") else result)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    try:
        from ..server import load_server_config, serve
    except ImportError as e:
        raise ConfigError(
            f"sparsepipe serve needs the server extra ({e.name} is missing): "
            "pip install 'sparsepipe[server]'"
        ) from e

    if args.config:
        if args.task or args.model_path:
            raise ConfigError("give either --config or --task/--model-path, not both")
        config = load_server_config(args.config).model_dump()
    else:
        if not args.task:
            raise ConfigError("sparsepipe serve needs --task (or --config server.yaml)")
        endpoint = {"task": args.task, "model": args.model_path, "batch_size": args.batch_size}
        config = {"endpoints": [endpoint]}
    if args.num_threads is not None:
        config["num_threads"] = args.num_threads
    if args.integration is not None:
        config["integration"] = args.integration
    if args.max_request_bytes is not None:
        config["max_request_bytes"] = args.max_request_bytes
    if args.image_dir:
        config["image_dirs"] = [*config.get("image_dirs", []), *args.image_dir]
    if args.backend == "ray":
        from ..ray import require_ray

        require_ray("sparsepipe serve --backend ray", ("serve",))
        from ..ray.serve import run

        run(
            config,
            address=args.address,
            host=args.host,
            port=args.port,
            proxy_location="EveryNode" if args.proxy_location is None else args.proxy_location,
            http_proxy="ray" if args.http_proxy is None else args.http_proxy,
        )
        return 0
    for flag, value in (
        ("--address", args.address),
        ("--proxy-location", args.proxy_location),
        ("--http-proxy", args.http_proxy),
    ):
        if value is not None:
            raise ConfigError(f"{flag} is a Ray Serve setting; it needs --backend ray")
    serve(config, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sparsepipe`` command."""
    parser = argparse.ArgumentParser(
        prog="sparsepipe", description="Fast CPU inference pipelines for ONNX models."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    models_parser = sub.add_parser("models", help="embedded models")
    models_sub = models_parser.add_subparsers(dest="models_command", metavar="ACTION")
    models_sub.required = True
    listing = models_sub.add_parser("list", help="list the embedded (zoo:) models")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_models_list)

    ann = sub.add_parser("annotate", help="draw detections on images and save annotated copies")
    ann.add_argument(
        "--task", default=None, help="the task (default: the one registered task that annotates)"
    )
    ann.add_argument(
        "--model-path", default=None, help="model file or directory (default: the task's)"
    )
    ann.add_argument("--source", required=True, help="an image file or a folder of images")
    ann.add_argument("--save-dir", required=True, help="folder for the annotated copies")
    ann.add_argument(
        "--conf-threshold",
        type=float,
        default=None,
        help="minimum score of a drawn box (task option conf_threshold; default: the task's)",
    )
    ann.add_argument(
        "--iou-threshold",
        type=float,
        default=None,
        help="overlap above which boxes merge (task option iou_threshold; default: the task's)",
    )
    ann.add_argument("--num-threads", type=int, default=None)
    ann.set_defaults(func=_annotate)

    from . import analyze, batch, benchmark, sparsify

    benchmark.add_parser(sub)
    sparsify.add_parser(sub)
    analyze.add_parser(sub)
    batch.add_parser(sub)

    run = sub.add_parser("run", help="run a pipeline once and print its JSON output")
    run.add_argument("--task", required=True)
    run.add_argument("--model-path", default=None)
    run.add_argument("--json", default=None, help='the input as JSON, e.g. \'{"sequences": "hi"}\'')
    run.add_argument("--option", action="append", help="task option KEY=VALUE (repeatable)")
    run.add_argument("inputs", nargs="*", help="input values in the schema's field order")
    run.set_defaults(func=_run)

    srv = sub.add_parser("serve", help="serve pipelines over HTTP (KServe v2 routes, SageMaker)")
    srv.add_argument("--task", help="task of a single endpoint")
    srv.add_argument("--model-path", help="its model (default: the task's embedded one)")
    srv.add_argument("--batch-size", type=int, default=1)
    srv.add_argument("--config", help="server.yaml with several endpoints and settings")
    srv.add_argument("--host", default=None, help="default 0.0.0.0")
    srv.add_argument("--port", type=int, default=None, help="default 5543 (8080 for sagemaker)")
    srv.add_argument("--num-threads", type=int, default=None)
    srv.add_argument("--integration", choices=["local", "sagemaker"], default=None)
    srv.add_argument("--max-request-bytes", type=int, default=None)
    srv.add_argument(
        "--image-dir",
        action="append",
        default=None,
        help="a directory whose image files requests may name by path (repeatable; added to the "
        "config's image_dirs); default: paths in requests are refused",
    )
    srv.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: this process (uvicorn); ray: Ray Serve, one deployment per endpoint "
        "(needs the ray extra)",
    )
    srv.add_argument(
        "--address",
        default=None,
        help="with --backend ray: the Ray cluster (auto, ray://host:10001, host:port); "
        "default: start a local one",
    )
    srv.add_argument(
        "--proxy-location",
        default=None,
        help="with --backend ray: where Ray Serve runs HTTP proxies: EveryNode (default), "
        "HeadOnly or Disabled",
    )
    srv.add_argument(
        "--http-proxy",
        default=None,
        help="with --backend ray and no --address: what answers HTTP on each node: ray (Serve's "
        "proxy, default) or haproxy (HAProxy over the ingress replicas; less CPU per request)",
    )
    srv.set_defaults(func=_serve)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line with ``argv`` (default: sys.argv); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as e:  # every sparsepipe error is reported as one line, not a traceback
        print(f"sparsepipe: error: {e}", file=sys.stderr)
        return 1
