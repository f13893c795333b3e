"""Containers that cannot start, as pods report them, and where a ModelDeployment repeats it."""

from __future__ import annotations

from typing import Any

import pytest
from tests.serving.objects import variant
from tests.status.test_modeldeployment import GATE_OK, READY, T0, deployment

from kubetune.api.conditions import ConditionType, Reason
from kubetune.status.conditions import find_condition
from kubetune.status.modeldeployment import variant_status
from kubetune.status.pods import container_problem


def pod(*statuses: dict[str, Any], init: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat-vllm-a-1"},
        "status": {"containerStatuses": list(statuses), "initContainerStatuses": list(init)},
    }


def waiting(reason: str, message: str = "", name: str = "vllm", **extra: Any) -> dict[str, Any]:
    return {"name": name, "state": {"waiting": {"reason": reason, "message": message}}, **extra}


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([], None),
        ([pod({"name": "vllm", "state": {"running": {}}})], None),
        ([pod(waiting("ContainerCreating"))], None),
        ([pod(waiting("PodInitializing"))], None),
        (
            [pod(waiting("ErrImagePull", "not found"))],
            (Reason.ERR_IMAGE_PULL, "container vllm: ErrImagePull: not found"),
        ),
        (
            [pod(init=(waiting("CreateContainerConfigError", 'secret "hf" not found', name="stage"),))],
            (
                Reason.CREATE_CONTAINER_CONFIG_ERROR,
                'container stage: CreateContainerConfigError: secret "hf"',
            ),
        ),
        (
            [pod(waiting("CrashLoopBackOff", "back-off", lastState={"terminated": {"reason": "OOMKilled"}}))],
            (Reason.OOM_KILLED, "exceeding its memory limit"),
        ),
        ([pod(waiting("CrashLoopBackOff", "back-off 5m"))], (Reason.CRASH_LOOP_BACK_OFF, "CrashLoopBackOff")),
    ],
)
def test_container_problem(pods: list[dict[str, Any]], expected: tuple[Reason, str] | None) -> None:
    found = container_problem(pods)
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert found[0] is expected[0]
    assert expected[1] in found[1]
    assert found[1].startswith("pod chat-vllm-a-1 ")


def test_a_variant_whose_pods_cannot_start_says_why_in_available() -> None:
    problem = container_problem([pod(waiting("ImagePullBackOff", "Back-off pulling image"))])
    status = variant_status(
        variant("a"), deployment(ready=0, available=0), READY, GATE_OK, None, pod_problem=problem, now=T0
    )
    available = find_condition(status.conditions, ConditionType.AVAILABLE)
    assert available is not None
    assert (available.status, available.reason) == ("False", Reason.IMAGE_PULL_BACK_OFF)
    assert available.message.startswith("0/2 replicas available; pod chat-vllm-a-1 container vllm")


def test_an_available_variant_is_not_blamed_on_one_bad_pod() -> None:
    problem = container_problem([pod(waiting("CrashLoopBackOff"))])
    status = variant_status(variant("a"), deployment(), READY, GATE_OK, None, pod_problem=problem, now=T0)
    available = find_condition(status.conditions, ConditionType.AVAILABLE)
    assert available is not None
    assert (available.status, available.reason) == ("True", Reason.MINIMUM_REPLICAS_AVAILABLE)
