"""The chart's RBAC rules file is generated from rbac.OPERATOR_RULES and must stay in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.chart.helm import CHART
from tests.chart.rbac import triples

from kubetune import chartgen
from kubetune.rbac import OPERATOR_RULES, Rule

RULES_FILE = CHART / "files" / "rbac-rules.yaml"


def test_chart_rules_file_is_in_sync_with_rbac_py() -> None:
    assert RULES_FILE.read_text() == chartgen.render(), (
        "charts/kubetune/files/rbac-rules.yaml is stale: run `make manifests` (python -m kubetune.chartgen)"
    )


def test_rules_file_grants_every_operator_rule_once() -> None:
    on_disk = yaml.safe_load(RULES_FILE.read_text())
    expected = triples([rule.to_manifest() for rule in OPERATOR_RULES])
    assert triples(on_disk["cluster"]) | triples(on_disk["namespaced"]) == expected
    assert not triples(on_disk["cluster"]) & triples(on_disk["namespaced"])


@pytest.mark.parametrize(
    ("rule", "cluster_scoped"),
    [
        (Rule("apiextensions.k8s.io", ("customresourcedefinitions",), ("get",), ""), True),
        (Rule("", ("namespaces",), ("list",), ""), True),
        (Rule("", ("nodes",), ("list",), ""), True),
        (Rule("", ("pods",), ("get",), ""), False),
        (Rule("kubetune.io", ("finetunejobs/status",), ("patch",), ""), False),
        # "namespaces" in another group is not the core Namespace resource.
        (Rule("example.com", ("namespaces",), ("get",), ""), False),
    ],
)
def test_scope_of_a_rule(rule: Rule, cluster_scoped: bool) -> None:
    assert chartgen.is_cluster_scoped(rule) is cluster_scoped


def test_a_rule_mixing_scopes_is_refused() -> None:
    with pytest.raises(ValueError, match="mixes"):
        chartgen.is_cluster_scoped(Rule("", ("namespaces", "pods"), ("get",), ""))


def test_main_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "files" / "rules.yaml"
    assert chartgen.main([str(out)]) == 0
    assert out.read_text() == chartgen.render()
