"""One FineTuneSchedule pass, planned: the observed context in, runs to create and delete and the status
out. Pure: the clock is `ctx.now`.

The rules are Kubernetes CronJob's (pkg/controller/cronjob), so users' expectations carry over:
- the cron times not handled yet are those after `status.lastScheduleTime` (else the creation time),
  and after `now - startingDeadlineSeconds` when a deadline is set; of those only the latest runs
  (at most one catch-up run, however long the operator was down or the schedule suspended);
- more than 100 of them, or any beyond the deadline, is reported (MissedSchedule) rather than run;
- Forbid leaves a due time unhandled while a run is active, so it starts when that run ends unless the
  deadline passed by then; Replace deletes the active run and starts the new one;
- suspend starts nothing and leaves the due time unhandled (catch-up on resume, bounded by the deadline).
Beyond CronJob: a due run is skipped when its dataset and job template are those of the last successful
run; `spec.trigger` differing from `status.lastTrigger` runs once now. The dataset's sha256 comes from
the operator itself for configMap:// data, else from a probe: the run's own data-validation Job, run
before the run, which reports the digest (docs/finetuneschedule.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubetune.api.common import API_VERSION, Condition
from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.finetunejob import KIND as FINETUNEJOB
from kubetune.api.finetunejob import (
    Evaluation,
    FineTuneJobSpec,
    FineTuneJobStatus,
    FrozenSet,
    InitFrom,
    InitFromJobRef,
    Phase,
)
from kubetune.api.finetuneschedule import (
    ConcurrencyPolicy,
    FineTuneScheduleSpec,
    FineTuneScheduleStatus,
    PinnedFrozenSet,
    RunPhase,
    RunTrigger,
    ScheduledRun,
    SchedulePhase,
)
from kubetune.api.trainingconfig import frozen_set_uri
from kubetune.builders.common import LABEL_JOB
from kubetune.builders.finetunejob import DEFAULT_TRAINER_IMAGE, child_names
from kubetune.builders.finetuneschedule import (
    manual_run_name,
    probe_children,
    probe_name,
    run_manifest,
    run_name,
    template_hash,
)
from kubetune.builders.training_pod import VALIDATOR_CONTAINER
from kubetune.planning.admission import accepted
from kubetune.planning.champion import choose_champion, gate_verdict, serving_revisions
from kubetune.planning.cron import Cron, CronError, parse_cron
from kubetune.planning.job_pods import job_condition, owned_by, parse_trainer_result, terminated
from kubetune.planning.plan import Delete, Event
from kubetune.status.conditions import find_condition, set_condition
from kubetune.status.finetuneschedule import observe_runs, prune
from kubetune.status.summary import finetuneschedule_summary, summary_conditions

Manifest = dict[str, Any]
TOO_MANY_MISSED = 100
"""CronJob's bound: past this many missed start times it stops counting and says so."""


@dataclass(frozen=True)
class ScheduleContext:
    """What one pass observed (the spec parsed once; None with `problem` when invalid)."""

    obj: Manifest
    spec: FineTuneScheduleSpec | None
    problem: str
    now: datetime
    jobs: list[Manifest]
    """The FineTuneJobs this schedule controls (its runs)."""
    dataset_digest: str | None = None
    """sha256 of the template's dataset as the operator reads it (configMap:// only), else None."""
    probe_jobs: list[Manifest] = field(default_factory=list)
    """The schedule's dataset-probe Jobs (validation Jobs of runs not created yet)."""
    probe_pods: list[Manifest] = field(default_factory=list)
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    image_pull_secrets: tuple[str, ...] = ()
    followers: list[Manifest] = field(default_factory=list)
    """The namespace's ModelDeployments (those following this schedule give the champion)."""

    @property
    def generation(self) -> int | None:
        value = self.obj["metadata"].get("generation")
        return value if isinstance(value, int) else None

    @property
    def created(self) -> datetime:
        text = str(self.obj["metadata"].get("creationTimestamp") or self.now.isoformat())
        return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class SchedulePlan:
    """Probe children (applied, the Job created) and deletes (replaced and pruned runs, uid-guarded;
    finished probes), then the runs to create; then the status."""

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    create: list[Manifest] = field(default_factory=list)
    probe: list[Manifest] = field(default_factory=list)
    delete: list[Delete] = field(default_factory=list)
    requeue_after_s: float | None = None


