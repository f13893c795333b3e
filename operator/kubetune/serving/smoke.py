"""Serving smoke test: prompts through a variant's OpenAI chat API before it gets any traffic.

Catches what offline metrics miss after fine-tuning: a chat template that does not render, an EOS
the model never emits (generations that run to the token budget), malformed responses. Judging is
pure (`judge_response`, `judge`); `run_smoke_test` only does the HTTP.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from kubetune.api.common import ConditionStatus
from kubetune.api.conditions import Reason
from kubetune.api.modeldeployment import SmokeTest
from kubetune.outbound import OutboundError, post

DEFAULT_PROMPTS: tuple[str, ...] = ("Reply with one short sentence: what can you help me with?",)
FINISH_REASONS = ("stop", "length")
# Literal special tokens in the text mean the template's markers are not the model's special tokens.
_LEAKED_MARKER = re.compile(r"<\|[A-Za-z_]+\|>")
_PROMPT_PREVIEW = 80
_ERROR_EXCERPT = 300


@dataclass(frozen=True)
class PromptOutcome:
    index: int
    prompt: str
    finish_reason: str | None = None
    completion_tokens: int | None = None
    text: str = ""
    problem: str | None = None  # why the response is unacceptable regardless of the stop fraction


@dataclass(frozen=True)
class SmokeVerdict:
    status: ConditionStatus
    reason: Reason
    message: str
    failing_prompt: str | None = None
    outcomes: tuple[PromptOutcome, ...] = ()
    tested: str | None = None
    """The smoke-test key of what was tested (see `kubetune.planning.smoke.smoke_key`)."""

    @property
    def passed(self) -> bool:
        return self.status == "True"

    @classmethod
    def pending(cls, message: str) -> SmokeVerdict:
        """Not run yet (or invalidated by a new model): no traffic until it runs."""
        return cls("Unknown", Reason.PENDING, message)


def smoke_prompts(smoke: SmokeTest, test_split_prompts: Sequence[str] = ()) -> list[str]:
    """spec.smokeTest.prompts, else the FineTuneJob's held-out prompts, else a generic prompt."""
    if smoke.prompts:
        return list(smoke.prompts)
    if test_split_prompts:
        return list(test_split_prompts[:16])
    return list(DEFAULT_PROMPTS)


def _preview(prompt: str) -> str:
    flat = " ".join(prompt.split())
    return flat if len(flat) <= _PROMPT_PREVIEW else flat[: _PROMPT_PREVIEW - 1] + "…"


def _error_text(body: Any) -> str:
    """vLLM's error message, shortened. Only the variant's own server answers here (no redirect is
    followed), so this repeats what the user's pod said, never another server's body."""
    text = str(body)
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            text = str(error.get("message", error))
        elif "message" in body:
            text = str(body["message"])
        elif "detail" in body:
            text = str(body["detail"])
    flat = " ".join(text.split())
    return flat if len(flat) <= _ERROR_EXCERPT else flat[: _ERROR_EXCERPT - 1] + "…"


def judge_response(index: int, prompt: str, http_status: int, body: Any, max_tokens: int) -> PromptOutcome:
    """Check one /v1/chat/completions response against the OpenAI schema and the token budget."""

    def bad(problem: str, **known: Any) -> PromptOutcome:
        return PromptOutcome(index, prompt, problem=problem, **known)

    if http_status != 200:
        text = _error_text(body)
        if "template" in text.lower():
            return bad(f"chat template did not render (HTTP {http_status}): {text}")
        return bad(f"HTTP {http_status}: {text}")
    if not isinstance(body, Mapping) or body.get("object") != "chat.completion":
        return bad("response is not a chat.completion object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return bad("response has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping) or message.get("role") != "assistant":
        return bad("choices[0].message is not an assistant message")
    content = message.get("content")
    if not isinstance(content, str):
        return bad("choices[0].message.content is not a string")
    usage = body.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, Mapping) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        return bad("usage.completion_tokens is missing", text=content)
    finish = choice.get("finish_reason")
    known = {
        "finish_reason": finish if isinstance(finish, str) else None,
        "completion_tokens": tokens,
        "text": content,
    }
    if finish not in FINISH_REASONS:
        return bad(f"finish_reason {finish!r} is neither stop nor length", **known)
    if tokens > max_tokens:
        return bad(f"{tokens} completion tokens exceed the budget of {max_tokens}", **known)
    if finish == "stop" and not content.strip():
        return bad("empty response (the model ended before saying anything)", **known)
    leaked = _LEAKED_MARKER.search(content)
    if leaked:
        return bad(f"chat template marker {leaked.group(0)} leaked into the response", **known)
    return PromptOutcome(index, prompt, finish_reason=finish, completion_tokens=tokens, text=content)


