"""ModelDeployment: model variants served by vLLM, split by weight, rolled out by canary."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.config import JsonValue

from kubetune.api.common import (
    DNS_1035_PATTERN,
    DNS_LABEL_PATTERN,
    DURATION_PATTERN,
    HEADER_TOKEN_PATTERN,
    LABEL_VALUE_PATTERN,
    Condition,
    ImageOverrides,
    KubeModel,
    Quantity,
    SecretKeyRef,
    Toleration,
    cel,
    conditions_field,
)
from kubetune.api.finetunejob import EvalMetrics

KIND = "ModelDeployment"
PLURAL = "modeldeployments"

# Flags the operator sets and the router relies on, or that run the model repository's code: extraArgs
# may not name them, nor abbreviate them (vLLM's parser accepts unambiguous prefixes and `_` for `-`).
RESERVED_VLLM_FLAGS = (
    "--host",
    "--port",
    "--model",
    "--served-model-name",
    "--trust-remote-code",
    "--api-key",
    "--lora-modules",
    "--uds",
    "--root-path",
    "--ssl-keyfile",
    "--ssl-certfile",
    "--allowed-local-media-path",
)
_RESERVED_FLAG_LIST = "[" + ", ".join(f"'{flag}'" for flag in RESERVED_VLLM_FLAGS) + "]"

SERVING_URI_PATTERN = (
    r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.*|s3://[^/]+/.+|hf://.+|[A-Za-z0-9][\w.-]*/[\w.-]+)$"
)


class FineTuneJobRef(KubeModel):
    """A FineTuneJob in the same namespace whose artifacts are served."""

    name: str = Field(min_length=1, max_length=253, description="Name of the FineTuneJob.")


class FineTuneScheduleRef(KubeModel):
    """A FineTuneSchedule in the same namespace: serve its latest good run, canarying each new one in."""

    name: str = Field(min_length=1, max_length=253, description="Name of the FineTuneSchedule.")


_ONE_SOURCE = cel(
    "[has(self.finetuneJobRef), has(self.finetuneScheduleRef), has(self.uri)].filter(x, x).size() == 1",
    "set exactly one of finetuneJobRef, finetuneScheduleRef or uri",
)


class ModelSource(KubeModel):
    """Exactly one of finetuneJobRef, finetuneScheduleRef or uri."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_ONE_SOURCE]})

    finetune_job_ref: FineTuneJobRef | None = Field(
        default=None,
        alias="finetuneJobRef",
        description="Serve this FineTuneJob's output (merged model, or base + adapter).",
    )
    finetune_schedule_ref: FineTuneScheduleRef | None = Field(
        default=None,
        alias="finetuneScheduleRef",
        description="Serve the schedule's latest good run; each newer good run is canaried in on its own.",
    )
    uri: str | None = Field(
        default=None,
        max_length=1024,
        pattern=SERVING_URI_PATTERN,
        description="Hugging Face id, pvc://claim/path or s3://bucket/path.",
    )
    secret_ref: SecretKeyRef | None = Field(
        default=None, description="HF token or S3 credentials by reference."
    )


