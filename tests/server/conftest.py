"""A real uvicorn server on a free port, in a background thread, for the server tests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> until ``stop``."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def stop(self) -> None:
        """Shuts the server down and waits for its thread."""
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def start_server() -> Iterator[Any]:
    """Start servers for apps; all are stopped at the end of the module."""
    servers: list[RunningServer] = []

    def start(app: Any) -> RunningServer:
        s = RunningServer(app)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def start_cli_server(tmp_path: Path, config: dict[str, Any]) -> tuple[subprocess.Popen, str]:
    """`sparsepipe serve --config` in a subprocess on 127.0.0.1:<free port>, once it is ready;
    the caller stops the process. Its stdout and stderr go to ``tmp_path / "server.log"`` (a
    file, not a pipe: a pipe nobody reads would block the server once its buffer is full)."""
    port = free_port()
    path = tmp_path / "server.json"
    path.write_text(json.dumps({**config, "host": "127.0.0.1", "port": port}))
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparsepipe", "serve", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            proc.wait(timeout=60)
            tail = log.read_text("utf-8", errors="replace")[-2000:]
            raise AssertionError(f"server did not start: {tail}")
        time.sleep(0.2)
