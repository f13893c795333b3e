"""Ready, Reconciling and Stalled: one summary of the other conditions, the way GitOps tools read it.

kstatus (Flux's `wait`, `kubectl wait`, cli-utils) reads `Reconciling=True` as in progress and
`Stalled=True` as failed ("abnormal-true": both False when all is well), then `Ready`; Argo CD's and
Flux's health expressions shipped in the chart read the same three. Pure: `now` is injected and
`lastTransitionTime` moves only when a condition's status flips (set_condition).

What counts as blocked for good is a table in kubetune.api.conditions (STALLED_WHEN_TRUE,
STALLED_REASONS), so a new blocking reason is one line there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from kubetune.api.common import Condition
from kubetune.api.conditions import STALLED_REASONS, STALLED_WHEN_TRUE, ConditionType, Reason
from kubetune.api.modeldeployment import ModelDeploymentStatus
from kubetune.status.conditions import find_condition, set_condition
from kubetune.status.pods import clip

SUMMARY_TYPES = frozenset({ConditionType.READY, ConditionType.RECONCILING, ConditionType.STALLED})


class State(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    SUSPENDED = "Suspended"
    """Neither working nor blocked: held by the spec (kstatus has no word for it: Ready=False)."""


@dataclass(frozen=True)
class Summary:
    state: State
    reason: str
    message: str


def blocker(conditions: Iterable[Condition]) -> Condition | None:
    """The first condition that says the object is blocked for good, if any."""
    for condition in conditions:
        if condition.type in SUMMARY_TYPES:
            continue  # the summary's own reasons must not feed it back
        if condition.type in STALLED_WHEN_TRUE and condition.status == "True":
            return condition
        if condition.status == "False" and condition.reason in STALLED_REASONS:
            return condition
    return None


def _stalled(condition: Condition, where: str = "") -> Summary:
    return Summary(State.STALLED, condition.reason, f"{where}{condition.type}: {condition.message}")


def finetunejob_summary(conditions: Sequence[Condition]) -> Summary:
    """Succeeded → Ready; failed (any cause) → Stalled; suspended; anything else is work in progress."""
    blocked = blocker(conditions)
    if blocked is not None:
        return _stalled(blocked)
    succeeded = find_condition(conditions, ConditionType.SUCCEEDED)
    if succeeded is not None and succeeded.status == "True":
        return Summary(State.READY, succeeded.reason, succeeded.message)
    suspended = find_condition(conditions, ConditionType.SUSPENDED)
    if suspended is not None and suspended.status == "True":
        return Summary(State.SUSPENDED, suspended.reason, suspended.message)
    for kind in (ConditionType.RUNNING, ConditionType.DATA_VALIDATED):
        condition = find_condition(conditions, kind)
        if condition is not None:
            return Summary(State.RECONCILING, condition.reason, condition.message)
    return Summary(State.RECONCILING, Reason.PENDING, "waiting for the operator's first pass")


def finetuneschedule_summary(conditions: Sequence[Condition]) -> Summary:
    """Stalled when the spec is invalid; Suspended by spec.suspend; Reconciling before the first pass;
    else Ready, a CronJob's "current": the schedule does its job whatever one run did (a failed run or
    a failed gate is in LastRunSucceeded and the Ready message; the next run is due on its own), and a
    run training for hours must not hold a GitOps sync that waits for health."""
    accepted = find_condition(conditions, ConditionType.ACCEPTED)
    # Only the spec blocks a schedule: a failed run's reason (BackoffLimitExceeded, GateFailed) on
    # LastRunSucceeded is one run's outcome, not the schedule's.
    blocked = blocker([accepted] if accepted is not None else [])
    if blocked is not None:
        return _stalled(blocked)
    if accepted is None:
        return Summary(State.RECONCILING, Reason.PENDING, "waiting for the operator's first pass")
    suspended = find_condition(conditions, ConditionType.SUSPENDED)
    if suspended is not None and suspended.status == "True":
        return Summary(State.SUSPENDED, suspended.reason, suspended.message)
    parts = [c.message for c in (suspended, find_condition(conditions, ConditionType.RUNNING)) if c]
    last = find_condition(conditions, ConditionType.LAST_RUN_SUCCEEDED)
    if last is not None and last.status != "Unknown":
        parts.append(f"last run: {last.message}" if last.message else f"last run: {last.reason}")
    return Summary(State.READY, Reason.SCHEDULED, "; ".join(p for p in parts if p))


def modeldeployment_summary(status: ModelDeploymentStatus) -> Summary:
    """Stalled when any condition (top level or a variant's) blocks for good; Reconciling while a
    Deployment rolls out, a canary is not finished (weight-only adapter canaries included), a model,
    gate or smoke test is pending, or the serving variants are not Available; else Ready."""
    top = status.conditions
    blocked = blocker(top)
    if blocked is not None:
        return _stalled(blocked)
    for variant in status.variants:
        blocked = blocker(variant.conditions)
        if blocked is not None:
            return _stalled(blocked, f"variant {variant.name}: ")
    # The most specific first: a model or gate that holds the variant back, then what moves.
    waiting = _not_true(top, (ConditionType.MODEL_READY, ConditionType.EVAL_GATE_PASSED))
    if waiting is not None:
        return waiting
    progressing = find_condition(top, ConditionType.PROGRESSING)
    if progressing is not None and progressing.status == "True":
        return Summary(State.RECONCILING, progressing.reason, progressing.message)
    promoted = find_condition(top, ConditionType.PROMOTED)
    if promoted is not None and promoted.status != "True":
        return Summary(State.RECONCILING, promoted.reason, f"canary: {promoted.message}")
    shifted = find_condition(top, ConditionType.TRAFFIC_SHIFTED)
    if shifted is not None and shifted.status != "True":  # make-before-break: a move is under way
        return Summary(State.RECONCILING, shifted.reason, f"traffic: {shifted.message}")
    waiting = _not_true(top, (ConditionType.SMOKE_TEST_PASSED, ConditionType.AVAILABLE))
    if waiting is not None:
        return waiting
    available = find_condition(top, ConditionType.AVAILABLE)
    message = available.message if available is not None else ""
    return Summary(State.READY, Reason.RECONCILED, message)


def _not_true(conditions: Sequence[Condition], kinds: Sequence[ConditionType]) -> Summary | None:
    """Reconciling on the first of `kinds` that is missing or not True."""
    for kind in kinds:
        condition = find_condition(conditions, kind)
        if condition is None:
            return Summary(State.RECONCILING, Reason.PENDING, f"{kind} not evaluated yet")
        if condition.status != "True":
            return Summary(State.RECONCILING, condition.reason, f"{kind}: {condition.message}")
    return None


def summary_conditions(
    conditions: Sequence[Condition], summary: Summary, generation: int | None, now: datetime
) -> list[Condition]:
    """`conditions` with Ready, Reconciling and Stalled set from `summary` (the rest untouched).

    The abnormal-true pair stays in the list as False rather than being removed (Flux's own
    controllers delete them): `lastTransitionTime` then says when the last rollout ended.
    """
    message = clip(summary.message)
    result = set_condition(
        conditions,
        ConditionType.READY,
        "True" if summary.state is State.READY else "False",
        summary.reason,
        message,
        generation,
        now,
    )
    abnormal = ((ConditionType.RECONCILING, State.RECONCILING), (ConditionType.STALLED, State.STALLED))
    for kind, state in abnormal:
        result = set_condition(
            result,
            kind,
            "True" if summary.state is state else "False",
            summary.reason,
            message,
            generation,
            now,
        )
    return result
