"""The RouteAccepted condition from an HTTPRoute's status.parents, and status.endpoint (tables)."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.api.modeldeployment import GatewayParentRef
from kubetune.status.route import route_endpoint, route_verdict

PUBLIC = GatewayParentRef(name="public", namespace="infra")
INTERNAL = GatewayParentRef(name="internal")  # in the route's namespace


def parent(
    name: str, namespace: str | None, *conditions: tuple[str, str, str], generation: int = 2
) -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}
    if namespace:
        ref["namespace"] = namespace
    return {
        "parentRef": ref,
        "controllerName": "example.com/gateway",
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": f"{r} says so", "observedGeneration": generation}
            for t, s, r in conditions
        ],
    }


OK = (("Accepted", "True", "Accepted"), ("ResolvedRefs", "True", "ResolvedRefs"))


def route(*parents: dict[str, Any], generation: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat-router", "namespace": "ml", "generation": generation},
        "status": {"parents": list(parents)},
    }


@pytest.mark.parametrize(
    ("stored", "refs", "expected"),
    [
        (route(), [], ("False", "NoParentRefs")),
        (None, [PUBLIC], ("Unknown", "RoutePending")),
        # No controller has written anything yet.
        (route(), [PUBLIC], ("Unknown", "RoutePending")),
        (route(parent("public", "infra", *OK)), [PUBLIC], ("True", "Accepted")),
        # A parent in the route's namespace may be written without a namespace.
        (route(parent("internal", None, *OK)), [INTERNAL], ("True", "Accepted")),
        (route(parent("internal", "ml", *OK)), [INTERNAL], ("True", "Accepted")),
        # Another controller's Gateway does not count for ours.
        (route(parent("other", "infra", *OK)), [PUBLIC], ("Unknown", "RoutePending")),
        # Reported on an older generation of the route: not an answer about this one.
        (route(parent("public", "infra", *OK, generation=1)), [PUBLIC], ("Unknown", "RoutePending")),
        (
            route(
                parent(
                    "public",
                    "infra",
                    ("Accepted", "False", "NotAllowedByListeners"),
                    ("ResolvedRefs", "True", "ResolvedRefs"),
                )
            ),
            [PUBLIC],
            ("False", "NotAllowedByListeners"),
        ),
        (
            route(
                parent(
                    "public",
                    "infra",
                    ("Accepted", "True", "Accepted"),
                    ("ResolvedRefs", "False", "BackendNotFound"),
                )
            ),
            [PUBLIC],
            ("False", "BackendNotFound"),
        ),
        # One of two Gateways has not answered yet.
        (route(parent("public", "infra", *OK)), [PUBLIC, INTERNAL], ("Unknown", "RoutePending")),
        (
            route(parent("public", "infra", *OK), parent("internal", None, *OK)),
            [PUBLIC, INTERNAL],
            ("True", "Accepted"),
        ),
    ],
)
def test_route_verdict(
    stored: dict[str, Any] | None, refs: list[GatewayParentRef], expected: tuple[str, str]
) -> None:
    verdict = route_verdict(stored, refs)
    assert (verdict.status, verdict.reason) == expected
    if verdict.status == "False" and refs:
        assert "infra/public" in verdict.message


def gateway(*listeners: dict[str, Any], address: str | None = "203.0.113.7") -> dict[str, Any]:
    status = {"addresses": [{"type": "IPAddress", "value": address}]} if address else {}
    return {"spec": {"listeners": list(listeners)}, "status": status}


HTTP = {"name": "http", "protocol": "HTTP", "port": 80}
HTTPS = {"name": "https", "protocol": "HTTPS", "port": 443}
ALT = {"name": "alt", "protocol": "HTTP", "port": 8080}


@pytest.mark.parametrize(
    ("hostnames", "gw", "section", "expected"),
    [
        ([], gateway(HTTP), None, "http://203.0.113.7/v1"),
        (["llm.example.com"], gateway(HTTP, HTTPS), "https", "https://llm.example.com/v1"),
        (["llm.example.com"], gateway(ALT), None, "http://llm.example.com:8080/v1"),
        # A wildcard says nothing about a host: the Gateway's address.
        (["*.example.com"], gateway(HTTPS), None, "https://203.0.113.7/v1"),
        ([], gateway(HTTP, address="2001:db8::1"), None, "http://[2001:db8::1]/v1"),
        # The Gateway could not be read (no permission): the hostname alone, plain HTTP.
        (["llm.example.com"], None, None, "http://llm.example.com/v1"),
        ([], gateway(HTTP, address=None), None, None),
        ([], None, None, None),
    ],
)
def test_route_endpoint(
    hostnames: list[str], gw: dict[str, Any] | None, section: str | None, expected: str | None
) -> None:
    assert route_endpoint(hostnames, gw, section) == expected


def pool(name: str, *conditions: tuple[str, str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"parents": [parent("public", "infra", *conditions)]}}


@pytest.mark.parametrize(
    ("pools", "expected"),
    [
        ([], ("True", "Accepted")),
        ([pool("chat-vllm-a", *OK), pool("chat-vllm-b")], ("True", "Accepted")),
        # A gateway that wants an endpoint picker on every pool says so on the pool, not the route.
        (
            [
                pool("chat-vllm-a", *OK),
                pool("chat-vllm-b", ("Accepted", "False", "EndpointPickerRefMissing")),
            ],
            ("False", "EndpointPickerRefMissing"),
        ),
        (
            [pool("chat-vllm-a", ("ResolvedRefs", "False", "InvalidExtensionRef"))],
            ("False", "InvalidExtensionRef"),
        ),
    ],
)
def test_a_refused_pool_makes_the_route_condition_false(
    pools: list[dict[str, Any]], expected: tuple[str, str]
) -> None:
    verdict = route_verdict(route(parent("public", "infra", *OK)), [PUBLIC], pools)
    assert (verdict.status, verdict.reason) == expected
    if verdict.status == "False":
        assert "InferencePool chat-vllm-" in verdict.message