@dataclass
class _Pass:
    ctx: ScheduleContext
    spec: FineTuneScheduleSpec
    status: FineTuneScheduleStatus
    history: list[ScheduledRun]
    events: list[Event] = field(default_factory=list)
    create: list[Manifest] = field(default_factory=list)
    delete: list[Delete] = field(default_factory=list)
    probe: list[Manifest] = field(default_factory=list)
    probing: str | None = None
    """The probe Job this pass waits for (kept; every other probe is cleaned up)."""
    waiting: list[str] = field(default_factory=list)
    missed: tuple[Reason, str] | None = None
    on_time: bool = False
    """A due start time was handled this pass (run or skipped): a past MissedSchedule clears."""

    @property
    def active(self) -> list[ScheduledRun]:
        return [r for r in self.history if r.phase is RunPhase.ACTIVE]

    def uid_of(self, name: str) -> str | None:
        for job in self.ctx.jobs:
            if job["metadata"]["name"] == name:
                return str(job["metadata"]["uid"])
        return None

    def start(self, name: str, scheduled: datetime, trigger: RunTrigger, digest: str | None) -> None:
        """Create run `name` (replacing active runs under Replace; the caller has checked Forbid)."""
        if self.spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
            for run in self.active:
                self._replace(run, name)
        init_from = run_init_from(self.spec, self.status.latest_good_run)
        self.create.append(
            run_manifest(
                self.ctx.obj,
                self.spec,
                name=name,
                scheduled_time=scheduled,
                trigger=trigger,
                dataset_digest=digest,
                evaluation=self._run_evaluation(name),
                init_from=init_from,
            )
        )
        self.history.append(
            ScheduledRun(
                name=name,
                scheduled_time=scheduled,
                trigger=trigger,
                phase=RunPhase.ACTIVE,
                dataset_digest=digest,
                template_hash=template_hash(self.spec),
            )
        )
        start = f", starting from run {init_from.finetune_job_ref.name}" if init_from else ""
        self.events.append(
            Event("Normal", "RunCreated", f"created FineTuneJob {name} ({trigger.value.lower()}{start})")
        )

    def _run_evaluation(self, name: str) -> Evaluation | None:
        """The run's frozen set (or the order to export one) and its champion, when the schedule gates."""
        gate = self.spec.evaluation
        if gate is None:
            return None
        evaluation = self.spec.job_template.spec.evaluation
        pinned = self.status.frozen_set
        if gate.frozen_set is not None:
            evaluation = evaluation.model_copy(update={"frozen_set": gate.frozen_set})
        elif pinned is not None and pinned.run is not None:
            evaluation = evaluation.model_copy(update={"frozen_set": FrozenSet(uri=pinned.uri)})
        else:
            evaluation = evaluation.model_copy(update={"export_test_split": True})
        serving = serving_revisions(self.ctx.obj["metadata"]["name"], self.ctx.followers)
        choice = choose_champion(self.history, self.ctx.jobs, serving, self.status.latest_good_run)
        self.events.append(Event("Normal", "ChampionChosen", f"run {name}: {choice.why}"))
        return evaluation.model_copy(update={"champion": choice.champion})

    def _replace(self, run: ScheduledRun, by: str) -> None:
        uid = self.uid_of(run.name)
        if uid is not None:
            self.delete.append(Delete(API_VERSION, FINETUNEJOB, run.name, uid=uid))
        index = self.history.index(run)
        self.history[index] = run.model_copy(
            update={
                "phase": RunPhase.FAILED,
                "reason": Reason.REPLACED.value,
                "message": f"replaced by run {by} (concurrencyPolicy Replace)",
                "completion_time": self.ctx.now,
            }
        )
        self.events.append(Event("Normal", "RunReplaced", f"deleted active run {run.name}: replaced by {by}"))

    def blocked(self) -> str | None:
        """Why a run cannot start now under Forbid (None: it can)."""
        active = self.active
        if active and self.spec.concurrency_policy is ConcurrencyPolicy.FORBID:
            return f"run {active[-1].name} is active (concurrencyPolicy Forbid)"
        return None


