"""One FineTuneJob pass, planned: the observed context in, a Plan out. Pure.

Order of the plan (the applier keeps it): the stage's shared children (ConfigMap, Service, RBAC) and the
validation Job → deletes of replaced or finished training Jobs → the live training Job's mutable
runPolicy fields → the training Job of the next attempt. Names are deterministic and applies
server-side, so re-running a plan, or planning again after a restart, converges to the same children.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubetune.api.common import Condition
from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus, Phase
from kubetune.builders.common import ANNOTATION_SPEC_HASH, LABEL_ROLE
from kubetune.builders.finetunejob import (
    LABEL_ATTEMPT,
    ROLE_TRAIN,
    FineTuneJobChildren,
    build_children,
    training_job_patch,
)
from kubetune.builders.storage import InitSource
from kubetune.planning.admission import accepted
from kubetune.planning.finetunejob import Decisions, observe
from kubetune.planning.init_from import FIELD as INIT_FROM_FIELD
from kubetune.planning.init_from import WAIT_REQUEUE_SECONDS, InitWait, resolve_init_from
from kubetune.planning.plan import Delete, Event, Patch, Plan
from kubetune.preflight import Problem, preflight
from kubetune.status.conditions import find_condition, set_condition
from kubetune.status.summary import finetunejob_summary, summary_conditions

FULL_APPLY_SECONDS = 600.0
"""At most this often a resync re-applies shared children that a Job of the current spec vouches for."""
REPORT_POLL_SECONDS = 10.0
"""While training runs, look at the trainer's report this often (no watch announces a ConfigMap write)."""

Manifest = dict[str, Any]


@dataclass(frozen=True)
class FineTuneJobContext:
    """What one pass observed (the spec parsed once; None with `problem` when invalid)."""

    obj: Manifest
    spec: FineTuneJobSpec | None
    problem: str
    now: datetime
    jobs: list[Manifest]
    pods: list[Manifest]
    deepspeed_from_ref: str | None = None
    node_gpu_capacity: dict[str, int] | None = None
    trainer_image: str = ""
    image_pull_secrets: tuple[str, ...] = ()
    resync: bool = False
    since_full_apply_s: float | None = None
    """Seconds since this process last applied the shared children (None: never)."""
    init_from_job: Manifest | None = None
    """The FineTuneJob spec.initFrom names, as read (None: not found, or no initFrom)."""
    report: dict[str, str] | None = None
    """The data of the trainer's report ConfigMap (None: absent, or not controlled by this object)."""

    @property
    def generation(self) -> int | None:
        value = self.obj["metadata"].get("generation")
        return value if isinstance(value, int) else None


def plan_finetunejob(ctx: FineTuneJobContext) -> Plan:
    status = FineTuneJobStatus.model_validate(ctx.obj.get("status") or {})
    status.conditions = accepted(status.conditions, ctx.generation, ctx.now, problem=ctx.problem)
    if ctx.spec is None:
        return _invalid(status, ctx.generation, ctx.now, ctx.problem)
    init: InitSource | Problem | None = None
    if status.phase not in (Phase.SUCCEEDED, Phase.FAILED):
        resolved = resolve_init_from(ctx.spec, ctx.obj["metadata"]["name"], ctx.init_from_job)
        if isinstance(resolved, InitWait):
            if not ctx.jobs:
                return _waiting(status, ctx, resolved)
            # The run already started from it: the earlier job was deleted (or changed) under it.
            resolved = Problem(
                "error", INIT_FROM_FIELD, f"no longer usable during the run: {resolved.message}"
            )
        init = resolved
    problems, desired = _desired(ctx, ctx.spec, init if isinstance(init, InitSource) else None)
    if isinstance(init, Problem):
        problems.append(init)
    observation = observe(
        dict(ctx.obj, status=status.to_wire()),
        ctx.jobs,
        ctx.pods,
        ctx.now,
        problems=problems,
        desired_spec_hash=desired.spec_hash if desired else None,
        report=ctx.report,
    )
    decisions = observation.decisions
    new_status = observation.status
    new_status.conditions = accepted(new_status.conditions, ctx.generation, ctx.now, problem="")
    new_status.conditions = _summarized(new_status.conditions, ctx.generation, ctx.now)
    plan = Plan(status=new_status.to_wire(), events=list(decisions.events))
    if new_status.phase in (Phase.RUNNING, Phase.EVALUATING):
        plan.requeue_after_s = REPORT_POLL_SECONDS
    finished = new_status.phase in (Phase.SUCCEEDED, Phase.FAILED)
    if desired is not None and not finished:
        _stage_children(plan, ctx, desired, decisions)
    plan.delete = [Delete("batch/v1", "Job", name) for name in decisions.delete_jobs]
    live = _live_training_job(ctx.jobs, decisions.delete_jobs)
    if live is not None and not decisions.create_training and not finished:
        patch = _run_policy_patch(live, ctx.spec)
        if patch is not None:
            plan.patch.append(Patch("batch/v1", "Job", live["metadata"]["name"], patch))
    if decisions.create_training and desired is not None:
        attempt = build_children(
            ctx.obj,
            restart=decisions.attempt,
            counted_restarts=decisions.counted_restarts,
            deepspeed_from_ref=ctx.deepspeed_from_ref,
            trainer_image=ctx.trainer_image,
            image_pull_secrets=ctx.image_pull_secrets,
            spec=ctx.spec,
            init=init if isinstance(init, InitSource) else None,
        )
        plan.replace.append(attempt.training_job)
    return plan


