"""Synthetic traffic for low-traffic canaries: held-out prompts sent through the router to each variant.

A canary that sees a few requests an hour never reaches `minRequests`, so its analysis stays
inconclusive forever. With `analysis.syntheticTraffic` on, the operator sends the FineTuneJob's held-out
prompts through the router at a fixed rate per variant: pinned to the variant with the override header
and marked with the synthetic header, both signed with the operator's token header (the router ignores
them otherwise), so the router labels them `source="synthetic"` (dashboards show
`source="user"`, the analysis counts both). Requests are streamed so that time to first token is
measured as for chat clients. The generator never retries: a failure is a sample the analysis must see.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from kubetune.api.routerconfig import OVERRIDE_HEADER, SYNTHETIC_HEADER, TOKEN_HEADER
from kubetune.metrics import SYNTHETIC_REQUESTS
from kubetune.outbound import STREAM_MAX_BYTES, OutboundError, post

log = logging.getLogger("kubetune.synthetic")
REQUEST_TIMEOUT_S = 120.0
MAX_IN_FLIGHT = 256


@dataclass(frozen=True)
class SyntheticLoad:
    """What to send: equal rates to each variant, through one router."""

    url: str
    """The router's OpenAI API base URL (ends with /v1)."""
    variants: tuple[str, ...]
    prompts: tuple[str, ...]
    requests_per_second: float
    """Per variant."""
    max_tokens: int = 64
    token: str | None = field(default=None, repr=False)
    """The router's shared token (from its Secret); kept out of repr so a logged load never shows it."""

    @property
    def max_in_flight(self) -> int:
        """Enough for ten seconds of slow responses; beyond that, sending more only piles up."""
        return min(MAX_IN_FLIGHT, max(4, math.ceil(self.requests_per_second * len(self.variants) * 10)))


def request_body(load: SyntheticLoad, variant: str, prompt: str) -> dict[str, object]:
    return {
        "model": variant,  # the router rewrites it to what the variant serves
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": load.max_tokens,
        "stream": True,
    }


def request_headers(variant: str, token: str | None = None) -> dict[str, str]:
    headers = {OVERRIDE_HEADER: variant, SYNTHETIC_HEADER: "1"}
    if token is not None:
        headers[TOKEN_HEADER] = token
    return headers


async def _send(session: aiohttp.ClientSession, load: SyntheticLoad, variant: str, prompt: str) -> None:
    result = "error"
    try:
        # Read the stream to its end as a client would, but never past a cap or through a redirect
        # (the token header must reach the router only).
        response = await post(
            session,
            load.url.rstrip("/") + "/chat/completions",
            timeout_s=REQUEST_TIMEOUT_S,
            limit=STREAM_MAX_BYTES,
            json=request_body(load, variant, prompt),
            headers=request_headers(variant, load.token),
        )
        result = str(response.status)
    except OutboundError as exc:
        log.debug("synthetic request to %s via %s failed: %s", variant, load.url, exc)
    finally:
        SYNTHETIC_REQUESTS.labels(variant, result).inc()


async def generate(load: SyntheticLoad, session: aiohttp.ClientSession | None = None) -> None:
    """Send until cancelled: one request per variant every 1/rate seconds, prompts in turn."""
    own_session = session is None
    active = session or aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=load.max_in_flight))
    prompts = itertools.cycle(load.prompts)
    in_flight: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(load.max_in_flight)
    loop = asyncio.get_running_loop()
    period = 1.0 / load.requests_per_second
    next_at = loop.time()
    try:
        while True:
            for variant in load.variants:
                if gate.locked():
                    SYNTHETIC_REQUESTS.labels(variant, "skipped").inc()
                    continue
                await gate.acquire()
                task = loop.create_task(_send(active, load, variant, next(prompts)))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _: gate.release())
            # Keep the rate, but after a stall (a blocked loop) resume at it rather than bursting to catch up.
            next_at = max(next_at + period, loop.time() - period)
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    finally:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
        if own_session:
            await active.close()


def plan_prompts(test_prompts: Sequence[str], fallback: Sequence[str]) -> tuple[str, ...]:
    """The FineTuneJob's held-out prompts when it reported some, else the smoke-test prompts."""
    return tuple(test_prompts) or tuple(fallback)
