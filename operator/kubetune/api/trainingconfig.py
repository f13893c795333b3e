"""The contract between the operator and the trainer program.

The operator renders a `TrainingConfig` into the job's ConfigMap (key `config.json`,
mounted at CONFIG_DIR); every training pod runs `python -m kubetune.trainer <command>
--config CONFIG_DIR/config.json`. Rank 0 reports live progress by merge-patching
its report ConfigMap (`kubetune.api.trainerreport`; RBAC: a Role allowing `patch` on that
one ConfigMap, no access to the FineTuneJob), and writes its final `TrainerResult` as JSON to the
container's termination message, which the operator reads from the pod status.
Exit codes tell the Job's podFailurePolicy which failures are worth retrying.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubetune.api.common import KubeModel
from kubetune.api.finetunejob import (
    Artifacts,
    EvalMetrics,
    FineTuneJobSpec,
    FrozenSetScores,
    Lineage,
    Method,
)
from kubetune.api.uris import join

CONFIG_DIR = "/etc/kubetune"
CONFIG_FILE = "config.json"
DEEPSPEED_FILE = "deepspeed.json"
TERMINATION_LOG = "/dev/termination-log"

# The output layout under spec.output.uri (docs/trainer.md).
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
MODEL_DIR = "model"  # full fine-tuning: the whole model, already vLLM-loadable
CHECKPOINTS_DIR = "checkpoints"
MANIFEST_FILE = "kubetune-manifest.json"
FROZEN_EVAL_FILE = "frozen-eval.jsonl"  # evaluation.exportTestSplit: the test split, as scored
TRAIN_RECORDS_FILE = "train-records.jsonl"
"""What the run trained on (its training split and any replayed records), as `messages` JSONL: the
replay source of a later run that starts from this one (spec.initFrom.replayFraction)."""

# Exit codes. Anything not listed is retryable (OOM kill, preemption, NCCL timeout...).
EXIT_OK = 0
EXIT_CONFIG_ERROR = 40  # the rendered config or deepspeed JSON is unusable: fail fast
EXIT_DATA_ERROR = 41  # the dataset failed validation: fail fast, message names file:line
FATAL_EXIT_CODES = (EXIT_CONFIG_ERROR, EXIT_DATA_ERROR)


class ProgressTarget(KubeModel):
    """Which object rank 0 reports progress to."""

    enabled: bool = Field(default=True, description="Report progress to the API server.")
    namespace: str = Field(description="Namespace of the FineTuneJob.")
    name: str = Field(description="Name of the FineTuneJob.")
    report: str | None = Field(
        default=None, description="The report ConfigMap rank 0 patches (None: not reporting to the API)."
    )
    min_interval_seconds: float = Field(default=5.0, ge=0, description="At most one report per interval.")


class TrainingPaths(KubeModel):
    """Where things are inside the training container."""

    base_model: str = Field(description="Local directory of the base model (staged or mounted).")
    dataset: str = Field(description="Local path of the dataset file (JSONL or JSON).")
    output_dir: str = Field(description="Directory for checkpoints and exported artifacts (shared by ranks).")
    deepspeed_config: str | None = Field(default=None, description="DeepSpeed JSON path, if any.")
    frozen_set: str | None = Field(default=None, description="Local path of evaluation.frozenSet, if any.")
    champion: str | None = Field(
        default=None, description="Local directory of evaluation.champion's adapter or model, if any."
    )


class InitFromConfig(KubeModel):
    """spec.initFrom, resolved by the operator: the trainer reads no other object."""

    finetune_job: str = Field(description="The earlier FineTuneJob.")
    output_uri: str = Field(description="Its output folder (holds the adapter and its training records).")
    adapter_uri: str = Field(description="Its adapter folder, for lineage.")
    adapter_path: str = Field(description="Local path of that adapter folder (mounted or staged).")
    replay_records_path: str | None = Field(
        default=None, description="Local path of its TRAIN_RECORDS_FILE; set when replayFraction > 0."
    )
    replay_fraction: float = Field(default=0.0, ge=0.0, le=1.0, description="spec.initFrom.replayFraction.")
    learning_rate_scale: float = Field(default=1.0, gt=0.0, description="spec.initFrom.learningRateScale.")


class TrainingConfig(KubeModel):
    """Everything the trainer needs, rendered by the operator."""

    job_name: str = Field(description="FineTuneJob name.")
    job_uid: str | None = Field(
        default=None, description="FineTuneJob uid: owner of the output folder and its checkpoints."
    )
    namespace: str = Field(description="FineTuneJob namespace.")
    spec: FineTuneJobSpec = Field(description="The FineTuneJob spec, verbatim.")
    paths: TrainingPaths = Field(description="Container paths.")
    progress: ProgressTarget = Field(description="Progress reporting target.")
    output_uri: str = Field(description="spec.output.uri, for artifact URIs in the result.")
    init_from: InitFromConfig | None = Field(
        default=None, description="The resolved spec.initFrom (None: a fresh adapter)."
    )


class TrainerResult(KubeModel):
    """Rank 0's final report, as the termination message (must stay < 4 KiB)."""

    outcome: Literal["Succeeded", "Failed"] = Field(description="How the run ended.")
    reason: str = Field(default="", description="CamelCase reason on failure.")
    message: str = Field(default="", description="Human-readable detail (validator errors name file:line).")
    metrics: EvalMetrics | None = Field(default=None, description="Test-split metrics.")
    artifacts: Artifacts | None = Field(default=None, description="Exported artifact URIs.")
    lineage: Lineage | None = Field(default=None, description="Provenance.")
    frozen_set: FrozenSetScores | None = Field(
        default=None, description="Frozen-set scores of this run and its champion."
    )
    final_step: int | None = Field(default=None, description="Last optimizer step.")
    test_prompts: list[str] | None = Field(
        default=None, description="A few held-out user prompts, for the serving smoke test."
    )


