"""Grafana dashboards: valid JSON, a sane layout, the promised panels, PromQL that parses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from tests.chart.helm import CHART
from tests.chart.promql import check_expressions, expand_grafana

DASHBOARDS = CHART / "dashboards"

# dashboard file -> (panel title fragment, metric its queries must read)
EXPECTED_PANELS: dict[str, list[tuple[str, str]]] = {
    "kubetune-serving.json": [
        ("Requests per second", "kubetune_router_requests_total"),
        ("Traffic weights", "kubetune_router_requests_total"),
        ("Error rate", "kubetune_router_requests_total"),
        ("Request latency p50 / p95 / p99", "kubetune_router_request_duration_seconds_bucket"),
        ("Time to first token p50 / p95 / p99", "kubetune_router_time_to_first_token_seconds_bucket"),
        ("Output tokens per second", "kubetune_router_output_tokens_total"),
        ("In-flight", "kubetune_router_in_flight"),
        ("queue depth", "vllm:num_requests_waiting"),
        ("KV-cache usage", "vllm:kv_cache_usage_perc"),
        ("vLLM time to first token", "vllm:time_to_first_token_seconds_bucket"),
        ("end-to-end request latency", "vllm:e2e_request_latency_seconds_bucket"),
        ("generated tokens per second", "vllm:generation_tokens_total"),
    ],
    "kubetune-training.json": [
        ("FineTuneJobs by phase", "kubetune_objects"),
        ("ModelDeployments by phase", "kubetune_objects"),
        ("Reconciles per second", "kubetune_reconcile_total"),
        ("Reconcile error ratio", "kubetune_reconcile_total"),
        ("Reconcile duration p50 / p95 / p99", "kubetune_reconcile_duration_seconds_bucket"),
    ],
}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARDS / name).read_text())
    return data


def queries(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel.get("targets", [])]


def test_every_dashboard_file_is_covered() -> None:
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(EXPECTED_PANELS)


@pytest.mark.parametrize("name", EXPECTED_PANELS)
def test_dashboard_identity_and_datasource_variable(name: str) -> None:
    dashboard = load(name)
    assert dashboard["uid"] == name.removesuffix(".json")
    assert "id" not in dashboard  # a fixed id collides on import into another Grafana
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


@pytest.mark.parametrize("name", EXPECTED_PANELS)
def test_layout_has_unique_ids_and_no_overlaps(name: str) -> None:
    panels = load(name)["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["w"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel at {(x, y)}"
                cells.add((x, y))


@pytest.mark.parametrize("name", EXPECTED_PANELS)
def test_expected_panels_read_the_expected_metrics(name: str) -> None:
    panels = [p for p in load(name)["panels"] if p["type"] != "row"]
    for fragment, metric in EXPECTED_PANELS[name]:
        matching = [p for p in panels if fragment in p["title"]]
        assert matching, f"no panel titled like {fragment!r}"
        assert any(metric in expr for p in matching for expr in queries(p)), (fragment, metric)
    for panel in panels:
        assert queries(panel), f"{panel['title']} has no query"


@pytest.mark.parametrize("name", EXPECTED_PANELS)
def test_percentile_panels_show_p50_p95_p99(name: str) -> None:
    for panel in load(name)["panels"]:
        if "p50 / p95 / p99" in panel["title"]:
            quantiles = sorted(expr.split("(", 1)[1].split(",", 1)[0] for expr in queries(panel))
            assert quantiles == ["0.5", "0.95", "0.99"], panel["title"]


@pytest.mark.parametrize("name", EXPECTED_PANELS)
def test_every_query_parses(name: str, tmp_path: Path) -> None:
    exprs = [expand_grafana(e) for p in load(name)["panels"] for e in queries(p)]
    result = check_expressions(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_router_panels_show_user_traffic_of_the_selected_deployment() -> None:
    """Synthetic analysis requests are labelled source="synthetic": user-facing panels leave them out."""
    dashboard = load("kubetune-serving.json")
    router_queries = [q for panel in dashboard["panels"] for q in queries(panel) if "kubetune_router_" in q]
    assert router_queries
    for query in router_queries:
        for selector in query.split("kubetune_router_")[1:]:
            assert 'source="user"' in selector.split("}")[0], query
            assert 'model_deployment=~"$deployment"' in selector.split("}")[0], query
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert variables.index("namespace") < variables.index("deployment") < variables.index("variant")


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, matchers) of every vector selector in a query."""
    return re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}", expr)


@pytest.mark.parametrize("name", EXPECTED_PANELS)
def test_every_query_and_variable_is_scoped_by_the_cluster_variable(name: str) -> None:
    """One Grafana over several clusters (a `cluster` external label): every series is filtered."""
    dashboard = load(name)
    variables = dashboard["templating"]["list"]
    assert [v["name"] for v in variables][:2] == ["datasource", "cluster"]
    cluster = variables[1]
    assert (cluster["includeAll"], cluster["allValue"]) == (True, ".*")  # no cluster label: All matches
    exprs = [q for p in dashboard["panels"] for q in queries(p)]
    exprs += [v["definition"] for v in variables[2:] if v["type"] == "query"]
    for expr in exprs:
        found = selectors(expr)
        assert found, expr
        for metric, matchers in found:
            assert 'cluster=~"$cluster"' in matchers, expr
            if metric.startswith("vllm:"):
                # Only the pods of kubetune's PodMonitors carry model_deployment: no other team's vLLM.
                assert 'model_deployment!=""' in matchers, expr
