"""ModelDeployment status: observed Deployments + model resolution + gate + smoke test in, status out.

Pure: `now` is injected and previous conditions come from the object, so an unchanged world
yields an identical status (the reconciler patches only when it differs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubetune.api.common import Condition, ConditionStatus
from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.modeldeployment import (
    CanaryStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    SmokeTest,
    Variant,
    VariantStatus,
)
from kubetune.builders.modeldeployment import ANNOTATION_MODEL_URI
from kubetune.serving.gate import GateVerdict
from kubetune.serving.resolution import Resolution, ResolutionState
from kubetune.serving.smoke import SmokeVerdict
from kubetune.status.conditions import find_condition, parse_conditions, set_condition

_MODEL_REASON = {
    ResolutionState.READY: Reason.MODEL_RESOLVED,
    ResolutionState.WAITING: Reason.WAITING_FOR_FINETUNE_JOB,
    ResolutionState.FAILED: Reason.FINETUNE_JOB_FAILED,
    ResolutionState.NOT_FOUND: Reason.FINETUNE_JOB_NOT_FOUND,
}
# A variant following a FineTuneSchedule waits on the schedule, not on a FineTuneJob: its reason says so.
_SCHEDULE_REASONS = frozenset({Reason.WAITING_FOR_GOOD_RUN, Reason.FINETUNE_SCHEDULE_NOT_FOUND})


def _model_reason(resolution: Resolution) -> Reason:
    return resolution.reason if resolution.reason in _SCHEDULE_REASONS else _MODEL_REASON[resolution.state]


# Reasons that need a change of spec (or of a FineTuneJob) before the variant can serve.
TERMINAL_REASONS = frozenset({Reason.FINETUNE_JOB_FAILED, Reason.GATE_FAILED, Reason.SMOKE_FAILED})


@dataclass(frozen=True)
class DeploymentView:
    """What the status reads from an observed apps/v1 Deployment."""

    desired: int
    ready: int
    updated: int
    available: int
    total: int
    current_generation: bool
    deadline_exceeded: bool
    model_uri: str | None

    @classmethod
    def of(cls, deployment: Mapping[str, Any]) -> DeploymentView:
        meta = deployment.get("metadata") or {}
        spec = deployment.get("spec") or {}
        status = deployment.get("status") or {}
        progressing = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None
        )
        return cls(
            desired=int(spec.get("replicas", 1)),
            ready=int(status.get("readyReplicas", 0)),
            updated=int(status.get("updatedReplicas", 0)),
            available=int(status.get("availableReplicas", 0)),
            total=int(status.get("replicas", 0)),
            current_generation=int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 0)),
            deadline_exceeded=bool(progressing and progressing.get("reason") == "ProgressDeadlineExceeded"),
            model_uri=(meta.get("annotations") or {}).get(ANNOTATION_MODEL_URI),
        )

    @property
    def rolled_out(self) -> bool:
        return (
            self.current_generation
            and self.updated >= self.desired
            and self.total <= self.updated
            and self.available >= self.desired
        )


def _previous_variant(mdep: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    for item in (mdep.get("status") or {}).get("variants") or []:
        if item.get("name") == name:
            return dict(item)
    return {}


@dataclass
class _Conditions:
    """A variant's conditions being rewritten in one pass (transition semantics by set_condition)."""

    items: list[Condition]
    generation: int | None
    now: datetime

    def put(self, kind: ConditionType, status: ConditionStatus, reason: str, message: str) -> None:
        self.items = set_condition(self.items, kind, status, reason, message, self.generation, self.now)


