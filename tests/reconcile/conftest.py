"""The fake router read back over HTTP by the ModelDeployment reconciler's whole-pass tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from tests.support.fake_router import FakeRouter
from tests.support.local_http import serving


@pytest.fixture
async def router() -> AsyncIterator[tuple[FakeRouter, str]]:
    fake = FakeRouter()
    app = web.Application()
    app.router.add_get("/kubetune/config", fake.handle)
    async with serving(app) as url:
        yield fake, f"{url}/kubetune/config"
