"""ModelDeployment: desired variants vs observed, and the status that follows. Steps are ordered here.

Order per pass: parse → read the referenced FineTuneJobs, resolve each variant's model, judge its eval
gate → list the variants' Deployments → plan the canary (replicas and weights; analysis when due) →
server-side apply each rolled-out variant's children (a deleted or edited child is restored on the next
pass) → smoke-test variants that finished rolling out → apply the traffic split (router or HTTPRoute)
with only smoke-tested, available variants in it, and read the stored weights back → prune children of
removed variants → status. Every step is idempotent: names are deterministic and applies are
server-side with one field manager, so a re-run or an operator restart converges to the same children.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
from kubetune.builders.common import LABEL_DEPLOYMENT, LABEL_VARIANT, Manifest
from kubetune.builders.finetunejob import DEFAULT_TRAINER_IMAGE
from kubetune.builders.modeldeployment import (
    DEFAULT_VLLM_IMAGE,
    ROLE_SERVING,
    build_pod_monitor,
    build_variant_children,
    variant_endpoint,
)
from kubetune.kube.client import KubeClient
from kubetune.reconcile import smoke, synthetic
from kubetune.reconcile.accept import accepted, parse_spec
from kubetune.reconcile.canary import canary_conditions, rollout_id, run_canary
from kubetune.reconcile.capabilities import Capabilities, detect
from kubetune.reconcile.common import Event, Outcome
from kubetune.reconcile.traffic import PreviousTraffic, apply_traffic, previous_traffic
from kubetune.serving.gate import GateVerdict, evaluate_gate
from kubetune.serving.resolution import Resolution, referenced_finetunejobs, resolve_variants
from kubetune.serving.smoke import SmokeVerdict, smoke_prompts
from kubetune.status.canary import CanaryPlan
from kubetune.status.conditions import find_condition
from kubetune.status.modeldeployment import (
    TERMINAL_REASONS,
    DeploymentView,
    deployment_status,
    previous_variant_conditions,
    variant_status,
)

FTJ_API = "kubetune.io/v1alpha1"
# Kinds a ModelDeployment may own; optional CRDs are listed only when installed.
_PRUNABLE: tuple[tuple[str, str, str | None], ...] = (
    ("apps/v1", "Deployment", None),
    ("v1", "Service", None),
    ("v1", "ConfigMap", None),
    ("policy/v1", "PodDisruptionBudget", None),
    ("autoscaling/v2", "HorizontalPodAutoscaler", None),
    ("monitoring.coreos.com/v1", "PodMonitor", "pod_monitor"),
    ("keda.sh/v1alpha1", "ScaledObject", "keda"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", "gateway_api"),
)
_EVENT_CONDITIONS = (
    ConditionType.MODEL_READY,
    ConditionType.EVAL_GATE_PASSED,
    ConditionType.AVAILABLE,
    ConditionType.SMOKE_TEST_PASSED,
)
SMOKE_POLL_S = 3.0
_WARNING_REASONS = {*TERMINAL_REASONS, Reason.PROGRESS_DEADLINE_EXCEEDED, Reason.FINETUNE_JOB_NOT_FOUND}

# Children applied by the last pass per object (by uid): pruning lists every kind, so it runs only
# when that set changes (and once after a start).
_applied: dict[str, frozenset[tuple[str, str]]] = {}


def forget(namespace: str, name: str, uid: str) -> None:
    """Drop what this process holds for a deleted ModelDeployment: records, smoke tests, synthetic load."""
    _applied.pop(uid, None)
    smoke.cancel(namespace, name)
    synthetic.stop(namespace, name)


def _invalid(status: ModelDeploymentStatus, generation: int | None, problem: str) -> Outcome:
    events = [] if status.phase == Phase.FAILED else [Event("Warning", Reason.INVALID_SPEC, problem)]
    status.phase = Phase.FAILED
    status.observed_generation = generation
    return Outcome(status=status.to_wire(), events=events)


async def _finetunejobs(
    client: KubeClient, namespace: str, variants: Sequence[Variant]
) -> dict[str, dict[str, Any] | None]:
    names = sorted({name for v in variants for name in referenced_finetunejobs(v)})
    return {name: await client.get(FTJ_API, "FineTuneJob", namespace, name) for name in names}


def _gates(spec: ModelDeploymentSpec, resolutions: Mapping[str, Resolution]) -> dict[str, GateVerdict]:
    metrics: dict[str, EvalMetrics | None] = {name: r.metrics for name, r in resolutions.items()}
    return {v.name: evaluate_gate(v, metrics) for v in spec.variants}


def _with_replicas(children: list[Manifest], replicas: int | None) -> list[Manifest]:
    """The canary sizes Deployments; an autoscaled Deployment (no replicas field) is left to its scaler."""
    if replicas is None:
        return children
    for child in children:
        if child["kind"] == "Deployment" and "replicas" in child["spec"]:
            child["spec"]["replicas"] = replicas
    return children


def _smoke_condition(conditions: Sequence[Condition]) -> Condition | None:
    return find_condition(conditions, ConditionType.SMOKE_TEST_PASSED)


def _routable(status: VariantStatus, was_routed: bool) -> bool:
    """Available and smoke-tested; a variant already serving keeps serving while its new pods are tested."""
    available = find_condition(status.conditions, ConditionType.AVAILABLE)
    tested = _smoke_condition(status.conditions)
    if available is None or available.status != "True" or tested is None:
        return False
    return tested.status == "True" or (tested.status == "Unknown" and was_routed)


def _transition_events(variant: str, before: Sequence[Condition], after: Sequence[Condition]) -> list[Event]:
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


async def _prune(
    client: KubeClient,
    mdep: Mapping[str, Any],
    keep: frozenset[tuple[str, str]],
    held_variants: set[str],
    caps: Capabilities,
) -> None:
    """Delete children this object owns that the pass did not render.

    A variant still in the spec whose model cannot be resolved right now keeps its children
    (`held_variants`): a FineTuneJob being re-run must not take a serving variant down.
    """
    meta = mdep["metadata"]
    for api_version, kind, capability in _PRUNABLE:
        if capability is not None and not getattr(caps, capability):
            continue
        items = await client.list(
            api_version, kind, meta["namespace"], label_selector=f"{LABEL_DEPLOYMENT}={meta['name']}"
        )
        for item in items:
            item_meta = item["metadata"]
            owners = {ref.get("uid") for ref in item_meta.get("ownerReferences") or []}
            if meta["uid"] not in owners or (kind, item_meta["name"]) in keep:
                continue
            if (item_meta.get("labels") or {}).get(LABEL_VARIANT) in held_variants:
                continue
            await client.delete(api_version, kind, meta["namespace"], item_meta["name"], uid=item_meta["uid"])


async def reconcile(client: KubeClient, obj: dict[str, Any], now: datetime, context: Any) -> Outcome:
    meta = obj["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], meta.get("generation")
    previous_status = ModelDeploymentStatus.model_validate(obj.get("status") or {})
    spec, problem = parse_spec(ModelDeploymentSpec, obj)
    previous_status.conditions = accepted(previous_status.conditions, generation, now, problem=problem)
    if spec is None:
        synthetic.stop(namespace, name)
        return _invalid(previous_status, generation, problem)
    events: list[Event] = []
    if previous_status.phase is None:
        events.append(Event("Normal", Reason.ACCEPTED, "ModelDeployment accepted"))

    jobs = await _finetunejobs(client, namespace, spec.variants)
    resolutions = resolve_variants(spec.variants, jobs)
    gates = _gates(spec, resolutions)
    caps = await detect(client)
    pod_monitor = caps.pod_monitor and spec.metrics.pod_monitor

    # By the variant that owns the pods: a servedBy variant is looked up under its host (`pods_of`).
    observed = {
        (d["metadata"].get("labels") or {}).get(LABEL_VARIANT): d
        for d in await client.list(
            "apps/v1",
            "Deployment",
            namespace,
            label_selector=f"{LABEL_DEPLOYMENT}={name},kubetune.io/role={ROLE_SERVING}",
        )
    }

    # Render every variant that may roll out; the smoke-test cache key depends on the rendering.
    rendered: dict[str, list[Manifest]] = {}
    keys: dict[str, str] = {}
    for variant in spec.variants:
        usable = resolutions[variant.name].ready and gates[variant.name].passed
        if variant.served_by is not None or not usable:
            continue
        children = build_variant_children(
            obj,
            variant,
            resolutions[variant.name],
            scrape_annotations=not pod_monitor,
            autoscaler="keda" if caps.keda and _prometheus_url(spec) else "hpa",
            prometheus_url=os.environ.get("KUBETUNE_PROMETHEUS_URL") or None,
            stager_image=os.environ.get("KUBETUNE_TRAINER_IMAGE") or DEFAULT_TRAINER_IMAGE,
            default_image=os.environ.get("KUBETUNE_VLLM_IMAGE") or DEFAULT_VLLM_IMAGE,
        )
        rendered[variant.name] = children
        keys[variant.name] = smoke.smoke_key(variant, resolutions[variant.name], children[0])
    # An adapter variant is tested in its host's pods: its verdict is about the host's containers too.
    for variant in spec.variants:
        host = spec.pods_of(variant.name)
        usable = resolutions[variant.name].ready and gates[variant.name].passed
        if variant.served_by is not None and usable and host in rendered:
            keys[variant.name] = smoke.smoke_key(variant, resolutions[variant.name], rendered[host][0])
    previous_conditions = {v.name: previous_variant_conditions(obj, v.name) for v in spec.variants}

    traffic_before = await previous_traffic(client, obj, spec, caps)
    plan, canary_events = await _canary(
        spec,
        resolutions,
        previous_status,
        traffic_before,
        observed,
        keys,
        previous_conditions,
        namespace,
        name,
        now,
    )
    events += canary_events
    synthetic.ensure(
        namespace, name, synthetic.desired_load(obj, spec, plan, _analysis_prompts(spec, resolutions))
    )

    applied: dict[str, dict[str, Any]] = {}
    keep: set[tuple[str, str]] = set()
    for variant_name, children in rendered.items():
        replicas = plan.replicas.get(variant_name) if plan is not None else None
        for child in _with_replicas(children, replicas):
            stored = await client.apply(child)
            keep.add((child["kind"], child["metadata"]["name"]))
            if child["kind"] == "Deployment":
                applied[variant_name] = stored
    if pod_monitor:
        monitor = build_pod_monitor(obj)
        await client.apply(monitor)
        keep.add((monitor["kind"], monitor["metadata"]["name"]))

    statuses: list[VariantStatus] = []
    for variant in spec.variants:
        before = previous_conditions[variant.name]
        pods = spec.pods_of(variant.name)
        deployment = applied.get(pods) or observed.get(pods)
        verdict = await _smoke(
            obj,
            spec,
            variant,
            applied.get(pods),
            keys.get(variant.name),
            before,
            resolutions[variant.name].test_prompts,
        )
        one = variant_status(
            variant,
            deployment,
            resolutions[variant.name],
            gates[variant.name],
            verdict,
            previous_conditions=before,
            smoke_test=spec.smoke_test,
            endpoint=variant_endpoint(obj, pods),
            generation=generation,
            now=now,
        )
        statuses.append(one)
        events += _transition_events(variant.name, before, one.conditions)

    ready = {s.name: _routable(s, traffic_before.routed.get(s.name, False)) for s in statuses}
    weights = plan.weights if plan is not None else {v.name: v.weight for v in spec.variants}
    traffic = await apply_traffic(
        client, obj, spec, weights, ready, rollout=rollout_id(spec, resolutions), caps=caps
    )
    if traffic.problem and previous_status.phase is None:
        events.append(Event("Warning", Reason.TRAFFIC_NOT_APPLIED, traffic.problem))
    keep |= {(c["kind"], c["metadata"]["name"]) for c in traffic.children}

    held = {v.name for v in spec.variants if v.name not in rendered}
    kept = frozenset(keep)
    if _applied.get(meta["uid"]) != kept:
        await _prune(client, obj, kept, held, caps)
        _applied[meta["uid"]] = kept

    status = deployment_status(
        {**obj, "status": previous_status.to_wire()},
        statuses,
        traffic.weights,
        now,
        endpoint=traffic.endpoint,
        canary=plan.status if plan is not None else None,
    )
    status.conditions = canary_conditions(status.conditions, plan, generation, now)
    if plan is None:
        status.canary = None
    wire = status.to_wire()
    # Fields that no longer apply (a canary removed from the spec) are deleted by the merge patch.
    for key in (obj.get("status") or {}).keys() - wire.keys():
        wire[key] = None
    return Outcome(status=wire, events=events, requeue_after_s=_requeue_after(plan, namespace, name))


def _requeue_after(plan: CanaryPlan | None, namespace: str, name: str) -> float | None:
    """The next canary decision, or soon while a smoke test runs (its verdict gates traffic)."""
    due = [plan.requeue_after_s] if plan is not None and plan.requeue_after_s is not None else []
    if smoke.running(namespace, name):
        due.append(SMOKE_POLL_S)
    return min(due, default=None)


def _analysis_prompts(spec: ModelDeploymentSpec, resolutions: Mapping[str, Resolution]) -> tuple[str, ...]:
    """Held-out prompts of the canary's FineTuneJob, else of the stable variant's."""
    canary = spec.traffic.canary
    if canary is None:
        return ()
    for variant in (canary.canary_variant, canary.stable_variant):
        if resolutions[variant].test_prompts:
            return resolutions[variant].test_prompts
    return ()


def _prometheus_url(spec: ModelDeploymentSpec) -> str | None:
    canary = spec.traffic.canary
    from_spec = canary.analysis.prometheus_url if canary and canary.analysis else None
    return os.environ.get("KUBETUNE_PROMETHEUS_URL") or from_spec


async def _canary(
    spec: ModelDeploymentSpec,
    resolutions: Mapping[str, Resolution],
    previous_status: ModelDeploymentStatus,
    traffic_before: PreviousTraffic,
    observed: Mapping[str | None, dict[str, Any]],
    keys: Mapping[str, str],
    previous_conditions: Mapping[str, list[Condition]],
    namespace: str,
    deployment_name: str,
    now: datetime,
) -> tuple[CanaryPlan | None, list[Event]]:
    canary = spec.traffic.canary
    if canary is None:
        return None, []
    previous: CanaryStatus | None = previous_status.canary
    current_rollout = rollout_id(spec, resolutions)
    if traffic_before.rollout is not None and traffic_before.rollout != current_rollout:
        previous = None  # a new canary (or a re-trained one): start over, a rollback included
    # Weight moves only onto pods that passed the smoke test of the containers being rolled out.
    candidate = canary.canary_variant
    tested = smoke.tested_key(previous_conditions[candidate]) == keys.get(candidate)
    cond = _smoke_condition(previous_conditions[candidate])
    passed = tested and cond is not None and cond.status == "True"
    if not spec.smoke_test.enabled:
        passed = candidate in keys
    deployment = observed.get(spec.pods_of(candidate))
    ready = DeploymentView.of(deployment).ready if deployment is not None and passed else 0
    result = await run_canary(
        spec,
        previous,
        canary_ready_replicas=ready,
        shared_base=spec.pods_of(canary.stable_variant) == spec.pods_of(candidate),
        namespace=namespace,
        deployment=deployment_name,
        now=now,
    )
    return result.plan, result.events


async def _smoke(
    mdep: Mapping[str, Any],
    spec: ModelDeploymentSpec,
    variant: Variant,
    deployment: Mapping[str, Any] | None,
    key: str | None,
    before: Sequence[Condition],
    test_prompts: Sequence[str] = (),
) -> SmokeVerdict | None:
    """None keeps the cached verdict; a pending verdict until the current containers have been tested."""
    if deployment is None or key is None or not spec.smoke_test.enabled:
        return None
    if smoke.tested_key(before) == key:
        return None
    view = DeploymentView.of(deployment)
    if not (view.rolled_out and view.desired >= 1):
        return SmokeVerdict.pending("runs when the variant's current pods are rolled out and Available")
    meta = mdep["metadata"]
    host = spec.pods_of(variant.name)
    served_name = variant.served_by.adapter if variant.served_by is not None else variant.name
    return await smoke.smoke_verdict(
        (meta["namespace"], meta["name"], variant.name),
        key,
        smoke.base_url(mdep, variant.name, variant_endpoint(mdep, host)),
        served_name,
        smoke_prompts(spec.smoke_test, test_prompts),
        spec.smoke_test,
    )
