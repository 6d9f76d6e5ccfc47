"""``sparsepipe serve --backend ray --http-proxy haproxy``: HAProxy on the node answers HTTP and
balances over the ingress replicas, which serve it themselves; the same answers, errors and
metrics as behind Serve's proxy, and nothing left listening after SIGTERM."""

from __future__ import annotations

import os

import httpx
import psutil
import pytest
from server.conftest import free_port
from sparsepipe import ConfigError, Pipeline
from sparsepipe.cli import main

from on_ray.conftest import same_answer, start_serve, stop_serve, wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.server]

CONFIG = {"endpoints": [{"task": "sentiment-analysis", "name": "s"}]}


def _listener(port: int) -> str | None:
    """The name of the process listening on TCP ``port`` of this machine, if any."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            return psutil.Process(conn.pid).name() if conn.pid else "?"
    return None


def test_bad_http_proxy_settings_name_the_fix(monkeypatch, capsys):
    import ray.serve._private.haproxy as ray_haproxy
    from sparsepipe.ray.serve import HAPROXY_ENVIRONMENT, apply_serve_environment, run

    with pytest.raises(ConfigError, match=r"http_proxy must be one of ray, haproxy, got 'nginx'"):
        run(CONFIG, http_proxy="nginx")
    assert main(["serve", "--backend", "ray", "--task", "ner", "--http-proxy", "nginx"]) == 1
    assert "http_proxy must be one of ray, haproxy" in capsys.readouterr().err
    assert main(["serve", "--backend", "ray", "--task", "ner", "--http-proxy", ""]) == 1
    assert "http_proxy must be one of ray, haproxy, got ''" in capsys.readouterr().err
    assert main(["serve", "--backend", "ray", "--task", "ner", "--proxy-location", ""]) == 1
    assert "proxy_location must be one of EveryNode" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"only when the Ray cluster starts.*leave out --address"):
        run(CONFIG, address="auto", http_proxy="haproxy")

    def missing() -> str:
        raise FileNotFoundError("Could not find an HAProxy binary.")

    monkeypatch.setattr(ray_haproxy, "get_haproxy_binary", missing)
    with pytest.raises(ConfigError, match=r"no HAProxy binary.*RAY_SERVE_HAPROXY_BINARY_PATH"):
        run(CONFIG, http_proxy="haproxy")
    monkeypatch.undo()
    for name in HAPROXY_ENVIRONMENT:
        monkeypatch.setenv(name, "0")
    assert apply_serve_environment("haproxy").items() >= HAPROXY_ENVIRONMENT.items()
    assert all(os.environ[k] == v for k, v in HAPROXY_ENVIRONMENT.items())


@pytest.mark.slow
def test_serve_behind_haproxy_answers_as_in_process_and_stops_clean(tmp_path):
    cfg = tmp_path / "server.yaml"
    cfg.write_text(
        "num_threads: 1\n"
        "ingress_replicas: 2\n"
        "endpoints:\n"
        "  - task: text-classification\n"
        "    name: sentiment\n"
        "    max_batch_size: 4\n"
    )
    port = free_port()
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",  # see conftest.py
    }
    args = ["--http-proxy", "haproxy", "--config", str(cfg), "--host", "127.0.0.1"]
    proc = start_serve([*args, "--port", str(port)], log, env)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        wait_ready(proc, client, "/v2/models/sentiment/ready", log)
        assert _listener(port) == "haproxy"
        sentiment = Pipeline.create("text-classification", num_threads=1)
        texts = ["a wonderful film", "dull and far too long"]
        for _ in range(4):  # over both ingress replicas
            r = client.post("/v2/models/sentiment/infer", json={"sequences": texts})
            assert r.status_code == 200, r.text
            assert same_answer(r.json(), sentiment(sequences=texts).model_dump())
        r = client.post("/v2/models/sentiment/infer", json={"sequences": 3})
        assert r.status_code == 422 and "sequences" in r.text
        assert client.post("/v2/models/nope/infer", json={}).status_code == 404
        assert client.get("/metrics").status_code == 200
    finally:
        client.close()
        stop_serve(proc, log)
    assert _listener(port) is None
    assert f"on Ray Serve behind HAProxy at http://127.0.0.1:{port}" in log.read_text()