def variant_status(
    variant: Variant,
    deployment: Mapping[str, Any] | None,
    resolution: Resolution,
    gate: GateVerdict,
    smoke: SmokeVerdict | None,
    *,
    previous_conditions: Sequence[Condition | Mapping[str, Any]] = (),
    smoke_test: SmokeTest | None = None,
    endpoint: str | None = None,
    generation: int | None = None,
    previous_tested: str | None = None,
    pod_problem: tuple[Reason, str] | None = None,
    now: datetime,
) -> VariantStatus:
    """Status of one variant.

    `deployment`: the observed Deployment, None when not created (model not ready, gate not passed).
    `smoke`: a new verdict, or None to keep the previous SmokeTestPassed condition (Unknown when
    there is none); pass `SmokeVerdict.pending(...)` when a new model invalidates an old verdict.
    `smoke_test`: the spec's settings (a disabled smoke test counts as passed).
    `previous_tested`: what the previous verdict was about (kept with it when `smoke` is None).
    `pod_problem`: a container of the variant's pods that cannot start (`status.pods.container_problem`).
    """
    conditions = _Conditions(parse_conditions(previous_conditions), generation, now)
    conditions.put(
        ConditionType.MODEL_READY,
        "True" if resolution.ready else "False",
        _model_reason(resolution),
        resolution.message,
    )
    conditions.put(ConditionType.EVAL_GATE_PASSED, gate.status, gate.reason, gate.message)
    view = DeploymentView.of(deployment) if deployment is not None else None
    if view is None:
        _not_rolled_out(conditions, resolution, gate)
    else:
        _rollout(conditions, view, pod_problem)
    tested = _smoke(conditions, smoke, smoke_test, previous_tested)

    model_uri = view.model_uri if view is not None else None
    if variant.served_by is not None and view is not None:
        model_uri = resolution.model_uri  # the host's annotation names its base; this variant is the adapter
    return VariantStatus(
        name=variant.name,
        ready_replicas=view.ready if view else 0,
        updated_replicas=view.updated if view else 0,
        endpoint=endpoint if view is not None else None,
        model_uri=model_uri,
        lineage=dict(resolution.lineage),
        smoke_tested=tested,
        conditions=conditions.items,
    )


def _not_rolled_out(conditions: _Conditions, resolution: Resolution, gate: GateVerdict) -> None:
    """No Deployment: what blocks it (the model or the gate), and whether that can still change."""
    blocker = resolution if not resolution.ready else gate
    conditions.put(
        ConditionType.AVAILABLE,
        "False",
        Reason.MINIMUM_REPLICAS_UNAVAILABLE,
        f"not rolled out: {blocker.message}",
    )
    blocked_for_good = resolution.state in (ResolutionState.FAILED, ResolutionState.NOT_FOUND) or (
        gate.status == "False"
    )
    reason = _model_reason(resolution) if not resolution.ready else gate.reason
    conditions.put(
        ConditionType.PROGRESSING, "False" if blocked_for_good else "True", reason, blocker.message
    )


def _rollout(conditions: _Conditions, view: DeploymentView, pod_problem: tuple[Reason, str] | None) -> None:
    """Available and Progressing from the observed Deployment; a pod that cannot start says why."""
    available = view.desired >= 1 and view.available >= view.desired
    counts = f"{view.available}/{view.desired} replicas available"
    if not available and pod_problem is not None:
        conditions.put(ConditionType.AVAILABLE, "False", pod_problem[0], f"{counts}; {pod_problem[1]}")
    else:
        conditions.put(
            ConditionType.AVAILABLE,
            "True" if available else "False",
            Reason.MINIMUM_REPLICAS_AVAILABLE if available else Reason.MINIMUM_REPLICAS_UNAVAILABLE,
            counts,
        )
    if view.deadline_exceeded:
        conditions.put(
            ConditionType.PROGRESSING,
            "False",
            Reason.PROGRESS_DEADLINE_EXCEEDED,
            f"rollout stalled: {view.updated}/{view.desired} updated, {view.ready} ready",
        )
    elif view.rolled_out:
        conditions.put(
            ConditionType.PROGRESSING,
            "False",
            Reason.ROLLOUT_COMPLETE,
            f"{view.updated}/{view.desired} replicas on the current template",
        )
    else:
        conditions.put(
            ConditionType.PROGRESSING,
            "True",
            Reason.ROLLING_OUT,
            f"{view.updated}/{view.desired} updated, {view.available} available",
        )


def _smoke(
    conditions: _Conditions,
    smoke: SmokeVerdict | None,
    smoke_test: SmokeTest | None,
    previous_tested: str | None,
) -> str | None:
    """SmokeTestPassed; returns what the standing verdict is about (`smokeTested`)."""
    if smoke_test is not None and not smoke_test.enabled:
        conditions.put(
            ConditionType.SMOKE_TEST_PASSED,
            "True",
            Reason.SMOKE_PASSED,
            "smoke test disabled in spec.smokeTest",
        )
        return None
    if smoke is not None:
        conditions.put(ConditionType.SMOKE_TEST_PASSED, smoke.status, smoke.reason, smoke.message)
        return smoke.tested
    if find_condition(conditions.items, ConditionType.SMOKE_TEST_PASSED) is None:
        conditions.put(
            ConditionType.SMOKE_TEST_PASSED,
            "Unknown",
            Reason.PENDING,
            "runs when the variant becomes Available",
        )
    return previous_tested


