"""The operator's own Prometheus metrics (scraped from --metrics-port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("kubetune_reconcile_total", "Reconcile passes by kind and result.", ["kind", "result"])
RECONCILE_SECONDS = Histogram(
    "kubetune_reconcile_duration_seconds",
    "Duration of one reconcile pass.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OBJECTS = Gauge("kubetune_objects", "Objects by kind and phase, as last reconciled.", ["kind", "phase"])
# One series per object (kube-state-metrics' `kube_pod_status_phase` style), so alerts can name it.
# Its own labels are object_namespace/object_name: a scrape sets `namespace` to the operator's.
OBJECT_PHASE = Gauge(
    "kubetune_object_phase",
    "1 for each object's phase as last reconciled.",
    ["kind", "object_namespace", "object_name", "phase"],
)
SYNTHETIC_REQUESTS = Counter(
    "kubetune_synthetic_requests_total",
    "Synthetic canary-analysis requests sent, by variant and HTTP status (error: no response; "
    "skipped: too many still in flight).",
    ["variant", "result"],
)
ROUTER_CONFIG_PUSHES = Counter(
    "kubetune_router_config_pushes_total",
    "Router configs pushed to router pods, by result (accepted; failed: left to the ConfigMap volume).",
    ["result"],
)
