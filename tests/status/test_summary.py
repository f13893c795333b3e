"""Ready / Reconciling / Stalled from the other conditions: one table per kind, `now` injected."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from _pytest.mark import ParameterSet

from kubetune.api.common import Condition, ConditionStatus
from kubetune.api.modeldeployment import ModelDeploymentStatus, VariantStatus
from kubetune.status.conditions import find_condition
from kubetune.status.summary import (
    State,
    Summary,
    finetunejob_summary,
    finetuneschedule_summary,
    modeldeployment_summary,
    summary_conditions,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
READY, RECONCILING, STALLED, SUSPENDED = State.READY, State.RECONCILING, State.STALLED, State.SUSPENDED


def cond(type_: str, status: ConditionStatus, reason: str, message: str = "") -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=T0)


def conds(*specs: str, base: Sequence[Condition] = ()) -> list[Condition]:
    """`base` with each `"Type=Status:Reason[:message]"` put in (a type already there is replaced in place).

    One string a condition keeps a row of the tables below to its facts.
    """
    by_type = {c.type: c for c in base}
    for spec in specs:
        type_, _, rest = spec.partition("=")
        status, reason, *message = rest.split(":", 2)  # the message may hold colons
        by_type[type_] = cond(type_, cast(ConditionStatus, status), reason, *message)
    return list(by_type.values())


def job(id_: str, state: State, reason: str, *specs: str) -> ParameterSet:
    return pytest.param(conds(*specs), state, reason, id=id_)


@pytest.mark.parametrize(
    ("conditions", "state", "reason"),
    [
        job("no-pass-yet", RECONCILING, "Pending"),
        job(
            "validating",
            RECONCILING,
            "Validating",
            "DataValidated=Unknown:Validating",
            "Running=False:Validating",
        ),
        job("training", RECONCILING, "Training", "DataValidated=True:DataValid", "Running=True:Training"),
        job("gang-restart", RECONCILING, "GangRestart", "Running=False:GangRestart"),
        job("suspended", SUSPENDED, "Suspended", "Running=False:Suspended", "Suspended=True:Suspended"),
        job("succeeded", READY, "Completed", "Running=False:Completed", "Succeeded=True:Completed"),
        job(
            "backoff-exhausted",
            STALLED,
            "BackoffLimitExceeded",
            "Running=False:BackoffLimitExceeded",
            "Failed=True:BackoffLimitExceeded",
        ),
        job("invalid-spec", STALLED, "InvalidSpec", "Accepted=False:InvalidSpec", "Failed=True:InvalidSpec"),
        job(
            "invalid-data",
            STALLED,
            "InvalidData",
            "DataValidated=False:InvalidData",
            "Failed=True:InvalidData",
        ),
        # The summary's own conditions never feed back into it.
        job(
            "own-conditions-ignored",
            RECONCILING,
            "Pending",
            "Stalled=True:InvalidSpec",
            "Ready=False:GateFailed",
        ),
    ],
)
def test_finetunejob_summary(conditions: list[Condition], state: State, reason: str) -> None:
    summary = finetunejob_summary(conditions)
    assert (summary.state, summary.reason) == (state, reason)


SETTLED = conds(
    "Accepted=True:Accepted",
    "ModelReady=True:ModelResolved",
    "EvalGatePassed=True:GatePassed",
    "SmokeTestPassed=True:SmokeTestPassed",
    "Available=True:MinimumReplicasAvailable:serving variants available: a",
    "Progressing=False:RolloutComplete",
)


def variant(name: str, *specs: str) -> VariantStatus:
    return VariantStatus(name=name, conditions=conds(*specs))


def deployment(
    id_: str, state: State, reason: str, *specs: str, variants: Sequence[VariantStatus] = ()
) -> ParameterSet:
    """A row: SETTLED with `specs` put in."""
    return pytest.param(conds(*specs, base=SETTLED), list(variants), state, reason, id=id_)


def canary(promoted: str, rolled_back: str) -> tuple[str, str]:
    """The canary's two conditions, Promoted and CanaryRolledBack, each given as "Status:Reason"."""
    return f"Promoted={promoted}", f"CanaryRolledBack={rolled_back}"


