"""Which artifact a variant serves: a URI in the spec, or a FineTuneJob's published artifacts. Pure.

A variant whose model comes from a FineTuneJob serves its merged model when the job exported one,
otherwise the job's base model with the job's adapter loaded as a LoRA module named after the
variant (so clients always reach the fine-tuned model by the variant's name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from kubetune.api.conditions import Reason
from kubetune.api.finetunejob import (
    Artifacts,
    EvalMetrics,
    FineTuneJob,
    FineTuneJobSpec,
    Lineage,
    LoraConfig,
    Method,
    Phase,
)
from kubetune.api.modeldeployment import Variant
from kubetune.api.trainingconfig import trusted_artifacts
from kubetune.api.uris import with_revision

FineTuneJobLike = FineTuneJob | Mapping[str, Any]


class ResolutionState(StrEnum):
    READY = "Ready"
    WAITING = "Waiting"
    FAILED = "Failed"
    NOT_FOUND = "NotFound"


@dataclass(frozen=True)
class LoraModule:
    """One `--lora-modules name=path` entry, before the path is mapped into the pod."""

    name: str
    uri: str
    rank: int | None = None  # known when the adapter comes from a FineTuneJob


@dataclass(frozen=True)
class FollowedAdapter:
    """An adapter that follows a FineTuneSchedule. Its revisions are not `--lora-modules`: the operator
    loads each into the running pods under a versioned name (kubetune.serving.lora_runtime), from a
    folder under `root_uri`, the schedule's output, which the pods mount whole (builders.vllm)."""

    name: str
    root_uri: str
    rank: int | None = None  # the schedule's jobTemplate LoRA rank: sizes --max-lora-rank


@dataclass(frozen=True)
class Resolution:
    state: ResolutionState
    reason: Reason
    message: str
    model_uri: str | None = None
    lora_modules: tuple[LoraModule, ...] = ()
    followed_adapters: tuple[FollowedAdapter, ...] = ()
    lineage: Mapping[str, str] = field(default_factory=dict)
    metrics: EvalMetrics | None = None
    test_prompts: tuple[str, ...] = ()  # the FineTuneJob's held-out prompts, for the smoke test

    @property
    def ready(self) -> bool:
        return self.state is ResolutionState.READY


def served_model_name(variant: Variant, resolution: Resolution) -> str:
    """Name vLLM serves the base weights under.

    The variant's own name belongs to the fine-tuned model: when that model is a LoRA module,
    the base weights move aside to `<variant>-base`.
    """
    if any(module.name == variant.name for module in resolution.lora_modules):
        return f"{variant.name}-base"
    return variant.name


@dataclass(frozen=True)
class _JobView:
    """The parts of a FineTuneJob that serving reads, tolerant of a status still being written."""

    name: str
    phase: str | None
    failed_message: str
    artifacts: Artifacts
    lineage: Lineage | None
    metrics: EvalMetrics | None
    base_model_uri: str | None
    lora_rank: int | None
    test_prompts: tuple[str, ...] = ()


def _status_dict(job: FineTuneJobLike) -> Mapping[str, Any]:
    if isinstance(job, FineTuneJob):
        return job.status.to_wire() if job.status else {}
    return job.get("status") or {}


def _spec_dict(job: FineTuneJobLike) -> Mapping[str, Any]:
    if isinstance(job, FineTuneJob):
        return job.spec.to_wire()
    return job.get("spec") or {}


def _parse_part(model: type[Any], data: Any) -> Any:
    if not data:
        return None
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def _trusted_artifacts(spec: Mapping[str, Any], reported: Artifacts) -> Artifacts:
    """Artifact locations from the FineTuneJob's spec.output layout (the contract the trainer writes to),
    never from the status: rank 0 reports through the status, and a report must not point serving at
    another model. The report only says which of them the run produced."""
    try:
        return trusted_artifacts(FineTuneJobSpec.model_validate(spec), reported)
    except ValidationError:
        return Artifacts()


def _pinned_base(artifacts: Artifacts, spec: Mapping[str, Any], lineage: Lineage | None) -> str | None:
    """The base model the adapter was trained on, pinned to the revision training used (the resolved
    commit in the lineage, else spec.baseModel.revision): a moving branch must not change what is served."""
    base = spec.get("baseModel") or {}
    uri = artifacts.base_model_uri or base.get("uri")
    if uri is None:
        return None
    revision = (lineage.base_model_revision if lineage else None) or base.get("revision")
    return with_revision(str(uri), revision)


