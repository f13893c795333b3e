"""The gateway-api and inference-pool traffic providers: one HTTPRoute with weighted backendRefs. Pure.

gateway-api: the backends are the variants' Services. inference-pool: they are one InferencePool per
variant (Gateway API Inference Extension, `inference.networking.k8s.io/v1`), so that a gateway that
implements the extension picks the pod in each pool by its endpoint picker (KV-cache and queue aware)
while the route's weights still split traffic between variants (docs/gateway.md).

Limits compared with the kubetune router (docs/gateway.md):
- no sticky assignment: Gateway API weights are per request, so a user moves between variants;
- no `model` rewrite: clients must send a model name every variant serves (give the variants' fine-tuned
  adapters or models one served name, or use the router);
- no override header and no per-variant metrics from the proxy: canary analysis reads the router's series,
  which do not exist here, so a canary behind a gateway is time-based (no `analysis`);
- a variant that is not ready (smoke test, availability) gets weight 0 here: a backend with no ready
  endpoints would otherwise answer 5xx for its share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetune.api.modeldeployment import ModelDeploymentSpec, Variant
from kubetune.builders.common import (
    LABEL_DEPLOYMENT,
    LABEL_ROLE,
    LABEL_VARIANT,
    Manifest,
    metadata,
    standard_labels,
)
from kubetune.builders.modeldeployment import selector_labels, variant_resource_name
from kubetune.builders.router import router_resource_name
from kubetune.builders.vllm import VLLM_PORT

GATEWAY_API = "gateway-api"
"""`traffic.provider` that renders an HTTPRoute to the variants' Services instead of the router."""
INFERENCE_POOL = "inference-pool"
"""`traffic.provider` that renders an InferencePool per variant and an HTTPRoute to the pools."""
GATEWAY_PROVIDERS = frozenset({GATEWAY_API, INFERENCE_POOL})
INFERENCE_GROUP = "inference.networking.k8s.io"
INFERENCE_POOL_API = f"{INFERENCE_GROUP}/v1"

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
    """All of `/` to the variants' Services (or InferencePools) in proportion to `weights` (0 for a
    variant not listed), on the spec's hostnames, with timeouts long enough for streamed answers."""
    spec = spec or ModelDeploymentSpec.model_validate(mdep["spec"])
    name = _name(mdep)
    pools = spec.traffic.provider == INFERENCE_POOL
    parent_refs = []
    for ref in spec.traffic.gateway_parent_refs:
        parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": ref.name}
        if ref.namespace:
            parent["namespace"] = ref.namespace
        if ref.section_name:
            parent["sectionName"] = ref.section_name
        parent_refs.append(parent)
    backends: list[dict[str, Any]] = [
        {"group": INFERENCE_GROUP, "kind": "InferencePool", "name": variant_resource_name(name, v.name)}
        if pools
        else {"group": "", "kind": "Service", "name": variant_resource_name(name, v.name), "port": VLLM_PORT}
        for v in spec.variants
    ]
    for backend, variant in zip(backends, spec.variants, strict=True):
        backend["weight"] = weights.get(variant.name, 0)
    timeouts = spec.traffic.timeouts
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": backends,
        "timeouts": {"request": timeouts.request, "backendRequest": timeouts.backend_request},
    }
    route_spec: dict[str, Any] = {"parentRefs": parent_refs, "rules": [rule]}
    if spec.traffic.hostnames:
        route_spec["hostnames"] = list(spec.traffic.hostnames)
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
        "spec": route_spec,
    }


def build_inference_pool(mdep: Mapping[str, Any], variant: Variant, spec: ModelDeploymentSpec) -> Manifest:
    """The variant's vLLM pods as an InferencePool (v1): the route's backend for that variant.

    Named like the variant's Service, so weights read back from the route map to variants the same way
    for both providers.
    """
    name = _name(mdep)
    pool_name = variant_resource_name(name, variant.name)
    pool: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name, variant.name)},
        "targetPorts": [{"number": VLLM_PORT}],
    }
    picker = spec.traffic.endpoint_picker
    if picker is not None:
        pool["endpointPickerRef"] = {
            "kind": "Service",
            "name": f"{pool_name}-epp",
            "port": {"number": picker.port},
            "failureMode": picker.failure_mode,
        }
    labels = {
        **standard_labels(name="kubetune-pool", component="traffic", instance=name),
        LABEL_DEPLOYMENT: name,
        LABEL_VARIANT: variant.name,
        LABEL_ROLE: ROLE_ROUTE,
    }
    return {
        "apiVersion": INFERENCE_POOL_API,
        "kind": "InferencePool",
        "metadata": metadata(
            name=pool_name, namespace=str(mdep["metadata"]["namespace"]), owner=mdep, labels=labels
        ),
        "spec": pool,
    }


def build_gateway_traffic(
    mdep: Mapping[str, Any],
    weights: Mapping[str, int],
    annotations: Mapping[str, str] | None,
    spec: ModelDeploymentSpec,
) -> list[Manifest]:
    """In apply order: the pools (inference-pool provider; variants with their own pods) then the route."""
    pools = (
        [build_inference_pool(mdep, v, spec) for v in spec.variants if v.served_by is None]
        if spec.traffic.provider == INFERENCE_POOL
        else []
    )
    return [*pools, build_httproute(mdep, weights, annotations, spec=spec)]


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
