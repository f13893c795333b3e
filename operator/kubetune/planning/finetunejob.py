"""FineTuneJob: its new status from the observed Jobs and pods, and what the reconciler does next. Pure.

Rules (docs/training-topology.md): the validation Job gates the training Job; a training Job that
fails with a fatal exit code (40 config, 41 data) fails the FineTuneJob with the trainer's message;
a disruption (preemption, drain) restarts the gang without counting; any other failure restarts
the gang while `restarts < runPolicy.backoffLimit`. A gang restart is a new training Job named
with the next attempt number; the failed one is deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from kubetune.api.common import Condition
from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.finetunejob import FineTuneJob, FineTuneJobSpec, FineTuneJobStatus, Lineage, Phase
from kubetune.api.trainerreport import REPORT_KEY
from kubetune.api.trainingconfig import output_artifacts, trusted_artifacts, trusted_frozen_set
from kubetune.builders.common import ANNOTATION_SPEC_HASH, LABEL_ROLE
from kubetune.builders.finetunejob import (
    ANNOTATION_RESTARTS,
    ROLE_TRAIN,
    ROLE_VALIDATE,
    ChildNames,
    child_names,
)
from kubetune.builders.training_pod import TRAINER_CONTAINER, VALIDATOR_CONTAINER
from kubetune.planning.job_pods import (
    attempt_of,
    classify,
    completion_index,
    job_condition,
    owned_by,
    parse_trainer_result,
    terminated,
    unschedulable_reason,
)
from kubetune.planning.plan import Event
from kubetune.preflight import Problem
from kubetune.status.conditions import find_condition, is_true, set_condition
from kubetune.status.pods import clip, container_problem
from kubetune.status.progress import compute_progress
from kubetune.status.trainer_report import read_report, vet_result


@dataclass(frozen=True)
class _Actions:
    """What one verdict asks for; `attempt` None: stay on the current training attempt."""

    create_validation: bool = False
    create_training: bool = False
    attempt: int | None = None
    delete_jobs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decisions:
    """What the reconciler should do after this observation."""

    create_validation: bool = False  # apply the validation Job
    create_training: bool = False  # create the training Job of `attempt` (build_children(restart=attempt))
    attempt: int = 0
    counted_restarts: int = 0  # pass as build_children(counted_restarts=...)
    delete_jobs: tuple[str, ...] = ()  # training Jobs to delete (propagationPolicy Background)
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class Observation:
    status: FineTuneJobStatus
    decisions: Decisions


@dataclass
class _Verdict:
    """The one state this pass lands in; conditions and phase are derived from it."""

    phase: Phase
    reason: Reason
    message: str
    validated: Literal["True", "False", "Unknown"] = "Unknown"
    validated_reason: Reason = Reason.PENDING
    actions: _Actions = _Actions()
    extra_events: list[Event] = field(default_factory=list)
    report_problems: list[str] | None = None
    """Fields of the trainer's final result (termination message) that were refused; None: none read."""


@dataclass
class _Pass:
    """One observation's inputs, shared by the decision steps (`status` is updated in place)."""

    spec: FineTuneJobSpec
    status: FineTuneJobStatus
    jobs: Sequence[Mapping[str, Any]]
    pods: Sequence[Mapping[str, Any]]
    now: datetime
    desired_hash: str | None
    names: ChildNames


def _gang_restart(
    attempt: int, delete_jobs: tuple[str, ...], message: str, event_type: Literal["Normal", "Warning"]
) -> _Verdict:
    """Replace the gang: delete its Jobs and create attempt + 1, announced by an Event."""
    return _Verdict(
        Phase.PENDING,
        Reason.GANG_RESTART,
        message,
        actions=_Actions(create_training=True, attempt=attempt + 1, delete_jobs=delete_jobs),
        extra_events=[Event(event_type, str(Reason.GANG_RESTART), message)],
    )