def previous_variant_conditions(mdep: Mapping[str, Any], variant_name: str) -> list[Condition]:
    """The variant's conditions as last written (input of variant_status' transition semantics)."""
    return parse_conditions(_previous_variant(mdep, variant_name).get("conditions") or [])


def previous_smoke_tested(mdep: Mapping[str, Any], variant_name: str) -> str | None:
    """What the variant's last smoke-test verdict was about, as last written."""
    value = _previous_variant(mdep, variant_name).get("smokeTested")
    return str(value) if value else None


# --- the whole object ------------------------------------------------------------------------------


def _cond(status: VariantStatus, kind: ConditionType) -> Condition | None:
    return find_condition(status.conditions, kind)


def _state(status: VariantStatus, kind: ConditionType) -> str:
    condition = _cond(status, kind)
    return condition.status if condition else "Unknown"


def _aggregate(
    variants: Sequence[VariantStatus], kind: ConditionType, ok_reason: Reason, ok_message: str
) -> tuple[ConditionStatus, str, str]:
    """True when every variant is True; otherwise the first False (else Unknown) variant's reason."""
    not_ok = [(v, c) for v in variants if (c := _cond(v, kind)) is None or c.status != "True"]
    if not not_ok:
        return "True", ok_reason, ok_message
    falses = [(v, c) for v, c in not_ok if c is not None and c.status == "False"]
    first = (falses or not_ok)[0][1]
    status: ConditionStatus = "False" if falses else "Unknown"
    reason = first.reason if first is not None else Reason.PENDING
    message = "; ".join(f"{v.name}: {c.message if c else 'not evaluated'}" for v, c in (falses or not_ok))
    return status, reason, message


def _serving_set(spec: ModelDeploymentSpec, weights: Mapping[str, int]) -> list[str]:
    """Variants whose availability clients depend on: observed weight > 0, else spec weight > 0."""
    names = [v.name for v in spec.variants if weights.get(v.name, 0) > 0]
    if not names:
        names = [v.name for v in spec.variants if v.weight > 0]
    return names or [v.name for v in spec.variants]


def _phase(
    variants: Sequence[VariantStatus], serving: Sequence[VariantStatus], available: bool, progressing: bool
) -> Phase:
    def terminal(v: VariantStatus) -> bool:
        return any(
            (c := _cond(v, kind)) is not None and c.status == "False" and c.reason in TERMINAL_REASONS
            for kind in (
                ConditionType.MODEL_READY,
                ConditionType.EVAL_GATE_PASSED,
                ConditionType.SMOKE_TEST_PASSED,
            )
        )

    if any(terminal(v) for v in variants):
        return Phase.DEGRADED if available else Phase.FAILED
    # A variant without traffic need not have pods: the stable one after a promotion, the canary
    # after a rollback are scaled to zero on purpose.
    settled = all(_state(v, ConditionType.AVAILABLE) == "True" for v in serving) and all(
        _state(v, kind) == "True"
        for v in variants
        for kind in (ConditionType.EVAL_GATE_PASSED, ConditionType.SMOKE_TEST_PASSED)
    )
    if available and settled and not progressing:
        return Phase.AVAILABLE
    if progressing or any(_state(v, ConditionType.SMOKE_TEST_PASSED) == "Unknown" for v in variants):
        if not any(_state(v, ConditionType.MODEL_READY) == "True" for v in variants):
            return Phase.PENDING
        return Phase.PROGRESSING
    return Phase.DEGRADED if available else Phase.FAILED


