"""The canary state machine: PURE (spec, status, analysis, now) -> next status, weights and replicas.

The operator calls `plan_canary` on every reconcile. When the plan says `analysis_due`, it runs the analysis
(kubetune.analysis.run.analyze over `analysis_window_s`) and calls again with the outcome. It applies
`weights` to the router config (or HTTPRoute) and `replicas` to the variants' Deployments.

GPU footprint: the canary gets pods in proportion to the weight it is about to take, the stable variant keeps
pods in proportion to the weight it still has, and their sum never exceeds the larger variant's size plus
`maxSurge` (Argo Rollouts' canary keeps the stable set whole, doubling GPUs). Variants that are LoRA adapters
on one shared base change weight only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from kubetune.analysis.evaluator import AnalysisOutcome, Verdict
from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import AnalysisResult, Canary, CanaryStatus, Variant

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
CAPACITY_RECHECK_S = 10.0
"""How soon to look again while waiting for canary pods to become ready."""
ROUTER_RECHECK_S = 3.0
"""How soon to ask the routers again while they have not loaded a step's split (a kubelet volume sync)."""


def duration_seconds(text: str) -> float:
    """`1h30m`, `90s`, `1.5m`, `500ms` -> seconds (the API's DURATION_PATTERN)."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


class CanaryOutcome(StrEnum):
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"


@dataclass(frozen=True)
class CanaryPlan:
    status: CanaryStatus
    weights: dict[str, int]
    """Router weights to apply now, stable and canary."""
    replicas: dict[str, int]
    """Deployment replicas per variant."""
    outcome: CanaryOutcome
    reason: Reason
    message: str
    analysis_due: bool = False
    """Run the analysis over `analysis_window_s` and call plan_canary again with its outcome."""
    analysis_window_s: float = 0.0
    requeue_after_s: float | None = None
    """When the next decision is due, if nothing else changes."""


def describe_failures(results: list[AnalysisResult]) -> str:
    """`errorRate=0.2 > 0.01 over 120 requests (query: ...)`, for conditions and Events."""
    parts = []
    for r in results:
        if r.passed:
            continue
        value = "no finite value" if r.value is None else f"{r.value:.4g}"
        threshold = "?" if r.threshold is None else f"{r.threshold:.4g}"
        parts.append(f"{r.metric}={value} > {threshold} over {r.samples} requests (query: {r.query})")
    return "; ".join(parts)


def _need(replicas: int, weight: int) -> int:
    """Pods for `weight` percent of a variant sized `replicas` at 100%; one at least while it has any."""
    if replicas == 0 or weight == 0:
        return 0
    return min(replicas, max(1, math.ceil(replicas * weight / 100)))


@dataclass(frozen=True)
class _Sizing:
    canary: int
    stable: int


def _size(canary_spec: Canary, stable: Variant, candidate: Variant, applied: int, target: int) -> _Sizing:
    bound = max(stable.replicas, candidate.replicas) + canary_spec.max_surge
    # The canary needs at least one pod before it takes any weight (its smoke test runs on it).
    want_canary = max(_need(candidate.replicas, target), min(1, candidate.replicas))
    want_stable = _need(stable.replicas, 100 - applied)
    canary = min(want_canary, max(min(1, candidate.replicas), bound - want_stable))
    return _Sizing(canary=canary, stable=max(0, min(want_stable, bound - canary)))


@dataclass(frozen=True)
class _Rollout:
    """The fixed inputs of one decision: the canary spec, both variants, the clock, the ready capacity."""

    spec: Canary
    stable: Variant
    candidate: Variant
    now: datetime
    ready: int
    shared_base: bool
    routers_serving: bool

    @property
    def steps(self) -> list[int]:
        return list(self.spec.steps)

    def plan(
        self,
        s: CanaryStatus,
        outcome: CanaryOutcome,
        reason: Reason,
        message: str,
        *,
        target: int | None = None,
        analysis_due: bool = False,
        analysis_window_s: float = 0.0,
        requeue_after_s: float | None = None,
    ) -> CanaryPlan:
        weight = 0 if outcome is CanaryOutcome.ROLLED_BACK else s.weight
        return CanaryPlan(
            status=s,
            weights={self.stable.name: 100 - weight, self.candidate.name: weight},
            replicas=self._replicas(outcome, weight, target),
            outcome=outcome,
            reason=reason,
            message=message,
            analysis_due=analysis_due,
            analysis_window_s=analysis_window_s,
            requeue_after_s=requeue_after_s,
        )

    def _replicas(self, outcome: CanaryOutcome, weight: int, target: int | None) -> dict[str, int]:
        stable, candidate = self.stable, self.candidate
        if self.shared_base:
            return {stable.name: stable.replicas, candidate.name: candidate.replicas}
        if outcome is CanaryOutcome.ROLLED_BACK:
            return {stable.name: stable.replicas, candidate.name: 0}
        if outcome is CanaryOutcome.PROMOTED:
            return {stable.name: 0, candidate.name: candidate.replicas}
        sizing = _size(self.spec, stable, candidate, weight, max(weight, target or weight))
        return {stable.name: sizing.stable, candidate.name: sizing.canary}


def plan_canary(
    canary_spec: Canary,
    stable: Variant,
    candidate: Variant,
    status: CanaryStatus | None,
    *,
    now: datetime,
    canary_ready_replicas: int,
    shared_base: bool = False,
    analysis: AnalysisOutcome | None = None,
    analysis_error: str | None = None,
    routers_serving: bool = True,
) -> CanaryPlan:
    """Decide the next canary state. `candidate` is the canary variant; `status` is None before the start.

    `shared_base`: both variants are adapters in the same pods, so nothing scales, only weights move.
    A rollout that was rolled back stays rolled back until the caller resets the status (new canary spec).
    An analysis that passes (or fails for the last time) moves the state on, and the decision is taken
    again from there: at most a few rounds, each step of the state machine below.
    `analysis_error`: the due analysis could not run (Prometheus unreachable, not Prometheus): no verdict.
    `routers_serving`: every router pod serves the split applied for the current step (or the caller
    gave up asking). Until then the step's analysis interval does not start: requests the routers
    answer from the previous split (a pinned request to a variant they do not yet know as ready is a
    503) would be judged as the canary's.
    """
    rollout = _Rollout(
        canary_spec, stable, candidate, now, canary_ready_replicas, shared_base, routers_serving
    )
    st = status if status is not None and status.step > 0 else CanaryStatus(step=1, weight=0)
    while True:
        decided = _decide(rollout, st, analysis, analysis_error)
        if isinstance(decided, CanaryPlan):
            return decided
        st, analysis, analysis_error = decided, None, None


def _decide(
    r: _Rollout, st: CanaryStatus, analysis: AnalysisOutcome | None, analysis_error: str | None
) -> CanaryPlan | CanaryStatus:
    """The plan, or the status to decide again from (an analysis moved the rollout on)."""
    settled = _settled(r, st)
    if settled is not None:
        return settled
    steps = r.steps
    step = min(st.step, len(steps))
    target = steps[step - 1]
    if r.spec.pause:
        return r.plan(
            st,
            CanaryOutcome.PAUSED,
            Reason.CANARY_PAUSED,
            f"paused at {st.weight}% (step {step}/{len(steps)})",
        )
    if st.weight < target:
        return _move_weight(r, st, step, target)
    return _check(r, st, step, analysis, analysis_error)


def _settled(r: _Rollout, st: CanaryStatus) -> CanaryPlan | None:
    """Aborted, rolled back or promoted: nothing moves any more."""
    stable, candidate = r.stable.name, r.candidate.name
    if r.spec.abort:
        # Reset, not just zero weight: clearing `abort` retries the rollout from its first step.
        return r.plan(
            CanaryStatus(),
            CanaryOutcome.ROLLED_BACK,
            Reason.CANARY_ABORTED,
            f"aborted by spec.traffic.canary.abort: all traffic to {stable}",
        )
    if st.failures >= r.spec.failure_limit:
        return r.plan(
            st,
            CanaryOutcome.ROLLED_BACK,
            Reason.ANALYSIS_FAILED,
            f"rolled back to {stable} at {r.steps[st.step - 1]}%: {describe_failures(st.last_analysis)}",
        )
    if st.weight == 100:
        return r.plan(st, CanaryOutcome.PROMOTED, Reason.PROMOTED, f"{candidate} takes 100% of traffic")
    return None


def _move_weight(r: _Rollout, st: CanaryStatus, step: int, target: int) -> CanaryPlan:
    """Move to the step's weight once enough canary pods are ready (and smoke-tested)."""
    candidate, total = r.candidate.name, len(r.steps)
    # On a shared base the host's pods serve both: one ready (and smoke-tested) pod is enough.
    needed = 1 if r.shared_base else _size(r.spec, r.stable, r.candidate, st.weight, target).canary
    if r.ready < needed:
        return r.plan(
            st,
            CanaryOutcome.PROGRESSING,
            Reason.CANARY_STEP,
            f"waiting for {needed} ready {candidate} replicas ({r.ready} now) before moving to {target}%",
            target=target,
            requeue_after_s=CAPACITY_RECHECK_S,
        )
    applied = st.model_copy(
        update={
            "step": step,
            "weight": target,
            "failures": 0,
            "no_verdict": 0,
            "no_verdict_cause": None,
            "step_started_at": r.now,
            "step_served_at": None,
        }
    )
    if target == 100:
        return r.plan(applied, CanaryOutcome.PROMOTED, Reason.PROMOTED, f"{candidate} takes 100% of traffic")
    return r.plan(
        applied,
        CanaryOutcome.PROGRESSING,
        Reason.CANARY_STEP,
        f"step {step}/{total}: {target}% to {candidate}",
        # Soon: the interval starts once the routers serve the step (`_check`), not now.
        requeue_after_s=ROUTER_RECHECK_S,
    )