def _phase_from_conditions(conditions: Sequence[Condition]) -> Phase:
    if is_true(conditions, ConditionType.FAILED):
        return Phase.FAILED
    if is_true(conditions, ConditionType.SUCCEEDED):
        return Phase.SUCCEEDED
    if is_true(conditions, ConditionType.SUSPENDED):
        return Phase.SUSPENDED
    running = find_condition(conditions, ConditionType.RUNNING)
    if running is not None and running.status == "True":
        return Phase.EVALUATING if running.reason == Reason.EVALUATING else Phase.RUNNING
    validated = find_condition(conditions, ConditionType.DATA_VALIDATED)
    if validated is not None and validated.status == "Unknown" and validated.reason == Reason.VALIDATING:
        return Phase.VALIDATING
    return Phase.PENDING


def _conditions(
    previous: Sequence[Condition],
    verdict: _Verdict,
    generation: int | None,
    now: datetime,
    problems: Sequence[Problem],
) -> list[Condition]:
    conds = list(previous)
    if problems:
        conds = set_condition(
            conds,
            ConditionType.ACCEPTED,
            "False",
            Reason.INVALID_SPEC,
            clip("; ".join(map(str, problems))),
            generation,
            now,
        )
    conds = set_condition(
        conds,
        ConditionType.DATA_VALIDATED,
        verdict.validated,
        verdict.validated_reason,
        verdict.message if verdict.validated != "True" else "dataset passed validation",
        generation,
        now,
    )
    phase = verdict.phase
    active = phase in (Phase.RUNNING, Phase.EVALUATING)
    conds = set_condition(
        conds,
        ConditionType.RUNNING,
        "True" if active else "False",
        verdict.reason,
        verdict.message,
        generation,
        now,
    )
    for type_, true_in in (
        (ConditionType.SUCCEEDED, Phase.SUCCEEDED),
        (ConditionType.FAILED, Phase.FAILED),
        (ConditionType.SUSPENDED, Phase.SUSPENDED),
    ):
        if phase is true_in:
            conds = set_condition(conds, type_, "True", verdict.reason, verdict.message, generation, now)
        elif find_condition(conds, type_) is not None:
            conds = set_condition(conds, type_, "False", verdict.reason, verdict.message, generation, now)
    return conds


def observe(
    ftj: Mapping[str, Any],
    jobs: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    problems: Sequence[Problem] = (),
    desired_spec_hash: str | None = None,
    report: Mapping[str, str] | None = None,
) -> Observation:
    """The FineTuneJob's new status and the reconciler's next steps.

    jobs/pods: every Job and pod labelled with this FineTuneJob's `kubetune.io/job-name`.
    problems: preflight errors (warnings are ignored here). desired_spec_hash: the hash of the
    children build_children would render now; a live training Job with another hash is recreated.
    report: the data of the trainer's report ConfigMap (only validated fields reach status.progress).
    """
    obj = FineTuneJob.model_validate(dict(ftj))
    spec = obj.spec
    previous = obj.status or FineTuneJobStatus()
    generation_raw = obj.metadata.get("generation")
    generation = generation_raw if isinstance(generation_raw, int) else None
    status = previous.model_copy(deep=True)
    status.observed_generation = generation

    if previous.phase in (Phase.SUCCEEDED, Phase.FAILED):
        return Observation(status, _after_the_end(jobs, previous))

    errors = [p for p in problems if p.severity == "error"]
    names = child_names(str(obj.metadata["name"]))
    report_problem = None
    if _training_jobs(jobs):
        reading = read_report(report, attempt=_current_attempt(jobs), previous=status.progress, now=now)
        status.progress, report_problem = reading.progress, reading.problem
    verdict = _decide(_Pass(spec, status, jobs, pods, now, desired_spec_hash, names), errors)
    status.conditions = _conditions(previous.conditions, verdict, generation, now, errors)
    report_events = _report_condition(status, report, report_problem, verdict, generation, now)
    status.phase = _phase_from_conditions(status.conditions)
    if status.phase in (Phase.SUCCEEDED, Phase.FAILED) and status.completion_time is None:
        status.completion_time = now
    if status.phase in (Phase.RUNNING, Phase.EVALUATING):
        status.progress = compute_progress(status.progress, status.start_time, now)
    actions = verdict.actions
    decisions = Decisions(
        attempt=_current_attempt(jobs) if actions.attempt is None else actions.attempt,
        counted_restarts=status.restarts,
        create_validation=actions.create_validation,
        create_training=actions.create_training,
        delete_jobs=actions.delete_jobs,
        events=tuple([*report_events, *_events(verdict, previous.phase, status.phase)]),
    )
    return Observation(status, decisions)


