"""Which optional APIs the cluster serves (Prometheus Operator, KEDA, Gateway API and its Inference
Extension), cached briefly.

Detected, never required: a missing CRD changes what is rendered (scrape annotations instead of a
PodMonitor, an HPA instead of a ScaledObject). The answer is cached so that every reconcile pass does
not cost a CRD read per kind; the settings' `crd_cache_seconds` shortens it (tests install CRDs mid-run).
"""

from __future__ import annotations

import time

from kubetune.kube.client import ApiError, KubeClient
from kubetune.planning.modeldeployment import Capabilities

POD_MONITOR_CRD = "podmonitors.monitoring.coreos.com"
SCALED_OBJECT_CRD = "scaledobjects.keda.sh"
HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"
INFERENCE_POOL_CRD = "inferencepools.inference.networking.k8s.io"


class CapabilityCache:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, bool]] = {}

    async def crd_present(self, client: KubeClient, name: str) -> bool:
        checked_at, present = self._cache.get(name, (0.0, False))
        if name in self._cache and time.monotonic() - checked_at < self.ttl_s:
            return present
        try:
            present = await client.crd_exists(name)
        except ApiError as exc:
            if exc.status != 403:
                raise
            present = False  # without permission to look, behave as if it were absent
        self._cache[name] = (time.monotonic(), present)
        return present

    async def detect(self, client: KubeClient) -> Capabilities:
        return Capabilities(
            pod_monitor=await self.crd_present(client, POD_MONITOR_CRD),
            keda=await self.crd_present(client, SCALED_OBJECT_CRD),
            gateway_api=await self.crd_present(client, HTTPROUTE_CRD),
            inference_pool=await self.crd_present(client, INFERENCE_POOL_CRD),
        )