class Adapter(KubeModel):
    """A LoRA adapter loaded into the variant's vLLM server."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_ONE_SOURCE]})

    name: str = Field(
        max_length=63, pattern=DNS_LABEL_PATTERN, description="Served model name clients put in `model`."
    )
    finetune_job_ref: FineTuneJobRef | None = Field(
        default=None, alias="finetuneJobRef", description="Use this FineTuneJob's adapter."
    )
    finetune_schedule_ref: FineTuneScheduleRef | None = Field(
        default=None,
        alias="finetuneScheduleRef",
        description=(
            "Use the schedule's latest good run's adapter, loaded into the running pods under a versioned "
            "name (`<name>-<run>`) and moved by weight; clients keep asking for `name`."
        ),
    )
    uri: str | None = Field(
        default=None, max_length=1024, pattern=SERVING_URI_PATTERN, description="Adapter folder."
    )


class VllmArgs(KubeModel):
    """vLLM engine arguments (docs/vllm-flags.md maps each to its flag)."""

    tensor_parallel_size: int = Field(
        default=1, ge=1, le=16, description="--tensor-parallel-size; GPUs per pod."
    )
    max_model_len: int | None = Field(default=None, ge=16, le=1048576, description="--max-model-len.")
    gpu_memory_utilization: float = Field(
        default=0.9, ge=0.05, le=0.99, description="--gpu-memory-utilization."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(default="auto", description="--dtype.")
    quantization: Literal["awq", "gptq", "fp8", "bitsandbytes", "compressed-tensors"] | None = Field(
        default=None, description="--quantization."
    )
    max_num_seqs: int | None = Field(default=None, ge=1, le=65536, description="--max-num-seqs.")
    max_loras: int | None = Field(default=None, ge=1, le=256, description="--max-loras (adapters only).")
    max_lora_rank: int | None = Field(
        default=None, ge=1, le=1024, description="--max-lora-rank (adapters only)."
    )
    extra_args: list[str] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Additional vLLM flags, appended verbatim. Flags the operator sets (--host, --port, --model, "
            "--served-model-name, --lora-modules, ...) and --trust-remote-code are refused."
        ),
        json_schema_extra={
            # 512: the rule below must fit the API server's cost budget for 16 variants x 64 flags.
            "items": {"type": "string", "maxLength": 512},
            "x-kubernetes-validations": [
                cel(
                    "self.all(a, !a.startsWith('--') || size(a.split('=')[0]) <= 3 || "
                    f"!{_RESERVED_FLAG_LIST}.exists(f, f.startsWith(a.split('=')[0].replace('_', '-'))))",
                    "extraArgs must not set a flag the operator sets (--host, --port, --model, "
                    "--served-model-name, --lora-modules, --api-key, ...) or --trust-remote-code",
                    reason="FieldValueForbidden",
                )
            ],
        },
    )


class VariantResources(KubeModel):
    """Per-pod resources: GPUs (tensorParallelSize unless set), CPU, memory, placement."""

    gpus: int | None = Field(
        default=None,
        ge=0,
        le=16,
        description=(
            "nvidia.com/gpu per pod; defaults to vllm.tensorParallelSize. 0 serves on CPU, with a CPU "
            "build of vLLM as the image (tensorParallelSize 1)."
        ),
    )
    cpu: Quantity | None = Field(default=None, description="CPU request and limit.")
    memory: Quantity | None = Field(default=None, description="Memory request and limit.")
    gpu_type: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description="nvidia.com/gpu.product node label.",
    )
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Pod tolerations.")


class EvalGate(KubeModel):
    """Offline gate on the FineTuneJob's test metrics before any rollout."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.threshold) || has(self.mustBeat)", "set threshold, mustBeat or both")
            ]
        }
    )

    metric: Literal["evalLoss", "rougeL", "bleu"] = Field(description="Metric from the job's status.metrics.")
    threshold: float | None = Field(
        default=None, description="evalLoss must be <= threshold; rougeL and bleu must be >= threshold."
    )
    must_beat: str | None = Field(
        default=None, max_length=63, description="Another variant whose job's metric this one must beat."
    )


class Autoscaling(KubeModel):
    """Queue-depth autoscaling (needs KEDA or prometheus-adapter)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
                    "autoscaling.minReplicas must not exceed maxReplicas",
                    fieldPath=".minReplicas",
                )
            ]
        }
    )

    min_replicas: int = Field(default=1, ge=0, le=1000, description="Lower bound.")
    max_replicas: int = Field(ge=1, le=1000, description="Upper bound.")
    target_queue_depth: int = Field(
        default=8, ge=1, le=10000, description="Target vllm:num_requests_waiting per pod."
    )


class ServedBy(KubeModel):
    """One of another variant's LoRA adapters, taking traffic as a variant of its own."""

    variant: str = Field(max_length=40, description="The variant whose vLLM pods load the adapter.")
    adapter: str = Field(max_length=63, description="Name of one of that variant's `adapters`.")


