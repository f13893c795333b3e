"""observe(): FineTuneJob status and next steps from observed Jobs and pods (`now` injected)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.support import manifests

from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.finetunejob import Phase, Progress
from kubetune.builders.finetunejob import build_children
from kubetune.planning.finetunejob import observe
from kubetune.planning.job_pods import parse_trainer_result
from kubetune.preflight import Problem
from kubetune.status.conditions import find_condition
from kubetune.status.progress import compute_progress, format_duration

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
START = NOW - timedelta(hours=1)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def ftj(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return manifests.ftj(generation=2, status=status, **spec)


def with_conditions(job: dict[str, Any], *conditions: tuple[str, str, str]) -> dict[str, Any]:
    job.setdefault("status", {})["conditions"] = [
        {"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions
    ]
    return job


def validation(state: str | None, obj: dict[str, Any] | None = None) -> dict[str, Any]:
    job = build_children(obj or ftj(), restart=0).validation_job
    if state == "complete":
        with_conditions(job, ("Complete", "", ""))
    elif state == "failed-41":
        with_conditions(
            job,
            (
                "Failed",
                "PodFailurePolicy",
                "Container validate for pod ns/demo-validate-x failed with exit code 41 matching "
                "FailJob rule at index 0",
            ),
        )
    elif state == "failed-retries":
        with_conditions(
            job, ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        )
    return job


def training(
    attempt: int = 0,
    *,
    obj: dict[str, Any] | None = None,
    counted: int | None = None,
    started: datetime = START,
    state: tuple[str, str, str] | None = None,
    suspend: bool | None = None,
) -> dict[str, Any]:
    job = build_children(obj or ftj(), restart=attempt, counted_restarts=counted).training_job
    job["status"] = {"startTime": iso(started)}
    if suspend is not None:
        job["spec"]["suspend"] = suspend
    if state:
        with_conditions(job, state)
    return job


def pod(
    job: dict[str, Any],
    index: int,
    phase: str = "Running",
    *,
    exit_code: int | None = None,
    message: str = "",
    container: str = "trainer",
    conditions: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    name = job["metadata"]["name"]
    statuses = []
    if exit_code is not None:
        statuses = [{"name": container, "state": {"terminated": {"exitCode": exit_code, "message": message}}}]
    return {
        "metadata": {
            "name": f"{name}-{index}-abcde",
            "labels": {
                **job["spec"]["template"]["metadata"]["labels"],
                "batch.kubernetes.io/job-name": name,
                "batch.kubernetes.io/job-completion-index": str(index),
            },
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {"phase": phase, "containerStatuses": statuses, "conditions": conditions or []},
    }


def result(**fields: Any) -> str:
    return json.dumps(fields)


def rank0_succeeded(job: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Rank 0's pod, succeeded, with the trainer's result (outcome Succeeded and `fields`) as its message."""
    return pod(job, 0, "Succeeded", exit_code=0, message=result(outcome="Succeeded", **fields))


def cond(status: Any, type_: ConditionType) -> tuple[str, str, str] | None:
    c = find_condition(status.conditions, type_)
    return (c.status, c.reason, c.message) if c else None


VALID = validation("complete")


@pytest.mark.parametrize(
    ("jobs", "phase", "validated", "create_validation", "create_training"),
    [
        ([], Phase.PENDING, ("Unknown", "Pending"), True, False),
        ([validation(None)], Phase.VALIDATING, ("Unknown", "Validating"), False, False),
        ([VALID], Phase.PENDING, ("True", "DataValid"), False, True),
    ],
)
def test_validation_gates_training(
    jobs: list[dict[str, Any]],
    phase: Phase,
    validated: tuple[str, str],
    create_validation: bool,
    create_training: bool,
) -> None:
    obs = observe(ftj(), jobs, [], NOW)
    assert obs.status.phase is phase
    c = find_condition(obs.status.conditions, ConditionType.DATA_VALIDATED)
    assert c is not None
    assert (c.status, c.reason) == validated
    assert (obs.decisions.create_validation, obs.decisions.create_training) == (
        create_validation,
        create_training,
    )
    assert obs.decisions.attempt == 0
    assert obs.status.observed_generation == 2


