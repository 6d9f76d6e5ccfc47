"""deploy/kuberay-rayservice.yaml: its Serve config is valid for Ray and, deployed on the local
test cluster, serves the same answers as the in-process pipelines."""

from __future__ import annotations

import copy
import importlib
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from server.conftest import free_port
from sparsepipe import Pipeline

from on_ray.conftest import same_answer

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.server]

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kuberay-rayservice.yaml"
PYPROJECT = MANIFEST.parents[1] / "pyproject.toml"


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    assert len(docs) == 1
    return docs[0]


@pytest.fixture(scope="module")
def serve_config(service: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(service["spec"]["serveConfigV2"])


def test_the_rayservice_runs_the_projects_image_on_a_supported_ray(service):
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    images = {c["image"] for p in pods for c in p["template"]["spec"]["containers"]}
    assert len(images) == 1 and next(iter(images)).split("/")[-1].startswith("sparsepipe-ray:")
    low, high = re.search(r'"ray\[serve,data\]>=([\d.]+),<(\d+)"', PYPROJECT.read_text()).groups()
    version = tuple(int(x) for x in cluster["rayVersion"].split("."))
    assert tuple(int(x) for x in low.split(".")) <= version < (int(high),)


def test_every_pod_gets_the_serve_environment(service):
    from sparsepipe.ray.serve import SERVE_ENVIRONMENT

    cluster = service["spec"]["rayClusterConfig"]
    for pod in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        for container in pod["template"]["spec"]["containers"]:
            env = {e["name"]: e["value"] for e in container["env"]}
            assert SERVE_ENVIRONMENT.items() <= env.items(), container["name"]


def test_the_serve_config_is_valid_for_ray_serve(serve_config):
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(serve_config)
    (application,) = schema.applications
    assert application.import_path == "sparsepipe.ray.serve:app"


def test_deployed_it_answers_as_the_in_process_pipelines(ray_cluster, serve_config):
    from ray import serve

    (application,) = serve_config["applications"]
    module, _, attr = application["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), attr)
    # the manifest's workers have 4 CPUs each; the test cluster has 2, so shrink every replica
    args = copy.deepcopy(application["args"])
    for ep in args["config"]["endpoints"]:
        ep["ray_actor_options"] = {"num_cpus": 0.25}
        if "num_replicas" in ep:
            ep["num_replicas"] = 1
        if "autoscaling_config" in ep:
            ep["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(builder(args), name="kuberay", route_prefix=application["route_prefix"])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            body = {"sequences": ["I love it", "what a dull film"]}
            r = client.post("/v2/models/text-classification/infer", json=body)
            assert r.status_code == 200, r.text
            assert same_answer(r.json(), Pipeline.create("sentiment-analysis")(**body).model_dump())
            text = "mail maria.g@example.org, Maria Garcia"
            r = client.post("/v2/models/pii/infer", json={"inputs": text})
            assert r.status_code == 200, r.text
            ner = Pipeline.create("ner", aggregation_strategy="simple")
            assert same_answer(r.json(), ner(inputs=text).model_dump())
            assert client.get("/metrics").status_code == 200
    finally:
        serve.delete("kuberay")
        serve.shutdown()
