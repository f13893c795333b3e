"""FineTuneJob: a supervised fine-tuning run, from dataset to exported artifact."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.config import JsonValue

from kubetune.api.common import (
    DNS_SUBDOMAIN_PATTERN,
    LABEL_VALUE_PATTERN,
    Condition,
    ConfigMapKeyRef,
    ImageOverrides,
    KubeModel,
    Quantity,
    SecretKeyRef,
    Toleration,
    cel,
    conditions_field,
    immutable,
)

KIND = "FineTuneJob"
PLURAL = "finetunejobs"

MODEL_URI_PATTERN = (
    r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.*|s3://[^/]+/.+|hf://.+|[A-Za-z0-9][\w.-]*/[\w.-]+)$"
)
DATASET_URI_PATTERN = r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.+|s3://[^/]+/.+|hf://.+|configMap://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+)$"
OUTPUT_URI_PATTERN = r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.*|s3://[^/]+/.*)$"


class Method(StrEnum):
    LORA = "lora"
    QLORA = "qlora"
    FULL = "full"


class DatasetFormat(StrEnum):
    ALPACA = "alpaca"
    INSTRUCTION_RESPONSE = "instruction-response"
    MESSAGES = "messages"
    SHAREGPT = "sharegpt"
    AUTO = "auto"


class BaseModelSource(KubeModel):
    """The model to fine-tune."""

    uri: str = Field(
        min_length=1,
        max_length=1024,
        pattern=MODEL_URI_PATTERN,
        description="Hugging Face id (org/name or hf://org/name), pvc://claim/path or s3://bucket/path.",
    )
    revision: str | None = Field(
        default=None, max_length=256, description="Commit, branch or tag of a Hugging Face model."
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow the model repository's own Python code."
    )
    secret_ref: SecretKeyRef | None = Field(
        default=None, description="Credentials (HF token or S3 keys) by reference; never inline."
    )


class Dataset(KubeModel):
    """The training data and how it is split."""

    uri: str = Field(
        max_length=1024,
        pattern=DATASET_URI_PATTERN,
        description="JSONL data: pvc://claim/path, s3://bucket/key, hf://org/name or configMap://name/key.",
    )
    format: DatasetFormat = Field(
        default=DatasetFormat.AUTO, description="Record format; auto detects it from the first record."
    )
    validation_split: float = Field(
        default=0.1, ge=0.0, le=0.5, description="Fraction held out for evaluation during training."
    )
    test_split: float = Field(
        default=0.1, ge=0.0, le=0.5, description="Fraction held out for final evaluation."
    )
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Seed of the deterministic split.")
    max_seq_length: int = Field(
        default=2048, ge=16, le=1048576, description="Token limit per record; longer records are invalid."
    )
    max_invalid_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Fraction of invalid records tolerated (dropped and reported).",
    )
    secret_ref: SecretKeyRef | None = Field(default=None, description="Credentials for s3:// or hf:// data.")


class LoraConfig(KubeModel):
    """LoRA adapter shape (also used by QLoRA)."""

    r: int = Field(default=16, ge=1, le=1024, description="Adapter rank.")
    alpha: int = Field(default=32, ge=1, le=4096, description="Scaling numerator (alpha / r).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        max_length=64,
        description="Module names to adapt, or ['all-linear'].",
        json_schema_extra={"items": {"type": "string", "maxLength": 128}},
    )


class Hyperparameters(KubeModel):
    """Optimiser and schedule settings, passed to the HF Trainer."""

    epochs: float = Field(default=3, gt=0, le=1000, description="Passes over the training split.")
    learning_rate: float = Field(default=2e-4, gt=0, le=1, description="Peak learning rate.")
    per_device_batch_size: int = Field(default=4, ge=1, le=4096, description="Micro-batch per GPU.")
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=4096, description="Micro-batches per step.")
    warmup_ratio: float = Field(default=0.03, ge=0, le=1, description="Fraction of steps of linear warmup.")
    weight_decay: float = Field(default=0.0, ge=0, le=1, description="AdamW weight decay.")
    max_grad_norm: float = Field(
        default=1.0, ge=0, le=1000, description="Gradient clipping norm; 0 disables."
    )
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning-rate schedule."
    )
    precision: Literal["bf16", "fp16", "fp32"] = Field(default="bf16", description="Training precision.")
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass: ~1/3 more compute for far less memory.",
    )
    packing: bool = Field(
        default=False,
        description="Pack whole records into sequences of up to dataset.maxSeqLength tokens; attention and "
        "loss stay within each record.",
    )
    # The two below default to None, not "auto"/False: a defaulted value would be rendered into every
    # job's config and change its spec hash, restarting running Jobs when the operator is upgraded.
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        default=None,
        description="Attention kernel; omitted: transformers' default (sdpa). flash_attention_2 needs a GPU "
        "and the flash-attn package in the trainer image.",
    )
    liger_kernels: bool | None = Field(
        default=None,
        description="Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy); "
        "needs a GPU and the liger-kernel package in the trainer image.",
    )
    eval_steps: int | None = Field(
        default=None, ge=1, description="Evaluate every N steps (default: once per epoch)."
    )
    save_steps: int | None = Field(
        default=None, ge=1, description="Checkpoint every N steps (default: once per epoch)."
    )
    early_stopping_patience: int | None = Field(
        default=None, ge=1, le=1000, description="Stop after N evaluations without eval-loss improvement."
    )
    logging_steps: int = Field(default=10, ge=1, le=100000, description="Report progress every N steps.")


class DeepSpeedConfig(KubeModel):
    """DeepSpeed ZeRO settings, or a complete config from a ConfigMap."""

    zero_stage: int = Field(default=2, ge=0, le=3, description="ZeRO stage 0-3.")
    offload_optimizer: bool = Field(default=False, description="Offload optimizer state to CPU.")
    offload_params: bool = Field(default=False, description="Offload parameters to CPU (ZeRO-3 only).")
    config_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A complete DeepSpeed JSON in a ConfigMap; overrides the fields above."
    )


class Resources(KubeModel):
    """Where and on how much hardware the training runs."""

    nodes: int = Field(default=1, ge=1, le=256, description="Number of training pods (one per node).")
    gpus_per_node: int = Field(
        default=1, ge=0, le=16, description="nvidia.com/gpu per pod; processes per pod."
    )
    gpu_type: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description="Value of the nvidia.com/gpu.product node label to schedule on.",
    )
    cpu: Quantity | None = Field(default=None, description="CPU request and limit per pod.")
    memory: Quantity | None = Field(default=None, description="Memory request and limit per pod.")
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations for tainted GPU nodes."
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Pod priority class."
    )
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description="Kueue LocalQueue (sets kueue.x-k8s.io/queue-name).",
    )


class Output(KubeModel):
    """Where checkpoints and exported artifacts go."""

    uri: str = Field(
        max_length=1024, pattern=OUTPUT_URI_PATTERN, description="pvc://claim/path or s3://bucket/prefix."
    )
    merge_adapter: bool = Field(
        default=False, description="Also export the adapter merged into the base (a vLLM-loadable folder)."
    )
    secret_ref: SecretKeyRef | None = Field(default=None, description="Credentials for an s3:// output.")


EvalMetric = Literal["loss", "rouge", "bleu"]


def _all_eval_metrics() -> list[EvalMetric]:
    return ["loss", "rouge", "bleu"]


FROZEN_SET_URI_PATTERN = r"^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.+$"
"""Frozen sets and champions are read from a claim, the one place a run's output can be mounted from."""


