"""Deleting the children a ModelDeployment owns that its last pass did not render."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetune.builders.common import LABEL_DEPLOYMENT, LABEL_VARIANT
from kubetune.kube.client import KubeClient
from kubetune.planning.modeldeployment import Capabilities

# Kinds a ModelDeployment may own; optional CRDs are listed only when installed.
PRUNABLE: tuple[tuple[str, str, str | None], ...] = (
    ("apps/v1", "Deployment", None),
    ("v1", "Service", None),
    ("v1", "ConfigMap", None),
    ("policy/v1", "PodDisruptionBudget", None),
    ("autoscaling/v2", "HorizontalPodAutoscaler", None),
    ("monitoring.coreos.com/v1", "PodMonitor", "pod_monitor"),
    ("keda.sh/v1alpha1", "ScaledObject", "keda"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", "gateway_api"),
)


async def prune(
    client: KubeClient,
    mdep: Mapping[str, Any],
    keep: frozenset[tuple[str, str]],
    held_variants: set[str],
    caps: Capabilities,
) -> None:
    """Delete children this object owns that the pass did not render.

    A variant still in the spec whose model cannot be resolved right now keeps its children
    (`held_variants`): a FineTuneJob being re-run must not take a serving variant down.
    """
    meta = mdep["metadata"]
    for api_version, kind, capability in PRUNABLE:
        if capability is not None and not getattr(caps, capability):
            continue
        items = await client.list(
            api_version, kind, meta["namespace"], label_selector=f"{LABEL_DEPLOYMENT}={meta['name']}"
        )
        for item in items:
            item_meta = item["metadata"]
            owners = {ref.get("uid") for ref in item_meta.get("ownerReferences") or []}
            if meta["uid"] not in owners or (kind, item_meta["name"]) in keep:
                continue
            if (item_meta.get("labels") or {}).get(LABEL_VARIANT) in held_variants:
                continue
            await client.delete(api_version, kind, meta["namespace"], item_meta["name"], uid=item_meta["uid"])
