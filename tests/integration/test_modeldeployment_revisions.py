"""A ModelDeployment following a FineTuneSchedule, on the real API server with pods on a simulated node.

The test plays the schedule: its cron is one the operator refuses (`Foo` is no month), so the schedule
reconciler starts nothing and leaves the runs alone, and the test writes `status.runs` (runs with
artifacts and gate verdicts) and the runs' FineTuneJobs. The deployment's canary analysis asks a
stand-in Prometheus that fails run 3's revision and passes every other: run 1 is canaried in from the
base variant, run 2 replaces it, run 3 is rolled back and run 2 keeps serving. Nobody writes the spec.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.test_modeldeployment_reconcile import ftj, get, md, set_job_status
from tests.integration.test_modeldeployment_traffic import (
    ENV,
    on_test_node,
    router_variants,
    simulated_gpu_node,
)
from tests.support.cluster import Kube
from tests.support.events import events_once, reasons
from tests.support.fake_prometheus import serve_prometheus
from tests.support.operator import running_operator
from tests.support.polling import eventually

from kubetune.planning.revisions import revision_variant_name

pytestmark = pytest.mark.cluster

R = {n: revision_variant_name("tuned", f"weekly-{n}") for n in (1, 2, 3)}


def _answer(query: str) -> str:
    """Instant queries: 20% errors for run 3's revision, none for the others; 120 requests each."""
    errors = "0.2" if f'variant="{R[3]}"' in query else "0"
    return errors if 'code=~"5.."' in query else "120" if query.startswith("sum(increase(") else "50"


@pytest.fixture
def prometheus() -> Iterator[str]:
    with serve_prometheus(_answer) as url:
        yield url


@pytest.fixture(scope="module")
def gpu_nodes(kube: Kube) -> Iterator[str]:
    with simulated_gpu_node(kube, "revisions-gpu-node", "kwok-rev-") as node:
        yield node


def schedule() -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneSchedule",
        "metadata": {"name": "weekly"},
        "spec": {"schedule": "0 0 * Foo *", "jobTemplate": {"spec": ftj("template")["spec"]}},
    }


def write_runs(kube: Kube, namespace: str, *runs: int) -> None:
    """The schedule's run history as its reconciler records it: succeeded, gate passed, artifacts."""
    status = {
        "runs": [
            {
                "name": f"weekly-{n}",
                "scheduledTime": f"2026-05-0{n}T00:00:00Z",
                "trigger": "Schedule",
                "phase": "Succeeded",
                "metrics": {"evalLoss": 1.0 / n},
                "artifacts": {"adapterUri": f"s3://models/weekly-{n}/adapter"},
                "gate": {"passed": True, "challengerMetrics": {"evalLoss": 1.0 / n}},
            }
            for n in runs
        ],
        "latestGoodRun": f"weekly-{runs[-1]}",
    }

    def written() -> bool:
        kube.kubectl(
            "patch", "finetuneschedule", "weekly", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}),
        )  # fmt: skip
        current = (get(kube, "finetuneschedule", "weekly", namespace) or {}).get("status") or {}
        return current.get("latestGoodRun") == status["latestGoodRun"]

    eventually(written, timeout=30, message=f"schedule runs {runs} written")


def tuned(kube: Kube, namespace: str) -> dict[str, Any]:
    status = (get(kube, "modeldeployment", "follow", namespace) or {}).get("status") or {}
    return next((v for v in status.get("variants") or [] if v["name"] == "tuned"), {})


def history(kube: Kube, namespace: str) -> list[tuple[str, str]]:
    return [(r["revision"], r["outcome"]) for r in tuned(kube, namespace).get("revisions") or []]


def test_follows_the_schedule_to_run_2_and_keeps_it_when_run_3_is_rolled_back(
    kube: Kube, namespace: str, gpu_nodes: str, prometheus: str
) -> None:
    kube.apply(schedule(), namespace)
    for n in (1, 2, 3):
        kube.apply({**ftj(f"weekly-{n}"), "metadata": {"name": f"weekly-{n}"}}, namespace)
    followed = {**on_test_node("tuned"), "model": {"finetuneScheduleRef": {"name": "weekly"}}}
    obj = md(
        "follow",
        [on_test_node("base", uri="Qwen/Qwen2.5-0.5B-Instruct"), followed],
        smokeTest={"enabled": False},
        traffic={
            "canary": {
                "stableVariant": "base",
                "canaryVariant": "tuned",
                "steps": [50, 100],
                "interval": "2s",
                "failureLimit": 1,
                "analysis": {"prometheusUrl": prometheus, "maxErrorRate": 0.01, "minRequests": 10},
            }
        },
    )
    kube.apply(obj, namespace)
    spec = get(kube, "modeldeployment", "follow", namespace)["spec"]  # type: ignore[index]

    with running_operator(kube, namespace, extra_env=ENV):
        # No good run yet: the followed variant waits, without pods, and says why.
        eventually(
            lambda: any(
                c["type"] == "ModelReady" and c["reason"] == "WaitingForGoodRun"
                for c in tuned(kube, namespace).get("conditions") or []
            ),
            timeout=60,
            message="WaitingForGoodRun",
        )
        for n in (1, 2, 3):
            set_job_status(
                kube,
                namespace,
                f"weekly-{n}",
                {"phase": "Succeeded", "artifacts": {"adapterUri": f"s3://models/weekly-{n}/adapter"}},
            )

        write_runs(kube, namespace, 1)
        eventually(
            lambda: history(kube, namespace) == [("weekly-1", "Serving")],
            timeout=120,
            message="run 1 canaried in from base",
        )
        write_runs(kube, namespace, 1, 2)
        eventually(
            lambda: history(kube, namespace) == [("weekly-1", "Superseded"), ("weekly-2", "Serving")],
            timeout=120,
            message="run 2 replaces run 1",
        )
        eventually(
            lambda: get(kube, "deployment", f"follow-vllm-{R[1]}", namespace) is None,
            timeout=30,
            message="run 1's Deployment pruned",
        )
        write_runs(kube, namespace, 1, 2, 3)
        eventually(
            lambda: history(kube, namespace)[-1:] == [("weekly-3", "RolledBack")],
            timeout=120,
            message="run 3 rolled back",
        )
        eventually(
            lambda: router_variants(kube, "follow", namespace).get(R[2]) == (100, True),
            timeout=30,
            message="run 2 keeps all traffic",
        )
        eventually(
            lambda: get(kube, "deployment", f"follow-vllm-{R[3]}", namespace) is None,
            timeout=30,
            message="run 3's Deployment pruned",
        )
    entry = tuned(kube, namespace)
    assert entry["servingRevision"] == "weekly-2"
    assert history(kube, namespace) == [
        ("weekly-1", "Superseded"),
        ("weekly-2", "Serving"),
        ("weekly-3", "RolledBack"),
    ]
    rolled_back = entry["revisions"][-1]
    assert "errorRate=0.2" in rolled_back["message"]
    assert rolled_back["metrics"] == {"evalLoss": pytest.approx(1 / 3)}
    assert rolled_back["artifactUri"] == "s3://models/weekly-3/adapter"
    events_once(
        kube,
        namespace,
        "follow",
        lambda found: (
            {"RevisionServing", "RevisionCanary", "RevisionSuperseded", "RevisionRolledBack"}
            <= reasons(found)
        ),
    )
    assert get(kube, "modeldeployment", "follow", namespace)["spec"] == spec  # type: ignore[index]