def deployment_status(
    mdep: Mapping[str, Any],
    variant_statuses: Sequence[VariantStatus],
    observed_weights: Mapping[str, int],
    now: datetime,
    *,
    endpoint: str | None = None,
    canary: CanaryStatus | None = None,
    spec: ModelDeploymentSpec | None = None,
) -> ModelDeploymentStatus:
    """Aggregate the variants; `observed_weights` are read back from the router or HTTPRoute.

    `canary` defaults to what the object's status already holds (the canary controller owns it).
    `spec`: the pass's parsed spec (parsed from `mdep` when not given).
    """
    spec = spec or ModelDeploymentSpec.model_validate(mdep["spec"])
    previous = mdep.get("status") or {}
    generation = (mdep.get("metadata") or {}).get("generation")
    order = {v.name: i for i, v in enumerate(spec.variants)}
    variants = sorted(
        (v.model_copy(update={"weight": observed_weights.get(v.name, 0)}) for v in variant_statuses),
        key=lambda v: order.get(v.name, len(order)),
    )
    conditions = _Conditions(parse_conditions(previous.get("conditions")), generation, now)
    _aggregate_variants(conditions, variants)
    serving = _serving(conditions, spec, variants, observed_weights)
    rolling = _rolling(conditions, variants)

    ready = sum(1 for v in variants if _state(v, ConditionType.AVAILABLE) == "True")
    weights = ",".join(f"{v.name}={observed_weights[v.name]}" for v in variants if v.name in observed_weights)
    previous_canary = previous.get("canary")
    return ModelDeploymentStatus(
        phase=_phase(variants, serving, _state_of(conditions, ConditionType.AVAILABLE), bool(rolling)),
        conditions=conditions.items,
        observed_generation=generation,
        ready_variants=f"{ready}/{len(spec.variants)}",
        weights=weights or None,
        variants=variants,
        canary=canary
        if canary is not None
        else (CanaryStatus.model_validate(previous_canary) if previous_canary else None),
        endpoint=endpoint,
    )


def _state_of(conditions: _Conditions, kind: ConditionType) -> bool:
    condition = find_condition(conditions.items, kind)
    return condition is not None and condition.status == "True"


def _aggregate_variants(conditions: _Conditions, variants: Sequence[VariantStatus]) -> None:
    """ModelReady, EvalGatePassed and SmokeTestPassed: True when every variant's is."""
    n = len(variants)
    for kind, reason, message in (
        (ConditionType.MODEL_READY, Reason.MODEL_RESOLVED, f"all {n} variants resolved"),
        (ConditionType.EVAL_GATE_PASSED, Reason.GATE_PASSED, f"all {n} variants pass their gates"),
        (ConditionType.SMOKE_TEST_PASSED, Reason.SMOKE_PASSED, f"all {n} variants passed"),
    ):
        conditions.put(kind, *_aggregate(variants, kind, reason, message))


def _serving(
    conditions: _Conditions,
    spec: ModelDeploymentSpec,
    variants: Sequence[VariantStatus],
    observed_weights: Mapping[str, int],
) -> list[VariantStatus]:
    """Available when every variant clients depend on is; returns those variants."""
    by_name = {v.name: v for v in variants}
    serving = [by_name[name] for name in _serving_set(spec, observed_weights) if name in by_name]
    down = [v for v in serving if _state(v, ConditionType.AVAILABLE) != "True"]
    if serving and not down:
        conditions.put(
            ConditionType.AVAILABLE,
            "True",
            Reason.MINIMUM_REPLICAS_AVAILABLE,
            "serving variants available: " + ", ".join(v.name for v in serving),
        )
    else:
        conditions.put(
            ConditionType.AVAILABLE,
            "False",
            Reason.MINIMUM_REPLICAS_UNAVAILABLE,
            "unavailable: " + ", ".join(v.name for v in down or serving),
        )
    return serving


def _rolling(conditions: _Conditions, variants: Sequence[VariantStatus]) -> list[VariantStatus]:
    """Progressing while any variant rolls out; returns those variants."""
    rolling = [v for v in variants if _state(v, ConditionType.PROGRESSING) == "True"]
    if rolling:
        conditions.put(
            ConditionType.PROGRESSING,
            "True",
            Reason.ROLLING_OUT,
            "; ".join(
                f"{v.name}: {c.message}" for v in rolling if (c := _cond(v, ConditionType.PROGRESSING))
            ),
        )
    else:
        conditions.put(
            ConditionType.PROGRESSING, "False", Reason.ROLLOUT_COMPLETE, "no variant is rolling out"
        )
    return rolling
