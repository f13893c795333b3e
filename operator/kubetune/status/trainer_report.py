"""What the operator takes from the trainer's self-reports, and why it refuses the rest. Pure.

Two reports come from the user's trainer image: live progress in the report ConfigMap
(`kubetune.api.trainerreport`) and the final `TrainerResult` in rank 0's termination message. Both are
the image's claim. Only fields that parse against the typed model and pass the sanity rules here reach
`status`; a refused field becomes a problem naming it (for a condition and an Event), never a crash and
never the raw value echoed back. Artifact locations are not taken from either: they derive from
`spec.output` (`kubetune.api.trainingconfig.trusted_artifacts`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from kubetune.api.finetunejob import EvalMetrics, FineTuneJobSpec, Lineage, Progress
from kubetune.api.trainerreport import MAX_LOSS, MAX_REPORT_BYTES, MAX_STEPS, REPORT_KEY, TrainerReport
from kubetune.api.trainingconfig import TrainerResult

CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a report's `updatedAt` may lie (node clocks drift) before it is refused."""
MAX_TEST_PROMPTS = 8
MAX_PROMPT_CHARS = 1024  # the CRD's limit on status.testPrompts items
MAX_SAMPLES = 1_000_000
MAX_PERPLEXITY = 1.0e300
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
CONFIG_HASH = re.compile(r"^(sha256:)?[0-9a-f]{8,64}$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")
_FIELD_PART = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True)
class ReportReading:
    """The progress to show (the previous one unless the report was accepted) and why a report was not."""

    progress: Progress | None
    problem: str | None = None


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a field path; names that are not plain identifiers (an unknown key
    chosen by the image) are not echoed."""
    return ".".join(str(p) if _FIELD_PART.match(str(p)) else "<unknown key>" for p in loc) or "report"


def _first_error(exc: ValidationError) -> str:
    # pydantic's messages state the rule broken ("less than or equal to 1"), not the input.
    error = exc.errors(include_url=False, include_input=False)[0]
    return f"{_where(tuple(error['loc']))}: {error['msg']}"


def read_report(
    data: Mapping[str, str] | None, *, attempt: int, previous: Progress | None, now: datetime
) -> ReportReading:
    """The report ConfigMap's data, checked against the current training `attempt` and the progress in
    status (`previous`).

    No report yet, or one from an earlier attempt (the new gang has not reported yet): `previous`, no
    problem. A report from an attempt that does not exist yet, a step beyond totalSteps, a step going
    back within an attempt, or an `updatedAt` in the future: `previous`, with a problem.
    """
    text = (data or {}).get(REPORT_KEY)
    if text is None:
        return ReportReading(previous)
    size = len(text.encode())
    if size > MAX_REPORT_BYTES:
        return ReportReading(previous, f"{REPORT_KEY}: {size} bytes, above the limit of {MAX_REPORT_BYTES}")
    try:
        report = TrainerReport.model_validate(json.loads(text))
    except ValueError as exc:  # ValidationError is a ValueError, as is a JSON syntax error
        if isinstance(exc, ValidationError):
            return ReportReading(previous, _first_error(exc))
        return ReportReading(previous, f"{REPORT_KEY}: not a JSON object")
    if report.attempt < attempt:
        return ReportReading(previous)
    if report.attempt > attempt:
        return ReportReading(previous, f"attempt: {report.attempt} is not the current attempt {attempt}")
    reported = report.progress
    if reported.total_steps is not None and reported.step > reported.total_steps:
        return ReportReading(
            previous, f"progress.step: {reported.step} is above progress.totalSteps {reported.total_steps}"
        )
    if previous is not None and previous.attempt == attempt and reported.step < previous.step:
        return ReportReading(
            previous,
            f"progress.step: went back from {previous.step} to {reported.step} within attempt {attempt}",
        )
    if reported.updated_at is not None and reported.updated_at > now + CLOCK_SKEW:
        return ReportReading(previous, "progress.updatedAt: in the future")
    progress = Progress(
        step=reported.step,
        total_steps=reported.total_steps,
        epoch=reported.epoch,
        loss=reported.loss,
        eval_loss=reported.eval_loss,
        learning_rate=reported.learning_rate,
        tokens_per_second=reported.tokens_per_second,
        mfu=reported.mfu,
        updated_at=reported.updated_at,
        attempt=attempt,
    )
    return ReportReading(progress)


def _bounded(value: float | None, low: float, high: float) -> bool:
    return value is None or (math.isfinite(value) and low <= value <= high)


def _vet_metrics(metrics: EvalMetrics, problems: list[str], where: str = "metrics") -> EvalMetrics:
    """The metrics with each out-of-range value dropped (a gate then sees it as missing)."""
    bounds: dict[str, tuple[float, float]] = {
        "eval_loss": (0.0, MAX_LOSS),
        "perplexity": (0.0, MAX_PERPLEXITY),
        "rouge_l": (0.0, 1.0),
        "bleu": (0.0, 100.0),
        "samples": (0.0, MAX_SAMPLES),
    }
    kept: dict[str, float | int | None] = {}
    for name, (low, high) in bounds.items():
        value = getattr(metrics, name)
        if _bounded(value, low, high):
            kept[name] = value
        else:
            alias = EvalMetrics.model_fields[name].alias or name
            problems.append(f"{where}.{alias}: not a finite number in [{low:g}, {high:g}]")
    return EvalMetrics.model_validate(kept)


def _vet_lineage(lineage: Lineage, spec: FineTuneJobSpec, problems: list[str]) -> Lineage:
    """Digests must look like digests; the base revision must be the spec's when the spec pins one
    (serving loads the base at the lineage's revision)."""
    vetted = lineage.model_copy()
    if lineage.dataset_digest is not None and not DIGEST.match(lineage.dataset_digest):
        problems.append("lineage.datasetDigest: not sha256:<64 hex digits>")
        vetted.dataset_digest = None
    if lineage.config_hash is not None and not CONFIG_HASH.match(lineage.config_hash):
        problems.append("lineage.configHash: not a hex digest")
        vetted.config_hash = None
    revision = lineage.base_model_revision
    pinned = spec.base_model.revision
    if revision is not None and (
        not REVISION.match(revision) or ".." in revision or (pinned is not None and revision != pinned)
    ):
        problems.append("lineage.baseModelRevision: not a revision name, or not spec.baseModel.revision")
        vetted.base_model_revision = pinned
    if lineage.checkpoint is not None and not lineage.checkpoint.isprintable():
        problems.append("lineage.checkpoint: contains control characters")
        vetted.checkpoint = None
    return vetted


def _vet_prompts(prompts: list[str], problems: list[str]) -> list[str]:
    kept = [p for p in prompts[:MAX_TEST_PROMPTS] if p.strip() and len(p) <= MAX_PROMPT_CHARS]
    if len(kept) < len(prompts):
        problems.append(
            f"testPrompts: only {MAX_TEST_PROMPTS} non-empty prompts of at most {MAX_PROMPT_CHARS}"
            " characters are kept"
        )
    return kept


def vet_result(
    result: TrainerResult, spec: FineTuneJobSpec, total_steps: int | None
) -> tuple[TrainerResult, list[str]]:
    """Rank 0's final result with every field that breaks a rule dropped, and one problem per field."""
    problems: list[str] = []
    metrics = _vet_metrics(result.metrics, problems) if result.metrics is not None else None
    lineage = _vet_lineage(result.lineage, spec, problems) if result.lineage is not None else None
    prompts = _vet_prompts(result.test_prompts, problems) if result.test_prompts else None
    frozen = result.frozen_set
    if frozen is not None:
        # The champion-challenger gate reads these: the same bounds as the test-split metrics.
        frozen = frozen.model_copy(
            update={
                "metrics": _vet_metrics(frozen.metrics, problems, "frozenSet.metrics")
                if frozen.metrics is not None
                else None,
                "champion_metrics": _vet_metrics(
                    frozen.champion_metrics, problems, "frozenSet.championMetrics"
                )
                if frozen.champion_metrics is not None
                else None,
            }
        )
    final_step = result.final_step
    limit = MAX_STEPS if total_steps is None else total_steps
    if final_step is not None and not 0 <= final_step <= limit:
        problems.append(f"finalStep: not in [0, {limit}]")
        final_step = None
    vetted = result.model_copy(
        update={
            "metrics": metrics,
            "lineage": lineage,
            "test_prompts": prompts,
            "final_step": final_step,
            "frozen_set": frozen,
        }
    )
    return vetted, problems