def validator_ended(exit_code: int, message: str) -> list[dict[str, Any]]:
    """The validation Job's pod, failed with `exit_code` and `message` as its termination message."""
    return [pod(validation(None), 0, "Failed", exit_code=exit_code, container="validate", message=message)]


BAD_ROLE = "train.jsonl:17: messages[2].role: expected assistant after user"


@pytest.mark.parametrize(
    ("job", "pods", "reason", "message"),
    [
        (
            validation("failed-41"),
            validator_ended(41, result(outcome="Failed", reason="InvalidData", message=BAD_ROLE)),
            Reason.INVALID_DATA,
            BAD_ROLE,
        ),
        (
            validation("failed-41"),
            validator_ended(41, "Traceback...\ntrain.jsonl:3: output: empty\n"),
            Reason.INVALID_DATA,
            "Traceback...\ntrain.jsonl:3: output: empty",
        ),
        (
            validation("failed-41"),
            [],  # pods gone: the Job condition still names the fatal rule and exit code
            Reason.INVALID_DATA,
            "Container validate for pod ns/demo-validate-x failed with exit code 41 matching "
            "FailJob rule at index 0",
        ),
        (
            validation("failed-retries"),
            validator_ended(1, "s3: timeout"),
            Reason.BACKOFF_LIMIT_EXCEEDED,
            "data validation failed after retries: exit code 1: s3: timeout",
        ),
    ],
)
def test_validation_failure_fails_with_the_validators_message(
    job: dict[str, Any], pods: list[dict[str, Any]], reason: Reason, message: str
) -> None:
    obs = observe(ftj(), [job], pods, NOW)
    assert obs.status.phase is Phase.FAILED
    assert cond(obs.status, ConditionType.FAILED) == ("True", reason, message)
    validated = find_condition(obs.status.conditions, ConditionType.DATA_VALIDATED)
    assert validated is not None
    assert validated.status == "False"
    assert not obs.decisions.create_training
    assert obs.status.completion_time == NOW
    assert [e.type for e in obs.decisions.events] == ["Warning"]


@pytest.mark.parametrize(
    ("pods", "phase", "running"),
    [
        ([], Phase.PENDING, ("False", Reason.PENDING)),
        ("one-running", Phase.RUNNING, ("True", Reason.TRAINING)),
        ("unschedulable", Phase.PENDING, ("False", Reason.UNSCHEDULABLE)),
    ],
)
def test_training_pods_drive_running(pods: Any, phase: Phase, running: tuple[str, Reason]) -> None:
    job = training()
    observed: list[dict[str, Any]] = []
    if pods == "one-running":
        observed = [pod(job, 0), pod(job, 1, "Pending")]
    elif pods == "unschedulable":
        observed = [
            pod(job, 0),
            pod(
                job,
                1,
                "Pending",
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
                    }
                ],
            ),
        ]
    obs = observe(ftj(), [VALID, job], observed, NOW)
    assert obs.status.phase is phase
    c = find_condition(obs.status.conditions, ConditionType.RUNNING)
    assert c is not None
    assert (c.status, c.reason) == running
    if pods == "unschedulable":
        assert "Insufficient nvidia.com/gpu" in c.message
    assert obs.status.start_time == START
    assert not obs.decisions.create_training
    assert obs.decisions.delete_jobs == ()


@pytest.mark.parametrize(
    ("queued", "message"), [(True, "waiting for Kueue admission"), (False, "training Job is suspended")]
)
def test_suspended_job_without_run_policy_suspend_is_pending(queued: bool, message: str) -> None:
    obj = ftj(resources={"nodes": 1, "queueName": "lq"} if queued else {"nodes": 1})
    obs = observe(obj, [validation("complete", obj), training(obj=obj, suspend=True)], [], NOW)
    assert obs.status.phase is Phase.PENDING
    assert cond(obs.status, ConditionType.RUNNING) == ("False", Reason.PENDING, message)


