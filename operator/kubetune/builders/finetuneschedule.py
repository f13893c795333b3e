"""A FineTuneSchedule's runs: names and FineTuneJob manifests. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kubetune.api.common import API_VERSION, GROUP
from kubetune.api.finetunejob import KIND as FINETUNEJOB
from kubetune.api.finetunejob import Evaluation, InitFrom
from kubetune.api.finetuneschedule import FineTuneScheduleSpec, RunTrigger
from kubetune.api.uris import join
from kubetune.builders.common import MANAGED_BY, child_name, owner_reference, stable_hash
from kubetune.builders.finetunejob import DEFAULT_TRAINER_IMAGE, build_children

Manifest = dict[str, Any]

LABEL_SCHEDULE = f"{GROUP}/schedule"
ANNOTATION_SCHEDULED_TIME = f"{GROUP}/scheduled-time"
ANNOTATION_TRIGGER = f"{GROUP}/trigger"
ANNOTATION_TEMPLATE_HASH = f"{GROUP}/template-hash"
ANNOTATION_DATASET_DIGEST = f"{GROUP}/dataset-digest"
"""The dataset's sha256 as the operator saw it when it created the run (configMap:// data only)."""


def schedule_label_value(name: str) -> str:
    return child_name(name)


def run_name(schedule: str, scheduled_time: datetime) -> str:
    """`<schedule>-<minutes since the epoch>` (CronJob's naming): the same time always names the same run."""
    return child_name(schedule, int(scheduled_time.timestamp()) // 60)


def manual_run_name(schedule: str, trigger: int) -> str:
    return child_name(schedule, "manual", trigger)


def template_hash(spec: FineTuneScheduleSpec) -> str:
    """What makes two runs train the same thing, besides the data: the job template."""
    return stable_hash(spec.job_template.to_wire())


def run_output_uri(spec: FineTuneScheduleSpec, name: str) -> str:
    """Each run writes under its own folder of the template's output (never into a sibling's)."""
    return join(spec.job_template.spec.output.uri, name)


def run_manifest(
    schedule: Mapping[str, Any],
    spec: FineTuneScheduleSpec,
    *,
    name: str,
    scheduled_time: datetime,
    trigger: RunTrigger,
    dataset_digest: str | None,
    evaluation: Evaluation | None = None,
    init_from: InitFrom | None = None,
) -> Manifest:
    """`evaluation`: the run's own (frozen set and champion: the schedule's gate), else the template's;
    `init_from`: the run's spec.initFrom under spec.incremental (the template's own otherwise)."""
    meta = schedule["metadata"]
    template = spec.job_template
    update: dict[str, Any] = {
        "output": template.spec.output.model_copy(update={"uri": run_output_uri(spec, name)})
    }
    if evaluation is not None:
        update["evaluation"] = evaluation
    if init_from is not None:
        update["init_from"] = init_from
    job_spec = template.spec.model_copy(update=update)
    labels = {
        **template.metadata.labels,
        LABEL_SCHEDULE: schedule_label_value(meta["name"]),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "kubetune",
    }
    annotations = {
        **template.metadata.annotations,
        ANNOTATION_SCHEDULED_TIME: scheduled_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        ANNOTATION_TRIGGER: trigger.value,
        ANNOTATION_TEMPLATE_HASH: template_hash(spec),
    }
    if dataset_digest:
        annotations[ANNOTATION_DATASET_DIGEST] = dataset_digest
    return {
        "apiVersion": API_VERSION,
        "kind": FINETUNEJOB,
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": dict(sorted(labels.items())),
            "annotations": dict(sorted(annotations.items())),
            "ownerReferences": [owner_reference(schedule)],
        },
        "spec": job_spec.to_wire(),
    }


def probe_name(run: str) -> str:
    """The dataset probe of a run: a FineTuneJob-like name for the validation children it borrows."""
    return child_name(run, "probe")


def probe_children(
    schedule: Mapping[str, Any],
    spec: FineTuneScheduleSpec,
    *,
    run: str,
    trainer_image: str = DEFAULT_TRAINER_IMAGE,
    image_pull_secrets: Sequence[str] = (),
) -> list[Manifest]:
    """The run's data-validation Job (with its config ConfigMap and ServiceAccount), owned by the schedule.

    It is the very Job a FineTuneJob validates its data with (same image, mounts, staging, credentials),
    so it reads the data the run would read; its `validate` reports the data's sha256 in its result.
    DeepSpeed is left out: validation does not use it, and a configRef is not resolved here.
    """
    meta = schedule["metadata"]
    template = spec.job_template.spec
    job_spec = template.model_copy(
        update={
            "deepspeed": None,
            "output": template.output.model_copy(update={"uri": run_output_uri(spec, run)}),
        }
    )
    name = probe_name(run)
    pseudo = {
        "apiVersion": API_VERSION,
        "kind": FINETUNEJOB,
        "metadata": {"name": name, "namespace": meta["namespace"], "uid": meta["uid"]},
        "spec": job_spec.to_wire(),
    }
    children = build_children(
        pseudo, restart=0, trainer_image=trainer_image, spec=job_spec, image_pull_secrets=image_pull_secrets
    )
    label = {LABEL_SCHEDULE: schedule_label_value(meta["name"])}
    manifests = [*children.for_validation(), children.validation_job]
    for manifest in manifests:
        manifest["metadata"]["ownerReferences"] = [owner_reference(schedule)]
        manifest["metadata"]["labels"] = {**manifest["metadata"]["labels"], **label}
    pod = children.validation_job["spec"]["template"]["metadata"]
    pod["labels"] = {**pod["labels"], **label}
    return manifests