def plan_schedule(ctx: ScheduleContext) -> SchedulePlan:
    status = FineTuneScheduleStatus.model_validate(ctx.obj.get("status") or {})
    first_pass = status.observed_generation is None
    was = find_condition(status.conditions, ConditionType.ACCEPTED)
    status.conditions = accepted(status.conditions, ctx.generation, ctx.now, problem=ctx.problem)
    status.observed_generation = ctx.generation
    if ctx.spec is None:
        return _invalid(status, ctx, Reason.INVALID_SPEC, ctx.problem, was)
    try:
        cron = parse_cron(ctx.spec.schedule, ctx.spec.time_zone)
    except CronError as exc:
        reason = Reason.INVALID_TIME_ZONE if exc.field == "spec.timeZone" else Reason.INVALID_SCHEDULE
        return _invalid(status, ctx, reason, str(exc), was)
    history, finished = observe_runs(status.runs, ctx.jobs, ctx.now)
    p = _Pass(ctx, ctx.spec, status, history)
    _record_finished(p, finished)
    _manual_trigger(p, first_pass=first_pass)
    _scheduled_run(p, cron)
    _clean_probes(p)
    protect = serving_revisions(ctx.obj["metadata"]["name"], ctx.followers)
    if p.status.latest_good_run is not None:
        protect.append(p.status.latest_good_run)
    kept = prune(
        p.history,
        successful=p.spec.successful_runs_history_limit,
        failed=p.spec.failed_runs_history_limit,
        protected={*protect, *init_sources(p.spec, p.status.latest_good_run, p.ctx.jobs, p.create)},
    )
    kept_names = {r.name for r in kept}
    for run in p.history:
        uid = p.uid_of(run.name)
        if run.name not in kept_names and uid is not None:
            p.delete.append(Delete(API_VERSION, FINETUNEJOB, run.name, uid=uid))
    p.history = kept
    return _finish(p, cron)


def run_init_from(spec: FineTuneScheduleSpec, latest_good_run: str | None) -> InitFrom | None:
    """A new run's spec.initFrom: the latest good run under spec.incremental (none before the first)."""
    incremental = spec.incremental
    if incremental is None or not incremental.enabled or latest_good_run is None:
        return None
    return InitFrom(
        finetune_job_ref=InitFromJobRef(name=latest_good_run),
        replay_fraction=incremental.replay_fraction,
        learning_rate_scale=incremental.learning_rate_scale,
    )


def init_sources(
    spec: FineTuneScheduleSpec,
    latest_good_run: str | None,
    jobs: Sequence[Manifest],
    created: Sequence[Manifest],
) -> set[str]:
    """Runs that history pruning keeps, whatever the limits: those a run may still start from.

    An unfinished run's initFrom must stay readable (the operator resolves it at every pass until the run
    ends), and under spec.incremental the latest good run is the next run's start. Keeping the job, rather
    than copying the adapter's location into each run, keeps the operator's checks (succeeded, same base,
    same LoRA shape) on a live object.
    """
    protected: set[str] = set()
    if spec.incremental is not None and spec.incremental.enabled and latest_good_run is not None:
        protected.add(latest_good_run)
    for job in [*jobs, *created]:
        phase = (job.get("status") or {}).get("phase")
        ref = ((job.get("spec") or {}).get("initFrom") or {}).get("finetuneJobRef") or {}
        if phase not in (Phase.SUCCEEDED.value, Phase.FAILED.value) and ref.get("name"):
            protected.add(str(ref["name"]))
    return protected


def _record_finished(p: _Pass, finished: list[ScheduledRun]) -> None:
    # Forbid and Replace keep runs from overlapping, so runs finish in the order they were scheduled.
    for run in sorted(finished, key=lambda r: r.scheduled_time):
        if run.phase is RunPhase.SUCCEEDED:
            p.events.append(Event("Normal", "RunSucceeded", f"run {run.name} succeeded"))
            run = _gated(p, run)
            p.status.last_successful_time = run.completion_time or p.ctx.now
            p.status.last_successful_dataset_digest = run.dataset_digest
            p.status.last_successful_template_hash = run.template_hash
            if run.is_good():
                p.status.latest_good_run = run.name
        elif run.phase is RunPhase.FAILED:
            p.events.append(
                Event("Warning", "RunFailed", f"run {run.name} failed: {run.reason} {run.message}")
            )