def _report_condition(
    status: FineTuneJobStatus,
    report: Mapping[str, str] | None,
    report_problem: str | None,
    verdict: _Verdict,
    generation: int | None,
    now: datetime,
) -> list[Event]:
    """TrainerReportValid (once rank 0 has reported anything), and a Warning Event when a refusal is new.

    The condition's message names the refused field and the rule; the value itself is never echoed.
    """
    problems = [f"progress report: {report_problem}"] if report_problem else []
    problems += [f"final result: {problem}" for problem in verdict.report_problems or ()]
    before = find_condition(status.conditions, ConditionType.TRAINER_REPORT_VALID)
    if not problems:
        reported = report is not None and REPORT_KEY in report
        if not reported and verdict.report_problems is None and before is None:
            return []
        status.conditions = set_condition(
            status.conditions,
            ConditionType.TRAINER_REPORT_VALID,
            "True",
            Reason.REPORT_VALID,
            "the trainer's reports passed validation",
            generation,
            now,
        )
        return []
    message = clip("; ".join(problems))
    status.conditions = set_condition(
        status.conditions,
        ConditionType.TRAINER_REPORT_VALID,
        "False",
        Reason.INVALID_REPORT,
        message,
        generation,
        now,
    )
    if before is not None and before.status == "False" and before.message == message:
        return []
    return [Event("Warning", str(Reason.INVALID_REPORT), message)]


def _after_the_end(jobs: Sequence[Mapping[str, Any]], previous: FineTuneJobStatus) -> Decisions:
    """Terminal: Jobs may be gone (TTL), which must not restart anything; a training Job still
    running (the deletion that ended the run did not land) is deleted again."""
    leftovers = tuple(
        j["metadata"]["name"]
        for j in _training_jobs(jobs)
        if not (job_condition(j, "Complete") or job_condition(j, "Failed"))
    )
    return Decisions(
        attempt=_current_attempt(jobs), counted_restarts=previous.restarts, delete_jobs=leftovers
    )


def _events(verdict: _Verdict, before: Phase | None, after: Phase | None) -> list[Event]:
    """The verdict's own Events (a gang restart), then one for a phase change."""
    events = list(verdict.extra_events)
    if after is not None and after != before:
        warning = after is Phase.FAILED
        events.append(
            Event(
                "Warning" if warning else "Normal",
                str(verdict.reason),
                clip(f"{after.value}: {verdict.message}"),
            )
        )
    return events


