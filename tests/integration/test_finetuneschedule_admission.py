"""The real API server rejects bad FineTuneSchedules naming the field, and lets templates be edited."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from tests.support.cluster import Kube

pytestmark = pytest.mark.cluster

VALID: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "FineTuneSchedule",
    "metadata": {"name": "sched"},
    "spec": {
        "schedule": "30 3 * * MON-FRI",
        "timeZone": "Europe/Berlin",
        "jobTemplate": {
            "spec": {
                "baseModel": {"uri": "Qwen/Qwen2.5-0.5B"},
                "dataset": {"uri": "pvc://data/train.jsonl"},
                "output": {"uri": "pvc://models/out"},
            }
        },
    },
}


TEMPLATE: dict[str, Any] = VALID["spec"]["jobTemplate"]["spec"]


def with_spec(**fields: Any) -> dict[str, Any]:
    obj = copy.deepcopy(VALID)
    obj["spec"].update(fields)
    return obj


def with_template(**fields: Any) -> dict[str, Any]:
    obj = copy.deepcopy(VALID)
    obj["spec"]["jobTemplate"]["spec"].update(fields)
    return obj


INVALID = [
    ("four cron fields", with_spec(schedule="0 3 * *"), "spec.schedule"),
    ("minute out of range", with_spec(schedule="61 3 * * *"), "spec.schedule"),
    ("hour out of range", with_spec(schedule="0 24 * * *"), "spec.schedule"),
    ("a time zone inside the schedule", with_spec(schedule="TZ=UTC 0 3 * * *"), "spec.schedule"),
    ("unknown macro", with_spec(schedule="@fortnightly"), "spec.schedule"),
    ("Quartz's ? (not Debian cron)", with_spec(schedule="0 3 ? * *"), "spec.schedule"),
    ("time zone not an IANA name", with_spec(timeZone="UTC+2 hours"), "spec.timeZone"),
    ("concurrency Allow", with_spec(concurrencyPolicy="Allow"), "spec.concurrencyPolicy"),
    ("deadline zero", with_spec(startingDeadlineSeconds=0), "spec.startingDeadlineSeconds"),
    ("history too long", with_spec(successfulRunsHistoryLimit=50), "spec.successfulRunsHistoryLimit"),
    ("negative trigger", with_spec(trigger=-1), "spec.trigger"),
    ("template rules apply", with_template(method="full", lora={"r": 8}), "spec.jobTemplate.spec.lora"),
    ("template fields validated", with_template(method="prefix"), "spec.jobTemplate.spec.method"),
    (
        "incremental with a full fine-tune",
        with_spec(incremental={"enabled": True}, jobTemplate={"spec": {**TEMPLATE, "method": "full"}}),
        "spec.incremental",
    ),
    (
        "incremental and a fixed initFrom",
        with_spec(
            incremental={}, jobTemplate={"spec": {**TEMPLATE, "initFrom": {"finetuneJobRef": {"name": "x"}}}}
        ),
        "spec.jobTemplate.spec.initFrom",
    ),
    (
        "incremental replayFraction above 1",
        with_spec(incremental={"replayFraction": 2}),
        "spec.incremental.replayFraction",
    ),
    (
        "incremental learningRateScale zero",
        with_spec(incremental={"learningRateScale": 0}),
        "spec.incremental.learningRateScale",
    ),
]


@pytest.mark.parametrize(
    ("manifest", "field"), [(m, f) for _, m, f in INVALID], ids=[c for c, _, _ in INVALID]
)
def test_invalid_schedules_are_rejected_naming_the_field(
    kube: Kube, namespace: str, manifest: dict[str, Any], field: str
) -> None:
    proc = kube.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False
    )
    assert proc.returncode != 0, f"accepted an invalid manifest:\n{yaml.safe_dump(manifest)}"
    assert field in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "schedule",
    ["@weekly", "*/15 * * * *", "0 3 1,15 * *", "0 22 * * 1-5", "5 4 L * *", "0 3 * * 5L", "0 3 * * 1#2"],
)
def test_valid_schedules_are_accepted(kube: Kube, namespace: str, schedule: str) -> None:
    kube.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(with_spec(schedule=schedule)),
    )


def test_the_job_template_stays_editable(kube: Kube, namespace: str) -> None:
    """A FineTuneJob's training fields are immutable; the same fields in a template are not."""
    kube.apply(VALID, namespace)
    changed = with_template(method="full", dataset={"uri": "pvc://data/other.jsonl"})
    kube.apply(changed, namespace)
    spec = kube.get("finetuneschedule", "sched", namespace)["spec"]
    assert spec["jobTemplate"]["spec"]["method"] == "full"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert (spec["successfulRunsHistoryLimit"], spec["failedRunsHistoryLimit"]) == (3, 1)