def _desired(
    ctx: FineTuneJobContext, spec: FineTuneJobSpec, init: InitSource | None
) -> tuple[list[Problem], FineTuneJobChildren | None]:
    """Preflight problems, and the children of attempt 0 (None when the DeepSpeed config is unusable)."""
    problems = preflight(spec, node_gpu_capacity=ctx.node_gpu_capacity, model_context_length=None)
    try:
        desired = build_children(
            ctx.obj,
            restart=0,
            deepspeed_from_ref=ctx.deepspeed_from_ref,
            trainer_image=ctx.trainer_image,
            image_pull_secrets=ctx.image_pull_secrets,
            spec=spec,
            init=init,
        )
    except ValueError as exc:
        problems.append(Problem("error", "spec.deepspeed.configRef", str(exc)))
        return problems, None
    return problems, desired


def _stage_children(
    plan: Plan, ctx: FineTuneJobContext, desired: FineTuneJobChildren, decisions: Decisions
) -> None:
    training = decisions.create_training or any(_role(j) == ROLE_TRAIN for j in ctx.jobs)
    if shared_children_due(ctx, desired.spec_hash, training=training):
        plan.apply.extend(desired.shared() if training else desired.for_validation())
    if decisions.create_validation:
        plan.create.append(desired.validation_job)


def shared_children_due(ctx: FineTuneJobContext, spec_hash: str, *, training: bool) -> bool:
    """Apply the stage's ConfigMap/Service/RBAC when its Job of this spec is missing, or on a resync.

    A Job of the stage carrying the current spec hash proves an earlier pass applied them (they are
    applied before it); re-applying on every event would cost up to five writes per pass for nothing.
    Drift (someone deleted the ConfigMap) is repaired by the resync pass at most every FULL_APPLY_SECONDS.
    """
    stage_jobs = [j for j in ctx.jobs if not training or _role(j) == ROLE_TRAIN]
    if not any(
        j["metadata"].get("annotations", {}).get(ANNOTATION_SPEC_HASH) == spec_hash for j in stage_jobs
    ):
        return True
    return ctx.resync and (ctx.since_full_apply_s is None or ctx.since_full_apply_s > FULL_APPLY_SECONDS)


def _live_training_job(jobs: list[Manifest], deleting: tuple[str, ...]) -> Manifest | None:
    """The latest training Job, if it is still running and stays (not finished, not being replaced)."""
    train = [j for j in jobs if _role(j) == ROLE_TRAIN]
    if not train:
        return None
    latest = max(train, key=lambda j: int(j["metadata"].get("labels", {}).get(LABEL_ATTEMPT, "0")))
    finished = {
        c.get("type")
        for c in (latest.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    } & {"Complete", "Failed"}
    if finished or latest["metadata"].get("deletionTimestamp") or latest["metadata"]["name"] in deleting:
        return None
    return latest


def _run_policy_patch(job: Manifest, spec: FineTuneJobSpec) -> dict[str, Any] | None:
    """Merge patch bringing a live training Job's mutable fields in line with runPolicy, or None."""
    wanted = training_job_patch(spec)["spec"]
    current = job.get("spec") or {}
    changes: dict[str, Any] = {}
    for key in ("activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        if current.get(key) != wanted.get(key):
            changes[key] = wanted.get(key)  # None removes a limit runPolicy no longer sets
    # With a Kueue queue `suspend` is Kueue's (training_job_patch leaves it out).
    if "suspend" in wanted and bool(current.get("suspend")) != wanted["suspend"]:
        changes["suspend"] = wanted["suspend"]
    return {"spec": changes} if changes else None


def _role(job: Manifest) -> str | None:
    return (job["metadata"].get("labels") or {}).get(LABEL_ROLE)


def _waiting(status: FineTuneJobStatus, ctx: FineTuneJobContext, wait: InitWait) -> Plan:
    """Pending on spec.initFrom: no child yet, Running=False with the reason, a look again later."""
    was = find_condition(status.conditions, ConditionType.RUNNING)
    events = (
        [] if was is not None and was.reason == wait.reason else [Event("Normal", wait.reason, wait.message)]
    )
    status.phase = Phase.PENDING
    status.observed_generation = ctx.generation
    status.conditions = set_condition(
        status.conditions, ConditionType.RUNNING, "False", wait.reason, wait.message, ctx.generation, ctx.now
    )
    status.conditions = _summarized(status.conditions, ctx.generation, ctx.now)
    return Plan(status=status.to_wire(), events=events, requeue_after_s=WAIT_REQUEUE_SECONDS)


def _invalid(status: FineTuneJobStatus, generation: int | None, now: datetime, message: str) -> Plan:
    events = [] if status.phase == Phase.FAILED else [Event("Warning", Reason.INVALID_SPEC, message)]
    status.phase = Phase.FAILED
    status.conditions = set_condition(
        status.conditions, ConditionType.FAILED, "True", Reason.INVALID_SPEC, message, generation, now
    )
    status.conditions = _summarized(status.conditions, generation, now)
    status.observed_generation = generation
    return Plan(status=status.to_wire(), events=events)


def _summarized(conditions: list[Condition], generation: int | None, now: datetime) -> list[Condition]:
    return summary_conditions(conditions, finetunejob_summary(conditions), generation, now)
