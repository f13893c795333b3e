"""ModelDeployment: the pure steps of a pass, over one observed context.

The reconciler (`kubetune.reconcile.modeldeployment`) orders them around its I/O: observe →
`render_variants` → canary (`canary_inputs`, then the analysis when due) → apply the children →
smoke tests (`smoke_request`) → `variant_statuses` → traffic (`traffic_shift`: routable, capped by
ready capacity, make-before-break) → prune → `final_status`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubetune.api.common import Condition
from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.finetunejob import EvalMetrics
from kubetune.api.modeldeployment import (
    CanaryStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    Variant,
    VariantStatus,
)
from kubetune.builders.common import LABEL_VARIANT, Manifest
from kubetune.builders.modeldeployment import build_pod_monitor, build_variant_children, variant_endpoint
from kubetune.planning.canary import CanaryPlan
from kubetune.planning.canary_report import canary_conditions
from kubetune.planning.plan import Delete, Event
from kubetune.planning.revisions import AdapterDesire, Following, fold_statuses
from kubetune.planning.smoke import SmokeRequest, base_url, smoke_key, tested_key
from kubetune.planning.traffic_shift import Capacity, Shift
from kubetune.serving.gate import GateVerdict, evaluate_gate
from kubetune.serving.resolution import Resolution
from kubetune.serving.smoke import SmokeVerdict, smoke_prompts
from kubetune.status.conditions import find_condition, set_condition
from kubetune.status.modeldeployment import (
    TERMINAL_REASONS,
    DeploymentView,
    deployment_status,
    variant_status,
)
from kubetune.status.pods import container_problem
from kubetune.status.route import RouteVerdict
from kubetune.status.summary import modeldeployment_summary, summary_conditions
from kubetune.urlpolicy import url_allowed

_EVENT_CONDITIONS = (
    ConditionType.MODEL_READY,
    ConditionType.EVAL_GATE_PASSED,
    ConditionType.AVAILABLE,
    ConditionType.SMOKE_TEST_PASSED,
)
_WARNING_REASONS = {*TERMINAL_REASONS, Reason.PROGRESS_DEADLINE_EXCEEDED, Reason.FINETUNE_JOB_NOT_FOUND}
SMOKE_POLL_S = 3.0
SHIFT_POLL_S = 3.0


@dataclass(frozen=True)
class Capabilities:
    """Optional APIs the cluster serves (detected by `kubetune.reconcile.capabilities`)."""

    pod_monitor: bool
    keda: bool
    gateway_api: bool
    inference_pool: bool = False


@dataclass(frozen=True)
class RenderSettings:
    """The operator-wide inputs of the serving children (from OperatorSettings)."""

    trainer_image: str
    vllm_image: str
    prometheus_url: str | None
    allow_url_overrides: bool = False
    prometheus_allowlist: tuple[str, ...] | None = None
    """URLs a spec's prometheusUrl may name for KEDA (None: any)."""
    image_pull_secrets: tuple[str, ...] = ()
    monitor_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ModelDeploymentContext:
    """One pass's observations: the spec parsed once, the FineTuneJobs resolved, the children read."""

    obj: dict[str, Any]
    spec: ModelDeploymentSpec
    now: datetime
    previous_status: ModelDeploymentStatus
    resolutions: Mapping[str, Resolution]
    gates: Mapping[str, GateVerdict]
    caps: Capabilities
    deployments: Mapping[str | None, dict[str, Any]]
    """Serving Deployments by the variant that owns the pods (a servedBy variant: under its host)."""
    previous_conditions: Mapping[str, list[Condition]]
    previous_tested: Mapping[str, str | None]
    """By variant: what its standing smoke-test verdict is about (`smokeTested`)."""
    pods: Mapping[str | None, list[dict[str, Any]]] = field(default_factory=dict)
    """Serving pods by the variant that owns them (for containers that cannot start)."""
    events: list[Event] = field(default_factory=list)
    following: Following | None = None
    """Variants following a FineTuneSchedule: `spec` is then the effective spec (planning/revisions.py)."""
    adapter_desires: tuple[AdapterDesire, ...] = ()
    """Revisions of followed adapters the hosts' pods must have loaded (planning/revisions.py)."""

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"]["namespace"])

    @property
    def uid(self) -> str:
        return str(self.obj["metadata"]["uid"])

    @property
    def generation(self) -> int | None:
        value = self.obj["metadata"].get("generation")
        return value if isinstance(value, int) else None

    @property
    def pod_monitor(self) -> bool:
        return self.caps.pod_monitor and self.spec.metrics.pod_monitor

    def usable(self, variant: Variant) -> bool:
        return self.resolutions[variant.name].ready and self.gates[variant.name].passed


