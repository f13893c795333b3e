"""A pass stopped by a child's name clash: the status says which object is in the way. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubetune.api.conditions import ConditionType, Reason
from kubetune.status.conditions import parse_conditions, set_condition


def with_name_conflict(
    status: Mapping[str, Any], message: str, generation: int | None, now: datetime
) -> dict[str, Any]:
    """`status` with Accepted=False, reason NameConflict: nothing else the pass computed is claimed."""
    conditions = set_condition(
        parse_conditions(status.get("conditions")),
        ConditionType.ACCEPTED,
        "False",
        Reason.NAME_CONFLICT,
        message,
        generation,
        now,
    )
    return {
        **status,
        "conditions": [c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in conditions],
    }
