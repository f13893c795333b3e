"""Outbound HTTP against a local server that misbehaves: redirects, endless streams, chatty errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from tests.support.local_http import serving

from kubetune.analysis.prometheus import PrometheusClient, PrometheusError
from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.outbound import OutboundError, post, url_allowed
from kubetune.planning.modeldeployment import RenderSettings, prometheus_url
from kubetune.serving.smoke import run_smoke_test
from kubetune.serving.synthetic import SyntheticLoad, _send
from kubetune.settings import OperatorSettings

SECRET = "s3cr3t-internal-body"


@dataclass
class Server:
    url: str
    hits: list[str] = field(default_factory=list)
    streamed: list[int] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server("")

    async def internal(request: web.Request) -> web.Response:
        state.hits.append(request.method)
        return web.json_response({"status": "success", "data": {"resultType": "scalar", "result": [0, "1"]}})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/internal")

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        sent = 0
        try:
            while True:
                await response.write(b"x" * 65536)
                sent += 65536
                state.streamed.append(sent)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"{" + b" " * (3 << 20) + b"}", content_type="application/json")

    async def chatty_error(request: web.Request) -> web.Response:
        return web.json_response({"status": "error", "error": SECRET}, status=400)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})

    app = web.Application()
    for path, handler in {
        "/internal": internal,
        "/redirect": redirect,
        "/endless": endless,
        "/huge": huge,
        "/error": chatty_error,
        "/slow": slow,
    }.items():
        app.router.add_route("*", path + "{tail:.*}", handler)
    async with serving(app) as url:
        state.url = url
        yield state


async def test_redirects_are_not_followed(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(OutboundError, match="HTTP 302: redirect not followed"):
            await post(session, server.url + "/redirect", timeout_s=5, data={"q": "1"})
    assert server.hits == [], "the redirect target was reached"


async def test_an_endless_body_is_cut_at_the_cap(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(OutboundError, match="exceeds the 1048576-byte cap"):
            await post(session, server.url + "/endless", timeout_s=10, limit=1 << 20)
    # The server was stopped near the cap, not streamed to for the whole timeout.
    await asyncio.sleep(0.2)
    assert server.streamed
    assert server.streamed[-1] < 64 << 20


async def test_a_declared_oversized_body_is_refused_before_reading(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(OutboundError, match="exceeds the 1048576-byte cap"):
            await post(session, server.url + "/huge", timeout_s=10)


async def test_a_slow_server_times_out(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(OutboundError, match="timed out"):
            await post(session, server.url + "/slow", timeout_s=0.3)


@pytest.mark.parametrize("path", ["/redirect", "/endless", "/huge", "/error"])
async def test_prometheus_errors_never_echo_the_body(server: Server, path: str) -> None:
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(server.url + path, session, timeout_s=5)
        with pytest.raises(PrometheusError) as caught:
            await client.query("up")
    assert SECRET not in str(caught.value)
    assert server.url + path in str(caught.value), "the message names what failed"
    assert server.hits == []


async def test_prometheus_outside_the_allowlist_is_never_called(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PrometheusError, match="not on the operator's allowlist"):
            PrometheusClient(server.url + "/internal", session, allowed=["http://prometheus.monitoring:9090"])
        allowed = PrometheusClient(server.url + "/internal", session, allowed=[server.url])
        assert await allowed.query("up") == 1.0
    assert server.hits == ["POST"]


async def test_smoke_test_refuses_redirects_and_endless_bodies(server: Server) -> None:
    for path, problem in [("/redirect", "redirect not followed"), ("/endless", "byte cap")]:
        verdict = await run_smoke_test(
            server.url + path, "m", ["hi"], max_tokens=8, min_stop_fraction=0.5, timeout_s=10
        )
        assert not verdict.passed
        assert problem in verdict.message
    assert server.hits == []


async def test_synthetic_traffic_stops_reading_an_endless_stream(server: Server) -> None:
    load = SyntheticLoad(server.url + "/endless", ("a",), ("hi",), 1.0, token="tok")
    async with aiohttp.ClientSession() as session:
        await asyncio.wait_for(_send(session, load, "a", "hi"), timeout=20)
        await _send(session, SyntheticLoad(server.url + "/redirect", ("a",), ("hi",), 1.0), "a", "hi")
    assert server.hits == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://prometheus.monitoring.svc:9090", True),
        ("http://prometheus.monitoring.svc:9090/", True),
        ("http://PROMETHEUS.monitoring.svc:9090/prom", True),
        ("https://prometheus.monitoring.svc:9090", False),
        ("http://prometheus.monitoring.svc:9091", False),
        ("http://prometheus.monitoring.svc", False),
        ("http://prometheus.monitoring.svc.evil.example:9090", False),
        ("http://user@prometheus.monitoring.svc:9090", False),
        ("http://prometheus.monitoring.svc:9090?x=1", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://thanos.monitoring.svc/api", True),
        ("http://thanos.monitoring.svc/apiv2", False),
    ],
)
def test_url_allowlist(url: str, allowed: bool) -> None:
    allowlist = ["http://prometheus.monitoring.svc:9090", "http://thanos.monitoring.svc/api"]
    assert url_allowed(url, allowlist) is allowed


def test_settings_allowlist() -> None:
    chart = OperatorSettings.from_env(
        {"KUBETUNE_PROMETHEUS_URLS": '["http://a:9090"]', "KUBETUNE_PROMETHEUS_URL": "http://b:9090"}
    )
    assert chart.prometheus_allowlist == ("http://a:9090", "http://b:9090")
    assert OperatorSettings.from_env({}).prometheus_allowlist == (), "nothing allowed by default"
    dev = OperatorSettings.from_env({"KUBETUNE_SMOKE_URL_OVERRIDE": "allow"})
    assert dev.prometheus_allowlist is None


@pytest.mark.parametrize(
    ("operator_url", "allowlist", "expected"),
    [
        (None, ("http://prometheus.monitoring.svc:9090",), "http://prometheus.monitoring.svc:9090"),
        (None, ("http://other:9090",), None),
        (None, None, "http://prometheus.monitoring.svc:9090"),
        ("http://ours:9090", ("http://other:9090",), "http://ours:9090"),
    ],
)
def test_keda_queries_the_spec_prometheus_only_when_allowed(
    operator_url: str | None, allowlist: tuple[str, ...] | None, expected: str | None
) -> None:
    spec = ModelDeploymentSpec.model_validate(
        {
            "variants": [
                {"name": "a", "model": {"uri": "org/a"}},
                {"name": "b", "model": {"uri": "org/b"}},
            ],
            "traffic": {
                "canary": {
                    "stableVariant": "a",
                    "canaryVariant": "b",
                    "analysis": {"prometheusUrl": "http://prometheus.monitoring.svc:9090"},
                }
            },
        }
    )
    settings = RenderSettings("t", "v", operator_url, prometheus_allowlist=allowlist)
    assert prometheus_url(spec, settings) == expected
