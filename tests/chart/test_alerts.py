"""The PrometheusRule: every expression parses, and the alerts fire (and stay quiet) as designed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.chart.helm import render
from tests.chart.promql import check_rules, promtool

UNIT_TESTS = Path(__file__).resolve().parent / "alerts_test.yaml"


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
