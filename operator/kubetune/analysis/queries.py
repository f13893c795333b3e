"""PromQL builders over the router's per-variant series (pure string functions).

Analysis counts every request, user and synthetic: `source` is deliberately not filtered. Each query
returns one number; ratios use `or vector(0)` on the numerator so that a canary with no errors yields 0
instead of "no data" (the stall Flagger users hit with sparse series).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from kubetune.api.routerconfig import METRIC_PREFIX as PREFIX

REQUESTS = PREFIX + "requests_total"
DURATION_BUCKET = PREFIX + "request_duration_seconds_bucket"
TTFT_BUCKET = PREFIX + "time_to_first_token_seconds_bucket"
TTFT_COUNT = PREFIX + "time_to_first_token_seconds_count"


class Metric(StrEnum):
    ERROR_RATE = "errorRate"
    P95_LATENCY_MS = "p95LatencyMs"
    TTFT_P95_MS = "ttftP95Ms"
    REQUESTS = "requests"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def selector(variant: str, extra: Mapping[str, str] | None = None, matchers: tuple[str, ...] = ()) -> str:
    """`{k="v",variant="x",...}`: labels sorted, so a query is a stable string; `matchers` appended as is."""
    labels = {**(extra or {}), "variant": variant}
    return "{" + ",".join([*(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())), *matchers]) + "}"


def window(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


@dataclass(frozen=True)
class VariantQueries:
    """The four queries for one variant over one window."""

    requests: str
    error_rate: str
    p95_latency_ms: str
    ttft_samples: str
    ttft_p95_ms: str


def variant_queries(variant: str, window_s: float, extra: Mapping[str, str] | None = None) -> VariantQueries:
    w = window(window_s)
    sel = selector(variant, extra)
    errors = REQUESTS + selector(variant, extra, ('code=~"5.."',))
    return VariantQueries(
        requests=f"sum(increase({REQUESTS}{sel}[{w}]))",
        error_rate=f"(sum(rate({errors}[{w}])) or vector(0)) / sum(rate({REQUESTS}{sel}[{w}]))",
        p95_latency_ms=f"histogram_quantile(0.95, sum by (le) (rate({DURATION_BUCKET}{sel}[{w}]))) * 1000",
        ttft_samples=f"sum(increase({TTFT_COUNT}{sel}[{w}]))",
        ttft_p95_ms=f"histogram_quantile(0.95, sum by (le) (rate({TTFT_BUCKET}{sel}[{w}]))) * 1000",
    )