class FrozenSet(KubeModel):
    """A held-out evaluation file scored the same way run after run (the champion's scores too)."""

    uri: str = Field(
        max_length=1024,
        pattern=FROZEN_SET_URI_PATTERN,
        description="JSONL records (any dataset format) on a claim: pvc://claim/path/file.jsonl.",
    )


class Champion(KubeModel):
    """The model in production: scored on the frozen set in the same run, by the same code, as this one."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.adapterUri) != has(self.modelUri)",
                    "set exactly one of evaluation.champion.adapterUri or evaluation.champion.modelUri",
                )
            ]
        }
    )

    name: str = Field(
        min_length=1, max_length=253, description="The FineTuneJob (a schedule's run) the champion came from."
    )
    adapter_uri: str | None = Field(
        default=None,
        max_length=1024,
        pattern=FROZEN_SET_URI_PATTERN,
        description="Its LoRA adapter, loaded on this job's base model: pvc://claim/path.",
    )
    model_uri: str | None = Field(
        default=None,
        max_length=1024,
        pattern=FROZEN_SET_URI_PATTERN,
        description="Its whole (merged or fully fine-tuned) model: pvc://claim/path.",
    )


class Evaluation(KubeModel):
    """Final evaluation on the held-out test split (and, when set, on a frozen set against a champion)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.champion) || has(self.frozenSet) || "
                    "(has(self.exportTestSplit) && self.exportTestSplit)",
                    "evaluation.champion needs evaluation.frozenSet (or exportTestSplit) to be scored on",
                    fieldPath=".champion",
                )
            ]
        }
    )

    metrics: list[EvalMetric] = Field(
        default_factory=_all_eval_metrics,
        max_length=3,
        description="Metrics to compute.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    max_samples: int = Field(default=200, ge=1, le=100000, description="Generations scored for ROUGE/BLEU.")
    # The three below default to None: a defaulted value would be rendered into every job's config and
    # change its spec hash (see Hyperparameters). FineTuneSchedules set them on their runs.
    frozen_set: FrozenSet | None = Field(
        default=None, description="Also score the trained model (and the champion) on this file."
    )
    export_test_split: bool | None = Field(
        default=None,
        description="Write the test split to <output>/frozen-eval.jsonl (and score on it when no frozenSet "
        "is given): the file a schedule pins as its frozen set.",
    )
    champion: Champion | None = Field(
        default=None, description="The model in production, scored on the frozen set alongside this one."
    )


class RunPolicy(KubeModel):
    """Retries, deadlines and clean-up (mutable while running)."""

    backoff_limit: int = Field(default=3, ge=0, le=100, description="Gang restarts before the job fails.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Wall-clock limit of the run."
    )
    suspend: bool = Field(
        default=False, description="Suspend: delete the pods, keep checkpoints, resume later."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="Delete finished training Jobs after this long (the FineTuneJob stays).",
    )


class InitFromJobRef(KubeModel):
    """A FineTuneJob in the same namespace."""

    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the FineTuneJob."
    )


