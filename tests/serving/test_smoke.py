"""The serving smoke test: response judging (table) and the client against a never-stopping fake."""

from __future__ import annotations

from typing import Any

import pytest
from tests.serving.fake_openai import never_stopping_server

from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import SmokeTest
from kubetune.serving.smoke import (
    DEFAULT_PROMPTS,
    PromptOutcome,
    judge,
    judge_response,
    run_smoke_test,
    smoke_prompts,
)


def completion(content: Any = "Paris.", finish: Any = "stop", tokens: Any = 3, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
        ],
        "usage": {"completion_tokens": tokens},
    }
    body.update(over)
    return body


@pytest.mark.parametrize(
    ("status", "body", "problem_part", "finish"),
    [
        pytest.param(200, completion(), None, "stop", id="stop"),
        pytest.param(200, completion(finish="length", tokens=16), None, "length", id="length-within-budget"),
        pytest.param(
            200, completion(finish="length", tokens=17), "exceed the budget of 16", "length", id="over-budget"
        ),
        pytest.param(
            400,
            {
                "error": {
                    "message": "Cannot use chat template functions because tokenizer.chat_template is not set"
                }
            },
            "chat template did not render (HTTP 400)",
            None,
            id="template-missing",
        ),
        pytest.param(500, {"detail": "boom"}, "HTTP 500: boom", None, id="server-error"),
        pytest.param(200, "not json", "not a chat.completion", None, id="not-json"),
        pytest.param(
            200, completion(object="text_completion"), "not a chat.completion", None, id="wrong-object"
        ),
        pytest.param(200, completion(choices=[]), "no choices", None, id="no-choices"),
        pytest.param(
            200,
            {**completion(), "choices": [{"message": {"role": "user", "content": "x"}}]},
            "not an assistant message",
            None,
            id="wrong-role",
        ),
        pytest.param(200, completion(content=None), "content is not a string", None, id="null-content"),
        pytest.param(200, completion(usage=None), "completion_tokens is missing", None, id="no-usage"),
        pytest.param(
            200,
            completion(finish="tool_calls"),
            "neither stop nor length",
            "tool_calls",
            id="odd-finish-reason",
        ),
        pytest.param(200, completion(content="  "), "empty response", "stop", id="empty-answer"),
        pytest.param(
            200,
            completion(content="Paris<|im_end|>"),
            "marker <|im_end|> leaked",
            "stop",
            id="template-marker-leaked",
        ),
    ],
)
def test_judge_response(status: int, body: Any, problem_part: str | None, finish: str | None) -> None:
    outcome = judge_response(0, "capital of France?", status, body, max_tokens=16)
    if problem_part is None:
        assert outcome.problem is None
    else:
        assert outcome.problem is not None
        assert problem_part in outcome.problem
    assert outcome.finish_reason == finish


def ok(i: int, finish: str = "stop", tokens: int = 3) -> PromptOutcome:
    return PromptOutcome(i, f"prompt number {i}", finish_reason=finish, completion_tokens=tokens, text="x")


@pytest.mark.parametrize(
    ("outcomes", "min_fraction", "status", "failing", "message_part"),
    [
        pytest.param(
            [ok(0), ok(1)], 1.0, "True", None, "2/2 responses ended with finish_reason=stop", id="all-stop"
        ),
        pytest.param(
            [ok(0), ok(1, "length", 16)],
            1.0,
            "False",
            "prompt number 1",
            'prompt 2/2 "prompt number 1": finish_reason=length after 16 tokens (budget 16)',
            id="one-length-at-full-fraction",
        ),
        pytest.param([ok(0), ok(1, "length", 16)], 0.5, "True", None, "1/2", id="fraction-allows-length"),
        pytest.param(
            [ok(0, "length", 16), ok(1, "length", 16)],
            0.0,
            "True",
            None,
            "0/2",
            id="zero-fraction-accepts-length",
        ),
        pytest.param(
            [ok(0), PromptOutcome(1, "bad one", problem="HTTP 500: boom")],
            0.0,
            "False",
            "bad one",
            'prompt 2/2 "bad one": HTTP 500: boom',
            id="invalid-response-fails-whatever-the-fraction",
        ),
        pytest.param([], 1.0, "False", None, "no prompts", id="no-prompts"),
    ],
)
def test_judge(
    outcomes: list[PromptOutcome], min_fraction: float, status: str, failing: str | None, message_part: str
) -> None:
    verdict = judge(outcomes, max_tokens=16, min_stop_fraction=min_fraction)
    assert verdict.status == status
    assert verdict.reason is (Reason.SMOKE_PASSED if status == "True" else Reason.SMOKE_FAILED)
    assert verdict.failing_prompt == failing
    assert message_part in verdict.message


def test_long_prompts_are_shortened_in_the_message_but_kept_whole() -> None:
    long_prompt = "word " * 100
    verdict = judge([PromptOutcome(0, long_prompt, problem="x")], max_tokens=4, min_stop_fraction=1)
    assert verdict.failing_prompt == long_prompt
    assert len(verdict.message) < 150


@pytest.mark.parametrize(
    ("spec_prompts", "split", "expected"),
    [
        (["a", "b"], ["c"], ["a", "b"]),
        ([], ["c", "d"], ["c", "d"]),
        ([], [], list(DEFAULT_PROMPTS)),
        ([], [str(i) for i in range(40)], [str(i) for i in range(16)]),
    ],
    ids=["spec-wins", "test-split", "generic", "test-split-capped"],
)
def test_smoke_prompts(spec_prompts: list[str], split: list[str], expected: list[str]) -> None:
    assert smoke_prompts(SmokeTest(prompts=spec_prompts), split) == expected


async def test_smoke_fails_against_a_server_that_never_stops_naming_the_prompt() -> None:
    prompts = ["What is the capital of France?", "Name a colour.", "Count to three."]
    async with never_stopping_server() as base_url:
        verdict = await run_smoke_test(base_url, "sft", prompts, max_tokens=24, min_stop_fraction=1.0)
    assert verdict.status == "False"
    assert verdict.reason is Reason.SMOKE_FAILED
    assert verdict.failing_prompt == prompts[0]
    assert 'prompt 1/3 "What is the capital of France?"' in verdict.message
    assert "finish_reason=length after 24 tokens (budget 24)" in verdict.message
    assert [o.finish_reason for o in verdict.outcomes] == ["length"] * 3


async def test_never_stopping_server_passes_only_when_length_is_allowed() -> None:
    async with never_stopping_server() as base_url:
        verdict = await run_smoke_test(base_url, "sft", ["hi"], max_tokens=8, min_stop_fraction=0.0)
    assert verdict.passed, verdict.message


async def test_unreachable_server_is_a_named_failure() -> None:
    async with never_stopping_server() as base_url:
        dead = base_url  # the port is closed once the server is gone
    verdict = await run_smoke_test(dead, "sft", ["hello"], max_tokens=8, min_stop_fraction=1.0, timeout_s=10)
    assert verdict.status == "False"
    assert verdict.failing_prompt == "hello"
    assert "request failed" in verdict.message
