"""``sparsepipe sparsify``: one-shot magnitude pruning of an ONNX model's weight matrices."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

__all__ = ["add_parser", "format_table"]

WARNING = (
    "sparsepipe sparsify: warning: one-shot pruning changes the model's accuracy; check it on "
    "your own data (--eval) before deploying. Fine-tuning with gradual pruning recovers most of "
    "the loss."
)


def _percent(x: float) -> str:
    return f"{100.0 * x:.1f}%"


def format_table(results: Sequence[Any]) -> str:
    """The per-layer table (name, op, shape, sparsity before -> after) and the total line."""
    rows = [
        (
            r.display_name,
            r.op,
            "x".join(str(d) for d in r.shape),
            f"{_percent(r.sparsity_before)} -> {_percent(r.sparsity_after)}"
            + (f"  ({r.note})" if r.note else ""),
        )
        for r in results
    ]
    header = ("layer", "op", "shape", "sparsity")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip()
        for row in [header, *rows]
    ]
    size = sum(r.size for r in results)
    before = round(sum(r.sparsity_before * r.size for r in results))
    after = round(sum(r.sparsity_after * r.size for r in results))
    lines.append(
        f"total: {len(results)} weights, {size:,} values, zeros {before:,} -> {after:,} "
        f"({_percent(before / size if size else 0.0)} -> {_percent(after / size if size else 0.0)})"
    )
    return "\n".join(lines)


def _eval_task(task: Optional[str]) -> str:
    """The task ``--eval`` runs: ``task``, or the one registered task that defines accuracy."""
    from .. import Pipeline
    from .declarations import declaring_task

    return declaring_task(
        task, lambda cls: cls.accuracy is not Pipeline.accuracy, "be evaluated by --eval"
    )


def _run(args: argparse.Namespace) -> int:
    from .. import Pipeline
    from ..errors import ConfigError
    from ..sparsify import copy_deployment_files, load_examples, sparsify_file

    eval_options = {
        "text_field": args.text_field,
        "label_field": args.label_field,
        "limit": args.eval_limit,
    }
    if args.eval is None:
        if args.task is not None or args.eval_limit is not None:
            raise ConfigError("--task and --eval-limit apply only with --eval JSONL")
    else:
        task = _eval_task(args.task)
        texts, labels = load_examples(args.eval, **eval_options)  # bad lines fail before pruning

    results = sparsify_file(
        args.model,
        args.output,
        args.sparsity,
        overwrite=args.overwrite,
        include=args.include,
        exclude=args.exclude,
        scope=args.scope,
    )
    print(format_table(results))
    print(f"wrote {args.output} ({args.scope} magnitude pruning to {_percent(args.sparsity)})")
    copied = copy_deployment_files(args.model, args.output)
    if copied:
        names = ", ".join(p.name for p in copied)
        print(f"copied {names} into {Path(args.output).parent}", file=sys.stderr)
    print(WARNING, file=sys.stderr)

    if args.eval is not None:
        accuracy = []
        for model in (args.model, args.output):
            pipe = Pipeline.create(task, model, batch_size=16)
            accuracy.append(pipe.accuracy(texts, labels))
        change = 100.0 * (accuracy[1] - accuracy[0])
        print(
            f"accuracy on {len(texts)} examples of {args.eval}: original "
            f"{_percent(accuracy[0])}, pruned {_percent(accuracy[1])} ({change:+.1f} points)"
        )
    return 0


def add_parser(subparsers: Any) -> None:
    """Add the ``sparsify`` subcommand to an argparse ``add_subparsers()`` object."""
    p = subparsers.add_parser(
        "sparsify",
        help="prune an ONNX model's weight matrices to a sparsity (one-shot, by magnitude)",
        description=(
            "Set the smallest-magnitude entries of the constant weights of MatMul, Gemm and Conv "
            "nodes to zero so that sparsepipe runs them on its sparse kernels. Biases and "
            "embedding tables are left dense. The config and tokenizer files beside MODEL are "
            "copied next to OUT when missing there. One-shot pruning costs accuracy: measure it "
            "with --eval; fine-tuning with gradual pruning recovers it."
        ),
    )
    p.add_argument("model", metavar="MODEL.onnx", help="the model file (or its directory)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the pruned model")
    p.add_argument(
        "--sparsity", type=float, required=True, help="fraction of zeros, in [0, 1), e.g. 0.8"
    )
    p.add_argument("--include", metavar="REGEX", help="prune only weights/nodes matching REGEX")
    p.add_argument("--exclude", metavar="REGEX", help="leave weights/nodes matching REGEX dense")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--per-layer",
        dest="scope",
        action="store_const",
        const="per-layer",
        help="reach the sparsity in every weight (default)",
    )
    scope.add_argument(
        "--global",
        dest="scope",
        action="store_const",
        const="global",
        help="one magnitude threshold over all the selected weights",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT.onnx if it exists")
    p.add_argument(
        "--eval",
        metavar="JSONL",
        help="print the accuracy of the original and the pruned model on these examples",
    )
    p.add_argument(
        "--task",
        default=None,
        help="the task for --eval (default: the one registered task that defines accuracy)",
    )
    p.add_argument("--eval-limit", type=int, default=None, metavar="N", help="first N examples")
    p.add_argument("--text-field", default="text", help="text field of --eval (default: text)")
    p.add_argument("--label-field", default="label", help="label field of --eval (default: label)")
    p.set_defaults(func=_run, scope="per-layer")
