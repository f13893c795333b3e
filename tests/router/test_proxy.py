"""The router binary over real loopback HTTP against fake OpenAI backends (black-box conformance)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter

import aiohttp
import pytest
from tests.router.conftest import BackendFactory, RouterFactory
from tests.router.fakes import sample
from tests.support.polling import aeventually

from kubetune.api.routerconfig import TOKEN_HEADER, RouterConfig, RouterTimeouts, RouterVariant


def two_variants(a_url: str, b_url: str, a: int = 70, b: int = 30, **extra: object) -> RouterConfig:
    return RouterConfig.model_validate(
        {
            "variants": [
                {"name": "stable", "weight": a, "endpoints": [a_url]},
                {"name": "canary", "weight": b, "endpoints": [b_url], **extra},
            ]
        }
    )


def single(url: str) -> RouterConfig:
    return RouterConfig(variants=(RouterVariant(name="stable", weight=100, endpoints=(url,)),))


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


REQUESTS = "kubetune_router_requests_total"


async def test_split_over_http_follows_weights(backend: BackendFactory, router: RouterFactory) -> None:
    a, b = await backend("stable"), await backend("canary")
    harness = await router(two_variants(a.url, b.url))
    results = await asyncio.gather(*(harness.chat({"x-user-id": f"u{i}"}) for i in range(1000)))
    served = Counter(
        variant for status, body, variant in results if status == 200 and body["backend"] == variant
    )
    assert sum(served.values()) == 1000
    assert abs(served["stable"] / 1000 - 0.70) <= 0.03


async def test_sticky_user_and_api_key(backend: BackendFactory, router: RouterFactory) -> None:
    a, b = await backend("stable"), await backend("canary")
    harness = await router(two_variants(a.url, b.url, 50, 50))
    for headers in ({"x-user-id": "alice"}, {"Authorization": "Bearer sk-123"}):
        seen = {(await harness.chat(headers))[2] for _ in range(20)}
        assert len(seen) == 1


async def test_override_header_and_model_rewrite(backend: BackendFactory, router: RouterFactory) -> None:
    a, b = await backend("stable"), await backend("canary")
    harness = await router(two_variants(a.url, b.url, 100, 0, servedModel="adapter-v2"))
    status, body, variant = await harness.chat({"x-kubetune-variant": "canary"})
    assert (status, variant, body["backend"], body["model"]) == (200, "canary", "canary", "adapter-v2")
    assert b.requests[-1]["body"]["messages"] == [{"role": "user", "content": "hi"}]
    status, body, variant = await harness.chat()
    assert (status, variant, body["model"]) == (200, "stable", "base")
    status, body, _ = await harness.chat({"x-kubetune-variant": "missing"})
    assert status == 400


async def test_sse_chunks_arrive_before_the_backend_finishes(
    backend: BackendFactory, router: RouterFactory
) -> None:
    release = asyncio.Event()
    a = await backend("stable", hold_after_first_chunk=release, stream_chunks=3)
    harness = await router(single(a.url))
    payload = {"model": "m", "stream": True, "messages": []}
    async with harness.session.post(harness.url + "/v1/chat/completions", json=payload) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=30)
        assert b'"t0"' in first
        assert a.finished_streams == 0
        release.set()
        rest = await response.content.read()
    assert rest.endswith(b"data: [DONE]\n\n")
    assert b'"t2"' in rest
    labels = {"source": "user", "variant": "stable"}
    assert await harness.metric("kubetune_router_time_to_first_token_seconds_count", **labels) == 1
    assert await harness.metric("kubetune_router_output_tokens_total", **labels) == 3


async def test_dead_backend_gets_no_traffic_and_no_5xx(
    backend: BackendFactory, router: RouterFactory
) -> None:
    a = await backend("stable")
    harness = await router(two_variants(a.url, closed_port_url(), 30, 70))
    results = await asyncio.gather(*(harness.chat({"x-user-id": f"u{i}"}) for i in range(200)))
    assert Counter(status for status, _, _ in results) == {200: 200}
    assert {variant for _, _, variant in results} == {"stable"}
    text = await harness.metrics()
    refused = sample(text, "kubetune_router_upstream_errors_total", kind="connect", variant="canary")
    assert refused is not None
    assert refused >= 1
    # Every attempt counts against its variant: the refused canary attempts are canary errors.
    assert sample(text, REQUESTS, code="502", source="user", variant="canary") == refused
    assert sample(text, REQUESTS, code="200", source="user", variant="stable") == 200
    assert (sample(text, "kubetune_router_variant_skipped_total", variant="canary") or 0) >= 1
    assert sample(text, "kubetune_router_variant_ready", variant="canary") == 0


async def test_a_pinned_request_is_never_failed_over_and_counts_against_its_variant(
    backend: BackendFactory, router: RouterFactory
) -> None:
    """The analysis' synthetic requests are pinned to a variant: a dead canary answers them with errors
    that count as the canary's, first the refused attempt, then every refusal while it cools down."""
    a = await backend("stable")
    harness = await router(two_variants(a.url, closed_port_url(), 50, 50), token="t")
    pin = {"x-kubetune-variant": "canary", "x-kubetune-synthetic": "1", TOKEN_HEADER: "t"}
    results = [await harness.chat(pin) for _ in range(5)]
    assert all(status >= 500 for status, _, _ in results), results
    assert {variant for _, _, variant in results} == {""}, "never answered by the stable variant"
    assert a.requests == []
    text = await harness.metrics()
    refused = sample(text, REQUESTS, code="502", source="synthetic", variant="canary") or 0
    cooling = sample(text, REQUESTS, code="503", source="synthetic", variant="canary") or 0
    assert refused >= 1
    assert refused + cooling == 5


