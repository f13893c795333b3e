"""Prometheus metrics of the router (prefix kubetune_router_), in a registry owned by one app.

Every per-request series carries `source`: `user` for real traffic, `synthetic` for requests marked with the
synthetic-traffic header. User-facing dashboards and alerts select source="user"; canary analysis sums both.
With `model_deployment` set (the operator writes it into the config), every series carries that constant
label too, however Prometheus scrapes the pod: variants named alike in two ModelDeployments of one
namespace stay apart in the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

PREFIX = "kubetune_router_"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60)

M = TypeVar("M", bound=MetricWrapperBase)

SOURCE_USER = "user"
SOURCE_SYNTHETIC = "synthetic"


@dataclass(frozen=True, slots=True)
class VariantSeries:
    """Label children resolved once per (variant, source), so the hot path does no label lookups."""

    duration: Histogram
    ttft: Histogram
    output_tokens: Counter
    in_flight: Gauge


class RouterMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, model_deployment: str | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        const = ["model_deployment"] if model_deployment else []
        self._const: tuple[str, ...] = (model_deployment,) if model_deployment else ()
        self.requests = Counter(
            PREFIX + "requests",
            "Requests answered, by serving variant and status code.",
            [*const, "variant", "code", "source"],
            registry=r,
        )
        self.duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Time from request received to last response byte.",
            [*const, "variant", "source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Time to first token: request received to first streamed body byte.",
            [*const, "variant", "source"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.output_tokens = Counter(
            PREFIX + "output_tokens",
            "Output tokens, from usage or counted stream events.",
            [*const, "variant", "source"],
            registry=r,
        )
        self.in_flight = Gauge(
            PREFIX + "in_flight",
            "Requests being proxied now.",
            [*const, "variant", "source"],
            registry=r,
        )
        self.upstream_errors = Counter(
            PREFIX + "upstream_errors",
            "Failed upstream attempts (connect, timeout, reset, stream cut).",
            [*const, "variant", "kind"],
            registry=r,
        )
        self.skipped = Counter(
            PREFIX + "variant_skipped",
            "Requests for which a weighted variant had no ready endpoint.",
            [*const, "variant"],
            registry=r,
        )
        self.routing_errors = Counter(
            PREFIX + "routing_errors",
            "Requests refused before reaching any upstream.",
            [*const, "code"],
            registry=r,
        )
        self.weight = Gauge(
            PREFIX + "variant_weight", "Configured weight, percent.", [*const, "variant"], registry=r
        )
        self.ready = Gauge(
            PREFIX + "variant_ready", "1 when the variant can take traffic.", [*const, "variant"], registry=r
        )
        self.reloads = Counter(
            PREFIX + "config_reloads", "Config file reloads by result.", [*const, "result"], registry=r
        )
        self._series: dict[tuple[str, str], VariantSeries] = {}
        self._codes: dict[tuple[str, int, str], Counter] = {}

    def series(self, variant: str, source: str) -> VariantSeries:
        key = (variant, source)
        found = self._series.get(key)
        if found is None:
            found = VariantSeries(
                duration=self.duration.labels(*self._const, variant, source),
                ttft=self.ttft.labels(*self._const, variant, source),
                output_tokens=self.output_tokens.labels(*self._const, variant, source),
                in_flight=self.in_flight.labels(*self._const, variant, source),
            )
            self._series[key] = found
        return found

    def count_request(self, variant: str, code: int, source: str) -> None:
        key = (variant, code, source)
        child = self._codes.get(key)
        if child is None:
            child = self.requests.labels(*self._const, variant, str(code), source)
            self._codes[key] = child
        child.inc()

    def labels(self, metric: M, *values: str) -> M:
        """`metric`'s child for `values`, after the constant labels."""
        return metric.labels(*self._const, *values)

    def remove(self, metric: Gauge, *values: str) -> None:
        metric.remove(*self._const, *values)
