"""ModelDeployment: desired variants vs observed, and the status that follows. Steps are ordered here.

Order per pass: observe (a variant following a FineTuneSchedule is replaced by its revisions in play,
the effective spec of `kubetune.planning.revisions`; the referenced FineTuneJobs resolve each variant's
model and judge its eval gate; the optional APIs; the variants' Deployments; the traffic object's
rollout) → create the router's token Secret if absent and read its token → render the variants →
plan the canary (replicas and weights; analysis when due) → server-side apply each rolled-out variant's
children, never below the replicas it has (a deleted or edited child is restored
on the next pass) → smoke-test variants that finished rolling out → apply the traffic split (router or
HTTPRoute) with only smoke-tested variants with a ready pod in it, a canary's weights capped by ready
capacity, and read the stored weights back → once the split is the planned one and every router pod
serves it, scale down the variants that lost weight (make-before-break) → prune children of removed
variants → status. The decisions are the pure steps of `kubetune.planning.modeldeployment`;
every step is idempotent (deterministic names, server-side apply with one field manager), so a re-run
or an operator restart converges to the same children.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from kubetune.api.conditions import Reason
from kubetune.api.finetuneschedule import KIND as FINETUNESCHEDULE
from kubetune.api.finetuneschedule import FineTuneScheduleStatus
from kubetune.api.modeldeployment import (
    KIND,
    CanaryStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    VariantStatus,
)
from kubetune.builders.common import LABEL_DEPLOYMENT, LABEL_VARIANT
from kubetune.builders.httproute import GATEWAY_PROVIDERS
from kubetune.builders.modeldeployment import ROLE_SERVING
from kubetune.builders.networkpolicy import Peers
from kubetune.builders.router import routed_weights, router_config_of
from kubetune.builders.vllm import VLLM_PORT
from kubetune.kube.client import KubeClient
from kubetune.planning import modeldeployment as planning
from kubetune.planning import revisions
from kubetune.planning.admission import accepted, parse_spec
from kubetune.planning.canary import CanaryPlan
from kubetune.planning.canary_report import rollout_id
from kubetune.planning.modeldeployment import ModelDeploymentContext, Rendering, RenderSettings
from kubetune.planning.plan import Event, Outcome
from kubetune.planning.smoke import SmokeRequest
from kubetune.planning.synthetic import desired_load
from kubetune.planning.traffic_shift import Shift, capped_weights, held_replicas, plan_shift, routable
from kubetune.reconcile.apply import NameConflict, Ownership, apply_in_order
from kubetune.reconcile.canary import run_canary
from kubetune.reconcile.capabilities import CapabilityCache
from kubetune.reconcile.conflict import name_conflict_outcome
from kubetune.reconcile.prune import prune
from kubetune.reconcile.router_push import needs_push, push_router_config
from kubetune.reconcile.router_readback import read_routers
from kubetune.reconcile.router_token import ensure_router_token
from kubetune.reconcile.smoke import SmokeTests
from kubetune.reconcile.synthetic import SyntheticTraffic
from kubetune.reconcile.traffic import AppliedTraffic, PreviousTraffic, apply_traffic, previous_traffic
from kubetune.serving.lora_runtime import AdapterSyncResult, ManagedAdapters, sync_pod_adapters
from kubetune.serving.resolution import (
    Resolution,
    ResolutionState,
    referenced_finetunejobs,
    resolve_variants,
)
from kubetune.serving.smoke import SmokeVerdict
from kubetune.settings import OperatorSettings
from kubetune.status.modeldeployment import previous_smoke_tested, previous_variant_conditions
from kubetune.status.pods import pod_ready_ip

FTJ_API = "kubetune.io/v1alpha1"


class AdapterSync(Protocol):
    async def __call__(
        self, base_url: str, desired: Mapping[str, str], *, managed: ManagedAdapters
    ) -> AdapterSyncResult: ...


@dataclass
class _Applied:
    """What the apply step stored: the variants' Deployments and the kept children (kind, name)."""

    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    keep: set[tuple[str, str]] = field(default_factory=set)


