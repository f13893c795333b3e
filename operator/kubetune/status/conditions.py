"""Kubernetes condition lists with transition semantics. Pure: `now` is always injected.

`lastTransitionTime` moves only when a condition's `status` flips; a new reason or message on the
same status updates those fields in place, so a reconcile pass that changes nothing writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from kubetune.api.common import Condition, ConditionStatus

ConditionLike = Condition | Mapping[str, Any]


def _as_condition(item: ConditionLike) -> Condition:
    return item if isinstance(item, Condition) else Condition.model_validate(item)


def parse_conditions(items: Iterable[ConditionLike] | None) -> list[Condition]:
    """Conditions as read from an object's status (dicts) or already parsed."""
    return [_as_condition(item) for item in items or ()]


def status_of(value: bool | None) -> ConditionStatus:
    """True/False/None → "True"/"False"/"Unknown"."""
    if value is None:
        return "Unknown"
    return "True" if value else "False"


def set_condition(
    conditions: Sequence[ConditionLike],
    type: str | StrEnum,
    status: ConditionStatus,
    reason: str | StrEnum,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """A new list with condition `type` set; the input is left untouched.

    Order is preserved (a new type is appended) so that the written status diffs minimally.
    """
    type_text, reason_text = str(type), str(reason)
    result: list[Condition] = []
    found = False
    for item in conditions:
        current = _as_condition(item)
        if current.type != type_text:
            result.append(current)
            continue
        found = True
        transition = current.last_transition_time if current.status == status else now
        result.append(
            Condition(
                type=type_text,
                status=status,
                reason=reason_text,
                message=message,
                last_transition_time=transition,
                observed_generation=generation,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type_text,
                status=status,
                reason=reason_text,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return result


def find_condition(conditions: Iterable[ConditionLike], type: str | StrEnum) -> Condition | None:
    for item in conditions:
        condition = _as_condition(item)
        if condition.type == str(type):
            return condition
    return None


def is_true(conditions: Iterable[ConditionLike], type: str | StrEnum) -> bool:
    condition = find_condition(conditions, type)
    return condition is not None and condition.status == "True"


def is_false(conditions: Iterable[ConditionLike], type: str | StrEnum) -> bool:
    condition = find_condition(conditions, type)
    return condition is not None and condition.status == "False"
