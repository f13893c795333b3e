"""Traffic: the router (ConfigMap + Deployment + Service), or a Gateway API HTTPRoute (to the variants'
Services, or to one InferencePool per variant), and the split read back from what the API server
stored (status reports observed weights, not wishes), with what the Gateways said about the route."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetune.api.modeldeployment import GatewayParentRef, ModelDeploymentSpec
from kubetune.api.routerconfig import RouterConfig
from kubetune.builders.common import Manifest
from kubetune.builders.httproute import (
    GATEWAY_PROVIDERS,
    INFERENCE_POOL,
    build_gateway_traffic,
    httproute_name,
    httproute_weights,
)
from kubetune.builders.modeldeployment import ROLE_SERVING, variant_resource_name
from kubetune.builders.networkpolicy import Peers, build_vllm_network_policy
from kubetune.builders.router import (
    ANNOTATION_ROLLOUT,
    ROLE_ROUTER,
    RouterSettings,
    build_router_children,
    build_router_config,
    routed_weights,
    router_config_of,
    router_endpoint,
    router_resource_name,
    with_revision,
)
from kubetune.builders.vllm import VLLM_PORT
from kubetune.kube.client import ApiError, KubeClient
from kubetune.planning.modeldeployment import ModelDeploymentContext
from kubetune.reconcile.apply import Ownership, apply_in_order
from kubetune.settings import RouterDefaults
from kubetune.status.route import RouteVerdict, route_endpoint, route_verdict


@dataclass(frozen=True)
class PreviousTraffic:
    """What the traffic object said before this pass."""

    rollout: str | None = None
    weights: Mapping[str, int] = field(default_factory=dict)
    """The split routed before this pass (0 for variants that were not ready)."""
    config: RouterConfig | None = None
    """The router: the config its ConfigMap held (its revision is kept while the content is)."""

    @property
    def routed(self) -> dict[str, bool]:
        """Variants that were taking traffic (ready with weight, or a weight in the HTTPRoute)."""
        return {name: weight > 0 for name, weight in self.weights.items()}


@dataclass(frozen=True)
class AppliedTraffic:
    weights: dict[str, int]
    endpoint: str | None
    children: list[Manifest]
    problem: str | None = None
    route: RouteVerdict | None = None
    """gateway providers: what the Gateways said about the HTTPRoute (status.parents)."""


def router_settings(
    mdep: Mapping[str, Any],
    spec: ModelDeploymentSpec,
    defaults: RouterDefaults,
    *,
    pod_monitor: bool,
    pull_secrets: tuple[str, ...] = (),
) -> RouterSettings:
    """The chart's defaults with the spec's routerReplicas when the user set it."""
    raw_traffic = (mdep.get("spec") or {}).get("traffic") or {}
    if "routerReplicas" in raw_traffic or defaults.replicas is None:
        replicas = spec.traffic.router_replicas
    else:
        replicas = defaults.replicas
    return RouterSettings(
        image=defaults.image,
        replicas=replicas,
        resources=dict(defaults.resources),
        scrape_annotations=not pod_monitor,
        image_pull_secrets=pull_secrets,
        monitor_labels=defaults.monitor_labels,
    )


def _service_to_variant(mdep: Mapping[str, Any], spec: ModelDeploymentSpec) -> dict[str, str]:
    name = str(mdep["metadata"]["name"])
    return {variant_resource_name(name, v.name): v.name for v in spec.variants}


async def previous_traffic(client: KubeClient, ctx: ModelDeploymentContext) -> PreviousTraffic:
    """The rollout id and the variants taking traffic, from the router ConfigMap or the HTTPRoute."""
    mdep, spec, caps = ctx.obj, ctx.spec, ctx.caps
    meta = mdep["metadata"]
    if spec.traffic.provider in GATEWAY_PROVIDERS:
        if not caps.gateway_api:
            return PreviousTraffic()
        route = await client.get(
            "gateway.networking.k8s.io/v1", "HTTPRoute", meta["namespace"], httproute_name(meta["name"])
        )
        if route is None:
            return PreviousTraffic()
        weights = httproute_weights(route, _service_to_variant(mdep, spec))
        return PreviousTraffic((route["metadata"].get("annotations") or {}).get(ANNOTATION_ROLLOUT), weights)
    configmap = await client.get("v1", "ConfigMap", meta["namespace"], router_resource_name(meta["name"]))
    if configmap is None:
        return PreviousTraffic()
    config = router_config_of(configmap)
    rollout = (configmap["metadata"].get("annotations") or {}).get(ANNOTATION_ROLLOUT)
    return PreviousTraffic(rollout, routed_weights(config), config)


async def apply_traffic(
    client: KubeClient,
    ctx: ModelDeploymentContext,
    weights: Mapping[str, int],
    ready: Mapping[str, bool],
    *,
    rollout: str | None,
    defaults: RouterDefaults,
    previous: RouterConfig | None = None,
    pull_secrets: tuple[str, ...] = (),
    owned: Ownership | None = None,
    peers: Peers | None = None,
) -> AppliedTraffic:
    """Apply the split; return the weights as the API server stored them."""
    mdep, spec, caps = ctx.obj, ctx.spec, ctx.caps
    annotations = {ANNOTATION_ROLLOUT: rollout} if rollout else None
    if spec.traffic.provider in GATEWAY_PROVIDERS:
        missing = [
            crd
            for crd, present in (
                ("HTTPRoute", caps.gateway_api),
                ("InferencePool", caps.inference_pool or spec.traffic.provider != INFERENCE_POOL),
            )
            if not present
        ]
        if missing:
            problem = (
                f"traffic.provider is {spec.traffic.provider} "
                f"but the {' and '.join(missing)} CRD is not installed"
            )
            return AppliedTraffic({}, None, [], problem=problem)
        # A Gateway has no notion of readiness beyond endpoints: a variant not ready gets no share.
        effective = {name: weight if ready.get(name) else 0 for name, weight in weights.items()}
        children = build_gateway_traffic(mdep, effective, annotations, spec)
        *stored_pools, stored_route = await apply_in_order(client, children, owned)
        refs = spec.traffic.gateway_parent_refs
        verdict = route_verdict(stored_route, refs, stored_pools)
        endpoint = None
        if verdict.status == "True":
            gateway = await _gateway(client, refs[0], str(mdep["metadata"]["namespace"]))
            endpoint = route_endpoint(spec.traffic.hostnames, gateway, refs[0].section_name)
        return AppliedTraffic(
            httproute_weights(stored_route, _service_to_variant(mdep, spec)),
            endpoint,
            children,
            route=verdict,
        )
    config = with_revision(build_router_config(mdep, weights, ready, spec=spec), previous, ctx.now)
    settings = router_settings(
        mdep,
        spec,
        defaults,
        pod_monitor=caps.pod_monitor and spec.metrics.pod_monitor,
        pull_secrets=pull_secrets,
    )
    children = build_router_children(
        mdep, config, settings, pod_monitor=settings.scrape_annotations is False, annotations=annotations
    )
    if peers is not None:
        # Behind the router only: with gateway-api the Gateway's own pods must reach vLLM.
        children.append(
            build_vllm_network_policy(
                mdep, router_role=ROLE_ROUTER, serving_role=ROLE_SERVING, port=VLLM_PORT, peers=peers
            )
        )
    stored = await apply_in_order(client, children, owned)
    return AppliedTraffic(routed_weights(router_config_of(stored[0])), router_endpoint(mdep), children)


async def _gateway(client: KubeClient, ref: GatewayParentRef, namespace: str) -> dict[str, Any] | None:
    """The route's first Gateway, for its address and listener; None when it cannot be read."""
    try:
        return await client.get(
            "gateway.networking.k8s.io/v1", "Gateway", ref.namespace or namespace, ref.name
        )
    except ApiError as exc:
        if exc.status == 403:  # the chart's RBAC grants it; a narrower install still gets hostnames
            return None
        raise
