"""FineTuneSchedule: FineTuneJobs on a cron schedule, with CronJob's semantics, and a run history."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.config import JsonValue

from kubetune.api.common import Condition, KubeModel, cel, conditions_field
from kubetune.api.finetunejob import Artifacts, EvalMetrics, FineTuneJobSpec, FrozenSet

KIND = "FineTuneSchedule"
PLURAL = "finetuneschedules"

MACROS = ("yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly")


def _field(value: str, *, extra_items: tuple[str, ...] = (), suffix: str = "") -> str:
    """One cron field: a comma list of `*`, `V` or `V-V`, each with an optional `/step`."""
    item = rf"(\*|({value})(-({value}))?)(/[0-9]{{1,2}})?{suffix}"
    if extra_items:
        item = f"({item}|{'|'.join(extra_items)})"
    return rf"{item}(,{item})*"


_NAME = "[A-Za-z]{3}"
# As close as a regular expression gets: five fields with their ranges (or an @-macro). What it cannot
# see (`30 2` as day and month, a misspelt month name) the operator reports as Accepted=False.
SCHEDULE_PATTERN = (
    "^(@("
    + "|".join(MACROS)
    + ")|"
    + " +".join(
        (
            _field("[0-5]?[0-9]"),
            _field("[01]?[0-9]|2[0-3]"),
            _field("0?[1-9]|[12][0-9]|3[01]", extra_items=("L",)),
            _field(f"0?[1-9]|1[0-2]|{_NAME}"),
            _field(f"[0-7]|{_NAME}", extra_items=("[0-7]L", "[0-7]#[1-5]")),
        )
    )
    + ")$"
)
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$"


class ConcurrencyPolicy(StrEnum):
    """What a due run does while an earlier one is still training.

    No `Allow` (CronJob's default): two runs of one schedule would train on the same data into sibling
    folders and race to be "the latest run"; a team that wants parallel runs writes two schedules.
    """

    FORBID = "Forbid"
    REPLACE = "Replace"


class JobTemplateMetadata(KubeModel):
    """Labels and annotations copied onto every run's FineTuneJob."""

    labels: dict[str, str] = Field(default_factory=dict, description="Labels of each run.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations of each run.")


class FineTuneJobTemplate(KubeModel):
    """The FineTuneJob each run creates; its output.uri is the schedule's, each run in its own folder."""

    metadata: JobTemplateMetadata = Field(
        default_factory=JobTemplateMetadata, description="Labels and annotations of each run."
    )
    spec: FineTuneJobSpec = Field(description="The FineTuneJob spec of each run.")


class Incremental(KubeModel):
    """Each run continues the adapter of the schedule's latest good run (status.latestGoodRun when the
    run is created) with spec.initFrom; the first run, with none yet, trains a fresh adapter."""

    enabled: bool = Field(default=True, description="Start each run from the latest good run.")
    replay_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="initFrom.replayFraction of each run: earlier records replayed per new training record.",
    )
    learning_rate_scale: float = Field(
        default=1.0, gt=0.0, le=1.0, description="initFrom.learningRateScale of each run."
    )


INCREMENTAL_RULES: list[JsonValue] = [
    cel(
        "!has(self.incremental) || !self.incremental.enabled || self.jobTemplate.spec.method != 'full'",
        "incremental needs jobTemplate.spec.method lora or qlora: runs continue an adapter",
        fieldPath=".incremental",
        reason="FieldValueForbidden",
    ),
    cel(
        "!has(self.incremental) || !self.incremental.enabled || !has(self.jobTemplate.spec.initFrom)",
        "jobTemplate.spec.initFrom must not be set when incremental is enabled: each run's initFrom is "
        "the schedule's latest good run",
        fieldPath=".jobTemplate.spec.initFrom",
        reason="FieldValueForbidden",
    ),
]


class MaxIncrease(KubeModel):
    """How much higher than the champion's a lower-is-better metric may be."""

    max_increase: float = Field(ge=0, le=1000, description="Largest allowed increase (0: no worse at all).")


class MaxDecrease(KubeModel):
    """How much lower than the champion's a higher-is-better metric may be."""

    max_decrease: float = Field(ge=0, le=100, description="Largest allowed decrease (0: no worse at all).")


class NoWorseThanChampion(KubeModel):
    """Per metric, how much worse than the model in production a run may score on the frozen set."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.evalLoss) || has(self.rougeL) || has(self.bleu)",
                    "evaluation.noWorseThanChampion needs at least one of evalLoss, rougeL or bleu",
                )
            ]
        }
    )

    eval_loss: MaxIncrease | None = Field(default=None, description="Mean token loss (lower is better).")
    rouge_l: MaxDecrease | None = Field(
        default=None, alias="rougeL", description="ROUGE-L F1, 0-1 (higher is better)."
    )
    bleu: MaxDecrease | None = Field(default=None, description="Corpus BLEU, 0-100 (higher is better).")


class ScheduleEvaluation(KubeModel):
    """Champion-challenger: every run is scored on one frozen set, and so is the model in production
    (the followers' serving revision, else the latest good run), in the same run; a run worse than it
    by more than the tolerances fails the gate and is never served."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.frozenSet) != (has(self.fromFirstRun) && self.fromFirstRun)",
                    "set exactly one of evaluation.frozenSet or evaluation.fromFirstRun: true",
                )
            ]
        }
    )

    frozen_set: FrozenSet | None = Field(default=None, description="A held-out file you provide.")
    from_first_run: bool | None = Field(
        default=None,
        description="Pin the first successful run's test split (its <output>/<run>/frozen-eval.jsonl).",
    )
    no_worse_than_champion: NoWorseThanChampion = Field(
        description="Per-metric tolerances against the champion."
    )


