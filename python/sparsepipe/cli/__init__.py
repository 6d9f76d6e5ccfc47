"""The ``sparsepipe`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Optional

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
    for i in infos:
        print(f"{i.uri:<{width}}  {i.task:<{task_width}}  {i.license:<10}  {i.description}")
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
