"""PromQL builders, the Prometheus result parser, and the pure verdict."""

from __future__ import annotations

import math

import pytest

from kubetune.analysis.evaluator import Observation, VariantObservations, Verdict, evaluate
from kubetune.analysis.prometheus import PrometheusError, scalar_of
from kubetune.analysis.queries import selector, variant_queries
from kubetune.api.modeldeployment import CanaryAnalysis
from kubetune.api.routerconfig import METRIC_PREFIX as PREFIX


def test_queries_select_the_variant_and_window() -> None:
    q = variant_queries("canary", 59.6, {"namespace": "ml"})
    assert q.requests == f'sum(increase({PREFIX}requests_total{{namespace="ml",variant="canary"}}[60s]))'
    sel = '{namespace="ml",variant="canary"}'
    errors = '{namespace="ml",variant="canary",code=~"5.."}'
    assert q.error_rate == (
        f"(sum(rate({PREFIX}requests_total{errors}[60s])) or vector(0))"
        f" / sum(rate({PREFIX}requests_total{sel}[60s]))"
    )
    assert q.p95_latency_ms.startswith("histogram_quantile(0.95, sum by (le) (rate(")
    assert f"{PREFIX}time_to_first_token_seconds_bucket" in q.ttft_p95_ms
    assert (
        q.ttft_samples
        == f'sum(increase({PREFIX}time_to_first_token_seconds_count{{namespace="ml",variant="canary"}}[60s]))'
    )


def test_selector_escapes_values() -> None:
    assert selector('a"b\\c') == '{variant="a\\"b\\\\c"}'


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"resultType": "vector", "result": []}, None),
        ({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "0.25"]}]}, 0.25),
        ({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "NaN"]}]}, None),
        ({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "+Inf"]}]}, math.inf),
        ({"resultType": "scalar", "result": [1.0, "3"]}, 3.0),
    ],
)
def test_scalar_of(data: dict[str, object], expected: float | None) -> None:
    assert scalar_of(data) == expected


def test_scalar_of_rejects_many_series() -> None:
    two = {"metric": {}, "value": [1.0, "1"]}
    with pytest.raises(PrometheusError):
        scalar_of({"resultType": "vector", "result": [two, two]})


def observations(
    requests: float | None = 200,
    errors: float | None = 0.0,
    p95: float | None = 100.0,
    ttft_n: float | None = 50,
    ttft: float | None = 80.0,
) -> VariantObservations:
    return VariantObservations(
        requests=Observation("requests", requests),
        error_rate=Observation("errors", errors),
        p95_latency_ms=Observation("p95", p95),
        ttft_samples=Observation("ttftn", ttft_n),
        ttft_p95_ms=Observation("ttft", ttft),
    )


SPEC = CanaryAnalysis(
    prometheus_url="http://prom:9090",
    max_error_rate=0.01,
    max_p95_latency_ms=500,
    max_ttft_p95_ms=200,
    min_requests=50,
)


@pytest.mark.parametrize(
    ("canary", "verdict", "failing"),
    [
        (observations(), Verdict.PASSED, []),
        (observations(requests=49), Verdict.INCONCLUSIVE, ["requests"]),
        (observations(requests=None), Verdict.INCONCLUSIVE, ["requests"]),
        (observations(errors=0.2), Verdict.FAILED, ["errorRate"]),
        (observations(p95=900), Verdict.FAILED, ["p95LatencyMs"]),
        (observations(p95=math.inf), Verdict.FAILED, ["p95LatencyMs"]),
        (observations(ttft=250), Verdict.FAILED, ["ttftP95Ms"]),
        (observations(ttft_n=0, ttft=None), Verdict.PASSED, []),
        (observations(errors=0.5, p95=600), Verdict.FAILED, ["errorRate", "p95LatencyMs"]),
    ],
)
def test_absolute_thresholds(canary: VariantObservations, verdict: Verdict, failing: list[str]) -> None:
    outcome = evaluate(SPEC, canary)
    assert outcome.verdict == verdict
    assert [r.metric for r in outcome.failures()] == failing


def test_failure_keeps_query_value_threshold_and_samples() -> None:
    (result,) = evaluate(SPEC, observations(errors=0.2)).failures()
    assert (result.query, result.value, result.threshold, result.samples) == ("errors", 0.2, 0.01, 200)


@pytest.mark.parametrize(
    ("canary", "stable", "failing"),
    [
        (observations(p95=120), observations(p95=100), ["p95LatencyMsVsStable"]),
        (observations(p95=105), observations(p95=100), []),
        (observations(errors=0.009), observations(errors=0.005), ["errorRateVsStable"]),
        (observations(errors=0.005), observations(errors=0.0), []),
        (observations(ttft=150), observations(ttft=100), ["ttftP95MsVsStable"]),
        (observations(p95=300), observations(requests=0, p95=None), []),
    ],
)
def test_relative_to_stable(
    canary: VariantObservations, stable: VariantObservations, failing: list[str]
) -> None:
    spec = SPEC.model_copy(update={"relative": True, "relative_tolerance": 0.1})
    assert [r.metric for r in evaluate(spec, canary, stable).failures()] == failing
