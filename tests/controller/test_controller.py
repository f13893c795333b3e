"""The Controller around a reconciler: status compare-then-patch, Events, forgetting, error edges."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY
from tests.support.fake_kube import FakeKube

from kubetune.controller.controller import Controller, RetryLater
from kubetune.kube.client import ApiError, KubeClient
from kubetune.planning.plan import Event, Outcome
from kubetune.planning.revisions import follows_schedule, schedule_summary
from kubetune.settings import OperatorSettings

KIND = "FineTuneJob"


def ftj(name: str = "demo", generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": KIND,
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": generation},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    return obj


class Stub:
    """A reconciler that returns a scripted outcome (or raises) and records what it saw."""

    kind = KIND

    def __init__(self, *outcomes: Outcome | Exception) -> None:
        self.outcomes = list(outcomes)
        self.passes: list[tuple[str, bool]] = []
        self.forgotten: list[str] = []

    async def reconcile(
        self, client: KubeClient, obj: dict[str, Any], now: datetime, *, resync: bool
    ) -> Outcome:
        self.passes.append((obj["metadata"]["name"], resync))
        result = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(result, Exception):
            raise result
        return result

    def forget(self, uid: str) -> None:
        self.forgotten.append(uid)


def controller(stub: Stub, kube: FakeKube) -> Controller:
    return Controller(OperatorSettings(), [stub], client=kube)  # type: ignore[list-item]


async def test_status_is_patched_only_when_it_changes_and_events_are_posted() -> None:
    kube = FakeKube(ftj())
    stub = Stub(Outcome({"phase": "Pending"}, [Event("Normal", "Accepted", "ok")]))
    ctl = controller(stub, kube)
    await ctl.on_event(KIND, "ADDED", ftj())
    assert kube.find("kubetune.io/v1alpha1", KIND, "ns", "demo")["status"] == {"phase": "Pending"}
    assert [e["reason"] for e in kube.of_kind("Event")] == ["Accepted"]
    assert kube.verbs("patch/status") == [(KIND, "demo")]
    # The same generation again: not reconciled (a watch event of our own status write).
    await ctl.on_event(KIND, "MODIFIED", ftj())
    assert len(stub.passes) == 1
    # A resync: reconciled from a fresh read, nothing to patch.
    await ctl.trigger(KIND, "ns", "demo")
    assert stub.passes[-1] == ("demo", True)
    assert kube.verbs("patch/status") == [(KIND, "demo")]


async def test_a_new_generation_is_reconciled_and_a_deleted_object_is_forgotten() -> None:
    kube = FakeKube(ftj())
    stub = Stub(Outcome({"phase": "Pending"}))
    ctl = controller(stub, kube)
    await ctl.on_event(KIND, "ADDED", ftj())
    await ctl.on_event(KIND, "MODIFIED", ftj(generation=2))
    assert len(stub.passes) == 2
    await ctl.on_event(KIND, "DELETED", ftj(generation=2))
    assert stub.forgotten == ["uid-demo"]
    assert ctl.spec_unhandled(KIND, ftj(generation=2))
    await ctl.trigger(KIND, "ns", "demo")  # no longer in the watch cache: nothing runs
    assert len(stub.passes) == 2


async def test_the_object_deleted_mid_pass_is_gone_not_an_error() -> None:
    kube = FakeKube()  # the status patch answers 404: the object itself is gone
    stub = Stub(Outcome({"phase": "Pending"}))
    ctl = controller(stub, kube)
    await ctl.run(KIND, ftj(), resync=False)
    assert kube.of_kind("Event") == []


async def test_a_404_about_something_else_is_retried() -> None:
    kube = FakeKube(ftj())
    stub = Stub(ApiError(404, "NotFound", 'the server could not find "demo"'))
    ctl = controller(stub, kube)
    with pytest.raises(RetryLater) as caught:
        await ctl.run(KIND, ftj(), resync=False)
    assert caught.value.delay_s == 30.0


@pytest.mark.parametrize(("status", "delay"), [(409, 2.0), (503, 2.0), (422, 30.0)])
async def test_api_errors_become_a_retry_with_a_delay(status: int, delay: float) -> None:
    kube = FakeKube(ftj())
    ctl = controller(Stub(ApiError(status, "X", "boom")), kube)
    with pytest.raises(RetryLater) as caught:
        await ctl.run(KIND, ftj(), resync=False)
    assert caught.value.delay_s == delay


async def test_one_pending_requeue_per_object_and_it_runs_a_pass() -> None:
    kube = FakeKube(ftj())
    stub = Stub(
        Outcome({"phase": "Pending"}, requeue_after_s=60.0),
        Outcome({"phase": "Pending"}, requeue_after_s=0.5),
    )
    ctl = controller(stub, kube)
    ctl.remember(KIND, "ADDED", ftj())
    await ctl.run(KIND, ftj(), resync=False)
    await ctl.run(KIND, ftj(), resync=True)
    assert len(ctl._requeues) == 1  # the later request replaced the earlier one
    await asyncio.sleep(0.7)
    assert len(stub.passes) == 3
    await ctl.stop()


async def test_a_child_status_change_runs_its_parent() -> None:
    kube = FakeKube(ftj())
    stub = Stub(Outcome({"phase": "Running"}))
    ctl = controller(stub, kube)
    ctl.remember(KIND, "ADDED", ftj())
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "demo-validate",
            "namespace": "ns",
            "uid": "job-1",
            "ownerReferences": [
                {"apiVersion": "kubetune.io/v1alpha1", "kind": KIND, "name": "demo", "controller": True}
            ],
        },
    }
    await ctl.on_child_event("ADDED", job)  # created by us, no status yet: nothing to do
    assert stub.passes == []
    await ctl.on_child_event("MODIFIED", {**job, "status": {"active": 1}})
    await ctl.on_child_event("MODIFIED", {**job, "status": {"active": 1}})  # unchanged status
    assert stub.passes == [("demo", True)]


def phase_series(name: str) -> dict[str, float]:
    """kubetune_object_phase samples of one object, by phase."""
    return {
        sample.labels["phase"]: sample.value
        for metric in REGISTRY.collect()
        if metric.name == "kubetune_object_phase"
        for sample in metric.samples
        if sample.labels["object_name"] == name and sample.labels["object_namespace"] == "ns"
    }


async def test_one_phase_series_per_object_follows_its_phase_and_goes_with_it() -> None:
    """What the alerts group by namespace and object: one series, the current phase, gone on delete."""
    kube = FakeKube(ftj("phased"))
    stub = Stub(Outcome({"phase": "Pending"}), Outcome({"phase": "Running"}))
    ctl = controller(stub, kube)
    await ctl.on_event(KIND, "ADDED", ftj("phased"))
    assert phase_series("phased") == {"Pending": 1.0}
    await ctl.on_event(KIND, "MODIFIED", ftj("phased", generation=2))
    assert phase_series("phased") == {"Running": 1.0}
    await ctl.on_event(KIND, "DELETED", ftj("phased", generation=2))
    assert phase_series("phased") == {}


async def test_a_followed_schedule_runs_its_followers_when_what_they_read_changes() -> None:
    # The stub stands for the ModelDeployment reconciler; its objects follow "weekly" or not.
    def md(name: str, schedule: str) -> dict[str, Any]:
        obj = ftj(name)
        obj["spec"] = {"variants": [{"name": "v", "model": {"finetuneScheduleRef": {"name": schedule}}}]}
        return obj

    kube = FakeKube(md("follower", "weekly"), md("other", "daily"))
    stub = Stub(Outcome({"phase": "Available"}))
    ctl = controller(stub, kube)
    ctl.remember(KIND, "ADDED", md("follower", "weekly"))
    ctl.remember(KIND, "ADDED", md("other", "daily"))

    def schedule(*runs: tuple[str, str], next_time: str = "t0") -> dict[str, Any]:
        return {
            "metadata": {"name": "weekly", "namespace": "ns", "uid": "s-1"},
            "status": {
                "nextScheduleTime": next_time,
                "runs": [{"name": n, "phase": p, "gate": {"passed": True}} for n, p in runs],
            },
        }

    async def event(kind: str | None, body: dict[str, Any]) -> None:
        await ctl.on_followed_event(kind, body, schedule_summary(body), KIND, follows_schedule)

    await event(None, schedule(("weekly-1", "Active")))  # the initial listing: followers run on their own
    assert stub.passes == []
    await event("MODIFIED", schedule(("weekly-1", "Active"), next_time="t1"))  # nothing followers read
    assert stub.passes == []
    await event("MODIFIED", schedule(("weekly-1", "Succeeded")))
    assert stub.passes == [("follower", True)]
    await event("DELETED", schedule(("weekly-1", "Succeeded")))
    assert stub.passes == [("follower", True)] * 2
    await event("ADDED", schedule())  # created again: its followers no longer find it missing
    assert stub.passes == [("follower", True)] * 3
