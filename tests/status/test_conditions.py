"""set_condition: Kubernetes transition semantics, as a table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _pytest.mark import ParameterSet

from kubetune.api.common import Condition
from kubetune.status.conditions import find_condition, is_false, is_true, set_condition, status_of

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def cond(
    type: str, status: str, reason: str = "R", message: str = "", at: datetime = T0, gen: int = 1
) -> Condition:
    return Condition.model_validate(
        {
            "type": type,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": at.isoformat(),
            "observedGeneration": gen,
        }
    )


def case(
    id_: str,
    before: list[Condition],
    args: tuple[str, str, str, str, int],
    expected_time: datetime,
    expected_types: tuple[str, ...] = ("Ready",),
) -> ParameterSet:
    """set_condition(before, *args) at T1: the reason set is the reason asked for, whatever the time."""
    return pytest.param(before, args, expected_time, args[2], list(expected_types), id=id_)


@pytest.mark.parametrize(
    ("before", "args", "expected_time", "expected_reason", "expected_types"),
    [
        case("new-condition-stamped-now", [], ("Ready", "True", "Up", "m", 2), T1),
        case(
            "same-status-keeps-transition-time",
            [cond("Ready", "True", "Up")],
            ("Ready", "True", "StillUp", "new", 2),
            T0,
        ),
        case(
            "flip-moves-transition-time", [cond("Ready", "True")], ("Ready", "False", "Down", "gone", 2), T1
        ),
        case(
            "unknown-to-true-is-a-transition", [cond("Ready", "Unknown")], ("Ready", "True", "Up", "", 2), T1
        ),
        case(
            "order-preserved-in-place",
            [cond("A", "True"), cond("Ready", "False"), cond("B", "True")],
            ("Ready", "False", "Still", "", 3),
            T0,
            ("A", "Ready", "B"),
        ),
        case("new-type-appended", [cond("A", "True")], ("Ready", "True", "Up", "", 1), T1, ("A", "Ready")),
    ],
)
def test_set_condition(
    before: list[Condition],
    args: tuple[Any, ...],
    expected_time: datetime,
    expected_reason: str,
    expected_types: list[str],
) -> None:
    type_, status, reason, message, generation = args
    after = set_condition(before, type_, status, reason, message, generation, T1)
    assert [c.type for c in after] == expected_types
    target = find_condition(after, type_)
    assert target is not None
    assert target.status == status
    assert target.reason == expected_reason
    assert target.message == message
    assert target.last_transition_time == expected_time
    assert target.observed_generation == generation


def test_set_condition_leaves_input_untouched_and_accepts_dicts() -> None:
    wire = [cond("Ready", "True").to_wire()]
    after = set_condition(wire, "Ready", "False", "Down", "", 2, T1)
    assert wire[0]["status"] == "True"
    assert is_false(after, "Ready")
    assert not is_true(after, "Ready")
    assert find_condition(after, "Missing") is None


def test_same_inputs_give_equal_output() -> None:
    """An unchanged world must produce an identical status (no patch churn)."""
    once = set_condition([], "Ready", "True", "Up", "m", 1, T0)
    twice = set_condition(once, "Ready", "True", "Up", "m", 1, T1)
    assert once == twice


@pytest.mark.parametrize(("value", "expected"), [(True, "True"), (False, "False"), (None, "Unknown")])
def test_status_of(value: bool | None, expected: str) -> None:
    assert status_of(value) == expected
