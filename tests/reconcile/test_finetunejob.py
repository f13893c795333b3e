"""FineTuneJobReconciler on an in-memory API: what one pass applies, deletes and reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tests.support.fake_kube import FakeKube
from tests.support.manifests import ftj

from kubetune.planning.finetunejob_pass import REPORT_POLL_SECONDS
from kubetune.reconcile.finetunejob import FineTuneJobReconciler
from kubetune.settings import OperatorSettings

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def complete(job: dict[str, Any]) -> None:
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}


async def test_first_pass_creates_only_what_validation_needs() -> None:
    kube = FakeKube()
    reconciler = FineTuneJobReconciler(OperatorSettings(trainer_image="trainer:test"))
    outcome = await reconciler.reconcile(kube, ftj(), NOW, resync=False)  # type: ignore[arg-type]
    assert outcome.status["phase"] == "Pending"
    assert sorted(kube.verbs("create")) == [
        ("ConfigMap", "demo-config"),
        ("Job", "demo-validate"),
        ("ServiceAccount", "demo-trainer"),
    ]
    (job,) = kube.of_kind("Job")
    assert job["metadata"]["name"] == "demo-validate"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "trainer:test"


async def test_after_validation_the_training_job_and_shared_children_follow() -> None:
    kube = FakeKube()
    reconciler = FineTuneJobReconciler(OperatorSettings())
    await reconciler.reconcile(kube, ftj(), NOW, resync=False)  # type: ignore[arg-type]
    complete(kube.find("batch/v1", "Job", "ns", "demo-validate"))  # type: ignore[arg-type]
    kube.calls.clear()
    outcome = await reconciler.reconcile(kube, ftj(), NOW, resync=False)  # type: ignore[arg-type]
    assert {k for k, _ in kube.writes()} >= {"ConfigMap", "Service", "Role", "RoleBinding", "Job"}
    assert sorted(j["metadata"]["name"] for j in kube.of_kind("Job")) == ["demo-train-r0", "demo-validate"]
    assert outcome.status["phase"] == "Pending"
    # With the training Job of this spec in place, a watch-event pass writes nothing...
    kube.calls.clear()
    await reconciler.reconcile(kube, ftj(), NOW, resync=False)  # type: ignore[arg-type]
    assert kube.writes() == []
    # ...nor does a resync soon after this process applied the shared children;
    await reconciler.reconcile(kube, ftj(), NOW, resync=True)  # type: ignore[arg-type]
    assert kube.writes() == []
    # one with no record of them (a restarted operator) repairs drift, once.
    reconciler.forget("u-1")
    await reconciler.reconcile(kube, ftj(), NOW, resync=True)  # type: ignore[arg-type]
    assert sorted(k for k, _ in kube.verbs("apply")) == [
        "ConfigMap",
        "ConfigMap",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    await reconciler.reconcile(kube, ftj(), NOW, resync=True)  # type: ignore[arg-type]
    assert len(kube.verbs("apply")) == 7


async def test_an_invalid_spec_fails_without_children() -> None:
    kube = FakeKube()
    obj = ftj()
    obj["spec"]["resources"]["nodes"] = 0
    outcome = await FineTuneJobReconciler(OperatorSettings()).reconcile(kube, obj, NOW, resync=False)  # type: ignore[arg-type]
    assert outcome.status["phase"] == "Failed"
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "InvalidSpec")]
    assert kube.calls == []


async def test_suspending_deletes_the_running_gang_of_a_queued_job() -> None:
    kube = FakeKube()
    reconciler = FineTuneJobReconciler(OperatorSettings())
    obj = ftj(resources={"nodes": 1, "gpusPerNode": 1, "queueName": "team"})
    await reconciler.reconcile(kube, obj, NOW, resync=False)  # type: ignore[arg-type]
    complete(kube.find("batch/v1", "Job", "ns", "demo-validate"))  # type: ignore[arg-type]
    await reconciler.reconcile(kube, obj, NOW, resync=False)  # type: ignore[arg-type]
    obj["spec"]["runPolicy"] = {"suspend": True}
    outcome = await reconciler.reconcile(kube, obj, NOW, resync=False)  # type: ignore[arg-type]
    assert outcome.status["phase"] == "Suspended"
    assert kube.verbs("delete") == [("Job", "demo-train-r0")]


async def test_a_name_held_by_another_object_is_a_condition_not_an_adoption() -> None:
    theirs = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "demo-trainer", "namespace": "ns"},
    }
    kube = FakeKube(theirs)
    reconciler = FineTuneJobReconciler(OperatorSettings())
    outcome = await reconciler.reconcile(kube, ftj(), NOW, resync=False)  # type: ignore[arg-type]
    accepted = next(c for c in outcome.status["conditions"] if c["type"] == "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "NameConflict")
    assert "ServiceAccount demo-trainer" in accepted["message"]
    assert [e.reason for e in outcome.events] == ["NameConflict"]
    assert kube.of_kind("Job") == [], "no pod may run under a ServiceAccount someone else holds"
    assert ("ServiceAccount", "demo-trainer") not in kube.verbs("apply")
    stored = kube.find("v1", "ServiceAccount", "ns", "demo-trainer")
    assert stored is not None
    assert "ownerReferences" not in stored["metadata"], "adopted"
    # The next pass reports the same, without another Event.
    again = await reconciler.reconcile(kube, {**ftj(), "status": outcome.status}, NOW, resync=True)  # type: ignore[arg-type]
    assert again.events == []


def report(step: int) -> str:
    return json.dumps({"attempt": 0, "progress": {"step": step, "totalSteps": 100}})


async def test_progress_comes_from_the_report_config_map_it_controls() -> None:
    kube = FakeKube()
    reconciler = FineTuneJobReconciler(OperatorSettings())
    await reconciler.reconcile(kube, ftj(), NOW, resync=False)  # type: ignore[arg-type]
    complete(kube.find("batch/v1", "Job", "ns", "demo-validate"))  # type: ignore[arg-type]
    await reconciler.reconcile(kube, ftj(), NOW, resync=False)  # type: ignore[arg-type]
    stored = kube.find("v1", "ConfigMap", "ns", "demo-progress")
    assert stored is not None
    assert "data" not in stored, "created empty: the report key is rank 0's"

    train = kube.find("batch/v1", "Job", "ns", "demo-train-r0")
    assert train is not None
    train["status"] = {"startTime": "2026-05-01T11:00:00Z"}
    for index in (0, 1):
        labels = {
            **train["spec"]["template"]["metadata"]["labels"],
            "batch.kubernetes.io/job-name": train["metadata"]["name"],
        }
        kube.put(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{index}", "namespace": "ns", "labels": labels},
                "status": {"phase": "Running"},
            }
        )
    stored["data"] = {"report.json": report(25)}  # what rank 0's merge patch leaves
    outcome = await reconciler.reconcile(kube, ftj(), NOW, resync=False)  # type: ignore[arg-type]
    assert outcome.status["progress"]["step"] == 25
    assert outcome.requeue_after_s == REPORT_POLL_SECONDS, "no watch announces a report: look again"

    # A look-alike someone else controls (the name taken, or its owner reference patched away) is not read.
    stored["metadata"]["ownerReferences"] = []
    stored["data"] = {"report.json": report(50)}
    obj = ftj()
    obj["status"] = outcome.status
    outcome = await reconciler.reconcile(kube, obj, NOW, resync=False)  # type: ignore[arg-type]
    assert outcome.status["progress"]["step"] == 25


async def test_a_job_still_validating_reads_no_report() -> None:
    kube = FakeKube()
    reconciler = FineTuneJobReconciler(OperatorSettings())
    await reconciler.reconcile(kube, ftj(), NOW, resync=False)  # type: ignore[arg-type]
    kube.calls.clear()
    await reconciler.reconcile(kube, ftj(), NOW, resync=False)  # type: ignore[arg-type]
    assert ("get", "ConfigMap", "demo-progress") not in kube.calls
    complete(kube.find("batch/v1", "Job", "ns", "demo-validate"))  # type: ignore[arg-type]
    await reconciler.reconcile(kube, ftj(), NOW, resync=False)  # type: ignore[arg-type]
    kube.calls.clear()
    await reconciler.reconcile(kube, ftj(), NOW, resync=False)  # type: ignore[arg-type]
    assert ("get", "ConfigMap", "demo-progress") in kube.calls, "training: one read per pass"
