"""The gateway-api traffic provider: one HTTPRoute with weighted backendRefs to the variant Services. Pure.

Limits compared with the kubetune router (docs/serving.md, "Gateway API provider"):
- no sticky assignment: Gateway API weights are per request, so a user moves between variants;
- no `model` rewrite: clients must send a model name every variant serves (give the variants' fine-tuned
  adapters or models one served name, or use the router);
- no override header and no per-variant metrics from the proxy: canary analysis reads the router's series,
  so with this provider it needs the gateway's own metrics relabelled to the same names;
- a variant that is not ready (smoke test, availability) gets weight 0 here: a backend with no ready
  endpoints would otherwise answer 5xx for its share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.builders.common import LABEL_DEPLOYMENT, LABEL_ROLE, Manifest, metadata, standard_labels
from kubetune.builders.modeldeployment import variant_resource_name
from kubetune.builders.router import router_resource_name
from kubetune.builders.vllm import VLLM_PORT

GATEWAY_API = "gateway-api"
"""`traffic.provider` that renders an HTTPRoute instead of the router."""

ROLE_ROUTE = "route"
GATEWAY_GROUP = "gateway.networking.k8s.io"


def _name(mdep: Mapping[str, Any]) -> str:
    return str(mdep["metadata"]["name"])


def httproute_name(deployment_name: str) -> str:
    """The route is the router's stand-in, so it takes the router's name."""
    return router_resource_name(deployment_name)


def build_httproute(
    mdep: Mapping[str, Any],
    weights: Mapping[str, int],
    annotations: Mapping[str, str] | None = None,
    spec: ModelDeploymentSpec | None = None,
) -> Manifest:
    """All of `/` to the variants' Services in proportion to `weights` (0 for a variant not listed)."""
    spec = spec or ModelDeploymentSpec.model_validate(mdep["spec"])
    name = _name(mdep)
    parent_refs = []
    for ref in spec.traffic.gateway_parent_refs:
        parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": ref.name}
        if ref.namespace:
            parent["namespace"] = ref.namespace
        if ref.section_name:
            parent["sectionName"] = ref.section_name
        parent_refs.append(parent)
    backends = [
        {
            "group": "",
            "kind": "Service",
            "name": variant_resource_name(name, v.name),
            "port": VLLM_PORT,
            "weight": weights.get(v.name, 0),
        }
        for v in spec.variants
    ]
    labels = {
        **standard_labels(name="kubetune-route", component="traffic", instance=name),
        LABEL_DEPLOYMENT: name,
        LABEL_ROLE: ROLE_ROUTE,
    }
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(
            name=httproute_name(name),
            namespace=str(mdep["metadata"]["namespace"]),
            owner=mdep,
            labels=labels,
            annotations=annotations,
        ),
        "spec": {
            "parentRefs": parent_refs,
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": backends}],
        },
    }


def httproute_weights(
    route: Mapping[str, Any] | None, service_to_variant: Mapping[str, str]
) -> dict[str, int]:
    """Weights as stored in an HTTPRoute (read back from the API server), by variant name.

    `service_to_variant` maps the variants' Service names back to variant names; a backend the
    operator did not render (someone edited the route) is ignored. A backendRef without a weight
    has Gateway API's default weight, 1.
    """
    if route is None:
        return {}
    weights: dict[str, int] = {}
    for rule in (route.get("spec") or {}).get("rules") or []:
        for backend in rule.get("backendRefs") or []:
            variant = service_to_variant.get(str(backend.get("name")))
            if variant is not None:
                weights[variant] = weights.get(variant, 0) + int(backend.get("weight", 1))
    return weights