@pytest.mark.parametrize(
    ("conditions", "variants", "state", "reason"),
    [
        deployment("settled", READY, "Reconciled"),
        deployment(
            "deployment-rollout",
            RECONCILING,
            "RollingOut",
            "Progressing=True:RollingOut",
            "Available=False:X",
        ),
        deployment(
            "canary-at-10-everything-rolled-out",
            RECONCILING,
            "CanaryStep",
            *canary("False:CanaryStep", "False:CanaryStep"),
        ),
        deployment(
            "canary-paused-by-spec",
            RECONCILING,
            "CanaryPaused",
            *canary("False:CanaryPaused", "False:CanaryPaused"),
        ),
        deployment(
            "analysis-failed-below-the-limit",
            RECONCILING,
            "AnalysisFailed",
            *canary("False:AnalysisFailed", "False:AnalysisFailed"),
        ),
        deployment("promoted", READY, "Reconciled", *canary("True:Promoted", "False:Promoted")),
        deployment(
            "promoted-old-pods-wait-for-the-routers",
            RECONCILING,
            "WaitingForRouters",
            *canary("True:Promoted", "False:Promoted"),
            "TrafficShifted=False:WaitingForRouters",
        ),
        deployment(
            "promoted-traffic-settled",
            READY,
            "Reconciled",
            *canary("True:Promoted", "False:Promoted"),
            "TrafficShifted=True:TrafficSettled",
        ),
        deployment(
            "canary-paused-for-want-of-a-verdict",
            STALLED,
            "AnalysisStalled",
            *canary("False:AnalysisStalled", "False:CanaryStep"),
        ),
        deployment(
            "rolled-back-by-analysis",
            STALLED,
            "AnalysisFailed",
            *canary("False:AnalysisFailed", "True:AnalysisFailed"),
        ),
        deployment("aborted", STALLED, "CanaryAborted", *canary("False:CanaryAborted", "True:CanaryAborted")),
        deployment(
            "waiting-for-the-model-before-the-rollout",
            RECONCILING,
            "WaitingForFineTuneJob",
            "ModelReady=False:WaitingForFineTuneJob",
            "Progressing=True:RollingOut",
        ),
        deployment("gate-pending", RECONCILING, "Pending", "EvalGatePassed=Unknown:Pending"),
        deployment("smoke-pending", RECONCILING, "Pending", "SmokeTestPassed=Unknown:Pending"),
        deployment("gate-failed", STALLED, "GateFailed", "EvalGatePassed=False:GateFailed"),
        deployment("smoke-failed", STALLED, "SmokeTestFailed", "SmokeTestPassed=False:SmokeTestFailed"),
        deployment("invalid-spec", STALLED, "InvalidSpec", "Accepted=False:InvalidSpec"),
        # Aggregated first-False reason hides b's gate behind a's wait: the variants are read too.
        deployment(
            "gate-failed-on-one-variant",
            STALLED,
            "GateFailed",
            "EvalGatePassed=False:Pending",
            variants=[variant("a"), variant("b", "EvalGatePassed=False:GateFailed:evalLoss 2.5 > 1")],
        ),
        deployment(
            "deployment-progress-deadline",
            STALLED,
            "ProgressDeadlineExceeded",
            variants=[variant("a", "Progressing=False:ProgressDeadlineExceeded")],
        ),
        deployment(
            "finetunejob-not-created-yet",
            RECONCILING,
            "FineTuneJobNotFound",
            "ModelReady=False:FineTuneJobNotFound",
        ),
        deployment("pods-not-starting-yet", RECONCILING, "ErrImagePull", "Available=False:ErrImagePull"),
    ],
)
def test_modeldeployment_summary(
    conditions: list[Condition], variants: list[VariantStatus], state: State, reason: str
) -> None:
    summary = modeldeployment_summary(ModelDeploymentStatus(conditions=conditions, variants=variants))
    assert (summary.state, summary.reason) == (state, reason)