def gates(spec: ModelDeploymentSpec, resolutions: Mapping[str, Resolution]) -> dict[str, GateVerdict]:
    metrics: dict[str, EvalMetrics | None] = {name: r.metrics for name, r in resolutions.items()}
    return {v.name: evaluate_gate(v, metrics) for v in spec.variants}


def invalid_status(
    status: ModelDeploymentStatus, generation: int | None, problem: str, now: datetime
) -> tuple[dict[str, Any], list[Event]]:
    events = [] if status.phase == Phase.FAILED else [Event("Warning", Reason.INVALID_SPEC, problem)]
    status.phase = Phase.FAILED
    status.conditions = summary_conditions(
        status.conditions, modeldeployment_summary(status), generation, now
    )
    status.observed_generation = generation
    return status.to_wire(), events


# --- rendering -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendering:
    children: dict[str, list[Manifest]]
    """By variant that owns pods and may roll out: Deployment first, then Service, PDB, autoscaler."""
    keys: dict[str, str]
    """Smoke-test cache key by variant (an adapter variant's covers its host's containers)."""


def render_variants(ctx: ModelDeploymentContext, settings: RenderSettings) -> Rendering:
    """Render every variant that may roll out; the smoke-test cache key depends on the rendering."""
    spec = ctx.spec
    children: dict[str, list[Manifest]] = {}
    keys: dict[str, str] = {}
    for variant in spec.variants:
        if variant.served_by is not None or not ctx.usable(variant):
            continue
        rendered = build_variant_children(
            ctx.obj,
            variant,
            ctx.resolutions[variant.name],
            scrape_annotations=not ctx.pod_monitor,
            autoscaler="keda" if ctx.caps.keda and prometheus_url(spec, settings) else "hpa",
            prometheus_url=prometheus_url(spec, settings),
            stager_image=settings.trainer_image,
            default_image=settings.vllm_image,
            spec=spec,
            image_pull_secrets=settings.image_pull_secrets,
        )
        children[variant.name] = rendered
        keys[variant.name] = smoke_key(variant, ctx.resolutions[variant.name], rendered[0], spec.smoke_test)
    # An adapter variant is tested in its host's pods: its verdict is about the host's containers too.
    for variant in spec.variants:
        host = spec.pods_of(variant.name)
        if variant.served_by is not None and ctx.usable(variant) and host in children:
            keys[variant.name] = smoke_key(
                variant, ctx.resolutions[variant.name], children[host][0], spec.smoke_test
            )
    return Rendering(children, keys)


def prometheus_url(spec: ModelDeploymentSpec, settings: RenderSettings) -> str | None:
    """The operator's Prometheus, else the spec's when on the allowlist (KEDA queries it)."""
    canary = spec.traffic.canary
    from_spec = canary.analysis.prometheus_url if canary and canary.analysis else None
    allowed = settings.prometheus_allowlist
    if from_spec is not None and allowed is not None and not url_allowed(from_spec, allowed):
        from_spec = None
    return settings.prometheus_url or from_spec


def children_to_apply(
    ctx: ModelDeploymentContext,
    rendering: Rendering,
    replicas: Mapping[str, int] | None,
    monitor_labels: Mapping[str, str] | None = None,
) -> list[tuple[str | None, Manifest]]:
    """(variant, child) in apply order, sized by the canary (`replicas`); the PodMonitor last."""
    result: list[tuple[str | None, Manifest]] = []
    for variant_name, children in rendering.children.items():
        size = replicas.get(variant_name) if replicas is not None else None
        result.extend((variant_name, child) for child in _with_replicas(children, size))
    if ctx.pod_monitor:
        result.append((None, build_pod_monitor(ctx.obj, monitor_labels)))
    return result


