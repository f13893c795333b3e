"""The canary state machine, driven step by step with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubetune.analysis.evaluator import AnalysisOutcome, Verdict
from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import (
    AnalysisResult,
    Canary,
    CanaryAnalysis,
    CanaryStatus,
    ModelSource,
    Variant,
)
from kubetune.planning.canary import CanaryOutcome, CanaryPlan, duration_seconds, plan_canary
from kubetune.planning.canary_report import canary_events

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ANALYSIS = CanaryAnalysis(prometheus_url="http://prom:9090", min_requests=10)


def variant(name: str, replicas: int) -> Variant:
    return Variant(name=name, model=ModelSource(uri="org/model"), replicas=replicas)


def canary(**overrides: object) -> Canary:
    base: dict[str, object] = {
        "stable_variant": "stable",
        "canary_variant": "canary",
        "steps": [10, 25, 50, 100],
        "interval": "1m",
        "failure_limit": 2,
        "max_surge": 1,
        "analysis": ANALYSIS,
    }
    return Canary.model_validate({**base, **overrides})


def outcome(verdict: Verdict, metric: str = "errorRate", value: float = 0.0) -> AnalysisOutcome:
    result = AnalysisResult(
        metric=metric,
        query=f"q_{metric}",
        value=value,
        threshold=0.01,
        samples=100,
        passed=verdict is not Verdict.FAILED,
    )
    return AnalysisOutcome(verdict, (result,))


def step(
    spec: Canary,
    status: CanaryStatus | None,
    now: datetime,
    verdict: Verdict | None = None,
    ready: int = 10,
    replicas: tuple[int, int] = (4, 4),
    shared: bool = False,
) -> CanaryPlan:
    args = dict(
        now=now,
        canary_ready_replicas=ready,
        shared_base=shared,
    )
    stable, cand = variant("stable", replicas[0]), variant("canary", replicas[1])
    plan = plan_canary(spec, stable, cand, status, **args)  # type: ignore[arg-type]
    if plan.analysis_due and verdict is not None:
        plan = plan_canary(spec, stable, cand, status, analysis=outcome(verdict), **args)  # type: ignore[arg-type]
    if _moved(plan):
        # The routers serve a new step at once here (their lag has tests of its own below).
        plan = plan_canary(spec, stable, cand, plan.status, **args)  # type: ignore[arg-type]
    return plan


def _moved(plan: CanaryPlan) -> bool:
    """The plan applies a step's weight that no router serves yet."""
    st = plan.status
    return plan.outcome is CanaryOutcome.PROGRESSING and st.weight > 0 and st.step_served_at is None


@pytest.mark.parametrize(
    ("text", "seconds"), [("5m", 300), ("90s", 90), ("1h30m", 5400), ("1.5s", 1.5), ("250ms", 0.25)]
)
def test_duration_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


def test_healthy_canary_promotes_through_every_step() -> None:
    spec = canary()
    plan = step(spec, None, T0)
    seen = [plan.status.weight]
    now = T0
    while plan.outcome is CanaryOutcome.PROGRESSING:
        now += timedelta(minutes=1)
        plan = step(spec, plan.status, now, Verdict.PASSED)
        seen.append(plan.status.weight)
    assert seen == [10, 25, 50, 100]
    assert plan.outcome is CanaryOutcome.PROMOTED
    assert plan.reason is Reason.PROMOTED
    assert plan.weights == {"stable": 0, "canary": 100}
    assert plan.replicas == {"stable": 0, "canary": 4}


def test_analysis_waits_for_the_interval() -> None:
    spec = canary()
    started = step(spec, None, T0)
    early = step(spec, started.status, T0 + timedelta(seconds=30), Verdict.FAILED)
    assert not early.analysis_due
    assert early.status == started.status
    assert early.requeue_after_s == 30
    due = step(spec, started.status, T0 + timedelta(seconds=61))
    assert due.analysis_due
    assert due.analysis_window_s == 61


