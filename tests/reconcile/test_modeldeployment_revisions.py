"""A variant following a FineTuneSchedule, through whole passes on an in-memory API.

The test writes the schedule's status (its runs, as the schedule reconciler would) and the runs'
FineTuneJobs; the routers are read back over HTTP (make-before-break). Run 2 is canaried in on its own and
replaces run 1 (whose pods go only once the routers serve the new split); run 3 is aborted and recorded
RolledBack while run 2 keeps serving, and is not tried again; run 4 is.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.reconcile.test_modeldeployment_shift import deployment, set_ready
from tests.serving.objects import finetunejob, model_deployment
from tests.support.fake_kube import FakeKube
from tests.support.fake_router import FakeRouter

from kubetune.planning.revisions import revision_variant_name
from kubetune.reconcile.modeldeployment import ModelDeploymentReconciler
from kubetune.reconcile.router_readback import ROUTER_CONFIG_URL_ANNOTATION
from kubetune.settings import OperatorSettings

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
R = {n: revision_variant_name("tuned", f"weekly-{n}") for n in range(1, 5)}


def merged(n: int) -> dict[str, Any]:
    return {"mergedModelUri": f"pvc://out/weekly-{n}/merged"}


def schedule(
    *good: int,
    failed_gate: tuple[int, ...] = (),
    artifacts: Callable[[int], dict[str, Any]] = merged,
    **template: Any,
) -> dict[str, Any]:
    """FineTuneSchedule weekly with the runs `good` and `failed_gate` succeeded, each with `artifacts(n)`;
    `template` adds to its job template's spec."""
    runs = [
        {
            "name": f"weekly-{n}",
            "scheduledTime": f"2026-05-0{n}T00:00:00Z",
            "trigger": "Schedule",
            "phase": "Succeeded",
            "metrics": {"evalLoss": 1.0 / n},
            "artifacts": artifacts(n),
            "gate": {"passed": n not in failed_gate},
        }
        for n in sorted({*good, *failed_gate})
    ]
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneSchedule",
        "metadata": {"name": "weekly", "namespace": "ml", "uid": "s-1"},
        "spec": {
            "schedule": "@weekly",
            "jobTemplate": {
                "spec": {
                    "baseModel": {"uri": "pvc://models/qwen"},
                    "dataset": {"uri": "pvc://data/train.jsonl"},
                    "output": {"uri": "pvc://out/weekly"},
                    **template,
                }
            },
        },
        "status": {"runs": runs},
    }


def run_job(n: int) -> dict[str, Any]:
    return finetunejob(
        f"weekly-{n}",
        "Succeeded",
        method="full",
        artifacts={"mergedModelUri": f"pvc://out/weekly-{n}/merged"},
        metrics={"evalLoss": 1.0 / n},
    )


def following(
    url: str, status: dict[str, Any] | None, canary: dict[str, Any] | None, variant: dict[str, Any]
) -> dict[str, Any]:
    """ModelDeployment chat with `variant` (after a variant base on the base model when `canary`), its
    routers read back at `url`."""
    variants = [variant]
    traffic: dict[str, Any] = {}
    if canary is not None:
        variants.insert(0, {"name": "base", "model": {"uri": "pvc://models/qwen"}, "weight": 0})
        traffic["canary"] = canary
    obj = model_deployment(variants, traffic=traffic, smokeTest={"enabled": False}, status=status)
    obj["metadata"]["annotations"] = {ROUTER_CONFIG_URL_ANNOTATION: url}
    return obj


def md(url: str, status: dict[str, Any] | None, canary: dict[str, Any] | None = None) -> dict[str, Any]:
    tuned = {"name": "tuned", "model": {"finetuneScheduleRef": {"name": "weekly"}}, "weight": 100}
    return following(url, status, canary, tuned)


def tuned(status: dict[str, Any]) -> dict[str, Any]:
    return next(v for v in status["variants"] if v["name"] == "tuned")


def history(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["revision"], r["outcome"]) for r in tuned(status).get("revisions", [])]


MdBuilder = Callable[[str, "dict[str, Any] | None", "dict[str, Any] | None"], dict[str, Any]]


class Passes:
    """Whole passes, each on the status the previous one wrote, the clock moving on."""

    def __init__(self, kube: FakeKube, url: str, build: MdBuilder = md) -> None:
        self.kube, self.url, self.build = kube, url, build
        self.reconciler = ModelDeploymentReconciler(OperatorSettings(allow_url_overrides=True))
        self.status: dict[str, Any] | None = None
        self.now = T0
        self.events: list[tuple[str, str]] = []
        self.canary: dict[str, Any] | None = None

    async def run(self) -> dict[str, Any]:
        self.now += timedelta(seconds=5)
        outcome = await self.reconciler.reconcile(
            self.kube,  # type: ignore[arg-type]
            self.build(self.url, self.status, self.canary),
            self.now,
            resync=False,
        )
        self.status = {k: v for k, v in outcome.status.items() if v is not None}
        self.events += [(e.type, e.reason) for e in outcome.events]
        return self.status


