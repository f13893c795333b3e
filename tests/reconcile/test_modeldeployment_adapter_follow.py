"""An adapter following a FineTuneSchedule, through whole passes on an in-memory API.

The host variant's pods stay; each good run is loaded into them under a versioned name by a stand-in for
`sync_pod_adapters` (no HTTP), and takes weight only once every ready pod has it. Run 2 is loaded next to
run 1, takes the weight, and run 1 is unloaded only after the routers serve the new split. Never a new
pod template. A rolled-back run 2 is unloaded and run 1 keeps serving.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tests.reconcile.test_modeldeployment_revisions import Passes as RevisionPasses
from tests.reconcile.test_modeldeployment_revisions import following
from tests.reconcile.test_modeldeployment_revisions import schedule as revisions_schedule
from tests.reconcile.test_modeldeployment_shift import deployment, set_ready
from tests.support.fake_kube import FakeKube
from tests.support.fake_router import FakeRouter

from kubetune.builders.modeldeployment import selector_labels
from kubetune.planning.revisions import revision_variant_name
from kubetune.serving.lora_runtime import AdapterSyncResult, ManagedAdapters, plan_adapter_sync

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
R = {n: revision_variant_name("host", f"weekly-{n}") for n in range(1, 4)}
PATH = {n: f"/models/followed/support/weekly-{n}/adapter" for n in range(1, 4)}
POD_URL = "http://10.0.0.7:8000"


def adapter(n: int) -> dict[str, Any]:
    return {"adapterUri": f"pvc://out/weekly/weekly-{n}/adapter"}


def schedule(*good: int) -> dict[str, Any]:
    """The schedule's good runs, each a LoRA adapter."""
    return revisions_schedule(*good, artifacts=adapter, lora={"r": 16})


def md(url: str, status: dict[str, Any] | None, canary: dict[str, Any] | None) -> dict[str, Any]:
    host = {
        "name": "host",
        "model": {"uri": "pvc://models/qwen"},
        "weight": 100,
        "adapters": [{"name": "support", "finetuneScheduleRef": {"name": "weekly"}}],
    }
    return following(url, status, canary, host)


def ready_pod(variant: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"chat-vllm-{variant}-0",
            "namespace": "ml",
            "labels": selector_labels("chat", variant),
        },
        "status": {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]},
    }


class FakePods:
    """The vLLM pods' runtime LoRA state, driven through the real pure plan (`plan_adapter_sync`)."""

    def __init__(self) -> None:
        self.loaded: dict[str, dict[str, str]] = {}
        self.refuse: set[str] = set()
        self.calls: list[dict[str, str]] = []

    async def __call__(
        self, base_url: str, desired: Mapping[str, str], *, managed: ManagedAdapters
    ) -> AdapterSyncResult:
        self.calls.append(dict(desired))
        pod = self.loaded.setdefault(base_url, {})
        plan = plan_adapter_sync(pod, desired, managed)
        failed = dict(plan.conflicts)
        for name, path in plan.to_load.items():
            if name in self.refuse:
                failed[name] = "load: HTTP 404 Not Found"
            else:
                pod[name] = path
        for name in plan.to_unload:
            pod.pop(name)
        return AdapterSyncResult(loaded={n: p for n, p in pod.items() if n in managed}, failed=failed)


class Passes(RevisionPasses):
    """Whole passes of a variant whose adapter follows the schedule, its pods synced by `pods`."""

    def __init__(self, kube: FakeKube, url: str, pods: FakePods) -> None:
        super().__init__(kube, url, md)
        self.reconciler.sync_adapters = pods


def from_run_1(
    router: tuple[FakeRouter, str], *objects: dict[str, Any]
) -> tuple[FakeRouter, FakeKube, FakePods, Passes]:
    """An in-memory API holding the schedule with run 1 (and `objects`), the passes over it syncing
    adapters into fresh FakePods."""
    fake, url = router
    pods = FakePods()
    kube = FakeKube(schedule(1), *objects)
    return fake, kube, pods, Passes(kube, url, pods)


def host(status: dict[str, Any]) -> dict[str, Any]:
    return next(v for v in status["variants"] if v["name"] == "host")


def history(status: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(r["revision"], r["adapter"], r["outcome"]) for r in host(status).get("revisions", [])]


def template(kube: FakeKube) -> dict[str, Any]:
    found = deployment(kube, "host")
    assert found is not None
    return copy.deepcopy(found["spec"]["template"])


def only_host_deployment(kube: FakeKube) -> bool:
    return sorted(d["metadata"]["name"] for d in kube.of_kind("Deployment")) == [
        "chat-router",
        "chat-vllm-host",
    ]