def test_failing_canary_rolls_back_after_failure_limit_with_query_and_value() -> None:
    spec = canary()
    plan = step(spec, None, T0)
    plan = step(spec, plan.status, T0 + timedelta(minutes=1), Verdict.FAILED)
    assert plan.outcome is CanaryOutcome.PROGRESSING
    assert (plan.status.failures, plan.weights["canary"]) == (1, 10)
    plan = plan_canary(
        spec,
        variant("stable", 4),
        variant("canary", 4),
        plan.status,
        now=T0 + timedelta(minutes=2),
        canary_ready_replicas=1,
        analysis=outcome(Verdict.FAILED, value=0.2),
    )
    assert plan.outcome is CanaryOutcome.ROLLED_BACK
    assert plan.reason is Reason.ANALYSIS_FAILED
    assert plan.weights == {"stable": 100, "canary": 0}
    assert plan.replicas == {"stable": 4, "canary": 0}
    assert "errorRate=0.2 > 0.01" in plan.message
    assert "q_errorRate" in plan.message
    # Terminal: later passes keep it rolled back.
    later = step(spec, plan.status, T0 + timedelta(hours=1), Verdict.PASSED)
    assert later.outcome is CanaryOutcome.ROLLED_BACK
    assert later.weights == {"stable": 100, "canary": 0}


def test_a_pass_resets_the_failure_count() -> None:
    spec = canary()
    plan = step(spec, None, T0)
    plan = step(spec, plan.status, T0 + timedelta(minutes=1), Verdict.FAILED)
    plan = step(spec, plan.status, T0 + timedelta(minutes=2), Verdict.PASSED)
    assert (plan.status.failures, plan.weights["canary"]) == (0, 25)


def test_too_few_samples_neither_passes_nor_fails() -> None:
    spec = canary()
    plan = step(spec, None, T0)
    plan = step(spec, plan.status, T0 + timedelta(minutes=1), Verdict.INCONCLUSIVE)
    assert plan.outcome is CanaryOutcome.PROGRESSING
    assert (plan.status.failures, plan.weights["canary"], plan.status.analyzed_at) == (
        0,
        10,
        T0 + timedelta(minutes=1),
    )


def test_pause_holds_the_weight() -> None:
    plan = step(canary(), None, T0)
    paused = step(canary(pause=True), plan.status, T0 + timedelta(hours=1), Verdict.PASSED)
    assert paused.outcome is CanaryOutcome.PAUSED
    assert paused.reason is Reason.CANARY_PAUSED
    assert paused.weights == {"stable": 90, "canary": 10}
    assert not paused.analysis_due


def test_abort_rolls_back_at_once_and_clearing_it_starts_over() -> None:
    plan = step(canary(), None, T0)
    plan = step(canary(), plan.status, T0 + timedelta(minutes=1), Verdict.PASSED)
    assert plan.weights == {"stable": 75, "canary": 25}
    aborted = step(canary(abort=True), plan.status, T0 + timedelta(minutes=2), Verdict.PASSED)
    assert aborted.outcome is CanaryOutcome.ROLLED_BACK
    assert aborted.reason is Reason.CANARY_ABORTED
    assert aborted.weights == {"stable": 100, "canary": 0}
    assert aborted.replicas == {"stable": 4, "canary": 0}
    assert not aborted.analysis_due
    assert "spec.traffic.canary.abort" in aborted.message
    # Still aborted on later passes, then retried from the first step once the flag is cleared.
    again = step(canary(abort=True), aborted.status, T0 + timedelta(minutes=3), Verdict.PASSED)
    assert again.weights == {"stable": 100, "canary": 0}
    retried = step(canary(), again.status, T0 + timedelta(minutes=4))
    assert retried.outcome is CanaryOutcome.PROGRESSING
    assert (retried.status.step, retried.weights["canary"]) == (1, 10)


def test_abort_event_names_the_reason() -> None:
    before = step(canary(), None, T0).status
    aborted = step(canary(abort=True), before, T0 + timedelta(minutes=1))
    (event,) = canary_events(aborted, before, "canary")
    assert (event.type, event.reason) == ("Warning", Reason.CANARY_ABORTED)
    assert canary_events(step(canary(abort=True), aborted.status, T0), aborted.status, "canary") == []


def test_time_based_canary_without_analysis() -> None:
    spec = canary(analysis=None, steps=[50, 100])
    plan = step(spec, None, T0)
    plan = step(spec, plan.status, T0 + timedelta(minutes=1))
    assert plan.outcome is CanaryOutcome.PROMOTED


def test_weight_waits_for_canary_pods() -> None:
    spec = canary()
    plan = step(spec, None, T0, ready=0)
    assert plan.weights == {"stable": 100, "canary": 0}
    assert plan.replicas == {"stable": 4, "canary": 1}
    assert "waiting for 1 ready canary replicas" in plan.message
    plan = step(spec, plan.status, T0 + timedelta(seconds=10), ready=1)
    assert plan.weights == {"stable": 90, "canary": 10}


