"""The gateway-api provider's HTTPRoute: weighted backendRefs to the variant Services, read back (tables)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.serving.objects import model_deployment

from kubetune.builders.httproute import build_httproute, httproute_name, httproute_weights

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
