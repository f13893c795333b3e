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
) -> CanaryPlan:
    """Decide the next canary state. `candidate` is the canary variant; `status` is None before the start.

    `shared_base`: both variants are adapters in the same pods, so nothing scales, only weights move.
    A rollout that was rolled back stays rolled back until the caller resets the status (new canary spec).
    """
    steps = canary_spec.steps
    st = status if status is not None and status.step > 0 else CanaryStatus(step=1, weight=0)
    names = (stable.name, candidate.name)

    def plan(
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
        weight = s.weight
        if outcome is CanaryOutcome.ROLLED_BACK:
            weight = 0
        if shared_base:
            replicas = {stable.name: stable.replicas, candidate.name: candidate.replicas}
        elif outcome is CanaryOutcome.ROLLED_BACK:
            replicas = {stable.name: stable.replicas, candidate.name: 0}
        elif outcome is CanaryOutcome.PROMOTED:
            replicas = {stable.name: 0, candidate.name: candidate.replicas}
        else:
            sizing = _size(canary_spec, stable, candidate, weight, max(weight, target or weight))
            replicas = {stable.name: sizing.stable, candidate.name: sizing.canary}
        return CanaryPlan(
            status=s,
            weights={names[0]: 100 - weight, names[1]: weight},
            replicas=replicas,
            outcome=outcome,
            reason=reason,
            message=message,
            analysis_due=analysis_due,
            analysis_window_s=analysis_window_s,
            requeue_after_s=requeue_after_s,
        )

    if canary_spec.abort:
        # Reset, not just zero weight: clearing `abort` retries the rollout from its first step.
        return plan(
            CanaryStatus(),
            CanaryOutcome.ROLLED_BACK,
            Reason.CANARY_ABORTED,
            f"aborted by spec.traffic.canary.abort: all traffic to {stable.name}",
        )
    if st.failures >= canary_spec.failure_limit:
        return plan(
            st,
            CanaryOutcome.ROLLED_BACK,
            Reason.ANALYSIS_FAILED,
            f"rolled back to {stable.name} at {steps[st.step - 1]}%: {describe_failures(st.last_analysis)}",
        )
    if st.weight == 100:
        return plan(st, CanaryOutcome.PROMOTED, Reason.PROMOTED, f"{candidate.name} takes 100% of traffic")

    step = min(st.step, len(steps))
    target = steps[step - 1]
    if canary_spec.pause:
        return plan(
            st,
            CanaryOutcome.PAUSED,
            Reason.CANARY_PAUSED,
            f"paused at {st.weight}% (step {step}/{len(steps)})",
        )

    if st.weight < target:
        # On a shared base the host's pods serve both: one ready (and smoke-tested) pod is enough.
        needed = 1 if shared_base else _size(canary_spec, stable, candidate, st.weight, target).canary
        if canary_ready_replicas < needed:
            return plan(
                st,
                CanaryOutcome.PROGRESSING,
                Reason.CANARY_STEP,
                f"waiting for {needed} ready {candidate.name} replicas ({canary_ready_replicas} now) "
                f"before moving to {target}%",
                target=target,
                requeue_after_s=CAPACITY_RECHECK_S,
            )
        applied = st.model_copy(
            update={"step": step, "weight": target, "failures": 0, "step_started_at": now}
        )
        if target == 100:
            return plan(
                applied, CanaryOutcome.PROMOTED, Reason.PROMOTED, f"{candidate.name} takes 100% of traffic"
            )
        return plan(
            applied,
            CanaryOutcome.PROGRESSING,
            Reason.CANARY_STEP,
            f"step {step}/{len(steps)}: {target}% to {candidate.name}",
            requeue_after_s=duration_seconds(canary_spec.interval),
        )

    interval = timedelta(seconds=duration_seconds(canary_spec.interval))
    started = st.step_started_at or now
    since = max(started, st.analyzed_at) if st.analyzed_at is not None else started
    due_at = since + interval
    if now < due_at:
        return plan(
            st,
            CanaryOutcome.PROGRESSING,
            Reason.CANARY_STEP,
            f"step {step}/{len(steps)}: {st.weight}% to {candidate.name}, next check in "
            f"{(due_at - now).total_seconds():.0f}s",
            requeue_after_s=(due_at - now).total_seconds(),
        )

    if canary_spec.analysis is not None and analysis is None:
        return plan(
            st,
            CanaryOutcome.PROGRESSING,
            Reason.CANARY_STEP,
            f"step {step}/{len(steps)}: analysing {candidate.name} at {st.weight}%",
            analysis_due=True,
            analysis_window_s=(now - since).total_seconds(),
        )

    verdict = Verdict.PASSED if analysis is None else analysis.verdict
    results = list(analysis.results) if analysis is not None else []
    analysed = st.model_copy(update={"last_analysis": results, "analyzed_at": now})
    if verdict is Verdict.PASSED:
        advanced = analysed.model_copy(update={"step": step + 1, "failures": 0})
        return plan_canary(
            canary_spec,
            stable,
            candidate,
            advanced,
            now=now,
            canary_ready_replicas=canary_ready_replicas,
            shared_base=shared_base,
        )
    if verdict is Verdict.INCONCLUSIVE:
        minimum = canary_spec.analysis.min_requests if canary_spec.analysis else 0
        seen = results[0].samples if results else 0
        return plan(
            analysed,
            CanaryOutcome.PROGRESSING,
            Reason.CANARY_STEP,
            f"step {step}/{len(steps)}: {seen} of {minimum} requests for a verdict on {candidate.name}",
            requeue_after_s=interval.total_seconds(),
        )
    failed = analysed.model_copy(update={"failures": st.failures + 1})
    if failed.failures >= canary_spec.failure_limit:
        failed = failed.model_copy(update={"weight": 0})
        return plan_canary(
            canary_spec,
            stable,
            candidate,
            failed,
            now=now,
            canary_ready_replicas=canary_ready_replicas,
            shared_base=shared_base,
        )
    return plan(
        failed,
        CanaryOutcome.PROGRESSING,
        Reason.ANALYSIS_FAILED,
        f"analysis failed ({failed.failures}/{canary_spec.failure_limit}) at {st.weight}%: "
        f"{describe_failures(results)}",
        requeue_after_s=interval.total_seconds(),
    )
