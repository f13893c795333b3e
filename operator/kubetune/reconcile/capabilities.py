"""Which optional APIs the cluster serves (Prometheus Operator, KEDA, Gateway API), cached briefly.

Detected, never required: a missing CRD changes what is rendered (scrape annotations instead of a
PodMonitor, an HPA instead of a ScaledObject). The answer is cached so that every reconcile pass does
not cost a CRD read per kind; `KUBETUNE_CRD_CACHE_SECONDS` shortens it (tests install CRDs mid-run).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from kubetune.kube.client import ApiError, KubeClient

POD_MONITOR_CRD = "podmonitors.monitoring.coreos.com"
SCALED_OBJECT_CRD = "scaledobjects.keda.sh"
HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"
DEFAULT_CACHE_SECONDS = 60.0

_cache: dict[str, tuple[float, bool]] = {}


def _ttl() -> float:
    return float(os.environ.get("KUBETUNE_CRD_CACHE_SECONDS", DEFAULT_CACHE_SECONDS))


async def crd_present(client: KubeClient, name: str) -> bool:
    checked_at, present = _cache.get(name, (0.0, False))
    if name in _cache and time.monotonic() - checked_at < _ttl():
        return present
    try:
        present = await client.crd_exists(name)
    except ApiError as exc:
        if exc.status != 403:
            raise
        present = False  # without permission to look, behave as if it were absent
    _cache[name] = (time.monotonic(), present)
    return present


@dataclass(frozen=True)
class Capabilities:
    pod_monitor: bool
    keda: bool
    gateway_api: bool


async def detect(client: KubeClient) -> Capabilities:
    return Capabilities(
        pod_monitor=await crd_present(client, POD_MONITOR_CRD),
        keda=await crd_present(client, SCALED_OBJECT_CRD),
        gateway_api=await crd_present(client, HTTPROUTE_CRD),
    )


def clear_cache() -> None:
    """Forget what was detected (after CRDs were installed or removed on purpose)."""
    _cache.clear()
