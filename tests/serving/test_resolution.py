"""resolve_variant_model: what a variant serves, from a URI or a FineTuneJob's artifacts."""

from __future__ import annotations

from typing import Any

import pytest
from _pytest.mark import ParameterSet
from tests.serving.objects import finetunejob, variant

from kubetune.api.conditions import Reason
from kubetune.api.finetunejob import FineTuneJob
from kubetune.api.modeldeployment import Variant
from kubetune.serving.resolution import (
    LoraModule,
    ResolutionState,
    referenced_finetunejobs,
    resolve_variant_model,
    resolve_variants,
    served_model_name,
)

MERGED = {"mergedModelUri": "pvc://out/sft/merged", "adapterUri": "pvc://out/sft/adapter"}
ADAPTER_ONLY = {"adapterUri": "pvc://out/sft/adapter", "baseModelUri": "pvc://models/qwen"}
LINEAGE = {"datasetDigest": "sha256:abc", "baseModelRevision": "r1", "configHash": "c0ffee"}
FROM_JOB = {"model": {"finetuneJobRef": {"name": "sft"}}}


WAITING = (ResolutionState.WAITING, Reason.WAITING_FOR_FINETUNE_JOB)
FAILED = (ResolutionState.FAILED, Reason.FINETUNE_JOB_FAILED)
NOT_FOUND = (ResolutionState.NOT_FOUND, Reason.FINETUNE_JOB_NOT_FOUND)


def sft(phase: str | None, **fields: Any) -> dict[str, Any]:
    """The jobs observed: FineTuneJob sft in `phase`."""
    return {"sft": finetunejob("sft", phase, **fields)}


def resolved(
    id_: str, fields: dict[str, Any], jobs: dict[str, Any], model_uri: str, part: str, *modules: LoraModule
) -> ParameterSet:
    return pytest.param(
        fields, jobs, ResolutionState.READY, Reason.MODEL_RESOLVED, model_uri, modules, part, id=id_
    )


def unresolved(
    id_: str,
    fields: dict[str, Any],
    jobs: dict[str, Any],
    outcome: tuple[ResolutionState, Reason],
    part: str,
) -> ParameterSet:
    return pytest.param(fields, jobs, *outcome, None, (), part, id=id_)


