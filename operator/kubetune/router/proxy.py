"""The proxy handler: route, rewrite, forward, stream back, and account for every request."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from kubetune.api.routerconfig import VARIANT_RESPONSE_HEADER, RouterConfig
from kubetune.router.metrics import SOURCE_SYNTHETIC, SOURCE_USER, RouterMetrics
from kubetune.router.policy import RouteRequest, RoutingError, RoutingPolicy, VariantTarget
from kubetune.router.state import RouterState
from kubetune.router.tokens import SseTokenCounter, completion_tokens_of_body

log = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 7.6.1) plus those aiohttp recomputes for each leg.
_REQUEST_DROP = frozenset(
    h.lower()
    for h in (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    )
)
_RESPONSE_DROP = _REQUEST_DROP | {"date", "server"}

CLIENT_CLOSED = 499
"""Recorded when the client goes away mid-response (nginx's convention); not an upstream error."""


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Upstream:
    """What one attempt needs; everything else stays in the handler."""

    target: VariantTarget
    endpoint: str


def _forward_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _REQUEST_DROP)


def _response_headers(headers: CIMultiDictProxy[str], variant: str, *, streaming: bool) -> CIMultiDict[str]:
    out = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _RESPONSE_DROP)
    if streaming:
        out.popall("content-length", None)
    out[VARIANT_RESPONSE_HEADER] = variant
    return out


def rewrite_model(body: bytes, served_model: str) -> bytes:
    """Set the JSON body's `model`; bodies that are not a JSON object pass through unchanged."""
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict) or document.get("model") == served_model:
        return body
    document["model"] = served_model
    return json.dumps(document, separators=(",", ":")).encode()


def _sticky_key(request: web.Request, config: RouterConfig) -> str | None:
    if config.sticky_header is None:
        return None
    value = request.headers.get(config.sticky_header)
    if value:
        return "u:" + value
    auth = request.headers.get("authorization")
    # Only a hash of the key is ever derived from it (in the policy); it is never logged or labelled.
    return "k:" + auth if auth else None


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None:
        if request.content_length > limit:
            raise BodyTooLarge
        return await request.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)


