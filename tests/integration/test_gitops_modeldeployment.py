"""ModelDeployment states as GitOps tools see them: recorded from the real API server with pods on a
simulated GPU node (kwok, as in test_modeldeployment_traffic.py), judged by kstatus, Argo CD's Lua and
Flux's CEL (tests/support/gitops.py). `KUBETUNE_RECORD_GITOPS_STATES=1` rewrites tests/gitops/states/.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_modeldeployment_reconcile import ftj, get, md, set_job_status
from tests.integration.test_modeldeployment_traffic import (
    ENV,
    apply_b_never_stops,
    openai_apis,
    paused_canary,
    router_variants,
    shared_base,
    simulated_gpu_node,
    with_smoke_urls,
)
from tests.support.cluster import Kube
from tests.support.gitops import assert_verdicts, condition, record
from tests.support.operator import running_operator
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster
GPU_PRODUCT = "KWOK-TEST-GPU"


@pytest.fixture(scope="module")
def openai_servers() -> Iterator[dict[str, str]]:
    with openai_apis() as urls:
        yield urls


@pytest.fixture(scope="module")
def gpu_nodes(kube: Kube) -> Iterator[str]:
    with simulated_gpu_node(kube, "gitops-gpu-node", "kwok-gitops-") as node:
        yield node


def summary_reaches(
    kube: Kube, name: str, namespace: str, type_: str, reason: str, extra: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The ModelDeployment once its `type_` summary condition is True with `reason` (and `extra` holds)."""

    def reached() -> dict[str, Any]:
        obj = get(kube, "modeldeployment", name, namespace) or {}
        cond = condition(obj, type_)
        status = obj.get("status") or {}
        where = (status.get("conditions"), status.get("canary"))
        assert cond is not None, where
        assert (cond["status"], cond["reason"]) == ("True", reason), where
        assert extra(obj), status
        return obj

    result: dict[str, Any] = eventually(reached, timeout=90, message=f"{name}: {type_} {reason}")
    return result


def patch_canary(kube: Kube, name: str, namespace: str, fields: dict[str, Any]) -> None:
    body = json.dumps({"spec": {"traffic": {"canary": fields}}})
    kube.kubectl("patch", "modeldeployment", name, "-n", namespace, "--type=merge", "-p", body)


def canary_weight(obj: dict[str, Any]) -> int:
    return int(((obj.get("status") or {}).get("canary") or {}).get("weight", -1))


def test_canary_paused_at_10_percent_then_promoted(
    kube: Kube, namespace: str, gpu_nodes: str, openai_servers: dict[str, str], tmp_path: Path
) -> None:
    obj = paused_canary("cn", [10, 100], "1h")
    good = openai_servers["good"]
    kube.apply(with_smoke_urls(obj, {"stable": good, "canary": good}), namespace)
    recorded = []
    with running_operator(kube, namespace, extra_env=ENV):
        eventually(
            lambda: router_variants(kube, "cn", namespace).get("stable") == (100, True),
            timeout=90,
            message="stable routable",
        )
        paused = summary_reaches(kube, "cn", namespace, "Reconciling", "CanaryPaused", lambda o: True)
        recorded.append(record("modeldeployment-canary-paused", paused, tmp_path))

        patch_canary(kube, "cn", namespace, {"pause": False})
        at_10 = summary_reaches(
            kube, "cn", namespace, "Reconciling", "CanaryStep", lambda o: canary_weight(o) == 10
        )
        recorded.append(record("modeldeployment-canary-at-10", at_10, tmp_path))

        patch_canary(kube, "cn", namespace, {"interval": "2s"})
        promoted = summary_reaches(
            kube, "cn", namespace, "Ready", "Reconciled", lambda o: canary_weight(o) == 100
        )
        recorded.append(record("modeldeployment-promoted", promoted, tmp_path))
        table = kube.kubectl("get", "modeldeployment", "cn", "-n", namespace, "-o", "wide").stdout
    header, row = table.splitlines()[:2]
    assert header.split()[-3:] == ["REASON", "MESSAGE", "AGE"], header
    assert "Reconciled" in row.split(), row
    assert "serving variants available: canary" in row, row
    # A canary step is work in progress even though every Deployment has rolled out.
    assert condition(at_10, "Progressing")["status"] == "False"
    assert condition(at_10, "Available")["status"] == "True"
    assert_verdicts(recorded)


def test_weight_only_adapter_canary_then_aborted(
    kube: Kube, namespace: str, gpu_nodes: str, openai_servers: dict[str, str], tmp_path: Path
) -> None:
    obj = shared_base(interval="1h")
    good = openai_servers["good"]
    kube.apply(with_smoke_urls(obj, {"base": good, "v1": good, "v2": good}), namespace)
    with running_operator(kube, namespace, extra_env=ENV):
        at_50 = summary_reaches(
            kube, "sb", namespace, "Reconciling", "CanaryStep", lambda o: canary_weight(o) == 50
        )
        patch_canary(kube, "sb", namespace, {"abort": True})
        aborted = summary_reaches(kube, "sb", namespace, "Stalled", "CanaryAborted", lambda o: True)
    assert condition(at_50, "Progressing")["status"] == "False", "no Deployment rolls out: weights only"
    assert_verdicts(
        [
            record("modeldeployment-adapter-canary", at_50, tmp_path),
            record("modeldeployment-canary-aborted", aborted, tmp_path),
        ]
    )


def test_failed_smoke_test_stalls(
    kube: Kube, namespace: str, gpu_nodes: str, openai_servers: dict[str, str], tmp_path: Path
) -> None:
    apply_b_never_stops(kube, namespace, openai_servers)
    with running_operator(kube, namespace, extra_env=ENV):
        failed = summary_reaches(kube, "ab", namespace, "Stalled", "SmokeTestFailed", lambda o: True)
    assert condition(failed, "Stalled")["message"].startswith("SmokeTestPassed: b: "), failed["status"]
    assert_verdicts([record("modeldeployment-smoke-failed", failed, tmp_path)])


def test_waiting_for_the_model_then_gate_failed(kube: Kube, namespace: str, tmp_path: Path) -> None:
    kube.apply(ftj("tuned"), namespace)
    variant = {
        "name": "tuned",
        "model": {"finetuneJobRef": {"name": "tuned"}},
        "weight": 100,
        "gate": {"metric": "evalLoss", "threshold": 1.0},
    }
    kube.apply(md("gated", [variant]), namespace)
    with running_operator(kube, namespace, extra_env=ENV):
        waiting = summary_reaches(
            kube, "gated", namespace, "Reconciling", "WaitingForFineTuneJob", lambda o: True
        )
        set_job_status(
            kube,
            namespace,
            "tuned",
            {
                "phase": "Succeeded",
                "metrics": {"evalLoss": 2.5},
                "artifacts": {"adapterUri": "s3://models/tuned/adapter", "baseModelUri": "Qwen/Qwen2.5-0.5B"},
            },
        )
        gated = summary_reaches(kube, "gated", namespace, "Stalled", "GateFailed", lambda o: True)
    assert_verdicts(
        [
            record("modeldeployment-waiting-for-model", waiting, tmp_path),
            record("modeldeployment-gate-failed", gated, tmp_path),
        ]
    )