class InitFrom(KubeModel):
    """Start from an earlier job's adapter (trainable) instead of a fresh one: incremental training.

    The earlier job must be Succeeded, with an adapter, on the same base model (uri and revision) and
    the same LoRA shape (r, alpha, targetModules); the operator checks this before any pod starts.
    """

    finetune_job_ref: InitFromJobRef = Field(description="The job whose adapter this run continues.")
    replay_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Also train on this many earlier records per new training record, sampled "
        "deterministically (dataset.seed) from what the earlier job trained on; 0: none.",
    )
    learning_rate_scale: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Multiplies hyperparameters.learningRate: continued training usually wants a "
        "smaller step than training from scratch.",
    )


SPEC_RULES: list[JsonValue] = [
    cel(
        "self.method != 'full' || !has(self.lora)",
        "lora must not be set when method is full",
        fieldPath=".lora",
        reason="FieldValueForbidden",
    ),
    cel(
        "self.method != 'qlora' || self.resources.gpusPerNode >= 1",
        "method qlora needs resources.gpusPerNode >= 1 (4-bit kernels are CUDA only)",
        fieldPath=".resources.gpusPerNode",
    ),
    cel(
        "self.method != 'qlora' || !has(self.deepspeed) || self.deepspeed.zeroStage != 3",
        "method qlora is incompatible with deepspeed.zeroStage 3 (4-bit weights cannot be partitioned)",
        fieldPath=".deepspeed.zeroStage",
    ),
    cel(
        "!has(self.hyperparameters.attnImplementation) || "
        "self.hyperparameters.attnImplementation != 'flash_attention_2' || self.resources.gpusPerNode >= 1",
        "hyperparameters.attnImplementation flash_attention_2 needs resources.gpusPerNode >= 1 "
        "(its kernels are CUDA only)",
        fieldPath=".hyperparameters.attnImplementation",
    ),
    cel(
        "!has(self.hyperparameters.ligerKernels) || !self.hyperparameters.ligerKernels || "
        "self.resources.gpusPerNode >= 1",
        "hyperparameters.ligerKernels needs resources.gpusPerNode >= 1 (Liger's Triton kernels are GPU only)",
        fieldPath=".hyperparameters.ligerKernels",
    ),
    cel(
        "self.dataset.validationSplit + self.dataset.testSplit < 0.9",
        "dataset.validationSplit + dataset.testSplit must leave at least 10% for training",
        fieldPath=".dataset.testSplit",
    ),
    # `self == oldSelf` on an optional field holds only while it is set: adding or removing it is a
    # change of its own.
    cel(
        "has(self.lora) == has(oldSelf.lora)",
        "lora is immutable: it cannot be added or removed after creation",
        fieldPath=".lora",
    ),
    cel(
        "has(self.initFrom) == has(oldSelf.initFrom)",
        "initFrom is immutable: it cannot be added or removed after creation",
        fieldPath=".initFrom",
    ),
    cel(
        "!has(self.initFrom) || self.method != 'full'",
        "initFrom needs method lora or qlora: it continues an adapter, and a full fine-tune has none",
        fieldPath=".initFrom",
        reason="FieldValueForbidden",
    ),
    cel(
        "has(self.deepspeed) == has(oldSelf.deepspeed)",
        "deepspeed is immutable: it cannot be added or removed after creation",
        fieldPath=".deepspeed",
    ),
    cel(
        "!has(self.deepspeed) || !self.deepspeed.offloadParams || self.deepspeed.zeroStage == 3",
        "deepspeed.offloadParams requires deepspeed.zeroStage 3",
        fieldPath=".deepspeed.offloadParams",
    ),
]


