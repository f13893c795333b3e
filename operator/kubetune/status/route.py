"""What the Gateways said about the HTTPRoute (its status.parents), and the endpoint clients call. Pure.

A Gateway controller writes one `status.parents[]` entry per Gateway it manages that the route names,
with `Accepted` (the listener took the route) and `ResolvedRefs` (every backendRef, Service or
InferencePool, exists and may be referenced). The route condition sums them up: True when every
named Gateway accepted it with resolved refs; False with the Gateway's own reason when one refused;
Unknown while a Gateway has not reported on the route's current generation (no controller, or busy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubetune.api.common import ConditionStatus
from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import GatewayParentRef

GATEWAY_GROUP = "gateway.networking.k8s.io"
CHECKED = ("Accepted", "ResolvedRefs")


@dataclass(frozen=True)
class RouteVerdict:
    status: ConditionStatus
    reason: str
    message: str


def _gateway(ref: GatewayParentRef, route_namespace: str) -> str:
    return f"{ref.namespace or route_namespace}/{ref.name}"


def _matches(entry: Mapping[str, Any], ref: GatewayParentRef, route_namespace: str) -> bool:
    parent = entry.get("parentRef") or {}
    return (
        parent.get("group", GATEWAY_GROUP) == GATEWAY_GROUP
        and parent.get("kind", "Gateway") == "Gateway"
        and parent.get("name") == ref.name
        and (parent.get("namespace") or route_namespace) == (ref.namespace or route_namespace)
        and parent.get("sectionName") == ref.section_name
    )


def route_verdict(
    route: Mapping[str, Any] | None,
    parent_refs: Sequence[GatewayParentRef],
    pools: Sequence[Mapping[str, Any]] = (),
) -> RouteVerdict:
    """The `RouteAccepted` condition from the route as stored (with the status Gateways wrote).

    `pools` (inference-pool provider): a Gateway may also refuse a pool itself (its own
    status.parents), e.g. `EndpointPickerRefMissing`; such a refusal makes the condition False too.
    """
    if not parent_refs:
        return RouteVerdict(
            "False",
            Reason.NO_PARENT_REFS,
            "traffic.gatewayParentRefs is empty: the HTTPRoute is attached to no Gateway",
        )
    if route is None:
        return RouteVerdict("Unknown", Reason.ROUTE_PENDING, "the HTTPRoute is not applied yet")
    meta = route.get("metadata") or {}
    namespace = str(meta.get("namespace", ""))
    generation = meta.get("generation")
    entries = (route.get("status") or {}).get("parents") or []
    pending: list[str] = []
    accepted: list[str] = []
    for ref in parent_refs:
        gateway = _gateway(ref, namespace)
        entry = next((e for e in entries if _matches(e, ref, namespace)), None)
        conditions = {c.get("type"): c for c in (entry or {}).get("conditions") or []}
        if entry is None or any(
            kind not in conditions
            or (
                generation is not None and conditions[kind].get("observedGeneration", generation) < generation
            )
            for kind in CHECKED
        ):
            pending.append(gateway)
            continue
        for kind in CHECKED:
            condition = conditions[kind]
            if condition.get("status") != "True":
                reason = str(condition.get("reason") or kind)
                message = str(condition.get("message") or "")
                return RouteVerdict(
                    "False",
                    reason,
                    f"Gateway {gateway}: {kind}={condition.get('status')}, {reason}: {message}".rstrip(": "),
                )
        accepted.append(gateway)
    for pool in pools:
        refusal = _pool_refusal(pool)
        if refusal is not None:
            return refusal
    if pending:
        return RouteVerdict(
            "Unknown",
            Reason.ROUTE_PENDING,
            f"no Gateway controller has reported on this generation of the route for {', '.join(pending)}",
        )
    return RouteVerdict("True", Reason.ACCEPTED, f"accepted with resolved backends by {', '.join(accepted)}")


def route_endpoint(
    hostnames: Sequence[str], gateway: Mapping[str, Any] | None, section_name: str | None
) -> str | None:
    """The OpenAI API base URL through the first parent Gateway.

    Host: the route's first hostname (a wildcard one says nothing about a host), else the Gateway's
    first address. Scheme and port: the listener named by `section_name`, else the first listener.
    """
    spec = (gateway or {}).get("spec") or {}
    listeners = spec.get("listeners") or []
    listener = next((entry for entry in listeners if entry.get("name") == section_name), None)
    if listener is None and listeners:
        listener = listeners[0]
    host = next((h for h in hostnames if not h.startswith("*")), None)
    if host is None:
        addresses = ((gateway or {}).get("status") or {}).get("addresses") or []
        host = str(addresses[0]["value"]) if addresses and addresses[0].get("value") else None
    if host is None:
        return None
    protocol = str((listener or {}).get("protocol", "HTTP"))
    scheme = "https" if protocol == "HTTPS" else "http"
    port = (listener or {}).get("port")
    default_port = 443 if scheme == "https" else 80
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    authority = host if port in (None, default_port) else f"{host}:{port}"
    return f"{scheme}://{authority}/v1"


def _pool_refusal(pool: Mapping[str, Any]) -> RouteVerdict | None:
    """A Gateway's False verdict on an InferencePool (Accepted or ResolvedRefs), if any."""
    name = str((pool.get("metadata") or {}).get("name", ""))
    for entry in (pool.get("status") or {}).get("parents") or []:
        gateway = (entry.get("parentRef") or {}).get("name", "")
        for condition in entry.get("conditions") or []:
            if condition.get("type") in CHECKED and condition.get("status") == "False":
                reason = str(condition.get("reason") or condition.get("type"))
                message = str(condition.get("message") or "")
                return RouteVerdict(
                    "False",
                    reason,
                    f"InferencePool {name}, Gateway {gateway}: {reason}: {message}".rstrip(": "),
                )
    return None
