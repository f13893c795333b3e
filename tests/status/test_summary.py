"""Ready / Reconciling / Stalled from the other conditions: one table per kind, `now` injected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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


def cond(type_: str, status: ConditionStatus, reason: str, message: str = "") -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=T0)


@pytest.mark.parametrize(
    ("conditions", "state", "reason"),
    [
        pytest.param([], State.RECONCILING, "Pending", id="no-pass-yet"),
        pytest.param(
            [cond("DataValidated", "Unknown", "Validating"), cond("Running", "False", "Validating")],
            State.RECONCILING,
            "Validating",
            id="validating",
        ),
        pytest.param(
            [cond("DataValidated", "True", "DataValid"), cond("Running", "True", "Training")],
            State.RECONCILING,
            "Training",
            id="training",
        ),
        pytest.param(
            [cond("Running", "False", "GangRestart")], State.RECONCILING, "GangRestart", id="gang-restart"
        ),
        pytest.param(
            [cond("Running", "False", "Suspended"), cond("Suspended", "True", "Suspended")],
            State.SUSPENDED,
            "Suspended",
            id="suspended",
        ),
        pytest.param(
            [cond("Running", "False", "Completed"), cond("Succeeded", "True", "Completed")],
            State.READY,
            "Completed",
            id="succeeded",
        ),
        pytest.param(
            [
                cond("Running", "False", "BackoffLimitExceeded"),
                cond("Failed", "True", "BackoffLimitExceeded"),
            ],
            State.STALLED,
            "BackoffLimitExceeded",
            id="backoff-exhausted",
        ),
        pytest.param(
            [cond("Accepted", "False", "InvalidSpec"), cond("Failed", "True", "InvalidSpec")],
            State.STALLED,
            "InvalidSpec",
            id="invalid-spec",
        ),
        pytest.param(
            [cond("DataValidated", "False", "InvalidData"), cond("Failed", "True", "InvalidData")],
            State.STALLED,
            "InvalidData",
            id="invalid-data",
        ),
        pytest.param(
            # The summary's own conditions never feed back into it.
            [cond("Stalled", "True", "InvalidSpec"), cond("Ready", "False", "GateFailed")],
            State.RECONCILING,
            "Pending",
            id="own-conditions-ignored",
        ),
    ],
)
def test_finetunejob_summary(conditions: list[Condition], state: State, reason: str) -> None:
    summary = finetunejob_summary(conditions)
    assert (summary.state, summary.reason) == (state, reason)


SETTLED = [
    cond("Accepted", "True", "Accepted"),
    cond("ModelReady", "True", "ModelResolved"),
    cond("EvalGatePassed", "True", "GatePassed"),
    cond("SmokeTestPassed", "True", "SmokeTestPassed"),
    cond("Available", "True", "MinimumReplicasAvailable", "serving variants available: a"),
    cond("Progressing", "False", "RolloutComplete"),
]


def with_(*changes: Condition, base: list[Condition] = SETTLED) -> list[Condition]:
    by_type = {c.type: c for c in base}
    by_type.update({c.type: c for c in changes})
    return list(by_type.values())


def variant(name: str, *conditions: Condition) -> VariantStatus:
    return VariantStatus(name=name, conditions=list(conditions))


@pytest.mark.parametrize(
    ("conditions", "variants", "state", "reason"),
    [
        pytest.param(SETTLED, [], State.READY, "Reconciled", id="settled"),
        pytest.param(
            with_(cond("Progressing", "True", "RollingOut"), cond("Available", "False", "X")),
            [],
            State.RECONCILING,
            "RollingOut",
            id="deployment-rollout",
        ),
        pytest.param(
            with_(cond("Promoted", "False", "CanaryStep"), cond("CanaryRolledBack", "False", "CanaryStep")),
            [],
            State.RECONCILING,
            "CanaryStep",
            id="canary-at-10-everything-rolled-out",
        ),
        pytest.param(
            with_(
                cond("Promoted", "False", "CanaryPaused"), cond("CanaryRolledBack", "False", "CanaryPaused")
            ),
            [],
            State.RECONCILING,
            "CanaryPaused",
            id="canary-paused-by-spec",
        ),
        pytest.param(
            with_(
                cond("Promoted", "False", "AnalysisFailed"),
                cond("CanaryRolledBack", "False", "AnalysisFailed"),
            ),
            [],
            State.RECONCILING,
            "AnalysisFailed",
            id="analysis-failed-below-the-limit",
        ),
        pytest.param(
            with_(cond("Promoted", "True", "Promoted"), cond("CanaryRolledBack", "False", "Promoted")),
            [],
            State.READY,
            "Reconciled",
            id="promoted",
        ),
        pytest.param(
            with_(
                cond("Promoted", "True", "Promoted"),
                cond("CanaryRolledBack", "False", "Promoted"),
                cond("TrafficShifted", "False", "WaitingForRouters"),
            ),
            [],
            State.RECONCILING,
            "WaitingForRouters",
            id="promoted-old-pods-wait-for-the-routers",
        ),
        pytest.param(
            with_(
                cond("Promoted", "True", "Promoted"),
                cond("CanaryRolledBack", "False", "Promoted"),
                cond("TrafficShifted", "True", "TrafficSettled"),
            ),
            [],
            State.READY,
            "Reconciled",
            id="promoted-traffic-settled",
        ),
        pytest.param(
            with_(
                cond("Promoted", "False", "AnalysisStalled"),
                cond("CanaryRolledBack", "False", "CanaryStep"),
            ),
            [],
            State.STALLED,
            "AnalysisStalled",
            id="canary-paused-for-want-of-a-verdict",
        ),
        pytest.param(
            with_(
                cond("Promoted", "False", "AnalysisFailed"),
                cond("CanaryRolledBack", "True", "AnalysisFailed"),
            ),
            [],
            State.STALLED,
            "AnalysisFailed",
            id="rolled-back-by-analysis",
        ),
        pytest.param(
            with_(
                cond("Promoted", "False", "CanaryAborted"), cond("CanaryRolledBack", "True", "CanaryAborted")
            ),
            [],
            State.STALLED,
            "CanaryAborted",
            id="aborted",
        ),
        pytest.param(
            with_(
                cond("ModelReady", "False", "WaitingForFineTuneJob"),
                cond("Progressing", "True", "RollingOut"),
            ),
            [],
            State.RECONCILING,
            "WaitingForFineTuneJob",
            id="waiting-for-the-model-before-the-rollout",
        ),
        pytest.param(
            with_(cond("EvalGatePassed", "Unknown", "Pending")),
            [],
            State.RECONCILING,
            "Pending",
            id="gate-pending",
        ),
        pytest.param(
            with_(cond("SmokeTestPassed", "Unknown", "Pending")),
            [],
            State.RECONCILING,
            "Pending",
            id="smoke-pending",
        ),
        pytest.param(
            with_(cond("EvalGatePassed", "False", "GateFailed")),
            [],
            State.STALLED,
            "GateFailed",
            id="gate-failed",
        ),
        pytest.param(
            with_(cond("SmokeTestPassed", "False", "SmokeTestFailed")),
            [],
            State.STALLED,
            "SmokeTestFailed",
            id="smoke-failed",
        ),
        pytest.param(
            with_(cond("Accepted", "False", "InvalidSpec")),
            [],
            State.STALLED,
            "InvalidSpec",
            id="invalid-spec",
        ),
        pytest.param(
            # Aggregated first-False reason hides b's gate behind a's wait: the variants are read too.
            with_(cond("EvalGatePassed", "False", "Pending")),
            [variant("a"), variant("b", cond("EvalGatePassed", "False", "GateFailed", "evalLoss 2.5 > 1"))],
            State.STALLED,
            "GateFailed",
            id="gate-failed-on-one-variant",
        ),
        pytest.param(
            SETTLED,
            [variant("a", cond("Progressing", "False", "ProgressDeadlineExceeded"))],
            State.STALLED,
            "ProgressDeadlineExceeded",
            id="deployment-progress-deadline",
        ),
        pytest.param(
            with_(cond("ModelReady", "False", "FineTuneJobNotFound")),
            [],
            State.RECONCILING,
            "FineTuneJobNotFound",
            id="finetunejob-not-created-yet",
        ),
        pytest.param(
            with_(cond("Available", "False", "ErrImagePull")),
            [],
            State.RECONCILING,
            "ErrImagePull",
            id="pods-not-starting-yet",
        ),
    ],
)
def test_modeldeployment_summary(
    conditions: list[Condition], variants: list[VariantStatus], state: State, reason: str
) -> None:
    summary = modeldeployment_summary(ModelDeploymentStatus(conditions=conditions, variants=variants))
    assert (summary.state, summary.reason) == (state, reason)


def test_a_new_blocking_reason_is_one_entry_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetune.status import summary as module

    paused = with_(cond("Promoted", "False", "AnalysisDeadlineExceeded"))
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


SCHEDULED = [
    cond("Accepted", "True", "Accepted"),
    cond("Suspended", "False", "Scheduled", "next run at 2026-01-01T01:00:00Z"),
    cond("Running", "False", "NoActiveRun", "no run is active"),
    cond("LastRunSucceeded", "Unknown", "NoRunsYet", "no run has ended"),
    cond("MissedSchedule", "False", "OnSchedule"),
]


@pytest.mark.parametrize(
    ("conditions", "state", "reason", "in_message"),
    [
        pytest.param([], State.RECONCILING, "Pending", "first pass", id="no-pass-yet"),
        pytest.param(SCHEDULED, State.READY, "Scheduled", "next run at", id="scheduled"),
        pytest.param(
            with_(cond("Running", "True", "RunActive", "run w-1 is active"), base=SCHEDULED),
            State.READY,
            "Scheduled",
            "run w-1 is active",
            id="a-run-training-is-no-rollout",
        ),
        pytest.param(
            with_(
                cond("LastRunSucceeded", "False", "GateFailed", "run w-2 failed the gate: evalLoss worse"),
                base=SCHEDULED,
            ),
            State.READY,
            "Scheduled",
            "last run: run w-2 failed the gate",
            id="gate-failed-is-one-run",
        ),
        pytest.param(
            with_(
                cond("LastRunSucceeded", "False", "BackoffLimitExceeded", "run w-3 failed"), base=SCHEDULED
            ),
            State.READY,
            "Scheduled",
            "run w-3 failed",
            id="failed-run-is-one-run",
        ),
        pytest.param(
            with_(cond("Suspended", "True", "Suspended", "spec.suspend is true"), base=SCHEDULED),
            State.SUSPENDED,
            "Suspended",
            "spec.suspend",
            id="suspended",
        ),
        pytest.param(
            [cond("Accepted", "False", "InvalidSchedule", "spec.schedule: day 30 of month 2 never comes")],
            State.STALLED,
            "InvalidSchedule",
            "spec.schedule",
            id="invalid-schedule",
        ),
        pytest.param(
            [cond("Accepted", "False", "InvalidTimeZone", "spec.timeZone: unknown")],
            State.STALLED,
            "InvalidTimeZone",
            "spec.timeZone",
            id="invalid-time-zone",
        ),
        pytest.param(
            [cond("Accepted", "False", "InvalidSpec", "spec.jobTemplate: bad")],
            State.STALLED,
            "InvalidSpec",
            "spec.jobTemplate",
            id="invalid-spec",
        ),
    ],
)
def test_finetuneschedule_summary(
    conditions: list[Condition], state: State, reason: str, in_message: str
) -> None:
    summary = finetuneschedule_summary(conditions)
    assert (summary.state, summary.reason) == (state, reason)
    assert in_message in summary.message
