"""The gateway providers: an HTTPRoute with weighted backendRefs to the variants' Services or
InferencePools, hostnames and timeouts, read back (tables)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.serving.objects import model_deployment

from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.builders.httproute import (
    build_gateway_traffic,
    build_httproute,
    httproute_name,
    httproute_weights,
)
from kubetune.builders.modeldeployment import build_variant_children
from kubetune.serving.resolution import Resolution, ResolutionState

URI = {"uri": "pvc://models/base"}
SERVICES = {"chat-vllm-a": "a", "chat-vllm-b": "b"}


def mdep(parent_refs: list[dict[str, Any]]) -> dict[str, Any]:
    return model_deployment(
        [{"name": "a", "model": URI, "weight": 90}, {"name": "b", "model": URI, "weight": 10}],
        traffic={"provider": "gateway-api", "gatewayParentRefs": parent_refs},
    )


@pytest.mark.parametrize(
    ("parent_refs", "expected"),
    [
        ([], []),
        (
            [{"name": "public"}],
            [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}],
        ),
        (
            [{"name": "public", "namespace": "infra", "sectionName": "https"}],
            [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": "public",
                    "namespace": "infra",
                    "sectionName": "https",
                }
            ],
        ),
    ],
)
def test_parent_refs(parent_refs: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert build_httproute(mdep(parent_refs), {"a": 90, "b": 10})["spec"]["parentRefs"] == expected


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({"a": 90, "b": 10}, [("chat-vllm-a", 90), ("chat-vllm-b", 10)]),
        ({"a": 100}, [("chat-vllm-a", 100), ("chat-vllm-b", 0)]),
        ({}, [("chat-vllm-a", 0), ("chat-vllm-b", 0)]),
    ],
)
def test_backend_refs_carry_the_weights(weights: dict[str, int], expected: list[tuple[str, int]]) -> None:
    route = build_httproute(mdep([{"name": "gw"}]), weights, {"kubetune.io/rollout": "r"})
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["name"] == httproute_name("chat") == "chat-router"
    assert route["metadata"]["annotations"] == {"kubetune.io/rollout": "r"}
    assert route["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == expected
    assert {(b["kind"], b["port"]) for b in rule["backendRefs"]} == {("Service", 8000)}
    assert httproute_weights(route, SERVICES) == dict(zip("ab", [w for _, w in expected], strict=True))


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (None, {}),
        ({"spec": {"rules": []}}, {}),
        # Gateway API's default weight is 1; a backend someone added by hand is not a variant.
        (
            {"spec": {"rules": [{"backendRefs": [{"name": "chat-vllm-a"}, {"name": "other", "weight": 5}]}]}},
            {"a": 1},
        ),
        (
            {
                "spec": {
                    "rules": [
                        {"backendRefs": [{"name": "chat-vllm-a", "weight": 20}]},
                        {
                            "backendRefs": [
                                {"name": "chat-vllm-a", "weight": 30},
                                {"name": "chat-vllm-b", "weight": 50},
                            ]
                        },
                    ]
                }
            },
            {"a": 50, "b": 50},
        ),
    ],
)
def test_weights_read_back(route: dict[str, Any] | None, expected: dict[str, int]) -> None:
    assert httproute_weights(route, SERVICES) == expected


def gateway_mdep(provider: str, **traffic: Any) -> dict[str, Any]:
    return model_deployment(
        [{"name": "a", "model": URI, "weight": 90}, {"name": "b", "model": URI, "weight": 10}],
        traffic={"provider": provider, "gatewayParentRefs": [{"name": "public"}], **traffic},
    )


@pytest.mark.parametrize(
    ("traffic", "hostnames", "timeouts"),
    [
        # Defaults sized for streams: gateways' own 15-30 s would cut long generations off.
        ({}, None, {"request": "600s", "backendRequest": "600s"}),
        (
            {"hostnames": ["llm.example.com"], "timeouts": {"request": "1h", "backendRequest": "30m"}},
            ["llm.example.com"],
            {"request": "1h", "backendRequest": "30m"},
        ),
    ],
)
@pytest.mark.parametrize("provider", ["gateway-api", "inference-pool"])
def test_route_hostnames_and_stream_sized_timeouts(
    provider: str, traffic: dict[str, Any], hostnames: list[str] | None, timeouts: dict[str, str]
) -> None:
    route = build_httproute(gateway_mdep(provider, **traffic), {"a": 90, "b": 10})
    assert route["spec"].get("hostnames") == hostnames
    (rule,) = route["spec"]["rules"]
    assert rule["timeouts"] == timeouts


@pytest.mark.parametrize(
    ("provider", "backend"),
    [
        ("gateway-api", {"group": "", "kind": "Service", "port": 8000}),
        ("inference-pool", {"group": "inference.networking.k8s.io", "kind": "InferencePool"}),
    ],
)
def test_backends_are_services_or_inference_pools_weighted_alike(
    provider: str, backend: dict[str, Any]
) -> None:
    route = build_httproute(gateway_mdep(provider), {"a": 75, "b": 25})
    backends = route["spec"]["rules"][0]["backendRefs"]
    assert backends == [
        {**backend, "name": "chat-vllm-a", "weight": 75},
        {**backend, "name": "chat-vllm-b", "weight": 25},
    ]
    # Pools are named like the Services: weights read back the same way for both providers.
    assert httproute_weights(route, SERVICES) == {"a": 75, "b": 25}


@pytest.mark.parametrize(
    ("picker", "expected_ref"),
    [
        (None, None),
        (
            {},
            {
                "kind": "Service",
                "name": "chat-vllm-a-epp",
                "port": {"number": 9002},
                "failureMode": "FailClose",
            },
        ),
        (
            {"port": 9100, "failureMode": "FailOpen"},
            {
                "kind": "Service",
                "name": "chat-vllm-a-epp",
                "port": {"number": 9100},
                "failureMode": "FailOpen",
            },
        ),
    ],
)
def test_one_inference_pool_per_variant_selects_its_vllm_pods(
    picker: dict[str, Any] | None, expected_ref: dict[str, Any] | None
) -> None:
    traffic = {"endpointPicker": picker} if picker is not None else {}
    obj = gateway_mdep("inference-pool", **traffic)
    spec = ModelDeploymentSpec.model_validate(obj["spec"])
    children = build_gateway_traffic(obj, {"a": 90, "b": 10}, None, spec)
    assert [c["kind"] for c in children] == ["InferencePool", "InferencePool", "HTTPRoute"]
    pool = children[0]
    assert (pool["apiVersion"], pool["metadata"]["name"]) == ("inference.networking.k8s.io/v1", "chat-vllm-a")
    assert pool["metadata"]["labels"]["kubetune.io/variant"] == "a"
    deployment_labels = build_variant_children(
        obj,
        spec.variants[0],
        Resolution(ResolutionState.READY, Reason.MODEL_RESOLVED, "ok", model_uri=URI["uri"]),
    )[0]["spec"]["template"]["metadata"]["labels"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= deployment_labels.items()
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"].get("endpointPickerRef") == expected_ref


def test_the_gateway_api_provider_renders_no_pools() -> None:
    obj = gateway_mdep("gateway-api")
    spec = ModelDeploymentSpec.model_validate(obj["spec"])
    assert [c["kind"] for c in build_gateway_traffic(obj, {"a": 100}, None, spec)] == ["HTTPRoute"]