def current_replicas(ctx: ModelDeploymentContext) -> dict[str, int]:
    """Replicas each variant's Deployment asks for now, by the variant that owns the pods."""
    current = {}
    for name, deployment in ctx.deployments.items():
        replicas = (deployment.get("spec") or {}).get("replicas")
        if name is not None and isinstance(replicas, int):
            current[name] = replicas
    return current


def scale_downs(
    ctx: ModelDeploymentContext, rendering: Rendering, planned: Mapping[str, int], current: Mapping[str, int]
) -> list[tuple[str | None, Manifest]]:
    """The Deployments the canary sizes below what they ask for now (applied once the split settled)."""
    smaller = {
        name: n for name, n in planned.items() if n < current.get(name, 0) and name in rendering.children
    }
    return [
        (name, child)
        for name, child in children_to_apply(ctx, rendering, smaller)
        # An autoscaled Deployment has no replicas field: its scaler sizes it, never the canary.
        if name in smaller and child["kind"] == "Deployment" and "replicas" in child["spec"]
    ]


def canary_capacity(
    ctx: ModelDeploymentContext, statuses: Sequence[VariantStatus], ready: Mapping[str, bool]
) -> dict[str, Capacity]:
    """What each variant's ready pods can take, for the canary's weights (GPU-aware: `replicas` pods
    take 100%; an autoscaled variant or adapters on a shared base take any share with one pod)."""
    canary = ctx.spec.traffic.canary
    shared = canary is not None and ctx.spec.pods_of(canary.stable_variant) == ctx.spec.pods_of(
        canary.canary_variant
    )
    by_name = {v.name: v for v in ctx.spec.variants}
    capacity = {}
    for status in statuses:
        variant = by_name[status.name]
        pods = by_name.get(ctx.spec.pods_of(variant.name), variant)
        full = 0 if shared or pods.autoscaling is not None or variant.served_by is not None else pods.replicas
        capacity[status.name] = Capacity(
            ready=status.ready_replicas if ready.get(status.name) else 0, full=full
        )
    return capacity


def _with_replicas(children: list[Manifest], replicas: int | None) -> list[Manifest]:
    """The canary sizes Deployments; an autoscaled Deployment (no replicas field) is left to its scaler."""
    if replicas is None:
        return children
    for child in children:
        if child["kind"] == "Deployment" and "replicas" in child["spec"]:
            child["spec"]["replicas"] = replicas
    return children


# --- canary ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryInputs:
    previous: CanaryStatus | None
    ready_replicas: int
    shared_base: bool
    routers_serving: bool = True
    """Every router serves the split of the step in progress (see `plan_canary`)."""


def canary_inputs(
    ctx: ModelDeploymentContext, keys: Mapping[str, str], rollout: str | None, rollout_before: str | None
) -> CanaryInputs:
    """What the canary state machine starts from: its previous state and the candidate's tested capacity."""
    canary = ctx.spec.traffic.canary
    assert canary is not None
    spec = ctx.spec
    previous: CanaryStatus | None = ctx.previous_status.canary
    if rollout_before is not None and rollout_before != rollout:
        previous = None  # a new canary (or a re-trained one): start over, a rollback included
    # Weight moves only onto pods that passed the smoke test of the containers being rolled out.
    candidate = canary.canary_variant
    conditions = ctx.previous_conditions[candidate]
    tested = tested_key(conditions, ctx.previous_tested[candidate]) == keys.get(candidate)
    cond = find_condition(conditions, ConditionType.SMOKE_TEST_PASSED)
    passed = tested and cond is not None and cond.status == "True"
    if not spec.smoke_test.enabled:
        passed = candidate in keys
    deployment = ctx.deployments.get(spec.pods_of(candidate))
    ready = DeploymentView.of(deployment).ready if deployment is not None and passed else 0
    return CanaryInputs(
        previous=previous,
        ready_replicas=ready,
        shared_base=spec.pods_of(canary.stable_variant) == spec.pods_of(candidate),
    )