@pytest.mark.parametrize(
    ("queued", "deleted"),
    [(False, ()), (True, ("demo-train-r0",))],
)
def test_run_policy_suspend(queued: bool, deleted: tuple[str, ...]) -> None:
    resources = {"nodes": 1, **({"queueName": "lq"} if queued else {})}
    obj = ftj(resources=resources, runPolicy={"suspend": True})
    job = training(obj=obj)
    obs = observe(obj, [validation("complete", obj), job], [pod(job, 0)], NOW)
    assert obs.status.phase is Phase.SUSPENDED
    assert cond(obs.status, ConditionType.SUSPENDED) is not None
    assert obs.decisions.delete_jobs == deleted
    resumed = ftj(status=obs.status.to_wire(), resources=resources)
    job["spec"]["suspend"] = False  # the reconciler patched runPolicy.suspend back into the Job
    after = observe(
        resumed,
        [validation("complete", obj)] + ([] if queued else [job]),
        [] if queued else [pod(job, 0)],
        NOW,
    )
    assert after.status.phase is (Phase.PENDING if queued else Phase.RUNNING)
    assert after.decisions.create_training is queued
    suspended = find_condition(after.status.conditions, ConditionType.SUSPENDED)
    assert suspended is not None
    assert suspended.status == "False"


@pytest.mark.parametrize(
    ("progress", "phase", "percent", "eta"),
    [
        ({"step": 25, "totalSteps": 100, "updatedAt": iso(NOW)}, Phase.RUNNING, 25, "3h0m0s"),
        (
            {"step": 50, "totalSteps": 100, "updatedAt": iso(NOW - timedelta(minutes=30))},
            Phase.RUNNING,
            50,
            "0s",
        ),
        ({"step": 100, "totalSteps": 100, "updatedAt": iso(NOW)}, Phase.EVALUATING, 100, "0s"),
        ({"step": 0, "totalSteps": 100}, Phase.RUNNING, 0, None),
    ],
)
def test_progress_percent_eta_and_evaluating(
    progress: dict[str, Any], phase: Phase, percent: int, eta: str | None
) -> None:
    job = training()
    obj = ftj(status={"startTime": iso(START), "progress": progress, "phase": "Running"})
    obs = observe(obj, [VALID, job], [pod(job, 0), pod(job, 1)], NOW)
    assert obs.status.phase is phase
    assert obs.status.progress is not None
    assert (obs.status.progress.percent, obs.status.progress.eta) == (percent, eta)


DIGEST = "sha256:" + "ab" * 32


def test_success_records_metrics_artifacts_and_lineage() -> None:
    job = training(state=("Complete", "CompletionsReached", ""))
    rank0 = rank0_succeeded(
        job,
        metrics={"evalLoss": 1.25, "perplexity": 3.49, "rougeL": 0.41, "bleu": 22.5, "samples": 200},
        artifacts={"adapterUri": "pvc://o/x/adapter", "manifestUri": "pvc://o/x/kubetune-manifest.json"},
        lineage={
            "datasetDigest": DIGEST,
            "baseModelRevision": "abc123",
            "checkpoint": "checkpoint-400",
        },
        finalStep=400,
    )
    obj = ftj(status={"phase": "Running", "progress": {"step": 390, "totalSteps": 400}})
    obs = observe(obj, [VALID, job], [rank0, pod(job, 1, "Succeeded", exit_code=0)], NOW)
    status = obs.status
    assert status.phase is Phase.SUCCEEDED
    assert cond(status, ConditionType.SUCCEEDED) == (
        "True",
        Reason.COMPLETED,
        "training and evaluation completed",
    )
    assert status.metrics is not None
    assert status.metrics.rouge_l == 0.41
    assert status.artifacts is not None
    assert status.artifacts.adapter_uri == "pvc://o/x/adapter"
    assert status.lineage is not None
    assert (status.lineage.dataset_digest, status.lineage.checkpoint) == (DIGEST, "checkpoint-400")
    assert cond(status, ConditionType.TRAINER_REPORT_VALID)[:2] == ("True", Reason.REPORT_VALID)
    # The trainer did not hash the config: the operator's spec hash stands in.
    assert status.lineage.config_hash == job["metadata"]["annotations"]["kubetune.io/spec-hash"]
    assert status.progress is not None
    assert (status.progress.step, status.progress.percent) == (400, 100)
    assert status.completion_time == NOW
    assert [(e.type, e.reason) for e in obs.decisions.events] == [("Normal", "Completed")]


