"""Ray Serve settings in a server config, the ``serve --backend ray`` command line and the
missing-extra error: checked without starting Ray."""

from __future__ import annotations

import os
import sys

import pytest
from sparsepipe import ConfigError
from sparsepipe.cli import main
from sparsepipe.server import create_app, load_server_config

RAY_ENDPOINT = {
    "task": "sentiment-analysis",
    "num_replicas": 2,
    "max_ongoing_requests": 16,
    "ray_actor_options": {"num_cpus": 2},
}


def test_the_local_server_refuses_ray_settings_naming_the_fix(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"num_replicas.*--backend ray"):
        create_app({"endpoints": [RAY_ENDPOINT]})
    cfg = tmp_path / "server.yaml"
    cfg.write_text("endpoints:\n  - task: ner\n    autoscaling_config: {max_replicas: 4}\n")
    assert main(["serve", "--config", str(cfg)]) == 1
    assert "autoscaling_config, which only Ray Serve reads" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"ingress_replicas is a Ray Serve setting"):
        create_app({"ingress_replicas": 2, "endpoints": [{"task": "ner"}]})
    for flag in ("--address", "--proxy-location", "--http-proxy"):
        assert main(["serve", "--task", "ner", flag, "auto"]) == 1
        assert f"{flag} is a Ray Serve setting; it needs --backend ray" in capsys.readouterr().err


@pytest.mark.parametrize(
    "endpoint, match",
    [
        ({"num_replicas": 0}, r"endpoints\[0\]\.num_replicas"),
        ({"num_replicas": "many"}, r"endpoints\[0\]\.num_replicas"),
        ({"max_ongoing_requests": 0}, r"endpoints\[0\]\.max_ongoing_requests"),
        ({"ray_actor_options": "cpu"}, r"endpoints\[0\]\.ray_actor_options"),
        ({"num_replicas": 2, "autoscaling_config": {}}, r"num_replicas .* or autoscaling_config"),
    ],
)
def test_bad_ray_settings_name_the_key(endpoint, match):
    with pytest.raises(ConfigError, match=match):
        load_server_config({"endpoints": [{"task": "ner", **endpoint}]})


def test_deployment_options_default_to_the_pipeline_threads():
    from sparsepipe.ray.serve import deployment_options

    config = load_server_config(
        {
            "num_threads": 3,
            "endpoints": [
                {"task": "ner", "max_batch_size": 16, "num_replicas": "auto"},
                RAY_ENDPOINT,
            ],
        }
    )
    auto, fixed = (deployment_options(ep, config) for ep in config.endpoints)
    assert auto == {
        "name": "token-classification",
        "ray_actor_options": {"num_cpus": 3},
        "max_ongoing_requests": 32,
        "num_replicas": "auto",
    }
    assert fixed["ray_actor_options"] == {"num_cpus": 2}
    assert fixed["max_ongoing_requests"] == 16 and fixed["num_replicas"] == 2
    unset = load_server_config({"endpoints": [{"task": "ner"}, RAY_ENDPOINT]})
    assert [deployment_options(ep, unset)["ray_actor_options"] for ep in unset.endpoints] == [
        {"num_cpus": 1},
        {"num_cpus": 2},
    ]


def test_the_ingress_never_caps_the_endpoints_behind_it():
    from sparsepipe.ray.serve import Ingress

    # Serve's default (5 at once) would queue every endpoint's requests behind the ingress: 16
    # replicas served fewer items/s than 4 on a 16-core machine
    assert Ingress.max_ongoing_requests >= 1024
    assert Ingress.ray_actor_options == {"num_cpus": 0}


@pytest.mark.parametrize("value", [0, 65, "many", 1.5])
def test_bad_ingress_replicas_name_the_key(value):
    with pytest.raises(ConfigError, match=r"ingress_replicas"):
        load_server_config({"ingress_replicas": value, "endpoints": [{"task": "ner"}]})


def test_the_ingress_runs_as_many_replicas_as_the_config_asks():
    from sparsepipe.ray.serve import build_app

    def ingress_replicas(config):
        return build_app(config)._bound_deployment.num_replicas

    assert ingress_replicas({"endpoints": [{"task": "ner"}]}) == 1
    assert ingress_replicas({"ingress_replicas": 3, "endpoints": [{"task": "ner"}]}) == 3


def test_the_serve_run_builder_needs_a_config(monkeypatch, tmp_path):
    from sparsepipe.ray import serve as ray_serve

    monkeypatch.delenv(ray_serve.CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"config=server\.yaml.*SPARSEPIPE_SERVER_CONFIG"):
        ray_serve.app({})
    with pytest.raises(ConfigError, match="cannot read server config"):
        ray_serve.app({"config": str(tmp_path / "missing.yaml")})
    with pytest.raises(ConfigError, match="reserved"):
        ray_serve.build_app({"endpoints": [{"task": "ner", "name": ray_serve.INGRESS_NAME}]})
    with pytest.raises(ConfigError, match="sagemaker"):
        ray_serve.build_app({"integration": "sagemaker", "endpoints": [{"task": "ner"}]})
    cfg = tmp_path / "server.yaml"
    cfg.write_text("endpoints:\n  - task: ner\n    num_replicas: 2\n")
    monkeypatch.setenv(ray_serve.CONFIG_ENV, str(cfg))
    application = ray_serve.app()
    assert type(application).__name__ == "Application"


def test_a_missing_ray_extra_is_one_line_naming_the_extra(monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)
    from sparsepipe.ray import require_ray

    with pytest.raises(ConfigError, match=r"needs the ray extra .*pip install 'sparsepipe\[ray\]'"):
        require_ray("this")
    assert main(["serve", "--backend", "ray", "--task", "ner"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "sparsepipe serve --backend ray needs the ray extra" in err
    assert "pip install 'sparsepipe[ray]'" in err


def test_require_ray_checks_only_the_ray_libraries_a_command_uses(monkeypatch):
    from sparsepipe.ray import require_ray

    monkeypatch.setitem(sys.modules, "ray.serve", None)
    require_ray("sparsepipe batch --ray-address", ("data",))
    with pytest.raises(ConfigError, match=r"sparsepipe serve needs the ray extra \(ray.serve is"):
        require_ray("sparsepipe serve", ("serve",))


def test_the_core_never_imports_ray():
    import subprocess

    code = (
        "import sys, sparsepipe, sparsepipe.server, sparsepipe.cli, sparsepipe.ray;"
        "sparsepipe.cli.build_parser();"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_serve_environment_fills_only_unset_variables(monkeypatch):
    from sparsepipe.ray.serve import SERVE_ENVIRONMENT, apply_serve_environment

    first, *rest = SERVE_ENVIRONMENT
    for name in SERVE_ENVIRONMENT:  # set first, so that teardown restores what was there
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv(first, "user's value")
    assert apply_serve_environment() == {k: SERVE_ENVIRONMENT[k] for k in rest}
    assert os.environ[first] == "user's value"
    assert all(os.environ[k] == SERVE_ENVIRONMENT[k] for k in rest)
    assert apply_serve_environment() == {}


def test_access_log_false_turns_off_serves_access_log():
    from sparsepipe.ray.serve import build_app

    quiet = build_app({"access_log": False, "endpoints": [{"task": "ner"}]})._bound_deployment
    assert quiet._deployment_config.logging_config["enable_access_log"] is False
    default = build_app({"endpoints": [{"task": "ner"}]})._bound_deployment
    assert default._deployment_config.logging_config is None