# The template's evaluation metrics default to all three; a tolerance on a metric left out of them
# could never be compared.
_GATED_METRICS = (("evalLoss", "loss"), ("rougeL", "rouge"), ("bleu", "bleu"))
SPEC_RULES: list[JsonValue] = [
    cel(
        "!has(self.evaluation) || self.jobTemplate.spec.output.uri.startsWith('pvc://')",
        "evaluation needs jobTemplate.spec.output.uri on a claim (pvc://): the champion is mounted from it",
        fieldPath=".jobTemplate.spec.output.uri",
    ),
    cel(
        "!has(self.evaluation) || !has(self.evaluation.fromFirstRun) || !self.evaluation.fromFirstRun || "
        "!has(self.jobTemplate.spec.dataset.testSplit) || self.jobTemplate.spec.dataset.testSplit > 0.0",
        "evaluation.fromFirstRun needs jobTemplate.spec.dataset.testSplit > 0: the first run's test split "
        "is the frozen set",
        fieldPath=".jobTemplate.spec.dataset.testSplit",
    ),
    cel(
        "!has(self.jobTemplate.spec.evaluation) || (!has(self.jobTemplate.spec.evaluation.champion) && "
        "!has(self.jobTemplate.spec.evaluation.exportTestSplit))",
        "jobTemplate.spec.evaluation.champion and exportTestSplit are set by the schedule (spec.evaluation)",
        fieldPath=".jobTemplate.spec.evaluation",
    ),
    cel(
        "!has(self.evaluation) || !has(self.jobTemplate.spec.evaluation) || "
        "!has(self.jobTemplate.spec.evaluation.frozenSet)",
        "set the frozen set in evaluation.frozenSet, not jobTemplate.spec.evaluation.frozenSet",
        fieldPath=".jobTemplate.spec.evaluation.frozenSet",
    ),
    *(
        cel(
            f"!has(self.evaluation) || !has(self.evaluation.noWorseThanChampion.{gated}) || "
            "!has(self.jobTemplate.spec.evaluation) || !has(self.jobTemplate.spec.evaluation.metrics) || "
            f"'{metric}' in self.jobTemplate.spec.evaluation.metrics",
            f"evaluation.noWorseThanChampion.{gated} needs '{metric}' in jobTemplate.spec.evaluation.metrics",
            fieldPath=f".evaluation.noWorseThanChampion.{gated}",
        )
        for gated, metric in _GATED_METRICS
    ),
]