def test_success_records_the_frozen_set_scores_of_the_run_and_its_champion() -> None:
    evaluation = {
        "frozenSet": {"uri": "pvc://eval/frozen.jsonl"},
        "champion": {"name": "weekly-1", "adapterUri": "pvc://o/weekly-1/adapter"},
    }
    obj = ftj(status={"phase": "Running"}, evaluation=evaluation)
    job = training(obj=obj, state=("Complete", "CompletionsReached", ""))
    frozen = {
        "metrics": {"evalLoss": 0.8, "rougeL": 0.5},
        "champion": "weekly-1",
        "championMetrics": {"evalLoss": 0.9, "rougeL": 0.45},
    }
    rank0 = rank0_succeeded(job, metrics={"evalLoss": 1.1}, frozenSet=frozen)
    obs = observe(
        obj, [validation("complete", obj), job], [rank0, pod(job, 1, "Succeeded", exit_code=0)], NOW
    )
    scores = obs.status.frozen_set
    assert obs.status.phase is Phase.SUCCEEDED
    assert scores is not None
    assert (scores.uri, scores.champion) == ("pvc://eval/frozen.jsonl", "weekly-1")
    assert scores.metrics is not None
    assert scores.champion_metrics is not None
    assert (scores.metrics.eval_loss, scores.champion_metrics.rouge_l) == (0.8, 0.45)
    # The test split's metrics stay where they were.
    assert obs.status.metrics is not None
    assert obs.status.metrics.eval_loss == 1.1


def test_success_without_readable_result_says_so() -> None:
    job = training(state=("Complete", "", ""))
    obs = observe(ftj(), [VALID, job], [], NOW)
    assert obs.status.phase is Phase.SUCCEEDED
    assert "not readable" in (cond(obs.status, ConditionType.SUCCEEDED) or ("", "", ""))[2]


FATAL_41 = (
    "Failed",
    "PodFailurePolicy",
    "Container trainer for pod ns/demo-train-r0-1-x failed with exit code 41 "
    "matching FailJob rule at index 0",
)
DISRUPTED = (
    "Failed",
    "PodFailurePolicy",
    "Pod ns/demo-train-r0-1-x has condition DisruptionTarget matching FailJob rule at index 1",
)
RETRYABLE = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")


@pytest.mark.parametrize(
    ("state", "pods", "counted", "phase", "reason", "restarts", "create", "message_part"),
    [
        # fatal exit codes: Failed at once with the trainer's own words
        (
            FATAL_41,
            [(1, "Failed", 41, result(outcome="Failed", reason="InvalidData", message="d.jsonl:9: bad"))],
            0,
            Phase.FAILED,
            Reason.INVALID_DATA,
            0,
            False,
            "d.jsonl:9: bad",
        ),
        (
            ("Failed", "PodFailurePolicy", "... exit code 40 matching FailJob rule at index 0"),
            [(0, "Failed", 40, "deepspeed.json: unknown key")],
            0,
            Phase.FAILED,
            Reason.CONFIG_ERROR,
            0,
            False,
            "deepspeed.json: unknown key",
        ),
        # retryable: a counted gang restart while below backoffLimit
        (
            RETRYABLE,
            [(1, "Failed", 1, "NCCL watchdog timeout")],
            0,
            Phase.PENDING,
            Reason.GANG_RESTART,
            1,
            True,
            "exit code 1: NCCL watchdog timeout",
        ),
        (
            RETRYABLE,
            [(1, "Failed", 137, "")],
            2,
            Phase.PENDING,
            Reason.GANG_RESTART,
            3,
            True,
            "restart 3 of 3",
        ),
        (
            RETRYABLE,
            [(1, "Failed", 1, "oom")],
            3,
            Phase.FAILED,
            Reason.BACKOFF_LIMIT_EXCEEDED,
            3,
            False,
            "gang failed 4 times (backoffLimit 3)",
        ),
        # disruption: restart, not counted (from the pod condition, or the Job message when pods are gone)
        (DISRUPTED, "disrupted-pod", 3, Phase.PENDING, Reason.GANG_RESTART, 3, True, "not counted"),
        (DISRUPTED, [], 1, Phase.PENDING, Reason.GANG_RESTART, 1, True, "not counted"),
        (
            ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline"),
            [],
            0,
            Phase.FAILED,
            Reason.DEADLINE_EXCEEDED,
            0,
            False,
            "longer than specified deadline",
        ),
    ],
)
def test_training_failures(
    state: tuple[str, str, str],
    pods: Any,
    counted: int,
    phase: Phase,
    reason: Reason,
    restarts: int,
    create: bool,
    message_part: str,
) -> None:
    obj = ftj(runPolicy={"backoffLimit": 3})
    job = training(obj=obj, counted=counted, state=state)
    if pods == "disrupted-pod":
        observed = [
            pod(
                job,
                1,
                "Failed",
                conditions=[
                    {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}
                ],
            )
        ]
    else:
        observed = [pod(job, i, p, exit_code=code, message=m) for i, p, code, m in pods]
    obs = observe(obj, [VALID, job], observed, NOW)
    assert obs.status.phase is phase
    assert obs.status.restarts == restarts
    assert obs.decisions.create_training is create
    main = ConditionType.FAILED if phase is Phase.FAILED else ConditionType.RUNNING
    c = find_condition(obs.status.conditions, main)
    assert c is not None
    assert c.reason == reason
    assert message_part in c.message
    if create:
        assert (obs.decisions.attempt, obs.decisions.counted_restarts) == (1, restarts)
        assert obs.decisions.delete_jobs == ("demo-train-r0",)
        assert "demo-train-r1" in c.message
        assert next(e.reason for e in obs.decisions.events) == "GangRestart"


