"""The inference-pool provider against the real API server, with the Gateway API and Inference
Extension CRDs from their pinned Go modules: one InferencePool per variant, an HTTPRoute with weighted
backendRefs to the pools that the canary moves, the route's status read back into RouteAccepted, and
the endpoint written to status. The test plays the Gateway controller (it writes the Gateway's address
and the route's status.parents), as no gateway implementation runs here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.test_modeldeployment_reconcile import GOMOD, established, get
from tests.integration.test_modeldeployment_traffic import (
    GATEWAY_API,
    openai_servers,
    paused_canary,
    simulated_gpu_node,
    with_smoke_urls,
)
from tests.support.cluster import Kube
from tests.support.operator import running_operator
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster

__all__ = ["openai_servers"]  # a fixture, used by name

INFERENCE_EXTENSION = "sigs.k8s.io/gateway-api-inference-extension@v1.6.0"
CRDS = [
    GOMOD / GATEWAY_API / "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml",
    GOMOD / GATEWAY_API / "config/crd/standard/gateway.networking.k8s.io_gateways.yaml",
    # Only InferencePool v1: the rest of the extension's API is not depended on.
    GOMOD / INFERENCE_EXTENSION / "config/crd/bases/inference.networking.k8s.io_inferencepools.yaml",
]
ENV = {"KUBETUNE_CRD_CACHE_SECONDS": "0", "KUBETUNE_SMOKE_WAIT_SECONDS": "2"}


@pytest.fixture(scope="module")
def gateway_crds(kube: Kube) -> Iterator[None]:
    for path in CRDS:
        assert path.exists(), f"{path} missing: run .ci/toolchain/build.sh crds (go mod download)"
        kube.kubectl("apply", "--server-side", "--field-manager=test", "-f", str(path))
    for crd in ("httproutes.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io"):
        established(kube, crd)
    established(kube, "inferencepools.inference.networking.k8s.io")
    try:
        yield
    finally:
        for path in CRDS:
            kube.kubectl("delete", "-f", str(path), "--ignore-not-found", "--wait=true")


@pytest.fixture(scope="module")
def pool_node(kube: Kube) -> Iterator[str]:
    """A simulated GPU node (its own name: the traffic module's node may still be going away)."""
    with simulated_gpu_node(kube, "gw-test-gpu-node", "kwok-gw-") as node:
        yield node


def route_weights(kube: Kube, namespace: str) -> dict[str, int]:
    route = get(kube, "httproute", "pool-router", namespace)
    if route is None:
        return {}
    return {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}


def play_gateway_controller(
    kube: Kube, namespace: str, resolved: str = "True", reason: str = "ResolvedRefs"
) -> None:
    """What a Gateway implementation writes: its address, and its verdict on the route's generation."""
    route = get(kube, "httproute", "pool-router", namespace)
    assert route is not None
    generation = route["metadata"]["generation"]
    status = {
        "parents": [
            {
                "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"},
                "controllerName": "example.com/gateway-controller",
                "conditions": [
                    {
                        "type": kind,
                        "status": value,
                        "reason": why,
                        "message": f"{why} (test controller)",
                        "observedGeneration": generation,
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                    for kind, value, why in (
                        ("Accepted", "True", "Accepted"),
                        ("ResolvedRefs", resolved, reason),
                    )
                ],
            }
        ]
    }
    kube.kubectl(
        "patch", "httproute", "pool-router", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def condition_of(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    return next(
        (c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), None
    )


def route_condition(kube: Kube, namespace: str) -> dict[str, Any] | None:
    return condition_of(get(kube, "modeldeployment", "pool", namespace), "RouteAccepted")


def test_inference_pools_weighted_by_the_canary_and_the_route_status_read_back(
    kube: Kube, namespace: str, pool_node: str, openai_servers: dict[str, str], gateway_crds: None
) -> None:
    # The canary is held until the stable variant is routable (as the router's canary test does).
    obj = paused_canary(
        "pool",
        [50, 100],
        "4s",
        provider="inference-pool",
        gatewayParentRefs=[{"name": "public"}],
        hostnames=["llm.example.com"],
        endpointPicker={"port": 9002},
    )
    kube.apply(
        with_smoke_urls(obj, {"stable": openai_servers["good"], "canary": openai_servers["good"]}), namespace
    )
    kube.apply(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "public"},
            "spec": {
                "gatewayClassName": "example",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}],
            },
        },
        namespace,
    )
    seen: list[dict[str, int]] = []

    def weights_are(expected: dict[str, int]) -> bool:
        current = route_weights(kube, namespace)
        if current and (not seen or seen[-1] != current):
            seen.append(current)
        return current == expected

    with running_operator(kube, namespace, extra_env=ENV):
        eventually(
            lambda: weights_are({"pool-vllm-stable": 100, "pool-vllm-canary": 0}),
            timeout=90,
            message="stable takes the route",
        )
        pools = {
            p: get(kube, "inferencepool", p, namespace) for p in ("pool-vllm-stable", "pool-vllm-canary")
        }
        pending = route_condition(kube, namespace)

        play_gateway_controller(kube, namespace)
        kube.kubectl(
            "patch", "gateway", "public", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"addresses": [{"type": "IPAddress", "value": "203.0.113.7"}]}}),
        )  # fmt: skip
        accepted = eventually(
            lambda: (
                (m := get(kube, "modeldeployment", "pool", namespace))
                and (c := condition_of(m, "RouteAccepted"))
                and c["status"] == "True"
                and m
            ),
            timeout=60,
            message="RouteAccepted read back from status.parents",
        )

        kube.kubectl(
            "patch", "modeldeployment", "pool", "-n", namespace, "--type=merge",
            "-p", '{"spec": {"traffic": {"canary": {"pause": false}}}}',
        )  # fmt: skip
        eventually(
            lambda: weights_are({"pool-vllm-stable": 0, "pool-vllm-canary": 100}),
            timeout=120,
            message=f"the canary moves the pools' weights (seen {seen})",
        )
        # The route changed: the Gateway's verdict was about an older generation.
        stale = eventually(
            lambda: (c := route_condition(kube, namespace)) and c["status"] == "Unknown" and c,
            timeout=30,
            message="RouteAccepted Unknown until the Gateway reports on the new generation",
        )
        play_gateway_controller(kube, namespace, resolved="False", reason="BackendNotFound")
        refused = eventually(
            lambda: (c := route_condition(kube, namespace)) and c["status"] == "False" and c,
            timeout=30,
            message="a refusal is read back with the Gateway's reason",
        )

    for variant, pool in pools.items():
        assert pool is not None, variant
        assert pool["spec"]["selector"]["matchLabels"]["kubetune.io/variant"] == variant.removeprefix(
            "pool-vllm-"
        )
        assert pool["spec"]["targetPorts"] == [{"number": 8000}]
        assert pool["spec"]["endpointPickerRef"]["name"] == f"{variant}-epp"
    route = get(kube, "httproute", "pool-router", namespace)
    assert route is not None
    assert route["spec"]["hostnames"] == ["llm.example.com"]
    rule = route["spec"]["rules"][0]
    assert rule["timeouts"] == {"request": "600s", "backendRequest": "600s"}
    assert {(b["group"], b["kind"]) for b in rule["backendRefs"]} == {
        ("inference.networking.k8s.io", "InferencePool")
    }
    assert pending is not None
    assert (pending["status"], pending["reason"]) == ("Unknown", "RoutePending")
    assert accepted["status"]["endpoint"] == "http://llm.example.com/v1"
    assert stale["reason"] == "RoutePending"
    assert refused["reason"] == "BackendNotFound"
    assert "Gateway " in refused["message"]
    # Weights only ever moved towards the canary.
    canary_weights = [w["pool-vllm-canary"] for w in seen]
    assert canary_weights == sorted(canary_weights), seen
    assert get(kube, "configmap", "pool-router", namespace) is None, "no router with a gateway provider"
