"""The operator's outbound HTTP (Prometheus, smoke tests, synthetic traffic): the rules every call keeps.

The operator runs with a cluster-wide identity and its network position; the URLs it calls come from
users' specs (`analysis.prometheusUrl`) or answer with users' images (vLLM, the router). So:
- redirects are never followed: a user's server could otherwise send the operator anywhere (and turn
  a POST into a GET on an internal endpoint);
- bodies are read as a stream and given up past a cap: an endless response cannot exhaust the memory
  of the process that reconciles every tenant;
- each call has a short total timeout;
- Prometheus URLs must match the operator's allowlist (the chart's `analysis.prometheusUrls`, checked
  by `kubetune.urlpolicy`; KEDA is given a spec's URL only when it is on it too);
- errors say what failed (`OutboundError`), never what a remote server answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from kubetune.urlpolicy import url_allowed

__all__ = [
    "MAX_BODY_BYTES",
    "STREAM_MAX_BYTES",
    "OutboundError",
    "Response",
    "get",
    "post",
    "read_capped",
    "url_allowed",
]

MAX_BODY_BYTES = 1 << 20
"""1 MiB: a Prometheus instant query for one number or a chat completion is a few KiB."""
STREAM_MAX_BYTES = 4 << 20
"""A streamed completion (synthetic traffic) is read to its end, up to this much."""


class OutboundError(Exception):
    """An outbound call failed; the message names the failure, never the remote body."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, read chunk by chunk; OutboundError as soon as it exceeds `limit` bytes."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise OutboundError(f"response of {declared} bytes exceeds the {limit}-byte cap")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise OutboundError(f"response exceeds the {limit}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


async def post(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout_s: float | None,
    limit: int = MAX_BODY_BYTES,
    **kwargs: Any,
) -> Response:
    """POST without following redirects, with a capped body; a 3xx answer is an OutboundError.

    `timeout_s` None keeps the session's timeout (a caller that bounds a whole batch).
    """
    return await _request(session, "POST", url, timeout_s=timeout_s, limit=limit, **kwargs)


async def get(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout_s: float | None,
    limit: int = MAX_BODY_BYTES,
    **kwargs: Any,
) -> Response:
    """GET under the same rules as `post`."""
    return await _request(session, "GET", url, timeout_s=timeout_s, limit=limit, **kwargs)


async def _request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout_s: float | None,
    limit: int,
    **kwargs: Any,
) -> Response:
    timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s is not None else None
    try:
        async with session.request(method, url, allow_redirects=False, timeout=timeout, **kwargs) as response:
            if 300 <= response.status < 400:
                raise OutboundError(f"HTTP {response.status}: redirect not followed")
            return Response(response.status, await read_capped(response, limit))
    except TimeoutError as exc:
        raise OutboundError("timed out") from exc
    except aiohttp.ClientError as exc:
        raise OutboundError(f"request failed: {type(exc).__name__}") from exc