def test_gang_restart_is_counted_once_when_a_pass_repeats() -> None:
    obj = ftj(runPolicy={"backoffLimit": 3})
    job = training(obj=obj, counted=0, state=RETRYABLE)
    failed = [pod(job, 1, "Failed", exit_code=1, message="x")]
    first = observe(obj, [VALID, job], failed, NOW)
    # The status write landed but the operator crashed before creating r1: the same Job again.
    again = observe(
        ftj(status=first.status.to_wire(), runPolicy={"backoffLimit": 3}), [VALID, job], failed, NOW
    )
    assert (first.status.restarts, again.status.restarts) == (1, 1)
    assert again.decisions.create_training
    assert again.decisions.attempt == 1
    # r1 was created but the status write was lost: its annotation carries the count.
    new = training(1, obj=obj, counted=1)
    later = observe(obj, [VALID, job, new], [pod(new, 0), pod(new, 1)], NOW)
    assert later.status.restarts == 1
    assert later.status.phase is Phase.RUNNING
    assert later.decisions.delete_jobs == ("demo-train-r0",)
    assert not later.decisions.create_training


def test_queued_time_is_not_run_time() -> None:
    obj = ftj(resources={"nodes": 1, "queueName": "lq"}, runPolicy={"activeDeadlineSeconds": 60})
    job = training(obj=obj, suspend=True)
    del job["status"]["startTime"]  # never admitted, never started
    obs = observe(obj, [validation("complete", obj), job], [], NOW)
    assert obs.status.start_time is None
    assert obs.status.phase is Phase.PENDING


def test_deadline_counts_across_restarts() -> None:
    obj = ftj(runPolicy={"activeDeadlineSeconds": 1800}, status={"startTime": iso(START), "phase": "Running"})
    job = training(1, obj=obj, started=NOW - timedelta(minutes=5))
    obs = observe(obj, [VALID, job], [pod(job, 0)], NOW)
    assert obs.status.phase is Phase.FAILED
    assert cond(obs.status, ConditionType.FAILED) is not None
    assert obs.decisions.delete_jobs == ("demo-train-r1",)


