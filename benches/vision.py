"""Per-image stage times of the vision pipelines: decode + preprocess vs engine vs post-process.

For every sample image (``../shared/samples/images``, or ``--images DIR``) and every model
(EfficientNet-Lite0 classification, YOLOv3-tiny detection from ``../shared/models``, or
``--classifier`` / ``--detector``), runs the pipeline at batch size 1 and reports the median
``pipeline.timings`` per stage over ``--rounds`` calls, for each thread count. The pre stage is
file decoding (Pillow) plus resizing/letterboxing and normalisation. Example::

    python benches/vision.py --threads 1,all --rounds 10
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=SHARED / "samples" / "images")
    parser.add_argument(
        "--classifier", default=str(SHARED / "models" / "efficientnet-lite0-imagenet")
    )
    parser.add_argument("--detector", default=str(SHARED / "models" / "yolov3-tiny-coco"))
    parser.add_argument("--threads", default="1,all")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    from sparsepipe import Pipeline

    files = sorted(p for p in args.images.iterdir() if p.is_file())
    threads = [
        len(os.sched_getaffinity(0)) if t == "all" else int(t) for t in args.threads.split(",")
    ]
    print("| task | threads | image | size | pre ms | engine ms | post ms | pre share |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for task, model in (
        ("image-classification", args.classifier),
        ("object-detection", args.detector),
    ):
        for t in threads:
            pipe = Pipeline.create(task, model_path=model, num_threads=t)
            pipe(files[0])  # warm-up
            for f in files:
                stages = {"pre": [], "engine": [], "post": []}
                for _ in range(args.rounds):
                    pipe(f)
                    for k in stages:
                        stages[k].append(getattr(pipe.timings, k) * 1e3)
                med = {k: statistics.median(v) for k, v in stages.items()}
                from PIL import Image

                with Image.open(f) as im:
                    size = f"{im.width}x{im.height}"
                share = med["pre"] / sum(med.values())
                print(
                    f"| {task} | {t} | {f.name} | {size} | {med['pre']:.2f} | {med['engine']:.2f} "
                    f"| {med['post']:.2f} | {share:.0%} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