class FineTuneJobSpec(KubeModel):
    """Desired fine-tuning run. Everything but runPolicy and image is immutable once created."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": SPEC_RULES})

    base_model: BaseModelSource = Field(
        description="The model to fine-tune.", json_schema_extra=immutable("baseModel")
    )
    dataset: Dataset = Field(description="Training data.", json_schema_extra=immutable("dataset"))
    method: Method = Field(
        default=Method.LORA, description="lora, qlora or full.", json_schema_extra=immutable("method")
    )
    lora: LoraConfig | None = Field(
        default=None,
        description="LoRA shape; defaults apply for lora/qlora.",
        json_schema_extra=immutable("lora"),
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters,
        description="Optimiser settings.",
        json_schema_extra=immutable("hyperparameters"),
    )
    deepspeed: DeepSpeedConfig | None = Field(
        default=None,
        description="DeepSpeed ZeRO; omitted means plain DDP.",
        json_schema_extra=immutable("deepspeed"),
    )
    resources: Resources = Field(
        default_factory=Resources,
        description="Nodes, GPUs and scheduling.",
        json_schema_extra=immutable("resources"),
    )
    output: Output = Field(description="Artifact location.", json_schema_extra=immutable("output"))
    evaluation: Evaluation = Field(
        default_factory=Evaluation, description="Final evaluation.", json_schema_extra=immutable("evaluation")
    )
    init_from: InitFrom | None = Field(
        default=None,
        description="Continue an earlier job's adapter (lora/qlora only); omitted: a fresh adapter.",
        json_schema_extra=immutable("initFrom"),
    )
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Retries, deadline, suspend, TTL.")
    image: ImageOverrides | None = Field(default=None, description="Trainer image override.")

    def effective_lora(self) -> LoraConfig | None:
        if self.method is Method.FULL:
            return None
        return self.lora or LoraConfig()


class Phase(StrEnum):
    PENDING = "Pending"
    VALIDATING = "Validating"
    RUNNING = "Running"
    EVALUATING = "Evaluating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class Progress(KubeModel):
    """Training progress reported by rank 0."""

    step: int = Field(default=0, ge=0, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, ge=0, description="Optimizer steps planned.")
    percent: int = Field(default=0, ge=0, le=100, description="step / totalSteps, in percent.")
    epoch: float | None = Field(default=None, ge=0, description="Fractional epoch.")
    loss: float | None = Field(default=None, description="Latest training loss.")
    eval_loss: float | None = Field(default=None, description="Latest validation loss.")
    learning_rate: float | None = Field(default=None, ge=0, description="Current learning rate.")
    tokens_per_second: float | None = Field(
        default=None, ge=0, description="Training throughput, non-padding tokens per second, all ranks."
    )
    mfu: float | None = Field(
        default=None,
        ge=0,
        description="Model FLOPs utilisation (0-1) against the GPUs' dense peak; GPUs of a known type only.",
    )
    eta: str | None = Field(default=None, max_length=64, description="Estimated time left, e.g. 1h2m3s.")
    updated_at: datetime | None = Field(default=None, description="When rank 0 last reported.")
    attempt: int | None = Field(
        default=None,
        ge=0,
        description="Training attempt the step counts in (a gang restart starts the next).",
    )


# `kubectl get ftj` columns; priority 1 shows only with `-o wide`.
PRINTER_COLUMNS: list[dict[str, JsonValue]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Progress",
        "type": "integer",
        "jsonPath": ".status.progress.percent",
        "description": "Percent of planned steps done.",
    },
    {"name": "Step", "type": "integer", "jsonPath": ".status.progress.step", "priority": 1},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
    {"name": "Eval-Loss", "type": "number", "jsonPath": ".status.progress.evalLoss", "priority": 1},
    {
        "name": "Tokens/s",
        "type": "number",
        "jsonPath": ".status.progress.tokensPerSecond",
        "description": "Training throughput, non-padding tokens per second, all ranks.",
        "priority": 1,
    },
    {
        "name": "MFU",
        "type": "number",
        "jsonPath": ".status.progress.mfu",
        "description": "Model FLOPs utilisation (0-1), GPUs only.",
        "priority": 1,
    },
    {"name": "Method", "type": "string", "jsonPath": ".spec.method", "priority": 1},
]


class EvalMetrics(KubeModel):
    """Final metrics on the test split."""

    eval_loss: float | None = Field(default=None, description="Mean token loss.")
    perplexity: float | None = Field(default=None, ge=0, description="exp(evalLoss).")
    rouge_l: float | None = Field(default=None, ge=0, le=1, description="ROUGE-L F1 of greedy generations.")
    bleu: float | None = Field(default=None, ge=0, le=100, description="Corpus BLEU of greedy generations.")
    samples: int | None = Field(default=None, ge=0, description="Generations scored.")


class Artifacts(KubeModel):
    """What the run produced."""

    adapter_uri: str | None = Field(default=None, max_length=1024, description="PEFT adapter folder.")
    merged_model_uri: str | None = Field(
        default=None, max_length=1024, description="Merged, vLLM-loadable model."
    )
    manifest_uri: str | None = Field(default=None, max_length=1024, description="kubetune-manifest.json.")
    base_model_uri: str | None = Field(
        default=None, max_length=1024, description="Base model the adapter needs."
    )


class InitFromLineage(KubeModel):
    """The adapter an incremental run started from."""

    finetune_job: str = Field(max_length=253, description="The FineTuneJob it continued.")
    adapter_uri: str = Field(max_length=1024, description="That job's adapter folder.")
    adapter_digest: str | None = Field(
        default=None, max_length=128, description="sha256 of the adapter weights it loaded."
    )
    replayed_records: int = Field(default=0, ge=0, description="Earlier records mixed into training.")


class Lineage(KubeModel):
    """Where the artifact came from."""

    dataset_digest: str | None = Field(
        default=None, max_length=128, description="sha256 of the dataset bytes."
    )
    base_model_revision: str | None = Field(
        default=None, max_length=256, description="Resolved base revision."
    )
    config_hash: str | None = Field(default=None, max_length=128, description="Hash of the rendered config.")
    checkpoint: str | None = Field(
        default=None, max_length=1024, description="Checkpoint the artifact is from."
    )
    init_from: InitFromLineage | None = Field(
        default=None, description="The adapter it continued (spec.initFrom), if any."
    )


class FrozenSetScores(KubeModel):
    """Scores on the frozen evaluation set: this run's and its champion's, from one code path in one run."""

    uri: str | None = Field(default=None, max_length=1024, description="The file scored.")
    metrics: EvalMetrics | None = Field(default=None, description="This run's model on the frozen set.")
    champion: str | None = Field(default=None, max_length=253, description="The champion's FineTuneJob.")
    champion_metrics: EvalMetrics | None = Field(
        default=None, description="The champion on the same set (none: no champion, or not scorable)."
    )
    message: str = Field(default="", max_length=1024, description="Why something was not scored, if so.")


class FineTuneJobStatus(KubeModel):
    """Observed state; written by the operator only."""

    phase: Phase | None = Field(default=None, description="Summary of the conditions, for humans.")
    conditions: list[Condition] = conditions_field()
    observed_generation: int | None = Field(default=None, ge=0, description="Last generation reconciled.")
    start_time: datetime | None = Field(default=None, description="When training pods were first created.")
    completion_time: datetime | None = Field(default=None, description="When the run succeeded or failed.")
    restarts: int = Field(default=0, ge=0, description="Gang restarts so far (counted against backoffLimit).")
    progress: Progress | None = Field(default=None, description="Live training progress.")
    metrics: EvalMetrics | None = Field(default=None, description="Final evaluation metrics.")
    artifacts: Artifacts | None = Field(default=None, description="Exported artifacts.")
    frozen_set: FrozenSetScores | None = Field(
        default=None, description="Scores on the frozen evaluation set (evaluation.frozenSet)."
    )
    lineage: Lineage | None = Field(default=None, description="Provenance of the artifacts.")
    test_prompts: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Held-out user prompts (test split) the serving smoke test sends by default.",
        json_schema_extra={"items": {"type": "string", "maxLength": 1024}},
    )


class FineTuneJob(KubeModel):
    """The whole object, as read from the API server."""

    api_version: str = Field(default="kubetune.io/v1alpha1", description="kubetune.io/v1alpha1.")
    kind: Literal["FineTuneJob"] = Field(default="FineTuneJob", description="FineTuneJob.")
    metadata: dict[str, object] = Field(default_factory=dict, description="Standard object metadata.")
    spec: FineTuneJobSpec = Field(description="Desired run.")
    status: FineTuneJobStatus | None = Field(default=None, description="Observed state.")