def analysis_prompts(spec: ModelDeploymentSpec, resolutions: Mapping[str, Resolution]) -> tuple[str, ...]:
    """Held-out prompts of the canary's FineTuneJob, else of the stable variant's."""
    canary = spec.traffic.canary
    if canary is None:
        return ()
    for variant in (canary.canary_variant, canary.stable_variant):
        if resolutions[variant].test_prompts:
            return resolutions[variant].test_prompts
    return ()


# --- smoke tests and variant status ----------------------------------------------------------------


def smoke_request(
    ctx: ModelDeploymentContext,
    variant: Variant,
    deployment: Mapping[str, Any] | None,
    key: str | None,
    *,
    allow_url_overrides: bool,
) -> SmokeVerdict | SmokeRequest | None:
    """None keeps the cached verdict; a pending verdict until the pods are rolled out; else a test to run."""
    spec = ctx.spec
    if deployment is None or key is None or not spec.smoke_test.enabled:
        return None
    if tested_key(ctx.previous_conditions[variant.name], ctx.previous_tested[variant.name]) == key:
        return None
    view = DeploymentView.of(deployment)
    if not (view.rolled_out and view.desired >= 1):
        return SmokeVerdict.pending("runs when the variant's current pods are rolled out and Available")
    host = spec.pods_of(variant.name)
    return SmokeRequest(
        key=key,
        url=base_url(ctx.obj, variant.name, variant_endpoint(ctx.obj, host), allowed=allow_url_overrides),
        model=variant.served_by.adapter if variant.served_by is not None else variant.name,
        prompts=smoke_prompts(spec.smoke_test, ctx.resolutions[variant.name].test_prompts),
        spec=spec.smoke_test,
    )


def adapter_not_loaded(
    ctx: ModelDeploymentContext, status: VariantStatus, problem: str | None
) -> VariantStatus:
    """A revision of a followed adapter not yet loaded in every ready pod of its host takes no traffic:
    no ready capacity, and ModelReady says which adapter and why."""
    if problem is None:
        return status
    conditions = set_condition(
        status.conditions,
        ConditionType.MODEL_READY,
        "False",
        Reason.ADAPTER_NOT_LOADED,
        problem,
        ctx.generation,
        ctx.now,
    )
    return status.model_copy(update={"ready_replicas": 0, "conditions": conditions})


def one_variant_status(
    ctx: ModelDeploymentContext,
    variant: Variant,
    deployment: Mapping[str, Any] | None,
    verdict: SmokeVerdict | None,
) -> tuple[VariantStatus, list[Event]]:
    before = ctx.previous_conditions[variant.name]
    status = variant_status(
        variant,
        deployment,
        ctx.resolutions[variant.name],
        ctx.gates[variant.name],
        verdict,
        previous_conditions=before,
        smoke_test=ctx.spec.smoke_test,
        endpoint=variant_endpoint(ctx.obj, ctx.spec.pods_of(variant.name)),
        generation=ctx.generation,
        previous_tested=ctx.previous_tested[variant.name],
        pod_problem=container_problem(ctx.pods.get(ctx.spec.pods_of(variant.name), [])),
        now=ctx.now,
    )
    return status, transition_events(variant.name, before, status.conditions)


def transition_events(variant: str, before: Sequence[Condition], after: Sequence[Condition]) -> list[Event]:
    """An Event when a condition flips, or turns to a reason that needs someone's attention."""
    events = []
    for kind in _EVENT_CONDITIONS:
        old, new = find_condition(before, kind), find_condition(after, kind)
        if new is None or new.status == "Unknown":
            continue
        warning = new.status == "False" and new.reason in _WARNING_REASONS
        # A first condition is news only as a warning: every variant starts unresolved and unavailable.
        news = warning if old is None else old.status != new.status or (warning and old.reason != new.reason)
        if news:
            events.append(
                Event(
                    "Warning" if warning else "Normal",
                    new.reason,
                    f"variant {variant}: {kind} {new.status}: {new.message}",
                )
            )
    return events


# --- pruning ---------------------------------------------------------------------------------------