def _gated(p: _Pass, run: ScheduledRun) -> ScheduledRun:
    """The succeeded run with its champion-challenger verdict (recorded in the history, with an Event),
    and the frozen set pinned when this run exported the first one (fromFirstRun)."""
    gate = p.spec.evaluation
    job = next((j for j in p.ctx.jobs if j["metadata"]["name"] == run.name), None)
    if gate is None or job is None:
        return run
    spec = FineTuneJobSpec.model_validate(job["spec"])
    if frozen_set_uri(spec) is None:
        return run  # created before the schedule had a gate: it was never asked to be scored
    scores = FineTuneJobStatus.model_validate(job.get("status") or {}).frozen_set
    champion = spec.evaluation.champion
    verdict = gate_verdict(gate.no_worse_than_champion, scores, champion.name if champion else None)
    run = run.model_copy(update={"gate": verdict})
    p.history = [run if r.name == run.name else r for r in p.history]
    if verdict.passed:
        p.events.append(Event("Normal", "GatePassed", f"run {run.name} passed the gate: {verdict.message}"))
    else:
        message = f"run {run.name} failed the gate ({verdict.reason}): {verdict.message}"
        p.events.append(Event("Warning", "GateFailed", message))
    pinned = p.status.frozen_set
    exported = spec.evaluation.export_test_split and scores is not None and scores.metrics is not None
    if gate.from_first_run and (pinned is None or pinned.run is None) and exported and scores and scores.uri:
        p.status.frozen_set = PinnedFrozenSet(uri=scores.uri, run=run.name)
        p.events.append(Event("Normal", "FrozenSetPinned", f"frozen set: {scores.uri} (run {run.name})"))
    return run


def _manual_trigger(p: _Pass, *, first_pass: bool) -> None:
    trigger = p.spec.trigger
    if trigger is None or trigger == p.status.last_trigger:
        return
    if first_pass:
        # A schedule created (or restored from Git) with a trigger value does not run on creation:
        # only a change of the value does, like a bumped restartedAt annotation.
        p.status.last_trigger = trigger
        return
    name = manual_run_name(p.ctx.obj["metadata"]["name"], trigger)
    if any(r.name == name for r in p.history):
        p.status.last_trigger = trigger  # this value already ran (a re-used trigger value)
        return
    blocked = p.blocked()
    if blocked is not None:
        p.waiting.append(f"trigger {trigger} waits: {blocked}")
        return
    p.start(name, p.ctx.now, RunTrigger.MANUAL, p.ctx.dataset_digest)
    p.status.last_trigger = trigger


def _scheduled_run(p: _Pass, cron: Cron) -> None:
    now = p.ctx.now
    earliest = p.status.last_schedule_time or p.ctx.created
    deadline = p.spec.starting_deadline_seconds
    if deadline is not None and now - timedelta(seconds=deadline) > earliest:
        edge = now - timedelta(seconds=deadline)
        dropped = cron.count_between(earliest, edge, TOO_MANY_MISSED)
        if dropped:
            p.missed = (
                Reason.STARTING_DEADLINE_EXCEEDED,
                f"{_count(dropped)} start time(s) after {_iso(earliest)} passed more than "
                f"startingDeadlineSeconds ({deadline}s) ago and were not run",
            )
        earliest = edge
    due = cron.latest_at_or_before(now)
    if due is None or due <= earliest:
        return
    missed = cron.count_between(earliest, now, TOO_MANY_MISSED)
    if missed > TOO_MANY_MISSED:
        p.missed = (
            Reason.TOO_MANY_MISSED_START_TIMES,
            f"more than {TOO_MANY_MISSED} start times passed since {_iso(earliest)}; only the latest "
            f"({_iso(due)}) runs. Set startingDeadlineSeconds to bound the catch-up",
        )
    if p.spec.suspend:
        p.waiting.append(f"run due at {_iso(due)} waits: spec.suspend is true")
        return
    name = run_name(p.ctx.obj["metadata"]["name"], due)
    if any(r.name == name for r in p.history):
        p.status.last_schedule_time = due
        return
    if p.create:
        # A manual run started in this very pass covers the due time: one fresh run, not two (under
        # Replace the second would replace the first before it ever ran).
        p.on_time = True
        p.status.last_schedule_time = due
        return
    digest = p.ctx.dataset_digest
    if digest is None and _probe_worthwhile(p):
        blocked = p.blocked()
        if blocked is not None:
            p.waiting.append(f"run due at {_iso(due)} waits: {blocked}")
            return
        state = _probe(p, name)
        if state is _PROBING:
            p.waiting.append(f"run due at {_iso(due)} waits: job {p.probing} is hashing the dataset")
            return
        digest = state
    if _unchanged(p, digest):
        _skip(p, name, due, digest)
        return
    blocked = p.blocked()
    if blocked is not None:
        p.waiting.append(f"run due at {_iso(due)} waits: {blocked}")
        return
    p.on_time = True
    p.start(name, due, RunTrigger.SCHEDULE, digest)
    p.status.last_schedule_time = due


