"""What a FineTuneJob's Jobs and pods say: conditions, attempts, termination messages, and why a Job
failed (fatal, disruption, deadline, retryable). Pure readers of the objects as the API returns them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from kubetune.api.conditions import Reason
from kubetune.api.trainingconfig import EXIT_CONFIG_ERROR, EXIT_DATA_ERROR, TrainerResult
from kubetune.builders.finetunejob import LABEL_ATTEMPT, RULE_DISRUPTION, RULE_FATAL_EXIT
from kubetune.builders.training_pod import COMPLETION_INDEX_ANNOTATION

_RULE_INDEX = re.compile(r"matching FailJob rule at index (\d+)")
_EXIT_CODE = re.compile(r"failed with exit code (\d+)")

Failure = Literal["fatal", "disruption", "deadline", "retryable"]


def job_condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def attempt_of(job: Mapping[str, Any]) -> int:
    return int(job["metadata"].get("labels", {}).get(LABEL_ATTEMPT, "0"))


def owned_by(item: Mapping[str, Any], job_name: str) -> bool:
    labels = item["metadata"].get("labels", {})
    return bool(labels.get("batch.kubernetes.io/job-name", labels.get("job-name")) == job_name)


def terminated(pod: Mapping[str, Any], container: str) -> Mapping[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            state = cs.get("state") or {}
            term = state.get("terminated") or (cs.get("lastState") or {}).get("terminated")
            return dict(term) if term else None
    return None


def completion_index(pod: Mapping[str, Any]) -> str | None:
    meta = pod["metadata"]
    annotations = meta.get("annotations") or {}
    index = annotations.get(COMPLETION_INDEX_ANNOTATION)
    return str(index) if index is not None else (meta.get("labels") or {}).get(COMPLETION_INDEX_ANNOTATION)


def parse_trainer_result(message: str | None) -> TrainerResult | None:
    """TrainerResult from a termination message; None for logs (FallbackToLogsOnError) or nothing."""
    if not message:
        return None
    try:
        return TrainerResult.model_validate(json.loads(message))
    except (ValueError, ValidationError):
        return None


@dataclass(frozen=True)
class PodFailure:
    exit_code: int | None
    message: str
    result: TrainerResult | None
    disrupted: bool


def failed_containers(pods: Sequence[Mapping[str, Any]], container: str) -> list[PodFailure]:
    """Failed containers, rank 0 first (its message is the authoritative one)."""
    failures: list[tuple[str, PodFailure]] = []
    for pod in pods:
        term = terminated(pod, container)
        disrupted = any(
            c.get("type") == "DisruptionTarget" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )
        if (term is None or term.get("exitCode", 0) == 0) and not disrupted:
            continue
        text = str(term.get("message") or "") if term else ""
        if term and term.get("reason") == "OOMKilled" and not text:
            text = "OOMKilled: the container exceeded its memory limit (resources.memory)"
        failures.append(
            (
                completion_index(pod) or "",
                PodFailure(
                    term.get("exitCode") if term else None,
                    text.strip(),
                    parse_trainer_result(text),
                    disrupted,
                ),
            )
        )
    failures.sort(key=lambda f: (f[0] != "0", f[0]))
    return [f for _, f in failures]


def classify(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], container: str
) -> tuple[Failure, Reason, str]:
    failed = job_condition(job, "Failed") or {}
    job_reason = str(failed.get("reason", ""))
    job_message = str(failed.get("message", ""))
    pod_failures = failed_containers(pods, container)
    rule = _RULE_INDEX.search(job_message)
    fatal = [f for f in pod_failures if f.exit_code in (EXIT_CONFIG_ERROR, EXIT_DATA_ERROR)]
    if fatal or (rule and int(rule.group(1)) == RULE_FATAL_EXIT):
        first = fatal[0] if fatal else None
        code_text = _EXIT_CODE.search(job_message)
        code = first.exit_code if first else int(code_text.group(1)) if code_text else None
        reason = Reason.INVALID_DATA if code == EXIT_DATA_ERROR else Reason.CONFIG_ERROR
        if first and first.result and first.result.message:
            return "fatal", reason, first.result.message
        return "fatal", reason, (first.message if first and first.message else job_message)
    if job_reason == "DeadlineExceeded":
        return "deadline", Reason.DEADLINE_EXCEEDED, job_message or "activeDeadlineSeconds exceeded"
    if any(f.disrupted for f in pod_failures) or (rule and int(rule.group(1)) == RULE_DISRUPTION):
        return "disruption", Reason.GANG_RESTART, job_message or "a pod was disrupted (preemption or drain)"
    detail = next((f.message for f in pod_failures if f.message), job_message)
    code = next((f.exit_code for f in pod_failures if f.exit_code is not None), None)
    prefix = f"exit code {code}: " if code is not None else ""
    return "retryable", Reason.BACKOFF_LIMIT_EXCEEDED, prefix + detail


def unschedulable_reason(pods: Sequence[Mapping[str, Any]]) -> str | None:
    for pod in pods:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                return f"pod {pod['metadata']['name']}: {cond.get('message', 'unschedulable')}"
    return None