# Kinds a ModelDeployment may own; optional CRDs are listed only when installed.
PRUNABLE: tuple[tuple[str, str, str | None], ...] = (
    ("apps/v1", "Deployment", None),
    ("v1", "Service", None),
    ("v1", "ConfigMap", None),
    ("networking.k8s.io/v1", "NetworkPolicy", None),
    ("policy/v1", "PodDisruptionBudget", None),
    ("autoscaling/v2", "HorizontalPodAutoscaler", None),
    ("monitoring.coreos.com/v1", "PodMonitor", "pod_monitor"),
    ("keda.sh/v1alpha1", "ScaledObject", "keda"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", "gateway_api"),
    ("inference.networking.k8s.io/v1", "InferencePool", "inference_pool"),
)


def prune_deletes(
    uid: str, owned: Sequence[Mapping[str, Any]], keep: frozenset[tuple[str, str]], held_variants: set[str]
) -> list[Delete]:
    """The children of `uid` (listed by its label) that the pass did not render, uid-guarded.

    A variant still in the spec whose model cannot be resolved right now keeps its children
    (`held_variants`): a FineTuneJob being re-run must not take a serving variant down.
    """
    deletes = []
    for item in owned:
        meta = item["metadata"]
        owners = {ref.get("uid") for ref in meta.get("ownerReferences") or []}
        if uid not in owners or (item["kind"], meta["name"]) in keep:
            continue
        if (meta.get("labels") or {}).get(LABEL_VARIANT) in held_variants:
            continue
        deletes.append(Delete(item["apiVersion"], item["kind"], meta["name"], uid=meta["uid"]))
    return deletes


# --- the whole object ------------------------------------------------------------------------------


def final_status(
    ctx: ModelDeploymentContext,
    statuses: Sequence[VariantStatus],
    weights: Mapping[str, int],
    endpoint: str | None,
    plan: CanaryPlan | None,
    shift: Shift | None = None,
    *,
    route: RouteVerdict | None = None,
) -> dict[str, Any]:
    status = deployment_status(
        {**ctx.obj, "status": ctx.previous_status.to_wire()},
        statuses,
        weights,
        ctx.now,
        endpoint=endpoint,
        canary=plan.status if plan is not None else None,
        spec=ctx.spec,
    )
    if ctx.following is not None:
        outcome = (plan.outcome, str(plan.reason), plan.message) if plan is not None else None
        status.variants, events = fold_statuses(
            ctx.following, status.variants, outcome, settled=shift is None or shift.settled, now=ctx.now
        )
        ctx.events.extend(events)
    status.conditions = canary_conditions(status.conditions, plan, ctx.generation, ctx.now)
    status.conditions = shift_condition(status.conditions, shift, ctx.generation, ctx.now)
    if route is None:  # the router provider: no HTTPRoute to report on
        status.conditions = [c for c in status.conditions if c.type != ConditionType.ROUTE_ACCEPTED]
    else:
        status.conditions = set_condition(
            status.conditions,
            ConditionType.ROUTE_ACCEPTED,
            route.status,
            route.reason,
            route.message,
            ctx.generation,
            ctx.now,
        )
    status.conditions = summary_conditions(
        status.conditions, modeldeployment_summary(status), ctx.generation, ctx.now
    )
    if plan is None:
        status.canary = None
    # Fields no longer set (a canary removed from the spec) are deleted by the status writer.
    return status.to_wire()


def shift_condition(
    conditions: Sequence[Condition], shift: Shift | None, generation: int | None, now: datetime
) -> list[Condition]:
    """TrafficShifted: what a make-before-break move waits on (capacity, routers), or that it is done."""
    if shift is None:
        return [c for c in conditions if c.type != ConditionType.TRAFFIC_SHIFTED]
    return set_condition(
        conditions,
        ConditionType.TRAFFIC_SHIFTED,
        "True" if shift.settled else "False",
        shift.reason,
        shift.message,
        generation,
        now,
    )


def requeue_after(plan: CanaryPlan | None, smoke_running: bool, shifting: bool = False) -> float | None:
    """The next canary decision, or soon while a smoke test runs (its verdict gates traffic) or the
    split is shifting (ready pods and routers are looked at again)."""
    due = [plan.requeue_after_s] if plan is not None and plan.requeue_after_s is not None else []
    if smoke_running:
        due.append(SMOKE_POLL_S)
    if shifting:
        due.append(SHIFT_POLL_S)
    return min(due, default=None)