def trusted_artifacts(spec: FineTuneJobSpec, reported: Artifacts | None) -> Artifacts:
    """The output layout's locations, keeping those the run reports it produced (all without a report).

    Rank 0's report never chooses a location: a forged one must not point serving at another model.
    """
    contract = output_artifacts(spec)
    if reported is None:
        return contract
    return Artifacts(
        adapter_uri=contract.adapter_uri if reported.adapter_uri else None,
        merged_model_uri=contract.merged_model_uri if reported.merged_model_uri else None,
        manifest_uri=contract.manifest_uri if reported.manifest_uri else None,
        base_model_uri=contract.base_model_uri,
    )


def output_artifacts(spec: FineTuneJobSpec) -> Artifacts:
    """Where a successful run exports its artifacts, by contract: the trainer writes exactly here."""
    uri = spec.output.uri
    if spec.method is Method.FULL:
        return Artifacts(
            merged_model_uri=join(uri, MODEL_DIR),
            manifest_uri=join(uri, MANIFEST_FILE),
            base_model_uri=spec.base_model.uri,
        )
    return Artifacts(
        adapter_uri=join(uri, ADAPTER_DIR),
        merged_model_uri=join(uri, MERGED_DIR) if spec.output.merge_adapter else None,
        manifest_uri=join(uri, MANIFEST_FILE),
        base_model_uri=spec.base_model.uri,
    )


def frozen_set_uri(spec: FineTuneJobSpec) -> str | None:
    """The file a run scores on as its frozen set: the given one, else its own exported test split."""
    if spec.evaluation.frozen_set is not None:
        return spec.evaluation.frozen_set.uri
    if spec.evaluation.export_test_split:
        return join(spec.output.uri, FROZEN_EVAL_FILE)
    return None


def trusted_frozen_set(spec: FineTuneJobSpec, reported: FrozenSetScores | None) -> FrozenSetScores | None:
    """Rank 0's frozen-set scores with the file and champion named by the spec, never by the report."""
    uri = frozen_set_uri(spec)
    if uri is None:
        return None
    champion = spec.evaluation.champion
    scores = reported or FrozenSetScores(message="rank 0 reported no frozen-set scores")
    return scores.model_copy(
        update={
            "uri": uri,
            "champion": champion.name if champion else None,
            "champion_metrics": scores.champion_metrics if champion else None,
        }
    )