async def test_waits_for_a_good_run_then_serves_it_and_canaries_the_next(
    router: tuple[FakeRouter, str],
) -> None:
    fake, url = router
    kube = FakeKube(schedule(failed_gate=(1,)), run_job(1))
    passes = Passes(kube, url)

    # Run 1 failed its gate: nothing to serve, no pods, a reason that says why.
    waiting = await passes.run()
    model_ready = next(c for c in tuned(waiting)["conditions"] if c["type"] == "ModelReady")
    assert (model_ready["status"], model_ready["reason"]) == ("False", "WaitingForGoodRun")
    assert [d["metadata"]["name"] for d in kube.of_kind("Deployment")] == ["chat-router"]

    # Run 2 is good: it serves at once (nothing to canary from).
    kube.put(schedule(2, failed_gate=(1,)))
    kube.put(run_job(2))
    first = await passes.run()
    assert tuned(first)["servingRevision"] == "weekly-2"
    assert history(first) == [("weekly-2", "Serving")]
    set_ready(kube, R[2])
    await passes.run()
    fake.reload_from(kube)
    serving = await passes.run()
    assert serving["weights"] == f"{R[2]}=100"
    assert tuned(serving)["weight"] == 100

    # Run 3: its own Deployment next to run 2's; the weight moves once it is ready.
    kube.put(schedule(2, 3, failed_gate=(1,)))
    kube.put(run_job(3))
    canary = await passes.run()
    assert deployment(kube, R[2]) is not None
    assert deployment(kube, R[3]) is not None
    assert history(canary) == [("weekly-2", "Serving"), ("weekly-3", "Canary")]
    assert ("Normal", "RevisionCanary") in passes.events
    # A restarted operator resumes the canary from the status: nothing recorded twice, no new Event.
    passes.reconciler = ModelDeploymentReconciler(OperatorSettings(allow_url_overrides=True))
    events_before = list(passes.events)
    resumed = await passes.run()
    assert history(resumed) == history(canary)
    assert [e for e in passes.events[len(events_before) :] if e[1].startswith("Revision")] == []
    spec = md(url, None)["spec"]
    set_ready(kube, R[3])
    promoted = await passes.run()
    assert promoted["weights"] == f"{R[2]}=0,{R[3]}=100"
    # The routers still serve the old split: run 2's pods stay, nothing is recorded yet.
    assert deployment(kube, R[2])["spec"]["replicas"] == 1  # type: ignore[index]
    assert history(promoted)[-1] == ("weekly-3", "Canary")
    fake.reload_from(kube)
    settled = await passes.run()
    assert deployment(kube, R[2])["spec"]["replicas"] == 0  # type: ignore[index]
    assert history(settled) == [("weekly-2", "Superseded"), ("weekly-3", "Serving")]
    assert tuned(settled)["servingRevision"] == "weekly-3"
    assert ("Normal", "RevisionServing") in passes.events
    # The next pass renders run 3 only: run 2's Deployment (already without pods) is pruned.
    await passes.run()
    assert deployment(kube, R[2]) is None
    assert md(url, None)["spec"] == spec, "the spec is the user's: never written"
    assert not [w for w in kube.writes() if w[0] == "ModelDeployment"]


async def test_a_rolled_back_revision_keeps_the_previous_serving_and_is_never_retried(
    router: tuple[FakeRouter, str],
) -> None:
    fake, url = router
    kube = FakeKube(schedule(1), run_job(1))
    passes = Passes(kube, url)
    passes.canary = {"stableVariant": "base", "canaryVariant": "tuned", "steps": [50, 100], "interval": "1s"}

    async def settle(*variants: str) -> dict[str, Any]:
        for _ in range(6):
            for variant in variants:
                if deployment(kube, variant) is not None:
                    set_ready(kube, variant)
            status = await passes.run()
            fake.reload_from(kube)
        return status

    # The first run is canaried from the stable variant, by the user's steps.
    first = await settle("base", R[1])
    assert history(first) == [("weekly-1", "Serving")]
    assert first["weights"] == f"base=0,{R[1]}=100"

    # Run 2 goes in through 50%, then 100%.
    kube.put(schedule(1, 2))
    kube.put(run_job(2))
    half = await passes.run()
    set_ready(kube, R[2])
    half = await passes.run()
    assert half["weights"] == f"base=0,{R[1]}=50,{R[2]}=50"
    assert deployment(kube, "base")["spec"]["replicas"] == 0, "the promoted-away stable stays at zero"  # type: ignore[index]
    assert half["canary"]["weight"] == 50

    # Aborted (spec.traffic.canary.abort, from Git): run 1 keeps serving, run 2 is RolledBack.
    passes.canary = {**passes.canary, "abort": True}
    back = await settle(R[1], R[2])
    assert history(back) == [("weekly-1", "Serving"), ("weekly-2", "RolledBack")]
    assert tuned(back)["servingRevision"] == "weekly-1"
    assert back["weights"] == f"base=0,{R[1]}=100"
    assert deployment(kube, R[2]) is None
    assert ("Warning", "RevisionRolledBack") in passes.events
    # Back on the revision that served before: Ready, not Stalled (nothing in the spec needs fixing).
    assert back["phase"] == "Available"
    stalled = next(c for c in back["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "False"

    # Abort lifted: run 2 is not tried again.
    passes.canary = {**passes.canary, "abort": False}
    again = await settle(R[1])
    assert deployment(kube, R[2]) is None
    assert history(again)[-1] == ("weekly-2", "RolledBack")
    assert again["weights"] == f"base=0,{R[1]}=100"

    # A later good run is.
    kube.put(schedule(1, 2, 3))
    kube.put(run_job(3))
    await passes.run()
    assert deployment(kube, R[3]) is not None
    assert history(await passes.run())[-1] == ("weekly-3", "Canary")


async def test_a_followed_stable_variant_is_refused_and_nothing_is_rendered() -> None:
    kube = FakeKube(schedule(1), run_job(1))
    obj = md("http://unused", None, {"stableVariant": "tuned", "canaryVariant": "base"})
    outcome = await ModelDeploymentReconciler(OperatorSettings()).reconcile(kube, obj, T0, resync=False)  # type: ignore[arg-type]
    accepted = next(c for c in outcome.status["conditions"] if c["type"] == "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "InvalidSpec")
    assert accepted["message"].startswith("spec.traffic.canary.stableVariant: tuned follows")
    assert kube.of_kind("Deployment") == []
