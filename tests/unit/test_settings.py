"""OperatorSettings: the environment names the chart, the dev cluster and the tests set."""

from __future__ import annotations

import pytest

from kubetune.builders.finetunejob import DEFAULT_TRAINER_IMAGE
from kubetune.builders.router import DEFAULT_ROUTER_RESOURCES
from kubetune.settings import DEFAULT_LIVENESS, OperatorSettings, parse_pull_secrets


def test_defaults_without_environment() -> None:
    settings = OperatorSettings.from_env({})
    assert settings == OperatorSettings(metrics_port=9090)
    assert settings.trainer_image == DEFAULT_TRAINER_IMAGE
    assert settings.router.resources == DEFAULT_ROUTER_RESOURCES
    assert settings.liveness == DEFAULT_LIVENESS
    assert not settings.allow_url_overrides


def test_every_variable_is_read() -> None:
    settings = OperatorSettings.from_env(
        {
            "KUBETUNE_KUBECONFIG": "/k",
            "KUBECONFIG": "/a:/b",
            "KUBERNETES_SERVICE_HOST": "10.0.0.1",
            "HOSTNAME": "op-0",
            "KUBETUNE_METRICS_PORT": "",
            "KUBETUNE_LIVENESS": "http://127.0.0.1:1/healthz",
            "KUBETUNE_RESYNC_SECONDS": "2",
            "KUBETUNE_WORKER_LIMIT": "7",
            "KUBETUNE_TRAINER_IMAGE": "t:1",
            "KUBETUNE_VLLM_IMAGE": "v:1",
            "KUBETUNE_ROUTER_IMAGE": "r:1",
            "KUBETUNE_ROUTER_REPLICAS": "4",
            "KUBETUNE_ROUTER_RESOURCES": '{"requests": {"cpu": "1"}}',
            "KUBETUNE_PROMETHEUS_URL": "http://prom:9090",
            "KUBETUNE_CRD_CACHE_SECONDS": "0",
            "KUBETUNE_SMOKE_WAIT_SECONDS": "2",
            "KUBETUNE_SMOKE_TIMEOUT_SECONDS": "9",
            "KUBETUNE_SMOKE_URL_OVERRIDE": "allow",
            "KUBETUNE_MONITOR_LABELS": '{"release": "kube-prometheus-stack"}',
        }
    )
    assert settings.monitor_labels == settings.router.monitor_labels == {"release": "kube-prometheus-stack"}
    assert (settings.kube.kubeconfig, settings.kube.default_kubeconfig, settings.kube.service_host) == (
        "/k",
        "/a:/b",
        "10.0.0.1",
    )
    assert (settings.instance, settings.metrics_port, settings.liveness) == (
        "op-0",
        None,
        "http://127.0.0.1:1/healthz",
    )
    assert (settings.resync_seconds, settings.worker_limit) == (2.0, 7)
    assert (settings.trainer_image, settings.vllm_image, settings.router.image) == ("t:1", "v:1", "r:1")
    assert (settings.router.replicas, dict(settings.router.resources)) == (4, {"requests": {"cpu": "1"}})
    assert settings.prometheus_url == "http://prom:9090"
    assert (settings.crd_cache_seconds, settings.smoke_wait_seconds, settings.smoke_timeout_seconds) == (
        0,
        2,
        9,
    )
    assert settings.allow_url_overrides


def test_the_command_line_wins_over_the_environment() -> None:
    env = {"KUBETUNE_METRICS_PORT": "9100", "KUBETUNE_LIVENESS": "http://e/healthz"}
    settings = OperatorSettings.from_env(env, metrics_port=0, liveness="http://c/healthz", namespaces=("a",))
    assert (settings.metrics_port, settings.liveness, settings.namespaces) == (0, "http://c/healthz", ("a",))


@pytest.mark.parametrize(
    ("text", "names"),
    [("", ()), ('["regcred"]', ("regcred",)), ('["a", "b"]', ("a", "b")), ("a, b", ("a", "b")), ("[]", ())],
)
def test_image_pull_secrets_from_the_charts_json_list(text: str, names: tuple[str, ...]) -> None:
    assert parse_pull_secrets(text) == names
    assert OperatorSettings.from_env({"KUBETUNE_IMAGE_PULL_SECRETS": text}).image_pull_secrets == names


def test_a_malformed_pull_secret_list_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="KUBETUNE_IMAGE_PULL_SECRETS"):
        parse_pull_secrets('[{"name": "x"}]')


@pytest.mark.parametrize("text", ['["release"]', '{"release": 1}'])
def test_monitor_labels_must_be_an_object_of_strings(text: str) -> None:
    with pytest.raises(ValueError, match="KUBETUNE_MONITOR_LABELS"):
        OperatorSettings.from_env({"KUBETUNE_MONITOR_LABELS": text})
