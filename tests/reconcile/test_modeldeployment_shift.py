"""Make-before-break through whole passes on an in-memory API, the routers read back over HTTP.

The abort of a promoted canary (the stable scaled to zero): the stable scales up first, weight moves
only onto its ready pods, the canary keeps its pods until the one router serves the new split.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.serving.objects import model_deployment
from tests.support.fake_kube import FakeKube
from tests.support.fake_router import FakeRouter

from kubetune.reconcile.modeldeployment import ModelDeploymentReconciler
from kubetune.reconcile.router_readback import ROUTER_CONFIG_URL_ANNOTATION
from kubetune.settings import OperatorSettings

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def deployment_md(url: str, *, abort: bool, status: dict[str, Any] | None) -> dict[str, Any]:
    obj = model_deployment(
        [
            {"name": "stable", "model": {"uri": "pvc://models/s"}, "replicas": 2},
            {"name": "tuned", "model": {"uri": "pvc://models/t"}, "replicas": 1},
        ],
        traffic={
            "canary": {
                "stableVariant": "stable",
                "canaryVariant": "tuned",
                "steps": [50, 100],
                "abort": abort,
            }
        },
        smokeTest={"enabled": False},
        status=status,
    )
    obj["metadata"]["annotations"] = {ROUTER_CONFIG_URL_ANNOTATION: url}
    return obj


def deployment(kube: FakeKube, variant: str) -> dict[str, Any] | None:
    return kube.find("apps/v1", "Deployment", "ml", f"chat-vllm-{variant}")


def replicas(kube: FakeKube, variant: str) -> int:
    found = deployment(kube, variant)
    assert found is not None
    return int(found["spec"]["replicas"])


def set_ready(kube: FakeKube, variant: str, ready: int | None = None) -> None:
    """The variant's Deployment rolled out, `ready` of its replicas ready (all of them when None)."""
    found = deployment(kube, variant)
    assert found is not None
    n = found["spec"]["replicas"]
    found["status"] = {
        "observedGeneration": found["metadata"]["generation"],
        "replicas": n,
        "updatedReplicas": n,
        "readyReplicas": n if ready is None else ready,
        "availableReplicas": n if ready is None else ready,
    }


def shifted(status: dict[str, Any]) -> tuple[str, str]:
    condition = next(c for c in status["conditions"] if c["type"] == "TrafficShifted")
    return condition["status"], condition["reason"]


async def test_abort_of_a_promoted_canary_is_make_before_break(router: tuple[FakeRouter, str]) -> None:
    fake, url = router
    kube = FakeKube()
    reconciler = ModelDeploymentReconciler(OperatorSettings(allow_url_overrides=True))
    now = T0
    status: dict[str, Any] | None = {"canary": {"step": 2, "weight": 100}}

    async def run(*, abort: bool) -> dict[str, Any]:
        nonlocal status, now
        now += timedelta(seconds=5)
        outcome = await reconciler.reconcile(
            kube, deployment_md(url, abort=abort, status=status), now, resync=False
        )  # type: ignore[arg-type]
        status = {k: v for k, v in outcome.status.items() if v is not None}
        return status

    # Promoted: the tuned variant serves everything on its one pod, the stable has none.
    await run(abort=False)
    set_ready(kube, "tuned", 1)
    await run(abort=False)
    fake.reload_from(kube)
    promoted = await run(abort=False)
    assert promoted["weights"] == "stable=0,tuned=100"
    assert (replicas(kube, "stable"), replicas(kube, "tuned")) == (0, 1)
    assert shifted(promoted) == ("True", "TrafficSettled")

    # Abort: the stable scales up first; no weight moves while it has no ready pod.
    aborting = await run(abort=True)
    assert (replicas(kube, "stable"), replicas(kube, "tuned")) == (2, 1)
    assert aborting["weights"] == "stable=0,tuned=100"
    assert shifted(aborting) == ("False", "WaitingForCapacity")

    # One stable pod of two: half the traffic moves, the tuned pod keeps the rest.
    set_ready(kube, "stable", 1)
    half = await run(abort=True)
    assert half["weights"] == "stable=50,tuned=50"
    assert replicas(kube, "tuned") == 1

    # Both ready: all of it moves, but the router still serves the old split: the tuned pod stays.
    set_ready(kube, "stable", 2)
    moved = await run(abort=True)
    assert moved["weights"] == "stable=100,tuned=0"
    assert replicas(kube, "tuned") == 1
    assert shifted(moved) == ("False", "WaitingForRouters")

    # The router serves it: only now does the tuned variant scale down.
    fake.reload_from(kube)
    done = await run(abort=True)
    assert replicas(kube, "tuned") == 0
    assert shifted(done) == ("True", "TrafficSettled")
    assert next(c for c in done["conditions"] if c["type"] == "CanaryRolledBack")["status"] == "True"


async def test_routers_that_never_answer_are_given_up_after_the_bound(router: tuple[FakeRouter, str]) -> None:
    fake, url = router  # never reloads: answers 503
    kube = FakeKube()
    reconciler = ModelDeploymentReconciler(
        OperatorSettings(allow_url_overrides=True, router_confirm_seconds=30)
    )

    async def run(status: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
        obj = deployment_md(url, abort=False, status=status)
        outcome = await reconciler.reconcile(kube, obj, now, resync=False)  # type: ignore[arg-type]
        return {k: v for k, v in outcome.status.items() if v is not None}

    await run(None, T0)  # the rollout starts: both variants get pods
    set_ready(kube, "stable", 2)
    set_ready(kube, "tuned", 1)
    promoted = {"canary": {"step": 2, "weight": 100}}
    # Promoted, the stable's pods wait for the router, which never answers: held for the bound ...
    waiting = await run(promoted, T0 + timedelta(seconds=10))
    assert shifted(waiting) == ("False", "WaitingForRouters")
    held = await run(promoted, T0 + timedelta(seconds=35))
    assert shifted(held) == ("False", "WaitingForRouters")
    assert replicas(kube, "stable") == 2
    # ... counted from when the wait for the routers began, then given up.
    later = await run(promoted, T0 + timedelta(seconds=41))
    assert fake.loaded is None
    assert shifted(later) == ("True", "TrafficSettled")
    condition = next(c for c in later["conditions"] if c["type"] == "TrafficShifted")
    assert "1 router pods did not confirm it within 30s" in condition["message"]
    assert replicas(kube, "stable") == 0