_PROBING = "probing"


def _probe_worthwhile(p: _Pass) -> bool:
    """A probe can only lead to a skip when skipping is on and the template is the last success's."""
    return (
        p.spec.skip_unchanged_data
        and p.status.last_successful_dataset_digest is not None
        and p.status.last_successful_template_hash == template_hash(p.spec)
    )


def _probe(p: _Pass, run: str) -> str | None:
    """The dataset digest the run's probe reported; _PROBING while it runs (created if absent); None
    when it failed or reported none (the run then validates the data itself and says what is wrong)."""
    names = child_names(probe_name(run))
    job = next((j for j in p.ctx.probe_jobs if j["metadata"]["name"] == names.validation_job), None)
    if job is None:
        p.probe = probe_children(
            p.ctx.obj,
            p.spec,
            run=run,
            trainer_image=p.ctx.trainer_image,
            image_pull_secrets=p.ctx.image_pull_secrets,
        )
        p.probing = names.validation_job
        return _PROBING
    if job_condition(job, "Failed"):
        return None
    if not job_condition(job, "Complete"):
        p.probing = names.validation_job
        return _PROBING
    for pod in p.ctx.probe_pods:
        if owned_by(pod, names.validation_job):
            term = terminated(pod, VALIDATOR_CONTAINER)
            result = parse_trainer_result(str(term.get("message") or "") if term else None)
            if result is not None and result.lineage is not None and result.lineage.dataset_digest:
                return result.lineage.dataset_digest
    return None


def _clean_probes(p: _Pass) -> None:
    """Delete every probe but the one this pass waits for: its answer was used (or is moot)."""
    for job in p.ctx.probe_jobs:
        if job["metadata"]["name"] == p.probing:
            continue
        names = child_names(str((job["metadata"].get("labels") or {}).get(LABEL_JOB, "")))
        p.delete.append(Delete("batch/v1", "Job", job["metadata"]["name"], uid=job["metadata"]["uid"]))
        p.delete.append(Delete("v1", "ConfigMap", names.config_map))
        p.delete.append(Delete("v1", "ServiceAccount", names.service_account))


def _skip(p: _Pass, name: str, due: datetime, digest: str | None) -> None:
    p.on_time = True
    p.history.append(
        ScheduledRun(
            name=name,
            scheduled_time=due,
            trigger=RunTrigger.SCHEDULE,
            phase=RunPhase.SKIPPED,
            reason=Reason.DATASET_UNCHANGED.value,
            message=f"dataset {digest} and job template unchanged since the last successful run: "
            "not trained again",
            completion_time=p.ctx.now,
            dataset_digest=digest,
            template_hash=template_hash(p.spec),
        )
    )
    p.events.append(Event("Normal", "RunSkipped", f"run {name} skipped: dataset unchanged"))
    p.status.last_schedule_time = due


def _unchanged(p: _Pass, digest: str | None) -> bool:
    return (
        p.spec.skip_unchanged_data
        and digest is not None
        and digest == p.status.last_successful_dataset_digest
        and p.status.last_successful_template_hash == template_hash(p.spec)
    )


def _finish(p: _Pass, cron: Cron) -> SchedulePlan:
    status, ctx = p.status, p.ctx
    gate = p.spec.evaluation
    if gate is not None and gate.frozen_set is not None:
        status.frozen_set = PinnedFrozenSet(uri=gate.frozen_set.uri)
    elif gate is None:
        status.frozen_set = None
    status.runs = p.history
    status.active = [r.name for r in p.active]
    status.next_schedule_time = None if p.spec.suspend else cron.next_after(ctx.now)
    conditions = status.conditions
    if p.spec.suspend:
        conditions = _set(
            conditions, ConditionType.SUSPENDED, "True", Reason.SUSPENDED, "spec.suspend is true", p
        )
    else:
        next_text = f"next run at {_iso(status.next_schedule_time)}" if status.next_schedule_time else ""
        conditions = _set(conditions, ConditionType.SUSPENDED, "False", Reason.SCHEDULED, next_text, p)
    waiting = "; ".join(p.waiting)
    if status.active:
        message = f"run {status.active[-1]} is active" + (f"; {waiting}" if waiting else "")
        conditions = _set(conditions, ConditionType.RUNNING, "True", Reason.RUN_ACTIVE, message, p)
    else:
        reason = Reason.RUN_WAITING if waiting else Reason.NO_ACTIVE_RUN
        conditions = _set(
            conditions, ConditionType.RUNNING, "False", reason, waiting or "no run is active", p
        )
    conditions = _last_run(conditions, p)
    conditions = _missed(conditions, p)
    status.conditions = summary_conditions(
        conditions, finetuneschedule_summary(conditions), ctx.generation, ctx.now
    )
    status.phase = (
        SchedulePhase.SUSPENDED
        if p.spec.suspend
        else SchedulePhase.ACTIVE
        if status.active
        else SchedulePhase.IDLE
    )
    requeue = None
    if status.next_schedule_time is not None:
        requeue = max(1.0, (status.next_schedule_time - ctx.now).total_seconds() + 1.0)
    return SchedulePlan(
        status=status.to_wire(),
        events=p.events,
        create=p.create,
        probe=p.probe,
        delete=p.delete,
        requeue_after_s=requeue,
    )


