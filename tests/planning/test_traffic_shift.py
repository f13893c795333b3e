"""Traffic on ready capacity and make-before-break moves: the pure decisions, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kubetune.api.common import Condition
from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import VariantStatus
from kubetune.planning.traffic_shift import (
    Capacity,
    RouterView,
    capped_weights,
    held_replicas,
    plan_shift,
    routable,
)

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def status(ready: int, available: str | None, smoke: str | None) -> VariantStatus:
    states = {"Available": available, "SmokeTestPassed": smoke}
    conditions = [
        Condition(type=kind, status=value, reason="R", last_transition_time=T0)
        for kind, value in states.items()
        if value is not None
    ]
    return VariantStatus(name="a", ready_replicas=ready, conditions=conditions)


@pytest.mark.parametrize(
    ("ready", "available", "smoke", "was_routed", "expected"),
    [
        (3, "True", "True", False, True),
        # One pod of three lost (a delete, a drain, an HPA scaling up): Available False, still serving.
        (2, "False", "True", True, True),
        (1, "False", "True", False, True),
        (0, "False", "True", True, False),  # nothing ready: nothing to route to
        (2, "True", "Unknown", True, True),  # new pods under test: the serving variant keeps serving
        (2, "True", "Unknown", False, False),  # never tested: not before its verdict
        (2, "True", "False", True, False),
        (2, "True", None, True, False),
    ],
)
def test_routable_on_ready_capacity(
    ready: int, available: str | None, smoke: str | None, was_routed: bool, expected: bool
) -> None:
    assert routable(status(ready, available, smoke), was_routed) is expected


@pytest.mark.parametrize(
    ("ready", "full", "share"),
    [(0, 4, 0), (1, 4, 25), (3, 4, 75), (4, 4, 100), (5, 4, 100), (1, 3, 33), (1, 0, 100), (0, 0, 0)],
)
def test_capacity_share(ready: int, full: int, share: int) -> None:
    assert Capacity(ready, full).share == share


C = Capacity


@pytest.mark.parametrize(
    ("target", "capacity", "before", "expected"),
    [
        # Enough ready pods: the planned split as is.
        ({"s": 75, "c": 25}, {"s": C(3, 4), "c": C(1, 4)}, {"s": 100}, {"s": 75, "c": 25}),
        # Abort of a promoted canary: the stable has no pod yet, the canary keeps all of it.
        ({"s": 100, "c": 0}, {"s": C(0, 2), "c": C(2, 2)}, {"c": 100}, {"s": 0, "c": 100}),
        # ... one stable pod of two ready: half moves, the canary keeps the rest.
        ({"s": 100, "c": 0}, {"s": C(1, 2), "c": C(2, 2)}, {"c": 100}, {"s": 50, "c": 50}),
        # ... all ready: everything moves.
        ({"s": 100, "c": 0}, {"s": C(2, 2), "c": C(2, 2)}, {"c": 100}, {"s": 100, "c": 0}),
        # Promotion with 3 of 4 canary pods: the stable keeps a quarter meanwhile.
        ({"s": 0, "c": 100}, {"s": C(2, 4), "c": C(3, 4)}, {"s": 50, "c": 50}, {"s": 25, "c": 75}),
        # A canary pod dies mid-step: its weight is capped, the stable takes the rest if it has room.
        ({"s": 50, "c": 50}, {"s": C(4, 4), "c": C(1, 4)}, {"s": 50, "c": 50}, {"s": 75, "c": 25}),
        # Nobody has room for the rest: it is left out (the router spreads what it has).
        ({"s": 50, "c": 50}, {"s": C(1, 4), "c": C(1, 4)}, {"s": 50, "c": 50}, {"s": 25, "c": 25}),
        # The rest goes to the variant that served the most before.
        (
            {"a": 100, "b": 0, "c": 0},
            {"a": C(0, 1), "b": C(1, 1), "c": C(1, 1)},
            {"b": 70, "c": 30},
            {"a": 0, "b": 100, "c": 0},
        ),
        # A variant that served nothing before does not get weight it was not planned to get.
        ({"s": 100, "c": 0}, {"s": C(0, 1), "c": C(1, 1)}, {}, {"s": 0, "c": 0}),
    ],
)
def test_capped_weights(
    target: dict[str, int], capacity: dict[str, Capacity], before: dict[str, int], expected: dict[str, int]
) -> None:
    assert capped_weights(target, capacity, before) == expected


ABORT = {"s": 100, "c": 0}


@pytest.mark.parametrize(
    ("capacity", "routers", "reason", "scale_down", "weights"),
    [
        # 1. the target scales up first: no weight moves before its pods are ready, nothing scales down.
        ({"s": C(0, 1), "c": C(1, 1)}, None, Reason.WAITING_FOR_CAPACITY, False, {"s": 0, "c": 100}),
        # 2. ready: the weight moves; the routers have not read it yet, the canary keeps its pods.
        ({"s": C(1, 1), "c": C(1, 1)}, RouterView(1, 2), Reason.WAITING_FOR_ROUTERS, False, ABORT),
        # 3. every router serves the new split: now the canary may scale down.
        ({"s": C(1, 1), "c": C(1, 1)}, RouterView(2, 2), Reason.TRAFFIC_SETTLED, True, ABORT),
        # No routers to ask (a Gateway): settled once the split is applied.
        ({"s": C(1, 1), "c": C(1, 1)}, None, Reason.TRAFFIC_SETTLED, True, ABORT),
        # No router pod takes traffic: nobody holds an old split.
        ({"s": C(1, 1), "c": C(1, 1)}, RouterView(0, 0), Reason.TRAFFIC_SETTLED, True, ABORT),
        # Routers that never answer (an operator outside the pod network): given up after the bound.
        ({"s": C(1, 1), "c": C(1, 1)}, RouterView(0, 2, waited_s=121), Reason.TRAFFIC_SETTLED, True, ABORT),
    ],
)
def test_make_before_break_ordering(
    capacity: dict[str, Capacity],
    routers: RouterView | None,
    reason: Reason,
    scale_down: bool,
    weights: dict[str, int],
) -> None:
    shift = plan_shift(ABORT, capacity, {"c": 100}, routers, confirm_timeout_s=120)
    assert (shift.reason, shift.scale_down, shift.weights) == (reason, scale_down, weights)
    assert shift.settled is (reason is Reason.TRAFFIC_SETTLED)


def test_shift_messages_say_what_they_wait_on() -> None:
    waiting = plan_shift(ABORT, {"s": C(0, 2), "c": C(1, 1)}, {"c": 100}, None, confirm_timeout_s=120)
    assert "s takes 0% of 100% (0 ready pods)" in waiting.message
    routers = plan_shift(
        ABORT, {"s": C(2, 2), "c": C(1, 1)}, {"c": 100}, RouterView(1, 3), confirm_timeout_s=120
    )
    assert routers.message.startswith("1/3 router pods serve the new split")
    gave_up = plan_shift(
        ABORT, {"s": C(2, 2), "c": C(1, 1)}, {"c": 100}, RouterView(1, 3, waited_s=200), confirm_timeout_s=120
    )
    assert "2 router pods did not confirm it within 120s" in gave_up.message


@pytest.mark.parametrize(
    ("planned", "current", "held"),
    [
        ({"s": 0, "c": 2}, {"s": 2, "c": 1}, {"s": 2, "c": 2}),  # promotion: the stable keeps its pods
        ({"s": 2, "c": 0}, {"s": 0, "c": 2}, {"s": 2, "c": 2}),  # abort: the stable scales up first
        ({"s": 2, "c": 1}, {}, {"s": 2, "c": 1}),  # nothing there yet
    ],
)
def test_nothing_scales_down_before_the_split_settles(
    planned: dict[str, int], current: dict[str, int], held: dict[str, int]
) -> None:
    assert held_replicas(planned, current) == held