@pytest.mark.parametrize(
    ("fields", "jobs", "state", "reason", "model_uri", "modules", "message_part"),
    [
        resolved(
            "plain-uri", {"model": {"uri": "pvc://models/base"}}, {}, "pvc://models/base", "pvc://models/base"
        ),
        resolved(
            "job-merged-model-preferred",
            FROM_JOB,
            sft("Succeeded", artifacts=MERGED, lineage=LINEAGE),
            "pvc://out/sft/merged",
            "merged",
        ),
        resolved(
            "job-adapter-on-its-base",
            FROM_JOB,
            sft("Succeeded", artifacts=ADAPTER_ONLY, rank=32),
            "pvc://models/qwen",
            "a=pvc://out/sft/adapter",
            LoraModule("a", "pvc://out/sft/adapter", 32),
        ),
        resolved(
            "job-adapter-on-its-base-at-the-trained-revision",
            FROM_JOB,
            sft(
                "Succeeded",
                artifacts={"adapterUri": "pvc://out/sft/adapter", "baseModelUri": "Qwen/Qwen2.5-0.5B"},
                lineage=LINEAGE,
                rank=8,
                base_uri="Qwen/Qwen2.5-0.5B",
            ),
            "hf://Qwen/Qwen2.5-0.5B@r1",
            "a=pvc://out/sft/adapter",
            LoraModule("a", "pvc://out/sft/adapter", 8),
        ),
        unresolved("job-running-waits", FROM_JOB, sft("Running"), WAITING, "sft is Running"),
        unresolved("job-without-status-waits", FROM_JOB, sft(None), WAITING, "sft is Pending"),
        unresolved("succeeded-no-artifacts-yet", FROM_JOB, sft("Succeeded"), WAITING, "has not published"),
        unresolved(
            "job-failed-carries-its-message",
            FROM_JOB,
            sft("Failed", failed_message="OOM on rank 3"),
            FAILED,
            "failed: OOM on rank 3",
        ),
        unresolved("job-missing", FROM_JOB, {}, NOT_FOUND, "sft does not exist"),
        unresolved("job-none", FROM_JOB, {"sft": None}, NOT_FOUND, "does not exist"),
        resolved(
            "two-adapters",
            {
                "adapters": [
                    {"name": "x", "uri": "pvc://ad/x"},
                    {"name": "y", "finetuneJobRef": {"name": "sft"}},
                ]
            },
            sft("Succeeded", artifacts=ADAPTER_ONLY),
            "pvc://models/base",
            "y=",
            LoraModule("x", "pvc://ad/x"),
            LoraModule("y", "pvc://out/sft/adapter", 16),
        ),
        unresolved(
            "adapter-from-full-finetune-fails",
            {"adapters": [{"name": "y", "finetuneJobRef": {"name": "full"}}]},
            {
                "full": finetunejob(
                    "full", "Succeeded", artifacts={"mergedModelUri": "pvc://o/m"}, method="full"
                )
            },
            FAILED,
            "no adapter artifact",
        ),
        unresolved(
            "worst-problem-wins-all-listed",
            {**FROM_JOB, "adapters": [{"name": "y", "finetuneJobRef": {"name": "gone"}}]},
            sft("Failed"),
            FAILED,
            "gone does not exist",
        ),
    ],
)
def test_resolve(
    fields: dict[str, Any],
    jobs: dict[str, Any],
    state: ResolutionState,
    reason: Reason,
    model_uri: str | None,
    modules: tuple[LoraModule, ...],
    message_part: str,
) -> None:
    resolution = resolve_variant_model(variant("a", **fields), jobs)
    assert resolution.state is state
    assert resolution.reason is reason
    assert resolution.model_uri == model_uri
    assert resolution.lora_modules == modules
    assert message_part in resolution.message
    assert resolution.ready is (state is ResolutionState.READY)


def test_lineage_and_metrics_are_carried() -> None:
    job = finetunejob("sft", "Succeeded", artifacts=MERGED, lineage=LINEAGE, metrics={"evalLoss": 1.5})
    resolution = resolve_variant_model(variant("a", **FROM_JOB), {"sft": job})
    assert resolution.lineage == {"finetuneJob": "sft", **LINEAGE}
    assert resolution.metrics is not None
    assert resolution.metrics.eval_loss == 1.5


def test_adapter_job_lineage_is_prefixed_and_its_metrics_judge_the_variant() -> None:
    job = finetunejob("sft", "Succeeded", artifacts=ADAPTER_ONLY, lineage=LINEAGE, metrics={"rougeL": 0.4})
    resolution = resolve_variant_model(
        variant("a", adapters=[{"name": "y", "finetuneJobRef": {"name": "sft"}}]), {"sft": job}
    )
    assert resolution.lineage["adapters.y.configHash"] == "c0ffee"
    assert resolution.metrics is not None
    assert resolution.metrics.rouge_l == 0.4


def test_typed_finetunejob_is_accepted() -> None:
    job = FineTuneJob.model_validate(finetunejob("sft", "Succeeded", artifacts=MERGED))
    assert resolve_variant_model(variant("a", **FROM_JOB), {"sft": job}).model_uri == "pvc://out/sft/merged"


def test_failed_condition_wins_over_a_stale_phase() -> None:
    job = finetunejob("sft", "Running", failed_message="deadline")
    assert resolve_variant_model(variant("a", **FROM_JOB), {"sft": job}).state is ResolutionState.FAILED


@pytest.mark.parametrize(
    ("artifacts", "expected"),
    [(MERGED, "a"), (ADAPTER_ONLY, "a-base")],
    ids=["merged-serves-variant-name", "adapter-takes-variant-name"],
)
def test_served_model_name(artifacts: dict[str, str], expected: str) -> None:
    v = variant("a", **FROM_JOB)
    resolution = resolve_variant_model(v, {"sft": finetunejob("sft", "Succeeded", artifacts=artifacts)})
    assert served_model_name(v, resolution) == expected


