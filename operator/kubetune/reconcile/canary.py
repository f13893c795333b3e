"""One canary pass: plan, analyse when due, and turn the plan into conditions and Events.

The state machine is pure (`kubetune.status.canary.plan_canary`); this module adds the I/O around it
(the Prometheus analysis) and the bookkeeping a reconcile pass needs. A Prometheus that cannot be
reached is no verdict on the canary: the step waits and retries, no failure is counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp

from kubetune.analysis.evaluator import AnalysisOutcome
from kubetune.analysis.prometheus import PrometheusClient, PrometheusError
from kubetune.analysis.run import analyze
from kubetune.api.common import Condition
from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.modeldeployment import CanaryStatus, ModelDeploymentSpec
from kubetune.builders.common import stable_hash
from kubetune.reconcile.common import Event
from kubetune.serving.resolution import Resolution
from kubetune.status.canary import CanaryOutcome, CanaryPlan, plan_canary
from kubetune.status.conditions import set_condition

PROMETHEUS_RETRY_S = 30.0


@dataclass(frozen=True)
class CanaryPass:
    plan: CanaryPlan
    events: list[Event] = field(default_factory=list)


def rollout_id(spec: ModelDeploymentSpec, resolutions: Mapping[str, Resolution]) -> str | None:
    """Identity of what the canary rolls out: a new id starts the rollout over (after a rollback too).

    Covers the two variant names, the canary variant's serving spec and the artifacts it resolved to
    (a re-trained FineTuneJob is a new rollout); not the steps, interval or `pause`, which steer the
    running rollout.
    """
    canary = spec.traffic.canary
    if canary is None:
        return None
    candidate = next(v for v in spec.variants if v.name == canary.canary_variant)
    resolution = resolutions.get(candidate.name)
    return stable_hash(
        {
            "stable": canary.stable_variant,
            "canary": canary.canary_variant,
            "variant": candidate.model_dump(
                mode="json", by_alias=True, exclude={"weight", "replicas", "autoscaling"}
            ),
            "model": resolution.model_uri if resolution else None,
            "adapters": [(m.name, m.uri) for m in resolution.lora_modules] if resolution else [],
            "lineage": dict(resolution.lineage) if resolution else {},
        }
    )


async def run_canary(
    spec: ModelDeploymentSpec,
    previous: CanaryStatus | None,
    *,
    canary_ready_replicas: int,
    shared_base: bool = False,
    namespace: str,
    deployment: str,
    now: datetime,
) -> CanaryPass:
    canary = spec.traffic.canary
    assert canary is not None
    by_name = {v.name: v for v in spec.variants}
    stable, candidate = by_name[canary.stable_variant], by_name[canary.canary_variant]

    def planned(analysis: AnalysisOutcome | None = None) -> CanaryPlan:
        return plan_canary(
            canary,
            stable,
            candidate,
            previous,
            now=now,
            canary_ready_replicas=canary_ready_replicas,
            shared_base=shared_base,
            analysis=analysis,
        )

    plan = planned()
    if plan.analysis_due and canary.analysis is not None:
        try:
            async with aiohttp.ClientSession() as session:
                outcome = await analyze(
                    PrometheusClient(canary.analysis.prometheus_url, session),
                    canary.analysis,
                    canary=candidate.name,
                    stable=stable.name,
                    window_s=plan.analysis_window_s,
                    # The router labels its own series with its ModelDeployment (scrape-independent).
                    labels={"namespace": namespace, "model_deployment": deployment},
                )
        except PrometheusError as exc:
            plan = CanaryPlan(
                status=plan.status,
                weights=plan.weights,
                replicas=plan.replicas,
                outcome=plan.outcome,
                reason=plan.reason,
                message=f"analysis could not run, retrying (no failure counted): {exc}",
                requeue_after_s=PROMETHEUS_RETRY_S,
            )
        else:
            plan = planned(outcome)
    return CanaryPass(plan, canary_events(plan, previous, candidate.name))


def canary_events(plan: CanaryPlan, previous: CanaryStatus | None, candidate: str) -> list[Event]:
    before = previous or CanaryStatus()
    after = plan.status
    events: list[Event] = []
    if plan.outcome is CanaryOutcome.ROLLED_BACK:
        if before.failures < after.failures or before.weight != 0:
            events.append(Event("Warning", plan.reason, plan.message))
        return events
    if after.failures > before.failures:
        events.append(Event("Warning", Reason.ANALYSIS_FAILED, plan.message))
    if after.weight != before.weight:
        if plan.outcome is CanaryOutcome.PROMOTED:
            events.append(Event("Normal", Reason.PROMOTED, plan.message))
        else:
            events.append(
                Event("Normal", Reason.CANARY_STEP, f"{candidate}: {before.weight}% -> {after.weight}%")
            )
    return events


def canary_conditions(
    conditions: Sequence[Condition], plan: CanaryPlan | None, generation: int | None, now: datetime
) -> list[Condition]:
    """`Promoted` and `CanaryRolledBack` from the plan; both removed when there is no canary."""
    kinds = (ConditionType.PROMOTED, ConditionType.CANARY_ROLLED_BACK)
    if plan is None:
        return [c for c in conditions if c.type not in kinds]
    promoted = plan.outcome is CanaryOutcome.PROMOTED
    rolled_back = plan.outcome is CanaryOutcome.ROLLED_BACK
    result = set_condition(
        conditions,
        ConditionType.PROMOTED,
        "True" if promoted else "False",
        plan.reason,
        plan.message,
        generation,
        now,
    )
    return set_condition(
        result,
        ConditionType.CANARY_ROLLED_BACK,
        "True" if rolled_back else "False",
        plan.reason,
        plan.message,
        generation,
        now,
    )