def _view(name: str, job: FineTuneJobLike) -> _JobView:
    status = _status_dict(job)
    spec = _spec_dict(job)
    conditions = status.get("conditions") or []
    by_type = {c.get("type"): c for c in conditions if isinstance(c, Mapping)}
    phase = status.get("phase")
    if phase is None and by_type.get("Succeeded", {}).get("status") == "True":
        phase = Phase.SUCCEEDED.value
    if by_type.get("Failed", {}).get("status") == "True":
        phase = Phase.FAILED.value
    failed = by_type.get("Failed", {})
    failed_message = str(failed.get("message") or failed.get("reason") or "")
    method = spec.get("method", Method.LORA.value)
    lora_rank: int | None = None
    if method != Method.FULL.value:
        lora_rank = int((spec.get("lora") or {}).get("r", LoraConfig().r))
    artifacts = _trusted_artifacts(spec, _parse_part(Artifacts, status.get("artifacts")) or Artifacts())
    return _JobView(
        name=name,
        phase=phase,
        failed_message=failed_message,
        artifacts=artifacts,
        lineage=_parse_part(Lineage, status.get("lineage")),
        metrics=_parse_part(EvalMetrics, status.get("metrics")),
        base_model_uri=_pinned_base(artifacts, spec, _parse_part(Lineage, status.get("lineage"))),
        lora_rank=lora_rank,
        test_prompts=tuple(str(p) for p in status.get("testPrompts") or ()),
    )


def lineage_map(job_name: str, lineage: Lineage | None, prefix: str = "") -> dict[str, str]:
    """Flatten a FineTuneJob's lineage into the variant status' string map."""
    result = {f"{prefix}finetuneJob": job_name}
    if lineage is not None:
        for key, value in lineage.to_wire().items():
            result[f"{prefix}{key}"] = str(value)
    return result