@pytest.mark.parametrize(
    ("replicas", "max_surge", "expected"),
    [
        # weight 10 -> 25 -> 50 -> 100, replicas {stable, canary} while each step's weight applies
        ((4, 4), 1, [(4, 1), (3, 1), (2, 2), (0, 4)]),
        ((4, 4), 0, [(3, 1), (3, 1), (2, 2), (0, 4)]),
        ((10, 10), 2, [(9, 1), (8, 3), (5, 5), (0, 10)]),
        ((2, 1), 1, [(2, 1), (2, 1), (1, 1), (0, 1)]),
    ],
)
def test_gpu_footprint_moves_with_weight_within_max_surge(
    replicas: tuple[int, int], max_surge: int, expected: list[tuple[int, int]]
) -> None:
    spec = canary(max_surge=max_surge)
    bound = max(replicas) + max_surge
    plan = step(spec, None, T0, replicas=replicas)
    now = T0
    seen = []
    while True:
        sizes = (plan.replicas["stable"], plan.replicas["canary"])
        assert sum(sizes) <= bound
        seen.append(sizes)
        if plan.outcome is not CanaryOutcome.PROGRESSING:
            break
        now += timedelta(minutes=1)
        plan = step(spec, plan.status, now, Verdict.PASSED, replicas=replicas)
    assert seen == expected


def test_shared_base_adapters_move_weight_only() -> None:
    spec = canary()
    # Until one pod of the shared base is ready (and its smoke test passed), no weight moves.
    waiting = step(spec, None, T0, ready=0, shared=True, replicas=(3, 3))
    assert waiting.weights == {"stable": 100, "canary": 0}
    assert waiting.replicas == {"stable": 3, "canary": 3}
    plan = step(spec, None, T0, ready=1, shared=True, replicas=(3, 3))
    assert plan.weights == {"stable": 90, "canary": 10}
    assert plan.replicas == {"stable": 3, "canary": 3}
    now = T0
    while plan.outcome is CanaryOutcome.PROGRESSING:
        now += timedelta(minutes=1)
        plan = step(spec, plan.status, now, Verdict.PASSED, ready=1, shared=True, replicas=(3, 3))
        assert plan.replicas == {"stable": 3, "canary": 3}
    assert plan.outcome is CanaryOutcome.PROMOTED


# --- analysis deadline: no verdict for noVerdictLimit intervals pauses the canary ------------------


def _no_verdict_run(sequence: list[str | Verdict], limit: int = 3) -> list[CanaryPlan]:
    """At 10%, one analysis per interval: an error text (Prometheus away) or a verdict, in order."""
    spec = canary(analysis=ANALYSIS.model_copy(update={"no_verdict_limit": limit}))
    stable, cand = variant("stable", 4), variant("canary", 4)
    status = CanaryStatus(step=1, weight=10, step_started_at=T0, step_served_at=T0)
    plans = []
    for i, item in enumerate(sequence, start=1):
        now = T0 + timedelta(minutes=i)
        due = plan_canary(spec, stable, cand, status, now=now, canary_ready_replicas=4)
        assert due.analysis_due, due.message
        if isinstance(item, Verdict):
            result = AnalysisResult(
                metric="requests" if item is Verdict.INCONCLUSIVE else "errorRate",
                query="q",
                value=0.0,
                threshold=10.0,
                samples=0 if item is Verdict.INCONCLUSIVE else 100,
                passed=item is Verdict.PASSED,
            )
            plan = plan_canary(
                spec,
                stable,
                cand,
                status,
                now=now,
                canary_ready_replicas=4,
                analysis=AnalysisOutcome(item, (result,)),
            )
        else:
            plan = plan_canary(
                spec, stable, cand, status, now=now, canary_ready_replicas=4, analysis_error=item
            )
        plans.append(plan)
        status = plan.status
    return plans


ERR = "http://prom:9090/api/v1/query: ClientConnectorError(...)"