class ProxyHandler:
    def __init__(
        self,
        state: RouterState,
        policy: RoutingPolicy,
        metrics: RouterMetrics,
        session_key: web.AppKey[aiohttp.ClientSession],
    ) -> None:
        self._state = state
        self._policy = policy
        self._metrics = metrics
        self._session_key = session_key

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        state = self._state
        config = state.config
        snapshot = state.snapshot()
        source = SOURCE_SYNTHETIC if request.headers.get(config.synthetic_header) else SOURCE_USER
        for target in snapshot.skipped:
            self._metrics.labels(self._metrics.skipped, target.name).inc()
        try:
            body = await _read_body(request, config.max_body_bytes)
            decision = await self._policy.route(
                snapshot,
                RouteRequest(
                    sticky_key=_sticky_key(request, config),
                    override=request.headers.get(config.override_header),
                ),
            )
        except BodyTooLarge:
            self._metrics.labels(self._metrics.routing_errors, "413").inc()
            return _error(413, f"request body exceeds {config.max_body_bytes} bytes", "request_too_large")
        except RoutingError as exc:
            self._metrics.labels(self._metrics.routing_errors, str(exc.status)).inc()
            return _error(exc.status, exc.message, "routing_error")
        return await self._forward(request, body, decision.order, config, source, started)

    def _attempts(self, order: tuple[VariantTarget, ...], max_attempts: int) -> list[Upstream]:
        attempts: list[Upstream] = []
        for target in order:
            for endpoint in self._state.health.ordered(target):
                attempts.append(Upstream(target, endpoint))
                if len(attempts) == max_attempts:
                    return attempts
        return attempts

    async def _forward(
        self,
        request: web.Request,
        body: bytes,
        order: tuple[VariantTarget, ...],
        config: RouterConfig,
        source: str,
        started: float,
    ) -> web.StreamResponse:
        session = request.app[self._session_key]
        headers = _forward_headers(request.headers)
        timeout = self._state.client_timeout
        path = request.rel_url.raw_path_qs
        failure_status, failure_message = 502, "no upstream attempted"
        last = order[0]
        for attempt in self._attempts(order, config.max_attempts):
            target = attempt.target
            last = target
            payload = rewrite_model(body, target.served_model) if target.served_model and body else body
            series = self._metrics.series(target.name, source)
            series.in_flight.inc()
            try:
                upstream = await session.request(
                    request.method,
                    attempt.endpoint + path,
                    headers=headers,
                    data=payload,
                    timeout=timeout,
                    allow_redirects=False,
                )
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                series.in_flight.dec()
                # A slow upstream is not a dead one: no cooldown, but try the next candidate.
                self._metrics.labels(self._metrics.upstream_errors, target.name, "timeout").inc()
                failure_status, failure_message = 504, f"upstream {target.name} timed out: {exc!r}"
                continue
            except aiohttp.ClientError as exc:
                series.in_flight.dec()
                self._metrics.labels(self._metrics.upstream_errors, target.name, "connect").inc()
                self._state.endpoint_failed(target, attempt.endpoint)
                failure_status, failure_message = 502, f"upstream {target.name} unreachable: {exc!r}"
                continue
            try:
                self._state.endpoint_ok(attempt.endpoint)
                return await self._relay(request, upstream, target, source, started)
            finally:
                # A half-read body must not go back to the pool; closing also aborts the generation upstream.
                if upstream.content.at_eof():
                    upstream.release()
                else:
                    upstream.close()
                series.in_flight.dec()
        self._metrics.count_request(last.name, failure_status, source)
        self._metrics.series(last.name, source).duration.observe(time.perf_counter() - started)
        return _error(failure_status, failure_message, "upstream_error")

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        target: VariantTarget,
        source: str,
        started: float,
    ) -> web.StreamResponse:
        series = self._metrics.series(target.name, source)
        content_type = upstream.headers.get("content-type", "")
        streaming = content_type.startswith("text/event-stream") or upstream.content_length is None
        if not streaming:
            try:
                data = await upstream.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                return self._cut(target, source, started, exc)
            tokens = completion_tokens_of_body(data) if upstream.status == 200 else None
            if tokens:
                series.output_tokens.inc(tokens)
            self._metrics.count_request(target.name, upstream.status, source)
            series.duration.observe(time.perf_counter() - started)
            return web.Response(
                status=upstream.status,
                body=data,
                headers=_response_headers(upstream.headers, target.name, streaming=False),
            )
        response = web.StreamResponse(
            status=upstream.status, headers=_response_headers(upstream.headers, target.name, streaming=True)
        )
        counter = SseTokenCounter()
        first = True
        client_gone = False
        cut: BaseException | None = None
        try:
            await response.prepare(request)
        except ConnectionResetError:
            client_gone = True
        try:
            async for chunk in upstream.content.iter_any():
                if client_gone:
                    break
                if first:
                    series.ttft.observe(time.perf_counter() - started)
                    first = False
                counter.feed(chunk)
                try:
                    await response.write(chunk)
                except ConnectionResetError:
                    client_gone = True
                    break
        except (aiohttp.ClientError, ConnectionResetError, TimeoutError) as exc:
            cut = exc
        if client_gone:
            # Leaving the upstream context closes its connection, which makes vLLM abort the generation.
            self._metrics.count_request(target.name, CLIENT_CLOSED, source)
            series.duration.observe(time.perf_counter() - started)
            return response
        if cut is not None:
            self._cut(target, source, started, cut)
            # Closing the connection without the terminating chunk tells the client the stream is incomplete.
            if request.transport is not None:
                request.transport.close()
            return response
        if upstream.status == 200 and content_type.startswith("text/event-stream"):
            series.output_tokens.inc(counter.tokens)
        self._metrics.count_request(target.name, upstream.status, source)
        series.duration.observe(time.perf_counter() - started)
        await response.write_eof()
        return response

    def _cut(self, target: VariantTarget, source: str, started: float, exc: BaseException) -> web.Response:
        """An upstream that failed after answering: counted as 502 for analysis, never retried."""
        log.warning("upstream %s failed mid-response: %r", target.name, exc)
        self._metrics.labels(self._metrics.upstream_errors, target.name, "stream").inc()
        self._metrics.count_request(target.name, 502, source)
        self._metrics.series(target.name, source).duration.observe(time.perf_counter() - started)
        return _error(502, f"upstream {target.name} failed mid-response", "upstream_error")
