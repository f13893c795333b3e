"""A pass that stopped on a child's name clash (`NameConflict`): what it reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubetune.api.conditions import ConditionType, Reason
from kubetune.planning.plan import Event, Outcome
from kubetune.reconcile.apply import NameConflict
from kubetune.status.conditions import find_condition
from kubetune.status.conflict import with_name_conflict


def name_conflict_outcome(
    obj: dict[str, Any], status: dict[str, Any], conflict: NameConflict, now: datetime
) -> Outcome:
    """The pass's status with Accepted=False/NameConflict; a Warning Event only when it first happens."""
    previous = find_condition((obj.get("status") or {}).get("conditions") or [], ConditionType.ACCEPTED)
    repeated = previous is not None and previous.reason == Reason.NAME_CONFLICT
    events = [] if repeated else [Event("Warning", Reason.NAME_CONFLICT, str(conflict))]
    return Outcome(
        status=with_name_conflict(status, str(conflict), obj["metadata"].get("generation"), now),
        events=events,
    )
