"""The real vLLM OpenAI server (CPU build) run with exactly the arguments our builder renders.

Proves against the real thing: the rendered flags start a server, the base and the LoRA adapter
answer under their served names, /health and /metrics exist, every vLLM metric name kubetune's
dashboards and analysis use is exposed, and the smoke test tells a model that stops from one
that never does.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from tests.serving.conftest import ADAPTER_NAME, BASE_NAME
from tests.serving.lora_adapter import FACTS
from tests.serving.vllm_server import VllmServer

from kubetune.api.conditions import Reason
from kubetune.serving.metrics import REQUIRED_VLLM_METRICS, missing_metrics
from kubetune.serving.smoke import judge_response, run_smoke_test

pytestmark = pytest.mark.slow

TIMEOUT = aiohttp.ClientTimeout(total=300)


async def chat(server: VllmServer, model: str, prompt: str, max_tokens: int = 16) -> tuple[int, Any]:
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.post(f"{server.base_url}/v1/chat/completions", json=payload) as response,
    ):
        return response.status, await response.json(content_type=None)


def test_rendered_command_is_what_runs(vllm_server: VllmServer, rendered_container: dict[str, Any]) -> None:
    args = rendered_container["args"]
    assert args[args.index("--served-model-name") + 1] == BASE_NAME
    assert args[args.index("--lora-modules") + 1] == f"{ADAPTER_NAME}=/models/adapters/{ADAPTER_NAME}"
    assert vllm_server.process.poll() is None


async def test_health(vllm_server: VllmServer) -> None:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(f"{vllm_server.base_url}/health") as response,
    ):
        assert response.status == 200


async def test_models_lists_base_and_adapter(vllm_server: VllmServer) -> None:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(f"{vllm_server.base_url}/v1/models") as response,
    ):
        body = await response.json()
    assert {m["id"] for m in body["data"]} == {BASE_NAME, ADAPTER_NAME}


@pytest.mark.parametrize("model", [BASE_NAME, ADAPTER_NAME])
async def test_chat_completion_schema(vllm_server: VllmServer, model: str) -> None:
    status, body = await chat(vllm_server, model, FACTS[0][0], max_tokens=16)
    assert status == 200, body
    assert body["model"] == model
    outcome = judge_response(0, FACTS[0][0], status, body, max_tokens=16)
    assert outcome.finish_reason in ("stop", "length")
    assert outcome.completion_tokens is not None
    assert 0 < outcome.completion_tokens <= 16


async def test_adapter_answers_what_it_memorised_and_the_base_does_not(vllm_server: VllmServer) -> None:
    question, answer = FACTS[0]
    _, adapted = await chat(vllm_server, ADAPTER_NAME, question)
    _, base = await chat(vllm_server, BASE_NAME, question)
    assert adapted["choices"][0]["message"]["content"] == answer
    assert adapted["choices"][0]["finish_reason"] == "stop"
    assert base["choices"][0]["message"]["content"] != answer


async def test_unknown_model_is_rejected(vllm_server: VllmServer) -> None:
    status, _ = await chat(vllm_server, "no-such-adapter", "hi")
    assert status == 404


async def test_smoke_passes_on_the_adapter(vllm_server: VllmServer) -> None:
    prompts = [question for question, _ in FACTS]
    verdict = await run_smoke_test(
        f"{vllm_server.base_url}/v1", ADAPTER_NAME, prompts, max_tokens=32, min_stop_fraction=1.0
    )
    assert verdict.passed, verdict.message
    assert verdict.reason is Reason.SMOKE_PASSED
    assert [o.finish_reason for o in verdict.outcomes] == ["stop"] * len(prompts)


async def test_smoke_fails_on_the_untrained_base_naming_the_prompt(vllm_server: VllmServer) -> None:
    """The random base never emits its EOS: the real-server version of the never-stopping fake."""
    prompts = [question for question, _ in FACTS]
    verdict = await run_smoke_test(
        f"{vllm_server.base_url}/v1", BASE_NAME, prompts, max_tokens=16, min_stop_fraction=1.0
    )
    assert verdict.status == "False"
    assert verdict.failing_prompt in prompts
    assert verdict.failing_prompt is not None
    assert verdict.failing_prompt in verdict.message
    assert "finish_reason=length after 16 tokens" in verdict.message


async def test_metrics_expose_every_series_we_query(vllm_server: VllmServer) -> None:
    # Requests first: some series only appear once a request has finished.
    for model in (BASE_NAME, ADAPTER_NAME):
        status, _ = await chat(vllm_server, model, "hello", max_tokens=4)
        assert status == 200
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(f"{vllm_server.base_url}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    assert missing_metrics(text) == []
    assert len(REQUIRED_VLLM_METRICS) >= 10
