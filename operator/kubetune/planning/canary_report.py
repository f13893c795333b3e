"""What a canary pass reports: its rollout identity, its Events and its conditions. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from kubetune.api.common import Condition
from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.modeldeployment import CanaryStatus, ModelDeploymentSpec
from kubetune.builders.common import stable_hash
from kubetune.planning.canary import CanaryOutcome, CanaryPlan
from kubetune.planning.plan import Event
from kubetune.serving.resolution import Resolution
from kubetune.status.conditions import set_condition


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
    if plan.reason is Reason.ANALYSIS_STALLED and after.no_verdict > before.no_verdict:
        # Once when the canary pauses, then once per further try without a verdict (a Warning each
        # interval while Prometheus stays away: someone has to look).
        events.append(Event("Warning", Reason.ANALYSIS_STALLED, plan.message))
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
