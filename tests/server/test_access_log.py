"""`access_log` in the server config: one log line per request by default, none when false."""

from __future__ import annotations

import httpx
import pytest
from sparsepipe import ConfigError
from sparsepipe.server import load_server_config

from server.conftest import start_cli_server

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.mark.parametrize("access_log", [True, False])
def test_the_access_log_follows_the_config(tmp_path, access_log):
    config = {"access_log": access_log, "endpoints": [{"task": "sentiment-analysis", "name": "s"}]}
    proc, url = start_cli_server(tmp_path, config)
    try:
        r = httpx.post(f"{url}/v2/models/s/infer", json={"sequences": "great"})
        assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    log = (tmp_path / "server.log").read_text("utf-8", errors="replace")
    line = '"POST /v2/models/s/infer HTTP/1.1" 200'
    assert (line in log) is access_log, log[-2000:]


def test_access_log_must_be_a_boolean():
    with pytest.raises(ConfigError, match=r"access_log"):
        load_server_config({"access_log": "sometimes", "endpoints": [{"task": "ner"}]})
