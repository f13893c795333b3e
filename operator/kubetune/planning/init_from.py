"""spec.initFrom against the earlier FineTuneJob: resolved, a wait, or a problem. Pure.

Incremental training continues another job's adapter, so that job must be one the new run can continue:
Succeeded, with an adapter, on the same base model (uri and revision) and with the same LoRA shape (r,
alpha, targetModules: a different shape cannot load the weights, a different alpha rescales them). A job
that is still training, or not created yet (GitOps applies objects in any order), is waited for; a job
that can never qualify fails this one with a message naming spec.initFrom.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubetune.api.conditions import Reason
from kubetune.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus, Method, Phase
from kubetune.builders.storage import InitSource
from kubetune.preflight import Problem

FIELD = "spec.initFrom.finetuneJobRef"
WAIT_REQUEUE_SECONDS = 30.0
"""How soon a waiting job looks at the earlier one again (no watch event links the two)."""


@dataclass(frozen=True)
class InitWait:
    """The earlier job may still qualify: start nothing, say why, look again later."""

    reason: Reason
    message: str


def resolve_init_from(
    spec: FineTuneJobSpec, name: str, earlier: Mapping[str, Any] | None
) -> InitSource | InitWait | Problem | None:
    """`earlier`: the FineTuneJob spec.initFrom names, as read (None: not found). None without initFrom."""
    init = spec.init_from
    if init is None:
        return None
    ref = init.finetune_job_ref.name
    if ref == name:
        return Problem("error", FIELD, "a FineTuneJob cannot start from itself")
    if earlier is None:
        return InitWait(
            Reason.FINETUNE_JOB_NOT_FOUND,
            f"{FIELD}: FineTuneJob {ref} does not exist (yet); training starts once it has succeeded",
        )
    earlier_spec = FineTuneJobSpec.model_validate(earlier["spec"])
    status = FineTuneJobStatus.model_validate(earlier.get("status") or {})
    if status.phase is Phase.FAILED:
        return Problem("error", FIELD, f"FineTuneJob {ref} failed: it has no adapter to start from")
    if status.phase is not Phase.SUCCEEDED:
        phase = status.phase.value if status.phase else "Pending"
        return InitWait(
            Reason.WAITING_FOR_FINETUNE_JOB,
            f"{FIELD}: FineTuneJob {ref} is {phase}; training starts once it has succeeded",
        )
    adapter = status.artifacts.adapter_uri if status.artifacts else None
    if earlier_spec.method is Method.FULL or not adapter:
        return Problem(
            "error", FIELD, f"FineTuneJob {ref} exported no adapter (method {earlier_spec.method})"
        )
    mismatch = _mismatch(spec, earlier_spec)
    if mismatch:
        return Problem("error", FIELD, f"FineTuneJob {ref} {mismatch}: its adapter cannot be continued here")
    return InitSource(
        finetune_job=ref,
        output_uri=earlier_spec.output.uri,
        adapter_uri=adapter,
        secret_ref=earlier_spec.output.secret_ref,
        replay_fraction=init.replay_fraction,
        learning_rate_scale=init.learning_rate_scale,
    )


def _mismatch(spec: FineTuneJobSpec, earlier: FineTuneJobSpec) -> str:
    """What differs between the two jobs' base model and LoRA shape ("" when nothing does)."""
    base, other = spec.base_model, earlier.base_model
    if (base.uri, base.revision) != (other.uri, other.revision):
        return (
            f"trained base model {other.uri}@{other.revision or 'default'}, "
            f"not {base.uri}@{base.revision or 'default'}"
        )
    lora, earlier_lora = spec.effective_lora(), earlier.effective_lora()
    if lora is None or earlier_lora is None:
        return ""
    for field, mine, theirs in (
        ("r", lora.r, earlier_lora.r),
        ("alpha", lora.alpha, earlier_lora.alpha),
        ("targetModules", sorted(lora.target_modules), sorted(earlier_lora.target_modules)),
    ):
        if mine != theirs:
            return f"has lora.{field} {theirs}, this job {mine}"
    return ""
