"""Pure steps of a ModelDeployment pass: what is pruned, when to look again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import CanaryStatus
from kubetune.planning.canary import CanaryOutcome, CanaryPlan
from kubetune.planning.modeldeployment import SHIFT_POLL_S, SMOKE_POLL_S, prune_deletes, requeue_after
from kubetune.planning.plan import Delete

UID = "mdep-uid"
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def child(kind: str, name: str, *, owner: str = UID, variant: str | None = None) -> dict[str, Any]:
    labels = {"kubetune.io/variant": variant} if variant else {}
    return {
        "apiVersion": "apps/v1" if kind == "Deployment" else "v1",
        "kind": kind,
        "metadata": {"name": name, "uid": f"u-{name}", "labels": labels, "ownerReferences": [{"uid": owner}]},
    }


def test_prune_deletes_only_owned_unrendered_children_of_released_variants() -> None:
    owned = [
        child("Deployment", "chat-vllm-a", variant="a"),
        child("Deployment", "chat-vllm-b", variant="b"),
        child("Service", "chat-vllm-c", variant="c"),
        child("Service", "chat-vllm-held", variant="held"),
        child("Service", "someone-else", owner="other"),
    ]
    keep = frozenset({("Deployment", "chat-vllm-a")})
    assert prune_deletes(UID, owned, keep, {"held"}) == [
        Delete("apps/v1", "Deployment", "chat-vllm-b", uid="u-chat-vllm-b"),
        Delete("v1", "Service", "chat-vllm-c", uid="u-chat-vllm-c"),
    ]


def plan(requeue: float | None) -> CanaryPlan:
    return CanaryPlan(
        status=CanaryStatus(step=1, weight=10),
        weights={},
        replicas={},
        outcome=CanaryOutcome.PROGRESSING,
        reason=Reason.CANARY_STEP,
        message="",
        requeue_after_s=requeue,
    )


@pytest.mark.parametrize(
    ("canary", "smoke_running", "expected"),
    [
        (None, False, None),
        (None, True, SMOKE_POLL_S),
        (plan(None), False, None),
        (plan(60.0), False, 60.0),
        (plan(60.0), True, SMOKE_POLL_S),
        (plan(1.0), True, 1.0),
    ],
)
def test_requeue_after_the_next_decision(
    canary: CanaryPlan | None, smoke_running: bool, expected: float | None
) -> None:
    assert requeue_after(canary, smoke_running) == expected


@pytest.mark.parametrize(
    ("canary", "expected"), [(None, SHIFT_POLL_S), (plan(60.0), SHIFT_POLL_S), (plan(1.0), 1.0)]
)
def test_a_shifting_split_is_looked_at_again_soon(canary: CanaryPlan | None, expected: float) -> None:
    assert requeue_after(canary, False, shifting=True) == expected
