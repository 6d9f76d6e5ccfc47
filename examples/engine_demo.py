"""sparsepipe engine demo: a BERT-like encoder pruned to 90%, run by sparsepipe and by onnxruntime.

Builds the model itself (random weights, magnitude-pruned), shows which weights run on the sparse
kernels, checks that both engines agree, and times them side by side.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sparsepipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import onnx_models as om


def median_ms(fn, reps: int = 20) -> float:
    """Median wall time of `fn()` in milliseconds."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    size = {"hidden": 384, "heads": 12, "layers": 6, "intermediate": 1536, "vocab_size": 8000}
    model = om.build("bert", sparsity=0.9, seed=1, max_position=256, **size)
    with tempfile.TemporaryDirectory() as tmp:
        path = om.save(model, tmp)
        engine = sparsepipe.Engine(path)
        print(engine)
        report = engine.sparsity_report()
        sparse = [r for r in report if r["kernel"] == "sparse"]
        print(f"{len(sparse)}/{len(report)} weight matmuls on the sparse kernel ({engine.isa})")
        for r in report[:3]:
            print(f"  {r['node']:50} {r['shape']!s:12} sparsity {r['sparsity']:.2f} {r['kernel']}")
        feeds = om.sample_inputs(model, 1, 128, rng=0)
        inputs = [feeds[n] for n in engine.input_names]
        ours = engine(inputs)
        print("logits:", np.round(ours[1], 4))
        try:
            import onnxruntime as ort
        except ImportError:
            print(f"sparsepipe: {median_ms(lambda: engine(inputs)):.2f} ms per call")
            return
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = engine.num_threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        ref = sess.run(None, feeds)
        err = max(float(np.max(np.abs(a - b))) for a, b in zip(ours, ref))
        print(f"max |sparsepipe - onnxruntime| = {err:.2e}")
        t_sp = median_ms(lambda: engine(inputs))
        t_ort = median_ms(lambda: sess.run(None, feeds))
        print(
            f"batch 1, 128 tokens, {engine.num_threads} threads: sparsepipe {t_sp:.2f} ms, "
            f"onnxruntime {t_ort:.2f} ms ({t_ort / t_sp:.2f}x)"
        )


if __name__ == "__main__":
    main()