class _Unresolved(Exception):
    def __init__(self, state: ResolutionState, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.state, self.reason, self.message = state, reason, message


_SEVERITY = {ResolutionState.FAILED: 0, ResolutionState.NOT_FOUND: 1, ResolutionState.WAITING: 2}


def _succeeded_job(name: str, finetunejobs: Mapping[str, FineTuneJobLike | None]) -> _JobView:
    job = finetunejobs.get(name)
    if job is None:
        raise _Unresolved(
            ResolutionState.NOT_FOUND, Reason.FINETUNE_JOB_NOT_FOUND, f"FineTuneJob {name} does not exist"
        )
    view = _view(name, job)
    if view.phase == Phase.FAILED.value:
        detail = f": {view.failed_message}" if view.failed_message else ""
        raise _Unresolved(
            ResolutionState.FAILED, Reason.FINETUNE_JOB_FAILED, f"FineTuneJob {name} failed{detail}"
        )
    if view.phase != Phase.SUCCEEDED.value:
        raise _Unresolved(
            ResolutionState.WAITING,
            Reason.WAITING_FOR_FINETUNE_JOB,
            f"FineTuneJob {name} is {view.phase or 'Pending'}; waiting for it to succeed",
        )
    return view


def _model_from_job(variant: Variant, view: _JobView) -> tuple[str, list[LoraModule]]:
    artifacts = view.artifacts
    if artifacts.merged_model_uri:
        return artifacts.merged_model_uri, []
    if artifacts.adapter_uri and view.base_model_uri:
        return view.base_model_uri, [LoraModule(variant.name, artifacts.adapter_uri, view.lora_rank)]
    raise _Unresolved(
        ResolutionState.WAITING,
        Reason.WAITING_FOR_FINETUNE_JOB,
        f"FineTuneJob {view.name} succeeded but has not published a merged model or an adapter with its base",
    )


def resolve_variant_model(variant: Variant, finetunejobs: Mapping[str, FineTuneJobLike | None]) -> Resolution:
    """Resolve what `variant` serves; `finetunejobs` maps the referenced job names to the objects read.

    A missing key and a None value both mean the job does not exist. With several problems (model
    and adapters), the most final one gives the state and reason; the message lists them all.
    """
    problems: list[_Unresolved] = []
    model_uri: str | None = None
    modules: list[LoraModule] = []
    lineage: dict[str, str] = {}
    metrics: EvalMetrics | None = None
    test_prompts: tuple[str, ...] = ()

    source = variant.model
    if source is None:
        raise ValueError(f"variant {variant.name} has no model: resolve it with resolve_variants")
    if source.finetune_job_ref is not None:
        try:
            view = _succeeded_job(source.finetune_job_ref.name, finetunejobs)
            model_uri, modules = _model_from_job(variant, view)
            lineage.update(lineage_map(view.name, view.lineage))
            metrics = view.metrics
            test_prompts = view.test_prompts
        except _Unresolved as exc:
            problems.append(exc)
    elif source.finetune_schedule_ref is not None:
        # A followed schedule's runs reach here as finetuneJobRef revisions (planning/revisions.py);
        # a variant still naming the schedule has no good run to serve yet.
        problems.append(
            _Unresolved(
                ResolutionState.WAITING,
                Reason.WAITING_FOR_GOOD_RUN,
                f"FineTuneSchedule {source.finetune_schedule_ref.name} has no good run to serve yet",
            )
        )
    else:
        model_uri = source.uri

    adapter_metrics: list[EvalMetrics | None] = []
    for adapter in variant.adapters:
        if adapter.uri is not None:
            modules.append(LoraModule(adapter.name, adapter.uri))
            continue
        if adapter.finetune_schedule_ref is not None:
            continue  # loaded into the running pods under versioned names, never by --lora-modules
        assert adapter.finetune_job_ref is not None  # the CRD's CEL rule requires exactly one
        try:
            view = _succeeded_job(adapter.finetune_job_ref.name, finetunejobs)
        except _Unresolved as exc:
            problems.append(exc)
            continue
        if not view.artifacts.adapter_uri:
            problems.append(
                _Unresolved(
                    ResolutionState.FAILED,
                    Reason.FINETUNE_JOB_FAILED,
                    f"FineTuneJob {view.name} has no adapter artifact for adapter {adapter.name}",
                )
            )
            continue
        modules.append(LoraModule(adapter.name, view.artifacts.adapter_uri, view.lora_rank))
        test_prompts = test_prompts or view.test_prompts
        lineage.update(lineage_map(view.name, view.lineage, prefix=f"adapters.{adapter.name}."))
        adapter_metrics.append(view.metrics)

    if problems:
        worst = min(problems, key=lambda p: _SEVERITY[p.state])
        message = "; ".join(p.message for p in problems)
        return Resolution(worst.state, worst.reason, message)
    assert model_uri is not None
    # A variant that is "a base + one fine-tuned adapter" is judged by that adapter's job.
    if metrics is None and len(adapter_metrics) == 1:
        metrics = adapter_metrics[0]
    served = ", ".join([model_uri, *(f"{m.name}={m.uri}" for m in modules)])
    return Resolution(
        ResolutionState.READY,
        Reason.MODEL_RESOLVED,
        f"serving {served}",
        model_uri=model_uri,
        lora_modules=tuple(modules),
        lineage=lineage,
        metrics=metrics,
        test_prompts=test_prompts,
    )


def host_not_ready(host: str, host_resolution: Resolution) -> Resolution:
    """A variant served by `host`'s pods while the host is not ready: the host's state, named."""
    return dataclasses.replace(
        host_resolution,
        message=f"served by variant {host}: {host_resolution.message}",
        model_uri=None,
        lora_modules=(),
    )


def _resolve_served_by(
    variant: Variant,
    host: Variant,
    host_resolution: Resolution,
    finetunejobs: Mapping[str, FineTuneJobLike | None],
) -> Resolution:
    """An adapter in the host variant's pods: ready when the host is; judged by the adapter's own job."""
    assert variant.served_by is not None
    adapter_name = variant.served_by.adapter
    if not host_resolution.ready:
        return host_not_ready(host.name, host_resolution)
    module = next((m for m in host_resolution.lora_modules if m.name == adapter_name), None)
    adapter = next((a for a in host.adapters if a.name == adapter_name), None)
    if module is None or adapter is None:  # the CRD's CEL rule makes this unreachable through the API
        return Resolution(
            ResolutionState.FAILED,
            Reason.INVALID_SPEC,
            f"variant {host.name} has no adapter {adapter_name}",
        )
    lineage: dict[str, str] = {}
    metrics: EvalMetrics | None = None
    test_prompts: tuple[str, ...] = ()
    if adapter.finetune_job_ref is not None:
        job = finetunejobs.get(adapter.finetune_job_ref.name)
        if job is not None:
            view = _view(adapter.finetune_job_ref.name, job)
            lineage = lineage_map(view.name, view.lineage)
            metrics, test_prompts = view.metrics, view.test_prompts
    return Resolution(
        ResolutionState.READY,
        Reason.MODEL_RESOLVED,
        f"serving adapter {adapter_name}={module.uri} in variant {host.name}'s pods",
        model_uri=module.uri,
        lineage=lineage,
        metrics=metrics,
        test_prompts=test_prompts,
    )


def resolve_variants(
    variants: Sequence[Variant], finetunejobs: Mapping[str, FineTuneJobLike | None]
) -> dict[str, Resolution]:
    """Every variant's resolution; a servedBy variant follows its host's."""
    by_name = {v.name: v for v in variants}
    result = {v.name: resolve_variant_model(v, finetunejobs) for v in variants if v.served_by is None}
    for variant in variants:
        if variant.served_by is None:
            continue
        host = by_name.get(variant.served_by.variant)
        if host is None or host.served_by is not None:
            result[variant.name] = Resolution(
                ResolutionState.FAILED,
                Reason.INVALID_SPEC,
                f"servedBy.variant {variant.served_by.variant} is not a variant with its own model",
            )
            continue
        result[variant.name] = _resolve_served_by(variant, host, result[host.name], finetunejobs)
    return result


def referenced_finetunejobs(variant: Variant) -> list[str]:
    """FineTuneJob names a variant depends on (what the reconciler must read)."""
    names = []
    if variant.model is not None and variant.model.finetune_job_ref is not None:
        names.append(variant.model.finetune_job_ref.name)
    names.extend(a.finetune_job_ref.name for a in variant.adapters if a.finetune_job_ref is not None)
    return sorted(set(names))