def _check(
    r: _Rollout, st: CanaryStatus, step: int, analysis: AnalysisOutcome | None, analysis_error: str | None
) -> CanaryPlan | CanaryStatus:
    """At the step's weight: wait for the interval, then ask for an analysis, then judge it."""
    candidate, total = r.candidate.name, len(r.steps)
    interval = timedelta(seconds=duration_seconds(r.spec.interval))
    if st.step_served_at is None:
        if not r.routers_serving:
            return r.plan(
                st,
                CanaryOutcome.PROGRESSING,
                Reason.CANARY_STEP,
                f"step {step}/{total}: {st.weight}% to {candidate} applied; the analysis interval starts "
                "once every router serves it",
                requeue_after_s=ROUTER_RECHECK_S,
            )
        st = st.model_copy(update={"step_served_at": r.now})
    started = st.step_served_at or r.now
    since = max(started, st.analyzed_at) if st.analyzed_at is not None else started
    due_at = since + interval
    if r.now < due_at:
        wait_s = (due_at - r.now).total_seconds()
        if _stalled(r, st):
            return r.plan(
                st,
                CanaryOutcome.PAUSED,
                Reason.ANALYSIS_STALLED,
                f"{_stalled_message(r, st, step)}; next try in {wait_s:.0f}s",
                requeue_after_s=wait_s,
            )
        return r.plan(
            st,
            CanaryOutcome.PROGRESSING,
            Reason.CANARY_STEP,
            f"step {step}/{total}: {st.weight}% to {candidate}, next check in {wait_s:.0f}s",
            requeue_after_s=wait_s,
        )
    if r.spec.analysis is not None and analysis_error is not None:
        return _no_verdict(r, st, step, f"analysis could not run: {analysis_error}", interval)
    if r.spec.analysis is not None and analysis is None:
        return r.plan(
            st,
            CanaryOutcome.PROGRESSING,
            Reason.CANARY_STEP,
            f"step {step}/{total}: analysing {candidate} at {st.weight}%",
            analysis_due=True,
            analysis_window_s=(r.now - since).total_seconds(),
        )
    return _judge(r, st, step, analysis, interval)


