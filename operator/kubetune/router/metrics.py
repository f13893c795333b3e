"""Prometheus metrics of the router (prefix kubetune_router_), in a registry owned by one app.

Every per-request series carries `source`: `user` for real traffic, `synthetic` for requests marked with the
synthetic-traffic header. User-facing dashboards select source="user"; canary analysis sums both.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "kubetune_router_"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60)

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
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            PREFIX + "requests",
            "Requests answered, by serving variant and status code.",
            ["variant", "code", "source"],
            registry=r,
        )
        self.duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Time from request received to last response byte.",
            ["variant", "source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Time to first token: request received to first streamed body byte.",
            ["variant", "source"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.output_tokens = Counter(
            PREFIX + "output_tokens",
            "Output tokens, from usage or counted stream events.",
            ["variant", "source"],
            registry=r,
        )
        self.in_flight = Gauge(
            PREFIX + "in_flight",
            "Requests being proxied now.",
            ["variant", "source"],
            registry=r,
        )
        self.upstream_errors = Counter(
            PREFIX + "upstream_errors",
            "Failed upstream attempts (connect, timeout, reset, stream cut).",
            ["variant", "kind"],
            registry=r,
        )
        self.skipped = Counter(
            PREFIX + "variant_skipped",
            "Requests for which a weighted variant had no ready endpoint.",
            ["variant"],
            registry=r,
        )
        self.routing_errors = Counter(
            PREFIX + "routing_errors",
            "Requests refused before reaching any upstream.",
            ["code"],
            registry=r,
        )
        self.weight = Gauge(PREFIX + "variant_weight", "Configured weight, percent.", ["variant"], registry=r)
        self.ready = Gauge(
            PREFIX + "variant_ready", "1 when the variant can take traffic.", ["variant"], registry=r
        )
        self.reloads = Counter(
            PREFIX + "config_reloads", "Config file reloads by result.", ["result"], registry=r
        )
        self._series: dict[tuple[str, str], VariantSeries] = {}
        self._codes: dict[tuple[str, int, str], Counter] = {}

    def series(self, variant: str, source: str) -> VariantSeries:
        key = (variant, source)
        found = self._series.get(key)
        if found is None:
            found = VariantSeries(
                duration=self.duration.labels(variant, source),
                ttft=self.ttft.labels(variant, source),
                output_tokens=self.output_tokens.labels(variant, source),
                in_flight=self.in_flight.labels(variant, source),
            )
            self._series[key] = found
        return found

    def count_request(self, variant: str, code: int, source: str) -> None:
        key = (variant, code, source)
        child = self._codes.get(key)
        if child is None:
            child = self.requests.labels(variant, str(code), source)
            self._codes[key] = child
        child.inc()
