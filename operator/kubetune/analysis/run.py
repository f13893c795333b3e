"""Run one canary analysis against Prometheus: the only I/O in this package besides the client."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from kubetune.analysis.evaluator import AnalysisOutcome, Observation, VariantObservations, evaluate
from kubetune.analysis.prometheus import PrometheusClient
from kubetune.analysis.queries import VariantQueries, variant_queries
from kubetune.api.modeldeployment import CanaryAnalysis


async def observe(client: PrometheusClient, queries: VariantQueries) -> VariantObservations:
    texts = (
        queries.requests,
        queries.error_rate,
        queries.p95_latency_ms,
        queries.ttft_samples,
        queries.ttft_p95_ms,
    )
    values = await asyncio.gather(*(client.query(q) for q in texts))
    requests, error_rate, latency, ttft_samples, ttft = (
        Observation(q, v) for q, v in zip(texts, values, strict=True)
    )
    return VariantObservations(requests, error_rate, latency, ttft_samples, ttft)


async def analyze(
    client: PrometheusClient,
    spec: CanaryAnalysis,
    *,
    canary: str,
    stable: str,
    window_s: float,
    labels: Mapping[str, str] | None = None,
) -> AnalysisOutcome:
    """Query the canary (and the stable variant when relative) over the last `window_s` seconds.

    Raises PrometheusError when Prometheus is unreachable: that is no verdict on the canary, so the caller
    retries later instead of counting a failure. `labels` narrows the series (e.g. namespace, job).
    """
    canary_obs = await observe(client, variant_queries(canary, window_s, labels))
    stable_obs = await observe(client, variant_queries(stable, window_s, labels)) if spec.relative else None
    return evaluate(spec, canary_obs, stable_obs)
