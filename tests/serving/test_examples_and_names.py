"""examples/modeldeployment-*.yaml render, and the chart only queries vLLM metrics we prove exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.serving.objects import UID, finetunejob

from kubetune.api.finetuneschedule import FineTuneScheduleStatus
from kubetune.api.modeldeployment import ModelDeployment
from kubetune.builders.modeldeployment import build_variant_children
from kubetune.planning.revisions import follow, followed_schedules, following_problem
from kubetune.serving.metrics import REQUIRED_VLLM_METRICS, exposed_metric_names, missing_metrics
from kubetune.serving.resolution import referenced_finetunejobs, resolve_variants

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("modeldeployment-*.yaml"))
CHART = REPO / "charts" / "kubetune"
VLLM_NAME = re.compile(r"vllm:[a-z0-9_:]+")


def test_examples_exist() -> None:
    assert [p.name for p in EXAMPLES] == [
        "modeldeployment-follow-schedule.yaml",
        "modeldeployment-from-finetunejob.yaml",
        "modeldeployment-gateway.yaml",
        "modeldeployment-lora-adapters.yaml",
        "modeldeployment-shared-base-canary.yaml",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates_and_renders(path: Path) -> None:
    obj: dict[str, Any] = yaml.safe_load(path.read_text())
    mdep = ModelDeployment.model_validate(obj)
    obj["metadata"] |= {"namespace": "default", "uid": UID}
    # A followed schedule with one good run: the pass renders its revision in the variant's place.
    run = {
        "name": "run-1",
        "scheduledTime": "2026-05-01T00:00:00Z",
        "trigger": "Schedule",
        "phase": "Succeeded",
    }
    good = FineTuneScheduleStatus.model_validate({"runs": [run], "latestGoodRun": "run-1"})
    following = follow(mdep.spec, dict.fromkeys(followed_schedules(mdep.spec).values(), good), [])
    if following is not None:
        assert following_problem(mdep.spec) == ""
        mdep.spec = following.effective.spec
    jobs = {
        name: finetunejob(
            name,
            "Succeeded",
            artifacts={"adapterUri": f"pvc://out/{name}/adapter", "baseModelUri": "pvc://models/base"},
        )
        for variant in mdep.spec.variants
        for name in referenced_finetunejobs(variant)
    }
    resolutions = resolve_variants(mdep.spec.variants, jobs)
    for variant in mdep.spec.variants:
        assert resolutions[variant.name].ready, resolutions[variant.name].message
        if variant.served_by is None:
            kinds = [c["kind"] for c in build_variant_children(obj, variant, resolutions[variant.name])]
            assert kinds[:2] == ["Deployment", "Service"]


def chart_vllm_names() -> set[str]:
    names: set[str] = set()
    for path in CHART.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".tpl"):
            names.update(VLLM_NAME.findall(path.read_text(errors="replace")))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_chart_queries_only_metrics_the_serving_tests_prove() -> None:
    used = chart_vllm_names()
    assert used, "the chart's dashboards and alerts query vLLM series"
    assert used <= set(REQUIRED_VLLM_METRICS), used - set(REQUIRED_VLLM_METRICS)


EXPOSITION = """\
# HELP vllm:num_requests_waiting Waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 0.0
# HELP vllm:prompt_tokens_total Prompt tokens.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="m"} 12.0
# HELP vllm:e2e_request_latency_seconds Latency.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_count{model_name="m"} 1.0
vllm:e2e_request_latency_seconds_sum{model_name="m"} 0.5
"""


def test_exposed_names_cover_counters_gauges_and_histograms() -> None:
    names = exposed_metric_names(EXPOSITION)
    assert {
        "vllm:num_requests_waiting",
        "vllm:prompt_tokens_total",
        "vllm:e2e_request_latency_seconds",
        "vllm:e2e_request_latency_seconds_bucket",
    } <= names
    assert missing_metrics(EXPOSITION, ["vllm:prompt_tokens_total", "vllm:kv_cache_usage_perc"]) == [
        "vllm:kv_cache_usage_perc"
    ]