def _training_jobs(jobs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    train = [j for j in jobs if j["metadata"].get("labels", {}).get(LABEL_ROLE) == ROLE_TRAIN]
    return sorted(train, key=attempt_of)


def _current_attempt(jobs: Sequence[Mapping[str, Any]]) -> int:
    train = _training_jobs(jobs)
    return attempt_of(train[-1]) if train else 0


def _decide(p: _Pass, errors: Sequence[Problem]) -> _Verdict:
    names = p.names
    if errors:
        return _Verdict(Phase.FAILED, Reason.INVALID_SPEC, clip("; ".join(map(str, errors))))

    # 1. Data validation gates everything.
    validation = next((j for j in p.jobs if j["metadata"]["name"] == names.validation_job), None)
    if validation is None:
        return _Verdict(
            Phase.PENDING,
            Reason.PENDING,
            "creating the data-validation Job",
            actions=_Actions(create_validation=True),
            validated_reason=Reason.PENDING,
        )
    if job_condition(validation, "Failed"):
        vpods = [
            pod
            for pod in p.pods
            if owned_by(pod, names.validation_job)
            or pod["metadata"].get("labels", {}).get(LABEL_ROLE) == ROLE_VALIDATE
        ]
        kind, reason, message = classify(validation, vpods, VALIDATOR_CONTAINER)
        if kind not in ("fatal", "deadline"):
            # Disruptions are ignored by the validation Job's policy: what is left is retries spent.
            reason = Reason.BACKOFF_LIMIT_EXCEEDED
            message = f"data validation failed after retries: {message}"
        message = clip(message)
        return _Verdict(
            Phase.FAILED,
            reason,
            message,
            validated="False",
            validated_reason=Reason.INVALID_DATA if reason == Reason.INVALID_DATA else reason,
        )
    if not job_condition(validation, "Complete"):
        return _Verdict(
            Phase.VALIDATING, Reason.VALIDATING, "validating the dataset", validated_reason=Reason.VALIDATING
        )

    verdict = _decide_training(p)
    verdict.validated, verdict.validated_reason = "True", Reason.DATA_VALID
    return verdict


@dataclass(frozen=True)
class _Attempt:
    """The latest training Job, its number, its pods, and the older attempts' Jobs (to delete)."""

    job: Mapping[str, Any]
    number: int
    stale: tuple[str, ...]
    pods: list[Mapping[str, Any]]

    @property
    def name(self) -> str:
        return str(self.job["metadata"]["name"])


def _decide_training(p: _Pass) -> _Verdict:
    spec, status = p.spec, p.status
    train = _training_jobs(p.jobs)
    current = train[-1] if train else None
    attempt = attempt_of(current) if current else 0
    stale = tuple(j["metadata"]["name"] for j in train[:-1])
    if current is not None:
        recorded = int(current["metadata"].get("annotations", {}).get(ANNOTATION_RESTARTS, "0"))
        status.restarts = max(status.restarts, recorded)
    run = spec.run_policy
    finished = current is not None and (
        job_condition(current, "Complete") or job_condition(current, "Failed")
    )

    if run.suspend and not finished:
        queued = bool(spec.resources.queue_name)
        delete = stale + ((current["metadata"]["name"],) if queued and current is not None else ())
        return _Verdict(
            Phase.SUSPENDED,
            Reason.SUSPENDED,
            "runPolicy.suspend is set; checkpoints are kept",
            actions=_Actions(delete_jobs=delete, attempt=attempt),
        )
    if current is None:
        return _Verdict(
            Phase.PENDING,
            Reason.PENDING,
            "creating the training Job",
            actions=_Actions(create_training=True, attempt=attempt),
        )
    started = (current.get("status") or {}).get("startTime")
    if status.start_time is None and started:
        # The Job's startTime, not its creation: time queued in Kueue is not run time.
        status.start_time = datetime.fromisoformat(started.replace("Z", "+00:00"))

    deadline = run.active_deadline_seconds
    if (
        deadline
        and status.start_time
        and not finished
        and p.now - status.start_time > timedelta(seconds=deadline)
    ):
        return _Verdict(
            Phase.FAILED,
            Reason.DEADLINE_EXCEEDED,
            f"the run exceeded runPolicy.activeDeadlineSeconds={deadline} across restarts",
            actions=_Actions(delete_jobs=(*stale, current["metadata"]["name"]), attempt=attempt),
        )

    job_pods = [pod for pod in p.pods if owned_by(pod, current["metadata"]["name"])]
    latest = _Attempt(current, attempt, stale, job_pods)
    if job_condition(current, "Complete"):
        return _succeeded(p, latest)
    if job_condition(current, "Failed"):
        return _failed(p, latest)
    return _in_flight(p, latest)


def _in_flight(p: _Pass, current: _Attempt) -> _Verdict:
    """A training Job neither finished nor failed: replaced on a spec change, else where it stands."""
    job_hash = current.job["metadata"].get("annotations", {}).get(ANNOTATION_SPEC_HASH)
    if p.desired_hash is not None and job_hash != p.desired_hash:
        message = (
            f"the pod template changed (spec hash {job_hash} -> {p.desired_hash}); "
            "restarting from the last checkpoint"
        )
        return _gang_restart(current.number, (*current.stale, current.name), message, "Normal")
    base = _Actions(attempt=current.number, delete_jobs=current.stale)
    unschedulable = unschedulable_reason(current.pods)
    if unschedulable:
        return _Verdict(Phase.PENDING, Reason.UNSCHEDULABLE, clip(unschedulable), actions=base)
    problem = container_problem(current.pods)
    if problem is not None:
        return _Verdict(Phase.PENDING, problem[0], problem[1], actions=base)
    if (current.job.get("spec") or {}).get("suspend"):
        queued = bool(p.spec.resources.queue_name)
        return _Verdict(
            Phase.PENDING,
            Reason.PENDING,
            "waiting for Kueue admission" if queued else "training Job is suspended",
            actions=base,
        )
    running = [pod for pod in current.pods if (pod.get("status") or {}).get("phase") == "Running"]
    if not running:
        return _Verdict(Phase.PENDING, Reason.PENDING, "training pods are starting", actions=base)
    progress = p.status.progress
    if progress and progress.total_steps and progress.step >= progress.total_steps:
        return _Verdict(
            Phase.EVALUATING, Reason.EVALUATING, "training done; evaluating on the test split", actions=base
        )
    return _Verdict(
        Phase.RUNNING,
        Reason.TRAINING,
        f"{len(running)}/{p.spec.resources.nodes} training pods running (attempt {current.number})",
        actions=base,
    )


def _succeeded(p: _Pass, current: _Attempt) -> _Verdict:
    spec, status, job = p.spec, p.status, current.job
    rank0 = next((pod for pod in current.pods if completion_index(pod) == "0"), None)
    term = terminated(rank0, TRAINER_CONTAINER) if rank0 else None
    result = parse_trainer_result(str(term.get("message") or "") if term else None)
    message = "training and evaluation completed"
    refused: list[str] | None = None
    if result is not None:
        total = status.progress.total_steps if status.progress is not None else None
        result, refused = vet_result(result, spec, total)
        status.metrics = result.metrics
        status.artifacts = trusted_artifacts(spec, result.artifacts)
        status.frozen_set = trusted_frozen_set(spec, result.frozen_set)
        status.lineage = result.lineage or Lineage()
        if result.test_prompts:
            status.test_prompts = list(result.test_prompts[:8])
        if result.final_step is not None and status.progress is not None:
            status.progress = status.progress.model_copy(update={"step": result.final_step})
    else:
        # The output layout is a contract, so the artifacts' locations are known without the result.
        message += " (rank 0's result was not readable: metrics unknown, artifacts at the output layout)"
        status.artifacts = status.artifacts or output_artifacts(spec)
        status.frozen_set = status.frozen_set or trusted_frozen_set(spec, None)
        status.lineage = status.lineage or Lineage()
    if status.lineage.config_hash is None:
        status.lineage.config_hash = job["metadata"].get("annotations", {}).get(ANNOTATION_SPEC_HASH)
    if status.progress is not None:
        status.progress = status.progress.model_copy(update={"percent": 100, "eta": "0s"})
    return _Verdict(
        Phase.SUCCEEDED,
        Reason.COMPLETED,
        message,
        actions=_Actions(attempt=current.number, delete_jobs=current.stale),
        report_problems=refused,
    )


def _failed(p: _Pass, current: _Attempt) -> _Verdict:
    job, attempt, stale = current.job, current.number, current.stale
    kind, reason, message = classify(job, current.pods, TRAINER_CONTAINER)
    message = clip(message)
    base = _Actions(attempt=attempt, delete_jobs=stale)
    if kind in ("fatal", "deadline"):
        return _Verdict(Phase.FAILED, reason, message, actions=base)
    limit = p.spec.run_policy.backoff_limit
    # Counted from the failed Job's own record, so a pass repeated after a crash counts it once.
    recorded = int(job["metadata"].get("annotations", {}).get(ANNOTATION_RESTARTS, "0"))
    if kind == "retryable":
        if recorded >= limit:
            return _Verdict(
                Phase.FAILED,
                Reason.BACKOFF_LIMIT_EXCEEDED,
                clip(f"gang failed {recorded + 1} times (backoffLimit {limit}); last: {message}"),
                actions=base,
            )
        p.status.restarts = max(p.status.restarts, recorded + 1)
        why = f"attempt {attempt} failed ({message}); gang restart {recorded + 1} of {limit}"
    else:
        why = f"attempt {attempt} was disrupted ({message}); gang restart not counted"
    why = clip(f"{why}, resuming from the last checkpoint as {p.names.training_job(attempt + 1)}")
    return _gang_restart(attempt, (*stale, job["metadata"]["name"]), why, "Warning")
