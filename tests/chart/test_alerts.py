"""The PrometheusRule: every expression parses, and the alerts fire (and stay quiet) as designed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.chart.helm import REPO, render
from tests.chart.promql import check_rules, promtool

UNIT_TESTS = Path(__file__).resolve().parent / "alerts_test.yaml"
RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/kubetune/kubetune/blob/main/docs/runbooks.md"


@pytest.fixture(scope="module")
def groups() -> list[dict[str, Any]]:
    rule = render(["monitoring.yaml"]).one("PrometheusRule")
    found: list[dict[str, Any]] = rule["spec"]["groups"]
    return found


def test_rules_pass_promtool_check(groups: list[dict[str, Any]], tmp_path: Path) -> None:
    result = check_rules(groups, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in groups)} rules found" in result.stdout


def test_every_alert_is_exercised_by_a_promtool_unit_test(groups: list[dict[str, Any]]) -> None:
    alerts = {r["alert"] for g in groups for r in g["rules"]}
    text = UNIT_TESTS.read_text()
    assert {a for a in alerts if f"alertname: {a}\n" not in text} == set()


def test_alerts_fire_on_synthetic_series(groups: list[dict[str, Any]], tmp_path: Path) -> None:
    check_rules(groups, tmp_path)  # writes tmp_path/rules.yaml
    shutil.copy(UNIT_TESTS, tmp_path / "alerts_test.yaml")
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_links_its_own_runbook_section(groups: list[dict[str, Any]]) -> None:
    """runbook_url = the base URL + '#<alert in lower case>', GitHub's anchor of a '## <Alert>' heading."""
    headings = {
        line.removeprefix("## ").strip()
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    alerts = {r["alert"]: r for g in groups for r in g["rules"]}
    assert set(alerts) == headings
    for name, rule in alerts.items():
        assert rule["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#{name.lower()}"


def test_runbook_base_url_is_a_value() -> None:
    rule = render(["monitoring.yaml"], ["metrics.prometheusRule.runbookBaseUrl=https://wiki/kt"]).one(
        "PrometheusRule"
    )
    urls = {r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert urls == {
        f"https://wiki/kt#{r['alert'].lower()}" for g in rule["spec"]["groups"] for r in g["rules"]
    }


def test_serving_alerts_group_by_namespace_and_model_deployment(groups: list[dict[str, Any]]) -> None:
    serving = next(g for g in groups if g["name"] == "kubetune-serving")
    unhealthy = next(
        r for g in groups for r in g["rules"] if r["alert"] == "KubetuneModelDeploymentUnhealthy"
    )
    for rule in [*serving["rules"], unhealthy]:
        assert "by (namespace, model_deployment" in rule["expr"], rule["alert"]