@pytest.mark.parametrize(
    ("sequence", "limit", "outcomes", "no_verdict"),
    [
        # Prometheus unreachable three intervals in a row: paused at the third, weight held.
        ([ERR, ERR, ERR], 3, ["Progressing", "Progressing", "Paused"], [1, 2, 3]),
        # No data counts like an unreachable Prometheus.
        (
            [Verdict.INCONCLUSIVE, ERR, Verdict.INCONCLUSIVE],
            3,
            ["Progressing", "Progressing", "Paused"],
            [1, 2, 3],
        ),
        # A verdict in between resets the count (a pass moves on to the next step).
        ([ERR, ERR, Verdict.PASSED], 3, ["Progressing", "Progressing", "Progressing"], [1, 2, 0]),
        # A paused canary resumes on the next verdict.
        ([ERR, Verdict.PASSED], 1, ["Paused", "Progressing"], [1, 0]),
        # A failure is a verdict: counted as a failure, not as a missing verdict.
        ([ERR, Verdict.FAILED], 3, ["Progressing", "Progressing"], [1, 0]),
    ],
)
def test_no_verdict_pauses_after_the_limit(
    sequence: list[str | Verdict], limit: int, outcomes: list[str], no_verdict: list[int]
) -> None:
    plans = _no_verdict_run(sequence, limit)
    assert [p.outcome.value for p in plans] == outcomes
    assert [p.status.no_verdict for p in plans] == no_verdict
    for plan in plans:
        if plan.outcome is CanaryOutcome.PAUSED:
            assert plan.reason is Reason.ANALYSIS_STALLED
            assert plan.weights == {"stable": 90, "canary": 10}, "a stalled canary neither promotes nor drops"
            assert "no analysis verdict" in plan.message


def test_stalled_message_names_the_cause_and_holds_between_tries() -> None:
    (plan,) = _no_verdict_run([ERR], limit=1)
    assert ERR in plan.message
    assert plan.status.no_verdict_cause is not None
    assert ERR in plan.status.no_verdict_cause
    # Between two tries the canary stays paused (no flapping back to Progressing) and names the cause.
    spec = canary(analysis=ANALYSIS.model_copy(update={"no_verdict_limit": 1}))
    later = plan_canary(
        spec,
        variant("stable", 4),
        variant("canary", 4),
        plan.status,
        now=T0 + timedelta(minutes=1, seconds=20),
        canary_ready_replicas=4,
    )
    assert later.outcome is CanaryOutcome.PAUSED
    assert later.reason is Reason.ANALYSIS_STALLED
    assert ERR in later.message
    assert "next try in 40s" in later.message
    assert later.requeue_after_s == pytest.approx(40)


def test_stalled_canary_warns_with_an_event() -> None:
    first, second = _no_verdict_run([ERR, ERR], limit=2)
    assert not [
        e for e in canary_events(first, CanaryStatus(step=1, weight=10), "canary") if e.type == "Warning"
    ]
    warnings = [e for e in canary_events(second, first.status, "canary") if e.type == "Warning"]
    assert [e.reason for e in warnings] == [Reason.ANALYSIS_STALLED]
    assert ERR in warnings[0].message


def _routers(
    status: CanaryStatus | None, now: datetime, serving: bool, verdict: Verdict | None = None
) -> CanaryPlan:
    """One pass with the routers' answer: do they all serve the step's split yet?"""
    spec, stable, cand = canary(), variant("stable", 4), variant("canary", 4)
    args: dict[str, object] = {"now": now, "canary_ready_replicas": 4, "routers_serving": serving}
    plan = plan_canary(spec, stable, cand, status, **args)  # type: ignore[arg-type]
    if plan.analysis_due and verdict is not None:
        plan = plan_canary(spec, stable, cand, status, analysis=outcome(verdict), **args)  # type: ignore[arg-type]
    return plan


def test_the_interval_starts_once_every_router_serves_the_step() -> None:
    moved = _routers(None, T0, serving=False)
    assert (moved.status.weight, moved.status.step_served_at) == (10, None)
    assert moved.requeue_after_s == 3.0
    # Two intervals later the routers still answer from the previous split: nothing is judged, however
    # bad the numbers (they are the previous split's).
    held = _routers(moved.status, T0 + timedelta(minutes=2), serving=False, verdict=Verdict.FAILED)
    assert not held.analysis_due
    assert (held.status.failures, held.status.step_served_at) == (0, None)
    assert "once every router serves it" in held.message
    assert held.requeue_after_s == 3.0
    served_at = T0 + timedelta(minutes=2, seconds=30)
    served = _routers(held.status, served_at, serving=True)
    assert served.status.step_served_at == served_at
    assert not served.analysis_due
    assert served.requeue_after_s == 60
    # From then on the routers' answer no longer matters: the step's split is served.
    due = _routers(served.status, served_at + timedelta(seconds=61), serving=False)
    assert due.analysis_due
    assert due.analysis_window_s == 61
    # A passed analysis moves to the next step, which waits for the routers again.
    nxt = _routers(served.status, served_at + timedelta(seconds=61), serving=True, verdict=Verdict.PASSED)
    assert (nxt.status.step, nxt.status.weight, nxt.status.step_served_at) == (2, 25, None)