async def test_hot_reload_mid_stream_keeps_the_stream(backend: BackendFactory, router: RouterFactory) -> None:
    release = asyncio.Event()
    a = await backend("stable", hold_after_first_chunk=release)
    b = await backend("canary")
    harness = await router(two_variants(a.url, b.url, 100, 0))
    payload = {"model": "m", "stream": True, "messages": []}
    async with harness.session.post(harness.url + "/v1/chat/completions", json=payload) as response:
        await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=30)
        # The stable variant leaves the split entirely while its stream is open.
        harness.write_config(
            RouterConfig(variants=(RouterVariant(name="canary", weight=100, endpoints=(b.url,)),))
        )

        async def reloaded() -> bool:
            return await harness.loaded_weights() == {"canary": 100}

        await aeventually(reloaded, interval=0.05, message="router did not reload")
        status, _, variant = await harness.chat()
        assert (status, variant) == (200, "canary")
        release.set()
        rest = await response.content.read()
    assert rest.endswith(b"data: [DONE]\n\n")
    assert a.finished_streams == 1
    assert await harness.metric("kubetune_router_config_reloads_total", result="ok") == 1


async def test_invalid_config_file_keeps_the_previous_config(
    backend: BackendFactory, router: RouterFactory
) -> None:
    a, b = await backend("stable"), await backend("canary")
    harness = await router(two_variants(a.url, b.url))
    harness.config_path.write_text(json.dumps({"variants": [{"name": "x", "weight": 500}]}))

    async def rejected() -> bool:
        return await harness.metric("kubetune_router_config_reloads_total", result="error") == 1

    await aeventually(rejected, interval=0.05, message="bad config not reported")
    assert await harness.loaded_weights() == {"stable": 70, "canary": 30}


async def test_synthetic_traffic_is_labelled_apart(backend: BackendFactory, router: RouterFactory) -> None:
    a, b = await backend("stable"), await backend("canary", fail_every=2)
    harness = await router(two_variants(a.url, b.url, 100, 0))
    for _ in range(4):
        await harness.chat({"x-kubetune-variant": "canary", "x-kubetune-synthetic": "1"})
    await harness.chat()
    text = await harness.metrics()
    assert sample(text, REQUESTS, code="500", source="synthetic", variant="canary") == 2
    assert sample(text, REQUESTS, code="200", source="synthetic", variant="canary") == 2
    assert sample(text, REQUESTS, code="200", source="user", variant="stable") == 1
    assert sample(text, "kubetune_router_output_tokens_total", source="user", variant="stable") == 7


async def test_body_limit_and_upstream_timeout(backend: BackendFactory, router: RouterFactory) -> None:
    slow = await backend("stable", latency_s=5)
    config = RouterConfig(
        variants=(RouterVariant(name="stable", weight=100, endpoints=(slow.url,)),),
        max_body_bytes=2048,
        max_attempts=1,
        timeouts=RouterTimeouts(read_s=0.2),
    )
    harness = await router(config)
    status, body, _ = await harness.chat(messages=[{"role": "user", "content": "x" * 4096}])
    assert status == 413
    assert slow.requests == []
    status, body, _ = await harness.chat()
    assert status == 504
    assert "timed out" in body["error"]["message"]


async def test_health_endpoints(backend: BackendFactory, router: RouterFactory) -> None:
    harness = await router(two_variants(closed_port_url(), closed_port_url()))
    async with harness.session.get(harness.url + "/healthz") as response:
        assert response.status == 200
    async with harness.session.get(harness.url + "/readyz") as response:
        assert response.status == 200
    status, _, _ = await harness.chat()
    assert status == 502
    async with harness.session.get(harness.url + "/readyz") as response:
        assert response.status == 503


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_non_post_paths_are_proxied(
    backend: BackendFactory, router: RouterFactory, method: str
) -> None:
    a = await backend("stable")
    harness = await router(single(a.url))
    async with harness.session.request(method, harness.url + "/v1/models") as response:
        # The fake serves no /v1/models: the upstream's own 404/405 must come back unchanged.
        assert response.status in (404, 405)
        assert response.headers["x-kubetune-served-by"] == "stable"


async def test_upstream_dying_mid_stream_truncates_and_counts_502(
    backend: BackendFactory, router: RouterFactory
) -> None:
    a = await backend("stable", die_after_first_chunk=True)
    harness = await router(single(a.url))
    payload = {"model": "m", "stream": True, "messages": []}
    async with harness.session.post(harness.url + "/v1/chat/completions", json=payload) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.content.read()
    text = await harness.metrics()
    assert sample(text, REQUESTS, code="502", source="user", variant="stable") == 1
    assert sample(text, "kubetune_router_upstream_errors_total", kind="stream", variant="stable") == 1


async def test_series_carry_the_model_deployment_and_the_traffic_source(
    backend: BackendFactory, router: RouterFactory
) -> None:
    a, b = await backend("stable"), await backend("canary")
    config = two_variants(a.url, b.url, 100, 0).model_copy(update={"model_deployment": "chat"})
    harness = await router(config)
    await harness.chat({"x-user-id": "u1"})
    status, _, served_by = await harness.chat({"x-kubetune-variant": "canary", "x-kubetune-synthetic": "1"})
    assert (status, served_by) == (200, "canary")
    text = await harness.metrics()
    md = {"model_deployment": "chat"}
    assert sample(text, REQUESTS, code="200", source="user", variant="stable", **md) == 1
    assert sample(text, REQUESTS, code="200", source="synthetic", variant="canary", **md) == 1
    assert sample(text, "kubetune_router_variant_weight", variant="stable", **md) == 100
    assert 'source="user",variant="canary"' not in text