@pytest.mark.parametrize(("desired", "recreate"), [("same", False), ("other", True), (None, False)])
def test_spec_hash_change_recreates_without_counting(desired: str | None, recreate: bool) -> None:
    job = training(counted=1)
    current = job["metadata"]["annotations"]["kubetune.io/spec-hash"]
    wanted = current if desired == "same" else desired
    obs = observe(ftj(), [VALID, job], [pod(job, 0), pod(job, 1)], NOW, desired_spec_hash=wanted)
    assert obs.decisions.create_training is recreate
    assert obs.status.restarts == 1
    if recreate:
        assert (obs.decisions.attempt, obs.decisions.delete_jobs) == (1, ("demo-train-r0",))
        assert obs.status.phase is Phase.PENDING


def test_terminal_phase_deletes_a_training_job_still_running() -> None:
    obj = ftj(status={"phase": "Failed"})
    done, live = training(0, state=RETRYABLE), training(1)
    obs = observe(obj, [VALID, done, live], [pod(live, 0)], NOW)
    assert obs.status.phase is Phase.FAILED
    assert obs.decisions.delete_jobs == ("demo-train-r1",)
    assert not obs.decisions.create_training


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_terminal_phases_stay_when_jobs_are_gone(phase: str) -> None:
    obj = ftj(status={"phase": phase, "restarts": 2})
    obs = observe(obj, [], [], NOW)
    assert obs.status.phase is Phase(phase)
    assert obs.status.restarts == 2
    assert not obs.decisions.create_validation
    assert not obs.decisions.create_training
    assert obs.decisions.events == ()


def test_preflight_errors_fail_with_invalid_spec() -> None:
    problems = [
        Problem("error", "spec.dataset.maxSeqLength", "8192 exceeds the model's context length 4096"),
        Problem("warning", "spec.resources", "tight"),
    ]
    obs = observe(ftj(), [], [], NOW, problems=problems)
    assert obs.status.phase is Phase.FAILED
    expected = "spec.dataset.maxSeqLength: 8192 exceeds the model's context length 4096"
    assert cond(obs.status, ConditionType.FAILED) == ("True", Reason.INVALID_SPEC, expected)
    assert cond(obs.status, ConditionType.ACCEPTED) == ("False", Reason.INVALID_SPEC, expected)
    assert not obs.decisions.create_validation


def test_unchanged_observation_keeps_transition_times_and_emits_nothing() -> None:
    job = training()
    pods = [pod(job, 0), pod(job, 1)]
    first = observe(ftj(), [VALID, job], pods, NOW)
    second = observe(ftj(status=first.status.to_wire()), [VALID, job], pods, NOW + timedelta(minutes=5))
    assert second.status.conditions == first.status.conditions
    assert second.decisions.events == ()
    assert [(e.type, e.reason) for e in first.decisions.events] == [("Normal", "Training")]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.6, "1m0s"), (61, "1m1s"), (3600, "1h0m0s"), (90061, "25h1m1s"), (-5, "0s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("progress", "start", "percent", "eta"),
    [
        (None, START, None, None),
        (Progress(step=10), START, 0, None),
        (Progress(step=10, total_steps=40, updated_at=NOW), None, 25, None),
        (Progress(step=10, total_steps=40, updated_at=NOW), START, 25, "3h0m0s"),
        (Progress(step=10, total_steps=40), START, 25, "3h0m0s"),
        (Progress(step=50, total_steps=40, updated_at=NOW), START, 100, "0s"),
    ],
)
def test_compute_progress(
    progress: Progress | None, start: datetime | None, percent: int | None, eta: str | None
) -> None:
    out = compute_progress(progress, start, NOW)
    assert (out.percent if out else None, out.eta if out else None) == (percent, eta)


@pytest.mark.parametrize(
    ("message", "outcome"),
    [
        (result(outcome="Failed", reason="InvalidData", message="a:1: x"), "Failed"),
        ("plain log tail", None),
        ("", None),
        (None, None),
        (json.dumps({"outcome": "Maybe"}), None),
    ],
)
def test_parse_trainer_result(message: str | None, outcome: str | None) -> None:
    parsed = parse_trainer_result(message)
    assert (parsed.outcome if parsed else None) == outcome


