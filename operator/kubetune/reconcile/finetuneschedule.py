"""FineTuneSchedule: observe → plan → apply.

`observe` reads the schedule's runs (the FineTuneJobs it controls), its dataset probes (validation Jobs
run before a run, for data the operator cannot read), for configMap:// data the dataset's sha256
(the same bytes the trainer hashes into `status.lineage.datasetDigest`) and, for a gated schedule,
the namespace's ModelDeployments (those following it name the champion in production); the pure planner
(`kubetune.planning.finetuneschedule`) decides; probes and deletes go through the generic applier and
runs are created only when absent (a run's spec is never rewritten: FineTuneJob specs are immutable).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from kubetune.api.common import API_VERSION
from kubetune.api.finetunejob import KIND as FINETUNEJOB
from kubetune.api.finetuneschedule import KIND, FineTuneScheduleSpec
from kubetune.api.modeldeployment import KIND as MODELDEPLOYMENT
from kubetune.api.uris import Scheme, parse_uri
from kubetune.builders.finetuneschedule import LABEL_SCHEDULE, schedule_label_value
from kubetune.kube.client import KubeClient
from kubetune.planning.admission import parse_spec
from kubetune.planning.finetuneschedule import ScheduleContext, plan_schedule
from kubetune.planning.plan import Outcome, Plan
from kubetune.reconcile.apply import NameConflict, controlled_by, create_if_absent, execute
from kubetune.settings import OperatorSettings
from kubetune.status.finetuneschedule import mark_name_conflict

Clock = Callable[[], datetime]


def run_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """A FineTuneJob reduced to what its schedule reacts to (its phase), for the controller's child
    notifications: rank 0's progress reports every few seconds must not trigger schedule passes."""
    phase = (body.get("status") or {}).get("phase")
    return {"metadata": body["metadata"], "status": {"phase": phase} if phase else {}}


def configmap_digest(config_map: Mapping[str, Any] | None, key: str) -> str | None:
    """sha256 of a ConfigMap key's bytes as mounted into the trainer (None: no such key)."""
    if config_map is None:
        return None
    text = (config_map.get("data") or {}).get(key)
    if text is not None:
        return "sha256:" + hashlib.sha256(str(text).encode()).hexdigest()
    binary = (config_map.get("binaryData") or {}).get(key)
    if binary is not None:
        return "sha256:" + hashlib.sha256(base64.b64decode(binary)).hexdigest()
    return None


class FineTuneScheduleReconciler:
    kind = KIND

    def __init__(self, settings: OperatorSettings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock
        """Overrides the controller's `now` (tests drive the schedule through time with it)."""

    def forget(self, uid: str) -> None:
        """Nothing is held per schedule: its state is its status and its runs."""

    async def reconcile(
        self, client: KubeClient, obj: dict[str, Any], now: datetime, *, resync: bool
    ) -> Outcome:
        when = self.clock() if self.clock is not None else now
        ctx = await self.observe(client, obj, when)
        plan = plan_schedule(ctx)
        namespace = obj["metadata"]["namespace"]
        probe_job = [m for m in plan.probe if m["kind"] == "Job"]
        probe_rest = [m for m in plan.probe if m["kind"] != "Job"]
        # The probe's ConfigMap and ServiceAccount first: its Job's pod mounts and runs as them.
        await execute(client, namespace, Plan(status=plan.status, apply=probe_rest))
        await execute(client, namespace, Plan(status=plan.status, create=probe_job, delete=plan.delete))
        status = plan.status
        for manifest in plan.create:
            try:
                await create_if_absent(client, manifest)
            except NameConflict:
                status = mark_name_conflict(status, manifest["metadata"]["name"], when)
        return Outcome(status=status, events=plan.events, requeue_after_s=plan.requeue_after_s)

    async def observe(self, client: KubeClient, obj: dict[str, Any], now: datetime) -> ScheduleContext:
        meta = obj["metadata"]
        spec, problem = parse_spec(FineTuneScheduleSpec, obj)
        selector = f"{LABEL_SCHEDULE}={schedule_label_value(meta['name'])}"
        listed = await client.list(API_VERSION, FINETUNEJOB, meta["namespace"], label_selector=selector)
        jobs = [job for job in listed if controlled_by(job, meta["uid"])]
        digest = await dataset_digest(client, spec, meta["namespace"]) if spec is not None else None
        probe_jobs = [
            job
            for job in await client.list("batch/v1", "Job", meta["namespace"], label_selector=selector)
            if controlled_by(job, meta["uid"])
        ]
        probe_pods = (
            await client.list("v1", "Pod", meta["namespace"], label_selector=selector) if probe_jobs else []
        )
        # Only a gated schedule compares with what is in production (its followers' serving revision).
        gated = spec is not None and spec.evaluation is not None
        followers = await client.list(API_VERSION, MODELDEPLOYMENT, meta["namespace"]) if gated else []
        return ScheduleContext(
            obj,
            spec,
            problem,
            now,
            jobs=jobs,
            dataset_digest=digest,
            probe_jobs=probe_jobs,
            probe_pods=probe_pods,
            trainer_image=self.settings.trainer_image,
            image_pull_secrets=self.settings.image_pull_secrets,
            followers=followers,
        )


async def dataset_digest(client: KubeClient, spec: FineTuneScheduleSpec, namespace: str) -> str | None:
    """The template dataset's sha256 where the operator can read the data itself: a ConfigMap key.

    pvc://, s3:// and hf:// data is only read inside the trainer's pods; for those there is no digest
    before a run, so no run is skipped (the run still records the digest its trainer reports).
    """
    uri = parse_uri(spec.job_template.spec.dataset.uri)
    if uri.scheme is not Scheme.CONFIGMAP:
        return None
    return configmap_digest(await client.get("v1", "ConfigMap", namespace, uri.authority), uri.path)
