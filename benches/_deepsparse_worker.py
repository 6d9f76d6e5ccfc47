"""deepsparse timing worker for benches/engine.py, run with the Python of a deepsparse venv.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout. Anything the
libraries print goes to stderr, so stdout carries only replies.

Requests and their replies (every reply has ``ok``; failures carry ``error``):

- ``{"cmd": "info"}`` -> ``{"ok": true, "python": ..., "numpy": ..., "deepsparse": ...}``
- ``{"cmd": "load", "model": path, "batch": B, "threads": T, "inputs": npz, "order": [names]}``
  compiles `path` (a static-shape ONNX copy, which deepsparse may rewrite) with
  ``deepsparse.compile_model(path, batch_size=B, num_cores=T)`` and loads the inputs from the
  ``.npz`` file in `order` -> ``{"ok": true, "load_s": ...}``
- ``{"cmd": "run"}`` runs once -> ``{"ok": true, "ms": elapsed}`` (timed around the engine call)
- ``{"cmd": "outputs", "path": npz}`` runs once and saves outputs as ``out0``, ``out1``, ...
- ``{"cmd": "quit"}`` -> ``{"ok": true}``, then exits
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from typing import Any, TextIO

os.environ.setdefault("NM_DISABLE_ANALYTICS", "True")
logger = logging.getLogger("deepsparse_worker")


class _Worker:
    """Holds the compiled engine and its inputs between requests."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.inputs: list[Any] = []

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        """Serve one request and return the reply."""
        cmd = req.get("cmd")
        if cmd == "info":
            import deepsparse
            import numpy as np

            return {
                "ok": True,
                "python": platform.python_version(),
                "numpy": np.__version__,
                "deepsparse": getattr(deepsparse, "__version__", "unknown"),
            }
        if cmd == "load":
            import deepsparse
            import numpy as np

            start = time.perf_counter()
            self.engine = deepsparse.compile_model(
                req["model"], batch_size=int(req["batch"]), num_cores=int(req["threads"])
            )
            with np.load(req["inputs"]) as data:
                self.inputs = [np.ascontiguousarray(data[name]) for name in req["order"]]
            return {"ok": True, "load_s": time.perf_counter() - start}
        if cmd == "run":
            start = time.perf_counter()
            self.engine(self.inputs)
            return {"ok": True, "ms": (time.perf_counter() - start) * 1e3}
        if cmd == "outputs":
            import numpy as np

            outs = self.engine(self.inputs)
            np.savez(req["path"], **{f"out{i}": np.asarray(o) for i, o in enumerate(outs)})
            return {"ok": True, "count": len(outs)}
        if cmd == "quit":
            return {"ok": True}
        return {"ok": False, "error": f"unknown cmd {cmd!r}"}


def _serve(requests: TextIO, replies: TextIO) -> None:
    worker = _Worker()
    for line in requests:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            reply = worker.handle(req)
        except Exception as exc:
            logger.exception("request failed: %s", line.strip()[:200])
            req, reply = {}, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        if req.get("cmd") == "quit":
            return


def main() -> None:
    """Serve requests from stdin until "quit" or end of input."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    _serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