def test_held_out_prompts_of_the_trainer_result_land_in_status() -> None:
    """Rank 0 reports a few test-split prompts; the smoke test of a variant serving the output uses them."""
    job = training(state=("Complete", "CompletionsReached", ""))
    rank0 = rank0_succeeded(job, testPrompts=["What is 2+2?", "Say hi."])
    obs = observe(ftj(status={"phase": "Running"}), [VALID, job], [rank0], NOW)
    assert obs.status.phase is Phase.SUCCEEDED
    assert obs.status.test_prompts == ["What is 2+2?", "Say hi."]


def test_success_without_readable_result_points_at_the_output_layout() -> None:
    job = training(state=("Complete", "", ""))
    obs = observe(ftj(), [VALID, job], [], NOW)
    assert obs.status.artifacts is not None
    assert obs.status.artifacts.manifest_uri is not None
    assert obs.status.artifacts.manifest_uri.endswith("/kubetune-manifest.json")
    assert obs.status.test_prompts == []


def waiting(
    job: dict[str, Any], reason: str, message: str = "", *, oom_before: bool = False
) -> dict[str, Any]:
    observed = pod(job, 0, "Pending")
    status: dict[str, Any] = {"name": "trainer", "state": {"waiting": {"reason": reason, "message": message}}}
    if oom_before:
        status["lastState"] = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    observed["status"]["containerStatuses"] = [status]
    return observed


@pytest.mark.parametrize(
    ("reason", "message", "oom_before", "expected_reason", "expected_text"),
    [
        (
            "ErrImagePull",
            'failed to pull "ghcr.io/x/trainer:typo": not found',
            False,
            Reason.ERR_IMAGE_PULL,
            "container trainer: ErrImagePull: failed to pull",
        ),
        ("ImagePullBackOff", "Back-off pulling image", False, Reason.IMAGE_PULL_BACK_OFF, "ImagePullBackOff"),
        (
            "ErrImageNeverPull",
            "image is not present",
            False,
            Reason.ERR_IMAGE_NEVER_PULL,
            "ErrImageNeverPull",
        ),
        (
            "CreateContainerConfigError",
            'secret "hf-token" not found',
            False,
            Reason.CREATE_CONTAINER_CONFIG_ERROR,
            'secret "hf-token" not found',
        ),
        ("CrashLoopBackOff", "back-off 10s", False, Reason.CRASH_LOOP_BACK_OFF, "CrashLoopBackOff"),
        ("CrashLoopBackOff", "back-off 10s", True, Reason.OOM_KILLED, "exceeding its memory limit"),
    ],
)
def test_a_container_that_cannot_start_shows_the_kubelets_reason(
    reason: str, message: str, oom_before: bool, expected_reason: Reason, expected_text: str
) -> None:
    job = training()
    obs = observe(ftj(), [VALID, job], [waiting(job, reason, message, oom_before=oom_before)], NOW)
    assert obs.status.phase is Phase.PENDING
    c = find_condition(obs.status.conditions, ConditionType.RUNNING)
    assert c is not None
    assert (c.status, c.reason) == ("False", expected_reason)
    assert expected_text in c.message


def test_a_container_still_being_created_is_only_starting() -> None:
    job = training()
    obs = observe(ftj(), [VALID, job], [waiting(job, "ContainerCreating")], NOW)
    assert cond(obs.status, ConditionType.RUNNING)[:2] == ("False", Reason.PENDING)


def report(attempt: int = 0, **progress: Any) -> dict[str, str]:
    return {"report.json": json.dumps({"attempt": attempt, "progress": progress})}


@pytest.mark.parametrize(
    ("progress", "phase", "percent", "eta"),
    [
        ({"step": 25, "totalSteps": 100, "updatedAt": iso(NOW)}, Phase.RUNNING, 25, "3h0m0s"),
        ({"step": 100, "totalSteps": 100, "updatedAt": iso(NOW)}, Phase.EVALUATING, 100, "0s"),
    ],
)
def test_the_trainers_report_drives_progress_and_evaluating(
    progress: dict[str, Any], phase: Phase, percent: int, eta: str
) -> None:
    job = training()
    obj = ftj(status={"startTime": iso(START), "phase": "Running"})
    obs = observe(obj, [VALID, job], [pod(job, 0), pod(job, 1)], NOW, report=report(**progress))
    assert obs.status.phase is phase
    assert obs.status.progress is not None
    assert obs.status.progress.step == progress["step"]
    assert (obs.status.progress.percent, obs.status.progress.eta, obs.status.progress.attempt) == (
        percent,
        eta,
        0,
    )
    assert cond(obs.status, ConditionType.TRAINER_REPORT_VALID)[:2] == ("True", Reason.REPORT_VALID)


