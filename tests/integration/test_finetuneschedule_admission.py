"""The real API server rejects bad FineTuneSchedules naming the field, and lets templates be edited."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from tests.integration.test_admission import assert_rejected_naming
from tests.support.cluster import Kube
from tests.support.manifests import minimal_ftj

pytestmark = pytest.mark.cluster

VALID: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "FineTuneSchedule",
    "metadata": {"name": "sched"},
    "spec": {
        "schedule": "30 3 * * MON-FRI",
        "timeZone": "Europe/Berlin",
        "jobTemplate": {"spec": minimal_ftj("run")["spec"]},
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


GATE: dict[str, Any] = {
    "noWorseThanChampion": {"evalLoss": {"maxIncrease": 0.02}, "rougeL": {"maxDecrease": 0}}
}


def gated(tolerance: dict[str, Any] | None = None, **template: Any) -> dict[str, Any]:
    obj = with_template(**template)
    gate = {"noWorseThanChampion": tolerance} if tolerance else GATE
    obj["spec"]["evaluation"] = {"fromFirstRun": True, **gate}
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
        "frozen set and fromFirstRun both",
        with_spec(evaluation={**GATE, "frozenSet": {"uri": "pvc://eval/set.jsonl"}, "fromFirstRun": True}),
        "spec.evaluation",
    ),
    (
        "neither frozen set nor fromFirstRun",
        with_spec(evaluation={"noWorseThanChampion": {"evalLoss": {"maxIncrease": 0}}}),
        "exactly one of evaluation.frozenSet or evaluation.fromFirstRun",
    ),
    (
        "no tolerance at all",
        with_spec(evaluation={"fromFirstRun": True, "noWorseThanChampion": {}}),
        "at least one",
    ),
    (
        "negative tolerance",
        with_spec(
            evaluation={"fromFirstRun": True, "noWorseThanChampion": {"rougeL": {"maxDecrease": -0.1}}}
        ),
        "spec.evaluation.noWorseThanChampion.rougeL.maxDecrease",
    ),
    (
        "frozen set not on a claim",
        with_spec(evaluation={**GATE, "frozenSet": {"uri": "s3://bucket/set.jsonl"}}),
        "spec.evaluation.frozenSet.uri",
    ),
    (
        "fromFirstRun without a test split",
        gated(dataset={"uri": "pvc://data/train.jsonl", "testSplit": 0}),
        "spec.jobTemplate.spec.dataset.testSplit",
    ),
    (
        "gate with an s3 output",
        gated(output={"uri": "s3://models/out"}),
        "spec.jobTemplate.spec.output.uri",
    ),
    (
        "tolerance on a metric the template does not compute",
        gated(evaluation={"metrics": ["loss"]}, tolerance={"bleu": {"maxDecrease": 1}}),
        "spec.evaluation.noWorseThanChampion.bleu",
    ),
    (
        "the template names a champion",
        with_template(
            evaluation={
                "frozenSet": {"uri": "pvc://eval/set.jsonl"},
                "champion": {"name": "w-1", "adapterUri": "pvc://models/out/w-1/adapter"},
            }
        ),
        "spec.jobTemplate.spec.evaluation",
    ),
    (
        "the frozen set in the template of a gated schedule",
        gated(evaluation={"frozenSet": {"uri": "pvc://eval/set.jsonl"}}),
        "spec.jobTemplate.spec.evaluation.frozenSet",
    ),
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
    assert_rejected_naming(kube, namespace, manifest, field)


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


def test_gated_schedules_are_accepted(kube: Kube, namespace: str) -> None:
    for manifest in (
        gated(),
        with_spec(evaluation={**GATE, "frozenSet": {"uri": "pvc://eval/frozen.jsonl"}}),
        gated(tolerance={"evalLoss": {"maxIncrease": 0}}, evaluation={"metrics": ["loss"]}),
    ):
        kube.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


FTJ: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "ftj"},
    "spec": copy.deepcopy(VALID["spec"]["jobTemplate"]["spec"]),
}


@pytest.mark.parametrize(
    ("evaluation", "field"),
    [
        pytest.param(
            {"champion": {"name": "w-1", "adapterUri": "pvc://m/w-1/adapter"}},
            "spec.evaluation.champion",
            id="champion-without-a-frozen-set",
        ),
        pytest.param(
            {
                "frozenSet": {"uri": "pvc://eval/set.jsonl"},
                "champion": {"name": "w-1", "adapterUri": "pvc://m/a", "modelUri": "pvc://m/b"},
            },
            "exactly one of evaluation.champion.adapterUri or evaluation.champion.modelUri",
            id="champion-adapter-and-model",
        ),
        pytest.param(
            {
                "frozenSet": {"uri": "pvc://eval/set.jsonl"},
                "champion": {"name": "w-1", "adapterUri": "s3://b/a"},
            },
            "spec.evaluation.champion.adapterUri",
            id="champion-not-on-a-claim",
        ),
    ],
)
def test_finetunejob_frozen_set_and_champion_are_validated(
    kube: Kube, namespace: str, evaluation: dict[str, Any], field: str
) -> None:
    manifest = copy.deepcopy(FTJ)
    manifest["spec"]["evaluation"] = evaluation
    assert_rejected_naming(kube, namespace, manifest, field)