class FineTuneScheduleSpec(KubeModel):
    """When to retrain and what: a CronJob for FineTuneJobs."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [*SPEC_RULES, *INCREMENTAL_RULES]}
    )

    schedule: str = Field(
        max_length=128,
        pattern=SCHEDULE_PATTERN,
        description="Cron expression (minute hour day-of-month month day-of-week) or @daily, @weekly...",
    )
    time_zone: str | None = Field(
        default=None,
        max_length=64,
        pattern=TIME_ZONE_PATTERN,
        description="IANA time zone of the schedule, e.g. Europe/Berlin (default UTC).",
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.FORBID,
        description="Forbid: skip a due run while one is active. Replace: stop the active run, start anew.",
    )
    starting_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="A run more than this late (operator down, suspended, Forbid) is not started.",
    )
    suspend: bool = Field(
        default=False, description="Start no scheduled runs (active ones go on; a trigger still runs)."
    )
    successful_runs_history_limit: int = Field(
        default=3, ge=0, le=20, description="Succeeded (and skipped) runs kept, newest first."
    )
    failed_runs_history_limit: int = Field(default=1, ge=0, le=20, description="Failed runs kept.")
    trigger: int | None = Field(
        default=None,
        ge=0,
        description="Run once now when this differs from status.lastTrigger (bump it from Git or kubectl).",
    )
    skip_unchanged_data: bool = Field(
        default=True,
        description="Skip a scheduled run when the data and template are those of the last successful run.",
    )
    incremental: Incremental | None = Field(
        default=None, description="Continue the latest good run's adapter in each run (lora/qlora)."
    )
    job_template: FineTuneJobTemplate = Field(description="The FineTuneJob each run creates.")
    evaluation: ScheduleEvaluation | None = Field(
        default=None,
        description="Champion-challenger gate on a frozen set (none: every successful run is good).",
    )


class RunTrigger(StrEnum):
    SCHEDULE = "Schedule"
    MANUAL = "Manual"


class RunPhase(StrEnum):
    ACTIVE = "Active"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class RunGate(KubeModel):
    """The champion-challenger verdict on a run: its scores on the schedule's frozen evaluation set
    against those of the model in production, scored on the same set."""

    passed: bool = Field(description="Whether the run may replace the production model.")
    reason: str = Field(default="", max_length=128, description="Why (CamelCase).")
    message: str = Field(default="", max_length=1024, description="Per-metric comparison, for humans.")
    champion: str | None = Field(
        default=None, max_length=63, description="The run (FineTuneJob) it was compared with, if any."
    )
    challenger_metrics: EvalMetrics | None = Field(
        default=None, description="This run's scores on the frozen evaluation set."
    )
    champion_metrics: EvalMetrics | None = Field(
        default=None, description="The champion's scores on the same set, in the same run."
    )


class ScheduledRun(KubeModel):
    """One run of the schedule and how it ended."""

    name: str = Field(max_length=63, description="The run's FineTuneJob (none for a skipped run).")
    scheduled_time: datetime = Field(description="The cron time (or trigger time) the run is for.")
    trigger: RunTrigger = Field(description="Schedule or Manual.")
    phase: RunPhase = Field(description="Active, Succeeded, Failed or Skipped.")
    reason: str = Field(default="", max_length=128, description="Why it ended so (CamelCase).")
    message: str = Field(default="", max_length=1024, description="Detail for humans.")
    completion_time: datetime | None = Field(default=None, description="When the run ended.")
    dataset_digest: str | None = Field(
        default=None, max_length=128, description="sha256 of the data the run trained on (or skipped)."
    )
    template_hash: str | None = Field(
        default=None, max_length=64, description="Hash of the job template the run was created from."
    )
    metrics: EvalMetrics | None = Field(default=None, description="The run's final evaluation.")
    artifacts: Artifacts | None = Field(default=None, description="What the run exported.")
    gate: RunGate | None = Field(
        default=None, description="Champion-challenger verdict (none when the schedule has no gate)."
    )

    def is_good(self) -> bool:
        """A run followers may serve and the next incremental run may start from."""
        return self.phase is RunPhase.SUCCEEDED and (self.gate is None or self.gate.passed)


class SchedulePhase(StrEnum):
    ACTIVE = "Active"
    IDLE = "Idle"
    SUSPENDED = "Suspended"
    INVALID = "Invalid"


class PinnedFrozenSet(KubeModel):
    """The frozen set in use: spec.evaluation.frozenSet's, or the test split a run exported (fromFirstRun)."""

    uri: str = Field(max_length=1024, description="The JSONL file every run is scored on.")
    run: str | None = Field(
        default=None, max_length=63, description="The run whose test split it is (none: from the spec)."
    )


class FineTuneScheduleStatus(KubeModel):
    """Observed state; written by the operator only."""

    phase: SchedulePhase | None = Field(default=None, description="Summary of the conditions, for humans.")
    conditions: list[Condition] = conditions_field()
    observed_generation: int | None = Field(default=None, ge=0, description="Last generation reconciled.")
    last_schedule_time: datetime | None = Field(
        default=None, description="The latest cron time handled (run, skipped or replaced)."
    )
    last_successful_time: datetime | None = Field(default=None, description="When a run last succeeded.")
    next_schedule_time: datetime | None = Field(default=None, description="The next cron time.")
    last_trigger: int | None = Field(default=None, ge=0, description="The spec.trigger last acted on.")
    last_successful_dataset_digest: str | None = Field(
        default=None, max_length=128, description="Dataset sha256 of the last successful run."
    )
    last_successful_template_hash: str | None = Field(
        default=None, max_length=64, description="Job template hash of the last successful run."
    )
    latest_good_run: str | None = Field(
        default=None,
        max_length=63,
        description="The newest run that succeeded and passed its gate: what followers serve next.",
    )
    frozen_set: PinnedFrozenSet | None = Field(
        default=None, description="The frozen evaluation set runs are scored on (spec.evaluation)."
    )
    active: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Runs in flight.",
        json_schema_extra={"items": {"type": "string", "maxLength": 63}},
    )
    runs: list[ScheduledRun] = Field(
        default_factory=list,
        max_length=64,
        description="Run history, oldest first, pruned to the history limits.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class FineTuneSchedule(KubeModel):
    """The whole object, as read from the API server."""

    api_version: str = Field(default="kubetune.io/v1alpha1", description="kubetune.io/v1alpha1.")
    kind: Literal["FineTuneSchedule"] = Field(default="FineTuneSchedule", description="FineTuneSchedule.")
    metadata: dict[str, object] = Field(default_factory=dict, description="Standard object metadata.")
    spec: FineTuneScheduleSpec = Field(description="Desired schedule.")
    status: FineTuneScheduleStatus | None = Field(default=None, description="Observed state.")