def _judge(
    r: _Rollout, st: CanaryStatus, step: int, analysis: AnalysisOutcome | None, interval: timedelta
) -> CanaryPlan | CanaryStatus:
    """Passed: on to the next step. Inconclusive: wait for samples. Failed: count it; at the limit, back."""
    verdict = Verdict.PASSED if analysis is None else analysis.verdict
    results = list(analysis.results) if analysis is not None else []
    if verdict is Verdict.INCONCLUSIVE:
        minimum = r.spec.analysis.min_requests if r.spec.analysis else 0
        seen = results[0].samples if results else 0
        return _no_verdict(
            r,
            st.model_copy(update={"last_analysis": results}),
            step,
            f"{seen} of {minimum} requests for a verdict on {r.candidate.name}",
            interval,
        )
    analysed = st.model_copy(
        update={"last_analysis": results, "analyzed_at": r.now, "no_verdict": 0, "no_verdict_cause": None}
    )
    if verdict is Verdict.PASSED:
        return analysed.model_copy(update={"step": step + 1, "failures": 0})
    failed = analysed.model_copy(update={"failures": st.failures + 1})
    if failed.failures >= r.spec.failure_limit:
        return failed.model_copy(update={"weight": 0})
    return r.plan(
        failed,
        CanaryOutcome.PROGRESSING,
        Reason.ANALYSIS_FAILED,
        f"analysis failed ({failed.failures}/{r.spec.failure_limit}) at {st.weight}%: "
        f"{describe_failures(results)}",
        requeue_after_s=interval.total_seconds(),
    )


