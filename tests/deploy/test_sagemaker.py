"""deploy/sagemaker.py against moto's mock AWS, and the container's entry point run directly."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")
httpx = pytest.importorskip("httpx")


def _deploy_module():
    spec = importlib.util.spec_from_file_location("sm_deploy", REPO / "deploy" / "sagemaker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def aws(monkeypatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    with moto.mock_aws():
        yield


def test_deploy_invoke_delete(aws):
    sm = _deploy_module()
    role = "arn:aws:iam::123456789012:role/SageMakerRole"
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sparsepipe:latest"
    desc = sm.deploy(
        "sentiment",
        image_uri=image,
        role_arn=role,
        model_data="s3://bucket/model.tar.gz",
        task="text-classification",
        region="us-east-1",
    )
    assert desc["EndpointStatus"] == "InService"
    client = boto3.client("sagemaker", region_name="us-east-1")
    model = client.describe_model(ModelName="sentiment")
    assert model["PrimaryContainer"]["Image"] == image
    assert model["PrimaryContainer"]["Environment"]["SPARSEPIPE_TASK"] == "text-classification"
    config = client.describe_endpoint_config(EndpointConfigName="sentiment")
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.c5.xlarge"
    reply = sm.invoke("sentiment", {"sequences": ["I love it"]}, region="us-east-1")
    assert reply is not None
    sm.delete_endpoint("sentiment", region="us-east-1")
    assert client.list_endpoints()["Endpoints"] == []
    assert client.list_models()["Models"] == []


def test_cli(aws, capsys):
    sm = _deploy_module()
    args = [
        "--region",
        "us-east-1",
        "deploy",
        "--name",
        "ner",
        "--task",
        "ner",
        "--image-uri",
        "img:latest",
        "--role-arn",
        "arn:aws:iam::123456789012:role/R",
    ]
    assert sm.main(args) == 0
    assert "ner: InService" in capsys.readouterr().out
    assert sm.main(["--region", "us-east-1", "delete", "--name", "ner"]) == 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_container_entrypoint_serves_sagemaker(shared_dir, tmp_path):
    port = _free_port()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sparsepipe").write_text(f'#!/bin/sh\nexec {sys.executable} -m sparsepipe "$@"\n')
    (bin_dir / "sparsepipe").chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        SAGEMAKER_BIND_TO_PORT=str(port),
        SPARSEPIPE_TASK="object-detection",
        SPARSEPIPE_SAGEMAKER_MODEL_DIR=str(shared_dir / "models" / "yolov3-tiny-coco"),
    )
    proc = subprocess.Popen(
        ["sh", str(REPO / "deploy" / "sagemaker-entrypoint.sh"), "serve", "--host", "127.0.0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 90
        while True:
            try:
                ping = httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5)
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    out = proc.stdout.read().decode() if proc.poll() is not None else ""
                    raise AssertionError(f"server did not start: {out}") from None
                time.sleep(0.2)
        assert ping.status_code == 200
        image = (shared_dir / "samples" / "images" / "coffee.png").read_bytes()
        r = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            content=image,
            headers={"content-type": "image/png"},
            timeout=60,
        )
        assert r.status_code == 200 and "cup" in r.json()["labels"][0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_dockerfile_runs_the_entrypoint():
    text = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/local/bin/sagemaker-entrypoint"]' in text
    assert 'CMD ["serve"]' in text and "SAGEMAKER_BIND_TO_PORT=8080" in text
    assert "COPY deploy/sagemaker-entrypoint.sh /usr/local/bin/sagemaker-entrypoint" in text
