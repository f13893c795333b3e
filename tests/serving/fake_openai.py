"""A fake OpenAI chat server whose generations never stop: every answer runs to the token budget.

It models the classic post-fine-tuning failure (the model never emits its EOS): every response
spends the whole `max_tokens` budget and ends with finish_reason=length.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from tests.support.local_http import serving


def _completion(model: str, text: str, finish: str, tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5},
    }


async def _chat(request: web.Request) -> web.Response:
    body = await request.json()
    budget = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
    model = str(body["model"])
    return web.json_response(_completion(model, "and then " * budget, "length", budget))


@asynccontextmanager
async def never_stopping_server() -> AsyncIterator[str]:
    """Serve on a free loopback port; yield the OpenAI base URL (…/v1)."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _chat)
    async with serving(app) as url:
        yield f"{url}/v1"