def test_referenced_finetunejobs() -> None:
    v = variant(
        "a",
        **FROM_JOB,
        adapters=[{"name": "y", "finetuneJobRef": {"name": "b"}}, {"name": "z", "uri": "pvc://x/y"}],
    )
    assert referenced_finetunejobs(v) == ["b", "sft"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (FROM_JOB, ("What is 2+2?", "Say hi.")),
        (
            {
                "model": {"uri": "pvc://models/qwen"},
                "adapters": [{"name": "y", "finetuneJobRef": {"name": "sft"}}],
            },
            ("What is 2+2?", "Say hi."),
        ),
        ({"model": {"uri": "pvc://models/qwen"}}, ()),
    ],
    ids=["merged-from-job", "adapter-from-job", "plain-uri"],
)
def test_held_out_prompts_of_the_job_are_carried(fields: dict[str, Any], expected: tuple[str, ...]) -> None:
    job = finetunejob("sft", "Succeeded", artifacts={**MERGED, **ADAPTER_ONLY})
    job["status"]["testPrompts"] = ["What is 2+2?", "Say hi."]
    resolution = resolve_variant_model(variant("a", **fields), {"sft": job})
    assert resolution.test_prompts == expected


SHARED_BASE = [
    variant(
        "base",
        adapters=[
            {"name": "support-v1", "uri": "pvc://adapters/v1"},
            {"name": "support-v2", "finetuneJobRef": {"name": "sft"}},
        ],
    ),
    Variant.model_validate({"name": "v1", "servedBy": {"variant": "base", "adapter": "support-v1"}}),
    Variant.model_validate({"name": "v2", "servedBy": {"variant": "base", "adapter": "support-v2"}}),
]


def test_served_by_variant_is_its_hosts_adapter_judged_by_the_adapters_job() -> None:
    job = finetunejob("sft", "Succeeded", artifacts=ADAPTER_ONLY, lineage=LINEAGE, metrics={"rougeL": 0.6})
    resolutions = resolve_variants(SHARED_BASE, {"sft": job})
    assert resolutions["base"].ready
    v1, v2 = resolutions["v1"], resolutions["v2"]
    assert (v1.model_uri, v1.lora_modules, v1.metrics) == ("pvc://adapters/v1", (), None)
    assert v2.model_uri == "pvc://out/sft/adapter"
    assert v2.metrics is not None
    assert v2.metrics.rouge_l == 0.6
    assert v2.lineage == {"finetuneJob": "sft", **LINEAGE}
    assert "in variant base's pods" in v2.message


def test_served_by_variant_waits_with_its_host() -> None:
    resolutions = resolve_variants(SHARED_BASE, {"sft": finetunejob("sft", "Running")})
    assert resolutions["base"].state is ResolutionState.WAITING
    # v1's own adapter is a URI, but its pods are the host's: it waits too, saying why.
    assert resolutions["v1"].state is ResolutionState.WAITING
    assert resolutions["v1"].message.startswith("served by variant base: FineTuneJob sft is Running")
    assert referenced_finetunejobs(SHARED_BASE[1]) == []


def test_reported_artifact_locations_are_not_trusted() -> None:
    """Rank 0 writes the status: serving takes the locations from spec.output, the report says which exist."""
    forged = {"adapterUri": "s3://elsewhere/evil", "baseModelUri": "hf://attacker/model"}
    job = finetunejob("sft", "Succeeded", artifacts=forged, rank=8)
    resolution = resolve_variant_model(variant("a", **FROM_JOB), {"sft": job})
    assert resolution.model_uri == "pvc://models/qwen"
    assert resolution.lora_modules == (LoraModule("a", "pvc://out/sft/adapter", 8),)
    merged_forged = finetunejob("sft", "Succeeded", artifacts={"mergedModelUri": "s3://elsewhere/m"})
    assert resolve_variant_model(variant("a", **FROM_JOB), {"sft": merged_forged}).model_uri == (
        "pvc://out/sft/merged"
    )
