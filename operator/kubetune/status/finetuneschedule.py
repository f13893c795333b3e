"""A FineTuneSchedule's run history, from the recorded runs and the FineTuneJobs it owns. Pure."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.finetunejob import FineTuneJobStatus, Phase
from kubetune.api.finetuneschedule import FineTuneScheduleStatus, RunPhase, RunTrigger, ScheduledRun
from kubetune.builders.finetuneschedule import (
    ANNOTATION_DATASET_DIGEST,
    ANNOTATION_SCHEDULED_TIME,
    ANNOTATION_TEMPLATE_HASH,
    ANNOTATION_TRIGGER,
)
from kubetune.status.conditions import find_condition

Manifest = dict[str, Any]
FINISHED = (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.SKIPPED)


def _annotation(job: Mapping[str, Any], key: str) -> str | None:
    value = (job["metadata"].get("annotations") or {}).get(key)
    return str(value) if value else None


def _scheduled_time(job: Mapping[str, Any]) -> datetime:
    text = _annotation(job, ANNOTATION_SCHEDULED_TIME) or job["metadata"].get("creationTimestamp")
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def run_from_job(job: Mapping[str, Any], recorded: ScheduledRun | None) -> ScheduledRun:
    """The run as its FineTuneJob shows it now (a run recorded without its job keeps its record)."""
    status = FineTuneJobStatus.model_validate(job.get("status") or {})
    trigger = _annotation(job, ANNOTATION_TRIGGER)
    run = recorded or ScheduledRun(
        name=job["metadata"]["name"],
        scheduled_time=_scheduled_time(job),
        trigger=RunTrigger(trigger) if trigger in tuple(RunTrigger) else RunTrigger.SCHEDULE,
        phase=RunPhase.ACTIVE,
    )
    if run.phase in FINISHED:
        return run  # finished runs are history: a FineTuneJob changed later does not rewrite it
    update: dict[str, Any] = {
        "template_hash": _annotation(job, ANNOTATION_TEMPLATE_HASH),
        "dataset_digest": _annotation(job, ANNOTATION_DATASET_DIGEST),
    }
    if status.phase is Phase.SUCCEEDED:
        update.update(
            phase=RunPhase.SUCCEEDED,
            reason=Reason.COMPLETED.value,
            message="",
            completion_time=status.completion_time,
            metrics=status.metrics,
            artifacts=status.artifacts,
        )
        # What the trainer hashed is what was trained on (the data may have changed since creation).
        if status.lineage is not None and status.lineage.dataset_digest:
            update["dataset_digest"] = status.lineage.dataset_digest
    elif status.phase is Phase.FAILED:
        failed = find_condition(status.conditions, ConditionType.FAILED)
        update.update(
            phase=RunPhase.FAILED,
            reason=failed.reason if failed else Reason.FINETUNE_JOB_FAILED.value,
            message=(failed.message if failed else "")[:1024],
            completion_time=status.completion_time,
            metrics=status.metrics,
        )
    return run.model_copy(update=update)


def observe_runs(
    recorded: Sequence[ScheduledRun], jobs: Sequence[Manifest], now: datetime
) -> tuple[list[ScheduledRun], list[ScheduledRun]]:
    """(history, runs that finished in this observation), oldest first.

    A run whose FineTuneJob vanished while active (deleted by hand) is recorded as failed: nothing will
    report its outcome. A FineTuneJob of the schedule missing from the record (status lost) is adopted.
    """
    by_name = {job["metadata"]["name"]: job for job in jobs}
    history: list[ScheduledRun] = []
    finished: list[ScheduledRun] = []
    for run in recorded:
        job = by_name.pop(run.name, None)
        if job is not None:
            current = run_from_job(job, run)
        elif run.phase is RunPhase.ACTIVE:
            current = run.model_copy(
                update={
                    "phase": RunPhase.FAILED,
                    "reason": Reason.RUN_DELETED.value,
                    "message": f"FineTuneJob {run.name} was deleted before it finished",
                    "completion_time": now,
                }
            )
        else:
            current = run
        if run.phase is RunPhase.ACTIVE and current.phase is not RunPhase.ACTIVE:
            finished.append(current)
        history.append(current)
    for job in by_name.values():
        if job["metadata"].get("deletionTimestamp"):
            continue
        adopted = run_from_job(job, None)
        history.append(adopted)
        if adopted.phase is not RunPhase.ACTIVE:
            finished.append(adopted)
    history.sort(key=lambda r: (r.scheduled_time, r.name))
    return history, finished


def prune(
    history: Sequence[ScheduledRun], *, successful: int, failed: int, protected: Collection[str] = ()
) -> list[ScheduledRun]:
    """The history kept by the limits: the newest successful, skipped and failed runs; active ones and
    `protected` ones stay whatever the limits: the latest good run, revisions in production and runs
    another run starts from (runs that failed their gate count as successful and could otherwise push
    them out).

    Skipped runs are counted apart (under the successful limit) so that weeks without new data never
    push the last trained run, and the FineTuneJob a ModelDeployment may serve, out of the history.
    """
    keep: set[str] = set(protected)
    for phase, limit in (
        (RunPhase.SUCCEEDED, successful),
        (RunPhase.SKIPPED, successful),
        (RunPhase.FAILED, failed),
    ):
        newest = sorted((r for r in history if r.phase is phase), key=lambda r: r.scheduled_time)
        keep.update(r.name for r in newest[max(0, len(newest) - limit) :])
    return [r for r in history if r.phase is RunPhase.ACTIVE or r.name in keep]


def mark_name_conflict(status: Mapping[str, Any], name: str, now: datetime) -> dict[str, Any]:
    """The status with run `name` failed: a FineTuneJob of that name exists and is not this schedule's."""
    parsed = FineTuneScheduleStatus.model_validate(dict(status))
    parsed.runs = [
        run.model_copy(
            update={
                "phase": RunPhase.FAILED,
                "reason": Reason.NAME_CONFLICT.value,
                "message": f"a FineTuneJob named {name} exists and is not owned by this schedule",
                "completion_time": now,
            }
        )
        if run.name == name
        else run
        for run in parsed.runs
    ]
    parsed.active = [n for n in parsed.active if n != name]
    return parsed.to_wire()