class ModelDeploymentReconciler:
    kind = KIND

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.render_settings = RenderSettings(
            trainer_image=settings.trainer_image,
            vllm_image=settings.vllm_image,
            prometheus_url=settings.prometheus_url,
            allow_url_overrides=settings.allow_url_overrides,
            image_pull_secrets=settings.image_pull_secrets,
            monitor_labels=settings.monitor_labels,
            prometheus_allowlist=settings.prometheus_allowlist,
        )
        self.capabilities = CapabilityCache(settings.crd_cache_seconds)
        # Injected by tests: the pods are asked over HTTP (one call per pod and pass).
        self.sync_adapters: AdapterSync = sync_pod_adapters
        self.smoke = SmokeTests(wait_s=settings.smoke_wait_seconds, timeout_s=settings.smoke_timeout_seconds)
        self.synthetic = SyntheticTraffic()
        # Children applied by the last pass per object (by uid): pruning lists every kind, so it runs
        # only when that set changes (and once after a start).
        self._applied: dict[str, frozenset[tuple[str, str]]] = {}
        self.owned = Ownership()
        # Since when pods losing weight wait for the routers (by uid), for the give-up bound. Lost on a
        # restart, which only makes the operator wait for the routers longer.
        self._router_wait: dict[str, datetime] = {}

    def forget(self, uid: str) -> None:
        """Drop what this process holds for a deleted ModelDeployment: records, smoke tests, load."""
        self._applied.pop(uid, None)
        self.owned.forget(uid)
        self._router_wait.pop(uid, None)
        self.smoke.cancel(uid)
        self.synthetic.stop(uid)

    async def reconcile(
        self, client: KubeClient, obj: dict[str, Any], now: datetime, *, resync: bool
    ) -> Outcome:
        generation = obj["metadata"].get("generation")
        previous_status = ModelDeploymentStatus.model_validate(obj.get("status") or {})
        spec, problem = parse_spec(ModelDeploymentSpec, obj)
        if spec is not None and (problem := revisions.following_problem(spec)):
            spec = None
        previous_status.conditions = accepted(previous_status.conditions, generation, now, problem=problem)
        if spec is None:
            self.synthetic.stop(obj["metadata"]["uid"])
            status, events = planning.invalid_status(previous_status, generation, problem, now)
            return Outcome(status=status, events=events)
        try:
            return await self._pass(client, obj, spec, previous_status, now)
        except NameConflict as conflict:
            self.synthetic.stop(obj["metadata"]["uid"])
            return name_conflict_outcome(obj, previous_status.to_wire(), conflict, now)

    async def _pass(
        self,
        client: KubeClient,
        obj: dict[str, Any],
        spec: ModelDeploymentSpec,
        previous_status: ModelDeploymentStatus,
        now: datetime,
    ) -> Outcome:
        ctx = await self.observe(client, obj, spec, previous_status, now)
        if previous_status.phase is None:
            ctx.events.append(Event("Normal", Reason.ACCEPTED, "ModelDeployment accepted"))

        # Before the router Deployment that mounts it; the value signs only the synthetic traffic.
        token = None if spec.traffic.provider in GATEWAY_PROVIDERS else await ensure_router_token(client, obj)
        rendering = planning.render_variants(ctx, self.render_settings)
        traffic_before = await previous_traffic(client, ctx)
        plan = await self._canary(client, ctx, rendering, traffic_before)
        self.synthetic.ensure(
            ctx.uid,
            desired_load(
                obj,
                ctx.spec,
                plan,
                planning.analysis_prompts(ctx.spec, ctx.resolutions),
                allow_url_override=self.settings.allow_url_overrides,
                token=token,
            ),
        )
        # Make-before-break: pods are added first; a variant losing pods keeps them until the split
        # is the planned one and every router serves it (scaled down at the end of the pass).
        current = planning.current_replicas(ctx)
        held = held_replicas(plan.replicas, current) if plan is not None else None
        applied = await self._apply_children(client, ctx, rendering, held)
        # Before the statuses: a revision of a followed adapter is routable (and smoke-tested) only
        # once every ready pod of its host has it loaded.
        not_loaded = await self._sync_adapters(ctx)
        statuses = await self._variant_statuses(ctx, rendering, applied)
        statuses = [planning.adapter_not_loaded(ctx, s, not_loaded.get(s.name)) for s in statuses]
        smaller = planning.scale_downs(ctx, rendering, plan.replicas, current) if plan is not None else []
        # An adapter revision leaving is unloaded after the outcome is recorded, which waits for the
        # routers like pods losing weight do.
        pending = bool(smaller) or revisions.adapter_move_pending(ctx.following)
        traffic, shift = await self._apply_traffic(
            client, ctx, statuses, traffic_before, plan, pending, token
        )
        if shift is not None and shift.scale_down:
            await apply_in_order(client, [child for _, child in smaller], self.owned)
        applied.keep |= {(c["kind"], c["metadata"]["name"]) for c in traffic.children}
        await self._prune(client, ctx, rendering, frozenset(applied.keep))
        shifting = shift is not None and not shift.settled
        return Outcome(
            status=planning.final_status(
                ctx, statuses, traffic.weights, traffic.endpoint, plan, shift, route=traffic.route
            ),
            events=ctx.events,
            requeue_after_s=planning.requeue_after(plan, self.smoke.running(ctx.uid), shifting),
        )

    async def observe(
        self,
        client: KubeClient,
        obj: dict[str, Any],
        spec: ModelDeploymentSpec,
        previous_status: ModelDeploymentStatus,
        now: datetime,
    ) -> ModelDeploymentContext:
        meta = obj["metadata"]
        following = await self._follow(client, meta["namespace"], spec, previous_status)
        if following is not None:
            spec = following.effective.spec
        names = sorted({name for v in spec.variants for name in referenced_finetunejobs(v)})
        jobs = {name: await client.get(FTJ_API, "FineTuneJob", meta["namespace"], name) for name in names}
        resolutions = resolve_variants(spec.variants, jobs)
        for name, track in (following.tracks if following is not None else {}).items():
            if track.waiting is not None and name in resolutions and track.adapter is None:
                resolutions[name] = Resolution(ResolutionState.WAITING, *track.waiting)
        desires: list[revisions.AdapterDesire] = []
        if following is not None:
            resolutions, desires = revisions.adapter_resolutions(following, resolutions)
        caps = await self.capabilities.detect(client)
        # By the variant that owns the pods: a servedBy variant is looked up under its host (`pods_of`).
        deployments = {
            (d["metadata"].get("labels") or {}).get(LABEL_VARIANT): d
            for d in await client.list(
                "apps/v1",
                "Deployment",
                meta["namespace"],
                label_selector=f"{LABEL_DEPLOYMENT}={meta['name']},kubetune.io/role={ROLE_SERVING}",
            )
        }
        pods: dict[str | None, list[dict[str, Any]]] = {}
        for pod in await client.list(
            "v1",
            "Pod",
            meta["namespace"],
            label_selector=f"{LABEL_DEPLOYMENT}={meta['name']},kubetune.io/role={ROLE_SERVING}",
        ):
            pods.setdefault((pod["metadata"].get("labels") or {}).get(LABEL_VARIANT), []).append(pod)
        return ModelDeploymentContext(
            obj=obj,
            spec=spec,
            pods=pods,
            now=now,
            previous_status=previous_status,
            resolutions=resolutions,
            gates=planning.gates(spec, resolutions),
            caps=caps,
            deployments=deployments,
            previous_conditions={v.name: previous_variant_conditions(obj, v.name) for v in spec.variants},
            previous_tested={v.name: previous_smoke_tested(obj, v.name) for v in spec.variants},
            following=following,
            adapter_desires=tuple(desires),
        )

    async def _follow(
        self,
        client: KubeClient,
        namespace: str,
        spec: ModelDeploymentSpec,
        previous_status: ModelDeploymentStatus,
    ) -> revisions.Following | None:
        """Read the followed FineTuneSchedules; plan which of their runs serve (the effective spec)."""
        names = sorted(
            set(revisions.followed_schedules(spec).values())
            | {schedule for _, schedule in revisions.followed_adapters(spec).values()}
        )
        schedules: dict[str, FineTuneScheduleStatus | None] = {}
        outputs: dict[str, revisions.FollowedOutput] = {}
        for name in names:
            body = await client.get(FTJ_API, FINETUNESCHEDULE, namespace, name)
            if body is not None:
                outputs[name] = revisions.followed_output(body)
            # Only the status matters here (the runs and their verdicts), written by the operator itself.
            try:
                schedules[name] = (
                    FineTuneScheduleStatus.model_validate(body.get("status") or {})
                    if body is not None
                    else None
                )
            except ValidationError:
                schedules[name] = FineTuneScheduleStatus()  # unreadable: no good run to follow yet
        return revisions.follow(spec, schedules, previous_status.variants, outputs)

    async def _sync_adapters(self, ctx: ModelDeploymentContext) -> dict[str, str]:
        """Load the desired revisions of followed adapters into every ready pod of their hosts, unload
        the ones no longer desired. By internal variant: why it is not loaded everywhere yet."""
        problems: dict[str, str] = {}
        hosts: dict[str, list[revisions.AdapterDesire]] = {}
        for desire in ctx.adapter_desires:
            hosts.setdefault(desire.host, []).append(desire)
        for host, desires in hosts.items():
            desired = {d.name: d.path for d in desires}
            managed = ManagedAdapters.of(ctx.resolutions[host])
            pods = [p for p in ctx.pods.get(host, []) if pod_ready_ip(p)]
            if not pods:
                for d in desires:
                    problems[d.variant] = f"adapter {d.name}: no ready pod of variant {host} to load it into"
            for pod in pods:
                url = f"http://{pod_ready_ip(pod)}:{VLLM_PORT}"
                result = await self.sync_adapters(url, desired, managed=managed)
                for d in desires:
                    if result.loaded.get(d.name) != d.path and d.variant not in problems:
                        why = result.failed.get(d.name) or result.error or "not listed by the pod"
                        problems[d.variant] = f"adapter {d.name} in pod {pod['metadata']['name']}: {why}"
        return problems

    async def _canary(
        self,
        client: KubeClient,
        ctx: ModelDeploymentContext,
        rendering: Rendering,
        traffic_before: PreviousTraffic,
    ) -> CanaryPlan | None:
        if ctx.spec.traffic.canary is None:
            return None
        rollout = rollout_id(ctx.spec, ctx.resolutions)
        inputs = planning.canary_inputs(ctx, rendering.keys, rollout, traffic_before.rollout)
        effective = ctx.following.effective if ctx.following is not None else None
        if effective is not None and effective.settled_canary:
            inputs = dataclasses.replace(inputs, previous=revisions.settled_status(ctx.spec.traffic.canary))
        serving = await self._routers_serving(client, ctx, inputs.previous, traffic_before)
        inputs = dataclasses.replace(inputs, routers_serving=serving)
        result = await run_canary(
            ctx.spec,
            inputs,
            namespace=ctx.namespace,
            deployment=ctx.name,
            now=ctx.now,
            prometheus_allowlist=self.settings.prometheus_allowlist,
        )
        ctx.events.extend(result.events)
        if effective is not None and effective.share is not None:
            fixed = {v.name: v.weight for v in ctx.spec.variants}
            weights = revisions.spread_weights(result.plan.weights, effective, fixed)
            return dataclasses.replace(result.plan, weights=weights)
        return result.plan

    async def _apply_children(
        self,
        client: KubeClient,
        ctx: ModelDeploymentContext,
        rendering: Rendering,
        replicas: Mapping[str, int] | None,
    ) -> _Applied:
        applied = _Applied()
        to_apply = planning.children_to_apply(ctx, rendering, replicas, self.render_settings.monitor_labels)
        stored = await apply_in_order(client, [child for _, child in to_apply], self.owned)
        for (variant_name, child), result in zip(to_apply, stored, strict=True):
            applied.keep.add((child["kind"], child["metadata"]["name"]))
            if variant_name is not None and child["kind"] == "Deployment":
                applied.deployments[variant_name] = result
        return applied

    async def _routers_serving(
        self,
        client: KubeClient,
        ctx: ModelDeploymentContext,
        previous: CanaryStatus | None,
        traffic_before: PreviousTraffic,
    ) -> bool:
        """Whether every router pod serves the split the canary step in progress wrote (what the
        ConfigMap holds now). Asked only while a step waits for it (`stepServedAt` unset); after
        `router_confirm_seconds` the step goes on without routers that do not answer (an operator
        outside the pod network), as make-before-break does."""
        if previous is None or previous.weight == 0 or previous.step_served_at is not None:
            return True
        if ctx.spec.traffic.provider in GATEWAY_PROVIDERS or not traffic_before.weights:
            return True
        waited = (ctx.now - (previous.step_started_at or ctx.now)).total_seconds()
        if waited >= self.settings.router_confirm_seconds:
            return True
        view = await read_routers(
            client,
            ctx.obj,
            traffic_before.weights,
            allow_url_overrides=self.settings.allow_url_overrides,
            waited_s=waited,
        )
        return view.confirmed

    async def _variant_statuses(
        self, ctx: ModelDeploymentContext, rendering: Rendering, applied: _Applied
    ) -> list[VariantStatus]:
        statuses: list[VariantStatus] = []
        for variant in ctx.spec.variants:
            pods = ctx.spec.pods_of(variant.name)
            request = planning.smoke_request(
                ctx,
                variant,
                applied.deployments.get(pods),
                rendering.keys.get(variant.name),
                allow_url_overrides=self.settings.allow_url_overrides,
            )
            verdict = await self._smoke_verdict(ctx, variant.name, request)
            deployment = applied.deployments.get(pods) or ctx.deployments.get(pods)
            status, events = planning.one_variant_status(ctx, variant, deployment, verdict)
            statuses.append(status)
            ctx.events.extend(events)
        return statuses

    async def _smoke_verdict(
        self, ctx: ModelDeploymentContext, variant: str, request: SmokeVerdict | SmokeRequest | None
    ) -> SmokeVerdict | None:
        if isinstance(request, SmokeRequest):
            return await self.smoke.verdict((ctx.uid, variant), request)
        return request

    async def _apply_traffic(
        self,
        client: KubeClient,
        ctx: ModelDeploymentContext,
        statuses: Sequence[VariantStatus],
        traffic_before: PreviousTraffic,
        plan: CanaryPlan | None,
        scale_down_pending: bool,
        token: str | None,
    ) -> tuple[AppliedTraffic, Shift | None]:
        """Apply the split: routable variants on ready capacity; a canary's weights capped by it. A
        changed router config is pushed to the router pods at once (`router_push`)."""
        ready = {s.name: routable(s, traffic_before.routed.get(s.name, False)) for s in statuses}
        if plan is None:
            weights: Mapping[str, int] = {v.name: v.weight for v in ctx.spec.variants}
            capacity = None
        else:
            capacity = planning.canary_capacity(ctx, statuses, ready)
            weights = capped_weights(plan.weights, capacity, traffic_before.weights)
        traffic = await apply_traffic(
            client,
            ctx,
            weights,
            ready,
            rollout=rollout_id(ctx.spec, ctx.resolutions),
            defaults=self.settings.router,
            previous=traffic_before.config,
            pull_secrets=self.settings.image_pull_secrets,
            owned=self.owned,
            peers=(
                Peers(self.settings.operator_namespace, self.settings.monitoring_namespace)
                if self.settings.network_policies
                else None
            ),
        )
        if traffic.problem and ctx.previous_status.phase is None:
            ctx.events.append(Event("Warning", Reason.TRAFFIC_NOT_APPLIED, traffic.problem))
        config = router_config_of(traffic.children[0]) if traffic.children else None
        if config is not None and token is not None and needs_push(config, traffic_before.config):
            await push_router_config(
                client, ctx.obj, config, token, allow_url_overrides=self.settings.allow_url_overrides
            )
        if plan is None or capacity is None:
            return traffic, None
        routers = None
        # The routers are asked only when pods wait to go and the split is the planned one (before,
        # nothing scales down anyway).
        if config is not None and scale_down_pending and weights == plan.weights:
            since = self._router_wait.get(ctx.uid)
            routers = await read_routers(
                client,
                ctx.obj,
                routed_weights(config),
                allow_url_overrides=self.settings.allow_url_overrides,
                waited_s=(ctx.now - since).total_seconds() if since is not None else 0.0,
            )
        shift = plan_shift(
            plan.weights,
            capacity,
            traffic_before.weights,
            routers,
            confirm_timeout_s=self.settings.router_confirm_seconds,
        )
        if shift.reason is Reason.WAITING_FOR_ROUTERS:
            self._router_wait.setdefault(ctx.uid, ctx.now)
        else:
            self._router_wait.pop(ctx.uid, None)
        return traffic, shift

    async def _prune(
        self,
        client: KubeClient,
        ctx: ModelDeploymentContext,
        rendering: Rendering,
        keep: frozenset[tuple[str, str]],
    ) -> None:
        if self._applied.get(ctx.uid) == keep:
            return
        held = {v.name for v in ctx.spec.variants if v.name not in rendering.children}
        await prune(client, ctx.obj, keep, held, ctx.caps)
        self._applied[ctx.uid] = keep
