"""FineTuneSchedule against the real API server, the operator in-process, its clock driven by the test.

The schedule fires hourly; the test moves the operator's schedule clock past each cron time instead of
waiting. A run's FineTuneJob is the real child the operator creates; the test ends it (as the trainer
would) by writing its terminal status, which the FineTuneJob reconciler keeps.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.support.cluster import Kube
from tests.support.kubelet import FakeKubelet, finish_pod, run_pods, scheduled_pods
from tests.support.operator import running_operator
from tests.support.polling import aeventually

from kubetune.builders.finetunejob import child_names
from kubetune.builders.finetuneschedule import manual_run_name, run_name
from kubetune.kube.client import KubeClient

pytestmark = pytest.mark.cluster

API = "kubetune.io/v1alpha1"
KIND = "FineTuneSchedule"
DATA = "".join(f'{{"instruction": "Add {i} and {i}.", "output": "{2 * i}"}}\n' for i in range(1, 21))
NEW_DATA = DATA + '{"instruction": "Add 21 and 21.", "output": "42"}\n'


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class FakeClock:
    """The schedule's `now`: read from the operator's thread, moved by the test."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when


def fts_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "schedule": "0 * * * *",
            "jobTemplate": {
                "spec": {
                    "baseModel": {"uri": "Qwen/Qwen2.5-0.5B"},
                    "dataset": {"uri": "configMap://sched-data/data.jsonl", "format": "alpaca"},
                    "output": {"uri": "s3://models/sched"},
                    "resources": {"nodes": 1, "gpusPerNode": 0},
                }
            },
            **spec,
        },
    }


def data_config_map(text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "sched-data"},
        "data": {"data.jsonl": text},
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def operator(kube: Kube, namespace: str, clock: FakeClock) -> Iterator[None]:
    kube.apply(data_config_map(DATA), namespace)
    with running_operator(kube, namespace, resync_seconds=1.0, schedule_clock=clock):
        yield


