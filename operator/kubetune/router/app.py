"""The router's aiohttp application factory (no module-level app: tests build as many as they need)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubetune.api.routerconfig import RouterConfig
from kubetune.router.metrics import RouterMetrics
from kubetune.router.policy import RoutingPolicy, WeightedStickyPolicy
from kubetune.router.proxy import ProxyHandler
from kubetune.router.source import FileConfigSource
from kubetune.router.state import RouterState

SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("kubetune_router_session", aiohttp.ClientSession)
STATE: web.AppKey[RouterState] = web.AppKey("kubetune_router_state", RouterState)

MAX_BODY_CEILING = 1024**3
CONFIG_PATH = "/kubetune/config"
"""Read-back of the loaded config: the operator reports these weights as observed."""


def create_app(
    config: RouterConfig,
    *,
    source: FileConfigSource | None = None,
    policy: RoutingPolicy | None = None,
    metrics: RouterMetrics | None = None,
) -> web.Application:
    """Build the router. `source` hot-reloads the config; `policy` defaults to weighted sticky routing."""
    metrics = metrics if metrics is not None else RouterMetrics(model_deployment=config.model_deployment)
    state = RouterState(config, metrics)
    # The configured limit is enforced per request (it may change on reload); this is only the ceiling.
    app = web.Application(client_max_size=MAX_BODY_CEILING)
    app[STATE] = state
    app.cleanup_ctx.append(_client_session)
    if source is not None:
        app.cleanup_ctx.append(_watch(source, state))

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if state.snapshot().candidates():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="no variant can take traffic\n")

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def loaded_config(_: web.Request) -> web.Response:
        snapshot = state.snapshot()
        return web.json_response(
            {
                "config": json.loads(state.config.to_json()),
                "routable": {t.name: t.routable for t in snapshot.variants},
            }
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get(CONFIG_PATH, loaded_config)
    app.router.add_route(
        "*", "/{tail:.*}", ProxyHandler(state, policy or WeightedStickyPolicy(), metrics, SESSION)
    )
    return app


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=10, keepalive_timeout=30)
    # auto_decompress off: bodies pass through byte for byte, with their content-encoding.
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
    ) as session:
        # One session for every config generation: a reload never touches in-flight connections.
        app[SESSION] = session
        yield


def _watch(source: FileConfigSource, state: RouterState) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(
            source.poll(
                state.install, lambda result: state.metrics.labels(state.metrics.reloads, result).inc()
            )
        )
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run
