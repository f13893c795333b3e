from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ParamSpec, Protocol, Self, TypeVar

import pytest
from tests.router.fakes import FakeOpenAI, RawBackend, RouterHarness, start_router

from kubetune.api.routerconfig import RouterConfig

BackendFactory = Callable[..., Awaitable[FakeOpenAI]]
RawBackendFactory = Callable[..., Awaitable[RawBackend]]
RouterFactory = Callable[..., Awaitable[RouterHarness]]
P = ParamSpec("P")


class _Fake(Protocol):
    async def start(self) -> Self: ...

    async def close(self) -> None: ...


F = TypeVar("F", bound=_Fake)


@asynccontextmanager
async def _started(make: Callable[P, F]) -> AsyncIterator[Callable[P, Awaitable[F]]]:
    """A factory that makes a fake and starts it; what it started is closed at the end, in start order."""
    started: list[F] = []

    async def start(*args: P.args, **kwargs: P.kwargs) -> F:
        fake = await make(*args, **kwargs).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        await fake.close()


@pytest.fixture
async def backend() -> AsyncIterator[BackendFactory]:
    async with _started(FakeOpenAI) as start:
        yield start


@pytest.fixture
async def raw_backend() -> AsyncIterator[RawBackendFactory]:
    async with _started(RawBackend) as start:
        yield start


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
