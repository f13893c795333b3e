"""Router children: config from the spec, restricted pods, settings, and the weights read back (tables)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.serving.objects import model_deployment

from kubetune.api.routerconfig import CONFIG_FILE_NAME, RouterConfig, RouterVariant, parse_router_config
from kubetune.builders.common import LABEL_DEPLOYMENT, LABEL_ROLE
from kubetune.builders.router import (
    ANNOTATION_ROLLOUT,
    RouterSettings,
    build_router_children,
    build_router_config,
    build_router_deployment,
    build_router_token_secret,
    routed_weights,
    router_config_of,
    router_endpoint,
    router_token_of,
    router_token_secret_name,
    variant_upstream,
    with_revision,
)
from kubetune.reconcile.router_push import needs_push, took_push

URI = {"uri": "pvc://models/base"}
MDEP = model_deployment(
    [
        {"name": "stable", "model": URI, "weight": 70},
        {"name": "lora", "model": URI, "adapters": [{"name": "legal", "uri": "pvc://a/legal"}], "weight": 30},
    ],
    traffic={"stickyHeader": "x-team"},
)


def kinds(children: list[dict[str, Any]]) -> list[str]:
    return [c["kind"] for c in children]


def test_config_lists_every_variant_with_its_service_and_model_rewrite() -> None:
    config = build_router_config(MDEP, {"stable": 70, "lora": 30}, {"stable": True})
    by_name = {v.name: v for v in config.variants}
    assert by_name["stable"].endpoints == ("http://chat-vllm-stable.ml.svc:8000",)
    assert by_name["stable"].served_model == "stable", "clients reach the variant by one name"
    assert by_name["lora"].served_model is None, "a variant with adapters keeps the client's model"
    assert (by_name["stable"].ready, by_name["lora"].ready) == (True, False)
    assert config.sticky_header == "x-team"
    assert variant_upstream(MDEP, "lora") == "http://chat-vllm-lora.ml.svc:8000"
    assert router_endpoint(MDEP) == "http://chat-router.ml.svc:8080/v1"


@pytest.mark.parametrize(
    ("settings", "pod_monitor", "expected_kinds"),
    [
        (RouterSettings(replicas=2), False, ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]),
        (RouterSettings(replicas=1), False, ["ConfigMap", "Deployment", "Service"]),
        (
            RouterSettings(replicas=3, scrape_annotations=False),
            True,
            ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "PodMonitor"],
        ),
    ],
)
def test_children_by_settings(settings: RouterSettings, pod_monitor: bool, expected_kinds: list[str]) -> None:
    config = build_router_config(MDEP, {"stable": 100}, {"stable": True})
    children = build_router_children(
        MDEP, config, settings, pod_monitor=pod_monitor, annotations={ANNOTATION_ROLLOUT: "r1"}
    )
    assert kinds(children) == expected_kinds
    for child in children:
        meta = child["metadata"]
        assert meta["name"] == "chat-router"
        assert meta["labels"][LABEL_DEPLOYMENT] == "chat"
        assert meta["labels"][LABEL_ROLE] == "router"
        assert meta["ownerReferences"][0]["kind"] == "ModelDeployment"
    configmap = children[0]
    assert configmap["metadata"]["annotations"] == {ANNOTATION_ROLLOUT: "r1"}
    assert parse_router_config(configmap["data"][CONFIG_FILE_NAME]) == config
    deployment = children[1]
    assert deployment["spec"]["replicas"] == settings.replicas
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert ("prometheus.io/scrape" in annotations) == settings.scrape_annotations


def test_deployment_is_restricted_and_mounts_the_config() -> None:
    settings = RouterSettings(
        image="registry.local/router:1.2.3", replicas=2, resources={"limits": {"cpu": "1"}}
    )
    deployment = build_router_deployment(MDEP, settings)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.local/router:1.2.3"
    assert container["resources"] == {"limits": {"cpu": "1"}}
    assert container["args"][:2] == ["--config", "/etc/kubetune/router/router.json"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "readOnlyRootFilesystem": True,
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "config", "configMap": {"name": "chat-router"}} in pod["volumes"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "kubetune.io/deployment": "chat",
        "kubetune.io/role": "router",
    }


@pytest.mark.parametrize(
    ("weights", "ready", "expected"),
    [
        ({"stable": 70, "lora": 30}, {"stable": True, "lora": True}, {"stable": 70, "lora": 30}),
        ({"stable": 70, "lora": 30}, {"stable": True}, {"stable": 70, "lora": 0}),
        ({"stable": 0, "lora": 100}, {"stable": False, "lora": True}, {"stable": 0, "lora": 100}),
    ],
)
def test_weights_read_back_count_only_routable_variants(
    weights: dict[str, int], ready: dict[str, bool], expected: dict[str, int]
) -> None:
    configmap = build_router_children(MDEP, build_router_config(MDEP, weights, ready), RouterSettings())[0]
    assert routed_weights(router_config_of(configmap)) == expected


@pytest.mark.parametrize(
    "configmap",
    [
        None,
        {"data": {}},
        {"data": {CONFIG_FILE_NAME: "variants: []"}},
        {"data": {CONFIG_FILE_NAME: "[1, 2]"}},
    ],
)
def test_missing_or_invalid_config_reads_as_no_weights(configmap: dict[str, Any] | None) -> None:
    assert routed_weights(router_config_of(configmap)) == {}


def test_served_by_variants_route_to_their_hosts_pods_under_the_adapter_name() -> None:
    mdep = model_deployment(
        [
            {
                "name": "base",
                "model": URI,
                "adapters": [{"name": "a1", "uri": "pvc://a/1"}, {"name": "a2", "uri": "pvc://a/2"}],
            },
            {"name": "v1", "servedBy": {"variant": "base", "adapter": "a1"}, "weight": 80},
            {"name": "v2", "servedBy": {"variant": "base", "adapter": "a2"}, "weight": 20},
        ]
    )
    config = build_router_config(mdep, {"v1": 80, "v2": 20}, {"base": True, "v1": True, "v2": True})
    by_name = {v.name: v for v in config.variants}
    host = "http://chat-vllm-base.ml.svc:8000"
    assert [(by_name[n].endpoints, by_name[n].served_model, by_name[n].weight) for n in ("v1", "v2")] == [
        ((host,), "a1", 80),
        ((host,), "a2", 20),
    ]
    assert by_name["base"].weight == 0


def test_the_router_pulls_with_the_charts_image_pull_secrets() -> None:
    mdep = MDEP
    plain = build_router_deployment(mdep, RouterSettings())["spec"]["template"]["spec"]
    assert "imagePullSecrets" not in plain
    with_secrets = build_router_deployment(mdep, RouterSettings(image_pull_secrets=("regcred",)))
    assert with_secrets["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_the_router_requires_the_token_from_its_secret_mounted_read_only() -> None:
    pod = build_router_deployment(MDEP, RouterSettings())["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[args.index("--token-file") + 1] == "/etc/kubetune/router-token/token"
    assert {"name": "token", "mountPath": "/etc/kubetune/router-token", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": "token", "secret": {"secretName": "chat-router-token"}} in pod["volumes"]
    assert router_token_secret_name("chat") == "chat-router-token"


def test_the_token_secret_holds_the_given_token_and_is_owned_by_the_modeldeployment() -> None:
    secret = build_router_token_secret(MDEP, "t0ken")
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "chat-router-token"
    assert secret["metadata"]["namespace"] == "ml"
    assert secret["metadata"]["labels"][LABEL_DEPLOYMENT] == "chat"
    assert secret["metadata"]["labels"][LABEL_ROLE] == "router-token"
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    assert secret["data"] == {"token": base64.b64encode(b"t0ken").decode()}
    assert build_router_token_secret(MDEP, "t0ken") == secret, "pure: the caller picks the value"
    assert router_token_of(secret) == "t0ken"


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        (None, None),
        ({"data": {}}, None),
        ({"data": {"token": ""}}, None),
        ({"data": {"token": "not base64!"}}, None),
        ({"data": {"token": base64.b64encode(b"\xff\xfe").decode()}}, None),
        ({"data": {"token": base64.b64encode(b"abc\n").decode()}}, "abc"),
    ],
)
def test_token_read_back_from_a_stored_secret(secret: dict[str, Any] | None, expected: str | None) -> None:
    assert router_token_of(secret) == expected


NOW = datetime(2026, 11, 29, 20, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def split(a: int, revision: int = 0) -> RouterConfig:
    return RouterConfig(
        variants=(RouterVariant(name="a", weight=a), RouterVariant(name="b", weight=100 - a)),
        revision=revision,
    )


@pytest.mark.parametrize(
    ("desired", "previous", "revision", "pushed"),
    [
        pytest.param(split(50), None, NOW_MS, True, id="first write: the time of the write"),
        pytest.param(split(50), split(50, 7), 7, False, id="same content: the stored revision, no push"),
        pytest.param(split(40), split(50, 7), NOW_MS, True, id="new content: the time of the write"),
        pytest.param(
            split(40),
            split(50, NOW_MS + 60_000),
            NOW_MS + 60_001,
            True,
            id="the clock stepped back: still above the stored revision",
        ),
        pytest.param(split(50), split(50, 0), 0, False, id="a config from before revisions: kept as written"),
    ],
)
def test_revision_orders_each_new_content_and_only_new_content_is_pushed(
    desired: RouterConfig, previous: RouterConfig | None, revision: int, pushed: bool
) -> None:
    config = with_revision(desired, previous, NOW)
    assert config.revision == revision
    assert config.weights() == desired.weights()
    assert needs_push(config, previous) is pushed


def test_revisions_increase_over_successive_writes() -> None:
    first = with_revision(split(50), None, NOW)
    second = with_revision(split(40), first, NOW)  # the same millisecond
    third = with_revision(split(30), second, NOW + timedelta(seconds=1))
    assert first.revision < second.revision < third.revision


@pytest.mark.parametrize(
    ("answer", "took"),
    [
        pytest.param(b'{"installed": true, "revision": 7}', True, id="installed"),
        pytest.param(b'{"installed": false, "revision": 9}', True, id="a newer one served: nothing to do"),
        pytest.param(b'{"config": {"variants": []}, "routable": {}}', False, id="router from before pushes"),
        pytest.param(b"<html>", False, id="not JSON"),
    ],
)
def test_only_a_routers_verdict_counts_as_a_push_taken(answer: bytes, took: bool) -> None:
    assert took_push(answer) is took
