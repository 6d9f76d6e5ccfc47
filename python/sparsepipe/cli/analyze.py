"""``sparsepipe analyze``: per weight matmul shape, sparsity, kernel and measured time share."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

__all__ = ["add_parser", "analyze"]


def _matches(report_node: str, plan_node: str) -> bool:
    return plan_node == report_node or plan_node.startswith(report_node + ".")


def _work(entry: dict[str, Any]) -> float:
    """Multiply-adds per output row of one weight on its kernel."""
    dense = float(entry["k"] * entry["n"])
    return dense * (1.0 - entry["sparsity"]) if entry["kernel"] == "sparse" else dense


def analyze(
    model_path: str,
    *,
    batch_size: int = 1,
    sequence_length: int = 128,
    iterations: int = 10,
    num_threads: Optional[int] = None,
    sparsity_threshold: float = 0.5,
    dense_backend: str = "auto",
) -> dict[str, Any]:
    """Profile of ``model_path`` on random inputs: layers, time shares, FLOPs dense vs effective,
    the fused ops by kind and every fusion candidate left unfused with why.

    A model tract cannot run raises `ModelLoadError` listing every unsupported operator.
    """
    from .. import Engine, models
    from ..errors import ConfigError
    from .benchmark import random_engine_inputs

    if iterations < 1:
        raise ConfigError(f"--iterations must be at least 1, got {iterations}")
    resolved = models.resolve(model_path)
    engine = Engine(
        resolved.onnx_path,
        num_threads=num_threads,
        sparsity_threshold=sparsity_threshold,
        dense_backend=dense_backend,
    )
    inputs = random_engine_inputs(
        engine.input_names,
        engine.input_shapes,
        engine.input_dtypes,
        batch_size=batch_size,
        sequence_length=sequence_length,
        id_high=min(100, int(resolved.json("config.json").get("vocab_size") or 100)),
    )
    nodes = engine.profile(inputs, iterations=iterations)
    total = sum(n["seconds"] for n in nodes) or 1e-12
    layers = []
    dense_macs = effective_macs = 0.0
    matched: set[int] = set()
    report = engine.sparsity_report()
    # Weights computed by one plan node (an attention's q/k/v projections, two chained linears)
    # share its time in proportion to their multiply-adds; its output has one row per row of
    # each weight's input.
    plan_work: dict[str, float] = {}
    for entry in report:
        plan_work[entry["plan_node"]] = plan_work.get(entry["plan_node"], 0.0) + _work(entry)
    for entry in report:
        plan = entry["plan_node"]
        own = [i for i, n in enumerate(nodes) if _matches(plan, n["name"])]
        matched.update(own)
        share = _work(entry) / plan_work[plan] if plan_work[plan] else 1.0
        seconds = share * sum(nodes[i]["seconds"] for i in own)
        out_elems = max((nodes[i]["output_elements"] for i in own), default=0)
        rows = out_elems / max(1, entry["plan_output_channels"])
        macs = rows * entry["n"] * entry["k"]
        eff = macs * (1.0 - entry["sparsity"]) if entry["kernel"] == "sparse" else macs
        dense_macs += macs
        effective_macs += eff
        layers.append(
            {
                "node": entry["node"],
                "shape": entry["shape"],
                "sparsity": entry["sparsity"],
                "kernel": entry["kernel"],
                "isa": entry["isa"],
                "fused": entry["fused"],
                "plan_node": plan,
                "ms": seconds * 1e3,
                "time_share": seconds / total,
                "gflops_dense": 2 * macs / 1e9,
            }
        )
    other: dict[str, float] = {}
    for i, n in enumerate(nodes):
        if i not in matched:
            other[n["op"]] = other.get(n["op"], 0.0) + n["seconds"]
    return {
        "model": str(resolved.onnx_path),
        "inputs": {name: list(a.shape) for name, a in zip(engine.input_names, inputs)},
        "num_threads": engine.num_threads,
        "isa": engine.isa,
        "iterations": iterations,
        "total_ms": total * 1e3,
        "layers": layers,
        "weight_matmul_time_share": sum(layer["time_share"] for layer in layers),
        "gflops_dense": 2 * dense_macs / 1e9,
        "gflops_effective": 2 * effective_macs / 1e9,
        "other_ops_ms": {op: s * 1e3 for op, s in sorted(other.items(), key=lambda kv: -kv[1])},
        "fused_ops": {kind: len(nodes) for kind, nodes in engine.fused_ops().items()},
        "fusion_misses": engine.fusion_misses(),
    }


def _fusion_lines(result: dict[str, Any]) -> list[str]:
    """The fused ops by kind, then the candidates left unfused grouped by kind and reason."""
    fused = ", ".join(f"{kind} {count}" for kind, count in result["fused_ops"].items())
    lines = [f"fused ops: {fused}"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for miss in result["fusion_misses"]:
        groups.setdefault((miss["kind"], miss["reason"]), []).append(miss)
    if groups:
        lines.append(f"not fused ({len(result['fusion_misses'])} candidates):")
    for (kind, reason), misses in groups.items():
        first = misses[0]
        example = first["node"] + (f", about {first['related']}" if first["related"] else "")
        lines.append(f"  {kind} x{len(misses)}: {reason}\n      e.g. {example}")
    return lines


def format_report(result: dict[str, Any]) -> str:
    """The analysis as a readable table."""
    lines = [
        f"model {result['model']}",
        f"inputs {result['inputs']}, {result['num_threads']} thread(s), kernels {result['isa']}, "
        f"mean of {result['iterations']} run(s): {result['total_ms']:.2f} ms",
        "",
        f"{'weight matmul':60s} {'shape':>14s} {'sparsity':>8s} {'kernel':>7s} {'ms':>8s} "
        f"{'share':>6s}",
    ]
    for layer in result["layers"]:
        name = layer["node"] if len(layer["node"]) <= 60 else "..." + layer["node"][-57:]
        shape = "x".join(str(d) for d in layer["shape"])
        lines.append(
            f"{name:60s} {shape:>14s} {layer['sparsity']:8.1%} {layer['kernel']:>7s} "
            f"{layer['ms']:8.3f} {layer['time_share']:6.1%}"
        )
    lines += [
        "",
        f"weight matmuls: {result['weight_matmul_time_share']:.1%} of the time; "
        f"FLOPs per run: {result['gflops_dense']:.3f} G dense, "
        f"{result['gflops_effective']:.3f} G effective (zeros skipped)",
        "other operators (ms): "
        + ", ".join(f"{op} {ms:.2f}" for op, ms in list(result["other_ops_ms"].items())[:8]),
        "",
        *_fusion_lines(result),
    ]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from ..errors import ModelLoadError

    try:
        result = analyze(
            args.model,
            batch_size=args.batch_size,
            sequence_length=args.sequence_length,
            iterations=args.iterations,
            num_threads=args.num_threads,
            sparsity_threshold=args.sparsity_threshold,
            dense_backend=args.dense_backend,
        )
    except ModelLoadError as e:
        if re.search(r"unsupported|not supported", str(e), re.IGNORECASE):
            print(
                f"sparsepipe analyze: the model uses operators tract cannot run:\n{e}",
                file=sys.stderr,
            )
            return 1
        raise
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def add_parser(subparsers: Any) -> None:
    """Adds the ``analyze`` subcommand."""
    p = subparsers.add_parser(
        "analyze", help="per weight matmul: shape, sparsity, kernel, time share; FLOPs"
    )
    p.add_argument("model", help="an .onnx file, a model directory or zoo:<name>")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--sequence-length", type=int, default=128, help="for symbolic dims")
    p.add_argument("--iterations", type=int, default=10, help="profiled runs")
    p.add_argument("--num-threads", type=int, default=None)
    p.add_argument("--sparsity-threshold", type=float, default=0.5)
    p.add_argument(
        "--dense-backend",
        default="auto",
        help="who runs weights below the threshold: auto (default: the faster on each shape, "
        "timed at load), tract or sparsepipe",
    )
    p.add_argument("--json", default=None, help="also write the analysis as JSON")
    p.set_defaults(func=_run)