def judge(outcomes: Sequence[PromptOutcome], *, max_tokens: int, min_stop_fraction: float) -> SmokeVerdict:
    """Pass when every response is valid and at least `min_stop_fraction` ended with `stop`."""
    total = len(outcomes)
    if total == 0:
        return SmokeVerdict("False", Reason.SMOKE_FAILED, "no prompts to send")
    for outcome in outcomes:
        if outcome.problem is not None:
            return SmokeVerdict(
                "False",
                Reason.SMOKE_FAILED,
                f'prompt {outcome.index + 1}/{total} "{_preview(outcome.prompt)}": {outcome.problem}',
                failing_prompt=outcome.prompt,
                outcomes=tuple(outcomes),
            )
    stopped = sum(1 for o in outcomes if o.finish_reason == "stop")
    summary = f"{stopped}/{total} responses ended with finish_reason=stop (need {min_stop_fraction:.0%})"
    if stopped < min_stop_fraction * total:
        first_long = next(o for o in outcomes if o.finish_reason != "stop")
        return SmokeVerdict(
            "False",
            Reason.SMOKE_FAILED,
            f'prompt {first_long.index + 1}/{total} "{_preview(first_long.prompt)}": '
            f"finish_reason=length after {first_long.completion_tokens} tokens (budget {max_tokens}), "
            f"the model never emitted EOS; {summary}",
            failing_prompt=first_long.prompt,
            outcomes=tuple(outcomes),
        )
    return SmokeVerdict("True", Reason.SMOKE_PASSED, summary, outcomes=tuple(outcomes))


async def _ask(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    index: int,
    prompt: str,
    max_tokens: int,
    gate: asyncio.Semaphore,
) -> PromptOutcome:
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    async with gate:
        try:
            # The session's timeout bounds the whole test; the body is capped, redirects refused.
            response = await post(session, url, timeout_s=None, json=payload)
        except OutboundError as exc:
            return PromptOutcome(index, prompt, problem=str(exc))
    try:
        body: Any = json.loads(response.body)
    except ValueError:
        body = response.body.decode(errors="replace")
    return judge_response(index, prompt, response.status, body, max_tokens)


async def run_smoke_test(
    base_url: str,
    model: str,
    prompts: Sequence[str],
    *,
    max_tokens: int,
    min_stop_fraction: float,
    session: aiohttp.ClientSession | None = None,
    timeout_s: float = 300.0,
    concurrency: int = 4,
) -> SmokeVerdict:
    """Send every prompt (greedy, `max_tokens` budget) to `{base_url}/chat/completions`; judge them.

    `base_url` is the OpenAI API root, e.g. http://chat-vllm-a.ns.svc:8000/v1.
    """
    url = base_url.rstrip("/") + "/chat/completions"
    gate = asyncio.Semaphore(concurrency)
    own = session is None
    client = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
    try:
        outcomes = await asyncio.gather(
            *(_ask(client, url, model, i, prompt, max_tokens, gate) for i, prompt in enumerate(prompts))
        )
    finally:
        if own:
            await client.close()
    return judge(outcomes, max_tokens=max_tokens, min_stop_fraction=min_stop_fraction)
