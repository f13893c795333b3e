"""FineTuneScheduleReconciler on an in-memory API: what one pass reads, creates and reports."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.support.fake_kube import FakeKube
from tests.support.manifests import fts

from kubetune.builders.finetuneschedule import run_name
from kubetune.reconcile.finetuneschedule import FineTuneScheduleReconciler, configmap_digest
from kubetune.settings import OperatorSettings

API = "kubetune.io/v1alpha1"
CREATED = datetime(2026, 5, 1, 0, 0, 30, tzinfo=UTC)
DUE = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)


def schedule() -> dict[str, Any]:
    template = {
        "baseModel": {"uri": "Qwen/Qwen2.5-0.5B"},
        "dataset": {"uri": "configMap://data/train.jsonl"},
        "output": {"uri": "s3://models/nightly"},
    }
    return fts(CREATED.strftime("%Y-%m-%dT%H:%M:%SZ"), template)


def reconciler(now: datetime) -> FineTuneScheduleReconciler:
    return FineTuneScheduleReconciler(OperatorSettings(), clock=lambda: now)


@pytest.mark.parametrize(
    ("config_map", "expected"),
    [
        ({"data": {"train.jsonl": "héllo\n"}}, "sha256:" + hashlib.sha256("héllo\n".encode()).hexdigest()),
        (
            {"binaryData": {"train.jsonl": base64.b64encode(b"\x00\x01").decode()}},
            "sha256:" + hashlib.sha256(b"\x00\x01").hexdigest(),
        ),
        ({"data": {"other.jsonl": "x"}}, None),
        (None, None),
    ],
    ids=["text", "binary", "no such key", "no ConfigMap"],
)
def test_configmap_digest_hashes_the_mounted_bytes(
    config_map: dict[str, Any] | None, expected: str | None
) -> None:
    assert configmap_digest(config_map, "train.jsonl") == expected


async def test_a_due_run_is_created_with_the_digest_of_its_configmap() -> None:
    kube = FakeKube(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "data", "namespace": "ns"},
            "data": {"train.jsonl": "x\n"},
        }
    )
    # The injected clock wins over the controller's `now`.
    outcome = await reconciler(DUE + timedelta(seconds=5)).reconcile(kube, schedule(), CREATED, resync=False)  # type: ignore[arg-type]
    name = run_name("nightly", DUE)
    created = kube.find(API, "FineTuneJob", "ns", name)
    assert created is not None
    assert created["metadata"]["annotations"]["kubetune.io/dataset-digest"] == configmap_digest(
        {"data": {"train.jsonl": "x\n"}}, "train.jsonl"
    )
    assert outcome.status["active"] == [name]
    assert [e.reason for e in outcome.events] == ["RunCreated"]


async def test_a_finetunejob_of_the_run_name_owned_by_someone_else_is_not_adopted() -> None:
    name = run_name("nightly", DUE)
    stranger = {
        "apiVersion": API,
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": "ns", "uid": "someone-else"},
        "spec": {},
    }
    kube = FakeKube(stranger)
    outcome = await reconciler(DUE + timedelta(seconds=5)).reconcile(kube, schedule(), CREATED, resync=False)  # type: ignore[arg-type]
    (run,) = outcome.status["runs"]
    assert (run["name"], run["phase"], run["reason"]) == (name, "Failed", "NameConflict")
    assert outcome.status["active"] == []
    assert kube.find(API, "FineTuneJob", "ns", name)["metadata"]["uid"] == "someone-else"  # untouched


def follower(name: str, schedule: str, revision: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"variants": [{"name": "main", "model": {"finetuneScheduleRef": {"name": schedule}}}]},
        "status": {"variants": [{"name": "main", "servingRevision": revision}]},
    }


async def test_a_gated_schedule_reads_its_followers_serving_revision_as_the_champion() -> None:
    obj = schedule()
    obj["spec"]["jobTemplate"]["spec"]["output"] = {"uri": "pvc://models/nightly"}
    obj["spec"]["skipUnchangedData"] = False
    obj["spec"]["evaluation"] = {
        "frozenSet": {"uri": "pvc://eval/frozen.jsonl"},
        "noWorseThanChampion": {"evalLoss": {"maxIncrease": 0.0}},
    }
    serving = run_name("nightly", DUE - timedelta(hours=1))
    obj["status"]["runs"] = [
        {
            "name": serving,
            "scheduledTime": (DUE - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "trigger": "Schedule",
            "phase": "Succeeded",
            "artifacts": {"adapterUri": f"pvc://models/nightly/{serving}/adapter"},
        }
    ]
    obj["status"]["lastScheduleTime"] = obj["status"]["runs"][0]["scheduledTime"]
    kube = FakeKube(follower("chat", "nightly", serving), follower("other", "weekly", "weekly-9"))
    outcome = await reconciler(DUE + timedelta(seconds=5)).reconcile(kube, obj, CREATED, resync=False)  # type: ignore[arg-type]
    created = kube.find(API, "FineTuneJob", "ns", run_name("nightly", DUE))
    assert created is not None
    assert created["spec"]["evaluation"]["champion"] == {
        "name": serving,
        "adapterUri": f"pvc://models/nightly/{serving}/adapter",
    }
    assert ("ModelDeployment", "") in kube.verbs("list")
    assert "ChampionChosen" in [e.reason for e in outcome.events]


async def test_a_schedule_without_a_gate_does_not_read_modeldeployments() -> None:
    kube = FakeKube()
    await reconciler(DUE + timedelta(seconds=5)).reconcile(kube, schedule(), CREATED, resync=False)  # type: ignore[arg-type]
    assert ("ModelDeployment", "") not in kube.verbs("list")
