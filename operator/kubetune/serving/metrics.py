"""The vLLM metric names kubetune depends on, spelled once.

Dashboards, alerts, canary analysis and autoscaling query these; the serving tests assert that a
real vLLM server exposes every one of them, so a vLLM upgrade that renames a series fails CI
instead of silently emptying a dashboard. Names are as written in PromQL (`_total` on counters,
the family name of histograms, whose `_bucket`/`_sum`/`_count` series PromQL reads).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

E2E_REQUEST_LATENCY = "vllm:e2e_request_latency_seconds"  # histogram: p50/p95/p99 latency
TIME_TO_FIRST_TOKEN = "vllm:time_to_first_token_seconds"  # noqa: S105 - histogram: TTFT
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"  # noqa: S105 - histogram: time per output token
REQUEST_QUEUE_TIME = "vllm:request_queue_time_seconds"  # histogram: time spent waiting
NUM_REQUESTS_RUNNING = "vllm:num_requests_running"  # gauge: batch occupancy
NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"  # gauge: queue depth, the autoscaling signal
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"  # gauge: 0..1
PROMPT_TOKENS = "vllm:prompt_tokens_total"  # counter: input tokens/s
GENERATION_TOKENS = "vllm:generation_tokens_total"  # counter: output tokens/s
REQUEST_SUCCESS = "vllm:request_success_total"  # counter by finished_reason: stop vs length share

REQUIRED_VLLM_METRICS: tuple[str, ...] = (
    E2E_REQUEST_LATENCY,
    TIME_TO_FIRST_TOKEN,
    INTER_TOKEN_LATENCY,
    REQUEST_QUEUE_TIME,
    NUM_REQUESTS_RUNNING,
    NUM_REQUESTS_WAITING,
    KV_CACHE_USAGE,
    PROMPT_TOKENS,
    GENERATION_TOKENS,
    REQUEST_SUCCESS,
)


def exposed_metric_names(exposition: str) -> set[str]:
    """Every name a PromQL query could use against this `/metrics` text.

    The parser strips `_total` from counter family names, so sample names are collected too.
    """
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def missing_metrics(exposition: str, required: Iterable[str] = REQUIRED_VLLM_METRICS) -> list[str]:
    exposed = exposed_metric_names(exposition)
    return [name for name in required if name not in exposed]
