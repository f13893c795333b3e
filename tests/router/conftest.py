from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from tests.router.fakes import FakeOpenAI, RawBackend, Responder, RouterHarness, start_router

from kubetune.api.routerconfig import RouterConfig

BackendFactory = Callable[..., Awaitable[FakeOpenAI]]
RawBackendFactory = Callable[..., Awaitable[RawBackend]]
RouterFactory = Callable[..., Awaitable[RouterHarness]]


@pytest.fixture
async def backend() -> AsyncIterator[BackendFactory]:
    started: list[FakeOpenAI] = []

    async def start(name: str, **options: Any) -> FakeOpenAI:
        fake = await FakeOpenAI(name, **options).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        await fake.close()


@pytest.fixture
async def raw_backend() -> AsyncIterator[RawBackendFactory]:
    started: list[RawBackend] = []

    async def start(respond: Responder, **options: Any) -> RawBackend:
        fake = await RawBackend(respond, **options).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        await fake.close()


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[RouterFactory]:
    started: list[RouterHarness] = []

    async def start(config: RouterConfig, **options: Any) -> RouterHarness:
        harness = await start_router(config, tmp_path / f"router-{len(started)}.json", **options)
        started.append(harness)
        return harness

    yield start
    for harness in started:
        await harness.close()
