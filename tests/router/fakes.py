"""Fake OpenAI-compatible backends and the router binary, all on real loopback sockets.

The router under test is the Go program in router/ (built by router/build.sh, cached by source hash),
started as a process exactly as its container runs it: these tests are black-box conformance tests of
the data path, whatever it is written in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from kubetune.api.routerconfig import RouterConfig

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def router_binary() -> Path:
    """The router built from the current sources (`KUBETUNE_ROUTER_BINARY` points at another build)."""
    override = os.environ.get("KUBETUNE_ROUTER_BINARY")
    if override:
        return Path(override)
    built = subprocess.run(
        [str(REPO / "router/build.sh")], capture_output=True, text=True, check=False, timeout=900
    )
    if built.returncode != 0:
        raise RuntimeError(f"router/build.sh failed:\n{built.stderr[-4000:]}")
    return Path(built.stdout.strip().splitlines()[-1])


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
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append({"body": body, "headers": dict(request.headers), "peer": peer})
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


Responder = Callable[[bytes], Awaitable[bytes | None]]
"""Gets the raw request head; returns the raw bytes to answer with, or None to close without answering."""


@dataclass
class RawBackend:
    """An HTTP/1.1 peer written by hand, for what a framework would not do (bad headers, resets)."""

    respond: Responder
    close_after_answer: bool = False
    """Hang up right after each answer, although it said keep-alive (a restart between requests)."""
    heads: list[bytes] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> RawBackend:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if match:
                    await reader.readexactly(int(match.group(1)))
                self.heads.append(head)
                answer = await self.respond(head)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@dataclass
class RouterHarness:
    """The router binary on a loopback port, configured from a file it polls."""

    config_path: Path
    process: asyncio.subprocess.Process
    port: int
    session: aiohttp.ClientSession
    log: list[str]
    token_path: Path | None = None
    _drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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

    async def metric(self, name: str, **labels: str) -> float | None:
        """The sample `name` with exactly `labels` (None when absent)."""
        return sample(await self.metrics(), name, **labels)

    async def close(self) -> None:
        await self.session.close()
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


async def start_router(
    config: RouterConfig,
    config_path: Path,
    reload_interval_s: float = 0.05,
    token: str | None = None,
    args: Sequence[str] = (),
) -> RouterHarness:
    """Start the binary on a free port (it prints the address it bound); `token` turns on --token-file."""
    config_path.write_text(config.to_json())
    argv = [
        str(router_binary()),
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--reload-interval",
        str(reload_interval_s),
        *args,
    ]
    token_path = None
    if token is not None:
        token_path = config_path.with_suffix(".token")
        token_path.write_text(token + "\n")
        argv += ["--token-file", str(token_path)]
    process = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    log: list[str] = []
    port = None
    async with asyncio.timeout(30):
        while port is None:
            line = (await process.stderr.readline()).decode()
            if not line:
                raise RuntimeError(f"router exited {await process.wait()}:\n{''.join(log)}")
            log.append(line)
            match = re.match(r"listening on .*:(\d+)$", line.strip())
            if match:
                port = int(match.group(1))

    async def drain(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            log.append(line.decode())

    harness = RouterHarness(config_path, process, port, aiohttp.ClientSession(), log, token_path)
    harness._drain = asyncio.create_task(drain(process.stderr))
    return harness
