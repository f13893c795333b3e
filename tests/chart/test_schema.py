"""values.schema.json: strict at every level, and helm refuses values of the wrong type or name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from tests.chart.helm import CHART, helm, template_args

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
# Objects whose insides are Kubernetes types the API server validates (documented in the schema).
PASSTHROUGH_MARK = "validated by the API server"


def object_schemas(node: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        types = node.get("type")
        if types == "object" or (isinstance(types, list) and "object" in types):
            yield path, node
        for key, child in node.items():
            yield from object_schemas(child, f"{path}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from object_schemas(child, f"{path}[{index}]")


def test_every_object_with_properties_forbids_unknown_keys() -> None:
    checked = 0
    for path, schema in object_schemas(SCHEMA):
        if path == "$.properties.global":
            # Helm copies a parent chart's globals into ours: their keys cannot be known here.
            assert "additionalProperties" not in schema, path
        elif "properties" in schema:
            checked += 1
            assert schema.get("additionalProperties") is False, path
        else:
            # A map (typed values) or a documented Kubernetes passthrough, never an untyped bag.
            assert "additionalProperties" in schema or PASSTHROUGH_MARK in schema.get("description", ""), path
    assert checked > 20


# (value path, a value the schema accepts, a value it must reject, text the error names)
CASES = [
    ("router.replicas", "3", '"two"', "replicas"),
    ("operator.watchNamespaces", '["team-a"]', '"team-a"', "watchNamespaces"),
    ("operator.watchNamespaces", '["team-a"]', '["Team_A"]', "watchNamespaces"),
    ("metrics.serviceMonitor.enabled", "true", '"yes"', "enabled"),
    ("operator.image.pullPolicy", '"Always"', '"Sometimes"', "pullPolicy"),
    ("images.vllm.digest", '"sha256:' + "a" * 64 + '"', '"latest"', "digest"),
    ("metrics.prometheusRule.thresholds.kvCacheUsage", "0.9", "1.5", "kvCacheUsage"),
    ("metrics.serviceMonitor.interval", '"1m30s"', '"90"', "interval"),
    ("operator.resources", '{"limits": {"memory": "1Gi"}}', '{"limits": {"memory": "lots"}}', "memory"),
    ("operator.runAsUser", "1000", '"root"', "runAsUser"),
    (
        "global.imageRegistry",
        '"registry.example.com:5000/team"',
        '"https://registry.example.com"',
        "imageRegistry",
    ),
    ("imagePullSecrets", '["regcred"]', '"regcred"', "imagePullSecrets"),
    ("imagePullSecrets", '["regcred"]', '["Reg_Cred"]', "imagePullSecrets"),
    # typos deep inside list items
    ("networkPolicy.metricsFrom", '[{"podSelector": {}}]', '[{"podSelectr": {}}]', "podSelectr"),
    (
        "operator.tolerations",
        '[{"key": "a", "operator": "Exists"}]',
        '[{"key": "a", "opertor": "Exists"}]',
        "opertor",
    ),
]


@pytest.mark.parametrize(("path", "good", "bad", "named"), CASES, ids=[f"{c[0]}={c[2]}" for c in CASES])
def test_schema_accepts_good_and_rejects_bad_values(path: str, good: str, bad: str, named: str) -> None:
    accepted = helm(*template_args(), "--set-json", f"{path}={good}")
    assert accepted.returncode == 0, accepted.stderr
    rejected = helm(*template_args(), "--set-json", f"{path}={bad}")
    assert rejected.returncode != 0, f"{path}={bad} rendered"
    assert "schema" in rejected.stderr, rejected.stderr
    assert named in rejected.stderr, rejected.stderr


# Unknown keys at the top, in the middle and at a leaf.
@pytest.mark.parametrize("typo", ["dashboard.enabled=false", "operator.imagee.tag=x", "router.replica=2"])
def test_misspelt_keys_are_rejected(typo: str) -> None:
    rejected = helm(*template_args(), "--set", typo)
    assert rejected.returncode != 0
    assert "additional" in rejected.stderr.lower() or "not allowed" in rejected.stderr.lower(), (
        rejected.stderr
    )
