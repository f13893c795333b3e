"""Fake OpenAI-compatible backends and a router harness, all on real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from kubetune.api.routerconfig import RouterConfig
from kubetune.router.app import create_app
from kubetune.router.source import FileConfigSource


@dataclass
class FakeOpenAI:
    """Answers chat/completions as `name`; echoes the `model` it received; optionally fails or holds."""

    name: str
    fail_every: int = 0
    latency_s: float = 0.0
    stream_chunks: int = 4
    hold_after_first_chunk: asyncio.Event | None = None
    die_after_first_chunk: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    finished_streams: int = 0
    _server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_post("/v1/completions", self._complete)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"body": body, "headers": dict(request.headers)})
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.fail_every and len(self.requests) % self.fail_every == 0:
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        model = body.get("model")
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "cmpl-1",
                    "object": "chat.completion",
                    "model": model,
                    "backend": self.name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10},
                }
            )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for index in range(self.stream_chunks):
            chunk = {"model": model, "backend": self.name, "choices": [{"delta": {"content": f"t{index}"}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if index == 0 and self.hold_after_first_chunk is not None:
                await self.hold_after_first_chunk.wait()
            if index == 0 and self.die_after_first_chunk:
                assert request.transport is not None
                request.transport.close()
                return response
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.finished_streams += 1
        return response


@dataclass
class RouterHarness:
    """The real router app on a loopback port, configured from a file it polls."""

    config_path: Path
    server: TestServer
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def write_config(self, config: RouterConfig) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(config.to_json())
        tmp.replace(self.config_path)

    async def loaded_weights(self) -> dict[str, int]:
        async with self.session.get(self.url + "/kubetune/config") as response:
            document = await response.json()
        return {v["name"]: v["weight"] for v in document["config"]["variants"]}

    async def chat(
        self, headers: dict[str, str] | None = None, **body: Any
    ) -> tuple[int, dict[str, Any], str]:
        """POST a non-streaming chat completion; returns status, JSON body and the serving variant header."""
        payload = {"model": "base", "messages": [{"role": "user", "content": "hi"}], **body}
        async with self.session.post(
            self.url + "/v1/chat/completions", json=payload, headers=headers
        ) as resp:
            return resp.status, await resp.json(), resp.headers.get("x-kubetune-served-by", "")

    async def metrics(self) -> str:
        async with self.session.get(self.url + "/metrics") as response:
            return await response.text()


async def start_router(
    config: RouterConfig, config_path: Path, reload_interval_s: float = 0.05
) -> RouterHarness:
    config_path.write_text(config.to_json())
    source = FileConfigSource(config_path, reload_interval_s)
    server = TestServer(create_app(source.load(), source=source), host="127.0.0.1")
    await server.start_server()
    return RouterHarness(config_path, server, aiohttp.ClientSession())