def test_a_new_blocking_reason_is_one_entry_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetune.status import summary as module

    paused = conds("Promoted=False:AnalysisDeadlineExceeded", base=SETTLED)
    status = ModelDeploymentStatus(conditions=paused)
    assert modeldeployment_summary(status).state is State.RECONCILING
    monkeypatch.setattr(module, "STALLED_REASONS", module.STALLED_REASONS | {"AnalysisDeadlineExceeded"})
    assert modeldeployment_summary(status).state is State.STALLED


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        (Summary(State.READY, "Reconciled", "ok"), ("True", "False", "False")),
        (Summary(State.RECONCILING, "CanaryStep", "10%"), ("False", "True", "False")),
        (Summary(State.STALLED, "GateFailed", "no"), ("False", "False", "True")),
        (Summary(State.SUSPENDED, "Suspended", "held"), ("False", "False", "False")),
    ],
)
def test_summary_conditions_set_the_three(summary: Summary, expected: tuple[str, str, str]) -> None:
    result = summary_conditions([cond("Available", "True", "X")], summary, 7, T0)
    got = tuple(find_condition(result, t) for t in ("Ready", "Reconciling", "Stalled"))
    assert tuple(c.status for c in got if c) == expected
    assert all(c is not None and c.observed_generation == 7 and c.reason == summary.reason for c in got)
    assert find_condition(result, "Available") == cond("Available", "True", "X"), "others untouched"


def test_last_transition_time_moves_only_on_a_flip() -> None:
    later, last = T0 + timedelta(minutes=5), T0 + timedelta(minutes=9)
    first = summary_conditions([], Summary(State.RECONCILING, "CanaryStep", "step 1"), 1, T0)
    same = summary_conditions(first, Summary(State.RECONCILING, "CanaryStep", "step 2"), 2, later)
    done = summary_conditions(same, Summary(State.READY, "Reconciled", "ok"), 2, last)

    def times(conditions: list[Condition]) -> tuple[datetime, ...]:
        return tuple(
            find_condition(conditions, t).last_transition_time for t in ("Ready", "Reconciling", "Stalled")
        )  # type: ignore[union-attr]

    assert times(same) == (T0, T0, T0), "a new message is no transition"
    assert find_condition(same, "Reconciling").observed_generation == 2  # type: ignore[union-attr]
    assert times(done) == (last, last, T0), "Ready and Reconciling flipped, Stalled stayed False"


SCHEDULED = conds(
    "Accepted=True:Accepted",
    "Suspended=False:Scheduled:next run at 2026-01-01T01:00:00Z",
    "Running=False:NoActiveRun:no run is active",
    "LastRunSucceeded=Unknown:NoRunsYet:no run has ended",
    "MissedSchedule=False:OnSchedule",
)


def schedule(
    id_: str, state: State, reason: str, in_message: str, *specs: str, base: Sequence[Condition] = SCHEDULED
) -> ParameterSet:
    return pytest.param(conds(*specs, base=base), state, reason, in_message, id=id_)


@pytest.mark.parametrize(
    ("conditions", "state", "reason", "in_message"),
    [
        schedule("no-pass-yet", RECONCILING, "Pending", "first pass", base=()),
        schedule("scheduled", READY, "Scheduled", "next run at"),
        schedule(
            "a-run-training-is-no-rollout",
            READY,
            "Scheduled",
            "run w-1 is active",
            "Running=True:RunActive:run w-1 is active",
        ),
        schedule(
            "gate-failed-is-one-run",
            READY,
            "Scheduled",
            "last run: run w-2 failed the gate",
            "LastRunSucceeded=False:GateFailed:run w-2 failed the gate: evalLoss worse",
        ),
        schedule(
            "failed-run-is-one-run",
            READY,
            "Scheduled",
            "run w-3 failed",
            "LastRunSucceeded=False:BackoffLimitExceeded:run w-3 failed",
        ),
        schedule(
            "suspended",
            SUSPENDED,
            "Suspended",
            "spec.suspend",
            "Suspended=True:Suspended:spec.suspend is true",
        ),
        schedule(
            "invalid-schedule",
            STALLED,
            "InvalidSchedule",
            "spec.schedule",
            "Accepted=False:InvalidSchedule:spec.schedule: day 30 of month 2 never comes",
            base=(),
        ),
        schedule(
            "invalid-time-zone",
            STALLED,
            "InvalidTimeZone",
            "spec.timeZone",
            "Accepted=False:InvalidTimeZone:spec.timeZone: unknown",
            base=(),
        ),
        schedule(
            "invalid-spec",
            STALLED,
            "InvalidSpec",
            "spec.jobTemplate",
            "Accepted=False:InvalidSpec:spec.jobTemplate: bad",
            base=(),
        ),
    ],
)
def test_finetuneschedule_summary(
    conditions: list[Condition], state: State, reason: str, in_message: str
) -> None:
    summary = finetuneschedule_summary(conditions)
    assert (summary.state, summary.reason) == (state, reason)
    assert in_message in summary.message
