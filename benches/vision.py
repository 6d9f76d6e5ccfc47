"""End-to-end latency of the vision pipelines on sparsepipe and on onnxruntime, side by side.

For every model (EfficientNet-Lite0 classification, YOLOv3-tiny and YOLOv8n detection from
``../shared/models``, or ``--models task=path,...``), every thread count and every sample image
(``../shared/samples/images``, or ``--images DIR``), the same pipeline is built once per engine
(``engine_type="sparsepipe"`` and ``"onnxruntime"``: identical decoding, preprocessing and
post-processing, only the engine differs) at batch size 1. The engines run interleaved: each
round calls every pipeline once on the image, the order rotating from round to round, with a
pause between calls so no engine's spinning threads overlap the next. The table gives, per
engine, the median end-to-end time of a call and its stages (``pipeline.timings``: ``pre`` is
decoding the file with Pillow plus resizing/letterboxing and normalising), and the ratio
onnxruntime / sparsepipe (above 1: sparsepipe is faster). Example::

    python benches/vision.py --threads 1,all --rounds 10 --json vision.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_MODELS = (
    f"image-classification={SHARED / 'models' / 'efficientnet-lite0-imagenet'},"
    f"object-detection={SHARED / 'models' / 'yolov3-tiny-coco'},"
    f"object-detection={SHARED / 'models' / 'yolov8n-random'}"
)
ENGINES = ("sparsepipe", "onnxruntime")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _models(spec: str) -> list[tuple[str, Path]]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        task, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--models entries are task=path, got {item!r}")
        out.append((task, Path(path)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=SHARED / "samples" / "images")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="task=path,... (comma-separated)")
    parser.add_argument("--threads", default="1,all")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--pause-ms", type=float, default=100.0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    from PIL import Image
    from sparsepipe import Pipeline

    files = sorted(p for p in args.images.iterdir() if p.is_file())
    threads = [
        len(os.sched_getaffinity(0)) if t == "all" else int(t) for t in args.threads.split(",")
    ]
    print(f"{_cpu()}, {len(os.sched_getaffinity(0))} cores, {dt.date.today()}")
    print(
        "| task (model) | threads | image | size | sparsepipe ms (pre/engine/post) "
        "| onnxruntime ms (pre/engine/post) | ort / ours |"
    )
    print("|---|---:|---|---|---:|---:|---:|")
    rows: list[dict[str, Any]] = []
    for task, model in _models(args.models):
        if not model.exists():
            print(f"skipped {model}: not found")
            continue
        for t in threads:
            pipes = {
                e: Pipeline.create(task, model_path=str(model), num_threads=t, engine_type=e)
                for e in ENGINES
            }
            for pipe in pipes.values():
                pipe(files[0])  # warm-up
            for f in files:
                times: dict[str, dict[str, list[float]]] = {
                    e: {"total": [], "pre": [], "engine": [], "post": []} for e in ENGINES
                }
                for r in range(args.rounds):
                    order = ENGINES[r % len(ENGINES) :] + ENGINES[: r % len(ENGINES)]
                    for e in order:
                        time.sleep(args.pause_ms / 1e3)
                        start = time.perf_counter()
                        pipes[e](f)
                        times[e]["total"].append((time.perf_counter() - start) * 1e3)
                        for stage in ("pre", "engine", "post"):
                            times[e][stage].append(getattr(pipes[e].timings, stage) * 1e3)
                med = {e: {k: statistics.median(v) for k, v in s.items()} for e, s in times.items()}
                with Image.open(f) as im:
                    size = f"{im.width}x{im.height}"
                ratio = med["onnxruntime"]["total"] / med["sparsepipe"]["total"]
                cells = [
                    f"{m['total']:.1f} ({m['pre']:.1f}/{m['engine']:.1f}/{m['post']:.1f})"
                    for m in (med["sparsepipe"], med["onnxruntime"])
                ]
                print(
                    f"| {task} ({model.name}) | {t} | {f.name} | {size} | {cells[0]} | {cells[1]} "
                    f"| {ratio:.2f}x |",
                    flush=True,
                )
                rows.append(
                    {"task": task, "model": model.name, "threads": t, "image": f.name}
                    | {"size": size, "median_ms": med, "ort_over_ours": ratio}
                )
    if args.json:
        args.json.write_text(json.dumps({"cpu": _cpu(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