def test_a_forged_report_changes_nothing_and_is_named_once() -> None:
    """A report claiming the run is done with perfect metrics: refused whole, the last progress stays."""
    job = training()
    pods = [pod(job, 0), pod(job, 1)]
    before = {"step": 40, "totalSteps": 100, "attempt": 0, "updatedAt": iso(NOW)}
    obj = ftj(status={"startTime": iso(START), "phase": "Running", "progress": before})
    forged = {
        "report.json": json.dumps(
            {"attempt": 0, "progress": {"step": 100, "totalSteps": 100}, "metrics": {"evalLoss": 0.0}}
        )
    }
    first = observe(obj, [VALID, job], pods, NOW, report=forged)
    assert first.status.phase is Phase.RUNNING, "the forged step does not reach Evaluating"
    assert first.status.metrics is None
    assert first.status.progress is not None
    assert first.status.progress.step == 40
    message = "progress report: metrics: Extra inputs are not permitted"
    assert cond(first.status, ConditionType.TRAINER_REPORT_VALID) == ("False", Reason.INVALID_REPORT, message)
    assert ("Warning", "InvalidReport", message) in [
        (e.type, e.reason, e.message) for e in first.decisions.events
    ]
    # The same refusal on the next pass: the condition stands, no second Event.
    again = observe(ftj(status=first.status.to_wire()), [VALID, job], pods, NOW, report=forged)
    assert cond(again.status, ConditionType.TRAINER_REPORT_VALID)[0] == "False"
    assert again.decisions.events == ()
    # A valid report afterwards clears it.
    fixed = observe(
        ftj(status=again.status.to_wire()), [VALID, job], pods, NOW, report=report(step=41, totalSteps=100)
    )
    assert cond(fixed.status, ConditionType.TRAINER_REPORT_VALID)[:2] == ("True", Reason.REPORT_VALID)
    assert fixed.status.progress is not None
    assert fixed.status.progress.step == 41


def test_a_new_attempt_may_resume_behind_the_last_report() -> None:
    job = training(1)
    before = {"step": 80, "totalSteps": 100, "attempt": 0}
    obj = ftj(status={"startTime": iso(START), "phase": "Running", "progress": before})
    pods = [pod(job, 0), pod(job, 1)]
    stale = observe(obj, [VALID, job], pods, NOW, report=report(0, step=90, totalSteps=100))
    assert stale.status.progress is not None
    assert stale.status.progress.step == 80, "the previous gang's report is not this attempt's"
    resumed = observe(obj, [VALID, job], pods, NOW, report=report(1, step=60, totalSteps=100))
    assert resumed.status.progress is not None
    assert (resumed.status.progress.step, resumed.status.progress.attempt) == (60, 1)


def test_a_refused_final_metric_is_left_out_and_named() -> None:
    job = training(state=("Complete", "CompletionsReached", ""))
    rank0 = rank0_succeeded(job, metrics={"evalLoss": -1.0, "rougeL": 0.4})
    obs = observe(ftj(status={"phase": "Running"}), [VALID, job], [rank0], NOW)
    assert obs.status.phase is Phase.SUCCEEDED
    assert obs.status.metrics is not None
    assert (obs.status.metrics.eval_loss, obs.status.metrics.rouge_l) == (None, 0.4)
    assert cond(obs.status, ConditionType.TRAINER_REPORT_VALID) == (
        "False",
        Reason.INVALID_REPORT,
        "final result: metrics.evalLoss: not a finite number in [0, 10000]",
    )


def test_no_report_yet_sets_no_report_condition() -> None:
    job = training()
    obj = ftj(status={"startTime": iso(START), "phase": "Running"})
    obs = observe(obj, [VALID, job], [pod(job, 0), pod(job, 1)], NOW, report={})
    assert cond(obs.status, ConditionType.TRAINER_REPORT_VALID) is None
