"""What pods say that their owners' status must repeat: containers that cannot start (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubetune.api.conditions import Reason

MAX_MESSAGE = 2048


def clip(message: str) -> str:
    """A condition message cut to what status keeps readable."""
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


# Waiting reasons after which a container will not start without a change (image, Secret, config).
STUCK_WAITING = {
    Reason.ERR_IMAGE_PULL,
    Reason.IMAGE_PULL_BACK_OFF,
    Reason.ERR_IMAGE_NEVER_PULL,
    Reason.INVALID_IMAGE_NAME,
    Reason.CREATE_CONTAINER_CONFIG_ERROR,
    Reason.CREATE_CONTAINER_ERROR,
    Reason.CRASH_LOOP_BACK_OFF,
}


def container_problem(pods: Sequence[Mapping[str, Any]]) -> tuple[Reason, str] | None:
    """The first container that cannot start or keeps dying, with the kubelet's reason and message.

    Pod status alone says this (`kubectl get pods`: ErrImagePull, CrashLoopBackOff); the FineTuneJob's
    condition must say it too, or a user sees "training pods are starting" for ever.
    """
    for pod in pods:
        status = pod.get("status") or {}
        for container in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            last = (container.get("lastState") or {}).get("terminated") or {}
            where = f"pod {pod['metadata']['name']} container {container.get('name')}"
            if waiting.get("reason") in STUCK_WAITING:
                reason = Reason(waiting["reason"])
                detail = waiting.get("message") or ""
                if reason is Reason.CRASH_LOOP_BACK_OFF and last.get("reason") == "OOMKilled":
                    reason, detail = Reason.OOM_KILLED, "killed for exceeding its memory limit; restarting"
                return reason, clip(f"{where}: {reason.value}" + (f": {detail}" if detail else ""))
    return None


def pod_ready_ip(pod: Mapping[str, Any]) -> str | None:
    """The IP of a Ready pod (not terminating), else None."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    ip = status.get("podIP")
    return str(ip) if ready and ip else None
