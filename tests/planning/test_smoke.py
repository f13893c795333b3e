"""The smoke-test verdict's key: what a standing verdict is about."""

from __future__ import annotations

from typing import Any

import pytest
from tests.builders.test_modeldeployment_builders import mdep_for, ready

from kubetune.api.modeldeployment import SmokeTest
from kubetune.builders.modeldeployment import build_deployment
from kubetune.planning.smoke import smoke_key, transport_only
from kubetune.serving.smoke import PromptOutcome, SmokeVerdict


def key(smoke: dict[str, Any], **variant: Any) -> str:
    mdep, v = mdep_for(**variant)
    return smoke_key(v, ready(), build_deployment(mdep, v, ready()), SmokeTest.model_validate(smoke))


@pytest.mark.parametrize(
    ("changed", "same"),
    [
        ({"minStopFraction": 0}, False),
        ({"prompts": ["Say hi."]}, False),
        ({"maxTokens": 8}, False),
        ({}, True),
    ],
)
def test_a_changed_smoke_test_is_a_new_verdict(changed: dict[str, Any], same: bool) -> None:
    assert (key(changed) == key({})) is same


def test_changed_containers_are_a_new_verdict() -> None:
    assert key({}, vllm={"maxModelLen": 512}) != key({})


def _failed(*problems: str | None) -> SmokeVerdict:
    outcomes = tuple(PromptOutcome(i, f"p{i}", problem=p) for i, p in enumerate(problems))
    return SmokeVerdict("False", "SmokeTestFailed", "failed", outcomes=outcomes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("problems", "retry"),
    [
        (("request failed: connection refused",), True),
        # A 404 came from a server that does not serve the variant's model: not this variant's pod.
        (("HTTP 404: ",), True),
        (("HTTP 404: ", "request failed: timeout"), True),
        (("HTTP 500: boom",), False),
        (("HTTP 404: ", "HTTP 500: boom"), False),
        (("response has no choices",), False),
        ((None, "HTTP 404: "), True),
    ],
)
def test_which_failures_are_no_verdict_on_the_model(problems: tuple[str | None, ...], retry: bool) -> None:
    assert transport_only(_failed(*problems)) is retry
