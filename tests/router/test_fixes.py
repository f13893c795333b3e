"""What the compiled router does that the Python one got wrong (issue 14), tested against the binary."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import aiohttp
from tests.router.conftest import BackendFactory, RawBackendFactory, RouterFactory
from tests.router.fakes import router_binary, sample
from tests.router.test_proxy import closed_port_url
from tests.support.polling import aeventually

from kubetune.api.routerconfig import TOKEN_HEADER, RouterConfig, RouterTimeouts, RouterVariant

CHAT = "/v1/chat/completions"
PAYLOAD = {"model": "base", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = json.dumps({"choices": [], "usage": {"completion_tokens": 1}}).encode()


def one_variant(*endpoints: str, **options: object) -> RouterConfig:
    return RouterConfig(
        variants=(RouterVariant(name="stable", weight=100, endpoints=endpoints),),
        **options,  # type: ignore[arg-type]
    )


def http_answer(body: bytes, *headers: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def hang_up(_: bytes) -> bytes | None:
    return None


async def test_no_retry_once_the_request_reached_an_upstream(
    raw_backend: RawBackendFactory, backend: BackendFactory, router: RouterFactory
) -> None:
    """An upstream that read the request and hung up may be generating: the request is not replayed."""
    dropper, good = await raw_backend(hang_up), await backend("good")
    harness = await router(one_variant(dropper.url, good.url))
    status, _body, _ = await harness.chat()
    assert status == 502
    assert len(dropper.heads) == 1
    assert good.requests == []
    assert await harness.metric("kubetune_router_upstream_errors_total", kind="reset", variant="stable") == 1


async def test_no_retry_after_a_read_timeout(backend: BackendFactory, router: RouterFactory) -> None:
    slow, fast = await backend("slow", latency_s=5), await backend("fast")
    harness = await router(one_variant(slow.url, fast.url, timeouts=RouterTimeouts(read_s=0.2)))
    status, body, _ = await harness.chat()
    assert status == 504
    assert "timed out" in body["error"]["message"]
    assert fast.requests == []
    text = await harness.metrics()
    assert sample(text, "kubetune_router_upstream_errors_total", kind="timeout", variant="stable") == 1
    assert sample(text, "kubetune_router_requests_total", code="504", source="user", variant="stable") == 1


async def test_connect_errors_are_retried_on_the_next_endpoint(
    backend: BackendFactory, router: RouterFactory
) -> None:
    good = await backend("good")
    harness = await router(one_variant(closed_port_url(), good.url))
    statuses = [(await harness.chat())[0] for _ in range(4)]
    assert statuses == [200] * 4
    assert len(good.requests) == 4


async def test_idle_upstream_connections_close_before_the_upstream_closes_them(
    backend: BackendFactory, router: RouterFactory
) -> None:
    a = await backend("stable")
    harness = await router(one_variant(a.url), args=["--upstream-idle-timeout", "0.3"])
    await harness.chat()
    await harness.chat()
    assert a.requests[0]["peer"] == a.requests[1]["peer"], "a busy connection is reused"
    # Waiting past the idle timeout is the point here: no condition to poll for.
    await asyncio.sleep(1.0)
    await harness.chat()
    assert a.requests[2]["peer"] != a.requests[1]["peer"], "an idle connection is not reused"


async def test_a_connection_the_upstream_closed_while_idle_is_never_used(
    raw_backend: RawBackendFactory, router: RouterFactory
) -> None:
    async def answer(_: bytes) -> bytes:
        return http_answer(ANSWER)

    upstream = await raw_backend(answer, close_after_answer=True)
    harness = await router(one_variant(upstream.url))
    # Each answer is followed by the upstream's FIN: the pooled connection must be seen dead, not
    # written to (the request would be lost after it left the router, and is not retried then).
    statuses = [(await harness.chat())[0] for _ in range(5)]
    assert statuses == [200] * 5
    assert len(upstream.heads) == 5


async def test_default_upstream_idle_timeout_is_below_vllms_keep_alive() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(router_binary()), "--help", stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    help_text = err.decode()
    line = help_text[help_text.index("-upstream-idle-timeout") :]
    default = float(line[line.index("(default ") + 9 : line.index(")")])
    # vLLM's HTTP server (uvicorn) closes idle keep-alive connections after 5 s.
    assert 0 < default < 5


async def test_compressed_and_oversized_bodies_are_refused(
    backend: BackendFactory, router: RouterFactory
) -> None:
    a = await backend("stable")
    harness = await router(one_variant(a.url, max_body_bytes=2048))
    # A small gzip body would inflate past the limit: the limit is on what the upstream parses.
    bomb = gzip.compress(json.dumps({**PAYLOAD, "pad": "x" * 100_000}).encode())
    assert len(bomb) < 2048
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with harness.session.post(harness.url + CHAT, data=bomb, headers=headers) as response:
        assert response.status == 415

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1024

    # No Content-Length (chunked): counted as it streams in.
    async with harness.session.post(harness.url + CHAT, data=chunks()) as response:
        assert response.status == 413
    assert a.requests == []
    text = await harness.metrics()
    assert sample(text, "kubetune_router_routing_errors_total", code="415") == 1
    assert sample(text, "kubetune_router_routing_errors_total", code="413") == 1


async def test_slow_request_headers_are_cut_off(backend: BackendFactory, router: RouterFactory) -> None:
    a = await backend("stable")
    harness = await router(one_variant(a.url), args=["--read-header-timeout", "0.3"])
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: router\r\n")
    await writer.drain()
    # The router closes the connection (possibly after a 408) instead of waiting for the rest.
    rest = await asyncio.wait_for(reader.read(), timeout=10)
    assert rest == b"" or rest.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_concurrency_cap_refuses_at_once(backend: BackendFactory, router: RouterFactory) -> None:
    release = asyncio.Event()
    a = await backend("stable", hold_after_first_chunk=release)
    harness = await router(one_variant(a.url), args=["--max-concurrent-requests", "1"])
    stream = {**PAYLOAD, "stream": True}
    async with harness.session.post(harness.url + CHAT, json=stream) as held:
        await asyncio.wait_for(held.content.readuntil(b"\n\n"), timeout=30)
        async with harness.session.post(harness.url + CHAT, json=PAYLOAD) as refused:
            assert refused.status == 503
            assert refused.headers["Retry-After"] == "1"
        release.set()
        await held.read()
    assert (await harness.chat())[0] == 200
    assert await harness.metric("kubetune_router_routing_errors_total", code="503") == 1


async def test_only_the_openai_api_is_forwarded(backend: BackendFactory, router: RouterFactory) -> None:
    a = await backend("stable")
    harness = await router(one_variant(a.url))
    for path in ("/", "/admin", "/v1x/chat/completions", "/metrics/extra"):
        async with harness.session.post(harness.url + path, json=PAYLOAD) as response:
            assert response.status == 404, path
            assert "x-kubetune-served-by" not in response.headers
    # Dot segments an upstream would resolve outside /v1, sent raw (a client library would resolve them).
    for raw in ("/v1/../admin", "/v1/%2e%2e/admin"):
        reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
        writer.write(f"GET {raw} HTTP/1.1\r\nHost: router\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = (await asyncio.wait_for(reader.readline(), timeout=10)).decode()
        writer.close()
        assert status_line.split()[1] == "404", (raw, status_line)
    assert a.requests == []
    assert (await harness.chat())[0] == 200


async def test_hop_by_hop_headers_are_dropped_both_ways(
    raw_backend: RawBackendFactory, router: RouterFactory
) -> None:
    async def answer(_: bytes) -> bytes:
        return http_answer(ANSWER, "Connection: X-Internal", "X-Internal: secret", "X-Kept: yes")

    upstream = await raw_backend(answer)
    harness = await router(one_variant(upstream.url))
    headers = {
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "1",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic eA==",
        "X-Kept": "1",
    }
    async with harness.session.post(harness.url + CHAT, json=PAYLOAD, headers=headers) as response:
        assert response.status == 200
        assert response.headers["X-Kept"] == "yes"
        assert "X-Internal" not in response.headers
    head = upstream.heads[0].decode().lower()
    assert "x-kept: 1" in head
    for dropped in ("x-hop:", "keep-alive:", "proxy-authorization:"):
        assert dropped not in head, dropped


async def test_override_and_synthetic_headers_need_the_operators_token(
    backend: BackendFactory, router: RouterFactory
) -> None:
    a, b = await backend("stable"), await backend("canary")
    config = RouterConfig.model_validate(
        {
            "variants": [
                {"name": "stable", "weight": 100, "endpoints": [a.url]},
                {"name": "canary", "weight": 0, "endpoints": [b.url]},
            ]
        }
    )
    harness = await router(config, token="s3cret")
    pin = {"x-kubetune-variant": "canary", "x-kubetune-synthetic": "1"}
    for token in (None, "wrong"):
        headers = pin if token is None else {**pin, TOKEN_HEADER: token}
        status, _, variant = await harness.chat(headers)
        # A client cannot pin itself to a 0% variant or hide its traffic as synthetic.
        assert (status, variant) == (200, "stable")
    status, _, variant = await harness.chat({**pin, TOKEN_HEADER: "s3cret"})
    assert (status, variant) == (200, "canary")
    assert all(TOKEN_HEADER not in {k.lower() for k in r["headers"]} for r in a.requests + b.requests)
    text = await harness.metrics()
    assert sample(text, "kubetune_router_requests_total", code="200", source="user", variant="stable") == 2
    assert (
        sample(text, "kubetune_router_requests_total", code="200", source="synthetic", variant="canary") == 1
    )

    # The Secret's volume is updated in place: a rotated token takes effect at the next poll.
    assert harness.token_path is not None
    harness.token_path.write_text("rotated\n")

    async def rotated() -> bool:
        return (await harness.chat({**pin, TOKEN_HEADER: "rotated"}))[2] == "canary"

    await aeventually(rotated, interval=0.05, message="rotated token not picked up")


async def test_client_gone_mid_stream_is_499_and_aborts_upstream(
    backend: BackendFactory, router: RouterFactory
) -> None:
    release = asyncio.Event()
    a = await backend("stable", hold_after_first_chunk=release)
    harness = await router(one_variant(a.url))
    async with aiohttp.ClientSession() as client:
        response = await client.post(harness.url + CHAT, json={**PAYLOAD, "stream": True})
        await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=30)
        response.close()

    async def counted() -> bool:
        labels = {"code": "499", "source": "user", "variant": "stable"}
        return await harness.metric("kubetune_router_requests_total", **labels) == 1

    await aeventually(counted, interval=0.05, message="client disconnect not counted")
    release.set()