class Variant(KubeModel):
    """One servable model: a vLLM Deployment and Service, or an adapter in another variant's pods."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.model) != has(self.servedBy)", "set exactly one of model or servedBy"),
                cel(
                    "!has(self.servedBy) || !has(self.adapters) || size(self.adapters) == 0",
                    "a variant served by another variant's pods has no adapters of its own",
                    fieldPath=".adapters",
                ),
                cel(
                    "!has(self.resources) || !has(self.resources.gpus) || self.resources.gpus != 0"
                    " || !has(self.vllm) || !has(self.vllm.tensorParallelSize)"
                    " || self.vllm.tensorParallelSize == 1",
                    "resources.gpus 0 (CPU serving) needs vllm.tensorParallelSize 1",
                    fieldPath=".resources.gpus",
                ),
            ]
        }
    )

    name: str = Field(max_length=40, pattern=DNS_LABEL_PATTERN, description="Variant name (DNS label).")
    model: ModelSource | None = Field(
        default=None, description="What to serve in this variant's own vLLM pods."
    )
    served_by: ServedBy | None = Field(
        default=None,
        description=(
            "Serve one of another variant's adapters instead of pods of its own: the router rewrites "
            "`model` to the adapter, and a canary between variants on one base moves weight only."
        ),
    )
    adapters: list[Adapter] = Field(
        default_factory=list,
        max_length=32,
        description="LoRA adapters served on top of model.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    weight: int = Field(default=0, ge=0, le=100, description="Share of traffic, percent.")
    replicas: int = Field(default=1, ge=0, le=1000, description="vLLM pods.")
    vllm: VllmArgs = Field(default_factory=VllmArgs, description="vLLM engine arguments.")
    resources: VariantResources = Field(default_factory=VariantResources, description="Pod resources.")
    gate: EvalGate | None = Field(default=None, description="Offline eval gate.")
    autoscaling: Autoscaling | None = Field(default=None, description="Queue-depth autoscaling.")


class SyntheticTraffic(KubeModel):
    """Eval-set prompts sent to both variants when real traffic is too low."""

    enabled: bool = Field(default=False, description="Send synthetic prompts during analysis.")
    requests_per_second: float = Field(default=1.0, gt=0, le=1000, description="Rate per variant.")


class CanaryAnalysis(KubeModel):
    """Metric checks run after each canary interval."""

    prometheus_url: str = Field(
        max_length=1024, pattern=r"^https?://.+", description="Prometheus HTTP API base URL."
    )
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Max 5xx fraction of canary requests."
    )
    max_p95_latency_ms: float | None = Field(default=None, gt=0, description="Max p95 request latency.")
    max_ttft_p95_ms: float | None = Field(
        default=None, gt=0, alias="maxTTFTp95Ms", description="Max p95 time to first token."
    )
    min_requests: int = Field(default=50, ge=0, description="Samples needed before a verdict; fewer waits.")
    relative: bool = Field(default=False, description="Also require the canary not to be worse than stable.")
    relative_tolerance: float = Field(
        default=0.1, ge=0, le=10, description="Allowed fraction worse than stable."
    )
    synthetic_traffic: SyntheticTraffic = Field(
        default_factory=SyntheticTraffic, description="Fill low-traffic canaries."
    )
    no_verdict_limit: int = Field(
        default=3,
        ge=1,
        le=100,
        description=(
            "Analyses in a row without a verdict (Prometheus unreachable or not Prometheus, no data, fewer "
            "than minRequests) before the canary pauses with reason AnalysisStalled."
        ),
    )


class Canary(KubeModel):
    """Progressive rollout from the stable variant to the canary variant."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.steps.isSorted()", "steps must be strictly increasing", fieldPath=".steps"),
                cel(
                    "self.steps[self.steps.size()-1] == 100", "the last step must be 100", fieldPath=".steps"
                ),
            ]
        }
    )

    stable_variant: str = Field(max_length=40, description="Variant taking traffic now.")
    canary_variant: str = Field(max_length=40, description="Variant being rolled out.")
    steps: list[int] = Field(
        default_factory=lambda: [10, 25, 50, 100],
        min_length=1,
        max_length=20,
        description="Canary weights, percent, strictly increasing, ending at 100.",
        json_schema_extra={
            "items": {"type": "integer", "minimum": 1, "maximum": 100},
            "x-kubernetes-list-type": "set",
        },
    )
    interval: str = Field(
        default="5m",
        max_length=32,
        pattern=DURATION_PATTERN,
        description="Time per step (more than zero).",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("duration(self) > duration('0s')", "interval must be more than 0s")
            ]
        },
    )
    failure_limit: int = Field(default=2, ge=1, le=100, description="Failed analyses before rollback.")
    max_surge: int = Field(default=1, ge=0, le=100, description="Extra pods allowed while weight moves.")
    pause: bool = Field(default=False, description="Hold at the current step.")
    abort: bool = Field(
        default=False,
        description=(
            "Roll back now: all traffic to the stable variant, canary pods scaled to zero. "
            "Setting it back to false starts the rollout over from the first step."
        ),
    )
    analysis: CanaryAnalysis | None = Field(default=None, description="Metric checks; none means time-based.")