def _missed(conditions: list[Condition], p: _Pass) -> list[Condition]:
    """True while start times are being missed; it clears when a start time is handled on time again."""
    previous = find_condition(conditions, ConditionType.MISSED_SCHEDULE)
    if p.missed is not None:
        reason, message = p.missed
        if previous is None or previous.status != "True" or previous.reason != reason:
            p.events.append(Event("Warning", reason.value, message))
        return _set(conditions, ConditionType.MISSED_SCHEDULE, "True", reason, message, p)
    if previous is not None and previous.status == "True" and not p.on_time:
        return _set(conditions, ConditionType.MISSED_SCHEDULE, "True", previous.reason, previous.message, p)
    message = "no start time was missed"
    return _set(conditions, ConditionType.MISSED_SCHEDULE, "False", Reason.ON_SCHEDULE, message, p)


def _last_run(conditions: list[Condition], p: _Pass) -> list[Condition]:
    ended = [r for r in p.history if r.phase is not RunPhase.ACTIVE]
    if not ended:
        return _set(
            conditions, ConditionType.LAST_RUN_SUCCEEDED, "Unknown", Reason.NO_RUNS_YET, "no run has ended", p
        )
    last = max(ended, key=lambda r: r.scheduled_time)
    if last.phase is RunPhase.FAILED:
        message = f"run {last.name} failed: {last.message}".strip()
        return _set(conditions, ConditionType.LAST_RUN_SUCCEEDED, "False", last.reason, message, p)
    if last.gate is not None and not last.gate.passed:
        message = f"run {last.name} failed the gate: {last.gate.message}"
        return _set(conditions, ConditionType.LAST_RUN_SUCCEEDED, "False", last.gate.reason, message, p)
    if last.phase is RunPhase.SKIPPED:
        return _set(
            conditions, ConditionType.LAST_RUN_SUCCEEDED, "True", Reason.DATASET_UNCHANGED, last.message, p
        )
    return _set(
        conditions,
        ConditionType.LAST_RUN_SUCCEEDED,
        "True",
        Reason.COMPLETED,
        f"run {last.name} succeeded",
        p,
    )


def _set(
    conditions: list[Condition], type: ConditionType, status: Any, reason: str, message: str, p: _Pass
) -> list[Condition]:
    return set_condition(conditions, type, status, reason, message, p.ctx.generation, p.ctx.now)


def _invalid(
    status: FineTuneScheduleStatus, ctx: ScheduleContext, reason: Reason, message: str, was: Condition | None
) -> SchedulePlan:
    """Accepted=False naming the field; nothing is created or deleted (the runs so far stay)."""
    repeated = was is not None and was.status == "False" and was.message == message
    events = [] if repeated else [Event("Warning", reason.value, message)]
    status.conditions = set_condition(
        status.conditions, ConditionType.ACCEPTED, "False", reason, message, ctx.generation, ctx.now
    )
    status.conditions = summary_conditions(
        status.conditions, finetuneschedule_summary(status.conditions), ctx.generation, ctx.now
    )
    status.phase = SchedulePhase.INVALID
    status.next_schedule_time = None
    return SchedulePlan(status=status.to_wire(), events=events)


def _iso(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else ""


def _count(n: int) -> str:
    return f"more than {TOO_MANY_MISSED}" if n > TOO_MANY_MISSED else str(n)