async def get(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    obj = await client.get(API, KIND, namespace, name)
    assert obj is not None
    return obj


async def status_when(
    client: KubeClient, namespace: str, name: str, check: Any, message: str
) -> dict[str, Any]:
    async def ready() -> dict[str, Any]:
        status: dict[str, Any] = (await get(client, namespace, name)).get("status") or {}
        assert check(status), f"{message}: {status}"
        return status

    result: dict[str, Any] = await aeventually(ready, timeout=30, message=message)
    return result


def running_says(text: str) -> Callable[[dict[str, Any]], bool]:
    """A check of the status: its Running condition's message holds `text`."""
    return lambda status: text in next(c["message"] for c in status["conditions"] if c["type"] == "Running")


async def next_fire(client: KubeClient, namespace: str, name: str) -> datetime:
    status = await status_when(
        client, namespace, name, lambda s: s.get("nextScheduleTime"), "nextScheduleTime"
    )
    return datetime.fromisoformat(status["nextScheduleTime"].replace("Z", "+00:00"))


async def first_fire(client: KubeClient, namespace: str, clock: FakeClock, name: str) -> tuple[datetime, str]:
    """The clock moved just past the schedule's first start time: that time, and the run it names."""
    first = await next_fire(client, namespace, name)
    clock.set(first + timedelta(seconds=5))
    return first, run_name(name, first)


async def run_job(
    client: KubeClient, namespace: str, name: str, present: bool = True
) -> dict[str, Any] | None:
    async def check() -> dict[str, Any] | bool:
        job = await client.get(API, "FineTuneJob", namespace, name)
        assert (job is not None) == present, f"FineTuneJob {name} {'missing' if present else 'still there'}"
        return job if job is not None else True

    found = await aeventually(check, timeout=30, message=f"FineTuneJob {name}")
    return found if isinstance(found, dict) else None


async def finish(client: KubeClient, namespace: str, name: str, phase: str, **status: Any) -> None:
    """End a run as its trainer would, once the FineTuneJob reconciler has taken it up.

    Its status writes are merge patches of what changed since the body it read: once it has written
    Validating (its validation Job exists and nobody runs it), no pass of it sends `phase` again, so the
    terminal phase written here is not overwritten (and is kept: terminal phases are final).
    """

    async def taken_up() -> bool:
        job = await client.get(API, "FineTuneJob", namespace, name)
        assert job is not None
        phase = (job.get("status") or {}).get("phase")
        assert phase == "Validating", f"FineTuneJob {name} is {phase}"
        return True

    await aeventually(taken_up, timeout=30, message=f"{name} reconciled")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {
        "type": phase,
        "status": "True",
        "reason": "Test",
        "message": "ended by the test",
        "lastTransitionTime": now,
    }
    await client.patch_merge(
        API,
        "FineTuneJob",
        namespace,
        name,
        {"status": {"phase": phase, "completionTime": now, "conditions": [condition], **status}},
        subresource="status",
    )


async def test_runs_follow_the_cron_and_forbid_waits_for_the_active_run(
    client: KubeClient, namespace: str, operator: None, clock: FakeClock, kube: Kube
) -> None:
    kube.apply(fts_manifest("hourly", successfulRunsHistoryLimit=1, skipUnchangedData=False), namespace)
    first, run1 = await first_fire(client, namespace, clock, "hourly")
    job = await run_job(client, namespace, run1)
    assert job is not None
    fts = await get(client, namespace, "hourly")
    assert job["metadata"]["ownerReferences"][0]["uid"] == fts["metadata"]["uid"]
    assert job["spec"]["output"]["uri"] == f"s3://models/sched/{run1}"
    await status_when(client, namespace, "hourly", lambda s: s.get("active") == [run1], "run 1 active")

    # Forbid: the next hour's run waits while run 1 trains.
    second = first + timedelta(hours=1)
    clock.set(second + timedelta(seconds=5))
    await status_when(client, namespace, "hourly", running_says("waits"), "the second run waiting")
    assert await client.get(API, "FineTuneJob", namespace, run_name("hourly", second)) is None

    await finish(client, namespace, run1, "Succeeded", metrics={"evalLoss": 0.42})
    run2 = run_name("hourly", second)
    await run_job(client, namespace, run2)
    status = await status_when(
        client,
        namespace,
        "hourly",
        lambda s: s.get("lastSuccessfulTime") and s.get("active") == [run2],
        "run 2",
    )
    recorded = {r["name"]: r for r in status["runs"]}
    assert recorded[run1]["phase"] == "Succeeded"
    assert recorded[run1]["metrics"] == {"evalLoss": 0.42}

    # History limit 1: when run 2 succeeds, run 1's FineTuneJob goes.
    await finish(client, namespace, run2, "Succeeded")
    await run_job(client, namespace, run1, present=False)
    status = await status_when(client, namespace, "hourly", lambda s: not s.get("active"), "no active run")
    assert [r["name"] for r in status["runs"]] == [run2]


async def test_replace_deletes_the_active_run(
    client: KubeClient, namespace: str, operator: None, clock: FakeClock, kube: Kube
) -> None:
    kube.apply(fts_manifest("replacing", concurrencyPolicy="Replace", skipUnchangedData=False), namespace)
    first, run1 = await first_fire(client, namespace, clock, "replacing")
    await run_job(client, namespace, run1)
    second = first + timedelta(hours=1)
    clock.set(second + timedelta(seconds=5))
    await run_job(client, namespace, run_name("replacing", second))
    await run_job(client, namespace, run1, present=False)
    status = await status_when(
        client,
        namespace,
        "replacing",
        lambda s: s.get("active") == [run_name("replacing", second)],
        "replaced",
    )
    old = next(r for r in status["runs"] if r["name"] == run1)
    assert (old["phase"], old["reason"]) == ("Failed", "Replaced")


async def test_suspended_schedule_runs_only_when_triggered(
    client: KubeClient, namespace: str, operator: None, clock: FakeClock, kube: Kube
) -> None:
    kube.apply(fts_manifest("manual", suspend=True, trigger=1), namespace)
    status = await status_when(
        client, namespace, "manual", lambda s: s.get("phase") == "Suspended", "suspended"
    )
    assert status["lastTrigger"] == 1  # adopted at creation: creating a schedule does not run it
    clock.set(clock() + timedelta(hours=2))
    await status_when(
        client, namespace, "manual", running_says("spec.suspend"), "the due run held by suspend"
    )
    assert await client.list(API, "FineTuneJob", namespace) == []

    kube.apply(fts_manifest("manual", suspend=True, trigger=2), namespace)
    job = await run_job(client, namespace, manual_run_name("manual", 2))
    assert job is not None
    assert job["metadata"]["annotations"]["kubetune.io/trigger"] == "Manual"
    await status_when(client, namespace, "manual", lambda s: s.get("lastTrigger") == 2, "trigger recorded")
    assert [j["metadata"]["name"] for j in await client.list(API, "FineTuneJob", namespace)] == [
        manual_run_name("manual", 2)
    ]


async def test_a_run_without_new_data_is_skipped(
    client: KubeClient, namespace: str, operator: None, clock: FakeClock, kube: Kube
) -> None:
    kube.apply(fts_manifest("skipper"), namespace)
    first, run1 = await first_fire(client, namespace, clock, "skipper")
    job = await run_job(client, namespace, run1)
    assert job is not None
    assert job["metadata"]["annotations"]["kubetune.io/dataset-digest"] == digest(DATA)
    # The trainer reports the digest of the bytes it read: the same bytes the operator hashed.
    await finish(client, namespace, run1, "Succeeded", lineage={"datasetDigest": digest(DATA)})
    await status_when(
        client,
        namespace,
        "skipper",
        lambda s: s.get("lastSuccessfulDatasetDigest") == digest(DATA),
        "run 1 done",
    )

    second = first + timedelta(hours=1)
    clock.set(second + timedelta(seconds=5))
    status = await status_when(
        client,
        namespace,
        "skipper",
        lambda s: any(r["name"] == run_name("skipper", second) for r in s.get("runs", [])),
        "the second run recorded",
    )
    skipped = next(r for r in status["runs"] if r["name"] == run_name("skipper", second))
    assert (skipped["phase"], skipped["reason"]) == ("Skipped", "DatasetUnchanged")
    assert await client.get(API, "FineTuneJob", namespace, run_name("skipper", second)) is None

    kube.apply(data_config_map(NEW_DATA), namespace)
    third = second + timedelta(hours=1)
    clock.set(third + timedelta(seconds=5))
    job = await run_job(client, namespace, run_name("skipper", third))
    assert job is not None
    assert job["metadata"]["annotations"]["kubetune.io/dataset-digest"] == digest(NEW_DATA)


@pytest.fixture(scope="module")
def kubelet(kube: Kube) -> Iterator[FakeKubelet]:
    """A node for the probe's validation pod; its kubelet is the test."""
    with FakeKubelet(str(kube.kubeconfig)) as fake:
        fake.add_node("schedule-node", gpus=1)
        yield fake
    assert not fake.errors, fake.errors


async def finish_probe(client: KubeClient, namespace: str, job: str, reported: str) -> None:
    """The probe's pod runs `validate`, which reports the digest of the bytes it read."""

    async def bound() -> list[dict[str, Any]]:
        return await scheduled_pods(client, namespace, job, 1)

    [pod] = await aeventually(bound, timeout=60, message=f"the pod of {job} scheduled")
    await run_pods(client, [pod])
    result = {"outcome": "Succeeded", "message": "20 records", "lineage": {"datasetDigest": reported}}
    await finish_pod(client, pod, 0, json.dumps(result))


async def test_data_the_operator_cannot_read_is_probed_before_a_run(
    client: KubeClient, namespace: str, operator: None, clock: FakeClock, kube: Kube, kubelet: FakeKubelet
) -> None:
    manifest = fts_manifest("probed")
    manifest["spec"]["jobTemplate"]["spec"]["dataset"] = {"uri": "s3://data/train.jsonl", "format": "alpaca"}
    kube.apply(manifest, namespace)
    first, run1 = await first_fire(client, namespace, clock, "probed")
    # Nothing to compare with yet: the first run starts without a probe.
    await run_job(client, namespace, run1)
    await finish(client, namespace, run1, "Succeeded", lineage={"datasetDigest": "sha256:" + "a" * 64})
    await status_when(
        client, namespace, "probed", lambda s: s.get("lastSuccessfulDatasetDigest"), "run 1 done"
    )

    second = first + timedelta(hours=1)
    clock.set(second + timedelta(seconds=5))
    run2 = run_name("probed", second)
    probe = f"{run2}-probe-validate"
    job = await wait_for_job(client, namespace, probe)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "FineTuneSchedule"
    assert await client.get(API, "FineTuneJob", namespace, run2) is None  # the run waits for the probe
    await finish_probe(client, namespace, probe, "sha256:" + "a" * 64)
    status = await status_when(
        client,
        namespace,
        "probed",
        lambda s: any(r["name"] == run2 for r in s.get("runs", [])),
        "run 2 decided",
    )
    assert next(r for r in status["runs"] if r["name"] == run2)["phase"] == "Skipped"
    await wait_for_job(client, namespace, probe, present=False)

    third = second + timedelta(hours=1)
    clock.set(third + timedelta(seconds=5))
    run3 = run_name("probed", third)
    probe = f"{run3}-probe-validate"
    await wait_for_job(client, namespace, probe)
    await finish_probe(client, namespace, probe, "sha256:" + "b" * 64)
    created = await run_job(client, namespace, run3)
    assert created is not None
    assert created["metadata"]["annotations"]["kubetune.io/dataset-digest"] == "sha256:" + "b" * 64
    await wait_for_job(client, namespace, probe, present=False)
    assert await client.get("v1", "ConfigMap", namespace, f"{run3}-probe-config") is None


async def wait_for_job(client: KubeClient, namespace: str, name: str, present: bool = True) -> dict[str, Any]:
    async def check() -> dict[str, Any]:
        job = await client.get("batch/v1", "Job", namespace, name)
        assert (job is not None and not job["metadata"].get("deletionTimestamp")) == present, f"Job {name}"
        return job or {"gone": True}

    result: dict[str, Any] = await aeventually(check, timeout=60, message=f"Job {name} {present}")
    return result


def condition_of(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == kind)


async def test_a_run_that_regresses_on_the_frozen_set_fails_the_gate_and_is_not_the_latest_good_run(
    client: KubeClient, namespace: str, operator: None, clock: FakeClock, kube: Kube
) -> None:
    manifest = fts_manifest(
        "gated",
        skipUnchangedData=False,
        evaluation={"fromFirstRun": True, "noWorseThanChampion": {"evalLoss": {"maxIncrease": 0.05}}},
    )
    manifest["spec"]["jobTemplate"]["spec"]["output"] = {"uri": "pvc://models/gated"}
    kube.apply(manifest, namespace)
    first, run1 = await first_fire(client, namespace, clock, "gated")
    job1 = await run_job(client, namespace, run1)
    assert job1 is not None
    # The first run exports its test split (the frozen set from now on) and has no champion to meet.
    assert job1["spec"]["evaluation"]["exportTestSplit"] is True
    assert "champion" not in job1["spec"]["evaluation"]
    pinned = f"pvc://models/gated/{run1}/frozen-eval.jsonl"
    await finish(
        client,
        namespace,
        run1,
        "Succeeded",
        artifacts={"adapterUri": f"pvc://models/gated/{run1}/adapter"},
        frozenSet={"uri": pinned, "metrics": {"evalLoss": 1.0}},
    )
    status = await status_when(
        client, namespace, "gated", lambda s: s.get("latestGoodRun") == run1, "run 1 is the latest good run"
    )
    assert status["frozenSet"] == {"uri": pinned, "run": run1}
    assert status["runs"][0]["gate"]["passed"] is True

    # Run 2 scores itself and run 1 (the champion) on run 1's test split, and does worse.
    second = first + timedelta(hours=1)
    clock.set(second + timedelta(seconds=5))
    run2 = run_name("gated", second)
    job2 = await run_job(client, namespace, run2)
    assert job2 is not None
    assert job2["spec"]["evaluation"]["frozenSet"] == {"uri": pinned}
    assert job2["spec"]["evaluation"]["champion"] == {
        "name": run1,
        "adapterUri": f"pvc://models/gated/{run1}/adapter",
    }
    await finish(
        client,
        namespace,
        run2,
        "Succeeded",
        artifacts={"adapterUri": f"pvc://models/gated/{run2}/adapter"},
        frozenSet={
            "uri": pinned,
            "metrics": {"evalLoss": 1.3},
            "champion": run1,
            "championMetrics": {"evalLoss": 1.0},
        },
    )
    status = await status_when(
        client,
        namespace,
        "gated",
        lambda s: any(r["name"] == run2 and r["phase"] == "Succeeded" for r in s.get("runs", [])),
        "run 2 recorded",
    )
    record = next(r for r in status["runs"] if r["name"] == run2)
    assert record["gate"]["passed"] is False
    assert record["gate"]["reason"] == "GateFailed"
    assert record["gate"]["champion"] == run1
    assert record["gate"]["challengerMetrics"] == {"evalLoss": 1.3}
    assert record["gate"]["championMetrics"] == {"evalLoss": 1.0}
    assert "maxIncrease 0.05): worse" in record["gate"]["message"]
    assert status["latestGoodRun"] == run1
    last = condition_of(status, "LastRunSucceeded")
    assert (last["status"], last["reason"]) == ("False", "GateFailed")
    ready = condition_of(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Scheduled")
    assert condition_of(status, "Stalled")["status"] == "False"

    async def gate_event() -> str:
        events = json.loads(kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
        messages = [
            e.get("message") or e.get("note") or "" for e in events if e.get("reason") == "GateFailed"
        ]
        assert messages, "no GateFailed Event"
        return messages[0]

    assert run2 in await aeventually(gate_event, timeout=30, message="GateFailed Event")


async def test_an_incremental_schedule_starts_run_2_from_run_1(
    client: KubeClient, namespace: str, operator: None, clock: FakeClock, kube: Kube
) -> None:
    incremental = {"replayFraction": 0.25, "learningRateScale": 0.5}
    # History limit 0: run 1 stays anyway, as the latest good run that run 2 starts from.
    manifest = fts_manifest(
        "incr", incremental=incremental, skipUnchangedData=False, successfulRunsHistoryLimit=0
    )
    kube.apply(manifest, namespace)
    first, run1 = await first_fire(client, namespace, clock, "incr")
    job1 = await run_job(client, namespace, run1)
    assert job1 is not None
    assert "initFrom" not in job1["spec"]  # nothing good to start from yet: a fresh adapter

    # A job that starts from run 1 while it trains waits for it, saying so.
    follower = {
        "apiVersion": API,
        "kind": "FineTuneJob",
        "metadata": {"name": "follower"},
        "spec": {
            **job1["spec"],
            "output": {"uri": "s3://models/follower"},
            "initFrom": {"finetuneJobRef": {"name": run1}},
        },
    }
    kube.apply(follower, namespace)

    async def follower_waits() -> bool:
        job = await client.get(API, "FineTuneJob", namespace, "follower")
        assert job is not None
        conditions = (job.get("status") or {}).get("conditions", [])
        [running] = [c for c in conditions if c["type"] == "Running"] or [{"reason": "not reconciled yet"}]
        assert running["reason"] == "WaitingForFineTuneJob", running
        assert running["message"].startswith(f"spec.initFrom.finetuneJobRef: FineTuneJob {run1}")
        return True

    await aeventually(follower_waits, timeout=30, message="the follower waiting for run 1")
    assert await client.get("v1", "ConfigMap", namespace, child_names("follower").config_map) is None

    adapter = f"s3://models/sched/{run1}/adapter"
    await finish(client, namespace, run1, "Succeeded", artifacts={"adapterUri": adapter})
    await status_when(client, namespace, "incr", lambda s: s.get("latestGoodRun") == run1, "run 1 good")

    second = first + timedelta(hours=1)
    clock.set(second + timedelta(seconds=5))
    run2 = run_name("incr", second)
    job2 = await run_job(client, namespace, run2)
    assert job2 is not None
    assert job2["spec"]["initFrom"] == {"finetuneJobRef": {"name": run1}, **incremental}

    # The operator resolved run 2's initFrom into its training config: run 1's adapter and records.
    async def resolved_config(name: str) -> dict[str, Any]:
        config_map = await client.get("v1", "ConfigMap", namespace, child_names(name).config_map)
        assert config_map is not None, f"{name}'s config not rendered yet"
        config: dict[str, Any] = json.loads(config_map["data"]["config.json"])
        return config

    config = await aeventually(lambda: resolved_config(run2), timeout=30, message="run 2's config")
    assert config["initFrom"]["adapterUri"] == adapter
    assert config["initFrom"]["outputUri"] == f"s3://models/sched/{run1}"
    assert config["initFrom"]["replayRecordsPath"].endswith("/train-records.jsonl")
    assert config["initFrom"]["learningRateScale"] == 0.5
    follower_config = await aeventually(
        lambda: resolved_config("follower"), timeout=30, message="the follower's config"
    )
    assert follower_config["initFrom"]["adapterUri"] == adapter

    status = await status_when(client, namespace, "incr", lambda s: s.get("active") == [run2], "run 2 active")
    assert [r["name"] for r in status["runs"]] == [run1, run2]
    assert await client.get(API, "FineTuneJob", namespace, run1) is not None