class GatewayParentRef(KubeModel):
    """A Gateway the HTTPRoute attaches to."""

    name: str = Field(max_length=253, description="Gateway name.")
    namespace: str | None = Field(default=None, max_length=63, description="Gateway namespace.")
    section_name: str | None = Field(default=None, max_length=253, description="Listener name.")


GATEWAY_DURATION_PATTERN = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
"""Gateway API's Duration (GEP-2257): what HTTPRoute timeouts accept."""
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class RouteTimeouts(KubeModel):
    """HTTPRoute rule timeouts. Gateways default to 15-30 s, which cuts off long LLM streams."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.backendRequest) || !has(self.request) || "
                    "duration(self.backendRequest) <= duration(self.request)",
                    "timeouts.backendRequest must not exceed timeouts.request",
                    fieldPath=".backendRequest",
                )
            ]
        }
    )

    request: str = Field(
        default="600s",
        pattern=GATEWAY_DURATION_PATTERN,
        description="Whole request, from the gateway receiving it to the last byte of the response.",
    )
    backend_request: str = Field(
        default="600s",
        pattern=GATEWAY_DURATION_PATTERN,
        description="One try to a backend; at most `request`.",
    )


class EndpointPicker(KubeModel):
    """The Gateway API Inference Extension's endpoint picker of each InferencePool (run separately)."""

    port: int = Field(default=9002, ge=1, le=65535, description="gRPC port of the `<pool>-epp` Service.")
    failure_mode: Literal["FailOpen", "FailClose"] = Field(
        default="FailClose", description="What the gateway does when the picker does not answer."
    )