def _stalled(r: _Rollout, st: CanaryStatus) -> bool:
    limit = r.spec.analysis.no_verdict_limit if r.spec.analysis is not None else 1
    return r.spec.analysis is not None and st.no_verdict >= limit


def _stalled_message(r: _Rollout, st: CanaryStatus, step: int) -> str:
    return (
        f"paused at step {step}/{len(r.steps)} at {st.weight}%: no analysis verdict for {st.no_verdict} "
        f"intervals ({st.no_verdict_cause}); retried every interval, the rollout resumes on a verdict"
    )


def _no_verdict(r: _Rollout, st: CanaryStatus, step: int, cause: str, interval: timedelta) -> CanaryPlan:
    """An analysis without a verdict: wait an interval; `noVerdictLimit` in a row pause the canary.

    Paused, the weight holds (nothing promotes) and the analysis is retried every interval: a verdict
    resumes the rollout. The reason (AnalysisStalled) names the state; the message names the cause.
    """
    held = st.model_copy(
        update={"no_verdict": st.no_verdict + 1, "no_verdict_cause": cause, "analyzed_at": r.now}
    )
    limit = r.spec.analysis.no_verdict_limit if r.spec.analysis is not None else 1
    if _stalled(r, held):
        return r.plan(
            held,
            CanaryOutcome.PAUSED,
            Reason.ANALYSIS_STALLED,
            _stalled_message(r, held, step),
            requeue_after_s=interval.total_seconds(),
        )
    return r.plan(
        held,
        CanaryOutcome.PROGRESSING,
        Reason.CANARY_STEP,
        f"step {step}/{len(r.steps)} at {st.weight}%: no analysis verdict ({held.no_verdict}/{limit} before "
        f"the canary pauses): {cause}",
        requeue_after_s=interval.total_seconds(),
    )
