"""The operator accepts both kinds, writes only status, and a restart changes nothing."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from prometheus_client import REGISTRY
from tests.integration.test_admission import VALID_FTJ, VALID_MDEP, mutate
from tests.support.cluster import Kube
from tests.support.events import events
from tests.support.operator import running_operator
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def accepted(kube: Kube, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    obj = kube.get(kind, name, namespace)
    cond = condition(obj, "Accepted")
    if (
        cond
        and cond["status"] == "True"
        and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
    ):
        return obj
    return None


def reconciles(kind: str) -> float:
    return REGISTRY.get_sample_value("kubetune_reconcile_total", {"kind": kind, "result": "ok"}) or 0.0


def event_keys(items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["involvedObject"]["kind"], e["reason"], e["message"]) for e in items]


def test_accepted_condition_and_restart_is_a_no_op(kube: Kube, namespace: str) -> None:
    kube.apply(mutate(VALID_FTJ, "metadata.name", "skeleton"), namespace)
    kube.apply(mutate(VALID_MDEP, "metadata.name", "skeleton"), namespace)
    spec_before = kube.get("finetunejob", "skeleton", namespace)["spec"]

    with running_operator(kube, namespace):
        ftj = eventually(lambda: accepted(kube, "finetunejob", "skeleton", namespace), timeout=60)
        mdep = eventually(lambda: accepted(kube, "modeldeployment", "skeleton", namespace), timeout=60)
        eventually(lambda: events(kube, namespace, "skeleton"), message="Accepted events")

    cond = condition(ftj, "Accepted")
    assert cond is not None
    assert cond["reason"] == "Accepted"
    assert cond["observedGeneration"] == ftj["metadata"]["generation"]
    assert ftj["status"]["phase"] in ("Pending", "Validating"), ftj["status"]
    assert mdep["status"]["readyVariants"] == "0/2"
    events_before = events(kube, namespace, "skeleton")

    passes_before = reconciles("FineTuneJob")
    with running_operator(kube, namespace):
        # Resume plus at least one timer pass must have reconciled the object again.
        eventually(lambda: reconciles("FineTuneJob") >= passes_before + 2, timeout=60)

    after = kube.get("finetunejob", "skeleton", namespace)
    assert condition(after, "Accepted") == cond, "a restart must not rewrite conditions"
    assert after["spec"] == spec_before, "the operator must never write spec"
    for kind in ("finetunejob", "modeldeployment"):
        shown = kube.kubectl("get", kind, "skeleton", "-n", namespace, "-o", "json", "--show-managed-fields")
        meta = json.loads(shown.stdout)["metadata"]
        # Only status is ever written (RBAC grants no patch on the objects themselves): no kopf
        # bookkeeping annotations, no finalizer that would block deletion while the operator is down.
        assert "finalizers" not in meta, meta
        assert not [a for a in meta.get("annotations") or {} if a.startswith("kubetune.io/")], meta
        writes = {
            (m["manager"], m.get("subresource")) for m in meta["managedFields"] if m["manager"] != "test"
        }
        assert writes, meta["managedFields"]
        assert {subresource for _, subresource in writes} == {"status"}, writes
    before = Counter(event_keys(events_before))
    after = Counter(event_keys(events(kube, namespace, "skeleton")))
    # New transitions may legitimately happen meanwhile; an Event seen before must not be posted again.
    repeated = {key: n for key, n in after.items() if key in before and n > before[key]}
    assert not repeated, f"a restart must not repeat Events: {repeated}"