class Traffic(KubeModel):
    """How requests reach the variants."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.provider) || self.provider == 'router' || "
                    "(has(self.gatewayParentRefs) && size(self.gatewayParentRefs) > 0)",
                    "traffic.provider gateway-api or inference-pool needs gatewayParentRefs (the Gateways to"
                    " attach to)",
                    fieldPath=".gatewayParentRefs",
                    reason="FieldValueRequired",
                )
            ]
        }
    )

    provider: Literal["router", "gateway-api", "inference-pool"] = Field(
        default="router",
        description="kubetune router; a Gateway API HTTPRoute to the variants' Services; or one to an "
        "InferencePool per variant (Gateway API Inference Extension).",
    )
    sticky_header: str | None = Field(
        default="x-user-id",
        min_length=1,
        max_length=128,
        pattern=HEADER_TOKEN_PATTERN,
        description="Header whose value pins a user to a variant (router only); API key hash if absent.",
    )
    router_replicas: int = Field(default=2, ge=1, le=100, description="Router pods (router provider).")
    gateway_parent_refs: list[GatewayParentRef] = Field(
        default_factory=list,
        max_length=16,
        description="Gateways for the HTTPRoute (gateway-api and inference-pool providers).",
    )
    hostnames: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Host names the HTTPRoute matches (all the Gateway's when empty); the first one is "
        "status.endpoint's host.",
        json_schema_extra={"items": {"type": "string", "maxLength": 253, "pattern": HOSTNAME_PATTERN}},
    )
    timeouts: RouteTimeouts = Field(
        default_factory=RouteTimeouts, description="HTTPRoute timeouts, sized for streamed generations."
    )
    endpoint_picker: EndpointPicker | None = Field(
        default=None,
        description="inference-pool provider: each pool's endpointPickerRef names the Service "
        "`<pool>-epp`; absent, the gateway balances over the pool's pods itself.",
    )
    canary: Canary | None = Field(
        default=None, description="Progressive rollout; absent means fixed weights."
    )


class SmokeTest(KubeModel):
    """Prompts each variant must answer well before it gets traffic."""

    enabled: bool = Field(default=True, description="Run the smoke test.")
    prompts: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Prompts; default is the FineTuneJob's test split, else a generic prompt.",
        json_schema_extra={"items": {"type": "string", "maxLength": 8192}},
    )
    max_tokens: int = Field(default=128, ge=1, le=32768, description="Generation budget per prompt.")
    min_stop_fraction: float = Field(
        default=1.0, ge=0, le=1, description="Fraction of responses that must end with finish_reason=stop."
    )


class MetricsConfig(KubeModel):
    """Prometheus integration."""

    pod_monitor: bool = Field(default=True, description="Create a PodMonitor when its CRD exists.")


DEPLOYMENT_RULES: list[JsonValue] = [
    cel(
        "has(self.traffic) && has(self.traffic.canary) || self.variants.map(v, v.weight).sum() == 100",
        "variant weights must sum to 100 unless traffic.canary drives them",
        fieldPath=".variants",
    ),
    cel(
        "!has(self.traffic) || !has(self.traffic.canary) || "
        "(self.variants.exists(v, v.name == self.traffic.canary.stableVariant) && "
        "self.variants.exists(v, v.name == self.traffic.canary.canaryVariant) && "
        "self.traffic.canary.stableVariant != self.traffic.canary.canaryVariant)",
        "traffic.canary.stableVariant and canaryVariant must name two different variants",
        fieldPath=".traffic.canary",
    ),
    cel(
        "self.variants.all(v, !has(v.servedBy) || self.variants.exists(h, h.name == v.servedBy.variant && "
        "has(h.model) && has(h.adapters) && h.adapters.exists(a, a.name == v.servedBy.adapter)))",
        "servedBy must name a variant with its own model and one of that variant's adapters",
        fieldPath=".variants",
    ),
    cel(
        "!has(self.traffic) || self.traffic.provider == 'router' || self.variants.all(v, !has(v.servedBy))",
        "servedBy variants need traffic.provider router: an HTTPRoute cannot rewrite the request's model",
        fieldPath=".traffic.provider",
    ),
]


class ModelDeploymentSpec(KubeModel):
    """Desired serving state."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": DEPLOYMENT_RULES})

    variants: list[Variant] = Field(
        min_length=1,
        max_length=16,
        description="Model variants; names are unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    traffic: Traffic = Field(default_factory=Traffic, description="Traffic split and canary.")
    smoke_test: SmokeTest = Field(default_factory=SmokeTest, description="Pre-traffic smoke test.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus integration.")
    image: ImageOverrides | None = Field(default=None, description="vLLM image override.")

    def pods_of(self, variant_name: str) -> str:
        """The variant whose vLLM pods serve `variant_name`: itself, or the one it is servedBy."""
        for variant in self.variants:
            if variant.name == variant_name and variant.served_by is not None:
                return variant.served_by.variant
        return variant_name


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    AVAILABLE = "Available"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class RevisionOutcome(StrEnum):
    CANARY = "Canary"
    SERVING = "Serving"
    SUPERSEDED = "Superseded"
    ROLLED_BACK = "RolledBack"


class Revision(KubeModel):
    """One run of a followed FineTuneSchedule, and what serving made of it."""

    revision: str = Field(max_length=63, description="The run's FineTuneJob name.")
    adapter: str | None = Field(
        default=None, max_length=63, description="The adapter that follows the schedule (none: the model)."
    )
    served_model_name: str | None = Field(
        default=None, max_length=128, description="Name vLLM serves it under (versioned for adapters)."
    )
    artifact_uri: str | None = Field(default=None, max_length=1024, description="Artifact served.")
    metrics: EvalMetrics | None = Field(default=None, description="The run's scores (frozen set if gated).")
    outcome: RevisionOutcome = Field(description="Canary, Serving, Superseded or RolledBack.")
    reason: str = Field(default="", max_length=128, description="Why the outcome (CamelCase).")
    message: str = Field(default="", max_length=1024, description="Detail for humans.")
    started_at: datetime | None = Field(default=None, description="When serving began rolling it out.")
    ended_at: datetime | None = Field(
        default=None, description="When it was promoted, superseded or rolled back."
    )


class VariantStatus(KubeModel):
    """Observed state of one variant."""

    name: str = Field(max_length=40, description="Variant name.")
    ready_replicas: int = Field(default=0, ge=0, description="Pods passing readiness.")
    updated_replicas: int = Field(default=0, ge=0, description="Pods on the current template.")
    weight: int = Field(default=0, ge=0, le=100, description="Observed share of traffic, percent.")
    endpoint: str | None = Field(
        default=None, max_length=1024, description="OpenAI API base URL in the cluster."
    )
    model_uri: str | None = Field(default=None, max_length=1024, description="Artifact actually served.")
    lineage: dict[str, str] = Field(
        default_factory=dict, description="FineTuneJob lineage (dataset digest, base revision, config hash)."
    )
    smoke_tested: str | None = Field(
        default=None,
        max_length=1100,
        description="What the SmokeTestPassed verdict is about: the served artifact and a hash of the "
        "pod's containers (`<uri>@<hash>`); the verdict stands until either changes.",
    )
    serving_revision: str | None = Field(
        default=None, max_length=63, description="The followed schedule's run serving all its traffic."
    )
    revisions: list[Revision] = Field(
        default_factory=list,
        max_length=20,
        description="Revisions of followed schedules, oldest first (the newest 20).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["revision"]},
    )
    conditions: list[Condition] = conditions_field()


class AnalysisResult(KubeModel):
    """One metric check."""

    metric: str = Field(max_length=64, description="errorRate, p95LatencyMs or ttftP95Ms.")
    query: str = Field(max_length=4096, description="PromQL that was run.")
    value: float | None = Field(default=None, description="Observed value; absent when no data.")
    threshold: float | None = Field(default=None, description="Limit it was compared with.")
    samples: int = Field(default=0, ge=0, description="Requests behind the value.")
    passed: bool = Field(description="Whether the check passed.")


class CanaryStatus(KubeModel):
    """Where the rollout is."""

    step: int = Field(default=0, ge=0, description="Index into traffic.canary.steps (0 = not started).")
    weight: int = Field(default=0, ge=0, le=100, description="Canary weight applied now.")
    failures: int = Field(default=0, ge=0, description="Failed analyses at this step.")
    step_started_at: datetime | None = Field(default=None, description="When the current step began.")
    step_served_at: datetime | None = Field(
        default=None,
        description=(
            "When every router pod first served the current step's split; the analysis interval counts "
            "from here (a ConfigMap reaches the routers a minute or more after it is written)."
        ),
    )
    last_analysis: list[AnalysisResult] = Field(
        default_factory=list, max_length=16, description="Checks of the last analysis."
    )
    analyzed_at: datetime | None = Field(default=None, description="When the last analysis ran.")
    no_verdict: int = Field(default=0, ge=0, description="Analyses in a row that gave no verdict.")
    no_verdict_cause: str | None = Field(
        default=None, max_length=1024, description="Why the last analysis gave no verdict."
    )


class ModelDeploymentStatus(KubeModel):
    """Observed state; written by the operator only."""

    phase: Phase | None = Field(default=None, description="Summary of the conditions, for humans.")
    conditions: list[Condition] = conditions_field()
    observed_generation: int | None = Field(default=None, ge=0, description="Last generation reconciled.")
    ready_variants: str | None = Field(default=None, max_length=16, description="ready/total variants.")
    weights: str | None = Field(default=None, max_length=1024, description="Observed weights, name=percent.")
    variants: list[VariantStatus] = Field(
        default_factory=list,
        max_length=16,
        description="Per-variant state.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    canary: CanaryStatus | None = Field(default=None, description="Canary progress.")
    endpoint: str | None = Field(default=None, max_length=1024, description="Client-facing OpenAI API URL.")


class ModelDeployment(KubeModel):
    """The whole object, as read from the API server."""

    # Children are `<name>-vllm-<variant>`, `<name>-router`, ...: Services need a DNS-1035 label, and a
    # name ending in `-vllm` (or containing `-vllm-`) could take another ModelDeployment's child names
    # (`a` with variant `router` and `a-vllm` both render `a-vllm-router`).
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.metadata.name.matches('{DNS_1035_PATTERN}') && size(self.metadata.name) <= 40",
                    "metadata.name must be a DNS-1035 label of at most 40 characters (lower-case letters, "
                    "digits and '-', starting with a letter): it names the Services of the variants",
                ),
                cel(
                    "!self.metadata.name.endsWith('-vllm') && !self.metadata.name.contains('-vllm-')",
                    "metadata.name must not end with '-vllm' or contain '-vllm-': the children of another "
                    "ModelDeployment are named <name>-vllm-<variant>",
                ),
            ]
        }
    )

    api_version: str = Field(default="kubetune.io/v1alpha1", description="kubetune.io/v1alpha1.")
    kind: Literal["ModelDeployment"] = Field(default="ModelDeployment", description="ModelDeployment.")
    metadata: dict[str, object] = Field(default_factory=dict, description="Standard object metadata.")
    spec: ModelDeploymentSpec = Field(description="Desired serving.")
    status: ModelDeploymentStatus | None = Field(default=None, description="Observed state.")
