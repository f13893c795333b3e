"""FineTuneJob: observe children, compute status, converge children. The only place steps are ordered.

Order per pass: parse + preflight → list Jobs/pods (by label) → pure `observe()` gives the
status and decisions → server-side apply the shared children (ConfigMap, Service, RBAC) →
create/delete Jobs as decided. Every step is idempotent: names are deterministic, applies
are server-side with one field manager, and deletes are guarded by uid, so a re-run,
an operator restart or a 409 converges to the same children.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus, Phase
from kubetune.builders.common import ANNOTATION_SPEC_HASH, LABEL_JOB, LABEL_ROLE
from kubetune.builders.finetunejob import (
    DEFAULT_TRAINER_IMAGE,
    LABEL_ATTEMPT,
    ROLE_TRAIN,
    build_children,
    job_label_value,
    training_job_patch,
)
from kubetune.kube.client import ApiError, KubeClient
from kubetune.preflight import Problem, preflight
from kubetune.reconcile.accept import accepted, parse_spec
from kubetune.reconcile.common import Event, Outcome
from kubetune.status.conditions import set_condition
from kubetune.status.finetunejob import observe

TRAINER_IMAGE = os.environ.get("KUBETUNE_TRAINER_IMAGE", DEFAULT_TRAINER_IMAGE)
NODE_CACHE_SECONDS = 60.0
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

FULL_APPLY_SECONDS = 600.0
RESYNC = "resync"

_node_capacity: tuple[float, dict[str, int] | None] = (0.0, None)
_applied_at: dict[str, float] = {}


def forget(uid: str) -> None:
    """Drop what this process remembers of a deleted FineTuneJob."""
    _applied_at.pop(uid, None)


async def gpu_capacity_by_type(client: KubeClient) -> dict[str, int] | None:
    """Largest allocatable nvidia.com/gpu per node, by GPU product; cached for a minute."""
    global _node_capacity
    fetched_at, capacity = _node_capacity
    if time.monotonic() - fetched_at < NODE_CACHE_SECONDS:
        return capacity
    try:
        nodes = await client.list("v1", "Node", None)
    except ApiError as exc:
        if exc.status != 403:
            raise
        capacity = None
    else:
        capacity = {}
        for node in nodes:
            product = node["metadata"].get("labels", {}).get(GPU_PRODUCT_LABEL)
            gpus = int(node.get("status", {}).get("allocatable", {}).get("nvidia.com/gpu", "0") or 0)
            if product:
                capacity[product] = max(capacity.get(product, 0), gpus)
    _node_capacity = (time.monotonic(), capacity)
    return capacity


async def _deepspeed_from_ref(client: KubeClient, spec: FineTuneJobSpec, namespace: str) -> str | None:
    ref = spec.deepspeed.config_ref if spec.deepspeed else None
    if ref is None:
        return None
    config_map = await client.get("v1", "ConfigMap", namespace, ref.name)
    if config_map is None:
        return None
    value = config_map.get("data", {}).get(ref.key)
    return str(value) if value is not None else None


def _live_training_job(jobs: list[dict[str, Any]], deleting: tuple[str, ...]) -> dict[str, Any] | None:
    """The latest training Job, if it is still running and stays (not finished, not being replaced)."""
    train = [j for j in jobs if j["metadata"].get("labels", {}).get(LABEL_ROLE) == ROLE_TRAIN]
    if not train:
        return None
    latest = max(train, key=lambda j: int(j["metadata"].get("labels", {}).get(LABEL_ATTEMPT, "0")))
    finished = {
        c.get("type")
        for c in (latest.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    } & {"Complete", "Failed"}
    if finished or latest["metadata"].get("deletionTimestamp") or latest["metadata"]["name"] in deleting:
        return None
    return latest


def _run_policy_patch(job: dict[str, Any], spec: FineTuneJobSpec) -> dict[str, Any] | None:
    """Merge patch bringing a live training Job's mutable fields in line with runPolicy, or None."""
    wanted = training_job_patch(spec)["spec"]
    current = job.get("spec") or {}
    changes: dict[str, Any] = {}
    for key in ("activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        if current.get(key) != wanted.get(key):
            changes[key] = wanted.get(key)  # None removes a limit runPolicy no longer sets
    # With a Kueue queue `suspend` is Kueue's (training_job_patch leaves it out).
    if "suspend" in wanted and bool(current.get("suspend")) != wanted["suspend"]:
        changes["suspend"] = wanted["suspend"]
    return {"spec": changes} if changes else None


def _shared_children_due(
    obj: dict[str, Any], jobs: list[dict[str, Any]], spec_hash: str, *, resync: bool, training: bool
) -> bool:
    """Apply the stage's ConfigMap/Service/RBAC when its Job of this spec is missing, or on a resync.

    A Job of the stage carrying the current spec hash proves an earlier pass applied them (they are
    applied before it); re-applying on every event would cost up to five writes per pass for nothing.
    Drift (someone deleted the ConfigMap) is repaired by the resync pass at most every FULL_APPLY_SECONDS.
    """
    stage_jobs = [j for j in jobs if not training or _role(j) == ROLE_TRAIN]
    if not any(
        j["metadata"].get("annotations", {}).get(ANNOTATION_SPEC_HASH) == spec_hash for j in stage_jobs
    ):
        return True
    last = _applied_at.get(obj["metadata"]["uid"], 0.0)
    return resync and time.monotonic() - last > FULL_APPLY_SECONDS


def _role(job: dict[str, Any]) -> str | None:
    return (job["metadata"].get("labels") or {}).get(LABEL_ROLE)


def _invalid(
    obj: dict[str, Any], status: FineTuneJobStatus, generation: int | None, now: datetime, message: str
) -> Outcome:
    events = [] if status.phase == Phase.FAILED else [Event("Warning", Reason.INVALID_SPEC, message)]
    status.phase = Phase.FAILED
    status.conditions = set_condition(
        status.conditions, ConditionType.FAILED, "True", Reason.INVALID_SPEC, message, generation, now
    )
    status.observed_generation = generation
    return Outcome(status=status.to_wire(), events=events)


async def reconcile(client: KubeClient, obj: dict[str, Any], now: datetime, context: Any) -> Outcome:
    meta = obj["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], meta.get("generation")
    status = FineTuneJobStatus.model_validate(obj.get("status") or {})
    spec, problem = parse_spec(FineTuneJobSpec, obj)
    status.conditions = accepted(status.conditions, generation, now, problem=problem)
    if spec is None:
        return _invalid(obj, status, generation, now, problem)

    deepspeed_text = await _deepspeed_from_ref(client, spec, namespace)
    problems: list[Problem] = preflight(
        spec, node_gpu_capacity=await gpu_capacity_by_type(client), model_context_length=None
    )
    try:
        desired = build_children(
            obj, restart=0, deepspeed_from_ref=deepspeed_text, trainer_image=TRAINER_IMAGE
        )
    except ValueError as exc:
        problems.append(Problem("error", "spec.deepspeed.configRef", str(exc)))
        desired = None

    selector = f"{LABEL_JOB}={job_label_value(name)}"
    jobs = await client.list("batch/v1", "Job", namespace, label_selector=selector)
    # Pods only matter through their Jobs (failure reasons, gang state): a job with none has none to read.
    pods = await client.list("v1", "Pod", namespace, label_selector=selector) if jobs else []
    observed = dict(obj, status=status.to_wire())
    observation = observe(
        observed, jobs, pods, now, problems=problems, desired_spec_hash=desired.spec_hash if desired else None
    )
    decisions = observation.decisions
    new_status = observation.status
    new_status.conditions = accepted(new_status.conditions, generation, now, problem="")

    if desired is not None and new_status.phase not in (Phase.SUCCEEDED, Phase.FAILED):
        writes: list[Coroutine[Any, Any, Any]] = []
        training = decisions.create_training or any(_role(j) == ROLE_TRAIN for j in jobs)
        if _shared_children_due(obj, jobs, desired.spec_hash, resync=context == RESYNC, training=training):
            stage = desired.shared() if training else desired.for_validation()
            writes.extend(client.apply(manifest) for manifest in stage)
            _applied_at[meta["uid"]] = time.monotonic()
        if decisions.create_validation:
            writes.append(client.ensure(desired.validation_job))
        await asyncio.gather(*writes)
    for job_name in decisions.delete_jobs:
        await client.delete("batch/v1", "Job", namespace, job_name, propagation="Background")
    live = _live_training_job(jobs, decisions.delete_jobs)
    finished = new_status.phase in (Phase.SUCCEEDED, Phase.FAILED)
    if live is not None and not decisions.create_training and not finished:
        patch = _run_policy_patch(live, spec)
        if patch is not None:
            await client.patch_merge("batch/v1", "Job", namespace, live["metadata"]["name"], patch)
    if decisions.create_training and desired is not None:
        attempt = build_children(
            obj,
            restart=decisions.attempt,
            counted_restarts=decisions.counted_restarts,
            deepspeed_from_ref=deepspeed_text,
            trainer_image=TRAINER_IMAGE,
        )
        await client.apply(attempt.training_job)

    events = [Event(e.type, e.reason, e.message) for e in decisions.events]
    return Outcome(status=new_status.to_wire(), events=events)
