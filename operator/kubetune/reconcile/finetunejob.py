"""FineTuneJob: observe → plan → apply, and the per-object state kept between passes.

`observe` reads what the pass needs (the referenced DeepSpeed ConfigMap, GPU capacity by node type,
the Jobs and pods labelled with the FineTuneJob, the trainer's report ConfigMap) into one context;
the pure planner (`kubetune.planning.finetunejob_pass`) decides; the generic applier executes.
Deletes are guarded by uid and applies are server-side with one field manager, so a re-run, an
operator restart or a 409 converges to the same children.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from kubetune.api.common import API_VERSION
from kubetune.api.finetunejob import KIND, FineTuneJobSpec, Phase
from kubetune.builders.common import GPU_PRODUCT_LABEL, LABEL_JOB, LABEL_ROLE
from kubetune.builders.finetunejob import ROLE_TRAIN, child_names, job_label_value
from kubetune.kube.client import ApiError, KubeClient
from kubetune.planning.admission import parse_spec
from kubetune.planning.finetunejob_pass import FineTuneJobContext, plan_finetunejob
from kubetune.planning.plan import Outcome
from kubetune.reconcile.apply import NameConflict, Ownership, controlled_by, execute
from kubetune.reconcile.conflict import name_conflict_outcome
from kubetune.settings import OperatorSettings

NODE_CACHE_SECONDS = 60.0


def gpu_capacity(nodes: list[dict[str, Any]]) -> dict[str, int]:
    """Largest allocatable nvidia.com/gpu per node, by GPU product."""
    capacity: dict[str, int] = {}
    for node in nodes:
        product = node["metadata"].get("labels", {}).get(GPU_PRODUCT_LABEL)
        gpus = int(node.get("status", {}).get("allocatable", {}).get("nvidia.com/gpu", "0") or 0)
        if product:
            capacity[product] = max(capacity.get(product, 0), gpus)
    return capacity


class NodeCapacity:
    """GPU capacity by product, read from the Nodes at most once a minute (None: not allowed to list)."""

    def __init__(self) -> None:
        self._fetched_at = -NODE_CACHE_SECONDS
        self._capacity: dict[str, int] | None = None

    async def get(self, client: KubeClient) -> dict[str, int] | None:
        if time.monotonic() - self._fetched_at < NODE_CACHE_SECONDS:
            return self._capacity
        try:
            self._capacity = gpu_capacity(await client.list("v1", "Node", None))
        except ApiError as exc:
            if exc.status != 403:
                raise
            self._capacity = None
        self._fetched_at = time.monotonic()
        return self._capacity


class FineTuneJobReconciler:
    kind = KIND

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.node_capacity = NodeCapacity()
        self._full_apply_at: dict[str, float] = {}  # by uid: when the shared children were last applied
        self.owned = Ownership()

    def forget(self, uid: str) -> None:
        self._full_apply_at.pop(uid, None)
        self.owned.forget(uid)

    async def reconcile(
        self, client: KubeClient, obj: dict[str, Any], now: datetime, *, resync: bool
    ) -> Outcome:
        ctx = await self.observe(client, obj, now, resync=resync)
        plan = plan_finetunejob(ctx)
        try:
            await execute(client, obj["metadata"]["namespace"], plan, self.owned)
        except NameConflict as conflict:
            return name_conflict_outcome(obj, plan.status, conflict, now)
        if plan.apply:
            self._full_apply_at[obj["metadata"]["uid"]] = time.monotonic()
        return plan.outcome()

    async def observe(
        self, client: KubeClient, obj: dict[str, Any], now: datetime, *, resync: bool
    ) -> FineTuneJobContext:
        meta = obj["metadata"]
        spec, problem = parse_spec(FineTuneJobSpec, obj)
        if spec is None:
            return FineTuneJobContext(obj, None, problem, now, jobs=[], pods=[])
        deepspeed_text = await _deepspeed_from_ref(client, spec, meta["namespace"])
        capacity = await self.node_capacity.get(client)
        selector = f"{LABEL_JOB}={job_label_value(meta['name'])}"
        # Only Jobs this object controls: a look-alike labelled by someone else is neither read nor deleted.
        jobs = [
            job
            for job in await client.list("batch/v1", "Job", meta["namespace"], label_selector=selector)
            if controlled_by(job, str(meta["uid"]))
        ]
        # Pods only matter through their Jobs (failure reasons, gang state): a job with none has none.
        pods = await client.list("v1", "Pod", meta["namespace"], label_selector=selector) if jobs else []
        # The report ConfigMap is created with the training Job: a job still validating has none to read.
        training = any(job["metadata"].get("labels", {}).get(LABEL_ROLE) == ROLE_TRAIN for job in jobs)
        report = await _report(client, meta) if training else None
        applied_at = self._full_apply_at.get(meta["uid"])
        init_from_job = await _init_from_job(client, spec, obj)
        return FineTuneJobContext(
            obj,
            spec,
            problem,
            now,
            jobs=jobs,
            pods=pods,
            deepspeed_from_ref=deepspeed_text,
            node_gpu_capacity=capacity,
            trainer_image=self.settings.trainer_image,
            image_pull_secrets=self.settings.image_pull_secrets,
            resync=resync,
            since_full_apply_s=None if applied_at is None else time.monotonic() - applied_at,
            init_from_job=init_from_job,
            report=report,
        )


async def _init_from_job(
    client: KubeClient, spec: FineTuneJobSpec, obj: dict[str, Any]
) -> dict[str, Any] | None:
    """The FineTuneJob spec.initFrom names (None: not found), read only while this job may still need it."""
    phase = (obj.get("status") or {}).get("phase")
    if spec.init_from is None or phase in (Phase.SUCCEEDED, Phase.FAILED):
        return None
    namespace = obj["metadata"]["namespace"]
    return await client.get(API_VERSION, KIND, namespace, spec.init_from.finetune_job_ref.name)


async def _report(client: KubeClient, meta: dict[str, Any]) -> dict[str, str] | None:
    """The data of the trainer's report ConfigMap, if this object controls it (an impostor is not read)."""
    report = await client.get("v1", "ConfigMap", meta["namespace"], child_names(meta["name"]).report)
    if report is None or not controlled_by(report, str(meta["uid"])):
        return None
    data = report.get("data") or {}
    return {str(key): str(value) for key, value in data.items()}


async def _deepspeed_from_ref(client: KubeClient, spec: FineTuneJobSpec, namespace: str) -> str | None:
    ref = spec.deepspeed.config_ref if spec.deepspeed else None
    if ref is None:
        return None
    config_map = await client.get("v1", "ConfigMap", namespace, ref.name)
    if config_map is None:
        return None
    value = config_map.get("data", {}).get(ref.key)
    return str(value) if value is not None else None
