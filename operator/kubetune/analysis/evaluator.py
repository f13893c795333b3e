"""The verdict on one canary analysis: pure, from query values to AnalysisResults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from kubetune.analysis.queries import Metric
from kubetune.api.modeldeployment import AnalysisResult, CanaryAnalysis


@dataclass(frozen=True)
class Observation:
    """A query and the number Prometheus gave for it (None: no data)."""

    query: str
    value: float | None


@dataclass(frozen=True)
class VariantObservations:
    requests: Observation
    error_rate: Observation
    p95_latency_ms: Observation
    ttft_samples: Observation
    ttft_p95_ms: Observation


class Verdict(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    """Fewer than minRequests samples: neither a pass nor a failure; the step waits."""


@dataclass(frozen=True)
class AnalysisOutcome:
    verdict: Verdict
    results: tuple[AnalysisResult, ...]

    def failures(self) -> tuple[AnalysisResult, ...]:
        return tuple(r for r in self.results if not r.passed)


def _count(observation: Observation) -> int:
    return max(0, round(observation.value or 0.0))


def _finite(value: float | None) -> float | None:
    # Kubernetes JSON has no Infinity: an unbounded quantile is reported as missing, and fails.
    return value if value is None or math.isfinite(value) else None


def _check(metric: str, observation: Observation, threshold: float, samples: int) -> AnalysisResult:
    value = observation.value
    passed = value is None or value <= threshold
    return AnalysisResult(
        metric=metric,
        query=observation.query,
        value=_finite(value),
        threshold=threshold,
        samples=samples,
        passed=passed,
    )


def evaluate(
    spec: CanaryAnalysis, canary: VariantObservations, stable: VariantObservations | None = None
) -> AnalysisOutcome:
    """Compare the canary with the absolute limits, and with the stable variant when `spec.relative`.

    A metric with no data passes (there is nothing to hold against the canary) except that fewer than
    `minRequests` requests make the whole analysis inconclusive; TTFT exists only for streamed requests,
    so its own sample count is reported beside it.
    """
    samples = _count(canary.requests)
    if samples < spec.min_requests or samples == 0:
        return AnalysisOutcome(
            Verdict.INCONCLUSIVE,
            (
                AnalysisResult(
                    metric=Metric.REQUESTS,
                    query=canary.requests.query,
                    value=float(samples),
                    threshold=float(spec.min_requests),
                    samples=samples,
                    passed=False,
                ),
            ),
        )
    ttft_samples = _count(canary.ttft_samples)
    results = [_check(Metric.ERROR_RATE, canary.error_rate, spec.max_error_rate, samples)]
    if spec.max_p95_latency_ms is not None:
        results.append(_check(Metric.P95_LATENCY_MS, canary.p95_latency_ms, spec.max_p95_latency_ms, samples))
    if spec.max_ttft_p95_ms is not None:
        results.append(_check(Metric.TTFT_P95_MS, canary.ttft_p95_ms, spec.max_ttft_p95_ms, ttft_samples))
    if spec.relative and stable is not None and _count(stable.requests) > 0:
        results.extend(_relative(spec, canary, stable, samples, ttft_samples))
    verdict = Verdict.PASSED if all(r.passed for r in results) else Verdict.FAILED
    return AnalysisOutcome(verdict, tuple(results))


def _relative(
    spec: CanaryAnalysis,
    canary: VariantObservations,
    stable: VariantObservations,
    samples: int,
    ttft_samples: int,
) -> list[AnalysisResult]:
    factor = 1 + spec.relative_tolerance
    pairs = [
        (Metric.ERROR_RATE, canary.error_rate, stable.error_rate, samples),
        (Metric.P95_LATENCY_MS, canary.p95_latency_ms, stable.p95_latency_ms, samples),
        (Metric.TTFT_P95_MS, canary.ttft_p95_ms, stable.ttft_p95_ms, ttft_samples),
    ]
    results = []
    for metric, mine, theirs, count in pairs:
        # A stable error rate of 0 would make any single canary error fatal; the absolute limit covers it.
        if theirs.value is None or not math.isfinite(theirs.value) or theirs.value == 0:
            continue
        results.append(_check(f"{metric}VsStable", mine, theirs.value * factor, count))
    return results