async def test_runs_are_loaded_into_the_running_pods_and_moved_by_weight(
    router: tuple[FakeRouter, str],
) -> None:
    fake, kube, pods, passes = from_run_1(router)

    # Run 1: the host's pods come up; until one is ready, nothing is loaded and the revision takes
    # no traffic, with a reason naming the adapter.
    first = await passes.run()
    assert only_host_deployment(kube)
    revision = next(v for v in first["variants"] if v["name"] == R[1])
    model_ready = next(c for c in revision["conditions"] if c["type"] == "ModelReady")
    assert (model_ready["status"], model_ready["reason"]) == ("False", "AdapterNotLoaded")
    assert "support-weekly-1" in model_ready["message"]
    kube.put(ready_pod("host"))
    set_ready(kube, "host")
    before = template(kube)
    serving = await passes.run()
    assert pods.loaded[POD_URL] == {"support-weekly-1": PATH[1]}
    assert serving["weights"] == f"host=0,{R[1]}=100"
    assert history(serving) == [("weekly-1", "support", "Serving")]
    assert host(serving)["servingRevision"] == "weekly-1"
    fake.reload_from(kube)
    await passes.run()

    # Run 2: loaded next to run 1 in the same pod, then takes the weight.
    kube.put(schedule(1, 2))
    moved = await passes.run()
    assert pods.loaded[POD_URL] == {"support-weekly-1": PATH[1], "support-weekly-2": PATH[2]}
    assert history(moved) == [("weekly-1", "support", "Serving"), ("weekly-2", "support", "Canary")]
    assert moved["weights"] == f"host=0,{R[1]}=0,{R[2]}=100"
    # The routers still serve the old split: run 1 stays loaded, nothing is recorded yet.
    again = await passes.run()
    assert "support-weekly-1" in pods.loaded[POD_URL]
    assert history(again)[-1] == ("weekly-2", "support", "Canary")
    fake.reload_from(kube)
    settled = await passes.run()
    assert history(settled) == [
        ("weekly-1", "support", "Superseded"),
        ("weekly-2", "support", "Serving"),
    ]
    # The next pass no longer desires run 1: unloaded.
    after = await passes.run()
    assert pods.loaded[POD_URL] == {"support-weekly-2": PATH[2]}
    assert after["weights"] == f"host=0,{R[2]}=100"
    assert host(after)["servingRevision"] == "weekly-2"
    # No pod restarts: one Deployment throughout, its template untouched by the revisions.
    assert only_host_deployment(kube)
    assert template(kube) == before
    assert not [w for w in kube.writes() if w[0] == "ModelDeployment"]


async def test_a_failed_load_is_a_reason_and_takes_no_weight(
    router: tuple[FakeRouter, str],
) -> None:
    fake, kube, pods, passes = from_run_1(router, ready_pod("host"))
    await passes.run()
    set_ready(kube, "host")
    await passes.run()
    fake.reload_from(kube)
    pods.refuse.add("support-weekly-2")
    kube.put(schedule(1, 2))
    for _ in range(3):
        status = await passes.run()
        fake.reload_from(kube)
    revision = next(v for v in status["variants"] if v["name"] == R[2])
    model_ready = next(c for c in revision["conditions"] if c["type"] == "ModelReady")
    assert (model_ready["status"], model_ready["reason"]) == ("False", "AdapterNotLoaded")
    assert "support-weekly-2" in model_ready["message"]
    assert "HTTP 404" in model_ready["message"]
    assert status["weights"] == f"host=0,{R[1]}=100,{R[2]}=0"
    assert pods.loaded[POD_URL] == {"support-weekly-1": PATH[1]}


async def test_a_rolled_back_run_is_unloaded_and_the_previous_keeps_serving(
    router: tuple[FakeRouter, str],
) -> None:
    fake, kube, pods, passes = from_run_1(router, ready_pod("host"))
    passes.canary = {"stableVariant": "base", "canaryVariant": "host", "steps": [50, 100], "interval": "1s"}

    async def settle() -> dict[str, Any]:
        for _ in range(6):
            for variant in ("base", "host"):
                if deployment(kube, variant) is not None:
                    set_ready(kube, variant)
            status = await passes.run()
            fake.reload_from(kube)
        return status

    first = await settle()
    assert history(first) == [("weekly-1", "support", "Serving")]
    assert first["weights"] == f"base=0,host=0,{R[1]}=100"
    before = template(kube)

    kube.put(schedule(1, 2))
    half = await passes.run()
    assert pods.loaded[POD_URL] == {"support-weekly-1": PATH[1], "support-weekly-2": PATH[2]}
    assert half["weights"] == f"base=0,host=0,{R[1]}=50,{R[2]}=50"

    passes.canary = {**passes.canary, "abort": True}
    back = await settle()
    assert history(back) == [("weekly-1", "support", "Serving"), ("weekly-2", "support", "RolledBack")]
    assert back["weights"] == f"base=0,host=0,{R[1]}=100"
    assert pods.loaded[POD_URL] == {"support-weekly-1": PATH[1]}
    assert ("Warning", "RevisionRolledBack") in passes.events
    assert template(kube) == before
